//! scepd on smol: the same [`ScepService`] as the tokio transport, served with
//! smol's executor and reactor, `smol-hyper` adapters and `futures-rustls`.
//!
//! Only the runtime glue lives here: the accept loop, the TLS acceptor, the
//! signal handling, the graceful shutdown, a TCP stream that tracks read
//! readiness (`stream.rs`), and the connection loop that answers HTTP/1.1
//! discovery GETs on [`scep_service::http::fast_path`] before handing the
//! connection to hyper (as the tokio transport does: HTTP/1 only after a
//! fast-path answer or ALPN `http/1.1`, HTTP/2 only after ALPN `h2`). Routing, limits, configuration
//! and reload are [`scep_service`]'s, so both transports answer identically
//! (the conformance suite in `tests/tests/conformance.rs` runs every scenario
//! against both).
//!
//! The limits on hostile clients are the tokio transport's, in the same
//! places: the client's share ([`ClientLimits`]) and `max_connections` at
//! accept, before TLS (refused connections are closed and counted); the TLS
//! handshake, a fast-path request head, and a hyper connection with no request
//! in the service or sending its response, each within `header_read_timeout`; the write timeout in
//! the TCP stream (`stream.rs`); hyper's HTTP/1 header timer and HTTP/2
//! keep-alive PINGs.
//!
//! Entry point: [`run`], which blocks until SIGTERM or SIGINT.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod stream;

