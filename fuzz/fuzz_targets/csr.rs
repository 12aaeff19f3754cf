//! CsrRef::parse and every accessor over arbitrary bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scep_engine::csr::CsrRef;

fuzz_target!(|data: &[u8]| {
    let Ok(csr) = CsrRef::parse(data) else { return };
    let _ = csr.verify_signature();
    let _ = csr.common_names();
    let _ = csr.extension(scep_engine::oid::SUBJECT_ALT_NAME);
    if let Ok(sans) = csr.subject_alt_names() {
        let encoded = scep_engine::x509::encode_subject_alt_names(&sans);
        let _ = sans.iter().map(ToString::to_string).count();
        let _ = encoded;
    }
    let _ = csr.extended_key_usages().map(|v| v.iter().map(|e| scep_engine::oid::dotted(e)).count());
    let _ = csr.key_bits();
    let _ = csr.spki.public_key().map(|k| k.bits());
    let _ = scep_engine::x509::name_to_string(csr.subject);
});
