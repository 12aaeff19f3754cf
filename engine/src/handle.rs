//! Request handling: GetCACaps, GetCACert and PKIOperation (RFC 8894 §3.5, §4).
//!
//! The order of checks follows what the requester can be told:
//! 1. before transactionID and senderNonce are known, failures are plain HTTP
//!    4xx answers with a short reason;
//! 2. from then on every failure is a CertRep FAILURE signed by the RA, with
//!    the failInfo the RFC assigns (RFC 8894 §3.3.2.2).

use crate::certrep;
use crate::codes::{FailInfo, MessageType, PkiStatus};
use crate::config::{CaCertShape, ChallengePolicy, ConfigError, ProfileConfig};
use crate::crypto::{ContentCipher, DigestAlg, PublicKeyRef};
use crate::csr::CsrRef;
use crate::engine::{Action, Engine, Message, Method, Operation, Outcome, PendingIssue, Request, Response};
use crate::envelope;
use crate::intune;
use crate::issue::{Authorization, CertLookup, EnrollRequest, IssueOutcome, IssueRequest, PollRequest, RenewRequest};
use crate::message::{self, PkiMessageRef};
use crate::pkcs7;
use crate::time::UnixTime;
use crate::x509::{CertificateRef, SubjectAltName, name_to_string};

/// `Content-Type` of GetCACaps answers (RFC 8894 §3.5.1).
const TEXT_PLAIN: &str = "text/plain";
/// A single CA certificate (RFC 8894 §4.2.1.1).
const CA_CERT: &str = "application/x-x509-ca-cert";
/// RA + CA certificates as a degenerate PKCS#7 (RFC 8894 §4.2.1.2).
const CA_RA_CERT: &str = "application/x-x509-ca-ra-cert";
/// PKIOperation answers (RFC 8894 §4.3).
const PKI_MESSAGE: &str = "application/x-pki-message";

/// Everything needed to answer after the issuer returns (owned, so it can be
/// held across the issuer's `.await`).
#[derive(Debug)]
pub(crate) struct ReplyContext {
    transaction_id: String,
    /// The requester's senderNonce, echoed as recipientNonce.
    recipient_nonce: Vec<u8>,
    /// Digest to sign the CertRep with.
    digest: DigestAlg,
    /// Cipher to encrypt the reply with.
    cipher: ContentCipher,
    /// The certificate that signed the request: the reply is encrypted to it
    /// (RFC 8894 §3.3.2). COPY: the crossing into an owned PendingIssue.
    recipient_cert: Vec<u8>,
}

/// Precomputed answers that depend only on the configuration.
#[derive(Debug)]
pub(crate) struct Derived {
    caps: String,
    ca_cert_body: Vec<u8>,
    ca_cert_content_type: &'static str,
}

/// Checks a configuration and precomputes the static answers.
pub(crate) fn validate(config: &ProfileConfig) -> Result<Derived, ConfigError> {
    let err = |m: String| Err(ConfigError(format!("profile {:?}: {m}", config.name)));
    if config.name.is_empty() || !config.name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return err("the name must be non-empty and use only a-z, 0-9 and '-'".into());
    }
    let ra = match CertificateRef::parse(&config.ra.certificate) {
        Ok(c) => c,
        Err(e) => return err(format!("RA certificate does not parse: {e}")),
    };
    if ra.spki.raw != config.ra.key.spki_der() {
        return err("RA certificate and RA private key do not match".into());
    }
    let Some(issuing_ca) = config.ca_chain.first() else {
        return err("the CA chain is empty".into());
    };
    for (i, c) in config.ca_chain.iter().enumerate() {
        if let Err(e) = CertificateRef::parse(c) {
            return err(format!("CA chain certificate #{i} does not parse: {e}"));
        }
    }
    if config.algorithms.ciphers.is_empty() {
        return err("no content cipher is allowed".into());
    }
    if config.algorithms.digests.is_empty() {
        return err("no digest is allowed".into());
    }
    let ra_is_ca = &config.ra.certificate == issuing_ca;
    let (ca_cert_body, ca_cert_content_type) = match config.ca_cert_shape {
        CaCertShape::CaOnly if !ra_is_ca => {
            return err(
                "ca-only GetCACert needs the RA to be the CA itself (clients encrypt to the one certificate they get)"
                    .into(),
            );
        }
        CaCertShape::CaOnly => (issuing_ca.clone(), CA_CERT),
        CaCertShape::RaAndChain if ra_is_ca && config.ca_chain.len() == 1 => (issuing_ca.clone(), CA_CERT),
        CaCertShape::RaAndChain => {
            let mut certs: Vec<&[u8]> = Vec::with_capacity(config.ca_chain.len() + 1);
            if !ra_is_ca {
                certs.push(&config.ra.certificate);
            }
            certs.extend(config.ca_chain.iter().map(Vec::as_slice));
            (pkcs7::certs_only(&certs, &[]), CA_RA_CERT)
        }
    };
    Ok(Derived { caps: capabilities(config), ca_cert_body, ca_cert_content_type })
}

/// The GetCACaps answer (RFC 8894 §3.5.2): only what is implemented and allowed.
fn capabilities(config: &ProfileConfig) -> String {
    let ciphers = &config.algorithms.ciphers;
    let digests = &config.algorithms.digests;
    let mut caps: Vec<&str> = Vec::new();
    if ciphers
        .iter()
        .any(|c| matches!(c, ContentCipher::Aes128Cbc | ContentCipher::Aes192Cbc | ContentCipher::Aes256Cbc))
    {
        caps.push("AES");
    }
    if ciphers.contains(&ContentCipher::DesEde3Cbc) {
        caps.push("DES3");
    }
    caps.push("POSTPKIOperation");
    if config.renewal.enabled {
        caps.push("Renewal");
    }
    for d in [DigestAlg::Sha1, DigestAlg::Sha256, DigestAlg::Sha384, DigestAlg::Sha512] {
        if digests.contains(&d) {
            caps.push(d.name());
        }
    }
    // RFC 8894 §3.5.2: SCEPStandard implies AES, POSTPKIOperation and SHA-256.
    if caps.contains(&"AES") && digests.contains(&DigestAlg::Sha256) {
        caps.push("SCEPStandard");
    }
    let mut s = caps.join("\n");
    s.push('\n');
    s
}

