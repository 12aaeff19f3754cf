//! The built-in local CA (issuer id `iss-local`).
//!
//! [`LocalCa`] signs certificates with a CA key held on disk and records every
//! certificate in its certificate index ([`index`]: an embedded SQLite
//! database in the data directory ([`store`]), or the shared PostgreSQL
//! store of several nodes) before answering. It serves enrolment, renewal, polling,
//! GetCert and GetCRL, and offers [`LocalCa::revoke`] to the admin plane.
//! [`bootstrap`] creates a CA and an RA in an empty data directory.
//!
//! All database and signing work runs on the `blocking` thread pool, so
//! [`crate::Issuer::handle`] never blocks the async executor, whichever runtime
//! drives it.

pub mod bootstrap;
pub mod index;
pub mod store;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use scep_engine::FailInfo;
use scep_engine::crypto::provider::PrivateKey;
use scep_engine::crypto::{RandomSource, SigningKey, SystemRandom};
use scep_engine::issue::{
    Authorization, CertLookup, EnrollRequest, IssueOutcome, IssueRequest, PollRequest, RenewRequest,
};
use scep_engine::pem;
use scep_engine::time::UnixTime;
use scep_engine::x509::{CertificateRef, name_to_string};

use crate::crl::{CrlParams, RevocationReason, build_crl};
use crate::error::IssuerError;
use crate::x509_build::{BuildError, CaSigner, EndEntityParams, random_serial, serial_hex};
use crate::{BoxFuture, Issuer};
use futures_lite::future::block_on;
use index::CertificateIndex;
use store::{CertStatus, CertificateFilter, InventorySummary, NewCertificate, Recorded, StoreError, StoredCertificate};

/// The conventional id of the local CA issuer.
pub const LOCAL_ISSUER_ID: &str = "iss-local";

/// Default CRL validity (nextUpdate − thisUpdate): 7 days.
pub const DEFAULT_CRL_VALIDITY_SECS: i64 = 7 * 86_400;

/// Default age after which the CRL is re-signed: 1 day.
pub const DEFAULT_CRL_MAX_AGE_SECS: i64 = 86_400;

/// How many serials are drawn before giving up on a free one (a collision of
/// 127-bit random serials means a broken random source, not bad luck).
const MAX_SERIAL_ATTEMPTS: usize = 4;

/// How to open a [`LocalCa`].
#[derive(Clone, Debug)]
pub struct LocalCaConfig {
    /// Issuer id named in audit events (default [`LOCAL_ISSUER_ID`]).
    pub id: String,
    /// PEM file with the CA certificate first; further certificates in it
    /// are taken as the chain above the CA.
    pub ca_cert_pem: PathBuf,
    /// PEM file with the CA private key (PKCS#8, PKCS#1 RSA or SEC1 P-256).
    /// Not read when [`LocalCaConfig::ca_key`] is set.
    pub ca_key_pem: PathBuf,
    /// The CA key held elsewhere (a PKCS#11 token, [`crate::pkcs11`]): used
    /// instead of `ca_key_pem`.
    pub ca_key: Option<Arc<dyn PrivateKey>>,
    /// The CA key already read from `ca_key_pem` (unencrypted PKCS#8,
    /// PKCS#1 or SEC1 DER), e.g. an encrypted PKCS#8 file the service
    /// decrypted with its passphrase file: used instead of reading
    /// `ca_key_pem` (which errors still name).
    pub ca_key_der: Option<Vec<u8>>,
    /// Data directory; the SQLite index is `<data_dir>/<index_file>`.
    pub data_dir: PathBuf,
    /// The SQLite index's file name in the data directory (default
    /// [`store::DB_FILE`], `local-ca.sqlite`; a configured `[[issuer]] type =
    /// "local"` uses `local-ca-<id>.sqlite`). Unused with `shared_index`.
    pub index_file: String,
    /// The node's PostgreSQL pool (`[store] url`): the index lives in the
    /// shared store, every node sees every certificate and revocation.
    /// `None`: the SQLite file in the data directory.
    pub shared_index: Option<Arc<scep_store::postgres::Pool>>,
    /// Further PEM files of chain certificates (intermediates up to the
    /// root), appended in order after the CA certificate.
    pub chain_pem: Vec<PathBuf>,
    /// CRL validity, nextUpdate − thisUpdate, in seconds.
    pub crl_validity_secs: i64,
    /// The CRL is re-signed once it is this old (and at once after a revocation).
    pub crl_max_age_secs: i64,
    /// Source of serial numbers.
    pub random: Arc<dyn RandomSource>,
    /// The base URL relying parties reach scepd at (`[server] public_url`):
    /// when set, issued certificates name the CRL and OCSP URLs under it
    /// ([`pki_urls`]).
    pub public_url: Option<String>,
}

/// The path prefix under which the service publishes what relying parties
/// fetch: `/pki/<ca-id>/crl`, `/pki/<ca-id>/ca.crt` and `/pki/ocsp`.
pub const PKI_PREFIX: &str = "/pki/";

