//! CMS (PKCS #7) structures the server emits: the degenerate certificates-only
//! SignedData (RFC 8894 §3.4, RFC 5652 §5) and the EnvelopedData that carries
//! a reply to the requester (RFC 8894 §3.2.2, RFC 5652 §6).
//!
//! Every structure is written in one pass into a buffer of exactly the right
//! size: lengths are computed up front (`tlv_len`) and headers written with
//! `header`, so no nested value is ever moved to make room for its length.
//! Output is strict DER, with one deliberate exception documented on
//! [`certs_only`].

use crate::crypto::{ContentCipher, CryptoProvider, KeyError, RandomSource};
use crate::oid;
use crate::wire::{Writer, tag};
use crate::x509::CertificateRef;

/// The number of octets of a DER length field for `len` contents octets (X.690 §8.1.3).
const fn len_of_len(len: usize) -> usize {
    if len < 0x80 {
        1
    } else {
        // Long form: one octet of count plus the minimal big-endian length.
        1 + (usize::BITS - len.leading_zeros()).div_ceil(8) as usize
    }
}

/// The size of a whole DER TLV (single-octet tag) whose contents are `len` octets.
pub(crate) const fn tlv_len(len: usize) -> usize {
    1 + len_of_len(len) + len
}

/// Writes a tag and the DER length of `len` contents octets; the caller writes
/// exactly `len` contents octets next (X.690 §10.1, minimal definite form).
pub(crate) fn header(w: &mut Writer, tag: u8, len: usize) {
    let mut h = [0u8; 2 + size_of::<usize>()];
    h[0] = tag;
    if len < 0x80 {
        h[1] = len as u8;
        w.raw(&h[..2]);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len() - 1);
        let n = bytes.len() - skip;
        h[1] = 0x80 | n as u8;
        h[2..2 + n].copy_from_slice(&bytes[skip..]);
        w.raw(&h[..2 + n]);
    }
}

/// The size of an AlgorithmIdentifier with `oid` and either NULL or absent parameters.
pub(crate) const fn algorithm_identifier_len(oid: &[u8], null_params: bool) -> usize {
    tlv_len(tlv_len(oid.len()) + if null_params { 2 } else { 0 })
}

/// Writes an AlgorithmIdentifier (RFC 5280 §4.1.1.2) with NULL or absent parameters.
pub(crate) fn algorithm_identifier(w: &mut Writer, oid: &[u8], null_params: bool) {
    header(w, tag::SEQUENCE, tlv_len(oid.len()) + if null_params { 2 } else { 0 });
    w.oid(oid);
    if null_params {
        w.null();
    }
}

/// The size of the contents of an IssuerAndSerialNumber (RFC 5652 §10.2.4) for `cert`.
pub(crate) const fn issuer_and_serial_contents_len(cert: &CertificateRef<'_>) -> usize {
    cert.issuer.len() + tlv_len(cert.serial_der_contents.len())
}

/// Writes the IssuerAndSerialNumber (RFC 5652 §10.2.4) that names `cert`,
/// copying issuer and serial exactly as the certificate encodes them so the
/// peer's byte comparison matches.
pub(crate) fn issuer_and_serial(w: &mut Writer, cert: &CertificateRef<'_>) {
    header(w, tag::SEQUENCE, issuer_and_serial_contents_len(cert));
    w.raw(cert.issuer);
    w.tlv(tag::INTEGER, cert.serial_der_contents);
}

/// The size of a ContentInfo (RFC 5652 §3) whose `[0] EXPLICIT` content is
/// `inner_len` octets (the inner TLV included), and of its contents.
const fn content_info_lens(content_type: &[u8], inner_len: usize) -> (usize, usize) {
    let contents = tlv_len(content_type.len()) + tlv_len(inner_len);
    (tlv_len(contents), contents)
}

