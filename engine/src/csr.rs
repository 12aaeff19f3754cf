//! PKCS#10 certification requests (RFC 2986), as carried in PKCSReq and
//! RenewalReq (RFC 8894 §3.3.1), with the PKCS#9 attributes SCEP uses:
//! challengePassword (RFC 2985 §5.4.1) and extensionRequest (RFC 2985 §5.4.2).

use crate::crypto::{SignatureAlg, VerifyError};
use crate::oid;
use crate::wire::{DecodeError, DecodeErrorKind, Reader, Tlv, parse_single, tag};
use crate::x509::{
    SubjectAltName, SubjectPublicKeyInfoRef, directory_string, find_extension, name_attribute_strings,
    parse_subject_alt_names,
};

/// Microsoft's msCertExtensions attribute `1.3.6.1.4.1.311.2.1.14`, which some
/// Windows clients use instead of extensionRequest (same Extensions syntax).
const MS_CERT_EXTENSIONS: &[u8] = &[0x2b, 0x06, 0x01, 0x04, 0x01, 0x82, 0x37, 0x02, 0x01, 0x0e];

/// A borrowed PKCS#10 CertificationRequest (RFC 2986 §4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CsrRef<'a> {
    /// The whole request DER.
    pub raw: &'a [u8],
    /// The CertificationRequestInfo DER (what the signature covers).
    pub info: &'a [u8],
    /// The subject Name TLV.
    pub subject: &'a [u8],
    /// The subject public key.
    pub spki: SubjectPublicKeyInfoRef<'a>,
    /// The PKCS#9 challengePassword (RFC 2985 §5.4.1), decoded from any
    /// DirectoryString form (PrintableString, UTF8String, IA5String,
    /// TeletexString, BMPString). The first value when several are sent.
    pub challenge_password: Option<String>,
    /// The contents of the first Extensions SEQUENCE from the extensionRequest
    /// attribute (RFC 2985 §5.4.2), if any.
    pub extensions: Option<&'a [u8]>,
    /// signatureAlgorithm OID contents.
    pub signature_alg: &'a [u8],
    /// The signature bytes.
    pub signature: &'a [u8],
    /// Every Extensions SEQUENCE's contents, in order (clients that send several
    /// extensionRequest values or attributes); the first is `extensions`.
    extension_blocks: Vec<&'a [u8]>,
}

