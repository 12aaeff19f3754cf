//! PKCS#11 token keys (`scep_issuers::pkcs11`) against a real SoftHSM2 token.
//!
//! Each test makes a throwaway token in a temporary directory with
//! `softhsm2-util --init-token --free` and generates its keys in the token
//! with `pkcs11-tool --keypairgen` (sensitive, never extractable). SoftHSM2
//! reads its configuration from `SOFTHSM2_CONF` when the library is
//! initialised, and this crate forbids `unsafe` (which `set_var` needs), so
//! each test runs its body in a child process of this test binary started
//! with that variable (`in_token`). A missing SoftHSM2 or OpenSC fails the
//! test naming the install command.

#![allow(clippy::unwrap_used)]

use scep_engine::crypto::provider::{KeyKind, PrivateKey};
use scep_engine::crypto::{DigestAlg, EcCurve, PublicKeyRef, SignatureAlg, rsa_encrypt_pkcs1};
use scep_engine::wire::{parse_single, tag};
use scep_issuers::pkcs11::{KeyUri, PinSource, Pkcs11Error, Pkcs11Key, Pkcs11Options};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const PIN: &str = "1234";
/// Set in the child: the token directory.
const CHILD_DIR: &str = "SCEPD_PKCS11_TEST_DIR";

fn need_tools(test: &str) {
    let present = |tool: &str| Command::new(tool).arg("--help").output().is_ok();
    if !Path::new(MODULE).exists() || !present("softhsm2-util") || !present("pkcs11-tool") {
        panic!(
            "{test} needs SoftHSM2 ({MODULE}, softhsm2-util) and OpenSC's pkcs11-tool: \
             apt-get install softhsm2 opensc (or run `bash .ci/run`, which installs them)"
        );
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Creates the token `scepd` in `dir` with the keys `ra` (RSA-2048, id 01),
/// `ec256` (P-256, id 02) and `ec384` (P-384, id 03).
fn make_token(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir.join("tokens")).unwrap();
    let conf = dir.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            dir.join("tokens").display()
        ),
    )
    .unwrap();
    std::fs::write(dir.join("pin"), format!("{PIN}\n")).unwrap();
    run(Command::new("softhsm2-util").env("SOFTHSM2_CONF", &conf).args([
        "--init-token",
        "--free",
        "--label",
        "scepd",
        "--pin",
        PIN,
        "--so-pin",
        "5678",
    ]));
    for (kind, label, id) in
        [("rsa:2048", "ra", "01"), ("EC:prime256v1", "ec256", "02"), ("EC:secp384r1", "ec384", "03")]
    {
        run(Command::new("pkcs11-tool").env("SOFTHSM2_CONF", &conf).args([
            "--module",
            MODULE,
            "--token-label",
            "scepd",
            "--login",
            "--pin",
            PIN,
            "--keypairgen",
            "--key-type",
            kind,
            "--label",
            label,
            "--id",
            id,
            "--usage-sign",
            "--usage-decrypt",
        ]));
    }
    conf
}

/// In the parent: makes a token, runs `test` in a child process that sees it,
/// and returns `None` after checking that the child passed. In the child:
/// returns the token directory.
fn in_token(test: &str) -> Option<PathBuf> {
    if let Ok(dir) = std::env::var(CHILD_DIR) {
        return Some(PathBuf::from(dir));
    }
    need_tools(test);
    let dir = tempfile::tempdir().unwrap();
    let conf = make_token(dir.path());
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env("SOFTHSM2_CONF", &conf)
        .env(CHILD_DIR, dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(180);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{test}: the child did not finish in 180 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(status.success(), "{test} failed in its SoftHSM2 child:\n{text}");
    assert!(text.contains("1 passed"), "{test}: the child ran no test:\n{text}");
    None
}

fn options(dir: &Path) -> Pkcs11Options {
    Pkcs11Options { module_path: Some(MODULE.into()), pin: Some(PinSource::File(dir.join("pin"))), max_sessions: 4 }
}

fn open(dir: &Path, uri: &str) -> Result<Pkcs11Key, Pkcs11Error> {
    Pkcs11Key::open(&KeyUri::parse(uri).unwrap(), &options(dir))
}

/// The public key inside a SubjectPublicKeyInfo, as the engine verifies with.
fn public_key(spki: &[u8], kind: KeyKind) -> PublicKeyRef<'_> {
    let mut r = parse_single(spki).unwrap().reader();
    r.expect(tag::SEQUENCE).unwrap();
    let bits = r.expect(tag::BIT_STRING).unwrap().bit_string_bytes().unwrap();
    match kind {
        KeyKind::Rsa { .. } => PublicKeyRef::Rsa(bits),
        KeyKind::Ec(EcCurve::P256) => PublicKeyRef::EcP256(bits),
        KeyKind::Ec(EcCurve::P384) => PublicKeyRef::EcP384(bits),
    }
}

