//! Criterion benchmarks of the engine's hot paths, each beside the raw
//! aws-lc-rs operations it is made of. Figures and ratios: docs/benchmarks.md.
//!
//! `cargo bench -p scep-bench --bench engine -- --warm-up-time 1 --measurement-time 3`
//! `cargo bench -p scep-bench --bench engine -- enrollment` (prints the ratios)
//!
//! Groups (each `engine/...` next to its `raw/...` counterpart):
//! - `pkimessage`: parse; verify vs one RSA-2048 PKCS#1 v1.5 SHA-256 verify;
//! - `envelope`: open (AES-256) vs RSA-2048 decrypt + AES-256-CBC decrypt;
//! - `certrep`: success_reply vs RSA sign + RSA encrypt;
//! - `enrollment`: a PKCSReq end to end, three ways, each next to the raw
//!   operations it performs (3 verify, 1 decrypt, 2 sign, 1 encrypt, AES both
//!   ways, digests; see [`EnrolmentOps`]):
//!   - `engine/...`: handle → the CA's sign (`LocalCa::sign_enrollment`) →
//!     resume, one at a time, no database (the issue-5 target);
//!   - `durable_serial/...`: handle → `LocalCa::handle_blocking` (sign + durable
//!     commit) → resume, one at a time: an fsync per enrolment;
//!   - `concurrent_2threads/...`: 32 enrolments in flight on a 2-worker tokio
//!     runtime through `Issuer::handle` (group commit), wall time per
//!     enrolment, vs the raw operations on 2 threads;
//! - `intune`: IntuneValidator::validate (RS256, ES256) vs the raw verify.

#![allow(clippy::unwrap_used)] // a benchmark fixture that cannot be built is a setup bug

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use aws_lc_rs::signature::{self, KeyPair as _, UnparsedPublicKey};
use aws_lc_rs::{cipher, digest, rsa};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};
use scep_engine::certrep::{CertRepBuilder, success_reply};
use scep_engine::config::{
    AlgorithmPolicy, CaCertShape, ChallengePolicy, KeyPolicy, ProfileConfig, RaIdentity, RenewalPolicy,
};
use scep_engine::crypto::{ContentCipher, DigestAlg, RandomSource, RsaPrivateKey, SystemRandom};
use scep_engine::csr::CsrRef;
use scep_engine::intune::{CsrIdentity, IntuneSettings, IntuneValidator, SharedPool};
use scep_engine::issue::IssuancePolicy;
use scep_engine::message::PkiMessageRef;
use scep_engine::x509::CertificateRef;
use scep_engine::{
    Action, Engine, IssueOutcome, IssueRequest, Message, Method, Request, UnixTime, envelope, pem, pkcs7,
};
use scep_issuers::local::store::StoreStats;
use scep_issuers::{BootstrapOptions, CaKeyType, Issuer, LocalCa, LocalCaConfig, bootstrap};
use scep_tests::client::{
    CsrSpec, DeviceKey, MessageBody, MessageOptions, Signer, SubjectName, build_csr, build_pki_message,
    self_signed_certificate,
};

/// A bootstrapped local CA (RSA-2048 CA and RA) in a temporary directory, an
/// engine for it, and a device that enrols with the static challenge.
struct Pki {
    _dir: tempfile::TempDir,
    ca: LocalCa,
    engine: Engine,
    ca_key_pkcs8: Vec<u8>,
    ra_cert: Vec<u8>,
    ra_key_pkcs8: Vec<u8>,
    device: DeviceKey,
    device_cert: Vec<u8>,
    csr: Vec<u8>,
}

