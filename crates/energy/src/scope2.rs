//! GHG Protocol Scope 2, hour by hour: location-based, market-based and the
//! hourly carbon-free-energy (CFE) score.
//!
//! [`scope2()`] takes one consumption [`Series`] (a host, a rack, a room or
//! the site: the function is the same), hourly grid-average factors and the
//! market instruments, and returns every hour with the factor and the
//! instruments that covered it, then the sums.
//!
//! - **Location-based**: `Σ_h E_h × grid_average_h`. Only
//!   [`AverageFactor`]s are accepted; a [`MarginalFactor`] is a different
//!   type that no function here takes, because marginal factors belong to
//!   scheduling signals, never to inventories.
//! - **Market-based**, in the GHG Protocol Scope 2 Guidance order, each
//!   hour's consumption is covered by:
//!   1. energy attribute certificates (guarantees of origin, RECs), PPAs
//!      and on-site generation ([`Instrument`]s) at their own factor (0
//!      for carbon-free origins unless one is given): first instruments
//!      with hourly volumes, then those with a volume for the whole period,
//!      each in the order given;
//!   2. a supplier-specific factor ([`SupplierFactor`]) for its share of
//!      what remains;
//!   3. the residual mix factor for the rest;
//!   4. the hour's grid-average factor, only when no residual mix is given
//!      (the documented last resort, flagged [`MarketSource::GridAverage`]).
//! - **Hourly CFE score** (DOMAIN.md §3, the hourly-matching revision): per
//!   hour `matched = min(consumption, contracted carbon-free supply)`;
//!   `CFE = Σ matched / Σ consumption`. Only hourly volumes count: a volume
//!   declared for a whole period says nothing about which hour it was
//!   produced in.
//!
//! # Volumes for a whole period
//!
//! A certificate volume declared for the period ([`Volume::Period`]) is
//! allocated to hours pro rata to the consumption still uncovered after
//! the hourly instruments and earlier period instruments, in integer µJ
//! with cumulative flooring (as [`crate::split_interval`]), so that the
//! allocations sum to the volume exactly and never exceed an hour's
//! remaining consumption. Volume beyond the period's remaining consumption
//! is reported as surplus, never used. Hourly volumes beyond an hour's
//! remaining consumption are surplus too (an hourly certificate cannot move
//! to another hour).
//!
//! # Sub-scopes
//!
//! Volumes are the scope's own: when computing a host or a room, pass the
//! instruments apportioned to it. Location-based results need no such care.

use std::collections::BTreeMap;

use crate::coverage::{Coverage, Period, Quality, Series, SeriesError, span};
use crate::split::HOUR_MS;
use crate::units::{GramsCo2e, GramsPerKwh, Microjoules, MicrojoulesSum, emissions};

/// Most hours one [`scope2()`] call accounts for (about 11.4 years): bounds
/// the memory a requested period can make it allocate.
pub const MAX_HOURS: u64 = 100_000;

/// Inputs [`scope2()`] cannot use. Not retryable with the same inputs.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum Scope2Error {
    /// Hourly accounting needs a period of whole clock hours.
    #[error("period [{from_ms}, {to_ms}) is not aligned on whole hours")]
    PeriodNotHourAligned {
        /// Start, Unix ms.
        from_ms: i64,
        /// End, Unix ms.
        to_ms: i64,
    },
    /// The period has more than [`MAX_HOURS`] hours.
    #[error("period has more than {MAX_HOURS} hours")]
    TooManyHours,
    /// An hourly value is keyed by a time that does not start an hour.
    #[error("hourly value for {what} at {hour_ms} ms does not start an hour")]
    NotHourAligned {
        /// Which input.
        what: String,
        /// The key, Unix ms.
        hour_ms: i64,
    },
    /// A factor is negative, NaN or infinite.
    #[error("factor for {what} is not a finite non-negative g/kWh: {value}")]
    BadFactor {
        /// Which input.
        what: String,
        /// The value given.
        value: f64,
    },
    /// A supplier share outside `[0, 1]`.
    #[error("supplier share must be within [0, 1], got {0}")]
    BadShare(f64),
    /// An instrument of fossil or unknown origin with no factor.
    #[error("instrument {0} is not carbon-free and has no factor")]
    MissingFactor(String),
    /// An hour with consumption has no grid-average factor and no fallback.
    #[error("no grid-average factor for the hour starting {hour_ms} ms")]
    NoGridFactor {
        /// Start of the hour, Unix ms.
        hour_ms: i64,
    },
    /// A total does not fit in `u64` µJ (about 5.1 TWh).
    #[error("energy total would overflow")]
    Overflow,
    /// The period is invalid.
    #[error(transparent)]
    Series(#[from] SeriesError),
}

