//! The local CA's certificate index contract (issue 18), run against both
//! implementations: SQLite in a temporary directory and PostgreSQL on the
//! cluster named by `SCEPD_TEST_DATABASE_URL` (without it the PostgreSQL half
//! FAILS naming the install command).
//!
//! "Two nodes" are two index handles on one database: two SQLite stores (two
//! writer threads) on one file, or two PostgreSQL pools on one database.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_lite::future::block_on;
use scep_engine::time::UnixTime;
use scep_issuers::crl::RevocationReason;
use scep_issuers::local::index::CertificateIndex;
use scep_issuers::local::store::{
    CertStatus, CertificateFilter, DB_FILE, NewCertificate, Recorded, StatusFilter, StoreError,
};
use scep_store::PostgresSettings;
use scep_store::postgres::Pool;
use scep_tests::database::{TestCluster, TestDatabase};

/// Where one test's index lives.
enum Place {
    Sqlite(tempfile::TempDir),
    Postgres(TestDatabase),
}

fn pool_for(url: &str) -> Arc<Pool> {
    Arc::new(
        Pool::new(&PostgresSettings {
            url: url.to_string(),
            tls_ca_bundle: None,
            pool_size: 8,
            connect_timeout: Duration::from_secs(2),
        })
        .unwrap(),
    )
}

impl Place {
    fn sqlite() -> Self {
        Self::Sqlite(tempfile::tempdir().unwrap())
    }

    fn postgres(test: &str) -> Self {
        Self::Postgres(TestDatabase::create(test))
    }

    fn file(&self) -> PathBuf {
        match self {
            Self::Sqlite(dir) => dir.path().join(DB_FILE),
            Self::Postgres(_) => unreachable!("no file"),
        }
    }

    /// A handle ("a node") on this place.
    fn open(&self) -> CertificateIndex {
        match self {
            Self::Sqlite(_) => CertificateIndex::open_sqlite(&self.file()).unwrap(),
            Self::Postgres(db) => CertificateIndex::open_postgres(pool_for(&db.url)).unwrap(),
        }
    }
}

fn record(serial: &str, txid: &str) -> NewCertificate {
    NewCertificate {
        ca_id: "ca1".into(),
        serial_hex: serial.into(),
        profile: "p".into(),
        transaction_id: txid.into(),
        subject: "CN=x".into(),
        sans: String::new(),
        not_before: UnixTime(10),
        not_after: UnixTime(1000),
        der: serial.as_bytes().to_vec(),
        issued_at: UnixTime(20),
        renewal_of: None,
        intune_device: None,
    }
}

fn renewal(serial: &str, txid: &str, of: &str) -> NewCertificate {
    NewCertificate { renewal_of: Some(of.into()), ..record(serial, txid) }
}

fn serials_are_unique_across_nodes(place: Place) {
    let (a, b) = (place.open(), place.open());
    assert_eq!(block_on(a.record_enrollment(record("0a", "t1"))), Ok(Recorded::Inserted));
    assert_eq!(block_on(b.record_enrollment(record("0a", "t2"))), Err(StoreError::DuplicateSerial));
    // Counted per CA.
    let other = NewCertificate { ca_id: "ca2".into(), ..record("0b", "t3") };
    assert_eq!(block_on(b.record_enrollment(other)), Ok(Recorded::Inserted));
    assert_eq!((a.count("ca1").unwrap(), b.count("ca2").unwrap()), (1, 1));
    let got = b.certificate("ca1", "0a").unwrap().unwrap();
    assert_eq!((got.der.as_slice(), got.status), (&b"0a"[..], CertStatus::Valid));
    assert!(a.certificate("ca1", "0b").unwrap().is_none(), "looked up per CA");
}

