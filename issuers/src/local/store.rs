//! The local CA's certificate database: embedded SQLite in the data
//! directory (the one-node default), and the types every
//! [`super::index::CertificateIndex`] shares. The PostgreSQL index of several
//! nodes is [`super::index::postgres`].
//!
//! # Durability
//! A certificate is committed before its outcome is returned: the database
//! runs in WAL mode with `synchronous=FULL`, so every commit fsyncs the WAL and
//! survives power loss, not only a process crash. A CA must never hand out a
//! certificate it then forgets (renewal, revocation and GetCert depend on the
//! record).
//!
//! # Throughput: one writer, group commit
//! One fsync per certificate would cap issuance at the disk's fsync rate. So
//! all writes go through **one writer thread**: callers send their operation
//! with a one-shot reply channel; the writer takes everything queued, applies
//! it in **one transaction**, commits (one fsync), then answers every caller.
//! Under load the batch grows and the fsync cost is shared: when operations
//! arrive closer together than 4 ms, the writer lets the batch fill for that
//! long first ([`scep_store::group_commit::CommitPacer`]), which cut the
//! writer's CPU per certificate by about a third (docs/benchmarks-e2e.md). Readers (GetCert,
//! polling, renewal and CRL checks) use their own connections from a small
//! pool and never wait for the writer (WAL readers see the last commit).
//!
//! Every method here blocks, except [`Store::record_enrollment`], whose answer
//! is a future (enrolments, the hot path, wait for their commit without
//! holding a thread); async callers run the others on the `blocking` pool.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, TransactionBehavior, params};
use scep_store::group_commit::CommitPacer;

use crate::oneshot;
use scep_engine::time::UnixTime;

use crate::crl::{RevocationReason, RevokedEntry};

/// File name of the database inside the data directory.
pub const DB_FILE: &str = "local-ca.sqlite";

/// Schema version stored in `PRAGMA user_version`. Version 2 added
/// `intune_device` (the Intune device id of an Intune-authorised enrolment).
const SCHEMA_VERSION: i64 = 2;

/// Most certificates one [`Store::list`] returns.
pub const MAX_LIST_LIMIT: u32 = 1000;

/// Most operations one transaction takes (bounds the latency of the first).
const MAX_BATCH: usize = 512;

/// Idle reader connections kept.
const MAX_IDLE_READERS: usize = 8;

/// How long a connection waits for a lock held by another process.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS certificates (
    serial          TEXT PRIMARY KEY NOT NULL,   -- lowercase hex magnitude; serials never repeat
    ca_id           TEXT NOT NULL,               -- hex key identifier of the issuing CA
    profile         TEXT NOT NULL,
    transaction_id  TEXT NOT NULL,
    subject         TEXT NOT NULL,
    sans            TEXT NOT NULL,
    not_before      INTEGER NOT NULL,
    not_after       INTEGER NOT NULL,
    der             BLOB NOT NULL,
    issued_at       INTEGER NOT NULL,
    renewal_of      TEXT,
    status          TEXT NOT NULL DEFAULT 'valid' CHECK (status IN ('valid', 'revoked')),
    revoked_at      INTEGER,
    reason          INTEGER,
    intune_device   TEXT                         -- Intune claim `sub` (device id), when Intune authorised it
) STRICT;
CREATE INDEX IF NOT EXISTS certificates_by_transaction ON certificates (ca_id, profile, transaction_id);
CREATE INDEX IF NOT EXISTS certificates_revoked ON certificates (ca_id) WHERE status = 'revoked';
CREATE INDEX IF NOT EXISTS certificates_by_renewal_of ON certificates (ca_id, renewal_of) WHERE renewal_of IS NOT NULL;
CREATE INDEX IF NOT EXISTS certificates_by_not_after ON certificates (ca_id, not_after);
CREATE TABLE IF NOT EXISTS crl_number (
    ca_id  TEXT PRIMARY KEY NOT NULL,
    value  INTEGER NOT NULL
) STRICT;
";

/// A database failure, or a logical refusal of a write.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreError {
    /// A certificate with this serial is already recorded (draw another).
    DuplicateSerial,
    /// No certificate with this serial for this CA.
    NotFound,
    /// The certificate is already revoked.
    AlreadyRevoked,
    /// A renewal of a certificate that was already renewed (each certificate
    /// renews once, then it is superseded).
    Superseded {
        /// Serial (hex) of the certificate that renewed it.
        by: String,
    },
    /// A renewal on another profile than the one the certificate was issued on.
    OtherProfile {
        /// The profile the certificate was issued on.
        issued_on: String,
    },
    /// The database failed (message).
    Database(String),
    /// The shared database cannot be reached or failed mid-operation
    /// (PostgreSQL: connection refused or lost, pool exhausted, shutting
    /// down). Nothing was recorded; the request is answered 503 and the node
    /// recovers by itself when the database returns.
    Unavailable(String),
    /// The writer thread is gone.
    Closed,
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::DuplicateSerial => f.write_str("duplicate serial number"),
            Self::NotFound => f.write_str("no such certificate"),
            Self::AlreadyRevoked => f.write_str("certificate already revoked"),
            Self::Superseded { by } => write!(f, "certificate already renewed (superseded by {by})"),
            Self::OtherProfile { issued_on } => write!(f, "certificate was issued on profile {issued_on:?}"),
            Self::Database(e) => write!(f, "database error: {e}"),
            Self::Unavailable(e) => write!(f, "database unavailable: {e}"),
            Self::Closed => f.write_str("database error: the writer thread has stopped"),
        }
    }
}

impl std::error::Error for StoreError {}

fn db(e: rusqlite::Error) -> StoreError {
    StoreError::Database(e.to_string())
}

/// A certificate to record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewCertificate {
    /// Hex key identifier of the issuing CA.
    pub ca_id: String,
    /// Serial, lowercase hex magnitude (see [`crate::x509_build::serial_hex`]).
    pub serial_hex: String,
    /// SCEP profile.
    pub profile: String,
    /// SCEP transactionID.
    pub transaction_id: String,
    /// Subject, rendered for humans.
    pub subject: String,
    /// subjectAltNames, rendered for humans (comma-separated).
    pub sans: String,
    /// notBefore.
    pub not_before: UnixTime,
    /// notAfter.
    pub not_after: UnixTime,
    /// The certificate DER.
    pub der: Vec<u8>,
    /// When it was issued.
    pub issued_at: UnixTime,
    /// Serial (hex) of the certificate this one renews.
    pub renewal_of: Option<String>,
    /// The Intune device id (claim `sub`) when an Intune challenge authorised it.
    pub intune_device: Option<String>,
}

/// Revocation state of a recorded certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertStatus {
    /// Not revoked (it may still have expired: see `not_after`).
    Valid,
    /// Revoked.
    Revoked {
        /// revocationDate.
        at: UnixTime,
        /// CRLReason.
        reason: RevocationReason,
    },
}

