//! The site's figures over a period and each of its calendar months, for
//! the human-facing reports (permit dossier, public disclosure page).
//! Site-level only: nothing here names a host.
//!
//! Every amount comes from [`site::figures`] and [`site::scope2`], so the
//! reports show exactly what the API and the exports show, with the same
//! coverage and status.

use crate::backend::Db;
use crate::config::CarbonConfig;
use crate::export::date::Date;
use crate::site::{self, SiteConfig, SiteError};
use serde::Serialize;
use vigie_energy::{Figure, Indicator, InputUsed, Scope2Basis};

/// One figure as the reports show it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Value {
    /// The value, if it can be computed.
    pub value: Option<f64>,
    /// `measured`, `estimated`, `incomplete` or `undefined`.
    pub status: &'static str,
    /// Share of the period covered by samples of every input, 0 to 1
    /// (the least covered input).
    pub coverage: Option<f64>,
}

impl Value {
    /// The status the least trustworthy of `values` has (incomplete, then
    /// undefined, then estimated, then measured) and their least
    /// coverage: what a table row showing them together says of itself.
    pub fn worst_of(values: &[&Value]) -> (&'static str, Option<f64>) {
        let status = values
            .iter()
            .map(|v| v.status)
            .max_by_key(|s| rank(s))
            .unwrap_or("undefined");
        let coverage = values.iter().filter_map(|v| v.coverage).reduce(f64::min);
        (status, coverage)
    }
}

/// Orders statuses from the most to the least trustworthy.
fn rank(status: &str) -> u8 {
    match status {
        "measured" => 0,
        "estimated" => 1,
        "undefined" => 2,
        _ => 3,
    }
}

/// The site over one span of time.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Span {
    /// `2026` or `2026-03`.
    pub label: String,
    /// Start, Unix ms (inclusive).
    pub from_ms: i64,
    /// End, Unix ms (exclusive).
    pub to_ms: i64,
    /// Total facility energy E_DC, kWh, with its own status and coverage.
    pub facility_kwh: Value,
    /// IT equipment energy E_IT, kWh.
    pub it_kwh: Value,
    /// Heat reused outside the boundary E_reused, kWh (thermal).
    pub heat_reused_kwh: Value,
    /// Renewable energy E_renewable (on site and instruments), kWh.
    pub renewable_kwh: Value,
    /// PUE.
    pub pue: Value,
    /// ERF.
    pub erf: Value,
    /// REF (renewable energy factor).
    pub ref_: Value,
    /// WUE, L/kWh.
    pub wue: Value,
    /// Location-based Scope 2 emissions of the grid import, t CO2e; a
    /// value only when the grid meter covers the whole span; estimated
    /// when it rests on estimated consumption or grid factors.
    pub emissions_location_t: Value,
    /// Market-based Scope 2 emissions, t CO2e.
    pub emissions_market_t: Value,
}

/// A period and its months.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Summary {
    /// The whole period.
    pub total: Span,
    /// Each calendar month (UTC) overlapping the period, clipped to it.
    pub months: Vec<Span>,
    /// Roles without a meter, as configured (`heat-delivered`...): the
    /// figures that need them are absent.
    pub missing_roles: Vec<String>,
}

/// The month boundaries (UTC) cutting `[from_ms, to_ms)`.
pub fn month_spans(from_ms: i64, to_ms: i64) -> Vec<(String, i64, i64)> {
    let mut out = Vec::new();
    let first = Date::from_ms(from_ms);
    let (mut y, mut m) = (first.y, first.m);
    let mut start = from_ms;
    while start < to_ms {
        let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
        let next = Date { y: ny, m: nm, d: 1 }.start_ms();
        let end = next.min(to_ms);
        out.push((format!("{y:04}-{m:02}"), start, end));
        start = end;
        (y, m) = (ny, nm);
    }
    out
}

fn value(f: Option<&Figure>) -> Value {
    let Some(f) = f else {
        return Value {
            value: None,
            status: "undefined",
            coverage: None,
        };
    };
    let coverage = f
        .inputs
        .iter()
        .filter_map(|i| i.coverage.as_ref())
        .map(|c| 1.0 - c.missing_share())
        .reduce(f64::min);
    Value {
        value: f.value,
        status: f.status.as_str(),
        coverage,
    }
}

/// Status of one input, by the one rule ([`InputUsed::status`]): the
/// export resolves its meters by the same function.
fn input_status(i: &InputUsed) -> &'static str {
    i.status().as_str()
}

