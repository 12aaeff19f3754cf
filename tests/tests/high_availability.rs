//! Several scepd nodes on one PostgreSQL database, and protection state that
//! survives a restart (issue 18), against the real binary on both transports.
//!
//! - Two nodes on one database: an Intune challenge used on node A is refused
//!   as `replay` on node B; a device's rate limit counts enrolments on both;
//!   after node A restarts the challenge is still refused.
//! - Enrolments on A and on B: both admin APIs return the same events (same
//!   ids, same order), each naming the node that answered.
//! - kill -9 of one node while both take Intune enrolments: every enrolment a
//!   client saw acknowledged (SUCCESS, on either node) has its audit event in
//!   the trail the survivor lists, its challenge is refused as a replay by the
//!   survivor, and the survivor keeps issuing.
//! - One node on SQLite: a challenge used before a restart is refused after it
//!   (the in-memory replay cache alone forgot it), and a renewal by
//!   certificate over the device's limit is refused after a restart too.
//! - The database stopped under requests: enrolments are answered 503 (never
//!   issued on local state), discovery keeps answering, `/healthz` says the
//!   store is unreachable, and enrolments succeed again within seconds of the
//!   database's return.
//!
//! The PostgreSQL cluster is `SCEPD_TEST_DATABASE_URL` (`.ci/run` starts one;
//! each test creates its own database) or, for the outage test, a private
//! cluster; without PostgreSQL these tests FAIL naming the install command.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use scep_tests::client::{
    CertRep, ClientError, CsrSpec, DeviceKey, FailInfo, MessageBody, MessageOptions, PkiMethod, PkiStatus, ScepClient,
    Signer, SubjectAltName, build_csr, build_pki_message,
};
use scep_tests::database::{TestCluster, TestDatabase};
use scep_tests::intune_connector::{Claims, Connector, JwsAlg};
use scep_tests::server::{Scepd, ScepdOptions, Signal, Transport};
use serde_json::Value;

const AUD: &str = "https://scep.example.test/scep/corp";
const WAIT: Duration = Duration::from_secs(30);
const BUNDLE: &str = "intune.pem";

/// The admin API key of every node.
const ADMIN_KEY: &str = "ha-e2e-admin-key-0123456789abcdef";

/// A node named `name`: profile `corp` (Intune, limit 2 per device and day)
/// trusting `connector`, served by `transport`, on the database `url`
/// (`None`: SQLite in `data_dir`), with the admin API key [`ADMIN_KEY`].
fn node(
    name: &str,
    connector: &Connector,
    transport: Transport,
    url: Option<&str>,
    data_dir: Option<PathBuf>,
) -> Scepd {
    node_with(name, connector, transport, url, data_dir, "intune_per_device_rate_limit_24h = 2\n")
}

/// As [`node`], with `extra` profile keys instead of the limit of 2.
fn node_with(
    name: &str,
    connector: &Connector,
    transport: Transport,
    url: Option<&str>,
    data_dir: Option<PathBuf>,
    extra: &str,
) -> Scepd {
    let mut opts = ScepdOptions::with_config(format!(
        "[server]\ndata_dir = \"data\"\nnode_name = \"{name}\"\n\n\
         [[api_key]]\nname = \"ops\"\nkey = \"{ADMIN_KEY}\"\nrole = \"admin\"\n\n\
         [[profile]]\nname = \"corp\"\nchallenge_password = \"static-secret\"\n\
         intune_enabled = true\nintune_connector_cert_path = \"{BUNDLE}\"\nintune_audience = \"{AUD}\"\n{extra}"
    ))
    .on(transport);
    opts.files.push((PathBuf::from(BUNDLE), connector.certificate_pem().into_bytes()));
    if let Some(url) = url {
        opts.env.push(("CERTCTL_DATABASE_URL".into(), url.into()));
    }
    opts.data_dir = data_dir;
    opts.args.extend(["--log-format".to_string(), "json".to_string()]);
    opts.startup_timeout = WAIT;
    Scepd::start(opts).unwrap_or_else(|e| panic!("{e}"))
}

