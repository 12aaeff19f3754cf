//! Durable storage: the audit log (SQLite or, [`audit_pg`], the shared
//! PostgreSQL store; one writer thread, group commit)
//! and the one-time challenge passwords ([`challenges`]: the
//! [`challenges::ChallengeStore`] contract and its SQLite implementation;
//! [`challenges_pg`]: on the shared PostgreSQL store);
//! the durable protection state around the engine ([`protection`]: Intune
//! replay nonces and rate-limit windows in `scep_store`, SQLite or the
//! shared PostgreSQL store); the rest of the shared store (certificate
//! lifecycle, audit trail and challenges on PostgreSQL) belongs here next to them;
//! and the data directory's lock ([`data_dir_lock`]: one scepd process per
//! data directory while its SQLite stores are in use).
//!
//! May import: `settings` only.

pub mod audit;
pub mod audit_pg;
pub mod challenges;
pub mod challenges_pg;
pub mod data_dir_lock;
pub mod protection;
pub mod revocation_sync;
