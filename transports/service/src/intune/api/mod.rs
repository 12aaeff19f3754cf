//! Microsoft's Intune SCEP validation API (issue 15): the second Intune mode
//! of a profile (`intune_mode = "api"`), beside the Connector-signed one in
//! the parent folder. Wire contract: `shared/docs/INTUNE-API.md`.
//!
//! The engine authorises everything it can (signature, decryption, CSR and
//! key policy) and hands the challenge, the decrypted PKCS#10 and the
//! transactionID out
//! ([`Authorization::IntuneApiChallenge`](scep_engine::issue::Authorization::IntuneApiChallenge));
//! `crate::http::drive` then, through [`IntuneApi`]:
//!
//! 1. admits the challenge once locally ([`replay::SeenChallenges`]; twice is
//!    `replay`, whatever Intune says),
//! 2. asks Intune `validateRequest` (§3) — anything but `code == "Success"`
//!    is a CertRep FAILURE badRequest, nothing is issued,
//! 3. asks the issuer, then sends `successNotification` (§4.1) and returns
//!    the certificate only when Intune answers `Success` (unless
//!    `intune_return_before_notification`); a certificate signed but not
//!    delivered is revoked through the profile's issuer and audited; when issuance fails
//!    it sends `failureNotification` (§4.2).
//!
//! ```toml
//! [[profile]]
//! name = "intune"
//! intune_enabled = true
//! intune_mode = "api"                               # INTUNE_MODE: "connector" (default) or "api"
//! intune_tenant_id = "contoso.onmicrosoft.com"       # INTUNE_TENANT_ID: GUID or verified domain
//! intune_client_id = "11111111-2222-..."            # INTUNE_CLIENT_ID
//! intune_client_secret_path = "entra-secret"        # INTUNE_CLIENT_SECRET_PATH (mode 0600), or:
//! # intune_client_cert_path = "entra.pem"           # INTUNE_CLIENT_CERT_PATH + INTUNE_CLIENT_KEY_PATH
//! # intune_client_key_path = "entra.key"            #   (signed client assertion, RFC 7523, PS256)
//! # intune_authority_url = "https://login.microsoftonline.com/"  # INTUNE_AUTHORITY_URL
//! # intune_graph_url = "https://graph.microsoft.com/"            # INTUNE_GRAPH_URL
//! # intune_resource_url = "https://api.manage.microsoft.com/"    # INTUNE_RESOURCE_URL
//! # intune_api_ca_bundle_path = "extra-roots.pem"   # INTUNE_API_CA_BUNDLE_PATH: added to the system roots
//! # intune_revocation_poll_interval = "15m"         # INTUNE_REVOCATION_POLL_INTERVAL ("0" = off)
//! # intune_compliance_check = "off"                 # INTUNE_COMPLIANCE_CHECK
//! # intune_return_before_notification = false      # INTUNE_RETURN_BEFORE_NOTIFICATION
//! # intune_api_timeout = "30s"                      # INTUNE_API_TIMEOUT: per answer, 1s..40s
//! ```
//!
//! HTTP: the blocking client of `scep_issuers::http` (rustls on aws-lc-rs),
//! run on the `blocking` pool, so the service stays runtime-agnostic.
//!
//! May import: `crate::settings` only (and the engine and issuers crates).

pub mod assertion;
pub mod client;
pub mod replay;
pub mod revocation;
pub mod stats;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use rustls_pki_types::CertificateDer;
use scep_engine::config::ConfigError;
use scep_engine::time::UnixTime;
use scep_engine::x509::{CertificateRef, name_to_string};

use crate::settings::profile::{IntuneApiSettings, IntuneCredential};
use client::{ApiClient, ApiFailure, Credential};
use replay::{Refusal, SeenChallenges};

/// Live challenges remembered for the single-use check.
const SEEN_CAPACITY: usize = 100_000;
/// How long a challenge is remembered (Intune challenges live about 60 min).
const SEEN_TTL_SECS: i64 = 2 * 3600;
/// The whole Intune part of one enrolment (validate, notify) must end within
/// this, inside a device's SCEP HTTP timeout.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(45);
/// `hResult` of `failureNotification`: E_FAIL (MS-ERREF 2.1), as a signed 32-bit value.
pub const E_FAIL: i64 = -2_147_467_259;

