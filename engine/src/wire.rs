//! Zero-copy ASN.1 BER/DER reading and strict DER writing (X.690).
//!
//! SCEP clients send DER, but some (jscep, Apple) send BER: indefinite lengths
//! (X.690 §8.1.3.6) and constructed, chunked OCTET STRINGs (X.690 §8.7.3.2).
//! [`Reader`] accepts both and hands out [`Tlv`] views that borrow the input.
//! Only a constructed OCTET STRING must be reassembled; [`Tlv::octets`] returns
//! a `Cow` that borrows in every other case.
//!
//! [`Writer`] always emits strict DER (definite, minimal lengths).

use std::borrow::Cow;

/// Maximum nesting depth accepted while skipping indefinite-length values.
/// Real PKIMessages nest about 12 levels; anything deeper is hostile.
const MAX_DEPTH: u32 = 32;

/// Why a structure could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeErrorKind {
    /// The input ended inside a value.
    Truncated,
    /// A length field is malformed (too long, or reserved form 0xFF).
    BadLength,
    /// A tag other than the one the structure requires.
    UnexpectedTag {
        /// The tag the structure requires at this position.
        expected: u8,
        /// The tag found.
        found: u8,
    },
    /// Multi-byte (high-number) tags are not used by any structure we parse.
    UnsupportedTag,
    /// Nesting deeper than the parser accepts.
    TooDeep,
    /// Bytes left over after a complete value.
    TrailingData,
    /// A primitive value's contents are invalid for its type (e.g. an INTEGER
    /// that does not fit, a BIT STRING with bad unused bits, an invalid time).
    InvalidValue,
    /// A required element is missing.
    Missing,
    /// Base64 text could not be decoded.
    Base64,
}

/// A decode failure and the byte offset (into the outermost input) where it occurred.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeError {
    /// What went wrong.
    pub kind: DecodeErrorKind,
    /// Offset into the input handed to the outermost [`Reader`].
    pub offset: usize,
}

impl DecodeError {
    /// A new error of `kind` at `offset`.
    pub const fn new(kind: DecodeErrorKind, offset: usize) -> Self {
        Self { kind, offset }
    }
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?} at byte {}", self.kind, self.offset)
    }
}

impl std::error::Error for DecodeError {}

/// Universal and context tags used by the structures scepd parses (single-byte form).
pub mod tag {
    /// BOOLEAN
    pub const BOOLEAN: u8 = 0x01;
    /// INTEGER
    pub const INTEGER: u8 = 0x02;
    /// BIT STRING (primitive)
    pub const BIT_STRING: u8 = 0x03;
    /// OCTET STRING (primitive)
    pub const OCTET_STRING: u8 = 0x04;
    /// OCTET STRING (constructed, BER only)
    pub const OCTET_STRING_CONSTRUCTED: u8 = 0x24;
    /// NULL
    pub const NULL: u8 = 0x05;
    /// OBJECT IDENTIFIER
    pub const OID: u8 = 0x06;
    /// UTF8String
    pub const UTF8_STRING: u8 = 0x0c;
    /// PrintableString
    pub const PRINTABLE_STRING: u8 = 0x13;
    /// TeletexString (T61String)
    pub const TELETEX_STRING: u8 = 0x14;
    /// IA5String
    pub const IA5_STRING: u8 = 0x16;
    /// UTCTime
    pub const UTC_TIME: u8 = 0x17;
    /// GeneralizedTime
    pub const GENERALIZED_TIME: u8 = 0x18;
    /// UniversalString
    pub const UNIVERSAL_STRING: u8 = 0x1c;
    /// BMPString
    pub const BMP_STRING: u8 = 0x1e;
    /// SEQUENCE / SEQUENCE OF
    pub const SEQUENCE: u8 = 0x30;
    /// SET / SET OF
    pub const SET: u8 = 0x31;
    /// `[n]` constructed, context-specific.
    pub const fn context_constructed(n: u8) -> u8 {
        0xa0 | n
    }
    /// `[n]` primitive, context-specific.
    pub const fn context_primitive(n: u8) -> u8 {
        0x80 | n
    }
}

