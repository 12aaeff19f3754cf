//! PEM (RFC 7468) encoding and decoding for certificates and keys.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// One decoded PEM block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PemBlock {
    /// The label, e.g. `CERTIFICATE` or `PRIVATE KEY`.
    pub label: String,
    /// The decoded DER.
    pub der: Vec<u8>,
}

/// A PEM text that could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PemError(pub String);

impl std::fmt::Display for PemError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PemError {}

/// Decodes every PEM block in `text`, in order; text between blocks is ignored
/// (as OpenSSL does, so `openssl x509 -text` output loads too).
///
/// # Errors
/// On an unterminated block, mismatched labels or invalid base64.
pub fn decode_all(text: &str) -> Result<Vec<PemBlock>, PemError> {
    let mut out = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((_, line)) = lines.next() {
        let line = line.trim();
        let Some(label) = line.strip_prefix("-----BEGIN ").and_then(|l| l.strip_suffix("-----")) else {
            continue;
        };
        let mut body = String::new();
        let mut ended = false;
        for (no, l) in lines.by_ref() {
            let l = l.trim();
            if let Some(end) = l.strip_prefix("-----END ").and_then(|l| l.strip_suffix("-----")) {
                if end != label {
                    return Err(PemError(format!("line {}: END {end} does not match BEGIN {label}", no + 1)));
                }
                ended = true;
                break;
            }
            if l.contains(':') {
                continue; // RFC 1421 headers (Proc-Type etc.)
            }
            body.push_str(l);
        }
        if !ended {
            return Err(PemError(format!("unterminated PEM block {label}")));
        }
        let der = STANDARD.decode(body.as_bytes()).map_err(|e| PemError(format!("{label}: invalid base64: {e}")))?;
        out.push(PemBlock { label: label.to_string(), der });
    }
    Ok(out)
}

/// Encodes DER as a PEM block with 64-character lines.
pub fn encode(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut s = String::with_capacity(b64.len() + 64);
    s.push_str(&format!("-----BEGIN {label}-----\n"));
    for chunk in b64.as_bytes().chunks(64) {
        s.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        s.push('\n');
    }
    s.push_str(&format!("-----END {label}-----\n"));
    s
}

/// All `CERTIFICATE` blocks in `text`.
///
/// # Errors
/// As [`decode_all`].
pub fn certificates(text: &str) -> Result<Vec<Vec<u8>>, PemError> {
    Ok(decode_all(text)?.into_iter().filter(|b| b.label == "CERTIFICATE").map(|b| b.der).collect())
}

/// The first private key block (`PRIVATE KEY`, `RSA PRIVATE KEY` or `EC PRIVATE KEY`).
///
/// # Errors
/// As [`decode_all`], or when there is no key block.
pub fn private_key(text: &str) -> Result<Vec<u8>, PemError> {
    decode_all(text)?
        .into_iter()
        .find(|b| matches!(b.label.as_str(), "PRIVATE KEY" | "RSA PRIVATE KEY" | "EC PRIVATE KEY"))
        .map(|b| b.der)
        .ok_or_else(|| PemError("no PRIVATE KEY block found".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_errors() {
        let pem = encode("CERTIFICATE", &[1, 2, 3, 250]);
        let text = format!("junk\n{pem}more junk\n{pem}");
        assert_eq!(certificates(&text).unwrap(), vec![vec![1, 2, 3, 250]; 2]);
        assert!(decode_all("-----BEGIN X-----\nAAAA\n").is_err());
        assert!(decode_all("-----BEGIN X-----\nAAAA\n-----END Y-----\n").is_err());
        assert!(private_key(&pem).is_err());
    }
}