/// Where system trust roots are read from (the first that exists), unless
/// `SSL_CERT_FILE` names one.
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// One profile's Intune API setup.
#[derive(Clone)]
pub struct IntuneApi {
    /// The client of the three hops (shared by reloads that keep the settings).
    pub client: Arc<ApiClient>,
    /// Challenges already presented.
    pub seen: Arc<SeenChallenges>,
    /// The profile's issuer (local CA or Vault/OpenBao): a certificate
    /// signed but not delivered is revoked through its
    /// [`Issuer::revoke`](scep_issuers::Issuer::revoke), and so are Intune's
    /// revocation requests ([`revocation`]).
    pub issuer: Arc<dyn scep_issuers::Issuer>,
    /// The revocation sync's last result.
    pub revocation: Arc<revocation::SyncState>,
}

impl std::fmt::Debug for IntuneApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IntuneApi")
            .field("client", &self.client)
            .field("issuer", &self.issuer.id())
            .finish_non_exhaustive()
    }
}

/// Reads a secret or key file, refusing one that group or others can read.
fn read_private(key: &str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    use std::os::unix::fs::PermissionsExt as _;
    let meta = std::fs::metadata(path).map_err(|e| ConfigError(format!("{key}: {}: {e}", path.display())))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(ConfigError(format!(
            "{key}: {}: mode {mode:o} lets others read the secret; chmod 600 it",
            path.display()
        )));
    }
    std::fs::read(path).map_err(|e| ConfigError(format!("{key}: {}: {e}", path.display())))
}

/// Builds the Intune API setup of profile `profile` (start-up preflight and
/// every reload): reads the credential and the trust roots.
///
/// # Errors
/// `profile[<name>].intune_*: <why>` naming the key.
pub fn load(
    profile: &str,
    settings: &IntuneApiSettings,
    issuer: Arc<dyn scep_issuers::Issuer>,
) -> Result<IntuneApi, ConfigError> {
    Ok(IntuneApi {
        client: Arc::new(load_client(profile, settings)?),
        seen: Arc::new(SeenChallenges::new(SEEN_CAPACITY, SEEN_TTL_SECS)),
        issuer,
        revocation: Arc::new(revocation::SyncState::default()),
    })
}

/// Builds the Entra/Graph/Intune client of profile `profile`: reads the
/// credential (secret file or certificate and key) and the trust roots.
/// Also used by the Graph compliance gate of a connector-mode profile.
///
/// # Errors
/// `profile[<name>].intune_*: <why>` naming the key.
pub fn load_client(profile: &str, settings: &IntuneApiSettings) -> Result<ApiClient, ConfigError> {
    let k = |key: &str| format!("profile[{profile}].{key}");
    let credential = match &settings.credential {
        IntuneCredential::Secret(path) => {
            let key = k("intune_client_secret_path");
            let bytes = read_private(&key, path)?;
            let text = String::from_utf8(bytes)
                .map_err(|_| ConfigError(format!("{key}: {}: not UTF-8 text", path.display())))?;
            let secret = text.trim();
            if secret.is_empty() {
                return Err(ConfigError(format!("{key}: {}: the file is empty", path.display())));
            }
            Credential::Secret(secret.to_string())
        }
        IntuneCredential::Certificate { cert, key } => {
            let ck = k("intune_client_cert_path");
            let text = scep_issuers::config_file::read_to_string(cert)
                .map_err(|e| ConfigError(format!("{ck}: {}: {e}", cert.display())))?;
            let der = scep_engine::pem::certificates(&text)
                .ok()
                .and_then(|c| c.into_iter().next())
                .ok_or_else(|| ConfigError(format!("{ck}: {}: no CERTIFICATE block", cert.display())))?;
            let kk = k("intune_client_key_path");
            let key_text = String::from_utf8(read_private(&kk, key)?)
                .map_err(|_| ConfigError(format!("{kk}: {}: not PEM text", key.display())))?;
            let key_der = scep_engine::pem::private_key(&key_text)
                .map_err(|e| ConfigError(format!("{kk}: {}: {e}", key.display())))?;
            let assertion = assertion::ClientAssertion::new(der, &key_der)
                .map_err(|e| ConfigError(format!("{kk}: {}: {e}", key.display())))?;
            Credential::Assertion(assertion)
        }
    };
    let roots = trust_roots(settings).map_err(|(key, why)| ConfigError(format!("{}: {why}", k(key))))?;
    Ok(ApiClient::new(settings.clone(), credential, roots))
}

