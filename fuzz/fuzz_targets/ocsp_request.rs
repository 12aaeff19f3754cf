//! The OCSP responder's parser (`OcspRequestRef::parse`) over arbitrary bytes,
//! and the response encoder over whatever it accepts: the CertIDs it returns
//! must be echoable (the encoder writes them back verbatim) and the nonce
//! bounded (RFC 8954).
#![no_main]

use libfuzzer_sys::fuzz_target;
use scep_engine::ocsp::{CertStatus, MAX_NONCE_LEN, OcspRequestRef, SingleResponse, encode_response_data};
use scep_engine::time::UnixTime;

fuzz_target!(|data: &[u8]| {
    let Ok(req) = OcspRequestRef::parse(data) else { return };
    assert!(!req.requests.is_empty() && req.requests.len() <= scep_engine::ocsp::MAX_REQUESTS);
    if let Some(n) = req.nonce {
        assert!(n.len() <= MAX_NONCE_LEN + 2);
    }
    let now = UnixTime(1_800_000_000);
    let responses: Vec<SingleResponse<'_>> = req
        .requests
        .iter()
        .map(|id| {
            assert!(!id.serial.is_empty());
            SingleResponse { cert_id: id.raw, status: CertStatus::Good, this_update: now, next_update: now.plus(60) }
        })
        .collect();
    let data = encode_response_data(&[0; 20], now, &responses, req.nonce);
    scep_engine::wire::parse_single(&data).expect("the encoder writes one DER value");
});
