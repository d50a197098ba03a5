//! Regulators' data sets: the EU EED (Delegated Regulation 2024/1364),
//! the German EnEfG/RZReg register with its targets checked, and the
//! French L.236 declaration, in JSON or CSV, optionally signed.
//!
//! The field lists are data (`collector/exports/*.toml`, embedded): each
//! field names a source expression resolved against the site figures of
//! the period, so a change of regulation is a table edit. Source
//! expressions:
//! - `site.installed_it_kw`, `site.floor_area_m2`, `site.computer_room_area_m2`:
//!   declared in `[site]`;
//! - `meter.<role>.total`: the period total of the meter with that role
//!   (kWh, or litres for water roles), with its coverage;
//! - `derived.e_dc`: grid import, on-site generation, back-up generator
//!   output and fuels (with a fuel meter, electricity made from it on
//!   site is not added again); `derived.electricity_total`: the
//!   electricity alone; `derived.wue_eed`: the EED WUE of the data year;
//!   `derived.heat_rejected_monthly`: the monthly waste-heat profile;
//! - `kpi.<SYMBOL>.value`: PUE, REF, ERF, CER, WUE as `site::figures` computes them;
//! - `heat.mean_supply_c`, `heat.mean_return_c`: energy-weighted
//!   temperatures of the heat delivered (needs a register heat meter);
//! - `renewable.total|certificates|ppa|onsite`: renewable instruments of
//!   `[carbon.market]` pro rata to the period, and metered on-site generation;
//! - `not-metered`: a field vigie's model does not hold.

pub mod cli;
pub mod date;
pub mod http;
pub mod sign;
pub mod targets;

pub use http::http_handler;

use crate::backend::{Db, LedgerError};
use crate::config::CarbonConfig;
use crate::site::{self, Role, SiteConfig};
use serde::Deserialize;
use serde_json::{Value, json};

/// A reporting regime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Regime {
    /// EU Energy Efficiency Directive.
    Eed,
    /// German Energieeffizienzgesetz / data centre register.
    Enefg,
    /// French Code de l'énergie L.236.
    Fr,
}

impl Regime {
    /// Every regime.
    pub const ALL: [Regime; 3] = [Regime::Eed, Regime::Enefg, Regime::Fr];

    /// `eed`, `enefg` or `fr`.
    pub fn parse(s: &str) -> Option<Regime> {
        match s {
            "eed" => Some(Regime::Eed),
            "enefg" => Some(Regime::Enefg),
            "fr" => Some(Regime::Fr),
            _ => None,
        }
    }

    /// The id used on the command line and in URLs.
    pub fn as_str(self) -> &'static str {
        match self {
            Regime::Eed => "eed",
            Regime::Enefg => "enefg",
            Regime::Fr => "fr",
        }
    }

    /// The embedded field table.
    pub fn table_text(self) -> &'static str {
        match self {
            Regime::Eed => include_str!("../../exports/eed.toml"),
            Regime::Enefg => include_str!("../../exports/enefg.toml"),
            Regime::Fr => include_str!("../../exports/fr.toml"),
        }
    }

    /// The parsed field table.
    pub fn table(self) -> Result<FieldTable, ExportError> {
        toml::from_str(self.table_text())
            .map_err(|e| ExportError::Table(format!("{}: {e}", self.as_str())))
    }
}

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Pretty JSON.
    Json,
    /// CSV, one line per field and target.
    Csv,
}

impl Format {
    /// `json` or `csv`.
    pub fn parse(s: &str) -> Option<Format> {
        match s {
            "json" => Some(Format::Json),
            "csv" => Some(Format::Csv),
            _ => None,
        }
    }

    /// MIME type.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Csv => "text/csv; charset=utf-8",
        }
    }
}

/// One regime's field table (`collector/exports/<id>.toml`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldTable {
    /// Regime id.
    pub id: String,
    /// Title.
    pub title: String,
    /// Legal texts.
    pub legal_basis: String,
    /// Sites at or above this installed IT power report, kW.
    pub threshold_kw: f64,
    /// When and where.
    pub deadline: String,
    /// The day of the year after the period by which the data set is due,
    /// `MM-DD` (EnEfG § 13(1): 31 March; EED and France: 15 May): the
    /// export names the date (`regime.due_by`).
    #[serde(default)]
    pub due: Option<String>,
    /// The acts and the versions the table was checked against, listed in
    /// the export's methodology.
    #[serde(default)]
    pub acts: Vec<String>,
    /// The source expression of the power the threshold applies to
    /// (default `site.installed_it_kw`; EnEfG: the whole site's
    /// non-redundant rated connection power).
    #[serde(default)]
    pub scope: Option<String>,
    /// The fields, in order.
    pub fields: Vec<FieldSpec>,
    /// Title of a second data set of the regime (EnEfG § 17 waste-heat
    /// platform).
    #[serde(default)]
    pub platform_title: Option<String>,
    /// Its fields.
    #[serde(default)]
    pub platform: Vec<FieldSpec>,
}

/// One field of a data set.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldSpec {
    /// Stable id.
    pub id: String,
    /// Label as the regulation words it.
    pub label: String,
    /// Unit of the exported value.
    pub unit: String,
    /// Source expression (see the module docs).
    pub source: String,
    /// Factor applied to the source value (e.g. 0.001 for L to m³).
    #[serde(default)]
    pub scale: Option<f64>,
    /// The legal reference requiring the field (act, article or annex,
    /// item). Every row has one; `legal_refs_missing` names those without.
    #[serde(default)]
    pub legal_ref: String,
    /// Whether `legal_ref` was checked against the text of the act (an
    /// official or verbatim copy); `false`: taken from a secondary source
    /// or not read, and the export says "not verified".
    #[serde(default)]
    pub verified: bool,
}

/// The ids of the fields of `t` without a legal reference.
pub fn legal_refs_missing(t: &FieldTable) -> Vec<String> {
    t.fields
        .iter()
        .chain(&t.platform)
        .filter(|f| f.legal_ref.trim().is_empty())
        .map(|f| f.id.clone())
        .collect()
}

