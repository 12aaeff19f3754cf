//! Gate 9, device compliance (issue 15; contract `shared/docs/INTUNE-API.md`
//! §8), in both Intune modes: an optional per-profile check, run by
//! `crate::http::drive` after every other gate and before the issuer. A
//! device that is not known to be compliant gets a CertRep FAILURE badRequest
//! labelled `compliance_failed` (audited with the reason, counted in
//! `scepd_scep_outcomes_total` and in `intune/stats`); nothing is issued.
//!
//! The device id is the claim `sub` of a Connector challenge (connector
//! mode), else the CSR's URI SAN `IntuneDeviceId://<id>` (the form Intune
//! SCEP profiles add with `{{DeviceId}}`; the only source in API mode, where
//! it is checked after Intune's `validateRequest` vouched for the request).
//! No device id: refused.
//!
//! ```toml
//! intune_compliance_check = "graph"   # or "https://hooks.example/compliance", or "off" (default)
//! ```
//!
//! - `graph`: `GET {graph}v1.0/deviceManagement/managedDevices/{id}` with the
//!   Graph token of the profile's Entra client (Graph application permission
//!   `DeviceManagementManagedDevices.Read.All`). Only `complianceState ==
//!   "compliant"` passes; `noncompliant`, `inGracePeriod`, `conflict`,
//!   `error`, `unknown`, `configManager`, a 404 (unknown device) and any
//!   failure to get an answer (after the client's one retry) are refused.
//! - a webhook URL: `POST` JSON `{"profile", "deviceId", "deviceIdSource",
//!   "transactionId", "mode"}`; the answer must be `200` with JSON
//!   `{"allow": true}` to pass (`"reason"` is audited when given). `allow:
//!   false`, any other status, a malformed answer, a connection error or a
//!   timeout (`intune_api_timeout`) refuse: fail closed, no retry.
//!
//! HTTP runs on the `blocking` pool, as the rest of [`super::api`]; the
//! engine stays sans-IO.
//!
//! May import: `crate::settings` only (and the engine and issuers crates).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use scep_engine::config::ConfigError;
use scep_engine::intune::IntuneCounters;
use scep_engine::issue::{Authorization, EnrollRequest};
use scep_engine::x509::SubjectAltName;
use scep_issuers::http::{Endpoint, TransportError};
use serde::Serialize;

use super::api::client::ApiClient;
use super::api::{IntuneApi, REQUEST_DEADLINE};
use crate::settings::profile::{ComplianceCheck, ComplianceSettings};

/// The URI SAN scheme that carries the Intune device id (`{{DeviceId}}`).
pub const DEVICE_ID_SCHEME: &str = "IntuneDeviceId://";
/// The Graph application permission the `graph` form needs (§8).
pub const GRAPH_PERMISSION: &str = "DeviceManagementManagedDevices.Read.All";
/// The one `complianceState` that passes (Graph enum `complianceState`).
const COMPLIANT: &str = "compliant";
/// The documented `complianceState` values (others count as `other`).
const STATES: &[&str] =
    &["unknown", "compliant", "noncompliant", "conflict", "error", "inGracePeriod", "configManager"];
/// Longest device id accepted (Intune ids are GUIDs).
const MAX_DEVICE_ID: usize = 128;

/// Where a device id came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceIdSource {
    /// The Connector challenge's claim `sub`.
    ClaimSub,
    /// The CSR's URI SAN `IntuneDeviceId://<id>`.
    UriSan,
}

/// The device a request is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    /// The Intune device id.
    pub id: String,
    /// Where it came from.
    pub source: DeviceIdSource,
}

/// The device id of `enrol`: the claim `sub` of a Connector challenge, else
/// the first URI SAN `IntuneDeviceId://<id>` (scheme matched without regard
/// to case, a trailing `/` dropped).
pub fn device_of(enrol: &EnrollRequest) -> Option<Device> {
    if let Authorization::Intune { subject, .. } = &enrol.authorization
        && !subject.is_empty()
    {
        return Some(Device { id: subject.clone(), source: DeviceIdSource::ClaimSub });
    }
    enrol.subject_alt_names.iter().find_map(|san| {
        let SubjectAltName::Uri(uri) = san else { return None };
        let head = uri.get(..DEVICE_ID_SCHEME.len())?;
        if !head.eq_ignore_ascii_case(DEVICE_ID_SCHEME) {
            return None;
        }
        let id = uri[DEVICE_ID_SCHEME.len()..].trim_end_matches('/');
        Some(Device { id: id.to_string(), source: DeviceIdSource::UriSan })
    })
}

