//! The bounded health probe behind `/healthz` (docs/high-availability.md,
//! "When the database is unreachable").
//!
//! `/healthz` stays 200 during a store outage so that a balancer does not take
//! every node out at once; for that it must also answer **in time**, whatever
//! the database does. A database that stops answering without closing its
//! connections (a stopped or frozen server, a partition without a reset)
//! would hold a query on a pooled connection, and even a new connection's
//! startup handshake, for as long as it is silent. So the probe:
//! - uses a connection of its own, outside the pool (a pool exhausted by
//!   hanging requests does not make the probe wait for a free connection);
//! - runs on a thread of its own, at most one at a time: the caller waits at
//!   most [`HEALTH_WAIT`], and a probe still hanging then is reported as
//!   "no answer for N s" (the current state) instead of being joined by more;
//! - asks with [`postgres::Client::is_valid`], whose timeout is enforced by
//!   the client ([`PROBE_TIMEOUT`]);
//! - reports what it found now, not what the last request saw: after the
//!   database returns, the first probe says so.
//!
//! A result younger than [`PROBE_REUSE`] is answered again without a new
//! probe, so many balancers polling one node cost at most one probe a second.

use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use postgres::Client;

use super::{Connector, discard};
use crate::StoreHealth;

/// The longest `/healthz` waits for the probe: under the 2 to 5 s after which
/// balancers usually give up on a health check.
pub const HEALTH_WAIT: Duration = Duration::from_millis(1_500);
/// How long the probe's trivial query may take on an open connection.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a finished probe's result is answered again.
pub const PROBE_REUSE: Duration = Duration::from_secs(1);

/// The probe of one store (see the module documentation).
pub(crate) struct HealthProbe {
    connector: Arc<Connector>,
    state: Mutex<ProbeState>,
    finished: Condvar,
}

#[derive(Default)]
struct ProbeState {
    /// The probe's connection, kept between probes (taken while one runs).
    client: Option<Client>,
    /// When the probe now running started.
    running_since: Option<Instant>,
    /// When the last probe finished, and what it found.
    last: Option<(Instant, Result<(), String>)>,
}

impl std::fmt::Debug for HealthProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthProbe").finish_non_exhaustive()
    }
}

fn health_of(result: &Result<(), String>) -> StoreHealth {
    match result {
        Ok(()) => StoreHealth::Reachable,
        Err(why) => StoreHealth::Unreachable(why.clone()),
    }
}

impl HealthProbe {
    pub(crate) fn new(connector: Arc<Connector>) -> Arc<Self> {
        Arc::new(Self { connector, state: Mutex::new(ProbeState::default()), finished: Condvar::new() })
    }

    /// Whether the database answers now, within [`HEALTH_WAIT`] (plus lock
    /// waits): starts a probe unless one is running or a fresh result exists.
    pub(crate) fn check(self: &Arc<Self>) -> StoreHealth {
        let asked = Instant::now();
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((at, result)) = &state.last
            && at.elapsed() < PROBE_REUSE
        {
            return health_of(result);
        }
        if state.running_since.is_none() {
            let client = state.client.take();
            let this = Arc::clone(self);
            let spawned = std::thread::Builder::new()
                .name("scepd-pg-probe".into())
                .spawn(move || this.finish(probe_once(&this.connector, client)));
            match spawned {
                Ok(_) => state.running_since = Some(asked),
                Err(e) => return StoreHealth::Unreachable(format!("cannot start the health probe: {e}")),
            }
        }
        let deadline = asked + HEALTH_WAIT;
        loop {
            if let Some((at, result)) = &state.last
                && *at >= asked
            {
                return health_of(result);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let silent_for = state.running_since.map_or(HEALTH_WAIT, |since| since.elapsed());
                return StoreHealth::Unreachable(format!(
                    "{} has not answered for {:.1} s",
                    self.connector.described,
                    silent_for.as_secs_f64()
                ));
            }
            state = self.finished.wait_timeout(state, left).unwrap_or_else(PoisonError::into_inner).0;
        }
    }

    /// Records a finished probe (on the probe's thread) and wakes the waiters.
    fn finish(&self, (client, result): (Option<Client>, Result<(), String>)) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.client = client;
        state.running_since = None;
        state.last = Some((Instant::now(), result));
        drop(state);
        self.finished.notify_all();
    }
}

/// One probe: the kept connection (or a new one) answers a trivial query
/// within [`PROBE_TIMEOUT`]. Returns the connection to keep, if any.
fn probe_once(connector: &Connector, kept: Option<Client>) -> (Option<Client>, Result<(), String>) {
    if let Some(mut client) = kept.filter(|c| !c.is_closed()) {
        match client.is_valid(PROBE_TIMEOUT) {
            Ok(()) => return (Some(client), Ok(())),
            Err(_) if !client.is_closed() => {
                discard(client);
                return (None, Err(silent(connector)));
            }
            // Closed while idle (a restart): a new connection says how it is now.
            Err(_) => {}
        }
    }
    let mut client = match connector.connect() {
        Ok(c) => c,
        Err(e) => return (None, Err(e.to_string())),
    };
    match client.is_valid(PROBE_TIMEOUT) {
        Ok(()) => (Some(client), Ok(())),
        Err(e) => {
            let why = if client.is_closed() { format!("{}: {e}", connector.described) } else { silent(connector) };
            discard(client);
            (None, Err(why))
        }
    }
}

fn silent(connector: &Connector) -> String {
    format!("{} did not answer within {} s", connector.described, PROBE_TIMEOUT.as_secs())
}