fn read_pem(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

impl Pki {
    fn new(key: CaKeyType) -> Self {
        // Under target/ rather than /tmp: /tmp may be tmpfs, where the
        // store's fsync costs nothing and the figure would flatter the CA.
        let base = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/bench-tmp");
        std::fs::create_dir_all(base).unwrap();
        let dir = tempfile::tempdir_in(base).unwrap();
        let opts = BootstrapOptions { ca_key: key, ..BootstrapOptions::default() };
        let files = bootstrap(dir.path(), &opts).unwrap();
        let ca_cert = pem::certificates(&read_pem(&files.ca_cert)).unwrap().remove(0);
        let ca_key_pkcs8 = pem::private_key(&read_pem(&files.ca_key)).unwrap();
        let ra_cert = pem::certificates(&read_pem(&files.ra_cert)).unwrap().remove(0);
        let ra_key_pkcs8 = pem::private_key(&read_pem(&files.ra_key)).unwrap();
        let ca = LocalCa::open(LocalCaConfig::new(&files.ca_cert, &files.ca_key, dir.path().join("data"))).unwrap();
        let config = ProfileConfig {
            name: "bench".into(),
            ra: RaIdentity {
                certificate: ra_cert.clone(),
                key: RsaPrivateKey::from_der(&ra_key_pkcs8).unwrap().into(),
            },
            ca_chain: vec![ca_cert],
            ca_cert_shape: CaCertShape::RaAndChain,
            challenge: ChallengePolicy::Static("secret123".into()),
            algorithms: AlgorithmPolicy::default(),
            keys: KeyPolicy::default(),
            renewal: RenewalPolicy::default(),
            issuance: IssuancePolicy::default(),
            allowed_ekus: vec![scep_engine::oid::KP_CLIENT_AUTH.to_vec()],
            signing_time_tolerance: Some(3600),
            max_message_size: 256 * 1024,
            rng: Arc::new(SystemRandom),
            crypto: scep_engine::crypto::default_provider().clone(),
            sans: scep_engine::config::SanPolicy::default(),
            intune: None,
        };
        let engine = Engine::new(config).unwrap();
        let device = DeviceKey::pregenerated(0).unwrap();
        let device_cert = self_signed_certificate(&device, &SubjectName::cn("bench-device"), 1).unwrap();
        let csr = build_csr(&device, &CsrSpec::new("bench-device", Some("secret123"))).unwrap();
        Self { _dir: dir, ca, engine, ca_key_pkcs8, ra_cert, ra_key_pkcs8, device, device_cert, csr }
    }

    /// A PKCSReq (AES-256-CBC, SHA-256) with its own transactionID.
    fn pkcs_req(&self, transaction_id: String) -> Vec<u8> {
        let options = MessageOptions { transaction_id: Some(transaction_id), ..MessageOptions::default() };
        let signer = Signer { certificate: &self.device_cert, key: &self.device };
        build_pki_message(&MessageBody::PkcsReq(self.csr.clone()), signer, &self.ra_cert, &options).unwrap().der
    }
}

fn post(body: &[u8]) -> Request<'_> {
    Request { method: Method::Post, operation: "PKIOperation", message: Message::Body(body) }
}

/// Raw aws-lc-rs keys and inputs of the same sizes the engine handles.
struct Raw {
    ra_sign: signature::RsaKeyPair,
    ra_decrypt: rsa::Pkcs1PrivateDecryptingKey,
    ca_sign: signature::RsaKeyPair,
    device_encrypt: rsa::Pkcs1PublicEncryptingKey,
    device_spki: Vec<u8>,
    /// The content key of an envelope, encrypted to the RA.
    wrapped_key: Vec<u8>,
    content_key: [u8; 32],
    iv: [u8; 16],
    /// A CSR-sized AES-256-CBC ciphertext.
    ciphertext: Vec<u8>,
    /// A request-signature-sized message and its signature by the device.
    signed: Vec<u8>,
    device_signature: Vec<u8>,
}

impl Raw {
    fn new(p: &Pki) -> Self {
        let ra_sign = signature::RsaKeyPair::from_pkcs8(&p.ra_key_pkcs8).unwrap();
        let ra_decrypt =
            rsa::Pkcs1PrivateDecryptingKey::new(rsa::PrivateDecryptingKey::from_pkcs8(&p.ra_key_pkcs8).unwrap())
                .unwrap();
        let ca_sign = signature::RsaKeyPair::from_pkcs8(&p.ca_key_pkcs8).unwrap();
        let device_spki = p.device.spki_der().to_vec();
        let device_encrypt =
            rsa::Pkcs1PublicEncryptingKey::new(rsa::PublicEncryptingKey::from_der(&device_spki).unwrap()).unwrap();
        let ra_encrypt = rsa::Pkcs1PublicEncryptingKey::new(
            rsa::PublicEncryptingKey::from_der(CertificateRef::parse(&p.ra_cert).unwrap().spki.raw).unwrap(),
        )
        .unwrap();
        let mut content_key = [0u8; 32];
        let mut iv = [0u8; 16];
        SystemRandom.fill(&mut content_key);
        SystemRandom.fill(&mut iv);
        let mut wrapped_key = vec![0u8; ra_encrypt.ciphertext_size()];
        let n = ra_encrypt.encrypt(&content_key, &mut wrapped_key).unwrap().len();
        wrapped_key.truncate(n);
        let ciphertext = ContentCipher::Aes256Cbc.encrypt(&content_key, &iv, &p.csr).unwrap();
        let signed = vec![0x5a; 180]; // a SCEP signedAttrs SET is ~150-200 bytes
        let device_signature = p.device.sign(DigestAlg::Sha256, &signed).unwrap();
        Self {
            ra_sign,
            ra_decrypt,
            ca_sign,
            device_encrypt,
            device_spki,
            wrapped_key,
            content_key,
            iv,
            ciphertext,
            signed,
            device_signature,
        }
    }

