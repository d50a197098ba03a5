//! Factors that do not change with the hour: one configured value per zone,
//! and yearly averages by zone (Electricity Maps' yearly data as co2.js
//! republishes it).

use super::time::{utc_midnight_ms, utc_year};
use super::{
    Basis, FetchFuture, GridError, Intensity, IntensityPoint, Provider, check_range, checked_value,
};
use serde::Deserialize;
use std::collections::BTreeMap;
use vigie_energy::GramsPerKwh;

/// One average factor for one zone, from the configuration (a supplier's
/// or a national figure). It covers any time asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct StaticFactor {
    zone: String,
    value: GramsPerKwh,
    basis: Basis,
    source: String,
}

impl StaticFactor {
    /// A factor of `g_per_kwh` for `zone`; `source` says where it comes
    /// from. Refuses a negative or non-finite value.
    pub fn new(
        zone: impl Into<String>,
        g_per_kwh: f64,
        basis: Basis,
        source: impl Into<String>,
    ) -> Result<Self, GridError> {
        let value = checked_value(g_per_kwh, || "static factor".into())
            .map_err(|e| GridError::Config(e.to_string()))?;
        Ok(StaticFactor {
            zone: zone.into(),
            value,
            basis,
            source: source.into(),
        })
    }

    /// The factor as one point spanning `[from_ms, to_ms)`.
    pub fn point(&self, from_ms: i64, to_ms: i64, now_ms: i64) -> IntensityPoint {
        IntensityPoint {
            zone: self.zone.clone(),
            start_ms: from_ms,
            end_ms: to_ms,
            intensity: Intensity::Average(self.value),
            basis: self.basis,
            estimated: false,
            source: self.source.clone(),
            retrieved_ms: now_ms,
        }
    }
}

impl Provider for StaticFactor {
    fn source(&self) -> &str {
        &self.source
    }

    fn fetch<'a>(
        &'a self,
        zone: &'a str,
        from_ms: i64,
        to_ms: i64,
        now_ms: i64,
    ) -> FetchFuture<'a> {
        Box::pin(async move {
            check_range(from_ms, to_ms)?;
            if zone != self.zone {
                return Err(GridError::UnknownZone {
                    provider: self.source.clone(),
                    zone: zone.to_owned(),
                });
            }
            Ok(vec![self.point(from_ms, to_ms, now_ms)])
        })
    }
}

/// Longest range a [`YearlyTable`] answers, in years.
const MAX_YEARS: i64 = 1000;

/// Source name of points from a [`YearlyTable`] built from co2.js data.
pub const CO2JS_SOURCE: &str = "electricitymaps-yearly";

/// Yearly average intensities by zone and year.
///
/// A year with no data is answered with the latest earlier year's value,
/// flagged estimated (last year's factor standing in for this year's,
/// until the new one is published each January).
#[derive(Debug, Clone, PartialEq)]
pub struct YearlyTable {
    source: String,
    basis: Basis,
    retrieved_ms: i64,
    years: BTreeMap<i64, BTreeMap<String, GramsPerKwh>>,
}

#[derive(Deserialize)]
struct Co2jsZone {
    #[serde(rename = "carbonIntensity", default)]
    carbon_intensity: Option<Co2jsValue>,
}

#[derive(Deserialize)]
struct Co2jsValue {
    value: Option<f64>,
    unit: Option<String>,
}

impl YearlyTable {
    /// An empty table; `retrieved_ms` is when its data was obtained.
    pub fn new(source: impl Into<String>, basis: Basis, retrieved_ms: i64) -> Self {
        YearlyTable {
            source: source.into(),
            basis,
            retrieved_ms,
            years: BTreeMap::new(),
        }
    }

