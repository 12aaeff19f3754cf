//! The durable audit log: every SCEP decision is one event in SQLite (WAL).
//!
//! One writer thread owns the database. Requests hand it events through a
//! channel and wait for the commit ([`AuditLog::record`] resolves once the
//! event's transaction is durable); the writer commits everything queued in
//! one transaction (group commit), so a burst of requests shares one fsync.
//! The service writes the HTTP response only after that, so after a crash
//! (even `kill -9`) every acknowledged response has its event on disk.
//!
//! `PRAGMA journal_mode = WAL` and `synchronous = FULL`: a commit is on stable
//! storage when `record` resolves, also across power loss.
//!
//! Queries ([`AuditLog::query`]) run on the same thread, between commits, so
//! they see every acknowledged event. Events older than `retention_days` are
//! deleted at start and once an hour.
//!
//! ```toml
//! [audit]
//! path = "audit.db"        # default <data_dir>/audit.db; relative to the config file
//! retention_days = 365     # 1..=36500; default 365
//! ```

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use rusqlite::{Connection, params};
#[cfg(test)]
use scep_engine::Operation;
use scep_engine::config::ConfigError;
use scep_engine::{Outcome, UnixTime};
use serde::{Deserialize, Serialize};

use crate::config::{int_in, resolve};

/// Default audit database file name, in the data directory.
pub const DEFAULT_FILE: &str = "audit.db";
/// Default retention.
pub const DEFAULT_RETENTION_DAYS: i64 = 365;
/// Most events one query returns.
pub const MAX_QUERY_LIMIT: u32 = 1000;
/// Most events committed in one transaction.
const MAX_BATCH: usize = 512;
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// The `[audit]` table, as written.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSection {
    /// `path`
    pub path: Option<PathBuf>,
    /// `retention_days`
    pub retention_days: Option<i64>,
}

/// Validated audit settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditSettings {
    /// The database file; `None`: `<data_dir>/audit.db`.
    pub path: Option<PathBuf>,
    /// Events older than this many days are deleted.
    pub retention_days: i64,
}

impl Default for AuditSettings {
    fn default() -> Self {
        Self { path: None, retention_days: DEFAULT_RETENTION_DAYS }
    }
}

impl AuditSection {
    /// Validates the `[audit]` table.
    ///
    /// # Errors
    /// Naming `audit.<key>`.
    pub fn validate(&self, base: Option<&Path>) -> Result<AuditSettings, ConfigError> {
        let path = match &self.path {
            Some(p) if p.as_os_str().is_empty() => return Err(ConfigError("audit.path: must not be empty".into())),
            Some(p) => Some(resolve(base, p)),
            None => None,
        };
        let retention_days = int_in("audit.retention_days", self.retention_days, 1, 36_500, DEFAULT_RETENTION_DAYS)?;
        Ok(AuditSettings { path, retention_days })
    }
}

impl AuditSettings {
    /// The database file for `data_dir`.
    pub fn file(&self, data_dir: &Path) -> PathBuf {
        self.path.clone().unwrap_or_else(|| data_dir.join(DEFAULT_FILE))
    }
}

/// One audit event (also the JSON shape of the audit query endpoint).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct AuditEvent {
    /// Row id, increasing (0 before it is stored).
    pub id: i64,
    /// When the decision was made, RFC 3339 UTC.
    pub time: String,
    /// Seconds since the epoch.
    pub time_unix: i64,
    /// The profile (empty when the path named none that exists).
    pub profile: String,
    /// `scep_pkcsreq`, `scep_renewalreq_intune`, `scep_getcacaps`, ... (see [`Outcome::action`]).
    pub action: String,
    /// The SCEP operation (`GetCACaps`, `PKIOperation`, ...).
    pub operation: String,
    /// The PKIMessage type, once known (`PKCSReq`, ...).
    pub message_type: Option<String>,
    /// The transactionID, once known.
    pub transaction_id: Option<String>,
    /// The outcome label (`success`, `bad_challenge`, `signature_invalid`, ...).
    pub outcome: String,
    /// The HTTP status answered.
    pub http_status: u16,
    /// CertRep pkiStatus (`SUCCESS`, `FAILURE`, `PENDING`).
    pub pki_status: Option<String>,
    /// CertRep failInfo on FAILURE (`badAlg`, ...).
    pub fail_info: Option<String>,
    /// Requested or issued subject.
    pub subject: Option<String>,
    /// Requested or issued SANs.
    pub subject_alt_names: Vec<String>,
    /// Issued certificate serial (hex).
    pub serial: Option<String>,
    /// Serial of the renewed certificate (hex).
    pub renewal_of: Option<String>,
    /// Intune claim `sub` (device).
    pub intune_subject: Option<String>,
    /// Intune claim `iss`.
    pub intune_issuer: Option<String>,
    /// Intune claim `nonce`.
    pub intune_nonce: Option<String>,
    /// The id of the issuer that answered (`iss-local`, a Vault issuer id, ...).
    pub issuer: Option<String>,
    /// The client address.
    pub client_addr: Option<String>,
    /// `scep` or `scep-mtls`.
    pub route: String,
    /// Human detail (never sent to SCEP clients).
    pub detail: Option<String>,
}

