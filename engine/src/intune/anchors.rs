//! The pinned Intune Connector trust anchors of one profile.
//!
//! Trust is pinned, never negotiated: the JWS `kid`/`x5c`/`jku` headers are
//! ignored and every anchor whose key type fits the algorithm is tried. The
//! pool is loaded from a PEM bundle (several Connectors in HA, concatenated)
//! and swapped atomically on reload (SIGHUP); a bad bundle keeps the old pool.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::crypto::PublicKeyRef;
use crate::time::UnixTime;
use crate::x509::{CertificateRef, name_to_string};

/// The kind of key an anchor holds, which decides the JWS algorithms it can verify.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnchorKeyKind {
    /// RSA (>= 2048 bits): verifies RS256.
    Rsa,
    /// ECDSA P-256: verifies ES256.
    EcP256,
}

/// One trusted Connector signing certificate.
#[derive(Clone, Debug)]
pub struct TrustAnchor {
    der: Vec<u8>,
    subject: String,
    not_before: UnixTime,
    not_after: UnixTime,
    kind: AnchorKeyKind,
    /// PKCS#1 RSAPublicKey DER (RSA) or the SEC1 point (P-256).
    key: Vec<u8>,
    /// `anchor:<hex SHA-256 of key>`: the replay cache scope of the nonces
    /// this anchor signs.
    replay_scope: String,
}

impl TrustAnchor {
    /// The certificate DER.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// The subject, RFC 4514 (`CN=Microsoft Intune Certificate Connector`).
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// notBefore.
    pub const fn not_before(&self) -> UnixTime {
        self.not_before
    }

    /// notAfter (the admin plane shows an expiry countdown from this).
    pub const fn not_after(&self) -> UnixTime {
        self.not_after
    }

    /// The key type.
    pub const fn key_kind(&self) -> AnchorKeyKind {
        self.kind
    }

    /// The raw public key: PKCS#1 RSAPublicKey DER for RSA, the SEC1 point for P-256.
    pub fn public_key(&self) -> &[u8] {
        &self.key
    }

    /// The replay cache scope of the challenges this anchor signs:
    /// `anchor:` and the hex SHA-256 of its public key. Keyed by the key, not
    /// the profile, so a nonce is single-use across every profile that
    /// trusts the anchor (and a Connector certificate renewed with the same
    /// key keeps its scope).
    pub fn replay_scope(&self) -> &str {
        &self.replay_scope
    }
}

/// Why a trust anchor bundle was refused. Each variant names the culprit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AnchorError {
    /// The PEM text could not be decoded.
    Pem(String),
    /// The bundle holds no `CERTIFICATE` block.
    NoCertificate,
    /// Certificate number `index` (0-based, in bundle order) is not valid X.509 DER.
    Parse {
        /// Position in the bundle.
        index: usize,
        /// The decoder's message.
        reason: String,
    },
    /// A certificate is past its notAfter.
    Expired {
        /// Position in the bundle.
        index: usize,
        /// Its subject.
        subject: String,
        /// Its notAfter.
        not_after: UnixTime,
    },
    /// A certificate's key cannot verify RS256 or ES256 (not RSA >= 2048 or P-256).
    UnsupportedKey {
        /// Position in the bundle.
        index: usize,
        /// Its subject.
        subject: String,
    },
}

impl std::fmt::Display for AnchorError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Pem(e) => write!(f, "Intune trust anchor bundle: {e}"),
            Self::NoCertificate => f.write_str("Intune trust anchor bundle holds no CERTIFICATE block"),
            Self::Parse { index, reason } => {
                write!(f, "Intune trust anchor #{index} is not a valid certificate: {reason}")
            }
            Self::Expired { index, subject, not_after } => {
                write!(f, "Intune trust anchor #{index} ({subject}) expired at {}", not_after.to_rfc3339())
            }
            Self::UnsupportedKey { index, subject } => write!(
                f,
                "Intune trust anchor #{index} ({subject}) has a key that is neither RSA >= 2048 bits nor ECDSA P-256"
            ),
        }
    }
}

impl std::error::Error for AnchorError {}

/// An immutable set of trust anchors.
#[derive(Clone, Debug, Default)]
pub struct TrustAnchorPool {
    anchors: Vec<TrustAnchor>,
}

impl TrustAnchorPool {
    /// The anchors, in bundle order.
    pub fn anchors(&self) -> &[TrustAnchor] {
        &self.anchors
    }

