//! Fixed fixtures shared by the fuzz targets: the real-client recipient key and
//! certificate, the Intune vector anchor, a deterministic randomness source and
//! an engine configured like the unit tests (static challenge `secret123`,
//! every cipher including single DES allowed).
//!
//! Everything is embedded with `include_*!` so a target binary runs from any
//! directory, and built once per process (`OnceLock`), not once per input.

use std::sync::{Arc, OnceLock};

use scep_engine::config::{
    AlgorithmPolicy, CaCertShape, ChallengePolicy, KeyPolicy, ProfileConfig, RaIdentity, RenewalPolicy,
};
use scep_engine::crypto::{ContentCipher, RandomSource, RsaPrivateKey};
use scep_engine::intune::{IntuneSettings, IntuneValidator, SharedPool};
use scep_engine::issue::IssuancePolicy;
use scep_engine::{Engine, UnixTime};

/// The recipient (RA = CA) key the real-client captures are encrypted to.
pub const RECIPIENT_KEY_PEM: &str = include_str!("../../tests/vectors/real-clients/recipient-key.pem");
/// The recipient certificate.
pub const RECIPIENT_CERT_PEM: &str = include_str!("../../tests/vectors/real-clients/recipient-cert.pem");
/// The Intune vector trust anchor (ECDSA P-256).
pub const INTUNE_ANCHOR_PEM: &str = include_str!("../../tests/vectors/intune-connector/intune_trust_anchor.pem");
/// The audience of the Intune vectors.
pub const INTUNE_AUDIENCE: &str = "https://certctl.example.com/scep/test";
/// 2026-01-01T12:01:00Z, the "now" of the Intune vector README.
pub const INTUNE_NOW: UnixTime = UnixTime(1_767_268_860);
/// The real-client captures were made on 2026-11-25.
pub const CAPTURE_TIME: UnixTime = UnixTime(1_795_574_400);

/// Deterministic "randomness": the fuzzer must be able to replay a crash.
#[derive(Debug)]
pub struct FixedRandom;

impl RandomSource for FixedRandom {
    fn fill(&self, buf: &mut [u8]) {
        buf.iter_mut().enumerate().for_each(|(i, b)| *b = (i as u8).wrapping_mul(29).wrapping_add(7));
    }
}

/// The recipient certificate DER.
pub fn recipient_cert() -> &'static [u8] {
    static CERT: OnceLock<Vec<u8>> = OnceLock::new();
    CERT.get_or_init(|| scep_engine::pem::certificates(RECIPIENT_CERT_PEM).expect("vector cert").remove(0))
}

/// The recipient private key.
pub fn recipient_key() -> &'static RsaPrivateKey {
    static KEY: OnceLock<RsaPrivateKey> = OnceLock::new();
    KEY.get_or_init(new_recipient_key)
}

fn new_recipient_key() -> RsaPrivateKey {
    let der = scep_engine::pem::private_key(RECIPIENT_KEY_PEM).expect("vector key");
    RsaPrivateKey::from_der(&der).expect("vector key parses")
}

/// Every content cipher, single DES included.
pub fn all_ciphers() -> Vec<ContentCipher> {
    let mut c = AlgorithmPolicy::default().ciphers;
    c.push(ContentCipher::DesCbc);
    c
}

/// The engine every `engine_handle` input runs against.
pub fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let config = ProfileConfig {
            name: "fuzz".into(),
            ra: RaIdentity { certificate: recipient_cert().to_vec(), key: new_recipient_key().into() },
            ca_chain: vec![recipient_cert().to_vec()],
            ca_cert_shape: CaCertShape::RaAndChain,
            challenge: ChallengePolicy::Static("secret123".into()),
            algorithms: AlgorithmPolicy { ciphers: all_ciphers(), ..AlgorithmPolicy::default() },
            keys: KeyPolicy::default(),
            renewal: RenewalPolicy::default(),
            issuance: IssuancePolicy::default(),
            allowed_ekus: vec![scep_engine::oid::KP_CLIENT_AUTH.to_vec(), scep_engine::oid::KP_SERVER_AUTH.to_vec()],
            signing_time_tolerance: None,
            max_message_size: 256 * 1024,
            rng: Arc::new(FixedRandom),
            crypto: scep_engine::crypto::default_provider().clone(),
            sans: scep_engine::config::SanPolicy::default(),
            intune: None,
        };
        Engine::new(config).expect("fuzz engine configuration")
    })
}

/// An Intune validator over the vector anchor. Fresh per call would make the
/// replay cache irrelevant; one per process lets the replay and rate gates see
/// repeated nonces, as in production.
pub fn intune_validator() -> &'static IntuneValidator {
    static V: OnceLock<IntuneValidator> = OnceLock::new();
    V.get_or_init(|| {
        let pool = SharedPool::from_pem(INTUNE_ANCHOR_PEM, INTUNE_NOW).expect("vector anchor");
        let settings = IntuneSettings { audience: Some(INTUNE_AUDIENCE.into()), ..IntuneSettings::default() };
        IntuneValidator::new("fuzz", pool, settings, &FixedRandom).expect("intune settings")
    })
}
