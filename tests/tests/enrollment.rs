//! End-to-end: the independent Rust client against the real `scepd` binary
//! over HTTP, on the bootstrap `default` profile and on configured profiles.
//!
//! Every reply is checked with the client's `verify_cert_rep` (signature by
//! the RA, transactionID, recipientNonce, pkiStatus/failInfo, decryption) and
//! must be strict DER; every issued certificate must chain to the CA from
//! GetCACert and carry what the CSR asked for.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use scep_engine::crypto::{RandomSource as _, SystemRandom};
use scep_engine::oid;
use scep_engine::time::UnixTime;
use scep_engine::x509::CertificateRef;
use scep_tests::client::*;
use scep_tests::server::{Scepd, ScepdOptions};

/// A configured server: `corp` (defaults, served at /scep), `legacy` (single
/// DES opted in), `strict` (signingTime tolerance, 3072-bit minimum), `caonly`
/// (the CA is its own RA; GetCACert answers the lone CA certificate).
const CONFIG: &str = r#"
[server]
default_profile = "corp"
body_limit = 65536

[[profile]]
name = "corp"
challenge_password = "secret123"

[[profile]]
name = "legacy"
challenge_password = "secret123"
ciphers = ["des", "des3", "aes128", "aes192", "aes256"]

[[profile]]
name = "strict"
challenge_password = "secret123"
signing_time_tolerance_secs = 300
min_rsa_bits = 3072

[[profile]]
name = "caonly"
challenge_password = "secret123"
ra_cert = "data/ca.pem"
ra_key = "data/ca.key"
ca_chain_shape = "ca-only"
"#;

fn bootstrap_server() -> Scepd {
    Scepd::start(ScepdOptions::bootstrap(CHALLENGE)).unwrap_or_else(|e| panic!("{e}"))
}

fn configured_server() -> Scepd {
    Scepd::start(ScepdOptions::with_config(CONFIG)).unwrap_or_else(|e| panic!("{e}"))
}

fn client(url: &str) -> ScepClient {
    ScepClient::new(url).unwrap().with_timeout(Duration::from_secs(20))
}

/// A fresh random transactionID: the local CA answers a repeated
/// (transactionID, key) with the certificate it already issued, and the
/// tests reuse a few pregenerated keys.
fn txid() -> String {
    let mut b = [0u8; 16];
    SystemRandom.fill(&mut b);
    hex(&b)
}

fn opts(cipher: ContentCipher, digest: DigestAlg) -> MessageOptions {
    MessageOptions { cipher, digest, transaction_id: Some(txid()), ..MessageOptions::default() }
}

/// Checks a SUCCESS enrollment: the reply and the issued certificate.
fn check_issued(server: &Scepd, e: &Enrollment, key: &DeviceKey, spec: &CsrSpec, label: &str) -> Vec<u8> {
    let cert_der = e.issued().unwrap_or_else(|err| panic!("{label}: {err}\n{}", server.log_tail(20))).to_vec();
    let r = &e.reply;
    assert!(r.strict_der, "{label}: reply is not strict DER");
    assert_eq!(r.transaction_id, e.request.transaction_id, "{label}");
    assert_eq!(r.recipient_nonce, e.request.sender_nonce, "{label}");
    assert_ne!(r.sender_nonce, e.request.sender_nonce, "{label}: the server must send its own nonce");
    // GetCACert lists the signing RA first (the only RA, or NDES's signing RA
    // beside the encryption RA requests are encrypted to).
    assert_eq!(r.signer_certificate, e.ca.certificates[0], "{label}: CertRep must be signed by the signing RA");
    assert_eq!(r.digest, e.request.options.digest.for_reply(), "{label}: reply digest");
    assert_eq!(r.content_cipher, Some(e.request.options.cipher.for_reply()), "{label}: reply cipher");
    let cert = CertificateRef::parse(&cert_der).unwrap();
    assert_signed_by(&cert_der, e.ca.ca());
    assert_eq!(cert.spki.raw, key.spki_der(), "{label}: issued key is the CSR's");
    assert_eq!(cert.subject, spec.subject.to_der().as_slice(), "{label}: subject");
    let mut want = spec.subject_alt_names.clone();
    let mut got = sans(&cert);
    want.sort();
    got.sort();
    assert_eq!(got, want, "{label}: subjectAltNames");
    assert_eq!(ekus(&cert), vec![oid::KP_CLIENT_AUTH.to_vec()], "{label}: EKU");
    assert!(cert.is_valid_at(UnixTime::now()), "{label}: validity");
    cert_der
}

