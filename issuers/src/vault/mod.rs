//! A Vault-compatible PKI issuer (HashiCorp Vault, OpenBao): the PKI
//! secrets engine's HTTP API signs the device CSRs.
//!
//! | SCEP request (RFC 8894)       | Vault API                                         |
//! |-------------------------------|---------------------------------------------------|
//! | PKCSReq (§3.3.1)              | `POST /v1/<mount>/sign/<role>`                    |
//! | RenewalReq                    | `GET /v1/<mount>/cert/<serial>` (must exist, not revoked, unexpired), then refused: `renewal_unverifiable` (Vault cannot say on which profile a certificate was issued, nor whether it was already renewed) |
//! | CertPoll (§3.3.2)             | none: Vault signs synchronously; a request answered in the last hour is returned again, any other is badCertId |
//! | GetCert (§3.3.3)              | `GET /v1/<mount>/cert/<serial>`                   |
//! | GetCRL                        | `GET /v1/<mount>/crl` (DER)                       |
//! | GetCACert (§4.2)              | `GET /v1/<mount>/cert/ca_chain`, fetched once at start-up |
//!
//! The sign request carries the CSR, the subject's common name, the SANs the
//! engine authorised (`alt_names`, `ip_sans`, `uri_sans`, `other_sans` for the
//! Microsoft UPN), `ttl` = the profile's validity and
//! `exclude_cn_from_sans = true` (the role must have `use_csr_sans = false`,
//! or Vault ignores the SANs sent). Vault takes only the CN from the subject
//! (other attributes come from the role), and EKUs and key usages come from
//! the *role*: the issued certificate is checked against the profile
//! (same public key, exactly the authorised SANs, exactly the profile's EKUs,
//! validity not longer than the profile's); a certificate that does not match is revoked at once and the
//! request refused, naming the role setting to fix.
//!
//! Every failure is an [`IssueOutcome::Rejected`] (the refused renewal an
//! [`IssueOutcome::RejectedAs`]): 4xx answers carry Vault's
//! `errors[]`, unreachable/5xx/timeouts say `issuer unavailable: ...`; every
//! reason starts with `issuer <id>:` so audit events name the issuer.

mod auth;
mod client;
use crate::http;

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use base64::Engine as _;
use scep_engine::FailInfo;
use scep_engine::issue::{CertLookup, EnrollRequest, IssueOutcome, IssueRequest, PollRequest, RenewRequest};
use scep_engine::oid;
use scep_engine::pem;
use scep_engine::time::UnixTime;
use scep_engine::wire::{parse_single, tag};
use scep_engine::x509::{CertificateRef, SubjectAltName, name_attribute_strings, parse_subject_alt_names};
use serde_json::{Value, json};

pub use auth::VaultAuth;
use client::{CallError, Client, ClientSettings, Idempotence};

use crate::crl::RevocationReason;
use crate::error::IssuerError;
use crate::local::Revocation;
use crate::x509_build::{serial_hex, trim_serial};
use crate::{BoxFuture, Issuer};

/// Default connect timeout.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default timeout of one HTTP exchange.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Default retries after the first attempt.
pub const DEFAULT_MAX_RETRIES: u32 = 2;
/// Default first retry delay (doubles each retry).
pub const DEFAULT_RETRY_BACKOFF: Duration = Duration::from_millis(200);
/// Default consecutive unavailable calls that open the circuit breaker.
pub const DEFAULT_BREAKER_THRESHOLD: u32 = 5;
/// Default first breaker cool-down (doubles while Vault stays down, up to 60 s).
pub const DEFAULT_BREAKER_COOLDOWN: Duration = Duration::from_secs(5);
/// Default bound on the start-up CA chain fetch.
pub const DEFAULT_PREFLIGHT_TIMEOUT: Duration = Duration::from_secs(10);
/// Tolerated clock difference between scepd and Vault when checking validity.
pub const CLOCK_SKEW_TOLERANCE_SECS: i64 = 300;

/// How recently issued certificates are remembered for retransmissions and
/// polls: entries and age.
const RECENT_CAPACITY: usize = 4096;
const RECENT_MAX_AGE: Duration = Duration::from_secs(3600);

