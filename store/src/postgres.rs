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
//!
//! Resilience (docs/high-availability.md, "When the database is unreachable"):
//! - a connection idle for [`VALIDATE_AFTER_IDLE`] or more, or idle since a
//!   pooled connection was found broken, is validated on checkout (one round
//!   trip, bounded by [`VALIDATION_TIMEOUT`]); a dead one is discarded and
//!   another taken in the same [`Pool::get`]: after a database restart no
//!   request fails on a connection the restart closed. A busy pool hands its
//!   connections out again within milliseconds and pays nothing;
//! - a new connection (TCP, TLS, startup and authentication) is bounded as a
//!   whole by `connect_timeout`: it runs on a thread of its own
//!   (`bounded`), because the driver's `connect_timeout` covers the TCP
//!   connect only;
//! - TCP keepalives and `TCP_USER_TIMEOUT` close a connection whose peer is
//!   gone (a partition) within [`DEAD_PEER_AFTER`];
//! - `/healthz` asks a probe of its own (`probe`), bounded in time.
//!
//! Not bounded on the client: a statement on a connection whose server stays
//! silent while its kernel still acknowledges (a stopped or frozen server
//! process). The sync client has no per-call timeout; `statement_timeout` is
//! the server's and fires only while the server runs. See docs/architecture.md.

mod bounded;
mod probe;

use std::collections::HashMap;
use std::str::FromStr as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use postgres::{Client, NoTls, Statement};
use tokio_postgres_rustls::MakeRustlsConnect;

use self::bounded::{Bounded, run_bounded};
pub use self::probe::{HEALTH_WAIT, PROBE_REUSE, PROBE_TIMEOUT};
use crate::migrations::{self, ADVISORY_LOCK_KEY, SCHEMA_TABLE};
use crate::settings::{PostgresSettings, redact_url};
use crate::{Admission, Decision, NonceClaim, ProtectionStore, Purged, StoreError, StoreHealth};

/// The longest one statement may run before the server cancels it.
const STATEMENT_TIMEOUT_MS: u64 = 10_000;

/// A pooled connection idle for this long is validated before it is handed
/// out. A database restart (a shutdown, then a start with its recovery)
/// takes longer than this, so every connection it closed has been idle at
/// least this long when next checked out. One second was too long: the
/// test cluster here restarts in under a second. A busy pool reuses its
/// connections within milliseconds and makes no validation; a quiet one
/// pays one round trip per checkout, which at its load costs nothing that
/// matters.
pub const VALIDATE_AFTER_IDLE: Duration = Duration::from_millis(100);

/// How long a validation (an empty query) may take before the connection is
/// given up and the caller answered "unavailable".
pub const VALIDATION_TIMEOUT: Duration = Duration::from_secs(2);

/// Within about this long of the last segment from the server, a connection
/// whose server is unreachable (a partition, a host gone) is closed by the
/// kernel: keepalive probes after 4 s of silence, every 2 s, and
/// `TCP_USER_TIMEOUT` (Linux) both for unanswered probes and for data left
/// unacknowledged. A server that is merely slow still acknowledges, so a
/// statement running up to the server's statement timeout (10 s) is not cut
/// short.
pub const DEAD_PEER_AFTER: Duration = Duration::from_secs(12);
/// Silence on a connection before the first keepalive probe.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(4);
/// Between keepalive probes.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(2);
/// Unanswered probes before the connection is closed (where
/// `TCP_USER_TIMEOUT` is not available; where it is, it decides).
const KEEPALIVE_RETRIES: u32 = 4;

/// Connection attempts that did not finish within `connect_timeout` and still
/// wait for the server, past which a new attempt fails at once: a silent
/// server does not collect a thread per request (or per second of the audit
/// writer's retries) for as long as it is silent.
const MAX_LINGERING_CONNECTS: i64 = 4;

fn unavailable(e: &postgres::Error) -> StoreError {
    // The driver's Display omits the server's message for database errors.
    match e.as_db_error() {
        Some(db) => StoreError::Unavailable(format!("{}: {}", db.code().code(), db.message())),
        None => StoreError::Unavailable(e.to_string()),
    }
}

/// Drops `client` on a thread of its own: dropping a connection that still
/// waits for an answer (a validation that timed out) waits for that answer,
/// which a silent server may not give for a long time.
pub fn discard(client: Client) {
    if client.is_closed() {
        return;
    }
    // A thread that cannot start drops its closure, and so the client, here.
    if let Err(e) = std::thread::Builder::new().name("scepd-pg-discard".into()).spawn(move || drop(client)) {
        tracing::warn!(error = %e, "cannot start a thread to close a PostgreSQL connection; closed it here");
    }
}

