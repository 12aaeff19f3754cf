//! The durable audit log: every SCEP decision is one event, in SQLite (WAL,
//! `audit.db`, one node) or in the shared PostgreSQL store (every node's
//! events in one table, [`super::audit_pg`]). Each event names the node that
//! wrote it (`[server] node_name`).
//!
//! One writer thread owns the database (one connection, whichever backend).
//! Requests hand it events through a channel and wait for the commit
//! ([`AuditLog::record`] resolves once the event's transaction is durable);
//! the writer commits everything queued in one transaction (group commit), so
//! a burst of requests shares one fsync (under load it lets the batch fill
//! for up to 4 ms first: [`scep_store::group_commit::CommitPacer`]).
//! The service writes the HTTP response only after that, so after a crash
//! (even `kill -9`) every acknowledged response has its event on disk.
//!
//! `PRAGMA journal_mode = WAL` and `synchronous = FULL`: a commit is on stable
//! storage when `record` resolves, also across power loss. On PostgreSQL a
//! batch is one multi-row `INSERT` (one round trip, its own transaction), so
//! concurrent requests share one commit there too.
//!
//! Queries ([`AuditLog::query`]) run on the same thread, between commits, so
//! they see every acknowledged event. Events older than `retention_days` are
//! deleted at start and once an hour.
//!
//! ## Commits that fail
//!
//! A commit that fails (a full disk, a database that refuses the write) fails
//! every request waiting on it (answered 503 by the service). From then until
//! a commit succeeds, [`AuditLog::commit_failure`] gives the last error
//! (`/healthz` reports it). While no request brings an event, the writer tries
//! every [`DISCOVERY_FLUSH_EVERY`] to commit the event that records the outage
//! (action `audit_outage`, outcome [`AUDIT_RECOVERED`]: when it started, how
//! many commits failed, the last error), so the log learns it works again
//! without traffic (a balancer that took the node out sends none). When a
//! request's commit succeeds first, that event is written right after it,
//! before the request is answered.
//!
//! ## Discovery operations
//!
//! GetCACaps, GetCACert and GetNextCACert (RFC 8894 §3.5.1, §4.2, §4.7) are
//! anonymous, read-only and answered alike for every client: they decide
//! nothing and grant nothing. By default (`discovery = "aggregate"`) their
//! answers are tallied in memory ([`AuditLog::tally`]) and written once a
//! second as one row per profile, operation, outcome, HTTP status, route and
//! client IP, with `count` and `first_time`; the answer does not wait for the
//! disk. A fleet polling GetCACaps then costs a handful of rows a second
//! instead of one fsync-bound row per poll, which is what lets discovery run
//! at wire speed. The tally is written on a clean stop; a crash or power loss
//! loses at most the last second of discovery counts, never an enrollment
//! decision. `discovery = "each"` audits them like every other request (one
//! durable event per answer, committed before it is sent).
//!
//! ## Refusals before attribution
//!
//! An HTTP 4xx answered before the request's transactionID is known (a
//! malformed PKIMessage, an unknown profile, a wrong method: RFC 8894 §3.3.2.2
//! CertRep FAILUREs need a transactionID and senderNonce) decides nothing that
//! could issue. In `aggregate` mode it goes through the same tally, keyed by
//! its outcome label and client IP, so a single hostile client costs one row
//! a second, not one row per request. Every CertRep stays its own event.
//!
//! The `[audit]` settings are read by `crate::settings::audit`; the log is
//! opened by `crate::wiring`.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rusqlite::{Connection, params};
use scep_engine::config::ConfigError;
use scep_engine::{Outcome, UnixTime};
use scep_issuers::oneshot;
use scep_store::group_commit::CommitPacer;
use serde::Serialize;

use crate::settings::audit::DiscoveryAudit;

/// Most events one query returns.
pub const MAX_QUERY_LIMIT: u32 = 1000;
/// Most values the admin API accepts in one list filter of [`AuditQuery`].
pub const MAX_FILTER_VALUES: usize = 32;
/// Most events committed in one transaction.
const MAX_BATCH: usize = 512;
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// How often the discovery tally is written.
pub const DISCOVERY_FLUSH_EVERY: Duration = Duration::from_secs(1);

/// One audit event (also the JSON shape of the audit query endpoint).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct AuditEvent {
    /// Row id, increasing (0 before it is stored); on PostgreSQL one
    /// sequence for every node, so every node lists events in the same order.
    pub id: i64,
    /// The node that wrote it (`[server] node_name`; empty for events
    /// written before scepd recorded nodes).
    pub node: String,
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
    /// How many answers this row stands for: 1, or the tally of a discovery
    /// row (then `time` is the last and `first_time` the first of them).
    pub count: u64,
    /// The first answer of a tallied discovery row.
    pub first_time: Option<String>,
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
            node: String::new(),
            time: now.to_rfc3339(),
            time_unix: now.secs(),
            profile: o.profile.clone(),
            action: o.action().to_string(),
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
            count: 1,
            first_time: None,
        }
    }
}

impl AuditEvent {
    /// An event about a one-time challenge that is not a SCEP answer:
    /// `challenge_minted` (admin API, `http_status` 201) or
    /// `challenge_expired` (found expired unused, `http_status` 0: no
    /// request). `route` is `admin` or `store`.
    pub fn challenge(
        profile: &str,
        action: &'static str,
        route: &'static str,
        http_status: u16,
        detail: String,
        now: UnixTime,
    ) -> Self {
        Self {
            time: now.to_rfc3339(),
            time_unix: now.secs(),
            profile: profile.to_string(),
            action: action.to_string(),
            operation: "one-time-challenge".into(),
            outcome: action.trim_start_matches("challenge_").to_string(),
            http_status,
            route: route.to_string(),
            detail: Some(detail),
            count: 1,
            ..Self::default()
        }
    }
}

impl AuditEvent {
    /// A revocation through the admin API (action `certificate_revoked`,
    /// outcome `revoked`, route `admin`): `detail` names the API key and the
    /// reason; `profile` and `subject` are the certificate's when the
    /// issuer keeps a record of it (empty / `None` for Vault).
    pub fn revocation(
        profile: &str,
        serial_hex: &str,
        subject: Option<String>,
        issuer: &str,
        detail: String,
        at: UnixTime,
    ) -> Self {
        Self {
            time: at.to_rfc3339(),
            time_unix: at.secs(),
            profile: profile.to_string(),
            action: "certificate_revoked".into(),
            operation: "revoke".into(),
            outcome: "revoked".into(),
            http_status: 200,
            subject,
            serial: Some(serial_hex.to_string()),
            issuer: Some(issuer.to_string()),
            route: "admin".into(),
            detail: Some(detail),
            count: 1,
            ..Self::default()
        }
    }

    /// An Intune revocation request handled by the revocation sync (issue 15):
    /// action `intune_revocation`, operation `intune-revocation-sync`, outcome
    /// the result code sent back to Intune (`None` when revoked), route
    /// `intune`, the serial in `serial`, Intune's request context in `detail`.
    pub fn intune_revocation(profile: &str, serial: &str, code: &str, detail: String, now: UnixTime) -> Self {
        Self {
            time: now.to_rfc3339(),
            time_unix: now.secs(),
            profile: profile.to_string(),
            action: "intune_revocation".into(),
            operation: "intune-revocation-sync".into(),
            outcome: code.to_string(),
            route: "intune".into(),
            serial: Some(serial.to_string()),
            detail: Some(detail),
            count: 1,
            ..Self::default()
        }
    }

