//! Object identifiers used by SCEP, CMS, PKCS#10 and X.509, as DER contents octets (no tag, no length) so they compare directly against parsed values.
//!
//! Generated from one table of (name, dotted form, description); see the test below.

/// CMS id-data (RFC 5652 §4): `1.2.840.113549.1.7.1`
pub const DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01];
/// CMS id-signedData (RFC 5652 §5): `1.2.840.113549.1.7.2`
pub const SIGNED_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02];
/// CMS id-envelopedData (RFC 5652 §6): `1.2.840.113549.1.7.3`
pub const ENVELOPED_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x03];
/// PKCS#9 contentType attribute: `1.2.840.113549.1.9.3`
pub const CONTENT_TYPE: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x03];
/// PKCS#9 messageDigest attribute: `1.2.840.113549.1.9.4`
pub const MESSAGE_DIGEST: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x04];
/// PKCS#9 signingTime attribute: `1.2.840.113549.1.9.5`
pub const SIGNING_TIME: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x05];
/// PKCS#9 challengePassword attribute: `1.2.840.113549.1.9.7`
pub const CHALLENGE_PASSWORD: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x07];
/// PKCS#9 extensionRequest attribute: `1.2.840.113549.1.9.14`
pub const EXTENSION_REQUEST: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x0e];
/// SCEP messageType (RFC 8894 §3.2.1.2): `2.16.840.1.113733.1.9.2`
pub const SCEP_MESSAGE_TYPE: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x86, 0xf8, 0x45, 0x01, 0x09, 0x02];
/// SCEP pkiStatus (RFC 8894 §3.2.1.3): `2.16.840.1.113733.1.9.3`
pub const SCEP_PKI_STATUS: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x86, 0xf8, 0x45, 0x01, 0x09, 0x03];
/// SCEP failInfo (RFC 8894 §3.2.1.4): `2.16.840.1.113733.1.9.4`
pub const SCEP_FAIL_INFO: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x86, 0xf8, 0x45, 0x01, 0x09, 0x04];
/// SCEP senderNonce (RFC 8894 §3.2.1.5): `2.16.840.1.113733.1.9.5`
pub const SCEP_SENDER_NONCE: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x86, 0xf8, 0x45, 0x01, 0x09, 0x05];
/// SCEP recipientNonce (RFC 8894 §3.2.1.5): `2.16.840.1.113733.1.9.6`
pub const SCEP_RECIPIENT_NONCE: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x86, 0xf8, 0x45, 0x01, 0x09, 0x06];
/// SCEP transactionID (RFC 8894 §3.2.1.1): `2.16.840.1.113733.1.9.7`
pub const SCEP_TRANSACTION_ID: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x86, 0xf8, 0x45, 0x01, 0x09, 0x07];
/// SCEP failInfoText (RFC 8894 §3.2.1.4): `1.3.6.1.5.5.7.24.1`
pub const SCEP_FAIL_INFO_TEXT: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x18, 0x01];
/// rsaEncryption: `1.2.840.113549.1.1.1`
pub const RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
/// sha1WithRSAEncryption: `1.2.840.113549.1.1.5`
pub const SHA1_WITH_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x05];
/// sha256WithRSAEncryption: `1.2.840.113549.1.1.11`
pub const SHA256_WITH_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b];
/// sha384WithRSAEncryption: `1.2.840.113549.1.1.12`
pub const SHA384_WITH_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c];
/// sha512WithRSAEncryption: `1.2.840.113549.1.1.13`
pub const SHA512_WITH_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d];
/// RSASSA-PSS (recognised to be refused): `1.2.840.113549.1.1.10`
pub const RSASSA_PSS: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a];
/// id-ecPublicKey: `1.2.840.10045.2.1`
pub const EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
/// prime256v1 / P-256: `1.2.840.10045.3.1.7`
pub const SECP256R1: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// secp384r1 / P-384: `1.3.132.0.34`
pub const SECP384R1: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];
/// ecdsa-with-SHA256: `1.2.840.10045.4.3.2`
pub const ECDSA_WITH_SHA256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];
/// ecdsa-with-SHA384: `1.2.840.10045.4.3.3`
pub const ECDSA_WITH_SHA384: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03];
/// ecdsa-with-SHA512: `1.2.840.10045.4.3.4`
pub const ECDSA_WITH_SHA512: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04];
/// id-sha1: `1.3.14.3.2.26`
pub const SHA1: &[u8] = &[0x2b, 0x0e, 0x03, 0x02, 0x1a];
/// id-sha256: `2.16.840.1.101.3.4.2.1`
pub const SHA256: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01];
/// id-sha384: `2.16.840.1.101.3.4.2.2`
pub const SHA384: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02];
/// id-sha512: `2.16.840.1.101.3.4.2.3`
pub const SHA512: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03];
/// desCBC (single DES; legacy): `1.3.14.3.2.7`
pub const DES_CBC: &[u8] = &[0x2b, 0x0e, 0x03, 0x02, 0x07];
/// des-ede3-cbc: `1.2.840.113549.3.7`
pub const DES_EDE3_CBC: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x03, 0x07];
/// aes128-CBC: `2.16.840.1.101.3.4.1.2`
pub const AES128_CBC: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x02];
/// aes192-CBC: `2.16.840.1.101.3.4.1.22`
pub const AES192_CBC: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x16];
/// aes256-CBC: `2.16.840.1.101.3.4.1.42`
pub const AES256_CBC: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x2a];
/// X.520 commonName: `2.5.4.3`
pub const COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
/// X.509 subjectKeyIdentifier: `2.5.29.14`
pub const SUBJECT_KEY_IDENTIFIER: &[u8] = &[0x55, 0x1d, 0x0e];
/// X.509 keyUsage: `2.5.29.15`
pub const KEY_USAGE: &[u8] = &[0x55, 0x1d, 0x0f];
/// X.509 subjectAltName: `2.5.29.17`
pub const SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];
/// X.509 basicConstraints: `2.5.29.19`
pub const BASIC_CONSTRAINTS: &[u8] = &[0x55, 0x1d, 0x13];
/// X.509 cRLNumber: `2.5.29.20`
pub const CRL_NUMBER: &[u8] = &[0x55, 0x1d, 0x14];
/// X.509 reasonCode: `2.5.29.21`
pub const CRL_REASON: &[u8] = &[0x55, 0x1d, 0x15];
/// X.509 authorityKeyIdentifier: `2.5.29.35`
pub const AUTHORITY_KEY_IDENTIFIER: &[u8] = &[0x55, 0x1d, 0x23];
/// X.509 extKeyUsage: `2.5.29.37`
pub const EXT_KEY_USAGE: &[u8] = &[0x55, 0x1d, 0x25];
/// id-kp-serverAuth: `1.3.6.1.5.5.7.3.1`
pub const KP_SERVER_AUTH: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x01];
/// id-kp-clientAuth: `1.3.6.1.5.5.7.3.2`
pub const KP_CLIENT_AUTH: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x02];
/// id-kp-codeSigning: `1.3.6.1.5.5.7.3.3`
pub const KP_CODE_SIGNING: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x03];
/// id-kp-emailProtection: `1.3.6.1.5.5.7.3.4`
pub const KP_EMAIL_PROTECTION: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x04];
/// id-kp-OCSPSigning: `1.3.6.1.5.5.7.3.9`
pub const KP_OCSP_SIGNING: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x09];
/// id-pe-authorityInfoAccess (RFC 5280 §4.2.2.1): `1.3.6.1.5.5.7.1.1`
pub const AUTHORITY_INFO_ACCESS: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x01, 0x01];
/// id-ce-cRLDistributionPoints (RFC 5280 §4.2.1.13): `2.5.29.31`
pub const CRL_DISTRIBUTION_POINTS: &[u8] = &[0x55, 0x1d, 0x1f];
/// id-ad-ocsp (RFC 5280 §4.2.2.1, RFC 6960 §4.2.1): `1.3.6.1.5.5.7.48.1`
pub const AD_OCSP: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01];
/// id-ad-caIssuers (RFC 5280 §4.2.2.1): `1.3.6.1.5.5.7.48.2`
pub const AD_CA_ISSUERS: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x02];
/// id-pkix-ocsp-basic (RFC 6960 §4.2.1): `1.3.6.1.5.5.7.48.1.1`
pub const OCSP_BASIC: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01, 0x01];
/// id-pkix-ocsp-nonce (RFC 6960 §4.4.1, RFC 8954): `1.3.6.1.5.5.7.48.1.2`
pub const OCSP_NONCE: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01, 0x02];
/// id-pkix-ocsp-nocheck (RFC 6960 §4.2.2.2.1): `1.3.6.1.5.5.7.48.1.5`
pub const OCSP_NOCHECK: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01, 0x05];
/// Microsoft UPN otherName: `1.3.6.1.4.1.311.20.2.3`
pub const MS_UPN: &[u8] = &[0x2b, 0x06, 0x01, 0x04, 0x01, 0x82, 0x37, 0x14, 0x02, 0x03];
/// Microsoft NTDS CA security extension (the "SID extension" of KB5014754,
/// `szOID_NTDS_CA_SECURITY_EXT`): `1.3.6.1.4.1.311.25.2`
pub const MS_NTDS_CA_SECURITY_EXT: &[u8] = &[0x2b, 0x06, 0x01, 0x04, 0x01, 0x82, 0x37, 0x19, 0x02];
/// The otherName type inside it that carries the SID string
/// (`szOID_NTDS_OBJECTSID`): `1.3.6.1.4.1.311.25.2.1`
pub const MS_NTDS_OBJECTSID: &[u8] = &[0x2b, 0x06, 0x01, 0x04, 0x01, 0x82, 0x37, 0x19, 0x02, 0x01];

/// Renders DER OID contents in dotted form, for logs and error messages.
pub fn dotted(contents: &[u8]) -> String {
    let mut out = String::new();
    let mut value: u64 = 0;
    let mut first = true;
    for &b in contents {
        value = (value << 7) | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            if first {
                let (a, b) = if value < 80 { (value / 40, value % 40) } else { (2, value - 80) };
                out.push_str(&format!("{a}.{b}"));
                first = false;
            } else {
                out.push_str(&format!(".{value}"));
            }
            value = 0;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn dotted_round_trip() {
        assert_eq!(super::dotted(super::SHA256), "2.16.840.1.101.3.4.2.1");
        assert_eq!(super::dotted(super::MS_UPN), "1.3.6.1.4.1.311.20.2.3");
        assert_eq!(super::dotted(super::MS_NTDS_CA_SECURITY_EXT), "1.3.6.1.4.1.311.25.2");
        assert_eq!(super::dotted(super::MS_NTDS_OBJECTSID), "1.3.6.1.4.1.311.25.2.1");
        assert_eq!(super::dotted(super::SCEP_MESSAGE_TYPE), "2.16.840.1.113733.1.9.2");
    }
}
