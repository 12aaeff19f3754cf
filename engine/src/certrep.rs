//! The CertRep PKIMessage (RFC 8894 §3.3.2): the server's signed answer to
//! PKCSReq, RenewalReq, CertPoll, GetCert and GetCRL.
//!
//! A CertRep is a SignedData (RFC 5652 §5) signed by the RA key, carrying the
//! SCEP signed attributes of RFC 8894 §3.2.1 and, on SUCCESS, the
//! pkcsPKIEnvelope (the reply content sealed to the requester, §3.2.2). On
//! FAILURE and PENDING the eContent is absent (§3.3.2): the messageDigest is
//! then the digest of empty content, which is what OpenSSL (sscep, certmonger),
//! Go pkcs7 (micromdm) and BouncyCastle (jscep) compute for absent content.
//!
//! The whole message is written in one pass into a buffer of exactly its size.

use crate::codes::{FailInfo, MessageType, PkiStatus};
use crate::crypto::{ContentCipher, DigestAlg, KeyError, RandomSource, RsaPrivateKey};
use crate::oid;
use crate::pkcs7::{
    SealError, algorithm_identifier, algorithm_identifier_len, certs_only, content_info_header, content_info_len,
    header, issuer_and_serial, issuer_and_serial_contents_len, seal, tlv_len,
};
use crate::time::UnixTime;
use crate::wire::{Writer, tag};
use crate::x509::CertificateRef;

/// Length of the senderNonce the server generates (RFC 8894 §3.2.1.5: 16 octets).
pub const SENDER_NONCE_LEN: usize = 16;

/// What a CertRep reports (RFC 8894 §3.2.1.3), with what each status carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertRepStatus<'a> {
    /// SUCCESS: `envelope` is the pkcsPKIEnvelope, an EnvelopedData ContentInfo
    /// already sealed to the requester (see [`crate::pkcs7::seal`]).
    Success {
        /// The sealed reply content, carried as the SignedData eContent.
        envelope: &'a [u8],
    },
    /// FAILURE with its failInfo (RFC 8894 §3.2.1.4); no content.
    Failure(FailInfo),
    /// PENDING: manual approval, the client polls with CertPoll; no content.
    Pending,
}

impl CertRepStatus<'_> {
    /// The pkiStatus attribute value.
    pub const fn pki_status(&self) -> PkiStatus {
        match self {
            Self::Success { .. } => PkiStatus::SUCCESS,
            Self::Failure(_) => PkiStatus::FAILURE,
            Self::Pending => PkiStatus::PENDING,
        }
    }

    /// The failInfo attribute value (FAILURE only).
    pub const fn fail_info(&self) -> Option<FailInfo> {
        match self {
            Self::Failure(f) => Some(*f),
            _ => None,
        }
    }
}

/// Why a CertRep could not be built. None of these is caused by the client's
/// bytes: they mean a broken RA key or an unusable requester certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CertRepError {
    /// Signing with the RA key failed.
    Sign(KeyError),
    /// The reply content could not be sealed to the requester.
    Seal(SealError),
}

impl std::fmt::Display for CertRepError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sign(e) => write!(f, "cannot sign CertRep: {e}"),
            Self::Seal(e) => write!(f, "cannot seal CertRep content: {e}"),
        }
    }
}

impl std::error::Error for CertRepError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Sign(e) => Some(e),
            Self::Seal(e) => Some(e),
        }
    }
}

impl From<KeyError> for CertRepError {
    fn from(e: KeyError) -> Self {
        Self::Sign(e)
    }
}

impl From<SealError> for CertRepError {
    fn from(e: SealError) -> Self {
        Self::Seal(e)
    }
}

/// Everything a CertRep needs besides its status: the RA identity that signs
/// it and the values echoed from the request. Build one per request, then call
/// [`CertRepBuilder::build`] or one of [`success_reply`], [`failure_reply`],
/// [`pending_reply`], [`crl_reply`].
#[derive(Clone, Copy, Debug)]
pub struct CertRepBuilder<'a> {
    /// The RA certificate: placed in `certificates` (clients verify the reply
    /// with it) and named by the SignerInfo's issuerAndSerialNumber.
    pub ra_cert: CertificateRef<'a>,
    /// The RA private key matching `ra_cert` (checked at configuration time).
    pub ra_key: &'a RsaPrivateKey,
    /// The request's digest; the reply uses [`DigestAlg::for_reply`] of it for
    /// digestAlgorithm, messageDigest and the sha*WithRSAEncryption signature.
    pub digest: DigestAlg,
    /// The request's transactionID, echoed (RFC 8894 §3.2.1.1).
    pub transaction_id: &'a str,
    /// The request's senderNonce, echoed as recipientNonce (RFC 8894 §3.2.1.5).
    pub recipient_nonce: &'a [u8],
    /// The signingTime attribute value (RFC 5652 §11.3).
    pub signing_time: UnixTime,
}