/// Writes a ContentInfo header: `SEQUENCE { contentType, [0] EXPLICIT` — the
/// caller then writes the `inner_len` octets of the content TLV.
pub(crate) fn content_info_header(w: &mut Writer, content_type: &[u8], inner_len: usize) {
    let (_, contents) = content_info_lens(content_type, inner_len);
    header(w, tag::SEQUENCE, contents);
    w.oid(content_type);
    header(w, tag::context_constructed(0), inner_len);
}

/// The total size of a ContentInfo around an `inner_len`-octet content TLV.
pub(crate) const fn content_info_len(content_type: &[u8], inner_len: usize) -> usize {
    content_info_lens(content_type, inner_len).0
}

/// A degenerate certificates-only SignedData in a ContentInfo (RFC 8894 §3.4,
/// RFC 5652 §5): version 1, no digest algorithms, `id-data` content with no
/// eContent, the given certificates in `[0]` and CRLs in `[1]` (each omitted
/// when empty), and no signers. Used for GetCACert, for the certificate(s) in a
/// CertRep and for GetCRL replies.
///
/// `certs` and `crls` are DER written verbatim, **in the order given**. DER
/// would sort a SET OF, but SCEP clients read order: micromdm and jscep take
/// the first certificate of a CertRep as the issued one, and OpenSSL itself
/// encodes these fields as an ordered SEQUENCE OF for the same reason. Put the
/// issued certificate (or the RA certificate for GetCACert) first.
pub fn certs_only(certs: &[&[u8]], crls: &[&[u8]]) -> Vec<u8> {
    let certs_len: usize = certs.iter().map(|c| c.len()).sum();
    let crls_len: usize = crls.iter().map(|c| c.len()).sum();
    // RFC 5652 §5.2: EncapsulatedContentInfo { id-data } without eContent.
    let encap_contents = tlv_len(oid::DATA.len());
    let signed_data_contents = 3 // version INTEGER 1
        + 2 // digestAlgorithms: empty SET
        + tlv_len(encap_contents)
        + if certs.is_empty() { 0 } else { tlv_len(certs_len) }
        + if crls.is_empty() { 0 } else { tlv_len(crls_len) }
        + 2; // signerInfos: empty SET
    let inner = tlv_len(signed_data_contents);
    let total = content_info_len(oid::SIGNED_DATA, inner);

    let mut w = Writer::with_capacity(total);
    content_info_header(&mut w, oid::SIGNED_DATA, inner);
    header(&mut w, tag::SEQUENCE, signed_data_contents);
    w.small_uint(1);
    header(&mut w, tag::SET, 0);
    header(&mut w, tag::SEQUENCE, encap_contents);
    w.oid(oid::DATA);
    if !certs.is_empty() {
        // certificates [0] IMPLICIT CertificateSet
        header(&mut w, tag::context_constructed(0), certs_len);
        for c in certs {
            w.raw(c);
        }
    }
    if !crls.is_empty() {
        // crls [1] IMPLICIT RevocationInfoChoices
        header(&mut w, tag::context_constructed(1), crls_len);
        for c in crls {
            w.raw(c);
        }
    }
    header(&mut w, tag::SET, 0);
    let out = w.into_vec();
    debug_assert_eq!(out.len(), total);
    out
}

/// Why an EnvelopedData could not be built.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SealError {
    /// The recipient certificate's key is not RSA: SCEP key transport needs an
    /// RSA recipient (RFC 8894 §3.2.2 / §2.3).
    RecipientNotRsa,
    /// The recipient's RSA public key was refused (malformed, or a size aws-lc rejects).
    RecipientKey(KeyError),
    /// Content encryption failed (aws-lc refused the generated content key).
    Cipher,
}

impl std::fmt::Display for SealError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::RecipientNotRsa => f.write_str("recipient certificate does not hold an RSA key"),
            Self::RecipientKey(e) => write!(f, "recipient key unusable: {e}"),
            Self::Cipher => f.write_str("content encryption failed"),
        }
    }
}

impl std::error::Error for SealError {}

