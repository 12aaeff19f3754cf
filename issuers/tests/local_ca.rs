//! The local CA end to end: real CSRs from `openssl req`, issued certificates
//! and CRLs checked with `openssl verify` / `openssl crl` / `openssl x509`.
// Test helpers outside #[test] functions unwrap too: a failure is a test failure.
#![allow(clippy::unwrap_used)]

use std::collections::{HashSet, VecDeque};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use futures_lite::future::block_on;
use scep_engine::FailInfo;
use scep_engine::crypto::RandomSource;
use scep_engine::issue::{
    Authorization, CertLookup, EnrollRequest, IssuancePolicy, IssueOutcome, IssueRequest, PollRequest, RenewRequest,
};
use scep_engine::oid;
use scep_engine::pem;
use scep_engine::time::UnixTime;
use scep_engine::wire::parse_single;
use scep_engine::x509::{CertificateRef, SubjectAltName};
use scep_issuers::crl::RevocationReason;
use scep_issuers::{
    BootstrapOptions, BootstrapOutcome, CaKeyType, Issuer, IssuerError, LocalCa, LocalCaConfig, bootstrap,
};

fn openssl(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl is installed");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "openssl {args:?} failed:\n{text}");
    text
}

/// A PKCS#10 request from `openssl req`: (subject DER, SPKI DER).
fn csr(dir: &Path, name: &str, newkey: &[&str], subj: &str) -> (Vec<u8>, Vec<u8>) {
    let (key, out) = (format!("{name}.key"), format!("{name}.csr"));
    let mut args = vec!["req", "-new", "-nodes", "-keyout", &key, "-subj", subj, "-outform", "DER", "-out", &out];
    args.extend_from_slice(newkey);
    openssl(dir, &args);
    let der = std::fs::read(dir.join(&out)).unwrap();
    let req = parse_single(&der).unwrap();
    let info = req.reader().read().unwrap();
    let mut r = info.reader();
    r.read().unwrap(); // version
    let subject = r.read().unwrap().raw.to_vec();
    let spki = r.read().unwrap().raw.to_vec();
    (subject, spki)
}

const RSA: &[&str] = &["-newkey", "rsa:2048"];
const EC: &[&str] = &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"];

fn enroll(txid: &str, (subject, spki): &(Vec<u8>, Vec<u8>), sans: Vec<SubjectAltName>) -> EnrollRequest {
    EnrollRequest {
        profile: "default".into(),
        transaction_id: txid.into(),
        csr_der: Vec::new(),
        subject_der: subject.clone(),
        spki_der: spki.clone(),
        subject_alt_names: sans,
        requested_ekus: Vec::new(),
        policy: IssuancePolicy::default(),
        authorization: Authorization::StaticChallenge,
        sid_extension: None,
    }
}

fn setup(dir: &Path, key: CaKeyType) -> (BootstrapOutcome, LocalCa) {
    let out = bootstrap(dir, &BootstrapOptions { ca_key: key, ..Default::default() }).unwrap();
    let ca = LocalCa::open(LocalCaConfig::new(&out.ca_cert, &out.ca_key, dir)).unwrap();
    (out, ca)
}

fn issued(outcome: IssueOutcome) -> Vec<u8> {
    match outcome {
        IssueOutcome::Issued { certificate, chain } => {
            assert_eq!(chain.len(), 1, "chain = the CA certificate");
            certificate
        }
        other => panic!("expected a certificate, got {other:?}"),
    }
}

fn fail_info(outcome: IssueOutcome) -> (FailInfo, String) {
    match outcome {
        IssueOutcome::Rejected { fail_info, reason } => (fail_info, reason),
        other => panic!("expected a rejection, got {other:?}"),
    }
}

fn refused_as(outcome: IssueOutcome) -> (FailInfo, &'static str, String) {
    match outcome {
        IssueOutcome::RejectedAs { fail_info, label, reason } => (fail_info, label, reason),
        other => panic!("expected a labelled refusal, got {other:?}"),
    }
}

fn write_pem(dir: &Path, name: &str, der: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, pem::encode("CERTIFICATE", der)).unwrap();
    p
}

fn serial_of(der: &[u8]) -> Vec<u8> {
    CertificateRef::parse(der).unwrap().serial.to_vec()
}

fn now() -> UnixTime {
    UnixTime::now()
}

