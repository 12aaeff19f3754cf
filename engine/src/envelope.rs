//! Opening the pkcsPKIEnvelope (RFC 8894 §3.2.2): a CMS EnvelopedData (RFC
//! 5652 §6) whose content key is RSA PKCS#1 v1.5 key-transported to the RA.
//!
//! Key unwrap uses implicit rejection: when the RSA unwrap fails (bad padding,
//! wrong key length) decryption continues with a random key, so a padding
//! failure takes the same code path and returns the same error as a content
//! decryption failure. That denies a Bleichenbacher padding oracle.

use crate::codes::FailInfo;
use crate::crypto::{ContentCipher, CryptoProvider, RandomSource, RsaPrivateKey};
use crate::message::CertIdRef;
use crate::oid;
use crate::wire::{DecodeError, Tlv, parse_single, tag};
use crate::x509::CertificateRef;

/// A decrypted pkcsPKIEnvelope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Opened {
    /// The decrypted content (PKCS#10 for PKCSReq/RenewalReq, IssuerAndSubject
    /// for CertPoll, IssuerAndSerialNumber for GetCert/GetCRL).
    pub content: Vec<u8>,
    /// The content-encryption algorithm the client used (mirror it in the reply).
    pub cipher: ContentCipher,
    /// Which of the recipients given to [`open_for`] the envelope was opened
    /// with (an index into that slice; always 0 for [`open`]).
    pub recipient: usize,
}

/// A certificate the server publishes and can receive envelopes for, with its
/// key (RFC 5652 §6.2.1: the RecipientInfo names the certificate).
#[derive(Clone, Copy, Debug)]
pub struct Recipient<'a> {
    /// The published certificate.
    pub certificate: CertificateRef<'a>,
    /// Its private key.
    pub key: &'a RsaPrivateKey,
}

/// Why an envelope could not be opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// Broken BER/DER, a wrong content type, a missing IV or ciphertext.
    /// failInfo `badRequest`.
    Malformed(DecodeError),
    /// No KeyTransRecipientInfo names a certificate the server can decrypt
    /// for (e.g. the request was encrypted to the CA certificate while the CA
    /// is not the RA). failInfo `badMessageCheck`, like a failed decryption:
    /// the server cannot read the request.
    NoRecipient,
    /// The key-encryption algorithm is not rsaEncryption (e.g. RSAES-OAEP).
    /// failInfo `badAlg`.
    UnsupportedKeyEncryption,
    /// The content-encryption algorithm OID is not one we know. failInfo `badAlg`.
    UnsupportedCipher,
    /// The content-encryption algorithm is known but not allowed by the profile.
    /// failInfo `badAlg`.
    CipherNotAllowed(ContentCipher),
    /// The content key did not unwrap or the content did not decrypt; the two
    /// are deliberately indistinguishable. failInfo `badMessageCheck`.
    DecryptFailed,
    /// The RA key could not be used at all, whatever the ciphertext (an HSM
    /// token gone: [`crate::crypto::KeyError::is_unavailable`]). Not an
    /// oracle: it does not depend on the request. failInfo `badMessageCheck`
    /// if answered as a CertRep; a transport should rather answer 503.
    KeyUnavailable,
}

impl EnvelopeError {
    /// The CertRep failInfo for this error (RFC 8894 §3.2.1.4).
    pub const fn fail_info(&self) -> FailInfo {
        match self {
            Self::Malformed(_) => FailInfo::BAD_REQUEST,
            Self::UnsupportedKeyEncryption | Self::UnsupportedCipher | Self::CipherNotAllowed(_) => FailInfo::BAD_ALG,
            Self::NoRecipient | Self::DecryptFailed | Self::KeyUnavailable => FailInfo::BAD_MESSAGE_CHECK,
        }
    }
}

impl From<DecodeError> for EnvelopeError {
    fn from(e: DecodeError) -> Self {
        Self::Malformed(e)
    }
}

