//! RFC 7512 `pkcs11:` URIs naming a private key in a token.
//!
//! ```text
//! pkcs11:token=scepd;object=ra-signing?module-path=/usr/lib/softhsm/libsofthsm2.so
//! pkcs11:serial=0123456789abcdef;id=%01%02
//! ```
//!
//! The path part (RFC 7512 §2.3, `;`-separated) selects the token (`token`,
//! `serial`, `manufacturer`, `model`, `slot-id`) and the object (`object`
//! = CKA_LABEL, `id` = CKA_ID, `type`, which must be `private` when given).
//! The query part (`&`-separated) may name the module (`module-path`) and a
//! PIN file (`pin-source`, RFC 7512 §2.3: a `file:` URI or a plain path).
//! `pin-value` is refused: a PIN never belongs in the configuration file.
//! Values are percent-decoded (RFC 3986 §2.1); `id` is raw bytes.

use std::path::PathBuf;

/// A private key named by an RFC 7512 `pkcs11:` URI.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct KeyUri {
    /// `token`: the token label (CKA_LABEL of the token, CK_TOKEN_INFO.label).
    pub token: Option<String>,
    /// `serial`: the token serial number.
    pub serial: Option<String>,
    /// `manufacturer`: the token manufacturer.
    pub manufacturer: Option<String>,
    /// `model`: the token model.
    pub model: Option<String>,
    /// `slot-id`: the slot number (RFC 7512 §2.3, decimal).
    pub slot_id: Option<u64>,
    /// `object`: the key's CKA_LABEL.
    pub object: Option<String>,
    /// `id`: the key's CKA_ID (raw bytes).
    pub id: Option<Vec<u8>>,
    /// `module-path` (query): the PKCS#11 library to load.
    pub module_path: Option<PathBuf>,
    /// `pin-source` (query): a file holding the user PIN.
    pub pin_source: Option<PathBuf>,
}

/// Why a `pkcs11:` URI was refused (the message names the attribute).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UriError(pub String);

impl std::fmt::Display for UriError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UriError {}

/// The scheme prefix.
pub const SCHEME: &str = "pkcs11:";

/// Whether `value` is meant as a `pkcs11:` URI rather than a file path.
pub fn is_pkcs11_uri(value: &str) -> bool {
    value.len() >= SCHEME.len() && value.get(..SCHEME.len()).is_some_and(|s| s.eq_ignore_ascii_case(SCHEME))
}

impl KeyUri {
    /// Parses an RFC 7512 URI naming one private key.
    ///
    /// # Errors
    /// When the text is not a `pkcs11:` URI, an attribute is unknown,
    /// repeated, badly percent-encoded, `type` is not `private`, neither
    /// `object` nor `id` is given, or `pin-value` is present.
    pub fn parse(text: &str) -> Result<Self, UriError> {
        if !is_pkcs11_uri(text) {
            return Err(UriError("not a pkcs11: URI (RFC 7512)".into()));
        }
        let rest = text.get(SCHEME.len()..).unwrap_or_default();
        let (path, query) = match rest.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (rest, None),
        };
        let mut uri = Self::default();
        for attr in path.split(';').filter(|a| !a.is_empty()) {
            let (name, raw) =
                attr.split_once('=').ok_or_else(|| UriError(format!("path attribute {attr:?} has no '='")))?;
            let value = || pct_decode(raw, name);
            let text =
                || value().and_then(|v| String::from_utf8(v).map_err(|_| UriError(format!("{name}: not UTF-8"))));
            match name {
                "token" => set(&mut uri.token, text()?, name)?,
                "serial" => set(&mut uri.serial, text()?, name)?,
                "manufacturer" => set(&mut uri.manufacturer, text()?, name)?,
                "model" => set(&mut uri.model, text()?, name)?,
                "object" => set(&mut uri.object, text()?, name)?,
                "id" => set(&mut uri.id, value()?, name)?,
                "slot-id" => {
                    let n =
                        text()?.parse::<u64>().map_err(|_| UriError(format!("slot-id: {raw:?} is not a number")))?;
                    set(&mut uri.slot_id, n, name)?;
                }
                "type" => {
                    let t = text()?;
                    if t != "private" {
                        return Err(UriError(format!("type={t}: scepd needs the private key (type=private)")));
                    }
                }
                // Informational attributes a URI copied from p11tool may carry.
                "library-manufacturer"
                | "library-description"
                | "library-version"
                | "slot-description"
                | "slot-manufacturer" => {}
                other if other.starts_with("x-") => {}
                other => return Err(UriError(format!("unknown path attribute {other:?} (RFC 7512 §2.3)"))),
            }
        }
        for attr in query.into_iter().flat_map(|q| q.split('&')).filter(|a| !a.is_empty()) {
            let (name, raw) =
                attr.split_once('=').ok_or_else(|| UriError(format!("query attribute {attr:?} has no '='")))?;
            let text = || {
                pct_decode(raw, name)
                    .and_then(|v| String::from_utf8(v).map_err(|_| UriError(format!("{name}: not UTF-8"))))
            };
            match name {
                "pin-value" => {
                    return Err(UriError(
                        "pin-value is refused: the PIN must not be written in the configuration; \
                         use pin-source=<file> or the pkcs11 PIN settings (pin_file / pin_env)"
                            .into(),
                    ));
                }
                "pin-source" => {
                    let t = text()?;
                    let path = t.strip_prefix("file:").map(|p| p.strip_prefix("//").unwrap_or(p)).unwrap_or(&t);
                    set(&mut uri.pin_source, PathBuf::from(path), name)?;
                }
                "module-path" => set(&mut uri.module_path, PathBuf::from(text()?), name)?,
                "module-name" => {
                    return Err(UriError(
                        "module-name is not supported: give the library's file with module-path".into(),
                    ));
                }
                other if other.starts_with("x-") => {}
                other => return Err(UriError(format!("unknown query attribute {other:?} (RFC 7512 §2.3)"))),
            }
        }
        if uri.object.is_none() && uri.id.is_none() {
            return Err(UriError("names no key: give object=<label> or id=<hex bytes as %XX>".into()));
        }
        Ok(uri)
    }

    /// The key's name for logs and errors: the object label and/or id, and
    /// the token (never a PIN: the URI cannot hold one).
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(t) = &self.token {
            parts.push(format!("token={t}"));
        }
        if let Some(s) = &self.serial {
            parts.push(format!("serial={s}"));
        }
        if let Some(o) = &self.object {
            parts.push(format!("object={o}"));
        }
        if let Some(id) = &self.id {
            parts.push(format!("id={}", id.iter().map(|b| format!("%{b:02X}")).collect::<String>()));
        }
        format!("pkcs11:{}", parts.join(";"))
    }
}