/// One decoded tag-length-value, borrowing the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tlv<'a> {
    /// The identifier octet (class, constructed bit, number).
    pub tag: u8,
    /// The whole encoding: identifier, length, contents (and the end-of-contents
    /// octets for indefinite lengths). For DER input this is the exact DER.
    pub raw: &'a [u8],
    /// The contents octets (without end-of-contents octets).
    pub contents: &'a [u8],
    /// True when the length was BER indefinite form.
    pub indefinite: bool,
    /// Offset of `contents` in the outermost input, for error positions.
    pub offset: usize,
}

impl<'a> Tlv<'a> {
    /// True when the constructed bit is set.
    pub const fn is_constructed(&self) -> bool {
        self.tag & 0x20 != 0
    }

    /// A reader over the contents of a constructed value.
    pub fn reader(&self) -> Reader<'a> {
        Reader::with_offset(self.contents, self.offset)
    }

    /// The value of an OCTET STRING, primitive (borrowed) or BER-constructed
    /// (reassembled from its chunks; X.690 §8.7.3.2).
    ///
    /// # Errors
    /// Fails if the tag is not an OCTET STRING or a chunk is malformed.
    pub fn octets(&self) -> Result<Cow<'a, [u8]>, DecodeError> {
        match self.tag {
            tag::OCTET_STRING => Ok(Cow::Borrowed(self.contents)),
            tag::OCTET_STRING_CONSTRUCTED => {
                let mut out = Vec::with_capacity(self.contents.len());
                // COPY: BER chunked OCTET STRING reassembly (only for BER input).
                collect_octet_chunks(*self, &mut out, 0)?;
                Ok(Cow::Owned(out))
            }
            found => Err(DecodeError::new(
                DecodeErrorKind::UnexpectedTag { expected: tag::OCTET_STRING, found },
                self.offset,
            )),
        }
    }

    /// Interprets this value as an implicitly tagged OCTET STRING (`[n] IMPLICIT
    /// OCTET STRING`), reassembling BER chunks when constructed.
    ///
    /// # Errors
    /// Fails if a chunk is malformed.
    pub fn implicit_octets(&self) -> Result<Cow<'a, [u8]>, DecodeError> {
        if self.is_constructed() {
            let mut out = Vec::with_capacity(self.contents.len());
            collect_octet_chunks(Tlv { tag: tag::OCTET_STRING_CONSTRUCTED, ..*self }, &mut out, 0)?;
            Ok(Cow::Owned(out))
        } else {
            Ok(Cow::Borrowed(self.contents))
        }
    }

    /// Checks the tag.
    ///
    /// # Errors
    /// `UnexpectedTag` when it differs.
    pub fn expect_tag(self, expected: u8) -> Result<Self, DecodeError> {
        if self.tag == expected {
            Ok(self)
        } else {
            Err(DecodeError::new(DecodeErrorKind::UnexpectedTag { expected, found: self.tag }, self.offset))
        }
    }

    /// True when the length is in DER form (X.690 §10.1): definite, and in
    /// the fewest octets (short form below 128, otherwise no leading zero
    /// octet). The reader accepts BER; a caller that needs DER checks this.
    pub const fn has_der_length(&self) -> bool {
        let len = self.contents.len();
        let len_of_len = if len < 0x80 { 1 } else { 1 + (usize::BITS - len.leading_zeros()).div_ceil(8) as usize };
        !self.indefinite && self.raw.len() == 1 + len_of_len + len
    }

    /// The contents of a non-negative INTEGER without leading zero octets
    /// (the big-endian magnitude).
    ///
    /// # Errors
    /// Fails for a non-INTEGER, an empty INTEGER or a negative value.
    pub fn unsigned_integer(&self) -> Result<&'a [u8], DecodeError> {
        let t = self.expect_tag(tag::INTEGER)?;
        let c = t.contents;
        if c.is_empty() || c[0] & 0x80 != 0 {
            return Err(DecodeError::new(DecodeErrorKind::InvalidValue, self.offset));
        }
        let start = c.iter().position(|&b| b != 0).unwrap_or(c.len().saturating_sub(1));
        Ok(&c[start..])
    }

    /// A small INTEGER (e.g. a version field) as `u64`.
    ///
    /// # Errors
    /// Fails for negative or larger-than-u64 values.
    pub fn small_uint(&self) -> Result<u64, DecodeError> {
        let mag = self.unsigned_integer()?;
        if mag.len() > 8 {
            return Err(DecodeError::new(DecodeErrorKind::InvalidValue, self.offset));
        }
        Ok(mag.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
    }

    /// The contents of a BIT STRING with zero unused bits.
    ///
    /// # Errors
    /// Fails for a non-BIT STRING or one with unused bits.
    pub fn bit_string_bytes(&self) -> Result<&'a [u8], DecodeError> {
        let t = self.expect_tag(tag::BIT_STRING)?;
        match t.contents.split_first() {
            Some((0, rest)) => Ok(rest),
            _ => Err(DecodeError::new(DecodeErrorKind::InvalidValue, self.offset)),
        }
    }
}

