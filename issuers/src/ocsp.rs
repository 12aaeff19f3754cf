//! The local CA's OCSP responder (RFC 6960 with the RFC 5019 lightweight
//! profile).
//!
//! [`OcspResponder::respond`] answers one DER `OCSPRequest`: `good`,
//! `revoked` (time and reason) or `unknown` per CertID, looked up in the
//! local CA's database; `malformedRequest` for anything that does not parse
//! (which includes a request that is not DER and a critical extension other
//! than the nonce, [`OcspRequestRef::parse`]), `unauthorized` for a CertID naming another issuer (RFC 5019 §2.2.3) or a
//! hash algorithm scepd does not compute. Nonces are echoed (RFC 8954).
//!
//! Answers are signed by a delegated responder certificate the CA issues
//! itself ([`ResponderSigning::Delegated`], the default: id-kp-OCSPSigning,
//! id-pkix-ocsp-nocheck, a two-day validity renewed when a day is left, the
//! key an in-memory P-256 key) or by the CA key ([`ResponderSigning::Ca`]).
//!
//! Nonce-less single-CertID answers (what RFC 5019 clients send, and what
//! HTTP caches can keep) are precomputed on first request and kept per
//! CertID; [`OcspResponder::cached`] serves them without touching the
//! database. Each is stamped with the CA's
//! [`LocalCa::revocation_version`] read before the database lookup, so a
//! revocation committed after that makes it stale at once: the next request
//! looks the certificate up again.
//!
//! Requests with a nonce (RFC 8954) must be signed one by one, but the
//! status need not be read each time: the status of every issued serial is
//! kept too, stamped the same way. [`OcspResponder::respond_from_memory`]
//! answers from those statuses and an already-issued responder key without
//! the database, so the transport can sign on its own thread rather than
//! hand the request to the blocking pool. Serials this CA never issued
//! (`unknown`) are not remembered: a certificate issued later must not be
//! answered `unknown` from memory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use scep_engine::crypto::{DigestAlg, EcPrivateKey, SigningKey};
use scep_engine::ocsp::{
    CertIdRef, CertStatus, OcspRequestRef, ResponseStatus, SingleResponse, encode_response_data, error_response,
    sign_response,
};
use scep_engine::time::UnixTime;
use scep_engine::x509::{CertificateRef, SubjectPublicKeyInfoRef};

use crate::crl::RevocationReason;
use crate::local::LocalCa;
use crate::local::store::CertStatus as StoredStatus;
use crate::x509_build::{Validity, common_name, random_serial, serial_hex};

/// How long an answer is valid (nextUpdate − thisUpdate): 4 hours.
pub const RESPONSE_VALIDITY_SECS: i64 = 4 * 3600;
/// A cached answer older than this is signed again: 1 hour.
pub const RESPONSE_REFRESH_SECS: i64 = 3600;
/// The delegated responder certificate's validity: 2 days.
pub const DELEGATED_VALIDITY_SECS: i64 = 2 * 86_400;
/// It is renewed once less than this is left: 1 day.
pub const DELEGATED_RENEW_SECS: i64 = 86_400;
/// Answers kept at most; the cache is emptied when full (unknown serials
/// must not grow it without bound).
pub const MAX_CACHED: usize = 65_536;

/// Of the responders of several local CAs, the one that answers the DER
/// OCSPRequest `request`: the one whose CA its first CertID names; with
/// none, the first (it answers `unauthorized`, or `malformedRequest` for a
/// request that does not parse). `None` when there is no responder.
pub fn responder_for<'a>(
    responders: impl IntoIterator<Item = &'a Arc<OcspResponder>> + Clone,
    request: &[u8],
) -> Option<&'a Arc<OcspResponder>> {
    let first = responders.clone().into_iter().next();
    // Parsed once here, not once per responder.
    let parsed = OcspRequestRef::parse(request).ok();
    let Some(id) = parsed.as_ref().and_then(|r| r.requests.first()) else { return first };
    responders.into_iter().find(|r| r.names_our_ca(id)).or(first)
}