fn plain(status: u16, reason: &str, outcome: Outcome) -> Response {
    Response { status, content_type: TEXT_PLAIN, body: format!("{reason}\n").into_bytes(), outcome }
}

pub(crate) fn handle(engine: &Engine, request: Request<'_>, now: UnixTime) -> Action {
    let op = Operation::parse(request.operation);
    let mut outcome =
        Outcome { profile: engine.config.name.clone(), operation: Some(op), label: "success", ..Outcome::default() };
    if request.method == Method::Other {
        outcome.label = "method_not_allowed";
        return Action::Respond(plain(405, "SCEP uses GET and POST only", outcome));
    }
    match op {
        Operation::GetCaCaps => Action::Respond(Response {
            status: 200,
            content_type: TEXT_PLAIN,
            body: engine.derived.caps.as_bytes().to_vec(),
            outcome,
        }),
        // RFC 8894 §4.2: the `message` (CA identifier) may be absent, empty or anything.
        Operation::GetCaCert => Action::Respond(Response {
            status: 200,
            content_type: engine.derived.ca_cert_content_type,
            body: engine.derived.ca_cert_body.clone(),
            outcome,
        }),
        Operation::GetNextCaCert => {
            outcome.label = "no_next_ca";
            Action::Respond(plain(
                404,
                "no rollover CA certificate is configured (GetNextCACert not advertised)",
                outcome,
            ))
        }
        Operation::Unknown => {
            outcome.label = "unknown_operation";
            Action::Respond(plain(400, "unknown or missing operation parameter", outcome))
        }
        Operation::PkiOperation => {
            let decoded;
            let bytes: &[u8] = match (request.method, request.message) {
                (Method::Get, Message::Query(q)) => {
                    if q.len() > engine.config.max_message_size.saturating_mul(2) {
                        outcome.label = "too_large";
                        return Action::Respond(plain(413, "PKIOperation message too large", outcome));
                    }
                    match message::decode_get_message(q) {
                        Ok(b) => {
                            decoded = b;
                            &decoded
                        }
                        Err(e) => {
                            outcome.label = "malformed_request";
                            return Action::Respond(plain(400, &format!("message is not valid base64: {e}"), outcome));
                        }
                    }
                }
                (Method::Post, Message::Body(b)) => b,
                (_, Message::None) | (Method::Post, Message::Query(_)) => {
                    outcome.label = "malformed_request";
                    return Action::Respond(plain(400, "PKIOperation without a message", outcome));
                }
                (Method::Get, Message::Body(_)) | (Method::Other, _) => {
                    outcome.label = "malformed_request";
                    return Action::Respond(plain(400, "PKIOperation message in the wrong place", outcome));
                }
            };
            pki_operation(engine, bytes, now, outcome)
        }
    }
}

/// A failure that becomes a signed CertRep FAILURE.
struct Failure {
    fail_info: FailInfo,
    label: &'static str,
    detail: String,
}

impl Failure {
    fn new(fail_info: FailInfo, label: &'static str, detail: impl Into<String>) -> Self {
        Self { fail_info, label, detail: detail.into() }
    }
}

fn pki_operation(engine: &Engine, bytes: &[u8], now: UnixTime, mut outcome: Outcome) -> Action {
    let config = &engine.config;
    if bytes.len() > config.max_message_size {
        outcome.label = "too_large";
        return Action::Respond(plain(413, "PKIOperation message too large", outcome));
    }
    let msg = match PkiMessageRef::parse(bytes) {
        Ok(m) => m,
        Err(e) => {
            outcome.label = "malformed_request";
            return Action::Respond(plain(400, &format!("not a SCEP PKIMessage: {e}"), outcome));
        }
    };
    outcome.message_type = Some(msg.message_type);
    outcome.transaction_id = Some(msg.transaction_id.to_string());

    // From here on the requester can be answered with a signed CertRep.
    let reply_digest =
        msg.digest.filter(|d| config.algorithms.digests.contains(d)).unwrap_or(DigestAlg::Sha256).for_reply();
    let mut reply = ReplyContext {
        transaction_id: msg.transaction_id.to_string(),
        recipient_nonce: msg.sender_nonce.to_vec(),
        digest: reply_digest,
        cipher: ContentCipher::Aes256Cbc,
        recipient_cert: Vec::new(),
    };
    match authorize(engine, &msg, now, &mut reply, &mut outcome) {
        Ok(request) => Action::Issue(PendingIssue { engine: engine.clone(), request, reply, outcome }),
        Err(f) => Action::Respond(engine.failure(&reply, outcome, f, now)),
    }
}