/// A recorded certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredCertificate {
    /// Row id: increasing in recording order (the paging cursor of [`Store::list`]).
    pub id: i64,
    /// Serial, lowercase hex.
    pub serial_hex: String,
    /// Subject, rendered for humans.
    pub subject: String,
    /// subjectAltNames, rendered for humans (comma-separated).
    pub sans: String,
    /// notBefore.
    pub not_before: UnixTime,
    /// The Intune device id (claim `sub`) when an Intune challenge authorised it.
    pub intune_device: Option<String>,
    /// SCEP profile it was issued under.
    pub profile: String,
    /// SCEP transactionID of its request.
    pub transaction_id: String,
    /// The certificate DER.
    pub der: Vec<u8>,
    /// notAfter.
    pub not_after: UnixTime,
    /// When it was issued.
    pub issued_at: UnixTime,
    /// Serial (hex) of the certificate it renewed.
    pub renewal_of: Option<String>,
    /// Revocation state.
    pub status: CertStatus,
}

/// The status filter of [`CertificateFilter`]; `valid` and `expired` are
/// both unrevoked certificates, told apart by notAfter against the query's `now`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusFilter {
    /// Not revoked and not expired.
    Valid,
    /// Revoked (expired or not).
    Revoked,
    /// Not revoked, notAfter passed.
    Expired,
}

impl StatusFilter {
    /// `valid`, `revoked` or `expired`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "valid" => Some(Self::Valid),
            "revoked" => Some(Self::Revoked),
            "expired" => Some(Self::Expired),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Valid => "valid",
            Self::Revoked => "revoked",
            Self::Expired => "expired",
        }
    }
}

/// Which certificates [`Store::list`] returns; the filters combine with AND,
/// `None` is no filter. Newest first; `before_id` pages on (the `id` of the
/// last certificate of the previous page), as the audit events do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateFilter {
    /// Only this profile.
    pub profile: Option<String>,
    /// Subject or subjectAltName containing this, ignoring ASCII case.
    pub text: Option<String>,
    /// Only this serial (lowercase hex, as recorded).
    pub serial_hex: Option<String>,
    /// Only certificates of this Intune device id.
    pub intune_device: Option<String>,
    /// Only this status (at `now`).
    pub status: Option<StatusFilter>,
    /// Only certificates whose notAfter is before this.
    pub expires_before: Option<UnixTime>,
    /// Only rows older than this id (paging).
    pub before_id: Option<i64>,
    /// At most this many (1 to [`MAX_LIST_LIMIT`]; larger is cut to it).
    pub limit: u32,
    /// The time `valid` and `expired` are judged at.
    pub now: UnixTime,
}

impl CertificateFilter {
    /// No filter, the newest `limit` certificates, judged at `now`.
    pub fn newest(limit: u32, now: UnixTime) -> Self {
        Self {
            profile: None,
            text: None,
            serial_hex: None,
            intune_device: None,
            status: None,
            expires_before: None,
            before_id: None,
            limit,
            now,
        }
    }
}

/// Counts of one CA's certificates at a moment (metrics, charts).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InventorySummary {
    /// Not revoked, not expired.
    pub valid: u64,
    /// Revoked.
    pub revoked: u64,
    /// Not revoked, expired.
    pub expired: u64,
    /// Valid, expiring within 7 days.
    pub expiring_within_7_days: u64,
    /// Valid, expiring within 30 days (includes the 7-day ones).
    pub expiring_within_30_days: u64,
    /// Valid certificates by the month (UTC, `YYYY-MM`) of their notAfter,
    /// earliest month first.
    pub valid_by_expiry_month: Vec<(String, u64)>,
}

/// How the writer answers one operation: to a thread blocked on a
/// rendezvous-free `sync_channel(1)` (the writer's send never blocks), or to
/// a future.
enum Reply<T> {
    Blocking(SyncSender<Result<T, StoreError>>),
    Async(oneshot::Sender<Result<T, StoreError>>),
}

impl<T> Reply<T> {
    /// Answers; a caller that went away (dropped its receiver) needs no answer.
    fn send(self, result: Result<T, StoreError>) {
        match self {
            Self::Blocking(tx) => drop(tx.send(result)),
            Self::Async(tx) => tx.send(result),
        }
    }
}

/// A blocking reply channel.
fn blocking_reply<T>() -> (Reply<T>, Receiver<Result<T, StoreError>>) {
    let (tx, rx) = mpsc::sync_channel(1);
    (Reply::Blocking(tx), rx)
}

/// What [`Store::record_enrollment`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recorded {
    /// The certificate is committed.
    Inserted,
    /// Nothing was written: the profile's transactionID already has this
    /// (latest) certificate, and it is not the one being renewed. The caller
    /// decides whether the request is a resend of it or a conflict.
    Existing(Box<StoredCertificate>),
}

enum WriteOp {
    Enroll(Box<NewCertificate>, Reply<Recorded>),
    Revoke { ca_id: String, serial_hex: String, at: UnixTime, reason: RevocationReason, reply: Reply<()> },
    NextCrlNumber { ca_id: String, reply: Reply<u64> },
}

/// An applied (not yet committed) operation and its result.
enum Done {
    Unit(Reply<()>, Result<(), StoreError>),
    Number(Reply<u64>, Result<u64, StoreError>),
    Enrolled(Reply<Recorded>, Result<Recorded, StoreError>),
}

impl Done {
    /// True when the batch cannot commit (a real database failure, as opposed
    /// to a logical refusal such as a duplicate serial).
    fn is_fatal(&self) -> bool {
        let err = match self {
            Self::Unit(_, r) => r.as_ref().err(),
            Self::Number(_, r) => r.as_ref().err(),
            Self::Enrolled(_, r) => r.as_ref().err(),
        };
        matches!(err, Some(StoreError::Database(_) | StoreError::Unavailable(_) | StoreError::Closed))
    }

    /// Answers the caller with the operation's own result (after a commit).
    fn finish(self) {
        match self {
            Self::Unit(reply, r) => reply.send(r),
            Self::Number(reply, r) => reply.send(r),
            Self::Enrolled(reply, r) => reply.send(r),
        }
    }

    /// The operation's own error, if it failed.
    fn error(&self) -> Option<&StoreError> {
        match self {
            Self::Unit(_, r) => r.as_ref().err(),
            Self::Number(_, r) => r.as_ref().err(),
            Self::Enrolled(_, r) => r.as_ref().err(),
        }
    }

    /// Answers the caller with the batch's failure.
    fn fail(self, e: &StoreError) {
        match self {
            Self::Unit(reply, _) => reply.send(Err(e.clone())),
            Self::Number(reply, _) => reply.send(Err(e.clone())),
            Self::Enrolled(reply, _) => reply.send(Err(e.clone())),
        }
    }

