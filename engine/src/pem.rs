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

/// The private key of a key file as the DER a provider loads
/// ([`crate::crypto::CryptoProvider::load_private_key`]), checked against its
/// format with the RustCrypto format crates:
/// - `PRIVATE KEY`: PKCS #8 `PrivateKeyInfo` (RFC 5958 §2);
/// - `ENCRYPTED PRIVATE KEY`: PKCS #8 `EncryptedPrivateKeyInfo` (RFC 5958 §3),
///   PBES2 with PBKDF2 or scrypt and AES-CBC or 3DES (RFC 8018 §6.2; what
///   `openssl pkcs8 -topk8` writes), decrypted with `passphrase`;
/// - `RSA PRIVATE KEY`: PKCS #1 `RSAPrivateKey` (RFC 8017 A.1.2);
/// - `EC PRIVATE KEY`: SEC1 `ECPrivateKey` (RFC 5915 §3).
///
/// The first of these blocks counts; certificates beside it are ignored.
///
/// # Errors
/// No key block; a structure that does not parse; an encrypted key without
/// `passphrase` ([`KeyFileError::PassphraseNeeded`]) or one it does not
/// decrypt; a `passphrase` for a key that is not encrypted (a setting that
/// would silently do nothing); OpenSSL's legacy `Proc-Type: 4,ENCRYPTED` PEM.
pub fn private_key_der(text: &str, passphrase: Option<&[u8]>) -> Result<Vec<u8>, KeyFileError> {
    use pkcs8::der::Decode as _;
    let block = decode_all(text)
        .map_err(KeyFileError::Pem)?
        .into_iter()
        .find(|b| {
            matches!(b.label.as_str(), "PRIVATE KEY" | "ENCRYPTED PRIVATE KEY" | "RSA PRIVATE KEY" | "EC PRIVATE KEY")
        })
        .ok_or(KeyFileError::NoKey)?;
    let invalid =
        |format: &'static str| move |e: pkcs8::der::Error| KeyFileError::Invalid { format, reason: e.to_string() };
    if block.label == "ENCRYPTED PRIVATE KEY" {
        let info =
            pkcs8::EncryptedPrivateKeyInfo::from_der(&block.der).map_err(invalid("PKCS#8 EncryptedPrivateKeyInfo"))?;
        let passphrase = passphrase.ok_or(KeyFileError::PassphraseNeeded)?;
        let plain = info.decrypt(passphrase).map_err(|e| KeyFileError::Decrypt(e.to_string()))?;
        pkcs8::PrivateKeyInfo::from_der(plain.as_bytes()).map_err(invalid("PKCS#8 PrivateKeyInfo"))?;
        return Ok(plain.as_bytes().to_vec());
    }
    if text.lines().any(|l| l.trim().starts_with("Proc-Type:") && l.contains("ENCRYPTED")) {
        return Err(KeyFileError::LegacyEncryption);
    }
    if passphrase.is_some() {
        return Err(KeyFileError::PassphraseUnused);
    }
    let checked = match block.label.as_str() {
        "PRIVATE KEY" => {
            pkcs8::PrivateKeyInfo::from_der(&block.der).map(|_| ()).map_err(invalid("PKCS#8 PrivateKeyInfo"))
        }
        "RSA PRIVATE KEY" => {
            pkcs1::RsaPrivateKey::from_der(&block.der).map(|_| ()).map_err(invalid("PKCS#1 RSAPrivateKey"))
        }
        _ => sec1::EcPrivateKey::from_der(&block.der).map(|_| ()).map_err(invalid("SEC1 ECPrivateKey")),
    };
    checked?;
    Ok(block.der)
}

/// Why a key file gave no key ([`private_key_der`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyFileError {
    /// The PEM itself is broken.
    Pem(PemError),
    /// No `PRIVATE KEY`, `ENCRYPTED PRIVATE KEY`, `RSA PRIVATE KEY` or `EC PRIVATE KEY` block.
    NoKey,
    /// The block's DER is not the structure its label names.
    Invalid {
        /// The structure expected.
        format: &'static str,
        /// The decoder's reason.
        reason: String,
    },
    /// The key is encrypted and no passphrase was given.
    PassphraseNeeded,
    /// The passphrase is wrong, or the encryption scheme is not supported.
    Decrypt(String),
    /// A passphrase was given for a key that is not encrypted.
    PassphraseUnused,
    /// OpenSSL's legacy PEM encryption (`Proc-Type: 4,ENCRYPTED`).
    LegacyEncryption,
}

impl std::fmt::Display for KeyFileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Pem(e) => write!(f, "{e}"),
            Self::NoKey => {
                f.write_str("no PRIVATE KEY, ENCRYPTED PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY block found")
            }
            Self::Invalid { format, reason } => write!(f, "not a valid {format}: {reason}"),
            Self::PassphraseNeeded => {
                f.write_str("the key is encrypted (ENCRYPTED PRIVATE KEY) and no passphrase file is set")
            }
            Self::Decrypt(e) => write!(f, "cannot decrypt the key (wrong passphrase, or an unsupported scheme): {e}"),
            Self::PassphraseUnused => f.write_str("a passphrase file is set but the key is not encrypted"),
            Self::LegacyEncryption => f.write_str(
                "legacy OpenSSL PEM encryption (Proc-Type: 4,ENCRYPTED) is not supported: convert the key with \
                 `openssl pkcs8 -topk8 -v2 aes-256-cbc` (PKCS#8, PBES2)",
            ),
        }
    }
}

impl std::error::Error for KeyFileError {}

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