impl AuditEvent {
    /// The event for one answered SCEP request.
    pub fn from_outcome(
        o: &Outcome,
        now: UnixTime,
        http_status: u16,
        operation: &str,
        route: &str,
        client_addr: Option<String>,
    ) -> Self {
        Self {
            id: 0,
            time: now.to_rfc3339(),
            time_unix: now.secs(),
            profile: o.profile.clone(),
            action: o.action(),
            operation: operation.to_string(),
            message_type: o.message_type.map(|t| t.name().map_or_else(|| format!("{}", t.0), str::to_string)),
            transaction_id: o.transaction_id.clone(),
            outcome: o.label.to_string(),
            http_status,
            pki_status: o.pki_status.map(|s| s.name().map_or_else(|| format!("{}", s.0), str::to_string)),
            fail_info: o.fail_info.map(|f| f.name().map_or_else(|| format!("{}", f.0), str::to_string)),
            subject: o.subject.clone(),
            subject_alt_names: o.subject_alt_names.clone(),
            serial: o.serial.clone(),
            renewal_of: o.renewal_of.clone(),
            intune_subject: o.intune.as_ref().map(|i| i.subject.clone()),
            intune_issuer: o.intune.as_ref().map(|i| i.issuer.clone()),
            intune_nonce: o.intune.as_ref().map(|i| i.nonce.clone()),
            issuer: o.issuer.clone(),
            client_addr,
            route: route.to_string(),
            detail: o.detail.clone(),
        }
    }
}

/// Filters of [`AuditLog::query`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// Only this profile.
    pub profile: Option<String>,
    /// Only this action.
    pub action: Option<String>,
    /// Only this outcome label.
    pub outcome: Option<String>,
    /// Only events at or after this time (`time_unix >= since`).
    pub since: Option<i64>,
    /// Only events with an id below this (paging backwards).
    pub before_id: Option<i64>,
    /// At most this many (1..=[`MAX_QUERY_LIMIT`]).
    pub limit: u32,
}

/// Why the audit log could not do something.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditError(pub String);

impl std::fmt::Display for AuditError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for AuditError {}

enum Command {
    Append(Box<AuditEvent>, Sender<Result<i64, AuditError>>),
    Query(AuditQuery, Sender<Result<Vec<AuditEvent>, AuditError>>),
}

/// Handle to the audit database (cheap to clone; the writer thread stops when
/// the last handle is dropped, after committing what was queued).
#[derive(Clone, Debug)]
pub struct AuditLog {
    tx: mpsc::Sender<Command>,
    path: Arc<PathBuf>,
}

