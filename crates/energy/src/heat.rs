//! Heat reuse: measured figures and the potential study for permits.
//!
//! - [`measured_heat`]: heat delivered to an offtaker versus heat rejected,
//!   energy-weighted supply and return temperatures, and ERF, from heat
//!   meter data. Heat-pump electricity stays a separate series (DOMAIN.md
//!   §2): it is reported, never netted.
//! - [`heat_potential`]: what a planned site could deliver, for the heat
//!   reuse cost-benefit analysis a permit file asks for (DOMAIN.md §6):
//!   annual heat, peak thermal power, the hourly profile, the temperature,
//!   heat-pump electricity, the projected ERF, a homes-heated equivalent,
//!   and every assumption behind them.
//!
//! # The potential model, hour by hour
//!
//! 1. Heat at the data-centre side: `Q_src = P_IT × capture`, at the
//!    cooling technology's outlet temperature `T_out`. Nearly all IT
//!    electricity ends as heat (DOMAIN.md §6); `capture` is the share the
//!    cooling medium carries at `T_out` (see [`CoolingTechnology`]).
//! 2. Without an offtaker temperature, or when `T_out ≥ T_req`, the heat is
//!    deliverable as is at `T_out`; a planned heat pump is not run.
//! 3. When `T_out < T_req`: with a heat pump, `COP = η × T_req,K /
//!    (T_req,K − T_out,K)` (Carnot COP of the lift, in kelvin, times the
//!    efficiency `η`, default 0.5: real heat pumps reach roughly half the
//!    Carnot COP; or a fixed COP from a datasheet), and the heat pump
//!    delivers `Q_out = Q_src × COP / (COP − 1)` using `W = Q_out / COP` of
//!    electricity (`Q_out = Q_src + W`). Without one, nothing is
//!    deliverable and a note says why.
//! 4. With an offtaker demand profile, the hour's delivery is
//!    `min(available, demand)`; the heat pump then runs only for that, and
//!    only the heat it needs is taken from the data centre.
//!
//! The projected ERF counts the heat leaving the data-centre boundary:
//! with the heat pump outside the boundary (the usual case, run by the
//! heat network), the heat taken from the data centre, and E_DC excludes
//! the heat pump; with it inside, the lifted heat, and its electricity is
//! added to E_DC.

use std::fmt;

use crate::coverage::{GapRule, InputUsed, Period, Quality, Sample, Series, SeriesError};
use crate::kpi::{Figure, energy_reuse_factor};
use crate::quantities::{Celsius, KilowattHours};
use crate::units::{Microjoules, Watts};

/// Hours in a common year.
pub const HOURS_PER_YEAR: usize = 8760;
/// Hours in a leap year.
pub const HOURS_PER_LEAP_YEAR: usize = 8784;
/// Default heat-pump efficiency: the share of the Carnot COP reached.
pub const DEFAULT_CARNOT_FRACTION: f64 = 0.5;
/// Default annual heat demand of one home, kWh thermal.
///
/// Basis: Odyssee-Mure, "Energy consumption by end-use" (households, EU,
/// 2021): space heating averages 0.86 toe per dwelling, i.e. about
/// 10.0 MWh (1 toe = 11.63 MWh). Final energy for space heating only, EU
/// average climate; replace it with the offtaker's figure.
pub const DEFAULT_HOME_HEAT_KWH: f64 = 10_000.0;

const ABSOLUTE_ZERO_C: f64 = -273.15;

