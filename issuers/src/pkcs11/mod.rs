//! Private keys held in a PKCS#11 token (an HSM, a cloud KMS through its
//! PKCS#11 library, or SoftHSM2), for the RA and the CA.
//!
//! A key is named by an RFC 7512 URI ([`KeyUri`]) wherever a key file path
//! is accepted. The key never leaves the token: scepd reads only public
//! attributes (modulus and exponent, or curve and point, to build the
//! SubjectPublicKeyInfo) and asks the token to sign and to decrypt.
//!
//! * Signing: the digest is computed here and the token signs it
//!   (`CKM_RSA_PKCS` over the DigestInfo, RFC 8017 §9.2; `CKM_ECDSA` over the
//!   hash, whose raw `r || s` becomes the DER `ECDSA-Sig-Value`, RFC 5753
//!   §2.1.1).
//! * Key transport (RFC 8894 §3.2.2, RFC 5652 §6.2.1): raw RSA
//!   (`CKM_RSA_X_509`) and a constant-time padding check here, so the token
//!   never answers "bad padding" differently from "good padding"; the
//!   engine's implicit rejection then hides the verdict (see `padding`).
//!   Tokens without `CKM_RSA_X_509` (some FIPS-mode HSMs) fall back to
//!   `CKM_RSA_PKCS`, whose padding errors become the same `None`; the start-up
//!   log says so, since the token's own timing is then outside our control.
//! * Sessions are pooled per token ([`DEFAULT_MAX_SESSIONS`], bounded wait);
//!   a token that disappears makes operations fail with
//!   [`Pkcs11Error::Unavailable`] (the service answers 503) and the module is
//!   initialised again when the token answers again.
//!
//! This lives in the issuers crate, beside the local CA that uses it, so
//! that the engine stays free of I/O (it sees the keys only through its key
//! interface) and the service only turns settings into keys.

mod key;
mod module;
mod padding;
mod uri;

pub use key::Pkcs11Key;
pub use module::{DEFAULT_MAX_SESSIONS, RETRY_INTERVAL, SESSION_WAIT};
pub use uri::{KeyUri, SCHEME, UriError, is_pkcs11_uri};

use std::path::PathBuf;

/// Where the user PIN comes from: never the configuration file itself.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PinSource {
    /// A file holding the PIN (one trailing newline is ignored).
    File(PathBuf),
    /// An environment variable holding the PIN.
    Env(String),
}

impl PinSource {
    /// Names the source in errors (`file /run/pin`, `environment variable X`).
    pub fn describe(&self) -> String {
        match self {
            Self::File(p) => format!("PIN file {}", p.display()),
            Self::Env(v) => format!("environment variable {v}"),
        }
    }

    fn read(&self) -> Result<cryptoki::types::AuthPin, Pkcs11Error> {
        let pin = match self {
            Self::File(p) => std::fs::read_to_string(p)
                .map_err(|e| Pkcs11Error::Pin { source: self.clone(), reason: format!("cannot read it: {e}") })?,
            Self::Env(v) => std::env::var(v)
                .map_err(|e| Pkcs11Error::Pin { source: self.clone(), reason: format!("not usable: {e}") })?,
        };
        let pin = pin.strip_suffix('\n').map(|p| p.strip_suffix('\r').unwrap_or(p)).unwrap_or(&pin);
        if pin.is_empty() {
            return Err(Pkcs11Error::Pin { source: self.clone(), reason: "it is empty".into() });
        }
        Ok(cryptoki::types::AuthPin::from(pin.to_owned()))
    }
}

/// What the operator configured beside the URIs: defaults for URIs that do
/// not carry `module-path` or `pin-source`, and the pool size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pkcs11Options {
    /// The library used when a URI has no `module-path`.
    pub module_path: Option<PathBuf>,
    /// The PIN used when a URI has no `pin-source`.
    pub pin: Option<PinSource>,
    /// Sessions per token.
    pub max_sessions: usize,
}

impl Default for Pkcs11Options {
    fn default() -> Self {
        Self { module_path: None, pin: None, max_sessions: DEFAULT_MAX_SESSIONS }
    }
}

/// Which token a key lives in (the token attributes of a [`KeyUri`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub(crate) struct TokenSelector {
    token: Option<String>,
    serial: Option<String>,
    manufacturer: Option<String>,
    model: Option<String>,
    slot_id: Option<u64>,
}

impl TokenSelector {
    fn from_uri(uri: &KeyUri) -> Self {
        Self {
            token: uri.token.clone(),
            serial: uri.serial.clone(),
            manufacturer: uri.manufacturer.clone(),
            model: uri.model.clone(),
            slot_id: uri.slot_id,
        }
    }

    /// PKCS#11 pads token info fields with spaces (§3.2 CK_TOKEN_INFO).
    fn matches(&self, slot_id: u64, label: &str, serial: &str, manufacturer: &str, model: &str) -> bool {
        let eq = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have.trim_end());
        eq(&self.token, label)
            && eq(&self.serial, serial)
            && eq(&self.manufacturer, manufacturer)
            && eq(&self.model, model)
            && self.slot_id.is_none_or(|s| s == slot_id)
    }

    fn describe(&self) -> String {
        let mut parts = Vec::new();
        for (k, v) in [
            ("token", &self.token),
            ("serial", &self.serial),
            ("manufacturer", &self.manufacturer),
            ("model", &self.model),
        ] {
            if let Some(v) = v {
                parts.push(format!("{k}={v}"));
            }
        }
        if let Some(s) = self.slot_id {
            parts.push(format!("slot-id={s}"));
        }
        if parts.is_empty() { "any token".into() } else { parts.join(";") }
    }
}

/// Why a PKCS#11 key could not be opened or used.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Pkcs11Error {
    /// The URI or options are unusable (explained).
    Config(String),
    /// The library could not be loaded or initialised.
    Module(String),
    /// The PIN could not be read, or the token refused it.
    Pin {
        /// Where the PIN came from.
        source: PinSource,
        /// What went wrong (never the PIN).
        reason: String,
    },
    /// The key (or an unambiguous token) is not there.
    NotFound(String),
    /// The token, its session or the library is gone, or every session
    /// stayed busy: retry later (HTTP 503).
    Unavailable(String),
    /// The token refused the operation (explained).
    Failed(String),
}

impl Pkcs11Error {
    /// Whether this is a transient unavailability (answer 503, retry later).
    pub const fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

impl std::fmt::Display for Pkcs11Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Config(e) | Self::NotFound(e) | Self::Failed(e) => f.write_str(e),
            Self::Module(e) => write!(f, "PKCS#11 module {e}"),
            Self::Pin { source, reason } => write!(f, "{}: {reason}", source.describe()),
            Self::Unavailable(e) => write!(f, "PKCS#11 token unavailable: {e}"),
        }
    }
}

impl std::error::Error for Pkcs11Error {}
