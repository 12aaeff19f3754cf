//! The device's identity: its RSA key, the transient self-signed certificate
//! it signs its first request with (RFC 8894 §2.3), and its PKCS#10 request
//! (RFC 2986) with the SCEP attributes (RFC 8894 §3.3.1).

use std::sync::Mutex;

use scep_engine::crypto::{DigestAlg, RandomSource as _, RsaPrivateKey, SystemRandom};
use scep_engine::oid;
use scep_engine::time::UnixTime;
use scep_engine::wire::{Writer, tag};
use scep_engine::x509::{SubjectAltName, encode_subject_alt_names};

use super::error::{ClientError, Result};

/// X.520 organizationName `2.5.4.10`.
const ORGANIZATION_NAME: &[u8] = &[0x55, 0x04, 0x0a];
/// X.520 organizationalUnitName `2.5.4.11`.
const ORGANIZATIONAL_UNIT_NAME: &[u8] = &[0x55, 0x04, 0x0b];
/// X.520 countryName `2.5.4.6`.
const COUNTRY_NAME: &[u8] = &[0x55, 0x04, 0x06];

/// A device's RSA key pair (aws-lc-rs), with its PKCS#8 encoding.
pub struct DeviceKey {
    key: RsaPrivateKey,
    pkcs8: Vec<u8>,
}

impl std::fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceKey").field("bits", &(self.key.modulus_len() * 8)).finish()
    }
}

/// PKCS#8 encodings of keys generated once per process, by slot.
static PREGENERATED: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

impl DeviceKey {
    /// Generates a fresh RSA-2048 key.
    ///
    /// # Errors
    /// Only on an internal aws-lc failure.
    pub fn generate() -> Result<Self> {
        let (key, pkcs8) = RsaPrivateKey::generate(2048)?;
        Ok(Self { key, pkcs8 })
    }

    /// An RSA-2048 key generated once per process for `slot` and reused after
    /// that (key generation dominates test time). Different slots give
    /// different keys; the same slot always gives the same key.
    ///
    /// # Errors
    /// Only on an internal aws-lc failure.
    pub fn pregenerated(slot: usize) -> Result<Self> {
        let mut keys = PREGENERATED.lock().map_err(|_| ClientError::Input("key cache poisoned".into()))?;
        while keys.len() <= slot {
            keys.push(Self::generate()?.pkcs8);
        }
        Self::from_der(&keys[slot])
    }

    /// Loads a PKCS#8 or PKCS#1 RSA private key (DER).
    ///
    /// # Errors
    /// When the bytes are not an RSA key of at least 2048 bits.
    pub fn from_der(der: &[u8]) -> Result<Self> {
        let key = RsaPrivateKey::from_der(der)?;
        Ok(Self { key, pkcs8: der.to_vec() })
    }

    /// Loads the first private key from PEM text.
    ///
    /// # Errors
    /// When there is no usable RSA key block.
    pub fn from_pem(text: &str) -> Result<Self> {
        let der = scep_engine::pem::private_key(text).map_err(|e| ClientError::Input(e.to_string()))?;
        Self::from_der(&der)
    }

    /// The private key DER as loaded (PKCS#8 for generated keys).
    pub fn private_key_der(&self) -> &[u8] {
        &self.pkcs8
    }

    /// The private key as PEM (`PRIVATE KEY` for PKCS#8, else `RSA PRIVATE KEY`).
    pub fn to_pem(&self) -> String {
        let label = if is_pkcs8(&self.pkcs8) { "PRIVATE KEY" } else { "RSA PRIVATE KEY" };
        scep_engine::pem::encode(label, &self.pkcs8)
    }

    /// The SubjectPublicKeyInfo DER.
    pub fn spki_der(&self) -> &[u8] {
        self.key.spki_der()
    }

    /// The underlying engine key (for decryption of content keys).
    pub fn rsa(&self) -> &RsaPrivateKey {
        &self.key
    }

    /// Signs `message` with RSA PKCS#1 v1.5 and `digest`. SHA-1, which aws-lc-rs
    /// does not sign with, is done by `rsa_sha1` from the key's
    /// private components.
    ///
    /// # Errors
    /// When the key cannot sign.
    pub fn sign(&self, digest: DigestAlg, message: &[u8]) -> Result<Vec<u8>> {
        match digest {
            DigestAlg::Sha1 => super::rsa_sha1::sign(&self.pkcs8, message),
            other => Ok(self.key.sign(other, message)?),
        }
    }