/// Whether `id` can be put in a Graph URL path as it is.
fn plausible_id(id: &str) -> bool {
    (1..=MAX_DEVICE_ID).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// What the admin plane shows of one profile's gate (`intune/stats`).
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct ComplianceSnapshot {
    /// `graph` or `webhook`.
    pub check: String,
    /// Devices allowed.
    pub allowed: u64,
    /// Devices refused.
    pub refused: u64,
    /// Results by kind: a Graph `complianceState`, `not_found`,
    /// `no_device_id`, `allow`, `deny`, `error`.
    pub results: BTreeMap<String, u64>,
    /// The last decision's detail.
    pub last: Option<String>,
    /// Latency of the last lookup, milliseconds.
    pub last_ms: u64,
    /// Sum of the lookup latencies, milliseconds.
    pub total_ms: u64,
}

enum Kind {
    /// Microsoft Graph `managedDevices`, through the profile's Entra client.
    Graph(Arc<ApiClient>),
    /// A webhook answering allow/deny.
    Webhook { url: String, endpoint: Endpoint, path: String },
}

/// One profile's compliance gate.
pub struct ComplianceGate {
    profile: String,
    mode: &'static str,
    kind: Kind,
    timeout: Duration,
    counters: Option<Arc<IntuneCounters>>,
    stats: Mutex<ComplianceSnapshot>,
}

impl std::fmt::Debug for ComplianceGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ComplianceGate").field("profile", &self.profile).field("mode", &self.mode).finish()
    }
}

/// The gate's decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The device may enrol; the detail is audited.
    Allow(String),
    /// The device is refused (`compliance_failed`); the detail is audited.
    Refuse(String),
}

/// Builds the gate of profile `profile` (start-up preflight and every
/// reload). `api` is the profile's Intune API setup in API mode (the Graph
/// form shares its client, and so its Graph token); `counters` are the
/// Connector validator's (connector mode), where a refusal is counted.
///
/// # Errors
/// `profile[<name>].intune_*: <why>` naming the key.
pub fn load(
    profile: &str,
    settings: &ComplianceSettings,
    api: Option<&IntuneApi>,
    counters: Option<Arc<IntuneCounters>>,
) -> Result<ComplianceGate, ConfigError> {
    let kind = match &settings.check {
        ComplianceCheck::Off => {
            return Err(ConfigError(format!("profile[{profile}].intune_compliance_check: off has no gate")));
        }
        ComplianceCheck::Graph => match api {
            Some(api) => Kind::Graph(Arc::clone(&api.client)),
            None => Kind::Graph(Arc::new(super::api::load_client(profile, &settings.entra)?)),
        },
        ComplianceCheck::Webhook(url) => {
            let key = format!("profile[{profile}].intune_compliance_check");
            let roots = super::api::trust_roots(&settings.entra)
                .map_err(|(k, why)| ConfigError(format!("profile[{profile}].{k}: {why}")))?;
            let (origin, path) = super::api::client::split_url(url);
            let endpoint = Endpoint::parse(origin, &roots).map_err(|e| ConfigError(format!("{key}: {e}")))?;
            Kind::Webhook { url: url.clone(), endpoint, path: path.to_string() }
        }
    };
    let check = if matches!(kind, Kind::Graph(_)) { "graph" } else { "webhook" };
    Ok(ComplianceGate {
        profile: profile.to_string(),
        mode: if api.is_some() { "api" } else { "connector" },
        kind,
        timeout: settings.entra.timeout,
        counters,
        stats: Mutex::new(ComplianceSnapshot { check: check.into(), ..ComplianceSnapshot::default() }),
    })
}