/// The URLs certificates of the CA `ca_id` name under `public_url` (without
/// a trailing slash): `<public_url>/pki/<ca-id>/crl` (DER CRL),
/// `<public_url>/pki/<ca-id>/ca.crt` (DER CA certificate) and
/// `<public_url>/pki/ocsp` (the OCSP responder, GET and POST).
pub fn pki_urls(public_url: &str, ca_id: &str) -> crate::x509_build::RelyingPartyUrls {
    let base = public_url.trim_end_matches('/');
    crate::x509_build::RelyingPartyUrls {
        crl: format!("{base}/pki/{ca_id}/crl"),
        ocsp: format!("{base}/pki/ocsp"),
        ca_issuers: format!("{base}/pki/{ca_id}/ca.crt"),
    }
}

/// The CRL as published: DER and the facts HTTP caching is derived from.
#[derive(Clone, Debug)]
pub struct PublishedCrl {
    /// The CRL DER (shared: every request serves the same bytes).
    pub der: Arc<[u8]>,
    /// cRLNumber.
    pub crl_number: u64,
    /// thisUpdate.
    pub this_update: UnixTime,
    /// nextUpdate.
    pub next_update: UnixTime,
    /// When it will be re-signed at the latest (thisUpdate + the maximum age).
    pub resign_by: UnixTime,
    /// False when the CRL this one replaced has the same thisUpdate (two CRLs
    /// signed within one second, e.g. around a revocation): its
    /// `Last-Modified` then does not tell the two apart, so it is a weak
    /// validator (RFC 9110 §8.8.2.2) and `If-Modified-Since` must not be
    /// answered `304` from it, or a client holding the older CRL would keep it.
    pub distinct_this_update: bool,
}

impl LocalCaConfig {
    /// A configuration with id `iss-local`, no extra chain, the default CRL
    /// timing and the system random source.
    pub fn new(ca_cert_pem: impl Into<PathBuf>, ca_key_pem: impl Into<PathBuf>, data_dir: impl Into<PathBuf>) -> Self {
        Self {
            id: LOCAL_ISSUER_ID.to_string(),
            ca_cert_pem: ca_cert_pem.into(),
            ca_key_pem: ca_key_pem.into(),
            ca_key: None,
            ca_key_der: None,
            data_dir: data_dir.into(),
            index_file: store::DB_FILE.to_string(),
            shared_index: None,
            chain_pem: Vec::new(),
            crl_validity_secs: DEFAULT_CRL_VALIDITY_SECS,
            crl_max_age_secs: DEFAULT_CRL_MAX_AGE_SECS,
            random: Arc::new(SystemRandom),
            public_url: None,
        }
    }
}

/// Reads a file as text, naming it in the error.
pub(crate) fn read_text(path: &Path) -> Result<String, IssuerError> {
    crate::config_file::read_to_string(path).map_err(|e| IssuerError::io(path, e))
}

/// All certificates of a PEM file (at least one).
pub(crate) fn read_certificates(path: &Path) -> Result<Vec<Vec<u8>>, IssuerError> {
    let certs = pem::certificates(&read_text(path)?).map_err(|e| IssuerError::invalid_file(path, e.to_string()))?;
    if certs.is_empty() {
        return Err(IssuerError::invalid_file(path, "no CERTIFICATE block found"));
    }
    Ok(certs)
}

/// The private key DER of a PEM file.
pub(crate) fn read_private_key(path: &Path) -> Result<Vec<u8>, IssuerError> {
    // Checked against its format (PKCS#8, PKCS#1 or SEC1); an encrypted CA key is refused with the reason.
    pem::private_key_der(&read_text(path)?, None).map_err(|e| IssuerError::invalid_file(path, e.to_string()))
}

