//! A minimal blocking HTTP/1.1 client over `std::net::TcpStream` (plain
//! HTTP only), enough for SCEP's three operations (RFC 8894 §4).

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpStream, ToSocketAddrs as _};
use std::time::Duration;

use super::error::{ClientError, Result};

/// A parsed `http://host[:port]/path` URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpUrl {
    /// Host name or address (IPv6 without brackets).
    pub host: String,
    /// TCP port (80 when absent).
    pub port: u16,
    /// The path, starting with `/` (any query string kept).
    pub path: String,
}

impl HttpUrl {
    /// Parses an `http://` URL.
    ///
    /// # Errors
    /// For other schemes or a malformed authority.
    pub fn parse(url: &str) -> Result<Self> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| ClientError::Http(format!("only http:// URLs are supported: {url}")))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, p) = v6.split_once(']').ok_or_else(|| ClientError::Http(format!("bad IPv6 host in {url}")))?;
            (h, p.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        let port = match port {
            Some(p) => p.parse().map_err(|_| ClientError::Http(format!("bad port in {url}")))?,
            None => 80,
        };
        if host.is_empty() {
            return Err(ClientError::Http(format!("no host in {url}")));
        }
        Ok(Self { host: host.to_string(), port, path: path.to_string() })
    }

    fn host_header(&self) -> String {
        let h = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        if self.port == 80 { h } else { format!("{h}:{}", self.port) }
    }
}

/// An HTTP response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// The Content-Type header, if any.
    pub content_type: Option<String>,
    /// All headers (names lower-cased), in order.
    pub headers: Vec<(String, String)>,
    /// The body (de-chunked).
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }
}

/// Largest body accepted (SCEP replies are a few KiB; CRLs can be larger).
const MAX_BODY: usize = 16 * 1024 * 1024;

/// Sends one request (`Connection: close`) and reads the whole response.
///
/// `path_and_query` replaces the URL's path. `timeout` bounds connect, each
/// read and each write.
///
/// # Errors
/// Socket errors, timeouts, or a malformed response.
pub fn request(
    url: &HttpUrl,
    method: &str,
    path_and_query: &str,
    body: Option<(&str, &[u8])>,
    timeout: Duration,
) -> Result<HttpResponse> {
    let addr = (url.host.as_str(), url.port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| ClientError::Http(format!("{} does not resolve", url.host)))?;
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut head = format!(
        "{method} {path_and_query} HTTP/1.1\r\nHost: {}\r\nUser-Agent: scep-tests\r\nAccept: */*\r\nConnection: close\r\n",
        url.host_header()
    );
    if let Some((content_type, data)) = body {
        if !content_type.is_empty() {
            head.push_str(&format!("Content-Type: {content_type}\r\n"));
        }
        head.push_str(&format!("Content-Length: {}\r\n", data.len()));
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    if let Some((_, data)) = body {
        out.extend_from_slice(data);
    }
    stream.write_all(&out)?;
    stream.flush()?;
    read_response(BufReader::new(stream), method == "HEAD")
}

fn read_response(mut r: BufReader<TcpStream>, head_only: bool) -> Result<HttpResponse> {
    let bad = |m: &str| ClientError::Http(m.to_string());
    let mut line = String::new();
    r.read_line(&mut line)?;
    let mut parts = line.trim_end().splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(ClientError::Http(format!("not an HTTP/1.x status line: {line:?}")));
    }
    let status: u16 = parts.next().and_then(|s| s.parse().ok()).ok_or_else(|| bad("bad status code"))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(bad("connection closed inside headers"));
        }
        let l = line.trim_end_matches(['\r', '\n']);
        if l.is_empty() {
            break;
        }
        let (n, v) = l.split_once(':').ok_or_else(|| ClientError::Http(format!("bad header line {l:?}")))?;
        headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
        if headers.len() > 100 {
            return Err(bad("too many headers"));
        }
    }
    let find = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
    let mut body = Vec::new();
    if head_only || status == 204 || status == 304 || (100..200).contains(&status) {
        // no body
    } else if find("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
        loop {
            line.clear();
            r.read_line(&mut line)?;
            let size_text = line.trim().split(';').next().unwrap_or_default();
            let size = usize::from_str_radix(size_text, 16).map_err(|_| bad("bad chunk size"))?;
            if size == 0 {
                break;
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
    } else if let Some(len) = find("content-length") {
        let len: usize = len.parse().map_err(|_| bad("bad Content-Length"))?;
        if len > MAX_BODY {
            return Err(bad("body too large"));
        }
        body.resize(len, 0);
        r.read_exact(&mut body)?;
    } else {
        r.take(MAX_BODY as u64 + 1).read_to_end(&mut body)?;
        if body.len() > MAX_BODY {
            return Err(bad("body too large"));
        }
    }
    let content_type = find("content-type");
    Ok(HttpResponse { status, content_type, headers, body })
}

/// Percent-encodes a query value (RFC 3986 unreserved characters kept).
pub fn url_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len() * 3 / 2);
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = HttpUrl::parse("http://127.0.0.1:8080/scep/p").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.path.as_str()), ("127.0.0.1", 8080, "/scep/p"));
        let u = HttpUrl::parse("http://[::1]/").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.host_header().as_str()), ("::1", 80, "[::1]"));
        assert!(HttpUrl::parse("https://x/").is_err());
        assert_eq!(HttpUrl::parse("http://h").unwrap().path, "/");
        assert_eq!(url_encode("a+b/c=="), "a%2Bb%2Fc%3D%3D");
    }

    #[test]
    fn reads_chunked_and_content_length_responses() {
        use std::net::TcpListener;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            for reply in [
                &b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"[..],
                &b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nno"[..],
            ] {
                let (mut s, _) = listener.accept().unwrap();
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).unwrap();
                s.write_all(reply).unwrap();
            }
        });
        let url = HttpUrl::parse(&format!("http://127.0.0.1:{port}/x")).unwrap();
        let r = request(&url, "GET", "/x?a=1", None, Duration::from_secs(5)).unwrap();
        assert_eq!((r.status, r.body.as_slice(), r.content_type.as_deref()), (200, &b"abcde"[..], Some("text/plain")));
        let r =
            request(&url, "POST", "/x", Some(("application/x-pki-message", b"zz")), Duration::from_secs(5)).unwrap();
        assert_eq!((r.status, r.body.as_slice()), (404, &b"no"[..]));
        server.join().unwrap();
    }
}