fn assert_failure(r: &CertRep, fail_info: FailInfo, label: &str) {
    assert_eq!(
        (r.status, r.fail_info),
        (PkiStatus::FAILURE, Some(fail_info)),
        "{label}: failInfoText {:?}",
        r.fail_info_text
    );
    assert!(r.certificates.is_empty() && r.strict_der, "{label}");
}

#[test]
fn get_ca_caps_and_get_ca_cert_on_the_bootstrap_profile() {
    let server = bootstrap_server();
    let c = client(&server.url());
    let caps = c.get_ca_caps().unwrap();
    let mut got = caps.capabilities.clone();
    got.sort();
    let mut want =
        ["AES", "DES3", "POSTPKIOperation", "Renewal", "SHA-1", "SHA-256", "SHA-384", "SHA-512", "SCEPStandard"];
    want.sort_unstable();
    assert_eq!(got, want, "GetCACaps: only what is implemented; single DES is not a default");
    // RFC 8894 §3.5.1: the caps body is text/plain.
    let raw = c.get("GetCACaps", None).unwrap();
    assert!(raw.content_type.as_deref().unwrap_or_default().starts_with("text/plain"), "{raw:?}");

    let ca = c.get_ca_cert().unwrap();
    assert_eq!(ca.content_type, "application/x-x509-ca-ra-cert");
    assert_eq!(ca.certificates.len(), 3, "signing RA, encryption RA, then CA (NDES's arrangement)");
    assert!(ca.has_ra());
    assert_eq!(ca.recipient_index, 1, "requests are encrypted to the encryption RA");
    let ca_pem_der = scep_engine::pem::certificates(&server.ca_pem()).unwrap();
    assert_eq!(ca_pem_der, vec![ca.ca().to_vec()], "GetCACert's CA is data/ca.pem");
    let ca_cert = CertificateRef::parse(ca.ca()).unwrap();
    assert!(ca_cert.is_self_issued());
    assert_signed_by(ca.ca(), ca.ca());
    assert_signed_by(ca.recipient(), ca.ca());
    assert_openssl_verifies(&server.ca_pem(), &pem(ca.recipient()), None);
    // `message` is optional for GetCACert (RFC 8894 §4.2).
    let bare = c.get("GetCACert", None).unwrap();
    assert_eq!((bare.status, bare.body.as_slice()), (200, ca_body(&c).as_slice()));

    // The NDES-style path serves the same profile.
    let ndes = client(&format!("{}/pkiclient.exe", server.url()));
    assert_eq!(ndes.get_ca_caps().unwrap(), caps);
    assert_eq!(ndes.get_ca_cert().unwrap(), ca);
}

fn ca_body(c: &ScepClient) -> Vec<u8> {
    c.get("GetCACert", Some("x")).unwrap().body
}

