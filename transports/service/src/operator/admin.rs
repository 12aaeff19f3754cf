//! The admin API (JSON, Bearer API keys) under `/api/v1/admin/scep/`.
//!
//! | method | path | answers |
//! |---|---|---|
//! | GET | `/api/v1/admin/scep/events?profile=&action=&outcome=&exclude_outcome=&since=&limit=&before_id=` | audit events, newest first (`/audit`: alias) |
//! | GET | `/api/v1/admin/scep/profiles` | every profile: URLs, RA certificate validity, mTLS, challenge set, Intune block |
//! | GET | `/api/v1/admin/scep/intune/stats` | per profile: trust anchors, settings, rate limit, replay cache, counters; in API mode: settings, last token/discovery results, latencies, Intune codes |
//! | POST | `/api/v1/admin/scep/intune/reload-trust` | body `{"path_id": "corp"}`: re-read that profile's Connector trust anchors; 200 / 400 / 404 / 409 / 500 (old pool kept) |
//! | POST | `/api/v1/admin/scep/challenges` | body `{"profile": "corp", "ttl_secs": 3600, "common_name": "dev-1", "subject_alt_names": ["DNS:dev-1.corp.example"]}` (all but `profile` optional): mint a one-time challenge on a `challenge_mode = "one-time"` profile; 201 `{"id", "profile", "challenge", "expires_at", ...}` (the only time the challenge is shown) / 400 |
//! | GET | `/api/v1/admin/scep/challenges?profile=` | outstanding (unused, unexpired) one-time challenges: id, profile, binding, created, expires, minting key; never the challenge. A `reader` key may list |
//! | GET | `/api/v1/admin/scep/certificates`, `.../certificates/{serial}`, `/api/v1/admin/scep/charts` | the certificate inventory, one certificate with PEM and history, the GUI's charts ([`crate::operator::certificates`]). A `reader` key may read |
//! | POST | `/api/v1/admin/scep/certificates/{serial}/revoke` | body `{"reason": "keyCompromise"}`: revoke; 200 / 400 / 404 / 409 ([`crate::operator::certificates`]) |
//!
//! `profile`, `action` and `outcome` of the events query take one value or a
//! comma-separated list (any of them matches); `exclude_outcome` (same form)
//! leaves out events with any of its outcomes. At most 32 values, no empty
//! item. The recent Intune failures are one query:
//! `?action=scep_pkcsreq_intune,scep_renewalreq_intune&exclude_outcome=success&limit=50`.
//!
//! Every endpoint but the challenge list, the certificate inventory and the charts requires an `admin` key: no key or
//! an unknown key is 401, a non-admin (`reader`) key is 403. After
//! [`crate::state::auth_limit::MAX_FAILURES`] unknown keys from one client
//! address (IPv6: its /64) within [`crate::state::auth_limit::WINDOW`], that
//! address is answered 429 `too_many_failures` with `Retry-After` (seconds)
//! until the window ends, without its keys being compared; other addresses are
//! unaffected ([`crate::state::auth_limit`]). Errors are `{"error": code, "message": text}`.
//! Durations are integer seconds (`*_secs`); times are RFC 3339 UTC;
//! `days_to_expiry` is whole days, rounded down, negative once expired.
//! Keys are compared in constant time (SHA-256 of the presented key against
//! each configured key's digest, all compared) and never logged.
//! The keys are configured in `[[api_key]]` tables or `CERTCTL_API_KEYS_NAMED`
//! ([`crate::settings::api_keys`]); the running set is
//! [`crate::state::api_keys::ApiKeys`].

use bytes::Bytes;
use std::time::Instant;

use http::header::{RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderValue, Method, StatusCode};
use http_body_util::Full;
use scep_engine::UnixTime;
use scep_engine::config::{ChallengePolicy, ReplySignaturePolicy};
use scep_engine::x509::{CertificateRef, name_to_string};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::intune::{AnchorInfo, ProfileIntuneStats};
use crate::operator::certificates::{self, CHARTS, CertificatePath};
use crate::operator::reply::respond;
pub use crate::operator::reply::{error, expiry_status};
use crate::settings::api_keys::Role;
use crate::state::Profile;
use crate::state::ServiceState;
use crate::state::metrics::ChallengeEvent;
use crate::store::audit::{AuditEvent, AuditQuery, MAX_FILTER_VALUES, MAX_QUERY_LIMIT};
use crate::store::challenges::{
    ChallengeBinding, DEFAULT_TTL_SECS, MAX_BOUND_SANS, MAX_TTL_SECS, MIN_TTL_SECS, MintRequest, OutstandingChallenge,
};

/// Largest accepted admin request body.
const MAX_BODY: usize = 16 * 1024;

/// Why a trust anchor reload was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReloadTrustError {
    /// No such profile (404).
    UnknownProfile,
    /// The profile does not validate Intune challenges (409).
    NotEnabled,
    /// The file could not be used; the old pool is kept (500).
    Failed(String),
}

impl ServiceState {
    /// Re-reads profile `path_id`'s Connector trust anchor file and swaps the
    /// pool (the SIGHUP equivalent for one profile); the old pool is kept on
    /// error. Reads one small file.
    ///
    /// # Errors
    /// See [`ReloadTrustError`].
    pub fn admin_reload_trust(&self, path_id: &str) -> Result<Vec<AnchorInfo>, ReloadTrustError> {
        // One snapshot for the checks and the reload: a concurrent SIGHUP
        // cannot turn an unknown profile into a reload failure.
        let profiles = self.profiles();
        let Some(profile) = profiles.iter().find(|p| p.engine.config().name == path_id) else {
            return Err(ReloadTrustError::UnknownProfile);
        };
        if profile.intune.is_none() {
            return Err(ReloadTrustError::NotEnabled);
        }
        let stats =
            profiles.reload_intune_trust(Some(path_id), UnixTime::now()).map_err(|e| ReloadTrustError::Failed(e.0))?;
        Ok(stats.into_iter().find(|s| s.profile == path_id).map(|s| s.anchors).unwrap_or_default())
    }
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
    /// The client's address, when known: failed authentications are limited
    /// per address.
    pub client: Option<std::net::IpAddr>,
}

/// Largest admin request body the caller should read.
pub const fn max_body() -> usize {
    MAX_BODY
}

