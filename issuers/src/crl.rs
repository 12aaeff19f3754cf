//! Certificate revocation lists (RFC 5280 §5): v2 CRLs with cRLNumber and
//! authorityKeyIdentifier, signed by the CA.

use scep_engine::crypto::DigestAlg;
use scep_engine::oid;
use scep_engine::time::UnixTime;
use scep_engine::wire::{Writer, tag};

use crate::x509_build::{BuildError, CaSigner, authority_key_identifier_value, trim_serial};

/// CRLReason (RFC 5280 §5.3.1). `removeFromCRL` (8) is not listed: it only
/// has a meaning in delta CRLs, which scepd does not issue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RevocationReason {
    /// unspecified (0): written as an absent reasonCode (RFC 5280 §5.3.1).
    Unspecified,
    /// keyCompromise (1)
    KeyCompromise,
    /// cACompromise (2)
    CaCompromise,
    /// affiliationChanged (3)
    AffiliationChanged,
    /// superseded (4)
    Superseded,
    /// cessationOfOperation (5)
    CessationOfOperation,
    /// certificateHold (6)
    CertificateHold,
    /// privilegeWithdrawn (9)
    PrivilegeWithdrawn,
    /// aACompromise (10)
    AaCompromise,
}

impl RevocationReason {
    /// The CRLReason code.
    pub const fn code(self) -> u8 {
        match self {
            Self::Unspecified => 0,
            Self::KeyCompromise => 1,
            Self::CaCompromise => 2,
            Self::AffiliationChanged => 3,
            Self::Superseded => 4,
            Self::CessationOfOperation => 5,
            Self::CertificateHold => 6,
            Self::PrivilegeWithdrawn => 9,
            Self::AaCompromise => 10,
        }
    }

    /// The reason for a CRLReason code, `None` for 7 (unused), 8
    /// (removeFromCRL) and undefined values.
    pub const fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => Self::Unspecified,
            1 => Self::KeyCompromise,
            2 => Self::CaCompromise,
            3 => Self::AffiliationChanged,
            4 => Self::Superseded,
            5 => Self::CessationOfOperation,
            6 => Self::CertificateHold,
            9 => Self::PrivilegeWithdrawn,
            10 => Self::AaCompromise,
            _ => return None,
        })
    }

    /// The RFC 5280 name, e.g. `keyCompromise`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Unspecified => "unspecified",
            Self::KeyCompromise => "keyCompromise",
            Self::CaCompromise => "cACompromise",
            Self::AffiliationChanged => "affiliationChanged",
            Self::Superseded => "superseded",
            Self::CessationOfOperation => "cessationOfOperation",
            Self::CertificateHold => "certificateHold",
            Self::PrivilegeWithdrawn => "privilegeWithdrawn",
            Self::AaCompromise => "aACompromise",
        }
    }
}

impl std::fmt::Display for RevocationReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One revokedCertificates entry (RFC 5280 §5.1.2.6).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevokedEntry {
    /// The revoked certificate's serial magnitude.
    pub serial: Vec<u8>,
    /// revocationDate.
    pub revoked_at: UnixTime,
    /// reasonCode entry extension.
    pub reason: RevocationReason,
}

/// What a CRL is made of.
#[derive(Clone, Copy, Debug)]
pub struct CrlParams<'a> {
    /// cRLNumber (RFC 5280 §5.2.3): monotonically increasing per CA.
    pub crl_number: u64,
    /// thisUpdate (§5.1.2.4).
    pub this_update: UnixTime,
    /// nextUpdate (§5.1.2.5; RFC 5280 requires it).
    pub next_update: UnixTime,
    /// The revoked certificates.
    pub revoked: &'a [RevokedEntry],
}

