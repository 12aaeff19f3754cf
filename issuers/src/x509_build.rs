//! Building and signing X.509 v3 certificates (RFC 5280 §4).
//!
//! Everything is written with [`scep_engine::wire::Writer`] (strict DER) and
//! signed with a [`SigningKey`]: sha256WithRSAEncryption for RSA CAs,
//! ecdsa-with-SHA256 for P-256 CAs. Three kinds of certificate are built:
//! end-entity certificates from an authorised request
//! ([`CaSigner::issue_end_entity`]), a self-signed CA ([`self_signed_ca`]) and
//! an RA certificate for the SCEP server itself ([`CaSigner::issue_ra`]). CRLs
//! live in [`crate::crl`].

use scep_engine::crypto::{DigestAlg, KeyError, RandomSource, SigningKey};
use scep_engine::issue::IssuancePolicy;
use scep_engine::oid;
use scep_engine::time::UnixTime;
use scep_engine::wire::{DecodeError, Writer, parse_single, tag};
use scep_engine::x509::{CertificateRef, SubjectAltName, SubjectPublicKeyInfoRef, encode_subject_alt_names};

/// Length of the serial numbers this crate draws (RFC 5280 §4.1.2.2: at most
/// 20 octets; CA/Browser Forum: at least 64 random bits; we use 127).
pub const SERIAL_LEN: usize = 16;

/// keyUsage bit digitalSignature (RFC 5280 §4.2.1.3).
pub const KU_DIGITAL_SIGNATURE: u8 = 0;
/// keyUsage bit keyEncipherment.
pub const KU_KEY_ENCIPHERMENT: u8 = 2;
/// keyUsage bit keyCertSign.
pub const KU_KEY_CERT_SIGN: u8 = 5;
/// keyUsage bit cRLSign.
pub const KU_CRL_SIGN: u8 = 6;

/// Why a certificate or CRL could not be built.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BuildError {
    /// Signing failed, or a key is unusable.
    Key(KeyError),
    /// An input structure (named) is not valid DER.
    Malformed {
        /// Which input: `"subject"`, `"SubjectPublicKeyInfo"`, `"CA certificate"`, ...
        what: &'static str,
        /// Where and why.
        error: DecodeError,
    },
    /// The inputs cannot make a valid certificate (explained).
    Invalid(String),
}

impl std::fmt::Display for BuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Key(e) => write!(f, "{e}"),
            Self::Malformed { what, error } => write!(f, "malformed {what}: {error}"),
            Self::Invalid(reason) => f.write_str(reason),
        }
    }
}

impl std::error::Error for BuildError {}

impl From<KeyError> for BuildError {
    fn from(e: KeyError) -> Self {
        Self::Key(e)
    }
}

fn malformed(what: &'static str) -> impl FnOnce(DecodeError) -> BuildError {
    move |error| BuildError::Malformed { what, error }
}

/// Draws a random positive serial number (RFC 5280 §4.1.2.2): [`SERIAL_LEN`]
/// random octets with the top bit cleared (so the INTEGER needs no sign
/// octet and stays within 20 octets), never zero. Returned as the big-endian
/// magnitude without leading zero octets, the form [`scep_engine::issue`] uses.
pub fn random_serial(rng: &dyn RandomSource) -> Vec<u8> {
    let mut serial = [0u8; SERIAL_LEN];
    rng.fill(&mut serial);
    serial[0] &= 0x7f;
    if serial.iter().all(|&b| b == 0) {
        // Only a broken or test RNG gets here; zero is not a valid serial.
        serial[SERIAL_LEN - 1] = 1;
    }
    trim_serial(&serial).to_vec()
}

/// A serial magnitude without leading zero octets (the empty input stays empty).
pub fn trim_serial(serial: &[u8]) -> &[u8] {
    let start = serial.iter().position(|&b| b != 0).unwrap_or(serial.len());
    &serial[start..]
}

/// Lowercase hex of a serial magnitude (leading zero octets removed), the
/// key under which certificates are stored.
pub fn serial_hex(serial: &[u8]) -> String {
    trim_serial(serial).iter().map(|b| format!("{b:02x}")).collect()
}

/// The key identifier of a public key: SHA-1 of the subjectPublicKey BIT
/// STRING value (RFC 5280 §4.2.1.2, method 1).
///
/// # Errors
/// When `spki_der` is not a SubjectPublicKeyInfo.
pub fn key_identifier(spki_der: &[u8]) -> Result<Vec<u8>, BuildError> {
    let spki = SubjectPublicKeyInfoRef::parse(spki_der).map_err(malformed("SubjectPublicKeyInfo"))?;
    Ok(DigestAlg::Sha1.digest(spki.key))
}

/// A Name (RFC 5280 §4.1.2.4) holding a single commonName as UTF8String.
pub fn common_name(cn: &str) -> Vec<u8> {
    let mut w = Writer::new();
    w.sequence(|w| {
        w.set(|w| {
            w.sequence(|w| {
                w.oid(oid::COMMON_NAME).utf8_string(cn);
            });
        });
    });
    w.into_vec()
}

