//! Remote devices: rack PDUs, BMCs and facility meters, read over the
//! network (Redfish, SNMP, Modbus TCP) or through a local command (IPMI
//! DCMI). Each runs in its own task at its own period, so a slow BMC never
//! delays the host's counters.
//!
//! A driver ([`Device`]) only reads: it returns raw [`PointValue`]s. The
//! pure [`Tracker`] turns them into interval energy (counter differences
//! with wrap and reset handling, or integrated power when a point has no
//! energy register) and gauges; the runner stamps the time.

pub mod ipmi;
pub mod modbus;
pub mod redfish;
pub mod scope;
pub mod snmp;

use crate::sampler::Checkpoint;
use std::future::Future;
use std::pin::Pin;
use vigie_energy::{Judged, Microjoules, Watts, average_power, judge_step};
use vigie_protocol::{Gauge, GaugeQuantity, Quality, Reading};

/// One remote device in the agent's configuration (`[[devices]]`).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    /// Device name, the first part of its sensors' names (`pdu-a1:outlet-7`).
    pub name: String,
    /// Poll period.
    #[serde(default = "default_period", with = "humantime_serde")]
    pub period: std::time::Duration,
    /// Highest plausible power of one point, W: a register that goes back
    /// by more than this could explain is a reset, not a wrap.
    #[serde(default = "default_max_power_w")]
    pub max_power_w: f64,
    /// Where each point sits in the site.
    #[serde(default)]
    pub points: Vec<PointTopology>,
    /// A Redfish BMC or PDU.
    #[serde(default)]
    pub redfish: Option<redfish::RedfishConfig>,
    /// IPMI DCMI power through ipmitool or FreeIPMI.
    #[serde(default)]
    pub ipmi: Option<ipmi::IpmiConfig>,
    /// An SNMP rack PDU.
    #[serde(default)]
    pub snmp: Option<snmp::SnmpConfig>,
    /// A Modbus TCP meter.
    #[serde(default)]
    pub modbus: Option<modbus::ModbusConfig>,
}

/// A point's place in the site topology.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PointTopology {
    /// Point name as the driver reports it (`outlet-7`).
    pub point: String,
    /// Room or hall.
    #[serde(default)]
    pub room: Option<String>,
    /// Rack.
    #[serde(default)]
    pub rack: Option<String>,
    /// PDU.
    #[serde(default)]
    pub pdu: Option<String>,
    /// Outlet.
    #[serde(default)]
    pub outlet: Option<String>,
    /// The host it feeds.
    #[serde(default)]
    pub feeds: Option<String>,
}

fn default_period() -> std::time::Duration {
    std::time::Duration::from_secs(10)
}
fn default_max_power_w() -> f64 {
    100_000.0
}

/// One value a device reported for one of its points (`outlet-7`,
/// `mains-1`, `chassis`, `meter`).
#[derive(Debug, Clone, PartialEq)]
pub struct PointValue {
    /// Point name, unique within the device: `[A-Za-z0-9._:-]`.
    pub point: String,
    /// What was read.
    pub value: Value,
}

/// A raw reading of a point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    /// Electrical power in watts, as the device averages it.
    PowerW(f64),
    /// An energy register: `raw` units of `uj_per_unit` microjoules each,
    /// wrapping to 0 after `max_raw` (e.g. SNMP Counter32 in tenths of
    /// kWh: `uj_per_unit` 360_000_000_000, `max_raw` u32::MAX).
    EnergyCounter {
        /// Register value.
        raw: u64,
        /// Microjoules per unit.
        uj_per_unit: u64,
        /// Largest value before the register wraps.
        max_raw: u64,
    },
    /// Anything else (temperature, current, a heat meter's registers).
    Gauge(GaugeQuantity, f64),
}

/// Why a device could not be read. The runner logs it and retries at the
/// next period; nothing already read is lost.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// No answer (network, timeout, no such host).
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// The device refused our credentials.
    #[error("authentication refused: {0}")]
    Auth(String),
    /// An answer we could not understand.
    #[error("unexpected answer: {0}")]
    Protocol(String),
    /// The configuration cannot work (missing file, bad map).
    #[error("configuration: {0}")]
    Config(String),
}

/// The future a poll returns.
pub type PollFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Vec<PointValue>, DeviceError>> + Send + 'a>>;

