//! End-to-end: real third-party SCEP clients against the real `scepd`.
//!
//! - certmonger (private daemon, `getcert request -w`) on the bootstrap
//!   profile (GetCACert = RA + CA), then `getcert resubmit` (renewal signed by
//!   the issued certificate).
//! - micromdm's `scepclient` (single DES, SHA-1) on a profile that opts into DES.
//!
//! Each issued certificate must chain, by `openssl verify`, to the CA from
//! GetCACert. Every scenario runs on both transports (`--transport tokio` and
//! `smol`). Every tool run is bounded; failures carry the tools' logs and
//! scepd's log.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use scep_engine::x509::CertificateRef;
use scep_tests::client::ScepClient;
use scep_tests::real_clients::{Certmonger, RealClientError, find_tool, scepclient_enroll};
use scep_tests::server::{Scepd, ScepdOptions, Transport};

const TOOL_TIMEOUT: Duration = Duration::from_secs(60);

/// The CA certificate from GetCACert (not from the data directory: what a client sees).
fn ca_from_get_ca_cert(url: &str) -> Vec<u8> {
    let ca = ScepClient::new(url).unwrap().get_ca_cert().unwrap();
    ca.ca().to_vec()
}

fn skip(tool: &str) -> bool {
    if find_tool(tool).is_none() {
        eprintln!("SKIPPED: {tool} is not installed (Debian: certmonger / scep); .ci/run installs it");
        return true;
    }
    false
}

scep_tests::on_each_transport!(certmonger_enrolls_and_renews, micromdm_scepclient_enrolls_with_single_des);

fn certmonger_enrolls_and_renews(transport: Transport) {
    if skip("certmonger") || skip("getcert") {
        return;
    }
    let server = Scepd::start(ScepdOptions::bootstrap(CHALLENGE).on(transport)).unwrap_or_else(|e| panic!("{e}"));
    let ca = ca_from_get_ca_cert(&server.url());
    let daemon = Certmonger::start().unwrap_or_else(|e| panic!("{e}"));
    let fail =
        |what: &str, e: RealClientError| -> ! { panic!("{what}: {e}\n--- scepd log ---\n{}", server.log_tail(40)) };
    daemon.add_scep_ca("scepd", &server.url(), Some(&pem(&ca))).unwrap_or_else(|e| fail("add-scep-ca", e));
    let got = daemon.request("scepd", "cm-host", CHALLENGE, TOOL_TIMEOUT).unwrap_or_else(|e| fail("request", e));
    let cert = CertificateRef::parse(&got.der).unwrap();
    assert_eq!(cert.subject_common_names().unwrap(), vec!["cm-host".to_string()]);
    assert_openssl_verifies(&pem(&ca), &got.pem, None);
    assert!(got.key_pem.contains("PRIVATE KEY"));
    let key_spki_matches = {
        let k = scep_tests::client::DeviceKey::from_pem(&got.key_pem).unwrap();
        k.spki_der() == cert.spki.raw
    };
    assert!(key_spki_matches, "certmonger's key is the certified one");

    // Renewal (`getcert resubmit`): certmonger keeps its key, signs a PKCSReq with
    // the issued certificate, and reuses its key-derived transactionID.
    let id = "req-cm-host";
    let run = daemon.getcert(&["resubmit", "-i", id, "-w"], TOOL_TIMEOUT).unwrap_or_else(|e| fail("resubmit", e));
    let list = daemon.getcert(&["list", "-i", id], Duration::from_secs(10)).unwrap().output;
    let cert_path = list
        .lines()
        .find_map(|l| l.trim().strip_prefix("certificate: type=FILE,location='"))
        .and_then(|l| l.strip_suffix('\''))
        .unwrap_or_else(|| panic!("no certificate location in:\n{list}"));
    let renewed_pem = std::fs::read_to_string(cert_path).unwrap();
    let renewed_der = scep_engine::pem::certificates(&renewed_pem).unwrap().remove(0);
    let renewed = CertificateRef::parse(&renewed_der).unwrap();
    assert!(
        renewed.serial != cert.serial && list.contains("status: MONITORING"),
        "certmonger did not renew:\n{}\n{list}\n--- scepd log ---\n{}\n--- certmonger log ---\n{}",
        run.output,
        server.log_tail(10),
        daemon.daemon_log()
    );
    assert_eq!(renewed.subject, cert.subject);
    assert_eq!(renewed.spki.raw, cert.spki.raw, "certmonger kept its key");
    assert_openssl_verifies(&pem(&ca), &renewed_pem, None);

    // A wrong challenge: certmonger must see the rejection (CA_REJECTED), not an
    // unreadable reply (CA_UNREACHABLE, retried forever).
    let err = daemon.request("scepd", "cm-bad", "wrong", TOOL_TIMEOUT).expect_err("wrong challenge must fail");
    let list = daemon.getcert(&["list", "-i", "req-cm-bad"], Duration::from_secs(10)).unwrap().output;
    assert!(list.contains("status: CA_REJECTED"), "{err}\n{list}\n--- scepd log ---\n{}", server.log_tail(5));
}

fn micromdm_scepclient_enrolls_with_single_des(transport: Transport) {
    if skip("scepclient") {
        return;
    }
    let config = r#"
[[profile]]
name = "mdm"
challenge_password = "secret123"
ciphers = ["des", "des3", "aes128", "aes192", "aes256"]

[[profile]]
name = "no-des"
challenge_password = "secret123"
"#;
    let server = Scepd::start(ScepdOptions::with_config(config).on(transport)).unwrap_or_else(|e| panic!("{e}"));
    let url = server.profile_url("mdm");
    let ca = ca_from_get_ca_cert(&url);
    let got = scepclient_enroll(&url, CHALLENGE, "mdm-device", TOOL_TIMEOUT)
        .unwrap_or_else(|e| panic!("scepclient: {e}\n--- scepd log ---\n{}", server.log_tail(40)));
    let cert = CertificateRef::parse(&got.der).unwrap();
    assert_eq!(cert.subject_common_names().unwrap(), vec!["mdm-device".to_string()]);
    assert_openssl_verifies(&pem(&ca), &got.pem, None);
    // It really speaks single DES: the same enrollment fails where DES is not allowed.
    let no_des = scepclient_enroll(&server.profile_url("no-des"), CHALLENGE, "mdm-nodes", TOOL_TIMEOUT).unwrap_err();
    assert!(matches!(no_des, RealClientError::Failed { .. }), "{no_des}");
    assert!(
        server.stderr().contains("profile=no-des operation=\"PKIOperation\" status=200 outcome=\"decrypt_failed\""),
        "{}",
        server.log_tail(5)
    );
    // A wrong challenge makes scepclient fail.
    let bad = scepclient_enroll(&url, "wrong", "mdm-bad", TOOL_TIMEOUT).unwrap_err();
    assert!(matches!(bad, RealClientError::Failed { .. }), "{bad}");
}
