//! The engine: requests in, [`Action`]s out.

use std::sync::Arc;

use crate::codes::{FailInfo, MessageType, PkiStatus};
use crate::config::{ConfigError, ProfileConfig};
use crate::issue::{IssueOutcome, IssueRequest};
use crate::time::UnixTime;

/// HTTP method of a SCEP request (RFC 8894 §4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// GET
    Get,
    /// POST
    Post,
    /// Anything else (answered 405).
    Other,
}

/// The `message` of a SCEP request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Message<'a> {
    /// No `message` parameter and no body.
    None,
    /// The raw (still percent-encoded) value of the `message` query parameter.
    Query(&'a str),
    /// A POST body.
    Body(&'a [u8]),
}

/// One SCEP HTTP request, as the transport received it.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// HTTP method.
    pub method: Method,
    /// The `operation` query parameter, percent-decoded.
    pub operation: &'a str,
    /// The message.
    pub message: Message<'a>,
}

/// The SCEP operations (RFC 8894 §4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operation {
    /// GetCACaps (§3.5.1)
    GetCaCaps,
    /// GetCACert (§4.2)
    GetCaCert,
    /// GetNextCACert (§4.7) — answered with a clear refusal: no rollover CA.
    GetNextCaCert,
    /// PKIOperation (§4.3)
    PkiOperation,
    /// An operation name the RFC does not define.
    Unknown,
}

impl Operation {
    /// Parses the `operation` parameter (case-sensitive per RFC 8894 §4.1, but
    /// tolerant of case as deployed clients vary).
    pub fn parse(s: &str) -> Self {
        match s {
            _ if s.eq_ignore_ascii_case("GetCACaps") => Self::GetCaCaps,
            _ if s.eq_ignore_ascii_case("GetCACert") => Self::GetCaCert,
            _ if s.eq_ignore_ascii_case("GetNextCACert") => Self::GetNextCaCert,
            _ if s.eq_ignore_ascii_case("PKIOperation") => Self::PkiOperation,
            _ => Self::Unknown,
        }
    }

    /// The RFC name.
    pub const fn name(self) -> &'static str {
        match self {
            Self::GetCaCaps => "GetCACaps",
            Self::GetCaCert => "GetCACert",
            Self::GetNextCaCert => "GetNextCACert",
            Self::PkiOperation => "PKIOperation",
            Self::Unknown => "unknown",
        }
    }
}

/// The typed result of one request, for audit, logs and metrics. Transports
/// never parse response bodies; they read this.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The profile that answered.
    pub profile: String,
    /// The operation requested.
    pub operation: Option<Operation>,
    /// The PKIMessage type, once known.
    pub message_type: Option<MessageType>,
    /// The transactionID, once known.
    pub transaction_id: Option<String>,
    /// The CertRep pkiStatus, when a CertRep was sent.
    pub pki_status: Option<PkiStatus>,
    /// The CertRep failInfo, on FAILURE.
    pub fail_info: Option<FailInfo>,
    /// A short stable label for metrics (`success`, `bad_signature`, `replay`, ...).
    pub label: &'static str,
    /// Human detail for the audit log (never sent to the client).
    pub detail: Option<String>,
    /// The requested or issued subject as an RFC 4514 string
    /// ([`crate::x509::name_to_string`]: escaped, one value cannot pose as more RDNs).
    pub subject: Option<String>,
    /// Requested or issued SANs, displayed.
    pub subject_alt_names: Vec<String>,
    /// The issued (or returned) certificate's serial, lower-case hex.
    pub serial: Option<String>,
    /// For renewals: the serial of the certificate renewed, lower-case hex.
    pub renewal_of: Option<String>,
    /// Intune claim fields, for Intune-authenticated requests.
    pub intune: Option<IntuneIdentity>,
    /// A renewal by certificate on an Intune-enabled profile (no challenge,
    /// so no claims): audited as an Intune action all the same.
    pub intune_renewal: bool,
    /// The id of the issuer that answered, when one was asked (set by the
    /// transport's driving loop, which is the one that knows it).
    pub issuer: Option<String>,
}

