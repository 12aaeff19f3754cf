//! The fuzz seed corpora (fuzz/seeds/<target>/) are derived from the test
//! vectors: this test re-derives them and fails when the committed seeds are
//! stale. `SCEP_WRITE_FUZZ_SEEDS=1 cargo test -p scep-bench --test fuzz_seeds`
//! (re)writes them. fuzz/run.sh copies them into fuzz/corpus/<target>/.
//!
//! - pki_message: the six real-client PKCSReq captures;
//! - envelope: their pkcsPKIEnvelopes (eContent);
//! - csr: the PKCS#10 requests inside, decrypted with the recipient key;
//! - engine_handle: selector byte 0 (POST) + each capture, selector 2 (GET) +
//!   one capture base64/percent-encoded, selector 3 + each operation name;
//! - get_message: base64 of one capture, percent-encoded and with CR/LF;
//! - jws: the three Intune Connector vector challenges.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use scep_engine::crypto::{ContentCipher, RsaPrivateKey, SystemRandom};
use scep_engine::envelope;
use scep_engine::message::PkiMessageRef;
use scep_engine::x509::CertificateRef;

const CLIENTS: [&str; 6] = ["certmonger", "jscep", "pyscep", "scepclient", "scepreq", "sscep"];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn vector(path: &str) -> Vec<u8> {
    std::fs::read(root().join("tests/vectors").join(path)).unwrap()
}

fn percent_encode(b64: &str) -> String {
    b64.replace('+', "%2B").replace('/', "%2F").replace('=', "%3D")
}

/// target -> file name -> bytes.
fn derive() -> BTreeMap<&'static str, BTreeMap<String, Vec<u8>>> {
    let text = |p: &str| String::from_utf8(vector(p)).unwrap();
    let ra_cert_der = scep_engine::pem::certificates(&text("real-clients/recipient-cert.pem")).unwrap().remove(0);
    let ra_cert = CertificateRef::parse(&ra_cert_der).unwrap();
    let ra_key =
        RsaPrivateKey::from_der(&scep_engine::pem::private_key(&text("real-clients/recipient-key.pem")).unwrap())
            .unwrap();
    let mut ciphers = scep_engine::config::AlgorithmPolicy::default().ciphers;
    ciphers.push(ContentCipher::DesCbc);

    let mut seeds: BTreeMap<&'static str, BTreeMap<String, Vec<u8>>> = BTreeMap::new();
    let mut add = |target: &'static str, name: String, bytes: Vec<u8>| {
        seeds.entry(target).or_default().insert(name, bytes);
    };
    for client in CLIENTS {
        let der = vector(&format!("real-clients/{client}-pkcsreq.der"));
        let msg = PkiMessageRef::parse(&der).unwrap();
        let opened = envelope::open(&msg.content, &ra_cert, &ra_key, &ciphers, &SystemRandom).unwrap();
        add("pki_message", format!("{client}.der"), der.clone());
        add("envelope", format!("{client}.der"), msg.content.to_vec());
        add("csr", format!("{client}.der"), opened.content);
        add("engine_handle", format!("{client}-post.bin"), [&[0u8][..], &der].concat());
    }
    let capture = vector("real-clients/certmonger-pkcsreq.der");
    let b64 = STANDARD.encode(&capture);
    add("engine_handle", "certmonger-get.bin".into(), [b"\x02", percent_encode(&b64).as_bytes()].concat());
    for op in ["GetCACaps", "GetCACert", "GetNextCACert", "PKIOperation"] {
        add("engine_handle", format!("op-{op}.bin"), [b"\x03", op.as_bytes()].concat());
    }
    add("get_message", "percent.txt".into(), percent_encode(&b64).into_bytes());
    let wrapped: Vec<String> = b64.as_bytes().chunks(64).map(|c| String::from_utf8(c.to_vec()).unwrap()).collect();
    add(
        "get_message",
        "crlf-urlsafe.txt".into(),
        wrapped.join("%0D%0A").replace('+', "-").replace('/', "_").into_bytes(),
    );
    add("get_message", "spaces.txt".into(), b64.replace('+', " ").trim_end_matches('=').as_bytes().to_vec());
    for v in ["success", "expired", "tampered_sig"] {
        let text = vector(&format!("intune-connector/intune_challenge_golden_{v}.txt"));
        add("jws", format!("{v}.txt"), String::from_utf8(text).unwrap().trim().as_bytes().to_vec());
    }
    seeds
}

#[test]
fn fuzz_seeds_are_derived_from_the_vectors() {
    let seeds = derive();
    assert_eq!(seeds.len(), 6, "one seed directory per fuzz target");
    let dir = root().join("fuzz/seeds");
    let write = std::env::var_os("SCEP_WRITE_FUZZ_SEEDS").is_some();
    let mut stale = Vec::new();
    for (target, files) in &seeds {
        let target_dir = dir.join(target);
        if write {
            std::fs::create_dir_all(&target_dir).unwrap();
        }
        for (name, bytes) in files {
            let path = target_dir.join(name);
            if write {
                std::fs::write(&path, bytes).unwrap();
            } else if std::fs::read(&path).ok().as_ref() != Some(bytes) {
                stale.push(path.display().to_string());
            }
        }
    }
    assert!(stale.is_empty(), "stale fuzz seeds (rerun with SCEP_WRITE_FUZZ_SEEDS=1): {stale:?}");
}
