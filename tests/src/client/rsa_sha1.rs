//! RSA PKCS#1 v1.5 signatures with SHA-1 (RFC 8017 §8.2.1, EMSA-PKCS1-v1_5 §9.2).
//!
//! aws-lc-rs verifies SHA-1 signatures but refuses to make them, yet legacy
//! SCEP clients (micromdm's `scepclient`, old iOS) sign with SHA-1 and the
//! server must be tested against exactly that. This module does the private
//! operation with a small Montgomery exponentiation over the key's `n` and `d`.
//! It is NOT constant time: test-client use only, never for a server key.
//! Every signature is verified with aws-lc-rs before it is returned.

use scep_engine::crypto::{DigestAlg, SignatureAlg};
use scep_engine::wire::{parse_single, tag};
use scep_engine::x509::SubjectPublicKeyInfoRef;

use super::error::{ClientError, Result};

/// DER DigestInfo prefix for SHA-1 (RFC 8017 §9.2 note 1).
const SHA1_DIGEST_INFO: &[u8] =
    &[0x30, 0x21, 0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00, 0x04, 0x14];

/// Signs `message` with SHA-1 using the RSA key in `key_der` (PKCS#8 or PKCS#1).
///
/// # Errors
/// For a malformed key, or if the result does not verify.
pub(crate) fn sign(key_der: &[u8], message: &[u8]) -> Result<Vec<u8>> {
    let bad = |e| ClientError::decode("RSA private key")(e);
    let outer = parse_single(key_der).map_err(bad)?;
    let mut r = outer.reader();
    r.read().map_err(bad)?; // version
    let pkcs1 = if r.peek_tag() == Some(tag::SEQUENCE) {
        // PKCS#8 PrivateKeyInfo: AlgorithmIdentifier, OCTET STRING { RSAPrivateKey }.
        r.read().map_err(bad)?;
        r.expect(tag::OCTET_STRING).map_err(bad)?.contents
    } else {
        key_der
    };
    let rsa = parse_single(pkcs1).map_err(bad)?;
    let mut r = rsa.reader();
    r.read().map_err(bad)?; // version
    let n = r.read().and_then(|t| t.unsigned_integer()).map_err(bad)?;
    let e = r.read().and_then(|t| t.unsigned_integer()).map_err(bad)?;
    let d = r.read().and_then(|t| t.unsigned_integer()).map_err(bad)?;

    let k = n.len();
    let hash = DigestAlg::Sha1.digest(message);
    let t_len = SHA1_DIGEST_INFO.len() + hash.len();
    if k < t_len + 11 {
        return Err(ClientError::Crypto("RSA modulus too short for PKCS#1 v1.5".into()));
    }
    let mut em = vec![0xffu8; k];
    em[0] = 0;
    em[1] = 1;
    em[k - t_len - 1] = 0;
    em[k - t_len..k - hash.len()].copy_from_slice(SHA1_DIGEST_INFO);
    em[k - hash.len()..].copy_from_slice(&hash);

    let modulus = Modulus::new(n).ok_or_else(|| ClientError::Crypto("even or empty RSA modulus".into()))?;
    let sig = modulus.pow(&from_be(&em, modulus.limbs()), d);
    let signature = to_be(&sig, k);

    // Check with aws-lc-rs before anyone relies on the signature.
    let mut spki = scep_engine::wire::Writer::new();
    let mut pk = scep_engine::wire::Writer::new();
    pk.sequence(|w| {
        w.unsigned_integer(n).unsigned_integer(e);
    });
    spki.sequence(|w| {
        w.sequence(|w| {
            w.oid(scep_engine::oid::RSA_ENCRYPTION).null();
        });
        w.bit_string(pk.as_slice());
    });
    let spki = spki.into_vec();
    let info = SubjectPublicKeyInfoRef::parse(&spki).map_err(bad)?;
    let public = info.public_key().map_err(bad)?;
    SignatureAlg::RsaPkcs1(DigestAlg::Sha1)
        .verify(public, message, &signature)
        .map_err(|_| ClientError::Crypto("SHA-1 RSA signature failed self-check".into()))?;
    Ok(signature)
}

/// Big-endian bytes to little-endian u64 limbs (`limbs` long; input must fit).
fn from_be(bytes: &[u8], limbs: usize) -> Vec<u64> {
    let mut out = vec![0u64; limbs];
    for (i, chunk) in bytes.rchunks(8).enumerate() {
        let mut v = 0u64;
        for &b in chunk {
            v = (v << 8) | u64::from(b);
        }
        if let Some(slot) = out.get_mut(i) {
            *slot = v;
        }
    }
    out
}

/// Little-endian limbs to `len` big-endian bytes.
fn to_be(limbs: &[u64], len: usize) -> Vec<u8> {
    let mut bytes: Vec<u8> = limbs.iter().rev().flat_map(|l| l.to_be_bytes()).collect();
    let excess = bytes.len().saturating_sub(len);
    bytes.drain(..excess);
    bytes
}