#[test]
fn every_cipher_and_digest_by_post_and_by_get() {
    let server = bootstrap_server();
    let c = client(&server.url());
    let key = DeviceKey::pregenerated(0).unwrap();
    let started = Instant::now();
    let mut n = 0;
    for cipher in
        [ContentCipher::DesEde3Cbc, ContentCipher::Aes128Cbc, ContentCipher::Aes192Cbc, ContentCipher::Aes256Cbc]
    {
        for digest in [DigestAlg::Sha1, DigestAlg::Sha256, DigestAlg::Sha384, DigestAlg::Sha512] {
            for method in [PkiMethod::Post, PkiMethod::Get] {
                let label = format!("{cipher:?}/{digest:?}/{method:?}");
                let mut spec = CsrSpec::new(format!("dev-{n}"), Some(CHALLENGE));
                spec.subject_alt_names = vec![SubjectAltName::Dns(format!("dev-{n}.example.com"))];
                let e = c
                    .enroll(&key, &spec, &opts(cipher, digest), method)
                    .unwrap_or_else(|err| panic!("{label}: {err}\n{}", server.log_tail(20)));
                check_issued(&server, &e, &key, &spec, &label);
                n += 1;
            }
        }
    }
    eprintln!("{n} enrollments in {:?}", started.elapsed());
}

#[test]
fn ber_requests_signature_oids_and_issued_certificate_contents() {
    let server = bootstrap_server();
    let c = client(&server.url());
    let key = DeviceKey::pregenerated(1).unwrap();

    // jscep-like BER (indefinite lengths, chunked OCTET STRINGs), two chunk sizes.
    for (i, encoding) in [Encoding::BER, Encoding::Ber { chunk: 7 }].into_iter().enumerate() {
        let spec = CsrSpec::new(format!("ber-{i}"), Some(CHALLENGE));
        let options = MessageOptions { transaction_id: Some(txid()), encoding, ..MessageOptions::jscep_like() };
        let e = c.enroll(&key, &spec, &options, PkiMethod::Post).unwrap();
        check_issued(&server, &e, &key, &spec, &format!("BER {encoding:?}"));
    }
    // SignerInfo.signatureAlgorithm rsaEncryption (certmonger, sscep) and shaNWithRSA (jscep, micromdm).
    for signature_oid in [SignatureOid::RsaEncryption, SignatureOid::DigestWithRsa] {
        for digest in [DigestAlg::Sha1, DigestAlg::Sha256] {
            let spec = CsrSpec::new(format!("sig-{signature_oid:?}-{digest:?}"), Some(CHALLENGE));
            let options = MessageOptions { signature_oid, ..opts(ContentCipher::Aes256Cbc, digest) };
            let e = c.enroll(&key, &spec, &options, PkiMethod::Post).unwrap();
            check_issued(&server, &e, &key, &spec, &format!("{signature_oid:?}/{digest:?}"));
            // Replies are signed as rsaEncryption whatever the request used: the
            // form RFC 3370 §3.2 makes every verifier accept, and the only one
            // strongSwan 5.9 verifies (it sends sha256WithRSAEncryption itself).
            assert_eq!(
                e.reply.signature_oid,
                oid::RSA_ENCRYPTION,
                "{signature_oid:?}/{digest:?}: reply signatureAlgorithm"
            );
        }
    }

    // A rich CSR: O/OU/C, DNS + email + UPN SANs, clientAuth asked explicitly.
    let mut spec = CsrSpec::new("Laptop 42", Some(CHALLENGE));
    spec.subject.organization = Some("Example Corp".into());
    spec.subject.organizational_unit = Some("Fleet".into());
    spec.subject.country = Some("FR".into());
    spec.subject_alt_names = vec![
        SubjectAltName::Dns("laptop-42.corp.example".into()),
        SubjectAltName::Email("alice@example.com".into()),
        SubjectAltName::Upn("alice@corp.example".into()),
    ];
    spec.extended_key_usage = vec![oid::KP_CLIENT_AUTH.to_vec()];
    let e = c.enroll(&key, &spec, &opts(ContentCipher::Aes256Cbc, DigestAlg::Sha256), PkiMethod::Post).unwrap();
    let cert = check_issued(&server, &e, &key, &spec, "rich CSR");
    // OpenSSL agrees: chain to the CA from GetCACert, fit for TLS client auth.
    assert_openssl_verifies(&pem(e.ca.ca()), &pem(&cert), Some("sslclient"));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("c.pem"), pem(&cert)).unwrap();
    let (ok, text) = openssl(dir.path(), &["x509", "-in", "c.pem", "-noout", "-text"]);
    assert!(ok, "{text}");
    for needle in [
        "TLS Web Client Authentication",
        "DNS:laptop-42.corp.example",
        "email:alice@example.com",
        "alice@corp.example",
        "Subject: C = FR, O = Example Corp, OU = Fleet, CN = Laptop 42",
    ] {
        assert!(text.contains(needle), "openssl x509 -text lacks {needle:?}:\n{text}");
    }
}