/// Why an export could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// A field table does not parse or names an unknown source.
    #[error("field table {0}")]
    Table(String),
    /// The site figures.
    #[error("site figures: {0}")]
    Site(#[from] site::SiteError),
    /// The ledger.
    #[error("ledger: {0}")]
    Store(#[from] LedgerError),
    /// A bad request (period, regime, date).
    #[error("{0}")]
    Request(String),
}

/// What to export.
#[derive(Debug, Clone)]
pub struct ExportRequest {
    /// Regime.
    pub regime: Regime,
    /// Period start, Unix ms.
    pub from_ms: i64,
    /// Period end (exclusive), Unix ms.
    pub to_ms: i64,
    /// Commissioning date of the site (EnEfG targets), if known.
    pub commissioned: Option<date::Date>,
}

/// A parsed source expression.
#[derive(Debug, Clone, PartialEq)]
enum Source {
    Site(&'static str),
    Register(&'static str),
    Yearly(&'static str),
    PueEnefg,
    Meter(Role),
    EDc,
    ElectricityTotal,
    WueEed,
    HeatRejectedMonthly,
    Kpi(String),
    Heat(&'static str),
    Renewable(&'static str),
    NotMetered,
}

fn role_from_str(s: &str) -> Option<Role> {
    #[derive(Deserialize)]
    struct W {
        r: Role,
    }
    toml::from_str::<W>(&format!("r = {s:?}")).ok().map(|w| w.r)
}

const KPIS: [&str; 5] = ["PUE", "REF", "ERF", "CER", "WUE"];

/// `register.<key>`: facts of `[site.register]` (and the commissioning
/// date, the EnEfG size class derived from the installed IT power).
const REGISTER_KEYS: [&str; 22] = [
    "name",
    "owner",
    "operators",
    "owner_and_operators",
    "address",
    "postcode",
    "municipality",
    "nuts_code",
    "siret",
    "contact_name",
    "contact_email",
    "non_redundant_power_kw",
    "redundancy_power",
    "redundancy_cooling",
    "waste_heat_max_kw",
    "waste_heat_control",
    "commissioned",
    "size_class",
    "management_system",
    "management_system_certified_until",
    "public_owner",
    "data_centre_type",
];

/// `yearly.<key>`: facts of the `[[site.yearly]]` entry of the period's year.
const YEARLY_KEYS: [&str; 11] = [
    "traffic_in_bandwidth_gbps",
    "traffic_out_bandwidth_gbps",
    "traffic_in_volume_tb",
    "traffic_out_volume_tb",
    "storage_capacity_pb",
    "server_capacity",
    "data_stored_tb",
    "data_processed_tb",
    "data_stored_and_processed_tb",
    "temperature_set_point_c",
    "heat_released_mean_c",
];

/// The EnEfG Anlage 3 size class by IT rated connection power.
pub fn size_class(it_kw: f64) -> &'static str {
    match it_kw {
        x if x < 500.0 => "< 500 kW",
        x if x < 1_000.0 => "500 kW to < 1 MW",
        x if x < 5_000.0 => "1 MW to < 5 MW",
        x if x < 10_000.0 => "5 MW to < 10 MW",
        x if x < 50_000.0 => "10 MW to < 50 MW",
        x if x < 100_000.0 => "50 MW to < 100 MW",
        _ => ">= 100 MW",
    }
}

fn parse_source(s: &str) -> Option<Source> {
    if s == "not-metered" {
        return Some(Source::NotMetered);
    }
    if s == "derived.e_dc" {
        return Some(Source::EDc);
    }
    if s == "derived.pue_enefg" {
        return Some(Source::PueEnefg);
    }
    if s == "derived.electricity_total" {
        return Some(Source::ElectricityTotal);
    }
    if s == "derived.wue_eed" {
        return Some(Source::WueEed);
    }
    if s == "derived.heat_rejected_monthly" {
        return Some(Source::HeatRejectedMonthly);
    }
    let (ns, rest) = s.split_once('.')?;
    match ns {
        "site" => ["installed_it_kw", "floor_area_m2", "computer_room_area_m2"]
            .into_iter()
            .find(|k| *k == rest)
            .map(Source::Site),
        "register" => REGISTER_KEYS
            .into_iter()
            .find(|k| *k == rest)
            .map(Source::Register),
        "yearly" => YEARLY_KEYS
            .into_iter()
            .find(|k| *k == rest)
            .map(Source::Yearly),
        "meter" => {
            let role = rest.strip_suffix(".total")?;
            role_from_str(role).map(Source::Meter)
        }
        "kpi" => {
            let sym = rest.strip_suffix(".value")?;
            KPIS.contains(&sym).then(|| Source::Kpi(sym.to_owned()))
        }
        "heat" => ["mean_supply_c", "mean_return_c"]
            .into_iter()
            .find(|k| *k == rest)
            .map(Source::Heat),
        "renewable" => ["total", "certificates", "ppa", "onsite"]
            .into_iter()
            .find(|k| *k == rest)
            .map(Source::Renewable),
        _ => None,
    }
}

/// Checks that every source expression of a table resolves; returns the
/// ids of the fields that do not.
pub fn check_table(t: &FieldTable) -> Vec<String> {
    t.fields
        .iter()
        .chain(&t.platform)
        .filter(|f| parse_source(&f.source).is_none())
        .map(|f| format!("{} ({})", f.id, f.source))
        .collect()
}

/// A resolved field.
#[derive(Debug, Clone, PartialEq, Default)]
struct Resolved {
    value: Option<f64>,
    status: &'static str,
    missing_share: Option<f64>,
    /// A text value (names, codes, dates) in place of a number.
    text: Option<String>,
    /// A structured value (a load profile) in place of a number.
    series: Option<Value>,
    /// Which definition gave the value (WUE by reporting year).
    note: Option<String>,
}

impl Resolved {
    fn none(status: &'static str) -> Self {
        Resolved {
            value: None,
            status,
            missing_share: None,
            text: None,
            ..Resolved::default()
        }
    }

    fn declared(value: Option<f64>) -> Self {
        Resolved {
            value,
            status: if value.is_some() {
                "declared"
            } else {
                "not-declared"
            },
            missing_share: None,
            text: None,
            ..Resolved::default()
        }
    }

    fn declared_text(text: Option<String>) -> Self {
        Resolved {
            status: if text.is_some() {
                "declared"
            } else {
                "not-declared"
            },
            text,
            ..Resolved::none("")
        }
    }
}

/// One meter's total and status, by the one input rule
/// ([`vigie_energy::InputUsed::status`], shared with the reports).
fn input_status(i: &vigie_energy::InputUsed) -> Resolved {
    Resolved {
        // `+ 0.0`: a sum of nothing is -0.0, read as 0.
        value: i.total.map(|t| t + 0.0),
        status: i.status().as_str(),
        missing_share: i.coverage.map(|c| c.missing_share()),
        text: None,
        ..Resolved::default()
    }
}

fn figure_status(f: &vigie_energy::Figure) -> Resolved {
    let status = f.status.as_str();
    let missing = f
        .inputs
        .iter()
        .filter_map(|i| i.coverage.map(|c| c.missing_share()))
        .fold(None, |a: Option<f64>, m| Some(a.map_or(m, |a| a.max(m))));
    Resolved {
        value: f.value,
        status,
        missing_share: missing,
        text: None,
        ..Resolved::default()
    }
}

/// Everything the fields are resolved against.
struct Inputs<'a> {
    site: &'a SiteConfig,
    /// The reporting year (the period's first day).
    year: i64,
    commissioned: Option<date::Date>,
    figures: site::SiteFigures,
    heat: Option<Value>,
    market: vigie_energy::MarketInputs,
    /// Monthly totals of the `heat-rejected` meter, when a field asks.
    heat_rejected_monthly: Option<Vec<MonthTotal>>,
}

fn worst(a: &'static str, b: &'static str) -> &'static str {
    let rank = |s| match s {
        "measured" => 0,
        "estimated" => 1,
        "incomplete" => 2,
        _ => 3,
    };
    if rank(a) >= rank(b) { a } else { b }
}

fn instruments_kwh(
    m: &vigie_energy::MarketInputs,
    kind: Option<vigie_energy::InstrumentKind>,
) -> f64 {
    use vigie_energy::{Origin, Volume};
    m.instruments
        .iter()
        .filter(|i| matches!(i.origin, Origin::Renewable))
        .filter(|i| {
            kind.as_ref()
                .is_none_or(|k| std::mem::discriminant(k) == std::mem::discriminant(&i.kind))
        })
        .map(|i| match &i.volume {
            Volume::Period(uj) => uj.0 as f64 / 3.6e12,
            Volume::Hourly(h) => h.values().map(|v| v.0 as f64).sum::<f64>() / 3.6e12,
        })
        .sum()
}

/// The first data year whose EED WUE is freshwater input over E_IT: the
/// Commission's delegated act amending Delegated Regulation (EU) 2024/1364
/// (C(2026) 3472, adopted 21 September 2026) replaces Annex III point (b)
/// with WUE = W_IN-FRE / E_IT. Its publication in the Official Journal and
/// the first reporting it governs were not verified: assumed to be the
/// reporting of 2027, on the calendar year 2026.
pub const WUE_FRESHWATER_FROM_YEAR: i64 = 2026;

impl Inputs<'_> {
    /// Grid import plus the metered `roles` present, period totals; not
    /// metered without a grid meter.
    fn grid_plus(&self, roles: &[Role]) -> Resolved {
        let Some(g) = self.meter(Role::GridImport).map(input_status) else {
            return Resolved::none("not-metered");
        };
        roles
            .iter()
            .filter_map(|r| self.meter(*r).map(input_status))
            .fold(g, |a, o| Resolved {
                value: a.value.zip(o.value).map(|(a, b)| a + b),
                status: worst(a.status, o.status),
                missing_share: match (a.missing_share, o.missing_share) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    (a, b) => a.or(b),
                },
                ..Resolved::default()
            })
    }

    /// EED WUE by data year: total water input / E_IT (Delegated
    /// Regulation 2024/1364 Annex III (b)) before
    /// [`WUE_FRESHWATER_FROM_YEAR`], freshwater input / E_IT (as amended)
    /// from it.
    fn wue_eed(&self) -> Resolved {
        if self.year < WUE_FRESHWATER_FROM_YEAR {
            return Resolved {
                note: Some(format!(
                    "data year {}: WUE = total water input / E_IT (Delegated Regulation (EU) 2024/1364 Annex III (b))",
                    self.year
                )),
                ..self.resolve(&Source::Kpi("WUE".into()))
            };
        }
        let note = Some(format!(
            "data year {}: WUE = freshwater input / E_IT (Annex III (b) as replaced by the amending act C(2026) 3472, adopted 21 September 2026; not verified in the Official Journal)",
            self.year
        ));
        let (Some(fw), Some(it)) = (
            self.meter(Role::Freshwater).map(input_status),
            self.meter(Role::It).map(input_status),
        ) else {
            return Resolved {
                note,
                ..Resolved::none("not-metered")
            };
        };
        Resolved {
            value: match (fw.value, it.value) {
                (Some(w), Some(e)) if e > 0.0 => Some(w / e),
                _ => None,
            },
            status: match (fw.value, it.value) {
                (Some(_), Some(e)) if e <= 0.0 => "undefined",
                _ => worst(fw.status, it.status),
            },
            missing_share: match (fw.missing_share, it.missing_share) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            },
            note,
            ..Resolved::default()
        }
    }

    fn meter(&self, role: Role) -> Option<&vigie_energy::InputUsed> {
        self.figures
            .totals
            .iter()
            .find(|(_, r, _)| *r == role)
            .map(|x| &x.2)
    }

    fn resolve(&self, src: &Source) -> Resolved {
        use vigie_energy::InstrumentKind;
        match src {
            Source::NotMetered => Resolved::none("not-metered"),
            Source::Site(k) => Resolved::declared(match *k {
                "installed_it_kw" => self.site.installed_it_kw,
                "floor_area_m2" => self.site.floor_area_m2,
                _ => self.site.computer_room_area_m2,
            }),
            Source::Register(k) => {
                let r = &self.site.register;
                let text = |v: &Option<String>| Resolved::declared_text(v.clone());
                match *k {
                    "name" => text(&r.name),
                    "owner" => text(&r.owner),
                    "operators" => Resolved::declared_text(
                        (!r.operators.is_empty()).then(|| r.operators.join("; ")),
                    ),
                    "owner_and_operators" => Resolved::declared_text(r.owner.as_ref().map(|o| {
                        if r.operators.is_empty() {
                            format!("owner: {o}")
                        } else {
                            format!("owner: {o}; operators: {}", r.operators.join("; "))
                        }
                    })),
                    "address" => text(&r.address),
                    "postcode" => text(&r.postcode),
                    "municipality" => text(&r.municipality),
                    "nuts_code" => text(&r.nuts_code),
                    "siret" => text(&r.siret),
                    "contact_name" => text(&r.contact_name),
                    "contact_email" => text(&r.contact_email),
                    "non_redundant_power_kw" => Resolved::declared(r.non_redundant_power_kw),
                    "redundancy_power" => text(&r.redundancy_power),
                    "data_centre_type" => text(&r.data_centre_type),
                    "redundancy_cooling" => text(&r.redundancy_cooling),
                    "waste_heat_max_kw" => Resolved::declared(r.waste_heat_max_kw),
                    "waste_heat_control" => text(&r.waste_heat_control),
                    "commissioned" => {
                        Resolved::declared_text(self.commissioned.map(|d| d.to_string()))
                    }
                    "size_class" => Resolved::declared_text(
                        self.site
                            .installed_it_kw
                            .map(|kw| size_class(kw).to_owned()),
                    ),
                    "public_owner" => Resolved::declared_text(
                        r.public_owner
                            .map(|p| if p { "yes" } else { "no" }.to_owned()),
                    ),
                    "management_system" => {
                        Resolved::declared_text(r.management_system.as_ref().map(|m| {
                            format!(
                                "{} since {}{}",
                                m.kind,
                                m.since.map_or("unknown".into(), |d| d.to_string()),
                                m.certificate
                                    .as_ref()
                                    .map_or(String::new(), |c| format!(", certificate {c}"))
                            )
                        }))
                    }
                    _ => Resolved::declared_text(
                        r.management_system
                            .as_ref()
                            .and_then(|m| m.certified_until)
                            .map(|d| d.to_string()),
                    ),
                }
            }
            Source::Yearly(k) => {
                let Some(y) = self.site.yearly.iter().find(|y| y.year == self.year) else {
                    return Resolved::none("not-declared");
                };
                Resolved::declared(match *k {
                    "traffic_in_bandwidth_gbps" => y.traffic_in_bandwidth_gbps,
                    "traffic_out_bandwidth_gbps" => y.traffic_out_bandwidth_gbps,
                    "traffic_in_volume_tb" => y.traffic_in_volume_tb,
                    "traffic_out_volume_tb" => y.traffic_out_volume_tb,
                    "storage_capacity_pb" => y.storage_capacity_pb,
                    "server_capacity" => y.server_capacity,
                    "data_stored_tb" => y.data_stored_tb,
                    "data_processed_tb" => y.data_processed_tb,
                    "data_stored_and_processed_tb" => y
                        .data_stored_tb
                        .zip(y.data_processed_tb)
                        .map(|(a, b)| a + b),
                    "temperature_set_point_c" => y.temperature_set_point_c,
                    _ => y.heat_released_mean_c,
                })
            }
            Source::PueEnefg => {
                // EnEfG § 11(2) sentence 3: the electricity of plant used
                // only to upgrade waste heat is left out of the PUE.
                let pue = self.resolve(&Source::Kpi("PUE".into()));
                let Some(up) = self.meter(Role::HeatUpgrade).map(input_status) else {
                    return pue;
                };
                let dc = self.resolve(&Source::EDc);
                let it = self.meter(Role::It).map(input_status);
                let value = match (dc.value, up.value, it.as_ref().and_then(|i| i.value)) {
                    (Some(dc), Some(up), Some(it)) if it > 0.0 => Some((dc - up) / it),
                    _ => None,
                };
                Resolved {
                    value,
                    status: worst(
                        worst(dc.status, up.status),
                        it.map_or("not-metered", |i| i.status),
                    ),
                    missing_share: [dc.missing_share, up.missing_share]
                        .into_iter()
                        .flatten()
                        .fold(None, |a: Option<f64>, m| Some(a.map_or(m, |a| a.max(m)))),
                    text: None,
                    ..Resolved::default()
                }
            }
            Source::Meter(role) => self
                .meter(*role)
                .map_or(Resolved::none("not-metered"), input_status),
            Source::EDc => {
                // Every energy input (EED Delegated Regulation 2024/1364,
                // E_DC): grid import, on-site generation used on site,
                // back-up generator output, and the fuels used on site.
                // With a fuel meter, electricity made from that fuel on
                // site (generator output, on-site generation not declared
                // renewable) is not added again.
                let fuel = self.meter(Role::Fuel).is_some();
                let renewable = self.site.register.onsite_generation_renewable;
                let mut parts = Vec::new();
                if !fuel || renewable {
                    parts.push(Role::OnsiteGeneration);
                }
                if !fuel {
                    parts.push(Role::Generator);
                }
                parts.push(Role::Fuel);
                self.grid_plus(&parts)
            }
            Source::ElectricityTotal => {
                // EnEfG Anlage 3 Nr. 2: electricity, own generation
                // included (no fuels).
                self.grid_plus(&[Role::OnsiteGeneration, Role::Generator])
            }
            Source::WueEed => self.wue_eed(),
            Source::HeatRejectedMonthly => {
                let Some(months) = &self.heat_rejected_monthly else {
                    return Resolved::none("not-metered");
                };
                let status = months.iter().fold("measured", |a, m| worst(a, m.2.status));
                let missing = months
                    .iter()
                    .filter_map(|m| m.2.missing_share)
                    .fold(None, |a: Option<f64>, m| Some(a.map_or(m, |a| a.max(m))));
                Resolved {
                    status,
                    missing_share: missing,
                    series: Some(Value::Array(
                        months
                            .iter()
                            .map(|(month, hours, r)| {
                                json!({
                                    "month": month,
                                    "heat_kwh": r.value,
                                    "mean_kw": r.value.filter(|_| *hours > 0.0).map(|v| v / hours),
                                    "status": r.status,
                                    "missing_share": r.missing_share,
                                })
                            })
                            .collect(),
                    )),
                    ..Resolved::default()
                }
            }
            Source::Kpi(sym) => self
                .figures
                .figures
                .iter()
                .find(|f| f.indicator.symbol() == sym)
                .map_or(Resolved::none("not-metered"), figure_status),
            Source::Heat(k) => {
                let v = self.heat.as_ref().and_then(|h| h[*k].as_f64());
                match (&self.heat, v) {
                    (None, _) => Resolved::none("not-metered"),
                    (Some(h), None) if h["temperatures_metered"] == false => {
                        Resolved::none("not-metered")
                    }
                    (Some(_), None) => Resolved::none("incomplete"),
                    (Some(h), Some(v)) => Resolved {
                        value: Some(v),
                        status: "measured",
                        missing_share: h["delivered"]["missing_share"].as_f64(),
                        text: None,
                        ..Resolved::default()
                    },
                }
            }
            Source::Renewable(k) => {
                // On-site generation is renewable only where declared so
                // (`[site.register] onsite_generation_renewable`).
                let onsite = self
                    .meter(Role::OnsiteGeneration)
                    .filter(|_| self.site.register.onsite_generation_renewable)
                    .map(input_status);
                let contractual = |kind| Resolved {
                    value: Some(instruments_kwh(&self.market, kind)),
                    status: "contractual",
                    missing_share: None,
                    text: None,
                    ..Resolved::default()
                };
                match *k {
                    "certificates" => contractual(Some(InstrumentKind::Certificate)),
                    "ppa" => contractual(Some(InstrumentKind::Ppa)),
                    // Metered on-site generation when there is a meter,
                    // else the on-site contracts.
                    "onsite" => onsite.unwrap_or_else(|| contractual(Some(InstrumentKind::OnSite))),
                    _ => {
                        let bought =
                            instruments_kwh(&self.market, Some(InstrumentKind::Certificate))
                                + instruments_kwh(&self.market, Some(InstrumentKind::Ppa));
                        match onsite {
                            Some(o) => Resolved {
                                value: o.value.map(|v| v + bought),
                                status: o.status,
                                missing_share: o.missing_share,
                                text: None,
                                ..Resolved::default()
                            },
                            None => Resolved {
                                value: Some(
                                    bought
                                        + instruments_kwh(
                                            &self.market,
                                            Some(InstrumentKind::OnSite),
                                        ),
                                ),
                                status: "contractual",
                                missing_share: None,
                                text: None,
                                ..Resolved::default()
                            },
                        }
                    }
                }
            }
        }
    }
}

