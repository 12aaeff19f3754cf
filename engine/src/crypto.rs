//! Cryptographic algorithms and keys, behind a [`provider::CryptoProvider`].
//!
//! The algorithm enums here ([`DigestAlg`], [`SignatureAlg`], [`ContentCipher`])
//! name what a message asks for; their convenience methods run on the
//! process-wide [`provider::default_provider`] (aws-lc-rs unless built without
//! the `aws-lc` feature). The engine itself uses the provider of the profile
//! (`ProfileConfig::crypto`). The key types ([`RsaPrivateKey`], [`RaKey`],
//! [`SigningKey`], ...) wrap an `Arc<dyn` [`provider::PrivateKey`]`>`, so a key
//! held by an HSM serves wherever a software key does.
//!
//! The engine never draws OS randomness itself: nonces, IVs, content keys and
//! serial numbers come from the [`RandomSource`] in the configuration, so tests
//! and fuzzers can be deterministic. (RSA blinding and PKCS#1 v1.5 encryption
//! padding inside aws-lc use its own generator; that never affects the bytes a
//! test compares.)

use std::sync::Arc;

use crate::oid;

#[cfg(feature = "aws-lc")]
pub mod aws_lc;
pub mod provider;
#[cfg(feature = "rustcrypto")]
pub mod rust_crypto;

#[cfg(not(any(feature = "aws-lc", feature = "rustcrypto")))]
compile_error!("scep-engine needs a crypto provider: enable the `aws-lc` or the `rustcrypto` feature");

pub use provider::{CryptoProvider, GeneratedKey, KeyKind, PrivateKey, default_provider};

/// Source of the randomness the engine needs (nonces, IVs, content keys, serials).
pub trait RandomSource: Send + Sync + std::fmt::Debug {
    /// Fills `buf` with random bytes.
    fn fill(&self, buf: &mut [u8]);
}

/// The operating system's CSPRNG (through the default provider). The production source.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemRandom;

impl RandomSource for SystemRandom {
    fn fill(&self, buf: &mut [u8]) {
        // The generator only fails when the OS entropy source is gone, in which
        // case no cryptographic service can continue safely.
        #[allow(clippy::expect_used)]
        default_provider().fill_random(buf).expect("OS random source failed");
    }
}

/// Message digest algorithms seen in SCEP (RFC 8894 §3.5.2 capabilities).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DigestAlg {
    /// SHA-1 (legacy clients only; never used for our own signatures).
    Sha1,
    /// SHA-256 (default).
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
}

impl DigestAlg {
    /// Identifies a digest from its OID contents.
    pub fn from_oid(oid_contents: &[u8]) -> Option<Self> {
        Some(match oid_contents {
            oid::SHA1 => Self::Sha1,
            oid::SHA256 => Self::Sha256,
            oid::SHA384 => Self::Sha384,
            oid::SHA512 => Self::Sha512,
            _ => return None,
        })
    }

    /// The OID contents.
    pub const fn oid(self) -> &'static [u8] {
        match self {
            Self::Sha1 => oid::SHA1,
            Self::Sha256 => oid::SHA256,
            Self::Sha384 => oid::SHA384,
            Self::Sha512 => oid::SHA512,
        }
    }

    /// The sha*WithRSAEncryption signature OID for this digest.
    pub const fn rsa_signature_oid(self) -> &'static [u8] {
        match self {
            Self::Sha1 => oid::SHA1_WITH_RSA,
            Self::Sha256 => oid::SHA256_WITH_RSA,
            Self::Sha384 => oid::SHA384_WITH_RSA,
            Self::Sha512 => oid::SHA512_WITH_RSA,
        }
    }

    /// The ecdsa-with-SHA* signature OID (SHA-1 is never used with ECDSA here).
    pub const fn ecdsa_signature_oid(self) -> &'static [u8] {
        match self {
            Self::Sha1 | Self::Sha256 => oid::ECDSA_WITH_SHA256,
            Self::Sha384 => oid::ECDSA_WITH_SHA384,
            Self::Sha512 => oid::ECDSA_WITH_SHA512,
        }
    }

    /// The name used in GetCACaps and logs.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Sha1 => "SHA-1",
            Self::Sha256 => "SHA-256",
            Self::Sha384 => "SHA-384",
            Self::Sha512 => "SHA-512",
        }
    }

    /// Digest output length in bytes.
    pub const fn output_len(self) -> usize {
        match self {
            Self::Sha1 => 20,
            Self::Sha256 => 32,
            Self::Sha384 => 48,
            Self::Sha512 => 64,
        }
    }

    /// Digests `data` (default provider).
    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        default_provider().digest(self, &[data])
    }

    /// Digests the concatenation of `parts` without copying them together
    /// (default provider).
    pub fn digest_parts(self, parts: &[&[u8]]) -> Vec<u8> {
        default_provider().digest(self, parts)
    }

    /// The digest to sign our own replies with: the request's digest, raised to
    /// SHA-256 when the request used SHA-1 (aws-lc cannot sign with SHA-1, and a
    /// reply is never weaker than the request).
    pub const fn for_reply(self) -> Self {
        match self {
            Self::Sha1 => Self::Sha256,
            other => other,
        }
    }
}