#[test]
fn renewal_cert_poll_get_cert_and_get_crl() {
    let server = bootstrap_server();
    let c = client(&server.url());
    let key = DeviceKey::pregenerated(2).unwrap();
    let mut spec = CsrSpec::new("renew-me", Some(CHALLENGE));
    spec.subject_alt_names = vec![SubjectAltName::Dns("renew-me.example".into())];
    let first = c.enroll(&key, &spec, &opts(ContentCipher::Aes256Cbc, DigestAlg::Sha256), PkiMethod::Post).unwrap();
    let issued = check_issued(&server, &first, &key, &spec, "first enrollment");
    let issued_ref = CertificateRef::parse(&issued).unwrap();
    let ca = first.ca.clone();

    // Signed by the issued certificate; the reply is encrypted to it.
    let renew = |body: MessageBody, label: &str| -> CertRep {
        let req = build_pki_message(
            &body,
            Signer { certificate: &issued, key: &key },
            ca.recipient(),
            &opts(ContentCipher::Aes128Cbc, DigestAlg::Sha256),
        )
        .unwrap();
        c.transact(&req, &key, &ca, PkiMethod::Post).unwrap_or_else(|e| panic!("{label}: {e}"))
    };
    let no_challenge = |cn: &str, sans: Vec<SubjectAltName>| {
        let mut s = CsrSpec::new(cn, None);
        s.subject_alt_names = sans;
        s
    };
    let same_sans = spec.subject_alt_names.clone();

    // RenewalReq with a new key: same subject, new serial, no challenge needed.
    let new_key = DeviceKey::pregenerated(3).unwrap();
    let csr = build_csr(&new_key, &no_challenge("renew-me", same_sans.clone())).unwrap();
    let rep = renew(MessageBody::RenewalReq(csr), "RenewalReq");
    assert_eq!(rep.status, PkiStatus::SUCCESS, "{:?} {:?}\n{}", rep.fail_info, rep.fail_info_text, server.log_tail(10));
    assert!(rep.strict_der);
    let renewed_der = rep.issued_certificate(&new_key).unwrap().to_vec();
    let renewed = CertificateRef::parse(&renewed_der).unwrap();
    assert_eq!(renewed.spki.raw, new_key.spki_der());
    assert_eq!(renewed.subject, issued_ref.subject);
    assert_ne!(renewed.serial, issued_ref.serial);
    assert_eq!(sans(&renewed), same_sans);
    assert_signed_by(&renewed_der, ca.ca());

    // Each certificate renews once (issue 13): the issued certificate is now superseded.
    let other_key = DeviceKey::pregenerated(4).unwrap();
    let csr = build_csr(&other_key, &no_challenge("renew-me", same_sans.clone())).unwrap();
    assert_failure(&renew(MessageBody::PkcsReq(csr.clone()), "superseded"), FailInfo::BAD_CERT_ID, "superseded");

    // certmonger-style: a PKCSReq signed by the (renewed) certificate is a renewal too.
    let req = build_pki_message(
        &MessageBody::PkcsReq(csr),
        Signer { certificate: &renewed_der, key: &new_key },
        ca.recipient(),
        &opts(ContentCipher::Aes128Cbc, DigestAlg::Sha256),
    )
    .unwrap();
    let rep = c.transact(&req, &new_key, &ca, PkiMethod::Post).unwrap();
    assert_eq!(rep.status, PkiStatus::SUCCESS, "{:?} {:?}", rep.fail_info, rep.fail_info_text);
    let again = CertificateRef::parse(rep.issued_certificate(&other_key).unwrap()).unwrap();
    assert_eq!((again.subject, again.spki.raw), (issued_ref.subject, other_key.spki_der()));
    assert_ne!(again.serial, issued_ref.serial);
    assert_ne!(again.serial, renewed.serial);

    // Renewal may not change the subject, nor (by default) the SANs.
    let csr = build_csr(&new_key, &no_challenge("someone-else", same_sans.clone())).unwrap();
    assert_failure(&renew(MessageBody::RenewalReq(csr), "subject change"), FailInfo::BAD_REQUEST, "subject change");
    let csr = build_csr(&new_key, &no_challenge("renew-me", vec![SubjectAltName::Dns("evil.example".into())])).unwrap();
    assert_failure(&renew(MessageBody::RenewalReq(csr), "SAN change"), FailInfo::BAD_REQUEST, "SAN change");

    // A client that keeps its key and derives the transactionID from it (RFC
    // 8894 §3.2.1.1; certmonger, sscep): a resent first request gets the same
    // certificate, and a renewal under the same transactionID a new one.
    let keeper = DeviceKey::pregenerated(8).unwrap();
    let keeper_spec = CsrSpec::new("keeps-its-key", Some(CHALLENGE));
    let derived = MessageOptions::default();
    assert!(derived.transaction_id.is_none());
    let a = c.enroll(&keeper, &keeper_spec, &derived, PkiMethod::Post).unwrap();
    let a_cert = check_issued(&server, &a, &keeper, &keeper_spec, "key-derived txid");
    assert_eq!(a.request.transaction_id, keeper.transaction_id());
    let resent = c.enroll(&keeper, &keeper_spec, &derived, PkiMethod::Get).unwrap();
    assert_eq!(resent.issued().unwrap(), a_cert.as_slice(), "a resend is answered with the same certificate");
    let req = build_pki_message(
        &MessageBody::PkcsReq(build_csr(&keeper, &no_challenge("keeps-its-key", vec![])).unwrap()),
        Signer { certificate: &a_cert, key: &keeper },
        ca.recipient(),
        &derived,
    )
    .unwrap();
    assert_eq!(req.transaction_id, a.request.transaction_id);
    let rep = c.transact(&req, &keeper, &ca, PkiMethod::Post).unwrap();
    assert_eq!(rep.status, PkiStatus::SUCCESS, "{:?} {:?}", rep.fail_info, rep.fail_info_text);
    let b_cert = CertificateRef::parse(rep.issued_certificate(&keeper).unwrap()).unwrap();
    assert_ne!(b_cert.serial, CertificateRef::parse(&a_cert).unwrap().serial, "renewal under the same txid");
    assert_eq!(b_cert.spki.raw, keeper.spki_der());

    // CertPoll with the first request's transactionID returns its certificate.
    let poll = build_pki_message(
        &MessageBody::cert_poll(ca.ca(), spec.subject.to_der()).unwrap(),
        Signer { certificate: &first.self_signed, key: &key },
        ca.recipient(),
        &MessageOptions { transaction_id: Some(first.request.transaction_id.clone()), ..MessageOptions::default() },
    )
    .unwrap();
    let rep = c.transact(&poll, &key, &ca, PkiMethod::Post).unwrap();
    assert_eq!(rep.status, PkiStatus::SUCCESS, "{:?} {:?}", rep.fail_info, rep.fail_info_text);
    assert_eq!(rep.issued_certificate(&key).unwrap(), issued.as_slice());
    // ... and an unknown transaction is badCertId.
    let poll = build_pki_message(
        &MessageBody::cert_poll(ca.ca(), spec.subject.to_der()).unwrap(),
        Signer { certificate: &first.self_signed, key: &key },
        ca.recipient(),
        &opts(ContentCipher::Aes256Cbc, DigestAlg::Sha256),
    )
    .unwrap();
    assert_failure(&c.transact(&poll, &key, &ca, PkiMethod::Get).unwrap(), FailInfo::BAD_CERT_ID, "poll unknown");

    // GetCert (issuer + serial) returns that certificate; an unknown serial is badCertId.
    let rep = renew(MessageBody::get_cert_for(&renewed_der).unwrap(), "GetCert");
    assert_eq!(rep.status, PkiStatus::SUCCESS, "{:?} {:?}", rep.fail_info, rep.fail_info_text);
    assert_eq!(rep.certificates.first().map(Vec::as_slice), Some(renewed_der.as_slice()));
    let unknown = MessageBody::GetCert { issuer: issuer_of(&issued), serial: vec![0x7f; 16] };
    assert_failure(&renew(unknown, "GetCert unknown"), FailInfo::BAD_CERT_ID, "GetCert unknown serial");

    // GetCRL returns a CRL signed by the CA that OpenSSL verifies.
    let rep = renew(MessageBody::get_crl_for(&issued).unwrap(), "GetCRL");
    assert_eq!(rep.status, PkiStatus::SUCCESS, "{:?} {:?}", rep.fail_info, rep.fail_info_text);
    assert!(rep.certificates.is_empty());
    let [crl] = rep.crls.as_slice() else { panic!("expected one CRL, got {}", rep.crls.len()) };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), pem(ca.ca())).unwrap();
    std::fs::write(dir.path().join("crl.der"), crl).unwrap();
    let (ok, text) =
        openssl(dir.path(), &["crl", "-inform", "DER", "-in", "crl.der", "-CAfile", "ca.pem", "-noout", "-verify"]);
    assert!(ok && text.contains("verify OK"), "openssl crl -verify:\n{text}");
}

