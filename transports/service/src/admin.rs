//! The admin API (JSON, Bearer API keys) under `/api/v1/admin/scep/`.
//!
//! | method | path | answers |
//! |---|---|---|
//! | GET | `/api/v1/admin/scep/profiles` | every profile: URLs, RA certificate expiry, mTLS, challenge set, Intune block |
//! | GET | `/api/v1/admin/scep/intune/stats` | per profile: Intune counters and trust anchors |
//! | POST | `/api/v1/admin/scep/intune/reload-trust` | body `{"path_id": "corp"}`: re-read that profile's Connector trust anchors |
//! | GET | `/api/v1/admin/scep/audit?profile=&action=&outcome=&limit=&before_id=` | audit events, newest first |
//!
//! Every endpoint requires an `admin` key: no key or an unknown key is 401,
//! a non-admin (`reader`) key is 403. Errors are `{"error": code, "message": text}`.
//! Keys are compared in constant time (SHA-256 of the presented key against
//! each configured key's digest, all compared) and never logged.
//!
//! ```toml
//! [[api_key]]
//! name = "ops"            # [A-Za-z0-9._-]{1,64}, unique; logged on use
//! key = "..."             # at least 16 characters, no whitespace
//! role = "admin"          # "admin" or "reader"; default "reader"
//! ```

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{HeaderValue, Method, StatusCode};
use http_body_util::Full;
use scep_engine::UnixTime;
use scep_engine::config::{ChallengePolicy, ConfigError};
use scep_engine::crypto::DigestAlg;
use scep_engine::x509::{CertificateRef, name_to_string};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::audit::{AuditQuery, MAX_QUERY_LIMIT};
use crate::profile::Profile;
use crate::state::ServiceState;

/// Shortest accepted API key.
pub const MIN_KEY_LEN: usize = 16;
/// Largest accepted admin request body.
const MAX_BODY: usize = 16 * 1024;

/// One `[[api_key]]` entry, as written.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeySection {
    /// `name`
    pub name: Option<String>,
    /// `key`
    pub key: Option<String>,
    /// `role`: `admin` or `reader`.
    pub role: Option<String>,
}

/// What a key may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Every admin endpoint.
    Admin,
    /// Authenticated, but no admin endpoint (403).
    Reader,
}

struct ApiKey {
    name: String,
    digest: Vec<u8>,
    role: Role,
}

/// The configured API keys (replaced on reload).
#[derive(Default)]
pub struct ApiKeys {
    keys: Vec<ApiKey>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.keys.iter().map(|k| (&k.name, k.role))).finish()
    }
}

impl ApiKeys {
    /// Validates the `[[api_key]]` entries.
    ///
    /// # Errors
    /// Naming `api_key[<index>].<key>`, without ever quoting a key.
    pub fn from_sections(sections: &[ApiKeySection]) -> Result<Self, ConfigError> {
        let mut keys: Vec<ApiKey> = Vec::with_capacity(sections.len());
        for (i, s) in sections.iter().enumerate() {
            let err = |k: &str, why: &str| ConfigError(format!("api_key[{i}].{k}: {why}"));
            let name = s.name.as_deref().ok_or_else(|| err("name", "required"))?;
            if !(1..=64).contains(&name.len())
                || !name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
            {
                return Err(err("name", "must be 1 to 64 of A-Z, a-z, 0-9, '.', '_', '-'"));
            }
            let key = s.key.as_deref().ok_or_else(|| err("key", "required"))?;
            if key.len() < MIN_KEY_LEN || key.chars().any(char::is_whitespace) {
                return Err(err("key", &format!("must be at least {MIN_KEY_LEN} characters without whitespace")));
            }
            let role = match s.role.as_deref() {
                None | Some("reader") => Role::Reader,
                Some("admin") => Role::Admin,
                Some(_) => return Err(err("role", "must be \"admin\" or \"reader\"")),
            };
            let digest = DigestAlg::Sha256.digest(key.as_bytes());
            if keys.iter().any(|k| k.name == name) {
                return Err(err("name", "defined more than once"));
            }
            if keys.iter().any(|k| k.digest == digest) {
                return Err(err("key", "the same key is configured twice"));
            }
            keys.push(ApiKey { name: name.to_string(), digest, role });
        }
        Ok(Self { keys })
    }

