//! JWS compact serialization (RFC 7515 §3.1, §7.1) for Connector challenges:
//! split in place, decode, read `alg`, verify against the pinned anchors.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::anchors::{AnchorKeyKind, TrustAnchorPool};
use super::json::{Value, for_each_member};
use crate::crypto::{DigestAlg, PublicKeyRef, SignatureAlg, ecdsa_fixed_to_der};
use crate::time::UnixTime;

/// Longest challenge accepted, in characters (a Connector challenge is ~1 KiB).
pub const MAX_CHALLENGE_LEN: usize = 16 * 1024;
/// Longest decoded JOSE header accepted.
const MAX_HEADER: usize = 512;
/// Longest decoded signature accepted (RSA-8192).
const MAX_SIGNATURE: usize = 1024;
/// Longest decoded payload accepted.
const MAX_PAYLOAD: usize = 8 * 1024;

/// The JWS algorithms a Connector challenge may use (RFC 7518 §3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JwsAlg {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    Rs256,
    /// ECDSA P-256 with SHA-256.
    Es256,
}

impl JwsAlg {
    /// The `alg` header value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Rs256 => "RS256",
            Self::Es256 => "ES256",
        }
    }

    const fn key_kind(self) -> AnchorKeyKind {
        match self {
            Self::Rs256 => AnchorKeyKind::Rsa,
            Self::Es256 => AnchorKeyKind::EcP256,
        }
    }
}

/// Why a JWS failed gate 2.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum JwsError {
    /// Not a well-formed JWS, or an algorithm we refuse (label `malformed`).
    Malformed(String),
    /// No anchor verifies the signature (label `signature_invalid`).
    SignatureInvalid(String),
    /// Only an anchor past its notAfter verifies it (label `expired`).
    AnchorExpired(String),
}

/// A JWS whose signature has been verified; the payload is decoded but not parsed.
#[derive(Debug)]
pub(crate) struct VerifiedJws {
    /// The decoded payload (the claim set JSON).
    pub(crate) payload: Vec<u8>,
    /// The algorithm used.
    pub(crate) alg: JwsAlg,
    /// Index of the anchor that verified it.
    pub(crate) anchor: usize,
}

/// Decodes one base64url segment into `out`, tolerating trailing `=` padding
/// (RFC 7515 §2 says there is none, but some encoders add it). Returns the length.
fn decode_segment(seg: &str, out: &mut [u8], what: &str) -> Result<usize, JwsError> {
    let trimmed = seg.strip_suffix("==").or_else(|| seg.strip_suffix('=')).unwrap_or(seg);
    if trimmed.is_empty() {
        return Err(JwsError::Malformed(format!("empty {what} segment")));
    }
    // base64 checks the output room against ceil(len/4)*3.
    if trimmed.len().div_ceil(4) * 3 > out.len() {
        return Err(JwsError::Malformed(format!("{what} segment too long")));
    }
    URL_SAFE_NO_PAD
        .decode_slice(trimmed.as_bytes(), out)
        .map_err(|e| JwsError::Malformed(format!("{what} segment is not base64url: {e}")))
}

/// Reads the JOSE header (RFC 7515 §4): only `alg` matters; `kid`, `x5c`,
/// `jku` and the rest are ignored (trust is pinned). `crit` is refused because
/// no extension is understood (RFC 7515 §4.1.11).
fn parse_header(header: &[u8]) -> Result<JwsAlg, JwsError> {
    let mut alg: Option<Result<JwsAlg, String>> = None;
    let mut crit = false;
    for_each_member(header, |name, value| {
        match name {
            "alg" => {
                alg = Some(match value {
                    Value::Str(s) if s == "RS256" => Ok(JwsAlg::Rs256),
                    Value::Str(s) if s == "ES256" => Ok(JwsAlg::Es256),
                    Value::Str(s) => Err(format!("algorithm {s:?} refused (only RS256 and ES256)")),
                    other => Err(format!("header alg is a {}, not a string", other.kind())),
                });
            }
            "crit" => crit = true,
            _ => {}
        }
        Ok(())
    })
    .map_err(|e| JwsError::Malformed(format!("header is not valid JSON: {e}")))?;
    if crit {
        return Err(JwsError::Malformed("header carries crit: no JWS extension is supported".into()));
    }
    alg.unwrap_or_else(|| Err("header has no alg".into())).map_err(JwsError::Malformed)
}

