//! JSON answers of the admin API, shared by its endpoint modules.

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, X_CONTENT_TYPE_OPTIONS};
use http::{HeaderValue, StatusCode};
use http_body_util::Full;
use scep_engine::UnixTime;
use serde_json::{Value, json};

/// The spec's countdown badge: `green` ≥ 30 days, `amber` 7-30, `red` < 7, `expired`.
pub fn expiry_status(not_after: UnixTime, now: UnixTime) -> &'static str {
    let left = not_after.secs() - now.secs();
    if left < 0 {
        "expired"
    } else if left < 7 * 86_400 {
        "red"
    } else if left < 30 * 86_400 {
        "amber"
    } else {
        "green"
    }
}

/// A JSON error `{"error": code, "message": text}`.
pub fn error(status: StatusCode, code: &str, message: &str) -> http::Response<Full<Bytes>> {
    respond(status, &json!({ "error": code, "message": message }))
}

/// A JSON answer: pretty-printed, `no-store`, `nosniff`.
pub fn respond(status: StatusCode, v: &Value) -> http::Response<Full<Bytes>> {
    let body = serde_json::to_vec_pretty(v).unwrap_or_else(|_| b"{}".to_vec());
    let mut r = http::Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r.headers_mut().insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    r
}
