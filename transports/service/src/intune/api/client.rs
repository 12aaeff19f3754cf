//! The three hops of Microsoft's SCEP validation API, blocking (run on the
//! `blocking` pool): Entra token (client credentials, RFC 6749 §4.4),
//! Microsoft Graph discovery of the Intune service URLs, and the Intune
//! `ScepActions` calls. Wire contract: `shared/docs/INTUNE-API.md` §1-§5.
//!
//! Concurrency: one token per audience and one discovery map, each behind a
//! mutex held while it is fetched, so concurrent requests share one fetch (no
//! stampede at start or at expiry).
//!
//! Failure classification (§5.2): a 200 with `code != "Success"` is a
//! definitive rejection (no retry); a token or Graph refusal is a
//! configuration error (fail closed); Intune 401 drops the Intune token and
//! retries once; a connection error or 404 forgets the discovery and retries
//! once; 429, 5xx and timeouts retry once within the request's deadline
//! (honouring `Retry-After`); malformed answers fail closed. At most one
//! retry per call in all.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use base64::Engine as _;
use rustls_pki_types::CertificateDer;
use scep_issuers::http::{Endpoint, HttpResponse, TransportError};

use super::assertion::ClientAssertion;
use super::stats::ApiStats;
use crate::settings::profile::IntuneApiSettings;

/// The Intune service principal's application id (§1.4).
pub const INTUNE_APP_ID: &str = "0000000a-0000-0000-c000-000000000000";
/// Discovery name of the SCEP validation service (§2.2).
pub const SCEP_SERVICE: &str = "ScepRequestValidationFEService";
/// Discovery name of the revocation service (§5.3).
pub const PKI_SERVICE: &str = "PkiConnectorFEService";
/// `api-version` of the ScepActions calls (§3.1).
pub const SCEP_API_VERSION: &str = "2018-02-20";
/// `api-version` of the revocation calls (§5.3; the `5019` is Microsoft's).
pub const PKI_API_VERSION: &str = "5019-05-05";
/// A token is refreshed this long before it expires (§1.2).
const TOKEN_REFRESH_MARGIN: Duration = Duration::from_secs(300);
/// TCP connect timeout of every hop.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest `Retry-After` honoured (longer: fail closed now).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(10);

/// Why a call to Intune did not end in `Success`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiFailure {
    /// Stable label for metrics and the audit log, e.g. `intune_rejected`.
    pub label: &'static str,
    /// Intune's `code` when Intune answered one (a definitive rejection).
    pub code: Option<String>,
    /// For the audit log.
    pub detail: String,
}

impl ApiFailure {
    fn new(label: &'static str, detail: impl Into<String>) -> Self {
        Self { label, code: None, detail: detail.into() }
    }
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.detail)
    }
}

/// Which token (audience) a call needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Audience {
    /// Microsoft Graph (discovery).
    Graph,
    /// Intune (`ScepActions`, revocation).
    Intune,
}

/// How the client proves who it is to Entra.
pub enum Credential {
    /// A client secret (read from a 0600 file at start and on reload).
    Secret(String),
    /// A signed client assertion (RFC 7523, §1.3 of the contract).
    Assertion(ClientAssertion),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Secret(_) => "Secret(<redacted>)",
            Self::Assertion(_) => "Assertion",
        })
    }
}

struct Token {
    value: String,
    refresh_at: Instant,
}

/// A blocking client of the three hops for one profile.
pub struct ApiClient {
    settings: IntuneApiSettings,
    credential: Credential,
    roots: Vec<CertificateDer<'static>>,
    endpoints: Mutex<HashMap<String, Endpoint>>,
    tokens: [Mutex<Option<Token>>; 2],
    discovery: Mutex<Option<HashMap<String, String>>>,
    /// Counters and last results for the admin plane.
    pub stats: ApiStats,
    caller_info: String,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiClient").field("tenant", &self.settings.tenant_id).finish_non_exhaustive()
    }
}

enum Attempt<T> {
    Done(Result<T, ApiFailure>),
    Retry { why: ApiFailure, wait: Duration },
}

