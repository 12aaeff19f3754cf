//! Durable storage: the audit log (SQLite, one writer thread, group commit)
//! and the one-time challenge passwords ([`challenges`]: the
//! [`challenges::ChallengeStore`] contract and its SQLite implementation);
//! the rest of the shared store (certificate lifecycle, PostgreSQL) belongs
//! here next to them.
//!
//! May import: `settings` only.

pub mod audit;
pub mod challenges;
