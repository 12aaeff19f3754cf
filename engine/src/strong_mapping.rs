//! Strong certificate mapping (Microsoft KB5014754): how a certificate names
//! the Active Directory account (its SID) that domain controllers map it to.
//!
//! Two forms exist:
//! - the **SID extension** `1.3.6.1.4.1.311.25.2` (`szOID_NTDS_CA_SECURITY_EXT`),
//!   whose value is a sequence holding one otherName
//!   `1.3.6.1.4.1.311.25.2.1` with the SID string in an OCTET STRING;
//! - the **SAN URI** `tag:microsoft.com,2022-09-14:sid:<SID>` (a
//!   uniformResourceIdentifier subjectAltName, RFC 4151 `tag:` URI), which
//!   Intune puts in a SCEP profile's SAN.
//!
//! A SID names an account, so whoever chooses it chooses whom the certificate
//! logs on as. The SAN URI is a subjectAltName like any other and follows the
//! profile's SAN policy; the extension is copied only when the profile trusts
//! it ([`crate::issue::IssuancePolicy::trust_requested_sid`]).

use crate::oid;
use crate::wire::{DecodeError, DecodeErrorKind, Writer, parse_single, tag};

/// The prefix of the strong-mapping SAN URI; the SID follows it.
pub const SID_URI_PREFIX: &str = "tag:microsoft.com,2022-09-14:sid:";

/// Whether `s` is a well-formed security identifier in its string form
/// (`S-1-<authority>-<subauthority>...`, MS-DTYP §2.4.2.1): revision 1, a
/// 48-bit identifier authority, and 1 to 15 32-bit subauthorities, all
/// decimal without signs.
pub fn is_security_identifier(s: &str) -> bool {
    let Some(rest) = s.strip_prefix("S-1-") else { return false };
    let mut parts = rest.split('-');
    let decimal = |p: &str| !p.is_empty() && p.len() <= 20 && p.bytes().all(|b| b.is_ascii_digit());
    let authority_ok = parts.next().is_some_and(|a| decimal(a) && a.parse::<u64>().is_ok_and(|v| v < 1u64 << 48));
    let subs: Vec<&str> = parts.collect();
    authority_ok && (1..=15).contains(&subs.len()) && subs.iter().all(|p| decimal(p) && p.parse::<u32>().is_ok())
}

/// The SID of a strong-mapping SAN URI, `None` when the URI is not one.
pub fn sid_of_uri(uri: &str) -> Option<&str> {
    // RFC 4151 §2.1: the tagging entity is compared case-insensitively.
    let head = uri.get(..SID_URI_PREFIX.len())?;
    head.eq_ignore_ascii_case(SID_URI_PREFIX).then(|| &uri[SID_URI_PREFIX.len()..])
}

/// Reads the SID from a SID extension value (DER): `SEQUENCE { [0] {
/// OID 1.3.6.1.4.1.311.25.2.1, [0] EXPLICIT OCTET STRING sid } }`.
///
/// # Errors
/// When the value does not have that shape or the SID is not well-formed.
pub fn parse_sid_extension(value: &[u8]) -> Result<&str, DecodeError> {
    let seq = parse_single(value)?.expect_tag(tag::SEQUENCE)?;
    let mut r = seq.reader();
    let other_name = r.expect(tag::context_constructed(0))?;
    r.finish()?;
    let mut or = other_name.reader();
    let type_id = or.expect(tag::OID)?;
    if type_id.contents != oid::MS_NTDS_OBJECTSID {
        return Err(DecodeError::new(DecodeErrorKind::InvalidValue, type_id.offset));
    }
    let explicit = or.expect(tag::context_constructed(0))?;
    or.finish()?;
    let mut er = explicit.reader();
    let sid = er.expect(tag::OCTET_STRING)?;
    er.finish()?;
    match std::str::from_utf8(sid.contents) {
        Ok(s) if is_security_identifier(s) => Ok(s),
        _ => Err(DecodeError::new(DecodeErrorKind::InvalidValue, sid.offset)),
    }
}

/// Encodes a SID extension value for `sid` (the inverse of
/// [`parse_sid_extension`]).
pub fn sid_extension_value(sid: &str) -> Vec<u8> {
    let mut w = Writer::new();
    w.sequence(|w| {
        w.nested(tag::context_constructed(0), |w| {
            w.oid(oid::MS_NTDS_OBJECTSID);
            w.nested(tag::context_constructed(0), |w| {
                w.octet_string(sid.as_bytes());
            });
        });
    });
    w.into_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SID: &str = "S-1-5-21-3623811015-3361044348-30300820-1013";

    #[test]
    fn security_identifiers() {
        for good in [SID, "S-1-5-32-544", "S-1-0-0", "S-1-281474976710655-1"] {
            assert!(is_security_identifier(good), "{good}");
        }
        for bad in [
            "",
            "S-1-5",
            "S-2-5-21",
            "s-1-5-21",
            "S-1-5-21-",
            "S-1-5--21",
            "S-1-5-+21",
            "S-1-5-4294967296",
            "S-1-281474976710656-1",
            "S-1-5-1-2-3-4-5-6-7-8-9-10-11-12-13-14-15-16",
            "S-1-5-21 ",
        ] {
            assert!(!is_security_identifier(bad), "{bad:?}");
        }
    }

    #[test]
    fn sid_uri() {
        assert_eq!(sid_of_uri(&format!("{SID_URI_PREFIX}{SID}")), Some(SID));
        assert_eq!(sid_of_uri(&format!("TAG:Microsoft.com,2022-09-14:SID:{SID}")), Some(SID));
        assert_eq!(sid_of_uri("https://example.com/"), None);
        assert_eq!(sid_of_uri("tag:"), None);
    }

    #[test]
    fn extension_round_trips_and_refuses_other_shapes() {
        let v = sid_extension_value(SID);
        assert_eq!(parse_sid_extension(&v), Ok(SID));
        assert!(parse_sid_extension(&sid_extension_value("S-1-5-x")).is_err());
        // Another otherName type.
        let mut other = v.clone();
        let at = other.windows(oid::MS_NTDS_OBJECTSID.len()).position(|w| w == oid::MS_NTDS_OBJECTSID).unwrap();
        other[at + oid::MS_NTDS_OBJECTSID.len() - 1] = 9;
        assert!(parse_sid_extension(&other).is_err());
        // Truncations never parse (and never panic).
        for n in 0..v.len() {
            assert!(parse_sid_extension(&v[..n]).is_err(), "{n}");
        }
    }
}