impl ApiClient {
    /// A client for `settings`, proving itself with `credential`, trusting
    /// `roots` for https.
    pub fn new(settings: IntuneApiSettings, credential: Credential, roots: Vec<CertificateDer<'static>>) -> Self {
        Self {
            settings,
            credential,
            roots,
            endpoints: Mutex::new(HashMap::new()),
            tokens: [Mutex::new(None), Mutex::new(None)],
            discovery: Mutex::new(None),
            stats: ApiStats::default(),
            caller_info: format!("scepd/{}", env!("CARGO_PKG_VERSION")),
        }
    }

    /// The settings this client was built from.
    pub fn settings(&self) -> &IntuneApiSettings {
        &self.settings
    }

    /// `callerInfo` of every call: `scepd/<version>`.
    pub fn caller_info(&self) -> &str {
        &self.caller_info
    }

    /// The Entra token endpoint URL (also the assertion's `aud`).
    pub fn token_url(&self) -> String {
        format!("{}{}/oauth2/v2.0/token", self.settings.authority_url, self.settings.tenant_id)
    }

    /// POSTs `body` to `ScepActions/<action>` and demands `code == "Success"`.
    ///
    /// # Errors
    /// [`ApiFailure`] classified per §5.2 (see the module documentation).
    pub fn scep_action(&self, action: &str, body: &serde_json::Value, deadline: Instant) -> Result<(), ApiFailure> {
        let started = Instant::now();
        let payload = body.to_string().into_bytes();
        let result = self.with_one_retry(deadline, |_| self.scep_action_once(action, &payload, deadline));
        self.stats.record_action(action, started.elapsed(), &result);
        result
    }

    fn with_one_retry<T>(&self, deadline: Instant, mut call: impl FnMut(bool) -> Attempt<T>) -> Result<T, ApiFailure> {
        match call(false) {
            Attempt::Done(r) => r,
            Attempt::Retry { why, wait } => {
                if Instant::now() + wait >= deadline {
                    return Err(why);
                }
                std::thread::sleep(wait);
                match call(true) {
                    Attempt::Done(r) => r,
                    Attempt::Retry { why, .. } => Err(why),
                }
            }
        }
    }

    /// POSTs JSON `body` to `<service uri>/<suffix>` of the revocation
    /// service ([`PKI_SERVICE`], `api-version` [`PKI_API_VERSION`]) and
    /// returns the answer's JSON.
    ///
    /// # Errors
    /// [`ApiFailure`] classified per §5.2.
    pub fn pki_post(
        &self,
        suffix: &str,
        body: &serde_json::Value,
        deadline: Instant,
    ) -> Result<serde_json::Value, ApiFailure> {
        let payload = body.to_string().into_bytes();
        self.with_one_retry(deadline, |_| self.post_once(PKI_SERVICE, PKI_API_VERSION, suffix, &payload, deadline))
    }

    /// GETs `path` (after the Graph root, e.g.
    /// `v1.0/deviceManagement/managedDevices/<id>`) with the Graph token:
    /// the answer's JSON, or `None` for a 404 (no such object).
    /// A 401 drops the Graph token and retries once; 429, 5xx, connection
    /// errors and timeouts retry once within `deadline`; a 403 is a missing
    /// permission (`permission` names it in the failure); the rest fail closed.
    ///
    /// # Errors
    /// [`ApiFailure`] labelled `label`.
    pub fn graph_get(
        &self,
        path: &str,
        permission: &str,
        label: &'static str,
        deadline: Instant,
    ) -> Result<Option<serde_json::Value>, ApiFailure> {
        let url = format!("{}{path}", self.settings.graph_url);
        let fail = |why: String| ApiFailure::new(label, format!("Graph {path}: {why}"));
        self.with_one_retry(deadline, |_| {
            let token = match self.token(Audience::Graph, deadline) {
                Ok(t) => t,
                Err(e) => return Attempt::Done(Err(e)),
            };
            let auth = format!("Bearer {token}");
            let activity = random_guid();
            let headers = [("Authorization", auth.as_str()), ("client-request-id", activity.as_str())];
            let response = match self.send("GET", &url, &headers, None, deadline) {
                Ok(r) => r,
                Err(e @ (TransportError::Connect(_) | TransportError::Timeout(_))) => {
                    return Attempt::Retry { why: fail(e.to_string()), wait: Duration::ZERO };
                }
                Err(e) => return Attempt::Done(Err(fail(e.to_string()))),
            };
            match response.status {
                200 => Attempt::Done(
                    serde_json::from_slice(&response.body)
                        .map(Some)
                        .map_err(|_| fail(format!("answer is not JSON: {}", snippet(&response.body)))),
                ),
                404 => Attempt::Done(Ok(None)),
                401 => {
                    self.drop_token(Audience::Graph);
                    Attempt::Retry { why: fail(format!("401: {}", snippet(&response.body))), wait: Duration::ZERO }
                }
                403 => Attempt::Done(Err(fail(format!(
                    "403 (grant the app the Microsoft Graph application permission {permission} with admin \
                     consent): {}",
                    snippet(&response.body)
                )))),
                429 | 500..=599 => Attempt::Retry {
                    why: fail(format!("HTTP {}: {}", response.status, snippet(&response.body))),
                    wait: retry_after(&response),
                },
                s => Attempt::Done(Err(fail(format!("HTTP {s}: {}", snippet(&response.body))))),
            }
        })
    }

