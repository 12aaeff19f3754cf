//! The lock-free per-device rate limiter (gate 8): a sliding-window log keyed
//! by (claim `sub`, claim `iss`), default 3 enrolments per 24 h.
//!
//! **Layout.** A fixed table of buckets. Each bucket has an `owner` word (a
//! keyed 64-bit fingerprint of the device key; 0 = never used; bit 0 = claim
//! still tentative) and a ring of `limit` timestamp cells. The log of a device
//! is its ring: an enrolment at `now` is admitted exactly when it can
//! compare-exchange a cell holding a timestamp `<= now - window` (or empty) to
//! `now`. With `limit` cells, at most `limit` admissions can lie in any window
//! (pigeonhole: a cell is only overwritten once its value left the window).
//!
//! **Bounded memory, reuse.** A device gets a bucket in its neighbourhood: the
//! one it owns, else the first never-used or idle one (every cell outside the
//! window), taken over by CAS of `owner` to a *tentative* claim. Memory ordering
//! (all `SeqCst`, one total order):
//! - a taker CASes `owner`, then re-reads the ring; a writer CASes a cell, then
//!   re-reads `owner`. One of them sees the other: the taker gives the bucket
//!   back if any cell became live, the writer undoes its cell and retries if
//!   `owner` changed. So an admission is never recorded in a bucket its device
//!   lost.
//! - after a tentative claim the taker scans the neighbourhood for another
//!   bucket of the same device (a concurrent taker); if one exists it gives
//!   its claim back and retries. So a device never holds two logs.
//! - only then is the claim made final; writers wait (briefly) for tentative
//!   claims of their own device instead of writing into them.
//!
//! Every race ends in a retry; after a bounded number of retries the request is
//! refused (fail closed), never admitted.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use super::keyed_hash::KeyedHash;
use crate::crypto::RandomSource;
use crate::time::UnixTime;

/// Default limit: enrolments per device per window.
pub const DEFAULT_RATE_LIMIT: u32 = 3;
/// The window: 24 hours.
pub const RATE_WINDOW_SECS: i64 = 24 * 3600;
/// Default number of devices tracked per profile.
pub const DEFAULT_RATE_DEVICES: usize = 100_000;

const NEIGHBOURHOOD: usize = 64;
const MAX_RESTARTS: usize = 1_000;
const TENTATIVE: u64 = 1;
const EMPTY_CELL: i64 = i64::MIN;

/// Why an enrolment was not admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateLimitError {
    /// The device already has `limit` enrolments in the window.
    Limited {
        /// The configured limit.
        limit: u32,
        /// When the oldest enrolment in the window leaves it (the earliest retry time).
        retry_at: UnixTime,
    },
    /// No bucket is free for a new device (every tracked device is active).
    Full,
    /// Concurrent updates kept racing; refused to stay safe.
    Contended,
}

/// Waits a little before retrying a race: spin first, then let the (possibly
/// preempted) other thread run.
fn backoff(attempt: usize) {
    if attempt < 64 {
        std::hint::spin_loop();
    } else {
        std::thread::yield_now();
    }
}

/// A fixed-capacity, lock-free sliding-window limiter.
pub struct RateLimiter {
    limit: u32,
    window: i64,
    owners: Box<[AtomicU64]>,
    cells: Box<[AtomicI64]>,
    mask: usize,
    neighbourhood: usize,
    key: KeyedHash,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("limit", &self.limit)
            .field("window", &self.window)
            .field("buckets", &self.owners.len())
            .finish()
    }
}

impl RateLimiter {
    /// The bytes [`RateLimiter::new`] allocates for `limit` and `devices`
    /// (saturating): twice `devices` buckets rounded up to a power of two,
    /// each an owner word and `limit` timestamp cells.
    pub fn table_bytes(limit: u32, devices: usize) -> usize {
        if limit == 0 {
            return 0;
        }
        Self::buckets(limit, devices).saturating_mul(8).saturating_mul(1 + limit as usize)
    }

    /// Buckets of a table for `devices` (one when disabled: nothing to track).
    fn buckets(limit: u32, devices: usize) -> usize {
        if limit == 0 { 1 } else { devices.max(1).saturating_mul(2).checked_next_power_of_two().unwrap_or(usize::MAX) }
    }

    /// A limiter admitting `limit` enrolments per device per `window_secs`
    /// (`limit` 0 disables it), tracking up to `devices` devices (2 × devices
    /// buckets, rounded up to a power of two), keyed by 32 bytes from `rng`.
    pub fn new(limit: u32, window_secs: i64, devices: usize, rng: &dyn RandomSource) -> Self {
        let buckets = Self::buckets(limit, devices);
        let ring = limit as usize;
        let mut key = [0u8; 32];
        rng.fill(&mut key);
        Self {
            limit,
            window: window_secs.max(1),
            owners: (0..buckets).map(|_| AtomicU64::new(0)).collect(),
            cells: (0..buckets * ring).map(|_| AtomicI64::new(EMPTY_CELL)).collect(),
            mask: buckets - 1,
            neighbourhood: buckets.min(NEIGHBOURHOOD),
            key: KeyedHash::new(&key),
        }
    }

