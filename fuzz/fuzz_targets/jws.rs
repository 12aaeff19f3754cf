//! The Intune challenge path: IntuneValidator::validate (JWS split, header,
//! signature against the vector anchor, then the claim gates when it
//! verifies), plus the claim parser and gates 3–6 on the unverified payload
//! (a fuzz-only entry point: production never parses unverified claims).
#![no_main]

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use libfuzzer_sys::fuzz_target;
use scep_engine::intune::{CsrIdentity, looks_intune_shaped};
use scep_fuzz::{INTUNE_AUDIENCE, INTUNE_NOW, intune_validator};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let cn = vec!["fixture-device.example.com".to_string()];
    let email = vec!["fixture-user@example.com".to_string()];
    let csr = CsrIdentity { common_names: &cn, dns: &cn, emails: &email, upns: &[] };
    let _ = looks_intune_shaped(text);
    match intune_validator().validate(text, &csr, INTUNE_NOW) {
        Ok(v) => {
            let _ = v.identity();
        }
        Err(r) => {
            let _ = (r.to_string(), r.fail_info);
        }
    }
    let mut parts = text.split('.');
    if let (Some(_), Some(payload)) = (parts.next(), parts.next()) {
        if let Ok(json) = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')) {
            let _ = scep_engine::intune::fuzzing::claims_and_gates(&json, &csr, INTUNE_NOW.0, Some(INTUNE_AUDIENCE));
        }
    }
});
