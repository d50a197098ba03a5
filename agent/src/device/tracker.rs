//! The pure part of reading a device: successive polls of one device
//! become interval energy (counter differences with the wrap-or-reset
//! rule of [`vigie_energy::judge_step`], or power integrated by
//! [`vigie_energy::integrate_power`] when a point has no energy register)
//! and gauges. No clock, no I/O: the runner hands it the time.

use super::{PointValue, Value};
use crate::checkpoint::Checkpoint;
use vigie_energy::{Judged, Microjoules, Watts, average_power, integrate_power, judge_step};
use vigie_protocol::{Gauge, GaugeQuantity, Quality, Reading};

/// How an energy point is tracked.
#[derive(Debug, Clone)]
enum PointState {
    Counter {
        last_raw: u64,
        last_ms: i64,
        total: Microjoules,
    },
    Power {
        last_w: f64,
        last_ms: i64,
        total: Microjoules,
    },
}

/// What the tracker reports besides readings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrackerEvent {
    /// A register went backwards by more than a wrap can explain: the
    /// device was reset or replaced; the point starts a new baseline.
    CounterReset {
        /// Sensor.
        sensor: String,
    },
    /// Power samples too far apart to integrate; integration restarts.
    Gap {
        /// Sensor.
        sensor: String,
        /// Time since the previous sample.
        gap_ms: i64,
    },
}

/// Turns successive polls of one device into interval readings and gauges.
/// Sensor names are `{device}:{point}`.
#[derive(Debug, Clone)]
pub struct Tracker {
    device: String,
    /// Highest plausible power of one point, W: bounds what a wrap may explain.
    max_power_w: f64,
    /// Longest gap between two power samples that is still integrated, ms.
    max_gap_ms: i64,
    points: Vec<(String, PointState)>,
    /// Points that report an energy register: their power is a gauge only.
    counted: Vec<String>,
}

impl Tracker {
    /// A tracker for device `device`.
    pub fn new(device: &str, max_power_w: f64, max_gap_ms: i64) -> Self {
        Tracker {
            device: device.to_owned(),
            max_power_w,
            max_gap_ms,
            points: Vec::new(),
            counted: Vec::new(),
        }
    }

    /// The sensor name of `point`.
    pub fn sensor(&self, point: &str) -> String {
        format!("{}:{point}", self.device)
    }

    /// Where each energy register stands (`raw_uj` holds the register
    /// value in the device's units).
    pub fn checkpoints(&self) -> Vec<Checkpoint> {
        self.points
            .iter()
            .filter_map(|(p, st)| match st {
                PointState::Counter {
                    last_raw, last_ms, ..
                } => Some(Checkpoint {
                    sensor: self.sensor(p),
                    raw_uj: *last_raw,
                    at_ms: *last_ms,
                }),
                PointState::Power { .. } => None,
            })
            .collect()
    }

    /// Restores register baselines from an earlier run, so the first poll
    /// counts what the device measured meanwhile. A register that went back
    /// (device reset or replaced) is caught by the wrap-or-reset rule.
    pub fn resume(&mut self, checkpoints: &[Checkpoint]) -> usize {
        let prefix = format!("{}:", self.device);
        let mut n = 0;
        for cp in checkpoints {
            let Some(point) = cp.sensor.strip_prefix(&prefix) else {
                continue;
            };
            let point = point.to_owned();
            self.set(
                &point,
                PointState::Counter {
                    last_raw: cp.raw_uj,
                    last_ms: cp.at_ms,
                    total: Microjoules::ZERO,
                },
            );
            if !self.counted.contains(&point) {
                self.counted.push(point);
            }
            n += 1;
        }
        n
    }

    /// Applies one poll made at `now_ms`.
    pub fn observe(
        &mut self,
        now_ms: i64,
        values: &[PointValue],
        readings: &mut Vec<Reading>,
        gauges: &mut Vec<Gauge>,
    ) -> Vec<TrackerEvent> {
        let mut events = Vec::new();
        // A point with a register anywhere in this poll is counted by it.
        for v in values {
            if matches!(v.value, Value::EnergyCounter { .. }) && !self.counted.contains(&v.point) {
                self.counted.push(v.point.clone());
            }
        }
        for v in values {
            let sensor = self.sensor(&v.point);
            match v.value {
                Value::Gauge(quantity, value) => {
                    if value.is_finite() {
                        gauges.push(Gauge {
                            sensor,
                            quantity,
                            value,
                            at_ms: now_ms,
                        });
                    }
                }
                Value::PowerW(w) => {
                    if !w.is_finite() || w < 0.0 {
                        continue;
                    }
                    gauges.push(Gauge {
                        sensor: sensor.clone(),
                        quantity: GaugeQuantity::PowerWatts,
                        value: w,
                        at_ms: now_ms,
                    });
                    if self.counted.contains(&v.point) {
                        continue;
                    }
                    self.integrate(&v.point, sensor, now_ms, w, readings, &mut events);
                }
                Value::EnergyCounter {
                    raw,
                    uj_per_unit,
                    max_raw,
                } => self.count(
                    &v.point,
                    sensor,
                    now_ms,
                    (raw, uj_per_unit, max_raw),
                    readings,
                    &mut events,
                ),
            }
        }
        events
    }