/// A grid-average carbon intensity: the only kind of grid factor Scope 2
/// inventories may use.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AverageFactor {
    /// Average intensity of the grid mix.
    pub intensity: GramsPerKwh,
    /// Whether the source marked the value as estimated (e.g. a forecast or
    /// a gap filled by the provider).
    pub estimated: bool,
}

/// A marginal carbon intensity (e.g. WattTime MOER). Deliberately a
/// different type from [`AverageFactor`]: nothing in this module accepts
/// it, so it cannot end up in an inventory by mistake. It is for
/// scheduling signals only.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MarginalFactor {
    /// Marginal intensity.
    pub intensity: GramsPerKwh,
}

/// Where an hour's grid-average factor came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GridFactorSource {
    /// The hourly value for that hour.
    Hourly,
    /// The fallback (e.g. the annual average), used where the hour had none.
    Fallback,
}

/// Grid-average factors by hour, with an optional fallback for hours
/// without one.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct GridFactors {
    hourly: BTreeMap<i64, AverageFactor>,
    fallback: Option<AverageFactor>,
}

impl GridFactors {
    /// Factors keyed by the start of their hour (Unix ms, a multiple of
    /// [`HOUR_MS`]); `fallback` is used for hours with no value, and each
    /// use is visible in the results' provenance.
    ///
    /// # Errors
    ///
    /// [`Scope2Error::NotHourAligned`] or [`Scope2Error::BadFactor`].
    pub fn new(
        hourly: impl IntoIterator<Item = (i64, AverageFactor)>,
        fallback: Option<AverageFactor>,
    ) -> Result<Self, Scope2Error> {
        let mut map = BTreeMap::new();
        for (hour_ms, f) in hourly {
            check_hour("grid factor", hour_ms)?;
            check_factor("grid factor", f.intensity)?;
            map.insert(hour_ms, f);
        }
        if let Some(f) = fallback {
            check_factor("grid fallback", f.intensity)?;
        }
        Ok(Self {
            hourly: map,
            fallback,
        })
    }

    /// The factor for the hour starting at `hour_ms`, and where it came from.
    pub fn get(&self, hour_ms: i64) -> Option<(AverageFactor, GridFactorSource)> {
        match self.hourly.get(&hour_ms) {
            Some(f) => Some((*f, GridFactorSource::Hourly)),
            None => self.fallback.map(|f| (f, GridFactorSource::Fallback)),
        }
    }
}

fn check_hour(what: &str, hour_ms: i64) -> Result<(), Scope2Error> {
    if hour_ms.rem_euclid(HOUR_MS) == 0 {
        Ok(())
    } else {
        Err(Scope2Error::NotHourAligned {
            what: what.to_owned(),
            hour_ms,
        })
    }
}

fn check_factor(what: &str, f: GramsPerKwh) -> Result<(), Scope2Error> {
    if f.0.is_finite() && f.0 >= 0.0 {
        Ok(())
    } else {
        Err(Scope2Error::BadFactor {
            what: what.to_owned(),
            value: f.0,
        })
    }
}

