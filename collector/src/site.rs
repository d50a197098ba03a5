//! The site model: which meters make up the data-centre boundary, and the
//! facility indicators computed from them over any period.
//!
//! Each role is one meter. A meter reads the ledger (the sum of one or
//! more agent sensors, minute by minute, a minute counting only when every
//! sensor has it; whole hours where minute buckets are absent) or manual readings entered through the API (water and
//! heat meters read by hand). The maths, coverage and gap rules are
//! `vigie_energy::kpi`; here the inputs are gathered.

use crate::backend::{Db, LedgerError, LedgerRead, LedgerWrite};
use crate::export::date::Date;
pub use crate::store::manual::ManualReading;
use crate::store::{self, Resolution};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;
use vigie_energy::calendar::year_start_ms;
use vigie_energy::{
    Figure, GapRule, HOUR_MS, Litres, MINUTE_MS, Microjoules, Period, PueCategory, Quality, Sample,
    Series, SeriesError,
};

/// `[site]`: the boundary and the facts regulators ask for.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteConfig {
    /// Installed IT power, kW.
    #[serde(default)]
    pub installed_it_kw: Option<f64>,
    /// Total floor area, m².
    #[serde(default)]
    pub floor_area_m2: Option<f64>,
    /// Computer-room floor area, m².
    #[serde(default)]
    pub computer_room_area_m2: Option<f64>,
    /// ISO/IEC 30134-2 category of the IT meter: 1 UPS output, 2 PDU
    /// output, 3 IT equipment input.
    #[serde(default = "d_category")]
    pub it_category: u8,
    /// `strict` (a gap makes a figure incomplete, the default) or
    /// `scale-to-period` (gaps filled at each input's own rate, flagged
    /// estimated).
    #[serde(default)]
    pub gap_rule: GapRuleConfig,
    /// The meters.
    #[serde(default)]
    pub meters: Vec<MeterConfig>,
    /// Date the site started operating (`YYYY-MM-DD`): which EnEfG PUE and
    /// ERF targets apply.
    #[serde(default, deserialize_with = "de_date")]
    pub commissioned: Option<Date>,
    /// How often the site figures of the current day are refreshed into
    /// the metrics.
    #[serde(default = "d_kpi_every", with = "humantime_serde")]
    pub kpi_every: Duration,
    /// How often the year-to-date figures are (they read the whole year).
    #[serde(default = "d_kpi_ytd_every", with = "humantime_serde")]
    pub kpi_ytd_every: Duration,
    /// `[site.register]`: administrative facts the regulators' data sets
    /// ask for (name, owner, operators, address, SIRET, powers, evidence).
    #[serde(default)]
    pub register: SiteRegister,
    /// `[[site.yearly]]`: facts declared per reporting year that vigie does
    /// not meter (data traffic, ICT capacity, data stored and processed).
    #[serde(default)]
    pub yearly: Vec<YearlyFacts>,
}

/// `[site.register]`: the site's administrative facts, declared.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteRegister {
    /// Name of the data centre.
    #[serde(default)]
    pub name: Option<String>,
    /// Owner (legal person).
    #[serde(default)]
    pub owner: Option<String>,
    /// Operators (legal persons).
    #[serde(default)]
    pub operators: Vec<String>,
    /// Street address.
    #[serde(default)]
    pub address: Option<String>,
    /// Postcode.
    #[serde(default)]
    pub postcode: Option<String>,
    /// Municipality.
    #[serde(default)]
    pub municipality: Option<String>,
    /// NUTS code of the region (e.g. `DE300`).
    #[serde(default)]
    pub nuts_code: Option<String>,
    /// French SIRET number of the establishment (14 digits).
    #[serde(default)]
    pub siret: Option<String>,
    /// Person responsible for the data centre.
    #[serde(default)]
    pub contact_name: Option<String>,
    /// Their e-mail address.
    #[serde(default)]
    pub contact_email: Option<String>,
    /// Non-redundant rated connection power of the whole data centre
    /// (IT and building services), kW: the EnEfG scope (300 kW).
    #[serde(default)]
    pub non_redundant_power_kw: Option<f64>,
    /// Type of data centre (EED Delegated Regulation 2024/1364 Annex I:
    /// `enterprise`, `colocation` or `co-hosting`, as its Art. 2 defines them).
    #[serde(default)]
    pub data_centre_type: Option<String>,
    /// Redundancy level of the power supply (`N`, `N+1`, `2N`...).
    #[serde(default)]
    pub redundancy_power: Option<String>,
    /// Redundancy level of the cooling.
    #[serde(default)]
    pub redundancy_cooling: Option<String>,
    /// Maximum thermal power of the waste heat, kW (EnEfG § 17 platform).
    #[serde(default)]
    pub waste_heat_max_kw: Option<f64>,
    /// How the waste heat's supply can be controlled (EnEfG § 17).
    #[serde(default)]
    pub waste_heat_control: Option<String>,
    /// Whether on-site generation is renewable (photovoltaics, wind):
    /// only then does it count in REF and the renewable fields.
    #[serde(default)]
    pub onsite_generation_renewable: bool,
    /// EnEfG § 11(3) evidence lifting the ERF requirement.
    #[serde(default)]
    pub erf_exemption: Option<crate::export::targets::ErfExemption>,
    /// EnEfG § 12 energy or environmental management system.
    #[serde(default)]
    pub management_system: Option<ManagementSystem>,
    /// Owned by or operated for a public body (EnEfG § 12(3): certified
    /// from 300 kW instead of 1 MW); not declared: taken as not public.
    #[serde(default)]
    pub public_owner: Option<bool>,
}

/// An energy or environmental management system as attested.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManagementSystem {
    /// `iso-50001` or `emas`.
    pub kind: String,
    /// In place since, `YYYY-MM-DD`.
    #[serde(deserialize_with = "de_date")]
    pub since: Option<Date>,
    /// Certified or validated until, `YYYY-MM-DD` (none: not certified).
    #[serde(default, deserialize_with = "de_date")]
    pub certified_until: Option<Date>,
    /// Certificate or registration reference.
    #[serde(default)]
    pub certificate: Option<String>,
}

/// `[[site.yearly]]`: facts of one reporting year, declared.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct YearlyFacts {
    /// The calendar year.
    pub year: i64,
    /// Incoming traffic bandwidth, Gbit/s.
    #[serde(default)]
    pub traffic_in_bandwidth_gbps: Option<f64>,
    /// Outgoing traffic bandwidth, Gbit/s.
    #[serde(default)]
    pub traffic_out_bandwidth_gbps: Option<f64>,
    /// Incoming data volume over the year, TB.
    #[serde(default)]
    pub traffic_in_volume_tb: Option<f64>,
    /// Outgoing data volume over the year, TB.
    #[serde(default)]
    pub traffic_out_volume_tb: Option<f64>,
    /// Data storage capacity (CSTOR), PB.
    #[serde(default)]
    pub storage_capacity_pb: Option<f64>,
    /// Server capacity (CSERV), as the delegated regulation computes it.
    #[serde(default)]
    pub server_capacity: Option<f64>,
    /// Data stored, TB.
    #[serde(default)]
    pub data_stored_tb: Option<f64>,
    /// Data processed, TB.
    #[serde(default)]
    pub data_processed_tb: Option<f64>,
    /// Temperature set point of the computer rooms (supply air), °C.
    #[serde(default)]
    pub temperature_set_point_c: Option<f64>,
    /// Average temperature of the heat released to air, water or ground, °C.
    #[serde(default)]
    pub heat_released_mean_c: Option<f64>,
}

impl Default for SiteConfig {
    fn default() -> Self {
        // Every field has a serde default, so an empty table parses.
        toml::from_str("").unwrap_or_else(|e| unreachable!("{e}"))
    }
}

fn d_category() -> u8 {
    2
}
fn d_kpi_every() -> Duration {
    Duration::from_secs(60)
}
fn d_kpi_ytd_every() -> Duration {
    Duration::from_secs(15 * 60)
}

fn de_date<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Date>, D::Error> {
    let s = String::deserialize(d)?;
    Date::parse(&s)
        .map(Some)
        .ok_or_else(|| serde::de::Error::custom(format!("expected a date YYYY-MM-DD, got {s:?}")))
}

/// Gap rule as configured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GapRuleConfig {
    /// See [`GapRule::Strict`].
    #[default]
    Strict,
    /// See [`GapRule::ScaleToPeriod`].
    ScaleToPeriod,
}

impl From<GapRuleConfig> for GapRule {
    fn from(g: GapRuleConfig) -> Self {
        match g {
            GapRuleConfig::Strict => GapRule::Strict,
            GapRuleConfig::ScaleToPeriod => GapRule::ScaleToPeriod,
        }
    }
}

/// What a meter measures in the boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Electricity entering from the grid (part of E_DC).
    GridImport,
    /// On-site generation used on site (part of E_DC; renewable for REF).
    OnsiteGeneration,
    /// IT equipment energy (E_IT), at the category's point.
    It,
    /// Cooling electricity (CER's denominator).
    Cooling,
    /// Heat handed to a user outside the boundary (ERF).
    HeatDelivered,
    /// Heat removed from the IT rooms (CER's numerator), kWh thermal.
    HeatRemoved,
    /// Heat released to the environment (not reused), kWh thermal.
    HeatRejected,
    /// Water input, litres (WUE).
    Water,
    /// Of which potable water, litres (reported, EED).
    WaterPotable,
    /// Of which non-potable water (rain, grey, river), litres (reported).
    WaterNonPotable,
    /// Back-up generator output, kWh (part of E_DC; reported, EED).
    Generator,
    /// Energy content of the fuels used on site (generators, CHP,
    /// boilers), kWh: part of E_DC (EED Delegated Regulation 2024/1364);
    /// with it, electricity made from fuel on site (generator output,
    /// on-site generation not declared renewable) is not added again.
    Fuel,
    /// Of the water input, freshwater, litres (the WUE input of the 2026
    /// amendment of Delegated Regulation 2024/1364).
    Freshwater,
    /// Electricity fed into the grid, kWh (reported, EnEfG Anlage 3).
    GridExport,
    /// Electricity of plant used only to upgrade waste heat (heat pumps),
    /// kWh: part of E_DC, left out of the EnEfG § 11(2) PUE.
    HeatUpgrade,
    /// All energy of a zone or subsystem (pPUE's numerator); needs `zone`.
    ZoneTotal,
    /// IT energy of that zone (pPUE's denominator); needs `zone`.
    ZoneIt,
}

impl Role {
    /// The role as configured (`grid-import`, `heat-delivered`...).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::GridImport => "grid-import",
            Role::OnsiteGeneration => "onsite-generation",
            Role::It => "it",
            Role::Cooling => "cooling",
            Role::HeatDelivered => "heat-delivered",
            Role::HeatRemoved => "heat-removed",
            Role::HeatRejected => "heat-rejected",
            Role::Water => "water",
            Role::WaterPotable => "water-potable",
            Role::WaterNonPotable => "water-non-potable",
            Role::Generator => "generator",
            Role::Fuel => "fuel",
            Role::Freshwater => "freshwater",
            Role::GridExport => "grid-export",
            Role::HeatUpgrade => "heat-upgrade",
            Role::ZoneTotal => "zone-total",
            Role::ZoneIt => "zone-it",
        }
    }

    /// Whether the meter counts water (litres) rather than energy.
    pub fn is_water(self) -> bool {
        matches!(
            self,
            Role::Water | Role::WaterPotable | Role::WaterNonPotable | Role::Freshwater
        )
    }
}

