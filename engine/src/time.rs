//! Time as the engine sees it: a number handed in by the caller, never read
//! from a clock. Also ASN.1 UTCTime / GeneralizedTime (RFC 5280 §4.1.2.5).

use crate::wire::{DecodeError, DecodeErrorKind, Tlv, Writer, tag};

/// Seconds since the Unix epoch (UTC). Signed so pre-1970 dates in odd
/// certificates still parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct UnixTime(pub i64);

impl UnixTime {
    /// From seconds since the epoch.
    pub const fn from_secs(s: i64) -> Self {
        Self(s)
    }

    /// Seconds since the epoch.
    pub const fn secs(self) -> i64 {
        self.0
    }

    /// `self + secs`, saturating.
    pub const fn plus(self, secs: i64) -> Self {
        Self(self.0.saturating_add(secs))
    }

    /// The current time from the system clock. Only transports and binaries call
    /// this; the engine takes time as an argument.
    pub fn now() -> Self {
        let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        Self(i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
    }

    /// Civil date-time (year, month, day, hour, minute, second) in UTC.
    pub fn to_civil(self) -> (i64, u32, u32, u32, u32, u32) {
        let days = self.0.div_euclid(86_400);
        let rem = self.0.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        (y, m, d, (rem / 3600) as u32, ((rem % 3600) / 60) as u32, (rem % 60) as u32)
    }

    /// RFC 3339 form, e.g. `2026-11-25T03:29:38Z`.
    pub fn to_rfc3339(self) -> String {
        let (y, mo, d, h, mi, s) = self.to_civil();
        format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
    }

    /// Parses an RFC 3339 `date-time` (RFC 3339 §5.6): `2030-01-01T00:00:00Z`,
    /// `2030-01-01t00:00:00.5+02:00`, `2030-01-01 00:00:00-05:30`. A
    /// fractional second is truncated; a leap second (`:60`) counts as the
    /// next second. `None` for anything else (including an offset-less time).
    pub fn parse_rfc3339(text: &str) -> Option<Self> {
        let b = text.as_bytes();
        let num = |r: std::ops::Range<usize>| -> Option<u32> {
            let part = b.get(r)?;
            if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
                return None;
            }
            std::str::from_utf8(part).ok()?.parse().ok()
        };
        let sep = |i: usize, c: u8| b.get(i) == Some(&c);
        if !(sep(4, b'-')
            && sep(7, b'-')
            && matches!(b.get(10), Some(b'T' | b't' | b' '))
            && sep(13, b':')
            && sep(16, b':'))
        {
            return None;
        }
        let (year, month, day) = (i64::from(num(0..4)?), num(5..7)?, num(8..10)?);
        let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
        let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
        let month_days = match month {
            2 if leap => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        };
        if !(1..=12).contains(&month) || !(1..=month_days).contains(&day) || hour > 23 || minute > 59 || second > 60 {
            return None;
        }
        // time-secfrac = "." 1*DIGIT
        let mut i = 19;
        if sep(i, b'.') {
            let digits = b.get(i + 1..)?.iter().take_while(|c| c.is_ascii_digit()).count();
            if digits == 0 {
                return None;
            }
            i += 1 + digits;
        }
        // time-offset = "Z" / time-numoffset
        let offset = match b.get(i..)? {
            [b'Z' | b'z'] => 0,
            [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
                let (h, m) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
                if h > 23 || m > 59 {
                    return None;
                }
                let secs = i64::from(h) * 3600 + i64::from(m) * 60;
                if *sign == b'-' { -secs } else { secs }
            }
            _ => return None,
        };
        let days = days_from_civil(year, month, day);
        let local = days * 86_400 + i64::from(hour) * 3600 + i64::from(minute) * 60 + i64::from(second);
        Some(Self(local - offset))
    }

    /// Writes this time as UTCTime for years 1950–2049 and GeneralizedTime
    /// otherwise (RFC 5280 §4.1.2.5).
    pub fn write_asn1(self, w: &mut Writer) {
        let (y, mo, d, h, mi, s) = self.to_civil();
        if (1950..2050).contains(&y) {
            let text = format!("{:02}{mo:02}{d:02}{h:02}{mi:02}{s:02}Z", y % 100);
            w.tlv(tag::UTC_TIME, text.as_bytes());
        } else {
            let text = format!("{y:04}{mo:02}{d:02}{h:02}{mi:02}{s:02}Z");
            w.tlv(tag::GENERALIZED_TIME, text.as_bytes());
        }
    }
}

