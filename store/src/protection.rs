//! The protection state's contract: what every backend must guarantee.

/// What [`ProtectionStore::claim_nonce`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NonceClaim {
    /// First use (or the earlier entry had expired): recorded until its expiry.
    Accepted,
    /// The nonce is recorded and not expired: a replay.
    Replay,
}

/// What [`ProtectionStore::admit`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Counted in the device's window.
    Admitted,
    /// The device already has `limit` events in the window; nothing was counted.
    Limited {
        /// When the oldest counted event leaves the window (Unix seconds): the earliest retry.
        retry_at: i64,
    },
}

/// What [`ProtectionStore::claim_and_admit`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// The nonce (if any) is claimed and the event counted.
    Admitted,
    /// The nonce is live in the store: a replay; nothing was counted.
    Replay,
    /// The nonce (if any) is claimed, but the device is at its limit; nothing was counted.
    Limited {
        /// When the oldest counted event leaves the window (Unix seconds).
        retry_at: i64,
    },
}

/// What [`ProtectionStore::purge_expired`] removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Purged {
    /// Expired nonces.
    pub nonces: u64,
    /// Rate-limit events that left their window.
    pub rate_events: u64,
}

/// Whether the store answered its last operation, for the health endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreHealth {
    /// It answered.
    Reachable,
    /// It did not (why).
    Unreachable(String),
}

/// Intune replay nonces and per-device rate-limit windows, shared by every
/// node that opens the same database and kept across restarts.
///
/// Guarantees every implementation keeps (the contract suite in
/// `tests/tests/store_contract.rs` runs against each):
/// - [`claim_nonce`](Self::claim_nonce) is atomic across connections, nodes
///   and restarts: of any number of concurrent claims of one key, at most one
///   is [`NonceClaim::Accepted`] while the entry lives (`expires_at > now`);
///   an expired entry may be claimed again;
/// - [`admit`](Self::admit) is atomic per device: with `limit` N, of any
///   number of concurrent admissions within one window at most N are
///   [`Admission::Admitted`];
/// - [`purge_expired`](Self::purge_expired) removes only what can no longer
///   refuse anything;
/// - every answer is durable before it is returned (committed; SQLite:
///   fsynced WAL), so a kill -9 after an `Accepted` cannot reopen the nonce.
pub trait ProtectionStore: Send + Sync + std::fmt::Debug {
    /// `"sqlite"` or `"postgresql"`.
    fn backend(&self) -> &'static str;

    /// Claims nonce `key` (the caller's digest of scope and nonce) until
    /// `expires_at`, judged at `now` (both Unix seconds).
    ///
    /// # Errors
    /// [`crate::StoreError::Unavailable`] when the database did not answer:
    /// the caller must refuse (never fall back to local state).
    fn claim_nonce(&self, key: &[u8], expires_at: i64, now: i64) -> Result<NonceClaim, crate::StoreError>;

    /// Counts one event of device `device` (the caller's digest of its
    /// identity) at `now` in a sliding window of `window_secs`, unless the
    /// device already has `limit` events in it. `limit` 0 admits everything
    /// without counting.
    ///
    /// # Errors
    /// As [`Self::claim_nonce`].
    fn admit(&self, device: &[u8], now: i64, window_secs: i64, limit: u32) -> Result<Admission, crate::StoreError>;

    /// [`Self::claim_nonce`] of `nonce` (key, expiry), when given, then,
    /// unless it is a replay, [`Self::admit`] of `device`: what an Intune
    /// enrolment needs, in as few round trips as the backend allows
    /// (PostgreSQL: one). A claimed nonce stays claimed when the device is
    /// limited (as the engine's gates 7 and 8 do).
    ///
    /// # Errors
    /// As [`Self::claim_nonce`].
    fn claim_and_admit(
        &self,
        nonce: Option<(&[u8], i64)>,
        device: &[u8],
        now: i64,
        window_secs: i64,
        limit: u32,
    ) -> Result<Decision, crate::StoreError> {
        if let Some((key, expires_at)) = nonce
            && self.claim_nonce(key, expires_at, now)? == NonceClaim::Replay
        {
            return Ok(Decision::Replay);
        }
        Ok(match self.admit(device, now, window_secs, limit)? {
            Admission::Admitted => Decision::Admitted,
            Admission::Limited { retry_at } => Decision::Limited { retry_at },
        })
    }

    /// Deletes nonces and rate-limit events that expired at `now`.
    ///
    /// # Errors
    /// As [`Self::claim_nonce`].
    fn purge_expired(&self, now: i64) -> Result<Purged, crate::StoreError>;

    /// Whether the database answers. Without `probe`, what the last
    /// operation found. With `probe` (`/healthz`), the **current** state:
    /// unless an operation answered within the last second, a trivial query
    /// is asked now; PostgreSQL asks it on a connection of its own, outside
    /// the pool, and returns within about 1.5 s whatever the database does
    /// ([`crate::postgres::HEALTH_WAIT`]), saying how long it has been silent.
    fn health(&self, probe: bool) -> StoreHealth;
}