/// Where [`load_ca`] finds the CA key.
pub(crate) enum CaKey<'a> {
    /// Read the key file (unencrypted).
    File,
    /// In a token.
    Token(&'a Arc<dyn PrivateKey>),
    /// Already read (DER).
    Der(&'a [u8]),
}

/// Loads and validates a CA: the key matches the certificate, the
/// certificate is a CA certificate and is valid at `now`. Returns the signer
/// and any further certificates found in the certificate file.
pub(crate) fn load_ca(
    cert_path: &Path,
    key_path: &Path,
    key: CaKey<'_>,
    now: UnixTime,
) -> Result<(CaSigner, Vec<Vec<u8>>), IssuerError> {
    let mut certs = read_certificates(cert_path)?.into_iter();
    let cert = certs.next().ok_or_else(|| IssuerError::invalid_file(cert_path, "no CERTIFICATE block found"))?;
    let unusable = |e: &dyn std::fmt::Display| {
        IssuerError::invalid_file(key_path, format!("not a usable CA key (RSA ≥ 2048 or P-256): {e}"))
    };
    let key = match key {
        CaKey::Token(k) => SigningKey::from_key(k.clone()).map_err(|e| {
            IssuerError::Config(format!("the CA key in the token is not usable (RSA ≥ 2048 or P-256): {e}"))
        })?,
        CaKey::Der(der) => SigningKey::from_der(der).map_err(|e| unusable(&e))?,
        CaKey::File => SigningKey::from_der(&read_private_key(key_path)?).map_err(|e| unusable(&e))?,
    };
    let signer = CaSigner::new(key, cert)
        .map_err(|e| IssuerError::invalid_file(cert_path, format!("{e} (key file {})", key_path.display())))?;
    signer.check_valid_at(now).map_err(|e| IssuerError::invalid_file(cert_path, e.to_string()))?;
    if !signer.can_sign_crls() {
        tracing::warn!(
            file = %cert_path.display(),
            "the CA certificate's keyUsage lacks cRLSign: its CRLs will be refused by strict relying parties"
        );
    }
    Ok((signer, certs.collect()))
}

/// An end-entity certificate the CA has built and signed but not yet
/// recorded: the output of [`LocalCa::sign_enrollment`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedCertificate {
    /// The serial number (big-endian, positive).
    pub serial: Vec<u8>,
    /// The certificate DER.
    pub der: Vec<u8>,
    /// Its notBefore.
    pub not_before: UnixTime,
    /// Its notAfter.
    pub not_after: UnixTime,
}

/// A committed revocation: what [`LocalCa::revoke`] and
/// [`crate::Issuer::revoke`] return.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revocation {
    /// The serial, lowercase hex.
    pub serial_hex: String,
    /// revocationDate.
    pub revoked_at: UnixTime,
    /// CRLReason.
    pub reason: RevocationReason,
    /// The issuer's revocation version after this revocation (see
    /// [`LocalCa::revocation_version`]); 0 for an issuer that keeps no
    /// revocation state of its own (Vault).
    pub revocation_version: u64,
}

/// The current CRL and when it was made.
struct CachedCrl {
    published: PublishedCrl,
    generation: u64,
}

struct Inner {
    id: String,
    ca: CaSigner,
    chain: Vec<Vec<u8>>,
    ca_id: String,
    store: CertificateIndex,
    random: Arc<dyn RandomSource>,
    crl: Mutex<Option<CachedCrl>>,
    /// Bumped after every committed revocation; a cached CRL of an older
    /// generation is stale. With a shared index it follows the database's
    /// counter (raised by this node's revocations and by the watcher thread
    /// for other nodes'); shared with that thread.
    revocations: Arc<AtomicU64>,
    crl_validity_secs: i64,
    crl_max_age_secs: i64,
}

/// The revocation counter of CA `ca_id` over the SQLite index at `path`,
/// shared by every [`LocalCa`] of this process open on that file and CA.
///
/// A reload opens `[[issuer]] type = "local"` CAs again while requests may
/// still hold the previous instance: a revocation through either must make
/// every cache over the file stale (the CRL, the OCSP responder's answers),
/// so both count on one counter. It lives as long as an instance holds it.
fn sqlite_revocation_counter(path: &Path, ca_id: &str) -> Arc<AtomicU64> {
    type Counters = Vec<(PathBuf, String, std::sync::Weak<AtomicU64>)>;
    static COUNTERS: Mutex<Counters> = Mutex::new(Vec::new());
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let mut counters = COUNTERS.lock().unwrap_or_else(PoisonError::into_inner);
    counters.retain(|(_, _, counter)| counter.strong_count() > 0);
    let open = counters.iter().find(|(p, id, _)| *p == path && id == ca_id).and_then(|(_, _, c)| c.upgrade());
    open.unwrap_or_else(|| {
        let counter = Arc::new(AtomicU64::new(0));
        counters.push((path, ca_id.to_string(), Arc::downgrade(&counter)));
        counter
    })
}

/// The built-in CA. Cheap to clone (shared state).
#[derive(Clone)]
pub struct LocalCa {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for LocalCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCa").field("id", &self.inner.id).field("ca", &self.inner.ca).finish_non_exhaustive()
    }
}

fn rejected(fail_info: FailInfo, reason: impl Into<String>) -> IssueOutcome {
    IssueOutcome::Rejected { fail_info, reason: reason.into() }
}

/// A renewal the records forbid: badCertId (RFC 8894 §3.3.2.2) under its own label.
fn refused(label: &'static str, reason: String) -> IssueOutcome {
    IssueOutcome::RejectedAs { fail_info: FailInfo::BAD_CERT_ID, label, reason }
}

/// A certificate index failure for the admin plane: [`IssuerError::Unavailable`]
/// when the shared database cannot be reached (answered 503), else
/// [`IssuerError::Database`].
fn index_error(e: StoreError) -> IssuerError {
    match e {
        StoreError::Unavailable(why) => IssuerError::Unavailable(format!("certificate index: {why}")),
        e => IssuerError::Database(e.to_string()),
    }
}

