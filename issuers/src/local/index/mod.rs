//! The local CA's certificate index: where every certificate it issues is
//! recorded before the answer, with its revocation, the CA's cRLNumber and
//! the transactionID resend check.
//!
//! Two implementations of one contract ([`CertificateIndex`]):
//! - **SQLite** ([`crate::local::store::Store`]): `<data_dir>/local-ca.sqlite`,
//!   one node, a writer thread with group commit (the embedded default);
//! - **PostgreSQL** ([`postgres::PostgresIndex`]): the shared store of several
//!   nodes (`[store] url`), on the node's one pool. Serials are unique per CA
//!   across nodes, a revocation on any node is in every node's CRL and OCSP
//!   answers, cRLNumbers increase strictly across nodes, and a transactionID
//!   resent to another node gets the certificate already issued.
//!
//! The contract is tested against both (`tests/tests/certificate_index.rs`).
//! Every method blocks, except [`CertificateIndex::record_enrollment`], whose
//! answer is a future (the enrolment hot path waits for its commit without
//! holding a thread on SQLite; on PostgreSQL it runs on the `blocking` pool).

pub mod postgres;

use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use scep_engine::time::UnixTime;

use crate::crl::{RevocationReason, RevokedEntry};
use crate::local::store::{
    CertificateFilter, InventorySummary, NewCertificate, Recorded, Store, StoreError, StoreStats, StoredCertificate,
};

/// The certificates an index holds of one CA: what the bootstrap reads before
/// it creates a new CA in a data directory ([`crate::local::bootstrap`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedCa {
    /// The CA's id (hex key identifier, as in `/pki/<ca-id>/` and the
    /// admin API).
    pub ca_id: String,
    /// How many certificates the index holds of it.
    pub certificates: u64,
    /// Its subject, read as the issuer name of one of its certificates.
    pub subject: String,
}

impl RecordedCa {
    /// A CA's entry from its id, its count and the DER of one of its
    /// certificates (whose issuer names the CA).
    pub(crate) fn from_row(ca_id: String, certificates: u64, one_certificate: &[u8]) -> Self {
        let subject = scep_engine::x509::CertificateRef::parse(one_certificate)
            .map_or_else(|_| "subject unreadable".to_string(), |c| scep_engine::x509::name_to_string(c.issuer));
        Self { ca_id, certificates, subject }
    }
}

/// The future [`CertificateIndex::record_enrollment`] answers with.
pub type RecordFuture = Pin<Box<dyn Future<Output = Result<Recorded, StoreError>> + Send + 'static>>;

/// The local CA's certificate index: SQLite (one node) or PostgreSQL
/// (shared by every node). See the module docs.
pub enum CertificateIndex {
    /// `<data_dir>/local-ca.sqlite` (or `local-ca-<id>.sqlite`).
    Sqlite(Store),
    /// The shared PostgreSQL store.
    Postgres(postgres::PostgresIndex),
}

impl std::fmt::Debug for CertificateIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sqlite(s) => s.fmt(f),
            Self::Postgres(p) => p.fmt(f),
        }
    }
}

impl CertificateIndex {
    /// Opens (creating if needed) the SQLite index at `path`.
    ///
    /// # Errors
    /// As [`Store::open`].
    pub fn open_sqlite(path: &Path) -> Result<Self, StoreError> {
        Store::open(path).map(Self::Sqlite)
    }

    /// The PostgreSQL index on the node's pool; applies pending migrations
    /// (migration 4 holds its tables) and checks the connection.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the database cannot be reached, or a
    /// database error.
    pub fn open_postgres(pool: Arc<scep_store::postgres::Pool>) -> Result<Self, StoreError> {
        postgres::PostgresIndex::open(pool).map(Self::Postgres)
    }

    /// What it is, for logs: the SQLite file or the database (without password).
    pub fn describe(&self) -> String {
        match self {
            Self::Sqlite(s) => format!("{s:?}"),
            Self::Postgres(p) => p.describe(),
        }
    }

    /// Records a newly issued certificate for an enrolment, unless its
    /// profile's transactionID already has a certificate other than the one
    /// `cert.renewal_of` renews (see [`Store::record_enrollment`]: the same
    /// rules, atomically across nodes on PostgreSQL).
    ///
    /// # Errors
    /// As [`Store::record_enrollment`]; [`StoreError::Unavailable`] when the
    /// shared database cannot be reached (nothing recorded).
    pub fn record_enrollment(&self, cert: NewCertificate) -> RecordFuture {
        match self {
            Self::Sqlite(s) => Box::pin(s.record_enrollment(cert)),
            Self::Postgres(p) => {
                let p = p.clone();
                Box::pin(blocking::unblock(move || p.record_enrollment(&cert)))
            }
        }
    }

