//! The crypto provider seam: every algorithm and every private-key operation
//! the engine and the issuers perform goes through these two traits.
//!
//! - [`CryptoProvider`] (after rustls's `CryptoProvider`): stateless
//!   algorithms (digests, signature verification over a SubjectPublicKeyInfo
//!   key, the CMS content ciphers, RSA PKCS#1 v1.5 key transport to a public
//!   key, OS randomness) and the factory for in-memory private keys (loading
//!   from DER, generation).
//! - [`PrivateKey`]: one private key used through a trait object
//!   (`Arc<dyn PrivateKey>`), which does not assume the key bytes are in
//!   memory: a PKCS#11 token key implements it as well as a software key.
//!
//! Implementations in this crate: `crypto::aws_lc::AwsLcProvider` (cargo
//! feature `aws-lc`, the default) and `crypto::rust_crypto::RustCryptoProvider`
//! (feature `rustcrypto`, pure Rust). [`default_provider`] is the one used by
//! the convenience methods on [`DigestAlg`], [`SignatureAlg`] and
//! [`ContentCipher`] and by key loading without an explicit provider; a profile's
//! engine uses the provider in its `ProfileConfig::crypto`.

use std::sync::{Arc, OnceLock};

use super::{ContentCipher, DigestAlg, EcCurve, KeyError, PublicKeyRef, SignatureAlg, VerifyError};
use crate::crypto::CipherError;

/// What a private key is: the algorithm and its size, for policy checks,
/// algorithm identifiers, logs and the admin API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyKind {
    /// RSA with a modulus of this many bits.
    Rsa {
        /// Modulus length in bits (2048, 3072, 4096, ...).
        modulus_bits: usize,
    },
    /// ECDSA on this NIST curve.
    Ec(EcCurve),
}

impl KeyKind {
    /// `rsa-2048`, `ecdsa-p256`, `ecdsa-p384`: the name used in errors, logs
    /// and the admin API.
    pub fn label(self) -> String {
        match self {
            Self::Rsa { modulus_bits } => format!("rsa-{modulus_bits}"),
            Self::Ec(EcCurve::P256) => "ecdsa-p256".to_string(),
            Self::Ec(EcCurve::P384) => "ecdsa-p384".to_string(),
        }
    }

    /// Whether this is an RSA key (which can also receive CMS key transport).
    pub const fn is_rsa(self) -> bool {
        matches!(self, Self::Rsa { .. })
    }
}

/// A private key, wherever it lives (memory, PKCS#11 token, ...).
///
/// Every method may be called from several threads at once.
pub trait PrivateKey: Send + Sync + std::fmt::Debug {
    /// The SubjectPublicKeyInfo DER of the key's public half (RFC 5280 §4.1.2.7).
    fn spki_der(&self) -> &[u8];

    /// The key's algorithm and size.
    fn kind(&self) -> KeyKind;

    /// Signs `message`, hashing it with `digest` raised by
    /// [`DigestAlg::for_reply`] (SHA-1 becomes SHA-256):
    /// - RSA: PKCS #1 v1.5 (RFC 8017 §8.2), the signature as long as the modulus;
    /// - ECDSA: a DER `ECDSA-Sig-Value` (RFC 5753 §2.1.1; RFC 5758 §3.2), the
    ///   hash converted to an integer as FIPS 186-4 §6.4 says (truncated to
    ///   the order's length, or left-padded).
    ///
    /// # Errors
    /// [`KeyError`]; [`KeyError::is_unavailable`] when the key cannot be
    /// reached at the moment (an HSM token gone), which a transport answers
    /// with 503 rather than a failure.
    fn sign(&self, digest: DigestAlg, message: &[u8]) -> Result<Vec<u8>, KeyError>;

    /// Unwraps an RSA PKCS #1 v1.5 encrypted content key (RFC 8017 §7.2.2;
    /// RFC 5652 §6.2.1 KeyTransRecipientInfo, RFC 8894 §3.2.2).
    ///
    /// `Ok(None)` on **any** failure that depends on the ciphertext (wrong
    /// length, bad padding, not an RSA key), without saying which: the caller
    /// (`envelope::open_for`) substitutes a random key (implicit rejection),
    /// so an implementation must not reveal the reason in any other way
    /// (logs included).
    ///
    /// # Errors
    /// Only when the key cannot be used at all, independently of the
    /// ciphertext (an HSM token gone): [`KeyError::is_unavailable`].
    fn decrypt_pkcs1v15(&self, ciphertext: &[u8]) -> Result<Option<Vec<u8>>, KeyError>;
}

/// An error from the OS random source: no cryptographic service can continue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RandomError;

impl std::fmt::Display for RandomError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the OS random source failed")
    }
}

impl std::error::Error for RandomError {}

/// A freshly generated private key and its unencrypted PKCS #8 DER (RFC 5958),
/// for the data-dir bootstrap to store.
#[derive(Debug)]
pub struct GeneratedKey {
    /// The key, ready to use.
    pub key: Arc<dyn PrivateKey>,
    /// Its PKCS #8 `PrivateKeyInfo` DER.
    pub pkcs8_der: Vec<u8>,
}

/// The algorithms and software keys of one cryptographic library.
pub trait CryptoProvider: Send + Sync + std::fmt::Debug {
    /// A short name for logs and benchmarks: `aws-lc-rs`, `rustcrypto`.
    fn name(&self) -> &'static str;

    /// Digests the concatenation of `parts` (without copying them together).
    fn digest(&self, alg: DigestAlg, parts: &[&[u8]]) -> Vec<u8>;