    fn verify(&self) {
        UnparsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, &self.device_spki)
            .verify(&self.signed, &self.device_signature)
            .unwrap();
    }

    fn decrypt_envelope(&self) -> usize {
        let mut out = [0u8; 256];
        let key = self.ra_decrypt.decrypt(&self.wrapped_key, &mut out).unwrap();
        assert_eq!(key, self.content_key);
        let unbound = cipher::UnboundCipherKey::new(&cipher::AES_256, key).unwrap();
        let dk = cipher::PaddedBlockDecryptingKey::cbc_pkcs7(unbound).unwrap();
        let mut buf = self.ciphertext.clone();
        dk.decrypt(&mut buf, cipher::DecryptionContext::Iv128(self.iv.into())).unwrap().len()
    }

    fn sign(&self, key: &signature::RsaKeyPair, message: &[u8]) -> Vec<u8> {
        let mut sig = vec![0u8; key.public_modulus_len()];
        key.sign(&signature::RSA_PKCS1_SHA256, &aws_lc_rs::rand::SystemRandom::new(), message, &mut sig).unwrap();
        sig
    }

    fn encrypt(&self) -> Vec<u8> {
        let mut out = vec![0u8; self.device_encrypt.ciphertext_size()];
        let n = self.device_encrypt.encrypt(&self.content_key, &mut out).unwrap().len();
        out.truncate(n);
        out
    }
}

fn pkimessage(c: &mut Criterion) {
    let p = Pki::new(CaKeyType::Rsa2048);
    let raw = Raw::new(&p);
    let der = p.pkcs_req("bench-parse".into());
    let mut g = c.benchmark_group("pkimessage");
    g.bench_function("engine/parse", |b| b.iter(|| PkiMessageRef::parse(black_box(&der)).unwrap()));
    let msg = PkiMessageRef::parse(&der).unwrap();
    g.bench_function("engine/verify", |b| b.iter(|| black_box(&msg).verify().unwrap()));
    g.bench_function("raw/rsa2048_verify", |b| b.iter(|| raw.verify()));
    g.finish();
}

fn envelope_open(c: &mut Criterion) {
    let p = Pki::new(CaKeyType::Rsa2048);
    let raw = Raw::new(&p);
    let der = p.pkcs_req("bench-envelope".into());
    let msg = PkiMessageRef::parse(&der).unwrap();
    let ra_cert = CertificateRef::parse(&p.ra_cert).unwrap();
    let ra_key = RsaPrivateKey::from_der(&p.ra_key_pkcs8).unwrap();
    let ciphers = AlgorithmPolicy::default().ciphers;
    let mut g = c.benchmark_group("envelope");
    g.bench_function("engine/open_aes256", |b| {
        b.iter(|| envelope::open(black_box(&msg.content), &ra_cert, &ra_key, &ciphers, &SystemRandom).unwrap())
    });
    g.bench_function("raw/rsa2048_decrypt+aes256cbc_decrypt", |b| b.iter(|| raw.decrypt_envelope()));
    g.finish();
}

