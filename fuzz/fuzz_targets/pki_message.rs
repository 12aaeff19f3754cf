//! PkiMessageRef::parse + verify over arbitrary bytes (DER and BER).
#![no_main]

use libfuzzer_sys::fuzz_target;
use scep_engine::message::PkiMessageRef;

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = PkiMessageRef::parse(data) else { return };
    let verified = msg.verify();
    if let Err(e) = &verified {
        let _ = (e.to_string(), e.fail_info());
    }
    // Accessors a handler reads after parsing.
    if let Some(signer) = &msg.signer {
        let _ = msg.signer_id.matches(signer);
        let _ = signer.subject_common_names();
    }
    let _ = scep_engine::message::parse_issuer_and_subject(&msg.content);
    let _ = scep_engine::message::parse_issuer_and_serial(&msg.content);
});