impl Outcome {
    /// The audit action name: `scep_<operation or message type>`, with
    /// `_intune` appended when an Intune challenge was involved (as the
    /// spec's audit trail names them: `scep_pkcsreq_intune`,
    /// `scep_renewalreq_intune`).
    pub fn action(&self) -> &'static str {
        // Intune rejections before the claims are readable (e.g. `malformed`,
        // `signature_invalid`) carry no identity, but their label says Intune.
        let intune = self.intune.is_some()
            || self.intune_renewal
            || crate::intune::Label::ALL.iter().any(|l| l.as_str() == self.label);
        match (self.operation, self.message_type, intune) {
            (Some(Operation::PkiOperation), Some(t), _) => match (t, intune) {
                (MessageType::PKCS_REQ, false) => "scep_pkcsreq",
                (MessageType::PKCS_REQ, true) => "scep_pkcsreq_intune",
                (MessageType::RENEWAL_REQ, false) => "scep_renewalreq",
                (MessageType::RENEWAL_REQ, true) => "scep_renewalreq_intune",
                (MessageType::CERT_POLL, false) => "scep_certpoll",
                (MessageType::CERT_POLL, true) => "scep_certpoll_intune",
                (MessageType::GET_CERT, false) => "scep_getcert",
                (MessageType::GET_CERT, true) => "scep_getcert_intune",
                (MessageType::GET_CRL, false) => "scep_getcrl",
                (MessageType::GET_CRL, true) => "scep_getcrl_intune",
                (_, false) => "scep_pkioperation",
                (_, true) => "scep_pkioperation_intune",
            },
            (Some(Operation::PkiOperation), None, false) => "scep_pkioperation",
            (Some(Operation::PkiOperation), None, true) => "scep_pkioperation_intune",
            (Some(Operation::GetCaCaps), _, false) => "scep_getcacaps",
            (Some(Operation::GetCaCaps), _, true) => "scep_getcacaps_intune",
            (Some(Operation::GetCaCert), _, false) => "scep_getcacert",
            (Some(Operation::GetCaCert), _, true) => "scep_getcacert_intune",
            (Some(Operation::GetNextCaCert), _, false) => "scep_getnextcacert",
            (Some(Operation::GetNextCaCert), _, true) => "scep_getnextcacert_intune",
            (Some(Operation::Unknown) | None, _, false) => "scep_unknown",
            (Some(Operation::Unknown) | None, _, true) => "scep_unknown_intune",
        }
    }
}

/// Device identity from a validated (or rejected) Intune challenge.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IntuneIdentity {
    /// Claim `sub` (device GUID).
    pub subject: String,
    /// Claim `iss`.
    pub issuer: String,
    /// Claim `nonce`.
    pub nonce: String,
}

/// An answer to write back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// `Content-Type` header value.
    pub content_type: &'static str,
    /// The body.
    pub body: Vec<u8>,
    /// What happened.
    pub outcome: Outcome,
}

/// What the transport must do next.
#[allow(clippy::large_enum_variant)] // returned once per request and moved once; boxing would cost an allocation
#[must_use = "every Action must be answered: write a Respond, resume an Issue"]
#[derive(Debug)]
#[non_exhaustive]
pub enum Action {
    /// Write this response.
    Respond(Response),
    /// Ask the issuer, then call [`PendingIssue::resume`].
    Issue(PendingIssue),
}

/// A request waiting for the issuer. Owned and `Send`, so it can be held across
/// an `.await`; [`PendingIssue::resume`] consumes it, so each request gets
/// exactly one answer.
#[derive(Debug)]
pub struct PendingIssue {
    pub(crate) engine: Engine,
    pub(crate) request: IssueRequest,
    pub(crate) reply: crate::handle::ReplyContext,
    pub(crate) outcome: Outcome,
}

impl PendingIssue {
    /// What to ask the issuer.
    pub fn request(&self) -> &IssueRequest {
        &self.request
    }

    /// The outcome so far (profile, transaction id, subject), e.g. for logging
    /// while the issuer works.
    pub fn outcome(&self) -> &Outcome {
        &self.outcome
    }

