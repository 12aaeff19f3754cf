//! The SCEP PKIMessage (RFC 8894 §3.2): a CMS SignedData (RFC 5652 §5) whose
//! signed attributes carry the SCEP transaction state and whose eContent is the
//! pkcsPKIEnvelope.
//!
//! [`PkiMessageRef::parse`] borrows the request bytes. It fails only when the
//! message is too broken to answer with a signed CertRep (no usable
//! transactionID, senderNonce or messageType, or structural garbage); every
//! later problem (unknown algorithms, missing signer certificate, missing or
//! wrong messageDigest, bad signature) is found by [`PkiMessageRef::verify`]
//! and answered with a signed FAILURE (RFC 8894 §3.3.2.2).

use std::borrow::Cow;

use base64::Engine as _;

use crate::codes::{FailInfo, MessageType, PkiStatus};
use crate::crypto::{DigestAlg, SignatureAlg};
use crate::oid;
use crate::time::UnixTime;
use crate::wire::{DecodeError, DecodeErrorKind, Tlv, parse_single, tag};
use crate::x509::CertificateRef;

/// Longest senderNonce accepted. RFC 8894 §3.2.1.5 specifies 16 octets; some
/// clients send other lengths, but nothing legitimate sends kilobytes.
const MAX_NONCE_LEN: usize = 256;

/// Longest transactionID accepted (RFC 8894 §3.2.1.1 suggests a hash of the
/// public key, printed as hex or decimal: well under this).
const MAX_TRANSACTION_ID_LEN: usize = 256;

// ---------------------------------------------------------------------------
// GET transport (RFC 8894 §4.1)
// ---------------------------------------------------------------------------

/// Decodes the `message` query value of a GET PKIOperation (RFC 8894 §4.1):
/// percent-decoding, then base64.
///
/// Tolerates what deployed clients send: `+` that arrived as a space (any
/// space is read as `+`, since base64 never contains spaces), CR/LF and other
/// whitespace (also percent-encoded, e.g. `%0A`), missing `=` padding, and the
/// base64url alphabet (`-`, `_`).
///
/// # Errors
/// `DecodeErrorKind::Base64` (offset into `raw`) for an invalid percent escape,
/// a character outside both base64 alphabets, misplaced padding, or a length
/// that cannot be base64.
pub fn decode_get_message(raw: &str) -> Result<Vec<u8>, DecodeError> {
    let bad = |at: usize| DecodeError::new(DecodeErrorKind::Base64, at);
    let bytes = raw.as_bytes();
    let mut text = Vec::with_capacity(bytes.len());
    let mut padding = 0usize;
    let mut i = 0usize;
    while i < bytes.len() {
        let at = i;
        let mut b = bytes[i];
        i += 1;
        if b == b'%' {
            let hi = bytes.get(i).and_then(|&h| hex_value(h)).ok_or_else(|| bad(at))?;
            let lo = bytes.get(i + 1).and_then(|&l| hex_value(l)).ok_or_else(|| bad(at))?;
            b = (hi << 4) | lo;
            i += 2;
        }
        let mapped = match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'+' | b'/' => b,
            // A form-encoded '+' becomes a space; base64 has no spaces.
            b' ' => b'+',
            b'-' => b'+',
            b'_' => b'/',
            b'\r' | b'\n' | b'\t' | 0x0b | 0x0c => continue,
            b'=' => {
                padding += 1;
                continue;
            }
            _ => return Err(bad(at)),
        };
        // Padding may only appear at the end (after skipping whitespace).
        if padding > 0 {
            return Err(bad(at));
        }
        text.push(mapped);
    }
    if padding > 2 || text.len() % 4 == 1 {
        return Err(bad(bytes.len()));
    }
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::RequireNone)
            .with_decode_allow_trailing_bits(true),
    );
    // COPY: base64-decoding a GET `message` (STYLE.md §4, allowed copy 1).
    engine.decode(&text).map_err(|_| bad(bytes.len()))
}

const fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// Why a PKIMessage cannot even be answered with a signed CertRep (the
/// transport answers HTTP 400).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MessageErrorKind {
    /// The BER/DER structure is broken.
    Malformed(DecodeErrorKind),
    /// The ContentInfo is not id-signedData (RFC 5652 §5.1).
    NotSignedData,
    /// There is no SignerInfo.
    NoSignerInfo,
    /// More than one SignerInfo (RFC 8894 §3.2: one signer, the requester).
    MultipleSignerInfos,
    /// The SignerInfo has no signedAttrs, so no SCEP attributes.
    MissingSignedAttributes,
    /// An attribute type appears twice, or a SCEP attribute has several values.
    DuplicateAttribute,
    /// No transactionID attribute (RFC 8894 §3.2.1.1).
    MissingTransactionId,
    /// A transactionID that is not a non-empty printable string.
    InvalidTransactionId,
    /// No senderNonce attribute (RFC 8894 §3.2.1.5).
    MissingSenderNonce,
    /// A senderNonce that is not a non-empty OCTET STRING of sane length.
    InvalidSenderNonce,
    /// No messageType attribute (RFC 8894 §3.2.1.2).
    MissingMessageType,
    /// A messageType that is not a decimal PrintableString.
    InvalidMessageType,
}

/// A PKIMessage that cannot be answered with a signed CertRep, and where.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MessageError {
    /// What is wrong.
    pub kind: MessageErrorKind,
    /// Byte offset into the message where it was found.
    pub offset: usize,
}

impl MessageError {
    const fn new(kind: MessageErrorKind, offset: usize) -> Self {
        Self { kind, offset }
    }
}

impl From<DecodeError> for MessageError {
    fn from(e: DecodeError) -> Self {
        Self::new(MessageErrorKind::Malformed(e.kind), e.offset)
    }
}