impl std::fmt::Display for EnvelopeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Malformed(e) => write!(f, "malformed envelope: {e}"),
            Self::NoRecipient => f.write_str("no RecipientInfo names an RA certificate of this profile"),
            Self::UnsupportedKeyEncryption => f.write_str("unsupported key-encryption algorithm"),
            Self::UnsupportedCipher => f.write_str("unsupported content-encryption algorithm"),
            Self::CipherNotAllowed(c) => write!(f, "content encryption {} not allowed", c.name()),
            Self::DecryptFailed => f.write_str("envelope decryption failed"),
            Self::KeyUnavailable => f.write_str("the RA key is unavailable"),
        }
    }
}

impl std::error::Error for EnvelopeError {}

/// One KeyTransRecipientInfo (RFC 5652 §6.2.1).
struct KeyTrans<'a> {
    rid: CertIdRef<'a>,
    key_encryption_alg: &'a [u8],
    encrypted_key: &'a [u8],
}

/// Opens a pkcsPKIEnvelope addressed to the RA (RFC 8894 §3.2.2, RFC 5652 §6).
///
/// The one-recipient form of [`open_for`]: the envelope must carry a
/// KeyTransRecipientInfo naming `ra_cert`.
///
/// # Errors
/// See [`EnvelopeError`]; [`EnvelopeError::fail_info`] gives the failInfo.
pub fn open(
    envelope: &[u8],
    ra_cert: &CertificateRef<'_>,
    ra_key: &RsaPrivateKey,
    allowed: &[ContentCipher],
    rng: &dyn RandomSource,
) -> Result<Opened, EnvelopeError> {
    open_for(envelope, &[Recipient { certificate: *ra_cert, key: ra_key }], allowed, rng)
}