/// How to reach and use one Vault PKI mount.
#[derive(Clone, Debug)]
pub struct VaultConfig {
    /// Issuer id named in audit events and referenced by profiles.
    pub id: String,
    /// `http(s)://host[:port]`.
    pub address: String,
    /// PKI secrets engine mount path (e.g. `pki`, `pki_int`).
    pub mount: String,
    /// The role signing device certificates.
    pub role: String,
    /// Vault Enterprise / OpenBao namespace (`X-Vault-Namespace`), if any.
    pub namespace: Option<String>,
    /// Authentication.
    pub auth: VaultAuth,
    /// PEM file of CA certificates trusted for `https` (required for https).
    pub ca_bundle: Option<PathBuf>,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Timeout of one HTTP exchange (connect included).
    pub request_timeout: Duration,
    /// Retries after the first attempt (see the retry policy in `client`).
    pub max_retries: u32,
    /// First retry delay; doubles each retry, ±25 % jitter.
    pub retry_backoff: Duration,
    /// Consecutive unavailable calls that open the circuit breaker (≥ 1).
    pub breaker_threshold: u32,
    /// First breaker cool-down.
    pub breaker_cooldown: Duration,
    /// Bound on the start-up CA chain fetch ([`VaultIssuer::connect`]).
    pub preflight_timeout: Duration,
}

impl VaultConfig {
    /// A configuration with every timeout and retry setting at its default.
    pub fn new(
        id: impl Into<String>,
        address: impl Into<String>,
        mount: impl Into<String>,
        role: impl Into<String>,
        auth: VaultAuth,
    ) -> Self {
        Self {
            id: id.into(),
            address: address.into(),
            mount: mount.into(),
            role: role.into(),
            namespace: None,
            auth,
            ca_bundle: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_retries: DEFAULT_MAX_RETRIES,
            retry_backoff: DEFAULT_RETRY_BACKOFF,
            breaker_threshold: DEFAULT_BREAKER_THRESHOLD,
            breaker_cooldown: DEFAULT_BREAKER_COOLDOWN,
            preflight_timeout: DEFAULT_PREFLIGHT_TIMEOUT,
        }
    }
}

/// A certificate issued recently, for retransmitted PKCSReqs and CertPoll.
#[derive(Clone, Debug)]
struct Recent {
    at: Instant,
    spki: Vec<u8>,
    certificate: Vec<u8>,
    chain: Vec<Vec<u8>>,
}

/// Bounded memory of recent issuance by (profile, transactionID).
#[derive(Debug, Default)]
struct RecentIssued {
    by_tx: HashMap<(String, String), Recent>,
    order: VecDeque<(String, String)>,
}

impl RecentIssued {
    fn get(&self, profile: &str, tx: &str) -> Option<&Recent> {
        self.by_tx.get(&(profile.to_string(), tx.to_string())).filter(|r| r.at.elapsed() < RECENT_MAX_AGE)
    }

    fn insert(&mut self, profile: &str, tx: &str, r: Recent) {
        let key = (profile.to_string(), tx.to_string());
        if self.by_tx.insert(key.clone(), r).is_none() {
            self.order.push_back(key);
        }
        while self.order.len() > RECENT_CAPACITY
            || self.order.front().and_then(|k| self.by_tx.get(k)).is_some_and(|r| r.at.elapsed() >= RECENT_MAX_AGE)
        {
            if let Some(old) = self.order.pop_front() {
                self.by_tx.remove(&old);
            }
        }
    }
}

struct Inner {
    id: String,
    mount: String,
    role: String,
    client: Client,
    auth: auth::Auth,
    chain: Vec<Vec<u8>>,
    recent: Mutex<RecentIssued>,
}

/// The Vault PKI issuer. Cheap to clone; all network work runs on the
/// `blocking` thread pool, so [`Issuer::handle`] never blocks an executor.
#[derive(Clone)]
pub struct VaultIssuer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for VaultIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultIssuer")
            .field("id", &self.inner.id)
            .field("mount", &self.inner.mount)
            .field("role", &self.inner.role)
            .finish_non_exhaustive()
    }
}

fn path_segment_ok(s: &str) -> bool {
    !s.is_empty()
        && s.split('/').all(|p| !p.is_empty() && p != "." && p != "..")
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'))
}

