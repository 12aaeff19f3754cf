//! The audit log's contract (issue 18), run against both backends: SQLite
//! (`audit.db` in a temporary directory) and the shared PostgreSQL store on
//! the cluster named by `SCEPD_TEST_DATABASE_URL` (`.ci/run` starts one;
//! without it the PostgreSQL half FAILS naming the install command).
//!
//! "Two nodes" are two `AuditLog`s opened on one database with different
//! node names: two writers on one SQLite file, or two PostgreSQL pools.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use futures_lite::future::block_on;
use scep_engine::{Operation, Outcome, UnixTime};
use scep_service::store::audit::{AuditEvent, AuditLog, AuditQuery, DiscoveryAnswer, MAX_QUERY_LIMIT};
use scep_store::{Backend, PostgresSettings, StoreSettings};
use scep_tests::database::{TestCluster, TestDatabase};

/// Where one test's audit log lives.
enum Place {
    Sqlite(tempfile::TempDir),
    Postgres(TestDatabase),
}

fn pg_settings(url: &str) -> PostgresSettings {
    PostgresSettings {
        url: url.to_string(),
        tls_ca_bundle: None,
        pool_size: 4,
        connect_timeout: Duration::from_secs(2),
    }
}

/// Migrates `url`'s database and opens the audit log of node `node` on it.
fn open_pg(url: &str, retention_days: i64, node: &str) -> AuditLog {
    let settings = StoreSettings { backend: Backend::Postgres(pg_settings(url)) };
    let dir = tempfile::tempdir().unwrap();
    scep_store::migrate(&settings, dir.path()).unwrap();
    let pool = scep_store::postgres::Pool::new(&pg_settings(url)).unwrap();
    AuditLog::open_postgres(Arc::new(pool), retention_days, node).unwrap()
}

impl Place {
    fn new(postgres: bool, test: &str) -> Self {
        if postgres { Self::Postgres(TestDatabase::create(test)) } else { Self::Sqlite(tempfile::tempdir().unwrap()) }
    }

    /// The log of node `node` (a new handle and writer each call).
    fn open(&self, retention_days: i64, node: &str) -> AuditLog {
        match self {
            Self::Sqlite(dir) => AuditLog::open(&dir.path().join("audit.db"), retention_days, node).unwrap(),
            Self::Postgres(db) => open_pg(&db.url, retention_days, node),
        }
    }
}

/// Runs `$body(postgres: bool, test name)` once per backend.
macro_rules! on_both_backends {
    ($name:ident) => {
        mod $name {
            #[test]
            fn sqlite() {
                super::$name(false, concat!(stringify!($name), "_sqlite"));
            }
            #[test]
            fn postgres() {
                super::$name(true, concat!(stringify!($name), "_postgres"));
            }
        }
    };
}

fn event(profile: &str, action: &str, outcome: &str) -> AuditEvent {
    AuditEvent {
        time: UnixTime::now().to_rfc3339(),
        time_unix: UnixTime::now().secs(),
        profile: profile.into(),
        action: action.into(),
        operation: "PKIOperation".into(),
        outcome: outcome.into(),
        http_status: 200,
        subject_alt_names: vec!["DNS:a.example".into()],
        route: "scep".into(),
        ..AuditEvent::default()
    }
}

fn all() -> AuditQuery {
    AuditQuery { limit: MAX_QUERY_LIMIT, ..AuditQuery::default() }
}

fn ids(log: &AuditLog, q: AuditQuery) -> Vec<i64> {
    block_on(log.query(q)).unwrap().iter().map(|e| e.id).collect()
}

on_both_backends!(two_nodes_see_the_same_events_in_the_same_order_and_filter_alike);

