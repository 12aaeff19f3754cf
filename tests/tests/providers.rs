//! Differential tests of the crypto providers (issue 19): aws-lc-rs and
//! RustCrypto must be interchangeable.
//!
//! - The six real-client PKIMessages (`tests/vectors/real-clients/`) handled
//!   by an engine on each provider give SUCCESS CertReps that the other
//!   provider and OpenSSL verify.
//! - Requests from our client (known device key; AES-128/256, 3DES and DES
//!   envelopes) handled on each provider give CertReps whose envelopes the
//!   other provider and OpenSSL decrypt, holding the issued certificate.
//! - Keys loaded through either provider (PKCS#8, PKCS#1, SEC1) give identical
//!   SubjectPublicKeyInfos, and each verifies the other's signatures.
//! - A property test: both providers give the same verdict on mutated
//!   signatures (RSA and ECDSA) and mutated messages.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use proptest::prelude::*;
use scep_engine::codes::{MessageType, PkiStatus};
use scep_engine::config::{
    AlgorithmPolicy, CaCertShape, ChallengePolicy, KeyPolicy, ProfileConfig, RaIdentity, RenewalPolicy, SanPolicy,
};
use scep_engine::crypto::provider::available_providers;
use scep_engine::crypto::{
    ContentCipher, CryptoProvider, DigestAlg, EcCurve, KeyKind, RaKey, RsaPrivateKey, SignatureAlg, SystemRandom,
};
use scep_engine::envelope::{Recipient, open_for_with};
use scep_engine::issue::IssuancePolicy;
use scep_engine::message::PkiMessageRef;
use scep_engine::x509::{CertificateRef, SubjectPublicKeyInfoRef};
use scep_engine::{Action, Engine, IssueOutcome, Message, Method, Request, UnixTime};
use scep_tests::client::{
    CsrSpec, DeviceKey, MessageBody, MessageOptions, Signer, SubjectName, build_csr, build_pki_message,
    parse_degenerate, self_signed_certificate,
};

const VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/vectors/real-clients/");
const CLIENTS: [&str; 6] = ["sscep", "certmonger", "pyscep", "scepreq", "jscep", "scepclient"];
/// The captures were made on 2026-11-25.
const CAPTURE_TIME: UnixTime = UnixTime(1_795_574_400);