#[test]
fn rsa_ca_issues_certificates_openssl_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (boot, ca) = setup(dir, CaKeyType::Rsa2048);
    assert_eq!(ca.id(), "iss-local");

    let req = csr(dir, "dev", RSA, "/CN=device-1/O=Example");
    let sans = vec![SubjectAltName::Dns("device-1.example".into()), SubjectAltName::Upn("dev1@corp.example".into())];
    let cert = issued(block_on(ca.handle(&IssueRequest::Enroll(enroll("tx-1", &req, sans)), now())));

    let parsed = CertificateRef::parse(&cert).unwrap();
    assert_eq!(parsed.subject, req.0.as_slice(), "subject copied verbatim");
    assert_eq!(parsed.spki.raw, req.1.as_slice(), "SPKI copied verbatim");
    assert_eq!(parsed.issuer, ca.signer().subject());
    // Positive INTEGER of at most 16 content octets (127 random bits).
    assert!(parsed.serial_der_contents.len() <= 16 && parsed.serial_der_contents[0] & 0x80 == 0);

    write_pem(dir, "dev.pem", &cert);
    assert!(openssl(dir, &["verify", "-CAfile", "ca.pem", "dev.pem"]).contains("dev.pem: OK"));
    let text = openssl(dir, &["x509", "-in", "dev.pem", "-noout", "-text"]);
    for needle in [
        "Version: 3",
        "X509v3 Basic Constraints: critical\n                CA:FALSE",
        "X509v3 Key Usage: critical\n                Digital Signature, Key Encipherment",
        "X509v3 Extended Key Usage: \n                TLS Web Client Authentication",
        "X509v3 Subject Alternative Name: \n                DNS:device-1.example",
        "X509v3 Subject Key Identifier",
        "X509v3 Authority Key Identifier",
        "Signature Algorithm: sha256WithRSAEncryption",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }

    // The CA and RA from bootstrap.
    let ca_text = openssl(dir, &["x509", "-in", "ca.pem", "-noout", "-text"]);
    assert!(ca_text.contains("CA:TRUE"), "{ca_text}");
    assert!(ca_text.contains("Certificate Sign, CRL Sign"), "{ca_text}");
    assert!(ca_text.contains("Subject: CN = scepd CA "), "{ca_text}");
    assert!(openssl(dir, &["verify", "-CAfile", "ca.pem", "ra.pem"]).contains("ra.pem: OK"));
    let ra_text = openssl(dir, &["x509", "-in", "ra.pem", "-noout", "-text"]);
    assert!(ra_text.contains("Digital Signature, Key Encipherment"), "{ra_text}");
    assert!(!ra_text.contains("Extended Key Usage"), "{ra_text}");
    assert!(ra_text.contains("Subject: CN = scepd RA "), "{ra_text}");
    assert!(ra_text.contains("Public-Key: (2048 bit)"), "{ra_text}");
    assert_eq!(boot.ra_cert, dir.join("ra.pem"));
    // The RA key matches the RA certificate.
    let ra_pub = openssl(dir, &["x509", "-in", "ra.pem", "-noout", "-pubkey"]);
    let key_pub = openssl(dir, &["pkey", "-in", "ra.key", "-pubout"]);
    assert_eq!(ra_pub, key_pub);
}

#[test]
fn ndes_ra_pair_verifies_with_openssl_and_has_the_usages_of_its_role() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (boot, _ca) = setup(dir, CaKeyType::Rsa2048);
    let ndes = boot.ndes.unwrap();
    for (file, usage) in [(&ndes.signing_cert, "Digital Signature\n"), (&ndes.encryption_cert, "Key Encipherment\n")] {
        let name = file.file_name().unwrap().to_str().unwrap();
        assert!(openssl(dir, &["verify", "-CAfile", "ca.pem", name]).contains(&format!("{name}: OK")));
        let text = openssl(dir, &["x509", "-in", name, "-noout", "-text"]);
        assert!(text.contains(&format!("X509v3 Key Usage: critical\n                {usage}")), "{name}:\n{text}");
        assert!(text.contains("CA:FALSE") && !text.contains("Extended Key Usage"), "{name}:\n{text}");
        assert!(text.contains("Public-Key: (2048 bit)"), "{text}");
    }
}

#[test]
fn sid_extension_is_copied_only_when_the_engine_passes_it_and_the_sid_uri_is_carried() {
    use scep_engine::strong_mapping::{SID_URI_PREFIX, parse_sid_extension, sid_extension_value};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_, ca) = setup(dir, CaKeyType::Rsa2048);
    let req = csr(dir, "intune", RSA, "/CN=intune-device");
    let sid = "S-1-5-21-3623811015-3361044348-30300820-1013";
    let uri = SubjectAltName::Uri(format!("{SID_URI_PREFIX}{sid}"));
    let plain = enroll("tx-sid-1", &req, vec![uri.clone()]);
    let trusted = EnrollRequest {
        transaction_id: "tx-sid-2".into(),
        sid_extension: Some(sid_extension_value(sid)),
        ..plain.clone()
    };
    for (e, expect_extension) in [(plain, false), (trusted, true)] {
        let cert = issued(block_on(ca.handle(&IssueRequest::Enroll(e), now())));
        let parsed = CertificateRef::parse(&cert).unwrap();
        let ext = parsed.extension(oid::MS_NTDS_CA_SECURITY_EXT).unwrap();
        assert_eq!(ext.is_some(), expect_extension);
        if let Some((critical, value)) = ext {
            assert!(!critical);
            assert_eq!(parse_sid_extension(value), Ok(sid));
        }
        let (_, san) = parsed.extension(oid::SUBJECT_ALT_NAME).unwrap().unwrap();
        assert_eq!(scep_engine::x509::parse_subject_alt_names(san).unwrap(), std::slice::from_ref(&uri));
        write_pem(dir, "sid.pem", &cert);
        let text = openssl(dir, &["x509", "-in", "sid.pem", "-noout", "-text"]);
        assert!(text.contains(&format!("URI:{SID_URI_PREFIX}{sid}")), "{text}");
        assert_eq!(text.contains("1.3.6.1.4.1.311.25.2"), expect_extension, "{text}");
    }
}