/// Answers one admin API request.
pub async fn handle(state: &ServiceState, req: AdminRequest<'_>) -> http::Response<Full<Bytes>> {
    let keys = state.api_keys();
    let Some(token) = req.authorization.and_then(bearer_token) else {
        return unauthorized("missing Bearer API key (Authorization: Bearer <key>)");
    };
    let limit = state.auth_limit();
    if let Err(retry_after) = limit.check(req.client, Instant::now()) {
        return too_many_failures(retry_after);
    }
    let Some((name, role)) = keys.authenticate(token) else {
        limit.record_failure(req.client, Instant::now());
        tracing::warn!(target: "scepd::admin", client = ?req.client, path = req.path, "admin API: unknown API key");
        return unauthorized("unknown API key");
    };
    let certificate_path = CertificatePath::parse(req.path);
    let revoke_path = matches!(certificate_path, Some(CertificatePath::Revoke(_)));
    //= https://www.rfc-editor.org/rfc/rfc9110#section-9.3.2
    //# The HEAD method is identical to GET except that the server MUST NOT
    //# send content in the response.
    // Mapped before the role check: what a key may GET, it may HEAD. hyper
    // sends no body.
    let method = if req.method == Method::HEAD { &Method::GET } else { req.method };
    // Readers read the challenge list, the certificate inventory and the charts.
    let reader_may = method == Method::GET
        && (req.path == CHALLENGES
            || req.path == CHARTS
            || matches!(certificate_path, Some(CertificatePath::List | CertificatePath::One(_))));
    if role != Role::Admin && !reader_may {
        tracing::warn!(target: "scepd::admin", key = name, path = req.path, "admin API: key is not admin");
        return error(StatusCode::FORBIDDEN, "forbidden", "this endpoint requires an admin API key");
    }
    tracing::info!(target: "scepd::admin", key = name, method = %req.method, path = req.path, "admin API");
    let mut answer = match (method, req.path) {
        (&Method::GET, PROFILES) => ok(profiles_json(state, UnixTime::now())),
        (&Method::GET, INTUNE_STATS) => ok(intune_json(state, UnixTime::now())),
        (&Method::POST, RELOAD_TRUST) => reload_trust(state, req.body, name),
        (&Method::GET, EVENTS | EVENTS_ALIAS) => events(state, req.query.unwrap_or("")).await,
        (&Method::POST, CHALLENGES) => mint_challenge(state, req.body, name).await,
        (&Method::GET, CHALLENGES) => list_challenges(state, req.query.unwrap_or("")).await,
        (&Method::GET, CHARTS) => certificates::charts(state).await,
        (method, _) if certificate_path.is_some() => match (method, certificate_path) {
            (&Method::GET, Some(CertificatePath::List)) => certificates::list(state, req.query.unwrap_or("")).await,
            (&Method::GET, Some(CertificatePath::One(serial))) => certificates::one(state, serial).await,
            (&Method::POST, Some(CertificatePath::Revoke(serial))) => {
                certificates::revoke(state, serial, req.body, name).await
            }
            _ => error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "method not allowed on this endpoint"),
        },
        (_, PROFILES | INTUNE_STATS | RELOAD_TRUST | EVENTS | EVENTS_ALIAS | CHALLENGES | CHARTS) => {
            error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "method not allowed on this endpoint")
        }
        _ => error(StatusCode::NOT_FOUND, "not_found", "no such admin endpoint"),
    };
    if answer.status() == StatusCode::METHOD_NOT_ALLOWED {
        // RFC 9110 §15.5.6.
        let allow = match req.path {
            RELOAD_TRUST => "POST",
            _ if revoke_path => "POST",
            CHALLENGES => "GET, HEAD, POST",
            _ => "GET, HEAD",
        };
        answer.headers_mut().insert(http::header::ALLOW, HeaderValue::from_static(allow));
    }
    answer
}

/// The key of an `Authorization: Bearer <key>` field value; `None` for
/// another scheme or no key.
fn bearer_token(value: &HeaderValue) -> Option<&str> {
    //= https://www.rfc-editor.org/rfc/rfc9110#section-11.1
    //# It uses a case-insensitive token to identify the authentication scheme:
    //= https://www.rfc-editor.org/rfc/rfc9110#section-11.4
    //# credentials = auth-scheme [ 1*SP ( token68 / #auth-param ) ]
    // Leading and trailing OWS are not part of a field value (RFC 9110 §5.5).
    let v = value.to_str().ok()?.trim_matches([' ', '\t']);
    let (scheme, key) = v.split_once(' ')?;
    let key = key.trim_start_matches(' ');
    (scheme.eq_ignore_ascii_case("Bearer") && !key.is_empty()).then_some(key)
}

