//! The shared store's contract (issue 18), run against both backends: SQLite
//! in a temporary data directory and PostgreSQL on the cluster named by
//! `SCEPD_TEST_DATABASE_URL` (`.ci/run` starts one; without it the
//! PostgreSQL half FAILS naming the install command).
//!
//! "Two nodes" here are two stores opened on one database: two SQLite
//! connections to one file, or two PostgreSQL pools.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use scep_store::{
    Admission, Backend, Decision, NonceClaim, PostgresSettings, ProtectionStore, StoreError, StoreHealth, StoreSettings,
};
use scep_tests::database::TestDatabase;

/// Where one test's store lives.
enum Place {
    Sqlite(tempfile::TempDir),
    Postgres(TestDatabase),
}

impl Place {
    fn sqlite() -> Self {
        Self::Sqlite(tempfile::tempdir().expect("temp dir"))
    }

    fn postgres(test: &str) -> Self {
        Self::Postgres(TestDatabase::create(test))
    }

    fn settings(&self) -> StoreSettings {
        match self {
            Self::Sqlite(_) => StoreSettings::default(),
            Self::Postgres(db) => StoreSettings {
                backend: Backend::Postgres(PostgresSettings {
                    url: db.url.clone(),
                    tls_ca_bundle: None,
                    pool_size: 8,
                    connect_timeout: Duration::from_secs(5),
                }),
            },
        }
    }

    fn data_dir(&self) -> &Path {
        match self {
            Self::Sqlite(dir) => dir.path(),
            // Unused by PostgreSQL; any directory.
            Self::Postgres(_) => Path::new("/nonexistent"),
        }
    }

    /// Opens a store ("a node") on this place.
    fn open(&self) -> Arc<dyn ProtectionStore> {
        scep_store::open(&self.settings(), self.data_dir()).expect("open the store")
    }
}

const NOW: i64 = 1_800_000_000;

fn a_nonce_is_accepted_once_until_it_expires(place: Place) {
    let store = place.open();
    assert_eq!(store.claim_nonce(b"nonce-1", NOW + 60, NOW).unwrap(), NonceClaim::Accepted);
    assert_eq!(store.claim_nonce(b"nonce-1", NOW + 60, NOW).unwrap(), NonceClaim::Replay);
    assert_eq!(
        store.claim_nonce(b"nonce-1", NOW + 600, NOW + 59).unwrap(),
        NonceClaim::Replay,
        "one second before expiry"
    );
    assert_eq!(store.claim_nonce(b"nonce-2", NOW + 60, NOW).unwrap(), NonceClaim::Accepted, "another nonce");
    // At its expiry the entry no longer refuses; claiming it again records the new expiry.
    assert_eq!(store.claim_nonce(b"nonce-1", NOW + 120, NOW + 60).unwrap(), NonceClaim::Accepted);
    assert_eq!(store.claim_nonce(b"nonce-1", NOW + 120, NOW + 119).unwrap(), NonceClaim::Replay);
}

fn a_nonce_accepted_by_one_node_is_refused_by_another_and_after_a_restart(place: Place) {
    let a = place.open();
    let b = place.open();
    assert_eq!(a.claim_nonce(b"shared", NOW + 3600, NOW).unwrap(), NonceClaim::Accepted);
    assert_eq!(b.claim_nonce(b"shared", NOW + 3600, NOW + 1).unwrap(), NonceClaim::Replay);
    drop((a, b));
    let restarted = place.open();
    assert_eq!(restarted.claim_nonce(b"shared", NOW + 3600, NOW + 2).unwrap(), NonceClaim::Replay);
}

fn concurrent_claims_of_one_nonce_on_two_nodes_accept_exactly_one(place: Place) {
    let nodes = [place.open(), place.open()];
    for round in 0..20 {
        let key = format!("race-{round}");
        let accepted = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for t in 0..8 {
                let (node, key, accepted) = (&nodes[t % 2], key.as_bytes(), &accepted);
                s.spawn(move || {
                    if node.claim_nonce(key, NOW + 60, NOW).unwrap() == NonceClaim::Accepted {
                        accepted.fetch_add(1, Ordering::SeqCst);
                    }
                });
            }
        });
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "round {round}");
    }
}

fn expired_entries_are_purged_and_live_ones_kept(place: Place) {
    let store = place.open();
    for i in 0..5 {
        assert_eq!(store.claim_nonce(format!("old-{i}").as_bytes(), NOW + 10, NOW).unwrap(), NonceClaim::Accepted);
    }
    assert_eq!(store.claim_nonce(b"live", NOW + 1000, NOW).unwrap(), NonceClaim::Accepted);
    assert_eq!(store.admit(b"device", NOW, 100, 5).unwrap(), Admission::Admitted);
    assert_eq!(store.admit(b"device", NOW + 50, 100, 5).unwrap(), Admission::Admitted);
    let purged = store.purge_expired(NOW + 100).unwrap();
    assert_eq!((purged.nonces, purged.rate_events), (5, 1));
    assert_eq!(store.claim_nonce(b"live", NOW + 1000, NOW + 100).unwrap(), NonceClaim::Replay, "a live nonce survives");
    // Purging again finds nothing new.
    assert_eq!(store.purge_expired(NOW + 100).unwrap(), scep_store::Purged::default());
}

