//! The permit dossier: energy, PUE, ERF and the heat-reuse potential study
//! of a period, as one self-contained HTML page or an A4 PDF with the same
//! content and the same charts.
//!
//! Three steps: [`gather`] reads the ledger and the configuration into
//! [`Facts`] (the only step doing I/O); [`content`] turns facts into a
//! [`Dossier`], a list of blocks (pure); [`Dossier::to_html`] and
//! [`Dossier::to_pdf`] render the blocks. Nothing here reads the clock:
//! the generation time is an argument.

use crate::backend::Db;
use crate::charts::{Chart, Drawing, Kind, SeriesData, escape};
use crate::config::CollectorConfig;
use crate::export::date::{self, Date};
use crate::export::targets::{self, TargetCheck};
use crate::heat_api::PotentialRequest;
use crate::report::{self, Span, Summary};
use crate::site::{self, MeterConfig, Role, SiteError};
use serde::Deserialize;
use serde_json::Value as Json;
use std::fmt::Write as _;

pub mod cli;
pub mod http;

/// `[dossier]`: what the ledger cannot know.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DossierConfig {
    /// Site name on the cover (default: the MQTT site id).
    #[serde(default)]
    pub site_name: Option<String>,
    /// Operator (company) on the cover.
    #[serde(default)]
    pub operator: Option<String>,
    /// Commissioning date `YYYY-MM-DD`: selects the EnEfG PUE and ERF
    /// targets.
    #[serde(default)]
    pub commissioned: Option<String>,
    /// Assumptions of the heat-reuse potential study, the body of
    /// `POST /api/v1/heat/potential`; absent: the dossier says the study
    /// is not configured.
    #[serde(default)]
    pub heat_study: Option<PotentialRequest>,
    /// `[dossier.economics]`: the waste-heat cost-benefit analysis (French
    /// ICPE file, permit applications), over the study's heat and heat-pump
    /// electricity; absent: the dossier says it is not configured.
    #[serde(default)]
    pub economics: Option<Economics>,
}

/// `[dossier.economics]`: the assumptions of the cost-benefit analysis,
/// each with its basis in `basis` (key: the field name).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Economics {
    /// Who takes the heat (network, building), named in the dossier.
    pub offtaker: String,
    /// The offtaker's heat demand by month (12 values, MWh): caps the heat
    /// sold at the study's monthly profile; absent: all the study's heat is
    /// sold.
    #[serde(default)]
    pub offtaker_demand_mwh_by_month: Option<Vec<f64>>,
    /// Capital cost of the plant (heat pump, exchangers), €.
    pub capex_eur: f64,
    /// Distance to the heat network's connection point, m.
    pub distance_m: f64,
    /// Cost of the connection pipe per metre, €/m.
    pub connection_eur_per_m: f64,
    /// Operating cost per year without the electricity, €.
    pub opex_eur_per_year: f64,
    /// Price paid for the heat, €/MWh.
    pub heat_price_eur_per_mwh: f64,
    /// Price of the heat pump's electricity, €/MWh.
    pub electricity_price_eur_per_mwh: f64,
    /// Discount rate per year (0.05 for 5 %).
    pub discount_rate: f64,
    /// Horizon, years.
    pub horizon_years: u32,
    /// The heat source the delivered heat displaces (e.g. `gas boiler`).
    pub reference_heat_source: String,
    /// Its emission factor, kg CO2e per MWh of heat.
    pub reference_kg_per_mwh_heat: f64,
    /// Emission factor of the heat pump's electricity, kg CO2e per MWh.
    pub electricity_kg_per_mwh: f64,
    /// The basis of each assumption (an offer, a tariff, a study, a
    /// published factor), by field name; missing ones read "not stated".
    #[serde(default)]
    pub basis: std::collections::BTreeMap<String, String>,
}

/// What the dossier reads besides the ledger: the parts of the collector
/// configuration it needs (the HTTP server keeps one).
#[derive(Debug, Clone)]
pub struct Settings {
    /// `[site]`.
    pub site: crate::site::SiteConfig,
    /// `[carbon]`.
    pub carbon: crate::config::CarbonConfig,
    /// `[dossier]`.
    pub dossier: DossierConfig,
    /// The MQTT site id (the cover's default site name).
    pub site_id: String,
}

impl Settings {
    /// From the collector's configuration.
    pub fn from_config(cfg: &CollectorConfig) -> Self {
        Self {
            site: cfg.site.clone(),
            carbon: cfg.carbon.clone(),
            dossier: cfg.dossier.clone(),
            site_id: cfg.mqtt.site.clone(),
        }
    }
}

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One self-contained HTML file.
    Html,
    /// A4 PDF.
    Pdf,
}

impl Format {
    /// `html` or `pdf`.
    pub fn parse(s: &str) -> Option<Format> {
        match s {
            "html" => Some(Format::Html),
            "pdf" => Some(Format::Pdf),
            _ => None,
        }
    }

    /// HTTP content type.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Html => "text/html; charset=utf-8",
            Format::Pdf => "application/pdf",
        }
    }

    /// File extension.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Html => "html",
            Format::Pdf => "pdf",
        }
    }
}

/// Why a dossier could not be made.
#[derive(Debug, thiserror::Error)]
pub enum DossierError {
    /// The request or the `[dossier]` section is wrong; the message says how.
    #[error("{0}")]
    Request(String),
    /// The site model or the ledger.
    #[error(transparent)]
    Site(#[from] SiteError),
}

/// A period `[from_ms, to_ms)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DossierRequest {
    /// Start, Unix ms.
    pub from_ms: i64,
    /// End (exclusive), Unix ms.
    pub to_ms: i64,
}

/// Longest period a dossier covers.
pub const MAX_PERIOD_DAYS: i64 = 3653;

/// Parses the period the same way for the CLI and HTTP: `YYYY-MM-DD`,
/// RFC 3339 or Unix ms; default the calendar year before `now_ms`.
pub fn request(
    from: Option<&str>,
    to: Option<&str>,
    now_ms: i64,
) -> Result<DossierRequest, String> {
    let (from_ms, to_ms) = date::period(from, to, now_ms)?;
    // Every month is computed and drawn: bound the work one request asks.
    if to_ms - from_ms > MAX_PERIOD_DAYS * 86_400_000 {
        return Err(format!(
            "the period may span at most {MAX_PERIOD_DAYS} days (ten years)"
        ));
    }
    Ok(DossierRequest { from_ms, to_ms })
}

/// One meter over the period, for the provenance table.
#[derive(Debug, Clone, PartialEq)]
pub struct MeterFacts {
    /// Name in `[[site.meters]]`.
    pub name: String,
    /// Role, as configured (`grid-import`, ...).
    pub role: String,
    /// Where its numbers come from.
    pub source: String,
    /// Total used, in `unit`.
    pub total: Option<f64>,
    /// `kWh` or `L`.
    pub unit: String,
    /// Share of the total from estimated samples, 0 to 1.
    pub estimated_share: Option<f64>,
    /// Share of the period covered by samples, 0 to 1.
    pub coverage: Option<f64>,
}

/// The heat-reuse potential study as configured.
#[derive(Debug, Clone, PartialEq)]
pub enum Study {
    /// No `[dossier.heat_study]`.
    NotConfigured,
    /// The assumptions were refused; the reason.
    Failed(String),
    /// The result of [`crate::heat_api::study`].
    Done {
        /// The study's JSON.
        result: Json,
    },
}