    /// Number of anchors.
    pub fn len(&self) -> usize {
        self.anchors.len()
    }

    /// True when the pool is empty (never the case for a loaded pool).
    pub fn is_empty(&self) -> bool {
        self.anchors.is_empty()
    }

    /// (subject, notAfter) of every anchor, for the admin plane.
    pub fn summary(&self) -> Vec<(String, UnixTime)> {
        self.anchors.iter().map(|a| (a.subject.clone(), a.not_after)).collect()
    }

    /// Builds a pool from certificate DERs (tests and callers that already
    /// decoded PEM).
    ///
    /// # Errors
    /// As [`load_pool`].
    pub fn from_ders(ders: Vec<Vec<u8>>, now: UnixTime) -> Result<Self, AnchorError> {
        if ders.is_empty() {
            return Err(AnchorError::NoCertificate);
        }
        let mut anchors = Vec::with_capacity(ders.len());
        for (index, der) in ders.into_iter().enumerate() {
            let cert = CertificateRef::parse(&der).map_err(|e| AnchorError::Parse { index, reason: e.to_string() })?;
            let subject = name_to_string(cert.subject);
            if cert.not_after < now {
                return Err(AnchorError::Expired { index, subject, not_after: cert.not_after });
            }
            let unsupported = || AnchorError::UnsupportedKey { index, subject: subject.clone() };
            let (kind, key) = match cert.spki.public_key().map_err(|_| unsupported())? {
                pk @ PublicKeyRef::Rsa(k) if pk.bits() >= 2048 => (AnchorKeyKind::Rsa, k.to_vec()),
                PublicKeyRef::EcP256(k) => (AnchorKeyKind::EcP256, k.to_vec()),
                _ => return Err(unsupported()),
            };
            let (not_before, not_after) = (cert.not_before, cert.not_after);
            let replay_scope = format!("anchor:{}", crate::handle::hex(&crate::crypto::DigestAlg::Sha256.digest(&key)));
            anchors.push(TrustAnchor { der, subject, not_before, not_after, kind, key, replay_scope });
        }
        Ok(Self { anchors })
    }
}

/// Loads a trust anchor pool from a PEM bundle (one or more `CERTIFICATE`
/// blocks; text around them is ignored).
///
/// # Errors
/// [`AnchorError`] for undecodable PEM, no certificate, an unparsable
/// certificate, an expired certificate (at `now`) or an unusable key; the
/// error names which certificate.
pub fn load_pool(pem: &str, now: UnixTime) -> Result<TrustAnchorPool, AnchorError> {
    let ders = crate::pem::certificates(pem).map_err(|e| AnchorError::Pem(e.0))?;
    TrustAnchorPool::from_ders(ders, now)
}

/// A lock-free, atomically swappable handle to a profile's trust anchor pool.
/// Cheap to clone (all clones see the same pool). Readers take a snapshot with
/// [`SharedPool::load`]; [`SharedPool::reload`] swaps in a new pool only when
/// the new bundle is entirely valid.
#[derive(Clone, Debug)]
pub struct SharedPool {
    inner: Arc<ArcSwap<TrustAnchorPool>>,
}

impl SharedPool {
    /// Wraps an initial pool.
    pub fn new(pool: TrustAnchorPool) -> Self {
        Self { inner: Arc::new(ArcSwap::from_pointee(pool)) }
    }

    /// Loads the initial pool from PEM.
    ///
    /// # Errors
    /// As [`load_pool`].
    pub fn from_pem(pem: &str, now: UnixTime) -> Result<Self, AnchorError> {
        load_pool(pem, now).map(Self::new)
    }

    /// The current pool (a snapshot; later reloads do not affect it).
    pub fn load(&self) -> Arc<TrustAnchorPool> {
        self.inner.load_full()
    }

    /// Replaces the pool with the bundle `pem` (SIGHUP). On any error the old
    /// pool stays in place, so a half-done rotation cannot stop enrolment.
    ///
    /// # Errors
    /// As [`load_pool`]; the current pool is then unchanged.
    pub fn reload(&self, pem: &str, now: UnixTime) -> Result<(), AnchorError> {
        let pool = load_pool(pem, now)?;
        self.inner.store(Arc::new(pool));
        Ok(())
    }

    /// Replaces the pool with an already-built one.
    pub fn store(&self, pool: TrustAnchorPool) {
        self.inner.store(Arc::new(pool));
    }
}
