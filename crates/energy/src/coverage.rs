//! Series of metered amounts over time, and how much of a period they cover.
//!
//! Every facility figure is a ratio of totals over one period. Before
//! dividing anything, each input must say how much of the period it has
//! data for: measured, estimated (a model, or a meter flagged as such) or
//! missing. A [`Series`] holds one quantity's timeline (E_DC, E_IT, water,
//! ...); [`Series::coverage`] gives the time split over a [`Period`] and
//! [`Series::input`] the totals used by a figure under a [`GapRule`].
//!
//! Amounts stay integers ([`Microjoules`], [`Litres`]) and are summed
//! exactly; they become `f64` only in the reported totals.

use std::fmt;

use crate::quantities::Litres;
use crate::units::Microjoules;

/// Microjoules per kilowatt-hour (3.6 MJ).
const UJ_PER_KWH: f64 = 3.6e12;

/// A series or period that cannot be used. Not retryable with the same data.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum SeriesError {
    /// A period must end after it starts.
    #[error("period [{from_ms}, {to_ms}) is empty or reversed")]
    EmptyPeriod {
        /// Start, Unix ms.
        from_ms: i64,
        /// End, Unix ms.
        to_ms: i64,
    },
    /// A sample must end after it starts: a zero-length sample has no rate
    /// and covers no time.
    #[error("sample [{start_ms}, {end_ms}) is empty or reversed")]
    EmptySample {
        /// Start, Unix ms.
        start_ms: i64,
        /// End, Unix ms.
        end_ms: i64,
    },
    /// Two samples overlap: their amounts would be counted twice.
    #[error("samples overlap: one ends at {end_ms} ms, the next starts at {next_start_ms} ms")]
    Overlap {
        /// End of the earlier sample, Unix ms.
        end_ms: i64,
        /// Start of the later sample, Unix ms.
        next_start_ms: i64,
    },
}

/// A half-open reporting period `[from, to)` in Unix milliseconds, normally
/// a calendar year. Never empty.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Period {
    from_ms: i64,
    to_ms: i64,
}

impl Period {
    /// The period `[from_ms, to_ms)`.
    ///
    /// # Errors
    ///
    /// [`SeriesError::EmptyPeriod`] unless `from_ms < to_ms`.
    pub fn new(from_ms: i64, to_ms: i64) -> Result<Self, SeriesError> {
        if from_ms < to_ms {
            Ok(Self { from_ms, to_ms })
        } else {
            Err(SeriesError::EmptyPeriod { from_ms, to_ms })
        }
    }

    /// Inclusive start, Unix ms.
    pub fn from_ms(self) -> i64 {
        self.from_ms
    }

    /// Exclusive end, Unix ms.
    pub fn to_ms(self) -> i64 {
        self.to_ms
    }

    /// Length in milliseconds (positive).
    pub fn duration_ms(self) -> u64 {
        span(self.from_ms, self.to_ms)
    }
}

/// `b - a` for `a <= b`, without overflow.
pub(crate) fn span(a: i64, b: i64) -> u64 {
    (i128::from(b) - i128::from(a)).unsigned_abs() as u64
}

/// Whether an amount was measured by a meter or estimated by a model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Quality {
    /// Read from a meter or counter.
    Measured,
    /// From a model or an estimating source.
    Estimated,
}

/// A quantity a [`Series`] can carry: an integer count of a base unit,
/// summed exactly, reported in a larger unit.
pub trait Amount: Copy + fmt::Debug {
    /// The unit totals are reported in, e.g. `"kWh"`.
    const UNIT: &'static str;
    /// Base units per reported unit (3.6e12 µJ per kWh).
    const PER_UNIT: f64;
    /// The amount in base units.
    fn raw(self) -> u64;
}

impl Amount for Microjoules {
    const UNIT: &'static str = "kWh";
    const PER_UNIT: f64 = UJ_PER_KWH;
    fn raw(self) -> u64 {
        self.0
    }
}

impl Amount for Litres {
    const UNIT: &'static str = "L";
    const PER_UNIT: f64 = 1.0;
    fn raw(self) -> u64 {
        self.0
    }
}

/// An amount spent or counted over `[start_ms, end_ms)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample<A> {
    /// Inclusive start, Unix ms.
    pub start_ms: i64,
    /// Exclusive end, Unix ms.
    pub end_ms: i64,
    /// The amount over the whole interval.
    pub amount: A,
    /// Measured or estimated.
    pub quality: Quality,
}