fn db_rejected(e: &StoreError) -> IssueOutcome {
    if let StoreError::Unavailable(why) = e {
        // The shared database is gone: 503, retry later (nothing was recorded).
        return IssueOutcome::Unavailable { reason: format!("local CA certificate index unavailable: {why}") };
    }
    // StoreError's Display says "database error: ..." for real failures.
    rejected(FailInfo::BAD_REQUEST, format!("local CA database error: {e}"))
}

impl LocalCa {
    /// Opens the CA at the current time (see [`LocalCa::open_at`]).
    ///
    /// # Errors
    /// As [`LocalCa::open_at`].
    pub fn open(config: LocalCaConfig) -> Result<Self, IssuerError> {
        Self::open_at(config, UnixTime::now())
    }

    /// Loads the CA certificate and key, checks that the key matches the
    /// certificate, that it is a CA certificate and that it is valid at
    /// `now`; loads the chain; opens (or creates) the database in the data
    /// directory (created 0700 if missing).
    ///
    /// # Errors
    /// An [`IssuerError`] naming the file or directory at fault.
    pub fn open_at(config: LocalCaConfig, now: UnixTime) -> Result<Self, IssuerError> {
        if config.crl_validity_secs <= 0 || config.crl_max_age_secs <= 0 {
            return Err(IssuerError::Config("CRL validity and maximum age must be positive".into()));
        }
        if config.crl_max_age_secs >= config.crl_validity_secs {
            return Err(IssuerError::Config(format!(
                "CRL maximum age ({}s) must be shorter than its validity ({}s)",
                config.crl_max_age_secs, config.crl_validity_secs
            )));
        }
        let key = match (&config.ca_key, &config.ca_key_der) {
            (Some(token), _) => CaKey::Token(token),
            (None, Some(der)) => CaKey::Der(der),
            (None, None) => CaKey::File,
        };
        let (mut ca, extra) = load_ca(&config.ca_cert_pem, &config.ca_key_pem, key, now)?;
        if let Some(base) = &config.public_url {
            ca.set_relying_party_urls(Some(pki_urls(base, &serial_hex(ca.key_id()))));
        }
        let mut chain = Vec::with_capacity(1 + extra.len());
        chain.push(ca.certificate().to_vec());
        chain.extend(extra);
        for path in &config.chain_pem {
            let certs = read_certificates(path)?;
            for c in &certs {
                CertificateRef::parse(c)
                    .map_err(|e| IssuerError::invalid_file(path, format!("malformed certificate: {e}")))?;
            }
            chain.extend(certs);
        }
        let ca_id = serial_hex(ca.key_id());
        let (store, revocations) = match &config.shared_index {
            None => {
                bootstrap::ensure_dir(&config.data_dir)?;
                let db_path = config.data_dir.join(&config.index_file);
                let store = CertificateIndex::open_sqlite(&db_path)
                    .map_err(|e| IssuerError::Database(format!("{}: {e}", db_path.display())))?;
                (store, sqlite_revocation_counter(&db_path, &ca_id))
            }
            Some(pool) => (
                CertificateIndex::open_postgres(Arc::clone(pool))
                    .map_err(|e| IssuerError::Database(format!("certificate index in {}: {e}", pool.describe())))?,
                Arc::new(AtomicU64::new(0)),
            ),
        };
        if let CertificateIndex::Postgres(pg) = &store {
            let version = pg
                .revocation_version(&ca_id)
                .map_err(|e| IssuerError::Database(format!("certificate index in {}: {e}", store.describe())))?;
            revocations.store(version, Ordering::Release);
            pg.watch_revocations(&ca_id, Arc::downgrade(&revocations)).map_err(index_error)?;
        }
        tracing::info!(
            issuer = %config.id,
            ca = %name_to_string(ca.subject()),
            not_after = %ca.not_after().to_rfc3339(),
            index = %store.describe(),
            "local CA opened"
        );
        Ok(Self {
            inner: Arc::new(Inner {
                id: config.id,
                ca,
                chain,
                ca_id,
                store,
                random: config.random,
                crl: Mutex::new(None),
                revocations,
                crl_validity_secs: config.crl_validity_secs,
                crl_max_age_secs: config.crl_max_age_secs,
            }),
        })
    }

    /// The CA's signer (certificate, subject, key id).
    pub fn signer(&self) -> &CaSigner {
        &self.inner.ca
    }

    /// The CA's id: its key identifier in lower-case hex, as in the
    /// database and in the `/pki/<ca-id>/...` URLs.
    pub fn ca_id(&self) -> &str {
        &self.inner.ca_id
    }

    /// The issuer id (e.g. `iss-local`).
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// Answers one request on the calling thread, blocking on the database.
    /// [`Issuer::handle`] runs this on the `blocking` pool.
    pub fn handle_blocking(&self, request: &IssueRequest, now: UnixTime) -> IssueOutcome {
        self.inner.handle(request, now)
    }