/// Why [`Pool::connect_bounded`] returned no connection.
enum ConnectFailure {
    /// The attempt is over: refused, failed, or never started.
    Failed(StoreError),
    /// The attempt did not finish in time and still runs; its outcome goes
    /// to the `late` handler.
    Pending(StoreError),
}

impl ConnectFailure {
    fn into_error(self) -> StoreError {
        match self {
            Self::Failed(e) | Self::Pending(e) => e,
        }
    }
}

/// What a new connection needs; shared with the threads that connect.
#[derive(Clone)]
struct Connector {
    config: postgres::Config,
    tls: Option<MakeRustlsConnect>,
    /// The database, for messages (the URL with its password removed).
    described: String,
    /// The bound on a whole connection attempt (`connect_timeout`).
    timeout: Duration,
}

impl Connector {
    /// Connects on this thread; the startup handshake is not bounded here
    /// (see [`Pool::connect_bounded`]).
    fn connect(&self) -> Result<Client, StoreError> {
        let connected = match &self.tls {
            Some(tls) => self.config.connect(tls.clone()),
            None => self.config.connect(NoTls),
        };
        connected.map_err(|e| StoreError::Unavailable(format!("connecting to {}: {}", self.described, unavailable(&e))))
    }
}

/// The pool's bookkeeping; shared with the threads that connect.
struct Slots {
    idle: Mutex<Idle>,
    /// Connections handed out, idle, or being connected.
    open: Mutex<usize>,
    freed: Condvar,
    /// Validations made on checkout ([`Pool::validations`]).
    validations: AtomicU64,
    /// Connection attempts given up on that still wait for the server (see
    /// [`MAX_LINGERING_CONNECTS`]); signed: a late attempt may finish before
    /// its caller counted it.
    lingering: Arc<AtomicI64>,
}

/// The idle connections, most recently used last.
struct Idle {
    connections: Vec<Connection>,
    /// When a pooled connection was last found closed: every connection idle
    /// since before then is validated before use.
    broken_at: Option<Instant>,
}

impl Slots {
    /// One fewer connection open (it was dropped or never made).
    fn release(&self) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        *open = open.saturating_sub(1);
        drop(open);
        self.freed.notify_one();
    }

    /// A connection back to the idle list, idle from now.
    fn put_idle(&self, mut conn: Connection) {
        conn.idle_since = Instant::now();
        self.idle.lock().unwrap_or_else(PoisonError::into_inner).connections.push(conn);
        self.freed.notify_one();
    }

    /// A connection was found closed: distrust every one idle since before now.
    fn mark_broken(&self) {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner).broken_at = Some(Instant::now());
    }
}

/// A bounded pool of connections to one database.
pub struct Pool {
    connector: Arc<Connector>,
    slots: Arc<Slots>,
    size: usize,
    wait: Duration,
    /// The node this pool belongs to (`[server] node_name`): what the shared
    /// tables record as the writer of a row (see [`Pool::node_name`]).
    node: String,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("database", &self.connector.described)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

/// One pooled connection and the statements prepared on it.
struct Connection {
    client: Client,
    /// Hot statements prepared once per connection ([`Pooled::prepare_cached`]).
    statements: HashMap<&'static str, Statement>,
    /// When it was last given back to the pool.
    idle_since: Instant,
}

impl Connection {
    fn new(client: Client) -> Self {
        Self { client, statements: HashMap::new(), idle_since: Instant::now() }
    }
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
        let slots = &self.pool.slots;
        if conn.client.is_closed() {
            // The server closed it (a restart?): the idle ones may be closed too.
            slots.mark_broken();
            drop(conn);
            slots.release();
        } else {
            slots.put_idle(conn);
        }
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
        // A partition closes the connection within DEAD_PEER_AFTER (TCP only;
        // a Unix socket has no peer to lose).
        config
            .keepalives(true)
            .keepalives_idle(KEEPALIVE_IDLE)
            .keepalives_interval(KEEPALIVE_INTERVAL)
            .keepalives_retries(KEEPALIVE_RETRIES)
            .tcp_user_timeout(DEAD_PEER_AFTER);
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
            connector: Arc::new(Connector { config, tls, described, timeout: settings.connect_timeout }),
            slots: Arc::new(Slots {
                idle: Mutex::new(Idle { connections: Vec::new(), broken_at: None }),
                open: Mutex::new(0),
                freed: Condvar::new(),
                validations: AtomicU64::new(0),
                lingering: Arc::new(AtomicI64::new(0)),
            }),
            size: settings.pool_size.max(1),
            wait: settings.connect_timeout,
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
        if self.connector.config.get_application_name() == Some("scepd") {
            Arc::make_mut(&mut self.connector).config.application_name(&format!("scepd/{node}"));
        }
        self
    }