impl VaultIssuer {
    /// Validates `config`, authenticates, and fetches the CA chain within
    /// `config.preflight_timeout` (start-up preflight). Blocking: call it at
    /// start-up or from a blocking context.
    ///
    /// # Errors
    /// [`IssuerError::Config`] for an invalid setting or unreadable
    /// credentials, [`IssuerError::Unavailable`] (naming the issuer) when the
    /// chain cannot be fetched in time.
    pub fn connect(config: VaultConfig) -> Result<Self, IssuerError> {
        let id = config.id.clone();
        let cfg_err = |why: String| IssuerError::Config(format!("issuer {id}: {why}"));
        if !path_segment_ok(&config.mount) {
            return Err(cfg_err(format!("mount {:?}: not a Vault mount path", config.mount)));
        }
        if !path_segment_ok(&config.role) || config.role.contains('/') {
            return Err(cfg_err(format!("role {:?}: not a Vault role name", config.role)));
        }
        if config.breaker_threshold == 0 {
            return Err(cfg_err("breaker_threshold must be at least 1".into()));
        }
        if let VaultAuth::AppRole { mount, .. } = &config.auth
            && !path_segment_ok(mount)
        {
            return Err(cfg_err(format!("approle mount {mount:?}: not a Vault mount path")));
        }
        let roots = match &config.ca_bundle {
            None => Vec::new(),
            Some(path) => {
                let text = crate::config_file::read_to_string(path).map_err(|e| IssuerError::io(path, e))?;
                let certs = pem::certificates(&text).map_err(|e| IssuerError::invalid_file(path, e.to_string()))?;
                if certs.is_empty() {
                    return Err(IssuerError::invalid_file(path, "no CERTIFICATE block found"));
                }
                certs.into_iter().map(rustls::pki_types::CertificateDer::from).collect()
            }
        };
        let endpoint = http::Endpoint::parse(&config.address, &roots).map_err(|e| cfg_err(format!("address: {e}")))?;
        let auth = auth::Auth::new(config.auth.clone()).map_err(|e| cfg_err(format!("credentials: {e}")))?;
        let settings = ClientSettings {
            connect_timeout: config.connect_timeout.min(config.preflight_timeout),
            request_timeout: config.preflight_timeout,
            max_retries: 0,
            backoff: config.retry_backoff,
            breaker_threshold: config.breaker_threshold,
            breaker_cooldown: config.breaker_cooldown,
            namespace: config.namespace.clone(),
        };
        // Preflight with its own bound and no retries.
        let preflight = Client::new(endpoint.clone(), settings.clone());
        let unavailable = |why: String| IssuerError::Unavailable(format!("issuer {id} ({}): {why}", config.address));
        let chain = fetch_chain(&preflight, &config.mount).map_err(|e| unavailable(e.to_string()))?;
        let token_check = auth.token(&preflight).map_err(|e| unavailable(format!("authentication failed: {e}")))?;
        drop(token_check);
        let first = chain.first().ok_or_else(|| unavailable("empty CA chain".into()))?;
        let ca = CertificateRef::parse(first).map_err(|e| unavailable(format!("CA certificate: {e}")))?;
        tracing::info!(
            issuer = %id,
            address = %config.address,
            mount = %config.mount,
            role = %config.role,
            ca = %scep_engine::x509::name_to_string(ca.subject),
            chain_len = chain.len(),
            "Vault issuer ready"
        );
        let client = Client::new(
            endpoint,
            ClientSettings {
                connect_timeout: config.connect_timeout,
                request_timeout: config.request_timeout,
                max_retries: config.max_retries,
                ..settings
            },
        );
        // Carry the token learned in preflight (an AppRole login) over.
        Ok(Self {
            inner: Arc::new(Inner {
                id: config.id,
                mount: config.mount,
                role: config.role,
                client,
                auth,
                chain,
                recent: Mutex::new(RecentIssued::default()),
            }),
        })
    }

    /// Answers one request synchronously (what [`Issuer::handle`] runs on
    /// the blocking pool).
    pub fn handle_blocking(&self, request: &IssueRequest, now: UnixTime) -> IssueOutcome {
        let out = self.inner.handle(request, now);
        if let IssueOutcome::Rejected { reason, .. } = &out {
            tracing::warn!(issuer = %self.inner.id, reason = %reason, "Vault issuer refused a request");
        }
        out
    }
}