/// Inputs the heat functions cannot use. Not retryable with the same data.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum HeatError {
    /// A period or heat-meter series is invalid.
    #[error(transparent)]
    Series(#[from] SeriesError),
    /// The IT load profile must be one year of hourly values.
    #[error("IT load profile has {0} hourly values; expected 8760 or 8784")]
    ProfileLength(usize),
    /// The offtaker demand profile must match the IT load profile.
    #[error("offtaker demand has {got} hourly values; the IT load has {expected}")]
    DemandLength {
        /// Values in the demand profile.
        got: usize,
        /// Values in the IT load profile.
        expected: usize,
    },
    /// A value is out of its range (negative, NaN, a share above 1, ...).
    #[error("{what} is out of range: {value}")]
    OutOfRange {
        /// Which value.
        what: &'static str,
        /// The value given.
        value: f64,
    },
    /// The heat pump would deliver no more heat than the electricity it
    /// uses: the lift is too large for the COP model.
    #[error("heat pump COP {0} is not above 1 for this lift")]
    CopTooLow(f64),
}

fn check(what: &'static str, value: f64, ok: bool) -> Result<f64, HeatError> {
    if value.is_finite() && ok {
        Ok(value)
    } else {
        Err(HeatError::OutOfRange { what, value })
    }
}

fn check_temperature(what: &'static str, t: Celsius) -> Result<Celsius, HeatError> {
    check(what, t.0, t.0 > ABSOLUTE_ZERO_C).map(Celsius)
}

// ---------------------------------------------------------------------
// Measured heat
// ---------------------------------------------------------------------

/// One interval of a heat meter on the delivery side.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HeatMeterSample {
    /// Inclusive start, Unix ms.
    pub start_ms: i64,
    /// Exclusive end, Unix ms.
    pub end_ms: i64,
    /// Thermal energy delivered over the interval.
    pub heat: Microjoules,
    /// Mean supply (flow) temperature over the interval.
    pub supply: Celsius,
    /// Mean return temperature over the interval.
    pub return_temperature: Celsius,
    /// Measured or estimated.
    pub quality: Quality,
}

/// Heat figures from meters over a period.
#[derive(Clone, Debug, PartialEq)]
pub struct MeasuredHeat {
    /// Heat handed over to the offtaker, kWh thermal.
    pub delivered: InputUsed,
    /// Heat rejected to the environment, kWh thermal.
    pub rejected: InputUsed,
    /// Heat-pump electricity, kWh, when there is a heat pump.
    pub heat_pump_electricity: Option<InputUsed>,
    /// `delivered / (delivered + rejected)`, when both totals are known.
    pub recovered_share: Option<f64>,
    /// Energy-weighted mean supply temperature of the delivered heat:
    /// `Σ Q_i·T_supply,i / Σ Q_i` over the samples in the period.
    pub mean_supply: Option<Celsius>,
    /// Energy-weighted mean return temperature, likewise.
    pub mean_return: Option<Celsius>,
    /// ERF = delivered / E_DC.
    pub erf: Figure,
}

/// Measured heat figures over `period` under `rule`.
///
/// `delivered` is the heat meter at the handover to the offtaker (with
/// temperatures), `rejected` the heat sent to dry coolers or towers,
/// `heat_pump` the heat pump's electricity where one exists, `e_dc` all
/// energy entering the data centre. Where the heat pump sits (inside or
/// outside the boundary) decides whether its electricity is in `e_dc`;
/// nothing is subtracted here.
///
/// # Errors
///
/// [`HeatError::Series`] for empty or overlapping meter samples,
/// [`HeatError::OutOfRange`] for a temperature that is not finite or below
/// absolute zero.
pub fn measured_heat(
    period: Period,
    rule: GapRule,
    delivered: &[HeatMeterSample],
    rejected: &Series<Microjoules>,
    heat_pump: Option<&Series<Microjoules>>,
    e_dc: &Series<Microjoules>,
) -> Result<MeasuredHeat, HeatError> {
    for s in delivered {
        check_temperature("supply temperature", s.supply)?;
        check_temperature("return temperature", s.return_temperature)?;
    }
    let as_sample = |s: &HeatMeterSample| Sample {
        start_ms: s.start_ms,
        end_ms: s.end_ms,
        amount: s.heat,
        quality: s.quality,
    };
    let series = Series::new(delivered.iter().map(as_sample))?;
    // Weights are each sample's heat inside the period.
    let (mut weight, mut supply, mut ret) = (0.0, 0.0, 0.0);
    for s in delivered {
        let q = as_sample(s).raw_within(period.from_ms(), period.to_ms()) as f64;
        weight += q;
        supply += q * s.supply.0;
        ret += q * s.return_temperature.0;
    }
    let mean = |sum: f64| (weight > 0.0).then(|| Celsius(sum / weight));
    let delivered_in = series.input("heat delivered", period, rule);
    let rejected_in = rejected.input("heat rejected", period, rule);
    let recovered_share = match (delivered_in.total, rejected_in.total) {
        (Some(d), Some(r)) if d + r > 0.0 => Some(d / (d + r)),
        _ => None,
    };
    Ok(MeasuredHeat {
        mean_supply: mean(supply),
        mean_return: mean(ret),
        recovered_share,
        heat_pump_electricity: heat_pump.map(|s| s.input("E_heat-pump", period, rule)),
        erf: energy_reuse_factor(period, rule, &series, e_dc),
        delivered: delivered_in,
        rejected: rejected_in,
    })
}

