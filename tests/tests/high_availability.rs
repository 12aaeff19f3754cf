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

    // A restarts (a new process on its data directory: empty in-memory cache): the challenge
    // is still refused.
    let data_a = a.data_dir().to_path_buf();
    a.stop();
    let a = node("node-a", &connector, transport, Some(&db.url), Some(data_a));
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
    // The shared audit table failing stays 200 too (it fails on every node
    // alike), with its own line after the store's.
    assert!(body.contains("\naudit: postgresql cannot commit: "), "{body}");
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

// ---------------------------------------------------------------------------
// The local CA's certificate index shared by the nodes (issue 18).

/// A CA and RA made once and given to every node: the "shared keys" of
/// docs/high-availability.md (each node gets its own data directory holding
/// copies of the PEM files, nothing else).
struct SharedKeys {
    dir: tempfile::TempDir,
}

impl SharedKeys {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        scep_issuers::bootstrap(dir.path(), &scep_issuers::BootstrapOptions::default()).unwrap();
        Self { dir }
    }

    /// A fresh data directory (0700) with copies (0600) of the key files.
    fn data_dir(&self) -> tempfile::TempDir {
        use std::os::unix::fs::PermissionsExt as _;
        let data = tempfile::tempdir().unwrap();
        std::fs::set_permissions(data.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        for entry in std::fs::read_dir(self.dir.path()).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "pem" || e == "key") {
                let to = data.path().join(path.file_name().unwrap());
                std::fs::copy(&path, &to).unwrap();
                std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600)).unwrap();
            }
        }
        data
    }

    fn ca_der(&self) -> Vec<u8> {
        let text = std::fs::read_to_string(self.dir.path().join("ca.pem")).unwrap();
        scep_engine::pem::certificates(&text).unwrap().remove(0)
    }

    /// The CA's id in `/pki/<ca-id>/crl`: its key identifier in hex.
    fn ca_id(&self) -> String {
        let der = self.ca_der();
        let ca = scep_engine::x509::CertificateRef::parse(&der).unwrap();
        scep_issuers::x509_build::serial_hex(&scep_issuers::x509_build::key_identifier(ca.spki.raw).unwrap())
    }
}

/// A node `name` issuing from the local CA of `data_dir` (profile `corp`,
/// static challenge), its index on the database `url`, with an admin API key.
fn ca_node(name: &str, transport: Transport, url: &str, data_dir: &std::path::Path) -> Scepd {
    ca_node_with(name, transport, url, data_dir, "")
}

/// As [`ca_node`], with `store` keys in `[store]`.
fn ca_node_with(name: &str, transport: Transport, url: &str, data_dir: &std::path::Path, store: &str) -> Scepd {
    let mut opts = ScepdOptions::with_config(format!(
        "[server]\nnode_name = \"{name}\"\n\n[store]\n{store}\n\
         [[api_key]]\nname = \"ops\"\nkey = \"{ADMIN_KEY}\"\nrole = \"admin\"\n\n\
         [[profile]]\nname = \"corp\"\nchallenge_password = \"static-secret\"\n"
    ))
    .on(transport);
    opts.env.push(("CERTCTL_DATABASE_URL".into(), url.into()));
    opts.data_dir = Some(data_dir.to_path_buf());
    opts.startup_timeout = WAIT;
    Scepd::start(opts).unwrap_or_else(|e| panic!("{e}"))
}

/// A static-challenge enrolment of a new key: (certificate, key), or the client's error.
fn try_enroll_static(url: &str, cn: &str) -> Result<(Vec<u8>, DeviceKey), ClientError> {
    let key = DeviceKey::generate().unwrap();
    let mut spec = CsrSpec::new(cn, Some("static-secret"));
    spec.subject_alt_names = vec![SubjectAltName::Dns(cn.into())];
    let rep = ScepClient::new(url).unwrap().enroll(&key, &spec, &MessageOptions::default(), PkiMethod::Post)?.reply;
    assert_success(&rep);
    let cert = rep.issued_certificate(&key).unwrap().to_vec();
    Ok((cert, key))
}

fn serial_of(cert: &[u8]) -> String {
    scep_issuers::x509_build::serial_hex(scep_engine::x509::CertificateRef::parse(cert).unwrap().serial)
}

/// `GET path` on `server`: (status, body bytes).
fn http_get_bytes(server: &Scepd, path: &str) -> (u16, Vec<u8>) {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", server.port())).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    assert!(!head.to_ascii_lowercase().contains("transfer-encoding: chunked"), "{head}");
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap();
    (status, raw[split + 4..].to_vec())
}

fn openssl_in(dir: &std::path::Path, args: &[&str]) -> String {
    let out = std::process::Command::new("openssl").args(args).current_dir(dir).output().expect("openssl");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "openssl {args:?}: {text}");
    text
}