    fn scep_action_once(&self, action: &str, payload: &[u8], deadline: Instant) -> Attempt<()> {
        let suffix = format!("ScepActions/{action}");
        let v = match self.post_once(SCEP_SERVICE, SCEP_API_VERSION, &suffix, payload, deadline) {
            Attempt::Done(Ok(v)) => v,
            Attempt::Done(Err(e)) => return Attempt::Done(Err(e)),
            Attempt::Retry { why, wait } => return Attempt::Retry { why, wait },
        };
        Attempt::Done(match v.get("code").and_then(|c| c.as_str()) {
            // Exact and case-sensitive, as in both reference clients (§3.2).
            Some("Success") => Ok(()),
            Some(code) => {
                let description = v.get("errorDescription").and_then(|d| d.as_str()).unwrap_or_default();
                Err(ApiFailure {
                    label: "intune_rejected",
                    code: Some(code.to_string()),
                    detail: format!("Intune {action}: {code}: {description}"),
                })
            }
            None => Err(ApiFailure::new(
                "intune_protocol",
                format!("Intune {action}: answer has no code: {}", snippet(v.to_string().as_bytes())),
            )),
        })
    }

    fn post_once(
        &self,
        service: &str,
        api_version: &str,
        suffix: &str,
        payload: &[u8],
        deadline: Instant,
    ) -> Attempt<serde_json::Value> {
        let action = suffix.rsplit('/').next().unwrap_or(suffix);
        let token = match self.token(Audience::Intune, deadline) {
            Ok(t) => t,
            Err(e) => return Attempt::Done(Err(e)),
        };
        let base = match self.service_uri(service, deadline) {
            Ok(u) => u,
            Err(e) => return Attempt::Done(Err(e)),
        };
        let url = format!("{}/{suffix}", base.trim_end_matches('/'));
        let activity = random_guid();
        let auth = format!("Bearer {token}");
        let headers = [
            ("Authorization", auth.as_str()),
            ("api-version", api_version),
            ("client-request-id", activity.as_str()),
            ("Content-Type", "application/json; charset=utf-8"),
            ("UserAgent", self.caller_info.as_str()),
        ];
        let response = match self.send("POST", &url, &headers, Some(payload), deadline) {
            Ok(r) => r,
            Err(TransportError::Connect(e)) => {
                self.forget_discovery();
                return Attempt::Retry {
                    why: ApiFailure::new("intune_unreachable", format!("Intune {action}: {e}")),
                    wait: Duration::ZERO,
                };
            }
            Err(e @ TransportError::Timeout(_)) => {
                return Attempt::Retry {
                    why: ApiFailure::new("intune_timeout", format!("Intune {action}: {e}")),
                    wait: Duration::ZERO,
                };
            }
            Err(e) => {
                return Attempt::Done(Err(ApiFailure::new("intune_protocol", format!("Intune {action}: {e}"))));
            }
        };
        classify(action, &response, || self.drop_token(Audience::Intune), || self.forget_discovery())
    }