/// `GET /v1/<mount>/cert/ca_chain` (unauthenticated): issuing CA first.
fn fetch_chain(client: &Client, mount: &str) -> Result<Vec<Vec<u8>>, CallError> {
    let v = client.call("GET", &format!("/v1/{mount}/cert/ca_chain"), None, None, Idempotence::Idempotent)?.json()?;
    let text = ["/data/ca_chain", "/data/certificate"]
        .iter()
        .filter_map(|p| v.pointer(p).and_then(Value::as_str))
        .find(|s| !s.trim().is_empty())
        .ok_or_else(|| CallError::Invalid(format!("mount {mount} has no CA (generate or import one)")))?;
    let chain = pem::certificates(text).map_err(|e| CallError::Invalid(format!("CA chain: {e}")))?;
    if chain.is_empty() {
        return Err(CallError::Invalid(format!("mount {mount}: empty CA chain")));
    }
    for c in &chain {
        CertificateRef::parse(c).map_err(|e| CallError::Invalid(format!("CA chain: not X.509: {e}")))?;
    }
    Ok(chain)
}

impl Issuer for VaultIssuer {
    fn id(&self) -> &str {
        &self.inner.id
    }

    fn ca_chain(&self) -> Vec<Vec<u8>> {
        self.inner.chain.clone()
    }

    fn handle<'a>(&'a self, request: &'a IssueRequest, now: UnixTime) -> BoxFuture<'a, IssueOutcome> {
        let this = self.clone();
        let request = request.clone();
        Box::pin(blocking::unblock(move || this.handle_blocking(&request, now)))
    }

    /// Revocation through Vault's API: `GET /v1/<mount>/cert/<serial>` (404:
    /// [`IssuerError::UnknownSerial`]; a revocation_time:
    /// [`IssuerError::AlreadyRevoked`], as Vault itself answers a second
    /// revocation with success), then `POST /v1/<mount>/revoke`. Vault's
    /// revoke endpoint takes no reason: its CRL and OCSP answers carry none,
    /// the reason is kept in scepd's audit event only.
    fn revoke<'a>(
        &'a self,
        serial: &'a [u8],
        reason: RevocationReason,
        now: UnixTime,
    ) -> BoxFuture<'a, Result<Revocation, IssuerError>> {
        let inner = Arc::clone(&self.inner);
        // COPY: the serial crosses onto the blocking pool, which needs 'static.
        let serial = serial.to_vec();
        Box::pin(blocking::unblock(move || inner.revoke(&serial, reason, now)))
    }
}

/// Colon-separated lowercase hex, as Vault names serials.
fn vault_serial(serial: &[u8]) -> String {
    trim_serial(serial).iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// The EKU OIDs (contents) of a certificate; empty without the extension.
fn certificate_ekus(cert: &CertificateRef<'_>) -> Result<Vec<Vec<u8>>, String> {
    let Some((_, value)) = cert.extension(oid::EXT_KEY_USAGE).map_err(|e| e.to_string())? else {
        return Ok(Vec::new());
    };
    let seq = parse_single(value).and_then(|t| t.expect_tag(tag::SEQUENCE)).map_err(|e| e.to_string())?;
    let mut r = seq.reader();
    let mut out = Vec::new();
    while !r.is_empty() {
        out.push(r.expect(tag::OID).map_err(|e| e.to_string())?.contents.to_vec());
    }
    Ok(out)
}

fn same_set(a: &[Vec<u8>], b: &[Vec<u8>]) -> bool {
    a.iter().all(|x| b.contains(x)) && b.iter().all(|x| a.contains(x))
}

/// Dotted form of OID contents (X.690 §8.19), for messages.
fn dotted(oid: &[u8]) -> String {
    let mut arcs = Vec::new();
    let mut v: u64 = 0;
    for &b in oid {
        v = (v << 7) | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            if arcs.is_empty() {
                let first = (v / 40).min(2);
                arcs.push(first);
                arcs.push(v - first * 40);
            } else {
                arcs.push(v);
            }
            v = 0;
        }
    }
    arcs.iter().map(u64::to_string).collect::<Vec<_>>().join(".")
}

impl Inner {
    fn reject(&self, fail_info: FailInfo, why: impl std::fmt::Display) -> IssueOutcome {
        IssueOutcome::Rejected { fail_info, reason: format!("issuer {}: {why}", self.id) }
    }

