//! Civil dates (UTC) for periods and legal deadlines.

use std::fmt;

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

const DAY_MS: i64 = 86_400_000;

impl Date {
    /// A date, if it exists.
    pub fn new(y: i64, m: u32, d: u32) -> Option<Date> {
        let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        let len = match m {
            1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
            4 | 6 | 9 | 11 => 30,
            2 if leap => 29,
            2 => 28,
            _ => return None,
        };
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

    /// Days since 1970-01-01 (Howard Hinnant's algorithm).
    pub fn days(self) -> i64 {
        let (m, d) = (i64::from(self.m), i64::from(self.d));
        let y = if m <= 2 { self.y - 1 } else { self.y };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    }

    /// Midnight UTC starting this date, Unix ms.
    pub fn start_ms(self) -> i64 {
        self.days() * DAY_MS
    }

    /// The date holding instant `ms`.
    pub fn from_ms(ms: i64) -> Date {
        let z = ms.div_euclid(DAY_MS) + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let y = yoe + era * 400 + i64::from(m <= 2);
        Date { y, m, d }
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.y, self.m, self.d)
    }
}

/// The previous calendar year before instant `now_ms`: `[from, to)` in ms.
pub fn previous_year(now_ms: i64) -> (i64, i64) {
    let y = Date::from_ms(now_ms).y;
    (
        Date {
            y: y - 1,
            m: 1,
            d: 1,
        }
        .start_ms(),
        Date { y, m: 1, d: 1 }.start_ms(),
    )
}

/// A reporting period `[from, to)` from optional bounds (see
/// [`parse_bound`]); the previous calendar year before `now_ms` by default.
pub fn period(from: Option<&str>, to: Option<&str>, now_ms: i64) -> Result<(i64, i64), String> {
    let (df, dt) = previous_year(now_ms);
    let bound = |name: &str, v: Option<&str>, d: i64| -> Result<i64, String> {
        v.map_or(Ok(d), |v| {
            parse_bound(v).ok_or_else(|| {
                format!("{name}: expected YYYY-MM-DD, RFC 3339 or Unix milliseconds, got {v:?}")
            })
        })
    };
    let (from_ms, to_ms) = (bound("from", from, df)?, bound("to", to, dt)?);
    if to_ms <= from_ms {
        return Err("to must come after from".into());
    }
    Ok((from_ms, to_ms))
}

/// A period bound: `YYYY-MM-DD` (midnight UTC), RFC 3339, or Unix ms.
pub fn parse_bound(s: &str) -> Option<i64> {
    if let Some(d) = Date::parse(s) {
        return Some(d.start_ms());
    }
    crate::api::parse_time_str(s)
}

/// RFC 3339, UTC, seconds.
pub fn rfc3339(ms: i64) -> String {
    let d = Date::from_ms(ms);
    let s = ms.rem_euclid(DAY_MS) / 1000;
    format!("{d}T{:02}:{:02}:{:02}Z", s / 3600, s / 60 % 60, s % 60)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip_and_parse() {
        for (s, days) in [
            ("1970-01-01", 0),
            ("2024-01-01", 19_723),
            ("2000-02-29", 11_016),
        ] {
            let d = Date::parse(s).unwrap();
            assert_eq!(d.days(), days, "{s}");
            assert_eq!(Date::from_ms(d.start_ms() + 5), d);
            assert_eq!(d.to_string(), s);
        }
        for bad in ["2023-02-29", "2024-13-01", "24-01-01", "2024-1-1", "x"] {
            assert_eq!(Date::parse(bad), None, "{bad}");
        }
        assert_eq!(rfc3339(19_723 * DAY_MS + 3_723_000), "2024-01-01T01:02:03Z");
    }

    #[test]
    fn the_default_period_is_the_previous_calendar_year() {
        let mid_2025 = Date::parse("2025-06-15").unwrap().start_ms();
        let (f, t) = previous_year(mid_2025);
        assert_eq!(rfc3339(f), "2024-01-01T00:00:00Z");
        assert_eq!(rfc3339(t), "2025-01-01T00:00:00Z");
        assert_eq!(parse_bound("2024-01-01"), Some(f));
        assert_eq!(parse_bound("1704067200000"), Some(f));
    }
}