impl AuditLog {
    /// Opens (creating if needed) the database at `path`, applies the schema
    /// and retention, and starts the writer thread.
    ///
    /// # Errors
    /// When the file cannot be opened or is not an scepd audit database.
    pub fn open(path: &Path, retention_days: i64) -> Result<Self, ConfigError> {
        let fail = |e: rusqlite::Error| ConfigError(format!("audit.path: {}: {e}", path.display()));
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| ConfigError(format!("audit.path: cannot create {}: {e}", dir.display())))?;
        }
        let conn = Connection::open(path).map_err(fail)?;
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)).map_err(fail)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(ConfigError(format!("audit.path: {}: WAL mode unavailable (got {mode})", path.display())));
        }
        conn.pragma_update(None, "synchronous", "FULL").map_err(fail)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(fail)?;
        conn.execute_batch(SCHEMA).map_err(fail)?;
        migrate(&conn).map_err(fail)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            // Device identities: readable by the service only.
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
        }
        prune(&conn, retention_days).map_err(fail)?;
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("scepd-audit".into())
            .spawn(move || writer(conn, rx, retention_days))
            .map_err(|e| ConfigError(format!("audit: cannot start the writer thread: {e}")))?;
        Ok(Self { tx, path: Arc::new(path.to_path_buf()) })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stores `event`; resolves with its id once the commit is durable.
    ///
    /// # Errors
    /// When the database refused the write or the writer has stopped.
    pub fn record(&self, event: AuditEvent) -> impl Future<Output = Result<i64, AuditError>> + Send + 'static {
        let (tx, rx) = oneshot();
        let sent = self.tx.send(Command::Append(Box::new(event), tx)).is_ok();
        async move {
            if !sent {
                return Err(AuditError("audit writer stopped".into()));
            }
            rx.await.unwrap_or_else(|| Err(AuditError("audit writer stopped".into())))
        }
    }

    /// Newest events first, filtered.
    ///
    /// # Errors
    /// When the database cannot be read or the writer has stopped.
    pub fn query(&self, q: AuditQuery) -> impl Future<Output = Result<Vec<AuditEvent>, AuditError>> + Send + 'static {
        let (tx, rx) = oneshot();
        let sent = self.tx.send(Command::Query(q, tx)).is_ok();
        async move {
            if !sent {
                return Err(AuditError("audit writer stopped".into()));
            }
            rx.await.unwrap_or_else(|| Err(AuditError("audit writer stopped".into())))
        }
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS audit_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time TEXT NOT NULL,
    time_unix INTEGER NOT NULL,
    profile TEXT NOT NULL,
    action TEXT NOT NULL,
    operation TEXT NOT NULL,
    message_type TEXT,
    transaction_id TEXT,
    outcome TEXT NOT NULL,
    http_status INTEGER NOT NULL,
    pki_status TEXT,
    fail_info TEXT,
    subject TEXT,
    subject_alt_names TEXT NOT NULL,
    serial TEXT,
    renewal_of TEXT,
    intune_subject TEXT,
    intune_issuer TEXT,
    intune_nonce TEXT,
    issuer TEXT,
    client_addr TEXT,
    route TEXT NOT NULL,
    detail TEXT
);
CREATE INDEX IF NOT EXISTS audit_events_profile ON audit_events (profile, id);
CREATE INDEX IF NOT EXISTS audit_events_action ON audit_events (action, id);
CREATE INDEX IF NOT EXISTS audit_events_time ON audit_events (time_unix);
";

fn prune(conn: &Connection, retention_days: i64) -> rusqlite::Result<usize> {
    let cutoff = UnixTime::now().secs().saturating_sub(retention_days.saturating_mul(86_400));
    let n = conn.execute("DELETE FROM audit_events WHERE time_unix < ?1", params![cutoff])?;
    if n > 0 {
        tracing::info!(deleted = n, retention_days, "audit retention applied");
    }
    Ok(n)
}

