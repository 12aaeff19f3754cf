//! The CertRep PKIMessage (RFC 8894 §3.3.2): the server's signed answer to
//! PKCSReq, RenewalReq, CertPoll, GetCert and GetCRL.
//!
//! A CertRep is a SignedData (RFC 5652 §5) signed by the RA key, carrying the
//! SCEP signed attributes of RFC 8894 §3.2.1 and, on SUCCESS, the
//! pkcsPKIEnvelope (the reply content sealed to the requester, §3.2.2). On
//! FAILURE and PENDING the pkcsPKIEnvelope is omitted (§3.3.2) but the eContent
//! is present and empty (an empty OCTET STRING, what Go pkcs7's
//! `NewSignedData(nil)` in micromdm's scepserver writes): OpenSSL's `PKCS7_verify` without external data,
//! which certmonger uses, refuses a reply whose eContent is absent ("no
//! content"), so certmonger could never see a rejection. The messageDigest is
//! the digest of the empty content.
//!
//! The whole message is written in one pass into a buffer of exactly its size.

use crate::codes::{FailInfo, MessageType, PkiStatus};
use crate::crypto::{ContentCipher, DigestAlg, KeyError, RaKey, RandomSource};
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

/// How the CertRep's SignerInfo names its signature algorithm (RFC 5652 §5.3
/// `signatureAlgorithm`). Both name the same PKCS #1 v1.5 signature with the
/// SignerInfo's digestAlgorithm: RFC 3370 §3.2 defines `rsaEncryption` for CMS
/// (which every implementation must accept) and allows
/// `sha*WithRSAEncryption` (RFC 5754 §3.2), which not every client accepts.
/// Which one a reply uses is the profile's
/// [`crate::config::ReplySignaturePolicy`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SignatureForm {
    /// `rsaEncryption` (`1.2.840.113549.1.1.1`), the digest given by the
    /// SignerInfo's digestAlgorithm. What sscep, certmonger, PyScep and
    /// scepreq send, what NDES writes, and the only form strongSwan's
    /// `pki --scep` (5.9.x) verifies.
    #[default]
    RsaEncryption,
    /// `sha256WithRSAEncryption` and its SHA-384/512 siblings, matching the
    /// digestAlgorithm. What jscep, micromdm's scepclient and strongSwan send.
    DigestWithRsa,
}

impl SignatureForm {
    /// The form a request's SignerInfo used, from its signatureAlgorithm OID
    /// contents: `rsaEncryption` gives [`Self::RsaEncryption`], anything else
    /// [`Self::DigestWithRsa`].
    pub fn of_request(signature_alg_oid: &[u8]) -> Self {
        if signature_alg_oid == oid::RSA_ENCRYPTION { Self::RsaEncryption } else { Self::DigestWithRsa }
    }

    /// The signatureAlgorithm OID contents for a signature made with `digest`.
    pub const fn oid(self, digest: DigestAlg) -> &'static [u8] {
        match self {
            Self::RsaEncryption => oid::RSA_ENCRYPTION,
            Self::DigestWithRsa => digest.rsa_signature_oid(),
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
    /// The RA private key matching `ra_cert` (checked at configuration time):
    /// RSA signs PKCS #1 v1.5 named as `signature_form` says, ECDSA signs
    /// `ecdsa-with-SHA*` (RFC 5753 §2.1.1).
    pub ra_key: &'a RaKey,
    /// The request's digest; the reply uses [`DigestAlg::for_reply`] of it for
    /// digestAlgorithm, messageDigest and the signature.
    pub digest: DigestAlg,
    /// How the SignerInfo names an RSA signature (see
    /// [`crate::config::ReplySignaturePolicy`]); not used with an ECDSA key,
    /// whose one form is `ecdsa-with-SHA*` after the digest.
    pub signature_form: SignatureForm,
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

    /// Builds the CertRep ContentInfo (DER) with the given senderNonce. With an
    /// RSA key the output is a pure function of the inputs (PKCS #1 v1.5
    /// signatures are deterministic); an ECDSA signature differs every time.
    ///
    /// Layout (RFC 8894 §3.2, §3.3.2; RFC 5652 §5): SignedData version 1,
    /// digestAlgorithms `{digest}`, encapContentInfo `id-data` with the envelope
    /// as eContent on SUCCESS only, certificates `[0]` = the RA certificate, one
    /// SignerInfo version 1 (sid issuerAndSerialNumber) with DER-sorted signed
    /// attributes and a PKCS #1 v1.5 signature named as `signature_form` says,
    /// or an ECDSA signature named `ecdsa-with-SHA*`.
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
            // Empty, not absent: see the module docs (certmonger interop).
            CertRepStatus::Failure(_) | CertRepStatus::Pending => Some(&[][..]),
        };
        // RFC 5652 §5.4: messageDigest covers the eContent octets.
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

