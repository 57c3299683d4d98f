//! Request-target parsing (URLs, host:port, CONNECT lines): never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let _ = egressd::target::parse_target(s);
    let _ = egressd::target::split_host_port(s);
    let _ = s.parse::<egressd::policy::Pin>();
    let _ = s.parse::<egressd::policy::Destination>();
});
