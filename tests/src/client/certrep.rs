//! CertRep (RFC 8894 §3.3.2): verification of the reply's signature and
//! transaction attributes, then decryption of the issued certificates.

use scep_engine::codes::{FailInfo, MessageType, PkiStatus};
use scep_engine::crypto::{ContentCipher, DigestAlg, SignatureAlg};
use scep_engine::oid;
use scep_engine::wire::{Tlv, tag};
use scep_engine::x509::CertificateRef;

use super::envelope::open_envelope;
use super::error::{ClientError, Result};
use super::identity::DeviceKey;
use super::message::PkiRequest;
use super::signed_data::{is_strict_der, parse_degenerate, parse_signed_data};

/// A verified CertRep.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertRep {
    /// pkiStatus.
    pub status: PkiStatus,
    /// failInfo (present when status is FAILURE).
    pub fail_info: Option<FailInfo>,
    /// failInfoText (RFC 8894 §3.2.1.4), if sent.
    pub fail_info_text: Option<String>,
    /// Certificates from the decrypted degenerate PKCS#7 (SUCCESS only).
    pub certificates: Vec<Vec<u8>>,
    /// CRLs from the decrypted degenerate PKCS#7 (SUCCESS to GetCRL).
    pub crls: Vec<Vec<u8>>,
    /// The reply's transactionID (equal to the request's).
    pub transaction_id: String,
    /// The reply's senderNonce.
    pub sender_nonce: Vec<u8>,
    /// The reply's recipientNonce (equal to the request's senderNonce).
    pub recipient_nonce: Vec<u8>,
    /// The certificate the reply was verified with.
    pub signer_certificate: Vec<u8>,
    /// The SignerInfo digest algorithm.
    pub digest: DigestAlg,
    /// SignerInfo.signatureAlgorithm OID contents.
    pub signature_oid: Vec<u8>,
    /// The envelope's content cipher (SUCCESS only).
    pub content_cipher: Option<ContentCipher>,
    /// True when the whole reply, and the decrypted degenerate PKCS#7, are strict DER.
    pub strict_der: bool,
    /// The reply bytes as received.
    pub raw: Vec<u8>,
}

impl CertRep {
    /// The issued certificate: the one whose public key is the request's
    /// (falls back to the first certificate).
    pub fn issued_certificate(&self, key: &DeviceKey) -> Option<&[u8]> {
        self.certificates
            .iter()
            .find(|c| CertificateRef::parse(c).is_ok_and(|c| c.spki.raw == key.spki_der()))
            .or_else(|| self.certificates.first())
            .map(Vec::as_slice)
    }
}

/// The signed attributes SCEP uses, by OID.
#[derive(Default)]
struct Attributes<'a> {
    content_type: Option<Tlv<'a>>,
    message_digest: Option<Tlv<'a>>,
    message_type: Option<Tlv<'a>>,
    transaction_id: Option<Tlv<'a>>,
    pki_status: Option<Tlv<'a>>,
    fail_info: Option<Tlv<'a>>,
    fail_info_text: Option<Tlv<'a>>,
    sender_nonce: Option<Tlv<'a>>,
    recipient_nonce: Option<Tlv<'a>>,
}

fn parse_attributes<'a>(set: Tlv<'a>) -> Result<Attributes<'a>> {
    let mut a = Attributes::default();
    let mut r = set.reader();
    while !r.is_empty() {
        let attr = r.expect(tag::SEQUENCE).map_err(ClientError::decode("signed attribute"))?;
        let mut ar = attr.reader();
        let id = ar.expect(tag::OID).map_err(ClientError::decode("signed attribute type"))?.contents;
        let values = ar.expect(tag::SET).map_err(ClientError::decode("signed attribute values"))?;
        let mut vr = values.reader();
        let value = vr.read().map_err(ClientError::decode("signed attribute value"))?;
        if !vr.is_empty() {
            return Err(ClientError::protocol(format!("attribute {} has several values", oid::dotted(id))));
        }
        let slot = match id {
            oid::CONTENT_TYPE => &mut a.content_type,
            oid::MESSAGE_DIGEST => &mut a.message_digest,
            oid::SCEP_MESSAGE_TYPE => &mut a.message_type,
            oid::SCEP_TRANSACTION_ID => &mut a.transaction_id,
            oid::SCEP_PKI_STATUS => &mut a.pki_status,
            oid::SCEP_FAIL_INFO => &mut a.fail_info,
            oid::SCEP_FAIL_INFO_TEXT => &mut a.fail_info_text,
            oid::SCEP_SENDER_NONCE => &mut a.sender_nonce,
            oid::SCEP_RECIPIENT_NONCE => &mut a.recipient_nonce,
            _ => continue,
        };
        if slot.replace(value).is_some() {
            // RFC 5652 §5.3: each attribute type appears once.
            return Err(ClientError::protocol(format!("attribute {} appears twice", oid::dotted(id))));
        }
    }
    Ok(a)
}

