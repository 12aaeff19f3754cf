//! Errors of issuer setup and administration.
//!
//! Errors met while *answering* a SCEP request never surface as an
//! [`IssuerError`]: the [`crate::Issuer`] contract turns them into an
//! [`crate::IssueOutcome::Rejected`]. This type is for what the operator sees:
//! opening a CA, bootstrapping a data directory, revoking a certificate.

use std::path::{Path, PathBuf};

use crate::x509_build::BuildError;

/// Why an issuer could not be opened, bootstrapped or administered.
#[derive(Debug)]
#[non_exhaustive]
pub enum IssuerError {
    /// A file or directory could not be read, written or created.
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file's contents are unusable (bad PEM, not a key, not a CA
    /// certificate, key and certificate do not match, expired, ...).
    InvalidFile {
        /// The file concerned.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The data directory is in a state bootstrap will not touch (e.g. a key
    /// without its certificate).
    DataDir {
        /// The data directory.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The certificate database failed.
    Database(String),
    /// A certificate or CRL could not be built or signed.
    Build(BuildError),
    /// No certificate with this serial (hex) was issued by this CA.
    UnknownSerial(String),
    /// The certificate with this serial (hex) is already revoked.
    AlreadyRevoked(String),
    /// An invalid configuration value (explained).
    Config(String),
    /// A remote issuer (e.g. Vault) could not be reached or used at start-up
    /// (the message names the issuer).
    Unavailable(String),
    /// The issuer does not offer this operation (explained).
    Unsupported(String),
}

impl IssuerError {
    /// An [`IssuerError::Io`] for `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io { path: path.to_path_buf(), source }
    }

    /// An [`IssuerError::InvalidFile`] for `path`.
    pub fn invalid_file(path: &Path, reason: impl Into<String>) -> Self {
        Self::InvalidFile { path: path.to_path_buf(), reason: reason.into() }
    }
}

impl std::fmt::Display for IssuerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Io { path, source } => write!(f, "{}: {source}", path.display()),
            Self::InvalidFile { path, reason } => write!(f, "{}: {reason}", path.display()),
            Self::DataDir { path, reason } => write!(f, "data directory {}: {reason}", path.display()),
            Self::Database(e) => write!(f, "certificate database error: {e}"),
            Self::Build(e) => write!(f, "cannot build certificate: {e}"),
            Self::UnknownSerial(s) => write!(f, "no certificate with serial {s} was issued by this CA"),
            Self::AlreadyRevoked(s) => write!(f, "certificate {s} is already revoked"),
            Self::Config(e) => write!(f, "invalid issuer configuration: {e}"),
            Self::Unavailable(e) => write!(f, "issuer unavailable: {e}"),
            Self::Unsupported(e) => f.write_str(e),
        }
    }
}

impl std::error::Error for IssuerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io { source, .. } => Some(source),
            Self::Build(e) => Some(e),
            _ => None,
        }
    }
}

impl From<BuildError> for IssuerError {
    fn from(e: BuildError) -> Self {
        Self::Build(e)
    }
}