// ---------------------------------------------------------------------
// Potential study
// ---------------------------------------------------------------------

/// How the IT equipment is cooled, which sets how much heat can be taken
/// and how warm. Defaults are planning values to replace with the design's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CoolingTechnology {
    /// Room air through CRAH/CRAC units: exhaust air at 25-35 °C.
    Air,
    /// Warm-water loops (rear-door or in-row water coils, warm-water
    /// circuits): 45-60 °C.
    WarmWater,
    /// Direct liquid cooling, cold plates on processors and memory:
    /// 60-75 °C.
    DirectLiquid,
    /// Immersion in a dielectric fluid: up to similar temperatures as
    /// direct liquid cooling.
    Immersion,
}

impl CoolingTechnology {
    /// Default share of IT electricity the cooling medium carries at the
    /// outlet temperature.
    ///
    /// - Air 0.90: all IT heat enters the room air; 10 % is allowed for what
    ///   a recovery coil and the building envelope lose.
    /// - Warm water 0.90: water coils at the rack take the rack's heat, with
    ///   the same allowance.
    /// - Direct liquid 0.75: cold plates take processors and memory; power
    ///   supplies, disks and network parts still heat the air (vendor
    ///   designs range from about 70 % for processor-only plates to about
    ///   95 % for full-coverage designs).
    /// - Immersion 0.95: every component is in the fluid; 5 % for losses.
    ///
    /// These are vigie's planning assumptions, not measurements.
    pub fn default_capture_share(self) -> f64 {
        match self {
            Self::Air | Self::WarmWater => 0.90,
            Self::DirectLiquid => 0.75,
            Self::Immersion => 0.95,
        }
    }

    /// Default outlet temperature: the middle of DOMAIN.md §6's range (air
    /// 25-35 °C: 30; warm water 45-60 °C: 52.5; direct liquid 60-75 °C:
    /// 67.5), and 55 °C for immersion, which DOMAIN.md puts "up to" the
    /// direct-liquid range (single-phase tanks commonly run below it).
    pub fn default_outlet(self) -> Celsius {
        Celsius(match self {
            Self::Air => 30.0,
            Self::WarmWater => 52.5,
            Self::DirectLiquid => 67.5,
            Self::Immersion => 55.0,
        })
    }

    /// A short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Air => "air",
            Self::WarmWater => "warm water",
            Self::DirectLiquid => "direct liquid",
            Self::Immersion => "immersion",
        }
    }

    fn capture_basis(self) -> &'static str {
        match self {
            Self::Air => {
                "default: all IT heat enters the room air, 10 % allowed for recovery-coil and building losses"
            }
            Self::WarmWater => {
                "default: rack water coils take the rack heat, 10 % allowed for losses"
            }
            Self::DirectLiquid => {
                "default: cold plates on processors and memory; the rest heats the air (vendor designs: about 70-95 %)"
            }
            Self::Immersion => "default: all components immersed, 5 % allowed for losses",
        }
    }

    fn outlet_basis(self) -> &'static str {
        match self {
            Self::Air => "default: middle of the 25-35 °C range for air cooling (DOMAIN.md §6)",
            Self::WarmWater => {
                "default: middle of the 45-60 °C range for warm-water loops (DOMAIN.md §6)"
            }
            Self::DirectLiquid => {
                "default: middle of the 60-75 °C range for direct liquid cooling (DOMAIN.md §6)"
            }
            Self::Immersion => {
                "default: below the direct-liquid range that immersion reaches at most (DOMAIN.md §6)"
            }
        }
    }
}

