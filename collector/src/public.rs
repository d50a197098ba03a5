//! The public disclosure page: `/public` (HTML), `/public/data.json` and
//! `/public/data.csv`, served without a token when `[public] enabled`.
//!
//! It shows the site's yearly and monthly figures from [`report::summary`]
//! with their status and coverage, the methodology and open data. Nothing
//! here names a host, a sensor or a meter: only the site and the roles of
//! its meters. Rendering is pure ([`Report::new`], [`html`], [`csv`]);
//! the handlers only pick the period, read the ledger and cache the result
//! for [`CACHE_TTL`].

use crate::api::{ApiError, AppState};
use crate::charts::{Chart, Kind, SeriesData, escape};
use crate::export::date::Date;
use crate::report::{Span, Summary, Value as Fig};
use crate::site::{GapRuleConfig, SiteConfig};
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vigie_energy::HOUR_MS;

/// How long a computed year is reused before the ledger is read again.
pub const CACHE_TTL: Duration = Duration::from_secs(60);

/// `Cache-Control` of the three responses.
const CACHE_CONTROL: &str = "public, max-age=300";

/// The page's content security policy: no script, no external resource.
const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Version of the `data.json` document (bumped on incompatible changes).
pub const DATA_VERSION: u32 = 2;

const DAY_MS: i64 = 24 * HOUR_MS;

/// The `[public]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublicConfig {
    /// Serve `/public`, `/public/data.json` and `/public/data.csv` to anyone
    /// (off by default: publishing is the operator's decision).
    #[serde(default)]
    pub enabled: bool,
    /// The site's public name (the page's title).
    #[serde(default)]
    pub site_name: Option<String>,
    /// Who runs the site.
    #[serde(default)]
    pub operator: Option<String>,
    /// A contact for questions about the figures (address or URL).
    #[serde(default)]
    pub contact: Option<String>,
    /// A short description of the site.
    #[serde(default)]
    pub description: Option<String>,
    /// Licence of the open data (an SPDX identifier).
    #[serde(default = "d_licence")]
    pub licence: String,
}

fn d_licence() -> String {
    "CC-BY-4.0".into()
}

impl Default for PublicConfig {
    fn default() -> Self {
        PublicConfig {
            enabled: false,
            site_name: None,
            operator: None,
            contact: None,
            description: None,
            licence: d_licence(),
        }
    }
}

/// The year shown: `[from_ms, to_ms)`, to date when it is the current one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Year {
    /// Calendar year.
    pub year: i64,
    /// 1 January 00:00 UTC.
    pub from_ms: i64,
    /// 1 January of the next year, or the start of today (UTC) for the
    /// current year.
    pub to_ms: i64,
    /// Whether the year is still running.
    pub to_date: bool,
}

/// The year asked for (`None`: the current one), as of `now_ms`.
pub fn year(asked: Option<&str>, now_ms: i64) -> Result<Year, String> {
    let current = Date::from_ms(now_ms).y;
    let y = match asked {
        None => current,
        Some(s) => {
            let ok = s.len() == 4 && s.bytes().all(|b| b.is_ascii_digit());
            match s.parse::<i64>() {
                Ok(y) if ok && (1970..=current).contains(&y) => y,
                _ => {
                    return Err(format!(
                        "year must be a year from 1970 to {current}, not {s:?}"
                    ));
                }
            }
        }
    };
    let start = |y: i64| Date { y, m: 1, d: 1 }.start_ms();
    let from_ms = start(y);
    if y < current {
        return Ok(Year {
            year: y,
            from_ms,
            to_ms: start(y + 1),
            to_date: false,
        });
    }
    // Up to the start of today: whole days, so the figures do not change
    // with every request; on 1 January, up to the current hour.
    let today = now_ms.div_euclid(DAY_MS) * DAY_MS;
    let to_ms = if today > from_ms {
        today
    } else {
        // Whole hours (a stable cache key), at least the first one.
        (now_ms.div_euclid(HOUR_MS) * HOUR_MS).max(from_ms + HOUR_MS)
    };
    Ok(Year {
        year: y,
        from_ms,
        to_ms,
        to_date: true,
    })
}

/// One period's figures as published.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Row {
    /// `2026` or `2026-03`.
    pub period: String,
    /// Start (RFC 3339, inclusive).
    pub from: String,
    /// End (RFC 3339, exclusive).
    pub to: String,
    /// Total facility energy E_DC, with its own status and coverage.
    pub facility_energy_kwh: Fig,
    /// IT equipment energy E_IT.
    pub it_energy_kwh: Fig,
    /// Heat handed to a user outside the site E_reused (kWh thermal).
    pub heat_reused_kwh: Fig,
    /// Renewable energy (on site and contractual instruments).
    pub renewable_energy_kwh: Fig,
    /// Power usage effectiveness E_DC / E_IT.
    pub pue: Fig,
    /// Energy reuse factor E_reused / E_DC (0 to 1).
    pub erf: Fig,
    /// Renewable energy factor E_renewable / E_DC (0 to 1).
    #[serde(rename = "ref")]
    pub ref_: Fig,
    /// Water usage effectiveness, litres per kWh of IT energy.
    pub wue_l_per_kwh: Fig,
    /// Location-based Scope 2 emissions, tonnes CO2e.
    pub emissions_location_based_t_co2e: Fig,
    /// Market-based Scope 2 emissions, tonnes CO2e.
    pub emissions_market_based_t_co2e: Fig,
}

impl Row {
    fn new(s: &Span) -> Row {
        Row {
            period: s.label.clone(),
            from: crate::api::rfc3339(s.from_ms),
            to: crate::api::rfc3339(s.to_ms),
            facility_energy_kwh: s.facility_kwh.clone(),
            it_energy_kwh: s.it_kwh.clone(),
            heat_reused_kwh: s.heat_reused_kwh.clone(),
            renewable_energy_kwh: s.renewable_kwh.clone(),
            pue: s.pue.clone(),
            erf: s.erf.clone(),
            ref_: s.ref_.clone(),
            wue_l_per_kwh: s.wue.clone(),
            emissions_location_based_t_co2e: s.emissions_location_t.clone(),
            emissions_market_based_t_co2e: s.emissions_market_t.clone(),
        }
    }
}