/// Encrypts `content` to the holder of `recipient_cert` as an EnvelopedData in
/// a ContentInfo (RFC 8894 §3.2.2, RFC 5652 §6): version 0, one
/// KeyTransRecipientInfo (version 0, rid = the recipient's issuerAndSerialNumber,
/// rsaEncryption with NULL parameters, the content key wrapped with PKCS #1
/// v1.5), and `id-data` content encrypted with `cipher` (CBC, PKCS #7 padding,
/// the IV as OCTET STRING parameters) as `[0] IMPLICIT` primitive octets.
///
/// The content key and IV come from `rng`. `cipher` is used as given; callers
/// choosing a reply cipher apply [`ContentCipher::for_reply`] first.
///
/// # Errors
/// [`SealError`] when the recipient key is not a usable RSA key, or content
/// encryption fails.
pub fn seal(
    content: &[u8],
    recipient_cert: &CertificateRef<'_>,
    cipher: ContentCipher,
    rng: &dyn RandomSource,
) -> Result<Vec<u8>, SealError> {
    seal_with(&**crate::crypto::default_provider(), content, recipient_cert, cipher, rng)
}

/// [`seal`] with the key transport and content cipher of `provider`.
///
/// # Errors
/// As [`seal`].
pub fn seal_with(
    provider: &dyn CryptoProvider,
    content: &[u8],
    recipient_cert: &CertificateRef<'_>,
    cipher: ContentCipher,
    rng: &dyn RandomSource,
) -> Result<Vec<u8>, SealError> {
    if recipient_cert.spki.algorithm != oid::RSA_ENCRYPTION {
        return Err(SealError::RecipientNotRsa);
    }
    let mut key = cipher.generate_key_with(provider, rng);
    let mut iv_buf = [0u8; 16];
    let iv = &mut iv_buf[..cipher.iv_len()];
    rng.fill(iv);
    let sealed = (|| {
        // RFC 5652 §6.2.1: the content-encryption key, encrypted to the recipient.
        let encrypted_key =
            provider.rsa_encrypt_pkcs1v15(recipient_cert.spki.raw, &key).map_err(SealError::RecipientKey)?;
        let ciphertext = provider.encrypt_content(cipher, &key, iv, content).map_err(|_| SealError::Cipher)?;
        Ok(write_enveloped_data(recipient_cert, cipher, iv, &encrypted_key, &ciphertext))
    })();
    // Best effort: do not leave the content key in freed memory.
    key.fill(0);
    std::hint::black_box(&key);
    sealed
}

