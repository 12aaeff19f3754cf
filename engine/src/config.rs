//! The per-profile configuration snapshot an [`crate::Engine`] is built from.
//!
//! Everything here is validated when the engine is built; the request path
//! never re-checks configuration.

use std::sync::Arc;

use crate::crypto::{ContentCipher, DigestAlg, RaKey, RandomSource};
use crate::issue::IssuancePolicy;

/// The shape of the GetCACert answer (RFC 8894 §4.2.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum CaCertShape {
    /// The RA certificate and the CA chain as a degenerate certs-only PKCS#7
    /// (`application/x-x509-ca-ra-cert`); a lone CA certificate
    /// (`application/x-x509-ca-cert`) when the RA is the CA itself.
    #[default]
    RaAndChain,
    /// Only the issuing CA certificate, DER (`application/x-x509-ca-cert`),
    /// for clients that cannot handle a chain. The RA must then be the CA.
    CaOnly,
}

/// How CertReps name their signature algorithm (RFC 5652 §5.3
/// `signatureAlgorithm`); see [`crate::certrep::SignatureForm`].
///
/// RFC 3370 §3.2: CMS implementations that support RSA signatures MUST accept
/// `rsaEncryption` and MAY accept the `sha*WithRSAEncryption` identifiers. So
/// `rsaEncryption` is the one form every conforming client verifies; it is
/// also what NDES writes, and the only form strongSwan's `pki --scep` 5.9
/// verifies, although strongSwan itself *sends* `sha256WithRSAEncryption`: a
/// reply that mirrored its request would be thrown away.
///
/// It applies to RSA signing RAs only: an ECDSA signing RA's CertReps are
/// always named `ecdsa-with-SHA256/384/512` after the reply digest (RFC 5758
/// §3.2), the one form ECDSA has.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReplySignaturePolicy {
    /// Always `rsaEncryption` (the default).
    #[default]
    RsaEncryption,
    /// The form the request's SignerInfo used: `rsaEncryption` for an
    /// `rsaEncryption` request (sscep, certmonger, PyScep, scepreq),
    /// `sha*WithRSAEncryption` otherwise (jscep, micromdm, strongSwan).
    MirrorRequest,
}

impl ReplySignaturePolicy {
    /// The form of the reply to a request whose SignerInfo signatureAlgorithm
    /// OID contents are `request_signature_oid`.
    pub fn form_for(self, request_signature_oid: &[u8]) -> crate::certrep::SignatureForm {
        match self {
            Self::RsaEncryption => crate::certrep::SignatureForm::RsaEncryption,
            Self::MirrorRequest => crate::certrep::SignatureForm::of_request(request_signature_oid),
        }
    }
}

/// How a profile authenticates enrolments.
#[derive(Clone, Default)]
pub enum ChallengePolicy {
    /// A static shared password (compared in constant time).
    Static(String),
    /// Single-use challenges minted by the operator (NDES's default mode). The
    /// engine cannot check them (they live in a durable store): it authorises
    /// everything else and hands the presented challenge to the transport in
    /// [`crate::issue::Authorization::OneTimeChallenge`], which consumes it
    /// before asking the issuer, or refuses with
    /// [`crate::PendingIssue::refuse`]. Renewal by an existing certificate
    /// needs no challenge.
    OneTime,
    /// Microsoft's Intune SCEP validation API (issue 15): the challenge is an
    /// opaque blob only Intune can check. The engine authorises everything
    /// else (signature, decryption, CSR and key policy) and hands the
    /// challenge, the decrypted PKCS#10 and the transactionID to the transport
    /// in [`crate::issue::Authorization::IntuneApiChallenge`]; the transport
    /// asks Intune (`validateRequest`) before the issuer and refuses with
    /// [`crate::PendingIssue::refuse`] unless Intune answers `Success`.
    /// Renewal by an existing certificate needs a fresh challenge unless the
    /// profile allows renewal by certificate on Intune profiles.
    IntuneApi,
    /// No challenge at all: anyone who can reach the URL enrols. Only for lab
    /// use; the name says so.
    #[default]
    DangerNone,
}