/// Splits, decodes and verifies a compact JWS against `pool`.
///
/// The signing input is the original wire text `segment0 '.' segment1`
/// (RFC 7515 §5.2 step 8), never re-encoded. Every anchor whose key type fits
/// the algorithm is tried; anchors past notAfter at `now` are tried last and
/// only to tell an operator that the anchor (not the challenge) expired.
pub(crate) fn verify(challenge: &str, pool: &TrustAnchorPool, now: UnixTime) -> Result<VerifiedJws, JwsError> {
    if challenge.len() > MAX_CHALLENGE_LEN {
        return Err(JwsError::Malformed(format!("challenge longer than {MAX_CHALLENGE_LEN} characters")));
    }
    let mut dots = challenge.match_indices('.').map(|(i, _)| i);
    let (Some(d1), Some(d2), None) = (dots.next(), dots.next(), dots.next()) else {
        return Err(JwsError::Malformed("not three dot-separated segments".into()));
    };
    let (h64, p64, s64) = (&challenge[..d1], &challenge[d1 + 1..d2], &challenge[d2 + 1..]);
    let signing_input = &challenge.as_bytes()[..d2];

    let mut header = [0u8; MAX_HEADER];
    let n = decode_segment(h64, &mut header, "header")?;
    let alg = parse_header(&header[..n])?;

    let mut sig = [0u8; MAX_SIGNATURE];
    let sig_len = decode_segment(s64, &mut sig, "signature")?;
    let sig = &sig[..sig_len];

    let mut payload = vec![0u8; p64.len().div_ceil(4) * 3];
    if payload.len() > MAX_PAYLOAD {
        return Err(JwsError::Malformed("payload segment too long".into()));
    }
    let plen = decode_segment(p64, &mut payload, "payload")?;
    payload.truncate(plen);

    let anchors = pool.anchors();
    let fitting = || anchors.iter().enumerate().filter(|(_, a)| a.key_kind() == alg.key_kind());
    if fitting().next().is_none() {
        return Err(JwsError::SignatureInvalid(format!("no trust anchor with a key for {}", alg.as_str())));
    }
    let verifies = |key: &[u8]| -> bool {
        match alg {
            // RFC 7518 §3.3 (anchors are RSA >= 2048 bits, checked when loaded).
            JwsAlg::Rs256 => {
                let key = PublicKeyRef::Rsa(key);
                key.bits() >= 2048 && SignatureAlg::RsaPkcs1(DigestAlg::Sha256).verify(key, signing_input, sig).is_ok()
            }
            JwsAlg::Es256 => {
                // RFC 7518 §3.4: ES256 is the 64-byte r||s; accept ASN.1 DER too
                // (some signers emit it), and DER if raw fails.
                let es256 = |der: &[u8]| {
                    SignatureAlg::Ecdsa(DigestAlg::Sha256).verify(PublicKeyRef::EcP256(key), signing_input, der).is_ok()
                };
                (sig.len() == 64 && ecdsa_fixed_to_der(sig).is_some_and(|der| es256(&der))) || es256(sig)
            }
        }
    };
    for (i, a) in fitting() {
        if a.not_after() >= now && a.not_before() <= now && verifies(a.public_key()) {
            return Ok(VerifiedJws { payload, alg, anchor: i });
        }
    }
    for (_, a) in fitting() {
        if (a.not_after() < now || a.not_before() > now) && verifies(a.public_key()) {
            return Err(JwsError::AnchorExpired(format!(
                "signature made by trust anchor {} which is outside its validity {}..{}",
                a.subject(),
                a.not_before().to_rfc3339(),
                a.not_after().to_rfc3339()
            )));
        }
    }
    Err(JwsError::SignatureInvalid(format!(
        "{} signature verifies against none of the {} trust anchor(s)",
        alg.as_str(),
        fitting().count()
    )))
}
