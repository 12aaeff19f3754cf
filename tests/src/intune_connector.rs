//! A test Intune Certificate Connector: its own signing key (ECDSA P-256 or
//! RSA 2048), a self-signed certificate to install as the server's trust
//! anchor, and challenge minting in the Connector's wire format (a compact JWS
//! `b64url(header).b64url(payload).b64url(signature)`, docs/INTUNE.md).
//!
//! ES256 signatures are raw `r‖s` (64 bytes), as the Connector emits them;
//! [`Connector::mint_with`] can emit ASN.1 DER instead. Written from the spec,
//! not from the server's validator, so it checks the server.
//!
//! ```no_run
//! use scep_tests::intune_connector::{Claims, Connector, JwsAlg};
//! let connector = Connector::generate(JwsAlg::Es256, "Microsoft Intune Certificate Connector")?;
//! std::fs::write("intune.pem", connector.certificate_pem())?;
//! let challenge = connector.mint(&Claims::new("connector-1", "device-guid", "dev1.example.com"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use scep_engine::crypto::{DigestAlg, EcPrivateKey, RandomSource, RsaPrivateKey, SigningKey};
use scep_engine::time::UnixTime;
use scep_issuers::x509_build::{Validity, common_name, random_serial, self_signed_ca};

/// The JWS algorithm a Connector signs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JwsAlg {
    /// ECDSA P-256 with SHA-256.
    Es256,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    Rs256,
}

impl JwsAlg {
    /// The JOSE `alg` name.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Es256 => "ES256",
            Self::Rs256 => "RS256",
        }
    }
}

/// Why a Connector could not be made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectorError(pub String);

impl std::fmt::Display for ConnectorError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "test connector: {}", self.0)
    }
}

impl std::error::Error for ConnectorError {}

enum Key {
    Ec(EcdsaKeyPair, EcPrivateKey),
    Rsa(RsaPrivateKey),
}

/// A Connector: signing key plus its self-signed certificate.
pub struct Connector {
    key: Key,
    certificate: Vec<u8>,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector").field("alg", &self.alg()).finish_non_exhaustive()
    }
}

/// The v1 claim set (docs/INTUNE.md); `None`/empty members are omitted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claims {
    /// `iss`: the Connector installation.
    pub iss: Option<String>,
    /// `sub`: the device GUID.
    pub sub: Option<String>,
    /// `aud`: the SCEP URL the challenge is for.
    pub aud: Option<String>,
    /// `iat`, Unix seconds.
    pub iat: Option<i64>,
    /// `exp`, Unix seconds.
    pub exp: Option<i64>,
    /// `nonce`.
    pub nonce: Option<String>,
    /// `device_name`: the CSR's CN must equal it.
    pub device_name: Option<String>,
    /// `san_dns`.
    pub san_dns: Vec<String>,
    /// `san_rfc822`.
    pub san_rfc822: Vec<String>,
    /// `san_upn`.
    pub san_upn: Vec<String>,
    /// `version` (absent means v1).
    pub version: Option<String>,
}

impl Claims {
    /// Claims for device `sub` named `device_name` (the CSR CN), issued now,
    /// valid 50 minutes, with a fresh random nonce and no SANs or audience.
    pub fn new(iss: &str, sub: &str, device_name: &str) -> Self {
        let now = UnixTime::now().secs();
        Self {
            iss: Some(iss.into()),
            sub: Some(sub.into()),
            aud: None,
            iat: Some(now),
            exp: Some(now + 3000),
            nonce: Some(random_nonce()),
            device_name: Some(device_name.into()),
            san_dns: Vec::new(),
            san_rfc822: Vec::new(),
            san_upn: Vec::new(),
            version: None,
        }
    }

    /// Sets `aud`.
    #[must_use]
    pub fn audience(mut self, aud: &str) -> Self {
        self.aud = Some(aud.into());
        self
    }

    /// Sets `san_dns`.
    #[must_use]
    pub fn dns(mut self, names: &[&str]) -> Self {
        self.san_dns = names.iter().map(|s| (*s).to_string()).collect();
        self
    }

    /// The claim set as compact JSON.
    pub fn to_json(&self) -> String {
        let mut members = Vec::new();
        let mut string = |k: &str, v: &Option<String>| {
            if let Some(v) = v {
                members.push(format!("{}:{}", json_string(k), json_string(v)));
            }
        };
        string("iss", &self.iss);
        string("sub", &self.sub);
        string("aud", &self.aud);
        string("nonce", &self.nonce);
        string("device_name", &self.device_name);
        string("version", &self.version);
        for (k, v) in [("iat", self.iat), ("exp", self.exp)] {
            if let Some(v) = v {
                members.push(format!("{}:{v}", json_string(k)));
            }
        }
        for (k, list) in [("san_dns", &self.san_dns), ("san_rfc822", &self.san_rfc822), ("san_upn", &self.san_upn)] {
            if !list.is_empty() {
                let items: Vec<String> = list.iter().map(|s| json_string(s)).collect();
                members.push(format!("{}:[{}]", json_string(k), items.join(",")));
            }
        }
        format!("{{{}}}", members.join(","))
    }
}

