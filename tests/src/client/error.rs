//! The client's error type.

use scep_engine::crypto::KeyError;
use scep_engine::wire::DecodeError;

/// Anything that can go wrong while building, sending or checking a SCEP message.
#[derive(Debug)]
#[non_exhaustive]
pub enum ClientError {
    /// A socket error (connect, read, write, timeout).
    Io(std::io::Error),
    /// The HTTP exchange was malformed or the URL is unusable.
    Http(String),
    /// A structure received from the server could not be decoded.
    Decode {
        /// Which structure was being decoded.
        context: &'static str,
        /// The decoder's error.
        error: DecodeError,
    },
    /// A private-key operation failed or a key is unusable.
    Key(KeyError),
    /// A symmetric or public-key operation failed (bad padding, wrong key...).
    Crypto(String),
    /// The reply violates RFC 8894 / RFC 5652 (bad signature, wrong nonce...).
    Protocol(String),
    /// A caller-supplied value cannot be encoded.
    Input(String),
}

impl ClientError {
    /// A decode error in `context`.
    pub(crate) fn decode(context: &'static str) -> impl FnOnce(DecodeError) -> Self {
        move |error| Self::Decode { context, error }
    }

    /// A protocol violation.
    pub(crate) fn protocol(msg: impl Into<String>) -> Self {
        Self::Protocol(msg.into())
    }
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Io(e) => write!(f, "I/O error: {e}"),
            Self::Http(m) => write!(f, "HTTP error: {m}"),
            Self::Decode { context, error } => write!(f, "cannot decode {context}: {error}"),
            Self::Key(e) => write!(f, "key error: {e}"),
            Self::Crypto(m) => write!(f, "crypto error: {m}"),
            Self::Protocol(m) => write!(f, "protocol violation: {m}"),
            Self::Input(m) => write!(f, "invalid input: {m}"),
        }
    }
}

impl std::error::Error for ClientError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io(e) => Some(e),
            Self::Decode { error, .. } => Some(error),
            Self::Key(e) => Some(e),
            _ => None,
        }
    }
}

impl From<std::io::Error> for ClientError {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e)
    }
}

impl From<KeyError> for ClientError {
    fn from(e: KeyError) -> Self {
        Self::Key(e)
    }
}

/// Result alias for the client.
pub type Result<T> = std::result::Result<T, ClientError>;