/// CMS content-encryption algorithms (RFC 8894 §3.5.2; all CBC with PKCS#7 padding).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ContentCipher {
    /// Single DES-CBC: broken, accepted only where a profile explicitly allows it.
    DesCbc,
    /// Triple DES (EDE3) CBC.
    DesEde3Cbc,
    /// AES-128-CBC.
    Aes128Cbc,
    /// AES-192-CBC.
    Aes192Cbc,
    /// AES-256-CBC (default for replies).
    Aes256Cbc,
}

/// A content key or IV of the wrong size, a refused DES key, or bad padding. One
/// opaque error on purpose: callers must not be able to tell these apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CipherError;

impl ContentCipher {
    /// Identifies a cipher from its OID contents.
    pub fn from_oid(oid_contents: &[u8]) -> Option<Self> {
        Some(match oid_contents {
            oid::DES_CBC => Self::DesCbc,
            oid::DES_EDE3_CBC => Self::DesEde3Cbc,
            oid::AES128_CBC => Self::Aes128Cbc,
            oid::AES192_CBC => Self::Aes192Cbc,
            oid::AES256_CBC => Self::Aes256Cbc,
            _ => return None,
        })
    }

    /// The OID contents.
    pub const fn oid(self) -> &'static [u8] {
        match self {
            Self::DesCbc => oid::DES_CBC,
            Self::DesEde3Cbc => oid::DES_EDE3_CBC,
            Self::Aes128Cbc => oid::AES128_CBC,
            Self::Aes192Cbc => oid::AES192_CBC,
            Self::Aes256Cbc => oid::AES256_CBC,
        }
    }

    /// Content-encryption key length in bytes.
    pub const fn key_len(self) -> usize {
        match self {
            Self::DesCbc => 8,
            Self::DesEde3Cbc | Self::Aes192Cbc => 24,
            Self::Aes128Cbc => 16,
            Self::Aes256Cbc => 32,
        }
    }

    /// IV (and block) length in bytes.
    pub const fn iv_len(self) -> usize {
        match self {
            Self::DesCbc | Self::DesEde3Cbc => 8,
            _ => 16,
        }
    }

    /// A human name for logs.
    pub const fn name(self) -> &'static str {
        match self {
            Self::DesCbc => "DES-CBC",
            Self::DesEde3Cbc => "DES-EDE3-CBC",
            Self::Aes128Cbc => "AES-128-CBC",
            Self::Aes192Cbc => "AES-192-CBC",
            Self::Aes256Cbc => "AES-256-CBC",
        }
    }

    /// The cipher for our reply: the request's, except that single DES is raised
    /// to triple DES (a reply is never weaker than the request, and every client
    /// that speaks DES speaks 3DES).
    pub const fn for_reply(self) -> Self {
        match self {
            Self::DesCbc => Self::DesEde3Cbc,
            other => other,
        }
    }

    /// Decrypts CBC ciphertext in place and removes PKCS#7 padding, returning the
    /// plaintext length (default provider).
    ///
    /// # Errors
    /// [`CipherError`] for a wrong key/IV size, a refused DES key, or bad padding.
    pub fn decrypt(self, key: &[u8], iv: &[u8], buf: &mut [u8]) -> Result<usize, CipherError> {
        default_provider().decrypt_content(self, key, iv, buf)
    }

    /// Encrypts `plaintext` with PKCS#7 padding under `key` and `iv` (default provider).
    ///
    /// # Errors
    /// [`CipherError`] for a wrong key/IV size or a refused DES key (3DES with equal sub-keys).
    pub fn encrypt(self, key: &[u8], iv: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, CipherError> {
        default_provider().encrypt_content(self, key, iv, plaintext)
    }

    /// Generates a content key from `rng` (default provider's key check).
    pub fn generate_key(self, rng: &dyn RandomSource) -> Vec<u8> {
        self.generate_key_with(&**default_provider(), rng)
    }

    /// Generates a content key from `rng`, re-drawing the (astronomically rare)
    /// weak DES keys and 3DES keys with equal sub-keys, which `provider` refuses.
    pub fn generate_key_with(self, provider: &dyn CryptoProvider, rng: &dyn RandomSource) -> Vec<u8> {
        let mut key = vec![0u8; self.key_len()];
        for _ in 0..16 {
            rng.fill(&mut key);
            if self.iv_len() == 16 || provider.accepts_content_key(self, &key) {
                break;
            }
        }
        key
    }
}

