//! pkcsPKIEnvelope: CMS EnvelopedData with one KeyTransRecipientInfo
//! (RFC 8894 §3.2.2, RFC 5652 §6).

use scep_engine::crypto::{ContentCipher, RandomSource as _, SystemRandom, rsa_encrypt_pkcs1};
use scep_engine::oid;
use scep_engine::wire::{Reader, Writer, parse_single, tag};
use scep_engine::x509::CertificateRef;

use super::encoding::Encoding;
use super::error::{ClientError, Result};
use super::identity::DeviceKey;

/// Writes IssuerAndSerialNumber (RFC 5652 §10.2.4) for `cert`.
pub(crate) fn write_issuer_and_serial(w: &mut Writer, cert: &CertificateRef<'_>) {
    w.sequence(|w| {
        w.raw(cert.issuer);
        w.tlv(tag::INTEGER, cert.serial_der_contents);
    });
}

/// Encrypts `content` for the holder of `recipient` (the RA certificate) and
/// returns the ContentInfo { envelopedData } encoding.
///
/// # Errors
/// When the recipient key is not RSA or encryption fails.
pub fn build_envelope(
    content: &[u8],
    recipient: &CertificateRef<'_>,
    cipher: ContentCipher,
    encoding: Encoding,
) -> Result<Vec<u8>> {
    let key = cipher.generate_key(&SystemRandom);
    let mut iv = vec![0u8; cipher.iv_len()];
    SystemRandom.fill(&mut iv);
    let ciphertext =
        cipher.encrypt(&key, &iv, content).map_err(|_| ClientError::Crypto(format!("{} encryption", cipher.name())))?;
    // RFC 5652 §6.2.1: the content-encryption key wrapped with RSA PKCS#1 v1.5.
    let encrypted_key = rsa_encrypt_pkcs1(recipient.spki.raw, &key)?;

    let mut w = Writer::with_capacity(ciphertext.len() + 600);
    encoding.constructed(&mut w, tag::SEQUENCE, |w| {
        w.oid(oid::ENVELOPED_DATA);
        encoding.constructed(w, tag::context_constructed(0), |w| {
            encoding.constructed(w, tag::SEQUENCE, |w| {
                w.small_uint(0); // version 0: only KTRI with IssuerAndSerialNumber.
                w.set(|w| {
                    w.sequence(|w| {
                        w.small_uint(0);
                        write_issuer_and_serial(w, recipient);
                        w.sequence(|w| {
                            w.oid(oid::RSA_ENCRYPTION).null();
                        });
                        w.octet_string(&encrypted_key);
                    });
                });
                encoding.constructed(w, tag::SEQUENCE, |w| {
                    w.oid(oid::DATA);
                    w.sequence(|w| {
                        w.oid(cipher.oid());
                        w.octet_string(&iv);
                    });
                    // encryptedContent [0] IMPLICIT OCTET STRING.
                    encoding.octets(w, tag::context_primitive(0), &ciphertext);
                });
            });
        });
    });
    Ok(w.into_vec())
}

/// The plaintext of an envelope and how it was protected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenedEnvelope {
    /// The decrypted content.
    pub content: Vec<u8>,
    /// The content-encryption algorithm the sender chose.
    pub cipher: ContentCipher,
}