#[test]
fn rsa_token_key_signs_verifiably_and_unwraps_content_keys() {
    let Some(dir) = in_token("rsa_token_key_signs_verifiably_and_unwraps_content_keys") else { return };
    let key = open(&dir, "pkcs11:token=scepd;object=ra;type=private").unwrap();
    assert_eq!(key.kind(), KeyKind::Rsa { modulus_bits: 2048 });
    let pk = public_key(key.spki_der(), key.kind());
    for digest in [DigestAlg::Sha256, DigestAlg::Sha384, DigestAlg::Sha512] {
        let sig = PrivateKey::sign(&key, digest, b"signed attributes").unwrap();
        assert_eq!(sig.len(), 256);
        SignatureAlg::RsaPkcs1(digest).verify(pk, b"signed attributes", &sig).unwrap();
        assert!(SignatureAlg::RsaPkcs1(digest).verify(pk, b"other attributes", &sig).is_err());
    }
    // SHA-1 is raised to SHA-256, as software keys do.
    let sig = PrivateKey::sign(&key, DigestAlg::Sha1, b"m").unwrap();
    SignatureAlg::RsaPkcs1(DigestAlg::Sha256).verify(pk, b"m", &sig).unwrap();

    // Key transport: what a client encrypts to the SPKI comes back.
    for content_key in [vec![0x11u8; 16], vec![0x22; 24], vec![0x33; 32]] {
        let ct = rsa_encrypt_pkcs1(key.spki_der(), &content_key).unwrap();
        assert_eq!(PrivateKey::decrypt_pkcs1v15(&key, &ct).unwrap(), Some(content_key));
    }
    // Ciphertexts that do not decrypt to a PKCS#1 v1.5 block: None, never an error.
    let good = rsa_encrypt_pkcs1(key.spki_der(), &[7; 32]).unwrap();
    let mut flipped = good.clone();
    flipped[100] ^= 0x40;
    let at_or_above_modulus = vec![0xff; 256];
    let small = {
        let mut c = vec![0u8; 256];
        c[255] = 2; // 2^e mod n: a block without the 00 02 prefix
        c
    };
    for (name, ct) in [
        ("flipped", flipped),
        ("above modulus", at_or_above_modulus),
        ("small", small),
        ("short", good[1..].to_vec()),
        ("empty", Vec::new()),
    ] {
        assert_eq!(PrivateKey::decrypt_pkcs1v15(&key, &ct).unwrap(), None, "{name}");
    }
    // The token still works after the refusals (sessions were returned).
    assert_eq!(PrivateKey::decrypt_pkcs1v15(&key, &good).unwrap(), Some(vec![7; 32]));
    assert!(key.unavailable().is_none());
}

#[test]
fn ecdsa_token_keys_sign_verifiably_with_every_digest() {
    let Some(dir) = in_token("ecdsa_token_keys_sign_verifiably_with_every_digest") else { return };
    for (uri, curve) in [("pkcs11:token=scepd;id=%02", EcCurve::P256), ("pkcs11:object=ec384", EcCurve::P384)] {
        let key = open(&dir, uri).unwrap();
        assert_eq!(key.kind(), KeyKind::Ec(curve), "{uri}");
        let pk = public_key(key.spki_der(), key.kind());
        for digest in [DigestAlg::Sha256, DigestAlg::Sha384, DigestAlg::Sha512] {
            let sig = PrivateKey::sign(&key, digest, b"tbsCertificate").unwrap();
            SignatureAlg::Ecdsa(digest)
                .verify(pk, b"tbsCertificate", &sig)
                .unwrap_or_else(|_| panic!("{uri} {digest:?}"));
        }
        // An EC key receives no key transport.
        assert_eq!(PrivateKey::decrypt_pkcs1v15(&key, &[0; 64]).unwrap(), None);
    }
}

