//! The OCSP responder (RFC 6960, RFC 5019) over a real local CA, its answers
//! read back by `openssl ocsp -respin`: the nonce-less answer is cached (the
//! second request gets the very same bytes without a database lookup), and a
//! revocation through [`LocalCa::revoke`] replaces it at once; the two
//! signers ([`ResponderSigning`]) sign with different certificates and
//! OpenSSL verifies both.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use scep_engine::issue::{Authorization, EnrollRequest, IssuancePolicy, IssueOutcome, IssueRequest};
use scep_engine::pem;
use scep_engine::time::UnixTime;
use scep_engine::wire::parse_single;
use scep_engine::x509::CertificateRef;
use scep_issuers::crl::RevocationReason;
use scep_issuers::ocsp::{OcspResponder, ResponderSigning};
use scep_issuers::{BootstrapOptions, LocalCa, LocalCaConfig, bootstrap};

fn openssl(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("openssl is required for this test: {e}"));
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// A local CA in `dir` (its certificate as `ca.pem`) and one certificate it
/// issued (`leaf.pem`).
fn ca_and_leaf(dir: &Path) -> (LocalCa, Vec<u8>) {
    let files = bootstrap(dir, &BootstrapOptions::default()).unwrap();
    let ca = LocalCa::open(LocalCaConfig::new(&files.ca_cert, &files.ca_key, dir)).unwrap();
    std::fs::write(dir.join("ca.pem"), pem::encode("CERTIFICATE", ca.signer().certificate())).unwrap();
    let (ok, text) = openssl(
        dir,
        &[
            "req",
            "-new",
            "-nodes",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-keyout",
            "leaf.key",
            "-subj",
            "/CN=ocsp-leaf",
            "-outform",
            "DER",
            "-out",
            "leaf.csr",
        ],
    );
    assert!(ok, "{text}");
    let csr = std::fs::read(dir.join("leaf.csr")).unwrap();
    let info = parse_single(&csr).unwrap().reader().read().unwrap();
    let mut r = info.reader();
    r.read().unwrap(); // version
    let subject_der = r.read().unwrap().raw.to_vec();
    let spki_der = r.read().unwrap().raw.to_vec();
    let request = IssueRequest::Enroll(EnrollRequest {
        profile: "default".into(),
        transaction_id: "ocsp-tx".into(),
        csr_der: Vec::new(),
        subject_der,
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
    std::fs::write(dir.join("leaf.pem"), pem::encode("CERTIFICATE", &leaf)).unwrap();
    (ca, leaf)
}

/// A nonce-less request for `leaf.pem` from `openssl ocsp -reqout`.
fn nonce_less_request(dir: &Path) -> Vec<u8> {
    let (ok, text) =
        openssl(dir, &["ocsp", "-issuer", "ca.pem", "-cert", "leaf.pem", "-no_nonce", "-reqout", "req.der"]);
    assert!(ok, "{text}");
    std::fs::read(dir.join("req.der")).unwrap()
}

/// `openssl ocsp -respin` on `der`, verified against the CA: its output
/// (status line, reason, and with `-resp_text` the whole response).
fn read_back(dir: &Path, der: &[u8], name: &str) -> String {
    std::fs::write(dir.join(name), der).unwrap();
    let (ok, text) = openssl(
        dir,
        &["ocsp", "-respin", name, "-issuer", "ca.pem", "-cert", "leaf.pem", "-CAfile", "ca.pem", "-resp_text"],
    );
    assert!(ok && text.contains("Response verify OK"), "{text}");
    text
}

/// [`read_back`] for an answer to `nonce.der`: OpenSSL checks that the
/// nonce it sent is the one echoed (`-cert` would make it build a new
/// request with a new nonce, so statuses are read from `-resp_text`).
fn read_back_nonce(dir: &Path, der: &[u8], name: &str) -> String {
    std::fs::write(dir.join(name), der).unwrap();
    let (ok, text) = openssl(dir, &["ocsp", "-reqin", "nonce.der", "-respin", name, "-CAfile", "ca.pem", "-resp_text"]);
    assert!(ok && text.contains("Response verify OK") && !text.contains("Nonce Verify error"), "{text}");
    text
}

#[test]
fn a_cached_nonce_less_answer_is_replaced_the_moment_the_certificate_is_revoked() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (ca, leaf) = ca_and_leaf(dir);
    let responder = Arc::new(OcspResponder::new(ca.clone(), ResponderSigning::Delegated).unwrap());
    let request = nonce_less_request(dir);
    let now = UnixTime::now();

    assert!(responder.cached(&request, now).is_none(), "nothing is cached before the first request");
    let first = responder.respond(&request, now);
    assert!(first.cacheable);
    assert!(read_back(dir, &first.der, "good.der").contains("leaf.pem: good"));

    // The second request (a second later) is the cached answer itself: the
    // same allocation, so no lookup and no signature were made for it.
    let hit = responder.cached(&request, now.plus(1)).expect("the nonce-less answer is cached");
    assert!(Arc::ptr_eq(&hit.der, &first.der));
    assert!(Arc::ptr_eq(&responder.respond(&request, now.plus(1)).der, &first.der));

    // A revocation through the CA (what the admin API calls) makes it stale at once.
    let serial = CertificateRef::parse(&leaf).unwrap().serial.to_vec();
    ca.revoke(&serial, RevocationReason::KeyCompromise, now.plus(2)).unwrap();
    assert!(responder.cached(&request, now.plus(2)).is_none(), "a revocation must invalidate the cached answer");
    let after = responder.respond(&request, now.plus(2));
    let text = read_back(dir, &after.der, "revoked.der");
    assert!(text.contains("leaf.pem: revoked"), "{text}");
    assert!(text.contains("Reason: keyCompromise"), "{text}");
    // ... and the revoked answer is what is cached from then on.
    let hit = responder.cached(&request, now.plus(3)).expect("the revoked answer is cached");
    assert!(Arc::ptr_eq(&hit.der, &after.der));

    // A nonce is echoed, and such an answer is never cached.
    let (ok, text) = openssl(dir, &["ocsp", "-issuer", "ca.pem", "-cert", "leaf.pem", "-reqout", "nonce.der"]);
    assert!(ok, "{text}");
    let with_nonce = std::fs::read(dir.join("nonce.der")).unwrap();
    let answer = responder.respond(&with_nonce, now.plus(3));
    assert!(!answer.cacheable);
    assert!(responder.cached(&with_nonce, now.plus(3)).is_none());
}

#[test]
fn the_ca_and_the_delegated_responder_sign_with_different_certificates_both_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (ca, _) = ca_and_leaf(dir);
    let request = nonce_less_request(dir);
    let now = UnixTime::now();

    let delegated = OcspResponder::new(ca.clone(), ResponderSigning::Delegated).unwrap().respond(&request, now);
    let text = read_back(dir, &delegated.der, "delegated.der");
    assert!(text.contains("leaf.pem: good"), "{text}");
    assert!(text.contains("scepd OCSP responder"), "the delegated certificate is in the answer: {text}");
    assert!(text.contains("OCSP Signing") && text.contains("OCSP No Check"), "{text}");

    let by_ca = OcspResponder::new(ca.clone(), ResponderSigning::Ca).unwrap().respond(&request, now);
    let text = read_back(dir, &by_ca.der, "ca.der");
    assert!(text.contains("leaf.pem: good"), "{text}");
    assert!(!text.contains("scepd OCSP responder"), "the CA signs and sends no certificate: {text}");

    // The ResponderID (byKey) differs: the delegated key is not the CA's.
    let responder_id = |t: &str| t.lines().find(|l| l.contains("Responder Id:")).unwrap_or_default().to_string();
    let (ok, ca_key_id) = openssl(dir, &["x509", "-in", "ca.pem", "-noout", "-ext", "subjectKeyIdentifier"]);
    assert!(ok, "{ca_key_id}");
    let ca_key_id: String = ca_key_id.lines().last().unwrap().trim().replace(':', "");
    let delegated_text = read_back(dir, &delegated.der, "delegated.der");
    assert!(responder_id(&text).contains(&ca_key_id), "CA-signed: {}", responder_id(&text));
    assert!(!responder_id(&delegated_text).contains(&ca_key_id), "delegated: {}", responder_id(&delegated_text));
}