/// An amount: the inputs `pick` selects in the first figure that has
/// any (what the indicators used), else the totals of the meters whose
/// role is in `roles` (a meter no indicator can use, e.g. IT energy
/// without a grid meter). Its value is their sum, its status the worst of
/// theirs and its coverage the least; `undefined` with neither (no meter).
fn amount(f: &site::SiteFigures, pick: &dyn Fn(&str) -> bool, roles: &[site::Role]) -> Value {
    let mut parts: Vec<&InputUsed> = f
        .figures
        .iter()
        .map(|x| x.inputs.iter().filter(|i| pick(i.name)).collect::<Vec<_>>())
        .find(|p| !p.is_empty())
        .unwrap_or_default();
    if parts.is_empty() {
        parts = f
            .totals
            .iter()
            .filter(|(_, role, _)| roles.contains(role))
            .map(|(_, _, i)| i)
            .collect();
    }
    if parts.is_empty() {
        return Value {
            value: None,
            status: "undefined",
            coverage: None,
        };
    }
    let status = parts
        .iter()
        .map(|i| input_status(i))
        .max_by_key(|s| rank(s))
        .unwrap_or("undefined");
    Value {
        // `+ 0.0`: a sum of nothing is -0.0, read as 0.
        value: parts
            .iter()
            .map(|i| i.total)
            .sum::<Option<f64>>()
            .map(|v| v + 0.0),
        status,
        coverage: parts
            .iter()
            .filter_map(|i| i.coverage.as_ref())
            .map(|c| 1.0 - c.missing_share())
            .reduce(f64::min),
    }
}

/// What Scope 2 emissions on `basis` rest on: `incomplete` when the grid
/// meter does not cover the whole period, `estimated` when estimated
/// consumption or an estimated or fallback grid factor enters them,
/// else `measured`.
pub fn scope2_status(r: &vigie_energy::Scope2Report, basis: Scope2Basis) -> &'static str {
    if !r.is_complete() {
        "incomplete"
    } else if r.estimated.0 > 0 || r.coverage.estimated_ms > 0 || r.uses_estimated_factor(basis) {
        "estimated"
    } else {
        "measured"
    }
}

/// The site over `[from_ms, to_ms)` labelled `label`.
pub fn span(
    conn: &dyn Db,
    site_cfg: &SiteConfig,
    carbon: &CarbonConfig,
    label: String,
    from_ms: i64,
    to_ms: i64,
) -> Result<(Span, Vec<String>), SiteError> {
    let f = site::figures(conn, site_cfg, &carbon.market, from_ms, to_ms)?;
    let find = |pred: &dyn Fn(&Indicator) -> bool| f.figures.iter().find(|x| pred(&x.indicator));
    let has_grid = site_cfg
        .meters
        .iter()
        .any(|m| m.role == site::Role::GridImport);
    // Scope 2 sums the hours the grid meter covers and extrapolates
    // nothing: a sum over part of the period is not the period's
    // emissions, so it is given only when the meter covers all of it.
    let undefined = Value {
        value: None,
        status: "undefined",
        coverage: None,
    };
    let (mut loc, mut mkt) = (undefined.clone(), undefined);
    if has_grid {
        let (r, _) = site::scope2(conn, site_cfg, carbon, from_ms, to_ms)?;
        let coverage = Some(1.0 - r.coverage.missing_share());
        let emissions = |basis: Scope2Basis, grams: f64| Value {
            value: r.is_complete().then_some(grams / 1e6),
            status: scope2_status(&r, basis),
            coverage,
        };
        loc = emissions(Scope2Basis::LocationBased, r.location.0);
        mkt = emissions(Scope2Basis::MarketBased, r.market.0);
    }
    let missing = f
        .missing_roles
        .iter()
        .map(|r| r.as_str().to_owned())
        .collect();
    Ok((
        Span {
            label,
            from_ms,
            to_ms,
            facility_kwh: amount(
                &f,
                &|n| n == "E_DC",
                &[site::Role::GridImport, site::Role::OnsiteGeneration],
            ),
            it_kwh: amount(&f, &|n| n == "E_IT", &[site::Role::It]),
            heat_reused_kwh: amount(&f, &|n| n == "E_reused", &[site::Role::HeatDelivered]),
            renewable_kwh: amount(&f, &|n| n.starts_with("E_renewable"), &[]),
            pue: value(find(&|i| matches!(i, Indicator::Pue { .. }))),
            erf: value(find(&|i| *i == Indicator::Erf)),
            ref_: value(find(&|i| *i == Indicator::Ref)),
            wue: value(find(&|i| *i == Indicator::Wue)),
            emissions_location_t: loc,
            emissions_market_t: mkt,
        },
        missing,
    ))
}

