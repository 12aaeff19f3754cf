//! One-time challenge passwords (NDES's default mode): minted by an operator
//! through the admin API, consumed by the first enrolment that presents one,
//! refused after, also across restarts.
//!
//! The contract is the [`ChallengeStore`] trait; [`SqliteChallenges`] is the
//! built-in implementation (`challenges.sqlite` in the data directory, WAL,
//! `synchronous = FULL`, one thread owning the connection like
//! [`crate::store::audit`]). A PostgreSQL store implements the same trait.
//!
//! What every implementation must guarantee:
//! - only the SHA-256 of a challenge is stored ([`secret_digest`]), never the
//!   challenge, which is shown once, to the operator who minted it;
//! - [`ChallengeStore::consume`] is atomic: of any number of concurrent
//!   requests presenting one challenge, exactly one gets
//!   [`Consumption::Consumed`], every other one [`Refusal::Used`], except a
//!   request of the transaction that consumed it, presented again unexpired
//!   and within its binding: that is a resend ([`Consumption::Resent`]), which
//!   goes on only to an issuer that answers resends from a durable record
//!   (`Issuer::answers_resends_durably`, the local CA: the certificate it
//!   already issued) and is refused as used otherwise;
//! - a challenge is refused when it is unknown, of another profile, used,
//!   expired (`expires_at <= now`) or bound to another identity
//!   ([`ChallengeBinding`]); a binding mismatch does not consume it (the
//!   device it was minted for can still use it);
//! - a challenge that reaches its expiry unused is reported once to the
//!   [`ExpiryObserver`] (audit and metrics `expired`), whether a sweep or a
//!   late request finds it first.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension as _, TransactionBehavior, params};
use scep_engine::UnixTime;
use scep_engine::config::ConfigError;
use scep_issuers::oneshot;

/// Shortest lifetime of a minted challenge, in seconds. One second, so that
/// expiry can be exercised end to end against the running server without a
/// clock hook; operators mint for minutes or hours.
pub const MIN_TTL_SECS: i64 = 1;
/// Longest lifetime of a minted challenge (7 days), in seconds.
pub const MAX_TTL_SECS: i64 = 7 * 86_400;
/// Lifetime when the operator names none (60 minutes, as NDES), in seconds.
pub const DEFAULT_TTL_SECS: i64 = 3600;
/// Most subjectAltNames one binding may list.
pub const MAX_BOUND_SANS: usize = 32;
/// How long a used or expired challenge is kept after its expiry, so that a
/// late reuse is refused as `challenge_used` / `challenge_expired` rather than
/// `challenge_unknown` (7 days), in seconds.
pub const KEEP_AFTER_EXPIRY_SECS: i64 = 7 * 86_400;
/// How often the SQLite store looks for challenges that expired unused.
const SWEEP_EVERY: Duration = Duration::from_secs(30);
/// Random bytes in a challenge: 128 bits.
const SECRET_BYTES: usize = 16;

/// A boxed future, as the store returns them (runtime-agnostic, `Send`).
pub type StoreFuture<T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'static>>;

/// The store could not do something (database error, writer stopped).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreError(pub String);

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StoreError {}

/// Whom a challenge may enrol: every value set must match the CSR exactly.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ChallengeBinding {
    /// The CSR subject must carry exactly this one commonName.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub common_name: Option<String>,
    /// The CSR's subjectAltNames must be exactly this set, each written as
    /// scepd displays SANs: `DNS:host.example`, `email:a@b`, `UPN:a@b`,
    /// `URI:...`, `IP:192.0.2.1` ([`ChallengeBinding::normalize_san`]).
    /// Empty: the SANs are not bound.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<String>,
}

impl ChallengeBinding {
    /// Whether nothing is bound.
    pub fn is_empty(&self) -> bool {
        self.common_name.is_none() && self.subject_alt_names.is_empty()
    }

