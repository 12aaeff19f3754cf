//! decode_get_message (percent-decoding + lenient base64) on arbitrary UTF-8.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scep_engine::message::decode_get_message;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(bytes) = decode_get_message(text) {
        // Decoding is at most 3 bytes per 4 characters.
        assert!(bytes.len() <= text.len(), "decoded {} bytes from {} characters", bytes.len(), text.len());
    }
});