/// A signature verification failure (bad signature, unsupported algorithm, or
/// an unusable public key). Deliberately carries no detail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VerifyError;

/// A public key taken from a SubjectPublicKeyInfo.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PublicKeyRef<'a> {
    /// RSA: the PKCS#1 RSAPublicKey DER (the SPKI BIT STRING contents).
    Rsa(&'a [u8]),
    /// ECDSA P-256: the SEC1 point.
    EcP256(&'a [u8]),
    /// ECDSA P-384: the SEC1 point.
    EcP384(&'a [u8]),
}

impl PublicKeyRef<'_> {
    /// Key size in bits (RSA modulus bits, or the curve size).
    pub fn bits(&self) -> usize {
        match self {
            Self::Rsa(der) => rsa_modulus_bits(der).unwrap_or(0),
            Self::EcP256(_) => 256,
            Self::EcP384(_) => 384,
        }
    }
}

fn rsa_modulus_bits(pkcs1: &[u8]) -> Option<usize> {
    let seq = crate::wire::parse_single(pkcs1).ok()?;
    let mut r = seq.reader();
    let n = r.read().ok()?.unsigned_integer().ok()?;
    let lead = *n.first()?;
    Some((n.len() - 1) * 8 + (8 - lead.leading_zeros() as usize))
}

/// A signature algorithm as named in a certificate, CSR or SignerInfo.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignatureAlg {
    /// RSA PKCS#1 v1.5 with the given digest.
    RsaPkcs1(DigestAlg),
    /// ECDSA (ASN.1 DER signature) with the given digest.
    Ecdsa(DigestAlg),
}

impl SignatureAlg {
    /// Identifies a signature algorithm from its OID. `rsaEncryption` alone (as
    /// many SCEP clients put in SignerInfo) needs the digest from elsewhere:
    /// `fallback_digest` supplies it (RFC 5652 §5.3 digestAlgorithm).
    pub fn from_oid(oid_contents: &[u8], fallback_digest: Option<DigestAlg>) -> Option<Self> {
        Some(match oid_contents {
            oid::RSA_ENCRYPTION => Self::RsaPkcs1(fallback_digest?),
            oid::SHA1_WITH_RSA => Self::RsaPkcs1(DigestAlg::Sha1),
            oid::SHA256_WITH_RSA => Self::RsaPkcs1(DigestAlg::Sha256),
            oid::SHA384_WITH_RSA => Self::RsaPkcs1(DigestAlg::Sha384),
            oid::SHA512_WITH_RSA => Self::RsaPkcs1(DigestAlg::Sha512),
            oid::ECDSA_WITH_SHA256 => Self::Ecdsa(DigestAlg::Sha256),
            oid::ECDSA_WITH_SHA384 => Self::Ecdsa(DigestAlg::Sha384),
            oid::ECDSA_WITH_SHA512 => Self::Ecdsa(DigestAlg::Sha512),
            _ => return None,
        })
    }

    /// Verifies `signature` over `message` with `key` (default provider).
    ///
    /// # Errors
    /// [`VerifyError`] when the key type does not fit the algorithm, the key is
    /// unusable, or the signature is wrong.
    pub fn verify(self, key: PublicKeyRef<'_>, message: &[u8], signature: &[u8]) -> Result<(), VerifyError> {
        default_provider().verify(self, key, &[message], signature)
    }

    /// Verifies `signature` over the concatenation of `parts` without copying
    /// them together (e.g. CMS signedAttrs re-tagged as SET, RFC 5652 §5.4:
    /// `[&[0x31], &signed_attrs[1..]]`), with the default provider.
    ///
    /// # Errors
    /// As [`SignatureAlg::verify`].
    pub fn verify_parts(self, key: PublicKeyRef<'_>, parts: &[&[u8]], signature: &[u8]) -> Result<(), VerifyError> {
        default_provider().verify(self, key, parts, signature)
    }
}
/// An error loading or using a private key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyError {
    message: String,
    unavailable: bool,
}

impl KeyError {
    /// A key that is malformed, refused, or failed to operate.
    pub fn new(message: impl Into<String>) -> Self {
        Self { message: message.into(), unavailable: false }
    }