#[test]
fn nonce_requests_are_answered_from_remembered_statuses_and_a_revocation_is_seen_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (ca, leaf) = ca_and_leaf(dir);
    let responder = Arc::new(OcspResponder::new(ca.clone(), ResponderSigning::Delegated).unwrap());
    let (ok, text) = openssl(dir, &["ocsp", "-issuer", "ca.pem", "-cert", "leaf.pem", "-reqout", "nonce.der"]);
    assert!(ok, "{text}");
    let with_nonce = std::fs::read(dir.join("nonce.der")).unwrap();
    let now = UnixTime::now();

    // Nothing is known yet: memory alone cannot answer (no status, no responder key).
    assert!(responder.respond_from_memory(&with_nonce, now).is_none());
    let first = responder.respond(&with_nonce, now);
    assert!(read_back_nonce(dir, &first.der, "first.der").contains("Cert Status: good"));

    // Now the status and the key are in memory: a fresh signature, the nonce echoed, no database.
    let again = responder.respond_from_memory(&with_nonce, now.plus(1)).expect("answered from memory");
    assert!(!Arc::ptr_eq(&again.der, &first.der), "a nonce answer is signed for each request");
    let text = read_back_nonce(dir, &again.der, "again.der");
    assert!(text.contains("Cert Status: good") && text.contains("OCSP Nonce"), "{text}");

    // A revocation makes the remembered status stale at once: memory gives up,
    // and the store answers revoked.
    let serial = CertificateRef::parse(&leaf).unwrap().serial.to_vec();
    ca.revoke(&serial, RevocationReason::Superseded, now.plus(2)).unwrap();
    assert!(responder.respond_from_memory(&with_nonce, now.plus(2)).is_none(), "a stale good must not be signed");
    let text = read_back_nonce(dir, &responder.respond(&with_nonce, now.plus(2)).der, "revoked.der");
    assert!(text.contains("Cert Status: revoked") && text.contains("Revocation Reason: superseded"), "{text}");
    let text = read_back_nonce(
        dir,
        &responder.respond_from_memory(&with_nonce, now.plus(3)).expect("revoked is remembered").der,
        "revoked-again.der",
    );
    assert!(text.contains("Cert Status: revoked"), "{text}");

    // A serial this CA never issued is not remembered as unknown: memory
    // cannot answer it, whatever was asked before.
    let (ok, text) = openssl(dir, &["ocsp", "-issuer", "ca.pem", "-serial", "0x1234", "-reqout", "unknown.der"]);
    assert!(ok, "{text}");
    let unknown = std::fs::read(dir.join("unknown.der")).unwrap();
    let text = {
        std::fs::write(dir.join("unknown-resp.der"), responder.respond(&unknown, now.plus(4)).der.as_ref()).unwrap();
        let (ok, text) = openssl(dir, &["ocsp", "-respin", "unknown-resp.der", "-CAfile", "ca.pem", "-resp_text"]);
        assert!(ok, "{text}");
        text
    };
    assert!(text.contains("Cert Status: unknown"), "{text}");
    assert!(responder.respond_from_memory(&unknown, now.plus(5)).is_none(), "unknown is always looked up");
}

