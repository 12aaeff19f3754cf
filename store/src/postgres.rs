//! The shared backend: PostgreSQL, for several nodes.
//!
//! Connections come from a small bounded pool ([`Pool`]) of synchronous
//! [`postgres::Client`]s: callers are already on a blocking thread, and the
//! sync client keeps the service free of any async runtime (it runs its own
//! per connection). TLS is rustls (`tokio-postgres-rustls`) with aws-lc-rs,
//! or RustCrypto in the pure-Rust build, verifying the server against
//! `tls_ca_bundle`.
//!
//! Atomicity across nodes:
//! - a nonce claim is one `INSERT ... ON CONFLICT DO UPDATE ... WHERE
//!   expires_at <= now RETURNING`: a concurrent claim of the same key waits
//!   for the first's commit and then sees its live row, so exactly one wins;
//! - an admission first upserts the device's row in `rate_devices` (which
//!   takes its row lock until commit), then counts and inserts: admissions of
//!   one device are serialised on every node.
//!
//! A lost connection is dropped, not returned to the pool; the next caller
//! reconnects, so the node recovers by itself when the database returns.

use std::collections::HashMap;
use std::str::FromStr as _;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use postgres::{Client, NoTls, Statement};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::migrations::{self, ADVISORY_LOCK_KEY, SCHEMA_TABLE};
use crate::settings::{PostgresSettings, redact_url};
use crate::{Admission, Decision, NonceClaim, ProtectionStore, Purged, StoreError, StoreHealth};

/// The longest one statement may run before the server cancels it.
const STATEMENT_TIMEOUT_MS: u64 = 10_000;

fn unavailable(e: &postgres::Error) -> StoreError {
    // The driver's Display omits the server's message for database errors.
    match e.as_db_error() {
        Some(db) => StoreError::Unavailable(format!("{}: {}", db.code().code(), db.message())),
        None => StoreError::Unavailable(e.to_string()),
    }
}

/// A bounded pool of connections to one database.
pub struct Pool {
    config: postgres::Config,
    tls: Option<MakeRustlsConnect>,
    idle: Mutex<Vec<Connection>>,
    /// Connections handed out or idle.
    open: Mutex<usize>,
    freed: Condvar,
    size: usize,
    wait: Duration,
    described: String,
    /// The node this pool belongs to (`[server] node_name`): what the shared
    /// tables record as the writer of a row (see [`Pool::node_name`]).
    node: String,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").field("database", &self.described).field("size", &self.size).finish_non_exhaustive()
    }
}

/// One pooled connection and the statements prepared on it.
struct Connection {
    client: Client,
    /// Hot statements prepared once per connection ([`Pooled::prepare_cached`]).
    statements: HashMap<&'static str, Statement>,
}

/// A connection from the [`Pool`]; back to it when dropped, unless broken.
pub struct Pooled<'p> {
    pool: &'p Pool,
    conn: Option<Connection>,
}

impl std::ops::Deref for Pooled<'_> {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.conn.as_ref().unwrap_or_else(|| unreachable!("taken only on drop")).client
    }
}

impl std::ops::DerefMut for Pooled<'_> {
    fn deref_mut(&mut self) -> &mut Client {
        &mut self.conn.as_mut().unwrap_or_else(|| unreachable!("taken only on drop")).client
    }
}

impl Pooled<'_> {
    /// `sql` prepared on this connection, once: a query by text costs a
    /// round trip to prepare it before the one that runs it (and the server
    /// plans it again); a cached statement runs in one. For the hot
    /// statements of the request path.
    ///
    /// # Errors
    /// The database's, preparing it.
    pub fn prepare_cached(&mut self, sql: &'static str) -> Result<Statement, postgres::Error> {
        let conn = self.conn.as_mut().unwrap_or_else(|| unreachable!("taken only on drop"));
        if let Some(statement) = conn.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = conn.client.prepare(sql)?;
        conn.statements.insert(sql, statement.clone());
        Ok(statement)
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else { return };
        if conn.client.is_closed() {
            drop(conn);
            *self.pool.open.lock().unwrap_or_else(PoisonError::into_inner) -= 1;
        } else {
            self.pool.idle.lock().unwrap_or_else(PoisonError::into_inner).push(conn);
        }
        self.pool.freed.notify_one();
    }
}

