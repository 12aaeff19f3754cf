//! Zero-copy views of X.509 certificates and SubjectPublicKeyInfo (RFC 5280).

use crate::crypto::{PublicKeyRef, SignatureAlg, VerifyError};
use crate::oid;
use crate::time::UnixTime;
use crate::wire::{DecodeError, DecodeErrorKind, Reader, Tlv, parse_single, tag};

/// A borrowed SubjectPublicKeyInfo (RFC 5280 §4.1.2.7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubjectPublicKeyInfoRef<'a> {
    /// The whole SPKI DER.
    pub raw: &'a [u8],
    /// Algorithm OID contents.
    pub algorithm: &'a [u8],
    /// Algorithm parameters TLV (e.g. the curve OID), if present.
    pub parameters: Option<Tlv<'a>>,
    /// The BIT STRING contents (without the unused-bits octet).
    pub key: &'a [u8],
}

impl<'a> SubjectPublicKeyInfoRef<'a> {
    /// Parses SPKI DER.
    ///
    /// # Errors
    /// On malformed DER.
    pub fn parse(der: &'a [u8]) -> Result<Self, DecodeError> {
        Self::from_tlv(parse_single(der)?)
    }

    /// Reads an SPKI from an already-split TLV.
    ///
    /// # Errors
    /// On malformed DER.
    pub fn from_tlv(t: Tlv<'a>) -> Result<Self, DecodeError> {
        let t = t.expect_tag(tag::SEQUENCE)?;
        let mut r = t.reader();
        let alg = r.expect(tag::SEQUENCE)?;
        let mut ar = alg.reader();
        let algorithm = ar.expect(tag::OID)?.contents;
        let parameters = if ar.is_empty() { None } else { Some(ar.read()?) };
        let key = r.read()?.bit_string_bytes()?;
        r.finish()?;
        Ok(Self { raw: t.raw, algorithm, parameters, key })
    }

    /// The public key in the form signature verification needs.
    ///
    /// # Errors
    /// `InvalidValue` for key types scepd does not support.
    pub fn public_key(&self) -> Result<PublicKeyRef<'a>, DecodeError> {
        let unsupported = DecodeError::new(DecodeErrorKind::InvalidValue, 0);
        match self.algorithm {
            oid::RSA_ENCRYPTION => Ok(PublicKeyRef::Rsa(self.key)),
            oid::EC_PUBLIC_KEY => match self.parameters.map(|p| p.contents) {
                Some(oid::SECP256R1) => Ok(PublicKeyRef::EcP256(self.key)),
                Some(oid::SECP384R1) => Ok(PublicKeyRef::EcP384(self.key)),
                _ => Err(unsupported),
            },
            _ => Err(unsupported),
        }
    }
}

/// A borrowed X.509 certificate (RFC 5280 §4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CertificateRef<'a> {
    /// The whole certificate DER.
    pub raw: &'a [u8],
    /// The TBSCertificate DER (what the signature covers).
    pub tbs: &'a [u8],
    /// serialNumber magnitude (big-endian, no leading zeros).
    pub serial: &'a [u8],
    /// The serialNumber INTEGER contents exactly as encoded (for IssuerAndSerialNumber).
    pub serial_der_contents: &'a [u8],
    /// The issuer Name DER (full TLV).
    pub issuer: &'a [u8],
    /// The subject Name DER (full TLV).
    pub subject: &'a [u8],
    /// notBefore.
    pub not_before: UnixTime,
    /// notAfter.
    pub not_after: UnixTime,
    /// The subject public key.
    pub spki: SubjectPublicKeyInfoRef<'a>,
    /// The extensions SEQUENCE contents, if any.
    pub extensions: Option<&'a [u8]>,
    /// signatureAlgorithm OID contents.
    pub signature_alg: &'a [u8],
    /// signatureValue bytes.
    pub signature: &'a [u8],
}

impl<'a> CertificateRef<'a> {
    /// Parses certificate DER.
    ///
    /// # Errors
    /// On malformed DER.
    pub fn parse(der: &'a [u8]) -> Result<Self, DecodeError> {
        Self::from_tlv(parse_single(der)?)
    }

