//! Durable storage: the audit log (SQLite, one writer thread, group commit)
//! today; the shared store (one-time challenges, certificate lifecycle,
//! PostgreSQL) belongs here next to it.
//!
//! May import: `settings` only.

pub mod audit;
