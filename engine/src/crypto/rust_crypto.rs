//! The pure-Rust RustCrypto provider (cargo feature `rustcrypto`): `rsa`,
//! `p256`, `p384`, `sha1`, `sha2`, `aes`, `des`, `cbc`, randomness from
//! `rand_core`'s `OsRng` (getrandom). With `--no-default-features --features
//! rustcrypto` the engine's cryptography builds without a C toolchain.
//!
//! It accepts what the aws-lc provider accepts (RSA 1024..=8192-bit public
//! keys for verification, 2048..=4096-bit private keys; P-256/P-384; the same
//! DES weak-key and 3DES sub-key rules), so a profile behaves the same on either; the
//! differential tests (`scep-tests`, `tests/providers.rs`) hold them to that.
//!
//! # Timing (RUSTSEC-2023-0071, the Marvin attack)
//! The `rsa` crate's private-key operation is not constant time: its big
//! integer arithmetic takes time that depends on the values. An attacker who
//! can time many RSA decryptions of chosen ciphertexts precisely may learn
//! whether the PKCS #1 v1.5 padding was valid (a Bleichenbacher oracle through
//! timing). What this provider does about it:
//! - every private-key operation is blinded (`decrypt_blinded`,
//!   `sign_with_rng`), so the exponentiation runs on a random value unrelated
//!   to the ciphertext;
//! - the engine's implicit rejection (`envelope::open_for`) makes a padding
//!   failure take the same path and give the same answer as a content
//!   decryption failure, so there is no *explicit* oracle;
//! - what remains is the timing of the unblinding and of the conversion of
//!   the result to bytes, which depends on the plaintext. No fixed `rsa`
//!   release removes it today. The residual risk is an attacker measuring
//!   response times of an RA that decrypts over the network; operators who
//!   face that should run the default aws-lc provider (constant-time RSA) or
//!   keep the RA key in an HSM. `docs/keys.md` says the same.

use std::sync::Arc;

use aes::cipher::block_padding::Pkcs7;
use aes::cipher::{BlockDecryptMut as _, BlockEncryptMut as _, KeyIvInit};
use p256::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _, EncodePublicKey as _};
use rand_core::{OsRng, RngCore as _};
use rsa::pkcs1::{DecodeRsaPrivateKey as _, der::Decode as _};
use rsa::pkcs8::DecodePublicKey as _;
use rsa::traits::PublicKeyParts as _;
use rsa::{BigUint, Pkcs1v15Encrypt, Pkcs1v15Sign};

use super::provider::{CryptoProvider, GeneratedKey, KeyKind, PrivateKey, RandomError};
use super::{CipherError, ContentCipher, DigestAlg, EcCurve, KeyError, PublicKeyRef, SignatureAlg, VerifyError};

/// The RustCrypto [`CryptoProvider`].
#[derive(Clone, Copy, Debug, Default)]
pub struct RustCryptoProvider;

fn hash<D: sha2::Digest>(parts: &[&[u8]]) -> Vec<u8> {
    let mut h = D::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().to_vec()
}

fn digest_parts(alg: DigestAlg, parts: &[&[u8]]) -> Vec<u8> {
    match alg {
        DigestAlg::Sha1 => hash::<sha1::Sha1>(parts),
        DigestAlg::Sha256 => hash::<sha2::Sha256>(parts),
        DigestAlg::Sha384 => hash::<sha2::Sha384>(parts),
        DigestAlg::Sha512 => hash::<sha2::Sha512>(parts),
    }
}

/// The PKCS #1 v1.5 signature scheme (DigestInfo prefix) for `alg`.
fn pkcs1v15_sign(alg: DigestAlg) -> Pkcs1v15Sign {
    match alg {
        DigestAlg::Sha1 => Pkcs1v15Sign::new::<sha1::Sha1>(),
        DigestAlg::Sha256 => Pkcs1v15Sign::new::<sha2::Sha256>(),
        DigestAlg::Sha384 => Pkcs1v15Sign::new::<sha2::Sha384>(),
        DigestAlg::Sha512 => Pkcs1v15Sign::new::<sha2::Sha512>(),
    }
}

/// The largest RSA modulus verified (as aws-lc's `RSA_PKCS1_*_8192`).
const RSA_VERIFY_MAX_BITS: usize = 8192;

