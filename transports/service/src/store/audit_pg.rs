//! The audit log on the shared PostgreSQL store (issue 18): one table,
//! `audit_events` (migration 4 of `scep_store::migrations`), for every node.
//!
//! The writer thread of [`super::audit::AuditLog`] holds one connection of
//! the store's pool and writes each batch of queued events as one `INSERT
//! ... SELECT FROM unnest(...)` (one prepared statement, one round trip, its
//! own transaction): a burst of enrolments shares one commit, as with SQLite.
//! Ids come from one sequence, so every node lists the events in the same
//! order. A lost connection is dropped (the pool discards it) and the next
//! batch takes a new one: the node recovers by itself when the database
//! returns; meanwhile every write fails, marked `store_unreachable`, and the
//! request that needed it is answered 503. After a pause the connection is
//! validated before the next batch, so one the database closed meanwhile (a
//! restart) is replaced before it can fail a batch.
//!
//! Retention deletes in bounded batches (`FOR UPDATE SKIP LOCKED`), so
//! several nodes applying it at once neither block each other nor fail.

use std::time::Instant;

use postgres::Statement;
use postgres::types::ToSql;
use scep_store::postgres::Pool;

use super::audit::{AuditError, AuditEvent, AuditQuery, AuditSink, ENROLMENT_ACTIONS, HourlyActivity, MAX_QUERY_LIMIT};

/// Most rows one retention `DELETE` removes.
const PRUNE_BATCH: i64 = 5_000;
/// Most retention batches one pass runs (a pass deletes at most 5 million rows).
const PRUNE_MAX_BATCHES: usize = 1_000;

/// Columns read back, in [`event_of`]'s order.
const COLUMNS: &str = "id, node, time, time_unix, profile, action, operation, message_type, transaction_id, outcome, \
     http_status, pki_status, fail_info, subject, subject_alt_names, serial, renewal_of, intune_subject, \
     intune_issuer, intune_nonce, client_addr, route, detail, issuer, count, first_time";

/// The batch insert: one array per column, zipped by `unnest` in order.
const INSERT: &str = "INSERT INTO audit_events (node, time, time_unix, profile, action, operation, message_type, \
     transaction_id, outcome, http_status, pki_status, fail_info, subject, subject_alt_names, serial, renewal_of, \
     intune_subject, intune_issuer, intune_nonce, client_addr, route, detail, issuer, count, first_time) \
     SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[], \
     $8::text[], $9::text[], $10::int[], $11::text[], $12::text[], $13::text[], $14::text[], $15::text[], \
     $16::text[], $17::text[], $18::text[], $19::text[], $20::text[], $21::text[], $22::text[], $23::text[], \
     $24::bigint[], $25::text[]) RETURNING id";

/// The PostgreSQL backend of the writer thread: one connection, kept while it
/// works. It is the writer's own ([`Pool::connect_dedicated`]), outside the
/// pool's count: held for the thread's life, a pooled one would leave the
/// request path a connection short (and none at all with `pool_size = 1`).
pub(crate) struct PostgresSink<'p> {
    pool: &'p Pool,
    conn: Option<(postgres::Client, Statement)>,
    /// When the connection was last used: after a pause it is validated
    /// before the next batch ([`Pool::check_dedicated`]), so a database
    /// restart in between costs no batch (and no request its 503).
    idle_since: Instant,
}

/// A driver error: unreachable unless the server answered with an error of
/// the statement; a connection error (class 08), an operator intervention
/// such as a shutdown (57) or a server out of resources (53) is unreachable too.
fn error(e: &postgres::Error) -> AuditError {
    match e.as_db_error() {
        Some(db) => {
            let code = db.code().code();
            let message = format!("PostgreSQL: {code}: {}", db.message());
            if ["08", "57", "53"].iter().any(|class| code.starts_with(class)) {
                AuditError::unreachable(message)
            } else {
                AuditError::new(message)
            }
        }
        None => AuditError::unreachable(format!("PostgreSQL: {e}")),
    }
}

impl<'p> PostgresSink<'p> {
    /// A sink opening its connection with `pool`'s settings when first used.
    pub(crate) fn new(pool: &'p Pool) -> Self {
        Self { pool, conn: None, idle_since: Instant::now() }
    }