/// A CRL's text and cRLNumber (by openssl).
fn crl_facts(dir: &std::path::Path, crl: &[u8]) -> (String, u64) {
    std::fs::write(dir.join("x.crl"), crl).unwrap();
    let text = openssl_in(dir, &["crl", "-inform", "DER", "-in", "x.crl", "-noout", "-text"]);
    let number = openssl_in(dir, &["crl", "-inform", "DER", "-in", "x.crl", "-noout", "-crlnumber"]);
    let hex = number.trim().trim_start_matches("crlNumber=").trim_start_matches("0x");
    (text, u64::from_str_radix(hex, 16).unwrap_or_else(|_| panic!("crlNumber {number:?}")))
}

/// `/pki/<ca>/crl` of `server`: (text, cRLNumber).
fn published_crl(server: &Scepd, ca_id: &str, dir: &std::path::Path) -> (String, u64) {
    let (status, der) = http_get_bytes(server, &format!("/pki/{ca_id}/crl"));
    assert_eq!(status, 200);
    crl_facts(dir, &der)
}

fn lists(crl_text: &str, serial: &str) -> bool {
    crl_text.contains(&format!("Serial Number: {}", serial.to_uppercase()))
}

/// `openssl ocsp` against `server`'s responder: the status line of `leaf`.
fn ocsp_status(server: &Scepd, dir: &std::path::Path, ca_pem: &str, leaf: &[u8]) -> String {
    std::fs::write(dir.join("ca.pem"), ca_pem).unwrap();
    std::fs::write(dir.join("leaf.pem"), scep_engine::pem::encode("CERTIFICATE", leaf)).unwrap();
    let url = format!("http://127.0.0.1:{}/pki/ocsp", server.port());
    let text = openssl_in(dir, &["ocsp", "-issuer", "ca.pem", "-cert", "leaf.pem", "-CAfile", "ca.pem", "-url", &url]);
    text.lines().find(|l| l.starts_with("leaf.pem:")).unwrap_or_default().to_string()
}

