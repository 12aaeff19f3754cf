//! End-to-end: a profile whose signing RA key is ECDSA (issue 12: "ECDSA RA
//! keys where a profile has one: `ecdsa-with-SHAn`").
//!
//! The data directory is bootstrapped first (local CA, NDES RA pair); the test
//! then makes an ECDSA P-256 signing RA key (SEC1 PEM) and certificate
//! (keyUsage digitalSignature) with the openssl CLI, issued by the local CA,
//! and configures a profile with it as `ra_cert`/`ra_key` and the bootstrap's
//! RSA encryption RA as `ra_encryption_cert`/`ra_encryption_key`.
//!
//! What it proves, on both transports: GetCACert publishes the EC signing RA,
//! the RSA encryption RA and the CA; the independent Rust client encrypts to
//! the RSA encryption RA, enrols with SHA-256 and SHA-384 requests and
//! verifies replies signed `ecdsa-with-SHA256` / `ecdsa-with-SHA384` by the EC
//! RA (digestAlgorithm matching); `openssl cms -verify` accepts a reply
//! through the CA; a wrong challenge gets an EC-signed FAILURE; certmonger
//! enrols on its defaults; the admin API shows `ra.signing_key_type`
//! `ecdsa-p256`. And: an ECDSA `ra_key` without an RSA encryption
//! RA is a start-up error naming `profile[ec].ra_key`.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use scep_engine::crypto::{ContentCipher, DigestAlg};
use scep_engine::oid;
use scep_engine::x509::CertificateRef;
use scep_tests::client::{CsrSpec, DeviceKey, FailInfo, MessageOptions, PkiMethod, PkiStatus, ScepClient};
use scep_tests::real_clients::Certmonger;
use scep_tests::server::{Scepd, ScepdError, ScepdOptions, Transport};

const TOOL_TIMEOUT: Duration = Duration::from_secs(60);
const ADMIN_KEY: &str = "ecdsa-ra-admin-key-0123456789";

/// GET an admin API path with [`ADMIN_KEY`]; the JSON answer.
fn admin_get(server: &Scepd, path: &str) -> serde_json::Value {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", server.port())).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {ADMIN_KEY}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}\n{body}");
    // A length or chunked body: take the JSON object.
    let (start, end) = (body.find('{').unwrap(), body.rfind('}').unwrap());
    serde_json::from_str(&body[start..=end]).unwrap()
}

/// A bootstrapped data directory with an ECDSA signing RA issued by its CA.
struct EcPki {
    _dir: tempfile::TempDir,
    data: PathBuf,
    ca_der: Vec<u8>,
    ec_ra_cert: PathBuf,
    ec_ra_key: PathBuf,
    ec_ra_der: Vec<u8>,
    ndes: scep_issuers::NdesRaFiles,
}