    /// How many keys are configured.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key is configured (the admin API then answers 401).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key's name and role, comparing against every key in constant time.
    pub fn authenticate(&self, presented: &str) -> Option<(&str, Role)> {
        let digest = DigestAlg::Sha256.digest(presented.as_bytes());
        let mut found = None;
        for k in &self.keys {
            // No early exit: every configured key is compared.
            let same = aws_lc_rs::constant_time::verify_slices_are_equal(&k.digest, &digest).is_ok();
            if same && found.is_none() {
                found = Some((k.name.as_str(), k.role));
            }
        }
        found
    }
}

/// Intune state of one profile, for the stats endpoint and the metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IntuneProfileStats {
    /// The profile name (`path_id` in the spec's API).
    pub path_id: String,
    /// Whether the profile validates Intune challenges.
    pub enabled: bool,
    /// `("success", n)` then each rejection label with its count.
    pub counters: Vec<(&'static str, u64)>,
    /// The Connector trust anchors.
    pub trust_anchors: Vec<TrustAnchorInfo>,
}

/// One Connector signing certificate of a trust anchor pool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustAnchorInfo {
    /// Subject, RFC 4514-like.
    pub subject: String,
    /// `notAfter`.
    pub not_after: UnixTime,
}

/// Why a trust anchor reload was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReloadTrustError {
    /// No such profile (404).
    UnknownProfile,
    /// The profile does not validate Intune challenges (409).
    NotEnabled,
    /// The file could not be used; the old pool stays (422).
    Failed(String),
}

impl ServiceState {
    /// Per-profile Intune counters and trust anchors, one entry per profile
    /// (`enabled: false` for profiles without Intune), in profile order.
    pub fn admin_intune_stats(&self) -> Vec<IntuneProfileStats> {
        let live = self.intune_stats();
        self.profiles()
            .iter()
            .map(|p| {
                let name = p.engine.config().name.clone();
                match live.iter().find(|s| s.profile == name) {
                    Some(s) => IntuneProfileStats {
                        path_id: name,
                        enabled: true,
                        counters: s.counters.clone(),
                        trust_anchors: anchor_infos(&s.anchors),
                    },
                    None => IntuneProfileStats { path_id: name, ..IntuneProfileStats::default() },
                }
            })
            .collect()
    }

    /// Re-reads profile `path_id`'s Connector trust anchor file and swaps the
    /// pool (the SIGHUP equivalent for one profile); the old pool stays on
    /// error. Reads one small file.
    ///
    /// # Errors
    /// See [`ReloadTrustError`].
    pub fn admin_reload_trust(&self, path_id: &str) -> Result<Vec<TrustAnchorInfo>, ReloadTrustError> {
        let profiles = self.profiles();
        let Some(profile) = profiles.iter().find(|p| p.engine.config().name == path_id) else {
            return Err(ReloadTrustError::UnknownProfile);
        };
        if profile.intune.is_none() {
            return Err(ReloadTrustError::NotEnabled);
        }
        let stats = self.reload_trust(Some(path_id)).map_err(|e| ReloadTrustError::Failed(e.0))?;
        Ok(stats.iter().find(|s| s.profile == path_id).map(|s| anchor_infos(&s.anchors)).unwrap_or_default())
    }
}

fn anchor_infos(anchors: &[crate::intune::AnchorInfo]) -> Vec<TrustAnchorInfo> {
    anchors.iter().map(|a| TrustAnchorInfo { subject: a.subject.clone(), not_after: a.not_after }).collect()
}