fn claims(sub: &str, cn: &str) -> Claims {
    Claims::new("connector-installation-1", sub, cn).audience(AUD).dns(&[cn])
}

/// A new key enrolling as `cn` with `challenge`: the verified CertRep, or the
/// client's error (an HTTP status other than 200 among them).
fn try_enroll(url: &str, cn: &str, challenge: &str) -> Result<CertRep, ClientError> {
    let key = DeviceKey::generate().unwrap();
    let mut spec = CsrSpec::new(cn, Some(challenge));
    spec.subject_alt_names = vec![SubjectAltName::Dns(cn.into())];
    let client = ScepClient::new(url).unwrap();
    client.enroll(&key, &spec, &MessageOptions::default(), PkiMethod::Post).map(|e| e.reply)
}

fn enroll(url: &str, cn: &str, challenge: &str) -> CertRep {
    try_enroll(url, cn, challenge).unwrap()
}

fn assert_success(rep: &CertRep) {
    assert_eq!(rep.status, PkiStatus::SUCCESS, "failInfo {:?} {:?}", rep.fail_info, rep.fail_info_text);
}

fn assert_failure(rep: &CertRep, fail_info: FailInfo) {
    assert_eq!(rep.status, PkiStatus::FAILURE, "{rep:?}");
    assert_eq!(rep.fail_info, Some(fail_info));
}

/// The `scepd::intune` decision labels a node logged so far.
fn labels(server: &Scepd) -> Vec<String> {
    server
        .stderr()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["target"] == "scepd::intune")
        .filter_map(|v| v["fields"]["label"].as_str().map(str::to_string))
        .collect()
}

/// Waits until `server` logged an Intune decision labelled `label`.
fn wait_label(server: &Scepd, label: &str) {
    let found = server.wait_for_stderr(WAIT, |log| {
        log.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .any(|v| v["target"] == "scepd::intune" && v["fields"]["label"] == label)
    });
    assert!(found, "no {label} decision within {WAIT:?}:\n{}", server.log_tail(40));
}

/// `GET path` on `server`: (status, body).
fn http_get(server: &Scepd, path: &str) -> (u16, String) {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", server.port())).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap();
    (status, body.to_string())
}

scep_tests::on_each_transport!(two_nodes_share_replay_and_rate_limit_state_across_restarts);

fn two_nodes_share_replay_and_rate_limit_state_across_restarts(transport: Transport) {
    let db = TestDatabase::create("two_nodes_share_replay_and_rate_limit_state");
    let connector = Connector::generate(JwsAlg::Es256, "Microsoft Intune Certificate Connector").unwrap();
    let mut a = node("node-a", &connector, transport, Some(&db.url), None);
    let b = node("node-b", &connector, transport, Some(&db.url), None);
    let (url_a, url_b) = (a.profile_url("corp"), b.profile_url("corp"));

    // A challenge used on A is a replay on B (B's in-memory cache never saw it).
    let cn = "replayed.example.com";
    let challenge = connector.mint(&claims("device-replayed", cn));
    assert_success(&enroll(&url_a, cn, &challenge));
    assert_failure(&enroll(&url_b, cn, &challenge), FailInfo::BAD_MESSAGE_CHECK);
    wait_label(&b, "replay");
    assert_eq!(labels(&b), ["replay"], "B refused it as a replay");

    // The device limit (2 a day) counts enrolments on both nodes: one on A,
    // one on B, and the third (on A, whose own limiter has seen one) is refused.
    let cn = "limited.example.com";
    assert_success(&enroll(&url_a, cn, &connector.mint(&claims("device-limited", cn))));
    assert_success(&enroll(&url_b, cn, &connector.mint(&claims("device-limited", cn))));
    assert_failure(&enroll(&url_a, cn, &connector.mint(&claims("device-limited", cn))), FailInfo::BAD_REQUEST);
    wait_label(&a, "rate_limited");

    // A restarts (a new process: empty in-memory cache): the challenge is still refused.
    a.stop();
    let a = node("node-a", &connector, transport, Some(&db.url), None);
    assert_failure(&enroll(&a.profile_url("corp"), "replayed.example.com", &challenge), FailInfo::BAD_MESSAGE_CHECK);
    wait_label(&a, "replay");

    // Both nodes report the shared store in their health answer.
    for server in [&a, &b] {
        let (status, body) = http_get(server, "/healthz");
        assert_eq!((status, body.as_str()), (200, "ok\nstore: postgresql reachable\n"));
    }
}