    /// The configured limit (0 = disabled).
    pub const fn limit(&self) -> u32 {
        self.limit
    }

    /// The sliding window, seconds.
    pub const fn window_secs(&self) -> i64 {
        self.window
    }

    /// How many devices the table can track at once (its bucket count; half
    /// of it is the `devices` asked for at construction, rounded up).
    pub fn capacity(&self) -> usize {
        if self.limit == 0 { 0 } else { self.owners.len() }
    }

    /// Devices with at least one enrolment inside the window ending at `now`
    /// (a racy snapshot for the admin plane; reads every bucket once).
    pub fn tracked_devices(&self, now: UnixTime) -> usize {
        if self.limit == 0 {
            return 0;
        }
        let cutoff = now.secs().max(EMPTY_CELL + 1).saturating_sub(self.window);
        (0..self.owners.len()).filter(|&b| self.owners[b].load(Ordering::Relaxed) != 0 && !self.idle(b, cutoff)).count()
    }

    fn fingerprint(&self, scope: &str, sub: &str, iss: &str) -> (usize, u64) {
        let [bucket, owner] = self.key.hash(&[scope, sub, iss]);
        let owner = owner & !TENTATIVE;
        ((bucket as usize) & self.mask, if owner == 0 { 2 } else { owner })
    }

    fn ring(&self, bucket: usize) -> &[AtomicI64] {
        let n = self.limit as usize;
        &self.cells[bucket * n..(bucket + 1) * n]
    }

    fn idle(&self, bucket: usize, cutoff: i64) -> bool {
        self.ring(bucket).iter().all(|c| c.load(Ordering::SeqCst) <= cutoff)
    }

    /// Admits one enrolment of device (`sub`, `iss`) in `scope` at `now`, or refuses it.
    ///
    /// # Errors
    /// [`RateLimitError::Limited`] when the device is at its limit,
    /// [`RateLimitError::Full`] when no bucket is free for a new device,
    /// [`RateLimitError::Contended`] after too many concurrent retries.
    pub fn check_and_record(&self, scope: &str, sub: &str, iss: &str, now: UnixTime) -> Result<(), RateLimitError> {
        if self.limit == 0 {
            return Ok(());
        }
        let (home, fp) = self.fingerprint(scope, sub, iss);
        let now = now.secs().max(EMPTY_CELL + 1);
        let cutoff = now.saturating_sub(self.window);
        let at = |k: usize| (home + k) & self.mask;
        'restart: for attempt in 0..MAX_RESTARTS {
            let mut mine = None;
            let mut free = None;
            for k in 0..self.neighbourhood {
                let b = at(k);
                let o = self.owners[b].load(Ordering::SeqCst);
                if o == fp {
                    mine = Some(b);
                    break;
                }
                if o == fp | TENTATIVE {
                    backoff(attempt);
                    continue 'restart; // a concurrent taker of our device: wait for it
                }
                if free.is_none() && (o == 0 || (o & TENTATIVE == 0 && self.idle(b, cutoff))) {
                    free = Some((b, o));
                }
            }
            let b = match mine {
                Some(b) => b,
                None => {
                    let Some((b, prev)) = free else { return Err(RateLimitError::Full) };
                    let owner = &self.owners[b];
                    if owner.compare_exchange(prev, fp | TENTATIVE, Ordering::SeqCst, Ordering::SeqCst).is_err() {
                        continue 'restart;
                    }
                    let twin = (0..self.neighbourhood)
                        .map(at)
                        .any(|o| o != b && self.owners[o].load(Ordering::SeqCst) & !TENTATIVE == fp);
                    if twin || !self.idle(b, cutoff) {
                        // A writer of the old owner got in, or our device has
                        // another bucket: give this one back.
                        let _ = owner.compare_exchange(fp | TENTATIVE, prev, Ordering::SeqCst, Ordering::SeqCst);
                        backoff(attempt);
                        continue 'restart;
                    }
                    if owner.compare_exchange(fp | TENTATIVE, fp, Ordering::SeqCst, Ordering::SeqCst).is_err() {
                        continue 'restart;
                    }
                    b
                }
            };
            let ring = self.ring(b);
            let mut recorded = None;
            for cell in ring {
                let v = cell.load(Ordering::SeqCst);
                if v <= cutoff && cell.compare_exchange(v, now, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
                    recorded = Some((cell, v));
                    break;
                }
            }
            let Some((cell, old)) = recorded else {
                let oldest = ring.iter().map(|c| c.load(Ordering::SeqCst)).min().unwrap_or(now);
                return Err(RateLimitError::Limited {
                    limit: self.limit,
                    retry_at: UnixTime(oldest.saturating_add(self.window)),
                });
            };
            if self.owners[b].load(Ordering::SeqCst) != fp {
                // The bucket was taken over meanwhile: undo and find our log again.
                let _ = cell.compare_exchange(now, old, Ordering::SeqCst, Ordering::SeqCst);
                continue 'restart;
            }
            return Ok(());
        }
        Err(RateLimitError::Contended)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    #[derive(Debug)]
    struct Fixed(u8);
    impl RandomSource for Fixed {
        fn fill(&self, buf: &mut [u8]) {
            buf.fill(self.0);
        }
    }

