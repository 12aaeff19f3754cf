//! A minimal keep-alive HTTP/1.1 client over a blocking socket, plain or
//! TLS (rustls): one connection per load worker, reopened when the server
//! closes it or the run's connection use says so ([`Connection::close`]).
//! Enough for SCEP (`Content-Length` or chunked bodies), cheap on the
//! client's CPU.

use std::io::{BufRead as _, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use rustls::{ClientConnection, HandshakeKind, StreamOwned};

use super::tls::TlsClient;

/// Largest response body read (SCEP replies are a few KiB).
const MAX_BODY: usize = 4 * 1024 * 1024;

/// One HTTP response.
#[derive(Debug)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// `Content-Type`, if sent.
    pub content_type: Option<String>,
    /// The body.
    pub body: Vec<u8>,
}

/// The socket under a [`Connection`]: plain TCP or TLS over it.
#[derive(Debug)]
enum Stream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Self::Plain(s) => s.read(buf),
            Self::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Self::Plain(s) => s.write(buf),
            Self::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Self::Plain(s) => s.flush(),
            Self::Tls(s) => s.flush(),
        }
    }
}

/// A reusable connection to one server.
#[derive(Debug)]
pub struct Connection {
    addr: SocketAddr,
    host: String,
    timeout: Duration,
    tls: Option<Arc<TlsClient>>,
    stream: Option<BufReader<Stream>>,
    /// True until the first reply on the current connection was read (the
    /// TLS handshake is complete by then).
    fresh: bool,
    /// Connections opened so far (1 for a fully reused connection).
    pub opened: u64,
    /// TLS connections whose handshake resumed a session (RFC 8446 §2.2).
    pub resumed: u64,
}

impl Connection {
    /// A connection to `addr` (opened lazily), with `host` as the Host
    /// header, over TLS when `tls` is given.
    pub fn new(addr: SocketAddr, host: String, timeout: Duration, tls: Option<Arc<TlsClient>>) -> Self {
        Self { addr, host, timeout, tls, stream: None, fresh: false, opened: 0, resumed: 0 }
    }

    fn open(&mut self) -> std::io::Result<&mut BufReader<Stream>> {
        if self.stream.is_none() {
            let s = TcpStream::connect_timeout(&self.addr, self.timeout)?;
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(self.timeout))?;
            s.set_write_timeout(Some(self.timeout))?;
            let stream = match &self.tls {
                None => Stream::Plain(s),
                Some(tls) => {
                    let conn = ClientConnection::new(Arc::clone(&tls.config), tls.server_name.clone())
                        .map_err(std::io::Error::other)?;
                    Stream::Tls(Box::new(StreamOwned::new(conn, s)))
                }
            };
            self.opened += 1;
            self.fresh = true;
            self.stream = Some(BufReader::with_capacity(16 * 1024, stream));
        }
        self.stream.as_mut().ok_or_else(|| std::io::Error::other("no connection"))
    }

    /// Closes the connection (a TLS one with close_notify, RFC 8446 §6.1);
    /// the next request opens a new one.
    pub fn close(&mut self) {
        if let Some(mut stream) = self.stream.take()
            && let Stream::Tls(tls) = stream.get_mut()
        {
            tls.conn.send_close_notify();
            let _ = tls.flush();
        }
    }

    /// Sends one request and reads the reply. A request on a reused
    /// connection that fails before any reply byte is retried once on a
    /// fresh connection (the server may have closed an idle keep-alive).
    ///
    /// # Errors
    /// Socket errors, timeouts or a malformed reply.
    pub fn request(&mut self, method: &str, target: &str, body: Option<(&str, &[u8])>) -> std::io::Result<Reply> {
        let mut head = format!("{method} {target} HTTP/1.1\r\nHost: {}\r\nUser-Agent: scep-load\r\n", self.host);
        if let Some((content_type, data)) = body {
            head.push_str(&format!("Content-Type: {content_type}\r\nContent-Length: {}\r\n", data.len()));
        }
        head.push_str("\r\n");
        let mut out = head.into_bytes();
        if let Some((_, data)) = body {
            out.extend_from_slice(data);
        }
        let reused = self.stream.is_some();
        match self.exchange(&out) {
            Ok(r) => Ok(r),
            Err(Failure::BeforeReply(_)) if reused => {
                self.stream = None;
                self.exchange(&out).map_err(Failure::into_io)
            }
            Err(e) => {
                self.stream = None;
                Err(e.into_io())
            }
        }
    }

    fn exchange(&mut self, out: &[u8]) -> Result<Reply, Failure> {
        let stream = self.open().map_err(Failure::BeforeReply)?;
        stream.get_mut().write_all(out).map_err(Failure::BeforeReply)?;
        let mut line = String::new();
        let n = stream.read_line(&mut line).map_err(Failure::BeforeReply)?;
        if n == 0 {
            return Err(Failure::BeforeReply(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed before the reply",
            )));
        }
        let (reply, keep) = read_rest(stream, &line).map_err(Failure::During)?;
        let resumed =
            matches!(stream.get_ref(), Stream::Tls(tls) if tls.conn.handshake_kind() == Some(HandshakeKind::Resumed));
        if std::mem::take(&mut self.fresh) && resumed {
            self.resumed += 1;
        }
        if !keep {
            self.stream = None;
        }
        Ok(reply)
    }
}

