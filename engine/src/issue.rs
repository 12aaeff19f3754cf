//! What the engine asks of an issuer, and what it expects back.
//!
//! The engine never issues certificates itself: once a request is authenticated
//! and authorised it returns [`crate::Action::Issue`] holding a
//! [`crate::PendingIssue`], whose [`crate::PendingIssue::request`] is one of the
//! [`IssueRequest`]s below. The transport hands it to an issuer (local CA,
//! Vault, ...) and feeds the [`IssueOutcome`] back through
//! [`crate::PendingIssue::resume`]. Everything here is owned, so it can cross
//! an `.await`.

use crate::codes::FailInfo;
use crate::time::UnixTime;
use crate::x509::SubjectAltName;

/// One request for the issuer (RFC 8894 §3.3 message types that need the CA).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum IssueRequest {
    /// A new certificate for a PKCSReq (RFC 8894 §3.3.1).
    Enroll(EnrollRequest),
    /// A renewal (RenewalReq, or a PKCSReq signed by an existing certificate).
    Renew(RenewRequest),
    /// CertPoll / GetCertInitial: is the pending request for this transaction done?
    Poll(PollRequest),
    /// GetCert: a certificate by issuer and serial (RFC 8894 §3.3.3).
    GetCert(CertLookup),
    /// GetCRL: the CRL of the CA that issued the identified certificate.
    GetCrl(CertLookup),
}

/// An authorised certificate signing request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnrollRequest {
    /// SCEP profile name (URL path segment).
    pub profile: String,
    /// SCEP transactionID (RFC 8894 §3.2.1.1), unique per enrolment.
    pub transaction_id: String,
    /// The whole PKCS#10 DER, signature already verified by the engine.
    pub csr_der: Vec<u8>,
    /// The requested subject Name DER (full TLV).
    pub subject_der: Vec<u8>,
    /// The requested SubjectPublicKeyInfo DER.
    pub spki_der: Vec<u8>,
    /// Subject alternative names from the CSR's extensionRequest.
    pub subject_alt_names: Vec<SubjectAltName>,
    /// Extended key usages requested by the CSR (OID contents), already
    /// checked against the profile.
    pub requested_ekus: Vec<Vec<u8>>,
    /// How the certificate must look (from the profile's certificate policy).
    pub policy: IssuancePolicy,
    /// What authenticated the request, for the issuer's records and audit.
    pub authorization: Authorization,
    /// The value (DER) of the SID extension the CSR requested
    /// (`1.3.6.1.4.1.311.25.2`, KB5014754 strong certificate mapping), to be
    /// copied into the certificate as a non-critical extension. The engine sets
    /// it only when the profile's [`IssuancePolicy::trust_requested_sid`] is on
    /// and the value is well-formed; otherwise it is `None` and issuers must not
    /// add the extension. An issuer that cannot add it must refuse the request
    /// rather than drop it.
    pub sid_extension: Option<Vec<u8>>,
}

/// How an issued certificate must look: validity and usages from the profile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuancePolicy {
    /// Validity in seconds (already the smaller of the request's and the
    /// profile's maximum).
    pub validity_secs: i64,
    /// Seconds to backdate notBefore, for device clock skew.
    pub backdate_secs: i64,
    /// Extended key usages to put in the certificate (OID contents). Empty means
    /// no EKU extension.
    pub ekus: Vec<Vec<u8>>,
    /// keyUsage bits: digitalSignature.
    pub digital_signature: bool,
    /// keyUsage bits: keyEncipherment (RSA keys only).
    pub key_encipherment: bool,
    /// Whether a SID extension (`1.3.6.1.4.1.311.25.2`, Microsoft's
    /// `szOID_NTDS_CA_SECURITY_EXT`) requested in the CSR is copied into the
    /// certificate. Off by default: the SID names an Active Directory account
    /// and domain controllers map a certificate carrying it to that account
    /// (KB5014754), so a device that may put any SID in its CSR could log on
    /// as anyone. Turn it on only for a profile whose requests are vetted (e.g.
    /// an Intune profile whose Connector challenge binds the request). The
    /// SAN URI form `tag:microsoft.com,2022-09-14:sid:<SID>` is a
    /// subjectAltName and follows the profile's SAN policy instead.
    pub trust_requested_sid: bool,
}

impl Default for IssuancePolicy {
    fn default() -> Self {
        Self {
            validity_secs: 365 * 86_400,
            backdate_secs: 300,
            ekus: vec![crate::oid::KP_CLIENT_AUTH.to_vec()],
            digital_signature: true,
            key_encipherment: true,
            trust_requested_sid: false,
        }
    }
}

