//! The PostgreSQL store when the database restarts or falls silent
//! (docs/high-availability.md, "When the database is unreachable"), at the
//! level of the pool and the protection store; `high_availability.rs` runs the
//! same situations against the real binary.
//!
//! - A restart: connections the restart closed while idle are found on
//!   checkout and replaced, so no operation after the database's return fails
//!   on one; the health probe says "reachable" at its first call.
//! - A silent database (its processes stopped: connections stay open, nothing
//!   answers): the health probe, the checkout of an idle connection and a new
//!   connection's startup handshake all give up within their bounds instead
//!   of waiting for as long as the database is silent.
//! - A busy pool makes no validation round trip.
//!
//! Each test that restarts or pauses the database has a private cluster
//! (`.ci/postgres-dev`); the cost test uses `SCEPD_TEST_DATABASE_URL`.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use scep_store::postgres::{HEALTH_WAIT, Pool, PostgresStore, VALIDATE_AFTER_IDLE, VALIDATION_TIMEOUT};
use scep_store::{NonceClaim, PostgresSettings, ProtectionStore, StoreHealth};
use scep_tests::database::{TestCluster, TestDatabase};

const NOW: i64 = 1_700_000_000;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

fn settings(url: &str, pool_size: usize) -> PostgresSettings {
    PostgresSettings { url: url.to_string(), tls_ca_bundle: None, pool_size, connect_timeout: CONNECT_TIMEOUT }
}

/// A store on its own pool of `pool_size`, and the pool.
fn store(url: &str, pool_size: usize) -> (PostgresStore, Arc<Pool>) {
    let pool = Arc::new(Pool::new(&settings(url, pool_size)).unwrap());
    (PostgresStore::with_pool(Arc::clone(&pool)).unwrap(), pool)
}

/// Opens `n` connections at once and gives them back: the pool then holds
/// `n` idle connections, as after a burst of requests.
fn warm(pool: &Pool, n: usize) {
    let held: Vec<_> = (0..n).map(|_| pool.get().unwrap()).collect();
    drop(held);
}

/// Runs `f` on a thread and waits at most `limit` for it: `Some` with its
/// result and how long it took, `None` when it had not returned (the thread
/// is left to finish when the database answers again).
fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> Option<(T, Duration)> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let started = Instant::now();
        let result = f();
        let _ = tx.send((result, started.elapsed()));
    });
    rx.recv_timeout(limit).ok()
}

#[test]
fn no_operation_fails_on_a_connection_a_restart_closed() {
    let cluster = TestCluster::start("no_operation_fails_on_a_connection_a_restart_closed");
    let db = TestDatabase::create_on(&cluster.url, "restart");
    let (store, pool) = store(&db.url, 4);
    warm(&pool, 4);
    assert_eq!(store.claim_nonce(b"before", NOW + 60, NOW).unwrap(), NonceClaim::Accepted);
    cluster.stop();
    cluster.restart();
    // The pool holds 4 connections the restart closed; every operation after
    // the database's return must succeed (a probe saw the
    // first pool_size fail).
    for i in 0..10 {
        let key = format!("after-{i}");
        let claimed = store.claim_nonce(key.as_bytes(), NOW + 60, NOW);
        assert_eq!(claimed, Ok(NonceClaim::Accepted), "operation {i} after the restart");
    }
    assert!(pool.validations() >= 1, "the closed connections were found by validation");
    assert_eq!(store.claim_nonce(b"before", NOW + 60, NOW).unwrap(), NonceClaim::Replay, "state survived");
}

#[test]
fn the_health_probe_reports_the_database_as_it_is_now() {
    let cluster = TestCluster::start("the_health_probe_reports_the_database_as_it_is_now");
    let db = TestDatabase::create_on(&cluster.url, "health_now");
    let (store, pool) = store(&db.url, 4);
    warm(&pool, 4);
    std::thread::sleep(Duration::from_millis(1_100));
    assert_eq!(store.health(true), StoreHealth::Reachable, "the probe's own connection is made");
    // A restart nobody notices: no operation, no probe in between. The pool's
    // connections and the probe's are closed; the first probe after the
    // return must say "reachable" (it used to run on a pooled connection the
    // restart had closed, and say "connection closed" once per such one).
    cluster.stop();
    cluster.restart();
    std::thread::sleep(Duration::from_millis(1_100));
    assert_eq!(store.health(true), StoreHealth::Reachable, "first probe after an unnoticed restart");
    // An outage the probe sees, then the return.
    cluster.stop();
    std::thread::sleep(Duration::from_millis(1_100));
    assert!(matches!(store.health(true), StoreHealth::Unreachable(_)), "down");
    assert!(matches!(store.health(false), StoreHealth::Unreachable(_)), "the probe's finding is the latest");
    cluster.restart();
    std::thread::sleep(Duration::from_millis(1_100));
    assert_eq!(store.health(true), StoreHealth::Reachable, "first probe after the return");
    assert_eq!(store.health(false), StoreHealth::Reachable, "the probe's finding is the latest");
}

