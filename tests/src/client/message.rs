//! Client PKIMessages (RFC 8894 §3.2, §3.3): a CMS SignedData (RFC 5652 §5)
//! whose signed attributes carry the SCEP transaction attributes and whose
//! encapsulated content is the pkcsPKIEnvelope.

use scep_engine::codes::MessageType;
use scep_engine::crypto::{ContentCipher, DigestAlg, RandomSource as _, SystemRandom};
use scep_engine::oid;
use scep_engine::time::UnixTime;
use scep_engine::wire::{Writer, tag};
use scep_engine::x509::CertificateRef;

use super::encoding::Encoding;
use super::envelope::{build_envelope, write_issuer_and_serial};
use super::error::{ClientError, Result};
use super::identity::{DeviceKey, hex};

/// The OID put in SignerInfo.signatureAlgorithm.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum SignatureOid {
    /// Plain `rsaEncryption` (what certmonger, sscep, PyScep send).
    RsaEncryption,
    /// `shaXWithRSAEncryption` matching the digest (jscep, micromdm).
    #[default]
    DigestWithRsa,
}

/// The choices a client makes when building a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageOptions {
    /// Content encryption of the pkcsPKIEnvelope.
    pub cipher: ContentCipher,
    /// SignerInfo digest (messageDigest and the signature's hash).
    pub digest: DigestAlg,
    /// SignerInfo signature algorithm OID.
    pub signature_oid: SignatureOid,
    /// DER, or BER like jscep.
    pub encoding: Encoding,
    /// transactionID; `None` = hex SHA-256 of the request's public key for
    /// PKCSReq/RenewalReq, random hex otherwise (RFC 8894 §3.2.1.1).
    pub transaction_id: Option<String>,
    /// senderNonce; `None` = 16 fresh random bytes (RFC 8894 §3.2.1.5).
    pub sender_nonce: Option<Vec<u8>>,
    /// signingTime; `None` = now.
    pub signing_time: Option<UnixTime>,
    /// Put the signer's certificate in SignedData.certificates (RFC 8894
    /// §3.2 requires it; turn off only to test rejection).
    pub include_signer_certificate: bool,
}

impl Default for MessageOptions {
    fn default() -> Self {
        Self {
            cipher: ContentCipher::Aes256Cbc,
            digest: DigestAlg::Sha256,
            signature_oid: SignatureOid::DigestWithRsa,
            encoding: Encoding::Der,
            transaction_id: None,
            sender_nonce: None,
            signing_time: None,
            include_signer_certificate: true,
        }
    }
}

impl MessageOptions {
    /// What certmonger sends: AES-256, SHA-256, `rsaEncryption`.
    pub fn certmonger_like() -> Self {
        Self { signature_oid: SignatureOid::RsaEncryption, ..Self::default() }
    }

    /// What micromdm's scepclient sends: single DES, SHA-1, sha1WithRSA.
    pub fn micromdm_like() -> Self {
        Self { cipher: ContentCipher::DesCbc, digest: DigestAlg::Sha1, ..Self::default() }
    }

    /// What jscep sends: BER, AES-128, SHA-256, sha256WithRSA.
    pub fn jscep_like() -> Self {
        Self { cipher: ContentCipher::Aes128Cbc, encoding: Encoding::BER, ..Self::default() }
    }
}

/// The request-specific content of the pkcsPKIEnvelope (RFC 8894 §3.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MessageBody {
    /// PKCSReq (19): a PKCS#10 request DER.
    PkcsReq(Vec<u8>),
    /// RenewalReq (17): a PKCS#10 request DER, signed with the existing certificate.
    RenewalReq(Vec<u8>),
    /// CertPoll (20): IssuerAndSubject (RFC 8894 §3.3.3).
    CertPoll {
        /// The CA's Name DER (the issuer of the certificate being waited for).
        issuer: Vec<u8>,
        /// The requested subject Name DER.
        subject: Vec<u8>,
    },
    /// GetCert (21): IssuerAndSerialNumber of the wanted certificate (RFC 8894 §3.3.4).
    GetCert {
        /// Issuer Name DER.
        issuer: Vec<u8>,
        /// Serial number magnitude (big-endian).
        serial: Vec<u8>,
    },
    /// GetCRL (22): IssuerAndSerialNumber of a certificate the CRL covers (RFC 8894 §3.3.5).
    GetCrl {
        /// Issuer Name DER.
        issuer: Vec<u8>,
        /// Serial number magnitude (big-endian).
        serial: Vec<u8>,
    },
}