/// Builds and signs a v2 CRL (RFC 5280 §5.1): version v2, the CA as issuer,
/// thisUpdate/nextUpdate, revokedCertificates (absent when empty, §5.1.2.6)
/// with reasonCode entry extensions (absent for unspecified, §5.3.1), and the
/// CRL extensions authorityKeyIdentifier (§5.2.1) and cRLNumber (§5.2.3).
///
/// # Errors
/// When nextUpdate is not after thisUpdate, a serial is empty, or signing fails.
pub fn build_crl(ca: &CaSigner, p: &CrlParams<'_>) -> Result<Vec<u8>, BuildError> {
    if p.next_update <= p.this_update {
        return Err(BuildError::Invalid("CRL nextUpdate must be after thisUpdate".into()));
    }
    if p.revoked.iter().any(|r| trim_serial(&r.serial).is_empty()) {
        return Err(BuildError::Invalid("revoked entry with an empty serial".into()));
    }
    let mut w = Writer::with_capacity(256 + p.revoked.len() * 48);
    w.sequence(|w| {
        w.small_uint(1); // v2
        ca.key().write_signature_algorithm(w, DigestAlg::Sha256);
        w.raw(ca.subject());
        p.this_update.write_asn1(w);
        p.next_update.write_asn1(w);
        if !p.revoked.is_empty() {
            w.sequence(|w| {
                for r in p.revoked {
                    w.sequence(|w| {
                        w.unsigned_integer(&r.serial);
                        r.revoked_at.write_asn1(w);
                        if r.reason != RevocationReason::Unspecified {
                            w.sequence(|w| {
                                w.sequence(|w| {
                                    w.oid(oid::CRL_REASON);
                                    let mut v = Writer::new();
                                    v.tlv(0x0a, &[r.reason.code()]); // ENUMERATED
                                    w.octet_string(v.as_slice());
                                });
                            });
                        }
                    });
                }
            });
        }
        w.nested(tag::context_constructed(0), |w| {
            w.sequence(|w| {
                w.sequence(|w| {
                    w.oid(oid::AUTHORITY_KEY_IDENTIFIER);
                    w.octet_string(&authority_key_identifier_value(ca.key_id()));
                });
                w.sequence(|w| {
                    w.oid(oid::CRL_NUMBER);
                    let mut v = Writer::new();
                    v.small_uint(p.crl_number);
                    w.octet_string(v.as_slice());
                });
            });
        });
    });
    crate::x509_build::sign_structure(ca.key(), &w.into_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use scep_engine::crypto::{EcPrivateKey, SignatureAlg, SigningKey};
    use scep_engine::wire::parse_single;
    use scep_engine::x509::CertificateRef;

    use crate::x509_build::{Validity, common_name, self_signed_ca};

    #[test]
    fn crl_structure_and_signature() {
        let (key, _) = EcPrivateKey::generate().unwrap();
        let key = SigningKey::EcP256(key);
        let v = Validity { not_before: UnixTime(1_700_000_000), not_after: UnixTime(1_900_000_000) };
        let cert = self_signed_ca(&key, &common_name("CRL CA"), &[3], v).unwrap();
        let ca = CaSigner::new(key, cert).unwrap();
        let revoked = [
            RevokedEntry {
                serial: vec![0x81, 2],
                revoked_at: UnixTime(1_800_000_000),
                reason: RevocationReason::KeyCompromise,
            },
            RevokedEntry {
                serial: vec![5],
                revoked_at: UnixTime(1_800_000_001),
                reason: RevocationReason::Unspecified,
            },
        ];
        let p = CrlParams {
            crl_number: 300,
            this_update: UnixTime(1_800_000_100),
            next_update: UnixTime(1_800_600_000),
            revoked: &revoked,
        };
        let der = build_crl(&ca, &p).unwrap();

        let top = parse_single(&der).unwrap();
        let mut r = top.reader();
        let tbs = r.read().unwrap();
        r.read().unwrap();
        let sig = r.read().unwrap().bit_string_bytes().unwrap();
        let ca_cert = CertificateRef::parse(ca.certificate()).unwrap();
        SignatureAlg::Ecdsa(DigestAlg::Sha256).verify(ca_cert.spki.public_key().unwrap(), tbs.raw, sig).unwrap();

        let mut t = tbs.reader();
        assert_eq!(t.read().unwrap().small_uint().unwrap(), 1);
        t.read().unwrap();
        assert_eq!(t.read().unwrap().raw, ca.subject());
        t.read().unwrap();
        t.read().unwrap();
        let list = t.read().unwrap();
        let mut entries = list.reader();
        let first = entries.read().unwrap();
        let mut fr = first.reader();
        assert_eq!(fr.read().unwrap().unsigned_integer().unwrap(), &[0x81, 2]);
        fr.read().unwrap();
        assert!(!fr.is_empty(), "keyCompromise has a reasonCode");
        let second = entries.read().unwrap();
        let mut sr = second.reader();
        sr.read().unwrap();
        sr.read().unwrap();
        assert!(sr.is_empty(), "unspecified has no reasonCode");
        assert!(t.read().unwrap().tag == tag::context_constructed(0));

        let empty = CrlParams { revoked: &[], ..p };
        assert!(build_crl(&ca, &empty).unwrap().len() < der.len());
        assert!(build_crl(&ca, &CrlParams { next_update: p.this_update, ..p }).is_err());
    }

    #[test]
    fn reason_codes_round_trip() {
        for code in 0..=12u8 {
            if let Some(r) = RevocationReason::from_code(code) {
                assert_eq!(r.code(), code);
            } else {
                assert!(matches!(code, 7 | 8 | 11 | 12));
            }
        }
    }
}