/// The writer loop: commit everything queued in one transaction, then answer.
fn writer(mut conn: Connection, rx: mpsc::Receiver<Command>, retention_days: i64) {
    let mut last_prune = Instant::now();
    loop {
        let first = match rx.recv_timeout(PRUNE_EVERY) {
            Ok(c) => c,
            Err(RecvTimeoutError::Timeout) => {
                if let Err(e) = prune(&conn, retention_days) {
                    tracing::error!(error = %e, "audit retention failed");
                }
                last_prune = Instant::now();
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let mut appends = Vec::new();
        let mut queries = Vec::new();
        let mut next = Some(first);
        while let Some(cmd) = next.take() {
            match cmd {
                Command::Append(e, done) => appends.push((e, done)),
                Command::Query(q, done) => queries.push((q, done)),
            }
            if appends.len() < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        if !appends.is_empty() {
            match insert_batch(&mut conn, &appends) {
                Ok(ids) => {
                    for ((_, done), id) in appends.into_iter().zip(ids) {
                        done.send(Ok(id));
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "audit commit failed");
                    for (_, done) in appends {
                        done.send(Err(AuditError(format!("audit commit failed: {e}"))));
                    }
                }
            }
        }
        for (q, done) in queries {
            done.send(select(&conn, &q).map_err(|e| AuditError(format!("audit query failed: {e}"))));
        }
        if last_prune.elapsed() >= PRUNE_EVERY {
            if let Err(e) = prune(&conn, retention_days) {
                tracing::error!(error = %e, "audit retention failed");
            }
            last_prune = Instant::now();
        }
    }
}

/// Brings a database written by an earlier scepd up to the current schema
/// (columns are only ever added).
fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    let has_issuer: bool =
        conn.query_row("SELECT COUNT(*) FROM pragma_table_info('audit_events') WHERE name = 'issuer'", [], |r| {
            r.get::<_, i64>(0).map(|n| n > 0)
        })?;
    if !has_issuer {
        conn.execute_batch("ALTER TABLE audit_events ADD COLUMN issuer TEXT")?;
    }
    Ok(())
}

type Pending = (Box<AuditEvent>, Sender<Result<i64, AuditError>>);

fn insert_batch(conn: &mut Connection, batch: &[Pending]) -> rusqlite::Result<Vec<i64>> {
    let tx = conn.transaction()?;
    let mut ids = Vec::with_capacity(batch.len());
    {
        let mut stmt = tx.prepare_cached(
            "INSERT INTO audit_events (time, time_unix, profile, action, operation, message_type, transaction_id, \
             outcome, http_status, pki_status, fail_info, subject, subject_alt_names, serial, renewal_of, \
             intune_subject, intune_issuer, intune_nonce, client_addr, route, detail, issuer) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, \
             ?22)",
        )?;
        for (e, _) in batch {
            let sans = serde_json::to_string(&e.subject_alt_names).unwrap_or_else(|_| "[]".into());
            stmt.execute(params![
                e.time,
                e.time_unix,
                e.profile,
                e.action,
                e.operation,
                e.message_type,
                e.transaction_id,
                e.outcome,
                e.http_status,
                e.pki_status,
                e.fail_info,
                e.subject,
                sans,
                e.serial,
                e.renewal_of,
                e.intune_subject,
                e.intune_issuer,
                e.intune_nonce,
                e.client_addr,
                e.route,
                e.detail,
                e.issuer,
            ])?;
            ids.push(tx.last_insert_rowid());
        }
    }
    tx.commit()?;
    Ok(ids)
}

fn select(conn: &Connection, q: &AuditQuery) -> rusqlite::Result<Vec<AuditEvent>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, time, time_unix, profile, action, operation, message_type, transaction_id, outcome, \
         http_status, pki_status, fail_info, subject, subject_alt_names, serial, renewal_of, intune_subject, \
         intune_issuer, intune_nonce, client_addr, route, detail, issuer FROM audit_events \
         WHERE (?1 IS NULL OR profile = ?1) AND (?2 IS NULL OR action = ?2) AND (?3 IS NULL OR outcome = ?3) \
         AND (?4 IS NULL OR id < ?4) AND (?6 IS NULL OR time_unix >= ?6) ORDER BY id DESC LIMIT ?5",
    )?;
    let limit = q.limit.clamp(1, MAX_QUERY_LIMIT);
    let rows = stmt.query_map(params![q.profile, q.action, q.outcome, q.before_id, limit, q.since], |r| {
        let sans: String = r.get(13)?;
        Ok(AuditEvent {
            id: r.get(0)?,
            time: r.get(1)?,
            time_unix: r.get(2)?,
            profile: r.get(3)?,
            action: r.get(4)?,
            operation: r.get(5)?,
            message_type: r.get(6)?,
            transaction_id: r.get(7)?,
            outcome: r.get(8)?,
            http_status: r.get(9)?,
            pki_status: r.get(10)?,
            fail_info: r.get(11)?,
            subject: r.get(12)?,
            subject_alt_names: serde_json::from_str(&sans).unwrap_or_default(),
            serial: r.get(14)?,
            renewal_of: r.get(15)?,
            intune_subject: r.get(16)?,
            intune_issuer: r.get(17)?,
            intune_nonce: r.get(18)?,
            client_addr: r.get(19)?,
            route: r.get(20)?,
            detail: r.get(21)?,
            issuer: r.get(22)?,
        })
    })?;
    rows.collect()
}

/// A one-value channel that works on any executor (the service is
/// runtime-agnostic).
struct Slot<T> {
    value: Option<T>,
    waker: Option<Waker>,
    closed: bool,
}

struct Sender<T>(Arc<Mutex<Slot<T>>>);
struct Receiver<T>(Arc<Mutex<Slot<T>>>);

fn oneshot<T>() -> (Sender<T>, Receiver<T>) {
    let slot = Arc::new(Mutex::new(Slot { value: None, waker: None, closed: false }));
    (Sender(slot.clone()), Receiver(slot))
}

