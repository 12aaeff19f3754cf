//! OCSP (RFC 6960) request views and response encoding, sans-IO.
//!
//! [`OcspRequestRef::parse`] gives borrowed views of an `OCSPRequest`
//! (RFC 6960 §4.1.1) in the style of the rest of the engine: no allocation
//! beyond the list of CertIDs, exact raw bytes kept (a CertID is echoed into
//! the answer byte for byte, as RFC 6960 §4.2.2.3 expects the responder to
//! identify the certificate the way it was asked). The encoder writes
//! `OCSPResponse`/`BasicOCSPResponse` (§4.2.1) with the profile of RFC 5019
//! (the lightweight profile): ResponderID byKey, GeneralizedTime throughout,
//! thisUpdate/nextUpdate on every SingleResponse. Status lookups and signing
//! keys live in the issuer (`scep_issuers::ocsp`).

use crate::crypto::{DigestAlg, KeyError, SigningKey};
use crate::oid;
use crate::wire::{DecodeError, DecodeErrorKind, Reader, Tlv, Writer, parse_single, tag};

/// The most CertIDs one request may ask about. RFC 5019 §2.1.1 has clients
/// send one; RFC 6960 sets no bound, so a bound keeps one request from
/// making the responder sign an arbitrary amount.
pub const MAX_REQUESTS: usize = 16;

/// The longest nonce accepted (RFC 8954 §2.1: `Nonce ::= OCTET STRING(SIZE(1..32))`).
pub const MAX_NONCE_LEN: usize = 32;

/// OCSPResponseStatus (RFC 6960 §4.2.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResponseStatus {
    /// successful (0): the response has valid confirmations.
    Successful,
    /// malformedRequest (1): illegal confirmation request.
    MalformedRequest,
    /// internalError (2): internal error in the issuer.
    InternalError,
    /// tryLater (3): try again later.
    TryLater,
    /// sigRequired (5): the request must be signed.
    SigRequired,
    /// unauthorized (6): request unauthorized (RFC 5019 §2.2.3: the responder
    /// cannot answer for this CA).
    Unauthorized,
}

impl ResponseStatus {
    /// The ENUMERATED value.
    pub const fn code(self) -> u8 {
        match self {
            Self::Successful => 0,
            Self::MalformedRequest => 1,
            Self::InternalError => 2,
            Self::TryLater => 3,
            Self::SigRequired => 5,
            Self::Unauthorized => 6,
        }
    }
}

/// A borrowed `CertID` (RFC 6960 §4.1.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CertIdRef<'a> {
    /// The whole CertID DER, echoed into the SingleResponse.
    pub raw: &'a [u8],
    /// hashAlgorithm's OID contents.
    pub hash_oid: &'a [u8],
    /// The hash algorithm, when it is one scepd computes (SHA-1/256/384/512).
    pub hash: Option<DigestAlg>,
    /// issuerNameHash: hash of the issuer's DER Name.
    pub issuer_name_hash: &'a [u8],
    /// issuerKeyHash: hash of the issuer's subjectPublicKey BIT STRING value.
    pub issuer_key_hash: &'a [u8],
    /// serialNumber: the contents of the (minimal, X.690 §8.3.2) INTEGER
    /// without its sign octet.
    pub serial: &'a [u8],
}

/// A borrowed `OCSPRequest` (RFC 6960 §4.1.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OcspRequestRef<'a> {
    /// requestList, in order (1..=[`MAX_REQUESTS`]).
    pub requests: Vec<CertIdRef<'a>>,
    /// The nonce extension's extnValue contents (RFC 8954: a DER OCTET STRING
    /// holding the nonce), to echo verbatim; `None` when not asked.
    pub nonce: Option<&'a [u8]>,
    /// True when the request carries optionalSignature (scepd does not
    /// require or check request signatures, RFC 6960 §4.1.2).
    pub signed: bool,
}

fn invalid(offset: usize) -> DecodeError {
    DecodeError::new(DecodeErrorKind::InvalidValue, offset)
}

