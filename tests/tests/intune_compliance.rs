//! Gate 9, device compliance (issue 15; `shared/docs/INTUNE-API.md` §8),
//! against the real `scepd` binary on both transports, in both Intune modes:
//!
//! - `graph`: the stand-in's Graph `managedDevices` answers each device's
//!   `complianceState`; only `compliant` is issued; `noncompliant`,
//!   `inGracePeriod`, an unknown device (404), a request without a device id
//!   and a Graph that keeps failing are refused (`compliance_failed`,
//!   badRequest) with nothing issued; one 5xx or 401 is retried once.
//! - a webhook (the loopback [`ComplianceWebhook`]): allow issues; deny, a
//!   non-200 answer and a timeout refuse.
//! - in API mode the device id is the URI SAN `IntuneDeviceId://<id>` and a
//!   refusal sends Intune a `failureNotification`; in connector mode it is
//!   the Connector challenge's claim `sub`, and the refusal moves the
//!   decision from `success` to `compliance_failed` in `intune/stats`.
//! - a real client (certmonger) is issued for a compliant device and refused
//!   for a non-compliant one.
#![allow(clippy::unwrap_used)]

use std::io::{Read as _, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;
use std::time::Duration;

use scep_tests::client::{
    CertRep, CsrSpec, DeviceKey, FailInfo, MessageOptions, PkiMethod, PkiStatus, ScepClient, SubjectAltName,
};
use scep_tests::compliance_webhook::{Answer, ComplianceWebhook};
use scep_tests::intune_connector::{Claims, Connector, JwsAlg};
use scep_tests::intune_standin::{Fault, Hop, IntuneStandIn};
use scep_tests::server::{Scepd, ScepdOptions, Transport};
use serde_json::Value;

const ADMIN_KEY: &str = "intune-compliance-admin-key-0123456789";
const HOUR: Duration = Duration::from_secs(3600);
const AUD: &str = "https://scep.example.test/scep/intune";

scep_tests::on_each_transport!(
    api_mode_graph_issues_only_compliant_devices,
    api_mode_webhook_allow_deny_and_timeout,
    connector_mode_graph_uses_the_claim_sub,
    connector_mode_webhook_allow_deny_and_timeout,
    certmonger_is_issued_when_compliant_and_refused_when_not,
);

/// The Entra secret file (0600) for the stand-in, in `dir`.
fn secret_file(dir: &tempfile::TempDir, standin: &IntuneStandIn) -> PathBuf {
    let secret = dir.path().join("entra-secret");
    std::fs::write(&secret, format!("{}\n", standin.client_secret)).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    secret
}

/// The Entra keys pointing at the stand-in.
fn entra_keys(standin: &IntuneStandIn, secret: &std::path::Path) -> String {
    format!(
        "intune_tenant_id = \"{}\"\nintune_client_id = \"{}\"\nintune_client_secret_path = \"{}\"\n\
         intune_authority_url = \"{base}/\"\nintune_graph_url = \"{base}/\"\n",
        standin.tenant,
        standin.client_id,
        secret.display(),
        base = standin.base_url(),
    )
}

fn serve(transport: Transport, profile: &str, files: Vec<(PathBuf, Vec<u8>)>) -> Scepd {
    let config = format!(
        "[[api_key]]\nname = \"ops\"\nkey = \"{ADMIN_KEY}\"\nrole = \"admin\"\n\n[[profile]]\nname = \"intune\"\n\
         intune_enabled = true\nintune_api_timeout = \"2s\"\n{profile}"
    );
    let mut opts = ScepdOptions::with_config(config).on(transport);
    opts.files = files;
    opts.startup_timeout = Duration::from_secs(30);
    Scepd::start(opts).unwrap_or_else(|e| panic!("{e}"))
}

/// A profile in API mode with `check`.
fn api_profile(standin: &IntuneStandIn, secret: &std::path::Path, check: &str) -> String {
    format!("intune_mode = \"api\"\n{}intune_compliance_check = \"{check}\"\n", entra_keys(standin, secret))
}

/// A profile in connector mode trusting `connector`, with `check` (and the
/// Entra keys when `entra` is given).
fn connector_profile(check: &str, entra: Option<(&IntuneStandIn, &std::path::Path)>) -> String {
    let entra = entra.map(|(s, p)| entra_keys(s, p)).unwrap_or_default();
    format!(
        "challenge_password = \"static-secret\"\nintune_connector_cert_path = \"intune.pem\"\n\
         intune_audience = \"{AUD}\"\nintune_per_device_rate_limit_24h = 0\n{entra}intune_compliance_check = \"{check}\"\n"
    )
}

fn connector_files(connector: &Connector) -> Vec<(PathBuf, Vec<u8>)> {
    vec![(PathBuf::from("intune.pem"), connector.certificate_pem().into_bytes())]
}

/// Enrols `cn` with `challenge`, the URI SAN `IntuneDeviceId://<device>` when given.
fn enroll(server: &Scepd, cn: &str, challenge: &str, device: Option<&str>) -> CertRep {
    let key = DeviceKey::generate().unwrap();
    let mut spec = CsrSpec::new(cn, Some(challenge));
    if let Some(id) = device {
        spec.subject_alt_names = vec![SubjectAltName::Uri(format!("IntuneDeviceId://{id}"))];
    }
    let client = ScepClient::new(&server.profile_url("intune")).unwrap();
    client.enroll(&key, &spec, &MessageOptions::default(), PkiMethod::Post).unwrap().reply
}

fn issued(rep: &CertRep, server: &Scepd) {
    assert_eq!((rep.status, rep.fail_info), (PkiStatus::SUCCESS, None), "{rep:?}\n{}", server.log_tail(30));
    assert!(!rep.certificates.is_empty());
}

fn refused(rep: &CertRep, server: &Scepd) {
    assert_eq!(
        (rep.status, rep.fail_info),
        (PkiStatus::FAILURE, Some(FailInfo::BAD_REQUEST)),
        "{rep:?}\n{}",
        server.log_tail(30)
    );
    assert!(rep.certificates.is_empty(), "a refusal carries no certificate");
}

/// GET `path` with the admin key: the body of the 200 answer.
fn get_text(server: &Scepd, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", server.port())).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_KEY}\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}\n{body}");
    body.to_string()
}