    /// A key that cannot be reached at the moment (an HSM token removed, its
    /// session lost): the operation may succeed later, and a transport
    /// answers 503 rather than a failure.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self { message: message.into(), unavailable: true }
    }

    /// Whether this is [`KeyError::unavailable`].
    pub const fn is_unavailable(&self) -> bool {
        self.unavailable
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl std::fmt::Display for KeyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for KeyError {}

/// Wraps a PKCS#1 RSAPrivateKey in a PKCS#8 PrivateKeyInfo (RFC 5208 §5).
#[cfg_attr(not(feature = "aws-lc"), allow(dead_code))]
fn rsa_pkcs1_to_pkcs8(pkcs1: &[u8]) -> Vec<u8> {
    let mut w = crate::wire::Writer::with_capacity(pkcs1.len() + 32);
    w.sequence(|w| {
        w.small_uint(0);
        w.sequence(|w| {
            w.oid(oid::RSA_ENCRYPTION).null();
        });
        w.octet_string(pkcs1);
    });
    w.into_vec()
}

/// The integer an ECDSA signature on `curve` signs for `hash`, as FIPS 186-4
/// §6.4 defines it, as an octet string of the curve order's length: the
/// leftmost bits of the hash, as many as the order has. A longer hash
/// (SHA-384/512 on P-256, SHA-512 on P-384) is truncated; a shorter one
/// (SHA-256 on P-384) is left-padded with zero octets, which leaves its
/// integer value unchanged.
pub fn ecdsa_hash_to_order_len(hash: &[u8], curve: EcCurve) -> Vec<u8> {
    let order_len = curve.order_len();
    let mut e = vec![0u8; order_len];
    let taken = hash.len().min(order_len);
    let (_, tail) = e.split_at_mut(order_len - taken);
    tail.copy_from_slice(hash.get(..taken).unwrap_or_default());
    e
}

/// Compares two equal-length values (digests, MACs) without an early exit, so
/// the time taken does not say where they differ. Values of different lengths
/// are unequal at once (the length is not secret where this is used).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && std::hint::black_box(a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y))) == 0
}

/// Converts a fixed-size ECDSA signature (`r || s`, each the curve order's
/// length, as JWS ES256 carries it: RFC 7518 §3.4) to a DER `ECDSA-Sig-Value`
/// (RFC 5753 §2.1.1). `None` for an odd or empty length.
pub fn ecdsa_fixed_to_der(fixed: &[u8]) -> Option<Vec<u8>> {
    if fixed.is_empty() || !fixed.len().is_multiple_of(2) {
        return None;
    }
    let (r, s) = fixed.split_at(fixed.len() / 2);
    let mut w = crate::wire::Writer::with_capacity(fixed.len() + 8);
    w.sequence(|w| {
        w.unsigned_integer(r).unsigned_integer(s);
    });
    Some(w.into_vec())
}

/// An RSA private key: signs (PKCS#1 v1.5) and unwraps CMS content keys.
#[derive(Clone)]
pub struct RsaPrivateKey {
    key: Arc<dyn PrivateKey>,
    modulus_bits: usize,
}

impl std::fmt::Debug for RsaPrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RsaPrivateKey").field("bits", &self.modulus_bits).field("key", &self.key).finish()
    }
}

impl RsaPrivateKey {
    /// Loads a PKCS#8 (`PRIVATE KEY`) or PKCS#1 (`RSA PRIVATE KEY`) DER key
    /// with the default provider.
    ///
    /// # Errors
    /// When the bytes are not an RSA key the provider accepts (e.g. < 2048 bits).
    pub fn from_der(der: &[u8]) -> Result<Self, KeyError> {
        Self::from_der_with(&**default_provider(), der)
    }

    /// Loads a PKCS#8 or PKCS#1 DER key with `provider`.
    ///
    /// # Errors
    /// As [`RsaPrivateKey::from_der`].
    pub fn from_der_with(provider: &dyn CryptoProvider, der: &[u8]) -> Result<Self, KeyError> {
        let key =
            provider.load_private_key(der).map_err(|e| KeyError::new(format!("not a usable RSA private key: {e}")))?;
        Self::from_key(key)
    }

    /// Wraps a key from any source (a provider, a PKCS#11 token).
    ///
    /// # Errors
    /// When `key` is not RSA.
    pub fn from_key(key: Arc<dyn PrivateKey>) -> Result<Self, KeyError> {
        match key.kind() {
            KeyKind::Rsa { modulus_bits } => Ok(Self { key, modulus_bits }),
            other => Err(KeyError::new(format!("not a usable RSA private key: the key is {}", other.label()))),
        }
    }

    /// Generates a new key of `bits` (2048, 3072 or 4096) with the default
    /// provider and returns it with its PKCS#8 DER.
    ///
    /// # Errors
    /// For an unsupported size.
    pub fn generate(bits: usize) -> Result<(Self, Vec<u8>), KeyError> {
        let g = default_provider().generate_private_key(KeyKind::Rsa { modulus_bits: bits })?;
        Ok((Self::from_key(g.key)?, g.pkcs8_der))
    }