/// A random 128-bit nonce, hex.
pub fn random_nonce() -> String {
    let mut b = [0u8; 16];
    RandomSource::fill(&scep_engine::crypto::SystemRandom, &mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A JSON string literal (RFC 8259 §7).
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl Connector {
    /// A new Connector whose certificate is valid from a day ago for a year.
    ///
    /// # Errors
    /// Key generation or certificate signing failures.
    pub fn generate(alg: JwsAlg, cn: &str) -> Result<Self, ConnectorError> {
        let now = UnixTime::now().secs();
        Self::with_validity(alg, cn, UnixTime::from_secs(now - 86_400), UnixTime::from_secs(now + 365 * 86_400))
    }

    /// A new Connector whose certificate is valid over `[not_before, not_after]`
    /// (in the past for an expired anchor).
    ///
    /// # Errors
    /// Key generation or certificate signing failures.
    pub fn with_validity(
        alg: JwsAlg,
        cn: &str,
        not_before: UnixTime,
        not_after: UnixTime,
    ) -> Result<Self, ConnectorError> {
        let e = |x: &dyn std::fmt::Display| ConnectorError(x.to_string());
        let (key, der) = match alg {
            JwsAlg::Es256 => {
                let (ec, der) = EcPrivateKey::generate().map_err(|x| e(&x))?;
                let fixed = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der).map_err(|x| e(&x))?;
                (Key::Ec(fixed, ec), der)
            }
            JwsAlg::Rs256 => {
                let (rsa, der) = RsaPrivateKey::generate(2048).map_err(|x| e(&x))?;
                (Key::Rsa(rsa), der)
            }
        };
        let signer = SigningKey::from_der(&der).map_err(|x| e(&x))?;
        let serial = random_serial(&scep_engine::crypto::SystemRandom);
        let certificate = self_signed_ca(&signer, &common_name(cn), &serial, Validity { not_before, not_after })
            .map_err(|x| e(&x))?;
        Ok(Self { key, certificate })
    }

    /// The JWS algorithm this Connector signs with.
    pub const fn alg(&self) -> JwsAlg {
        match self.key {
            Key::Ec(..) => JwsAlg::Es256,
            Key::Rsa(_) => JwsAlg::Rs256,
        }
    }

    /// The certificate, DER.
    pub fn certificate_der(&self) -> &[u8] {
        &self.certificate
    }

    /// The certificate as a PEM block (what an operator exports from the
    /// Connector host and points `intune_connector_cert_path` at).
    pub fn certificate_pem(&self) -> String {
        scep_engine::pem::encode("CERTIFICATE", &self.certificate)
    }

    /// Signs `input` (the JWS signing input); ES256 raw `r‖s` unless `der`.
    fn sign(&self, input: &[u8], der: bool) -> Vec<u8> {
        let signature = match &self.key {
            Key::Ec(fixed, _) if !der => {
                fixed.sign(&SystemRandom::new(), input).map(|s| s.as_ref().to_vec()).map_err(|e| e.to_string())
            }
            Key::Ec(_, ec) => ec.sign(input).map_err(|e| e.to_string()),
            Key::Rsa(rsa) => rsa.sign(DigestAlg::Sha256, input).map_err(|e| e.to_string()),
        };
        // Signing with a key we generated only fails on an aws-lc internal error;
        // an empty signature then fails verification visibly at the server.
        signature.unwrap_or_default()
    }

    /// A challenge over arbitrary header and payload JSON (for malformed cases).
    pub fn mint_raw(&self, header_json: &str, payload_json: &str, der_signature: bool) -> String {
        let input = format!("{}.{}", URL_SAFE_NO_PAD.encode(header_json), URL_SAFE_NO_PAD.encode(payload_json));
        let signature = URL_SAFE_NO_PAD.encode(self.sign(input.as_bytes(), der_signature));
        format!("{input}.{signature}")
    }

    /// A challenge carrying `claims`, header `{"alg":...,"typ":"JWT"}`; ES256
    /// as DER when `der_signature`.
    pub fn mint_with(&self, claims: &Claims, der_signature: bool) -> String {
        let header = format!(r#"{{"alg":"{}","typ":"JWT"}}"#, self.alg().name());
        self.mint_raw(&header, &claims.to_json(), der_signature)
    }

    /// A challenge carrying `claims` in the Connector's format.
    pub fn mint(&self, claims: &Claims) -> String {
        self.mint_with(claims, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_json_is_compact_and_escaped() {
        let mut c = Claims::new("conn\"1", "dev", "d.example");
        c.iat = Some(10);
        c.exp = Some(20);
        c.nonce = Some("n".into());
        let c = c.dns(&["a", "b"]).audience("https://x/scep");
        assert_eq!(
            c.to_json(),
            r#"{"iss":"conn\"1","sub":"dev","aud":"https://x/scep","nonce":"n","device_name":"d.example","iat":10,"exp":20,"san_dns":["a","b"]}"#
        );
        assert_ne!(random_nonce(), random_nonce());
    }

    #[test]
    fn challenges_verify_with_the_certificate_key() {
        use scep_engine::crypto::SignatureAlg;
        use scep_engine::x509::CertificateRef;
        for alg in [JwsAlg::Es256, JwsAlg::Rs256] {
            let c = Connector::generate(alg, "conn").unwrap();
            let jws = c.mint(&Claims::new("i", "s", "d"));
            assert!(jws.len() > 200 && jws.matches('.').count() == 2, "{jws}");
            let (input, sig) = jws.rsplit_once('.').unwrap();
            let sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
            let cert = CertificateRef::parse(c.certificate_der()).unwrap();
            let key = cert.spki.public_key().unwrap();
            match alg {
                JwsAlg::Es256 => {
                    assert_eq!(sig.len(), 64, "raw r||s");
                    let der = URL_SAFE_NO_PAD
                        .decode(c.mint_with(&Claims::new("i", "s", "d"), true).rsplit_once('.').unwrap().1)
                        .unwrap();
                    assert_eq!(der[0], 0x30, "DER SEQUENCE");
                }
                JwsAlg::Rs256 => {
                    SignatureAlg::from_oid(scep_engine::oid::SHA256_WITH_RSA, None)
                        .unwrap()
                        .verify(key, input.as_bytes(), &sig)
                        .unwrap();
                }
            }
        }
    }
}
