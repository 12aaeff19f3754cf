//! A small borrowed JSON scanner (RFC 8259) for JWS headers and claim sets.
//!
//! No tree is built: [`for_each_member`] walks the top-level object and hands
//! each member to a callback. Strings without escapes are borrowed from the
//! input; only strings with escapes allocate. Unknown members are parsed (so
//! the whole text must be valid JSON) and then dropped. Duplicate member names
//! are an error (RFC 7515 §5.2 allows rejecting them, and an ambiguous claim
//! set must never be read two ways). Nesting depth and member count are capped.

use std::borrow::Cow;

/// Deepest nesting of arrays/objects accepted inside the top-level object.
pub(crate) const MAX_DEPTH: usize = 16;
/// Most members accepted in the top-level object.
pub(crate) const MAX_MEMBERS: usize = 64;
/// Most elements accepted in one array.
pub(crate) const MAX_ARRAY: usize = 256;

/// Why a JSON text was refused, and where.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct JsonError {
    /// Byte offset in the decoded text.
    pub(crate) offset: usize,
    /// What was wrong.
    pub(crate) what: &'static str,
}

impl std::fmt::Display for JsonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at byte {}", self.what, self.offset)
    }
}

/// One member value, as far as the claim parsers care.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Value<'a> {
    /// A string.
    Str(Cow<'a, str>),
    /// A number, as its (validated) source text.
    Num(&'a str),
    /// `true` / `false`.
    Bool(bool),
    /// `null`.
    Null,
    /// An array whose elements are all strings (possibly empty).
    StrArray(Vec<Cow<'a, str>>),
    /// Any other array, or an object (validated, contents dropped).
    Other,
}

impl Value<'_> {
    /// A short type name for error messages.
    pub(crate) const fn kind(&self) -> &'static str {
        match self {
            Self::Str(_) => "string",
            Self::Num(_) => "number",
            Self::Bool(_) => "boolean",
            Self::Null => "null",
            Self::StrArray(_) => "array of strings",
            Self::Other => "object or mixed array",
        }
    }
}