/// A certificate's validity period (RFC 5280 §4.1.2.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    /// notBefore.
    pub not_before: UnixTime,
    /// notAfter (inclusive).
    pub not_after: UnixTime,
}

/// One extension to write (RFC 5280 §4.1: `Extension`).
struct Extension {
    oid: &'static [u8],
    critical: bool,
    value: Vec<u8>,
}

impl Extension {
    fn write(&self, w: &mut Writer) {
        w.sequence(|w| {
            w.oid(self.oid);
            // DER: the DEFAULT FALSE is omitted (X.690 §11.5).
            if self.critical {
                w.boolean(true);
            }
            w.octet_string(&self.value);
        });
    }
}

/// basicConstraints (RFC 5280 §4.2.1.9), always critical here.
fn basic_constraints(ca: bool, path_len: Option<u64>) -> Extension {
    let mut w = Writer::new();
    w.sequence(|w| {
        if ca {
            w.boolean(true);
            if let Some(n) = path_len {
                w.small_uint(n);
            }
        }
    });
    Extension { oid: oid::BASIC_CONSTRAINTS, critical: true, value: w.into_vec() }
}

/// keyUsage (RFC 5280 §4.2.1.3), critical, from bit numbers; `None` when no
/// bit is set (the extension must then be absent).
fn key_usage(bits: &[u8]) -> Option<Extension> {
    let mut octets = [0u8; 2];
    for &bit in bits {
        if let Some(o) = octets.get_mut(usize::from(bit / 8)) {
            *o |= 0x80 >> (bit % 8);
        }
    }
    // DER named bit list: trailing zero bits removed (X.690 §11.2.2).
    let len = octets.iter().rposition(|&b| b != 0)? + 1;
    let last = octets[len - 1];
    let unused = last.trailing_zeros() as u8;
    let mut contents = Vec::with_capacity(len + 1);
    contents.push(unused);
    contents.extend_from_slice(&octets[..len]);
    Some(Extension {
        oid: oid::KEY_USAGE,
        critical: true,
        value: scep_engine::wire::encode_tlv(tag::BIT_STRING, &contents),
    })
}

/// extKeyUsage (RFC 5280 §4.2.1.12), non-critical.
fn ext_key_usage(ekus: &[Vec<u8>]) -> Extension {
    let mut w = Writer::new();
    w.sequence(|w| {
        for eku in ekus {
            w.oid(eku);
        }
    });
    Extension { oid: oid::EXT_KEY_USAGE, critical: false, value: w.into_vec() }
}

/// subjectKeyIdentifier (RFC 5280 §4.2.1.2), non-critical.
fn subject_key_identifier(key_id: &[u8]) -> Extension {
    Extension {
        oid: oid::SUBJECT_KEY_IDENTIFIER,
        critical: false,
        value: scep_engine::wire::encode_tlv(tag::OCTET_STRING, key_id),
    }
}

/// authorityKeyIdentifier (RFC 5280 §4.2.1.1) with keyIdentifier only, non-critical.
pub(crate) fn authority_key_identifier_value(key_id: &[u8]) -> Vec<u8> {
    let mut w = Writer::new();
    w.sequence(|w| {
        w.tlv(tag::context_primitive(0), key_id);
    });
    w.into_vec()
}

fn authority_key_identifier(key_id: &[u8]) -> Extension {
    Extension { oid: oid::AUTHORITY_KEY_IDENTIFIER, critical: false, value: authority_key_identifier_value(key_id) }
}

/// The fields of a TBSCertificate (RFC 5280 §4.1.2).
struct Tbs<'a> {
    serial: &'a [u8],
    issuer: &'a [u8],
    validity: Validity,
    subject: &'a [u8],
    spki: &'a [u8],
    extensions: &'a [Extension],
}

/// Writes the TBSCertificate and signs it into a Certificate (RFC 5280 §4.1).
fn sign_certificate(key: &SigningKey, t: &Tbs<'_>) -> Result<Vec<u8>, BuildError> {
    let mut w = Writer::with_capacity(1024 + t.spki.len());
    w.sequence(|w| {
        // version [0] EXPLICIT v3(2)
        w.nested(tag::context_constructed(0), |w| {
            w.small_uint(2);
        });
        w.unsigned_integer(t.serial);
        key.write_signature_algorithm(w, DigestAlg::Sha256);
        w.raw(t.issuer);
        w.sequence(|w| {
            t.validity.not_before.write_asn1(w);
            t.validity.not_after.write_asn1(w);
        });
        w.raw(t.subject);
        w.raw(t.spki);
        if !t.extensions.is_empty() {
            w.nested(tag::context_constructed(3), |w| {
                w.sequence(|w| {
                    for e in t.extensions {
                        e.write(w);
                    }
                });
            });
        }
    });
    sign_structure(key, &w.into_vec())
}

/// `SEQUENCE { tbs, signatureAlgorithm, signatureValue }`: the shape shared
/// by Certificate (RFC 5280 §4.1.1) and CertificateList (§5.1.1).
pub(crate) fn sign_structure(key: &SigningKey, tbs: &[u8]) -> Result<Vec<u8>, BuildError> {
    let signature = key.sign(DigestAlg::Sha256, tbs)?;
    let mut w = Writer::with_capacity(tbs.len() + signature.len() + 32);
    w.sequence(|w| {
        w.raw(tbs);
        key.write_signature_algorithm(w, DigestAlg::Sha256);
        w.bit_string(&signature);
    });
    Ok(w.into_vec())
}

