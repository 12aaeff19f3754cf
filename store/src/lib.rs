//! scepd's shared store (issue 18): one abstraction, two backends.
//!
//! - **SQLite** (the embedded default, one node): a file in the data
//!   directory, WAL, `synchronous = FULL`.
//! - **PostgreSQL** (several nodes behind a load balancer): selected by
//!   `CERTCTL_DATABASE_URL` or `[store] url = "postgres://..."`, with a CA
//!   bundle for TLS and a bounded connection pool ([`postgres`]).
//!
//! What lives here today is the **protection state** ([`ProtectionStore`]):
//! Intune replay nonces with their expiry and per-device rate-limit windows.
//! The engine's in-memory, lock-free replay cache and rate limiter stay in
//! front as the fast local check; this store is the truth across nodes and
//! restarts, checked by the service after the engine accepted a challenge
//! (the engine is sans-IO). See `docs/architecture.md` and
//! `docs/high-availability.md`.
//!
//! Schema changes are versioned migrations ([`migrations`]) applied at start
//! (or by `scepd migrate`) under a lock, so several nodes may start at once.
//!
//! Every call blocks (SQLite file IO, a PostgreSQL round trip); async callers
//! run them on the `blocking` pool. Nothing here depends on an async runtime
//! the caller must provide: the `postgres` client drives its own.

pub mod group_commit;
pub mod migrations;
pub mod postgres;
mod protection;
pub mod settings;
pub mod sqlite;

use std::path::Path;
use std::sync::Arc;

pub use protection::{Admission, Decision, NonceClaim, ProtectionStore, Purged, StoreHealth};
pub use settings::{Backend, PostgresSettings, StoreSettings};

/// Why the store could not answer.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreError {
    /// The database cannot be reached or failed mid-operation (connection
    /// refused or lost, pool exhausted, I/O error). Requests that need the
    /// store are answered 503; the node recovers by itself when it returns.
    Unavailable(String),
    /// The database answered, but its schema is not one this scepd can use
    /// (newer than it knows, or a migration failed).
    Schema(String),
    /// The settings cannot work (a bad URL, an unreadable CA bundle).
    Config(String),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unavailable(e) => write!(f, "store unavailable: {e}"),
            Self::Schema(e) => write!(f, "store schema: {e}"),
            Self::Config(e) => write!(f, "store settings: {e}"),
        }
    }
}

impl std::error::Error for StoreError {}

/// Opens the store `settings` name (the SQLite file under `data_dir` when no
/// URL is set), applies pending migrations, and returns it.
///
/// # Errors
/// [`StoreError::Config`] for settings that cannot work,
/// [`StoreError::Unavailable`] when the database cannot be reached,
/// [`StoreError::Schema`] when its schema is newer than this scepd's.
pub fn open(settings: &StoreSettings, data_dir: &Path) -> Result<Arc<dyn ProtectionStore>, StoreError> {
    Ok(match &settings.backend {
        Backend::Sqlite => Arc::new(sqlite::SqliteStore::open(&sqlite::SqliteStore::file(data_dir))?),
        Backend::Postgres(pg) => Arc::new(postgres::PostgresStore::open(pg)?),
    })
}

/// The node's one PostgreSQL pool for `settings` (`None` on SQLite), built
/// once by the service's wiring and handed to everything kept in the shared
/// store: the protection state ([`open_with_pool`]), the one-time
/// challenges, the local CA's certificate index and the audit log. `node`
/// names this node ([`postgres::Pool::with_node_name`]). Connects lazily.
///
/// # Errors
/// [`StoreError::Config`] for settings that cannot work.
pub fn shared_pool(settings: &StoreSettings, node: &str) -> Result<Option<Arc<postgres::Pool>>, StoreError> {
    match &settings.backend {
        Backend::Sqlite => Ok(None),
        Backend::Postgres(pg) => Ok(Some(Arc::new(postgres::Pool::new(pg)?.with_node_name(node)))),
    }
}

/// As [`open`], on the node's shared pool when `settings` name PostgreSQL
/// (`pool` from [`shared_pool`]; a new one is built when it is `None`).
///
/// # Errors
/// As [`open`].
pub fn open_with_pool(
    settings: &StoreSettings,
    data_dir: &Path,
    pool: Option<&Arc<postgres::Pool>>,
) -> Result<Arc<dyn ProtectionStore>, StoreError> {
    Ok(match (&settings.backend, pool) {
        (Backend::Postgres(_), Some(pool)) => Arc::new(postgres::PostgresStore::with_pool(Arc::clone(pool))?),
        _ => open(settings, data_dir)?,
    })
}

/// Applies pending migrations to the store `settings` names and returns the
/// schema version before and after (`scepd migrate`).
///
/// # Errors
/// As [`open`].
pub fn migrate(settings: &StoreSettings, data_dir: &Path) -> Result<(i64, i64), StoreError> {
    match &settings.backend {
        Backend::Sqlite => sqlite::SqliteStore::migrate_file(&sqlite::SqliteStore::file(data_dir)),
        Backend::Postgres(pg) => postgres::PostgresStore::migrate_only(pg),
    }
}

/// Connects and reads the schema version without changing anything
/// (`scepd check-config`): `(version found, version this scepd expects)`.
///
/// # Errors
/// As [`open`]; a schema newer than this scepd's is [`StoreError::Schema`].
pub fn check(settings: &StoreSettings, data_dir: &Path) -> Result<(i64, i64), StoreError> {
    let found = match &settings.backend {
        Backend::Sqlite => sqlite::SqliteStore::schema_version_of(&sqlite::SqliteStore::file(data_dir))?,
        Backend::Postgres(pg) => postgres::PostgresStore::schema_version_of(pg)?,
    };
    let expected = migrations::LATEST;
    if found > expected {
        return Err(StoreError::Schema(format!(
            "the database is at schema version {found}, newer than this scepd's {expected}; upgrade scepd"
        )));
    }
    Ok((found, expected))
}