/// A profile name as `[[profile]] name` allows it: `[a-z0-9-]`, 1 to 64.
fn is_profile_name(v: &str) -> bool {
    (1..=64).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

const PROFILES: &str = "/api/v1/admin/scep/profiles";
const INTUNE_STATS: &str = "/api/v1/admin/scep/intune/stats";
const RELOAD_TRUST: &str = "/api/v1/admin/scep/intune/reload-trust";
const EVENTS: &str = "/api/v1/admin/scep/events";
const CHALLENGES: &str = "/api/v1/admin/scep/challenges";
/// The earlier name of [`EVENTS`], kept as an alias.
const EVENTS_ALIAS: &str = "/api/v1/admin/scep/audit";

/// Whole days from `now` until `t`, rounded down (negative once past).
fn days_to(t: UnixTime, now: UnixTime) -> i64 {
    (t.secs() - now.secs()).div_euclid(86_400)
}

/// `subject`, `not_before`, `not_after`, `days_to_expiry`, `expired`, `status` ([`expiry_status`]).
fn cert_json(der: &[u8], now: UnixTime) -> Value {
    match CertificateRef::parse(der) {
        Ok(c) => json!({
            "subject": name_to_string(c.subject),
            "not_before": c.not_before.to_rfc3339(),
            "not_after": c.not_after.to_rfc3339(),
            "days_to_expiry": days_to(c.not_after, now),
            "expired": c.not_after < now,
            "status": expiry_status(c.not_after, now),
        }),
        Err(_) => Value::Null,
    }
}

fn profile_json(
    p: &Profile,
    default: &str,
    aliases: &[&str],
    stats: Option<&ProfileIntuneStats>,
    now: UnixTime,
) -> Value {
    let c = p.engine.config();
    let intune = stats.map_or(Value::Null, |s| intune_profile_json(s, now));
    let encryption: Vec<Value> = p.engine.encryption_ras().iter().map(|ra| cert_json(&ra.certificate, now)).collect();
    json!({
        "path_id": c.name,
        "url_path": format!("/scep/{}", c.name),
        "url_aliases": aliases,
        "default": c.name == default,
        "issuer_id": p.issuer.id(),
        "challenge_password_set": matches!(c.challenge, ChallengePolicy::Static(_)),
        "challenge_mode": match c.challenge {
            ChallengePolicy::OneTime => "one-time",
            ChallengePolicy::IntuneApi => "intune-api",
            _ => "static",
        },
        // The signing RA (it also decrypts requests encrypted to it).
        "ra_cert": cert_json(&c.ra.certificate, now),
        "ra": {
            "arrangement": if encryption.is_empty() { "single" } else { "ndes-pair" },
            "signing": cert_json(&c.ra.certificate, now),
            // rsa-2048, ..., ecdsa-p256, ecdsa-p384
            "signing_key_type": c.ra.key.kind(),
            "encryption": encryption,
            // An ECDSA signing RA has one form (ecdsa-with-SHA*); the policy applies to RSA.
            "reply_signature": match (c.ra.key.as_rsa(), p.engine.reply_signature()) {
                (None, _) => "ecdsa",
                (Some(_), ReplySignaturePolicy::RsaEncryption) => "rsa-encryption",
                (Some(_), ReplySignaturePolicy::MirrorRequest) => "mirror",
            },
        },
        "ca_cert": c.ca_chain.first().map_or(Value::Null, |d| cert_json(d, now)),
        "mtls": match &p.mtls {
            Some(m) => json!({
                "enabled": true,
                "trust_bundle_path": m.bundle_path.display().to_string(),
                "url_path": format!("/scep-mtls/{}", c.name),
                "earliest_expiry": m.earliest_expiry.to_rfc3339(),
                "days_to_expiry": days_to(m.earliest_expiry, now),
                "expired": m.earliest_expiry < now,
                "status": expiry_status(m.earliest_expiry, now),
            }),
            None => json!({ "enabled": false, "trust_bundle_path": null }),
        },
        "policy": {
            "validity_secs": c.issuance.validity_secs,
            "min_rsa_bits": c.keys.min_rsa_bits,
            "allow_ec_p256": c.keys.allow_p256,
            "allow_ec_p384": c.keys.allow_p384,
            "allowed_ekus": c.allowed_ekus.iter().map(|e| scep_engine::oid::dotted(e)).collect::<Vec<_>>(),
            "renewal": c.renewal.enabled,
            "trust_requested_sid": c.issuance.trust_requested_sid,
        },
        "intune": intune,
    })
}

fn anchor_json(a: &AnchorInfo, now: UnixTime) -> Value {
    json!({
        "subject": a.subject,
        "key": a.key,
        "not_before": a.not_before.to_rfc3339(),
        "not_after": a.not_after.to_rfc3339(),
        "days_to_expiry": days_to(a.not_after, now),
        "expired": a.not_after < now,
        "status": expiry_status(a.not_after, now),
    })
}

/// One Intune profile's block.
fn intune_profile_json(s: &ProfileIntuneStats, now: UnixTime) -> Value {
    let counters: serde_json::Map<String, Value> =
        s.counters.iter().map(|(k, v)| ((*k).to_string(), json!(v))).collect();
    json!({
        "path_id": s.profile,
        "enabled": true,
        "mode": "connector",
        "trust_bundle_path": s.bundle.display().to_string(),
        "audience": s.audience,
        "challenge_validity_secs": s.challenge_validity_secs,
        "clock_skew_tolerance_secs": s.clock_skew_tolerance_secs,
        "rate_limit": {
            "per_device_rate_limit_24h": s.per_device_rate_limit_24h,
            "window_secs": s.rate_limit_window_secs,
            "devices_tracked": s.rate_limit_devices_tracked,
            "capacity": s.rate_limit_capacity,
        },
        "replay_cache_entries": s.replay_entries,
        "replay_cache_capacity": s.replay_capacity,
        "counters": counters,
        "trust_anchors": s.anchors.iter().map(|a| anchor_json(a, now)).collect::<Vec<_>>(),
    })
}

/// The profiles endpoint's JSON.
pub fn profiles_json(state: &ServiceState, now: UnixTime) -> Value {
    let profiles = state.profiles();
    let stats = state.intune_stats();
    let list: Vec<Value> = profiles
        .iter()
        .map(|p| {
            let s = stats.iter().find(|s| s.profile == p.engine.config().name);
            let name = p.engine.config().name.as_str();
            profile_json(p, profiles.default_name(), &profiles.aliases_of(name), s, now)
        })
        .collect();
    json!({ "profiles": list })
}

/// The Intune stats endpoint's JSON: every profile, sorted by name;
/// `{"path_id", "enabled": false}` for a profile without Intune.
pub fn intune_json(state: &ServiceState, now: UnixTime) -> Value {
    let stats = state.intune_stats();
    let list: Vec<Value> = state
        .profiles()
        .iter()
        .map(|p| {
            let name = &p.engine.config().name;
            let mut v = match &p.intune_api {
                Some(api) => intune_api_json(name, api),
                None => stats
                    .iter()
                    .find(|s| &s.profile == name)
                    .map_or_else(|| json!({ "path_id": name, "enabled": false }), |s| intune_profile_json(s, now)),
            };
            // Gate 9 in either mode: its kind, counts and last decision.
            if let (Some(gate), Some(o)) = (&p.intune_compliance, v.as_object_mut()) {
                o.insert("compliance".into(), json!(gate.snapshot()));
            }
            v
        })
        .collect();
    json!({ "profiles": list })
}

/// One profile in Intune API mode: settings (never the secret), the last
/// token and discovery results, call latencies and the Intune codes seen.
fn intune_api_json(name: &str, api: &crate::intune::api::IntuneApi) -> Value {
    let settings = api.client.settings();
    let credential = match &settings.credential {
        crate::settings::profile::IntuneCredential::Secret(_) => "client_secret",
        crate::settings::profile::IntuneCredential::Certificate { .. } => "client_assertion",
    };
    json!({
        "path_id": name,
        "enabled": true,
        "mode": "api",
        "tenant_id": settings.tenant_id,
        "client_id": settings.client_id,
        "credential": credential,
        "authority_url": settings.authority_url,
        "graph_url": settings.graph_url,
        "resource_url": settings.resource_url,
        "return_before_notification": settings.return_before_notification,
        "revocation_poll_interval_secs": settings.revocation_poll_interval_secs,
        "revocation_last_sync": api.revocation.last(),
        "stats": api.client.stats.snapshot(),
    })
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
                "trust_anchors": anchors.iter().map(|a| anchor_json(a, now)).collect::<Vec<_>>(),
            }))
        }
        Err(ReloadTrustError::UnknownProfile) => {
            error(StatusCode::NOT_FOUND, "unknown_profile", "no such SCEP profile")
        }
        Err(ReloadTrustError::NotEnabled) => {
            error(StatusCode::CONFLICT, "intune_not_enabled", "Intune is not enabled on this profile")
        }
        Err(ReloadTrustError::Failed(why)) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "reload_failed",
            &format!("trust anchors not reloaded, the old pool is kept: {why}"),
        ),
    }
}

/// The body of `POST /api/v1/admin/scep/challenges`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MintBody {
    profile: String,
    ttl_secs: Option<i64>,
    common_name: Option<String>,
    subject_alt_names: Option<Vec<String>>,
}

fn challenge_json(c: &OutstandingChallenge) -> Value {
    json!({
        "id": c.id,
        "profile": c.profile,
        "binding": c.binding,
        "created_at": c.created_at.to_rfc3339(),
        "expires_at": c.expires_at.to_rfc3339(),
        "created_by": c.created_by,
    })
}