impl<T> Sender<T> {
    fn send(self, value: T) {
        let waker = {
            let mut s = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            s.value = Some(value);
            s.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
        // Drop runs next and marks the slot closed; the value is already there.
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let waker = {
            let mut s = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            s.closed = true;
            s.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl<T> Future for Receiver<T> {
    /// `None` when the sender went away without a value.
    type Output = Option<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let mut s = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(v) = s.value.take() {
            return Poll::Ready(Some(v));
        }
        if s.closed {
            return Poll::Ready(None);
        }
        s.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future::block_on;

    fn event(profile: &str, action: &str, outcome: &str) -> AuditEvent {
        AuditEvent {
            time: "2030-01-01T00:00:00Z".into(),
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

    #[test]
    fn events_survive_a_reopen_and_filter() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("audit.db");
        {
            let log = AuditLog::open(&path, 30).unwrap();
            let a = block_on(log.record(event("corp", "scep_pkcsreq", "success"))).unwrap();
            let b = block_on(log.record(event("iot", "scep_pkcsreq_intune", "replay"))).unwrap();
            assert!(b > a);
        }
        let log = AuditLog::open(&path, 30).unwrap();
        let got = block_on(log.query(all())).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].profile, "iot", "newest first");
        assert_eq!(got[1].subject_alt_names, vec!["DNS:a.example".to_string()]);
        let q = AuditQuery { profile: Some("corp".into()), ..all() };
        assert_eq!(block_on(log.query(q)).unwrap().len(), 1);
        let q = AuditQuery { action: Some("scep_pkcsreq_intune".into()), ..all() };
        assert_eq!(block_on(log.query(q)).unwrap()[0].outcome, "replay");
        let q = AuditQuery { outcome: Some("nope".into()), ..all() };
        assert!(block_on(log.query(q)).unwrap().is_empty());
        let q = AuditQuery { limit: 1, ..all() };
        let newest = block_on(log.query(q.clone())).unwrap();
        assert_eq!(newest.len(), 1);
        let older = block_on(log.query(AuditQuery { before_id: Some(newest[0].id), ..q })).unwrap();
        assert_eq!(older[0].profile, "corp");
        let first = got[1].time_unix;
        let q = AuditQuery { since: Some(first), ..all() };
        assert_eq!(block_on(log.query(q)).unwrap().len(), 2, "since is inclusive");
        let q = AuditQuery { since: Some(got[0].time_unix + 1), ..all() };
        assert!(block_on(log.query(q)).unwrap().is_empty());
        let mode: String = Connection::open(&path).unwrap().query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
        assert_eq!(mode, "wal");
    }

    #[test]
    fn concurrent_records_are_batched_and_all_durable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.db");
        let log = AuditLog::open(&path, 30).unwrap();
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let log = log.clone();
                std::thread::spawn(move || {
                    for i in 0..50 {
                        block_on(log.record(event(&format!("p{t}"), "scep_getcacaps", &format!("{i}")))).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        // A second connection (another process would see the same) counts them.
        let n: i64 =
            Connection::open(&path).unwrap().query_row("SELECT count(*) FROM audit_events", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 400);
    }

    #[test]
    fn retention_deletes_old_events_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.db");
        {
            let log = AuditLog::open(&path, 30).unwrap();
            let mut old = event("corp", "scep_getcacert", "success");
            old.time_unix -= 31 * 86_400;
            block_on(log.record(old)).unwrap();
            block_on(log.record(event("corp", "scep_getcacert", "success"))).unwrap();
        }
        let log = AuditLog::open(&path, 30).unwrap();
        assert_eq!(block_on(log.query(all())).unwrap().len(), 1);
    }

    #[test]
    fn settings_validate() {
        let s = AuditSection::default().validate(None).unwrap();
        assert_eq!(s, AuditSettings::default());
        assert_eq!(s.file(Path::new("/d")), PathBuf::from("/d/audit.db"));
        let e = AuditSection { retention_days: Some(0), ..Default::default() }.validate(None).unwrap_err();
        assert!(e.0.starts_with("audit.retention_days"), "{e}");
        let e = AuditSection { path: Some(PathBuf::new()), ..Default::default() }.validate(None).unwrap_err();
        assert!(e.0.starts_with("audit.path"), "{e}");
        let s =
            AuditSection { path: Some("a.db".into()), ..Default::default() }.validate(Some(Path::new("/etc"))).unwrap();
        assert_eq!(s.path, Some(PathBuf::from("/etc/a.db")));
    }

    #[test]
    fn action_names() {
        let mut o = Outcome { operation: Some(Operation::PkiOperation), ..Outcome::default() };
        assert_eq!(o.action(), "scep_pkioperation");
        o.message_type = Some(scep_engine::MessageType::PKCS_REQ);
        assert_eq!(o.action(), "scep_pkcsreq");
        o.label = "signature_invalid";
        assert_eq!(o.action(), "scep_pkcsreq_intune");
        let o = Outcome { operation: Some(Operation::GetCaCaps), label: "success", ..Outcome::default() };
        assert_eq!(o.action(), "scep_getcacaps");
        assert_eq!(Outcome::default().action(), "scep_unknown");
    }
}