    /// `value` in the form the CSR's SANs are compared in: the type prefix
    /// (case-insensitive on input) as scepd displays it, DNS names in lower
    /// case, IP addresses in canonical form.
    ///
    /// # Errors
    /// A reason naming the accepted forms.
    pub fn normalize_san(value: &str) -> Result<String, String> {
        let Some((kind, v)) = value.split_once(':') else {
            return Err(format!("{value:?}: expected TYPE:VALUE with TYPE one of DNS, email, UPN, URI, IP"));
        };
        if v.is_empty() {
            return Err(format!("{value:?}: empty value"));
        }
        match kind.to_ascii_lowercase().as_str() {
            "dns" => Ok(format!("DNS:{}", v.to_ascii_lowercase())),
            "email" => Ok(format!("email:{v}")),
            "upn" => Ok(format!("UPN:{v}")),
            "uri" => Ok(format!("URI:{v}")),
            "ip" => v
                .parse::<std::net::IpAddr>()
                .map(|ip| format!("IP:{ip}"))
                .map_err(|_| format!("{value:?}: not an IP address")),
            _ => Err(format!("{value:?}: TYPE must be one of DNS, email, UPN, URI, IP")),
        }
    }

    /// Why a CSR with `common_names` and `subject_alt_names` (displayed as
    /// [`scep_engine::x509::SubjectAltName`] displays them) does not match,
    /// or `None` when it does.
    pub fn mismatch(&self, common_names: &[String], subject_alt_names: &[String]) -> Option<String> {
        if let Some(cn) = &self.common_name
            && !(common_names.len() == 1 && common_names[0] == *cn)
        {
            return Some(format!("bound to commonName {cn:?}, the CSR has {common_names:?}"));
        }
        if !self.subject_alt_names.is_empty() {
            let mut presented: Vec<String> =
                subject_alt_names.iter().map(|s| Self::normalize_san(s).unwrap_or_else(|_| s.clone())).collect();
            presented.sort();
            presented.dedup();
            let mut bound = self.subject_alt_names.clone();
            bound.sort();
            bound.dedup();
            if presented != bound {
                return Some(format!("bound to subjectAltNames {bound:?}, the CSR has {presented:?}"));
            }
        }
        None
    }
}

/// What the operator asked for (the admin API validates the bounds).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MintRequest {
    /// The profile the challenge enrols on.
    pub profile: String,
    /// Whom it may enrol.
    pub binding: ChallengeBinding,
    /// Lifetime in seconds ([`MIN_TTL_SECS`]..=[`MAX_TTL_SECS`]).
    pub ttl_secs: i64,
    /// The name of the API key that minted it (audit).
    pub created_by: String,
}

/// A freshly minted challenge: the only time the secret exists outside the client.
#[derive(Clone, PartialEq, Eq)]
pub struct Minted {
    /// Row id (names the challenge in lists and audit events).
    pub id: i64,
    /// The challenge to hand to the device.
    pub challenge: String,
    /// When it stops being accepted.
    pub expires_at: UnixTime,
}

impl std::fmt::Debug for Minted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Minted").field("id", &self.id).field("expires_at", &self.expires_at).finish_non_exhaustive()
    }
}

/// An unused, unexpired challenge, as lists show it (never the secret).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutstandingChallenge {
    /// Row id.
    pub id: i64,
    /// Its profile.
    pub profile: String,
    /// Whom it may enrol.
    pub binding: ChallengeBinding,
    /// When it was minted.
    pub created_at: UnixTime,
    /// When it stops being accepted.
    pub expires_at: UnixTime,
    /// The API key that minted it.
    pub created_by: String,
}

/// A presented challenge, with the identity the CSR asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Presentation {
    /// The profile the request came in on.
    pub profile: String,
    /// The challenge, as the client sent it.
    pub challenge: scep_engine::issue::ChallengeSecret,
    /// The CSR subject's commonName values.
    pub common_names: Vec<String>,
    /// The CSR's subjectAltNames, displayed.
    pub subject_alt_names: Vec<String>,
    /// The SCEP transactionID (recorded with the consumption).
    pub transaction_id: String,
}

/// Why a presented challenge was refused (each a CertRep FAILURE badRequest).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No such challenge on this profile.
    Unknown,
    /// Already consumed.
    Used {
        /// Row id.
        id: i64,
    },
    /// Past its expiry.
    Expired {
        /// Row id.
        id: i64,
    },
    /// The CSR asks for another identity than the challenge is bound to.
    BindingMismatch {
        /// Row id.
        id: i64,
        /// What differs.
        why: String,
    },
}

