//! Facility indicators over a period (ISO/IEC 30134, EN 50600-4-x; see
//! DOMAIN.md §2): PUE, pPUE, REF, ERF, CER, CUE and WUE.
//!
//! Each function takes the period, a [`GapRule`] and the input
//! [`Series`], and returns a [`Figure`]: the value, the status, and every
//! input with what was measured, estimated, filled and missing. A figure
//! never hides missing data: under [`GapRule::Strict`] any gap leaves it
//! without a value and [`Status::Incomplete`].
//!
//! Energies are summed exactly in integer µJ and divided as `f64` kWh.
//! Every input must cover the same period; the series are clipped to it.
//!
//! ```
//! use vigie_energy::{GapRule, Microjoules, Period, PueCategory, Quality, Sample, Series, Status, pue};
//!
//! const KWH: u64 = 3_600_000_000_000; // µJ
//! let hour = |start_ms, kwh, quality| Sample { start_ms, end_ms: start_ms + 3_600_000,
//!     amount: Microjoules(kwh * KWH), quality };
//! let e_dc = Series::new([hour(0, 150, Quality::Measured)])?;
//! let e_it = Series::new([hour(0, 100, Quality::Measured)])?;
//! // Two hours asked for, one measured: strictly, there is no PUE.
//! let two_hours = Period::new(0, 7_200_000)?;
//! let f = pue(two_hours, GapRule::Strict, PueCategory::ItInput, &e_dc, &e_it);
//! assert_eq!((f.value, f.status), (None, Status::Incomplete));
//! let f = pue(Period::new(0, 3_600_000)?, GapRule::Strict, PueCategory::ItInput, &e_dc, &e_it);
//! assert_eq!((f.value, f.status), (Some(1.5), Status::Measured));
//! # Ok::<(), vigie_energy::SeriesError>(())
//! ```

use crate::coverage::{GapRule, InputUsed, Period, Series, Status};
use crate::quantities::Litres;
use crate::scope2::{Instrument, InstrumentKind, MarketSource, Origin, Scope2Basis, Scope2Report};
use crate::units::Microjoules;

/// Microjoules per kilowatt-hour (3.6 MJ).
const UJ_PER_KWH: f64 = 3.6e12;
/// Grams per kilogram.
const G_PER_KG: f64 = 1e3;

/// Where E_IT is metered, per ISO/IEC 30134-2. The higher the category, the
/// closer to the IT equipment and the fewer losses are counted as IT.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PueCategory {
    /// Category 1: IT energy at the UPS output.
    UpsOutput,
    /// Category 2: IT energy at the PDU output.
    PduOutput,
    /// Category 3: IT energy at the IT equipment input.
    ItInput,
}

impl PueCategory {
    /// The category's number, 1 to 3.
    pub fn number(self) -> u8 {
        match self {
            Self::UpsOutput => 1,
            Self::PduOutput => 2,
            Self::ItInput => 3,
        }
    }
}

/// Which indicator a [`Figure`] is, with what qualifies it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Indicator {
    /// Power usage effectiveness, E_DC / E_IT.
    Pue {
        /// Where E_IT is metered.
        category: PueCategory,
    },
    /// Partial PUE of a zone or subsystem, E_zone / E_IT,zone.
    PartialPue {
        /// The zone's name.
        zone: String,
        /// Where E_IT is metered.
        category: PueCategory,
    },
    /// Renewable energy factor, E_renewable / E_DC.
    Ref,
    /// Energy reuse factor, E_reused / E_DC.
    Erf,
    /// Cooling efficiency ratio, heat removed / cooling electricity.
    Cer,
    /// Carbon usage effectiveness, kgCO2e of E_DC / E_IT.
    Cue {
        /// Location- or market-based emissions.
        basis: Scope2Basis,
    },
    /// Water usage effectiveness, litres / E_IT.
    Wue,
}

impl Indicator {
    /// The usual symbol, e.g. `"PUE"`.
    pub fn symbol(&self) -> &'static str {
        match self {
            Self::Pue { .. } => "PUE",
            Self::PartialPue { .. } => "pPUE",
            Self::Ref => "REF",
            Self::Erf => "ERF",
            Self::Cer => "CER",
            Self::Cue { .. } => "CUE",
            Self::Wue => "WUE",
        }
    }

    /// Unit of the value; `"1"` for a ratio of like quantities.
    pub fn unit(&self) -> &'static str {
        match self {
            Self::Cue { .. } => "kgCO2e/kWh",
            Self::Wue => "L/kWh",
            _ => "1",
        }
    }
}

/// An indicator over a period, with everything it rests on.
#[derive(Clone, Debug, PartialEq)]
pub struct Figure {
    /// Which indicator.
    pub indicator: Indicator,
    /// Over what period.
    pub period: Period,
    /// The gap rule applied to every timeline input.
    pub rule: GapRule,
    /// The value, or `None` when it cannot be computed (see `status`).
    pub value: Option<f64>,
    /// Measured, estimated, incomplete or undefined.
    pub status: Status,
    /// Every input, numerators first, the denominator last.
    pub inputs: Vec<InputUsed>,
    /// Plain remarks on the value, e.g. a cap applied.
    pub notes: Vec<&'static str>,
}

