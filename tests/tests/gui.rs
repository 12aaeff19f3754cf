//! The admin web GUI (`/ui/scep`) in a real browser: Debian's chromium, driven
//! by playwright-core (`tests/gui/gui.mjs`), against the real `scepd` binary on
//! each transport.
//!
//! The server has an Intune profile `corp` (an ES256 test Connector) and a
//! static-challenge profile `plain`, an admin and a reader API key. Before the
//! browser starts, devices enrol: two Intune successes, one replayed
//! challenge, one CSR whose CN (markup) differs from its claims, and on
//! `plain` a device whose CN is markup too. The script then checks sign-in
//! (an unknown key, a key that cannot be a header, a reader key, the admin
//! key), the tabs against these events (hostile subjects shown as text; the
//! card of an Intune API-mode profile with the Graph compliance gate, against
//! the stand-in), the 30 s / 60 s polling and that it stops off the tab (fake
//! timers), the trust anchor reload modal (success, a corrupted bundle
//! keeping the modal open with the reason, the retry), the activity filters
//! and paging, the Certificates tab (the charts drawn by uPlot under the
//! policy, search, details with PEM, history and the Intune device id, Revoke
//! confirmed with the certificate named and a reason, then shown revoked and
//! found by the status filter), sign-out (a reader key signing in next sees nothing of what
//! the admin saw), and that the page raised no script error and no
//! Content-Security-Policy violation.
//!
//! Needs `/usr/bin/chromium` (Debian `chromium`) and `npm ci --prefix tests/gui`;
//! `.ci/run` installs both. Without them the test fails and says so.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use scep_tests::client::{
    CertRep, CsrSpec, DeviceKey, MessageOptions, PkiMethod, PkiStatus, ScepClient, SubjectAltName,
};
use scep_tests::intune_connector::{Claims, Connector, JwsAlg};
use scep_tests::intune_standin::IntuneStandIn;
use scep_tests::real_clients::{RealClientError, run_bounded};
use scep_tests::server::{Scepd, ScepdOptions, Transport};

const ADMIN_KEY: &str = "gui-test-admin-key-0123456789";
const READER_KEY: &str = "gui-test-reader-key-0123456789";
const AUD: &str = "https://scep.example.test/scep/corp";
const BUNDLE: &str = "intune.pem";
/// A subject CN that is markup; the page must show it as text.
const HOSTILE_CN: &str = "<img src=x onerror=\"window.__scepdXss=1\"><b>dev</b>";
/// Bound on the whole browser run.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(180);

fn gui_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("gui")
}

fn enroll(url: &str, cn: &str, dns: Option<&str>, challenge: &str) -> CertRep {
    let key = DeviceKey::generate().unwrap();
    let mut spec = CsrSpec::new(cn, Some(challenge));
    spec.subject_alt_names = dns.map(|d| vec![SubjectAltName::Dns(d.into())]).unwrap_or_default();
    ScepClient::new(url).unwrap().enroll(&key, &spec, &MessageOptions::default(), PkiMethod::Post).unwrap().reply
}

fn claims(sub: &str, cn: &str) -> Claims {
    Claims::new("connector-installation-1", sub, cn).audience(AUD).dns(&[cn])
}

