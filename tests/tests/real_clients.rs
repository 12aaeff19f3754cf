//! End-to-end: real third-party SCEP clients against the real `scepd`.
//!
//! Every client enrols on its own defaults against the bootstrap profile
//! (`scepd serve --challenge-password`, static challenge), except micromdm's
//! `scepclient`, which only speaks single DES and so needs a profile that opts
//! into it:
//! - certmonger (private daemon, `getcert add-scep-ca` with what it discovers,
//!   `getcert request -w`), then `getcert resubmit` (renewal signed by the
//!   issued certificate);
//! - strongSwan `pki --scepca` + `pki --scep` (5.9.8 on Debian 12);
//! - PyScep 0.0.14 and scepreq 0.1.1 (PyPI), through `tests/clients/`;
//!   scepreq also at NDES's URL, `/certsrv/mscep/mscep.dll`;
//! - micromdm's `scepclient` (single DES, SHA-1) on a DES profile.
//!
//! Each issued certificate must chain, by `openssl verify`, to the CA from
//! GetCACert, and certify the key the client kept. Every scenario runs on both
//! transports (`--transport tokio` and `smol`). A client that is not installed
//! fails the test with the command that installs it (`.ci/run` installs all of
//! them). Every tool run is bounded; failures carry the tools' logs and scepd's
//! log. `docs/interop.md` lists what each client sends.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use scep_engine::x509::CertificateRef;
use scep_tests::client::ScepClient;
use scep_tests::real_clients::{
    Certmonger, IssuedCertificate, RealClientError, pyscep_enroll, scepclient_enroll, scepreq_enroll, strongswan_enroll,
};
use scep_tests::server::{Scepd, ScepdOptions, Transport};

const TOOL_TIMEOUT: Duration = Duration::from_secs(60);

/// The CA certificate from GetCACert (not from the data directory: what a client sees).
fn ca_from_get_ca_cert(url: &str) -> Vec<u8> {
    let ca = ScepClient::new(url).unwrap().get_ca_cert().unwrap();
    ca.ca().to_vec()
}

/// Asserts what every enrolment must give: the requested CN, a certificate that
/// `openssl verify` chains to GetCACert's CA, and the client's own key certified.
fn assert_enrolled(client: &str, got: &IssuedCertificate, cn: &str, ca: &[u8]) {
    let cert = CertificateRef::parse(&got.der).unwrap();
    assert_eq!(cert.subject_common_names().unwrap(), vec![cn.to_string()], "{client}:\n{}", got.log);
    assert_openssl_verifies(&pem(ca), &got.pem, None);
    let key = scep_tests::client::DeviceKey::from_pem(&got.key_pem)
        .unwrap_or_else(|e| panic!("{client}'s key file does not load: {e}\n{}", got.key_pem));
    assert_eq!(key.spki_der(), cert.spki.raw, "{client}: the certificate does not certify the client's key");
}

/// Starts scepd on the bootstrap profile (static challenge) and enrols one
/// client with `enroll(url, challenge, cn)` at `path` (`/scep`, or one of
/// NDES's paths); checks the result.
fn enrols_on_bootstrap_defaults(
    transport: Transport,
    client: &str,
    path: &str,
    enroll: impl FnOnce(&str, &str, &str) -> Result<IssuedCertificate, RealClientError>,
) {
    let server = Scepd::start(ScepdOptions::bootstrap(CHALLENGE).on(transport)).unwrap_or_else(|e| panic!("{e}"));
    let ca = ca_from_get_ca_cert(&server.url());
    let cn = format!("{}-{}", client.to_ascii_lowercase().replace(' ', "-"), transport.flag());
    let url = format!("{}{path}", server.base_url());
    let got = enroll(&url, CHALLENGE, &cn)
        .unwrap_or_else(|e| panic!("{client} did not enrol: {e}\n--- scepd log ---\n{}", server.log_tail(40)));
    assert_enrolled(client, &got, &cn, &ca);
}

scep_tests::on_each_transport!(
    certmonger_enrolls_and_renews,
    micromdm_scepclient_enrolls_with_single_des,
    strongswan_pki_enrolls,
    pyscep_enrolls,
    scepreq_enrolls,
    scepreq_enrolls_at_the_ndes_url,
    scepreq_enrolls_where_the_ca_is_the_ra,
);

/// strongSwan 5.9.8's `pki --scepca` + `pki --scep` with the RA certificates
/// chosen by keyUsage (`real_clients::strongswan_scepca`). It keeps the issued
/// certificate only when the CertRep's SignerInfo says `rsaEncryption`.
fn strongswan_pki_enrolls(transport: Transport) {
    enrols_on_bootstrap_defaults(transport, "strongSwan pki", "/scep", |url, pw, cn| {
        strongswan_enroll(url, pw, cn, TOOL_TIMEOUT)
    });
}

