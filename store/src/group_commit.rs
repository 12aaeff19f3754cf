//! Group commit pacing for the writer threads (the local CA's certificate
//! index, the audit log).
//!
//! A writer thread takes every operation queued when it wakes and commits
//! them in one transaction, so one `fsync` covers them all. Under load that
//! alone batches little: the queue is drained the moment the first operation
//! lands, and on this project's machine 60-70% of commits held a single
//! certificate at 1,000 enrolments a second (session 7, `docs/benchmarks-e2e.md`).
//! Each commit costs an `fsync`, a thread wake-up and the transaction's own
//! statements, so the writers spent ~0.2 ms of CPU per enrolment.
//!
//! [`CommitPacer`] does what PostgreSQL's `commit_delay` does: when
//! operations have been arriving closer together than its `max_wait`,
//! the writer lets the batch fill for that long before committing (it sleeps:
//! operations queued meanwhile do not wake it). When they arrive further
//! apart (an idle or lightly loaded server) it commits at once, so a lone
//! request never waits. Every caller is still answered only after its
//! transaction commits; the pacer trades at most `max_wait` of latency under
//! load for fewer commits.

use std::time::{Duration, Instant};

/// The default longest a batch is left to fill: 4 ms, a fraction of an
/// enrolment's latency under load (tens of milliseconds). It was 2 ms in
/// session 7; at 4 ms a batch holds about twice as many operations, and the
/// writers' `fsync`s, and the thread switches each costs, are halved: 2-3%
/// less server CPU per enrolment and no worse p99 at saturation, measured
/// side by side (session 8, `docs/benchmarks-e2e.md`). Below 250 operations
/// a second the pacer does not wait at all.
pub const DEFAULT_MAX_WAIT: Duration = Duration::from_millis(4);

/// Decides, for each batch, whether to let it fill before committing.
#[derive(Debug, Clone)]
pub struct CommitPacer {
    max_wait: Duration,
    /// The mean time between two operations (exponentially weighted over
    /// recent batches); `None` before the second batch.
    mean_gap: Option<Duration>,
    /// When the previous batch was taken.
    previous: Option<Instant>,
}

impl Default for CommitPacer {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_WAIT)
    }
}

impl CommitPacer {
    /// A pacer that lets a batch fill for at most `max_wait`.
    pub fn new(max_wait: Duration) -> Self {
        Self { max_wait, mean_gap: None, previous: None }
    }

    /// How long to let the batch whose first operation was just taken (at
    /// `now`) fill before draining the queue: the pacer's `max_wait` when
    /// operations have lately arrived closer together than that, else zero.
    pub fn linger(&self, now: Instant) -> Duration {
        // After an idle stretch longer than the wait, commit at once, whatever
        // the history says: the load that made it worth waiting has gone.
        let idle = self.previous.is_none_or(|p| now.saturating_duration_since(p) > self.max_wait * 4);
        match self.mean_gap {
            Some(gap) if !idle && gap < self.max_wait => self.max_wait,
            _ => Duration::ZERO,
        }
    }

    /// Records a batch of `size` operations taken at `taken` (when its first
    /// operation was received): the time since the previous batch, spread over
    /// its operations, updates the mean gap.
    pub fn record(&mut self, taken: Instant, size: usize) {
        if let Some(previous) = self.previous {
            let gap = taken.saturating_duration_since(previous) / u32::try_from(size.max(1)).unwrap_or(u32::MAX);
            // Weight 1/4 on the newest batch: a few batches follow a change of load.
            self.mean_gap = Some(match self.mean_gap {
                Some(mean) => (mean * 3 + gap) / 4,
                None => gap,
            });
        }
        self.previous = Some(taken);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: Duration = Duration::from_millis(2);

    fn feed(pacer: &mut CommitPacer, start: Instant, every: Duration, batches: u32, size: usize) -> Instant {
        let mut t = start;
        for _ in 0..batches {
            pacer.record(t, size);
            t += every;
        }
        t
    }

    #[test]
    fn a_lone_operation_is_committed_at_once() {
        let pacer = CommitPacer::new(WAIT);
        assert_eq!(pacer.linger(Instant::now()), Duration::ZERO);
    }

    #[test]
    fn operations_far_apart_are_committed_at_once() {
        let mut pacer = CommitPacer::new(WAIT);
        let next = feed(&mut pacer, Instant::now(), Duration::from_millis(7), 20, 1);
        // The queue was never more than one deep: waiting would only add latency.
        assert_eq!(pacer.linger(next - Duration::from_millis(1)), Duration::ZERO);
    }

    #[test]
    fn a_steady_stream_lets_the_batch_fill() {
        let mut pacer = CommitPacer::new(WAIT);
        // 1,000 operations a second, one per batch: each commit holds one.
        let next = feed(&mut pacer, Instant::now(), Duration::from_millis(1), 20, 1);
        assert_eq!(pacer.linger(next), WAIT);
        // Batches of four every 3 ms are operations 0.75 ms apart: still worth it.
        let mut pacer = CommitPacer::new(WAIT);
        let next = feed(&mut pacer, Instant::now(), Duration::from_millis(3), 20, 4);
        assert_eq!(pacer.linger(next), WAIT);
    }

    #[test]
    fn the_wait_stops_once_the_load_goes() {
        let mut pacer = CommitPacer::new(WAIT);
        let next = feed(&mut pacer, Instant::now(), Duration::from_millis(1), 20, 1);
        // A long pause after the stream: the next operation is alone.
        assert_eq!(pacer.linger(next + Duration::from_millis(50)), Duration::ZERO);
        // And once arrivals thin out, the mean follows within a few batches.
        let next = feed(&mut pacer, next + Duration::from_millis(50), Duration::from_millis(6), 10, 1);
        assert_eq!(pacer.linger(next - Duration::from_millis(1)), Duration::ZERO);
    }
}