fn check_serial(serial: &[u8]) -> Result<&[u8], BuildError> {
    let s = trim_serial(serial);
    if s.is_empty() || s.len() > 20 || (s.len() == 20 && s[0] & 0x80 != 0) {
        return Err(BuildError::Invalid("serial number must be positive and at most 20 octets".into()));
    }
    Ok(s)
}

fn check_name<'a>(der: &'a [u8], what: &'static str) -> Result<&'a [u8], BuildError> {
    let t = parse_single(der).and_then(|t| t.expect_tag(tag::SEQUENCE)).map_err(malformed(what))?;
    Ok(t.contents)
}

fn check_validity(v: Validity) -> Result<(), BuildError> {
    if v.not_after <= v.not_before {
        return Err(BuildError::Invalid(format!(
            "empty validity period ({} .. {})",
            v.not_before.to_rfc3339(),
            v.not_after.to_rfc3339()
        )));
    }
    Ok(())
}

/// Builds a self-signed CA certificate: basicConstraints CA:TRUE (critical,
/// pathLenConstraint 0: it issues end entities only), keyUsage keyCertSign +
/// cRLSign (critical), subjectKeyIdentifier (RFC 5280 §4.2.1.2: MUST in CA
/// certificates) and a matching authorityKeyIdentifier.
///
/// # Errors
/// On a malformed subject, a bad serial, an empty validity or a signing failure.
pub fn self_signed_ca(
    key: &SigningKey,
    subject_der: &[u8],
    serial: &[u8],
    validity: Validity,
) -> Result<Vec<u8>, BuildError> {
    let serial = check_serial(serial)?;
    check_name(subject_der, "subject")?;
    check_validity(validity)?;
    let key_id = key_identifier(key.spki_der())?;
    let mut extensions = vec![basic_constraints(true, Some(0))];
    extensions.extend(key_usage(&[KU_KEY_CERT_SIGN, KU_CRL_SIGN]));
    extensions.push(subject_key_identifier(&key_id));
    extensions.push(authority_key_identifier(&key_id));
    sign_certificate(
        key,
        &Tbs {
            serial,
            issuer: subject_der,
            validity,
            subject: subject_der,
            spki: key.spki_der(),
            extensions: &extensions,
        },
    )
}

/// What an end-entity certificate is made from (an authorised request).
#[derive(Clone, Copy, Debug)]
pub struct EndEntityParams<'a> {
    /// Serial number magnitude (see [`random_serial`]).
    pub serial: &'a [u8],
    /// Subject Name DER, copied verbatim from the CSR.
    pub subject_der: &'a [u8],
    /// SubjectPublicKeyInfo DER, copied verbatim from the CSR.
    pub spki_der: &'a [u8],
    /// subjectAltName entries from the request.
    pub subject_alt_names: &'a [SubjectAltName],
    /// Validity, usages and EKUs from the profile.
    pub policy: &'a IssuancePolicy,
    /// The issuance time.
    pub now: UnixTime,
    /// The SID extension value (`1.3.6.1.4.1.311.25.2`, KB5014754) to add,
    /// non-critical: only what the engine passed in
    /// [`scep_engine::IssueRequest`]'s `EnrollRequest::sid_extension`, i.e. a
    /// well-formed value requested by the CSR on a profile that trusts it.
    pub sid_extension: Option<&'a [u8]>,
}

/// What an RA certificate is for (RFC 8894 §2.1), which sets its keyUsage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RaUsage {
    /// One RA certificate that signs CertReps and receives envelopes:
    /// digitalSignature and keyEncipherment.
    SigningAndEncryption,
    /// NDES's signing RA (its "Exchange Enrollment Agent (Offline request)"
    /// template): digitalSignature only.
    Signing,
    /// NDES's encryption RA (its "CEP Encryption" template): keyEncipherment only.
    Encryption,
}

impl RaUsage {
    /// The keyUsage bits (RFC 5280 §4.2.1.3).
    const fn key_usage_bits(self) -> &'static [u8] {
        match self {
            Self::SigningAndEncryption => &[KU_DIGITAL_SIGNATURE, KU_KEY_ENCIPHERMENT],
            Self::Signing => &[KU_DIGITAL_SIGNATURE],
            Self::Encryption => &[KU_KEY_ENCIPHERMENT],
        }
    }
}

/// A CA able to sign: its key, its certificate and what is derived from it.
pub struct CaSigner {
    key: SigningKey,
    certificate: Vec<u8>,
    subject: Vec<u8>,
    key_id: Vec<u8>,
    not_before: UnixTime,
    not_after: UnixTime,
    crl_sign: bool,
    relying_party: Option<RelyingPartyUrls>,
}

