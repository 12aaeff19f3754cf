//! The embedded backend: `protection.sqlite` in the data directory.
//!
//! One writer thread owns the connection and **group-commits**: it takes
//! every operation queued, applies them in order in one `BEGIN IMMEDIATE`
//! transaction (which also serialises several processes on one file),
//! commits once with `synchronous = FULL` (one fsync for the batch), then
//! answers each caller. So a nonce accepted before a crash or restart is
//! still refused after it, and concurrent enrolments share the fsync
//! instead of queueing for one each. Two claims of one nonce in one batch:
//! the second sees the first's row (same transaction) and is a replay.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension as _, TransactionBehavior, params};

use crate::migrations::{self, SCHEMA_TABLE};
use crate::{Admission, NonceClaim, ProtectionStore, Purged, StoreError, StoreHealth};

/// File name of the database inside the data directory.
pub const DB_FILE: &str = "protection.sqlite";

/// How long a connection waits for another process's lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Most operations one transaction takes (bounds the first one's wait).
const MAX_BATCH: usize = 256;

/// The SQLite protection store.
#[derive(Debug)]
pub struct SqliteStore {
    writer: Mutex<Option<Sender<Op>>>,
    thread: Option<JoinHandle<()>>,
    path: PathBuf,
}

/// One queued operation and where its answer goes.
enum Op {
    Claim { key: Vec<u8>, expires_at: i64, now: i64, reply: SyncSender<Result<NonceClaim, StoreError>> },
    Admit { device: Vec<u8>, now: i64, window_secs: i64, limit: u32, reply: SyncSender<Result<Admission, StoreError>> },
    Purge { now: i64, reply: SyncSender<Result<Purged, StoreError>> },
}

/// An applied (not yet committed) operation: its reply and result.
enum Done {
    Claim(SyncSender<Result<NonceClaim, StoreError>>, NonceClaim),
    Admit(SyncSender<Result<Admission, StoreError>>, Admission),
    Purge(SyncSender<Result<Purged, StoreError>>, Purged),
}

impl Done {
    fn answer(self) {
        // A caller that went away needs no answer.
        match self {
            Self::Claim(r, v) => drop(r.send(Ok(v))),
            Self::Admit(r, v) => drop(r.send(Ok(v))),
            Self::Purge(r, v) => drop(r.send(Ok(v))),
        }
    }
}

impl Op {
    fn fail(self, e: &StoreError) {
        match self {
            Self::Claim { reply, .. } => drop(reply.send(Err(e.clone()))),
            Self::Admit { reply, .. } => drop(reply.send(Err(e.clone()))),
            Self::Purge { reply, .. } => drop(reply.send(Err(e.clone()))),
        }
    }

    fn apply(self, tx: &rusqlite::Transaction<'_>) -> Result<Done, Box<(Self, rusqlite::Error)>> {
        match self {
            Self::Claim { key, expires_at, now, reply } => match claim(tx, &key, expires_at, now) {
                Ok(v) => Ok(Done::Claim(reply, v)),
                Err(e) => Err(Box::new((Self::Claim { key, expires_at, now, reply }, e))),
            },
            Self::Admit { device, now, window_secs, limit, reply } => {
                match admit(tx, &device, now, window_secs, limit) {
                    Ok(v) => Ok(Done::Admit(reply, v)),
                    Err(e) => Err(Box::new((Self::Admit { device, now, window_secs, limit, reply }, e))),
                }
            }
            Self::Purge { now, reply } => match purge(tx, now) {
                Ok(v) => Ok(Done::Purge(reply, v)),
                Err(e) => Err(Box::new((Self::Purge { now, reply }, e))),
            },
        }
    }
}

fn claim(tx: &rusqlite::Transaction<'_>, key: &[u8], expires_at: i64, now: i64) -> rusqlite::Result<NonceClaim> {
    let won: Option<i64> = tx
        .prepare_cached(
            "INSERT INTO replay_nonces (key, expires_at) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET expires_at = excluded.expires_at
             WHERE replay_nonces.expires_at <= ?3
             RETURNING 1",
        )?
        .query_row(params![key, expires_at, now], |r| r.get(0))
        .optional()?;
    Ok(if won.is_some() { NonceClaim::Accepted } else { NonceClaim::Replay })
}