/// The cooling design: a technology, with its defaults overridable.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Cooling {
    /// The technology.
    pub technology: CoolingTechnology,
    /// Overrides [`CoolingTechnology::default_capture_share`].
    pub capture_share: Option<f64>,
    /// Overrides [`CoolingTechnology::default_outlet`].
    pub outlet: Option<Celsius>,
}

impl Cooling {
    /// `technology` with its defaults.
    pub fn new(technology: CoolingTechnology) -> Self {
        Self {
            technology,
            capture_share: None,
            outlet: None,
        }
    }
}

/// How a heat pump's COP is found.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum CopModel {
    /// `COP = η × T_sink,K / (T_sink,K − T_source,K)`: a fraction `η` of
    /// the Carnot COP of the lift. Heat-exchanger approach temperatures are
    /// folded into `η`. The Carnot COP grows without bound as the lift
    /// shrinks, so for lifts under about 10 K prefer [`CopModel::Fixed`].
    CarnotFraction(f64),
    /// A COP from a datasheet at the design point.
    Fixed(f64),
}

impl Default for CopModel {
    fn default() -> Self {
        Self::CarnotFraction(DEFAULT_CARNOT_FRACTION)
    }
}

/// A planned heat pump lifting the data centre's heat to the offtaker's
/// temperature.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct HeatPump {
    /// The COP model.
    pub cop: CopModel,
    /// Whether it is inside the data-centre boundary (its electricity is
    /// then part of E_DC and the lifted heat leaves the boundary). Usually
    /// not: the heat network runs it.
    pub inside_boundary: bool,
}

/// The heat user.
#[derive(Clone, Debug, PartialEq)]
pub struct Offtaker {
    /// Supply temperature it needs (e.g. 55-70 °C for 4th-generation
    /// district heating, DOMAIN.md §6).
    pub supply_temperature: Celsius,
    /// Hourly demand, thermal, same length as the IT load; `None`: it takes
    /// all the heat offered.
    pub demand: Option<Vec<Watts>>,
}

/// How E_DC is known for the projected ERF.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum FacilityEnergy {
    /// E_DC = E_IT × this PUE (≥ 1).
    AssumedPue(f64),
    /// E_DC for the year, given.
    Annual(KilowattHours),
}

/// Inputs of a heat-reuse potential study.
#[derive(Clone, Debug, PartialEq)]
pub struct HeatStudyInput {
    /// Planned IT load, hourly mean power over one year (8760 or 8784
    /// values).
    pub it_load: Vec<Watts>,
    /// Cooling design.
    pub cooling: Cooling,
    /// A planned heat pump, if any.
    pub heat_pump: Option<HeatPump>,
    /// The heat user, if known.
    pub offtaker: Option<Offtaker>,
    /// E_DC, for the ERF.
    pub facility: FacilityEnergy,
    /// Annual heat demand of one home, kWh thermal; `None`:
    /// [`DEFAULT_HOME_HEAT_KWH`].
    pub home_heat_demand: Option<KilowattHours>,
}

/// The value of an [`Assumption`].
#[derive(Clone, Debug, PartialEq)]
pub enum AssumptionValue {
    /// A number in the assumption's unit.
    Number(f64),
    /// A choice stated in words.
    Text(String),
}

impl fmt::Display for AssumptionValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Number(v) => write!(f, "{v}"),
            Self::Text(t) => f.write_str(t),
        }
    }
}