    /// The hex SHA-256 of the SubjectPublicKeyInfo: the transactionID RFC 8894
    /// §3.2.1.1 suggests for requests that carry a public key.
    pub fn transaction_id(&self) -> String {
        hex(&DigestAlg::Sha256.digest(self.spki_der()))
    }
}

fn is_pkcs8(der: &[u8]) -> bool {
    // PrivateKeyInfo's second element is an AlgorithmIdentifier SEQUENCE;
    // RSAPrivateKey's is the modulus INTEGER.
    scep_engine::wire::parse_single(der)
        .ok()
        .and_then(|t| {
            let mut r = t.reader();
            r.read().ok()?;
            r.peek_tag()
        })
        .is_some_and(|t| t == tag::SEQUENCE)
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A distinguished name of the kinds devices request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SubjectName {
    /// commonName (required).
    pub common_name: String,
    /// organizationName.
    pub organization: Option<String>,
    /// organizationalUnitName.
    pub organizational_unit: Option<String>,
    /// countryName (two letters).
    pub country: Option<String>,
}

impl SubjectName {
    /// A name with only a commonName.
    pub fn cn(common_name: impl Into<String>) -> Self {
        Self { common_name: common_name.into(), ..Self::default() }
    }

    /// The Name DER (RFC 5280 §4.1.2.4), one attribute per RDN, most
    /// significant first (C, O, OU, CN).
    pub fn to_der(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.sequence(|w| {
            let attrs = [
                (COUNTRY_NAME, self.country.as_deref()),
                (ORGANIZATION_NAME, self.organization.as_deref()),
                (ORGANIZATIONAL_UNIT_NAME, self.organizational_unit.as_deref()),
                (oid::COMMON_NAME, Some(self.common_name.as_str())),
            ];
            for (attr, value) in attrs {
                let Some(value) = value else { continue };
                w.set(|w| {
                    w.sequence(|w| {
                        w.oid(attr);
                        write_directory_string(w, value);
                    });
                });
            }
        });
        w.into_vec()
    }
}

/// True when every character is in the PrintableString set (X.680 §41.4).
pub fn is_printable(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_alphanumeric() || b" '()+,-./:=?".contains(&b))
}

/// PrintableString when the value allows it, UTF8String otherwise.
fn write_directory_string(w: &mut Writer, s: &str) {
    if is_printable(s) {
        w.printable_string(s);
    } else {
        w.utf8_string(s);
    }
}

/// What goes into the PKCS#10 request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CsrSpec {
    /// The requested subject.
    pub subject: SubjectName,
    /// The challengePassword attribute (RFC 2985 §5.4.1), if any.
    pub challenge_password: Option<String>,
    /// subjectAltName entries for the extensionRequest (RFC 2985 §5.4.2).
    pub subject_alt_names: Vec<SubjectAltName>,
    /// extKeyUsage purposes (OID contents, e.g. [`oid::KP_CLIENT_AUTH`]).
    pub extended_key_usage: Vec<Vec<u8>>,
    /// The digest of the CSR's own signature (SHA-256 unless set).
    pub signature_digest: DigestAlg,
    /// Further extensions for the extensionRequest, non-critical, after the
    /// above: (extnID OID contents, extnValue DER). E.g. the SID extension
    /// `1.3.6.1.4.1.311.25.2` an Intune-like client may ask for.
    pub other_extensions: Vec<(Vec<u8>, Vec<u8>)>,
}

impl CsrSpec {
    /// A request for `CN=common_name` with `challenge`.
    pub fn new(common_name: impl Into<String>, challenge: Option<&str>) -> Self {
        Self {
            subject: SubjectName::cn(common_name),
            challenge_password: challenge.map(str::to_string),
            subject_alt_names: Vec::new(),
            extended_key_usage: Vec::new(),
            signature_digest: DigestAlg::Sha256,
            other_extensions: Vec::new(),
        }
    }
}

/// Writes an Extension (RFC 5280 §4.1): SEQUENCE { extnID, [critical], extnValue }.
fn write_extension(w: &mut Writer, ext_oid: &[u8], critical: bool, value: &[u8]) {
    w.sequence(|w| {
        w.oid(ext_oid);
        if critical {
            w.boolean(true);
        }
        w.octet_string(value);
    });
}

/// Writes an RSA signature AlgorithmIdentifier (shaXWithRSAEncryption, NULL params).
fn write_rsa_sig_alg(w: &mut Writer, digest: DigestAlg) {
    w.sequence(|w| {
        w.oid(digest.rsa_signature_oid()).null();
    });
}