/// The site over a period and each of its months.
pub fn summary(
    conn: &dyn Db,
    site_cfg: &SiteConfig,
    carbon: &CarbonConfig,
    label: &str,
    from_ms: i64,
    to_ms: i64,
) -> Result<Summary, SiteError> {
    let (total, missing_roles) = span(conn, site_cfg, carbon, label.to_owned(), from_ms, to_ms)?;
    let mut months = Vec::new();
    for (l, a, b) in month_spans(from_ms, to_ms) {
        months.push(span(conn, site_cfg, carbon, l, a, b)?.0);
    }
    Ok(Summary {
        total,
        months,
        missing_roles,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn months_cut_at_utc_month_starts_and_clip_to_the_period() {
        let a = Date::new(2025, 11, 15).unwrap().start_ms();
        let b = Date::new(2026, 2, 10).unwrap().start_ms();
        let m = month_spans(a, b);
        let labels: Vec<&str> = m.iter().map(|x| x.0.as_str()).collect();
        assert_eq!(labels, ["2025-11", "2025-12", "2026-01", "2026-02"]);
        assert_eq!(m[0].1, a);
        assert_eq!(m[1].1, Date::new(2025, 12, 1).unwrap().start_ms());
        assert_eq!(m[3].2, b);
        // Contiguous.
        for w in m.windows(2) {
            assert_eq!(w[0].2, w[1].1);
        }
        assert!(month_spans(b, b).is_empty());
    }
    #[test]
    fn emissions_are_given_only_for_a_period_the_grid_meter_covers() {
        let mut db = crate::backend::open_in_memory().unwrap();
        const H: i64 = 3_600_000;
        // Hour buckets only, as a ledger holds once minutes are pruned.
        let hours = |sensor: &str, measured: u64, estimated: u64| {
            let mut p = crate::store::Pending::default();
            for h in 0..24 {
                let a = crate::store::Amount {
                    measured,
                    estimated,
                };
                p.hour.insert(("f".into(), sensor.into(), h * H), a);
            }
            p
        };
        db.add_energy(&hours("grid", 3_600_000_000_000, 0)).unwrap();
        let conn = &*db;
        let site: SiteConfig = toml::from_str(
            "[[meters]]\nname = \"grid\"\nrole = \"grid-import\"\nsensors = [{ host = \"f\", sensor = \"grid\" }]\n",
        )
        .unwrap();
        let carbon: CarbonConfig =
            toml::from_str("zone = \"FR\"\nintensity_g_per_kwh = 50.0").unwrap();
        // The first day: 24 kWh at 50 g = 1.2 kg.
        let (full, _) = span(conn, &site, &carbon, "d1".into(), 0, 24 * H).unwrap();
        assert!(
            (full.emissions_location_t.value.unwrap() - 0.0012).abs() < 1e-12,
            "{full:?}"
        );
        // Consumption measured, but the factor is the configured yearly
        // average applied to every hour: an estimate.
        assert_eq!(full.emissions_location_t.status, "estimated");
        assert_eq!(full.facility_kwh.value, Some(24.0));
        assert_eq!(full.facility_kwh.status, "measured");
        // Two days, the second without data: no figure rather than half,
        // and the amounts say why, with their own coverage.
        let (half, _) = span(conn, &site, &carbon, "d1-2".into(), 0, 48 * H).unwrap();
        assert_eq!(half.emissions_location_t.value, None);
        assert_eq!(half.emissions_market_t.value, None);
        assert_eq!(half.emissions_location_t.status, "incomplete");
        assert_eq!(half.emissions_location_t.coverage, Some(0.5));
        assert_eq!(half.facility_kwh.value, None);
        assert_eq!(half.facility_kwh.status, "incomplete");
        assert_eq!(half.facility_kwh.coverage, Some(0.5));
        // No IT meter: its amount is undefined, not incomplete.
        assert_eq!(half.it_kwh.status, "undefined");

        // An IT meter and no grid meter: no indicator uses it, but its
        // amount is still the meter's own.
        db.add_energy(&hours("it", 0, 1_800_000_000_000)).unwrap();
        let conn = &*db;
        let it_only: SiteConfig = toml::from_str(
            "[[meters]]\nname = \"it\"\nrole = \"it\"\nsensors = [{ host = \"f\", sensor = \"it\" }]\n",
        )
        .unwrap();
        let (day, _) = span(conn, &it_only, &carbon, "d1".into(), 0, 24 * H).unwrap();
        assert_eq!(day.it_kwh.value, Some(12.0));
        assert_eq!(day.it_kwh.status, "estimated");
        assert_eq!(day.it_kwh.coverage, Some(1.0));
        assert_eq!(day.facility_kwh.status, "undefined");
        assert_eq!(day.pue.status, "undefined");
    }
}
