//! The compiled matcher against the reference scan, on any request target.
#![no_main]
use std::sync::OnceLock;

use egressd::target::parse_target;
use egressd::policy::Policy;
use libfuzzer_sys::fuzz_target;

const POLICY: &str = r#"
path_rules_on_connect = "allow"
allow = [
  "*.qualtrics.com/*", ".example.org", "www.google.com/recaptcha", "www.google.com/maps/api",
  "api.example.com/v1/*/files", { host = "sftp.example.com", ports = [22] },
  { cidr = "10.1.0.0/16", ports = [443] }, { host = "a.example.com/x", on_connect = "deny" },
]
deny = ["bad.qualtrics.com", "www.example.org/admin", { cidr = "10.1.2.0/24" }]
"#;

fuzz_target!(|data: &[u8]| {
    static P: OnceLock<Policy> = OnceLock::new();
    let p = P.get_or_init(|| Policy::from_toml(POLICY, "fuzz.toml").expect("fuzz policy"));
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(c) = parse_target(s) {
        assert_eq!(p.decide(&c), p.decide_naive(&c), "{s}");
    }
});