/// The parts of a request the admin API reads.
pub struct AdminRequest<'a> {
    /// Method.
    pub method: &'a Method,
    /// Path (starting `/api/v1/admin/`).
    pub path: &'a str,
    /// Query string.
    pub query: Option<&'a str>,
    /// `Authorization` header.
    pub authorization: Option<&'a HeaderValue>,
    /// Body (read by the caller, at most [`max_body`] bytes).
    pub body: &'a [u8],
}

/// Largest admin request body the caller should read.
pub const fn max_body() -> usize {
    MAX_BODY
}

/// Answers one admin API request.
pub async fn handle(state: &ServiceState, req: AdminRequest<'_>) -> http::Response<Full<Bytes>> {
    let keys = state.api_keys();
    let token = req
        .authorization
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim);
    let Some(token) = token else {
        return unauthorized("missing Bearer API key (Authorization: Bearer <key>)");
    };
    let Some((name, role)) = keys.authenticate(token) else {
        tracing::warn!(target: "scepd::admin", path = req.path, "admin API: unknown API key");
        return unauthorized("unknown API key");
    };
    if role != Role::Admin {
        tracing::warn!(target: "scepd::admin", key = name, path = req.path, "admin API: key is not admin");
        return error(StatusCode::FORBIDDEN, "forbidden", "this endpoint requires an admin API key");
    }
    tracing::info!(target: "scepd::admin", key = name, method = %req.method, path = req.path, "admin API");
    match (req.method, req.path) {
        (&Method::GET, "/api/v1/admin/scep/profiles") => ok(profiles_json(state, UnixTime::now())),
        (&Method::GET, "/api/v1/admin/scep/intune/stats") => ok(intune_json(state, UnixTime::now())),
        (&Method::POST, "/api/v1/admin/scep/intune/reload-trust") => reload_trust(state, req.body, name),
        (&Method::GET, "/api/v1/admin/scep/audit") => audit(state, req.query.unwrap_or("")).await,
        (_, "/api/v1/admin/scep/profiles" | "/api/v1/admin/scep/intune/stats" | "/api/v1/admin/scep/audit")
        | (_, "/api/v1/admin/scep/intune/reload-trust") => {
            error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "method not allowed on this endpoint")
        }
        _ => error(StatusCode::NOT_FOUND, "not_found", "no such admin endpoint"),
    }
}

fn days_to(t: UnixTime, now: UnixTime) -> i64 {
    (t.secs() - now.secs()).div_euclid(86_400)
}

fn cert_json(der: &[u8], now: UnixTime) -> Value {
    match CertificateRef::parse(der) {
        Ok(c) => json!({
            "subject": name_to_string(c.subject),
            "not_after": c.not_after.to_rfc3339(),
            "days_to_expiry": days_to(c.not_after, now),
        }),
        Err(_) => Value::Null,
    }
}

fn profile_json(p: &Profile, default: &str, stats: Option<&IntuneProfileStats>, now: UnixTime) -> Value {
    let c = p.engine.config();
    let intune = match stats {
        Some(s) if s.enabled => intune_profile_json(s, now),
        _ => Value::Null,
    };
    json!({
        "path_id": c.name,
        "url_path": format!("/scep/{}", c.name),
        "default": c.name == default,
        "issuer_id": p.issuer.id(),
        "challenge_password_set": matches!(c.challenge, ChallengePolicy::Static(_)),
        "ra_cert": cert_json(&c.ra.certificate, now),
        "ca_cert": c.ca_chain.first().map_or(Value::Null, |d| cert_json(d, now)),
        "mtls": match &p.mtls {
            Some(m) => json!({
                "enabled": true,
                "url_path": format!("/scep-mtls/{}", c.name),
                "trust_bundle_path": m.bundle_path.display().to_string(),
                "earliest_expiry": m.earliest_expiry.to_rfc3339(),
                "days_to_expiry": days_to(m.earliest_expiry, now),
            }),
            None => json!({ "enabled": false }),
        },
        "policy": {
            "validity_days": c.issuance.validity_secs / 86_400,
            "min_rsa_bits": c.keys.min_rsa_bits,
            "allow_ec_p256": c.keys.allow_p256,
            "allow_ec_p384": c.keys.allow_p384,
            "allowed_ekus": c.allowed_ekus.iter().map(|e| scep_engine::oid::dotted(e)).collect::<Vec<_>>(),
            "renewal": c.renewal.enabled,
        },
        "intune": intune,
    })
}