#[test]
fn a_silent_database_holds_up_neither_the_health_probe_nor_a_checkout() {
    let cluster = TestCluster::start("a_silent_database_holds_up_neither_the_health_probe_nor_a_checkout");
    let db = TestDatabase::create_on(&cluster.url, "silent");
    let (store, pool) = store(&db.url, 2);
    let store = Arc::new(store);
    assert_eq!(store.claim_nonce(b"before", NOW + 60, NOW).unwrap(), NonceClaim::Accepted);
    assert_eq!(store.health(true), StoreHealth::Reachable);
    std::thread::sleep(Duration::from_millis(1_100));
    // The pool's one connection was just used by another of the node's
    // stores (the certificate index, the challenges): the protection store
    // has seen no answer for a second, so /healthz asks. A probe on that
    // connection would be sent (it is fresh: not validated) and wait for as
    // long as the server is silent.
    pool.get().unwrap().simple_query("SELECT 1").unwrap();

    let paused = cluster.pause();
    // /healthz: at most HEALTH_WAIT, twice (the second finds the first probe
    // still waiting and does not start another).
    for attempt in 0..2 {
        let probing = Arc::clone(&store);
        let (health, took) = within(Duration::from_secs(10), move || probing.health(true))
            .unwrap_or_else(|| panic!("health probe {attempt} still waiting after 10 s"));
        assert!(took < HEALTH_WAIT + Duration::from_millis(700), "health probe {attempt} took {took:?}");
        match health {
            StoreHealth::Unreachable(why) => assert!(why.contains("answer"), "{why}"),
            StoreHealth::Reachable => panic!("a stopped server reported reachable"),
        }
    }
    // The idle connection, checked out again after VALIDATE_AFTER_IDLE, is
    // validated: that gives up within VALIDATION_TIMEOUT.
    std::thread::sleep(VALIDATE_AFTER_IDLE);
    let checking = Arc::clone(&pool);
    let (checked, took) = within(Duration::from_secs(15), move || checking.get().map(drop))
        .expect("checkout of an idle connection still waiting after 15 s");
    assert!(checked.is_err(), "a silent server's connection was handed out");
    assert!(took < VALIDATION_TIMEOUT + Duration::from_secs(1), "validation took {took:?}");
    // A new connection: the TCP connect succeeds (the kernel accepts), the
    // startup handshake gets no answer; bounded by connect_timeout as a whole.
    let connecting = Arc::clone(&pool);
    let (connected, took) = within(Duration::from_secs(15), move || connecting.get().map(drop))
        .expect("a new connection still waiting after 15 s");
    assert!(connected.is_err(), "connected to a stopped server?");
    assert!(took < CONNECT_TIMEOUT + Duration::from_secs(1), "connecting took {took:?}");

    drop(paused);
    // Back: the store recovers by itself, and the probe says so.
    let back = Instant::now();
    while store.claim_nonce(b"after", NOW + 60, NOW).is_err() {
        assert!(back.elapsed() < Duration::from_secs(10), "not recovered 10 s after the server resumed");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(1_100));
    assert_eq!(store.health(true), StoreHealth::Reachable);
}

#[test]
fn a_busy_pool_makes_no_validation_round_trip() {
    let db = TestDatabase::create("a_busy_pool_makes_no_validation_round_trip");
    let (store, pool) = store(&db.url, 4);
    let operations: u32 = 300;
    for i in 0..operations {
        store.claim_nonce(format!("busy-{i}").as_bytes(), NOW + 60, NOW).unwrap();
    }
    // A busy pool validates nothing; a thread descheduled for the idle time
    // on a loaded machine may cause one, never one per operation.
    let busy_slack = 3;
    assert!(
        pool.validations() <= busy_slack,
        "a connection handed out again at once is not validated: {}",
        pool.validations()
    );
    // The checkout itself, hot and after a pause (which adds the validation).
    let hot_started = Instant::now();
    for _ in 0..operations {
        drop(pool.get().unwrap());
    }
    let hot = hot_started.elapsed() / operations;
    let before_pauses = pool.validations();
    assert!(before_pauses <= 2 * busy_slack, "{before_pauses}");
    let rounds: u32 = 5;
    let mut after_pause = Duration::ZERO;
    for round in 0..rounds {
        std::thread::sleep(VALIDATE_AFTER_IDLE + Duration::from_millis(50));
        let t = Instant::now();
        drop(pool.get().unwrap());
        after_pause += t.elapsed();
        store.claim_nonce(format!("idle-{round}").as_bytes(), NOW + 60, NOW).unwrap();
    }
    // Each pause makes the next checkout validate (the claim right after it
    // reuses a connection just returned: none, but for a descheduling).
    let paused = pool.validations() - before_pauses;
    assert!(
        (u64::from(rounds)..=u64::from(rounds) + busy_slack).contains(&paused),
        "one validation per checkout after a pause: {paused} for {rounds} pauses"
    );
    eprintln!("checkout: hot {hot:?}, after a pause (with its validation) {:?}", after_pause / rounds);
}
