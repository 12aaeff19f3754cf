//! The aws-lc-rs provider (cargo feature `aws-lc`, the default): the fastest
//! here (its RSA about 9x the pure-Rust one), FIPS-capable.

use std::sync::Arc;

use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::{cipher, digest, rand::SecureRandom as _, rsa, signature};

use super::provider::{CryptoProvider, GeneratedKey, KeyKind, PrivateKey, RandomError};
use super::{CipherError, ContentCipher, DigestAlg, EcCurve, KeyError, PublicKeyRef, SignatureAlg, VerifyError};

/// The aws-lc-rs [`CryptoProvider`].
#[derive(Clone, Copy, Debug, Default)]
pub struct AwsLcProvider;

fn digest_algorithm(alg: DigestAlg) -> &'static digest::Algorithm {
    match alg {
        DigestAlg::Sha1 => &digest::SHA1_FOR_LEGACY_USE_ONLY,
        DigestAlg::Sha256 => &digest::SHA256,
        DigestAlg::Sha384 => &digest::SHA384,
        DigestAlg::Sha512 => &digest::SHA512,
    }
}

#[allow(deprecated)]
fn cipher_algorithm(c: ContentCipher) -> &'static cipher::Algorithm {
    match c {
        ContentCipher::DesCbc => &cipher::DES_FOR_LEGACY_USE_ONLY,
        ContentCipher::DesEde3Cbc => &cipher::DES_EDE3_FOR_LEGACY_USE_ONLY,
        ContentCipher::Aes128Cbc => &cipher::AES_128,
        ContentCipher::Aes192Cbc => &cipher::AES_192,
        ContentCipher::Aes256Cbc => &cipher::AES_256,
    }
}

fn iv_context(c: ContentCipher, iv: &[u8]) -> Result<cipher::DecryptionContext, CipherError> {
    Ok(match c.iv_len() {
        8 => cipher::DecryptionContext::Iv64(<[u8; 8]>::try_from(iv).map_err(|_| CipherError)?.into()),
        _ => cipher::DecryptionContext::Iv128(<[u8; 16]>::try_from(iv).map_err(|_| CipherError)?.into()),
    })
}

/// The aws-lc verification algorithm for `alg` on `key`, with the key bytes
/// and the digest it hashes with.
fn verification(
    alg: SignatureAlg,
    key: PublicKeyRef<'_>,
) -> Option<(&'static dyn signature::VerificationAlgorithm, &[u8], DigestAlg)> {
    Some(match (alg, key) {
        (SignatureAlg::RsaPkcs1(d), PublicKeyRef::Rsa(pk)) => (
            match d {
                DigestAlg::Sha1 => &signature::RSA_PKCS1_1024_8192_SHA1_FOR_LEGACY_USE_ONLY,
                DigestAlg::Sha256 => &signature::RSA_PKCS1_1024_8192_SHA256_FOR_LEGACY_USE_ONLY,
                DigestAlg::Sha384 => &signature::RSA_PKCS1_2048_8192_SHA384,
                DigestAlg::Sha512 => &signature::RSA_PKCS1_1024_8192_SHA512_FOR_LEGACY_USE_ONLY,
            },
            pk,
            d,
        ),
        (SignatureAlg::Ecdsa(d), PublicKeyRef::EcP256(pk)) => match d {
            DigestAlg::Sha384 => (&signature::ECDSA_P256_SHA384_ASN1, pk, d),
            DigestAlg::Sha512 => (&signature::ECDSA_P256_SHA512_ASN1, pk, d),
            _ => (&signature::ECDSA_P256_SHA256_ASN1, pk, DigestAlg::Sha256),
        },
        (SignatureAlg::Ecdsa(d), PublicKeyRef::EcP384(pk)) => match d {
            DigestAlg::Sha256 | DigestAlg::Sha1 => (&signature::ECDSA_P384_SHA256_ASN1, pk, DigestAlg::Sha256),
            DigestAlg::Sha512 => (&signature::ECDSA_P384_SHA512_ASN1, pk, d),
            DigestAlg::Sha384 => (&signature::ECDSA_P384_SHA384_ASN1, pk, d),
        },
        _ => return None,
    })
}

