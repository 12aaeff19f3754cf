//! The HTTP/1.1 fast path for discovery GETs and OCSP POSTs, sans-IO.
//!
//! A fleet polls GetCACaps and GetCACert far more often than it enrols, and
//! their answers are kept ready per profile ([`crate::state::discovery`]). For those
//! requests hyper's per-request work (a `Request` with its `HeaderMap` and
//! `Uri`, a service future, the header-read timer re-armed per request) is
//! most of scepd's own CPU. A transport that wants to can therefore parse the
//! front of an HTTP/1.1 connection itself with [`ScepService::answer_http1`]:
//! a plain GET of GetCACaps or GetCACert on `/scep...` (RFC 9112 §3, with no
//! body and nothing that changes the connection; and only with `[audit]
//! discovery = "aggregate"`, the default) is answered here, byte for
//! byte as hyper would (status line, `content-type`, `content-length`,
//! `cache-control`, `date`), counted in the metrics and the audit tally like
//! every other answer. Anything else — another method or path, a body,
//! `Expect`, `Upgrade`, `Connection` other than `keep-alive`, no `Host` or
//! more than one (RFC 9112 §3.2: hyper's service answers 400), HTTP/1.0, an
//! HTTP/2 preface, a target with a character outside RFC 3986's path and
//! query characters (hyper's URI parser decides those), more than
//! [`MAX_HEADERS`] fields, or a head larger than [`MAX_HEAD`] — is
//! [`Http1Step::HandOff`]: the
//! transport gives the connection, with every byte not yet answered
//! ([`Prefixed`]), to hyper, which then serves it to the end. Answers are
//! written in request order, so pipelined requests keep their order across
//! the hand-off.
//!
//! [`FastConnection`] is the per-connection state (read buffer, answers to
//! write) a transport drives: it reads, calls [`FastConnection::answer`],
//! writes what it is given, and hands off when told; the transport adds only
//! the socket, the header-read timer and the shutdown signal.
//!
//! OCSP POSTs to `/pki/ocsp` that the responder answers from memory (RFC
//! 8954 nonce requests: one signature each) take the same path
//! ([`ScepService::answer_http1`] hands them to `answer_ocsp_post`): for them
//! too hyper's per-request work was most of the cost beside the signature.
//!
//! A head that is not HTTP/1.1 at all (httparse, the parser hyper uses,
//! refuses it: a bad request line, header name or value, line ending or
//! version, or a TLS handshake on a plain-HTTP port) is
//! [`Http1Step::Refused`]: answered 400 with the reason in the body, then the
//! connection is closed, as hyper would close it (hyper's own 400 has no
//! body, so a client developer or operator would not learn what was wrong).
//!
//! One difference with hyper remains: a request head handed to hyper before
//! it is complete (past [`MAX_HEAD`], or more than [`MAX_HEADERS`] fields) gets hyper's own `header_read_timeout` as well, so it may take
//! up to twice that timeout.

use std::cell::RefCell;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::StatusCode;
use hyper::rt::{Read, ReadBufCursor, Write};

use crate::http::service::ScepService;

/// Most header fields a fast-path request may have (more: hand-off).
pub const MAX_HEADERS: usize = 32;
/// Largest request head the fast path waits for (more: hand-off, and hyper
/// applies its own limit).
pub const MAX_HEAD: usize = 8 * 1024;
/// The read buffer's first size, and each growth step (up to [`MAX_HEAD`] plus one step).
pub const READ_STEP: usize = 4096;
/// Answers are written once they reach this size, before more are built: a
/// pipelining client cannot make the server hold more than about this much
/// per connection (hyper writes one answer at a time).
pub const WRITE_HIGH_WATER: usize = 64 * 1024;

/// What [`ScepService::answer_http1`] did with the front of the buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Http1Step {
    /// One request of this many bytes was answered (its response appended to `out`).
    Answered(usize),
    /// The request head is not complete yet: read more (up to [`MAX_HEAD`]).
    Incomplete,
    /// Not a fast-path request: hyper must serve the connection from here on.
    HandOff,
    /// The head is not HTTP/1.1 (see the [module docs](self)): a 400 with
    /// the reason was appended to `out`, and the connection must close after
    /// writing it (where the next request would start is unknown).
    Refused,
}

impl ScepService {
    /// Answers the HTTP/1.1 request at the front of `buf` when it is a plain
    /// discovery GET (see the [module docs](self)), appending the response to
    /// `out`.
    pub fn answer_http1(&self, buf: &[u8], out: &mut Vec<u8>) -> Http1Step {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        let consumed = match req.parse(buf) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => return Http1Step::Incomplete,
            Ok(httparse::Status::Partial) | Err(httparse::Error::TooManyHeaders) => return Http1Step::HandOff,
            // The HTTP/2 preface (RFC 9113 §3.4) is hyper's to serve or refuse.
            Err(_) if buf.starts_with(b"PRI ") => return Http1Step::HandOff,
            Err(e) => {
                let reason = malformed_head(buf, e);
                tracing::debug!(reason, "refused a request head that is not HTTP/1.1");
                write_refusal(out, reason);
                return Http1Step::Refused;
            }
        };
        // RFC 9112 §3.2: hyper's service answers 400 without one `Host`.
        if !one_host(req.headers) {
            return Http1Step::HandOff;
        }
        if req.method == Some("POST") && req.version == Some(1) {
            return self.answer_ocsp_post(&req, &buf[consumed..], consumed, out);
        }
        if req.method != Some("GET") || req.version != Some(1) || !plain_request(req.headers) {
            return Http1Step::HandOff;
        }
        // Origin form only (RFC 9112 §3.2.1), of RFC 3986 characters only;
        // anything else (absolute form, `#`, `"`, `<`...) is hyper's to judge.
        let Some(target) = req.path.filter(|t| t.starts_with('/') && t.bytes().all(is_target_char)) else {
            return Http1Step::HandOff;
        };
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let Some((status, content_type, body)) = self.discovery_answer(path, query, self.client_addr()) else {
            return Http1Step::HandOff;
        };
        write_response(out, status, content_type, &body);
        Http1Step::Answered(consumed)
    }
}

impl ScepService {
    /// An OCSP POST (RFC 6960 Appendix A.1) to `/pki/ocsp` whose body has
    /// arrived with its head and that the responder can answer from memory
    /// ([`scep_issuers::ocsp::OcspResponder::respond_from_memory`]: a kept
    /// answer, or remembered statuses and one signature): answered here, with
    /// the headers hyper's route sends (`content-type`, `cache-control:
    /// no-store`, `content-length`, `date`) and counted in the same metric.
    /// Anything else, including a body still on its way (hyper then reads it
    /// under its body timeout) or a status that needs the database, is
    /// [`Http1Step::HandOff`].
    fn answer_ocsp_post(
        &self,
        req: &httparse::Request<'_, '_>,
        after_head: &[u8],
        head_len: usize,
        out: &mut Vec<u8>,
    ) -> Http1Step {
        if !matches!(req.path, Some("/pki/ocsp" | "/pki/ocsp/")) {
            return Http1Step::HandOff;
        }
        let Some(length) = ocsp_body_length(req.headers) else { return Http1Step::HandOff };
        let Some(body) = after_head.get(..length) else { return Http1Step::HandOff };
        let Some(der) = self.ocsp_answer_from_memory(body) else { return Http1Step::HandOff };
        write_ocsp_response(out, &der);
        Http1Step::Answered(head_len + length)
    }
}

