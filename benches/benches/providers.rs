//! The crypto providers side by side (issue 19): aws-lc-rs (the default) and
//! pure-Rust RustCrypto, on the operations an enrolment is made of and on a
//! whole enrolment in the engine. Figures: docs/benchmarks.md, "Crypto providers".
//!
//! - `<provider>/rsa2048_decrypt_pkcs1v15`: the RA unwrapping a content key;
//! - `<provider>/rsa2048_sign_sha256`: a CertRep (or certificate) signature;
//! - `<provider>/p256_sign_sha256`: an ECDSA CA's or RA's signature;
//! - `<provider>/enrolment`: `Engine::handle` (verify, open the envelope,
//!   CSR checks) + an RSA-2048 CA signature over a certificate-sized TBS +
//!   `PendingIssue::resume` (seal to the device, RA signature), with every
//!   algorithm and key from that provider;
//! - `<provider>/issue_end_entity`: `CaSigner::issue_end_entity`, our DER
//!   writer around the provider's RSA-2048 signature: against
//!   `rsa2048_sign_sha256`, what writing the certificate costs (why the
//!   writer stays rather than `x509-cert`: docs/architecture.md).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use scep_engine::config::{
    AlgorithmPolicy, CaCertShape, ChallengePolicy, KeyPolicy, ProfileConfig, RaIdentity, RenewalPolicy, SanPolicy,
};
use scep_engine::crypto::provider::available_providers;
use scep_engine::crypto::{CryptoProvider, DigestAlg, EcCurve, KeyKind, RaKey, SigningKey, SystemRandom};
use scep_engine::csr::CsrRef;
use scep_engine::issue::IssuancePolicy;
use scep_engine::{Action, Engine, IssueOutcome, Message, Method, Request, UnixTime};
use scep_issuers::x509_build::{CaSigner, EndEntityParams};
use scep_tests::client::{
    CsrSpec, DeviceKey, MessageBody, MessageOptions, Signer, SubjectName, build_csr, build_pki_message,
    self_signed_certificate,
};

const VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/vectors/real-clients/");

fn vector(name: &str) -> String {
    std::fs::read_to_string(format!("{VECTORS}{name}")).unwrap()
}

/// An engine whose algorithms and RA key (the vectors' RSA-2048 recipient) are `provider`'s.
fn engine_on(provider: &Arc<dyn CryptoProvider>, ra_cert: &[u8], ra_key: &[u8]) -> Engine {
    Engine::new(ProfileConfig {
        name: "bench".into(),
        ra: RaIdentity { certificate: ra_cert.to_vec(), key: RaKey::from_der_with(provider.as_ref(), ra_key).unwrap() },
        ca_chain: vec![ra_cert.to_vec()],
        ca_cert_shape: CaCertShape::RaAndChain,
        challenge: ChallengePolicy::Static("secret123".into()),
        algorithms: AlgorithmPolicy::default(),
        keys: KeyPolicy::default(),
        renewal: RenewalPolicy::default(),
        issuance: IssuancePolicy::default(),
        allowed_ekus: vec![scep_engine::oid::KP_CLIENT_AUTH.to_vec()],
        sans: SanPolicy::default(),
        signing_time_tolerance: None,
        max_message_size: 256 * 1024,
        rng: Arc::new(SystemRandom),
        crypto: provider.clone(),
        intune: None,
    })
    .unwrap()
}

fn providers(c: &mut Criterion) {
    let ra_cert = scep_engine::pem::certificates(&vector("recipient-cert.pem")).unwrap().remove(0);
    let ra_key = scep_engine::pem::private_key(&vector("recipient-key.pem")).unwrap();
    let device = DeviceKey::pregenerated(0).unwrap();
    let device_cert = self_signed_certificate(&device, &SubjectName::cn("bench-device"), 1).unwrap();
    let csr = build_csr(&device, &CsrSpec::new("bench-device", Some("secret123"))).unwrap();
    let requests: Vec<Vec<u8>> = (0..16)
        .map(|i| {
            let options = MessageOptions { transaction_id: Some(format!("bench-{i}")), ..MessageOptions::default() };
            let signer = Signer { certificate: &device_cert, key: &device };
            build_pki_message(&MessageBody::PkcsReq(csr.clone()), signer, &ra_cert, &options).unwrap().der
        })
        .collect();
    // A certificate-sized TBS for the CA signature.
    let tbs = vec![0x5a_u8; 1024];
    let p256_der = available_providers()[0].generate_private_key(KeyKind::Ec(EcCurve::P256)).unwrap().pkcs8_der;

    let mut g = c.benchmark_group("providers");
    g.sample_size(30).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(4));
    for provider in available_providers() {
        let name = provider.name();
        let rsa = provider.load_private_key(&ra_key).unwrap();
        let p256 = provider.load_private_key(&p256_der).unwrap();
        let wrapped = provider.rsa_encrypt_pkcs1v15(rsa.spki_der(), &[7; 32]).unwrap();
        g.bench_function(format!("{name}/rsa2048_decrypt_pkcs1v15"), |b| {
            b.iter(|| rsa.decrypt_pkcs1v15(black_box(&wrapped)).unwrap().unwrap())
        });
        g.bench_function(format!("{name}/rsa2048_sign_sha256"), |b| {
            b.iter(|| rsa.sign(DigestAlg::Sha256, black_box(&tbs)).unwrap())
        });
        g.bench_function(format!("{name}/p256_sign_sha256"), |b| {
            b.iter(|| p256.sign(DigestAlg::Sha256, black_box(&tbs)).unwrap())
        });
        let ca = CaSigner::new(SigningKey::from_key(rsa.clone()).unwrap(), ra_cert.clone()).unwrap();
        let request = CsrRef::parse(&csr).unwrap();
        let policy = IssuancePolicy::default();
        let params = EndEntityParams {
            serial: &[0x42; 16],
            subject_der: request.subject,
            spki_der: request.spki.raw,
            subject_alt_names: &[],
            policy: &policy,
            now: UnixTime(1_795_574_400),
            sid_extension: None,
        };
        g.bench_function(format!("{name}/issue_end_entity"), |b| {
            b.iter(|| ca.issue_end_entity(black_box(&params)).unwrap())
        });
        let engine = engine_on(&provider, &ra_cert, &ra_key);
        let mut next = requests.iter().cycle();
        g.bench_function(format!("{name}/enrolment"), |b| {
            b.iter(|| {
                let body = next.next().unwrap();
                let now = UnixTime::now();
                let request = Request { method: Method::Post, operation: "PKIOperation", message: Message::Body(body) };
                let Action::Issue(pending) = engine.handle(request, now) else { panic!("enrolment refused") };
                // The CA's signature (the local CA signs with the same key type).
                black_box(rsa.sign(DigestAlg::Sha256, &tbs).unwrap());
                let response =
                    pending.resume(IssueOutcome::Issued { certificate: device_cert.clone(), chain: vec![] }, now);
                assert_eq!(response.outcome.label, "success");
                black_box(response)
            })
        });
    }
    g.finish();
}

criterion_group!(benches, providers);
criterion_main!(benches);
