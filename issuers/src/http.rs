//! A small blocking HTTP/1.1 client (RFC 9112) over `std::net::TcpStream`
//! and, for `https`, rustls on the aws-lc-rs provider: the Vault issuer's, and
//! the Intune API client's in scep-service (token, Graph, Intune).
//!
//! One connection per request (`Connection: close`), connect and per-read
//! timeouts plus an overall deadline, a bounded response size. It is
//! deliberately minimal: Vault answers JSON or DER with `Content-Length` or
//! chunked transfer coding, nothing else is needed. It runs on the `blocking`
//! thread pool, so it never blocks an async executor.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, ServerName};

/// Largest response accepted (headers + body): 8 MiB (a large CRL fits).
const MAX_RESPONSE: usize = 8 << 20;

/// Where to reach the server: scheme, host, port, and TLS settings.
#[derive(Clone)]
pub struct Endpoint {
    host: String,
    port: u16,
    tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// Why a request got no HTTP response.
#[derive(Debug)]
pub enum TransportError {
    /// TCP connect failed or timed out.
    Connect(String),
    /// The request timed out after the connection was made (the server may
    /// have acted on it).
    Timeout(String),
    /// Anything else after connecting: TLS, I/O, malformed or oversized response.
    Protocol(String),
}

impl TransportError {
    /// Whether the server surely did not act on the request (safe to retry
    /// even a non-idempotent request).
    pub fn before_request(&self) -> bool {
        matches!(self, Self::Connect(_))
    }
}

impl std::fmt::Display for TransportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Connect(e) => write!(f, "cannot connect: {e}"),
            Self::Timeout(e) => write!(f, "timed out: {e}"),
            Self::Protocol(e) => write!(f, "{e}"),
        }
    }
}

/// An HTTP response.
#[derive(Debug)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Body, de-chunked.
    pub body: Vec<u8>,
    /// The `Retry-After` header's value, when present (RFC 9110 §10.2.3).
    pub retry_after: Option<String>,
}

impl Endpoint {
    /// Parses `http://host[:port]` or `https://host[:port]` (no path). For
    /// https, `roots` are the trusted CA certificates.
    ///
    /// # Errors
    /// A one-line reason when the address or the roots are unusable.
    pub fn parse(address: &str, roots: &[CertificateDer<'static>]) -> Result<Self, String> {
        let (tls, rest, default_port) = if let Some(r) = address.strip_prefix("https://") {
            (true, r, 443)
        } else if let Some(r) = address.strip_prefix("http://") {
            (false, r, 80)
        } else {
            return Err(format!("{address:?} must start with http:// or https://"));
        };
        let rest = rest.trim_end_matches('/');
        if rest.is_empty() || rest.contains('/') || rest.contains('@') || rest.contains('?') {
            return Err(format!("{address:?} must be scheme://host[:port] without path or credentials"));
        }
        let (host, port) = split_host_port(rest, default_port)?;
        let tls = if tls {
            if roots.is_empty() {
                return Err("https needs a CA bundle (ca_bundle): the system trust store is not used".into());
            }
            let mut store = rustls::RootCertStore::empty();
            for c in roots {
                store.add(c.clone()).map_err(|e| format!("CA bundle: unusable certificate: {e}"))?;
            }
            let provider = tls_crypto_provider();
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| format!("TLS setup: {e}"))?
                .with_root_certificates(store)
                .with_no_client_auth();
            let name =
                ServerName::try_from(host.clone()).map_err(|e| format!("{host:?}: not a TLS server name: {e}"))?;
            Some((Arc::new(config), name))
        } else {
            None
        };
        Ok(Self { host, port, tls })
    }