    /// The CA's half of an enrolment before the database: builds the
    /// end-entity certificate `request` asks for (RFC 5280 profile of
    /// [`crate::x509_build::CaSigner::issue_end_entity`]) under a fresh random
    /// serial and signs it with the CA key. Nothing is recorded.
    ///
    /// Every PKCSReq and RenewalReq runs this (renewals after their checks),
    /// then has the store record the certificate durably, with the
    /// transactionID resend check in the same transaction, and draws another
    /// serial on a collision. A certificate from
    /// here must not be handed to a client without that record: renewal,
    /// revocation, polling and GetCert depend on it. Serving goes through
    /// [`LocalCa::handle_blocking`] or [`Issuer::handle`]; this entry point
    /// exists to measure or test the signing step on its own.
    ///
    /// # Errors
    /// [`IssuerError::Build`] when the request cannot make a valid certificate
    /// (e.g. empty subject without subjectAltName) or signing fails.
    pub fn sign_enrollment(&self, request: &EnrollRequest, now: UnixTime) -> Result<SignedCertificate, IssuerError> {
        self.inner.sign_enrollment(request, now).map_err(IssuerError::Build)
    }

    /// Revokes a certificate this CA issued (admin plane, RFC 5280 §5.3.1
    /// reason). Blocks until the revocation is committed; async callers use
    /// [`crate::Issuer::revoke`], which runs it on the `blocking` pool.
    ///
    /// Once it returns, the revocation is visible to every reader: the next
    /// GetCRL serves a new CRL listing it, and [`LocalCa::revocation_version`]
    /// has moved on to the [`Revocation::revocation_version`] it returns
    /// (the hook for caches of revocation status, such as an OCSP responder's
    /// precomputed answers: a cache filled at an older version is stale).
    ///
    /// # Errors
    /// [`IssuerError::UnknownSerial`], [`IssuerError::AlreadyRevoked`] or
    /// [`IssuerError::Database`].
    pub fn revoke(&self, serial: &[u8], reason: RevocationReason, now: UnixTime) -> Result<Revocation, IssuerError> {
        let inner = &self.inner;
        let hex = serial_hex(serial);
        match inner.store.revoke(&inner.ca_id, &hex, now, reason) {
            Ok(shared) => {
                let version = match shared {
                    // The database's counter: raise ours to it (the watcher may already have).
                    Some(v) => inner.revocations.fetch_max(v, Ordering::AcqRel).max(v),
                    None => inner.revocations.fetch_add(1, Ordering::AcqRel) + 1,
                };
                tracing::info!(issuer = %inner.id, serial = %hex, reason = %reason, "certificate revoked");
                Ok(Revocation { serial_hex: hex, revoked_at: now, reason, revocation_version: version })
            }
            Err(StoreError::NotFound) => Err(IssuerError::UnknownSerial(hex)),
            Err(StoreError::AlreadyRevoked) => Err(IssuerError::AlreadyRevoked(hex)),
            Err(e) => Err(index_error(e)),
        }
    }

    /// The record of a certificate this CA issued (revocation checks, admin).
    /// Blocks on the database.
    ///
    /// # Errors
    /// [`IssuerError::Database`].
    pub fn lookup(&self, serial: &[u8]) -> Result<Option<StoredCertificate>, IssuerError> {
        self.inner.store.certificate(&self.inner.ca_id, &serial_hex(serial)).map_err(index_error)
    }

    /// The certificates this CA recorded at or after `since`, oldest first, at
    /// most `limit`. Blocks on the database. The service reconciles them with
    /// its audit log at start-up: a certificate recorded just before a crash
    /// may have no audit event.
    ///
    /// # Errors
    /// [`IssuerError::Database`].
    pub fn issued_since(&self, since: UnixTime, limit: usize) -> Result<Vec<StoredCertificate>, IssuerError> {
        self.inner.store.issued_since(&self.inner.ca_id, since, limit).map_err(index_error)
    }

    /// How many revocations this CA has committed: it increases with every
    /// [`LocalCa::revoke`], after the commit. A cache of revocation status
    /// (the CRL here; an OCSP responder's precomputed answers) remembers the
    /// version it was filled at and is stale once this differs.
    ///
    /// On SQLite it counts this process's revocations since the CA was
    /// opened. With a shared (PostgreSQL) index it is the database's per-CA
    /// revocation counter as last seen by this node: raised at once by this
    /// node's revocations, and for other nodes' by a watcher thread
    /// (`LISTEN scepd_revocations`, plus a re-read every second), so a
    /// revocation on another node is seen here within about a second even
    /// if its notification is lost. Reading it is an atomic load, never a
    /// database round trip.
    pub fn revocation_version(&self) -> u64 {
        self.inner.revocations.load(Ordering::Acquire)
    }

