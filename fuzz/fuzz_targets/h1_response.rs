//! The proxy's own HTTP/1.1 client's parsers: the response head, the body
//! framing and the chunked decoder read what an upstream sends (untrusted).
//! None may panic, and the answer (or refusal) must not depend on where
//! the reads split the bytes.
#![no_main]

use egressd::proxy::h1::read_offline;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let whole = read_offline(data, data.len()).map_err(|e| e.to_string());
    for split in [1, 2, 7, 64] {
        let pieces = read_offline(data, split).map_err(|e| e.to_string());
        assert_eq!(pieces.is_ok(), whole.is_ok(), "split {split}: {pieces:?} vs {whole:?}");
        if let (Ok(a), Ok(b)) = (&pieces, &whole) {
            assert_eq!(a, b, "split {split}");
        }
    }
});