    /// The one-time challenge this request presented, when the transport must
    /// consume it before asking the issuer
    /// ([`crate::issue::Authorization::OneTimeChallenge`]).
    pub fn one_time_challenge(&self) -> Option<&crate::issue::EnrollRequest> {
        match &self.request {
            IssueRequest::Enroll(e) | IssueRequest::Renew(crate::issue::RenewRequest { enroll: e, .. })
                if matches!(e.authorization, crate::issue::Authorization::OneTimeChallenge { .. }) =>
            {
                Some(e)
            }
            _ => None,
        }
    }

    /// The enrolment the engine's Intune checks admitted: one an Intune
    /// Connector challenge authorised ([`crate::issue::Authorization::Intune`]),
    /// or a renewal by certificate counted against an Intune profile's
    /// per-device limit ([`crate::issue::Authorization::ExistingCertificate`]
    /// with `intune_rate_subject`). A service with a durable or shared store
    /// claims the nonce and counts the device there before asking the issuer.
    pub fn intune_challenge(&self) -> Option<&crate::issue::EnrollRequest> {
        use crate::issue::Authorization;
        match &self.request {
            IssueRequest::Enroll(e) | IssueRequest::Renew(crate::issue::RenewRequest { enroll: e, .. })
                if matches!(
                    e.authorization,
                    Authorization::Intune { .. }
                        | Authorization::ExistingCertificate { intune_rate_subject: Some(_), .. }
                ) =>
            {
                Some(e)
            }
            _ => None,
        }
    }

    /// The enrolment a profile in Intune API mode must have validated by
    /// Intune before asking the issuer
    /// ([`crate::issue::Authorization::IntuneApiChallenge`]).
    pub fn intune_api_challenge(&self) -> Option<&crate::issue::EnrollRequest> {
        match &self.request {
            IssueRequest::Enroll(e) | IssueRequest::Renew(crate::issue::RenewRequest { enroll: e, .. })
                if matches!(e.authorization, crate::issue::Authorization::IntuneApiChallenge { .. }) =>
            {
                Some(e)
            }
            _ => None,
        }
    }

    /// This request with `detail` for the audit log (e.g. which one-time
    /// challenge it consumed); an issuer refusal replaces it.
    #[must_use]
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.outcome.detail = Some(detail.into());
        self
    }

    /// Refuses the request without asking the issuer: a CertRep FAILURE with
    /// `fail_info` (RFC 8894 §3.3.2.2), signed by the RA, with `label` and
    /// `detail` in the outcome (e.g. a one-time challenge that was already
    /// used: badRequest, `challenge_used`).
    pub fn refuse(
        self,
        fail_info: FailInfo,
        label: &'static str,
        detail: impl Into<String>,
        now: UnixTime,
    ) -> Response {
        self.resume(IssueOutcome::RejectedAs { fail_info, label, reason: detail.into() }, now)
    }

    /// Builds the CertRep for the issuer's answer.
    pub fn resume(self, outcome: IssueOutcome, now: UnixTime) -> Response {
        self.engine.resume(self.reply, self.request, self.outcome, outcome, now)
    }
}

/// The SCEP engine for one profile: an immutable configuration snapshot plus
/// handles to shared state. Cheap to clone; reload by building a new one.
#[derive(Clone, Debug)]
pub struct Engine {
    pub(crate) config: Arc<ProfileConfig>,
    pub(crate) derived: Arc<crate::handle::Derived>,
    pub(crate) reply_signature: crate::config::ReplySignaturePolicy,
}

impl Engine {
    /// Validates `config` and builds an engine.
    ///
    /// # Errors
    /// [`ConfigError`] naming the problem (e.g. RA certificate and key do not
    /// match, empty CA chain, invalid profile name).
    pub fn new(config: ProfileConfig) -> Result<Self, ConfigError> {
        Self::with_encryption_ras(config, Vec::new())
    }