    /// Sends one request and reads the whole response.
    ///
    /// `headers` are extra header lines (name, value); values must not contain
    /// CR or LF (checked). A body is sent as `application/json` unless
    /// `headers` name a `Content-Type`.
    ///
    /// # Errors
    /// [`TransportError`] when no complete response arrived within `timeout`.
    pub fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
        connect_timeout: Duration,
        timeout: Duration,
    ) -> Result<HttpResponse, TransportError> {
        let deadline = Instant::now() + timeout;
        let stream = self.connect(connect_timeout.min(timeout))?;
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nUser-Agent: scepd\r\n",
            self.host_header()
        );
        for (name, value) in headers {
            if value.contains(['\r', '\n']) || name.contains(['\r', '\n', ':']) {
                return Err(TransportError::Protocol(format!("header {name} contains a line break")));
            }
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if let Some(b) = body {
            if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("content-type")) {
                head.push_str("Content-Type: application/json\r\n");
            }
            head.push_str(&format!("Content-Length: {}\r\n", b.len()));
        }
        head.push_str("\r\n");
        let mut request = head.into_bytes();
        if let Some(b) = body {
            request.extend_from_slice(b);
        }
        let raw = match &self.tls {
            None => exchange(stream, &request, deadline)?,
            Some((config, name)) => {
                let conn = rustls::ClientConnection::new(config.clone(), name.clone())
                    .map_err(|e| TransportError::Protocol(format!("TLS: {e}")))?;
                exchange(rustls::StreamOwned::new(conn, stream), &request, deadline)?
            }
        };
        parse_response(&raw)
    }

    fn host_header(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    fn connect(&self, timeout: Duration) -> Result<TcpStream, TransportError> {
        let addrs: Vec<SocketAddr> = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| TransportError::Connect(format!("{}:{}: cannot resolve: {e}", self.host, self.port)))?
            .collect();
        let mut last = format!("{}:{}: no address", self.host, self.port);
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, timeout) {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    return Ok(s);
                }
                Err(e) => last = format!("{addr}: {e}"),
            }
        }
        Err(TransportError::Connect(last))
    }
}

/// `host[:port]`, with `[v6]:port` brackets.
fn split_host_port(s: &str, default_port: u16) -> Result<(String, u16), String> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest.split_once(']').ok_or_else(|| format!("{s:?}: unclosed '['"))?;
        (h, after.strip_prefix(':'))
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    if host.is_empty() {
        return Err(format!("{s:?}: empty host"));
    }
    let port = match port {
        None => default_port,
        Some(p) => p.parse().map_err(|_| format!("{s:?}: {p:?} is not a port"))?,
    };
    Ok((host.to_string(), port))
}

/// Writes the request and reads until EOF, within `deadline`.
fn exchange<S>(mut stream: S, request: &[u8], deadline: Instant) -> Result<Vec<u8>, TransportError>
where
    S: Read + Write + StreamTimeouts,
{
    let timeout_err = || TransportError::Timeout("no complete answer within the request timeout".into());
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(timeout_err());
    }
    stream.set_timeouts(left);
    stream.write_all(request).map_err(|e| io_error(&e, "sending the request"))?;
    stream.flush().map_err(|e| io_error(&e, "sending the request"))?;
    let mut out = Vec::with_capacity(4096);
    let mut buf = [0u8; 16 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(timeout_err());
        }
        stream.set_timeouts(left);
        match stream.read(&mut buf) {
            Ok(0) => return Ok(out),
            Ok(n) => {
                if out.len() + n > MAX_RESPONSE {
                    return Err(TransportError::Protocol(format!("response larger than {MAX_RESPONSE} bytes")));
                }
                out.extend_from_slice(&buf[..n]);
                // Stop as soon as a Content-Length body is complete (some
                // servers keep the socket open briefly after answering).
                if complete(&out) {
                    return Ok(out);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            // rustls reports a close without close_notify as UnexpectedEof: treat as EOF.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !out.is_empty() => return Ok(out),
            Err(e) => return Err(io_error(&e, "reading the response")),
        }
    }
}

fn io_error(e: &std::io::Error, what: &str) -> TransportError {
    match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
            TransportError::Timeout(format!("{what}: no answer within the request timeout"))
        }
        _ => TransportError::Protocol(format!("{what}: {e}")),
    }
}

/// Sets read/write timeouts on the underlying socket.
trait StreamTimeouts {
    fn set_timeouts(&mut self, t: Duration);
}