/// Everything the dossier shows, read from the ledger and configuration.
#[derive(Debug, Clone)]
pub struct Facts {
    /// Site name.
    pub site_name: String,
    /// Operator.
    pub operator: Option<String>,
    /// The period.
    pub period: DossierRequest,
    /// When it was generated, Unix ms.
    pub generated_ms: i64,
    /// The period and its months.
    pub summary: Summary,
    /// Heat removed and rejected per month (kWh thermal), when metered;
    /// one entry per month of `summary.months`.
    pub heat_removed: Option<Vec<Option<f64>>>,
    /// Heat rejected to the environment per month.
    pub heat_rejected: Option<Vec<Option<f64>>>,
    /// The meters over the whole period.
    pub meters: Vec<MeterFacts>,
    /// Commissioning date, if configured.
    pub commissioned: Option<Date>,
    /// EnEfG targets checked against the period.
    pub targets: Vec<TargetCheck>,
    /// The potential study.
    pub study: Study,
    /// The cost-benefit analysis' assumptions.
    pub economics: Option<Economics>,
    /// `strict` or `scale-to-period`.
    pub gap_rule: &'static str,
    /// ISO/IEC 30134-2 category of the IT meter.
    pub it_category: u8,
    /// Grid zone, static factor and its source, and the inventory's basis
    /// (`lifecycle` or `direct`, the static factor's too).
    pub carbon: (String, f64, String, &'static str),
}

fn role_name(r: Role) -> String {
    r.as_str().to_owned()
}

fn meter_source(m: &MeterConfig) -> String {
    if let Some(r) = &m.register {
        format!("register {}/{} ({:?})", r.host, r.sensor, r.quantity)
    } else if m.sensors.is_empty() {
        "hand readings (CSV import or API)".into()
    } else {
        let s: Vec<String> = m
            .sensors
            .iter()
            .map(|s| format!("{}/{}", s.host, s.sensor))
            .collect();
        format!("ledger: {}", s.join(", "))
    }
}

/// Reads the ledger and configuration for the period. `progress` hears
/// each step (the CLI prints them).
pub fn gather(
    conn: &dyn Db,
    cfg: &Settings,
    req: DossierRequest,
    now_ms: i64,
    progress: &mut dyn FnMut(&str),
) -> Result<Facts, DossierError> {
    let d = &cfg.dossier;
    let commissioned = d
        .commissioned
        .as_deref()
        .map(|c| {
            Date::parse(c).ok_or_else(|| {
                DossierError::Request(format!(
                    "[dossier] commissioned: expected YYYY-MM-DD, got {c:?}"
                ))
            })
        })
        .transpose()?
        .or(cfg.site.commissioned);
    let label = period_label(req);
    progress("site figures for the period and each month");
    let summary = report::summary(conn, &cfg.site, &cfg.carbon, &label, req.from_ms, req.to_ms)?;
    progress("meters");
    let whole = site::figures(conn, &cfg.site, &cfg.carbon.market, req.from_ms, req.to_ms)?;
    let meters = whole
        .totals
        .iter()
        .map(|(name, role, input)| {
            let m = cfg.site.meters.iter().find(|m| &m.name == name);
            let sum = input.measured + input.estimated;
            MeterFacts {
                name: name.clone(),
                role: role_name(*role),
                source: m.map(meter_source).unwrap_or_default(),
                total: input.total,
                unit: input.unit.to_owned(),
                estimated_share: (sum > 0.0).then(|| input.estimated / sum),
                coverage: input.coverage.as_ref().map(|c| 1.0 - c.missing_share()),
            }
        })
        .collect();
    let has = |r: Role| cfg.site.meters.iter().any(|m| m.role == r);
    let (mut removed, mut rejected) = (None, None);
    if has(Role::HeatRemoved) || has(Role::HeatRejected) {
        progress("heat removed and rejected per month");
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for m in &summary.months {
            let f = site::figures(conn, &cfg.site, &cfg.carbon.market, m.from_ms, m.to_ms)?;
            let of = |r: Role| f.totals.iter().find(|t| t.1 == r).and_then(|t| t.2.total);
            a.push(of(Role::HeatRemoved));
            b.push(of(Role::HeatRejected));
        }
        removed = has(Role::HeatRemoved).then_some(a);
        rejected = has(Role::HeatRejected).then_some(b);
    }
    let t = &summary.total;
    let targets = targets::check_with(
        Date::from_ms(req.to_ms - 1),
        commissioned,
        t.pue.value,
        t.erf.value.map(|v| v * 100.0),
        t.ref_.value.map(|v| v * 100.0),
        cfg.site.register.erf_exemption.as_ref(),
    );
    let study = match &d.heat_study {
        None => Study::NotConfigured,
        Some(s) => {
            progress("heat-reuse potential study");
            // Neither a PUE nor E_DC given: the period's measured PUE, not
            // the study's default, beside the measured figures.
            let measured = t
                .pue
                .value
                .filter(|p| p.is_finite() && *p >= 1.0)
                .filter(|_| s.assumed_pue.is_none() && s.annual_e_dc_kwh.is_none());
            let mut s = s.clone();
            if let Some(p) = measured {
                s.assumed_pue = Some((p * 1000.0).round() / 1000.0);
            }
            match crate::heat_api::study(&s) {
                Ok(mut result) => {
                    if measured.is_some()
                        && let Some(a) = result["assumptions"].as_array_mut()
                    {
                        for x in a.iter_mut().filter(|x| x["name"] == "PUE") {
                            x["basis"] = Json::String(format!(
                                "measured: the period's PUE ({}, section 1), no assumed_pue or annual_e_dc_kwh configured; E_DC = E_IT × PUE",
                                t.pue.status
                            ));
                        }
                    }
                    Study::Done { result }
                }
                Err(e) => Study::Failed(e),
            }
        }
    };
    Ok(Facts {
        site_name: d.site_name.clone().unwrap_or_else(|| {
            if cfg.site_id.is_empty() || cfg.site_id == "+" {
                "site name not configured ([dossier] site_name)".into()
            } else {
                cfg.site_id.clone()
            }
        }),
        operator: d.operator.clone(),
        period: req,
        generated_ms: now_ms,
        summary,
        heat_removed: removed,
        heat_rejected: rejected,
        meters,
        commissioned,
        targets,
        study,
        economics: d.economics.clone(),
        gap_rule: match cfg.site.gap_rule {
            site::GapRuleConfig::Strict => "strict",
            site::GapRuleConfig::ScaleToPeriod => "scale-to-period",
        },
        it_category: cfg.site.it_category,
        carbon: (
            cfg.carbon.zone.clone(),
            cfg.carbon.intensity_g_per_kwh,
            cfg.carbon.source.clone(),
            cfg.carbon.basis.as_str(),
        ),
    })
}

/// `2025` for a calendar year, else `2025-03-01 to 2025-05-31`.
fn period_label(req: DossierRequest) -> String {
    let (a, b) = (Date::from_ms(req.from_ms), Date::from_ms(req.to_ms - 1));
    let whole_days = req.from_ms == a.start_ms() && req.to_ms == b.start_ms() + 86_400_000;
    if whole_days && a.m == 1 && a.d == 1 && b.m == 12 && b.d == 31 && a.y == b.y {
        format!("{}", a.y)
    } else if whole_days {
        format!("{a} to {b}")
    } else {
        format!(
            "{} to {}",
            date::rfc3339(req.from_ms),
            date::rfc3339(req.to_ms)
        )
    }
}

/// A table: caption, column headers, rows of cells.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    /// Caption (HTML `<caption>`).
    pub caption: String,
    /// Column headers.
    pub header: Vec<String>,
    /// Rows.
    pub rows: Vec<Vec<String>>,
}

/// One block of the dossier.
#[derive(Debug, Clone, PartialEq)]
pub enum Block {
    /// A heading, level 1 to 3.
    Heading(u8, String),
    /// A paragraph.
    Para(String),
    /// A smaller note.
    Note(String),
    /// A table.
    Table(Table),
    /// A chart and its data.
    Chart {
        /// The chart.
        drawing: Drawing,
        /// Its numbers.
        data: Table,
    },
    /// A new page in the PDF (nothing in HTML).
    PageBreak,
}

/// The dossier's content.
#[derive(Debug, Clone, PartialEq)]
pub struct Dossier {
    /// Title (document metadata, page footers).
    pub title: String,
    /// The blocks in order.
    pub blocks: Vec<Block>,
}

/// Mark appended to estimated values.
pub const ESTIMATED: &str = "(estimated)";

fn num(v: Option<f64>, decimals: usize) -> String {
    match v {
        Some(v) if v.is_finite() => {
            let s = format!("{v:.decimals$}");
            // No "-0.000".
            if s.starts_with('-') && s[1..].chars().all(|c| c == '0' || c == '.') {
                s[1..].to_owned()
            } else {
                s
            }
        }
        _ => "n/a".into(),
    }
}