impl Refusal {
    /// The audit and metrics label.
    pub const fn label(&self) -> &'static str {
        match self {
            Self::Unknown => "challenge_unknown",
            Self::Used { .. } => "challenge_used",
            Self::Expired { .. } => "challenge_expired",
            Self::BindingMismatch { .. } => "challenge_binding_mismatch",
        }
    }

    /// Detail for the audit log (never sent to the client).
    pub fn detail(&self) -> String {
        match self {
            Self::Unknown => "no such one-time challenge on this profile".into(),
            Self::Used { id } => format!("one-time challenge #{id} was already used"),
            Self::Expired { id } => format!("one-time challenge #{id} has expired"),
            Self::BindingMismatch { id, why } => format!("one-time challenge #{id}: {why}"),
        }
    }
}

/// The answer to [`ChallengeStore::consume`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Consumption {
    /// This request consumed the challenge: issue.
    Consumed {
        /// Row id.
        id: i64,
    },
    /// The challenge was consumed by this very transaction before: the
    /// request is a resend (the client lost the CertRep, RFC 8894 §3.2.1.1).
    /// It goes on to an issuer that answers resends from a durable record
    /// (the local CA: the certificate it already issued, a refusal for
    /// another key under that transactionID); with any other issuer the
    /// caller refuses it as used.
    Resent {
        /// Row id.
        id: i64,
    },
    /// Refused: issue nothing.
    Refused(Refusal),
}

impl Consumption {
    /// The answer for a challenge that is already used: a resend when the
    /// transaction that used it (`used_by`) presents it again, unexpired and
    /// still matching its binding; else [`Refusal::Used`].
    pub(crate) fn of_used(
        id: i64,
        used_by: Option<&str>,
        expires_at: i64,
        binding: &ChallengeBinding,
        presented: &Presentation,
        now: UnixTime,
    ) -> Self {
        let resend = used_by == Some(presented.transaction_id.as_str())
            && expires_at > now.secs()
            && binding.mismatch(&presented.common_names, &presented.subject_alt_names).is_none();
        if resend { Self::Resent { id } } else { Self::Refused(Refusal::Used { id }) }
    }
}

/// A challenge that reached its expiry unused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpiredChallenge {
    /// Row id.
    pub id: i64,
    /// Its profile.
    pub profile: String,
    /// The API key that minted it.
    pub created_by: String,
}

/// Told once about every challenge that expired unused (audit and metrics).
pub type ExpiryObserver = Box<dyn Fn(&ExpiredChallenge) + Send + 'static>;

/// Durable one-time challenges (see the [module documentation](self) for
/// the contract every implementation keeps).
pub trait ChallengeStore: Send + Sync + std::fmt::Debug {
    /// Mints a challenge ([`new_secret`]) and stores its digest.
    fn mint(&self, request: MintRequest, now: UnixTime) -> StoreFuture<Minted>;

    /// Consumes `presented` atomically if it is known on its profile, unused,
    /// unexpired at `now` and its binding matches.
    fn consume(&self, presented: Presentation, now: UnixTime) -> StoreFuture<Consumption>;

    /// Unused, unexpired challenges (of `profile`, or all), oldest first.
    fn outstanding(&self, profile: Option<String>, now: UnixTime) -> StoreFuture<Vec<OutstandingChallenge>>;
}

/// A new challenge: 128 random bits as 32 upper-case hex digits. Hex, not
/// base64: clients put the challenge in a PrintableString, and operators
/// copy it by hand (NDES's challenges are hex too).
///
/// # Errors
/// When the system random generator fails.
pub fn new_secret() -> Result<String, StoreError> {
    let mut bytes = [0u8; SECRET_BYTES];
    scep_engine::crypto::default_provider()
        .fill_random(&mut bytes)
        .map_err(|_| StoreError("the system random generator failed".into()))?;
    Ok(bytes.iter().map(|b| format!("{b:02X}")).collect())
}

/// The stored form of a challenge: SHA-256 of its upper-cased text (a
/// challenge typed in lower case still matches).
pub fn secret_digest(challenge: &str) -> Vec<u8> {
    scep_engine::crypto::DigestAlg::Sha256.digest(challenge.trim().to_ascii_uppercase().as_bytes())
}

