//! The lock-free challenge replay cache (gate 7).
//!
//! A fixed table of slots, open addressing with linear probing inside a
//! bounded neighbourhood. No mutex, no allocation after construction.
//!
//! **Keys.** A nonce is identified by a keyed PRF (two SipHash-2-4 values,
//! [`super::keyed_hash`]) under a per-cache random key (from the profile's
//! [`RandomSource`]) over (scope, nonce), so an attacker cannot aim nonces at
//! one neighbourhood or at a fingerprint. The first value gives the home slot
//! (its low bits, at most 34 for any table that fits in memory) and a 30-bit
//! tag (its bits 34..64); the second, independent one the 64-bit extension.
//! A match needs tag and extension equal, within the home neighbourhood. A
//! fingerprint collision can only make a fresh nonce look like a replay (fail
//! closed); a replay always has the same fingerprint, so it is never let
//! through.
//!
//! **Slot.** `meta: AtomicU64 = COMPLETE(1) | tag(30) | expiry(33 bits of Unix
//! seconds)` and `ext: AtomicU64`. An entry is live while `expiry > now`.
//! `meta` is the only word that is ever compare-exchanged: it carries the
//! claim. `ext` is written by the claimer after its claim and published by the
//! completing store of `meta` (COMPLETE set).
//!
//! **Insert** (`check_and_insert`), all `meta` accesses `SeqCst`:
//! 1. scan the neighbourhood: a live slot with our tag is a replay when it is
//!    complete and `ext` matches (read `meta`, `ext` (Acquire), `meta` again,
//!    seqlock-style, to rule out a torn read against a re-claim); an incomplete
//!    one with our tag is waited for briefly, then treated as a replay (fail
//!    closed: it is almost surely the same nonce in flight).
//! 2. CAS the first free-or-expired slot from the value seen to our
//!    incomplete claim (a live entry is never evicted); on failure, restart.
//! 3. store `ext`, then CAS `meta` to COMPLETE.
//! 4. rescan the neighbourhood for another live slot with our fingerprint; if
//!    one exists, reject as a replay.
//!
//! **Why one use of a nonce wins.** Two concurrent inserters A and B of one
//! nonce each publish a claim (a SeqCst RMW) and then read every other slot
//! (SeqCst loads). In the single total order of SeqCst operations, whichever
//! rescan comes last follows both claims, so at least one of A and B sees the
//! other and rejects: at most one passes (both may reject, which is safe). A
//! later replay finds the entry in step 1 until it expires.
//!
//! **Full.** When the whole neighbourhood is live the insert is refused
//! ([`ReplayError::Full`]); entries are never evicted early, so a flood cannot
//! reopen a replay window. Expired slots are reclaimed in place by step 2.

use std::sync::atomic::{AtomicU64, Ordering};

use super::keyed_hash::KeyedHash;
use crate::crypto::RandomSource;
use crate::time::UnixTime;

/// Default number of live entries per profile (the service's shared cache
/// holds the sum over its Intune profiles).
pub const DEFAULT_REPLAY_CAPACITY: usize = 100_000;

/// Largest neighbourhood scanned per insert.
const NEIGHBOURHOOD: usize = 64;
/// Restarts before an insert gives up and fails closed.
const MAX_RESTARTS: usize = 1_000;
/// Spins waiting for an in-flight claim with our tag to complete.
const MAX_SPINS: usize = 256;

const COMPLETE: u64 = 1 << 63;
const TAG_BITS: u32 = 30;
const TAG_MASK: u64 = (1 << TAG_BITS) - 1;
const EXPIRY_BITS: u32 = 33;
const EXPIRY_MASK: u64 = (1 << EXPIRY_BITS) - 1;

/// Why a nonce was not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplayError {
    /// The nonce was already used and its entry is live (or a use of it is in flight).
    Replay,
    /// Every slot the nonce may use holds a live entry.
    Full,
}

#[derive(Debug, Default)]
struct Slot {
    meta: AtomicU64,
    ext: AtomicU64,
}

#[derive(Clone, Copy)]
struct Fingerprint {
    home: usize,
    tag: u64,
    ext: u64,
}

enum Probe {
    Match,
    NoMatch,
    Changed,
}

/// A fixed-capacity, lock-free set of recently used nonces with expiry.
pub struct ReplayCache {
    slots: Box<[Slot]>,
    mask: usize,
    neighbourhood: usize,
    key: KeyedHash,
    capacity: usize,
}