/// Rejects a BER length (indefinite, or not in the fewest octets, X.690
/// §10.1): a request is the DER encoding of the OCSPRequest (RFC 6960
/// Appendix A.1), and a CertID is echoed into the signed answer byte for
/// byte.
fn der(t: Tlv<'_>) -> Result<Tlv<'_>, DecodeError> {
    if t.has_der_length() { Ok(t) } else { Err(DecodeError::new(DecodeErrorKind::BadLength, t.offset)) }
}

/// How deep a CertID may nest (CertID, AlgorithmIdentifier, its parameters
/// and one level inside them), so checking it cannot exhaust the stack.
const MAX_CERT_ID_DEPTH: u32 = 4;

/// Checks that every length inside `t`, recursively, is DER: the bytes are
/// echoed into the SingleResponse and must be DER there.
fn der_tree(t: Tlv<'_>, depth: u32) -> Result<(), DecodeError> {
    let t = der(t)?;
    if !t.is_constructed() {
        return Ok(());
    }
    if depth == MAX_CERT_ID_DEPTH {
        return Err(DecodeError::new(DecodeErrorKind::TooDeep, t.offset));
    }
    let mut r = t.reader();
    while !r.is_empty() {
        der_tree(r.read()?, depth + 1)?;
    }
    Ok(())
}

/// Rejects an INTEGER that is not in its fewest octets (X.690 §8.3.2: the
/// first nine bits are neither all zero nor all one), e.g. a serialNumber
/// padded with superfluous 0x00 octets.
fn minimal_integer(t: Tlv<'_>) -> Result<Tlv<'_>, DecodeError> {
    match t.contents {
        [] | [0x00, 0x00..=0x7f, ..] | [0xff, 0x80..=0xff, ..] => Err(invalid(t.offset)),
        _ => Ok(t),
    }
}

impl<'a> CertIdRef<'a> {
    /// Parses a CertID TLV.
    ///
    /// # Errors
    /// Any structural problem, a length that is not DER (anywhere inside:
    /// the CertID is echoed), or a serialNumber that is empty or not a
    /// minimal INTEGER (X.690 §8.3.2).
    pub fn parse(t: Tlv<'a>) -> Result<Self, DecodeError> {
        let t = t.expect_tag(tag::SEQUENCE)?;
        der_tree(t, 0)?;
        let mut r = t.reader();
        let alg = r.expect(tag::SEQUENCE)?;
        let hash_oid = alg.reader().expect(tag::OID)?.contents;
        let issuer_name_hash = r.expect(tag::OCTET_STRING)?.contents;
        let issuer_key_hash = r.expect(tag::OCTET_STRING)?.contents;
        let serial_tlv = minimal_integer(r.expect(tag::INTEGER)?)?;
        r.finish()?;
        // A negative serial (RFC 5280 forbids them) is kept as sent: it
        // cannot match a certificate scepd issued, so it is answered unknown.
        let serial = serial_tlv.contents.strip_prefix(&[0]).unwrap_or(serial_tlv.contents);
        Ok(Self {
            raw: t.raw,
            hash_oid,
            hash: DigestAlg::from_oid(hash_oid),
            issuer_name_hash,
            issuer_key_hash,
            serial: if serial.is_empty() { serial_tlv.contents } else { serial },
        })
    }
}

/// One `Extension` (RFC 5280 §4.1: extnID, critical DEFAULT FALSE, extnValue).
struct ExtensionRef<'a> {
    /// extnID's OID contents.
    id: &'a [u8],
    critical: bool,
    /// extnValue (the OCTET STRING).
    value: Tlv<'a>,
    /// Where the Extension starts, for errors.
    offset: usize,
}

/// Reads the `Extensions` SEQUENCE inside an EXPLICIT `[n]` and calls `each`
/// with every Extension, in order.
fn for_each_extension<'a>(
    explicit: Tlv<'a>,
    mut each: impl FnMut(ExtensionRef<'a>) -> Result<(), DecodeError>,
) -> Result<(), DecodeError> {
    let mut outer = der(explicit)?.reader();
    let exts = der(outer.expect(tag::SEQUENCE)?)?;
    outer.finish()?;
    let mut r = exts.reader();
    while !r.is_empty() {
        let ext = der(r.expect(tag::SEQUENCE)?)?;
        let mut e = ext.reader();
        let id = e.expect(tag::OID)?.contents;
        let critical = match e.optional(tag::BOOLEAN)? {
            None => false,
            Some(b) => match b.contents {
                [0] => false,
                [_] => true,
                _ => return Err(invalid(b.offset)),
            },
        };
        let value = der(e.expect(tag::OCTET_STRING)?)?;
        e.finish()?;
        each(ExtensionRef { id, critical, value, offset: ext.offset })?;
    }
    Ok(())
}

/// Reads requestExtensions (`[2] EXPLICIT Extensions`) and returns the
/// nonce's extnValue contents. The nonce (RFC 8954) is the one request
/// extension scepd understands; RFC 6960 §4.4 has unrecognised extensions
/// ignored unless they are critical, so any other one marked critical is
/// refused.
fn request_extensions(explicit: Tlv<'_>) -> Result<Option<&[u8]>, DecodeError> {
    let mut nonce = None;
    for_each_extension(explicit, |ext| {
        if ext.id != oid::OCSP_NONCE {
            return if ext.critical { Err(invalid(ext.offset)) } else { Ok(()) };
        }
        if nonce.is_some() {
            // RFC 5280 §4.2: an extension appears at most once.
            return Err(invalid(ext.offset));
        }
        // RFC 8954 §2.1: the value is an OCTET STRING of 1..=32 octets.
        // Some clients put the bare nonce in extnValue; accept both, bound both.
        let inner = match parse_single(ext.value.contents) {
            Ok(t) if t.tag == tag::OCTET_STRING && !t.indefinite => t.contents.len(),
            _ => ext.value.contents.len(),
        };
        if inner == 0 || inner > MAX_NONCE_LEN {
            return Err(invalid(ext.value.offset));
        }
        nonce = Some(ext.value.contents);
        Ok(())
    })?;
    Ok(nonce)
}

/// Reads singleRequestExtensions (`[0] EXPLICIT Extensions`): scepd
/// understands none of them (e.g. the service locator, RFC 6960 §4.4.6), so
/// each is ignored unless it is critical (§4.4), which is refused.
fn single_request_extensions(explicit: Tlv<'_>) -> Result<(), DecodeError> {
    for_each_extension(explicit, |ext| if ext.critical { Err(invalid(ext.offset)) } else { Ok(()) })
}

impl<'a> OcspRequestRef<'a> {
    /// Parses an `OCSPRequest` (RFC 6960 §4.1.1). Version must be v1 (0).
    /// Of the request extensions only the nonce (RFC 8954) is understood, and
    /// none of the single-request extensions; the others are ignored unless
    /// marked critical (§4.4).
    ///
    /// The request must be DER where scepd reads or echoes it (Appendix A.1:
    /// the DER encoding of the OCSPRequest): the lengths of the structures
    /// it walks, and everything in a CertID.
    ///
    /// # Errors
    /// A malformed structure, a BER length, a serialNumber that is not a
    /// minimal INTEGER, no or more than [`MAX_REQUESTS`] CertIDs, an
    /// unsupported version, a nonce outside 1..=32 octets, or a critical
    /// extension other than the nonce: all answered `malformedRequest`.
    pub fn parse(der_bytes: &'a [u8]) -> Result<Self, DecodeError> {
        let top = der(parse_single(der_bytes)?.expect_tag(tag::SEQUENCE)?)?;
        let mut r = top.reader();
        let tbs = der(r.expect(tag::SEQUENCE)?)?;
        let signed = r.optional(tag::context_constructed(0))?.is_some();
        r.finish()?;

        let mut t = tbs.reader();
        if let Some(v) = t.optional(tag::context_constructed(0))? {
            let version = der(v)?.reader().expect(tag::INTEGER)?;
            if version.small_uint()? != 0 {
                return Err(invalid(version.offset));
            }
        }
        t.optional(tag::context_constructed(1))?; // requestorName
        let list = der(t.expect(tag::SEQUENCE)?)?;
        let nonce = match t.optional(tag::context_constructed(2))? {
            Some(exts) => request_extensions(exts)?,
            None => None,
        };
        t.finish()?;

        let mut requests = Vec::with_capacity(1);
        let mut l: Reader<'a> = list.reader();
        while !l.is_empty() {
            if requests.len() == MAX_REQUESTS {
                return Err(invalid(l.offset()));
            }
            let req = der(l.expect(tag::SEQUENCE)?)?;
            let mut q = req.reader();
            let cert_id = CertIdRef::parse(q.read()?)?;
            if let Some(exts) = q.optional(tag::context_constructed(0))? {
                single_request_extensions(exts)?;
            }
            q.finish()?;
            requests.push(cert_id);
        }
        if requests.is_empty() {
            return Err(DecodeError::new(DecodeErrorKind::Missing, list.offset));
        }
        Ok(Self { requests, nonce, signed })
    }
}

/// CertStatus (RFC 6960 §4.2.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertStatus {
    /// good: not revoked (RFC 6960 §2.2).
    Good,
    /// revoked at a time, with a CRLReason code when one is known (an absent
    /// reason means unspecified, as in CRLs).
    Revoked {
        /// revocationTime.
        at: crate::time::UnixTime,
        /// revocationReason (CRLReason code), `None` for unspecified.
        reason: Option<u8>,
    },
    /// unknown: the responder does not know the certificate.
    Unknown,
}