#[test]
fn wrong_pin_unknown_key_and_missing_pin_are_refused_with_reasons() {
    let Some(dir) = in_token("wrong_pin_unknown_key_and_missing_pin_are_refused_with_reasons") else { return };
    std::fs::write(dir.join("wrong-pin"), "9999\n").unwrap();
    let uri = KeyUri::parse("pkcs11:token=scepd;object=ra").unwrap();
    let wrong = Pkcs11Options { pin: Some(PinSource::File(dir.join("wrong-pin"))), ..options(&dir) };
    let e = Pkcs11Key::open(&uri, &wrong).unwrap_err();
    assert!(matches!(e, Pkcs11Error::Pin { .. }), "{e:?}");
    let text = e.to_string();
    assert!(text.contains("wrong-pin") && text.contains("refused the PIN"), "{text}");
    assert!(!text.contains("9999"), "the PIN is never echoed: {text}");

    let missing =
        Pkcs11Options { pin: Some(PinSource::Env("SCEPD_TEST_NO_SUCH_PIN_VARIABLE".into())), ..options(&dir) };
    let e = Pkcs11Key::open(&uri, &missing).unwrap_err().to_string();
    assert!(e.contains("environment variable SCEPD_TEST_NO_SUCH_PIN_VARIABLE"), "{e}");

    let e = open(&dir, "pkcs11:token=scepd;object=nope").unwrap_err();
    assert!(matches!(e, Pkcs11Error::NotFound(_)) && e.to_string().contains("object=nope"), "{e}");
    let e = open(&dir, "pkcs11:token=other;object=ra").unwrap_err().to_string();
    assert!(e.contains("no token matches token=other") && e.contains("\"scepd\""), "{e}");
    let e = Pkcs11Key::open(&uri, &Pkcs11Options { pin: None, ..options(&dir) }).unwrap_err().to_string();
    assert!(e.contains("no PIN source") && e.contains("pkcs11.pin_file"), "{e}");
    // A wrong PIN did not spoil the token for the right one.
    open(&dir, "pkcs11:token=scepd;object=ra").unwrap();
}

#[test]
fn concurrent_operations_use_several_pooled_sessions() {
    let Some(dir) = in_token("concurrent_operations_use_several_pooled_sessions") else { return };
    let key = std::sync::Arc::new(open(&dir, "pkcs11:token=scepd;object=ra").unwrap());
    let pk_spki = key.spki_der().to_vec();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let key = key.clone();
            std::thread::spawn(move || {
                for i in 0..25u8 {
                    let ct = rsa_encrypt_pkcs1(key.spki_der(), &[t ^ i; 32]).unwrap();
                    assert_eq!(PrivateKey::decrypt_pkcs1v15(key.as_ref(), &ct).unwrap(), Some(vec![t ^ i; 32]));
                    PrivateKey::sign(key.as_ref(), DigestAlg::Sha256, &[t, i]).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let open_sessions = key.open_sessions();
    assert!((2..=4).contains(&open_sessions), "8 threads on a pool of 4 opened {open_sessions} sessions");
    assert_eq!(key.spki_der(), pk_spki.as_slice());
}

/// Moves the token's directory away (as if the HSM were unplugged), checks
/// that operations fail as *unavailable* (the service answers 503), then
/// puts it back and checks that the key works again without reopening it.
#[test]
fn a_removed_token_is_unavailable_and_the_key_recovers_when_it_returns() {
    let Some(dir) = in_token("a_removed_token_is_unavailable_and_the_key_recovers_when_it_returns") else { return };
    let key = open(&dir, "pkcs11:token=scepd;object=ra").unwrap();
    let ct = rsa_encrypt_pkcs1(key.spki_der(), &[5; 32]).unwrap();
    PrivateKey::sign(&key, DigestAlg::Sha256, b"before").unwrap();

    let tokens = dir.join("tokens");
    let away = dir.join("tokens-away");
    std::fs::rename(&tokens, &away).unwrap();
    std::fs::create_dir(&tokens).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let err = loop {
        match PrivateKey::sign(&key, DigestAlg::Sha256, b"during") {
            Err(e) => break e,
            Ok(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Ok(_) => panic!("the key still signs 10 s after its token was removed"),
        }
    };
    assert!(err.is_unavailable(), "{err}");
    let e = PrivateKey::decrypt_pkcs1v15(&key, &ct).unwrap_err();
    assert!(e.is_unavailable(), "{e}");
    assert!(key.unavailable().is_some());

    std::fs::remove_dir(&tokens).unwrap();
    std::fs::rename(&away, &tokens).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match PrivateKey::decrypt_pkcs1v15(&key, &ct) {
            Ok(v) => {
                assert_eq!(v, Some(vec![5; 32]));
                break;
            }
            Err(e) if e.is_unavailable() && Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => panic!("the key did not recover within 10 s of its token's return: {e}"),
        }
    }
    PrivateKey::sign(&key, DigestAlg::Sha256, b"after").unwrap();
    assert!(key.unavailable().is_none());
}
