//! Hosts a browser reaches on its own account (updates, safe browsing,
//! telemetry, captive-portal checks), whatever page it shows: in a session
//! recorded to find what an app needs, they are noise, and a rule for them
//! is rarely what the IT team wants. Reports still list them, marked, and
//! the live view does not pre-select them.

/// Exact names and zones (a leading dot: the name and everything below).
const HOSTS: &[&str] = &[
    // Chromium and Chrome.
    "update.googleapis.com",
    "safebrowsing.googleapis.com",
    "safebrowsingohttpgateway.googleapis.com",
    "clientservices.googleapis.com",
    "content-autofill.googleapis.com",
    "optimizationguide-pa.googleapis.com",
    "android.clients.google.com",
    "chrome-devtools-frontend.appspot.com",
    ".gvt1.com",
    ".gvt2.com",
    // Firefox.
    "detectportal.firefox.com",
    ".services.mozilla.com",
    ".telemetry.mozilla.org",
    "aus5.mozilla.org",
    "content-signature-2.cdn.mozilla.net",
    // Edge.
    "edge.microsoft.com",
    "msedge.api.cdp.microsoft.com",
];

/// Whether `host` (normalised) is one a browser reaches on its own.
pub fn is_browser_background(host: &str) -> bool {
    // clients1.google.com ... clients6.google.com: Chrome's own services.
    if let Some(n) = host
        .strip_prefix("clients")
        .and_then(|r| r.strip_suffix(".google.com"))
    {
        if n.len() == 1 && n.bytes().all(|b| b.is_ascii_digit()) {
            return true;
        }
    }
    HOSTS.iter().any(|h| match h.strip_prefix('.') {
        Some(zone) => host == zone || host.strip_suffix(zone).is_some_and(|r| r.ends_with('.')),
        None => host == *h,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn browser_background_hosts() {
        for h in [
            "update.googleapis.com",
            "clients2.google.com",
            "r1---sn-abc.gvt1.com",
            "firefox.settings.services.mozilla.com",
            "detectportal.firefox.com",
        ] {
            assert!(is_browser_background(h), "{h}");
        }
        for h in [
            "www.google.com",
            "fonts.googleapis.com",
            "clients.google.com",
            "evilgvt1.com",
            "co1.qualtrics.com",
        ] {
            assert!(!is_browser_background(h), "{h}");
        }
    }

    #[test]
    fn the_browser_s_own_hosts_are_suggested_last_and_marked() {
        use crate::audit::{suggest, DeniedHost};
        use crate::policy::{Kind, Reason};
        let refused = |host: &str, n: u64| {
            let mut h = DeniedHost::new(host.into());
            for _ in 0..n {
                h.count(
                    443,
                    Kind::Connect,
                    Reason::NoMatch,
                    &format!("CONNECT {host}:443"),
                );
            }
            h
        };
        let s = suggest(&[
            refused("update.googleapis.com", 50),
            refused("cdn.vendor.example", 2),
        ]);
        assert_eq!(s[0].rule, "cdn.vendor.example");
        assert!(!s[0].background);
        assert_eq!(
            (s[1].rule.as_str(), s[1].background),
            ("update.googleapis.com", true)
        );
    }
}
