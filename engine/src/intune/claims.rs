//! Claim-set formats and their version dispatch (gate 3).
//!
//! The payload's `version` member picks a parser; each parser produces the
//! same normalized [`Claims`]. A future Connector format is a new
//! [`ChallengeVersion`] variant plus one parse function beside [`parse_v1`];
//! nothing else changes.

use std::borrow::Cow;

use super::json::{JsonError, Value, for_each_member};

/// Claim-set format versions scepd understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ChallengeVersion {
    /// The current Connector format (`version` absent or `"v1"`).
    V1,
}

impl ChallengeVersion {
    /// The `version` claim value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::V1 => "v1",
        }
    }

    /// Parses a payload of this version into normalized claims.
    pub(crate) fn parse(self, payload: &[u8]) -> Result<Claims<'_>, ClaimsError> {
        match self {
            Self::V1 => parse_v1(payload),
        }
    }
}

/// Why a payload was refused before the claim gates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ClaimsError {
    /// Invalid JSON, a claim of the wrong type, or a missing required claim (label `malformed`).
    Malformed(String),
    /// A `version` scepd does not understand (label `unknown_version`).
    UnknownVersion(String),
}

impl From<JsonError> for ClaimsError {
    fn from(e: JsonError) -> Self {
        Self::Malformed(format!("payload is not valid JSON: {e}"))
    }
}

/// Reads only the `version` member (the whole payload must still be valid JSON).
pub(crate) fn detect_version(payload: &[u8]) -> Result<ChallengeVersion, ClaimsError> {
    let mut version: Option<Result<ChallengeVersion, String>> = None;
    for_each_member(payload, |name, value| {
        if name == "version" {
            version = Some(match value {
                Value::Str(s) if s == "v1" => Ok(ChallengeVersion::V1),
                Value::Str(s) => Err(format!("challenge version {s:?} is not supported")),
                other => Err(format!("challenge version is a {}, not a string", other.kind())),
            });
        }
        Ok(())
    })?;
    version.unwrap_or(Ok(ChallengeVersion::V1)).map_err(ClaimsError::UnknownVersion)
}

/// The `aud` claim: one string or an array of strings (RFC 7519 §4.1.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Audience<'a> {
    One(Cow<'a, str>),
    Many(Vec<Cow<'a, str>>),
}

impl Audience<'_> {
    pub(crate) fn contains(&self, want: &str) -> bool {
        match self {
            Self::One(a) => a == want,
            Self::Many(v) => v.iter().any(|a| a == want),
        }
    }

    pub(crate) fn to_display(&self) -> String {
        match self {
            Self::One(a) => format!("{a:?}"),
            Self::Many(v) => format!("{v:?}"),
        }
    }
}

/// Normalized claims, borrowed from the decoded payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Claims<'a> {
    pub(crate) version: ChallengeVersion,
    pub(crate) iss: Option<Cow<'a, str>>,
    pub(crate) sub: Option<Cow<'a, str>>,
    pub(crate) aud: Option<Audience<'a>>,
    pub(crate) iat: i64,
    pub(crate) exp: i64,
    pub(crate) nonce: Cow<'a, str>,
    pub(crate) device_name: Option<Cow<'a, str>>,
    pub(crate) san_dns: Vec<Cow<'a, str>>,
    pub(crate) san_rfc822: Vec<Cow<'a, str>>,
    pub(crate) san_upn: Vec<Cow<'a, str>>,
}

/// A NumericDate (RFC 7519 §2): integer seconds; a fractional part is
/// truncated; exponents and out-of-range values are refused.
fn numeric_date(name: &str, value: &Value<'_>) -> Result<i64, String> {
    let Value::Num(text) = value else {
        return Err(format!("claim {name} is a {}, not a number", value.kind()));
    };
    if text.contains(['e', 'E']) {
        return Err(format!("claim {name} uses an exponent"));
    }
    let int = text.split('.').next().unwrap_or(text);
    int.parse::<i64>().map_err(|_| format!("claim {name} is out of range"))
}

fn string_claim<'a>(name: &str, value: Value<'a>) -> Result<Option<Cow<'a, str>>, String> {
    match value {
        Value::Str(s) => Ok(Some(s)),
        Value::Null => Ok(None),
        other => Err(format!("claim {name} is a {}, not a string", other.kind())),
    }
}

fn string_array<'a>(name: &str, value: Value<'a>) -> Result<Vec<Cow<'a, str>>, String> {
    match value {
        Value::StrArray(v) => Ok(v),
        Value::Null => Ok(Vec::new()),
        other => Err(format!("claim {name} is a {}, not an array of strings", other.kind())),
    }
}