/// An odd modulus with its Montgomery constants.
struct Modulus {
    n: Vec<u64>,
    /// -n^{-1} mod 2^64.
    n0inv: u64,
    /// R^2 mod n, R = 2^(64·limbs).
    r2: Vec<u64>,
}

impl Modulus {
    fn new(n_be: &[u8]) -> Option<Self> {
        let limbs = n_be.len().div_ceil(8);
        let n = from_be(n_be, limbs);
        let n0 = *n.first()?;
        if n0 & 1 == 0 {
            return None;
        }
        // Newton iteration for n0^{-1} mod 2^64.
        let mut inv = 1u64;
        for _ in 0..6 {
            inv = inv.wrapping_mul(2u64.wrapping_sub(n0.wrapping_mul(inv)));
        }
        let mut m = Self { n, n0inv: inv.wrapping_neg(), r2: Vec::new() };
        // R^2 mod n by doubling 1 (2·64·limbs) times modulo n.
        let mut x = vec![0u64; limbs];
        x[0] = 1;
        for _ in 0..(128 * limbs) {
            let carry = shl1(&mut x);
            if carry || !lt(&x, &m.n) {
                sub_in_place(&mut x, &m.n);
            }
        }
        m.r2 = x;
        Some(m)
    }

    fn limbs(&self) -> usize {
        self.n.len()
    }

    /// Montgomery product a·b·R^{-1} mod n (CIOS).
    fn mont_mul(&self, a: &[u64], b: &[u64]) -> Vec<u64> {
        let s = self.n.len();
        let mut t = vec![0u64; s + 2];
        for &ai in a.iter().take(s) {
            let mut carry = 0u128;
            for j in 0..s {
                let v = u128::from(t[j]) + u128::from(ai) * u128::from(b[j]) + carry;
                t[j] = v as u64;
                carry = v >> 64;
            }
            let v = u128::from(t[s]) + carry;
            t[s] = v as u64;
            t[s + 1] = (v >> 64) as u64;
            let m = t[0].wrapping_mul(self.n0inv);
            let v = u128::from(t[0]) + u128::from(m) * u128::from(self.n[0]);
            let mut carry = v >> 64;
            for j in 1..s {
                let v = u128::from(t[j]) + u128::from(m) * u128::from(self.n[j]) + carry;
                t[j - 1] = v as u64;
                carry = v >> 64;
            }
            let v = u128::from(t[s]) + carry;
            t[s - 1] = v as u64;
            t[s] = t[s + 1] + (v >> 64) as u64;
            t[s + 1] = 0;
        }
        let overflow = t[s] != 0;
        t.truncate(s);
        if overflow || !lt(&t, &self.n) {
            sub_in_place(&mut t, &self.n);
        }
        t
    }

    /// base^exp mod n (square-and-multiply over the big-endian exponent).
    fn pow(&self, base: &[u64], exp_be: &[u8]) -> Vec<u64> {
        let mut one = vec![0u64; self.n.len()];
        one[0] = 1;
        let base_m = self.mont_mul(base, &self.r2);
        let mut acc = self.mont_mul(&one, &self.r2);
        for &byte in exp_be {
            for bit in (0..8).rev() {
                acc = self.mont_mul(&acc, &acc);
                if byte >> bit & 1 == 1 {
                    acc = self.mont_mul(&acc, &base_m);
                }
            }
        }
        self.mont_mul(&acc, &one)
    }
}

/// x <<= 1, returning the bit shifted out.
fn shl1(x: &mut [u64]) -> bool {
    let mut carry = 0u64;
    for l in x.iter_mut() {
        let next = *l >> 63;
        *l = (*l << 1) | carry;
        carry = next;
    }
    carry == 1
}

/// a < b (equal lengths).
fn lt(a: &[u64], b: &[u64]) -> bool {
    for (x, y) in a.iter().rev().zip(b.iter().rev()) {
        if x != y {
            return x < y;
        }
    }
    false
}

/// a -= b (wrapping; callers ensure the true result fits).
fn sub_in_place(a: &mut [u64], b: &[u64]) {
    let mut borrow = false;
    for (x, &y) in a.iter_mut().zip(b) {
        let (d1, b1) = x.overflowing_sub(y);
        let (d2, b2) = d1.overflowing_sub(u64::from(borrow));
        *x = d2;
        borrow = b1 || b2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha1_signature_verifies_and_detects_tampering() {
        let key = crate::client::DeviceKey::pregenerated(0).unwrap();
        let sig = sign(key.private_key_der(), b"scep").unwrap();
        let spki = SubjectPublicKeyInfoRef::parse(key.spki_der()).unwrap();
        let pk = spki.public_key().unwrap();
        SignatureAlg::RsaPkcs1(DigestAlg::Sha1).verify(pk, b"scep", &sig).unwrap();
        assert!(SignatureAlg::RsaPkcs1(DigestAlg::Sha1).verify(pk, b"scEp", &sig).is_err());
    }

    #[test]
    fn small_modexp() {
        // 4^13 mod 497 = 445
        let m = Modulus::new(&[0x01, 0xf1]).unwrap();
        assert_eq!(m.pow(&[4], &[13]), vec![445]);
    }
}