    fn handle(&self, request: &IssueRequest, now: UnixTime) -> IssueOutcome {
        match request {
            IssueRequest::Enroll(e) => self.enroll(e, now),
            IssueRequest::Renew(r) => self.renew(r, now),
            IssueRequest::Poll(p) => self.poll(p),
            IssueRequest::GetCert(l) => self.get_cert(l),
            IssueRequest::GetCrl(l) => self.get_crl(l),
            _ => self.reject(FailInfo::BAD_REQUEST, "request kind not supported by the Vault issuer"),
        }
    }

    /// An authenticated call; on 403 the token is dropped and the call made
    /// once more with a fresh one (rotated file, new AppRole login).
    fn call(&self, method: &str, path: &str, body: Option<&Value>, idem: Idempotence) -> Result<Value, CallError> {
        let token = self.auth.token(&self.client)?;
        match self.client.call(method, path, Some(&token), body, idem) {
            Err(CallError::Refused { status: 403, .. }) if self.auth.invalidate() => {
                let token = self.auth.token(&self.client)?;
                self.client.call(method, path, Some(&token), body, idem)?.json()
            }
            other => other?.json(),
        }
    }

    fn call_error(&self, e: &CallError) -> IssueOutcome {
        self.reject(FailInfo::BAD_REQUEST, e)
    }