    /// The event recording that the log could not commit from
    /// `outage.since` until `now` (action `audit_outage`, outcome
    /// [`AUDIT_RECOVERED`], route `audit`, HTTP status 0: no request).
    fn outage(outage: &Outage, now: UnixTime, node: &str) -> Self {
        Self {
            node: node.to_string(),
            time: now.to_rfc3339(),
            time_unix: now.secs(),
            action: "audit_outage".into(),
            operation: "audit".into(),
            outcome: AUDIT_RECOVERED.into(),
            route: "audit".into(),
            detail: Some(format!(
                "the audit log could not commit from {} to {} ({} commits failed; a request whose event could not \
                 commit was answered 503); last error: {}",
                outage.since.to_rfc3339(),
                now.to_rfc3339(),
                outage.failed_commits,
                outage.last_error
            )),
            first_time: Some(outage.since.to_rfc3339()),
            count: 1,
            ..Self::default()
        }
    }
}

/// Filters of [`AuditLog::query`], combined with AND. A list matches an
/// event that has any of its values (exact match); an empty list is no filter.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// Only these profiles.
    pub profile: Vec<String>,
    /// Only these actions.
    pub action: Vec<String>,
    /// Only these outcome labels.
    pub outcome: Vec<String>,
    /// None of these outcome labels.
    pub exclude_outcome: Vec<String>,
    /// Only events at or after this time (`time_unix >= since`).
    pub since: Option<i64>,
    /// Only events with an id below this (paging backwards).
    pub before_id: Option<i64>,
    /// Only events about this certificate (serial, lowercase hex): those that
    /// issued it (`serial`), renewed it (`renewal_of`) or revoked it.
    pub certificate: Option<String>,
    /// At most this many (1..=[`MAX_QUERY_LIMIT`]).
    pub limit: u32,
}

/// One hour of [`AuditLog::hourly`]: enrolment and renewal requests
/// answered with a certificate, and those refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HourlyActivity {
    /// The hour's start, Unix seconds (a multiple of 3600).
    pub hour_unix: i64,
    /// Certificates issued (PKCSReq and RenewalReq answered SUCCESS).
    pub enrolments: u64,
    /// PKIOperation requests that were refused (FAILURE or HTTP 4xx).
    pub failures: u64,
}

/// The audit actions of PKIOperation requests that ask for a certificate
/// (and of those not attributable to a message type), for [`AuditLog::hourly`].
pub(crate) const ENROLMENT_ACTIONS: &str = "'scep_pkcsreq', 'scep_pkcsreq_intune', 'scep_renewalreq', \
     'scep_renewalreq_intune', 'scep_pkioperation', 'scep_pkioperation_intune'";

/// Why the audit log could not do something.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditError {
    /// What went wrong.
    pub message: String,
    /// The shared database could not be reached (a request that needed the
    /// event is answered 503 `store_unavailable`, not `audit_unavailable`).
    pub store_unreachable: bool,
}

impl AuditError {
    /// An error of the log itself (disk, SQL, writer stopped).
    pub fn new(message: impl Into<String>) -> Self {
        Self { message: message.into(), store_unreachable: false }
    }

    /// The shared database cannot be reached.
    pub fn unreachable(message: impl Into<String>) -> Self {
        Self { message: message.into(), store_unreachable: true }
    }

    /// The outcome label of a request refused because of this error.
    pub fn label(&self) -> &'static str {
        if self.store_unreachable { "store_unavailable" } else { "audit_unavailable" }
    }
}

impl std::fmt::Display for AuditError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for AuditError {}

enum Command {
    Append(Box<AuditEvent>, oneshot::Sender<Result<i64, AuditError>>),
    Flush(oneshot::Sender<Result<(), AuditError>>),
    Query(AuditQuery, oneshot::Sender<Result<Vec<AuditEvent>, AuditError>>),
    Hourly(i64, oneshot::Sender<Result<Vec<HourlyActivity>, AuditError>>),
    /// Start-up work on the writer's connection (reconciliation).
    Run(SinkJob),
}

/// Work run on the writer's connection ([`Command::Run`]).
type SinkJob = Box<dyn FnOnce(&mut dyn AuditSink) + Send>;

/// Where the writer thread keeps events: SQLite ([`SqliteSink`]) or the
/// shared PostgreSQL store (`super::audit_pg::PostgresSink`). Every method
/// runs on the writer thread, on its one connection.
pub(crate) trait AuditSink {
    /// Stores `batch` in one transaction: their ids, in order.
    fn insert(&mut self, batch: &[&AuditEvent]) -> Result<Vec<i64>, AuditError>;
    /// The events `q` selects, newest first.
    fn select(&mut self, q: &AuditQuery) -> Result<Vec<AuditEvent>, AuditError>;
    /// See [`AuditLog::hourly`].
    fn hourly(&mut self, since: i64) -> Result<Vec<HourlyActivity>, AuditError>;
    /// Deletes the events older than `cutoff` (`time_unix`): how many.
    fn prune(&mut self, cutoff: i64) -> Result<usize, AuditError>;
    /// The newest `time_unix` of an event naming a serial that `node` wrote
    /// (on SQLite every event is this node's).
    fn newest_issuance(&mut self, node: &str) -> Result<Option<i64>, AuditError>;
    /// The serials named by events at or after `since`.
    fn serials_since(&mut self, since: i64) -> Result<Vec<String>, AuditError>;
}

/// Handle to the audit database (cheap to clone; the writer thread stops when
/// the last handle is dropped, after committing what was queued and the
/// discovery tally).
#[derive(Clone, Debug)]
pub struct AuditLog {
    tx: mpsc::Sender<Command>,
    /// The SQLite file; `None` on PostgreSQL.
    path: Option<Arc<PathBuf>>,
    /// `audit.path: <file>` or `audit (PostgreSQL store)`, for errors.
    described: Arc<str>,
    node: Arc<str>,
    tally: Arc<DiscoveryTally>,
    discovery: DiscoveryAudit,
    /// The last commit's error while commits fail ([`Self::commit_failure`]).
    failure: Arc<CommitFailure>,
}

/// The error of the writer's last commit while commits fail; `None` once one
/// succeeds. Written by the writer thread, read by `/healthz`.
#[derive(Debug, Default)]
struct CommitFailure {
    last_error: Mutex<Option<String>>,
}

impl CommitFailure {
    fn set(&self, error: Option<String>) {
        *self.last_error.lock().unwrap_or_else(PoisonError::into_inner) = error;
    }

    fn get(&self) -> Option<String> {
        self.last_error.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

/// The outcome label of the event recording that the audit log could not
/// commit for a while (action `audit_outage`), written by the first commit
/// that succeeds again.
pub const AUDIT_RECOVERED: &str = "audit_recovered";

/// The commits of one writer thread: whether they fail, since when, and the
/// event that records an outage once they work again.
struct CommitTracker<'a> {
    shared: &'a CommitFailure,
    node: &'a str,
    outage: Option<Outage>,
}

/// Commits failing since `since`.
struct Outage {
    since: UnixTime,
    failed_commits: u64,
    last_error: String,
}

impl<'a> CommitTracker<'a> {
    fn new(shared: &'a CommitFailure, node: &'a str) -> Self {
        Self { shared, node, outage: None }
    }

    /// A commit failed with `e`.
    fn failed(&mut self, e: &AuditError) {
        let outage = self.outage.get_or_insert_with(|| Outage {
            since: UnixTime::now(),
            failed_commits: 0,
            last_error: String::new(),
        });
        outage.failed_commits += 1;
        outage.last_error.clone_from(&e.message);
        self.shared.set(Some(e.message.clone()));
    }

    /// A commit succeeded: the log is healthy again, and an outage is
    /// recorded now (called before the waiting requests are answered, so a
    /// request that saw its event committed never sees the failure reported).
    fn succeeded(&mut self, sink: &mut dyn AuditSink) {
        if self.outage.is_some() {
            self.shared.set(None);
            self.record_outage(sink, true);
        }
    }

