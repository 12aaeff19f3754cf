//! scepd on smol: the same [`ScepService`] as the tokio transport, served with
//! smol's executor and reactor, `smol-hyper` adapters and `futures-rustls`.
//!
//! Only the runtime glue lives here: the accept loop, the TLS acceptor, the
//! signal handling, the graceful shutdown, and a TCP stream that tracks read
//! readiness (`stream.rs`). Routing, limits, configuration
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
use std::sync::Arc;
use std::time::Duration;

use async_signal::{Signal, Signals};
use futures_lite::{AsyncRead, AsyncWrite, StreamExt as _, future};
use futures_rustls::TlsAcceptor;
use hyper_util::server::conn::auto;
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
        let handshake_timeout = settings.header_read_timeout;
        ex.spawn(async move {
            let _permit = permit;
            match acceptor {
                None => {
                    let service = service.with_connection(ConnectionInfo::plain(peer));
                    serve_connection(builder, stream, service, stop).await;
                }
                Some(acceptor) => match timeout(handshake_timeout, acceptor.accept(stream)).await {
                    Some(Ok(tls_stream)) => {
                        let info = ConnectionInfo::tls(peer, tls_stream.get_ref().1);
                        serve_connection(builder, tls_stream, service.with_connection(info), stop).await;
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

/// Serves one connection (HTTP/1.1 or h2, auto-detected); on shutdown, stops
/// taking new requests on it and lets the current ones finish.
async fn serve_connection<I>(builder: Builder, io: I, service: ScepService, stop: Receiver<()>)
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
