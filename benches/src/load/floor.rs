//! The crypto floor of one enrolment (`scep-load floor`): the raw aws-lc
//! operations a SCEP server cannot avoid for one PKCSReq, timed on one
//! thread, so that a load run's server CPU per enrolment can be read as a
//! ratio to it, measured in the same run (issue 20).
//!
//! What an RFC 8894 server must do for one PKCSReq with RSA-2048 keys
//! everywhere (the fleet's device keys, the RA key, the CA key):
//!
//! | step | operation |
//! |---|---|
//! | verify the request's signerInfo (§3.1) | RSA-2048 verify, SHA-256 |
//! | unwrap the content-encryption key (§3.1, CMS KeyTransRecipientInfo) | RSA-2048 private decrypt, PKCS #1 v1.5 |
//! | decrypt the CSR | AES-256-CBC, ~1 KiB |
//! | check the CSR's self-signature (RFC 2986) | RSA-2048 verify, SHA-256 |
//! | sign the certificate | RSA-2048 private sign, SHA-256 |
//! | encrypt the reply to the device's key | RSA-2048 public encrypt + AES-256-CBC, ~1.4 KiB |
//! | sign the CertRep (§3.3) | RSA-2048 private sign, SHA-256 |
//! | content digests (messageDigest of both messages) | 2 x SHA-256, ~1.5 KiB |
//! | fresh content key, IV, serial, sender nonce | 80 random bytes |
//!
//! The three private-key operations are nearly all of it. Everything is
//! called on aws-lc-rs directly, not through scepd, so the floor does not
//! move when scepd changes. Time is the thread's own CPU time
//! (`/proc/thread-self/schedstat`), the same kind of time as the server CPU
//! `scep-load run --server-pid` reports.

use std::time::{Duration, Instant};

use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::rand::SecureRandom as _;
use aws_lc_rs::signature::KeyPair as _;
use aws_lc_rs::{cipher, digest, rand, rsa, signature};
use serde::Serialize;

use super::LoadError;

/// The size of the request's encrypted content (a CSR with a challenge).
const REQUEST_CONTENT: usize = 1024;
/// The size of the reply's encrypted content (a degenerate PKCS #7 with the certificate).
const REPLY_CONTENT: usize = 1400;
/// The size of the signed attributes and to-be-signed structures.
const SIGNED_BYTES: usize = 800;

/// The cost of each operation and of one enrolment's set, in microseconds of
/// one thread's CPU time.
#[derive(Clone, Debug, Serialize)]
pub struct Floor {
    /// One RSA-2048 private-key signature (PKCS #1 v1.5, SHA-256).
    pub rsa_sign_us: f64,
    /// One RSA-2048 private-key decryption (PKCS #1 v1.5).
    pub rsa_decrypt_us: f64,
    /// One RSA-2048 verification (SHA-256).
    pub rsa_verify_us: f64,
    /// One RSA-2048 public-key encryption (PKCS #1 v1.5).
    pub rsa_encrypt_us: f64,
    /// AES-256-CBC of both contents, both digests and the random bytes.
    pub symmetric_us: f64,
    /// One enrolment: 2 signs, 1 decrypt, 2 verifies, 1 encrypt, the symmetric work.
    pub enrolment_us: f64,
    /// How many times each operation ran.
    pub rounds: u64,
}

impl Floor {
    /// The enrolment floor in milliseconds.
    pub fn enrolment_ms(&self) -> f64 {
        self.enrolment_us / 1000.0
    }
}

/// This thread's CPU time so far (`/proc/thread-self/schedstat`, first field, ns).
fn thread_cpu() -> Result<Duration, LoadError> {
    let path = std::path::Path::new("/proc/thread-self/schedstat");
    let text = std::fs::read_to_string(path).map_err(|e| LoadError::io(path, e))?;
    let ns = text
        .split_whitespace()
        .next()
        .and_then(|f| f.parse::<u64>().ok())
        .ok_or_else(|| LoadError::Setup(format!("{}: unexpected content {text:?}", path.display())))?;
    Ok(Duration::from_nanos(ns))
}

fn setup(what: &str, e: impl std::fmt::Display) -> LoadError {
    LoadError::Setup(format!("crypto floor: {what}: {e}"))
}

/// A PKCS #1 v1.5 encryption key for an RSA SubjectPublicKeyInfo.
fn public_encrypting(spki_der: &[u8]) -> Result<rsa::Pkcs1PublicEncryptingKey, LoadError> {
    let key = rsa::PublicEncryptingKey::from_der(spki_der).map_err(|e| setup("RSA public key", e))?;
    rsa::Pkcs1PublicEncryptingKey::new(key).map_err(|e| setup("RSA public key", e))
}

