//! The live view's bounds, cursor and refusal counts.

use super::*;

fn event(host: &str, port: u16, path: Option<&str>, verdict: Verdict, reason: Reason) -> Event {
    let (kind, method) = match path {
        Some(_) => (EventKind::Http, http::Method::GET),
        None => (EventKind::Connect, http::Method::CONNECT),
    };
    let mut e = Event::new("10.0.0.7:5000".parse().unwrap(), kind, method, Arc::from("v"));
    e.host = host.into();
    e.port = port;
    e.path = path.map(str::to_string);
    e.verdict = verdict;
    e.why = Some(Why::Policy(reason));
    e.status = 403;
    e
}

#[test]
fn a_borrowed_destination_finds_its_entry() {
    let mut m: hashbrown::HashMap<(String, u16), u8, RandomState> = Default::default();
    m.insert(("api.example.org".into(), 443), 1);
    assert_eq!(m.get(&DestRef("api.example.org", 443)), Some(&1));
    assert_eq!(m.get(&DestRef("api.example.org", 80)), None);
    assert_eq!(m.get(&DestRef("example.org", 443)), None);
}

#[test]
fn ring_and_destinations_stay_bounded() {
    let live = Live::default();
    let n = RING + MAX_DESTS + 10;
    for i in 0..n {
        live.record(&event(
            &format!("h{i}.example.org"),
            443,
            None,
            Verdict::Deny,
            Reason::NoMatch,
        ));
    }
    let s = live.snapshot(0);
    assert_eq!(s.decisions.len(), MAX_ANSWER);
    assert_eq!(s.decisions.last().unwrap().seq, n as u64);
    assert!(s.gap);
    assert_eq!(s.denied.len(), MAX_DESTS);
    assert_eq!(s.destinations_dropped, (n - MAX_DESTS) as u64);
    let shards = live.shards.shards();
    assert!(shards.iter().all(|s| s.lock().unwrap().ring.len() <= RING));
}

#[test]
fn cursor_returns_only_newer_decisions() {
    let live = Live::default();
    for host in ["a.example.org", "b.example.org", "c.example.org"] {
        live.record(&event(host, 80, Some("/x"), Verdict::Allow, Reason::Allowed));
    }
    let s = live.snapshot(2);
    assert_eq!(s.next, 3);
    assert!(!s.gap);
    assert_eq!(s.decisions.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![3]);
    assert!(s.denied.is_empty());
    assert!(live.snapshot(3).decisions.is_empty());
}

#[test]
fn a_destination_seen_again_counts_as_a_first_sighting_does() {
    // The second and later refusals skip parsing the target: what the
    // page shows must be what parsing every one would have given.
    let live = Live::default();
    let e = |client: &str, path: &str, user: Option<&str>| {
        let mut f = event("x.example.org", 80, Some(path), Verdict::Deny, Reason::NoMatch);
        f.client = std::net::SocketAddr::new(client.parse().unwrap(), 5000);
        f.user = user.map(Arc::from);
        live.record(&f);
    };
    e("10.0.0.1", "/a", None);
    e("10.0.0.2", "/b", Some("ann"));
    e("10.0.0.2", "/b", Some("ann"));
    e("10.0.0.3", "/c", Some("bob"));
    e("10.0.0.3", "/d", None);
    live.record(&event("x.example.org", 80, None, Verdict::Deny, Reason::NoMatch));
    let s = live.snapshot(0);
    assert_eq!(s.denied.len(), 1, "{:?}", s.denied);
    let d = &s.denied[0];
    assert_eq!((d.host.as_str(), d.port, d.requests), ("x.example.org", 80, 6));
    assert_eq!(d.clients.len(), 4);
    assert_eq!(
        d.users.iter().map(|u| &**u).collect::<Vec<_>>(),
        vec!["ann", "bob"]
    );
    assert_eq!(
        d.examples,
        vec![
            "http://x.example.org:80/a",
            "http://x.example.org:80/b",
            "http://x.example.org:80/c"
        ]
    );
    assert_eq!(d.reasons, vec![Reason::NoMatch.as_str()]);
    assert_eq!(s.refused_total, 6);
}

#[test]
fn refusals_group_by_destination_with_report_s_suggestions() {
    let live = Live::default();
    let long = format!("/{}", "é".repeat(400));
    live.record(&event(
        "www.google.com",
        80,
        Some(&long),
        Verdict::Deny,
        Reason::PathNotAllowed,
    ));
    live.record(&event(
        "www.google.com",
        80,
        Some("/search"),
        Verdict::Deny,
        Reason::PathNotAllowed,
    ));
    live.record(&event(
        "a.cdn.example.net",
        443,
        None,
        Verdict::WouldDeny,
        Reason::NoMatch,
    ));
    live.record(&event(
        "b.cdn.example.net",
        443,
        None,
        Verdict::Deny,
        Reason::NoMatch,
    ));
    live.record(&event(
        "ok.example.net",
        443,
        None,
        Verdict::Allow,
        Reason::Allowed,
    ));
    let s = live.snapshot(0);
    assert!(s
        .decisions
        .iter()
        .all(|e| e.path.as_ref().is_none_or(|p| p.len() <= MAX_PATH)));
    let hosts: Vec<(&str, u64)> = s.denied.iter().map(|d| (d.host.as_str(), d.requests)).collect();
    assert_eq!(
        hosts,
        vec![
            ("www.google.com", 2),
            ("a.cdn.example.net", 1),
            ("b.cdn.example.net", 1)
        ]
    );
    let rules: Vec<&str> = s.suggestions.iter().map(|g| g.rule.as_str()).collect();
    assert!(rules.contains(&"*.example.net"), "{rules:?}");
    assert!(rules.contains(&"www.google.com/search"), "{rules:?}");
    assert_eq!(s.refused_total, 4);
    assert_eq!(s.decisions_total, 5);
}

#[test]
fn a_refused_lookup_is_listed_as_a_destination_never_reached() {
    let live = Live::default();
    let mut e = Event::new(
        "10.0.0.7:5000".parse().unwrap(),
        EventKind::Dns,
        http::Method::from_bytes(b"AAAA").unwrap(),
        Arc::from("v"),
    );
    e.host = "api.vendor.example".into();
    e.why = Some(Why::Policy(Reason::NoMatch));
    live.record(&e);
    live.record(&e);
    let s = live.snapshot(0);
    assert_eq!(s.refused_total, 2);
    let d = &s.denied[0];
    assert_eq!(
        (d.host.as_str(), d.port, d.requests),
        ("api.vendor.example", 0, 2)
    );
    assert_eq!(d.examples, vec!["DNS AAAA api.vendor.example".to_string()]);
    // The suggestion names the host on its default ports: a lookup has none.
    assert_eq!(s.suggestions[0].rule, "api.vendor.example");
    assert_eq!(s.decisions[0].kind, "dns");
}