fn required<'a>(v: Option<Tlv<'a>>, name: &str) -> Result<Tlv<'a>> {
    v.ok_or_else(|| ClientError::protocol(format!("CertRep lacks the {name} attribute")))
}

fn printable<'a>(t: Tlv<'a>, name: &str) -> Result<&'a [u8]> {
    if t.tag == tag::PRINTABLE_STRING {
        Ok(t.contents)
    } else {
        Err(ClientError::protocol(format!("{name} is not a PrintableString (tag {:#04x})", t.tag)))
    }
}

/// Verifies and opens the CertRep `raw` answering `request`.
///
/// The signer certificate is taken from the reply's certificates, else from
/// `trusted_signers`. When `trusted_signers` is not empty (the RA/CA from
/// GetCACert), the signer must be one of them.
///
/// Checks (RFC 8894 §3.3.2, RFC 5652 §5.4, §5.6): signature over the DER SET
/// OF signedAttrs, contentType = data, messageDigest, messageType = CertRep,
/// transactionID = ours, recipientNonce = our senderNonce, senderNonce
/// present, pkiStatus (and failInfo on FAILURE); on SUCCESS the envelope is
/// decrypted with `key` and must be addressed to our signer certificate.
///
/// # Errors
/// Any malformation or failed check.
pub fn verify_cert_rep(
    raw: &[u8],
    request: &PkiRequest,
    key: &DeviceKey,
    trusted_signers: &[Vec<u8>],
) -> Result<CertRep> {
    let d = ClientError::decode;
    let sd = parse_signed_data(raw)?;
    let [signer_info] = sd.signer_infos.as_slice() else {
        return Err(ClientError::protocol(format!("CertRep has {} SignerInfos, expected 1", sd.signer_infos.len())));
    };
    let mut r = signer_info.reader();
    r.expect(tag::INTEGER).map_err(d("SignerInfo version"))?;
    let sid = r.read().map_err(d("SignerInfo sid"))?;
    let digest_oid = r
        .expect(tag::SEQUENCE)
        .and_then(|t| t.reader().expect(tag::OID))
        .map_err(d("SignerInfo digestAlgorithm"))?
        .contents;
    let digest = DigestAlg::from_oid(digest_oid)
        .ok_or_else(|| ClientError::protocol(format!("unknown digest {}", oid::dotted(digest_oid))))?;
    if !sd.digest_algorithms.contains(&digest_oid) {
        return Err(ClientError::protocol("SignerInfo digest not listed in SignedData.digestAlgorithms"));
    }
    let signed_attrs = r
        .expect(tag::context_constructed(0))
        .map_err(|_| ClientError::protocol("CertRep SignerInfo has no signedAttrs"))?;
    let sig_oid = r
        .expect(tag::SEQUENCE)
        .and_then(|t| t.reader().expect(tag::OID))
        .map_err(d("SignerInfo signatureAlgorithm"))?
        .contents;
    let signature = r.expect(tag::OCTET_STRING).map_err(d("SignerInfo signature"))?.contents;

    // Find the signer certificate (RFC 5652 §5.3 SignerIdentifier).
    let candidates: Vec<&[u8]> =
        sd.certificates.iter().copied().chain(trusted_signers.iter().map(Vec::as_slice)).collect();
    let signer = candidates
        .iter()
        .filter_map(|c| CertificateRef::parse(c).ok())
        .find(|c| signer_matches(sid, c))
        .ok_or_else(|| ClientError::protocol("no certificate matches the CertRep SignerInfo sid"))?;
    if !trusted_signers.is_empty() && !trusted_signers.iter().any(|t| t.as_slice() == signer.raw) {
        return Err(ClientError::protocol("CertRep signed by a certificate that is not the RA/CA"));
    }
    let alg = SignatureAlg::from_oid(sig_oid, Some(digest))
        .ok_or_else(|| ClientError::protocol(format!("unknown signature algorithm {}", oid::dotted(sig_oid))))?;
    if let SignatureAlg::RsaPkcs1(d2) | SignatureAlg::Ecdsa(d2) = alg
        && d2 != digest
    {
        return Err(ClientError::protocol("signatureAlgorithm digest differs from digestAlgorithm"));
    }
    // RFC 5652 §5.4: the signature is over the DER of SET OF Attribute (tag 0x31).
    let mut signed_bytes = signed_attrs.raw.to_vec();
    signed_bytes[0] = tag::SET;
    let public = signer.spki.public_key().map_err(d("signer public key"))?;
    alg.verify(public, &signed_bytes, signature)
        .map_err(|_| ClientError::protocol("CertRep signature does not verify"))?;

    let attrs = parse_attributes(signed_attrs)?;
    let ct = required(attrs.content_type, "contentType")?;
    if ct.tag != tag::OID || ct.contents != sd.content_type {
        return Err(ClientError::protocol("contentType attribute differs from eContentType"));
    }
    let md = required(attrs.message_digest, "messageDigest")?;
    let content = sd.content.as_deref().unwrap_or_default();
    if md.tag != tag::OCTET_STRING || md.contents != digest.digest(content).as_slice() {
        return Err(ClientError::protocol("messageDigest does not match the content"));
    }
    let mt = printable(required(attrs.message_type, "messageType")?, "messageType")?;
    if MessageType::from_decimal(mt) != Some(MessageType::CERT_REP) {
        return Err(ClientError::protocol(format!("messageType is {:?}, not 3", String::from_utf8_lossy(mt))));
    }
    let tid = printable(required(attrs.transaction_id, "transactionID")?, "transactionID")?;
    if tid != request.transaction_id.as_bytes() {
        return Err(ClientError::protocol("transactionID differs from the request's"));
    }
    let rn = required(attrs.recipient_nonce, "recipientNonce")?;
    if rn.tag != tag::OCTET_STRING || rn.contents != request.sender_nonce.as_slice() {
        return Err(ClientError::protocol("recipientNonce differs from our senderNonce"));
    }
    let sn = required(attrs.sender_nonce, "senderNonce")?;
    if sn.tag != tag::OCTET_STRING || sn.contents.is_empty() {
        return Err(ClientError::protocol("senderNonce is not a non-empty OCTET STRING"));
    }
    let st = printable(required(attrs.pki_status, "pkiStatus")?, "pkiStatus")?;
    let status = PkiStatus::from_decimal(st)
        .filter(|s| s.name().is_some())
        .ok_or_else(|| ClientError::protocol(format!("pkiStatus {:?}", String::from_utf8_lossy(st))))?;
    let fail_info = match attrs.fail_info {
        Some(t) => Some(
            FailInfo::from_decimal(printable(t, "failInfo")?)
                .ok_or_else(|| ClientError::protocol("failInfo is not a number"))?,
        ),
        None => None,
    };
    if status == PkiStatus::FAILURE && fail_info.is_none() {
        return Err(ClientError::protocol("FAILURE without failInfo"));
    }
    if status != PkiStatus::FAILURE && fail_info.is_some() {
        return Err(ClientError::protocol("failInfo present with a non-FAILURE status"));
    }
    let fail_info_text = attrs.fail_info_text.map(|t| String::from_utf8_lossy(t.contents).into_owned());

    let mut strict_der = is_strict_der(raw);
    let mut certificates = Vec::new();
    let mut crls = Vec::new();
    let mut content_cipher = None;
    if status == PkiStatus::SUCCESS {
        let env = sd.content.as_deref().ok_or_else(|| ClientError::protocol("SUCCESS without pkcsPKIEnvelope"))?;
        strict_der &= is_strict_der(env);
        let ours = CertificateRef::parse(&request.signer_certificate).map_err(d("our signer certificate"))?;
        let opened = open_envelope(env, key, Some(&ours))?;
        strict_der &= is_strict_der(&opened.content);
        let degenerate = parse_degenerate(&opened.content)?;
        certificates = degenerate.certificates;
        crls = degenerate.crls;
        content_cipher = Some(opened.cipher);
    }
    Ok(CertRep {
        status,
        fail_info,
        fail_info_text,
        certificates,
        crls,
        transaction_id: String::from_utf8_lossy(tid).into_owned(),
        sender_nonce: sn.contents.to_vec(),
        recipient_nonce: rn.contents.to_vec(),
        signer_certificate: signer.raw.to_vec(),
        digest,
        signature_oid: sig_oid.to_vec(),
        content_cipher,
        strict_der,
        raw: raw.to_vec(),
    })
}

/// Does `sid` (IssuerAndSerialNumber or [0] SubjectKeyIdentifier) name `cert`?
fn signer_matches(sid: Tlv<'_>, cert: &CertificateRef<'_>) -> bool {
    match sid.tag {
        tag::SEQUENCE => {
            let mut r = sid.reader();
            let (Ok(issuer), Ok(serial)) = (r.expect(tag::SEQUENCE), r.expect(tag::INTEGER)) else { return false };
            issuer.raw == cert.issuer && serial.contents == cert.serial_der_contents
        }
        0x80 => cert
            .extension(oid::SUBJECT_KEY_IDENTIFIER)
            .ok()
            .flatten()
            .and_then(|(_, v)| scep_engine::wire::parse_single(v).ok())
            .is_some_and(|ski| ski.contents == sid.contents),
        _ => false,
    }
}