/// Builds and signs a PKCS#10 CertificationRequest (RFC 2986 §4) for `key`.
///
/// # Errors
/// When signing fails.
pub fn build_csr(key: &DeviceKey, spec: &CsrSpec) -> Result<Vec<u8>> {
    let mut attributes = Vec::new();
    if let Some(pw) = &spec.challenge_password {
        // RFC 2985 §5.4.1: DirectoryString; PrintableString where it fits.
        let mut a = Writer::new();
        a.sequence(|w| {
            w.oid(oid::CHALLENGE_PASSWORD);
            w.set(|w| write_directory_string(w, pw));
        });
        attributes.push(a.into_vec());
    }
    let mut extensions: Vec<(&[u8], Vec<u8>)> = Vec::new();
    if !spec.subject_alt_names.is_empty() {
        extensions.push((oid::SUBJECT_ALT_NAME, encode_subject_alt_names(&spec.subject_alt_names)));
    }
    if !spec.extended_key_usage.is_empty() {
        let mut e = Writer::new();
        e.sequence(|w| {
            for purpose in &spec.extended_key_usage {
                w.oid(purpose);
            }
        });
        extensions.push((oid::EXT_KEY_USAGE, e.into_vec()));
    }
    extensions.extend(spec.other_extensions.iter().map(|(o, v)| (o.as_slice(), v.clone())));
    if !extensions.is_empty() {
        // RFC 2985 §5.4.2 extensionRequest: SET { Extensions }.
        let mut a = Writer::new();
        a.sequence(|w| {
            w.oid(oid::EXTENSION_REQUEST);
            w.set(|w| {
                w.sequence(|w| {
                    for (ext_oid, value) in &extensions {
                        write_extension(w, ext_oid, false, value);
                    }
                });
            });
        });
        attributes.push(a.into_vec());
    }
    let mut info = Writer::new();
    info.sequence(|w| {
        w.small_uint(0);
        w.raw(&spec.subject.to_der());
        w.raw(key.spki_der());
        // attributes [0] IMPLICIT SET OF Attribute (DER-sorted).
        w.set_of(tag::context_constructed(0), attributes);
    });
    sign_tbs(key, &info.into_vec(), spec.signature_digest)
}

/// Wraps a to-be-signed structure: SEQUENCE { tbs, AlgorithmIdentifier, BIT STRING sig }.
fn sign_tbs(key: &DeviceKey, tbs: &[u8], digest: DigestAlg) -> Result<Vec<u8>> {
    let signature = key.sign(digest, tbs)?;
    let mut w = Writer::with_capacity(tbs.len() + signature.len() + 32);
    w.sequence(|w| {
        w.raw(tbs);
        write_rsa_sig_alg(w, digest);
        w.bit_string(&signature);
    });
    Ok(w.into_vec())
}

/// Builds the transient self-signed certificate a device without a
/// certificate signs its request with (RFC 8894 §2.3): subject = issuer =
/// `subject`, a random positive serial, valid from an hour ago for `days`.
///
/// # Errors
/// When signing fails.
pub fn self_signed_certificate(key: &DeviceKey, subject: &SubjectName, days: i64) -> Result<Vec<u8>> {
    let name = subject.to_der();
    let mut serial = [0u8; 16];
    SystemRandom.fill(&mut serial);
    serial[0] &= 0x7f;
    serial[0] |= 0x01;
    let now = UnixTime::now();
    let mut key_usage = Writer::new();
    // digitalSignature (bit 0) | keyEncipherment (bit 2): 5 unused bits.
    key_usage.tlv(tag::BIT_STRING, &[0x05, 0xa0]);
    let key_usage = key_usage.into_vec();
    let mut tbs = Writer::new();
    tbs.sequence(|w| {
        w.nested(tag::context_constructed(0), |w| {
            w.small_uint(2);
        });
        w.unsigned_integer(&serial);
        write_rsa_sig_alg(w, DigestAlg::Sha256);
        w.raw(&name);
        w.sequence(|w| {
            now.plus(-3600).write_asn1(w);
            now.plus(days.saturating_mul(86_400)).write_asn1(w);
        });
        w.raw(&name);
        w.raw(key.spki_der());
        w.nested(tag::context_constructed(3), |w| {
            w.sequence(|w| write_extension(w, oid::KEY_USAGE, true, &key_usage));
        });
    });
    sign_tbs(key, &tbs.into_vec(), DigestAlg::Sha256)
}