impl ComplianceGate {
    /// Decides whether the device of `enrol` may enrol (on the blocking pool).
    pub async fn check(self: &Arc<Self>, enrol: &EnrollRequest) -> Verdict {
        let started = Instant::now();
        let (verdict, result) = match device_of(enrol) {
            None => (
                Verdict::Refuse(format!(
                    "compliance: no device id (neither a Connector claim sub nor a URI SAN {DEVICE_ID_SCHEME}<id>)"
                )),
                "no_device_id".to_string(),
            ),
            Some(device) if !plausible_id(&device.id) => (
                Verdict::Refuse(format!("compliance: {:?} is not an Intune device id", device.id)),
                "no_device_id".to_string(),
            ),
            Some(device) => {
                let gate = Arc::clone(self);
                let transaction_id = enrol.transaction_id.clone();
                blocking::unblock(move || gate.lookup(&device, &transaction_id)).await
            }
        };
        self.record(started.elapsed(), &verdict, result);
        if matches!(verdict, Verdict::Refuse(_))
            && matches!(enrol.authorization, Authorization::Intune { .. })
            && let Some(counters) = &self.counters
        {
            counters.record_compliance_refusal();
        }
        verdict
    }

    fn record(&self, spent: Duration, verdict: &Verdict, result: String) {
        let mut s = self.stats.lock().unwrap_or_else(PoisonError::into_inner);
        let detail = match verdict {
            Verdict::Allow(d) => {
                s.allowed += 1;
                d
            }
            Verdict::Refuse(d) => {
                s.refused += 1;
                d
            }
        };
        s.last = Some(detail.clone());
        s.last_ms = u64::try_from(spent.as_millis()).unwrap_or(u64::MAX);
        s.total_ms = s.total_ms.saturating_add(s.last_ms);
        *s.results.entry(result).or_default() += 1;
    }