    /// While commits fail, tries to commit the outage event (called every
    /// [`DISCOVERY_FLUSH_EVERY`]: the only way to learn, without traffic,
    /// that the log works again).
    fn probe(&mut self, sink: &mut dyn AuditSink) {
        if self.outage.is_some() {
            self.record_outage(sink, false);
        }
    }

    /// Commits the outage event. `after_commit`: right after a request's
    /// commit succeeded; if the outage event alone then fails, the log stays
    /// reported healthy (that request's answer is a success) and the event
    /// is tried again at the next probe.
    fn record_outage(&mut self, sink: &mut dyn AuditSink, after_commit: bool) {
        let Some(outage) = &self.outage else { return };
        let now = UnixTime::now();
        let event = AuditEvent::outage(outage, now, self.node);
        match sink.insert(&[&event]) {
            Ok(_) => {
                tracing::warn!(
                    target: "scepd::audit",
                    since = %outage.since.to_rfc3339(),
                    failed_commits = outage.failed_commits,
                    "audit log commits again (the outage is recorded as an audit_recovered event)"
                );
                self.outage = None;
                self.shared.set(None);
            }
            Err(e) => {
                if let Some(outage) = &mut self.outage {
                    outage.last_error.clone_from(&e.message);
                }
                if !after_commit {
                    self.shared.set(Some(e.message));
                }
            }
        }
    }
}

/// One discovery answer (or HTTP 4xx refusal before attribution), as
/// [`AuditLog::tally`] counts it.
#[derive(Clone, Copy, Debug)]
pub struct DiscoveryAnswer<'a> {
    /// The engine's outcome (profile, operation, label).
    pub outcome: &'a Outcome,
    /// The profile answered for (the outcome's, or the path's when the engine did not run).
    pub profile: &'a str,
    /// The operation name (`GetCACaps`, ...).
    pub operation: &'static str,
    /// The HTTP status answered.
    pub http_status: u16,
    /// `scep` or `scep-mtls`.
    pub route: &'static str,
    /// The client; tallied by IP address (the port changes per connection).
    pub client: Option<SocketAddr>,
    /// When it was answered.
    pub now: UnixTime,
}

/// The fields that tell discovery rows apart within a profile.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct TallyKey {
    operation: &'static str,
    outcome: &'static str,
    http_status: u16,
    route: &'static str,
    client: Option<IpAddr>,
}

/// Most distinct rows one tally window holds. Past it, answers to client
/// addresses not yet in the window are counted in one row per (profile,
/// operation, outcome, status, route) without a client address, so a flood
/// from many source addresses (an IPv6 prefix) costs bounded memory and
/// writes, and every answer is still counted.
const MAX_TALLY_ROWS: usize = 16_384;

/// Tallied rows, per profile, per [`TallyKey`].
#[derive(Debug, Default)]
struct TallyRows {
    by_profile: HashMap<String, HashMap<TallyKey, AuditEvent>>,
    len: usize,
}

/// Discovery answers not yet written: per profile, per [`TallyKey`], the row
/// to write (its first answer) with the running count and last time.
#[derive(Debug, Default)]
struct DiscoveryTally {
    rows: Mutex<TallyRows>,
    /// Failed attempts to write the tally.
    write_failures: AtomicU64,
}

impl DiscoveryTally {
    fn add(&self, a: &DiscoveryAnswer<'_>) {
        let mut key = TallyKey {
            operation: a.operation,
            outcome: a.outcome.label,
            http_status: a.http_status,
            route: a.route,
            client: a.client.map(|c| c.ip()),
        };
        let mut guard = self.rows.lock().unwrap_or_else(PoisonError::into_inner);
        let TallyRows { by_profile, len } = &mut *guard;
        let per_profile = match by_profile.get_mut(a.profile) {
            Some(p) => p,
            None => by_profile.entry(a.profile.to_string()).or_default(),
        };
        if *len >= MAX_TALLY_ROWS && !per_profile.contains_key(&key) {
            key.client = None;
        }
        if let Some(row) = per_profile.get_mut(&key) {
            row.count += 1;
            if a.now.secs() != row.time_unix {
                row.time_unix = a.now.secs();
                row.time = a.now.to_rfc3339();
            }
            return;
        }
        let mut row = AuditEvent::from_outcome(
            a.outcome,
            a.now,
            a.http_status,
            a.operation,
            a.route,
            key.client.map(|ip| ip.to_string()),
        );
        row.profile = a.profile.to_string();
        row.first_time = Some(row.time.clone());
        if key.client.is_none() && a.client.is_some() {
            row.detail = Some(format!("client addresses past the tally limit of {MAX_TALLY_ROWS} rows"));
        }
        per_profile.insert(key, row);
        *len += 1;
    }

    /// Takes every tallied row, leaving the tally empty.
    fn take(&self) -> Vec<AuditEvent> {
        let rows = std::mem::take(&mut *self.rows.lock().unwrap_or_else(PoisonError::into_inner));
        rows.by_profile.into_values().flat_map(HashMap::into_values).collect()
    }
}