fn certrep(c: &mut Criterion) {
    let p = Pki::new(CaKeyType::Rsa2048);
    let raw = Raw::new(&p);
    let ra_cert = CertificateRef::parse(&p.ra_cert).unwrap();
    let ra_key = scep_engine::crypto::RaKey::from(RsaPrivateKey::from_der(&p.ra_key_pkcs8).unwrap());
    let requester = CertificateRef::parse(&p.device_cert).unwrap();
    let issued = p.ra_cert.clone(); // any certificate: the engine only wraps it
    let ca_cert = p.engine.config().ca_chain[0].clone();
    let nonce = [7u8; 16];
    let builder = CertRepBuilder {
        ra_cert,
        ra_key: &ra_key,
        digest: DigestAlg::Sha256,
        signature_form: scep_engine::certrep::SignatureForm::DigestWithRsa,
        transaction_id: "bench-certrep",
        recipient_nonce: &nonce,
        signing_time: UnixTime::now(),
    };
    let mut g = c.benchmark_group("certrep");
    g.bench_function("engine/success_reply", |b| {
        b.iter(|| {
            success_reply(&builder, &issued, &[&ca_cert], &requester, ContentCipher::Aes256Cbc, &SystemRandom).unwrap()
        })
    });
    g.bench_function("raw/rsa2048_sign+rsa2048_encrypt", |b| {
        b.iter(|| (raw.sign(&raw.ra_sign, &raw.signed), raw.encrypt()))
    });
    g.finish();
}

/// The raw aws-lc-rs operations of one PKCSReq enrolment (RSA-2048 device,
/// RA and CA; AES-256-CBC; SHA-256), counted off the code path, with inputs
/// of the sizes the real messages have:
///
/// - `Engine::handle`: `PkiMessageRef::verify` (SHA-256 messageDigest of the
///   envelope + RSA verify of signedAttrs); the self-signed signer
///   certificate's RSA verify (RFC 8894 §2.3); `envelope::open` (RSA decrypt
///   of the content key + AES-256-CBC decrypt of the CSR); the CSR's RSA
///   verify;
/// - `LocalCa::sign_enrollment`: SHA-1 of the device key (subjectKeyIdentifier)
///   + the CA's RSA sign of the TBSCertificate;
/// - `PendingIssue::resume`: `pkcs7::seal` (parse the device's SPKI + RSA
///   encrypt of the content key + AES-256-CBC encrypt of the certs-only
///   reply); the CertRep's SHA-256 messageDigest + the RA's RSA sign.
///
/// Not counted: random draws (content key, IV, serial, nonce) and DER work.
struct EnrolmentOps {
    raw: Raw,
    /// (message, device signature) for the three verifies.
    verifies: [(Vec<u8>, Vec<u8>); 3],
    request_content: Vec<u8>,
    tbs: Vec<u8>,
    reply_content: Vec<u8>,
    reply_envelope: Vec<u8>,
    certrep_attrs: Vec<u8>,
}

impl EnrolmentOps {
    fn new(p: &Pki) -> Self {
        let raw = Raw::new(p);
        let der = p.pkcs_req("bench-sizes".into());
        let msg = PkiMessageRef::parse(&der).unwrap();
        let signer_tbs_len = CertificateRef::parse(&p.device_cert).unwrap().tbs.len();
        let csr_info_len = CsrRef::parse(&p.csr).unwrap().info.len();
        let signed = |len: usize| {
            let m = vec![0x5a; len];
            let s = p.device.sign(DigestAlg::Sha256, &m).unwrap();
            (m, s)
        };
        let verifies = [signed(msg.signed_attrs_raw.len()), signed(signer_tbs_len), signed(csr_info_len)];
        // A real certificate for this device, to size the TBS and the reply.
        let Action::Issue(pending) = p.engine.handle(post(&der), UnixTime::now()) else { panic!("enrolment refused") };
        let IssueRequest::Enroll(e) = pending.request() else { panic!("not an enrolment") };
        let cert = p.ca.sign_enrollment(e, UnixTime::now()).unwrap().der;
        let tbs = vec![0xa5; CertificateRef::parse(&cert).unwrap().tbs.len()];
        let chain = p.ca.ca_chain();
        let mut certs: Vec<&[u8]> = vec![&cert];
        certs.extend(chain.iter().map(Vec::as_slice));
        let reply_content = pkcs7::certs_only(&certs, &[]);
        // The sealed reply: the ciphertext plus ~450 bytes of RecipientInfo.
        let reply_envelope = vec![0x3c; reply_content.len() + 16 + 450];
        Self {
            certrep_attrs: vec![0x5a; msg.signed_attrs_raw.len()],
            request_content: msg.content.to_vec(),
            raw,
            verifies,
            tbs,
            reply_content,
            reply_envelope,
        }
    }