    #[test]
    fn table_bytes_is_what_new_allocates() {
        for (limit, devices) in [(3, 300), (1, 1), (10, 100_000)] {
            let r = RateLimiter::new(limit, RATE_WINDOW_SECS, devices, &Fixed(1));
            let allocated = r.owners.len() * 8 + r.cells.len() * 8;
            assert_eq!(RateLimiter::table_bytes(limit, devices), allocated, "{limit} x {devices}");
        }
        assert_eq!(RateLimiter::table_bytes(0, 100_000), 0, "a disabled limiter allocates no table");
        assert_eq!(RateLimiter::table_bytes(3, 100_000), 262_144 * 32);
        assert_eq!(RateLimiter::table_bytes(u32::MAX, usize::MAX), usize::MAX, "saturates");
    }

    #[test]
    fn sliding_window_boundary() {
        let r = RateLimiter::new(3, RATE_WINDOW_SECS, 16, &Fixed(1));
        let t = UnixTime(1_000_000);
        r.check_and_record("p", "dev", "iss", t).unwrap();
        r.check_and_record("p", "dev", "iss", t.plus(10)).unwrap();
        r.check_and_record("p", "dev", "iss", t.plus(20)).unwrap();
        assert_eq!(
            r.check_and_record("p", "dev", "iss", t.plus(30)),
            Err(RateLimitError::Limited { limit: 3, retry_at: t.plus(RATE_WINDOW_SECS) })
        );
        // other device / other issuer are independent
        r.check_and_record("p", "dev2", "iss", t.plus(30)).unwrap();
        r.check_and_record("p", "dev", "iss2", t.plus(30)).unwrap();
        // one second before the first leaves the window: still limited
        assert!(r.check_and_record("p", "dev", "iss", t.plus(RATE_WINDOW_SECS - 1)).is_err());
        // exactly one window later the first slot is free again, only one
        r.check_and_record("p", "dev", "iss", t.plus(RATE_WINDOW_SECS)).unwrap();
        assert!(r.check_and_record("p", "dev", "iss", t.plus(RATE_WINDOW_SECS)).is_err());
    }

    #[test]
    fn tracked_devices_counts_devices_inside_the_window() {
        let r = RateLimiter::new(2, 100, 8, &Fixed(3));
        assert_eq!((r.window_secs(), r.capacity()), (100, 16));
        let t = UnixTime(10_000);
        assert_eq!(r.tracked_devices(t), 0);
        r.check_and_record("p", "a", "i", t).unwrap();
        r.check_and_record("p", "a", "i", t.plus(1)).unwrap();
        r.check_and_record("p", "b", "i", t.plus(50)).unwrap();
        assert_eq!(r.tracked_devices(t.plus(50)), 2, "a device counts once");
        assert_eq!(r.tracked_devices(t.plus(101)), 1, "a left the window");
        assert_eq!(r.tracked_devices(t.plus(150)), 0);
        let off = RateLimiter::new(0, 100, 8, &Fixed(3));
        off.check_and_record("p", "a", "i", t).unwrap();
        assert_eq!((off.tracked_devices(t), off.capacity()), (0, 0));
    }

    #[test]
    fn zero_disables() {
        let r = RateLimiter::new(0, RATE_WINDOW_SECS, 16, &Fixed(1));
        for _ in 0..100 {
            r.check_and_record("p", "d", "i", UnixTime(5)).unwrap();
        }
    }

    #[test]
    fn bounded_table_reuses_idle_devices() {
        let r = RateLimiter::new(1, 100, 2, &Fixed(4)); // 4 buckets
        for i in 0..4 {
            r.check_and_record("p", &format!("d{i}"), "i", UnixTime(1_000)).unwrap();
        }
        assert_eq!(r.check_and_record("p", "d9", "i", UnixTime(1_050)), Err(RateLimitError::Full));
        // once the others are idle their buckets are reused
        r.check_and_record("p", "d9", "i", UnixTime(1_100)).unwrap();
        assert!(r.check_and_record("p", "d9", "i", UnixTime(1_150)).is_err());
    }

    #[test]
    fn concurrent_admissions_never_exceed_limit() {
        for round in 0..100 {
            let r = Arc::new(RateLimiter::new(3, RATE_WINDOW_SECS, 64, &Fixed(5)));
            let ok = Arc::new(AtomicUsize::new(0));
            let barrier = Arc::new(std::sync::Barrier::new(8));
            let hs: Vec<_> = (0..8)
                .map(|_| {
                    let (r, ok, barrier) = (r.clone(), ok.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        barrier.wait();
                        for _ in 0..2 {
                            if r.check_and_record("p", "dev", "iss", UnixTime(77)).is_ok() {
                                ok.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                    })
                })
                .collect();
            for h in hs {
                h.join().unwrap();
            }
            assert_eq!(ok.load(Ordering::SeqCst), 3, "round {round}");
        }
    }
}
