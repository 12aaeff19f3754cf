//! Cryptographic algorithms and keys, all backed by aws-lc-rs.
//!
//! The engine never draws OS randomness itself: nonces, IVs, content keys and
//! serial numbers come from the [`RandomSource`] in the configuration, so tests
//! and fuzzers can be deterministic. (RSA blinding and PKCS#1 v1.5 encryption
//! padding inside aws-lc use its own generator; that never affects the bytes a
//! test compares.)

use aws_lc_rs::{cipher, digest, rand::SecureRandom, rsa, signature};

use crate::oid;

/// Source of the randomness the engine needs (nonces, IVs, content keys, serials).
pub trait RandomSource: Send + Sync + std::fmt::Debug {
    /// Fills `buf` with random bytes.
    fn fill(&self, buf: &mut [u8]);
}

/// The operating system's CSPRNG (through aws-lc). The production source.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemRandom;

impl RandomSource for SystemRandom {
    fn fill(&self, buf: &mut [u8]) {
        // aws-lc's generator only fails when the OS entropy source is gone, in which
        // case no cryptographic service can continue safely.
        #[allow(clippy::expect_used)]
        aws_lc_rs::rand::SystemRandom::new().fill(buf).expect("OS random source failed");
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

    fn algorithm(self) -> &'static digest::Algorithm {
        match self {
            Self::Sha1 => &digest::SHA1_FOR_LEGACY_USE_ONLY,
            Self::Sha256 => &digest::SHA256,
            Self::Sha384 => &digest::SHA384,
            Self::Sha512 => &digest::SHA512,
        }
    }

