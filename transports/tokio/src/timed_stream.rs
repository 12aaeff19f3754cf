//! The write timeout: a stream whose writes fail once one has made no
//! progress for `write_timeout`.
//!
//! A client that pipelines requests and never reads fills its receive buffer
//! and the server's send buffer; every later write then waits for the client
//! forever, holding the connection's slot. [`TimedStream`] sits under TLS and
//! under both the fast path and hyper, so one rule covers every write of the
//! connection: the timer is armed when a write first returns `Pending` and
//! disarmed by the next write that is accepted; when it fires, the write fails
//! with [`std::io::ErrorKind::TimedOut`] and the connection ends (counted as
//! `scepd_connections_closed_total{reason="write_timeout"}`). A slow reader
//! that still takes bytes is not cut off by this rule.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use scep_service::state::connections::{Closed, ConnectionCounters};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// A stream with a write timeout (see the module doc).
pub(crate) struct TimedStream<I> {
    inner: I,
    write_timeout: Duration,
    /// Allocated at the first write that waits, then re-armed.
    timer: Option<Pin<Box<Sleep>>>,
    /// A write is waiting and `timer` runs for it.
    armed: bool,
    counters: Arc<ConnectionCounters>,
}

impl<I> TimedStream<I> {
    /// `inner` with writes bounded by `write_timeout`; a timeout is counted in `counters`.
    pub(crate) fn new(inner: I, write_timeout: Duration, counters: Arc<ConnectionCounters>) -> Self {
        Self { inner, write_timeout, timer: None, armed: false, counters }
    }

    /// After the inner write returned `pending`: arms the timer if this is the
    /// first wait, and fails once it has fired.
    fn wait<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let deadline = Instant::now() + self.write_timeout;
        let timer = match &mut self.timer {
            Some(timer) => {
                if !self.armed {
                    timer.as_mut().reset(deadline);
                }
                timer
            }
            None => self.timer.insert(Box::pin(tokio::time::sleep_until(deadline))),
        };
        self.armed = true;
        if timer.as_mut().poll(cx).is_ready() {
            self.armed = false;
            self.counters.closed(Closed::WriteTimeout);
            tracing::debug!("a write made no progress within write_timeout: closing");
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "write_timeout: the client does not read",
            )));
        }
        Poll::Pending
    }

    fn done<T>(&mut self, result: io::Result<T>) -> Poll<io::Result<T>> {
        self.armed = false;
        Poll::Ready(result)
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for TimedStream<I> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for TimedStream<I> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Pending => this.wait(cx),
            Poll::Ready(r) => this.done(r),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_write_vectored(cx, bufs) {
            Poll::Pending => this.wait(cx),
            Poll::Ready(r) => this.done(r),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Pending => this.wait(cx),
            Poll::Ready(r) => this.done(r),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_shutdown(cx) {
            Poll::Pending => this.wait(cx),
            Poll::Ready(r) => this.done(r),
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    async fn pair(write_timeout: Duration) -> (TimedStream<tokio::net::TcpStream>, tokio::net::TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (peer, accepted) = tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
        let counters = Arc::new(ConnectionCounters::default());
        (TimedStream::new(accepted.unwrap().0, write_timeout, counters), peer.unwrap())
    }

    #[tokio::test]
    async fn a_peer_that_never_reads_fails_the_write_after_the_timeout() {
        let (mut ours, _peer) = pair(Duration::from_millis(300)).await;
        let chunk = vec![0u8; 64 * 1024];
        let started = std::time::Instant::now();
        let outcome = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                if let Err(e) = ours.write_all(&chunk).await {
                    return e;
                }
            }
        })
        .await
        .expect("the write timeout must end the writes");
        assert_eq!(outcome.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert_eq!(ours.counters.closed_total(Closed::WriteTimeout), 1);
    }

    #[tokio::test]
    async fn a_peer_that_reads_keeps_the_connection() {
        let (mut ours, mut peer) = pair(Duration::from_secs(2)).await;
        let reader = tokio::spawn(async move {
            let mut sink = vec![0u8; 64 * 1024];
            let mut total = 0usize;
            // Reads slower than the writer, with pauses shorter than the timeout.
            while let Ok(n) = peer.read(&mut sink).await {
                if n == 0 {
                    break;
                }
                total += n;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            total
        });
        let chunk = vec![1u8; 256 * 1024];
        for _ in 0..16 {
            ours.write_all(&chunk).await.expect("a reading peer is never timed out");
        }
        ours.shutdown().await.unwrap();
        drop(ours);
        assert_eq!(reader.await.unwrap(), 16 * 256 * 1024);
    }
}
