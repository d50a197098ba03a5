//! Instants as Unix milliseconds: the timestamp shapes the sources write,
//! the shapes their query parameters want, French local time for eCO2mix
//! files without an offset, and the step of a series. Pure: no clock.

use std::collections::BTreeMap;
use vigie_energy::{HOUR_MS, MINUTE_MS};

pub use vigie_energy::calendar::DAY_MS;

/// Days in a month (1 to 12; 0 for any other) of the one calendar.
fn days_in_month(year: i64, month: u32) -> u32 {
    vigie_energy::calendar::days_in_month(year, month).unwrap_or(0)
}
/// The calendar functions, from the one calendar ([`vigie_energy::calendar`]).
pub use vigie_energy::calendar::{
    civil_from_days, days_from_civil, split_utc, utc_midnight_ms, utc_year,
};
/// Provider query shapes: `2021-12-01T00:00:00Z` (`.mmm` when not zero)
/// and `2021-12-01T00:00Z` (the Carbon Intensity API's paths).
pub use vigie_energy::calendar::{
    rfc3339_minutes as format_utc_minutes, rfc3339_trimmed as format_utc,
};

/// A timestamp that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad timestamp {text:?}: {why}")]
pub struct BadTimestamp {
    /// The text, shortened.
    pub text: String,
    /// What is wrong.
    pub why: &'static str,
}

/// A timestamp as written: local wall-clock milliseconds and the offset
/// east of UTC, when one is written.
struct Parts {
    local_ms: i64,
    offset_ms: Option<i64>,
}

struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn digits(&mut self, n: usize) -> Option<i64> {
        let bytes = self.s.get(self.i..self.i + n)?;
        let mut v = 0i64;
        for b in bytes {
            if !b.is_ascii_digit() {
                return None;
            }
            v = v * 10 + i64::from(b - b'0');
        }
        self.i += n;
        Some(v)
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.s.get(self.i) == Some(&c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }
}

fn parse_parts(text: &str) -> Result<Parts, BadTimestamp> {
    let bad = |why| BadTimestamp {
        text: text.chars().take(40).collect(),
        why,
    };
    let mut c = Cursor {
        s: text.trim().as_bytes(),
        i: 0,
    };
    let year = c.digits(4).ok_or_else(|| bad("expected YYYY-MM-DD"))?;
    if !c.eat(b'-') {
        return Err(bad("expected YYYY-MM-DD"));
    }
    let month = c.digits(2).ok_or_else(|| bad("expected YYYY-MM-DD"))?;
    if !c.eat(b'-') {
        return Err(bad("expected YYYY-MM-DD"));
    }
    let day = c.digits(2).ok_or_else(|| bad("expected YYYY-MM-DD"))?;
    if !(1..=12).contains(&month) {
        return Err(bad("month out of range"));
    }
    // In range 1..=12 after the check above.
    let month = month as u32;
    if day < 1 || day > i64::from(days_in_month(year, month)) {
        return Err(bad("day out of range"));
    }
    if !(c.eat(b'T') || c.eat(b't') || c.eat(b' ')) {
        return Err(bad("expected a time after the date"));
    }
    let hour = c.digits(2).ok_or_else(|| bad("expected HH:MM"))?;
    if !c.eat(b':') {
        return Err(bad("expected HH:MM"));
    }
    let minute = c.digits(2).ok_or_else(|| bad("expected HH:MM"))?;
    let mut second = 0;
    let mut millis = 0;
    if c.eat(b':') {
        second = c.digits(2).ok_or_else(|| bad("expected seconds"))?;
        if c.eat(b'.') || c.eat(b',') {
            let mut scale = 100;
            let mut any = false;
            while let Some(b) = c.peek().filter(u8::is_ascii_digit) {
                millis += i64::from(b - b'0') * scale;
                scale /= 10;
                any = true;
                c.i += 1;
            }
            if !any {
                return Err(bad("expected digits after the decimal point"));
            }
        }
    }
    if hour > 23 || minute > 59 || second > 59 {
        return Err(bad("time of day out of range"));
    }
    let offset_ms = match c.peek() {
        None => None,
        Some(b'Z' | b'z') => {
            c.i += 1;
            Some(0)
        }
        Some(sign @ (b'+' | b'-')) => {
            c.i += 1;
            let h = c
                .digits(2)
                .ok_or_else(|| bad("expected an offset +HH:MM"))?;
            let m = if c.eat(b':') {
                c.digits(2)
                    .ok_or_else(|| bad("expected an offset +HH:MM"))?
            } else {
                c.digits(2).unwrap_or(0)
            };
            if h > 23 || m > 59 {
                return Err(bad("offset out of range"));
            }
            let off = h * HOUR_MS + m * MINUTE_MS;
            Some(if sign == b'-' { -off } else { off })
        }
        Some(_) => return Err(bad("unexpected text after the time")),
    };
    if c.i != c.s.len() {
        return Err(bad("unexpected text after the offset"));
    }
    let local_ms = utc_midnight_ms(year, month, day as u32)
        + hour * HOUR_MS
        + minute * MINUTE_MS
        + second * 1000
        + millis;
    Ok(Parts {
        local_ms,
        offset_ms,
    })
}

