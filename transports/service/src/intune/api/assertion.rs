//! The signed client assertion of Entra's certificate credential (RFC 7523
//! §2.2; contract §1.3): a JWT signed PS256 (RSASSA-PSS with SHA-256, RFC 7518
//! §3.5) with the key of a certificate registered on the application,
//! naming it by `x5t#S256` (and the older `x5t`, SHA-1).

use aws_lc_rs::signature::{RSA_PSS_SHA256, RsaKeyPair};
use scep_engine::crypto::DigestAlg;

use super::client::{b64url, random_guid};

/// Lifetime of one assertion (Entra accepts a short window; §1.3).
const LIFETIME_SECS: u64 = 300;

/// A certificate credential: the certificate's DER and its RSA key.
pub struct ClientAssertion {
    cert_der: Vec<u8>,
    key: RsaKeyPair,
}

impl ClientAssertion {
    /// From the certificate (DER) and the key (PKCS#8 or PKCS#1 DER).
    ///
    /// # Errors
    /// When the key is not an RSA key aws-lc accepts.
    pub fn new(cert_der: Vec<u8>, key_der: &[u8]) -> Result<Self, String> {
        let key = RsaKeyPair::from_pkcs8(key_der)
            .or_else(|_| RsaKeyPair::from_der(key_der))
            .map_err(|e| format!("not a usable RSA private key: {e}"))?;
        Ok(Self { cert_der, key })
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
        let mut signature = vec![0u8; self.key.public_modulus_len()];
        let rng = aws_lc_rs::rand::SystemRandom::new();
        self.key
            .sign(&RSA_PSS_SHA256, &rng, signing_input.as_bytes(), &mut signature)
            .map_err(|e| format!("PS256 signing failed: {e}"))?;
        Ok(format!("{signing_input}.{}", b64url(&signature)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::signature::{KeyPair as _, RSA_PSS_2048_8192_SHA256, UnparsedPublicKey};
    use base64::Engine as _;

    #[test]
    fn assertion_is_a_ps256_jwt_with_the_rfc7523_claims_and_verifies() {
        let (_key, pkcs8) = scep_engine::crypto::RsaPrivateKey::generate(2048).unwrap();
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
        let public = a.key.public_key().as_ref().to_vec();
        let signed = format!("{}.{}", parts[0], parts[1]);
        UnparsedPublicKey::new(&RSA_PSS_2048_8192_SHA256, &public).verify(signed.as_bytes(), &dec(parts[2])).unwrap();
        let forged = format!("{}.{}", parts[0], b64url(br#"{"iss":"app-2"}"#));
        assert!(
            UnparsedPublicKey::new(&RSA_PSS_2048_8192_SHA256, &public)
                .verify(forged.as_bytes(), &dec(parts[2]))
                .is_err()
        );
        assert!(ClientAssertion::new(vec![], &[1, 2]).is_err());
    }
}