/// The Intune enrolment events of the shared trail, as `server`'s admin API lists them.
fn enrolment_events(server: &Scepd) -> Vec<Value> {
    let (status, body) =
        admin(server, "GET", "/api/v1/admin/scep/events?action=scep_pkcsreq_intune&limit=1000", None, ADMIN_KEY);
    assert_eq!(status, 200, "{body}");
    body["events"].as_array().unwrap().clone()
}

scep_tests::on_each_transport!(both_admin_apis_list_every_nodes_events_in_one_order);

fn both_admin_apis_list_every_nodes_events_in_one_order(transport: Transport) {
    let db = TestDatabase::create("both_admin_apis_list_every_nodes_events");
    let connector = Connector::generate(JwsAlg::Es256, "Microsoft Intune Certificate Connector").unwrap();
    let a = node("node-a", &connector, transport, Some(&db.url), None);
    let b = node("node-b", &connector, transport, Some(&db.url), None);
    // Enrolments alternate between the nodes: (transactionID, the node that answered).
    let mut answered = Vec::new();
    for i in 0..6 {
        let (server, name) = if i % 2 == 0 { (&a, "node-a") } else { (&b, "node-b") };
        let cn = format!("trail-{i}.example.com");
        let rep = enroll(&server.profile_url("corp"), &cn, &connector.mint(&claims(&format!("device-trail-{i}"), &cn)));
        assert_success(&rep);
        answered.push((rep.transaction_id.clone(), name));
    }
    let (from_a, from_b) = (enrolment_events(&a), enrolment_events(&b));
    assert_eq!(from_a, from_b, "both admin APIs return the same events, in the same order");
    assert_eq!(from_a.len(), 6, "{from_a:?}");
    // Newest first, ids decreasing: the order the enrolments were answered in.
    let listed: Vec<(String, &str)> = from_a
        .iter()
        .rev()
        .map(|e| (e["transaction_id"].as_str().unwrap().to_string(), e["node"].as_str().unwrap()))
        .collect();
    let expected: Vec<(String, &str)> = answered.iter().map(|(t, n)| (t.clone(), *n)).collect();
    assert_eq!(listed, expected, "each event names the node that answered");
    let ids: Vec<i64> = from_a.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "{ids:?}");
    assert!(from_a.iter().all(|e| e["outcome"] == "success" && e["serial"].is_string()));
}

scep_tests::on_each_transport!(one_node_on_sqlite_refuses_a_replay_after_a_restart);

fn one_node_on_sqlite_refuses_a_replay_after_a_restart(transport: Transport) {
    let state = tempfile::tempdir().unwrap();
    let data_dir = state.path().join("data");
    let connector = Connector::generate(JwsAlg::Rs256, "Microsoft Intune Certificate Connector").unwrap();
    let mut first = node("solo", &connector, transport, None, Some(data_dir.clone()));
    let cn = "restart.example.com";
    let challenge = connector.mint(&claims("device-restart", cn));
    assert_success(&enroll(&first.profile_url("corp"), cn, &challenge));
    first.stop();
    assert!(data_dir.join("protection.sqlite").exists(), "the nonce lives in the data directory");

    let second = node("solo", &connector, transport, None, Some(data_dir));
    assert_failure(&enroll(&second.profile_url("corp"), cn, &challenge), FailInfo::BAD_MESSAGE_CHECK);
    wait_label(&second, "replay");
    assert_eq!(http_get(&second, "/healthz"), (200, "ok\nstore: sqlite reachable\n".to_string()));
}