#[test]
fn ec_ca_issues_certificates_openssl_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_, ca) = setup(dir, CaKeyType::EcP256);
    assert!(openssl(dir, &["x509", "-in", "ca.pem", "-noout", "-text"]).contains("ecdsa-with-SHA256"));

    // EC subject key: no keyEncipherment.
    let ec_req = csr(dir, "ec", EC, "/CN=ec-device");
    let cert = issued(ca.handle_blocking(&IssueRequest::Enroll(enroll("tx-ec", &ec_req, vec![])), now()));
    write_pem(dir, "ec.pem", &cert);
    assert!(openssl(dir, &["verify", "-CAfile", "ca.pem", "ec.pem"]).contains("ec.pem: OK"));
    let text = openssl(dir, &["x509", "-in", "ec.pem", "-noout", "-text"]);
    assert!(text.contains("X509v3 Key Usage: critical\n                Digital Signature\n"), "{text}");
    assert!(!text.contains("Subject Alternative Name"), "{text}");

    // RSA subject key under an EC CA.
    let rsa_req = csr(dir, "rsa", RSA, "/CN=rsa-device");
    let cert = issued(ca.handle_blocking(&IssueRequest::Enroll(enroll("tx-rsa", &rsa_req, vec![])), now()));
    write_pem(dir, "rsa.pem", &cert);
    assert!(openssl(dir, &["verify", "-CAfile", "ca.pem", "rsa.pem"]).contains("rsa.pem: OK"));

    // Empty subject: the SAN carries the identity and is critical (RFC 5280 §4.2.1.6).
    let empty = (vec![0x30, 0x00], ec_req.1.clone());
    let sans = vec![SubjectAltName::Dns("nameless.example".into())];
    let cert = issued(ca.handle_blocking(&IssueRequest::Enroll(enroll("tx-empty", &empty, sans)), now()));
    write_pem(dir, "empty.pem", &cert);
    let text = openssl(dir, &["x509", "-in", "empty.pem", "-noout", "-text"]);
    assert!(text.contains("X509v3 Subject Alternative Name: critical"), "{text}");
    // ... and without any SAN it is refused, not issued.
    let (fi, reason) = fail_info(ca.handle_blocking(&IssueRequest::Enroll(enroll("tx-none", &empty, vec![])), now()));
    assert_eq!(fi, FailInfo::BAD_REQUEST);
    assert!(reason.contains("subjectAltName"), "{reason}");
}

