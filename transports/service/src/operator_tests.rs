//! The operator plane through the service: admin API statuses per role and
//! endpoint, audit events per SCEP answer, `/metrics` after a known sequence,
//! the mTLS route without a certificate.

use std::sync::Arc;

use bytes::Bytes;
use futures_lite::future::block_on;
use http::StatusCode;
use http_body_util::{BodyExt as _, Full};
use serde_json::Value;

use crate::ScepService;
use crate::settings::ServerSettings;
use crate::settings::api_keys::ApiKeySection;
use crate::settings::audit::DiscoveryAudit;
use crate::state::api_keys::ApiKeys;
use crate::state::{Profiles, ServiceState};
use crate::store::audit::{AuditLog, AuditQuery};
use crate::testutil::{TestDir, log_lines_of, section};
use crate::tls::ConnectionInfo;
use crate::wiring::profile::BuildContext;

const ADMIN: &str = "admin-key-0123456789";
const READER: &str = "reader-key-0123456789";

struct Fixture {
    _dir: TestDir,
    svc: ScepService,
    audit: AuditLog,
}

fn fixture() -> Fixture {
    fixture_with(DiscoveryAudit::Each)
}

fn fixture_with(discovery: DiscoveryAudit) -> Fixture {
    let dir = TestDir::new();
    let mut ctx = BuildContext::new(None, dir.path(), dir.now());
    let mut iot = section(&dir, "iot");
    iot.mtls_enabled = Some(true);
    iot.mtls_client_ca_trust_bundle_path = Some(dir.path().join("chain.pem"));
    // The RA certificate of the test vectors is valid 2026-11-25 .. 2036-11-25; real time is inside.
    let profiles = vec![section(&dir, "corp").build(0, &mut ctx).unwrap(), iot.build(1, &mut ctx).unwrap()];
    let keys = ApiKeys::from_sections(&[
        ApiKeySection { name: Some("ops".into()), key: Some(ADMIN.into()), role: Some("admin".into()) },
        ApiKeySection { name: Some("grafana".into()), key: Some(READER.into()), role: None },
    ])
    .unwrap();
    let audit = AuditLog::open(&dir.path().join("audit.db"), 30, "node-a").unwrap().with_discovery(discovery);
    let state = ServiceState::new(ServerSettings::default(), Profiles::new(profiles, "corp".into()).unwrap())
        .with_api_keys(keys)
        .with_audit(audit.clone());
    Fixture { _dir: dir, svc: ScepService::new(Arc::new(state), None), audit }
}

