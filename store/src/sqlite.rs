//! The embedded backend: `protection.sqlite` in the data directory.
//!
//! One connection behind a mutex: each claim or admission is one `BEGIN
//! IMMEDIATE` transaction (which also serialises several processes on one
//! file) committed with `synchronous = FULL` before it answers, so a nonce
//! accepted before a crash or restart is still refused after it.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension as _, TransactionBehavior, params};

use crate::migrations::{self, SCHEMA_TABLE};
use crate::{Admission, NonceClaim, ProtectionStore, Purged, StoreError, StoreHealth};

/// File name of the database inside the data directory.
pub const DB_FILE: &str = "protection.sqlite";

/// How long a connection waits for another process's lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The SQLite protection store.
#[derive(Debug)]
pub struct SqliteStore {
    conn: Mutex<Connection>,
    path: PathBuf,
}

fn unavailable(e: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path).map_err(|e| StoreError::Unavailable(format!("{}: {e}", path.display())))?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(unavailable)?;
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
        Ok(Self { conn: Mutex::new(conn), path: path.to_path_buf() })
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

    fn with_tx<T>(&self, f: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<T>) -> Result<T, StoreError> {
        let mut conn = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(unavailable)?;
        let value = f(&tx).map_err(unavailable)?;
        tx.commit().map_err(unavailable)?;
        Ok(value)
    }
}

impl ProtectionStore for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    fn claim_nonce(&self, key: &[u8], expires_at: i64, now: i64) -> Result<NonceClaim, StoreError> {
        self.with_tx(|tx| {
            let won: Option<i64> = tx
                .query_row(
                    "INSERT INTO replay_nonces (key, expires_at) VALUES (?1, ?2)
                     ON CONFLICT (key) DO UPDATE SET expires_at = excluded.expires_at
                     WHERE replay_nonces.expires_at <= ?3
                     RETURNING 1",
                    params![key, expires_at, now],
                    |r| r.get(0),
                )
                .optional()?;
            Ok(if won.is_some() { NonceClaim::Accepted } else { NonceClaim::Replay })
        })
    }

    fn admit(&self, device: &[u8], now: i64, window_secs: i64, limit: u32) -> Result<Admission, StoreError> {
        if limit == 0 {
            return Ok(Admission::Admitted);
        }
        let expires = now.saturating_add(window_secs);
        self.with_tx(|tx| {
            let cutoff = now.saturating_sub(window_secs);
            let (count, oldest): (i64, Option<i64>) = tx.query_row(
                "SELECT COUNT(*), MIN(at) FROM rate_events WHERE device = ?1 AND at > ?2",
                params![device, cutoff],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            if count >= i64::from(limit) {
                return Ok(Admission::Limited { retry_at: oldest.unwrap_or(now).saturating_add(window_secs) });
            }
            tx.execute(
                "INSERT INTO rate_devices (device, expires_at) VALUES (?1, ?2)
                 ON CONFLICT (device) DO UPDATE SET expires_at = MAX(rate_devices.expires_at, excluded.expires_at)",
                params![device, expires],
            )?;
            tx.execute(
                "INSERT INTO rate_events (device, at, expires_at) VALUES (?1, ?2, ?3)",
                params![device, now, expires],
            )?;
            Ok(Admission::Admitted)
        })
    }

    fn purge_expired(&self, now: i64) -> Result<Purged, StoreError> {
        self.with_tx(|tx| {
            let nonces = tx.execute("DELETE FROM replay_nonces WHERE expires_at <= ?1", [now])?;
            let rate_events = tx.execute("DELETE FROM rate_events WHERE expires_at <= ?1", [now])?;
            tx.execute("DELETE FROM rate_devices WHERE expires_at <= ?1", [now])?;
            Ok(Purged { nonces: nonces as u64, rate_events: rate_events as u64 })
        })
    }

    fn health(&self, _probe: bool) -> StoreHealth {
        // A local file: reachable while the connection is open.
        StoreHealth::Reachable
    }
}