    /// An operation that was not applied (an earlier one failed the batch).
    fn skipped(op: WriteOp) -> Self {
        match op {
            WriteOp::Revoke { reply, .. } => Self::Unit(reply, Err(StoreError::Closed)),
            WriteOp::NextCrlNumber { reply, .. } => Self::Number(reply, Err(StoreError::Closed)),
            WriteOp::Enroll(_, reply) => Self::Enrolled(reply, Err(StoreError::Closed)),
        }
    }
}

/// Idle reader connections.
struct ReaderPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl ReaderPool {
    fn with<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, StoreError> {
        let pooled = self.idle.lock().unwrap_or_else(PoisonError::into_inner).pop();
        let conn = match pooled {
            Some(c) => c,
            None => open_reader(&self.path).map_err(db)?,
        };
        let result = f(&conn).map_err(db);
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < MAX_IDLE_READERS {
            idle.push(conn);
        }
        result
    }
}

fn open_reader(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    scep_store::sqlite::keep_query_plans(&conn)?;
    conn.pragma_update(None, "query_only", true)?;
    Ok(conn)
}

/// The CAs whose certificates the index file at `path` holds, with their
/// counts, changing nothing (a missing file, or one without the table, holds
/// none): what the bootstrap checks before it creates a new CA, and what
/// `check-config` reads beside a running server.
///
/// # Errors
/// [`StoreError::Database`] when the file exists but cannot be read as an
/// index.
pub fn recorded_cas(path: &Path) -> Result<Vec<super::index::RecordedCa>, StoreError> {
    match std::fs::metadata(path) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StoreError::Database(format!("{}: {e}", path.display()))),
    }
    let fail = |e: rusqlite::Error| StoreError::Database(format!("{}: {e}", path.display()));
    // Read-write without create (a read-only open of a WAL database may fail
    // without its -shm file); a write-ahead log left by a running or killed
    // `serve` stays as it is: closing must not checkpoint it.
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE).map_err(fail)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(fail)?;
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    if Path::new(&wal).exists() {
        conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true).map_err(fail)?;
    }
    let has_table: bool = conn
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'certificates')",
            [],
            |r| r.get(0),
        )
        .map_err(fail)?;
    if !has_table {
        return Ok(Vec::new());
    }
    let mut stmt = conn
        .prepare(
            "SELECT ca_id, COUNT(*), (SELECT der FROM certificates AS one WHERE one.ca_id = c.ca_id LIMIT 1) \
             FROM certificates AS c GROUP BY ca_id ORDER BY ca_id",
        )
        .map_err(fail)?;
    let rows = stmt
        .query_map([], |r| {
            let (ca_id, n, der): (String, i64, Vec<u8>) = (r.get(0)?, r.get(1)?, r.get(2)?);
            Ok(super::index::RecordedCa::from_row(ca_id, u64::try_from(n).unwrap_or(0), &der))
        })
        .map_err(fail)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(fail)
}

/// Counters of the writer thread, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Transactions committed.
    pub commits: u64,
    /// Write operations committed (operations / commits = mean batch size).
    pub operations: u64,
}

#[derive(Debug, Default)]
struct WriterStats {
    commits: AtomicU64,
    operations: AtomicU64,
}

