//! Helpers shared by the end-to-end test files.
#![allow(dead_code, clippy::unwrap_used, unreachable_pub)]

use std::path::Path;
use std::process::Command;

use scep_engine::oid;
use scep_engine::wire::{parse_single, tag};
use scep_engine::x509::{CertificateRef, SubjectAltName, parse_subject_alt_names};

/// The static challenge every test profile uses.
pub const CHALLENGE: &str = "secret123";

/// PEM of one certificate.
pub fn pem(der: &[u8]) -> String {
    scep_engine::pem::encode("CERTIFICATE", der)
}

/// Runs `openssl <args>` in `dir`; returns (success, stdout+stderr).
pub fn openssl(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl is installed");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// `openssl verify -CAfile ca.pem [-untrusted ra.pem] cert.pem` must print `cert.pem: OK`.
pub fn assert_openssl_verifies(ca_pem: &str, cert_pem: &str, purpose: Option<&str>) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), ca_pem).unwrap();
    std::fs::write(dir.path().join("cert.pem"), cert_pem).unwrap();
    let mut args = vec!["verify", "-CAfile", "ca.pem"];
    if let Some(p) = purpose {
        args.extend(["-purpose", p]);
    }
    args.push("cert.pem");
    let (ok, text) = openssl(dir.path(), &args);
    assert!(
        ok && text.contains("cert.pem: OK"),
        "openssl verify failed:\n{text}\n--- CA ---\n{ca_pem}\n--- cert ---\n{cert_pem}"
    );
}

/// The certificate's extKeyUsage purposes (OID contents).
pub fn ekus(cert: &CertificateRef<'_>) -> Vec<Vec<u8>> {
    let Some((_, value)) = cert.extension(oid::EXT_KEY_USAGE).unwrap() else { return Vec::new() };
    let seq = parse_single(value).unwrap();
    let mut r = seq.reader();
    let mut out = Vec::new();
    while !r.is_empty() {
        out.push(r.expect(tag::OID).unwrap().contents.to_vec());
    }
    out
}

/// The certificate's subjectAltNames.
pub fn sans(cert: &CertificateRef<'_>) -> Vec<SubjectAltName> {
    match cert.extension(oid::SUBJECT_ALT_NAME).unwrap() {
        Some((_, v)) => parse_subject_alt_names(v).unwrap(),
        None => Vec::new(),
    }
}

/// Asserts `cert_der` is signed by `ca_der`'s key and names it as issuer.
pub fn assert_signed_by(cert_der: &[u8], ca_der: &[u8]) {
    let cert = CertificateRef::parse(cert_der).unwrap();
    let ca = CertificateRef::parse(ca_der).unwrap();
    assert_eq!(cert.issuer, ca.subject, "issuer name is not the CA's subject");
    cert.verify_signed_by(ca.spki.public_key().unwrap()).expect("certificate signature verifies with the CA key");
}
