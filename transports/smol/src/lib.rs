//! scepd on smol: the same [`ScepService`] as the tokio transport, served with
//! smol's executor and reactor, `smol-hyper` adapters and `futures-rustls`.
//!
//! Only the runtime glue lives here: the accept loop, the TLS acceptor, the
//! signal handling, the graceful shutdown, a TCP stream that tracks read
//! readiness (`stream.rs`), and the connection loop that answers HTTP/1.1
//! discovery GETs on [`scep_service::fast_path`] before handing the
//! connection to hyper (as the tokio transport does). Routing, limits, configuration
//! and reload are [`scep_service`]'s, so both transports answer identically
//! (the conformance suite in `tests/tests/conformance.rs` runs every scenario
//! against both).
//!
//! Entry point: [`run`], which blocks until SIGTERM or SIGINT.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod stream;

use std::io::Write as _;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_signal::{Signal, Signals};
use futures_lite::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, StreamExt as _, future};
use futures_rustls::TlsAcceptor;
use hyper_util::server::conn::auto;
use scep_service::fast_path::Http1Step;
use scep_service::mtls::ConnectionInfo;
use scep_service::tls::ReloadableTls;
use scep_service::{ScepService, ServiceState};
use smol::channel::{Receiver, Sender};
use smol::lock::Semaphore;
use smol::net::{TcpListener, TcpStream};
use smol::{Executor, Timer};
use smol_hyper::rt::{FuturesIo, SmolExecutor, SmolTimer};

use crate::stream::Stream;

/// Largest HTTP/1 read buffer (request line + headers) per connection.
const MAX_H1_BUF: usize = 64 * 1024;
/// Largest HTTP/2 header list per request.
const MAX_H2_HEADER_LIST: u32 = 64 * 1024;

/// The executor every task runs on (smol-hyper's executor needs it behind an `Arc`).
type Exec = Arc<Executor<'static>>;
/// The hyper connection builder on smol.
type Builder = auto::Builder<SmolExecutor<Exec>>;

/// Serves `state` on smol with `threads` executor threads (the calling thread
/// is one of them) until SIGTERM or SIGINT, then lets in-flight requests
/// finish within `server.shutdown_grace` and returns. SIGHUP reloads the
/// configuration ([`ServiceState::reload`]) off the executor threads.
///
/// Prints `scepd listening on http://ADDR` (or `https://`) on stdout once
/// the socket is bound, like the tokio transport.
///
/// # Errors
/// When the TLS configuration, the signal handlers or the listening socket
/// cannot be set up (a message naming what failed).
pub fn run(state: Arc<ServiceState>, threads: NonZeroUsize) -> Result<(), String> {
    let ex: Exec = Arc::new(Executor::new());
    // Closed (never sent on) when the server has stopped: releases the worker threads.
    let (done_tx, done_rx) = smol::channel::bounded::<()>(1);
    std::thread::scope(|scope| {
        for i in 1..threads.get() {
            let ex = ex.clone();
            let done = done_rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("scepd-smol-{i}"))
                .spawn_scoped(scope, move || smol::block_on(ex.run(done.recv())));
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "cannot start an executor thread; serving with fewer");
            }
        }
        let result = smol::block_on(ex.run(serve(ex.clone(), state)));
        done_tx.close();
        result
    })
}

/// What the accept loop waits for.
enum Event {
    Accepted(std::io::Result<(TcpStream, SocketAddr)>),
    Stop,
}