/// The v1 claim set: `iss`, `sub`, `aud`, `iat`, `exp`, `nonce`,
/// `device_name`, `san_dns`, `san_rfc822`, `san_upn`, `version`; unknown
/// members are ignored, `null` counts as absent. `iat`, `exp` and `nonce` are
/// required (the reference accepted challenges without them; scepd does not).
pub(crate) fn parse_v1(payload: &[u8]) -> Result<Claims<'_>, ClaimsError> {
    let mut iss = None;
    let mut sub = None;
    let mut aud = None;
    let mut iat = None;
    let mut exp = None;
    let mut nonce = None;
    let mut device_name = None;
    let mut san_dns = Vec::new();
    let mut san_rfc822 = Vec::new();
    let mut san_upn = Vec::new();
    let mut type_error: Option<String> = None;
    for_each_member(payload, |name, value| {
        let r: Result<(), String> = (|| {
            match name {
                "iss" => iss = string_claim(name, value)?,
                "sub" => sub = string_claim(name, value)?,
                "aud" => {
                    aud = match value {
                        Value::Str(s) => Some(Audience::One(s)),
                        Value::StrArray(v) => Some(Audience::Many(v)),
                        Value::Null => None,
                        other => return Err(format!("claim aud is a {}", other.kind())),
                    }
                }
                "iat" if value != Value::Null => iat = Some(numeric_date(name, &value)?),
                "exp" if value != Value::Null => exp = Some(numeric_date(name, &value)?),
                "nonce" => nonce = string_claim(name, value)?,
                "device_name" => device_name = string_claim(name, value)?,
                "san_dns" => san_dns = string_array(name, value)?,
                "san_rfc822" => san_rfc822 = string_array(name, value)?,
                "san_upn" => san_upn = string_array(name, value)?,
                _ => {}
            }
            Ok(())
        })();
        if let Err(e) = r {
            type_error.get_or_insert(e);
        }
        Ok(())
    })?;
    if let Some(e) = type_error {
        return Err(ClaimsError::Malformed(e));
    }
    let missing = |c: &str| ClaimsError::Malformed(format!("required claim {c} is missing"));
    let iat = iat.ok_or_else(|| missing("iat"))?;
    let exp = exp.ok_or_else(|| missing("exp"))?;
    let nonce = nonce.filter(|n| !n.is_empty()).ok_or_else(|| missing("nonce"))?;
    Ok(Claims {
        version: ChallengeVersion::V1,
        iss,
        sub,
        aud,
        iat,
        exp,
        nonce,
        device_name,
        san_dns,
        san_rfc822,
        san_upn,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_dispatch() {
        assert_eq!(detect_version(br#"{"a":1}"#), Ok(ChallengeVersion::V1));
        assert_eq!(detect_version(br#"{"version":"v1"}"#), Ok(ChallengeVersion::V1));
        assert!(matches!(detect_version(br#"{"version":"v2"}"#), Err(ClaimsError::UnknownVersion(_))));
        assert!(matches!(detect_version(br#"{"version":2}"#), Err(ClaimsError::UnknownVersion(_))));
        assert!(matches!(detect_version(br#"{"version":"v1""#), Err(ClaimsError::Malformed(_))));
    }

    #[test]
    fn v1_fields_and_requirements() {
        let c = parse_v1(
            br#"{"iss":"i","sub":"s","aud":["x","y"],"iat":10.9,"exp":20,"nonce":"n","device_name":"d",
                "san_dns":["a"],"san_rfc822":[],"san_upn":null,"extra":{"z":[1]}}"#,
        )
        .unwrap();
        assert_eq!((c.iat, c.exp, c.nonce.as_ref()), (10, 20, "n"));
        assert!(c.aud.as_ref().unwrap().contains("y"));
        assert!(!c.aud.as_ref().unwrap().contains("z"));
        assert_eq!(c.san_dns, vec![Cow::Borrowed("a")]);
        assert!(c.san_upn.is_empty());
        for (bad, why) in [
            (r#"{"exp":2,"nonce":"n"}"#, "iat"),
            (r#"{"iat":1,"nonce":"n"}"#, "exp"),
            (r#"{"iat":1,"exp":2}"#, "nonce"),
            (r#"{"iat":1,"exp":2,"nonce":""}"#, "nonce"),
            (r#"{"iat":"1","exp":2,"nonce":"n"}"#, "iat"),
            (r#"{"iat":1e3,"exp":2,"nonce":"n"}"#, "iat"),
            (r#"{"iat":1,"exp":99999999999999999999,"nonce":"n"}"#, "exp"),
            (r#"{"iat":1,"exp":2,"nonce":"n","san_dns":"a"}"#, "san_dns"),
            (r#"{"iat":1,"exp":2,"nonce":"n","san_upn":[1]}"#, "san_upn"),
            (r#"{"iat":1,"exp":2,"nonce":"n","aud":5}"#, "aud"),
            (r#"{"iat":1,"exp":2,"nonce":"n","sub":true}"#, "sub"),
        ] {
            match parse_v1(bad.as_bytes()) {
                Err(ClaimsError::Malformed(m)) => assert!(m.contains(why), "{bad}: {m}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }
}
