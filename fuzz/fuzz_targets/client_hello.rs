//! The ClientHello reader and the first-bytes judgement: untrusted binary
//! input, read before anything reaches upstream. Neither may panic, and a
//! verdict on a prefix stands once the whole first record is there.
#![no_main]

use egressd::policy::SniMode;
use egressd::proxy::hello::{inspect, judge, FirstBytes, FirstCheck, Judgement};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let whole = inspect(data);
    for cut in 0..data.len().min(64) {
        match inspect(&data[..cut]) {
            FirstBytes::Incomplete => {}
            // Decided on a prefix: more bytes do not change the answer.
            early => assert_eq!(early, whole),
        }
    }
    for (sni, tls_only) in [(SniMode::Enforce, true), (SniMode::Log, false), (SniMode::Off, false)] {
        let check = FirstCheck {
            target: Some("a.example.com".into()),
            sni,
            tls_only,
        };
        if let Judgement::Pass { sni: Some(name), .. } = judge(&check, data) {
            assert_eq!(whole, FirstBytes::ClientHello { sni: Some(name) });
        }
    }
});