/// What kind of market instrument.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum InstrumentKind {
    /// Energy attribute certificate: guarantee of origin, REC, I-REC.
    Certificate,
    /// Power purchase agreement with its attributes (physical or virtual).
    Ppa,
    /// On-site generation consumed behind the meter.
    OnSite,
}

/// The generation behind an instrument.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Origin {
    /// Wind, solar, hydro, ...: carbon-free and counted by REF.
    Renewable,
    /// Carbon-free but not renewable (nuclear): counted by CFE, not by REF.
    CarbonFreeNonRenewable,
    /// Fossil or unspecified: needs an explicit factor.
    Other,
}

impl Origin {
    /// Whether the origin is carbon-free (counts for the CFE score).
    pub fn is_carbon_free(self) -> bool {
        !matches!(self, Self::Other)
    }
}

/// The volume an instrument supplies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Volume {
    /// Per hour, keyed by the hour's start (Unix ms, multiple of
    /// [`HOUR_MS`]). Hours outside the period are ignored.
    Hourly(BTreeMap<i64, Microjoules>),
    /// One volume declared for the whole period, allocated to hours pro
    /// rata to uncovered consumption (see the module docs).
    Period(MicrojoulesSum),
}

/// A market instrument: certificates, a PPA or on-site generation.
#[derive(Clone, Debug, PartialEq)]
pub struct Instrument {
    /// A name for provenance, e.g. `"GO NO-hydro 2025 lot 17"`.
    pub name: String,
    /// Certificate, PPA or on-site.
    pub kind: InstrumentKind,
    /// Generation behind it.
    pub origin: Origin,
    /// Hourly or for the period.
    pub volume: Volume,
    /// Its emission factor; `None` means 0 for a carbon-free origin and is
    /// an error for [`Origin::Other`].
    pub factor: Option<GramsPerKwh>,
}

impl Instrument {
    /// The factor used for this instrument.
    ///
    /// # Errors
    ///
    /// [`Scope2Error::MissingFactor`] or [`Scope2Error::BadFactor`].
    pub fn effective_factor(&self) -> Result<GramsPerKwh, Scope2Error> {
        match (self.factor, self.origin.is_carbon_free()) {
            (Some(f), _) => {
                check_factor(&self.name, f)?;
                Ok(f)
            }
            (None, true) => Ok(GramsPerKwh(0.0)),
            (None, false) => Err(Scope2Error::MissingFactor(self.name.clone())),
        }
    }

    /// The volume inside `period`, µJ (u128: hourly sums can pass u64).
    pub(crate) fn volume_within(&self, period: Period) -> u128 {
        match &self.volume {
            Volume::Period(v) => v.0,
            Volume::Hourly(map) => map
                .range(period.from_ms()..period.to_ms())
                .map(|(_, v)| u128::from(v.0))
                .sum(),
        }
    }
}

/// A supplier-specific (utility-disclosed) emission factor.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SupplierFactor {
    /// The supplier's disclosed factor.
    pub factor: GramsPerKwh,
    /// Share, in `[0, 1]`, of each hour's consumption left uncovered by
    /// instruments that the supplier's contract covers (1: all of it).
    pub share: f64,
}

/// Everything market-based accounting uses besides the grid factors.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct MarketInputs {
    /// Certificates, PPAs, on-site generation.
    pub instruments: Vec<Instrument>,
    /// Supplier-specific factor, if the supplier discloses one.
    pub supplier: Option<SupplierFactor>,
    /// Residual mix factor (e.g. AIB's for the country and year). Without
    /// it, the grid average is used as the last resort.
    pub residual_mix: Option<GramsPerKwh>,
}

/// What covered part of an hour in market-based accounting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MarketSource {
    /// The instrument at this index of [`MarketInputs::instruments`].
    Instrument(usize),
    /// The supplier-specific factor.
    Supplier,
    /// The residual mix.
    ResidualMix,
    /// The grid average, because no residual mix was given.
    GridAverage,
}

/// Part of an hour's consumption and the factor applied to it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tranche {
    /// What covered it.
    pub source: MarketSource,
    /// How much.
    pub energy: Microjoules,
    /// At what factor.
    pub factor: GramsPerKwh,
}

