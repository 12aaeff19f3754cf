//! Request handling: GetCACaps, GetCACert and PKIOperation (RFC 8894 §3.5, §4).
//!
//! The order of checks follows what the requester can be told:
//! 1. before transactionID and senderNonce are known, failures are plain HTTP
//!    4xx answers with a short reason;
//! 2. from then on every failure is a CertRep FAILURE signed by the RA, with
//!    the failInfo the RFC assigns (RFC 8894 §3.3.2.2).

use crate::certrep;
use crate::codes::{FailInfo, MessageType, PkiStatus};
use crate::config::{CaCertShape, ChallengePolicy, ConfigError, ProfileConfig, RaIdentity};
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
    /// How to name the CertRep's signature algorithm (the profile's
    /// [`crate::config::ReplySignaturePolicy`] applied to the request).
    signature_form: certrep::SignatureForm,
    /// Cipher to encrypt the reply with.
    cipher: ContentCipher,
    /// The certificate that signed the request: the reply is encrypted to it
    /// (RFC 8894 §3.3.2). COPY: the crossing into an owned PendingIssue.
    recipient_cert: Vec<u8>,
}

/// Precomputed answers that depend only on the configuration, and the
/// encryption RAs of the NDES arrangement.
#[derive(Debug)]
pub(crate) struct Derived {
    caps: String,
    ca_cert_body: Vec<u8>,
    ca_cert_content_type: &'static str,
    /// The encryption RA certificates published after the signing RA.
    pub(crate) encryption_ras: Vec<RaIdentity>,
}

/// keyUsage digitalSignature (RFC 5280 §4.2.1.3, bit 0).
const KU_DIGITAL_SIGNATURE: u8 = 0;

/// Whether `cert`'s keyUsage allows bit `bit` (`None`: no keyUsage extension,
/// so every usage is allowed).
fn key_usage_bit(cert: &CertificateRef<'_>, bit: u8) -> Result<Option<bool>, crate::wire::DecodeError> {
    let Some((_, value)) = cert.extension(crate::oid::KEY_USAGE)? else { return Ok(None) };
    let bits = crate::wire::parse_single(value)?.expect_tag(crate::wire::tag::BIT_STRING)?;
    // contents: unused-bits octet, then the named bits, most significant first.
    let octet = bits.contents.get(1 + usize::from(bit / 8)).copied().unwrap_or(0);
    Ok(Some(octet & (0x80 >> (bit % 8)) != 0))
}