impl EcPki {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let out = scep_issuers::bootstrap(&data, &scep_issuers::BootstrapOptions::default()).unwrap();
        let ndes = out.ndes.unwrap();
        let keys = dir.path().join("ec");
        std::fs::create_dir_all(&keys).unwrap();
        let run = |args: &[&str]| {
            let (ok, text) = openssl(&keys, args);
            assert!(ok, "openssl {args:?} (apt-get install openssl):\n{text}");
        };
        // SEC1 `EC PRIVATE KEY`, as `openssl ecparam -genkey` writes it.
        run(&["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ec-ra.key"]);
        run(&["req", "-new", "-key", "ec-ra.key", "-subj", "/CN=scepd EC signing RA", "-out", "ec-ra.csr"]);
        std::fs::write(
            keys.join("ext.cnf"),
            "keyUsage=critical,digitalSignature\nbasicConstraints=critical,CA:FALSE\n",
        )
        .unwrap();
        let (ca, ca_key) = (out.ca_cert.display().to_string(), out.ca_key.display().to_string());
        #[rustfmt::skip]
        run(&["x509", "-req", "-in", "ec-ra.csr", "-CA", &ca, "-CAkey", &ca_key, "-set_serial", "4242",
              "-days", "30", "-extfile", "ext.cnf", "-out", "ec-ra.pem"]);
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(keys.join("ec-ra.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let read_der =
            |p: &Path| scep_engine::pem::certificates(&std::fs::read_to_string(p).unwrap()).unwrap().remove(0);
        Self {
            ca_der: read_der(&out.ca_cert),
            ec_ra_der: read_der(&keys.join("ec-ra.pem")),
            ec_ra_cert: keys.join("ec-ra.pem"),
            ec_ra_key: keys.join("ec-ra.key"),
            data,
            ndes,
            _dir: dir,
        }
    }

    /// A profile `ec` with the EC signing RA and, when `with_encryption_ra`,
    /// the bootstrap's RSA encryption RA.
    fn config(&self, with_encryption_ra: bool) -> String {
        let mut toml = format!(
            "[[api_key]]\nname = \"ops\"\nkey = \"{ADMIN_KEY}\"\nrole = \"admin\"\n\n[[profile]]\nname = \"ec\"\nchallenge_password = \"{CHALLENGE}\"\nra_cert = {:?}\nra_key = {:?}\n",
            self.ec_ra_cert.display().to_string(),
            self.ec_ra_key.display().to_string()
        );
        if with_encryption_ra {
            toml.push_str(&format!(
                "ra_encryption_cert = {:?}\nra_encryption_key = {:?}\n",
                self.ndes.encryption_cert.display().to_string(),
                self.ndes.encryption_key.display().to_string()
            ));
        }
        toml
    }

    fn options(&self, with_encryption_ra: bool) -> ScepdOptions {
        ScepdOptions { data_dir: Some(self.data.clone()), ..ScepdOptions::with_config(self.config(with_encryption_ra)) }
    }
}

fn options(digest: DigestAlg) -> MessageOptions {
    MessageOptions { digest, cipher: ContentCipher::Aes256Cbc, ..MessageOptions::default() }
}

scep_tests::on_each_transport!(ecdsa_signing_ra_serves_the_rust_client_and_certmonger);

fn ecdsa_signing_ra_serves_the_rust_client_and_certmonger(transport: Transport) {
    let pki = EcPki::new();
    let server = Scepd::start(pki.options(true).on(transport)).unwrap_or_else(|e| panic!("{e}"));
    let url = server.profile_url("ec");
    let client = ScepClient::new(&url).unwrap();
    let log = || server.log_tail(40);

    // GetCACert: EC signing RA, RSA encryption RA, CA; requests go to the RSA one.
    let ca = client.get_ca_cert().unwrap();
    let encryption =
        scep_engine::pem::certificates(&std::fs::read_to_string(&pki.ndes.encryption_cert).unwrap()).unwrap().remove(0);
    assert_eq!(ca.certificates, [pki.ec_ra_der.clone(), encryption.clone(), pki.ca_der.clone()]);
    assert_eq!(ca.recipient(), encryption.as_slice());
    assert_eq!(ca.signing_ra_index(), Some(0));
    // The admin API shows the signing RA's key type and its one reply form.
    let profiles = admin_get(&server, "/api/v1/admin/scep/profiles");
    let ec = profiles["profiles"].as_array().unwrap().iter().find(|p| p["path_id"] == "ec").unwrap();
    assert_eq!(
        (&ec["ra"]["arrangement"], &ec["ra"]["signing_key_type"], &ec["ra"]["reply_signature"]),
        (&"ndes-pair".into(), &"ecdsa-p256".into(), &"ecdsa".into()),
        "{ec}"
    );

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), pem(&pki.ca_der)).unwrap();
    for (digest, signature_oid) in
        [(DigestAlg::Sha256, oid::ECDSA_WITH_SHA256), (DigestAlg::Sha384, oid::ECDSA_WITH_SHA384)]
    {
        let key = DeviceKey::generate().unwrap();
        let cn = format!("ec-ra-{digest:?}-{}", transport.flag());
        let spec = CsrSpec::new(cn.clone(), Some(CHALLENGE));
        let e = client
            .enroll(&key, &spec, &options(digest), PkiMethod::Post)
            .unwrap_or_else(|err| panic!("{digest:?}: {err}\n--- scepd log ---\n{}", log()));
        // verify_cert_rep checked the ECDSA signature with the signer's key.
        assert_eq!(
            e.reply.status,
            PkiStatus::SUCCESS,
            "{:?} {:?}\n{}",
            e.reply.fail_info,
            e.reply.fail_info_text,
            log()
        );
        assert_eq!(e.reply.signer_certificate, pki.ec_ra_der, "{digest:?}: signed by the EC RA");
        assert_eq!((e.reply.signature_oid.as_slice(), e.reply.digest), (signature_oid, digest), "{digest:?}");
        let issued = e.issued().unwrap();
        assert_eq!(CertificateRef::parse(issued).unwrap().subject_common_names().unwrap(), vec![cn]);
        assert_openssl_verifies(&pem(&pki.ca_der), &pem(issued), None);
        // OpenSSL's CMS verifier accepts the ECDSA SignerInfo and the RA's chain to the CA.
        let reply = dir.path().join(format!("reply-{digest:?}.der"));
        std::fs::write(&reply, &e.reply.raw).unwrap();
        let reply = reply.display().to_string();
        let (ok, text) = openssl(
            dir.path(),
            &["cms", "-verify", "-inform", "DER", "-binary", "-CAfile", "ca.pem", "-in", &reply, "-out", "/dev/null"],
        );
        assert!(ok, "{digest:?}: openssl cms -verify:\n{text}");
    }

    // A wrong challenge: a FAILURE signed by the EC RA.
    let key = DeviceKey::generate().unwrap();
    let spec = CsrSpec::new("ec-ra-wrong", Some("not-the-challenge"));
    let e = client.enroll(&key, &spec, &options(DigestAlg::Sha256), PkiMethod::Post).unwrap();
    assert_eq!((e.reply.status, e.reply.fail_info), (PkiStatus::FAILURE, Some(FailInfo::BAD_REQUEST)));
    assert_eq!(
        (e.reply.signature_oid.as_slice(), &e.reply.signer_certificate),
        (oid::ECDSA_WITH_SHA256, &pki.ec_ra_der)
    );

    // certmonger on its defaults: it discovers the certificates by GetCACert,
    // encrypts to the keyEncipherment one and verifies the EC-signed reply.
    let daemon = Certmonger::start().unwrap_or_else(|e| panic!("{e}"));
    daemon.add_scep_ca("scepd-ec", &url, None).unwrap_or_else(|e| panic!("add-scep-ca: {e}\n{}", log()));
    let cn = format!("cm-ec-{}", transport.flag());
    let got = daemon.request("scepd-ec", &cn, CHALLENGE, TOOL_TIMEOUT).unwrap_or_else(|e| {
        panic!("certmonger did not enrol against an ECDSA signing RA: {e}\n--- scepd log ---\n{}", log())
    });
    let cert = CertificateRef::parse(&got.der).unwrap();
    assert_eq!(cert.subject_common_names().unwrap(), vec![cn]);
    assert_openssl_verifies(&pem(&pki.ca_der), &got.pem, None);
}

#[test]
fn an_ecdsa_ra_key_alone_is_a_start_up_error_naming_the_key() {
    let pki = EcPki::new();
    match Scepd::start(pki.options(false)) {
        Err(ScepdError::Startup { stderr, exit, .. }) => {
            assert!(exit.is_some_and(|s| !s.success()), "the server must exit by itself: {stderr}");
            assert!(
                stderr.contains("profile[ec].ra_key")
                    && stderr.contains("ecdsa-p256")
                    && stderr.contains("ra_encryption_cert"),
                "{stderr}"
            );
        }
        Err(e) => panic!("unexpected error: {e}"),
        Ok(_) => panic!("scepd started with an ECDSA RA and no encryption RA"),
    }
}