impl CryptoProvider for AwsLcProvider {
    fn name(&self) -> &'static str {
        "aws-lc-rs"
    }

    fn digest(&self, alg: DigestAlg, parts: &[&[u8]]) -> Vec<u8> {
        if let [one] = parts {
            return digest::digest(digest_algorithm(alg), one).as_ref().to_vec();
        }
        let mut ctx = digest::Context::new(digest_algorithm(alg));
        for p in parts {
            ctx.update(p);
        }
        ctx.finish().as_ref().to_vec()
    }

    fn verify(
        &self,
        alg: SignatureAlg,
        key: PublicKeyRef<'_>,
        parts: &[&[u8]],
        signature: &[u8],
    ) -> Result<(), VerifyError> {
        let (verifier, pk, digest_alg) = verification(alg, key).ok_or(VerifyError)?;
        if let [message] = parts {
            return verifier.verify_sig(pk, message, signature).map_err(|_| VerifyError);
        }
        let mut ctx = digest::Context::new(digest_algorithm(digest_alg));
        for p in parts {
            ctx.update(p);
        }
        verifier.verify_digest_sig(pk, &ctx.finish(), signature).map_err(|_| VerifyError)
    }

    fn encrypt_content(
        &self,
        c: ContentCipher,
        key: &[u8],
        iv: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, CipherError> {
        if key.len() != c.key_len() || iv.len() != c.iv_len() {
            return Err(CipherError);
        }
        let unbound = cipher::UnboundCipherKey::new(cipher_algorithm(c), key).map_err(|_| CipherError)?;
        let ek = cipher::PaddedBlockEncryptingKey::cbc_pkcs7(unbound).map_err(|_| CipherError)?;
        let ctx = match iv_context(c, iv)? {
            cipher::DecryptionContext::Iv64(v) => cipher::EncryptionContext::Iv64(v),
            cipher::DecryptionContext::Iv128(v) => cipher::EncryptionContext::Iv128(v),
            _ => return Err(CipherError),
        };
        let mut buf = plaintext.to_vec();
        ek.less_safe_encrypt(&mut buf, ctx).map_err(|_| CipherError)?;
        Ok(buf)
    }

    fn decrypt_content(&self, c: ContentCipher, key: &[u8], iv: &[u8], buf: &mut [u8]) -> Result<usize, CipherError> {
        if key.len() != c.key_len() || iv.len() != c.iv_len() {
            return Err(CipherError);
        }
        let unbound = cipher::UnboundCipherKey::new(cipher_algorithm(c), key).map_err(|_| CipherError)?;
        let dk = cipher::PaddedBlockDecryptingKey::cbc_pkcs7(unbound).map_err(|_| CipherError)?;
        let ctx = iv_context(c, iv)?;
        let plain = dk.decrypt(buf, ctx).map_err(|_| CipherError)?;
        Ok(plain.len())
    }

    fn accepts_content_key(&self, c: ContentCipher, key: &[u8]) -> bool {
        // `UnboundCipherKey::new` alone lets weak DES keys through; building
        // the key schedule (as encryption does) refuses them.
        key.len() == c.key_len()
            && cipher::UnboundCipherKey::new(cipher_algorithm(c), key)
                .and_then(cipher::PaddedBlockEncryptingKey::cbc_pkcs7)
                .is_ok()
    }

    fn rsa_encrypt_pkcs1v15(&self, spki_der: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, KeyError> {
        let pk = rsa::PublicEncryptingKey::from_der(spki_der)
            .map_err(|e| KeyError::new(format!("recipient key is not a usable RSA key: {e}")))?;
        let enc = rsa::Pkcs1PublicEncryptingKey::new(pk).map_err(|e| KeyError::new(e.to_string()))?;
        let mut out = vec![0u8; enc.ciphertext_size()];
        let n = enc.encrypt(plaintext, &mut out).map_err(|e| KeyError::new(e.to_string()))?.len();
        out.truncate(n);
        Ok(out)
    }

    fn fill_random(&self, buf: &mut [u8]) -> Result<(), RandomError> {
        aws_lc_rs::rand::SystemRandom::new().fill(buf).map_err(|_| RandomError)
    }

    fn load_private_key(&self, der: &[u8]) -> Result<Arc<dyn PrivateKey>, KeyError> {
        match AwsLcRsaKey::from_der(der) {
            Ok(k) => Ok(Arc::new(k)),
            Err(rsa_err) => AwsLcEcKey::from_der(der)
                .map(|k| Arc::new(k) as Arc<dyn PrivateKey>)
                .map_err(|ec_err| KeyError::new(format!("{rsa_err}; {ec_err}"))),
        }
    }

    fn generate_private_key(&self, kind: KeyKind) -> Result<GeneratedKey, KeyError> {
        let pkcs8_der = match kind {
            KeyKind::Rsa { modulus_bits } => {
                let size = match modulus_bits {
                    2048 => rsa::KeySize::Rsa2048,
                    3072 => rsa::KeySize::Rsa3072,
                    4096 => rsa::KeySize::Rsa4096,
                    other => return Err(KeyError::new(format!("unsupported RSA key size {other}"))),
                };
                let kp = signature::RsaKeyPair::generate(size).map_err(|e| KeyError::new(e.to_string()))?;
                kp.as_der().map_err(|e| KeyError::new(e.to_string()))?.as_ref().to_vec()
            }
            KeyKind::Ec(curve) => {
                let pair = signature::EcdsaKeyPair::generate(ec_signing_algorithm(curve))
                    .map_err(|e| KeyError::new(e.to_string()))?;
                pair.to_pkcs8v1().map_err(|e| KeyError::new(e.to_string()))?.as_ref().to_vec()
            }
        };
        let key = self.load_private_key(&pkcs8_der)?;
        Ok(GeneratedKey { key, pkcs8_der })
    }
}

/// An aws-lc RSA private key: signs (PKCS #1 v1.5) and unwraps content keys.
struct AwsLcRsaKey {
    signing: signature::RsaKeyPair,
    decrypting: rsa::Pkcs1PrivateDecryptingKey,
    spki_der: Vec<u8>,
}

impl std::fmt::Debug for AwsLcRsaKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AwsLcRsaKey({} bits)", self.signing.public_modulus_len() * 8)
    }
}