/// A built export: the JSON document (the CSV is rendered from it).
#[derive(Debug, Clone)]
pub struct Export {
    /// The document.
    pub doc: Value,
}

/// Builds the export of `req`, calling `progress` at each step.
pub fn build(
    conn: &dyn Db,
    site_cfg: &SiteConfig,
    carbon: &CarbonConfig,
    req: &ExportRequest,
    progress: &mut dyn FnMut(&str),
) -> Result<Export, ExportError> {
    if req.to_ms <= req.from_ms {
        return Err(ExportError::Request(
            "the period must end after it starts".into(),
        ));
    }
    let table = req.regime.table()?;
    let bad = check_table(&table);
    if !bad.is_empty() {
        return Err(ExportError::Table(format!(
            "unknown sources: {}",
            bad.join(", ")
        )));
    }
    progress("reading meters and computing figures");
    let figures = site::figures(conn, site_cfg, &carbon.market, req.from_ms, req.to_ms)?;
    let heat = site::measured_heat(conn, site_cfg, req.from_ms, req.to_ms).ok();
    let market = site::market_inputs(&carbon.market, figures.period);
    progress("reading emission factors");
    let factors = factor_provenance(conn, carbon, req.from_ms, req.to_ms)?;
    let commissioned = req.commissioned.or(site_cfg.commissioned);
    let wants_profile = table
        .fields
        .iter()
        .chain(&table.platform)
        .any(|f| parse_source(&f.source) == Some(Source::HeatRejectedMonthly));
    let heat_rejected_monthly = if wants_profile {
        progress("reading the monthly waste-heat profile");
        monthly_totals(
            conn,
            site_cfg,
            carbon,
            Role::HeatRejected,
            req.from_ms,
            req.to_ms,
        )?
    } else {
        None
    };
    let inputs = Inputs {
        site: site_cfg,
        year: date::Date::from_ms(req.from_ms).y,
        commissioned,
        figures,
        heat,
        market,
        heat_rejected_monthly,
    };
    progress("resolving fields");
    let mut resolved = std::collections::BTreeMap::new();
    let mut rows = |specs: &[FieldSpec]| -> Result<Vec<Value>, ExportError> {
        let mut out = Vec::new();
        for f in specs {
            let src = parse_source(&f.source).ok_or_else(|| {
                ExportError::Table(format!("{}: unknown source {}", f.id, f.source))
            })?;
            let mut r = inputs.resolve(&src);
            if let (Some(v), Some(s)) = (r.value, f.scale) {
                r.value = Some(v * s);
            }
            // No "-0" in a regulator's file.
            r.value = r.value.map(|v| v + 0.0);
            let mut row = json!({
                "id": f.id,
                "label": f.label,
                "unit": f.unit,
                "value": match (&r.text, &r.series) {
                    (Some(t), _) => json!(t),
                    (None, Some(v)) => v.clone(),
                    (None, None) => json!(r.value),
                },
                "status": r.status,
                "missing_share": r.missing_share,
                "source": f.source,
                "legal_ref": f.legal_ref,
                "legal_ref_status": if f.verified { "verified" } else { "not verified" },
            });
            if let Some(n) = &r.note {
                row["note"] = json!(n);
            }
            out.push(row);
            resolved.insert(f.id.clone(), r);
        }
        Ok(out)
    };
    let fields = rows(&table.fields)?;
    let platform = rows(&table.platform)?;
    let scope_src = table.scope.as_deref().unwrap_or("site.installed_it_kw");
    let scope = parse_source(scope_src)
        .map(|s| inputs.resolve(&s).value)
        .ok_or_else(|| ExportError::Table(format!("scope: unknown source {scope_src}")))?;
    let mut method = methodology(site_cfg, carbon);
    method["acts"] = json!(table.acts);
    let mut doc = json!({
        "format": "vigie-export/1",
        "generator": format!("vigie-collector {}", env!("CARGO_PKG_VERSION")),
        "regime": {
            "id": table.id,
            "title": table.title,
            "legal_basis": table.legal_basis,
            "deadline": table.deadline,
            "threshold_kw": table.threshold_kw,
            "scope_source": scope_src,
            "site_in_scope": scope.map(|kw| kw >= table.threshold_kw),
        },
        "due_by": table.due.as_deref().map(|md| format!("{}-{md}", date::Date::from_ms(req.to_ms - 1).y + 1)),
        "period": {
            "from": date::rfc3339(req.from_ms),
            "to": date::rfc3339(req.to_ms),
            "from_ms": req.from_ms,
            "to_ms": req.to_ms,
        },
        "fields": fields,
        "figures": inputs.figures.figures.iter().map(site::figure_json).collect::<Vec<_>>(),
        "missing_roles": inputs.figures.missing_roles.iter().map(|r| r.as_str().to_owned()).collect::<Vec<_>>(),
        "methodology": method,
        "provenance": {
            "meters": site_cfg.meters.iter().map(|m| meter_provenance(m, &inputs)).collect::<Vec<_>>(),
            "emission_factors": factors,
            "instruments": carbon.market.instruments.iter().map(|i| json!({
                "name": i.name,
                "kind": format!("{:?}", i.kind).to_lowercase(),
                "origin": format!("{:?}", i.origin).to_lowercase(),
                "year": i.year,
                "volume_mwh": i.volume_mwh,
                "hourly_profile": i.hourly_csv.as_ref().map(|p| p.display().to_string()),
            })).collect::<Vec<_>>(),
        },
    });
    if req.regime == Regime::Enefg {
        progress("checking EnEfG targets");
        let value = |id: &str| resolved.get(id).and_then(|r| r.value);
        // The request's date wins over the configured one.
        let checks = targets::check_with(
            date::Date::from_ms(req.to_ms - 1),
            commissioned,
            value("pue"),
            value("erf"),
            value("renewable_share"),
            site_cfg.register.erf_exemption.as_ref(),
        );
        doc["commissioned"] = match commissioned {
            Some(d) => json!(d.to_string()),
            None => json!(
                "unknown: set [site] commissioned = \"YYYY-MM-DD\" or pass --commissioned YYYY-MM-DD (HTTP: commissioned=) to check the PUE and ERF targets"
            ),
        };
        doc["targets"] = serde_json::to_value(&checks).unwrap_or(Value::Null);
        let reg = &site_cfg.register;
        let ems = reg
            .management_system
            .as_ref()
            .map(|m| targets::EmsAttestation {
                kind: &m.kind,
                since: m.since,
                certified_until: m.certified_until,
                certificate: m.certificate.as_deref(),
            });
        let obligations = targets::management_system(
            date::Date::from_ms(req.to_ms - 1),
            reg.non_redundant_power_kw,
            reg.public_owner.unwrap_or(false),
            ems.as_ref(),
        );
        doc["obligations"] = serde_json::to_value(&obligations).unwrap_or(Value::Null);
    }
    if !table.platform.is_empty() {
        doc["waste_heat_platform"] = json!({
            "title": table.platform_title,
            "fields": platform,
        });
    }
    no_negative_zero(&mut doc);
    Ok(Export { doc })
}