    /// Adds one year read from co2.js's Electricity Maps yearly JSON:
    /// `{ "FR": { "carbonIntensity": { "value": 33, "unit": "gCO2eq/kWh" },
    /// ... }, ... }`. Zones whose value is null are left out; a unit other
    /// than gCO2eq/kWh is a format error. Returns the zones added.
    pub fn add_co2js_json(&mut self, json: &[u8], year: i64) -> Result<usize, GridError> {
        let what = || format!("co2.js yearly data {year}");
        let zones: BTreeMap<String, Co2jsZone> =
            serde_json::from_slice(json).map_err(|e| GridError::Format {
                what: what(),
                detail: format!("unexpected JSON: {e}"),
            })?;
        let mut table = BTreeMap::new();
        for (zone, z) in zones {
            let Some(ci) = z.carbon_intensity else {
                continue;
            };
            let Some(v) = ci.value else {
                continue;
            };
            if let Some(unit) = &ci.unit
                && !matches!(unit.as_str(), "gCO2eq/kWh" | "gCO2e/kWh")
            {
                return Err(GridError::Format {
                    what: format!("{} zone {zone}", what()),
                    detail: format!("unit {unit:?}, expected gCO2eq/kWh"),
                });
            }
            let value = checked_value(v, || format!("{} zone {zone}", what()))?;
            table.insert(zone, value);
        }
        let n = table.len();
        self.years.insert(year, table);
        Ok(n)
    }

    /// A table of co2.js's yearly data for one year: Electricity Maps'
    /// headline yearly figure, a life-cycle average.
    pub fn from_co2js_json(json: &[u8], year: i64, retrieved_ms: i64) -> Result<Self, GridError> {
        let mut t = YearlyTable::new(CO2JS_SOURCE, Basis::Lifecycle, retrieved_ms);
        t.add_co2js_json(json, year)?;
        Ok(t)
    }

    /// Adds or replaces one value.
    pub fn insert(&mut self, zone: impl Into<String>, year: i64, value: GramsPerKwh) {
        self.years
            .entry(year)
            .or_default()
            .insert(zone.into(), value);
    }

    /// The value published for `zone` in `year`.
    pub fn get(&self, zone: &str, year: i64) -> Option<GramsPerKwh> {
        self.years.get(&year)?.get(zone).copied()
    }

    /// Number of zones with a value in `year`.
    pub fn zones(&self, year: i64) -> usize {
        self.years.get(&year).map_or(0, BTreeMap::len)
    }

    /// The point for `zone` over calendar year `year` (UTC): the year's own
    /// value, or the latest earlier year's flagged estimated.
    pub fn point(&self, zone: &str, year: i64) -> Option<IntensityPoint> {
        let (data_year, value) = self
            .years
            .range(..=year)
            .rev()
            .find_map(|(y, t)| t.get(zone).map(|v| (*y, *v)))?;
        Some(IntensityPoint {
            zone: zone.to_owned(),
            start_ms: utc_midnight_ms(year, 1, 1),
            end_ms: utc_midnight_ms(year + 1, 1, 1),
            intensity: Intensity::Average(value),
            basis: self.basis,
            estimated: data_year != year,
            source: self.source.clone(),
            retrieved_ms: self.retrieved_ms,
        })
    }
}

impl Provider for YearlyTable {
    fn source(&self) -> &str {
        &self.source
    }

    /// One point per calendar year (UTC) that meets the range; years
    /// before the first with data for the zone are left out.
    /// `retrieved_ms` is the table's, not `now_ms`.
    fn fetch<'a>(
        &'a self,
        zone: &'a str,
        from_ms: i64,
        to_ms: i64,
        _now_ms: i64,
    ) -> FetchFuture<'a> {
        Box::pin(async move {
            check_range(from_ms, to_ms)?;
            if !self.years.values().any(|t| t.contains_key(zone)) {
                return Err(GridError::UnknownZone {
                    provider: self.source.clone(),
                    zone: zone.to_owned(),
                });
            }
            let (first, last) = (utc_year(from_ms), utc_year(to_ms - 1));
            if last - first > MAX_YEARS {
                return Err(GridError::RangeTooLong {
                    from_ms,
                    to_ms,
                    max_days: MAX_YEARS * 366,
                });
            }
            Ok((first..=last).filter_map(|y| self.point(zone, y)).collect())
        })
    }
}