/// Who signs the responder's answers (RFC 6960 §4.2.2.2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ResponderSigning {
    /// A delegated responder certificate issued by the CA (default): the CA
    /// key signs once every day instead of on every answer.
    #[default]
    Delegated,
    /// The CA key itself.
    Ca,
}

/// One answer: the DER `OCSPResponse` and what HTTP caching needs.
#[derive(Clone, Debug)]
pub struct OcspAnswer {
    /// The DER OCSPResponse (shared with the cache).
    pub der: Arc<[u8]>,
    /// The response status.
    pub status: ResponseStatus,
    /// For a successful answer: thisUpdate and nextUpdate of its responses
    /// (RFC 5019 §6.2 derives `Last-Modified` and `max-age` from them).
    pub validity: Option<(UnixTime, UnixTime)>,
    /// True when nothing in it is specific to the request (no nonce): it
    /// may be cached by HTTP caches.
    pub cacheable: bool,
}

impl OcspAnswer {
    fn error(status: ResponseStatus) -> Self {
        Self { der: error_response(status).into(), status, validity: None, cacheable: false }
    }

    /// The `malformedRequest` answer, for a request the transport could not
    /// even decode (e.g. a GET path that is not base64).
    pub fn malformed() -> Self {
        Self::error(ResponseStatus::MalformedRequest)
    }
}

/// The key and certificate answers are signed with.
struct ResponderKey {
    /// The delegated key, `None` when the CA key signs.
    key: Option<SigningKey>,
    /// The delegated certificate, `None` when the CA signs.
    certificate: Option<Vec<u8>>,
    /// SHA-1 of the signer's subjectPublicKey (ResponderID byKey).
    key_hash: Vec<u8>,
    not_after: UnixTime,
}

/// A remembered status of one serial this CA issued.
#[derive(Clone, Copy)]
struct KnownStatus {
    status: CertStatus,
    generation: u64,
}

struct CachedAnswer {
    answer: OcspAnswer,
    generation: u64,
    this_update: UnixTime,
    signer_not_after: UnixTime,
}

/// The issuer's hashes in each algorithm a CertID may use.
struct IssuerHashes {
    alg: DigestAlg,
    name: Vec<u8>,
    key: Vec<u8>,
}

/// The OCSP responder for one local CA. Cheap to share (`Arc`).
pub struct OcspResponder {
    ca: LocalCa,
    signing: ResponderSigning,
    hashes: Vec<IssuerHashes>,
    signer: Mutex<Option<Arc<ResponderKey>>>,
    cache: RwLock<HashMap<Vec<u8>, CachedAnswer>>,
    /// Status per serial (DER INTEGER contents), for nonce requests.
    statuses: RwLock<HashMap<Vec<u8>, KnownStatus>>,
}

impl std::fmt::Debug for OcspResponder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OcspResponder").field("ca", &self.ca).field("signing", &self.signing).finish_non_exhaustive()
    }
}

/// Why the responder cannot be set up.
#[derive(Debug)]
pub struct ResponderError(pub String);

impl std::fmt::Display for ResponderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ResponderError {}

impl OcspResponder {
    /// A responder answering for `ca`.
    ///
    /// # Errors
    /// When the CA certificate cannot be parsed (it was loaded, so never in practice).
    pub fn new(ca: LocalCa, signing: ResponderSigning) -> Result<Self, ResponderError> {
        let cert = CertificateRef::parse(ca.signer().certificate())
            .map_err(|e| ResponderError(format!("CA certificate: {e}")))?;
        let hashes = [DigestAlg::Sha1, DigestAlg::Sha256, DigestAlg::Sha384, DigestAlg::Sha512]
            .into_iter()
            .map(|alg| IssuerHashes { alg, name: alg.digest(cert.subject), key: alg.digest(cert.spki.key) })
            .collect();
        Ok(Self {
            ca,
            signing,
            hashes,
            signer: Mutex::new(None),
            cache: RwLock::new(HashMap::new()),
            statuses: RwLock::new(HashMap::new()),
        })
    }