impl std::fmt::Debug for ChallengePolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Static(_) => f.write_str("Static(<redacted>)"),
            Self::OneTime => f.write_str("OneTime"),
            Self::IntuneApi => f.write_str("IntuneApi"),
            Self::DangerNone => f.write_str("DangerNone"),
        }
    }
}

/// Which algorithms a profile accepts and answers with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlgorithmPolicy {
    /// Content ciphers accepted in requests. Single DES is only accepted when
    /// listed here explicitly (never by default).
    pub ciphers: Vec<ContentCipher>,
    /// Digests accepted in requests (SignerInfo digestAlgorithm).
    pub digests: Vec<DigestAlg>,
}

impl Default for AlgorithmPolicy {
    fn default() -> Self {
        Self {
            ciphers: vec![
                ContentCipher::DesEde3Cbc,
                ContentCipher::Aes128Cbc,
                ContentCipher::Aes192Cbc,
                ContentCipher::Aes256Cbc,
            ],
            digests: vec![DigestAlg::Sha1, DigestAlg::Sha256, DigestAlg::Sha384, DigestAlg::Sha512],
        }
    }
}

/// Requirements on the key in a CSR (answered with failInfo badAlg).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyPolicy {
    /// Minimum RSA modulus size in bits; `None` refuses RSA keys.
    pub min_rsa_bits: Option<usize>,
    /// Whether ECDSA P-256 keys are accepted.
    pub allow_p256: bool,
    /// Whether ECDSA P-384 keys are accepted.
    pub allow_p384: bool,
}

impl Default for KeyPolicy {
    fn default() -> Self {
        Self { min_rsa_bits: Some(2048), allow_p256: true, allow_p384: true }
    }
}

/// Which subjectAltNames a CSR may request (refused with failInfo badRequest,
/// audit label `policy_violation`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SanPolicy {
    /// Allowed GeneralName kinds (`None`: every kind). An empty list forbids SANs.
    pub allowed_types: Option<Vec<SanType>>,
    /// When not empty, every dNSName must equal one of these suffixes without
    /// its leading dot, or end with it (`.example.com` allows `a.example.com`
    /// and `example.com`). Compared ASCII case-insensitively.
    pub dns_suffixes: Vec<String>,
}

/// A kind of subjectAltName (RFC 5280 §4.2.1.6 GeneralName).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SanType {
    /// dNSName
    Dns,
    /// rfc822Name
    Email,
    /// otherName Microsoft UPN
    Upn,
    /// uniformResourceIdentifier
    Uri,
    /// iPAddress
    Ip,
    /// Any other GeneralName
    Other,
}

/// Renewal rules (RenewalReq, and PKCSReq signed by an issued certificate).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenewalPolicy {
    /// Whether renewal by an existing certificate is allowed at all.
    pub enabled: bool,
    /// Whether the renewed certificate may carry different SANs.
    pub allow_san_change: bool,
    /// How long before its notAfter a certificate may be renewed, in seconds
    /// (`renewal_window_days`). `None`: at any time while it is valid. A
    /// certificate that expires later must enrol with a challenge.
    pub window_secs: Option<i64>,
    /// Whether an Intune-enabled profile accepts renewal by certificate
    /// (`intune_renewal_by_certificate`). Off by default: Intune renews with
    /// a fresh challenge. When on, each such renewal counts against the
    /// device's rate limit and is audited as an Intune action.
    pub on_intune_profile: bool,
}

impl Default for RenewalPolicy {
    fn default() -> Self {
        Self { enabled: true, allow_san_change: false, window_secs: None, on_intune_profile: false }
    }
}

