//! The EnEfG targets (sections 11 and 12), checked against a period's
//! figures. A target is checked when it is in force on the last day of
//! the period; the PUE and ERF targets depend on the commissioning date,
//! and are reported `unknown-commissioning-date` when it is not given.

use super::date::Date;
use serde::Serialize;

/// One target and whether the period meets it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TargetCheck {
    /// `pue_max`, `erf_min` or `renewable_share_min`.
    pub id: &'static str,
    /// What it is.
    pub label: &'static str,
    /// Unit of `limit` and `value`.
    pub unit: &'static str,
    /// The limit in force, if one is.
    pub limit: Option<f64>,
    /// Since when that limit applies.
    pub applies_from: Option<String>,
    /// The period's value.
    pub value: Option<f64>,
    /// `met`, `not-met`, `no-value`, `not-in-force`, `not-applicable` or
    /// `unknown-commissioning-date`.
    pub result: &'static str,
    /// The rule, in words.
    pub basis: String,
}

fn date(y: i64, m: u32) -> Date {
    Date { y, m, d: 1 }
}

fn verdict(limit: f64, value: Option<f64>, max: bool) -> &'static str {
    match value {
        None => "no-value",
        Some(v) if (max && v <= limit) || (!max && v >= limit) => "met",
        Some(_) => "not-met",
    }
}