/// Reads an RFC 3339 / ISO 8601 instant with its offset:
/// `2021-12-01T00:00:00+01:00`, `2023-03-13T12:00Z`,
/// `2019-05-21T00:00:00.000Z`, `2022-07-15T00:00:00+00:00`. Seconds and
/// fractions are optional; fractions beyond milliseconds are truncated.
pub fn parse_instant(text: &str) -> Result<i64, BadTimestamp> {
    let p = parse_parts(text)?;
    match p.offset_ms {
        Some(off) => Ok(p.local_ms - off),
        None => Err(BadTimestamp {
            text: text.chars().take(40).collect(),
            why: "no UTC offset",
        }),
    }
}

/// Like [`parse_instant`], but a timestamp without an offset is taken as
/// UTC (columns labelled UTC, such as `Datetime (UTC)`: `2024-01-01 00:00:00`).
pub fn parse_utc(text: &str) -> Result<i64, BadTimestamp> {
    let p = parse_parts(text)?;
    Ok(p.local_ms - p.offset_ms.unwrap_or(0))
}

/// Like [`parse_instant`], but also returns the local wall-clock time when
/// no offset is written, for the caller to place in a time zone.
pub(crate) fn parse_local_or_instant(text: &str) -> Result<LocalOrInstant, BadTimestamp> {
    let p = parse_parts(text)?;
    Ok(match p.offset_ms {
        Some(off) => LocalOrInstant::Instant(p.local_ms - off),
        None => LocalOrInstant::Local(p.local_ms),
    })
}

/// See [`parse_local_or_instant`].
pub(crate) enum LocalOrInstant {
    /// An offset was written: the instant.
    Instant(i64),
    /// No offset: wall-clock milliseconds as if UTC.
    Local(i64),
}

/// Start (01:00 UTC) of EU summer time in `year`: the last Sunday of March.
fn eu_summer_start_ms(year: i64) -> i64 {
    last_sunday_1am_utc(year, 3)
}

/// End (01:00 UTC) of EU summer time in `year`: the last Sunday of October.
fn eu_summer_end_ms(year: i64) -> i64 {
    last_sunday_1am_utc(year, 10)
}

fn last_sunday_1am_utc(year: i64, month: u32) -> i64 {
    let last = days_from_civil(year, month, 31);
    // 1970-01-01 was a Thursday: weekday 0 = Monday.
    let weekday = (last + 3).rem_euclid(7);
    let sunday = last - (weekday + 1) % 7;
    sunday * DAY_MS + HOUR_MS
}

/// Offset of French legal time (Europe/Paris, EU rules since 1996) at an
/// instant: +1 h in winter, +2 h in summer.
pub fn paris_offset_ms(utc_ms: i64) -> i64 {
    let year = utc_year(utc_ms);
    if (eu_summer_start_ms(year)..eu_summer_end_ms(year)).contains(&utc_ms) {
        2 * HOUR_MS
    } else {
        HOUR_MS
    }
}

/// A French wall-clock time placed on the time line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParisLocal {
    /// One instant.
    Single(i64),
    /// The hour repeated when summer time ends: the first (summer) and
    /// second (winter) instants.
    Ambiguous(i64, i64),
    /// The hour skipped when summer time starts.
    Skipped,
}

/// The instant(s) of French wall-clock time `local_ms` (milliseconds as
/// if the wall clock were UTC).
pub fn paris_local_to_utc(local_ms: i64) -> ParisLocal {
    let summer = local_ms - 2 * HOUR_MS;
    let winter = local_ms - HOUR_MS;
    let summer_ok = paris_offset_ms(summer) == 2 * HOUR_MS;
    let winter_ok = paris_offset_ms(winter) == HOUR_MS;
    match (summer_ok, winter_ok) {
        (true, true) => ParisLocal::Ambiguous(summer, winter),
        (true, false) => ParisLocal::Single(summer),
        (false, true) => ParisLocal::Single(winter),
        (false, false) => ParisLocal::Skipped,
    }
}

/// How long each value of a series lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// A fixed number of milliseconds.
    Fixed(i64),
    /// A calendar month (UTC).
    Month,
    /// A calendar year (UTC).
    Year,
}