    /// The CA this responder answers for.
    pub const fn ca(&self) -> &LocalCa {
        &self.ca
    }

    /// True when the CertID names this responder's CA (RFC 6960 §4.1.1:
    /// issuerNameHash and issuerKeyHash in the CertID's hash algorithm).
    fn names_our_ca(&self, id: &CertIdRef<'_>) -> bool {
        id.hash.is_some_and(|alg| {
            self.hashes.iter().any(|h| h.alg == alg && h.name == id.issuer_name_hash && h.key == id.issuer_key_hash)
        })
    }

    /// True when the first CertID of the DER OCSPRequest names this
    /// responder's CA: of several responders (one per local CA), the one to
    /// answer it. False for a request that does not parse.
    pub fn names_ca_of(&self, request_der: &[u8]) -> bool {
        OcspRequestRef::parse(request_der)
            .ok()
            .and_then(|r| r.requests.first().map(|id| self.names_our_ca(id)))
            .unwrap_or(false)
    }

    /// A precomputed answer for a nonce-less, single-CertID request, when
    /// one is fresh (same revocation generation, signed less than
    /// [`RESPONSE_REFRESH_SECS`] ago, signer still valid). Never touches the
    /// database; `None` means "call [`OcspResponder::respond`]".
    pub fn cached(&self, request_der: &[u8], now: UnixTime) -> Option<OcspAnswer> {
        self.cached_for(&OcspRequestRef::parse(request_der).ok()?, now)
    }

    /// [`OcspResponder::cached`] for a parsed request.
    fn cached_for(&self, request: &OcspRequestRef<'_>, now: UnixTime) -> Option<OcspAnswer> {
        if request.nonce.is_some() || request.requests.len() != 1 {
            return None;
        }
        let cache = self.cache.read().unwrap_or_else(PoisonError::into_inner);
        let hit = cache.get(request.requests[0].raw)?;
        let fresh = hit.generation == self.ca.revocation_version()
            && hit.this_update <= now
            && now < hit.this_update.plus(RESPONSE_REFRESH_SECS)
            && now < hit.signer_not_after.plus(-RESPONSE_VALIDITY_SECS);
        fresh.then(|| hit.answer.clone())
    }

    /// Answers one DER OCSPRequest. Blocks on the database for each CertID
    /// whose status is not remembered (run it on a blocking pool); never
    /// fails: errors are OCSP statuses.
    pub fn respond(&self, request_der: &[u8], now: UnixTime) -> OcspAnswer {
        self.answer(request_der, now, Source::Store).unwrap_or_else(|| OcspAnswer::error(ResponseStatus::InternalError))
    }

    /// Answers one DER OCSPRequest without the database, when everything it
    /// needs is in memory: a fresh precomputed answer, or the remembered
    /// status of every CertID and a responder key that needs no renewal.
    /// Costs one signature at most, so it may run on the caller's thread.
    /// `None` means "call [`OcspResponder::respond`] off the thread".
    pub fn respond_from_memory(&self, request_der: &[u8], now: UnixTime) -> Option<OcspAnswer> {
        self.answer(request_der, now, Source::Memory)
    }