/// A device driver.
pub trait Device: Send {
    /// Protocol name: `redfish`, `snmp`, `modbus`, `ipmi`.
    fn kind(&self) -> &'static str;
    /// Where it is read from, for the inventory and `probe` (no secrets).
    fn source(&self) -> String;
    /// Reads every point once.
    fn poll(&mut self) -> PollFuture<'_>;
    /// Where each of `points` sits in the device, so that one physical
    /// energy is counted once ([`scope::assign`]). The default reads PDU
    /// point names ([`scope::by_name`]); a driver that knows the device's
    /// structure says so; meters whose points are independent return none.
    fn places(&self, points: &[&str]) -> Vec<scope::Place> {
        scope::by_name(points)
    }
    /// What the device showed and the driver does not read (equipment it
    /// has no reader for, a power supply without metrics), each with why,
    /// so that `probe` names it and the runner logs it once. Known after a
    /// successful poll.
    fn unread(&self) -> Vec<String> {
        Vec::new()
    }
}

/// The unread list to log, when it differs from the one logged last
/// (a rediscovery that finds the same is not news).
fn unread_news(logged: &mut Vec<String>, now: Vec<String>) -> Option<Vec<String>> {
    if *logged == now {
        return None;
    }
    *logged = now.clone();
    (!now.is_empty()).then_some(now)
}

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
        // Trapezoid: W x ms = mJ; x 1000 = µJ.
        let uj = ((prev_w + w) / 2.0 * dt as f64 * 1000.0).round();
        let energy = Microjoules(if uj.is_finite() && uj > 0.0 {
            uj as u64
        } else {
            0
        });
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

/// Makes the driver a device's configuration names.
pub fn build(cfg: &DeviceConfig) -> Result<Box<dyn Device>, DeviceError> {
    let sections = usize::from(cfg.redfish.is_some())
        + usize::from(cfg.ipmi.is_some())
        + usize::from(cfg.snmp.is_some())
        + usize::from(cfg.modbus.is_some());
    if sections != 1 {
        return Err(DeviceError::Config(format!(
            "device {}: exactly one driver section ([devices.redfish], .snmp, .modbus or .ipmi), found {sections}",
            cfg.name
        )));
    }
    if !cfg
        .name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        || cfg.name.is_empty()
    {
        return Err(DeviceError::Config(format!(
            "device name {:?}: use [A-Za-z0-9._-] only",
            cfg.name
        )));
    }
    if let Some(c) = &cfg.redfish {
        return Ok(Box::new(redfish::build(c)?));
    }
    if let Some(c) = &cfg.ipmi {
        return Ok(Box::new(ipmi::build(c)?));
    }
    if let Some(c) = &cfg.snmp {
        return Ok(Box::new(snmp::build(c)?));
    }
    if let Some(c) = &cfg.modbus {
        return Ok(Box::new(modbus::build(c)?));
    }
    Err(DeviceError::Config(format!(
        "device {}: no driver",
        cfg.name
    )))
}

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

/// What a device task hands to the agent's main loop.
#[derive(Debug, Default)]
pub struct DeviceOutput {
    /// Interval energy.
    pub readings: Vec<Reading>,
    /// Instantaneous values.
    pub gauges: Vec<Gauge>,
    /// Sensors seen for the first time (for the inventory).
    pub new_sensors: Vec<vigie_protocol::SensorMeta>,
    /// Where the device's registers stand once these readings are counted.
    pub checkpoints: Vec<Checkpoint>,
    /// Registers found reset in this poll (each a new baseline).
    pub resets: u64,
}

/// The points of a poll that yield energy, each with whether it has an
/// energy register, in poll order.
fn energy_points(values: &[PointValue]) -> Vec<(&str, bool)> {
    let mut out: Vec<(&str, bool)> = Vec::new();
    for v in values {
        let register = match v.value {
            Value::EnergyCounter { .. } => true,
            Value::PowerW(_) => false,
            Value::Gauge(..) => continue,
        };
        match out.iter_mut().find(|(p, _)| *p == v.point) {
            Some(slot) => slot.1 |= register,
            None => out.push((&v.point, register)),
        }
    }
    out
}