    fn state(&mut self, point: &str) -> Option<&mut PointState> {
        self.points
            .iter_mut()
            .find(|(p, _)| p == point)
            .map(|(_, s)| s)
    }

    fn set(&mut self, point: &str, state: PointState) {
        match self.state(point) {
            Some(s) => *s = state,
            None => self.points.push((point.to_owned(), state)),
        }
    }

    fn integrate(
        &mut self,
        point: &str,
        sensor: String,
        now_ms: i64,
        w: f64,
        readings: &mut Vec<Reading>,
        events: &mut Vec<TrackerEvent>,
    ) {
        let max_gap = self.max_gap_ms;
        let (prev_w, prev_ms, total) = match self.state(point) {
            Some(PointState::Power {
                last_w,
                last_ms,
                total,
            }) => (*last_w, *last_ms, *total),
            _ => {
                self.set(
                    point,
                    PointState::Power {
                        last_w: w,
                        last_ms: now_ms,
                        total: Microjoules::ZERO,
                    },
                );
                return;
            }
        };
        let dt = now_ms - prev_ms;
        if dt <= 0 {
            return;
        }
        if dt > max_gap {
            events.push(TrackerEvent::Gap { sensor, gap_ms: dt });
            self.set(
                point,
                PointState::Power {
                    last_w: w,
                    last_ms: now_ms,
                    total,
                },
            );
            return;
        }
        let energy = integrate_power(Watts(prev_w), Watts(w), dt);
        let total = total.saturating_add(energy);
        readings.push(Reading {
            sensor,
            start_ms: prev_ms,
            end_ms: now_ms,
            energy_uj: energy.0,
            cumulative_uj: total.0,
            power_w: Some((prev_w + w) / 2.0),
            quality: Quality::Measured,
        });
        self.set(
            point,
            PointState::Power {
                last_w: w,
                last_ms: now_ms,
                total,
            },
        );
    }

