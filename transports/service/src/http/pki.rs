//! What relying parties fetch (`/pki/...`): each local CA's CRL and
//! certificate, and its OCSP responder (the built-in local CA and every
//! `[[issuer]] type = "local"` CA of the running configuration).
//!
//! | method, path | answer |
//! |---|---|
//! | GET, HEAD `/pki/<ca-id>/crl` | the current CRL, DER, `application/pkix-crl` (RFC 5280 §4.2.1.13 distribution point); `Last-Modified` = thisUpdate, `ETag` = `"<ca-id>-<cRLNumber>"`, `Cache-Control: max-age` up to the earlier of nextUpdate and the time it is re-signed anyway; `If-None-Match` / `If-Modified-Since` answer `304` (`If-Modified-Since` only when no other CRL was signed in the same second: `Last-Modified` has one-second resolution) |
//! | GET, HEAD `/pki/<ca-id>/ca.crt` | the CA certificate, DER, `application/pkix-cert` (RFC 5280 §4.2.2.1 caIssuers) |
//! | GET `/pki/ocsp/<base64 OCSPRequest, URL-encoded>` | OCSP (RFC 6960 Appendix A.1, RFC 5019 §5); cacheable answers carry `Cache-Control: max-age`, `Last-Modified`, `Expires` (RFC 5019 §6.2) |
//! | POST `/pki/ocsp` (`application/ocsp-request`) | OCSP (RFC 6960 Appendix A.1) |
//!
//! `<ca-id>` is the CA's key identifier in lower-case hex
//! ([`scep_issuers::LocalCa::ca_id`]). One OCSP URL serves every CA: a
//! request goes to the CA its first CertID names
//! ([`scep_issuers::ocsp::responder_for`]). OCSP errors (`malformedRequest`,
//! `unauthorized`, ...) are OCSP responses with HTTP 200, as RFC 6960
//! Appendix A.1 has them; only HTTP-level problems (wrong method, media
//! type, an undecodable GET path, an unknown CA) are HTTP 4xx.

use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use http::header::{
    ALLOW, CACHE_CONTROL, CONTENT_TYPE, ETAG, EXPIRES, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED,
};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use http_body_util::Full;
use scep_engine::time::UnixTime;
use scep_issuers::ocsp::{OcspAnswer, OcspResponder};

use crate::state::metrics::PkiCounters;

/// The route prefix (see [`scep_issuers::local::PKI_PREFIX`]).
pub const PREFIX: &str = scep_issuers::local::PKI_PREFIX;

/// The largest OCSP request accepted (a request for [`scep_engine::ocsp::MAX_REQUESTS`]
/// CertIDs with a signature and certificates stays far below it).
pub const MAX_OCSP_REQUEST: usize = 16 * 1024;

/// `application/ocsp-request` (RFC 6960 Appendix C.1).
const OCSP_REQUEST: &str = "application/ocsp-request";

type HttpResponse = http::Response<Full<Bytes>>;

fn text(status: StatusCode, body: &'static str) -> HttpResponse {
    let mut r = http::Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

fn not_found() -> HttpResponse {
    text(StatusCode::NOT_FOUND, "not found: /pki/<ca-id>/crl, /pki/<ca-id>/ca.crt or /pki/ocsp\n")
}

fn method_not_allowed(allow: &'static str) -> HttpResponse {
    let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    r.headers_mut().insert(ALLOW, HeaderValue::from_static(allow));
    r
}

fn http_date(t: UnixTime) -> HeaderValue {
    let secs = u64::try_from(t.secs()).unwrap_or(0);
    let text = httpdate::fmt_http_date(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs));
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT"))
}

fn der(content_type: &'static str, body: Bytes, head: bool) -> HttpResponse {
    let mut r = http::Response::new(Full::new(if head { Bytes::new() } else { body }));
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// Answers a request under `/pki/`. `body` is the collected POST body
/// (empty otherwise).
pub async fn handle(
    cas: &[Arc<OcspResponder>],
    counters: &PkiCounters,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> HttpResponse {
    if cas.is_empty() {
        return text(StatusCode::NOT_FOUND, "not found: no local CA, so nothing is published under /pki/\n");
    }
    let Some(rest) = path.strip_prefix(PREFIX) else { return not_found() };
    if rest == "ocsp" || rest == "ocsp/" {
        return match *method {
            Method::POST => ocsp_post(cas, counters, headers, body).await,
            Method::GET => text(StatusCode::BAD_REQUEST, "OCSP GET needs the request: /pki/ocsp/<base64>\n"),
            _ => method_not_allowed("GET, POST"),
        };
    }
    if let Some(encoded) = rest.strip_prefix("ocsp/") {
        return match *method {
            Method::GET => ocsp_get(cas, counters, encoded).await,
            _ => method_not_allowed("GET"),
        };
    }
    let Some((ca_id, file)) = rest.split_once('/') else { return not_found() };
    let Some(responder) = cas.iter().find(|r| r.ca().ca_id() == ca_id) else { return not_found() };
    let head = match *method {
        Method::GET => false,
        Method::HEAD => true,
        _ => return method_not_allowed("GET, HEAD"),
    };
    match file {
        "crl" => {
            let r = crl(responder, headers, head).await;
            counters.crl(r.status().as_u16());
            r
        }
        "ca.crt" => {
            let cert = Bytes::copy_from_slice(responder.ca().signer().certificate());
            let mut r = der("application/pkix-cert", cert, head);
            r.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("public, max-age=86400"));
            r
        }
        _ => not_found(),
    }
}

/// The CRL with its caching headers, or `304` when the client has it.
async fn crl(responder: &OcspResponder, headers: &HeaderMap, head: bool) -> HttpResponse {
    let now = UnixTime::now();
    let published = match responder.published_crl_off_thread(now).await {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %e, "cannot produce the CRL");
            return text(StatusCode::SERVICE_UNAVAILABLE, "the CRL cannot be produced right now\n");
        }
    };
    let etag = format!("\"{}-{}\"", responder.ca().ca_id(), published.crl_number);
    let max_age = published.next_update.min(published.resign_by).secs().saturating_sub(now.secs()).max(0);
    let not_modified = match headers.get(IF_NONE_MATCH).and_then(|v| v.to_str().ok()) {
        // RFC 9110 §13.1.2: If-None-Match wins over If-Modified-Since.
        Some(list) => {
            list.split(',').map(str::trim).any(|t| t == "*" || t == etag || t.strip_prefix("W/") == Some(&etag))
        }
        // RFC 9110 §13.1.3, with a Last-Modified that identifies this CRL
        // only when no other CRL was signed in the same second.
        None if !published.distinct_this_update => false,
        None => headers
            .get(IF_MODIFIED_SINCE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok())
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .is_some_and(|since| i64::try_from(since.as_secs()).is_ok_and(|s| s >= published.this_update.secs())),
    };
    let mut r = if not_modified {
        let mut r = http::Response::new(Full::new(Bytes::new()));
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        der("application/pkix-crl", Bytes::from_owner(published.der.clone()), head)
    };
    let h = r.headers_mut();
    h.insert(LAST_MODIFIED, http_date(published.this_update));
    h.insert(EXPIRES, http_date(published.next_update));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(ETAG, v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("public, max-age={max_age}")) {
        h.insert(CACHE_CONTROL, v);
    }
    r
}