use std::io::Write as _;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_signal::{Signal, Signals};
use futures_lite::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, StreamExt as _, future};
use futures_rustls::TlsAcceptor;
use hyper_util::server::conn::auto;
use scep_service::http::fast_path::{FastConnection, Next, Prefixed, Protocol};
use scep_service::state::connections::{
    ClientLimits, Closed, ConnectionCounters, Refusal, RequestActivity, TrackedService,
};
use scep_service::tls::ConnectionInfo;
use scep_service::tls::ReloadableTls;
use scep_service::{DetachedRequests, ScepService, ServiceState};
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
/// How long a connection closed for having no request may take to close
/// gracefully (GOAWAY flushed, PING acknowledged) before it is dropped.
const GOAWAY_GRACE: Duration = Duration::from_secs(1);
/// How often shutdown looks whether the requests still being decided are done.
const DETACHED_POLL: Duration = Duration::from_millis(10);

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
    // One write: a reader that stops after the first line cannot make a later line fail.
    let mut stdout = std::io::stdout().lock();
    let _ = stdout
        .write_all(scep_service::banner::listening(scheme, addr, &state).as_bytes())
        .and_then(|()| stdout.flush());
    drop(stdout);
    let profiles = state.profiles();
    tracing::info!(%addr, scheme, runtime = "smol", profiles = %profiles.names().join(","), default = profiles.default_name(), "listening");
    drop(profiles);

    // Closed by the signal task on SIGTERM/SIGINT: every holder of a receiver wakes.
    let (stop_tx, stop_rx) = smol::channel::bounded::<()>(1);
    ex.spawn(watch_signals(signals, state.clone(), tls.clone(), stop_tx)).detach();

    // A request outlives its connection (ScepService::detaching_with), up to
    // as many at once as there may be connections.
    let detached = DetachedRequests::new(settings.max_connections);
    let service = ScepService::new(state.clone(), Some(Arc::new(SmolTimer::new())))
        .detaching_with(Arc::new(SmolExecutor::new(ex.clone())), detached.clone());
    let mut builder: Builder = auto::Builder::new(SmolExecutor::new(ex.clone()));
    builder
        .http1()
        .writev(false)
        // RFC 9112 §9.6: a client may close its sending side after a request
        // and still read the answer (hyper's default takes that EOF as an abort).
        .half_close(true)
        .timer(SmolTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .max_buf_size(MAX_H1_BUF);
    builder
        .http2()
        .timer(SmolTimer::new())
        .max_concurrent_streams(settings.h2_max_concurrent_streams)
        .max_header_list_size(MAX_H2_HEADER_LIST)
        .keep_alive_interval(settings.h2_keep_alive_interval)
        .keep_alive_timeout(settings.h2_keep_alive_timeout);

    let slots = Arc::new(Semaphore::new(settings.max_connections));
    let clients = ClientLimits::new(settings.max_connections_per_client, settings.max_connections_per_network);
    let rules = Rules { header_timeout: settings.header_read_timeout, counters: state.metrics().connections().clone() };
    loop {
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
        // The client's share first (so a client over it is counted as such
        // even when the server is full), then the global limit. Refused: closed
        // now, before any TLS work, so nobody waits in the listen backlog.
        let client_permit = match clients.admit(peer.ip()) {
            Ok(p) => p,
            Err(why) => {
                refuse(&rules.counters, why, peer);
                continue;
            }
        };
        let Some(permit) = slots.try_acquire_arc() else {
            refuse(&rules.counters, Refusal::Global, peer);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let stream = Stream::new(stream, settings.write_timeout, rules.counters.clone());
        let builder = builder.clone();
        let service = service.clone();
        let stop = stop_rx.clone();
        // Each connection takes the TLS configuration current when it arrives (SIGHUP swaps it).
        let acceptor = tls.as_ref().map(|t| TlsAcceptor::from(t.current()));
        let rules = rules.clone();
        ex.spawn(async move {
            let _permits = (permit, client_permit);
            match acceptor {
                None => {
                    let service = service.with_connection(ConnectionInfo::plain(peer));
                    serve_connection(builder, stream, service, stop, &rules, Protocol::Detect).await;
                }
                Some(acceptor) => match timeout(rules.header_timeout, acceptor.accept(stream)).await {
                    Some(Ok(tls_stream)) => {
                        let info = ConnectionInfo::tls(peer, tls_stream.get_ref().1);
                        // ALPN decides: h2 is hyper's from the first byte, http/1.1 never HTTP/2.
                        let protocol = Protocol::from_alpn(tls_stream.get_ref().1.alpn_protocol());
                        let service = service.with_connection(info);
                        serve_connection(builder, tls_stream, service, stop, &rules, protocol).await;
                    }
                    Some(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    None => {
                        rules.counters.closed(Closed::TlsHandshakeTimeout);
                        tracing::debug!(%peer, "TLS handshake timed out");
                    }
                },
            }
        })
        .detach();
    }

    drop(listener);
    let grace = settings.shutdown_grace;
    let shutdown_started = Instant::now();
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
    // Requests whose client left are still being decided: their audit
    // events must be written before the last flush.
    let left = grace.saturating_sub(shutdown_started.elapsed());
    let decided = timeout(left, async {
        while detached.running() > 0 {
            Timer::after(DETACHED_POLL).await;
        }
    })
    .await;
    if decided.is_none() {
        tracing::warn!(running = detached.running(), "shutdown grace elapsed with requests still being decided");
    }
    state.flush_audit().await;
    tracing::info!("stopped");
    Ok(())
}

/// The per-connection timeouts and where their closes are counted.
#[derive(Clone)]
struct Rules {
    /// `header_read_timeout`: a request head on the fast path, the TLS
    /// handshake, and the longest a hyper connection may go without a request.
    header_timeout: Duration,
    counters: Arc<ConnectionCounters>,
}

/// Counts and logs a connection refused at accept (it is closed when dropped).
fn refuse(counters: &ConnectionCounters, why: Refusal, peer: SocketAddr) {
    counters.refused(why);
    // debug: an attack must not flood the log; the metric is the signal.
    tracing::debug!(%peer, reason = why.label(), "connection refused at accept");
}

/// Serves one connection: HTTP/1.1 discovery GETs on the fast path
/// ([`answer_fast`]) unless `protocol` is HTTP/2, then, from the first
/// request it does not answer, hyper with the protocol known by then
/// ([`FastConnection::protocol_after`]: auto-detected only when nothing is).
async fn serve_connection<I>(
    builder: Builder,
    mut io: I,
    service: ScepService,
    stop: Receiver<()>,
    rules: &Rules,
    mut protocol: Protocol,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut unanswered = Vec::new();
    if protocol.fast_path() {
        let Some(conn) = answer_fast(&mut io, &service, &stop, rules).await else { return };
        protocol = conn.protocol_after(protocol);
        unanswered = conn.into_unanswered();
    }
    let builder = match protocol {
        Protocol::Detect => builder,
        Protocol::Http1 => builder.http1_only(),
        Protocol::Http2 => builder.http2_only(),
    };
    serve_hyper(builder, Prefixed::new(unanswered, FuturesIo::new(io)), service, stop, rules).await;
}

/// What ended one wait of [`answer_fast`].
enum Wake {
    Read(std::io::Result<usize>),
    Timer,
    Stop,
}

/// Answers written between two yields to the executor: smol has no
/// cooperative budget, and a client that keeps pipelining would otherwise
/// hold a thread.
const WRITES_PER_YIELD: u32 = 16;

/// Drives a [`FastConnection`] over `io` until a request needs hyper: then
/// returns it, with the bytes not answered yet (hyper serves them and the rest).
/// `None`: the connection is over (closed by the client, an I/O error, no
/// complete request head within `header_timeout` as hyper's
/// `header_read_timeout`, or shutdown while idle). At shutdown with a request
/// under way, hyper gets it, finishes it and closes the connection. The tokio
/// transport's loop is the same, without the yields.
async fn answer_fast<I>(io: &mut I, service: &ScepService, stop: &Receiver<()>, rules: &Rules) -> Option<FastConnection>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let header_timeout = rules.header_timeout;
    let mut conn = FastConnection::new();
    // `stop` is closed at shutdown: `recv` then completes at once, every time.
    let stopped = stop.recv();
    futures_lite::pin!(stopped);
    // One timer per connection, re-armed lazily: a request only moves the
    // deadline, and the timer, when it fires early, is set to the new one.
    let mut deadline = Instant::now() + header_timeout;
    let mut timer = Timer::at(deadline);
    let mut writes = 0u32;
    loop {
        match conn.answer(service) {
            Next::Write => {
                write_all(io, conn.output()).await.ok()?;
                conn.written();
                deadline = Instant::now() + header_timeout;
                writes = writes.wrapping_add(1);
                if writes.is_multiple_of(WRITES_PER_YIELD) {
                    future::yield_now().await;
                }
                continue;
            }
            Next::HandOff => {
                if !conn.output().is_empty() {
                    write_all(io, conn.output()).await.ok()?;
                    conn.written();
                }
                return Some(conn);
            }
            Next::Close => {
                rules.counters.closed(Closed::MalformedRequest);
                if write_all(io, conn.output()).await.is_ok() {
                    let _ = io.close().await;
                }
                return None;
            }
            Next::Read => {}
        }
        let read = async { Wake::Read(io.read(conn.read_buf()).await) };
        let fired = async {
            (&mut timer).await;
            Wake::Timer
        };
        let stopping = async {
            let _ = stopped.as_mut().await;
            Wake::Stop
        };
        match future::or(read, future::or(fired, stopping)).await {
            Wake::Read(Ok(0) | Err(_)) => return None,
            Wake::Read(Ok(n)) => conn.filled(n),
            Wake::Timer => {
                if Instant::now() >= deadline {
                    rules.counters.closed(Closed::RequestTimeout);
                    tracing::debug!("no complete request head within header_read_timeout: closing");
                    return None;
                }
                timer.set_at(deadline);
            }
            Wake::Stop => return if conn.is_idle() { None } else { Some(conn) },
        }
    }
}

async fn write_all<I: AsyncWrite + Unpin>(io: &mut I, bytes: &[u8]) -> std::io::Result<()> {
    io.write_all(bytes).await?;
    io.flush().await
}

/// What ended one wait of [`serve_hyper`].
enum HyperWake<T> {
    Done(T),
    Timer,
    Stop,
}

/// Serves the rest of a connection with hyper (HTTP/1.1 or h2, as `builder` allows);
/// on shutdown, stops taking new requests on it and lets the current ones finish.
///
/// hyper has no deadline for a connection on which no request arrives (HTTP/2
/// before or between requests, or its protocol detection): when no request
/// has been inside the service or sending its response ([`TrackedService`])
/// for `header_read_timeout`, the connection is
/// shut down gracefully (GOAWAY on HTTP/2), and dropped if that takes longer
/// than [`GOAWAY_GRACE`] (hyper's HTTP/2 graceful close waits for a PING
/// acknowledgement a hostile peer never sends). The tokio transport does the same.
async fn serve_hyper<I>(builder: Builder, io: I, service: ScepService, stop: Receiver<()>, rules: &Rules)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let idle = rules.header_timeout;
    let activity = RequestActivity::new();
    let conn = builder.serve_connection(io, TrackedService::new(service, activity.clone()));
    futures_lite::pin!(conn);
    let mut timer = Timer::after(idle);
    let mut stopping = false;
    let mut closing = false;
    loop {
        // The connection first (`or` polls its first future first): bytes already
        // read (a request handed over at shutdown) get it past protocol detection
        // before the shutdown is seen.
        let done = async { HyperWake::Done(conn.as_mut().await) };
        let fired = async {
            (&mut timer).await;
            HyperWake::Timer
        };
        let stopped = async {
            if stopping {
                future::pending::<()>().await;
            }
            let _ = stop.recv().await;
            HyperWake::Stop
        };
        match future::or(done, future::or(fired, stopped)).await {
            HyperWake::Done(r) => {
                if let Err(e) = r {
                    if e.downcast_ref::<hyper::Error>().is_some_and(hyper::Error::is_timeout) {
                        rules.counters.closed(Closed::HyperTimeout);
                    }
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            HyperWake::Stop => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
            HyperWake::Timer => {
                if closing {
                    tracing::debug!("graceful close after the request deadline took too long: dropping");
                    return;
                }
                // Re-armed lazily: requests only move the deadline.
                match activity.deadline(idle) {
                    Some(deadline) if Instant::now() >= deadline => {
                        rules.counters.closed(Closed::RequestTimeout);
                        tracing::debug!("no request within header_read_timeout: closing");
                        closing = true;
                        conn.as_mut().graceful_shutdown();
                        timer.set_after(GOAWAY_GRACE.min(idle));
                    }
                    Some(deadline) => timer.set_at(deadline),
                    None => timer.set_after(idle),
                }
            }
        }
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
