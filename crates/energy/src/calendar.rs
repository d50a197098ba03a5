//! The one civil calendar: proleptic Gregorian dates, UTC, and Unix
//! milliseconds, with the RFC 3339 shapes vigie writes.
//!
//! Every date computation of the collector goes through here (grid
//! series, reporting periods, legal deadlines, instrument years, API
//! timestamps), so there is one day-number algorithm (H. Hinnant's
//! `days_from_civil` and its inverse) and one formatter per precision.
//! Pure: time is an argument, nothing reads a clock.
//!
//! ```
//! use vigie_energy::calendar::{self, Date};
//! let d = Date::parse("2024-02-29").unwrap();
//! assert_eq!(d.start_ms(), 1_709_164_800_000);
//! assert_eq!(calendar::rfc3339_seconds(d.start_ms() + 1_500), "2024-02-29T00:00:01Z");
//! assert_eq!(calendar::rfc3339_millis(d.start_ms() + 1_500), "2024-02-29T00:00:01.500Z");
//! ```

use std::fmt;

use crate::{HOUR_MS, MINUTE_MS};

/// Milliseconds in a day.
pub const DAY_MS: i64 = 24 * HOUR_MS;

/// Whether `year` has a 29 February.
pub fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

/// Days in `month` (1 to 12) of `year`; `None` for a month out of range.
pub fn days_in_month(year: i64, month: u32) -> Option<u32> {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => Some(31),
        4 | 6 | 9 | 11 => Some(30),
        2 if is_leap(year) => Some(29),
        2 => Some(28),
        _ => None,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
/// `days_from_civil`).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let (m, d) = (i64::from(month), i64::from(day));
    let y = if m <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day number (inverse of [`days_from_civil`]).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    // Both are small and positive by construction (1..=31, 1..=12).
    (year, month as u32, day as u32)
}

/// Milliseconds of 00:00 UTC on the given date.
pub fn utc_midnight_ms(year: i64, month: u32, day: u32) -> i64 {
    days_from_civil(year, month, day) * DAY_MS
}

/// Milliseconds of 1 January 00:00 UTC of `year`.
pub fn year_start_ms(year: i64) -> i64 {
    utc_midnight_ms(year, 1, 1)
}

/// Splits `ms` into (year, month, day, milliseconds into the day), UTC.
pub fn split_utc(ms: i64) -> (i64, u32, u32, i64) {
    let (y, m, d) = civil_from_days(ms.div_euclid(DAY_MS));
    (y, m, d, ms.rem_euclid(DAY_MS))
}

/// The year (UTC) of an instant.
pub fn utc_year(ms: i64) -> i64 {
    split_utc(ms).0
}

/// A calendar date, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Date {
    /// Year.
    pub y: i64,
    /// Month, 1 to 12.
    pub m: u32,
    /// Day, 1 to 31.
    pub d: u32,
}

impl Date {
    /// A date, if it exists.
    pub fn new(y: i64, m: u32, d: u32) -> Option<Date> {
        let len = days_in_month(y, m)?;
        (1..=len).contains(&d).then_some(Date { y, m, d })
    }

    /// `YYYY-MM-DD`.
    pub fn parse(s: &str) -> Option<Date> {
        let mut it = s.trim().splitn(3, '-');
        let y = it.next()?;
        let (m, d) = (it.next()?, it.next()?);
        if y.len() != 4 || m.len() != 2 || d.len() != 2 {
            return None;
        }
        Date::new(y.parse().ok()?, m.parse().ok()?, d.parse().ok()?)
    }

    /// Days since 1970-01-01.
    pub fn days(self) -> i64 {
        days_from_civil(self.y, self.m, self.d)
    }

    /// Midnight UTC starting this date, Unix ms.
    pub fn start_ms(self) -> i64 {
        self.days() * DAY_MS
    }

    /// The date holding instant `ms`.
    pub fn from_ms(ms: i64) -> Date {
        let (y, m, d, _) = split_utc(ms);
        Date { y, m, d }
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.y, self.m, self.d)
    }
}

/// Hours, minutes, seconds and milliseconds of an instant's day.
fn clock(in_day: i64) -> (i64, i64, i64, i64) {
    let (h, rest) = (in_day / HOUR_MS, in_day % HOUR_MS);
    let (min, rest) = (rest / MINUTE_MS, rest % MINUTE_MS);
    (h, min, rest / 1000, rest % 1000)
}

/// RFC 3339, UTC, whole seconds (milliseconds dropped):
/// `2024-01-01T01:02:03Z`. The documents' shape (exports, dossier).
pub fn rfc3339_seconds(ms: i64) -> String {
    let (y, m, d, in_day) = split_utc(ms);
    let (h, min, s, _) = clock(in_day);
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:{s:02}Z")
}

