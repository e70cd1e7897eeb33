//! `Timestamp`: seconds since the Unix epoch as a float, the AIECS representation, readable from
//! ROMA's ISO-8601 strings.
//!
//! Stored and serialised as a JSON number so AIECS history files load unchanged. Deserialisation
//! also accepts RFC 3339 / ISO-8601 strings (`2025-09-19T12:00:00.5`, `…Z`, `…+02:00`, a space
//! instead of `T`, a bare date); a string without an offset is read as UTC, which is what ROMA's
//! naive `datetime.isoformat()` values mean on its servers. The parser is a few lines of calendar
//! arithmetic rather than a date-time crate: it is all taskctx needs of dates.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A point in time, in seconds since the Unix epoch (UTC), with sub-second precision.
#[derive(Clone, Copy, PartialEq, PartialOrd, Default)]
pub struct Timestamp(f64);

/// Why a value is not a timestamp.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid timestamp {value:?}: {reason}")]
pub struct TimestampError {
    value: String,
    reason: &'static str,
}

impl TimestampError {
    fn new(value: &str, reason: &'static str) -> Self {
        Self {
            value: value.chars().take(64).collect(),
            reason,
        }
    }
}

impl Timestamp {
    /// The Unix epoch, 1970-01-01T00:00:00Z.
    pub const UNIX_EPOCH: Timestamp = Timestamp(0.0);

    /// The current time from the system clock.
    pub fn now() -> Self {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        Self(secs)
    }

    /// A timestamp from seconds since the epoch; `None` for NaN or infinities.
    pub fn from_secs(secs: f64) -> Option<Self> {
        secs.is_finite().then_some(Self(secs))
    }

    /// Seconds since the epoch.
    pub fn as_secs(self) -> f64 {
        self.0
    }

    /// Parses an RFC 3339 / ISO-8601 date-time (see the module docs for the accepted forms).
    pub fn parse_iso8601(text: &str) -> Result<Self, TimestampError> {
        parse_iso8601(text)
    }