fn issuer_of(cert: &[u8]) -> Vec<u8> {
    CertificateRef::parse(cert).unwrap().issuer.to_vec()
}

/// Sends a PKCSReq built from `spec` with `options` and returns the verified reply.
fn pkcs_req(c: &ScepClient, key: &DeviceKey, spec: &CsrSpec, options: &MessageOptions) -> CertRep {
    c.enroll(key, spec, options, PkiMethod::Post).unwrap_or_else(|e| panic!("{e}")).reply
}

#[test]
fn refused_requests_get_exact_fail_infos() {
    let server = bootstrap_server();
    let c = client(&server.url());
    let key = DeviceKey::pregenerated(5).unwrap();
    let o = || opts(ContentCipher::Aes256Cbc, DigestAlg::Sha256);

    let r = pkcs_req(&c, &key, &CsrSpec::new("wrong-pw", Some("not-the-password")), &o());
    assert_failure(&r, FailInfo::BAD_REQUEST, "wrong challenge");
    // OpenSSL's PKCS7_verify without external content (certmonger's check of a
    // reply) accepts the FAILURE: its eContent is present and empty.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rep.der"), &r.raw).unwrap();
    let (ok, text) = openssl(dir.path(), &["smime", "-verify", "-noverify", "-inform", "DER", "-in", "rep.der"]);
    assert!(ok && text.contains("Verification successful"), "{text}");
    let r = pkcs_req(&c, &key, &CsrSpec::new("no-pw", None), &o());
    assert_failure(&r, FailInfo::BAD_REQUEST, "missing challenge");

    // The bootstrap profile allows clientAuth and serverAuth: a CSR asking for codeSigning is refused.
    let mut spec = CsrSpec::new("wants-code-signing", Some(CHALLENGE));
    spec.extended_key_usage = vec![oid::KP_SERVER_AUTH.to_vec(), oid::KP_CODE_SIGNING.to_vec()];
    assert_failure(&pkcs_req(&c, &key, &spec, &o()), FailInfo::BAD_REQUEST, "codeSigning EKU");

    // A corrupted SignerInfo signature (the last bytes of a DER PKIMessage).
    let ca = c.get_ca_cert().unwrap();
    let spec = CsrSpec::new("tampered", Some(CHALLENGE));
    let self_signed = self_signed_certificate(&key, &spec.subject, 1).unwrap();
    let mut req = build_pki_message(
        &MessageBody::PkcsReq(build_csr(&key, &spec).unwrap()),
        Signer { certificate: &self_signed, key: &key },
        ca.recipient(),
        &o(),
    )
    .unwrap();
    let at = req.der.len() - 3;
    req.der[at] ^= 0x01;
    let r = c.transact(&req, &key, &ca, PkiMethod::Post).unwrap();
    assert_failure(&r, FailInfo::BAD_MESSAGE_CHECK, "tampered signature");
}

