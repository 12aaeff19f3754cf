//! End-to-end: the RA key in a PKCS#11 token (issue 19, SoftHSM2).
//!
//! A throwaway SoftHSM2 token is made in a temporary directory
//! (`softhsm2-util --init-token --free`, `SOFTHSM2_CONF` points at it) and
//! the RA's RSA-2048 key is generated in it by `pkcs11-tool --keypairgen`
//! (sensitive, never extractable). The data directory is bootstrapped (local
//! CA); the RA certificate for the token key is issued by that CA with
//! `openssl x509 -new -force_pubkey`. The profile names the key
//! `pkcs11:token=scepd;object=ra`, the `[pkcs11]` table gives the library and
//! a PIN file.
//!
//! What it proves, on both transports: the independent Rust client and
//! certmonger enrol (the token decrypts the envelope and signs the CertRep);
//! removing the token's files while enrolments run gives 503s, never a 500 or
//! a crash, and enrolment works again when the files are back. And: a wrong
//! PIN stops the start naming `pkcs11.pin_file`. And with `[pkcs11] ca_key`
//! the local CA's key is in the token too: a fresh data directory gets a
//! `ca.pem` self-signed by the token key and no `ca.key`, and enrolments are
//! issued (signed) by the token. A missing SoftHSM2 or OpenSC
//! fails the tests naming the install command.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use scep_engine::crypto::{ContentCipher, DigestAlg};
use scep_engine::x509::CertificateRef;
use scep_tests::client::{ClientError, CsrSpec, DeviceKey, MessageOptions, PkiMethod, PkiStatus, ScepClient};
use scep_tests::real_clients::Certmonger;
use scep_tests::server::{Scepd, ScepdError, ScepdOptions, Transport};

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const PIN: &str = "4711";
const TOOL_TIMEOUT: Duration = Duration::from_secs(60);

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A token with the RA key, a bootstrapped data directory, the RA certificate.
struct HsmPki {
    dir: tempfile::TempDir,
    conf: PathBuf,
    data: PathBuf,
    ra_cert: PathBuf,
    ra_der: Vec<u8>,
    ca_der: Vec<u8>,
}

impl HsmPki {
    fn new(test: &str) -> Self {
        let present = |tool: &str| Command::new(tool).arg("--help").output().is_ok();
        if !Path::new(MODULE).exists() || !present("softhsm2-util") || !present("pkcs11-tool") {
            scep_tests::missing_tool(test, "SoftHSM2 and OpenSC's pkcs11-tool", "apt-get install softhsm2 opensc");
        }
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("tokens");
        std::fs::create_dir_all(&tokens).unwrap();
        let conf = dir.path().join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!("directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n", tokens.display()),
        )
        .unwrap();
        run(Command::new("softhsm2-util").env("SOFTHSM2_CONF", &conf).args([
            "--init-token",
            "--free",
            "--label",
            "scepd",
            "--pin",
            PIN,
            "--so-pin",
            "56781234",
        ]));
        let p11 = |args: &[&str]| {
            run(Command::new("pkcs11-tool")
                .env("SOFTHSM2_CONF", &conf)
                .args(["--module", MODULE, "--token-label", "scepd", "--login", "--pin", PIN])
                .args(args)
                .current_dir(dir.path()));
        };
        #[rustfmt::skip]
        p11(&["--keypairgen", "--key-type", "rsa:2048", "--label", "ra", "--id", "01", "--usage-sign", "--usage-decrypt"]);
        p11(&["--read-object", "--type", "pubkey", "--id", "01", "-o", "ra-pub.der"]);
        // The local CA's key, for the CA-in-the-token scenario.
        #[rustfmt::skip]
        p11(&["--keypairgen", "--key-type", "rsa:2048", "--label", "ca", "--id", "02", "--usage-sign"]);
        p11(&["--read-object", "--type", "pubkey", "--id", "02", "-o", "ca-pub.der"]);