#[test]
fn concurrent_issuance_records_everything_with_unique_serials() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_, ca) = setup(dir, CaKeyType::EcP256);
    let req = csr(dir, "dev", EC, "/CN=fleet");
    let t = now();
    let certs: Vec<Vec<u8>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|th| {
                let (ca, req) = (&ca, &req);
                s.spawn(move || {
                    (0..125)
                        .map(|i| {
                            let r = IssueRequest::Enroll(enroll(&format!("tx-{th}-{i}"), req, vec![]));
                            // Half through the async contract, half directly.
                            if i % 2 == 0 {
                                issued(block_on(ca.handle(&r, t)))
                            } else {
                                issued(ca.handle_blocking(&r, t))
                            }
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(certs.len(), 1000);
    let serials: HashSet<Vec<u8>> = certs.iter().map(|c| serial_of(c)).collect();
    assert_eq!(serials.len(), 1000, "serials never repeat");
    for c in &certs {
        let contents = CertificateRef::parse(c).unwrap().serial_der_contents;
        assert!(!contents.is_empty() && contents.len() <= 16 && contents[0] & 0x80 == 0, "{contents:02x?}");
    }
    // Every one was committed before it was returned.
    for c in &certs {
        let rec = ca.lookup(&serial_of(c)).unwrap().expect("recorded");
        assert_eq!(&rec.der, c);
    }
}

/// Hands out scripted 16-byte patterns, then a counter.
#[derive(Debug)]
struct Scripted(Mutex<VecDeque<u8>>);
impl RandomSource for Scripted {
    fn fill(&self, buf: &mut [u8]) {
        let mut q = self.0.lock().unwrap();
        let v = q.pop_front().unwrap_or(0x55);
        buf.fill(v);
    }
}

#[test]
fn sign_enrollment_signs_without_recording() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_, ca) = setup(dir, CaKeyType::Rsa2048);
    let req = csr(dir, "dev", RSA, "/CN=signed-only");
    let request = enroll("tx-signed", &req, Vec::new());

    let signed = ca.sign_enrollment(&request, now()).unwrap();
    let parsed = CertificateRef::parse(&signed.der).unwrap();
    assert_eq!(parsed.serial, signed.serial.as_slice());
    assert_eq!((parsed.not_before, parsed.not_after), (signed.not_before, signed.not_after));
    assert_eq!(parsed.spki.raw, req.1.as_slice());
    write_pem(dir, "signed.pem", &signed.der);
    assert!(openssl(dir, &["verify", "-CAfile", "ca.pem", "signed.pem"]).contains("signed.pem: OK"));
    // Nothing was recorded: not by serial, not by transaction.
    assert!(ca.lookup(&signed.serial).unwrap().is_none());
    let poll = PollRequest {
        profile: "default".into(),
        transaction_id: "tx-signed".into(),
        issuer_der: Vec::new(),
        subject_der: Vec::new(),
    };
    assert_eq!(fail_info(ca.handle_blocking(&IssueRequest::Poll(poll), now())).0, FailInfo::BAD_CERT_ID);
    assert_eq!(ca.store_stats().operations, 0, "no write reached the database");

    // A fresh serial every time; the enrolment path signs the same way and records.
    assert_ne!(ca.sign_enrollment(&request, now()).unwrap().serial, signed.serial);
    let cert = issued(ca.handle_blocking(&IssueRequest::Enroll(request.clone()), now()));
    assert!(ca.lookup(&serial_of(&cert)).unwrap().is_some());

    // An unusable request is a build error, not a panic.
    let mut empty = request;
    empty.subject_der = vec![0x30, 0x00];
    assert!(matches!(ca.sign_enrollment(&empty, now()), Err(IssuerError::Build(_))));
}

#[test]
fn serial_collision_draws_a_new_serial() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let boot = bootstrap(dir, &BootstrapOptions { ca_key: CaKeyType::EcP256, ..Default::default() }).unwrap();
    let mut config = LocalCaConfig::new(&boot.ca_cert, &boot.ca_key, dir);
    config.random = Arc::new(Scripted(Mutex::new(VecDeque::from([0x11, 0x11, 0x22]))));
    let ca = LocalCa::open(config).unwrap();
    let req = csr(dir, "dev", EC, "/CN=collide");
    let first = issued(ca.handle_blocking(&IssueRequest::Enroll(enroll("a", &req, vec![])), now()));
    let second = issued(ca.handle_blocking(&IssueRequest::Enroll(enroll("b", &req, vec![])), now()));
    assert_eq!(serial_of(&first), vec![0x11; 16]);
    assert_eq!(serial_of(&second), vec![0x22; 16], "the colliding 0x11.. serial was redrawn");
}

#[test]
fn records_survive_reopening() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (boot, ca) = setup(dir, CaKeyType::EcP256);
    let req = csr(dir, "dev", EC, "/CN=durable");
    let cert = issued(ca.handle_blocking(&IssueRequest::Enroll(enroll("tx-d", &req, vec![])), now()));
    let issuer = ca.signer().subject().to_vec();
    drop(ca);

    let ca = LocalCa::open(LocalCaConfig::new(&boot.ca_cert, &boot.ca_key, dir)).unwrap();
    let lookup = CertLookup { profile: "default".into(), issuer_der: issuer.clone(), serial: serial_of(&cert) };
    assert_eq!(issued(block_on(ca.handle(&IssueRequest::GetCert(lookup.clone()), now()))), cert);
    let poll = PollRequest {
        profile: "default".into(),
        transaction_id: "tx-d".into(),
        issuer_der: issuer.clone(),
        subject_der: req.0.clone(),
    };
    assert_eq!(issued(block_on(ca.handle(&IssueRequest::Poll(poll.clone()), now()))), cert);

    // A resent PKCSReq (same transaction, same key) gets the same certificate...
    assert_eq!(issued(ca.handle_blocking(&IssueRequest::Enroll(enroll("tx-d", &req, vec![])), now())), cert);
    // ... a different key under the same transactionID is refused.
    let other = csr(dir, "other", EC, "/CN=durable");
    let (fi, _) = fail_info(ca.handle_blocking(&IssueRequest::Enroll(enroll("tx-d", &other, vec![])), now()));
    assert_eq!(fi, FailInfo::BAD_REQUEST);

    // Unknown serial, foreign issuer, unknown transaction: badCertID.
    let unknown = CertLookup { serial: vec![0x01, 0x02], ..lookup.clone() };
    assert_eq!(fail_info(ca.handle_blocking(&IssueRequest::GetCert(unknown), now())).0, FailInfo::BAD_CERT_ID);
    let foreign = CertLookup { issuer_der: req.0.clone(), ..lookup };
    assert_eq!(fail_info(ca.handle_blocking(&IssueRequest::GetCert(foreign), now())).0, FailInfo::BAD_CERT_ID);
    let poll = PollRequest { transaction_id: "nope".into(), ..poll };
    assert_eq!(fail_info(ca.handle_blocking(&IssueRequest::Poll(poll), now())).0, FailInfo::BAD_CERT_ID);
}

