//! Criterion benchmarks of the local CA's OCSP responder next to the raw
//! signing operation each answer costs (issue 17: nonce POSTs at least 0.8x
//! the raw signing operation). Figures: docs/benchmarks.md.
//!
//! `cargo bench -p scep-bench --bench ocsp -- --warm-up-time 1 --measurement-time 3`
//!
//! - `ocsp/nonce_from_memory`: a nonce request (RFC 8954) for a certificate
//!   whose status is remembered: parse, issuer check, encode, one P-256
//!   signature (the delegated responder key), as the transports run it on
//!   their own thread;
//! - `ocsp/nonce_less_cached`: the precomputed answer (RFC 5019);
//! - `raw/p256_sign`: aws-lc's ECDSA P-256 SHA-256 signature over a message
//!   the size of that answer's ResponseData;
//! - then the ratio of the two, timed interleaved (printed: `ocsp ratio: ...`).

#![allow(clippy::unwrap_used)] // a benchmark fixture that cannot be built is a setup bug

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use scep_engine::crypto::{DigestAlg, EcPrivateKey, SigningKey};
use scep_engine::issue::{Authorization, EnrollRequest, IssuancePolicy, IssueOutcome, IssueRequest};
use scep_engine::wire::{Writer, tag};
use scep_engine::x509::{CertificateRef, SubjectPublicKeyInfoRef};
use scep_engine::{UnixTime, oid};
use scep_issuers::ocsp::{OcspResponder, ResponderSigning};
use scep_issuers::x509_build::common_name;
use scep_issuers::{BootstrapOptions, LocalCa, LocalCaConfig, bootstrap};

/// An `OCSPRequest` (RFC 6960 §4.1.1) for one serial of `ca`, with a
/// 32-byte nonce (RFC 8954) when `nonce` is given.
fn request(ca: &LocalCa, serial: &[u8], nonce: Option<&[u8; 32]>) -> Vec<u8> {
    let cert = CertificateRef::parse(ca.signer().certificate()).unwrap();
    let mut w = Writer::new();
    w.sequence(|w| {
        w.sequence(|w| {
            w.sequence(|w| {
                w.sequence(|w| {
                    w.sequence(|w| {
                        w.sequence(|w| {
                            w.oid(oid::SHA1);
                            w.null();
                        });
                        w.octet_string(&DigestAlg::Sha1.digest(cert.subject));
                        w.octet_string(&DigestAlg::Sha1.digest(cert.spki.key));
                        w.unsigned_integer(serial);
                    });
                });
            });
            if let Some(n) = nonce {
                w.nested(tag::context_constructed(2), |w| {
                    w.sequence(|w| {
                        w.sequence(|w| {
                            w.oid(oid::OCSP_NONCE);
                            let mut inner = Writer::new();
                            inner.octet_string(n);
                            w.octet_string(&inner.into_vec());
                        });
                    });
                });
            }
        });
    });
    w.into_vec()
}

/// A local CA in a temporary directory and the serial of one certificate it issued.
fn ca_and_serial(dir: &std::path::Path) -> (LocalCa, Vec<u8>) {
    let files = bootstrap(dir, &BootstrapOptions::default()).unwrap();
    let ca = LocalCa::open(LocalCaConfig::new(&files.ca_cert, &files.ca_key, dir)).unwrap();
    let (device, _) = EcPrivateKey::generate().unwrap();
    let spki_der = device.spki_der().to_vec();
    let request = IssueRequest::Enroll(EnrollRequest {
        profile: "default".into(),
        transaction_id: "ocsp-bench".into(),
        csr_der: Vec::new(),
        subject_der: common_name("ocsp-bench"),
        spki_der,
        subject_alt_names: Vec::new(),
        requested_ekus: Vec::new(),
        policy: IssuancePolicy::default(),
        authorization: Authorization::StaticChallenge,
        sid_extension: None,
    });
    let leaf = match ca.handle_blocking(&request, UnixTime::now()) {
        IssueOutcome::Issued { certificate, .. } => certificate,
        other => panic!("not issued: {other:?}"),
    };
    let serial = CertificateRef::parse(&leaf).unwrap().serial.to_vec();
    (ca, serial)
}

fn ocsp(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let (ca, serial) = ca_and_serial(dir.path());
    let responder = OcspResponder::new(ca.clone(), ResponderSigning::Delegated).unwrap();
    let now = UnixTime::now();
    let with_nonce = request(&ca, &serial, Some(&[7; 32]));
    let nonce_less = request(&ca, &serial, None);
    // Fill the remembered status, the responder key and the precomputed answer.
    let warm = responder.respond(&with_nonce, now);
    assert_eq!(warm.status, scep_engine::ocsp::ResponseStatus::Successful);
    responder.respond(&nonce_less, now);
    assert!(responder.respond_from_memory(&with_nonce, now).is_some(), "the nonce answer must come from memory");
    assert!(responder.cached(&nonce_less, now).is_some());

    let mut g = c.benchmark_group("ocsp");
    g.bench_function("ocsp/nonce_from_memory", |b| {
        b.iter(|| black_box(responder.respond_from_memory(black_box(&with_nonce), now)))
    });
    g.bench_function("ocsp/nonce_less_cached", |b| {
        b.iter(|| black_box(responder.respond_from_memory(black_box(&nonce_less), now)))
    });
    // The raw operation: one P-256 signature over a ResponseData-sized message.
    let (key, _) = EcPrivateKey::generate().unwrap();
    let key = SigningKey::EcP256(key);
    let spki = SubjectPublicKeyInfoRef::parse(key.spki_der()).unwrap();
    assert!(!spki.key.is_empty());
    let message = vec![0x5a_u8; warm.der.len().saturating_sub(400).max(200)];
    g.bench_function("raw/p256_sign", |b| b.iter(|| black_box(key.sign(DigestAlg::Sha256, black_box(&message)))));
    g.finish();

    // The ratio, measured interleaved so that load from elsewhere on the
    // machine falls on both sides alike: 201 rounds of 100 raw signatures then
    // 100 answers; the median of the per-round ratios.
    let mut ratios: Vec<f64> = (0..201)
        .map(|_| {
            let raw = time(100, || {
                black_box(key.sign(DigestAlg::Sha256, black_box(&message)).unwrap());
            });
            let answered = time(100, || {
                black_box(responder.respond_from_memory(black_box(&with_nonce), now).unwrap());
            });
            raw.as_secs_f64() / answered.as_secs_f64()
        })
        .collect();
    ratios.sort_by(f64::total_cmp);
    println!(
        "ocsp ratio: nonce answers per second / raw P-256 signatures per second = {:.2} (median of 201 interleaved rounds; quartiles {:.2}-{:.2})",
        ratios[100], ratios[50], ratios[150]
    );
}

/// Wall time of `n` calls of `f`.
fn time(n: u32, mut f: impl FnMut()) -> Duration {
    let start = Instant::now();
    for _ in 0..n {
        f();
    }
    start.elapsed()
}

criterion_group!(benches, ocsp);
criterion_main!(benches);