/// PyScep 0.0.14 on its README's defaults: encrypts to an RA certificate with
/// keyEncipherment and without digitalSignature (else the CA), asks for
/// serverAuth + clientAuth.
fn pyscep_enrolls(transport: Transport) {
    enrols_on_bootstrap_defaults(transport, "PyScep", "/scep", |url, pw, cn| pyscep_enroll(url, pw, cn, TOOL_TIMEOUT));
}

/// scepreq 0.1.1's command line on its defaults (EKU clientAuth); picks its
/// encryption certificate as PyScep does.
fn scepreq_enrolls(transport: Transport) {
    enrols_on_bootstrap_defaults(transport, "scepreq", "/scep", |url, pw, cn| {
        scepreq_enroll(url, pw, cn, TOOL_TIMEOUT)
    });
}

/// scepreq (an "AD CS SCEP request tool", whose help shows
/// `https://server/certsrv/mscep/mscep.dll`) at NDES's URL, which the
/// bootstrap's default profile serves so that an NDES client keeps its URL.
fn scepreq_enrolls_at_the_ndes_url(transport: Transport) {
    enrols_on_bootstrap_defaults(transport, "scepreq NDES", "/certsrv/mscep/mscep.dll", |url, pw, cn| {
        scepreq_enroll(url, pw, cn, TOOL_TIMEOUT)
    });
}

/// Where the CA is also the RA (`ra_cert`/`ra_key` = the local CA's pair,
/// `ca_chain_shape = "ca-only"`), scepreq, which then encrypts to the CA
/// certificate, enrols: the arrangement under which the Python clients work
/// against a server that has no encryption-only RA certificate.
fn scepreq_enrolls_where_the_ca_is_the_ra(transport: Transport) {
    use std::os::unix::fs::PermissionsExt as _;
    // A local CA made by scepd itself, reused by a second server whose profile uses it as RA.
    let mut first = Scepd::start(ScepdOptions::bootstrap(CHALLENGE).on(transport)).unwrap_or_else(|e| panic!("{e}"));
    let data: Vec<(std::path::PathBuf, Vec<u8>)> = ["ca.pem", "ca.key", "ra.pem", "ra.key"]
        .into_iter()
        .map(|f| (std::path::Path::new("data").join(f), std::fs::read(first.data_dir().join(f)).unwrap()))
        .collect();
    first.stop();
    let keys = tempfile::tempdir().unwrap();
    let (ra_cert, ra_key) = (keys.path().join("ra-is-ca.pem"), keys.path().join("ra-is-ca.key"));
    std::fs::write(&ra_cert, &data[0].1).unwrap();
    std::fs::write(&ra_key, &data[1].1).unwrap();
    std::fs::set_permissions(&ra_key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let config = format!(
        "[[profile]]\nname = \"ca-is-ra\"\nchallenge_password = \"{CHALLENGE}\"\nra_cert = {:?}\nra_key = {:?}\n\
         ca_chain_shape = \"ca-only\"\n",
        ra_cert.display().to_string(),
        ra_key.display().to_string()
    );
    let mut options = ScepdOptions::with_config(config).on(transport);
    options.files = data;
    let server = Scepd::start(options).unwrap_or_else(|e| panic!("{e}"));
    let url = server.profile_url("ca-is-ra");
    let ca = ScepClient::new(&url).unwrap().get_ca_cert().unwrap();
    assert_eq!(ca.certificates.len(), 1, "GetCACert answers the CA alone");
    let got = scepreq_enroll(&url, CHALLENGE, "scepreq-ca-is-ra", TOOL_TIMEOUT)
        .unwrap_or_else(|e| panic!("scepreq did not enrol: {e}\n--- scepd log ---\n{}", server.log_tail(40)));
    assert_enrolled("scepreq", &got, "scepreq-ca-is-ra", ca.ca());
}

fn certmonger_enrolls_and_renews(transport: Transport) {
    let server = Scepd::start(ScepdOptions::bootstrap(CHALLENGE).on(transport)).unwrap_or_else(|e| panic!("{e}"));
    let ca = ca_from_get_ca_cert(&server.url());
    let daemon = Certmonger::start().unwrap_or_else(|e| panic!("{e}"));
    let fail =
        |what: &str, e: RealClientError| -> ! { panic!("{what}: {e}\n--- scepd log ---\n{}", server.log_tail(40)) };
    // On its defaults: no -N/-r/-I, certmonger uses what it discovers by GetCACert.
    daemon.add_scep_ca("scepd", &server.url(), None).unwrap_or_else(|e| fail("add-scep-ca", e));
    let got = daemon.request("scepd", "cm-host", CHALLENGE, TOOL_TIMEOUT).unwrap_or_else(|e| fail("request", e));
    assert_enrolled("certmonger", &got, "cm-host", &ca);
    let cert = CertificateRef::parse(&got.der).unwrap();

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
    assert_enrolled("scepclient", &got, "mdm-device", &ca);
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