    /// Digests `data`.
    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        digest::digest(self.algorithm(), data).as_ref().to_vec()
    }

    /// Digests the concatenation of `parts` without copying them together.
    pub fn digest_parts(self, parts: &[&[u8]]) -> Vec<u8> {
        let mut ctx = digest::Context::new(self.algorithm());
        for p in parts {
            ctx.update(p);
        }
        ctx.finish().as_ref().to_vec()
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

/// A content key or IV of the wrong size, a weak DES key, or bad padding. One
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

    #[allow(deprecated)]
    fn algorithm(self) -> &'static cipher::Algorithm {
        match self {
            Self::DesCbc => &cipher::DES_FOR_LEGACY_USE_ONLY,
            Self::DesEde3Cbc => &cipher::DES_EDE3_FOR_LEGACY_USE_ONLY,
            Self::Aes128Cbc => &cipher::AES_128,
            Self::Aes192Cbc => &cipher::AES_192,
            Self::Aes256Cbc => &cipher::AES_256,
        }
    }

    fn iv_context(self, iv: &[u8]) -> Result<cipher::DecryptionContext, CipherError> {
        Ok(match self.iv_len() {
            8 => cipher::DecryptionContext::Iv64(<[u8; 8]>::try_from(iv).map_err(|_| CipherError)?.into()),
            _ => cipher::DecryptionContext::Iv128(<[u8; 16]>::try_from(iv).map_err(|_| CipherError)?.into()),
        })
    }

    /// Decrypts CBC ciphertext in place and removes PKCS#7 padding, returning the
    /// plaintext length.
    ///
    /// # Errors
    /// [`CipherError`] for a wrong key/IV size, a weak DES key, or bad padding.
    pub fn decrypt(self, key: &[u8], iv: &[u8], buf: &mut [u8]) -> Result<usize, CipherError> {
        if key.len() != self.key_len() || iv.len() != self.iv_len() {
            return Err(CipherError);
        }
        let unbound = cipher::UnboundCipherKey::new(self.algorithm(), key).map_err(|_| CipherError)?;
        let dk = cipher::PaddedBlockDecryptingKey::cbc_pkcs7(unbound).map_err(|_| CipherError)?;
        let ctx = self.iv_context(iv)?;
        let plain = dk.decrypt(buf, ctx).map_err(|_| CipherError)?;
        Ok(plain.len())
    }

    /// Encrypts `plaintext` with PKCS#7 padding under `key` and `iv`.
    ///
    /// # Errors
    /// [`CipherError`] for a wrong key/IV size or a weak DES key.
    pub fn encrypt(self, key: &[u8], iv: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, CipherError> {
        if key.len() != self.key_len() || iv.len() != self.iv_len() {
            return Err(CipherError);
        }
        let unbound = cipher::UnboundCipherKey::new(self.algorithm(), key).map_err(|_| CipherError)?;
        let ek = cipher::PaddedBlockEncryptingKey::cbc_pkcs7(unbound).map_err(|_| CipherError)?;
        let ctx = match self.iv_context(iv)? {
            cipher::DecryptionContext::Iv64(v) => cipher::EncryptionContext::Iv64(v),
            cipher::DecryptionContext::Iv128(v) => cipher::EncryptionContext::Iv128(v),
            _ => return Err(CipherError),
        };
        let mut buf = plaintext.to_vec();
        ek.less_safe_encrypt(&mut buf, ctx).map_err(|_| CipherError)?;
        Ok(buf)
    }

    /// Generates a content key from `rng`, re-drawing the (astronomically rare)
    /// DES keys that aws-lc refuses as weak or with equal sub-keys.
    pub fn generate_key(self, rng: &dyn RandomSource) -> Vec<u8> {
        let mut key = vec![0u8; self.key_len()];
        for _ in 0..16 {
            rng.fill(&mut key);
            if self.iv_len() == 16 || cipher::UnboundCipherKey::new(self.algorithm(), &key).is_ok() {
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

    /// Verifies `signature` over `message` with `key`.
    ///
    /// # Errors
    /// [`VerifyError`] when the key type does not fit the algorithm, the key is
    /// unusable, or the signature is wrong.
    pub fn verify(self, key: PublicKeyRef<'_>, message: &[u8], signature: &[u8]) -> Result<(), VerifyError> {
        let (alg, pk, _) = self.select(key).ok_or(VerifyError)?;
        alg.verify_sig(pk, message, signature).map_err(|_| VerifyError)
    }

    /// Verifies `signature` over the concatenation of `parts` without copying
    /// them together (e.g. CMS signedAttrs re-tagged as SET, RFC 5652 §5.4:
    /// `[&[0x31], &signed_attrs[1..]]`).
    ///
    /// # Errors
    /// As [`SignatureAlg::verify`].
    pub fn verify_parts(self, key: PublicKeyRef<'_>, parts: &[&[u8]], signature: &[u8]) -> Result<(), VerifyError> {
        let (alg, pk, digest_alg) = self.select(key).ok_or(VerifyError)?;
        let mut ctx = digest::Context::new(digest_alg.algorithm());
        for p in parts {
            ctx.update(p);
        }
        alg.verify_digest_sig(pk, &ctx.finish(), signature).map_err(|_| VerifyError)
    }

    /// The aws-lc verification algorithm, key bytes and the digest it hashes with.
    fn select(
        self,
        key: PublicKeyRef<'_>,
    ) -> Option<(&'static dyn signature::VerificationAlgorithm, &[u8], DigestAlg)> {
        Some(match (self, key) {
            (Self::RsaPkcs1(d), PublicKeyRef::Rsa(pk)) => (
                match d {
                    DigestAlg::Sha1 => &signature::RSA_PKCS1_1024_8192_SHA1_FOR_LEGACY_USE_ONLY,
                    DigestAlg::Sha256 => &signature::RSA_PKCS1_1024_8192_SHA256_FOR_LEGACY_USE_ONLY,
                    DigestAlg::Sha384 => &signature::RSA_PKCS1_2048_8192_SHA384,
                    DigestAlg::Sha512 => &signature::RSA_PKCS1_1024_8192_SHA512_FOR_LEGACY_USE_ONLY,
                },
                pk,
                d,
            ),
            (Self::Ecdsa(d), PublicKeyRef::EcP256(pk)) => match d {
                DigestAlg::Sha384 => (&signature::ECDSA_P256_SHA384_ASN1, pk, d),
                DigestAlg::Sha512 => (&signature::ECDSA_P256_SHA512_ASN1, pk, d),
                _ => (&signature::ECDSA_P256_SHA256_ASN1, pk, DigestAlg::Sha256),
            },
            (Self::Ecdsa(d), PublicKeyRef::EcP384(pk)) => match d {
                DigestAlg::Sha256 | DigestAlg::Sha1 => (&signature::ECDSA_P384_SHA256_ASN1, pk, DigestAlg::Sha256),
                DigestAlg::Sha512 => (&signature::ECDSA_P384_SHA512_ASN1, pk, d),
                DigestAlg::Sha384 => (&signature::ECDSA_P384_SHA384_ASN1, pk, d),
            },
            _ => return None,
        })
    }
}

/// An error loading or using a private key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyError(pub String);

impl std::fmt::Display for KeyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for KeyError {}

/// An RSA private key: signs (PKCS#1 v1.5) and unwraps CMS content keys.
pub struct RsaPrivateKey {
    signing: signature::RsaKeyPair,
    decrypting: rsa::Pkcs1PrivateDecryptingKey,
    spki_der: Vec<u8>,
}

impl std::fmt::Debug for RsaPrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RsaPrivateKey").field("bits", &(self.signing.public_modulus_len() * 8)).finish()
    }
}

impl RsaPrivateKey {
    /// Loads a PKCS#8 (`PRIVATE KEY`) or PKCS#1 (`RSA PRIVATE KEY`) DER key.
    ///
    /// # Errors
    /// When the bytes are not an RSA key aws-lc accepts (e.g. < 2048 bits).
    pub fn from_der(der: &[u8]) -> Result<Self, KeyError> {
        let pkcs8 = if signature::RsaKeyPair::from_pkcs8(der).is_ok() {
            std::borrow::Cow::Borrowed(der)
        } else {
            std::borrow::Cow::Owned(rsa_pkcs1_to_pkcs8(der))
        };
        let signing = signature::RsaKeyPair::from_pkcs8(&pkcs8)
            .map_err(|e| KeyError(format!("not a usable RSA private key: {e}")))?;
        let pdk = rsa::PrivateDecryptingKey::from_pkcs8(&pkcs8)
            .map_err(|e| KeyError(format!("not a usable RSA decryption key: {e}")))?;
        let decrypting = rsa::Pkcs1PrivateDecryptingKey::new(pdk)
            .map_err(|e| KeyError(format!("RSA key unusable for PKCS#1 v1.5: {e}")))?;
        use aws_lc_rs::encoding::AsDer as _;
        let spki_der = signature::KeyPair::public_key(&signing)
            .as_der()
            .map_err(|e| KeyError(format!("cannot encode public key: {e}")))?
            .as_ref()
            .to_vec();
        Ok(Self { signing, decrypting, spki_der })
    }

    /// Generates a new key of `bits` (2048, 3072 or 4096) and returns it with its PKCS#8 DER.
    ///
    /// # Errors
    /// For an unsupported size.
    pub fn generate(bits: usize) -> Result<(Self, Vec<u8>), KeyError> {
        use aws_lc_rs::encoding::AsDer as _;
        let size = match bits {
            2048 => rsa::KeySize::Rsa2048,
            3072 => rsa::KeySize::Rsa3072,
            4096 => rsa::KeySize::Rsa4096,
            other => return Err(KeyError(format!("unsupported RSA key size {other}"))),
        };
        let kp = signature::RsaKeyPair::generate(size).map_err(|e| KeyError(e.to_string()))?;
        let der = kp.as_der().map_err(|e| KeyError(e.to_string()))?.as_ref().to_vec();
        Ok((Self::from_der(&der)?, der))
    }

    /// The SubjectPublicKeyInfo DER.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }

    /// Modulus length in bytes (= signature length).
    pub fn modulus_len(&self) -> usize {
        self.signing.public_modulus_len()
    }

    /// Signs `message` with PKCS#1 v1.5 and `digest` (SHA-1 is raised to SHA-256).
    ///
    /// # Errors
    /// Only on an internal aws-lc failure.
    pub fn sign(&self, digest: DigestAlg, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        let enc: &'static dyn signature::RsaEncoding = match digest.for_reply() {
            DigestAlg::Sha384 => &signature::RSA_PKCS1_SHA384,
            DigestAlg::Sha512 => &signature::RSA_PKCS1_SHA512,
            _ => &signature::RSA_PKCS1_SHA256,
        };
        let mut sig = vec![0u8; self.modulus_len()];
        self.signing
            .sign(enc, &aws_lc_rs::rand::SystemRandom::new(), message, &mut sig)
            .map_err(|e| KeyError(format!("RSA signing failed: {e}")))?;
        Ok(sig)
    }

    /// Unwraps a PKCS#1 v1.5 encrypted content key (RFC 5652 §6.2.1 KeyTransRecipientInfo).
    ///
    /// Returns `None` on any failure. Callers must not reveal the failure
    /// separately from later failures (see `envelope`: implicit rejection).
    pub fn decrypt_pkcs1(&self, ciphertext: &[u8]) -> Option<Vec<u8>> {
        let mut out = vec![0u8; self.decrypting.min_output_size()];
        let n = self.decrypting.decrypt(ciphertext, &mut out).ok()?.len();
        out.truncate(n);
        Some(out)
    }
}