/// One agent sensor: `host` and `sensor` as in the ledger.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SensorRef {
    /// Host.
    pub host: String,
    /// Sensor.
    pub sensor: String,
}

/// `[[site.meters]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeterConfig {
    /// Meter name (manual readings are posted to it).
    pub name: String,
    /// What it measures.
    pub role: Role,
    /// Ledger sensors summed into it; none: a manual meter.
    #[serde(default)]
    pub sensors: Vec<SensorRef>,
    /// The zone of a `zone-total` or `zone-it` meter.
    #[serde(default)]
    pub zone: Option<String>,
    /// A cumulative register read by an agent (heat meters' kWh, water
    /// meters' m³ over Modbus): intervals are the differences of
    /// consecutive values, exact over any span.
    #[serde(default)]
    pub register: Option<RegisterRef>,
}

/// A register series in the ledger.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterRef {
    /// Host whose agent reads it.
    pub host: String,
    /// Sensor (`{device}:{point}`).
    pub sensor: String,
    /// `heat-energy-kwh` or `volume-m3`.
    pub quantity: RegisterQuantity,
}

/// Which register.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RegisterQuantity {
    /// Thermal energy, kWh (heat meters).
    HeatEnergyKwh,
    /// Volume, m³ (water meters).
    VolumeM3,
}

impl MeterConfig {
    /// Whether hand readings feed it.
    pub fn is_manual(&self) -> bool {
        self.sensors.is_empty() && self.register.is_none()
    }
}

/// Interval samples from a cumulative register: `(start, end, amount,
/// estimated)` in µJ (heat) or litres (volume). A step backwards (meter
/// reset or replaced) leaves that interval out.
fn register_samples(
    conn: &dyn LedgerRead,
    r: &RegisterRef,
    from_ms: i64,
    to_ms: i64,
) -> Result<Vec<(i64, i64, u64, bool)>, LedgerError> {
    let (quantity, scale) = match r.quantity {
        RegisterQuantity::HeatEnergyKwh => (vigie_protocol::GaugeQuantity::HeatEnergyKwh, 3.6e12),
        RegisterQuantity::VolumeM3 => (vigie_protocol::GaugeQuantity::VolumeCubicMetres, 1000.0),
    };
    let values = conn.registers(&r.host, &r.sensor, quantity.as_str(), from_ms, to_ms)?;
    Ok(values
        .windows(2)
        .filter_map(|w| {
            let ((t0, v0), (t1, v1)) = (w[0], w[1]);
            let d = v1 - v0;
            (t1 > t0 && d.is_finite() && d >= 0.0)
                .then(|| (t0, t1, (d * scale).round() as u64, false))
        })
        .collect())
}

/// Why site figures cannot be computed.
#[derive(Debug, thiserror::Error)]
pub enum SiteError {
    /// The store.
    #[error("store: {0}")]
    Store(#[from] LedgerError),
    /// Samples that do not form a series (overlapping manual readings).
    #[error("meter {meter}: {source}")]
    Series {
        /// Meter.
        meter: String,
        /// Cause.
        source: SeriesError,
    },
    /// A bad period.
    #[error("period: {0}")]
    Period(SeriesError),
    /// The configuration names a role twice or no such meter.
    #[error("{0}")]
    Config(String),
}

/// Stores manual readings of `meter` in one transaction; refuses them all
/// if any overlaps a stored one or another in the same call (see
/// [`store::manual::add`]).
pub fn add_manual(
    conn: &mut dyn LedgerWrite,
    meter: &str,
    readings: &[ManualReading],
    now_ms: i64,
) -> Result<(), SiteError> {
    conn.add_manual(meter, readings, now_ms)
        .map_err(|e| match e {
            LedgerError::Refused(why) => SiteError::Config(why),
            e => SiteError::Store(e),
        })
}

/// Parses a CSV of manual readings: a header line, then
/// `from,to,amount[,estimated[,note]]` per line, times in RFC 3339 or Unix
/// ms, the amount in kWh (energy meters) or litres (water meters). Lines
/// that do not parse are reported by number; nothing is stored then.
pub fn parse_readings_csv(
    text: &str,
    water: bool,
    parse_time: impl Fn(&str) -> Option<i64>,
) -> Result<Vec<ManualReading>, String> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let f: Vec<&str> = line.splitn(5, ',').map(str::trim).collect();
        // A first line whose first field is not a time is the header; a
        // file without one loses no reading.
        if i == 0 && f.first().and_then(|t| parse_time(t)).is_none() {
            continue;
        }
        let parsed = (|| {
            let start_ms = parse_time(f.first()?)?;
            let end_ms = parse_time(f.get(1)?)?;
            let x: f64 = f.get(2)?.parse().ok()?;
            if !(x.is_finite() && x >= 0.0) || end_ms <= start_ms {
                return None;
            }
            let amount = if water {
                x.round()
            } else {
                (x * 3.6e12).round()
            } as u128;
            let estimated = matches!(f.get(3).copied(), Some("true" | "1" | "yes" | "estimated"));
            let note = f.get(4).map(|n| (*n).to_owned()).filter(|n| !n.is_empty());
            Some(ManualReading {
                start_ms,
                end_ms,
                amount,
                estimated,
                note,
            })
        })();
        match parsed {
            Some(r) => out.push(r),
            None => errors.push(i + 1),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(format!(
            "lines that do not parse (expected from,to,amount[,estimated[,note]] with to after from and a non-negative amount): {:?}",
            errors.iter().take(20).collect::<Vec<_>>()
        ))
    }
}

/// When the ledger's data starts (see [`LedgerRead::first_data_ms`]).
pub fn first_data_ms(conn: &dyn LedgerRead) -> Result<Option<i64>, LedgerError> {
    conn.first_data_ms()
}

/// The hours of a period that have data, as one dense run from the
/// earliest to the latest hour seen: its memory follows the data's span,
/// not the period's (a period may reach centuries ahead), and each hour is
/// found by an index, not a search.
#[derive(Default)]
struct HourSlots {
    /// Hour index (from the period's first whole hour) of `slots[0]`.
    base: usize,
    slots: Vec<HourSlot>,
}

impl HourSlots {
    /// The slot of hour `h`, made (with the hours between) when new.
    fn slot(&mut self, h: usize) -> &mut HourSlot {
        if self.slots.is_empty() {
            self.base = h;
        } else if h < self.base {
            let grow = self.base - h;
            self.slots
                .splice(0..0, std::iter::repeat_n(HourSlot::default(), grow));
            self.base = h;
        }
        let i = h - self.base;
        if i >= self.slots.len() {
            self.slots.resize(i + 1, HourSlot::default());
        }
        &mut self.slots[i]
    }

    fn get(&self, h: usize) -> Option<&HourSlot> {
        h.checked_sub(self.base).and_then(|i| self.slots.get(i))
    }

    fn iter(&self) -> impl Iterator<Item = (usize, &HourSlot)> {
        self.slots
            .iter()
            .enumerate()
            .map(|(i, x)| (self.base + i, x))
    }
}

/// One hour of a meter's sensors with data in it.
#[derive(Clone, Copy, Default)]
struct HourSlot {
    acc: Acc,
    /// Evaluated as one sample: some sensor has only its hour bucket.
    level: bool,
    /// The last sensor seen with minute buckets in the hour.
    minutes_of: Option<usize>,
}

/// Energy of a time slot summed over a meter's sensors.
#[derive(Clone, Copy, Default)]
struct Acc {
    /// Sensors with data in the slot.
    sensors: usize,
    /// µJ, measured plus estimated.
    amount: u64,
    /// Some of it estimated.
    estimated: bool,
}

/// Samples of a ledger meter, read per sensor by primary-key range (the
/// cost is the meter's own rows, not the ledger's).
///
/// Minute buckets first: a minute counts only when every one of the
/// meter's sensors has a bucket there (a partial minute is missing, not
/// under-counted). Hour buckets are the fallback where minute rows are
/// absent (old periods kept at hourly resolution): in a whole hour of the
/// period where some sensor has an hour bucket but no minute bucket, the
/// hour is evaluated as one sample for every sensor (each sensor's
/// minutes summed into the hour, or its hour bucket when it has no
/// minutes there), counted only when every sensor has data in it. Coverage
/// inside such hours is therefore hour-granular: the whole hour counts as
/// covered. Hours cut by the period's edges use minute buckets only, so
/// that no hour amount is pro-rated. Sums are exact integer µJ.
fn ledger_samples(
    conn: &dyn LedgerRead,
    sensors: &[SensorRef],
    from_ms: i64,
    to_ms: i64,
) -> Result<Vec<RawSample>, LedgerError> {
    if sensors.is_empty() || to_ms <= from_ms {
        return Ok(Vec::new());
    }
    // The whole hours of the period: [h0, h0 + hours x HOUR_MS).
    let h0 =
        from_ms.div_euclid(HOUR_MS) * HOUR_MS + if from_ms % HOUR_MS == 0 { 0 } else { HOUR_MS };
    let h1 = to_ms.div_euclid(HOUR_MS) * HOUR_MS;
    let hours = usize::try_from((h1 - h0).max(0) / HOUR_MS).unwrap_or(0);
    let hour_of =
        |t: i64| -> Option<usize> { (t >= h0 && t < h1).then(|| ((t - h0) / HOUR_MS) as usize) };
    // Per hour with data only (a period may span centuries; only hours
    // with buckets cost memory): the hour's sum, whether it is evaluated
    // as one sample (some sensor has only its hour bucket), and the last
    // sensor seen with minute buckets in it.
    let mut per_hour = HourSlots::default();
    // Minutes every sensor read so far has: a sorted intersection.
    let mut minutes: Vec<(i64, Acc)> = Vec::new();
    for (i, s) in sensors.iter().enumerate() {
        let rows = conn.sensor_buckets(Resolution::Minute, &s.host, &s.sensor, from_ms, to_ms)?;
        for (t, a) in &rows {
            if let Some(h) = hour_of(*t) {
                let slot = per_hour.slot(h);
                if slot.minutes_of != Some(i) {
                    slot.minutes_of = Some(i);
                    slot.acc.sensors += 1;
                }
                slot.acc.amount = slot
                    .acc
                    .amount
                    .saturating_add(a.measured.saturating_add(a.estimated));
                slot.acc.estimated |= a.estimated > 0;
            }
        }
        minutes = if i == 0 {
            rows.iter()
                .map(|(t, a)| {
                    let acc = Acc {
                        sensors: 1,
                        amount: a.measured.saturating_add(a.estimated),
                        estimated: a.estimated > 0,
                    };
                    (*t, acc)
                })
                .collect()
        } else {
            intersect(&minutes, &rows)
        };
        if hours == 0 {
            continue;
        }
        for (t, a) in conn.sensor_buckets(Resolution::Hour, &s.host, &s.sensor, h0, h1)? {
            let Some(h) = hour_of(t) else { continue };
            let slot = per_hour.slot(h);
            if slot.minutes_of == Some(i) {
                // Its minutes are already summed into this hour.
                continue;
            }
            slot.level = true;
            slot.acc.sensors += 1;
            slot.acc.amount = slot
                .acc
                .amount
                .saturating_add(a.measured.saturating_add(a.estimated));
            slot.acc.estimated |= a.estimated > 0;
        }
    }
    let mut out: Vec<RawSample> = minutes
        .into_iter()
        .filter(|(t, _)| hour_of(*t).is_none_or(|h| !per_hour.get(h).is_some_and(|x| x.level)))
        .map(|(t, a)| (t, t + MINUTE_MS, a.amount, a.estimated))
        .collect();
    out.extend(
        per_hour
            .iter()
            .filter(|(_, x)| x.level && x.acc.sensors == sensors.len())
            .map(|(h, x)| {
                let t = h0 + h as i64 * HOUR_MS;
                (t, t + HOUR_MS, x.acc.amount, x.acc.estimated)
            }),
    );
    out.sort_unstable_by_key(|x| x.0);
    Ok(out)
}