/// One assumption behind a study, stated for the reader.
#[derive(Clone, Debug, PartialEq)]
pub struct Assumption {
    /// What is assumed.
    pub name: String,
    /// Its value.
    pub value: AssumptionValue,
    /// Unit of a number (`"1"` for a ratio, `""` for text).
    pub unit: &'static str,
    /// Where it comes from: given, a default and its source, or a formula.
    pub basis: String,
}

fn assume(
    name: impl Into<String>,
    value: f64,
    unit: &'static str,
    basis: impl Into<String>,
) -> Assumption {
    Assumption {
        name: name.into(),
        value: AssumptionValue::Number(value),
        unit,
        basis: basis.into(),
    }
}

/// Result of a heat-reuse potential study.
#[derive(Clone, Debug, PartialEq)]
pub struct HeatStudy {
    /// Heat delivered to the offtaker, hour by hour (thermal mean power).
    pub hourly: Vec<Watts>,
    /// Heat-pump electricity, hour by hour.
    pub hourly_heat_pump: Vec<Watts>,
    /// Heat deliverable over the year, thermal.
    pub deliverable: KilowattHours,
    /// Of which taken from the data centre (the rest is heat-pump
    /// electricity).
    pub from_data_centre: KilowattHours,
    /// Highest hourly delivery, thermal.
    pub peak: Watts,
    /// Energy-weighted mean delivery temperature; `None` if nothing is
    /// delivered.
    pub supply_temperature: Option<Celsius>,
    /// Heat-pump electricity over the year.
    pub heat_pump_electricity: KilowattHours,
    /// The heat pump's COP, when it runs.
    pub cop: Option<f64>,
    /// IT electricity over the year.
    pub e_it: KilowattHours,
    /// E_DC over the year (with the heat pump if inside the boundary).
    pub e_dc: KilowattHours,
    /// Projected ERF: heat leaving the boundary / E_DC; `None` when E_DC
    /// is zero (an all-zero IT load with an assumed PUE).
    pub projected_erf: Option<f64>,
    /// `deliverable / home heat demand`.
    pub homes_heated: f64,
    /// The result in one plain sentence, with its home assumption.
    pub summary: String,
    /// Every assumption used.
    pub assumptions: Vec<Assumption>,
    /// Plain remarks (e.g. why nothing is deliverable).
    pub notes: Vec<String>,
}