fn a_transaction_resent_to_another_node_gets_its_certificate(place: Place) {
    let (a, b) = (place.open(), place.open());
    assert_eq!(block_on(a.record_enrollment(record("01", "t"))), Ok(Recorded::Inserted));
    match block_on(b.record_enrollment(record("02", "t"))) {
        Ok(Recorded::Existing(prev)) => assert_eq!(prev.serial_hex, "01"),
        other => panic!("{other:?}"),
    }
    assert_eq!(b.by_transaction("ca1", "p", "t").unwrap().unwrap().serial_hex, "01", "CertPoll on node B");
    assert!(b.by_transaction("ca1", "other-profile", "t").unwrap().is_none());
    // A renewal of the transaction's own certificate is a new record, on either node.
    assert_eq!(block_on(b.record_enrollment(renewal("03", "t", "01"))), Ok(Recorded::Inserted));
    assert_eq!(a.by_transaction("ca1", "p", "t").unwrap().unwrap().serial_hex, "03", "the latest");
    // A certificate renews once: another transaction renewing 01 is superseded.
    assert_eq!(
        block_on(a.record_enrollment(renewal("04", "u", "01"))),
        Err(StoreError::Superseded { by: "03".into() })
    );
    assert_eq!(block_on(a.record_enrollment(renewal("05", "w", "ff"))), Err(StoreError::NotFound));
    let other_profile = NewCertificate { profile: "q".into(), ..renewal("06", "x", "03") };
    assert_eq!(block_on(a.record_enrollment(other_profile)), Err(StoreError::OtherProfile { issued_on: "p".into() }));
    assert_eq!(a.renewals_of("ca1", "01").unwrap().iter().map(|c| c.serial_hex.as_str()).collect::<Vec<_>>(), ["03"]);
    assert_eq!(a.count("ca1").unwrap(), 2);
}

fn two_nodes_racing_on_one_transaction_issue_once(place: Place) {
    let nodes = [place.open(), place.open()];
    for round in 0..10 {
        let txid = format!("race-{round}");
        let inserted = AtomicUsize::new(0);
        let answers = std::sync::Mutex::new(Vec::new());
        std::thread::scope(|s| {
            for t in 0..6 {
                let (node, txid, inserted, answers) = (&nodes[t % 2], &txid, &inserted, &answers);
                s.spawn(move || {
                    let serial = format!("{round:02x}{t:02x}");
                    match block_on(node.record_enrollment(record(&serial, txid))).unwrap() {
                        Recorded::Inserted => {
                            inserted.fetch_add(1, Ordering::SeqCst);
                            answers.lock().unwrap().push(serial);
                        }
                        Recorded::Existing(prev) => answers.lock().unwrap().push(prev.serial_hex),
                    }
                });
            }
        });
        assert_eq!(inserted.load(Ordering::SeqCst), 1, "round {round}: exactly one node issues");
        let answers = answers.into_inner().unwrap();
        assert!(answers.iter().all(|s| s == &answers[0]), "round {round}: every request answers one certificate");
    }
    assert_eq!(nodes[0].count("ca1").unwrap(), 10);
}

fn a_revocation_on_one_node_is_seen_by_the_other(place: Place) {
    let (a, b) = (place.open(), place.open());
    block_on(a.record_enrollment(record("0a", "t1"))).unwrap();
    block_on(a.record_enrollment(record("0b", "t2"))).unwrap();
    let before = b.shared_revocation_version("ca1").unwrap();
    assert_eq!(b.revoke("ca1", "0c", UnixTime(30), RevocationReason::KeyCompromise), Err(StoreError::NotFound));
    let shared = b.revoke("ca1", "0a", UnixTime(30), RevocationReason::KeyCompromise).unwrap();
    assert_eq!(a.revoke("ca1", "0a", UnixTime(31), RevocationReason::Superseded), Err(StoreError::AlreadyRevoked));
    let listed = a.revoked("ca1").unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].serial.as_slice(), listed[0].revoked_at), (&[0x0a][..], UnixTime(30)));
    assert_eq!(listed[0].reason, RevocationReason::KeyCompromise);
    assert!(matches!(a.certificate("ca1", "0a").unwrap().unwrap().status, CertStatus::Revoked { .. }));
    // A renewal of a revoked certificate is refused on the other node.
    assert_eq!(block_on(a.record_enrollment(renewal("0d", "t3", "0a"))), Err(StoreError::AlreadyRevoked));
    match (before, shared, a.shared_revocation_version("ca1").unwrap()) {
        // SQLite keeps no shared counter.
        (None, None, None) => {}
        // PostgreSQL: the counter moved by one, and both nodes read it.
        (Some(before), Some(after), Some(seen)) => assert_eq!((after, seen), (before + 1, before + 1)),
        other => panic!("{other:?}"),
    }
}

fn crl_numbers_increase_strictly_across_nodes(place: Place) {
    let nodes = [place.open(), place.open()];
    let numbers = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for t in 0..4 {
            let (node, numbers) = (&nodes[t % 2], &numbers);
            s.spawn(move || {
                let mut mine = Vec::new();
                for _ in 0..25 {
                    mine.push(node.next_crl_number("ca1").unwrap());
                }
                assert!(mine.windows(2).all(|w| w[0] < w[1]), "one caller's numbers increase: {mine:?}");
                numbers.lock().unwrap().extend(mine);
            });
        }
    });
    let mut all = numbers.into_inner().unwrap();
    all.sort_unstable();
    assert_eq!(all, (1..=100).collect::<Vec<u64>>(), "no number twice, none skipped");
    assert_eq!(nodes[1].next_crl_number("ca2").unwrap(), 1, "per CA");
}