/// The minutes of `have` that `rows` (one more sensor's buckets, sorted)
/// also has, with that sensor's energy added.
fn intersect(have: &[(i64, Acc)], rows: &[(i64, store::Amount)]) -> Vec<(i64, Acc)> {
    let mut out = Vec::with_capacity(have.len().min(rows.len()));
    let (mut i, mut j) = (0, 0);
    while i < have.len() && j < rows.len() {
        match have[i].0.cmp(&rows[j].0) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                let (mut acc, a) = (have[i].1, rows[j].1);
                acc.sensors += 1;
                acc.amount = acc
                    .amount
                    .saturating_add(a.measured.saturating_add(a.estimated));
                acc.estimated |= a.estimated > 0;
                out.push((have[i].0, acc));
                i += 1;
                j += 1;
            }
        }
    }
    out
}

/// `(start, end, amount, estimated)` of a meter over a period: µJ for
/// energy meters, litres for water meters.
type RawSample = (i64, i64, u64, bool);

/// A meter's samples, from its register, its hand readings or its ledger
/// sensors.
fn meter_samples(
    conn: &dyn LedgerRead,
    m: &MeterConfig,
    from_ms: i64,
    to_ms: i64,
) -> Result<Vec<RawSample>, LedgerError> {
    if let Some(r) = &m.register {
        register_samples(conn, r, from_ms, to_ms)
    } else if m.sensors.is_empty() {
        conn.manual_samples(&m.name, from_ms, to_ms)
    } else {
        ledger_samples(conn, &m.sensors, from_ms, to_ms)
    }
}

/// Raw samples as a series of `amount`s.
fn to_series<A: vigie_energy::Amount>(
    meter: &str,
    raw: Vec<RawSample>,
    amount: fn(u64) -> A,
) -> Result<Series<A>, SiteError> {
    Series::new(raw.into_iter().map(|(s, e, a, est)| Sample {
        start_ms: s,
        end_ms: e,
        amount: amount(a),
        quality: if est {
            Quality::Estimated
        } else {
            Quality::Measured
        },
    }))
    .map_err(|source| SiteError::Series {
        meter: meter.to_owned(),
        source,
    })
}

/// Spreads `samples` (a meter read over intervals of any length, such as
/// fuel read by hand) over the `buckets` (sorted, not overlapping) pro
/// rata to their overlap, exactly: the amount given up to a bucket is the
/// sample's amount times the share of the sample covered so far, rounded
/// down, so a sample wholly covered by buckets is given out to the
/// microjoule. Returns, per bucket it reaches: (amount, estimated, ms of
/// the bucket covered by samples).
fn spread(buckets: &[(i64, i64)], samples: &[RawSample]) -> BTreeMap<(i64, i64), (u64, bool, i64)> {
    let mut out: BTreeMap<(i64, i64), (u64, bool, i64)> = BTreeMap::new();
    for &(fs, fe, a, est) in samples {
        let len = fe - fs;
        if len <= 0 {
            continue;
        }
        let first = buckets.partition_point(|b| b.1 <= fs);
        let (mut covered, mut given) = (0i64, 0u64);
        for &(s, e) in buckets[first..].iter().take_while(|b| b.0 < fe) {
            let ov = e.min(fe) - s.max(fs);
            if ov <= 0 {
                continue;
            }
            covered += ov;
            let upto = (u128::from(a) * covered as u128 / len as u128) as u64;
            let x = out.entry((s, e)).or_default();
            x.0 = x.0.saturating_add(upto - given);
            x.1 |= est;
            x.2 += ov;
            given = upto;
        }
    }
    out
}

/// The figures of the site over a period.
#[derive(Debug)]
pub struct SiteFigures {
    /// The period.
    pub period: Period,
    /// PUE, REF, ERF, CER, WUE (those whose meters exist).
    pub figures: Vec<Figure>,
    /// Roles without a meter: indicators that cannot be computed.
    pub missing_roles: Vec<Role>,
    /// Every meter's total over the period, with its coverage.
    pub totals: Vec<(String, Role, vigie_energy::InputUsed)>,
}

/// Meters by role (every role but the zone ones).
type ByRole<'a> = BTreeMap<Role, &'a MeterConfig>;
/// Zone meters: (zone-total, zone-it) by zone.
type Zones<'a> = BTreeMap<&'a str, (Option<&'a MeterConfig>, Option<&'a MeterConfig>)>;

/// Meters by role and the zone meters by zone, with the model's rules:
/// a zone meter names its zone, a zone has at most one meter of each zone
/// role, every other role has one meter.
fn meters_by_role(site: &SiteConfig) -> Result<(ByRole<'_>, Zones<'_>), SiteError> {
    let mut by_role: BTreeMap<Role, &MeterConfig> = BTreeMap::new();
    let mut zones: BTreeMap<&str, (Option<&MeterConfig>, Option<&MeterConfig>)> = BTreeMap::new();
    for m in &site.meters {
        if matches!(m.role, Role::ZoneTotal | Role::ZoneIt) {
            let Some(z) = m.zone.as_deref() else {
                return Err(SiteError::Config(format!(
                    "meter {}: role {:?} needs a zone",
                    m.name, m.role
                )));
            };
            let e = zones.entry(z).or_default();
            let slot = if m.role == Role::ZoneTotal {
                &mut e.0
            } else {
                &mut e.1
            };
            if slot.replace(m).is_some() {
                return Err(SiteError::Config(format!(
                    "zone {z}: two meters with role {:?}",
                    m.role
                )));
            }
            continue;
        }
        if by_role.insert(m.role, m).is_some() {
            return Err(SiteError::Config(format!(
                "two meters have role {:?}: give each role one meter (sum several sensors in it)",
                m.role
            )));
        }
    }
    Ok((by_role, zones))
}

/// A zone's two meters: pPUE needs both.
fn zone_pair<'a>(
    zone: &str,
    pair: &(Option<&'a MeterConfig>, Option<&'a MeterConfig>),
) -> Result<(&'a MeterConfig, &'a MeterConfig), SiteError> {
    let (Some(total), Some(zit)) = *pair else {
        return Err(SiteError::Config(format!(
            "zone {zone}: pPUE needs both a zone-total and a zone-it meter"
        )));
    };
    Ok((total, zit))
}

impl SiteConfig {
    /// Checks the site model at start-up, with the rules the figures
    /// apply (so a bad model stops the collector instead of failing every
    /// figure later): `it_category` is 1, 2 or 3; a `zone-total` or
    /// `zone-it` meter names its `zone`, which has one meter of each;
    /// every other role has one meter. The message names the field.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=3).contains(&self.it_category) {
            return Err(format!(
                "[site] it_category = {}: expected 1 (UPS output), 2 (PDU output) or 3 (IT equipment input)",
                self.it_category
            ));
        }
        let (_, zones) = meters_by_role(self).map_err(|e| format!("[[site.meters]]: {e}"))?;
        for (zone, pair) in &zones {
            zone_pair(zone, pair).map_err(|e| format!("[[site.meters]]: {e}"))?;
        }
        Ok(())
    }
}