    /// Reads a certificate from an already-split TLV.
    ///
    /// # Errors
    /// On malformed DER.
    pub fn from_tlv(t: Tlv<'a>) -> Result<Self, DecodeError> {
        let t = t.expect_tag(tag::SEQUENCE)?;
        let mut r = t.reader();
        let tbs = r.expect(tag::SEQUENCE)?;
        let sig_alg = r.expect(tag::SEQUENCE)?;
        let signature = r.read()?.bit_string_bytes()?;
        r.finish()?;
        let signature_alg = sig_alg.reader().expect(tag::OID)?.contents;

        let mut tr = tbs.reader();
        tr.optional(tag::context_constructed(0))?; // version
        let serial_tlv = tr.expect(tag::INTEGER)?;
        // Serials are positive, but some CAs emit negative ones; keep them parseable.
        let serial = serial_tlv.unsigned_integer().unwrap_or(serial_tlv.contents);
        tr.expect(tag::SEQUENCE)?; // signature
        let issuer = tr.expect(tag::SEQUENCE)?.raw;
        let validity = tr.expect(tag::SEQUENCE)?;
        let mut vr = validity.reader();
        let not_before = crate::time::parse_asn1_time(vr.read()?)?;
        let not_after = crate::time::parse_asn1_time(vr.read()?)?;
        let subject = tr.expect(tag::SEQUENCE)?.raw;
        let spki = SubjectPublicKeyInfoRef::from_tlv(tr.read()?)?;
        let mut extensions = None;
        while let Some(tag_byte) = tr.peek_tag() {
            let field = tr.read()?;
            if tag_byte == tag::context_constructed(3) {
                extensions = Some(field.reader().expect(tag::SEQUENCE)?.contents);
            }
        }
        Ok(Self {
            raw: t.raw,
            tbs: tbs.raw,
            serial,
            serial_der_contents: serial_tlv.contents,
            issuer,
            subject,
            not_before,
            not_after,
            spki,
            extensions,
            signature_alg,
            signature,
        })
    }

    /// Looks up an extension by OID, returning (critical, extnValue contents).
    ///
    /// # Errors
    /// On malformed extensions.
    pub fn extension(&self, ext_oid: &[u8]) -> Result<Option<(bool, &'a [u8])>, DecodeError> {
        let Some(exts) = self.extensions else { return Ok(None) };
        find_extension(exts, ext_oid)
    }

    /// True when `now` lies within [notBefore, notAfter].
    pub fn is_valid_at(&self, now: UnixTime) -> bool {
        self.not_before <= now && now <= self.not_after
    }

    /// True when subject and issuer are the same name.
    pub fn is_self_issued(&self) -> bool {
        self.subject == self.issuer
    }

    /// Verifies this certificate's signature with `issuer_key`.
    ///
    /// # Errors
    /// [`VerifyError`] on an unsupported algorithm or a bad signature.
    pub fn verify_signed_by(&self, issuer_key: PublicKeyRef<'_>) -> Result<(), VerifyError> {
        let alg = SignatureAlg::from_oid(self.signature_alg, None).ok_or(VerifyError)?;
        alg.verify(issuer_key, self.tbs, self.signature)
    }

    /// The subject's commonName values, in order.
    ///
    /// # Errors
    /// On a malformed Name.
    pub fn subject_common_names(&self) -> Result<Vec<String>, DecodeError> {
        name_attribute_strings(self.subject, oid::COMMON_NAME)
    }
}

/// Finds an extension in an Extensions SEQUENCE's contents; returns
/// (critical, extnValue contents).
///
/// # Errors
/// On malformed extensions.
pub fn find_extension<'a>(
    extensions_contents: &'a [u8],
    ext_oid: &[u8],
) -> Result<Option<(bool, &'a [u8])>, DecodeError> {
    let mut r = Reader::new(extensions_contents);
    while !r.is_empty() {
        let ext = r.expect(tag::SEQUENCE)?;
        let mut er = ext.reader();
        let id = er.expect(tag::OID)?.contents;
        let critical = match er.optional(tag::BOOLEAN)? {
            Some(b) => b.contents.first().is_some_and(|&v| v != 0),
            None => false,
        };
        let value = er.expect(tag::OCTET_STRING)?.contents;
        if id == ext_oid {
            return Ok(Some((critical, value)));
        }
    }
    Ok(None)
}