/// Wraps a PKCS#1 RSAPrivateKey in a PKCS#8 PrivateKeyInfo (RFC 5208 §5).
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

/// An ECDSA P-256 private key signing with SHA-256, as a CA uses (an RA uses
/// [`EcdsaPrivateKey`]).
pub struct EcPrivateKey {
    pair: signature::EcdsaKeyPair,
    spki_der: Vec<u8>,
}

impl std::fmt::Debug for EcPrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EcPrivateKey(P-256)")
    }
}

impl EcPrivateKey {
    /// Loads a PKCS#8 (or SEC1 `EC PRIVATE KEY`) P-256 key.
    ///
    /// # Errors
    /// When the key is not P-256 or malformed.
    pub fn from_der(der: &[u8]) -> Result<Self, KeyError> {
        let alg = &signature::ECDSA_P256_SHA256_ASN1_SIGNING;
        let pair = signature::EcdsaKeyPair::from_pkcs8(alg, der)
            .or_else(|_| signature::EcdsaKeyPair::from_private_key_der(alg, der))
            .map_err(|e| KeyError(format!("not a usable P-256 private key: {e}")))?;
        use aws_lc_rs::encoding::AsDer as _;
        let spki_der = signature::KeyPair::public_key(&pair)
            .as_der()
            .map_err(|e| KeyError(format!("cannot encode public key: {e}")))?
            .as_ref()
            .to_vec();
        Ok(Self { pair, spki_der })
    }