impl Step {
    /// End of the span starting at `start_ms`.
    pub fn end(self, start_ms: i64) -> i64 {
        match self {
            Step::Fixed(ms) => start_ms + ms,
            Step::Month => {
                let (y, m, d, in_day) = split_utc(start_ms);
                let (y, m) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                utc_midnight_ms(y, m, d.min(days_in_month(y, m))) + in_day
            }
            Step::Year => {
                let (y, m, d, in_day) = split_utc(start_ms);
                utc_midnight_ms(y + 1, m, d.min(days_in_month(y + 1, m))) + in_day
            }
        }
    }
}

/// The step of a series from its starts (any order, duplicates ignored):
/// calendar months or years when every start is the first of a month
/// (January) at 00:00 UTC and they are at least 28 (365) days apart, else
/// the most common gap (the smallest of equally common ones), which a
/// missing value does not change. One start gives `fallback`.
pub fn infer_step(starts: &[i64], fallback: Step) -> Step {
    let mut sorted = starts.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    if sorted.len() < 2 {
        return fallback;
    }
    let mut gaps: BTreeMap<i64, usize> = BTreeMap::new();
    for w in sorted.windows(2) {
        *gaps.entry(w[1] - w[0]).or_default() += 1;
    }
    let min_gap = gaps.keys().next().copied().unwrap_or(0);
    let first_of_month = sorted.iter().all(|&s| {
        let (_, _, d, in_day) = split_utc(s);
        d == 1 && in_day == 0
    });
    if first_of_month && min_gap >= 28 * DAY_MS {
        let january = sorted.iter().all(|&s| split_utc(s).1 == 1);
        return if january && min_gap >= 365 * DAY_MS {
            Step::Year
        } else {
            Step::Month
        };
    }
    let mut best = (0usize, fallback);
    for (&gap, &n) in &gaps {
        if n > best.0 {
            best = (n, Step::Fixed(gap));
        }
    }
    best.1
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn grid_time_parses_source_shapes() {
        // 2021-12-01T00:00:00+01:00 (eCO2mix) is 2021-11-30T23:00:00Z.
        let t = parse_instant("2021-12-01T00:00:00+01:00").unwrap();
        assert_eq!(t, 1_638_313_200_000);
        assert_eq!(format_utc(t), "2021-11-30T23:00:00Z");
        // Carbon Intensity API: no seconds.
        assert_eq!(
            parse_instant("2023-03-13T12:00Z").unwrap(),
            1_678_708_800_000
        );
        // Electricity Maps API: milliseconds.
        assert_eq!(
            parse_instant("2019-05-21T00:00:00.000Z").unwrap(),
            1_558_396_800_000
        );
        assert_eq!(
            parse_instant("2019-05-21T00:00:00.250Z").unwrap(),
            1_558_396_800_250
        );
        // WattTime: +00:00 and -0800.
        assert_eq!(
            parse_instant("2022-07-15T00:05:00+00:00").unwrap(),
            1_657_843_500_000
        );
        assert_eq!(
            parse_instant("2022-11-16T20:30:00-0800").unwrap(),
            parse_instant("2022-11-17T04:30:00Z").unwrap()
        );
        // Electricity Maps CSV: space, no offset, column says UTC.
        assert_eq!(parse_utc("2024-01-01 00:00:00").unwrap(), 1_704_067_200_000);
        assert!(parse_instant("2024-01-01 00:00:00").is_err());
    }

    #[test]
    fn grid_time_rejects_garbage() {
        for bad in [
            "",
            "2021-13-01T00:00Z",
            "2021-02-29T00:00Z",
            "2021-12-01",
            "2021-12-01T24:00Z",
            "2021-12-01T00:00:00+01:00x",
            "2021-12-01T00:00:00.Z",
            "21-12-01T00:00Z",
        ] {
            assert!(parse_utc(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            parse_utc("2024-02-29T12:00Z").unwrap() % DAY_MS,
            12 * HOUR_MS
        );
    }

    #[test]
    fn grid_time_formats() {
        assert_eq!(format_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_utc(1_500), "1970-01-01T00:00:01.500Z");
        assert_eq!(format_utc(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(format_utc_minutes(1_678_708_800_000), "2023-03-13T12:00Z");
    }

    #[test]
    fn grid_time_paris_dst() {
        // 2021: summer time from 28 March 01:00 UTC to 31 October 01:00 UTC.
        let start = parse_instant("2021-03-28T01:00:00Z").unwrap();
        let end = parse_instant("2021-10-31T01:00:00Z").unwrap();
        assert_eq!(paris_offset_ms(start - 1), HOUR_MS);
        assert_eq!(paris_offset_ms(start), 2 * HOUR_MS);
        assert_eq!(paris_offset_ms(end - 1), 2 * HOUR_MS);
        assert_eq!(paris_offset_ms(end), HOUR_MS);
        let local = |s| parse_utc(s).unwrap();
        assert_eq!(
            paris_local_to_utc(local("2021-12-01T00:00")),
            ParisLocal::Single(parse_instant("2021-11-30T23:00Z").unwrap())
        );
        assert_eq!(
            paris_local_to_utc(local("2021-07-01T12:00")),
            ParisLocal::Single(parse_instant("2021-07-01T10:00Z").unwrap())
        );
        assert_eq!(
            paris_local_to_utc(local("2021-03-28T02:15")),
            ParisLocal::Skipped
        );
        assert_eq!(
            paris_local_to_utc(local("2021-10-31T02:30")),
            ParisLocal::Ambiguous(
                parse_instant("2021-10-31T00:30Z").unwrap(),
                parse_instant("2021-10-31T01:30Z").unwrap()
            )
        );
    }

    #[test]
    fn grid_time_steps() {
        let q = 15 * MINUTE_MS;
        // A missing value does not change the step.
        assert_eq!(
            infer_step(&[0, q, 2 * q, 4 * q, 5 * q], Step::Fixed(1)),
            Step::Fixed(q)
        );
        assert_eq!(infer_step(&[7], Step::Fixed(HOUR_MS)), Step::Fixed(HOUR_MS));
        let months = [
            utc_midnight_ms(2023, 1, 1),
            utc_midnight_ms(2023, 2, 1),
            utc_midnight_ms(2023, 3, 1),
        ];
        assert_eq!(infer_step(&months, Step::Fixed(1)), Step::Month);
        assert_eq!(Step::Month.end(months[0]), months[1]);
        assert_eq!(
            Step::Month.end(utc_midnight_ms(2023, 12, 1)),
            utc_midnight_ms(2024, 1, 1)
        );
        let years = [utc_midnight_ms(2022, 1, 1), utc_midnight_ms(2023, 1, 1)];
        assert_eq!(infer_step(&years, Step::Fixed(1)), Step::Year);
        assert_eq!(Step::Year.end(years[1]), utc_midnight_ms(2024, 1, 1));
    }

    /// Any instant from 1970 to 2096, or (half the cases) one within 3 h
    /// of a change of French legal time, in spring or autumn: uniform
    /// instants land in the repeated autumn hour about once in 8760.
    fn instant_near_dst() -> impl Strategy<Value = i64> {
        prop_oneof![
            0i64..4_000_000_000_000,
            (1970i64..2096, any::<bool>(), -3 * HOUR_MS..3 * HOUR_MS).prop_map(
                |(year, autumn, offset)| {
                    let change = if autumn {
                        eu_summer_end_ms(year)
                    } else {
                        eu_summer_start_ms(year)
                    };
                    change + offset
                }
            ),
        ]
    }

    /// Any day from about 800 BC to AD 4700, or (half the cases) one of
    /// 27 February to 2 March around a year divisible by 4, 100 or 400,
    /// where leap-day rules go wrong.
    fn day_near_leap() -> impl Strategy<Value = i64> {
        prop_oneof![
            -1_000_000i64..1_000_000,
            (
                -800i64..4700,
                prop_oneof![Just(4i64), Just(100), Just(400)],
                0i64..4
            )
                .prop_map(|(y, every, d)| days_from_civil(
                    y - y.rem_euclid(every),
                    2,
                    27
                ) + d),
        ]
    }

    // 256 cases each (proptest's default).
    proptest! {
        /// Targets instants before and after 1970 (negative ms) with
        /// milliseconds that do not round to seconds.
        #[test]
        fn grid_time_format_parse_round_trip(ms in -2_000_000_000_000i64..10_000_000_000_000) {
            prop_assert_eq!(parse_instant(&format_utc(ms)).unwrap(), ms);
        }

        /// Targets leap days and month ends of century years (see
        /// `day_near_leap`) as well as any day.
        #[test]
        fn grid_time_civil_round_trip(days in day_near_leap()) {
            let (y, m, d) = civil_from_days(days);
            prop_assert!((1..=12).contains(&m));
            prop_assert!(d >= 1 && d <= days_in_month(y, m));
            prop_assert_eq!(days_from_civil(y, m, d), days);
        }

        /// Targets the hours around both changes of legal time, the
        /// repeated autumn hour (`Ambiguous`) above all: a quarter of the
        /// cases are within 3 h of an autumn change, a third of those in
        /// the repeated hour.
        #[test]
        fn grid_time_paris_local_inverts_offset(ms in instant_near_dst()) {
            let ms = ms - ms.rem_euclid(MINUTE_MS);
            let local = ms + paris_offset_ms(ms);
            match paris_local_to_utc(local) {
                ParisLocal::Single(u) => prop_assert_eq!(u, ms),
                ParisLocal::Ambiguous(a, b) => prop_assert!(a == ms || b == ms),
                ParisLocal::Skipped => prop_assert!(false, "skipped"),
            }
        }
    }
}
