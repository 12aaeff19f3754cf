//! The HTTP/1.1 fast path for discovery GETs, sans-IO.
//!
//! A fleet polls GetCACaps and GetCACert far more often than it enrols, and
//! their answers are kept ready per profile ([`crate::discovery`]). For those
//! requests hyper's per-request work (a `Request` with its `HeaderMap` and
//! `Uri`, a service future, the header-read timer re-armed per request) is
//! most of scepd's own CPU. A transport that wants to can therefore parse the
//! front of an HTTP/1.1 connection itself with [`ScepService::answer_http1`]:
//! a plain GET of a discovery operation on `/scep...` (RFC 9112 §3, with no
//! body and nothing that changes the connection) is answered here, byte for
//! byte as hyper would (status line, `content-type`, `content-length`,
//! `cache-control`, `date`), counted in the metrics and the audit tally like
//! every other answer. Anything else — another method or path, a body,
//! `Expect`, `Upgrade`, `Connection` other than `keep-alive`, HTTP/1.0, an
//! HTTP/2 preface, a head that does not parse or is larger than
//! [`MAX_HEAD`] — is [`Http1Step::HandOff`]: the transport gives the
//! connection, with every byte not yet answered, to hyper, which then serves
//! it to the end. Answers are written in request order, so pipelined requests
//! keep their order across the hand-off.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::StatusCode;

use crate::service::ScepService;

/// Most header fields a fast-path request may have (more: hand-off).
pub const MAX_HEADERS: usize = 32;
/// Largest request head the fast path waits for (more: hand-off, and hyper
/// applies its own limit).
pub const MAX_HEAD: usize = 8 * 1024;

/// What [`ScepService::answer_http1`] did with the front of the buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Http1Step {
    /// One request of this many bytes was answered (its response appended to `out`).
    Answered(usize),
    /// The request head is not complete yet: read more (up to [`MAX_HEAD`]).
    Incomplete,
    /// Not a fast-path request: hyper must serve the connection from here on.
    HandOff,
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
            Ok(httparse::Status::Partial) | Err(_) => return Http1Step::HandOff,
        };
        if req.method != Some("GET") || req.version != Some(1) || !plain_request(req.headers) {
            return Http1Step::HandOff;
        }
        // Origin form only (RFC 9112 §3.2.1); absolute form goes to hyper.
        let Some(target) = req.path.filter(|t| t.starts_with('/')) else { return Http1Step::HandOff };
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let Some((status, content_type, body)) = self.discovery_answer(path, query, self.client_addr()) else {
            return Http1Step::HandOff;
        };
        write_response(out, status, content_type, &body);
        Http1Step::Answered(consumed)
    }
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
    out.extend_from_slice(code.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\ncontent-type: ");
    out.extend_from_slice(content_type.as_bytes());
    out.extend_from_slice(b"\r\ncontent-length: ");
    out.extend_from_slice(itoa::Buffer::new().format(body.len()).as_bytes());
    if status == 405 {
        out.extend_from_slice(b"\r\nallow: GET, POST");
    }
    out.extend_from_slice(b"\r\ncache-control: no-store\r\ndate: ");
    with_http_date(|date| out.extend_from_slice(date));
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(body);
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

    use crate::config::ServerSettings;
    use crate::profile::BuildContext;
    use crate::state::{Profiles, ServiceState};
    use crate::testutil::{TestDir, section};

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
        let body = futures_lite::future::block_on(http_body_util::BodyExt::collect(r.into_body())).unwrap().to_bytes();
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
            "POST /scep?operation=PKIOperation HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
            "HEAD /scep?operation=GetCACaps HTTP/1.1\r\n\r\n",
            "GET /scep?operation=GetCACaps HTTP/1.0\r\n\r\n",
            "GET /scep?operation=GetCACaps HTTP/1.1\r\nConnection: close\r\n\r\n",
            "GET /scep?operation=GetCACaps HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n",
            "GET /scep?operation=GetCACaps HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
            "GET /scep?operation=GetCACaps HTTP/1.1\r\nContent-Length: 2\r\n\r\nab",
            "GET /scep?operation=GetCACaps HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "GET http://h/scep?operation=GetCACaps HTTP/1.1\r\n\r\n",
            "GET /scep?operation=PKIOperation&message=AAAA HTTP/1.1\r\n\r\n",
            "GET /scep?operation=GetCACaps&operation=GetCACert HTTP/1.1\r\n\r\n",
            "GET /scep/nope?operation=GetCACaps HTTP/1.1\r\n\r\n",
            "GET /metrics HTTP/1.1\r\n\r\n",
            "GET /ui/scep HTTP/1.1\r\n\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            "GET /scep?operation=GetCACaps HTTP/1.1\r\nBad Header\r\n\r\n",
        ];
        for case in cases {
            let mut out = Vec::new();
            assert_eq!(svc.answer_http1(case.as_bytes(), &mut out), Http1Step::HandOff, "{case:?}");
            assert!(out.is_empty(), "{case:?}");
        }
        let many = format!("GET /scep?operation=GetCACaps HTTP/1.1\r\n{}\r\n", "X-A: b\r\n".repeat(MAX_HEADERS + 1));
        assert_eq!(svc.answer_http1(many.as_bytes(), &mut Vec::new()), Http1Step::HandOff);
        let huge = format!("GET /scep?operation=GetCACaps HTTP/1.1\r\nX-A: {}", "b".repeat(MAX_HEAD));
        assert_eq!(svc.answer_http1(huge.as_bytes(), &mut Vec::new()), Http1Step::HandOff);
        assert_eq!(svc.answer_http1(&huge.as_bytes()[..100], &mut Vec::new()), Http1Step::Incomplete);
        assert_eq!(svc.answer_http1(b"", &mut Vec::new()), Http1Step::Incomplete);
    }

    #[test]
    fn answers_are_counted_like_every_other() {
        let dir = TestDir::new();
        let svc = service(&dir);
        let request = b"GET /scep?operation=GetCACaps HTTP/1.1\r\n\r\n";
        for _ in 0..3 {
            assert_eq!(svc.answer_http1(request, &mut Vec::new()), Http1Step::Answered(request.len()));
        }
        let text = svc.state().metrics().render(svc.state(), scep_engine::UnixTime::now());
        let line = text
            .lines()
            .find(|l| l.starts_with("scepd_requests_total{") && l.contains("GetCACaps"))
            .unwrap_or_else(|| panic!("{text}"));
        assert!(line.ends_with(" 3"), "{line}");
    }
}