/// Mints a one-time challenge (admin key); audited as `challenge_minted`
/// naming the key, counted as `minted`.
async fn mint_challenge(state: &ServiceState, body: &[u8], key: &str) -> http::Response<Full<Bytes>> {
    let bad = |message: &str| error(StatusCode::BAD_REQUEST, "bad_request", message);
    let parsed: MintBody = match serde_json::from_slice(body) {
        Ok(b) => b,
        Err(e) => {
            return bad(&format!(
                "body must be {{\"profile\": \"<name>\"}} with optional \"ttl_secs\", \"common_name\", \"subject_alt_names\": {e}"
            ));
        }
    };
    let profiles = state.profiles();
    let Some(profile) = profiles.iter().find(|p| p.engine.config().name == parsed.profile) else {
        return error(StatusCode::NOT_FOUND, "unknown_profile", &format!("no SCEP profile {:?}", parsed.profile));
    };
    if !matches!(profile.engine.config().challenge, ChallengePolicy::OneTime) {
        return error(
            StatusCode::CONFLICT,
            "not_one_time",
            &format!("profile {:?} does not use one-time challenges (challenge_mode = \"one-time\")", parsed.profile),
        );
    }
    let ttl_secs = parsed.ttl_secs.unwrap_or(DEFAULT_TTL_SECS);
    if !(MIN_TTL_SECS..=MAX_TTL_SECS).contains(&ttl_secs) {
        return bad(&format!("ttl_secs: must be from {MIN_TTL_SECS} to {MAX_TTL_SECS} (7 days)"));
    }
    let common_name = match parsed.common_name {
        Some(cn) if cn.is_empty() || cn.chars().count() > 256 || cn.chars().any(char::is_control) => {
            return bad("common_name: must be 1 to 256 characters, no control characters");
        }
        cn => cn,
    };
    let sans = parsed.subject_alt_names.unwrap_or_default();
    if sans.len() > MAX_BOUND_SANS {
        return bad(&format!("subject_alt_names: at most {MAX_BOUND_SANS}"));
    }
    let mut subject_alt_names = Vec::with_capacity(sans.len());
    for san in &sans {
        if san.len() > 1024 || san.chars().any(char::is_control) {
            return bad("subject_alt_names: each at most 1024 characters, no control characters");
        }
        match ChallengeBinding::normalize_san(san) {
            // The binding is a set (ChallengeBinding::mismatch compares
            // sets): a SAN given twice, in any spelling, is kept once.
            Ok(n) if subject_alt_names.contains(&n) => {}
            Ok(n) => subject_alt_names.push(n),
            Err(why) => return bad(&format!("subject_alt_names: {why}")),
        }
    }
    let Some(store) = state.challenges() else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", "this server has no challenge store");
    };
    let binding = ChallengeBinding { common_name, subject_alt_names };
    let now = UnixTime::now();
    let request = MintRequest {
        profile: parsed.profile.clone(),
        binding: binding.clone(),
        ttl_secs,
        created_by: key.to_string(),
    };
    let minted = match store.mint(request, now).await {
        Ok(m) => m,
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", &e.0),
    };
    state.metrics().challenge(&parsed.profile, ChallengeEvent::Minted);
    tracing::info!(target: "scepd::admin", key, profile = %parsed.profile, id = minted.id, ttl_secs, "one-time challenge minted");
    if let Some(audit) = state.audit() {
        let detail = format!(
            "one-time challenge #{} minted by API key {key}, expires {}, binding {}",
            minted.id,
            minted.expires_at.to_rfc3339(),
            serde_json::to_string(&binding).unwrap_or_default()
        );
        let event = AuditEvent::challenge(&parsed.profile, "challenge_minted", "admin", 201, detail, now);
        if let Err(e) = audit.record(event).await {
            // Fail closed like SCEP answers: an unaudited challenge is never handed out.
            // It stays unusable only until it expires; nobody knows its secret.
            tracing::error!(target: "scepd::audit", error = %e, "audit event not stored: challenge withheld");
            state.metrics().audit_failure();
            return error(StatusCode::SERVICE_UNAVAILABLE, e.label(), "the audit log cannot record this");
        }
    }
    respond(
        StatusCode::CREATED,
        &json!({
            "id": minted.id,
            "profile": parsed.profile,
            "challenge": minted.challenge,
            "expires_at": minted.expires_at.to_rfc3339(),
            "expires_at_unix": minted.expires_at.secs(),
            "ttl_secs": ttl_secs,
            "binding": binding,
        }),
    )
}

/// Outstanding one-time challenges (`?profile=` filters), never the secrets.
async fn list_challenges(state: &ServiceState, query: &str) -> http::Response<Full<Bytes>> {
    let mut profile = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match (k, crate::query::percent_decode(v)) {
            ("profile", Some(v)) if is_profile_name(&v) => profile = Some(v.into_owned()),
            ("profile", _) => return error(StatusCode::BAD_REQUEST, "bad_request", "profile: must be a profile name"),
            (other, _) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    &format!("unknown parameter {other:?} (profile)"),
                );
            }
        }
    }
    let Some(store) = state.challenges() else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", "this server has no challenge store");
    };
    match store.outstanding(profile, UnixTime::now()).await {
        Ok(list) => ok(json!({ "challenges": list.iter().map(challenge_json).collect::<Vec<_>>() })),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", &e.0),
    }
}

/// `since`: Unix seconds (`1893456000`) or an RFC 3339 date-time. A `+` of an
/// offset sent unencoded arrives as a space (form encoding) and is taken as `+`.
fn parse_since(v: &str) -> Option<i64> {
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        return v.parse().ok();
    }
    let fixed: String = v.char_indices().map(|(i, c)| if c == ' ' && i > 10 { '+' } else { c }).collect();
    UnixTime::parse_rfc3339(&fixed).map(UnixTime::secs)
}

const EVENT_PARAMS: &str = "profile, action, outcome, exclude_outcome, since, limit, before_id";

/// A list filter: one value or a comma-separated list (values never contain
/// commas). Empty is no filter; an empty item (`a,,b`, `a,`) or more than
/// [`MAX_FILTER_VALUES`] items is refused, naming the parameter.
fn parse_list(name: &str, v: &str) -> Result<Vec<String>, String> {
    if v.is_empty() {
        return Ok(Vec::new());
    }
    let items: Vec<String> = v.split(',').map(str::to_owned).collect();
    if items.iter().any(String::is_empty) {
        return Err(format!("{name}: empty item in the comma-separated list"));
    }
    if items.len() > MAX_FILTER_VALUES {
        return Err(format!("{name}: at most {MAX_FILTER_VALUES} comma-separated values"));
    }
    Ok(items)
}

async fn events(state: &ServiceState, query: &str) -> http::Response<Full<Bytes>> {
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
            "profile" | "action" | "outcome" | "exclude_outcome" => {
                let list = match parse_list(k, &v) {
                    Ok(list) => list,
                    Err(why) => return error(StatusCode::BAD_REQUEST, "bad_request", &why),
                };
                match k {
                    "profile" => q.profile = list,
                    "action" => q.action = list,
                    "outcome" => q.outcome = list,
                    _ => q.exclude_outcome = list,
                }
            }
            "since" => match parse_since(&v) {
                Some(t) => q.since = Some(t),
                None => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "bad_request",
                        "since: must be an RFC 3339 date-time (2030-01-01T00:00:00Z) or Unix seconds",
                    );
                }
            },
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
                    &format!("unknown parameter {other:?} ({EVENT_PARAMS})"),
                );
            }
        }
    }
    match log.query(q).await {
        Ok(events) => ok(json!({ "events": events })),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.label(), &e.message),
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