fn both_nodes_list_and_count_every_certificate(place: Place) {
    let (a, b) = (place.open(), place.open());
    let add = |node: &CertificateIndex, serial: &str, profile: &str, subject: &str, not_after: i64| {
        let c = NewCertificate {
            profile: profile.into(),
            subject: subject.into(),
            not_after: UnixTime(not_after),
            ..record(serial, serial)
        };
        assert_eq!(block_on(node.record_enrollment(c)), Ok(Recorded::Inserted));
    };
    add(&a, "01", "corp", "CN=laptop-1", 5_000);
    add(&b, "02", "corp", "CN=phone-7", 900);
    add(&a, "03", "wifi", "CN=Printer-3", 3_000_000);
    add(&b, "04", "wifi", "CN=tablet-4", 100_000);
    b.revoke("ca1", "04", UnixTime(950), RevocationReason::KeyCompromise).unwrap();
    let now = UnixTime(1_000);
    for node in [&a, &b] {
        let serials = |f: &CertificateFilter| -> Vec<String> {
            node.list("ca1", f).unwrap().into_iter().map(|c| c.serial_hex).collect()
        };
        let all = CertificateFilter::newest(100, now);
        assert_eq!(serials(&all), ["04", "03", "02", "01"], "newest first");
        assert_eq!(serials(&CertificateFilter { profile: Some("wifi".into()), ..all.clone() }), ["04", "03"]);
        assert_eq!(serials(&CertificateFilter { text: Some("PRINTER".into()), ..all.clone() }), ["03"]);
        assert_eq!(serials(&CertificateFilter { status: Some(StatusFilter::Valid), ..all.clone() }), ["03", "01"]);
        assert_eq!(serials(&CertificateFilter { status: Some(StatusFilter::Expired), ..all.clone() }), ["02"]);
        assert_eq!(serials(&CertificateFilter { status: Some(StatusFilter::Revoked), ..all.clone() }), ["04"]);
        assert_eq!(
            serials(&CertificateFilter { expires_before: Some(UnixTime(100_001)), ..all.clone() }),
            ["04", "02", "01"]
        );
        let first = node.list("ca1", &CertificateFilter { limit: 2, ..all.clone() }).unwrap();
        assert_eq!(serials(&CertificateFilter { limit: 2, before_id: Some(first[1].id), ..all.clone() }), ["02", "01"]);
        let summary = node.summary("ca1", now).unwrap();
        assert_eq!((summary.valid, summary.revoked, summary.expired), (2, 1, 1));
        assert_eq!((summary.expiring_within_7_days, summary.expiring_within_30_days), (1, 1));
        assert_eq!(summary.valid_by_expiry_month, [("1970-01".to_string(), 1), ("1970-02".to_string(), 1)]);
        assert_eq!(node.issued_since("ca1", UnixTime(0), 10).unwrap().len(), 4);
    }
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
    serials_are_unique_across_nodes,
    a_transaction_resent_to_another_node_gets_its_certificate,
    two_nodes_racing_on_one_transaction_issue_once,
    a_revocation_on_one_node_is_seen_by_the_other,
    crl_numbers_increase_strictly_across_nodes,
    both_nodes_list_and_count_every_certificate,
);