impl std::fmt::Display for MessageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let reason = match self.kind {
            MessageErrorKind::Malformed(k) => return write!(f, "malformed PKIMessage: {k:?} at byte {}", self.offset),
            MessageErrorKind::NotSignedData => "not a CMS SignedData",
            MessageErrorKind::NoSignerInfo => "no SignerInfo",
            MessageErrorKind::MultipleSignerInfos => "more than one SignerInfo",
            MessageErrorKind::MissingSignedAttributes => "no signed attributes",
            MessageErrorKind::DuplicateAttribute => "duplicate signed attribute",
            MessageErrorKind::MissingTransactionId => "no transactionID",
            MessageErrorKind::InvalidTransactionId => "invalid transactionID",
            MessageErrorKind::MissingSenderNonce => "no senderNonce",
            MessageErrorKind::InvalidSenderNonce => "invalid senderNonce",
            MessageErrorKind::MissingMessageType => "no messageType",
            MessageErrorKind::InvalidMessageType => "invalid messageType",
        };
        write!(f, "{reason} (byte {})", self.offset)
    }
}

impl std::error::Error for MessageError {}

/// Why the signature or integrity check of a parsed PKIMessage failed (RFC
/// 5652 §5.4, §5.6). Each maps to the CertRep failInfo to answer with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum VerifyFailure {
    /// The SignerInfo digestAlgorithm is not one we support. failInfo `badAlg`.
    UnsupportedDigest,
    /// The SignerInfo signatureAlgorithm is not one we support (e.g.
    /// RSASSA-PSS). failInfo `badAlg`.
    UnsupportedSignatureAlg,
    /// The signer certificate's key type is not supported. failInfo `badAlg`.
    UnsupportedKey,
    /// No certificate in `certificates` matches the SignerInfo sid.
    /// failInfo `badMessageCheck`.
    SignerNotFound,
    /// A CMS signed attribute (contentType, messageDigest, signingTime) is
    /// repeated or multi-valued (RFC 5652 §11). failInfo `badMessageCheck`.
    AmbiguousAttributes,
    /// The contentType attribute is missing or differs from the eContentType,
    /// or the eContentType is not id-data (RFC 5652 §11.1, RFC 8894 §3.2).
    /// failInfo `badMessageCheck`.
    ContentTypeMismatch,
    /// No messageDigest attribute (RFC 5652 §11.2). failInfo `badMessageCheck`.
    MissingMessageDigest,
    /// The messageDigest attribute differs from the digest of the eContent.
    /// failInfo `badMessageCheck`.
    MessageDigestMismatch,
    /// The signature over the signed attributes does not verify.
    /// failInfo `badMessageCheck`.
    BadSignature,
}

impl VerifyFailure {
    /// The CertRep failInfo for this failure (RFC 8894 §3.2.1.4).
    pub const fn fail_info(&self) -> FailInfo {
        match self {
            Self::UnsupportedDigest | Self::UnsupportedSignatureAlg | Self::UnsupportedKey => FailInfo::BAD_ALG,
            Self::SignerNotFound
            | Self::AmbiguousAttributes
            | Self::ContentTypeMismatch
            | Self::MissingMessageDigest
            | Self::MessageDigestMismatch
            | Self::BadSignature => FailInfo::BAD_MESSAGE_CHECK,
        }
    }
}

impl std::fmt::Display for VerifyFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::UnsupportedDigest => "unsupported digest algorithm",
            Self::UnsupportedSignatureAlg => "unsupported signature algorithm",
            Self::UnsupportedKey => "unsupported signer key type",
            Self::SignerNotFound => "signer certificate not found",
            Self::AmbiguousAttributes => "repeated or multi-valued CMS attribute",
            Self::ContentTypeMismatch => "contentType attribute mismatch",
            Self::MissingMessageDigest => "no messageDigest attribute",
            Self::MessageDigestMismatch => "messageDigest mismatch",
            Self::BadSignature => "signature does not verify",
        })
    }
}

impl std::error::Error for VerifyFailure {}

// ---------------------------------------------------------------------------
// Signer / recipient identifiers (RFC 5652 §5.3, §6.2.1)
// ---------------------------------------------------------------------------

/// A SignerIdentifier or RecipientIdentifier (RFC 5652 §5.3, §6.2.1): the two
/// ways CMS names a certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertIdRef<'a> {
    /// issuerAndSerialNumber.
    IssuerAndSerial {
        /// The issuer Name TLV, as encoded.
        issuer: &'a [u8],
        /// The serial number magnitude (big-endian, no leading zeros).
        serial: &'a [u8],
    },
    /// `[0]` subjectKeyIdentifier.
    SubjectKeyId(&'a [u8]),
}

impl<'a> CertIdRef<'a> {
    /// Reads a SignerIdentifier / RecipientIdentifier CHOICE.
    ///
    /// # Errors
    /// On a malformed or unknown choice.
    pub fn from_tlv(t: Tlv<'a>) -> Result<Self, DecodeError> {
        match t.tag {
            tag::SEQUENCE => {
                let (issuer, serial) = issuer_and_serial(t)?;
                Ok(Self::IssuerAndSerial { issuer, serial })
            }
            // [0] IMPLICIT SubjectKeyIdentifier (OCTET STRING).
            0x80 => Ok(Self::SubjectKeyId(t.contents)),
            found => Err(DecodeError::new(DecodeErrorKind::UnexpectedTag { expected: tag::SEQUENCE, found }, t.offset)),
        }
    }

    /// True when `cert` is the certificate this identifier names.
    pub fn matches(&self, cert: &CertificateRef<'_>) -> bool {
        match *self {
            Self::IssuerAndSerial { issuer, serial } => cert.issuer == issuer && cert.serial == serial,
            Self::SubjectKeyId(ski) => {
                let Ok(Some((_, value))) = cert.extension(oid::SUBJECT_KEY_IDENTIFIER) else { return false };
                parse_single(value).and_then(|t| t.expect_tag(tag::OCTET_STRING)).is_ok_and(|t| t.contents == ski)
            }
        }
    }
}