impl std::fmt::Debug for ReplayCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayCache").field("capacity", &self.capacity).field("slots", &self.slots.len()).finish()
    }
}

const fn clamp_secs(t: i64) -> u64 {
    if t <= 0 {
        0
    } else if t as u64 > EXPIRY_MASK {
        EXPIRY_MASK
    } else {
        t as u64
    }
}

const fn tag_of(meta: u64) -> u64 {
    (meta >> EXPIRY_BITS) & TAG_MASK
}

const fn is_live(meta: u64, now: u64) -> bool {
    meta & EXPIRY_MASK > now
}

impl ReplayCache {
    /// A cache sized for `capacity` live entries (2 × capacity slots, rounded up
    /// to a power of two, so neighbourhoods stay sparse at full load), keyed by
    /// 32 bytes from `rng`.
    pub fn new(capacity: usize, rng: &dyn RandomSource) -> Self {
        let capacity = capacity.max(1);
        let len = capacity.saturating_mul(2).next_power_of_two();
        let mut key = [0u8; 32];
        rng.fill(&mut key);
        let slots: Box<[Slot]> = (0..len).map(|_| Slot::default()).collect();
        Self { mask: len - 1, neighbourhood: len.min(NEIGHBOURHOOD), slots, key: KeyedHash::new(&key), capacity }
    }

    /// The number of live entries the cache is sized for.
    pub const fn capacity(&self) -> usize {
        self.capacity
    }

    /// The number of slots in the table.
    pub fn slots(&self) -> usize {
        self.slots.len()
    }

    fn fingerprint(&self, scope: &str, nonce: &str) -> Fingerprint {
        let [first, second] = self.key.hash(&[scope, nonce]);
        Fingerprint { home: (first as usize) & self.mask, tag: (first >> 34) & TAG_MASK, ext: second }
    }

    /// Compares a slot whose `meta` was read as `m` (live, our tag) with `fp`.
    fn probe(slot: &Slot, mut m: u64, fp: Fingerprint) -> Probe {
        let mut spins = 0;
        while m & COMPLETE == 0 {
            if spins == MAX_SPINS {
                return Probe::Match; // in flight with our tag: fail closed
            }
            spins += 1;
            std::hint::spin_loop();
            let again = slot.meta.load(Ordering::SeqCst);
            if again & !COMPLETE != m {
                return Probe::Changed;
            }
            m = again;
        }
        // Acquire: the recheck below cannot be satisfied before this load, and
        // if it reads a newer claimer's `ext`, the recheck sees that claim.
        let ext = slot.ext.load(Ordering::Acquire);
        if slot.meta.load(Ordering::SeqCst) != m {
            return Probe::Changed;
        }
        if ext == fp.ext { Probe::Match } else { Probe::NoMatch }
    }