impl<A: Amount> Sample<A> {
    /// The part of the amount inside `[a, b)`, in base units, by overlap:
    /// `floor(A·(b−s)/L) − floor(A·(a−s)/L)`, so that the parts of one
    /// sample cut at any instants sum to its amount exactly.
    pub(crate) fn raw_within(&self, a: i64, b: i64) -> u64 {
        let a = a.max(self.start_ms);
        let b = b.min(self.end_ms);
        if a >= b {
            return 0;
        }
        let len = u128::from(span(self.start_ms, self.end_ms));
        let amount = u128::from(self.amount.raw());
        // amount < 2^64 and offsets <= len < 2^64: products fit in u128.
        let upto = |t: i64| amount * u128::from(span(self.start_ms, t)) / len;
        // The difference is at most `amount`, which fits in u64.
        (upto(b) - upto(a)) as u64
    }
}

/// The time split of a period: measured, estimated, missing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Coverage {
    /// Length of the period, ms.
    pub period_ms: u64,
    /// Time covered by measured samples, ms.
    pub measured_ms: u64,
    /// Time covered by estimated samples, ms.
    pub estimated_ms: u64,
}

impl Coverage {
    /// Time with no sample, ms.
    pub fn missing_ms(&self) -> u64 {
        // Saturating: the fields are public, so a hand-built value may not add up.
        self.period_ms
            .saturating_sub(self.measured_ms)
            .saturating_sub(self.estimated_ms)
    }

    /// Time with a sample, ms.
    pub fn covered_ms(&self) -> u64 {
        self.measured_ms.saturating_add(self.estimated_ms)
    }

    /// Share of the period measured, in `[0, 1]`.
    pub fn measured_share(&self) -> f64 {
        self.share(self.measured_ms)
    }

    /// Share of the period estimated, in `[0, 1]`.
    pub fn estimated_share(&self) -> f64 {
        self.share(self.estimated_ms)
    }

    /// Share of the period missing, in `[0, 1]`.
    pub fn missing_share(&self) -> f64 {
        self.share(self.missing_ms())
    }

    /// Whether every instant of the period has a sample.
    pub fn is_complete(&self) -> bool {
        self.missing_ms() == 0
    }

    fn share(&self, ms: u64) -> f64 {
        if self.period_ms == 0 {
            0.0
        } else {
            ms as f64 / self.period_ms as f64
        }
    }
}

/// What a figure does with the time an input has no data for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GapRule {
    /// Missing time is not filled. An input with any missing time has no
    /// period total, so the figure has no value and its status is
    /// [`Status::Incomplete`]; the partial sums are still reported in its
    /// inputs. Use for anything published or filed.
    Strict,
    /// Each input's gaps are filled at that input's own average rate over
    /// the time it covers: `filled = found × missing_ms / covered_ms`. The
    /// figure's status is at best [`Status::Estimated`]. An input with no
    /// data at all cannot be scaled and leaves the figure
    /// [`Status::Incomplete`]. Use for dashboards and running estimates.
    ScaleToPeriod,
}

/// How far a figure can be trusted. Serialized in lower case
/// (`"measured"`, `"estimated"`, `"incomplete"`, `"undefined"`), the
/// names [`Status::as_str`] gives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Every input measured over the whole period; nothing filled.
    Measured,
    /// Whole period accounted for, but some input is estimated, gap-filled
    /// or computed from estimated factors.
    Estimated,
    /// Some input lacks data the rule does not fill: no value.
    Incomplete,
    /// Inputs complete, but the denominator is zero: no value.
    Undefined,
}

impl Status {
    /// Whether the figure covers the whole period with a value.
    pub fn is_complete(self) -> bool {
        matches!(self, Self::Measured | Self::Estimated)
    }