/// 429 for a client that used up its failed authentications: `Retry-After`
/// in whole seconds (rounded up).
fn too_many_failures(retry_after: std::time::Duration) -> http::Response<Full<Bytes>> {
    let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
    let mut r = error(
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_failures",
        &format!("too many failed authentications from this address; retry after {secs} s"),
    );
    r.headers_mut().insert(RETRY_AFTER, HeaderValue::from(secs));
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::api_keys::ApiKeySection;
    use crate::state::api_keys::ApiKeys;

    fn section(name: &str, key: &str, role: Option<&str>) -> ApiKeySection {
        ApiKeySection { name: Some(name.into()), key: Some(key.into()), role: role.map(Into::into) }
    }

    /// RFC 9110 §11.1: the scheme is case-insensitive (`BEARER` was 401);
    /// §11.4: one or more SP before the key; OWS around the value is not
    /// part of it.
    #[test]
    fn the_bearer_scheme_is_case_insensitive_and_takes_one_or_more_spaces() {
        let token = |v: &'static str| bearer_token(&HeaderValue::from_static(v)).map(str::to_owned);
        for v in
            ["Bearer k-1", "bearer k-1", "BEARER k-1", "bEaReR k-1", "Bearer   k-1", " Bearer k-1\t ", "Bearer k-1 "]
        {
            assert_eq!(token(v).as_deref(), Some("k-1"), "{v:?}");
        }
        for v in ["", "Bearer", "Bearer ", "Bearer  \t", "Basic k-1", "Bearerk-1", "Bearer\tk-1", "Bearers k-1", "k-1"]
        {
            assert_eq!(token(v), None, "{v:?}");
        }
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

    mod api {
        use std::sync::Arc;

        use futures_lite::future::block_on;
        use http::header::{CONTENT_TYPE, X_CONTENT_TYPE_OPTIONS};
        use scep_engine::crypto::{EcPrivateKey, SigningKey};
        use scep_engine::intune::CsrIdentity;
        use scep_issuers::x509_build::{Validity, common_name, self_signed_ca};

        use super::super::*;
        use crate::settings::start::StartOptions;
        use crate::store::audit::AuditEvent;
        use crate::testutil::TestDir;

        const ADMIN: &str = "admin-key-0123456789";

        /// The eleven counters of the spec, then the engine's twelfth.
        const COUNTERS: [&str; 12] = [
            "success",
            "malformed",
            "signature_invalid",
            "unknown_version",
            "not_yet_valid",
            "expired",
            "wrong_audience",
            "claim_mismatch",
            "replay",
            "rate_limited",
            "compliance_failed",
            "replay_cache_full",
        ];

        /// A self-signed P-256 Connector certificate PEM valid over [nb, na].
        fn anchor_pem(cn: &str, nb: i64, na: i64) -> String {
            let (_, der) = EcPrivateKey::generate().unwrap();
            let key = SigningKey::from_der(&der).unwrap();
            let validity = Validity { not_before: UnixTime::from_secs(nb), not_after: UnixTime::from_secs(na) };
            let cert = self_signed_ca(&key, &common_name(cn), &[1], validity).unwrap();
            scep_engine::pem::encode("CERTIFICATE", &cert)
        }

        fn valid_pem(cn: &str) -> String {
            let now = UnixTime::now().secs();
            anchor_pem(cn, now - 86_400, now + 365 * 86_400)
        }

        /// `corp`: Intune on (bundle `intune.pem`); `plain`: mTLS, no Intune. An admin key.
        fn load(dir: &TestDir) -> Arc<ServiceState> {
            std::fs::write(dir.path().join("intune.pem"), valid_pem("connector-a")).unwrap();
            let cfg = format!(
                "[server]\ndata_dir = \"data\"\n\
                 [[api_key]]\nname = \"ops\"\nkey = \"{ADMIN}\"\nrole = \"admin\"\n\
                 {}intune_enabled = true\nintune_connector_cert_path = \"intune.pem\"\n\
                 intune_audience = \"https://scep.example/scep/corp\"\nintune_challenge_validity = \"30m\"\n\
                 intune_clock_skew_tolerance = \"2m\"\nintune_per_device_rate_limit_24h = 5\n\
                 {}mtls_enabled = true\nmtls_client_ca_trust_bundle_path = \"chain.pem\"\n",
                dir.profile_toml("corp"),
                dir.profile_toml("plain"),
            );
            let path = dir.path().join("scepd.toml");
            std::fs::write(&path, cfg).unwrap();
            let options = StartOptions { config: Some(path), env: Some(Vec::new()), ..StartOptions::default() };
            ServiceState::load(options).unwrap().state
        }

        fn call(state: &ServiceState, method: Method, target: &str, body: &str) -> (StatusCode, Value) {
            let (path, query) = match target.split_once('?') {
                Some((p, q)) => (p, Some(q)),
                None => (target, None),
            };
            let auth = HeaderValue::from_str(&format!("Bearer {ADMIN}")).unwrap();
            let req = AdminRequest {
                method: &method,
                path,
                query,
                authorization: Some(&auth),
                body: body.as_bytes(),
                client: None,
            };
            let r = block_on(handle(state, req));
            assert_eq!(r.headers()[CONTENT_TYPE], "application/json");
            assert_eq!(r.headers()[X_CONTENT_TYPE_OPTIONS], "nosniff");
            let status = r.status();
            let bytes = block_on(http_body_util::BodyExt::collect(r.into_body())).unwrap().to_bytes();
            (status, serde_json::from_slice(&bytes).unwrap())
        }

        fn get(state: &ServiceState, target: &str) -> (StatusCode, Value) {
            call(state, Method::GET, target, "")
        }

        /// A JSON error: exactly `error` and `message`.
        fn assert_error(got: &(StatusCode, Value), status: StatusCode, code: &str) {
            assert_eq!(got.0, status, "{}", got.1);
            let obj = got.1.as_object().unwrap();
            assert_eq!(obj.len(), 2, "{}", got.1);
            assert_eq!(got.1["error"], code, "{}", got.1);
            assert!(!got.1["message"].as_str().unwrap().is_empty());
        }

        fn event(profile: &str, action: &str, outcome: &str, at: i64) -> AuditEvent {
            AuditEvent {
                time: UnixTime::from_secs(at).to_rfc3339(),
                time_unix: at,
                profile: profile.into(),
                action: action.into(),
                operation: "PKIOperation".into(),
                outcome: outcome.into(),
                http_status: 200,
                route: "scep".into(),
                ..AuditEvent::default()
            }
        }

        fn ids(v: &Value) -> Vec<i64> {
            v["events"].as_array().unwrap().iter().map(|e| e["id"].as_i64().unwrap()).collect()
        }

        #[test]
        fn events_filter_by_profile_action_outcome_lists_exclude_outcome_and_since_newest_first() {
            let dir = TestDir::new();
            let state = load(&dir);
            let log = state.audit().unwrap();
            let t0 = UnixTime::now().secs() - 10_000;
            let rec = |p: &str, a: &str, o: &str, at: i64| block_on(log.record(event(p, a, o, at))).unwrap();
            let e1 = rec("corp", "scep_pkcsreq", "success", t0);
            let e2 = rec("plain", "scep_getcacaps", "success", t0 + 1000);
            let e3 = rec("corp", "scep_pkcsreq_intune", "replay", t0 + 2000);
            let e4 = rec("corp", "scep_pkcsreq", "bad_challenge", t0 + 3000);
            let e5 = rec("corp", "scep_renewalreq_intune", "success", t0 + 4000);
            let e6 = rec("corp", "scep_renewalreq_intune", "signature_invalid", t0 + 5000);
            let e7 = rec("plain", "scep_pkcsreq_intune", "success", t0 + 6000);

            let t2 = UnixTime::from_secs(t0 + 2000);
            let (y, mo, d, h, mi, sec) = t2.plus(2 * 3600).to_civil();
            let plus_two = format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{sec:02}");
            let cases: Vec<(String, Vec<i64>)> = vec![
                (String::new(), vec![e7, e6, e5, e4, e3, e2, e1]),
                ("profile=corp".into(), vec![e6, e5, e4, e3, e1]),
                ("profile=plain".into(), vec![e7, e2]),
                ("profile=plain,nope".into(), vec![e7, e2]),
                ("action=scep_pkcsreq".into(), vec![e4, e1]),
                ("action=scep_pkcsreq_intune".into(), vec![e7, e3]),
                ("outcome=success".into(), vec![e7, e5, e2, e1]),
                ("outcome=replay".into(), vec![e3]),
                ("outcome=nothing".into(), vec![]),
                // Lists: any of the values.
                ("action=scep_pkcsreq_intune,scep_renewalreq_intune".into(), vec![e7, e6, e5, e3]),
                ("action=scep_pkcsreq_intune%2Cscep_getcacaps".into(), vec![e7, e3, e2]),
                ("outcome=replay,bad_challenge,nothing".into(), vec![e4, e3]),
                ("profile=corp&outcome=success,signature_invalid".into(), vec![e6, e5, e1]),
                // exclude_outcome: single and list, and with outcome.
                ("exclude_outcome=success".into(), vec![e6, e4, e3]),
                ("exclude_outcome=success,replay".into(), vec![e6, e4]),
                ("exclude_outcome=nothing".into(), vec![e7, e6, e5, e4, e3, e2, e1]),
                ("outcome=success,replay&exclude_outcome=success".into(), vec![e3]),
                ("profile=plain&exclude_outcome=success".into(), vec![]),
                // Given twice, the last value counts.
                ("action=scep_pkcsreq&action=scep_pkcsreq_intune".into(), vec![e7, e3]),
                ("exclude_outcome=success&exclude_outcome=".into(), vec![e7, e6, e5, e4, e3, e2, e1]),
                // The GUI's recent Intune failures, one query.
                (
                    "action=scep_pkcsreq_intune,scep_renewalreq_intune&exclude_outcome=success&limit=50".into(),
                    vec![e6, e3],
                ),
                ("action=scep_pkcsreq_intune,scep_renewalreq_intune&exclude_outcome=success&limit=1".into(), vec![e6]),
                (
                    format!("action=scep_pkcsreq_intune,scep_renewalreq_intune&exclude_outcome=success&before_id={e6}"),
                    vec![e3],
                ),
                (format!("since={}", t0 + 1000), vec![e7, e6, e5, e4, e3, e2]),
                (format!("since={}", t0 + 1001), vec![e7, e6, e5, e4, e3]),
                (format!("since={}", t2.to_rfc3339()), vec![e7, e6, e5, e4, e3]),
                (format!("since={}", t2.plus(1).to_rfc3339()), vec![e7, e6, e5, e4]),
                (format!("since={plus_two}%2B02:00"), vec![e7, e6, e5, e4, e3]),
                (format!("since={plus_two}+02:00"), vec![e7, e6, e5, e4, e3]),
                (format!("since={}", t0 + 6001), vec![]),
                (format!("profile=corp&outcome=success&since={t0}"), vec![e5, e1]),
                ("profile=corp&action=scep_pkcsreq&limit=1".into(), vec![e4]),
                (format!("profile=corp&action=scep_pkcsreq&limit=1&before_id={e4}"), vec![e1]),
                ("limit=2".into(), vec![e7, e6]),
                ("profile=&action=&outcome=&exclude_outcome=".into(), vec![e7, e6, e5, e4, e3, e2, e1]),
            ];
            for (query, want) in cases {
                let (status, v) = get(&state, &format!("/api/v1/admin/scep/events?{query}"));
                assert_eq!(status, StatusCode::OK, "{query}: {v}");
                assert_eq!(ids(&v), want, "{query}");
                // The earlier path answers the same.
                assert_eq!(get(&state, &format!("/api/v1/admin/scep/audit?{query}")).1, v, "{query}");
            }
            let (_, v) = get(&state, "/api/v1/admin/scep/events?limit=1");
            let e = &v["events"][0];
            assert_eq!((e["profile"].as_str(), e["outcome"].as_str()), (Some("plain"), Some("success")));
            assert_eq!(e["time_unix"], t0 + 6000);

            for bad in [
                "since=",
                "since=yesterday",
                "since=2030-01-01",
                "since=2030-01-01T00:00:00",
                "since=-5",
                "limit=0",
                "limit=1001",
                "limit=x",
                "before_id=x",
                "colour=red",
                "exclude=success",
                "profile=%zz",
            ] {
                assert_error(
                    &get(&state, &format!("/api/v1/admin/scep/events?{bad}")),
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                );
            }
            // A list with an empty item or too many values: 400 naming the parameter.
            let many = |n: usize| (0..n).map(|i| format!("o{i}")).collect::<Vec<_>>().join(",");
            for (param, bad) in [
                ("action", "action=scep_pkcsreq,,scep_pkcsreq_intune".to_string()),
                ("action", "action=scep_pkcsreq_intune,".into()),
                ("profile", "profile=,corp".into()),
                ("outcome", "outcome=,".into()),
                ("exclude_outcome", "exclude_outcome=success,%2C".into()),
                ("exclude_outcome", format!("exclude_outcome={}", many(MAX_FILTER_VALUES + 1))),
                ("outcome", format!("outcome={}", many(MAX_FILTER_VALUES + 1))),
            ] {
                let got = get(&state, &format!("/api/v1/admin/scep/events?{bad}"));
                assert_error(&got, StatusCode::BAD_REQUEST, "bad_request");
                let message = got.1["message"].as_str().unwrap();
                assert!(message.starts_with(&format!("{param}: ")), "{bad}: {message}");
            }
            let (status, v) =
                get(&state, &format!("/api/v1/admin/scep/events?exclude_outcome={}", many(MAX_FILTER_VALUES)));
            assert_eq!(status, StatusCode::OK, "{v}");
            assert_eq!(ids(&v), [e7, e6, e5, e4, e3, e2, e1], "32 values are accepted");
            let unknown = get(&state, "/api/v1/admin/scep/events?exclude=success");
            assert!(unknown.1["message"].as_str().unwrap().contains("exclude_outcome"), "{}", unknown.1);
            assert_error(
                &call(&state, Method::POST, "/api/v1/admin/scep/events", ""),
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
            );
        }

        /// Issue 13 item 6c: key guessing from one address is cut off with 429
        /// and Retry-After while a correct key from another address is served.
        #[test]
        fn failed_authentications_are_limited_per_address_and_spare_other_addresses() {
            use crate::state::auth_limit::MAX_FAILURES;
            let dir = TestDir::new();
            let state = load(&dir);
            let attempt = |client: &str, key: &str| {
                let auth = HeaderValue::from_str(&format!("Bearer {key}")).unwrap();
                let req = AdminRequest {
                    method: &Method::GET,
                    path: PROFILES,
                    query: None,
                    authorization: Some(&auth),
                    body: b"",
                    client: Some(client.parse().unwrap()),
                };
                block_on(handle(&state, req))
            };
            for i in 0..MAX_FAILURES {
                assert_eq!(attempt("127.0.0.2", &format!("guess-{i:016}")).status(), StatusCode::UNAUTHORIZED);
            }
            let refused = attempt("127.0.0.2", "guess-the-next-one-000");
            assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
            let retry: u64 = refused.headers()[RETRY_AFTER].to_str().unwrap().parse().unwrap();
            assert!((1..=60).contains(&retry), "{retry}");
            // Refused before its key is compared: even the right key waits.
            assert_eq!(attempt("127.0.0.2", ADMIN).status(), StatusCode::TOO_MANY_REQUESTS);
            assert_eq!(attempt("127.0.0.1", ADMIN).status(), StatusCode::OK);
            let limit = state.auth_limit();
            assert_eq!((limit.failures(), limit.refused(), limit.tracked()), (u64::from(MAX_FAILURES), 2, 1));
            let metrics = crate::operator::metrics::render(&state, UnixTime::now());
            assert!(metrics.contains("\nscepd_admin_auth_failures_total 10\n"), "{metrics}");
            assert!(metrics.contains("\nscepd_admin_auth_refused_total 2\n"), "{metrics}");
        }

        #[test]
        fn reload_trust_answers_200_400_404_409_and_500_keeping_the_old_pool() {
            let dir = TestDir::new();
            let state = load(&dir);
            let reload = |body: &str| call(&state, Method::POST, "/api/v1/admin/scep/intune/reload-trust", body);
            let subjects = |state: &ServiceState| -> Vec<String> {
                state.intune_stats()[0].anchors.iter().map(|a| a.subject.clone()).collect()
            };
            assert_eq!(subjects(&state), ["CN=connector-a"]);

            // 200: the new pool is in force and answered.
            let bundle = dir.path().join("intune.pem");
            std::fs::write(&bundle, valid_pem("connector-b") + &valid_pem("connector-c")).unwrap();
            let (status, v) = reload(r#"{"path_id": "corp"}"#);
            assert_eq!(status, StatusCode::OK, "{v}");
            assert_eq!((v["path_id"].as_str(), v["reloaded"].as_bool()), (Some("corp"), Some(true)));
            let answered: Vec<&str> =
                v["trust_anchors"].as_array().unwrap().iter().map(|a| a["subject"].as_str().unwrap()).collect();
            assert_eq!(answered, ["CN=connector-b", "CN=connector-c"]);
            assert!(v["trust_anchors"][0]["days_to_expiry"].as_i64().unwrap() >= 364);
            assert_eq!(subjects(&state), ["CN=connector-b", "CN=connector-c"]);

            // 400: not {"path_id": "<string>"}.
            for body in ["", "{}", "not json", r#"{"path_id": 1}"#, r#"{"path_id": "corp", "force": true}"#, "[]"] {
                assert_error(&reload(body), StatusCode::BAD_REQUEST, "bad_request");
            }
            // 404, 409.
            assert_error(&reload(r#"{"path_id": "nope"}"#), StatusCode::NOT_FOUND, "unknown_profile");
            assert_error(&reload(r#"{"path_id": "plain"}"#), StatusCode::CONFLICT, "intune_not_enabled");

            // 500: a corrupted, an expired or a missing bundle; the old pool is kept.
            let now = UnixTime::now().secs();
            let expired = anchor_pem("old", now - 10 * 86_400, now - 86_400);
            let corrupt = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".to_string();
            for bad in [Some(corrupt), Some("garbage".to_string()), Some(expired), None] {
                match &bad {
                    Some(text) => std::fs::write(&bundle, text).unwrap(),
                    None => std::fs::remove_file(&bundle).unwrap(),
                }
                let got = reload(r#"{"path_id": "corp"}"#);
                assert_error(&got, StatusCode::INTERNAL_SERVER_ERROR, "reload_failed");
                let message = got.1["message"].as_str().unwrap();
                assert!(message.contains("old pool is kept"), "{message}");
                assert!(message.contains(&bundle.display().to_string()), "{message}");
                assert_eq!(subjects(&state), ["CN=connector-b", "CN=connector-c"], "old pool kept after {bad:?}");
            }
            let (_, v) = get(&state, "/api/v1/admin/scep/intune/stats");
            assert_eq!(v["profiles"][0]["trust_anchors"].as_array().unwrap().len(), 2);
            assert_error(
                &get(&state, "/api/v1/admin/scep/intune/reload-trust"),
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
            );
        }

        /// A challenge bound to the same SAN twice (`IP:` and `ip:`, a DNS
        /// name in two cases) was stored and shown with it twice; the binding
        /// is a set, each SAN once, in the order first given.
        #[test]
        fn a_minted_challenge_binds_each_san_once() {
            let dir = TestDir::new();
            let cfg = format!(
                "[server]\ndata_dir = \"data\"\n\
                 [[api_key]]\nname = \"ops\"\nkey = \"{ADMIN}\"\nrole = \"admin\"\n\
                 [[profile]]\nname = \"otp\"\nissuer = \"none\"\nchallenge_mode = \"one-time\"\n\
                 ra_cert = \"ra.pem\"\nra_key = \"ra.key\"\nca_chain = \"chain.pem\"\n"
            );
            let path = dir.path().join("scepd.toml");
            std::fs::write(&path, cfg).unwrap();
            let options = StartOptions { config: Some(path), env: Some(Vec::new()), ..StartOptions::default() };
            let state = ServiceState::load(options).unwrap().state;
            let body = json!({
                "profile": "otp",
                "subject_alt_names": ["IP:1.2.3.4", "DNS:Dev-1.example", "ip:1.2.3.4", "dns:dev-1.EXAMPLE"],
            });
            let (status, v) = call(&state, Method::POST, CHALLENGES, &body.to_string());
            assert_eq!(status, StatusCode::CREATED, "{v}");
            let want = json!(["IP:1.2.3.4", "DNS:dev-1.example"]);
            assert_eq!(v["binding"]["subject_alt_names"], want, "{v}");
            let (_, listed) = get(&state, CHALLENGES);
            assert_eq!(listed["challenges"][0]["binding"]["subject_alt_names"], want, "{listed}");
        }

        fn assert_cert(v: &Value, what: &str) {
            assert!(v["subject"].as_str().is_some_and(|s| !s.is_empty()), "{what}: {v}");
            let nb = UnixTime::parse_rfc3339(v["not_before"].as_str().unwrap()).unwrap();
            let na = UnixTime::parse_rfc3339(v["not_after"].as_str().unwrap()).unwrap();
            assert!(nb < na, "{what}: {v}");
            // The answer was computed a moment ago: a day boundary may lie in between.
            let days = v["days_to_expiry"].as_i64().unwrap();
            let days_now = (na.secs() - UnixTime::now().secs()).div_euclid(86_400);
            assert!(days == days_now || days == days_now + 1, "{what}: {days} days, {days_now} now: {v}");
            assert_eq!(v["expired"], false, "{what}: {v}");
            assert_eq!(v["status"], expiry_status(na, UnixTime::now()), "{what}: {v}");
        }

        #[test]
        fn profiles_carry_ra_cert_mtls_challenge_and_the_intune_block() {
            let dir = TestDir::new();
            let state = load(&dir);
            let (status, v) = get(&state, "/api/v1/admin/scep/profiles");
            assert_eq!(status, StatusCode::OK);
            let list = v["profiles"].as_array().unwrap();
            let names: Vec<&str> = list.iter().map(|p| p["path_id"].as_str().unwrap()).collect();
            assert_eq!(names, ["corp", "plain"]);
            let (corp, plain) = (&list[0], &list[1]);
            for p in list {
                assert_cert(&p["ra_cert"], "ra_cert");
                assert_cert(&p["ca_cert"], "ca_cert");
                assert_eq!(p["challenge_password_set"], true);
                assert_eq!(p["policy"]["validity_secs"], 365 * 86_400, "durations in seconds");
            }
            assert_eq!(corp["default"], true);
            // One RA each (no encryption RA given); the default profile serves NDES's URL.
            for p in list {
                assert_eq!(p["ra"]["arrangement"], "single");
                assert_eq!(p["ra"]["signing"], p["ra_cert"]);
                assert_eq!(p["ra"]["encryption"], json!([]));
                assert_eq!(p["ra"]["reply_signature"], "rsa-encryption");
                assert_eq!(p["ra"]["signing_key_type"], "rsa-2048");
                assert_eq!(p["policy"]["trust_requested_sid"], false);
            }
            assert_eq!(corp["url_aliases"], json!(["/certsrv/mscep/mscep.dll"]));
            assert_eq!(plain["url_aliases"], json!([]));
            assert_eq!(corp["mtls"], json!({ "enabled": false, "trust_bundle_path": null }));
            assert_eq!(plain["mtls"]["enabled"], true);
            assert_eq!(plain["mtls"]["trust_bundle_path"], dir.path().join("chain.pem").display().to_string());
            assert_eq!(plain["mtls"]["expired"], false);
            let earliest = UnixTime::parse_rfc3339(plain["mtls"]["earliest_expiry"].as_str().unwrap()).unwrap();
            assert_eq!(plain["mtls"]["status"], expiry_status(earliest, UnixTime::now()));
            assert!(plain["intune"].is_null());
            // The profile's Intune block is the stats endpoint's entry.
            let (_, stats) = get(&state, "/api/v1/admin/scep/intune/stats");
            assert_eq!(corp["intune"]["path_id"], "corp");
            assert_eq!(corp["intune"]["audience"], stats["profiles"][0]["audience"]);
            assert_eq!(corp["intune"]["counters"], stats["profiles"][0]["counters"]);
        }

        #[test]
        fn intune_stats_carry_anchors_settings_rate_limit_replay_cache_and_the_counters() {
            let dir = TestDir::new();
            let state = load(&dir);
            // Some live state: one malformed challenge, one admitted device, one nonce.
            let validator = state.profiles().get(Some("corp")).unwrap().intune.clone().unwrap().validator;
            let none: [String; 0] = [];
            let csr = CsrIdentity { common_names: &none, dns: &none, emails: &none, upns: &none };
            let now = UnixTime::now();
            assert!(validator.validate("not-a-jws", &csr, now).is_err());
            validator.rate_limiter().check_and_record("corp", "device-1", "connector", now).unwrap();
            validator.replay_cache().check_and_insert("corp", "nonce-1", now, now.plus(600)).unwrap();

            let (status, v) = get(&state, "/api/v1/admin/scep/intune/stats");
            assert_eq!(status, StatusCode::OK);
            let list = v["profiles"].as_array().unwrap();
            assert_eq!(list.len(), 2);
            assert_eq!(list[1], json!({ "path_id": "plain", "enabled": false }));
            let corp = &list[0];
            assert_eq!((corp["path_id"].as_str(), corp["enabled"].as_bool()), (Some("corp"), Some(true)));
            assert_eq!(corp["trust_bundle_path"], dir.path().join("intune.pem").display().to_string());
            assert_eq!(corp["audience"], "https://scep.example/scep/corp");
            assert_eq!(corp["challenge_validity_secs"], 1800);
            assert_eq!(corp["clock_skew_tolerance_secs"], 120);
            let rl = &corp["rate_limit"];
            assert_eq!(rl["per_device_rate_limit_24h"], 5);
            assert_eq!(rl["window_secs"], 86_400);
            assert_eq!(rl["devices_tracked"], 1);
            assert!(rl["capacity"].as_u64().unwrap() > 0);
            assert_eq!(corp["replay_cache_entries"], 1);
            assert_eq!(corp["replay_cache_capacity"], 100_000);

            let counters = corp["counters"].as_object().unwrap();
            let mut keys: Vec<&str> = counters.keys().map(String::as_str).collect();
            let mut want = COUNTERS.to_vec();
            keys.sort_unstable();
            want.sort_unstable();
            assert_eq!(keys, want);
            assert_eq!(counters["malformed"], 1);
            assert!(COUNTERS.iter().filter(|&&c| c != "malformed").all(|c| counters[*c] == 0), "{corp}");

            let anchors = corp["trust_anchors"].as_array().unwrap();
            assert_eq!(anchors.len(), 1);
            assert_eq!(anchors[0]["subject"], "CN=connector-a");
            assert_eq!(anchors[0]["key"], "ec-p256");
            assert_eq!(anchors[0]["status"], "green");
            assert_cert(&anchors[0], "trust anchor");
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