impl<'a> CsrRef<'a> {
    /// Parses a CertificationRequest (DER; BER tolerated).
    ///
    /// # Errors
    /// On malformed encoding, a version other than 0, or an undecodable
    /// challengePassword.
    pub fn parse(der: &'a [u8]) -> Result<Self, DecodeError> {
        // RFC 2986 §4.2 CertificationRequest
        let outer = parse_single(der)?.expect_tag(tag::SEQUENCE)?;
        let mut r = outer.reader();
        let info = r.expect(tag::SEQUENCE)?;
        let alg = r.expect(tag::SEQUENCE)?;
        let signature = r.read()?.bit_string_bytes()?;
        r.finish()?;
        let signature_alg = alg.reader().expect(tag::OID)?.contents;

        // RFC 2986 §4.1 CertificationRequestInfo
        let mut ir = info.reader();
        let version = ir.read()?;
        if version.small_uint()? != 0 {
            return Err(DecodeError::new(DecodeErrorKind::InvalidValue, version.offset));
        }
        let subject = ir.expect(tag::SEQUENCE)?.raw;
        let spki = SubjectPublicKeyInfoRef::from_tlv(ir.read()?)?;
        // attributes [0] IMPLICIT SET OF Attribute: required by RFC 2986, but
        // omitted by some encoders when empty.
        let attributes = ir.optional(tag::context_constructed(0))?;
        ir.finish()?;

        let mut challenge_password = None;
        let mut extension_blocks = Vec::new();
        if let Some(attrs) = attributes {
            let mut ar = attrs.reader();
            while !ar.is_empty() {
                let attr = ar.expect(tag::SEQUENCE)?;
                let mut r = attr.reader();
                let attr_type = r.expect(tag::OID)?.contents;
                let values = r.expect(tag::SET)?;
                r.finish()?;
                let mut vr = values.reader();
                match attr_type {
                    oid::CHALLENGE_PASSWORD => {
                        // Several values (or attributes) happen; the first wins.
                        while !vr.is_empty() {
                            let v = directory_string(vr.read()?)?;
                            challenge_password.get_or_insert(v);
                        }
                    }
                    oid::EXTENSION_REQUEST | MS_CERT_EXTENSIONS => {
                        while !vr.is_empty() {
                            let exts = vr.expect(tag::SEQUENCE)?;
                            check_extensions(exts)?;
                            extension_blocks.push(exts.contents);
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok(Self {
            raw: outer.raw,
            info: info.raw,
            subject,
            spki,
            challenge_password,
            extensions: extension_blocks.first().copied(),
            signature_alg,
            signature,
            extension_blocks,
        })
    }

    /// Verifies the self-signature (proof of possession, RFC 2986 §3).
    ///
    /// # Errors
    /// [`VerifyError`] for an unsupported algorithm or key, or a bad signature.
    pub fn verify_signature(&self) -> Result<(), VerifyError> {
        self.verify_signature_with(&**crate::crypto::default_provider())
    }

    /// [`CsrRef::verify_signature`] with `provider`.
    ///
    /// # Errors
    /// As [`CsrRef::verify_signature`].
    pub fn verify_signature_with(&self, provider: &dyn crate::crypto::CryptoProvider) -> Result<(), VerifyError> {
        let alg = SignatureAlg::from_oid(self.signature_alg, None).ok_or(VerifyError)?;
        let key = self.spki.public_key().map_err(|_| VerifyError)?;
        provider.verify(alg, key, &[self.info], self.signature)
    }

    /// The subject's commonName values, in order.
    ///
    /// # Errors
    /// On a malformed Name or undecodable string.
    pub fn common_names(&self) -> Result<Vec<String>, DecodeError> {
        name_attribute_strings(self.subject, oid::COMMON_NAME)
    }

    /// Looks up a requested extension by OID across all extensionRequest
    /// blocks: (critical, extnValue contents). The first occurrence wins.
    ///
    /// # Errors
    /// On malformed extensions (normally caught by [`Self::parse`]).
    pub fn extension(&self, ext_oid: &[u8]) -> Result<Option<(bool, &'a [u8])>, DecodeError> {
        for block in &self.extension_blocks {
            if let Some(found) = find_extension(block, ext_oid)? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// The requested subjectAltNames (RFC 5280 §4.2.1.6); empty when none.
    ///
    /// # Errors
    /// On a malformed subjectAltName extension.
    pub fn subject_alt_names(&self) -> Result<Vec<SubjectAltName>, DecodeError> {
        match self.extension(oid::SUBJECT_ALT_NAME)? {
            Some((_, value)) => parse_subject_alt_names(value),
            None => Ok(Vec::new()),
        }
    }

    /// The requested extended key usages as OID contents (RFC 5280 §4.2.1.12);
    /// empty when none.
    ///
    /// # Errors
    /// On a malformed extKeyUsage extension.
    pub fn extended_key_usages(&self) -> Result<Vec<&'a [u8]>, DecodeError> {
        let Some((_, value)) = self.extension(oid::EXT_KEY_USAGE)? else { return Ok(Vec::new()) };
        let seq = parse_single(value)?.expect_tag(tag::SEQUENCE)?;
        let mut r = seq.reader();
        let mut out = Vec::new();
        while !r.is_empty() {
            out.push(r.expect(tag::OID)?.contents);
        }
        Ok(out)
    }

    /// The public key size in bits (RSA modulus bits, or the curve size).
    ///
    /// # Errors
    /// `InvalidValue` for a key type scepd does not support.
    pub fn key_bits(&self) -> Result<usize, DecodeError> {
        let bits = self.spki.public_key()?.bits();
        if bits == 0 {
            return Err(DecodeError::new(DecodeErrorKind::InvalidValue, 0));
        }
        Ok(bits)
    }
}

/// Checks that an Extensions SEQUENCE is well formed (RFC 5280 §4.1), so later
/// lookups cannot fail on structure.
fn check_extensions(exts: Tlv<'_>) -> Result<(), DecodeError> {
    let mut r: Reader<'_> = exts.reader();
    while !r.is_empty() {
        let ext = r.expect(tag::SEQUENCE)?;
        let mut er = ext.reader();
        er.expect(tag::OID)?;
        er.optional(tag::BOOLEAN)?;
        er.expect(tag::OCTET_STRING)?;
        er.finish()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::tests::open_capture;
    use crate::message::tests::CAPTURES;
    use crate::wire::Writer;

    #[test]
    fn parses_all_capture_csrs() {
        for (stem, ..) in CAPTURES {
            let opened = open_capture(stem);
            let csr = CsrRef::parse(&opened.content).unwrap_or_else(|e| panic!("{stem}: {e}"));
            csr.verify_signature().unwrap_or_else(|_| panic!("{stem}: CSR signature"));
            assert_eq!(csr.challenge_password.as_deref(), Some("secret123"), "{stem}");
            assert_eq!(csr.common_names().unwrap(), vec![format!("peers-{stem}-1795574366")], "{stem}");
            assert_eq!(csr.key_bits().unwrap(), 2048, "{stem}");
            assert!(csr.subject_alt_names().unwrap().is_empty(), "{stem}");
            assert_eq!(csr.raw, &opened.content[..]);
            assert!(parse_single(csr.info).is_ok());
        }
        // micromdm's client adds C, O, OU.
        let opened = open_capture("scepclient");
        let csr = CsrRef::parse(&opened.content).unwrap();
        assert_eq!(
            crate::x509::name_to_string(csr.subject),
            "CN=peers-scepclient-1795574366,OU=MDM,O=scep-client,C=US"
        );
        // pyscep and scepreq request extensions (basicConstraints among them).
        for stem in ["pyscep", "scepreq"] {
            let opened = open_capture(stem);
            let csr = CsrRef::parse(&opened.content).unwrap();
            assert!(csr.extensions.is_some(), "{stem}");
            assert!(csr.extension(oid::BASIC_CONSTRAINTS).unwrap().is_some(), "{stem}");
        }
    }

    #[test]
    fn tampered_csr_fails_signature() {
        let opened = open_capture("sscep");
        let mut der = opened.content.clone();
        let at = {
            let csr = CsrRef::parse(&der).unwrap();
            csr.subject.as_ptr() as usize - der.as_ptr() as usize + csr.subject.len() - 1
        };
        der[at] ^= 0x01;
        let csr = CsrRef::parse(&der).unwrap();
        assert_eq!(csr.verify_signature(), Err(VerifyError));
    }

    #[test]
    fn every_truncation_is_an_error() {
        for (stem, ..) in CAPTURES {
            let der = open_capture(stem).content;
            for len in 0..der.len() {
                assert!(CsrRef::parse(&der[..len]).is_err(), "{stem} {len}");
            }
        }
    }

    /// A CSR built around `attributes` (already-encoded Attribute SEQUENCEs);
    /// the signature is not valid, which parsing does not check.
    fn csr_with(attributes: &[Vec<u8>], subject_cn: &str) -> Vec<u8> {
        let opened = open_capture("sscep");
        let base = CsrRef::parse(&opened.content).unwrap();
        let mut w = Writer::new();
        w.sequence(|w| {
            w.sequence(|w| {
                w.small_uint(0);
                w.sequence(|w| {
                    w.set(|w| {
                        w.sequence(|w| {
                            w.oid(oid::COMMON_NAME).utf8_string(subject_cn);
                        });
                    });
                });
                w.raw(base.spki.raw);
                w.nested(tag::context_constructed(0), |w| {
                    for a in attributes {
                        w.raw(a);
                    }
                });
            });
            w.sequence(|w| {
                w.oid(oid::SHA256_WITH_RSA).null();
            });
            w.bit_string(&[0; 4]);
        });
        w.into_vec()
    }

    fn attribute(attr_type: &[u8], values: &[Vec<u8>]) -> Vec<u8> {
        let mut w = Writer::new();
        w.sequence(|w| {
            w.oid(attr_type);
            w.set(|w| {
                for v in values {
                    w.raw(v);
                }
            });
        });
        w.into_vec()
    }

    fn extensions(exts: &[(&[u8], Vec<u8>)]) -> Vec<u8> {
        let mut w = Writer::new();
        w.sequence(|w| {
            for (id, value) in exts {
                w.sequence(|w| {
                    w.oid(id).octet_string(value);
                });
            }
        });
        w.into_vec()
    }

    #[test]
    fn challenge_forms_and_multi_valued_attributes() {
        let bmp: Vec<u8> = "sécret".encode_utf16().flat_map(u16::to_be_bytes).collect();
        let bmp = crate::wire::encode_tlv(tag::BMP_STRING, &bmp);
        let utf8 = crate::wire::encode_tlv(tag::UTF8_STRING, "other".as_bytes());
        let der = csr_with(&[attribute(oid::CHALLENGE_PASSWORD, &[bmp, utf8])], "x");
        let csr = CsrRef::parse(&der).unwrap();
        assert_eq!(csr.challenge_password.as_deref(), Some("sécret"));
        assert!(csr.verify_signature().is_err());

        let t61 = crate::wire::encode_tlv(tag::TELETEX_STRING, b"pw");
        let der = csr_with(&[attribute(oid::CHALLENGE_PASSWORD, &[t61])], "x");
        assert_eq!(CsrRef::parse(&der).unwrap().challenge_password.as_deref(), Some("pw"));

        // An undecodable challenge is a parse error, never silently ignored.
        let odd_bmp = crate::wire::encode_tlv(tag::BMP_STRING, &[0, 0x41, 0]);
        assert!(CsrRef::parse(&csr_with(&[attribute(oid::CHALLENGE_PASSWORD, &[odd_bmp])], "x")).is_err());
        let int = crate::wire::encode_tlv(tag::INTEGER, &[1]);
        assert!(CsrRef::parse(&csr_with(&[attribute(oid::CHALLENGE_PASSWORD, &[int])], "x")).is_err());

        // No attributes at all.
        let der = csr_with(&[], "x");
        let csr = CsrRef::parse(&der).unwrap();
        assert_eq!(csr.challenge_password, None);
        assert_eq!(csr.extensions, None);
        assert!(csr.extended_key_usages().unwrap().is_empty());
    }

    #[test]
    fn extension_request_sans_and_ekus() {
        let san = crate::x509::encode_subject_alt_names(&[
            SubjectAltName::Dns("dev.example".into()),
            SubjectAltName::Upn("u@corp.example".into()),
        ]);
        let mut w = Writer::new();
        w.sequence(|w| {
            w.oid(oid::KP_CLIENT_AUTH).oid(oid::KP_SERVER_AUTH);
        });
        let eku = w.into_vec();
        // Two extensionRequest values: SAN in the first, EKU in the second.
        let first = extensions(&[(oid::SUBJECT_ALT_NAME, san)]);
        let second = extensions(&[(oid::EXT_KEY_USAGE, eku)]);
        let der = csr_with(&[attribute(oid::EXTENSION_REQUEST, &[first.clone(), second])], "dev");
        let csr = CsrRef::parse(&der).unwrap();
        assert_eq!(csr.extensions, Some(&first[2..]));
        assert_eq!(
            csr.subject_alt_names().unwrap(),
            vec![SubjectAltName::Dns("dev.example".into()), SubjectAltName::Upn("u@corp.example".into())]
        );
        assert_eq!(csr.extended_key_usages().unwrap(), vec![oid::KP_CLIENT_AUTH, oid::KP_SERVER_AUTH]);
        assert_eq!(csr.common_names().unwrap(), vec!["dev".to_string()]);

        // Microsoft's attribute is read the same way.
        let ms = extensions(&[(oid::EXT_KEY_USAGE, crate::wire::encode_tlv(tag::SEQUENCE, &[]))]);
        let der = csr_with(&[attribute(MS_CERT_EXTENSIONS, &[ms])], "dev");
        assert!(CsrRef::parse(&der).unwrap().extension(oid::EXT_KEY_USAGE).unwrap().is_some());

        // Malformed Extensions are refused at parse time.
        let broken = crate::wire::encode_tlv(tag::SEQUENCE, &[0x30, 0x03, 0x02, 0x01, 0x00]);
        assert!(CsrRef::parse(&csr_with(&[attribute(oid::EXTENSION_REQUEST, &[broken])], "x")).is_err());
    }

    #[test]
    fn version_must_be_zero() {
        let opened = open_capture("sscep");
        let mut der = opened.content.clone();
        let info_at = {
            let csr = CsrRef::parse(&der).unwrap();
            csr.info.as_ptr() as usize - der.as_ptr() as usize
        };
        // info: 30 82 xx xx 02 01 00 ...
        assert_eq!(&der[info_at + 4..info_at + 7], &[2, 1, 0]);
        der[info_at + 6] = 1;
        assert!(CsrRef::parse(&der).is_err());
    }
}
