//! The Intune revocation-sync lease on the shared PostgreSQL store (issue 18).
//!
//! Every node runs a revocation poller per Intune profile
//! (`crate::intune::api::revocation`). Without coordination each node would
//! download Intune's revocation requests every interval and they would race
//! on the same requests. With a PostgreSQL store the pollers share one row
//! per profile in `intune_revocation_sync` (migration 4): a node runs the
//! sync only when it moves the row's `next_run_at` forward by one interval,
//! in one statement that succeeds only while the row is due
//! ([`RevocationSyncLease::take`]), so exactly one node runs a profile's sync
//! per interval. The database's clock decides, not the nodes' clocks. The
//! node that ran stores its report in the row, so `intune/stats` on every
//! node shows the last run, whichever node made it.
//!
//! With SQLite there is one node: its poller runs on its own timer and keeps
//! its report in memory (no lease).

use std::sync::Arc;
use std::time::Duration;

use scep_store::postgres::Pool;

/// Runs of a profile's revocation sync, shared by the nodes.
pub trait RevocationSyncLease: Send + Sync + std::fmt::Debug {
    /// Takes `profile`'s lease when its next run is due: `true` when this
    /// node runs the sync now (the next run is then due `interval` later).
    ///
    /// # Errors
    /// Why the database could not be asked (nobody runs; retried next tick).
    fn take(&self, profile: &str, interval: Duration) -> Result<bool, String>;

    /// Stores the report (JSON) of the run this node just made.
    ///
    /// # Errors
    /// Why the database refused it.
    fn publish(&self, profile: &str, report_json: &str) -> Result<(), String>;

    /// The last report any node stored for `profile` (JSON), and that node.
    ///
    /// # Errors
    /// Why the database could not be read.
    fn last(&self, profile: &str) -> Result<Option<(String, String)>, String>;
}

/// [`RevocationSyncLease`] on PostgreSQL.
#[derive(Debug)]
pub struct PostgresSyncLease {
    pool: Arc<Pool>,
    node: String,
}

impl PostgresSyncLease {
    /// The lease for the node named `node`, on `pool`'s database.
    pub fn new(pool: Arc<Pool>, node: &str) -> Self {
        Self { pool, node: node.to_string() }
    }
}

fn error(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("revocation-sync lease: {}: {}", db.code().code(), db.message()),
        None => format!("revocation-sync lease: {e}"),
    }
}

/// The database's clock in Unix milliseconds.
const DB_NOW_MS: &str = "(extract(epoch FROM clock_timestamp()) * 1000)::BIGINT";

impl RevocationSyncLease for PostgresSyncLease {
    fn take(&self, profile: &str, interval: Duration) -> Result<bool, String> {
        let interval_ms = i64::try_from(interval.as_millis()).unwrap_or(i64::MAX);
        let mut client = self.pool.get().map_err(|e| format!("revocation-sync lease: {e}"))?;
        // A concurrent taker waits for this row's lock, then finds it no longer due.
        let won = client
            .query_opt(
                &format!(
                    "INSERT INTO intune_revocation_sync (profile, next_run_at, node) VALUES ($1, {DB_NOW_MS} + $2, $3)
                     ON CONFLICT (profile) DO UPDATE SET next_run_at = EXCLUDED.next_run_at, node = EXCLUDED.node
                     WHERE intune_revocation_sync.next_run_at <= {DB_NOW_MS}
                     RETURNING 1"
                ),
                &[&profile, &interval_ms, &self.node],
            )
            .map_err(|e| error(&e))?;
        Ok(won.is_some())
    }

    fn publish(&self, profile: &str, report_json: &str) -> Result<(), String> {
        let mut client = self.pool.get().map_err(|e| format!("revocation-sync lease: {e}"))?;
        client
            .execute(
                &format!(
                    "UPDATE intune_revocation_sync SET last_report = $2, reported_at = {DB_NOW_MS}, node = $3
                     WHERE profile = $1"
                ),
                &[&profile, &report_json, &self.node],
            )
            .map_err(|e| error(&e))?;
        Ok(())
    }

    fn last(&self, profile: &str) -> Result<Option<(String, String)>, String> {
        let mut client = self.pool.get().map_err(|e| format!("revocation-sync lease: {e}"))?;
        let row = client
            .query_opt(
                "SELECT last_report, node FROM intune_revocation_sync WHERE profile = $1 AND last_report IS NOT NULL",
                &[&profile],
            )
            .map_err(|e| error(&e))?;
        Ok(row.map(|r| (r.get(0), r.get::<_, Option<String>>(1).unwrap_or_default())))
    }
}