    /// Formats as RFC 3339 in UTC with millisecond precision, e.g. `2025-09-19T12:00:00.500Z`.
    pub fn to_rfc3339(self) -> String {
        let total_millis = (self.0 * 1000.0).round() as i64;
        let days = total_millis.div_euclid(86_400_000);
        let millis_of_day = total_millis.rem_euclid(86_400_000);
        let (year, month, day) = civil_from_days(days);
        let secs_of_day = millis_of_day / 1000;
        format!(
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
            secs_of_day / 3600,
            secs_of_day / 60 % 60,
            secs_of_day % 60,
            millis_of_day % 1000
        )
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timestamp({})", self.0)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_f64(self.0)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TimestampVisitor;

        impl Visitor<'_> for TimestampVisitor {
            type Value = Timestamp;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("seconds since the Unix epoch or an ISO-8601 date-time string")
            }

            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Timestamp, E> {
                Timestamp::from_secs(v).ok_or_else(|| E::custom("timestamp must be finite"))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Timestamp, E> {
                Ok(Timestamp(v as f64))
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Timestamp, E> {
                Ok(Timestamp(v as f64))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Timestamp, E> {
                parse_iso8601(v).map_err(E::custom)
            }
        }

        deserializer.deserialize_any(TimestampVisitor)
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The inverse of [`days_from_civil`].
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// A tiny cursor over ASCII digits and separators.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn digits(&mut self, count: usize) -> Option<i64> {
        let slice = self.bytes.get(self.pos..self.pos + count)?;
        let mut value = 0i64;
        for b in slice {
            if !b.is_ascii_digit() {
                return None;
            }
            value = value * 10 + i64::from(b - b'0');
        }
        self.pos += count;
        Some(value)
    }

    fn eat(&mut self, byte: u8) -> bool {
        if self.bytes.get(self.pos) == Some(&byte) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn done(&self) -> bool {
        self.pos == self.bytes.len()
    }
}

fn parse_iso8601(text: &str) -> Result<Timestamp, TimestampError> {
    let err = |reason| TimestampError::new(text, reason);
    let mut c = Cursor {
        bytes: text.trim().as_bytes(),
        pos: 0,
    };
    let year = c
        .digits(4)
        .ok_or_else(|| err("expected a four-digit year"))?;
    if !c.eat(b'-') {
        return Err(err("expected '-' after the year"));
    }
    let month = c
        .digits(2)
        .ok_or_else(|| err("expected a two-digit month"))?;
    if !c.eat(b'-') {
        return Err(err("expected '-' after the month"));
    }
    let day = c.digits(2).ok_or_else(|| err("expected a two-digit day"))?;
    if !(1..=12).contains(&month) {
        return Err(err("month out of range"));
    }
    let days_in_month = match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    if !(1..=days_in_month).contains(&day) {
        return Err(err("day out of range"));
    }
    let mut secs = (days_from_civil(year, month, day) * 86_400) as f64;
    if c.done() {
        return Ok(Timestamp(secs));
    }
    if !(c.eat(b'T') || c.eat(b't') || c.eat(b' ')) {
        return Err(err("expected 'T' between date and time"));
    }
    let hour = c
        .digits(2)
        .ok_or_else(|| err("expected a two-digit hour"))?;
    if !c.eat(b':') {
        return Err(err("expected ':' after the hour"));
    }
    let minute = c
        .digits(2)
        .ok_or_else(|| err("expected two-digit minutes"))?;
    let second = if c.eat(b':') {
        c.digits(2)
            .ok_or_else(|| err("expected two-digit seconds"))?
    } else {
        0
    };
    if hour > 23 || minute > 59 || second > 60 {
        return Err(err("time of day out of range"));
    }
    secs += (hour * 3600 + minute * 60 + second) as f64;
    if c.eat(b'.') || c.eat(b',') {
        let mut scale = 0.1;
        let mut any = false;
        while let Some(d @ b'0'..=b'9') = c.peek() {
            secs += f64::from(d - b'0') * scale;
            scale /= 10.0;
            c.pos += 1;
            any = true;
        }
        if !any {
            return Err(err("expected digits after the decimal point"));
        }
    }
    match c.peek() {
        None => {}
        Some(b'Z' | b'z') => c.pos += 1,
        Some(sign @ (b'+' | b'-')) => {
            c.pos += 1;
            let oh = c
                .digits(2)
                .ok_or_else(|| err("expected a two-digit offset hour"))?;
            c.eat(b':');
            let om = c.digits(2).unwrap_or(0);
            if oh > 23 || om > 59 {
                return Err(err("offset out of range"));
            }
            let offset = (oh * 3600 + om * 60) as f64;
            // Local time = UTC + offset, so UTC = local - offset.
            secs -= if sign == b'+' { offset } else { -offset };
        }
        Some(_) => return Err(err("unexpected characters after the time")),
    }
    if !c.done() {
        return Err(err("unexpected characters after the offset"));
    }
    Ok(Timestamp(secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_the_forms_roma_and_rfc3339_write() {
        let t = |s| Timestamp::parse_iso8601(s).unwrap().as_secs();
        assert_eq!(t("1970-01-01"), 0.0);
        assert_eq!(t("1970-01-01T00:00:01Z"), 1.0);
        assert_eq!(t("2000-03-01T00:00:00"), 951_868_800.0);
        assert_eq!(t("2025-09-19T12:00:00.5"), 1_758_283_200.5);
        assert_eq!(t("2025-09-19 12:00:00.5+00:00"), 1_758_283_200.5);
        assert_eq!(t("2025-09-19T14:00:00+02:00"), 1_758_283_200.0);
        assert_eq!(t("2025-09-19T10:30:00-01:30"), 1_758_283_200.0);
    }

    #[test]
    fn rejects_malformed_dates_with_a_reason() {
        for bad in [
            "",
            "2025",
            "2025-13-01",
            "2025-02-30",
            "2025-01-01X",
            "2025-01-01T25:00",
        ] {
            let err = Timestamp::parse_iso8601(bad).unwrap_err();
            assert!(err.to_string().contains("invalid timestamp"), "{err}");
        }
        assert!(Timestamp::parse_iso8601("2024-02-29").is_ok());
        assert!(Timestamp::parse_iso8601("2023-02-29").is_err());
    }

    #[test]
    fn serialises_as_a_number_and_reads_numbers_or_strings() {
        let ts: Timestamp = serde_json::from_str("1700000000.25").unwrap();
        assert_eq!(serde_json::to_string(&ts).unwrap(), "1700000000.25");
        let ts: Timestamp = serde_json::from_str("\"1970-01-02T00:00:00Z\"").unwrap();
        assert_eq!(ts.as_secs(), 86_400.0);
        let ts: Timestamp = serde_json::from_str("5").unwrap();
        assert_eq!(ts.as_secs(), 5.0);
        assert!(serde_json::from_str::<Timestamp>("\"yesterday\"").is_err());
        assert!(serde_json::from_str::<Timestamp>("null").is_err());
    }

    #[test]
    fn formats_rfc3339() {
        assert_eq!(
            Timestamp(1_758_283_200.5).to_rfc3339(),
            "2025-09-19T12:00:00.500Z"
        );
        assert_eq!(Timestamp(-1.0).to_rfc3339(), "1969-12-31T23:59:59.000Z");
    }

    proptest! {
        #[test]
        fn any_finite_timestamp_survives_json_exactly(secs in -1e12f64..1e12f64) {
            let ts = Timestamp::from_secs(secs).unwrap();
            let back: Timestamp = serde_json::from_str(&serde_json::to_string(&ts).unwrap()).unwrap();
            prop_assert_eq!(back, ts);
        }

        #[test]
        fn formatting_then_parsing_round_trips_to_the_millisecond(millis in -62_000_000_000_000i64..253_000_000_000_000i64) {
            let ts = Timestamp(millis as f64 / 1000.0);
            let back = Timestamp::parse_iso8601(&ts.to_rfc3339()).unwrap();
            prop_assert!((back.as_secs() - ts.as_secs()).abs() < 0.0015, "{} vs {}", back.as_secs(), ts.as_secs());
        }
    }
}