    /// The discovered URI of `service` (case-insensitive, §2.3), discovering
    /// once when nothing is cached.
    ///
    /// # Errors
    /// A Graph refusal, a malformed answer, or no such service listed.
    pub fn service_uri(&self, service: &str, deadline: Instant) -> Result<String, ApiFailure> {
        let mut cached = self.discovery.lock().unwrap_or_else(PoisonError::into_inner);
        if cached.is_none() {
            let started = Instant::now();
            let found = self.with_one_retry(deadline, |_| self.discover_once(deadline));
            self.stats.record_discovery(started.elapsed(), &found);
            *cached = Some(found?);
        }
        let map = cached.as_ref().map(|m| m.get(&service.to_ascii_lowercase()).cloned());
        match map.flatten() {
            Some(uri) => Ok(uri),
            None => {
                // Not cached: the next request discovers again (§5.2).
                *cached = None;
                Err(ApiFailure::new(
                    "intune_discovery_failed",
                    format!(
                        "Microsoft Graph lists no {service} for the Intune service principal: grant the app the \
                         Intune permission scep_challenge_provider (admin consent) and check the tenant's Intune licence"
                    ),
                ))
            }
        }
    }

    fn discover_once(&self, deadline: Instant) -> Attempt<HashMap<String, String>> {
        let token = match self.token(Audience::Graph, deadline) {
            Ok(t) => t,
            Err(e) => return Attempt::Done(Err(e)),
        };
        let url = format!("{}v1.0/servicePrincipals/appId={INTUNE_APP_ID}/endpoints", self.settings.graph_url);
        let auth = format!("Bearer {token}");
        let activity = random_guid();
        let headers = [("Authorization", auth.as_str()), ("client-request-id", activity.as_str())];
        let fail = |why: String| ApiFailure::new("intune_discovery_failed", format!("Graph discovery: {why}"));
        let response = match self.send("GET", &url, &headers, None, deadline) {
            Ok(r) => r,
            Err(e @ (TransportError::Connect(_) | TransportError::Timeout(_))) => {
                return Attempt::Retry { why: fail(e.to_string()), wait: Duration::ZERO };
            }
            Err(e) => return Attempt::Done(Err(fail(e.to_string()))),
        };
        match response.status {
            200 => Attempt::Done(parse_discovery(&response.body).map_err(fail)),
            401 => {
                self.drop_token(Audience::Graph);
                Attempt::Retry { why: fail(format!("401: {}", snippet(&response.body))), wait: Duration::ZERO }
            }
            403 => Attempt::Done(Err(fail(format!(
                "403 (grant the app the Microsoft Graph application permission Application.Read.All with admin \
                 consent): {}",
                snippet(&response.body)
            )))),
            429 | 500..=599 => {
                Attempt::Retry { why: fail(format!("{}", response.status)), wait: retry_after(&response) }
            }
            s => Attempt::Done(Err(fail(format!("HTTP {s}: {}", snippet(&response.body))))),
        }
    }

    /// A valid token for `audience`, fetching one (once, for every waiting
    /// caller) when none is cached or it is due for refresh.
    ///
    /// # Errors
    /// Entra refused or did not answer: a configuration error, fail closed.
    pub fn token(&self, audience: Audience, deadline: Instant) -> Result<String, ApiFailure> {
        let slot = &self.tokens[audience as usize];
        let mut cached = slot.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(t) = cached.as_ref()
            && Instant::now() < t.refresh_at
        {
            return Ok(t.value.clone());
        }
        let started = Instant::now();
        let fetched = self.fetch_token(audience, deadline);
        self.stats.record_token(started.elapsed(), &fetched);
        let token = fetched?;
        let value = token.value.clone();
        *cached = Some(token);
        Ok(value)
    }