/// Computes every indicator whose meters are configured.
pub fn figures(
    conn: &dyn LedgerRead,
    site: &SiteConfig,
    market: &MarketConfig,
    from_ms: i64,
    to_ms: i64,
) -> Result<SiteFigures, SiteError> {
    let period = Period::new(from_ms, to_ms).map_err(SiteError::Period)?;
    let rule: GapRule = site.gap_rule.into();
    let (by_role, zones) = meters_by_role(site)?;
    // Each meter is read once: the figures and the totals below use the
    // same meters again, and a ledger meter of a large site (the IT
    // meter over every server) is most of the cost.
    let read: Vec<Vec<RawSample>> = site
        .meters
        .iter()
        .map(|m| meter_samples(conn, m, from_ms, to_ms))
        .collect::<Result<_, _>>()?;
    let raw = |m: &MeterConfig| -> Result<Vec<RawSample>, LedgerError> {
        Ok(site
            .meters
            .iter()
            .zip(&read)
            .find(|(x, _)| std::ptr::eq(*x, m))
            .map(|(_, r)| r.clone())
            .unwrap_or_default())
    };
    let energy = |role: Role| -> Result<Option<Series<Microjoules>>, SiteError> {
        let Some(m) = by_role.get(&role) else {
            return Ok(None);
        };
        to_series(&m.name, raw(m)?, Microjoules).map(Some)
    };
    let grid = energy(Role::GridImport)?;
    let onsite = energy(Role::OnsiteGeneration)?;
    let it = energy(Role::It)?;
    let cooling = energy(Role::Cooling)?;
    let heat_delivered = energy(Role::HeatDelivered)?;
    let heat_removed = energy(Role::HeatRemoved)?;
    let water = match by_role.get(&Role::Water) {
        Some(m) => Some(to_series(&m.name, raw(m)?, Litres)?),
        None => None,
    };
    // E_DC: every energy input the boundary counts: grid import, on-site
    // generation used on site, back-up generator output and, where
    // metered, the fuels used on site (EED Delegated Regulation
    // 2024/1364: the data centre's total energy, not only electricity).
    // With a fuel meter, electricity made from that fuel on site
    // (generator output, on-site generation not declared renewable) is
    // an internal conversion and is not added again. Minute by minute
    // where several are metered (a minute counts when all have it); fuel
    // read over longer intervals (by hand) is spread over those minutes
    // pro rata, exactly (see `spread`).
    let fuel = by_role.get(&Role::Fuel);
    let electric: Vec<Role> = [Role::GridImport, Role::OnsiteGeneration, Role::Generator]
        .into_iter()
        .filter(|r| match r {
            Role::Generator => fuel.is_none(),
            Role::OnsiteGeneration => fuel.is_none() || site.register.onsite_generation_renewable,
            _ => true,
        })
        .filter(|r| by_role.contains_key(r))
        .collect();
    let e_dc = match &grid {
        Some(g) if electric.len() == 1 && fuel.is_none() => Some(g.clone()),
        Some(_) => {
            let parts = electric
                .iter()
                .filter_map(|r| by_role.get(r))
                .map(|m| raw(m))
                .collect::<Result<Vec<_>, _>>()?;
            let n = parts.len();
            let mut sum: BTreeMap<(i64, i64), (u64, bool, usize)> = BTreeMap::new();
            for (s, e, a, est) in parts.into_iter().flatten() {
                let x = sum.entry((s, e)).or_default();
                x.0 = x.0.saturating_add(a);
                x.1 |= est;
                x.2 += 1;
            }
            let mut all: Vec<RawSample> = sum
                .into_iter()
                .filter(|(_, x)| x.2 == n)
                .map(|((s, e), (a, est, _))| (s, e, a, est))
                .collect();
            if let Some(f) = fuel {
                let keys: Vec<(i64, i64)> = all.iter().map(|x| (x.0, x.1)).collect();
                let shares = spread(&keys, &raw(f)?);
                all = all
                    .into_iter()
                    .filter_map(|(s, e, a, est)| {
                        let (fa, fest, covered) = shares.get(&(s, e))?;
                        (*covered == e - s).then(|| (s, e, a.saturating_add(*fa), est || *fest))
                    })
                    .collect();
            }
            Some(to_series("E_DC", all, Microjoules)?)
        }
        None => None,
    };
    // On-site generation is renewable energy only where declared so.
    let onsite_renewable = onsite
        .as_ref()
        .filter(|_| site.register.onsite_generation_renewable);
    let category = match site.it_category {
        1 => PueCategory::UpsOutput,
        3 => PueCategory::ItInput,
        _ => PueCategory::PduOutput,
    };
    let mut totals = Vec::new();
    for m in &site.meters {
        let samples = raw(m)?;
        let input = if m.role.is_water() {
            to_series(&m.name, samples, Litres)?.input("total", period, rule)
        } else {
            to_series(&m.name, samples, Microjoules)?.input("total", period, rule)
        };
        totals.push((m.name.clone(), m.role, input));
    }
    let mut figures = Vec::new();
    let mut missing = Vec::new();
    let mut need = |role: Role, present: bool| {
        if !present && !missing.contains(&role) {
            missing.push(role);
        }
    };
    need(Role::GridImport, e_dc.is_some());
    need(Role::It, it.is_some());
    if let (Some(dc), Some(it)) = (&e_dc, &it) {
        figures.push(vigie_energy::pue(period, rule, category, dc, it));
    }
    if let Some(dc) = &e_dc {
        // Renewable instruments bought for the period count (pro rata to
        // their year), beside on-site generation.
        let instruments = market_inputs(market, period).instruments;
        figures.push(vigie_energy::renewable_energy_factor(
            period,
            rule,
            dc,
            onsite_renewable,
            &instruments,
        ));
    }
    need(Role::HeatDelivered, heat_delivered.is_some());
    if let (Some(h), Some(dc)) = (&heat_delivered, &e_dc) {
        figures.push(vigie_energy::energy_reuse_factor(period, rule, h, dc));
    }
    need(Role::HeatRemoved, heat_removed.is_some());
    need(Role::Cooling, cooling.is_some());
    if let (Some(h), Some(c)) = (&heat_removed, &cooling) {
        figures.push(vigie_energy::cooling_efficiency_ratio(period, rule, h, c));
    }
    for (zone, pair) in &zones {
        let (total, zit) = zone_pair(zone, pair)?;
        let series = |m: &MeterConfig| to_series(&m.name, raw(m)?, Microjoules);
        figures.push(vigie_energy::partial_pue(
            period,
            rule,
            category,
            zone,
            &series(total)?,
            &series(zit)?,
        ));
    }
    need(Role::Water, water.is_some());
    if let (Some(w), Some(it)) = (&water, &it) {
        figures.push(vigie_energy::water_usage_effectiveness(period, rule, w, it));
    }
    Ok(SiteFigures {
        period,
        figures,
        missing_roles: missing,
        totals,
    })
}

/// Measured heat over a period, from the one computation of the site's
/// figures ([`figures`], which `/api/v1/kpi`, the exports and the dossier
/// read): the `heat-delivered` and `heat-rejected` meters' totals and
/// coverage, the recovered share, and ERF, under the site's gap rule. The
/// energy-weighted mean supply and return temperatures come with a
/// register heat meter's temperature registers: they weight the heat of
/// the intervals that have both (`temperatures_kwh` says how much of the
/// delivered heat that is); a heat meter without them gives the heat and
/// ERF all the same.
pub fn measured_heat(
    conn: &dyn LedgerRead,
    site: &SiteConfig,
    from_ms: i64,
    to_ms: i64,
) -> Result<serde_json::Value, SiteError> {
    let period = Period::new(from_ms, to_ms).map_err(SiteError::Period)?;
    let meter = |role: Role| site.meters.iter().find(|m| m.role == role);
    let delivered_meter = meter(Role::HeatDelivered).ok_or_else(|| {
        SiteError::Config("measured heat needs a [[site.meters]] with role heat-delivered".into())
    })?;
    // ERF and the meters' totals do not depend on the market instruments.
    let f = figures(conn, site, &MarketConfig::default(), from_ms, to_ms)?;
    let total = |role: Role| {
        f.totals
            .iter()
            .find(|(_, r, _)| *r == role)
            .map(|(_, _, i)| i)
    };
    let delivered = total(Role::HeatDelivered);
    let rejected = total(Role::HeatRejected);
    let recovered_share = match (
        delivered.and_then(|d| d.total),
        rejected.and_then(|r| r.total),
    ) {
        (Some(d), Some(r)) if d + r > 0.0 => Some(d / (d + r)),
        _ => None,
    };
    let erf = f
        .figures
        .iter()
        .find(|x| matches!(x.indicator, vigie_energy::Indicator::Erf));
    // Temperatures: the intervals of a register heat meter that have both.
    let (mut mean_supply, mut mean_return, mut with_temps) = (None, None, 0.0);
    if let Some(r) = &delivered_meter.register {
        let temps = |q: vigie_protocol::GaugeQuantity| {
            conn.registers(&r.host, &r.sensor, q.as_str(), from_ms, to_ms)
        };
        let supply = temps(vigie_protocol::GaugeQuantity::SupplyTemperatureCelsius)?;
        let ret = temps(vigie_protocol::GaugeQuantity::ReturnTemperatureCelsius)?;
        // The temperature of an interval: the mean of the values read in
        // it, else the last one before its end.
        let at = |v: &[(i64, f64)], s: i64, e: i64| -> Option<f64> {
            let inside: Vec<f64> = v
                .iter()
                .filter(|(t, _)| *t > s && *t <= e)
                .map(|x| x.1)
                .collect();
            if inside.is_empty() {
                v.iter().rev().find(|(t, _)| *t <= e).map(|x| x.1)
            } else {
                Some(inside.iter().sum::<f64>() / inside.len() as f64)
            }
        };
        let samples: Vec<vigie_energy::HeatMeterSample> =
            register_samples(conn, r, from_ms, to_ms)?
                .into_iter()
                .filter_map(|(s, e, uj, _)| {
                    Some(vigie_energy::HeatMeterSample {
                        start_ms: s,
                        end_ms: e,
                        heat: Microjoules(uj),
                        supply: vigie_energy::Celsius(at(&supply, s, e)?),
                        return_temperature: vigie_energy::Celsius(at(&ret, s, e)?),
                        quality: Quality::Measured,
                    })
                })
                .collect();
        if !samples.is_empty() {
            let h = vigie_energy::measured_heat(
                period,
                site.gap_rule.into(),
                &samples,
                &Series::default(),
                None,
                &Series::default(),
            )
            .map_err(|e| SiteError::Config(e.to_string()))?;
            mean_supply = h.mean_supply.map(|c| c.0);
            mean_return = h.mean_return.map(|c| c.0);
            with_temps = h.delivered.measured + h.delivered.estimated;
        }
    }
    let input = |i: Option<&vigie_energy::InputUsed>| {
        i.map(|i| {
            serde_json::json!({
                "measured_kwh": i.measured + 0.0,
                "estimated_kwh": i.estimated + 0.0,
                "filled_kwh": i.filled + 0.0,
                "total_kwh": i.total.map(|t| t + 0.0),
                "missing_share": i.coverage.map(|c| c.missing_share()),
            })
        })
    };
    Ok(serde_json::json!({
        "delivered": input(delivered),
        "rejected": input(rejected),
        "recovered_share": recovered_share,
        "mean_supply_c": mean_supply,
        "mean_return_c": mean_return,
        // Temperatures come with a register heat meter only.
        "temperatures_metered": delivered_meter.register.is_some(),
        "temperatures_kwh": with_temps,
        "erf": erf.map(figure_json),
        "temperature_weighting": "energy-weighted over the delivered heat of the intervals with supply and return temperatures (temperatures_kwh)",
        "computation": "the site figures of /api/v1/kpi, the exports and the dossier, over the same period and gap rule",
    }))
}