impl CertRepBuilder<'_> {
    /// Builds the CertRep ContentInfo (DER) with a fresh 16-octet senderNonce from `rng`.
    ///
    /// # Errors
    /// [`CertRepError::Sign`] when the RA key fails to sign.
    pub fn build(&self, status: CertRepStatus<'_>, rng: &dyn RandomSource) -> Result<Vec<u8>, CertRepError> {
        let mut nonce = [0u8; SENDER_NONCE_LEN];
        rng.fill(&mut nonce);
        self.build_with_nonce(status, &nonce)
    }

    /// Builds the CertRep ContentInfo (DER) with the given senderNonce. The
    /// output is a pure function of the inputs (RSA PKCS #1 v1.5 signatures are
    /// deterministic).
    ///
    /// Layout (RFC 8894 §3.2, §3.3.2; RFC 5652 §5): SignedData version 1,
    /// digestAlgorithms `{digest}`, encapContentInfo `id-data` with the envelope
    /// as eContent on SUCCESS only, certificates `[0]` = the RA certificate, one
    /// SignerInfo version 1 (sid issuerAndSerialNumber) with DER-sorted signed
    /// attributes and a sha*WithRSAEncryption signature.
    ///
    /// # Errors
    /// [`CertRepError::Sign`] when the RA key fails to sign.
    pub fn build_with_nonce(
        &self,
        status: CertRepStatus<'_>,
        sender_nonce: &[u8; SENDER_NONCE_LEN],
    ) -> Result<Vec<u8>, CertRepError> {
        let digest = self.digest.for_reply();
        let content = match status {
            CertRepStatus::Success { envelope } => Some(envelope),
            CertRepStatus::Failure(_) | CertRepStatus::Pending => None,
        };
        // RFC 5652 §5.4: messageDigest covers the eContent octets; absent content digests as empty.
        let message_digest = digest.digest(content.unwrap_or_default());
        let attrs = signed_attributes(&SignedAttributes {
            message_digest: &message_digest,
            status,
            transaction_id: self.transaction_id,
            sender_nonce,
            recipient_nonce: self.recipient_nonce,
            signing_time: self.signing_time,
        });
        // RFC 5652 §5.4: the signature is over the DER of the SET OF attributes (tag 0x31).
        let signature = self.ra_key.sign(digest, &attrs)?;
        Ok(self.write(digest, content, &attrs, &signature))
    }

    /// Writes the SignedData ContentInfo around the signed attributes and signature.
    fn write(&self, digest: DigestAlg, content: Option<&[u8]>, attrs: &[u8], signature: &[u8]) -> Vec<u8> {
        let ra = &self.ra_cert;
        let signature_oid = digest.rsa_signature_oid();
        // RFC 5754 §2: SHA-2 AlgorithmIdentifiers are generated with absent parameters.
        let digest_alg_len = algorithm_identifier_len(digest.oid(), false);
        let encap_contents = tlv_len(oid::DATA.len()) + content.map_or(0, |c| tlv_len(tlv_len(c.len())));
        let signer_info_contents = 3 // version INTEGER 1
            + tlv_len(issuer_and_serial_contents_len(ra))
            + digest_alg_len
            + attrs.len() // [0] IMPLICIT: same length as the SET
            + algorithm_identifier_len(signature_oid, true)
            + tlv_len(signature.len());
        let signer_infos = tlv_len(signer_info_contents);
        let signed_data_contents =
            3 + tlv_len(digest_alg_len) + tlv_len(encap_contents) + tlv_len(ra.raw.len()) + tlv_len(signer_infos);
        let inner = tlv_len(signed_data_contents);
        let total = content_info_len(oid::SIGNED_DATA, inner);

        let mut w = Writer::with_capacity(total);
        content_info_header(&mut w, oid::SIGNED_DATA, inner);
        header(&mut w, tag::SEQUENCE, signed_data_contents);
        // RFC 5652 §5.1: version 1 (issuerAndSerialNumber sid, id-data, no v2+ features).
        w.small_uint(1);
        header(&mut w, tag::SET, digest_alg_len);
        algorithm_identifier(&mut w, digest.oid(), false);
        header(&mut w, tag::SEQUENCE, encap_contents);
        w.oid(oid::DATA);
        if let Some(c) = content {
            // RFC 8894 §3.2: eContent [0] EXPLICIT OCTET STRING (primitive, strict DER).
            header(&mut w, tag::context_constructed(0), tlv_len(c.len()));
            // COPY: the sealed envelope into the reply.
            w.octet_string(c);
        }
        // RFC 8894 §3.3.2 / §2.2: the RA certificate, so the client can verify the reply.
        header(&mut w, tag::context_constructed(0), ra.raw.len());
        w.raw(ra.raw);
        header(&mut w, tag::SET, signer_infos);
        header(&mut w, tag::SEQUENCE, signer_info_contents);
        w.small_uint(1);
        issuer_and_serial(&mut w, ra);
        algorithm_identifier(&mut w, digest.oid(), false);
        // signedAttrs [0] IMPLICIT: the signed SET with its tag replaced.
        w.raw(&[tag::context_constructed(0)]);
        w.raw(attrs.get(1..).unwrap_or_default());
        algorithm_identifier(&mut w, signature_oid, true);
        w.octet_string(signature);
        let out = w.into_vec();
        debug_assert_eq!(out.len(), total);
        out
    }
}

