//! The certificate index on the shared PostgreSQL store (issue 18): every
//! node records into and reads from the same tables (migration 4 of
//! `scep_store::migrations`: `ca_certificates`, `ca_counters`), on the
//! node's one pool.
//!
//! Atomicity across nodes:
//! - **serials**: the primary key is `(ca_id, serial)`; an insert that meets
//!   a taken serial (`ON CONFLICT DO NOTHING`) is
//!   [`StoreError::DuplicateSerial`] and the CA draws another, as on SQLite;
//! - **transactionID resends**: an enrolment's transaction first takes a
//!   transaction-scoped advisory lock on `(ca_id, profile, transactionID)`,
//!   so two nodes racing on one transactionID are serialised: the second
//!   sees the first's committed row and answers [`Recorded::Existing`];
//! - **renewals**: the renewed certificate's row is locked (`FOR UPDATE`)
//!   before its successor is looked up, so two renewals of one certificate
//!   cannot both insert (the partial unique index on `renewal_of` backs it);
//! - **revocations**: the revoking transaction bumps the CA's revocation
//!   counter (`ca_counters.revocations`) and sends `NOTIFY
//!   scepd_revocations`; every node's `watch_revocations` thread raises its
//!   in-process counter from it (see `LocalCa::revocation_version`);
//! - **cRLNumber**: one `INSERT ... ON CONFLICT DO UPDATE ... RETURNING`, so
//!   numbers allocated by any node increase strictly.
//!
//! A connection failure is [`StoreError::Unavailable`]: nothing was
//! recorded, the enrolment is answered 503, and the next request reconnects.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use postgres::fallible_iterator::FallibleIterator as _;
use postgres::{Client, GenericClient, Row};
use scep_engine::time::UnixTime;
use scep_store::postgres::{Pool, Pooled};

use crate::crl::{RevocationReason, RevokedEntry};
use crate::local::store::{
    CertStatus, CertificateFilter, InventorySummary, MAX_LIST_LIMIT, NewCertificate, Recorded, StatusFilter,
    StoreError, StoredCertificate, hex_decode, reason_from_db,
};

/// The channel revocations are announced on (payload: the CA id).
pub const REVOCATION_CHANNEL: &str = "scepd_revocations";

/// How often the watcher re-reads the revocation counters without a
/// notification (a lost notification, a reconnect): the staleness bound of
/// a revocation made on another node, plus one round trip.
pub const REVOCATION_POLL: Duration = Duration::from_secs(1);

/// The first key of the two-key advisory locks enrolments take
/// (`"scep"` in ASCII); the second is the hash of the transaction.
const TRANSACTION_LOCK_CLASS: i32 = 0x7363_6570;

/// A new enrolment's record in one statement (migration 4's function).
const RECORD_NEW: &str = "SELECT scepd_record_certificate($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)";

const COLUMNS: &str = "serial, profile, transaction_id, der, not_after, issued_at, renewal_of, status, revoked_at, \
     reason, id, subject, sans, not_before, intune_device";

/// The PostgreSQL certificate index (cheap to clone: the node's pool).
#[derive(Clone)]
pub struct PostgresIndex {
    pool: Arc<Pool>,
}

impl std::fmt::Debug for PostgresIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresIndex").field("pool", &self.pool).finish()
    }
}

/// A PostgreSQL failure: [`StoreError::Unavailable`] for the connection
/// and the server's state (classes 08, 53, 57, and serialization failures),
/// [`StoreError::Database`] for anything the statement itself caused.
fn pg(e: &postgres::Error) -> StoreError {
    match e.as_db_error() {
        Some(d) => {
            let code = d.code().code();
            let what = format!("{code}: {}", d.message());
            if ["08", "53", "57", "40"].iter().any(|class| code.starts_with(class)) {
                StoreError::Unavailable(what)
            } else {
                StoreError::Database(what)
            }
        }
        None => StoreError::Unavailable(e.to_string()),
    }
}

fn pooled(e: scep_store::StoreError) -> StoreError {
    match e {
        scep_store::StoreError::Unavailable(why) => StoreError::Unavailable(why),
        other => StoreError::Database(other.to_string()),
    }
}

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