/// Verifies, decrypts and authorises a PKIMessage; returns the issuer request.
fn authorize(
    engine: &Engine,
    msg: &PkiMessageRef<'_>,
    now: UnixTime,
    reply: &mut ReplyContext,
    outcome: &mut Outcome,
) -> Result<IssueRequest, Failure> {
    let config = &engine.config;
    let supported = [
        MessageType::PKCS_REQ,
        MessageType::RENEWAL_REQ,
        MessageType::CERT_POLL,
        MessageType::GET_CERT,
        MessageType::GET_CRL,
    ];
    if !supported.contains(&msg.message_type) {
        return Err(Failure::new(
            FailInfo::BAD_REQUEST,
            "unsupported_message_type",
            format!("messageType {} is not a request", msg.message_type.0),
        ));
    }
    let Some(digest) = msg.digest else {
        return Err(Failure::new(FailInfo::BAD_ALG, "bad_alg", "unsupported digest algorithm"));
    };
    if !config.algorithms.digests.contains(&digest) {
        return Err(Failure::new(
            FailInfo::BAD_ALG,
            "bad_alg",
            format!("digest {} not allowed by this profile", digest.name()),
        ));
    }
    // RFC 8894 §3.2: the signature proves possession of the signer's key and
    // protects the attributes; nothing unsigned is trusted before this.
    if let Err(e) = msg.verify() {
        return Err(Failure::new(e.fail_info(), "bad_signature", format!("request signature: {e}")));
    }
    let Some(signer) = msg.signer else {
        return Err(Failure::new(FailInfo::BAD_MESSAGE_CHECK, "bad_signature", "no signer certificate"));
    };
    reply.recipient_cert = signer.raw.to_vec();
    // RFC 8894 §2.3: a transient self-signed certificate must at least be what
    // it claims to be. (Certificates issued by a CA are checked by the renewal
    // path, which needs them to chain to ours.)
    if signer.is_self_issued() {
        let own_key = signer.spki.public_key().map_err(|_| {
            Failure::new(FailInfo::BAD_ALG, "bad_signature", "signer certificate key type is not supported")
        })?;
        if signer.verify_signed_by(own_key).is_err() {
            return Err(Failure::new(
                FailInfo::BAD_MESSAGE_CHECK,
                "bad_signature",
                "the self-signed signer certificate's signature does not verify",
            ));
        }
    }
    if let (Some(tol), Some(t)) = (config.signing_time_tolerance, msg.signing_time)
        && (t.secs() - now.secs()).abs() > tol
    {
        return Err(Failure::new(
            FailInfo::BAD_TIME,
            "bad_time",
            format!("signingTime {} is more than {tol}s from now {}", t.to_rfc3339(), now.to_rfc3339()),
        ));
    }
    let ra_cert = CertificateRef::parse(&config.ra.certificate)
        .map_err(|e| Failure::new(FailInfo::BAD_REQUEST, "internal_error", format!("RA certificate: {e}")))?;
    let opened =
        envelope::open(&msg.content, &ra_cert, &config.ra.key, &config.algorithms.ciphers, config.rng.as_ref())
            .map_err(|e| Failure::new(e.fail_info(), "decrypt_failed", format!("pkcsPKIEnvelope: {e}")))?;
    reply.cipher = opened.cipher.for_reply();
    if !config.algorithms.ciphers.contains(&reply.cipher) {
        // E.g. DES allowed but 3DES not: answer in the request's own cipher.
        reply.cipher = opened.cipher;
    }
    let content = opened.content;

    match msg.message_type {
        MessageType::PKCS_REQ | MessageType::RENEWAL_REQ => enrol(engine, msg, &signer, &content, now, outcome),
        MessageType::CERT_POLL => {
            let (issuer, subject) = message::parse_issuer_and_subject(&content).map_err(|e| {
                Failure::new(FailInfo::BAD_REQUEST, "malformed_content", format!("IssuerAndSubject: {e}"))
            })?;
            outcome.subject = Some(name_to_string(subject));
            Ok(IssueRequest::Poll(PollRequest {
                profile: config.name.clone(),
                transaction_id: msg.transaction_id.to_string(),
                issuer_der: issuer.to_vec(),
                subject_der: subject.to_vec(),
            }))
        }
        _ => {
            let (issuer, serial) = message::parse_issuer_and_serial(&content).map_err(|e| {
                Failure::new(FailInfo::BAD_REQUEST, "malformed_content", format!("IssuerAndSerialNumber: {e}"))
            })?;
            outcome.serial = Some(hex(serial));
            let lookup =
                CertLookup { profile: config.name.clone(), issuer_der: issuer.to_vec(), serial: serial.to_vec() };
            Ok(if msg.message_type == MessageType::GET_CERT {
                IssueRequest::GetCert(lookup)
            } else {
                IssueRequest::GetCrl(lookup)
            })
        }
    }
}

/// PKCSReq and RenewalReq (RFC 8894 §3.3.1).
fn enrol(
    engine: &Engine,
    msg: &PkiMessageRef<'_>,
    signer: &CertificateRef<'_>,
    csr_der: &[u8],
    now: UnixTime,
    outcome: &mut Outcome,
) -> Result<IssueRequest, Failure> {
    let config = &engine.config;
    let csr = CsrRef::parse(csr_der)
        .map_err(|e| Failure::new(FailInfo::BAD_REQUEST, "bad_csr", format!("PKCS#10 does not parse: {e}")))?;
    outcome.subject = Some(name_to_string(csr.subject));
    if csr.verify_signature().is_err() {
        return Err(Failure::new(FailInfo::BAD_MESSAGE_CHECK, "bad_csr", "PKCS#10 signature does not verify"));
    }
    let sans = csr
        .subject_alt_names()
        .map_err(|e| Failure::new(FailInfo::BAD_REQUEST, "bad_csr", format!("subjectAltName: {e}")))?;
    outcome.subject_alt_names = sans.iter().map(ToString::to_string).collect();
    // Authenticate before applying policy, so an unauthenticated client learns
    // nothing about the profile's policy and the audit label names the real cause.
    let renewal_of = if config.renewal.enabled && engine.issued_by_our_ca(signer, now) {
        if signer.subject != csr.subject {
            return Err(Failure::new(
                FailInfo::BAD_REQUEST,
                "renewal_subject_changed",
                format!(
                    "renewal must keep the subject {:?}, CSR asks for {:?}",
                    name_to_string(signer.subject),
                    name_to_string(csr.subject)
                ),
            ));
        }
        if !config.renewal.allow_san_change && !same_set(&signer_sans(signer)?, &sans) {
            return Err(Failure::new(
                FailInfo::BAD_REQUEST,
                "renewal_san_changed",
                "renewal must keep the certificate's subjectAltNames",
            ));
        }
        Some(signer)
    } else {
        None
    };
    // A renewal authenticates by the existing certificate; its static challenge,
    // if any, is ignored (the password may have rotated since). An Intune
    // renewal still passes the same gates as a first enrolment.
    let intune_challenge = match (&config.intune, &csr.challenge_password) {
        (Some(v), Some(c)) if intune::looks_intune_shaped(c) => Some((v, c.as_str())),
        _ => None,
    };
    let authorization = match (renewal_of, intune_challenge) {
        (Some(_), Some((validator, challenge))) => check_intune(validator, challenge, &csr, &sans, now, outcome)?,
        (Some(old), None) => Authorization::ExistingCertificate { serial: old.serial.to_vec() },
        (None, _) => check_challenge(engine, &csr, &sans, now, outcome)?
            .ok_or_else(|| Failure::new(FailInfo::BAD_REQUEST, "bad_challenge", "CSR carries no challenge password"))?,
    };

    check_key_policy(config, &csr)?;
    let ekus = csr
        .extended_key_usages()
        .map_err(|e| Failure::new(FailInfo::BAD_REQUEST, "bad_csr", format!("extKeyUsage: {e}")))?;
    if let Some(bad) = ekus.iter().find(|e| !config.allowed_ekus.iter().any(|a| a.as_slice() == **e)) {
        return Err(Failure::new(
            FailInfo::BAD_REQUEST,
            "policy_violation",
            format!("extended key usage {} is not allowed by this profile", crate::oid::dotted(bad)),
        ));
    }
    check_san_policy(&config.sans, &sans)?;

    let mut policy = config.issuance.clone();
    if !ekus.is_empty() {
        policy.ekus = ekus.iter().map(|e| e.to_vec()).collect();
    }
    let request = EnrollRequest {
        profile: config.name.clone(),
        transaction_id: msg.transaction_id.to_string(),
        csr_der: csr.raw.to_vec(),
        subject_der: csr.subject.to_vec(),
        spki_der: csr.spki.raw.to_vec(),
        subject_alt_names: sans,
        requested_ekus: ekus.iter().map(|e| e.to_vec()).collect(),
        policy,
        authorization,
    };

    // Renewal (RFC 8894 §3.3.1.2): a request signed by a certificate this CA
    // issued authenticates without a challenge. certmonger, jscep and Cisco
    // renew with a PKCSReq signed that way, so both message types qualify.
    if let Some(old) = renewal_of {
        outcome.renewal_of = Some(hex(old.serial));
        return Ok(IssueRequest::Renew(RenewRequest {
            enroll: request,
            old_serial: old.serial.to_vec(),
            old_issuer: old.issuer.to_vec(),
        }));
    }
    Ok(IssueRequest::Enroll(request))
}