/// The body length of a plain OCSP POST: one `content-length` up to
/// [`crate::http::pki::MAX_OCSP_REQUEST`], `content-type:
/// application/ocsp-request`, and nothing that changes the connection or
/// the framing (`transfer-encoding`, `expect`, `upgrade`, `connection` other
/// than `keep-alive`). `None`: hyper's to answer.
fn ocsp_body_length(headers: &[httparse::Header<'_>]) -> Option<usize> {
    let mut length = None;
    let mut media_ok = false;
    for h in headers {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            let n = content_length(h.value)?;
            if length.replace(n).is_some() || n == 0 || n > crate::http::pki::MAX_OCSP_REQUEST {
                return None;
            }
        } else if name.eq_ignore_ascii_case("content-type") {
            let media = std::str::from_utf8(h.value).ok()?.split(';').next().unwrap_or("").trim();
            media_ok = media.eq_ignore_ascii_case("application/ocsp-request");
        } else if name.eq_ignore_ascii_case("connection") {
            if !h.value.eq_ignore_ascii_case(b"keep-alive") {
                return None;
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            || name.eq_ignore_ascii_case("expect")
            || name.eq_ignore_ascii_case("upgrade")
        {
            return None;
        }
    }
    length.filter(|_| media_ok)
}

/// A `Content-Length` value: `1*DIGIT` (RFC 9110 §8.6), with at most the
/// optional whitespace a field value may have around it (SP and HTAB, RFC
/// 9110 §5.5). `None` for anything else (a sign, Unicode whitespace such as
/// NBSP or NEL, a list, a length that overflows): hyper reads the request
/// again and answers 400 (RFC 9112 §6.3), so the framing never depends on
/// which path read the head.
//= https://www.rfc-editor.org/rfc/rfc9110#section-8.6
//# Content-Length = 1*DIGIT
fn content_length(value: &[u8]) -> Option<usize> {
    let is_ows = |b: &u8| matches!(b, b' ' | b'\t');
    let start = value.iter().position(|b| !is_ows(b))?;
    let end = value.iter().rposition(|b| !is_ows(b))? + 1;
    value[start..end].iter().try_fold(0usize, |n, &b| {
        if b.is_ascii_digit() { n.checked_mul(10)?.checked_add(usize::from(b - b'0')) } else { None }
    })
}

/// An OCSP answer as hyper writes the route's `http::Response`
/// (`http::pki`: `content-type`, `cache-control: no-store`, then hyper's
/// `content-length` and `date`).
fn write_ocsp_response(out: &mut Vec<u8>, der: &[u8]) {
    out.extend_from_slice(
        b"HTTP/1.1 200 OK\r\ncontent-type: application/ocsp-response\r\ncache-control: no-store\r\ncontent-length: ",
    );
    out.extend_from_slice(itoa::Buffer::new().format(der.len()).as_bytes());
    out.extend_from_slice(b"\r\ndate: ");
    with_http_date(|date| out.extend_from_slice(date));
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(der);
}

/// Why httparse (with hyper's configuration) refused a request head, for the
/// 400's body.
fn malformed_head(buf: &[u8], error: httparse::Error) -> &'static str {
    // A TLS record of type handshake (22), protocol version 3.x (RFC 8446 §5.1).
    if buf.starts_with(&[0x16, 0x03]) {
        return "a TLS handshake where plain HTTP was expected: this port serves http://, not https:// \
                (or configure [server.tls])";
    }
    match error {
        httparse::Error::Version => "unsupported HTTP version: HTTP/1.1, HTTP/1.0 or HTTP/2 only (RFC 9112 §2.3)",
        httparse::Error::HeaderName => "a header field name is not a token (RFC 9110 §5.1)",
        httparse::Error::HeaderValue => "a header field value has a control character (RFC 9110 §5.5)",
        httparse::Error::NewLine => "a line of the request head does not end in CRLF (RFC 9112 §2.2)",
        _ => "the request line is not `method SP request-target SP HTTP-version` (RFC 9112 §3)",
    }
}

/// A 400 that ends the connection, with `reason` as its text body.
fn write_refusal(out: &mut Vec<u8>, reason: &str) {
    let body_len = "bad request: ".len() + reason.len() + 1;
    out.extend_from_slice(
        b"HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain; charset=utf-8\r\nconnection: close\r\n",
    );
    out.extend_from_slice(b"content-length: ");
    out.extend_from_slice(itoa::Buffer::new().format(body_len).as_bytes());
    out.extend_from_slice(b"\r\ndate: ");
    with_http_date(|date| out.extend_from_slice(date));
    out.extend_from_slice(b"\r\n\r\nbad request: ");
    out.extend_from_slice(reason.as_bytes());
    out.push(b'\n');
}

/// RFC 3986 §3.3/§3.4: unreserved, percent (`%`), sub-delims, `:`, `@`,
/// `/` and `?`.
fn is_target_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=:@/?".contains(&b)
}

