//! Typed physical quantities and the conversions between them.
//!
//! Energy is carried as integer microjoules ([`Microjoules`]) so that sums are
//! exact and independent of order; power, mass and intensity are derived
//! figures and use `f64`.

use std::fmt;
use std::iter::Sum;
use std::ops::{Add, AddAssign};

/// Microjoules per joule.
const UJ_PER_J: f64 = 1e6;
/// Microjoules per kilowatt-hour (3.6 MJ per kWh).
const UJ_PER_KWH: f64 = 3.6e12;

/// A sum of energy over a period in microjoules, wider than
/// [`Microjoules`]: `u64` µJ ends at about 5.1 GWh, a year of a 600 kW
/// site, so period totals of a facility (consumption, certificates) are
/// `u128` (about 9.5e16 GWh).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MicrojoulesSum(pub u128);

impl MicrojoulesSum {
    /// No energy.
    pub const ZERO: Self = Self(0);

    /// The amount in joules.
    pub fn as_joules(self) -> f64 {
        self.0 as f64 / UJ_PER_J
    }

    /// The amount in kilowatt-hours.
    pub fn as_kwh(self) -> f64 {
        self.0 as f64 / UJ_PER_KWH
    }

    /// Converts kilowatt-hours, rounding to the nearest µJ; `None` for
    /// negative, NaN or infinite input.
    pub fn from_kwh_f64(kwh: f64) -> Option<Self> {
        if !kwh.is_finite() || kwh < 0.0 {
            return None;
        }
        Some(Self((kwh * UJ_PER_KWH).round() as u128))
    }
}

impl From<Microjoules> for MicrojoulesSum {
    fn from(e: Microjoules) -> Self {
        Self(u128::from(e.0))
    }
}

/// Saturating at `u128::MAX` µJ, which no sum of `u64` amounts reaches
/// (it would take 2^64 of them).
impl Add for MicrojoulesSum {
    type Output = Self;

    fn add(self, o: Self) -> Self {
        Self(self.0.saturating_add(o.0))
    }
}

impl Sum for MicrojoulesSum {
    fn sum<I: Iterator<Item = Self>>(iter: I) -> Self {
        iter.fold(Self::ZERO, Add::add)
    }
}

/// An amount of energy in microjoules, the native unit of RAPL counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Microjoules(pub u64);

impl Microjoules {
    /// No energy.
    pub const ZERO: Self = Self(0);

    /// Adds two amounts, or `None` if the sum does not fit in a `u64`.
    pub fn checked_add(self, o: Self) -> Option<Self> {
        self.0.checked_add(o.0).map(Self)
    }

    /// Adds two amounts, clamping at `u64::MAX` µJ (about 5.1 GWh).
    pub fn saturating_add(self, o: Self) -> Self {
        Self(self.0.saturating_add(o.0))
    }

    /// The amount in joules.
    pub fn as_joules(self) -> f64 {
        self.0 as f64 / UJ_PER_J
    }

    /// The amount in kilowatt-hours.
    pub fn as_kwh(self) -> f64 {
        self.0 as f64 / UJ_PER_KWH
    }

    /// Converts joules to microjoules, rounding to the nearest µJ.
    ///
    /// Returns `None` for negative, NaN or infinite input, or when the result
    /// does not fit in a `u64`.
    pub fn from_joules_f64(j: f64) -> Option<Self> {
        // 2^64 is exactly representable; anything that rounds to it or above
        // does not fit. `as` would silently saturate instead.
        const LIMIT: f64 = 18_446_744_073_709_551_616.0;
        if !j.is_finite() || j < 0.0 {
            return None;
        }
        let uj = (j * UJ_PER_J).round();
        (uj < LIMIT).then_some(Self(uj as u64))
    }
}

/// Saturating addition: a sum past `u64::MAX` µJ (about 5.1 GWh) clamps
/// instead of panicking or wrapping, because this type is fed from data
/// outside the process. Use [`Microjoules::checked_add`] where overflow must
/// be detected.
impl Add for Microjoules {
    type Output = Self;

    fn add(self, o: Self) -> Self {
        self.saturating_add(o)
    }
}

/// Saturating, like [`Add`].
impl AddAssign for Microjoules {
    fn add_assign(&mut self, o: Self) {
        *self = self.saturating_add(o);
    }
}

/// Saturating, like [`Add`].
impl Sum for Microjoules {
    fn sum<I: Iterator<Item = Self>>(iter: I) -> Self {
        iter.fold(Self::ZERO, Self::saturating_add)
    }
}

/// Saturating, like [`Add`].
impl<'a> Sum<&'a Microjoules> for Microjoules {
    fn sum<I: Iterator<Item = &'a Self>>(iter: I) -> Self {
        iter.copied().sum()
    }
}

/// Exact decimal joules, e.g. `1.234567 J`.
impl fmt::Display for Microjoules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Integer formatting keeps every µJ; going through f64 would not.
        write!(f, "{}.{:06} J", self.0 / 1_000_000, self.0 % 1_000_000)
    }
}

