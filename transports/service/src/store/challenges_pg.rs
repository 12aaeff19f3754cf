//! One-time challenges on the shared PostgreSQL store (issue 18): the
//! [`ChallengeStore`] contract of [`super::challenges`], kept by every node
//! at once. A challenge minted through any node's admin API is consumed
//! exactly once by whichever node sees it first: the consuming `UPDATE ...
//! WHERE used_at IS NULL` runs in a transaction that first locks the row
//! (`SELECT ... FOR UPDATE`), so a concurrent consumption on another node
//! waits and then finds it used. An expired challenge is reported once
//! across nodes (`UPDATE ... WHERE expired_reported_at IS NULL RETURNING`).
//!
//! The table is migration 2 of `scep_store::migrations`. Calls run on the
//! `blocking` pool through the store's connection pool.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use scep_engine::UnixTime;
use scep_engine::config::ConfigError;
use scep_store::postgres::Pool;

use super::challenges::{
    ChallengeBinding, ChallengeStore, Consumption, ExpiredChallenge, ExpiryObserver, KEEP_AFTER_EXPIRY_SECS,
    MintRequest, Minted, OutstandingChallenge, Presentation, Refusal, StoreError, StoreFuture, new_secret,
    secret_digest,
};

/// How often a node looks for challenges that expired unused.
const SWEEP_EVERY: Duration = Duration::from_secs(30);

/// The PostgreSQL [`ChallengeStore`] (cheap to clone).
#[derive(Clone)]
pub struct PostgresChallenges {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Arc<Pool>,
    /// Behind a mutex: the observer is `Send` but not `Sync`.
    on_expired: Mutex<ExpiryObserver>,
}

impl Inner {
    fn report(&self, expired: &ExpiredChallenge) {
        (self.on_expired.lock().unwrap_or_else(PoisonError::into_inner))(expired);
    }
}

impl std::fmt::Debug for PostgresChallenges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresChallenges").field("pool", &self.inner.pool).finish_non_exhaustive()
    }
}

fn db(e: &postgres::Error) -> StoreError {
    match e.as_db_error() {
        Some(d) => StoreError(format!("one-time challenge store: {}: {}", d.code().code(), d.message())),
        None => StoreError(format!("one-time challenge store: {e}")),
    }
}

fn pooled(e: scep_store::StoreError) -> StoreError {
    StoreError(format!("one-time challenge store: {e}"))
}

impl PostgresChallenges {
    /// On the node's shared pool (the schema is the protection store's
    /// migrations, applied before this): reports challenges that expired
    /// while no node ran, and starts the sweep thread.
    ///
    /// # Errors
    /// Naming `store.url` when the database cannot be reached.
    pub fn open(pool: Arc<Pool>, on_expired: ExpiryObserver) -> Result<Self, ConfigError> {
        let fail = |e: &dyn std::fmt::Display| ConfigError(format!("store.url (one-time challenges): {e}"));
        let store = Self { inner: Arc::new(Inner { pool, on_expired: Mutex::new(on_expired) }) };
        store.inner.sweep(UnixTime::now()).map_err(|e| fail(&e))?;
        let weak = Arc::downgrade(&store.inner);
        std::thread::Builder::new()
            .name("scepd-challenges-pg".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(SWEEP_EVERY);
                    let Some(inner) = weak.upgrade() else { return };
                    if let Err(e) = inner.sweep(UnixTime::now()) {
                        tracing::warn!(target: "scepd::challenges", error = %e, "one-time challenge sweep failed; retrying later");
                    }
                }
            })
            .map_err(|e| fail(&format!("cannot start the sweep thread: {e}")))?;
        Ok(store)
    }

    fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    ) -> StoreFuture<T> {
        let inner = self.inner.clone();
        Box::pin(blocking::unblock(move || f(&inner)))
    }
}

impl Inner {
    fn mint(&self, request: &MintRequest, now: UnixTime) -> Result<Minted, StoreError> {
        let secret = new_secret()?;
        let expires_at = UnixTime(now.secs().saturating_add(request.ttl_secs));
        let sans = serde_json::to_string(&request.binding.subject_alt_names)
            .map_err(|e| StoreError(format!("one-time challenge binding: {e}")))?;
        let mut client = self.pool.get().map_err(pooled)?;
        let row = client
            .query_one(
                "INSERT INTO one_time_challenges
                     (secret_sha256, profile, bound_common_name, bound_sans, created_at, expires_at, created_by)
                 VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
                &[
                    &secret_digest(&secret),
                    &request.profile,
                    &request.binding.common_name,
                    &sans,
                    &now.secs(),
                    &expires_at.secs(),
                    &request.created_by,
                ],
            )
            .map_err(|e| db(&e))?;
        Ok(Minted { id: row.get(0), challenge: secret, expires_at })
    }