    /// This CA's certificates matching `filter`, newest first (the admin
    /// API's inventory). Blocks on the database.
    ///
    /// # Errors
    /// [`IssuerError::Database`].
    pub fn certificates(&self, filter: &CertificateFilter) -> Result<Vec<StoredCertificate>, IssuerError> {
        self.inner.store.list(&self.inner.ca_id, filter).map_err(index_error)
    }

    /// Counts of this CA's certificates by status and expiry at `now`
    /// (metrics, charts). Blocks on the database.
    ///
    /// # Errors
    /// [`IssuerError::Database`].
    pub fn inventory_summary(&self, now: UnixTime) -> Result<InventorySummary, IssuerError> {
        self.inner.store.summary(&self.inner.ca_id, now).map_err(index_error)
    }

    /// The certificates that renewed certificate `serial_hex` (its
    /// successors; at most one, as a certificate renews once). Blocks on the
    /// database.
    ///
    /// # Errors
    /// [`IssuerError::Database`].
    pub fn renewals_of(&self, serial_hex: &str) -> Result<Vec<StoredCertificate>, IssuerError> {
        self.inner.store.renewals_of(&self.inner.ca_id, serial_hex).map_err(index_error)
    }

    /// Database writer counters (commits, operations), for metrics.
    pub fn store_stats(&self) -> store::StoreStats {
        self.inner.store.stats()
    }

    /// The current CRL DER (re-signed when a revocation happened or it is
    /// older than the configured maximum age). Blocks on the database.
    ///
    /// # Errors
    /// [`IssuerError::Database`] or [`IssuerError::Build`].
    pub fn crl(&self, now: UnixTime) -> Result<Vec<u8>, IssuerError> {
        self.inner.current_crl(now).map(|p| p.der.to_vec())
    }

    /// The current CRL with its cRLNumber and times (see [`LocalCa::crl`]),
    /// for publication over HTTP. Blocks on the database only when it
    /// re-signs (after a revocation, or when it is older than the maximum age).
    ///
    /// # Errors
    /// [`IssuerError::Database`] or [`IssuerError::Build`].
    pub fn published_crl(&self, now: UnixTime) -> Result<PublishedCrl, IssuerError> {
        self.inner.current_crl(now)
    }
}

impl Inner {
    fn handle(&self, request: &IssueRequest, now: UnixTime) -> IssueOutcome {
        match request {
            IssueRequest::Enroll(e) => block_on(self.enroll(e, None, now)),
            IssueRequest::Renew(r) => self.renew(r, now),
            IssueRequest::Poll(p) => self.poll(p),
            IssueRequest::GetCert(l) => self.get_cert(l),
            IssueRequest::GetCrl(l) => self.get_crl(l, now),
            _ => rejected(FailInfo::BAD_REQUEST, "request kind not supported by the local CA"),
        }
    }

    fn issued(&self, certificate: Vec<u8>) -> IssueOutcome {
        IssueOutcome::Issued { certificate, chain: self.chain.clone() }
    }

    /// RFC 8894 §3.3.1: issue, record, answer.
    ///
    /// The certificate is signed first, then recorded by the store's writer,
    /// which also checks the transactionID in the same transaction: a resent
    /// request (same transactionID, same key: the client lost our CertRep)
    /// gets the certificate already issued, not a second one, and the fresh
    /// signature is discarded unrecorded (it never leaves this function).
    /// Waiting for the commit holds no thread.
    async fn enroll(&self, e: &EnrollRequest, renewal_of: Option<String>, now: UnixTime) -> IssueOutcome {
        for _ in 0..MAX_SERIAL_ATTEMPTS {
            let signed = match self.sign_enrollment(e, now) {
                Ok(signed) => signed,
                Err(err) => return rejected(FailInfo::BAD_REQUEST, format!("cannot issue the certificate: {err}")),
            };
            let record = NewCertificate {
                ca_id: self.ca_id.clone(),
                serial_hex: serial_hex(&signed.serial),
                profile: e.profile.clone(),
                transaction_id: e.transaction_id.clone(),
                subject: name_to_string(&e.subject_der),
                sans: e.subject_alt_names.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
                not_before: signed.not_before,
                not_after: signed.not_after,
                der: signed.der.clone(),
                issued_at: now,
                renewal_of: renewal_of.clone(),
                intune_device: match &e.authorization {
                    Authorization::Intune { subject, .. } => Some(subject.clone()),
                    _ => None,
                },
            };
            let serial_hex = record.serial_hex.clone();
            match self.store.record_enrollment(record).await {
                Ok(Recorded::Inserted) => {
                    tracing::debug!(issuer = %self.id, serial = %serial_hex, tx = %e.transaction_id, "certificate issued");
                    return self.issued(signed.der);
                }
                // The transactionID already has a certificate that this request
                // does not renew. A renewal of the very certificate a
                // transactionID produced is a new transaction (the store
                // inserts it): clients that keep their key and derive the
                // transactionID from it (RFC 8894 §3.2.1.1; certmonger's
                // `getcert resubmit`) renew under the same transactionID.
                Ok(Recorded::Existing(prev)) => {
                    let same_key = CertificateRef::parse(&prev.der).is_ok_and(|c| c.spki.raw == e.spki_der.as_slice());
                    if same_key && prev.renewal_of == renewal_of {
                        return self.issued(prev.der);
                    }
                    return rejected(
                        FailInfo::BAD_REQUEST,
                        format!("transactionID {} was already used for a different request", e.transaction_id),
                    );
                }
                Err(StoreError::DuplicateSerial) => {
                    tracing::warn!(issuer = %self.id, serial = %serial_hex, "serial collision, drawing another");
                }
                Err(StoreError::Superseded { by }) => {
                    return refused(
                        "renewal_superseded",
                        format!(
                            "certificate {} was already renewed (by {by}); each certificate renews once: \
                             renew with the newest certificate or enrol with a challenge",
                            renewal_of.as_deref().unwrap_or_default()
                        ),
                    );
                }
                Err(StoreError::OtherProfile { issued_on }) => {
                    return refused(
                        "renewal_other_profile",
                        format!(
                            "certificate {} was issued on profile {issued_on:?}, not {:?}: a certificate renews \
                             only on its own profile",
                            renewal_of.as_deref().unwrap_or_default(),
                            e.profile
                        ),
                    );
                }
                Err(StoreError::NotFound) => {
                    let old = renewal_of.as_deref().unwrap_or_default();
                    return rejected(FailInfo::BAD_CERT_ID, format!("no certificate {old} was issued by this CA"));
                }
                Err(StoreError::AlreadyRevoked) => {
                    let old = renewal_of.as_deref().unwrap_or_default();
                    return rejected(FailInfo::BAD_CERT_ID, format!("certificate {old} is revoked"));
                }
                Err(err) => return db_rejected(&err),
            }
        }
        rejected(FailInfo::BAD_REQUEST, "local CA database error: no free serial number after several draws")
    }