    /// Runs `f` on the connection (taking one, and preparing the insert, when
    /// there is none); a connection that failed is dropped for the next call.
    fn with<T>(
        &mut self,
        f: impl FnOnce(&mut postgres::Client, &Statement) -> Result<T, postgres::Error>,
    ) -> Result<T, AuditError> {
        if let Some((client, insert)) = self.conn.take() {
            // Closed, or closed while idle (a restart): dropped, and a new one made below.
            let checked = self.pool.check_dedicated(client, self.idle_since);
            self.conn = checked.map_err(|e| AuditError::unreachable(e.to_string()))?.map(|c| (c, insert));
        }
        let (client, insert) = match &mut self.conn {
            Some(c) => c,
            None => {
                let mut client = self.pool.connect_dedicated().map_err(|e| AuditError::unreachable(e.to_string()))?;
                let insert = client.prepare(INSERT).map_err(|e| error(&e))?;
                self.conn.insert((client, insert))
            }
        };
        let mut result = f(client, insert).map_err(|e| error(&e));
        self.idle_since = Instant::now();
        if let Err(e) = &mut result
            && (e.store_unreachable || client.is_closed())
        {
            // The connection is broken or in an unknown state: never reuse it.
            e.store_unreachable = true;
            self.conn = None;
        }
        result
    }
}

fn text(events: &[&AuditEvent], field: impl Fn(&AuditEvent) -> Option<&str>) -> Vec<Option<String>> {
    events.iter().map(|e| field(e).map(str::to_string)).collect()
}

impl AuditSink for PostgresSink<'_> {
    fn insert(&mut self, batch: &[&AuditEvent]) -> Result<Vec<i64>, AuditError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let node = text(batch, |e| Some(&e.node));
        let time = text(batch, |e| Some(&e.time));
        let time_unix: Vec<i64> = batch.iter().map(|e| e.time_unix).collect();
        let profile = text(batch, |e| Some(&e.profile));
        let action = text(batch, |e| Some(&e.action));
        let operation = text(batch, |e| Some(&e.operation));
        let message_type = text(batch, |e| e.message_type.as_deref());
        let transaction_id = text(batch, |e| e.transaction_id.as_deref());
        let outcome = text(batch, |e| Some(&e.outcome));
        let http_status: Vec<i32> = batch.iter().map(|e| i32::from(e.http_status)).collect();
        let pki_status = text(batch, |e| e.pki_status.as_deref());
        let fail_info = text(batch, |e| e.fail_info.as_deref());
        let subject = text(batch, |e| e.subject.as_deref());
        let sans: Vec<String> =
            batch.iter().map(|e| serde_json::to_string(&e.subject_alt_names).unwrap_or_else(|_| "[]".into())).collect();
        let serial = text(batch, |e| e.serial.as_deref());
        let renewal_of = text(batch, |e| e.renewal_of.as_deref());
        let intune_subject = text(batch, |e| e.intune_subject.as_deref());
        let intune_issuer = text(batch, |e| e.intune_issuer.as_deref());
        let intune_nonce = text(batch, |e| e.intune_nonce.as_deref());
        let client_addr = text(batch, |e| e.client_addr.as_deref());
        let route = text(batch, |e| Some(&e.route));
        let detail = text(batch, |e| e.detail.as_deref());
        let issuer = text(batch, |e| e.issuer.as_deref());
        // Every row stands for at least one answer.
        let count: Vec<i64> = batch.iter().map(|e| i64::try_from(e.count.max(1)).unwrap_or(i64::MAX)).collect();
        let first_time = text(batch, |e| e.first_time.as_deref());
        let params: [&(dyn ToSql + Sync); 25] = [
            &node,
            &time,
            &time_unix,
            &profile,
            &action,
            &operation,
            &message_type,
            &transaction_id,
            &outcome,
            &http_status,
            &pki_status,
            &fail_info,
            &subject,
            &sans,
            &serial,
            &renewal_of,
            &intune_subject,
            &intune_issuer,
            &intune_nonce,
            &client_addr,
            &route,
            &detail,
            &issuer,
            &count,
            &first_time,
        ];
        let mut ids: Vec<i64> =
            self.with(|client, insert| client.query(insert, &params))?.iter().map(|r| r.get(0)).collect();
        if ids.len() != batch.len() {
            return Err(AuditError::new(format!("PostgreSQL stored {} of {} audit events", ids.len(), batch.len())));
        }
        // The sequence numbers rows in unnest's order; RETURNING's order is not promised.
        ids.sort_unstable();
        Ok(ids)
    }

    fn select(&mut self, q: &AuditQuery) -> Result<Vec<AuditEvent>, AuditError> {
        let mut sql = format!("SELECT {COLUMNS} FROM audit_events WHERE TRUE");
        let mut args: Vec<Box<dyn ToSql + Sync>> = Vec::new();
        let lists = [
            ("profile = ANY", &q.profile),
            ("action = ANY", &q.action),
            ("outcome = ANY", &q.outcome),
            ("outcome <> ALL", &q.exclude_outcome),
        ];
        for (test, values) in lists {
            if !values.is_empty() {
                args.push(Box::new(values.clone()));
                sql.push_str(&format!(" AND {test}(${}::text[])", args.len()));
            }
        }
        if let Some(serial) = &q.certificate {
            args.push(Box::new(serial.clone()));
            sql.push_str(&format!(" AND (serial = ${n} OR renewal_of = ${n})", n = args.len()));
        }
        for (test, value) in [("id <", q.before_id), ("time_unix >=", q.since)] {
            if let Some(v) = value {
                args.push(Box::new(v));
                sql.push_str(&format!(" AND {test} ${}", args.len()));
            }
        }
        args.push(Box::new(i64::from(q.limit.clamp(1, MAX_QUERY_LIMIT))));
        sql.push_str(&format!(" ORDER BY id DESC LIMIT ${}", args.len()));
        let params: Vec<&(dyn ToSql + Sync)> = args.iter().map(|a| &**a as &(dyn ToSql + Sync)).collect();
        let rows = self.with(|client, _| client.query(&sql, &params))?;
        rows.iter().map(event_of).collect::<Result<_, _>>().map_err(|e| error(&e))
    }

    fn hourly(&mut self, since: i64) -> Result<Vec<HourlyActivity>, AuditError> {
        let sql = format!(
            "SELECT (time_unix / 3600) * 3600 AS hour, \
                    COALESCE(SUM(CASE WHEN outcome = 'success' AND serial IS NOT NULL THEN count ELSE 0 END), 0)::BIGINT, \
                    COALESCE(SUM(CASE WHEN outcome <> 'success' AND outcome <> 'pending' THEN count ELSE 0 END), 0)::BIGINT \
             FROM audit_events WHERE time_unix >= $1 AND action IN ({ENROLMENT_ACTIONS}) \
             GROUP BY hour ORDER BY hour"
        );
        let rows = self.with(|client, _| client.query(&sql, &[&since]))?;
        let count = |n: i64| u64::try_from(n).unwrap_or(0);
        Ok(rows
            .iter()
            .map(|r| HourlyActivity { hour_unix: r.get(0), enrolments: count(r.get(1)), failures: count(r.get(2)) })
            .collect())
    }

    fn prune(&mut self, cutoff: i64) -> Result<usize, AuditError> {
        let mut total = 0usize;
        for _ in 0..PRUNE_MAX_BATCHES {
            // Rows another node is deleting right now are skipped, not waited for.
            let n = self.with(|client, _| {
                client.execute(
                    "DELETE FROM audit_events WHERE id IN \
                     (SELECT id FROM audit_events WHERE time_unix < $1 ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED)",
                    &[&cutoff, &PRUNE_BATCH],
                )
            })?;
            total = total.saturating_add(usize::try_from(n).unwrap_or(usize::MAX));
            if n < PRUNE_BATCH.unsigned_abs() {
                break;
            }
        }
        Ok(total)
    }

    fn newest_issuance(&mut self, node: &str) -> Result<Option<i64>, AuditError> {
        let row = self.with(|client, _| {
            client.query_one("SELECT MAX(time_unix) FROM audit_events WHERE serial IS NOT NULL AND node = $1", &[&node])
        })?;
        Ok(row.get(0))
    }

    fn serials_since(&mut self, since: i64) -> Result<Vec<String>, AuditError> {
        let rows = self.with(|client, _| {
            client.query("SELECT serial FROM audit_events WHERE serial IS NOT NULL AND time_unix >= $1", &[&since])
        })?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }
}