/// With several local CAs (the built-in one and `[[issuer]] type = "local"`
/// ones) behind one OCSP URL, a request goes to the responder of the CA its
/// CertID names, whatever the order; one naming none of them, or one that
/// does not parse, goes to the first (which answers `unauthorized` or
/// `malformedRequest`), and so does nothing without responders.
#[test]
fn a_request_goes_to_the_responder_of_the_ca_it_names() {
    let (dir_a, dir_b, dir_c) =
        (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (ca_a, _) = ca_and_leaf(dir_a.path());
    let (ca_b, _) = ca_and_leaf(dir_b.path());
    let (_, _) = ca_and_leaf(dir_c.path());
    let a = Arc::new(OcspResponder::new(ca_a, ResponderSigning::Delegated).unwrap());
    let b = Arc::new(OcspResponder::new(ca_b, ResponderSigning::Delegated).unwrap());
    let for_a = nonce_less_request(dir_a.path());
    let for_b = nonce_less_request(dir_b.path());
    let for_c = nonce_less_request(dir_c.path());
    assert!(a.names_ca_of(&for_a) && !a.names_ca_of(&for_b) && b.names_ca_of(&for_b));
    for order in [[&a, &b], [&b, &a]] {
        let pick = |request: &[u8]| scep_issuers::ocsp::responder_for(order, request).map(Arc::as_ptr);
        assert_eq!(pick(&for_a), Some(Arc::as_ptr(&a)));
        assert_eq!(pick(&for_b), Some(Arc::as_ptr(&b)));
        assert_eq!(pick(&for_c), Some(Arc::as_ptr(order[0])), "another CA's CertID: the first answers");
        assert_eq!(pick(b"not an OCSP request"), Some(Arc::as_ptr(order[0])));
    }
    let none: [&Arc<OcspResponder>; 0] = [];
    assert!(scep_issuers::ocsp::responder_for(none, &for_a).is_none());
    // The one picked answers good; the other refuses.
    let now = UnixTime::now();
    let good = b.respond(&for_b, now);
    assert_eq!(good.status, scep_engine::ocsp::ResponseStatus::Successful);
    assert_eq!(a.respond(&for_b, now).status, scep_engine::ocsp::ResponseStatus::Unauthorized);
    assert!(read_back(dir_b.path(), &good.der, "b.der").contains("leaf.pem: good"));
}