/// Heat-reuse potential of a planned site (see the module docs for the
/// model).
///
/// # Errors
///
/// [`HeatError::ProfileLength`], [`HeatError::DemandLength`],
/// [`HeatError::OutOfRange`] for a negative or non-finite load or demand, a
/// share outside `[0, 1]`, a temperature below absolute zero, a Carnot
/// fraction outside `(0, 1]`, a PUE below 1, a non-positive E_DC or home
/// demand, and [`HeatError::CopTooLow`].
pub fn heat_potential(input: &HeatStudyInput) -> Result<HeatStudy, HeatError> {
    let n = input.it_load.len();
    if n != HOURS_PER_YEAR && n != HOURS_PER_LEAP_YEAR {
        return Err(HeatError::ProfileLength(n));
    }
    for p in &input.it_load {
        check("IT load", p.0, p.0 >= 0.0)?;
    }
    let tech = input.cooling.technology;
    let capture = match input.cooling.capture_share {
        Some(c) => check("capture share", c, (0.0..=1.0).contains(&c))?,
        None => tech.default_capture_share(),
    };
    let t_out = check_temperature(
        "outlet temperature",
        input.cooling.outlet.unwrap_or(tech.default_outlet()),
    )?;
    let home = match input.home_heat_demand {
        Some(h) => check("home heat demand", h.0, h.0 > 0.0)?,
        None => DEFAULT_HOME_HEAT_KWH,
    };

    let mut assumptions = vec![
        assume(
            "profile length",
            n as f64,
            "h",
            "planned IT load, hourly mean power over one year",
        ),
        assume(
            "IT electricity ending as heat",
            1.0,
            "1",
            "nearly all IT electricity ends as heat (DOMAIN.md §6)",
        ),
        assume(
            format!("heat capture share ({})", tech.name()),
            capture,
            "1",
            if input.cooling.capture_share.is_some() {
                "given"
            } else {
                tech.capture_basis()
            },
        ),
        assume(
            format!("outlet temperature ({})", tech.name()),
            t_out.0,
            "°C",
            if input.cooling.outlet.is_some() {
                "given"
            } else {
                tech.outlet_basis()
            },
        ),
    ];
    let mut notes = Vec::new();

    // Required temperature and demand.
    let (t_req, demand) = match &input.offtaker {
        Some(o) => {
            let t = check_temperature("offtaker supply temperature", o.supply_temperature)?;
            assumptions.push(assume(
                "offtaker supply temperature",
                t.0,
                "°C",
                "given by the offtaker",
            ));
            if let Some(d) = &o.demand {
                if d.len() != n {
                    return Err(HeatError::DemandLength {
                        got: d.len(),
                        expected: n,
                    });
                }
                for p in d {
                    check("offtaker demand", p.0, p.0 >= 0.0)?;
                }
                let annual: f64 = d.iter().map(|p| p.0).sum::<f64>() / 1e3;
                assumptions.push(assume(
                    "offtaker demand",
                    annual,
                    "kWh",
                    "given hourly profile; delivery is capped at it each hour",
                ));
            }
            (Some(t), o.demand.as_deref())
        }
        None => (None, None),
    };
    if demand.is_none() {
        assumptions.push(Assumption {
            name: "offtaker demand".into(),
            value: AssumptionValue::Text("not limited".into()),
            unit: "",
            basis:
                "no demand profile given: all captured heat counts as deliverable (an upper bound)"
                    .into(),
        });
    }

    // Heat pump, when the offtaker needs more than the outlet gives.
    let needs_lift = t_req.is_some_and(|t| t.0 > t_out.0);
    let mut cop = None;
    match (input.heat_pump, t_req) {
        (Some(hp), Some(t)) if needs_lift => {
            let c = match hp.cop {
                CopModel::CarnotFraction(eta) => {
                    check("Carnot fraction", eta, eta > 0.0 && eta <= 1.0)?;
                    let carnot = t.kelvin() / (t.kelvin() - t_out.kelvin());
                    assumptions.push(assume(
                        "heat pump Carnot fraction",
                        eta,
                        "1",
                        if eta == DEFAULT_CARNOT_FRACTION {
                            "default: real heat pumps reach roughly half the Carnot COP"
                        } else {
                            "given"
                        },
                    ));
                    let c = eta * carnot;
                    assumptions.push(assume(
                        "heat pump COP",
                        c,
                        "1",
                        format!(
                            "η × T_sink/(T_sink − T_source) in K = {eta} × {:.2}/({:.2} − {:.2})",
                            t.kelvin(),
                            t.kelvin(),
                            t_out.kelvin()
                        ),
                    ));
                    c
                }
                CopModel::Fixed(c) => {
                    check("heat pump COP", c, c > 0.0)?;
                    assumptions.push(assume("heat pump COP", c, "1", "given (datasheet)"));
                    c
                }
            };
            if c <= 1.0 {
                return Err(HeatError::CopTooLow(c));
            }
            assumptions.push(Assumption {
                name: "heat pump placement".into(),
                value: AssumptionValue::Text(
                    if hp.inside_boundary {
                        "inside the data-centre boundary"
                    } else {
                        "outside the data-centre boundary"
                    }
                    .into(),
                ),
                unit: "",
                basis: if hp.inside_boundary {
                    "given: its electricity is added to E_DC; ERF counts the lifted heat".into()
                } else {
                    "given: ERF counts the heat handed over before the heat pump; E_DC excludes it"
                        .into()
                },
            });
            cop = Some(c);
        }
        (None, Some(t)) if needs_lift => notes.push(format!(
            "outlet {} °C is below the offtaker's {} °C and no heat pump is planned: no heat is deliverable",
            t_out.0, t.0
        )),
        (Some(_), Some(_)) => notes.push(
            "a heat pump is planned but not needed: the outlet is warm enough for the offtaker".into(),
        ),
        (Some(_), None) => notes.push(
            "a heat pump is planned but no offtaker temperature is given: it is not run".into(),
        ),
        _ => {}
    }

    // Hour by hour, in W (a mean over one hour is Wh).
    let mut hourly = Vec::with_capacity(n);
    let mut hourly_hp = Vec::with_capacity(n);
    let (mut delivered, mut from_dc, mut hp_elec, mut peak) = (0.0, 0.0, 0.0, 0.0f64);
    let blocked = needs_lift && cop.is_none();
    for (h, it) in input.it_load.iter().enumerate() {
        let source = it.0 * capture;
        let available = match (blocked, cop) {
            (true, _) => 0.0,
            (false, Some(c)) => source * c / (c - 1.0),
            (false, None) => source,
        };
        let out = demand.map_or(available, |d| available.min(d[h].0));
        let w = cop.map_or(0.0, |c| out / c);
        hourly.push(Watts(out));
        hourly_hp.push(Watts(w));
        delivered += out;
        from_dc += out - w;
        hp_elec += w;
        peak = peak.max(out);
    }
    let e_it: f64 = input.it_load.iter().map(|p| p.0).sum::<f64>() / 1e3;
    let (delivered, from_dc, hp_elec) = (delivered / 1e3, from_dc / 1e3, hp_elec / 1e3);

    let hp_inside = input.heat_pump.is_some_and(|hp| hp.inside_boundary) && cop.is_some();
    let mut e_dc = match input.facility {
        FacilityEnergy::AssumedPue(p) => {
            check("PUE", p, p >= 1.0)?;
            assumptions.push(assume("PUE", p, "1", "given: E_DC = E_IT × PUE"));
            e_it * p
        }
        FacilityEnergy::Annual(k) => {
            check("E_DC", k.0, k.0 > 0.0)?;
            assumptions.push(assume("E_DC", k.0, "kWh", "given"));
            k.0
        }
    };
    if hp_inside {
        e_dc += hp_elec;
    }
    let leaving = if hp_inside { delivered } else { from_dc };
    let projected_erf = (e_dc > 0.0).then(|| leaving / e_dc);

    assumptions.push(assume(
        "home heat demand",
        home,
        "kWh/year",
        if input.home_heat_demand.is_some() {
            "given".to_owned()
        } else {
            "default: EU average space heating, 0.86 toe per dwelling (Odyssee-Mure, 2021), about 10 MWh"
                .to_owned()
        },
    ));
    let homes_heated = delivered / home;
    let supply_temperature = (delivered > 0.0).then(|| {
        if cop.is_some() {
            t_req.unwrap_or(t_out)
        } else {
            t_out
        }
    });
    let summary = match supply_temperature {
        Some(t) => format!(
            "About {:.0} MWh of heat a year at {:.1} °C (peak {:.0} kW), enough for about {:.0} homes using {:.1} MWh of heat a year each.",
            delivered / 1e3,
            t.0,
            peak / 1e3,
            homes_heated,
            home / 1e3
        ),
        None => "No heat is deliverable with these assumptions.".to_owned(),
    };

    Ok(HeatStudy {
        hourly,
        hourly_heat_pump: hourly_hp,
        deliverable: KilowattHours(delivered),
        from_data_centre: KilowattHours(from_dc),
        peak: Watts(peak),
        supply_temperature,
        heat_pump_electricity: KilowattHours(hp_elec),
        cop,
        e_it: KilowattHours(e_it),
        e_dc: KilowattHours(e_dc),
        projected_erf,
        homes_heated,
        summary,
        assumptions,
        notes,
    })
}
