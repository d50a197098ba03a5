//! Energy from power readings, for sources that have no energy register
//! (older GPUs, BMCs and meters that report only watts). The one
//! power-to-energy rule of the agent: every such source calls
//! [`integrate_power`], so they all round and refuse the same way.

use crate::units::{Microjoules, Watts};

/// The energy between two power samples `dt_ms` milliseconds apart, by the
/// trapezoid rule: the mean of the two powers times the time, rounded to
/// the nearest microjoule.
///
/// Nothing that cannot be energy is counted: a non-positive `dt_ms`, a
/// negative or non-finite power, or a product that is not finite give
/// zero. A result beyond `u64` saturates. Whether samples are close
/// enough to integrate at all (the longest gap) is the caller's rule.
///
/// # Examples
///
/// ```
/// use vigie_energy::{integrate_power, Microjoules, Watts};
/// // (200 W + 300 W) / 2 over 10 s = 2500 J.
/// assert_eq!(
///     integrate_power(Watts(200.0), Watts(300.0), 10_000),
///     Microjoules(2_500_000_000),
/// );
/// assert_eq!(integrate_power(Watts(200.0), Watts(300.0), 0), Microjoules::ZERO);
/// ```
pub fn integrate_power(prev: Watts, cur: Watts, dt_ms: i64) -> Microjoules {
    if dt_ms <= 0 || !(prev.0 >= 0.0 && cur.0 >= 0.0) {
        return Microjoules::ZERO;
    }
    // W x ms = mJ; x 1000 = µJ.
    let uj = ((prev.0 + cur.0) / 2.0 * dt_ms as f64 * 1000.0).round();
    if uj.is_finite() && uj > 0.0 {
        // `as` saturates at u64::MAX.
        Microjoules(uj as u64)
    } else {
        Microjoules::ZERO
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mean_power_times_the_time_in_whole_microjoules() {
        assert_eq!(
            integrate_power(Watts(50.0), Watts(60.0), 1_000),
            Microjoules(55_000_000)
        );
        // Constant power: a rectangle.
        assert_eq!(
            integrate_power(Watts(200.0), Watts(200.0), 10_000),
            Microjoules(2_000_000_000)
        );
        // 0.0015 W over 1 ms is 1.5 µJ: rounded to the nearest, half up.
        assert_eq!(
            integrate_power(Watts(0.001), Watts(0.002), 1),
            Microjoules(2)
        );
        // Order of the samples does not matter.
        assert_eq!(
            integrate_power(Watts(123.4), Watts(567.8), 2_345),
            integrate_power(Watts(567.8), Watts(123.4), 2_345)
        );
    }

    #[test]
    fn what_cannot_be_energy_counts_nothing() {
        for (a, b, dt) in [
            (100.0, 100.0, 0),
            (100.0, 100.0, -5),
            (-1.0, 100.0, 1_000),
            (100.0, -1.0, 1_000),
            (f64::NAN, 100.0, 1_000),
            (100.0, f64::INFINITY, 1_000),
            (0.0, 0.0, 1_000),
        ] {
            assert_eq!(
                integrate_power(Watts(a), Watts(b), dt),
                Microjoules::ZERO,
                "{a} {b} {dt}"
            );
        }
    }

    #[test]
    fn a_huge_product_saturates_rather_than_wrapping() {
        assert_eq!(
            integrate_power(Watts(1e300), Watts(1e300), i64::MAX),
            Microjoules::ZERO,
            "not finite"
        );
        assert_eq!(
            integrate_power(Watts(1e12), Watts(1e12), i64::MAX / 2),
            Microjoules(u64::MAX)
        );
    }
}