/// Checks a configuration and precomputes the static answers.
pub(crate) fn validate(config: &ProfileConfig, encryption_ras: Vec<RaIdentity>) -> Result<Derived, ConfigError> {
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
    // A separate (signing) RA signs every CertRep: a certificate whose keyUsage
    // forbids that would have its replies refused (RFC 5280 §4.2.1.3). A CA
    // acting as its own RA (RFC 8894 §2.1) is left as it is: CA certificates
    // commonly carry only keyCertSign and cRLSign, and deployed clients accept
    // its replies.
    if !ra_is_ca {
        match key_usage_bit(&ra, KU_DIGITAL_SIGNATURE) {
            Ok(None | Some(true)) => {}
            Ok(Some(false)) => {
                return err(
                    "the (signing) RA certificate's keyUsage lacks digitalSignature, so its CertReps would not verify"
                        .into(),
                );
            }
            Err(e) => return err(format!("RA certificate keyUsage does not parse: {e}")),
        }
    }
    for (i, enc) in encryption_ras.iter().enumerate() {
        let cert = match CertificateRef::parse(&enc.certificate) {
            Ok(c) => c,
            Err(e) => return err(format!("encryption RA certificate #{i} does not parse: {e}")),
        };
        if cert.spki.raw != enc.key.spki_der() {
            return err(format!("encryption RA certificate #{i} and its private key do not match"));
        }
        let repeated = enc.certificate == config.ra.certificate
            || config.ca_chain.contains(&enc.certificate)
            || encryption_ras[..i].iter().any(|other| other.certificate == enc.certificate);
        if repeated {
            return err(format!(
                "encryption RA certificate #{i} is already published (as the signing RA, a CA or another encryption RA)"
            ));
        }
    }
    // RFC 8894 §3.2.2: requests are encrypted by CMS key transport, which
    // needs an RSA key; an ECDSA signing RA only signs CertReps.
    for (i, enc) in encryption_ras.iter().enumerate() {
        if enc.key.as_rsa().is_none() {
            return err(format!(
                "encryption RA certificate #{i} has an {} key; an RA certificate that receives CMS key transport \
                 (RFC 8894 §3.2.2) needs an RSA key",
                enc.key.kind()
            ));
        }
    }
    if config.ra.key.as_rsa().is_none() && encryption_ras.is_empty() {
        return err(format!(
            "the signing RA key is {}, which cannot receive CMS key transport (RFC 8894 §3.2.2): an ECDSA signing RA \
             needs at least one RSA encryption RA certificate beside it",
            config.ra.key.kind()
        ));
    }
    if !encryption_ras.is_empty() && config.ca_cert_shape == CaCertShape::CaOnly {
        return err("ca-only GetCACert cannot publish encryption RA certificates; use the RA-and-chain shape".into());
    }
    let (ca_cert_body, ca_cert_content_type) = match config.ca_cert_shape {
        CaCertShape::CaOnly if !ra_is_ca => {
            return err(
                "ca-only GetCACert needs the RA to be the CA itself (clients encrypt to the one certificate they get)"
                    .into(),
            );
        }
        CaCertShape::CaOnly => (issuing_ca.clone(), CA_CERT),
        CaCertShape::RaAndChain if ra_is_ca && config.ca_chain.len() == 1 && encryption_ras.is_empty() => {
            (issuing_ca.clone(), CA_CERT)
        }
        CaCertShape::RaAndChain => {
            // Signing RA, encryption RA(s), issuing CA, ..., root: why this
            // order is documented at Engine::with_encryption_ras.
            let mut certs: Vec<&[u8]> = Vec::with_capacity(config.ca_chain.len() + 1 + encryption_ras.len());
            if !ra_is_ca {
                certs.push(&config.ra.certificate);
            }
            certs.extend(encryption_ras.iter().map(|r| r.certificate.as_slice()));
            certs.extend(config.ca_chain.iter().map(Vec::as_slice));
            (pkcs7::certs_only(&certs, &[]), CA_RA_CERT)
        }
    };
    Ok(Derived { caps: capabilities(config), ca_cert_body, ca_cert_content_type, encryption_ras })
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
        signature_form: engine.reply_signature.form_for(msg.signature_alg_oid),
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
    if let Err(e) = msg.verify_with(config.crypto.as_ref()) {
        return Err(Failure::new(e.fail_info(), "bad_signature", format!("request signature: {e}")));
    }
    let Some(signer) = msg.signer else {
        return Err(Failure::new(FailInfo::BAD_MESSAGE_CHECK, "bad_signature", "no signer certificate"));
    };
    reply.recipient_cert = signer.raw.to_vec();
    // RFC 8894 §3.2.2, §3.3.2: every reply with content is a pkcsPKIEnvelope
    // encrypted to this certificate with key transport, which only an RSA
    // key can receive. Refuse now, before a certificate is issued or a
    // one-time challenge consumed for a requester that could never open it.
    if signer.spki.algorithm != crate::oid::RSA_ENCRYPTION {
        return Err(Failure::new(
            FailInfo::BAD_ALG,
            "bad_recipient",
            "the signer certificate's key is not RSA: the reply is encrypted to it with RSA key transport \
             (RFC 8894 §3.2.2); sign the request with an RSA key",
        ));
    }
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
    let opened = engine.open_envelope(&msg.content)?;
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
    if csr.verify_signature_with(config.crypto.as_ref()).is_err() {
        return Err(Failure::new(FailInfo::BAD_MESSAGE_CHECK, "bad_csr", "PKCS#10 signature does not verify"));
    }
    let sans = csr
        .subject_alt_names()
        .map_err(|e| Failure::new(FailInfo::BAD_REQUEST, "bad_csr", format!("subjectAltName: {e}")))?;
    outcome.subject_alt_names = sans.iter().map(ToString::to_string).collect();
    // Authenticate before applying policy, so an unauthenticated client learns
    // nothing about the profile's policy and the audit label names the real cause.
    //
    // Renewal by certificate (RFC 8894 §3.3.1.2) needs a certificate of our CA,
    // valid now, on a profile that allows it, within the renewal window. What
    // the certificate alone cannot tell (issued on this profile, not renewed
    // before) the issuer checks against its records.
    let ours = engine.issued_by_our_ca(signer, now);
    let not_renewable = if ours { renewal_refusal(config, signer, now) } else { None };
    let renewal_of = if ours && not_renewable.is_none() {
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
    // renewal with a challenge still passes the same gates as a first
    // enrolment; one without (only when the operator allows it) counts
    // against the device's rate limit and is audited as an Intune action.
    // A certificate that may not renew here enrols with a challenge like
    // any other requester.
    let intune_challenge = match (&config.intune, &csr.challenge_password) {
        (Some(v), Some(c)) if intune::looks_intune_shaped(c) => Some((v, c.as_str())),
        _ => None,
    };
    // In Intune API mode a renewal presenting a challenge is validated by
    // Intune like a first enrolment (Intune devices renew with a fresh one).
    let api_renewal_challenge =
        matches!(config.challenge, ChallengePolicy::IntuneApi) && csr.challenge_password.is_some();
    let authorization = match (renewal_of, intune_challenge) {
        (Some(_), None) if api_renewal_challenge => check_challenge(engine, &csr, &sans, now, outcome)?
            .ok_or_else(|| Failure::new(FailInfo::BAD_REQUEST, "bad_challenge", "CSR carries no challenge password"))?,
        (Some(_), Some((validator, challenge))) => check_intune(validator, challenge, &csr, &sans, now, outcome)?,
        (Some(old), None) => {
            let mut intune_rate_subject = None;
            if let Some(validator) = &config.intune {
                outcome.intune_renewal = true;
                let subject = name_to_string(old.subject);
                validator
                    .admit_certificate_renewal(&subject, now)
                    .map_err(|r| Failure::new(r.fail_info, r.label.as_str(), r.detail))?;
                intune_rate_subject = Some(subject);
            }
            Authorization::ExistingCertificate { serial: old.serial.to_vec(), intune_rate_subject }
        }
        (None, _) => check_challenge(engine, &csr, &sans, now, outcome)?.ok_or_else(|| {
            not_renewable.unwrap_or_else(|| {
                Failure::new(FailInfo::BAD_REQUEST, "bad_challenge", "CSR carries no challenge password")
            })
        })?,
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
    let sid_extension = requested_sid_extension(config, &csr, outcome)?;

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
        sid_extension,
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

/// Why a certificate of our CA, valid now, may not renew on this profile
/// (`None`: it may, subject to the issuer's records). A request it signs
/// without a challenge is refused with this; with a challenge it enrols.
fn renewal_refusal(config: &ProfileConfig, signer: &CertificateRef<'_>, now: UnixTime) -> Option<Failure> {
    let policy = &config.renewal;
    if !policy.enabled {
        return Some(Failure::new(
            FailInfo::BAD_REQUEST,
            "renewal_disabled",
            "renewal by certificate is disabled on this profile (renewal = false): enrol with a challenge",
        ));
    }
    let intune_profile = config.intune.is_some() || matches!(config.challenge, ChallengePolicy::IntuneApi);
    if intune_profile && !policy.on_intune_profile {
        return Some(Failure::new(
            FailInfo::BAD_REQUEST,
            "renewal_disabled",
            "this Intune profile renews with a fresh Intune challenge, not by certificate \
             (intune_renewal_by_certificate = false)",
        ));
    }
    if let Some(window) = policy.window_secs
        && signer.not_after.secs().saturating_sub(now.secs()) > window
    {
        return Some(Failure::new(
            FailInfo::BAD_REQUEST,
            "renewal_outside_window",
            format!(
                "certificate {} expires at {}, more than {} days from now (renewal_window_days): \
                 renew later or enrol with a challenge",
                hex(signer.serial),
                signer.not_after.to_rfc3339(),
                window / 86_400
            ),
        ));
    }
    None
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
        // Validated by Intune (validateRequest) in the transport, after the
        // rest of the request is authorised.
        ChallengePolicy::IntuneApi => Ok(csr.challenge_password.as_ref().map(|given| {
            Authorization::IntuneApiChallenge { challenge: crate::issue::ChallengeSecret::new(given.clone()) }
        })),
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
            Ok(Authorization::Intune {
                subject: id.subject,
                issuer: id.issuer,
                nonce: id.nonce,
                replay_scope: claims.replay_scope,
                replay_until: claims.replay_until,
            })
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
    crate::crypto::constant_time_eq(&da, &db)
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
        // KB5014754 strong mapping: a SID URI must carry a well-formed SID.
        if let SubjectAltName::Uri(uri) = san
            && let Some(sid) = crate::strong_mapping::sid_of_uri(uri)
            && !crate::strong_mapping::is_security_identifier(sid)
        {
            return Err(Failure::new(
                FailInfo::BAD_REQUEST,
                "bad_csr",
                format!("subjectAltName {san}: {sid:?} is not a security identifier (S-1-...)"),
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

/// The SID extension (KB5014754) to copy into the certificate: the CSR's
/// requested one when the profile trusts it and it is well-formed (else
/// badRequest), `None` when the CSR asks for none or the profile does not trust
/// it (then the drop is noted in the outcome's detail for the audit log).
fn requested_sid_extension(
    config: &ProfileConfig,
    csr: &CsrRef<'_>,
    outcome: &mut Outcome,
) -> Result<Option<Vec<u8>>, Failure> {
    let requested = csr
        .extension(crate::oid::MS_NTDS_CA_SECURITY_EXT)
        .map_err(|e| Failure::new(FailInfo::BAD_REQUEST, "bad_csr", format!("extensionRequest: {e}")))?;
    let Some((_, value)) = requested else { return Ok(None) };
    if !config.issuance.trust_requested_sid {
        outcome.detail = Some(
            "the CSR's SID extension (1.3.6.1.4.1.311.25.2) was not copied: this profile does not trust requested SIDs"
                .into(),
        );
        return Ok(None);
    }
    crate::strong_mapping::parse_sid_extension(value).map_err(|e| {
        Failure::new(FailInfo::BAD_REQUEST, "bad_csr", format!("SID extension (1.3.6.1.4.1.311.25.2): {e}"))
    })?;
    Ok(Some(value.to_vec()))
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
    /// Opens a request's pkcsPKIEnvelope with the key of whichever published
    /// RA certificate its RecipientInfo names (RFC 5652 §6.2.1): the signing RA
    /// or an encryption RA. The CA's key is not among them (unless the CA is
    /// the signing RA), so a request encrypted to a CA that is not the RA is
    /// refused with badMessageCheck, label `unknown_recipient`.
    fn open_envelope(&self, content: &[u8]) -> Result<envelope::Opened, Failure> {
        let config = &self.config;
        let internal = |e: crate::wire::DecodeError| {
            Failure::new(FailInfo::BAD_REQUEST, "internal_error", format!("RA certificate: {e}"))
        };
        let mut recipients = Vec::with_capacity(1 + self.derived.encryption_ras.len());
        for ra in std::iter::once(&config.ra).chain(&self.derived.encryption_ras) {
            // Only RSA RA keys receive key transport (an ECDSA signing RA is
            // left out: a request naming it finds no recipient).
            let Some(key) = ra.key.as_rsa() else { continue };
            recipients.push(envelope::Recipient {
                certificate: CertificateRef::parse(&ra.certificate).map_err(internal)?,
                key,
            });
        }
        envelope::open_for_with(
            config.crypto.as_ref(),
            content,
            &recipients,
            &config.algorithms.ciphers,
            config.rng.as_ref(),
        )
        .map_err(|e| match e {
            envelope::EnvelopeError::NoRecipient => {
                let named = envelope::recipient_names(content).map(|n| n.join("; ")).unwrap_or_default();
                Failure::new(
                    e.fail_info(),
                    "unknown_recipient",
                    format!(
                        "pkcsPKIEnvelope is encrypted to [{named}], none of which is an RSA RA certificate of this \
                         profile (a CA certificate's key is never used to decrypt unless the CA is the RA; an ECDSA \
                         signing RA cannot receive key transport)"
                    ),
                )
            }
            envelope::EnvelopeError::KeyUnavailable => {
                Failure::new(e.fail_info(), RA_KEY_UNAVAILABLE, format!("pkcsPKIEnvelope: {e}"))
            }
            _ => Failure::new(e.fail_info(), "decrypt_failed", format!("pkcsPKIEnvelope: {e}")),
        })
    }

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
    ) -> Result<Vec<u8>, ReplyError> {
        let config = &self.config;
        let ra_cert = CertificateRef::parse(&config.ra.certificate)
            .map_err(|e| ReplyError { detail: format!("RA certificate: {e}"), key_unavailable: false })?;
        let builder = certrep::CertRepBuilder {
            ra_cert,
            ra_key: &config.ra.key,
            digest: reply.digest,
            signature_form: reply.signature_form,
            transaction_id: &reply.transaction_id,
            recipient_nonce: &reply.recipient_nonce,
            signing_time: now,
        };
        builder.build(status, config.rng.as_ref()).map_err(|e| ReplyError {
            key_unavailable: matches!(&e, certrep::CertRepError::Sign(k) if k.is_unavailable()),
            detail: e.to_string(),
        })
    }

    /// A signed CertRep FAILURE (RFC 8894 §3.3.2.2).
    fn failure(&self, reply: &ReplyContext, mut outcome: Outcome, f: Failure, now: UnixTime) -> Response {
        if f.label == RA_KEY_UNAVAILABLE {
            // Not the client's fault and not a property of its ciphertext
            // (the key answers Ok(None) for every bad one): retry later.
            return internal_error(outcome, &ReplyError { detail: f.detail, key_unavailable: true });
        }
        outcome.pki_status = Some(PkiStatus::FAILURE);
        outcome.fail_info = Some(f.fail_info);
        outcome.label = f.label;
        outcome.detail = Some(f.detail);
        match self.certrep(reply, certrep::CertRepStatus::Failure(f.fail_info), now) {
            Ok(body) => Response { status: 200, content_type: PKI_MESSAGE, body, outcome },
            Err(e) => internal_error(outcome, &e),
        }
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
            IssueOutcome::RejectedAs { fail_info, label, reason } => {
                self.failure(&reply, outcome, Failure { fail_info, label, detail: reason }, now)
            }
            IssueOutcome::Unavailable { reason } => {
                outcome.label = STORE_UNAVAILABLE;
                outcome.detail = Some(reason);
                plain(503, "service unavailable: the issuer's store cannot be reached; retry later", outcome)
            }
        }
    }

    fn success(&self, reply: ReplyContext, mut outcome: Outcome, content: &[u8], now: UnixTime) -> Response {
        let sealed = CertificateRef::parse(&reply.recipient_cert).map_err(|e| e.to_string()).and_then(|recipient| {
            pkcs7::seal_with(self.config.crypto.as_ref(), content, &recipient, reply.cipher, self.config.rng.as_ref())
                .map_err(|e| e.to_string())
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

/// The outcome label of a request answered 503 because an RA key (e.g. in
/// a PKCS#11 token that is gone) could not be used.
pub(crate) const RA_KEY_UNAVAILABLE: &str = "ra_key_unavailable";

/// The outcome label of a request answered 503 because the issuer's store
/// (e.g. the local CA's shared certificate index) could not be reached.
pub(crate) const STORE_UNAVAILABLE: &str = "store_unavailable";

/// Why no CertRep could be produced.
struct ReplyError {
    detail: String,
    /// The RA key cannot be reached at the moment ([`crate::crypto::KeyError::is_unavailable`]).
    key_unavailable: bool,
}

/// 500, or 503 when the RA key is unavailable (a token that is gone: the
/// client retries later, RFC 8894 §3.3.2 leaves transport errors to it).
fn internal_error(mut outcome: Outcome, e: &ReplyError) -> Response {
    outcome.detail = Some(e.detail.clone());
    if e.key_unavailable {
        outcome.label = RA_KEY_UNAVAILABLE;
        return plain(503, "the RA key is unavailable; retry later", outcome);
    }
    outcome.label = "internal_error";
    plain(500, "internal error building the reply", outcome)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::{AlgorithmPolicy, KeyPolicy, RaIdentity, RenewalPolicy, ReplySignaturePolicy};
    use crate::crypto::{RaKey, RandomSource, RsaPrivateKey};
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
            ra: RaIdentity { certificate: ra_cert(), key: RsaPrivateKey::from_der(&key).unwrap().into() },
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
            crypto: crate::crypto::default_provider().clone(),
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
    fn intune_api_mode_hands_out_challenge_csr_and_transaction_id_and_the_transport_can_refuse() {
        let mut c = config("unused", all_ciphers());
        c.challenge = ChallengePolicy::IntuneApi;
        let e = Engine::new(c).unwrap();
        for client in CLIENTS {
            let body = read(&format!("{client}-pkcsreq.der"));
            let req = PkiMessageRef::parse(&body).unwrap();
            let pending = match e.handle(post(&body), CAPTURE_TIME) {
                Action::Issue(p) => p,
                Action::Respond(r) => panic!("{client}: {:?}", r.outcome),
            };
            assert!(pending.one_time_challenge().is_none(), "{client}: not a one-time challenge");
            let enrol = pending.intune_api_challenge().expect("an Intune API challenge to validate");
            let Authorization::IntuneApiChallenge { challenge } = &enrol.authorization else {
                panic!("{client}: {:?}", enrol.authorization)
            };
            assert_eq!(challenge.expose(), "secret123", "{client}");
            assert_eq!(enrol.transaction_id, req.transaction_id, "{client}");
            // The decrypted PKCS#10, challengePassword intact, for validateRequest.
            let csr = CsrRef::parse(&enrol.csr_der).expect("the handed-out CSR parses");
            assert_eq!(csr.challenge_password.as_deref(), Some("secret123"), "{client}");
            assert!(!format!("{pending:?}").contains("secret123"), "{client}: the secret leaks into Debug");
            let r = pending.refuse(FailInfo::BAD_REQUEST, "intune_rejected", "ChallengeExpired", CAPTURE_TIME);
            assert_eq!(cert_rep(&r, &req), (PkiStatus::FAILURE, Some(FailInfo::BAD_REQUEST), 0), "{client}");
            assert_eq!(r.outcome.label, "intune_rejected");
        }
    }

    #[test]
    fn single_des_needs_explicit_opt_in() {
        let e = Engine::new(config("secret123", AlgorithmPolicy::default().ciphers)).unwrap();
        let body = read("scepclient-pkcsreq.der");
        let req = PkiMessageRef::parse(&body).unwrap();
        let r = respond(e.handle(post(&body), CAPTURE_TIME));
        assert_eq!(cert_rep(&r, &req), (PkiStatus::FAILURE, Some(FailInfo::BAD_ALG), 0));
        // docs/troubleshooting.md documents this label and detail for a disallowed cipher.
        assert_eq!(r.outcome.label, "decrypt_failed");
        assert_eq!(r.outcome.detail.as_deref(), Some("pkcsPKIEnvelope: content encryption DES-CBC not allowed"));
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

    /// An issuer whose store is unreachable: 503 (no CertRep, nothing
    /// issued), labelled `store_unavailable`, its reason kept for the audit.
    #[test]
    fn an_unavailable_issuer_store_is_answered_503() {
        let e = engine();
        let body = read("jscep-pkcsreq.der");
        let Action::Issue(p) = e.handle(post(&body), CAPTURE_TIME) else { panic!() };
        let r = p.resume(IssueOutcome::Unavailable { reason: "index down".into() }, CAPTURE_TIME);
        assert_eq!(r.status, 503);
        assert!(r.content_type.starts_with("text/plain"));
        assert_eq!((r.outcome.label, r.outcome.detail.as_deref()), ("store_unavailable", Some("index down")));
        assert_eq!(r.outcome.pki_status, None);
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
        c.ra.key = other.into();
        assert!(Engine::new(c).unwrap_err().0.contains("do not match"));
    }

    // -----------------------------------------------------------------------
    // RA arrangements (single, NDES) and the reply's signature form
    // -----------------------------------------------------------------------

    /// keyUsage digitalSignature only (NDES's signing RA): BIT STRING 07 80.
    const KU_SIGNING: &[u8] = &[0x03, 0x02, 0x07, 0x80];
    /// keyUsage keyEncipherment only (NDES's encryption RA): BIT STRING 05 20.
    const KU_ENCRYPTION: &[u8] = &[0x03, 0x02, 0x05, 0x20];

    /// An RA certificate (CA:FALSE, the given keyUsage, a subjectKeyIdentifier)
    /// for a fresh RSA key, issued by the captures' recipient certificate acting
    /// as the CA (its key signs), so that OpenSSL can verify the chain.
    fn issued_ra(cn: &str, serial: u64, key_usage: &[u8]) -> RaIdentity {
        issued_ra_with(cn, serial, key_usage, RsaPrivateKey::generate(2048).unwrap().0.into())
    }

    /// As [`issued_ra`], for the given key (RSA or ECDSA).
    fn issued_ra_with(cn: &str, serial: u64, key_usage: &[u8], key: RaKey) -> RaIdentity {
        use crate::wire::{Writer, tag};
        let ca_der = ra_cert();
        let ca = CertificateRef::parse(&ca_der).unwrap();
        let ca_key = RsaPrivateKey::from_der(
            &crate::pem::private_key(&String::from_utf8(read("recipient-key.pem")).unwrap()).unwrap(),
        )
        .unwrap();
        let spki = crate::x509::SubjectPublicKeyInfoRef::parse(key.spki_der()).unwrap();
        let extension = |w: &mut Writer, ext: &[u8], critical: bool, value: &[u8]| {
            w.sequence(|w| {
                w.oid(ext);
                if critical {
                    w.boolean(true);
                }
                w.octet_string(value);
            });
        };
        let mut tbs = Writer::new();
        tbs.sequence(|w| {
            w.nested(tag::context_constructed(0), |w| {
                w.small_uint(2);
            });
            w.small_uint(serial);
            w.sequence(|w| {
                w.oid(crate::oid::SHA256_WITH_RSA).null();
            });
            w.raw(ca.subject);
            w.sequence(|w| {
                CAPTURE_TIME.plus(-86_400).write_asn1(w);
                CAPTURE_TIME.plus(365 * 86_400).write_asn1(w);
            });
            w.sequence(|w| {
                w.set(|w| {
                    w.sequence(|w| {
                        w.oid(crate::oid::COMMON_NAME).utf8_string(cn);
                    });
                });
            });
            w.raw(key.spki_der());
            w.nested(tag::context_constructed(3), |w| {
                w.sequence(|w| {
                    extension(w, crate::oid::BASIC_CONSTRAINTS, true, &[0x30, 0x00]);
                    extension(w, crate::oid::KEY_USAGE, true, key_usage);
                    let ski = crate::wire::encode_tlv(tag::OCTET_STRING, &DigestAlg::Sha1.digest(spki.key));
                    extension(w, crate::oid::SUBJECT_KEY_IDENTIFIER, false, &ski);
                });
            });
        });
        let tbs = tbs.into_vec();
        let signature = ca_key.sign(DigestAlg::Sha256, &tbs).unwrap();
        let mut w = Writer::new();
        w.sequence(|w| {
            w.raw(&tbs);
            w.sequence(|w| {
                w.oid(crate::oid::SHA256_WITH_RSA).null();
            });
            w.bit_string(&signature);
        });
        RaIdentity { certificate: w.into_vec(), key }
    }

    /// The captures' recipient key as an RA identity.
    fn recipient_ra() -> RaIdentity {
        let key = crate::pem::private_key(&String::from_utf8(read("recipient-key.pem")).unwrap()).unwrap();
        RaIdentity { certificate: ra_cert(), key: RsaPrivateKey::from_der(&key).unwrap().into() }
    }

    /// An NDES-arranged engine: `signing` signs, `encryption` is published
    /// beside it. The CA is the captures' recipient certificate, which issued
    /// the RA certificates, except when that certificate is the encryption RA
    /// (a CA certificate cannot also be published as an encryption RA): then a
    /// stand-in certificate plays the CA (the engine does not check the chain).
    fn ndes_engine(signing: RaIdentity, encryption: RaIdentity) -> Engine {
        ndes_engine_with_challenge("secret123", signing, encryption)
    }

    fn ndes_engine_with_challenge(challenge: &str, signing: RaIdentity, encryption: RaIdentity) -> Engine {
        let mut c = config(challenge, all_ciphers());
        if encryption.certificate == ra_cert() {
            c.ca_chain = vec![issued_ra("stand-in CA", 0x99, &[0x03, 0x02, 0x01, 0x06]).certificate];
        }
        c.ra = signing;
        Engine::with_encryption_ras(c, vec![encryption]).unwrap()
    }

    fn get_ca_cert(e: &Engine) -> Response {
        respond(e.handle(Request { method: Method::Get, operation: "GetCACert", message: Message::None }, CAPTURE_TIME))
    }

    /// Enrols `client`'s capture and returns the SUCCESS CertRep after checking
    /// it is signed by `signer`.
    fn enrol_capture(e: &Engine, client: &str, signer: &[u8]) -> Response {
        let body = read(&format!("{client}-pkcsreq.der"));
        let pending = match e.handle(post(&body), CAPTURE_TIME) {
            Action::Issue(p) => p,
            Action::Respond(r) => panic!("{client}: {:?}", r.outcome),
        };
        let r = pending.resume(IssueOutcome::Issued { certificate: ra_cert(), chain: vec![] }, CAPTURE_TIME);
        let rep = PkiMessageRef::parse(&r.body).unwrap();
        rep.verify().unwrap();
        assert_eq!(rep.pki_status, Some(PkiStatus::SUCCESS), "{client}: {:?}", r.outcome);
        assert_eq!(rep.signer.unwrap().raw, signer, "{client}: the CertRep is signed by the signing RA");
        r
    }

    #[test]
    fn ndes_arrangement_publishes_signing_ra_then_encryption_ra_then_the_chain() {
        let signing = issued_ra("scepd RA signing", 0x51, KU_SIGNING);
        let encryption = issued_ra("scepd RA encryption", 0x52, KU_ENCRYPTION);
        let (sig_der, enc_der) = (signing.certificate.clone(), encryption.certificate.clone());
        let e = ndes_engine(signing, encryption);
        assert_eq!(e.encryption_ras().len(), 1);
        let r = get_ca_cert(&e);
        assert_eq!((r.status, r.content_type), (200, CA_RA_CERT));
        assert_eq!(r.body, pkcs7::certs_only(&[&sig_der, &enc_der, &ra_cert()], &[]));
        // The single arrangement is unchanged: RA, then the chain.
        let mut c = config("secret123", all_ciphers());
        c.ra = issued_ra("scepd RA", 0x53, &[0x03, 0x02, 0x05, 0xa0]);
        let single_ra = c.ra.certificate.clone();
        let r = get_ca_cert(&Engine::new(c).unwrap());
        assert_eq!(r.body, pkcs7::certs_only(&[&single_ra, &ra_cert()], &[]));
        // The CA as the signing RA, with an encryption RA: the CA is published once.
        let mut c = config("secret123", all_ciphers());
        c.ra = recipient_ra();
        let enc = issued_ra("scepd RA encryption", 0x54, KU_ENCRYPTION);
        let enc_der = enc.certificate.clone();
        let r = get_ca_cert(&Engine::with_encryption_ras(c, vec![enc]).unwrap());
        assert_eq!((r.content_type, r.body), (CA_RA_CERT, pkcs7::certs_only(&[&enc_der, &ra_cert()], &[])));
    }

    #[test]
    fn requests_encrypted_to_the_encryption_ra_decrypt_and_enrol() {
        // The captures are encrypted to the recipient certificate: here it is
        // the encryption RA. Replies come from the signing RA.
        let signing = issued_ra("scepd RA signing", 0x61, KU_SIGNING);
        let sig_der = signing.certificate.clone();
        let e = ndes_engine(signing, recipient_ra());
        for client in CLIENTS {
            let r = enrol_capture(&e, client, &sig_der);
            assert_eq!(r.outcome.label, "success");
        }
    }

    #[test]
    fn requests_encrypted_to_the_signing_ra_decrypt_and_enrol() {
        // sscep encrypts to ca.crt-0, the signing RA: its key decrypts too.
        let e = ndes_engine(recipient_ra(), issued_ra("scepd RA encryption", 0x71, KU_ENCRYPTION));
        for client in CLIENTS {
            enrol_capture(&e, client, &ra_cert());
        }
    }

    #[test]
    fn requests_encrypted_to_the_ca_or_an_unknown_certificate_are_bad_message_check() {
        // The captures' recipient is the CA; neither RA is: the CA key is never tried.
        let signing = issued_ra("scepd RA signing", 0x81, KU_SIGNING);
        let sig_der = signing.certificate.clone();
        let ndes = ndes_engine(signing, issued_ra("scepd RA encryption", 0x82, KU_ENCRYPTION));
        let mut c = config("secret123", all_ciphers());
        c.ra = issued_ra("scepd RA", 0x83, &[0x03, 0x02, 0x05, 0xa0]);
        let single_der = c.ra.certificate.clone();
        let single = Engine::new(c).unwrap();
        let ca = CertificateRef::parse(&ra_cert()).unwrap().subject.to_vec();
        for (e, signer) in [(&ndes, &sig_der), (&single, &single_der)] {
            for client in CLIENTS {
                let body = read(&format!("{client}-pkcsreq.der"));
                let req = PkiMessageRef::parse(&body).unwrap();
                let r = respond(e.handle(post(&body), CAPTURE_TIME));
                let rep = PkiMessageRef::parse(&r.body).unwrap();
                rep.verify().unwrap();
                assert_eq!(rep.signer.unwrap().raw, signer.as_slice());
                assert_eq!(rep.recipient_nonce, Some(req.sender_nonce));
                assert_eq!(
                    (rep.pki_status, rep.fail_info),
                    (Some(PkiStatus::FAILURE), Some(FailInfo::BAD_MESSAGE_CHECK))
                );
                assert_eq!(r.outcome.label, "unknown_recipient", "{client}");
                let detail = r.outcome.detail.unwrap();
                assert!(detail.contains(&name_to_string(&ca)), "{client}: {detail}");
            }
        }
    }

    #[test]
    fn encryption_ra_configuration_errors_are_named() {
        let ndes_config = || {
            let mut c = config("x", all_ciphers());
            c.ra = issued_ra("scepd RA signing", 0x91, KU_SIGNING);
            c
        };
        let same_as_signer = {
            let c = ndes_config();
            let copy = RaIdentity {
                certificate: c.ra.certificate.clone(),
                key: RsaPrivateKey::from_der(&[]).map_or_else(|_| issued_ra("x", 1, KU_SIGNING).key, RaKey::from),
            };
            Engine::with_encryption_ras(c, vec![copy]).unwrap_err()
        };
        assert!(same_as_signer.0.contains("do not match") || same_as_signer.0.contains("already published"));
        let the_ca = Engine::with_encryption_ras(ndes_config(), vec![recipient_ra()]);
        assert!(the_ca.unwrap_err().0.contains("already published"));
        let enc = issued_ra("scepd RA encryption", 0x92, KU_ENCRYPTION);
        let (other_key, _) = RsaPrivateKey::generate(2048).unwrap();
        let mismatched = RaIdentity { certificate: enc.certificate.clone(), key: other_key.into() };
        assert!(Engine::with_encryption_ras(ndes_config(), vec![mismatched]).unwrap_err().0.contains("do not match"));
        let mut ca_only = ndes_config();
        ca_only.ca_cert_shape = CaCertShape::CaOnly;
        assert!(Engine::with_encryption_ras(ca_only, vec![enc]).unwrap_err().0.contains("ca-only"));
        // A signing RA whose keyUsage forbids signatures cannot sign CertReps.
        let mut c = config("x", all_ciphers());
        c.ra = issued_ra("scepd RA encryption", 0x93, KU_ENCRYPTION);
        assert!(Engine::new(c).unwrap_err().0.contains("digitalSignature"));
    }

    /// The signatureAlgorithm a CertRep carries for a request under `policy`.
    fn expected_reply_signature(policy: ReplySignaturePolicy, req: &PkiMessageRef<'_>) -> &'static [u8] {
        if policy == ReplySignaturePolicy::MirrorRequest && req.signature_alg_oid != crate::oid::RSA_ENCRYPTION {
            req.digest.unwrap().for_reply().rsa_signature_oid()
        } else {
            crate::oid::RSA_ENCRYPTION
        }
    }

    #[test]
    fn reply_signature_algorithm_follows_the_profile_policy() {
        // What each client sends (RFC 5652 §5.3 signatureAlgorithm), and so what
        // a mirroring profile answers; by default every reply is rsaEncryption.
        let sent: [(&str, &[u8]); 6] = [
            ("sscep", crate::oid::RSA_ENCRYPTION),
            ("certmonger", crate::oid::RSA_ENCRYPTION),
            ("pyscep", crate::oid::RSA_ENCRYPTION),
            ("scepreq", crate::oid::RSA_ENCRYPTION),
            ("jscep", crate::oid::SHA256_WITH_RSA),
            ("scepclient", crate::oid::SHA1_WITH_RSA),
        ];
        for policy in [ReplySignaturePolicy::RsaEncryption, ReplySignaturePolicy::MirrorRequest] {
            assert_eq!(engine().with_reply_signature(policy).reply_signature(), policy);
            let wrong_password =
                Engine::new(config("not-the-password", all_ciphers())).unwrap().with_reply_signature(policy);
            for (client, sent_oid) in sent {
                let body = read(&format!("{client}-pkcsreq.der"));
                let req = PkiMessageRef::parse(&body).unwrap();
                assert_eq!(req.signature_alg_oid, sent_oid, "{client}");
                let oid = expected_reply_signature(policy, &req);
                let e = engine().with_reply_signature(policy);
                // SUCCESS
                let r = enrol_capture(&e, client, &ra_cert());
                let rep = PkiMessageRef::parse(&r.body).unwrap();
                assert_eq!(rep.signature_alg_oid, oid, "{policy:?} {client}: SUCCESS");
                assert_eq!(rep.digest, Some(req.digest.unwrap().for_reply()), "{client}");
                // FAILURE (wrong challenge) and the issuer's PENDING
                let r = respond(wrong_password.handle(post(&body), CAPTURE_TIME));
                let rep = PkiMessageRef::parse(&r.body).unwrap();
                rep.verify().unwrap();
                assert_eq!((rep.pki_status, rep.signature_alg_oid), (Some(PkiStatus::FAILURE), oid), "{client}");
                let Action::Issue(p) = e.handle(post(&body), CAPTURE_TIME) else { panic!("{client}") };
                let r = p.resume(IssueOutcome::Pending, CAPTURE_TIME);
                assert_eq!(PkiMessageRef::parse(&r.body).unwrap().signature_alg_oid, oid, "{client}: PENDING");
            }
        }
        // The mirror really differs: jscep's sha256WithRSAEncryption comes back as such.
        let jscep = read("jscep-pkcsreq.der");
        let req = PkiMessageRef::parse(&jscep).unwrap();
        assert_eq!(expected_reply_signature(ReplySignaturePolicy::MirrorRequest, &req), crate::oid::SHA256_WITH_RSA);
        // scepclient's sha1WithRSAEncryption: the reply's digest is raised to SHA-256.
        let scepclient = read("scepclient-pkcsreq.der");
        let req = PkiMessageRef::parse(&scepclient).unwrap();
        assert_eq!(expected_reply_signature(ReplySignaturePolicy::MirrorRequest, &req), crate::oid::SHA256_WITH_RSA);
    }

    /// Runs openssl; the test fails when it is not installed.
    fn openssl(args: &[&str]) -> (bool, Vec<u8>, String) {
        let o = std::process::Command::new("openssl")
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("this test needs the openssl CLI (apt-get install openssl): {e}"));
        (o.status.success(), o.stdout, String::from_utf8_lossy(&o.stderr).into_owned())
    }

    #[test]
    fn replies_in_either_signature_form_verify_with_openssl_through_the_chain() {
        let dir = std::env::temp_dir().join(format!("scep-engine-reply-form-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let ca_pem = format!("{VECTORS}recipient-cert.pem");
        let signing = issued_ra("scepd RA signing", 0xa1, KU_SIGNING);
        let sig_der = signing.certificate.clone();
        let ndes = ndes_engine(signing, recipient_ra());
        let wrong_password = {
            let signing = issued_ra("scepd RA signing", 0xa2, KU_SIGNING);
            let signer = signing.certificate.clone();
            (ndes_engine_with_challenge("not-the-password", signing, recipient_ra()), signer)
        };
        // certmonger and sscep send rsaEncryption, jscep sha256WithRSAEncryption;
        // replies in both forms (default and mirrored) verify.
        let policies = [ReplySignaturePolicy::RsaEncryption, ReplySignaturePolicy::MirrorRequest];
        for (policy, client) in policies.into_iter().flat_map(|p| ["certmonger", "sscep", "jscep"].map(|c| (p, c))) {
            let body = read(&format!("{client}-pkcsreq.der"));
            let req = PkiMessageRef::parse(&body).unwrap();
            let success = enrol_capture(&ndes.clone().with_reply_signature(policy), client, &sig_der).body;
            let failure =
                respond(wrong_password.0.clone().with_reply_signature(policy).handle(post(&body), CAPTURE_TIME)).body;
            for (what, der, signer) in [("success", &success, &sig_der), ("failure", &failure, &wrong_password.1)] {
                let rep = PkiMessageRef::parse(der).unwrap();
                assert_eq!(rep.signature_alg_oid, expected_reply_signature(policy, &req), "{client} {what}");
                assert_eq!(rep.signer.unwrap().raw, signer.as_slice());
                let path = dir.join(format!("{client}-{what}.der"));
                std::fs::write(&path, der).unwrap();
                let path = path.to_str().unwrap();
                // Signature and the RA's chain to the CA, as PKCS7_verify (sscep,
                // certmonger) and CMS_verify check them.
                let (ok, content, err) =
                    openssl(&["smime", "-verify", "-inform", "DER", "-binary", "-CAfile", &ca_pem, "-in", path]);
                assert!(ok, "{client} {what}: openssl smime -verify: {err}");
                assert_eq!(Some(&content[..]), Some(&rep.content[..]), "{client} {what}");
                let (ok, _, err) =
                    openssl(&["cms", "-verify", "-inform", "DER", "-binary", "-CAfile", &ca_pem, "-in", path]);
                assert!(ok, "{client} {what}: openssl cms -verify: {err}");
                // The check can fail: a flipped signature bit does not verify.
                let mut tampered = der.clone();
                let n = tampered.len();
                tampered[n - 5] ^= 1;
                let bad = dir.join(format!("{client}-{what}-tampered.der"));
                std::fs::write(&bad, &tampered).unwrap();
                let bad = bad.to_str().unwrap();
                assert!(!openssl(&["cms", "-verify", "-inform", "DER", "-binary", "-CAfile", &ca_pem, "-in", bad]).0);
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// An ECDSA signing RA (keyUsage digitalSignature) on `curve`, issued by
    /// the captures' recipient certificate.
    fn ecdsa_signing_ra(curve: crate::crypto::EcCurve, serial: u64) -> RaIdentity {
        let (key, _) = crate::crypto::EcdsaPrivateKey::generate(curve).unwrap();
        issued_ra_with(&format!("scepd RA signing {}", curve.name()), serial, KU_SIGNING, key.into())
    }

    /// The DER AlgorithmIdentifier `{ ecdsa-with-SHA*, parameters absent }`
    /// (RFC 5758 §3.2) for `digest`.
    fn ecdsa_algorithm_identifier(digest: DigestAlg) -> Vec<u8> {
        let mut w = crate::wire::Writer::new();
        w.sequence(|w| {
            w.oid(digest.ecdsa_signature_oid());
        });
        w.into_vec()
    }

    #[test]
    fn ecdsa_signing_ra_signs_every_reply_ecdsa_with_the_reply_digest() {
        // Issue 12: an EC signing RA with an RSA encryption RA beside it (the
        // captures are encrypted to the recipient certificate, here the
        // encryption RA). SUCCESS, FAILURE and PENDING are signed
        // ecdsa-with-SHAn after the reply digest, whatever the reply policy.
        use crate::crypto::EcCurve;
        let mut sha256_requests = 0;
        for (curve, serial) in [(EcCurve::P256, 0xb1), (EcCurve::P384, 0xb2)] {
            let signing = ecdsa_signing_ra(curve, serial);
            let sig_der = signing.certificate.clone();
            let failing = ecdsa_signing_ra(curve, serial + 0x10);
            let failing_der = failing.certificate.clone();
            let ndes = ndes_engine(signing, recipient_ra());
            let wrong_password = ndes_engine_with_challenge("not-the-password", failing, recipient_ra());
            for policy in [ReplySignaturePolicy::RsaEncryption, ReplySignaturePolicy::MirrorRequest] {
                let e = ndes.clone().with_reply_signature(policy);
                for client in CLIENTS {
                    let body = read(&format!("{client}-pkcsreq.der"));
                    let req = PkiMessageRef::parse(&body).unwrap();
                    let digest = req.digest.unwrap().for_reply();
                    let expected = digest.ecdsa_signature_oid();
                    if digest == DigestAlg::Sha256 {
                        sha256_requests += 1;
                        assert_eq!(expected, crate::oid::ECDSA_WITH_SHA256);
                    }
                    // SUCCESS: enrol_capture verifies the signature with the RA's EC key.
                    let r = enrol_capture(&e, client, &sig_der);
                    let rep = PkiMessageRef::parse(&r.body).unwrap();
                    assert_eq!((rep.signature_alg_oid, rep.digest), (expected, Some(digest)), "{curve:?} {client}");
                    let alg_id = ecdsa_algorithm_identifier(digest);
                    assert!(r.body.windows(alg_id.len()).any(|w| w == alg_id), "{client}: parameters must be absent");
                    // FAILURE (wrong challenge)
                    let r =
                        respond(wrong_password.clone().with_reply_signature(policy).handle(post(&body), CAPTURE_TIME));
                    let rep = PkiMessageRef::parse(&r.body).unwrap();
                    rep.verify().unwrap();
                    assert_eq!(rep.signer.unwrap().raw, failing_der.as_slice());
                    assert_eq!(
                        (rep.pki_status, rep.fail_info, rep.signature_alg_oid),
                        (Some(PkiStatus::FAILURE), Some(FailInfo::BAD_REQUEST), expected),
                        "{curve:?} {client}"
                    );
                    // PENDING
                    let Action::Issue(p) = e.handle(post(&body), CAPTURE_TIME) else { panic!("{client}") };
                    let r = p.resume(IssueOutcome::Pending, CAPTURE_TIME);
                    let rep = PkiMessageRef::parse(&r.body).unwrap();
                    rep.verify().unwrap();
                    assert_eq!((rep.pki_status, rep.signature_alg_oid), (Some(PkiStatus::PENDING), expected));
                }
            }
        }
        assert!(sha256_requests > 0, "no SHA-256 capture exercised ecdsa-with-SHA256");
    }

    #[test]
    fn ecdsa_signed_replies_verify_with_openssl_through_the_chain() {
        use crate::crypto::EcCurve;
        let dir = std::env::temp_dir().join(format!("scep-engine-ecdsa-reply-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let ca_pem = format!("{VECTORS}recipient-cert.pem");
        for (curve, serial) in [(EcCurve::P256, 0xc1), (EcCurve::P384, 0xc2)] {
            let signing = ecdsa_signing_ra(curve, serial);
            let sig_der = signing.certificate.clone();
            let ndes = ndes_engine(signing, recipient_ra());
            let failing = ecdsa_signing_ra(curve, serial + 0x10);
            let failing_der = failing.certificate.clone();
            let wrong_password = ndes_engine_with_challenge("not-the-password", failing, recipient_ra());
            for client in ["certmonger", "sscep", "jscep", "scepclient"] {
                let body = read(&format!("{client}-pkcsreq.der"));
                let req = PkiMessageRef::parse(&body).unwrap();
                let success = enrol_capture(&ndes, client, &sig_der).body;
                let failure = respond(wrong_password.handle(post(&body), CAPTURE_TIME)).body;
                for (what, der, signer) in [("success", &success, &sig_der), ("failure", &failure, &failing_der)] {
                    let rep = PkiMessageRef::parse(der).unwrap();
                    let digest = req.digest.unwrap().for_reply();
                    assert_eq!(rep.signature_alg_oid, digest.ecdsa_signature_oid(), "{curve:?} {client} {what}");
                    assert_eq!(rep.signer.unwrap().raw, signer.as_slice());
                    let path = dir.join(format!("{}-{client}-{what}.der", curve.name()));
                    std::fs::write(&path, der).unwrap();
                    let path = path.to_str().unwrap();
                    // PKCS7_verify (sscep, certmonger) and CMS_verify, signature and chain.
                    let (ok, content, err) =
                        openssl(&["smime", "-verify", "-inform", "DER", "-binary", "-CAfile", &ca_pem, "-in", path]);
                    assert!(ok, "{curve:?} {client} {what}: openssl smime -verify: {err}");
                    assert_eq!(content[..], rep.content[..], "{curve:?} {client} {what}");
                    let (ok, _, err) =
                        openssl(&["cms", "-verify", "-inform", "DER", "-binary", "-CAfile", &ca_pem, "-in", path]);
                    assert!(ok, "{curve:?} {client} {what}: openssl cms -verify: {err}");
                    // The check can fail: a flipped bit in the signature does not verify.
                    let mut tampered = der.clone();
                    let n = tampered.len();
                    tampered[n - 5] ^= 1;
                    let bad = dir.join(format!("{}-{client}-{what}-tampered.der", curve.name()));
                    std::fs::write(&bad, &tampered).unwrap();
                    let bad = bad.to_str().unwrap();
                    assert!(
                        !openssl(&["cms", "-verify", "-inform", "DER", "-binary", "-CAfile", &ca_pem, "-in", bad]).0
                    );
                }
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn ecdsa_ra_keys_never_receive_envelopes() {
        use crate::crypto::EcCurve;
        // The single arrangement with an ECDSA RA: nobody could encrypt to it.
        let mut c = config("x", all_ciphers());
        c.ra = ecdsa_signing_ra(EcCurve::P256, 0xd1);
        let e = Engine::new(c).unwrap_err();
        assert!(
            e.0.contains("signing RA key is ecdsa-p256") && e.0.contains("RSA encryption RA"),
            "the error names the key and the remedy: {e}"
        );
        // An ECDSA encryption RA, beside an RSA or an ECDSA signing RA.
        for signing in [issued_ra("scepd RA signing", 0xd2, KU_SIGNING), ecdsa_signing_ra(EcCurve::P384, 0xd3)] {
            let mut c = config("x", all_ciphers());
            c.ra = signing;
            let (key, _) = crate::crypto::EcdsaPrivateKey::generate(EcCurve::P384).unwrap();
            let enc = issued_ra_with("scepd RA encryption", 0xd4, KU_ENCRYPTION, key.into());
            let e = Engine::with_encryption_ras(c, vec![enc]).unwrap_err();
            assert!(e.0.contains("encryption RA certificate #0 has an ecdsa-p384 key"), "{e}");
        }
        // The captures encrypted to a CA that is neither RA stay unknown_recipient
        // with an ECDSA signing RA (its key is not tried), signed ECDSA.
        let signing = ecdsa_signing_ra(EcCurve::P256, 0xd5);
        let sig_der = signing.certificate.clone();
        let e = ndes_engine(signing, issued_ra("scepd RA encryption", 0xd6, KU_ENCRYPTION));
        let body = read("certmonger-pkcsreq.der");
        let r = respond(e.handle(post(&body), CAPTURE_TIME));
        let rep = PkiMessageRef::parse(&r.body).unwrap();
        rep.verify().unwrap();
        assert_eq!(rep.signer.unwrap().raw, sig_der.as_slice());
        assert_eq!((r.outcome.label, rep.fail_info), ("unknown_recipient", Some(FailInfo::BAD_MESSAGE_CHECK)));
        assert_eq!(rep.signature_alg_oid, crate::oid::ECDSA_WITH_SHA256);
    }

    fn intune_validator(limit: u32) -> intune::IntuneValidator {
        let settings = intune::IntuneSettings { per_device_rate_limit_24h: limit, ..intune::IntuneSettings::default() };
        let pool = intune::SharedPool::new(intune::TrustAnchorPool::default());
        intune::IntuneValidator::new("default", pool, settings, &Fixed).unwrap()
    }

    /// Issue 13 item 4: a certificate renews only within the renewal window
    /// before its notAfter; outside it, it must enrol with a challenge.
    #[test]
    fn renewal_window_is_measured_from_the_certificate_expiry() {
        let der = ra_cert();
        let signer = CertificateRef::parse(&der).unwrap();
        let expiry = signer.not_after;
        let mut c = config("x", all_ciphers());
        // Unset: any time while valid.
        assert!(renewal_refusal(&c, &signer, expiry.plus(-3000 * 86_400)).is_none());
        c.renewal.window_secs = Some(30 * 86_400);
        let early = renewal_refusal(&c, &signer, expiry.plus(-30 * 86_400 - 1)).unwrap();
        assert_eq!((early.fail_info, early.label), (FailInfo::BAD_REQUEST, "renewal_outside_window"));
        assert!(early.detail.contains("30 days") && early.detail.contains(&hex(signer.serial)), "{}", early.detail);
        assert!(renewal_refusal(&c, &signer, expiry.plus(-30 * 86_400)).is_none(), "the window's first second");
        assert!(renewal_refusal(&c, &signer, expiry.plus(-1)).is_none());
        c.renewal.enabled = false;
        let off = renewal_refusal(&c, &signer, expiry.plus(-1)).unwrap();
        assert_eq!(off.label, "renewal_disabled");
    }

    /// On an Intune profile renewal by certificate is off unless the operator
    /// turns it on.
    #[test]
    fn intune_profiles_renew_by_certificate_only_when_allowed() {
        let der = ra_cert();
        let signer = CertificateRef::parse(&der).unwrap();
        let now = signer.not_after.plus(-86_400);
        let mut c = config("x", all_ciphers());
        c.intune = Some(intune_validator(3));
        let refused = renewal_refusal(&c, &signer, now).unwrap();
        assert_eq!(refused.label, "renewal_disabled");
        assert!(refused.detail.contains("intune_renewal_by_certificate"), "{}", refused.detail);
        c.renewal.on_intune_profile = true;
        assert!(renewal_refusal(&c, &signer, now).is_none());
    }

    /// Intune API mode counts as an Intune profile: renewal by certificate
    /// (without a fresh challenge for Intune to validate) is off unless the
    /// operator turns it on.
    #[test]
    fn intune_api_profiles_renew_by_certificate_only_when_allowed() {
        let der = ra_cert();
        let signer = CertificateRef::parse(&der).unwrap();
        let now = signer.not_after.plus(-86_400);
        let mut c = config("x", all_ciphers());
        c.challenge = ChallengePolicy::IntuneApi;
        assert_eq!(renewal_refusal(&c, &signer, now).map(|f| f.label), Some("renewal_disabled"));
        c.renewal.on_intune_profile = true;
        assert!(renewal_refusal(&c, &signer, now).is_none());
    }

    /// Renewals by certificate on an Intune profile count against the
    /// device's rate limit (gate 8's limiter) and are counted as decisions.
    #[test]
    fn certificate_renewals_count_against_the_rate_limit() {
        let v = intune_validator(2);
        let t = CAPTURE_TIME;
        v.admit_certificate_renewal("CN=dev-1", t).unwrap();
        v.admit_certificate_renewal("CN=dev-1", t.plus(1)).unwrap();
        let r = v.admit_certificate_renewal("CN=dev-1", t.plus(2)).unwrap_err();
        assert_eq!((r.label, r.fail_info), (intune::Label::RateLimited, FailInfo::BAD_REQUEST));
        assert_eq!(v.counters().get(intune::Label::RateLimited), 1);
        v.admit_certificate_renewal("CN=dev-2", t.plus(2)).unwrap();
        // The window slides: a day later the device may renew again.
        v.admit_certificate_renewal("CN=dev-1", t.plus(intune::RATE_WINDOW_SECS + 1)).unwrap();
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        /// A mutated request never panics and is refused: an HTTP 4xx or a
        /// CertRep FAILURE, never the issuer nor a SUCCESS, unless the mutation
        /// left the signed content intact (the signature still verifies over
        /// the same content, transaction and nonce).
        #[test]
        fn mutated_messages_never_panic_and_are_refused(client in 0usize..6, flips in proptest::collection::vec((0usize..4096, 0u8..=255), 1..6), cut in 0usize..4096) {
            let original = read(&format!("{}-pkcsreq.der", CLIENTS[client]));
            let mut body = original.clone();
            for (at, x) in flips {
                let n = body.len();
                body[at % n] ^= x;
            }
            body.truncate(body.len().saturating_sub(cut % 64));
            let intact = signed_content_intact(&original, &body);
            let e = engine();
            match e.handle(post(&body), CAPTURE_TIME) {
                Action::Issue(p) => {
                    proptest::prop_assert!(intact, "a mutated {} request reached the issuer", CLIENTS[client]);
                    let _ = p.resume(IssueOutcome::Pending, CAPTURE_TIME);
                }
                Action::Respond(r) => assert_refused(&r, intact)?,
            }
        }

        /// Random bytes never panic and are refused with an HTTP 4xx (no
        /// transaction to answer with a CertRep) or a CertRep FAILURE.
        #[test]
        fn random_bytes_never_panic_and_are_refused(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let e = engine();
            match e.handle(post(&body), CAPTURE_TIME) {
                Action::Issue(p) => proptest::prop_assert!(false, "random bytes reached the issuer: {:?}", p.request()),
                Action::Respond(r) => assert_refused(&r, false)?,
            }
        }
    }

    /// The property's two sides can each fail: the unmutated request is
    /// intact and reaches the issuer; a flipped signature byte is neither.
    #[test]
    fn the_refusal_property_tells_intact_from_mutated() {
        for client in CLIENTS {
            let original = read(&format!("{client}-pkcsreq.der"));
            assert!(signed_content_intact(&original, &original), "{client}");
            assert!(matches!(engine().handle(post(&original), CAPTURE_TIME), Action::Issue(_)), "{client}");
            // A byte of the signature (the last field of SignerInfo).
            let mut mutated = original.clone();
            let n = mutated.len();
            mutated[n - 5] ^= 0x55;
            assert!(!signed_content_intact(&original, &mutated), "{client}");
            assert!(assert_refused(&respond(engine().handle(post(&mutated), CAPTURE_TIME)), false).is_ok(), "{client}");
        }
    }

    /// Whether `mutated` still carries `original`'s signed content: it parses,
    /// its signature verifies, and content, transactionID, senderNonce and
    /// messageType are the original's.
    fn signed_content_intact(original: &[u8], mutated: &[u8]) -> bool {
        let (Ok(o), Ok(m)) = (PkiMessageRef::parse(original), PkiMessageRef::parse(mutated)) else {
            return false;
        };
        m.verify().is_ok()
            && m.content == o.content
            && m.transaction_id == o.transaction_id
            && m.sender_nonce == o.sender_nonce
            && m.message_type == o.message_type
    }

    /// An answer to a request that must be refused: HTTP 4xx, or a CertRep
    /// (200) whose pkiStatus is FAILURE with a failInfo. With `intact`, any
    /// CertRep status is allowed.
    fn assert_refused(r: &Response, intact: bool) -> Result<(), proptest::test_runner::TestCaseError> {
        if r.status == 200 {
            let rep = PkiMessageRef::parse(&r.body);
            proptest::prop_assert!(rep.is_ok(), "a 200 answer that is no CertRep");
            let rep = rep.map_err(|e| proptest::test_runner::TestCaseError::fail(format!("{e:?}")))?;
            proptest::prop_assert_eq!(rep.message_type, MessageType::CERT_REP);
            if !intact {
                proptest::prop_assert_eq!(rep.pki_status, Some(PkiStatus::FAILURE), "outcome {:?}", r.outcome.label);
                proptest::prop_assert!(rep.fail_info.is_some());
            }
        } else {
            proptest::prop_assert!((400..500).contains(&r.status), "status {} ({:?})", r.status, r.outcome.label);
        }
        Ok(())
    }
}
