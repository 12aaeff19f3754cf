//! Revocation sync (contract §5.3): on `intune_revocation_poll_interval`,
//! download Intune's revocation requests from `PkiConnectorFEService`, revoke
//! each certificate on the profile's local CA, and upload one result per
//! request: `None` when revoked, `CertificateNotFoundError` (4004) for a
//! serial this CA never issued, `ConflictError` (4005) for one already
//! revoked, `ParameterDataInvalidError` (4002) for an unreadable serial,
//! `NotSupportedError` (4006) when the profile's issuer is not the local CA
//! (the `Issuer` contract has no revocation), `RetryableServiceException`
//! (4100) when the store failed. Every request is logged (target
//! `scepd::intune`) with Intune's request context.

use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use scep_engine::time::UnixTime;
use scep_issuers::IssuerError;
use scep_issuers::crl::RevocationReason;
use serde::Serialize;

use super::client::{ApiClient, ApiFailure};

/// One handled revocation request, for the audit log: (profile, serial,
/// result code, detail with Intune's request context).
pub type Reporter = Arc<dyn Fn(&str, &str, &str, String) + Send + Sync>;

/// Requests asked for per download (Microsoft recommends at most 100).
pub const MAX_REQUESTS: u32 = 100;

/// The outcome of one sync.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct SyncReport {
    /// When it ran (Unix seconds).
    pub at: i64,
    /// Requests downloaded.
    pub requests: usize,
    /// Certificates revoked.
    pub revoked: usize,
    /// Results by error code name (`None` for revoked).
    pub results: Vec<(String, String)>,
    /// Why the sync failed, when it did.
    pub error: Option<String>,
}

/// The last sync of a profile (`intune/stats`).
#[derive(Debug, Default)]
pub struct SyncState {
    last: Mutex<Option<SyncReport>>,
}

impl SyncState {
    /// The last report.
    pub fn last(&self) -> Option<SyncReport> {
        self.last.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

fn revoke_one(
    local_ca: Option<&scep_issuers::LocalCa>,
    serial_hex: &str,
    now: UnixTime,
) -> (bool, &'static str, Option<String>) {
    let hex = serial_hex.trim();
    let bytes: Option<Vec<u8>> =
        if hex.is_empty() || !hex.len().is_multiple_of(2) || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            None
        } else {
            (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok()).collect()
        };
    let Some(mut bytes) = bytes else {
        return (false, "ParameterDataInvalidError", Some(format!("{hex:?} is not a hex serial number")));
    };
    while bytes.len() > 1 && bytes[0] == 0 {
        bytes.remove(0);
    }
    let Some(ca) = local_ca else {
        return (false, "NotSupportedError", Some("the profile's issuer cannot revoke (not the local CA)".into()));
    };
    match ca.revoke(&bytes, RevocationReason::CessationOfOperation, now) {
        Ok(_) => (true, "None", None),
        Err(IssuerError::UnknownSerial(s)) => {
            (false, "CertificateNotFoundError", Some(format!("serial {s} was not issued by this CA")))
        }
        Err(IssuerError::AlreadyRevoked(s)) => (false, "ConflictError", Some(format!("serial {s} is already revoked"))),
        Err(e) => (false, "RetryableServiceException", Some(e.to_string())),
    }
}

/// One download → revoke → upload round.
///
/// # Errors
/// [`ApiFailure`] when a download or upload failed (the requests are not
/// acknowledged: Intune sends them again after its cool-down).
pub fn sync_once(
    client: &ApiClient,
    local_ca: Option<&scep_issuers::LocalCa>,
    profile: &str,
    report_to: Option<&Reporter>,
    now: UnixTime,
) -> Result<SyncReport, ApiFailure> {
    let deadline = Instant::now() + super::REQUEST_DEADLINE;
    let body = serde_json::json!({"downloadParameters": {"maxRequests": MAX_REQUESTS, "issuerName": null}});
    let answer = client.pki_post("CertificateAuthorityRequests/downloadRevocationRequests", &body, deadline)?;
    let list = answer.get("value").and_then(|v| v.as_array()).ok_or_else(|| ApiFailure {
        label: "intune_protocol",
        code: None,
        detail: "downloadRevocationRequests: answer has no value array".into(),
    })?;
    let mut report = SyncReport { at: now.secs(), requests: list.len(), ..SyncReport::default() };
    let mut results = Vec::with_capacity(list.len());
    for request in list {
        // Property names are matched case-insensitively (§5.3).
        let field = |name: &str| {
            request
                .as_object()
                .and_then(|o| o.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)))
                .and_then(|(_, v)| v.as_str())
        };
        let context = field("requestContext").unwrap_or_default().to_string();
        let serial = field("serialNumber").unwrap_or_default();
        let (succeeded, code, message) = revoke_one(local_ca, serial, now);
        tracing::info!(
            target: "scepd::intune", profile, serial, request_context = %context, succeeded, code,
            "Intune revocation request"
        );
        if let Some(report_to) = report_to {
            let why = message.as_deref().unwrap_or("revoked (cessationOfOperation)");
            report_to(profile, serial, code, format!("Intune revocation request {context:?}: {why}"));
        }
        if succeeded {
            report.revoked += 1;
        }
        report.results.push((serial.to_string(), code.to_string()));
        results.push(serde_json::json!({
            "requestContext": context, "succeeded": succeeded, "errorCode": code, "errorMessage": message,
        }));
    }
    if !results.is_empty() {
        let answer = client.pki_post(
            "CertificateAuthorityRequests/uploadRevocationResults",
            &serde_json::json!({"results": results}),
            deadline,
        )?;
        if answer.get("value") != Some(&serde_json::Value::Bool(true)) {
            return Err(ApiFailure {
                label: "intune_protocol",
                code: None,
                detail: format!("uploadRevocationResults: Intune did not answer value = true: {answer}"),
            });
        }
    }
    Ok(report)
}

/// Starts the poller of one profile: a thread that syncs every `interval`
/// and ends once `client` is dropped (the profile was reloaded or removed).
pub fn start_poller(
    profile: String,
    client: Weak<ApiClient>,
    local_ca: Option<Arc<scep_issuers::LocalCa>>,
    state: Arc<SyncState>,
    interval: Duration,
    report_to: Option<Reporter>,
) {
    let spawned = std::thread::Builder::new().name(format!("intune-revocation-{profile}")).spawn(move || {
        loop {
            let until = Instant::now() + interval;
            while Instant::now() < until {
                if client.strong_count() == 0 {
                    return;
                }
                std::thread::sleep(Duration::from_millis(200).min(interval));
            }
            let Some(c) = client.upgrade() else { return };
            let now = UnixTime::now();
            let report = match sync_once(&c, local_ca.as_deref(), &profile, report_to.as_ref(), now) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(target: "scepd::intune", profile, detail = %e.detail, "Intune revocation sync failed");
                    SyncReport { at: now.secs(), error: Some(e.detail), ..SyncReport::default() }
                }
            };
            *state.last.lock().unwrap_or_else(PoisonError::into_inner) = Some(report);
        }
    });
    if let Err(e) = spawned {
        tracing::error!(target: "scepd::intune", error = %e, "cannot start the Intune revocation poller");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreadable_serials_are_parameter_errors_and_other_issuers_not_supported() {
        let now = UnixTime::from_secs(0);
        for bad in ["", "ABC", "zz", "é1", "0x12"] {
            assert_eq!(revoke_one(None, bad, now).1, "ParameterDataInvalidError", "{bad:?}");
        }
        assert_eq!(revoke_one(None, "0BADC0FFEE", now).1, "NotSupportedError");
    }
}