/// Who publishes.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SiteInfo {
    /// Public name.
    pub name: String,
    /// Operator.
    pub operator: Option<String>,
    /// Contact.
    pub contact: Option<String>,
    /// Description.
    pub description: Option<String>,
}

/// The period published.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PeriodInfo {
    /// Calendar year.
    pub year: i64,
    /// Start (RFC 3339, inclusive).
    pub from: String,
    /// End (RFC 3339, exclusive).
    pub to: String,
    /// Whether the year is still running (figures to date).
    pub to_date: bool,
}

/// One standard the figures follow.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Standard {
    /// Reference.
    pub id: &'static str,
    /// What it defines here.
    pub used_for: &'static str,
}

/// How the figures are computed.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Methodology {
    /// Standards and guidance.
    pub standards: Vec<Standard>,
    /// ISO/IEC 30134-2 measurement category of the IT energy (1, 2 or 3).
    pub it_measurement_category: u8,
    /// Where IT energy is metered.
    pub it_measurement_point: &'static str,
    /// `strict` or `scale-to-period`.
    pub gap_rule: &'static str,
    /// What the gap rule does.
    pub gap_rule_description: &'static str,
    /// Grid zone of the location-based factors.
    pub grid_zone: String,
    /// Source of the grid factors.
    pub grid_factor_source: String,
    /// `lifecycle` or `direct` factors.
    pub grid_factor_basis: &'static str,
    /// How an hour's factor is made and applied to that hour's energy
    /// (`carbon::HOURLY_RULE`, as every output states it).
    pub grid_factor_rule: &'static str,
    /// Time basis of the monthly rows.
    pub time_basis: &'static str,
}

/// What the data covers.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Coverage {
    /// Meter roles the site has no meter for (figures needing them are absent).
    pub roles_without_meter: Vec<String>,
    /// Months whose PUE is measured, estimated, incomplete, undefined.
    pub months_by_pue_status: BTreeMap<&'static str, usize>,
    /// How statuses and coverage are to be read.
    pub note: &'static str,
}

/// Everything the three responses show (`data.json` is this, serialized).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    /// Document version.
    pub version: u32,
    /// The site.
    pub site: SiteInfo,
    /// Licence of the data (SPDX).
    pub licence: String,
    /// When these figures were computed (RFC 3339).
    pub generated_at: String,
    /// The period.
    pub period: PeriodInfo,
    /// Years with data, newest first.
    pub years_available: Vec<i64>,
    /// Units of the fields (also in their names).
    pub units: BTreeMap<&'static str, &'static str>,
    /// The whole period.
    pub total: Row,
    /// Each calendar month (UTC).
    pub months: Vec<Row>,
    /// How the figures are computed.
    pub methodology: Methodology,
    /// What the data covers.
    pub coverage: Coverage,
}

fn category_point(c: u8) -> &'static str {
    match c {
        1 => "UPS output",
        2 => "PDU output",
        3 => "IT equipment input",
        _ => "unknown",
    }
}

impl Report {
    /// The published figures of `summary` for `year`, computed at `now_ms`.
    pub fn new(
        cfg: &PublicConfig,
        site: &SiteConfig,
        carbon: &crate::config::CarbonConfig,
        year: Year,
        years_available: Vec<i64>,
        summary: &Summary,
        now_ms: i64,
    ) -> Report {
        let mut by_status = BTreeMap::new();
        for m in &summary.months {
            *by_status.entry(m.pue.status).or_insert(0) += 1;
        }
        let (gap_rule, gap_rule_description) = match site.gap_rule {
            GapRuleConfig::Strict => (
                "strict",
                "A figure whose inputs have a gap in the period has no value and is marked incomplete; nothing is extrapolated.",
            ),
            GapRuleConfig::ScaleToPeriod => (
                "scale-to-period",
                "Gaps are filled at each input's own average rate over the period; the figure is then marked estimated.",
            ),
        };
        Report {
            version: DATA_VERSION,
            site: SiteInfo {
                name: cfg
                    .site_name
                    .clone()
                    .unwrap_or_else(|| "Data centre".into()),
                operator: cfg.operator.clone(),
                contact: cfg.contact.clone(),
                description: cfg.description.clone(),
            },
            licence: cfg.licence.clone(),
            generated_at: crate::api::rfc3339(now_ms),
            period: PeriodInfo {
                year: year.year,
                from: crate::api::rfc3339(year.from_ms),
                to: crate::api::rfc3339(year.to_ms),
                to_date: year.to_date,
            },
            years_available,
            units: BTreeMap::from([
                ("energy", "kWh"),
                ("heat", "kWh (thermal)"),
                ("pue", "ratio"),
                ("erf", "ratio (0 to 1)"),
                ("ref", "ratio (0 to 1)"),
                ("wue", "L/kWh"),
                ("emissions", "t CO2e"),
                ("coverage", "share of the period (0 to 1)"),
            ]),
            total: Row::new(&summary.total),
            months: summary.months.iter().map(Row::new).collect(),
            methodology: Methodology {
                standards: vec![
                    Standard {
                        id: "ISO/IEC 30134-2",
                        used_for: "PUE: total facility energy / IT equipment energy",
                    },
                    Standard {
                        id: "ISO/IEC 30134-3",
                        used_for: "REF: renewable energy (on site and contractual instruments) / total facility energy",
                    },
                    Standard {
                        id: "ISO/IEC 30134-6",
                        used_for: "ERF: heat reused outside the site / total facility energy (not subtracted from PUE)",
                    },
                    Standard {
                        id: "ISO/IEC 30134-9",
                        used_for: "WUE: site water input (litres) / IT equipment energy (kWh)",
                    },
                    Standard {
                        id: "GHG Protocol Scope 2 Guidance (2015)",
                        used_for: "Scope 2 emissions of the grid electricity, location-based (hourly grid average factors) and market-based (contractual instruments, then the residual mix)",
                    },
                ],
                it_measurement_category: site.it_category,
                it_measurement_point: category_point(site.it_category),
                gap_rule,
                gap_rule_description,
                grid_zone: carbon.zone.clone(),
                grid_factor_source: carbon.source.clone(),
                grid_factor_basis: carbon.basis.as_str(),
                grid_factor_rule: crate::carbon::HOURLY_RULE,
                time_basis: "calendar months in UTC; energy in kWh from metered intervals",
            },
            coverage: Coverage {
                roles_without_meter: summary.missing_roles.clone(),
                months_by_pue_status: by_status,
                note: "Each figure carries a status (measured, estimated, incomplete, undefined) and its coverage: the share of the period covered by data for its least covered input.",
            },
        }
    }
}