/// Polls `check` every 50 ms for at most `limit`.
fn within(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

scep_tests::on_each_transport!(two_nodes_share_the_local_ca_index);

fn two_nodes_share_the_local_ca_index(transport: Transport) {
    use std::collections::HashSet;
    use std::sync::Mutex;

    let db = TestDatabase::create("two_nodes_share_the_local_ca_index");
    let keys = SharedKeys::new();
    let (dir_a, dir_b) = (keys.data_dir(), keys.data_dir());
    let a = ca_node("node-a", transport, &db.url, dir_a.path());
    let b = ca_node("node-b", transport, &db.url, dir_b.path());
    let urls = [a.profile_url("corp"), b.profile_url("corp")];
    let ca_id = keys.ca_id();
    let ca_pem = a.ca_pem();
    assert_eq!(ca_pem, b.ca_pem());
    let scratch = tempfile::tempdir().unwrap();

    // Concurrent enrolments on both nodes: every serial distinct, every one
    // recorded and listed by both admin APIs.
    let issued: Mutex<Vec<(usize, Vec<u8>, DeviceKey)>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for worker in 0..4 {
            let (urls, issued) = (&urls, &issued);
            s.spawn(move || {
                for i in 0..6 {
                    let node = (worker + i) % 2;
                    let (cert, key) = try_enroll_static(&urls[node], &format!("d-{worker}-{i}.example.com")).unwrap();
                    issued.lock().unwrap().push((node, cert, key));
                }
            });
        }
    });
    let issued = issued.into_inner().unwrap();
    let serials: HashSet<String> = issued.iter().map(|(_, c, _)| serial_of(c)).collect();
    assert_eq!(serials.len(), 24, "every serial distinct");
    for serial in &serials {
        for server in [&a, &b] {
            let (status, body) =
                admin(server, "GET", &format!("/api/v1/admin/scep/certificates/{serial}"), None, ADMIN_KEY);
            assert_eq!(status, 200, "{serial} on node {}: {body}", server.port());
        }
    }
    for server in [&a, &b] {
        let (status, listed) = admin(server, "GET", "/api/v1/admin/scep/certificates?limit=100", None, ADMIN_KEY);
        assert_eq!(status, 200, "{listed}");
        let text = listed.to_string();
        assert!(serials.iter().all(|s| text.contains(s.as_str())), "each node lists every certificate: {text}");
    }

    // A revocation through A's admin API of a certificate B issued: B's CRL,
    // GetCRL and OCSP say so within a bounded wait.
    let (_, victim, _) = issued.iter().find(|(node, ..)| *node == 1).unwrap();
    let victim_serial = serial_of(victim);
    let (_, crl_before) = published_crl(&b, &ca_id, scratch.path());
    assert_eq!(ocsp_status(&b, scratch.path(), &ca_pem, victim), "leaf.pem: good");
    let body = serde_json::json!({ "reason": "keyCompromise" });
    let path = format!("/api/v1/admin/scep/certificates/{victim_serial}/revoke");
    let (status, answer) = admin(&a, "POST", &path, Some(&body), ADMIN_KEY);
    assert_eq!(status, 200, "{answer}");
    let seen = within(Duration::from_secs(5), || lists(&published_crl(&b, &ca_id, scratch.path()).0, &victim_serial));
    assert!(seen, "node B's /pki CRL lists A's revocation within 5 s");
    let ocsp_seen =
        within(Duration::from_secs(5), || ocsp_status(&b, scratch.path(), &ca_pem, victim).contains("revoked"));
    assert!(ocsp_seen, "node B's OCSP answers revoked within 5 s");
    // GetCRL through B, signed by a valid certificate.
    let (_, signer, signer_key) = issued.iter().find(|(_, c, _)| serial_of(c) != victim_serial).unwrap();
    let client_b = ScepClient::new(&urls[1]).unwrap();
    let ca = client_b.get_ca_cert().unwrap();
    let req = build_pki_message(
        &MessageBody::get_crl_for(signer).unwrap(),
        Signer { certificate: signer, key: signer_key },
        ca.recipient(),
        &MessageOptions::default(),
    )
    .unwrap();
    let rep = client_b.transact(&req, signer_key, &ca, PkiMethod::Post).unwrap();
    assert_eq!(rep.status, PkiStatus::SUCCESS, "{rep:?}");
    let (get_crl_text, _) = crl_facts(scratch.path(), &rep.crls[0]);
    assert!(lists(&get_crl_text, &victim_serial), "GetCRL on B lists it");

    // cRLNumbers from the two nodes increase strictly, in signing order.
    let (_, after_b) = published_crl(&b, &ca_id, scratch.path());
    assert!(after_b > crl_before);
    let (_, on_a) = published_crl(&a, &ca_id, scratch.path());
    assert!(on_a > after_b, "A signed after B: {on_a} > {after_b}");
    let (_, second_victim, _) = issued.iter().find(|(node, c, _)| *node == 0 && serial_of(c) != victim_serial).unwrap();
    let path = format!("/api/v1/admin/scep/certificates/{}/revoke", serial_of(second_victim));
    assert_eq!(admin(&b, "POST", &path, Some(&body), ADMIN_KEY).0, 200);
    let mut numbers = vec![on_a];
    for server in [&b, &a, &b, &a] {
        let n = loop {
            let (text, n) = published_crl(server, &ca_id, scratch.path());
            if lists(&text, &serial_of(second_victim)) {
                break n;
            }
            assert!(numbers.len() < 100, "no CRL listing the second revocation");
            std::thread::sleep(Duration::from_millis(100));
        };
        numbers.push(n);
    }
    // Re-signed once per node after the revocation, then served from each node's cache.
    assert!(numbers[1] > numbers[0] && numbers[2] > numbers[1], "{numbers:?}");
    assert_eq!((numbers[3], numbers[4]), (numbers[1], numbers[2]), "{numbers:?}");

    // A PKCSReq resent to B with the transactionID A issued under gets the same
    // certificate; a CertPoll of that transaction on B finds it.
    let key = DeviceKey::generate().unwrap();
    let mut spec = CsrSpec::new("resent.example.com", Some("static-secret"));
    spec.subject_alt_names = vec![SubjectAltName::Dns("resent.example.com".into())];
    let options = MessageOptions { transaction_id: Some("ha-resend-1".into()), ..MessageOptions::default() };
    let first = ScepClient::new(&urls[0]).unwrap().enroll(&key, &spec, &options, PkiMethod::Post).unwrap();
    assert_success(&first.reply);
    let resent = client_b.enroll(&key, &spec, &options, PkiMethod::Post).unwrap();
    assert_success(&resent.reply);
    let original = first.reply.issued_certificate(&key).unwrap();
    assert_eq!(resent.reply.issued_certificate(&key).unwrap(), original, "B answers A's certificate");
    let subject = scep_engine::x509::CertificateRef::parse(&first.self_signed).unwrap().subject.to_vec();
    let poll = build_pki_message(
        &MessageBody::cert_poll(&ca.certificates[ca.ca_index], subject).unwrap(),
        Signer { certificate: &first.self_signed, key: &key },
        ca.recipient(),
        &options,
    )
    .unwrap();
    let polled = client_b.transact(&poll, &key, &ca, PkiMethod::Post).unwrap();
    assert_success(&polled);
    assert_eq!(polled.issued_certificate(&key).unwrap(), original, "CertPoll on B finds A's certificate");
}

scep_tests::on_each_transport!(kill_9_of_one_node_under_load_loses_no_acknowledged_certificate);