    /// Marks a valid certificate revoked; returns once committed, with the
    /// CA's revocation counter in the shared database after it (PostgreSQL),
    /// or `None` (SQLite: the counter is the process's own).
    ///
    /// # Errors
    /// [`StoreError::NotFound`], [`StoreError::AlreadyRevoked`] or a database error.
    pub fn revoke(
        &self,
        ca_id: &str,
        serial_hex: &str,
        at: UnixTime,
        reason: RevocationReason,
    ) -> Result<Option<u64>, StoreError> {
        match self {
            Self::Sqlite(s) => s.revoke(ca_id, serial_hex, at, reason).map(|()| None),
            Self::Postgres(p) => p.revoke(ca_id, serial_hex, at, reason).map(Some),
        }
    }

    /// Allocates the CA's next cRLNumber (1, 2, ...; strictly increasing
    /// across nodes on PostgreSQL), committed.
    ///
    /// # Errors
    /// A database error.
    pub fn next_crl_number(&self, ca_id: &str) -> Result<u64, StoreError> {
        match self {
            Self::Sqlite(s) => s.next_crl_number(ca_id),
            Self::Postgres(p) => p.next_crl_number(ca_id),
        }
    }

    /// The certificate with this serial issued by CA `ca_id`.
    ///
    /// # Errors
    /// A database error.
    pub fn certificate(&self, ca_id: &str, serial_hex: &str) -> Result<Option<StoredCertificate>, StoreError> {
        match self {
            Self::Sqlite(s) => s.certificate(ca_id, serial_hex),
            Self::Postgres(p) => p.certificate(ca_id, serial_hex),
        }
    }

    /// The latest certificate issued by CA `ca_id` for a profile's transaction.
    ///
    /// # Errors
    /// A database error.
    pub fn by_transaction(
        &self,
        ca_id: &str,
        profile: &str,
        transaction_id: &str,
    ) -> Result<Option<StoredCertificate>, StoreError> {
        match self {
            Self::Sqlite(s) => s.by_transaction(ca_id, profile, transaction_id),
            Self::Postgres(p) => p.by_transaction(ca_id, profile, transaction_id),
        }
    }

    /// The certificates CA `ca_id` recorded at or after `since`, oldest first,
    /// at most `limit`.
    ///
    /// # Errors
    /// A database error.
    pub fn issued_since(
        &self,
        ca_id: &str,
        since: UnixTime,
        limit: usize,
    ) -> Result<Vec<StoredCertificate>, StoreError> {
        match self {
            Self::Sqlite(s) => s.issued_since(ca_id, since, limit),
            Self::Postgres(p) => p.issued_since(ca_id, since, limit),
        }
    }

    /// Every certificate of CA `ca_id` that is revoked, oldest revocation first.
    ///
    /// # Errors
    /// A database error, or a corrupt serial in the database.
    pub fn revoked(&self, ca_id: &str) -> Result<Vec<RevokedEntry>, StoreError> {
        match self {
            Self::Sqlite(s) => s.revoked(ca_id),
            Self::Postgres(p) => p.revoked(ca_id),
        }
    }

    /// The certificates of CA `ca_id` that renewed `serial_hex`, oldest first.
    ///
    /// # Errors
    /// A database error.
    pub fn renewals_of(&self, ca_id: &str, serial_hex: &str) -> Result<Vec<StoredCertificate>, StoreError> {
        match self {
            Self::Sqlite(s) => s.renewals_of(ca_id, serial_hex),
            Self::Postgres(p) => p.renewals_of(ca_id, serial_hex),
        }
    }

    /// CA `ca_id`'s certificates matching `filter`, newest first.
    ///
    /// # Errors
    /// A database error.
    pub fn list(&self, ca_id: &str, filter: &CertificateFilter) -> Result<Vec<StoredCertificate>, StoreError> {
        match self {
            Self::Sqlite(s) => s.list(ca_id, filter),
            Self::Postgres(p) => p.list(ca_id, filter),
        }
    }

    /// Counts of CA `ca_id`'s certificates at `now`.
    ///
    /// # Errors
    /// A database error.
    pub fn summary(&self, ca_id: &str, now: UnixTime) -> Result<InventorySummary, StoreError> {
        match self {
            Self::Sqlite(s) => s.summary(ca_id, now),
            Self::Postgres(p) => p.summary(ca_id, now),
        }
    }

    /// How many certificates CA `ca_id` has recorded.
    ///
    /// # Errors
    /// A database error.
    pub fn count(&self, ca_id: &str) -> Result<u64, StoreError> {
        match self {
            Self::Sqlite(s) => s.count(ca_id),
            Self::Postgres(p) => p.count(ca_id),
        }
    }

    /// The CA's revocation counter in the shared database (PostgreSQL), or
    /// `None` (SQLite keeps none: the process counts its own).
    ///
    /// # Errors
    /// A database error.
    pub fn shared_revocation_version(&self, ca_id: &str) -> Result<Option<u64>, StoreError> {
        match self {
            Self::Sqlite(_) => Ok(None),
            Self::Postgres(p) => p.revocation_version(ca_id).map(Some),
        }
    }

    /// Writer counters (SQLite's group commit; zero on PostgreSQL, which
    /// commits each enrolment on its own connection).
    pub fn stats(&self) -> StoreStats {
        match self {
            Self::Sqlite(s) => s.stats(),
            Self::Postgres(_) => StoreStats::default(),
        }
    }
}