/// Parses a PKCS #1 RSAPublicKey (the SPKI BIT STRING contents).
fn rsa_public_key(pkcs1: &[u8]) -> Option<rsa::RsaPublicKey> {
    let parsed = pkcs1::RsaPublicKey::from_der(pkcs1).ok()?;
    let n = BigUint::from_bytes_be(parsed.modulus.as_bytes());
    let e = BigUint::from_bytes_be(parsed.public_exponent.as_bytes());
    rsa::RsaPublicKey::new_with_max_size(n, e, RSA_VERIFY_MAX_BITS).ok()
}

fn verify_rsa(d: DigestAlg, pkcs1: &[u8], parts: &[&[u8]], signature: &[u8]) -> Result<(), VerifyError> {
    let key = rsa_public_key(pkcs1).ok_or(VerifyError)?;
    // The same sizes as aws-lc: RSA_PKCS1_1024_8192_* and RSA_PKCS1_2048_8192_SHA384.
    let min_bits = if d == DigestAlg::Sha384 { 2048 } else { 1024 };
    let bits = key.n().bits();
    if bits < min_bits || bits > RSA_VERIFY_MAX_BITS {
        return Err(VerifyError);
    }
    let hashed = digest_parts(d, parts);
    key.verify(pkcs1v15_sign(d), &hashed, signature).map_err(|_| VerifyError)
}

fn verify_ecdsa(
    curve: EcCurve,
    d: DigestAlg,
    point: &[u8],
    parts: &[&[u8]],
    signature: &[u8],
) -> Result<(), VerifyError> {
    use p256::ecdsa::signature::hazmat::PrehashVerifier as _;
    // As aws-lc: ECDSA with SHA-1 does not exist here; it is verified as SHA-256.
    let d = if d == DigestAlg::Sha1 { DigestAlg::Sha256 } else { d };
    let e = super::ecdsa_hash_to_order_len(&digest_parts(d, parts), curve);
    match curve {
        EcCurve::P256 => {
            let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(point).map_err(|_| VerifyError)?;
            let sig = p256::ecdsa::Signature::from_der(signature).map_err(|_| VerifyError)?;
            key.verify_prehash(&e, &sig).map_err(|_| VerifyError)
        }
        EcCurve::P384 => {
            let key = p384::ecdsa::VerifyingKey::from_sec1_bytes(point).map_err(|_| VerifyError)?;
            let sig = p384::ecdsa::Signature::from_der(signature).map_err(|_| VerifyError)?;
            key.verify_prehash(&e, &sig).map_err(|_| VerifyError)
        }
    }
}

/// The 16 weak and semi-weak DES keys, exactly as OpenSSL/aws-lc's
/// `DES_is_weak_key` lists them (with odd parity).
const DES_WEAK_KEYS: [[u8; 8]; 16] = [
    [0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01],
    [0xFE, 0xFE, 0xFE, 0xFE, 0xFE, 0xFE, 0xFE, 0xFE],
    [0x1F, 0x1F, 0x1F, 0x1F, 0x0E, 0x0E, 0x0E, 0x0E],
    [0xE0, 0xE0, 0xE0, 0xE0, 0xF1, 0xF1, 0xF1, 0xF1],
    [0x01, 0xFE, 0x01, 0xFE, 0x01, 0xFE, 0x01, 0xFE],
    [0xFE, 0x01, 0xFE, 0x01, 0xFE, 0x01, 0xFE, 0x01],
    [0x1F, 0xE0, 0x1F, 0xE0, 0x0E, 0xF1, 0x0E, 0xF1],
    [0xE0, 0x1F, 0xE0, 0x1F, 0xF1, 0x0E, 0xF1, 0x0E],
    [0x01, 0xE0, 0x01, 0xE0, 0x01, 0xF1, 0x01, 0xF1],
    [0xE0, 0x01, 0xE0, 0x01, 0xF1, 0x01, 0xF1, 0x01],
    [0x1F, 0xFE, 0x1F, 0xFE, 0x0E, 0xFE, 0x0E, 0xFE],
    [0xFE, 0x1F, 0xFE, 0x1F, 0xFE, 0x0E, 0xFE, 0x0E],
    [0x01, 0x1F, 0x01, 0x1F, 0x01, 0x0E, 0x01, 0x0E],
    [0x1F, 0x01, 0x1F, 0x01, 0x0E, 0x01, 0x0E, 0x01],
    [0xE0, 0xFE, 0xE0, 0xFE, 0xF1, 0xFE, 0xF1, 0xFE],
    [0xFE, 0xE0, 0xFE, 0xE0, 0xFE, 0xF1, 0xFE, 0xF1],
];