/// Refusals counted by `scepd_scep_outcomes_total{outcome="compliance_failed"}` on profile `intune`.
fn compliance_metric(server: &Scepd) -> u64 {
    get_text(server, "/metrics")
        .lines()
        .filter(|l| {
            l.starts_with("scepd_scep_outcomes_total{profile=\"intune\",")
                && l.contains("outcome=\"compliance_failed\"}")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// GET `path` with the admin key: the JSON body.
fn get(server: &Scepd, path: &str) -> Value {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", server.port())).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_KEY}\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}\n{body}");
    serde_json::from_str(body).unwrap()
}

/// Certificates the local CA issued on profile `intune`.
fn issued_count(server: &Scepd) -> usize {
    get(server, "/api/v1/admin/scep/certificates?profile=intune")["certificates"].as_array().unwrap().len()
}

/// The details of the enrolment events labelled `compliance_failed`.
fn refusals(server: &Scepd) -> Vec<String> {
    let v = get(server, "/api/v1/admin/scep/events?profile=intune&outcome=compliance_failed");
    v["events"].as_array().unwrap().iter().map(|e| e["detail"].as_str().unwrap_or_default().to_string()).collect()
}

/// The `compliance` block of profile `intune` in `intune/stats`.
fn gate_stats(server: &Scepd) -> Value {
    let v = get(server, "/api/v1/admin/scep/intune/stats");
    v["profiles"].as_array().unwrap().iter().find(|p| p["path_id"] == "intune").unwrap().clone()
}

/// (device SAN, fault on Graph managedDevices, issued?, Graph calls, what the refusal says)
type GraphCase = (Option<&'static str>, Option<Fault>, bool, usize, &'static str);

fn api_mode_graph_issues_only_compliant_devices(transport: Transport) {
    let standin = IntuneStandIn::start();
    let dir = tempfile::tempdir().unwrap();
    let secret = secret_file(&dir, &standin);
    let server = serve(transport, &api_profile(&standin, &secret, "graph"), Vec::new());
    for (id, state) in [("dev-ok", "compliant"), ("dev-bad", "noncompliant"), ("dev-grace", "inGracePeriod")] {
        standin.device(id, state);
    }
    let devices = || standin.count(Hop::Devices, None);
    let notes = |a| standin.count(Hop::Intune, Some(a));

    let cases: [GraphCase; 8] = [
        (Some("dev-ok"), None, true, 1, ""),
        (Some("dev-bad"), None, false, 1, "\"noncompliant\""),
        (Some("dev-grace"), None, false, 1, "\"inGracePeriod\""),
        (Some("dev-nobody"), None, false, 1, "unknown to Intune"),
        (None, None, false, 0, "no device id"),
        (Some("dev-ok"), Some(Fault::Status(503, "{}".into(), None)), true, 2, ""),
        (Some("dev-ok"), Some(Fault::Status(401, "{}".into(), None)), true, 2, ""),
        (Some("dev-ok"), Some(Fault::Status(500, "{}".into(), None)), false, 2, "HTTP 500"),
    ];
    let mut want_issued = 0;
    for (i, (device, fault, ok, calls, why)) in cases.into_iter().enumerate() {
        let last = i == 7;
        if let Some(f) = fault {
            standin.fault(Hop::Devices, f.clone());
            if last {
                standin.fault(Hop::Devices, f);
            }
        }
        let challenge = format!("blob-{i}");
        standin.know(&challenge, None, HOUR);
        let (before, success, failure) = (devices(), notes("successNotification"), notes("failureNotification"));
        let rep = enroll(&server, &format!("device-{i}"), &challenge, device);
        assert_eq!(devices() - before, calls, "case {i}: Graph managedDevices calls");
        if ok {
            want_issued += 1;
            issued(&rep, &server);
            assert_eq!(notes("successNotification") - success, 1, "case {i}");
        } else {
            refused(&rep, &server);
            assert_eq!(notes("successNotification") - success, 0, "case {i}: nothing to notify");
            assert_eq!(notes("failureNotification") - failure, 1, "case {i}: Intune told of the refusal");
            assert!(refusals(&server).iter().any(|d| d.contains(why)), "case {i}: {why}: {:?}", refusals(&server));
        }
    }
    assert_eq!(issued_count(&server), want_issued, "nothing issued on a refusal");
    assert_eq!(compliance_metric(&server), 5, "every refusal counted");
    let managed: Vec<_> = standin.calls().into_iter().filter(|c| c.hop == Hop::Devices).collect();
    assert!(managed[0].path.starts_with("/v1.0/deviceManagement/managedDevices/dev-ok?"), "{}", managed[0].path);
    assert!(managed.iter().all(|c| c.headers["authorization"].starts_with("Bearer sim-graph-")));
    let stats = gate_stats(&server);
    assert_eq!(stats["mode"], "api");
    let c = &stats["compliance"];
    assert_eq!((c["check"].as_str(), c["allowed"].as_u64(), c["refused"].as_u64()), (Some("graph"), Some(3), Some(5)));
    for (kind, n) in
        [("compliant", 3), ("noncompliant", 1), ("inGracePeriod", 1), ("not_found", 1), ("no_device_id", 1)]
    {
        assert_eq!(c["results"][kind].as_u64(), Some(n), "{kind}: {c}");
    }
}

fn api_mode_webhook_allow_deny_and_timeout(transport: Transport) {
    let standin = IntuneStandIn::start();
    let hook = ComplianceWebhook::start();
    let dir = tempfile::tempdir().unwrap();
    let secret = secret_file(&dir, &standin);
    let server = serve(transport, &api_profile(&standin, &secret, hook.url()), Vec::new());
    hook.answer("dev-allow", Answer::Allow);
    hook.answer("dev-deny", Answer::Deny("disk not encrypted".into()));
    hook.answer("dev-slow", Answer::SlowAllow(Duration::from_secs(4)));
    hook.answer("dev-500", Answer::Status(500));
    let cases = [
        ("dev-allow", true, ""),
        ("dev-deny", false, "denied device dev-deny: disk not encrypted"),
        ("dev-slow", false, "timed out"),
        ("dev-500", false, "HTTP 500"),
    ];
    for (i, (id, ok, why)) in cases.into_iter().enumerate() {
        let challenge = format!("hook-blob-{i}");
        standin.know(&challenge, None, HOUR);
        let rep = enroll(&server, id, &challenge, Some(id));
        if ok {
            issued(&rep, &server);
        } else {
            refused(&rep, &server);
            assert!(refusals(&server).iter().any(|d| d.contains(why)), "{id}: {why}: {:?}", refusals(&server));
        }
    }
    assert_eq!(issued_count(&server), 1);
    let requests = hook.requests();
    assert_eq!(requests.len(), 4, "one POST per enrolment, no retry");
    let first = &requests[0];
    assert_eq!((first["deviceId"].as_str(), first["deviceIdSource"].as_str()), (Some("dev-allow"), Some("uri_san")));
    assert_eq!((first["profile"].as_str(), first["mode"].as_str()), (Some("intune"), Some("api")));
    assert!(first["transactionId"].as_str().is_some_and(|t| !t.is_empty()));
    assert_eq!(standin.count(Hop::Intune, Some("failureNotification")), 3);
}

fn connector_mode_graph_uses_the_claim_sub(transport: Transport) {
    let standin = IntuneStandIn::start();
    let connector = Connector::generate(JwsAlg::Es256, "Microsoft Intune Certificate Connector").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let secret = secret_file(&dir, &standin);
    let profile = connector_profile("graph", Some((&standin, &secret)));
    let server = serve(transport, &profile, connector_files(&connector));
    standin.device("sub-ok", "compliant");
    standin.device("sub-bad", "noncompliant");
    let mint = |sub: &str, cn: &str| connector.mint(&Claims::new("connector-installation-1", sub, cn).audience(AUD));
    issued(&enroll(&server, "cn-ok", &mint("sub-ok", "cn-ok"), None), &server);
    // The URI SAN does not override the signed claim.
    refused(&enroll(&server, "cn-bad", &mint("sub-bad", "cn-bad"), Some("sub-ok")), &server);
    refused(&enroll(&server, "cn-unknown", &mint("sub-unknown", "cn-unknown"), None), &server);
    // A static-password request has no claim: its device id is the URI SAN, else it is refused.
    issued(&enroll(&server, "cn-static", "static-secret", Some("sub-ok")), &server);
    refused(&enroll(&server, "cn-static-2", "static-secret", None), &server);
    assert_eq!(issued_count(&server), 2);
    let paths: Vec<String> = standin.calls().into_iter().filter(|c| c.hop == Hop::Devices).map(|c| c.path).collect();
    let ids: Vec<&str> = paths.iter().map(|p| p.rsplit('/').next().unwrap().split('?').next().unwrap()).collect();
    assert_eq!(ids, ["sub-ok", "sub-bad", "sub-unknown", "sub-ok"]);
    assert_eq!(standin.count(Hop::Intune, None), 0, "connector mode never calls ScepActions");
    let stats = gate_stats(&server);
    assert_eq!(stats["mode"], "connector");
    // Three Connector challenges passed gates 2-8; two were refused by gate 9.
    assert_eq!(
        (stats["counters"]["success"].as_u64(), stats["counters"]["compliance_failed"].as_u64()),
        (Some(1), Some(2))
    );
    assert_eq!((stats["compliance"]["allowed"].as_u64(), stats["compliance"]["refused"].as_u64()), (Some(2), Some(3)));
    assert_eq!(refusals(&server).len(), 3);
    assert_eq!(compliance_metric(&server), 3);
}

fn connector_mode_webhook_allow_deny_and_timeout(transport: Transport) {
    let hook = ComplianceWebhook::start();
    let connector = Connector::generate(JwsAlg::Es256, "Microsoft Intune Certificate Connector").unwrap();
    let server = serve(transport, &connector_profile(hook.url(), None), connector_files(&connector));
    hook.answer("sub-allow", Answer::Allow);
    hook.answer("sub-deny", Answer::Deny("jailbroken".into()));
    hook.answer("sub-slow", Answer::SlowAllow(Duration::from_secs(4)));
    let mint = |sub: &str| connector.mint(&Claims::new("connector-installation-1", sub, sub).audience(AUD));
    issued(&enroll(&server, "sub-allow", &mint("sub-allow"), None), &server);
    refused(&enroll(&server, "sub-deny", &mint("sub-deny"), None), &server);
    refused(&enroll(&server, "sub-slow", &mint("sub-slow"), None), &server);
    assert_eq!(issued_count(&server), 1);
    let requests = hook.requests();
    let sources: Vec<(&str, &str, &str)> = requests
        .iter()
        .map(|r| (r["deviceId"].as_str().unwrap(), r["deviceIdSource"].as_str().unwrap(), r["mode"].as_str().unwrap()))
        .collect();
    assert_eq!(
        sources,
        [
            ("sub-allow", "claim_sub", "connector"),
            ("sub-deny", "claim_sub", "connector"),
            ("sub-slow", "claim_sub", "connector")
        ]
    );
    let why = refusals(&server);
    assert!(why.iter().any(|d| d.contains("jailbroken")) && why.iter().any(|d| d.contains("timed out")), "{why:?}");
}

fn certmonger_is_issued_when_compliant_and_refused_when_not(transport: Transport) {
    let hook = ComplianceWebhook::start();
    let connector = Connector::generate(JwsAlg::Es256, "Microsoft Intune Certificate Connector").unwrap();
    let server = serve(transport, &connector_profile(hook.url(), None), connector_files(&connector));
    hook.answer("cm-compliant", Answer::Allow);
    hook.answer("cm-noncompliant", Answer::Deny("noncompliant".into()));
    let url = server.profile_url("intune");
    let mint = |sub: &str, cn: &str| connector.mint(&Claims::new("connector-installation-1", sub, cn).audience(AUD));
    let wait = Duration::from_secs(60);
    let cert = scep_tests::real_clients::certmonger_enroll(&url, &mint("cm-compliant", "cm-one"), "cm-one", None, wait)
        .unwrap_or_else(|e| panic!("certmonger: {e}\n{}", server.log_tail(30)));
    assert!(!cert.der.is_empty());
    let denied =
        scep_tests::real_clients::certmonger_enroll(&url, &mint("cm-noncompliant", "cm-two"), "cm-two", None, wait);
    assert!(denied.is_err(), "a non-compliant device gets no certificate");
    assert_eq!(issued_count(&server), 1);
    assert!(refusals(&server).iter().any(|d| d.contains("denied device cm-noncompliant")), "{:?}", refusals(&server));
}