fn stored(r: &Row) -> Result<StoredCertificate, StoreError> {
    let get = |e: postgres::Error| StoreError::Database(format!("reading a certificate row: {e}"));
    let status: String = r.try_get(7).map_err(get)?;
    let status = if status == "revoked" {
        CertStatus::Revoked {
            at: UnixTime(r.try_get::<_, Option<i64>>(8).map_err(get)?.unwrap_or(0)),
            reason: reason_from_db(r.try_get::<_, Option<i32>>(9).map_err(get)?.map(i64::from)),
        }
    } else {
        CertStatus::Valid
    };
    Ok(StoredCertificate {
        serial_hex: r.try_get(0).map_err(get)?,
        profile: r.try_get(1).map_err(get)?,
        transaction_id: r.try_get(2).map_err(get)?,
        der: r.try_get(3).map_err(get)?,
        not_after: UnixTime(r.try_get(4).map_err(get)?),
        issued_at: UnixTime(r.try_get(5).map_err(get)?),
        renewal_of: r.try_get(6).map_err(get)?,
        status,
        id: r.try_get(10).map_err(get)?,
        subject: r.try_get(11).map_err(get)?,
        sans: r.try_get(12).map_err(get)?,
        not_before: UnixTime(r.try_get(13).map_err(get)?),
        intune_device: r.try_get(14).map_err(get)?,
    })
}

fn all(rows: &[Row]) -> Result<Vec<StoredCertificate>, StoreError> {
    rows.iter().map(stored).collect()
}

fn latest_of_transaction(
    c: &mut impl GenericClient,
    ca_id: &str,
    profile: &str,
    transaction_id: &str,
) -> Result<Option<StoredCertificate>, StoreError> {
    c.query_opt(
        &format!(
            "SELECT {COLUMNS} FROM ca_certificates WHERE ca_id = $1 AND profile = $2 AND transaction_id = $3 \
             ORDER BY issued_at DESC, id DESC LIMIT 1"
        ),
        &[&ca_id, &profile, &transaction_id],
    )
    .map_err(|e| pg(&e))?
    .as_ref()
    .map(stored)
    .transpose()
}

/// The renewal rules inside the enrolment's transaction (as SQLite's
/// `check_renewal`), with the renewed row locked.
fn check_renewal(
    tx: &mut postgres::Transaction<'_>,
    c: &NewCertificate,
) -> Result<Result<Option<StoredCertificate>, StoreError>, StoreError> {
    let Some(old_serial) = c.renewal_of.as_deref() else { return Ok(Ok(None)) };
    let old = tx
        .query_opt(
            &format!("SELECT {COLUMNS} FROM ca_certificates WHERE ca_id = $1 AND serial = $2 FOR UPDATE"),
            &[&c.ca_id, &old_serial],
        )
        .map_err(|e| pg(&e))?;
    let Some(old) = old.as_ref().map(stored).transpose()? else { return Ok(Err(StoreError::NotFound)) };
    if old.profile != c.profile {
        return Ok(Err(StoreError::OtherProfile { issued_on: old.profile }));
    }
    if matches!(old.status, CertStatus::Revoked { .. }) {
        return Ok(Err(StoreError::AlreadyRevoked));
    }
    let successor = tx
        .query_opt(
            &format!("SELECT {COLUMNS} FROM ca_certificates WHERE ca_id = $1 AND renewal_of = $2 ORDER BY id LIMIT 1"),
            &[&c.ca_id, &old_serial],
        )
        .map_err(|e| pg(&e))?;
    Ok(match successor.as_ref().map(stored).transpose()? {
        None => Ok(None),
        Some(s) if s.transaction_id == c.transaction_id && s.profile == c.profile => Ok(Some(s)),
        Some(s) => Err(StoreError::Superseded { by: s.serial_hex }),
    })
}

impl PostgresIndex {
    /// The index on `pool`: applies pending migrations and checks the connection.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] or a database error.
    pub fn open(pool: Arc<Pool>) -> Result<Self, StoreError> {
        pool.migrate().map_err(pooled)?;
        Ok(Self { pool })
    }

    /// The database, for logs (no password).
    pub fn describe(&self) -> String {
        format!("PostgreSQL {}", self.pool.describe())
    }