/// aws-lc's DES key rules: a weak or semi-weak key is refused (exactly the
/// table's bytes: the same key with other parity bits is accepted there, and
/// so here), in single DES and in any 3DES sub-key; 3DES also refuses any two
/// equal sub-keys (SP 800-67 §3.1: it would degenerate to single DES or 2TDEA).
fn des_key_usable(key: &[u8]) -> bool {
    let subkeys: Vec<&[u8]> = key.chunks(8).collect();
    if subkeys.iter().any(|k| DES_WEAK_KEYS.iter().any(|w| w.as_slice() == *k)) {
        return false;
    }
    match subkeys.as_slice() {
        [k1, k2, k3] => k1 != k2 && k2 != k3 && k1 != k3,
        _ => true,
    }
}

fn cbc_encrypt<C>(key: &[u8], iv: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, CipherError>
where
    C: aes::cipher::BlockEncryptMut + aes::cipher::BlockCipher + aes::cipher::KeyInit,
{
    let enc = cbc::Encryptor::<C>::new_from_slices(key, iv).map_err(|_| CipherError)?;
    Ok(enc.encrypt_padded_vec_mut::<Pkcs7>(plaintext))
}

fn cbc_decrypt<C>(key: &[u8], iv: &[u8], buf: &mut [u8]) -> Result<usize, CipherError>
where
    C: aes::cipher::BlockDecryptMut + aes::cipher::BlockCipher + aes::cipher::KeyInit,
{
    let dec = cbc::Decryptor::<C>::new_from_slices(key, iv).map_err(|_| CipherError)?;
    dec.decrypt_padded_mut::<Pkcs7>(buf).map(<[u8]>::len).map_err(|_| CipherError)
}

impl CryptoProvider for RustCryptoProvider {
    fn name(&self) -> &'static str {
        "rustcrypto"
    }

    fn digest(&self, alg: DigestAlg, parts: &[&[u8]]) -> Vec<u8> {
        digest_parts(alg, parts)
    }

    fn verify(
        &self,
        alg: SignatureAlg,
        key: PublicKeyRef<'_>,
        parts: &[&[u8]],
        signature: &[u8],
    ) -> Result<(), VerifyError> {
        match (alg, key) {
            (SignatureAlg::RsaPkcs1(d), PublicKeyRef::Rsa(pk)) => verify_rsa(d, pk, parts, signature),
            (SignatureAlg::Ecdsa(d), PublicKeyRef::EcP256(pk)) => verify_ecdsa(EcCurve::P256, d, pk, parts, signature),
            (SignatureAlg::Ecdsa(d), PublicKeyRef::EcP384(pk)) => verify_ecdsa(EcCurve::P384, d, pk, parts, signature),
            _ => Err(VerifyError),
        }
    }

    fn encrypt_content(
        &self,
        c: ContentCipher,
        key: &[u8],
        iv: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, CipherError> {
        if !self.accepts_content_key(c, key) || iv.len() != c.iv_len() {
            return Err(CipherError);
        }
        match c {
            ContentCipher::DesCbc => cbc_encrypt::<des::Des>(key, iv, plaintext),
            ContentCipher::DesEde3Cbc => cbc_encrypt::<des::TdesEde3>(key, iv, plaintext),
            ContentCipher::Aes128Cbc => cbc_encrypt::<aes::Aes128>(key, iv, plaintext),
            ContentCipher::Aes192Cbc => cbc_encrypt::<aes::Aes192>(key, iv, plaintext),
            ContentCipher::Aes256Cbc => cbc_encrypt::<aes::Aes256>(key, iv, plaintext),
        }
    }

    fn decrypt_content(&self, c: ContentCipher, key: &[u8], iv: &[u8], buf: &mut [u8]) -> Result<usize, CipherError> {
        if !self.accepts_content_key(c, key) || iv.len() != c.iv_len() {
            return Err(CipherError);
        }
        match c {
            ContentCipher::DesCbc => cbc_decrypt::<des::Des>(key, iv, buf),
            ContentCipher::DesEde3Cbc => cbc_decrypt::<des::TdesEde3>(key, iv, buf),
            ContentCipher::Aes128Cbc => cbc_decrypt::<aes::Aes128>(key, iv, buf),
            ContentCipher::Aes192Cbc => cbc_decrypt::<aes::Aes192>(key, iv, buf),
            ContentCipher::Aes256Cbc => cbc_decrypt::<aes::Aes256>(key, iv, buf),
        }
    }

    fn accepts_content_key(&self, c: ContentCipher, key: &[u8]) -> bool {
        key.len() == c.key_len()
            && match c {
                ContentCipher::DesCbc | ContentCipher::DesEde3Cbc => des_key_usable(key),
                _ => true,
            }
    }

    fn rsa_encrypt_pkcs1v15(&self, spki_der: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, KeyError> {
        let pk = rsa::RsaPublicKey::from_public_key_der(spki_der)
            .map_err(|e| KeyError::new(format!("recipient key is not a usable RSA key: {e}")))?;
        pk.encrypt(&mut OsRng, Pkcs1v15Encrypt, plaintext).map_err(|e| KeyError::new(format!("RSA encryption: {e}")))
    }

    fn fill_random(&self, buf: &mut [u8]) -> Result<(), RandomError> {
        OsRng.try_fill_bytes(buf).map_err(|_| RandomError)
    }

    fn load_private_key(&self, der: &[u8]) -> Result<Arc<dyn PrivateKey>, KeyError> {
        match RustCryptoRsaKey::from_der(der) {
            Ok(k) => Ok(Arc::new(k)),
            Err(rsa_err) => RustCryptoEcKey::from_der(der)
                .map(|k| Arc::new(k) as Arc<dyn PrivateKey>)
                .map_err(|ec_err| KeyError::new(format!("{rsa_err}; {ec_err}"))),
        }
    }

    fn generate_private_key(&self, kind: KeyKind) -> Result<GeneratedKey, KeyError> {
        let pkcs8 = match kind {
            KeyKind::Rsa { modulus_bits: bits @ (2048 | 3072 | 4096) } => rsa::RsaPrivateKey::new(&mut OsRng, bits)
                .map_err(|e| KeyError::new(format!("RSA key generation: {e}")))?
                .to_pkcs8_der(),
            KeyKind::Rsa { modulus_bits } => {
                return Err(KeyError::new(format!("unsupported RSA key size {modulus_bits}")));
            }
            KeyKind::Ec(EcCurve::P256) => p256::SecretKey::random(&mut OsRng).to_pkcs8_der(),
            KeyKind::Ec(EcCurve::P384) => p384::SecretKey::random(&mut OsRng).to_pkcs8_der(),
        };
        let pkcs8_der = pkcs8.map_err(|e| KeyError::new(format!("PKCS#8 encoding: {e}")))?.as_bytes().to_vec();
        let key = self.load_private_key(&pkcs8_der)?;
        Ok(GeneratedKey { key, pkcs8_der })
    }
}

/// A RustCrypto RSA private key (2048..=4096 bits).
struct RustCryptoRsaKey {
    key: rsa::RsaPrivateKey,
    spki_der: Vec<u8>,
}

impl std::fmt::Debug for RustCryptoRsaKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RustCryptoRsaKey({} bits)", self.key.n().bits())
    }
}