    /// The lower-case name used in JSON, CSV and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Measured => "measured",
            Self::Estimated => "estimated",
            Self::Incomplete => "incomplete",
            Self::Undefined => "undefined",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One input of a figure, with what was found over the period and what was
/// used. Amounts are in [`InputUsed::unit`].
#[derive(Clone, Debug, PartialEq)]
pub struct InputUsed {
    /// What it is, e.g. `"E_DC"`.
    pub name: &'static str,
    /// Unit of the amounts below, e.g. `"kWh"`.
    pub unit: &'static str,
    /// Found in measured samples.
    pub measured: f64,
    /// Found in estimated samples.
    pub estimated: f64,
    /// Added for missing time by [`GapRule::ScaleToPeriod`]; zero otherwise.
    pub filled: f64,
    /// The period total used in the formula: `measured + estimated +
    /// filled`, or `None` where the rule leaves it unknown.
    pub total: Option<f64>,
    /// Time coverage; `None` for amounts that are not a timeline (a volume
    /// of certificates declared for the period).
    pub coverage: Option<Coverage>,
}

impl InputUsed {
    /// An input that is a declared total for the period, not a timeline.
    pub fn declared(name: &'static str, unit: &'static str, amount: f64) -> Self {
        Self {
            name,
            unit,
            measured: amount,
            estimated: 0.0,
            filled: 0.0,
            total: Some(amount),
            coverage: None,
        }
    }

    /// An input found over `coverage`, totalled under `rule`.
    pub(crate) fn found(
        name: &'static str,
        unit: &'static str,
        measured: f64,
        estimated: f64,
        coverage: Coverage,
        rule: GapRule,
    ) -> Self {
        let found = measured + estimated;
        let (filled, total) = if coverage.is_complete() {
            (0.0, Some(found))
        } else {
            match rule {
                GapRule::Strict => (0.0, None),
                GapRule::ScaleToPeriod if coverage.covered_ms() == 0 => (0.0, None),
                GapRule::ScaleToPeriod => {
                    let filled =
                        found * coverage.missing_ms() as f64 / coverage.covered_ms() as f64;
                    (filled, Some(found + filled))
                }
            }
        };
        Self {
            name,
            unit,
            measured,
            estimated,
            filled,
            total,
            coverage: Some(coverage),
        }
    }

    /// Whether the total rests only on measured data.
    pub fn is_measured(&self) -> bool {
        self.total.is_some()
            && self.estimated == 0.0
            && self.filled == 0.0
            && self
                .coverage
                .is_none_or(|c| c.estimated_ms == 0 && c.is_complete())
    }

    /// The one status rule for a single input: [`Status::Incomplete`]
    /// without a total, [`Status::Measured`] when the total rests only on
    /// measured samples over the whole period ([`InputUsed::is_measured`]),
    /// else [`Status::Estimated`] (estimated samples, estimated amounts or
    /// filled gaps). Never [`Status::Undefined`]: an input has no
    /// denominator. Figures built from inputs follow the same rule.
    pub fn status(&self) -> Status {
        if self.total.is_none() {
            Status::Incomplete
        } else if self.is_measured() {
            Status::Measured
        } else {
            Status::Estimated
        }
    }
}

/// One quantity's timeline: samples sorted by start, never overlapping,
/// possibly with gaps. Build one per quantity (E_DC, E_IT, water, ...), e.g.
/// from the ledger's hourly buckets; sum several meters before, not here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Series<A> {
    samples: Vec<Sample<A>>,
}

impl<A: Amount> Default for Series<A> {
    fn default() -> Self {
        Self {
            samples: Vec::new(),
        }
    }
}

impl<A: Amount> Series<A> {
    /// A series of `samples`, in any order.
    ///
    /// # Errors
    ///
    /// [`SeriesError::EmptySample`] for a sample that does not end after it
    /// starts, [`SeriesError::Overlap`] when two samples overlap.
    pub fn new(samples: impl IntoIterator<Item = Sample<A>>) -> Result<Self, SeriesError> {
        let mut samples: Vec<Sample<A>> = samples.into_iter().collect();
        if let Some(s) = samples.iter().find(|s| s.start_ms >= s.end_ms) {
            return Err(SeriesError::EmptySample {
                start_ms: s.start_ms,
                end_ms: s.end_ms,
            });
        }
        samples.sort_by_key(|s| s.start_ms);
        if let Some(w) = samples.windows(2).find(|w| w[1].start_ms < w[0].end_ms) {
            return Err(SeriesError::Overlap {
                end_ms: w[0].end_ms,
                next_start_ms: w[1].start_ms,
            });
        }
        Ok(Self { samples })
    }

    /// A series with no samples: everything missing.
    pub fn empty() -> Self {
        Self::default()
    }

    /// The samples, sorted by start.
    pub fn samples(&self) -> &[Sample<A>] {
        &self.samples
    }