    /// The node named by [`Pool::with_node_name`] (empty when none was).
    pub fn node_name(&self) -> &str {
        &self.node
    }

    /// A connection of its own, outside the pool's count, for a thread that
    /// holds one for its whole life: the certificate index's revocation
    /// watcher (a `LISTEN`er) and the audit log's writer. Bounded as a whole
    /// by `connect_timeout`, as the pool's. Check it with
    /// [`Pool::check_dedicated`] before using it after a pause.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when connecting fails or does not finish in time.
    pub fn connect_dedicated(&self) -> Result<Client, StoreError> {
        self.connect_bounded(drop).map_err(ConnectFailure::into_error)
    }

    /// A connection from [`Pool::connect_dedicated`], idle since `idle_since`,
    /// checked as the pool checks its own before handing them out: `Ok(Some)`
    /// to use (validated when it had been idle [`VALIDATE_AFTER_IDLE`] or
    /// since a pooled connection was found broken), `Ok(None)` when it was
    /// closed (connect again).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the server did not answer the
    /// validation within [`VALIDATION_TIMEOUT`] (the connection is discarded).
    pub fn check_dedicated(&self, mut client: Client, idle_since: Instant) -> Result<Option<Client>, StoreError> {
        if client.is_closed() {
            return Ok(None);
        }
        if !self.is_stale(idle_since) {
            return Ok(Some(client));
        }
        match self.validate(&mut client) {
            Ok(()) => Ok(Some(client)),
            Err(silent) => {
                let closed = client.is_closed();
                discard(client);
                if closed { Ok(None) } else { Err(silent) }
            }
        }
    }

    /// The database, for messages (the URL with its password removed).
    pub fn describe(&self) -> &str {
        &self.connector.described
    }

    /// Validations made on checkout so far (each one round trip; see
    /// [`VALIDATE_AFTER_IDLE`]).
    pub fn validations(&self) -> u64 {
        self.slots.validations.load(Ordering::Relaxed)
    }

    /// Applies pending migrations under the advisory lock: `(before, after)`.
    ///
    /// # Errors
    /// As [`crate::open`].
    pub fn migrate(&self) -> Result<(i64, i64), StoreError> {
        apply_migrations(&mut *self.get()?)
    }

    /// Whether a connection idle since `idle_since` must be validated before use.
    fn is_stale(&self, idle_since: Instant) -> bool {
        let broken_at = self.slots.idle.lock().unwrap_or_else(PoisonError::into_inner).broken_at;
        is_stale(idle_since, broken_at)
    }

    /// One empty query within [`VALIDATION_TIMEOUT`]; on failure the
    /// connection must not be used again.
    fn validate(&self, client: &mut Client) -> Result<(), StoreError> {
        self.slots.validations.fetch_add(1, Ordering::Relaxed);
        client.is_valid(VALIDATION_TIMEOUT).map_err(|e| {
            if client.is_closed() {
                self.slots.mark_broken();
                unavailable(&e)
            } else {
                StoreError::Unavailable(format!(
                    "{} did not answer within {} s",
                    self.connector.described,
                    VALIDATION_TIMEOUT.as_secs()
                ))
            }
        })
    }

    /// Connects on a thread of its own and waits at most `connect_timeout`
    /// (TCP, TLS, startup and authentication together); the outcome of an
    /// attempt that finishes later goes to `late`.
    fn connect_bounded(
        &self,
        late: impl FnOnce(Result<Client, StoreError>) + Send + 'static,
    ) -> Result<Client, ConnectFailure> {
        let described = &self.connector.described;
        let lingering = Arc::clone(&self.slots.lingering);
        if lingering.load(Ordering::Relaxed) >= MAX_LINGERING_CONNECTS {
            return Err(ConnectFailure::Failed(StoreError::Unavailable(format!(
                "connecting to {described}: {MAX_LINGERING_CONNECTS} earlier attempts still wait for an answer"
            ))));
        }
        let connector = Arc::clone(&self.connector);
        let timeout = connector.timeout;
        let counted = Arc::clone(&lingering);
        let late = move |result| {
            counted.fetch_sub(1, Ordering::Relaxed);
            late(result);
        };
        match run_bounded("scepd-pg-connect", timeout, move || connector.connect(), late) {
            Bounded::Done(result) => result.map_err(ConnectFailure::Failed),
            Bounded::TimedOut => {
                lingering.fetch_add(1, Ordering::Relaxed);
                Err(ConnectFailure::Pending(StoreError::Unavailable(format!(
                    "connecting to {described}: no answer within {} s",
                    timeout.as_secs()
                ))))
            }
            Bounded::NoThread(e) => {
                Err(ConnectFailure::Failed(StoreError::Unavailable(format!("cannot start a thread to connect: {e}"))))
            }
        }
    }