/// One hour of results.
#[derive(Clone, Debug, PartialEq)]
pub struct Scope2Hour {
    /// Start of the hour, Unix ms.
    pub start_ms: i64,
    /// Time of the hour covered by the consumption series.
    pub coverage: Coverage,
    /// Consumption from measured samples.
    pub measured: Microjoules,
    /// Consumption from estimated samples.
    pub estimated: Microjoules,
    /// The grid-average factor and its source; `None` only for an hour
    /// without consumption and without a factor.
    pub grid: Option<(AverageFactor, GridFactorSource)>,
    /// Location-based emissions.
    pub location: GramsCo2e,
    /// Market-based emissions: `Σ tranche energy × factor`.
    pub market: GramsCo2e,
    /// Market-based provenance, in hierarchy order; the energies sum to the
    /// hour's consumption.
    pub tranches: Vec<Tranche>,
    /// Contracted carbon-free supply with an hourly volume for this hour.
    pub cfe_supply: Microjoules,
    /// `min(consumption, cfe_supply)`.
    pub cfe_matched: Microjoules,
}

impl Scope2Hour {
    /// Consumption in the hour, measured and estimated.
    pub fn consumption(&self) -> Microjoules {
        self.measured + self.estimated
    }
}

/// How an instrument was used over the period.
#[derive(Clone, Debug, PartialEq)]
pub struct InstrumentUse {
    /// Its name.
    pub name: String,
    /// Kind.
    pub kind: InstrumentKind,
    /// Origin.
    pub origin: Origin,
    /// Factor applied.
    pub factor: GramsPerKwh,
    /// Volume inside the period.
    pub offered: MicrojoulesSum,
    /// Volume that covered consumption.
    pub applied: MicrojoulesSum,
    /// `offered − applied`: not claimable.
    pub surplus: MicrojoulesSum,
}

/// The hourly carbon-free-energy score.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CfeScore {
    /// Σ consumption over the hours with data.
    pub consumption: MicrojoulesSum,
    /// Σ hourly contracted carbon-free supply in the period.
    pub supply: MicrojoulesSum,
    /// Σ min(consumption_h, supply_h).
    pub matched: MicrojoulesSum,
    /// `matched / consumption`, in `[0, 1]`; `None` without consumption.
    pub score: Option<f64>,
}

/// Location- or market-based.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scope2Basis {
    /// Consumption × grid-average factor.
    LocationBased,
    /// Instruments, supplier, residual mix, then grid average.
    MarketBased,
}

/// Scope 2 over a period, hour by hour.
#[derive(Clone, Debug, PartialEq)]
pub struct Scope2Report {
    /// The period (whole hours).
    pub period: Period,
    /// Time covered by the consumption series. Emissions cover only this:
    /// nothing is extrapolated here.
    pub coverage: Coverage,
    /// Consumption from measured samples.
    pub measured: MicrojoulesSum,
    /// Consumption from estimated samples.
    pub estimated: MicrojoulesSum,
    /// Σ location-based emissions.
    pub location: GramsCo2e,
    /// Σ market-based emissions.
    pub market: GramsCo2e,
    /// Every hour of the period, in order.
    pub hours: Vec<Scope2Hour>,
    /// Per instrument, in the order given.
    pub instruments: Vec<InstrumentUse>,
    /// Hourly CFE score.
    pub cfe: CfeScore,
}

impl Scope2Report {
    /// Consumption covered, measured and estimated.
    pub fn consumption(&self) -> MicrojoulesSum {
        self.measured + self.estimated
    }

    /// Total emissions on `basis`.
    pub fn emissions(&self, basis: Scope2Basis) -> GramsCo2e {
        match basis {
            Scope2Basis::LocationBased => self.location,
            Scope2Basis::MarketBased => self.market,
        }
    }

