//! A test Intune Connector for load runs: mints the signed JWS challenges
//! scepd validates (see `engine/src/intune`, spec §"challenge format"), with an
//! RSA key whose self-signed certificate the server trusts as the Connector's
//! trust anchor. RS256 (RFC 7518 §3.3) over `b64url(header).b64url(claims)`.
//!
//! This is a small local minter; the fuller test Connector lives in the test
//! crate on another branch (`tests/src/intune_connector.rs`).

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use scep_engine::crypto::DigestAlg;
use scep_tests::client::{DeviceKey, SubjectName, self_signed_certificate};

use super::LoadError;

/// File names in the connector directory.
pub const KEY_FILE: &str = "connector.key";
/// The trust anchor certificate (PEM) to configure in scepd's Intune profile.
pub const ANCHOR_FILE: &str = "connector-anchor.pem";

/// A Connector identity that mints challenges.
#[derive(Debug)]
pub struct Connector {
    key: DeviceKey,
    /// `iss` claim (the Connector installation id).
    pub issuer: String,
    /// `aud` claim, if the server checks one.
    pub audience: Option<String>,
    /// Challenge lifetime (`exp - iat`), seconds.
    pub validity_secs: i64,
}

impl Connector {
    /// Loads `dir/connector.key`, or creates it together with
    /// `dir/connector-anchor.pem` (a 10-year self-signed certificate).
    ///
    /// # Errors
    /// File errors or an unusable key.
    pub fn load_or_create(dir: &Path, audience: Option<String>) -> Result<Self, LoadError> {
        std::fs::create_dir_all(dir).map_err(|e| LoadError::io(dir, e))?;
        let key_path = dir.join(KEY_FILE);
        let key = if key_path.exists() {
            let pem = std::fs::read_to_string(&key_path).map_err(|e| LoadError::io(&key_path, e))?;
            DeviceKey::from_pem(&pem)?
        } else {
            let key = DeviceKey::generate()?;
            let cert = self_signed_certificate(&key, &SubjectName::cn("scep-load test connector"), 3650)?;
            write_private(&key_path, key.to_pem().as_bytes())?;
            let anchor = dir.join(ANCHOR_FILE);
            std::fs::write(&anchor, scep_engine::pem::encode("CERTIFICATE", &cert))
                .map_err(|e| LoadError::io(&anchor, e))?;
            key
        };
        Ok(Self { key, issuer: "scep-load-connector".into(), audience, validity_secs: 3600 })
    }

    /// A challenge for `device_name` (also its only SAN DNS name), issued at
    /// `now` (Unix seconds), with a fresh random nonce (the replay key).
    ///
    /// # Errors
    /// When signing fails.
    pub fn mint(&self, device_name: &str, device_id: &str, now: i64) -> Result<String, LoadError> {
        let mut nonce = [0u8; 16];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| LoadError::Setup("no randomness".into()))?;
        let mut claims = serde_json::json!({
            "iss": self.issuer,
            "sub": device_id,
            "iat": now,
            "exp": now + self.validity_secs,
            "nonce": scep_tests::client::hex(&nonce),
            "device_name": device_name,
            "san_dns": [device_name],
        });
        if let (Some(aud), Some(map)) = (&self.audience, claims.as_object_mut()) {
            map.insert("aud".into(), serde_json::Value::String(aud.clone()));
        }
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
        let input = format!("{header}.{payload}");
        let sig = self.key.sign(DigestAlg::Sha256, input.as_bytes())?;
        Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig)))
    }
}

/// Writes a file readable by its owner only.
pub(crate) fn write_private(path: &Path, data: &[u8]) -> Result<(), LoadError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| LoadError::io(path, e))?;
    f.write_all(data).map_err(|e| LoadError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mints_a_verifiable_rs256_challenge_with_fresh_nonces() {
        let dir = tempfile::tempdir().unwrap();
        let c = Connector::load_or_create(dir.path(), Some("https://scep.example/scep".into())).unwrap();
        let a = c.mint("dev-1.load.example", "guid-1", 1_800_000_000).unwrap();
        let b = c.mint("dev-1.load.example", "guid-1", 1_800_000_000).unwrap();
        assert_ne!(a, b, "nonces must differ");
        let parts: Vec<&str> = a.split('.').collect();
        assert_eq!(parts.len(), 3);
        let claims: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(claims["exp"], 1_800_003_600);
        assert_eq!(claims["san_dns"][0], "dev-1.load.example");
        assert_eq!(claims["aud"], "https://scep.example/scep");
        // The signature verifies with the anchor's key.
        let pem = std::fs::read_to_string(dir.path().join(ANCHOR_FILE)).unwrap();
        let certs = scep_engine::pem::certificates(&pem).unwrap();
        let cert = scep_engine::x509::CertificateRef::parse(&certs[0]).unwrap();
        let sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        let input = format!("{}.{}", parts[0], parts[1]);
        aws_lc_rs::signature::UnparsedPublicKey::new(&aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256, cert.spki.key)
            .verify(input.as_bytes(), &sig)
            .unwrap();
        // Reloading keeps the key (the anchor stays valid).
        let again = Connector::load_or_create(dir.path(), None).unwrap();
        assert_eq!(again.key.spki_der(), c.key.spki_der());
    }
}
