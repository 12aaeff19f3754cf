//! A TCP stream for the smol transport that does not ask the kernel for bytes
//! it knows are not there yet.
//!
//! `smol::net::TcpStream` reads first and waits for readiness only when the
//! read fails with `WouldBlock`, on every poll. hyper polls a keep-alive
//! connection's read side after each response, and again whenever the
//! connection task wakes for another reason, so most of those reads fail:
//! about three `recvfrom` calls per request where one carries data.
//!
//! [`Stream`] keeps what the last read said. A read that returned fewer bytes
//! than asked for emptied the receive buffer, so the next read first waits for
//! the reactor to report the socket readable, as tokio's `TcpStream` also
//! skips that read. Unlike tokio's edge-triggered readiness, async-io re-arms
//! interest with one `epoll_ctl` per wait; re-arming a socket that is already
//! readable reports it at once, so no data is ever left waiting. Writes: try,
//! then wait for writability on `WouldBlock`.
//!
//! Writes have a timeout: a client that pipelines requests and never reads
//! would otherwise hold its connection forever once the socket buffers are
//! full. The timer is armed when a write first has to wait for writability and
//! disarmed by the next write the socket accepts; when it fires, the write
//! fails with [`io::ErrorKind::TimedOut`] and the connection ends (counted as
//! `scepd_connections_closed_total{reason="write_timeout"}`). The stream sits
//! under TLS, the fast path and hyper alike, so every write is covered.

use std::io::{self, Read as _, Write as _};
use std::net::Shutdown;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use futures_lite::{AsyncRead, AsyncWrite, FutureExt as _};
use scep_service::state::connections::{Closed, ConnectionCounters};
use smol::{Async, Timer};

/// An accepted TCP connection, read with readiness tracking (see the module doc).
pub(crate) struct Stream {
    io: Arc<Async<std::net::TcpStream>>,
    /// The last read emptied the receive buffer: wait for readiness before the next.
    drained: bool,
    write_timeout: Duration,
    /// Runs while a write waits for writability (`armed`).
    write_timer: Timer,
    armed: bool,
    counters: Arc<ConnectionCounters>,
}

impl Stream {
    /// Takes over an accepted connection; a write that makes no progress for
    /// `write_timeout` fails, and is counted in `counters`.
    pub(crate) fn new(
        stream: smol::net::TcpStream,
        write_timeout: Duration,
        counters: Arc<ConnectionCounters>,
    ) -> Self {
        Self { io: stream.into(), drained: false, write_timeout, write_timer: Timer::never(), armed: false, counters }
    }

    /// Waits for writability, within the write timeout.
    fn poll_writable(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.io.poll_writable(cx)?.is_ready() {
            return Poll::Ready(Ok(()));
        }
        if !self.armed {
            self.write_timer.set_after(self.write_timeout);
            self.armed = true;
        }
        if self.write_timer.poll(cx).is_ready() {
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
}

impl AsyncRead for Stream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        loop {
            if self.drained {
                ready!(self.io.poll_readable(cx))?;
                self.drained = false;
            }
            match self.io.get_ref().read(buf) {
                Ok(n) => {
                    // Short (or end of stream): nothing more is buffered right now.
                    self.drained = n < buf.len();
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.drained = true,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        loop {
            match self.io.get_ref().write(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => ready!(self.poll_writable(cx))?,
                result => {
                    self.armed = false;
                    return Poll::Ready(result);
                }
            }
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        loop {
            match self.io.get_ref().write_vectored(bufs) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => ready!(self.poll_writable(cx))?,
                result => {
                    self.armed = false;
                    return Poll::Ready(result);
                }
            }
        }
    }

    /// TCP has no user-space buffer to flush.
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.io.get_ref().shutdown(Shutdown::Write))
    }
}

#[cfg(test)]
mod tests {
    use futures_lite::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    /// A pair of connected streams over loopback: (ours, the peer's).
    async fn pair() -> (Stream, smol::net::TcpStream) {
        let listener = smol::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (peer, accepted) = futures_lite::future::zip(smol::net::TcpStream::connect(addr), listener.accept()).await;
        (Stream::new(accepted.unwrap().0, Duration::from_secs(30), Arc::default()), peer.unwrap())
    }