scep_tests::on_each_transport!(the_database_stopped_under_requests_gives_503s_then_recovers);

fn the_database_stopped_under_requests_gives_503s_then_recovers(transport: Transport) {
    let cluster = TestCluster::start("the_database_stopped_under_requests_gives_503s_then_recovers");
    let db = TestDatabase::create_on(&cluster.url, "outage");
    let connector = Connector::generate(JwsAlg::Es256, "Microsoft Intune Certificate Connector").unwrap();
    let mut server = node("solo", &connector, transport, Some(&db.url), None);
    let url = server.profile_url("corp");
    let mint = |i: usize| {
        let cn = format!("outage-{i}.example.com");
        let challenge = connector.mint(&claims(&format!("device-outage-{i}"), &cn));
        (cn, challenge)
    };
    let (cn, c) = mint(0);
    assert_success(&enroll(&url, &cn, &c));

    cluster.stop();
    // Every enrolment during the outage is refused with 503; none is issued.
    let mut refused = 0;
    for i in 1..=4 {
        let (cn, c) = mint(i);
        match try_enroll(&url, &cn, &c) {
            Err(ClientError::Http(m)) if m.starts_with("status 503") => refused += 1,
            other => panic!("enrolment {i} during the outage: {other:?}"),
        }
    }
    assert_eq!(refused, 4);
    // A static-challenge enrolment needs no nonce, but its audit event (in the
    // shared trail) cannot commit: 503, never an answer without its event.
    match try_enroll(&url, "static-outage.example.com", "static-secret") {
        Err(ClientError::Http(m)) if m.starts_with("status 503") => {}
        other => panic!("static-challenge enrolment during the outage: {other:?}"),
    }
    // The admin API cannot read the trail either, and says why.
    let (status, body) = admin(&server, "GET", "/api/v1/admin/scep/events?limit=1", None, ADMIN_KEY);
    assert_eq!((status, body["error"].as_str()), (503, Some("store_unavailable")), "{body}");
    // Discovery keeps answering; the health answer names the problem.
    let client = ScepClient::new(&url).unwrap();
    assert!(client.get_ca_caps().is_ok());
    assert!(client.get_ca_cert().is_ok());
    let (status, body) = http_get(&server, "/healthz");
    assert_eq!(status, 200);
    assert!(body.starts_with("ok\nstore: postgresql unreachable: "), "{body}");
    assert!(server.is_running(), "no panic, no exit");

    // Back: enrolments succeed again within seconds.
    cluster.restart();
    let back = Instant::now();
    let mut i = 10;
    loop {
        let (cn, c) = mint(i);
        match try_enroll(&url, &cn, &c) {
            Ok(rep) => {
                assert_success(&rep);
                break;
            }
            Err(e) => assert!(back.elapsed() < Duration::from_secs(10), "not recovered after 10 s: {e:?}"),
        }
        i += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    let recovered_in = back.elapsed();
    assert!(recovered_in < Duration::from_secs(10), "{recovered_in:?}");
    // The trail, readable again, holds the enrolments answered SUCCESS and
    // none of those refused during the outage.
    let (status, body) = admin(&server, "GET", "/api/v1/admin/scep/events?outcome=success&limit=1000", None, ADMIN_KEY);
    assert_eq!(status, 200, "{body}");
    let subjects: Vec<&str> = body["events"].as_array().unwrap().iter().filter_map(|e| e["subject"].as_str()).collect();
    assert!(subjects.iter().any(|s| s.contains("outage-0.example.com")), "{subjects:?}");
    assert!(!subjects.iter().any(|s| s.contains("static-outage")), "{subjects:?}");
    assert_eq!(http_get(&server, "/healthz"), (200, "ok\nstore: postgresql reachable\n".to_string()));
    // The 503s were audited as such (the audit log records each refusal's label).
    let log = server.stderr();
    assert!(!log.contains("panicked"), "{log}");
    assert!(log.contains("store_unavailable"), "the refusals are logged with their label");
}

scep_tests::on_each_transport!(kill_9_of_one_node_under_load_loses_no_acknowledged_nonce_or_audit_event);

fn kill_9_of_one_node_under_load_loses_no_acknowledged_nonce_or_audit_event(transport: Transport) {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    let db = TestDatabase::create("kill_9_of_one_node_under_load");
    let connector = Connector::generate(JwsAlg::Es256, "Microsoft Intune Certificate Connector").unwrap();
    let mut a = node("node-a", &connector, transport, Some(&db.url), None);
    let b = node("node-b", &connector, transport, Some(&db.url), None);
    let urls = [a.profile_url("corp"), b.profile_url("corp")];
    // (node index, challenge, cn, transactionID) of every enrolment a client saw succeed.
    let acknowledged: Mutex<Vec<(usize, String, String, String)>> = Mutex::new(Vec::new());
    let killed = AtomicBool::new(false);
    let sent = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for worker in 0..4 {
            let (urls, acknowledged, killed, sent, connector) = (&urls, &acknowledged, &killed, &sent, &connector);
            s.spawn(move || {
                // Bounded: at most 12 enrolments per worker; half of them after the kill.
                for i in 0..12 {
                    let n = sent.fetch_add(1, Ordering::SeqCst);
                    let cn = format!("load-{worker}-{i}.example.com");
                    let challenge = connector.mint(&claims(&format!("device-load-{worker}-{i}"), &cn));
                    // Alternate the nodes; after the kill, half of these go to the dead one.
                    if let Ok(rep) = try_enroll(&urls[n % 2], &cn, &challenge)
                        && rep.status == PkiStatus::SUCCESS
                    {
                        acknowledged.lock().unwrap().push((n % 2, challenge, cn, rep.transaction_id));
                    }
                    if killed.load(Ordering::SeqCst) && i >= 10 {
                        break;
                    }
                }
            });
        }
        // Let the load run, then crash node A mid-flight.
        let deadline = Instant::now() + Duration::from_secs(60);
        while sent.load(Ordering::SeqCst) < 16 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        a.signal(Signal::Kill).unwrap();
        killed.store(true, Ordering::SeqCst);
    });
    assert!(a.wait_exit(Duration::from_secs(10)).is_some(), "node A is gone");
    let acknowledged = acknowledged.into_inner().unwrap();
    let on_a = acknowledged.iter().filter(|(node, ..)| *node == 0).count();
    assert!(on_a >= 4, "too few enrolments acknowledged by A before the kill to test anything: {on_a}");
    // Every acknowledged enrolment, on either node, has its audit event in the
    // shared trail, which the survivor's admin API lists naming the node.
    let audited: Vec<(String, String)> = enrolment_events(&b)
        .iter()
        .filter(|e| e["outcome"] == "success")
        .map(|e| (e["transaction_id"].as_str().unwrap().to_string(), e["node"].as_str().unwrap().to_string()))
        .collect();
    for (node, _, _, txid) in &acknowledged {
        let name = if *node == 0 { "node-a" } else { "node-b" };
        assert!(
            audited.contains(&(txid.clone(), name.to_string())),
            "acknowledged enrolment {txid} on {name} has no audit event: {audited:?}"
        );
    }
    // Every acknowledged nonce, whichever node accepted it (those A accepted
    // B's memory never saw), is refused by the survivor.
    for (_, challenge, cn, _) in &acknowledged {
        assert_failure(&enroll(&urls[1], cn, challenge), FailInfo::BAD_MESSAGE_CHECK);
    }
    // And the survivor keeps serving.
    let cn = "after-the-crash.example.com";
    assert_success(&enroll(&urls[1], cn, &connector.mint(&claims("device-after", cn))));
}