/// A month's total: (`YYYY-MM`, hours of the period in it, the total).
type MonthTotal = (String, f64, Resolved);

/// The totals of the meter with `role` in each calendar month (UTC) of
/// `[from_ms, to_ms)`, cut at the period's bounds: (`YYYY-MM`, hours,
/// total). `None` without such a meter. Reads that meter alone.
fn monthly_totals(
    conn: &dyn Db,
    site_cfg: &SiteConfig,
    carbon: &CarbonConfig,
    role: Role,
    from_ms: i64,
    to_ms: i64,
) -> Result<Option<Vec<MonthTotal>>, ExportError> {
    let mut only = site_cfg.clone();
    only.meters.retain(|m| m.role == role);
    if only.meters.is_empty() {
        return Ok(None);
    }
    let mut out = Vec::new();
    let mut a = from_ms;
    while a < to_ms {
        let d = date::Date::from_ms(a);
        let next = if d.m == 12 {
            date::Date {
                y: d.y + 1,
                m: 1,
                d: 1,
            }
        } else {
            date::Date {
                y: d.y,
                m: d.m + 1,
                d: 1,
            }
        };
        let b = next.start_ms().min(to_ms);
        let f = site::figures(conn, &only, &carbon.market, a, b)?;
        let total = f
            .totals
            .iter()
            .find(|(_, r, _)| *r == role)
            .map_or(Resolved::none("not-metered"), |x| input_status(&x.2));
        out.push((
            format!("{:04}-{:02}", d.y, d.m),
            (b - a) as f64 / vigie_energy::HOUR_MS as f64,
            total,
        ));
        a = b;
    }
    Ok(Some(out))
}