fn pct(v: Option<f64>) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{} %", num(Some(v * 100.0), 1)),
        _ => "n/a".into(),
    }
}

fn mwh(kwh: Option<f64>) -> Option<f64> {
    kwh.map(|k| k / 1000.0)
}

/// A figure's value with its estimated flag.
fn flagged(v: &report::Value, decimals: usize, scale: f64) -> String {
    let s = num(v.value.map(|x| x * scale), decimals);
    if v.status == "estimated" && v.value.is_some() {
        format!("{s} {ESTIMATED}")
    } else {
        s
    }
}

fn figure_row(
    name: &str,
    v: &report::Value,
    unit: &str,
    decimals: usize,
    scale: f64,
) -> Vec<String> {
    vec![
        name.into(),
        flagged(v, decimals, scale),
        unit.into(),
        v.status.into(),
        pct(v.coverage),
    ]
}

fn month_labels(months: &[Span]) -> Vec<String> {
    months.iter().map(|m| m.label.clone()).collect()
}

/// Monthly sums of an hourly profile (hour 0 = 1 January 00:00) over a
/// 365- or 366-day year.
/// The hours of each calendar month of an hourly year (8760 or 8784).
fn month_slices(hourly: &[f64]) -> Vec<&[f64]> {
    let leap = hourly.len() > 8760;
    let mut out = Vec::with_capacity(12);
    let mut h = 0usize;
    for d in [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ] {
        let end = (h + d * 24).min(hourly.len());
        out.push(&hourly[h.min(end)..end]);
        h = end;
    }
    out
}

fn hourly_to_months(hourly: &[f64]) -> Vec<f64> {
    let leap = hourly.len() > 8760;
    let days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    let mut out = Vec::with_capacity(12);
    let mut h = 0usize;
    for d in days {
        let end = (h + d * 24).min(hourly.len());
        out.push(hourly[h.min(end)..end].iter().sum());
        h = end;
    }
    out
}