    /// The key behind this handle.
    pub fn private_key(&self) -> &Arc<dyn PrivateKey> {
        &self.key
    }

    /// The SubjectPublicKeyInfo DER.
    pub fn spki_der(&self) -> &[u8] {
        self.key.spki_der()
    }

    /// Modulus length in bytes (= signature length).
    pub const fn modulus_len(&self) -> usize {
        self.modulus_bits.div_ceil(8)
    }

    /// Signs `message` with PKCS#1 v1.5 and `digest` (SHA-1 is raised to SHA-256).
    ///
    /// # Errors
    /// On a failure of the key ([`KeyError::is_unavailable`] for an absent token).
    pub fn sign(&self, digest: DigestAlg, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        self.key.sign(digest, message)
    }

    /// Unwraps a PKCS#1 v1.5 encrypted content key (RFC 5652 §6.2.1
    /// KeyTransRecipientInfo): see [`PrivateKey::decrypt_pkcs1v15`].
    ///
    /// # Errors
    /// Only when the key is unavailable; every ciphertext-dependent failure is `Ok(None)`.
    pub fn decrypt_pkcs1v15(&self, ciphertext: &[u8]) -> Result<Option<Vec<u8>>, KeyError> {
        self.key.decrypt_pkcs1v15(ciphertext)
    }

    /// [`RsaPrivateKey::decrypt_pkcs1v15`] with an unavailable key folded
    /// into `None`, for tests and tools.
    ///
    /// Callers must not reveal the failure separately from later failures
    /// (see `envelope`: implicit rejection).
    pub fn decrypt_pkcs1(&self, ciphertext: &[u8]) -> Option<Vec<u8>> {
        self.key.decrypt_pkcs1v15(ciphertext).ok().flatten()
    }
}

/// An ECDSA P-256 private key signing with SHA-256, as a CA uses (an RA uses
/// [`EcdsaPrivateKey`]).
#[derive(Clone, Debug)]
pub struct EcPrivateKey {
    key: Arc<dyn PrivateKey>,
}

impl EcPrivateKey {
    /// Loads a PKCS#8 (or SEC1 `EC PRIVATE KEY`) P-256 key with the default provider.
    ///
    /// # Errors
    /// When the key is not P-256 or malformed.
    pub fn from_der(der: &[u8]) -> Result<Self, KeyError> {
        let key = default_provider()
            .load_private_key(der)
            .map_err(|e| KeyError::new(format!("not a usable P-256 private key: {e}")))?;
        Self::from_key(key)
    }

    /// Wraps a key from any source.
    ///
    /// # Errors
    /// When `key` is not ECDSA P-256.
    pub fn from_key(key: Arc<dyn PrivateKey>) -> Result<Self, KeyError> {
        match key.kind() {
            KeyKind::Ec(EcCurve::P256) => Ok(Self { key }),
            other => Err(KeyError::new(format!("not a usable P-256 private key: the key is {}", other.label()))),
        }
    }

    /// Generates a new P-256 key with the default provider and returns it
    /// with its PKCS#8 DER.
    ///
    /// # Errors
    /// Only on an internal failure.
    pub fn generate() -> Result<(Self, Vec<u8>), KeyError> {
        let g = default_provider().generate_private_key(KeyKind::Ec(EcCurve::P256))?;
        Ok((Self::from_key(g.key)?, g.pkcs8_der))
    }

    /// The key behind this handle.
    pub fn private_key(&self) -> &Arc<dyn PrivateKey> {
        &self.key
    }

    /// The SubjectPublicKeyInfo DER.
    pub fn spki_der(&self) -> &[u8] {
        self.key.spki_der()
    }

    /// Signs `message` (ECDSA P-256 with SHA-256, ASN.1 DER signature).
    ///
    /// # Errors
    /// On a failure of the key.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        self.key.sign(DigestAlg::Sha256, message)
    }
}

/// A signing key of either supported kind, as a CA uses.
#[derive(Clone, Debug)]
pub enum SigningKey {
    /// RSA (PKCS#1 v1.5).
    Rsa(RsaPrivateKey),
    /// ECDSA P-256.
    EcP256(EcPrivateKey),
}

impl SigningKey {
    /// Loads an RSA or P-256 key from PKCS#8/PKCS#1/SEC1 DER with the default provider.
    ///
    /// # Errors
    /// When the key is neither.
    pub fn from_der(der: &[u8]) -> Result<Self, KeyError> {
        Self::from_der_with(&**default_provider(), der)
    }

    /// Loads an RSA or P-256 key from PKCS#8/PKCS#1/SEC1 DER with `provider`.
    ///
    /// # Errors
    /// When the key is neither.
    pub fn from_der_with(provider: &dyn CryptoProvider, der: &[u8]) -> Result<Self, KeyError> {
        Self::from_key(provider.load_private_key(der)?)
    }

