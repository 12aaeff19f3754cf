//! Certificate issuers for scepd.
//!
//! An [`Issuer`] answers the engine's [`IssueRequest`]s: the engine
//! authenticates and authorises a SCEP request, then hands the issuer an owned
//! request through [`scep_engine::PendingIssue::request`]; the issuer's
//! [`IssueOutcome`] goes back through [`scep_engine::PendingIssue::resume`].
//!
//! The contract is async-friendly (remote CAs such as Vault answer over the
//! network) and runtime-agnostic (plain boxed futures; blocking work runs on
//! the `blocking` thread pool, which works under tokio and smol alike).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod config_file;
pub mod crl;
mod error;
#[cfg(not(any(feature = "aws-lc", feature = "rustcrypto")))]
compile_error!("scep-issuers needs a crypto provider: enable the `aws-lc` or the `rustcrypto` feature");

pub mod http;
pub mod local;
pub mod ocsp;
pub mod oneshot;
pub mod pkcs11;
pub mod vault;
pub mod x509_build;

use std::future::Future;
use std::pin::Pin;

pub use crl::RevocationReason;
pub use error::IssuerError;
pub use local::bootstrap::{BootstrapOptions, BootstrapOutcome, CaKeyType, IndexLocation, NdesRaFiles, bootstrap};
pub use local::{LOCAL_ISSUER_ID, LocalCa, LocalCaConfig, PublishedCrl, Revocation, SignedCertificate, pki_urls};
pub use scep_engine::issue::{IssueOutcome, IssueRequest};
use scep_engine::time::UnixTime;
pub use vault::{VaultAuth, VaultConfig, VaultIssuer};

/// A boxed, `Send` future, as issuers return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A certificate authority scepd can issue through.
///
/// Implementations must be cheap to share (`Arc<dyn Issuer>`) and must never
/// panic on a request: every failure is an [`IssueOutcome::Rejected`] with a
/// failInfo for the client and a reason for the audit log.
pub trait Issuer: Send + Sync + 'static {
    /// The configured id (e.g. `iss-local`), named in audit events.
    fn id(&self) -> &str;

    /// The CA certificate chain, issuing CA first, then up to the root (DER).
    /// Served by GetCACert.
    fn ca_chain(&self) -> Vec<Vec<u8>>;

    /// Answers one request. `now` is the transport's clock reading.
    fn handle<'a>(&'a self, request: &'a IssueRequest, now: UnixTime) -> BoxFuture<'a, IssueOutcome>;

    /// Revokes the certificate with serial `serial` (magnitude bytes) that
    /// this issuer issued, for `reason` (RFC 5280 §5.3.1), at `now`. The one
    /// revoke path of scepd: the admin API and the Intune revocation sync
    /// call it. Resolves once the revocation is durable at the issuer.
    ///
    /// The default refuses with [`IssuerError::Unsupported`].
    ///
    /// # Errors
    /// [`IssuerError::UnknownSerial`] (not issued here),
    /// [`IssuerError::AlreadyRevoked`], or the issuer's failure.
    fn revoke<'a>(
        &'a self,
        serial: &'a [u8],
        reason: RevocationReason,
        now: UnixTime,
    ) -> BoxFuture<'a, Result<Revocation, IssuerError>> {
        let _ = (serial, reason, now);
        Box::pin(std::future::ready(Err(IssuerError::Unsupported(format!(
            "issuer {} cannot revoke certificates",
            self.id()
        )))))
    }

    /// The record of every certificate this issuer issued, when it keeps one
    /// (the local CA); `None` for issuers whose CA keeps its own (Vault).
    fn inventory(&self) -> Option<&LocalCa> {
        None
    }

    /// True when the issuer answers a resent request (RFC 8894 §3.2.1.1: the
    /// same transactionID) from a durable record, atomically: the
    /// certificate already issued for the same key, a refusal for another
    /// key, whatever the time since, the node or the restarts between.
    /// Only then may a one-time challenge be presented again by the
    /// transaction that used it. The default, false, suits issuers that
    /// keep no such record (Vault remembers recent transactions in memory
    /// only).
    fn answers_resends_durably(&self) -> bool {
        false
    }
}