fn kill_9_of_one_node_under_load_loses_no_acknowledged_certificate(transport: Transport) {
    use std::collections::HashSet;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    let db = TestDatabase::create("kill_9_loses_no_acknowledged_certificate");
    let keys = SharedKeys::new();
    let (dir_a, dir_b) = (keys.data_dir(), keys.data_dir());
    let mut a = ca_node("node-a", transport, &db.url, dir_a.path());
    let b = ca_node("node-b", transport, &db.url, dir_b.path());
    let urls = [a.profile_url("corp"), b.profile_url("corp")];
    // (node, serial) of every enrolment a client saw acknowledged.
    let acknowledged: Mutex<Vec<(usize, String)>> = Mutex::new(Vec::new());
    let killed = AtomicBool::new(false);
    let sent = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for worker in 0..4 {
            let (urls, acknowledged, killed, sent) = (&urls, &acknowledged, &killed, &sent);
            s.spawn(move || {
                // Bounded: at most 12 enrolments per worker.
                for i in 0..12 {
                    let n = sent.fetch_add(1, Ordering::SeqCst);
                    let key = DeviceKey::generate().unwrap();
                    let cn = format!("k-{worker}-{i}.example.com");
                    let spec = CsrSpec::new(&cn, Some("static-secret"));
                    let client = ScepClient::new(&urls[n % 2]).unwrap();
                    if let Ok(e) = client.enroll(&key, &spec, &MessageOptions::default(), PkiMethod::Post)
                        && let Some(cert) = e.reply.issued_certificate(&key)
                    {
                        acknowledged.lock().unwrap().push((n % 2, serial_of(cert)));
                    }
                    if killed.load(Ordering::SeqCst) && i >= 10 {
                        break;
                    }
                }
            });
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while sent.load(Ordering::SeqCst) < 16 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        a.signal(Signal::Kill).unwrap();
        killed.store(true, Ordering::SeqCst);
    });
    assert!(a.wait_exit(Duration::from_secs(10)).is_some(), "node A is gone");
    let acknowledged = acknowledged.into_inner().unwrap();
    let on_a = acknowledged.iter().filter(|(node, _)| *node == 0).count();
    assert!(on_a >= 4, "too few enrolments acknowledged by A before the kill: {on_a}");
    let distinct: HashSet<&String> = acknowledged.iter().map(|(_, s)| s).collect();
    assert_eq!(distinct.len(), acknowledged.len(), "no serial repeats");
    for (node, serial) in &acknowledged {
        let (status, body) = admin(&b, "GET", &format!("/api/v1/admin/scep/certificates/{serial}"), None, ADMIN_KEY);
        assert_eq!(status, 200, "certificate {serial} acknowledged by node {node} has no record: {body}");
    }
    // ... and its audit event in the shared trail, naming the node that answered.
    let events = static_events(&b);
    let audited = |serial: &str, outcome: &str| {
        events
            .iter()
            .find(|e| e["serial"].as_str().is_some_and(|s| same_serial(s, serial)) && e["outcome"] == outcome)
            .cloned()
    };
    for (node, serial) in &acknowledged {
        let event = audited(serial, "success")
            .unwrap_or_else(|| panic!("certificate {serial} acknowledged by node {node} has no audit event"));
        assert_eq!(event["node"], ["node-a", "node-b"][*node], "{event}");
    }
    try_enroll_static(&urls[1], "after-the-crash.example.com").unwrap();

    // Node A comes back: its start-up reconciliation explains the certificates
    // it recorded but never answered, and only those: B's, which may be
    // between their record and their event at that moment, are not A's to
    // explain (the shared index names the node that recorded each row).
    let mut restarted = ca_node("node-a", transport, &db.url, dir_a.path());
    let undelivered: Vec<Value> =
        static_events(&restarted).into_iter().filter(|e| e["outcome"] == "issued_not_delivered").collect();
    for e in &undelivered {
        assert_eq!(e["node"], "node-a", "only A's own certificates are reconciled by A: {e}");
        let serial = e["serial"].as_str().unwrap();
        assert!(
            !acknowledged.iter().any(|(_, s)| same_serial(s, serial)),
            "an acknowledged certificate is not undelivered: {e}"
        );
    }
    // Every certificate in the index is explained by the trail.
    let (status, body) = admin(&restarted, "GET", "/api/v1/admin/scep/certificates?limit=1000", None, ADMIN_KEY);
    assert_eq!(status, 200, "{body}");
    let all = static_events(&restarted);
    for c in body["certificates"].as_array().unwrap() {
        let serial = c["serial"].as_str().unwrap();
        assert!(
            all.iter().any(|e| e["serial"].as_str().is_some_and(|s| same_serial(s, serial))),
            "certificate {serial} has no audit event after A's restart: {c}"
        );
    }
    restarted.signal(Signal::Term).unwrap();
    assert!(restarted.wait_exit(Duration::from_secs(10)).is_some());
}

/// Whether two hex serials name one number (case and leading zero bytes aside).
fn same_serial(a: &str, b: &str) -> bool {
    let key = |s: &str| s.to_ascii_lowercase().trim_start_matches("00").to_string();
    key(a) == key(b)
}