fn two_nodes_see_the_same_events_in_the_same_order_and_filter_alike(postgres: bool, test: &str) {
    let place = Place::new(postgres, test);
    let (a, b) = (place.open(30, "node-a"), place.open(30, "node-b"));
    let rec = |log: &AuditLog, p: &str, act: &str, o: &str| block_on(log.record(event(p, act, o))).unwrap();
    let e1 = rec(&a, "corp", "scep_pkcsreq_intune", "success");
    let e2 = rec(&b, "corp", "scep_pkcsreq_intune", "signature_invalid");
    let e3 = rec(&a, "iot", "scep_renewalreq_intune", "replay");
    let e4 = rec(&b, "corp", "scep_pkcsreq", "bad_challenge");
    let mut with_serial = event("iot", "scep_renewalreq", "success");
    with_serial.serial = Some("0abc".into());
    with_serial.renewal_of = Some("0123".into());
    let e5 = block_on(b.record(with_serial)).unwrap();
    assert!(e1 < e2 && e2 < e3 && e3 < e4 && e4 < e5, "ids increase across nodes");

    // Both nodes list every event, newest first, each naming the node that wrote it.
    let from_a = block_on(a.query(all())).unwrap();
    let from_b = block_on(b.query(all())).unwrap();
    assert_eq!(from_a, from_b, "one trail");
    assert_eq!(from_a.iter().map(|e| e.id).collect::<Vec<_>>(), [e5, e4, e3, e2, e1]);
    let nodes: Vec<&str> = from_a.iter().map(|e| e.node.as_str()).collect();
    assert_eq!(nodes, ["node-b", "node-b", "node-a", "node-b", "node-a"]);
    assert_eq!(from_a[4].subject_alt_names, ["DNS:a.example"]);
    assert_eq!((from_a[4].count, from_a[4].first_time.as_deref()), (1, None));

    let list = |v: &[&str]| v.iter().map(|s| (*s).to_string()).collect::<Vec<_>>();
    let intune = list(&["scep_pkcsreq_intune", "scep_renewalreq_intune"]);
    for log in [&a, &b] {
        assert_eq!(ids(log, AuditQuery { action: intune.clone(), ..all() }), [e3, e2, e1]);
        assert_eq!(ids(log, AuditQuery { profile: list(&["iot"]), ..all() }), [e5, e3]);
        assert_eq!(ids(log, AuditQuery { outcome: list(&["replay", "bad_challenge", "x"]), ..all() }), [e4, e3]);
        assert_eq!(ids(log, AuditQuery { exclude_outcome: list(&["success"]), ..all() }), [e4, e3, e2]);
        let failures = AuditQuery { action: intune.clone(), exclude_outcome: list(&["success"]), ..all() };
        assert_eq!(ids(log, AuditQuery { limit: 1, ..failures.clone() }), [e3]);
        assert_eq!(ids(log, AuditQuery { before_id: Some(e3), ..failures.clone() }), [e2]);
        assert_eq!(ids(log, AuditQuery { certificate: Some("0abc".into()), ..all() }), [e5]);
        assert_eq!(ids(log, AuditQuery { certificate: Some("0123".into()), ..all() }), [e5]);
        assert!(ids(log, AuditQuery { action: list(&["scep_pkcsreq%"]), ..all() }).is_empty(), "matched whole");
        let newest = from_a[0].time_unix;
        assert_eq!(ids(log, AuditQuery { since: Some(from_a[4].time_unix), ..all() }).len(), 5, "since inclusive");
        assert!(ids(log, AuditQuery { since: Some(newest + 1), ..all() }).is_empty());
    }
}

on_both_backends!(hourly_activity_counts_enrolments_and_failures_of_every_node);

fn hourly_activity_counts_enrolments_and_failures_of_every_node(postgres: bool, test: &str) {
    let place = Place::new(postgres, test);
    let (a, b) = (place.open(30, "node-a"), place.open(30, "node-b"));
    let at = |hours_ago: i64, mut e: AuditEvent| {
        e.time_unix = UnixTime::now().secs() - hours_ago * 3600;
        e
    };
    let issued = |serial: &str| AuditEvent { serial: Some(serial.into()), ..event("corp", "scep_pkcsreq", "success") };
    for (log, e) in [
        (&a, at(2, issued("01"))),
        (&b, at(2, issued("02"))),
        (&b, at(2, event("corp", "scep_pkcsreq_intune", "replay"))),
        (&a, at(2, event("corp", "scep_pkcsreq", "pending"))),
        (&a, at(0, issued("03"))),
        (&b, at(0, event("corp", "scep_getcacaps", "success"))),
        (&a, at(30, issued("04"))),
    ] {
        block_on(log.record(e)).unwrap();
    }
    let since = UnixTime::now().secs() - 24 * 3600;
    let hours = block_on(b.hourly(since)).unwrap();
    assert_eq!(hours, block_on(a.hourly(since)).unwrap());
    assert_eq!(hours.len(), 2, "{hours:?}");
    assert_eq!((hours[0].enrolments, hours[0].failures), (2, 1), "pending is neither");
    assert_eq!((hours[1].enrolments, hours[1].failures), (1, 0), "discovery is not an enrolment");
    assert!(hours[0].hour_unix < hours[1].hour_unix && hours[0].hour_unix % 3600 == 0);
}

on_both_backends!(retention_deletes_old_events_also_when_several_nodes_apply_it_at_once);