impl IntuneApi {
    /// Starts the revocation poller when `intune_revocation_poll_interval` is
    /// not 0 (by the running service, not by `check-config`); it stops when
    /// this setup is dropped by a reload.
    /// Each handled request is passed to `report_to` (the audit log). With a
    /// `lease` (the shared store, and this node's name) one node of several
    /// runs each interval's sync.
    pub fn start_revocation_sync(
        &self,
        profile: &str,
        report_to: Option<revocation::Reporter>,
        lease: Option<(Arc<dyn crate::store::revocation_sync::RevocationSyncLease>, String)>,
    ) {
        let secs = self.client.settings().revocation_poll_interval_secs;
        if secs > 0 {
            revocation::start_poller(
                profile.to_string(),
                Arc::downgrade(&self.client),
                Arc::clone(&self.issuer),
                Arc::clone(&self.revocation),
                Duration::from_secs(u64::try_from(secs).unwrap_or(900)),
                report_to,
                lease,
            );
        }
    }
}

/// System roots plus `intune_api_ca_bundle_path`. Only needed when a URL is
/// https; an all-loopback setup (the stand-in) needs none.
pub(crate) fn trust_roots(
    settings: &IntuneApiSettings,
) -> Result<Vec<CertificateDer<'static>>, (&'static str, String)> {
    let mut roots = Vec::new();
    let system = std::env::var_os("SSL_CERT_FILE")
        .map(std::path::PathBuf::from)
        .or_else(|| SYSTEM_BUNDLES.iter().map(std::path::PathBuf::from).find(|p| p.exists()));
    if let Some(path) = system
        && let Ok(text) = std::fs::read_to_string(&path)
    {
        roots.extend(scep_engine::pem::certificates(&text).unwrap_or_default().into_iter().map(CertificateDer::from));
    }
    if let Some(path) = &settings.ca_bundle_path {
        let text = scep_issuers::config_file::read_to_string(path)
            .map_err(|e| ("intune_api_ca_bundle_path", format!("{}: {e}", path.display())))?;
        let extra = scep_engine::pem::certificates(&text)
            .map_err(|e| ("intune_api_ca_bundle_path", format!("{}: {e}", path.display())))?;
        if extra.is_empty() {
            return Err(("intune_api_ca_bundle_path", format!("{}: no CERTIFICATE block", path.display())));
        }
        roots.extend(extra.into_iter().map(CertificateDer::from));
    }
    let needs_tls = [&settings.authority_url, &settings.graph_url].iter().any(|u| u.starts_with("https://"));
    if needs_tls && roots.is_empty() {
        return Err((
            "intune_api_ca_bundle_path",
            "no trust roots: no system CA bundle found (set SSL_CERT_FILE or this key)".into(),
        ));
    }
    Ok(roots)
}

/// Facts of an issued certificate that `successNotification` carries (§4.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedFacts {
    /// SHA-1 of the DER, 40 uppercase hex digits.
    pub thumbprint: String,
    /// Serial, uppercase big-endian hex without leading zero bytes.
    pub serial: String,
    /// notAfter, RFC 3339 UTC with milliseconds.
    pub expires: String,
    /// Issuer DN as text (also the revocation `issuerName`).
    pub issuer: String,
    /// Serial magnitude bytes (for a local revocation).
    pub serial_bytes: Vec<u8>,
}