/// `-0.0` (from `0 x -1` in the figures) reads as a sign error in a
/// regulator's file: written as 0.
fn no_negative_zero(v: &mut Value) {
    match v {
        Value::Number(n) if n.as_f64().is_some_and(|x| x == 0.0 && x.is_sign_negative()) => {
            *v = json!(0.0);
        }
        Value::Array(a) => a.iter_mut().for_each(no_negative_zero),
        Value::Object(o) => o.values_mut().for_each(no_negative_zero),
        _ => {}
    }
}

fn meter_provenance(m: &site::MeterConfig, inputs: &Inputs<'_>) -> Value {
    let total = inputs
        .figures
        .totals
        .iter()
        .find(|(n, _, _)| *n == m.name)
        .map(|(_, _, i)| input_status(i));
    json!({
        "name": m.name,
        "role": m.role.as_str(),
        "kind": if m.register.is_some() { "register" } else if m.is_manual() { "manual readings" } else { "ledger sensors" },
        "sensors": m.sensors.iter().map(|s| format!("{}/{}", s.host, s.sensor)).collect::<Vec<_>>(),
        "register": m.register.as_ref().map(|r| json!({
            "host": r.host,
            "sensor": r.sensor,
            "quantity": format!("{:?}", r.quantity),
        })),
        "zone": m.zone,
        "total": total.as_ref().and_then(|t| t.value),
        "status": total.as_ref().map(|t| t.status),
        "missing_share": total.as_ref().and_then(|t| t.missing_share),
    })
}