/// Lays the facts out as the dossier's blocks.
pub fn content(f: &Facts) -> Dossier {
    let t = &f.summary.total;
    let months = &f.summary.months;
    let labels = month_labels(months);
    let mut b = Vec::new();
    let title = format!("Permit dossier: {}, {}", f.site_name, t.label);
    // Cover.
    b.push(Block::Heading(
        1,
        "Permit dossier: energy and heat reuse".into(),
    ));
    let mut cover = vec![
        vec!["Site".to_owned(), f.site_name.clone()],
        vec![
            "Period".into(),
            format!(
                "{} ({} to {}, UTC, end exclusive)",
                t.label,
                date::rfc3339(f.period.from_ms),
                date::rfc3339(f.period.to_ms)
            ),
        ],
        vec!["Generated".into(), date::rfc3339(f.generated_ms)],
        vec![
            "Generated by".into(),
            concat!("vigie-collector ", env!("CARGO_PKG_VERSION")).into(),
        ],
        vec![
            "Commissioning date".into(),
            f.commissioned
                .map_or("not configured ([site] commissioned)".into(), |d| {
                    d.to_string()
                }),
        ],
    ];
    if let Some(o) = &f.operator {
        cover.insert(1, vec!["Operator".into(), o.clone()]);
    }
    b.push(Block::Table(Table {
        caption: "Cover".into(),
        header: vec!["Item".into(), "Value".into()],
        rows: cover,
    }));
    b.push(Block::Para(
        "Contents: 1 Summary; 2 EnEfG targets; 3 Monthly energy; 4 PUE over time; 5 Heat profile over the year; 6 Heat-reuse potential study; 7 Methodology and data coverage; 8 Provenance.".into(),
    ));
    b.push(Block::Note(format!(
        "Every figure is computed from the site meters in the collector's ledger for the period. Values marked {ESTIMATED} rest at least in part on estimated samples; 'incomplete' means a meter did not cover the whole period under the strict gap rule, so no value is given; 'n/a' means the meters it needs are not configured."
    )));
    // 1. Summary.
    b.push(Block::Heading(2, "1 Summary".into()));
    let header = vec![
        "Indicator".to_owned(),
        "Value".into(),
        "Unit".into(),
        "Status".into(),
        "Coverage".into(),
    ];
    let rows = vec![
        figure_row("Facility energy E_DC", &t.facility_kwh, "MWh", 3, 1e-3),
        figure_row("IT energy E_IT", &t.it_kwh, "MWh", 3, 1e-3),
        figure_row(
            "Heat reused E_reused (thermal)",
            &t.heat_reused_kwh,
            "MWh",
            3,
            1e-3,
        ),
        figure_row(
            "Renewable energy E_renewable",
            &t.renewable_kwh,
            "MWh",
            3,
            1e-3,
        ),
        figure_row("PUE (E_DC / E_IT)", &t.pue, "ratio", 3, 1.0),
        figure_row("ERF (E_reused / E_DC)", &t.erf, "%", 1, 100.0),
        figure_row("REF (E_renewable / E_DC)", &t.ref_, "%", 1, 100.0),
        figure_row("WUE (water / E_IT)", &t.wue, "L/kWh", 3, 1.0),
        figure_row(
            "Scope 2 emissions, location-based",
            &t.emissions_location_t,
            "t CO2e",
            3,
            1.0,
        ),
        figure_row(
            "Scope 2 emissions, market-based",
            &t.emissions_market_t,
            "t CO2e",
            3,
            1.0,
        ),
    ];
    b.push(Block::Table(Table {
        caption: format!("Site figures, {}", t.label),
        header,
        rows,
    }));
    b.push(Block::Note(
        "Each energy row carries the status and coverage of its own meters; each indicator those of the least trustworthy of its inputs. Coverage is the share of the period covered by samples (of the least covered input).".into(),
    ));
    if let (Some(r), Some(dc)) = (t.renewable_kwh.value, t.facility_kwh.value)
        && r > dc
    {
        // As the KPI API's note on the figure.
        b.push(Block::Note(format!(
            "REF capped at 100 %: the renewable supply ({} MWh) exceeds E_DC ({} MWh); the excess is not energy used by the site.",
            num(mwh(Some(r)), 3),
            num(mwh(Some(dc)), 3)
        )));
    }
    // Water: input, potable share, WUE.
    b.push(Block::Heading(3, "Water".into()));
    let litres = |role: &str| {
        f.meters
            .iter()
            .find(|m| m.role == role && m.unit == "L")
            .and_then(|m| m.total)
    };
    let (total, potable) = (litres("water"), litres("water-potable"));
    let m3 = |l: Option<f64>| l.map_or("not metered".into(), |l| num(Some(l / 1000.0), 1));
    b.push(Block::Table(Table {
        caption: "Water use over the period".into(),
        header: vec!["Item".into(), "Value".into(), "Unit".into()],
        rows: vec![
            vec!["Water input".into(), m3(total), "m3".into()],
            vec!["of which potable".into(), m3(potable), "m3".into()],
            vec![
                "Potable share".into(),
                match (potable, total) {
                    (Some(p), Some(t)) if t > 0.0 => num(Some(p / t * 100.0), 1),
                    _ => "n/a".into(),
                },
                "%".into(),
            ],
            vec![
                "WUE (water input / E_IT)".into(),
                flagged(&t.wue, 3, 1.0),
                "L/kWh".into(),
            ],
        ],
    }));
    // 2. Targets.
    b.push(Block::Heading(2, "2 EnEfG targets".into()));
    b.push(Block::Table(Table {
        caption: "Energieeffizienzgesetz targets against the period's figures".into(),
        header: vec![
            "Target".into(),
            "Limit".into(),
            "Applies from".into(),
            "Value".into(),
            "Result".into(),
            "Basis and evidence".into(),
        ],
        rows: f
            .targets
            .iter()
            .map(|c| {
                let unit = if c.unit == "1" { "" } else { c.unit };
                let dec = if c.unit == "1" { 3 } else { 1 };
                vec![
                    c.label.into(),
                    c.limit.map_or("none".into(), |l| {
                        format!("{} {unit}", num(Some(l), dec)).trim().to_owned()
                    }),
                    c.applies_from.clone().unwrap_or_else(|| "-".into()),
                    c.value.map_or("n/a".into(), |v| {
                        format!("{} {unit}", num(Some(v), dec)).trim().to_owned()
                    }),
                    c.result.into(),
                    match &c.evidence {
                        Some(e) => {
                            format!("{} ({}). Exemption evidence: {e}", c.basis, c.legal_ref)
                        }
                        None => format!("{} ({})", c.basis, c.legal_ref),
                    },
                ]
            })
            .collect(),
    }));
    if f.commissioned.is_none() {
        b.push(Block::Note(
            "The commissioning date is not configured ([dossier] commissioned = \"YYYY-MM-DD\"): the PUE and ERF targets depend on it.".into(),
        ));
    }
    b.push(Block::PageBreak);
    // 3. Monthly energy.
    b.push(Block::Heading(2, "3 Monthly energy".into()));
    let energy_chart = Chart {
        title: "Facility and IT energy by month".into(),
        unit: "MWh".into(),
        labels: labels.clone(),
        series: vec![
            SeriesData {
                name: "Facility E_DC".into(),
                values: months.iter().map(|m| mwh(m.facility_kwh.value)).collect(),
            },
            SeriesData {
                name: "IT E_IT".into(),
                values: months.iter().map(|m| mwh(m.it_kwh.value)).collect(),
            },
        ],
        kind: Kind::Bars,
        targets: vec![],
        from_zero: true,
    };
    b.push(Block::Chart {
        drawing: energy_chart.draw(),
        data: Table {
            caption: "Monthly energy, MWh".into(),
            header: vec![
                "Month".into(),
                "Facility E_DC (MWh)".into(),
                "IT E_IT (MWh)".into(),
                "Status".into(),
                "Coverage".into(),
            ],
            rows: months
                .iter()
                .map(|m| {
                    let (status, coverage) = report::Value::worst_of(&[&m.facility_kwh, &m.it_kwh]);
                    vec![
                        m.label.clone(),
                        flagged(&m.facility_kwh, 3, 1e-3),
                        flagged(&m.it_kwh, 3, 1e-3),
                        status.into(),
                        pct(coverage),
                    ]
                })
                .collect(),
        },
    });
    // 4. PUE.
    b.push(Block::Heading(2, "4 PUE over time".into()));
    // The chart draws the limit only where the targets table has one in
    // force for the period: the two never disagree.
    let pue_check = f.targets.iter().find(|c| c.id == "pue_max");
    let pue_targets: Vec<(String, f64)> = pue_check
        .and_then(|c| c.limit.map(|l| (l, c.applies_from.clone())))
        .map(|(l, from)| {
            vec![(
                format!("EnEfG limit {l} (from {})", from.unwrap_or_default()),
                l,
            )]
        })
        .unwrap_or_default();
    let pue_line_note = if pue_targets.is_empty() {
        match pue_check {
            Some(c) => match (c.upcoming, &c.applies_from) {
                (Some(u), Some(from)) => format!(
                    "no EnEfG PUE limit is in force for this period ({}), so none is drawn; {} applies from {from}",
                    c.result,
                    num(Some(u), 1)
                ),
                _ => format!(
                    "no EnEfG PUE limit is in force for this period ({}), so none is drawn",
                    c.result
                ),
            },
            None => "no EnEfG PUE limit is checked".into(),
        }
    } else {
        pue_targets
            .iter()
            .map(|x| x.0.clone())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let pue_chart = Chart {
        title: "PUE, monthly".into(),
        unit: "PUE".into(),
        labels: labels.clone(),
        series: vec![SeriesData {
            name: "PUE".into(),
            values: months.iter().map(|m| m.pue.value).collect(),
        }],
        kind: Kind::Lines,
        targets: pue_targets.clone(),
        from_zero: false,
    };
    b.push(Block::Chart {
        drawing: pue_chart.draw(),
        data: Table {
            caption: "PUE by month".into(),
            header: vec![
                "Month".into(),
                "PUE".into(),
                "Status".into(),
                "Coverage".into(),
            ],
            rows: months
                .iter()
                .map(|m| {
                    vec![
                        m.label.clone(),
                        flagged(&m.pue, 3, 1.0),
                        m.pue.status.into(),
                        pct(m.pue.coverage),
                    ]
                })
                .collect(),
        },
    });
    b.push(Block::Note(format!(
        "Period PUE: {}. Reference line: {pue_line_note}.",
        flagged(&t.pue, 3, 1.0),
    )));
    b.push(Block::PageBreak);
    // 5. Heat profile.
    b.push(Block::Heading(2, "5 Heat profile over the year".into()));
    let mut heat_series = vec![SeriesData {
        name: "Heat reused (measured)".into(),
        values: months
            .iter()
            .map(|m| mwh(m.heat_reused_kwh.value))
            .collect(),
    }];
    let mut heat_header = vec!["Month".to_owned(), "Heat reused (MWh th)".into()];
    if let Some(r) = &f.heat_removed {
        heat_series.push(SeriesData {
            name: "Heat removed (measured)".into(),
            values: r.iter().map(|v| mwh(*v)).collect(),
        });
        heat_header.push("Heat removed (MWh th)".into());
    }
    if let Some(r) = &f.heat_rejected {
        heat_series.push(SeriesData {
            name: "Heat rejected (measured)".into(),
            values: r.iter().map(|v| mwh(*v)).collect(),
        });
        heat_header.push("Heat rejected (MWh th)".into());
    }
    // The study's projection, month by month, when the period is exactly
    // a calendar year (its label is the year).
    let projected: Option<Vec<f64>> = match &f.study {
        Study::Done { result, .. } if period_label(f.period).parse::<i64>().is_ok() => {
            result["hourly_kw_th"]
                .as_array()
                .map(|a| a.iter().filter_map(Json::as_f64).collect::<Vec<f64>>())
                .map(|h| {
                    hourly_to_months(&h)
                        .iter()
                        .map(|kwh| kwh / 1000.0)
                        .collect()
                })
        }
        _ => None,
    };
    if let Some(p) = &projected {
        heat_series.push(SeriesData {
            name: "Deliverable (study, projected)".into(),
            values: p.iter().map(|v| Some(*v)).collect(),
        });
        heat_header.push("Deliverable, study (MWh th)".into());
    }
    let heat_chart = Chart {
        title: "Heat by month".into(),
        unit: "MWh th".into(),
        labels: labels.clone(),
        series: heat_series.clone(),
        kind: Kind::Bars,
        targets: vec![],
        from_zero: true,
    };
    b.push(Block::Chart {
        drawing: heat_chart.draw(),
        data: Table {
            caption: "Heat by month, MWh thermal".into(),
            header: heat_header,
            rows: labels
                .iter()
                .enumerate()
                .map(|(i, l)| {
                    let mut r = vec![l.clone()];
                    for s in &heat_series {
                        r.push(num(s.values.get(i).copied().flatten(), 3));
                    }
                    r
                })
                .collect(),
        },
    });
    b.push(Block::Note(format!(
        "Heat reused is the heat-delivered meter (heat handed to a user outside the boundary); period total {} MWh thermal, ERF {}. Heat removed and rejected appear when their meters are configured{}.",
        num(mwh(t.heat_reused_kwh.value), 3),
        flagged(&t.erf, 1, 100.0) + if t.erf.value.is_some() { " %" } else { "" },
        if projected.is_some() {
            "; the study's projection is its hourly profile summed by month"
        } else {
            ""
        }
    )));
    // 6. Study.
    b.push(Block::Heading(2, "6 Heat-reuse potential study".into()));
    study_blocks(&f.study, t, &mut b);
    economics_blocks(&f.study, f.economics.as_ref(), &mut b);
    // 7. Methodology.
    b.push(Block::Heading(2, "7 Methodology and data coverage".into()));
    for p in [
        format!("PUE = E_DC / E_IT (ISO/IEC 30134-2), IT energy measured at category {} ({}). E_DC is grid import plus on-site generation.", f.it_category, match f.it_category { 1 => "UPS output", 2 => "PDU output", 3 => "IT equipment input", _ => "unknown point" }),
        "ERF = E_reused / E_DC (ISO/IEC 30134-6): heat handed over to a user outside the data-centre boundary; it is not subtracted from PUE.".into(),
        "REF = E_renewable / E_DC (ISO/IEC 30134-3): on-site generation plus renewable instruments bought for the period, pro rata to their year. WUE = water input (L) / E_IT (kWh) (ISO/IEC 30134-9).".into(),
        format!("Scope 2 (GHG Protocol): location-based with hourly average grid factors of zone {}, all of the {} basis, where stored, else the static factor {} gCO2e/kWh ({}); {}. Market-based from contracts and certificates, then the residual mix.", f.carbon.0, f.carbon.3, f.carbon.1, f.carbon.2, crate::carbon::HOURLY_RULE),
        format!("Gap rule: {}. {}", f.gap_rule, if f.gap_rule == "strict" { "A period not fully covered by every input gives no value (status incomplete)." } else { "Missing time is filled at each input's own rate and the figure is flagged estimated." }),
        "Months are calendar months in UTC, clipped to the period.".into(),
    ] {
        b.push(Block::Para(p));
    }
    let gaps: Vec<String> = months
        .iter()
        .filter(|m| m.pue.coverage.is_some_and(|c| c < 0.999_999) || m.pue.status != "measured")
        .map(|m| {
            format!(
                "{} (PUE {}, coverage {})",
                m.label,
                m.pue.status,
                pct(m.pue.coverage)
            )
        })
        .collect();
    b.push(Block::Para(if gaps.is_empty() {
        "Data coverage: every month's PUE is measured with full coverage.".into()
    } else {
        format!(
            "Data coverage: months not fully measured: {}.",
            gaps.join("; ")
        )
    }));
    if !f.summary.missing_roles.is_empty() {
        b.push(Block::Para(format!(
            "Meter roles not configured (figures needing them are n/a): {}.",
            f.summary.missing_roles.join(", ")
        )));
    }
    // 8. Provenance.
    b.push(Block::Heading(2, "8 Provenance".into()));
    b.push(Block::Table(Table {
        caption: "Meters used".into(),
        header: vec![
            "Meter".into(),
            "Role".into(),
            "Source".into(),
            "Total".into(),
            "Unit".into(),
            "Estimated share".into(),
            "Coverage".into(),
        ],
        rows: f
            .meters
            .iter()
            .map(|m| {
                vec![
                    m.name.clone(),
                    m.role.clone(),
                    m.source.clone(),
                    num(m.total, 3),
                    m.unit.clone(),
                    pct(m.estimated_share),
                    pct(m.coverage),
                ]
            })
            .collect(),
    }));
    b.push(Block::Note(
        "Figures are recomputed from the ledger at generation time; the same period gives the same figures as GET /api/v1/kpi and the regulatory exports. With --key, the CLI writes FILE.sha256 and an Ed25519 signature FILE.sig next to the dossier (vigie-collector verify checks them).".into(),
    ));
    Dossier { title, blocks: b }
}

/// The cost-benefit analysis of the connection, over the study's heat
/// (capped month by month at the offtaker's demand when given) and its
/// heat-pump electricity.
fn economics_blocks(study: &Study, e: Option<&Economics>, b: &mut Vec<Block>) {
    b.push(Block::Heading(
        3,
        "Cost-benefit analysis of the heat reuse".into(),
    ));
    let Some(e) = e else {
        b.push(Block::Para(
            "The cost-benefit analysis is not configured: add a [dossier.economics] section (costs, heat price, distance to the network, discount rate, horizon, reference heat source, each with its basis).".into(),
        ));
        return;
    };
    let Study::Done { result } = study else {
        b.push(Block::Para(
            "The cost-benefit analysis needs the heat-reuse study's heat and heat-pump electricity: configure [dossier.heat_study].".into(),
        ));
        return;
    };
    let hourly: Vec<f64> = result["hourly_kw_th"]
        .as_array()
        .map(|a| a.iter().filter_map(Json::as_f64).collect())
        .unwrap_or_default();
    let study_mwh = result["deliverable_mwh_th"].as_f64().unwrap_or(0.0);
    let monthly: Vec<f64> = hourly_to_months(&hourly)
        .iter()
        .map(|k| k / 1000.0)
        .collect();
    let sold_mwh = match &e.offtaker_demand_mwh_by_month {
        Some(d) if d.len() == 12 && monthly.len() == 12 => {
            monthly.iter().zip(d).map(|(s, d)| s.min(*d)).sum()
        }
        _ => study_mwh,
    };
    let share = if study_mwh > 0.0 {
        sold_mwh / study_mwh
    } else {
        0.0
    };
    // The heat pump runs for the heat sold only.
    let elec_mwh = result["heat_pump_electricity_mwh"].as_f64().unwrap_or(0.0) * share;
    let connection = e.distance_m * e.connection_eur_per_m;
    let input = vigie_energy::heat_cba::CbaInput {
        capex_eur: e.capex_eur + connection,
        opex_eur_per_year: e.opex_eur_per_year,
        heat_sold_mwh_per_year: sold_mwh,
        heat_price_eur_per_mwh: e.heat_price_eur_per_mwh,
        electricity_mwh_per_year: elec_mwh,
        electricity_price_eur_per_mwh: e.electricity_price_eur_per_mwh,
        discount_rate: e.discount_rate,
        horizon_years: e.horizon_years,
        reference_kg_per_mwh_heat: e.reference_kg_per_mwh_heat,
        electricity_kg_per_mwh: e.electricity_kg_per_mwh,
    };
    let r = match vigie_energy::heat_cba::cost_benefit(&input) {
        Ok(r) => r,
        Err(err) => {
            b.push(Block::Para(format!(
                "The cost-benefit analysis could not be computed with the configured assumptions: {err}."
            )));
            return;
        }
    };
    b.push(Block::Para(format!(
        "Connecting the site to {} over {} m: net present value {} € over {} years at {} % a year; the connection {}. It avoids {} t CO2e a year against {}.",
        e.offtaker,
        num(Some(e.distance_m), 0),
        num(Some(r.npv_eur), 0),
        e.horizon_years,
        num(Some(e.discount_rate * 100.0), 1),
        match r.discounted_payback_years {
            Some(y) => format!("pays back in {} years (discounted)", num(Some(y), 1)),
            None => "does not pay back within the horizon".into(),
        },
        num(Some(r.co2_avoided_t_per_year), 1),
        e.reference_heat_source,
    )));
    b.push(Block::Table(Table {
        caption: "Cost-benefit analysis (constant prices, end-of-year cash flows)".into(),
        header: vec!["Result".into(), "Value".into(), "Unit".into()],
        rows: vec![
            vec![
                "Heat sold per year".into(),
                num(Some(sold_mwh), 1),
                "MWh th".into(),
            ],
            vec![
                "Heat-pump electricity per year".into(),
                num(Some(elec_mwh), 1),
                "MWh".into(),
            ],
            vec![
                "Investment incl. connection".into(),
                num(Some(input.capex_eur), 0),
                "€".into(),
            ],
            vec![
                "Net cash flow per year".into(),
                num(Some(r.net_cash_flow_eur_per_year), 0),
                "€".into(),
            ],
            vec![
                "Net present value".into(),
                num(Some(r.npv_eur), 0),
                "€".into(),
            ],
            vec![
                "Simple payback".into(),
                num(r.simple_payback_years, 1),
                "years".into(),
            ],
            vec![
                "Discounted payback".into(),
                num(r.discounted_payback_years, 1),
                "years".into(),
            ],
            vec![
                "CO2e avoided per year".into(),
                num(Some(r.co2_avoided_t_per_year), 1),
                "t".into(),
            ],
            vec![
                format!("CO2e avoided over {} years", e.horizon_years),
                num(Some(r.co2_avoided_t_horizon), 0),
                "t".into(),
            ],
        ],
    }));
    let basis = |k: &str| {
        e.basis
            .get(k)
            .cloned()
            .unwrap_or_else(|| "not stated".into())
    };
    let row = |name: &str, v: String, unit: &str, k: &str| {
        vec![name.to_owned(), v, unit.to_owned(), basis(k)]
    };
    b.push(Block::Table(Table {
        caption: "Assumptions of the cost-benefit analysis".into(),
        header: vec![
            "Assumption".into(),
            "Value".into(),
            "Unit".into(),
            "Basis".into(),
        ],
        rows: vec![
            row("Offtaker", e.offtaker.clone(), "", "offtaker"),
            row(
                "Offtaker demand by month",
                e.offtaker_demand_mwh_by_month.as_ref().map_or(
                    "not given: all study heat sold".into(),
                    |d| {
                        d.iter()
                            .map(|x| num(Some(*x), 0))
                            .collect::<Vec<_>>()
                            .join(" / ")
                    },
                ),
                "MWh",
                "offtaker_demand_mwh_by_month",
            ),
            row(
                "Plant capital cost",
                num(Some(e.capex_eur), 0),
                "€",
                "capex_eur",
            ),
            row(
                "Distance to the network",
                num(Some(e.distance_m), 0),
                "m",
                "distance_m",
            ),
            row(
                "Connection cost",
                num(Some(e.connection_eur_per_m), 0),
                "€/m",
                "connection_eur_per_m",
            ),
            row(
                "Operating cost",
                num(Some(e.opex_eur_per_year), 0),
                "€/year",
                "opex_eur_per_year",
            ),
            row(
                "Heat price",
                num(Some(e.heat_price_eur_per_mwh), 2),
                "€/MWh",
                "heat_price_eur_per_mwh",
            ),
            row(
                "Electricity price",
                num(Some(e.electricity_price_eur_per_mwh), 2),
                "€/MWh",
                "electricity_price_eur_per_mwh",
            ),
            row(
                "Discount rate",
                num(Some(e.discount_rate * 100.0), 1),
                "%/year",
                "discount_rate",
            ),
            row(
                "Horizon",
                e.horizon_years.to_string(),
                "years",
                "horizon_years",
            ),
            row(
                "Reference heat source",
                e.reference_heat_source.clone(),
                "",
                "reference_heat_source",
            ),
            row(
                "Reference emission factor",
                num(Some(e.reference_kg_per_mwh_heat), 1),
                "kg CO2e/MWh th",
                "reference_kg_per_mwh_heat",
            ),
            row(
                "Electricity emission factor",
                num(Some(e.electricity_kg_per_mwh), 1),
                "kg CO2e/MWh",
                "electricity_kg_per_mwh",
            ),
        ],
    }));
}

fn study_blocks(study: &Study, t: &Span, b: &mut Vec<Block>) {
    let result = match study {
        Study::NotConfigured => {
            b.push(Block::Para(
                "The heat-reuse potential study is not configured: add a [dossier.heat_study] section (cooling type, temperatures, heat pump, offtaker, planned IT load) to the collector configuration. No study figures are shown rather than invented ones.".into(),
            ));
            return;
        }
        Study::Failed(e) => {
            b.push(Block::Para(format!(
                "The heat-reuse potential study could not be run with the configured assumptions: {e}."
            )));
            return;
        }
        Study::Done { result } => result,
    };
    let g = |k: &str| result[k].as_f64();
    if let Some(s) = result["summary"].as_str() {
        b.push(Block::Para(s.to_owned()));
    }
    let erf = g("projected_erf");
    b.push(Block::Table(Table {
        caption: "Study results (projected, one year)".into(),
        header: vec!["Result".into(), "Value".into(), "Unit".into()],
        rows: vec![
            vec![
                "Heat deliverable".into(),
                num(g("deliverable_mwh_th"), 1),
                "MWh th".into(),
            ],
            vec![
                "of which from the data centre".into(),
                num(g("from_data_centre_mwh_th"), 1),
                "MWh th".into(),
            ],
            vec![
                "Peak thermal capacity".into(),
                num(g("peak_kw_th"), 1),
                "kW th".into(),
            ],
            vec![
                "Mean supply temperature".into(),
                num(g("supply_temperature_c"), 1),
                "°C".into(),
            ],
            vec![
                "Heat-pump electricity".into(),
                num(g("heat_pump_electricity_mwh"), 1),
                "MWh".into(),
            ],
            vec!["Heat-pump COP".into(), num(g("cop"), 2), "ratio".into()],
            vec!["IT energy E_IT".into(), num(g("e_it_mwh"), 1), "MWh".into()],
            vec![
                "Facility energy E_DC".into(),
                num(g("e_dc_mwh"), 1),
                "MWh".into(),
            ],
            vec![
                "Projected ERF".into(),
                num(erf.map(|e| e * 100.0), 1),
                "%".into(),
            ],
            vec![
                "Measured ERF, this period".into(),
                flagged(&t.erf, 1, 100.0),
                "%".into(),
            ],
            vec![
                "Homes heated (equivalent)".into(),
                num(
                    g("homes_heated"),
                    crate::heat_api::homes_decimals(g("homes_heated").unwrap_or(0.0)),
                ),
                "homes".into(),
            ],
        ],
    }));
    // The hourly profile itself, not only its monthly sums: what an
    // offtaker sizes a connection by. Its numbers: each month's lowest,
    // mean and highest hour.
    let hourly: Vec<f64> = result["hourly_kw_th"]
        .as_array()
        .map(|a| a.iter().filter_map(Json::as_f64).collect())
        .unwrap_or_default();
    if !hourly.is_empty() {
        let chart = Chart {
            title: "Deliverable heat, hourly (study)".into(),
            unit: "kW th".into(),
            labels: (0..hourly.len())
                .map(|h| format!("day {}", h / 24 + 1))
                .collect(),
            series: vec![SeriesData {
                name: "Deliverable heat (kW th)".into(),
                values: hourly.iter().map(|v| Some(*v)).collect(),
            }],
            kind: Kind::Lines,
            targets: vec![],
            from_zero: true,
        };
        let names = [
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
        b.push(Block::Chart {
            drawing: chart.draw(),
            data: Table {
                caption: "Hourly deliverable heat by month, kW th".into(),
                header: vec![
                    "Month".into(),
                    "Lowest hour (kW th)".into(),
                    "Mean (kW th)".into(),
                    "Highest hour (kW th)".into(),
                ],
                rows: month_slices(&hourly)
                    .into_iter()
                    .zip(names)
                    .map(|(m, name)| {
                        let n = m.len().max(1) as f64;
                        vec![
                            name.to_owned(),
                            num(m.iter().copied().reduce(f64::min), 1),
                            num(Some(m.iter().sum::<f64>() / n), 1),
                            num(m.iter().copied().reduce(f64::max), 1),
                        ]
                    })
                    .collect(),
            },
        });
    }
    let rows: Vec<Vec<String>> = result["assumptions"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|x| {
                    let name = x["name"].as_str().unwrap_or_default();
                    let basis = x["basis"].as_str().unwrap_or_default();
                    let source = if basis.starts_with("given") {
                        "configured"
                    } else if basis.starts_with("default") {
                        "default"
                    } else {
                        "derived"
                    };
                    vec![
                        name.to_owned(),
                        x["value"].as_str().unwrap_or_default().to_owned(),
                        x["unit"].as_str().unwrap_or_default().to_owned(),
                        source.to_owned(),
                        basis.to_owned(),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    b.push(Block::Table(Table {
        caption: "Assumptions of the study".into(),
        header: vec![
            "Assumption".into(),
            "Value".into(),
            "Unit".into(),
            "Source".into(),
            "Basis".into(),
        ],
        rows,
    }));
    if let Some(notes) = result["notes"].as_array().filter(|n| !n.is_empty()) {
        let n: Vec<&str> = notes.iter().filter_map(Json::as_str).collect();
        b.push(Block::Note(format!("Study notes: {}", n.join(" "))));
    }
}

const CSS: &str = "body{font-family:Helvetica,Arial,sans-serif;color:#1e1e1e;max-width:60rem;margin:2rem auto;padding:0 1rem;line-height:1.4}\
h1{font-size:1.7rem}h2{font-size:1.25rem;margin-top:2rem;border-bottom:1px solid #ccc}\
table{border-collapse:collapse;margin:.8rem 0;font-size:.85rem}caption{text-align:left;font-weight:bold;padding:.3rem 0}\
th,td{border:1px solid #bbb;padding:.25rem .5rem;text-align:left;vertical-align:top}th{background:#e6e9ee}\
td.num{text-align:right}.note{color:#555;font-size:.85rem}.est{background:#fff3cd}\
figure{margin:1rem 0}figcaption{font-weight:bold}details{margin:.3rem 0 1rem}\
@page{size:A4;margin:18mm}@media print{body{margin:0;max-width:none}h2{break-after:avoid}figure,table{break-inside:avoid}.pb{break-before:page}}";

fn html_table(out: &mut String, t: &Table) {
    let _ = write!(
        out,
        "<table><caption>{}</caption><thead><tr>",
        escape(&t.caption)
    );
    for h in &t.header {
        let _ = write!(out, "<th scope=\"col\">{}</th>", escape(h));
    }
    out.push_str("</tr></thead><tbody>");
    for r in &t.rows {
        out.push_str("<tr>");
        for (i, c) in r.iter().enumerate() {
            let numeric =
                c.starts_with(|ch: char| ch.is_ascii_digit() || ch == '-') && c.len() > 1 && i > 0;
            let mut class = String::new();
            if numeric {
                class.push_str("num");
            }
            if c.contains(ESTIMATED) {
                class.push_str(if class.is_empty() { "est" } else { " est" });
            }
            let cls = if class.is_empty() {
                String::new()
            } else {
                format!(" class=\"{class}\"")
            };
            if i == 0 {
                let _ = write!(out, "<th scope=\"row\"{cls}>{}</th>", escape(c));
            } else {
                let _ = write!(out, "<td{cls}>{}</td>", escape(c));
            }
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>");
}

impl Dossier {
    /// One self-contained HTML page: inline CSS and SVG, no scripts, no
    /// external resources.
    pub fn to_html(&self) -> String {
        let mut o = String::new();
        let _ = write!(
            o,
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{}</title><style>{CSS}</style></head><body><main>",
            escape(&self.title)
        );
        let mut page_break = false;
        for block in &self.blocks {
            let pb = if std::mem::take(&mut page_break) {
                " class=\"pb\""
            } else {
                ""
            };
            match block {
                Block::Heading(l, t) => {
                    let _ = write!(o, "<h{l}{pb}>{}</h{l}>", escape(t));
                }
                Block::Para(t) => {
                    let _ = write!(o, "<p>{}</p>", escape(t));
                }
                Block::Note(t) => {
                    let _ = write!(o, "<p class=\"note\">{}</p>", escape(t));
                }
                Block::Table(t) => html_table(&mut o, t),
                Block::Chart { drawing, data } => {
                    let _ = write!(
                        o,
                        "<figure><figcaption>{}</figcaption>{}<details><summary>Data of the chart</summary>",
                        escape(&drawing.title),
                        drawing.to_svg()
                    );
                    html_table(&mut o, data);
                    o.push_str("</details></figure>");
                }
                Block::PageBreak => page_break = true,
            }
        }
        o.push_str("</main></body></html>\n");
        o
    }

    /// The A4 PDF; `now_ms` goes into its metadata.
    pub fn to_pdf(&self, now_ms: i64) -> Vec<u8> {
        let mut p = crate::pdf::PdfBuilder::new(&self.title);
        for (i, block) in self.blocks.iter().enumerate() {
            match block {
                Block::Heading(l, t) => {
                    // A heading stays on the page of the chart it introduces.
                    if let Some(Block::Chart { drawing, .. }) = self.blocks.get(i + 1) {
                        p.keep(drawing.height + 40.0);
                    }
                    p.heading(*l, t);
                }
                Block::Para(t) => p.paragraph(t, 9.5, false),
                Block::Note(t) => p.paragraph(t, 8.0, true),
                Block::Table(t) => p.table(&t.caption, &t.header, &t.rows),
                Block::Chart { drawing, data } => {
                    p.drawing(drawing);
                    p.table(&data.caption, &data.header, &data.rows);
                }
                Block::PageBreak => p.new_page(),
            }
        }
        p.finish(now_ms)
    }

    /// Rendered in `format`.
    pub fn render(&self, format: Format, now_ms: i64) -> Vec<u8> {
        match format {
            Format::Html => self.to_html().into_bytes(),
            Format::Pdf => self.to_pdf(now_ms),
        }
    }
}

/// Reads, lays out and renders in one call (CLI and HTTP).
pub fn build(
    conn: &dyn Db,
    cfg: &Settings,
    req: DossierRequest,
    format: Format,
    now_ms: i64,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<u8>, DossierError> {
    let facts = gather(conn, cfg, req, now_ms, progress)?;
    progress("laying out");
    let d = content(&facts);
    progress(&format!("rendering {}", format.extension()));
    Ok(d.render(format, now_ms))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::report::Value;

    #[test]
    fn zero_reads_0_never_minus_0() {
        assert_eq!(pct(Some(-0.0)), "0.0 %");
        assert_eq!(pct(Some(-0.000_01)), "0.0 %");
        assert_eq!(num(Some(-0.0), 1), "0.0");
        assert_eq!(pct(Some(0.5)), "50.0 %");
        assert_eq!(pct(Some(-0.5)), "-50.0 %");
    }

    fn v(value: Option<f64>, status: &'static str) -> Value {
        Value {
            value,
            status,
            coverage: value.map(|_| 1.0),
        }
    }

    fn span(label: &str, dc: f64, it: f64, status: &'static str) -> Span {
        Span {
            label: label.into(),
            from_ms: 0,
            to_ms: 1,
            facility_kwh: v(Some(dc), status),
            it_kwh: v(Some(it), status),
            heat_reused_kwh: v(Some(dc * 0.1), status),
            renewable_kwh: v(None, "undefined"),
            pue: v(Some(dc / it), status),
            erf: v(Some(0.1), status),
            ref_: v(None, "undefined"),
            wue: v(None, "undefined"),
            emissions_location_t: v(None, "undefined"),
            emissions_market_t: v(None, "undefined"),
        }
    }

    fn facts(study: Study) -> Facts {
        let months: Vec<Span> = (1..=12)
            .map(|m| span(&format!("2025-{m:02}"), 150_000.0, 100_000.0, "measured"))
            .collect();
        let mut total = span("2025", 1_800_000.0, 1_200_000.0, "measured");
        total.pue = v(Some(1.5), "estimated");
        Facts {
            site_name: "Site <A> & B".into(),
            operator: None,
            period: request(Some("2025-01-01"), Some("2026-01-01"), 0).unwrap(),
            generated_ms: Date::new(2026, 2, 1).unwrap().start_ms(),
            summary: Summary {
                total,
                months,
                missing_roles: vec!["water".into()],
            },
            heat_removed: None,
            heat_rejected: Some(vec![Some(50_000.0); 12]),
            meters: vec![],
            commissioned: None,
            targets: targets::check(
                Date::new(2025, 12, 31).unwrap(),
                None,
                Some(1.5),
                Some(10.0),
                None,
            ),
            study,
            economics: None,
            gap_rule: "strict",
            it_category: 2,
            carbon: ("DE".into(), 380.0, "static".into(), "direct"),
        }
    }

    #[test]
    fn the_period_defaults_to_the_previous_calendar_year() {
        let now = Date::new(2026, 3, 10).unwrap().start_ms();
        let r = request(None, None, now).unwrap();
        assert_eq!(r.from_ms, Date::new(2025, 1, 1).unwrap().start_ms());
        assert_eq!(r.to_ms, Date::new(2026, 1, 1).unwrap().start_ms());
        assert_eq!(period_label(r), "2025");
        let r = request(Some("2025-03-01"), Some("2025-06-01"), now).unwrap();
        assert_eq!(period_label(r), "2025-03-01 to 2025-05-31");
        assert!(request(Some("2025-06-01"), Some("2025-03-01"), now).is_err());
        assert!(request(Some("June"), None, now).is_err());
        assert!(request(Some("1970-01-01"), Some("9999-01-01"), now).is_err());
    }

    #[test]
    fn estimated_values_are_flagged_and_html_is_escaped_and_self_contained() {
        let d = content(&facts(Study::NotConfigured));
        let html = d.to_html();
        assert!(html.contains("Site &lt;A&gt; &amp; B"));
        assert!(!html.contains("<A>"));
        // The period PUE is estimated: flagged next to the value.
        assert!(html.contains("1.500 (estimated)"), "flagged estimate");
        assert!(html.contains("class=\"num est\""));
        // Three charts, each with its data table.
        assert_eq!(html.matches("<svg").count(), 3);
        assert_eq!(html.matches("<details>").count(), 3);
        assert!(html.contains("Heat rejected (measured)"));
        // No external resources, no scripts.
        for bad in ["<script", "src=", "href=", "@import", "url("] {
            assert!(!html.contains(bad), "{bad}");
        }
        assert!(html.contains("<th scope=\"col\">"));
        // The study is said to be missing, with no invented numbers.
        assert!(html.contains("study is not configured"));
        assert!(!html.contains("Assumptions of the study"));
        // Targets: 2025 is before any EnEfG PUE limit.
        assert!(html.contains("not-in-force"));
        assert!(html.contains("not configured ([site] commissioned)"));
        // The methodology states the basis and how an hour's factor meets
        // energy used in part of the hour, as the exports do.
        assert!(html.contains("all of the direct basis"));
        assert!(html.contains("whether used over the whole hour or part of it"));
    }

    #[test]
    fn a_configured_study_lists_every_assumption_with_its_source() {
        let req: PotentialRequest = serde_json::from_value(serde_json::json!({
            "it_load_kw_constant": 1000.0,
            "cooling": "direct-liquid",
            "offtaker": { "supply_c": 60.0 },
        }))
        .unwrap();
        let result = crate::heat_api::study(&req).unwrap();
        let n = result["assumptions"].as_array().unwrap().len();
        let d = content(&facts(Study::Done { result }));
        let table = d
            .blocks
            .iter()
            .find_map(|b| match b {
                Block::Table(t) if t.caption == "Assumptions of the study" => Some(t),
                _ => None,
            })
            .unwrap();
        assert_eq!(table.rows.len(), n);
        let source = |name: &str| {
            table
                .rows
                .iter()
                .find(|r| r[0] == name)
                .map(|r| r[3].clone())
                .unwrap()
        };
        assert_eq!(source("offtaker supply temperature"), "configured");
        assert_eq!(source("outlet temperature (direct liquid)"), "default");
        assert_eq!(source("PUE"), "default");
        // The projection joins the heat chart for a calendar year.
        let html = d.to_html();
        assert!(html.contains("Deliverable (study, projected)"));
    }

    #[test]
    fn the_cost_benefit_analysis_shows_npv_payback_co2_and_every_basis() {
        let req: PotentialRequest = serde_json::from_value(serde_json::json!({
            "it_load_kw_constant": 1000.0,
            "cooling": "direct-liquid",
            "offtaker": { "supply_c": 60.0 },
        }))
        .unwrap();
        let result = crate::heat_api::study(&req).unwrap();
        let heat = result["deliverable_mwh_th"].as_f64().unwrap();
        let elec = result["heat_pump_electricity_mwh"].as_f64().unwrap();
        let e: Economics = toml::from_str(
            r#"
offtaker = "Reseau de chaleur Sud"
capex_eur = 900000.0
distance_m = 600.0
connection_eur_per_m = 500.0
opex_eur_per_year = 30000.0
heat_price_eur_per_mwh = 40.0
electricity_price_eur_per_mwh = 90.0
discount_rate = 0.05
horizon_years = 20
reference_heat_source = "gas boiler"
reference_kg_per_mwh_heat = 227.0
electricity_kg_per_mwh = 52.0
basis = { heat_price_eur_per_mwh = "offer of the network operator, 2026-03" }
"#,
        )
        .unwrap();
        let mut f = facts(Study::Done { result });
        f.economics = Some(e);
        let d = content(&f);
        let table = |caption: &str| {
            d.blocks
                .iter()
                .find_map(|b| match b {
                    Block::Table(t) if t.caption.starts_with(caption) => Some(t.clone()),
                    _ => None,
                })
                .unwrap()
        };
        let r = table("Cost-benefit analysis");
        let cell = |name: &str| r.rows.iter().find(|x| x[0] == name).unwrap()[1].clone();
        // The same arithmetic by hand: investment 900 000 + 600 x 500.
        let cf = heat * 40.0 - 30_000.0 - elec * 90.0;
        let npv = -1_200_000.0 + cf * vigie_energy::heat_cba::annuity_factor(0.05, 20);
        assert_eq!(cell("Investment incl. connection"), "1200000");
        assert_eq!(cell("Net present value"), num(Some(npv), 0));
        assert_eq!(
            cell("CO2e avoided per year"),
            num(Some((heat * 227.0 - elec * 52.0) / 1000.0), 1)
        );
        let a = table("Assumptions of the cost-benefit analysis");
        let basis = |name: &str| a.rows.iter().find(|x| x[0] == name).unwrap()[3].clone();
        assert_eq!(
            basis("Heat price"),
            "offer of the network operator, 2026-03"
        );
        assert_eq!(basis("Discount rate"), "not stated");
        // Not configured: said so.
        let d = content(&facts(Study::NotConfigured));
        assert!(
            d.to_html()
                .contains("cost-benefit analysis is not configured")
        );
    }

    #[test]
    fn the_study_shows_its_hourly_profile_and_the_summary_its_water() {
        let req: PotentialRequest = serde_json::from_value(serde_json::json!({
            "it_load_kw_constant": 1000.0,
            "cooling": "direct-liquid",
            "offtaker": { "supply_c": 60.0 },
        }))
        .unwrap();
        let result = crate::heat_api::study(&req).unwrap();
        let hours = result["hourly_kw_th"].as_array().unwrap().len();
        let mut f = facts(Study::Done { result });
        f.meters = vec![
            MeterFacts {
                name: "w".into(),
                role: "water".into(),
                source: String::new(),
                total: Some(4000.0),
                unit: "L".into(),
                estimated_share: None,
                coverage: Some(1.0),
            },
            MeterFacts {
                name: "wp".into(),
                role: "water-potable".into(),
                source: String::new(),
                total: Some(1000.0),
                unit: "L".into(),
                estimated_share: None,
                coverage: Some(1.0),
            },
        ];
        let d = content(&f);
        let hourly = d
            .blocks
            .iter()
            .find_map(|b| match b {
                Block::Chart { data, .. } if data.caption.starts_with("Hourly deliverable") => {
                    Some(data)
                }
                _ => None,
            })
            .unwrap();
        assert_eq!(hourly.rows.len(), 12);
        assert!(hours >= 8760);
        let water = d
            .blocks
            .iter()
            .find_map(|b| match b {
                Block::Table(t) if t.caption == "Water use over the period" => Some(t),
                _ => None,
            })
            .unwrap();
        assert_eq!(water.rows[0][1], "4.0");
        assert_eq!(water.rows[2][1], "25.0");
    }

    #[test]
    fn hourly_profiles_sum_to_months() {
        let m = hourly_to_months(&vec![1.0; 8760]);
        assert_eq!(m.len(), 12);
        assert_eq!(m[0], 744.0);
        assert_eq!(m[1], 672.0);
        assert_eq!(m.iter().sum::<f64>(), 8760.0);
        assert_eq!(hourly_to_months(&vec![1.0; 8784])[1], 696.0);
    }

    #[test]
    fn the_pdf_has_the_figures_and_several_pages() {
        let d = content(&facts(Study::NotConfigured));
        let pdf = d.to_pdf(0);
        let s = String::from_utf8_lossy(&pdf);
        assert!(s.starts_with("%PDF-"));
        assert!(s.contains("(1 Summary) Tj"));
        // The estimated PUE is marked, on one line or wrapped onto the
        // next (the next text shown after the value).
        let marked = s.contains("(1.500 (estimated)) Tj")
            || s.contains("(1.500 \\(estimated\\)) Tj")
            || s.find("(1.500) Tj").is_some_and(|at| {
                let rest = &s[at + "(1.500) Tj".len()..];
                let next = rest.find(") Tj").map_or("", |end| &rest[..end]);
                next.ends_with("(estimated)") || next.ends_with("\\(estimated\\)")
            });
        let at = s.find("(1.500").unwrap_or(0);
        assert!(marked, "{}", &s[at..(at + 200).min(s.len())]);
        let count: usize = s
            .split("/Count ")
            .nth(1)
            .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|n| n.parse().ok())
            .unwrap();
        assert!(count >= 3, "{count} pages");
    }
}