/// Decrypts a ContentInfo { envelopedData } addressed to `key`. When
/// `recipient` is given, the KeyTransRecipientInfo must name that certificate
/// (issuer and serial); otherwise the first KTRI is used.
///
/// # Errors
/// Malformed structure, no matching recipient, unknown cipher, or a
/// decryption failure.
pub fn open_envelope(der: &[u8], key: &DeviceKey, recipient: Option<&CertificateRef<'_>>) -> Result<OpenedEnvelope> {
    let d = ClientError::decode("pkcsPKIEnvelope");
    let ci = parse_single(der).and_then(|t| t.expect_tag(tag::SEQUENCE)).map_err(d)?;
    let mut r = ci.reader();
    if r.expect(tag::OID).map_err(ClientError::decode("pkcsPKIEnvelope"))?.contents != oid::ENVELOPED_DATA {
        return Err(ClientError::protocol("pkcsPKIEnvelope is not id-envelopedData"));
    }
    let explicit = r.expect(tag::context_constructed(0)).map_err(ClientError::decode("pkcsPKIEnvelope"))?;
    let env = explicit.reader().expect(tag::SEQUENCE).map_err(ClientError::decode("EnvelopedData"))?;
    let mut er = env.reader();
    let dec = ClientError::decode("EnvelopedData");
    let _version = er.read().and_then(|t| t.small_uint()).map_err(dec)?;
    er.optional(tag::context_constructed(0)).map_err(ClientError::decode("EnvelopedData originatorInfo"))?;
    let recipient_infos = er.expect(tag::SET).map_err(ClientError::decode("EnvelopedData recipientInfos"))?;
    let encrypted_key = find_ktri(recipient_infos.reader(), recipient)?;
    let eci = er.expect(tag::SEQUENCE).map_err(ClientError::decode("EncryptedContentInfo"))?;
    let mut cr = eci.reader();
    let dec = ClientError::decode("EncryptedContentInfo");
    let _content_type = cr.expect(tag::OID).map_err(dec)?;
    let alg = cr.expect(tag::SEQUENCE).map_err(ClientError::decode("contentEncryptionAlgorithm"))?;
    let mut ar = alg.reader();
    let alg_oid = ar.expect(tag::OID).map_err(ClientError::decode("contentEncryptionAlgorithm"))?.contents;
    let cipher = ContentCipher::from_oid(alg_oid)
        .ok_or_else(|| ClientError::protocol(format!("unknown content cipher {}", oid::dotted(alg_oid))))?;
    let iv = ar.read().and_then(|t| t.octets()).map_err(ClientError::decode("content cipher IV"))?;
    let ct_tlv = cr.read().map_err(ClientError::decode("encryptedContent"))?;
    if ct_tlv.tag & 0xdf != tag::context_primitive(0) {
        return Err(ClientError::protocol("encryptedContent [0] missing"));
    }
    let ciphertext = ct_tlv.implicit_octets().map_err(ClientError::decode("encryptedContent"))?;
    let content_key = key
        .rsa()
        .decrypt_pkcs1(&encrypted_key)
        .ok_or_else(|| ClientError::Crypto("cannot unwrap the content-encryption key".into()))?;
    let mut buf = ciphertext.into_owned();
    let n = cipher
        .decrypt(&content_key, &iv, &mut buf)
        .map_err(|_| ClientError::Crypto(format!("{} decryption failed", cipher.name())))?;
    buf.truncate(n);
    Ok(OpenedEnvelope { content: buf, cipher })
}

/// Finds the KeyTransRecipientInfo for `recipient` (or the first KTRI) and
/// returns its encryptedKey.
fn find_ktri(mut infos: Reader<'_>, recipient: Option<&CertificateRef<'_>>) -> Result<Vec<u8>> {
    while !infos.is_empty() {
        let ri = infos.read().map_err(ClientError::decode("RecipientInfo"))?;
        if ri.tag != tag::SEQUENCE {
            continue; // kari/kekri/pwri/ori are [n]-tagged; not ours.
        }
        let mut r = ri.reader();
        let dec = ClientError::decode("KeyTransRecipientInfo");
        let _version = r.read().map_err(dec)?;
        let rid = r.read().map_err(ClientError::decode("KeyTransRecipientInfo rid"))?;
        let matches = match (recipient, rid.tag) {
            (None, _) => true,
            (Some(cert), tag::SEQUENCE) => {
                let mut ir = rid.reader();
                let issuer = ir.expect(tag::SEQUENCE).map_err(ClientError::decode("rid issuer"))?.raw;
                let serial = ir.expect(tag::INTEGER).map_err(ClientError::decode("rid serial"))?.contents;
                issuer == cert.issuer && serial == cert.serial_der_contents
            }
            (Some(_), _) => false,
        };
        if !matches {
            continue;
        }
        let _alg = r.expect(tag::SEQUENCE).map_err(ClientError::decode("keyEncryptionAlgorithm"))?;
        let ek = r.read().and_then(|t| t.octets()).map_err(ClientError::decode("encryptedKey"))?;
        return Ok(ek.into_owned());
    }
    Err(ClientError::protocol("no KeyTransRecipientInfo for our certificate"))
}