    fn drop_token(&self, audience: Audience) {
        *self.tokens[audience as usize].lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    fn forget_discovery(&self) {
        *self.discovery.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    fn fetch_token(&self, audience: Audience, deadline: Instant) -> Result<Token, ApiFailure> {
        let scope = match audience {
            Audience::Graph => format!("{}.default", self.settings.graph_url),
            // The reference's `resource + "/.default"`: `…//.default` (§1.1).
            Audience::Intune => format!("{}/.default", self.settings.resource_url),
        };
        let url = self.token_url();
        let mut form = vec![
            ("grant_type", "client_credentials".to_string()),
            ("client_id", self.settings.client_id.clone()),
            ("scope", scope),
        ];
        match &self.credential {
            Credential::Secret(s) => form.push(("client_secret", s.clone())),
            Credential::Assertion(a) => {
                let jwt = a
                    .sign(&self.settings.client_id, &url)
                    .map_err(|e| ApiFailure::new("intune_token_failed", format!("client assertion: {e}")))?;
                form.push(("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into()));
                form.push(("client_assertion", jwt));
            }
        }
        let body: String = form.iter().map(|(k, v)| format!("{k}={}", form_encode(v))).collect::<Vec<_>>().join("&");
        let fail = |why: String| ApiFailure::new("intune_token_failed", format!("Entra token ({audience:?}): {why}"));
        let headers = [("Content-Type", "application/x-www-form-urlencoded")];
        // One retry for a transient Entra failure, none for a refusal.
        for attempt in 0..2 {
            let response = match self.send("POST", &url, &headers, Some(body.as_bytes()), deadline) {
                Ok(r) => r,
                Err(e) if attempt == 0 && !matches!(e, TransportError::Protocol(_)) => continue,
                Err(e) => return Err(fail(e.to_string())),
            };
            if matches!(response.status, 429 | 500..=599) && attempt == 0 {
                let wait = retry_after(&response);
                if Instant::now() + wait < deadline {
                    std::thread::sleep(wait);
                    continue;
                }
            }
            if response.status != 200 {
                let text = serde_json::from_slice::<serde_json::Value>(&response.body)
                    .ok()
                    .and_then(|v| v.get("error_description").and_then(|d| d.as_str()).map(str::to_string))
                    .unwrap_or_else(|| snippet(&response.body));
                return Err(fail(format!("HTTP {}: {text}", response.status)));
            }
            let v: serde_json::Value =
                serde_json::from_slice(&response.body).map_err(|e| fail(format!("answer is not JSON: {e}")))?;
            let value = v
                .get("access_token")
                .and_then(|t| t.as_str())
                .filter(|t| !t.is_empty())
                .ok_or_else(|| fail("answer has no access_token".into()))?;
            let expires = v.get("expires_in").and_then(serde_json::Value::as_u64).unwrap_or(0);
            let lifetime = Duration::from_secs(expires);
            // Refresh 5 min early, or at half the lifetime for short-lived tokens.
            let early =
                if lifetime > TOKEN_REFRESH_MARGIN * 2 { lifetime - TOKEN_REFRESH_MARGIN } else { lifetime / 2 };
            return Ok(Token { value: value.to_string(), refresh_at: Instant::now() + early });
        }
        Err(fail("no answer".into()))
    }

    fn send(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
        deadline: Instant,
    ) -> Result<HttpResponse, TransportError> {
        let (origin, path) = split_url(url);
        let endpoint = {
            let mut map = self.endpoints.lock().unwrap_or_else(PoisonError::into_inner);
            match map.get(origin) {
                Some(e) => e.clone(),
                None => {
                    let e = Endpoint::parse(origin, &self.roots).map_err(TransportError::Connect)?;
                    map.insert(origin.to_string(), e.clone());
                    e
                }
            }
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(TransportError::Timeout("the request's deadline has passed".into()));
        }
        let call_timeout = self.settings.timeout;
        endpoint.send(method, path, headers, body, CONNECT_TIMEOUT.min(call_timeout), left.min(call_timeout))
    }
}

/// Classifies an Intune answer (§3.2, §5.2): the JSON of a 200, or why not.
fn classify(
    action: &str,
    response: &HttpResponse,
    drop_token: impl FnOnce(),
    forget_discovery: impl FnOnce(),
) -> Attempt<serde_json::Value> {
    let status = response.status;
    let body = snippet(&response.body);
    match status {
        200 => {
            Attempt::Done(serde_json::from_slice(&response.body).map_err(|_| {
                ApiFailure::new("intune_protocol", format!("Intune {action}: answer is not JSON: {body}"))
            }))
        }
        401 => {
            drop_token();
            Attempt::Retry {
                why: ApiFailure::new("intune_unauthorized", format!("Intune {action}: HTTP 401: {body}")),
                wait: Duration::ZERO,
            }
        }
        404 => {
            forget_discovery();
            Attempt::Retry {
                why: ApiFailure::new("intune_unreachable", format!("Intune {action}: HTTP 404: {body}")),
                wait: Duration::ZERO,
            }
        }
        429 | 500..=599 => {
            if status >= 500 {
                forget_discovery();
            }
            Attempt::Retry {
                why: ApiFailure::new("intune_unavailable", format!("Intune {action}: HTTP {status}: {body}")),
                wait: retry_after(response),
            }
        }
        _ => {
            Attempt::Done(Err(ApiFailure::new("intune_http_error", format!("Intune {action}: HTTP {status}: {body}"))))
        }
    }
}

/// `Retry-After` in seconds (the HTTP-date form is treated as "now"), capped.
fn retry_after(response: &HttpResponse) -> Duration {
    response
        .retry_after
        .as_deref()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(Duration::ZERO, |s| Duration::from_secs(s).min(MAX_RETRY_AFTER + Duration::from_secs(1)))
}

/// name (lower-cased) → uri from Graph's endpoint collection (§2.2, §2.3):
/// `providerName`, else the legacy `serviceName`; the last duplicate wins.
fn parse_discovery(body: &[u8]) -> Result<HashMap<String, String>, String> {
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| format!("answer is not JSON: {e}"))?;
    let list = v.get("value").and_then(|l| l.as_array()).ok_or("answer has no value array")?;
    let mut map = HashMap::new();
    for entry in list {
        let name = entry.get("providerName").or_else(|| entry.get("serviceName")).and_then(|n| n.as_str());
        let uri = entry.get("uri").and_then(|u| u.as_str());
        if let (Some(name), Some(uri)) = (name, uri) {
            map.insert(name.to_ascii_lowercase(), uri.to_string());
        }
    }
    Ok(map)
}

/// Splits `scheme://host[:port]/path` into the origin and the path (`/` at least).
pub fn split_url(url: &str) -> (&str, &str) {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    match url[after_scheme..].find('/') {
        Some(i) => url.split_at(after_scheme + i),
        None => (url, "/"),
    }
}

fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text: String = text.chars().take(300).collect();
    text.replace(['\r', '\n'], " ")
}

/// `application/x-www-form-urlencoded` (WHATWG URL §5.2).
fn form_encode(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => out.push(b as char),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// A random (version 4) GUID, for `client-request-id` and `jti`.
pub fn random_guid() -> String {
    let mut b = [0u8; 16];
    // The OS random source; on failure a time-derived id still correlates logs.
    if scep_engine::crypto::default_provider().fill_random(&mut b).is_err() {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        b = t.to_be_bytes();
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

/// base64url without padding (RFC 7515 §2).
pub fn b64url(data: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_is_case_insensitive_and_reads_legacy_names() {
        let body = br#"{"value":[{"providerName":"Decoy","uri":"https://x/d"},
            {"providerName":"ScepRequestValidationFEService","uri":"https://a/1"},
            {"serviceName":"PkiConnectorFEService","uri":"https://a/2"},
            {"providerName":"SCEPREQUESTVALIDATIONFESERVICE","uri":"https://a/3"}]}"#;
        let m = parse_discovery(body).unwrap();
        assert_eq!(m.get(&SCEP_SERVICE.to_ascii_lowercase()).map(String::as_str), Some("https://a/3"));
        assert_eq!(m.get(&PKI_SERVICE.to_ascii_lowercase()).map(String::as_str), Some("https://a/2"));
        assert!(parse_discovery(b"{}").is_err());
        assert!(parse_discovery(b"<html>").is_err());
    }

    #[test]
    fn urls_split_and_forms_encode() {
        assert_eq!(split_url("https://h:1/a/b"), ("https://h:1", "/a/b"));
        assert_eq!(split_url("http://h"), ("http://h", "/"));
        assert_eq!(form_encode("a b/+=é"), "a+b%2F%2B%3D%C3%A9");
        let g = random_guid();
        assert_eq!((g.len(), &g[14..15]), (36, "4"));
    }
}