fn factor_provenance(
    conn: &dyn Db,
    carbon: &CarbonConfig,
    from_ms: i64,
    to_ms: i64,
) -> Result<Value, ExportError> {
    use vigie_energy::HOUR_MS;
    let from = from_ms.div_euclid(HOUR_MS) * HOUR_MS;
    let to = (to_ms + HOUR_MS - 1).div_euclid(HOUR_MS) * HOUR_MS;
    let hours = crate::carbon::hourly_factors(
        conn,
        &carbon.zone,
        carbon.basis,
        vigie_energy::GramsPerKwh(carbon.intensity_g_per_kwh),
        from,
        to,
    )?;
    let mut by_source: std::collections::BTreeMap<String, u64> = Default::default();
    let (mut fallback, mut estimated) = (0u64, 0u64);
    for f in hours.values() {
        fallback += u64::from(f.fallback);
        estimated += u64::from(f.estimated);
        for s in &f.sources {
            *by_source.entry(s.clone()).or_default() += 1;
        }
    }
    Ok(json!({
        "zone": carbon.zone,
        "basis": carbon.basis.as_str(),
        "type": "average (location-based); marginal factors never enter inventories",
        "static_fallback_g_per_kwh": carbon.intensity_g_per_kwh,
        "static_fallback_basis": carbon.intensity_basis.as_str(),
        "static_fallback_source": carbon.source,
        "series_files": carbon.series.iter().map(|s| s.path.display().to_string()).collect::<Vec<_>>(),
        "yearly_tables": carbon.yearly.iter().map(|y| json!({
            "path": y.path.display().to_string(),
            "year": y.year,
            "basis": y.basis.as_str(),
        })).collect::<Vec<_>>(),
        "live_providers": carbon.live.len(),
        "hours": hours.len(),
        "hours_by_source": by_source,
        "hours_on_static_fallback": fallback,
        "hours_estimated": estimated,
        "residual_mix_g_per_kwh": carbon.market.residual_mix_g_per_kwh,
        "supplier": carbon.market.supplier.as_ref().map(|s| json!({
            "factor_g_per_kwh": s.factor_g_per_kwh,
            "share": s.share,
        })),
    }))
}