    /// Builds and signs the certificate for `e` under a fresh random serial
    /// (see [`LocalCa::sign_enrollment`]).
    fn sign_enrollment(&self, e: &EnrollRequest, now: UnixTime) -> Result<SignedCertificate, BuildError> {
        let serial = random_serial(self.random.as_ref());
        let params = EndEntityParams {
            serial: &serial,
            subject_der: &e.subject_der,
            spki_der: &e.spki_der,
            subject_alt_names: &e.subject_alt_names,
            policy: &e.policy,
            now,
            sid_extension: e.sid_extension.as_deref(),
        };
        let der = self.ca.issue_end_entity(&params)?;
        let (not_before, not_after) = CertificateRef::parse(&der)
            .map(|c| (c.not_before, c.not_after))
            .map_err(|error| BuildError::Malformed { what: "issued certificate", error })?;
        Ok(SignedCertificate { serial, der, not_before, not_after })
    }

    /// Renewal: only of a valid, unexpired certificate this CA issued on the
    /// same profile, and only once (then it is superseded). Profiles sharing
    /// this CA share its records, so the profile is compared, not assumed.
    /// The reads below answer the common refusals early; the store repeats
    /// the profile, revocation and once-only checks inside the writer's
    /// transaction, so concurrent renewals of one certificate cannot both win.
    fn renew(&self, r: &RenewRequest, now: UnixTime) -> IssueOutcome {
        if r.old_issuer != self.ca.subject() {
            return rejected(FailInfo::BAD_CERT_ID, "the certificate to renew was not issued by this CA");
        }
        let hex = serial_hex(&r.old_serial);
        let old = match self.store.certificate(&self.ca_id, &hex) {
            Ok(Some(old)) => old,
            Ok(None) => return rejected(FailInfo::BAD_CERT_ID, format!("no certificate {hex} was issued by this CA")),
            Err(err) => return db_rejected(&err),
        };
        if let CertStatus::Revoked { reason, .. } = old.status {
            return rejected(FailInfo::BAD_CERT_ID, format!("certificate {hex} is revoked ({reason})"));
        }
        if old.profile != r.enroll.profile {
            return refused(
                "renewal_other_profile",
                format!(
                    "certificate {hex} was issued on profile {:?}, not {:?}: a certificate renews only on its \
                     own profile",
                    old.profile, r.enroll.profile
                ),
            );
        }
        if old.not_after < now {
            return rejected(
                FailInfo::BAD_CERT_ID,
                format!("certificate {hex} expired at {}", old.not_after.to_rfc3339()),
            );
        }
        block_on(self.enroll(&r.enroll, Some(hex), now))
    }

    /// CertPoll (RFC 8894 §3.3.2): the local CA never leaves a request
    /// pending, so a poll finds the certificate or nothing. The transaction
    /// (with the profile) identifies the request; IssuerAndSubject is not
    /// needed to find it.
    fn poll(&self, p: &PollRequest) -> IssueOutcome {
        match self.store.by_transaction(&self.ca_id, &p.profile, &p.transaction_id) {
            Ok(Some(c)) => self.issued(c.der),
            Ok(None) => rejected(FailInfo::BAD_CERT_ID, format!("no certificate for transaction {}", p.transaction_id)),
            Err(err) => db_rejected(&err),
        }
    }

