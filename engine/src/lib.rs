//! # scep-engine
//!
//! A sans-IO SCEP (RFC 8894) server engine. It turns the bytes of one SCEP HTTP
//! request into either a response to write or a request for a certificate
//! issuer, and the issuer's answer into a CertRep.
//!
//! What it does **not** do: no sockets, no async runtime, no clock, no OS
//! randomness of its own. Time is an argument; randomness comes from the
//! [`crypto::RandomSource`] in the profile configuration. That keeps it
//! deterministic under test and fuzzing, and lets any transport drive it.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod certrep;
pub mod codes;
pub mod config;
pub mod crypto;
pub mod csr;
mod engine;
pub mod envelope;
mod handle;
pub mod intune;
pub mod issue;
pub mod message;
pub mod ocsp;
pub mod oid;
pub mod pem;
pub mod pkcs7;
pub mod strong_mapping;
pub mod time;
pub mod wire;
pub mod x509;

pub use codes::{FailInfo, MessageType, PkiStatus};
pub use engine::{
    Action, Engine, IntuneIdentity, Message, Method, Operation, Outcome, PendingIssue, Request, Response,
};
pub use issue::{IssueOutcome, IssueRequest};
pub use time::UnixTime;
