//! Differences of energy counters that wrap around.
//!
//! RAPL `energy_uj` counts microjoules up to `max_energy_range_uj` and then
//! restarts from zero; SNMP Counter32 and other meters behave the same with
//! their own maximum. [`counter_delta`] is the one place that turns two
//! readings into energy; [`WrappingCounter`] keeps the previous reading.
//!
//! Between two readings at most one wrap can be told apart from none: the
//! sampling period must stay under [`WrappingCounter::max_safe_period_ms`].
//! A counter that resets (NVML after a driver reload) is a new epoch, not a
//! wrap; callers that know a reset happened must start a new counter.

use crate::units::{Microjoules, Watts};

/// The energy between two readings of a wrapping counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CounterStep {
    /// The counter went forward (or stood still) without wrapping.
    Advanced(Microjoules),
    /// The counter passed its maximum once and restarted from zero.
    Wrapped(Microjoules),
}

impl CounterStep {
    /// The energy of the step, whether or not the counter wrapped.
    pub fn energy(self) -> Microjoules {
        match self {
            Self::Advanced(e) | Self::Wrapped(e) => e,
        }
    }
}

/// A counter reading or range that cannot be right. Not retryable with the
/// same values: the reading or the configured range is wrong.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum CounterError {
    /// A reading is above the counter's maximum.
    #[error("counter value {value} is above the counter's maximum {max}")]
    OutOfRange {
        /// The offending reading.
        value: u64,
        /// The counter's maximum.
        max: u64,
    },
    /// The counter's maximum is zero, so it cannot count anything.
    #[error("counter range is zero")]
    ZeroRange,
}

fn check(value: u64, max: u64) -> Result<(), CounterError> {
    if value > max {
        Err(CounterError::OutOfRange { value, max })
    } else {
        Ok(())
    }
}

/// Energy between readings `prev` and `cur` of a counter that counts from 0
/// to `max` inclusive and then wraps to 0 (RAPL `max_energy_range_uj`; NVML
/// and SNMP counters with their own maximum).
///
/// When `cur < prev` the counter is taken to have wrapped exactly once:
/// the delta is `(max - prev) + cur + 1`.
///
/// # Errors
///
/// [`CounterError::ZeroRange`] if `max` is 0, [`CounterError::OutOfRange`]
/// if either reading is above `max`.
///
/// # Examples
///
/// ```
/// use vigie_energy::{counter_delta, CounterError, CounterStep, Microjoules};
///
/// assert_eq!(counter_delta(100, 250, 1000), Ok(CounterStep::Advanced(Microjoules(150))));
/// // 990 -> 1000 is 10 µJ, 1000 -> 0 is 1 µJ, 0 -> 5 is 5 µJ.
/// assert_eq!(counter_delta(990, 5, 1000), Ok(CounterStep::Wrapped(Microjoules(16))));
/// assert_eq!(
///     counter_delta(1001, 5, 1000),
///     Err(CounterError::OutOfRange { value: 1001, max: 1000 }),
/// );
/// ```
pub fn counter_delta(prev: u64, cur: u64, max: u64) -> Result<CounterStep, CounterError> {
    if max == 0 {
        return Err(CounterError::ZeroRange);
    }
    check(prev, max)?;
    check(cur, max)?;
    Ok(if cur >= prev {
        CounterStep::Advanced(Microjoules(cur - prev))
    } else {
        // No overflow: prev > cur, so (max - prev) + cur + 1 <= max.
        CounterStep::Wrapped(Microjoules((max - prev) + cur + 1))
    })
}

/// What a step between two readings of a counter means, judged by the
/// power it would imply (see [`judge_step`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Judged {
    /// Forward (or still), or wrapped once at a plausible power: energy.
    Energy(CounterStep),
    /// Backwards by more than a wrap at `peak` could explain: the counter
    /// was reset (driver reload, firmware reset, device replaced). No
    /// energy: the new reading is a new baseline.
    Reset,
}