impl Pool {
    /// A pool for `settings` (connects lazily).
    ///
    /// # Errors
    /// [`StoreError::Config`] for a URL that does not parse, a CA bundle that
    /// cannot be read, or TLS settings that contradict each other.
    pub fn new(settings: &PostgresSettings) -> Result<Self, StoreError> {
        let described = redact_url(&settings.url);
        let mut config = postgres::Config::from_str(&settings.url)
            .map_err(|e| StoreError::Config(format!("store.url {described:?}: {e}")))?;
        config.connect_timeout(settings.connect_timeout);
        config.keepalives(true).keepalives_idle(Duration::from_secs(30));
        let options = match config.get_options() {
            Some(o) => format!("{o} -c statement_timeout={STATEMENT_TIMEOUT_MS}"),
            None => format!("-c statement_timeout={STATEMENT_TIMEOUT_MS}"),
        };
        config.options(&options);
        if config.get_application_name().is_none() {
            config.application_name("scepd");
        }
        let tls = match &settings.tls_ca_bundle {
            None => {
                if config.get_ssl_mode() == postgres::config::SslMode::Require {
                    return Err(StoreError::Config(format!(
                        "store.url {described:?} asks for sslmode=require, but store.tls_ca_bundle is not set \
                         (name the PEM file of the roots that sign the server's certificate)"
                    )));
                }
                config.ssl_mode(postgres::config::SslMode::Disable);
                None
            }
            Some(path) => {
                if config.get_ssl_mode() == postgres::config::SslMode::Disable && settings.url.contains("sslmode") {
                    return Err(StoreError::Config(format!(
                        "store.url {described:?} says sslmode=disable, but store.tls_ca_bundle is set; remove one"
                    )));
                }
                config.ssl_mode(postgres::config::SslMode::Require);
                Some(MakeRustlsConnect::new(client_config(path)?))
            }
        };
        Ok(Self {
            config,
            tls,
            idle: Mutex::new(Vec::new()),
            open: Mutex::new(0),
            freed: Condvar::new(),
            size: settings.pool_size.max(1),
            wait: settings.connect_timeout,
            described,
            node: String::new(),
        })
    }

    /// Names the node this pool serves (`[server] node_name`): rows the
    /// shared tables attribute to a node (certificates, audit events) name it,
    /// and PostgreSQL shows it as each connection's `application_name`
    /// (`scepd/<node>`, in `pg_stat_activity`).
    #[must_use]
    pub fn with_node_name(mut self, node: &str) -> Self {
        node.clone_into(&mut self.node);
        if self.config.get_application_name() == Some("scepd") {
            self.config.application_name(&format!("scepd/{node}"));
        }
        self
    }

    /// The node named by [`Pool::with_node_name`] (empty when none was).
    pub fn node_name(&self) -> &str {
        &self.node
    }

    /// A connection of its own, outside the pool's count, for a thread that
    /// holds one for its whole life: the certificate index's revocation
    /// watcher (a `LISTEN`er) and the audit log's writer.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when connecting fails.
    pub fn connect_dedicated(&self) -> Result<Client, StoreError> {
        self.connect()
    }

    /// The database, for messages (the URL with its password removed).
    pub fn describe(&self) -> &str {
        &self.described
    }

    /// Applies pending migrations under the advisory lock: `(before, after)`.
    ///
    /// # Errors
    /// As [`crate::open`].
    pub fn migrate(&self) -> Result<(i64, i64), StoreError> {
        apply_migrations(&mut *self.get()?)
    }

    fn connect(&self) -> Result<Client, StoreError> {
        let connected = match &self.tls {
            Some(tls) => self.config.connect(tls.clone()),
            None => self.config.connect(NoTls),
        };
        connected.map_err(|e| StoreError::Unavailable(format!("connecting to {}: {}", self.described, unavailable(&e))))
    }

    /// A connection: an idle one, a new one while fewer than the pool size
    /// are open, or the next one freed within the connect timeout.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when connecting fails or no connection
    /// frees up in time.
    pub fn get(&self) -> Result<Pooled<'_>, StoreError> {
        let deadline = Instant::now() + self.wait;
        loop {
            if let Some(conn) = self.idle.lock().unwrap_or_else(PoisonError::into_inner).pop() {
                if conn.client.is_closed() {
                    *self.open.lock().unwrap_or_else(PoisonError::into_inner) -= 1;
                    continue;
                }
                return Ok(Pooled { pool: self, conn: Some(conn) });
            }
            let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
            if *open < self.size {
                *open += 1;
                drop(open);
                return match self.connect() {
                    Ok(client) => {
                        Ok(Pooled { pool: self, conn: Some(Connection { client, statements: HashMap::new() }) })
                    }
                    Err(e) => {
                        *self.open.lock().unwrap_or_else(PoisonError::into_inner) -= 1;
                        self.freed.notify_one();
                        Err(e)
                    }
                };
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(StoreError::Unavailable(format!(
                    "all {} connections to {} are busy",
                    self.size, self.described
                )));
            }
            drop(self.freed.wait_timeout(open, left.min(Duration::from_millis(50))));
        }
    }
}

