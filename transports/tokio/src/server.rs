//! The tokio accept loop: TLS, HTTP/1.1 + h2, limits, signals, graceful shutdown.
//!
//! Each connection starts on the HTTP/1.1 discovery fast path
//! ([`scep_service::http::fast_path`]) and moves to hyper at the first request the
//! fast path does not answer (at once for TLS connections that chose h2).
//! hyper serves it with HTTP/1 only once the fast path has answered a request
//! or TLS ALPN chose `http/1.1`, with HTTP/2 only when ALPN chose `h2`, and
//! otherwise tells the two apart by the HTTP/2 preface
//! ([`Protocol`]).
//!
//! Limits on hostile clients, in the order a connection meets them:
//! - at accept, before TLS: the client's share
//!   ([`ClientLimits`]: `max_connections_per_client`, `max_connections_per_network`)
//!   and `max_connections`; over either, the connection is closed at once and
//!   counted (`scepd_connections_refused_total{reason}`), so a client over its
//!   share never makes the others wait in the listen backlog;
//! - the TLS handshake within `header_read_timeout`;
//! - every write: no progress for `write_timeout` closes ([`TimedStream`]);
//! - on the fast path, a complete request head within `header_read_timeout`;
//! - in hyper: HTTP/1 `header_read_timeout` and HTTP/2 keep-alive PINGs
//!   (`h2_keep_alive_interval`, `h2_keep_alive_timeout`), hyper's own timers;
//!   and ours, which hyper lacks: a connection with no request inside the
//!   service or sending its response for `header_read_timeout` (a partial
//!   HTTP/2 preface, a preface with nothing after it, a header block that
//!   never ends, an idle HTTP/2 connection) is shut down gracefully and
//!   dropped if that takes more than a second.

use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use scep_service::http::fast_path::{FastConnection, Next, Prefixed, Protocol};
use scep_service::state::connections::{
    ClientLimits, Closed, ConnectionCounters, Refusal, RequestActivity, TrackedService,
};
use scep_service::tls::ConnectionInfo;
use scep_service::tls::ReloadableTls;
use scep_service::{DetachedRequests, ScepService, ServiceState};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use crate::timed_stream::TimedStream;

/// Largest HTTP/1 read buffer (request line + headers) per connection.
const MAX_H1_BUF: usize = 64 * 1024;
/// Largest HTTP/2 header list per request.
const MAX_H2_HEADER_LIST: u32 = 64 * 1024;
/// How long a connection closed for having no request may take to close
/// gracefully (GOAWAY flushed, PING acknowledged) before it is dropped.
const GOAWAY_GRACE: Duration = Duration::from_secs(1);
/// How often shutdown looks whether the requests still being decided are done.
const DETACHED_POLL: Duration = Duration::from_millis(10);