struct Scanner<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Scanner<'a> {
    fn err(&self, what: &'static str) -> JsonError {
        JsonError { offset: self.pos, what }
    }

    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    fn peek(&self) -> Option<u8> {
        self.bytes().get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    fn expect(&mut self, b: u8, what: &'static str) -> Result<(), JsonError> {
        self.skip_ws();
        if self.peek() == Some(b) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.err(what))
        }
    }

    fn literal(&mut self, word: &'static str) -> Result<(), JsonError> {
        if self.bytes()[self.pos..].starts_with(word.as_bytes()) {
            self.pos += word.len();
            Ok(())
        } else {
            Err(self.err("invalid literal"))
        }
    }

    /// Parses a string; the opening quote is at `pos`.
    fn string(&mut self) -> Result<Cow<'a, str>, JsonError> {
        self.pos += 1;
        let start = self.pos;
        // Fast path: no escapes, borrow.
        loop {
            match self.peek() {
                None => return Err(self.err("unterminated string")),
                Some(b'"') => {
                    let s = &self.text[start..self.pos];
                    self.pos += 1;
                    return Ok(Cow::Borrowed(s));
                }
                Some(b'\\') => break,
                Some(c) if c < 0x20 => return Err(self.err("control character in string")),
                Some(_) => self.pos += 1,
            }
        }
        let mut out = String::with_capacity(self.pos - start + 16);
        out.push_str(&self.text[start..self.pos]);
        loop {
            match self.peek() {
                None => return Err(self.err("unterminated string")),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(Cow::Owned(out));
                }
                Some(b'\\') => {
                    self.pos += 1;
                    let esc = self.peek().ok_or_else(|| self.err("unterminated escape"))?;
                    self.pos += 1;
                    match esc {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => out.push(self.unicode_escape()?),
                        _ => return Err(self.err("invalid escape")),
                    }
                }
                Some(c) if c < 0x20 => return Err(self.err("control character in string")),
                Some(_) => {
                    // Copy one whole UTF-8 sequence (text is valid UTF-8, and
                    // `pos` is always on a character boundary here).
                    let rest = &self.text[self.pos..];
                    if let Some(ch) = rest.chars().next() {
                        out.push(ch);
                        self.pos += ch.len_utf8();
                    }
                }
            }
        }
    }

    fn hex4(&mut self) -> Result<u32, JsonError> {
        let digits = self.bytes().get(self.pos..self.pos + 4).ok_or_else(|| self.err("short \\u escape"))?;
        let mut v = 0u32;
        for &d in digits {
            let n = char::from(d).to_digit(16).ok_or_else(|| self.err("invalid \\u escape"))?;
            v = v * 16 + n;
        }
        self.pos += 4;
        Ok(v)
    }

    /// `\uXXXX`, including UTF-16 surrogate pairs (RFC 8259 §7).
    fn unicode_escape(&mut self) -> Result<char, JsonError> {
        let first = self.hex4()?;
        let code = if (0xd800..0xdc00).contains(&first) {
            if !self.bytes()[self.pos..].starts_with(b"\\u") {
                return Err(self.err("lone high surrogate"));
            }
            self.pos += 2;
            let second = self.hex4()?;
            if !(0xdc00..0xe000).contains(&second) {
                return Err(self.err("invalid low surrogate"));
            }
            0x10000 + ((first - 0xd800) << 10) + (second - 0xdc00)
        } else if (0xdc00..0xe000).contains(&first) {
            return Err(self.err("lone low surrogate"));
        } else {
            first
        };
        char::from_u32(code).ok_or_else(|| self.err("invalid code point"))
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`
    fn number(&mut self) -> Result<&'a str, JsonError> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(self.err("invalid number")),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.err("invalid number"));
            }
            self.digits();
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.err("invalid number"));
            }
            self.digits();
        }
        Ok(&self.text[start..self.pos])
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value<'a>, JsonError> {
        self.skip_ws();
        match self.peek() {
            Some(b'"') => Ok(Value::Str(self.string()?)),
            Some(b'-' | b'0'..=b'9') => Ok(Value::Num(self.number()?)),
            Some(b't') => self.literal("true").map(|()| Value::Bool(true)),
            Some(b'f') => self.literal("false").map(|()| Value::Bool(false)),
            Some(b'n') => self.literal("null").map(|()| Value::Null),
            Some(b'[') => self.array(depth + 1),
            Some(b'{') => {
                self.object(depth + 1, &mut |_, _| Ok(()))?;
                Ok(Value::Other)
            }
            Some(_) => Err(self.err("unexpected character")),
            None => Err(self.err("unexpected end")),
        }
    }

    fn array(&mut self, depth: usize) -> Result<Value<'a>, JsonError> {
        if depth > MAX_DEPTH {
            return Err(self.err("nesting too deep"));
        }
        self.pos += 1; // '['
        let mut strings = Vec::new();
        let mut all_strings = true;
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(Value::StrArray(strings));
        }
        let mut count = 0usize;
        loop {
            count += 1;
            if count > MAX_ARRAY {
                return Err(self.err("array too long"));
            }
            match self.value(depth)? {
                Value::Str(s) if all_strings => strings.push(s),
                _ => {
                    all_strings = false;
                    strings.clear();
                }
            }
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(if all_strings { Value::StrArray(strings) } else { Value::Other });
                }
                _ => return Err(self.err("expected ',' or ']'")),
            }
        }
    }

    /// Parses an object whose `{` is at the next non-whitespace position,
    /// calling `f` for each member and refusing duplicate names.
    fn object(
        &mut self,
        depth: usize,
        f: &mut dyn FnMut(&str, Value<'a>) -> Result<(), JsonError>,
    ) -> Result<(), JsonError> {
        if depth > MAX_DEPTH {
            return Err(self.err("nesting too deep"));
        }
        self.expect(b'{', "expected an object")?;
        let mut seen: Vec<Cow<'a, str>> = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(());
        }
        loop {
            self.skip_ws();
            if self.peek() != Some(b'"') {
                return Err(self.err("expected a member name"));
            }
            let key_at = self.pos;
            let key = self.string()?;
            if seen.contains(&key) {
                return Err(JsonError { offset: key_at, what: "duplicate member name" });
            }
            if seen.len() >= MAX_MEMBERS {
                return Err(JsonError { offset: key_at, what: "too many members" });
            }
            self.expect(b':', "expected ':'")?;
            let value = self.value(depth)?;
            f(&key, value)?;
            seen.push(key);
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(());
                }
                _ => return Err(self.err("expected ',' or '}'")),
            }
        }
    }
}

/// Walks the members of the JSON object `input` (the whole text must be one
/// object, optionally surrounded by whitespace), calling `f(name, value)` for
/// each in order. `f` may refuse a member by returning an error.
///
/// # Errors
/// On invalid UTF-8 or JSON, duplicate member names, too deep nesting, too many
/// members, or whatever `f` returns.
pub(crate) fn for_each_member<'a>(
    input: &'a [u8],
    mut f: impl FnMut(&str, Value<'a>) -> Result<(), JsonError>,
) -> Result<(), JsonError> {
    let text = std::str::from_utf8(input).map_err(|e| JsonError { offset: e.valid_up_to(), what: "invalid UTF-8" })?;
    let mut s = Scanner { text, pos: 0 };
    s.object(0, &mut f)?;
    s.skip_ws();
    if s.pos != text.len() {
        return Err(s.err("trailing data after object"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(text: &str) -> Result<Vec<(String, Value<'_>)>, JsonError> {
        let mut out = Vec::new();
        for_each_member(text.as_bytes(), |k, v| {
            out.push((k.to_string(), v));
            Ok(())
        })?;
        Ok(out)
    }

    #[test]
    fn scans_all_value_kinds() {
        let m = members(
            r#" {"a":"x","b":-12.5e+3,"c":true,"d":false,"e":null,"f":["p","q"],"g":[1,"z"],"h":{"i":[{}]},"j":[]} "#,
        )
        .unwrap();
        assert_eq!(m[0].1, Value::Str(Cow::Borrowed("x")));
        assert!(matches!(m[0].1, Value::Str(Cow::Borrowed(_))));
        assert_eq!(m[1].1, Value::Num("-12.5e+3"));
        assert_eq!(m[2].1, Value::Bool(true));
        assert_eq!(m[3].1, Value::Bool(false));
        assert_eq!(m[4].1, Value::Null);
        assert_eq!(m[5].1, Value::StrArray(vec![Cow::Borrowed("p"), Cow::Borrowed("q")]));
        assert_eq!(m[6].1, Value::Other);
        assert_eq!(m[7].1, Value::Other);
        assert_eq!(m[8].1, Value::StrArray(vec![]));
    }

    #[test]
    fn decodes_escapes() {
        let m = members(r#"{"k\u0065y":"a\"b\\c\/d\n\u00e9\ud83d\ude00"}"#).unwrap();
        assert_eq!(m[0].0, "key");
        assert_eq!(m[0].1, Value::Str(Cow::Owned("a\"b\\c/d\né😀".into())));
    }

    #[test]
    fn refuses_bad_json() {
        for bad in [
            "",
            "[]",
            "{",
            r#"{"a":1,"a":2}"#,
            r#"{"a":1}x"#,
            r#"{"a":01}"#,
            r#"{"a":1.}"#,
            r#"{"a":"\ud800"}"#,
            r#"{"a":"\udc00"}"#,
            r#"{"a":"\q"}"#,
            "{\"a\":\"\u{1}\"}",
            r#"{"a":tru}"#,
            r#"{"a" 1}"#,
            r#"{"a":1,}"#,
            r#"{a:1}"#,
        ] {
            assert!(members(bad).is_err(), "{bad:?} accepted");
        }
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(40), "]".repeat(40));
        assert_eq!(members(&deep).unwrap_err().what, "nesting too deep");
        let many: Vec<String> = (0..=MAX_MEMBERS).map(|i| format!("\"k{i}\":1")).collect();
        assert_eq!(members(&format!("{{{}}}", many.join(","))).unwrap_err().what, "too many members");
        assert!(for_each_member(b"{\"a\":\"\xff\"}", |_, _| Ok(())).is_err());
    }

    #[test]
    fn callback_can_refuse() {
        let e = for_each_member(b"{\"a\":1}", |_, _| Err(JsonError { offset: 0, what: "no" })).unwrap_err();
        assert_eq!(e.what, "no");
    }
}