    /// A copy of the counters.
    pub fn snapshot(&self) -> ComplianceSnapshot {
        self.stats.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The lookup itself (blocking): the verdict and its result kind.
    fn lookup(&self, device: &Device, transaction_id: &str) -> (Verdict, String) {
        match &self.kind {
            Kind::Graph(client) => graph_verdict(client, &device.id),
            Kind::Webhook { url, endpoint, path } => {
                let body = serde_json::json!({
                    "profile": self.profile,
                    "deviceId": device.id,
                    "deviceIdSource": device.source,
                    "transactionId": transaction_id,
                    "mode": self.mode,
                })
                .to_string();
                let headers = [("Content-Type", "application/json")];
                let answer = endpoint.send("POST", path, &headers, Some(body.as_bytes()), self.timeout, self.timeout);
                webhook_verdict(url, &device.id, answer)
            }
        }
    }
}

/// Reads the device's `complianceState` from Graph (§8).
fn graph_verdict(client: &ApiClient, id: &str) -> (Verdict, String) {
    let deadline = Instant::now() + REQUEST_DEADLINE;
    let path = format!("v1.0/deviceManagement/managedDevices/{id}?$select=id,complianceState");
    match client.graph_get(&path, GRAPH_PERMISSION, "compliance_failed", deadline) {
        Ok(None) => (
            Verdict::Refuse(format!("compliance: device {id} is unknown to Intune (Graph managedDevices: 404)")),
            "not_found".into(),
        ),
        Ok(Some(v)) => match v.get("complianceState").and_then(|s| s.as_str()) {
            Some(state) if state.eq_ignore_ascii_case(COMPLIANT) => {
                (Verdict::Allow(format!("compliance: device {id} is compliant (Graph)")), COMPLIANT.into())
            }
            Some(state) => {
                let kind = STATES.iter().find(|s| s.eq_ignore_ascii_case(state)).map_or("other", |s| s);
                (
                    Verdict::Refuse(format!("compliance: device {id} is {state:?} in Intune (Graph complianceState)")),
                    kind.into(),
                )
            }
            None => (
                Verdict::Refuse(format!("compliance: Graph answered no complianceState for device {id}")),
                "error".into(),
            ),
        },
        Err(e) => (Verdict::Refuse(format!("compliance: no answer for device {id}: {}", e.detail)), "error".into()),
    }
}

/// Reads a webhook's answer: only `200 {"allow": true}` passes.
fn webhook_verdict(
    url: &str,
    id: &str,
    answer: Result<scep_issuers::http::HttpResponse, TransportError>,
) -> (Verdict, String) {
    let error =
        |why: String| (Verdict::Refuse(format!("compliance webhook {url}: {why} (device {id})")), "error".into());
    let response = match answer {
        Ok(r) => r,
        Err(TransportError::Timeout(e)) => return error(format!("timed out: {e}")),
        Err(e) => return error(e.to_string()),
    };
    if response.status != 200 {
        return error(format!("HTTP {}", response.status));
    }
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&response.body) else {
        return error("the answer is not JSON".into());
    };
    let reason = v.get("reason").and_then(|r| r.as_str()).map(|r| r.chars().take(200).collect::<String>());
    let reason = reason.map(|r| format!(": {r}")).unwrap_or_default();
    match v.get("allow").and_then(serde_json::Value::as_bool) {
        Some(true) => (Verdict::Allow(format!("compliance webhook allowed device {id}{reason}")), "allow".into()),
        Some(false) => (Verdict::Refuse(format!("compliance webhook denied device {id}{reason}")), "deny".into()),
        None => error("the answer has no boolean \"allow\"".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use scep_engine::issue::{ChallengeSecret, IssuancePolicy};

    fn enrol(authorization: Authorization, sans: Vec<SubjectAltName>) -> EnrollRequest {
        EnrollRequest {
            profile: "p".into(),
            transaction_id: "t".into(),
            csr_der: Vec::new(),
            subject_der: Vec::new(),
            spki_der: Vec::new(),
            subject_alt_names: sans,
            requested_ekus: Vec::new(),
            policy: IssuancePolicy::default(),
            authorization,
            sid_extension: None,
        }
    }

    #[test]
    fn the_device_id_is_the_claim_sub_else_the_intune_device_id_uri_san() {
        let san = vec![
            SubjectAltName::Dns("d.example".into()),
            SubjectAltName::Uri("tag:microsoft.com,2022-09-14:sid:S-1-5-21-1".into()),
            SubjectAltName::Uri("intunedeviceid://0a1b2c3d-0000-4000-8000-000000000001/".into()),
        ];
        let connector = Authorization::Intune {
            subject: "dev-sub".into(),
            issuer: "conn".into(),
            nonce: "n".into(),
            replay_scope: "p".into(),
            replay_until: scep_engine::time::UnixTime::from_secs(0),
        };
        assert_eq!(
            device_of(&enrol(connector, san.clone())),
            Some(Device { id: "dev-sub".into(), source: DeviceIdSource::ClaimSub })
        );
        let api = Authorization::IntuneApiChallenge { challenge: ChallengeSecret::new("blob") };
        assert_eq!(
            device_of(&enrol(api.clone(), san)),
            Some(Device { id: "0a1b2c3d-0000-4000-8000-000000000001".into(), source: DeviceIdSource::UriSan })
        );
        assert_eq!(device_of(&enrol(api, vec![SubjectAltName::Uri("https://x/".into())])), None);
        assert!(plausible_id("0a1b2c3d-0000-4000-8000-000000000001"));
        for bad in ["", "a/b", "x?$filter=1", "a b", &"a".repeat(129)] {
            assert!(!plausible_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn only_an_explicit_allow_passes_a_webhook() {
        let ok = |status: u16, body: &str| {
            Ok(scep_issuers::http::HttpResponse { status, body: body.as_bytes().to_vec(), retry_after: None })
        };
        let allow = webhook_verdict("u", "d", ok(200, r#"{"allow":true,"reason":"fine"}"#));
        assert_eq!(allow, (Verdict::Allow("compliance webhook allowed device d: fine".into()), "allow".into()));
        assert_eq!(webhook_verdict("u", "d", ok(200, r#"{"allow":false}"#)).1, "deny");
        for (status, body) in [(200, r#"{"allow":"yes"}"#), (200, "<html>"), (500, r#"{"allow":true}"#)] {
            let (v, kind) = webhook_verdict("u", "d", ok(status, body));
            assert!(matches!(v, Verdict::Refuse(_)) && kind == "error", "{status} {body}");
        }
        let (v, _) = webhook_verdict("u", "d", Err(TransportError::Timeout("5s".into())));
        assert!(matches!(v, Verdict::Refuse(d) if d.contains("timed out")));
    }
}