    fn verify(&self, (message, sig): &(Vec<u8>, Vec<u8>)) {
        UnparsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, &self.raw.device_spki)
            .verify(message, sig)
            .unwrap();
    }

    /// Parses the device key (it differs per request) and wraps the content
    /// key; AES-256-CBC encrypts the certs-only reply.
    fn seal(&self) -> (Vec<u8>, Vec<u8>) {
        let key =
            rsa::Pkcs1PublicEncryptingKey::new(rsa::PublicEncryptingKey::from_der(&self.raw.device_spki).unwrap())
                .unwrap();
        let mut wrapped = vec![0u8; key.ciphertext_size()];
        let n = key.encrypt(&self.raw.content_key, &mut wrapped).unwrap().len();
        wrapped.truncate(n);
        let unbound = cipher::UnboundCipherKey::new(&cipher::AES_256, &self.raw.content_key).unwrap();
        let ek = cipher::PaddedBlockEncryptingKey::cbc_pkcs7(unbound).unwrap();
        let mut buf = self.reply_content.clone();
        ek.less_safe_encrypt(&mut buf, cipher::EncryptionContext::Iv128(self.raw.iv.into())).unwrap();
        (wrapped, buf)
    }

    /// One enrolment's worth of raw operations.
    fn run(&self) {
        let raw = &self.raw;
        // Engine::handle
        black_box(digest::digest(&digest::SHA256, &self.request_content));
        self.verify(&self.verifies[0]); // request signature
        self.verify(&self.verifies[1]); // self-signed signer certificate
        black_box(raw.decrypt_envelope());
        self.verify(&self.verifies[2]); // CSR signature
        // LocalCa::sign_enrollment
        black_box(digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, &raw.device_spki));
        black_box(raw.sign(&raw.ca_sign, &self.tbs));
        // PendingIssue::resume
        black_box(self.seal());
        black_box(digest::digest(&digest::SHA256, &self.reply_envelope));
        black_box(raw.sign(&raw.ra_sign, &self.certrep_attrs));
    }
}

/// Fresh PKCSReqs, each with its own transactionID (so the CA really issues
/// and commits a new certificate), built on two threads before a clock starts.
fn fresh_requests(p: &Pki, n: u64, counter: &AtomicU64) -> Vec<Vec<u8>> {
    let build = |k: u64| -> Vec<Vec<u8>> {
        (0..k)
            .map(|_| {
                let id = counter.fetch_add(1, Ordering::Relaxed);
                p.pkcs_req(format!("bench-enrol-{}-{id}", std::process::id()))
            })
            .collect()
    };
    std::thread::scope(|s| {
        let half = s.spawn(|| build(n / 2));
        let mut out = build(n - n / 2);
        out.extend(half.join().unwrap());
        out
    })
}

/// Running means of the timed iterations of one benchmark, for the printed
/// ratios (criterion's own estimates are the figures to quote).
#[derive(Default)]
struct Mean(Duration, u64);

impl Mean {
    fn add(&mut self, d: Duration, iters: u64) -> Duration {
        self.0 += d;
        self.1 += iters;
        d
    }

    fn ms(&self) -> f64 {
        self.0.as_secs_f64() * 1e3 / self.1.max(1) as f64
    }
}

/// One at a time, in the engine: `Engine::handle` → the CA's certificate
/// construction and signature (`LocalCa::sign_enrollment`, the part of
/// `handle_blocking` before the store) → `PendingIssue::resume`.
fn time_engine(p: &Pki, messages: &[Vec<u8>], iters: u64) -> Duration {
    let chain = p.ca.ca_chain();
    let start = Instant::now();
    for m in messages.iter().cycle().take(iters as usize) {
        let now = UnixTime::now();
        let Action::Issue(pending) = p.engine.handle(post(m), now) else { panic!("enrolment refused") };
        let IssueRequest::Enroll(e) = pending.request() else { panic!("not an enrolment") };
        let signed = p.ca.sign_enrollment(e, now).unwrap();
        // As handle_blocking answers: the certificate and a copy of the chain.
        let outcome = IssueOutcome::Issued { certificate: signed.der, chain: chain.clone() };
        let response = pending.resume(outcome, now);
        assert_eq!(response.outcome.label, "success");
        black_box(response);
    }
    start.elapsed()
}