    /// Wraps a key from any source.
    ///
    /// # Errors
    /// When `key` is neither RSA nor ECDSA P-256.
    pub fn from_key(key: Arc<dyn PrivateKey>) -> Result<Self, KeyError> {
        match key.kind() {
            KeyKind::Rsa { .. } => RsaPrivateKey::from_key(key).map(Self::Rsa),
            _ => EcPrivateKey::from_key(key).map(Self::EcP256),
        }
    }

    /// The key behind this handle.
    pub fn private_key(&self) -> &Arc<dyn PrivateKey> {
        match self {
            Self::Rsa(k) => k.private_key(),
            Self::EcP256(k) => k.private_key(),
        }
    }

    /// The SubjectPublicKeyInfo DER.
    pub fn spki_der(&self) -> &[u8] {
        match self {
            Self::Rsa(k) => k.spki_der(),
            Self::EcP256(k) => k.spki_der(),
        }
    }

    /// The signature algorithm OID this key signs with for `digest`.
    pub const fn signature_oid(&self, digest: DigestAlg) -> &'static [u8] {
        match self {
            Self::Rsa(_) => digest.for_reply().rsa_signature_oid(),
            Self::EcP256(_) => oid::ECDSA_WITH_SHA256,
        }
    }

    /// Writes the AlgorithmIdentifier for [`SigningKey::signature_oid`] (NULL
    /// parameters for RSA, absent for ECDSA per RFC 5758 §3.2).
    pub fn write_signature_algorithm(&self, w: &mut crate::wire::Writer, digest: DigestAlg) {
        let oid = self.signature_oid(digest);
        let is_rsa = matches!(self, Self::Rsa(_));
        w.sequence(|w| {
            w.oid(oid);
            if is_rsa {
                w.null();
            }
        });
    }

    /// Signs `message` with `digest` (RSA) or SHA-256 (P-256).
    ///
    /// # Errors
    /// On a failure of the key.
    pub fn sign(&self, digest: DigestAlg, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        match self {
            Self::Rsa(k) => k.sign(digest, message),
            Self::EcP256(k) => k.sign(message),
        }
    }
}

/// The NIST curve of an ECDSA key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EcCurve {
    /// P-256 (secp256r1).
    P256,
    /// P-384 (secp384r1).
    P384,
}

impl EcCurve {
    /// The name used in logs, errors and the admin API (`P-256`, `P-384`).
    pub const fn name(self) -> &'static str {
        match self {
            Self::P256 => "P-256",
            Self::P384 => "P-384",
        }
    }

    /// Length in bytes of the curve order (and of the field elements).
    pub const fn order_len(self) -> usize {
        match self {
            Self::P256 => 32,
            Self::P384 => 48,
        }
    }
}

/// An ECDSA P-256 or P-384 private key that signs with any SHA-2 digest, as
/// an RA signing CertReps with `ecdsa-with-SHA256/384/512` (RFC 5758 §3.2,
/// RFC 5753 §2.1.1) needs. (The CA's [`EcPrivateKey`] signs P-256 with
/// SHA-256 only.) ECDSA keys cannot receive CMS key transport, so an RA with
/// one only signs.
#[derive(Clone, Debug)]
pub struct EcdsaPrivateKey {
    key: Arc<dyn PrivateKey>,
    curve: EcCurve,
}

impl EcdsaPrivateKey {
    /// Loads a P-256 or P-384 key from PKCS#8 (`PRIVATE KEY`) or SEC1
    /// (`EC PRIVATE KEY`) DER with the default provider.
    ///
    /// # Errors
    /// When the bytes are not a P-256 or P-384 key the provider accepts.
    pub fn from_der(der: &[u8]) -> Result<Self, KeyError> {
        let key = default_provider()
            .load_private_key(der)
            .map_err(|e| KeyError::new(format!("not a usable ECDSA P-256 or P-384 private key ({e})")))?;
        Self::from_key(key)
    }

    /// Wraps a key from any source.
    ///
    /// # Errors
    /// When `key` is not ECDSA.
    pub fn from_key(key: Arc<dyn PrivateKey>) -> Result<Self, KeyError> {
        match key.kind() {
            KeyKind::Ec(curve) => Ok(Self { key, curve }),
            other => Err(KeyError::new(format!(
                "not a usable ECDSA P-256 or P-384 private key: the key is {}",
                other.label()
            ))),
        }
    }