/// Polls `device` every `cfg.period` until `out` closes, sending what each
/// poll yields. Failures are logged when the device's state changes (not at
/// every period) and retried.
pub fn spawn(
    cfg: &DeviceConfig,
    mut device: Box<dyn Device>,
    out: tokio::sync::mpsc::Sender<DeviceOutput>,
    clock: fn() -> i64,
    resume: &[Checkpoint],
) -> tokio::task::JoinHandle<()> {
    let period = cfg.period.max(std::time::Duration::from_millis(100));
    let period_ms = i64::try_from(period.as_millis()).unwrap_or(i64::MAX);
    let mut tracker = Tracker::new(&cfg.name, cfg.max_power_w, period_ms.saturating_mul(5));
    let resumed = tracker.resume(resume);
    if resumed > 0 {
        tracing::info!(device = %cfg.name, registers = resumed, "device registers resumed from the previous run");
    }
    let name = cfg.name.clone();
    let points = cfg.points.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut announced: Vec<String> = Vec::new();
        let mut unread_logged: Vec<String> = Vec::new();
        let mut failing = false;
        loop {
            tick.tick().await;
            let now = clock();
            let values = match tokio::time::timeout(period, device.poll()).await {
                Ok(Ok(v)) => v,
                Ok(Err(e)) => {
                    if !failing {
                        tracing::warn!(device = %name, error = %e, "device read failed; retrying every period");
                    }
                    failing = true;
                    continue;
                }
                Err(_) => {
                    if !failing {
                        tracing::warn!(device = %name, period_ms, "device read timed out; retrying every period");
                    }
                    failing = true;
                    continue;
                }
            };
            if failing {
                tracing::info!(device = %name, "device answers again");
                failing = false;
            }
            if let Some(unread) = unread_news(&mut unread_logged, device.unread()) {
                tracing::warn!(device = %name, unread = ?unread, "device resources found but not read");
            }
            let mut o = DeviceOutput::default();
            for e in tracker.observe(now, &values, &mut o.readings, &mut o.gauges) {
                if matches!(e, TrackerEvent::CounterReset { .. }) {
                    o.resets += 1;
                }
                tracing::warn!(device = %name, event = ?e, "device counter");
            }
            let scopes = if values.iter().any(|v| !announced.contains(&v.point)) {
                let energy = energy_points(&values);
                let names: Vec<&str> = energy.iter().map(|(p, _)| *p).collect();
                scope::assign(&name, &device.places(&names), &energy)
            } else {
                Vec::new()
            };
            for v in &values {
                if announced.contains(&v.point) {
                    continue;
                }
                announced.push(v.point.clone());
                let counted = values
                    .iter()
                    .any(|x| x.point == v.point && matches!(x.value, Value::EnergyCounter { .. }));
                let powered = values
                    .iter()
                    .any(|x| x.point == v.point && matches!(x.value, Value::PowerW(_)));
                let topo = points.iter().find(|p| p.point == v.point);
                o.new_sensors.push(vigie_protocol::SensorMeta {
                    name: tracker.sensor(&v.point),
                    kind: device.kind().into(),
                    domain: v.point.split(['-', ':']).next().unwrap_or("point").into(),
                    source: device.source(),
                    max_range_uj: None,
                    method: if counted {
                        Some(vigie_protocol::Method::Counter)
                    } else if powered {
                        Some(vigie_protocol::Method::IntegratedPower)
                    } else {
                        None
                    },
                    topology: topo.map(|t| vigie_protocol::Topology {
                        room: t.room.clone(),
                        rack: t.rack.clone(),
                        pdu: t.pdu.clone(),
                        outlet: t.outlet.clone(),
                        feeds: t.feeds.clone(),
                    }),
                    scope: scopes
                        .iter()
                        .find(|(p, _)| *p == v.point)
                        .map(|(_, s)| s.clone()),
                });
            }
            o.checkpoints = tracker.checkpoints();
            if out.send(o).await.is_err() {
                break;
            }
        }
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn counter(point: &str, raw: u64) -> PointValue {
        PointValue {
            point: point.into(),
            value: Value::EnergyCounter {
                raw,
                // Tenths of kWh, as APC reports device energy.
                uj_per_unit: 360_000_000_000,
                max_raw: u64::from(u32::MAX),
            },
        }
    }

    fn power(point: &str, w: f64) -> PointValue {
        PointValue {
            point: point.into(),
            value: Value::PowerW(w),
        }
    }

    /// A device that replays scripted polls.
    struct Scripted(Vec<Result<Vec<PointValue>, DeviceError>>);
    impl Device for Scripted {
        fn kind(&self) -> &'static str {
            "script"
        }
        fn source(&self) -> String {
            "test://scripted".into()
        }
        fn poll(&mut self) -> PollFuture<'_> {
            let next = if self.0.is_empty() {
                Err(DeviceError::Unreachable("script over".into()))
            } else {
                self.0.remove(0)
            };
            Box::pin(async move { next })
        }
    }

    static CLOCK: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);
    fn test_clock() -> i64 {
        CLOCK.fetch_add(1_000, std::sync::atomic::Ordering::SeqCst)
    }

    #[test]
    fn the_driver_section_picks_the_driver() {
        let parse = |t: &str| toml::from_str::<crate::config::AgentConfig>(t).unwrap();
        let cfg = parse(
            "[[devices]]\nname = \"bmc-r12\"\nperiod = \"30s\"\n[devices.redfish]\nurl = \"https://10.0.0.5\"\n\n[[devices]]\nname = \"dcmi\"\n[devices.ipmi]\ntool = \"freeipmi\"\n",
        );
        assert_eq!(build(&cfg.devices[0]).unwrap().kind(), "redfish");
        assert_eq!(build(&cfg.devices[1]).unwrap().kind(), "ipmi");
        let none = parse("[[devices]]\nname = \"x\"\n");
        assert!(
            build(&none.devices[0])
                .err()
                .unwrap()
                .to_string()
                .contains("exactly one")
        );
        let two = parse(
            "[[devices]]\nname = \"x\"\n[devices.redfish]\nurl = \"https://a\"\n[devices.ipmi]\n",
        );
        assert!(build(&two.devices[0]).is_err());
        let bad_name = parse("[[devices]]\nname = \"a/b\"\n[devices.ipmi]\n");
        assert!(
            build(&bad_name.devices[0])
                .err()
                .unwrap()
                .to_string()
                .contains("A-Za-z0-9")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_runner_survives_failures_and_announces_points_once() {
        let cfg: DeviceConfig = toml::from_str(
            "name = \"pdu-a1\"\nperiod = \"1s\"\n[[points]]\npoint = \"outlet-7\"\nrack = \"r12\"\nfeeds = \"node-01\"\n",
        )
        .unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::channel(8);
        let dev = Scripted(vec![
            Ok(vec![counter("outlet-7", 10), power("outlet-7", 50.0)]),
            Err(DeviceError::Unreachable("cable".into())),
            Ok(vec![counter("outlet-7", 11), power("outlet-7", 60.0)]),
        ]);
        let task = spawn(&cfg, Box::new(dev), tx, test_clock, &[]);
        let first = rx.recv().await.unwrap();
        assert_eq!(first.new_sensors.len(), 1);
        let meta = &first.new_sensors[0];
        assert_eq!(meta.name, "pdu-a1:outlet-7");
        assert_eq!(meta.method, Some(vigie_protocol::Method::Counter));
        let topo = meta.topology.as_ref().unwrap();
        assert_eq!(
            (topo.rack.as_deref(), topo.feeds.as_deref()),
            (Some("r12"), Some("node-01"))
        );
        let second = rx.recv().await.unwrap();
        assert!(second.new_sensors.is_empty(), "announced once");
        assert_eq!(
            second.readings.len(),
            1,
            "the failed poll lost nothing: one reading spans it"
        );
        assert_eq!(second.readings[0].energy_uj, 360_000_000_000);
        assert_eq!(second.resets, 0);
        task.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn the_runner_counts_a_register_reset() {
        let cfg: DeviceConfig = toml::from_str("name = \"pdu-a1\"\nperiod = \"1s\"\n").unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::channel(8);
        // 0.1 kWh units: 1000 back to 3 in a second would be a 360 MW wrap.
        let dev = Scripted(vec![
            Ok(vec![counter("device", 1_000)]),
            Ok(vec![counter("device", 3)]),
            Ok(vec![counter("device", 4)]),
        ]);
        let task = spawn(&cfg, Box::new(dev), tx, test_clock, &[]);
        let outs = [
            rx.recv().await.unwrap(),
            rx.recv().await.unwrap(),
            rx.recv().await.unwrap(),
        ];
        assert_eq!(outs.iter().map(|o| o.resets).collect::<Vec<_>>(), [0, 1, 0]);
        assert!(outs[1].readings.is_empty(), "no energy across the reset");
        assert_eq!(outs[2].readings[0].energy_uj, 360_000_000_000);
        task.abort();
    }

    #[test]
    fn what_is_not_read_is_logged_when_it_changes_not_at_every_poll() {
        let mut logged = Vec::new();
        let floor = vec!["FloorPDUs/1: not read".to_owned()];
        assert_eq!(unread_news(&mut logged, floor.clone()), Some(floor.clone()));
        assert_eq!(unread_news(&mut logged, floor.clone()), None, "same list");
        assert_eq!(unread_news(&mut logged, floor.clone()), None);
        let more = vec![
            "FloorPDUs/1: not read".to_owned(),
            "PSU3: no Metrics".to_owned(),
        ];
        assert_eq!(unread_news(&mut logged, more.clone()), Some(more));
        assert_eq!(unread_news(&mut logged, Vec::new()), None, "nothing to say");
        assert_eq!(unread_news(&mut logged, floor.clone()), Some(floor));
    }

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