    /// Records `nonce` (in `scope`: the validator passes the signing anchor's
    /// [`super::TrustAnchor::replay_scope`]) as used until
    /// `expires_at`, unless it is already live: one atomic check-and-insert.
    ///
    /// # Errors
    /// [`ReplayError::Replay`] when the nonce is live (also when concurrent
    /// uses race: at most one of them succeeds); [`ReplayError::Full`] when no
    /// slot for it is free.
    pub fn check_and_insert(
        &self,
        scope: &str,
        nonce: &str,
        now: UnixTime,
        expires_at: UnixTime,
    ) -> Result<(), ReplayError> {
        let fp = self.fingerprint(scope, nonce);
        let now = clamp_secs(now.secs());
        let expiry = clamp_secs(expires_at.secs()).max(now + 1).min(EXPIRY_MASK);
        let claim = (fp.tag << EXPIRY_BITS) | expiry;
        let at = |k: usize| &self.slots[(fp.home + k) & self.mask];
        'restart: for _ in 0..MAX_RESTARTS {
            // 1. Look for a live entry of this nonce; remember the first free slot.
            let mut free: Option<(usize, u64)> = None;
            for k in 0..self.neighbourhood {
                let slot = at(k);
                let m = slot.meta.load(Ordering::SeqCst);
                if !is_live(m, now) {
                    free.get_or_insert((k, m));
                } else if tag_of(m) == fp.tag {
                    match Self::probe(slot, m, fp) {
                        Probe::Match => return Err(ReplayError::Replay),
                        Probe::NoMatch => {}
                        Probe::Changed => continue 'restart,
                    }
                }
            }
            let Some((k, seen)) = free else { return Err(ReplayError::Full) };
            // 2. Claim it; fails if anyone changed it since we looked.
            let slot = at(k);
            if slot.meta.compare_exchange(seen, claim, Ordering::SeqCst, Ordering::SeqCst).is_err() {
                continue 'restart;
            }
            // 3. Publish the extension, then complete the claim.
            slot.ext.store(fp.ext, Ordering::Relaxed);
            if slot.meta.compare_exchange(claim, claim | COMPLETE, Ordering::SeqCst, Ordering::SeqCst).is_err() {
                continue 'restart; // reclaimed under us (callers' clocks far apart): record again
            }
            // 4. Rescan for a concurrent twin that claimed another slot.
            for j in (0..self.neighbourhood).filter(|&j| j != k) {
                let other = at(j);
                let m = other.meta.load(Ordering::SeqCst);
                if is_live(m, now) && tag_of(m) == fp.tag {
                    match Self::probe(other, m, fp) {
                        Probe::NoMatch => {}
                        // A changed twin slot is treated as a twin: fail closed.
                        Probe::Match | Probe::Changed => return Err(ReplayError::Replay),
                    }
                }
            }
            return Ok(());
        }
        Err(ReplayError::Replay)
    }

    /// Number of live entries at `now` (a racy snapshot, for the admin plane).
    pub fn live_entries(&self, now: UnixTime) -> usize {
        let now = clamp_secs(now.secs());
        self.slots.iter().filter(|s| is_live(s.meta.load(Ordering::Relaxed), now)).count()
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
    fn replay_within_and_after_ttl() {
        let c = ReplayCache::new(16, &Fixed(1));
        let t = UnixTime(1_000);
        c.check_and_insert("p", "n1", t, t.plus(60)).unwrap();
        assert_eq!(c.check_and_insert("p", "n1", t.plus(59), t.plus(119)), Err(ReplayError::Replay));
        c.check_and_insert("q", "n1", t, t.plus(60)).unwrap(); // other scope
        c.check_and_insert("p", "n2", t, t.plus(60)).unwrap();
        c.check_and_insert("p", "n1", t.plus(60), t.plus(120)).unwrap(); // expired: reusable
        assert_eq!(c.check_and_insert("p", "n1", t.plus(61), t.plus(121)), Err(ReplayError::Replay));
    }

    #[test]
    fn full_never_evicts_live_entries() {
        let c = ReplayCache::new(4, &Fixed(2));
        let t = UnixTime(50);
        let slots = c.slots();
        assert_eq!(slots, 8);
        for i in 0..slots {
            c.check_and_insert("p", &format!("n{i}"), t, t.plus(100)).unwrap();
        }
        assert_eq!(c.check_and_insert("p", "fresh", t, t.plus(100)), Err(ReplayError::Full));
        // every live entry still rejects
        for i in 0..slots {
            assert_eq!(c.check_and_insert("p", &format!("n{i}"), t.plus(99), t.plus(199)), Err(ReplayError::Replay));
        }
        assert_eq!(c.live_entries(t), slots);
        // after expiry, slots are reclaimed
        c.check_and_insert("p", "fresh", t.plus(100), t.plus(200)).unwrap();
        assert_eq!(c.live_entries(t.plus(100)), 1);
    }

    #[test]
    fn concurrent_uses_of_one_nonce_exactly_one_wins() {
        let c = Arc::new(ReplayCache::new(1024, &Fixed(3)));
        for round in 0..300 {
            let wins = Arc::new(AtomicUsize::new(0));
            let barrier = Arc::new(std::sync::Barrier::new(8));
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    let (c, wins, barrier) = (c.clone(), wins.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        barrier.wait();
                        let nonce = format!("round-{round}");
                        if c.check_and_insert("p", &nonce, UnixTime(10), UnixTime(1_000_000)).is_ok() {
                            wins.fetch_add(1, Ordering::SeqCst);
                        }
                    })
                })
                .collect();
            for h in handles {
                h.join().unwrap();
            }
            assert_eq!(wins.load(Ordering::SeqCst), 1, "round {round}");
        }
    }
}