    /// Verifies `signature` over the concatenation of `parts` with `key`
    /// (e.g. CMS signedAttrs re-tagged as SET, RFC 5652 §5.4:
    /// `[&[0x31], &signed_attrs[1..]]`).
    ///
    /// The accepted set is the same in every provider: RSA PKCS #1 v1.5 with
    /// SHA-1/256/384/512 on 1024..=8192-bit moduli (SHA-384 from 2048 bits),
    /// ECDSA P-256/P-384 with SHA-256/384/512 in ASN.1 DER form; ECDSA with
    /// SHA-1 is verified as SHA-256 (see [`SignatureAlg`]).
    ///
    /// # Errors
    /// [`VerifyError`] when the key does not fit the algorithm, the key is
    /// unusable, or the signature is wrong.
    fn verify(
        &self,
        alg: SignatureAlg,
        key: PublicKeyRef<'_>,
        parts: &[&[u8]],
        signature: &[u8],
    ) -> Result<(), VerifyError>;

    /// Encrypts `plaintext` in CBC mode with PKCS #7 padding (RFC 5652 §6.3).
    ///
    /// # Errors
    /// [`CipherError`] for a wrong key/IV size or a refused DES key (3DES with equal sub-keys).
    fn encrypt_content(
        &self,
        cipher: ContentCipher,
        key: &[u8],
        iv: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, CipherError>;

    /// Decrypts CBC ciphertext in place and removes the PKCS #7 padding,
    /// returning the plaintext length.
    ///
    /// # Errors
    /// [`CipherError`], one opaque value for a wrong key/IV size, a refused DES
    /// key, a length that is not a block multiple, or bad padding.
    fn decrypt_content(
        &self,
        cipher: ContentCipher,
        key: &[u8],
        iv: &[u8],
        buf: &mut [u8],
    ) -> Result<usize, CipherError>;

    /// Whether [`CryptoProvider::encrypt_content`] accepts `key` for `cipher`
    /// (the right length and, for DES, not a weak or semi-weak key and, for 3DES, no two equal
    /// sub-keys, as aws-lc requires).
    fn accepts_content_key(&self, cipher: ContentCipher, key: &[u8]) -> bool;

    /// Encrypts `plaintext` (a content key) to the RSA public key in
    /// `spki_der` with PKCS #1 v1.5 padding (RFC 8017 §7.2.1; RFC 5652 §6.2.1).
    ///
    /// # Errors
    /// When the SPKI is not a usable RSA key.
    fn rsa_encrypt_pkcs1v15(&self, spki_der: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, KeyError>;

    /// Fills `buf` from the OS random source.
    ///
    /// # Errors
    /// [`RandomError`] when the OS entropy source is gone.
    fn fill_random(&self, buf: &mut [u8]) -> Result<(), RandomError>;

    /// Loads a software private key from DER: PKCS #8 `PrivateKeyInfo`
    /// (RFC 5958), PKCS #1 `RSAPrivateKey` (RFC 8017 A.1.2) or SEC1
    /// `ECPrivateKey` (RFC 5915). RSA from 2048 bits; EC on P-256 or P-384.
    ///
    /// # Errors
    /// When the bytes are none of these, or the key is refused (size, curve).
    fn load_private_key(&self, der: &[u8]) -> Result<Arc<dyn PrivateKey>, KeyError>;

    /// Generates a software private key: RSA of 2048, 3072 or 4096 bits, or
    /// ECDSA on P-256 or P-384.
    ///
    /// # Errors
    /// For an unsupported size, or an internal failure.
    fn generate_private_key(&self, kind: KeyKind) -> Result<GeneratedKey, KeyError>;
}

static INSTALLED: OnceLock<Arc<dyn CryptoProvider>> = OnceLock::new();

/// The process-wide provider: the one given to [`install_default_provider`],
/// else aws-lc-rs when the `aws-lc` feature is on, else RustCrypto.
pub fn default_provider() -> &'static Arc<dyn CryptoProvider> {
    INSTALLED.get_or_init(built_in_default)
}

/// Sets the process-wide provider. Call it once at start-up, before any key
/// is loaded or any engine built.
///
/// # Errors
/// Gives `provider` back when a default was already chosen (installed, or
/// used by [`default_provider`]).
pub fn install_default_provider(provider: Arc<dyn CryptoProvider>) -> Result<(), Arc<dyn CryptoProvider>> {
    INSTALLED.set(provider)
}

#[cfg(feature = "aws-lc")]
fn built_in_default() -> Arc<dyn CryptoProvider> {
    Arc::new(super::aws_lc::AwsLcProvider)
}

#[cfg(not(feature = "aws-lc"))]
fn built_in_default() -> Arc<dyn CryptoProvider> {
    Arc::new(super::rust_crypto::RustCryptoProvider)
}

/// Every provider compiled into this build, the default first: what the
/// differential tests and the benchmarks iterate over.
pub fn available_providers() -> Vec<Arc<dyn CryptoProvider>> {
    let aws_lc: Option<Arc<dyn CryptoProvider>> = {
        #[cfg(feature = "aws-lc")]
        let p = Some(Arc::new(super::aws_lc::AwsLcProvider) as Arc<dyn CryptoProvider>);
        #[cfg(not(feature = "aws-lc"))]
        let p = None;
        p
    };
    let rust_crypto: Option<Arc<dyn CryptoProvider>> = {
        #[cfg(feature = "rustcrypto")]
        let p = Some(Arc::new(super::rust_crypto::RustCryptoProvider) as Arc<dyn CryptoProvider>);
        #[cfg(not(feature = "rustcrypto"))]
        let p = None;
        p
    };
    [aws_lc, rust_crypto].into_iter().flatten().collect()
}
