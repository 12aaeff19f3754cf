//! What relying parties fetch (`/pki/...`): each local CA's CRL and
//! certificate, and its OCSP responder (the built-in local CA and every
//! `[[issuer]] type = "local"` CA of the running configuration).
//!
//! | method, path | answer |
//! |---|---|
//! | GET, HEAD `/pki/<ca-id>/crl` | the current CRL, DER, `application/pkix-crl` (RFC 5280 §4.2.1.13 distribution point); `Last-Modified` = thisUpdate, `ETag` = `"<ca-id>-<cRLNumber>"`, `Cache-Control: max-age` up to the earlier of nextUpdate and the time it is re-signed anyway; `If-None-Match` / `If-Modified-Since` answer `304` (`If-Modified-Since` only when no other CRL was signed in the same second: `Last-Modified` has one-second resolution) |
//! | GET, HEAD `/pki/<ca-id>/ca.crt` | the CA certificate, DER, `application/pkix-cert` (RFC 5280 §4.2.2.1 caIssuers) |
//! | GET, HEAD `/pki/ocsp/<base64 OCSPRequest, URL-encoded>` | OCSP (RFC 6960 Appendix A.1, RFC 5019 §5); cacheable answers carry `Cache-Control: max-age`, `Last-Modified` = thisUpdate, `Expires` = nextUpdate and `ETag` = a hash of the answer (RFC 5019 §6.2); `If-None-Match` answers `304` (`If-Modified-Since` is answered in full: an answer re-signed after a revocation may carry the same second) |
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

/// The answer to a GET of `/pki/ocsp` itself.
const OCSP_GET_WITHOUT_REQUEST: &str = "OCSP GET needs the request: /pki/ocsp/<base64>\n";

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