fn a_device_window_admits_its_limit_then_refuses_until_the_oldest_leaves(place: Place) {
    let store = place.open();
    let window = 86_400;
    assert_eq!(store.admit(b"dev-a", NOW, window, 3).unwrap(), Admission::Admitted);
    assert_eq!(store.admit(b"dev-a", NOW + 10, window, 3).unwrap(), Admission::Admitted);
    assert_eq!(store.admit(b"dev-a", NOW + 20, window, 3).unwrap(), Admission::Admitted);
    assert_eq!(store.admit(b"dev-a", NOW + 30, window, 3).unwrap(), Admission::Limited { retry_at: NOW + window });
    assert_eq!(store.admit(b"dev-b", NOW + 30, window, 3).unwrap(), Admission::Admitted, "another device");
    // A refusal counted nothing: once the first event leaves, one more fits.
    assert_eq!(store.admit(b"dev-a", NOW + window, window, 3).unwrap(), Admission::Admitted);
    assert_eq!(
        store.admit(b"dev-a", NOW + window + 1, window, 3).unwrap(),
        Admission::Limited { retry_at: NOW + 10 + window }
    );
    // Limit 0: no limit, nothing counted.
    for _ in 0..5 {
        assert_eq!(store.admit(b"dev-c", NOW, window, 0).unwrap(), Admission::Admitted);
    }
    // The window survives a restart.
    drop(store);
    assert!(matches!(place.open().admit(b"dev-a", NOW + window + 2, window, 3).unwrap(), Admission::Limited { .. }));
}

fn concurrent_admissions_on_two_nodes_never_exceed_the_limit(place: Place) {
    let nodes = [place.open(), place.open()];
    for round in 0..5 {
        let device = format!("busy-{round}");
        let admitted = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for t in 0..8 {
                let (node, device, admitted) = (&nodes[t % 2], device.as_bytes(), &admitted);
                s.spawn(move || {
                    for i in 0..3 {
                        if node.admit(device, NOW + i, 3600, 5).unwrap() == Admission::Admitted {
                            admitted.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                });
            }
        });
        assert_eq!(admitted.load(Ordering::SeqCst), 5, "round {round}: 24 attempts, limit 5");
    }
}

fn claim_and_admit_refuses_replays_and_devices_over_their_limit(place: Place) {
    let nodes = [place.open(), place.open()];
    let window = 86_400;
    let step = |node: usize, nonce: &[u8], device: &[u8], now: i64| {
        nodes[node].claim_and_admit(Some((nonce, NOW + 3600)), device, now, window, 2).unwrap()
    };
    assert_eq!(step(0, b"n1", b"dev", NOW), Decision::Admitted);
    assert_eq!(step(1, b"n1", b"other", NOW + 1), Decision::Replay, "a replay on the other node");
    assert_eq!(step(1, b"n2", b"dev", NOW + 2), Decision::Admitted, "2 of 2, counted on the other node");
    assert_eq!(step(0, b"n3", b"dev", NOW + 3), Decision::Limited { retry_at: NOW + window });
    // The limited request's nonce stays claimed (as the engine's gates do).
    assert_eq!(step(1, b"n3", b"fresh", NOW + 4), Decision::Replay);
    // The replay counted nothing: `other` has its whole allowance.
    assert_eq!(step(0, b"n4", b"other", NOW + 5), Decision::Admitted);
    assert_eq!(step(1, b"n5", b"other", NOW + 6), Decision::Admitted);
    // No nonce (a renewal by certificate): only the window.
    let renewal = |now: i64| nodes[0].claim_and_admit(None, b"cert", now, window, 1).unwrap();
    assert_eq!(renewal(NOW), Decision::Admitted);
    assert_eq!(renewal(NOW + 1), Decision::Limited { retry_at: NOW + window });
    // Limit 0: claim only.
    assert_eq!(nodes[1].claim_and_admit(Some((b"n6", NOW + 60)), b"dev", NOW, window, 0).unwrap(), Decision::Admitted);
    assert_eq!(nodes[0].claim_and_admit(Some((b"n6", NOW + 60)), b"dev", NOW, window, 0).unwrap(), Decision::Replay);
    // Concurrent: of 8 claims of one nonce on two nodes, one is admitted.
    let admitted = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for t in 0..8 {
            let (node, admitted) = (&nodes[t % 2], &admitted);
            s.spawn(move || {
                let device = format!("race-dev-{t}");
                if node.claim_and_admit(Some((b"race", NOW + 60)), device.as_bytes(), NOW, window, 5).unwrap()
                    == Decision::Admitted
                {
                    admitted.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
    });
    assert_eq!(admitted.load(Ordering::SeqCst), 1);
}

fn migrations_are_idempotent_and_safe_when_nodes_start_at_once(place: Place) {
    // Four nodes open a fresh database at the same moment.
    let opened: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4).map(|_| s.spawn(|| place.open())).collect();
        handles.into_iter().map(|h| h.join().expect("open")).collect()
    });
    assert_eq!(opened.len(), 4);
    let (found, expected) = scep_store::check(&place.settings(), place.data_dir()).unwrap();
    assert_eq!((found, expected), (scep_store::migrations::LATEST, scep_store::migrations::LATEST));
    assert_eq!(scep_store::migrate(&place.settings(), place.data_dir()).unwrap(), (expected, expected), "nothing left");
}