/// One SingleResponse to write.
#[derive(Clone, Copy, Debug)]
pub struct SingleResponse<'a> {
    /// The CertID DER exactly as requested.
    pub cert_id: &'a [u8],
    /// certStatus.
    pub status: CertStatus,
    /// thisUpdate.
    pub this_update: crate::time::UnixTime,
    /// nextUpdate (RFC 5019 §2.2.4: present).
    pub next_update: crate::time::UnixTime,
}

/// Writes a GeneralizedTime (OCSP uses it everywhere; RFC 5019 §2.2.4: Zulu, no fractions).
pub fn write_generalized_time(w: &mut Writer, t: crate::time::UnixTime) {
    let (y, mo, d, h, mi, s) = t.to_civil();
    let text = format!("{y:04}{mo:02}{d:02}{h:02}{mi:02}{s:02}Z");
    w.tlv(tag::GENERALIZED_TIME, text.as_bytes());
}

/// The ResponseData (RFC 6960 §4.2.1), the part that is signed: version v1
/// (default, omitted), responderID byKey (SHA-1 of the responder's public
/// key, RFC 5019 §2.2.2), producedAt, the responses, and the nonce extension
/// echoed when the request had one (RFC 8954 §2.1).
pub fn encode_response_data(
    responder_key_hash: &[u8],
    produced_at: crate::time::UnixTime,
    responses: &[SingleResponse<'_>],
    nonce: Option<&[u8]>,
) -> Vec<u8> {
    let mut w = Writer::with_capacity(128 + responses.len() * 96);
    w.sequence(|w| {
        w.nested(tag::context_constructed(2), |w| {
            w.octet_string(responder_key_hash);
        });
        write_generalized_time(w, produced_at);
        w.sequence(|w| {
            for r in responses {
                w.sequence(|w| {
                    w.raw(r.cert_id);
                    match r.status {
                        CertStatus::Good => {
                            w.tlv(tag::context_primitive(0), &[]);
                        }
                        CertStatus::Revoked { at, reason } => {
                            w.nested(tag::context_constructed(1), |w| {
                                write_generalized_time(w, at);
                                if let Some(code) = reason {
                                    w.nested(tag::context_constructed(0), |w| {
                                        w.tlv(0x0a, &[code]); // ENUMERATED CRLReason
                                    });
                                }
                            });
                        }
                        CertStatus::Unknown => {
                            w.tlv(tag::context_primitive(2), &[]);
                        }
                    }
                    write_generalized_time(w, r.this_update);
                    w.nested(tag::context_constructed(0), |w| write_generalized_time(w, r.next_update));
                });
            }
        });
        if let Some(value) = nonce {
            w.nested(tag::context_constructed(1), |w| {
                w.sequence(|w| {
                    w.sequence(|w| {
                        w.oid(oid::OCSP_NONCE);
                        w.octet_string(value);
                    });
                });
            });
        }
    });
    w.into_vec()
}

/// Signs `response_data` into a BasicOCSPResponse wrapped in a successful
/// OCSPResponse (RFC 6960 §4.2.1), with `certs` (a delegated responder's
/// certificate, §4.2.2.2) when given. SHA-256 signatures.
///
/// # Errors
/// Only when signing fails.
pub fn sign_response(key: &SigningKey, response_data: &[u8], certs: &[&[u8]]) -> Result<Vec<u8>, KeyError> {
    let signature = key.sign(DigestAlg::Sha256, response_data)?;
    let mut basic = Writer::with_capacity(
        response_data.len() + signature.len() + 64 + certs.iter().map(|c| c.len()).sum::<usize>(),
    );
    basic.sequence(|w| {
        w.raw(response_data);
        key.write_signature_algorithm(w, DigestAlg::Sha256);
        w.bit_string(&signature);
        if !certs.is_empty() {
            w.nested(tag::context_constructed(0), |w| {
                w.sequence(|w| {
                    for c in certs {
                        w.raw(c);
                    }
                });
            });
        }
    });
    let basic = basic.into_vec();
    let mut w = Writer::with_capacity(basic.len() + 32);
    w.sequence(|w| {
        w.tlv(0x0a, &[ResponseStatus::Successful.code()]);
        w.nested(tag::context_constructed(0), |w| {
            w.sequence(|w| {
                w.oid(oid::OCSP_BASIC);
                w.octet_string(&basic);
            });
        });
    });
    Ok(w.into_vec())
}

/// An unsuccessful OCSPResponse: the status alone, no responseBytes
/// (RFC 6960 §4.2.1; these answers are not signed, §2.3).
pub fn error_response(status: ResponseStatus) -> Vec<u8> {
    let mut w = Writer::new();
    w.sequence(|w| {
        w.tlv(0x0a, &[status.code()]);
    });
    w.into_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{EcPrivateKey, SignatureAlg};
    use crate::time::UnixTime;

    /// A CertID as `openssl ocsp` writes it (SHA-1).
    fn cert_id(serial: &[u8]) -> Vec<u8> {
        let mut w = Writer::new();
        w.sequence(|w| {
            w.sequence(|w| {
                w.oid(oid::SHA1);
                w.null();
            });
            w.octet_string(&[1; 20]);
            w.octet_string(&[2; 20]);
            w.unsigned_integer(serial);
        });
        w.into_vec()
    }

    fn request(ids: &[Vec<u8>], nonce: Option<&[u8]>, version: Option<u64>) -> Vec<u8> {
        let mut w = Writer::new();
        w.sequence(|w| {
            w.sequence(|w| {
                if let Some(v) = version {
                    w.nested(tag::context_constructed(0), |w| {
                        w.small_uint(v);
                    });
                }
                w.sequence(|w| {
                    for id in ids {
                        w.sequence(|w| {
                            w.raw(id);
                        });
                    }
                });
                if let Some(n) = nonce {
                    w.nested(tag::context_constructed(2), |w| {
                        w.sequence(|w| {
                            w.sequence(|w| {
                                w.oid(oid::OCSP_NONCE);
                                w.octet_string(n);
                            });
                        });
                    });
                }
            });
        });
        w.into_vec()
    }

    #[test]
    fn parses_cert_ids_and_nonce() {
        let ids = [cert_id(&[0x80, 1]), cert_id(&[7])];
        let nonce = crate::wire::encode_tlv(tag::OCTET_STRING, &[9; 16]);
        let der = request(&ids, Some(&nonce), Some(0));
        let req = OcspRequestRef::parse(&der).unwrap();
        assert_eq!(req.requests.len(), 2);
        assert_eq!(req.requests[0].serial, &[0x80, 1], "the sign octet is stripped");
        assert_eq!(req.requests[0].raw, ids[0].as_slice());
        assert_eq!(req.requests[0].hash, Some(DigestAlg::Sha1));
        assert_eq!(req.requests[0].issuer_name_hash, &[1; 20]);
        assert_eq!(req.requests[0].issuer_key_hash, &[2; 20]);
        assert_eq!(req.requests[1].serial, &[7]);
        assert_eq!(req.nonce, Some(nonce.as_slice()));
        assert!(!req.signed);
        assert_eq!(OcspRequestRef::parse(&request(&ids[..1], None, None)).unwrap().nonce, None);
    }

    #[test]
    fn refuses_malformed_requests() {
        let one = [cert_id(&[7])];
        assert!(OcspRequestRef::parse(&request(&[], None, None)).is_err(), "empty requestList");
        assert!(OcspRequestRef::parse(&request(&one, None, Some(1))).is_err(), "version 2");
        let long = crate::wire::encode_tlv(tag::OCTET_STRING, &[9; 33]);
        assert!(OcspRequestRef::parse(&request(&one, Some(&long), None)).is_err(), "nonce over 32 octets");
        let empty = crate::wire::encode_tlv(tag::OCTET_STRING, &[]);
        assert!(OcspRequestRef::parse(&request(&one, Some(&empty), None)).is_err(), "empty nonce");
        let many: Vec<_> = (0..=MAX_REQUESTS as u8).map(|i| cert_id(&[i + 1])).collect();
        assert!(OcspRequestRef::parse(&request(&many, None, None)).is_err(), "too many CertIDs");
        let good = request(&one, None, None);
        for cut in 0..good.len() {
            assert!(OcspRequestRef::parse(&good[..cut]).is_err(), "truncated at {cut}");
        }
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(OcspRequestRef::parse(&trailing).is_err());
        assert!(OcspRequestRef::parse(b"not der at all").is_err());
        assert!(OcspRequestRef::parse(&cert_id(&[0])).is_err(), "a CertID is not a request");
    }

    /// id-pkix-ocsp-response (RFC 6960 §4.4.3), a request extension scepd does not understand.
    const ACCEPTABLE_RESPONSES: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01, 0x04];
    /// id-pkix-ocsp-service-locator (RFC 6960 §4.4.6), a single-request extension.
    const SERVICE_LOCATOR: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01, 0x07];

    /// An Extension; `critical: None` leaves the DEFAULT FALSE out, as DER does.
    fn extension(id: &[u8], critical: Option<bool>, value: &[u8]) -> Vec<u8> {
        let mut w = Writer::new();
        w.sequence(|w| {
            w.oid(id);
            if let Some(c) = critical {
                w.boolean(c);
            }
            w.octet_string(value);
        });
        w.into_vec()
    }

    /// A request of one CertID, with singleRequestExtensions and requestExtensions when given.
    fn request_with_extensions(id: &[u8], single: &[Vec<u8>], exts: &[Vec<u8>]) -> Vec<u8> {
        let explicit_extensions = |w: &mut Writer, n: u8, list: &[Vec<u8>]| {
            if !list.is_empty() {
                w.nested(tag::context_constructed(n), |w| {
                    w.sequence(|w| {
                        for e in list {
                            w.raw(e);
                        }
                    });
                });
            }
        };
        let mut w = Writer::new();
        w.sequence(|w| {
            w.sequence(|w| {
                w.sequence(|w| {
                    w.sequence(|w| {
                        w.raw(id);
                        explicit_extensions(w, 0, single);
                    });
                });
                explicit_extensions(w, 2, exts);
            });
        });
        w.into_vec()
    }

    #[test]
    fn critical_extensions_are_refused_unless_understood() {
        let id = cert_id(&[7]);
        let nonce = crate::wire::encode_tlv(tag::OCTET_STRING, &[9; 16]);
        // The nonce of the request with these extensions, or the error.
        let parse = |single: &[Vec<u8>], exts: &[Vec<u8>]| {
            let der = request_with_extensions(&id, single, exts);
            OcspRequestRef::parse(&der).map(|r| r.nonce.map(<[u8]>::to_vec))
        };
        // Not critical (absent or FALSE): ignored, in either place (RFC 6960 §4.4).
        for critical in [None, Some(false)] {
            let unknown = extension(ACCEPTABLE_RESPONSES, critical, &[0x30, 0x00]);
            assert_eq!(parse(&[], std::slice::from_ref(&unknown)), Ok(None), "{critical:?}");
            let locator = extension(SERVICE_LOCATOR, critical, &[0x30, 0x00]);
            assert_eq!(parse(&[locator], &[unknown]), Ok(None), "{critical:?}");
        }
        // The nonce is understood: critical or not, it is read.
        let critical_nonce = extension(oid::OCSP_NONCE, Some(true), &nonce);
        assert_eq!(parse(&[], &[critical_nonce]), Ok(Some(nonce.clone())));
        // Critical and not understood: malformedRequest, beside a nonce or alone.
        let unknown = extension(ACCEPTABLE_RESPONSES, Some(true), &[0x30, 0x00]);
        let with_nonce = extension(oid::OCSP_NONCE, None, &nonce);
        assert!(parse(&[], &[with_nonce.clone(), unknown.clone()]).is_err(), "critical request extension");
        assert!(parse(&[], &[unknown]).is_err(), "critical request extension alone");
        let locator = extension(SERVICE_LOCATOR, Some(true), &[0x30, 0x00]);
        assert!(parse(&[locator], std::slice::from_ref(&with_nonce)).is_err(), "critical single-request extension");
        // A nonce is a request extension: scepd does not understand it per CertID.
        let single_nonce = extension(oid::OCSP_NONCE, Some(true), &nonce);
        assert!(parse(&[single_nonce], &[]).is_err(), "critical nonce among singleRequestExtensions");
        // BOOLEAN of other than one octet.
        let mut bad_bool = extension(ACCEPTABLE_RESPONSES, Some(false), &[0x30, 0x00]);
        let at = bad_bool.windows(3).position(|w| w == [tag::BOOLEAN, 1, 0]).unwrap();
        bad_bool.splice(at..at + 3, [tag::BOOLEAN, 0]);
        bad_bool[1] -= 1;
        assert!(parse(&[], &[bad_bool]).is_err(), "empty BOOLEAN");
    }

    /// `der` (one TLV with a short definite length) with the indefinite form instead (BER).
    fn indefinite(der: &[u8]) -> Vec<u8> {
        assert!(der[1] < 0x80, "short form expected");
        [&[der[0], 0x80], &der[2..], &[0, 0][..]].concat()
    }

    /// `der` (one TLV with a short definite length) with a needless long-form length.
    fn long_form_length(der: &[u8]) -> Vec<u8> {
        assert!(der[1] < 0x80, "short form expected");
        [&[der[0], 0x81], &der[1..]].concat()
    }

    #[test]
    fn refuses_ber_and_non_minimal_serials() {
        let id = cert_id(&[7]);
        let good = request(std::slice::from_ref(&id), None, None);
        assert!(OcspRequestRef::parse(&good).is_ok());
        // X.690 §8.3.2: superfluous leading octets on the serialNumber.
        for serial in [&[0x00, 0x07][..], &[0x00, 0x00, 0x07], &[0x00, 0x00, 0x80], &[0xff, 0x80]] {
            let mut padded = id.clone();
            let at = padded.len() - 3; // INTEGER 01 07
            padded.splice(at.., crate::wire::encode_tlv(tag::INTEGER, serial));
            padded[1] = u8::try_from(padded.len() - 2).unwrap();
            let err = OcspRequestRef::parse(&request(&[padded], None, None)).unwrap_err();
            assert_eq!(err.kind, DecodeErrorKind::InvalidValue, "{serial:02x?}");
        }
        // Minimal ones, the sign octet included, still parse.
        for serial in [&[0x00][..], &[0x00, 0x80], &[0x7f], &[0xff, 0x7f]] {
            let mut minimal = id.clone();
            let at = minimal.len() - 3;
            minimal.splice(at.., crate::wire::encode_tlv(tag::INTEGER, serial));
            minimal[1] = u8::try_from(minimal.len() - 2).unwrap();
            assert!(OcspRequestRef::parse(&request(&[minimal], None, None)).is_ok(), "{serial:02x?}");
        }
        // BER lengths: the outer SEQUENCE indefinite or in long form.
        for ber in [indefinite(&good), long_form_length(&good)] {
            assert_eq!(OcspRequestRef::parse(&ber).unwrap_err().kind, DecodeErrorKind::BadLength, "{ber:02x?}");
        }
        // ... or inside the CertID, which is echoed: its hashAlgorithm indefinite.
        let alg_contents = 4..4 + usize::from(id[3]);
        let ber_contents = [&[0x30, 0x80][..], &id[alg_contents.clone()], &[0, 0], &id[alg_contents.end..]].concat();
        let ber_id = [&[0x30, u8::try_from(ber_contents.len()).unwrap()][..], &ber_contents].concat();
        assert!(CertIdRef::parse(parse_single(&ber_id).unwrap()).is_err());
        assert!(OcspRequestRef::parse(&request(&[ber_id], None, None)).is_err());
    }

    #[test]
    fn encodes_a_signed_response_with_every_status() {
        let (key, _) = EcPrivateKey::generate().unwrap();
        let key = SigningKey::EcP256(key);
        let ids = [cert_id(&[1]), cert_id(&[2]), cert_id(&[3])];
        let now = UnixTime(1_800_000_000);
        let responses = [
            SingleResponse {
                cert_id: &ids[0],
                status: CertStatus::Good,
                this_update: now,
                next_update: now.plus(3600),
            },
            SingleResponse {
                cert_id: &ids[1],
                status: CertStatus::Revoked { at: now.plus(-60), reason: Some(1) },
                this_update: now,
                next_update: now.plus(3600),
            },
            SingleResponse {
                cert_id: &ids[2],
                status: CertStatus::Unknown,
                this_update: now,
                next_update: now.plus(3600),
            },
        ];
        let nonce = crate::wire::encode_tlv(tag::OCTET_STRING, &[5; 8]);
        let data = encode_response_data(&[0xaa; 20], now, &responses, Some(&nonce));
        let der = sign_response(&key, &data, &[b"\x30\x00"]).unwrap();

        let top = parse_single(&der).unwrap();
        let mut r = top.reader();
        assert_eq!(r.expect(0x0a).unwrap().contents, &[0]);
        let bytes = r.expect(tag::context_constructed(0)).unwrap();
        let mut b = bytes.reader().expect(tag::SEQUENCE).unwrap().reader();
        assert_eq!(b.expect(tag::OID).unwrap().contents, oid::OCSP_BASIC);
        let basic = parse_single(b.expect(tag::OCTET_STRING).unwrap().contents).unwrap();
        let mut br = basic.reader();
        let tbs = br.expect(tag::SEQUENCE).unwrap();
        assert_eq!(tbs.raw, data.as_slice());
        br.expect(tag::SEQUENCE).unwrap();
        let sig = br.expect(tag::BIT_STRING).unwrap().bit_string_bytes().unwrap();
        let spki = crate::x509::SubjectPublicKeyInfoRef::parse(key.spki_der()).unwrap();
        SignatureAlg::Ecdsa(DigestAlg::Sha256).verify(spki.public_key().unwrap(), tbs.raw, sig).unwrap();
        assert!(br.expect(tag::context_constructed(0)).is_ok(), "certs present");

        let mut t = tbs.reader();
        let rid = t.expect(tag::context_constructed(2)).unwrap();
        assert_eq!(rid.reader().expect(tag::OCTET_STRING).unwrap().contents, &[0xaa; 20]);
        assert_eq!(t.expect(tag::GENERALIZED_TIME).unwrap().contents, b"20270115080000Z");
        let mut list = t.expect(tag::SEQUENCE).unwrap().reader();
        let statuses: Vec<u8> = (0..3)
            .map(|i| {
                let mut s = list.expect(tag::SEQUENCE).unwrap().reader();
                assert_eq!(s.read().unwrap().raw, ids[i].as_slice(), "CertID echoed");
                let st = s.read().unwrap();
                if st.tag == tag::context_constructed(1) {
                    let mut rv = st.reader();
                    rv.expect(tag::GENERALIZED_TIME).unwrap();
                    let reason = rv.expect(tag::context_constructed(0)).unwrap();
                    assert_eq!(reason.reader().expect(0x0a).unwrap().contents, &[1]);
                }
                s.expect(tag::GENERALIZED_TIME).unwrap();
                s.expect(tag::context_constructed(0)).unwrap();
                st.tag
            })
            .collect();
        assert_eq!(statuses, [0x80, 0xa1, 0x82]);
        let exts = t.expect(tag::context_constructed(1)).unwrap();
        let ext = exts.reader().expect(tag::SEQUENCE).unwrap().reader().expect(tag::SEQUENCE).unwrap();
        let mut e = ext.reader();
        assert_eq!(e.expect(tag::OID).unwrap().contents, oid::OCSP_NONCE);
        assert_eq!(e.expect(tag::OCTET_STRING).unwrap().contents, nonce.as_slice(), "nonce echoed");
    }

    #[test]
    fn error_responses_carry_only_the_status() {
        assert_eq!(error_response(ResponseStatus::MalformedRequest), [0x30, 0x03, 0x0a, 0x01, 0x01]);
        assert_eq!(error_response(ResponseStatus::Unauthorized), [0x30, 0x03, 0x0a, 0x01, 0x06]);
    }
}