/// Every PKCSReq event in the trail `server` shows (both nodes' on PostgreSQL).
fn static_events(server: &Scepd) -> Vec<Value> {
    let (status, body) =
        admin(server, "GET", "/api/v1/admin/scep/events?action=scep_pkcsreq&limit=1000", None, ADMIN_KEY);
    assert_eq!(status, 200, "{body}");
    body["events"].as_array().unwrap().clone()
}

scep_tests::on_each_transport!(a_pool_of_one_connection_serves_enrolments_and_the_audit_trail);

/// The audit writer holds its connection for good, outside the node's pool:
/// with `pool_size = 1` the one pooled connection stays free for the
/// certificate index, so the node starts (its reconciliation reads the index
/// while the writer has its own connection), enrols and audits.
fn a_pool_of_one_connection_serves_enrolments_and_the_audit_trail(transport: Transport) {
    let db = TestDatabase::create("a_pool_of_one_connection");
    let keys = SharedKeys::new();
    let dir = keys.data_dir();
    let mut server = ca_node_with("node-1", transport, &db.url, dir.path(), "pool_size = 1\nconnect_timeout_secs = 2");
    let url = server.profile_url("corp");
    let serials: Vec<String> =
        (0..3).map(|i| serial_of(&try_enroll_static(&url, &format!("one-{i}.example.com")).unwrap().0)).collect();
    let events = static_events(&server);
    for serial in &serials {
        assert!(
            events
                .iter()
                .any(|e| e["outcome"] == "success" && e["serial"].as_str().is_some_and(|s| same_serial(s, serial))),
            "certificate {serial} has no audit event: {events:?}"
        );
    }
    // A restart reconciles with the writer holding its own connection.
    server.signal(Signal::Term).unwrap();
    assert!(server.wait_exit(Duration::from_secs(10)).is_some());
    let restarted = ca_node_with("node-1", transport, &db.url, dir.path(), "pool_size = 1\nconnect_timeout_secs = 2");
    try_enroll_static(&restarted.profile_url("corp"), "one-after.example.com").unwrap();
}

scep_tests::on_each_transport!(the_index_database_stopped_gives_503s_then_recovers);

/// Static-challenge enrolments need only the certificate index: with its
/// database stopped they are answered 503 (`store_unavailable`), never a
/// certificate without its record; discovery keeps answering; they succeed
/// again within seconds of its return.
fn the_index_database_stopped_gives_503s_then_recovers(transport: Transport) {
    let cluster = TestCluster::start("the_index_database_stopped_gives_503s_then_recovers");
    let db = TestDatabase::create_on(&cluster.url, "index_outage");
    let keys = SharedKeys::new();
    let dir = keys.data_dir();
    let mut server = ca_node("node-1", transport, &db.url, dir.path());
    let url = server.profile_url("corp");
    try_enroll_static(&url, "before.example.com").unwrap();
    cluster.stop();
    for i in 0..3 {
        match try_enroll_static(&url, &format!("during-{i}.example.com")) {
            // The body names the first failure, not the audit log's that follows.
            Err(ClientError::Http(m)) if m.starts_with("status 503: service unavailable: the issuer's store") => {}
            other => panic!("enrolment {i} during the outage: {:?}", other.map(|(c, _)| serial_of(&c))),
        }
    }
    let client = ScepClient::new(&url).unwrap();
    assert!(client.get_ca_caps().is_ok() && client.get_ca_cert().is_ok(), "discovery keeps answering");
    assert!(server.is_running(), "no panic, no exit");
    cluster.restart();
    let back = Instant::now();
    let mut i = 0;
    while let Err(e) = try_enroll_static(&url, &format!("after-{i}.example.com")) {
        assert!(back.elapsed() < Duration::from_secs(10), "not recovered after 10 s: {e:?}");
        i += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = server.stderr();
    assert!(!log.contains("panicked"), "{log}");
    assert!(log.contains("store_unavailable"), "the refusals carry their label");
    let records: i64 = db.client().query_one("SELECT COUNT(*) FROM ca_certificates", &[]).unwrap().get(0);
    assert_eq!(records, 2, "nothing was recorded (or issued) during the outage");
}

scep_tests::on_each_transport!(a_configured_local_issuer_serves_the_same_ca_on_both_nodes);

/// `[[issuer]] type = "local"` with given CA files (the same on both nodes):
/// a profile on it enrols on both, both publish the same CA, and both record
/// into the one shared index (no SQLite file in either data directory).
fn a_configured_local_issuer_serves_the_same_ca_on_both_nodes(transport: Transport) {
    let db = TestDatabase::create("a_configured_local_issuer_serves_the_same_ca");
    let keys = SharedKeys::new();
    let k = keys.dir.path();
    let config = format!(
        "[[issuer]]\nid = \"corp-ca\"\ntype = \"local\"\nca_cert = \"{ca}\"\nca_key = \"{key}\"\n\n\
         [[profile]]\nname = \"corp\"\nissuer = \"corp-ca\"\nchallenge_password = \"static-secret\"\n\
         ra_cert = \"{ra}\"\nra_key = \"{ra_key}\"\n",
        ca = k.join("ca.pem").display(),
        key = k.join("ca.key").display(),
        ra = k.join("ra.pem").display(),
        ra_key = k.join("ra.key").display(),
    );
    let start = || {
        let mut opts = ScepdOptions::with_config(config.clone()).on(transport);
        opts.env.push(("CERTCTL_DATABASE_URL".into(), db.url.clone()));
        opts.startup_timeout = WAIT;
        Scepd::start(opts).unwrap_or_else(|e| panic!("{e}"))
    };
    let (a, b) = (start(), start());
    let ca = keys.ca_der();
    let mut serials = Vec::new();
    for server in [&a, &b] {
        let url = server.profile_url("corp");
        let published = ScepClient::new(&url).unwrap().get_ca_cert().unwrap();
        assert_eq!(published.certificates[published.ca_index], ca, "node {} publishes the given CA", server.port());
        let (cert, _) = try_enroll_static(&url, "configured.example.com").unwrap();
        let parsed = scep_engine::x509::CertificateRef::parse(&cert).unwrap();
        assert_eq!(parsed.issuer, scep_engine::x509::CertificateRef::parse(&ca).unwrap().subject);
        serials.push(serial_of(&cert));
        assert!(!server.data_dir().join("local-ca-corp-ca.sqlite").exists(), "the index is the shared store");
    }
    let rows = db
        .client()
        .query("SELECT serial, ca_id FROM ca_certificates ORDER BY id", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get::<_, String>(0), r.get::<_, String>(1)))
        .collect::<Vec<_>>();
    assert_eq!(rows.iter().map(|(s, _)| s.clone()).collect::<Vec<_>>(), serials, "both recorded in one index");
    assert!(rows.iter().all(|(_, id)| *id == keys.ca_id()), "under the one CA: {rows:?}");
}