// ---- formatting ----

/// `v` with `decimals` decimals and comma thousands separators.
fn num(v: f64, decimals: usize) -> String {
    let s = format!("{:.decimals$}", v.abs());
    let (int, frac) = s.split_once('.').unwrap_or((&s, ""));
    let mut out = String::new();
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if !frac.is_empty() {
        out.push('.');
        out.push_str(frac);
    }
    if v < 0.0 && out.chars().any(|c| c.is_ascii_digit() && c != '0') {
        out.insert(0, '-');
    }
    out
}

fn mwh(kwh: Option<f64>) -> String {
    kwh.map_or_else(|| NA.to_owned(), |k| num(k / 1000.0, 2))
}

fn tonnes(t: Option<f64>) -> String {
    t.map_or_else(|| NA.to_owned(), |t| num(t, 2))
}

const NA: &str = "n/a";

/// How a figure's value reads: PUE and WUE as numbers, ratios as %.
#[derive(Clone, Copy)]
enum Style {
    Plain,
    Percent,
}

fn fig_value(f: &Fig, style: Style) -> String {
    match (f.value, style) {
        (None, _) => "—".into(),
        (Some(v), Style::Plain) => num(v, 2),
        (Some(v), Style::Percent) => format!("{}\u{a0}%", num(v * 100.0, 1)),
    }
}

/// The status badge (none for measured figures).
fn flag(status: &str) -> &'static str {
    match status {
        "estimated" => r#" <span class="flag est" title="estimated">estimated</span>"#,
        "incomplete" => {
            r#" <span class="flag inc" title="incomplete: data missing">incomplete</span>"#
        }
        "undefined" => r#" <span class="flag und" title="not available">not available</span>"#,
        _ => "",
    }
}

/// One row of the amounts table: id, name, figure, how its value reads,
/// unit.
type AmountRow<'a> = (
    &'a str,
    &'a str,
    &'a Fig,
    fn(Option<f64>) -> String,
    &'a str,
);

/// The status cell: `measured`, or the badge.
fn status_text(status: &str) -> String {
    match flag(status) {
        "" => "measured".to_owned(),
        b => b.trim_start().to_owned(),
    }
}