    /// Samples overlapping `[a, b)`.
    pub(crate) fn within(&self, a: i64, b: i64) -> impl Iterator<Item = &Sample<A>> {
        // Sorted and disjoint, so ends are sorted too.
        let first = self.samples.partition_point(|s| s.end_ms <= a);
        self.samples[first..]
            .iter()
            .take_while(move |s| s.start_ms < b)
    }

    /// Measured, estimated and missing time over `period`.
    pub fn coverage(&self, period: Period) -> Coverage {
        self.found(period).2
    }

    /// Measured and estimated amounts (base units) and coverage over
    /// `period`, samples pro-rated by overlap.
    fn found(&self, period: Period) -> (u128, u128, Coverage) {
        let (a, b) = (period.from_ms, period.to_ms);
        let mut cov = Coverage {
            period_ms: period.duration_ms(),
            measured_ms: 0,
            estimated_ms: 0,
        };
        let (mut measured, mut estimated) = (0u128, 0u128);
        for s in self.within(a, b) {
            let ms = span(s.start_ms.max(a), s.end_ms.min(b));
            let raw = u128::from(s.raw_within(a, b));
            match s.quality {
                Quality::Measured => {
                    cov.measured_ms += ms;
                    measured += raw;
                }
                Quality::Estimated => {
                    cov.estimated_ms += ms;
                    estimated += raw;
                }
            }
        }
        (measured, estimated, cov)
    }