/// Exactly one `Host` header (RFC 9112 §3.2: a request without one, or with
/// more, is refused with 400 by [`ScepService`]'s routing, so the fast path
/// leaves it to hyper).
fn one_host(headers: &[httparse::Header<'_>]) -> bool {
    let mut hosts = headers.iter().filter(|h| h.name.eq_ignore_ascii_case("host"));
    hosts.next().is_some() && hosts.next().is_none()
}

/// No body, no expectation, no protocol change, the connection kept open.
fn plain_request(headers: &[httparse::Header<'_>]) -> bool {
    headers.iter().all(|h| {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            h.value == b"0"
        } else if name.eq_ignore_ascii_case("connection") {
            h.value.eq_ignore_ascii_case(b"keep-alive")
        } else {
            !(name.eq_ignore_ascii_case("transfer-encoding")
                || name.eq_ignore_ascii_case("expect")
                || name.eq_ignore_ascii_case("upgrade"))
        }
    })
}

/// The response as hyper writes it for the same `http::Response`
/// (`service::http_response`): lower-case names in that order, then `date`.
fn write_response(out: &mut Vec<u8>, status: u16, content_type: &str, body: &Bytes) {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(code.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(code.canonical_reason().unwrap_or("<none>").as_bytes());
    out.extend_from_slice(b"\r\ncontent-type: ");
    out.extend_from_slice(content_type.as_bytes());
    out.extend_from_slice(b"\r\ncontent-length: ");
    out.extend_from_slice(itoa::Buffer::new().format(body.len()).as_bytes());
    out.extend_from_slice(b"\r\ncache-control: no-store\r\ndate: ");
    with_http_date(|date| out.extend_from_slice(date));
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(body);
}

/// The HTTP version hyper may serve a connection with, as far as it is known
/// before hyper reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// Not known yet (cleartext, or TLS without ALPN): the fast path reads
    /// first, then hyper tells HTTP/1 from the HTTP/2 preface.
    Detect,
    /// HTTP/1 only: TLS ALPN chose `http/1.1`, or the fast path answered a
    /// request, after which the HTTP/2 preface is no longer a connection's
    /// first bytes ([`FastConnection::protocol_after`]).
    Http1,
    /// HTTP/2 only: TLS ALPN chose `h2`. hyper from the first byte, no fast path.
    Http2,
}

impl Protocol {
    /// What TLS ALPN (RFC 7301; `h2` is HTTP/2 over TLS, RFC 9113 §3.2) chose,
    /// or [`Self::Detect`] when it chose nothing.
    pub fn from_alpn(alpn: Option<&[u8]>) -> Self {
        match alpn {
            Some(b"h2") => Self::Http2,
            Some(b"http/1.1") => Self::Http1,
            _ => Self::Detect,
        }
    }

    /// Whether the connection may start with HTTP/1.1 requests, for the fast path.
    pub fn fast_path(self) -> bool {
        self != Self::Http2
    }
}

/// What a transport does next for a [`FastConnection`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Write [`FastConnection::output`], then call [`FastConnection::written`].
    Write,
    /// Read into [`FastConnection::read_buf`], then call [`FastConnection::filled`].
    Read,
    /// Write [`FastConnection::output`] if not empty, then give hyper the
    /// connection behind [`FastConnection::into_unanswered`] ([`Prefixed`]).
    HandOff,
    /// Write [`FastConnection::output`] (the answers, then a 400 for a head
    /// that is not HTTP/1.1), then close the connection.
    Close,
}

/// The fast path's state for one connection: the bytes read and not yet
/// answered, and the answers not yet written. Sans-IO: the transport owns the
/// socket, the timer and the shutdown signal.
#[derive(Debug, Default)]
pub struct FastConnection {
    buf: Vec<u8>,
    filled: usize,
    out: Vec<u8>,
    /// A request was answered here: the connection is HTTP/1.1.
    answered: bool,
}

impl FastConnection {
    /// A connection with nothing read yet.
    pub fn new() -> Self {
        Self { buf: vec![0; READ_STEP], filled: 0, out: Vec::new(), answered: false }
    }

    /// Answers the complete fast-path requests buffered, in order, until the
    /// answers reach [`WRITE_HIGH_WATER`], a request needs hyper, or the
    /// buffer ends with a partial head.
    pub fn answer(&mut self, service: &ScepService) -> Next {
        let mut answered = 0;
        let next = loop {
            if self.out.len() >= WRITE_HIGH_WATER {
                break Next::Write;
            }
            match service.answer_http1(&self.buf[answered..self.filled], &mut self.out) {
                Http1Step::Answered(n) => answered += n,
                Http1Step::Incomplete => break if self.out.is_empty() { Next::Read } else { Next::Write },
                Http1Step::HandOff => break Next::HandOff,
                Http1Step::Refused => break Next::Close,
            }
        };
        if answered > 0 {
            self.answered = true;
            self.buf.copy_within(answered..self.filled, 0);
            self.filled -= answered;
        }
        next
    }

    /// The answers to write.
    pub fn output(&self) -> &[u8] {
        &self.out
    }

    /// The answers were written: forget them (and a buffer grown past
    /// [`WRITE_HIGH_WATER`], so an idle connection holds little).
    pub fn written(&mut self) {
        if self.out.capacity() > WRITE_HIGH_WATER {
            self.out = Vec::new();
        } else {
            self.out.clear();
        }
    }

    /// Where the next read goes (never empty: it grows by [`READ_STEP`]).
    pub fn read_buf(&mut self) -> &mut [u8] {
        if self.filled == self.buf.len() {
            self.buf.resize(self.filled + READ_STEP, 0);
        }
        &mut self.buf[self.filled..]
    }

    /// `n` bytes were read into [`Self::read_buf`].
    pub fn filled(&mut self, n: usize) {
        self.filled = (self.filled + n).min(self.buf.len());
    }

    /// Nothing of a next request has arrived.
    pub fn is_idle(&self) -> bool {
        self.filled == 0
    }

    /// The protocol hyper serves the rest of the connection with, when it
    /// started as `protocol`: HTTP/1 only once a request was answered here,
    /// so that an HTTP/2 preface after HTTP/1.1 requests is refused (hyper
    /// closes the connection) instead of switching it to HTTP/2: with
    /// prior knowledge the preface opens the connection (RFC 9113 §3.3, §3.4).
    pub fn protocol_after(&self, protocol: Protocol) -> Protocol {
        if self.answered { Protocol::Http1 } else { protocol }
    }

    /// The bytes read and not answered, for hyper.
    pub fn into_unanswered(mut self) -> Vec<u8> {
        self.buf.truncate(self.filled);
        self.buf
    }
}

/// A connection whose first bytes were already read by the fast path: reads
/// return those first, then the connection's (hyper's I/O traits, so one
/// wrapper serves both transports' streams).
#[derive(Debug)]
pub struct Prefixed<I> {
    prefix: Vec<u8>,
    read: usize,
    inner: I,
}

impl<I> Prefixed<I> {
    /// `inner`, whose reads start with `prefix`.
    pub fn new(prefix: Vec<u8>, inner: I) -> Self {
        Self { prefix, read: 0, inner }
    }
}