/// What authenticated an enrolment.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Authorization {
    /// The profile's static challenge password matched.
    StaticChallenge,
    /// A validated Intune Connector challenge (device GUID = claim `sub`).
    Intune {
        /// Claim `sub` (device GUID).
        subject: String,
        /// Claim `iss` (Connector installation).
        issuer: String,
        /// Claim `nonce`.
        nonce: String,
        /// The nonce's replay scope (the signing anchor's,
        /// [`crate::intune::ValidatedChallenge::replay_scope`]). The engine's
        /// in-memory replay cache has accepted (scope, nonce); a service with a
        /// durable or shared store must also claim it there before issuing.
        replay_scope: String,
        /// Until when the nonce must be refused
        /// ([`crate::intune::ValidatedChallenge::replay_until`]).
        replay_until: UnixTime,
    },
    /// A one-time challenge was presented on a profile in one-time mode. The
    /// engine has checked everything else; the transport must consume the
    /// challenge (and check its binding) before asking the issuer, and refuse
    /// with [`crate::PendingIssue::refuse`] when that fails.
    OneTimeChallenge {
        /// The presented challenge (redacted in `Debug`).
        challenge: ChallengeSecret,
        /// The CSR subject's commonName values, for a challenge bound to one
        /// (the SANs are in [`EnrollRequest::subject_alt_names`]).
        common_names: Vec<String>,
    },
    /// A challenge was presented on a profile in Intune API mode
    /// ([`crate::config::ChallengePolicy::IntuneApi`]). The engine has checked
    /// everything else; the transport must have Intune validate the request
    /// (the challenge travels inside [`EnrollRequest::csr_der`], the decrypted
    /// PKCS#10) before asking the issuer, and refuse with
    /// [`crate::PendingIssue::refuse`] when Intune does not answer `Success`.
    IntuneApiChallenge {
        /// The presented challenge (redacted in `Debug`), for the local
        /// single-use check.
        challenge: ChallengeSecret,
    },
    /// Signed by a certificate this CA issued (renewal without challenge).
    ExistingCertificate {
        /// Serial of the authenticating certificate (magnitude bytes).
        serial: Vec<u8>,
        /// On an Intune profile, the subject (rendered) the renewal was
        /// counted under in the engine's in-memory per-device rate limiter
        /// ([`crate::intune::IntuneValidator::admit_certificate_renewal`]); a
        /// service with a durable or shared store counts it there too.
        intune_rate_subject: Option<String>,
    },
    /// The profile requires no challenge (explicitly configured open enrolment).
    None,
}

/// A challenge password as presented by a client: a secret, so its `Debug`
/// output is redacted and it is never logged.
#[derive(Clone, PartialEq, Eq)]
pub struct ChallengeSecret(String);

impl ChallengeSecret {
    /// Wraps a presented challenge.
    pub fn new(challenge: impl Into<String>) -> Self {
        Self(challenge.into())
    }

    /// The secret itself, for the store that checks it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for ChallengeSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChallengeSecret(<redacted>)")
    }
}

/// A renewal: a new certificate for the same subject, linked to the old one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenewRequest {
    /// The new certificate's request.
    pub enroll: EnrollRequest,
    /// Serial (magnitude bytes) of the certificate being renewed; the issuer
    /// must refuse (badCertId) if it is unknown or revoked.
    pub old_serial: Vec<u8>,
    /// Issuer Name DER of the certificate being renewed.
    pub old_issuer: Vec<u8>,
}

/// CertPoll (RFC 8894 §3.3.2): IssuerAndSubject of the original request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PollRequest {
    /// SCEP profile name.
    pub profile: String,
    /// The original request's transactionID.
    pub transaction_id: String,
    /// Issuer Name DER from the IssuerAndSubject.
    pub issuer_der: Vec<u8>,
    /// Subject Name DER from the IssuerAndSubject.
    pub subject_der: Vec<u8>,
}

/// IssuerAndSerialNumber (RFC 5652 §10.2.4) for GetCert / GetCRL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertLookup {
    /// SCEP profile name.
    pub profile: String,
    /// Issuer Name DER.
    pub issuer_der: Vec<u8>,
    /// Serial number magnitude (big-endian, no leading zeros).
    pub serial: Vec<u8>,
}

/// The issuer's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum IssueOutcome {
    /// A certificate (the issued one for Enroll/Renew/Poll, the found one for GetCert).
    Issued {
        /// The certificate DER.
        certificate: Vec<u8>,
        /// Intermediate/issuing CA certificates to include (may be empty).
        chain: Vec<Vec<u8>>,
    },
    /// A CRL DER (for GetCRL).
    Crl(Vec<u8>),
    /// Awaiting manual approval (RFC 8894 §3.3.2 PENDING).
    Pending,
    /// Refused: becomes a CertRep FAILURE with this failInfo.
    Rejected {
        /// The failInfo for the CertRep.
        fail_info: FailInfo,
        /// Why, for the audit log (never sent to the client).
        reason: String,
    },
    /// Refused for a reason with its own stable label (metrics, audit), e.g.
    /// a renewal the issuer's records forbid: becomes a CertRep FAILURE.
    RejectedAs {
        /// The failInfo for the CertRep.
        fail_info: FailInfo,
        /// The outcome label ([`crate::Outcome::label`]), e.g. `renewal_superseded`.
        label: &'static str,
        /// Why, for the audit log (never sent to the client).
        reason: String,
    },
    /// The issuer cannot answer now, for a reason that is not the request's
    /// (its certificate index or database cannot be reached): nothing was
    /// issued or recorded. Answered HTTP 503 (label `store_unavailable`),
    /// not a CertRep, so the client retries later.
    Unavailable {
        /// Why, for the audit log (never sent to the client).
        reason: String,
    },
}