/// Where relying parties find revocation information for what a CA issues:
/// written into end-entity certificates as cRLDistributionPoints
/// (RFC 5280 §4.2.1.13) and authorityInfoAccess (§4.2.2.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelyingPartyUrls {
    /// The CRL's URL (a DistributionPoint fullName URI).
    pub crl: String,
    /// The OCSP responder's URL (AccessDescription id-ad-ocsp).
    pub ocsp: String,
    /// The CA certificate's URL (AccessDescription id-ad-caIssuers, DER).
    pub ca_issuers: String,
}

/// cRLDistributionPoints (RFC 5280 §4.2.1.13), non-critical: one
/// DistributionPoint whose fullName is one URI.
fn crl_distribution_points(url: &str) -> Extension {
    let mut w = Writer::new();
    w.sequence(|w| {
        w.sequence(|w| {
            // distributionPoint [0] (a CHOICE, so constructed), fullName [0] IMPLICIT GeneralNames
            w.nested(tag::context_constructed(0), |w| {
                w.nested(tag::context_constructed(0), |w| {
                    w.tlv(tag::context_primitive(6), url.as_bytes()); // uniformResourceIdentifier
                });
            });
        });
    });
    Extension { oid: oid::CRL_DISTRIBUTION_POINTS, critical: false, value: w.into_vec() }
}

/// authorityInfoAccess (RFC 5280 §4.2.2.1), non-critical (it MUST be): the
/// OCSP responder (RFC 6960 §3.1) and the issuer's certificate.
fn authority_info_access(urls: &RelyingPartyUrls) -> Extension {
    let mut w = Writer::new();
    w.sequence(|w| {
        for (method, url) in [(oid::AD_OCSP, &urls.ocsp), (oid::AD_CA_ISSUERS, &urls.ca_issuers)] {
            w.sequence(|w| {
                w.oid(method);
                w.tlv(tag::context_primitive(6), url.as_bytes());
            });
        }
    });
    Extension { oid: oid::AUTHORITY_INFO_ACCESS, critical: false, value: w.into_vec() }
}

impl std::fmt::Debug for CaSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaSigner")
            .field("subject", &scep_engine::x509::name_to_string(&self.subject))
            .field("key", &self.key)
            .field("not_after", &self.not_after.to_rfc3339())
            .finish_non_exhaustive()
    }
}

/// True when bit `bit` of a keyUsage BIT STRING (extnValue contents) is set.
pub(crate) fn key_usage_bit(ext_value: &[u8], bit: u8) -> Result<bool, DecodeError> {
    let t = parse_single(ext_value)?.expect_tag(tag::BIT_STRING)?;
    Ok(t.contents.get(1 + usize::from(bit / 8)).is_some_and(|o| o & (0x80 >> (bit % 8)) != 0))
}

impl CaSigner {
    /// Pairs a CA key with its certificate, checking that the key matches the
    /// certificate's public key and that the certificate is a CA certificate
    /// (basicConstraints cA TRUE; keyUsage, when present, allows keyCertSign).
    /// Validity is not checked here: see [`CaSigner::check_valid_at`].
    ///
    /// # Errors
    /// [`BuildError::Invalid`] naming the problem, or [`BuildError::Malformed`].
    pub fn new(key: SigningKey, certificate: Vec<u8>) -> Result<Self, BuildError> {
        let cert = CertificateRef::parse(&certificate).map_err(malformed("CA certificate"))?;
        let key_spki = SubjectPublicKeyInfoRef::parse(key.spki_der()).map_err(malformed("CA key"))?;
        if key_spki.algorithm != cert.spki.algorithm || key_spki.key != cert.spki.key {
            return Err(BuildError::Invalid("the private key does not match the certificate's public key".into()));
        }
        let is_ca = match cert.extension(oid::BASIC_CONSTRAINTS).map_err(malformed("CA certificate extensions"))? {
            Some((_, value)) => {
                let seq = parse_single(value)
                    .and_then(|t| t.expect_tag(tag::SEQUENCE))
                    .map_err(malformed("basicConstraints"))?;
                seq.reader()
                    .optional(tag::BOOLEAN)
                    .map_err(malformed("basicConstraints"))?
                    .is_some_and(|b| b.contents.first().is_some_and(|&v| v != 0))
            }
            None => false,
        };
        if !is_ca {
            return Err(BuildError::Invalid("not a CA certificate (basicConstraints cA is not TRUE)".into()));
        }
        let ku = cert.extension(oid::KEY_USAGE).map_err(malformed("CA certificate extensions"))?;
        let (cert_sign, crl_sign) = match ku {
            Some((_, value)) => (
                key_usage_bit(value, KU_KEY_CERT_SIGN).map_err(malformed("keyUsage"))?,
                key_usage_bit(value, KU_CRL_SIGN).map_err(malformed("keyUsage"))?,
            ),
            None => (true, true),
        };
        if !cert_sign {
            return Err(BuildError::Invalid("the CA certificate's keyUsage does not allow keyCertSign".into()));
        }
        // RFC 5280 §4.2.1.1: the AKI of issued certificates carries the
        // issuer's own subjectKeyIdentifier, whatever method produced it.
        let key_id =
            match cert.extension(oid::SUBJECT_KEY_IDENTIFIER).map_err(malformed("CA certificate extensions"))? {
                Some((_, value)) => parse_single(value)
                    .and_then(|t| t.expect_tag(tag::OCTET_STRING))
                    .map_err(malformed("subjectKeyIdentifier"))?
                    .contents
                    .to_vec(),
                None => DigestAlg::Sha1.digest(cert.spki.key),
            };
        let subject = cert.subject.to_vec();
        let (not_before, not_after) = (cert.not_before, cert.not_after);
        Ok(Self { key, certificate, subject, key_id, not_before, not_after, crl_sign, relying_party: None })
    }