/// Two instances of one CA on one SQLite index (a reload reopens a
/// configured CA while requests still hold the previous instance) count
/// revocations on one counter: a revocation through either makes the other's
/// caches stale (its CRL, an OCSP responder's answers), and the CRL it then
/// serves lists it. Another CA's counter does not move.
#[test]
fn instances_of_one_ca_on_one_index_share_the_revocation_counter() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (boot, old) = setup(dir, CaKeyType::EcP256);
    let reopened = LocalCa::open(LocalCaConfig::new(&boot.ca_cert, &boot.ca_key, dir)).unwrap();
    let other_dir = tempfile::tempdir().unwrap();
    let (_, other) = setup(other_dir.path(), CaKeyType::EcP256);
    let req = csr(dir, "dev", EC, "/CN=shared-counter");
    let cert = issued(reopened.handle_blocking(&IssueRequest::Enroll(enroll("tx-s", &req, vec![])), now()));
    let get_crl = IssueRequest::GetCrl(CertLookup {
        profile: "default".into(),
        issuer_der: reopened.signer().subject().to_vec(),
        serial: serial_of(&cert),
    });
    let crl = |ca: &LocalCa| match ca.handle_blocking(&get_crl, now()) {
        IssueOutcome::Crl(der) => der,
        other => panic!("expected a CRL, got {other:?}"),
    };
    let before = crl(&reopened);
    let (versions, other_version) =
        ((old.revocation_version(), reopened.revocation_version()), other.revocation_version());

    // Revoked through the previous instance.
    let revocation = old.revoke(&serial_of(&cert), RevocationReason::KeyCompromise, now()).unwrap();
    assert_eq!(reopened.revocation_version(), revocation.revocation_version, "the reopened instance sees it");
    assert!(reopened.revocation_version() > versions.1 && old.revocation_version() > versions.0);
    assert_eq!(other.revocation_version(), other_version, "another CA's counter is its own");
    let after = crl(&reopened);
    assert_ne!(after, before, "the reopened instance's cached CRL is stale and signed again");
    std::fs::write(dir.join("after.crl"), &after).unwrap();
    let text = openssl(dir, &["crl", "-inform", "DER", "-in", "after.crl", "-noout", "-text"]);
    assert!(text.contains("Key Compromise"), "{text}");
}

#[test]
fn renewal_requires_a_valid_certificate_of_this_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_, ca) = setup(dir, CaKeyType::EcP256);
    let issuer = ca.signer().subject().to_vec();
    let req = csr(dir, "dev", EC, "/CN=renewer");
    let t = now();
    let old = issued(ca.handle_blocking(&IssueRequest::Enroll(enroll("tx-old", &req, vec![])), t));
    let renew = |txid: &str, serial: Vec<u8>, old_issuer: Vec<u8>| {
        IssueRequest::Renew(RenewRequest { enroll: enroll(txid, &req, vec![]), old_serial: serial, old_issuer })
    };

    let (fi, reason) = fail_info(ca.handle_blocking(&renew("r1", vec![0x7f, 1, 2], issuer.clone()), t));
    assert_eq!(fi, FailInfo::BAD_CERT_ID, "{reason}");
    let (fi, _) = fail_info(ca.handle_blocking(&renew("r2", serial_of(&old), req.0.clone()), t));
    assert_eq!(fi, FailInfo::BAD_CERT_ID, "another issuer");

    // Regression (certmonger `getcert resubmit`): a renewal that keeps the key
    // reuses the key-derived transactionID of the certificate it renews. It is a
    // new transaction, not a resend; resending that renewal gets the same answer.
    let same_txid = issued(ca.handle_blocking(&renew("tx-old", serial_of(&old), issuer.clone()), t));
    assert_ne!(serial_of(&same_txid), serial_of(&old));
    let rec = ca.lookup(&serial_of(&same_txid)).unwrap().unwrap();
    assert_eq!(rec.renewal_of.as_deref(), Some(scep_issuers::x509_build::serial_hex(&serial_of(&old)).as_str()));
    assert_eq!(issued(ca.handle_blocking(&renew("tx-old", serial_of(&old), issuer.clone()), t)), same_txid);
    // Each certificate renews once: another renewal of `old` is refused.
    let (fi, label, reason) = refused_as(ca.handle_blocking(&renew("r3", serial_of(&old), issuer.clone()), t));
    assert_eq!((fi, label), (FailInfo::BAD_CERT_ID, "renewal_superseded"), "{reason}");
    // ... and the next renewal, signed by the renewed certificate, under the same transactionID.
    let next = issued(ca.handle_blocking(&renew("tx-old", serial_of(&same_txid), issuer.clone()), t));
    assert_ne!(serial_of(&next), serial_of(&same_txid));
    let poll = PollRequest {
        profile: "default".into(),
        transaction_id: "tx-old".into(),
        issuer_der: issuer.clone(),
        subject_der: req.0.clone(),
    };
    assert_eq!(issued(ca.handle_blocking(&IssueRequest::Poll(poll), t)), next, "CertPoll finds the newest");
    // A plain PKCSReq under that transactionID is still not a resend of the renewal.
    let (fi, _) = fail_info(ca.handle_blocking(&IssueRequest::Enroll(enroll("tx-old", &req, vec![])), t));
    assert_eq!(fi, FailInfo::BAD_REQUEST);

    ca.revoke(&serial_of(&next), RevocationReason::Superseded, t).unwrap();
    let (fi, reason) = fail_info(ca.handle_blocking(&renew("r4", serial_of(&next), issuer.clone()), t));
    assert_eq!(fi, FailInfo::BAD_CERT_ID);
    assert!(reason.contains("revoked"), "{reason}");

    // An expired certificate cannot be renewed.
    let mut short = enroll("tx-short", &req, vec![]);
    short.policy.validity_secs = 60;
    let short_cert = issued(ca.handle_blocking(&IssueRequest::Enroll(short), t));
    let (fi, reason) = fail_info(ca.handle_blocking(&renew("r5", serial_of(&short_cert), issuer), t.plus(120)));
    assert_eq!(fi, FailInfo::BAD_CERT_ID);
    assert!(reason.contains("expired"), "{reason}");
}