/// The JSON form of a figure: value, status, gap rule, every input with
/// its coverage, and the notes.
pub fn figure_json(f: &Figure) -> serde_json::Value {
    use vigie_energy::Indicator;
    let status = f.status.as_str();
    let category = match &f.indicator {
        Indicator::Pue { category } | Indicator::PartialPue { category, .. } => {
            Some(match category {
                PueCategory::UpsOutput => 1,
                PueCategory::PduOutput => 2,
                PueCategory::ItInput => 3,
            })
        }
        _ => None,
    };
    let inputs: Vec<serde_json::Value> = f
        .inputs
        .iter()
        .map(|i| {
            serde_json::json!({
                "name": i.name,
                "unit": i.unit,
                // `+ 0.0`: a -0.0 (a sum of nothing, negated) reads 0.
                "measured": i.measured + 0.0,
                "estimated": i.estimated + 0.0,
                "filled": i.filled + 0.0,
                "total": i.total.map(|t| t + 0.0),
                "coverage": i.coverage.map(|c| serde_json::json!({
                    "measured_share": c.measured_share(),
                    "estimated_share": c.estimated_share(),
                    "missing_share": c.missing_share(),
                })),
            })
        })
        .collect();
    let zone = match &f.indicator {
        Indicator::PartialPue { zone, .. } => Some(zone.clone()),
        _ => None,
    };
    serde_json::json!({
        "indicator": f.indicator.symbol(),
        "zone": zone,
        "unit": f.indicator.unit(),
        "measurement_category": category,
        "value": f.value.map(|v| v + 0.0),
        "status": status,
        "complete": f.is_complete(),
        "gap_rule": match f.rule {
            GapRule::Strict => "strict",
            GapRule::ScaleToPeriod => "scale-to-period",
        },
        "inputs": inputs,
        "notes": f.notes,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn hour_slots_span_the_data_seen_not_the_period() {
        // Hours of a period starting centuries before the data: only the
        // span between the earliest and latest hour seen is kept, grown at
        // either end, and every hour keeps its sum.
        let mut h = HourSlots::default();
        let far = 20_000_000;
        h.slot(far + 5).acc.amount = 5;
        h.slot(far + 9).acc.amount = 9;
        h.slot(far + 2).acc.amount = 2;
        h.slot(far + 5).acc.amount += 1;
        assert_eq!(h.slots.len(), 8, "hours far+2 to far+9");
        assert_eq!(h.get(far + 5).map(|x| x.acc.amount), Some(6));
        assert_eq!(h.get(far + 3).map(|x| x.acc.amount), Some(0));
        assert!(h.get(far + 1).is_none() && h.get(far + 10).is_none() && h.get(0).is_none());
        let seen: Vec<(usize, u64)> = h
            .iter()
            .filter(|(_, x)| x.acc.amount > 0)
            .map(|(i, x)| (i, x.acc.amount))
            .collect();
        assert_eq!(seen, vec![(far + 2, 2), (far + 5, 6), (far + 9, 9)]);
    }
    use crate::store::manual::MAX_PIECE;
    use rusqlite::{Connection, params};

    #[test]
    fn fuel_read_by_hand_is_spread_over_the_minutes_exactly() {
        let m = MINUTE_MS;
        let buckets = [(0, m), (m, 2 * m), (2 * m, 3 * m)];
        // 1000 uJ over three minutes: 333, 333, 334 (every microjoule).
        let s = spread(&buckets, &[(0, 3 * m, 1000, false)]);
        let got: Vec<u64> = s.values().map(|x| x.0).collect();
        assert_eq!(got, vec![333, 333, 334]);
        assert!(s.values().all(|x| x.2 == m));
        // Two readings meeting mid-minute cover that minute together.
        let s = spread(
            &buckets,
            &[(0, m + m / 2, 30, false), (m + m / 2, 3 * m, 30, true)],
        );
        assert_eq!(s.values().map(|x| x.0).sum::<u64>(), 60);
        assert_eq!(s[&(m, 2 * m)], (10 + 10, true, m));
        // A reading beyond the buckets gives only the covered share.
        let s = spread(&buckets[..1], &[(0, 2 * m, 100, false)]);
        assert_eq!(s[&(0, m)], (50, false, m));
    }

    fn site(extra: &str) -> SiteConfig {
        toml::from_str(&format!(
            "it_category = 2\n[[meters]]\nname = \"grid\"\nrole = \"grid-import\"\nsensors = [{{ host = \"facility\", sensor = \"meter:mains\" }}]\n[[meters]]\nname = \"it\"\nrole = \"it\"\nsensors = [{{ host = \"facility\", sensor = \"pdu-a:total\" }}, {{ host = \"facility\", sensor = \"pdu-b:total\" }}]\n{extra}"
        ))
        .unwrap()
    }

    fn add(conn: &Connection, sensor: &str, minute: i64, uj: u64) {
        let mut p = store::Pending::default();
        p.minute.insert(
            ("facility".into(), sensor.into(), minute * MINUTE_MS),
            store::Amount {
                measured: uj,
                estimated: 0,
            },
        );
        let tx = conn.unchecked_transaction().unwrap();
        store::add_energy(&tx, &p).unwrap();
        tx.commit().unwrap();
    }

    /// Adds `measured` and `estimated` µJ to one bucket of `res`.
    fn put(
        conn: &Connection,
        res: Resolution,
        host: &str,
        sensor: &str,
        bucket_ms: i64,
        measured: u64,
        estimated: u64,
    ) {
        let mut p = store::Pending::default();
        let map = match res {
            Resolution::Minute => &mut p.minute,
            Resolution::Hour => &mut p.hour,
        };
        map.insert(
            (host.into(), sensor.into(), bucket_ms),
            store::Amount {
                measured,
                estimated,
            },
        );
        let tx = conn.unchecked_transaction().unwrap();
        store::add_energy(&tx, &p).unwrap();
        tx.commit().unwrap();
    }

    fn refs(names: &[(&str, &str)]) -> Vec<SensorRef> {
        names
            .iter()
            .map(|(h, s)| SensorRef {
                host: (*h).into(),
                sensor: (*s).into(),
            })
            .collect()
    }

    #[test]
    fn ledger_meters_read_their_own_sensors_by_primary_key() {
        use vigie_energy::HOUR_MS;
        let conn = store::open_in_memory().unwrap();
        let meter = refs(&[("facility", "pdu-a:total"), ("facility", "pdu-b:total")]);
        for m in 0..3 {
            put(
                &conn,
                Resolution::Minute,
                "facility",
                "pdu-a:total",
                m * MINUTE_MS,
                600 + m as u64,
                0,
            );
        }
        put(
            &conn,
            Resolution::Minute,
            "facility",
            "pdu-b:total",
            0,
            400,
            0,
        );
        put(
            &conn,
            Resolution::Minute,
            "facility",
            "pdu-b:total",
            2 * MINUTE_MS,
            300,
            5,
        );
        let expected = vec![
            (0, MINUTE_MS, 1_000, false),
            (2 * MINUTE_MS, 3 * MINUTE_MS, 907, true),
        ];
        assert_eq!(ledger_samples(&conn, &meter, 0, HOUR_MS).unwrap(), expected);
        // Rows of other hosts, other sensors (one sharing a name), other
        // times and the hour table change nothing.
        for m in 0..5 {
            for (h, s) in [
                ("facility", "pdu-c:total"),
                ("other", "pdu-b:total"),
                ("facility-2", "pdu-a:total"),
                ("a", "z"),
            ] {
                put(&conn, Resolution::Minute, h, s, m * MINUTE_MS, 77, 1);
                put(&conn, Resolution::Hour, h, s, 0, 77, 1);
            }
        }
        put(
            &conn,
            Resolution::Minute,
            "facility",
            "pdu-a:total",
            HOUR_MS,
            9,
            0,
        );
        put(
            &conn,
            Resolution::Minute,
            "facility",
            "pdu-b:total",
            HOUR_MS,
            9,
            0,
        );
        assert_eq!(ledger_samples(&conn, &meter, 0, HOUR_MS).unwrap(), expected);
        // The query is a range of the primary key, not a scan.
        for res in [Resolution::Minute, Resolution::Hour] {
            let sql = format!("EXPLAIN QUERY PLAN {}", store::sensor_buckets_sql(res));
            let mut stmt = conn.prepare(&sql).unwrap();
            let plan: Vec<String> = stmt
                .query_map(params!["facility", "pdu-a:total", 0, HOUR_MS], |r| r.get(3))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            let plan = plan.join("; ");
            assert!(
                plan.contains(
                    "USING PRIMARY KEY (host=? AND sensor=? AND bucket_ms>? AND bucket_ms<?)"
                ),
                "{plan}"
            );
            assert!(
                !plan.contains("SCAN") && !plan.contains("TEMP B-TREE"),
                "{plan}"
            );
        }
    }

    #[test]
    fn ledger_meters_fall_back_to_hour_buckets_where_minutes_are_absent() {
        use vigie_energy::HOUR_MS;
        let conn = store::open_in_memory().unwrap();
        let meter = refs(&[("h1", "psu"), ("h2", "psu")]);
        let both = |m: i64, a: u64, b: u64| {
            put(&conn, Resolution::Minute, "h1", "psu", m * MINUTE_MS, a, 0);
            put(&conn, Resolution::Minute, "h2", "psu", m * MINUTE_MS, b, 0);
        };
        // Hour 0: minutes for both, as ingested (hour rows too), except
        // minute 5 of h2: 59 minute samples.
        for m in 0..60 {
            put(&conn, Resolution::Minute, "h1", "psu", m * MINUTE_MS, 10, 0);
            if m != 5 {
                put(&conn, Resolution::Minute, "h2", "psu", m * MINUTE_MS, 20, 0);
            }
        }
        put(&conn, Resolution::Hour, "h1", "psu", 0, 600, 0);
        put(&conn, Resolution::Hour, "h2", "psu", 0, 1_180, 0);
        // Hour 1: h1 only at hourly resolution (its minutes pruned), h2
        // has 30 minutes and its hour: one hour sample, h1's hour + h2's
        // minutes, estimated because h1's hour has estimated energy.
        put(&conn, Resolution::Hour, "h1", "psu", HOUR_MS, 5_000, 1_000);
        for m in 60..90 {
            put(&conn, Resolution::Minute, "h2", "psu", m * MINUTE_MS, 7, 0);
        }
        put(&conn, Resolution::Hour, "h2", "psu", HOUR_MS, 210, 0);
        // Hour 2: both only hourly: one measured hour sample.
        put(&conn, Resolution::Hour, "h1", "psu", 2 * HOUR_MS, 3_000, 0);
        put(&conn, Resolution::Hour, "h2", "psu", 2 * HOUR_MS, 4_000, 0);
        // Hour 3: h1 hourly, h2 nothing: missing, not under-counted.
        put(&conn, Resolution::Hour, "h1", "psu", 3 * HOUR_MS, 3_000, 0);
        // Hour 4 is cut by the period's end (4 h 30 min): its hour rows are
        // not used (no pro-rating); its common minutes are.
        put(&conn, Resolution::Hour, "h1", "psu", 4 * HOUR_MS, 9_000, 0);
        put(&conn, Resolution::Hour, "h2", "psu", 4 * HOUR_MS, 9_000, 0);
        both(245, 1, 2);
        both(275, 1, 2);
        let to = 4 * HOUR_MS + 30 * MINUTE_MS;
        let got = ledger_samples(&conn, &meter, 0, to).unwrap();
        let mut want: Vec<RawSample> = (0..60)
            .filter(|m| *m != 5)
            .map(|m| (m * MINUTE_MS, (m + 1) * MINUTE_MS, 30, false))
            .collect();
        want.push((HOUR_MS, 2 * HOUR_MS, 6_000 + 210, true));
        want.push((2 * HOUR_MS, 3 * HOUR_MS, 7_000, false));
        want.push((245 * MINUTE_MS, 246 * MINUTE_MS, 3, false));
        assert_eq!(got, want);
        // A valid series: exact total, hour-granular coverage.
        let period = Period::new(0, to).unwrap();
        let series = to_series("it", got, Microjoules).unwrap();
        let cov = series.coverage(period);
        assert_eq!(
            cov.measured_ms,
            (59 * MINUTE_MS + HOUR_MS + MINUTE_MS) as u64
        );
        assert_eq!(cov.estimated_ms, HOUR_MS as u64);
        let input = series.input("total", period, GapRule::Strict);
        assert_eq!(input.total, None);
        let scaled = series.input("total", period, GapRule::ScaleToPeriod);
        assert_eq!(scaled.measured, (59.0 * 30.0 + 7_000.0 + 3.0) / 3.6e12);
        assert_eq!(scaled.estimated, 6_210.0 / 3.6e12);
        // Over hour 1 alone, an hour boundary on each side: the hour sample.
        assert_eq!(
            ledger_samples(&conn, &meter, HOUR_MS, 2 * HOUR_MS).unwrap(),
            vec![(HOUR_MS, 2 * HOUR_MS, 6_210, true)]
        );
        // Starting at 1 h 30 min, hour 1 is cut: h2's minutes alone do not
        // make it (h1 has none), so only hour 2 remains.
        assert_eq!(
            ledger_samples(&conn, &meter, HOUR_MS + 30 * MINUTE_MS, 3 * HOUR_MS).unwrap(),
            vec![(2 * HOUR_MS, 3 * HOUR_MS, 7_000, false)]
        );
    }

    #[test]
    fn pruned_minutes_leave_meter_totals_unchanged() {
        use vigie_energy::HOUR_MS;
        let conn = store::open_in_memory().unwrap();
        let meter = refs(&[("h1", "psu"), ("h2", "psu")]);
        // Three hours of both sensors, as ingest writes them (minute and
        // hour buckets), h2 missing minute 70.
        for m in 0..180i64 {
            for (i, h) in ["h1", "h2"].iter().enumerate() {
                if *h == "h2" && m == 70 {
                    continue;
                }
                let uj = 1_000 + (m as u64) * 3 + i as u64;
                put(&conn, Resolution::Minute, h, "psu", m * MINUTE_MS, uj, 0);
                put(&conn, Resolution::Hour, h, "psu", m / 60 * HOUR_MS, uj, 0);
            }
        }
        let period = Period::new(0, 3 * HOUR_MS).unwrap();
        let total = |samples: &[RawSample]| samples.iter().map(|s| s.2).sum::<u64>();
        let before = ledger_samples(&conn, &meter, 0, 3 * HOUR_MS).unwrap();
        assert_eq!(before.len(), 179);
        // Cut at 1 h 30 min: rounded down to 1 h, so hour 0 loses its
        // minutes, hour 1 keeps all of them.
        let deleted = store::prune_minutes(&conn, HOUR_MS + 30 * MINUTE_MS).unwrap();
        assert_eq!(deleted, 120);
        assert_eq!(store::prune_minutes(&conn, HOUR_MS).unwrap(), 0);
        let rows = |table: &str| -> i64 {
            conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
                .unwrap()
        };
        assert_eq!(rows("energy_minute"), 239);
        assert_eq!(rows("energy_hour"), 6);
        let after = ledger_samples(&conn, &meter, 0, 3 * HOUR_MS).unwrap();
        // Hour 0 is one sample now; the same µJ, the same coverage.
        assert_eq!(after.len(), 1 + 119);
        assert_eq!(after[0].0..after[0].1, 0..HOUR_MS);
        assert_eq!(total(&after), total(&before));
        let (b, a) = (
            to_series("it", before, Microjoules).unwrap(),
            to_series("it", after, Microjoules).unwrap(),
        );
        assert_eq!(a.coverage(period), b.coverage(period));
    }

    #[test]
    fn csv_readings_parse_or_say_which_lines_do_not() {
        let t = |s: &str| s.parse::<i64>().ok();
        let csv = "from,to,amount,estimated,note\n0,3600000,1.5,,index 10 -> 11.5\n3600000,7200000,2,estimated,\n";
        let r = parse_readings_csv(csv, false, t).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].amount, 5_400_000_000_000);
        assert_eq!(r[0].note.as_deref(), Some("index 10 -> 11.5"));
        assert!(r[1].estimated && !r[0].estimated);
        let water = parse_readings_csv("h\n0,10,3.4\n", true, t).unwrap();
        assert_eq!(water[0].amount, 3);
        let bad =
            parse_readings_csv("h\n0,10,1\n10,5,1\nx,20,1\n20,30,-1\n", false, t).unwrap_err();
        assert!(bad.contains("[3, 4, 5]"), "{bad}");
        // Without a header, the first line is a reading.
        let bare = parse_readings_csv("0,10,1\n10,20,2\n", false, t).unwrap();
        assert_eq!(bare.len(), 2);
        assert_eq!(bare[0].amount, 3_600_000_000_000);
    }

    #[test]
    fn scope2_refuses_periods_longer_than_its_limit() {
        let conn = store::open_in_memory().unwrap();
        crate::grid::store::init(&conn).unwrap();
        let year = 366 * 24 * 3_600_000;
        let carbon = crate::config::CarbonConfig::default();
        let e = scope2(&conn, &site(""), &carbon, 0, (SCOPE2_MAX_YEARS + 1) * year).unwrap_err();
        assert!(e.to_string().contains("at most 10 years"), "{e}");
        assert!(scope2(&conn, &site(""), &carbon, 0, 3_600_000).is_ok());
    }

    #[test]
    fn heat_and_water_from_registers() {
        let mut conn = store::open_in_memory().unwrap();
        add(&conn, "meter:mains", 0, 3_600_000_000_000); // 1 kWh of E_DC in minute 0
        add(&conn, "pdu-a:total", 0, 1);
        add(&conn, "pdu-b:total", 0, 1);
        let g = |q, t, v| vigie_protocol::Gauge {
            sensor: "heat-1:meter".into(),
            quantity: q,
            value: v,
            at_ms: t,
        };
        use vigie_protocol::GaugeQuantity::{HeatEnergyKwh, VolumeCubicMetres};
        let tx = conn.transaction().unwrap();
        store::record_registers(
            &tx,
            "facility",
            &[
                g(HeatEnergyKwh, -30_000, 1000.0),
                g(HeatEnergyKwh, 30_000, 1000.2),
                g(HeatEnergyKwh, 90_000, 1000.3),
                g(VolumeCubicMetres, 0, 5.0),
                g(VolumeCubicMetres, 60_000, 5.004),
            ],
        )
        .unwrap();
        tx.commit().unwrap();
        let s = site(
            "[[meters]]\nname = \"heat-out\"\nrole = \"heat-delivered\"\nregister = { host = \"facility\", sensor = \"heat-1:meter\", quantity = \"heat-energy-kwh\" }\n[[meters]]\nname = \"water\"\nrole = \"water\"\nregister = { host = \"facility\", sensor = \"heat-1:meter\", quantity = \"volume-m3\" }\n",
        );
        assert!(!s.meters[2].is_manual());
        let f = figures(&conn, &s, &MarketConfig::default(), 0, MINUTE_MS).unwrap();
        // Heat in minute 0: half of 0.2 kWh (−30 s..30 s) + half of 0.1
        // kWh (30 s..90 s) = 0.15 kWh; ERF = 0.15 / 1 kWh.
        let erf = f
            .figures
            .iter()
            .find(|x| x.indicator.symbol() == "ERF")
            .unwrap();
        assert!((erf.value.unwrap() - 0.15).abs() < 1e-9, "{erf:?}");
        // Water: 0.004 m³ = 4 L over minute 0.
        let wue = f
            .figures
            .iter()
            .find(|x| x.indicator.symbol() == "WUE")
            .unwrap();
        assert_eq!(wue.inputs[0].total, Some(4.0));
    }

    #[test]
    fn measured_heat_is_the_kpi_figures_heat_with_or_without_temperatures() {
        // Two hours of grid import (10 kWh each, hour buckets, as a ledger
        // keeps after pruning) and a heat register read each hour without
        // temperatures, then a third hour with them: /api/v1/heat used to
        // drop the intervals without temperatures (no heat, ERF
        // incomplete) while /api/v1/kpi counted them.
        let conn = store::open_in_memory().unwrap();
        use vigie_protocol::GaugeQuantity::{
            HeatEnergyKwh, ReturnTemperatureCelsius, SupplyTemperatureCelsius,
        };
        const H: i64 = 3_600_000;
        for h in 0..3 {
            put(
                &conn,
                Resolution::Hour,
                "facility",
                "meter:mains",
                h * H,
                36_000_000_000_000,
                0,
            );
        }
        let g = |q, t, v| vigie_protocol::Gauge {
            sensor: "hm:1".into(),
            quantity: q,
            value: v,
            at_ms: t,
        };
        let tx = conn.unchecked_transaction().unwrap();
        store::record_registers(
            &tx,
            "facility",
            &[
                g(HeatEnergyKwh, 0, 100.0),
                g(HeatEnergyKwh, H, 102.0),
                g(HeatEnergyKwh, 2 * H, 103.0),
                g(SupplyTemperatureCelsius, 2 * H + 1, 50.0),
                g(ReturnTemperatureCelsius, 2 * H + 1, 30.0),
                g(HeatEnergyKwh, 3 * H, 104.0),
            ],
        )
        .unwrap();
        tx.commit().unwrap();
        let s: SiteConfig = toml::from_str(
            "[[meters]]\nname = \"grid\"\nrole = \"grid-import\"\nsensors = [{ host = \"facility\", sensor = \"meter:mains\" }]\n[[meters]]\nname = \"heat\"\nrole = \"heat-delivered\"\nregister = { host = \"facility\", sensor = \"hm:1\", quantity = \"heat-energy-kwh\" }\n",
        )
        .unwrap();
        let kpi = figures(&conn, &s, &MarketConfig::default(), 0, 3 * H).unwrap();
        let kpi_erf = kpi
            .figures
            .iter()
            .find(|f| f.indicator.symbol() == "ERF")
            .unwrap();
        assert_eq!(kpi_erf.value, Some(4.0 / 30.0));
        let v = measured_heat(&conn, &s, 0, 3 * H).unwrap();
        assert_eq!(v["erf"], figure_json(kpi_erf), "{v}");
        assert_eq!(v["delivered"]["total_kwh"], 4.0, "{v}");
        // The temperatures weight the one hour that has them.
        assert_eq!(v["temperatures_kwh"], 1.0, "{v}");
        assert_eq!(v["mean_supply_c"], 50.0, "{v}");
        // Over the first two hours: no temperature, the heat all the same.
        let v = measured_heat(&conn, &s, 0, 2 * H).unwrap();
        assert_eq!(v["delivered"]["total_kwh"], 3.0, "{v}");
        assert_eq!(v["erf"]["value"], 3.0 / 20.0, "{v}");
        assert_eq!(v["erf"]["status"], "measured", "{v}");
        assert!(v["mean_supply_c"].is_null(), "{v}");
    }

    #[test]
    fn measured_heat_weights_temperatures_by_energy() {
        let conn = store::open_in_memory().unwrap();
        use vigie_protocol::GaugeQuantity::{
            HeatEnergyKwh, ReturnTemperatureCelsius, SupplyTemperatureCelsius,
        };
        let g = |q, t, v| vigie_protocol::Gauge {
            sensor: "hm:1".into(),
            quantity: q,
            value: v,
            at_ms: t,
        };
        // Two intervals: 1 kWh at 60/40 °C, then 3 kWh at 70/45 °C.
        let tx = conn.unchecked_transaction().unwrap();
        store::record_registers(
            &tx,
            "f",
            &[
                g(HeatEnergyKwh, 0, 10.0),
                g(HeatEnergyKwh, 30_000, 11.0),
                g(HeatEnergyKwh, 60_000, 14.0),
                g(SupplyTemperatureCelsius, 30_000, 60.0),
                g(ReturnTemperatureCelsius, 30_000, 40.0),
                g(SupplyTemperatureCelsius, 60_000, 70.0),
                g(ReturnTemperatureCelsius, 60_000, 45.0),
            ],
        )
        .unwrap();
        tx.commit().unwrap();
        let s: SiteConfig = toml::from_str(
            "[[meters]]\nname = \"h\"\nrole = \"heat-delivered\"\nregister = { host = \"f\", sensor = \"hm:1\", quantity = \"heat-energy-kwh\" }\n",
        )
        .unwrap();
        let v = measured_heat(&conn, &s, 0, MINUTE_MS).unwrap();
        assert_eq!(v["delivered"]["measured_kwh"], 4.0);
        // (1 x 60 + 3 x 70) / 4 = 67.5; (1 x 40 + 3 x 45) / 4 = 43.75.
        assert_eq!(v["mean_supply_c"], 67.5);
        assert_eq!(v["mean_return_c"], 43.75);
        let bare = site("");
        assert!(measured_heat(&conn, &bare, 0, MINUTE_MS).is_err());
    }

    #[test]
    fn partial_pue_per_zone() {
        let conn = store::open_in_memory().unwrap();
        add(&conn, "hall-a:total", 0, 1_200);
        add(&conn, "hall-a:it", 0, 1_000);
        let s = site(
            "[[meters]]\nname = \"a-total\"\nrole = \"zone-total\"\nzone = \"hall-a\"\nsensors = [{ host = \"facility\", sensor = \"hall-a:total\" }]\n[[meters]]\nname = \"a-it\"\nrole = \"zone-it\"\nzone = \"hall-a\"\nsensors = [{ host = \"facility\", sensor = \"hall-a:it\" }]\n",
        );
        let f = figures(&conn, &s, &MarketConfig::default(), 0, MINUTE_MS).unwrap();
        let p = f
            .figures
            .iter()
            .find(|x| x.indicator.symbol() == "pPUE")
            .unwrap();
        // 1200 / 1000.
        assert_eq!(p.value, Some(1.2));
        let lonely = site("[[meters]]\nname = \"b\"\nrole = \"zone-it\"\nzone = \"hall-b\"\n");
        assert!(figures(&conn, &lonely, &MarketConfig::default(), 0, MINUTE_MS).is_err());
        let nozone = site("[[meters]]\nname = \"c\"\nrole = \"zone-it\"\n");
        assert!(figures(&conn, &nozone, &MarketConfig::default(), 0, MINUTE_MS).is_err());
    }

    #[test]
    fn an_hourly_ppa_counts_for_cfe() {
        let conn = store::open_in_memory().unwrap();
        crate::grid::store::init(&conn).unwrap();
        for m in 0..120 {
            add(&conn, "meter:mains", m, 1_000_000_000);
        }
        // 60 kJ per hour consumed; the PPA delivers 30 kJ in hour 0 and
        // 90 kJ in hour 1: matched = 30 + 60 = 90 of 120 kJ, CFE 0.75.
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("ppa.csv");
        std::fs::write(
            &csv,
            format!("hour,kwh\n0,{}\n3600000,{}\n", 3e10 / 3.6e12, 9e10 / 3.6e12),
        )
        .unwrap();
        let mut carbon: crate::config::CarbonConfig = toml::from_str(&format!(
            "[market]\nresidual_mix_g_per_kwh = 300.0\n[[market.instruments]]\nname = \"wind PPA\"\nkind = \"ppa\"\norigin = \"renewable\"\nhourly_csv = \"{}\"\n",
            csv.display()
        ))
        .unwrap();
        load_hourly_profiles(&mut carbon.market, |t| t.parse().ok()).unwrap();
        let (r, _) = scope2(&conn, &site(""), &carbon, 0, 2 * 3_600_000).unwrap();
        assert_eq!(r.cfe.matched.0, 90_000_000_000);
        assert_eq!(r.cfe.score, Some(0.75));
        let mut bad: crate::config::CarbonConfig = toml::from_str(
            "[[market.instruments]]\nname = \"x\"\nkind = \"ppa\"\norigin = \"renewable\"\n",
        )
        .unwrap();
        assert!(load_hourly_profiles(&mut bad.market, |t| t.parse().ok()).is_err());
    }

    #[test]
    fn a_bad_site_model_is_refused_with_the_field_named() {
        let site = |t: &str| -> SiteConfig { toml::from_str(t).unwrap() };
        assert_eq!(SiteConfig::default().validate(), Ok(()));
        let good = "[[meters]]\nname = \"g\"\nrole = \"grid-import\"\n[[meters]]\nname = \"za\"\nrole = \"zone-total\"\nzone = \"a\"\n[[meters]]\nname = \"zai\"\nrole = \"zone-it\"\nzone = \"a\"\n";
        assert_eq!(site(good).validate(), Ok(()));
        for (text, says) in [
            ("it_category = 4\n", "[site] it_category = 4"),
            (
                "[[meters]]\nname = \"a\"\nrole = \"it\"\n[[meters]]\nname = \"b\"\nrole = \"it\"\n",
                "[[site.meters]]: two meters have role It",
            ),
            (
                "[[meters]]\nname = \"z\"\nrole = \"zone-it\"\n",
                "[[site.meters]]: meter z: role ZoneIt needs a zone",
            ),
            (
                "[[meters]]\nname = \"z\"\nrole = \"zone-it\"\nzone = \"b\"\n",
                "[[site.meters]]: zone b: pPUE needs both",
            ),
        ] {
            let e = site(text).validate().unwrap_err();
            assert!(e.starts_with(says), "{text}: {e}");
        }
    }

    #[test]
    fn years_start_where_the_calendar_says() {
        assert_eq!(year_start_ms(1970), 0);
        assert_eq!(year_start_ms(1971), 365 * 86_400_000);
        // 2024-01-01 is day 19723 of the Unix epoch.
        assert_eq!(year_start_ms(2024), 19_723 * 86_400_000);
    }

    #[test]
    fn scope2_location_and_market_with_a_certificate_and_the_residual_mix() {
        let conn = store::open_in_memory().unwrap();
        crate::grid::store::init(&conn).unwrap();
        // Two hours of grid import, 1e9 µJ (1 kJ) per minute.
        for m in 0..120 {
            add(&conn, "meter:mains", m, 1_000_000_000);
        }
        let cons_kwh = 120.0 * 1e9 / 3.6e12;
        let site = site("");
        // Static 50 g/kWh (no series); residual mix 300 g/kWh; a 1970
        // guarantee of origin whose pro-rata share of the two hours
        // covers half the consumption: V x 3.6e15 x 2/8760 = 6e10 µJ.
        let volume_mwh = 6e10 * 8760.0 / (3.6e15 * 2.0);
        let carbon: crate::config::CarbonConfig = toml::from_str(&format!(
            "zone = \"FR\"\nintensity_g_per_kwh = 50.0\n[market]\nresidual_mix_g_per_kwh = 300.0\n[[market.instruments]]\nname = \"GO hydro\"\nkind = \"certificate\"\norigin = \"renewable\"\nyear = 1970\nvolume_mwh = {volume_mwh}\n"
        ))
        .unwrap();
        let (r, cue) = scope2(&conn, &site, &carbon, 0, 2 * 3_600_000).unwrap();
        assert_eq!(r.consumption().0, 120_000_000_000);
        let loc_g = cons_kwh * 50.0;
        let mkt_g = cons_kwh / 2.0 * 300.0;
        assert!(
            (r.location.0 - loc_g).abs() < 1e-6,
            "{} vs {loc_g}",
            r.location.0
        );
        assert!(
            (r.market.0 - mkt_g).abs() < 1e-3,
            "{} vs {mkt_g}",
            r.market.0
        );
        assert_eq!(r.instruments[0].applied.0, 60_000_000_000);
        // No IT meter with data: CUE over an empty IT series is incomplete.
        assert!(cue.iter().all(|f| !f.is_complete()));
    }

    #[test]
    fn a_large_facilitys_monthly_reading_is_stored_whole_and_exact() {
        let mut conn = store::open_in_memory().unwrap();
        // 30 days of a 4 MW facility: 2,880 MWh = 1.0368e19 µJ, past
        // SQLite's i64, plus 7 µJ; and a 100 GWh year, past u64 too.
        let month = 30 * 86_400_000i64;
        let big: u128 = 2_880_000 * 3_600_000_000_000 + 7;
        let huge: u128 = 100_000_000 * 3_600_000_000_000;
        let year = 365 * 86_400_000i64;
        let reading = |start_ms: i64, end_ms: i64, amount: u128| ManualReading {
            start_ms,
            end_ms,
            amount,
            estimated: false,
            note: Some("index".into()),
        };
        add_manual(
            &mut conn,
            "grid",
            &[reading(0, month, big), reading(month, month + year, huge)],
            0,
        )
        .unwrap();
        let rows = conn.manual_samples("grid", 0, month + year).unwrap();
        assert!(rows.len() > 2, "stored in pieces: {rows:?}");
        // Contiguous pieces, each within a row's limit.
        for w in rows.windows(2) {
            assert_eq!(w[0].1, w[1].0);
        }
        assert!(rows.iter().all(|r| u128::from(r.2) <= MAX_PIECE));
        let sum = |a: i64, b: i64| -> u128 {
            rows.iter()
                .filter(|r| r.0 >= a && r.1 <= b)
                .map(|r| u128::from(r.2))
                .sum()
        };
        assert_eq!(sum(0, month), big);
        assert_eq!(sum(month, month + year), huge);
        // Still one reading for the overlap check.
        assert!(add_manual(&mut conn, "grid", &[reading(month - 1, month + 1, 1)], 0).is_err());
        // Absurd: more pieces than milliseconds.
        assert!(add_manual(&mut conn, "grid", &[reading(-10, -5, u128::MAX / 2)], 0).is_err());
    }

    #[test]
    fn pue_from_ledger_meters_with_coverage_and_water_from_manual_readings() {
        let mut conn = store::open_in_memory().unwrap();
        // Two minutes. Minute 0: grid 1500 µJ, IT from both PDUs (600 +
        // 400). Minute 1: grid 1500, only PDU a: the IT meter misses it.
        for m in 0..2 {
            add(&conn, "meter:mains", m, 1_500);
        }
        add(&conn, "pdu-a:total", 0, 600);
        add(&conn, "pdu-b:total", 0, 400);
        add(&conn, "pdu-a:total", 1, 700);
        let strict = site("");
        let f = figures(&conn, &strict, &MarketConfig::default(), 0, MINUTE_MS).unwrap();
        let pue = &f.figures[0];
        // 1500 / (600 + 400) = 1.5 over the first minute, fully measured.
        assert_eq!(pue.value, Some(1.5));
        assert_eq!(figure_json(pue)["status"], "measured");
        assert_eq!(figure_json(pue)["measurement_category"], 2);
        // Over both minutes the IT meter misses minute 1 (PDU b absent):
        // strict gives no value and says why.
        let f = figures(&conn, &strict, &MarketConfig::default(), 0, 2 * MINUTE_MS).unwrap();
        let j = figure_json(&f.figures[0]);
        assert_eq!(j["status"], "incomplete");
        assert!(j["value"].is_null());
        assert_eq!(j["inputs"][1]["coverage"]["missing_share"], 0.5);
        // Scaled to the period: 3000 / (1000 x 2) = 1.5, flagged estimated.
        let mut scaled = site("");
        scaled.gap_rule = GapRuleConfig::ScaleToPeriod;
        let f = figures(&conn, &scaled, &MarketConfig::default(), 0, 2 * MINUTE_MS).unwrap();
        assert_eq!(f.figures[0].value, Some(1.5));
        assert_eq!(figure_json(&f.figures[0])["status"], "estimated");
        assert!(f.missing_roles.contains(&Role::Water));

        // A manual water meter: 2 L over the first minute, then WUE.
        let with_water = site("[[meters]]\nname = \"water\"\nrole = \"water\"\n");
        add_manual(
            &mut conn,
            "water",
            &[ManualReading {
                start_ms: 0,
                end_ms: MINUTE_MS,
                amount: 2,
                estimated: false,
                note: Some("index 1000 -> 1002".into()),
            }],
            0,
        )
        .unwrap();
        let overlapping = ManualReading {
            start_ms: 30_000,
            end_ms: 90_000,
            amount: 1,
            estimated: false,
            note: None,
        };
        assert!(add_manual(&mut conn, "water", &[overlapping], 0).is_err());
        let f = figures(&conn, &with_water, &MarketConfig::default(), 0, MINUTE_MS).unwrap();
        let wue = f
            .figures
            .iter()
            .find(|x| x.indicator.symbol() == "WUE")
            .unwrap();
        // 2 L over 1000 µJ of IT energy: 2 / (1000 / 3.6e12 kWh) = 7.2e9 L/kWh.
        let expected = 2.0 / (1000.0 / 3.6e12);
        assert!(
            (wue.value.unwrap() - expected).abs() < 1e-6 * expected,
            "{:?} vs {expected}",
            wue.value
        );
    }
}