    /// Makes every end-entity certificate issued from now on name `urls`
    /// (cRLDistributionPoints and authorityInfoAccess); `None` leaves them out.
    pub fn set_relying_party_urls(&mut self, urls: Option<RelyingPartyUrls>) {
        self.relying_party = urls;
    }

    /// The URLs end-entity certificates name, when configured.
    pub const fn relying_party_urls(&self) -> Option<&RelyingPartyUrls> {
        self.relying_party.as_ref()
    }

    /// Issues a delegated OCSP responder certificate (RFC 6960 §4.2.2.2):
    /// basicConstraints CA:FALSE, keyUsage digitalSignature (critical),
    /// extKeyUsage id-kp-OCSPSigning, id-pkix-ocsp-nocheck (§4.2.2.2.1: relying
    /// parties trust it for its lifetime, so keep `validity` short), SKI, AKI.
    /// The validity is cut at the CA's notAfter.
    ///
    /// # Errors
    /// On malformed inputs, an empty validity or a signing failure.
    pub fn issue_ocsp_responder(
        &self,
        subject_der: &[u8],
        spki_der: &[u8],
        serial: &[u8],
        validity: Validity,
    ) -> Result<Vec<u8>, BuildError> {
        let serial = check_serial(serial)?;
        check_name(subject_der, "subject")?;
        let key_id = key_identifier(spki_der)?;
        let validity = Validity { not_before: validity.not_before, not_after: validity.not_after.min(self.not_after) };
        check_validity(validity)?;
        let mut extensions = vec![basic_constraints(false, None)];
        extensions.extend(key_usage(&[KU_DIGITAL_SIGNATURE]));
        extensions.push(ext_key_usage(&[oid::KP_OCSP_SIGNING.to_vec()]));
        extensions.push(Extension { oid: oid::OCSP_NOCHECK, critical: false, value: vec![tag::NULL, 0] });
        extensions.push(subject_key_identifier(&key_id));
        extensions.push(authority_key_identifier(&self.key_id));
        sign_certificate(
            &self.key,
            &Tbs {
                serial,
                issuer: &self.subject,
                validity,
                subject: subject_der,
                spki: spki_der,
                extensions: &extensions,
            },
        )
    }

    /// Fails unless `now` lies within the CA certificate's validity.
    ///
    /// # Errors
    /// [`BuildError::Invalid`] saying when the certificate is valid.
    pub fn check_valid_at(&self, now: UnixTime) -> Result<(), BuildError> {
        if now < self.not_before || now > self.not_after {
            return Err(BuildError::Invalid(format!(
                "the CA certificate is not valid now ({}): valid from {} to {}",
                now.to_rfc3339(),
                self.not_before.to_rfc3339(),
                self.not_after.to_rfc3339()
            )));
        }
        Ok(())
    }

    /// The CA certificate DER.
    pub fn certificate(&self) -> &[u8] {
        &self.certificate
    }

    /// The CA's subject Name DER (the issuer Name of what it signs).
    pub fn subject(&self) -> &[u8] {
        &self.subject
    }

    /// The CA's key identifier (its subjectKeyIdentifier).
    pub fn key_id(&self) -> &[u8] {
        &self.key_id
    }

    /// The CA certificate's notAfter.
    pub const fn not_after(&self) -> UnixTime {
        self.not_after
    }

    /// False when the CA certificate's keyUsage lacks cRLSign (its CRLs will
    /// not verify with strict relying parties).
    pub const fn can_sign_crls(&self) -> bool {
        self.crl_sign
    }

    /// The CA's signing key.
    pub const fn key(&self) -> &SigningKey {
        &self.key
    }

