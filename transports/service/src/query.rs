//! The SCEP query string (RFC 8894 §4.1): `operation=<op>[&message=<msg>]`,
//! and the percent-decoding the admin API shares.
//!
//! A leaf at the crate root, below `http` and `operator`: imports nothing
//! from the crate.

use std::borrow::Cow;

/// The SCEP parameters of a query string.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScepQuery<'a> {
    /// `operation`, percent-decoded (`+` is a space, as in forms). Empty when absent.
    pub operation: Cow<'a, str>,
    /// `message`, exactly as sent (still percent-encoded: the engine decodes it).
    pub message: Option<&'a str>,
}

/// Why a query string was refused (answered 400).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueryError {
    /// `operation` or `message` appears more than once.
    Duplicate(&'static str),
    /// `operation` has an invalid percent escape or is not UTF-8.
    BadOperation,
}

impl std::fmt::Display for QueryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Duplicate(k) => write!(f, "query parameter {k} given more than once"),
            Self::BadOperation => f.write_str("query parameter operation is not valid percent-encoded UTF-8"),
        }
    }
}

impl std::error::Error for QueryError {}

/// Parses a query string (without the `?`). Other parameters are ignored.
///
/// # Errors
/// A duplicated SCEP parameter, or an `operation` that does not decode.
pub fn parse_query(query: &str) -> Result<ScepQuery<'_>, QueryError> {
    let mut out = ScepQuery::default();
    let mut seen_operation = false;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "operation" => {
                if seen_operation {
                    return Err(QueryError::Duplicate("operation"));
                }
                seen_operation = true;
                out.operation = percent_decode(value).ok_or(QueryError::BadOperation)?;
            }
            "message" => {
                if out.message.is_some() {
                    return Err(QueryError::Duplicate("message"));
                }
                out.message = Some(value);
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Decodes `%XX` escapes and `+` (application/x-www-form-urlencoded).
pub(crate) fn percent_decode(s: &str) -> Option<Cow<'_, str>> {
    if !s.bytes().any(|b| b == b'%' || b == b'+') {
        return Some(Cow::Borrowed(s));
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'%' => {
                let hi = hex(*bytes.get(i + 1)?)?;
                let lo = hex(*bytes.get(i + 2)?)?;
                out.push(hi << 4 | lo);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok().map(Cow::Owned)
}

const fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    macro_rules! q {
        ($($query:expr => $op:expr, $msg:expr;)*) => {$(
            let got = parse_query($query).unwrap();
            assert_eq!(got.operation, $op, "operation of {:?}", $query);
            assert_eq!(got.message, $msg, "message of {:?}", $query);
        )*};
    }

    #[test]
    fn table() {
        q! {
            "" => "", None;
            "operation=GetCACaps" => "GetCACaps", None;
            "operation=GetCACert&message=CA" => "GetCACert", Some("CA");
            "message=MIIB%2Bab%3D%3D&operation=PKIOperation" => "PKIOperation", Some("MIIB%2Bab%3D%3D");
            "operation=Get%43ACaps" => "GetCACaps", None;
            "operation=a+b" => "a b", None;
            "operation" => "", None;
            "operation=&message=" => "", Some("");
            "x=1&operation=GetCACaps&&y" => "GetCACaps", None;
            "message=a+b/c" => "", Some("a+b/c");
        }
    }

    #[test]
    fn errors() {
        assert_eq!(parse_query("operation=a&operation=b"), Err(QueryError::Duplicate("operation")));
        assert_eq!(parse_query("message=a&message=b"), Err(QueryError::Duplicate("message")));
        assert_eq!(parse_query("operation=%4"), Err(QueryError::BadOperation));
        assert_eq!(parse_query("operation=%zz"), Err(QueryError::BadOperation));
        assert_eq!(parse_query("operation=%ff"), Err(QueryError::BadOperation));
    }
}