    /// A new pooled connection, its slot already counted. One that connects
    /// after the caller gave up joins the idle list; one that fails then
    /// frees its slot.
    fn open_connection(&self) -> Result<Connection, StoreError> {
        let slots = Arc::clone(&self.slots);
        let late = move |result: Result<Client, StoreError>| match result {
            Ok(client) => slots.put_idle(Connection::new(client)),
            Err(_) => slots.release(),
        };
        match self.connect_bounded(late) {
            Ok(client) => Ok(Connection::new(client)),
            Err(ConnectFailure::Failed(e)) => {
                self.slots.release();
                Err(e)
            }
            // The connecting thread holds the slot until it finishes.
            Err(ConnectFailure::Pending(e)) => Err(e),
        }
    }

    /// A connection: an idle one (validated when it was idle for
    /// [`VALIDATE_AFTER_IDLE`] or more, or since a pooled connection was
    /// found broken; a broken one is discarded and the next tried), a new
    /// one while fewer than the pool size are open, or the next one freed
    /// within the connect timeout.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when connecting fails, the database does
    /// not answer a validation in time, or no connection frees up in time.
    pub fn get(&self) -> Result<Pooled<'_>, StoreError> {
        let deadline = Instant::now() + self.wait;
        loop {
            let taken = {
                let mut idle = self.slots.idle.lock().unwrap_or_else(PoisonError::into_inner);
                let broken_at = idle.broken_at;
                idle.connections.pop().map(|c| {
                    let stale = is_stale(c.idle_since, broken_at);
                    (c, stale)
                })
            };
            if let Some((mut conn, stale)) = taken {
                if conn.client.is_closed() {
                    self.slots.release();
                    continue;
                }
                if stale && let Err(e) = self.validate(&mut conn.client) {
                    let closed = conn.client.is_closed();
                    discard(conn.client);
                    self.slots.release();
                    if closed {
                        // Closed while idle (a restart): try the next one, or a new one.
                        continue;
                    }
                    // Silent: another connection would only wait as long again.
                    return Err(e);
                }
                return Ok(Pooled { pool: self, conn: Some(conn) });
            }
            let mut open = self.slots.open.lock().unwrap_or_else(PoisonError::into_inner);
            if *open < self.size {
                *open += 1;
                drop(open);
                return self.open_connection().map(|conn| Pooled { pool: self, conn: Some(conn) });
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(StoreError::Unavailable(format!(
                    "all {} connections to {} are busy",
                    self.size, self.connector.described
                )));
            }
            drop(self.slots.freed.wait_timeout(open, left.min(Duration::from_millis(50))));
        }
    }
}

/// Whether a connection idle since `idle_since` must be validated before
/// use: idle for [`VALIDATE_AFTER_IDLE`] or more, or since a pooled
/// connection was found broken at `broken_at`.
fn is_stale(idle_since: Instant, broken_at: Option<Instant>) -> bool {
    idle_since.elapsed() >= VALIDATE_AFTER_IDLE || broken_at.is_some_and(|at| idle_since <= at)
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
    /// The bounded probe behind [`ProtectionStore::health`].
    probe: Arc<probe::HealthProbe>,
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
        let probe = probe::HealthProbe::new(Arc::clone(&pool.connector));
        Ok(Self { pool, last_answer: AtomicI64::new(now_ms()), last_error: Mutex::new(None), probe })
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
        self.observe(result.as_ref().map(drop).map_err(ToString::to_string));
        result
    }

    /// Records whether the database answered (an operation, or a probe).
    fn observe(&self, answer: Result<(), String>) {
        match answer {
            Ok(()) => self.last_answer.store(now_ms(), Ordering::Relaxed),
            Err(why) => {
                self.last_answer.store(-now_ms(), Ordering::Relaxed);
                *self.last_error.lock().unwrap_or_else(PoisonError::into_inner) = Some(why);
            }
        }
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
        if probe && !(last > 0 && now_ms().saturating_sub(last) < 1_000) {
            // Nothing answered within the last second: ask now, within
            // HEALTH_WAIT, outside the pool (see `probe`).
            let health = self.probe.check();
            self.observe(match &health {
                StoreHealth::Reachable => Ok(()),
                StoreHealth::Unreachable(why) => Err(why.clone()),
            });
            return health;
        }
        if last >= 0 {
            StoreHealth::Reachable
        } else {
            let why = self.last_error.lock().unwrap_or_else(PoisonError::into_inner).clone();
            StoreHealth::Unreachable(why.unwrap_or_else(|| "no answer".into()))
        }
    }
}