fn intune_profile_json(s: &IntuneProfileStats, now: UnixTime) -> Value {
    let counters: serde_json::Map<String, Value> =
        s.counters.iter().map(|(k, v)| ((*k).to_string(), json!(v))).collect();
    json!({
        "path_id": s.path_id,
        "enabled": s.enabled,
        "counters": counters,
        "trust_anchors": s.trust_anchors.iter().map(|a| json!({
            "subject": a.subject,
            "not_after": a.not_after.to_rfc3339(),
            "days_to_expiry": days_to(a.not_after, now),
            "status": expiry_status(a.not_after, now),
        })).collect::<Vec<_>>(),
    })
}

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

/// The profiles endpoint's JSON.
pub fn profiles_json(state: &ServiceState, now: UnixTime) -> Value {
    let profiles = state.profiles();
    let stats = state.admin_intune_stats();
    let list: Vec<Value> = profiles
        .iter()
        .map(|p| {
            let s = stats.iter().find(|s| s.path_id == p.engine.config().name);
            profile_json(p, profiles.default_name(), s, now)
        })
        .collect();
    json!({ "profiles": list })
}

fn intune_json(state: &ServiceState, now: UnixTime) -> Value {
    let list: Vec<Value> = state.admin_intune_stats().iter().map(|s| intune_profile_json(s, now)).collect();
    json!({ "profiles": list })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReloadBody {
    path_id: String,
}

fn reload_trust(state: &ServiceState, body: &[u8], key: &str) -> http::Response<Full<Bytes>> {
    let parsed: ReloadBody = match serde_json::from_slice(body) {
        Ok(b) => b,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                &format!("body must be {{\"path_id\": \"<profile>\"}}: {e}"),
            );
        }
    };
    let result = state.admin_reload_trust(&parsed.path_id);
    tracing::info!(target: "scepd::admin", key, profile = %parsed.path_id, ok = result.is_ok(), "Intune trust anchor reload");
    match result {
        Ok(anchors) => {
            let now = UnixTime::now();
            ok(json!({
                "path_id": parsed.path_id,
                "reloaded": true,
                "trust_anchors": anchors.iter().map(|a| json!({
                    "subject": a.subject,
                    "not_after": a.not_after.to_rfc3339(),
                    "days_to_expiry": days_to(a.not_after, now),
                })).collect::<Vec<_>>(),
            }))
        }
        Err(ReloadTrustError::UnknownProfile) => {
            error(StatusCode::NOT_FOUND, "unknown_profile", "no such SCEP profile")
        }
        Err(ReloadTrustError::NotEnabled) => {
            error(StatusCode::CONFLICT, "intune_not_enabled", "Intune is not enabled on this profile")
        }
        Err(ReloadTrustError::Failed(why)) => error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "reload_failed",
            &format!("trust anchors not reloaded, the previous pool stays: {why}"),
        ),
    }
}