// ---------------------------------------------------------------------------
// A database that restarts, stops or falls silent under an idle node.

/// A node `solo` on the database `url`, its stores' `[store]` keys `store`:
/// profile `corp` (static challenge) and `otp` (one-time challenges), both on
/// the built-in local CA, whose index is in the database; the admin API key
/// [`ADMIN_KEY`].
fn two_profile_node(transport: Transport, url: &str, store: &str) -> Scepd {
    let mut opts = ScepdOptions::with_config(format!(
        "[server]\nnode_name = \"solo\"\n\n[store]\n{store}\n\
         [[api_key]]\nname = \"ops\"\nkey = \"{ADMIN_KEY}\"\nrole = \"admin\"\n\n\
         [[profile]]\nname = \"corp\"\nchallenge_password = \"static-secret\"\n\n\
         [[profile]]\nname = \"otp\"\nchallenge_mode = \"one-time\"\n"
    ))
    .on(transport);
    opts.env.push(("CERTCTL_DATABASE_URL".into(), url.into()));
    opts.startup_timeout = WAIT;
    Scepd::start(opts).unwrap_or_else(|e| panic!("{e}"))
}

/// A one-time challenge for profile `otp`, minted through the admin API.
fn mint_otp(server: &Scepd) -> Result<String, (u16, Value)> {
    let (status, minted) = admin(
        server,
        "POST",
        "/api/v1/admin/scep/challenges",
        Some(&serde_json::json!({ "profile": "otp" })),
        ADMIN_KEY,
    );
    match minted["challenge"].as_str() {
        Some(c) if status == 201 => Ok(c.to_string()),
        _ => Err((status, minted)),
    }
}

/// The `/healthz` body's `store:` line.
fn store_line(server: &Scepd) -> String {
    let (status, body) = http_get(server, "/healthz");
    assert_eq!(status, 200, "{body}");
    body.lines().find(|l| l.starts_with("store: ")).unwrap_or_default().to_string()
}

scep_tests::on_each_transport!(a_database_restart_fails_no_request_on_an_idle_node);