async fn serve(ex: Exec, state: Arc<ServiceState>) -> Result<(), String> {
    let settings = state.settings().clone();
    let tls = ReloadableTls::new(&state).map_err(|e| e.to_string())?.map(Arc::new);
    let signals = Signals::new([Signal::Term, Signal::Int, Signal::Hup])
        .map_err(|e| format!("cannot watch SIGTERM/SIGINT/SIGHUP: {e}"))?;

    let listener =
        TcpListener::bind(settings.listen).await.map_err(|e| format!("cannot listen on {}: {e}", settings.listen))?;
    let addr = listener.local_addr().map_err(|e| format!("cannot read the listen address: {e}"))?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    println!("scepd listening on {scheme}://{addr}");
    let _ = std::io::stdout().flush();
    let profiles = state.profiles();
    tracing::info!(%addr, scheme, runtime = "smol", profiles = %profiles.names().join(","), default = profiles.default_name(), "listening");
    drop(profiles);

    // Closed by the signal task on SIGTERM/SIGINT: every holder of a receiver wakes.
    let (stop_tx, stop_rx) = smol::channel::bounded::<()>(1);
    ex.spawn(watch_signals(signals, state.clone(), tls.clone(), stop_tx)).detach();

    let service = ScepService::new(state.clone(), Some(Arc::new(SmolTimer::new())));
    let mut builder: Builder = auto::Builder::new(SmolExecutor::new(ex.clone()));
    builder
        .http1()
        .writev(false)
        .timer(SmolTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .max_buf_size(MAX_H1_BUF);
    builder
        .http2()
        .timer(SmolTimer::new())
        .max_concurrent_streams(settings.h2_max_concurrent_streams)
        .max_header_list_size(MAX_H2_HEADER_LIST);

    let slots = Arc::new(Semaphore::new(settings.max_connections));
    loop {
        // Wait for a connection slot first: beyond the limit, clients queue in the backlog.
        let permit = future::or(async { Some(slots.acquire_arc().await) }, async {
            let _ = stop_rx.recv().await;
            None
        })
        .await;
        let Some(permit) = permit else { break };
        let event = future::or(async { Event::Accepted(listener.accept().await) }, async {
            let _ = stop_rx.recv().await;
            Event::Stop
        })
        .await;
        let (stream, peer) = match event {
            Event::Stop => break,
            Event::Accepted(Ok(c)) => c,
            Event::Accepted(Err(e)) => {
                // E.g. EMFILE: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                Timer::after(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let stream = Stream::new(stream);
        let builder = builder.clone();
        let service = service.clone();
        let stop = stop_rx.clone();
        // Each connection takes the TLS configuration current when it arrives (SIGHUP swaps it).
        let acceptor = tls.as_ref().map(|t| TlsAcceptor::from(t.current()));
        let header_timeout = settings.header_read_timeout;
        ex.spawn(async move {
            let _permit = permit;
            match acceptor {
                None => {
                    let service = service.with_connection(ConnectionInfo::plain(peer));
                    serve_connection(builder, stream, service, stop, header_timeout, true).await;
                }
                Some(acceptor) => match timeout(header_timeout, acceptor.accept(stream)).await {
                    Some(Ok(tls_stream)) => {
                        let info = ConnectionInfo::tls(peer, tls_stream.get_ref().1);
                        // ALPN chose HTTP/2: hyper from the first byte.
                        let http1 = tls_stream.get_ref().1.alpn_protocol() != Some(b"h2".as_slice());
                        let service = service.with_connection(info);
                        serve_connection(builder, tls_stream, service, stop, header_timeout, http1).await;
                    }
                    Some(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    None => tracing::debug!(%peer, "TLS handshake timed out"),
                },
            }
        })
        .detach();
    }

    drop(listener);
    let grace = settings.shutdown_grace;
    let in_flight = settings.max_connections.saturating_sub(slots.available_permits());
    tracing::info!(in_flight, grace_secs = grace.as_secs(), "shutting down");
    // Drained when every connection slot is free again.
    let drained = timeout(grace, async {
        let mut held = Vec::with_capacity(settings.max_connections);
        for _ in 0..settings.max_connections {
            held.push(slots.acquire().await);
        }
    })
    .await;
    if drained.is_none() {
        let aborted = settings.max_connections.saturating_sub(slots.available_permits());
        // The remaining connection tasks are dropped with the executor.
        tracing::warn!(aborted, "shutdown grace elapsed; closing remaining connections");
    }
    state.flush_audit().await;
    tracing::info!("stopped");
    Ok(())
}

/// Serves one connection: HTTP/1.1 discovery GETs on the fast path
/// ([`answer_fast`]), then, from the first request it does not answer (and
/// from the start when `http1` is false), hyper (HTTP/1.1 or h2, auto-detected).
async fn serve_connection<I>(
    builder: Builder,
    mut io: I,
    service: ScepService,
    stop: Receiver<()>,
    header_timeout: Duration,
    http1: bool,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let unanswered = if http1 {
        match answer_fast(&mut io, &service, &stop, header_timeout).await {
            Some(rest) => rest,
            None => return,
        }
    } else {
        Vec::new()
    };
    serve_hyper(builder, Prefixed::new(unanswered, io), service, stop).await;
}

/// First read of a connection's buffer; it grows for larger heads up to
/// [`scep_service::fast_path::MAX_HEAD`].
const FAST_READ_BUF: usize = 4096;

/// What ended one wait of [`answer_fast`].
enum Wake {
    Read(std::io::Result<usize>),
    Timer,
    Stop,
}

/// Answers the connection's HTTP/1.1 discovery GETs
/// ([`ScepService::answer_http1`]) until a request needs hyper: then returns
/// the bytes not answered yet (hyper serves them and the rest). `None`: the
/// connection is over (closed by the client, an I/O error, no complete request
/// head within `header_timeout` as hyper's `header_read_timeout`, or shutdown
/// while idle). The tokio transport's loop is the same.
async fn answer_fast<I>(
    io: &mut I,
    service: &ScepService,
    stop: &Receiver<()>,
    header_timeout: Duration,
) -> Option<Vec<u8>>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = vec![0; FAST_READ_BUF];
    let mut filled = 0;
    let mut out = Vec::new();
    let stopped = stop.recv();
    futures_lite::pin!(stopped);
    // One timer per connection, re-armed lazily: a request only moves the
    // deadline, and the timer, when it fires early, is set to the new one.
    let mut deadline = Instant::now() + header_timeout;
    let mut timer = Timer::at(deadline);
    loop {
        let mut answered = 0;
        loop {
            match service.answer_http1(&buf[answered..filled], &mut out) {
                Http1Step::Answered(n) => answered += n,
                Http1Step::Incomplete => break,
                Http1Step::HandOff => {
                    if !out.is_empty() {
                        write_all(io, &out).await.ok()?;
                    }
                    buf.truncate(filled);
                    buf.drain(..answered);
                    return Some(buf);
                }
            }
        }
        if answered > 0 {
            buf.copy_within(answered..filled, 0);
            filled -= answered;
            write_all(io, &out).await.ok()?;
            out.clear();
            deadline = Instant::now() + header_timeout;
        }
        if filled == buf.len() {
            buf.resize(filled + FAST_READ_BUF, 0);
        }
        let idle = filled == 0;
        let wake = future::or(async { Wake::Read(io.read(&mut buf[filled..]).await) }, async {
            future::or(
                async {
                    (&mut timer).await;
                    Wake::Timer
                },
                async {
                    if idle {
                        let _ = stopped.as_mut().await;
                        Wake::Stop
                    } else {
                        future::pending().await
                    }
                },
            )
            .await
        })
        .await;
        match wake {
            Wake::Read(Ok(0) | Err(_)) | Wake::Stop => return None,
            Wake::Read(Ok(n)) => filled += n,
            Wake::Timer => {
                if Instant::now() >= deadline {
                    tracing::debug!("no complete request head within header_read_timeout: closing");
                    return None;
                }
                timer.set_at(deadline);
            }
        }
    }
}

async fn write_all<I: AsyncWrite + Unpin>(io: &mut I, bytes: &[u8]) -> std::io::Result<()> {
    io.write_all(bytes).await?;
    io.flush().await
}

/// Serves the rest of a connection with hyper (HTTP/1.1 or h2, auto-detected);
/// on shutdown, stops taking new requests on it and lets the current ones finish.
async fn serve_hyper<I>(builder: Builder, io: I, service: ScepService, stop: Receiver<()>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = builder.serve_connection(FuturesIo::new(io), service);
    futures_lite::pin!(conn);
    let first = future::or(async { Some(conn.as_mut().await) }, async {
        let _ = stop.recv().await;
        None
    })
    .await;
    match first {
        Some(Err(e)) => tracing::debug!(error = %e, "connection ended with an error"),
        Some(Ok(())) => {}
        None => {
            conn.as_mut().graceful_shutdown();
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error during shutdown");
            }
        }
    }
}

/// A connection whose first bytes were already read by [`answer_fast`]:
/// reads return those first, then the stream's.
struct Prefixed<I> {
    prefix: Vec<u8>,
    read: usize,
    inner: I,
}

impl<I> Prefixed<I> {
    fn new(prefix: Vec<u8>, inner: I) -> Self {
        Self { prefix, read: 0, inner }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Prefixed<I> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        if this.read < this.prefix.len() {
            let rest = &this.prefix[this.read..];
            let n = rest.len().min(buf.len());
            buf[..n].copy_from_slice(&rest[..n]);
            this.read += n;
            if this.read == this.prefix.len() {
                this.prefix = Vec::new();
                this.read = 0;
            }
            return Poll::Ready(Ok(n));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Prefixed<I> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

/// SIGHUP: [`ServiceState::reload_on_hangup`], off the executor threads.
/// SIGTERM/SIGINT: close `stop`, which starts the shutdown.
async fn watch_signals(
    mut signals: Signals,
    state: Arc<ServiceState>,
    tls: Option<Arc<ReloadableTls>>,
    stop: Sender<()>,
) {
    while let Some(signal) = signals.next().await {
        match signal {
            Ok(Signal::Hup) => {
                let state = state.clone();
                let tls = tls.clone();
                smol::unblock(move || state.reload_on_hangup(tls.as_deref())).await;
            }
            Ok(other) => {
                tracing::info!(signal = ?other, "stopping");
                stop.close();
                return;
            }
            Err(e) => tracing::warn!(error = %e, "signal stream error"),
        }
    }
}

/// `fut`'s output, or `None` once `limit` has elapsed.
async fn timeout<F: Future>(limit: Duration, fut: F) -> Option<F::Output> {
    future::or(async { Some(fut.await) }, async {
        Timer::after(limit).await;
        None
    })
    .await
}

/// Executor threads for `--threads 0` / unset: one per available core.
pub fn default_threads() -> NonZeroUsize {
    std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeout_returns_the_output_or_none() {
        smol::block_on(async {
            assert_eq!(timeout(Duration::from_secs(5), async { 7 }).await, Some(7));
            let never = future::pending::<()>();
            assert_eq!(timeout(Duration::from_millis(20), never).await, None);
        });
    }

    #[test]
    fn default_threads_is_at_least_one() {
        assert!(default_threads().get() >= 1);
    }
}
