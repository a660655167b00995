//! Time on the wire and on the wall: RFC 3339 UTC in JSON, milliseconds in the engine.
//!
//! The engine never reads a clock; the sequencer reads the wall clock here and stamps each
//! command with it. Times far outside the calendar (an engine `TimeMs` saturated to
//! `i64::MAX`) are clamped to the last representable instant instead of failing.

use matching_engine::TimeMs;
use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};
use std::time::{SystemTime, UNIX_EPOCH};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> TimeMs {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis().min(i64::MAX as u128) as i64)
        .unwrap_or(0);
    TimeMs(ms)
}

/// The calendar instant of an engine time, clamped to years 0001..=9999.
pub fn to_datetime(at: TimeMs) -> OffsetDateTime {
    let min = time::macros::datetime!(0001-01-01 0:00 UTC);
    let max = time::macros::datetime!(9999-12-31 23:59:59.999 UTC);
    let nanos = i128::from(at.0) * 1_000_000;
    match OffsetDateTime::from_unix_timestamp_nanos(nanos) {
        Ok(dt) => dt.clamp(min, max),
        Err(_) if at.0 < 0 => min,
        Err(_) => max,
    }
}

/// The engine time of a calendar instant, truncated to whole milliseconds.
pub fn from_datetime(at: OffsetDateTime) -> TimeMs {
    let ms = at.unix_timestamp_nanos().div_euclid(1_000_000);
    TimeMs(ms.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64)
}

/// The length of [`format_rfc3339`]'s text: `YYYY-MM-DDTHH:MM:SS.mmmZ`.
const RFC3339_MILLIS_LEN: usize = 24;

/// Formats an engine time as RFC 3339 UTC, e.g. `2025-01-02T03:04:05.678Z`.
pub fn format_rfc3339(at: TimeMs) -> String {
    let mut text = [0; RFC3339_MILLIS_LEN];
    write_rfc3339(at, &mut text).to_owned()
}

/// RFC 3339 in UTC with exactly three fractional digits: fixed width, sorts as text (years are
/// clamped to 0001..=9999). Written digit by digit: every JSON answer carries a few, and the
/// general formatter was about 5% of the server's CPU under order entry.
fn write_rfc3339(at: TimeMs, text: &mut [u8; RFC3339_MILLIS_LEN]) -> &str {
    let at = to_datetime(at);
    let fields = [
        (at.year() as u32, 4, b'-'),
        (u32::from(u8::from(at.month())), 2, b'-'),
        (u32::from(at.day()), 2, b'T'),
        (u32::from(at.hour()), 2, b':'),
        (u32::from(at.minute()), 2, b':'),
        (u32::from(at.second()), 2, b'.'),
        (u32::from(at.millisecond()), 3, b'Z'),
    ];
    let mut end = 0;
    for (value, width, separator) in fields {
        let mut rest = value;
        for digit in text[end..end + width].iter_mut().rev() {
            *digit = b'0' + (rest % 10) as u8;
            rest /= 10;
        }
        text[end + width] = separator;
        end += width + 1;
    }
    std::str::from_utf8(&text[..end]).unwrap_or("9999-12-31T23:59:59.999Z")
}

/// Parses an RFC 3339 timestamp (any offset) into an engine time.
pub fn parse_rfc3339(text: &str) -> Result<TimeMs, String> {
    OffsetDateTime::parse(text, &Rfc3339)
        .map(from_datetime)
        .map_err(|_| format!("{text:?} is not an RFC 3339 timestamp such as 2025-01-02T03:04:05Z"))
}

/// A timestamp in JSON: RFC 3339 text both ways.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Rfc3339Time(pub TimeMs);

impl Serialize for Rfc3339Time {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut text = [0; RFC3339_MILLIS_LEN];
        serializer.serialize_str(write_rfc3339(self.0, &mut text))
    }
}

impl<'de> Deserialize<'de> for Rfc3339Time {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        parse_rfc3339(&text)
            .map(Rfc3339Time)
            .map_err(de::Error::custom)
    }
}

impl From<TimeMs> for Rfc3339Time {
    fn from(at: TimeMs) -> Self {
        Rfc3339Time(at)
    }
}

/// The OpenAPI schema of a timestamp: an RFC 3339 string.
impl utoipa::PartialSchema for Rfc3339Time {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
            .description(Some(
                "RFC 3339; sent in UTC with milliseconds, accepted with any offset",
            ))
            .examples([serde_json::json!("2025-01-02T03:04:05.678Z")])
            .into()
    }
}

impl utoipa::ToSchema for Rfc3339Time {
    fn name() -> std::borrow::Cow<'static, str> {
        "Timestamp".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_milliseconds() {
        let at = TimeMs(1_735_787_045_678);
        let text = format_rfc3339(at);
        assert_eq!(text, "2025-01-02T03:04:05.678Z");
        assert_eq!(parse_rfc3339(&text), Ok(at));
        assert_eq!(parse_rfc3339("2025-01-02T04:04:05.678+01:00"), Ok(at));
    }

    #[test]
    fn writes_what_the_general_formatter_writes() {
        let general = time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
        );
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut times = vec![
            i64::MIN,
            -62_135_596_800_000,
            -1,
            0,
            1,
            999,
            253_402_300_799_999,
            i64::MAX,
        ];
        for _ in 0..10_000 {
            // xorshift: any instant from year 0001 to 9999.
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            times.push((seed % 316_000_000_000_000) as i64 - 62_135_596_800_000);
        }
        for at in times {
            let expected = to_datetime(TimeMs(at)).format(&general).unwrap();
            assert_eq!(format_rfc3339(TimeMs(at)), expected, "at {at}");
        }
    }

    #[test]
    fn clamps_times_outside_the_calendar() {
        assert!(format_rfc3339(TimeMs(i64::MAX)).starts_with("9999-12-31T23:59:59"));
        assert!(format_rfc3339(TimeMs(i64::MIN)).starts_with("0001-01-01T00:00:00"));
    }

    #[test]
    fn refuses_non_rfc3339_text() {
        assert!(parse_rfc3339("2025-01-02").is_err());
        assert!(parse_rfc3339("1735787045").is_err());
    }

    #[test]
    fn always_prints_three_fractional_digits() {
        assert_eq!(
            format_rfc3339(TimeMs(1_735_787_045_000)),
            "2025-01-02T03:04:05.000Z"
        );
        assert_eq!(
            format_rfc3339(TimeMs(1_735_787_045_300)),
            "2025-01-02T03:04:05.300Z"
        );
    }
}