        let data = dir.path().join("data");
        let out = scep_issuers::bootstrap(&data, &scep_issuers::BootstrapOptions::default()).unwrap();
        let sh = |args: &[&str]| {
            let (ok, text) = openssl(dir.path(), args);
            assert!(ok, "openssl {args:?} (apt-get install openssl):\n{text}");
        };
        sh(&["pkey", "-pubin", "-inform", "DER", "-in", "ra-pub.der", "-out", "ra-pub.pem"]);
        std::fs::write(
            dir.path().join("ext.cnf"),
            "keyUsage=critical,digitalSignature,keyEncipherment\nbasicConstraints=critical,CA:FALSE\n",
        )
        .unwrap();
        let (ca, ca_key) = (out.ca_cert.display().to_string(), out.ca_key.display().to_string());
        #[rustfmt::skip]
        sh(&["x509", "-new", "-subj", "/CN=scepd HSM RA", "-force_pubkey", "ra-pub.pem", "-CA", &ca, "-CAkey", &ca_key,
             "-set_serial", "4343", "-days", "30", "-extfile", "ext.cnf", "-out", "ra.pem"]);
        std::fs::write(dir.path().join("pin"), format!("{PIN}\n")).unwrap();
        std::fs::write(dir.path().join("wrong-pin"), "0000\n").unwrap();
        {
            use std::os::unix::fs::PermissionsExt as _;
            for f in ["pin", "wrong-pin"] {
                std::fs::set_permissions(dir.path().join(f), std::fs::Permissions::from_mode(0o600)).unwrap();
            }
        }
        let read_der =
            |p: &Path| scep_engine::pem::certificates(&std::fs::read_to_string(p).unwrap()).unwrap().remove(0);
        Self {
            ra_der: read_der(&dir.path().join("ra.pem")),
            ca_der: read_der(&out.ca_cert),
            ra_cert: dir.path().join("ra.pem"),
            conf,
            data,
            dir,
        }
    }

    fn options(&self, pin_file: &str) -> ScepdOptions {
        let toml = format!(
            "[pkcs11]\nmodule_path = {MODULE:?}\npin_file = {:?}\n\n[[profile]]\nname = \"hsm\"\nchallenge_password = \"{CHALLENGE}\"\nra_cert = {:?}\nra_key = \"pkcs11:token=scepd;object=ra;type=private\"\n",
            self.dir.path().join(pin_file).display().to_string(),
            self.ra_cert.display().to_string(),
        );
        ScepdOptions {
            data_dir: Some(self.data.clone()),
            env: vec![("SOFTHSM2_CONF".into(), self.conf.display().to_string())],
            ..ScepdOptions::with_config(toml)
        }
    }
}

fn options() -> MessageOptions {
    MessageOptions { digest: DigestAlg::Sha256, cipher: ContentCipher::Aes256Cbc, ..MessageOptions::default() }
}

scep_tests::on_each_transport!(ra_key_in_softhsm_serves_the_rust_client_and_certmonger);