    /// Whether the consumption series covers the whole period.
    pub fn is_complete(&self) -> bool {
        self.coverage.is_complete()
    }

    /// Whether any emissions on `basis` rest on an estimated or fallback
    /// grid factor.
    pub fn uses_estimated_factor(&self, basis: Scope2Basis) -> bool {
        self.hours.iter().any(|h| {
            let relies_on_grid = match basis {
                Scope2Basis::LocationBased => h.consumption() > Microjoules::ZERO,
                Scope2Basis::MarketBased => h
                    .tranches
                    .iter()
                    .any(|t| t.source == MarketSource::GridAverage && t.energy > Microjoules::ZERO),
            };
            relies_on_grid
                && h.grid
                    .is_some_and(|(f, src)| f.estimated || src == GridFactorSource::Fallback)
        })
    }
}

/// `a × b / c` rounded down, exact for any `u128` operands whose result
/// fits (here `b <= c`): the product is taken on 256 bits. A year of a
/// 10 MW site is 3e20 µJ, and the square of that does not fit in `u128`.
fn mul_div(a: u128, b: u128, c: u128) -> u128 {
    const LOW: u128 = u64::MAX as u128;
    let (a1, a0) = (a >> 64, a & LOW);
    let (b1, b0) = (b >> 64, b & LOW);
    let (p00, p01, p10, p11) = (a0 * b0, a0 * b1, a1 * b0, a1 * b1);
    let mid = (p00 >> 64) + (p01 & LOW) + (p10 & LOW);
    let lo = (p00 & LOW) | (mid << 64);
    let hi = p11 + (p01 >> 64) + (p10 >> 64) + (mid >> 64);
    if hi == 0 {
        return lo / c;
    }
    debug_assert!(hi < c, "mul_div: the quotient does not fit in u128");
    // Long division of hi:lo by c, one bit at a time (hi < c since the
    // quotient fits).
    let (mut rem, mut q) = (hi, 0u128);
    for i in (0..128).rev() {
        let carry = rem >> 127;
        rem = (rem << 1) | ((lo >> i) & 1);
        q <<= 1;
        if carry == 1 || rem >= c {
            rem = rem.wrapping_sub(c);
            q |= 1;
        }
    }
    q
}

/// One hour's amount: past u64 µJ (5.1 GWh in an hour) is not a real
/// supply.
fn hour_uj(v: u128) -> Result<Microjoules, Scope2Error> {
    u64::try_from(v)
        .map(Microjoules)
        .map_err(|_| Scope2Error::Overflow)
}