/// rustls client configuration trusting the PEM roots in `path`.
fn client_config(path: &std::path::Path) -> Result<rustls::ClientConfig, StoreError> {
    use rustls_pki_types::pem::PemObject as _;
    let bad = |why: String| StoreError::Config(format!("store.tls_ca_bundle {}: {why}", path.display()));
    let mut roots = rustls::RootCertStore::empty();
    let certs = rustls_pki_types::CertificateDer::pem_file_iter(path).map_err(|e| bad(e.to_string()))?;
    for cert in certs {
        roots.add(cert.map_err(|e| bad(e.to_string()))?).map_err(|e| bad(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("no certificate in the file".into()));
    }
    #[cfg(feature = "aws-lc")]
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    #[cfg(not(feature = "aws-lc"))]
    let provider = Arc::new(rustls_rustcrypto::provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Applies pending migrations under the advisory lock: `(before, after)`.
fn apply_migrations(client: &mut Client) -> Result<(i64, i64), StoreError> {
    let mut tx = client.transaction().map_err(|e| unavailable(&e))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&ADVISORY_LOCK_KEY]).map_err(|e| unavailable(&e))?;
    tx.batch_execute(SCHEMA_TABLE).map_err(|e| unavailable(&e))?;
    let before: i64 = tx
        .query_one("SELECT COALESCE(MAX(version), 0)::BIGINT FROM scepd_schema", &[])
        .map_err(|e| unavailable(&e))?
        .get(0);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    let mut after = before;
    for m in migrations::pending(before)? {
        tx.batch_execute(m.postgres)
            .map_err(|e| StoreError::Schema(format!("migration {} ({}): {}", m.version, m.name, unavailable(&e))))?;
        tx.execute(
            "INSERT INTO scepd_schema (version, name, applied_at) VALUES ($1, $2, $3)",
            &[&m.version, &m.name, &now],
        )
        .map_err(|e| unavailable(&e))?;
        after = m.version;
    }
    tx.commit().map_err(|e| unavailable(&e))?;
    Ok((before, after))
}

/// The PostgreSQL protection store.
#[derive(Debug)]
pub struct PostgresStore {
    pool: Arc<Pool>,
    /// When the last operation reached the database (ms since the epoch), or
    /// the negated time of the last failure.
    last_answer: AtomicI64,
    last_error: Mutex<Option<String>>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

impl PostgresStore {
    /// Connects, applies pending migrations (under the advisory lock) and
    /// returns the store.
    ///
    /// # Errors
    /// As [`crate::open`].
    pub fn open(settings: &PostgresSettings) -> Result<Self, StoreError> {
        Self::with_pool(Arc::new(Pool::new(settings)?))
    }

    /// As [`PostgresStore::open`], on the node's shared pool (one pool per
    /// node: the protection store, the one-time challenges and the local
    /// CA's certificate index all draw from it).
    ///
    /// # Errors
    /// As [`crate::open`].
    pub fn with_pool(pool: Arc<Pool>) -> Result<Self, StoreError> {
        pool.migrate()?;
        Ok(Self { pool, last_answer: AtomicI64::new(now_ms()), last_error: Mutex::new(None) })
    }

    /// Applies pending migrations: `(before, after)`.
    ///
    /// # Errors
    /// As [`crate::open`].
    pub fn migrate_only(settings: &PostgresSettings) -> Result<(i64, i64), StoreError> {
        let pool = Pool::new(settings)?;
        apply_migrations(&mut *pool.get()?)
    }

    /// The schema version of the database (0 before the first migration).
    ///
    /// # Errors
    /// As [`crate::open`].
    pub fn schema_version_of(settings: &PostgresSettings) -> Result<i64, StoreError> {
        let pool = Pool::new(settings)?;
        let mut client = pool.get()?;
        let exists: bool = client
            .query_one("SELECT to_regclass('scepd_schema') IS NOT NULL", &[])
            .map_err(|e| unavailable(&e))?
            .get(0);
        if !exists {
            return Ok(0);
        }
        Ok(client
            .query_one("SELECT COALESCE(MAX(version), 0)::BIGINT FROM scepd_schema", &[])
            .map_err(|e| unavailable(&e))?
            .get(0))
    }

    /// Runs `f` on a pooled connection, recording whether the database answered.
    fn run<T>(&self, f: impl FnOnce(&mut Pooled<'_>) -> Result<T, postgres::Error>) -> Result<T, StoreError> {
        let result = self.pool.get().and_then(|mut client| f(&mut client).map_err(|e| unavailable(&e)));
        match &result {
            Ok(_) => {
                self.last_answer.store(now_ms(), Ordering::Relaxed);
            }
            Err(e) => {
                self.last_answer.store(-now_ms(), Ordering::Relaxed);
                *self.last_error.lock().unwrap_or_else(PoisonError::into_inner) = Some(e.to_string());
            }
        }
        result
    }
}

impl ProtectionStore for PostgresStore {
    fn backend(&self) -> &'static str {
        "postgresql"
    }

    fn claim_nonce(&self, key: &[u8], expires_at: i64, now: i64) -> Result<NonceClaim, StoreError> {
        self.run(|client| {
            let won = client.query_opt(
                "INSERT INTO replay_nonces (key, expires_at) VALUES ($1, $2)
                 ON CONFLICT (key) DO UPDATE SET expires_at = EXCLUDED.expires_at
                 WHERE replay_nonces.expires_at <= $3
                 RETURNING 1",
                &[&key, &expires_at, &now],
            )?;
            Ok(if won.is_some() { NonceClaim::Accepted } else { NonceClaim::Replay })
        })
    }

    fn admit(&self, device: &[u8], now: i64, window_secs: i64, limit: u32) -> Result<Admission, StoreError> {
        if limit == 0 {
            return Ok(Admission::Admitted);
        }
        let expires = now.saturating_add(window_secs);
        let cutoff = now.saturating_sub(window_secs);
        self.run(|client| {
            let mut tx = client.transaction()?;
            // The upsert takes the device row's lock until commit: every
            // node's admissions of this device queue here.
            tx.execute(
                "INSERT INTO rate_devices (device, expires_at) VALUES ($1, $2)
                 ON CONFLICT (device) DO UPDATE SET expires_at = GREATEST(rate_devices.expires_at, EXCLUDED.expires_at)",
                &[&device, &expires],
            )?;
            let row = tx.query_one(
                "SELECT COUNT(*)::BIGINT, MIN(at) FROM rate_events WHERE device = $1 AND at > $2",
                &[&device, &cutoff],
            )?;
            let (count, oldest): (i64, Option<i64>) = (row.get(0), row.get(1));
            if count >= i64::from(limit) {
                tx.rollback()?;
                return Ok(Admission::Limited { retry_at: oldest.unwrap_or(now).saturating_add(window_secs) });
            }
            tx.execute(
                "INSERT INTO rate_events (device, at, expires_at) VALUES ($1, $2, $3)",
                &[&device, &now, &expires],
            )?;
            tx.commit()?;
            Ok(Admission::Admitted)
        })
    }

    fn claim_and_admit(
        &self,
        nonce: Option<(&[u8], i64)>,
        device: &[u8],
        now: i64,
        window_secs: i64,
        limit: u32,
    ) -> Result<Decision, StoreError> {
        let (key, expires_at) = nonce.map_or((None, 0), |(k, e)| (Some(k), e));
        let limit = i32::try_from(limit).unwrap_or(i32::MAX);
        // One statement, one round trip, one commit (migration 3's function).
        let answer: i64 = self.run(|client| {
            let claim_and_admit = client.prepare_cached("SELECT scepd_claim_and_admit($1, $2, $3, $4, $5, $6)")?;
            Ok(client.query_one(&claim_and_admit, &[&key, &expires_at, &device, &now, &window_secs, &limit])?.get(0))
        })?;
        Ok(match answer {
            -1 => Decision::Replay,
            0 => Decision::Admitted,
            retry_at => Decision::Limited { retry_at },
        })
    }

    fn purge_expired(&self, now: i64) -> Result<Purged, StoreError> {
        self.run(|client| {
            let mut tx = client.transaction()?;
            let nonces = tx.execute("DELETE FROM replay_nonces WHERE expires_at <= $1", &[&now])?;
            let rate_events = tx.execute("DELETE FROM rate_events WHERE expires_at <= $1", &[&now])?;
            tx.execute("DELETE FROM rate_devices WHERE expires_at <= $1", &[&now])?;
            tx.commit()?;
            Ok(Purged { nonces, rate_events })
        })
    }

    fn health(&self, probe: bool) -> StoreHealth {
        let last = self.last_answer.load(Ordering::Relaxed);
        if probe && now_ms().saturating_sub(last.abs()) > 1_000 {
            // A failed probe records its error for the answer below.
            let _ = self.run(|client| client.simple_query("SELECT 1").map(drop));
        }
        if self.last_answer.load(Ordering::Relaxed) >= 0 {
            StoreHealth::Reachable
        } else {
            let why = self.last_error.lock().unwrap_or_else(PoisonError::into_inner).clone();
            StoreHealth::Unreachable(why.unwrap_or_else(|| "no answer".into()))
        }
    }
}