/// The keys and inputs of the measurement.
struct Material {
    ca: signature::RsaKeyPair,
    ra: signature::RsaKeyPair,
    ra_decrypt: rsa::Pkcs1PrivateDecryptingKey,
    device_verify: signature::UnparsedPublicKey<Vec<u8>>,
    device_encrypt: rsa::Pkcs1PublicEncryptingKey,
    device_signature: Vec<u8>,
    wrapped_key: Vec<u8>,
    signed: Vec<u8>,
    request_ciphertext: Vec<u8>,
    request_iv: [u8; 16],
    content_key: [u8; 32],
}

impl Material {
    fn new() -> Result<Self, LoadError> {
        let generate = || signature::RsaKeyPair::generate(rsa::KeySize::Rsa2048).map_err(|e| setup("RSA key", e));
        let (ca, ra, device) = (generate()?, generate()?, generate()?);
        let ra_pkcs8 = ra.as_der().map_err(|e| setup("RA key", e))?;
        let ra_decrypt = rsa::PrivateDecryptingKey::from_pkcs8(ra_pkcs8.as_ref())
            .map_err(|e| setup("RA decryption key", e))
            .and_then(|k| rsa::Pkcs1PrivateDecryptingKey::new(k).map_err(|e| setup("RA decryption key", e)))?;
        let ra_spki = ra.public_key().as_der().map_err(|e| setup("RA public key", e))?;
        let device_spki = device.public_key().as_der().map_err(|e| setup("device public key", e))?;
        let device_encrypt = public_encrypting(device_spki.as_ref())?;
        let device_verify = signature::UnparsedPublicKey::new(
            &signature::RSA_PKCS1_2048_8192_SHA256,
            device.public_key().as_ref().to_vec(),
        );
        let signed = vec![0x5a; SIGNED_BYTES];
        let mut device_signature = vec![0; device.public_modulus_len()];
        device
            .sign(&signature::RSA_PKCS1_SHA256, &rand::SystemRandom::new(), &signed, &mut device_signature)
            .map_err(|e| setup("device signature", e))?;
        let mut content_key = [0u8; 32];
        rand::SystemRandom::new().fill(&mut content_key).map_err(|e| setup("random", e))?;
        let ra_encrypt = public_encrypting(ra_spki.as_ref())?;
        let mut wrapped_key = vec![0; ra_encrypt.ciphertext_size()];
        let n = ra_encrypt.encrypt(&content_key, &mut wrapped_key).map_err(|e| setup("key wrap", e))?.len();
        wrapped_key.truncate(n);
        let key = cipher::UnboundCipherKey::new(&cipher::AES_256, &content_key).map_err(|e| setup("AES key", e))?;
        let encrypting = cipher::PaddedBlockEncryptingKey::cbc_pkcs7(key).map_err(|e| setup("AES-CBC", e))?;
        let mut request_ciphertext = vec![0x33; REQUEST_CONTENT];
        let context = encrypting.encrypt(&mut request_ciphertext).map_err(|e| setup("AES-CBC encrypt", e))?;
        let request_iv = match context {
            cipher::DecryptionContext::Iv128(iv) => *iv.as_ref(),
            _ => return Err(setup("AES-CBC", "unexpected IV kind")),
        };
        Ok(Self {
            ca,
            ra,
            ra_decrypt,
            device_verify,
            device_encrypt,
            device_signature,
            wrapped_key,
            signed,
            request_ciphertext,
            request_iv,
            content_key,
        })
    }

    fn sign(&self, key: &signature::RsaKeyPair) -> Result<(), LoadError> {
        let mut sig = vec![0; key.public_modulus_len()];
        key.sign(&signature::RSA_PKCS1_SHA256, &rand::SystemRandom::new(), &self.signed, &mut sig)
            .map_err(|e| setup("sign", e))
    }

    fn decrypt(&self) -> Result<(), LoadError> {
        let mut out = vec![0; self.ra_decrypt.min_output_size()];
        let plain = self.ra_decrypt.decrypt(&self.wrapped_key, &mut out).map_err(|e| setup("decrypt", e))?;
        if plain != self.content_key {
            return Err(setup("decrypt", "the content key did not round-trip"));
        }
        Ok(())
    }

    fn verify(&self) -> Result<(), LoadError> {
        self.device_verify.verify(&self.signed, &self.device_signature).map_err(|e| setup("verify", e))
    }

    fn encrypt(&self) -> Result<(), LoadError> {
        let mut out = vec![0; self.device_encrypt.ciphertext_size()];
        self.device_encrypt.encrypt(&self.content_key, &mut out).map(drop).map_err(|e| setup("encrypt", e))
    }

