//! Single use of an Intune API challenge, locally (issue 15): a bounded,
//! expiring set keyed by the SHA-256 of the challenge. The same challenge
//! presented twice is refused as `replay`, whatever Intune says.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use scep_engine::crypto::DigestAlg;
use scep_engine::time::UnixTime;

/// Why a challenge was not admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Seen before, within its lifetime.
    Replay,
    /// The set is full of live challenges.
    Full,
}

/// Challenges seen, until they expire.
#[derive(Debug)]
pub struct SeenChallenges {
    capacity: usize,
    ttl_secs: i64,
    seen: Mutex<HashMap<[u8; 32], i64>>,
}

impl SeenChallenges {
    /// A set of at most `capacity` live challenges, each kept `ttl_secs`.
    pub fn new(capacity: usize, ttl_secs: i64) -> Self {
        Self { capacity, ttl_secs, seen: Mutex::new(HashMap::new()) }
    }

    fn key(challenge: &str) -> [u8; 32] {
        let mut k = [0u8; 32];
        k.copy_from_slice(&DigestAlg::Sha256.digest(challenge.as_bytes()));
        k
    }

    /// Admits `challenge` once.
    ///
    /// # Errors
    /// [`Refusal::Replay`] when it was admitted before and has not expired,
    /// [`Refusal::Full`] when the set holds `capacity` live challenges.
    pub fn admit(&self, challenge: &str, now: UnixTime) -> Result<(), Refusal> {
        let key = Self::key(challenge);
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if seen.get(&key).is_some_and(|&until| until > now.secs()) {
            return Err(Refusal::Replay);
        }
        if seen.len() >= self.capacity {
            seen.retain(|_, until| *until > now.secs());
            if seen.len() >= self.capacity {
                return Err(Refusal::Full);
            }
        }
        seen.insert(key, now.secs() + self.ttl_secs);
        Ok(())
    }

    /// Forgets `challenge` (Intune gave no definitive answer, so the device
    /// may present it again).
    pub fn release(&self, challenge: &str) {
        self.seen.lock().unwrap_or_else(PoisonError::into_inner).remove(&Self::key(challenge));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_challenge_is_admitted_once_until_it_expires_and_the_set_is_bounded() {
        let set = SeenChallenges::new(2, 60);
        let t = UnixTime::from_secs(1_000);
        assert_eq!(set.admit("a", t), Ok(()));
        assert_eq!(set.admit("a", t.plus(59)), Err(Refusal::Replay));
        assert_eq!(set.admit("b", t), Ok(()));
        assert_eq!(set.admit("c", t.plus(1)), Err(Refusal::Full));
        assert_eq!(set.admit("a", t.plus(60)), Ok(()), "expired entries make room and may come back");
        set.release("b");
        assert_eq!(set.admit("b", t.plus(61)), Ok(()));
    }
}