fn coverage(f: &Fig) -> String {
    f.coverage.map_or_else(
        || NA.to_owned(),
        |c| format!("{}\u{a0}%", num(c * 100.0, 1)),
    )
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// `January 2026` for `2026-01`.
fn month_name(label: &str) -> String {
    let m = label
        .split_once('-')
        .and_then(|(y, m)| Some((y, m.parse::<usize>().ok()?)));
    match m {
        Some((y, m)) if (1..=12).contains(&m) => format!("{} {y}", MONTHS[m - 1]),
        _ => label.to_owned(),
    }
}

fn short_month(label: &str) -> String {
    month_name(label).chars().take(3).collect()
}

fn date_text(rfc: &str) -> &str {
    rfc.get(..10).unwrap_or(rfc)
}

const STYLE: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif;color:#222;background:#fff;margin:0;line-height:1.5}\
header,main,footer{max-width:64rem;margin:0 auto;padding:0 1rem}\
header{padding-top:1.5rem}h1{margin:0 0 .25rem;font-size:1.8rem}h2{margin-top:2rem;border-bottom:1px solid #ddd;padding-bottom:.25rem}\
.sub{color:#555;margin:0}nav ul{list-style:none;padding:0;display:flex;flex-wrap:wrap;gap:.5rem}\
nav a{display:inline-block;padding:.2rem .6rem;border:1px solid #0b5cad;border-radius:.3rem;color:#0b5cad;text-decoration:none}\
nav a[aria-current]{background:#0b5cad;color:#fff}\
.scroll{overflow-x:auto}table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums}\
th,td{padding:.35rem .5rem;border-bottom:1px solid #e5e5e5;text-align:right;vertical-align:top}\
th:first-child,td:first-child{text-align:left}thead th{background:#f4f6f8}caption{text-align:left;font-weight:600;padding:.25rem 0}.scroll{margin-bottom:1rem}\
.flag{display:inline-block;font-size:.75rem;padding:0 .35rem;border-radius:.6rem;white-space:nowrap}\
.est{background:#fff1c2;color:#6b4d00}.inc{background:#fde0dd;color:#8a1c12}.und{background:#eee;color:#555}\
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(min(100%,28rem),1fr));gap:1.5rem}figure{margin:0}figure svg{width:100%;height:auto;display:block}figcaption{font-size:.85rem;color:#555}\
footer{margin-top:2rem;padding-bottom:2rem;color:#555;font-size:.9rem;border-top:1px solid #ddd}";

/// The page.
pub fn html(r: &Report) -> String {
    let y = r.period.year;
    let e = |s: &str| escape(s);
    let mut h = String::with_capacity(32 * 1024);
    let title = format!("{} — energy and environmental disclosure {y}", r.site.name);
    let _ = write!(
        h,
        r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>{}</title><style>{STYLE}</style></head><body>"#,
        e(&title)
    );
    // Header.
    let _ = write!(
        h,
        r#"<header><h1>{}</h1><p class="sub">Energy and environmental disclosure, {y}{}</p>"#,
        e(&r.site.name),
        if r.period.to_date {
            " (year to date)"
        } else {
            ""
        }
    );
    if let Some(d) = &r.site.description {
        let _ = write!(h, "<p>{}</p>", e(d));
    }
    if let Some(o) = &r.site.operator {
        let _ = write!(h, "<p>Operated by {}.</p>", e(o));
    }
    h.push_str(r#"<nav aria-label="Years"><ul>"#);
    let mut years = r.years_available.clone();
    if !years.contains(&y) {
        years.push(y);
        years.sort_unstable_by(|a, b| b.cmp(a));
    }
    for other in years {
        let current = if other == y {
            r#" aria-current="page""#
        } else {
            ""
        };
        let _ = write!(
            h,
            r#"<li><a href="/public?year={other}"{current}>{other}</a></li>"#
        );
    }
    h.push_str("</ul></nav></header><main>");

    // The year's figures.
    let t = &r.total;
    let _ = write!(
        h,
        r#"<section aria-labelledby="year"><h2 id="year">Figures for {y}</h2><p>Period: {} to {} (UTC, end excluded){}.</p><div class="scroll" tabindex="0"><table id="figures"><caption>Indicators, {y}</caption><thead><tr><th scope="col">Indicator</th><th scope="col">Value</th><th scope="col">Status</th><th scope="col">Coverage</th></tr></thead><tbody>"#,
        date_text(&r.period.from),
        date_text(&r.period.to),
        if r.period.to_date {
            ", figures to date"
        } else {
            ""
        }
    );
    let rows: [AmountRow; 6] = [
        (
            "facility-energy",
            "Energy consumed (facility, E<sub>DC</sub>)",
            &t.facility_energy_kwh,
            mwh,
            "MWh",
        ),
        (
            "it-energy",
            "IT equipment energy (E<sub>IT</sub>)",
            &t.it_energy_kwh,
            mwh,
            "MWh",
        ),
        (
            "heat-reused",
            "Heat reused outside the site",
            &t.heat_reused_kwh,
            mwh,
            "MWh",
        ),
        (
            "renewable-energy",
            "Renewable energy",
            &t.renewable_energy_kwh,
            mwh,
            "MWh",
        ),
        (
            "emissions-location",
            "Scope 2 emissions, location-based",
            &t.emissions_location_based_t_co2e,
            tonnes,
            "t CO<sub>2</sub>e",
        ),
        (
            "emissions-market",
            "Scope 2 emissions, market-based",
            &t.emissions_market_based_t_co2e,
            tonnes,
            "t CO<sub>2</sub>e",
        ),
    ];
    let indicators: [(&str, &str, &Fig, Style, &str); 4] = [
        (
            "pue",
            "PUE (power usage effectiveness)",
            &t.pue,
            Style::Plain,
            "",
        ),
        (
            "erf",
            "ERF (energy reuse factor)",
            &t.erf,
            Style::Percent,
            "",
        ),
        (
            "ref",
            "REF (renewable energy factor)",
            &t.ref_,
            Style::Percent,
            "",
        ),
        (
            "wue",
            "WUE (water usage effectiveness)",
            &t.wue_l_per_kwh,
            Style::Plain,
            "\u{a0}L/kWh",
        ),
    ];
    for (id, name, f, style, unit) in indicators {
        let v = fig_value(f, style);
        let unit = if f.value.is_some() { unit } else { "" };
        let _ = write!(
            h,
            r#"<tr id="{id}"><th scope="row">{name}</th><td class="value">{v}{unit}</td><td>{}</td><td>{}</td></tr>"#,
            status_text(f.status),
            coverage(f)
        );
    }
    h.push_str(r#"</tbody></table></div><div class="scroll" tabindex="0"><table id="amounts"><caption>Energy, heat and emissions, YEAR</caption><thead><tr><th scope="col">Amount</th><th scope="col">Value</th><th scope="col">Status</th><th scope="col">Coverage</th></tr></thead><tbody>"#.replace("YEAR", &y.to_string()).as_str());
    for (id, name, f, show, unit) in rows {
        let v = show(f.value);
        let unit = if f.value.is_some() {
            format!("\u{a0}{unit}")
        } else {
            String::new()
        };
        let _ = write!(
            h,
            r#"<tr id="{id}"><th scope="row">{name}</th><td class="value">{v}{unit}</td><td>{}</td><td>{}</td></tr>"#,
            status_text(f.status),
            coverage(f)
        );
    }
    h.push_str("</tbody></table></div><p>Each amount has the status and coverage of its own meters; each indicator those of the least trustworthy of its inputs. Emissions are given only for a period the grid meter covers in full.</p>");
    h.push_str(r#"<p class="legend"><strong>Legend.</strong> No badge: measured over the whole period. <span class="flag est">estimated</span> the figure includes estimated or gap-filled data. <span class="flag inc">incomplete</span> data is missing for part of the period: no value is given. <span class="flag und">not available</span> the site has no meter for an input. Coverage: the share of the period covered by data, for the least covered input. n/a: not available.</p></section>"#);

    // Monthly table.
    let _ = write!(
        h,
        r#"<section aria-labelledby="monthly"><h2 id="monthly">Monthly figures</h2><div class="scroll" tabindex="0"><table id="months"><caption>Monthly figures, {y}</caption><thead><tr><th scope="col">Month</th><th scope="col">Energy consumed (MWh)</th><th scope="col">IT energy (MWh)</th><th scope="col">PUE</th><th scope="col">ERF</th><th scope="col">REF</th><th scope="col">WUE (L/kWh)</th><th scope="col">Heat reused (MWh)</th><th scope="col">Location-based (t CO<sub>2</sub>e)</th><th scope="col">Market-based (t CO<sub>2</sub>e)</th></tr></thead><tbody>"#
    );
    for m in &r.months {
        let cell = |f: &Fig, s: Style| format!("<td>{}{}</td>", fig_value(f, s), flag(f.status));
        let amount = |f: &Fig, show: fn(Option<f64>) -> String| {
            format!("{}{}", show(f.value), flag(f.status))
        };
        let _ = write!(
            h,
            r#"<tr data-period="{}"><th scope="row">{}</th><td>{}</td><td>{}</td>{}{}{}{}<td>{}</td><td>{}</td><td>{}</td></tr>"#,
            e(&m.period),
            e(&month_name(&m.period)),
            amount(&m.facility_energy_kwh, mwh),
            amount(&m.it_energy_kwh, mwh),
            cell(&m.pue, Style::Plain),
            cell(&m.erf, Style::Percent),
            cell(&m.ref_, Style::Percent),
            cell(&m.wue_l_per_kwh, Style::Plain),
            amount(&m.heat_reused_kwh, mwh),
            amount(&m.emissions_location_based_t_co2e, tonnes),
            amount(&m.emissions_market_based_t_co2e, tonnes),
        );
    }
    h.push_str("</tbody></table></div></section>");

    // Charts.
    let labels: Vec<String> = r.months.iter().map(|m| short_month(&m.period)).collect();
    let to_mwh = |f: fn(&Row) -> Option<f64>| -> Vec<Option<f64>> {
        r.months.iter().map(|m| f(m).map(|k| k / 1000.0)).collect()
    };
    let charts = [
        Chart {
            title: format!("Energy consumed per month, {y}"),
            unit: "MWh".into(),
            labels: labels.clone(),
            series: vec![
                SeriesData {
                    name: "Facility (E_DC)".into(),
                    values: to_mwh(|m| m.facility_energy_kwh.value),
                },
                SeriesData {
                    name: "IT equipment (E_IT)".into(),
                    values: to_mwh(|m| m.it_energy_kwh.value),
                },
            ],
            kind: Kind::Bars,
            targets: Vec::new(),
            from_zero: true,
        },
        Chart {
            title: format!("PUE per month, {y}"),
            unit: "PUE".into(),
            labels: labels.clone(),
            series: vec![SeriesData {
                name: "PUE".into(),
                values: r.months.iter().map(|m| m.pue.value).collect(),
            }],
            kind: Kind::Lines,
            targets: Vec::new(),
            from_zero: false,
        },
        Chart {
            title: format!("Heat reused per month, {y}"),
            unit: "MWh".into(),
            labels,
            series: vec![SeriesData {
                name: "Heat reused".into(),
                values: to_mwh(|m| m.heat_reused_kwh.value),
            }],
            kind: Kind::Bars,
            targets: Vec::new(),
            from_zero: true,
        },
    ];
    h.push_str(
        r#"<section aria-labelledby="charts"><h2 id="charts">Charts</h2><div class="charts">"#,
    );
    for c in &charts {
        let _ = write!(
            h,
            r##"<figure>{}<figcaption>{}. The values are in the <a href="#months">monthly table</a>.</figcaption></figure>"##,
            c.draw().to_svg(),
            e(&c.title)
        );
    }
    h.push_str("</div></section>");

    // Methodology.
    let m = &r.methodology;
    h.push_str(
        r#"<section aria-labelledby="methodology"><h2 id="methodology">Methodology</h2><ul>"#,
    );
    for s in &m.standards {
        let _ = write!(
            h,
            "<li><strong>{}</strong>: {}.</li>",
            e(s.id),
            e(s.used_for)
        );
    }
    let _ = write!(
        h,
        "</ul><p>IT equipment energy is metered at the {} (ISO/IEC 30134-2 measurement category {}). Heat reused is heat handed over to a user outside the site; it is not subtracted from the PUE.</p><p>Gap rule in force: <strong>{}</strong>. {}</p><p>Grid emission factors: zone {}, {} factors only, source: {}. Location-based emissions use the grid's average factor for each hour: {}. Market-based emissions use the site's contractual instruments first, then the residual mix. Marginal factors are never used here.</p><p>Time basis: {}. Figures are computed from the site's boundary meters only.</p></section>",
        e(m.it_measurement_point),
        m.it_measurement_category,
        e(m.gap_rule),
        e(m.gap_rule_description),
        e(&m.grid_zone),
        e(m.grid_factor_basis),
        e(&m.grid_factor_source),
        e(m.grid_factor_rule),
        e(m.time_basis),
    );

    // Coverage.
    h.push_str(r#"<section aria-labelledby="coverage"><h2 id="coverage">Data coverage</h2>"#);
    let _ = write!(
        h,
        "<p>Coverage of the {y} figures: PUE {}, ERF {}, REF {}, WUE {}.</p>",
        coverage(&t.pue),
        coverage(&t.erf),
        coverage(&t.ref_),
        coverage(&t.wue_l_per_kwh)
    );
    let count = |s: &str| r.coverage.months_by_pue_status.get(s).copied().unwrap_or(0);
    let _ = write!(
        h,
        "<p>Months with a measured PUE: {}; estimated: {}; incomplete: {}; not available: {}.</p>",
        count("measured"),
        count("estimated"),
        count("incomplete"),
        count("undefined")
    );
    if r.coverage.roles_without_meter.is_empty() {
        h.push_str("<p>Every kind of meter the figures need is installed.</p>");
    } else {
        let roles: Vec<String> = r
            .coverage
            .roles_without_meter
            .iter()
            .map(|s| e(&s.replace('-', " ")))
            .collect();
        let _ = write!(
            h,
            "<p>Not metered at this site (the figures that need them are not available): {}.</p>",
            roles.join(", ")
        );
    }
    let _ = write!(h, "<p>{}</p></section>", e(r.coverage.note));

    // Open data.
    let _ = write!(
        h,
        r#"<section aria-labelledby="data"><h2 id="data">Open data</h2><p>The figures on this page, with their status and coverage: <a href="/public/data.json?year={y}">data.json</a> (JSON) and <a href="/public/data.csv?year={y}">data.csv</a> (CSV, one row per month and a total row). Licence: {}.</p></section></main>"#,
        e(&r.licence)
    );

    // Footer.
    let _ = write!(
        h,
        r#"<footer><p>Last updated: <time id="updated" datetime="{0}">{0}</time>.{1}</p></footer></body></html>"#,
        e(&r.generated_at),
        r.site
            .contact
            .as_deref()
            .map(|c| format!(" Contact: {}.", e(c)))
            .unwrap_or_default()
    );
    h
}

/// One CSV field (RFC 4180).
fn field(s: &str) -> String {
    if s.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// The CSV header.
pub const CSV_HEADER: &str = "row,period,from,to,facility_energy_kwh,facility_energy_status,facility_energy_coverage,it_energy_kwh,it_energy_status,it_energy_coverage,heat_reused_kwh,heat_reused_status,heat_reused_coverage,renewable_energy_kwh,renewable_energy_status,renewable_energy_coverage,pue,pue_status,pue_coverage,erf,erf_status,erf_coverage,ref,ref_status,ref_coverage,wue_l_per_kwh,wue_status,wue_coverage,emissions_location_based_t_co2e,emissions_location_based_status,emissions_location_based_coverage,emissions_market_based_t_co2e,emissions_market_based_status,emissions_market_based_coverage";

/// `data.csv`: a header, one row per month and a total row, CRLF ends.
pub fn csv(r: &Report) -> String {
    let opt = |v: Option<f64>| v.map(|v| v.to_string()).unwrap_or_default();
    let mut out = String::from(CSV_HEADER);
    out.push_str("\r\n");
    let rows = r
        .months
        .iter()
        .map(|m| ("month", m))
        .chain(std::iter::once(("total", &r.total)));
    for (kind, m) in rows {
        let mut cells = vec![
            kind.to_owned(),
            m.period.clone(),
            m.from.clone(),
            m.to.clone(),
        ];
        for f in [
            &m.facility_energy_kwh,
            &m.it_energy_kwh,
            &m.heat_reused_kwh,
            &m.renewable_energy_kwh,
            &m.pue,
            &m.erf,
            &m.ref_,
            &m.wue_l_per_kwh,
            &m.emissions_location_based_t_co2e,
            &m.emissions_market_based_t_co2e,
        ] {
            cells.push(opt(f.value));
            cells.push(f.status.to_owned());
            cells.push(opt(f.coverage));
        }
        let line: Vec<String> = cells.iter().map(|c| field(c)).collect();
        out.push_str(&line.join(","));
        out.push_str("\r\n");
    }
    out
}

// ---- serving ----

/// A computed year: when, and what (keyed by year and end).
type Cached = (Instant, Arc<Report>);

/// The page's settings and its cache of computed years.
#[derive(Debug, Default)]
pub struct PublicState {
    cfg: PublicConfig,
    cache: Mutex<HashMap<(i64, i64), Cached>>,
    /// One computation at a time: the page needs no token, so a crowd of
    /// requests (or one client asking for every year at once) must not
    /// fill the blocking pool or queue the API's reads behind N copies of
    /// the same year; later requests for a year find it in the cache.
    compute: tokio::sync::Mutex<()>,
}

impl PublicState {
    /// State for `cfg`.
    pub fn new(cfg: PublicConfig) -> Self {
        PublicState {
            cfg,
            cache: Mutex::new(HashMap::new()),
            compute: tokio::sync::Mutex::new(()),
        }
    }

    fn cached(&self, key: (i64, i64)) -> Option<Arc<Report>> {
        let cache = self.cache.lock().ok()?;
        cache
            .get(&key)
            .filter(|(at, _)| at.elapsed() < CACHE_TTL)
            .map(|(_, r)| r.clone())
    }
}

/// Years from the ledger's first data (site readings or energy) to `now`,
/// newest first.
fn years_with_data(
    conn: &dyn crate::backend::LedgerRead,
    now_ms: i64,
) -> Result<Vec<i64>, crate::backend::LedgerError> {
    let first = conn.first_data_ms()?;
    let current = Date::from_ms(now_ms).y;
    let first = first.map_or(current, |t| Date::from_ms(t).y.clamp(1970, current));
    Ok((first..=current).rev().collect())
}

fn not_enabled() -> Response {
    (
        StatusCode::NOT_FOUND,
        axum::Json(serde_json::json!({ "error": "the public disclosure page is not enabled" })),
    )
        .into_response()
}

async fn report(s: &AppState, q: &HashMap<String, String>) -> Result<Arc<Report>, Response> {
    let state = s.public_state().clone();
    if !state.cfg.enabled {
        return Err(not_enabled());
    }
    let now = crate::now_ms();
    let year = year(q.get("year").map(String::as_str), now)
        .map_err(|e| ApiError::BadRequest(e).into_response())?;
    let key = (year.year, year.to_ms);
    if let Some(r) = state.cached(key) {
        return Ok(r);
    }
    let _one = state.compute.lock().await;
    if let Some(r) = state.cached(key) {
        return Ok(r);
    }
    let (site, carbon) = (s.site_arc(), s.carbon_arc());
    let label = year.year.to_string();
    let st = state.clone();
    let result = s
        .read(move |c| {
            let years = years_with_data(c, now)?;
            if !years.contains(&year.year) {
                return Ok(None);
            }
            Ok(Some(
                crate::report::summary(c, &site, &carbon, &label, year.from_ms, year.to_ms)
                    .map(|sum| Report::new(&st.cfg, &site, &carbon, year, years, &sum, now)),
            ))
        })
        .await
        .map_err(IntoResponse::into_response)?;
    let Some(result) = result else {
        return Err((
            StatusCode::NOT_FOUND,
            axum::Json(serde_json::json!({
                "error": format!("no data for {}", year.year)
            })),
        )
            .into_response());
    };
    let r = Arc::new(result.map_err(|e| {
        // The detail may name meters: logged, not published.
        tracing::error!(error = %e, year = year.year, "public page: site figures");
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({ "error": "the figures are unavailable" })),
        )
            .into_response()
    })?);
    if let Ok(mut cache) = state.cache.lock() {
        cache.retain(|_, (at, _)| at.elapsed() < CACHE_TTL);
        cache.insert(key, (Instant::now(), r.clone()));
    }
    Ok(r)
}

/// The query of the three routes.
pub type PublicQuery = Query<HashMap<String, String>>;

fn with_headers(mut resp: Response, content_type: &'static str) -> Response {
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(CACHE_CONTROL),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    resp
}

/// `GET /public`: the disclosure page.
pub async fn page(State(s): State<AppState>, Query(q): PublicQuery) -> Response {
    match report(&s, &q).await {
        Ok(r) => with_headers(html(&r).into_response(), "text/html; charset=utf-8"),
        Err(e) => e,
    }
}

/// `GET /public/data.json`: the page's figures as JSON.
pub async fn data_json(State(s): State<AppState>, Query(q): PublicQuery) -> Response {
    match report(&s, &q).await {
        Ok(r) => match serde_json::to_string_pretty(&*r) {
            Ok(body) => with_headers(body.into_response(), "application/json"),
            Err(e) => ApiError::Internal(e.to_string()).into_response(),
        },
        Err(e) => e,
    }
}

/// `GET /public/data.csv`: one row per month and a total row.
pub async fn data_csv(State(s): State<AppState>, Query(q): PublicQuery) -> Response {
    match report(&s, &q).await {
        Ok(r) => {
            let mut resp = with_headers(
                csv(&r).into_response(),
                "text/csv; charset=utf-8; header=present",
            );
            if let Ok(v) = HeaderValue::from_str(&format!(
                "attachment; filename=\"public-{}.csv\"",
                r.period.year
            )) {
                resp.headers_mut().insert(header::CONTENT_DISPOSITION, v);
            }
            resp
        }
        Err(e) => e,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::site::{self, ManualReading};

    const KWH: u64 = 3_600_000_000_000; // µJ

    fn ms(y: i64, m: u32) -> i64 {
        Date::new(y, m, 1).unwrap().start_ms()
    }

    #[test]
    fn the_year_is_the_current_one_to_date_or_a_whole_past_one() {
        let now = Date::new(2026, 11, 23).unwrap().start_ms() + 10 * HOUR_MS;
        let y = year(None, now).unwrap();
        assert_eq!((y.year, y.from_ms, y.to_date), (2026, ms(2026, 1), true));
        assert_eq!(y.to_ms, Date::new(2026, 11, 23).unwrap().start_ms());
        let y = year(Some("2025"), now).unwrap();
        assert_eq!(
            (y.from_ms, y.to_ms, y.to_date),
            (ms(2025, 1), ms(2026, 1), false)
        );
        for bad in ["2027", "1969", "25", "+2025", "２０２５", "", "2025.0"] {
            assert!(year(Some(bad), now).is_err(), "{bad}");
        }
        // On 1 January: whole hours (a stable cache key), never empty.
        let y = year(None, ms(2026, 1) + 61_000).unwrap();
        assert_eq!(y.to_ms, ms(2026, 1) + HOUR_MS);
        let y = year(None, ms(2026, 1) + 5 * HOUR_MS + 7).unwrap();
        assert_eq!(y.to_ms, ms(2026, 1) + 5 * HOUR_MS);
    }

    #[test]
    fn numbers_group_thousands_and_csv_quotes_as_rfc_4180_says() {
        assert_eq!(num(1_234_567.891, 2), "1,234,567.89");
        assert_eq!(num(0.5, 2), "0.50");
        assert_eq!(num(-1234.0, 0), "-1,234");
        assert_eq!(num(-0.001, 2), "0.00");
        assert_eq!(field("a,b"), "\"a,b\"");
        assert_eq!(field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(field("plain"), "plain");
        assert_eq!(month_name("2025-02"), "February 2025");
        assert_eq!(short_month("2025-12"), "Dec");
    }

    /// Three hand-read months of 2025; the IT reading of February is an
    /// estimate. The ledger also holds a host that must not show.
    fn report() -> Report {
        let mut conn = crate::backend::open_in_memory().unwrap();
        let cfg: SiteConfig = toml::from_str(
            "it_category = 3\n[[meters]]\nname = \"grid\"\nrole = \"grid-import\"\n[[meters]]\nname = \"it\"\nrole = \"it\"\n[[meters]]\nname = \"heat\"\nrole = \"heat-delivered\"\n",
        )
        .unwrap();
        let read = |conn: &mut dyn crate::backend::Db, meter: &str, kwh: [u64; 3], est: bool| {
            let r: Vec<ManualReading> = (0..3)
                .map(|i| ManualReading {
                    start_ms: ms(2025, i + 1),
                    end_ms: ms(2025, i + 2),
                    amount: u128::from(kwh[i as usize] * KWH),
                    estimated: est && i == 1,
                    note: None,
                })
                .collect();
            site::add_manual(conn, meter, &r, 0).unwrap();
        };
        read(&mut *conn, "grid", [150_000, 130_000, 120_000], false);
        read(&mut *conn, "it", [100_000, 100_000, 100_000], true);
        read(&mut *conn, "heat", [15_000, 0, 12_000], false);
        let carbon = crate::config::CarbonConfig::default();
        let y = year(Some("2025"), ms(2026, 6)).unwrap();
        let s = crate::report::summary(&*conn, &cfg, &carbon, "2025", y.from_ms, y.to_ms).unwrap();
        let public = PublicConfig {
            enabled: true,
            site_name: Some("Site <Nord> & co".into()),
            ..PublicConfig::default()
        };
        let years = years_with_data(&*conn, ms(2026, 6)).unwrap();
        assert_eq!(years, [2026, 2025]);
        Report::new(&public, &cfg, &carbon, y, years, &s, ms(2026, 6))
    }

    #[test]
    fn months_show_their_figures_and_flags_and_the_year_says_incomplete() {
        let r = report();
        assert_eq!(r.months.len(), 12);
        assert_eq!(r.months[0].pue.value, Some(1.5));
        assert_eq!(r.months[0].pue.status, "measured");
        assert_eq!(r.months[1].pue.status, "estimated");
        assert_eq!(r.months[3].pue.status, "incomplete");
        // April to December have no readings: under the strict rule the
        // year has no PUE and no energy total, and the amounts say why,
        // with their own coverage (January to March: 90 of 365 days).
        assert_eq!(r.total.pue.value, None);
        assert_eq!(r.total.pue.status, "incomplete");
        assert_eq!(r.total.facility_energy_kwh.value, None);
        assert_eq!(r.total.facility_energy_kwh.status, "incomplete");
        let cov = r.total.facility_energy_kwh.coverage.unwrap();
        assert!((cov - 90.0 / 365.0).abs() < 1e-9, "{cov}");
        assert_eq!(r.months[2].facility_energy_kwh.value, Some(120_000.0));
        // Each amount has its own status: the grid meter is measured while
        // the IT meter is estimated, so February's PUE is estimated, its
        // facility energy measured and its IT energy estimated.
        assert_eq!(r.months[1].facility_energy_kwh.status, "measured");
        assert_eq!(r.months[1].it_energy_kwh.status, "estimated");
        assert_eq!(r.months[1].pue.status, "estimated");
        assert_eq!(r.methodology.it_measurement_point, "IT equipment input");

        let h = html(&r);
        // The basis and the hourly rule, as in the exports and the dossier.
        assert!(h.contains("lifecycle factors only"), "{h}");
        assert!(h.contains("whether used over the whole hour or part of it"));
        assert!(h.starts_with("<!DOCTYPE html><html lang=\"en\">"));
        // Escaped everywhere.
        assert!(h.contains("Site &lt;Nord&gt; &amp; co") && !h.contains("<Nord>"));
        let row = |p: &str| {
            let start = h.find(&format!("data-period=\"{p}\"")).unwrap();
            &h[start..start + h[start..].find("</tr>").unwrap()]
        };
        assert!(
            row("2025-01").contains("<td>1.50</td>"),
            "{}",
            row("2025-01")
        );
        assert!(row("2025-01").contains("<td>10.0\u{a0}%</td>"));
        assert!(row("2025-02").contains("1.30 <span class=\"flag est\""));
        assert!(
            row("2025-02").contains("<td>130.00</td><td>100.00 <span class=\"flag est\""),
            "{}",
            row("2025-02")
        );
        // The year's amounts table says incomplete, with the coverage.
        let amounts = &h[h.find("id=\"facility-energy\"").unwrap()..];
        let amounts = &amounts[..amounts.find("</tr>").unwrap()];
        assert!(
            amounts.contains("n/a") && amounts.contains("flag inc"),
            "{amounts}"
        );
        assert!(amounts.contains("24.7\u{a0}%"), "{amounts}");
        assert!(row("2025-03").contains("<td>120.00</td>"));
        assert!(row("2025-04").contains("flag inc"));
        assert_eq!(h.matches("<svg").count(), 3);
        assert!(h.contains("ISO/IEC 30134-2") && h.contains("GHG Protocol Scope 2"));
        assert!(h.contains("/public/data.csv?year=2025"));
        assert!(h.contains("href=\"/public?year=2026\""));

        let c = csv(&r);
        let lines: Vec<&str> = c.split("\r\n").collect();
        assert_eq!(lines[0], CSV_HEADER);
        assert_eq!(lines.len(), 1 + 12 + 1 + 1, "{c}"); // + the empty tail
        assert!(lines[1].starts_with("month,2025-01,2025-01-01T00:00:00.000Z,"));
        assert!(lines[13].starts_with("total,2025,"));
        let cols = CSV_HEADER.split(',').count();
        assert!(lines[1..14].iter().all(|l| l.split(',').count() == cols));

        let j = serde_json::to_value(&r).unwrap();
        assert_eq!(j["version"], 2);
        assert_eq!(j["months"][1]["it_energy_kwh"]["status"], "estimated");
        assert_eq!(j["months"][2]["facility_energy_kwh"]["value"], 120_000.0);
        assert_eq!(j["licence"], "CC-BY-4.0");
        assert_eq!(j["months"][0]["pue"]["value"], 1.5);
        assert_eq!(j["months"][1]["ref"]["status"], r.months[1].ref_.status);
    }
    #[test]
    fn years_start_at_the_first_plausible_data() {
        let mut db = crate::backend::open_in_memory().unwrap();
        let now = Date::new(2026, 11, 23).unwrap().start_ms();
        assert_eq!(years_with_data(&*db, now).unwrap(), [2026]);
        // A meter with an unset clock, and real data from 2025.
        vigie_ledger::write_history(&mut *db, |w| {
            let q = vigie_protocol::GaugeQuantity::HeatEnergyKwh;
            w.register("h", "m", q, 1000, 1.0)?;
            let march = Date::new(2025, 3, 1).unwrap().start_ms();
            w.hour("h", "s", march, vigie_energy::Microjoules(1))
        })
        .unwrap();
        assert_eq!(years_with_data(&*db, now).unwrap(), [2026, 2025]);
    }
}