fn set<T>(slot: &mut Option<T>, value: T, name: &str) -> Result<(), UriError> {
    if slot.is_some() {
        return Err(UriError(format!("attribute {name} appears twice")));
    }
    *slot = Some(value);
    Ok(())
}

/// Percent-decoding (RFC 3986 §2.1).
fn pct_decode(raw: &str, name: &str) -> Result<Vec<u8>, UriError> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| UriError(format!("{name}: bad percent-encoding at byte {i}")))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_token_object_id_and_module() {
        let u = KeyUri::parse(
            "pkcs11:token=scep%20d;object=ra-signing;id=%01%AB;type=private?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/run/pin",
        )
        .unwrap();
        assert_eq!(u.token.as_deref(), Some("scep d"));
        assert_eq!(u.object.as_deref(), Some("ra-signing"));
        assert_eq!(u.id.as_deref(), Some(&[0x01, 0xab][..]));
        assert_eq!(u.module_path.as_deref(), Some(std::path::Path::new("/usr/lib/softhsm/libsofthsm2.so")));
        assert_eq!(u.pin_source.as_deref(), Some(std::path::Path::new("/run/pin")));
        assert_eq!(u.describe(), "pkcs11:token=scep d;object=ra-signing;id=%01%AB");
    }

    #[test]
    fn pin_value_is_refused_naming_the_alternatives() {
        let e = KeyUri::parse("pkcs11:token=t;object=k?pin-value=1234").unwrap_err();
        assert!(e.0.contains("pin-value is refused") && e.0.contains("pin_file"), "{e}");
        assert!(!e.0.contains("1234"), "the PIN is not echoed: {e}");
    }

    #[test]
    fn refuses_what_it_cannot_honour() {
        for (uri, why) in [
            ("/etc/ra.key", "not a pkcs11: URI"),
            ("pkcs11:token=t", "names no key"),
            ("pkcs11:token=t;object=k;type=public", "type=public"),
            ("pkcs11:token=t;object=k;objekt=x", "unknown path attribute"),
            ("pkcs11:token=t;object=k;object=j", "appears twice"),
            ("pkcs11:token=t;id=%G1", "bad percent-encoding"),
            ("pkcs11:token=t;id=%1", "bad percent-encoding"),
            ("pkcs11:token=t;object=k?module-name=softhsm2", "module-path"),
            ("pkcs11:slot-id=x;object=k", "not a number"),
        ] {
            let e = KeyUri::parse(uri).unwrap_err();
            assert!(e.0.contains(why), "{uri}: {e}");
        }
    }

    #[test]
    fn scheme_is_case_insensitive_and_paths_are_not_uris() {
        assert!(is_pkcs11_uri("PKCS11:token=t"));
        assert!(!is_pkcs11_uri("pkcs11"));
        assert!(!is_pkcs11_uri("./pkcs11:x"));
        assert!(KeyUri::parse("PKCS11:object=k").is_ok());
    }
}