/// Location-based and market-based Scope 2 and the hourly CFE score of
/// `consumption` over `period` (see the module docs for the rules).
///
/// Hours without consumption data are reported with their coverage and
/// count for nothing; [`Scope2Report::coverage`] says how much is missing.
///
/// # Errors
///
/// [`Scope2Error::PeriodNotHourAligned`], [`Scope2Error::TooManyHours`],
/// invalid factors, shares or hourly keys, [`Scope2Error::MissingFactor`],
/// [`Scope2Error::NoGridFactor`] for an hour with consumption and no factor,
/// [`Scope2Error::Overflow`].
pub fn scope2(
    period: Period,
    consumption: &Series<Microjoules>,
    grid: &GridFactors,
    market: &MarketInputs,
) -> Result<Scope2Report, Scope2Error> {
    let (from, to) = (period.from_ms(), period.to_ms());
    if from.rem_euclid(HOUR_MS) != 0 || to.rem_euclid(HOUR_MS) != 0 {
        return Err(Scope2Error::PeriodNotHourAligned {
            from_ms: from,
            to_ms: to,
        });
    }
    let n_hours = period.duration_ms() / HOUR_MS as u64;
    if n_hours > MAX_HOURS {
        return Err(Scope2Error::TooManyHours);
    }
    // Validate every input before computing anything.
    let mut factors = Vec::with_capacity(market.instruments.len());
    for ins in &market.instruments {
        factors.push(ins.effective_factor()?);
        if let Volume::Hourly(map) = &ins.volume {
            for &h in map.keys() {
                check_hour(&ins.name, h)?;
            }
        }
    }
    if let Some(s) = market.supplier {
        check_factor("supplier", s.factor)?;
        if !(0.0..=1.0).contains(&s.share) {
            return Err(Scope2Error::BadShare(s.share));
        }
    }
    if let Some(r) = market.residual_mix {
        check_factor("residual mix", r)?;
    }

    let mut hours = Vec::with_capacity(n_hours as usize);
    for i in 0..n_hours as i64 {
        let start = from + i * HOUR_MS;
        let end = start + HOUR_MS;
        let mut cov = Coverage {
            period_ms: HOUR_MS as u64,
            measured_ms: 0,
            estimated_ms: 0,
        };
        let (mut measured, mut estimated) = (Microjoules::ZERO, Microjoules::ZERO);
        for s in consumption.within(start, end) {
            let ms = span(s.start_ms.max(start), s.end_ms.min(end));
            let part = Microjoules(s.raw_within(start, end));
            let (t, e) = match s.quality {
                Quality::Measured => (&mut cov.measured_ms, &mut measured),
                Quality::Estimated => (&mut cov.estimated_ms, &mut estimated),
            };
            *t += ms;
            *e = e.checked_add(part).ok_or(Scope2Error::Overflow)?;
        }
        let total = measured
            .checked_add(estimated)
            .ok_or(Scope2Error::Overflow)?;
        let g = grid.get(start);
        if g.is_none() && total > Microjoules::ZERO {
            return Err(Scope2Error::NoGridFactor { hour_ms: start });
        }
        let location = g.map_or(GramsCo2e(0.0), |(f, _)| emissions(total, f.intensity));
        hours.push(Scope2Hour {
            start_ms: start,
            coverage: cov,
            measured,
            estimated,
            grid: g,
            location,
            market: GramsCo2e(0.0),
            tranches: Vec::new(),
            cfe_supply: Microjoules::ZERO,
            cfe_matched: Microjoules::ZERO,
        });
    }

    let mut remaining: Vec<u64> = hours.iter().map(|h| h.consumption().0).collect();
    let mut applied = vec![0u128; market.instruments.len()];
    let mut cfe_supply = vec![0u128; hours.len()];

    // 1a. Hourly instruments, in the order given.
    for (k, ins) in market.instruments.iter().enumerate() {
        let Volume::Hourly(map) = &ins.volume else {
            continue;
        };
        for (&h, &v) in map.range(from..to) {
            // Inside the period by the range above.
            let i = ((h - from) / HOUR_MS) as usize;
            if ins.origin.is_carbon_free() {
                cfe_supply[i] += u128::from(v.0);
            }
            let take = remaining[i].min(v.0);
            if take > 0 {
                remaining[i] -= take;
                applied[k] += u128::from(take);
                hours[i].tranches.push(Tranche {
                    source: MarketSource::Instrument(k),
                    energy: Microjoules(take),
                    factor: factors[k],
                });
            }
        }
    }
    // 1b. Period instruments, pro rata to what is still uncovered.
    for (k, ins) in market.instruments.iter().enumerate() {
        let Volume::Period(v) = ins.volume else {
            continue;
        };
        let left: u128 = remaining.iter().map(|&r| u128::from(r)).sum();
        let used = v.0.min(left);
        if used == 0 {
            continue;
        }
        let (mut cum, mut allotted) = (0u128, 0u128);
        for (i, r) in remaining.iter_mut().enumerate() {
            cum += u128::from(*r);
            let upto = mul_div(used, cum, left);
            // At most ceil(used·r/left) <= r, since used <= left.
            let share = (upto - allotted) as u64;
            allotted = upto;
            if share > 0 {
                *r -= share;
                applied[k] += u128::from(share);
                hours[i].tranches.push(Tranche {
                    source: MarketSource::Instrument(k),
                    energy: Microjoules(share),
                    factor: factors[k],
                });
            }
        }
    }
    // 2-4. Supplier share, then residual mix or, as last resort, grid average.
    for (i, hour) in hours.iter_mut().enumerate() {
        if let Some(s) = market.supplier {
            let take = ((remaining[i] as f64 * s.share).round() as u64).min(remaining[i]);
            if take > 0 {
                remaining[i] -= take;
                hour.tranches.push(Tranche {
                    source: MarketSource::Supplier,
                    energy: Microjoules(take),
                    factor: s.factor,
                });
            }
        }
        if remaining[i] > 0 {
            let (source, factor) = match (market.residual_mix, hour.grid) {
                (Some(r), _) => (MarketSource::ResidualMix, r),
                (None, Some((g, _))) => (MarketSource::GridAverage, g.intensity),
                // Unreachable: an hour with consumption has a grid factor.
                (None, None) => {
                    return Err(Scope2Error::NoGridFactor {
                        hour_ms: hour.start_ms,
                    });
                }
            };
            hour.tranches.push(Tranche {
                source,
                energy: Microjoules(remaining[i]),
                factor,
            });
        }
        hour.market = GramsCo2e(
            hour.tranches
                .iter()
                .map(|t| emissions(t.energy, t.factor).0)
                .sum(),
        );
        hour.cfe_supply = hour_uj(cfe_supply[i])?;
        hour.cfe_matched = hour.consumption().min(hour.cfe_supply);
    }

    let sum = |f: fn(&Scope2Hour) -> u64| -> MicrojoulesSum {
        MicrojoulesSum(hours.iter().map(|h| u128::from(f(h))).sum())
    };
    let measured = sum(|h| h.measured.0);
    let estimated = sum(|h| h.estimated.0);
    let total = measured + estimated;
    let matched = sum(|h| h.cfe_matched.0);
    let supply = sum(|h| h.cfe_supply.0);
    let cfe = CfeScore {
        consumption: total,
        supply,
        matched,
        score: (total > MicrojoulesSum::ZERO).then(|| matched.0 as f64 / total.0 as f64),
    };
    let coverage = Coverage {
        period_ms: period.duration_ms(),
        measured_ms: hours.iter().map(|h| h.coverage.measured_ms).sum(),
        estimated_ms: hours.iter().map(|h| h.coverage.estimated_ms).sum(),
    };
    let mut instruments = Vec::with_capacity(market.instruments.len());
    for (k, ins) in market.instruments.iter().enumerate() {
        let offered = ins.volume_within(period);
        instruments.push(InstrumentUse {
            name: ins.name.clone(),
            kind: ins.kind,
            origin: ins.origin,
            factor: factors[k],
            offered: MicrojoulesSum(offered),
            applied: MicrojoulesSum(applied[k]),
            surplus: MicrojoulesSum(offered - applied[k]),
        });
    }
    Ok(Scope2Report {
        period,
        coverage,
        measured,
        estimated,
        location: GramsCo2e(hours.iter().map(|h| h.location.0).sum()),
        market: GramsCo2e(hours.iter().map(|h| h.market.0).sum()),
        hours,
        instruments,
        cfe,
    })
}

#[cfg(test)]
mod tests {
    use super::mul_div;

    #[test]
    fn mul_div_is_exact_past_u128_products() {
        assert_eq!(mul_div(6, 7, 4), 10);
        assert_eq!(mul_div(u128::MAX, u128::MAX, u128::MAX), u128::MAX);
        assert_eq!(mul_div(u128::MAX, 3, 4), u128::MAX / 4 * 3 + 2);
        let (a, b) = (
            315_360_000_000_000_000_000u128,
            180_000_000_000_000_000_000u128,
        );
        assert_eq!(mul_div(a, b, a), b);
        assert_eq!(mul_div(b, a, a), b);
        assert_eq!(mul_div(a + 1, b, a), b);
        assert_eq!(mul_div(1 << 100, 1 << 100, 1 << 90), 1 << 110);
    }
}
