//! Reference HTTP servers for the GetCACaps benchmark: what any server on this
//! machine can reach, measured in the same run as scepd
//! (`benches/scripts/getcacaps-ceiling.sh`).
//!
//! ```text
//! http-baseline hyper 127.0.0.1:18090   # hyper 1 with scepd's builder settings, a fixed answer
//! http-baseline raw 127.0.0.1:18090     # httparse on a tokio socket, no framework at all
//! http-baseline raw 127.0.0.1:18090 --tls server.pem server.key   # the same behind rustls
//! ```
//!
//! With `--tls` the `raw` server speaks TLS through tokio-rustls with the
//! settings of scepd's (`transports/service/src/wiring/tls.rs`): TLS 1.3 and
//! 1.2, AES-128-GCM preferred, session tickets from aws-lc's ticketer, one
//! TLS 1.3 ticket per handshake, and a `close_notify` when the client is done.
//! It is the least a rustls server spends on a connection
//! (`benches/scripts/tls-connection-ceiling.sh`).
//!
//! Both answer every request with the same 200 `text/plain` body of the size
//! of scepd's GetCACaps answer, on tokio's multi-threaded runtime (one worker
//! per core, as scepd), and do nothing else: no routing, audit or metrics.
//! The `raw` server handles only what `wrk` sends (HTTP/1.1 GETs, keep-alive,
//! pipelining); it is a measuring stick, not a server.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

/// The size of scepd's default GetCACaps answer.
const BODY: &[u8] = b"AES\nDES3\nPOSTPKIOperation\nRenewal\nSHA-1\nSHA-256\nSHA-384\nSHA-512\nSCEPStandard\n";

fn main() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: http-baseline hyper|raw LISTEN_ADDR [--tls CERT_PEM KEY_PEM (raw only)]";
    let mode = args.next().ok_or(usage)?;
    let addr: SocketAddr = args.next().ok_or(usage)?.parse().map_err(|e| format!("{usage}: {e}"))?;
    let raw = match mode.as_str() {
        "hyper" => false,
        "raw" => true,
        _ => return Err(usage.into()),
    };
    let tls = match args.next().as_deref() {
        None => None,
        Some("--tls") if raw => {
            let (cert, key) = (args.next().ok_or(usage)?, args.next().ok_or(usage)?);
            Some(TlsAcceptor::from(tls_config(&cert, &key)?))
        }
        Some(_) => return Err(usage.into()),
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let listener = TcpListener::bind(addr).await.map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        println!("http-baseline {mode} listening on {scheme}://{}", listener.local_addr().map_err(|e| e.to_string())?);
        loop {
            let (stream, _) = listener.accept().await.map_err(|e| e.to_string())?;
            let _ = stream.set_nodelay(true);
            match (&tls, raw) {
                (Some(acceptor), _) => {
                    let accept = acceptor.accept(stream);
                    tokio::spawn(async move {
                        if let Ok(stream) = accept.await {
                            serve_raw(stream).await;
                        }
                    });
                }
                (None, true) => drop(tokio::spawn(serve_raw(stream))),
                (None, false) => drop(tokio::spawn(serve_hyper(stream))),
            }
        }
    })
}

/// The TLS settings of scepd's server (see the module docs), for one
/// certificate chain and key in PEM files.
fn tls_config(cert: &str, key: &str) -> Result<Arc<rustls::ServerConfig>, String> {
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|e| format!("{cert}: {e}"))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{key}: {e}"))?;
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.cipher_suites.sort_by_key(|s| s.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| e.to_string())?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.ignore_client_order = true;
    config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new().map_err(|e| e.to_string())?;
    config.send_tls13_tickets = 1;
    Ok(Arc::new(config))
}

/// hyper with the settings of scepd's tokio transport.
async fn serve_hyper(stream: TcpStream) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .writev(false)
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10))
        .max_buf_size(64 * 1024);
    let service = service_fn(|_req: hyper::Request<hyper::body::Incoming>| async {
        let mut r = hyper::Response::new(Full::new(Bytes::from_static(BODY)));
        r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain"));
        r.headers_mut().insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
        Ok::<_, Infallible>(r)
    });
    let _ = builder.serve_connection(TokioIo::new(stream), service).await;
}

/// Parse with httparse, answer, repeat: the least any HTTP server does. At
/// the client's end of stream it shuts its side down (with TLS: `close_notify`).
async fn serve_raw<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S) {
    let mut buf = vec![0u8; 8192];
    let mut filled = 0;
    let mut out = Vec::with_capacity(1024);
    let mut length = itoa::Buffer::new();
    loop {
        let mut used = 0;
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(&buf[used..filled]) {
                Ok(httparse::Status::Complete(n)) => {
                    out.extend_from_slice(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: ");
                    out.extend_from_slice(length.format(BODY.len()).as_bytes());
                    out.extend_from_slice(b"\r\ncache-control: no-store\r\n\r\n");
                    out.extend_from_slice(BODY);
                    used += n;
                }
                Ok(httparse::Status::Partial) => break,
                Err(_) => return,
            }
        }
        buf.copy_within(used..filled, 0);
        filled -= used;
        if !out.is_empty() {
            if stream.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
        if filled == buf.len() {
            return;
        }
        match stream.read(&mut buf[filled..]).await {
            Ok(0) => {
                let _ = stream.shutdown().await;
                return;
            }
            Err(_) => return,
            Ok(n) => filled += n,
        }
    }
}