/// The values of the signed attributes of one CertRep.
struct SignedAttributes<'a> {
    message_digest: &'a [u8],
    status: CertRepStatus<'a>,
    transaction_id: &'a str,
    sender_nonce: &'a [u8],
    recipient_nonce: &'a [u8],
    signing_time: UnixTime,
}

/// The most attributes a CertRep carries.
const MAX_ATTRIBUTES: usize = 9;

/// Encodes the signed attributes as a DER `SET OF Attribute` (tag 0x31),
/// sorted by encoding (X.690 §11.6), exactly the bytes the signature covers.
fn signed_attributes(a: &SignedAttributes<'_>) -> Vec<u8> {
    let mut body = Writer::with_capacity(
        200 + a.message_digest.len() + a.transaction_id.len() + a.sender_nonce.len() + a.recipient_nonce.len(),
    );
    let mut spans = [(0usize, 0usize); MAX_ATTRIBUTES];
    let mut n = 0;
    let mut attribute = |w: &mut Writer, attr_type: &[u8], value: &dyn Fn(&mut Writer)| {
        let start = w.as_slice().len();
        // RFC 5652 §5.3: Attribute ::= SEQUENCE { attrType, attrValues SET OF }
        w.sequence(|w| {
            w.oid(attr_type);
            w.set(|w| value(w));
        });
        if let Some(span) = spans.get_mut(n) {
            *span = (start, w.as_slice().len());
            n += 1;
        }
    };
    // RFC 5652 §11.1 contentType: id-data (the eContentType, also when eContent is absent).
    attribute(&mut body, oid::CONTENT_TYPE, &|w| {
        w.oid(oid::DATA);
    });
    // RFC 5652 §11.3 signingTime: UTCTime through 2049, GeneralizedTime after.
    attribute(&mut body, oid::SIGNING_TIME, &|w| a.signing_time.write_asn1(w));
    // RFC 5652 §11.2 messageDigest.
    attribute(&mut body, oid::MESSAGE_DIGEST, &|w| {
        w.octet_string(a.message_digest);
    });
    // RFC 8894 §3.2.1.2 messageType: PrintableString "3" (CertRep).
    attribute(&mut body, oid::SCEP_MESSAGE_TYPE, &|w| decimal(w, u64::from(MessageType::CERT_REP.0)));
    // RFC 8894 §3.2.1.3 pkiStatus: PrintableString "0", "2" or "3".
    attribute(&mut body, oid::SCEP_PKI_STATUS, &|w| decimal(w, u64::from(a.status.pki_status().0)));
    // RFC 8894 §3.2.1.4 failInfo: PrintableString, FAILURE only.
    if let Some(fail) = a.status.fail_info() {
        attribute(&mut body, oid::SCEP_FAIL_INFO, &|w| decimal(w, u64::from(fail.0)));
    }
    // RFC 8894 §3.2.1.1 transactionID: PrintableString, echoed.
    attribute(&mut body, oid::SCEP_TRANSACTION_ID, &|w| {
        if is_printable_string(a.transaction_id) {
            w.printable_string(a.transaction_id);
        } else {
            // Not representable as PrintableString (e.g. base64url '_'): UTF8String keeps
            // the exact characters, which is what clients compare (Go's encoding/asn1
            // marshals such strings the same way).
            w.utf8_string(a.transaction_id);
        }
    });
    // RFC 8894 §3.2.1.5 senderNonce / recipientNonce: OCTET STRING.
    attribute(&mut body, oid::SCEP_SENDER_NONCE, &|w| {
        w.octet_string(a.sender_nonce);
    });
    attribute(&mut body, oid::SCEP_RECIPIENT_NONCE, &|w| {
        w.octet_string(a.recipient_nonce);
    });

    let body = body.into_vec();
    let spans = &mut spans[..n];
    // X.690 §11.6: SET OF components in ascending order of their encodings.
    spans.sort_unstable_by(|x, y| body[x.0..x.1].cmp(&body[y.0..y.1]));
    let mut out = Writer::with_capacity(tlv_len(body.len()));
    header(&mut out, tag::SET, body.len());
    for &(start, end) in spans.iter() {
        out.raw(&body[start..end]);
    }
    out.into_vec()
}