/// Opens a pkcsPKIEnvelope addressed to any of `recipients` (RFC 8894 §3.2.2,
/// RFC 5652 §6).
///
/// `envelope` is the ContentInfo(envelopedData), DER or BER. The first
/// KeyTransRecipientInfo whose rid (issuerAndSerialNumber or
/// subjectKeyIdentifier, RFC 5652 §6.2.1) names one of `recipients` is
/// decrypted with that recipient's key; RecipientInfos naming other
/// certificates (a client may encrypt to every certificate GetCACert gave it,
/// the CA's included) are ignored. When none names a recipient the envelope is
/// refused ([`EnvelopeError::NoRecipient`]) without trying any key. `allowed`
/// lists the content ciphers the profile accepts. `rng` supplies the
/// implicit-rejection key.
///
/// # Errors
/// See [`EnvelopeError`]; [`EnvelopeError::fail_info`] gives the failInfo.
pub fn open_for(
    envelope: &[u8],
    recipients: &[Recipient<'_>],
    allowed: &[ContentCipher],
    rng: &dyn RandomSource,
) -> Result<Opened, EnvelopeError> {
    open_for_with(&**crate::crypto::default_provider(), envelope, recipients, allowed, rng)
}

/// [`open_for`] with the content cipher of `provider` (the key transport is
/// the recipient key's own).
///
/// # Errors
/// As [`open_for`].
pub fn open_for_with(
    provider: &dyn CryptoProvider,
    envelope: &[u8],
    recipients: &[Recipient<'_>],
    allowed: &[ContentCipher],
    rng: &dyn RandomSource,
) -> Result<Opened, EnvelopeError> {
    let (infos, eci) = enveloped_data(envelope)?;
    let Some((chosen, recipient)) =
        infos.iter().find_map(|k| recipients.iter().position(|r| k.rid.matches(&r.certificate)).map(|i| (k, i)))
    else {
        return Err(EnvelopeError::NoRecipient);
    };
    let ra_key = recipients[recipient].key;
    // RFC 8894 §3.2.2 / RFC 5652 §6.2.1: RSA PKCS#1 v1.5 key transport.
    if chosen.key_encryption_alg != oid::RSA_ENCRYPTION {
        return Err(EnvelopeError::UnsupportedKeyEncryption);
    }

    // RFC 5652 §6.1 EncryptedContentInfo
    let mut r = eci.reader();
    r.expect(tag::OID)?; // contentType (id-data; not interpreted)
    let alg = r.expect(tag::SEQUENCE)?;
    let encrypted = r.read()?;
    r.finish()?;
    if encrypted.tag & !0x20 != tag::context_primitive(0) {
        return Err(EnvelopeError::Malformed(DecodeError::new(
            crate::wire::DecodeErrorKind::UnexpectedTag { expected: tag::context_primitive(0), found: encrypted.tag },
            encrypted.offset,
        )));
    }
    let (cipher, iv) = content_cipher(alg)?;
    if !allowed.contains(&cipher) {
        return Err(EnvelopeError::CipherNotAllowed(cipher));
    }

    // Implicit rejection: draw the substitute key first, then replace the
    // unwrapped key with it on any failure, so both paths do the same work.
    let substitute = cipher.generate_key_with(provider, rng);
    let unwrapped = ra_key.decrypt_pkcs1v15(chosen.encrypted_key).map_err(|_| EnvelopeError::KeyUnavailable)?;
    let key = match unwrapped {
        Some(k) if k.len() == cipher.key_len() => k,
        _ => substitute,
    };
    // COPY: the CMS decryption output (STYLE.md §4, allowed copy 2); for BER
    // chunked ciphertext the reassembled buffer is decrypted in place instead.
    let mut buf = encrypted.implicit_octets()?.into_owned();
    let n = provider.decrypt_content(cipher, &key, iv, &mut buf).map_err(|_| EnvelopeError::DecryptFailed)?;
    buf.truncate(n);
    Ok(Opened { content: buf, cipher, recipient })
}

/// Splits a ContentInfo(envelopedData) into its KeyTransRecipientInfos and
/// its EncryptedContentInfo (RFC 5652 §3, §6.1).
fn enveloped_data(envelope: &[u8]) -> Result<(Vec<KeyTrans<'_>>, Tlv<'_>), EnvelopeError> {
    // RFC 5652 §3 ContentInfo
    let ci = parse_single(envelope)?.expect_tag(tag::SEQUENCE)?;
    let mut r = ci.reader();
    let ct = r.expect(tag::OID)?;
    if ct.contents != oid::ENVELOPED_DATA {
        return Err(EnvelopeError::Malformed(DecodeError::new(crate::wire::DecodeErrorKind::InvalidValue, ct.offset)));
    }
    let explicit = r.expect(tag::context_constructed(0))?;
    r.finish()?;
    let mut er = explicit.reader();
    let ed = er.expect(tag::SEQUENCE)?;
    er.finish()?;

    // RFC 5652 §6.1 EnvelopedData
    let mut r = ed.reader();
    r.expect(tag::INTEGER)?; // version
    r.optional(tag::context_constructed(0))?; // originatorInfo
    let recipients = key_trans_recipients(r.expect(tag::SET)?)?;
    let eci = r.expect(tag::SEQUENCE)?;
    r.optional(tag::context_constructed(1))?; // unprotectedAttrs
    r.finish()?;
    Ok((recipients, eci))
}

/// The certificates an envelope's KeyTransRecipientInfos name, for telling an
/// operator whom a request was encrypted to: `issuer <name>, serial <hex>` or
/// `subjectKeyIdentifier <hex>`, in the envelope's order.
///
/// # Errors
/// When the envelope does not parse.
pub fn recipient_names(envelope: &[u8]) -> Result<Vec<String>, EnvelopeError> {
    let (infos, _) = enveloped_data(envelope)?;
    Ok(infos
        .iter()
        .map(|k| match k.rid {
            CertIdRef::IssuerAndSerial { issuer, serial } => {
                format!("issuer {}, serial {}", crate::x509::name_to_string(issuer), crate::handle::hex(serial))
            }
            CertIdRef::SubjectKeyId(ski) => format!("subjectKeyIdentifier {}", crate::handle::hex(ski)),
        })
        .collect())
}

/// The KeyTransRecipientInfos of a RecipientInfos SET (other kinds are skipped).
fn key_trans_recipients<'a>(set: Tlv<'a>) -> Result<Vec<KeyTrans<'a>>, DecodeError> {
    let mut out = Vec::new();
    let mut r = set.reader();
    while !r.is_empty() {
        let ri = r.read()?;
        // RecipientInfo CHOICE: ktri is the untagged SEQUENCE; kari [1], kekri
        // [2], pwri [3] and ori [4] are not used by SCEP.
        if ri.tag != tag::SEQUENCE {
            continue;
        }
        let mut kr = ri.reader();
        kr.expect(tag::INTEGER)?; // version 0 (IAS) or 2 (SKI)
        let rid = CertIdRef::from_tlv(kr.read()?)?;
        let key_encryption_alg = kr.expect(tag::SEQUENCE)?.reader().expect(tag::OID)?.contents;
        let encrypted_key = kr.expect(tag::OCTET_STRING)?.contents;
        kr.finish()?;
        out.push(KeyTrans { rid, key_encryption_alg, encrypted_key });
    }
    Ok(out)
}