/// After a restart of the database, an idle node answers every request
/// (none fails on a pooled connection, or the audit writer's, that the
/// restart closed) and `/healthz` says "reachable" at once, though no
/// enrolment came first. A probe saw the first `pool_size`
/// requests answered 503 and `/healthz` say "connection closed" for minutes.
fn a_database_restart_fails_no_request_on_an_idle_node(transport: Transport) {
    let cluster = TestCluster::start("a_database_restart_fails_no_request_on_an_idle_node");
    let db = TestDatabase::create_on(&cluster.url, "restart");
    let server = two_profile_node(transport, &db.url, "");
    let url = server.profile_url("corp");
    // Warm: several connections open at once, then idle.
    std::thread::scope(|s| {
        for i in 0..6 {
            let url = &url;
            s.spawn(move || try_enroll_static(url, &format!("warm-{i}.example.com")).unwrap());
        }
        s.spawn(|| assert_eq!(admin(&server, "GET", "/api/v1/admin/scep/certificates", None, ADMIN_KEY).0, 200));
    });
    assert_eq!(store_line(&server), "store: postgresql reachable");
    std::thread::sleep(Duration::from_millis(1_500));

    cluster.stop();
    cluster.restart();
    // Nothing reached the node since: its first answers must all succeed.
    assert_eq!(store_line(&server), "store: postgresql reachable", "the first /healthz after the restart");
    let (status, body) = admin(&server, "GET", "/api/v1/admin/scep/certificates", None, ADMIN_KEY);
    assert_eq!(status, 200, "certificate list after the restart: {body}");
    let (status, body) = admin(&server, "GET", "/api/v1/admin/scep/events?limit=5", None, ADMIN_KEY);
    assert_eq!(status, 200, "audit trail after the restart: {body}");
    let challenge = mint_otp(&server).unwrap_or_else(|e| panic!("minting after the restart: {e:?}"));
    assert_success(&enroll(&server.profile_url("otp"), "otp.example.com", &challenge));
    for i in 0..10 {
        if let Err(e) = try_enroll_static(&url, &format!("after-{i}.example.com")) {
            panic!("enrolment {i} after the restart: {e:?}");
        }
    }
    assert!(!server.stderr().contains("panicked"));
}

scep_tests::on_each_transport!(an_outage_answers_503s_that_name_what_failed);