impl RustCryptoRsaKey {
    fn from_der(der: &[u8]) -> Result<Self, KeyError> {
        let key = rsa::RsaPrivateKey::from_pkcs8_der(der)
            .or_else(|_| rsa::RsaPrivateKey::from_pkcs1_der(der))
            .map_err(|e| KeyError::new(format!("not a usable RSA private key: {e}")))?;
        // aws-lc refuses RSA private keys under 2048 bits; so does this provider.
        let bits = key.n().bits();
        if bits < 2048 {
            return Err(KeyError::new(format!("not a usable RSA private key: {bits} bits, at least 2048 required")));
        }
        let spki_der = key
            .to_public_key()
            .to_public_key_der()
            .map_err(|e| KeyError::new(format!("cannot encode public key: {e}")))?
            .into_vec();
        Ok(Self { key, spki_der })
    }
}

impl PrivateKey for RustCryptoRsaKey {
    fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }

    fn kind(&self) -> KeyKind {
        KeyKind::Rsa { modulus_bits: self.key.size() * 8 }
    }

    fn sign(&self, digest: DigestAlg, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        let d = digest.for_reply();
        let hashed = digest_parts(d, &[message]);
        // Blinded (see the module docs).
        self.key
            .sign_with_rng(&mut OsRng, pkcs1v15_sign(d), &hashed)
            .map_err(|e| KeyError::new(format!("RSA signing failed: {e}")))
    }

    fn decrypt_pkcs1v15(&self, ciphertext: &[u8]) -> Result<Option<Vec<u8>>, KeyError> {
        // Blinded; every failure is the same `None` (implicit rejection is the caller's).
        Ok(self.key.decrypt_blinded(&mut OsRng, Pkcs1v15Encrypt, ciphertext).ok())
    }
}