#[test]
fn crl_lists_revocations_and_openssl_verifies_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_, ca) = setup(dir, CaKeyType::Rsa2048);
    let issuer = ca.signer().subject().to_vec();
    let req = csr(dir, "dev", RSA, "/CN=revokee");
    let t = now();
    let a = issued(ca.handle_blocking(&IssueRequest::Enroll(enroll("tx-a", &req, vec![])), t));
    let b = issued(ca.handle_blocking(&IssueRequest::Enroll(enroll("tx-b", &req, vec![])), t));
    let get_crl =
        IssueRequest::GetCrl(CertLookup { profile: "default".into(), issuer_der: issuer, serial: serial_of(&a) });
    let crl = |at: UnixTime| match ca.handle_blocking(&get_crl, at) {
        IssueOutcome::Crl(der) => der,
        other => panic!("expected a CRL, got {other:?}"),
    };

    let empty = crl(t);
    assert_eq!(crl(t.plus(10)), empty, "unchanged CRL is served from cache");

    ca.revoke(&serial_of(&a), RevocationReason::KeyCompromise, t).unwrap();
    assert!(matches!(
        ca.revoke(&serial_of(&a), RevocationReason::KeyCompromise, t),
        Err(IssuerError::AlreadyRevoked(_))
    ));
    assert!(matches!(ca.revoke(&[0x01, 0x02], RevocationReason::Unspecified, t), Err(IssuerError::UnknownSerial(_))));
    let listed = crl(t.plus(20));
    assert_ne!(listed, empty, "a revocation re-signs the CRL at once");

    std::fs::write(dir.join("crl.der"), &listed).unwrap();
    let verify = openssl(dir, &["crl", "-inform", "DER", "-in", "crl.der", "-CAfile", "ca.pem", "-noout", "-verify"]);
    assert!(verify.contains("verify OK"), "{verify}");
    let text = openssl(dir, &["crl", "-inform", "DER", "-in", "crl.der", "-noout", "-text"]);
    let a_hex: String = serial_of(&a).iter().map(|b| format!("{b:02X}")).collect();
    let b_hex: String = serial_of(&b).iter().map(|b| format!("{b:02X}")).collect();
    assert!(text.contains(&format!("Serial Number: {a_hex}")), "{text}");
    assert!(!text.contains(&b_hex), "{text}");
    assert!(text.contains("Key Compromise"), "{text}");
    assert!(text.contains("Version 2"), "{text}");
    assert!(text.contains("X509v3 CRL Number: \n                2"), "{text}");
    assert!(text.contains("X509v3 Authority Key Identifier"), "{text}");

    // Past its maximum age the CRL is re-signed with the next number.
    let later = crl(t.plus(2 * 86_400));
    std::fs::write(dir.join("crl2.der"), &later).unwrap();
    let text = openssl(dir, &["crl", "-inform", "DER", "-in", "crl2.der", "-noout", "-text"]);
    assert!(text.contains("X509v3 CRL Number: \n                3"), "{text}");

    // Someone else's CRL: badCertID.
    let foreign =
        IssueRequest::GetCrl(CertLookup { profile: "default".into(), issuer_der: req.0.clone(), serial: vec![1] });
    assert_eq!(fail_info(ca.handle_blocking(&foreign, t)).0, FailInfo::BAD_CERT_ID);
}