fn admin_gui_in_chromium(transport: Transport) {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists() && gui_dir().join("node_modules/playwright-core").exists(),
        "the GUI test needs {chromium} (apt-get install chromium) and playwright-core \
         (npm ci --prefix tests/gui); `bash .ci/run` installs both"
    );
    let connector = Connector::generate(JwsAlg::Es256, "Microsoft Intune Certificate Connector").unwrap();
    // Profile `intune-api`: Intune API mode against the stand-in, with the Graph compliance gate.
    let standin = IntuneStandIn::start();
    standin.know("gui-api-blob", None, Duration::from_secs(3600));
    standin.know("gui-api-blob-ok", None, Duration::from_secs(3600));
    standin.know("gui-api-blob-ok-2", None, Duration::from_secs(3600));
    standin.device("gui-noncompliant", "noncompliant");
    standin.device("gui-compliant", "compliant");
    let secret_dir = tempfile::tempdir().unwrap();
    let secret = secret_dir.path().join("entra-secret");
    std::fs::write(&secret, format!("{}\n", standin.client_secret)).unwrap();
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let mut opts = ScepdOptions::with_config(format!(
        "[server]\ndata_dir = \"data\"\n\n\
         [[api_key]]\nname = \"ops\"\nkey = \"{ADMIN_KEY}\"\nrole = \"admin\"\n\n\
         [[api_key]]\nname = \"viewer\"\nkey = \"{READER_KEY}\"\nrole = \"reader\"\n\n\
         [[profile]]\nname = \"corp\"\nchallenge_password = \"corp-static-secret\"\n\
         intune_enabled = true\nintune_connector_cert_path = \"{BUNDLE}\"\nintune_audience = \"{AUD}\"\n\n\
         [[profile]]\nname = \"plain\"\nchallenge_password = \"plain-secret\"\n\
         ra_cert = \"data/ra-signing.pem\"\nra_key = \"data/ra-signing.key\"\n\
         ra_encryption_cert = \"data/ra-encryption.pem\"\nra_encryption_key = \"data/ra-encryption.key\"\n\n\
         [[profile]]\nname = \"otp\"\nchallenge_mode = \"one-time\"\n\n\
         [[profile]]\nname = \"intune-api\"\nintune_enabled = true\nintune_mode = \"api\"\n\
         intune_tenant_id = \"{tenant}\"\nintune_client_id = \"{client}\"\nintune_client_secret_path = \"{secret}\"\n\
         intune_authority_url = \"{base}/\"\nintune_graph_url = \"{base}/\"\nintune_compliance_check = \"graph\"\n\
         intune_revocation_poll_interval = \"0\"\n",
        tenant = standin.tenant,
        client = standin.client_id,
        base = standin.base_url(),
        secret = secret.display(),
    ))
    .on(transport);
    opts.files.push((PathBuf::from(BUNDLE), connector.certificate_pem().into_bytes()));
    let server = Scepd::start(opts).unwrap_or_else(|e| panic!("{e}"));

    // The events the page is checked against.
    let corp = server.profile_url("corp");
    let cn = "dev1.example.com";
    let first = connector.mint(&claims("device-guid-1", cn));
    let ok = |rep: CertRep| assert_eq!(rep.status, PkiStatus::SUCCESS, "{:?} {:?}", rep.fail_info, rep.fail_info_text);
    let refused = |rep: CertRep| assert_eq!(rep.status, PkiStatus::FAILURE);
    ok(enroll(&corp, cn, Some(cn), &first));
    refused(enroll(&corp, cn, Some(cn), &first)); // replay
    // Claims for one device, a CSR whose CN is markup: claim_mismatch, shown in the failures table.
    refused(enroll(&corp, HOSTILE_CN, None, &connector.mint(&claims("device-guid-3", "elsewhere.example.com"))));
    ok(enroll(
        &corp,
        "dev2.example.com",
        Some("dev2.example.com"),
        &connector.mint(&claims("device-guid-2", "dev2.example.com")),
    ));
    ok(enroll(&server.profile_url("plain"), HOSTILE_CN, None, "plain-secret"));
    // Intune API mode: an unknown challenge (Intune: ChallengeDecryptionError), two compliant
    // devices (issued), then a non-compliant one (validateRequest Success, refused by gate 9).
    // (More enrolments than failures in the hour: the charts check sees both lines.)
    let api_url = server.profile_url("intune-api");
    refused(enroll(&api_url, "api-dev-1", None, "not-a-known-blob"));
    let api_enroll = |cn: &str, challenge: &str, device: &str| {
        let key = DeviceKey::generate().unwrap();
        let mut spec = CsrSpec::new(cn, Some(challenge));
        spec.subject_alt_names = vec![SubjectAltName::Uri(format!("IntuneDeviceId://{device}"))];
        ScepClient::new(&api_url)
            .unwrap()
            .enroll(&key, &spec, &MessageOptions::default(), PkiMethod::Post)
            .unwrap()
            .reply
    };
    ok(api_enroll("api-dev-2", "gui-api-blob-ok", "gui-compliant"));
    ok(api_enroll("api-dev-4", "gui-api-blob-ok-2", "gui-compliant"));
    refused(api_enroll("api-dev-3", "gui-api-blob", "gui-noncompliant"));

    let mut node = Command::new("node");
    node.arg(gui_dir().join("gui.mjs"))
        .current_dir(gui_dir())
        .env("SCEPD_URL", server.base_url().trim_end_matches('/'))
        .env("ADMIN_KEY", ADMIN_KEY)
        .env("READER_KEY", READER_KEY)
        .env("BUNDLE_PATH", server.dir().join(BUNDLE))
        .env("HOSTILE_CN", HOSTILE_CN)
        .env("CHROMIUM", &chromium)
        // GUI_SCREENSHOTS=<dir>: one screenshot per tab in <dir>/<transport> (docs/gui.md's pictures).
        .envs(std::env::var_os("GUI_SCREENSHOTS").map(|dir| {
            let dir = PathBuf::from(dir).join(transport.flag());
            std::fs::create_dir_all(&dir).unwrap();
            ("SCREENSHOTS", dir)
        }));
    let report = |output: &str| format!("--- gui.mjs ---\n{output}\n--- scepd ---\n{}", server.log_tail(40));
    match run_bounded("node", &mut node, server.dir(), BROWSER_TIMEOUT) {
        Ok(run) => {
            let passed = run.status.success() && run.output.contains("all GUI checks passed");
            assert!(passed, "GUI checks failed ({})\n{}", run.status, report(&run.output));
            println!("{}", run.output);
        }
        Err(RealClientError::Timeout { output, .. }) => {
            panic!("the browser test did not finish within {BROWSER_TIMEOUT:?}\n{}", report(&output))
        }
        Err(e) => panic!("cannot run node (the GUI test needs Node.js): {e}"),
    }
}

scep_tests::on_each_transport!(admin_gui_in_chromium);