    /// GetCert (RFC 8894 §3.3.3).
    fn get_cert(&self, l: &CertLookup) -> IssueOutcome {
        if l.issuer_der != self.ca.subject() {
            return rejected(FailInfo::BAD_CERT_ID, "GetCert for another CA's certificate");
        }
        let hex = serial_hex(&l.serial);
        match self.store.certificate(&self.ca_id, &hex) {
            Ok(Some(c)) => self.issued(c.der),
            Ok(None) => rejected(FailInfo::BAD_CERT_ID, format!("no certificate {hex} was issued by this CA")),
            Err(err) => db_rejected(&err),
        }
    }

    /// GetCRL (RFC 8894 §3.3.4).
    fn get_crl(&self, l: &CertLookup, now: UnixTime) -> IssueOutcome {
        if l.issuer_der != self.ca.subject() {
            return rejected(FailInfo::BAD_CERT_ID, "GetCRL for another CA");
        }
        match self.current_crl(now) {
            Ok(published) => IssueOutcome::Crl(published.der.to_vec()),
            Err(IssuerError::Unavailable(e)) => {
                IssueOutcome::Unavailable { reason: format!("local CA certificate index unavailable: {e}") }
            }
            Err(IssuerError::Database(e)) => rejected(FailInfo::BAD_REQUEST, format!("local CA database error: {e}")),
            Err(e) => rejected(FailInfo::BAD_REQUEST, format!("cannot produce the CRL: {e}")),
        }
    }

    fn current_crl(&self, now: UnixTime) -> Result<PublishedCrl, IssuerError> {
        // Held while re-signing so concurrent requests wait for one new CRL
        // instead of each allocating a cRLNumber.
        let mut cache = self.crl.lock().unwrap_or_else(PoisonError::into_inner);
        let generation = self.revocations.load(Ordering::Acquire);
        if let Some(c) = cache.as_ref() {
            let fresh = c.published.this_update <= now && now < c.published.resign_by;
            if c.generation == generation && fresh {
                return Ok(c.published.clone());
            }
        }
        let db_err = |e: StoreError| match e {
            StoreError::Unavailable(why) => IssuerError::Unavailable(why),
            e => IssuerError::Database(e.to_string()),
        };
        let revoked = self.store.revoked(&self.ca_id).map_err(db_err)?;
        let crl_number = self.store.next_crl_number(&self.ca_id).map_err(db_err)?;
        let der = build_crl(
            &self.ca,
            &CrlParams {
                crl_number,
                this_update: now,
                next_update: now.plus(self.crl_validity_secs),
                revoked: &revoked,
            },
        )?;
        tracing::debug!(issuer = %self.id, crl_number, entries = revoked.len(), "CRL signed");
        let published = PublishedCrl {
            der: der.into(),
            crl_number,
            this_update: now,
            next_update: now.plus(self.crl_validity_secs),
            resign_by: now.plus(self.crl_max_age_secs),
            distinct_this_update: cache.as_ref().is_none_or(|c| c.published.this_update.secs() != now.secs()),
        };
        *cache = Some(CachedCrl { published: published.clone(), generation });
        Ok(published)
    }
}

impl Issuer for LocalCa {
    fn id(&self) -> &str {
        &self.inner.id
    }

    fn ca_chain(&self) -> Vec<Vec<u8>> {
        self.inner.chain.clone()
    }

    fn revoke<'a>(
        &'a self,
        serial: &'a [u8],
        reason: RevocationReason,
        now: UnixTime,
    ) -> BoxFuture<'a, Result<Revocation, IssuerError>> {
        let ca = self.clone();
        // COPY: the serial crosses onto the blocking pool, which needs 'static.
        let serial = serial.to_vec();
        Box::pin(blocking::unblock(move || ca.revoke(&serial, reason, now)))
    }

    fn inventory(&self) -> Option<&LocalCa> {
        Some(self)
    }

    /// The certificate index checks the transactionID in the transaction
    /// that records a certificate (`Inner::enroll`).
    fn answers_resends_durably(&self) -> bool {
        true
    }

    fn handle<'a>(&'a self, request: &'a IssueRequest, now: UnixTime) -> BoxFuture<'a, IssueOutcome> {
        // An enrolment (the hot path) signs on the calling task and waits for
        // its commit without a thread: no hop to the blocking pool.
        if let IssueRequest::Enroll(e) = request {
            return Box::pin(self.inner.enroll(e, None, now));
        }
        let inner = Arc::clone(&self.inner);
        // COPY: the request crosses onto the blocking pool, which needs 'static.
        let request = request.clone();
        Box::pin(blocking::unblock(move || inner.handle(&request, now)))
    }
}