    fn consume(&self, p: &Presentation, now: UnixTime) -> Result<Consumption, StoreError> {
        let mut client = self.pool.get().map_err(pooled)?;
        let mut tx = client.transaction().map_err(|e| db(&e))?;
        let row = tx
            .query_opt(
                "SELECT id, profile, bound_common_name, bound_sans, expires_at, used_at, expired_reported_at, created_by,
                        used_by_transaction
                   FROM one_time_challenges WHERE secret_sha256 = $1 FOR UPDATE",
                &[&secret_digest(p.challenge.expose())],
            )
            .map_err(|e| db(&e))?;
        let Some(row) = row else { return Ok(Consumption::Refused(Refusal::Unknown)) };
        let (id, profile): (i64, String) = (row.get(0), row.get(1));
        let (cn, sans): (Option<String>, String) = (row.get(2), row.get(3));
        let (expires_at, used_at, expired_reported): (i64, Option<i64>, Option<i64>) =
            (row.get(4), row.get(5), row.get(6));
        if profile != p.profile {
            return Ok(Consumption::Refused(Refusal::Unknown));
        }
        if used_at.is_some() {
            let used_by: Option<String> = row.get(8);
            return Ok(Consumption::of_used(id, used_by.as_deref(), expires_at, &binding_from(cn, &sans), p, now));
        }
        if expires_at <= now.secs() {
            if expired_reported.is_none() {
                tx.execute(
                    "UPDATE one_time_challenges SET expired_reported_at = $2 WHERE id = $1",
                    &[&id, &now.secs()],
                )
                .map_err(|e| db(&e))?;
                tx.commit().map_err(|e| db(&e))?;
                self.report(&ExpiredChallenge { id, profile, created_by: row.get(7) });
            }
            return Ok(Consumption::Refused(Refusal::Expired { id }));
        }
        if let Some(why) = binding_from(cn, &sans).mismatch(&p.common_names, &p.subject_alt_names) {
            return Ok(Consumption::Refused(Refusal::BindingMismatch { id, why }));
        }
        let changed = tx
            .execute(
                "UPDATE one_time_challenges SET used_at = $2, used_by_transaction = $3
                  WHERE id = $1 AND used_at IS NULL AND expires_at > $2",
                &[&id, &now.secs(), &p.transaction_id],
            )
            .map_err(|e| db(&e))?;
        tx.commit().map_err(|e| db(&e))?;
        Ok(if changed == 1 { Consumption::Consumed { id } } else { Consumption::Refused(Refusal::Used { id }) })
    }

    fn outstanding(&self, profile: Option<&str>, now: UnixTime) -> Result<Vec<OutstandingChallenge>, StoreError> {
        self.sweep(now)?;
        let mut client = self.pool.get().map_err(pooled)?;
        let rows = client
            .query(
                "SELECT id, profile, bound_common_name, bound_sans, created_at, expires_at, created_by
                   FROM one_time_challenges
                  WHERE used_at IS NULL AND expires_at > $1 AND ($2::TEXT IS NULL OR profile = $2)
                  ORDER BY id",
                &[&now.secs(), &profile],
            )
            .map_err(|e| db(&e))?;
        Ok(rows
            .iter()
            .map(|r| OutstandingChallenge {
                id: r.get(0),
                profile: r.get(1),
                binding: binding_from(r.get(2), &r.get::<_, String>(3)),
                created_at: UnixTime(r.get(4)),
                expires_at: UnixTime(r.get(5)),
                created_by: r.get(6),
            })
            .collect())
    }

    /// Reports challenges that expired unused (once each, across nodes) and
    /// deletes those past [`KEEP_AFTER_EXPIRY_SECS`].
    fn sweep(&self, now: UnixTime) -> Result<(), StoreError> {
        let mut client = self.pool.get().map_err(pooled)?;
        let mut tx = client.transaction().map_err(|e| db(&e))?;
        let expired: Vec<ExpiredChallenge> = tx
            .query(
                "UPDATE one_time_challenges SET expired_reported_at = $1
                  WHERE used_at IS NULL AND expired_reported_at IS NULL AND expires_at <= $1
                  RETURNING id, profile, created_by",
                &[&now.secs()],
            )
            .map_err(|e| db(&e))?
            .iter()
            .map(|r| ExpiredChallenge { id: r.get(0), profile: r.get(1), created_by: r.get(2) })
            .collect();
        tx.execute(
            "DELETE FROM one_time_challenges WHERE expires_at <= $1",
            &[&now.secs().saturating_sub(KEEP_AFTER_EXPIRY_SECS)],
        )
        .map_err(|e| db(&e))?;
        tx.commit().map_err(|e| db(&e))?;
        for e in &expired {
            self.report(e);
        }
        Ok(())
    }
}

/// As the SQLite store reads a binding: an unreadable value fails closed.
fn binding_from(common_name: Option<String>, sans: &str) -> ChallengeBinding {
    let subject_alt_names =
        serde_json::from_str(sans).unwrap_or_else(|_| vec![format!("<unreadable binding {sans:?}>")]);
    ChallengeBinding { common_name, subject_alt_names }
}

impl ChallengeStore for PostgresChallenges {
    fn mint(&self, request: MintRequest, now: UnixTime) -> StoreFuture<Minted> {
        self.run(move |inner| inner.mint(&request, now))
    }

    fn consume(&self, presented: Presentation, now: UnixTime) -> StoreFuture<Consumption> {
        self.run(move |inner| inner.consume(&presented, now))
    }

    fn outstanding(&self, profile: Option<String>, now: UnixTime) -> StoreFuture<Vec<OutstandingChallenge>> {
        self.run(move |inner| inner.outstanding(profile.as_deref(), now))
    }
}