impl StreamTimeouts for TcpStream {
    fn set_timeouts(&mut self, t: Duration) {
        let _ = self.set_read_timeout(Some(t));
        let _ = self.set_write_timeout(Some(t));
    }
}

impl StreamTimeouts for rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    fn set_timeouts(&mut self, t: Duration) {
        self.sock.set_timeouts(t);
    }
}

/// Splits off the header block: (head, body start).
fn split_head(raw: &[u8]) -> Option<(&str, usize)> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    Some((std::str::from_utf8(&raw[..end]).ok()?, end + 4))
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.split("\r\n").skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Whether `raw` holds a full response framed by Content-Length.
fn complete(raw: &[u8]) -> bool {
    let Some((head, start)) = split_head(raw) else { return false };
    if header(head, "transfer-encoding").is_some() {
        return raw.ends_with(b"0\r\n\r\n");
    }
    header(head, "content-length").and_then(|v| v.parse::<usize>().ok()).is_some_and(|n| raw.len() >= start + n)
}

/// Parses a complete HTTP/1.1 response (RFC 9112 §4, §6, §7.1).
fn parse_response(raw: &[u8]) -> Result<HttpResponse, TransportError> {
    let bad = |why: &str| TransportError::Protocol(format!("malformed HTTP response: {why}"));
    let (head, start) = split_head(raw).ok_or_else(|| bad("no end of headers"))?;
    let status_line = head.split("\r\n").next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(bad("not HTTP/1.x"));
    }
    let status: u16 = parts.next().and_then(|s| s.parse().ok()).ok_or_else(|| bad("no status code"))?;
    let rest = &raw[start..];
    let body = if header(head, "transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        dechunk(rest).ok_or_else(|| bad("bad chunked body"))?
    } else if let Some(len) = header(head, "content-length") {
        let n: usize = len.parse().map_err(|_| bad("bad Content-Length"))?;
        rest.get(..n).ok_or_else(|| bad("body shorter than Content-Length"))?.to_vec()
    } else {
        rest.to_vec()
    };
    let retry_after = header(head, "retry-after").map(str::to_string);
    Ok(HttpResponse { status, body, retry_after })
}

/// Decodes the chunked transfer coding (RFC 9112 §7.1).
fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

/// The rustls crypto provider of every TLS object scepd makes (this client's
/// and, through `scep-service`, the listener's): aws-lc-rs with the `aws-lc`
/// feature, else RustCrypto (`rustls-rustcrypto`).
pub fn tls_crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    #[cfg(feature = "aws-lc")]
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    #[cfg(not(feature = "aws-lc"))]
    let provider = rustls_rustcrypto::provider();
    Arc::new(provider)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_addresses() {
        let e = Endpoint::parse("http://127.0.0.1:8200", &[]).unwrap();
        assert_eq!((e.host.as_str(), e.port, e.tls.is_some()), ("127.0.0.1", 8200, false));
        let e = Endpoint::parse("http://vault/", &[]).unwrap();
        assert_eq!(e.port, 80);
        let e = Endpoint::parse("http://[::1]:1", &[]).unwrap();
        assert_eq!((e.host.as_str(), e.port), ("::1", 1));
        assert_eq!(e.host_header(), "[::1]:1");
        for bad in ["vault:8200", "ftp://x", "http://", "http://x/v1", "http://u@x", "http://x:port", "https://x"] {
            assert!(Endpoint::parse(bad, &[]).is_err(), "{bad}");
        }
    }

    #[test]
    fn parses_responses() {
        let r = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi").unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, b"hi".as_slice()));
        let r = parse_response(
            b"HTTP/1.1 404 Not Found\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n1;x\r\nd\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!((r.status, r.body.as_slice()), (404, b"abcd".as_slice()));
        assert!(complete(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"));
        assert!(!complete(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nhi"));
        for bad in [&b"garbage"[..], b"SSH-2.0\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhi"] {
            assert!(parse_response(bad).is_err());
        }
        assert!(dechunk(b"5\r\nab").is_none());
    }
}