fn admit(
    tx: &rusqlite::Transaction<'_>,
    device: &[u8],
    now: i64,
    window_secs: i64,
    limit: u32,
) -> rusqlite::Result<Admission> {
    let cutoff = now.saturating_sub(window_secs);
    let expires = now.saturating_add(window_secs);
    let (count, oldest): (i64, Option<i64>) = tx
        .prepare_cached("SELECT COUNT(*), MIN(at) FROM rate_events WHERE device = ?1 AND at > ?2")?
        .query_row(params![device, cutoff], |r| Ok((r.get(0)?, r.get(1)?)))?;
    if count >= i64::from(limit) {
        return Ok(Admission::Limited { retry_at: oldest.unwrap_or(now).saturating_add(window_secs) });
    }
    tx.prepare_cached(
        "INSERT INTO rate_devices (device, expires_at) VALUES (?1, ?2)
         ON CONFLICT (device) DO UPDATE SET expires_at = MAX(rate_devices.expires_at, excluded.expires_at)",
    )?
    .execute(params![device, expires])?;
    tx.prepare_cached("INSERT INTO rate_events (device, at, expires_at) VALUES (?1, ?2, ?3)")?
        .execute(params![device, now, expires])?;
    Ok(Admission::Admitted)
}

fn purge(tx: &rusqlite::Transaction<'_>, now: i64) -> rusqlite::Result<Purged> {
    let nonces = tx.execute("DELETE FROM replay_nonces WHERE expires_at <= ?1", [now])?;
    let rate_events = tx.execute("DELETE FROM rate_events WHERE expires_at <= ?1", [now])?;
    tx.execute("DELETE FROM rate_devices WHERE expires_at <= ?1", [now])?;
    Ok(Purged { nonces: nonces as u64, rate_events: rate_events as u64 })
}

/// The writer: batches, one transaction and one commit per batch.
fn run_writer(mut conn: Connection, rx: &Receiver<Op>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
            Ok(tx) => tx,
            Err(e) => {
                let e = unavailable(e);
                batch.into_iter().for_each(|op| op.fail(&e));
                continue;
            }
        };
        let mut done = Vec::with_capacity(batch.len());
        let mut ops = batch.into_iter();
        let mut failure = None;
        for op in ops.by_ref() {
            match op.apply(&tx) {
                Ok(d) => done.push(d),
                Err(failed) => {
                    let (op, e) = *failed;
                    failure = Some((op, unavailable(e)));
                    break;
                }
            }
        }
        if let Some((op, e)) = failure {
            // The batch does not commit: every caller in it gets the error.
            drop(tx.rollback());
            op.fail(&e);
            ops.for_each(|op| op.fail(&e));
            for d in done {
                match d {
                    Done::Claim(r, _) => drop(r.send(Err(e.clone()))),
                    Done::Admit(r, _) => drop(r.send(Err(e.clone()))),
                    Done::Purge(r, _) => drop(r.send(Err(e.clone()))),
                }
            }
            continue;
        }
        match tx.commit() {
            Ok(()) => done.into_iter().for_each(Done::answer),
            Err(e) => {
                let e = unavailable(e);
                for d in done {
                    match d {
                        Done::Claim(r, _) => drop(r.send(Err(e.clone()))),
                        Done::Admit(r, _) => drop(r.send(Err(e.clone()))),
                        Done::Purge(r, _) => drop(r.send(Err(e.clone()))),
                    }
                }
            }
        }
    }
}

