//! Time as keyward sees it: UTC instants with millisecond precision, and an injectable clock.
//!
//! Every instant is truncated to whole milliseconds when it is made. The API prints milliseconds,
//! SQLite stores them, and Postgres would keep microseconds: truncating once, here, makes a value
//! read back from either store equal to the one written.

use std::fmt;

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A UTC instant, whole milliseconds since the Unix epoch (always within chrono's range), so
/// comparing and reading it on the verification path is integer work.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The instant `ms` milliseconds after the Unix epoch; `None` when out of chrono's range.
    pub fn from_millis(ms: i64) -> Option<Self> {
        // ±10^15 ms is about ±31,700 years, well inside chrono's ±262,000: no calendar check.
        if ms.unsigned_abs() < 1_000_000_000_000_000 {
            return Some(Timestamp(ms));
        }
        Utc.timestamp_millis_opt(ms).single().map(|_| Timestamp(ms))
    }

    pub fn from_datetime(dt: DateTime<Utc>) -> Self {
        // In range by construction: `dt` came from chrono, and truncation only moves it inwards.
        Timestamp(dt.timestamp_millis())
    }

    /// Parses RFC 3339 (any offset, any fraction), as clients send it.
    pub fn parse(s: &str) -> Option<Self> {
        DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|d| Self::from_datetime(d.with_timezone(&Utc)))
    }

    pub fn millis(self) -> i64 {
        self.0
    }

    pub fn as_datetime(self) -> DateTime<Utc> {
        // Always in range (see the type); the default is unreachable.
        DateTime::from_timestamp_millis(self.0).unwrap_or_default()
    }

    /// `self + seconds`, saturating at the ends of the years RFC 3339 can write (0000 to 9999),
    /// so an instant keyward computes — a revocation a billion years ahead — still prints as an
    /// RFC 3339 date (it becomes 9999-12-31T23:59:59.999Z).
    pub fn plus_seconds(self, seconds: i64) -> Self {
        const FIRST: i64 = -62_167_219_200_000; // 0000-01-01T00:00:00.000Z
        const LAST: i64 = 253_402_300_799_999; // 9999-12-31T23:59:59.999Z
        let ms = self.millis().saturating_add(seconds.saturating_mul(1000));
        Timestamp(ms.clamp(FIRST.min(self.0), LAST.max(self.0)))
    }
}

impl fmt::Display for Timestamp {
    /// `2024-01-01T00:00:00.000Z`, the form Medusa prints. Written digit by digit for years
    /// 1970 to 9999 (every answer prints a few of these); chrono's form for any other.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const YEAR_10000: i64 = 253_402_300_800_000;
        if !(0..YEAR_10000).contains(&self.0) {
            return f.write_str(&self.as_datetime().to_rfc3339_opts(SecondsFormat::Millis, true));
        }
        let (days, ms_of_day) = (self.0 / 86_400_000, self.0 % 86_400_000);
        let (year, month, day) = civil_from_days(days);
        let mut out = *b"0000-00-00T00:00:00.000Z";
        let mut put = |at: usize, width: usize, mut value: i64| {
            for i in (at..at + width).rev() {
                out[i] = b'0' + (value % 10) as u8;
                value /= 10;
            }
        };
        put(0, 4, year);
        put(5, 2, month);
        put(8, 2, day);
        put(11, 2, ms_of_day / 3_600_000);
        put(14, 2, ms_of_day / 60_000 % 60);
        put(17, 2, ms_of_day / 1000 % 60);
        put(20, 3, ms_of_day % 1000);
        f.write_str(std::str::from_utf8(&out).map_err(|_| fmt::Error)?)
    }
}

/// The proleptic Gregorian (year, month, day) of a day count since 1970-01-01, for days ≥ 0
/// (the era arithmetic of the well-known days-to-civil algorithm, restricted to that range).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    /// RFC 3339, and also the signed, wider years [`Timestamp`]'s `Display` writes outside 0000
    /// to 9999 (RFC 3339 has no form for them), so every instant survives a round trip through
    /// JSON — a workflow's recorded plan among them.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Timestamp::parse(&s)
            .or_else(|| s.parse::<DateTime<Utc>>().ok().map(Self::from_datetime))
            .ok_or_else(|| serde::de::Error::custom("expected an RFC 3339 date"))
    }
}

/// Where "now" comes from: the engine's clock, one for the module and its workflows.
/// Operations read it once and pass it down, so tests can fix it ([`ManualClock`]).
pub use keyward_flow::{Clock, ManualClock, SystemClock};