impl IssuedFacts {
    /// Reads them from `cert_der`.
    ///
    /// # Errors
    /// When the certificate does not parse.
    pub fn of(cert_der: &[u8]) -> Result<Self, String> {
        let c = CertificateRef::parse(cert_der).map_err(|e| format!("issued certificate does not parse: {e}"))?;
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02X}")).collect::<String>();
        let expires = c.not_after.to_rfc3339();
        let expires = match expires.strip_suffix('Z') {
            Some(s) if !s.contains('.') => format!("{s}.000Z"),
            _ => expires,
        };
        Ok(Self {
            thumbprint: hex(&scep_engine::crypto::DigestAlg::Sha1.digest(cert_der)),
            serial: hex(c.serial),
            expires,
            issuer: name_to_string(c.issuer),
            serial_bytes: c.serial.to_vec(),
        })
    }
}

impl IntuneApi {
    /// Admits `challenge` once (the local single-use gate).
    ///
    /// # Errors
    /// `(label, detail)`: `replay` or `replay_cache_full`.
    pub fn admit(&self, challenge: &str, now: UnixTime) -> Result<(), (&'static str, String)> {
        self.seen.admit(challenge, now).map_err(|r| match r {
            Refusal::Replay => ("replay", "this Intune challenge was presented before".to_string()),
            Refusal::Full => {
                ("replay_cache_full", format!("{SEEN_CAPACITY} live Intune challenges are remembered already"))
            }
        })
    }

    /// `validateRequest` (§3.1), on the blocking pool.
    ///
    /// # Errors
    /// [`ApiFailure`]; when Intune gave no definitive answer the challenge is
    /// released so the device may retry it.
    pub async fn validate(&self, challenge: &str, transaction_id: &str, csr_der: &[u8]) -> Result<(), ApiFailure> {
        let body = serde_json::json!({"request": {
            "transactionId": transaction_id,
            "certificateRequest": base64::engine::general_purpose::STANDARD.encode(csr_der),
            "callerInfo": self.client.caller_info(),
        }});
        let result = self.action("validateRequest", body).await;
        if let Err(e) = &result
            && e.code.is_none()
        {
            self.seen.release(challenge);
        }
        result
    }

    /// `successNotification` (§4.1), on the blocking pool.
    ///
    /// # Errors
    /// [`ApiFailure`].
    pub async fn notify_success(
        &self,
        transaction_id: &str,
        csr_der: &[u8],
        facts: &IssuedFacts,
    ) -> Result<(), ApiFailure> {
        let body = self.success_body(transaction_id, csr_der, facts);
        self.action("successNotification", body).await
    }

    fn success_body(&self, transaction_id: &str, csr_der: &[u8], facts: &IssuedFacts) -> serde_json::Value {
        serde_json::json!({"notification": {
            "transactionId": transaction_id,
            "certificateRequest": base64::engine::general_purpose::STANDARD.encode(csr_der),
            "certificateThumbprint": facts.thumbprint,
            "certificateSerialNumber": facts.serial,
            "certificateExpirationDateUtc": facts.expires,
            "issuingCertificateAuthority": facts.issuer,
            "callerInfo": self.client.caller_info(),
            "caConfiguration": facts.issuer,
            "certificateAuthority": facts.issuer,
        }})
    }

    /// `failureNotification` (§4.2) with E_FAIL and `description` cut to 255
    /// characters, on the blocking pool.
    ///
    /// # Errors
    /// [`ApiFailure`].
    pub async fn notify_failure(
        &self,
        transaction_id: &str,
        csr_der: &[u8],
        description: &str,
    ) -> Result<(), ApiFailure> {
        let description: String = description.chars().take(255).collect();
        let description = if description.is_empty() { "issuance failed".to_string() } else { description };
        let body = serde_json::json!({"notification": {
            "transactionId": transaction_id,
            "certificateRequest": base64::engine::general_purpose::STANDARD.encode(csr_der),
            "hResult": E_FAIL,
            "errorDescription": description,
            "callerInfo": self.client.caller_info(),
        }});
        self.action("failureNotification", body).await
    }