    fn count(
        &mut self,
        point: &str,
        sensor: String,
        now_ms: i64,
        (raw, uj_per_unit, max_raw): (u64, u64, u64),
        readings: &mut Vec<Reading>,
        events: &mut Vec<TrackerEvent>,
    ) {
        let max_power_w = self.max_power_w;
        let (prev, prev_ms, total) = match self.state(point) {
            Some(PointState::Counter {
                last_raw,
                last_ms,
                total,
            }) => (*last_raw, *last_ms, *total),
            _ => {
                self.set(
                    point,
                    PointState::Counter {
                        last_raw: raw,
                        last_ms: now_ms,
                        total: Microjoules::ZERO,
                    },
                );
                return;
            }
        };
        let dt = now_ms - prev_ms;
        if dt <= 0 || raw > max_raw {
            return;
        }
        // Backwards: a wrap only if the energy it implies is plausible (the
        // rule RAPL and NVML share). A baseline above the register's range
        // (a resumed checkpoint from another device) starts afresh too.
        let units = match judge_step(prev, raw, max_raw, uj_per_unit, dt, Watts(max_power_w)) {
            Ok(Judged::Energy(step)) => Some(step.energy().0),
            Ok(Judged::Reset) | Err(_) => None,
        };
        let Some(units) = units else {
            events.push(TrackerEvent::CounterReset { sensor });
            self.set(
                point,
                PointState::Counter {
                    last_raw: raw,
                    last_ms: now_ms,
                    total,
                },
            );
            return;
        };
        let Some(uj) = units.checked_mul(uj_per_unit) else {
            events.push(TrackerEvent::CounterReset { sensor });
            return;
        };
        let energy = Microjoules(uj);
        let total = total.saturating_add(energy);
        readings.push(Reading {
            sensor,
            start_ms: prev_ms,
            end_ms: now_ms,
            energy_uj: uj,
            cumulative_uj: total.0,
            power_w: average_power(energy, dt).map(|w| (w.0 * 1000.0).round() / 1000.0),
            quality: Quality::Measured,
        });
        self.set(
            point,
            PointState::Counter {
                last_raw: raw,
                last_ms: now_ms,
                total,
            },
        );
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::device::testing::{counter, power};

    #[test]
    fn register_steps_become_exact_interval_energy() {
        let mut t = Tracker::new("pdu-a1", 100_000.0, 60_000);
        let (mut r, mut g) = (Vec::new(), Vec::new());
        t.observe(0, &[counter("device", 100)], &mut r, &mut g);
        assert!(r.is_empty(), "first poll is a baseline");
        t.observe(3_600_000, &[counter("device", 103)], &mut r, &mut g);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].sensor, "pdu-a1:device");
        // 0.3 kWh = 1.08 GJ.
        assert_eq!(r[0].energy_uj, 1_080_000_000_000);
        assert_eq!((r[0].start_ms, r[0].end_ms), (0, 3_600_000));
        assert_eq!(r[0].power_w, Some(300.0));
    }

    #[test]
    fn a_counter32_wrap_is_energy_a_reset_is_not() {
        let mut t = Tracker::new("m", 100_000.0, 60_000);
        let (mut r, mut g) = (Vec::new(), Vec::new());
        let wh = |raw| PointValue {
            point: "p".into(),
            value: Value::EnergyCounter {
                raw,
                uj_per_unit: 3_600_000_000, // Wh
                max_raw: u64::from(u32::MAX),
            },
        };
        t.observe(0, &[wh(u64::from(u32::MAX) - 1)], &mut r, &mut g);
        // Wraps: MAX-1 -> MAX -> 0 is 2 Wh, then 2 more => 4 Wh in 1 s is
        // 14.4 kW: plausible.
        let ev = t.observe(1_000, &[wh(2)], &mut r, &mut g);
        assert!(ev.is_empty());
        assert_eq!(r[0].energy_uj, 4 * 3_600_000_000);
        // Back to 0 from 2: a 4.29 GWh "wrap" in 1 s is not plausible: reset.
        let ev = t.observe(2_000, &[wh(0)], &mut r, &mut g);
        assert_eq!(
            ev,
            vec![TrackerEvent::CounterReset {
                sensor: "m:p".into()
            }]
        );
        assert_eq!(r.len(), 1, "a reset adds no energy");
        t.observe(3_000, &[wh(1)], &mut r, &mut g);
        assert_eq!(
            r[1].energy_uj, 3_600_000_000,
            "counting resumes from the reset"
        );
    }

    #[test]
    fn power_without_a_register_is_integrated_and_power_with_one_is_a_gauge() {
        let mut t = Tracker::new("bmc", 100_000.0, 60_000);
        let (mut r, mut g) = (Vec::new(), Vec::new());
        t.observe(
            0,
            &[
                power("chassis", 200.0),
                power("outlet-1", 50.0),
                counter("outlet-1", 7),
            ],
            &mut r,
            &mut g,
        );
        t.observe(
            10_000,
            &[
                power("chassis", 300.0),
                power("outlet-1", 60.0),
                counter("outlet-1", 7),
            ],
            &mut r,
            &mut g,
        );
        let chassis: Vec<_> = r.iter().filter(|x| x.sensor == "bmc:chassis").collect();
        // Trapezoid: (200 + 300) / 2 W x 10 s = 2500 J.
        assert_eq!(chassis.len(), 1);
        assert_eq!(chassis[0].energy_uj, 2_500_000_000);
        let outlet: Vec<_> = r.iter().filter(|x| x.sensor == "bmc:outlet-1").collect();
        assert_eq!(
            outlet.len(),
            1,
            "the register, not the power, counts the outlet"
        );
        assert_eq!(outlet[0].energy_uj, 0);
        assert_eq!(
            g.iter()
                .filter(|x| x.quantity == GaugeQuantity::PowerWatts)
                .count(),
            4
        );
    }

    #[test]
    fn registers_resume_across_an_agent_restart() {
        let mut t = Tracker::new("pdu", 100_000.0, 60_000);
        let (mut r, mut g) = (Vec::new(), Vec::new());
        t.observe(0, &[counter("device", 100)], &mut r, &mut g);
        let cps = t.checkpoints();
        assert_eq!((cps[0].sensor.as_str(), cps[0].raw_uj), ("pdu:device", 100));
        // A new agent: the PDU counted 0.2 kWh while it was down.
        let mut t2 = Tracker::new("pdu", 100_000.0, 60_000);
        assert_eq!(t2.resume(&cps), 1);
        assert_eq!(
            t2.resume(&[Checkpoint {
                sensor: "other:device".into(),
                raw_uj: 1,
                at_ms: 0
            }]),
            0
        );
        t2.observe(600_000, &[counter("device", 102)], &mut r, &mut g);
        assert_eq!((r[0].start_ms, r[0].energy_uj), (0, 720_000_000_000));
    }

    #[test]
    fn power_samples_too_far_apart_are_not_integrated() {
        let mut t = Tracker::new("bmc", 100_000.0, 60_000);
        let (mut r, mut g) = (Vec::new(), Vec::new());
        t.observe(0, &[power("chassis", 200.0)], &mut r, &mut g);
        let ev = t.observe(600_000, &[power("chassis", 200.0)], &mut r, &mut g);
        assert!(matches!(
            ev[0],
            TrackerEvent::Gap {
                gap_ms: 600_000,
                ..
            }
        ));
        assert!(r.is_empty());
        t.observe(610_000, &[power("chassis", 200.0)], &mut r, &mut g);
        assert_eq!(r[0].energy_uj, 2_000_000_000);
    }
}