fn a_schema_newer_than_this_scepd_is_refused(place: Place) {
    drop(place.open());
    let newer = scep_store::migrations::LATEST + 1;
    match &place {
        Place::Sqlite(dir) => {
            let conn = rusqlite::Connection::open(scep_store::sqlite::SqliteStore::file(dir.path())).unwrap();
            conn.execute(
                "INSERT INTO scepd_schema (version, name, applied_at) VALUES (?1, 'from the future', 0)",
                [newer],
            )
            .unwrap();
        }
        Place::Postgres(db) => {
            db.client()
                .execute(
                    "INSERT INTO scepd_schema (version, name, applied_at) VALUES ($1, 'from the future', 0)",
                    &[&newer],
                )
                .unwrap();
        }
    }
    let err = scep_store::open(&place.settings(), place.data_dir()).expect_err("a newer schema");
    assert!(matches!(&err, StoreError::Schema(m) if m.contains("newer")), "{err}");
    assert!(matches!(scep_store::check(&place.settings(), place.data_dir()), Err(StoreError::Schema(_))));
}

macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[test] fn $name() { super::$name(super::Place::sqlite()) } )*
        }
        mod postgresql {
            $( #[test] fn $name() { super::$name(super::Place::postgres(stringify!($name))) } )*
        }
    };
}

contract!(
    a_nonce_is_accepted_once_until_it_expires,
    a_nonce_accepted_by_one_node_is_refused_by_another_and_after_a_restart,
    concurrent_claims_of_one_nonce_on_two_nodes_accept_exactly_one,
    expired_entries_are_purged_and_live_ones_kept,
    a_device_window_admits_its_limit_then_refuses_until_the_oldest_leaves,
    concurrent_admissions_on_two_nodes_never_exceed_the_limit,
    claim_and_admit_refuses_replays_and_devices_over_their_limit,
    migrations_are_idempotent_and_safe_when_nodes_start_at_once,
    a_schema_newer_than_this_scepd_is_refused,
);

/// PostgreSQL only: a database that cannot be reached is an `Unavailable`
/// error within the connect timeout (never a hang), and the health report
/// says so.
#[test]
fn postgresql_unreachable_is_unavailable_within_the_timeout() {
    // A port nothing listens on: bind one, note it, close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let settings = StoreSettings {
        backend: Backend::Postgres(PostgresSettings {
            url: format!("postgres://scepd:secret-password@127.0.0.1:{port}/scepd"),
            tls_ca_bundle: None,
            pool_size: 2,
            connect_timeout: Duration::from_secs(2),
        }),
    };
    let started = std::time::Instant::now();
    let err = scep_store::open(&settings, Path::new("/nonexistent")).expect_err("nothing listens");
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    assert!(matches!(&err, StoreError::Unavailable(m) if !m.contains("secret-password")), "{err}");
    assert!(err.to_string().contains(&port.to_string()), "names the address: {err}");
}

/// PostgreSQL only: a store whose database goes away reports it in its
/// health and recovers by itself when it returns.
#[test]
fn postgresql_health_follows_the_database() {
    let cluster = scep_tests::database::TestCluster::start("postgresql_health_follows_the_database");
    let db = TestDatabase::create_on(&cluster.url, "health");
    let settings = StoreSettings {
        backend: Backend::Postgres(PostgresSettings {
            url: db.url.clone(),
            tls_ca_bundle: None,
            pool_size: 2,
            connect_timeout: Duration::from_secs(2),
        }),
    };
    let store = scep_store::open(&settings, Path::new("/nonexistent")).unwrap();
    assert_eq!(store.claim_nonce(b"before", NOW + 60, NOW).unwrap(), NonceClaim::Accepted);
    assert_eq!(store.health(false), StoreHealth::Reachable);
    cluster.stop();
    assert!(matches!(store.claim_nonce(b"during", NOW + 60, NOW), Err(StoreError::Unavailable(_))));
    assert!(matches!(store.health(false), StoreHealth::Unreachable(_)));
    cluster.restart();
    // Recovery: the pool reconnects on the next call (bounded wait).
    let mut recovered = false;
    for _ in 0..50 {
        if store.claim_nonce(b"after", NOW + 60, NOW).is_ok() {
            recovered = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(recovered, "the store did not recover within 5 s of the database's return");
    assert_eq!(store.health(false), StoreHealth::Reachable);
    assert_eq!(store.claim_nonce(b"before", NOW + 60, NOW).unwrap(), NonceClaim::Replay, "state survived");
    drop(db);
}