impl AuditLog {
    /// Checks, for `scepd check-config`, that `serve` will be able to open the
    /// audit database at `path`, without creating or changing anything: an
    /// existing file must be an scepd audit database (or an empty one) that
    /// this process may write (a write lock is taken and released); a missing
    /// one needs its directory, or the nearest existing ancestor, to be a
    /// directory.
    ///
    /// # Errors
    /// Naming `audit.path` and the file.
    pub fn check(path: &Path) -> Result<(), ConfigError> {
        let fail = |e: &dyn std::fmt::Display| ConfigError(format!("audit.path: {}: {e}", path.display()));
        // `try_exists`, not `exists`: a directory we may not search is an error, not a missing file.
        if !path.try_exists().map_err(|e| fail(&e))? {
            let mut dir = path.parent();
            while let Some(d) = dir.filter(|d| !d.as_os_str().is_empty()) {
                if d.try_exists().map_err(|e| fail(&e))? {
                    return if d.is_dir() { Ok(()) } else { Err(fail(&format!("{} is not a directory", d.display()))) };
                }
                dir = d.parent();
            }
            return Ok(());
        }
        let conn =
            Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE).map_err(|e| fail(&e))?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(|e| fail(&e))?;
        // A write-ahead log left by a running or killed `serve` stays as it is:
        // closing this connection must not checkpoint it into the database.
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        if Path::new(&wal).exists() {
            conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)
                .map_err(|e| fail(&e))?;
        }
        // An empty database (e.g. a file pre-created for its owner) is one `serve` initialises.
        let (tables, ours): (i64, i64) = conn
            .query_row(
                "SELECT COUNT(*), COUNT(*) FILTER (WHERE name = 'audit_events') FROM sqlite_master WHERE type = 'table'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(|e| fail(&e))?;
        if tables > 0 && ours != 1 {
            return Err(fail(&"not an scepd audit database (no audit_events table)"));
        }
        conn.execute_batch("BEGIN IMMEDIATE; ROLLBACK;").map_err(|e| fail(&e))
    }

    /// Opens (creating if needed) the SQLite database at `path`, applies the
    /// schema and retention, and starts the writer thread; events name `node`.
    ///
    /// # Errors
    /// When the file cannot be opened or is not an scepd audit database.
    pub fn open(path: &Path, retention_days: i64, node: &str) -> Result<Self, ConfigError> {
        let fail = |e: rusqlite::Error| ConfigError(format!("audit.path: {}: {e}", path.display()));
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| ConfigError(format!("audit.path: cannot create {}: {e}", dir.display())))?;
        }
        // Device identities: readable by the service only, from the first byte.
        scep_store::sqlite::ensure_private_file(path)
            .map_err(|e| ConfigError(format!("audit.path: {}: {e}", path.display())))?;
        let conn = Connection::open(path).map_err(fail)?;
        scep_store::sqlite::keep_query_plans(&conn).map_err(fail)?;
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)).map_err(fail)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(ConfigError(format!("audit.path: {}: WAL mode unavailable (got {mode})", path.display())));
        }
        conn.pragma_update(None, "synchronous", "FULL").map_err(fail)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(fail)?;
        conn.execute_batch(SCHEMA).map_err(fail)?;
        migrate(&conn).map_err(fail)?;
        let mut sink = SqliteSink { conn };
        apply_retention(&mut sink, retention_days)
            .map_err(|e| ConfigError(format!("audit.path: {}: {e}", path.display())))?;
        let (tx, rx) = mpsc::channel();
        let tally = Arc::new(DiscoveryTally::default());
        let writer_tally = tally.clone();
        let writer_node: Arc<str> = Arc::from(node);
        let node = writer_node.clone();
        let failure = Arc::new(CommitFailure::default());
        let writer_failure = failure.clone();
        std::thread::Builder::new()
            .name("scepd-audit".into())
            .spawn(move || {
                let mut commits = CommitTracker::new(&writer_failure, &writer_node);
                writer(&mut sink, &rx, &writer_tally, retention_days, &mut commits);
            })
            .map_err(|e| ConfigError(format!("audit: cannot start the writer thread: {e}")))?;
        Ok(Self {
            tx,
            path: Some(Arc::new(path.to_path_buf())),
            described: Arc::from(format!("audit.path: {}", path.display())),
            node,
            tally,
            discovery: DiscoveryAudit::default(),
            failure,
        })
    }

    /// Opens the audit log on the shared PostgreSQL store (the table is
    /// migration 4 of `scep_store::migrations`, applied before this): checks
    /// that the table is there, applies retention, and starts the writer
    /// thread, which holds one connection of `pool`; events name `node`.
    ///
    /// # Errors
    /// Naming the store when the database cannot be reached or has no audit table.
    pub fn open_postgres(
        pool: Arc<scep_store::postgres::Pool>,
        retention_days: i64,
        node: &str,
    ) -> Result<Self, ConfigError> {
        let fail = |e: &dyn std::fmt::Display| ConfigError(format!("audit (PostgreSQL store): {e}"));
        let mut sink = super::audit_pg::PostgresSink::new(&pool);
        apply_retention(&mut sink, retention_days).map_err(|e| fail(&e))?;
        drop(sink);
        let (tx, rx) = mpsc::channel();
        let tally = Arc::new(DiscoveryTally::default());
        let writer_tally = tally.clone();
        let writer_node: Arc<str> = Arc::from(node);
        let node = writer_node.clone();
        let failure = Arc::new(CommitFailure::default());
        let writer_failure = failure.clone();
        std::thread::Builder::new()
            .name("scepd-audit".into())
            .spawn(move || {
                let mut sink = super::audit_pg::PostgresSink::new(&pool);
                let mut commits = CommitTracker::new(&writer_failure, &writer_node);
                writer(&mut sink, &rx, &writer_tally, retention_days, &mut commits);
            })
            .map_err(|e| fail(&format!("cannot start the writer thread: {e}")))?;
        Ok(Self {
            tx,
            path: None,
            described: Arc::from("audit (PostgreSQL store)"),
            node,
            tally,
            discovery: DiscoveryAudit::default(),
            failure,
        })
    }

    /// The node this log names in the events it writes.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Runs `f` on the writer's connection and waits for its answer (start-up only).
    fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut dyn AuditSink) -> Result<T, AuditError> + Send + 'static,
    ) -> Result<T, AuditError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Command::Run(Box::new(move |sink| tx.send(f(sink)))))
            .map_err(|_| AuditError::new("audit writer stopped"))?;
        futures_lite::future::block_on(rx).unwrap_or_else(|| Err(AuditError::new("audit writer stopped")))
    }

    /// This log auditing discovery answers as `mode` says.
    #[must_use]
    pub fn with_discovery(mut self, mode: DiscoveryAudit) -> Self {
        self.discovery = mode;
        self
    }

    /// How discovery answers are audited.
    pub fn discovery(&self) -> DiscoveryAudit {
        self.discovery
    }

    /// The SQLite database file (`None` on PostgreSQL).
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref().map(PathBuf::as_path)
    }

    /// The error of the last commit while commits fail (requests that need
    /// an event are then answered 503); `None` once a commit succeeds again,
    /// and before any failed. See the [module documentation](self).
    pub fn commit_failure(&self) -> Option<String> {
        self.failure.get()
    }

    /// Counts one discovery answer; the count is written within
    /// [`DISCOVERY_FLUSH_EVERY`] (see the [module documentation](self)).
    /// Never blocks on the disk.
    pub fn tally(&self, answer: &DiscoveryAnswer<'_>) {
        self.tally.add(answer);
    }

    /// Failed attempts to write the discovery tally so far (each is retried).
    pub fn tally_write_failures(&self) -> u64 {
        self.tally.write_failures.load(Ordering::Relaxed)
    }

    /// Stores `event`; resolves with its id once the commit is durable.
    ///
    /// # Errors
    /// When the database refused the write or the writer has stopped.
    pub fn record(&self, mut event: AuditEvent) -> impl Future<Output = Result<i64, AuditError>> + Send + 'static {
        if event.node.is_empty() {
            event.node = self.node.to_string();
        }
        let (tx, rx) = oneshot::channel();
        let sent = self.tx.send(Command::Append(Box::new(event), tx)).is_ok();
        async move {
            if !sent {
                return Err(AuditError::new("audit writer stopped"));
            }
            rx.await.unwrap_or_else(|| Err(AuditError::new("audit writer stopped")))
        }
    }

    /// Writes the discovery tally now; resolves once it is durable. The
    /// transports call this when they stop, after the last request.
    ///
    /// # Errors
    /// When the database refused the write (the tally is kept for a retry)
    /// or the writer has stopped.
    pub fn flush(&self) -> impl Future<Output = Result<(), AuditError>> + Send + 'static {
        let (tx, rx) = oneshot::channel();
        let sent = self.tx.send(Command::Flush(tx)).is_ok();
        async move {
            if !sent {
                return Err(AuditError::new("audit writer stopped"));
            }
            rx.await.unwrap_or_else(|| Err(AuditError::new("audit writer stopped")))
        }
    }

    /// Enrolments and failures per hour since `since` (Unix seconds), oldest
    /// hour first; hours without any are left out (the GUI's activity charts).
    ///
    /// # Errors
    /// When the database cannot be read or the writer has stopped.
    pub fn hourly(&self, since: i64) -> impl Future<Output = Result<Vec<HourlyActivity>, AuditError>> + Send + 'static {
        let (tx, rx) = oneshot::channel();
        let sent = self.tx.send(Command::Hourly(since, tx)).is_ok();
        async move {
            if !sent {
                return Err(AuditError::new("audit writer stopped"));
            }
            rx.await.unwrap_or_else(|| Err(AuditError::new("audit writer stopped")))
        }
    }

    /// Newest events first, filtered.
    ///
    /// # Errors
    /// When the database cannot be read or the writer has stopped.
    pub fn query(&self, q: AuditQuery) -> impl Future<Output = Result<Vec<AuditEvent>, AuditError>> + Send + 'static {
        let (tx, rx) = oneshot::channel();
        let sent = self.tx.send(Command::Query(q, tx)).is_ok();
        async move {
            if !sent {
                return Err(AuditError::new("audit writer stopped"));
            }
            rx.await.unwrap_or_else(|| Err(AuditError::new("audit writer stopped")))
        }
    }
}

