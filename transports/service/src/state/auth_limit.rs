//! Failed admin API authentications, limited per client address: after
//! [`MAX_FAILURES`] unknown keys from one address within [`WINDOW`], that
//! address is answered 429 (with `Retry-After`) until the window ends, and its
//! keys are not even compared. A correct key from another address is never
//! affected.
//!
//! The table is bounded ([`MAX_TRACKED`] addresses) and refuses rather than
//! forgets, as the Intune rate limiter does: when every slot holds an address
//! whose window is still open, an address not in the table is answered 429
//! too (so a guesser cannot get an unlimited budget by filling the table).
//! IPv6 clients are counted per /64 (one host usually holds a whole /64);
//! IPv4 clients per address.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Failed authentications one address may make per [`WINDOW`].
pub const MAX_FAILURES: u32 = 10;
/// The window the failures are counted in, from an address's first failure.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Addresses tracked at once (about 64 bytes each).
pub const MAX_TRACKED: usize = 10_000;

/// Failures of one address in its current window.
#[derive(Clone, Copy, Debug)]
struct Window {
    started: Instant,
    failures: u32,
}

/// The per-address limiter of failed admin authentications (one per process).
#[derive(Debug)]
pub struct AuthFailureLimit {
    table: Mutex<HashMap<IpAddr, Window>>,
    max_failures: u32,
    window: Duration,
    capacity: usize,
    failures: AtomicU64,
    refused: AtomicU64,
}

impl Default for AuthFailureLimit {
    fn default() -> Self {
        Self::new(MAX_FAILURES, WINDOW, MAX_TRACKED)
    }
}

/// The table key of a client address: IPv4 as is (IPv4-mapped IPv6 too),
/// IPv6 by its /64. An unknown address (no socket, as in embedding) is one key.
fn client_key(client: Option<IpAddr>) -> IpAddr {
    match client {
        None => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        Some(IpAddr::V4(v4)) => IpAddr::V4(v4),
        Some(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

impl AuthFailureLimit {
    /// A limiter allowing `max_failures` per `window` per address, tracking at
    /// most `capacity` addresses.
    pub fn new(max_failures: u32, window: Duration, capacity: usize) -> Self {
        Self {
            table: Mutex::new(HashMap::new()),
            max_failures,
            window,
            capacity,
            failures: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Window>> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether `client` may present a key at `now`: `Err(retry_after)` when it
    /// has used up its failures (or the table is full of open windows and it
    /// is not in it); the refusal is counted.
    ///
    /// # Errors
    /// The time until the client may try again (at least one second).
    pub fn check(&self, client: Option<IpAddr>, now: Instant) -> Result<(), Duration> {
        let key = client_key(client);
        let mut table = self.lock();
        let refusal = match table.get(&key).copied() {
            Some(w) if now.saturating_duration_since(w.started) >= self.window => {
                table.remove(&key);
                None
            }
            Some(w) if w.failures >= self.max_failures => {
                Some((w.started + self.window).saturating_duration_since(now))
            }
            Some(_) => None,
            None if table.len() >= self.capacity => {
                let window = self.window;
                table.retain(|_, w| now.saturating_duration_since(w.started) < window);
                (table.len() >= self.capacity).then_some(self.window)
            }
            None => None,
        };
        drop(table);
        match refusal {
            None => Ok(()),
            Some(wait) => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                Err(wait.max(Duration::from_secs(1)))
            }
        }
    }

    /// Records one failed authentication (an unknown key) by `client` at `now`.
    pub fn record_failure(&self, client: Option<IpAddr>, now: Instant) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let key = client_key(client);
        let mut table = self.lock();
        if let Some(w) = table.get_mut(&key) {
            if now.saturating_duration_since(w.started) >= self.window {
                *w = Window { started: now, failures: 1 };
            } else {
                w.failures = w.failures.saturating_add(1);
            }
            return;
        }
        if table.len() >= self.capacity {
            let window = self.window;
            table.retain(|_, w| now.saturating_duration_since(w.started) < window);
        }
        // When still full, the failure is not tracked: `check` then refuses
        // this address (fail closed) until a slot frees up.
        if table.len() < self.capacity {
            table.insert(key, Window { started: now, failures: 1 });
        }
    }

    /// Failed authentications so far (`scepd_admin_auth_failures_total`).
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Requests answered 429 so far (`scepd_admin_auth_refused_total`).
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Addresses in the table (`scepd_admin_auth_tracked_clients`).
    pub fn tracked(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn an_address_is_refused_after_its_failures_until_the_window_ends_and_others_are_not() {
        let limit = AuthFailureLimit::new(3, Duration::from_secs(60), 100);
        let t0 = Instant::now();
        for i in 0..3 {
            assert_eq!(limit.check(ip("127.0.0.2"), t0), Ok(()), "failure {i}");
            limit.record_failure(ip("127.0.0.2"), t0);
        }
        let later = t0 + Duration::from_secs(20);
        assert_eq!(limit.check(ip("127.0.0.2"), later), Err(Duration::from_secs(40)));
        assert_eq!(limit.check(ip("127.0.0.1"), later), Ok(()), "another address is unaffected");
        assert_eq!(limit.check(ip("127.0.0.2"), t0 + Duration::from_secs(60)), Ok(()), "a new window");
        assert_eq!((limit.failures(), limit.refused()), (3, 1));
    }

    #[test]
    fn ipv6_is_counted_per_64_and_mapped_ipv4_as_ipv4() {
        let limit = AuthFailureLimit::new(2, Duration::from_secs(60), 100);
        let t0 = Instant::now();
        limit.record_failure(ip("2001:db8:1:2::1"), t0);
        limit.record_failure(ip("2001:db8:1:2:ffff::9"), t0);
        assert!(limit.check(ip("2001:db8:1:2::77"), t0).is_err());
        assert_eq!(limit.check(ip("2001:db8:1:3::1"), t0), Ok(()));
        limit.record_failure(ip("::ffff:10.0.0.1"), t0);
        limit.record_failure(ip("10.0.0.1"), t0);
        assert!(limit.check(ip("10.0.0.1"), t0).is_err());
    }

    #[test]
    fn a_full_table_refuses_new_addresses_rather_than_forgetting_and_frees_expired_slots() {
        let limit = AuthFailureLimit::new(5, Duration::from_secs(60), 2);
        let t0 = Instant::now();
        limit.record_failure(ip("10.0.0.1"), t0);
        limit.record_failure(ip("10.0.0.2"), t0);
        limit.record_failure(ip("10.0.0.3"), t0);
        assert_eq!(limit.tracked(), 2);
        assert_eq!(limit.check(ip("10.0.0.3"), t0), Err(Duration::from_secs(60)), "untracked while full");
        assert_eq!(limit.check(ip("10.0.0.1"), t0), Ok(()), "tracked addresses keep their budget");
        // Once the windows end, the slots are reused.
        assert_eq!(limit.check(ip("10.0.0.3"), t0 + Duration::from_secs(61)), Ok(()));
        assert_eq!(limit.tracked(), 0);
    }
}