    /// Generates a new P-256 key and returns it with its PKCS#8 DER.
    ///
    /// # Errors
    /// Only on an internal aws-lc failure.
    pub fn generate() -> Result<(Self, Vec<u8>), KeyError> {
        let pair = signature::EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_ASN1_SIGNING)
            .map_err(|e| KeyError(e.to_string()))?;
        let der = pair.to_pkcs8v1().map_err(|e| KeyError(e.to_string()))?.as_ref().to_vec();
        Ok((Self::from_der(&der)?, der))
    }

    /// The SubjectPublicKeyInfo DER.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }

    /// Signs `message` (ECDSA P-256 with SHA-256, ASN.1 DER signature).
    ///
    /// # Errors
    /// Only on an internal aws-lc failure.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        self.pair
            .sign(&aws_lc_rs::rand::SystemRandom::new(), message)
            .map(|s| s.as_ref().to_vec())
            .map_err(|e| KeyError(format!("ECDSA signing failed: {e}")))
    }
}

/// A signing key of either supported kind, as a CA uses.
#[derive(Debug)]
pub enum SigningKey {
    /// RSA (PKCS#1 v1.5).
    Rsa(RsaPrivateKey),
    /// ECDSA P-256.
    EcP256(EcPrivateKey),
}

impl SigningKey {
    /// Loads an RSA or P-256 key from PKCS#8/PKCS#1/SEC1 DER.
    ///
    /// # Errors
    /// When the key is neither.
    pub fn from_der(der: &[u8]) -> Result<Self, KeyError> {
        match RsaPrivateKey::from_der(der) {
            Ok(k) => Ok(Self::Rsa(k)),
            Err(rsa_err) => {
                EcPrivateKey::from_der(der).map(Self::EcP256).map_err(|ec_err| KeyError(format!("{rsa_err}; {ec_err}")))
            }
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
    /// Only on an internal aws-lc failure.
    pub fn sign(&self, digest: DigestAlg, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        match self {
            Self::Rsa(k) => k.sign(digest, message),
            Self::EcP256(k) => k.sign(message),
        }
    }
}

/// The NIST curve of an [`EcdsaPrivateKey`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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

    /// The aws-lc signing algorithm the key is loaded with. Its digest is only
    /// used for the length of the value handed to [`EcdsaPrivateKey::sign`].
    fn signing_algorithm(self) -> &'static signature::EcdsaSigningAlgorithm {
        match self {
            Self::P256 => &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            Self::P384 => &signature::ECDSA_P384_SHA384_ASN1_SIGNING,
        }
    }