fn ra_key_in_softhsm_serves_the_rust_client_and_certmonger(transport: Transport) {
    let pki = HsmPki::new("ra_key_in_softhsm_serves_the_rust_client_and_certmonger");
    let server = Scepd::start(pki.options("pin").on(transport)).unwrap_or_else(|e| panic!("{e}"));
    let url = server.profile_url("hsm");
    let log = || server.log_tail(40);
    let client = ScepClient::new(&url).unwrap();
    let ca = client.get_ca_cert().unwrap();
    assert_eq!(ca.certificates, [pki.ra_der.clone(), pki.ca_der.clone()]);

    let key = DeviceKey::generate().unwrap();
    let cn = format!("hsm-rust-{}", transport.flag());
    let e = client
        .enroll(&key, &CsrSpec::new(cn.clone(), Some(CHALLENGE)), &options(), PkiMethod::Post)
        .unwrap_or_else(|err| panic!("{err}\n--- scepd log ---\n{}", log()));
    assert_eq!(e.reply.status, PkiStatus::SUCCESS, "{:?}\n{}", e.reply.fail_info, log());
    // verify_cert_rep checked the token's signature with the RA certificate.
    assert_eq!(e.reply.signer_certificate, pki.ra_der);
    let issued = e.issued().unwrap();
    assert_eq!(CertificateRef::parse(issued).unwrap().subject_common_names().unwrap(), vec![cn]);
    assert_openssl_verifies(&pem(&pki.ca_der), &pem(issued), None);

    let daemon = Certmonger::start().unwrap_or_else(|e| panic!("{e}"));
    daemon.add_scep_ca("scepd-hsm", &url, None).unwrap_or_else(|e| panic!("add-scep-ca: {e}\n{}", log()));
    let cn = format!("cm-hsm-{}", transport.flag());
    let got = daemon
        .request("scepd-hsm", &cn, CHALLENGE, TOOL_TIMEOUT)
        .unwrap_or_else(|e| panic!("certmonger did not enrol with the RA key in SoftHSM2: {e}\n{}", log()));
    assert_eq!(CertificateRef::parse(&got.der).unwrap().subject_common_names().unwrap(), vec![cn]);
    assert_openssl_verifies(&pem(&pki.ca_der), &got.pem, None);
}

scep_tests::on_each_transport!(removing_the_token_under_load_gives_503_then_recovers);