fn retention_deletes_old_events_also_when_several_nodes_apply_it_at_once(postgres: bool, test: &str) {
    let place = Place::new(postgres, test);
    {
        let log = place.open(36_500, "node-a");
        for i in 0..120 {
            let mut old = event("corp", "scep_getcacert", "success");
            old.time_unix -= (31 + i) * 86_400;
            block_on(log.record(old)).unwrap();
        }
        block_on(log.record(event("corp", "scep_getcacert", "success"))).unwrap();
        assert_eq!(block_on(log.query(all())).unwrap().len(), 121);
    }
    // Three nodes start at once with a 30-day retention: each deletes what is left to delete.
    let logs: Vec<AuditLog> = std::thread::scope(|s| {
        let handles: Vec<_> = ["node-a", "node-b", "node-c"]
            .map(|n| {
                s.spawn({
                    let place = &place;
                    move || place.open(30, n)
                })
            })
            .into();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for log in &logs {
        let left = block_on(log.query(all())).unwrap();
        assert_eq!(left.len(), 1, "only the recent event stays");
    }
}

fn caps_outcome() -> Outcome {
    Outcome { profile: "corp".into(), operation: Some(Operation::GetCaCaps), label: "success", ..Outcome::default() }
}

on_both_backends!(discovery_tallies_of_two_nodes_add_up);

fn discovery_tallies_of_two_nodes_add_up(postgres: bool, test: &str) {
    let place = Place::new(postgres, test);
    let (a, b) = (place.open(30, "node-a"), place.open(30, "node-b"));
    let outcome = caps_outcome();
    let now = UnixTime::now();
    let answer = |client: &str| DiscoveryAnswer {
        outcome: &outcome,
        profile: "corp",
        operation: "GetCACaps",
        http_status: 200,
        route: "scep",
        client: Some(client.parse().unwrap()),
        now,
    };
    for i in 0..300u16 {
        a.tally(&answer(&format!("192.0.2.1:{}", 1024 + i)));
    }
    for _ in 0..200 {
        b.tally(&answer("192.0.2.1:9"));
    }
    block_on(a.flush()).unwrap();
    block_on(b.flush()).unwrap();
    let rows = block_on(a.query(all())).unwrap();
    assert_eq!(rows, block_on(b.query(all())).unwrap());
    let mut per_node: Vec<(String, u64)> = rows.iter().map(|r| (r.node.clone(), r.count)).collect();
    per_node.sort();
    assert_eq!(per_node, [("node-a".to_string(), 300), ("node-b".to_string(), 200)]);
    assert!(rows.iter().all(|r| r.client_addr.as_deref() == Some("192.0.2.1") && r.first_time.is_some()));
    assert_eq!(rows.iter().map(|r| r.count).sum::<u64>(), 500, "every answer of every node counted");
}

on_both_backends!(concurrent_records_of_two_nodes_are_batched_and_all_durable);

fn concurrent_records_of_two_nodes_are_batched_and_all_durable(postgres: bool, test: &str) {
    let place = Place::new(postgres, test);
    let logs = [place.open(30, "node-a"), place.open(30, "node-b")];
    let started = std::time::Instant::now();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let log = logs[t % 2].clone();
            std::thread::spawn(move || {
                (0..50)
                    .map(|i| block_on(log.record(event(&format!("p{t}"), "scep_pkcsreq", &format!("{i}")))).unwrap())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut acknowledged: Vec<i64> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
    let took = started.elapsed();
    acknowledged.sort_unstable();
    acknowledged.dedup();
    assert_eq!(acknowledged.len(), 400, "one id per event");
    // A fresh handle (another process would see the same) lists every acknowledged id.
    drop(logs);
    let reader = place.open(30, "reader");
    let mut stored: Vec<i64> = ids(&reader, AuditQuery { limit: MAX_QUERY_LIMIT, ..all() });
    stored.sort_unstable();
    assert_eq!(stored, acknowledged);
    if let Place::Postgres(db) = &place {
        // Group commit: far fewer inserting transactions than events.
        let transactions: i64 =
            db.client().query_one("SELECT COUNT(DISTINCT xmin::text)::BIGINT FROM audit_events", &[]).unwrap().get(0);
        assert!(transactions < 400, "{transactions} transactions for 400 events: no batching");
        eprintln!("PostgreSQL: 400 events from 8 threads on 2 nodes in {took:?}, {transactions} transactions");
    } else {
        eprintln!("SQLite: 400 events from 8 threads on 2 writers in {took:?}");
    }
}

/// The database stopped: a record fails, marked unreachable (503
/// `store_unavailable` for the request), queries fail too; when it returns
/// the same log records again without a restart.
#[test]
fn an_unreachable_database_fails_records_then_the_log_recovers() {
    let cluster = TestCluster::start("audit_an_unreachable_database");
    let db = TestDatabase::create_on(&cluster.url, "audit_outage");
    let log = open_pg(&db.url, 30, "node-a");
    block_on(log.record(event("corp", "scep_pkcsreq", "success"))).unwrap();
    cluster.stop();
    let err = block_on(log.record(event("corp", "scep_pkcsreq", "success"))).unwrap_err();
    assert!(err.store_unreachable, "{err}");
    assert_eq!(err.label(), "store_unavailable");
    assert!(log.commit_failure().is_some(), "the failing commit is reported (/healthz's audit line)");
    assert!(block_on(log.query(all())).is_err());
    cluster.restart();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        match block_on(log.record(event("corp", "scep_pkcsreq", "success"))) {
            Ok(_) => break,
            Err(e) => assert!(std::time::Instant::now() < deadline, "not recovered: {e}"),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(log.commit_failure(), None, "a commit succeeded");
    let events = block_on(log.query(all())).unwrap();
    let enrolments = events.iter().filter(|e| e.action == "scep_pkcsreq").count();
    assert_eq!(enrolments, 2, "the refused event was not stored, the others were: {events:#?}");
    // The outage itself is recorded once, after the first commit that succeeded again.
    let outage: Vec<_> = events.iter().filter(|e| e.action == "audit_outage").collect();
    assert_eq!(outage.len(), 1, "{events:#?}");
    assert_eq!(outage[0].outcome, "audit_recovered");
    assert_eq!(events.len(), 3, "{events:#?}");
}