/// Percent-decodes a path segment (RFC 3986 §2.1); `+` stays `+` (it is a
/// base64 character, not a space, in a path).
fn percent_decode_path(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(out)
}

/// RFC 6960 Appendix A.1: `GET {url}/{url-encoding of base-64 encoding of the DER OCSPRequest}`.
async fn ocsp_get(cas: &[Arc<OcspResponder>], counters: &PkiCounters, encoded: &str) -> HttpResponse {
    let Some(text_b64) = percent_decode_path(encoded) else {
        return text(StatusCode::BAD_REQUEST, "OCSP GET: the path is not valid percent-encoding\n");
    };
    // Whitespace a client may have left in is not base64; padding is optional in practice.
    let trimmed: Vec<u8> = text_b64.into_iter().filter(|c| !c.is_ascii_whitespace()).collect();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(&trimmed)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(&trimmed));
    let Ok(request) = decoded else {
        // The bytes are not even base64: an OCSP client gets an OCSP answer.
        return answer(counters, &OcspAnswer::malformed(), true);
    };
    if request.len() > MAX_OCSP_REQUEST {
        return text(StatusCode::URI_TOO_LONG, "OCSP request too large\n");
    }
    respond(cas, counters, request, true).await
}

async fn ocsp_post(
    cas: &[Arc<OcspResponder>],
    counters: &PkiCounters,
    headers: &HeaderMap,
    body: Bytes,
) -> HttpResponse {
    let media = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let media = media.split(';').next().unwrap_or("").trim();
    if !media.eq_ignore_ascii_case(OCSP_REQUEST) {
        return text(StatusCode::UNSUPPORTED_MEDIA_TYPE, "OCSP POST needs Content-Type: application/ocsp-request\n");
    }
    respond(cas, counters, body.to_vec(), false).await
}

async fn respond(cas: &[Arc<OcspResponder>], counters: &PkiCounters, request: Vec<u8>, get: bool) -> HttpResponse {
    let now = UnixTime::now();
    let Some(responder) = scep_issuers::ocsp::responder_for(cas, &request) else {
        return answer(counters, &OcspAnswer::malformed(), get);
    };
    // From memory (a precomputed answer, or remembered statuses and one
    // signature) on this thread; the database only on the blocking pool.
    let a = match responder.respond_from_memory(&request, now) {
        Some(answer) => answer,
        None => responder.respond_off_thread(request, now).await,
    };
    answer(counters, &a, get)
}

/// The HTTP form of an OCSP answer; GET answers without a nonce carry the
/// RFC 5019 §6.2 caching headers, everything else `no-store`.
fn answer(counters: &PkiCounters, a: &OcspAnswer, get: bool) -> HttpResponse {
    counters.ocsp(a.status);
    let mut r = der("application/ocsp-response", Bytes::from_owner(a.der.clone()), false);
    let h = r.headers_mut();
    match a.validity {
        Some((this_update, next_update)) if get && a.cacheable => {
            let max_age = next_update.secs().saturating_sub(UnixTime::now().secs()).max(0);
            if let Ok(v) = HeaderValue::from_str(&format!("public, max-age={max_age}, no-transform, must-revalidate")) {
                h.insert(CACHE_CONTROL, v);
            }
            h.insert(LAST_MODIFIED, http_date(this_update));
            h.insert(EXPIRES, http_date(next_update));
        }
        _ => {
            h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::percent_decode_path;

    #[test]
    fn path_decoding_keeps_plus_and_decodes_escapes() {
        assert_eq!(percent_decode_path("MEMw%2BQ%3D%3D").unwrap(), b"MEMw+Q==");
        assert_eq!(percent_decode_path("a+b/c").unwrap(), b"a+b/c");
        assert!(percent_decode_path("%2").is_none());
        assert!(percent_decode_path("%zz").is_none());
    }
}