/// Serves until SIGTERM or SIGINT, then lets in-flight requests finish within
/// `server.shutdown_grace` and returns.
pub(crate) async fn run(state: Arc<ServiceState>) -> Result<(), String> {
    let settings = state.settings().clone();
    let tls = ReloadableTls::new(&state).map_err(|e| e.to_string())?.map(Arc::new);
    let mut terminate = signal(SignalKind::terminate()).map_err(|e| format!("cannot watch SIGTERM: {e}"))?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(|e| format!("cannot watch SIGINT: {e}"))?;
    let hangup = signal(SignalKind::hangup()).map_err(|e| format!("cannot watch SIGHUP: {e}"))?;

    let listener =
        TcpListener::bind(settings.listen).await.map_err(|e| format!("cannot listen on {}: {e}", settings.listen))?;
    let addr = listener.local_addr().map_err(|e| format!("cannot read the listen address: {e}"))?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    {
        // One write: a reader that stops after the first line cannot make a later line fail.
        let mut stdout = std::io::stdout().lock();
        let _ = stdout
            .write_all(scep_service::banner::listening(scheme, addr, &state).as_bytes())
            .and_then(|()| stdout.flush());
        let profiles = state.profiles();
        tracing::info!(%addr, scheme, profiles = %profiles.names().join(","), default = profiles.default_name(), "listening");
    }

    tokio::spawn(reload_on_hangup(hangup, state.clone(), tls.clone()));

    // A request outlives its connection (ScepService::detaching_with), up to
    // as many at once as there may be connections.
    let detached = DetachedRequests::new(settings.max_connections);
    let service = ScepService::new(state.clone(), Some(Arc::new(TokioTimer::new())))
        .detaching_with(Arc::new(TokioExecutor::new()), detached.clone());
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .writev(false)
        // RFC 9112 §9.6: a client may close its sending side after a request
        // and still read the answer (hyper's default takes that EOF as an abort).
        .half_close(true)
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .max_buf_size(MAX_H1_BUF);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(settings.h2_max_concurrent_streams)
        .max_header_list_size(MAX_H2_HEADER_LIST)
        .keep_alive_interval(settings.h2_keep_alive_interval)
        .keep_alive_timeout(settings.h2_keep_alive_timeout);

    let slots = Arc::new(Semaphore::new(settings.max_connections));
    let clients = ClientLimits::new(settings.max_connections_per_client, settings.max_connections_per_network);
    let rules = Rules { header_timeout: settings.header_read_timeout, counters: state.metrics().connections().clone() };
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // E.g. EMFILE: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        // The client's share first (so a client over it is counted as such
        // even when the server is full), then the global limit. Refused: closed
        // now, before any TLS work.
        let client_permit = match clients.admit(peer.ip()) {
            Ok(p) => p,
            Err(why) => {
                refuse(&rules.counters, why, peer);
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            refuse(&rules.counters, Refusal::Global, peer);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let stream = TimedStream::new(stream, settings.write_timeout, rules.counters.clone());
        let builder = builder.clone();
        let service = service.clone();
        let stop = stop_rx.clone();
        // Each connection takes the TLS configuration current when it arrives (SIGHUP swaps it).
        let acceptor = tls.as_ref().map(|t| TlsAcceptor::from(t.current()));
        let rules = rules.clone();
        // Boxed here, once: the connection's future is about 11 KiB, and
        // tokio's spawn would otherwise copy it through each of its frames.
        connections.spawn(Box::pin(async move {
            let _permits = (permit, client_permit);
            match acceptor {
                None => {
                    let service = service.with_connection(ConnectionInfo::plain(peer));
                    serve_connection(builder, stream, service, stop, &rules, Protocol::Detect).await;
                }
                Some(acceptor) => match tokio::time::timeout(rules.header_timeout, acceptor.accept(stream)).await {
                    Ok(Ok(tls_stream)) => {
                        let info = ConnectionInfo::tls(peer, tls_stream.get_ref().1);
                        // ALPN decides: h2 is hyper's from the first byte, http/1.1 never HTTP/2.
                        let protocol = Protocol::from_alpn(tls_stream.get_ref().1.alpn_protocol());
                        let service = service.with_connection(info);
                        serve_connection(builder, tls_stream, service, stop, &rules, protocol).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => {
                        rules.counters.closed(Closed::TlsHandshakeTimeout);
                        tracing::debug!(%peer, "TLS handshake timed out");
                    }
                },
            }
        }));
        // Reap finished connections so the set does not grow.
        while connections.try_join_next().is_some() {}
    }

    drop(listener);
    let grace = settings.shutdown_grace;
    let shutdown_started = Instant::now();
    tracing::info!(in_flight = connections.len(), grace_secs = grace.as_secs(), "shutting down");
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(grace, async { while connections.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(aborted = connections.len(), "shutdown grace elapsed; closing remaining connections");
        connections.shutdown().await;
    }
    // Requests whose client left are still being decided: their audit
    // events must be written before the last flush.
    let decided = tokio::time::timeout_at(shutdown_started + grace, async {
        while detached.running() > 0 {
            tokio::time::sleep(DETACHED_POLL).await;
        }
    })
    .await;
    if decided.is_err() {
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
fn refuse(counters: &ConnectionCounters, why: Refusal, peer: std::net::SocketAddr) {
    counters.refused(why);
    // debug: an attack must not flood the log; the metric is the signal.
    tracing::debug!(%peer, reason = why.label(), "connection refused at accept");
}

/// Serves one connection: HTTP/1.1 discovery GETs on the fast path
/// ([`answer_fast`]) unless `protocol` is HTTP/2, then, from the first
/// request it does not answer, hyper with the protocol known by then
/// ([`FastConnection::protocol_after`]: auto-detected only when nothing is).
async fn serve_connection<I>(
    builder: auto::Builder<TokioExecutor>,
    mut io: I,
    service: ScepService,
    stop: watch::Receiver<bool>,
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
    serve_hyper(builder, Prefixed::new(unanswered, TokioIo::new(io)), service, stop, rules).await;
}

/// Drives a [`FastConnection`] over `io` until a request needs hyper: then
/// returns it, with the bytes not answered yet (hyper serves them and the rest).
/// `None`: the connection is over (closed by the client, an I/O error, no
/// complete request head within `header_timeout` as hyper's
/// `header_read_timeout`, or shutdown while idle). At shutdown with a request
/// under way, hyper gets it, finishes it and closes the connection. The smol
/// transport's loop is the same, and also yields every 16 writes (smol has
/// no cooperative budget).
async fn answer_fast<I>(
    io: &mut I,
    service: &ScepService,
    stop: &watch::Receiver<bool>,
    rules: &Rules,
) -> Option<FastConnection>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let header_timeout = rules.header_timeout;
    let mut conn = FastConnection::new();
    let mut stop = stop.clone();
    let stopped = async move {
        let _ = stop.wait_for(|&stopping| stopping).await;
    };
    tokio::pin!(stopped);
    // One timer per connection, re-armed lazily: a request only moves the
    // deadline, and the timer, when it fires early, is set to the new one.
    let mut deadline = Instant::now() + header_timeout;
    let timer = tokio::time::sleep_until(deadline);
    tokio::pin!(timer);
    loop {
        match conn.answer(service) {
            Next::Write => {
                write_all(io, conn.output()).await.ok()?;
                conn.written();
                deadline = Instant::now() + header_timeout;
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
                    let _ = io.shutdown().await;
                }
                return None;
            }
            Next::Read => {}
        }
        tokio::select! {
            biased;
            read = io.read(conn.read_buf()) => match read {
                Ok(0) | Err(_) => return None,
                Ok(n) => conn.filled(n),
            },
            () = &mut timer => {
                if Instant::now() >= deadline {
                    rules.counters.closed(Closed::RequestTimeout);
                    tracing::debug!("no complete request head within header_read_timeout: closing");
                    return None;
                }
                timer.as_mut().reset(deadline);
            }
            () = &mut stopped => return if conn.is_idle() { None } else { Some(conn) },
        }
    }
}

async fn write_all<I: AsyncWrite + Unpin>(io: &mut I, bytes: &[u8]) -> std::io::Result<()> {
    io.write_all(bytes).await?;
    io.flush().await
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
/// acknowledgement a hostile peer never sends).
async fn serve_hyper<I>(
    builder: auto::Builder<TokioExecutor>,
    io: I,
    service: ScepService,
    mut stop: watch::Receiver<bool>,
    rules: &Rules,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let idle = rules.header_timeout;
    let activity = RequestActivity::new();
    let conn = builder.serve_connection(io, TrackedService::new(service, activity.clone()));
    tokio::pin!(conn);
    let timer = tokio::time::sleep_until(Instant::now() + idle);
    tokio::pin!(timer);
    let mut stopping = false;
    let mut closing = false;
    loop {
        tokio::select! {
            // The connection first: bytes already read (a request handed over at
            // shutdown) get it past protocol detection before the shutdown is seen.
            biased;
            r = conn.as_mut() => {
                if let Err(e) = r {
                    if e.downcast_ref::<hyper::Error>().is_some_and(hyper::Error::is_timeout) {
                        rules.counters.closed(Closed::HyperTimeout);
                    }
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            _ = stop.wait_for(|&stopping| stopping), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
            () = &mut timer => {
                if closing {
                    tracing::debug!("graceful close after the request deadline took too long: dropping");
                    return;
                }
                // Re-armed lazily: requests only move the deadline.
                match activity.deadline(idle) {
                    Some(deadline) if Instant::now() >= deadline.into() => {
                        rules.counters.closed(Closed::RequestTimeout);
                        tracing::debug!("no request within header_read_timeout: closing");
                        closing = true;
                        conn.as_mut().graceful_shutdown();
                        timer.as_mut().reset(Instant::now() + GOAWAY_GRACE.min(idle));
                    }
                    Some(deadline) => timer.as_mut().reset(deadline.into()),
                    None => timer.as_mut().reset(Instant::now() + idle),
                }
            }
        }
    }
}

/// SIGHUP: [`ServiceState::reload_on_hangup`] on the blocking pool, once per signal.
async fn reload_on_hangup(
    mut hangup: tokio::signal::unix::Signal,
    state: Arc<ServiceState>,
    tls: Option<Arc<ReloadableTls>>,
) {
    while hangup.recv().await.is_some() {
        let state = state.clone();
        let tls = tls.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || state.reload_on_hangup(tls.as_deref())).await {
            tracing::error!(error = %e, "reload task failed; the previous configuration keeps serving");
        }
    }
}