/// A RenewalReq for `cn` (a new key) signed by `old` (certificate, key): the
/// CertRep and the new key.
fn renew(url: &str, cn: &str, old: (&[u8], &DeviceKey)) -> (CertRep, DeviceKey) {
    let client = ScepClient::new(url).unwrap();
    let ca = client.get_ca_cert().unwrap();
    let new_key = DeviceKey::generate().unwrap();
    let mut spec = CsrSpec::new(cn, None);
    spec.subject_alt_names = vec![SubjectAltName::Dns(cn.into())];
    let csr = build_csr(&new_key, &spec).unwrap();
    let request = build_pki_message(
        &MessageBody::RenewalReq(csr),
        Signer { certificate: old.0, key: old.1 },
        ca.recipient(),
        &MessageOptions::default(),
    )
    .unwrap();
    (client.transact(&request, old.1, &ca, PkiMethod::Post).unwrap(), new_key)
}

scep_tests::on_each_transport!(renewals_by_certificate_count_in_the_durable_window_across_a_restart);

fn renewals_by_certificate_count_in_the_durable_window_across_a_restart(transport: Transport) {
    let state = tempfile::tempdir().unwrap();
    let data_dir = state.path().join("data");
    let connector = Connector::generate(JwsAlg::Es256, "Microsoft Intune Certificate Connector").unwrap();
    let extra = "intune_per_device_rate_limit_24h = 1\nintune_renewal_by_certificate = true\n";
    let mut first = node_with("solo", &connector, transport, None, Some(data_dir.clone()), extra);
    let url = first.profile_url("corp");
    let cn = "renewing.example.com";
    let key = DeviceKey::generate().unwrap();
    let mut spec = CsrSpec::new(cn, Some(&connector.mint(&claims("device-renewing", cn))));
    spec.subject_alt_names = vec![SubjectAltName::Dns(cn.into())];
    let enrolled =
        ScepClient::new(&url).unwrap().enroll(&key, &spec, &MessageOptions::default(), PkiMethod::Post).unwrap().reply;
    assert_success(&enrolled);
    let cert = enrolled.issued_certificate(&key).unwrap().to_vec();
    // One renewal a day: the first is admitted.
    let (renewed, new_key) = renew(&url, cn, (&cert, &key));
    assert_success(&renewed);
    let new_cert = renewed.issued_certificate(&new_key).unwrap().to_vec();
    first.stop();

    // After a restart (empty in-memory limiter) the second renewal is still over the limit.
    let second = node_with("solo", &connector, transport, None, Some(data_dir), extra);
    let (refused, _) = renew(&second.profile_url("corp"), cn, (&new_cert, &new_key));
    assert_failure(&refused, FailInfo::BAD_REQUEST);
    let log = second.stderr();
    assert!(log.contains("rate_limited"), "refused as rate_limited:\n{}", second.log_tail(20));
}