/// With the database stopped, an enrolment's audit event cannot commit (the
/// audit log is in the same database), so the answer is 503, never a signed
/// CertRep; its body names what failed first: the issuer's store for a
/// static-challenge enrolment on the local CA, the one-time challenge store
/// for a one-time challenge (docs/high-availability.md). A probe saw 1,603
/// of 1,604 such 503s say "the audit log cannot record this request".
fn an_outage_answers_503s_that_name_what_failed(transport: Transport) {
    let cluster = TestCluster::start("an_outage_answers_503s_that_name_what_failed");
    let db = TestDatabase::create_on(&cluster.url, "outage_bodies");
    let server = two_profile_node(transport, &db.url, "connect_timeout_secs = 2");
    let challenge = mint_otp(&server).unwrap();
    cluster.stop();
    match try_enroll_static(&server.profile_url("corp"), "static.example.com") {
        Err(ClientError::Http(m)) => {
            assert!(m.starts_with("status 503: service unavailable: the issuer's store cannot be reached"), "{m}");
        }
        other => panic!("static enrolment during the outage: {:?}", other.map(|(c, _)| serial_of(&c))),
    }
    match try_enroll(&server.profile_url("otp"), "otp.example.com", &challenge) {
        Err(ClientError::Http(m)) => {
            let expected = "status 503: service unavailable: the one-time challenge store cannot be reached";
            assert!(m.starts_with(expected), "{m}");
        }
        other => panic!("one-time challenge enrolment during the outage: {other:?}"),
    }
    assert!(matches!(mint_otp(&server), Err((503, _))), "minting during the outage");
    cluster.restart();
    // The challenge was not consumed: it works once the database is back.
    let back = Instant::now();
    while let Err(e) = try_enroll(&server.profile_url("otp"), "otp.example.com", &challenge) {
        assert!(back.elapsed() < Duration::from_secs(10), "not recovered after 10 s: {e:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

scep_tests::on_each_transport!(a_silent_database_holds_up_neither_healthz_nor_an_idle_nodes_enrolments);

/// A database that stops answering without closing its connections (its
/// processes stopped: a frozen server, a partition without a reset).
/// `/healthz` answers within about 1.5 s (200, `store: postgresql
/// unreachable: ... has not answered for N s`), so a balancer keeps the node;
/// on a node that was idle, an enrolment is answered 503 within its bounds
/// (validation, connect timeout) instead of waiting for the database. A
/// probe saw `/healthz` and enrolments wait 80 s, as long as the database was
/// stopped.
fn a_silent_database_holds_up_neither_healthz_nor_an_idle_nodes_enrolments(transport: Transport) {
    let cluster = TestCluster::start("a_silent_database_holds_up_neither_healthz_nor_an_idle_nodes_enrolments");
    let db = TestDatabase::create_on(&cluster.url, "silent");
    let server = two_profile_node(transport, &db.url, "connect_timeout_secs = 2");
    let url = server.profile_url("corp");
    try_enroll_static(&url, "before.example.com").unwrap();
    assert_eq!(store_line(&server), "store: postgresql reachable");
    // Idle: the discovery tally of that enrolment written, every connection unused.
    std::thread::sleep(Duration::from_millis(2_500));

    let paused = cluster.pause();
    for attempt in 0..2 {
        let asked = Instant::now();
        let line = store_line(&server);
        let took = asked.elapsed();
        assert!(took < Duration::from_secs(3), "/healthz {attempt} took {took:?}");
        assert!(line.starts_with("store: postgresql unreachable: "), "{line}");
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let enrolling = url.clone();
    std::thread::spawn(move || {
        let asked = Instant::now();
        let answer = try_enroll_static(&enrolling, "silent.example.com").map(|_| ());
        let _ = tx.send((answer, asked.elapsed()));
    });
    let (answer, took) = rx.recv_timeout(Duration::from_secs(30)).expect("the enrolment still waits after 30 s");
    match answer {
        Err(ClientError::Http(m)) => assert!(m.starts_with("status 503"), "{m}"),
        other => panic!("enrolment while the database is silent: {other:?}"),
    }
    assert!(took < Duration::from_secs(15), "the enrolment was answered after {took:?}");
    let client = ScepClient::new(&url).unwrap();
    assert!(client.get_ca_caps().is_ok() && client.get_ca_cert().is_ok(), "discovery keeps answering");

    drop(paused);
    let back = Instant::now();
    while store_line(&server) != "store: postgresql reachable" {
        assert!(back.elapsed() < Duration::from_secs(10), "/healthz still unreachable 10 s after the return");
        std::thread::sleep(Duration::from_millis(200));
    }
    while let Err(e) = try_enroll_static(&url, "after.example.com") {
        assert!(back.elapsed() < Duration::from_secs(20), "not recovered 20 s after the return: {e:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(!server.stderr().contains("panicked"));
}

/// The data directory on PostgreSQL: no lock (two nodes may serve from one
/// key directory), and a node without the CA files on a database that holds
/// the built-in CA's certificates creates no CA of its own: it refuses,
/// naming the shared index, the count and the CA (certificates of a
/// configured `[[issuer]] type = "local"` CA are that CA's and not named),
/// and writes no CA file.
#[test]
fn a_node_without_the_ca_files_creates_no_ca_over_the_shared_index() {
    let db = TestDatabase::create("a_node_without_the_ca_files_creates_no_ca");
    let keys = SharedKeys::new();
    let shared = keys.data_dir();
    let a = ca_node("node-a", Transport::Tokio, &db.url, shared.path());
    let b = ca_node("node-b", Transport::Tokio, &db.url, shared.path());
    assert!(!shared.path().join("scepd.lock").exists(), "no lock on PostgreSQL");
    try_enroll_static(&a.profile_url("corp"), "on-a.example.com").unwrap();
    try_enroll_static(&b.profile_url("corp"), "on-b.example.com").unwrap();

    // A configured local CA of its own records into the same tables.
    let other = SharedKeys::new();
    let o = other.dir.path();
    let issuer = format!(
        "[[issuer]]\nid = \"corp-ca\"\ntype = \"local\"\nca_cert = \"{}\"\nca_key = \"{}\"\n\n",
        o.join("ca.pem").display(),
        o.join("ca.key").display()
    );
    let start = |profile: &str, data_dir: &std::path::Path| {
        let mut opts = ScepdOptions::with_config(format!(
            "{issuer}[[profile]]\nname = \"corp\"\nchallenge_password = \"static-secret\"\n{profile}"
        ));
        opts.env.push(("CERTCTL_DATABASE_URL".into(), db.url.clone()));
        opts.data_dir = Some(data_dir.to_path_buf());
        opts.startup_timeout = WAIT;
        Scepd::start(opts)
    };
    let configured_dir = tempfile::tempdir().unwrap();
    let ra = format!(
        "issuer = \"corp-ca\"\nra_cert = \"{}\"\nra_key = \"{}\"\n",
        o.join("ra.pem").display(),
        o.join("ra.key").display()
    );
    let c = start(&ra, configured_dir.path()).unwrap_or_else(|e| panic!("{e}"));
    try_enroll_static(&c.profile_url("corp"), "on-corp-ca.example.com").unwrap();

    // A new node, its data directory empty, the built-in CA for its profile.
    let empty = tempfile::tempdir().unwrap();
    let started = Instant::now();
    match start("", empty.path()) {
        Err(scep_tests::server::ScepdError::Startup { stderr, exit, .. }) => {
            assert!(exit.is_some_and(|s| !s.success()), "{stderr}");
            assert!(started.elapsed() < WAIT, "{stderr}");
            assert!(
                stderr.contains(
                    "there is no CA (ca.pem and ca.key are missing), but the certificate index in the store (PostgreSQL"
                ) && stderr.contains(&format!("holds 2 certificate(s) issued by CA {} (CN=scepd CA ", keys.ca_id()))
                    && stderr.contains("restore ca.pem and ca.key from backup"),
                "{stderr}"
            );
            assert!(!stderr.contains(&other.ca_id()), "the configured CA's certificates are named:\n{stderr}");
        }
        Err(e) => panic!("unexpected error: {e}"),
        Ok(server) => panic!("a node created a CA of its own over the shared index:\n{}", server.log_tail(20)),
    }
    assert!(!empty.path().join("ca.pem").exists() && !empty.path().join("ca.key").exists());
}