/// Decodes an ASN.1 directory string (PrintableString, UTF8String, IA5String,
/// TeletexString as Latin-1, BMPString as UTF-16BE) to a Rust string.
///
/// # Errors
/// `InvalidValue` for other tags or invalid encodings.
pub fn directory_string(t: Tlv<'_>) -> Result<String, DecodeError> {
    let bad = DecodeError::new(DecodeErrorKind::InvalidValue, t.offset);
    match t.tag {
        tag::PRINTABLE_STRING | tag::UTF8_STRING | tag::IA5_STRING => {
            String::from_utf8(t.contents.to_vec()).map_err(|_| bad)
        }
        tag::TELETEX_STRING => Ok(t.contents.iter().map(|&b| char::from(b)).collect()),
        tag::BMP_STRING => {
            if !t.contents.len().is_multiple_of(2) {
                return Err(bad);
            }
            let units: Vec<u16> = t.contents.chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect();
            String::from_utf16(&units).map_err(|_| bad)
        }
        _ => Err(bad),
    }
}

/// All values of attribute `attr_oid` in a Name (full TLV), in order.
///
/// # Errors
/// On a malformed Name.
pub fn name_attribute_strings(name_der: &[u8], attr_oid: &[u8]) -> Result<Vec<String>, DecodeError> {
    let name = parse_single(name_der)?.expect_tag(tag::SEQUENCE)?;
    let mut out = Vec::new();
    let mut rdns = name.reader();
    while !rdns.is_empty() {
        let rdn = rdns.expect(tag::SET)?;
        let mut atvs = rdn.reader();
        while !atvs.is_empty() {
            let atv = atvs.expect(tag::SEQUENCE)?;
            let mut ar = atv.reader();
            if ar.expect(tag::OID)?.contents == attr_oid {
                out.push(directory_string(ar.read()?)?);
            }
        }
    }
    Ok(out)
}

/// Renders a Name (full TLV) as an RFC 4514 string (`CN=a,O=b`) for logs,
/// audit records and error messages: RDNs last to first, the attributes of a
/// multi-valued RDN joined by `+`, values escaped (§2.4) so that a value
/// cannot pose as more RDNs (`CN=a\,O=b` is one CN). Control characters are
/// escaped as `\XX` too, so a subject cannot break a log line. Unknown
/// attribute types print dotted; a value that is not a string prints `#…`.
pub fn name_to_string(name_der: &[u8]) -> String {
    fn render(name_der: &[u8]) -> Result<String, DecodeError> {
        let name = parse_single(name_der)?.expect_tag(tag::SEQUENCE)?;
        let mut rdn_strings = Vec::new();
        let mut rdns = name.reader();
        while !rdns.is_empty() {
            let rdn = rdns.expect(tag::SET)?;
            let mut atvs = rdn.reader();
            let mut parts = Vec::new();
            while !atvs.is_empty() {
                let atv = atvs.expect(tag::SEQUENCE)?;
                let mut ar = atv.reader();
                let id = ar.expect(tag::OID)?.contents;
                let label = match id {
                    [0x55, 0x04, 0x03] => "CN".to_string(),
                    [0x55, 0x04, 0x06] => "C".to_string(),
                    [0x55, 0x04, 0x07] => "L".to_string(),
                    [0x55, 0x04, 0x08] => "ST".to_string(),
                    [0x55, 0x04, 0x0a] => "O".to_string(),
                    [0x55, 0x04, 0x0b] => "OU".to_string(),
                    [0x55, 0x04, 0x05] => "serialNumber".to_string(),
                    other => oid::dotted(other),
                };
                let value =
                    directory_string(ar.read()?).map_or_else(|_| "#…".to_string(), |v| escape_attribute_value(&v));
                parts.push(format!("{label}={value}"));
            }
            rdn_strings.push(parts.join("+"));
        }
        rdn_strings.reverse();
        Ok(rdn_strings.join(","))
    }
    render(name_der).unwrap_or_else(|e| format!("<malformed name: {e}>"))
}