    /// Issues an end-entity certificate for an authorised request.
    ///
    /// - validity: notBefore = now − backdate, notAfter = min(now + validity,
    ///   CA notAfter) (RFC 5280 §4.1.2.5);
    /// - subject and SubjectPublicKeyInfo copied verbatim from the CSR;
    /// - basicConstraints CA:FALSE (critical); keyUsage (critical)
    ///   digitalSignature and, for RSA keys only, keyEncipherment, as the
    ///   policy asks; extKeyUsage from the policy; subjectAltName copied from
    ///   the request, critical when the subject is empty (RFC 5280 §4.2.1.6);
    ///   subjectKeyIdentifier; authorityKeyIdentifier = the CA's key id;
    ///   cRLDistributionPoints and authorityInfoAccess when
    ///   [`CaSigner::set_relying_party_urls`] gave URLs.
    ///
    /// # Errors
    /// On malformed inputs, an empty validity (e.g. the CA has expired), an
    /// empty subject without subjectAltName, or a signing failure.
    pub fn issue_end_entity(&self, p: &EndEntityParams<'_>) -> Result<Vec<u8>, BuildError> {
        let serial = check_serial(p.serial)?;
        let subject_contents = check_name(p.subject_der, "subject")?;
        let spki = SubjectPublicKeyInfoRef::parse(p.spki_der).map_err(malformed("SubjectPublicKeyInfo"))?;
        if p.policy.validity_secs <= 0 {
            return Err(BuildError::Invalid("the policy's validity is not positive".into()));
        }
        let validity = Validity {
            not_before: p.now.plus(-p.policy.backdate_secs.max(0)),
            not_after: p.now.plus(p.policy.validity_secs).min(self.not_after),
        };
        check_validity(validity)?;

        let mut extensions = vec![basic_constraints(false, None)];
        let mut bits = Vec::with_capacity(2);
        if p.policy.digital_signature {
            bits.push(KU_DIGITAL_SIGNATURE);
        }
        // keyEncipherment only makes sense for RSA keys (RFC 4055 §1.2 / RFC 8813 §3).
        if p.policy.key_encipherment && spki.algorithm == oid::RSA_ENCRYPTION {
            bits.push(KU_KEY_ENCIPHERMENT);
        }
        extensions.extend(key_usage(&bits));
        if !p.policy.ekus.is_empty() {
            extensions.push(ext_key_usage(&p.policy.ekus));
        }
        let empty_subject = subject_contents.is_empty();
        if p.subject_alt_names.is_empty() {
            if empty_subject {
                return Err(BuildError::Invalid(
                    "the subject is empty and there is no subjectAltName (RFC 5280 §4.2.1.6)".into(),
                ));
            }
        } else {
            extensions.push(Extension {
                oid: oid::SUBJECT_ALT_NAME,
                critical: empty_subject,
                value: encode_subject_alt_names(p.subject_alt_names),
            });
        }
        extensions.push(subject_key_identifier(&DigestAlg::Sha1.digest(spki.key)));
        extensions.push(authority_key_identifier(&self.key_id));
        if let Some(value) = p.sid_extension {
            // KB5014754: the SID extension is non-critical.
            extensions.push(Extension { oid: oid::MS_NTDS_CA_SECURITY_EXT, critical: false, value: value.to_vec() });
        }
        if let Some(urls) = &self.relying_party {
            extensions.push(crl_distribution_points(&urls.crl));
            extensions.push(authority_info_access(urls));
        }
        sign_certificate(
            &self.key,
            &Tbs {
                serial,
                issuer: &self.subject,
                validity,
                subject: p.subject_der,
                spki: p.spki_der,
                extensions: &extensions,
            },
        )
    }

    /// Issues the single SCEP RA certificate (RFC 8894 §2.1: the RA signs
    /// CertReps and receives envelopes, so it needs digitalSignature and
    /// keyEncipherment): [`CaSigner::issue_ra_for`] with
    /// [`RaUsage::SigningAndEncryption`].
    ///
    /// # Errors
    /// On malformed inputs, an empty validity or a signing failure.
    pub fn issue_ra(
        &self,
        subject_der: &[u8],
        spki_der: &[u8],
        serial: &[u8],
        validity: Validity,
    ) -> Result<Vec<u8>, BuildError> {
        self.issue_ra_for(RaUsage::SigningAndEncryption, subject_der, spki_der, serial, validity)
    }