/// Enrolments run from 4 threads while the token's files are moved away
/// and back: every answer is a success or a 503 (never a 500 or a broken
/// connection), at least one is a 503, the server keeps running, and an
/// enrolment succeeds again once the files are back.
fn removing_the_token_under_load_gives_503_then_recovers(transport: Transport) {
    let pki = HsmPki::new("removing_the_token_under_load_gives_503_then_recovers");
    let mut server = Scepd::start(pki.options("pin").on(transport)).unwrap_or_else(|e| panic!("{e}"));
    let url = server.profile_url("hsm");
    let enrol = |url: &str, n: usize| -> Result<PkiStatus, ClientError> {
        let client = ScepClient::new(url)?;
        let key = DeviceKey::generate()?;
        let spec = CsrSpec::new(format!("load-{n}"), Some(CHALLENGE));
        client.enroll(&key, &spec, &options(), PkiMethod::Post).map(|e| e.reply.status)
    };
    assert_eq!(enrol(&url, 0).unwrap(), PkiStatus::SUCCESS, "{}", server.log_tail(30));

    let tokens = pki.dir.path().join("tokens");
    let away = pki.dir.path().join("tokens-away");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers: Vec<_> = (0..4)
        .map(|t| {
            let (url, stop) = (url.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut answers = Vec::new();
                let deadline = Instant::now() + Duration::from_secs(60);
                let mut n = 1000 * (t + 1);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < deadline {
                    n += 1;
                    answers.push(match enrol(&url, n) {
                        Ok(status) => format!("{status:?}"),
                        Err(ClientError::Http(text)) if text.starts_with("status 503") => "503".to_string(),
                        Err(e) => format!("error: {e}"),
                    });
                }
                answers
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    std::fs::rename(&tokens, &away).unwrap();
    std::fs::create_dir(&tokens).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    std::fs::remove_dir(&tokens).unwrap();
    std::fs::rename(&away, &tokens).unwrap();
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let answers: Vec<String> = workers.into_iter().flat_map(|w| w.join().unwrap()).collect();
    assert!(server.is_running(), "scepd stopped when its token went away:\n{}", server.log_tail(40));
    let unexpected: Vec<&String> = answers.iter().filter(|a| *a != "SUCCESS" && *a != "503").collect();
    assert!(unexpected.is_empty(), "answers other than SUCCESS/503: {unexpected:?}\n{}", server.log_tail(40));
    assert!(answers.iter().any(|a| a == "503"), "no 503 while the token was gone: {answers:?}");

    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match enrol(&url, 1) {
            Ok(PkiStatus::SUCCESS) => break,
            other if Instant::now() < deadline => {
                let _ = other;
                std::thread::sleep(Duration::from_millis(200));
            }
            other => panic!("no recovery 15 s after the token came back: {other:?}\n{}", server.log_tail(40)),
        }
    }
}

#[test]
fn a_wrong_pin_stops_the_start_naming_the_setting() {
    let pki = HsmPki::new("a_wrong_pin_stops_the_start_naming_the_setting");
    match Scepd::start(pki.options("wrong-pin")) {
        Err(ScepdError::Startup { stderr, exit, .. }) => {
            assert!(exit.is_some_and(|s| !s.success()), "the server must exit by itself: {stderr}");
            assert!(
                stderr.contains("pkcs11.pin_file")
                    && stderr.contains("refused the PIN")
                    && stderr.contains("profile[hsm].ra_key"),
                "{stderr}"
            );
            assert!(!stderr.contains("0000"), "the PIN is never printed: {stderr}");
        }
        Err(e) => panic!("unexpected error: {e}"),
        Ok(_) => panic!("scepd started with a wrong PIN"),
    }
}

scep_tests::on_each_transport!(ca_key_in_softhsm_signs_the_ca_certificate_and_issued_certificates);

fn ca_key_in_softhsm_signs_the_ca_certificate_and_issued_certificates(transport: Transport) {
    let pki = HsmPki::new("ca_key_in_softhsm_signs_the_ca_certificate_and_issued_certificates");
    let data = pki.dir.path().join("data-token-ca");
    let toml = format!(
        "[pkcs11]\nmodule_path = {MODULE:?}\npin_file = {:?}\nca_key = \"pkcs11:token=scepd;object=ca\"\n\n[[profile]]\nname = \"hsm\"\nchallenge_password = \"{CHALLENGE}\"\n",
        pki.dir.path().join("pin").display().to_string(),
    );
    let server_options = ScepdOptions {
        data_dir: Some(data.clone()),
        env: vec![("SOFTHSM2_CONF".into(), pki.conf.display().to_string())],
        ..ScepdOptions::with_config(toml)
    }
    .on(transport);
    let server = Scepd::start(server_options).unwrap_or_else(|e| panic!("{e}"));
    let log = || server.log_tail(40);
    assert!(!data.join("ca.key").exists(), "the CA key stays in the token");
    let ca_der =
        scep_engine::pem::certificates(&std::fs::read_to_string(data.join("ca.pem")).unwrap()).unwrap().remove(0);
    let ca = CertificateRef::parse(&ca_der).unwrap();
    let token_spki = std::fs::read(pki.dir.path().join("ca-pub.der")).unwrap();
    assert_eq!(ca.spki.raw, token_spki.as_slice(), "ca.pem certifies the token's key");
    assert_signed_by(&ca_der, &ca_der);

    let client = ScepClient::new(&server.profile_url("hsm")).unwrap();
    let key = DeviceKey::generate().unwrap();
    let cn = format!("token-ca-{}", transport.flag());
    let e = client
        .enroll(&key, &CsrSpec::new(cn.clone(), Some(CHALLENGE)), &options(), PkiMethod::Post)
        .unwrap_or_else(|err| panic!("{err}\n--- scepd log ---\n{}", log()));
    assert_eq!(e.reply.status, PkiStatus::SUCCESS, "{:?}\n{}", e.reply.fail_info, log());
    let issued = e.issued().unwrap();
    assert_eq!(CertificateRef::parse(issued).unwrap().subject_common_names().unwrap(), vec![cn]);
    assert_signed_by(issued, &ca_der);
    assert_openssl_verifies(&pem(&ca_der), &pem(issued), None);
}