impl<I: Read + Unpin> Read for Prefixed<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if this.read < this.prefix.len() {
            let rest = &this.prefix[this.read..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.read += n;
            if this.read == this.prefix.len() {
                this.prefix = Vec::new();
                this.read = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<I: Write + Unpin> Write for Prefixed<I> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
}

/// An IMF-fixdate is 29 bytes (RFC 9110 §5.6.7).
const DATE_LEN: usize = 29;

thread_local! {
    /// The `Date` value of the current second, per thread (as hyper keeps it).
    static DATE: RefCell<(u64, [u8; DATE_LEN])> = const { RefCell::new((u64::MAX, [0; DATE_LEN])) };
}

/// Calls `f` with the current `Date` header value (RFC 9110 §6.6.1).
fn with_http_date<R>(f: impl FnOnce(&[u8]) -> R) -> R {
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != secs {
            let text = httpdate::fmt_http_date(now);
            if text.len() == DATE_LEN {
                cached.1.copy_from_slice(text.as_bytes());
                cached.0 = secs;
            }
        }
        f(&cached.1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use futures_lite::future::block_on;

    use crate::settings::ServerSettings;
    use crate::state::{Profiles, ServiceState};
    use crate::store::audit::{AuditLog, AuditQuery};
    use crate::testutil::{TestDir, section};
    use crate::tls::ConnectionInfo;
    use crate::wiring::profile::BuildContext;

    fn service(dir: &TestDir) -> ScepService {
        let mut ctx = BuildContext::new(None, dir.path(), dir.now());
        let profiles = vec![section(dir, "corp").build(0, &mut ctx).unwrap()];
        let state = ServiceState::new(ServerSettings::default(), Profiles::new(profiles, "corp".into()).unwrap());
        ScepService::new(Arc::new(state), None)
    }

    /// What hyper's service path answers for the same request (`answer_discovery_now`).
    fn hyper_view(svc: &ScepService, target: &str) -> (u16, Vec<(String, String)>, Bytes) {
        let req = http::Request::get(target).body(()).unwrap();
        let r = svc.answer_discovery_now(&req).unwrap();
        let headers =
            r.headers().iter().map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap().to_string())).collect();
        let status = r.status().as_u16();
        let body = block_on(http_body_util::BodyExt::collect(r.into_body())).unwrap().to_bytes();
        (status, headers, body)
    }

    fn parse_response(bytes: &[u8]) -> (u16, Vec<(String, String)>, &[u8]) {
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut resp = httparse::Response::new(&mut headers);
        let httparse::Status::Complete(n) = resp.parse(bytes).unwrap() else { panic!("partial response") };
        let headers = resp
            .headers
            .iter()
            .map(|h| (h.name.to_string(), String::from_utf8(h.value.to_vec()).unwrap()))
            .collect::<Vec<_>>();
        (resp.code.unwrap(), headers, &bytes[n..])
    }

    #[test]
    fn discovery_gets_are_answered_as_hyper_answers_them() {
        let dir = TestDir::new();
        let svc = service(&dir);
        for target in ["/scep?operation=GetCACaps", "/scep/corp/pkiclient.exe?operation=GetCACert&message=x"] {
            let request = format!("GET {target} HTTP/1.1\r\nHost: scep.example\r\nUser-Agent: t\r\n\r\n");
            let mut out = Vec::new();
            assert_eq!(svc.answer_http1(request.as_bytes(), &mut out), Http1Step::Answered(request.len()));
            let (status, headers, body) = parse_response(&out);
            let (want_status, want_headers, want_body) = hyper_view(&svc, target);
            assert_eq!(status, want_status, "{target}");
            assert_eq!(body, &want_body[..], "{target}");
            let (date, rest) = headers.split_last().unwrap();
            assert_eq!(rest, &want_headers[..], "{target}: the same headers in the same order, then date");
            assert_eq!(date.0, "date");
            assert!(httpdate::parse_http_date(&date.1).is_ok(), "{date:?}");
        }
    }

    /// `url_aliases` and NDES's default path are answered on the fast path
    /// exactly as hyper answers them, from the profile the alias names.
    #[test]
    fn aliases_are_answered_as_hyper_answers_them() {
        let dir = TestDir::new();
        let mut ctx = BuildContext::new(None, dir.path(), dir.now());
        let mut iot = section(&dir, "iot");
        iot.url_aliases = Some(vec!["/iot/enroll".into()]);
        iot.ciphers = Some(vec!["aes256".into()]);
        let profiles = vec![section(&dir, "corp").build(0, &mut ctx).unwrap(), iot.build(1, &mut ctx).unwrap()];
        let state = ServiceState::new(ServerSettings::default(), Profiles::new(profiles, "corp".into()).unwrap());
        let svc = ScepService::new(Arc::new(state), None);
        let caps = |target: &str| {
            let request = format!("GET {target} HTTP/1.1\r\nHost: h\r\n\r\n");
            let mut out = Vec::new();
            assert_eq!(svc.answer_http1(request.as_bytes(), &mut out), Http1Step::Answered(request.len()), "{target}");
            let (status, _, body) = parse_response(&out);
            let (want_status, _, want_body) = hyper_view(&svc, target);
            assert_eq!((status, body), (want_status, &want_body[..]), "{target}");
            String::from_utf8(body.to_vec()).unwrap()
        };
        let corp = caps("/scep/corp?operation=GetCACaps");
        let iot = caps("/scep/iot?operation=GetCACaps");
        assert_ne!(corp, iot, "the two profiles must be told apart by their capabilities");
        for target in [
            "/certsrv/mscep/mscep.dll?operation=GetCACaps",
            "/certsrv/mscep/mscep.dll/pkiclient.exe?operation=GetCACaps",
            "/CertSrv/mscep/MSCEP.DLL/?operation=GetCACaps",
        ] {
            assert_eq!(caps(target), corp, "{target}");
        }
        for target in ["/iot/enroll?operation=GetCACaps", "/iot/enroll/pkiclient.exe?operation=GetCACaps"] {
            assert_eq!(caps(target), iot, "{target}");
        }
        // Not an alias: handed to hyper, which answers 404.
        for target in ["/iot/enroll/x?operation=GetCACaps", "/certsrv/mscep?operation=GetCACaps"] {
            let request = format!("GET {target} HTTP/1.1\r\nHost: h\r\n\r\n");
            assert_eq!(svc.answer_http1(request.as_bytes(), &mut Vec::new()), Http1Step::HandOff, "{target}");
        }
    }

    #[test]
    fn pipelined_requests_are_answered_in_order() {
        let dir = TestDir::new();
        let svc = service(&dir);
        let one = "GET /scep?operation=GetCACaps HTTP/1.1\r\nHost: h\r\n\r\n";
        let two = "GET /scep?operation=GetCACert HTTP/1.1\r\nHost: h\r\nConnection: Keep-Alive\r\n\r\n";
        let buf = format!("{one}{two}GET /scep?oper");
        let mut out = Vec::new();
        assert_eq!(svc.answer_http1(buf.as_bytes(), &mut out), Http1Step::Answered(one.len()));
        let first = out.len();
        assert_eq!(svc.answer_http1(&buf.as_bytes()[one.len()..], &mut out), Http1Step::Answered(two.len()));
        assert_eq!(svc.answer_http1(&buf.as_bytes()[one.len() + two.len()..], &mut out), Http1Step::Incomplete);
        assert_eq!(parse_response(&out[..first]).1[0].1, "text/plain");
        assert_eq!(parse_response(&out[first..]).1[0].1, hyper_view(&svc, "/scep?operation=GetCACert").1[0].1);
    }

    #[test]
    fn everything_else_is_handed_to_hyper() {
        let dir = TestDir::new();
        let svc = service(&dir);
        let cases = [
            "POST /scep?operation=PKIOperation HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc",
            "HEAD /scep?operation=GetCACaps HTTP/1.1\r\nHost: h\r\n\r\n",
            "GET /scep?operation=GetCACaps HTTP/1.0\r\nHost: h\r\n\r\n",
            "GET /scep?operation=GetCACaps HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
            "GET /scep?operation=GetCACaps HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n",
            "GET /scep?operation=GetCACaps HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n\r\n",
            "GET /scep?operation=GetCACaps HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nab",
            "GET /scep?operation=GetCACaps HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "GET http://h/scep?operation=GetCACaps HTTP/1.1\r\nHost: h\r\n\r\n",
            "GET /scep?operation=PKIOperation&message=AAAA HTTP/1.1\r\nHost: h\r\n\r\n",
            "GET /scep?operation=GetCACaps&operation=GetCACert HTTP/1.1\r\nHost: h\r\n\r\n",
            "GET /scep/nope?operation=GetCACaps HTTP/1.1\r\nHost: h\r\n\r\n",
            "GET /metrics HTTP/1.1\r\nHost: h\r\n\r\n",
            "GET /ui/scep HTTP/1.1\r\nHost: h\r\n\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            // Targets hyper's URI parser refuses (400) or cuts (`#`): hyper decides.
            "GET /scep?operation=GetCACaps&x=<a> HTTP/1.1\r\nHost: h\r\n\r\n",
            "GET /scep?operation=GetCACaps&x=\" HTTP/1.1\r\nHost: h\r\n\r\n",
            "GET /scep?x=#&operation=GetCACert HTTP/1.1\r\nHost: h\r\n\r\n",
            "GET /scep?operation=GetCACaps&x={} HTTP/1.1\r\nHost: h\r\n\r\n",
            // RFC 9112 §3.2: no Host, or two (hyper's service answers 400).
            "GET /scep?operation=GetCACaps HTTP/1.1\r\n\r\n",
            "GET /scep?operation=GetCACaps HTTP/1.1\r\nHost: h\r\nhost: h\r\n\r\n",
            "GET /scep?operation=GetCACaps HTTP/1.1\r\nHost: a\r\nUser-Agent: t\r\nHOST: b\r\n\r\n",
        ];
        for case in cases {
            let mut out = Vec::new();
            assert_eq!(svc.answer_http1(case.as_bytes(), &mut out), Http1Step::HandOff, "{case:?}");
            assert!(out.is_empty(), "{case:?}");
        }
        let many = format!(
            "GET /scep?operation=GetCACaps HTTP/1.1\r\nHost: h\r\n{}\r\n",
            "X-A: b\r\n".repeat(MAX_HEADERS + 1)
        );
        assert_eq!(svc.answer_http1(many.as_bytes(), &mut Vec::new()), Http1Step::HandOff);
        let huge = format!("GET /scep?operation=GetCACaps HTTP/1.1\r\nHost: h\r\nX-A: {}", "b".repeat(MAX_HEAD));
        assert_eq!(svc.answer_http1(huge.as_bytes(), &mut Vec::new()), Http1Step::HandOff);
        assert_eq!(svc.answer_http1(&huge.as_bytes()[..100], &mut Vec::new()), Http1Step::Incomplete);
        assert_eq!(svc.answer_http1(b"", &mut Vec::new()), Http1Step::Incomplete);
    }

    #[test]
    fn heads_that_are_not_http1_are_refused_with_the_reason() {
        let dir = TestDir::new();
        let svc = service(&dir);
        let cases: [(&[u8], &str); 6] = [
            (b"GET /scep?operation=GetCACaps HTTP/1.1\r\nHost: h\r\nBad Header\r\n\r\n", "header field name"),
            (b"GET /scep HTTP/1.1\r\nHost: h\r\nX-A: a\x01b\r\n\r\n", "header field value"),
            (b"GET /scep HTTP/1.2\r\nHost: h\r\n\r\n", "HTTP version"),
            (b"G(T /scep HTTP/1.1\r\nHost: h\r\n\r\n", "request line"),
            (b"GET /scep HTTP/1.1\rX", "CRLF"),
            (b"\x16\x03\x01\x00\xc4\x01\x00\x00\xc0\x03\x03", "TLS handshake"),
        ];
        for (head, reason) in cases {
            let mut out = Vec::new();
            assert_eq!(svc.answer_http1(head, &mut out), Http1Step::Refused, "{head:?}");
            let (status, headers, body) = parse_response(&out);
            assert_eq!(status, 400, "{head:?}");
            assert!(headers.contains(&("connection".to_string(), "close".to_string())), "{headers:?}");
            let text = std::str::from_utf8(body).unwrap();
            assert!(text.starts_with("bad request: ") && text.contains(reason), "{head:?}: {text:?}");
            let length = headers.iter().find(|(n, _)| n == "content-length").map(|(_, v)| v.parse::<usize>().unwrap());
            assert_eq!(length, Some(body.len()), "{head:?}");
        }
        // The HTTP/2 preface is hyper's (more fields than MAX_HEADERS too:
        // `everything_else_is_handed_to_hyper`).
        assert_eq!(svc.answer_http1(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", &mut Vec::new()), Http1Step::HandOff);

        // On a connection: the answers before it, then the 400, then close.
        let mut conn = FastConnection::new();
        let stream = b"GET /scep?operation=GetCACaps HTTP/1.1\r\nHost: h\r\n\r\nGET / HTTP/1.1\r\nBad Header\r\n\r\n";
        feed(&mut conn, stream, stream.len());
        assert_eq!(conn.answer(&svc), Next::Close);
        let out = conn.output();
        assert!(out.starts_with(b"HTTP/1.1 200 "), "{:?}", String::from_utf8_lossy(out));
        assert_eq!(out.windows(24).filter(|w| w == b"HTTP/1.1 400 Bad Request").count(), 1);
    }

    #[test]
    fn answers_are_counted_and_tallied_with_the_client_like_every_other() {
        let dir = TestDir::new();
        let mut ctx = BuildContext::new(None, dir.path(), dir.now());
        let profiles = vec![section(&dir, "corp").build(0, &mut ctx).unwrap()];
        let audit = AuditLog::open(&dir.path().join("audit.db"), 30, "node-a").unwrap();
        let state = ServiceState::new(ServerSettings::default(), Profiles::new(profiles, "corp".into()).unwrap())
            .with_audit(audit.clone());
        let client: std::net::SocketAddr = "192.0.2.7:40000".parse().unwrap();
        let svc = ScepService::new(Arc::new(state), None).with_connection(ConnectionInfo::plain(client));
        let request = b"GET /scep?operation=GetCACaps HTTP/1.1\r\nHost: h\r\n\r\n";
        for _ in 0..3 {
            assert_eq!(svc.answer_http1(request, &mut Vec::new()), Http1Step::Answered(request.len()));
        }
        let text = crate::operator::metrics::render(svc.state(), scep_engine::UnixTime::now());
        let line = text
            .lines()
            .find(|l| l.starts_with("scepd_requests_total{") && l.contains("GetCACaps"))
            .unwrap_or_else(|| panic!("{text}"));
        assert!(line.ends_with(" 3"), "{line}");
        block_on(audit.flush()).unwrap();
        let events = block_on(audit.query(AuditQuery { limit: 10, ..AuditQuery::default() })).unwrap();
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0].action, "scep_getcacaps");
        assert_eq!(events[0].count, 3);
        assert_eq!(events[0].client_addr.as_deref(), Some("192.0.2.7"), "the tally's client is the connection's");
    }

    #[test]
    fn content_length_is_digits_only() {
        for (value, want) in [
            (&b"3"[..], Some(3)),
            (b"0", Some(0)),
            (b" \t42\t ", Some(42)),
            (b"007", Some(7)),
            (b"+3", None),
            (b"-3", None),
            (b"3\xc2\xa0", None),
            (b"\xc2\x853", None),
            (b"3\x0b", None),
            (b"3, 3", None),
            (b"3 3", None),
            (b"0x3", None),
            (b"", None),
            (b" \t", None),
            (b"99999999999999999999999", None),
        ] {
            assert_eq!(content_length(value), want, "{:?}", String::from_utf8_lossy(value));
        }
    }

    const CACAPS: &[u8] = b"GET /scep?operation=GetCACaps HTTP/1.1\r\nHost: h\r\n\r\n";

    /// Feeds `bytes` to `conn` as reads of at most `chunk` bytes.
    fn feed(conn: &mut FastConnection, mut bytes: &[u8], chunk: usize) {
        while !bytes.is_empty() {
            let room = conn.read_buf();
            let n = room.len().min(chunk).min(bytes.len());
            room[..n].copy_from_slice(&bytes[..n]);
            conn.filled(n);
            bytes = &bytes[n..];
        }
    }

    #[test]
    fn a_connection_answers_in_order_and_bounds_what_it_holds() {
        let dir = TestDir::new();
        let svc = service(&dir);
        let mut conn = FastConnection::new();
        assert_eq!(conn.answer(&svc), Next::Read);
        assert!(conn.is_idle());
        // A request arriving in pieces.
        feed(&mut conn, &CACAPS[..10], 10);
        assert_eq!(conn.answer(&svc), Next::Read);
        assert!(!conn.is_idle());
        feed(&mut conn, &CACAPS[10..], 7);
        assert_eq!(conn.answer(&svc), Next::Write);
        let one = conn.output().len();
        assert!(conn.output().starts_with(b"HTTP/1.1 200 OK\r\n"));
        conn.written();
        assert!(conn.is_idle());
        // Thousands pipelined: written in batches of about WRITE_HIGH_WATER.
        let many = CACAPS.repeat(3000);
        let mut sent = &many[..];
        let mut answers = 0;
        let mut rounds = 0;
        while !sent.is_empty() || !conn.is_idle() {
            rounds += 1;
            assert!(rounds < 10_000);
            let room = conn.read_buf().len();
            let n = room.min(sent.len());
            feed(&mut conn, &sent[..n], n);
            sent = &sent[n..];
            loop {
                match conn.answer(&svc) {
                    Next::Write => {
                        assert!(conn.output().len() < WRITE_HIGH_WATER + one, "{}", conn.output().len());
                        answers += conn.output().len() / one;
                        conn.written();
                    }
                    Next::Read => break,
                    Next::HandOff | Next::Close => panic!("hand-off or refusal"),
                }
            }
        }
        assert_eq!(answers, 3000);
        assert!(conn.out.capacity() <= WRITE_HIGH_WATER + one);
        assert!(conn.buf.len() <= MAX_HEAD + READ_STEP);
    }

    #[test]
    fn a_connection_hands_off_everything_not_answered() {
        let dir = TestDir::new();
        let svc = service(&dir);
        let post = b"POST /scep?operation=PKIOperation HTTP/1.1\r\nContent-Length: 2\r\n\r\nab";
        let mut conn = FastConnection::new();
        feed(&mut conn, &[CACAPS, CACAPS, post, CACAPS].concat(), 1000);
        assert_eq!(conn.answer(&svc), Next::HandOff);
        assert_eq!(conn.output().len(), 2 * (conn.output().len() / 2), "two answers before the hand-off");
        assert!(!conn.output().is_empty());
        assert_eq!(conn.into_unanswered(), [post, CACAPS].concat());
        // A head that never ends is handed off (hyper answers 431) instead of growing.
        let mut conn = FastConnection::new();
        let endless = [&CACAPS[..CACAPS.len() - 2], b"X-A: ", &b"b".repeat(4 * MAX_HEAD)[..]].concat();
        let mut rest = &endless[..];
        let next = loop {
            let room = conn.read_buf().len();
            let n = room.min(rest.len());
            feed(&mut conn, &rest[..n], n);
            rest = &rest[n..];
            match conn.answer(&svc) {
                Next::Read => assert!(!rest.is_empty(), "ran out of input"),
                other => break other,
            }
        };
        assert_eq!(next, Next::HandOff);
        let held = conn.into_unanswered();
        assert!(held.len() >= MAX_HEAD && held.len() <= MAX_HEAD + READ_STEP, "{}", held.len());
        assert_eq!(&endless[..held.len()], &held[..]);
    }

    /// hyper may detect HTTP/2 only on a connection whose first bytes the
    /// fast path did not answer; ALPN decides over TLS.
    #[test]
    fn a_connection_answered_here_stays_http1() {
        let dir = TestDir::new();
        let svc = service(&dir);
        let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
        let mut conn = FastConnection::new();
        feed(&mut conn, preface, preface.len());
        assert_eq!(conn.answer(&svc), Next::HandOff);
        assert_eq!(conn.protocol_after(Protocol::Detect), Protocol::Detect, "prior knowledge: hyper detects h2");
        let mut conn = FastConnection::new();
        feed(&mut conn, &[CACAPS, preface].concat(), usize::MAX);
        assert_eq!(conn.answer(&svc), Next::HandOff);
        assert!(conn.output().starts_with(b"HTTP/1.1 200 "));
        assert_eq!(conn.protocol_after(Protocol::Detect), Protocol::Http1, "the preface came after a request");
        assert_eq!(conn.into_unanswered(), preface);
        // Answered in one round, handed off in the next.
        let mut conn = FastConnection::new();
        feed(&mut conn, CACAPS, usize::MAX);
        assert_eq!(conn.answer(&svc), Next::Write);
        conn.written();
        feed(&mut conn, preface, usize::MAX);
        assert_eq!(conn.answer(&svc), Next::HandOff);
        assert_eq!(conn.protocol_after(Protocol::Detect), Protocol::Http1);

        assert_eq!(Protocol::from_alpn(Some(b"h2")), Protocol::Http2);
        assert_eq!(Protocol::from_alpn(Some(b"http/1.1")), Protocol::Http1);
        assert_eq!(Protocol::from_alpn(None), Protocol::Detect);
        assert!(!Protocol::Http2.fast_path() && Protocol::Http1.fast_path() && Protocol::Detect.fast_path());
    }

    /// Runs `stream` through a [`FastConnection`] in reads of the sizes
    /// `chunk` gives, the way a transport does: (everything written with the
    /// `date` values blanked, the bytes handed to hyper or `None` when the
    /// stream ended or was refused).
    fn drive(svc: &ScepService, stream: &[u8], mut chunk: impl FnMut() -> usize) -> (Vec<u8>, Option<Vec<u8>>) {
        let mut conn = FastConnection::new();
        let mut written = Vec::new();
        let mut rest = stream;
        loop {
            match conn.answer(svc) {
                Next::Write => {
                    written.extend_from_slice(conn.output());
                    conn.written();
                }
                Next::HandOff => {
                    written.extend_from_slice(conn.output());
                    let mut handed = conn.into_unanswered();
                    handed.extend_from_slice(rest);
                    return (blank_dates(&written), Some(handed));
                }
                // A refusal ends the connection: its 400 is the last thing written.
                Next::Close => {
                    written.extend_from_slice(conn.output());
                    return (blank_dates(&written), None);
                }
                Next::Read if rest.is_empty() => {
                    assert!(conn.output().is_empty());
                    return (blank_dates(&written), None);
                }
                Next::Read => {
                    let room = conn.read_buf();
                    let n = chunk().clamp(1, room.len()).min(rest.len());
                    room[..n].copy_from_slice(&rest[..n]);
                    conn.filled(n);
                    rest = &rest[n..];
                }
            }
        }
    }

    fn blank_dates(bytes: &[u8]) -> Vec<u8> {
        let mut out = bytes.to_vec();
        let mut at = 0;
        while let Some(i) = out[at..].windows(8).position(|w| w == b"\r\ndate: ") {
            let start = at + i + 8;
            out[start..start + DATE_LEN].fill(b'-');
            at = start + DATE_LEN;
        }
        out
    }

    /// Whatever the reads look like (a byte at a time, whole, in between), the
    /// same stream gives the same answers and hands hyper the same bytes: a
    /// seeded generator builds streams of valid, pipelined, partial,
    /// hand-off and garbage requests.
    #[test]
    fn answers_do_not_depend_on_how_the_bytes_arrive() {
        let dir = TestDir::new();
        let svc = service(&dir);
        let pieces: [&[u8]; 12] = [
            CACAPS,
            b"GET /scep/corp/pkiclient.exe?operation=GetCACert&message=ca HTTP/1.1\r\nHost: h\r\nConnection: keep-alive\r\n\r\n",
            b"GET /scep?operation=GetCACaps HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n",
            b"POST /scep?operation=PKIOperation HTTP/1.1\r\nContent-Length: 4\r\n\r\nabcd",
            b"GET /scep?operation=GetCACaps HTTP/1.1\r\nConnection: close\r\n\r\n",
            b"GET /healthz HTTP/1.1\r\n\r\n",
            b"GET /scep?operation=GetCACaps&x=<a> HTTP/1.1\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"\r\n",
            b"GET /scep?operation=GetCA",
            b"\x00\xff garbage \x7f",
            b"GET /scep?operation=GetCACaps HTTP/1.1\r\nHost: h\r\nX-Long: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n",
        ];
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            // xorshift64*: deterministic, so a failure reproduces.
            seed ^= seed >> 12;
            seed ^= seed << 25;
            seed ^= seed >> 27;
            seed.wrapping_mul(0x2545_f491_4f6c_dd1d)
        };
        let (mut answered, mut handed_off) = (0, 0);
        for round in 0..300 {
            let count = 1 + next() % 40;
            // Mostly fast-path requests, so that streams run long before a hand-off.
            let mut pick = || match next() % 32 {
                k @ 0..=26 => pieces[(k % 3) as usize],
                k => pieces[3 + (k % 9) as usize],
            };
            let stream: Vec<u8> = (0..count).flat_map(|_| pick().iter().copied()).collect();
            let whole = drive(&svc, &stream, || usize::MAX);
            let bytewise = drive(&svc, &stream, || 1);
            let mut sizes = next();
            let random = drive(&svc, &stream, || {
                sizes = sizes.rotate_left(7);
                (sizes % 200) as usize + 1
            });
            assert_eq!(whole, bytewise, "round {round}: {:?}", String::from_utf8_lossy(&stream));
            assert_eq!(whole, random, "round {round}: {:?}", String::from_utf8_lossy(&stream));
            // Every byte is either answered or handed to hyper, in order.
            if let Some(handed) = &whole.1 {
                assert!(stream.ends_with(handed), "round {round}");
                handed_off += 1;
            }
            answered += whole.0.windows(9).filter(|w| w == b"HTTP/1.1 ").count();
        }
        // The streams exercise both outcomes, many times.
        assert!(answered > 1000 && handed_off > 100, "{answered} answers, {handed_off} hand-offs");
    }