/// A power in watts.
#[derive(Clone, Copy, Debug, Default, PartialEq, PartialOrd)]
pub struct Watts(pub f64);

impl fmt::Display for Watts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} W", self.0)
    }
}

/// A mass of greenhouse gases in grams of CO2 equivalent.
#[derive(Clone, Copy, Debug, Default, PartialEq, PartialOrd)]
pub struct GramsCo2e(pub f64);

impl fmt::Display for GramsCo2e {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} gCO2e", self.0)
    }
}

/// A carbon intensity of electricity in grams of CO2 equivalent per kWh.
#[derive(Clone, Copy, Debug, Default, PartialEq, PartialOrd)]
pub struct GramsPerKwh(pub f64);

impl fmt::Display for GramsPerKwh {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} gCO2e/kWh", self.0)
    }
}

/// Mean power of `energy` spent over `duration_ms` milliseconds, or `None` if
/// the duration is not positive.
pub fn average_power(energy: Microjoules, duration_ms: i64) -> Option<Watts> {
    if duration_ms <= 0 {
        return None;
    }
    // µJ / ms = mW; divide by 1000 for W.
    Some(Watts(energy.0 as f64 / duration_ms as f64 / 1e3))
}

/// Emissions of `energy` at carbon `intensity`: kWh × g/kWh.
pub fn emissions(energy: Microjoules, intensity: GramsPerKwh) -> GramsCo2e {
    GramsCo2e(energy.as_kwh() * intensity.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emissions_of_one_kwh() {
        let kwh = Microjoules(3_600_000_000_000);
        assert_eq!(kwh.as_kwh(), 1.0);
        assert_eq!(emissions(kwh, GramsPerKwh(250.0)), GramsCo2e(250.0));
        assert_eq!(
            emissions(Microjoules(1_800_000_000_000), GramsPerKwh(400.0)),
            GramsCo2e(200.0)
        );
        assert_eq!(
            emissions(Microjoules::ZERO, GramsPerKwh(400.0)),
            GramsCo2e(0.0)
        );
    }

    #[test]
    fn average_power_cases() {
        // 250 J over 1 s is 250 W.
        assert_eq!(
            average_power(Microjoules(250_000_000), 1_000),
            Some(Watts(250.0))
        );
        // 1 J over 4 ms is 250 W.
        assert_eq!(average_power(Microjoules(1_000_000), 4), Some(Watts(250.0)));
        assert_eq!(average_power(Microjoules(1_000_000), 0), None);
        assert_eq!(average_power(Microjoules(1_000_000), -5), None);
    }

    #[test]
    fn joules_round_trip_and_rejects() {
        assert_eq!(Microjoules(1_500_000).as_joules(), 1.5);
        assert_eq!(
            Microjoules::from_joules_f64(1.5),
            Some(Microjoules(1_500_000))
        );
        assert_eq!(
            Microjoules::from_joules_f64(0.0000004),
            Some(Microjoules(0))
        );
        assert_eq!(
            Microjoules::from_joules_f64(0.0000006),
            Some(Microjoules(1))
        );
        assert_eq!(Microjoules::from_joules_f64(-0.0), Some(Microjoules(0)));
        assert_eq!(Microjoules::from_joules_f64(-1.0), None);
        assert_eq!(Microjoules::from_joules_f64(f64::NAN), None);
        assert_eq!(Microjoules::from_joules_f64(f64::INFINITY), None);
        assert_eq!(Microjoules::from_joules_f64(1.9e13), None);
        assert!(Microjoules::from_joules_f64(1.8e13).is_some());
    }

    #[test]
    fn addition_saturates_and_checked_detects() {
        let big = Microjoules(u64::MAX - 1);
        assert_eq!(big.checked_add(Microjoules(1)), Some(Microjoules(u64::MAX)));
        assert_eq!(big.checked_add(Microjoules(2)), None);
        assert_eq!(big + Microjoules(5), Microjoules(u64::MAX));
        let mut acc = Microjoules(1);
        acc += Microjoules(2);
        assert_eq!(acc, Microjoules(3));
        let v = [Microjoules(1), Microjoules(2), Microjoules(u64::MAX)];
        assert_eq!(v.iter().sum::<Microjoules>(), Microjoules(u64::MAX));
        assert_eq!(v[..2].iter().copied().sum::<Microjoules>(), Microjoules(3));
    }

    #[test]
    fn display_is_exact() {
        assert_eq!(Microjoules(1_234_567).to_string(), "1.234567 J");
        assert_eq!(Microjoules(5).to_string(), "0.000005 J");
        assert_eq!(Watts(12.5).to_string(), "12.5 W");
        assert_eq!(GramsCo2e(3.0).to_string(), "3 gCO2e");
        assert_eq!(GramsPerKwh(250.0).to_string(), "250 gCO2e/kWh");
    }
}