/// Reads IssuerAndSerialNumber contents: (issuer Name TLV, serial magnitude).
fn issuer_and_serial(t: Tlv<'_>) -> Result<(&[u8], &[u8]), DecodeError> {
    let mut r = t.expect_tag(tag::SEQUENCE)?.reader();
    let issuer = r.expect(tag::SEQUENCE)?.raw;
    let serial_tlv = r.expect(tag::INTEGER)?;
    // Like CertificateRef: a (non-conforming) negative serial is kept as encoded.
    let serial = serial_tlv.unsigned_integer().unwrap_or(serial_tlv.contents);
    r.finish()?;
    Ok((issuer, serial))
}

// ---------------------------------------------------------------------------
// The PKIMessage
// ---------------------------------------------------------------------------

/// A borrowed SCEP PKIMessage (RFC 8894 §3.2): CMS SignedData with one signer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PkiMessageRef<'a> {
    /// The whole message as received.
    pub raw: &'a [u8],
    /// SignerInfo digestAlgorithm OID contents.
    pub digest_alg_oid: &'a [u8],
    /// The digest algorithm, when supported.
    pub digest: Option<DigestAlg>,
    /// SignerInfo signatureAlgorithm OID contents (often plain rsaEncryption).
    pub signature_alg_oid: &'a [u8],
    /// The signature algorithm, when supported (rsaEncryption resolved with
    /// [`Self::digest`]).
    pub signature_alg: Option<SignatureAlg>,
    /// The SignerInfo sid.
    pub signer_id: CertIdRef<'a>,
    /// The certificate from `certificates` that `signer_id` names, if present.
    pub signer: Option<CertificateRef<'a>>,
    /// Every parseable certificate in SignedData `certificates` (others are skipped).
    pub certificates: Vec<CertificateRef<'a>>,
    /// messageType (RFC 8894 §3.2.1.2); values the RFC does not define are kept.
    pub message_type: MessageType,
    /// transactionID (RFC 8894 §3.2.1.1).
    pub transaction_id: &'a str,
    /// senderNonce (RFC 8894 §3.2.1.5): 16 octets per RFC, other lengths accepted.
    pub sender_nonce: &'a [u8],
    /// signingTime (RFC 5652 §11.3), when present and parseable.
    pub signing_time: Option<UnixTime>,
    /// pkiStatus (RFC 8894 §3.2.1.3), present in CertReps.
    pub pki_status: Option<PkiStatus>,
    /// failInfo (RFC 8894 §3.2.1.4), present in FAILURE CertReps.
    pub fail_info: Option<FailInfo>,
    /// recipientNonce (RFC 8894 §3.2.1.5), present in CertReps.
    pub recipient_nonce: Option<&'a [u8]>,
    /// The encapContentInfo eContentType OID contents.
    pub econtent_type: &'a [u8],
    /// The contentType signed attribute OID contents (RFC 5652 §11.1).
    pub content_type_attr: Option<&'a [u8]>,
    /// The messageDigest signed attribute value (RFC 5652 §11.2).
    pub message_digest: Option<&'a [u8]>,
    /// True when a CMS attribute is repeated or multi-valued ([`Self::verify`] fails).
    pub ambiguous_attrs: bool,
    /// The eContent (the pkcsPKIEnvelope DER); reassembled only for BER
    /// chunked input, empty when absent.
    pub content: Cow<'a, [u8]>,
    /// The exact received `[0] IMPLICIT` signedAttrs TLV.
    pub signed_attrs_raw: &'a [u8],
    /// The SignerInfo signature value.
    pub signature: &'a [u8],
}

/// The SCEP and CMS attributes found in signedAttrs.
#[derive(Default)]
struct Attrs<'a> {
    message_type: Option<MessageType>,
    transaction_id: Option<&'a str>,
    sender_nonce: Option<&'a [u8]>,
    signing_time: Option<UnixTime>,
    pki_status: Option<PkiStatus>,
    fail_info: Option<FailInfo>,
    recipient_nonce: Option<&'a [u8]>,
    content_type: Option<&'a [u8]>,
    message_digest: Option<&'a [u8]>,
    ambiguous: bool,
    seen_time: bool,
}