/// The certificate database (see the module docs).
pub struct Store {
    writer: Option<Sender<WriteOp>>,
    stats: Arc<WriterStats>,
    thread: Option<JoinHandle<()>>,
    readers: ReaderPool,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.readers.path).finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (creating if needed, mode 0600:
    /// [`scep_store::sqlite::ensure_private_file`]) the database at `path`, sets WAL and
    /// `synchronous=FULL`, creates the schema and starts the writer thread.
    ///
    /// # Errors
    /// When SQLite cannot open or initialise the file, or its schema is newer
    /// than this build knows.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        scep_store::sqlite::ensure_private_file(path)
            .map_err(|e| StoreError::Database(format!("{}: {e}", path.display())))?;
        let conn = Connection::open(path).map_err(db)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(db)?;
        scep_store::sqlite::keep_query_plans(&conn).map_err(db)?;
        let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0)).map_err(db)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Database(format!("cannot enable WAL journal mode (got {mode})")));
        }
        conn.pragma_update(None, "synchronous", "FULL").map_err(db)?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(db)?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::Database(format!(
                "{}: schema version {version} is newer than this scepd understands ({SCHEMA_VERSION})",
                path.display()
            )));
        }
        if version == 1 {
            // Version 2: the Intune device id. Older rows have none.
            conn.execute_batch("ALTER TABLE certificates ADD COLUMN intune_device TEXT").map_err(db)?;
        }
        conn.execute_batch(SCHEMA).map_err(db)?;
        conn.pragma_update(None, "user_version", SCHEMA_VERSION).map_err(db)?;

        let (tx, rx) = mpsc::channel();
        let stats = Arc::new(WriterStats::default());
        let writer_stats = Arc::clone(&stats);
        let thread = std::thread::Builder::new()
            .name("scepd-ca-writer".into())
            .spawn(move || run_writer(conn, &rx, &writer_stats))
            .map_err(|e| StoreError::Database(format!("cannot start the writer thread: {e}")))?;
        Ok(Self {
            writer: Some(tx),
            stats,
            thread: Some(thread),
            readers: ReaderPool { path: path.to_path_buf(), idle: Mutex::new(Vec::new()) },
        })
    }

    /// Commits and operations so far.
    pub fn stats(&self) -> StoreStats {
        StoreStats {
            commits: self.stats.commits.load(Ordering::Relaxed),
            operations: self.stats.operations.load(Ordering::Relaxed),
        }
    }

    fn send<T>(&self, make: impl FnOnce(Reply<T>) -> WriteOp) -> Result<T, StoreError> {
        let (reply, answer) = blocking_reply();
        self.writer.as_ref().ok_or(StoreError::Closed)?.send(make(reply)).map_err(|_| StoreError::Closed)?;
        answer.recv().map_err(|_| StoreError::Closed)?
    }

    /// Records a newly issued certificate for an enrolment, unless its
    /// profile's transactionID already has a certificate other than the one
    /// `cert.renewal_of` renews (then nothing is written and that certificate
    /// comes back: a resend or a conflict, RFC 8894 §3.2.1.1). The check and
    /// the insert run in the writer's transaction, so two concurrent requests
    /// with one transactionID cannot both insert. Resolves once committed;
    /// waiting holds no thread.
    ///
    /// A renewal (`cert.renewal_of` set) is checked in the same transaction:
    /// the renewed certificate must be recorded by this CA on the same
    /// profile and valid (not revoked), and not renewed before. So two
    /// concurrent renewals of one certificate cannot both insert; a resend of
    /// the one that won (same transactionID) gets its certificate back as
    /// [`Recorded::Existing`].
    ///
    /// # Errors
    /// [`StoreError::DuplicateSerial`] when the serial is taken (draw
    /// another); for a renewal [`StoreError::NotFound`],
    /// [`StoreError::AlreadyRevoked`], [`StoreError::OtherProfile`] or
    /// [`StoreError::Superseded`]; or a database error.
    pub fn record_enrollment(
        &self,
        cert: NewCertificate,
    ) -> impl Future<Output = Result<Recorded, StoreError>> + Send + 'static {
        let (reply, answer) = oneshot::channel();
        let sent = match &self.writer {
            Some(w) => w.send(WriteOp::Enroll(Box::new(cert), Reply::Async(reply))).is_ok(),
            None => false,
        };
        async move {
            if !sent {
                return Err(StoreError::Closed);
            }
            answer.await.unwrap_or(Err(StoreError::Closed))
        }
    }

    /// Marks a valid certificate revoked; returns once committed.
    ///
    /// # Errors
    /// [`StoreError::NotFound`], [`StoreError::AlreadyRevoked`] or a database error.
    pub fn revoke(
        &self,
        ca_id: &str,
        serial_hex: &str,
        at: UnixTime,
        reason: RevocationReason,
    ) -> Result<(), StoreError> {
        let (ca_id, serial_hex) = (ca_id.to_string(), serial_hex.to_string());
        self.send(|reply| WriteOp::Revoke { ca_id, serial_hex, at, reason, reply })
    }

    /// Allocates the CA's next cRLNumber (1, 2, ...; RFC 5280 §5.2.3), committed.
    ///
    /// # Errors
    /// A database error.
    pub fn next_crl_number(&self, ca_id: &str) -> Result<u64, StoreError> {
        let ca_id = ca_id.to_string();
        self.send(|reply| WriteOp::NextCrlNumber { ca_id, reply })
    }

    /// The certificate with this serial issued by CA `ca_id`.
    ///
    /// # Errors
    /// A database error.
    pub fn certificate(&self, ca_id: &str, serial_hex: &str) -> Result<Option<StoredCertificate>, StoreError> {
        self.readers.with(|c| {
            c.prepare_cached(&format!("SELECT {COLUMNS} FROM certificates WHERE serial = ?1 AND ca_id = ?2"))?
                .query_row(params![serial_hex, ca_id], stored_from_row)
                .optional()
        })
    }

    /// The latest certificate issued by CA `ca_id` for a profile's transaction.
    ///
    /// # Errors
    /// A database error.
    pub fn by_transaction(
        &self,
        ca_id: &str,
        profile: &str,
        transaction_id: &str,
    ) -> Result<Option<StoredCertificate>, StoreError> {
        self.readers.with(|c| latest_of_transaction(c, ca_id, profile, transaction_id))
    }

    /// The certificates CA `ca_id` recorded at or after `since`, oldest first,
    /// at most `limit` (start-up reconciliation with the audit log).
    ///
    /// # Errors
    /// A database error.
    pub fn issued_since(
        &self,
        ca_id: &str,
        since: UnixTime,
        limit: usize,
    ) -> Result<Vec<StoredCertificate>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.readers.with(|c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM certificates WHERE ca_id = ?1 AND issued_at >= ?2 \
                 ORDER BY issued_at, serial LIMIT ?3"
            ))?;
            let rows = stmt.query_map(params![ca_id, since.0, limit], stored_from_row)?;
            rows.collect()
        })
    }

    /// Every certificate of CA `ca_id` that is revoked, oldest revocation first.
    ///
    /// # Errors
    /// A database error, or a corrupt serial in the database.
    pub fn revoked(&self, ca_id: &str) -> Result<Vec<RevokedEntry>, StoreError> {
        let rows: Vec<(String, i64, Option<i64>)> = self.readers.with(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT serial, revoked_at, reason FROM certificates WHERE ca_id = ?1 AND status = 'revoked' \
                 ORDER BY revoked_at, serial",
            )?;
            let rows = stmt
                .query_map(params![ca_id], |r| Ok((r.get(0)?, r.get::<_, Option<i64>>(1)?.unwrap_or(0), r.get(2)?)))?;
            rows.collect()
        })?;
        rows.into_iter()
            .map(|(serial_hex, at, reason)| {
                let serial = hex_decode(&serial_hex)
                    .ok_or_else(|| StoreError::Database(format!("corrupt serial {serial_hex:?} in the database")))?;
                Ok(RevokedEntry { serial, revoked_at: UnixTime(at), reason: reason_from_db(reason) })
            })
            .collect()
    }

    /// The certificates of CA `ca_id` that renewed `serial_hex`, oldest first.
    ///
    /// # Errors
    /// A database error.
    pub fn renewals_of(&self, ca_id: &str, serial_hex: &str) -> Result<Vec<StoredCertificate>, StoreError> {
        self.readers.with(|c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM certificates WHERE ca_id = ?1 AND renewal_of = ?2 ORDER BY rowid"
            ))?;
            let rows = stmt.query_map(params![ca_id, serial_hex], stored_from_row)?;
            rows.collect()
        })
    }

    /// CA `ca_id`'s certificates matching `filter`, newest first (see
    /// [`CertificateFilter`]).
    ///
    /// # Errors
    /// A database error.
    pub fn list(&self, ca_id: &str, filter: &CertificateFilter) -> Result<Vec<StoredCertificate>, StoreError> {
        let limit = filter.limit.clamp(1, MAX_LIST_LIMIT);
        let text = filter.text.as_ref().map(|t| t.to_ascii_lowercase());
        self.readers.with(|c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM certificates WHERE ca_id = ?1 \
                 AND (?2 IS NULL OR profile = ?2) \
                 AND (?3 IS NULL OR instr(lower(subject), ?3) > 0 OR instr(lower(sans), ?3) > 0) \
                 AND (?4 IS NULL OR serial = ?4) \
                 AND (?5 IS NULL OR intune_device = ?5) \
                 AND (?6 IS NULL OR (?6 = 'revoked' AND status = 'revoked') \
                      OR (?6 = 'valid' AND status = 'valid' AND not_after >= ?7) \
                      OR (?6 = 'expired' AND status = 'valid' AND not_after < ?7)) \
                 AND (?8 IS NULL OR not_after < ?8) \
                 AND (?9 IS NULL OR rowid < ?9) \
                 ORDER BY rowid DESC LIMIT ?10"
            ))?;
            let rows = stmt.query_map(
                params![
                    ca_id,
                    filter.profile,
                    text,
                    filter.serial_hex,
                    filter.intune_device,
                    filter.status.map(StatusFilter::as_str),
                    filter.now.0,
                    filter.expires_before.map(|t| t.0),
                    filter.before_id,
                    i64::from(limit),
                ],
                stored_from_row,
            )?;
            rows.collect()
        })
    }

    /// Counts of CA `ca_id`'s certificates at `now` (see [`InventorySummary`]).
    ///
    /// # Errors
    /// A database error.
    pub fn summary(&self, ca_id: &str, now: UnixTime) -> Result<InventorySummary, StoreError> {
        let count = |n: i64| u64::try_from(n).unwrap_or(0);
        self.readers.with(|c| {
            let mut summary = c
                .prepare_cached(
                    "SELECT \
                       COALESCE(SUM(status = 'valid' AND not_after >= ?2), 0), \
                       COALESCE(SUM(status = 'revoked'), 0), \
                       COALESCE(SUM(status = 'valid' AND not_after < ?2), 0), \
                       COALESCE(SUM(status = 'valid' AND not_after >= ?2 AND not_after < ?2 + 7 * 86400), 0), \
                       COALESCE(SUM(status = 'valid' AND not_after >= ?2 AND not_after < ?2 + 30 * 86400), 0) \
                     FROM certificates WHERE ca_id = ?1",
                )?
                .query_row(params![ca_id, now.0], |r| {
                    Ok(InventorySummary {
                        valid: count(r.get(0)?),
                        revoked: count(r.get(1)?),
                        expired: count(r.get(2)?),
                        expiring_within_7_days: count(r.get(3)?),
                        expiring_within_30_days: count(r.get(4)?),
                        valid_by_expiry_month: Vec::new(),
                    })
                })?;
            let mut stmt = c.prepare_cached(
                "SELECT strftime('%Y-%m', not_after, 'unixepoch') AS month, COUNT(*) FROM certificates \
                 WHERE ca_id = ?1 AND status = 'valid' AND not_after >= ?2 GROUP BY month ORDER BY month",
            )?;
            summary.valid_by_expiry_month = stmt
                .query_map(params![ca_id, now.0], |r| Ok((r.get::<_, String>(0)?, count(r.get(1)?))))?
                .collect::<rusqlite::Result<_>>()?;
            Ok(summary)
        })
    }

    /// How many certificates CA `ca_id` has recorded.
    ///
    /// # Errors
    /// A database error.
    pub fn count(&self, ca_id: &str) -> Result<u64, StoreError> {
        self.readers.with(|c| {
            c.prepare_cached("SELECT COUNT(*) FROM certificates WHERE ca_id = ?1")?
                .query_row(params![ca_id], |r| r.get::<_, i64>(0))
                .map(|n| u64::try_from(n).unwrap_or(0))
        })
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        // Closing the channel lets the writer finish its batch and exit.
        drop(self.writer.take());
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            tracing::error!("certificate database writer thread panicked");
        }
    }
}