    fn client(&self) -> Result<Pooled<'_>, StoreError> {
        self.pool.get().map_err(pooled)
    }

    /// See [`super::CertificateIndex::record_enrollment`]; blocks.
    ///
    /// # Errors
    /// As [`super::CertificateIndex::record_enrollment`].
    pub fn record_enrollment(&self, c: &NewCertificate) -> Result<Recorded, StoreError> {
        let node = self.pool.node_name();
        let mut client = self.client()?;
        let key = format!("{}\n{}\n{}", c.ca_id, c.profile, c.transaction_id);
        if c.renewal_of.is_none() {
            // The hot path, a new enrolment: one round trip on a statement
            // prepared once per connection (migration 4's function takes the
            // same lock and makes the same check as the transaction below).
            let record = client.prepare_cached(RECORD_NEW).map_err(|e| pg(&e))?;
            let outcome: i32 = client
                .query_one(
                    &record,
                    &[
                        &TRANSACTION_LOCK_CLASS,
                        &key,
                        &c.ca_id,
                        &c.serial_hex,
                        &c.profile,
                        &c.transaction_id,
                        &c.subject,
                        &c.sans,
                        &c.not_before.0,
                        &c.not_after.0,
                        &c.der,
                        &c.issued_at.0,
                        &c.intune_device,
                        &node,
                    ],
                )
                .map_err(|e| pg(&e))?
                .get(0);
            return match outcome {
                0 => Ok(Recorded::Inserted),
                2 => Err(StoreError::DuplicateSerial),
                _ => match latest_of_transaction(&mut *client, &c.ca_id, &c.profile, &c.transaction_id)? {
                    Some(prev) => Ok(Recorded::Existing(Box::new(prev))),
                    None => Err(StoreError::Database(format!(
                        "transaction {} had a certificate that is gone",
                        c.transaction_id
                    ))),
                },
            };
        }
        let mut tx = client.transaction().map_err(|e| pg(&e))?;
        // Serialises every node's enrolments of this transactionID (the
        // lock is released at commit or rollback).
        tx.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", &[&TRANSACTION_LOCK_CLASS, &key])
            .map_err(|e| pg(&e))?;
        match check_renewal(&mut tx, c)? {
            Ok(None) => {}
            // Dropping the transaction rolls it back (nothing was written).
            Ok(Some(resent)) => return Ok(Recorded::Existing(Box::new(resent))),
            Err(refused) => return Err(refused),
        }
        if let Some(prev) = latest_of_transaction(&mut tx, &c.ca_id, &c.profile, &c.transaction_id)?
            && c.renewal_of.as_deref() != Some(prev.serial_hex.as_str())
        {
            return Ok(Recorded::Existing(Box::new(prev)));
        }
        let inserted = tx
            .query_opt(
                "INSERT INTO ca_certificates (ca_id, serial, profile, transaction_id, subject, sans, not_before, \
                     not_after, der, issued_at, renewal_of, status, intune_device, issued_by) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 'valid', $12, $13) \
                 ON CONFLICT (ca_id, serial) DO NOTHING RETURNING id",
                &[
                    &c.ca_id,
                    &c.serial_hex,
                    &c.profile,
                    &c.transaction_id,
                    &c.subject,
                    &c.sans,
                    &c.not_before.0,
                    &c.not_after.0,
                    &c.der,
                    &c.issued_at.0,
                    &c.renewal_of,
                    &c.intune_device,
                    &node,
                ],
            )
            .map_err(|e| pg(&e))?;
        if inserted.is_none() {
            return Err(StoreError::DuplicateSerial);
        }
        tx.commit().map_err(|e| pg(&e))?;
        Ok(Recorded::Inserted)
    }

    /// Revokes; returns the CA's revocation counter after it.
    ///
    /// # Errors
    /// [`StoreError::NotFound`], [`StoreError::AlreadyRevoked`] or a database error.
    pub fn revoke(
        &self,
        ca_id: &str,
        serial_hex: &str,
        at: UnixTime,
        reason: RevocationReason,
    ) -> Result<u64, StoreError> {
        let mut client = self.client()?;
        let mut tx = client.transaction().map_err(|e| pg(&e))?;
        let changed = tx
            .execute(
                "UPDATE ca_certificates SET status = 'revoked', revoked_at = $1, reason = $2 \
                 WHERE ca_id = $3 AND serial = $4 AND status = 'valid'",
                &[&at.0, &i32::from(reason.code()), &ca_id, &serial_hex],
            )
            .map_err(|e| pg(&e))?;
        if changed != 1 {
            let exists = tx
                .query_opt("SELECT 1 FROM ca_certificates WHERE ca_id = $1 AND serial = $2", &[&ca_id, &serial_hex])
                .map_err(|e| pg(&e))?
                .is_some();
            return Err(if exists { StoreError::AlreadyRevoked } else { StoreError::NotFound });
        }
        let version: i64 = tx
            .query_one(
                "INSERT INTO ca_counters (ca_id, revocations) VALUES ($1, 1) \
                 ON CONFLICT (ca_id) DO UPDATE SET revocations = ca_counters.revocations + 1 RETURNING revocations",
                &[&ca_id],
            )
            .map_err(|e| pg(&e))?
            .get(0);
        // Delivered to every listener at commit.
        tx.execute("SELECT pg_notify($1, $2)", &[&REVOCATION_CHANNEL, &ca_id]).map_err(|e| pg(&e))?;
        tx.commit().map_err(|e| pg(&e))?;
        Ok(count(version))
    }

    /// The CA's revocation counter (0 before its first revocation).
    ///
    /// # Errors
    /// A database error.
    pub fn revocation_version(&self, ca_id: &str) -> Result<u64, StoreError> {
        read_version(&mut *self.client()?, ca_id)
    }

    /// Allocates the next cRLNumber.
    ///
    /// # Errors
    /// A database error.
    pub fn next_crl_number(&self, ca_id: &str) -> Result<u64, StoreError> {
        let n: i64 = self
            .client()?
            .query_one(
                "INSERT INTO ca_counters (ca_id, crl_number) VALUES ($1, 1) \
                 ON CONFLICT (ca_id) DO UPDATE SET crl_number = ca_counters.crl_number + 1 RETURNING crl_number",
                &[&ca_id],
            )
            .map_err(|e| pg(&e))?
            .get(0);
        Ok(count(n))
    }

    /// One certificate.
    ///
    /// # Errors
    /// A database error.
    pub fn certificate(&self, ca_id: &str, serial_hex: &str) -> Result<Option<StoredCertificate>, StoreError> {
        self.client()?
            .query_opt(
                &format!("SELECT {COLUMNS} FROM ca_certificates WHERE ca_id = $1 AND serial = $2"),
                &[&ca_id, &serial_hex],
            )
            .map_err(|e| pg(&e))?
            .as_ref()
            .map(stored)
            .transpose()
    }

    /// The latest certificate of a profile's transaction.
    ///
    /// # Errors
    /// A database error.
    pub fn by_transaction(
        &self,
        ca_id: &str,
        profile: &str,
        transaction_id: &str,
    ) -> Result<Option<StoredCertificate>, StoreError> {
        latest_of_transaction(&mut *self.client()?, ca_id, profile, transaction_id)
    }

    /// Recorded **by this node** ([`Pool::node_name`]) at or after `since`,
    /// oldest first: the start-up audit reconciliation looks for this node's
    /// own certificates that a crash left unanswered. Another node's
    /// certificate may be between its record and its audit event at this very
    /// moment, so it is never this node's to explain.
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
        let rows = self
            .client()?
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM ca_certificates WHERE ca_id = $1 AND issued_at >= $2 AND issued_by = $4 \
                     ORDER BY issued_at, serial LIMIT $3"
                ),
                &[&ca_id, &since.0, &limit, &self.pool.node_name()],
            )
            .map_err(|e| pg(&e))?;
        all(&rows)
    }

    /// The revoked certificates, oldest revocation first.
    ///
    /// # Errors
    /// A database error, or a corrupt serial.
    pub fn revoked(&self, ca_id: &str) -> Result<Vec<RevokedEntry>, StoreError> {
        let rows = self
            .client()?
            .query(
                "SELECT serial, revoked_at, reason FROM ca_certificates WHERE ca_id = $1 AND status = 'revoked' \
                 ORDER BY revoked_at, serial",
                &[&ca_id],
            )
            .map_err(|e| pg(&e))?;
        rows.iter()
            .map(|r| {
                let serial_hex: String = r.get(0);
                let serial = hex_decode(&serial_hex)
                    .ok_or_else(|| StoreError::Database(format!("corrupt serial {serial_hex:?} in the database")))?;
                let at: Option<i64> = r.get(1);
                let reason: Option<i32> = r.get(2);
                Ok(RevokedEntry {
                    serial,
                    revoked_at: UnixTime(at.unwrap_or(0)),
                    reason: reason_from_db(reason.map(i64::from)),
                })
            })
            .collect()
    }

    /// The certificates that renewed `serial_hex`.
    ///
    /// # Errors
    /// A database error.
    pub fn renewals_of(&self, ca_id: &str, serial_hex: &str) -> Result<Vec<StoredCertificate>, StoreError> {
        let rows = self
            .client()?
            .query(
                &format!("SELECT {COLUMNS} FROM ca_certificates WHERE ca_id = $1 AND renewal_of = $2 ORDER BY id"),
                &[&ca_id, &serial_hex],
            )
            .map_err(|e| pg(&e))?;
        all(&rows)
    }

    /// The inventory, newest first.
    ///
    /// # Errors
    /// A database error.
    pub fn list(&self, ca_id: &str, filter: &CertificateFilter) -> Result<Vec<StoredCertificate>, StoreError> {
        let limit = i64::from(filter.limit.clamp(1, MAX_LIST_LIMIT));
        let text = filter.text.as_ref().map(|t| t.to_ascii_lowercase());
        let status = filter.status.map(|s| match s {
            StatusFilter::Valid => "valid",
            StatusFilter::Revoked => "revoked",
            StatusFilter::Expired => "expired",
        });
        let rows = self
            .client()?
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM ca_certificates WHERE ca_id = $1 \
                     AND ($2::TEXT IS NULL OR profile = $2) \
                     AND ($3::TEXT IS NULL OR strpos(lower(subject), $3) > 0 OR strpos(lower(sans), $3) > 0) \
                     AND ($4::TEXT IS NULL OR serial = $4) \
                     AND ($5::TEXT IS NULL OR intune_device = $5) \
                     AND ($6::TEXT IS NULL OR ($6 = 'revoked' AND status = 'revoked') \
                          OR ($6 = 'valid' AND status = 'valid' AND not_after >= $7) \
                          OR ($6 = 'expired' AND status = 'valid' AND not_after < $7)) \
                     AND ($8::BIGINT IS NULL OR not_after < $8) \
                     AND ($9::BIGINT IS NULL OR id < $9) \
                     ORDER BY id DESC LIMIT $10"
                ),
                &[
                    &ca_id,
                    &filter.profile,
                    &text,
                    &filter.serial_hex,
                    &filter.intune_device,
                    &status,
                    &filter.now.0,
                    &filter.expires_before.map(|t| t.0),
                    &filter.before_id,
                    &limit,
                ],
            )
            .map_err(|e| pg(&e))?;
        all(&rows)
    }

    /// Counts at `now`.
    ///
    /// # Errors
    /// A database error.
    pub fn summary(&self, ca_id: &str, now: UnixTime) -> Result<InventorySummary, StoreError> {
        let mut client = self.client()?;
        let r = client
            .query_one(
                "SELECT \
                   COUNT(*) FILTER (WHERE status = 'valid' AND not_after >= $2), \
                   COUNT(*) FILTER (WHERE status = 'revoked'), \
                   COUNT(*) FILTER (WHERE status = 'valid' AND not_after < $2), \
                   COUNT(*) FILTER (WHERE status = 'valid' AND not_after >= $2 AND not_after < $2 + 7 * 86400), \
                   COUNT(*) FILTER (WHERE status = 'valid' AND not_after >= $2 AND not_after < $2 + 30 * 86400) \
                 FROM ca_certificates WHERE ca_id = $1",
                &[&ca_id, &now.0],
            )
            .map_err(|e| pg(&e))?;
        let months = client
            .query(
                "SELECT to_char(to_timestamp(not_after) AT TIME ZONE 'UTC', 'YYYY-MM') AS month, COUNT(*) \
                 FROM ca_certificates WHERE ca_id = $1 AND status = 'valid' AND not_after >= $2 \
                 GROUP BY month ORDER BY month",
                &[&ca_id, &now.0],
            )
            .map_err(|e| pg(&e))?;
        Ok(InventorySummary {
            valid: count(r.get(0)),
            revoked: count(r.get(1)),
            expired: count(r.get(2)),
            expiring_within_7_days: count(r.get(3)),
            expiring_within_30_days: count(r.get(4)),
            valid_by_expiry_month: months.iter().map(|m| (m.get::<_, String>(0), count(m.get(1)))).collect(),
        })
    }

    /// How many certificates CA `ca_id` has recorded.
    ///
    /// # Errors
    /// A database error.
    pub fn count(&self, ca_id: &str) -> Result<u64, StoreError> {
        let n: i64 = self
            .client()?
            .query_one("SELECT COUNT(*) FROM ca_certificates WHERE ca_id = $1", &[&ca_id])
            .map_err(|e| pg(&e))?
            .get(0);
        Ok(count(n))
    }

    /// The CAs whose certificates the shared index on `pool` holds, with
    /// their counts (none before migration 4 created its table), changing
    /// nothing: what the bootstrap checks before it creates a new CA.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the database cannot be reached, or a
    /// database error.
    pub fn recorded_cas(pool: &Pool) -> Result<Vec<super::RecordedCa>, StoreError> {
        let mut client = pool.get().map_err(pooled)?;
        let exists: bool =
            client.query_one("SELECT to_regclass('ca_certificates') IS NOT NULL", &[]).map_err(|e| pg(&e))?.get(0);
        if !exists {
            return Ok(Vec::new());
        }
        let rows = client
            .query(
                "SELECT ca_id, COUNT(*), \
                   (SELECT der FROM ca_certificates AS one WHERE one.ca_id = c.ca_id LIMIT 1) \
                 FROM ca_certificates AS c GROUP BY ca_id ORDER BY ca_id",
                &[],
            )
            .map_err(|e| pg(&e))?;
        rows.iter()
            .map(|r| {
                let get = |e: postgres::Error| StoreError::Database(format!("reading the index: {e}"));
                let (ca_id, n, der): (String, i64, Vec<u8>) =
                    (r.try_get(0).map_err(get)?, r.try_get(1).map_err(get)?, r.try_get(2).map_err(get)?);
                Ok(super::RecordedCa::from_row(ca_id, count(n), &der))
            })
            .collect()
    }

    /// Starts the thread that keeps `counter` (the CA's in-process
    /// revocation version) at least the database's revocation counter of
    /// `ca_id`: it `LISTEN`s on [`REVOCATION_CHANNEL`] on a connection of its
    /// own and re-reads the counter on every notification and every
    /// [`REVOCATION_POLL`] (a lost notification or a reconnect is caught up
    /// within that). It ends within [`REVOCATION_POLL`] of `counter` being
    /// dropped.
    ///
    /// # Errors
    /// When the thread cannot be started.
    pub fn watch_revocations(&self, ca_id: &str, counter: Weak<AtomicU64>) -> Result<(), StoreError> {
        let pool = Arc::clone(&self.pool);
        let ca_id = ca_id.to_string();
        std::thread::Builder::new()
            .name("scepd-ca-revocations".into())
            .spawn(move || watch_revocations(&pool, &ca_id, &counter))
            .map(drop)
            .map_err(|e| StoreError::Database(format!("cannot start the revocation watcher: {e}")))
    }
}