fn collect_octet_chunks(t: Tlv<'_>, out: &mut Vec<u8>, depth: u32) -> Result<(), DecodeError> {
    if depth > MAX_DEPTH {
        return Err(DecodeError::new(DecodeErrorKind::TooDeep, t.offset));
    }
    match t.tag {
        tag::OCTET_STRING => {
            out.extend_from_slice(t.contents);
            Ok(())
        }
        tag::OCTET_STRING_CONSTRUCTED => {
            let mut r = t.reader();
            while !r.is_empty() {
                collect_octet_chunks(r.read()?, out, depth + 1)?;
            }
            Ok(())
        }
        found => Err(DecodeError::new(DecodeErrorKind::UnexpectedTag { expected: tag::OCTET_STRING, found }, t.offset)),
    }
}

/// A cursor over a sequence of BER/DER TLVs.
#[derive(Clone, Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    base: usize,
}

impl<'a> Reader<'a> {
    /// A reader over `buf`; offsets in errors are relative to `buf`.
    pub const fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0, base: 0 }
    }

    /// A reader over `buf` whose first byte sits at `base` in the outermost input.
    pub const fn with_offset(buf: &'a [u8], base: usize) -> Self {
        Self { buf, pos: 0, base }
    }

    /// True when every byte has been consumed.
    pub const fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    /// Current offset in the outermost input.
    pub const fn offset(&self) -> usize {
        self.base + self.pos
    }

    /// The unread bytes.
    pub fn remaining(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }

    /// The tag of the next value, if any.
    pub fn peek_tag(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }

    /// Reads the next TLV.
    ///
    /// # Errors
    /// Any malformation of the encoding.
    pub fn read(&mut self) -> Result<Tlv<'a>, DecodeError> {
        let (tlv, len) = parse_tlv(&self.buf[self.pos..], self.base + self.pos, 0)?;
        self.pos += len;
        Ok(tlv)
    }

    /// Reads the next TLV and checks its tag.
    ///
    /// # Errors
    /// Malformed encoding, or a different tag.
    pub fn expect(&mut self, tag: u8) -> Result<Tlv<'a>, DecodeError> {
        self.read()?.expect_tag(tag)
    }

    /// Reads the next TLV only if it has `tag`.
    ///
    /// # Errors
    /// Malformed encoding.
    pub fn optional(&mut self, tag: u8) -> Result<Option<Tlv<'a>>, DecodeError> {
        if self.peek_tag() == Some(tag) { self.read().map(Some) } else { Ok(None) }
    }

    /// Fails unless all input has been consumed.
    ///
    /// # Errors
    /// `TrailingData` when bytes remain.
    pub fn finish(&self) -> Result<(), DecodeError> {
        if self.is_empty() { Ok(()) } else { Err(DecodeError::new(DecodeErrorKind::TrailingData, self.offset())) }
    }
}

/// Parses exactly one TLV covering all of `input`.
///
/// # Errors
/// Malformed encoding or trailing bytes.
pub fn parse_single(input: &[u8]) -> Result<Tlv<'_>, DecodeError> {
    let mut r = Reader::new(input);
    let t = r.read()?;
    r.finish()?;
    Ok(t)
}