/// Decides between a wrap and a reset of a counter that counts from 0 to
/// `max` (in units of `uj_per_unit` µJ) by the power a wrap would imply
/// over `dt_ms`: a backwards step is a wrap only if
/// `(max - prev) + cur + 1` units within `dt_ms` stay at or under `peak`.
/// The one rule for RAPL and NVML.
///
/// A reset just before the counter's top is indistinguishable from a
/// wrap (it adds at most `peak` x `dt_ms`): the bound is the best a
/// counter allows.
///
/// # Errors
///
/// As [`counter_delta`]: a zero range or a reading above `max`.
///
/// # Examples
///
/// ```
/// use vigie_energy::{judge_step, CounterStep, Judged, Microjoules, Watts};
/// // A 3.6 kJ RAPL range: 100 J in 1 s after the top is a wrap...
/// let max = 3_600_000_000;
/// assert_eq!(
///     judge_step(max - 99_999_999, 0, max, 1, 1_000, Watts(500.0)),
///     Ok(Judged::Energy(CounterStep::Wrapped(Microjoules(100_000_000)))),
/// );
/// // ...but 0 written over 200 J would be 3.4 kJ in 1 s: a reset.
/// assert_eq!(judge_step(200_000_000, 0, max, 1, 1_000, Watts(500.0)), Ok(Judged::Reset));
/// ```
pub fn judge_step(
    prev: u64,
    cur: u64,
    max: u64,
    uj_per_unit: u64,
    dt_ms: i64,
    peak: Watts,
) -> Result<Judged, CounterError> {
    let step = counter_delta(prev, cur, max)?;
    Ok(match step {
        CounterStep::Advanced(_) => Judged::Energy(step),
        CounterStep::Wrapped(units) => {
            // W x ms = mJ; x 1000 = µJ. Compared in f64: both sides are
            // far inside its exact range for any real counter.
            let plausible_uj = peak.0 * dt_ms as f64 * 1000.0;
            let implied_uj = units.0 as f64 * uj_per_unit as f64;
            if dt_ms > 0 && implied_uj <= plausible_uj {
                Judged::Energy(step)
            } else {
                Judged::Reset
            }
        }
    })
}

/// A wrapping counter's last reading and the energy seen since the first.
///
/// The first observation sets the baseline; each later one yields the energy
/// since the previous one through [`counter_delta`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WrappingCounter {
    max: u64,
    last: Option<u64>,
    total: Microjoules,
}

impl WrappingCounter {
    /// A counter with maximum `max` and no baseline yet.
    ///
    /// # Errors
    ///
    /// [`CounterError::ZeroRange`] if `max` is 0.
    pub fn new(max: u64) -> Result<Self, CounterError> {
        if max == 0 {
            return Err(CounterError::ZeroRange);
        }
        Ok(Self {
            max,
            last: None,
            total: Microjoules::ZERO,
        })
    }

    /// A counter restored from a persisted last reading, so that energy spent
    /// while the agent was stopped is counted (if at most one wrap happened).
    /// The total starts at zero.
    ///
    /// # Errors
    ///
    /// [`CounterError::ZeroRange`] if `max` is 0, [`CounterError::OutOfRange`]
    /// if `last > max`.
    pub fn with_baseline(max: u64, last: u64) -> Result<Self, CounterError> {
        let mut counter = Self::new(max)?;
        check(last, max)?;
        counter.last = Some(last);
        Ok(counter)
    }

    /// Records reading `cur`. Returns `Ok(None)` for the first reading (it
    /// only sets the baseline), otherwise the step since the previous one.
    ///
    /// The running total saturates at `u64::MAX` µJ (about 5.1 TWh).
    ///
    /// # Errors
    ///
    /// [`CounterError::OutOfRange`] if `cur` is above the maximum; the
    /// counter is then left unchanged, so the next good reading is measured
    /// from the last good one.
    pub fn observe(&mut self, cur: u64) -> Result<Option<CounterStep>, CounterError> {
        check(cur, self.max)?;
        let step = match self.last {
            None => None,
            Some(prev) => Some(counter_delta(prev, cur, self.max)?),
        };
        if let Some(step) = step {
            self.total = self.total.saturating_add(step.energy());
        }
        self.last = Some(cur);
        Ok(step)
    }

    /// Records reading `cur`, taken `dt_ms` after the previous one,
    /// telling a wrap from a reset by [`judge_step`] at `peak`. A reset
    /// makes `cur` the new baseline and adds nothing. `Ok(None)` for the
    /// first reading.
    ///
    /// # Errors
    ///
    /// As [`WrappingCounter::observe`]; the counter is then unchanged.
    pub fn observe_judged(
        &mut self,
        cur: u64,
        dt_ms: i64,
        peak: Watts,
    ) -> Result<Option<Judged>, CounterError> {
        check(cur, self.max)?;
        let judged = match self.last {
            None => None,
            Some(prev) => Some(judge_step(prev, cur, self.max, 1, dt_ms, peak)?),
        };
        if let Some(Judged::Energy(step)) = judged {
            self.total = self.total.saturating_add(step.energy());
        }
        self.last = Some(cur);
        Ok(judged)
    }

    /// The last accepted reading, if any.
    pub fn last(&self) -> Option<u64> {
        self.last
    }

    /// Sum of all steps observed so far.
    pub fn total(&self) -> Microjoules {
        self.total
    }

    /// The counter's maximum value.
    pub fn max(&self) -> u64 {
        self.max
    }