/// The challenge password gate: an Intune Connector challenge when the
/// profile enables Intune and the challenge has the JWS shape (gate 1 of
/// docs/INTUNE.md), otherwise the profile's static password.
fn check_challenge(
    engine: &Engine,
    csr: &CsrRef<'_>,
    sans: &[SubjectAltName],
    now: UnixTime,
    outcome: &mut Outcome,
) -> Result<Option<Authorization>, Failure> {
    if let (Some(validator), Some(challenge)) = (&engine.config.intune, &csr.challenge_password)
        && intune::looks_intune_shaped(challenge)
    {
        return check_intune(validator, challenge, csr, sans, now, outcome).map(Some);
    }
    match &engine.config.challenge {
        ChallengePolicy::DangerNone => Ok(Some(Authorization::None)),
        ChallengePolicy::Static(expected) => match &csr.challenge_password {
            Some(given) if constant_time_eq(given.as_bytes(), expected.as_bytes()) => {
                Ok(Some(Authorization::StaticChallenge))
            }
            Some(_) => Err(Failure::new(FailInfo::BAD_REQUEST, "bad_challenge", "challenge password does not match")),
            None => Ok(None),
        },
        // Checked and consumed by the transport (a durable store), after the
        // rest of the request is authorised.
        ChallengePolicy::OneTime => match &csr.challenge_password {
            Some(given) => Ok(Some(Authorization::OneTimeChallenge {
                challenge: crate::issue::ChallengeSecret::new(given.clone()),
                common_names: csr
                    .common_names()
                    .map_err(|e| Failure::new(FailInfo::BAD_REQUEST, "bad_csr", format!("subject: {e}")))?,
            })),
            None => Ok(None),
        },
    }
}

/// Gates 2-9 of the Intune Connector challenge (docs/INTUNE.md), with the
/// CSR's identity for the binding gate.
fn check_intune(
    validator: &intune::IntuneValidator,
    challenge: &str,
    csr: &CsrRef<'_>,
    sans: &[SubjectAltName],
    now: UnixTime,
    outcome: &mut Outcome,
) -> Result<Authorization, Failure> {
    let common_names =
        csr.common_names().map_err(|e| Failure::new(FailInfo::BAD_REQUEST, "bad_csr", format!("subject: {e}")))?;
    let pick = |f: fn(&SubjectAltName) -> Option<&String>| sans.iter().filter_map(f).cloned().collect::<Vec<_>>();
    let dns = pick(|n| if let SubjectAltName::Dns(s) = n { Some(s) } else { None });
    let emails = pick(|n| if let SubjectAltName::Email(s) = n { Some(s) } else { None });
    let upns = pick(|n| if let SubjectAltName::Upn(s) = n { Some(s) } else { None });
    let identity = intune::CsrIdentity { common_names: &common_names, dns: &dns, emails: &emails, upns: &upns };
    match validator.validate(challenge, &identity, now) {
        Ok(claims) => {
            let id = claims.identity();
            outcome.intune = Some(id.clone());
            Ok(Authorization::Intune { subject: id.subject, issuer: id.issuer, nonce: id.nonce })
        }
        Err(rejection) => {
            outcome.intune = rejection.identity.clone();
            Err(Failure::new(rejection.fail_info, rejection.label.as_str(), rejection.detail))
        }
    }
}

/// Compares two secrets without revealing where (or, through the digests,
/// whether their lengths) differ.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let da = DigestAlg::Sha256.digest(a);
    let db = DigestAlg::Sha256.digest(b);
    aws_lc_rs::constant_time::verify_slices_are_equal(&da, &db).is_ok()
}

fn check_key_policy(config: &ProfileConfig, csr: &CsrRef<'_>) -> Result<(), Failure> {
    let keys = &config.keys;
    let key = csr.spki.public_key().map_err(|_| {
        Failure::new(
            FailInfo::BAD_ALG,
            "bad_key",
            format!("unsupported key algorithm {}", crate::oid::dotted(csr.spki.algorithm)),
        )
    })?;
    let ok = match key {
        PublicKeyRef::Rsa(_) => keys.min_rsa_bits.is_some_and(|min| key.bits() >= min),
        PublicKeyRef::EcP256(_) => keys.allow_p256,
        PublicKeyRef::EcP384(_) => keys.allow_p384,
    };
    if ok {
        Ok(())
    } else {
        Err(Failure::new(
            FailInfo::BAD_ALG,
            "bad_key",
            format!("key ({} bits) not allowed by this profile's key policy", key.bits()),
        ))
    }
}

/// The profile's subjectAltName rules (crypto policy; refused with badRequest).
fn check_san_policy(policy: &crate::config::SanPolicy, sans: &[SubjectAltName]) -> Result<(), Failure> {
    use crate::config::SanType;
    for san in sans {
        let kind = match san {
            SubjectAltName::Dns(_) => SanType::Dns,
            SubjectAltName::Email(_) => SanType::Email,
            SubjectAltName::Upn(_) => SanType::Upn,
            SubjectAltName::Uri(_) => SanType::Uri,
            SubjectAltName::Ip(_) => SanType::Ip,
            SubjectAltName::Other(_) => SanType::Other,
        };
        if policy.allowed_types.as_ref().is_some_and(|t| !t.contains(&kind)) {
            return Err(Failure::new(
                FailInfo::BAD_REQUEST,
                "policy_violation",
                format!("subjectAltName {san} ({kind:?}) is not allowed by this profile"),
            ));
        }
        if let SubjectAltName::Dns(name) = san
            && !policy.dns_suffixes.is_empty()
            && !policy.dns_suffixes.iter().any(|s| dns_within(name, s))
        {
            return Err(Failure::new(
                FailInfo::BAD_REQUEST,
                "policy_violation",
                format!("dNSName {name} is outside this profile's DNS suffixes"),
            ));
        }
    }
    Ok(())
}