/// One RA certificate and its key (RFC 8894 §2.1).
///
/// A profile publishes its RA certificates in GetCACert in one of two
/// arrangements:
///
/// - **single RA** (or the CA acting as RA): [`ProfileConfig::ra`] alone, one
///   certificate with keyUsage digitalSignature and keyEncipherment that both
///   signs CertReps and receives request envelopes. Build the engine with
///   [`crate::Engine::new`].
/// - **NDES**: a *signing* RA certificate ([`ProfileConfig::ra`], keyUsage
///   digitalSignature only) and an *encryption* RA certificate (keyUsage
///   keyEncipherment only), as Microsoft NDES publishes them. Build the engine
///   with [`crate::Engine::with_encryption_ras`].
///
/// Whatever the arrangement, a request may be encrypted to any RA certificate
/// the profile publishes: the engine decrypts with the key of the certificate
/// the RecipientInfo names (RFC 5652 §6.2.1). The CA key is never used to
/// decrypt unless the CA certificate is itself the RA. CertReps are always
/// signed by [`ProfileConfig::ra`]. The order in which the certificates are
/// published, and why, is described at [`crate::Engine::with_encryption_ras`].
///
/// The signing RA's key may be ECDSA (P-256 or P-384): its CertReps are then
/// signed `ecdsa-with-SHA*` and it cannot receive CMS key transport, so it
/// needs at least one RSA encryption RA beside it (the NDES arrangement).
/// Every certificate that receives envelopes has an RSA key.
#[derive(Debug)]
pub struct RaIdentity {
    /// RA certificate DER.
    pub certificate: Vec<u8>,
    /// RA private key: RSA, or ECDSA for a signing RA with an RSA encryption RA beside it.
    pub key: RaKey,
}

/// One SCEP profile's complete configuration.
#[derive(Debug)]
pub struct ProfileConfig {
    /// Profile name: `[a-z0-9-]+`, the URL segment of `/scep/<name>`.
    pub name: String,
    /// The signing RA: signs every CertRep and also decrypts requests
    /// encrypted to its certificate. In the NDES arrangement the encryption RA
    /// certificates are given to [`crate::Engine::with_encryption_ras`].
    pub ra: RaIdentity,
    /// The CA chain, issuing CA first, then up to the root (DER).
    pub ca_chain: Vec<Vec<u8>>,
    /// GetCACert answer shape.
    pub ca_cert_shape: CaCertShape,
    /// How enrolments are authenticated.
    pub challenge: ChallengePolicy,
    /// Accepted algorithms.
    pub algorithms: AlgorithmPolicy,
    /// CSR key requirements.
    pub keys: KeyPolicy,
    /// Renewal rules.
    pub renewal: RenewalPolicy,
    /// Issued certificate shape.
    pub issuance: IssuancePolicy,
    /// Extended key usages a CSR may request (OID contents); a CSR asking for
    /// one outside this set is refused with badRequest. Empty allows none.
    pub allowed_ekus: Vec<Vec<u8>>,
    /// subjectAltName rules for CSRs.
    pub sans: SanPolicy,
    /// Maximum accepted difference between a request's signingTime and now, in
    /// seconds (failInfo badTime). `None` ignores signingTime.
    pub signing_time_tolerance: Option<i64>,
    /// Largest PKIMessage accepted, in bytes (checked before parsing).
    pub max_message_size: usize,
    /// Randomness for nonces, IVs and content keys.
    pub rng: Arc<dyn RandomSource>,
    /// The algorithms the engine verifies, digests, seals and opens with
    /// ([`crate::crypto::default_provider`] unless a test or the operator
    /// chose another). The RA keys carry their own implementation.
    pub crypto: Arc<dyn crate::crypto::CryptoProvider>,
    /// Intune Connector challenge validation, when the profile enables it.
    /// Challenges that do not look like a Connector JWS (gate 1) still go to
    /// the static password.
    pub intune: Option<crate::intune::IntuneValidator>,
}

/// A configuration that cannot be served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}