/// How far before the newest audited issuance start-up reconciliation looks
/// for certificates without an event (covers events committed out of order
/// by concurrent requests and clock steps).
const RECONCILE_SLACK_SECS: i64 = 3600;
/// Most certificates one start-up reconciliation examines.
const RECONCILE_MAX_CERTIFICATES: usize = 100_000;

/// The outcome label of a certificate the local CA recorded whose enrolment
/// answer was never audited.
pub const ISSUED_NOT_DELIVERED: &str = "issued_not_delivered";

/// A serial as lowercase hex without leading zero bytes (the engine writes the
/// INTEGER's content octets, the CA store the magnitude).
fn serial_key(serial: &str) -> String {
    let lower = serial.to_ascii_lowercase();
    let trimmed = lower.trim_start_matches("00");
    if trimmed.is_empty() { "00".to_string() } else { trimmed.to_string() }
}

/// Start-up reconciliation of the local CA's store with the audit `log`
/// (before the service answers anything).
///
/// The local CA records a certificate in its store before the service commits
/// the enrolment's audit event and writes the answer (audit before answer). A
/// crash between the two (`kill -9`, power loss) leaves a certificate the
/// trail does not mention; the client never got it (its answer is written
/// only after the event). This finds every certificate recorded since shortly
/// before the newest issuance this node audited (within the retention period)
/// whose serial no event names, and records for each an event with outcome
/// [`ISSUED_NOT_DELIVERED`] (action `scep_pkcsreq`, or `scep_renewalreq` for a
/// renewal; the certificate's transactionID, subject, serial and issue time;
/// HTTP status 0: nothing was answered). So every certificate in the CA store
/// is explained by the trail. Returns how many events were added.
///
/// # Errors
/// Naming the audit log (or the local CA) when a database cannot be read or
/// written: the start stops rather than serve with an unexplained certificate.
pub fn record_undelivered(
    log: &AuditLog,
    ca: &scep_issuers::LocalCa,
    now: UnixTime,
    retention_days: i64,
) -> Result<usize, ConfigError> {
    let fail = |e: AuditError| ConfigError(format!("{}: reconciliation: {e}", log.described));
    let node = log.node.to_string();
    let newest = log.run(move |sink| sink.newest_issuance(&node)).map_err(fail)?;
    let retained = now.secs().saturating_sub(retention_days.saturating_mul(86_400));
    let since = newest.map_or(retained, |t| t.saturating_sub(RECONCILE_SLACK_SECS).max(retained));
    let certificates = ca
        .issued_since(UnixTime::from_secs(since), RECONCILE_MAX_CERTIFICATES)
        .map_err(|e| ConfigError(format!("local CA: reconciliation with the audit log: {e}")))?;
    if certificates.is_empty() {
        return Ok(0);
    }
    if certificates.len() == RECONCILE_MAX_CERTIFICATES {
        tracing::warn!(
            examined = RECONCILE_MAX_CERTIFICATES,
            "audit reconciliation examined its maximum of certificates; the rest are checked at the next start"
        );
    }
    let audited: std::collections::HashSet<String> = log
        .run(move |sink| sink.serials_since(since.saturating_sub(RECONCILE_SLACK_SECS)))
        .map_err(fail)?
        .iter()
        .map(|s| serial_key(s))
        .collect();
    let missing: Vec<AuditEvent> = certificates
        .iter()
        .filter(|c| !audited.contains(&serial_key(&c.serial_hex)))
        .map(|c| AuditEvent { node: log.node.to_string(), ..undelivered_event(c, ca, now) })
        .collect();
    if missing.is_empty() {
        return Ok(0);
    }
    for e in &missing {
        tracing::warn!(
            target: "scepd::audit",
            profile = %e.profile,
            serial = e.serial.as_deref().unwrap_or(""),
            txid = e.transaction_id.as_deref().unwrap_or(""),
            "certificate issued but never delivered (no audit event; the process stopped before answering): recorded"
        );
    }
    let n = missing.len();
    log.run(move |sink| sink.insert(&missing.iter().collect::<Vec<_>>())).map_err(fail)?;
    Ok(n)
}