    /// `successNotification` without waiting for the answer
    /// (`intune_return_before_notification`): sent on the blocking pool, its
    /// result only logged and counted.
    pub fn notify_success_detached(&self, transaction_id: String, csr_der: Vec<u8>, facts: IssuedFacts) {
        let api = self.clone();
        blocking::unblock(move || {
            let body = api.success_body(&transaction_id, &csr_der, &facts);
            let deadline = Instant::now() + REQUEST_DEADLINE;
            if let Err(e) = api.client.scep_action("successNotification", &body, deadline) {
                tracing::warn!(target: "scepd::intune", transaction_id, detail = %e.detail, "Intune successNotification (not awaited) failed");
            }
        })
        .detach();
    }

    async fn action(&self, action: &'static str, body: serde_json::Value) -> Result<(), ApiFailure> {
        let client = Arc::clone(&self.client);
        let deadline = Instant::now() + REQUEST_DEADLINE;
        blocking::unblock(move || client.scep_action(action, &body, deadline)).await
    }

    /// Revokes an undelivered certificate through the profile's issuer
    /// (cessationOfOperation). Returns what happened, for the audit detail.
    pub async fn revoke_undelivered(&self, facts: &IssuedFacts, now: UnixTime) -> String {
        let reason = scep_issuers::crl::RevocationReason::CessationOfOperation;
        match self.issuer.revoke(&facts.serial_bytes, reason, now).await {
            Ok(_) => format!("certificate {} revoked by issuer {} (not delivered)", facts.serial, self.issuer.id()),
            Err(e) => {
                tracing::error!(serial = %facts.serial, error = %e, "cannot revoke an undelivered certificate");
                format!("certificate {} NOT revoked: {e}", facts.serial)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(secret: std::path::PathBuf) -> IntuneApiSettings {
        IntuneApiSettings {
            tenant_id: "t".into(),
            client_id: "c".into(),
            credential: IntuneCredential::Secret(secret),
            authority_url: "http://127.0.0.1:9/".into(),
            graph_url: "http://127.0.0.1:9/".into(),
            resource_url: crate::settings::profile::DEFAULT_RESOURCE_URL.into(),
            ca_bundle_path: None,
            revocation_poll_interval_secs: 0,
            compliance: crate::settings::profile::ComplianceCheck::Off,
            return_before_notification: false,
            timeout: Duration::from_secs(30),
        }
    }

    #[test]
    fn the_secret_file_must_be_private_and_not_empty() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        let issuer = crate::wiring::bootstrap::open_local_ca(dir.path(), UnixTime::now(), None).unwrap().issuer;
        std::fs::write(&path, "s3cret\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = load("p", &settings(path.clone()), Arc::clone(&issuer)).unwrap_err();
        assert!(e.0.starts_with("profile[p].intune_client_secret_path: ") && e.0.contains("chmod 600"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let api = load("p", &settings(path.clone()), Arc::clone(&issuer)).unwrap();
        assert!(format!("{:?}", api.client).contains("tenant"));
        std::fs::write(&path, "  \n").unwrap();
        assert!(load("p", &settings(path.clone()), Arc::clone(&issuer)).unwrap_err().0.contains("empty"));
        let e = load("p", &settings(dir.path().join("missing")), issuer).unwrap_err();
        assert!(e.0.starts_with("profile[p].intune_client_secret_path: "), "{e}");
    }

    #[test]
    fn issued_facts_are_uppercase_hex_and_rfc3339_milliseconds() {
        let der = scep_engine::pem::certificates(include_str!(
            "../../../../../tests/vectors/real-clients/recipient-cert.pem"
        ))
        .unwrap()
        .remove(0);
        let f = IssuedFacts::of(&der).unwrap();
        assert_eq!(f.thumbprint.len(), 40);
        assert!(f.thumbprint.bytes().all(|b| b.is_ascii_digit() || b.is_ascii_uppercase()));
        assert!(f.expires.ends_with(".000Z") && UnixTime::parse_rfc3339(&f.expires).is_some(), "{}", f.expires);
        assert!(!f.serial.starts_with("00") && !f.issuer.is_empty());
        assert!(IssuedFacts::of(b"junk").is_err());
    }
}