#[test]
fn configured_profiles_des_signing_time_key_size_and_ca_only() {
    let server = configured_server();
    let key = DeviceKey::pregenerated(6).unwrap();

    // Single DES (micromdm scepclient): accepted where opted in, answered in 3DES...
    let legacy = client(&server.profile_url("legacy"));
    let caps = legacy.get_ca_caps().unwrap();
    assert!(caps.has("DES3") && caps.has("AES"), "{caps:?}");
    let spec = CsrSpec::new("old-mdm", Some(CHALLENGE));
    let options = MessageOptions { transaction_id: Some(txid()), ..MessageOptions::micromdm_like() };
    for method in [PkiMethod::Post, PkiMethod::Get] {
        let options = MessageOptions { transaction_id: Some(txid()), ..options.clone() };
        let e = legacy.enroll(&key, &spec, &options, method).unwrap();
        check_issued(&server, &e, &key, &spec, &format!("legacy DES {method:?}"));
        assert_eq!(e.reply.content_cipher, Some(ContentCipher::DesEde3Cbc));
    }
    // ... and refused with badAlg where not (corp, also the default at /scep).
    for url in [server.profile_url("corp"), server.url()] {
        let r = pkcs_req(&client(&url), &key, &spec, &options);
        assert_failure(&r, FailInfo::BAD_ALG, &format!("DES on {url}"));
    }

    // strict: signingTime must be within 300 s of now; RSA keys need 3072 bits.
    let strict = client(&server.profile_url("strict"));
    let spec = CsrSpec::new("strict-dev", Some(CHALLENGE));
    for skew in [-2 * 86_400, 3_600] {
        let options = MessageOptions {
            signing_time: Some(UnixTime::now().plus(skew)),
            ..opts(ContentCipher::Aes256Cbc, DigestAlg::Sha256)
        };
        assert_failure(&pkcs_req(&strict, &key, &spec, &options), FailInfo::BAD_TIME, &format!("skew {skew}"));
    }
    let r = pkcs_req(&strict, &key, &spec, &opts(ContentCipher::Aes256Cbc, DigestAlg::Sha256));
    assert_failure(&r, FailInfo::BAD_ALG, "2048-bit key on a 3072-bit profile");
    // The same key and time are fine on corp.
    let corp = client(&server.profile_url("corp"));
    let spec = CsrSpec::new("corp-dev", Some(CHALLENGE));
    let e = corp.enroll(&key, &spec, &opts(ContentCipher::Aes192Cbc, DigestAlg::Sha384), PkiMethod::Post).unwrap();
    check_issued(&server, &e, &key, &spec, "corp");

    // caonly: GetCACert is the lone CA certificate, which is also the recipient.
    let caonly = client(&server.profile_url("caonly"));
    let ca = caonly.get_ca_cert().unwrap();
    assert_eq!(ca.content_type, "application/x-x509-ca-cert");
    assert_eq!(ca.certificates.len(), 1);
    assert!(!ca.has_ra());
    assert_eq!(ca.ca(), e.ca.ca(), "same local CA as corp");
    let spec = CsrSpec::new("caonly-dev", Some(CHALLENGE));
    let e = caonly.enroll(&key, &spec, &opts(ContentCipher::Aes256Cbc, DigestAlg::Sha512), PkiMethod::Get).unwrap();
    let cert = check_issued(&server, &e, &key, &spec, "ca-only");
    assert_openssl_verifies(&server.ca_pem(), &pem(&cert), None);
}

