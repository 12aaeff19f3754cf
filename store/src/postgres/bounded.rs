//! Blocking work that the caller waits for with a deadline.
//!
//! The synchronous `postgres` client has no client-side bound on its calls:
//! `connect_timeout` covers the TCP connect only, not the TLS and startup
//! handshakes after it, and a statement waits for the server for as long as
//! the connection stays open (see docs/architecture.md). A call that must not
//! hang its caller runs here on a thread of its own: the caller waits at most
//! the deadline, and a call that finishes later is handed to an `orphan`
//! handler on that thread (the pool keeps a late connection, or releases its
//! slot), so nothing is lost or counted twice.

use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// What became of work run by [`run_bounded`].
#[derive(Debug)]
pub(crate) enum Bounded<T> {
    /// It finished within the deadline: its result.
    Done(T),
    /// It did not; its result, when it comes, goes to the `orphan` handler.
    TimedOut,
    /// No thread could be started: nothing ran.
    NoThread(std::io::Error),
}

/// Where the worker leaves its result for the caller.
enum Handoff<T> {
    Waiting,
    Done(T),
    /// The caller stopped waiting: the worker handles its own result.
    Abandoned,
}

struct Rendezvous<T> {
    state: Mutex<Handoff<T>>,
    done: Condvar,
}

/// Runs `work` on a new thread named `name` and waits at most `wait` for it.
/// When the caller has stopped waiting, the worker passes the late result to
/// `orphan` (on the worker's thread): exactly one of the caller and `orphan`
/// receives it.
pub(crate) fn run_bounded<T, W, O>(name: &str, wait: Duration, work: W, orphan: O) -> Bounded<T>
where
    T: Send + 'static,
    W: FnOnce() -> T + Send + 'static,
    O: FnOnce(T) + Send + 'static,
{
    let shared = Arc::new(Rendezvous { state: Mutex::new(Handoff::Waiting), done: Condvar::new() });
    let theirs = Arc::clone(&shared);
    let spawned = std::thread::Builder::new().name(name.to_string()).spawn(move || {
        let result = work();
        let mut state = theirs.state.lock().unwrap_or_else(PoisonError::into_inner);
        if matches!(*state, Handoff::Abandoned) {
            drop(state);
            orphan(result);
        } else {
            *state = Handoff::Done(result);
            theirs.done.notify_one();
        }
    });
    if let Err(e) = spawned {
        return Bounded::NoThread(e);
    }
    let deadline = Instant::now() + wait;
    let mut state = shared.state.lock().unwrap_or_else(PoisonError::into_inner);
    loop {
        if let Handoff::Done(result) = std::mem::replace(&mut *state, Handoff::Waiting) {
            return Bounded::Done(result);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            *state = Handoff::Abandoned;
            return Bounded::TimedOut;
        }
        state = shared.done.wait_timeout(state, left).unwrap_or_else(PoisonError::into_inner).0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn quick_work_is_returned_to_the_caller() {
        let got = run_bounded("t-quick", Duration::from_secs(5), || 7, |_| unreachable!("not orphaned"));
        assert!(matches!(got, Bounded::Done(7)));
    }

    #[test]
    fn late_work_goes_to_the_orphan_handler_once() {
        let (release, gate) = mpsc::channel::<()>();
        let (orphaned, late) = mpsc::channel();
        let started = Instant::now();
        let got = run_bounded(
            "t-late",
            Duration::from_millis(100),
            move || {
                let _ = gate.recv();
                42
            },
            move |v| orphaned.send(v).unwrap_or(()),
        );
        assert!(matches!(got, Bounded::TimedOut));
        assert!(started.elapsed() < Duration::from_secs(2), "the caller waited {:?}", started.elapsed());
        release.send(()).unwrap_or(());
        assert_eq!(late.recv_timeout(Duration::from_secs(5)), Ok(42), "the late result reached the orphan handler");
    }
}