/// `[carbon.market]`: what the site buys, for market-based Scope 2.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MarketConfig {
    /// Residual-mix factor of the zone, gCO2e/kWh (after instruments and
    /// the supplier's covered share).
    #[serde(default)]
    pub residual_mix_g_per_kwh: Option<f64>,
    /// The supplier's specific factor and the share of the remainder it covers.
    #[serde(default)]
    pub supplier: Option<SupplierConfig>,
    /// Guarantees of origin, PPAs, on-site generation contracts.
    #[serde(default)]
    pub instruments: Vec<InstrumentConfig>,
}

/// A supplier-specific factor.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SupplierConfig {
    /// gCO2e/kWh.
    pub factor_g_per_kwh: f64,
    /// Share (0 to 1) of each hour's uncovered consumption it covers.
    pub share: f64,
}

/// One contractual instrument with an annual volume.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstrumentConfig {
    /// Name shown in reports.
    pub name: String,
    /// `certificate` (guarantees of origin, RECs), `ppa`, `on-site`.
    pub kind: InstrumentKindConfig,
    /// `renewable`, `carbon-free` (e.g. nuclear), `other`.
    pub origin: OriginConfig,
    /// Calendar year (UTC) the volume is for (annual volumes).
    #[serde(default)]
    pub year: Option<i32>,
    /// Volume for that year, MWh (annual volumes).
    #[serde(default)]
    pub volume_mwh: Option<f64>,
    /// An hourly delivery profile instead (a PPA's metered output): CSV
    /// lines `hour,kwh` (hour start in RFC 3339 or Unix ms), header first.
    /// Hourly volumes count for the CFE score.
    #[serde(default)]
    pub hourly_csv: Option<std::path::PathBuf>,
    /// The profile, loaded at start-up.
    #[serde(skip)]
    pub hourly: Option<BTreeMap<i64, Microjoules>>,
    /// Emission factor, gCO2e/kWh; 0 by default for carbon-free origins.
    #[serde(default)]
    pub factor_g_per_kwh: Option<f64>,
}