impl Figure {
    /// Whether the figure has a value covering the whole period.
    pub fn is_complete(&self) -> bool {
        self.status.is_complete()
    }

    /// The input named `name`.
    pub fn input(&self, name: &str) -> Option<&InputUsed> {
        self.inputs.iter().find(|i| i.name == name)
    }
}

/// Builds a figure: numerators are the inputs before the last, summed; the
/// denominator is the last. `post` may adjust the ratio and add a note.
fn ratio(
    indicator: Indicator,
    period: Period,
    rule: GapRule,
    inputs: Vec<InputUsed>,
    estimated_factors: bool,
    mut notes: Vec<&'static str>,
    post: impl FnOnce(f64, f64, &mut Vec<&'static str>) -> f64,
) -> Figure {
    let totals: Option<Vec<f64>> = inputs.iter().map(|i| i.total).collect();
    let (value, status) = match totals.as_deref() {
        Some([num @ .., den]) if *den > 0.0 => {
            let num: f64 = num.iter().sum();
            let measured = !estimated_factors && inputs.iter().all(InputUsed::is_measured);
            let status = if measured {
                Status::Measured
            } else {
                Status::Estimated
            };
            (Some(post(num, *den, &mut notes)), status)
        }
        Some(_) => (None, Status::Undefined),
        None => (None, Status::Incomplete),
    };
    Figure {
        indicator,
        period,
        rule,
        value,
        status,
        inputs,
        notes,
    }
}

fn plain(num: f64, den: f64, _: &mut Vec<&'static str>) -> f64 {
    num / den
}

/// `PUE = E_DC / E_IT` (ISO/IEC 30134-2), with E_IT metered at `category`.
///
/// E_DC is all energy entering the data-centre boundary; E_IT the IT
/// equipment's. Heat reuse is never subtracted (use
/// [`energy_reuse_factor`]). A value below 1 is returned as is, with a note:
/// it means the meters do not match the boundaries.
pub fn pue(
    period: Period,
    rule: GapRule,
    category: PueCategory,
    e_dc: &Series<Microjoules>,
    e_it: &Series<Microjoules>,
) -> Figure {
    let inputs = vec![
        e_dc.input("E_DC", period, rule),
        e_it.input("E_IT", period, rule),
    ];
    ratio(
        Indicator::Pue { category },
        period,
        rule,
        inputs,
        false,
        Vec::new(),
        below_one_note,
    )
}

fn below_one_note(num: f64, den: f64, notes: &mut Vec<&'static str>) -> f64 {
    let v = num / den;
    if v < 1.0 {
        notes.push("below 1: the total meter reads less than the IT meter; check meter boundaries");
    }
    v
}

/// `pPUE = E_zone / E_IT,zone` for a zone or subsystem (ISO/IEC 30134-2):
/// all energy of the zone (IT plus the infrastructure serving it) over its
/// IT energy.
pub fn partial_pue(
    period: Period,
    rule: GapRule,
    category: PueCategory,
    zone: &str,
    e_zone: &Series<Microjoules>,
    e_it_zone: &Series<Microjoules>,
) -> Figure {
    let inputs = vec![
        e_zone.input("E_zone", period, rule),
        e_it_zone.input("E_IT,zone", period, rule),
    ];
    ratio(
        Indicator::PartialPue {
            zone: zone.to_owned(),
            category,
        },
        period,
        rule,
        inputs,
        false,
        Vec::new(),
        below_one_note,
    )
}

/// `REF = E_renewable / E_DC` (ISO/IEC 30134-3, EN 50600-4-3).
///
/// E_renewable is on-site renewable generation used by the data centre
/// (`on_site`, metered; `None` when there is none) plus the volumes of
/// contractual instruments of [`Origin::Renewable`] inside the period:
/// certificates (guarantees of origin) and PPAs, reported as separate
/// inputs as the EED asks. Never the grid's average renewable share.
/// Instruments of kind [`InstrumentKind::OnSite`] are ignored here (on-site
/// generation comes from the metered series), as are carbon-free but
/// non-renewable origins. Renewable energy beyond E_DC is not used energy:
/// the value is capped at 1, with a note.
pub fn renewable_energy_factor(
    period: Period,
    rule: GapRule,
    e_dc: &Series<Microjoules>,
    on_site: Option<&Series<Microjoules>>,
    instruments: &[Instrument],
) -> Figure {
    let declared = |kind: InstrumentKind| -> f64 {
        instruments
            .iter()
            .filter(|i| i.kind == kind && i.origin == Origin::Renewable)
            .map(|i| i.volume_within(period) as f64)
            .sum::<f64>()
            / UJ_PER_KWH
    };
    let mut inputs = Vec::new();
    if let Some(s) = on_site {
        inputs.push(s.input("E_renewable,on-site", period, rule));
    }
    inputs.push(InputUsed::declared(
        "E_renewable,certificates",
        "kWh",
        declared(InstrumentKind::Certificate),
    ));
    inputs.push(InputUsed::declared(
        "E_renewable,PPA",
        "kWh",
        declared(InstrumentKind::Ppa),
    ));
    inputs.push(e_dc.input("E_DC", period, rule));
    ratio(
        Indicator::Ref,
        period,
        rule,
        inputs,
        false,
        Vec::new(),
        |num, den, notes| {
            if num > den {
                notes.push(
                    "renewable supply exceeds E_DC; the excess is not used energy: capped at 1",
                );
                1.0
            } else {
                num / den
            }
        },
    )
}

/// `ERF = E_reused / E_DC` (ISO/IEC 30134-6, EN 50600-4-6): heat handed
/// over to a user outside the data-centre boundary, over all energy
/// entering it. Reported beside PUE, never subtracted from it.
pub fn energy_reuse_factor(
    period: Period,
    rule: GapRule,
    e_reused: &Series<Microjoules>,
    e_dc: &Series<Microjoules>,
) -> Figure {
    let inputs = vec![
        e_reused.input("E_reused", period, rule),
        e_dc.input("E_DC", period, rule),
    ];
    ratio(
        Indicator::Erf,
        period,
        rule,
        inputs,
        false,
        Vec::new(),
        plain,
    )
}

/// `CER = heat removed / cooling electricity` (ISO/IEC 30134-7): thermal
/// kWh the cooling system removes per kWh of electricity it uses.
pub fn cooling_efficiency_ratio(
    period: Period,
    rule: GapRule,
    heat_removed: &Series<Microjoules>,
    cooling_electricity: &Series<Microjoules>,
) -> Figure {
    let inputs = vec![
        heat_removed.input("heat removed", period, rule),
        cooling_electricity.input("E_cooling", period, rule),
    ];
    ratio(
        Indicator::Cer,
        period,
        rule,
        inputs,
        false,
        Vec::new(),
        plain,
    )
}

/// `CUE = kgCO2e of all data-centre energy / E_IT` (ISO/IEC 30134-8), in
/// kgCO2e/kWh, over the period of `emissions`.
///
/// `emissions` must be [`crate::scope2()`] of the E_DC series (all energy
/// entering the boundary); `basis` picks location- or market-based. Its
/// consumption coverage is the emissions input's coverage, so gaps follow
/// the same `rule` as E_IT. The figure is at best estimated when an
/// estimated or fallback grid factor was used.
pub fn carbon_usage_effectiveness(
    rule: GapRule,
    emissions: &Scope2Report,
    basis: Scope2Basis,
    e_it: &Series<Microjoules>,
) -> Figure {
    let period = emissions.period;
    // Split each hour's grams between its measured and estimated energy.
    let (mut measured, mut estimated) = (0.0, 0.0);
    for h in &emissions.hours {
        let total = h.consumption().0;
        if total == 0 {
            continue;
        }
        let g = match basis {
            Scope2Basis::LocationBased => h.location.0,
            Scope2Basis::MarketBased => h.market.0,
        };
        // From the integer energies: an hour with no estimated energy
        // gives exactly no estimated grams (a float split would leave
        // round-off, 1e-17 g, and mark the figure estimated), and one with
        // no measured energy exactly no measured grams.
        let (m, e) = match (h.measured.0, h.estimated.0) {
            (_, 0) => (g, 0.0),
            (0, _) => (0.0, g),
            (mu, _) => {
                let m = g * mu as f64 / total as f64;
                (m, g - m)
            }
        };
        measured += m;
        estimated += e;
    }
    let inputs = vec![
        InputUsed::found(
            "emissions",
            "kgCO2e",
            measured / G_PER_KG,
            estimated / G_PER_KG,
            emissions.coverage,
            rule,
        ),
        e_it.input("E_IT", period, rule),
    ];
    let estimated_factors = emissions.uses_estimated_factor(basis);
    let mut notes = Vec::new();
    if estimated_factors {
        notes.push("some grid factors were estimated or a fallback");
    }
    let grid_last_resort = basis == Scope2Basis::MarketBased
        && emissions.hours.iter().any(|h| {
            h.tranches
                .iter()
                .any(|t| t.source == MarketSource::GridAverage)
        });
    if grid_last_resort {
        notes.push("no residual mix given: grid average used as the last resort");
    }
    ratio(
        Indicator::Cue { basis },
        period,
        rule,
        inputs,
        estimated_factors,
        notes,
        plain,
    )
}

/// `WUE = water / E_IT` (ISO/IEC 30134-9), in litres per kWh of IT energy.
pub fn water_usage_effectiveness(
    period: Period,
    rule: GapRule,
    water: &Series<Litres>,
    e_it: &Series<Microjoules>,
) -> Figure {
    let inputs = vec![
        water.input("water", period, rule),
        e_it.input("E_IT", period, rule),
    ];
    ratio(
        Indicator::Wue,
        period,
        rule,
        inputs,
        false,
        Vec::new(),
        plain,
    )
}