/// RFC 4514 §2.4: `"`, `+`, `,`, `;`, `<`, `>` and `\` escaped with a
/// backslash anywhere, `#` and space at the start and space at the end; NUL
/// and other control characters as `\XX` (hex of their UTF-8 byte).
fn escape_attribute_value(value: &str) -> String {
    let last = value.chars().count().saturating_sub(1);
    let mut out = String::with_capacity(value.len());
    for (i, c) in value.chars().enumerate() {
        match c {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            c if c.is_ascii_control() => out.push_str(&format!("\\{:02X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out
}

/// One subjectAltName GeneralName (RFC 5280 §4.2.1.6) of the kinds scepd uses.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SubjectAltName {
    /// rfc822Name `[1]`.
    Email(String),
    /// dNSName `[2]`.
    Dns(String),
    /// uniformResourceIdentifier `[6]`.
    Uri(String),
    /// iPAddress `[7]` (4 or 16 octets).
    Ip(Vec<u8>),
    /// otherName `[0]` with type Microsoft UPN (1.3.6.1.4.1.311.20.2.3).
    Upn(String),
    /// Any other GeneralName, kept as its DER so it can be copied or refused.
    Other(Vec<u8>),
}

impl SubjectAltName {
    /// Writes this name as a GeneralName.
    pub fn write(&self, w: &mut crate::wire::Writer) {
        match self {
            Self::Email(s) => {
                w.tlv(tag::context_primitive(1), s.as_bytes());
            }
            Self::Dns(s) => {
                w.tlv(tag::context_primitive(2), s.as_bytes());
            }
            Self::Uri(s) => {
                w.tlv(tag::context_primitive(6), s.as_bytes());
            }
            Self::Ip(b) => {
                w.tlv(tag::context_primitive(7), b);
            }
            Self::Upn(s) => {
                w.nested(tag::context_constructed(0), |w| {
                    w.oid(oid::MS_UPN);
                    w.nested(tag::context_constructed(0), |w| {
                        w.utf8_string(s);
                    });
                });
            }
            Self::Other(der) => {
                w.raw(der);
            }
        }
    }
}

impl std::fmt::Display for SubjectAltName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Email(s) => write!(f, "email:{s}"),
            Self::Dns(s) => write!(f, "DNS:{s}"),
            Self::Uri(s) => write!(f, "URI:{s}"),
            Self::Ip(b) if b.len() == 4 => write!(f, "IP:{}.{}.{}.{}", b[0], b[1], b[2], b[3]),
            Self::Ip(b) => match <[u8; 16]>::try_from(b.as_slice()) {
                Ok(a) => write!(f, "IP:{}", std::net::Ipv6Addr::from(a)),
                // RFC 5280 §4.2.1.6 allows only 4 or 16 octets; a CSR may
                // carry anything, and displaying it must not panic.
                Err(_) => {
                    f.write_str("IP:<invalid ")?;
                    b.iter().try_for_each(|x| write!(f, "{x:02x}"))?;
                    f.write_str(">")
                }
            },
            Self::Upn(s) => write!(f, "UPN:{s}"),
            Self::Other(_) => f.write_str("otherName:<unsupported>"),
        }
    }
}

/// Parses a subjectAltName extension value (GeneralNames, RFC 5280 §4.2.1.6).
///
/// # Errors
/// On malformed DER or non-UTF-8 names.
pub fn parse_subject_alt_names(ext_value: &[u8]) -> Result<Vec<SubjectAltName>, DecodeError> {
    let seq = parse_single(ext_value)?.expect_tag(tag::SEQUENCE)?;
    let mut r = seq.reader();
    let mut out = Vec::new();
    while !r.is_empty() {
        let gn = r.read()?;
        let text = |t: &Tlv<'_>| {
            String::from_utf8(t.contents.to_vec())
                .map_err(|_| DecodeError::new(DecodeErrorKind::InvalidValue, t.offset))
        };
        let name = match gn.tag {
            0x81 => SubjectAltName::Email(text(&gn)?),
            0x82 => SubjectAltName::Dns(text(&gn)?),
            0x86 => SubjectAltName::Uri(text(&gn)?),
            0x87 => SubjectAltName::Ip(gn.contents.to_vec()),
            0xa0 => {
                let mut or = gn.reader();
                let type_id = or.expect(tag::OID)?.contents;
                if type_id == oid::MS_UPN {
                    let explicit = or.expect(tag::context_constructed(0))?;
                    SubjectAltName::Upn(directory_string(explicit.reader().read()?)?)
                } else {
                    SubjectAltName::Other(gn.raw.to_vec())
                }
            }
            _ => SubjectAltName::Other(gn.raw.to_vec()),
        };
        out.push(name);
    }
    Ok(out)
}