/// The [`ISSUED_NOT_DELIVERED`] event of a stored certificate.
fn undelivered_event(
    c: &scep_issuers::local::store::StoredCertificate,
    ca: &scep_issuers::LocalCa,
    now: UnixTime,
) -> AuditEvent {
    let subject = scep_engine::x509::CertificateRef::parse(&c.der)
        .ok()
        .map(|cert| scep_engine::x509::name_to_string(cert.subject));
    AuditEvent {
        id: 0,
        node: String::new(),
        time: c.issued_at.to_rfc3339(),
        time_unix: c.issued_at.secs(),
        profile: c.profile.clone(),
        action: if c.renewal_of.is_some() { "scep_renewalreq" } else { "scep_pkcsreq" }.to_string(),
        operation: "PKIOperation".to_string(),
        message_type: None,
        transaction_id: Some(c.transaction_id.clone()),
        outcome: ISSUED_NOT_DELIVERED.to_string(),
        http_status: 0,
        pki_status: None,
        fail_info: None,
        subject,
        subject_alt_names: Vec::new(),
        serial: Some(c.serial_hex.clone()),
        renewal_of: c.renewal_of.clone(),
        intune_subject: None,
        intune_issuer: None,
        intune_nonce: None,
        issuer: Some(scep_issuers::Issuer::id(ca).to_string()),
        client_addr: None,
        route: String::new(),
        detail: Some(format!(
            "the local CA recorded this certificate at {} but its enrolment answer was never audited, so it \
             was never sent (the process stopped in between); found at start-up at {}",
            c.issued_at.to_rfc3339(),
            now.to_rfc3339()
        )),
        count: 1,
        first_time: None,
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
    detail TEXT,
    count INTEGER NOT NULL DEFAULT 1,
    first_time TEXT,
    node TEXT
);
CREATE INDEX IF NOT EXISTS audit_events_profile ON audit_events (profile, id);
CREATE INDEX IF NOT EXISTS audit_events_action ON audit_events (action, id);
CREATE INDEX IF NOT EXISTS audit_events_time ON audit_events (time_unix);
";

/// Deletes the events older than `retention_days`.
fn apply_retention(sink: &mut dyn AuditSink, retention_days: i64) -> Result<usize, AuditError> {
    let cutoff = UnixTime::now().secs().saturating_sub(retention_days.saturating_mul(86_400));
    let n = sink.prune(cutoff)?;
    if n > 0 {
        tracing::info!(deleted = n, retention_days, "audit retention applied");
    }
    Ok(n)
}

/// Most tallied discovery rows kept for a retry while the database refuses
/// writes (each stands for any number of answers).
const MAX_UNWRITTEN_TALLY_ROWS: usize = 65_536;

/// The writer loop: commit everything queued in one transaction, then answer;
/// write the discovery tally every [`DISCOVERY_FLUSH_EVERY`] and on the way out.
fn writer(
    sink: &mut dyn AuditSink,
    rx: &mpsc::Receiver<Command>,
    tally: &DiscoveryTally,
    retention_days: i64,
    commits: &mut CommitTracker<'_>,
) {
    let mut last_prune = Instant::now();
    let mut next_flush = Instant::now() + DISCOVERY_FLUSH_EVERY;
    let mut unwritten = Vec::new();
    let mut pacer = CommitPacer::default();
    loop {
        let received = rx.recv_timeout(next_flush.saturating_duration_since(Instant::now()));
        if Instant::now() >= next_flush || matches!(received, Err(RecvTimeoutError::Disconnected)) {
            // A failure is logged and counted; the rows stay for the next attempt.
            let _ = flush_tally(sink, tally, &mut unwritten, commits);
            next_flush = Instant::now() + DISCOVERY_FLUSH_EVERY;
            commits.probe(sink);
        }
        if last_prune.elapsed() >= PRUNE_EVERY {
            if let Err(e) = apply_retention(sink, retention_days) {
                tracing::error!(error = %e, "audit retention failed");
            }
            last_prune = Instant::now();
        }
        let first = match received {
            Ok(c) => c,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let mut appends = Vec::new();
        let mut queries = Vec::new();
        let mut hourlies = Vec::new();
        let mut flushes = Vec::new();
        let mut runs = Vec::new();
        // Group commit: under load, let the batch fill before one fsync covers it.
        let taken = Instant::now();
        let linger = pacer.linger(taken);
        if !linger.is_zero() && matches!(first, Command::Append(..)) {
            std::thread::sleep(linger);
        }
        let mut next = Some(first);
        while let Some(cmd) = next.take() {
            match cmd {
                Command::Append(e, done) => appends.push((e, done)),
                Command::Query(q, done) => queries.push((q, done)),
                Command::Hourly(since, done) => hourlies.push((since, done)),
                Command::Flush(done) => flushes.push(done),
                Command::Run(f) => runs.push(f),
            }
            if appends.len() < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        if !appends.is_empty() {
            pacer.record(taken, appends.len());
            let events: Vec<&AuditEvent> = appends.iter().map(|(e, _)| &**e).collect();
            match sink.insert(&events) {
                Ok(ids) => {
                    commits.succeeded(sink);
                    for ((_, done), id) in appends.into_iter().zip(ids) {
                        done.send(Ok(id));
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "audit commit failed");
                    commits.failed(&e);
                    let e = AuditError { message: format!("audit commit failed: {e}"), ..e };
                    for (_, done) in appends {
                        done.send(Err(e.clone()));
                    }
                }
            }
        }
        if !queries.is_empty() || !hourlies.is_empty() || !flushes.is_empty() {
            // Queries see the discovery answers counted so far.
            let flushed = flush_tally(sink, tally, &mut unwritten, commits);
            for done in flushes {
                done.send(flushed.clone());
            }
        }
        let failed = |e: AuditError| AuditError { message: format!("audit query failed: {e}"), ..e };
        for (q, done) in queries {
            done.send(sink.select(&q).map_err(failed));
        }
        for (since, done) in hourlies {
            done.send(sink.hourly(since).map_err(failed));
        }
        for f in runs {
            f(sink);
        }
    }
}

/// Writes the discovery tally (and rows an earlier attempt could not write)
/// in one transaction; on failure keeps them for the next attempt.
fn flush_tally(
    sink: &mut dyn AuditSink,
    tally: &DiscoveryTally,
    unwritten: &mut Vec<AuditEvent>,
    commits: &mut CommitTracker<'_>,
) -> Result<(), AuditError> {
    let node = commits.node;
    unwritten.extend(tally.take().into_iter().map(|row| AuditEvent { node: node.to_string(), ..row }));
    if unwritten.is_empty() {
        return Ok(());
    }
    let rows: Vec<&AuditEvent> = unwritten.iter().collect();
    match sink.insert(&rows) {
        Ok(_) => {
            unwritten.clear();
            commits.succeeded(sink);
            Ok(())
        }
        Err(e) => {
            commits.failed(&e);
            tally.write_failures.fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %e, rows = unwritten.len(), "audit: discovery tally not written; retrying");
            if unwritten.len() > MAX_UNWRITTEN_TALLY_ROWS {
                let dropped = unwritten.len() - MAX_UNWRITTEN_TALLY_ROWS;
                let answers: u64 = unwritten[..dropped].iter().map(|r| r.count).sum();
                tracing::error!(rows = dropped, answers, "audit: oldest discovery tally rows dropped");
                unwritten.drain(..dropped);
            }
            Err(AuditError { message: format!("audit tally not written: {e}"), ..e })
        }
    }
}

/// The SQLite backend: `audit.db`, WAL, `synchronous = FULL`.
struct SqliteSink {
    conn: Connection,
}

fn sqlite_error(e: &rusqlite::Error) -> AuditError {
    AuditError::new(e.to_string())
}

impl AuditSink for SqliteSink {
    fn insert(&mut self, batch: &[&AuditEvent]) -> Result<Vec<i64>, AuditError> {
        insert_batch(&mut self.conn, batch).map_err(|e| sqlite_error(&e))
    }

    fn select(&mut self, q: &AuditQuery) -> Result<Vec<AuditEvent>, AuditError> {
        select(&self.conn, q).map_err(|e| sqlite_error(&e))
    }

    fn hourly(&mut self, since: i64) -> Result<Vec<HourlyActivity>, AuditError> {
        hourly(&self.conn, since).map_err(|e| sqlite_error(&e))
    }

    fn prune(&mut self, cutoff: i64) -> Result<usize, AuditError> {
        self.conn
            .execute("DELETE FROM audit_events WHERE time_unix < ?1", params![cutoff])
            .map_err(|e| sqlite_error(&e))
    }

    fn newest_issuance(&mut self, _node: &str) -> Result<Option<i64>, AuditError> {
        self.conn
            .query_row("SELECT MAX(time_unix) FROM audit_events WHERE serial IS NOT NULL", [], |r| r.get(0))
            .map_err(|e| sqlite_error(&e))
    }

    fn serials_since(&mut self, since: i64) -> Result<Vec<String>, AuditError> {
        let mut stmt = self
            .conn
            .prepare("SELECT serial FROM audit_events WHERE serial IS NOT NULL AND time_unix >= ?1")
            .map_err(|e| sqlite_error(&e))?;
        let rows = stmt.query_map(params![since], |r| r.get::<_, String>(0)).map_err(|e| sqlite_error(&e))?;
        rows.collect::<Result<_, _>>().map_err(|e| sqlite_error(&e))
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
    let has_count: bool =
        conn.query_row("SELECT COUNT(*) FROM pragma_table_info('audit_events') WHERE name = 'count'", [], |r| {
            r.get::<_, i64>(0).map(|n| n > 0)
        })?;
    if !has_count {
        conn.execute_batch(
            "ALTER TABLE audit_events ADD COLUMN count INTEGER NOT NULL DEFAULT 1; \
             ALTER TABLE audit_events ADD COLUMN first_time TEXT;",
        )?;
    }
    let has_node: bool =
        conn.query_row("SELECT COUNT(*) FROM pragma_table_info('audit_events') WHERE name = 'node'", [], |r| {
            r.get::<_, i64>(0).map(|n| n > 0)
        })?;
    if !has_node {
        conn.execute_batch("ALTER TABLE audit_events ADD COLUMN node TEXT")?;
    }
    Ok(())
}

fn insert_batch(conn: &mut Connection, batch: &[&AuditEvent]) -> rusqlite::Result<Vec<i64>> {
    let tx = conn.transaction()?;
    let mut ids = Vec::with_capacity(batch.len());
    {
        let mut stmt = tx.prepare_cached(
            "INSERT INTO audit_events (time, time_unix, profile, action, operation, message_type, transaction_id, \
             outcome, http_status, pki_status, fail_info, subject, subject_alt_names, serial, renewal_of, \
             intune_subject, intune_issuer, intune_nonce, client_addr, route, detail, issuer, count, first_time, node) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, \
             ?22, ?23, ?24, ?25)",
        )?;
        for e in batch {
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
                // Every row stands for at least one answer.
                i64::try_from(e.count.max(1)).unwrap_or(i64::MAX),
                e.first_time,
                e.node,
            ])?;
            ids.push(tx.last_insert_rowid());
        }
    }
    tx.commit()?;
    Ok(ids)
}

/// A list filter as the JSON array `json_each` reads; `None` (no filter) when empty.
fn json_list(values: &[String]) -> Option<String> {
    if values.is_empty() {
        return None;
    }
    // A list of strings always serializes.
    Some(serde_json::to_string(values).unwrap_or_else(|_| "[]".into()))
}

/// See [`AuditLog::hourly`].
fn hourly(conn: &Connection, since: i64) -> rusqlite::Result<Vec<HourlyActivity>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT (time_unix / 3600) * 3600 AS hour, \
                COALESCE(SUM(CASE WHEN outcome = 'success' AND serial IS NOT NULL THEN count ELSE 0 END), 0), \
                COALESCE(SUM(CASE WHEN outcome <> 'success' AND outcome <> 'pending' THEN count ELSE 0 END), 0) \
         FROM audit_events WHERE time_unix >= ?1 AND action IN ({ENROLMENT_ACTIONS}) \
         GROUP BY hour ORDER BY hour"
    ))?;
    let count = |n: i64| u64::try_from(n).unwrap_or(0);
    let rows = stmt.query_map(params![since], |r| {
        Ok(HourlyActivity { hour_unix: r.get(0)?, enrolments: count(r.get(1)?), failures: count(r.get(2)?) })
    })?;
    rows.collect()
}