impl AwsLcRsaKey {
    fn from_der(der: &[u8]) -> Result<Self, KeyError> {
        let pkcs8 = if signature::RsaKeyPair::from_pkcs8(der).is_ok() {
            std::borrow::Cow::Borrowed(der)
        } else {
            std::borrow::Cow::Owned(super::rsa_pkcs1_to_pkcs8(der))
        };
        let signing = signature::RsaKeyPair::from_pkcs8(&pkcs8)
            .map_err(|e| KeyError::new(format!("not a usable RSA private key: {e}")))?;
        let pdk = rsa::PrivateDecryptingKey::from_pkcs8(&pkcs8)
            .map_err(|e| KeyError::new(format!("not a usable RSA decryption key: {e}")))?;
        let decrypting = rsa::Pkcs1PrivateDecryptingKey::new(pdk)
            .map_err(|e| KeyError::new(format!("RSA key unusable for PKCS#1 v1.5: {e}")))?;
        let spki_der = signature::KeyPair::public_key(&signing)
            .as_der()
            .map_err(|e| KeyError::new(format!("cannot encode public key: {e}")))?
            .as_ref()
            .to_vec();
        Ok(Self { signing, decrypting, spki_der })
    }
}

impl PrivateKey for AwsLcRsaKey {
    fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }

    fn kind(&self) -> KeyKind {
        KeyKind::Rsa { modulus_bits: self.signing.public_modulus_len() * 8 }
    }

    fn sign(&self, digest: DigestAlg, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        let enc: &'static dyn signature::RsaEncoding = match digest.for_reply() {
            DigestAlg::Sha384 => &signature::RSA_PKCS1_SHA384,
            DigestAlg::Sha512 => &signature::RSA_PKCS1_SHA512,
            _ => &signature::RSA_PKCS1_SHA256,
        };
        let mut sig = vec![0u8; self.signing.public_modulus_len()];
        self.signing
            .sign(enc, &aws_lc_rs::rand::SystemRandom::new(), message, &mut sig)
            .map_err(|e| KeyError::new(format!("RSA signing failed: {e}")))?;
        Ok(sig)
    }

    fn decrypt_pkcs1v15(&self, ciphertext: &[u8]) -> Result<Option<Vec<u8>>, KeyError> {
        let mut out = vec![0u8; self.decrypting.min_output_size()];
        Ok(match self.decrypting.decrypt(ciphertext, &mut out) {
            Ok(plain) => {
                let n = plain.len();
                out.truncate(n);
                Some(out)
            }
            Err(_) => None,
        })
    }
}