/// Days since 1970-01-01 to (year, month, day) (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// (year, month, day) to days since 1970-01-01.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parses a UTCTime or GeneralizedTime TLV (Zulu form, as RFC 5280 requires;
/// also the offset-less and fractional forms some clients send in signingTime).
///
/// # Errors
/// `InvalidValue` for anything else.
pub fn parse_asn1_time(t: Tlv<'_>) -> Result<UnixTime, DecodeError> {
    let bad = DecodeError::new(DecodeErrorKind::InvalidValue, t.offset);
    let s = std::str::from_utf8(t.contents).map_err(|_| bad)?;
    let s = s.strip_suffix('Z').unwrap_or(s);
    let num = |r: std::ops::Range<usize>| -> Result<u32, DecodeError> {
        let part = s.get(r).ok_or(bad)?;
        if !part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad);
        }
        part.parse::<u32>().map_err(|_| bad)
    };
    let (year, rest) = match t.tag {
        tag::UTC_TIME => {
            let yy = i64::from(num(0..2)?);
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, 2)
        }
        tag::GENERALIZED_TIME => (i64::from(num(0..4)?), 4),
        _ => return Err(bad),
    };
    let month = num(rest..rest + 2)?;
    let day = num(rest + 2..rest + 4)?;
    let hour = num(rest + 4..rest + 6)?;
    let minute = num(rest + 6..rest + 8)?;
    let second = if s.len() >= rest + 10 { num(rest + 8..rest + 10)? } else { 0 };
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return Err(bad);
    }
    let days = days_from_civil(year, month, day);
    Ok(UnixTime(days * 86_400 + i64::from(hour) * 3600 + i64::from(minute) * 60 + i64::from(second)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::parse_single;

    #[test]
    fn round_trips_both_forms() {
        for secs in [0i64, 951_782_400, 1_767_268_800, 2_524_608_000, 4_102_444_800] {
            let mut w = Writer::new();
            UnixTime(secs).write_asn1(&mut w);
            let v = w.into_vec();
            assert_eq!(parse_asn1_time(parse_single(&v).unwrap()).unwrap(), UnixTime(secs));
        }
        assert_eq!(UnixTime(1_767_268_800).to_rfc3339(), "2026-01-01T12:00:00Z");
    }

    #[test]
    fn parses_rfc3339() {
        let t = |s: &str| UnixTime::parse_rfc3339(s).map(UnixTime::secs);
        assert_eq!(t("2026-01-01T12:00:00Z"), Some(1_767_268_800));
        assert_eq!(t("2026-01-01t12:00:00z"), Some(1_767_268_800));
        assert_eq!(t("2026-01-01 12:00:00Z"), Some(1_767_268_800));
        assert_eq!(t("2026-01-01T12:00:00.999Z"), Some(1_767_268_800), "fraction truncated");
        assert_eq!(t("2026-01-01T14:00:00+02:00"), Some(1_767_268_800));
        assert_eq!(t("2026-01-01T06:30:00-05:30"), Some(1_767_268_800));
        assert_eq!(t("2024-02-29T00:00:00Z"), Some(1_709_164_800));
        assert_eq!(t("2016-12-31T23:59:60Z"), Some(1_483_228_800), "leap second");
        for round in [0i64, 951_782_400, 4_102_444_800] {
            assert_eq!(t(&UnixTime(round).to_rfc3339()), Some(round));
        }
        for bad in [
            "",
            "2026-01-01",
            "2026-01-01T12:00:00",
            "2026-01-01T12:00Z",
            "2026-13-01T12:00:00Z",
            "2026-02-29T12:00:00Z",
            "2026-04-31T12:00:00Z",
            "2026-01-01T24:00:00Z",
            "2026-01-01T12:00:00.Z",
            "2026-01-01T12:00:00+0200",
            "2026-01-01T12:00:00+24:00",
            "2026-01-01T12:00:00Zjunk",
            "2026-01-01X12:00:00Z",
            "+026-01-01T12:00:00Z",
            "1767268800",
        ] {
            assert_eq!(t(bad), None, "{bad}");
        }
    }

    #[test]
    fn rejects_garbage() {
        let v = crate::wire::encode_tlv(tag::UTC_TIME, b"26x101120000Z");
        assert!(parse_asn1_time(parse_single(&v).unwrap()).is_err());
        let v = crate::wire::encode_tlv(tag::UTC_TIME, b"261301120000Z");
        assert!(parse_asn1_time(parse_single(&v).unwrap()).is_err());
    }
}