/// Writes the EnvelopedData ContentInfo around already-encrypted parts.
fn write_enveloped_data(
    recipient: &CertificateRef<'_>,
    cipher: ContentCipher,
    iv: &[u8],
    encrypted_key: &[u8],
    ciphertext: &[u8],
) -> Vec<u8> {
    // RFC 5652 §6.2.1 KeyTransRecipientInfo
    let ktri_contents = 3 // version INTEGER 0
        + tlv_len(issuer_and_serial_contents_len(recipient))
        + algorithm_identifier_len(oid::RSA_ENCRYPTION, true)
        + tlv_len(encrypted_key.len());
    let recipient_infos = tlv_len(ktri_contents);
    // RFC 5652 §6.1 EncryptedContentInfo
    let cipher_alg_contents = tlv_len(cipher.oid().len()) + tlv_len(iv.len());
    let eci_contents = tlv_len(oid::DATA.len()) + tlv_len(cipher_alg_contents) + tlv_len(ciphertext.len());
    let env_contents = 3 + tlv_len(recipient_infos) + tlv_len(eci_contents);
    let inner = tlv_len(env_contents);
    let total = content_info_len(oid::ENVELOPED_DATA, inner);

    let mut w = Writer::with_capacity(total);
    content_info_header(&mut w, oid::ENVELOPED_DATA, inner);
    header(&mut w, tag::SEQUENCE, env_contents);
    // RFC 5652 §6.1: version 0 (issuerAndSerialNumber KTRI only, no originatorInfo or unprotectedAttrs).
    w.small_uint(0);
    header(&mut w, tag::SET, recipient_infos);
    header(&mut w, tag::SEQUENCE, ktri_contents);
    w.small_uint(0);
    issuer_and_serial(&mut w, recipient);
    algorithm_identifier(&mut w, oid::RSA_ENCRYPTION, true);
    w.octet_string(encrypted_key);
    header(&mut w, tag::SEQUENCE, eci_contents);
    w.oid(oid::DATA);
    // RFC 8894 §3.5.2 / RFC 3565 §4.1 / RFC 8018 §B.2: CBC parameters are the IV.
    header(&mut w, tag::SEQUENCE, cipher_alg_contents);
    w.oid(cipher.oid());
    w.octet_string(iv);
    // encryptedContent [0] IMPLICIT OCTET STRING, primitive (strict DER).
    // COPY: ciphertext into the output (ContentCipher::encrypt returns its own buffer).
    w.tlv(tag::context_primitive(0), ciphertext);
    let out = w.into_vec();
    debug_assert_eq!(out.len(), total);
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::crypto::RsaPrivateKey;
    use crate::wire::{Tlv, parse_single};
    use std::path::{Path, PathBuf};
    use std::process::Command;

    /// A deterministic RandomSource: a counter-seeded byte stream.
    #[derive(Debug)]
    pub(crate) struct FixedRandom(pub(crate) u8);
    impl RandomSource for FixedRandom {
        fn fill(&self, buf: &mut [u8]) {
            for (i, b) in buf.iter_mut().enumerate() {
                *b = (i as u8).wrapping_mul(97).wrapping_add(self.0);
            }
        }
    }

    pub(crate) fn vector_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/vectors/real-clients")
    }

    /// The real-clients recipient identity: certificate DER and key.
    pub(crate) fn recipient() -> (Vec<u8>, RsaPrivateKey) {
        let dir = vector_dir();
        let cert_pem = std::fs::read_to_string(dir.join("recipient-cert.pem")).unwrap();
        let key_pem = std::fs::read_to_string(dir.join("recipient-key.pem")).unwrap();
        let cert = crate::pem::certificates(&cert_pem).unwrap().remove(0);
        let key = RsaPrivateKey::from_der(&crate::pem::private_key(&key_pem).unwrap()).unwrap();
        (cert, key)
    }

    /// Checks that `der` is one strict-DER TLV, recursively: definite minimal
    /// lengths (re-encoding each TLV gives the same bytes), no constructed
    /// OCTET STRINGs, no trailing data. Recurses into constructed values.
    pub(crate) fn assert_strict_der(der: &[u8]) {
        fn walk(t: Tlv<'_>) {
            assert!(!t.indefinite, "indefinite length at {}", t.offset);
            assert_ne!(t.tag, tag::OCTET_STRING_CONSTRUCTED, "constructed OCTET STRING at {}", t.offset);
            assert_eq!(crate::wire::encode_tlv(t.tag, t.contents), t.raw, "non-minimal length at {}", t.offset);
            if t.is_constructed() {
                let mut r = t.reader();
                while !r.is_empty() {
                    walk(r.read().unwrap());
                }
            }
        }
        walk(parse_single(der).unwrap());
    }

    /// Checks that the openssl CLI runs; a test that needs it fails without it
    /// (a missing tool must not turn into a pass). Always returns true.
    pub(crate) fn openssl_available(test: &str) -> bool {
        let ok = Command::new("openssl").arg("version").output().is_ok_and(|o| o.status.success());
        assert!(ok, "{test} needs the openssl CLI (Debian: apt-get install openssl)");
        ok
    }

    /// A fresh, empty scratch directory for one test.
    pub(crate) fn scratch_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("scep-engine-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Runs openssl with `args`; returns (success, stdout, stderr).
    pub(crate) fn openssl(args: &[&str]) -> (bool, Vec<u8>, String) {
        let o = Command::new("openssl").args(args).output().unwrap();
        (o.status.success(), o.stdout, String::from_utf8_lossy(&o.stderr).into_owned())
    }

    /// Splits a ContentInfo into (contentType, the `[0]` content TLV).
    pub(crate) fn content_info(der: &[u8]) -> (&[u8], Tlv<'_>) {
        let ci = parse_single(der).unwrap().expect_tag(tag::SEQUENCE).unwrap();
        let mut r = ci.reader();
        let ct = r.expect(tag::OID).unwrap().contents;
        let explicit = r.expect(tag::context_constructed(0)).unwrap();
        r.finish().unwrap();
        let mut er = explicit.reader();
        let inner = er.read().unwrap();
        er.finish().unwrap();
        (ct, inner)
    }

    #[test]
    fn lengths_match_the_writer() {
        for len in [0usize, 1, 127, 128, 255, 256, 65_535, 65_536, 16_777_216] {
            let mut w = Writer::new();
            header(&mut w, tag::OCTET_STRING, len);
            let v = vec![0u8; len];
            assert_eq!(w.as_slice(), &crate::wire::encode_tlv(tag::OCTET_STRING, &v)[..w.as_slice().len()]);
            assert_eq!(tlv_len(len), w.as_slice().len() + len, "len {len}");
        }
    }

    #[test]
    fn certs_only_structure() {
        let (cert, _) = recipient();
        let other = crate::wire::encode_tlv(tag::SEQUENCE, &[0x05, 0x00]);
        let crl = crate::wire::encode_tlv(tag::SEQUENCE, &[0x02, 0x01, 0x07]);
        let der = certs_only(&[&cert, &other], &[&crl]);
        assert_strict_der(&der);
        let (ct, sd) = content_info(&der);
        assert_eq!(ct, oid::SIGNED_DATA);
        let mut r = sd.expect_tag(tag::SEQUENCE).unwrap().reader();
        assert_eq!(r.read().unwrap().small_uint().unwrap(), 1);
        assert!(r.expect(tag::SET).unwrap().contents.is_empty());
        let encap = r.expect(tag::SEQUENCE).unwrap();
        assert_eq!(encap.contents, crate::wire::encode_tlv(tag::OID, oid::DATA));
        let certs = r.expect(tag::context_constructed(0)).unwrap();
        // Order is kept: the first certificate stays first.
        let mut cr = certs.reader();
        assert_eq!(cr.read().unwrap().raw, &cert[..]);
        assert_eq!(cr.read().unwrap().raw, &other[..]);
        cr.finish().unwrap();
        assert_eq!(r.expect(tag::context_constructed(1)).unwrap().contents, &crl[..]);
        assert!(r.expect(tag::SET).unwrap().contents.is_empty());
        r.finish().unwrap();

        // Empty fields are omitted rather than written empty.
        let der = certs_only(&[&cert], &[]);
        assert_strict_der(&der);
        let (_, sd) = content_info(&der);
        let mut r = sd.reader();
        r.read().unwrap();
        r.read().unwrap();
        r.read().unwrap();
        r.expect(tag::context_constructed(0)).unwrap();
        r.expect(tag::SET).unwrap();
        r.finish().unwrap();
        let der = certs_only(&[], &[&crl]);
        let (_, sd) = content_info(&der);
        let mut r = sd.reader();
        r.read().unwrap();
        r.read().unwrap();
        r.read().unwrap();
        r.expect(tag::context_constructed(1)).unwrap();
    }

    #[test]
    fn certs_only_large_chain_is_strict_der() {
        // Lengths above 64 KiB exercise 3-octet length fields at every level.
        let (cert, _) = recipient();
        let many: Vec<&[u8]> = std::iter::repeat_n(&cert[..], 80).collect();
        let der = certs_only(&many, &[]);
        assert!(der.len() > 65_536);
        assert_strict_der(&der);
    }

    /// Parses a sealed EnvelopedData and decrypts it with `key`, checking every field.
    pub(crate) fn open_envelope(der: &[u8], recipient: &CertificateRef<'_>, key: &RsaPrivateKey) -> Vec<u8> {
        let (ct, env) = content_info(der);
        assert_eq!(ct, oid::ENVELOPED_DATA);
        let mut r = env.expect_tag(tag::SEQUENCE).unwrap().reader();
        assert_eq!(r.read().unwrap().small_uint().unwrap(), 0);
        let ris = r.expect(tag::SET).unwrap();
        let mut rr = ris.reader();
        let ktri = rr.expect(tag::SEQUENCE).unwrap();
        rr.finish().unwrap();
        let mut kr = ktri.reader();
        assert_eq!(kr.read().unwrap().small_uint().unwrap(), 0);
        let isn = kr.expect(tag::SEQUENCE).unwrap();
        let mut ir = isn.reader();
        assert_eq!(ir.expect(tag::SEQUENCE).unwrap().raw, recipient.issuer);
        assert_eq!(ir.expect(tag::INTEGER).unwrap().contents, recipient.serial_der_contents);
        ir.finish().unwrap();
        let alg = kr.expect(tag::SEQUENCE).unwrap();
        assert_eq!(alg.contents, [crate::wire::encode_tlv(tag::OID, oid::RSA_ENCRYPTION), vec![5, 0]].concat());
        let ek = kr.expect(tag::OCTET_STRING).unwrap().contents;
        kr.finish().unwrap();
        let eci = r.expect(tag::SEQUENCE).unwrap();
        r.finish().unwrap();
        let mut er = eci.reader();
        assert_eq!(er.expect(tag::OID).unwrap().contents, oid::DATA);
        let calg = er.expect(tag::SEQUENCE).unwrap();
        let mut ar = calg.reader();
        let cipher = ContentCipher::from_oid(ar.expect(tag::OID).unwrap().contents).unwrap();
        let iv = ar.expect(tag::OCTET_STRING).unwrap().contents;
        ar.finish().unwrap();
        let body = er.expect(tag::context_primitive(0)).unwrap().contents;
        er.finish().unwrap();
        let cek = key.decrypt_pkcs1(ek).unwrap();
        assert_eq!(cek.len(), cipher.key_len());
        let mut buf = body.to_vec();
        let n = cipher.decrypt(&cek, iv, &mut buf).unwrap();
        buf.truncate(n);
        buf
    }

    const ALL_CIPHERS: [ContentCipher; 5] = [
        ContentCipher::DesCbc,
        ContentCipher::DesEde3Cbc,
        ContentCipher::Aes128Cbc,
        ContentCipher::Aes192Cbc,
        ContentCipher::Aes256Cbc,
    ];

    #[test]
    fn seal_round_trips_every_cipher() {
        let (cert_der, key) = recipient();
        let cert = CertificateRef::parse(&cert_der).unwrap();
        let content = certs_only(&[&cert_der], &[]);
        for cipher in ALL_CIPHERS {
            let rng = FixedRandom(5);
            let env = seal(&content, &cert, cipher, &rng).unwrap();
            assert_strict_der(&env);
            assert_eq!(open_envelope(&env, &cert, &key), content, "{cipher:?}");
            // Key and IV come from the RandomSource; only the RSA wrap differs.
            let again = seal(&content, &cert, cipher, &rng).unwrap();
            assert_eq!(env.len(), again.len());
            let (_, a) = content_info(&env);
            let (_, b) = content_info(&again);
            let eci = |t: Tlv<'_>| {
                let mut r = t.reader();
                r.read().unwrap();
                r.read().unwrap();
                r.read().unwrap().raw.to_vec()
            };
            assert_eq!(eci(a), eci(b), "{cipher:?}: encrypted content must be deterministic");
        }
        // Empty content still pads to one block.
        let env = seal(&[], &cert, ContentCipher::Aes128Cbc, &FixedRandom(1)).unwrap();
        assert_eq!(open_envelope(&env, &cert, &key), Vec::<u8>::new());
    }

    #[test]
    fn seal_refuses_non_rsa_recipients() {
        let (cert_der, _) = recipient();
        let mut cert = CertificateRef::parse(&cert_der).unwrap();
        let (ec, _) = crate::crypto::EcPrivateKey::generate().unwrap();
        let spki = ec.spki_der().to_vec();
        cert.spki = crate::x509::SubjectPublicKeyInfoRef::parse(&spki).unwrap();
        assert_eq!(seal(b"x", &cert, ContentCipher::Aes256Cbc, &FixedRandom(0)), Err(SealError::RecipientNotRsa));
        // An rsaEncryption SPKI whose key is garbage is a key error, not a panic.
        let bad_spki = {
            let mut w = Writer::new();
            w.sequence(|w| {
                algorithm_identifier(w, oid::RSA_ENCRYPTION, true);
                w.bit_string(&[0x30, 0x03, 0x02, 0x01, 0x01]);
            });
            w.into_vec()
        };
        cert.spki = crate::x509::SubjectPublicKeyInfoRef::parse(&bad_spki).unwrap();
        assert!(matches!(
            seal(b"x", &cert, ContentCipher::Aes256Cbc, &FixedRandom(0)),
            Err(SealError::RecipientKey(_))
        ));
    }

    #[test]
    fn openssl_reads_certs_only() {
        if !openssl_available("openssl_reads_certs_only") {
            return;
        }
        let (cert, _) = recipient();
        let dir = scratch_dir("certs-only");
        let path = dir.join("p7.der");
        std::fs::write(&path, certs_only(&[&cert, &cert], &[])).unwrap();
        let (ok, out, err) = openssl(&["pkcs7", "-inform", "DER", "-in", path.to_str().unwrap(), "-print_certs"]);
        assert!(ok, "openssl pkcs7 failed: {err}");
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.matches("subject=C = US, O = scep-ca, OU = SCEP CA, CN = Peer SCEP CA").count(), 2, "{text}");
        let pem_certs = crate::pem::certificates(&text).unwrap();
        assert_eq!(pem_certs, vec![cert.clone(), cert]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn openssl_decrypts_every_cipher() {
        if !openssl_available("openssl_decrypts_every_cipher") {
            return;
        }
        let dir = scratch_dir("seal");
        let (cert_der, _) = recipient();
        let cert = CertificateRef::parse(&cert_der).unwrap();
        let key_pem = vector_dir().join("recipient-key.pem");
        let cert_pem = vector_dir().join("recipient-cert.pem");
        let content = certs_only(&[&cert_der], &[]);
        let legacy = openssl(&["list", "-providers", "-provider", "legacy"]).0;
        for cipher in ALL_CIPHERS {
            if cipher == ContentCipher::DesCbc && !legacy {
                panic!(
                    "openssl_decrypts_every_cipher needs the OpenSSL legacy provider for single DES \
                     (Debian 12: apt-get install openssl libssl3 ships ossl-modules/legacy.so)"
                );
            }
            let env = dir.join(format!("{}.der", cipher.name()));
            std::fs::write(&env, seal(&content, &cert, cipher, &FixedRandom(9)).unwrap()).unwrap();
            let mut args = vec![
                "cms",
                "-decrypt",
                "-inform",
                "DER",
                "-in",
                env.to_str().unwrap(),
                "-inkey",
                key_pem.to_str().unwrap(),
                "-recip",
                cert_pem.to_str().unwrap(),
                "-binary",
            ];
            if cipher == ContentCipher::DesCbc {
                args.extend(["-provider", "legacy", "-provider", "default"]);
            }
            let (ok, out, err) = openssl(&args);
            assert!(ok, "{cipher:?}: openssl cms -decrypt failed: {err}");
            assert_eq!(out, content, "{cipher:?}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