    /// Validates `config` and builds an engine for the NDES RA arrangement (see
    /// [`RaIdentity`](crate::config::RaIdentity)): `config.ra` is the signing
    /// RA (keyUsage digitalSignature), `encryption_ras` the encryption RA
    /// certificates (keyUsage keyEncipherment, normally one). With an empty
    /// `encryption_ras` this is [`Engine::new`].
    ///
    /// GetCACert (RFC 8894 §4.2.1.2) then publishes, in this order:
    /// **signing RA, encryption RA(s), issuing CA, ..., root** (the signing RA
    /// is left out when it is the CA itself, which is then published with the
    /// chain). The order lets every client we know enrol without options:
    ///
    /// - sscep writes the certificates to `ca.crt-0`, `-1`, ... and, given
    ///   `-c ca.crt-0`, encrypts to that one: the signing RA, which the engine
    ///   decrypts with its own key; the reply is signed by the same
    ///   certificate. Given `-c ca.crt` (its "guess" mode) it picks the
    ///   digitalSignature and keyEncipherment certificates itself.
    /// - PyScep and scepreq encrypt to the first non-CA certificate with
    ///   keyEncipherment and without digitalSignature (else the CA, which is
    ///   why the single arrangement fails for them when the CA is not the RA)
    ///   and verify the reply with the first non-CA one with
    ///   digitalSignature: the encryption and the signing RA.
    /// - jscep's `DefaultCertStoreInspector` selects by key usage the same way.
    /// - certmonger takes the end-entity certificate, preferring one with
    ///   keyEncipherment (`CM_PKCS7_LEAF_PREFER_ENCRYPT`): the encryption RA.
    /// - micromdm's scepclient encrypts to every certificate it got (one
    ///   RecipientInfo each); the engine uses the first RecipientInfo that
    ///   names an RA certificate and ignores the one naming the CA.
    /// - strongSwan's `pki --scepca` writes the RA certificates, in this order,
    ///   to `<caout>-ra.der` and `<caout>-ra-2.der`; `pki --scep` is given them
    ///   as `--cacert-sig` and `--cacert-enc` (5.9.x verifies a reply only
    ///   when it is signed as `rsaEncryption`, although its own requests are
    ///   signed as `sha256WithRSAEncryption`: see [`ReplySignaturePolicy`](crate::config::ReplySignaturePolicy)).
    ///
    /// Every encryption RA certificate's key must be RSA (it receives CMS key
    /// transport, RFC 8894 §3.2.2); none may repeat another published
    /// certificate. The signing RA's key may be ECDSA P-256 or P-384: its
    /// CertReps are then signed `ecdsa-with-SHA256/384/512` after the reply
    /// digest (RFC 5758 §3.2, RFC 5753 §2.1.1; the reply signature policy does
    /// not apply), requests encrypted to it find no recipient
    /// (`unknown_recipient`), and at least one RSA encryption RA is required.
    ///
    /// # Errors
    /// [`ConfigError`] naming the problem: an encryption RA certificate that
    /// does not parse, does not match its key or whose key is not RSA, one
    /// equal to the signing RA or a CA certificate, an ECDSA signing RA
    /// without an encryption RA, or `ca-only` GetCACert (which cannot publish
    /// them).
    pub fn with_encryption_ras(
        config: ProfileConfig,
        encryption_ras: Vec<crate::config::RaIdentity>,
    ) -> Result<Self, ConfigError> {
        let derived = crate::handle::validate(&config, encryption_ras)?;
        Ok(Self {
            config: Arc::new(config),
            derived: Arc::new(derived),
            reply_signature: crate::config::ReplySignaturePolicy::default(),
        })
    }

    /// This engine with CertReps naming their signature algorithm as `policy`
    /// says (default: [`ReplySignaturePolicy::RsaEncryption`](crate::config::ReplySignaturePolicy::RsaEncryption),
    /// the form every client accepts).
    #[must_use]
    pub fn with_reply_signature(mut self, policy: crate::config::ReplySignaturePolicy) -> Self {
        self.reply_signature = policy;
        self
    }

    /// How this engine names CertRep signature algorithms.
    pub fn reply_signature(&self) -> crate::config::ReplySignaturePolicy {
        self.reply_signature
    }

    /// The encryption RA certificates published beside the signing RA
    /// (empty in the single-RA arrangement), in GetCACert order.
    pub fn encryption_ras(&self) -> &[crate::config::RaIdentity] {
        &self.derived.encryption_ras
    }

    /// The configuration snapshot.
    pub fn config(&self) -> &ProfileConfig {
        &self.config
    }

    /// Handles one SCEP request at time `now`.
    pub fn handle(&self, request: Request<'_>, now: UnixTime) -> Action {
        crate::handle::handle(self, request, now)
    }
}