    /// The one answering path; with [`Source::Memory`] it returns `None`
    /// instead of reading the database or issuing a responder certificate.
    fn answer(&self, request_der: &[u8], now: UnixTime, source: Source) -> Option<OcspAnswer> {
        let Ok(request) = OcspRequestRef::parse(request_der) else {
            return Some(OcspAnswer::error(ResponseStatus::MalformedRequest));
        };
        if let Some(hit) = self.cached_for(&request, now) {
            return Some(hit);
        }
        if !request.requests.iter().all(|id| self.names_our_ca(id)) {
            return Some(OcspAnswer::error(ResponseStatus::Unauthorized));
        }
        // Read before the lookups: a revocation committed after this makes
        // the answer (and the statuses read now) stale.
        let generation = self.ca.revocation_version();
        let mut statuses = Vec::with_capacity(request.requests.len());
        for id in &request.requests {
            if let Some(known) = self.known_status(id.serial, generation) {
                statuses.push(known);
                continue;
            }
            if source == Source::Memory {
                return None;
            }
            match self.ca.lookup(id.serial) {
                Ok(found) => {
                    let status = status_of(found.map(|c| c.status));
                    self.remember_status(id.serial, status, generation);
                    statuses.push(status);
                }
                Err(e) => {
                    tracing::warn!(issuer = %self.ca.id(), error = %e, "OCSP lookup failed");
                    return Some(OcspAnswer::error(ResponseStatus::TryLater));
                }
            }
        }
        let signer = match source {
            Source::Memory => self.current_signer(now)?,
            Source::Store => match self.signer(now) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(issuer = %self.ca.id(), error = %e, "OCSP responder cannot sign");
                    return Some(OcspAnswer::error(ResponseStatus::InternalError));
                }
            },
        };
        let next_update = now.plus(RESPONSE_VALIDITY_SECS).min(signer.not_after);
        let responses: Vec<SingleResponse<'_>> = request
            .requests
            .iter()
            .zip(&statuses)
            .map(|(id, &status)| SingleResponse { cert_id: id.raw, status, this_update: now, next_update })
            .collect();
        let data = encode_response_data(&signer.key_hash, now, &responses, request.nonce);
        let certs: Vec<&[u8]> = signer.certificate.iter().map(Vec::as_slice).collect();
        let key = signer.key.as_ref().unwrap_or_else(|| self.ca.signer().key());
        let der = match sign_response(key, &data, &certs) {
            Ok(der) => der,
            Err(e) => {
                tracing::error!(issuer = %self.ca.id(), error = %e, "OCSP signing failed");
                return Some(OcspAnswer::error(ResponseStatus::InternalError));
            }
        };
        let cacheable = request.nonce.is_none();
        let answer = OcspAnswer {
            der: der.into(),
            status: ResponseStatus::Successful,
            validity: Some((now, next_update)),
            cacheable,
        };
        if cacheable && request.requests.len() == 1 {
            let mut cache = self.cache.write().unwrap_or_else(PoisonError::into_inner);
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
            cache.insert(
                request.requests[0].raw.to_vec(),
                CachedAnswer {
                    answer: answer.clone(),
                    generation,
                    this_update: now,
                    signer_not_after: signer.not_after,
                },
            );
        }
        Some(answer)
    }

    /// The remembered status of `serial`, when it was read at `generation`.
    fn known_status(&self, serial: &[u8], generation: u64) -> Option<CertStatus> {
        let statuses = self.statuses.read().unwrap_or_else(PoisonError::into_inner);
        statuses.get(serial).filter(|k| k.generation == generation).map(|k| k.status)
    }

    /// Remembers the status of a serial this CA issued (never `unknown`).
    fn remember_status(&self, serial: &[u8], status: CertStatus, generation: u64) {
        if status == CertStatus::Unknown {
            return;
        }
        let mut statuses = self.statuses.write().unwrap_or_else(PoisonError::into_inner);
        if statuses.len() >= MAX_CACHED {
            statuses.clear();
        }
        statuses.insert(serial.to_vec(), KnownStatus { status, generation });
    }

    /// [`OcspResponder::respond`] on the `blocking` pool (any runtime).
    pub fn respond_off_thread(
        self: &Arc<Self>,
        request_der: Vec<u8>,
        now: UnixTime,
    ) -> impl Future<Output = OcspAnswer> + Send + 'static {
        let me = Arc::clone(self);
        blocking::unblock(move || me.respond(&request_der, now))
    }

    /// The CA's [`LocalCa::published_crl`] on the `blocking` pool (it may
    /// re-sign, which reads the database).
    pub fn published_crl_off_thread(
        &self,
        now: UnixTime,
    ) -> impl Future<Output = Result<crate::PublishedCrl, crate::IssuerError>> + Send + 'static {
        let ca = self.ca.clone();
        blocking::unblock(move || ca.published_crl(now))
    }

    /// The signing key when one is ready and needs no renewal at `now`.
    fn current_signer(&self, now: UnixTime) -> Option<Arc<ResponderKey>> {
        let slot = self.signer.lock().unwrap_or_else(PoisonError::into_inner);
        slot.as_ref().filter(|s| now < s.not_after.plus(-DELEGATED_RENEW_SECS)).map(Arc::clone)
    }

    /// The signing key, issuing (or renewing) the delegated certificate when needed.
    fn signer(&self, now: UnixTime) -> Result<Arc<ResponderKey>, ResponderError> {
        let mut slot = self.signer.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(s) = slot.as_ref()
            && now < s.not_after.plus(-DELEGATED_RENEW_SECS)
        {
            return Ok(Arc::clone(s));
        }
        let ca = self.ca.signer();
        let fresh = match self.signing {
            ResponderSigning::Ca => {
                let spki = SubjectPublicKeyInfoRef::parse(ca.key().spki_der())
                    .map_err(|e| ResponderError(format!("CA key: {e}")))?;
                ResponderKey {
                    key: None,
                    certificate: None,
                    key_hash: DigestAlg::Sha1.digest(spki.key),
                    not_after: ca.not_after(),
                }
            }
            ResponderSigning::Delegated => {
                let (key, _) = EcPrivateKey::generate().map_err(|e| ResponderError(e.to_string()))?;
                let key = SigningKey::EcP256(key);
                let spki = SubjectPublicKeyInfoRef::parse(key.spki_der())
                    .map_err(|e| ResponderError(format!("responder key: {e}")))?;
                let key_hash = DigestAlg::Sha1.digest(spki.key);
                let validity = Validity { not_before: now.plus(-300), not_after: now.plus(DELEGATED_VALIDITY_SECS) };
                let serial = random_serial(&scep_engine::crypto::SystemRandom);
                let cert = ca
                    .issue_ocsp_responder(&common_name("scepd OCSP responder"), key.spki_der(), &serial, validity)
                    .map_err(|e| ResponderError(format!("cannot issue the OCSP responder certificate: {e}")))?;
                let not_after = CertificateRef::parse(&cert).map_err(|e| ResponderError(e.to_string()))?.not_after;
                tracing::info!(
                    issuer = %self.ca.id(),
                    serial = %serial_hex(&serial),
                    not_after = %not_after.to_rfc3339(),
                    "issued the delegated OCSP responder certificate"
                );
                ResponderKey { key: Some(key), certificate: Some(cert), key_hash, not_after }
            }
        };
        let fresh = Arc::new(fresh);
        *slot = Some(Arc::clone(&fresh));
        Ok(fresh)
    }
}

/// Where [`OcspResponder::answer`] may read statuses from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Source {
    /// The database when memory does not have it (blocking).
    Store,
    /// Memory only: give up rather than block.
    Memory,
}

/// The OCSP status of a stored record (`None`: never issued here).
fn status_of(found: Option<StoredStatus>) -> CertStatus {
    match found {
        None => CertStatus::Unknown,
        Some(StoredStatus::Valid) => CertStatus::Good,
        Some(StoredStatus::Revoked { at, reason }) => CertStatus::Revoked {
            at,
            // As in the CRL (RFC 5280 §5.3.1): unspecified is an absent reason.
            reason: (reason != RevocationReason::Unspecified).then_some(reason.code()),
        },
    }
}