/// `r` with its content dropped, for a HEAD request (RFC 9110 §9.3.2).
fn without_body(r: HttpResponse) -> HttpResponse {
    r.map(|_| Full::new(Bytes::new()))
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
            Method::GET => text(StatusCode::BAD_REQUEST, OCSP_GET_WITHOUT_REQUEST),
            Method::HEAD => without_body(text(StatusCode::BAD_REQUEST, OCSP_GET_WITHOUT_REQUEST)),
            _ => method_not_allowed("GET, HEAD, POST"),
        };
    }
    if let Some(encoded) = rest.strip_prefix("ocsp/") {
        // RFC 9110 §9.3.2: HEAD is answered as GET is, without the content.
        return match *method {
            Method::GET => ocsp_get(cas, counters, encoded, headers).await,
            Method::HEAD => without_body(ocsp_get(cas, counters, encoded, headers).await),
            _ => method_not_allowed("GET, HEAD"),
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
    // Last-Modified identifies this CRL only when no other CRL was signed in
    // the same second (its thisUpdate has one-second resolution).
    let mut r = if not_modified(headers, &etag, published.distinct_this_update.then_some(published.this_update)) {
        not_modified_response()
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

/// True when the client already has the representation whose entity tag is
/// `etag` (RFC 9110 §13.1.2 `If-None-Match`, weak comparison) or, without
/// `If-None-Match`, whose `Last-Modified` is `last_modified` (§13.1.3
/// `If-Modified-Since`). `last_modified` is `None` when `Last-Modified`
/// does not identify the representation (another one may carry the same
/// second: a weak validator, §8.8.2.2): `If-Modified-Since` is then answered
/// in full, never `304` for content the client may not have.
fn not_modified(headers: &HeaderMap, etag: &str, last_modified: Option<UnixTime>) -> bool {
    match headers.get(IF_NONE_MATCH).and_then(|v| v.to_str().ok()) {
        // RFC 9110 §13.1.2: If-None-Match wins over If-Modified-Since.
        Some(list) => {
            list.split(',').map(str::trim).any(|t| t == "*" || t == etag || t.strip_prefix("W/") == Some(etag))
        }
        None => last_modified.is_some_and(|last_modified| {
            headers
                .get(IF_MODIFIED_SINCE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| httpdate::parse_http_date(v).ok())
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .is_some_and(|since| i64::try_from(since.as_secs()).is_ok_and(|s| s >= last_modified.secs()))
        }),
    }
}

/// A `304 Not Modified` without content; the caller adds the validators and
/// caching headers a `200` would have carried (RFC 9110 §15.4.5).
fn not_modified_response() -> HttpResponse {
    let mut r = http::Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::NOT_MODIFIED;
    r
}

/// The strong entity tag of a cacheable OCSP answer (RFC 9110 §8.8.3): the
/// first 128 bits of the SHA-256 of its DER, so two answers share a tag only
/// when they are the same bytes (a re-signed answer, e.g. after a
/// revocation, gets a new one).
fn ocsp_etag(der: &[u8]) -> String {
    use std::fmt::Write as _;
    let digest = scep_engine::crypto::DigestAlg::Sha256.digest(der);
    let mut tag = String::with_capacity(34);
    tag.push('"');
    for b in digest.iter().take(16) {
        let _ = write!(tag, "{b:02x}");
    }
    tag.push('"');
    tag
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
/// `headers` are the request's, for conditional requests.
async fn ocsp_get(
    cas: &[Arc<OcspResponder>],
    counters: &PkiCounters,
    encoded: &str,
    headers: &HeaderMap,
) -> HttpResponse {
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
        return answer(counters, &OcspAnswer::malformed(), Some(headers));
    };
    if request.len() > MAX_OCSP_REQUEST {
        return text(StatusCode::URI_TOO_LONG, "OCSP request too large\n");
    }
    respond(cas, counters, request, Some(headers)).await
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
    respond(cas, counters, body.to_vec(), None).await
}

/// Answers one DER OCSPRequest; `get` holds the request headers of a GET
/// (or HEAD), `None` for a POST.
async fn respond(
    cas: &[Arc<OcspResponder>],
    counters: &PkiCounters,
    request: Vec<u8>,
    get: Option<&HeaderMap>,
) -> HttpResponse {
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

/// The HTTP form of an OCSP answer. GET answers without a nonce carry the
/// RFC 5019 §6.2 caching headers and an `ETag`, and are `304 Not Modified`
/// when the GET's `headers` show the client has them (as for the CRL);
/// everything else is `no-store`.
fn answer(counters: &PkiCounters, a: &OcspAnswer, get: Option<&HeaderMap>) -> HttpResponse {
    counters.ocsp(a.status);
    let cache = match (a.validity, get) {
        (Some(validity), Some(headers)) if a.cacheable => Some((validity, headers)),
        _ => None,
    };
    let Some(((this_update, next_update), headers)) = cache else {
        let mut r = der("application/ocsp-response", Bytes::from_owner(a.der.clone()), false);
        r.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        return r;
    };
    let etag = ocsp_etag(&a.der);
    // An answer re-signed after a revocation may carry the thisUpdate second
    // of the answer it replaced, and nothing records that here: only the
    // entity tag (a digest of the bytes) tells OCSP answers apart.
    let mut r = if not_modified(headers, &etag, None) {
        not_modified_response()
    } else {
        der("application/ocsp-response", Bytes::from_owner(a.der.clone()), false)
    };
    let h = r.headers_mut();
    let max_age = next_update.secs().saturating_sub(UnixTime::now().secs()).max(0);
    if let Ok(v) = HeaderValue::from_str(&format!("public, max-age={max_age}, no-transform, must-revalidate")) {
        h.insert(CACHE_CONTROL, v);
    }
    h.insert(LAST_MODIFIED, http_date(this_update));
    h.insert(EXPIRES, http_date(next_update));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(ETAG, v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future::block_on;
    use http::header::HeaderName;
    use scep_engine::wire::Writer;

    use crate::testutil::TestDir;

    /// A local CA's responder, a certificate it issued, and a nonce-less
    /// OCSPRequest (what RFC 5019 clients GET) for that certificate.
    fn responder_and_request(dir: &TestDir) -> (Arc<OcspResponder>, Vec<u8>, Vec<u8>) {
        use scep_engine::issue::{Authorization, EnrollRequest, IssuancePolicy, IssueOutcome, IssueRequest};
        let ca_dir = dir.path().join("pki-ca");
        std::fs::create_dir_all(&ca_dir).unwrap();
        let files = scep_issuers::bootstrap(&ca_dir, &scep_issuers::BootstrapOptions::default()).unwrap();
        let ca = scep_issuers::LocalCa::open(scep_issuers::LocalCaConfig::new(&files.ca_cert, &files.ca_key, &ca_dir))
            .unwrap();
        let (device, _) = scep_engine::crypto::EcPrivateKey::generate().unwrap();
        let request = IssueRequest::Enroll(EnrollRequest {
            profile: "corp".into(),
            transaction_id: "pki-get".into(),
            csr_der: Vec::new(),
            subject_der: scep_issuers::x509_build::common_name("pki-get"),
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
        let serial = scep_engine::x509::CertificateRef::parse(&certificate).unwrap().serial.to_vec();
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
                            w.unsigned_integer(&serial);
                        });
                    });
                });
            });
        });
        (Arc::new(OcspResponder::new(ca, Default::default()).unwrap()), w.into_vec(), serial)
    }

    /// `/pki/ocsp/<base64 of request>`, URL-encoded (RFC 6960 Appendix A.1).
    fn get_path(request: &[u8]) -> String {
        let b64 = base64::engine::general_purpose::STANDARD.encode(request);
        format!("{PREFIX}ocsp/{}", b64.replace('+', "%2B").replace('/', "%2F").replace('=', "%3D"))
    }

    /// Status, headers and body of `method path` with `headers`.
    fn call(
        responder: &Arc<OcspResponder>,
        method: Method,
        path: &str,
        headers: &[(HeaderName, &str)],
    ) -> (StatusCode, HeaderMap, Bytes) {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.insert(name.clone(), HeaderValue::from_str(value).unwrap());
        }
        let counters = PkiCounters::default();
        let cas = [Arc::clone(responder)];
        let r = block_on(handle(&cas, &counters, &method, path, &map, Bytes::new()));
        let (parts, body) = r.into_parts();
        let body = block_on(http_body_util::BodyExt::collect(body)).unwrap().to_bytes();
        (parts.status, parts.headers, body)
    }

    fn header(headers: &HeaderMap, name: HeaderName) -> &str {
        headers.get(&name).unwrap_or_else(|| panic!("no {name} in {headers:?}")).to_str().unwrap()
    }

    #[test]
    fn ocsp_get_answers_carry_an_etag_and_answer_conditional_gets_with_304() {
        let dir = TestDir::new();
        let (responder, request, serial) = responder_and_request(&dir);
        let path = get_path(&request);
        let (status, headers, body) = call(&responder, Method::GET, &path, &[]);
        assert_eq!(status, StatusCode::OK);
        let top = scep_engine::wire::parse_single(&body).unwrap();
        assert_eq!(top.reader().expect(0x0a).unwrap().contents, [0], "a successful OCSPResponse");
        let etag = header(&headers, ETAG).to_string();
        assert!(etag.len() == 34 && etag.starts_with('"') && etag.ends_with('"'), "a strong tag: {etag}");
        assert!(header(&headers, CACHE_CONTROL).starts_with("public, max-age="), "{headers:?}");
        let last_modified = header(&headers, LAST_MODIFIED).to_string();

        // The kept answer, asked again: the same bytes, the same tag.
        let (_, again, again_body) = call(&responder, Method::GET, &path, &[]);
        assert_eq!((header(&again, ETAG), &again_body), (etag.as_str(), &body));

        // If-None-Match with the tag (alone, in a list, weak), or `*`: 304
        // without content, with the validators and caching headers of the 200.
        for value in [etag.clone(), format!("\"other\", {etag}"), format!("W/{etag}"), "*".to_string()] {
            let (status, h, b) = call(&responder, Method::GET, &path, &[(IF_NONE_MATCH, &value)]);
            assert_eq!(status, StatusCode::NOT_MODIFIED, "{value}");
            assert!(b.is_empty());
            assert_eq!(header(&h, ETAG), etag);
            assert_eq!(header(&h, LAST_MODIFIED), last_modified);
            assert!(h.contains_key(EXPIRES) && h.contains_key(CACHE_CONTROL), "{h:?}");
        }
        let (status, _, b) = call(&responder, Method::GET, &path, &[(IF_NONE_MATCH, "\"other\"")]);
        assert_eq!((status, &b), (StatusCode::OK, &body), "another tag gets the answer");
        // If-Modified-Since alone is answered in full: an answer re-signed in
        // the same second would carry the same Last-Modified.
        let (status, _, b) = call(&responder, Method::GET, &path, &[(IF_MODIFIED_SINCE, &last_modified)]);
        assert_eq!((status, &b), (StatusCode::OK, &body));

        // A revocation re-signs the answer: new bytes, new tag, so the old tag gets the new answer.
        responder.ca().revoke(&serial, scep_issuers::crl::RevocationReason::KeyCompromise, UnixTime::now()).unwrap();
        let (status, h, revoked) = call(&responder, Method::GET, &path, &[(IF_NONE_MATCH, &etag)]);
        assert_eq!(status, StatusCode::OK, "the old tag must not hide the revocation");
        assert_ne!(revoked, body);
        assert_ne!(header(&h, ETAG), etag);

        // POST answers are not cached (RFC 5019 §6.2 is about GET): no tag, no 304.
        let counters = PkiCounters::default();
        let mut post_headers = HeaderMap::new();
        post_headers.insert(CONTENT_TYPE, HeaderValue::from_static(OCSP_REQUEST));
        post_headers.insert(IF_NONE_MATCH, HeaderValue::from_static("*"));
        let cas = [Arc::clone(&responder)];
        let post = block_on(handle(&cas, &counters, &Method::POST, "/pki/ocsp", &post_headers, request.into()));
        assert_eq!(post.status(), StatusCode::OK);
        assert_eq!(header(post.headers(), CACHE_CONTROL), "no-store");
        assert!(!post.headers().contains_key(ETAG));
        // Nor are error answers to a GET.
        let (status, h, b) = call(&responder, Method::GET, &get_path(b"not der"), &[(IF_NONE_MATCH, "*")]);
        assert_eq!((status, &b[..]), (StatusCode::OK, &[0x30, 0x03, 0x0a, 0x01, 0x01][..]));
        assert!(!h.contains_key(ETAG) && header(&h, CACHE_CONTROL) == "no-store", "{h:?}");
    }

    #[test]
    fn ocsp_head_is_answered_as_get_without_the_content() {
        let dir = TestDir::new();
        let (responder, request, _) = responder_and_request(&dir);
        let path = get_path(&request);
        let (get_status, get_headers, get_body) = call(&responder, Method::GET, &path, &[]);
        let (status, headers, body) = call(&responder, Method::HEAD, &path, &[]);
        assert_eq!((status, get_status), (StatusCode::OK, StatusCode::OK));
        assert!(body.is_empty() && !get_body.is_empty());
        for name in [CONTENT_TYPE, ETAG, LAST_MODIFIED, EXPIRES] {
            assert_eq!(header(&headers, name.clone()), header(&get_headers, name));
        }
        let (status, _, body) = call(&responder, Method::HEAD, &path, &[(IF_NONE_MATCH, header(&get_headers, ETAG))]);
        assert_eq!((status, body.is_empty()), (StatusCode::NOT_MODIFIED, true));
        let (status, _, body) = call(&responder, Method::HEAD, "/pki/ocsp", &[]);
        assert_eq!((status, body.is_empty()), (StatusCode::BAD_REQUEST, true), "as GET /pki/ocsp, without content");

        // Allow lists HEAD wherever it lists GET (RFC 9110 §10.2.1).
        for (path, allow) in [(path.as_str(), "GET, HEAD"), ("/pki/ocsp", "GET, HEAD, POST")] {
            let (status, headers, _) = call(&responder, Method::PUT, path, &[]);
            assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
            assert_eq!(header(&headers, ALLOW), allow, "{path}");
        }
    }

    #[test]
    fn path_decoding_keeps_plus_and_decodes_escapes() {
        assert_eq!(percent_decode_path("MEMw%2BQ%3D%3D").unwrap(), b"MEMw+Q==");
        assert_eq!(percent_decode_path("a+b/c").unwrap(), b"a+b/c");
        assert!(percent_decode_path("%2").is_none());
        assert!(percent_decode_path("%zz").is_none());
    }
}