/// Instrument kind as configured.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InstrumentKindConfig {
    /// Energy attribute certificate.
    Certificate,
    /// Power purchase agreement.
    Ppa,
    /// On-site generation contract.
    OnSite,
}

/// Instrument origin as configured.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OriginConfig {
    /// Renewable.
    Renewable,
    /// Carbon-free, not renewable.
    CarbonFree,
    /// Anything else (needs a factor).
    Other,
}

/// Loads the hourly profiles named by `hourly_csv`; says which line of
/// which file is wrong.
pub fn load_hourly_profiles(
    m: &mut MarketConfig,
    parse_time: impl Fn(&str) -> Option<i64>,
) -> Result<(), String> {
    for i in &mut m.instruments {
        let Some(path) = &i.hourly_csv else {
            if i.year.is_none() || i.volume_mwh.is_none() {
                return Err(format!(
                    "instrument {}: give year and volume_mwh, or hourly_csv",
                    i.name
                ));
            }
            continue;
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("instrument {}: {}: {e}", i.name, path.display()))?;
        let mut map = BTreeMap::new();
        for (n, line) in text.lines().enumerate().skip(1) {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let bad = || format!("{} line {}: expected hour,kwh", path.display(), n + 1);
            let (h, k) = line.split_once(',').ok_or_else(bad)?;
            let hour = parse_time(h.trim()).ok_or_else(bad)?;
            let kwh: f64 = k.trim().parse().map_err(|_| bad())?;
            if hour % vigie_energy::HOUR_MS != 0 || !(kwh.is_finite() && kwh >= 0.0) {
                return Err(bad());
            }
            map.insert(hour, Microjoules((kwh * 3.6e12).round() as u64));
        }
        i.hourly = Some(map);
    }
    Ok(())
}

