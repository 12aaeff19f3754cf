//! Revocation sync (contract §5.3): on `intune_revocation_poll_interval`,
//! download Intune's revocation requests from `PkiConnectorFEService`, revoke
//! each certificate through the profile's issuer
//! ([`Issuer::revoke`]: the local CA or Vault/OpenBao), and upload one
//! result per request: `None` when revoked, `CertificateNotFoundError` (4004)
//! for a serial this issuer never issued, `ConflictError` (4005) for one
//! already revoked, `ParameterDataInvalidError` (4002) for an unreadable
//! serial, `NotSupportedError` (4006) when the issuer cannot revoke,
//! `RetryableServiceException` (4100) when it failed otherwise. Every request is logged (target
//! `scepd::intune`) with Intune's request context.
//!
//! With several nodes on a PostgreSQL store, the nodes' pollers share a lease
//! per profile (`crate::store::revocation_sync`): exactly one node runs a
//! profile's sync per interval, and every node's `intune/stats` shows the
//! report of the last run, whichever node made it.

use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use scep_engine::time::UnixTime;
use scep_issuers::crl::RevocationReason;
use scep_issuers::{Issuer, IssuerError};
use serde::{Deserialize, Serialize};

use super::client::{ApiClient, ApiFailure};
use crate::store::revocation_sync::RevocationSyncLease;

/// One handled revocation request, for the audit log: (profile, serial,
/// result code, detail with Intune's request context).
pub type Reporter = Arc<dyn Fn(&str, &str, &str, String) + Send + Sync>;

/// Requests asked for per download (Microsoft recommends at most 100).
pub const MAX_REQUESTS: u32 = 100;

/// The outcome of one sync.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SyncReport {
    /// When it ran (Unix seconds).
    pub at: i64,
    /// The node that ran it (`[server] node_name`).
    #[serde(default)]
    pub node: String,
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

/// Revokes one serial through `issuer` (blocking: the poller's own thread
/// waits for the issuer's future): (succeeded, error code name, message).
fn revoke_one(issuer: &dyn Issuer, serial_hex: &str, now: UnixTime) -> (bool, &'static str, Option<String>) {
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
    let revoked = futures_lite::future::block_on(issuer.revoke(&bytes, RevocationReason::CessationOfOperation, now));
    match revoked {
        Ok(_) => (true, "None", None),
        Err(IssuerError::UnknownSerial(s)) => {
            (false, "CertificateNotFoundError", Some(format!("serial {s} was not issued by issuer {}", issuer.id())))
        }
        Err(IssuerError::AlreadyRevoked(s)) => (false, "ConflictError", Some(format!("serial {s} is already revoked"))),
        Err(e @ IssuerError::Unsupported(_)) => (false, "NotSupportedError", Some(e.to_string())),
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
    issuer: &dyn Issuer,
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
        let (succeeded, code, message) = revoke_one(issuer, serial, now);
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
/// With a `lease` (several nodes on one store) the thread asks the lease
/// several times an interval and syncs only when it takes it; otherwise it
/// reads the report of the node that did.
pub fn start_poller(
    profile: String,
    client: Weak<ApiClient>,
    issuer: Arc<dyn Issuer>,
    state: Arc<SyncState>,
    interval: Duration,
    report_to: Option<Reporter>,
    lease: Option<(Arc<dyn RevocationSyncLease>, String)>,
) {
    let spawned = std::thread::Builder::new().name(format!("intune-revocation-{profile}")).spawn(move || {
        let sync = |c: &ApiClient, node: &str| {
            let now = UnixTime::now();
            let mut report = match sync_once(c, &*issuer, &profile, report_to.as_ref(), now) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(target: "scepd::intune", profile, detail = %e.detail, "Intune revocation sync failed");
                    SyncReport { at: now.secs(), error: Some(e.detail), ..SyncReport::default() }
                }
            };
            node.clone_into(&mut report.node);
            *state.last.lock().unwrap_or_else(PoisonError::into_inner) = Some(report.clone());
            report
        };
        let tick = match &lease {
            None => interval,
            Some(_) => (interval / 4).clamp(Duration::from_millis(200), Duration::from_secs(5)),
        };
        let mut failing = false;
        let mut last_read = Instant::now();
        loop {
            let until = Instant::now() + tick;
            while Instant::now() < until {
                if client.strong_count() == 0 {
                    return;
                }
                std::thread::sleep(Duration::from_millis(200).min(tick));
            }
            let Some(c) = client.upgrade() else { return };
            let Some((lease, node)) = &lease else {
                sync(&c, "");
                continue;
            };
            let result = lease.take(&profile, interval).and_then(|taken| {
                if taken {
                    let report = sync(&c, node);
                    let json = serde_json::to_string(&report).map_err(|e| e.to_string())?;
                    lease.publish(&profile, &json)
                } else if last_read.elapsed() >= interval.min(Duration::from_secs(30)) {
                    last_read = Instant::now();
                    if let Some((json, _)) = lease.last(&profile)? {
                        let report: SyncReport = serde_json::from_str(&json).map_err(|e| e.to_string())?;
                        *state.last.lock().unwrap_or_else(PoisonError::into_inner) = Some(report);
                    }
                    Ok(())
                } else {
                    Ok(())
                }
            });
            match result {
                Ok(()) if failing => {
                    failing = false;
                    tracing::info!(target: "scepd::intune", profile, "Intune revocation-sync lease reachable again");
                }
                Ok(()) => {}
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(target: "scepd::intune", profile, error = %e, "Intune revocation-sync lease unavailable; no sync until it returns");
                }
                Err(_) => {}
            }
        }
    });
    if let Err(e) = spawned {
        tracing::error!(target: "scepd::intune", error = %e, "cannot start the Intune revocation poller");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An issuer that keeps the trait's default `revoke` (it cannot revoke).
    struct CannotRevoke;
    impl Issuer for CannotRevoke {
        fn id(&self) -> &str {
            "iss-cannot-revoke"
        }
        fn ca_chain(&self) -> Vec<Vec<u8>> {
            Vec::new()
        }
        fn handle<'a>(
            &'a self,
            _: &'a scep_issuers::IssueRequest,
            _: UnixTime,
        ) -> scep_issuers::BoxFuture<'a, scep_issuers::IssueOutcome> {
            Box::pin(std::future::ready(scep_issuers::IssueOutcome::Pending))
        }
    }

    #[test]
    fn serials_are_read_then_revoked_through_the_issuer_with_its_errors_mapped() {
        let dir = tempfile::tempdir().unwrap();
        let now = UnixTime::now();
        let ca = crate::wiring::bootstrap::open_local_ca(dir.path(), now, None).unwrap().issuer;
        for bad in ["", "ABC", "zz", "é1", "0x12"] {
            assert_eq!(revoke_one(&*ca, bad, now).1, "ParameterDataInvalidError", "{bad:?}");
        }
        let (ok, code, message) = revoke_one(&*ca, "000BADC0FFEE", now);
        assert_eq!((ok, code), (false, "CertificateNotFoundError"));
        assert!(message.unwrap().contains("not issued by issuer"));
        assert_eq!(revoke_one(&CannotRevoke, "0BADC0FFEE", now).1, "NotSupportedError");
    }
}