    /// This series as a figure input named `name` over `period`, totalled
    /// under `rule`, in [`Amount::UNIT`].
    pub fn input(&self, name: &'static str, period: Period, rule: GapRule) -> InputUsed {
        let (m, e, cov) = self.found(period);
        InputUsed::found(
            name,
            A::UNIT,
            m as f64 / A::PER_UNIT,
            e as f64 / A::PER_UNIT,
            cov,
            rule,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(start_ms: i64, end_ms: i64, uj: u64, quality: Quality) -> Sample<Microjoules> {
        Sample {
            start_ms,
            end_ms,
            amount: Microjoules(uj),
            quality,
        }
    }

    #[test]
    fn rejects_bad_periods_and_samples() {
        assert_eq!(
            Period::new(5, 5),
            Err(SeriesError::EmptyPeriod {
                from_ms: 5,
                to_ms: 5
            })
        );
        assert_eq!(
            Series::new([s(3, 3, 1, Quality::Measured)]),
            Err(SeriesError::EmptySample {
                start_ms: 3,
                end_ms: 3
            })
        );
        assert_eq!(
            Series::new([
                s(5, 15, 1, Quality::Measured),
                s(0, 10, 1, Quality::Measured)
            ]),
            Err(SeriesError::Overlap {
                end_ms: 10,
                next_start_ms: 5
            })
        );
    }

    #[test]
    fn parts_of_a_sample_sum_to_it() {
        let x = s(0, 3, 10, Quality::Measured);
        // floor(10·1/3)=3, floor(10·2/3)-3=3, 10-6=4.
        assert_eq!(x.raw_within(0, 1), 3);
        assert_eq!(x.raw_within(1, 2), 3);
        assert_eq!(x.raw_within(2, 3), 4);
        assert_eq!(x.raw_within(-5, 50), 10);
        assert_eq!(x.raw_within(3, 9), 0);
    }

    #[test]
    fn coverage_and_input_over_a_clipped_period() -> Result<(), SeriesError> {
        // Period [10, 110). Measured [0, 40) of 40 µJ: 30 ms and 30 µJ inside.
        // Estimated [60, 80) of 20 µJ. Missing [40, 60) and [80, 110): 50 ms.
        let series = Series::new([
            s(60, 80, 20, Quality::Estimated),
            s(0, 40, 40, Quality::Measured),
        ])?;
        let period = Period::new(10, 110)?;
        let cov = series.coverage(period);
        assert_eq!(
            (cov.measured_ms, cov.estimated_ms, cov.missing_ms()),
            (30, 20, 50)
        );
        assert_eq!(
            (
                cov.measured_share(),
                cov.estimated_share(),
                cov.missing_share()
            ),
            (0.3, 0.2, 0.5)
        );
        let strict = series.input("x", period, GapRule::Strict);
        assert_eq!(strict.total, None);
        assert_eq!(strict.measured * UJ_PER_KWH, 30.0);
        let scaled = series.input("x", period, GapRule::ScaleToPeriod);
        // 50 µJ over 50 ms, 50 ms missing: 50 µJ filled.
        assert!((scaled.filled * UJ_PER_KWH - 50.0).abs() < 1e-9);
        Ok(())
    }

    /// The one input status rule at its boundaries: a single estimated or
    /// missing millisecond, or a single estimated or filled amount, is
    /// enough to leave `measured`; no total is `incomplete` whatever the
    /// shares. The cases where the collector's two former rules disagreed
    /// (estimated time of zero energy, a negative estimated amount) are
    /// `estimated`, as the figure rule ([`InputUsed::is_measured`]) says.
    #[test]
    fn input_status_at_the_share_boundaries() {
        let cov = |measured_ms, estimated_ms| Coverage {
            period_ms: 1000,
            measured_ms,
            estimated_ms,
        };
        let input = |estimated: f64, filled: f64, total: Option<f64>, coverage| InputUsed {
            name: "E",
            unit: "kWh",
            measured: 5.0,
            estimated,
            filled,
            total,
            coverage,
        };
        let whole = Some(cov(1000, 0));
        // Measured over the whole period: measured.
        assert_eq!(input(0.0, 0.0, Some(5.0), whole).status(), Status::Measured);
        // -0.0 (a sum of nothing, negated) is no estimate.
        assert_eq!(
            input(-0.0, -0.0, Some(5.0), whole).status(),
            Status::Measured
        );
        // One estimated millisecond, even carrying no energy.
        let one_est = Some(cov(999, 1));
        assert_eq!(
            input(0.0, 0.0, Some(5.0), one_est).status(),
            Status::Estimated
        );
        // One missing millisecond, filled (or with nothing to fill).
        let one_gap = Some(cov(999, 0));
        assert_eq!(
            input(0.0, 0.005, Some(5.005), one_gap).status(),
            Status::Estimated
        );
        assert_eq!(
            input(0.0, 0.0, Some(5.0), one_gap).status(),
            Status::Estimated
        );
        // An estimated or filled amount on full measured time.
        assert_eq!(
            input(1e-9, 0.0, Some(5.0), whole).status(),
            Status::Estimated
        );
        assert_eq!(
            input(-1.0, 0.0, Some(4.0), whole).status(),
            Status::Estimated
        );
        assert_eq!(
            input(0.0, 1e-9, Some(5.0), whole).status(),
            Status::Estimated
        );
        // All estimated time: estimated.
        assert_eq!(
            input(5.0, 0.0, Some(5.0), Some(cov(0, 1000))).status(),
            Status::Estimated
        );
        // No total: incomplete, whatever the shares.
        for c in [whole, one_gap, Some(cov(0, 0)), None] {
            assert_eq!(input(0.0, 0.0, None, c).status(), Status::Incomplete);
        }
        // A declared amount (no timeline) is measured.
        assert_eq!(
            InputUsed::declared("REC", "MWh", 3.0).status(),
            Status::Measured
        );
        // Through the gap rules: Strict leaves a gap incomplete,
        // ScaleToPeriod fills it and says estimated.
        let gap = cov(600, 0);
        let strict = InputUsed::found("E", "kWh", 6.0, 0.0, gap, GapRule::Strict);
        assert_eq!(strict.status(), Status::Incomplete);
        let scaled = InputUsed::found("E", "kWh", 6.0, 0.0, gap, GapRule::ScaleToPeriod);
        assert_eq!(
            (scaled.total, scaled.status()),
            (Some(10.0), Status::Estimated)
        );
        let full = InputUsed::found("E", "kWh", 6.0, 0.0, cov(1000, 0), GapRule::Strict);
        assert_eq!(full.status(), Status::Measured);
    }

    #[test]
    fn status_names_are_lower_case_both_ways() -> Result<(), serde_json::Error> {
        for (s, name) in [
            (Status::Measured, "measured"),
            (Status::Estimated, "estimated"),
            (Status::Incomplete, "incomplete"),
            (Status::Undefined, "undefined"),
        ] {
            assert_eq!(s.as_str(), name);
            assert_eq!(s.to_string(), name);
            let json = serde_json::to_string(&s)?;
            assert_eq!(json, format!("\"{name}\""));
            let back: Status = serde_json::from_str(&json)?;
            assert_eq!(back, s);
        }
        assert!(serde_json::from_str::<Status>("\"Measured\"").is_err());
        Ok(())
    }
}