fn methodology(site_cfg: &SiteConfig, carbon: &CarbonConfig) -> Value {
    json!({
        "formulas": {
            "E_DC": "grid import + on-site generation used on site + back-up generator output + fuels used on site (energy content, `fuel` meter); with a fuel meter, electricity made from that fuel on site (generator output, on-site generation not declared renewable) is not added again; minute by minute where several are metered, fuel read by hand spread over the minutes pro rata",
            "electricity_total": "grid import + on-site generation + back-up generator output (EnEfG Anlage 3: electricity including own generation)",
            "PUE": "E_DC / E_IT (ISO/IEC 30134-2)",
            "ERF": "heat delivered for reuse / E_DC (ISO/IEC 30134-6)",
            "REF": "renewable energy (on-site generation + renewable certificates and PPAs pro rata to the period) / E_DC (ISO/IEC 30134-3)",
            "WUE": "water input (L) / E_IT (kWh) (ISO/IEC 30134-9); EED from data year 2026: freshwater input (L) / E_IT (the 2026 amending act, see the wue field's note)",
            "CER": "heat removed / cooling electricity (ISO/IEC 30134-7)",
            "average heat temperature": "energy-weighted mean of the supply temperature over the heat delivered",
        },
        "it_measurement_category": site_cfg.it_category,
        "gap_rule": match site_cfg.gap_rule {
            site::GapRuleConfig::Strict => "strict: a gap in any input makes the figure incomplete (no value)",
            site::GapRuleConfig::ScaleToPeriod => "scale-to-period: gaps are filled at each input's own average rate and the figure is flagged estimated",
        },
        "meter_minutes": "a ledger meter's minute counts only when every one of its sensors has it",
        "meter_hours": "where minute buckets are absent (periods kept at hourly resolution), a whole hour in which every sensor has data counts as one sample, so coverage inside it is hour-granular",
        "registers": "cumulative registers: intervals are differences of consecutive values; a step backwards is left out",
        "instruments": "annual volumes enter pro rata to the share of their calendar year the period covers",
        "emission_factors": format!(
            "hourly average factors for zone {}, every one of the {} basis (one basis per inventory), from the stored grid series; hours without a point use the static factor {} g/kWh ({}, {}), flagged estimated; {}",
            carbon.zone,
            carbon.basis.as_str(),
            carbon.intensity_g_per_kwh,
            carbon.source,
            carbon.intensity_basis.as_str(),
            crate::carbon::HOURLY_RULE
        ),
        "statuses": {
            "measured": "fully covered by measured samples",
            "estimated": "contains estimated samples or filled gaps",
            "incomplete": "gaps under the strict rule: no value",
            "undefined": "a zero denominator",
            "declared": "a fact declared in the configuration",
            "not-declared": "a fact the configuration does not give",
            "contractual": "a contractual volume, not a metered one",
            "not-metered": "vigie has no meter or model for this field",
        },
    })
}

