//! Simulated devices for tests, the demo and the overhead benchmark: a
//! rack PDU with metered outlets and a set of facility meters. The caller
//! moves them forward; nothing here reads a clock.

use super::{Device, PointValue, PollFuture, Value};
use vigie_protocol::GaugeQuantity;

/// A simulated rack PDU for tests, the demo and the overhead benchmark:
/// per outlet a power reading and a Counter32 energy register in Wh, and
/// the whole PDU's power. The test moves it forward.
#[derive(Clone, Debug)]
pub struct FakePdu {
    outlets: std::sync::Arc<std::sync::Mutex<Vec<(f64, u64)>>>,
}

impl FakePdu {
    /// A PDU with `n` outlets at 0 W and 0 Wh.
    pub fn new(n: usize) -> Self {
        FakePdu {
            outlets: std::sync::Arc::new(std::sync::Mutex::new(vec![(0.0, 0); n])),
        }
    }

    /// Sets outlet `i`'s power and adds `wh` to its register (wrapping at 2^32).
    pub fn set(&self, i: usize, watts: f64, wh: u64) {
        let mut o = self.outlets.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(x) = o.get_mut(i) {
            x.0 = watts;
            x.1 = (x.1 + wh) % (1 << 32);
        }
    }
}

impl Device for FakePdu {
    fn kind(&self) -> &'static str {
        "fake"
    }

    fn source(&self) -> String {
        "simulated PDU".into()
    }

    fn poll(&mut self) -> PollFuture<'_> {
        let o = self
            .outlets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        Box::pin(async move {
            let mut v = Vec::with_capacity(o.len() * 2 + 1);
            v.push(PointValue {
                point: "device".into(),
                value: Value::Gauge(GaugeQuantity::PowerWatts, o.iter().map(|x| x.0).sum()),
            });
            for (i, (w, wh)) in o.iter().enumerate() {
                let point = format!("outlet-{}", i + 1);
                v.push(PointValue {
                    point: point.clone(),
                    value: Value::PowerW(*w),
                });
                v.push(PointValue {
                    point,
                    value: Value::EnergyCounter {
                        raw: *wh,
                        uj_per_unit: 3_600_000_000,
                        max_raw: u64::from(u32::MAX),
                    },
                });
            }
            Ok(v)
        })
    }
}

/// A simulated set of facility meters for the demo and tests: electricity
/// meters (power and a Wh register, like a Modbus energy meter) and heat
/// meters (a cumulative kWh register with supply and return temperatures,
/// like an M-Bus or Modbus heat meter). Points are named by the caller;
/// the test or simulator moves them forward.
#[derive(Clone, Debug, Default)]
pub struct FakeFacility {
    points: std::sync::Arc<std::sync::Mutex<Vec<(String, FacilityPoint)>>>,
}

#[derive(Clone, Debug)]
enum FacilityPoint {
    Electricity {
        watts: f64,
        wh: u64,
    },
    Heat {
        kwh: f64,
        supply_c: f64,
        return_c: f64,
    },
}

impl FakeFacility {
    /// A facility with no meters yet.
    pub fn new() -> Self {
        Self::default()
    }

    fn update(
        &self,
        point: &str,
        f: impl FnOnce(Option<&mut FacilityPoint>) -> Option<FacilityPoint>,
    ) {
        let mut points = self.points.lock().unwrap_or_else(|p| p.into_inner());
        let slot = points.iter_mut().find(|(n, _)| n == point).map(|(_, p)| p);
        if let Some(new) = f(slot) {
            points.push((point.to_owned(), new));
        }
    }

    /// Sets electricity meter `point`'s power and adds `wh` to its register
    /// (wrapping at 2^32, as a 32-bit Modbus register).
    pub fn electricity(&self, point: &str, watts: f64, wh: u64) {
        self.update(point, |slot| match slot {
            Some(FacilityPoint::Electricity { watts: w, wh: r }) => {
                *w = watts;
                *r = (*r + wh) % (1 << 32);
                None
            }
            _ => Some(FacilityPoint::Electricity { watts, wh }),
        });
    }

    /// Adds `kwh` to heat meter `point`'s register and sets its supply and
    /// return temperatures.
    pub fn heat(&self, point: &str, kwh: f64, supply_c: f64, return_c: f64) {
        self.update(point, |slot| match slot {
            Some(FacilityPoint::Heat {
                kwh: k,
                supply_c: s,
                return_c: r,
            }) => {
                *k += kwh;
                *s = supply_c;
                *r = return_c;
                None
            }
            _ => Some(FacilityPoint::Heat {
                kwh,
                supply_c,
                return_c,
            }),
        });
    }
}

impl Device for FakeFacility {
    fn kind(&self) -> &'static str {
        "fake"
    }

    fn source(&self) -> String {
        "simulated facility meters".into()
    }

    fn poll(&mut self) -> PollFuture<'_> {
        let points = self
            .points
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        Box::pin(async move {
            let mut v = Vec::with_capacity(points.len() * 3);
            for (point, p) in points {
                let mut push = |value| {
                    v.push(PointValue {
                        point: point.clone(),
                        value,
                    });
                };
                match p {
                    FacilityPoint::Electricity { watts, wh } => {
                        push(Value::PowerW(watts));
                        push(Value::EnergyCounter {
                            raw: wh,
                            uj_per_unit: 3_600_000_000,
                            max_raw: u64::from(u32::MAX),
                        });
                    }
                    FacilityPoint::Heat {
                        kwh,
                        supply_c,
                        return_c,
                    } => {
                        push(Value::Gauge(GaugeQuantity::HeatEnergyKwh, kwh));
                        push(Value::Gauge(
                            GaugeQuantity::SupplyTemperatureCelsius,
                            supply_c,
                        ));
                        push(Value::Gauge(
                            GaugeQuantity::ReturnTemperatureCelsius,
                            return_c,
                        ));
                    }
                }
            }
            Ok(v)
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::device::Tracker;

    #[tokio::test]
    async fn fake_facility_meters_read_as_registers_and_heat_gauges() {
        let f = FakeFacility::new();
        f.electricity("grid", 1000.0, 2);
        f.heat("heat", 0.5, 45.0, 30.0);
        f.electricity("grid", 1100.0, 3);
        f.heat("heat", 0.25, 46.0, 31.0);
        let mut t = Tracker::new("facility", 100_000.0, 60_000);
        let (mut r, mut g) = (Vec::new(), Vec::new());
        let mut d = f.clone();
        t.observe(0, &d.poll().await.unwrap(), &mut r, &mut g);
        f.electricity("grid", 1100.0, 1);
        t.observe(5_000, &d.poll().await.unwrap(), &mut r, &mut g);
        let grid: u64 = r
            .iter()
            .filter(|x| x.sensor == "facility:grid")
            .map(|x| x.energy_uj)
            .sum();
        assert_eq!(grid, 3_600_000_000, "1 Wh between the two polls");
        let heat: Vec<f64> = g
            .iter()
            .filter(|x| x.sensor == "facility:heat" && x.quantity == GaugeQuantity::HeatEnergyKwh)
            .map(|x| x.value)
            .collect();
        assert_eq!(heat, [0.75, 0.75]);
        assert!(
            g.iter()
                .any(|x| x.quantity == GaugeQuantity::ReturnTemperatureCelsius && x.value == 31.0)
        );
    }
}