enum Command {
    Mint(MintRequest, UnixTime, oneshot::Sender<Result<Minted, StoreError>>),
    Consume(Box<Presentation>, UnixTime, oneshot::Sender<Result<Consumption, StoreError>>),
    Outstanding(Option<String>, UnixTime, oneshot::Sender<Result<Vec<OutstandingChallenge>, StoreError>>),
}

/// The built-in [`ChallengeStore`]: SQLite in the data directory, one
/// thread owning the connection (cheap to clone; the thread stops when the
/// last handle is dropped).
#[derive(Clone, Debug)]
pub struct SqliteChallenges {
    tx: mpsc::Sender<Command>,
    path: Arc<PathBuf>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS one_time_challenges (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    secret_sha256 BLOB NOT NULL UNIQUE,
    profile TEXT NOT NULL,
    bound_common_name TEXT,
    bound_sans TEXT NOT NULL DEFAULT '[]',
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    used_at INTEGER,
    used_by_transaction TEXT,
    expired_reported_at INTEGER
);
CREATE INDEX IF NOT EXISTS one_time_challenges_expiry ON one_time_challenges (expires_at);
";

impl SqliteChallenges {
    /// The file in `data_dir`.
    pub fn file(data_dir: &Path) -> PathBuf {
        data_dir.join("challenges.sqlite")
    }

    /// Opens (creating if needed) the database at `path`, reports challenges
    /// that expired while the service was down, and starts the thread.
    ///
    /// # Errors
    /// Naming the file, when it cannot be opened or initialised.
    pub fn open(path: &Path, on_expired: ExpiryObserver) -> Result<Self, ConfigError> {
        let fail = |e: &dyn std::fmt::Display| {
            ConfigError(format!("one-time challenge store {}: {e} (data_dir)", path.display()))
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| fail(&e))?;
        }
        scep_store::sqlite::ensure_private_file(path).map_err(|e| fail(&e))?;
        let conn = Connection::open(path).map_err(|e| fail(&e))?;
        scep_store::sqlite::keep_query_plans(&conn).map_err(|e| fail(&e))?;
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)).map_err(|e| fail(&e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(fail(&format!("WAL mode unavailable (got {mode})")));
        }
        conn.pragma_update(None, "synchronous", "FULL").map_err(|e| fail(&e))?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(|e| fail(&e))?;
        conn.execute_batch(SCHEMA).map_err(|e| fail(&e))?;
        let mut conn = conn;
        sweep(&mut conn, UnixTime::now(), &on_expired).map_err(|e| fail(&e))?;
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("scepd-challenges".into())
            .spawn(move || serve(conn, &rx, &on_expired))
            .map_err(|e| fail(&format!("cannot start the store thread: {e}")))?;
        Ok(Self { tx, path: Arc::new(path.to_path_buf()) })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn ask<T: Send + 'static>(
        &self,
        command: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Command,
    ) -> StoreFuture<T> {
        let (tx, rx) = oneshot::channel();
        let sent = self.tx.send(command(tx)).is_ok();
        Box::pin(async move {
            if !sent {
                return Err(StoreError("the one-time challenge store has stopped".into()));
            }
            rx.await.unwrap_or_else(|| Err(StoreError("the one-time challenge store has stopped".into())))
        })
    }
}

impl ChallengeStore for SqliteChallenges {
    fn mint(&self, request: MintRequest, now: UnixTime) -> StoreFuture<Minted> {
        self.ask(|tx| Command::Mint(request, now, tx))
    }

    fn consume(&self, presented: Presentation, now: UnixTime) -> StoreFuture<Consumption> {
        self.ask(|tx| Command::Consume(Box::new(presented), now, tx))
    }

    fn outstanding(&self, profile: Option<String>, now: UnixTime) -> StoreFuture<Vec<OutstandingChallenge>> {
        self.ask(|tx| Command::Outstanding(profile, now, tx))
    }
}