const COLUMNS: &str = "serial, profile, transaction_id, der, not_after, issued_at, renewal_of, status, revoked_at, \
     reason, rowid, subject, sans, not_before, intune_device";

fn stored_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredCertificate> {
    let status: String = r.get(7)?;
    let status = if status == "revoked" {
        CertStatus::Revoked {
            at: UnixTime(r.get::<_, Option<i64>>(8)?.unwrap_or(0)),
            reason: reason_from_db(r.get(9)?),
        }
    } else {
        CertStatus::Valid
    };
    Ok(StoredCertificate {
        id: r.get(10)?,
        subject: r.get(11)?,
        sans: r.get(12)?,
        not_before: UnixTime(r.get(13)?),
        intune_device: r.get(14)?,
        serial_hex: r.get(0)?,
        profile: r.get(1)?,
        transaction_id: r.get(2)?,
        der: r.get(3)?,
        not_after: UnixTime(r.get(4)?),
        issued_at: UnixTime(r.get(5)?),
        renewal_of: r.get(6)?,
        status,
    })
}

pub(crate) fn reason_from_db(code: Option<i64>) -> RevocationReason {
    code.and_then(|c| u8::try_from(c).ok())
        .and_then(RevocationReason::from_code)
        .unwrap_or(RevocationReason::Unspecified)
}

pub(crate) fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok())).collect()
}

/// The writer thread: group commit (see the module docs).
fn run_writer(mut conn: Connection, rx: &Receiver<WriteOp>, stats: &WriterStats) {
    let mut pacer = CommitPacer::default();
    while let Ok(first) = rx.recv() {
        let taken = Instant::now();
        let mut batch = Vec::with_capacity(16);
        batch.push(first);
        // Group commit: under load, let the batch fill before one fsync covers it.
        let linger = pacer.linger(taken);
        if !linger.is_zero() {
            std::thread::sleep(linger);
        }
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        pacer.record(taken, batch.len());
        commit_batch(&mut conn, batch, stats);
    }
}

fn commit_batch(conn: &mut Connection, batch: Vec<WriteOp>, stats: &WriterStats) {
    let size = batch.len();
    let tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => {
            let e = db(e);
            tracing::error!(error = %e, "certificate database: cannot begin a transaction");
            batch.into_iter().for_each(|op| Done::skipped(op).fail(&e));
            return;
        }
    };
    let mut done = Vec::with_capacity(size);
    let mut fatal = None;
    let mut ops = batch.into_iter();
    for op in ops.by_ref() {
        let d = apply(&tx, op);
        if d.is_fatal() {
            fatal = Some(d.error().cloned().unwrap_or(StoreError::Closed));
            done.push(d);
            break;
        }
        done.push(d);
    }
    done.extend(ops.map(Done::skipped));
    let outcome = match fatal {
        // Dropping the transaction rolls it back: nothing of the batch is kept.
        Some(e) => Err(e),
        None => tx.commit().map_err(db),
    };
    match outcome {
        Ok(()) => {
            stats.commits.fetch_add(1, Ordering::Relaxed);
            stats.operations.fetch_add(size as u64, Ordering::Relaxed);
            tracing::trace!(batch = size, "certificate database: committed");
            done.into_iter().for_each(Done::finish);
        }
        Err(e) => {
            tracing::error!(error = %e, batch = size, "certificate database: batch rolled back");
            done.into_iter().for_each(|d| d.fail(&e));
        }
    }
}

/// The latest certificate CA `ca_id` issued for a profile's transaction
/// (readers and the writer's enrolment check ask the same question).
fn latest_of_transaction(
    conn: &Connection,
    ca_id: &str,
    profile: &str,
    transaction_id: &str,
) -> rusqlite::Result<Option<StoredCertificate>> {
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM certificates WHERE ca_id = ?1 AND profile = ?2 AND transaction_id = ?3 \
         ORDER BY issued_at DESC, rowid DESC LIMIT 1"
    ))?
    .query_row(params![ca_id, profile, transaction_id], stored_from_row)
    .optional()
}