/// One row of [`COLUMNS`] as an event.
fn event_of(r: &postgres::Row) -> Result<AuditEvent, postgres::Error> {
    let sans: String = r.try_get(14)?;
    Ok(AuditEvent {
        id: r.try_get(0)?,
        node: r.try_get(1)?,
        time: r.try_get(2)?,
        time_unix: r.try_get(3)?,
        profile: r.try_get(4)?,
        action: r.try_get(5)?,
        operation: r.try_get(6)?,
        message_type: r.try_get(7)?,
        transaction_id: r.try_get(8)?,
        outcome: r.try_get(9)?,
        http_status: u16::try_from(r.try_get::<_, i32>(10)?).unwrap_or(0),
        pki_status: r.try_get(11)?,
        fail_info: r.try_get(12)?,
        subject: r.try_get(13)?,
        subject_alt_names: serde_json::from_str(&sans).unwrap_or_default(),
        serial: r.try_get(15)?,
        renewal_of: r.try_get(16)?,
        intune_subject: r.try_get(17)?,
        intune_issuer: r.try_get(18)?,
        intune_nonce: r.try_get(19)?,
        client_addr: r.try_get(20)?,
        route: r.try_get(21)?,
        detail: r.try_get(22)?,
        issuer: r.try_get(23)?,
        count: u64::try_from(r.try_get::<_, i64>(24)?).unwrap_or(1),
        first_time: r.try_get(25)?,
    })
}