fn serve(mut conn: Connection, rx: &mpsc::Receiver<Command>, on_expired: &ExpiryObserver) {
    let db = |e: rusqlite::Error| StoreError(format!("one-time challenge store: {e}"));
    loop {
        let command = match rx.recv_timeout(SWEEP_EVERY) {
            Ok(c) => c,
            Err(RecvTimeoutError::Timeout) => {
                if let Err(e) = sweep(&mut conn, UnixTime::now(), on_expired) {
                    tracing::error!(error = %e, "one-time challenge store: sweep failed");
                }
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => return,
        };
        match command {
            Command::Mint(request, now, reply) => reply.send(mint(&conn, &request, now)),
            Command::Consume(presented, now, reply) => {
                reply.send(consume(&mut conn, &presented, now, on_expired).map_err(db));
            }
            Command::Outstanding(profile, now, reply) => {
                let swept = sweep(&mut conn, now, on_expired);
                reply.send(swept.and_then(|()| outstanding(&conn, profile.as_deref(), now)).map_err(db));
            }
        }
    }
}

fn mint(conn: &Connection, request: &MintRequest, now: UnixTime) -> Result<Minted, StoreError> {
    let secret = new_secret()?;
    let expires_at = UnixTime(now.secs().saturating_add(request.ttl_secs));
    let sans = serde_json::to_string(&request.binding.subject_alt_names)
        .map_err(|e| StoreError(format!("one-time challenge binding: {e}")))?;
    conn.execute(
        "INSERT INTO one_time_challenges
             (secret_sha256, profile, bound_common_name, bound_sans, created_at, expires_at, created_by)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            secret_digest(&secret),
            request.profile,
            request.binding.common_name,
            sans,
            now.secs(),
            expires_at.secs(),
            request.created_by
        ],
    )
    .map_err(|e| StoreError(format!("one-time challenge store: {e}")))?;
    Ok(Minted { id: conn.last_insert_rowid(), challenge: secret, expires_at })
}

fn binding_from(common_name: Option<String>, sans: &str) -> ChallengeBinding {
    // Written by `mint` from a Vec<String>; an unreadable value binds to
    // something no CSR displays, so it fails closed.
    let subject_alt_names =
        serde_json::from_str(sans).unwrap_or_else(|_| vec![format!("<unreadable binding {sans:?}>")]);
    ChallengeBinding { common_name, subject_alt_names }
}

/// One transaction: look the challenge up, decide, and mark it used only if
/// it is still unused (the `UPDATE ... WHERE used_at IS NULL` is the guard a
/// shared database relies on too).
fn consume(
    conn: &mut Connection,
    p: &Presentation,
    now: UnixTime,
    on_expired: &ExpiryObserver,
) -> Result<Consumption, rusqlite::Error> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let row = tx
        .query_row(
            "SELECT id, profile, bound_common_name, bound_sans, expires_at, used_at, expired_reported_at, created_by,
                    used_by_transaction
               FROM one_time_challenges WHERE secret_sha256 = ?1",
            params![secret_digest(p.challenge.expose())],
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, Option<i64>>(5)?,
                    r.get::<_, Option<i64>>(6)?,
                    r.get::<_, String>(7)?,
                    r.get::<_, Option<String>>(8)?,
                ))
            },
        )
        .optional()?;
    let Some((id, profile, cn, sans, expires_at, used_at, expired_reported, created_by, used_by)) = row else {
        return Ok(Consumption::Refused(Refusal::Unknown));
    };
    if profile != p.profile {
        return Ok(Consumption::Refused(Refusal::Unknown));
    }
    if used_at.is_some() {
        return Ok(Consumption::of_used(id, used_by.as_deref(), expires_at, &binding_from(cn, &sans), p, now));
    }
    if expires_at <= now.secs() {
        if expired_reported.is_none() {
            tx.execute(
                "UPDATE one_time_challenges SET expired_reported_at = ?2 WHERE id = ?1",
                params![id, now.secs()],
            )?;
            tx.commit()?;
            on_expired(&ExpiredChallenge { id, profile, created_by });
        }
        return Ok(Consumption::Refused(Refusal::Expired { id }));
    }
    if let Some(why) = binding_from(cn, &sans).mismatch(&p.common_names, &p.subject_alt_names) {
        return Ok(Consumption::Refused(Refusal::BindingMismatch { id, why }));
    }
    let changed = tx.execute(
        "UPDATE one_time_challenges SET used_at = ?2, used_by_transaction = ?3
          WHERE id = ?1 AND used_at IS NULL AND expires_at > ?2",
        params![id, now.secs(), p.transaction_id],
    )?;
    tx.commit()?;
    Ok(if changed == 1 { Consumption::Consumed { id } } else { Consumption::Refused(Refusal::Used { id }) })
}

