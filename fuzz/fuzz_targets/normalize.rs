//! Host and path normalisation: never a panic; a path that is not ambiguous
//! normalises to itself again, without dot-segments or encoded separators.
#![no_main]
use libfuzzer_sys::fuzz_target;
use egressd::policy::{normalize_host, normalize_path};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let _ = normalize_host(s);
    let p = normalize_path(s);
    if !p.ambiguous {
        assert_eq!(normalize_path(&p.path).path, p.path);
        assert!(!p.path.split('/').any(|seg| seg == "." || seg == ".."));
        assert!(!p.path.contains("%2F") && !p.path.contains("%5C"));
    }
});
