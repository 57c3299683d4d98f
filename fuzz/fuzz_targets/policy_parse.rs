//! Any bytes as a policy file: an error or a policy, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(src) = std::str::from_utf8(data) {
        let _ = egressd::policy::Policy::from_toml(src, "fuzz.toml");
    }
});