/// `scepd migrate` brings a fresh PostgreSQL database to the current schema
/// once (a second run has nothing to do), `check-config` then connects and
/// finds it current, and an unreachable database fails both, naming the store.
#[test]
fn migrate_and_check_config_use_the_database() {
    let db = TestDatabase::create("migrate_and_check_config_use_the_database");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("scepd.toml");
    std::fs::write(
        &config,
        "[server]\ndata_dir = \"data\"\n[[profile]]\nname = \"corp\"\nchallenge_password = \"s3cret-123\"\n",
    )
    .unwrap();
    let bin = scep_tests::server::scepd_binary().unwrap();
    let run = |args: &[&str], url: &str| {
        let out = std::process::Command::new(&bin)
            .args(args)
            .arg("--config")
            .arg(&config)
            .env("CERTCTL_DATABASE_URL", url)
            .env_remove("SCEPD_CONFIG")
            .env_remove("SCEPD_DATA_DIR")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = run(&["migrate"], &db.url);
    assert_eq!(code, Some(0), "{out}\n{err}");
    let latest = scep_store::migrations::LATEST;
    assert!(out.contains(&format!("schema migrated from version 0 to {latest}")), "{out}");
    assert!(!out.contains("password"), "{out}");
    let (code, out, err) = run(&["migrate"], &db.url);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains(&format!("schema at version {latest}; nothing to migrate")), "{out}");
    let (code, out, err) = run(&["check-config"], &db.url);
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(!out.contains("store schema"), "a current schema is not listed as work to do: {out}");
    let versions: i64 = db.client().query_one("SELECT COUNT(*) FROM scepd_schema", &[]).unwrap().get(0);
    assert_eq!(versions, latest, "each migration recorded once");

    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let unreachable = format!("postgres://scepd:hunter2@127.0.0.1:{port}/scepd");
    for command in ["migrate", "check-config"] {
        let (code, out, err) = run(&[command], &unreachable);
        assert_eq!(code, Some(1), "{command}: {out}\n{err}");
        assert!(err.contains("store (PostgreSQL postgres://scepd:***@127.0.0.1"), "{command}: {err}");
        assert!(!err.contains("hunter2"), "{command} leaked the password: {err}");
    }
}