    /// Generates a new key on `curve` with the default provider and returns
    /// it with its PKCS#8 DER.
    ///
    /// # Errors
    /// Only on an internal failure.
    pub fn generate(curve: EcCurve) -> Result<(Self, Vec<u8>), KeyError> {
        let g = default_provider().generate_private_key(KeyKind::Ec(curve))?;
        Ok((Self::from_key(g.key)?, g.pkcs8_der))
    }

    /// The key behind this handle.
    pub fn private_key(&self) -> &Arc<dyn PrivateKey> {
        &self.key
    }

    /// The key's curve.
    pub const fn curve(&self) -> EcCurve {
        self.curve
    }

    /// The SubjectPublicKeyInfo DER.
    pub fn spki_der(&self) -> &[u8] {
        self.key.spki_der()
    }

    /// Signs `message` hashed with `digest` (SHA-1 is raised to SHA-256, as
    /// [`DigestAlg::for_reply`]), giving a DER `ECDSA-Sig-Value`
    /// (RFC 5753 §2.1.1; RFC 5758 §3.2; the hash converted as
    /// [`ecdsa_hash_to_order_len`]).
    ///
    /// # Errors
    /// On a failure of the key.
    pub fn sign(&self, digest: DigestAlg, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        self.key.sign(digest, message)
    }
}

/// The private key of an RA certificate (RFC 8894 §2.1).
///
/// An RSA key signs CertReps (PKCS #1 v1.5) and unwraps the content keys of
/// requests encrypted to its certificate. An ECDSA key only signs CertReps
/// (`ecdsa-with-SHA*`): it may be a profile's *signing* RA, with at least one
/// RSA encryption RA beside it to receive the envelopes (see
/// [`crate::Engine::with_encryption_ras`]).
#[derive(Clone, Debug)]
pub enum RaKey {
    /// RSA: signs and decrypts.
    Rsa(RsaPrivateKey),
    /// ECDSA P-256 or P-384: signs only.
    Ecdsa(EcdsaPrivateKey),
}

impl From<RsaPrivateKey> for RaKey {
    fn from(key: RsaPrivateKey) -> Self {
        Self::Rsa(key)
    }
}

impl From<EcdsaPrivateKey> for RaKey {
    fn from(key: EcdsaPrivateKey) -> Self {
        Self::Ecdsa(key)
    }
}

impl RaKey {
    /// Loads an RSA (PKCS#8 or PKCS#1) or ECDSA P-256/P-384 (PKCS#8 or SEC1)
    /// DER key with the default provider.
    ///
    /// # Errors
    /// When the key is neither, with both reasons.
    pub fn from_der(der: &[u8]) -> Result<Self, KeyError> {
        Self::from_der_with(&**default_provider(), der)
    }

    /// As [`RaKey::from_der`] with `provider`.
    ///
    /// # Errors
    /// When the key is neither, with both reasons.
    pub fn from_der_with(provider: &dyn CryptoProvider, der: &[u8]) -> Result<Self, KeyError> {
        Self::from_key(provider.load_private_key(der)?)
    }

    /// Wraps a key from any source (a provider, a PKCS#11 token).
    ///
    /// # Errors
    /// Never for the kinds [`KeyKind`] has; kept fallible for future kinds.
    pub fn from_key(key: Arc<dyn PrivateKey>) -> Result<Self, KeyError> {
        match key.kind() {
            KeyKind::Rsa { .. } => RsaPrivateKey::from_key(key).map(Self::Rsa),
            KeyKind::Ec(_) => EcdsaPrivateKey::from_key(key).map(Self::Ecdsa),
        }
    }

    /// The key behind this handle.
    pub fn private_key(&self) -> &Arc<dyn PrivateKey> {
        match self {
            Self::Rsa(k) => k.private_key(),
            Self::Ecdsa(k) => k.private_key(),
        }
    }

    /// The SubjectPublicKeyInfo DER.
    pub fn spki_der(&self) -> &[u8] {
        match self {
            Self::Rsa(k) => k.spki_der(),
            Self::Ecdsa(k) => k.spki_der(),
        }
    }

    /// The RSA key, which can unwrap CMS content keys; `None` for ECDSA.
    pub const fn as_rsa(&self) -> Option<&RsaPrivateKey> {
        match self {
            Self::Rsa(k) => Some(k),
            Self::Ecdsa(_) => None,
        }
    }

    /// What kind of key this is, for errors, logs and the admin API:
    /// `rsa-2048`, `ecdsa-p256`, ...
    pub fn kind(&self) -> String {
        self.private_key().kind().label()
    }

    /// Signs `message` with `digest` (raised from SHA-1 to SHA-256): PKCS #1
    /// v1.5 for RSA, a DER `ECDSA-Sig-Value` for ECDSA.
    ///
    /// # Errors
    /// On a failure of the key.
    pub fn sign(&self, digest: DigestAlg, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        match self {
            Self::Rsa(k) => k.sign(digest, message),
            Self::Ecdsa(k) => k.sign(digest, message),
        }
    }
}