#[test]
fn http_level_errors_and_routes() {
    let server = configured_server();
    let base = HttpUrl::parse(server.base_url()).unwrap();
    let t = Duration::from_secs(10);
    let send = |method: &str, path: &str, body: Option<&[u8]>| {
        http_request(&base, method, path, body.map(|b| ("application/x-pki-message", b)), t).unwrap()
    };

    let r = send("POST", "/scep?operation=PKIOperation", Some(b"this is not a PKIMessage"));
    assert_eq!(r.status, 400, "garbage POST");
    let r = send("GET", "/scep?operation=PKIOperation&message=%%%", None);
    assert_eq!(r.status, 400, "garbage GET message");
    let r = send("GET", "/scep?operation=GetCACertificates", None);
    assert_eq!(r.status, 400, "unknown operation");
    let r = send("GET", "/scep", None);
    assert_eq!(r.status, 400, "missing operation");
    let r = send("GET", "/scep/no-such-profile?operation=GetCACaps", None);
    assert_eq!(r.status, 404, "unknown profile");
    let r = send("GET", "/elsewhere?operation=GetCACaps", None);
    assert_eq!(r.status, 404, "unknown path");
    let r = send("PUT", "/scep?operation=GetCACaps", Some(b""));
    assert_eq!(r.status, 405, "PUT");
    let r = send("POST", "/scep?operation=PKIOperation", Some(&vec![0x30; 70_000]));
    assert_eq!(r.status, 413, "body over server.body_limit = 65536");

    // A GET whose base64 '+' signs were turned into spaces (form decoding by a
    // proxy) still works, as does a literal unencoded '+'.
    let c = client(&server.url());
    let ca = c.get_ca_cert().unwrap();
    let key = DeviceKey::pregenerated(7).unwrap();
    for (i, plus) in ["%20", "+"].into_iter().enumerate() {
        let spec = CsrSpec::new(format!("plus-{i}"), Some(CHALLENGE));
        let self_signed = self_signed_certificate(&key, &spec.subject, 1).unwrap();
        let req = build_pki_message(
            &MessageBody::PkcsReq(build_csr(&key, &spec).unwrap()),
            Signer { certificate: &self_signed, key: &key },
            ca.recipient(),
            &opts(ContentCipher::Aes256Cbc, DigestAlg::Sha256),
        )
        .unwrap();
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(&req.der);
        assert!(b64.contains('+'), "a {}-byte message without '+' in base64 is unlikely", req.der.len());
        let message = b64.replace('+', plus).replace('/', "%2F").replace('=', "%3D");
        let r = send("GET", &format!("/scep?operation=PKIOperation&message={message}"), None);
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let rep = verify_cert_rep(&r.body, &req, &key, &ca.certificates).unwrap();
        assert_eq!(rep.status, PkiStatus::SUCCESS, "{plus}: {:?}", rep.fail_info_text);
    }

    // PKIOperation through /scep/pkiclient.exe and /scep/<profile>/pkiclient.exe.
    for url in [format!("{}/pkiclient.exe", server.url()), format!("{}/pkiclient.exe", server.profile_url("corp"))] {
        let spec = CsrSpec::new("ndes-path", Some(CHALLENGE));
        let e = client(&url).enroll(&key, &spec, &opts(ContentCipher::DesEde3Cbc, DigestAlg::Sha256), PkiMethod::Post);
        check_issued(&server, &e.unwrap(), &key, &spec, &url);
    }
}

#[test]
fn fixture_reports_startup_failures_and_stops_the_server() {
    // A configuration error is reported with scepd's own message.
    let err = Scepd::start(ScepdOptions::with_config(
        "[[profile]]\nname = \"x\"\nchallenge_password = \"p\"\nciphers = [\"rc2\"]\n",
    ))
    .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("ciphers") && text.contains("rc2"), "{text}");

    // Drop stops the process: the port no longer accepts connections.
    let mut server = bootstrap_server();
    assert!(server.is_running());
    let port = server.port();
    server.stop();
    assert!(!server.is_running());
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "scepd still listening after stop");
}