    /// Issues an RA certificate for `usage`: basicConstraints CA:FALSE
    /// (critical), keyUsage as [`RaUsage`] says (critical), SKI and AKI. The
    /// validity is cut at the CA's notAfter.
    ///
    /// No extKeyUsage, also for the NDES pair: NDES's templates give both its
    /// RA certificates the Certificate Request Agent EKU
    /// (`1.3.6.1.4.1.311.20.2.1`), but OpenSSL's `PKCS7_verify` checks the
    /// signer of a CertRep for the S/MIME signing purpose, which refuses a
    /// certificate whose EKU lacks emailProtection: certmonger verifies
    /// replies that way and would refuse them. No SCEP client looks for that EKU.
    ///
    /// # Errors
    /// On malformed inputs, an empty validity or a signing failure.
    pub fn issue_ra_for(
        &self,
        usage: RaUsage,
        subject_der: &[u8],
        spki_der: &[u8],
        serial: &[u8],
        validity: Validity,
    ) -> Result<Vec<u8>, BuildError> {
        let serial = check_serial(serial)?;
        check_name(subject_der, "subject")?;
        let key_id = key_identifier(spki_der)?;
        let validity = Validity { not_before: validity.not_before, not_after: validity.not_after.min(self.not_after) };
        check_validity(validity)?;
        let mut extensions = vec![basic_constraints(false, None)];
        extensions.extend(key_usage(usage.key_usage_bits()));
        extensions.push(subject_key_identifier(&key_id));
        extensions.push(authority_key_identifier(&self.key_id));
        sign_certificate(
            &self.key,
            &Tbs {
                serial,
                issuer: &self.subject,
                validity,
                subject: subject_der,
                spki: spki_der,
                extensions: &extensions,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use scep_engine::crypto::{EcPrivateKey, RsaPrivateKey};
    use scep_engine::x509::find_extension;

    #[derive(Debug)]
    struct Fixed(u8);
    impl RandomSource for Fixed {
        fn fill(&self, buf: &mut [u8]) {
            buf.fill(self.0);
        }
    }

    fn ec_ca() -> CaSigner {
        let (key, _) = EcPrivateKey::generate().unwrap();
        let key = SigningKey::EcP256(key);
        let validity = Validity { not_before: UnixTime(1_700_000_000), not_after: UnixTime(1_900_000_000) };
        let cert = self_signed_ca(&key, &common_name("Test CA"), &[1], validity).unwrap();
        CaSigner::new(key, cert).unwrap()
    }

    #[test]
    fn serials_are_positive_nonzero_and_bounded() {
        assert_eq!(random_serial(&Fixed(0xff)), {
            let mut v = vec![0xff; SERIAL_LEN];
            v[0] = 0x7f;
            v
        });
        assert_eq!(random_serial(&Fixed(0)), vec![1]);
        assert_eq!(random_serial(&Fixed(0x80)), vec![0x80; SERIAL_LEN - 1]);
        assert_eq!(serial_hex(&[0, 0, 0x0a, 0xff]), "0aff");
    }

    #[test]
    fn key_usage_is_minimal_der() {
        assert_eq!(key_usage(&[KU_DIGITAL_SIGNATURE]).unwrap().value, vec![0x03, 0x02, 0x07, 0x80]);
        assert_eq!(
            key_usage(&[KU_DIGITAL_SIGNATURE, KU_KEY_ENCIPHERMENT]).unwrap().value,
            vec![0x03, 0x02, 0x05, 0xa0]
        );
        assert_eq!(key_usage(&[KU_KEY_CERT_SIGN, KU_CRL_SIGN]).unwrap().value, vec![0x03, 0x02, 0x01, 0x06]);
        assert_eq!(key_usage(&[8]).unwrap().value, vec![0x03, 0x03, 0x07, 0x00, 0x80]);
        assert!(key_usage(&[]).is_none());
    }

    #[test]
    fn self_signed_ca_verifies_and_is_a_ca() {
        let ca = ec_ca();
        let cert = CertificateRef::parse(ca.certificate()).unwrap();
        cert.verify_signed_by(cert.spki.public_key().unwrap()).unwrap();
        assert!(cert.is_self_issued());
        assert_eq!(
            cert.extension(oid::BASIC_CONSTRAINTS).unwrap(),
            Some((true, &[0x30, 0x06, 0x01, 0x01, 0xff, 0x02, 0x01, 0x00][..]))
        );
        assert!(ca.can_sign_crls());
        assert_eq!(ca.key_id(), DigestAlg::Sha1.digest(cert.spki.key));
    }

    #[test]
    fn end_entity_extensions_follow_policy_and_key_type() {
        let ca = ec_ca();
        let (ee_key, _) = EcPrivateKey::generate().unwrap();
        let policy = IssuancePolicy::default();
        let sans = [SubjectAltName::Dns("dev.example".into())];
        let now = UnixTime(1_800_000_000);
        let empty_subject = [0x30, 0x00];
        let p = EndEntityParams {
            serial: &[0x42],
            subject_der: &empty_subject,
            spki_der: ee_key.spki_der(),
            subject_alt_names: &sans,
            policy: &policy,
            now,
            sid_extension: None,
        };
        let der = ca.issue_end_entity(&p).unwrap();
        let cert = CertificateRef::parse(&der).unwrap();
        let ca_cert = CertificateRef::parse(ca.certificate()).unwrap();
        cert.verify_signed_by(ca_cert.spki.public_key().unwrap()).unwrap();
        assert_eq!(cert.serial, &[0x42]);
        assert_eq!(cert.not_before, UnixTime(now.0 - 300));
        assert_eq!(cert.not_after, UnixTime(now.0 + 365 * 86_400));
        let exts = cert.extensions.unwrap();
        // EC key: keyEncipherment dropped, digitalSignature kept.
        assert_eq!(find_extension(exts, oid::KEY_USAGE).unwrap(), Some((true, &[0x03, 0x02, 0x07, 0x80][..])));
        // Empty subject: SAN critical.
        assert!(find_extension(exts, oid::SUBJECT_ALT_NAME).unwrap().unwrap().0);
        assert_eq!(find_extension(exts, oid::BASIC_CONSTRAINTS).unwrap(), Some((true, &[0x30, 0x00][..])));

        // Validity is cut at the CA's notAfter.
        let late = EndEntityParams { now: UnixTime(1_899_999_000), ..p };
        let cert_der = ca.issue_end_entity(&late).unwrap();
        assert_eq!(CertificateRef::parse(&cert_der).unwrap().not_after, UnixTime(1_900_000_000));
        // ... and an expired CA issues nothing.
        assert!(ca.issue_end_entity(&EndEntityParams { now: UnixTime(1_900_000_400), ..p }).is_err());
        // Empty subject and no SAN is refused.
        assert!(ca.issue_end_entity(&EndEntityParams { subject_alt_names: &[], ..p }).is_err());
        // Garbage inputs are refused, not panicked on.
        assert!(ca.issue_end_entity(&EndEntityParams { spki_der: &[0x30, 0x01], ..p }).is_err());
        assert!(ca.issue_end_entity(&EndEntityParams { subject_der: &[0x31, 0x00], ..p }).is_err());
        assert!(ca.issue_end_entity(&EndEntityParams { serial: &[0, 0], ..p }).is_err());
        // No SID extension unless one is passed in.
        assert_eq!(find_extension(exts, oid::MS_NTDS_CA_SECURITY_EXT).unwrap(), None);
    }

    #[test]
    fn sid_extension_and_sid_uri_are_carried() {
        use scep_engine::strong_mapping::{SID_URI_PREFIX, parse_sid_extension, sid_extension_value};
        let ca = ec_ca();
        let (ee_key, _) = EcPrivateKey::generate().unwrap();
        let sid = "S-1-5-21-3623811015-3361044348-30300820-1013";
        let sans = [SubjectAltName::Uri(format!("{SID_URI_PREFIX}{sid}"))];
        let value = sid_extension_value(sid);
        let policy = IssuancePolicy::default();
        let p = EndEntityParams {
            serial: &[0x43],
            subject_der: &common_name("device"),
            spki_der: ee_key.spki_der(),
            subject_alt_names: &sans,
            policy: &policy,
            now: UnixTime(1_800_000_000),
            sid_extension: Some(&value),
        };
        let der = ca.issue_end_entity(&p).unwrap();
        let cert = CertificateRef::parse(&der).unwrap();
        let exts = cert.extensions.unwrap();
        let (critical, carried) = find_extension(exts, oid::MS_NTDS_CA_SECURITY_EXT).unwrap().unwrap();
        assert!(!critical);
        assert_eq!(parse_sid_extension(carried), Ok(sid));
        let (_, san) = find_extension(exts, oid::SUBJECT_ALT_NAME).unwrap().unwrap();
        assert_eq!(scep_engine::x509::parse_subject_alt_names(san).unwrap(), sans);
    }

    #[test]
    fn ra_certificates_carry_the_key_usage_of_their_role() {
        let ca = ec_ca();
        let (rsa, _) = RsaPrivateKey::generate(2048).unwrap();
        let validity = Validity { not_before: UnixTime(1_700_000_000), not_after: UnixTime(1_800_000_000) };
        for (usage, ku) in [
            (RaUsage::SigningAndEncryption, &[0x03, 0x02, 0x05, 0xa0][..]),
            (RaUsage::Signing, &[0x03, 0x02, 0x07, 0x80][..]),
            (RaUsage::Encryption, &[0x03, 0x02, 0x05, 0x20][..]),
        ] {
            let der = ca.issue_ra_for(usage, &common_name("RA"), rsa.spki_der(), &[9], validity).unwrap();
            let cert = CertificateRef::parse(&der).unwrap();
            let exts = cert.extensions.unwrap();
            assert_eq!(find_extension(exts, oid::KEY_USAGE).unwrap(), Some((true, ku)), "{usage:?}");
            assert_eq!(find_extension(exts, oid::EXT_KEY_USAGE).unwrap(), None, "{usage:?}");
            assert_eq!(find_extension(exts, oid::BASIC_CONSTRAINTS).unwrap(), Some((true, &[0x30, 0x00][..])));
            cert.verify_signed_by(CertificateRef::parse(ca.certificate()).unwrap().spki.public_key().unwrap()).unwrap();
        }
        // issue_ra is the single-RA form (ECDSA signatures differ run to run: compare the extensions).
        let single = ca.issue_ra(&common_name("RA"), rsa.spki_der(), &[9], validity).unwrap();
        let both =
            ca.issue_ra_for(RaUsage::SigningAndEncryption, &common_name("RA"), rsa.spki_der(), &[9], validity).unwrap();
        assert_eq!(
            CertificateRef::parse(&single).unwrap().extensions,
            CertificateRef::parse(&both).unwrap().extensions
        );
    }

    #[test]
    fn signer_rejects_mismatched_key_and_non_ca() {
        let ca = ec_ca();
        let (other, _) = EcPrivateKey::generate().unwrap();
        let err = CaSigner::new(SigningKey::EcP256(other), ca.certificate().to_vec()).unwrap_err();
        assert!(err.to_string().contains("does not match"), "{err}");

        let (rsa, _) = RsaPrivateKey::generate(2048).unwrap();
        let ra = ca
            .issue_ra(
                &common_name("RA"),
                rsa.spki_der(),
                &[7],
                Validity { not_before: UnixTime(1_700_000_000), not_after: UnixTime(2_000_000_000) },
            )
            .unwrap();
        assert_eq!(CertificateRef::parse(&ra).unwrap().not_after, ca.not_after());
        let err = CaSigner::new(SigningKey::Rsa(rsa), ra).unwrap_err();
        assert!(err.to_string().contains("not a CA"), "{err}");
    }
}
