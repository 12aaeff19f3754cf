//! Reading CMS SignedData (RFC 5652 §5): CertRep messages and degenerate
//! "certs-only" PKCS#7 (RFC 8894 §3.4), plus a strict-DER checker.

use std::borrow::Cow;

use scep_engine::oid;
use scep_engine::wire::{Reader, Tlv, parse_single, tag};

use super::error::{ClientError, Result};

/// A parsed SignedData, borrowing the input.
#[derive(Clone, Debug)]
pub(crate) struct SignedDataView<'a> {
    /// The digestAlgorithms SET's AlgorithmIdentifier OIDs.
    pub digest_algorithms: Vec<&'a [u8]>,
    /// eContentType OID contents.
    pub content_type: &'a [u8],
    /// eContent octets (reassembled if BER-chunked), if present.
    pub content: Option<Cow<'a, [u8]>>,
    /// certificates [0] (each element's full DER).
    pub certificates: Vec<&'a [u8]>,
    /// crls [1] (each element's full DER).
    pub crls: Vec<&'a [u8]>,
    /// signerInfos elements.
    pub signer_infos: Vec<Tlv<'a>>,
}

/// Parses ContentInfo { signedData } (RFC 5652 §3, §5.1).
pub(crate) fn parse_signed_data(der: &[u8]) -> Result<SignedDataView<'_>> {
    let d = |c| ClientError::decode(c);
    let ci = parse_single(der).and_then(|t| t.expect_tag(tag::SEQUENCE)).map_err(d("ContentInfo"))?;
    let mut r = ci.reader();
    let ct = r.expect(tag::OID).map_err(d("ContentInfo contentType"))?;
    if ct.contents != oid::SIGNED_DATA {
        return Err(ClientError::protocol(format!("ContentInfo is {}, not signedData", oid::dotted(ct.contents))));
    }
    let explicit = r.expect(tag::context_constructed(0)).map_err(d("ContentInfo content"))?;
    r.finish().map_err(d("ContentInfo"))?;
    let sd = explicit.reader().expect(tag::SEQUENCE).map_err(d("SignedData"))?;
    let mut r = sd.reader();
    r.expect(tag::INTEGER).map_err(d("SignedData version"))?;
    let algs = r.expect(tag::SET).map_err(d("SignedData digestAlgorithms"))?;
    let mut digest_algorithms = Vec::new();
    let mut ar = algs.reader();
    while !ar.is_empty() {
        let alg = ar.expect(tag::SEQUENCE).map_err(d("digestAlgorithm"))?;
        digest_algorithms.push(alg.reader().expect(tag::OID).map_err(d("digestAlgorithm"))?.contents);
    }
    let eci = r.expect(tag::SEQUENCE).map_err(d("EncapsulatedContentInfo"))?;
    let mut er = eci.reader();
    let content_type = er.expect(tag::OID).map_err(d("eContentType"))?.contents;
    let content = match er.optional(tag::context_constructed(0)).map_err(d("eContent"))? {
        Some(explicit) => {
            let octets = explicit.reader().read().and_then(|t| t.octets()).map_err(d("eContent"))?;
            Some(octets)
        }
        None => None,
    };
    let certificates = match r.optional(tag::context_constructed(0)).map_err(d("SignedData certificates"))? {
        Some(t) => elements(t.reader()).map_err(d("SignedData certificates"))?,
        None => Vec::new(),
    };
    let crls = match r.optional(tag::context_constructed(1)).map_err(d("SignedData crls"))? {
        Some(t) => elements(t.reader()).map_err(d("SignedData crls"))?,
        None => Vec::new(),
    };
    let infos = r.expect(tag::SET).map_err(d("SignedData signerInfos"))?;
    let mut signer_infos = Vec::new();
    let mut ir = infos.reader();
    while !ir.is_empty() {
        signer_infos.push(ir.expect(tag::SEQUENCE).map_err(d("SignerInfo"))?);
    }
    r.finish().map_err(d("SignedData"))?;
    Ok(SignedDataView { digest_algorithms, content_type, content, certificates, crls, signer_infos })
}

fn elements(mut r: Reader<'_>) -> std::result::Result<Vec<&[u8]>, scep_engine::wire::DecodeError> {
    let mut out = Vec::new();
    while !r.is_empty() {
        out.push(r.read()?.raw);
    }
    Ok(out)
}

/// Certificates and CRLs of a degenerate certs-only SignedData (RFC 8894 §3.4).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Degenerate {
    /// Certificates, in message order.
    pub certificates: Vec<Vec<u8>>,
    /// CRLs, in message order.
    pub crls: Vec<Vec<u8>>,
}

/// Parses a degenerate certs-only PKCS#7 (no signers).
///
/// # Errors
/// When it is not a SignedData.
pub fn parse_degenerate(der: &[u8]) -> Result<Degenerate> {
    let sd = parse_signed_data(der)?;
    Ok(Degenerate {
        certificates: sd.certificates.iter().map(|c| c.to_vec()).collect(),
        crls: sd.crls.iter().map(|c| c.to_vec()).collect(),
    })
}

/// True when `der` is one strict-DER value: definite minimal lengths
/// everywhere and no constructed strings (X.690 §10.1, §10.2). Primitive
/// values' contents (e.g. an OCTET STRING holding DER) are not descended into.
pub fn is_strict_der(der: &[u8]) -> bool {
    fn check(mut r: Reader<'_>, depth: u32) -> bool {
        if depth > 40 {
            return false;
        }
        while !r.is_empty() {
            let Ok(t) = r.read() else { return false };
            let len = t.contents.len();
            let minimal_header =
                if len < 0x80 { 2 } else { 2 + (usize::BITS - len.leading_zeros()).div_ceil(8) as usize };
            if t.indefinite || t.raw.len() - len != minimal_header {
                return false;
            }
            // Constructed universal string types are BER-only.
            if matches!(t.tag, 0x23 | 0x24 | 0x2c | 0x33 | 0x34 | 0x36 | 0x3e) {
                return false;
            }
            if t.is_constructed() && !check(t.reader(), depth + 1) {
                return false;
            }
        }
        true
    }
    parse_single(der).is_ok() && check(Reader::new(der), 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_der_detection() {
        assert!(is_strict_der(&[0x30, 0x03, 0x02, 0x01, 0x05]));
        assert!(!is_strict_der(&[0x30, 0x80, 0x02, 0x01, 0x05, 0, 0]));
        assert!(!is_strict_der(&[0x30, 0x81, 0x03, 0x02, 0x01, 0x05]));
        assert!(!is_strict_der(&[0x24, 0x03, 0x04, 0x01, 0x05]));
        assert!(!is_strict_der(&[0x30, 0x03, 0x02, 0x01]));
    }
}