/// One at a time, durable: `Engine::handle` → `LocalCa::handle_blocking`
/// (sign + SQLite commit, an fsync each) → `PendingIssue::resume`.
fn time_durable_serial(p: &Pki, iters: u64, counter: &AtomicU64, phases: &mut [Duration; 3]) -> Duration {
    let messages = fresh_requests(p, iters, counter);
    let start = Instant::now();
    for m in &messages {
        let now = UnixTime::now();
        let t0 = Instant::now();
        let Action::Issue(pending) = p.engine.handle(post(m), now) else { panic!("enrolment refused") };
        let t1 = Instant::now();
        let outcome = p.ca.handle_blocking(pending.request(), now);
        let t2 = Instant::now();
        assert!(matches!(outcome, IssueOutcome::Issued { .. }), "{outcome:?}");
        let response = pending.resume(outcome, now);
        let t3 = Instant::now();
        phases[0] += t1 - t0;
        phases[1] += t2 - t1;
        phases[2] += t3 - t2;
        assert_eq!(response.outcome.label, "success");
        black_box(response);
    }
    start.elapsed()
}

/// Enrolments in flight at once in the concurrent benchmark.
const IN_FLIGHT: usize = 32;

/// Concurrent and durable, as scepd serves on a 2-core host: a 2-worker tokio
/// runtime runs `IN_FLIGHT` tasks, each taking the next request through
/// `Engine::handle` → `Issuer::handle` (the local CA's sign + commit on the
/// `blocking` pool; the store's writer groups concurrent commits into one
/// fsync) → `PendingIssue::resume` (the loop of scep-service's `drive`).
/// Returns the wall time of all `iters`.
fn time_durable_concurrent(rt: &tokio::runtime::Runtime, p: &Pki, iters: u64, counter: &AtomicU64) -> Duration {
    let messages = Arc::new(fresh_requests(p, iters, counter));
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    rt.block_on(async {
        let tasks: Vec<_> = (0..IN_FLIGHT)
            .map(|_| {
                let (messages, next) = (Arc::clone(&messages), Arc::clone(&next));
                let (engine, ca) = (p.engine.clone(), p.ca.clone());
                tokio::spawn(async move {
                    while let Some(m) = messages.get(next.fetch_add(1, Ordering::Relaxed)) {
                        let Action::Issue(pending) = engine.handle(post(m), UnixTime::now()) else {
                            panic!("enrolment refused")
                        };
                        let outcome = Issuer::handle(&ca, pending.request(), UnixTime::now()).await;
                        assert!(matches!(outcome, IssueOutcome::Issued { .. }), "{outcome:?}");
                        let response = pending.resume(outcome, UnixTime::now());
                        assert_eq!(response.outcome.label, "success");
                        black_box(response);
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
    start.elapsed()
}

/// [`time_engine`] split over two OS threads (no database); wall time. Tells
/// the store's share of the concurrent figure from the engine's own scaling.
fn time_engine_concurrent(p: &Pki, messages: &[Vec<u8>], iters: u64) -> Duration {
    let start = Instant::now();
    std::thread::scope(|s| {
        let other = s.spawn(|| time_engine(p, messages, iters / 2));
        time_engine(p, messages, iters - iters / 2);
        other.join().unwrap();
    });
    start.elapsed()
}

/// The raw operations of `iters` enrolments split over two OS threads; wall time.
fn time_raw_concurrent(ops: &EnrolmentOps, iters: u64) -> Duration {
    let start = Instant::now();
    std::thread::scope(|s| {
        let other = s.spawn(|| (0..iters / 2).for_each(|_| ops.run()));
        (0..iters - iters / 2).for_each(|_| ops.run());
        other.join().unwrap();
    });
    start.elapsed()
}

fn enrollment(c: &mut Criterion) {
    let p = Pki::new(CaKeyType::Rsa2048);
    let ops = EnrolmentOps::new(&p);
    let counter = AtomicU64::new(0);
    let pool: Vec<Vec<u8>> = fresh_requests(&p, 64, &counter);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).build().unwrap();
    let (mut engine, mut raw, mut serial) = (Mean::default(), Mean::default(), Mean::default());
    let (mut conc, mut conc_engine, mut raw2) = (Mean::default(), Mean::default(), Mean::default());
    let mut phases = [Duration::ZERO; 3];
    let mut g = c.benchmark_group("enrollment");
    g.sample_size(10).sampling_mode(SamplingMode::Flat).warm_up_time(Duration::from_secs(2));

    // 1. In the engine (the issue-5 target): no database, one at a time.
    g.bench_function("engine/handle+ca_sign+resume", |b| {
        b.iter_custom(|iters| engine.add(time_engine(&p, &pool, iters), iters))
    });
    g.bench_function("engine/raw_3verify+decrypt+2sign+encrypt", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            (0..iters).for_each(|_| ops.run());
            raw.add(start.elapsed(), iters)
        })
    });

    // 2. With the durable store, one at a time: an fsync per enrolment.
    let before = p.ca.store_stats();
    g.bench_function("durable_serial/handle+localca_issue+resume", |b| {
        b.iter_custom(|iters| serial.add(time_durable_serial(&p, iters, &counter, &mut phases), iters))
    });
    let serial_stats = (p.ca.store_stats(), before);
    // The data directory filesystem's cost of one durable append.
    let probe = p._dir.path().join("fsync-probe");
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&probe).unwrap();
    g.bench_function("durable_serial/raw_4k_append+fdatasync", |b| {
        b.iter(|| {
            std::io::Write::write_all(&mut file, &[0u8; 4096]).unwrap();
            file.sync_data().unwrap();
        })
    });

    // 3. With the durable store, 32 in flight on 2 threads (group commit).
    let before = p.ca.store_stats();
    g.bench_function(format!("concurrent_2threads/{IN_FLIGHT}_in_flight_handle+localca_issue+resume"), |b| {
        b.iter_custom(|iters| conc.add(time_durable_concurrent(&rt, &p, iters, &counter), iters))
    });
    let conc_stats = (p.ca.store_stats(), before);
    g.bench_function("concurrent_2threads/raw_3verify+decrypt+2sign+encrypt", |b| {
        b.iter_custom(|iters| raw2.add(time_raw_concurrent(&ops, iters), iters))
    });
    g.bench_function("concurrent_2threads/engine_no_store_handle+ca_sign+resume", |b| {
        b.iter_custom(|iters| conc_engine.add(time_engine_concurrent(&p, &pool, iters), iters))
    });
    g.finish();

    let batch = |(after, before): (StoreStats, StoreStats)| {
        (after.operations - before.operations) as f64 / (after.commits - before.commits).max(1) as f64
    };
    let per = |d: Duration| d.as_secs_f64() * 1e3 / serial.1.max(1) as f64;
    eprintln!(
        "enrollment (running means over all timed iterations, warm-up included; quote criterion's estimates):\n\
         \x20 in the engine:        {:.3} ms vs raw {:.3} ms  => ratio {:.2}x\n\
         \x20 durable, serial:      {:.3} ms vs raw {:.3} ms  => ratio {:.2}x (mean commit batch {:.2}; \
         per enrolment: handle {:.3} ms, LocalCa sign+commit {:.3} ms, resume {:.3} ms)\n\
         \x20 durable, {IN_FLIGHT} in flight on 2 threads: {:.3} ms/enrolment (wall) vs raw on 2 threads \
         {:.3} ms/set => ratio {:.2}x (mean commit batch {:.2})\n\
         \x20 same on 2 threads without the store: {:.3} ms/enrolment => ratio {:.2}x",
        engine.ms(),
        raw.ms(),
        engine.ms() / raw.ms(),
        serial.ms(),
        raw.ms(),
        serial.ms() / raw.ms(),
        batch(serial_stats),
        per(phases[0]),
        per(phases[1]),
        per(phases[2]),
        conc.ms(),
        raw2.ms(),
        conc.ms() / raw2.ms(),
        batch(conc_stats),
        conc_engine.ms(),
        conc_engine.ms() / raw2.ms(),
    );
}

// ------------------------------------------------------------------ Intune

/// A Connector-like signer: a key, its anchor certificate and a JWS `alg`.
enum Connector {
    Rs256(signature::RsaKeyPair),
    Es256(signature::EcdsaKeyPair),
}

impl Connector {
    fn alg(&self) -> &'static str {
        match self {
            Self::Rs256(_) => "RS256",
            Self::Es256(_) => "ES256",
        }
    }

    fn sign(&self, input: &[u8]) -> Vec<u8> {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        match self {
            Self::Rs256(k) => {
                let mut sig = vec![0u8; k.public_modulus_len()];
                k.sign(&signature::RSA_PKCS1_SHA256, &rng, input, &mut sig).unwrap();
                sig
            }
            Self::Es256(k) => k.sign(&rng, input).unwrap().as_ref().to_vec(),
        }
    }

    fn public_key(&self) -> Vec<u8> {
        match self {
            Self::Rs256(k) => k.public_key().as_ref().to_vec(),
            Self::Es256(k) => k.public_key().as_ref().to_vec(),
        }
    }

    /// A challenge for device `n` with its own nonce (the replay gate refuses reuse).
    fn challenge(&self, now: UnixTime, n: u64) -> String {
        let header = format!(r#"{{"alg":"{}","typ":"JWT"}}"#, self.alg());
        let claims = format!(
            r#"{{"iss":"connector-bench","sub":"device-{n}","aud":"https://scep.example/scep/intune","iat":{},"exp":{},"nonce":"bench-nonce-{n}","device_name":"device.example.com","san_dns":["device.example.com"],"san_rfc822":["user@example.com"]}}"#,
            now.0 - 10,
            now.0 + 3000
        );
        let input = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(claims));
        let sig = self.sign(input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
    }
}

/// Validates `iters` fresh challenges (distinct nonces and devices) with a
/// new validator per batch; minting and validator set-up are not timed.
fn time_validations(connector: &Connector, pool: &SharedPool, now: UnixTime, iters: u64) -> Duration {
    const BATCH: u64 = 256;
    let cn = vec!["device.example.com".to_string()];
    let email = vec!["user@example.com".to_string()];
    let csr = CsrIdentity { common_names: &cn, dns: &cn, emails: &email, upns: &[] };
    let settings = IntuneSettings {
        audience: Some("https://scep.example/scep/intune".into()),
        replay_capacity: 4096,
        rate_limit_devices: 4096,
        ..IntuneSettings::default()
    };
    let mut total = Duration::ZERO;
    let mut remaining = iters;
    while remaining > 0 {
        let batch = remaining.min(BATCH);
        let validator = IntuneValidator::new("bench", pool.clone(), settings.clone(), &SystemRandom).unwrap();
        let challenges: Vec<String> = (0..batch).map(|n| connector.challenge(now, n)).collect();
        let start = Instant::now();
        for ch in &challenges {
            black_box(validator.validate(ch, &csr, now).unwrap());
        }
        total += start.elapsed();
        remaining -= batch;
    }
    total
}

fn intune(c: &mut Criterion) {
    let rsa_pki = Pki::new(CaKeyType::Rsa2048);
    let ec_pki = Pki::new(CaKeyType::EcP256);
    let now = UnixTime::now();
    let mut g = c.benchmark_group("intune");
    for (name, pki) in [("rs256", &rsa_pki), ("es256", &ec_pki)] {
        let connector = match pki.engine.config().ca_chain.first() {
            Some(_) if name == "rs256" => {
                Connector::Rs256(signature::RsaKeyPair::from_pkcs8(&pki.ca_key_pkcs8).unwrap())
            }
            _ => Connector::Es256(
                signature::EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &pki.ca_key_pkcs8)
                    .unwrap(),
            ),
        };
        let anchor = pem::encode("CERTIFICATE", &pki.engine.config().ca_chain[0]);
        let pool = SharedPool::from_pem(&anchor, now).unwrap();
        g.bench_function(format!("engine/validate_{name}"), |b| {
            b.iter_custom(|iters| time_validations(&connector, &pool, now, iters))
        });
        let challenge = connector.challenge(now, 0);
        let (input, sig64) = challenge.rsplit_once('.').unwrap();
        let sig = URL_SAFE_NO_PAD.decode(sig64).unwrap();
        let key = connector.public_key();
        let alg: &'static dyn signature::VerificationAlgorithm = match connector {
            Connector::Rs256(_) => &signature::RSA_PKCS1_2048_8192_SHA256,
            Connector::Es256(_) => &signature::ECDSA_P256_SHA256_FIXED,
        };
        g.bench_function(format!("raw/{name}_verify"), |b| {
            b.iter(|| UnparsedPublicKey::new(alg, &key).verify(input.as_bytes(), &sig).unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, pkimessage, envelope_open, certrep, enrollment, intune);
criterion_main!(benches);