/// The events `q` selects, newest first. The `WHERE` clause names only the
/// filters `q` sets, so SQLite can use the `(profile, id)` / `(action, id)`
/// indexes (a `?1 IS NULL OR ...` form scans the table); at most 2^6 statement
/// shapes, each prepared once and cached.
fn select(conn: &Connection, q: &AuditQuery) -> rusqlite::Result<Vec<AuditEvent>> {
    use rusqlite::types::Value as Sql;
    let mut sql = String::from(
        "SELECT id, time, time_unix, profile, action, operation, message_type, transaction_id, outcome, \
         http_status, pki_status, fail_info, subject, subject_alt_names, serial, renewal_of, intune_subject, \
         intune_issuer, intune_nonce, client_addr, route, detail, issuer, count, first_time, node \
         FROM audit_events WHERE 1",
    );
    let mut args: Vec<Sql> = Vec::new();
    let lists = [
        ("profile IN", &q.profile),
        ("action IN", &q.action),
        ("outcome IN", &q.outcome),
        ("outcome NOT IN", &q.exclude_outcome),
    ];
    for (test, values) in lists {
        if let Some(json) = json_list(values) {
            args.push(Sql::Text(json));
            sql.push_str(&format!(" AND {test} (SELECT value FROM json_each(?{}))", args.len()));
        }
    }
    if let Some(serial) = &q.certificate {
        args.push(Sql::Text(serial.clone()));
        sql.push_str(&format!(" AND (serial = ?{n} OR renewal_of = ?{n})", n = args.len()));
    }
    for (test, value) in [("id <", q.before_id), ("time_unix >=", q.since)] {
        if let Some(v) = value {
            args.push(Sql::Integer(v));
            sql.push_str(&format!(" AND {test} ?{}", args.len()));
        }
    }
    args.push(Sql::Integer(i64::from(q.limit.clamp(1, MAX_QUERY_LIMIT))));
    sql.push_str(&format!(" ORDER BY id DESC LIMIT ?{}", args.len()));
    let mut stmt = conn.prepare_cached(&sql)?;
    let args = rusqlite::params_from_iter(args);
    let rows = stmt.query_map(args, |r| {
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
            count: u64::try_from(r.get::<_, i64>(23)?).unwrap_or(1),
            first_time: r.get(24)?,
            node: r.get::<_, Option<String>>(25)?.unwrap_or_default(),
        })
    })?;
    rows.collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future::block_on;
    use scep_engine::Operation;

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
            let log = AuditLog::open(&path, 30, "node-a").unwrap();
            let a = block_on(log.record(event("corp", "scep_pkcsreq", "success"))).unwrap();
            let b = block_on(log.record(event("iot", "scep_pkcsreq_intune", "replay"))).unwrap();
            assert!(b > a);
        }
        let log = AuditLog::open(&path, 30, "node-b").unwrap();
        let got = block_on(log.query(all())).unwrap();
        assert_eq!(got.len(), 2);
        assert!(got.iter().all(|e| e.node == "node-a"), "each event names the node that wrote it");
        assert_eq!(got[0].profile, "iot", "newest first");
        assert_eq!(got[1].subject_alt_names, vec!["DNS:a.example".to_string()]);
        let q = AuditQuery { profile: vec!["corp".into()], ..all() };
        assert_eq!(block_on(log.query(q)).unwrap().len(), 1);
        let q = AuditQuery { action: vec!["scep_pkcsreq_intune".into()], ..all() };
        assert_eq!(block_on(log.query(q)).unwrap()[0].outcome, "replay");
        let q = AuditQuery { outcome: vec!["nope".into()], ..all() };
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
    fn list_filters_match_any_value_and_exclude_outcomes() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(&dir.path().join("audit.db"), 30, "node-a").unwrap();
        let rec = |p: &str, a: &str, o: &str| block_on(log.record(event(p, a, o))).unwrap();
        let e1 = rec("corp", "scep_pkcsreq_intune", "success");
        let e2 = rec("corp", "scep_pkcsreq_intune", "signature_invalid");
        let e3 = rec("iot", "scep_renewalreq_intune", "replay");
        let e4 = rec("corp", "scep_pkcsreq", "bad_challenge");
        let e5 = rec("iot", "scep_renewalreq_intune", "success");
        let e6 = rec("plain", "scep_getcacaps", "success");
        let e7 = rec("corp", "scep_pkcsreq_intune", "claim_mismatch");
        let list = |v: &[&str]| v.iter().map(|s| (*s).to_string()).collect::<Vec<_>>();
        let ids = |q: AuditQuery| block_on(log.query(q)).unwrap().iter().map(|e| e.id).collect::<Vec<_>>();
        let intune = list(&["scep_pkcsreq_intune", "scep_renewalreq_intune"]);

        assert_eq!(ids(AuditQuery { action: intune.clone(), ..all() }), [e7, e5, e3, e2, e1]);
        assert_eq!(ids(AuditQuery { profile: list(&["iot", "plain"]), ..all() }), [e6, e5, e3]);
        assert_eq!(ids(AuditQuery { outcome: list(&["replay", "bad_challenge", "nope"]), ..all() }), [e4, e3]);
        assert_eq!(ids(AuditQuery { exclude_outcome: list(&["success"]), ..all() }), [e7, e4, e3, e2]);
        assert_eq!(ids(AuditQuery { exclude_outcome: list(&["success", "replay"]), ..all() }), [e7, e4, e2]);
        // The GUI's "recent Intune failures": both Intune actions, not success, newest first.
        let failures = AuditQuery { action: intune.clone(), exclude_outcome: list(&["success"]), ..all() };
        assert_eq!(ids(failures.clone()), [e7, e3, e2]);
        assert_eq!(ids(AuditQuery { limit: 2, ..failures.clone() }), [e7, e3]);
        assert_eq!(ids(AuditQuery { limit: 2, before_id: Some(e3), ..failures.clone() }), [e2]);
        assert_eq!(ids(AuditQuery { profile: list(&["iot"]), ..failures.clone() }), [e3]);
        // Lists combine with AND; an outcome both wanted and excluded matches nothing.
        let q = AuditQuery { outcome: list(&["success", "replay"]), exclude_outcome: list(&["success"]), ..all() };
        assert_eq!(ids(q), [e3]);
        assert!(
            ids(AuditQuery { outcome: list(&["success"]), exclude_outcome: list(&["success"]), ..all() }).is_empty()
        );
        // A value is matched whole: no prefix, no pattern, no JSON injection.
        assert!(ids(AuditQuery { action: list(&["scep_pkcsreq%"]), ..all() }).is_empty());
        assert!(ids(AuditQuery { action: list(&["scep_pkcsreq\"", "x"]), ..all() }).is_empty());
        assert_eq!(ids(AuditQuery { action: list(&["scep_pkcsreq"]), ..all() }), [e4]);
        // Excluding nothing that exists leaves everything.
        assert_eq!(ids(AuditQuery { exclude_outcome: list(&["nope"]), ..all() }), [e7, e6, e5, e4, e3, e2, e1]);
    }

    #[test]
    fn concurrent_records_are_batched_and_all_durable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.db");
        let log = AuditLog::open(&path, 30, "node-a").unwrap();
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
            let log = AuditLog::open(&path, 30, "node-a").unwrap();
            let mut old = event("corp", "scep_getcacert", "success");
            old.time_unix -= 31 * 86_400;
            block_on(log.record(old)).unwrap();
            block_on(log.record(event("corp", "scep_getcacert", "success"))).unwrap();
        }
        let log = AuditLog::open(&path, 30, "node-a").unwrap();
        assert_eq!(block_on(log.query(all())).unwrap().len(), 1);
    }

    fn caps_outcome() -> Outcome {
        Outcome {
            profile: "corp".into(),
            operation: Some(Operation::GetCaCaps),
            label: "success",
            ..Outcome::default()
        }
    }

    fn answer<'a>(outcome: &'a Outcome, client: &str, now: UnixTime) -> DiscoveryAnswer<'a> {
        DiscoveryAnswer {
            outcome,
            profile: "corp",
            operation: "GetCACaps",
            http_status: 200,
            route: "scep",
            client: Some(client.parse().unwrap()),
            now,
        }
    }

    fn stored_total(path: &Path) -> i64 {
        Connection::open(path)
            .unwrap()
            .query_row("SELECT COALESCE(SUM(count), 0) FROM audit_events", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn discovery_answers_are_tallied_per_client_ip_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(&dir.path().join("audit.db"), 30, "node-a").unwrap();
        let outcome = caps_outcome();
        let t0 = UnixTime::from_secs(UnixTime::now().secs() - 5);
        for i in 0..1000u16 {
            // Same IP, a new port per connection: one row.
            log.tally(&answer(&outcome, &format!("192.0.2.1:{}", 1024 + i), t0));
        }
        for _ in 0..500 {
            log.tally(&answer(&outcome, "[2001:db8::1]:443", UnixTime::from_secs(t0.secs() + 3)));
        }
        // A query sees what was tallied so far.
        let mut rows = block_on(log.query(all())).unwrap();
        rows.sort_by_key(|r| r.count);
        assert_eq!(rows.len(), 2, "{rows:?}");
        assert_eq!((rows[0].count, rows[0].client_addr.as_deref()), (500, Some("2001:db8::1")));
        assert_eq!((rows[1].count, rows[1].client_addr.as_deref()), (1000, Some("192.0.2.1")));
        assert_eq!(rows[1].action, "scep_getcacaps");
        assert_eq!(rows[1].first_time.as_deref(), Some(t0.to_rfc3339().as_str()));
        assert_eq!(rows[1].time_unix, t0.secs());
        // A later answer moves `time` on, `first_time` stays.
        log.tally(&answer(&outcome, "192.0.2.1:9", UnixTime::from_secs(t0.secs() + 2)));
        let newest = block_on(log.query(AuditQuery { limit: 1, ..all() })).unwrap();
        assert_eq!(newest[0].count, 1, "a new tally window starts a new row");
        assert_eq!(newest[0].time_unix, t0.secs() + 2);
        // Single events read back with a count of 1 and no first_time.
        block_on(log.record(event("corp", "scep_pkcsreq", "success"))).unwrap();
        let newest = block_on(log.query(AuditQuery { limit: 1, ..all() })).unwrap();
        assert_eq!((newest[0].count, newest[0].first_time.as_deref()), (1, None));
    }

    #[test]
    fn a_flood_from_many_addresses_is_counted_in_bounded_rows() {
        // The tally alone (no writer thread, so no flush can split the window).
        let tally = DiscoveryTally::default();
        let outcome = caps_outcome();
        let now = UnixTime::now();
        let flood = MAX_TALLY_ROWS + 5_000;
        for i in 0..flood {
            let [a, b, c, d] = u32::try_from(i).unwrap().to_be_bytes();
            tally.add(&answer(&outcome, &format!("[2001:db8::{a:x}{b:02x}:{c:x}{d:02x}]:1"), now));
        }
        // An address already in the window keeps its own row past the limit.
        tally.add(&answer(&outcome, "[2001:db8::0:0]:2", now));
        let rows = tally.take();
        assert_eq!(rows.len(), MAX_TALLY_ROWS + 1);
        let unattributed: Vec<_> = rows.iter().filter(|r| r.client_addr.is_none()).collect();
        assert_eq!(unattributed.len(), 1, "one row for the overflow");
        assert_eq!(unattributed[0].count, 5_000);
        assert!(unattributed[0].detail.as_deref().unwrap().contains("tally limit"));
        let first = rows.iter().find(|r| r.client_addr.as_deref() == Some("2001:db8::")).unwrap();
        assert_eq!(first.count, 2);
        assert_eq!(rows.iter().map(|r| r.count).sum::<u64>(), u64::try_from(flood).unwrap() + 1, "all counted");
        assert!(tally.take().is_empty(), "a new window starts empty");
    }

    #[test]
    fn the_tally_reaches_the_disk_on_its_own_and_on_a_clean_stop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.db");
        let log = AuditLog::open(&path, 30, "node-a").unwrap();
        let outcome = caps_outcome();
        for _ in 0..10 {
            log.tally(&answer(&outcome, "192.0.2.7:1", UnixTime::now()));
        }
        // Without a query or a stop: within the flush interval.
        let deadline = Instant::now() + DISCOVERY_FLUSH_EVERY * 10;
        while stored_total(&path) < 10 {
            assert!(Instant::now() < deadline, "the tally was not written on its own");
            std::thread::sleep(Duration::from_millis(20));
        }
        // Tallied just before the last handle goes: written as the writer stops.
        for _ in 0..7 {
            log.tally(&answer(&outcome, "192.0.2.7:1", UnixTime::now()));
        }
        drop(log);
        let deadline = Instant::now() + Duration::from_secs(10);
        while stored_total(&path) < 17 {
            assert!(Instant::now() < deadline, "the tally was not written at stop");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(stored_total(&path), 17);
    }

    #[test]
    fn a_database_from_before_counted_rows_is_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.db");
        {
            let conn = Connection::open(&path).unwrap();
            // The first release's table: no issuer, count or first_time.
            conn.execute_batch(
                "CREATE TABLE audit_events (id INTEGER PRIMARY KEY AUTOINCREMENT, time TEXT NOT NULL, \
                 time_unix INTEGER NOT NULL, profile TEXT NOT NULL, action TEXT NOT NULL, operation TEXT NOT NULL, \
                 message_type TEXT, transaction_id TEXT, outcome TEXT NOT NULL, http_status INTEGER NOT NULL, \
                 pki_status TEXT, fail_info TEXT, subject TEXT, subject_alt_names TEXT NOT NULL, serial TEXT, \
                 renewal_of TEXT, intune_subject TEXT, intune_issuer TEXT, intune_nonce TEXT, client_addr TEXT, \
                 route TEXT NOT NULL, detail TEXT); \
                 INSERT INTO audit_events (time, time_unix, profile, action, operation, outcome, http_status, \
                 subject_alt_names, route) VALUES ('2030-01-01T00:00:00Z', 1893456000, 'corp', 'scep_pkcsreq', \
                 'PKIOperation', 'success', 200, '[]', 'scep');",
            )
            .unwrap();
        }
        let log = AuditLog::open(&path, 36_500, "node-a").unwrap();
        let rows = block_on(log.query(all())).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].count, rows[0].issuer.as_deref(), rows[0].first_time.as_deref()), (1, None, None));
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
