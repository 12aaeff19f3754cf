//! The tokio accept loop: TLS, HTTP/1.1 + h2, limits, signals, graceful shutdown.

use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use scep_service::mtls::ConnectionInfo;
use scep_service::tls::ReloadableTls;
use scep_service::{ScepService, ServiceState};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

/// Largest HTTP/1 read buffer (request line + headers) per connection.
const MAX_H1_BUF: usize = 64 * 1024;
/// Largest HTTP/2 header list per request.
const MAX_H2_HEADER_LIST: u32 = 64 * 1024;

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
    println!("scepd listening on {scheme}://{addr}");
    let _ = std::io::stdout().flush();
    let profiles = state.profiles();
    tracing::info!(%addr, scheme, profiles = %profiles.names().join(","), default = profiles.default_name(), "listening");
    drop(profiles);

    tokio::spawn(reload_on_hangup(hangup, state.clone(), tls.clone()));

    let service = ScepService::new(state.clone(), Some(Arc::new(TokioTimer::new())));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .writev(false)
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .max_buf_size(MAX_H1_BUF);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(settings.h2_max_concurrent_streams)
        .max_header_list_size(MAX_H2_HEADER_LIST);

    let slots = Arc::new(Semaphore::new(settings.max_connections));
    let (stop_tx, stop_rx) = watch::channel(());
    let mut connections = JoinSet::new();
    loop {
        // Wait for a connection slot first: beyond the limit, clients queue in the backlog.
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        };
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
        let _ = stream.set_nodelay(true);
        let builder = builder.clone();
        let service = service.clone();
        let stop = stop_rx.clone();
        // Each connection takes the TLS configuration current when it arrives (SIGHUP swaps it).
        let acceptor = tls.as_ref().map(|t| TlsAcceptor::from(t.current()));
        let handshake_timeout = settings.header_read_timeout;
        connections.spawn(async move {
            let _permit = permit;
            match acceptor {
                None => {
                    let service = service.with_connection(ConnectionInfo::plain(peer));
                    serve_connection(builder, stream, service, stop).await;
                }
                Some(acceptor) => match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                    Ok(Ok(tls_stream)) => {
                        let info = ConnectionInfo::tls(peer, tls_stream.get_ref().1);
                        serve_connection(builder, tls_stream, service.with_connection(info), stop).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                },
            }
        });
        // Reap finished connections so the set does not grow.
        while connections.try_join_next().is_some() {}
    }

    drop(listener);
    let grace = settings.shutdown_grace;
    tracing::info!(in_flight = connections.len(), grace_secs = grace.as_secs(), "shutting down");
    let _ = stop_tx.send(());
    let drained = tokio::time::timeout(grace, async { while connections.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(aborted = connections.len(), "shutdown grace elapsed; closing remaining connections");
        connections.shutdown().await;
    }
    state.flush_audit().await;
    tracing::info!("stopped");
    Ok(())
}

/// Serves one connection (HTTP/1.1 or h2, auto-detected); on shutdown, stops
/// taking new requests on it and lets the current ones finish.
async fn serve_connection<I>(
    builder: auto::Builder<TokioExecutor>,
    io: I,
    service: ScepService,
    mut stop: watch::Receiver<()>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            return;
        }
        _ = stop.changed() => conn.as_mut().graceful_shutdown(),
    }
    if let Err(e) = conn.await {
        tracing::debug!(error = %e, "connection ended with an error during shutdown");
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
