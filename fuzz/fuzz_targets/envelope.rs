//! envelope::open over arbitrary bytes, with the fixed real-client recipient
//! key and certificate and every content cipher allowed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scep_engine::envelope;
use scep_engine::x509::CertificateRef;
use scep_fuzz::{FixedRandom, all_ciphers, recipient_cert, recipient_key};

fuzz_target!(|data: &[u8]| {
    let Ok(cert) = CertificateRef::parse(recipient_cert()) else { return };
    match envelope::open(data, &cert, recipient_key(), &all_ciphers(), &FixedRandom) {
        Ok(opened) => {
            let _ = opened.cipher.for_reply();
        }
        Err(e) => {
            let _ = (e.to_string(), e.fail_info());
        }
    }
});