/// Whether `name` is `suffix` (leading dot ignored) or a name below it.
fn dns_within(name: &str, suffix: &str) -> bool {
    let base = suffix.strip_prefix('.').unwrap_or(suffix);
    let (name, base) = (name.to_ascii_lowercase(), base.to_ascii_lowercase());
    name == base || name.strip_suffix(&base).is_some_and(|head| head.ends_with('.'))
}

fn signer_sans(cert: &CertificateRef<'_>) -> Result<Vec<SubjectAltName>, Failure> {
    match cert.extension(crate::oid::SUBJECT_ALT_NAME) {
        Ok(Some((_, v))) => crate::x509::parse_subject_alt_names(v)
            .map_err(|e| Failure::new(FailInfo::BAD_REQUEST, "bad_certificate", format!("signer subjectAltName: {e}"))),
        Ok(None) => Ok(Vec::new()),
        Err(e) => Err(Failure::new(FailInfo::BAD_REQUEST, "bad_certificate", format!("signer extensions: {e}"))),
    }
}

fn same_set(a: &[SubjectAltName], b: &[SubjectAltName]) -> bool {
    let mut a = a.to_vec();
    let mut b = b.to_vec();
    a.sort();
    a.dedup();
    b.sort();
    b.dedup();
    a == b
}

/// Lower-case hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

impl Engine {
    /// True when `cert` was issued by this profile's issuing CA (signature
    /// verifies with the CA key) and is valid at `now`. Revocation is the
    /// issuer's to check (it refuses renewal of a revoked serial).
    fn issued_by_our_ca(&self, cert: &CertificateRef<'_>, now: UnixTime) -> bool {
        let Some(ca_der) = self.config.ca_chain.first() else { return false };
        let Ok(ca) = CertificateRef::parse(ca_der) else { return false };
        if cert.issuer != ca.subject || cert.raw == ca.raw || !cert.is_valid_at(now) {
            return false;
        }
        let Ok(key) = ca.spki.public_key() else { return false };
        cert.verify_signed_by(key).is_ok()
    }

    fn certrep(
        &self,
        reply: &ReplyContext,
        status: certrep::CertRepStatus<'_>,
        now: UnixTime,
    ) -> Result<Vec<u8>, String> {
        let config = &self.config;
        let ra_cert = CertificateRef::parse(&config.ra.certificate).map_err(|e| format!("RA certificate: {e}"))?;
        let builder = certrep::CertRepBuilder {
            ra_cert,
            ra_key: &config.ra.key,
            digest: reply.digest,
            transaction_id: &reply.transaction_id,
            recipient_nonce: &reply.recipient_nonce,
            signing_time: now,
        };
        builder.build(status, config.rng.as_ref()).map_err(|e| e.to_string())
    }

    /// A signed CertRep FAILURE (RFC 8894 §3.3.2.2).
    fn failure(&self, reply: &ReplyContext, mut outcome: Outcome, f: Failure, now: UnixTime) -> Response {
        outcome.pki_status = Some(PkiStatus::FAILURE);
        outcome.fail_info = Some(f.fail_info);
        outcome.label = f.label;
        outcome.detail = Some(f.detail);
        match self.certrep(reply, certrep::CertRepStatus::Failure(f.fail_info), now) {
            Ok(body) => Response { status: 200, content_type: PKI_MESSAGE, body, outcome },
            Err(e) => internal_error(outcome, &e),
        }
    }

    /// A signed FAILURE decided by the transport before the issuer was asked
    /// ([`PendingIssue::refuse`]).
    pub(crate) fn refuse(
        &self,
        reply: &ReplyContext,
        outcome: Outcome,
        fail_info: FailInfo,
        label: &'static str,
        detail: String,
        now: UnixTime,
    ) -> Response {
        self.failure(reply, outcome, Failure { fail_info, label, detail }, now)
    }

    /// Turns the issuer's answer into the CertRep.
    pub(crate) fn resume(
        &self,
        reply: ReplyContext,
        request: IssueRequest,
        mut outcome: Outcome,
        issued: IssueOutcome,
        now: UnixTime,
    ) -> Response {
        match issued {
            IssueOutcome::Issued { certificate, chain } => {
                if let Ok(c) = CertificateRef::parse(&certificate) {
                    outcome.serial = Some(hex(c.serial));
                    outcome.subject = Some(name_to_string(c.subject));
                }
                let mut certs: Vec<&[u8]> = vec![&certificate];
                if !matches!(request, IssueRequest::GetCert(_)) {
                    certs.extend(chain.iter().map(Vec::as_slice));
                }
                self.success(reply, outcome, &pkcs7::certs_only(&certs, &[]), now)
            }
            IssueOutcome::Crl(crl) => self.success(reply, outcome, &pkcs7::certs_only(&[], &[&crl]), now),
            IssueOutcome::Pending => {
                outcome.pki_status = Some(PkiStatus::PENDING);
                outcome.label = "pending";
                match self.certrep(&reply, certrep::CertRepStatus::Pending, now) {
                    Ok(body) => Response { status: 200, content_type: PKI_MESSAGE, body, outcome },
                    Err(e) => internal_error(outcome, &e),
                }
            }
            IssueOutcome::Rejected { fail_info, reason } => {
                self.failure(&reply, outcome, Failure { fail_info, label: "issuer_rejected", detail: reason }, now)
            }
        }
    }