    #[test]
    fn a_peer_that_never_reads_fails_the_write_after_the_timeout() {
        smol::block_on(async {
            let (mut ours, _peer) = pair().await;
            ours.write_timeout = Duration::from_millis(300);
            let chunk = vec![0u8; 64 * 1024];
            let started = std::time::Instant::now();
            let ended = futures_lite::future::or(
                async {
                    loop {
                        if let Err(e) = ours.write_all(&chunk).await {
                            return Some(e);
                        }
                    }
                },
                async {
                    Timer::after(Duration::from_secs(30)).await;
                    None
                },
            )
            .await
            .expect("the write timeout must end the writes");
            assert_eq!(ended.kind(), io::ErrorKind::TimedOut);
            assert!(started.elapsed() >= Duration::from_millis(300));
            assert_eq!(ours.counters.closed_total(Closed::WriteTimeout), 1);
        });
    }

    #[test]
    fn a_peer_that_reads_keeps_the_connection() {
        smol::block_on(async {
            let (mut ours, mut peer) = pair().await;
            ours.write_timeout = Duration::from_secs(2);
            let reader = smol::spawn(async move {
                let mut sink = vec![0u8; 64 * 1024];
                let mut total = 0usize;
                // Slower than the writer, with pauses shorter than the timeout.
                while let Ok(n) = peer.read(&mut sink).await {
                    if n == 0 {
                        break;
                    }
                    total += n;
                    Timer::after(Duration::from_millis(20)).await;
                }
                total
            });
            let chunk = vec![1u8; 256 * 1024];
            for _ in 0..16 {
                ours.write_all(&chunk).await.expect("a reading peer is never timed out");
            }
            ours.close().await.unwrap();
            drop(ours);
            assert_eq!(reader.await, 16 * 256 * 1024);
        });
    }

    #[test]
    fn data_arriving_after_a_short_read_is_read() {
        smol::block_on(async {
            let (mut ours, mut peer) = pair().await;
            let mut buf = [0u8; 64];
            peer.write_all(b"first").await.unwrap();
            assert_eq!(ours.read(&mut buf).await.unwrap(), 5);
            assert!(ours.drained, "a short read marks the buffer empty");
            // Sent while `ours` is not waiting: the readiness wait must still see it
            // (a lost wake-up would hang here, so it is bounded).
            peer.write_all(b"second").await.unwrap();
            Timer::after(Duration::from_millis(20)).await;
            let read = futures_lite::future::or(async { Some(ours.read(&mut buf).await.unwrap()) }, async {
                Timer::after(Duration::from_secs(10)).await;
                None
            });
            assert_eq!(read.await, Some(6), "the second read must be woken");
            assert_eq!(&buf[..6], b"second");
        });
    }

    #[test]
    fn a_full_read_leaves_the_rest_for_the_next_read() {
        smol::block_on(async {
            let (mut ours, mut peer) = pair().await;
            peer.write_all(b"0123456789").await.unwrap();
            Timer::after(Duration::from_millis(20)).await;
            let mut four = [0u8; 4];
            ours.read_exact(&mut four).await.unwrap();
            assert!(!ours.drained, "a full read may have left bytes behind");
            let mut rest = Vec::new();
            drop(peer);
            ours.read_to_end(&mut rest).await.unwrap();
            assert_eq!(rest, b"456789");
        });
    }

    #[test]
    fn writes_reach_the_peer_and_close_ends_the_stream() {
        smol::block_on(async {
            let (mut ours, mut peer) = pair().await;
            ours.write_all(b"reply").await.unwrap();
            ours.close().await.unwrap();
            let mut got = Vec::new();
            peer.read_to_end(&mut got).await.unwrap();
            assert_eq!(got, b"reply");
        });
    }
}