    /// The digest [`EcCurve::signing_algorithm`] is bound to; its output length
    /// is the curve order's.
    fn bound_digest(self) -> &'static digest::Algorithm {
        match self {
            Self::P256 => &digest::SHA256,
            Self::P384 => &digest::SHA384,
        }
    }

    /// Length in bytes of the curve order (and of [`EcCurve::bound_digest`]'s output).
    const fn order_len(self) -> usize {
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
pub struct EcdsaPrivateKey {
    pair: signature::EcdsaKeyPair,
    curve: EcCurve,
    spki_der: Vec<u8>,
}

impl std::fmt::Debug for EcdsaPrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EcdsaPrivateKey({})", self.curve.name())
    }
}

impl EcdsaPrivateKey {
    /// Loads a P-256 or P-384 key from PKCS#8 (`PRIVATE KEY`) or SEC1
    /// (`EC PRIVATE KEY`) DER.
    ///
    /// # Errors
    /// When the bytes are not a P-256 or P-384 key aws-lc accepts.
    pub fn from_der(der: &[u8]) -> Result<Self, KeyError> {
        let mut failures = Vec::with_capacity(2);
        for curve in [EcCurve::P256, EcCurve::P384] {
            let alg = curve.signing_algorithm();
            match signature::EcdsaKeyPair::from_pkcs8(alg, der)
                .or_else(|_| signature::EcdsaKeyPair::from_private_key_der(alg, der))
            {
                Ok(pair) => {
                    use aws_lc_rs::encoding::AsDer as _;
                    let spki_der = signature::KeyPair::public_key(&pair)
                        .as_der()
                        .map_err(|e| KeyError(format!("cannot encode public key: {e}")))?
                        .as_ref()
                        .to_vec();
                    return Ok(Self { pair, curve, spki_der });
                }
                Err(e) => failures.push(format!("{}: {e}", curve.name())),
            }
        }
        Err(KeyError(format!("not a usable ECDSA P-256 or P-384 private key ({})", failures.join("; "))))
    }

    /// Generates a new key on `curve` and returns it with its PKCS#8 DER.
    ///
    /// # Errors
    /// Only on an internal aws-lc failure.
    pub fn generate(curve: EcCurve) -> Result<(Self, Vec<u8>), KeyError> {
        let pair = signature::EcdsaKeyPair::generate(curve.signing_algorithm()).map_err(|e| KeyError(e.to_string()))?;
        let der = pair.to_pkcs8v1().map_err(|e| KeyError(e.to_string()))?.as_ref().to_vec();
        Ok((Self::from_der(&der)?, der))
    }

    /// The key's curve.
    pub const fn curve(&self) -> EcCurve {
        self.curve
    }

    /// The SubjectPublicKeyInfo DER.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }

    /// Signs `message` hashed with `digest` (SHA-1 is raised to SHA-256, as
    /// [`DigestAlg::for_reply`]), giving a DER `ECDSA-Sig-Value`
    /// (RFC 5753 §2.1.1; RFC 5758 §3.2).
    ///
    /// aws-lc binds an ECDSA key to one digest, so the hash is computed here
    /// and converted to the integer ECDSA signs as FIPS 186-4 §6.4 defines it:
    /// the leftmost bits of the hash, as many as the curve order has. A longer
    /// hash (SHA-384/512 on P-256, SHA-512 on P-384) is truncated; a shorter
    /// one (SHA-256 on P-384) is left-padded with zero octets, which leaves
    /// its integer value unchanged.
    ///
    /// # Errors
    /// Only on an internal aws-lc failure.
    pub fn sign(&self, digest: DigestAlg, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        let hash = digest.for_reply().digest(message);
        let order_len = self.curve.order_len();
        let mut e = vec![0u8; order_len];
        let taken = hash.len().min(order_len);
        let (_, tail) = e.split_at_mut(order_len - taken);
        tail.copy_from_slice(hash.get(..taken).unwrap_or_default());
        let imported = digest::Digest::import_less_safe(&e, self.curve.bound_digest())
            .map_err(|e| KeyError(format!("ECDSA digest conversion failed: {e}")))?;
        self.pair
            .sign_digest(&imported)
            .map(|s| s.as_ref().to_vec())
            .map_err(|e| KeyError(format!("ECDSA signing failed: {e}")))
    }
}

/// The private key of an RA certificate (RFC 8894 §2.1).
///
/// An RSA key signs CertReps (PKCS #1 v1.5) and unwraps the content keys of
/// requests encrypted to its certificate. An ECDSA key only signs CertReps
/// (`ecdsa-with-SHA*`): it may be a profile's *signing* RA, with at least one
/// RSA encryption RA beside it to receive the envelopes (see
/// [`crate::Engine::with_encryption_ras`]).
#[derive(Debug)]
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
    /// Loads an RSA (PKCS#8 or PKCS#1) or ECDSA P-256/P-384 (PKCS#8 or SEC1) DER key.
    ///
    /// # Errors
    /// When the key is neither, with both reasons.
    pub fn from_der(der: &[u8]) -> Result<Self, KeyError> {
        match RsaPrivateKey::from_der(der) {
            Ok(k) => Ok(Self::Rsa(k)),
            Err(rsa_err) => EcdsaPrivateKey::from_der(der)
                .map(Self::Ecdsa)
                .map_err(|ec_err| KeyError(format!("{rsa_err}; {ec_err}"))),
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
        match self {
            Self::Rsa(k) => format!("rsa-{}", k.modulus_len() * 8),
            Self::Ecdsa(k) => match k.curve() {
                EcCurve::P256 => "ecdsa-p256".to_string(),
                EcCurve::P384 => "ecdsa-p384".to_string(),
            },
        }
    }

    /// Signs `message` with `digest` (raised from SHA-1 to SHA-256): PKCS #1
    /// v1.5 for RSA, a DER `ECDSA-Sig-Value` for ECDSA.
    ///
    /// # Errors
    /// Only on an internal aws-lc failure.
    pub fn sign(&self, digest: DigestAlg, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        match self {
            Self::Rsa(k) => k.sign(digest, message),
            Self::Ecdsa(k) => k.sign(digest, message),
        }
    }
}

/// Encrypts a content key to an RSA public key (PKCS#1 v1.5, RFC 8894 §3.2.2 /
/// RFC 5652 §6.2.1), given the recipient's SubjectPublicKeyInfo DER.
///
/// # Errors
/// When the SPKI is not an RSA key aws-lc accepts.
pub fn rsa_encrypt_pkcs1(spki_der: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, KeyError> {
    let pk = rsa::PublicEncryptingKey::from_der(spki_der)
        .map_err(|e| KeyError(format!("recipient key is not a usable RSA key: {e}")))?;
    let enc = rsa::Pkcs1PublicEncryptingKey::new(pk).map_err(|e| KeyError(e.to_string()))?;
    let mut out = vec![0u8; enc.ciphertext_size()];
    let n = enc.encrypt(plaintext, &mut out).map_err(|e| KeyError(e.to_string()))?.len();
    out.truncate(n);
    Ok(out)
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
        assert!(e.0.contains("RSA") && e.0.contains("P-256 or P-384"), "{e}");
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