/// Checks PUE (ratio), ERF (%) and the renewable electricity share (%)
/// for a period whose last day is `at`.
pub fn check(
    at: Date,
    commissioned: Option<Date>,
    pue: Option<f64>,
    erf_pct: Option<f64>,
    renewable_pct: Option<f64>,
) -> Vec<TargetCheck> {
    let new_sites = date(2026, 7);
    // PUE: (limit, applies from) or why none.
    let pue_rule: Result<Option<(f64, Date)>, &'static str> = match commissioned {
        Some(c) if c >= new_sites => Ok((at >= c).then_some((1.2, c))),
        Some(_) => Ok(if at >= date(2030, 7) {
            Some((1.3, date(2030, 7)))
        } else if at >= date(2027, 7) {
            Some((1.5, date(2027, 7)))
        } else {
            None
        }),
        None if at < new_sites => Ok(None),
        None => Err("unknown-commissioning-date"),
    };
    let pue_check = TargetCheck {
        id: "pue_max",
        label: "PUE, annual average, at most",
        unit: "1",
        limit: pue_rule.ok().flatten().map(|x| x.0),
        applies_from: pue_rule.ok().flatten().map(|x| x.1.to_string()),
        value: pue,
        result: match pue_rule {
            Ok(Some((l, _))) => verdict(l, pue, true),
            Ok(None) => "not-in-force",
            Err(e) => e,
        },
        basis: "EnEfG s. 11(1),(2): sites operating before 2026-07-01: 1.5 from 2027-07-01, 1.3 from 2030-07-01; sites starting from 2026-07-01: 1.2".into(),
    };
    // ERF: by commissioning date; none for older sites.
    let erf_rule: Result<Option<(f64, Date)>, &'static str> = match commissioned {
        Some(c) if c >= date(2028, 7) => Ok((at >= c).then_some((20.0, c))),
        Some(c) if c >= date(2027, 7) => Ok((at >= c).then_some((15.0, c))),
        Some(c) if c >= new_sites => Ok((at >= c).then_some((10.0, c))),
        Some(_) => Err("not-applicable"),
        None if at < new_sites => Ok(None),
        None => Err("unknown-commissioning-date"),
    };
    let erf_check = TargetCheck {
        id: "erf_min",
        label: "Energy reuse factor, at least",
        unit: "%",
        limit: erf_rule.ok().flatten().map(|x| x.0),
        applies_from: erf_rule.ok().flatten().map(|x| x.1.to_string()),
        value: erf_pct,
        result: match erf_rule {
            Ok(Some((l, _))) => verdict(l, erf_pct, false),
            Ok(None) => "not-in-force",
            Err(e) => e,
        },
        basis: "EnEfG s. 11(2): sites starting operation from 2026-07-01: 10 %, from 2027-07-01: 15 %, from 2028-07-01: 20 %".into(),
    };
    let ren = if at >= date(2027, 1) {
        Some((100.0, date(2027, 1)))
    } else if at >= date(2024, 1) {
        Some((50.0, date(2024, 1)))
    } else {
        None
    };
    let ren_check = TargetCheck {
        id: "renewable_share_min",
        label: "Renewable electricity share, at least",
        unit: "%",
        limit: ren.map(|x| x.0),
        applies_from: ren.map(|x| x.1.to_string()),
        value: renewable_pct,
        result: match ren {
            Some((l, _)) => verdict(l, renewable_pct, false),
            None => "not-in-force",
        },
        basis: "EnEfG s. 11(5): 50 % from 2024-01-01, 100 % from 2027-01-01 (balance over the year, GOs and PPAs count)".into(),
    };
    vec![pue_check, erf_check, ren_check]
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn d(s: &str) -> Date {
        Date::parse(s).unwrap()
    }

    #[test]
    fn targets_by_period_and_commissioning_date() {
        // (last day, commissioned, pue, erf %, ren %) -> (pue limit, result), (erf limit, result), (ren limit, result)
        type Row = (
            &'static str,
            Option<&'static str>,
            (Option<f64>, &'static str),
            (Option<f64>, &'static str),
            (Option<f64>, &'static str),
        );
        let rows: [Row; 9] = [
            (
                "2023-12-31",
                Some("2010-01-01"),
                (None, "not-in-force"),
                (None, "not-applicable"),
                (None, "not-in-force"),
            ),
            (
                "2024-12-31",
                Some("2010-01-01"),
                (None, "not-in-force"),
                (None, "not-applicable"),
                (Some(50.0), "met"),
            ),
            (
                "2027-06-30",
                Some("2010-01-01"),
                (None, "not-in-force"),
                (None, "not-applicable"),
                (Some(100.0), "not-met"),
            ),
            (
                "2027-12-31",
                Some("2010-01-01"),
                (Some(1.5), "met"),
                (None, "not-applicable"),
                (Some(100.0), "not-met"),
            ),
            (
                "2030-12-31",
                Some("2026-06-30"),
                (Some(1.3), "not-met"),
                (None, "not-applicable"),
                (Some(100.0), "not-met"),
            ),
            (
                "2026-12-31",
                Some("2026-07-01"),
                (Some(1.2), "not-met"),
                (Some(10.0), "met"),
                (Some(50.0), "met"),
            ),
            (
                "2027-12-31",
                Some("2027-07-01"),
                (Some(1.2), "not-met"),
                (Some(15.0), "met"),
                (Some(100.0), "not-met"),
            ),
            (
                "2029-12-31",
                Some("2028-07-01"),
                (Some(1.2), "not-met"),
                (Some(20.0), "not-met"),
                (Some(100.0), "not-met"),
            ),
            (
                "2027-12-31",
                None,
                (None, "unknown-commissioning-date"),
                (None, "unknown-commissioning-date"),
                (Some(100.0), "not-met"),
            ),
        ];
        for (at, comm, p, e, r) in rows {
            // PUE 1.4, ERF 18 %, renewable 60 %.
            let c = check(d(at), comm.map(d), Some(1.4), Some(18.0), Some(60.0));
            let got = |i: usize| (c[i].limit, c[i].result);
            assert_eq!((got(0), got(1), got(2)), (p, e, r), "{at} {comm:?}");
        }
        // A commissioning date after the period: nothing in force yet.
        let c = check(
            d("2026-12-31"),
            Some(d("2028-09-01")),
            Some(2.0),
            None,
            None,
        );
        assert_eq!(c[0].result, "not-in-force");
        assert_eq!(c[1].result, "not-in-force");
        assert_eq!(c[2].result, "no-value");
    }
}