/// The content cipher and IV from a ContentEncryptionAlgorithmIdentifier
/// (CBC ciphers carry the IV as an OCTET STRING parameter; RFC 3565 §4.1,
/// RFC 8018 §B.2).
fn content_cipher(alg: Tlv<'_>) -> Result<(ContentCipher, &[u8]), EnvelopeError> {
    let mut r = alg.reader();
    let id = r.expect(tag::OID)?.contents;
    let cipher = ContentCipher::from_oid(id).ok_or(EnvelopeError::UnsupportedCipher)?;
    let iv_tlv = r.expect(tag::OCTET_STRING)?;
    r.finish()?;
    if iv_tlv.contents.len() != cipher.iv_len() {
        return Err(EnvelopeError::Malformed(DecodeError::new(
            crate::wire::DecodeErrorKind::InvalidValue,
            iv_tlv.offset,
        )));
    }
    Ok((cipher, iv_tlv.contents))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::message::PkiMessageRef;
    use crate::message::tests::{CAPTURES, capture, vector};

    /// Deterministic test randomness.
    #[derive(Debug)]
    pub(crate) struct FixedRng;
    impl RandomSource for FixedRng {
        fn fill(&self, buf: &mut [u8]) {
            for (i, b) in buf.iter_mut().enumerate() {
                *b = (i as u8).wrapping_mul(151).wrapping_add(29);
            }
        }
    }

    pub(crate) const ALL: [ContentCipher; 5] = [
        ContentCipher::DesCbc,
        ContentCipher::DesEde3Cbc,
        ContentCipher::Aes128Cbc,
        ContentCipher::Aes192Cbc,
        ContentCipher::Aes256Cbc,
    ];

    pub(crate) struct Ra {
        pub(crate) cert: Vec<u8>,
        pub(crate) key: RsaPrivateKey,
    }

    pub(crate) fn ra() -> Ra {
        let cert_pem = String::from_utf8(vector("recipient-cert.pem")).unwrap();
        let key_pem = String::from_utf8(vector("recipient-key.pem")).unwrap();
        let cert = crate::pem::certificates(&cert_pem).unwrap().remove(0);
        let key = RsaPrivateKey::from_der(&crate::pem::private_key(&key_pem).unwrap()).unwrap();
        Ra { cert, key }
    }

    /// The decrypted content of a capture's envelope.
    pub(crate) fn open_capture(stem: &str) -> Opened {
        let ra = ra();
        let cert = CertificateRef::parse(&ra.cert).unwrap();
        let raw = capture(stem);
        let m = PkiMessageRef::parse(&raw).unwrap();
        open(&m.content, &cert, &ra.key, &ALL, &FixedRng).unwrap_or_else(|e| panic!("{stem}: {e}"))
    }

    #[test]
    fn opens_all_captures() {
        for (stem, _, _, cipher, _) in CAPTURES {
            let opened = open_capture(stem);
            assert_eq!(opened.cipher, cipher, "{stem}");
            // The content is a PKCS#10 CertificationRequest.
            let csr = parse_single(&opened.content).unwrap();
            assert_eq!(csr.tag, tag::SEQUENCE, "{stem}");
        }
    }

    #[test]
    fn des_refused_unless_allowed() {
        let ra = ra();
        let cert = CertificateRef::parse(&ra.cert).unwrap();
        let raw = capture("scepclient");
        let m = PkiMessageRef::parse(&raw).unwrap();
        let modern = [ContentCipher::Aes128Cbc, ContentCipher::Aes256Cbc, ContentCipher::DesEde3Cbc];
        let e = open(&m.content, &cert, &ra.key, &modern, &FixedRng).unwrap_err();
        assert_eq!(e, EnvelopeError::CipherNotAllowed(ContentCipher::DesCbc));
        assert_eq!(e.fail_info(), FailInfo::BAD_ALG);
        assert!(open(&m.content, &cert, &ra.key, &[ContentCipher::DesCbc], &FixedRng).is_ok());
    }

    #[test]
    fn wrong_key_and_corrupt_ciphertext_are_the_same_error() {
        let ra = ra();
        let cert = CertificateRef::parse(&ra.cert).unwrap();
        let (other_key, _) = RsaPrivateKey::generate(2048).unwrap();
        for (stem, ..) in CAPTURES {
            let raw = capture(stem);
            let m = PkiMessageRef::parse(&raw).unwrap();
            // Wrong RA key: the PKCS#1 unwrap fails, implicit rejection continues.
            let wrong = open(&m.content, &cert, &other_key, &ALL, &FixedRng).unwrap_err();
            assert_eq!(wrong, EnvelopeError::DecryptFailed, "{stem}");
            assert_eq!(wrong.fail_info(), FailInfo::BAD_MESSAGE_CHECK);

            // Corrupt encrypted key: same error.
            let mut env = m.content.to_vec();
            let ek_at = find_encrypted_key(&env);
            env[ek_at + 10] ^= 0x55;
            assert_eq!(open(&env, &cert, &ra.key, &ALL, &FixedRng).unwrap_err(), wrong, "{stem}");

            // Corrupt last ciphertext block (padding): same error.
            let mut env = m.content.to_vec();
            let last = env.len() - if env.ends_with(&[0, 0, 0, 0]) { 9 } else { 1 };
            env[last] ^= 0x55;
            assert_eq!(open(&env, &cert, &ra.key, &ALL, &FixedRng).unwrap_err(), wrong, "{stem}");
        }
    }

    /// Offset of the first KTRI encryptedKey contents in an envelope.
    fn find_encrypted_key(env: &[u8]) -> usize {
        let ed = parse_single(env).unwrap().reader().nth_tlv(1).reader().read().unwrap();
        let ktri = ed.reader().nth_tlv(1).reader().read().unwrap();
        let ek = ktri.reader().nth_tlv(3);
        ek.contents.as_ptr() as usize - env.as_ptr() as usize
    }

    trait Nth<'a> {
        fn nth_tlv(self, n: usize) -> Tlv<'a>;
    }
    impl<'a> Nth<'a> for crate::wire::Reader<'a> {
        fn nth_tlv(mut self, n: usize) -> Tlv<'a> {
            for _ in 0..n {
                self.read().unwrap();
            }
            self.read().unwrap()
        }
    }

    #[test]
    fn recipient_selection() {
        let ra = ra();
        let cert = CertificateRef::parse(&ra.cert).unwrap();
        let raw = capture("sscep");
        let m = PkiMessageRef::parse(&raw).unwrap();
        // The capture's rid names the RA certificate.
        let env = m.content.to_vec();
        let ci = parse_single(&env).unwrap();
        let ed = ci.reader().nth_tlv(1).reader().read().unwrap();
        let ktri = ed.reader().nth_tlv(1).reader().read().unwrap();
        let rid = CertIdRef::from_tlv(ktri.reader().nth_tlv(1)).unwrap();
        assert!(rid.matches(&cert));
        // A certificate the rid does not name is never tried, even with the
        // right key and a lone RecipientInfo: the request was not meant for it.
        let signer = m.signer.unwrap();
        assert!(!rid.matches(&signer));
        let e = open(&m.content, &signer, &ra.key, &ALL, &FixedRng).unwrap_err();
        assert_eq!((e, e.fail_info()), (EnvelopeError::NoRecipient, FailInfo::BAD_MESSAGE_CHECK));
        // Among several recipients, the one the rid names is used and reported.
        let (other_key, _) = RsaPrivateKey::generate(2048).unwrap();
        let both = [Recipient { certificate: signer, key: &other_key }, Recipient { certificate: cert, key: &ra.key }];
        let opened = open_for(&m.content, &both, &ALL, &FixedRng).unwrap();
        assert_eq!((opened.recipient, opened.content), (1, open_capture("sscep").content));
        assert_eq!(
            recipient_names(&m.content).unwrap(),
            [format!(
                "issuer {}, serial {}",
                crate::x509::name_to_string(cert.issuer),
                crate::handle::hex(cert.serial)
            )]
        );
    }

    #[test]
    fn every_truncation_is_an_error() {
        let ra = ra();
        let cert = CertificateRef::parse(&ra.cert).unwrap();
        for (stem, ..) in CAPTURES {
            let raw = capture(stem);
            let m = PkiMessageRef::parse(&raw).unwrap();
            for len in 0..m.content.len() {
                assert!(open(&m.content[..len], &cert, &ra.key, &ALL, &FixedRng).is_err(), "{stem} {len}");
            }
        }
    }

    /// The parts of a capture's envelope: (version TLV, KTRI TLVs, content type
    /// TLV, content-encryption AlgorithmIdentifier TLV, ciphertext).
    type Parts = (Vec<u8>, Vec<Vec<u8>>, Vec<u8>, Vec<u8>, Vec<u8>);

    /// The parts of a capture's envelope (see [`Parts`]).
    fn envelope_parts(env: &[u8]) -> Parts {
        let ed = parse_single(env).unwrap().reader().nth_tlv(1).reader().read().unwrap();
        let mut r = ed.reader();
        let version = r.read().unwrap().raw.to_vec();
        let mut rr = r.read().unwrap().reader();
        let mut ktris = Vec::new();
        while !rr.is_empty() {
            ktris.push(rr.read().unwrap().raw.to_vec());
        }
        let mut er = r.read().unwrap().reader();
        let ct = er.read().unwrap().raw.to_vec();
        let alg = er.read().unwrap().raw.to_vec();
        let ciphertext = er.read().unwrap().implicit_octets().unwrap().into_owned();
        (version, ktris, ct, alg, ciphertext)
    }

    /// Re-encodes an envelope in BER: indefinite lengths everywhere and the
    /// ciphertext as a constructed `[0]` in 100-byte chunks (X.690 §8.7.3.2).
    fn ber_envelope(version: &[u8], ktris: &[Vec<u8>], ct: &[u8], alg: &[u8], ciphertext: &[u8]) -> Vec<u8> {
        let mut v = vec![0x30, 0x80];
        v.extend_from_slice(&crate::wire::encode_tlv(tag::OID, oid::ENVELOPED_DATA));
        v.extend_from_slice(&[0xa0, 0x80, 0x30, 0x80]);
        v.extend_from_slice(version);
        v.extend_from_slice(&[0x31, 0x80]);
        for k in ktris {
            v.extend_from_slice(k);
        }
        v.extend_from_slice(&[0, 0, 0x30, 0x80]);
        v.extend_from_slice(ct);
        v.extend_from_slice(alg);
        v.extend_from_slice(&[0xa0, 0x80]);
        for chunk in ciphertext.chunks(100) {
            v.extend_from_slice(&crate::wire::encode_tlv(tag::OCTET_STRING, chunk));
        }
        v.extend_from_slice(&[0; 10]);
        v
    }

    /// A KTRI naming a certificate by a subjectKeyIdentifier nobody has.
    fn ski_ktri(template: &[u8], ski: &[u8], key_alg: &[u8]) -> Vec<u8> {
        let mut r = parse_single(template).unwrap().reader();
        r.read().unwrap();
        r.read().unwrap();
        r.read().unwrap();
        let ek = r.read().unwrap().contents;
        let mut w = crate::wire::Writer::new();
        w.sequence(|w| {
            w.small_uint(2).tlv(0x80, ski);
            w.sequence(|w| {
                w.oid(key_alg).null();
            });
            w.octet_string(ek);
        });
        w.into_vec()
    }

    #[test]
    fn ber_chunked_ciphertext_and_recipient_choice() {
        let ra = ra();
        let cert = CertificateRef::parse(&ra.cert).unwrap();
        let expected = open_capture("sscep");
        let raw = capture("sscep");
        let m = PkiMessageRef::parse(&raw).unwrap();
        let (version, ktris, ct, alg, ciphertext) = envelope_parts(&m.content);
        assert_eq!(ktris.len(), 1);
        let real = &ktris[0];
        let stranger = ski_ktri(real, b"stranger", oid::RSA_ENCRYPTION);
        let other = ski_ktri(real, b"other", oid::RSA_ENCRYPTION);
        let open_with = |ktris: &[Vec<u8>]| {
            let env = ber_envelope(&version, ktris, &ct, &alg, &ciphertext);
            open(&env, &cert, &ra.key, &ALL, &FixedRng)
        };
        // BER, chunked ciphertext, the matching KTRI picked among several.
        assert_eq!(open_with(&[stranger.clone(), real.clone()]), Ok(expected.clone()));
        assert_eq!(open_with(&[real.clone(), other.clone()]), Ok(expected.clone()));
        // A single non-matching KTRI is not tried (it names someone else).
        assert_eq!(open_with(std::slice::from_ref(&stranger)), Err(EnvelopeError::NoRecipient));
        // Several, none matching: no recipient, badMessageCheck like a failed decryption.
        let e = open_with(&[stranger.clone(), other]).unwrap_err();
        assert_eq!(e, EnvelopeError::NoRecipient);
        assert_eq!(e.fail_info(), FailInfo::BAD_MESSAGE_CHECK);
        // A KTRI naming the certificate by subjectKeyIdentifier (RFC 5652 §6.2.1) is used.
        let Ok(Some((_, ski_ext))) = cert.extension(oid::SUBJECT_KEY_IDENTIFIER) else { panic!("no SKI") };
        let ski = parse_single(ski_ext).unwrap().contents;
        let by_ski = ski_ktri(real, ski, oid::RSA_ENCRYPTION);
        assert_eq!(open_with(&[stranger.clone(), by_ski]), Ok(expected));
        // RSAES-OAEP key transport to the RA is refused as an algorithm problem.
        let oaep = ski_ktri(real, ski, &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x07]);
        let e = open_with(&[oaep]).unwrap_err();
        assert_eq!(e, EnvelopeError::UnsupportedKeyEncryption);
        assert_eq!(e.fail_info(), FailInfo::BAD_ALG);
        // Non-KTRI recipient infos (here a [1] kari) are skipped.
        let kari = crate::wire::encode_tlv(tag::context_constructed(1), &[]);
        assert_eq!(open_with(&[kari, real.clone()]).map(|o| o.cipher), Ok(ContentCipher::Aes128Cbc));
    }

    #[test]
    fn malformed_is_bad_request() {
        let ra = ra();
        let cert = CertificateRef::parse(&ra.cert).unwrap();
        let e = open(b"\x30\x03\x06\x01\x2a", &cert, &ra.key, &ALL, &FixedRng).unwrap_err();
        assert!(matches!(e, EnvelopeError::Malformed(_)));
        assert_eq!(e.fail_info(), FailInfo::BAD_REQUEST);
    }

    #[test]
    fn unknown_cipher_is_bad_alg() {
        let ra = ra();
        let cert = CertificateRef::parse(&ra.cert).unwrap();
        let raw = capture("sscep");
        let m = PkiMessageRef::parse(&raw).unwrap();
        let mut env = m.content.to_vec();
        let aes128 = env.windows(oid::AES128_CBC.len()).position(|w| w == oid::AES128_CBC).unwrap();
        env[aes128 + oid::AES128_CBC.len() - 1] = 0x7f;
        let e = open(&env, &cert, &ra.key, &ALL, &FixedRng).unwrap_err();
        assert_eq!(e, EnvelopeError::UnsupportedCipher);
        assert_eq!(e.fail_info(), FailInfo::BAD_ALG);
    }
}