/// RFC 3339, UTC, always with milliseconds: `2024-01-01T01:02:03.000Z`.
/// The HTTP API's shape. An instant before 1970 is written as the epoch
/// (the API's times are never earlier).
pub fn rfc3339_millis(ms: i64) -> String {
    let (y, m, d, in_day) = split_utc(ms.max(0));
    let (h, min, s, milli) = clock(in_day);
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:{s:02}.{milli:03}Z")
}

/// RFC 3339, UTC, with `.mmm` only when the milliseconds are not zero:
/// `2021-12-01T00:00:00Z`. The shape the grid providers' queries take.
pub fn rfc3339_trimmed(ms: i64) -> String {
    let (y, m, d, in_day) = split_utc(ms);
    let (h, min, s, milli) = clock(in_day);
    if milli == 0 {
        format!("{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:{s:02}Z")
    } else {
        format!("{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:{s:02}.{milli:03}Z")
    }
}

/// `2021-12-01T00:00Z` (seconds dropped), the shape the Carbon Intensity
/// API takes in its paths.
pub fn rfc3339_minutes(ms: i64) -> String {
    let (y, m, d, in_day) = split_utc(ms);
    let (h, min, _, _) = clock(in_day);
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{min:02}Z")
}

/// Latest instant [`parse_time`] accepts: 9999-12-31T23:59:59.999Z, far
/// from `i64`'s ends, so no caller's arithmetic overflows.
pub const MAX_TIME_MS: i64 = 253_402_300_799_999;

/// An instant as the API and the command line take it: Unix milliseconds
/// or RFC 3339 (`2026-11-23T12:00:00Z`, humantime's weak form), from 1970
/// to [`MAX_TIME_MS`]; `None` otherwise.
pub fn parse_time(v: &str) -> Option<i64> {
    let ms = match v.parse::<i64>() {
        Ok(ms) => Some(ms),
        Err(_) => humantime::parse_rfc3339_weak(v)
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .and_then(|d| i64::try_from(d.as_millis()).ok()),
    };
    ms.filter(|ms| (0..=MAX_TIME_MS).contains(ms))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_days() {
        for (s, days) in [
            ("1970-01-01", 0),
            ("1971-01-01", 365),
            ("2000-02-29", 11_016),
            ("2024-01-01", 19_723),
            ("1969-12-31", -1),
        ] {
            let d = Date::parse(s).unwrap();
            assert_eq!(d.days(), days, "{s}");
            assert_eq!(d.to_string(), s);
        }
        assert_eq!(year_start_ms(2024), 19_723 * DAY_MS);
        for bad in ["2023-02-29", "2024-13-01", "2024-00-10", "24-01-01", "x"] {
            assert_eq!(Date::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn times_as_the_api_takes_them() {
        assert_eq!(parse_time("1704067200000"), Some(19_723 * DAY_MS));
        assert_eq!(parse_time("2024-01-01T00:00:00Z"), Some(19_723 * DAY_MS));
        assert_eq!(
            parse_time("2024-01-01T00:00:01.5Z"),
            Some(19_723 * DAY_MS + 1_500)
        );
        assert_eq!(parse_time("-1"), None);
        assert_eq!(parse_time("253402300800000"), None);
        assert_eq!(parse_time("yesterday"), None);
    }

    #[test]
    fn the_precisions() {
        let t = 19_723 * DAY_MS + 3_723_045;
        assert_eq!(rfc3339_seconds(t), "2024-01-01T01:02:03Z");
        assert_eq!(rfc3339_millis(t), "2024-01-01T01:02:03.045Z");
        assert_eq!(rfc3339_trimmed(t), "2024-01-01T01:02:03.045Z");
        assert_eq!(rfc3339_trimmed(t - 45), "2024-01-01T01:02:03Z");
        assert_eq!(rfc3339_minutes(t), "2024-01-01T01:02Z");
        assert_eq!(rfc3339_trimmed(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(rfc3339_seconds(-1), "1969-12-31T23:59:59Z");
        assert_eq!(rfc3339_millis(-1), "1970-01-01T00:00:00.000Z");
    }

    proptest! {
        #[test]
        fn days_round_trip(days in -1_000_000i64..3_000_000) {
            let (y, m, d) = civil_from_days(days);
            prop_assert!(Date::new(y, m, d).is_some());
            prop_assert_eq!(days_from_civil(y, m, d), days);
        }

        #[test]
        fn leap_years_by_day_count(y in -3_000i64..12_000) {
            let len = days_from_civil(y + 1, 1, 1) - days_from_civil(y, 1, 1);
            prop_assert_eq!(len, if is_leap(y) { 366 } else { 365 });
        }

        /// The API's shape is humantime's millisecond RFC 3339, which it was.
        #[test]
        fn millis_as_humantime(ms in 0i64..253_402_300_800_000) {
            let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms as u64);
            prop_assert_eq!(
                rfc3339_millis(ms),
                humantime::format_rfc3339_millis(t).to_string()
            );
        }
    }
}