/// Keeps each prepared statement's query plan for the life of the statement
/// (SQLite's query planner stability guarantee, `SQLITE_DBCONFIG_ENABLE_QPSG`).
///
/// Without it, a statement whose planning looked at a bound value is marked to
/// be compiled again whenever a new value is bound, so a cached statement is
/// parsed and planned on every use. The local CA's "latest certificate of this
/// transactionID" query (`... ORDER BY issued_at DESC, rowid DESC LIMIT 1`)
/// was re-prepared on every enrolment: 30% of its writer thread's CPU
/// (session 8, `docs/benchmarks-e2e.md`). scepd never runs `ANALYZE` and binds
/// no `LIKE` patterns, so the value-dependent plans this gives up were never
/// better. Every long-lived scepd SQLite connection (the stores' writers and
/// the certificate index's readers) calls this once, after opening.
///
/// # Errors
/// When SQLite refuses the setting.
pub fn keep_query_plans(conn: &Connection) -> rusqlite::Result<()> {
    conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true).map(drop)
}

/// Makes the SQLite database file `path` private to the service before
/// SQLite opens it: created empty with mode 0600 when missing (SQLite takes an
/// empty file as a new database and gives the `-wal` and `-shm` files it
/// creates the database file's mode), and set to 0600 when it exists with a
/// wider mode (a data directory of an older scepd), as are `-wal` and `-shm`
/// files a killed process left. Every scepd SQLite database (the protection
/// store, the local CA's certificate index, the audit log, the one-time
/// challenges) goes through it before its first open, so none is readable by
/// other users, not even for a moment.
///
/// # Errors
/// When the file cannot be created or its mode cannot be set.
pub fn ensure_private_file(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
        // No truncation: an existing database is opened, never emptied.
        std::fs::OpenOptions::new().write(true).create(true).truncate(false).mode(0o600).open(path)?;
        let mut sidecars = [path.as_os_str().to_owned(), path.as_os_str().to_owned()];
        sidecars[0].push("-wal");
        sidecars[1].push("-shm");
        for file in std::iter::once(path).chain(sidecars.iter().map(Path::new)) {
            match std::fs::metadata(file) {
                Ok(m) if m.permissions().mode() & 0o077 != 0 => {
                    std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600))?;
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

fn unavailable(e: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    ensure_private_file(path).map_err(|e| StoreError::Unavailable(format!("{}: {e}", path.display())))?;
    let conn = Connection::open(path).map_err(|e| StoreError::Unavailable(format!("{}: {e}", path.display())))?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(unavailable)?;
    keep_query_plans(&conn).map_err(unavailable)?;
    conn.pragma_update(None, "journal_mode", "WAL").map_err(unavailable)?;
    conn.pragma_update(None, "synchronous", "FULL").map_err(unavailable)?;
    Ok(conn)
}

/// Applies pending migrations on `conn`: `(before, after)`.
fn apply_migrations(conn: &mut Connection) -> Result<(i64, i64), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(unavailable)?;
    tx.execute_batch(SCHEMA_TABLE).map_err(unavailable)?;
    let before = current_version(&tx)?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    let mut after = before;
    for m in migrations::pending(before)? {
        tx.execute_batch(m.sqlite)
            .map_err(|e| StoreError::Schema(format!("migration {} ({}): {e}", m.version, m.name)))?;
        tx.execute(
            "INSERT INTO scepd_schema (version, name, applied_at) VALUES (?1, ?2, ?3)",
            params![m.version, m.name, now],
        )
        .map_err(unavailable)?;
        after = m.version;
    }
    tx.commit().map_err(unavailable)?;
    Ok((before, after))
}

fn current_version(conn: &Connection) -> Result<i64, StoreError> {
    conn.query_row("SELECT COALESCE(MAX(version), 0) FROM scepd_schema", [], |r| r.get(0)).map_err(unavailable)
}

impl SqliteStore {
    /// The database file in `data_dir`.
    pub fn file(data_dir: &Path) -> PathBuf {
        data_dir.join(DB_FILE)
    }

    /// Opens (creating) `path` and applies pending migrations.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the file cannot be opened,
    /// [`StoreError::Schema`] for a newer schema.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let mut conn = open_connection(path)?;
        apply_migrations(&mut conn)?;
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("scepd-protection-writer".into())
            .spawn(move || run_writer(conn, &rx))
            .map_err(|e| StoreError::Unavailable(format!("starting the writer thread: {e}")))?;
        Ok(Self { writer: Mutex::new(Some(tx)), thread: Some(thread), path: path.to_path_buf() })
    }

    /// Applies pending migrations to `path`: `(before, after)`.
    ///
    /// # Errors
    /// As [`Self::open`].
    pub fn migrate_file(path: &Path) -> Result<(i64, i64), StoreError> {
        apply_migrations(&mut open_connection(path)?)
    }

    /// The schema version of `path` (0 when the file does not exist yet),
    /// changing nothing.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the file cannot be read.
    pub fn schema_version_of(path: &Path) -> Result<i64, StoreError> {
        if !path.exists() {
            return Ok(0);
        }
        // Read-write without create (a read-only open of a WAL database may
        // fail without its -shm file); a write-ahead log left by a running or
        // killed `serve` stays as it is: closing must not checkpoint it.
        let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE)
            .map_err(|e| StoreError::Unavailable(format!("{}: {e}", path.display())))?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(unavailable)?;
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        if Path::new(&wal).exists() {
            conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)
                .map_err(unavailable)?;
        }
        let exists: Option<i64> = conn
            .query_row("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'scepd_schema'", [], |r| r.get(0))
            .optional()
            .map_err(unavailable)?;
        if exists.is_none() {
            return Ok(0);
        }
        current_version(&conn)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Queues an operation and waits for its committed answer.
    fn send<T>(&self, make: impl FnOnce(SyncSender<Result<T, StoreError>>) -> Op) -> Result<T, StoreError> {
        let (reply, answer) = mpsc::sync_channel(1);
        let sent = match &*self.writer.lock().unwrap_or_else(PoisonError::into_inner) {
            Some(writer) => writer.send(make(reply)).is_ok(),
            None => false,
        };
        if !sent {
            return Err(StoreError::Unavailable("the protection store's writer has stopped".into()));
        }
        answer
            .recv()
            .unwrap_or_else(|_| Err(StoreError::Unavailable("the protection store's writer has stopped".into())))
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // Closing the queue ends the writer after what is queued.
        drop(self.writer.lock().unwrap_or_else(PoisonError::into_inner).take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl ProtectionStore for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    fn claim_nonce(&self, key: &[u8], expires_at: i64, now: i64) -> Result<NonceClaim, StoreError> {
        let key = key.to_vec();
        self.send(|reply| Op::Claim { key, expires_at, now, reply })
    }

    fn admit(&self, device: &[u8], now: i64, window_secs: i64, limit: u32) -> Result<Admission, StoreError> {
        if limit == 0 {
            return Ok(Admission::Admitted);
        }
        let device = device.to_vec();
        self.send(|reply| Op::Admit { device, now, window_secs, limit, reply })
    }

    fn purge_expired(&self, now: i64) -> Result<Purged, StoreError> {
        self.send(|reply| Op::Purge { now, reply })
    }

    fn health(&self, _probe: bool) -> StoreHealth {
        // A local file: reachable while the connection is open.
        StoreHealth::Reachable
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How often one cached statement was compiled again over three uses
    /// with three different transactionIDs.
    fn reprepares_of_the_latest_by_transaction_query(conn: &Connection) -> i32 {
        conn.execute_batch(
            "CREATE TABLE certificates (serial TEXT PRIMARY KEY, ca_id TEXT, profile TEXT, transaction_id TEXT, \
             issued_at INTEGER); \
             CREATE INDEX by_transaction ON certificates (ca_id, profile, transaction_id);",
        )
        .expect("schema");
        let sql = "SELECT serial FROM certificates WHERE ca_id = ?1 AND profile = ?2 AND transaction_id = ?3 \
                   ORDER BY issued_at DESC, rowid DESC LIMIT 1";
        for tid in ["t1", "t2", "t3"] {
            let mut stmt = conn.prepare_cached(sql).expect("prepare");
            let _ = stmt.query_row(params!["ca", "corp", tid], |_| Ok(())).optional().expect("query");
        }
        conn.prepare_cached(sql).expect("cached").get_status(rusqlite::StatementStatus::RePrepare)
    }

    /// With the planner's stability guarantee a cached statement is compiled
    /// once; without it SQLite compiles this query again on every new binding
    /// (the control shows the setting is what makes the difference).
    #[test]
    fn kept_query_plans_are_not_compiled_again_for_new_bindings() {
        let plain = Connection::open_in_memory().expect("open");
        assert!(reprepares_of_the_latest_by_transaction_query(&plain) > 0, "SQLite's default re-prepares");
        let kept = Connection::open_in_memory().expect("open");
        keep_query_plans(&kept).expect("QPSG");
        assert_eq!(reprepares_of_the_latest_by_transaction_query(&kept), 0);
    }

    /// The protection store's database and the `-wal`/`-shm` files SQLite
    /// makes beside it are private from the first byte; a database an older
    /// scepd left readable by others is made private when opened.
    #[cfg(unix)]
    #[test]
    fn database_files_are_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = |p: &Path| std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
        let dir = tempfile::tempdir().expect("temp dir");
        let path = SqliteStore::file(dir.path());
        let store = SqliteStore::open(&path).expect("open");
        store.claim_nonce(b"n", 10, 1).expect("claim");
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&sidecar_of(&path, "-wal")), 0o600, "SQLite gives the WAL the database's mode");
        assert_eq!(mode(&sidecar_of(&path, "-shm")), 0o600);
        drop(store);

        let old = dir.path().join("old.sqlite");
        std::fs::write(&old, b"").expect("write");
        std::fs::write(sidecar_of(&old, "-wal"), b"").expect("write");
        for p in [old.clone(), sidecar_of(&old, "-wal")] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        }
        ensure_private_file(&old).expect("private");
        assert_eq!((mode(&old), mode(&sidecar_of(&old, "-wal"))), (0o600, 0o600));
        assert_eq!(std::fs::read(&old).expect("read"), b"", "never truncated or written");
    }

    #[cfg(unix)]
    fn sidecar_of(path: &Path, suffix: &str) -> PathBuf {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        PathBuf::from(p)
    }

    /// Operations queued before the writer runs are applied in order in one
    /// batch: the second claim of a nonce sees the first's row, and the
    /// admissions count each other; the batch is committed.
    #[test]
    fn queued_operations_share_one_transaction() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = SqliteStore::file(dir.path());
        drop(SqliteStore::open(&path).expect("open"));
        let (tx, rx) = mpsc::channel();
        let mut claims = Vec::new();
        for _ in 0..2 {
            let (reply, answer) = mpsc::sync_channel(1);
            tx.send(Op::Claim { key: b"same".to_vec(), expires_at: 100, now: 10, reply }).expect("queue");
            claims.push(answer);
        }
        let mut admissions = Vec::new();
        for now in 10..13 {
            let (reply, answer) = mpsc::sync_channel(1);
            tx.send(Op::Admit { device: b"dev".to_vec(), now, window_secs: 100, limit: 2, reply }).expect("queue");
            admissions.push(answer);
        }
        drop(tx);
        run_writer(open_connection(&path).expect("connection"), &rx);
        let claims: Vec<_> = claims.iter().map(|a| a.recv().expect("answered")).collect();
        assert_eq!(claims, [Ok(NonceClaim::Accepted), Ok(NonceClaim::Replay)]);
        let admissions: Vec<_> = admissions.iter().map(|a| a.recv().expect("answered")).collect();
        assert_eq!(
            admissions,
            [Ok(Admission::Admitted), Ok(Admission::Admitted), Ok(Admission::Limited { retry_at: 110 })]
        );
        // Committed: a new store sees it.
        let store = SqliteStore::open(&path).expect("reopen");
        assert_eq!(store.claim_nonce(b"same", 100, 11), Ok(NonceClaim::Replay));
    }
}