fn ec_signing_algorithm(curve: EcCurve) -> &'static signature::EcdsaSigningAlgorithm {
    match curve {
        EcCurve::P256 => &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        EcCurve::P384 => &signature::ECDSA_P384_SHA384_ASN1_SIGNING,
    }
}

/// The digest [`ec_signing_algorithm`] is bound to; its output length is the
/// curve order's.
fn ec_bound_digest(curve: EcCurve) -> &'static digest::Algorithm {
    match curve {
        EcCurve::P256 => &digest::SHA256,
        EcCurve::P384 => &digest::SHA384,
    }
}

/// An aws-lc ECDSA P-256 or P-384 private key signing with any SHA-2 digest.
struct AwsLcEcKey {
    pair: signature::EcdsaKeyPair,
    curve: EcCurve,
    spki_der: Vec<u8>,
}

impl std::fmt::Debug for AwsLcEcKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AwsLcEcKey({})", self.curve.name())
    }
}

impl AwsLcEcKey {
    fn from_der(der: &[u8]) -> Result<Self, KeyError> {
        let mut failures = Vec::with_capacity(2);
        for curve in [EcCurve::P256, EcCurve::P384] {
            let alg = ec_signing_algorithm(curve);
            match signature::EcdsaKeyPair::from_pkcs8(alg, der)
                .or_else(|_| signature::EcdsaKeyPair::from_private_key_der(alg, der))
            {
                Ok(pair) => {
                    let spki_der = signature::KeyPair::public_key(&pair)
                        .as_der()
                        .map_err(|e| KeyError::new(format!("cannot encode public key: {e}")))?
                        .as_ref()
                        .to_vec();
                    return Ok(Self { pair, curve, spki_der });
                }
                Err(e) => failures.push(format!("{}: {e}", curve.name())),
            }
        }
        Err(KeyError::new(format!("not a usable ECDSA P-256 or P-384 private key ({})", failures.join("; "))))
    }
}

impl PrivateKey for AwsLcEcKey {
    fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }

    fn kind(&self) -> KeyKind {
        KeyKind::Ec(self.curve)
    }

    /// aws-lc binds an ECDSA key to one digest, so the hash is computed here
    /// and converted to the integer ECDSA signs (FIPS 186-4 §6.4), see
    /// [`super::ecdsa_hash_to_order_len`].
    fn sign(&self, digest: DigestAlg, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        let hash = self.digest(digest.for_reply(), message);
        let e = super::ecdsa_hash_to_order_len(&hash, self.curve);
        let imported = digest::Digest::import_less_safe(&e, ec_bound_digest(self.curve))
            .map_err(|e| KeyError::new(format!("ECDSA digest conversion failed: {e}")))?;
        self.pair
            .sign_digest(&imported)
            .map(|s| s.as_ref().to_vec())
            .map_err(|e| KeyError::new(format!("ECDSA signing failed: {e}")))
    }

    fn decrypt_pkcs1v15(&self, _ciphertext: &[u8]) -> Result<Option<Vec<u8>>, KeyError> {
        Ok(None)
    }
}

impl AwsLcEcKey {
    fn digest(&self, alg: DigestAlg, message: &[u8]) -> Vec<u8> {
        digest::digest(digest_algorithm(alg), message).as_ref().to_vec()
    }
}