/// The curve-specific half of a RustCrypto ECDSA key.
enum EcSigningKey {
    P256(p256::ecdsa::SigningKey),
    P384(p384::ecdsa::SigningKey),
}

/// A RustCrypto ECDSA P-256 or P-384 private key.
struct RustCryptoEcKey {
    key: EcSigningKey,
    spki_der: Vec<u8>,
}

impl std::fmt::Debug for RustCryptoEcKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RustCryptoEcKey({})", self.curve().name())
    }
}

impl RustCryptoEcKey {
    fn from_der(der: &[u8]) -> Result<Self, KeyError> {
        let spki = |r: Result<spki_doc::Document, pkcs8::spki::Error>| {
            r.map(|d| d.into_vec()).map_err(|e| KeyError::new(format!("cannot encode public key: {e}")))
        };
        if let Ok(secret) = p256::SecretKey::from_pkcs8_der(der).or_else(|_| p256::SecretKey::from_sec1_der(der)) {
            let spki_der = spki(secret.public_key().to_public_key_der())?;
            return Ok(Self { key: EcSigningKey::P256(secret.into()), spki_der });
        }
        if let Ok(secret) = p384::SecretKey::from_pkcs8_der(der).or_else(|_| p384::SecretKey::from_sec1_der(der)) {
            let spki_der = spki(secret.public_key().to_public_key_der())?;
            return Ok(Self { key: EcSigningKey::P384(secret.into()), spki_der });
        }
        Err(KeyError::new("not a usable ECDSA P-256 or P-384 private key (neither PKCS#8 nor SEC1 on either curve)"))
    }

    const fn curve(&self) -> EcCurve {
        match self.key {
            EcSigningKey::P256(_) => EcCurve::P256,
            EcSigningKey::P384(_) => EcCurve::P384,
        }
    }
}

/// The DER document type the `spki` encoders return.
mod spki_doc {
    pub(super) use p256::pkcs8::Document;
}

impl PrivateKey for RustCryptoEcKey {
    fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }

    fn kind(&self) -> KeyKind {
        KeyKind::Ec(self.curve())
    }

    fn sign(&self, digest: DigestAlg, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        use p256::ecdsa::signature::hazmat::PrehashSigner as _;
        let e = super::ecdsa_hash_to_order_len(&digest_parts(digest.for_reply(), &[message]), self.curve());
        let failed = |err: p256::ecdsa::Error| KeyError::new(format!("ECDSA signing failed: {err}"));
        Ok(match &self.key {
            EcSigningKey::P256(k) => {
                let sig: p256::ecdsa::Signature = k.sign_prehash(&e).map_err(failed)?;
                sig.to_der().as_bytes().to_vec()
            }
            EcSigningKey::P384(k) => {
                let sig: p384::ecdsa::Signature = k.sign_prehash(&e).map_err(failed)?;
                sig.to_der().as_bytes().to_vec()
            }
        })
    }

    fn decrypt_pkcs1v15(&self, _ciphertext: &[u8]) -> Result<Option<Vec<u8>>, KeyError> {
        Ok(None)
    }
}
