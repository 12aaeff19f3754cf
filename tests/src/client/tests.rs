//! Unit tests of the client against OpenSSL and the real-client vectors.

use std::path::Path;
use std::process::Command;

use scep_engine::oid;
use scep_engine::x509::{CertificateRef, SubjectAltName, parse_subject_alt_names};

use super::signed_data::parse_signed_data;
use super::*;

fn vectors() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/vectors/real-clients"))
}

fn recipient() -> (Vec<u8>, DeviceKey) {
    let cert_pem = std::fs::read_to_string(vectors().join("recipient-cert.pem")).unwrap();
    let cert = scep_engine::pem::certificates(&cert_pem).unwrap().remove(0);
    let key = DeviceKey::from_pem(&std::fs::read_to_string(vectors().join("recipient-key.pem")).unwrap()).unwrap();
    (cert, key)
}

fn openssl(args: &[&str]) -> std::process::Output {
    let out = Command::new("openssl").args(args).output().expect("openssl is installed");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn full_spec() -> CsrSpec {
    let mut spec = CsrSpec::new("device-ü-1", Some("secret123"));
    spec.subject.organization = Some("Example Org".into());
    spec.subject_alt_names = vec![
        SubjectAltName::Dns("dev1.example.com".into()),
        SubjectAltName::Email("u@example.com".into()),
        SubjectAltName::Upn("u@corp.example".into()),
        SubjectAltName::Ip(vec![10, 0, 0, 7]),
    ];
    spec.extended_key_usage = vec![oid::KP_CLIENT_AUTH.to_vec()];
    spec
}

#[test]
fn csr_is_accepted_by_openssl_with_all_attributes() {
    let key = DeviceKey::pregenerated(0).unwrap();
    let csr = build_csr(&key, &full_spec()).unwrap();
    assert!(is_strict_der(&csr));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("csr.der");
    std::fs::write(&path, &csr).unwrap();
    let out = openssl(&["req", "-inform", "DER", "-in", path.to_str().unwrap(), "-verify", "-noout", "-text"]);
    let text = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("verify OK") || text.contains("Certificate request self-signature verify OK"), "{text}");
    for needle in [
        "challengePassword",
        "secret123",
        "DNS:dev1.example.com",
        "email:u@example.com",
        "IP Address:10.0.0.7",
        "TLS Web Client Authentication",
        "O = Example Org",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
    // The UTF-8 CN must be a UTF8String; the ASCII challenge a PrintableString.
    let asn1 =
        String::from_utf8_lossy(&openssl(&["asn1parse", "-inform", "DER", "-in", path.to_str().unwrap()]).stdout)
            .into_owned();
    assert!(asn1.contains("UTF8STRING        :device-"), "{asn1}");
    assert!(asn1.contains("PRINTABLESTRING   :secret123"), "{asn1}");
    // And the SANs decode with the engine's parser, UPN included.
    let ext_at = csr.windows(3).position(|w| w == oid::SUBJECT_ALT_NAME).unwrap();
    let t = scep_engine::wire::Reader::new(&csr[ext_at + 3..]).read().unwrap();
    assert_eq!(parse_subject_alt_names(t.contents).unwrap(), full_spec().subject_alt_names);
}

#[test]
fn self_signed_certificate_verifies_with_its_own_key() {
    let key = DeviceKey::pregenerated(0).unwrap();
    let der = self_signed_certificate(&key, &SubjectName::cn("transient"), 1).unwrap();
    let c = CertificateRef::parse(&der).unwrap();
    assert!(c.is_self_issued());
    assert_eq!(c.spki.raw, key.spki_der());
    assert!(c.is_valid_at(scep_engine::UnixTime::now()));
    c.verify_signed_by(c.spki.public_key().unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.der");
    std::fs::write(&path, &der).unwrap();
    let text = String::from_utf8_lossy(
        &openssl(&["x509", "-inform", "DER", "-in", path.to_str().unwrap(), "-noout", "-subject"]).stdout,
    )
    .into_owned();
    assert!(text.contains("CN = transient"), "{text}");
}

/// Every combination of cipher, digest, signature OID and encoding produces a
/// PKIMessage that OpenSSL verifies (signature, messageDigest) and decrypts
/// with the RA key back to the exact CSR.
#[test]
fn pkcs_req_verifies_and_decrypts_with_openssl() {
    let (ra_cert, _) = recipient();
    let key = DeviceKey::pregenerated(1).unwrap();
    let spec = CsrSpec::new("openssl-check", Some("secret123"));
    let self_signed = self_signed_certificate(&key, &spec.subject, 1).unwrap();
    let csr = build_csr(&key, &spec).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_string_lossy().into_owned();
    let ra_key_path = vectors().join("recipient-key.pem").to_string_lossy().into_owned();
    let cases = [
        (ContentCipher::DesCbc, DigestAlg::Sha1, SignatureOid::DigestWithRsa, Encoding::Der),
        (ContentCipher::DesEde3Cbc, DigestAlg::Sha256, SignatureOid::RsaEncryption, Encoding::Der),
        (ContentCipher::Aes128Cbc, DigestAlg::Sha256, SignatureOid::DigestWithRsa, Encoding::BER),
        (ContentCipher::Aes192Cbc, DigestAlg::Sha384, SignatureOid::DigestWithRsa, Encoding::Ber { chunk: 100 }),
        (ContentCipher::Aes256Cbc, DigestAlg::Sha512, SignatureOid::RsaEncryption, Encoding::Der),
        (ContentCipher::Aes256Cbc, DigestAlg::Sha1, SignatureOid::RsaEncryption, Encoding::BER),
    ];
    for (cipher, digest, signature_oid, encoding) in cases {
        let label = format!("{cipher:?}/{digest:?}/{signature_oid:?}/{encoding:?}");
        let options = MessageOptions { cipher, digest, signature_oid, encoding, ..MessageOptions::default() };
        let req = build_pki_message(
            &MessageBody::PkcsReq(csr.clone()),
            Signer { certificate: &self_signed, key: &key },
            &ra_cert,
            &options,
        )
        .unwrap();
        assert_eq!(req.message_type, MessageType::PKCS_REQ);
        assert_eq!(req.transaction_id, key.transaction_id(), "{label}");
        assert_eq!(req.sender_nonce.len(), 16);
        assert_eq!(is_strict_der(&req.der), encoding == Encoding::Der, "{label}");
        std::fs::write(p("msg.der"), &req.der).unwrap();
        openssl(&[
            "cms",
            "-verify",
            "-noverify",
            "-inform",
            "DER",
            "-in",
            &p("msg.der"),
            "-binary",
            "-out",
            &p("env.der"),
        ]);
        assert_eq!(std::fs::read(p("env.der")).unwrap(), req.envelope, "{label}");
        let (env_path, out_path) = (p("env.der"), p("csr.der"));
        let mut args = vec![
            "cms",
            "-decrypt",
            "-inform",
            "DER",
            "-in",
            &env_path,
            "-inkey",
            &ra_key_path,
            "-binary",
            "-out",
            &out_path,
        ];
        if cipher == ContentCipher::DesCbc {
            args.extend(["-provider", "legacy", "-provider", "default"]);
        }
        openssl(&args);
        assert_eq!(std::fs::read(p("csr.der")).unwrap(), csr, "{label}");

        // A flipped bit in the signature is caught by OpenSSL.
        let mut bad = req.der.clone();
        let last = bad.len() - 5;
        bad[last] ^= 1;
        std::fs::write(p("bad.der"), &bad).unwrap();
        let st = Command::new("openssl")
            .args(["cms", "-verify", "-noverify", "-inform", "DER", "-in", &p("bad.der"), "-binary", "-out", &p("x")])
            .output()
            .unwrap();
        assert!(!st.status.success(), "{label}: tampered message verified");
    }
}

#[test]
fn other_message_types_carry_their_message_data() {
    let (ra_cert, ra_key) = recipient();
    let key = DeviceKey::pregenerated(1).unwrap();
    let cert = self_signed_certificate(&key, &SubjectName::cn("poller"), 1).unwrap();
    let signer = Signer { certificate: &cert, key: &key };
    let bodies = [
        (MessageBody::cert_poll(&ra_cert, SubjectName::cn("poller").to_der()).unwrap(), MessageType::CERT_POLL),
        (MessageBody::get_cert_for(&cert).unwrap(), MessageType::GET_CERT),
        (MessageBody::get_crl_for(&cert).unwrap(), MessageType::GET_CRL),
        (MessageBody::RenewalReq(build_csr(&key, &CsrSpec::new("poller", None)).unwrap()), MessageType::RENEWAL_REQ),
    ];
    for (body, mt) in bodies {
        let req = build_pki_message(&body, signer, &ra_cert, &MessageOptions::default()).unwrap();
        assert_eq!(req.message_type, mt);
        let sd = parse_signed_data(&req.der).unwrap();
        let env = open_envelope(sd.content.as_deref().unwrap(), &ra_key, None).unwrap();
        assert_eq!(env.content, body.message_data());
        assert_eq!(env.cipher, ContentCipher::Aes256Cbc);
        // messageType attribute is the decimal PrintableString.
        let needle = [&[0x13, mt.to_decimal().len() as u8][..], mt.to_decimal().as_bytes()].concat();
        assert!(req.der.windows(needle.len()).any(|w| w == needle.as_slice()), "{mt:?}");
    }
    // IssuerAndSubject / IssuerAndSerialNumber shapes.
    let c = CertificateRef::parse(&cert).unwrap();
    let expected = {
        let mut w = scep_engine::wire::Writer::new();
        w.sequence(|w| {
            w.raw(c.issuer).unsigned_integer(c.serial);
        });
        w.into_vec()
    };
    assert_eq!(MessageBody::get_cert_for(&cert).unwrap().message_data(), expected);
}

/// The client's CMS readers cope with what six real clients sent, including
/// jscep's BER and micromdm's single DES.
#[test]
fn reads_and_decrypts_real_client_vectors() {
    let (ra_cert, ra_key) = recipient();
    let ra = CertificateRef::parse(&ra_cert).unwrap();
    for (name, cipher) in [
        ("sscep", ContentCipher::Aes128Cbc),
        ("certmonger", ContentCipher::Aes256Cbc),
        ("pyscep", ContentCipher::Aes256Cbc),
        ("scepreq", ContentCipher::Aes256Cbc),
        ("jscep", ContentCipher::Aes128Cbc),
        ("scepclient", ContentCipher::DesCbc),
    ] {
        let der = std::fs::read(vectors().join(format!("{name}-pkcsreq.der"))).unwrap();
        assert_eq!(is_strict_der(&der), name != "jscep", "{name}");
        let sd = parse_signed_data(&der).unwrap();
        assert_eq!(sd.certificates.len(), 1, "{name}");
        let env = open_envelope(sd.content.as_deref().unwrap(), &ra_key, Some(&ra)).unwrap();
        assert_eq!(env.cipher, cipher, "{name}");
        let csr = scep_engine::wire::parse_single(&env.content).unwrap();
        let info = csr.reader().read().unwrap();
        let mut r = info.reader();
        r.read().unwrap();
        let subject = r.read().unwrap();
        let cns = scep_engine::x509::name_attribute_strings(subject.raw, oid::COMMON_NAME).unwrap();
        assert!(cns[0].starts_with(&format!("peers-{name}-")), "{name}: {cns:?}");
    }
}

#[test]
fn envelope_to_someone_else_is_refused() {
    let (ra_cert, ra_key) = recipient();
    let other = DeviceKey::pregenerated(2).unwrap();
    let other_cert = self_signed_certificate(&other, &SubjectName::cn("other"), 1).unwrap();
    let ra = CertificateRef::parse(&ra_cert).unwrap();
    let env = build_envelope(b"hello", &ra, ContentCipher::Aes128Cbc, Encoding::Der).unwrap();
    assert_eq!(open_envelope(&env, &ra_key, Some(&ra)).unwrap().content, b"hello");
    let oc = CertificateRef::parse(&other_cert).unwrap();
    assert!(matches!(open_envelope(&env, &ra_key, Some(&oc)), Err(ClientError::Protocol(_))));
    assert!(open_envelope(&env, &other, None).is_err());
}

#[test]
fn ca_certificates_identify_the_ra() {
    let (ra_cert, _) = recipient();
    let ca = CaCertificates::parse("application/x-x509-ca-cert", &ra_cert).unwrap();
    assert_eq!((ca.recipient(), ca.ca(), ca.has_ra()), (&ra_cert[..], &ra_cert[..], false));
    assert!(CaCertificates::parse("text/plain", &ra_cert).is_err());
    let caps = CaCaps::parse(b"POSTPKIOperation\r\nsha-256\n\nAES\n");
    assert!(caps.has("SHA-256") && caps.has("postpkioperation") && !caps.has("DES3"));
}