/// Parses one TLV at the start of `input`, returning it and its encoded length.
fn parse_tlv(input: &[u8], base: usize, depth: u32) -> Result<(Tlv<'_>, usize), DecodeError> {
    if depth > MAX_DEPTH {
        return Err(DecodeError::new(DecodeErrorKind::TooDeep, base));
    }
    let trunc = |at: usize| DecodeError::new(DecodeErrorKind::Truncated, base + at);
    let &tag = input.first().ok_or_else(|| trunc(0))?;
    if tag & 0x1f == 0x1f {
        return Err(DecodeError::new(DecodeErrorKind::UnsupportedTag, base));
    }
    let &first = input.get(1).ok_or_else(|| trunc(1))?;
    let mut header = 2usize;
    let definite_len = if first < 0x80 {
        Some(usize::from(first))
    } else if first == 0x80 {
        None
    } else {
        let n = usize::from(first & 0x7f);
        if n > 4 {
            return Err(DecodeError::new(DecodeErrorKind::BadLength, base + 1));
        }
        let bytes = input.get(2..2 + n).ok_or_else(|| trunc(2))?;
        header += n;
        Some(bytes.iter().fold(0usize, |acc, &b| (acc << 8) | usize::from(b)))
    };
    match definite_len {
        Some(len) => {
            let end = header.checked_add(len).ok_or_else(|| trunc(header))?;
            let contents = input.get(header..end).ok_or_else(|| trunc(header))?;
            let tlv = Tlv { tag, raw: &input[..end], contents, indefinite: false, offset: base + header };
            Ok((tlv, end))
        }
        None => {
            // X.690 §8.1.3.6: indefinite form is only allowed for constructed values.
            if tag & 0x20 == 0 {
                return Err(DecodeError::new(DecodeErrorKind::BadLength, base + 1));
            }
            let mut pos = header;
            loop {
                let rest = input.get(pos..).ok_or_else(|| trunc(pos))?;
                if rest.len() < 2 {
                    return Err(trunc(pos));
                }
                if rest[0] == 0 && rest[1] == 0 {
                    let tlv = Tlv {
                        tag,
                        raw: &input[..pos + 2],
                        contents: &input[header..pos],
                        indefinite: true,
                        offset: base + header,
                    };
                    return Ok((tlv, pos + 2));
                }
                let (_, len) = parse_tlv(rest, base + pos, depth + 1)?;
                pos += len;
            }
        }
    }
}