impl MessageBody {
    /// The SCEP messageType.
    pub const fn message_type(&self) -> MessageType {
        match self {
            Self::PkcsReq(_) => MessageType::PKCS_REQ,
            Self::RenewalReq(_) => MessageType::RENEWAL_REQ,
            Self::CertPoll { .. } => MessageType::CERT_POLL,
            Self::GetCert { .. } => MessageType::GET_CERT,
            Self::GetCrl { .. } => MessageType::GET_CRL,
        }
    }

    /// GetCert for `cert_der` (its issuer and serial).
    ///
    /// # Errors
    /// When the certificate does not parse.
    pub fn get_cert_for(cert_der: &[u8]) -> Result<Self> {
        let c = CertificateRef::parse(cert_der).map_err(ClientError::decode("certificate"))?;
        Ok(Self::GetCert { issuer: c.issuer.to_vec(), serial: c.serial.to_vec() })
    }

    /// GetCRL for the CRL covering `cert_der`.
    ///
    /// # Errors
    /// When the certificate does not parse.
    pub fn get_crl_for(cert_der: &[u8]) -> Result<Self> {
        let c = CertificateRef::parse(cert_der).map_err(ClientError::decode("certificate"))?;
        Ok(Self::GetCrl { issuer: c.issuer.to_vec(), serial: c.serial.to_vec() })
    }

    /// CertPoll for a request of `subject` (Name DER) to the CA `ca_cert_der`.
    ///
    /// # Errors
    /// When the certificate does not parse.
    pub fn cert_poll(ca_cert_der: &[u8], subject: Vec<u8>) -> Result<Self> {
        let c = CertificateRef::parse(ca_cert_der).map_err(ClientError::decode("CA certificate"))?;
        Ok(Self::CertPoll { issuer: c.subject.to_vec(), subject })
    }

    /// The messageData DER that goes inside the envelope.
    pub fn message_data(&self) -> Vec<u8> {
        match self {
            Self::PkcsReq(csr) | Self::RenewalReq(csr) => csr.clone(),
            Self::CertPoll { issuer, subject } => {
                let mut w = Writer::new();
                w.sequence(|w| {
                    w.raw(issuer).raw(subject);
                });
                w.into_vec()
            }
            Self::GetCert { issuer, serial } | Self::GetCrl { issuer, serial } => {
                let mut w = Writer::new();
                w.sequence(|w| {
                    w.raw(issuer).unsigned_integer(serial);
                });
                w.into_vec()
            }
        }
    }

    /// The CSR's SubjectPublicKeyInfo, for the default transactionID.
    fn csr_spki(&self) -> Option<Vec<u8>> {
        let (Self::PkcsReq(csr) | Self::RenewalReq(csr)) = self else { return None };
        let t = scep_engine::wire::parse_single(csr).ok()?;
        let info = t.reader().read().ok()?;
        let mut r = info.reader();
        r.read().ok()?; // version
        r.read().ok()?; // subject
        Some(r.read().ok()?.raw.to_vec())
    }
}

/// Who signs the request: the transient self-signed certificate (PKCSReq,
/// CertPoll) or the existing issued one (RenewalReq), with its key.
#[derive(Clone, Copy, Debug)]
pub struct Signer<'a> {
    /// The signer's certificate DER.
    pub certificate: &'a [u8],
    /// The matching private key.
    pub key: &'a DeviceKey,
}

/// A built request and what is needed to check the reply to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PkiRequest {
    /// The PKIMessage (ContentInfo { signedData }), DER or BER.
    pub der: Vec<u8>,
    /// messageType.
    pub message_type: MessageType,
    /// transactionID.
    pub transaction_id: String,
    /// senderNonce (the reply's recipientNonce must equal it).
    pub sender_nonce: Vec<u8>,
    /// The signer certificate (the reply is encrypted to it).
    pub signer_certificate: Vec<u8>,
    /// The messageData inside the envelope (e.g. the CSR).
    pub message_data: Vec<u8>,
    /// The pkcsPKIEnvelope as signed (eContent).
    pub envelope: Vec<u8>,
    /// The options used.
    pub options: MessageOptions,
}

