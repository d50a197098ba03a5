//! Civil dates (UTC) for periods and legal deadlines.

pub use vigie_energy::calendar::Date;
/// RFC 3339, UTC, seconds: the documents' shape (one calendar, [`vigie_energy::calendar`]).
pub use vigie_energy::calendar::rfc3339_seconds as rfc3339;

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
    vigie_energy::calendar::parse_time(s)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use vigie_energy::calendar::DAY_MS;

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