    fn enroll(&self, e: &EnrollRequest, now: UnixTime) -> IssueOutcome {
        let recent =
            self.recent.lock().unwrap_or_else(PoisonError::into_inner).get(&e.profile, &e.transaction_id).cloned();
        if let Some(r) = recent {
            // RFC 8894 §3.3.1: a retransmitted PKCSReq gets the same answer.
            return if r.spki == e.spki_der {
                IssueOutcome::Issued { certificate: r.certificate, chain: r.chain }
            } else {
                self.reject(
                    FailInfo::BAD_REQUEST,
                    format!("transactionID {} was already used for a different request", e.transaction_id),
                )
            };
        }
        let body = match self.sign_body(e) {
            Ok(b) => b,
            Err(why) => return self.reject(FailInfo::BAD_REQUEST, why),
        };
        let path = format!("/v1/{}/sign/{}", self.mount, self.role);
        let v = match self.call("POST", &path, Some(&body), Idempotence::NotIdempotent) {
            Ok(v) => v,
            Err(err) => return self.call_error(&err),
        };
        let b64 = |p: &str| -> Option<Vec<u8>> {
            v.pointer(p).and_then(Value::as_str).and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
        };
        let Some(certificate) = b64("/data/certificate") else {
            return self.reject(FailInfo::BAD_REQUEST, "unexpected Vault answer: no data.certificate");
        };
        let serial = v.pointer("/data/serial_number").and_then(Value::as_str).unwrap_or("?").to_string();
        let chain: Vec<Vec<u8>> = match v.pointer("/data/ca_chain").and_then(Value::as_array) {
            Some(list) if !list.is_empty() => list
                .iter()
                .filter_map(|c| c.as_str().and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok()))
                .collect(),
            _ => b64("/data/issuing_ca").map_or_else(|| self.chain.clone(), |c| vec![c]),
        };
        if let Err(why) = self.check_issued(&certificate, e, now) {
            self.revoke_quietly(&serial, &why);
            return self.reject(FailInfo::BAD_REQUEST, format!("certificate {serial} revoked at once: {why}"));
        }
        tracing::info!(issuer = %self.id, serial = %serial, tx = %e.transaction_id, profile = %e.profile, "certificate issued by Vault");
        self.recent.lock().unwrap_or_else(PoisonError::into_inner).insert(
            &e.profile,
            &e.transaction_id,
            Recent {
                at: Instant::now(),
                spki: e.spki_der.clone(),
                certificate: certificate.clone(),
                chain: chain.clone(),
            },
        );
        IssueOutcome::Issued { certificate, chain }
    }

    /// The `sign` request body for an authorised CSR.
    fn sign_body(&self, e: &EnrollRequest) -> Result<Value, String> {
        if e.csr_der.is_empty() {
            return Err("no CSR in the request (the Vault issuer signs the device's PKCS#10)".into());
        }
        if e.policy.validity_secs <= 0 {
            return Err(format!("validity {}s is not positive", e.policy.validity_secs));
        }
        if e.sid_extension.is_some() {
            // Refused rather than dropped: the profile asked for it to be carried.
            return Err("the profile trusts the CSR's SID extension (1.3.6.1.4.1.311.25.2), which Vault's sign API \
                        cannot add; turn trust_requested_sid off for this profile or use the local CA"
                .into());
        }
        let cn = name_attribute_strings(&e.subject_der, oid::COMMON_NAME)
            .map_err(|err| format!("subject is not a valid Name: {err}"))?
            .into_iter()
            .next();
        let (mut alt, mut ips, mut uris, mut others) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for san in &e.subject_alt_names {
            match san {
                SubjectAltName::Dns(s) | SubjectAltName::Email(s) => alt.push(s.clone()),
                SubjectAltName::Uri(s) => uris.push(s.clone()),
                SubjectAltName::Ip(b) => match <[u8; 4]>::try_from(b.as_slice()) {
                    Ok(v4) => ips.push(std::net::Ipv4Addr::from(v4).to_string()),
                    Err(_) => match <[u8; 16]>::try_from(b.as_slice()) {
                        Ok(v6) => ips.push(std::net::Ipv6Addr::from(v6).to_string()),
                        Err(_) => return Err(format!("iPAddress SAN of {} octets", b.len())),
                    },
                },
                SubjectAltName::Upn(s) => others.push(format!("1.3.6.1.4.1.311.20.2.3;UTF8:{s}")),
                other => return Err(format!("SAN {other} cannot be expressed in a Vault sign request")),
            }
        }
        if alt.iter().chain(&uris).chain(&others).any(|s| s.contains(',')) {
            return Err("a SAN contains ',' (Vault's list separator)".into());
        }
        let mut body = json!({
            "csr": pem::encode("CERTIFICATE REQUEST", &e.csr_der),
            "ttl": format!("{}s", e.policy.validity_secs),
            "format": "der",
            "exclude_cn_from_sans": true,
        });
        let set = |body: &mut Value, key: &str, list: Vec<String>| {
            if !list.is_empty() {
                body[key] = Value::String(list.join(","));
            }
        };
        if let Some(cn) = cn {
            body["common_name"] = Value::String(cn);
        }
        set(&mut body, "alt_names", alt);
        set(&mut body, "ip_sans", ips);
        set(&mut body, "uri_sans", uris);
        set(&mut body, "other_sans", others);
        Ok(body)
    }

    /// The issued certificate matches what the profile authorised.
    fn check_issued(&self, der: &[u8], e: &EnrollRequest, now: UnixTime) -> Result<(), String> {
        let cert =
            CertificateRef::parse(der).map_err(|err| format!("Vault returned an unreadable certificate: {err}"))?;
        if cert.spki.raw != e.spki_der.as_slice() {
            return Err("Vault certified another public key than the CSR's".into());
        }
        let ekus = certificate_ekus(&cert)?;
        if !same_set(&ekus, &e.policy.ekus) {
            let show = |l: &[Vec<u8>]| l.iter().map(|o| dotted(o)).collect::<Vec<_>>().join(",");
            return Err(format!(
                "role {} issues EKUs [{}] but the profile requires [{}]: set the role's ext_key_usage / \
                 ext_key_usage_oids to match, or use another role",
                self.role,
                show(&ekus),
                show(&e.policy.ekus)
            ));
        }
        let sans = match cert.extension(oid::SUBJECT_ALT_NAME).map_err(|err| err.to_string())? {
            Some((_, v)) => parse_subject_alt_names(v).map_err(|err| err.to_string())?,
            None => Vec::new(),
        };
        let same_sans = sans.iter().all(|s| e.subject_alt_names.contains(s))
            && e.subject_alt_names.iter().all(|s| sans.contains(s));
        if !same_sans {
            let show = |l: &[SubjectAltName]| l.iter().map(ToString::to_string).collect::<Vec<_>>().join(",");
            return Err(format!(
                "role {} issued SANs [{}] but the request authorised [{}]: set the role's use_csr_sans = false \
                 (and allowed_other_sans / allowed_uri_sans for UPN and URI names)",
                self.role,
                show(&sans),
                show(&e.subject_alt_names)
            ));
        }
        let limit = now.plus(e.policy.validity_secs + CLOCK_SKEW_TOLERANCE_SECS);
        if cert.not_after > limit {
            return Err(format!(
                "notAfter {} is later than the profile's validity allows ({}s)",
                cert.not_after.to_rfc3339(),
                e.policy.validity_secs
            ));
        }
        Ok(())
    }

    /// See [`Issuer::revoke`] on [`VaultIssuer`].
    fn revoke(&self, serial: &[u8], reason: RevocationReason, now: UnixTime) -> Result<Revocation, IssuerError> {
        let hex = serial_hex(serial);
        let unavailable = |e: CallError| IssuerError::Unavailable(format!("issuer {}: {e}", self.id));
        match self.lookup(serial).map_err(unavailable)? {
            None => return Err(IssuerError::UnknownSerial(hex)),
            Some((_, revoked)) if revoked != 0 => return Err(IssuerError::AlreadyRevoked(hex)),
            Some(_) => {}
        }
        let path = format!("/v1/{}/revoke", self.mount);
        let answer = self
            .call("POST", &path, Some(&json!({ "serial_number": vault_serial(serial) })), Idempotence::Idempotent)
            .map_err(unavailable)?;
        let revoked_at = answer.pointer("/data/revocation_time").and_then(Value::as_i64).map_or(now, UnixTime);
        tracing::info!(issuer = %self.id, serial = %hex, reason = %reason, "certificate revoked through Vault");
        Ok(Revocation { serial_hex: hex, revoked_at, reason, revocation_version: 0 })
    }

    /// Best-effort revocation of a certificate we refuse to deliver.
    fn revoke_quietly(&self, serial: &str, why: &str) {
        if serial == "?" {
            return;
        }
        let path = format!("/v1/{}/revoke", self.mount);
        match self.call("POST", &path, Some(&json!({ "serial_number": serial })), Idempotence::Idempotent) {
            Ok(_) => {
                tracing::warn!(issuer = %self.id, serial, why, "revoked a certificate Vault issued against the profile")
            }
            Err(e) => {
                tracing::error!(issuer = %self.id, serial, why, error = %e, "cannot revoke a certificate Vault issued against the profile")
            }
        }
    }

    /// `GET /v1/<mount>/cert/<serial>`: the certificate and its revocation
    /// time (0 = not revoked); `None` when Vault does not know it.
    fn lookup(&self, serial: &[u8]) -> Result<Option<(Vec<u8>, i64)>, CallError> {
        let path = format!("/v1/{}/cert/{}", self.mount, vault_serial(serial));
        let v = match self.call("GET", &path, None, Idempotence::Idempotent) {
            Ok(v) => v,
            Err(CallError::Refused { status: 404, .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let text = v.pointer("/data/certificate").and_then(Value::as_str).unwrap_or_default();
        // Some versions answer 200 with an empty certificate for unknown serials.
        if text.trim().is_empty() {
            return Ok(None);
        }
        let der = pem::certificates(text)
            .ok()
            .and_then(|c| c.into_iter().next())
            .ok_or_else(|| CallError::Invalid("data.certificate is not a PEM certificate".into()))?;
        let revoked = v.pointer("/data/revocation_time").and_then(Value::as_i64).unwrap_or(0);
        Ok(Some((der, revoked)))
    }

    fn renew(&self, r: &RenewRequest, now: UnixTime) -> IssueOutcome {
        let hex = vault_serial(&r.old_serial);
        let (der, revoked) = match self.lookup(&r.old_serial) {
            Ok(Some(found)) => found,
            Ok(None) => return self.reject(FailInfo::BAD_CERT_ID, format!("Vault knows no certificate {hex}")),
            Err(e) => return self.call_error(&e),
        };
        if revoked != 0 {
            return self.reject(FailInfo::BAD_CERT_ID, format!("certificate {hex} is revoked"));
        }
        match CertificateRef::parse(&der) {
            Ok(c) if c.issuer != r.old_issuer.as_slice() => {
                self.reject(FailInfo::BAD_CERT_ID, format!("certificate {hex} has another issuer"))
            }
            Ok(c) if c.not_after < now => {
                self.reject(FailInfo::BAD_CERT_ID, format!("certificate {hex} expired at {}", c.not_after.to_rfc3339()))
            }
            // Vault's record of a certificate says nothing of the SCEP profile it
            // was issued on nor whether it was already renewed, so the two rules
            // a renewal must meet cannot be checked: refuse rather than allow.
            Ok(_) => IssueOutcome::RejectedAs {
                fail_info: FailInfo::BAD_CERT_ID,
                label: "renewal_unverifiable",
                reason: format!(
                    "issuer {}: certificate {hex} cannot be renewed by certificate: Vault does not record the \
                     profile a certificate was issued on nor whether it was renewed; enrol with a challenge \
                     (or set renewal = false on the profile)",
                    self.id
                ),
            },
            Err(e) => self.reject(FailInfo::BAD_REQUEST, format!("Vault returned an unreadable certificate: {e}")),
        }
    }

    /// Vault signs synchronously, so nothing is ever pending: a poll for a
    /// request answered recently gets that certificate again, any other is
    /// badCertId (RFC 8894 §3.3.2).
    fn poll(&self, p: &PollRequest) -> IssueOutcome {
        let recent =
            self.recent.lock().unwrap_or_else(PoisonError::into_inner).get(&p.profile, &p.transaction_id).cloned();
        match recent {
            Some(r) => IssueOutcome::Issued { certificate: r.certificate, chain: r.chain },
            None => self.reject(
                FailInfo::BAD_CERT_ID,
                format!("no pending request for transaction {} (Vault signs synchronously)", p.transaction_id),
            ),
        }
    }

    fn get_cert(&self, l: &CertLookup) -> IssueOutcome {
        let hex = vault_serial(&l.serial);
        match self.lookup(&l.serial) {
            Ok(Some((der, _))) => match CertificateRef::parse(&der) {
                Ok(c) if c.issuer == l.issuer_der.as_slice() => {
                    IssueOutcome::Issued { certificate: der.clone(), chain: self.chain.clone() }
                }
                Ok(_) => self.reject(FailInfo::BAD_CERT_ID, format!("certificate {hex} has another issuer")),
                Err(e) => self.reject(FailInfo::BAD_REQUEST, format!("Vault returned an unreadable certificate: {e}")),
            },
            Ok(None) => self.reject(FailInfo::BAD_CERT_ID, format!("Vault knows no certificate {hex}")),
            Err(e) => self.call_error(&e),
        }
    }

    fn get_crl(&self, l: &CertLookup) -> IssueOutcome {
        let issued_here = self
            .chain
            .first()
            .and_then(|c| CertificateRef::parse(c).ok())
            .is_some_and(|c| c.subject == l.issuer_der.as_slice());
        if !issued_here {
            return self.reject(FailInfo::BAD_CERT_ID, "GetCRL for another CA");
        }
        let path = format!("/v1/{}/crl", self.mount);
        match self.client.call("GET", &path, None, None, Idempotence::Idempotent) {
            Ok(reply) if parse_single(&reply.body).is_ok() => IssueOutcome::Crl(reply.body),
            Ok(_) => self.reject(FailInfo::BAD_REQUEST, "unexpected Vault answer: the CRL is not DER"),
            Err(e) => self.call_error(&e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_and_oids_format_like_vault() {
        assert_eq!(vault_serial(&[0, 0x4b, 0x0d, 0xf1]), "4b:0d:f1");
        assert_eq!(dotted(oid::KP_CLIENT_AUTH), "1.3.6.1.5.5.7.3.2");
        assert_eq!(dotted(oid::MS_UPN), "1.3.6.1.4.1.311.20.2.3");
    }

    #[test]
    fn mount_and_role_names() {
        for ok in ["pki", "pki_int", "team/pki", "pki-2"] {
            assert!(path_segment_ok(ok), "{ok}");
        }
        for bad in ["", "/pki", "pki/", "a//b", "..", "p ki", "pki?x", "pki/../sys"] {
            assert!(!path_segment_ok(bad), "{bad}");
        }
    }

    #[test]
    fn recent_cache_is_bounded() {
        let mut c = RecentIssued::default();
        for i in 0..RECENT_CAPACITY + 10 {
            let r = Recent { at: Instant::now(), spki: vec![], certificate: vec![i as u8], chain: vec![] };
            c.insert("p", &i.to_string(), r);
        }
        assert_eq!(c.by_tx.len(), RECENT_CAPACITY);
        assert!(c.get("p", "0").is_none());
        assert!(c.get("p", &(RECENT_CAPACITY + 9).to_string()).is_some());
    }
}
