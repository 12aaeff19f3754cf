//! Criterion benchmarks of the engine's hot paths, each beside the raw
//! aws-lc-rs operations it is made of. Figures and ratios: docs/benchmarks.md.
//!
//! `cargo bench -p scep-bench --bench engine -- --warm-up-time 1 --measurement-time 3`
//!
//! Groups (each `engine/...` next to its `raw/...` counterpart):
//! - `pkimessage`: parse; verify vs one RSA-2048 PKCS#1 v1.5 SHA-256 verify;
//! - `envelope`: open (AES-256) vs RSA-2048 decrypt + AES-256-CBC decrypt;
//! - `certrep`: success_reply vs RSA sign + RSA encrypt;
//! - `enrollment`: PKCSReq handle + LocalCa issuance + resume vs the sum of
//!   its six raw operations (2 verify, 1 decrypt, 2 sign, 1 encrypt);
//! - `intune`: IntuneValidator::validate (RS256, ES256) vs the raw verify.

#![allow(clippy::unwrap_used)] // a benchmark fixture that cannot be built is a setup bug

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lc_rs::signature::{self, KeyPair as _, UnparsedPublicKey};
use aws_lc_rs::{cipher, rsa};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use criterion::{Criterion, criterion_group, criterion_main};
use scep_engine::certrep::{CertRepBuilder, success_reply};
use scep_engine::config::{
    AlgorithmPolicy, CaCertShape, ChallengePolicy, KeyPolicy, ProfileConfig, RaIdentity, RenewalPolicy,
};
use scep_engine::crypto::{ContentCipher, DigestAlg, RandomSource, RsaPrivateKey, SystemRandom};
use scep_engine::intune::{CsrIdentity, IntuneSettings, IntuneValidator, SharedPool};
use scep_engine::issue::IssuancePolicy;
use scep_engine::message::PkiMessageRef;
use scep_engine::x509::CertificateRef;
use scep_engine::{Action, Engine, IssueOutcome, Message, Method, Request, UnixTime, envelope, pem};
use scep_issuers::{BootstrapOptions, CaKeyType, LocalCa, LocalCaConfig, bootstrap};
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
            ra: RaIdentity { certificate: ra_cert.clone(), key: RsaPrivateKey::from_der(&ra_key_pkcs8).unwrap() },
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
    /// A TBSCertificate-sized message.
    tbs: Vec<u8>,
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
        let tbs = vec![0xa5; 700]; // an issued TBSCertificate
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
            tbs,
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
    let ra_key = RsaPrivateKey::from_der(&p.ra_key_pkcs8).unwrap();
    let requester = CertificateRef::parse(&p.device_cert).unwrap();
    let issued = p.ra_cert.clone(); // any certificate: the engine only wraps it
    let ca_cert = p.engine.config().ca_chain[0].clone();
    let nonce = [7u8; 16];
    let builder = CertRepBuilder {
        ra_cert,
        ra_key: &ra_key,
        digest: DigestAlg::Sha256,
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

/// Times `iters` enrolments, each with a fresh transactionID so the CA really
/// issues (and commits) a new certificate; message building is not timed.
fn time_enrolments(p: &Pki, iters: u64, counter: &mut u64, phases: &mut [Duration; 3]) -> Duration {
    let mut total = Duration::ZERO;
    let mut remaining = iters;
    while remaining > 0 {
        let batch = remaining.min(64);
        let messages: Vec<Vec<u8>> = (0..batch)
            .map(|_| {
                *counter += 1;
                p.pkcs_req(format!("bench-enrol-{}-{counter}", std::process::id()))
            })
            .collect();
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
        total += start.elapsed();
        remaining -= batch;
    }
    total
}

fn enrollment(c: &mut Criterion) {
    let p = Pki::new(CaKeyType::Rsa2048);
    let raw = Raw::new(&p);
    let mut counter = 0u64;
    let mut phases = [Duration::ZERO; 3];
    let mut g = c.benchmark_group("enrollment");
    g.sample_size(20);
    g.bench_function("engine/pkcsreq_handle+localca_issue+resume", |b| {
        b.iter_custom(|iters| time_enrolments(&p, iters, &mut counter, &mut phases))
    });
    // Where an enrolment's time goes: the same data-directory filesystem's
    // cost of one durable append (what the store's synchronous=FULL commit pays).
    let probe = p._dir.path().join("fsync-probe");
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&probe).unwrap();
    g.bench_function("raw/4k_append+fdatasync", |b| {
        b.iter(|| {
            std::io::Write::write_all(&mut file, &[0u8; 4096]).unwrap();
            file.sync_data().unwrap();
        })
    });
    g.bench_function("raw/2verify+decrypt+2sign+encrypt", |b| {
        b.iter(|| {
            raw.verify(); // request signature
            raw.verify(); // CSR signature
            black_box(raw.decrypt_envelope());
            black_box(raw.sign(&raw.ca_sign, &raw.tbs)); // the certificate
            black_box(raw.sign(&raw.ra_sign, &raw.signed)); // the CertRep
            black_box(raw.encrypt()); // the reply's content key
        })
    });
    g.finish();
    // The CA stores one row per issued certificate.
    let per = |d: Duration| d.as_secs_f64() * 1e3 / counter.max(1) as f64;
    eprintln!(
        "enrollment: {counter} certificates issued ({:?}); mean per enrolment: engine handle {:.3} ms, \
         LocalCa issue (sign + SQLite commit) {:.3} ms, engine resume {:.3} ms",
        p.ca.store_stats(),
        per(phases[0]),
        per(phases[1]),
        per(phases[2])
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