impl<'a> PkiMessageRef<'a> {
    /// Parses a PKIMessage from DER or BER.
    ///
    /// # Errors
    /// [`MessageError`] only when the message cannot be answered with a signed
    /// CertRep: structural garbage, or a missing/invalid transactionID,
    /// senderNonce or messageType. Everything else is left for [`Self::verify`].
    pub fn parse(bytes: &'a [u8]) -> Result<Self, MessageError> {
        // RFC 5652 §3: ContentInfo ::= SEQUENCE { contentType, [0] EXPLICIT content }
        let ci = parse_single(bytes)?.expect_tag(tag::SEQUENCE)?;
        let mut r = ci.reader();
        let ct = r.expect(tag::OID)?;
        if ct.contents != oid::SIGNED_DATA {
            return Err(MessageError::new(MessageErrorKind::NotSignedData, ct.offset));
        }
        let explicit = r.expect(tag::context_constructed(0))?;
        r.finish()?;
        let mut er = explicit.reader();
        let sd = er.expect(tag::SEQUENCE)?;
        er.finish()?;

        // RFC 5652 §5.1 SignedData
        let mut sr = sd.reader();
        sr.expect(tag::INTEGER)?; // version
        sr.expect(tag::SET)?; // digestAlgorithms
        let (econtent_type, content) = encap_content_info(sr.expect(tag::SEQUENCE)?)?;
        let mut certificates = Vec::new();
        if let Some(certs) = sr.optional(tag::context_constructed(0))? {
            let mut cr = certs.reader();
            while !cr.is_empty() {
                let choice = cr.read()?;
                // CertificateChoices: only the plain Certificate (a SEQUENCE) is
                // used by SCEP; other choices and unparseable certificates are skipped.
                if choice.tag == tag::SEQUENCE
                    && let Ok(cert) = CertificateRef::from_tlv(choice)
                {
                    certificates.push(cert);
                }
            }
        }
        sr.optional(tag::context_constructed(1))?; // crls
        let signer_infos = sr.expect(tag::SET)?;
        sr.finish()?;

        let mut sir = signer_infos.reader();
        if sir.is_empty() {
            return Err(MessageError::new(MessageErrorKind::NoSignerInfo, signer_infos.offset));
        }
        let si = sir.expect(tag::SEQUENCE)?;
        if !sir.is_empty() {
            return Err(MessageError::new(MessageErrorKind::MultipleSignerInfos, sir.offset()));
        }

        // RFC 5652 §5.3 SignerInfo
        let mut r = si.reader();
        r.expect(tag::INTEGER)?; // version (1 for IAS, 3 for SKI)
        let signer_id = CertIdRef::from_tlv(r.read()?)?;
        let digest_alg_oid = algorithm_oid(r.expect(tag::SEQUENCE)?)?;
        let signed_attrs = r
            .optional(tag::context_constructed(0))?
            .ok_or_else(|| MessageError::new(MessageErrorKind::MissingSignedAttributes, r.offset()))?;
        let signature_alg_oid = algorithm_oid(r.expect(tag::SEQUENCE)?)?;
        let signature = r.expect(tag::OCTET_STRING)?.contents;
        r.optional(tag::context_constructed(1))?; // unsignedAttrs
        r.finish()?;

        let attrs = signed_attributes(signed_attrs)?;
        let missing = |kind| MessageError::new(kind, signed_attrs.offset);
        let transaction_id = attrs.transaction_id.ok_or_else(|| missing(MessageErrorKind::MissingTransactionId))?;
        let sender_nonce = attrs.sender_nonce.ok_or_else(|| missing(MessageErrorKind::MissingSenderNonce))?;
        let message_type = attrs.message_type.ok_or_else(|| missing(MessageErrorKind::MissingMessageType))?;

        let digest = DigestAlg::from_oid(digest_alg_oid);
        let signature_alg = SignatureAlg::from_oid(signature_alg_oid, digest);
        let signer = certificates.iter().find(|c| signer_id.matches(c)).copied();
        Ok(Self {
            raw: ci.raw,
            digest_alg_oid,
            digest,
            signature_alg_oid,
            signature_alg,
            signer_id,
            signer,
            certificates,
            message_type,
            transaction_id,
            sender_nonce,
            signing_time: attrs.signing_time,
            pki_status: attrs.pki_status,
            fail_info: attrs.fail_info,
            recipient_nonce: attrs.recipient_nonce,
            econtent_type,
            content_type_attr: attrs.content_type,
            message_digest: attrs.message_digest,
            ambiguous_attrs: attrs.ambiguous,
            content,
            signed_attrs_raw: signed_attrs.raw,
            signature,
        })
    }

    /// Verifies the SignerInfo (RFC 5652 §5.4, §5.6): the contentType attribute
    /// is id-data and matches the eContentType, the messageDigest attribute
    /// equals the digest of the (reassembled) eContent, and the signature over
    /// the signedAttrs, re-tagged as a SET (0x31), verifies with the signer
    /// certificate's key.
    ///
    /// This checks the message's integrity only; whether the signer certificate
    /// is acceptable (self-signed for PKCSReq, issued by us for RenewalReq) is
    /// the engine's policy.
    ///
    /// # Errors
    /// A [`VerifyFailure`]; [`VerifyFailure::fail_info`] gives the failInfo.
    pub fn verify(&self) -> Result<(), VerifyFailure> {
        self.verify_with(&**crate::crypto::default_provider())
    }

    /// [`PkiMessageRef::verify`] with the digests and signature verification of `provider`.
    ///
    /// # Errors
    /// As [`PkiMessageRef::verify`].
    pub fn verify_with(&self, provider: &dyn crate::crypto::CryptoProvider) -> Result<(), VerifyFailure> {
        let digest = self.digest.ok_or(VerifyFailure::UnsupportedDigest)?;
        let alg = self.signature_alg.ok_or(VerifyFailure::UnsupportedSignatureAlg)?;
        let signer = self.signer.ok_or(VerifyFailure::SignerNotFound)?;
        let key = signer.spki.public_key().map_err(|_| VerifyFailure::UnsupportedKey)?;
        if self.ambiguous_attrs {
            return Err(VerifyFailure::AmbiguousAttributes);
        }
        // RFC 8894 §3.2: the signed content is id-data (the pkcsPKIEnvelope).
        if self.econtent_type != oid::DATA || self.content_type_attr != Some(self.econtent_type) {
            return Err(VerifyFailure::ContentTypeMismatch);
        }
        let expected = self.message_digest.ok_or(VerifyFailure::MissingMessageDigest)?;
        if provider.digest(digest, &[&self.content]) != expected {
            return Err(VerifyFailure::MessageDigestMismatch);
        }
        // RFC 5652 §5.4: the signature covers the DER of the SET OF attributes,
        // i.e. the received [0] IMPLICIT encoding with its tag replaced by SET.
        // (Every client seen, jscep's BER included, sends signedAttrs in DER; a
        // BER-encoded signedAttrs would not verify, as with OpenSSL.)
        let body = self.signed_attrs_raw.get(1..).unwrap_or_default();
        provider.verify(alg, key, &[&[tag::SET], body], self.signature).map_err(|_| VerifyFailure::BadSignature)
    }
}

/// RFC 5652 §5.2 EncapsulatedContentInfo: (eContentType, eContent octets).
fn encap_content_info(t: Tlv<'_>) -> Result<(&[u8], Cow<'_, [u8]>), MessageError> {
    let mut r = t.reader();
    let econtent_type = r.expect(tag::OID)?.contents;
    let content = match r.optional(tag::context_constructed(0))? {
        Some(explicit) => {
            let mut er = explicit.reader();
            // COPY (inside Tlv::octets): only for BER chunked eContent.
            let octets = er.read()?.octets()?;
            er.finish()?;
            octets
        }
        None => Cow::Borrowed(&[][..]),
    };
    r.finish()?;
    Ok((econtent_type, content))
}

/// The OID of an AlgorithmIdentifier (parameters are not interpreted).
fn algorithm_oid(t: Tlv<'_>) -> Result<&[u8], DecodeError> {
    Ok(t.reader().expect(tag::OID)?.contents)
}