/// The renewal rules, inside the writer's transaction (see
/// [`Store::record_enrollment`]). `Ok(Ok(None))`: not a renewal, or one that
/// may insert; `Ok(Ok(Some(c)))`: the renewal under this transactionID that
/// already won (a resend); `Ok(Err(_))`: refused.
fn check_renewal(
    tx: &rusqlite::Transaction<'_>,
    c: &NewCertificate,
) -> rusqlite::Result<Result<Option<StoredCertificate>, StoreError>> {
    let Some(old_serial) = c.renewal_of.as_deref() else { return Ok(Ok(None)) };
    let old = tx
        .prepare_cached(&format!("SELECT {COLUMNS} FROM certificates WHERE serial = ?1 AND ca_id = ?2"))?
        .query_row(params![old_serial, c.ca_id], stored_from_row)
        .optional()?;
    let Some(old) = old else { return Ok(Err(StoreError::NotFound)) };
    if old.profile != c.profile {
        return Ok(Err(StoreError::OtherProfile { issued_on: old.profile }));
    }
    if matches!(old.status, CertStatus::Revoked { .. }) {
        return Ok(Err(StoreError::AlreadyRevoked));
    }
    let successor = tx
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM certificates WHERE ca_id = ?1 AND renewal_of = ?2 ORDER BY rowid LIMIT 1"
        ))?
        .query_row(params![c.ca_id, old_serial], stored_from_row)
        .optional()?;
    Ok(match successor {
        None => Ok(None),
        Some(s) if s.transaction_id == c.transaction_id && s.profile == c.profile => Ok(Some(s)),
        Some(s) => Err(StoreError::Superseded { by: s.serial_hex }),
    })
}

/// Inserts one certificate row; a taken serial is [`StoreError::DuplicateSerial`].
fn insert(tx: &rusqlite::Transaction<'_>, c: &NewCertificate) -> Result<(), StoreError> {
    let r = tx
        .prepare_cached(
            "INSERT INTO certificates (serial, ca_id, profile, transaction_id, subject, sans, not_before, \
                     not_after, der, issued_at, renewal_of, status, intune_device) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, 'valid', ?12)",
        )
        .and_then(|mut s| {
            s.execute(params![
                c.serial_hex,
                c.ca_id,
                c.profile,
                c.transaction_id,
                c.subject,
                c.sans,
                c.not_before.0,
                c.not_after.0,
                c.der,
                c.issued_at.0,
                c.renewal_of,
                c.intune_device,
            ])
        });
    match r {
        Ok(_) => Ok(()),
        // A failed constraint only undoes its own statement (SQLite's
        // default ABORT resolution): the batch carries on.
        Err(rusqlite::Error::SqliteFailure(e, _))
            if e.code == ErrorCode::ConstraintViolation
                && e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY =>
        {
            Err(StoreError::DuplicateSerial)
        }
        Err(e) => Err(db(e)),
    }
}