/// Builds and signs a PKIMessage carrying `body`, encrypted to `recipient_der`
/// (the RA certificate, or the CA when there is no RA).
///
/// # Errors
/// When a certificate does not parse, the RA key is not RSA, or signing fails.
pub fn build_pki_message(
    body: &MessageBody,
    signer: Signer<'_>,
    recipient_der: &[u8],
    options: &MessageOptions,
) -> Result<PkiRequest> {
    let recipient = CertificateRef::parse(recipient_der).map_err(ClientError::decode("RA certificate"))?;
    let signer_cert = CertificateRef::parse(signer.certificate).map_err(ClientError::decode("signer certificate"))?;
    let message_type = body.message_type();
    let message_data = body.message_data();
    // The envelope always uses the same encoding as the outer message.
    let envelope = build_envelope(&message_data, &recipient, options.cipher, options.encoding)?;

    let transaction_id = match &options.transaction_id {
        Some(t) => t.clone(),
        None => match body.csr_spki() {
            Some(spki) => hex(&DigestAlg::Sha256.digest(&spki)),
            None => {
                let mut r = [0u8; 16];
                SystemRandom.fill(&mut r);
                hex(&r)
            }
        },
    };
    let sender_nonce = match &options.sender_nonce {
        Some(n) => n.clone(),
        None => {
            let mut n = vec![0u8; 16];
            SystemRandom.fill(&mut n);
            n
        }
    };
    let digest = options.digest;
    let signing_time = options.signing_time.unwrap_or_else(UnixTime::now);

    // RFC 8894 §3.2.1 / RFC 5652 §11: the signed attributes.
    let attr = |attr_oid: &[u8], value: &dyn Fn(&mut Writer)| {
        let mut w = Writer::new();
        w.sequence(|w| {
            w.oid(attr_oid);
            w.set(|w| value(w));
        });
        w.into_vec()
    };
    let message_digest = digest.digest(&envelope);
    let attrs = vec![
        attr(oid::CONTENT_TYPE, &|w| {
            w.oid(oid::DATA);
        }),
        attr(oid::MESSAGE_DIGEST, &|w| {
            w.octet_string(&message_digest);
        }),
        attr(oid::SIGNING_TIME, &|w| signing_time.write_asn1(w)),
        attr(oid::SCEP_MESSAGE_TYPE, &|w| {
            w.printable_string(&message_type.to_decimal());
        }),
        attr(oid::SCEP_TRANSACTION_ID, &|w| {
            w.printable_string(&transaction_id);
        }),
        attr(oid::SCEP_SENDER_NONCE, &|w| {
            w.octet_string(&sender_nonce);
        }),
    ];
    let mut set = Writer::new();
    set.set_of(tag::SET, attrs);
    let signed_attrs_set = set.into_vec();
    // RFC 5652 §5.4: the signature covers the DER SET OF; the message carries
    // it as [0] IMPLICIT.
    let signature = signer.key.sign(digest, &signed_attrs_set)?;
    let mut signed_attrs_implicit = signed_attrs_set;
    signed_attrs_implicit[0] = tag::context_constructed(0);

    let enc = options.encoding;
    let mut w = Writer::with_capacity(envelope.len() + signer.certificate.len() + 1024);
    enc.constructed(&mut w, tag::SEQUENCE, |w| {
        w.oid(oid::SIGNED_DATA);
        enc.constructed(w, tag::context_constructed(0), |w| {
            enc.constructed(w, tag::SEQUENCE, |w| {
                w.small_uint(1);
                w.set(|w| {
                    w.sequence(|w| {
                        w.oid(digest.oid());
                    });
                });
                enc.constructed(w, tag::SEQUENCE, |w| {
                    w.oid(oid::DATA);
                    enc.constructed(w, tag::context_constructed(0), |w| {
                        enc.octets(w, tag::OCTET_STRING, &envelope);
                    });
                });
                if options.include_signer_certificate {
                    w.nested(tag::context_constructed(0), |w| {
                        w.raw(signer.certificate);
                    });
                }
                w.set(|w| {
                    w.sequence(|w| {
                        w.small_uint(1);
                        write_issuer_and_serial(w, &signer_cert);
                        w.sequence(|w| {
                            w.oid(digest.oid());
                        });
                        w.raw(&signed_attrs_implicit);
                        w.sequence(|w| {
                            match options.signature_oid {
                                SignatureOid::RsaEncryption => w.oid(oid::RSA_ENCRYPTION),
                                SignatureOid::DigestWithRsa => w.oid(digest.rsa_signature_oid()),
                            };
                            w.null();
                        });
                        w.octet_string(&signature);
                    });
                });
            });
        });
    });
    Ok(PkiRequest {
        der: w.into_vec(),
        message_type,
        transaction_id,
        sender_nonce,
        signer_certificate: signer.certificate.to_vec(),
        message_data,
        envelope,
        options: options.clone(),
    })
}