/// PostgreSQL only: an index whose database cannot be reached answers
/// `Unavailable` (never a hang, never a silent success), and recovers by
/// itself when the database returns, with what was recorded before.
#[test]
fn postgresql_unreachable_is_unavailable_and_recovers() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let nowhere = pool_for(&format!("postgres://scepd@127.0.0.1:{port}/scepd"));
    let started = Instant::now();
    let err = CertificateIndex::open_postgres(nowhere).expect_err("nothing listens");
    assert!(matches!(&err, StoreError::Unavailable(_)), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));

    let cluster = TestCluster::start("postgresql_unreachable_is_unavailable_and_recovers");
    let db = TestDatabase::create_on(&cluster.url, "index_recovery");
    let index = CertificateIndex::open_postgres(pool_for(&db.url)).unwrap();
    assert_eq!(block_on(index.record_enrollment(record("01", "t1"))), Ok(Recorded::Inserted));
    cluster.stop();
    let during = block_on(index.record_enrollment(record("02", "t2")));
    assert!(matches!(during, Err(StoreError::Unavailable(_))), "{during:?}");
    assert!(matches!(index.next_crl_number("ca1"), Err(StoreError::Unavailable(_))));
    assert!(matches!(
        index.revoke("ca1", "01", UnixTime(30), RevocationReason::Unspecified),
        Err(StoreError::Unavailable(_))
    ));
    cluster.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    let recovered = loop {
        match block_on(index.record_enrollment(record("03", "t3"))) {
            Ok(r) => break r,
            Err(e) => assert!(Instant::now() < deadline, "no recovery within 10 s: {e}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(recovered, Recorded::Inserted);
    assert!(index.certificate("ca1", "01").unwrap().is_some(), "recorded before the outage");
    assert!(index.certificate("ca1", "02").unwrap().is_none(), "nothing recorded during it");
    drop(db);
}

/// PostgreSQL: two local CAs ("nodes") with the same CA files on one
/// database: a revocation made by one raises the other's revocation version
/// (its watcher) within a bounded wait, and the other's CRL lists it.
#[test]
fn postgresql_revocation_version_follows_other_nodes() {
    use scep_issuers::{BootstrapOptions, Issuer as _, LocalCa, LocalCaConfig, bootstrap};
    let db = TestDatabase::create("postgresql_revocation_version_follows_other_nodes");
    let dir = tempfile::tempdir().unwrap();
    let files = bootstrap(dir.path(), &BootstrapOptions::default()).unwrap();
    let open = || {
        let mut config = LocalCaConfig::new(&files.ca_cert, &files.ca_key, dir.path());
        config.shared_index = Some(pool_for(&db.url));
        LocalCa::open(config).unwrap()
    };
    let (a, b) = (open(), open());
    let req = enroll_request(dir.path());
    let issued = match block_on(a.handle(&req, UnixTime::now())) {
        scep_engine::issue::IssueOutcome::Issued { certificate, .. } => certificate,
        other => panic!("{other:?}"),
    };
    let serial = scep_engine::x509::CertificateRef::parse(&issued).unwrap().serial.to_vec();
    let crl_before = b.published_crl(UnixTime::now()).unwrap();
    assert_eq!(b.revocation_version(), 0);
    let revoked = a.revoke(&serial, RevocationReason::KeyCompromise, UnixTime::now()).unwrap();
    assert_eq!((revoked.revocation_version, a.revocation_version()), (1, 1));
    let deadline = Instant::now() + Duration::from_secs(3);
    while b.revocation_version() < 1 {
        assert!(Instant::now() < deadline, "node B did not see node A's revocation within 3 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    let crl_after = b.published_crl(UnixTime::now()).unwrap();
    assert!(crl_after.crl_number > crl_before.crl_number, "re-signed after the revocation");
    std::fs::write(dir.path().join("b.crl"), &*crl_after.der).unwrap();
    let text = openssl(dir.path(), &["crl", "-inform", "DER", "-in", "b.crl", "-noout", "-text"]);
    let hex: String = serial.iter().map(|b| format!("{b:02X}")).collect();
    assert!(text.contains(&hex), "node B's CRL lists node A's revocation {hex}:\n{text}");
}

fn openssl(dir: &std::path::Path, args: &[&str]) -> String {
    let out = std::process::Command::new("openssl").args(args).current_dir(dir).output().expect("openssl is installed");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "openssl {args:?} failed:\n{text}");
    text
}

/// A PKCSReq for a fresh P-256 key (made by openssl).
fn enroll_request(dir: &std::path::Path) -> scep_engine::issue::IssueRequest {
    use scep_engine::issue::{Authorization, EnrollRequest, IssuancePolicy, IssueRequest};
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-nodes",
            "-keyout",
            "d.key",
            "-subj",
            "/CN=device",
            "-outform",
            "DER",
            "-out",
            "d.csr",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ],
    );
    let der = std::fs::read(dir.join("d.csr")).unwrap();
    let req = scep_engine::wire::parse_single(&der).unwrap();
    let info = req.reader().read().unwrap();
    let mut r = info.reader();
    r.read().unwrap(); // version
    let subject = r.read().unwrap().raw.to_vec();
    let spki = r.read().unwrap().raw.to_vec();
    IssueRequest::Enroll(EnrollRequest {
        profile: "default".into(),
        transaction_id: "tx-revoke".into(),
        csr_der: Vec::new(),
        subject_der: subject,
        spki_der: spki,
        subject_alt_names: Vec::new(),
        requested_ekus: Vec::new(),
        policy: IssuancePolicy::default(),
        authorization: Authorization::StaticChallenge,
        sid_extension: None,
    })
}