/// The market inputs for `period`: each instrument's annual volume enters
/// pro rata to the part of its year the period covers (annual contracts
/// carry no hourly shape; the allocation is documented in the report).
pub fn market_inputs(m: &MarketConfig, period: Period) -> vigie_energy::MarketInputs {
    use vigie_energy::{Instrument, InstrumentKind, Origin, SupplierFactor, Volume};
    let instruments = m
        .instruments
        .iter()
        .filter_map(|i| {
            let volume = if let Some(h) = &i.hourly {
                Volume::Hourly(
                    h.range(period.from_ms()..period.to_ms())
                        .map(|(k, v)| (*k, *v))
                        .collect(),
                )
            } else {
                let (year, mwh) = (i.year?, i.volume_mwh?);
                let (ys, ye) = (
                    year_start_ms(i64::from(year)),
                    year_start_ms(i64::from(year) + 1),
                );
                let overlap = period.to_ms().min(ye) - period.from_ms().max(ys);
                if overlap <= 0 || !mwh.is_finite() || mwh < 0.0 {
                    return None;
                }
                let share = overlap as f64 / (ye - ys) as f64;
                let uj = (mwh * 3.6e15 * share).round();
                Volume::Period(vigie_energy::MicrojoulesSum(if uj > 0.0 {
                    uj as u128
                } else {
                    0
                }))
            };
            Some(Instrument {
                name: i.name.clone(),
                kind: match i.kind {
                    InstrumentKindConfig::Certificate => InstrumentKind::Certificate,
                    InstrumentKindConfig::Ppa => InstrumentKind::Ppa,
                    InstrumentKindConfig::OnSite => InstrumentKind::OnSite,
                },
                origin: match i.origin {
                    OriginConfig::Renewable => Origin::Renewable,
                    OriginConfig::CarbonFree => Origin::CarbonFreeNonRenewable,
                    OriginConfig::Other => Origin::Other,
                },
                volume,
                factor: i.factor_g_per_kwh.map(vigie_energy::GramsPerKwh),
            })
        })
        .collect();
    vigie_energy::MarketInputs {
        instruments,
        supplier: m.supplier.as_ref().map(|s| SupplierFactor {
            factor: vigie_energy::GramsPerKwh(s.factor_g_per_kwh),
            share: s.share,
        }),
        residual_mix: m.residual_mix_g_per_kwh.map(vigie_energy::GramsPerKwh),
    }
}

/// The longest period [`scope2`] accepts, in years.
pub const SCOPE2_MAX_YEARS: i64 = 10;

/// Site Scope 2 over whole hours: E_DC's grid import, location- and
/// market-based, with CUE against E_IT.
pub fn scope2(
    conn: &dyn Db,
    site: &SiteConfig,
    carbon: &crate::config::CarbonConfig,
    from_ms: i64,
    to_ms: i64,
) -> Result<(vigie_energy::Scope2Report, Vec<Figure>), SiteError> {
    use vigie_energy::HOUR_MS;
    let from = from_ms.div_euclid(HOUR_MS) * HOUR_MS;
    let to = (to_ms + HOUR_MS - 1).div_euclid(HOUR_MS) * HOUR_MS;
    let period = Period::new(from, to).map_err(SiteError::Period)?;
    // Hour by hour: a period of centuries would hold the API's connection
    // for minutes (found by fuzzing the demo).
    if to - from > SCOPE2_MAX_YEARS * 366 * 24 * HOUR_MS {
        return Err(SiteError::Config(format!(
            "Scope 2 is computed hour by hour: ask for at most {SCOPE2_MAX_YEARS} years at a time"
        )));
    }
    let meter = |role: Role| site.meters.iter().find(|m| m.role == role);
    let grid = meter(Role::GridImport).ok_or_else(|| {
        SiteError::Config("Scope 2 needs a [[site.meters]] with role grid-import".into())
    })?;
    let series = |m: &MeterConfig| -> Result<Series<Microjoules>, SiteError> {
        to_series(&m.name, meter_samples(conn, m, from, to)?, Microjoules)
    };
    let consumption = series(grid)?;
    let factors = crate::carbon::hourly_factors(
        conn,
        &carbon.zone,
        carbon.basis,
        vigie_energy::GramsPerKwh(carbon.intensity_g_per_kwh),
        from,
        to,
    )?;
    let grid_factors = vigie_energy::GridFactors::new(
        factors.iter().map(|(h, f)| {
            (
                *h,
                vigie_energy::AverageFactor {
                    intensity: vigie_energy::GramsPerKwh(f.g_per_kwh),
                    estimated: f.estimated,
                },
            )
        }),
        None,
    )
    .map_err(|e| SiteError::Config(e.to_string()))?;
    let report = vigie_energy::scope2(
        period,
        &consumption,
        &grid_factors,
        &market_inputs(&carbon.market, period),
    )
    .map_err(|e| SiteError::Config(e.to_string()))?;
    let mut cue = Vec::new();
    if let Some(it) = meter(Role::It) {
        let it = series(it)?;
        let rule: GapRule = site.gap_rule.into();
        for basis in [
            vigie_energy::Scope2Basis::LocationBased,
            vigie_energy::Scope2Basis::MarketBased,
        ] {
            cue.push(vigie_energy::carbon_usage_effectiveness(
                rule, &report, basis, &it,
            ));
        }
    }
    Ok((report, cue))
}
