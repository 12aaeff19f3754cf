//! The signed client assertion of Entra's certificate credential (RFC 7523
//! §2.2; contract §1.3): a JWT signed PS256 (RSASSA-PSS with SHA-256, RFC 7518
//! §3.5) with the key of a certificate registered on the application,
//! naming it by `x5t#S256` (and the older `x5t`, SHA-1).

use scep_engine::crypto::DigestAlg;

use super::client::{b64url, random_guid};

/// Lifetime of one assertion (Entra accepts a short window; §1.3).
const LIFETIME_SECS: u64 = 300;

/// A certificate credential: the certificate's DER and its RSA key.
pub struct ClientAssertion {
    cert_der: Vec<u8>,
    key: Ps256Key,
}

/// An RSA key signing RSASSA-PSS with SHA-256 (salt 32 octets, MGF1-SHA-256:
/// RFC 7518 §3.5). The crypto provider seam has no PSS (nothing in SCEP signs
/// with it), so this one place uses the library of the build directly.
#[cfg(feature = "aws-lc")]
struct Ps256Key(aws_lc_rs::signature::RsaKeyPair);

#[cfg(feature = "aws-lc")]
impl Ps256Key {
    fn from_der(der: &[u8]) -> Result<Self, String> {
        use aws_lc_rs::signature::RsaKeyPair;
        RsaKeyPair::from_pkcs8(der)
            .or_else(|_| RsaKeyPair::from_der(der))
            .map(Self)
            .map_err(|e| format!("not a usable RSA private key: {e}"))
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, String> {
        let mut signature = vec![0u8; self.0.public_modulus_len()];
        let rng = aws_lc_rs::rand::SystemRandom::new();
        self.0
            .sign(&aws_lc_rs::signature::RSA_PSS_SHA256, &rng, message, &mut signature)
            .map_err(|e| format!("PS256 signing failed: {e}"))?;
        Ok(signature)
    }
}

#[cfg(not(feature = "aws-lc"))]
struct Ps256Key(Box<rsa::pss::BlindedSigningKey<sha2::Sha256>>);

#[cfg(not(feature = "aws-lc"))]
impl Ps256Key {
    fn from_der(der: &[u8]) -> Result<Self, String> {
        use rsa::pkcs1::DecodeRsaPrivateKey as _;
        use rsa::pkcs8::DecodePrivateKey as _;
        rsa::RsaPrivateKey::from_pkcs8_der(der)
            .or_else(|_| rsa::RsaPrivateKey::from_pkcs1_der(der))
            .map(|k| Self(Box::new(rsa::pss::BlindedSigningKey::new(k))))
            .map_err(|e| format!("not a usable RSA private key: {e}"))
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, String> {
        use rsa::signature::{RandomizedSigner as _, SignatureEncoding as _};
        let signature = self
            .0
            .try_sign_with_rng(&mut rsa::rand_core::OsRng, message)
            .map_err(|e| format!("PS256 signing failed: {e}"))?;
        Ok(signature.to_vec())
    }
}

impl ClientAssertion {
    /// From the certificate (DER) and the key (PKCS#8 or PKCS#1 DER).
    ///
    /// # Errors
    /// When the key is not a usable RSA key.
    pub fn new(cert_der: Vec<u8>, key_der: &[u8]) -> Result<Self, String> {
        Ok(Self { cert_der, key: Ps256Key::from_der(key_der)? })
    }

    /// A fresh assertion for `client_id` to the token endpoint `audience`.
    ///
    /// # Errors
    /// When signing fails.
    pub fn sign(&self, client_id: &str, audience: &str) -> Result<String, String> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|e| format!("clock: {e}"))?
            .as_secs();
        let header = serde_json::json!({
            "alg": "PS256",
            "typ": "JWT",
            "x5t#S256": b64url(&DigestAlg::Sha256.digest(&self.cert_der)),
            "x5t": b64url(&DigestAlg::Sha1.digest(&self.cert_der)),
        });
        let claims = serde_json::json!({
            "aud": audience,
            "iss": client_id,
            "sub": client_id,
            "jti": random_guid(),
            "nbf": now,
            "iat": now,
            "exp": now + LIFETIME_SECS,
        });
        let signing_input =
            format!("{}.{}", b64url(header.to_string().as_bytes()), b64url(claims.to_string().as_bytes()));
        let signature = self.key.sign(signing_input.as_bytes())?;
        Ok(format!("{signing_input}.{}", b64url(&signature)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    /// Verifies a PS256 signature with the library of the build.
    #[cfg(feature = "aws-lc")]
    fn ps256_verifies(spki_der: &[u8], message: &[u8], signature: &[u8]) -> bool {
        use aws_lc_rs::signature::{RSA_PSS_2048_8192_SHA256, UnparsedPublicKey};
        let spki = scep_engine::x509::SubjectPublicKeyInfoRef::parse(spki_der).unwrap();
        UnparsedPublicKey::new(&RSA_PSS_2048_8192_SHA256, spki.key).verify(message, signature).is_ok()
    }

    #[cfg(not(feature = "aws-lc"))]
    fn ps256_verifies(spki_der: &[u8], message: &[u8], signature: &[u8]) -> bool {
        use rsa::pkcs8::DecodePublicKey as _;
        use rsa::signature::Verifier as _;
        let key =
            rsa::pss::VerifyingKey::<sha2::Sha256>::new(rsa::RsaPublicKey::from_public_key_der(spki_der).unwrap());
        let Ok(signature) = rsa::pss::Signature::try_from(signature) else { return false };
        key.verify(message, &signature).is_ok()
    }

    #[test]
    fn assertion_is_a_ps256_jwt_with_the_rfc7523_claims_and_verifies() {
        let (key, pkcs8) = scep_engine::crypto::RsaPrivateKey::generate(2048).unwrap();
        let a = ClientAssertion::new(b"cert".to_vec(), &pkcs8).unwrap();
        let jwt = a.sign("app-1", "https://login.example/t/oauth2/v2.0/token").unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let dec = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s).unwrap();
        let header: serde_json::Value = serde_json::from_slice(&dec(parts[0])).unwrap();
        let claims: serde_json::Value = serde_json::from_slice(&dec(parts[1])).unwrap();
        assert_eq!(header["alg"], "PS256");
        assert_eq!(header["x5t#S256"], b64url(&DigestAlg::Sha256.digest(b"cert")));
        assert_eq!((claims["iss"].as_str(), claims["sub"].as_str()), (Some("app-1"), Some("app-1")));
        assert_eq!(claims["aud"], "https://login.example/t/oauth2/v2.0/token");
        assert!(claims["exp"].as_u64().unwrap() > claims["nbf"].as_u64().unwrap());
        let signed = format!("{}.{}", parts[0], parts[1]);
        assert!(ps256_verifies(key.spki_der(), signed.as_bytes(), &dec(parts[2])));
        let forged = format!("{}.{}", parts[0], b64url(br#"{"iss":"app-2"}"#));
        assert!(!ps256_verifies(key.spki_der(), forged.as_bytes(), &dec(parts[2])));
        assert!(ClientAssertion::new(vec![], &[1, 2]).is_err());
    }
}
