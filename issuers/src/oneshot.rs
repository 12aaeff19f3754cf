//! A one-value channel whose receiver is a future on any executor.
//!
//! The writer threads of scepd's SQLite stores (the local CA's certificate
//! store, the service's audit log) answer each request through one of these,
//! so an async caller waits for a commit without holding a thread, whatever
//! runtime drives it (issuers and the service are runtime-agnostic).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

struct Slot<T> {
    value: Option<T>,
    waker: Option<Waker>,
    closed: bool,
}

/// The sending half: [`Sender::send`] once, or drop it to close the channel.
pub struct Sender<T>(Arc<Mutex<Slot<T>>>);

/// The receiving half: resolves to the value, or to `None` when the sender
/// was dropped without sending.
pub struct Receiver<T>(Arc<Mutex<Slot<T>>>);

impl<T> std::fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("oneshot::Sender")
    }
}

impl<T> std::fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("oneshot::Receiver")
    }
}

/// A new channel.
pub fn channel<T>() -> (Sender<T>, Receiver<T>) {
    let slot = Arc::new(Mutex::new(Slot { value: None, waker: None, closed: false }));
    (Sender(slot.clone()), Receiver(slot))
}

impl<T> Sender<T> {
    /// Delivers `value` and wakes the receiver. A receiver already dropped
    /// simply never reads it.
    pub fn send(self, value: T) {
        let waker = {
            let mut s = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            s.value = Some(value);
            s.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
        // Drop runs next and marks the slot closed; the value is already there.
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let waker = {
            let mut s = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            s.closed = true;
            s.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl<T> Future for Receiver<T> {
    /// `None` when the sender went away without a value.
    type Output = Option<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let mut s = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(v) = s.value.take() {
            return Poll::Ready(Some(v));
        }
        if s.closed {
            return Poll::Ready(None);
        }
        s.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future::block_on;

    #[test]
    fn delivers_across_threads_and_reports_a_dropped_sender() {
        let (tx, rx) = channel();
        let t = std::thread::spawn(move || tx.send(42));
        assert_eq!(block_on(rx), Some(42));
        t.join().unwrap();
        let (tx, rx) = channel::<u8>();
        drop(tx);
        assert_eq!(block_on(rx), None);
        // Sending to a dropped receiver is not an error.
        let (tx, rx) = channel();
        drop(rx);
        tx.send(1);
    }
}