enum Failure {
    BeforeReply(std::io::Error),
    During(std::io::Error),
}

impl Failure {
    fn into_io(self) -> std::io::Error {
        match self {
            Self::BeforeReply(e) | Self::During(e) => e,
        }
    }
}

fn bad(m: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string())
}

/// Reads headers and body after the status line; returns whether the
/// connection can be reused.
fn read_rest(r: &mut BufReader<Stream>, status_line: &str) -> std::io::Result<(Reply, bool)> {
    let mut parts = status_line.trim_end().splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(bad("not an HTTP/1.x status line"));
    }
    let status: u16 = parts.next().and_then(|s| s.parse().ok()).ok_or_else(|| bad("bad status code"))?;
    let mut keep = version == "HTTP/1.1";
    let (mut content_type, mut length, mut chunked) = (None, None, false);
    let mut line = String::new();
    for _ in 0..100 {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(bad("connection closed inside headers"));
        }
        let l = line.trim_end_matches(['\r', '\n']);
        if l.is_empty() {
            let body = read_body(r, status, length, chunked)?;
            if length.is_none() && !chunked {
                keep = false;
            }
            return Ok((Reply { status, content_type, body }, keep));
        }
        let (n, v) = l.split_once(':').ok_or_else(|| bad("bad header line"))?;
        let v = v.trim();
        match n.trim().to_ascii_lowercase().as_str() {
            "content-type" => content_type = Some(v.to_string()),
            "content-length" => length = Some(v.parse::<usize>().map_err(|_| bad("bad Content-Length"))?),
            "transfer-encoding" => chunked = v.to_ascii_lowercase().contains("chunked"),
            "connection" => keep = !v.eq_ignore_ascii_case("close"),
            _ => {}
        }
    }
    Err(bad("too many headers"))
}

fn read_body(r: &mut BufReader<Stream>, status: u16, length: Option<usize>, chunked: bool) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    if status == 204 || status == 304 || (100..200).contains(&status) {
        return Ok(body);
    }
    if chunked {
        let mut line = String::new();
        loop {
            line.clear();
            r.read_line(&mut line)?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or_default(), 16)
                .map_err(|_| bad("bad chunk size"))?;
            if size == 0 {
                line.clear();
                r.read_line(&mut line)?;
                return Ok(body);
            }
            if body.len() + size > MAX_BODY {
                return Err(bad("body too large"));
            }
            let start = body.len();
            body.resize(start + size, 0);
            r.read_exact(&mut body[start..])?;
            line.clear();
            r.read_line(&mut line)?;
        }
    }
    match length {
        Some(n) if n > MAX_BODY => Err(bad("body too large")),
        Some(n) => {
            body.resize(n, 0);
            r.read_exact(&mut body)?;
            Ok(body)
        }
        None => {
            r.take(MAX_BODY as u64 + 1).read_to_end(&mut body)?;
            Ok(body)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A server that answers two requests on one connection, then closes.
    #[test]
    fn reuses_the_connection_and_reopens_after_close() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            for round in 0..2 {
                let (s, _) = listener.accept().unwrap();
                let mut r = BufReader::new(s);
                let answers = if round == 0 { 2 } else { 1 };
                for i in 0..answers {
                    let mut line = String::new();
                    loop {
                        line.clear();
                        r.read_line(&mut line).unwrap();
                        if line == "\r\n" {
                            break;
                        }
                    }
                    let body = format!("r{round}-{i}");
                    let close = if round == 0 && i == 1 { "Connection: close\r\n" } else { "" };
                    write!(
                        r.get_mut(),
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n{close}Content-Length: {}\r\n\r\n{body}",
                        body.len()
                    )
                    .unwrap();
                }
            }
        });
        let mut c = Connection::new(addr, "x".into(), Duration::from_secs(5), None);
        let bodies: Vec<String> =
            (0..3).map(|_| String::from_utf8(c.request("GET", "/", None).unwrap().body).unwrap()).collect();
        assert_eq!(bodies, ["r0-0", "r0-1", "r1-0"]);
        assert_eq!(c.opened, 2);
        server.join().unwrap();
    }
}