fn read_version(client: &mut Client, ca_id: &str) -> Result<u64, StoreError> {
    let v: Option<i64> = client
        .query_opt("SELECT revocations FROM ca_counters WHERE ca_id = $1", &[&ca_id])
        .map_err(|e| pg(&e))?
        .map(|r| r.get(0));
    Ok(v.map_or(0, count))
}

/// The watcher's loop (see [`PostgresIndex::watch_revocations`]).
fn watch_revocations(pool: &Pool, ca_id: &str, counter: &Weak<AtomicU64>) {
    let mut failing = false;
    while counter.strong_count() > 0 {
        let mut client = match pool.connect_dedicated() {
            Ok(c) => c,
            Err(e) => {
                if !failing {
                    tracing::warn!(ca = %ca_id, error = %e, "revocation watcher: cannot connect; retrying every second");
                    failing = true;
                }
                std::thread::sleep(REVOCATION_POLL);
                continue;
            }
        };
        if let Err(e) = client.batch_execute(&format!("LISTEN {REVOCATION_CHANNEL}")) {
            tracing::warn!(ca = %ca_id, error = %pg(&e), "revocation watcher: LISTEN failed; retrying");
            std::thread::sleep(REVOCATION_POLL);
            continue;
        }
        if failing {
            tracing::info!(ca = %ca_id, "revocation watcher: connected again");
            failing = false;
        }
        // Read after LISTEN: a revocation committed in between is both
        // notified and read, never neither.
        loop {
            let Some(local) = counter.upgrade() else { return };
            match read_version(&mut client, ca_id) {
                Ok(v) => {
                    local.fetch_max(v, Ordering::AcqRel);
                }
                Err(e) => {
                    tracing::warn!(ca = %ca_id, error = %e, "revocation watcher: lost the database; reconnecting");
                    break;
                }
            }
            drop(local);
            let mut notifications = client.notifications();
            let waited = notifications.timeout_iter(REVOCATION_POLL).next();
            if let Err(e) = waited {
                tracing::warn!(ca = %ca_id, error = %pg(&e), "revocation watcher: lost the database; reconnecting");
                break;
            }
            // Take every notification already queued: one re-read covers them.
            let mut queued = notifications.iter();
            while let Ok(Some(_)) = queued.next() {}
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