/// One admin API request with `key` on `server`: status and JSON body.
fn admin(server: &Scepd, method: &str, path: &str, body: Option<&Value>, key: &str) -> (u16, Value) {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", server.port())).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let body = body.map(Value::to_string).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

scep_tests::on_each_transport!(a_one_time_challenge_minted_on_one_node_is_consumed_once_across_nodes);

fn a_one_time_challenge_minted_on_one_node_is_consumed_once_across_nodes(transport: Transport) {
    const KEY: &str = "ha-e2e-admin-key-0123456789abcdef";
    let db = TestDatabase::create("a_one_time_challenge_is_consumed_once_across_nodes");
    let start = || {
        let mut opts = ScepdOptions::with_config(format!(
            "[[api_key]]\nname = \"ops\"\nkey = \"{KEY}\"\nrole = \"admin\"\n\n\
             [[profile]]\nname = \"otp\"\nchallenge_mode = \"one-time\"\n"
        ))
        .on(transport);
        opts.env.push(("CERTCTL_DATABASE_URL".into(), db.url.clone()));
        opts.startup_timeout = WAIT;
        Scepd::start(opts).unwrap_or_else(|e| panic!("{e}"))
    };
    let (a, b) = (start(), start());
    let body = serde_json::json!({ "profile": "otp" });
    let (status, minted) = admin(&a, "POST", "/api/v1/admin/scep/challenges", Some(&body), KEY);
    assert_eq!(status, 201, "{minted}");
    let challenge = minted["challenge"].as_str().unwrap().to_string();
    // B lists it as outstanding: one table for both nodes.
    let (status, listed) = admin(&b, "GET", "/api/v1/admin/scep/challenges", None, KEY);
    assert_eq!(status, 200, "{listed}");
    assert!(listed.to_string().contains(&format!("\"id\":{}", minted["id"])), "B lists A's challenge: {listed}");

    // Both nodes receive the challenge at once: exactly one issues.
    let (url_a, url_b) = (a.profile_url("otp"), b.profile_url("otp"));
    let replies: Vec<CertRep> = std::thread::scope(|s| {
        let handles: Vec<_> = [&url_a, &url_b, &url_a, &url_b]
            .into_iter()
            .enumerate()
            .map(|(i, url)| {
                let challenge = challenge.clone();
                s.spawn(move || enroll(url, &format!("otp-{i}.example.com"), &challenge))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let issued = replies.iter().filter(|r| r.status == PkiStatus::SUCCESS).count();
    assert_eq!(issued, 1, "{replies:?}");
    for r in replies.iter().filter(|r| r.status != PkiStatus::SUCCESS) {
        assert_failure(r, FailInfo::BAD_REQUEST);
    }
    let log = format!("{}{}", a.stderr(), b.stderr());
    assert!(log.contains("challenge_used"), "the losers were refused as challenge_used");
}