    fn symmetric(&self) -> Result<(), LoadError> {
        let key = || cipher::UnboundCipherKey::new(&cipher::AES_256, &self.content_key).map_err(|e| setup("AES", e));
        let decrypting = cipher::PaddedBlockDecryptingKey::cbc_pkcs7(key()?).map_err(|e| setup("AES-CBC", e))?;
        let mut request = self.request_ciphertext.clone();
        let context = cipher::DecryptionContext::Iv128(self.request_iv.into());
        let csr_len = decrypting.decrypt(&mut request, context).map_err(|e| setup("AES-CBC decrypt", e))?.len();
        let encrypting = cipher::PaddedBlockEncryptingKey::cbc_pkcs7(key()?).map_err(|e| setup("AES-CBC", e))?;
        let mut reply = vec![0x44; REPLY_CONTENT];
        encrypting.encrypt(&mut reply).map_err(|e| setup("AES-CBC encrypt", e))?;
        let request_digest = digest::digest(&digest::SHA256, &request[..csr_len]);
        let reply_digest = digest::digest(&digest::SHA256, &reply);
        let mut fresh = [0u8; 80];
        rand::SystemRandom::new().fill(&mut fresh).map_err(|e| setup("random", e))?;
        std::hint::black_box((request_digest, reply_digest, fresh));
        Ok(())
    }
}

/// How many times an operation runs between two readings of the clock, so
/// reading it (a few microseconds of system calls) stays out of the figures.
const BATCH: u64 = 10;

/// Times each operation `BATCH` times per round, over `rounds`, interleaved
/// (every operation in every round, so a slower stretch of the machine
/// touches them alike). Returns the CPU time of each of the five kinds.
fn measure_rounds(m: &Material, rounds: u64) -> Result<[Duration; 5], LoadError> {
    let ops: [&dyn Fn() -> Result<(), LoadError>; 5] =
        [&|| m.sign(&m.ca).and_then(|()| m.sign(&m.ra)), &|| m.decrypt(), &|| m.verify(), &|| m.encrypt(), &|| {
            m.symmetric()
        }];
    let mut spent = [Duration::ZERO; 5];
    for _ in 0..rounds {
        for (op, s) in ops.iter().zip(spent.iter_mut()) {
            let t0 = thread_cpu()?;
            for _ in 0..BATCH {
                op()?;
            }
            *s += thread_cpu()?.saturating_sub(t0);
        }
    }
    Ok(spent)
}

/// Measures the floor for about `duration` of CPU time on this thread.
///
/// # Errors
/// When a key cannot be made or an operation fails (a broken aws-lc), or
/// `/proc/thread-self/schedstat` cannot be read (not Linux).
pub fn measure(duration: Duration) -> Result<Floor, LoadError> {
    let material = Material::new()?;
    // Warm up (page in the code, settle the frequency), then calibrate.
    measure_rounds(&material, 2)?;
    let started = Instant::now();
    let mut spent = [Duration::ZERO; 5];
    let mut rounds = 0u64;
    while started.elapsed() < duration {
        let batch = measure_rounds(&material, 5)?;
        for (s, b) in spent.iter_mut().zip(batch) {
            *s += b;
        }
        rounds += 5 * BATCH;
    }
    let each = |d: Duration| d.as_secs_f64() * 1e6 / rounds as f64;
    let [sign, decrypt, verify, encrypt, symmetric] = spent.map(each);
    Ok(Floor {
        // The first kind signs twice (the CA's key, then the RA's).
        rsa_sign_us: sign / 2.0,
        rsa_decrypt_us: decrypt,
        rsa_verify_us: verify,
        rsa_encrypt_us: encrypt,
        symmetric_us: symmetric,
        // One enrolment: the CA's and the RA's signatures, one unwrap, the
        // signerInfo's and the CSR's verifications, one key wrap.
        enrolment_us: sign + decrypt + 2.0 * verify + encrypt + symmetric,
        rounds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floor_is_dominated_by_the_private_key_operations() {
        let f = measure(Duration::from_millis(300)).unwrap();
        assert!(f.rounds >= 50, "{f:?}");
        let sum = 2.0 * f.rsa_sign_us + f.rsa_decrypt_us + 2.0 * f.rsa_verify_us + f.rsa_encrypt_us + f.symmetric_us;
        assert!((sum - f.enrolment_us).abs() < 0.01 * f.enrolment_us, "{f:?}");
        // A private-key operation costs far more than a public one (CRT
        // exponent of 2048 bits against e = 65537): a floor that timed the
        // wrong thing would not show it.
        assert!(f.rsa_sign_us > 3.0 * f.rsa_verify_us, "{f:?}");
        assert!(f.rsa_decrypt_us > 3.0 * f.rsa_encrypt_us, "{f:?}");
        assert!(f.rsa_sign_us + f.rsa_decrypt_us > f.symmetric_us, "{f:?}");
    }
}