/// Writes a small number as a decimal PrintableString.
fn decimal(w: &mut Writer, v: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut v = v;
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    w.tlv(tag::PRINTABLE_STRING, &digits[i..]);
}

/// True when every character is in the PrintableString set (X.680 §41.4).
fn is_printable_string(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_alphanumeric() || b" '()+,-./:=?".contains(&b))
}

/// A SUCCESS CertRep for an issued certificate (RFC 8894 §3.3.2): builds the
/// certs-only SignedData of `issued` followed by `chain`, seals it to
/// `requester` (the certificate that signed the request: the self-signed
/// transient one, or the old certificate on renewal) with
/// `cipher.for_reply()`, and signs the CertRep.
///
/// # Errors
/// [`CertRepError::Seal`] when the requester's key is not usable RSA;
/// [`CertRepError::Sign`] when the RA key fails to sign.
pub fn success_reply(
    builder: &CertRepBuilder<'_>,
    issued: &[u8],
    chain: &[&[u8]],
    requester: &CertificateRef<'_>,
    cipher: ContentCipher,
    rng: &dyn RandomSource,
) -> Result<Vec<u8>, CertRepError> {
    let mut certs: Vec<&[u8]> = Vec::with_capacity(1 + chain.len());
    certs.push(issued);
    certs.extend_from_slice(chain);
    sealed_reply(builder, &certs_only(&certs, &[]), requester, cipher, rng)
}

/// A SUCCESS CertRep answering GetCRL (RFC 8894 §3.3.3): the CRL in a
/// certs-only SignedData's `crls` field, sealed to `requester` with
/// `cipher.for_reply()`.
///
/// # Errors
/// As [`success_reply`].
pub fn crl_reply(
    builder: &CertRepBuilder<'_>,
    crl: &[u8],
    requester: &CertificateRef<'_>,
    cipher: ContentCipher,
    rng: &dyn RandomSource,
) -> Result<Vec<u8>, CertRepError> {
    sealed_reply(builder, &certs_only(&[], &[crl]), requester, cipher, rng)
}

fn sealed_reply(
    builder: &CertRepBuilder<'_>,
    degenerate: &[u8],
    requester: &CertificateRef<'_>,
    cipher: ContentCipher,
    rng: &dyn RandomSource,
) -> Result<Vec<u8>, CertRepError> {
    let envelope = seal(degenerate, requester, cipher.for_reply(), rng)?;
    builder.build(CertRepStatus::Success { envelope: &envelope }, rng)
}

/// A FAILURE CertRep with `fail_info` (RFC 8894 §3.3.2): no content.
///
/// # Errors
/// [`CertRepError::Sign`] when the RA key fails to sign.
pub fn failure_reply(
    builder: &CertRepBuilder<'_>,
    fail_info: FailInfo,
    rng: &dyn RandomSource,
) -> Result<Vec<u8>, CertRepError> {
    builder.build(CertRepStatus::Failure(fail_info), rng)
}

/// A PENDING CertRep (RFC 8894 §3.3.2): no content; the client polls with CertPoll.
///
/// # Errors
/// [`CertRepError::Sign`] when the RA key fails to sign.
pub fn pending_reply(builder: &CertRepBuilder<'_>, rng: &dyn RandomSource) -> Result<Vec<u8>, CertRepError> {
    builder.build(CertRepStatus::Pending, rng)
}