impl Export {
    /// The bytes of the export in `format`.
    pub fn render(&self, format: Format) -> Vec<u8> {
        match format {
            Format::Json => {
                let mut v = serde_json::to_vec_pretty(&self.doc).unwrap_or_default();
                v.push(b'\n');
                v
            }
            Format::Csv => self.csv().into_bytes(),
        }
    }

    fn csv(&self) -> String {
        let d = &self.doc;
        let mut out = String::new();
        out.push_str(&format!(
            "# vigie export regime={} from={} to={}\n",
            d["regime"]["id"].as_str().unwrap_or(""),
            d["period"]["from"].as_str().unwrap_or(""),
            d["period"]["to"].as_str().unwrap_or("")
        ));
        out.push_str("section,id,label,value,unit,status,missing_share,source,legal_ref\n");
        let num = |v: &Value| match v {
            Value::String(t) => t.clone(),
            // A load profile: month=kWh pairs.
            Value::Array(a) => a
                .iter()
                .map(|m| {
                    format!(
                        "{}={}",
                        m["month"].as_str().unwrap_or(""),
                        m["heat_kwh"]
                            .as_f64()
                            .map(|x| x.to_string())
                            .unwrap_or_default()
                    )
                })
                .collect::<Vec<_>>()
                .join(";"),
            _ => v.as_f64().map(|x| x.to_string()).unwrap_or_default(),
        };
        let s = |v: &Value| v.as_str().unwrap_or("").to_owned();
        let platform = d["waste_heat_platform"]["fields"].as_array();
        let rows = d["fields"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|f| ("field", f))
            .chain(platform.into_iter().flatten().map(|f| ("platform", f)));
        for (section, f) in rows {
            out.push_str(&csv_line(&[
                section.into(),
                s(&f["id"]),
                s(&f["label"]),
                num(&f["value"]),
                s(&f["unit"]),
                s(&f["status"]),
                num(&f["missing_share"]),
                s(&f["source"]),
                match f["legal_ref_status"].as_str() {
                    Some("verified") => s(&f["legal_ref"]),
                    _ => format!("{} (not verified)", s(&f["legal_ref"])),
                },
            ]));
        }
        for t in d["targets"].as_array().into_iter().flatten() {
            out.push_str(&csv_line(&[
                "target".into(),
                s(&t["id"]),
                s(&t["label"]),
                num(&t["limit"]),
                s(&t["unit"]),
                s(&t["result"]),
                String::new(),
                s(&t["basis"]),
                s(&t["legal_ref"]),
            ]));
        }
        for o in d["obligations"].as_array().into_iter().flatten() {
            out.push_str(&csv_line(&[
                "obligation".into(),
                s(&o["id"]),
                s(&o["label"]),
                s(&o["deadline"]),
                "date".into(),
                s(&o["result"]),
                String::new(),
                s(&o["basis"]),
                s(&o["legal_ref"]),
            ]));
        }
        out
    }
}

/// One CSV line, quoting fields with commas, quotes or line breaks (RFC 4180).
fn csv_line(cells: &[String]) -> String {
    let mut l = cells
        .iter()
        .map(|c| {
            if c.contains([',', '"', '\n', '\r']) {
                format!("\"{}\"", c.replace('"', "\"\""))
            } else {
                c.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(",");
    l.push('\n');
    l
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn every_source_expression_of_every_table_resolves() {
        for r in Regime::ALL {
            let t = r.table().unwrap();
            assert_eq!(t.id, r.as_str());
            assert!(!t.fields.is_empty());
            assert_eq!(check_table(&t), Vec::<String>::new(), "{}", r.as_str());
            let mut ids: Vec<&str> = t.fields.iter().map(|f| f.id.as_str()).collect();
            ids.sort_unstable();
            ids.dedup();
            assert_eq!(ids.len(), t.fields.len(), "duplicate field ids in {}", t.id);
        }
    }

    #[test]
    fn every_field_of_every_table_has_a_legal_reference() {
        for r in Regime::ALL {
            let t = r.table().unwrap();
            assert_eq!(legal_refs_missing(&t), Vec::<String>::new(), "{}", t.id);
            assert!(!t.acts.is_empty(), "{}: no acts listed", t.id);
        }
        let t: FieldTable = toml::from_str(
            "id = \"x\"\ntitle = \"x\"\nlegal_basis = \"x\"\nthreshold_kw = 1.0\ndeadline = \"x\"\n[[fields]]\nid = \"a\"\nlabel = \"a\"\nunit = \"1\"\nsource = \"not-metered\"\n",
        )
        .unwrap();
        assert_eq!(legal_refs_missing(&t), vec!["a".to_owned()]);
    }

    #[test]
    fn unknown_sources_are_refused() {
        for bad in [
            "kpi.XYZ.value",
            "meter.nope.total",
            "meter.it",
            "site.colour",
            "heat.x",
            "",
        ] {
            assert_eq!(parse_source(bad), None, "{bad}");
        }
        assert_eq!(
            parse_source("meter.water-potable.total"),
            Some(Source::Meter(Role::WaterPotable))
        );
        assert_eq!(
            parse_source("kpi.PUE.value"),
            Some(Source::Kpi("PUE".into()))
        );
    }

    #[test]
    fn negative_zero_is_written_as_zero() {
        let mut v = json!({"a": [-0.0, 1.5], "b": {"c": -0.0}});
        no_negative_zero(&mut v);
        assert_eq!(
            serde_json::to_string(&v).unwrap(),
            r#"{"a":[0.0,1.5],"b":{"c":0.0}}"#
        );
    }

    #[test]
    fn csv_quotes_what_needs_quoting() {
        assert_eq!(
            csv_line(&["a".into(), "b,c".into(), "say \"x\"".into()]),
            "a,\"b,c\",\"say \"\"x\"\"\"\n"
        );
    }
}