fn outstanding(
    conn: &Connection,
    profile: Option<&str>,
    now: UnixTime,
) -> Result<Vec<OutstandingChallenge>, rusqlite::Error> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, profile, bound_common_name, bound_sans, created_at, expires_at, created_by
           FROM one_time_challenges
          WHERE used_at IS NULL AND expires_at > ?1 AND (?2 IS NULL OR profile = ?2)
          ORDER BY id",
    )?;
    let rows = stmt.query_map(params![now.secs(), profile], |r| {
        Ok(OutstandingChallenge {
            id: r.get(0)?,
            profile: r.get(1)?,
            binding: binding_from(r.get(2)?, &r.get::<_, String>(3)?),
            created_at: UnixTime(r.get(4)?),
            expires_at: UnixTime(r.get(5)?),
            created_by: r.get(6)?,
        })
    })?;
    rows.collect()
}

/// Reports challenges that expired unused (once each) and deletes those past
/// [`KEEP_AFTER_EXPIRY_SECS`].
fn sweep(conn: &mut Connection, now: UnixTime, on_expired: &ExpiryObserver) -> Result<(), rusqlite::Error> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let expired = {
        let mut stmt = tx.prepare_cached(
            "UPDATE one_time_challenges SET expired_reported_at = ?1
              WHERE used_at IS NULL AND expired_reported_at IS NULL AND expires_at <= ?1
              RETURNING id, profile, created_by",
        )?;
        let rows = stmt.query_map(params![now.secs()], |r| {
            Ok(ExpiredChallenge { id: r.get(0)?, profile: r.get(1)?, created_by: r.get(2)? })
        })?;
        rows.collect::<Result<Vec<_>, _>>()?
    };
    tx.execute(
        "DELETE FROM one_time_challenges WHERE expires_at <= ?1",
        params![now.secs().saturating_sub(KEEP_AFTER_EXPIRY_SECS)],
    )?;
    tx.commit()?;
    for e in &expired {
        on_expired(e);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use futures_lite::future::block_on;
    use scep_engine::issue::ChallengeSecret;

    use super::*;
    use crate::testutil::TestDir;

    const T0: UnixTime = UnixTime(1_800_000_000);

    fn open(dir: &TestDir) -> (SqliteChallenges, Arc<Mutex<Vec<ExpiredChallenge>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let store = SqliteChallenges::open(
            &SqliteChallenges::file(dir.path()),
            Box::new(move |e| s.lock().unwrap().push(e.clone())),
        )
        .unwrap();
        (store, seen)
    }

    fn mint(store: &SqliteChallenges, profile: &str, binding: ChallengeBinding, ttl: i64, now: UnixTime) -> Minted {
        block_on(
            store.mint(MintRequest { profile: profile.into(), binding, ttl_secs: ttl, created_by: "ops".into() }, now),
        )
        .unwrap()
    }

    /// A presentation by a transaction of its own (each call another transactionID).
    fn present(profile: &str, challenge: &str, cn: &str, sans: &[&str]) -> Presentation {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Presentation {
            profile: profile.into(),
            challenge: ChallengeSecret::new(challenge),
            common_names: vec![cn.into()],
            subject_alt_names: sans.iter().map(|s| (*s).to_string()).collect(),
            transaction_id: format!("tx-{n}"),
        }
    }

    #[test]
    fn the_transaction_that_used_a_challenge_may_resend_within_its_expiry_and_binding() {
        let dir = TestDir::new();
        let (store, _) = open(&dir);
        let binding = ChallengeBinding { common_name: Some("d".into()), ..ChallengeBinding::default() };
        let m = mint(&store, "corp", binding, 60, T0);
        let first = present("corp", &m.challenge, "d", &[]);
        let again = |p: &Presentation, now: UnixTime| block_on(store.consume(p.clone(), now)).unwrap();
        assert_eq!(again(&first, T0), Consumption::Consumed { id: m.id });
        // The client lost the CertRep and sends the same request again.
        assert_eq!(again(&first, T0.plus(5)), Consumption::Resent { id: m.id });
        assert_eq!(again(&first, T0.plus(6)), Consumption::Resent { id: m.id }, "as often as it needs");
        // Another transaction, the same transaction past the expiry or outside the binding: used.
        let other = present("corp", &m.challenge, "d", &[]);
        assert_eq!(again(&other, T0.plus(5)), Consumption::Refused(Refusal::Used { id: m.id }));
        assert_eq!(again(&first, T0.plus(60)), Consumption::Refused(Refusal::Used { id: m.id }));
        let renamed = Presentation { common_names: vec!["e".into()], ..first.clone() };
        assert_eq!(again(&renamed, T0.plus(5)), Consumption::Refused(Refusal::Used { id: m.id }));
    }

    #[test]
    fn secrets_are_128_bit_hex_and_only_their_digest_is_stored() {
        let a = new_secret().unwrap();
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b)), "{a}");
        assert_ne!(a, new_secret().unwrap());
        let dir = TestDir::new();
        let (store, _) = open(&dir);
        let m = mint(&store, "corp", ChallengeBinding::default(), 60, T0);
        assert!(!format!("{m:?}").contains(&m.challenge), "Debug must not show the secret");
        drop(store);
        std::thread::sleep(Duration::from_millis(50));
        let conn = Connection::open(SqliteChallenges::file(dir.path())).unwrap();
        let stored: Vec<u8> =
            conn.query_row("SELECT secret_sha256 FROM one_time_challenges", [], |r| r.get(0)).unwrap();
        assert_eq!(stored, secret_digest(&m.challenge));
        let bytes = std::fs::read(SqliteChallenges::file(dir.path())).unwrap_or_default();
        let wal = std::fs::read(dir.path().join("challenges.sqlite-wal")).unwrap_or_default();
        for file in [bytes, wal] {
            assert!(!file.windows(32).any(|w| w == m.challenge.as_bytes()), "the secret is on disk");
        }
    }

    #[test]
    fn use_then_reuse_is_refused_and_other_profiles_and_unknown_secrets_are_unknown() {
        let dir = TestDir::new();
        let (store, _) = open(&dir);
        let m = mint(&store, "corp", ChallengeBinding::default(), 60, T0);
        let listed = block_on(store.outstanding(None, T0)).unwrap();
        assert_eq!(
            listed.iter().map(|c| (c.id, c.profile.as_str(), c.created_by.as_str())).collect::<Vec<_>>(),
            [(m.id, "corp", "ops")]
        );
        let consume = |profile: &str, secret: &str| block_on(store.consume(present(profile, secret, "d", &[]), T0));
        assert_eq!(consume("other", &m.challenge).unwrap(), Consumption::Refused(Refusal::Unknown));
        assert_eq!(consume("corp", "0123").unwrap(), Consumption::Refused(Refusal::Unknown));
        // Typed in lower case by an operator: the same challenge.
        assert_eq!(consume("corp", &m.challenge.to_ascii_lowercase()).unwrap(), Consumption::Consumed { id: m.id });
        assert_eq!(consume("corp", &m.challenge).unwrap(), Consumption::Refused(Refusal::Used { id: m.id }));
        assert!(block_on(store.outstanding(None, T0)).unwrap().is_empty(), "a used challenge is not outstanding");
    }

    #[test]
    fn expiry_is_refused_reported_once_and_purged_later() {
        let dir = TestDir::new();
        let (store, seen) = open(&dir);
        let late = mint(&store, "corp", ChallengeBinding::default(), 10, T0);
        let swept = mint(&store, "corp", ChallengeBinding::default(), 10, T0);
        let at_expiry = UnixTime(T0.secs() + 10);
        let r = block_on(store.consume(present("corp", &late.challenge, "d", &[]), at_expiry)).unwrap();
        assert_eq!(r, Consumption::Refused(Refusal::Expired { id: late.id }));
        assert_eq!(seen.lock().unwrap().iter().map(|e| e.id).collect::<Vec<_>>(), [late.id]);
        // Listing sweeps: the other one is reported, neither twice.
        assert!(block_on(store.outstanding(Some("corp".into()), at_expiry)).unwrap().is_empty());
        let _ = block_on(store.consume(present("corp", &late.challenge, "d", &[]), at_expiry)).unwrap();
        assert_eq!(seen.lock().unwrap().iter().map(|e| e.id).collect::<Vec<_>>(), [late.id, swept.id]);
        // Kept for a week after expiry (precise refusals), then deleted.
        let purge_time = UnixTime(at_expiry.secs() + KEEP_AFTER_EXPIRY_SECS);
        assert!(block_on(store.outstanding(None, purge_time)).unwrap().is_empty());
        let r = block_on(store.consume(present("corp", &late.challenge, "d", &[]), purge_time)).unwrap();
        assert_eq!(r, Consumption::Refused(Refusal::Unknown));
    }

    #[test]
    fn a_binding_must_match_exactly_and_a_mismatch_does_not_consume() {
        let dir = TestDir::new();
        let (store, _) = open(&dir);
        let binding = ChallengeBinding {
            common_name: Some("device-1".into()),
            subject_alt_names: vec![
                ChallengeBinding::normalize_san("dns:Device-1.Corp.Example").unwrap(),
                ChallengeBinding::normalize_san("IP:192.0.2.1").unwrap(),
            ],
        };
        let m = mint(&store, "corp", binding.clone(), 60, T0);
        assert_eq!(block_on(store.outstanding(None, T0)).unwrap()[0].binding, binding);
        let try_with =
            |cn: &str, sans: &[&str]| block_on(store.consume(present("corp", &m.challenge, cn, sans), T0)).unwrap();
        for (cn, sans) in [
            ("device-2", &["DNS:device-1.corp.example", "IP:192.0.2.1"][..]),
            ("device-1", &["DNS:device-1.corp.example"][..]),
            ("device-1", &["DNS:device-1.corp.example", "IP:192.0.2.1", "DNS:extra.example"][..]),
            ("device-1", &[][..]),
        ] {
            assert!(
                matches!(try_with(cn, sans), Consumption::Refused(Refusal::BindingMismatch { id, .. }) if id == m.id),
                "{cn} {sans:?}"
            );
        }
        assert_eq!(
            try_with("device-1", &["IP:192.0.2.1", "DNS:DEVICE-1.corp.example"]),
            Consumption::Consumed { id: m.id }
        );
        for bad in ["device-1", "dns:", "x400:abc", "IP:300.1.1.1"] {
            assert!(ChallengeBinding::normalize_san(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn concurrent_consumers_of_one_challenge_exactly_one_wins() {
        let dir = TestDir::new();
        let (store, _) = open(&dir);
        let m = mint(&store, "corp", ChallengeBinding::default(), 60, T0);
        let barrier = Arc::new(std::sync::Barrier::new(8));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (store, barrier, secret) = (store.clone(), barrier.clone(), m.challenge.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    block_on(store.consume(present("corp", &secret, "d", &[]), T0)).unwrap()
                })
            })
            .collect();
        let results: Vec<Consumption> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        let wins = results.iter().filter(|r| matches!(r, Consumption::Consumed { .. })).count();
        assert_eq!(wins, 1, "{results:?}");
        assert!(
            results
                .iter()
                .all(|r| matches!(r, Consumption::Consumed { .. } | Consumption::Refused(Refusal::Used { .. })))
        );
    }

    #[test]
    fn a_reopened_store_keeps_outstanding_and_used_challenges_and_reports_what_expired_meanwhile() {
        let dir = TestDir::new();
        let (store, _) = open(&dir);
        let now = UnixTime::now();
        let used = mint(&store, "corp", ChallengeBinding::default(), 3600, now);
        let kept = mint(&store, "corp", ChallengeBinding::default(), 3600, now);
        let lapsing = mint(&store, "corp", ChallengeBinding::default(), 1, UnixTime(now.secs() - 5));
        assert_eq!(
            block_on(store.consume(present("corp", &used.challenge, "d", &[]), now)).unwrap(),
            Consumption::Consumed { id: used.id }
        );
        drop(store);
        let (store, seen) = open(&dir);
        assert_eq!(seen.lock().unwrap().iter().map(|e| e.id).collect::<Vec<_>>(), [lapsing.id]);
        assert_eq!(
            block_on(store.consume(present("corp", &used.challenge, "d", &[]), now)).unwrap(),
            Consumption::Refused(Refusal::Used { id: used.id })
        );
        assert_eq!(
            block_on(store.consume(present("corp", &kept.challenge, "d", &[]), now)).unwrap(),
            Consumption::Consumed { id: kept.id }
        );
    }
}