/// The clock read as instants.
pub trait ClockExt: Clock {
    /// Now.
    fn now(&self) -> Timestamp {
        at_millis(self.now_millis())
    }

    /// "Now" to within a few milliseconds, never ahead of [`ClockExt::now`]: for what tolerates
    /// that (the age of a cache entry, a key's last use). Decisions at an instant (a revocation
    /// taking effect) use [`ClockExt::now`]; verification skips that read only for instants more
    /// than a second past this one.
    fn coarse_now(&self) -> Timestamp {
        at_millis(self.coarse_now_millis())
    }
}

impl<C: Clock + ?Sized> ClockExt for C {}

/// The instant `ms` milliseconds after the epoch (a clock's reading is always in range; one
/// that is not reads as the system's now).
fn at_millis(ms: i64) -> Timestamp {
    Timestamp::from_millis(ms).unwrap_or_else(|| Timestamp::from_datetime(Utc::now()))
}

/// A manual clock set and moved by instants, for tests.
pub trait ManualClockExt {
    /// A clock reading `at`.
    fn at(at: Timestamp) -> Self;
    /// Sets the clock to `at` (backwards too).
    fn set_to(&self, at: Timestamp);
    /// Moves the clock by `seconds` (backwards when negative).
    fn advance_seconds(&self, seconds: i64);
}

impl ManualClockExt for ManualClock {
    fn at(at: Timestamp) -> Self {
        ManualClock::new(at.millis())
    }

    fn set_to(&self, at: Timestamp) {
        self.set(at.millis());
    }

    fn advance_seconds(&self, seconds: i64) {
        self.set(self.now_millis().saturating_add(seconds.saturating_mul(1000)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn the_digit_writer_prints_what_chrono_prints(ms in -100_000_000_000_000i64..300_000_000_000_000) {
            let t = Timestamp::from_millis(ms).unwrap();
            proptest::prop_assert_eq!(t.to_string(), t.as_datetime().to_rfc3339_opts(SecondsFormat::Millis, true));
        }
    }

    #[test]
    fn arithmetic_saturates_at_the_years_rfc_3339_can_write() {
        let now = Timestamp::from_millis(1_700_000_000_000).unwrap();
        assert_eq!(now.plus_seconds(i64::MAX).to_string(), "9999-12-31T23:59:59.999Z");
        assert_eq!(
            now.plus_seconds(266_573_645_177).to_string(),
            "9999-12-31T23:59:59.999Z"
        );
        assert_eq!(now.plus_seconds(i64::MIN).to_string(), "0000-01-01T00:00:00.000Z");
        assert_eq!(now.plus_seconds(60).millis(), 1_700_000_060_000);
    }

    #[test]
    fn every_instant_survives_a_round_trip_through_json() {
        for ms in [
            -62_135_596_800_001,
            -1,
            0,
            253_402_300_799_999,
            253_402_300_800_000,
            7_000_000_000_000_000,
        ] {
            let t = Timestamp::from_millis(ms).unwrap();
            let back: Timestamp = serde_json::from_value(serde_json::to_value(t).unwrap()).unwrap();
            assert_eq!(back, t, "{t}");
        }
    }

    #[test]
    fn the_digit_writer_is_right_at_the_edges() {
        for ms in [
            0,
            1,
            86_399_999,
            86_400_000,
            951_782_400_000,
            4_107_542_399_999,
            253_402_300_799_999,
        ] {
            let t = Timestamp::from_millis(ms).unwrap();
            assert_eq!(
                t.to_string(),
                t.as_datetime().to_rfc3339_opts(SecondsFormat::Millis, true),
                "{ms}"
            );
        }
    }

    #[test]
    fn timestamps_print_with_milliseconds_and_z() {
        let t = Timestamp::parse("2024-01-01T01:00:00.123456+01:00").unwrap();
        assert_eq!(t.to_string(), "2024-01-01T00:00:00.123Z");
        assert_eq!(Timestamp::from_millis(t.millis()), Some(t));
    }

    #[test]
    fn adding_seconds_saturates_instead_of_overflowing() {
        let t = Timestamp::parse("2024-01-01T00:00:00Z").unwrap();
        assert_eq!(t.plus_seconds(3600).to_string(), "2024-01-01T01:00:00.000Z");
        assert_eq!(
            t.plus_seconds(i64::MAX).to_string(),
            "9999-12-31T23:59:59.999Z",
            "never back to now"
        );
    }
}