/// Builds strict DER.
///
/// Nested values are written with [`Writer::nested`], which back-patches the
/// length so callers never compute lengths by hand.
#[derive(Debug, Default, Clone)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// An empty writer.
    pub const fn new() -> Self {
        Self { buf: Vec::new() }
    }

    /// An empty writer with `cap` bytes reserved.
    pub fn with_capacity(cap: usize) -> Self {
        Self { buf: Vec::with_capacity(cap) }
    }

    /// The encoding so far.
    pub fn into_vec(self) -> Vec<u8> {
        self.buf
    }

    /// The encoding so far, borrowed.
    pub fn as_slice(&self) -> &[u8] {
        &self.buf
    }

    /// Appends already-encoded DER verbatim (e.g. a certificate).
    pub fn raw(&mut self, der: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(der);
        self
    }

    /// Appends `tag`, the DER length of `contents`, then `contents`.
    pub fn tlv(&mut self, tag: u8, contents: &[u8]) -> &mut Self {
        self.buf.push(tag);
        push_len(&mut self.buf, contents.len());
        self.buf.extend_from_slice(contents);
        self
    }

    /// Appends a constructed value whose contents `f` writes.
    pub fn nested(&mut self, tag: u8, f: impl FnOnce(&mut Self)) -> &mut Self {
        self.buf.push(tag);
        let len_at = self.buf.len();
        self.buf.push(0);
        let start = self.buf.len();
        f(self);
        let len = self.buf.len() - start;
        if len < 0x80 {
            self.buf[len_at] = len as u8;
        } else {
            let mut enc = Vec::with_capacity(5);
            push_len(&mut enc, len);
            self.buf[len_at] = enc[0];
            self.buf.splice(start..start, enc[1..].iter().copied());
        }
        self
    }

    /// SEQUENCE { f }
    pub fn sequence(&mut self, f: impl FnOnce(&mut Self)) -> &mut Self {
        self.nested(tag::SEQUENCE, f)
    }

    /// SET { f } — the caller is responsible for DER SET OF ordering when it has
    /// several elements (see [`Writer::set_of`]).
    pub fn set(&mut self, f: impl FnOnce(&mut Self)) -> &mut Self {
        self.nested(tag::SET, f)
    }

    /// SET OF with its elements sorted by their encodings (X.690 §11.6).
    pub fn set_of(&mut self, tag: u8, mut elements: Vec<Vec<u8>>) -> &mut Self {
        elements.sort();
        self.nested(tag, |w| {
            for e in &elements {
                w.raw(e);
            }
        })
    }

    /// OBJECT IDENTIFIER from its DER contents (see [`crate::oid`]).
    pub fn oid(&mut self, oid_contents: &[u8]) -> &mut Self {
        self.tlv(tag::OID, oid_contents)
    }

    /// NULL
    pub fn null(&mut self) -> &mut Self {
        self.tlv(tag::NULL, &[])
    }

    /// OCTET STRING
    pub fn octet_string(&mut self, v: &[u8]) -> &mut Self {
        self.tlv(tag::OCTET_STRING, v)
    }

    /// PrintableString (the caller guarantees the character set).
    pub fn printable_string(&mut self, v: &str) -> &mut Self {
        self.tlv(tag::PRINTABLE_STRING, v.as_bytes())
    }

    /// UTF8String
    pub fn utf8_string(&mut self, v: &str) -> &mut Self {
        self.tlv(tag::UTF8_STRING, v.as_bytes())
    }

    /// BIT STRING with zero unused bits.
    pub fn bit_string(&mut self, v: &[u8]) -> &mut Self {
        self.nested(tag::BIT_STRING, |w| {
            w.buf.push(0);
            w.buf.extend_from_slice(v);
        })
    }

    /// INTEGER from an unsigned big-endian magnitude (leading zeros trimmed,
    /// a zero octet prepended when the high bit is set).
    pub fn unsigned_integer(&mut self, magnitude: &[u8]) -> &mut Self {
        let start = magnitude.iter().position(|&b| b != 0).unwrap_or(magnitude.len());
        let m = &magnitude[start..];
        self.nested(tag::INTEGER, |w| {
            if m.is_empty() || m[0] & 0x80 != 0 {
                w.buf.push(0);
            }
            w.buf.extend_from_slice(m);
        })
    }

    /// INTEGER from a small non-negative number.
    pub fn small_uint(&mut self, v: u64) -> &mut Self {
        self.unsigned_integer(&v.to_be_bytes())
    }

    /// BOOLEAN (DER: 0xFF for true).
    pub fn boolean(&mut self, v: bool) -> &mut Self {
        self.tlv(tag::BOOLEAN, &[if v { 0xff } else { 0 }])
    }
}

/// Appends a DER length (X.690 §10.1: minimal definite form).
fn push_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len() - 1);
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
}