fn apply(tx: &rusqlite::Transaction<'_>, op: WriteOp) -> Done {
    match op {
        WriteOp::Enroll(c, reply) => {
            let r = match check_renewal(tx, &c) {
                Ok(Ok(None)) => match latest_of_transaction(tx, &c.ca_id, &c.profile, &c.transaction_id) {
                    Ok(Some(prev)) if c.renewal_of.as_deref() != Some(prev.serial_hex.as_str()) => {
                        Ok(Recorded::Existing(Box::new(prev)))
                    }
                    Ok(_) => insert(tx, &c).map(|()| Recorded::Inserted),
                    Err(e) => Err(db(e)),
                },
                Ok(Ok(Some(resent))) => Ok(Recorded::Existing(Box::new(resent))),
                Ok(Err(refused)) => Err(refused),
                Err(e) => Err(db(e)),
            };
            Done::Enrolled(reply, r)
        }
        WriteOp::Revoke { ca_id, serial_hex, at, reason, reply } => {
            let r = (|| {
                let changed = tx
                    .prepare_cached(
                        "UPDATE certificates SET status = 'revoked', revoked_at = ?1, reason = ?2 \
                         WHERE serial = ?3 AND ca_id = ?4 AND status = 'valid'",
                    )?
                    .execute(params![at.0, reason.code(), serial_hex, ca_id])?;
                if changed == 1 {
                    return Ok(Ok(()));
                }
                let exists = tx
                    .prepare_cached("SELECT 1 FROM certificates WHERE serial = ?1 AND ca_id = ?2")?
                    .query_row(params![serial_hex, ca_id], |_| Ok(()))
                    .optional()?
                    .is_some();
                Ok(Err(if exists { StoreError::AlreadyRevoked } else { StoreError::NotFound }))
            })();
            Done::Unit(reply, r.unwrap_or_else(|e| Err(db(e))))
        }
        WriteOp::NextCrlNumber { ca_id, reply } => {
            let r = tx
                .prepare_cached(
                    "INSERT INTO crl_number (ca_id, value) VALUES (?1, 1) \
                     ON CONFLICT (ca_id) DO UPDATE SET value = value + 1 RETURNING value",
                )
                .and_then(|mut s| s.query_row(params![ca_id], |r| r.get::<_, i64>(0)))
                .map(|n| u64::try_from(n).unwrap_or(0))
                .map_err(db);
            Done::Number(reply, r)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future::block_on;

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
            der: vec![1, 2, 3],
            issued_at: UnixTime(20),
            renewal_of: None,
            intune_device: None,
        }
    }

    #[test]
    fn insert_lookup_revoke_and_crl_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join(DB_FILE)).unwrap();
        let insert = |c| block_on(store.record_enrollment(c)).map(drop);
        insert(record("0a", "t1")).unwrap();
        assert_eq!(insert(record("0a", "t2")), Err(StoreError::DuplicateSerial));
        assert_eq!(store.count("ca1").unwrap(), 1);
        assert_eq!(store.count("ca2").unwrap(), 0);
        let got = store.certificate("ca1", "0a").unwrap().unwrap();
        assert_eq!((got.der.as_slice(), got.status), (&[1u8, 2, 3][..], CertStatus::Valid));
        assert!(store.certificate("ca2", "0a").unwrap().is_none());
        assert_eq!(store.by_transaction("ca1", "p", "t1").unwrap().unwrap().serial_hex, "0a");
        assert!(store.by_transaction("ca1", "p", "t2").unwrap().is_none());

        assert_eq!(store.revoke("ca1", "0b", UnixTime(30), RevocationReason::KeyCompromise), Err(StoreError::NotFound));
        store.revoke("ca1", "0a", UnixTime(30), RevocationReason::KeyCompromise).unwrap();
        assert_eq!(
            store.revoke("ca1", "0a", UnixTime(31), RevocationReason::Superseded),
            Err(StoreError::AlreadyRevoked)
        );
        assert_eq!(
            store.revoked("ca1").unwrap(),
            vec![RevokedEntry {
                serial: vec![0x0a],
                revoked_at: UnixTime(30),
                reason: RevocationReason::KeyCompromise
            }]
        );
        assert_eq!(store.next_crl_number("ca1").unwrap(), 1);
        assert_eq!(store.next_crl_number("ca1").unwrap(), 2);
        assert_eq!(store.next_crl_number("ca2").unwrap(), 1);
        drop(store);

        // Everything above was committed: a new process sees it.
        let store = Store::open(&dir.path().join(DB_FILE)).unwrap();
        assert!(matches!(store.certificate("ca1", "0a").unwrap().unwrap().status, CertStatus::Revoked { .. }));
        assert_eq!(store.next_crl_number("ca1").unwrap(), 3);
    }

    #[test]
    fn group_commit_answers_every_caller() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join(DB_FILE)).unwrap();
        std::thread::scope(|s| {
            for t in 0..8 {
                let store = &store;
                s.spawn(move || {
                    for i in 0..50 {
                        let serial = format!("{t:02x}{i:02x}");
                        assert_eq!(block_on(store.record_enrollment(record(&serial, &serial))), Ok(Recorded::Inserted));
                    }
                });
            }
        });
        assert_eq!(store.count("ca1").unwrap(), 400);
    }

    #[test]
    fn queued_operations_share_one_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_FILE);
        // The schema, then a writer fed with operations queued before it runs.
        drop(Store::open(&path).unwrap());
        let (tx, rx) = mpsc::channel();
        let mut answers = Vec::new();
        for (serial, txid) in [("01", "a"), ("02", "b"), ("01", "c")] {
            let (reply, answer) = blocking_reply();
            tx.send(WriteOp::Enroll(Box::new(record(serial, txid)), reply)).unwrap();
            answers.push(answer);
        }
        let (reply, number) = blocking_reply();
        tx.send(WriteOp::NextCrlNumber { ca_id: "ca1".into(), reply }).unwrap();
        drop(tx);
        let stats = WriterStats::default();
        run_writer(Connection::open(&path).unwrap(), &rx, &stats);
        assert_eq!(stats.commits.load(Ordering::Relaxed), 1, "one transaction for the batch");
        assert_eq!(stats.operations.load(Ordering::Relaxed), 4);
        let results: Vec<_> = answers.iter().map(|a| a.recv().unwrap().map(drop)).collect();
        assert_eq!(results, [Ok(()), Ok(()), Err(StoreError::DuplicateSerial)]);
        assert_eq!(number.recv().unwrap(), Ok(1));
        let store = Store::open(&path).unwrap();
        assert_eq!(store.count("ca1").unwrap(), 2, "the duplicate did not undo the rest of the batch");
        assert_eq!(store.by_transaction("ca1", "p", "a").unwrap().unwrap().serial_hex, "01");
    }

    #[test]
    fn an_enrolment_is_recorded_once_per_transaction_even_within_one_batch() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_FILE);
        drop(Store::open(&path).unwrap());
        // Two requests with one transactionID queued into the same batch: the
        // second sees the first's row (same transaction), so only one inserts.
        let (tx, rx) = mpsc::channel();
        let (r1, a1) = oneshot::channel();
        let (r2, a2) = oneshot::channel();
        tx.send(WriteOp::Enroll(Box::new(record("01", "t")), Reply::Async(r1))).unwrap();
        tx.send(WriteOp::Enroll(Box::new(record("02", "t")), Reply::Async(r2))).unwrap();
        drop(tx);
        run_writer(Connection::open(&path).unwrap(), &rx, &WriterStats::default());
        assert_eq!(block_on(a1).unwrap(), Ok(Recorded::Inserted));
        match block_on(a2).unwrap() {
            Ok(Recorded::Existing(prev)) => assert_eq!(prev.serial_hex, "01"),
            other => panic!("{other:?}"),
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(store.count("ca1").unwrap(), 1);
        // A renewal of the transaction's own certificate is a new record.
        let mut renewal = record("03", "t");
        renewal.renewal_of = Some("01".into());
        assert_eq!(block_on(store.record_enrollment(renewal)), Ok(Recorded::Inserted));
        // Renewing something else under that transactionID is not.
        assert_eq!(block_on(store.record_enrollment(record("05", "v"))), Ok(Recorded::Inserted));
        let mut other = record("04", "t");
        other.renewal_of = Some("05".into());
        match block_on(store.record_enrollment(other)) {
            Ok(Recorded::Existing(prev)) => assert_eq!(prev.serial_hex, "03", "the latest of the transaction"),
            other => panic!("{other:?}"),
        }
        // A renewal of an unknown certificate records nothing.
        let mut unknown = record("06", "w");
        unknown.renewal_of = Some("ff".into());
        assert_eq!(block_on(store.record_enrollment(unknown)), Err(StoreError::NotFound));
        // A taken serial under a new transactionID.
        assert_eq!(block_on(store.record_enrollment(record("01", "u"))), Err(StoreError::DuplicateSerial));
        assert_eq!(store.count("ca1").unwrap(), 3);
    }

    /// Issue 13: the writer checks a renewal's profile, revocation and
    /// once-only rule in its transaction; two renewals of one certificate
    /// queued into one batch: the first inserts, the second is superseded,
    /// and a resend of the first (same transactionID) gets its certificate.
    #[test]
    fn a_certificate_renews_once_on_its_own_profile_even_within_one_batch() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_FILE);
        let store = Store::open(&path).unwrap();
        assert_eq!(block_on(store.record_enrollment(record("01", "t"))), Ok(Recorded::Inserted));
        let renewal = |serial: &str, txid: &str, profile: &str| {
            let mut r = record(serial, txid);
            r.profile = profile.into();
            r.renewal_of = Some("01".into());
            r
        };
        assert_eq!(
            block_on(store.record_enrollment(renewal("02", "r", "other"))),
            Err(StoreError::OtherProfile { issued_on: "p".into() })
        );
        drop(store);
        let (tx, rx) = mpsc::channel();
        let (r1, a1) = oneshot::channel();
        let (r2, a2) = oneshot::channel();
        let (r3, a3) = oneshot::channel();
        tx.send(WriteOp::Enroll(Box::new(renewal("02", "r1", "p")), Reply::Async(r1))).unwrap();
        tx.send(WriteOp::Enroll(Box::new(renewal("03", "r2", "p")), Reply::Async(r2))).unwrap();
        tx.send(WriteOp::Enroll(Box::new(renewal("04", "r1", "p")), Reply::Async(r3))).unwrap();
        drop(tx);
        run_writer(Connection::open(&path).unwrap(), &rx, &WriterStats::default());
        assert_eq!(block_on(a1).unwrap(), Ok(Recorded::Inserted));
        assert_eq!(block_on(a2).unwrap(), Err(StoreError::Superseded { by: "02".into() }));
        match block_on(a3).unwrap() {
            Ok(Recorded::Existing(prev)) => assert_eq!(prev.serial_hex, "02", "a resend of the winner"),
            other => panic!("{other:?}"),
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(store.count("ca1").unwrap(), 2);
        store.revoke("ca1", "02", UnixTime(30), RevocationReason::KeyCompromise).unwrap();
        let mut next = record("05", "r5");
        next.renewal_of = Some("02".into());
        assert_eq!(block_on(store.record_enrollment(next)), Err(StoreError::AlreadyRevoked));
    }

    /// Issue 17: the inventory's filters combine, page newest first by id,
    /// and judge `valid`/`expired` at the query's `now`.
    #[test]
    fn inventory_filters_and_pages() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join(DB_FILE)).unwrap();
        let add = |serial: &str, profile: &str, subject: &str, sans: &str, not_after: i64, device: Option<&str>| {
            let mut c = record(serial, serial);
            c.profile = profile.into();
            c.subject = subject.into();
            c.sans = sans.into();
            c.not_after = UnixTime(not_after);
            c.intune_device = device.map(Into::into);
            assert_eq!(block_on(store.record_enrollment(c)), Ok(Recorded::Inserted));
        };
        add("01", "corp", "CN=laptop-1,O=Corp", "DNS:laptop-1.corp.example", 5_000, None);
        add("02", "corp", "CN=phone-7", "", 900, Some("dev-7"));
        add("03", "wifi", "CN=Printer-3", "IP:10.0.0.3", 3_000_000, None);
        add("04", "wifi", "CN=tablet-4", "DNS:tablet-4.corp.example", 100_000, Some("dev-4"));
        store.revoke("ca1", "04", UnixTime(950), RevocationReason::KeyCompromise).unwrap();
        let now = UnixTime(1_000);
        let serials = |f: &CertificateFilter| -> Vec<String> {
            store.list("ca1", f).unwrap().into_iter().map(|c| c.serial_hex).collect()
        };
        let all = CertificateFilter::newest(100, now);
        assert_eq!(serials(&all), ["04", "03", "02", "01"], "newest first");
        assert_eq!(serials(&CertificateFilter { profile: Some("wifi".into()), ..all.clone() }), ["04", "03"]);
        assert_eq!(serials(&CertificateFilter { text: Some("PRINTER".into()), ..all.clone() }), ["03"]);
        assert_eq!(serials(&CertificateFilter { text: Some("corp.example".into()), ..all.clone() }), ["04", "01"]);
        assert_eq!(serials(&CertificateFilter { serial_hex: Some("02".into()), ..all.clone() }), ["02"]);
        assert_eq!(serials(&CertificateFilter { intune_device: Some("dev-7".into()), ..all.clone() }), ["02"]);
        assert_eq!(serials(&CertificateFilter { status: Some(StatusFilter::Valid), ..all.clone() }), ["03", "01"]);
        assert_eq!(serials(&CertificateFilter { status: Some(StatusFilter::Expired), ..all.clone() }), ["02"]);
        assert_eq!(serials(&CertificateFilter { status: Some(StatusFilter::Revoked), ..all.clone() }), ["04"]);
        assert_eq!(
            serials(&CertificateFilter { expires_before: Some(UnixTime(100_001)), ..all.clone() }),
            ["04", "02", "01"]
        );
        assert_eq!(
            serials(&CertificateFilter {
                profile: Some("corp".into()),
                status: Some(StatusFilter::Valid),
                ..all.clone()
            }),
            ["01"],
            "filters combine with AND"
        );
        assert!(serials(&CertificateFilter { serial_hex: Some("05".into()), ..all.clone() }).is_empty());
        // Paging: two at a time, each page continuing below the last id.
        let first = store.list("ca1", &CertificateFilter { limit: 2, ..all.clone() }).unwrap();
        assert_eq!(first.iter().map(|c| c.serial_hex.as_str()).collect::<Vec<_>>(), ["04", "03"]);
        let next = CertificateFilter { limit: 2, before_id: Some(first[1].id), ..all.clone() };
        assert_eq!(serials(&next), ["02", "01"]);
        let last = store.list("ca1", &next).unwrap();
        assert!(serials(&CertificateFilter { before_id: Some(last[1].id), ..all.clone() }).is_empty());
        // The record carries what the inventory shows.
        let phone = &store.list("ca1", &CertificateFilter { serial_hex: Some("02".into()), ..all }).unwrap()[0];
        assert_eq!((phone.subject.as_str(), phone.intune_device.as_deref()), ("CN=phone-7", Some("dev-7")));
        assert_eq!(phone.not_before, UnixTime(10));

        let summary = store.summary("ca1", now).unwrap();
        assert_eq!((summary.valid, summary.revoked, summary.expired), (2, 1, 1));
        // 01 expires in 4000 s; 03 in ~35 days.
        assert_eq!((summary.expiring_within_7_days, summary.expiring_within_30_days), (1, 1));
        assert_eq!(summary.valid_by_expiry_month, [("1970-01".to_string(), 1), ("1970-02".to_string(), 1)]);
        assert_eq!(store.summary("ca2", now).unwrap(), InventorySummary::default());
        assert_eq!(store.renewals_of("ca1", "01").unwrap(), []);
    }

    /// A version 1 database (before the Intune device column) opens, keeps
    /// its rows and records device ids from then on.
    #[test]
    fn a_version_1_database_is_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_FILE);
        {
            let conn = Connection::open(&path).unwrap();
            let v1 = SCHEMA.replace(
                ",\n    intune_device   TEXT                         -- Intune claim `sub` (device id), when Intune authorised it",
                "",
            );
            assert!(!v1.contains("intune_device"));
            conn.execute_batch(&v1.replace(
                "CREATE INDEX IF NOT EXISTS certificates_by_not_after ON certificates (ca_id, not_after);",
                "",
            ))
            .unwrap();
            conn.execute(
                "INSERT INTO certificates (serial, ca_id, profile, transaction_id, subject, sans, not_before, not_after, \
                 der, issued_at) VALUES ('0a', 'ca1', 'p', 't', 'CN=old', '', 1, 2, x'00', 1)",
                [],
            )
            .unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
        }
        let store = Store::open(&path).unwrap();
        let old = store.certificate("ca1", "0a").unwrap().unwrap();
        assert_eq!((old.subject.as_str(), old.intune_device), ("CN=old", None));
        let mut new = record("0b", "t2");
        new.intune_device = Some("dev".into());
        block_on(store.record_enrollment(new)).unwrap();
        assert_eq!(store.certificate("ca1", "0b").unwrap().unwrap().intune_device.as_deref(), Some("dev"));
        drop(store);
        let conn = Connection::open(&path).unwrap();
        assert_eq!(conn.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0)).unwrap(), SCHEMA_VERSION);
    }

    #[test]
    fn hex_decoding() {
        assert_eq!(hex_decode("0aff"), Some(vec![0x0a, 0xff]));
        assert_eq!(hex_decode("0af"), None);
        assert_eq!(hex_decode("zz"), None);
    }
}