    #[test]
    fn prefixed_reads_the_prefix_then_the_stream() {
        use hyper::rt::ReadBuf;
        struct Rest(&'static [u8]);
        impl Read for Rest {
            fn poll_read(
                mut self: Pin<&mut Self>,
                _: &mut Context<'_>,
                mut buf: ReadBufCursor<'_>,
            ) -> Poll<std::io::Result<()>> {
                let n = self.0.len().min(buf.remaining());
                buf.put_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Poll::Ready(Ok(()))
            }
        }
        let mut io = Prefixed::new(b"GET / HT".to_vec(), Rest(b"TP/1.1\r\n\r\n"));
        let mut got = Vec::new();
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        loop {
            let mut storage = [std::mem::MaybeUninit::uninit(); 3];
            let mut buf = ReadBuf::uninit(&mut storage);
            assert!(Pin::new(&mut io).poll_read(&mut cx, buf.unfilled()).is_ready());
            if buf.filled().is_empty() {
                break;
            }
            got.extend_from_slice(buf.filled());
        }
        assert_eq!(got, b"GET / HTTP/1.1\r\n\r\n");
    }

    /// A service whose state has a local CA's OCSP responder, and an
    /// OCSPRequest with a 32-byte nonce (RFC 8954) for a certificate that CA
    /// issued.
    fn ocsp_service(dir: &TestDir) -> (ScepService, Arc<scep_issuers::ocsp::OcspResponder>, Vec<u8>) {
        use scep_engine::issue::{Authorization, EnrollRequest, IssuancePolicy, IssueOutcome, IssueRequest};
        use scep_engine::wire::{Writer, tag};
        let ca_dir = dir.path().join("ocsp-ca");
        std::fs::create_dir_all(&ca_dir).unwrap();
        let files = scep_issuers::bootstrap(&ca_dir, &scep_issuers::BootstrapOptions::default()).unwrap();
        let ca = scep_issuers::LocalCa::open(scep_issuers::LocalCaConfig::new(&files.ca_cert, &files.ca_key, &ca_dir))
            .unwrap();
        let (device, _) = scep_engine::crypto::EcPrivateKey::generate().unwrap();
        let request = IssueRequest::Enroll(EnrollRequest {
            profile: "corp".into(),
            transaction_id: "fast-ocsp".into(),
            csr_der: Vec::new(),
            subject_der: scep_issuers::x509_build::common_name("fast-ocsp"),
            spki_der: device.spki_der().to_vec(),
            subject_alt_names: Vec::new(),
            requested_ekus: Vec::new(),
            policy: IssuancePolicy::default(),
            authorization: Authorization::StaticChallenge,
            sid_extension: None,
        });
        let IssueOutcome::Issued { certificate, .. } = ca.handle_blocking(&request, dir.now()) else {
            panic!("not issued")
        };
        let leaf = scep_engine::x509::CertificateRef::parse(&certificate).unwrap();
        let ca_cert = scep_engine::x509::CertificateRef::parse(ca.signer().certificate()).unwrap();
        let sha1 = scep_engine::crypto::DigestAlg::Sha1;
        let mut w = Writer::new();
        w.sequence(|w| {
            w.sequence(|w| {
                w.sequence(|w| {
                    w.sequence(|w| {
                        w.sequence(|w| {
                            w.sequence(|w| {
                                w.oid(scep_engine::oid::SHA1);
                                w.null();
                            });
                            w.octet_string(&sha1.digest(ca_cert.subject));
                            w.octet_string(&sha1.digest(ca_cert.spki.key));
                            w.unsigned_integer(leaf.serial);
                        });
                    });
                });
                w.nested(tag::context_constructed(2), |w| {
                    w.sequence(|w| {
                        w.sequence(|w| {
                            w.oid(scep_engine::oid::OCSP_NONCE);
                            let mut nonce = Writer::new();
                            nonce.octet_string(&[0x4e; 32]);
                            w.octet_string(&nonce.into_vec());
                        });
                    });
                });
            });
        });
        let responder = Arc::new(scep_issuers::ocsp::OcspResponder::new(ca, Default::default()).unwrap());
        let mut ctx = BuildContext::new(None, dir.path(), dir.now());
        let profiles = vec![section(dir, "corp").build(0, &mut ctx).unwrap()];
        let state = ServiceState::new(ServerSettings::default(), Profiles::new(profiles, "corp".into()).unwrap())
            .with_relying_parties(Arc::clone(&responder));
        (ScepService::new(Arc::new(state), None), responder, w.into_vec())
    }

    fn ocsp_post(request: &[u8], extra_headers: &str) -> Vec<u8> {
        let mut post = format!(
            "POST /pki/ocsp HTTP/1.1\r\nHost: h\r\nContent-Type: application/ocsp-request\r\n{extra_headers}Content-Length: {}\r\n\r\n",
            request.len()
        )
        .into_bytes();
        post.extend_from_slice(request);
        post
    }

    #[test]
    fn ocsp_posts_the_responder_answers_from_memory_are_answered_here_pipelined() {
        let dir = TestDir::new();
        let (svc, responder, request) = ocsp_service(&dir);
        let post = ocsp_post(&request, "");
        // Nothing is in memory yet (no status, no responder key): hyper's route answers.
        assert_eq!(svc.answer_http1(&post, &mut Vec::new()), Http1Step::HandOff);
        let warm = responder.respond(&request, scep_engine::time::UnixTime::now());
        assert_eq!(warm.status, scep_engine::ocsp::ResponseStatus::Successful);

        // Two pipelined nonce POSTs and a GetCACaps in one read: all three here, in order.
        let caps = b"GET /scep?operation=GetCACaps HTTP/1.1\r\nHost: h\r\n\r\n";
        let mut conn = FastConnection::new();
        let mut input = [post.clone(), post.clone(), caps.to_vec()].concat();
        while !input.is_empty() {
            let buf = conn.read_buf();
            let n = buf.len().min(input.len());
            buf[..n].copy_from_slice(&input[..n]);
            conn.filled(n);
            input.drain(..n);
        }
        assert_eq!(conn.answer(&svc), Next::Write);
        assert!(conn.is_idle(), "every request was answered");
        let out = conn.output().to_vec();
        let mut rest = &out[..];
        for i in 0..2 {
            let (status, headers, after) = parse_response(rest);
            assert_eq!(status, 200);
            let names: Vec<&str> = headers.iter().map(|(n, _)| n.as_str()).collect();
            assert_eq!(names, ["content-type", "cache-control", "content-length", "date"], "answer {i}");
            assert_eq!(headers[0].1, "application/ocsp-response");
            assert_eq!(headers[1].1, "no-store", "a nonce answer is never cached");
            let len: usize = headers[2].1.parse().unwrap();
            let body = &after[..len];
            assert!(body.windows(32).any(|w| w == [0x4e; 32]), "answer {i} echoes the nonce");
            rest = &after[len..];
        }
        let (status, _, body) = parse_response(rest);
        assert_eq!(status, 200);
        assert!(String::from_utf8_lossy(body).contains("POSTPKIOperation"));
        let metrics = crate::operator::metrics::render(svc.state(), dir.now());
        assert!(metrics.contains("scepd_ocsp_responses_total{status=\"successful\"} 2"), "{metrics}");

        // What hyper must answer instead: a body still on its way, a closing
        // connection, another media type, no or an oversized length, another path.
        let handed_off = [
            post[..post.len() - 1].to_vec(),
            ocsp_post(&request, "Connection: close\r\n"),
            ocsp_post(&request, "Expect: 100-continue\r\n").to_vec(),
            String::from_utf8_lossy(&post).replace("application/ocsp-request", "application/octet-stream").into_bytes(),
            String::from_utf8_lossy(&post).replace("/pki/ocsp ", "/pki/ocsp/x ").into_bytes(),
            format!("POST /pki/ocsp HTTP/1.1\r\nHost: h\r\nContent-Type: application/ocsp-request\r\nContent-Length: {}\r\n\r\n", crate::http::pki::MAX_OCSP_REQUEST + 1).into_bytes(),
            b"POST /pki/ocsp HTTP/1.1\r\nHost: h\r\nContent-Type: application/ocsp-request\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec(),
        ];
        // RFC 9112 §3.2: no Host, or two.
        let no_host = [
            format!(
                "POST /pki/ocsp HTTP/1.1\r\nContent-Type: application/ocsp-request\r\nContent-Length: {}\r\n\r\n",
                request.len()
            )
            .as_bytes(),
            &request,
        ]
        .concat();
        for bytes in [no_host, ocsp_post(&request, "Host: h\r\n")] {
            assert_eq!(
                svc.answer_http1(&bytes, &mut Vec::new()),
                Http1Step::HandOff,
                "{:?}",
                String::from_utf8_lossy(&bytes)
            );
        }
        // Content-Length values hyper refuses (400): not `1*DIGIT` (RFC 9110
        // §8.6), though Rust's `str::trim` and `usize::from_str` take them.
        let length = request.len().to_string();
        let invalid_lengths =
            [format!("+{length}"), format!("{length}\u{a0}"), format!("\u{85}{length}"), format!("{length}\u{3000}")];
        let with_length = |value: &str| {
            let head = format!(
                "POST /pki/ocsp HTTP/1.1\r\nHost: h\r\nContent-Type: application/ocsp-request\r\nContent-Length: {value}\r\n\r\n"
            );
            [head.as_bytes(), &request].concat()
        };
        for value in &invalid_lengths {
            assert_eq!(svc.answer_http1(&with_length(value), &mut Vec::new()), Http1Step::HandOff, "{value:?}");
        }
        // Optional whitespace (SP, HTAB) around the digits is allowed.
        assert!(matches!(
            svc.answer_http1(&with_length(&format!("{length} \t")), &mut Vec::new()),
            Http1Step::Answered(_)
        ));
        for (i, bytes) in handed_off.iter().enumerate() {
            assert_eq!(svc.answer_http1(bytes, &mut Vec::new()), Http1Step::HandOff, "case {i}");
        }
    }
}