#[test]
fn bootstrap_is_idempotent_and_keys_are_private() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state/scepd");
    let first = bootstrap(&dir, &BootstrapOptions::default()).unwrap();
    assert!(first.ca_created && first.ra_created);
    assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
    let ndes = first.ndes.clone().unwrap();
    for key in [&first.ca_key, &first.ra_key, &ndes.signing_key, &ndes.encryption_key] {
        assert_eq!(std::fs::metadata(key).unwrap().permissions().mode() & 0o777, 0o600, "{}", key.display());
    }
    let ca_pem = std::fs::read(&first.ca_cert).unwrap();
    let ca_key = std::fs::read(&first.ca_key).unwrap();

    let second = bootstrap(&dir, &BootstrapOptions::default()).unwrap();
    assert!(!second.ca_created && !second.ra_created);
    assert_eq!(std::fs::read(&second.ca_cert).unwrap(), ca_pem, "same CA");
    assert_eq!(std::fs::read(&second.ca_key).unwrap(), ca_key);
    assert_eq!(
        second.ndes,
        Some(scep_issuers::NdesRaFiles { signing_created: false, encryption_created: false, ..ndes })
    );
    // Nothing but the CA, the single RA and the NDES RA pair (no temporaries
    // or markers left behind).
    let mut names: Vec<String> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "ca.key",
            "ca.pem",
            "ra-encryption.key",
            "ra-encryption.pem",
            "ra-signing.key",
            "ra-signing.pem",
            "ra.key",
            "ra.pem"
        ]
    );
    // An expired CA is reported, naming the file.
    let far = BootstrapOptions { now: UnixTime::now().plus(20 * 365 * 86_400), ..Default::default() };
    let err = bootstrap(&dir, &far).unwrap_err();
    assert!(err.to_string().contains("ca.pem") && err.to_string().contains("not valid now"), "{err}");
}

#[test]
fn open_refuses_bad_ca_files_with_clear_errors() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let ba = bootstrap(a.path(), &BootstrapOptions { ca_key: CaKeyType::EcP256, ..Default::default() }).unwrap();
    let bb = bootstrap(b.path(), &BootstrapOptions { ca_key: CaKeyType::EcP256, ..Default::default() }).unwrap();

    let err = LocalCa::open(LocalCaConfig::new(&ba.ca_cert, &bb.ca_key, a.path())).unwrap_err();
    assert!(err.to_string().contains("does not match"), "{err}");
    assert!(err.to_string().contains(&ba.ca_cert.display().to_string()), "{err}");

    let err = LocalCa::open(LocalCaConfig::new(&ba.ra_cert, &ba.ra_key, a.path())).unwrap_err();
    assert!(err.to_string().contains("not a CA"), "{err}");

    let err = LocalCa::open_at(
        LocalCaConfig::new(&ba.ca_cert, &ba.ca_key, a.path()),
        UnixTime::now().plus(20 * 365 * 86_400),
    )
    .unwrap_err();
    assert!(err.to_string().contains("not valid now"), "{err}");

    let err = LocalCa::open(LocalCaConfig::new(a.path().join("missing.pem"), &ba.ca_key, a.path())).unwrap_err();
    assert!(err.to_string().contains("missing.pem"), "{err}");

    let err = LocalCa::open(LocalCaConfig::new(&ba.ca_key, &ba.ca_key, a.path())).unwrap_err();
    assert!(err.to_string().contains("no CERTIFICATE"), "{err}");

    // An extra chain file is appended to the served chain.
    let mut config = LocalCaConfig::new(&ba.ca_cert, &ba.ca_key, a.path());
    config.chain_pem = vec![bb.ca_cert.clone()];
    let ca = LocalCa::open(config).unwrap();
    assert_eq!(ca.ca_chain().len(), 2);
    assert_eq!(ca.ca_chain()[1], pem::certificates(&std::fs::read_to_string(&bb.ca_cert).unwrap()).unwrap()[0]);
}

#[test]
fn an_openssl_made_ca_opens_and_issues() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // RSA CA with a PKCS#8 key; EC CA with a SEC1 "EC PRIVATE KEY".
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "rsa-ca.key",
            "-out",
            "rsa-ca.pem",
            "-subj",
            "/CN=Corp Issuing CA/O=Corp",
            "-days",
            "30",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
    openssl(dir, &["ecparam", "-genkey", "-name", "prime256v1", "-noout", "-out", "ec-ca.key"]);
    openssl(dir, &["req", "-x509", "-key", "ec-ca.key", "-out", "ec-ca.pem", "-subj", "/CN=Corp EC CA", "-days", "30"]);
    assert!(std::fs::read_to_string(dir.join("ec-ca.key")).unwrap().contains("EC PRIVATE KEY"));
    let req = csr(dir, "dev", RSA, "/CN=corp-device");
    for name in ["rsa-ca", "ec-ca"] {
        let data = dir.join(format!("{name}-data"));
        let config = LocalCaConfig::new(dir.join(format!("{name}.pem")), dir.join(format!("{name}.key")), &data);
        let ca = LocalCa::open(config).unwrap();
        let cert = issued(ca.handle_blocking(&IssueRequest::Enroll(enroll("tx", &req, vec![])), now()));
        let file = format!("{name}-dev.pem");
        write_pem(dir, &file, &cert);
        let ca_file = format!("{name}.pem");
        assert!(openssl(dir, &["verify", "-CAfile", &ca_file, &file]).contains(": OK"), "{name}");
        // The AKI repeats the CA's own subjectKeyIdentifier.
        let ca_text = openssl(dir, &["x509", "-in", &ca_file, "-noout", "-ext", "subjectKeyIdentifier"]);
        let ski = ca_text.lines().nth(1).unwrap().trim().to_string();
        let text = openssl(dir, &["x509", "-in", &file, "-noout", "-ext", "authorityKeyIdentifier"]);
        assert!(text.contains(&ski), "{name}: {ski} not in {text}");
    }
}

