//! Quantities used by the facility figures, beside those of [`crate::units`]:
//! water volume, temperature and planning-scale energy.
//!
//! Metered energy stays integer [`Microjoules`](crate::Microjoules). A
//! year of a large site can pass `u64::MAX` µJ (about 5.1 TWh), and planning
//! studies are estimates anyway, so planned energies are [`KilowattHours`]
//! in `f64`.

use std::fmt;

/// Kilowatt-hours per megawatt-hour.
const KWH_PER_MWH: f64 = 1e3;
/// Watt-hours per kilowatt-hour.
const WH_PER_KWH: f64 = 1e3;
/// Offset from degrees Celsius to kelvin.
const KELVIN_OFFSET: f64 = 273.15;

/// A volume of water in litres, integer like meter registers (a water meter
/// in m³ with three decimals counts litres).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Litres(pub u64);

impl fmt::Display for Litres {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} L", self.0)
    }
}

/// A temperature in degrees Celsius.
#[derive(Clone, Copy, Debug, Default, PartialEq, PartialOrd)]
pub struct Celsius(pub f64);

impl Celsius {
    /// The temperature in kelvin.
    pub fn kelvin(self) -> f64 {
        self.0 + KELVIN_OFFSET
    }
}

impl fmt::Display for Celsius {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} °C", self.0)
    }
}

/// An energy in kilowatt-hours, for planning figures (electrical or thermal:
/// the field that holds it says which).
#[derive(Clone, Copy, Debug, Default, PartialEq, PartialOrd)]
pub struct KilowattHours(pub f64);

impl KilowattHours {
    /// Energy of a mean power held for one hour: W × 1 h / 1000.
    pub fn from_watts_for_one_hour(power: crate::Watts) -> Self {
        Self(power.0 / WH_PER_KWH)
    }

    /// The energy in megawatt-hours.
    pub fn as_mwh(self) -> f64 {
        self.0 / KWH_PER_MWH
    }
}

impl fmt::Display for KilowattHours {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} kWh", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Watts;

    #[test]
    fn conversions() {
        assert_eq!(Celsius(0.0).kelvin(), 273.15);
        assert_eq!(
            KilowattHours::from_watts_for_one_hour(Watts(2_500.0)),
            KilowattHours(2.5)
        );
        assert_eq!(KilowattHours(1_500.0).as_mwh(), 1.5);
        assert_eq!(Litres(7).to_string(), "7 L");
        assert_eq!(Celsius(60.5).to_string(), "60.5 °C");
        assert_eq!(KilowattHours(2.0).to_string(), "2 kWh");
    }
}