fn read(name: &str) -> Vec<u8> {
    std::fs::read(format!("{VECTORS}{name}")).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn ra_cert() -> Vec<u8> {
    scep_engine::pem::certificates(&String::from_utf8(read("recipient-cert.pem")).unwrap()).unwrap().remove(0)
}

fn ra_key_der() -> Vec<u8> {
    scep_engine::pem::private_key(&String::from_utf8(read("recipient-key.pem")).unwrap()).unwrap()
}

/// Both providers: these tests compare them, so both must be compiled in.
fn providers() -> Vec<Arc<dyn CryptoProvider>> {
    let all = available_providers();
    let names: Vec<_> = all.iter().map(|p| p.name()).collect();
    assert_eq!(names, ["aws-lc-rs", "rustcrypto"], "scep-tests builds scep-engine with both providers");
    all
}

/// An engine whose algorithms and RA key are all `provider`'s.
fn engine_on(provider: &Arc<dyn CryptoProvider>) -> Engine {
    let key = RaKey::from_der_with(provider.as_ref(), &ra_key_der()).unwrap();
    assert!(format!("{:?}", key.private_key()).contains(if provider.name() == "rustcrypto" {
        "RustCrypto"
    } else {
        "AwsLc"
    }));
    let mut algorithms = AlgorithmPolicy::default();
    algorithms.ciphers.push(ContentCipher::DesCbc);
    Engine::new(ProfileConfig {
        name: "default".into(),
        ra: RaIdentity { certificate: ra_cert(), key },
        ca_chain: vec![ra_cert()],
        ca_cert_shape: CaCertShape::RaAndChain,
        challenge: ChallengePolicy::Static("secret123".into()),
        algorithms,
        keys: KeyPolicy::default(),
        renewal: RenewalPolicy::default(),
        issuance: IssuancePolicy::default(),
        allowed_ekus: vec![scep_engine::oid::KP_CLIENT_AUTH.to_vec(), scep_engine::oid::KP_SERVER_AUTH.to_vec()],
        sans: SanPolicy::default(),
        signing_time_tolerance: None,
        max_message_size: 256 * 1024,
        rng: Arc::new(SystemRandom),
        crypto: provider.clone(),
        intune: None,
    })
    .unwrap()
}

/// Handles one PKCSReq to the point of issuing `certificate`, returning the CertRep body.
fn enrol(engine: &Engine, body: &[u8], certificate: &[u8], now: UnixTime) -> Vec<u8> {
    let request = Request { method: Method::Post, operation: "PKIOperation", message: Message::Body(body) };
    match engine.handle(request, now) {
        Action::Issue(p) => {
            let r = p.resume(IssueOutcome::Issued { certificate: certificate.to_vec(), chain: vec![] }, now);
            assert_eq!(r.status, 200, "{:?}", r.outcome);
            r.body
        }
        Action::Respond(r) => panic!("expected an issue request, got {} {:?}", r.status, r.outcome),
        other => panic!("expected an issue request, got {other:?}"),
    }
}

/// Checks the CertRep's signature with `verifier` and that it is a SUCCESS.
fn check_cert_rep(rep: &[u8], verifier: &dyn CryptoProvider, what: &str) -> Vec<u8> {
    let m = PkiMessageRef::parse(rep).unwrap_or_else(|e| panic!("{what}: {e}"));
    m.verify_with(verifier).unwrap_or_else(|e| panic!("{what}: {} does not verify: {e}", verifier.name()));
    assert_eq!((m.message_type, m.pki_status), (MessageType::CERT_REP, Some(PkiStatus::SUCCESS)), "{what}");
    m.content.to_vec()
}

fn openssl(dir: &Path, args: &[&str], what: &str) {
    let out =
        Command::new("openssl").current_dir(dir).args(args).output().unwrap_or_else(|_| {
            scep_tests::missing_tool("providers", "the openssl command", "apt-get install openssl")
        });
    assert!(
        out.status.success(),
        "{what}: openssl {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn real_client_requests_get_cert_reps_the_other_provider_and_openssl_verify() {
    let dir = tempfile::tempdir().unwrap();
    let issued = ra_cert();
    for server in providers() {
        let engine = engine_on(&server);
        for client in CLIENTS {
            let what = format!("{client} on {}", server.name());
            let rep = enrol(&engine, &read(&format!("{client}-pkcsreq.der")), &issued, CAPTURE_TIME);
            for verifier in providers() {
                check_cert_rep(&rep, verifier.as_ref(), &what);
            }
            let file = format!("{client}-{}.der", server.name());
            std::fs::write(dir.path().join(&file), &rep).unwrap();
            openssl(
                dir.path(),
                &["cms", "-verify", "-noverify", "-inform", "DER", "-in", &file, "-binary", "-out", "/dev/null"],
                &what,
            );
        }
    }
}

#[test]
fn cert_reps_from_each_provider_are_decrypted_by_the_other_and_by_openssl() {
    let dir = tempfile::tempdir().unwrap();
    let now = UnixTime::now();
    let ra = ra_cert();
    for server in providers() {
        let engine = engine_on(&server);
        for (n, (cipher, digest)) in [
            (ContentCipher::Aes128Cbc, DigestAlg::Sha256),
            (ContentCipher::Aes256Cbc, DigestAlg::Sha512),
            (ContentCipher::DesEde3Cbc, DigestAlg::Sha384),
            // micromdm's choice: the reply is raised to 3DES (ContentCipher::for_reply).
            (ContentCipher::DesCbc, DigestAlg::Sha1),
        ]
        .into_iter()
        .enumerate()
        {
            let what = format!("{} with {} / {}", server.name(), cipher.name(), digest.name());
            let device = DeviceKey::pregenerated(n).unwrap();
            let subject = SubjectName::cn(format!("provider-{}-{n}", server.name()));
            let self_signed = self_signed_certificate(&device, &subject, 1).unwrap();
            let csr = build_csr(&device, &CsrSpec::new(format!("provider-{}-{n}", server.name()), Some("secret123")))
                .unwrap();
            let options = MessageOptions { cipher, digest, ..MessageOptions::default() };
            let req = build_pki_message(
                &MessageBody::PkcsReq(csr),
                Signer { certificate: &self_signed, key: &device },
                &ra,
                &options,
            )
            .unwrap();
            // "Issue" the device's own certificate: the test is about the envelope around it.
            let rep = enrol(&engine, &req.der, &self_signed, now);
            let envelope = check_cert_rep(&rep, server.as_ref(), &what);

            // Every provider opens it with the device key it loaded itself.
            let device_cert = CertificateRef::parse(&self_signed).unwrap();
            for opener in providers() {
                let key = RsaPrivateKey::from_der_with(opener.as_ref(), device.private_key_der()).unwrap();
                let opened = open_for_with(
                    opener.as_ref(),
                    &envelope,
                    &[Recipient { certificate: device_cert, key: &key }],
                    &[ContentCipher::DesEde3Cbc, ContentCipher::Aes128Cbc, ContentCipher::Aes256Cbc],
                    &SystemRandom,
                )
                .unwrap_or_else(|e| panic!("{what}: {} cannot open the reply: {e}", opener.name()));
                assert_eq!(opened.cipher, cipher.for_reply(), "{what}");
                let certs = parse_degenerate(&opened.content).unwrap().certificates;
                assert_eq!(certs, vec![self_signed.clone()], "{what}: opened by {}", opener.name());
            }

            // OpenSSL: verify, then decrypt with the device key, and find the certificate.
            let stem = format!("{}-{n}", server.name());
            std::fs::write(dir.path().join(format!("{stem}.der")), &rep).unwrap();
            std::fs::write(dir.path().join(format!("{stem}-key.pem")), device.to_pem()).unwrap();
            openssl(
                dir.path(),
                &[
                    "cms",
                    "-verify",
                    "-noverify",
                    "-inform",
                    "DER",
                    "-in",
                    &format!("{stem}.der"),
                    "-binary",
                    "-out",
                    &format!("{stem}-env.der"),
                ],
                &what,
            );
            openssl(
                dir.path(),
                &[
                    "cms",
                    "-decrypt",
                    "-inform",
                    "DER",
                    "-in",
                    &format!("{stem}-env.der"),
                    "-inkey",
                    &format!("{stem}-key.pem"),
                    "-binary",
                    "-out",
                    &format!("{stem}-certs.der"),
                ],
                &what,
            );
            let degenerate = std::fs::read(dir.path().join(format!("{stem}-certs.der"))).unwrap();
            assert_eq!(parse_degenerate(&degenerate).unwrap().certificates, vec![self_signed], "{what}: OpenSSL");
        }
    }
}

/// The key encodings a key file may hold, produced by OpenSSL from `pkcs8`.
fn encodings(dir: &Path, pkcs8: &[u8], rsa: bool, name: &str) -> Vec<(String, Vec<u8>)> {
    let p8 = dir.join(format!("{name}.p8"));
    std::fs::write(&p8, pkcs8).unwrap();
    let traditional = dir.join(format!("{name}.trad"));
    let tool = if rsa { "rsa" } else { "ec" };
    // OpenSSL 3 writes PKCS#1 with `rsa -traditional`, SEC1 with `ec`.
    let mut args = vec![tool, "-inform", "DER", "-in", p8.to_str().unwrap(), "-outform", "DER"];
    if rsa {
        args.push("-traditional");
    }
    args.extend(["-out", traditional.to_str().unwrap()]);
    openssl(dir, &args, name);
    vec![
        ("PKCS#8".to_string(), pkcs8.to_vec()),
        (if rsa { "PKCS#1" } else { "SEC1" }.to_string(), std::fs::read(traditional).unwrap()),
    ]
}

#[test]
fn keys_loaded_by_either_provider_have_identical_public_keys_and_cross_verify() {
    let dir = tempfile::tempdir().unwrap();
    let kinds = [KeyKind::Rsa { modulus_bits: 2048 }, KeyKind::Ec(EcCurve::P256), KeyKind::Ec(EcCurve::P384)];
    let mut keys = vec![("vector RA key".to_string(), ra_key_der(), true)];
    for generator in providers() {
        for kind in kinds {
            let g = generator.generate_private_key(kind).unwrap();
            assert_eq!(g.key.kind(), kind, "{} generated {kind:?}", generator.name());
            keys.push((format!("{} {}", generator.name(), kind.label()), g.pkcs8_der, kind.is_rsa()));
        }
    }
    for (i, (name, pkcs8, rsa)) in keys.iter().enumerate() {
        for (encoding, der) in encodings(dir.path(), pkcs8, *rsa, &format!("key{i}")) {
            let loaded: Vec<_> = providers()
                .iter()
                .map(|p| p.load_private_key(&der).unwrap_or_else(|e| panic!("{name} {encoding} in {}: {e}", p.name())))
                .collect();
            let [a, b] = loaded.as_slice() else { unreachable!() };
            assert_eq!(a.spki_der(), b.spki_der(), "{name} {encoding}: SPKI differs");
            assert_eq!(a.kind(), b.kind(), "{name} {encoding}");
            let spki = SubjectPublicKeyInfoRef::parse(a.spki_der()).unwrap();
            let public = spki.public_key().unwrap();
            for digest in [DigestAlg::Sha256, DigestAlg::Sha384, DigestAlg::Sha512] {
                let alg = if *rsa { SignatureAlg::RsaPkcs1(digest) } else { SignatureAlg::Ecdsa(digest) };
                for (signer, key) in providers().iter().zip(&loaded) {
                    let sig = key.sign(digest, b"signed attributes").unwrap();
                    for verifier in providers() {
                        verifier.verify(alg, public, &[b"signed ", b"attributes"], &sig).unwrap_or_else(|_| {
                            panic!(
                                "{name} {encoding} {digest:?}: {} refuses {}'s signature",
                                verifier.name(),
                                signer.name()
                            )
                        });
                        assert!(verifier.verify(alg, public, &[b"signed attributeS"], &sig).is_err());
                    }
                }
            }
            if *rsa {
                // Key transport both ways.
                for (sealer, opener) in [(0, 1), (1, 0)] {
                    let p = providers();
                    let ct = p[sealer].rsa_encrypt_pkcs1v15(a.spki_der(), &[7; 32]).unwrap();
                    assert_eq!(loaded[opener].decrypt_pkcs1v15(&ct).unwrap(), Some(vec![7; 32]), "{name}");
                    assert_eq!(loaded[opener].decrypt_pkcs1v15(&ct[1..]).unwrap(), None, "{name}");
                }
            }
        }
    }
}

#[test]
fn both_providers_refuse_and_accept_the_same_content_keys() {
    let p = providers();
    let weak = [0x01u8; 8];
    let fe_with_even_parity = [0xFFu8; 8];
    let ordinary = [0x13u8, 0x34, 0x57, 0x79, 0x9B, 0xBC, 0xDF, 0xF1];
    let other = [0x02u8, 0x31, 0x45, 0x68, 0x8A, 0xAB, 0xCD, 0xEF];
    let third = [0x0Eu8, 0x32, 0x92, 0x32, 0xEA, 0x6D, 0x0D, 0x73];
    let cases: Vec<(ContentCipher, Vec<u8>)> = vec![
        (ContentCipher::DesCbc, weak.to_vec()),
        (ContentCipher::DesCbc, fe_with_even_parity.to_vec()),
        (ContentCipher::DesCbc, ordinary.to_vec()),
        (ContentCipher::DesCbc, [0x1F, 0xE0, 0x1F, 0xE0, 0x0E, 0xF1, 0x0E, 0xF1].to_vec()),
        (ContentCipher::DesEde3Cbc, [ordinary, other, third].concat()),
        (ContentCipher::DesEde3Cbc, [ordinary, ordinary, third].concat()),
        (ContentCipher::DesEde3Cbc, [ordinary, other, ordinary].concat()),
        (ContentCipher::DesEde3Cbc, [ordinary, other, other].concat()),
        (ContentCipher::DesEde3Cbc, [ordinary, weak, third].concat()),
        (ContentCipher::Aes128Cbc, vec![0; 16]),
        (ContentCipher::Aes128Cbc, vec![0; 15]),
    ];
    for (cipher, key) in cases {
        let verdicts: Vec<bool> = p.iter().map(|p| p.accepts_content_key(cipher, &key)).collect();
        assert_eq!(verdicts[0], verdicts[1], "{} key {key:02x?}", cipher.name());
        let iv = vec![9u8; cipher.iv_len()];
        let sealed: Vec<_> = p.iter().map(|p| p.encrypt_content(cipher, &key, &iv, b"content").ok()).collect();
        assert_eq!(sealed[0], sealed[1], "{} key {key:02x?}: ciphertexts differ", cipher.name());
        assert_eq!(sealed[0].is_some(), verdicts[0]);
    }
}

/// The algorithm, SPKI, message and signature of one sample.
type Sample = (SignatureAlg, Vec<u8>, Vec<u8>, Vec<u8>);

/// A signature, message and public key for each kind, made once.
fn signed_samples() -> &'static [Sample] {
    static SAMPLES: std::sync::OnceLock<Vec<Sample>> = std::sync::OnceLock::new();
    SAMPLES.get_or_init(|| {
        let p = providers();
        [
            (KeyKind::Rsa { modulus_bits: 2048 }, SignatureAlg::RsaPkcs1(DigestAlg::Sha256)),
            (KeyKind::Ec(EcCurve::P256), SignatureAlg::Ecdsa(DigestAlg::Sha256)),
            (KeyKind::Ec(EcCurve::P384), SignatureAlg::Ecdsa(DigestAlg::Sha384)),
        ]
        .into_iter()
        .map(|(kind, alg)| {
            let key = p[0].generate_private_key(kind).unwrap().key;
            let message = b"signedAttrs as SET".to_vec();
            let sig = key.sign(alg_digest(alg), &message).unwrap();
            (alg, key.spki_der().to_vec(), message, sig)
        })
        .collect()
    })
}

const fn alg_digest(alg: SignatureAlg) -> DigestAlg {
    match alg {
        SignatureAlg::RsaPkcs1(d) | SignatureAlg::Ecdsa(d) => d,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Both providers give the same verdict on mutated signatures and
    /// messages: bytes flipped, truncated, extended (DER edge cases included).
    #[test]
    fn both_providers_agree_on_mutated_signatures(
        sample in 0usize..3,
        flips in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 0..3),
        cut in proptest::option::of(any::<prop::sample::Index>()),
        extra in proptest::collection::vec(any::<u8>(), 0..3),
        flip_message in any::<bool>(),
    ) {
        let (alg, spki, message, sig) = &signed_samples()[sample];
        let mut sig = sig.clone();
        for (at, x) in &flips {
            let i = at.index(sig.len());
            sig[i] ^= x;
        }
        if let Some(at) = cut {
            sig.truncate(at.index(sig.len()));
        }
        sig.extend_from_slice(&extra);
        let mut message = message.clone();
        if flip_message {
            message[0] ^= 1;
        }
        let spki = SubjectPublicKeyInfoRef::parse(spki).unwrap();
        let public = spki.public_key().unwrap();
        let verdicts: Vec<bool> =
            providers().iter().map(|p| p.verify(*alg, public, &[&message], &sig).is_ok()).collect();
        prop_assert_eq!(verdicts[0], verdicts[1], "{:?} on {:02x?}", alg, sig);
        let untouched = flips.is_empty() && cut.is_none() && extra.is_empty() && !flip_message;
        prop_assert_eq!(verdicts[0], untouched);
    }
}

#[test]
fn key_files_openssl_writes_load_through_either_provider_to_the_same_public_key() {
    use scep_engine::pem::{KeyFileError, private_key_der};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("pass"), "correct horse\n").unwrap();
    std::fs::write(d.join("wrong"), "battery staple\n").unwrap();
    let p = providers();
    let kinds = [KeyKind::Rsa { modulus_bits: 2048 }, KeyKind::Ec(EcCurve::P256), KeyKind::Ec(EcCurve::P384)];
    for (i, kind) in kinds.into_iter().enumerate() {
        let generated = p[i % 2].generate_private_key(kind).unwrap();
        let expected = generated.key.spki_der().to_vec();
        let p8 = format!("k{i}.p8");
        std::fs::write(d.join(&p8), &generated.pkcs8_der).unwrap();
        let traditional = if kind.is_rsa() { vec!["rsa", "-traditional"] } else { vec!["ec"] };
        // (file, openssl arguments, needs the passphrase)
        let mut forms: Vec<(String, Vec<String>, bool)> = vec![
            (format!("k{i}-pkcs8.pem"), vec!["pkey".into()], false),
            (format!("k{i}-trad.pem"), traditional.iter().map(|s| (*s).to_string()).collect(), false),
        ];
        for (name, scheme) in
            [("aes", vec!["-v2", "aes-256-cbc"]), ("scrypt", vec!["-scrypt"]), ("3des", vec!["-v2", "des3"])]
        {
            let mut args = vec!["pkcs8", "-topk8", "-passout", "file:pass"];
            args.extend(scheme);
            forms.push((format!("k{i}-{name}.pem"), args.into_iter().map(String::from).collect(), true));
        }
        for (file, args, encrypted) in forms {
            let mut full: Vec<&str> = args.iter().map(String::as_str).collect();
            full.extend(["-inform", "DER", "-in", &p8, "-out", &file]);
            openssl(d, &full, &file);
            let text = std::fs::read_to_string(d.join(&file)).unwrap();
            let passphrase = encrypted.then_some(&b"correct horse"[..]);
            let der = private_key_der(&text, passphrase).unwrap_or_else(|e| panic!("{file}: {e}"));
            for provider in &p {
                let key =
                    provider.load_private_key(&der).unwrap_or_else(|e| panic!("{file} in {}: {e}", provider.name()));
                assert_eq!(key.spki_der(), expected.as_slice(), "{file} in {}", provider.name());
            }
            if encrypted {
                assert_eq!(private_key_der(&text, None), Err(KeyFileError::PassphraseNeeded), "{file}");
                assert!(
                    matches!(private_key_der(&text, Some(b"battery staple")), Err(KeyFileError::Decrypt(_))),
                    "{file}"
                );
            } else {
                assert_eq!(
                    private_key_der(&text, Some(b"correct horse")),
                    Err(KeyFileError::PassphraseUnused),
                    "{file}"
                );
            }
        }
        // OpenSSL's legacy PEM encryption is refused with the conversion command.
        let legacy = format!("k{i}-legacy.pem");
        let mut args = traditional.clone();
        args.extend(["-aes256", "-passout", "file:pass", "-inform", "DER", "-in", &p8, "-out", &legacy]);
        openssl(d, &args, &legacy);
        let text = std::fs::read_to_string(d.join(&legacy)).unwrap();
        let e = private_key_der(&text, Some(b"correct horse")).unwrap_err();
        assert_eq!(e, KeyFileError::LegacyEncryption, "{legacy}");
        assert!(e.to_string().contains("openssl pkcs8 -topk8"), "{e}");
    }
    assert_eq!(
        private_key_der("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", None),
        Err(KeyFileError::NoKey)
    );
    let e = private_key_der("-----BEGIN PRIVATE KEY-----\nMAA=\n-----END PRIVATE KEY-----\n", None).unwrap_err();
    assert!(matches!(e, KeyFileError::Invalid { format: "PKCS#8 PrivateKeyInfo", .. }), "{e:?}");
}