async fn audit(state: &ServiceState, query: &str) -> http::Response<Full<Bytes>> {
    let Some(log) = state.audit() else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "audit_disabled", "this server has no audit log");
    };
    let mut q = AuditQuery { limit: 100, ..AuditQuery::default() };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let Some(v) = crate::query::percent_decode(v).map(std::borrow::Cow::into_owned) else {
            return error(StatusCode::BAD_REQUEST, "bad_request", &format!("{k}: bad percent-encoding"));
        };
        match k {
            "profile" if !v.is_empty() => q.profile = Some(v),
            "action" if !v.is_empty() => q.action = Some(v),
            "outcome" if !v.is_empty() => q.outcome = Some(v),
            "profile" | "action" | "outcome" => {}
            "limit" => match v.parse::<u32>() {
                Ok(n) if (1..=MAX_QUERY_LIMIT).contains(&n) => q.limit = n,
                _ => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "bad_request",
                        &format!("limit: must be a number from 1 to {MAX_QUERY_LIMIT}"),
                    );
                }
            },
            "before_id" => match v.parse::<i64>() {
                Ok(n) => q.before_id = Some(n),
                Err(_) => return error(StatusCode::BAD_REQUEST, "bad_request", "before_id: must be a number"),
            },
            other => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    &format!("unknown parameter {other:?} (profile, action, outcome, limit, before_id)"),
                );
            }
        }
    }
    match log.query(q).await {
        Ok(events) => ok(json!({ "events": events })),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, "audit_unavailable", &e.0),
    }
}

fn ok(v: Value) -> http::Response<Full<Bytes>> {
    respond(StatusCode::OK, &v)
}

fn unauthorized(message: &str) -> http::Response<Full<Bytes>> {
    let mut r = error(StatusCode::UNAUTHORIZED, "unauthorized", message);
    r.headers_mut().insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

/// A JSON error `{"error": code, "message": text}`.
pub fn error(status: StatusCode, code: &str, message: &str) -> http::Response<Full<Bytes>> {
    respond(status, &json!({ "error": code, "message": message }))
}

fn respond(status: StatusCode, v: &Value) -> http::Response<Full<Bytes>> {
    let body = serde_json::to_vec_pretty(v).unwrap_or_else(|_| b"{}".to_vec());
    let mut r = http::Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(name: &str, key: &str, role: Option<&str>) -> ApiKeySection {
        ApiKeySection { name: Some(name.into()), key: Some(key.into()), role: role.map(Into::into) }
    }

    #[test]
    fn keys_authenticate_with_their_role() {
        let keys = ApiKeys::from_sections(&[
            section("ops", "ops-key-0123456789", Some("admin")),
            section("grafana", "grafana-key-0123456789", None),
        ])
        .unwrap();
        assert_eq!(keys.authenticate("ops-key-0123456789"), Some(("ops", Role::Admin)));
        assert_eq!(keys.authenticate("grafana-key-0123456789"), Some(("grafana", Role::Reader)));
        assert_eq!(keys.authenticate("ops-key-012345678"), None);
        assert_eq!(keys.authenticate(""), None);
        assert!(!format!("{keys:?}").contains("0123456789"), "Debug never shows a key");
    }

    #[test]
    fn invalid_keys_are_named_without_quoting_the_key() {
        let long = "k".repeat(20);
        let cases: Vec<(Vec<ApiKeySection>, &str)> = vec![
            (vec![ApiKeySection { key: Some(long.clone()), ..Default::default() }], "api_key[0].name"),
            (vec![section("bad name", &long, None)], "api_key[0].name"),
            (vec![section("a", "short", None)], "api_key[0].key"),
            (vec![ApiKeySection { name: Some("a".into()), ..Default::default() }], "api_key[0].key"),
            (vec![section("a", &long, Some("root"))], "api_key[0].role"),
            (vec![section("a", &long, None), section("a", &format!("{long}x"), None)], "api_key[1].name"),
            (vec![section("a", &long, None), section("b", &long, None)], "api_key[1].key"),
        ];
        for (sections, key) in cases {
            let e = ApiKeys::from_sections(&sections).unwrap_err();
            assert!(e.0.starts_with(key), "{e} does not name {key}");
            assert!(!e.0.contains(&long), "{e} quotes the key");
        }
    }

    #[test]
    fn expiry_badges() {
        let now = UnixTime::from_secs(1_000_000_000);
        assert_eq!(expiry_status(now.plus(31 * 86_400), now), "green");
        assert_eq!(expiry_status(now.plus(20 * 86_400), now), "amber");
        assert_eq!(expiry_status(now.plus(86_400), now), "red");
        assert_eq!(expiry_status(now.plus(-1), now), "expired");
    }
}