/// Writes a subjectAltName extension value (GeneralNames).
pub fn encode_subject_alt_names(names: &[SubjectAltName]) -> Vec<u8> {
    let mut w = crate::wire::Writer::new();
    w.sequence(|w| {
        for n in names {
            n.write(w);
        }
    });
    w.into_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Name of RDNs, each a list of (attribute OID contents, UTF8String value).
    fn name_der(rdns: &[&[(&[u8], &str)]]) -> Vec<u8> {
        fn tlv(tag: u8, contents: &[u8]) -> Vec<u8> {
            assert!(contents.len() < 128);
            [&[tag, u8::try_from(contents.len()).unwrap()][..], contents].concat()
        }
        let rdns: Vec<u8> = rdns
            .iter()
            .flat_map(|atvs| {
                let atvs: Vec<u8> = atvs
                    .iter()
                    .flat_map(|(oid, v)| tlv(0x30, &[tlv(0x06, oid), tlv(0x0c, v.as_bytes())].concat()))
                    .collect();
                tlv(0x31, &atvs)
            })
            .collect();
        tlv(0x30, &rdns)
    }

    const CN: &[u8] = &[0x55, 0x04, 0x03];
    const O: &[u8] = &[0x55, 0x04, 0x0a];
    const OU: &[u8] = &[0x55, 0x04, 0x0b];

    #[test]
    fn names_render_as_rfc_4514_strings() {
        assert_eq!(name_to_string(&name_der(&[&[(O, "Corp")], &[(CN, "dev1")]])), "CN=dev1,O=Corp");
        // A value cannot pose as another RDN, nor hide a multi-valued one.
        assert_eq!(name_to_string(&name_der(&[&[(CN, "evil,O=Corp")]])), "CN=evil\\,O=Corp");
        assert_eq!(name_to_string(&name_der(&[&[(CN, "a+OU=b")]])), "CN=a\\+OU=b");
        assert_eq!(name_to_string(&name_der(&[&[(CN, "a"), (OU, "b")]])), "CN=a+OU=b");
        assert_eq!(name_to_string(&name_der(&[&[(CN, "<img src=\"x\">;\\")]])), "CN=\\<img src=\\\"x\\\"\\>\\;\\\\");
        assert_eq!(name_to_string(&name_der(&[&[(CN, "#tag ")]])), "CN=\\#tag\\ ");
        assert_eq!(name_to_string(&name_der(&[&[(CN, " a#b c")]])), "CN=\\ a#b c");
        assert_eq!(name_to_string(&name_der(&[&[(CN, "line\nbreak\0")]])), "CN=line\\0Abreak\\00");
        assert_eq!(name_to_string(&name_der(&[&[(CN, "é ü")]])), "CN=é ü");
        assert_eq!(name_to_string(&name_der(&[&[(CN, "")]])), "CN=");
    }

    #[test]
    fn san_round_trip() {
        let names = vec![
            SubjectAltName::Dns("a.example".into()),
            SubjectAltName::Email("u@example".into()),
            SubjectAltName::Upn("u@corp.example".into()),
            SubjectAltName::Ip(vec![127, 0, 0, 1]),
            SubjectAltName::Uri("https://x".into()),
        ];
        let der = encode_subject_alt_names(&names);
        assert_eq!(parse_subject_alt_names(&der).unwrap(), names);
    }

    /// Found by the `csr` fuzz target: an iPAddress SAN of neither 4 nor 16
    /// octets panicked in Display (copy_from_slice length mismatch), which the
    /// engine runs on every CSR's SANs for the audit outcome.
    #[test]
    fn ip_san_of_any_length_displays() {
        let sans = parse_subject_alt_names(&[0x30, 0x03, 0x87, 0x01, 0x0a]).unwrap();
        assert_eq!(sans, [SubjectAltName::Ip(vec![0x0a])]);
        assert_eq!(sans[0].to_string(), "IP:<invalid 0a>");
        assert_eq!(SubjectAltName::Ip(vec![0xff; 17]).to_string(), format!("IP:<invalid {}>", "ff".repeat(17)));
        assert_eq!(SubjectAltName::Ip(Vec::new()).to_string(), "IP:<invalid >");
        let v6 = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        assert_eq!(SubjectAltName::Ip(v6.to_vec()).to_string(), "IP:2001:db8::1");
        assert_eq!(SubjectAltName::Ip(vec![10, 0, 0, 1]).to_string(), "IP:10.0.0.1");
    }
}