    /// Longest sampling period, in whole milliseconds, that cannot miss a
    /// wrap when the counter advances at no more than `peak` watts:
    /// `max` µJ / `peak` W gives microseconds. `None` if `peak` is not a
    /// positive number.
    ///
    /// Sample well below this: a full range between two readings is
    /// indistinguishable from no energy at all.
    pub fn max_safe_period_ms(&self, peak: Watts) -> Option<u64> {
        if peak.0.is_nan() || peak.0 <= 0.0 {
            return None;
        }
        let us = self.max as f64 / peak.0;
        // Float-to-int `as` saturates, which is the right answer for a tiny peak.
        Some((us / 1e3).floor() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_delta_table() {
        use CounterStep::{Advanced, Wrapped};
        const MAX: u64 = 262_143_328_850; // a real RAPL package range
        let cases: &[(u64, u64, u64, Result<CounterStep, CounterError>)] = &[
            // normal
            (100, 250, 1000, Ok(Advanced(Microjoules(150)))),
            (0, MAX, MAX, Ok(Advanced(Microjoules(MAX)))),
            // equal
            (42, 42, 1000, Ok(Advanced(Microjoules(0)))),
            (MAX, MAX, MAX, Ok(Advanced(Microjoules(0)))),
            // wrap, with the +1 for the step from max to 0
            (MAX - 10, 5, MAX, Ok(Wrapped(Microjoules(16)))),
            (MAX, 0, MAX, Ok(Wrapped(Microjoules(1)))),
            (1, 0, MAX, Ok(Wrapped(Microjoules(MAX)))),
            (u64::MAX, 0, u64::MAX, Ok(Wrapped(Microjoules(1)))),
            (1, 0, u64::MAX, Ok(Wrapped(Microjoules(u64::MAX)))),
            // readings above max
            (
                1001,
                5,
                1000,
                Err(CounterError::OutOfRange {
                    value: 1001,
                    max: 1000,
                }),
            ),
            (
                5,
                1001,
                1000,
                Err(CounterError::OutOfRange {
                    value: 1001,
                    max: 1000,
                }),
            ),
            // zero range
            (0, 0, 0, Err(CounterError::ZeroRange)),
            (0, 1, 0, Err(CounterError::ZeroRange)),
        ];
        for (prev, cur, max, want) in cases {
            assert_eq!(
                counter_delta(*prev, *cur, *max),
                *want,
                "prev={prev} cur={cur} max={max}"
            );
        }
    }

    #[test]
    fn judge_step_table() {
        use CounterStep::{Advanced, Wrapped};
        const MAX: u64 = 3_600_000_000; // the field finding's RAPL range
        let w = Watts(500.0);
        type Case = (u64, u64, u64, i64, Result<Judged, CounterError>);
        let cases: &[Case] = &[
            // forward is energy, whatever the power
            (
                10,
                20,
                1,
                1_000,
                Ok(Judged::Energy(Advanced(Microjoules(10)))),
            ),
            // the field finding: 0 written over 200 J is 3.4 kJ in 1 s
            (200_000_000, 0, 1, 1_000, Ok(Judged::Reset)),
            // a real wrap at 400 W over 1 s
            (
                MAX - 399_999_999,
                0,
                1,
                1_000,
                Ok(Judged::Energy(Wrapped(Microjoules(400_000_000)))),
            ),
            // exactly at the bound: 500 J in 1 s is still a wrap
            (
                MAX - 499_999_999,
                0,
                1,
                1_000,
                Ok(Judged::Energy(Wrapped(Microjoules(500_000_000)))),
            ),
            (MAX - 500_000_000, 0, 1, 1_000, Ok(Judged::Reset)),
            // the same wrap over 2 s is plausible
            (
                MAX - 999_999_999,
                0,
                1,
                2_000,
                Ok(Judged::Energy(Wrapped(Microjoules(1_000_000_000)))),
            ),
            // no time between the readings: a backwards step cannot be energy
            (MAX, 0, 1, 0, Ok(Judged::Reset)),
            (MAX, 0, 1, -5, Ok(Judged::Reset)),
            // units: a Counter32 of Wh (3.6e9 µJ each), 2 units in 1 s is 7.2 kW
            (MAX - 1, 0, 3_600_000_000, 1_000, Ok(Judged::Reset)),
            // errors pass through
            (
                MAX + 1,
                0,
                1,
                1_000,
                Err(CounterError::OutOfRange {
                    value: MAX + 1,
                    max: MAX,
                }),
            ),
        ];
        for (prev, cur, unit, dt, want) in cases {
            assert_eq!(
                judge_step(*prev, *cur, MAX, *unit, *dt, w),
                *want,
                "prev={prev} cur={cur} unit={unit} dt={dt}"
            );
        }
        // A 64-bit mJ counter (NVML) never wraps plausibly: any step back is a reset.
        assert_eq!(
            judge_step(5, 4, u64::MAX, 1_000, 1_000, Watts(10_000.0)),
            Ok(Judged::Reset)
        );
    }

    #[test]
    fn a_judged_counter_takes_a_reset_as_a_new_baseline() -> Result<(), CounterError> {
        let mut c = WrappingCounter::new(3_600_000_000)?;
        let w = Watts(500.0);
        assert_eq!(c.observe_judged(200_000_000, 0, w)?, None);
        assert_eq!(
            c.observe_judged(300_000_000, 1_000, w)?,
            Some(Judged::Energy(CounterStep::Advanced(Microjoules(
                100_000_000
            ))))
        );
        assert_eq!(c.observe_judged(0, 1_000, w)?, Some(Judged::Reset));
        assert_eq!(c.total(), Microjoules(100_000_000), "a reset adds nothing");
        assert_eq!(c.last(), Some(0), "counting resumes from the reset value");
        assert_eq!(
            c.observe_judged(5, 1_000, w)?,
            Some(Judged::Energy(CounterStep::Advanced(Microjoules(5))))
        );
        Ok(())
    }

    #[test]
    fn step_energy() {
        assert_eq!(
            CounterStep::Advanced(Microjoules(3)).energy(),
            Microjoules(3)
        );
        assert_eq!(
            CounterStep::Wrapped(Microjoules(4)).energy(),
            Microjoules(4)
        );
    }

    #[test]
    fn first_observation_sets_baseline() -> Result<(), CounterError> {
        let mut c = WrappingCounter::new(1000)?;
        assert_eq!(c.last(), None);
        assert_eq!(c.observe(990)?, None);
        assert_eq!(c.total(), Microjoules::ZERO);
        assert_eq!(c.observe(995)?, Some(CounterStep::Advanced(Microjoules(5))));
        assert_eq!(c.observe(5)?, Some(CounterStep::Wrapped(Microjoules(11))));
        assert_eq!(c.last(), Some(5));
        assert_eq!(c.total(), Microjoules(16));
        assert_eq!(c.max(), 1000);
        Ok(())
    }

    #[test]
    fn error_leaves_state_unchanged() -> Result<(), CounterError> {
        let mut c = WrappingCounter::new(1000)?;
        c.observe(10)?;
        c.observe(20)?;
        let before = c.clone();
        assert_eq!(
            c.observe(5000),
            Err(CounterError::OutOfRange {
                value: 5000,
                max: 1000
            })
        );
        assert_eq!(c, before);
        assert_eq!(c.observe(30)?, Some(CounterStep::Advanced(Microjoules(10))));
        assert_eq!(c.total(), Microjoules(20));

        // An out-of-range first reading does not become the baseline either.
        let mut fresh = WrappingCounter::new(1000)?;
        assert!(fresh.observe(1001).is_err());
        assert_eq!(fresh.last(), None);
        Ok(())
    }

    #[test]
    fn restored_baseline_counts_downtime() -> Result<(), CounterError> {
        let mut c = WrappingCounter::with_baseline(1000, 900)?;
        assert_eq!(c.last(), Some(900));
        assert_eq!(
            c.observe(100)?,
            Some(CounterStep::Wrapped(Microjoules(201)))
        );
        assert_eq!(c.total(), Microjoules(201));
        assert_eq!(
            WrappingCounter::with_baseline(1000, 1001),
            Err(CounterError::OutOfRange {
                value: 1001,
                max: 1000
            })
        );
        assert_eq!(
            WrappingCounter::with_baseline(0, 0),
            Err(CounterError::ZeroRange)
        );
        assert_eq!(WrappingCounter::new(0), Err(CounterError::ZeroRange));
        Ok(())
    }

    #[test]
    fn safe_period() -> Result<(), CounterError> {
        // 262 kJ at 250 W is 1048 s, the "17 minutes" of the RAPL docs.
        let c = WrappingCounter::new(262_000_000_000)?;
        assert_eq!(c.max_safe_period_ms(Watts(250.0)), Some(1_048_000));
        assert_eq!(c.max_safe_period_ms(Watts(0.0)), None);
        assert_eq!(c.max_safe_period_ms(Watts(-1.0)), None);
        assert_eq!(c.max_safe_period_ms(Watts(f64::NAN)), None);
        let tiny = WrappingCounter::new(u64::MAX)?;
        assert_eq!(
            tiny.max_safe_period_ms(Watts(f64::MIN_POSITIVE)),
            Some(u64::MAX)
        );
        Ok(())
    }
}