/// Wraps `contents` in a single DER TLV.
pub fn encode_tlv(tag: u8, contents: &[u8]) -> Vec<u8> {
    let mut w = Writer::with_capacity(contents.len() + 6);
    w.tlv(tag, contents);
    w.into_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definite_round_trip() {
        let mut w = Writer::new();
        w.sequence(|w| {
            w.small_uint(5).octet_string(&[1; 200]).null();
        });
        let der = w.into_vec();
        let t = parse_single(&der).unwrap();
        assert_eq!(t.tag, tag::SEQUENCE);
        let mut r = t.reader();
        assert_eq!(r.read().unwrap().small_uint().unwrap(), 5);
        assert_eq!(r.read().unwrap().octets().unwrap().len(), 200);
        r.expect(tag::NULL).unwrap();
        r.finish().unwrap();
    }

    #[test]
    fn long_lengths_are_minimal() {
        for len in [0usize, 127, 128, 255, 256, 65535, 65536] {
            let v = encode_tlv(tag::OCTET_STRING, &vec![7; len]);
            let t = parse_single(&v).unwrap();
            assert_eq!(t.contents.len(), len);
            assert_eq!(t.raw.len(), v.len());
        }
        assert_eq!(&encode_tlv(4, &[0; 128])[..3], &[4, 0x81, 0x80]);
    }

    #[test]
    fn ber_indefinite_and_chunked_octets() {
        // SEQUENCE (indefinite) { OCTET STRING constructed (indefinite) { "ab", "cd" } }
        let ber = [0x30, 0x80, 0x24, 0x80, 0x04, 0x02, b'a', b'b', 0x04, 0x02, b'c', b'd', 0, 0, 0, 0];
        let t = parse_single(&ber).unwrap();
        assert!(t.indefinite);
        let inner = t.reader().read().unwrap();
        assert_eq!(&*inner.octets().unwrap(), b"abcd");
    }

    #[test]
    fn rejects_malformed() {
        assert_eq!(parse_single(&[0x30]).unwrap_err().kind, DecodeErrorKind::Truncated);
        assert_eq!(parse_single(&[0x30, 0x05, 1]).unwrap_err().kind, DecodeErrorKind::Truncated);
        assert_eq!(parse_single(&[0x04, 0x80, 0, 0]).unwrap_err().kind, DecodeErrorKind::BadLength);
        assert_eq!(parse_single(&[0x04, 0x85, 1, 1, 1, 1, 1]).unwrap_err().kind, DecodeErrorKind::BadLength);
        assert_eq!(parse_single(&[0x04, 0x00, 0x00]).unwrap_err().kind, DecodeErrorKind::TrailingData);
        // Deep indefinite nesting is refused, not a stack overflow.
        let mut deep = vec![];
        for _ in 0..1000 {
            deep.extend_from_slice(&[0x30, 0x80]);
        }
        assert_eq!(parse_single(&deep).unwrap_err().kind, DecodeErrorKind::TooDeep);
    }

    #[test]
    fn der_lengths_are_told_from_ber_ones() {
        for len in [0usize, 127, 128, 255, 256, 65536] {
            assert!(parse_single(&encode_tlv(tag::OCTET_STRING, &vec![7; len])).unwrap().has_der_length(), "{len}");
        }
        // X.690 §10.1: long form for a short length, a leading zero length octet, indefinite.
        assert!(!parse_single(&[0x04, 0x81, 0x01, 7]).unwrap().has_der_length());
        let mut padded = vec![0x04, 0x82, 0x00, 0x80];
        padded.extend_from_slice(&[7; 128]);
        assert!(!parse_single(&padded).unwrap().has_der_length());
        assert!(!parse_single(&[0x30, 0x80, 0x05, 0x00, 0, 0]).unwrap().has_der_length());
    }

    #[test]
    fn integers() {
        let mut w = Writer::new();
        w.unsigned_integer(&[0x00, 0x80, 0x01]);
        assert_eq!(w.as_slice(), &[0x02, 0x03, 0x00, 0x80, 0x01]);
        let t = parse_single(w.as_slice()).unwrap();
        assert_eq!(t.unsigned_integer().unwrap(), &[0x80, 0x01]);
        let mut w = Writer::new();
        w.small_uint(0);
        assert_eq!(w.as_slice(), &[0x02, 0x01, 0x00]);
        assert!(parse_single(&[0x02, 0x01, 0xff]).unwrap().unsigned_integer().is_err());
    }

    #[test]
    fn set_of_is_sorted() {
        let mut w = Writer::new();
        w.set_of(tag::SET, vec![vec![0x04, 0x01, 0x02], vec![0x04, 0x01, 0x01]]);
        assert_eq!(w.as_slice(), &[0x31, 0x06, 0x04, 0x01, 0x01, 0x04, 0x01, 0x02]);
    }
}