    fn success(&self, reply: ReplyContext, mut outcome: Outcome, content: &[u8], now: UnixTime) -> Response {
        let sealed = CertificateRef::parse(&reply.recipient_cert).map_err(|e| e.to_string()).and_then(|recipient| {
            pkcs7::seal(content, &recipient, reply.cipher, self.config.rng.as_ref()).map_err(|e| e.to_string())
        });
        let envelope = match sealed {
            Ok(e) => e,
            // The requester's signer key cannot receive key transport (e.g. an
            // EC transient certificate): tell it with a signed failure.
            Err(e) => {
                return self.failure(
                    &reply,
                    outcome,
                    Failure::new(FailInfo::BAD_ALG, "bad_recipient", format!("cannot encrypt the reply: {e}")),
                    now,
                );
            }
        };
        outcome.pki_status = Some(PkiStatus::SUCCESS);
        outcome.label = "success";
        match self.certrep(&reply, certrep::CertRepStatus::Success { envelope: &envelope }, now) {
            Ok(body) => Response { status: 200, content_type: PKI_MESSAGE, body, outcome },
            Err(e) => internal_error(outcome, &e),
        }
    }
}

fn internal_error(mut outcome: Outcome, detail: &str) -> Response {
    outcome.label = "internal_error";
    outcome.detail = Some(detail.to_string());
    plain(500, "internal error building the reply", outcome)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::{AlgorithmPolicy, KeyPolicy, RaIdentity, RenewalPolicy};
    use crate::crypto::{RandomSource, RsaPrivateKey};
    use crate::issue::IssuancePolicy;

    const VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/vectors/real-clients/");
    /// The captures were made on 2026-11-25.
    const CAPTURE_TIME: UnixTime = UnixTime(1_795_574_400);

    #[derive(Debug)]
    struct Fixed;
    impl RandomSource for Fixed {
        fn fill(&self, buf: &mut [u8]) {
            buf.iter_mut().enumerate().for_each(|(i, b)| *b = (i as u8).wrapping_mul(29).wrapping_add(7));
        }
    }

    fn read(name: &str) -> Vec<u8> {
        std::fs::read(format!("{VECTORS}{name}")).unwrap()
    }

    fn ra_cert() -> Vec<u8> {
        crate::pem::certificates(&String::from_utf8(read("recipient-cert.pem")).unwrap()).unwrap().remove(0)
    }

    fn config(challenge: &str, ciphers: Vec<ContentCipher>) -> ProfileConfig {
        let key = crate::pem::private_key(&String::from_utf8(read("recipient-key.pem")).unwrap()).unwrap();
        ProfileConfig {
            name: "default".into(),
            ra: RaIdentity { certificate: ra_cert(), key: RsaPrivateKey::from_der(&key).unwrap() },
            ca_chain: vec![ra_cert()],
            ca_cert_shape: CaCertShape::RaAndChain,
            challenge: ChallengePolicy::Static(challenge.into()),
            algorithms: AlgorithmPolicy { ciphers, ..AlgorithmPolicy::default() },
            keys: KeyPolicy::default(),
            renewal: RenewalPolicy::default(),
            issuance: IssuancePolicy::default(),
            allowed_ekus: vec![crate::oid::KP_CLIENT_AUTH.to_vec(), crate::oid::KP_SERVER_AUTH.to_vec()],
            sans: crate::config::SanPolicy::default(),
            signing_time_tolerance: None,
            max_message_size: 256 * 1024,
            rng: Arc::new(Fixed),
            intune: None,
        }
    }

    fn all_ciphers() -> Vec<ContentCipher> {
        let mut c = AlgorithmPolicy::default().ciphers;
        c.push(ContentCipher::DesCbc);
        c
    }

    fn engine() -> Engine {
        Engine::new(config("secret123", all_ciphers())).unwrap()
    }

    fn post(body: &[u8]) -> Request<'_> {
        Request { method: Method::Post, operation: "PKIOperation", message: Message::Body(body) }
    }

    fn respond(a: Action) -> Response {
        match a {
            Action::Respond(r) => r,
            Action::Issue(p) => panic!("expected a response, got an issue request {:?}", p.request()),
        }
    }

    /// Parses a CertRep and checks what every CertRep must carry.
    fn cert_rep(r: &Response, request: &PkiMessageRef<'_>) -> (PkiStatus, Option<FailInfo>, usize) {
        assert_eq!((r.status, r.content_type), (200, PKI_MESSAGE), "{:?}", r.outcome);
        let rep = PkiMessageRef::parse(&r.body).unwrap();
        rep.verify().unwrap();
        assert_eq!(rep.message_type, MessageType::CERT_REP);
        assert_eq!(rep.transaction_id, request.transaction_id);
        assert_eq!(rep.recipient_nonce, Some(request.sender_nonce));
        assert_eq!(rep.sender_nonce.len(), 16);
        assert_eq!(rep.signer.unwrap().raw, ra_cert().as_slice());
        (rep.pki_status.unwrap(), rep.fail_info, rep.content.len())
    }

    const CLIENTS: [&str; 6] = ["sscep", "certmonger", "pyscep", "scepreq", "jscep", "scepclient"];

    #[test]
    fn capabilities_list_only_what_is_allowed() {
        let caps = respond(
            engine()
                .handle(Request { method: Method::Get, operation: "GetCACaps", message: Message::None }, CAPTURE_TIME),
        );
        let text = String::from_utf8(caps.body).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            ["AES", "DES3", "POSTPKIOperation", "Renewal", "SHA-1", "SHA-256", "SHA-384", "SHA-512", "SCEPStandard"]
        );
        let mut c = config("x", vec![ContentCipher::DesEde3Cbc]);
        c.algorithms.digests = vec![DigestAlg::Sha256];
        c.renewal.enabled = false;
        let e = Engine::new(c).unwrap();
        let caps = respond(
            e.handle(Request { method: Method::Get, operation: "GetCACaps", message: Message::None }, CAPTURE_TIME),
        );
        assert_eq!(caps.body, b"DES3\nPOSTPKIOperation\nSHA-256\n");
    }

    #[test]
    fn ca_cert_is_the_lone_certificate_when_ra_is_ca() {
        for message in [Message::None, Message::Query(""), Message::Query("anything")] {
            let r = respond(
                engine().handle(Request { method: Method::Get, operation: "GetCACert", message }, CAPTURE_TIME),
            );
            assert_eq!((r.status, r.content_type), (200, CA_CERT));
            assert_eq!(r.body, ra_cert());
        }
    }

    #[test]
    fn http_level_errors_before_the_transaction_is_known() {
        let e = engine();
        let r = respond(
            e.handle(Request { method: Method::Get, operation: "Bogus", message: Message::None }, CAPTURE_TIME),
        );
        assert_eq!((r.status, r.outcome.label), (400, "unknown_operation"));
        let r = respond(
            e.handle(Request { method: Method::Other, operation: "GetCACaps", message: Message::None }, CAPTURE_TIME),
        );
        assert_eq!(r.status, 405);
        let r = respond(e.handle(post(b"\x30\x03\x02\x01\x00"), CAPTURE_TIME));
        assert_eq!((r.status, r.outcome.label), (400, "malformed_request"));
        let r = respond(e.handle(
            Request { method: Method::Get, operation: "PKIOperation", message: Message::Query("%%%") },
            CAPTURE_TIME,
        ));
        assert_eq!(r.status, 400);
        let r = respond(
            e.handle(Request { method: Method::Post, operation: "PKIOperation", message: Message::None }, CAPTURE_TIME),
        );
        assert_eq!(r.status, 400);
        let big = vec![0x30; 300 * 1024];
        let r = respond(e.handle(post(&big), CAPTURE_TIME));
        assert_eq!(r.status, 413);
    }

    #[test]
    fn every_real_client_capture_becomes_an_enrolment_and_a_signed_success() {
        let e = engine();
        for client in CLIENTS {
            let body = read(&format!("{client}-pkcsreq.der"));
            let req = PkiMessageRef::parse(&body).unwrap();
            let pending = match e.handle(post(&body), CAPTURE_TIME) {
                Action::Issue(p) => p,
                Action::Respond(r) => panic!("{client}: {:?}", r.outcome),
            };
            let IssueRequest::Enroll(enrol) = pending.request() else { panic!("{client}: not an enrolment") };
            assert_eq!(enrol.authorization, Authorization::StaticChallenge, "{client}");
            assert!(name_to_string(&enrol.subject_der).contains(&format!("CN=peers-{client}-1795574366")), "{client}");
            assert_eq!(pending.outcome().transaction_id.as_deref(), Some(req.transaction_id));
            // Any certificate will do as the "issued" one: the engine only wraps it.
            let r = pending.resume(IssueOutcome::Issued { certificate: ra_cert(), chain: vec![] }, CAPTURE_TIME);
            let (status, fail, content_len) = cert_rep(&r, &req);
            assert_eq!((status, fail), (PkiStatus::SUCCESS, None), "{client}");
            assert!(content_len > 0, "{client}: SUCCESS carries the envelope");
            assert_eq!(r.outcome.label, "success");
        }
    }

    #[test]
    fn get_with_base64_message_is_accepted() {
        use base64::Engine as _;
        let body = read("certmonger-pkcsreq.der");
        let b64 = base64::engine::general_purpose::STANDARD.encode(&body).replace('+', "%2B").replace('/', "%2F");
        let a = engine().handle(
            Request { method: Method::Get, operation: "PKIOperation", message: Message::Query(&b64) },
            CAPTURE_TIME,
        );
        assert!(matches!(a, Action::Issue(_)));
    }

    #[test]
    fn wrong_or_missing_challenge_is_a_signed_bad_request() {
        let e = Engine::new(config("not-the-password", all_ciphers())).unwrap();
        for client in CLIENTS {
            let body = read(&format!("{client}-pkcsreq.der"));
            let req = PkiMessageRef::parse(&body).unwrap();
            let r = respond(e.handle(post(&body), CAPTURE_TIME));
            assert_eq!(cert_rep(&r, &req), (PkiStatus::FAILURE, Some(FailInfo::BAD_REQUEST), 0), "{client}");
            assert_eq!(r.outcome.label, "bad_challenge");
        }
    }

    #[test]
    fn one_time_challenges_are_handed_to_the_transport_which_can_refuse_with_a_signed_failure() {
        let mut c = config("unused", all_ciphers());
        c.challenge = ChallengePolicy::OneTime;
        let e = Engine::new(c).unwrap();
        for client in CLIENTS {
            let body = read(&format!("{client}-pkcsreq.der"));
            let req = PkiMessageRef::parse(&body).unwrap();
            let pending = match e.handle(post(&body), CAPTURE_TIME) {
                Action::Issue(p) => p,
                Action::Respond(r) => panic!("{client}: {:?}", r.outcome),
            };
            let enrol = pending.one_time_challenge().expect("a one-time challenge to consume");
            let Authorization::OneTimeChallenge { challenge, common_names } = &enrol.authorization else {
                panic!("{client}: {:?}", enrol.authorization)
            };
            // What the client put in its CSR, for the store to check; never in Debug.
            assert_eq!(challenge.expose(), "secret123", "{client}");
            assert_eq!(common_names, &[format!("peers-{client}-1795574366")], "{client}");
            assert!(!format!("{pending:?}").contains("secret123"), "{client}: the secret leaks into Debug");
            let r = pending.refuse(FailInfo::BAD_REQUEST, "challenge_used", "already used", CAPTURE_TIME);
            assert_eq!(cert_rep(&r, &req), (PkiStatus::FAILURE, Some(FailInfo::BAD_REQUEST), 0), "{client}");
            assert_eq!((r.outcome.label, r.outcome.detail.as_deref()), ("challenge_used", Some("already used")));
        }
    }

    #[test]
    fn single_des_needs_explicit_opt_in() {
        let e = Engine::new(config("secret123", AlgorithmPolicy::default().ciphers)).unwrap();
        let body = read("scepclient-pkcsreq.der");
        let req = PkiMessageRef::parse(&body).unwrap();
        let r = respond(e.handle(post(&body), CAPTURE_TIME));
        assert_eq!(cert_rep(&r, &req), (PkiStatus::FAILURE, Some(FailInfo::BAD_ALG), 0));
    }

    #[test]
    fn tampered_signature_is_bad_message_check() {
        let mut body = read("sscep-pkcsreq.der");
        let req_copy = body.clone();
        let req = PkiMessageRef::parse(&req_copy).unwrap();
        let sig_at = body.len() - 10;
        body[sig_at] ^= 1;
        let r = respond(engine().handle(post(&body), CAPTURE_TIME));
        assert_eq!(cert_rep(&r, &req), (PkiStatus::FAILURE, Some(FailInfo::BAD_MESSAGE_CHECK), 0));
        assert_eq!(r.outcome.label, "bad_signature");
    }

    #[test]
    fn forged_self_signed_signer_certificate_is_bad_message_check() {
        let original = read("sscep-pkcsreq.der");
        let req = PkiMessageRef::parse(&original).unwrap();
        let signer_sig = req.signer.unwrap().signature;
        let at = signer_sig.as_ptr() as usize - original.as_ptr() as usize + signer_sig.len() / 2;
        let mut body = original.clone();
        body[at] ^= 0x40;
        let r = respond(engine().handle(post(&body), CAPTURE_TIME));
        assert_eq!(cert_rep(&r, &req), (PkiStatus::FAILURE, Some(FailInfo::BAD_MESSAGE_CHECK), 0));
        assert!(r.outcome.detail.unwrap().contains("self-signed"));
    }

    #[test]
    fn signing_time_outside_tolerance_is_bad_time() {
        let mut c = config("secret123", all_ciphers());
        c.signing_time_tolerance = Some(3600);
        let e = Engine::new(c).unwrap();
        let body = read("sscep-pkcsreq.der");
        let req = PkiMessageRef::parse(&body).unwrap();
        let t = req.signing_time.unwrap();
        assert!(matches!(e.handle(post(&body), t.plus(3599)), Action::Issue(_)));
        let r = respond(e.handle(post(&body), t.plus(3601)));
        assert_eq!(cert_rep(&r, &req), (PkiStatus::FAILURE, Some(FailInfo::BAD_TIME), 0));
        let r = respond(e.handle(post(&body), t.plus(-3601)));
        assert_eq!(cert_rep(&r, &req), (PkiStatus::FAILURE, Some(FailInfo::BAD_TIME), 0));
    }

    #[test]
    fn key_policy_violation_is_bad_alg() {
        let mut c = config("secret123", all_ciphers());
        c.keys.min_rsa_bits = Some(4096);
        let e = Engine::new(c).unwrap();
        let body = read("pyscep-pkcsreq.der");
        let req = PkiMessageRef::parse(&body).unwrap();
        let r = respond(e.handle(post(&body), CAPTURE_TIME));
        assert_eq!(cert_rep(&r, &req), (PkiStatus::FAILURE, Some(FailInfo::BAD_ALG), 0));
        assert_eq!(r.outcome.label, "bad_key");
    }

    #[test]
    fn san_rules_refuse_with_bad_request() {
        // The real-client captures carry no SAN: a SAN-free profile still enrols them.
        let mut c = config("secret123", all_ciphers());
        c.sans = crate::config::SanPolicy { allowed_types: Some(vec![]), dns_suffixes: vec!["example.com".into()] };
        let e = Engine::new(c).unwrap();
        for client in CLIENTS {
            let body = read(&format!("{client}-pkcsreq.der"));
            assert!(matches!(e.handle(post(&body), CAPTURE_TIME), Action::Issue(_)), "{client}");
        }
        let only_dns =
            crate::config::SanPolicy { allowed_types: Some(vec![crate::config::SanType::Dns]), dns_suffixes: vec![] };
        let f = check_san_policy(&only_dns, &[SubjectAltName::Upn("u@corp".into())]).unwrap_err();
        assert_eq!((f.fail_info, f.label), (FailInfo::BAD_REQUEST, "policy_violation"));
        assert!(check_san_policy(&only_dns, &[SubjectAltName::Dns("a.b".into())]).is_ok());
        assert!(dns_within("a.example.com", ".example.com"));
        assert!(dns_within("Example.COM", ".example.com"));
        assert!(dns_within("b.a.example.com", "example.com"));
        assert!(!dns_within("badexample.com", ".example.com"));
        assert!(!dns_within("example.com.evil", "example.com"));
        let policy = crate::config::SanPolicy { allowed_types: None, dns_suffixes: vec![".corp.example".into()] };
        assert!(check_san_policy(&policy, &[SubjectAltName::Dns("x.corp.example".into())]).is_ok());
        assert!(check_san_policy(&policy, &[SubjectAltName::Dns("x.other.example".into())]).is_err());
        assert!(check_san_policy(&policy, &[SubjectAltName::Email("a@b".into())]).is_ok());
    }

    #[test]
    fn issuer_answers_become_failure_and_pending_cert_reps() {
        let e = engine();
        let body = read("jscep-pkcsreq.der");
        let req = PkiMessageRef::parse(&body).unwrap();
        let Action::Issue(p) = e.handle(post(&body), CAPTURE_TIME) else { panic!() };
        let r = p.resume(IssueOutcome::Rejected { fail_info: FailInfo::BAD_CERT_ID, reason: "x".into() }, CAPTURE_TIME);
        assert_eq!(cert_rep(&r, &req), (PkiStatus::FAILURE, Some(FailInfo::BAD_CERT_ID), 0));
        assert_eq!((r.outcome.label, r.outcome.detail.as_deref()), ("issuer_rejected", Some("x")));
        let Action::Issue(p) = e.handle(post(&body), CAPTURE_TIME) else { panic!() };
        let r = p.resume(IssueOutcome::Pending, CAPTURE_TIME);
        assert_eq!(cert_rep(&r, &req), (PkiStatus::PENDING, None, 0));
    }

    #[test]
    fn configuration_errors_are_named() {
        let mut c = config("x", all_ciphers());
        c.name = "Bad Name".into();
        assert!(Engine::new(c).unwrap_err().0.contains("a-z"));
        let mut c = config("x", all_ciphers());
        c.ca_chain.clear();
        assert!(Engine::new(c).unwrap_err().0.contains("CA chain is empty"));
        let mut c = config("x", all_ciphers());
        let (other, _) = RsaPrivateKey::generate(2048).unwrap();
        c.ra.key = other;
        assert!(Engine::new(c).unwrap_err().0.contains("do not match"));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        #[test]
        fn mutated_messages_never_panic(client in 0usize..6, flips in proptest::collection::vec((0usize..4096, 0u8..=255), 1..6), cut in 0usize..4096) {
            let mut body = read(&format!("{}-pkcsreq.der", CLIENTS[client]));
            for (at, x) in flips {
                let n = body.len();
                body[at % n] ^= x;
            }
            body.truncate(body.len().saturating_sub(cut % 64));
            let e = engine();
            if let Action::Issue(p) = e.handle(post(&body), CAPTURE_TIME) {
                let _ = p.resume(IssueOutcome::Pending, CAPTURE_TIME);
            }
        }

        #[test]
        fn random_bytes_never_panic(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let e = engine();
            let _ = e.handle(post(&body), CAPTURE_TIME);
        }
    }
}