    /// The SignerInfo's signatureAlgorithm for a signature made with `digest`:
    /// its OID contents and whether it has NULL parameters.
    fn signature_algorithm(&self, digest: DigestAlg) -> (&'static [u8], bool) {
        match self.ra_key {
            // RFC 3370 §3.2 / RFC 5754 §3.2: NULL parameters with RSA.
            RaKey::Rsa(_) => (self.signature_form.oid(digest), true),
            // RFC 5758 §3.2, RFC 5753 §2.1.1: ecdsa-with-SHA256/384/512 after
            // the digestAlgorithm, parameters absent.
            RaKey::Ecdsa(_) => (digest.ecdsa_signature_oid(), false),
        }
    }

    /// Writes the SignedData ContentInfo around the signed attributes and signature.
    fn write(&self, digest: DigestAlg, content: Option<&[u8]>, attrs: &[u8], signature: &[u8]) -> Vec<u8> {
        let ra = &self.ra_cert;
        let (signature_oid, null_params) = self.signature_algorithm(digest);
        // RFC 5754 §2: SHA-2 AlgorithmIdentifiers are generated with absent parameters.
        let digest_alg_len = algorithm_identifier_len(digest.oid(), false);
        let encap_contents = tlv_len(oid::DATA.len()) + content.map_or(0, |c| tlv_len(tlv_len(c.len())));
        let signer_info_contents = 3 // version INTEGER 1
            + tlv_len(issuer_and_serial_contents_len(ra))
            + digest_alg_len
            + attrs.len() // [0] IMPLICIT: same length as the SET
            + algorithm_identifier_len(signature_oid, null_params)
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
        algorithm_identifier(&mut w, signature_oid, null_params);
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

/// A FAILURE CertRep with `fail_info` (RFC 8894 §3.3.2): no pkcsPKIEnvelope (empty eContent).
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

/// A PENDING CertRep (RFC 8894 §3.3.2): no pkcsPKIEnvelope (empty eContent); the client polls with CertPoll.
///
/// # Errors
/// [`CertRepError::Sign`] when the RA key fails to sign.
pub fn pending_reply(builder: &CertRepBuilder<'_>, rng: &dyn RandomSource) -> Result<Vec<u8>, CertRepError> {
    builder.build(CertRepStatus::Pending, rng)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{PublicKeyRef, SignatureAlg};
    use crate::pkcs7::tests::{
        FixedRandom, assert_strict_der, content_info, open_envelope, openssl, openssl_available, recipient,
        scratch_dir, vector_dir,
    };
    use crate::wire::Tlv;

    const TID: &str = "2F3C9A61B0E4D7F8A1C3E5B7D9F1A3C5";
    const REQUEST_NONCE: [u8; 16] = *b"request-nonce-16";
    const NOW: UnixTime = UnixTime(1_795_574_366); // 2026-11-25T02:39:26Z

    /// The test RA certificate with its RSA key as an RA key.
    fn ra_recipient() -> (Vec<u8>, RaKey) {
        let (cert, key) = recipient();
        (cert, key.into())
    }

    fn builder<'a>(cert: &'a [u8], key: &'a RaKey, digest: DigestAlg) -> CertRepBuilder<'a> {
        CertRepBuilder {
            ra_cert: CertificateRef::parse(cert).unwrap(),
            ra_key: key,
            digest,
            signature_form: SignatureForm::DigestWithRsa,
            transaction_id: TID,
            recipient_nonce: &REQUEST_NONCE,
            signing_time: NOW,
        }
    }

    /// A CertRep taken apart, every structural field checked on the way.
    struct Parsed<'a> {
        digest: DigestAlg,
        content: Option<&'a [u8]>,
        /// The signed attributes in wire order: (type OID contents, the single value TLV).
        attrs: Vec<(&'a [u8], Tlv<'a>)>,
        /// The raw attribute encodings, in wire order.
        attr_raw: Vec<&'a [u8]>,
        /// The signed attributes as the signature covers them (tag 0x31).
        signed_set: Vec<u8>,
        signature_oid: &'a [u8],
        signature: &'a [u8],
    }

    impl Parsed<'_> {
        fn attr(&self, oid: &[u8]) -> Option<Tlv<'_>> {
            self.attrs.iter().find(|(o, _)| *o == oid).map(|(_, v)| *v)
        }
    }

    fn parse<'a>(der: &'a [u8], ra_cert: &CertificateRef<'_>) -> Parsed<'a> {
        assert_strict_der(der);
        let (ct, sd) = content_info(der);
        assert_eq!(ct, oid::SIGNED_DATA);
        let mut r = sd.expect_tag(tag::SEQUENCE).unwrap().reader();
        assert_eq!(r.read().unwrap().small_uint().unwrap(), 1, "SignedData version");
        let digest_algs = r.expect(tag::SET).unwrap();
        let mut dr = digest_algs.reader();
        let dalg = dr.expect(tag::SEQUENCE).unwrap();
        dr.finish().unwrap();
        let mut ar = dalg.reader();
        let digest = DigestAlg::from_oid(ar.expect(tag::OID).unwrap().contents).unwrap();
        ar.finish().unwrap(); // absent parameters (RFC 5754 §2)
        let encap = r.expect(tag::SEQUENCE).unwrap();
        let mut er = encap.reader();
        assert_eq!(er.expect(tag::OID).unwrap().contents, oid::DATA);
        let content = er.optional(tag::context_constructed(0)).unwrap().map(|e| {
            let mut x = e.reader();
            let os = x.expect(tag::OCTET_STRING).unwrap();
            x.finish().unwrap();
            os.contents
        });
        er.finish().unwrap();
        let certs = r.expect(tag::context_constructed(0)).unwrap();
        assert_eq!(certs.contents, ra_cert.raw, "certificates must be exactly the RA certificate");
        let sis = r.expect(tag::SET).unwrap();
        r.finish().unwrap();
        let mut sr = sis.reader();
        let si = sr.expect(tag::SEQUENCE).unwrap();
        sr.finish().unwrap();
        let mut s = si.reader();
        assert_eq!(s.read().unwrap().small_uint().unwrap(), 1, "SignerInfo version");
        let sid = s.expect(tag::SEQUENCE).unwrap();
        let mut ir = sid.reader();
        assert_eq!(ir.expect(tag::SEQUENCE).unwrap().raw, ra_cert.issuer);
        assert_eq!(ir.expect(tag::INTEGER).unwrap().contents, ra_cert.serial_der_contents);
        ir.finish().unwrap();
        let si_dalg = s.expect(tag::SEQUENCE).unwrap();
        assert_eq!(si_dalg.raw, dalg.raw);
        let signed = s.expect(tag::context_constructed(0)).unwrap();
        let salg = s.expect(tag::SEQUENCE).unwrap();
        let mut sar = salg.reader();
        let signature_oid = sar.expect(tag::OID).unwrap().contents;
        sar.expect(tag::NULL).unwrap();
        sar.finish().unwrap();
        let signature = s.expect(tag::OCTET_STRING).unwrap().contents;
        s.finish().unwrap();
        let mut attrs = Vec::new();
        let mut attr_raw = Vec::new();
        let mut ar = signed.reader();
        while !ar.is_empty() {
            let a = ar.expect(tag::SEQUENCE).unwrap();
            attr_raw.push(a.raw);
            let mut x = a.reader();
            let t = x.expect(tag::OID).unwrap().contents;
            let vals = x.expect(tag::SET).unwrap();
            x.finish().unwrap();
            let mut vr = vals.reader();
            let v = vr.read().unwrap();
            vr.finish().unwrap();
            attrs.push((t, v));
        }
        let mut signed_set = signed.raw.to_vec();
        signed_set[0] = tag::SET;
        Parsed { digest, content, attrs, attr_raw, signed_set, signature_oid, signature }
    }

    /// Checks signature, messageDigest, ordering and the attributes common to every CertRep.
    fn check_common(p: &Parsed<'_>, ra_cert: &CertificateRef<'_>, status: &[u8], sender_nonce: &[u8]) {
        let PublicKeyRef::Rsa(_) = ra_cert.spki.public_key().unwrap() else { panic!("RA key not RSA") };
        let alg = SignatureAlg::from_oid(p.signature_oid, None).unwrap();
        assert_eq!(alg, SignatureAlg::RsaPkcs1(p.digest), "signatureAlgorithm must match digestAlgorithm");
        alg.verify(ra_cert.spki.public_key().unwrap(), &p.signed_set, p.signature).unwrap();
        // DER SET OF: ascending encodings.
        for pair in p.attr_raw.windows(2) {
            assert!(pair[0] < pair[1], "signed attributes not DER-sorted");
        }
        let value = |o: &[u8]| p.attr(o).unwrap_or_else(|| panic!("missing attribute {}", oid::dotted(o)));
        assert_eq!(value(oid::CONTENT_TYPE).expect_tag(tag::OID).unwrap().contents, oid::DATA);
        let t = value(oid::SIGNING_TIME).expect_tag(tag::UTC_TIME).unwrap();
        assert_eq!(crate::time::parse_asn1_time(t).unwrap(), NOW);
        let md = value(oid::MESSAGE_DIGEST).expect_tag(tag::OCTET_STRING).unwrap().contents;
        assert_eq!(md, p.digest.digest(p.content.unwrap_or_default()));
        assert_eq!(value(oid::SCEP_MESSAGE_TYPE).expect_tag(tag::PRINTABLE_STRING).unwrap().contents, b"3");
        assert_eq!(value(oid::SCEP_PKI_STATUS).expect_tag(tag::PRINTABLE_STRING).unwrap().contents, status);
        assert_eq!(value(oid::SCEP_TRANSACTION_ID).expect_tag(tag::PRINTABLE_STRING).unwrap().contents, TID.as_bytes());
        assert_eq!(value(oid::SCEP_SENDER_NONCE).expect_tag(tag::OCTET_STRING).unwrap().contents, sender_nonce);
        assert_eq!(
            value(oid::SCEP_RECIPIENT_NONCE).expect_tag(tag::OCTET_STRING).unwrap().contents,
            &REQUEST_NONCE[..]
        );
    }

    fn fixed_nonce() -> [u8; 16] {
        let mut n = [0u8; 16];
        FixedRandom(42).fill(&mut n);
        n
    }

    #[test]
    fn failure_reply_fields() {
        let (cert, key) = ra_recipient();
        let b = builder(&cert, &key, DigestAlg::Sha256);
        let der = failure_reply(&b, FailInfo::BAD_CERT_ID, &FixedRandom(42)).unwrap();
        let p = parse(&der, &b.ra_cert);
        assert_eq!(p.digest, DigestAlg::Sha256);
        assert_eq!(p.signature_oid, oid::SHA256_WITH_RSA);
        assert_eq!(p.content, Some(&[][..]), "FAILURE carries no pkcsPKIEnvelope: an empty eContent");
        check_common(&p, &b.ra_cert, b"2", &fixed_nonce());
        assert_eq!(p.attr(oid::SCEP_FAIL_INFO).unwrap().expect_tag(tag::PRINTABLE_STRING).unwrap().contents, b"4");
        assert_eq!(p.attrs.len(), 9);
    }

    #[test]
    fn pending_reply_fields() {
        let (cert, key) = ra_recipient();
        let b = builder(&cert, &key, DigestAlg::Sha512);
        let der = pending_reply(&b, &FixedRandom(42)).unwrap();
        let p = parse(&der, &b.ra_cert);
        assert_eq!(p.digest, DigestAlg::Sha512);
        assert_eq!(p.signature_oid, oid::SHA512_WITH_RSA);
        assert_eq!(p.content, Some(&[][..]));
        check_common(&p, &b.ra_cert, b"3", &fixed_nonce());
        assert!(p.attr(oid::SCEP_FAIL_INFO).is_none(), "failInfo only on FAILURE");
        assert_eq!(p.attrs.len(), 8);
    }

    #[test]
    fn success_reply_round_trip() {
        let (cert, key) = ra_recipient();
        let requester = CertificateRef::parse(&cert).unwrap();
        for (req_digest, reply_digest, sig_oid) in [
            (DigestAlg::Sha1, DigestAlg::Sha256, oid::SHA256_WITH_RSA),
            (DigestAlg::Sha256, DigestAlg::Sha256, oid::SHA256_WITH_RSA),
            (DigestAlg::Sha384, DigestAlg::Sha384, oid::SHA384_WITH_RSA),
            (DigestAlg::Sha512, DigestAlg::Sha512, oid::SHA512_WITH_RSA),
        ] {
            let b = builder(&cert, &key, req_digest);
            let issued: &[u8] = &cert;
            let chain_ca = crate::wire::encode_tlv(tag::SEQUENCE, &[0x05, 0x00]);
            let der =
                success_reply(&b, issued, &[&chain_ca], &requester, ContentCipher::DesCbc, &FixedRandom(42)).unwrap();
            let p = parse(&der, &b.ra_cert);
            assert_eq!(p.digest, reply_digest, "{req_digest:?}");
            assert_eq!(p.signature_oid, sig_oid);
            check_common(&p, &b.ra_cert, b"0", &fixed_nonce());
            assert!(p.attr(oid::SCEP_FAIL_INFO).is_none());
            let envelope = p.content.expect("SUCCESS carries the pkcsPKIEnvelope");
            // Single DES requested: the reply is raised to 3DES.
            let (_, env) = content_info(envelope);
            let mut r = env.reader();
            r.read().unwrap();
            r.read().unwrap();
            let mut er = r.read().unwrap().reader();
            er.read().unwrap();
            let calg = er.read().unwrap();
            assert_eq!(calg.reader().read().unwrap().contents, oid::DES_EDE3_CBC);
            assert_eq!(
                open_envelope(envelope, &requester, key.as_rsa().unwrap()),
                certs_only(&[issued, &chain_ca], &[])
            );
        }
    }

    #[test]
    fn crl_reply_carries_the_crl() {
        let (cert, key) = ra_recipient();
        let requester = CertificateRef::parse(&cert).unwrap();
        let b = builder(&cert, &key, DigestAlg::Sha256);
        let crl = crate::wire::encode_tlv(tag::SEQUENCE, &[0x02, 0x01, 0x09]);
        let der = crl_reply(&b, &crl, &requester, ContentCipher::Aes128Cbc, &FixedRandom(1)).unwrap();
        let p = parse(&der, &b.ra_cert);
        let opened = open_envelope(p.content.unwrap(), &requester, key.as_rsa().unwrap());
        assert_eq!(opened, certs_only(&[], &[&crl]));
    }

    #[test]
    fn output_is_deterministic() {
        let (cert, key) = ra_recipient();
        let b = builder(&cert, &key, DigestAlg::Sha256);
        // FAILURE/PENDING: byte-identical for the same RandomSource (PKCS #1 v1.5 signing is deterministic).
        assert_eq!(
            failure_reply(&b, FailInfo::BAD_REQUEST, &FixedRandom(3)).unwrap(),
            failure_reply(&b, FailInfo::BAD_REQUEST, &FixedRandom(3)).unwrap()
        );
        assert_ne!(
            pending_reply(&b, &FixedRandom(3)).unwrap(),
            pending_reply(&b, &FixedRandom(4)).unwrap(),
            "the senderNonce must come from the RandomSource"
        );
        // SUCCESS: the envelope differs (random PKCS #1 v1.5 encryption padding inside aws-lc),
        // so compare the signed part for a given envelope.
        let envelope = b"an already sealed envelope".as_slice();
        let nonce = [7u8; 16];
        let a = b.build_with_nonce(CertRepStatus::Success { envelope }, &nonce).unwrap();
        assert_eq!(a, b.build_with_nonce(CertRepStatus::Success { envelope }, &nonce).unwrap());
        let p = parse(&a, &b.ra_cert);
        assert_eq!(p.content, Some(envelope));
        check_common(&p, &b.ra_cert, b"0", &nonce);
    }

    #[test]
    fn transaction_id_outside_printable_string_is_utf8() {
        let (cert, key) = ra_recipient();
        let mut b = builder(&cert, &key, DigestAlg::Sha256);
        b.transaction_id = "a_b*c";
        let der = pending_reply(&b, &FixedRandom(0)).unwrap();
        let p = parse(&der, &b.ra_cert);
        let t = p.attr(oid::SCEP_TRANSACTION_ID).unwrap();
        assert_eq!((t.tag, t.contents), (tag::UTF8_STRING, &b"a_b*c"[..]));
        assert!(is_printable_string("AZaz09 '()+,-./:=?"));
        assert!(!is_printable_string("é") && !is_printable_string("@") && !is_printable_string("_"));
    }

    #[test]
    fn long_values_keep_exact_sizes() {
        // A long transactionID and nonce push attributes past one-octet lengths.
        let (cert, key) = ra_recipient();
        let mut b = builder(&cert, &key, DigestAlg::Sha384);
        let long_tid = "A".repeat(300);
        let long_nonce = vec![1u8; 200];
        b.transaction_id = &long_tid;
        b.recipient_nonce = &long_nonce;
        let envelope = vec![0xab; 70_000];
        let der = b.build(CertRepStatus::Success { envelope: &envelope }, &FixedRandom(2)).unwrap();
        let p = parse(&der, &b.ra_cert);
        assert_eq!(p.content, Some(&envelope[..]));
        for pair in p.attr_raw.windows(2) {
            assert!(pair[0] < pair[1]);
        }
        assert_eq!(p.attr(oid::SCEP_TRANSACTION_ID).unwrap().contents, long_tid.as_bytes());
    }

    #[test]
    fn unusable_requester_key_is_a_seal_error() {
        let (cert, key) = ra_recipient();
        let b = builder(&cert, &key, DigestAlg::Sha256);
        let mut requester = CertificateRef::parse(&cert).unwrap();
        let (ec, _) = crate::crypto::EcPrivateKey::generate().unwrap();
        let spki = ec.spki_der().to_vec();
        requester.spki = crate::x509::SubjectPublicKeyInfoRef::parse(&spki).unwrap();
        let err = success_reply(&b, &cert, &[], &requester, ContentCipher::Aes256Cbc, &FixedRandom(0)).unwrap_err();
        assert_eq!(err, CertRepError::Seal(SealError::RecipientNotRsa));
    }

    /// `openssl cms -cmsout -print` text for a CertRep.
    fn cms_print(path: &std::path::Path) -> String {
        let (ok, out, err) = openssl(&["cms", "-cmsout", "-print", "-inform", "DER", "-in", path.to_str().unwrap()]);
        assert!(ok, "openssl cms -cmsout -print failed: {err}");
        String::from_utf8(out).unwrap()
    }

    /// The value lines openssl prints after the attribute `oid_dotted`.
    fn printed_value<'t>(text: &'t str, oid_dotted: &str) -> &'t str {
        let at = text.find(&format!("({oid_dotted})")).unwrap_or_else(|| panic!("{oid_dotted} not printed:\n{text}"));
        let rest = &text[at..];
        let set = rest.find("set:").unwrap();
        let line_end = rest[set..].find('\n').map_or(rest.len(), |i| set + i);
        let next_end = rest[line_end + 1..].find('\n').map_or(rest.len(), |i| line_end + 1 + i);
        rest[line_end + 1..next_end].trim()
    }

    #[test]
    fn openssl_verifies_and_decrypts_success() {
        if !openssl_available("openssl_verifies_and_decrypts_success") {
            return;
        }
        let dir = scratch_dir("certrep-success");
        let (cert, key) = ra_recipient();
        let requester = CertificateRef::parse(&cert).unwrap();
        let key_pem = vector_dir().join("recipient-key.pem");
        let cert_pem = vector_dir().join("recipient-cert.pem");
        for (digest, cipher) in [
            (DigestAlg::Sha256, ContentCipher::Aes256Cbc),
            (DigestAlg::Sha384, ContentCipher::Aes128Cbc),
            (DigestAlg::Sha512, ContentCipher::Aes192Cbc),
            (DigestAlg::Sha1, ContentCipher::DesEde3Cbc),
        ] {
            let b = builder(&cert, &key, digest);
            let der = success_reply(&b, &cert, &[&cert], &requester, cipher, &FixedRandom(8)).unwrap();
            let rep = dir.join("certrep.der");
            std::fs::write(&rep, &der).unwrap();
            let (ok, envelope, err) =
                openssl(&["cms", "-verify", "-noverify", "-inform", "DER", "-binary", "-in", rep.to_str().unwrap()]);
            assert!(ok, "{digest:?}/{cipher:?}: openssl cms -verify failed: {err}");
            assert_eq!(Some(&envelope[..]), parse(&der, &b.ra_cert).content);
            let env = dir.join("envelope.der");
            std::fs::write(&env, &envelope).unwrap();
            let (ok, p7, err) = openssl(&[
                "cms",
                "-decrypt",
                "-inform",
                "DER",
                "-binary",
                "-in",
                env.to_str().unwrap(),
                "-inkey",
                key_pem.to_str().unwrap(),
                "-recip",
                cert_pem.to_str().unwrap(),
            ]);
            assert!(ok, "{digest:?}/{cipher:?}: openssl cms -decrypt failed: {err}");
            assert_eq!(p7, certs_only(&[&cert, &cert], &[]));
            let p7_path = dir.join("p7.der");
            std::fs::write(&p7_path, &p7).unwrap();
            let (ok, text, err) =
                openssl(&["pkcs7", "-inform", "DER", "-print_certs", "-in", p7_path.to_str().unwrap()]);
            assert!(ok, "openssl pkcs7 -print_certs failed: {err}");
            assert_eq!(crate::pem::certificates(&String::from_utf8(text).unwrap()).unwrap(), vec![cert.clone(); 2]);
        }
        // A tampered reply must not verify (the check above can fail).
        let b = builder(&cert, &key, DigestAlg::Sha256);
        let mut der = success_reply(&b, &cert, &[], &requester, ContentCipher::Aes128Cbc, &FixedRandom(8)).unwrap();
        let n = der.len();
        der[n - 10] ^= 1;
        let rep = dir.join("tampered.der");
        std::fs::write(&rep, &der).unwrap();
        assert!(
            !openssl(&["cms", "-verify", "-noverify", "-inform", "DER", "-binary", "-in", rep.to_str().unwrap()]).0
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn openssl_reads_failure_and_pending() {
        if !openssl_available("openssl_reads_failure_and_pending") {
            return;
        }
        let dir = scratch_dir("certrep-failure");
        let empty = dir.join("empty");
        std::fs::write(&empty, b"").unwrap();
        let (cert, key) = ra_recipient();
        let b = builder(&cert, &key, DigestAlg::Sha256);
        for (name, der, status, fail) in [
            ("failure", failure_reply(&b, FailInfo::BAD_REQUEST, &FixedRandom(42)).unwrap(), "2", Some("2")),
            ("pending", pending_reply(&b, &FixedRandom(42)).unwrap(), "3", None),
        ] {
            let path = dir.join(format!("{name}.der"));
            std::fs::write(&path, &der).unwrap();
            // CMS view: the signature covers the (empty) content.
            let (ok, out, err) = openssl(&[
                "cms",
                "-verify",
                "-noverify",
                "-inform",
                "DER",
                "-binary",
                "-in",
                path.to_str().unwrap(),
                "-content",
                empty.to_str().unwrap(),
            ]);
            assert!(ok, "{name}: openssl cms -verify failed: {err}");
            assert!(out.is_empty());
            let text = cms_print(&path);
            assert!(!text.contains("eContent: <ABSENT>"), "{name}: eContent must be present (empty):\n{text}");
            // Regression: certmonger verifies with PKCS7_verify and no external
            // content, which fails with "no content" when eContent is absent.
            let (ok, out, err) =
                openssl(&["smime", "-verify", "-noverify", "-inform", "DER", "-in", path.to_str().unwrap()]);
            assert!(ok, "{name}: PKCS7_verify (openssl smime -verify) without -content failed: {err}");
            assert!(out.is_empty(), "{name}: the content is empty");
            assert!(text.contains("version: 1"), "{text}");
            assert_eq!(printed_value(&text, "2.16.840.1.113733.1.9.2"), "PRINTABLESTRING:3", "{name} messageType");
            assert_eq!(
                printed_value(&text, "2.16.840.1.113733.1.9.3"),
                format!("PRINTABLESTRING:{status}"),
                "{name} pkiStatus"
            );
            assert_eq!(printed_value(&text, "2.16.840.1.113733.1.9.7"), format!("PRINTABLESTRING:{TID}"));
            match fail {
                Some(f) => assert_eq!(printed_value(&text, "2.16.840.1.113733.1.9.4"), format!("PRINTABLESTRING:{f}")),
                None => assert!(!text.contains("2.16.840.1.113733.1.9.4"), "{name}: no failInfo:\n{text}"),
            }
            assert!(text.contains("2.16.840.1.113733.1.9.5"), "senderNonce");
            assert!(text.contains("2.16.840.1.113733.1.9.6"), "recipientNonce");
            // asn1parse accepts it as a single DER value.
            let (ok, _, err) = openssl(&["asn1parse", "-inform", "DER", "-in", path.to_str().unwrap()]);
            assert!(ok, "{name}: asn1parse failed: {err}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