/// Reads signedAttrs (RFC 5652 §5.3) and the SCEP attributes (RFC 8894 §3.2.1).
fn signed_attributes(t: Tlv<'_>) -> Result<Attrs<'_>, MessageError> {
    let mut a = Attrs::default();
    let mut r = t.reader();
    while !r.is_empty() {
        let attr = r.expect(tag::SEQUENCE)?;
        let mut ar = attr.reader();
        let attr_type = ar.expect(tag::OID)?.contents;
        let values = ar.expect(tag::SET)?;
        ar.finish()?;
        let mut vr = values.reader();
        let first = if vr.is_empty() { None } else { Some(vr.read()?) };
        let single = vr.is_empty();
        let dup = MessageError::new(MessageErrorKind::DuplicateAttribute, attr.offset);
        match attr_type {
            oid::SCEP_TRANSACTION_ID => {
                let bad = MessageError::new(MessageErrorKind::InvalidTransactionId, values.offset);
                if a.transaction_id.is_some() || !single {
                    return Err(dup);
                }
                a.transaction_id = Some(transaction_id(first.ok_or(bad)?).ok_or(bad)?);
            }
            oid::SCEP_SENDER_NONCE => {
                let bad = MessageError::new(MessageErrorKind::InvalidSenderNonce, values.offset);
                if a.sender_nonce.is_some() || !single {
                    return Err(dup);
                }
                let v = first.ok_or(bad)?;
                if v.tag != tag::OCTET_STRING || v.contents.is_empty() || v.contents.len() > MAX_NONCE_LEN {
                    return Err(bad);
                }
                a.sender_nonce = Some(v.contents);
            }
            oid::SCEP_MESSAGE_TYPE => {
                let bad = MessageError::new(MessageErrorKind::InvalidMessageType, values.offset);
                if a.message_type.is_some() || !single {
                    return Err(dup);
                }
                let v = first.ok_or(bad)?;
                if v.tag != tag::PRINTABLE_STRING || !v.contents.iter().all(u8::is_ascii_digit) {
                    return Err(bad);
                }
                a.message_type = Some(MessageType::from_decimal(v.contents).ok_or(bad)?);
            }
            // CertRep attributes (RFC 8894 §3.3.2): read leniently, they only
            // matter to clients reading our replies (and to tests).
            oid::SCEP_PKI_STATUS => {
                a.ambiguous |= a.pki_status.is_some() || !single;
                a.pki_status = first.and_then(|v| PkiStatus::from_decimal(v.contents));
            }
            oid::SCEP_FAIL_INFO => {
                a.ambiguous |= a.fail_info.is_some() || !single;
                a.fail_info = first.and_then(|v| FailInfo::from_decimal(v.contents));
            }
            oid::SCEP_RECIPIENT_NONCE => {
                a.ambiguous |= a.recipient_nonce.is_some() || !single;
                a.recipient_nonce = first.filter(|v| v.tag == tag::OCTET_STRING).map(|v| v.contents);
            }
            // RFC 5652 §11: these attributes MUST have a single value and MUST
            // NOT appear twice; a violation is recorded for verify().
            oid::CONTENT_TYPE => {
                a.ambiguous |= a.content_type.is_some() || !single;
                a.content_type = first.filter(|v| v.tag == tag::OID).map(|v| v.contents);
            }
            oid::MESSAGE_DIGEST => {
                a.ambiguous |= a.message_digest.is_some() || !single;
                a.message_digest = first.filter(|v| v.tag == tag::OCTET_STRING).map(|v| v.contents);
            }
            oid::SIGNING_TIME => {
                a.ambiguous |= a.seen_time || !single;
                a.seen_time = true;
                a.signing_time = first.and_then(|v| crate::time::parse_asn1_time(v).ok());
            }
            _ => {}
        }
    }
    Ok(a)
}

/// A transactionID value: PrintableString per RFC 8894 §3.2.1.1 (UTF8String and
/// IA5String tolerated), non-empty, printable ASCII.
fn transaction_id(v: Tlv<'_>) -> Option<&str> {
    if !matches!(v.tag, tag::PRINTABLE_STRING | tag::UTF8_STRING | tag::IA5_STRING) {
        return None;
    }
    let c = v.contents;
    if c.is_empty() || c.len() > MAX_TRANSACTION_ID_LEN || !c.iter().all(|b| (0x20..0x7f).contains(b)) {
        return None;
    }
    std::str::from_utf8(c).ok()
}

// ---------------------------------------------------------------------------
// Inner contents of CertPoll, GetCert and GetCRL
// ---------------------------------------------------------------------------

/// Parses IssuerAndSubject (RFC 8894 §3.3.3, the decrypted CertPoll content):
/// returns (issuer Name TLV, subject Name TLV).
///
/// # Errors
/// On malformed DER/BER or trailing data.
pub fn parse_issuer_and_subject(der: &[u8]) -> Result<(&[u8], &[u8]), DecodeError> {
    let seq = parse_single(der)?.expect_tag(tag::SEQUENCE)?;
    let mut r = seq.reader();
    let issuer = r.expect(tag::SEQUENCE)?.raw;
    let subject = r.expect(tag::SEQUENCE)?.raw;
    r.finish()?;
    Ok((issuer, subject))
}

/// Parses IssuerAndSerialNumber (RFC 5652 §10.2.4; the decrypted GetCert and
/// GetCRL content, RFC 8894 §3.3.4, §3.3.5): returns (issuer Name TLV, serial
/// magnitude).
///
/// # Errors
/// On malformed DER/BER or trailing data.
pub fn parse_issuer_and_serial(der: &[u8]) -> Result<(&[u8], &[u8]), DecodeError> {
    issuer_and_serial(parse_single(der)?)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::wire::Writer;

    /// The six captures: (file stem, digest, SignerInfo signature OID, cipher, BER?).
    pub(crate) const CAPTURES: [(&str, DigestAlg, &[u8], crate::crypto::ContentCipher, bool); 6] = {
        use crate::crypto::ContentCipher as C;
        [
            ("sscep", DigestAlg::Sha256, oid::RSA_ENCRYPTION, C::Aes128Cbc, false),
            ("certmonger", DigestAlg::Sha256, oid::RSA_ENCRYPTION, C::Aes256Cbc, false),
            ("pyscep", DigestAlg::Sha256, oid::RSA_ENCRYPTION, C::Aes256Cbc, false),
            ("scepreq", DigestAlg::Sha256, oid::RSA_ENCRYPTION, C::Aes256Cbc, false),
            ("jscep", DigestAlg::Sha256, oid::SHA256_WITH_RSA, C::Aes128Cbc, true),
            ("scepclient", DigestAlg::Sha1, oid::SHA1_WITH_RSA, C::DesCbc, false),
        ]
    };

    pub(crate) fn vector(name: &str) -> Vec<u8> {
        let path = format!("{}/../tests/vectors/real-clients/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    pub(crate) fn capture(stem: &str) -> Vec<u8> {
        vector(&format!("{stem}-pkcsreq.der"))
    }

    fn offset_in(outer: &[u8], inner: &[u8]) -> usize {
        inner.as_ptr() as usize - outer.as_ptr() as usize
    }

    #[test]
    fn parses_and_verifies_all_captures() {
        for (stem, digest, sig_oid, _, ber) in CAPTURES {
            let raw = capture(stem);
            let m = PkiMessageRef::parse(&raw).unwrap_or_else(|e| panic!("{stem}: {e}"));
            assert_eq!(m.message_type, MessageType::PKCS_REQ, "{stem}");
            assert_eq!(m.digest, Some(digest), "{stem}");
            assert_eq!(m.digest_alg_oid, digest.oid(), "{stem}");
            assert_eq!(m.signature_alg_oid, sig_oid, "{stem}");
            assert_eq!(m.sender_nonce.len(), 16, "{stem}");
            assert!(!m.transaction_id.is_empty(), "{stem}");
            // pyscep and scepreq send no signingTime; the others signed around the capture.
            match m.signing_time {
                Some(t) => assert!((t.secs() - 1_795_574_366).abs() < 3600, "{stem}: {t:?}"),
                None => assert!(matches!(stem, "pyscep" | "scepreq"), "{stem}: no signingTime"),
            }
            let signer = m.signer.unwrap_or_else(|| panic!("{stem}: no signer"));
            assert!(m.certificates.iter().any(|c| c.raw == signer.raw));
            assert_eq!(matches!(m.content, Cow::Owned(_)), ber, "{stem}: only BER input is copied");
            assert_eq!(m.signed_attrs_raw[0], 0xa0);
            m.verify().unwrap_or_else(|e| panic!("{stem}: {e}"));
            // The eContent is itself a ContentInfo(envelopedData).
            let env = parse_single(&m.content).unwrap();
            assert_eq!(env.reader().expect(tag::OID).unwrap().contents, oid::ENVELOPED_DATA);
        }
    }

    #[test]
    fn tampered_signature_is_bad_message_check() {
        for (stem, ..) in CAPTURES {
            let mut raw = capture(stem);
            let at = {
                let m = PkiMessageRef::parse(&raw).unwrap();
                offset_in(&raw, m.signature) + 7
            };
            raw[at] ^= 0x01;
            let m = PkiMessageRef::parse(&raw).unwrap();
            let e = m.verify().unwrap_err();
            assert_eq!(e, VerifyFailure::BadSignature, "{stem}");
            assert_eq!(e.fail_info(), FailInfo::BAD_MESSAGE_CHECK);
        }
    }

    #[test]
    fn tampered_signed_attribute_is_bad_signature() {
        let mut raw = capture("sscep");
        let at = {
            let m = PkiMessageRef::parse(&raw).unwrap();
            offset_in(&raw, m.transaction_id.as_bytes())
        };
        raw[at] = if raw[at] == b'1' { b'2' } else { b'1' };
        let m = PkiMessageRef::parse(&raw).unwrap();
        assert_eq!(m.verify(), Err(VerifyFailure::BadSignature));
    }

    #[test]
    fn tampered_content_is_digest_mismatch() {
        for (stem, ..) in CAPTURES {
            let mut raw = capture(stem);
            let at = {
                let m = PkiMessageRef::parse(&raw).unwrap();
                match &m.content {
                    Cow::Borrowed(c) => offset_in(&raw, c) + c.len() - 3,
                    // BER: the last chunk's bytes are the last content bytes before the EOCs.
                    Cow::Owned(_) => {
                        let pos = raw.windows(4).position(|w| w == [0, 0, 0, 0]).unwrap();
                        pos - 3
                    }
                }
            };
            raw[at] ^= 0x80;
            let m = PkiMessageRef::parse(&raw).unwrap();
            let e = m.verify().unwrap_err();
            assert_eq!(e, VerifyFailure::MessageDigestMismatch, "{stem}");
            assert_eq!(e.fail_info(), FailInfo::BAD_MESSAGE_CHECK);
        }
    }

    #[test]
    fn every_truncation_is_an_error() {
        for (stem, ..) in CAPTURES {
            let raw = capture(stem);
            for len in 0..raw.len() {
                assert!(PkiMessageRef::parse(&raw[..len]).is_err(), "{stem} prefix {len}");
            }
        }
    }

    /// Builds a minimal PKIMessage with the given signed attributes.
    fn message_with_attrs(attrs: &[(&[u8], Vec<u8>)]) -> Vec<u8> {
        let mut w = Writer::new();
        w.sequence(|w| {
            w.oid(oid::SIGNED_DATA);
            w.nested(tag::context_constructed(0), |w| {
                w.sequence(|w| {
                    w.small_uint(1);
                    w.set(|w| {
                        w.sequence(|w| {
                            w.oid(oid::SHA256);
                        });
                    });
                    w.sequence(|w| {
                        w.oid(oid::DATA);
                    });
                    w.set(|w| {
                        w.sequence(|w| {
                            w.small_uint(3);
                            w.tlv(0x80, b"key-id");
                            w.sequence(|w| {
                                w.oid(oid::SHA256);
                            });
                            w.nested(tag::context_constructed(0), |w| {
                                for (t, v) in attrs {
                                    w.sequence(|w| {
                                        w.oid(t);
                                        w.nested(tag::SET, |w| {
                                            w.raw(v);
                                        });
                                    });
                                }
                            });
                            w.sequence(|w| {
                                w.oid(oid::RSA_ENCRYPTION).null();
                            });
                            w.octet_string(&[1, 2, 3]);
                        });
                    });
                });
            });
        });
        w.into_vec()
    }

    fn printable(s: &str) -> Vec<u8> {
        crate::wire::encode_tlv(tag::PRINTABLE_STRING, s.as_bytes())
    }

    #[test]
    fn scep_attribute_errors_are_parse_errors() {
        let tid = (oid::SCEP_TRANSACTION_ID, printable("abc"));
        let nonce = (oid::SCEP_SENDER_NONCE, crate::wire::encode_tlv(tag::OCTET_STRING, &[7; 16]));
        let mt = (oid::SCEP_MESSAGE_TYPE, printable("20"));
        let ok = message_with_attrs(&[tid.clone(), nonce.clone(), mt.clone()]);
        let m = PkiMessageRef::parse(&ok).unwrap();
        assert_eq!(m.message_type, MessageType::CERT_POLL);
        assert_eq!(m.transaction_id, "abc");
        assert_eq!(m.signer_id, CertIdRef::SubjectKeyId(b"key-id"));
        assert_eq!(m.signer, None);
        assert!(m.content.is_empty());
        // Problems after the SCEP attributes are known go to verify(), as failInfo.
        assert_eq!(m.verify(), Err(VerifyFailure::SignerNotFound));
        assert_eq!(m.verify().unwrap_err().fail_info(), FailInfo::BAD_MESSAGE_CHECK);

        let kind = |attrs: &[(&[u8], Vec<u8>)]| PkiMessageRef::parse(&message_with_attrs(attrs)).unwrap_err().kind;
        use MessageErrorKind as K;
        assert_eq!(kind(&[nonce.clone(), mt.clone()]), K::MissingTransactionId);
        assert_eq!(kind(&[tid.clone(), mt.clone()]), K::MissingSenderNonce);
        assert_eq!(kind(&[tid.clone(), nonce.clone()]), K::MissingMessageType);
        assert_eq!(
            kind(&[tid.clone(), nonce.clone(), (oid::SCEP_MESSAGE_TYPE, printable("x"))]),
            K::InvalidMessageType
        );
        assert_eq!(
            kind(&[(oid::SCEP_TRANSACTION_ID, printable("")), nonce.clone(), mt.clone()]),
            K::InvalidTransactionId
        );
        let ctl = crate::wire::encode_tlv(tag::UTF8_STRING, b"a\nb");
        assert_eq!(kind(&[(oid::SCEP_TRANSACTION_ID, ctl), nonce.clone(), mt.clone()]), K::InvalidTransactionId);
        let empty_nonce = crate::wire::encode_tlv(tag::OCTET_STRING, &[]);
        assert_eq!(kind(&[tid.clone(), (oid::SCEP_SENDER_NONCE, empty_nonce), mt.clone()]), K::InvalidSenderNonce);
        assert_eq!(kind(&[tid.clone(), tid.clone(), nonce.clone(), mt.clone()]), K::DuplicateAttribute);
        let two = [printable("1"), printable("2")].concat();
        assert_eq!(kind(&[(oid::SCEP_TRANSACTION_ID, two), nonce.clone(), mt.clone()]), K::DuplicateAttribute);
        // Other nonce lengths are accepted.
        let short = (oid::SCEP_SENDER_NONCE, crate::wire::encode_tlv(tag::OCTET_STRING, &[7; 8]));
        assert_eq!(PkiMessageRef::parse(&message_with_attrs(&[tid, short, mt])).unwrap().sender_nonce, &[7; 8]);
    }

    #[test]
    fn structural_errors() {
        let e = PkiMessageRef::parse(&[0x30, 0x03, 0x06, 0x01, 0x2a]).unwrap_err();
        assert_eq!(e.kind, MessageErrorKind::NotSignedData);
        assert!(e.to_string().contains("SignedData"));
        let e = PkiMessageRef::parse(b"garbage").unwrap_err();
        assert!(matches!(e.kind, MessageErrorKind::Malformed(_)), "{e:?}");
    }

    #[test]
    fn unsupported_algorithms_are_bad_alg() {
        let raw = capture("sscep");
        let mut m = PkiMessageRef::parse(&raw).unwrap();
        m.digest = None;
        assert_eq!(m.verify().unwrap_err().fail_info(), FailInfo::BAD_ALG);
        let mut m = PkiMessageRef::parse(&raw).unwrap();
        m.signature_alg = SignatureAlg::from_oid(oid::RSASSA_PSS, m.digest);
        assert_eq!(m.verify(), Err(VerifyFailure::UnsupportedSignatureAlg));
        assert_eq!(m.verify().unwrap_err().fail_info(), FailInfo::BAD_ALG);
    }

    #[test]
    fn signer_matching() {
        let raw = capture("sscep");
        let m = PkiMessageRef::parse(&raw).unwrap();
        let signer = m.signer.unwrap();
        let ias = CertIdRef::IssuerAndSerial { issuer: signer.issuer, serial: signer.serial };
        assert!(ias.matches(&signer));
        let other = CertIdRef::IssuerAndSerial { issuer: signer.issuer, serial: &[1] };
        assert!(!other.matches(&signer));
        assert!(!CertIdRef::SubjectKeyId(b"nope").matches(&signer));
    }

    #[test]
    fn issuer_and_subject_and_serial() {
        let name = |cn: &str| {
            let mut w = Writer::new();
            w.sequence(|w| {
                w.set(|w| {
                    w.sequence(|w| {
                        w.oid(oid::COMMON_NAME).utf8_string(cn);
                    });
                });
            });
            w.into_vec()
        };
        let (a, b) = (name("issuer"), name("subject"));
        let mut w = Writer::new();
        w.sequence(|w| {
            w.raw(&a).raw(&b);
        });
        let ias = w.into_vec();
        assert_eq!(parse_issuer_and_subject(&ias).unwrap(), (&a[..], &b[..]));
        let mut w = Writer::new();
        w.sequence(|w| {
            w.raw(&a).unsigned_integer(&[0x00, 0x9f, 0x01]);
        });
        let isn = w.into_vec();
        assert_eq!(parse_issuer_and_serial(&isn).unwrap(), (&a[..], &[0x9f, 0x01][..]));
        assert!(parse_issuer_and_serial(&ias).is_err());
        assert!(parse_issuer_and_subject(&isn).is_err());
        for len in 0..isn.len() {
            assert!(parse_issuer_and_serial(&isn[..len]).is_err());
        }
    }

    /// Table-driven GET `message` decoding (RFC 8894 §4.1).
    #[test]
    fn get_message_table() {
        let ok: &[(&str, &[u8])] = &[
            ("", b""),
            ("AAEC", &[0, 1, 2]),
            ("AAE=", &[0, 1]),
            ("AAE", &[0, 1]),
            ("AA%3D%3D", &[0]),
            ("AA", &[0]),
            ("+/+/", &[0xfb, 0xff, 0xbf]),
            ("%2B%2F%2b%2f", &[0xfb, 0xff, 0xbf]),
            (" / /", &[0xfb, 0xff, 0xbf]),
            ("-_-_", &[0xfb, 0xff, 0xbf]),
            ("%20_+/", &[0xfb, 0xff, 0xbf]),
            ("AA\r\nEC", &[0, 1, 2]),
            ("AA%0AEC%0D%0A", &[0, 1, 2]),
            ("AAE=\n", &[0, 1]),
            ("AA\tEC", &[0, 1, 2]),
        ];
        for (i, (input, want)) in ok.iter().enumerate() {
            assert_eq!(decode_get_message(input).as_deref(), Ok(*want), "case {i}: {input:?}");
        }
        // A space inside is a '+': "AAE+" decodes to 00 01 3e.
        assert_eq!(decode_get_message("AAE ").unwrap(), vec![0, 1, 0x3e]);
        let bad: &[&str] = &["AAE*", "A", "AAAAA", "AA=A", "AA===", "%", "%4", "%G0", "AA%00", "é"];
        for input in bad {
            let e = decode_get_message(input).unwrap_err();
            assert_eq!(e.kind, DecodeErrorKind::Base64, "{input:?}");
        }
        assert_eq!(decode_get_message("AAE*").unwrap_err().offset, 3);
    }

    #[test]
    fn get_message_round_trips_a_capture() {
        use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
        let raw = capture("certmonger");
        let b64 = STANDARD.encode(&raw);
        assert!(b64.contains('+') && b64.contains('/'));
        let variants = [
            b64.clone(),
            b64.replace('+', "%2B").replace('/', "%2F").replace('=', "%3D"),
            b64.replace('+', " "),
            b64.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap()).collect::<Vec<_>>().join("%0A"),
            b64.as_bytes().chunks(76).map(|c| std::str::from_utf8(c).unwrap()).collect::<Vec<_>>().join("\r\n"),
            URL_SAFE_NO_PAD.encode(&raw),
        ];
        for v in variants {
            assert_eq!(decode_get_message(&v).unwrap(), raw);
        }
    }

    mod fuzz {
        use super::*;
        use crate::csr::CsrRef;
        use crate::envelope::open;
        use crate::envelope::tests::{ALL, FixedRng, ra};
        use proptest::prelude::*;

        fn mutate(base: &[u8], edits: &[(usize, u8)], cut: usize) -> Vec<u8> {
            let mut v = base.to_vec();
            for &(at, b) in edits {
                if !v.is_empty() {
                    let i = at % v.len();
                    v[i] = b;
                }
            }
            v.truncate(v.len().saturating_sub(cut));
            v
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
                let ra = ra();
                let cert = CertificateRef::parse(&ra.cert).unwrap();
                if let Ok(m) = PkiMessageRef::parse(&bytes) {
                    let _ = m.verify();
                }
                let _ = open(&bytes, &cert, &ra.key, &ALL, &FixedRng);
                if let Ok(c) = CsrRef::parse(&bytes) {
                    let _ = c.verify_signature();
                }
                let _ = decode_get_message(&String::from_utf8_lossy(&bytes));
            }

            #[test]
            fn mutated_captures_never_panic(
                which in 0usize..6,
                edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
                cut in 0usize..64,
            ) {
                let ra = ra();
                let cert = CertificateRef::parse(&ra.cert).unwrap();
                let stem = CAPTURES[which].0;
                let raw = capture(stem);
                let msg = mutate(&raw, &edits, cut);
                let good = PkiMessageRef::parse(&raw).unwrap();
                // A mutated message whose signature still verifies carries the
                // original signed content: the mutation touched nothing signed.
                if let Ok(m) = PkiMessageRef::parse(&msg)
                    && m.verify().is_ok()
                {
                    prop_assert_eq!(&m.content[..], &good.content[..]);
                    prop_assert_eq!(m.transaction_id, good.transaction_id);
                    prop_assert_eq!(m.sender_nonce, good.sender_nonce);
                    prop_assert_eq!(m.message_type, good.message_type);
                }
                // Mutate the inner layers separately so the parsers past the
                // outer signature see damaged input too.
                let env = mutate(&good.content, &edits, cut);
                if let Ok(opened) = open(&env, &cert, &ra.key, &ALL, &FixedRng) {
                    let _ = CsrRef::parse(&opened.content);
                }
                let csr_der = crate::envelope::tests::open_capture(stem).content;
                let csr = mutate(&csr_der, &edits, cut);
                if let Ok(c) = CsrRef::parse(&csr) {
                    // A mutated CSR that still verifies has the original's signed request info.
                    if c.verify_signature().is_ok() {
                        let original = CsrRef::parse(&csr_der).unwrap();
                        prop_assert_eq!(c.info, original.info);
                    }
                    let _ = c.common_names();
                    let _ = c.subject_alt_names();
                    let _ = c.extended_key_usages();
                    let _ = c.key_bits();
                }
            }
        }
    }
}