/// Issue 13 item 4: profiles sharing the local CA share its records, so a
/// certificate issued on one profile must not renew on another.
#[test]
fn renewal_requires_a_certificate_of_the_same_profile() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_, ca) = setup(dir, CaKeyType::EcP256);
    let issuer = ca.signer().subject().to_vec();
    let req = csr(dir, "dev", EC, "/CN=profile-hopper");
    let t = now();
    let old = issued(ca.handle_blocking(&IssueRequest::Enroll(enroll("tx-static", &req, vec![])), t));
    let renew_on = |profile: &str, txid: &str| {
        let mut e = enroll(txid, &req, vec![]);
        e.profile = profile.into();
        IssueRequest::Renew(RenewRequest { enroll: e, old_serial: serial_of(&old), old_issuer: issuer.clone() })
    };
    let (fi, label, reason) = refused_as(ca.handle_blocking(&renew_on("intune", "r1"), t));
    assert_eq!((fi, label), (FailInfo::BAD_CERT_ID, "renewal_other_profile"));
    assert!(reason.contains("\"default\"") && reason.contains("\"intune\""), "{reason}");
    // The refusal consumed nothing: the same profile still renews it, once.
    issued(ca.handle_blocking(&renew_on("default", "r2"), t));
    let (_, label, _) = refused_as(ca.handle_blocking(&renew_on("default", "r3"), t));
    assert_eq!(label, "renewal_superseded");
}

/// Two renewals of one certificate racing each other: the store decides
/// inside its writer's transaction, so exactly one wins.
#[test]
fn concurrent_renewals_of_one_certificate_exactly_one_wins() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_, ca) = setup(dir, CaKeyType::EcP256);
    let issuer = ca.signer().subject().to_vec();
    let req = csr(dir, "dev", EC, "/CN=racer");
    let t = now();
    for round in 0..8 {
        let old = issued(ca.handle_blocking(&IssueRequest::Enroll(enroll(&format!("tx-{round}"), &req, vec![])), t));
        let barrier = std::sync::Barrier::new(4);
        let outcomes: Vec<IssueOutcome> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|i| {
                    let (ca, barrier, issuer, old, req) = (&ca, &barrier, &issuer, &old, &req);
                    s.spawn(move || {
                        let request = IssueRequest::Renew(RenewRequest {
                            enroll: enroll(&format!("race-{round}-{i}"), req, vec![]),
                            old_serial: serial_of(old),
                            old_issuer: issuer.clone(),
                        });
                        barrier.wait();
                        ca.handle_blocking(&request, t)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let won = outcomes.iter().filter(|o| matches!(o, IssueOutcome::Issued { .. })).count();
        let superseded = outcomes
            .iter()
            .filter(|o| matches!(o, IssueOutcome::RejectedAs { label: "renewal_superseded", .. }))
            .count();
        assert_eq!((won, superseded), (1, 3), "round {round}: {outcomes:?}");
    }
}

/// Two CRLs signed within one second (a revocation between two fetches) have
/// the same thisUpdate, so `Last-Modified` cannot tell them apart: the second
/// says so, and the HTTP layer then answers `If-Modified-Since` in full.
#[test]
fn a_crl_signed_in_the_same_second_as_the_one_it_replaces_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_, ca) = setup(dir, CaKeyType::EcP256);
    let t = now();
    let first = ca.published_crl(t).unwrap();
    assert!(first.distinct_this_update, "the first CRL of this process has no predecessor");
    let revoke_one = |name: &str| {
        let req = csr(dir, name, EC, &format!("/CN={name}"));
        let cert = issued(ca.handle_blocking(&IssueRequest::Enroll(enroll(name, &req, vec![])), t));
        ca.revoke(&serial_of(&cert), RevocationReason::KeyCompromise, t).unwrap();
    };

    revoke_one("same-second");
    let second = ca.published_crl(t).unwrap();
    assert!(second.crl_number > first.crl_number, "re-signed after the revocation");
    assert_eq!(second.this_update, first.this_update);
    assert!(!second.distinct_this_update, "same thisUpdate as the CRL it replaced");
    assert!(!ca.published_crl(t).unwrap().distinct_this_update, "served again from the cache: still ambiguous");

    revoke_one("next-second");
    let third = ca.published_crl(t.plus(1)).unwrap();
    assert!(third.crl_number > second.crl_number);
    assert!(third.distinct_this_update, "a later second identifies it");
}