/// Encrypts a content key to an RSA public key (PKCS#1 v1.5, RFC 8894 §3.2.2 /
/// RFC 5652 §6.2.1), given the recipient's SubjectPublicKeyInfo DER, with the
/// default provider.
///
/// # Errors
/// When the SPKI is not an RSA key the provider accepts.
pub fn rsa_encrypt_pkcs1(spki_der: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, KeyError> {
    default_provider().rsa_encrypt_pkcs1v15(spki_der, plaintext)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Counter;
    impl RandomSource for Counter {
        fn fill(&self, buf: &mut [u8]) {
            for (i, b) in buf.iter_mut().enumerate() {
                *b = (i as u8).wrapping_mul(37).wrapping_add(11);
            }
        }
    }

    #[test]
    fn every_cipher_round_trips() {
        for c in [
            ContentCipher::DesCbc,
            ContentCipher::DesEde3Cbc,
            ContentCipher::Aes128Cbc,
            ContentCipher::Aes192Cbc,
            ContentCipher::Aes256Cbc,
        ] {
            let key = c.generate_key(&Counter);
            let iv = vec![3u8; c.iv_len()];
            let ct = c.encrypt(&key, &iv, b"hello scep").unwrap();
            let mut buf = ct.clone();
            let n = c.decrypt(&key, &iv, &mut buf).unwrap();
            assert_eq!(&buf[..n], b"hello scep", "{c:?}");
            assert_eq!(ContentCipher::from_oid(c.oid()), Some(c));
            assert_eq!(c.decrypt(&key[1..], &iv, &mut ct.clone()), Err(CipherError));
        }
    }

    #[test]
    fn ecdsa_ra_keys_sign_with_every_reply_digest_on_both_curves() {
        // FIPS 186-4 §6.4 truncation/padding: aws-lc's verifiers (which hash
        // and truncate themselves) accept every curve and digest pairing.
        for curve in [EcCurve::P256, EcCurve::P384] {
            let (key, pkcs8) = EcdsaPrivateKey::generate(curve).unwrap();
            let spki = crate::x509::SubjectPublicKeyInfoRef::parse(key.spki_der()).unwrap();
            let pk = spki.public_key().unwrap();
            for digest in [DigestAlg::Sha1, DigestAlg::Sha256, DigestAlg::Sha384, DigestAlg::Sha512] {
                let sig = key.sign(digest, b"signed attributes").unwrap();
                let alg = SignatureAlg::from_oid(digest.for_reply().ecdsa_signature_oid(), None).unwrap();
                assert_eq!(alg, SignatureAlg::Ecdsa(digest.for_reply()));
                alg.verify(pk, b"signed attributes", &sig).unwrap_or_else(|_| panic!("{curve:?} {digest:?}"));
                assert!(alg.verify(pk, b"signed attributeS", &sig).is_err(), "{curve:?} {digest:?}");
            }
            let ra = RaKey::from_der(&pkcs8).unwrap();
            assert!(ra.as_rsa().is_none());
            assert_eq!(ra.spki_der(), key.spki_der());
            assert_eq!(ra.kind(), if curve == EcCurve::P256 { "ecdsa-p256" } else { "ecdsa-p384" });
        }
        let (rsa, der) = RsaPrivateKey::generate(2048).unwrap();
        let ra = RaKey::from_der(&der).unwrap();
        assert_eq!((ra.kind().as_str(), ra.spki_der()), ("rsa-2048", rsa.spki_der()));
        let e = RaKey::from_der(b"not a key").unwrap_err();
        assert!(e.message().contains("RSA") && e.message().contains("P-256 or P-384"), "{e}");
    }

    #[test]
    fn rsa_sign_verify_and_key_transport() {
        let (key, _) = RsaPrivateKey::generate(2048).unwrap();
        let sig = key.sign(DigestAlg::Sha256, b"msg").unwrap();
        let spki = crate::x509::SubjectPublicKeyInfoRef::parse(key.spki_der()).unwrap();
        let pk = spki.public_key().unwrap();
        assert_eq!(pk.bits(), 2048);
        SignatureAlg::RsaPkcs1(DigestAlg::Sha256).verify(pk, b"msg", &sig).unwrap();
        assert!(SignatureAlg::RsaPkcs1(DigestAlg::Sha256).verify(pk, b"msG", &sig).is_err());
        let ct = rsa_encrypt_pkcs1(key.spki_der(), &[9; 32]).unwrap();
        assert_eq!(key.decrypt_pkcs1(&ct).unwrap(), vec![9; 32]);
        assert!(key.decrypt_pkcs1(&ct[1..]).is_none());
    }
}