fn call(svc: &ScepService, method: &str, uri: &str, key: Option<&str>, body: &str) -> (StatusCode, String) {
    let mut b = http::Request::builder().method(method).uri(uri);
    if let Some(k) = key {
        b = b.header("authorization", format!("Bearer {k}"));
    }
    let r = block_on(svc.handle(b.body(Full::new(Bytes::from(body.to_string()))).unwrap()));
    let status = r.status();
    let body = block_on(r.into_body().collect()).unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// A real client's PKCSReq, encrypted to the fixture's RA (`RA_CERT`): the
/// engine answers it with a signed CertRep, a decision.
const CERTMONGER_PKCSREQ: &[u8] = include_bytes!("../../../tests/vectors/real-clients/certmonger-pkcsreq.der");

/// POSTs `body` to `uri` on `svc`; the status.
fn post_bytes(svc: &ScepService, uri: &str, body: &'static [u8]) -> StatusCode {
    let req = http::Request::builder().method("POST").uri(uri).body(Full::new(Bytes::from_static(body))).unwrap();
    block_on(svc.handle(req)).status()
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

const ENDPOINTS: [(&str, &str, &str); 5] = [
    ("GET", "/api/v1/admin/scep/profiles", ""),
    ("GET", "/api/v1/admin/scep/intune/stats", ""),
    ("POST", "/api/v1/admin/scep/intune/reload-trust", r#"{"path_id": "corp"}"#),
    ("GET", "/api/v1/admin/scep/events?limit=5", ""),
    ("GET", "/api/v1/admin/scep/audit?limit=5", ""),
];

#[test]
fn every_admin_endpoint_is_401_without_or_with_an_unknown_key_and_403_for_a_reader() {
    let f = fixture();
    for (method, uri, body) in ENDPOINTS {
        for key in [None, Some("not-a-configured-key-at-all")] {
            let (status, text) = call(&f.svc, method, uri, key, body);
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {uri} {key:?}");
            assert_eq!(json(&text)["error"], "unauthorized");
            assert!(json(&text)["message"].is_string());
        }
        let (status, text) = call(&f.svc, method, uri, Some(READER), body);
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {uri}");
        assert_eq!(json(&text)["error"], "forbidden");
    }
}

/// The tester's report: `Authorization: BEARER <key>` was 401 (only
/// `Bearer` and `bearer` were taken); RFC 9110 §11.1 makes the scheme
/// case-insensitive.
#[test]
fn the_admin_api_takes_the_bearer_scheme_in_any_case() {
    let f = fixture();
    for scheme in ["Bearer", "bearer", "BEARER", "BeArEr"] {
        let req = http::Request::builder()
            .uri("/api/v1/admin/scep/profiles")
            .header("authorization", format!("{scheme}  {ADMIN}"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        assert_eq!(block_on(f.svc.handle(req)).status(), StatusCode::OK, "{scheme}");
    }
    let req = http::Request::builder()
        .uri("/api/v1/admin/scep/profiles")
        .header("authorization", format!("Basic {ADMIN}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(block_on(f.svc.handle(req)).status(), StatusCode::UNAUTHORIZED);
}

#[test]
fn admin_endpoints_answer_an_admin_key() {
    let f = fixture();
    let (status, text) = call(&f.svc, "GET", "/api/v1/admin/scep/profiles", Some(ADMIN), "");
    assert_eq!(status, StatusCode::OK);
    let v = json(&text);
    let profiles = v["profiles"].as_array().unwrap();
    assert_eq!(profiles.len(), 2);
    assert_eq!(profiles[0]["path_id"], "corp");
    assert_eq!(profiles[0]["default"], true);
    assert_eq!(profiles[0]["challenge_password_set"], true);
    assert_eq!(profiles[0]["mtls"]["enabled"], false);
    assert!(profiles[0]["ra_cert"]["days_to_expiry"].as_i64().unwrap() > 0);
    assert_eq!(profiles[1]["mtls"]["enabled"], true);
    assert_eq!(profiles[1]["mtls"]["url_path"], "/scep-mtls/iot");
    assert!(profiles[0]["intune"].is_null());

    let (status, text) = call(&f.svc, "GET", "/api/v1/admin/scep/intune/stats", Some(ADMIN), "");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json(&text)["profiles"][0], serde_json::json!({"path_id": "corp", "enabled": false}));

    // Intune is not wired into profiles on this branch: 409; unknown profile 404; bad body 400.
    let reload = "/api/v1/admin/scep/intune/reload-trust";
    let (status, text) = call(&f.svc, "POST", reload, Some(ADMIN), r#"{"path_id": "corp"}"#);
    assert_eq!((status, json(&text)["error"].as_str().unwrap()), (StatusCode::CONFLICT, "intune_not_enabled"));
    let (status, _) = call(&f.svc, "POST", reload, Some(ADMIN), r#"{"path_id": "nope"}"#);
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, text) = call(&f.svc, "POST", reload, Some(ADMIN), "{}");
    assert_eq!((status, json(&text)["error"].as_str().unwrap()), (StatusCode::BAD_REQUEST, "bad_request"));

    let (status, _) = call(&f.svc, "DELETE", "/api/v1/admin/scep/profiles", Some(ADMIN), "");
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    let (status, _) = call(&f.svc, "GET", "/api/v1/admin/scep/nothing", Some(ADMIN), "");
    assert_eq!(status, StatusCode::NOT_FOUND);
    for bad in ["limit=0", "limit=5000", "before_id=x", "colour=red", "profile=%zz", "since=soon"] {
        let (status, _) = call(&f.svc, "GET", &format!("/api/v1/admin/scep/events?{bad}"), Some(ADMIN), "");
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
    }
}

#[test]
fn every_scep_answer_is_audited_and_queryable() {
    let f = fixture_with(DiscoveryAudit::Each);
    let info = ConnectionInfo { remote_addr: Some("192.0.2.7:5000".parse().unwrap()), ..Default::default() };
    let svc = f.svc.with_connection(info);
    assert_eq!(call(&svc, "GET", "/scep/corp?operation=GetCACaps", None, "").0, StatusCode::OK);
    assert_eq!(call(&svc, "GET", "/scep/iot?operation=GetCACert", None, "").0, StatusCode::OK);
    assert_eq!(call(&svc, "GET", "/scep/nope?operation=GetCACaps", None, "").0, StatusCode::NOT_FOUND);
    assert_eq!(call(&svc, "GET", "/scep-mtls/iot?operation=GetCACaps", None, "").0, StatusCode::UNAUTHORIZED);
    // Not SCEP decisions: not audited.
    call(&svc, "GET", "/healthz", None, "");
    call(&svc, "GET", "/metrics", None, "");

    let all = block_on(f.audit.query(AuditQuery { limit: 100, ..Default::default() })).unwrap();
    assert_eq!(all.len(), 4, "{all:#?}");
    let (mtls, unknown, cacert, caps) = (&all[0], &all[1], &all[2], &all[3]);
    assert_eq!(
        (caps.profile.as_str(), caps.action.as_str(), caps.outcome.as_str()),
        ("corp", "scep_getcacaps", "success")
    );
    assert_eq!(caps.client_addr.as_deref(), Some("192.0.2.7:5000"));
    assert_eq!(caps.http_status, 200);
    assert_eq!((cacert.profile.as_str(), cacert.action.as_str()), ("iot", "scep_getcacert"));
    assert_eq!((unknown.profile.as_str(), unknown.outcome.as_str(), unknown.http_status), ("", "unknown_profile", 404));
    assert_eq!((mtls.route.as_str(), mtls.outcome.as_str(), mtls.http_status), ("scep-mtls", "mtls_unauthorized", 401));
    assert!(mtls.detail.as_deref().unwrap().contains("no client certificate"));

    // The query endpoint filters.
    let (status, text) = call(&f.svc, "GET", "/api/v1/admin/scep/events?profile=iot&limit=10", Some(ADMIN), "");
    assert_eq!(status, StatusCode::OK);
    let events = json(&text)["events"].as_array().unwrap().clone();
    assert_eq!(events.len(), 2);
    assert!(events.iter().all(|e| e["profile"] == "iot"));
    let (_, text) = call(&f.svc, "GET", "/api/v1/admin/scep/events?action=scep_getcacaps", Some(ADMIN), "");
    assert_eq!(json(&text)["events"].as_array().unwrap().len(), 3, "corp, unknown profile, mTLS refusal");
}

#[test]
fn discovery_answers_are_tallied_and_decisions_stay_one_event_each() {
    let f = fixture_with(DiscoveryAudit::Aggregate);
    let info = ConnectionInfo { remote_addr: Some("192.0.2.7:5000".parse().unwrap()), ..Default::default() };
    let svc = f.svc.with_connection(info);
    for _ in 0..3 {
        assert_eq!(call(&svc, "GET", "/scep/corp?operation=GetCACaps", None, "").0, StatusCode::OK);
    }
    assert_eq!(call(&svc, "GET", "/scep/iot?operation=GetCACert", None, "").0, StatusCode::OK);
    assert_eq!(call(&svc, "GET", "/scep/nope?operation=GetCACaps", None, "").0, StatusCode::NOT_FOUND);
    // A PKIOperation answered with a CertRep is a decision: its own durable event.
    for _ in 0..2 {
        assert_eq!(post_bytes(&svc, "/scep/corp?operation=PKIOperation", CERTMONGER_PKCSREQ), StatusCode::OK);
    }
    // A refusal before attribution (HTTP 400, no transactionID) is tallied (issue 13 item 6e).
    for _ in 0..3 {
        assert_eq!(call(&svc, "POST", "/scep/corp?operation=PKIOperation", None, "junk").0, StatusCode::BAD_REQUEST);
    }

    let all = block_on(f.audit.query(AuditQuery { limit: 100, ..Default::default() })).unwrap();
    let find = |profile: &str, action: &str| -> Vec<&crate::store::audit::AuditEvent> {
        all.iter().filter(|e| e.profile == profile && e.action == action).collect()
    };
    let caps = find("corp", "scep_getcacaps");
    assert_eq!(caps.len(), 1, "{all:#?}");
    assert_eq!((caps[0].count, caps[0].outcome.as_str(), caps[0].http_status), (3, "success", 200));
    assert_eq!(caps[0].client_addr.as_deref(), Some("192.0.2.7"), "tallied by client IP");
    assert!(caps[0].first_time.is_some());
    let cacert = find("iot", "scep_getcacert");
    assert_eq!((cacert.len(), cacert[0].count), (1, 1));
    let unknown = find("", "scep_getcacaps");
    assert_eq!((unknown.len(), unknown[0].outcome.as_str(), unknown[0].http_status), (1, "unknown_profile", 404));
    let decisions: Vec<_> =
        all.iter().filter(|e| e.profile == "corp" && e.http_status == 200 && e.action != "scep_getcacaps").collect();
    assert_eq!(decisions.len(), 2, "{all:#?}");
    assert!(decisions.iter().all(|e| e.count == 1 && e.first_time.is_none() && e.transaction_id.is_some()));
    assert_eq!(decisions[0].client_addr.as_deref(), Some("192.0.2.7:5000"));
    let refusals = find("corp", "scep_pkioperation");
    assert_eq!(refusals.len(), 1, "{all:#?}");
    assert_eq!((refusals[0].count, refusals[0].http_status), (3, 400));
    assert!(refusals[0].first_time.is_some() && refusals[0].transaction_id.is_none());
    assert_eq!(refusals[0].client_addr.as_deref(), Some("192.0.2.7"), "tallied by client IP");
    assert_eq!(all.len(), 6);

    // The admin API shows the counts.
    let (_, text) = call(&f.svc, "GET", "/api/v1/admin/scep/events?action=scep_getcacaps", Some(ADMIN), "");
    let events = json(&text)["events"].as_array().unwrap().clone();
    let total: u64 = events.iter().map(|e| e["count"].as_u64().unwrap()).sum();
    assert_eq!(total, 4, "{events:#?}");
}

#[test]
fn mtls_route_needs_an_enabled_profile_and_a_certificate() {
    let f = fixture();
    // corp has no mTLS: the sibling route does not exist for it.
    let (status, _) = call(&f.svc, "GET", "/scep-mtls/corp?operation=GetCACaps", None, "");
    assert_eq!(status, StatusCode::NOT_FOUND);
    // iot has: without a certificate, 401; a certificate not issued under the bundle, 401.
    let (status, _) = call(&f.svc, "GET", "/scep-mtls/iot/pkiclient.exe?operation=GetCACaps", None, "");
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let foreign = scep_engine::pem::certificates(crate::testutil::RA_CERT).unwrap().remove(0);
    let info = ConnectionInfo { remote_addr: None, peer_certificates: vec![foreign.into()].into() };
    let (status, _) = call(&f.svc.with_connection(info), "GET", "/scep-mtls/iot?operation=GetCACaps", None, "");
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[test]
fn metrics_after_a_known_sequence() {
    let f = fixture();
    for _ in 0..3 {
        call(&f.svc, "GET", "/scep/corp?operation=GetCACaps", None, "");
    }
    call(&f.svc, "GET", "/scep?operation=GetCACert", None, "");
    call(&f.svc, "GET", "/scep/iot?operation=GetCACaps&operation=x", None, "");
    call(&f.svc, "GET", "/scep/ghost?operation=GetCACaps", None, "");
    let (status, text) = call(&f.svc, "GET", "/metrics", None, "");
    assert_eq!(status, StatusCode::OK);
    for line in [
        r#"scepd_requests_total{profile="corp",operation="GetCACaps",status="200"} 3"#,
        r#"scepd_requests_total{profile="corp",operation="GetCACert",status="200"} 1"#,
        r#"scepd_requests_total{profile="iot",operation="",status="400"} 1"#,
        r#"scepd_requests_total{profile="",operation="GetCACaps",status="404"} 1"#,
        r#"scepd_scep_outcomes_total{profile="corp",action="scep_getcacaps",outcome="success"} 3"#,
        r#"scepd_scep_outcomes_total{profile="",action="scep_getcacaps",outcome="unknown_profile"} 1"#,
        "scepd_audit_write_failures_total 0",
        "# TYPE scepd_issuance_duration_seconds histogram",
        "# TYPE scepd_intune_challenges_total counter",
        concat!("scepd_build_info{version=\"", env!("CARGO_PKG_VERSION"), "\"} 1"),
        // Every configured profile has its issuer series from the start, at zero.
        r#"scepd_issuer_errors_total{profile="corp"} 0"#,
        r#"scepd_issuer_errors_total{profile="iot"} 0"#,
        r#"scepd_issuance_duration_seconds_count{profile="iot"} 0"#,
        r#"scepd_issuance_duration_seconds_bucket{profile="corp",le="+Inf"} 0"#,
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
    }
    let ra = text.lines().find(|l| l.starts_with(r#"scepd_ra_cert_expiry_seconds{profile="corp"}"#)).unwrap();
    let secs: i64 = ra.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(secs > 0, "{ra}");
    assert!(text.contains(r#"scepd_mtls_bundle_expiry_seconds{profile="iot"}"#));
    assert!(text.contains(r#"scepd_ca_cert_expiry_seconds{profile="corp"}"#));
}

/// Makes the audit database refuse every insert underneath its writer, as a
/// full disk would; drop the trigger `refuse` on the returned connection to
/// let writes through again.
fn refuse_audit_inserts(path: &std::path::Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(
        "CREATE TRIGGER refuse BEFORE INSERT ON audit_events BEGIN SELECT RAISE(ABORT, 'disk full'); END;",
    )
    .unwrap();
    conn
}

#[test]
fn an_audit_log_that_cannot_commit_fails_closed_with_503() {
    let f = fixture_with(DiscoveryAudit::Each);
    refuse_audit_inserts(f.audit.path().unwrap());
    let (status, body) = call(&f.svc, "GET", "/scep/corp?operation=GetCACaps", None, "");
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let (_, text) = call(&f.svc, "GET", "/metrics", None, "");
    assert!(text.lines().any(|l| l == "scepd_audit_write_failures_total 1"), "{text}");
}

#[test]
fn with_tallied_discovery_a_failing_audit_log_still_refuses_decisions() {
    let f = fixture_with(DiscoveryAudit::Aggregate);
    let conn = refuse_audit_inserts(f.audit.path().unwrap());
    // Discovery does not wait for the disk; the tally is kept for a retry.
    assert_eq!(call(&f.svc, "GET", "/scep/corp?operation=GetCACaps", None, "").0, StatusCode::OK);
    let status = post_bytes(&f.svc, "/scep/corp?operation=PKIOperation", CERTMONGER_PKCSREQ);
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    // Once the disk takes writes again, the kept tally is written, and the
    // outage is recorded after it.
    conn.execute_batch("DROP TRIGGER refuse").unwrap();
    let all = block_on(f.audit.query(AuditQuery { limit: 10, ..Default::default() })).unwrap();
    assert_eq!(all.len(), 2, "{all:#?}");
    assert_eq!((all[0].action.as_str(), all[0].outcome.as_str()), ("audit_outage", "audit_recovered"));
    assert_eq!((all[1].action.as_str(), all[1].count), ("scep_getcacaps", 1));
    let (_, text) = call(&f.svc, "GET", "/metrics", None, "");
    assert!(text.lines().any(|l| l == "scepd_audit_write_failures_total 1"), "{text}");
}

/// The disk-full probe: the client got 503 and the metric counted
/// `audit_unavailable`, but the request's log line said
/// `status=503 outcome="issuer_rejected"` (the engine's label).
#[test]
fn a_request_refused_because_its_audit_event_cannot_commit_is_logged_audit_unavailable() {
    let f = fixture_with(DiscoveryAudit::Each);
    let _refusing = refuse_audit_inserts(f.audit.path().unwrap());
    let log = log_lines_of(|| {
        let status = post_bytes(&f.svc, "/scep/corp?operation=PKIOperation", CERTMONGER_PKCSREQ);
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    });
    let line = log.lines().find(|l| l.contains("scepd::request")).unwrap_or_else(|| panic!("no request line:\n{log}"));
    assert!(line.contains("status=503") && line.contains("outcome=\"audit_unavailable\""), "{line}");
    let (_, metrics) = call(&f.svc, "GET", "/metrics", None, "");
    assert!(metrics.contains(r#"outcome="audit_unavailable"} 1"#), "{metrics}");
}

/// The disk-full probe: `/healthz` kept answering 200 while every audit
/// commit failed. The node's own SQLite audit log failing is 503, naming it
/// and the error; once the disk takes writes again the writer finds out by
/// itself (a balancer sends no request to a node it took out), `/healthz` is
/// 200 again and the trail records the outage.
#[test]
fn healthz_is_503_while_the_sqlite_audit_log_cannot_commit_and_200_once_it_can() {
    let f = fixture_with(DiscoveryAudit::Each);
    let healthz = || call(&f.svc, "GET", "/healthz", None, "");
    assert_eq!(healthz(), (StatusCode::OK, "ok\n".to_string()));
    let path = f.audit.path().unwrap().to_path_buf();
    let conn = refuse_audit_inserts(&path);
    assert_eq!(
        post_bytes(&f.svc, "/scep/corp?operation=PKIOperation", CERTMONGER_PKCSREQ),
        StatusCode::SERVICE_UNAVAILABLE
    );
    let expected = format!(
        "unavailable: the audit log cannot commit\naudit: sqlite {} cannot commit: disk full\n",
        path.file_name().unwrap().to_string_lossy()
    );
    assert!(!expected.contains(&*path.parent().unwrap().to_string_lossy()), "the path stays in the log");
    assert_eq!(healthz(), (StatusCode::SERVICE_UNAVAILABLE, expected));

    conn.execute_batch("DROP TRIGGER refuse").unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (status, body) = healthz();
        if status == StatusCode::OK {
            assert_eq!(body, "ok\n");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "still {status} after 10 s: {body}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let outage =
        block_on(f.audit.query(AuditQuery { action: vec!["audit_outage".into()], limit: 10, ..Default::default() }))
            .unwrap();
    assert_eq!(outage.len(), 1, "{outage:#?}");
    assert_eq!((outage[0].outcome.as_str(), outage[0].http_status), ("audit_recovered", 0));
    let detail = outage[0].detail.as_deref().unwrap();
    assert!(detail.contains("1 commits failed") && detail.ends_with("last error: disk full"), "{detail}");
}

/// Issue 13 item 6d: the local CA records a certificate before its audit event
/// is committed; a crash in between left a certificate the trail did not
/// mention. The next start records it as `issued_not_delivered`, once.
#[test]
fn a_certificate_recorded_without_its_audit_event_is_reconciled_at_the_next_start() {
    use crate::settings::start::StartOptions;
    let dir = TestDir::new();
    let path = dir.path().join("scepd.toml");
    std::fs::write(
        &path,
        "[server]\ndata_dir = \"data\"\n[[profile]]\nname = \"corp\"\nissuer = \"local\"\n\
         challenge_password = \"secret123\"\nra_cert = \"ra.pem\"\nra_key = \"ra.key\"\n",
    )
    .unwrap();
    let options = StartOptions { config: Some(path), env: Some(Vec::new()), ..StartOptions::default() };
    let events = |state: &ServiceState| {
        block_on(state.audit().unwrap().query(AuditQuery { limit: 100, ..Default::default() })).unwrap()
    };

    let state = ServiceState::load(options.clone()).unwrap().state;
    let svc = ScepService::new(state.clone(), None);
    assert_eq!(post_bytes(&svc, "/scep/corp?operation=PKIOperation", CERTMONGER_PKCSREQ), StatusCode::OK);
    let all = events(&state);
    let issued = all.iter().find(|e| e.outcome == "success").unwrap_or_else(|| panic!("not issued: {all:#?}"));
    let (serial, txid) = (issued.serial.clone().unwrap(), issued.transaction_id.clone().unwrap());
    drop((svc, state));

    // The crash window: the certificate is in the CA store, its event is not.
    let conn = rusqlite::Connection::open(dir.path().join("data/audit.db")).unwrap();
    assert_eq!(conn.execute("DELETE FROM audit_events WHERE serial = ?1", [&serial]).unwrap(), 1);
    drop(conn);

    let state = ServiceState::load(options.clone()).unwrap().state;
    let all = events(&state);
    let reconciled: Vec<_> = all.iter().filter(|e| e.outcome == "issued_not_delivered").collect();
    assert_eq!(reconciled.len(), 1, "{all:#?}");
    let e = reconciled[0];
    assert_eq!(e.serial.as_deref().map(|s| s.trim_start_matches("00")), Some(serial.trim_start_matches("00")));
    assert_eq!(
        (e.profile.as_str(), e.action.as_str(), e.transaction_id.as_deref(), e.http_status),
        ("corp", "scep_pkcsreq", Some(txid.as_str()), 0)
    );
    assert_eq!(e.issuer.as_deref(), Some(scep_issuers::LOCAL_ISSUER_ID));
    assert!(e.subject.is_some() && e.detail.as_deref().unwrap().contains("never sent"), "{e:#?}");
    drop(state);

    // Explained once: the next start adds nothing.
    let state = ServiceState::load(options).unwrap().state;
    assert_eq!(events(&state).iter().filter(|e| e.outcome == "issued_not_delivered").count(), 1);
}

/// RFC 9110: HEAD on an admin GET endpoint answers as GET (hyper sends no
/// body), and a 405 names the allowed methods in `Allow` (§15.5.6).
#[test]
fn admin_head_answers_as_get_and_405_carries_allow() {
    let f = fixture();
    let answer = |method: &str, uri: &str| {
        let req = http::Request::builder()
            .method(method)
            .uri(uri)
            .header("authorization", format!("Bearer {ADMIN}"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        block_on(f.svc.handle(req))
    };
    for uri in ["/api/v1/admin/scep/profiles", "/api/v1/admin/scep/intune/stats", "/api/v1/admin/scep/events"] {
        let (get, head) = (answer("GET", uri), answer("HEAD", uri));
        assert_eq!((head.status(), get.status()), (StatusCode::OK, StatusCode::OK), "{uri}");
        assert_eq!(head.headers()[http::header::CONTENT_TYPE], get.headers()[http::header::CONTENT_TYPE], "{uri}");
        let r = answer("DELETE", uri);
        assert_eq!(
            (r.status(), r.headers()[http::header::ALLOW].to_str().unwrap()),
            (StatusCode::METHOD_NOT_ALLOWED, "GET, HEAD"),
            "{uri}"
        );
    }
    let r = answer("GET", "/api/v1/admin/scep/intune/reload-trust");
    assert_eq!(
        (r.status(), r.headers()[http::header::ALLOW].to_str().unwrap()),
        (StatusCode::METHOD_NOT_ALLOWED, "POST")
    );
}

/// RFC 3986 §2.1: a serial in the path may be percent-encoded
/// (`%30%62` is `0b`, `%3A` a colon); it was taken undecoded and refused
/// with 400. Here no issuer knows it: 404 naming the decoded serial.
#[test]
fn a_percent_encoded_serial_in_the_path_is_decoded() {
    let f = fixture();
    let certificates = "/api/v1/admin/scep/certificates";
    for (method, uri, body) in [
        ("GET", format!("{certificates}/%30%62"), ""),
        ("GET", format!("{certificates}/%30%30%3a0B"), ""),
        ("POST", format!("{certificates}/%30%62/revoke"), r#"{"reason": "keyCompromise"}"#),
    ] {
        let (status, text) = call(&f.svc, method, &uri, Some(ADMIN), body);
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {uri}: {text}");
        assert!(json(&text)["message"].as_str().unwrap().contains("serial 0b "), "{method} {uri}: {text}");
    }
    for bad in ["%zz", "%30%67", "%2F0b"] {
        let (status, text) = call(&f.svc, "GET", &format!("{certificates}/{bad}"), Some(ADMIN), "");
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {text}");
    }
}

/// RFC 9110 §9.3.2: HEAD is GET without the body, so a `reader` key may
/// HEAD what it may GET (the tester's report: 403 on HEAD, 200 on GET, as
/// the role was checked before HEAD was mapped to GET); what it may not
/// GET stays 403 on HEAD.
#[test]
fn a_reader_may_head_what_it_may_get() {
    let f = fixture();
    let answer = |method: &str, uri: &str| {
        let req = http::Request::builder()
            .method(method)
            .uri(uri)
            .header("authorization", format!("Bearer {READER}"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        block_on(f.svc.handle(req)).status()
    };
    for uri in [
        "/api/v1/admin/scep/certificates?limit=5",
        "/api/v1/admin/scep/certificates/0a1b",
        "/api/v1/admin/scep/charts",
        "/api/v1/admin/scep/challenges",
    ] {
        let (get, head) = (answer("GET", uri), answer("HEAD", uri));
        assert_ne!(get, StatusCode::FORBIDDEN, "{uri}");
        assert_eq!(head, get, "{uri}");
    }
    for uri in ["/api/v1/admin/scep/profiles", "/api/v1/admin/scep/events"] {
        assert_eq!(answer("HEAD", uri), StatusCode::FORBIDDEN, "{uri}");
    }
}

/// A reload keeps the local CA that is serving: a revocation made through a
/// reloaded profile's issuer moves the revocation counter the OCSP responder
/// and the CRL are versioned by, so relying parties see it at once (two
/// instances on one database would leave the responder's cache stale).
#[test]
fn a_reload_keeps_the_serving_local_ca_so_revocations_reach_the_ocsp_responder() {
    use crate::settings::start::StartOptions;
    let dir = TestDir::new();
    let path = dir.path().join("scepd.toml");
    std::fs::write(
        &path,
        "[server]\ndata_dir = \"data\"\n[[profile]]\nname = \"corp\"\nissuer = \"local\"\n\
         challenge_password = \"secret123\"\nra_cert = \"ra.pem\"\nra_key = \"ra.key\"\n",
    )
    .unwrap();
    let options = StartOptions { config: Some(path), env: Some(Vec::new()), ..StartOptions::default() };
    let state = ServiceState::load(options).unwrap().state;
    let responder_ca = || state.relying_parties().expect("the local CA has a responder").ca().revocation_version();
    assert_eq!(responder_ca(), 0);
    state.reload().unwrap();

    let svc = ScepService::new(state.clone(), None);
    assert_eq!(post_bytes(&svc, "/scep/corp?operation=PKIOperation", CERTMONGER_PKCSREQ), StatusCode::OK);
    let events = block_on(state.audit().unwrap().query(AuditQuery { limit: 10, ..Default::default() })).unwrap();
    let issued = events.iter().find(|e| e.outcome == "success").unwrap_or_else(|| panic!("not issued: {events:#?}"));
    let serial_hex = issued.serial.clone().unwrap();
    let serial: Vec<u8> =
        (0..serial_hex.len() / 2).map(|i| u8::from_str_radix(&serial_hex[2 * i..2 * i + 2], 16).unwrap()).collect();

    let issuer = state.profiles().get(Some("corp")).unwrap().issuer.clone();
    let now = scep_engine::UnixTime::now();
    block_on(issuer.revoke(&serial, scep_issuers::crl::RevocationReason::KeyCompromise, now)).unwrap();
    assert_eq!(responder_ca(), 1, "the responder holds another instance than the reloaded profile");
}

/// Records a certificate for `cn` on `profile`'s local CA, issued at `at`.
fn issue_at(state: &ServiceState, profile: &str, cn: &str, at: i64) {
    use scep_engine::issue::{Authorization, EnrollRequest, IssuancePolicy, IssueOutcome, IssueRequest};
    let profiles = state.profiles();
    let ca = profiles.get(Some(profile)).unwrap().issuer.inventory().expect("a local CA").clone();
    let (device, _) = scep_engine::crypto::EcPrivateKey::generate().unwrap();
    let request = IssueRequest::Enroll(EnrollRequest {
        profile: profile.into(),
        transaction_id: format!("{profile}-{cn}"),
        csr_der: Vec::new(),
        subject_der: scep_issuers::x509_build::common_name(cn),
        spki_der: device.spki_der().to_vec(),
        subject_alt_names: Vec::new(),
        requested_ekus: Vec::new(),
        policy: IssuancePolicy::default(),
        authorization: Authorization::StaticChallenge,
        sid_extension: None,
    });
    let outcome = ca.handle_blocking(&request, scep_engine::UnixTime::from_secs(at));
    assert!(matches!(outcome, IssueOutcome::Issued { .. }), "{cn}: {outcome:?}");
}

/// The tester's report: with two local CAs (the built-in `iss-local` and an
/// `[[issuer]] type = "local"`), each numbering its own rows from 1, paging
/// with `limit=3` and `before_id` returned 12 of 14 certificates. The merged
/// list is newest `issued_at` first (ties by issuer id; a CA's rows in its
/// own order, even across a clock stepped back), and paging it with
/// `cursor` at any page size gives exactly the unpaged list; `before_id`,
/// one CA's row id, is refused while two CAs keep an inventory.
#[test]
fn certificate_paging_over_two_local_cas_gives_each_certificate_once() {
    use crate::settings::start::StartOptions;
    let dir = TestDir::new();
    let branch = scep_issuers::bootstrap(&dir.path().join("branch"), &Default::default()).unwrap();
    let path = dir.path().join("scepd.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\ndata_dir = \"data\"\n\
             [[api_key]]\nname = \"grafana\"\nkey = \"{READER}\"\nrole = \"reader\"\n\
             [[issuer]]\nid = \"branch-ca\"\ntype = \"local\"\nca_cert = \"{}\"\nca_key = \"{}\"\n\
             [[profile]]\nname = \"corp\"\nissuer = \"local\"\n\
             challenge_password = \"secret123\"\nra_cert = \"ra.pem\"\nra_key = \"ra.key\"\n\
             [[profile]]\nname = \"branch\"\nissuer = \"branch-ca\"\n\
             challenge_password = \"secret123\"\nra_cert = \"ra.pem\"\nra_key = \"ra.key\"\n",
            branch.ca_cert.display(),
            branch.ca_key.display(),
        ),
    )
    .unwrap();
    let options = StartOptions { config: Some(path), env: Some(Vec::new()), ..StartOptions::default() };
    let state = ServiceState::load(options).unwrap().state;
    let t0 = scep_engine::UnixTime::now().secs() - 1000;
    // Rows 1..=7 of each CA; iss-local's clock stepped back for its row 6.
    for (n, at) in [100, 100, 300, 300, 500, 250, 700].into_iter().enumerate() {
        issue_at(&state, "corp", &format!("l{}", n + 1), t0 + at);
    }
    for (n, at) in [100, 200, 300, 400, 400, 600, 650].into_iter().enumerate() {
        issue_at(&state, "branch", &format!("b{}", n + 1), t0 + at);
    }
    let svc = ScepService::new(state, None);
    let list = |query: &str| {
        let (status, text) = call(&svc, "GET", &format!("/api/v1/admin/scep/certificates?{query}"), Some(READER), "");
        assert_eq!(status, StatusCode::OK, "{query}: {text}");
        json(&text)
    };
    let names = |v: &Value| -> Vec<String> {
        v["certificates"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["subject"].as_str().unwrap().trim_start_matches("CN=").to_string())
            .collect()
    };

    let all = list("limit=100");
    let want = ["l7", "b7", "b6", "b5", "b4", "b3", "l6", "l5", "l4", "l3", "b2", "b1", "l2", "l1"];
    assert_eq!(names(&all), want, "{all}");
    assert_eq!((&all["next_cursor"], &all["next_before_id"]), (&Value::Null, &Value::Null));
    let ids: Vec<(&str, i64)> = all["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["issuer_id"].as_str().unwrap(), c["id"].as_i64().unwrap()))
        .collect();
    assert!(ids.contains(&("iss-local", 3)) && ids.contains(&("branch-ca", 3)), "row ids are per CA: {ids:?}");

    for limit in 1..=5 {
        let mut paged = Vec::new();
        let mut query = format!("limit={limit}");
        loop {
            let page = list(&query);
            let got = names(&page);
            assert!(got.len() <= limit, "limit={limit}: {page}");
            paged.extend(got);
            match page["next_cursor"].as_str() {
                Some(cursor) => query = format!("limit={limit}&cursor={cursor}"),
                None => break,
            }
        }
        assert_eq!(paged, want, "limit={limit}");
    }
    // A filter pages the same way.
    let page = list("limit=2&profile=branch");
    assert_eq!(names(&page), ["b7", "b6"]);
    let cursor = page["next_cursor"].as_str().unwrap();
    assert_eq!(cursor, "branch-ca:6");
    assert_eq!(names(&list(&format!("limit=2&profile=branch&cursor={cursor}"))), ["b5", "b4"]);
    // With both, the cursor pages (before_id, one CA's position, is the earlier form).
    assert_eq!(names(&list(&format!("limit=2&profile=branch&cursor={cursor}&before_id=1"))), ["b5", "b4"]);

    for (query, names_it) in [
        ("before_id=5", "before_id"),
        ("cursor=iss-local", "cursor"),
        ("cursor=ISS:1", "cursor"),
        ("cursor=iss-local:1,iss-local:2", "cursor"),
        ("cursor=iss-local:1&cursor=iss-local:2", "cursor"),
    ] {
        let (status, text) = call(&svc, "GET", &format!("/api/v1/admin/scep/certificates?{query}"), Some(READER), "");
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {text}");
        assert!(json(&text)["message"].as_str().unwrap().starts_with(names_it), "{query}: {text}");
    }
}
