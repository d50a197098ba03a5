//! NVIDIA GPUs through NVML, behind [`GpuBackend`] so the logic is tested
//! with [`FakeGpus`] and the real library is only needed on GPU hosts.
//!
//! Energy comes from `nvmlDeviceGetTotalEnergyConsumption` (mJ since the
//! driver loaded, Volta and newer) when the GPU has it; a step backwards is
//! a driver reload: the counter starts a new baseline (never a wrap).
//! Older GPUs get integrated power, marked `integrated_power` in the
//! inventory (NVML samples power only part of the time: it can miss
//! energy). Power, limit, temperature, utilisation and MIG mode are gauges.
//!
//! For energy per workload, each GPU also reports its use per process
//! ([`GpuBackend::process_use`]): NVML's process utilisation samples (SM
//! use summed per pid since the last read), or, where the GPU has none,
//! each running compute process weighing the same. MIG instances are not
//! told apart yet: a MIG GPU's energy is split over its processes as one.

use crate::checkpoint::{Checkpoint, Unresumed};
use crate::source::{PollError, Sink, Source};

/// Longest agent downtime bridged from a GPU checkpoint.
const MAX_BRIDGE_MS: i64 = 3_600_000;
use std::sync::{Arc, Mutex, MutexGuard};
use vigie_energy::{Judged, Microjoules, Watts, average_power, judge_step};

/// Plausible peak of one GPU for the wrap-or-reset rule (an H200 is 700 W).
const GPU_PEAK: Watts = Watts(2_000.0);
use vigie_protocol::{Gauge, GaugeQuantity, GpuMeta, Method, Quality, Reading, SensorMeta};

/// One read of one GPU. `None`: not supported or failed this time.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct GpuSample {
    /// Total energy since the driver loaded, mJ.
    pub energy_mj: Option<u64>,
    /// Power draw, mW.
    pub power_mw: Option<u32>,
    /// Enforced power limit, mW.
    pub power_limit_mw: Option<u32>,
    /// GPU temperature, °C.
    pub temperature_c: Option<u32>,
    /// GPU utilisation, percent.
    pub utilization_pct: Option<u32>,
    /// MIG mode on.
    pub mig_enabled: Option<bool>,
}

/// Why GPUs cannot be used at all.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    /// The NVIDIA management library is not installed (no NVIDIA driver).
    #[error(
        "NVIDIA management library not found ({0}): no NVIDIA driver on this host; GPU sensor off"
    )]
    NoLibrary(String),
    /// The library loaded but failed.
    #[error("NVML: {0}")]
    Nvml(String),
}

/// Access to the GPUs of the host.
pub trait GpuBackend: Send {
    /// The GPUs present.
    fn devices(&self) -> Result<Vec<GpuMeta>, GpuError>;
    /// Reads GPU `index`.
    fn read(&self, index: u32) -> GpuSample;
    /// Use of GPU `index` per process since NVML timestamp `since_us`:
    /// (pid, weight) and the newest timestamp seen, to pass next time.
    /// Default: none known.
    fn process_use(&self, _index: u32, since_us: Option<u64>) -> (Vec<(u32, u64)>, Option<u64>) {
        (Vec::new(), since_us)
    }
}

#[derive(Debug)]
enum Energy {
    Counter { last_mj: Option<u64> },
    Integrated { last_w: Option<f64> },
}

#[derive(Debug)]
struct Tracked {
    meta: GpuMeta,
    sensor: String,
    energy: Energy,
    last_ms: Option<i64>,
    total: Microjoules,
    /// Newest process utilisation sample read, NVML µs.
    last_process_us: Option<u64>,
}

/// The GPU source.
pub struct GpuSource {
    backend: Box<dyn GpuBackend>,
    gpus: Vec<Tracked>,
    /// Power samples further apart than this are not integrated, ms.
    max_gap_ms: i64,
}

impl GpuSource {
    /// Finds the GPUs and, for each, whether it has an energy counter.
    pub fn new(backend: Box<dyn GpuBackend>, max_gap_ms: i64) -> Result<Self, GpuError> {
        let gpus = backend
            .devices()?
            .into_iter()
            .map(|meta| {
                let has_counter = backend.read(meta.index).energy_mj.is_some();
                Tracked {
                    sensor: format!("nvml:gpu-{}", meta.index),
                    meta,
                    energy: if has_counter {
                        Energy::Counter { last_mj: None }
                    } else {
                        Energy::Integrated { last_w: None }
                    },
                    last_ms: None,
                    total: Microjoules::ZERO,
                    last_process_us: None,
                }
            })
            .collect();
        Ok(GpuSource {
            backend,
            gpus,
            max_gap_ms,
        })
    }

    /// The GPUs, for the inventory.
    pub fn inventory(&self) -> Vec<GpuMeta> {
        self.gpus.iter().map(|g| g.meta.clone()).collect()
    }

    /// Whether there is no GPU.
    pub fn is_empty(&self) -> bool {
        self.gpus.is_empty()
    }
}

fn reading(
    sensor: &str,
    start_ms: i64,
    end_ms: i64,
    e: Microjoules,
    total: Microjoules,
) -> Reading {
    Reading {
        sensor: sensor.to_owned(),
        start_ms,
        end_ms,
        energy_uj: e.0,
        cumulative_uj: total.0,
        power_w: average_power(e, end_ms - start_ms).map(|w| (w.0 * 1000.0).round() / 1000.0),
        quality: Quality::Measured,
    }
}

impl Source for GpuSource {
    fn process_activity(&mut self) -> Vec<crate::workload::GpuActivity> {
        self.gpus
            .iter_mut()
            .map(|g| {
                let (procs, last) = self.backend.process_use(g.meta.index, g.last_process_us);
                g.last_process_us = last;
                (g.sensor.clone(), procs)
            })
            .collect()
    }

    fn kind(&self) -> &'static str {
        "nvml"
    }

    fn sensors(&self) -> Vec<SensorMeta> {
        self.gpus
            .iter()
            .map(|g| SensorMeta {
                name: g.sensor.clone(),
                kind: "nvml".into(),
                domain: "gpu".into(),
                source: format!("{} {}", g.meta.name, g.meta.uuid),
                // mJ since driver load in a u64: it never wraps in practice.
                max_range_uj: None,
                method: Some(match g.energy {
                    Energy::Counter { .. } => Method::Counter,
                    Energy::Integrated { .. } => Method::IntegratedPower,
                }),
                topology: None,
                scope: None,
            })
            .collect()
    }

    fn checkpoints(&self) -> Vec<Checkpoint> {
        self.gpus
            .iter()
            .filter_map(|g| match (&g.energy, g.last_ms) {
                (Energy::Counter { last_mj: Some(mj) }, Some(at_ms)) => Some(Checkpoint {
                    sensor: g.sensor.clone(),
                    raw_uj: mj.saturating_mul(1000),
                    at_ms,
                }),
                _ => None,
            })
            .collect()
    }

    fn resume(&mut self, checkpoints: &[Checkpoint], now_ms: i64) -> Vec<Unresumed> {
        let mut refused = Vec::new();
        for cp in checkpoints {
            let Some(g) = self.gpus.iter_mut().find(|g| g.sensor == cp.sensor) else {
                continue;
            };
            let Energy::Counter { last_mj } = &mut g.energy else {
                continue;
            };
            // The counter does not wrap, but a driver reload during a long
            // downtime followed by more energy than before would look like
            // progress: bridge short downtimes only.
            let down_ms = now_ms - cp.at_ms;
            if !(0..=MAX_BRIDGE_MS).contains(&down_ms) {
                refused.push(Unresumed::TooLong {
                    sensor: cp.sensor.clone(),
                    down_ms,
                    safe_ms: MAX_BRIDGE_MS as u64,
                });
                continue;
            }
            *last_mj = Some(cp.raw_uj / 1000);
            g.last_ms = Some(cp.at_ms);
        }
        refused
    }

    fn poll(&mut self, now_ms: i64, sink: &mut Sink<'_>) -> Vec<PollError> {
        let mut errors = Vec::new();
        for g in &mut self.gpus {
            let s = self.backend.read(g.meta.index);
            let gauge = |quantity, value: f64| Gauge {
                sensor: g.sensor.clone(),
                quantity,
                value,
                at_ms: now_ms,
            };
            let power_w = s.power_mw.map(|mw| f64::from(mw) / 1000.0);
            for (q, v) in [
                (GaugeQuantity::PowerWatts, power_w),
                (
                    GaugeQuantity::PowerLimitWatts,
                    s.power_limit_mw.map(|mw| f64::from(mw) / 1000.0),
                ),
                (
                    GaugeQuantity::TemperatureCelsius,
                    s.temperature_c.map(f64::from),
                ),
                (
                    GaugeQuantity::UtilizationRatio,
                    s.utilization_pct.map(|p| f64::from(p) / 100.0),
                ),
                (
                    GaugeQuantity::MigEnabled,
                    s.mig_enabled.map(|m| if m { 1.0 } else { 0.0 }),
                ),
            ] {
                if let Some(v) = v {
                    sink.gauges.push(gauge(q, v));
                }
            }
            match &mut g.energy {
                Energy::Counter { last_mj } => {
                    let Some(mj) = s.energy_mj else {
                        errors.push(PollError {
                            sensor: g.sensor.clone(),
                            message: "total energy not readable this time".into(),
                            reset: false,
                        });
                        continue;
                    };
                    // mJ since the driver loaded, in a u64: the shared rule
                    // takes any step back as a reset (a wrap would be
                    // 1.8e16 J), never a wrap.
                    let judged = match (*last_mj, g.last_ms) {
                        (Some(prev), Some(start)) => Some((
                            prev,
                            start,
                            judge_step(prev, mj, u64::MAX, 1_000, now_ms - start, GPU_PEAK),
                        )),
                        _ => None,
                    };
                    match judged {
                        Some((_, start, Ok(Judged::Energy(step)))) => {
                            let e = Microjoules(step.energy().0.saturating_mul(1000));
                            g.total = g.total.saturating_add(e);
                            sink.readings
                                .push(reading(&g.sensor, start, now_ms, e, g.total));
                        }
                        Some((prev, _, _)) => {
                            // Backwards: the driver reloaded and the counter
                            // restarted. What was spent since the last read is
                            // unknown; start a new baseline.
                            errors.push(PollError {
                                sensor: g.sensor.clone(),
                                message: format!(
                                    "energy counter went back from {prev} to {mj} mJ: driver reloaded; new baseline"
                                ),
                                reset: true,
                            });
                            g.total = Microjoules::ZERO;
                        }
                        None => {}
                    }
                    *last_mj = Some(mj);
                    g.last_ms = Some(now_ms);
                }
                Energy::Integrated { last_w } => {
                    let Some(w) = power_w else {
                        errors.push(PollError {
                            sensor: g.sensor.clone(),
                            message: "power not readable this time".into(),
                            reset: false,
                        });
                        continue;
                    };
                    if let (Some(prev_w), Some(start)) = (*last_w, g.last_ms) {
                        let dt = now_ms - start;
                        if dt > 0 && dt <= self.max_gap_ms {
                            let e = vigie_energy::integrate_power(Watts(prev_w), Watts(w), dt);
                            g.total = g.total.saturating_add(e);
                            sink.readings
                                .push(reading(&g.sensor, start, now_ms, e, g.total));
                        }
                    }
                    *last_w = Some(w);
                    g.last_ms = Some(now_ms);
                }
            }
        }
        errors
    }
}

/// NVML through nvml-wrapper, which loads `libnvidia-ml.so.1` at run time.
pub struct NvmlBackend {
    nvml: nvml_wrapper::Nvml,
}

impl NvmlBackend {
    /// Loads and initialises NVML.
    pub fn init() -> Result<Self, GpuError> {
        use nvml_wrapper::error::NvmlError;
        match nvml_wrapper::Nvml::init() {
            Ok(nvml) => Ok(NvmlBackend { nvml }),
            Err(e @ (NvmlError::LibloadingError(_) | NvmlError::LibraryNotFound)) => {
                Err(GpuError::NoLibrary(e.to_string()))
            }
            Err(e) => Err(GpuError::Nvml(e.to_string())),
        }
    }
}

impl GpuBackend for NvmlBackend {
    fn devices(&self) -> Result<Vec<GpuMeta>, GpuError> {
        let n = self
            .nvml
            .device_count()
            .map_err(|e| GpuError::Nvml(e.to_string()))?;
        (0..n)
            .map(|index| {
                let d = self
                    .nvml
                    .device_by_index(index)
                    .map_err(|e| GpuError::Nvml(e.to_string()))?;
                Ok(GpuMeta {
                    index,
                    name: d.name().unwrap_or_else(|_| "NVIDIA GPU".into()),
                    uuid: d.uuid().unwrap_or_default(),
                })
            })
            .collect()
    }

    fn read(&self, index: u32) -> GpuSample {
        let Ok(d) = self.nvml.device_by_index(index) else {
            return GpuSample::default();
        };
        GpuSample {
            energy_mj: d.total_energy_consumption().ok(),
            power_mw: d.power_usage().ok(),
            power_limit_mw: d.enforced_power_limit().ok(),
            temperature_c: d
                .temperature(nvml_wrapper::enum_wrappers::device::TemperatureSensor::Gpu)
                .ok(),
            utilization_pct: d.utilization_rates().ok().map(|u| u.gpu),
            mig_enabled: d.mig_mode().ok().map(|m| m.current == 1),
        }
    }

    fn process_use(&self, index: u32, since_us: Option<u64>) -> (Vec<(u32, u64)>, Option<u64>) {
        let Ok(d) = self.nvml.device_by_index(index) else {
            return (Vec::new(), since_us);
        };
        let mut per_pid: std::collections::BTreeMap<u32, u64> = std::collections::BTreeMap::new();
        let mut last = since_us;
        if let Ok(samples) = d.process_utilization_stats(since_us) {
            for s in samples {
                *per_pid.entry(s.pid).or_insert(0) += u64::from(s.sm_util);
                last = Some(last.map_or(s.timestamp, |l| l.max(s.timestamp)));
            }
        }
        if per_pid.values().all(|&w| w == 0) {
            // No utilisation samples (unsupported, or none since the last
            // read): the running compute processes share alike.
            per_pid = d
                .running_compute_processes()
                .map(|ps| ps.into_iter().map(|p| (p.pid, 1)).collect())
                .unwrap_or_default();
        }
        (per_pid.into_iter().collect(), last)
    }
}

/// One simulated GPU.
#[derive(Debug, Clone, PartialEq)]
pub struct FakeGpu {
    /// Model name.
    pub name: String,
    /// What NVML would return.
    pub sample: GpuSample,
    /// Use per process, (pid, weight), returned at every read.
    pub processes: Vec<(u32, u64)>,
}

/// Simulated GPUs for tests, the demo and the overhead benchmark: shared
/// state that the test moves forward while the source reads it.
#[derive(Clone, Debug, Default)]
pub struct FakeGpus {
    gpus: Arc<Mutex<Vec<FakeGpu>>>,
}

impl FakeGpus {
    /// `n` GPUs of model `name`; with `energy_counter` false they report
    /// power only (pre-Volta).
    pub fn new(n: u32, name: &str, energy_counter: bool) -> Self {
        let gpu = FakeGpu {
            name: name.to_owned(),
            sample: GpuSample {
                energy_mj: energy_counter.then_some(0),
                power_mw: Some(60_000),
                power_limit_mw: Some(400_000),
                temperature_c: Some(40),
                utilization_pct: Some(0),
                mig_enabled: Some(false),
            },
            processes: Vec::new(),
        };
        FakeGpus {
            gpus: Arc::new(Mutex::new(vec![gpu; n as usize])),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<FakeGpu>> {
        self.gpus.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Changes GPU `i`'s state.
    pub fn update(&self, i: usize, f: impl FnOnce(&mut GpuSample)) {
        if let Some(g) = self.lock().get_mut(i) {
            f(&mut g.sample);
        }
    }

    /// Sets GPU `i`'s use per process, (pid, weight).
    pub fn set_processes(&self, i: usize, processes: Vec<(u32, u64)>) {
        if let Some(g) = self.lock().get_mut(i) {
            g.processes = processes;
        }
    }

    /// Adds `mj` to GPU `i`'s energy counter.
    pub fn spend(&self, i: usize, mj: u64) {
        self.update(i, |s| s.energy_mj = s.energy_mj.map(|e| e + mj));
    }

    /// Simulates a driver reload on GPU `i`: the counter restarts at 0.
    pub fn reload_driver(&self, i: usize) {
        self.update(i, |s| s.energy_mj = s.energy_mj.map(|_| 0));
    }
}

impl GpuBackend for FakeGpus {
    fn devices(&self) -> Result<Vec<GpuMeta>, GpuError> {
        Ok(self
            .lock()
            .iter()
            .enumerate()
            .map(|(i, g)| GpuMeta {
                index: i as u32,
                name: g.name.clone(),
                uuid: format!("GPU-fake-{i:04}"),
            })
            .collect())
    }

    fn read(&self, index: u32) -> GpuSample {
        self.lock()
            .get(index as usize)
            .map(|g| g.sample)
            .unwrap_or_default()
    }

    fn process_use(&self, index: u32, since_us: Option<u64>) -> (Vec<(u32, u64)>, Option<u64>) {
        let procs = self
            .lock()
            .get(index as usize)
            .map(|g| g.processes.clone())
            .unwrap_or_default();
        (procs, since_us)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn poll(s: &mut GpuSource, now: i64) -> (Vec<Reading>, Vec<Gauge>, Vec<PollError>) {
        let (mut r, mut g) = (Vec::new(), Vec::new());
        let e = s.poll(
            now,
            &mut Sink {
                readings: &mut r,
                gauges: &mut g,
            },
        );
        (r, g, e)
    }

    #[test]
    fn process_use_is_reported_per_gpu_sensor() {
        let gpus = FakeGpus::new(2, "H100", true);
        gpus.set_processes(1, vec![(4242, 80), (4343, 20)]);
        let mut s = GpuSource::new(Box::new(gpus.clone()), 5_000).unwrap();
        assert_eq!(
            s.process_activity(),
            vec![
                ("nvml:gpu-0".to_owned(), vec![]),
                ("nvml:gpu-1".to_owned(), vec![(4242, 80), (4343, 20)]),
            ]
        );
    }

    #[test]
    fn energy_counter_gives_exact_interval_energy() {
        let fake = FakeGpus::new(2, "NVIDIA H100 80GB HBM3", true);
        let mut s = GpuSource::new(Box::new(fake.clone()), 10_000).unwrap();
        assert!(
            s.sensors()
                .iter()
                .all(|m| m.method == Some(Method::Counter))
        );
        assert!(poll(&mut s, 1_000).0.is_empty(), "baseline");
        fake.spend(0, 350_000); // 350 J
        fake.spend(1, 1);
        let (r, g, e) = poll(&mut s, 2_000);
        assert!(e.is_empty());
        assert_eq!(r[0].sensor, "nvml:gpu-0");
        assert_eq!(
            (r[0].start_ms, r[0].end_ms, r[0].energy_uj),
            (1_000, 2_000, 350_000_000)
        );
        assert_eq!(r[0].power_w, Some(350.0));
        assert_eq!(r[1].energy_uj, 1_000);
        // 5 gauges per GPU: power, limit, temperature, utilisation, MIG.
        assert_eq!(g.len(), 10);
        assert!(
            g.iter()
                .any(|x| x.quantity == GaugeQuantity::PowerLimitWatts && x.value == 400.0)
        );
    }

    #[test]
    fn a_driver_reload_is_a_new_baseline_never_a_wrap() {
        let fake = FakeGpus::new(1, "A100", true);
        let mut s = GpuSource::new(Box::new(fake.clone()), 10_000).unwrap();
        fake.spend(0, 5_000_000);
        poll(&mut s, 0);
        fake.spend(0, 100);
        poll(&mut s, 1_000);
        fake.reload_driver(0);
        fake.spend(0, 40);
        let (r, _, e) = poll(&mut s, 2_000);
        assert!(r.is_empty(), "no energy invented across the reload");
        assert!(e[0].message.contains("driver reloaded"), "{e:?}");
        assert!(e[0].reset, "counted as a reset");
        fake.spend(0, 60);
        let (r, _, _) = poll(&mut s, 3_000);
        assert_eq!(r[0].energy_uj, 60_000);
        assert_eq!(
            r[0].cumulative_uj, 60_000,
            "cumulative restarts with the counter"
        );
    }

    #[test]
    fn a_restart_resumes_the_counter_and_counts_the_downtime() {
        let fake = FakeGpus::new(1, "H100", true);
        let mut first = GpuSource::new(Box::new(fake.clone()), 10_000).unwrap();
        poll(&mut first, 0);
        fake.spend(0, 10);
        poll(&mut first, 1_000);
        let cps = first.checkpoints();
        drop(first);
        fake.spend(0, 500); // while the agent was down
        let mut second = GpuSource::new(Box::new(fake.clone()), 10_000).unwrap();
        assert!(second.resume(&cps, 30_000).is_empty());
        let (r, _, _) = poll(&mut second, 30_000);
        assert_eq!((r[0].start_ms, r[0].energy_uj), (1_000, 500_000));
        let mut third = GpuSource::new(Box::new(fake), 10_000).unwrap();
        assert_eq!(third.resume(&cps, 1_000 + 2 * MAX_BRIDGE_MS).len(), 1);
    }

    #[test]
    fn without_a_counter_power_is_integrated_and_marked() {
        let fake = FakeGpus::new(1, "Tesla P100", false);
        let mut s = GpuSource::new(Box::new(fake.clone()), 10_000).unwrap();
        assert_eq!(s.sensors()[0].method, Some(Method::IntegratedPower));
        fake.update(0, |x| x.power_mw = Some(100_000));
        poll(&mut s, 0);
        fake.update(0, |x| x.power_mw = Some(200_000));
        let (r, _, _) = poll(&mut s, 2_000);
        // (100 + 200) / 2 W x 2 s = 300 J.
        assert_eq!(r[0].energy_uj, 300_000_000);
        // Too long a gap: not integrated.
        let (r, _, _) = poll(&mut s, 60_000);
        assert!(r.is_empty());
    }

    /// On a host with an NVIDIA GPU and driver:
    /// `cargo test -p vigie-agent --lib gpu::tests::real_gpu -- --ignored --nocapture`
    #[test]
    #[ignore = "needs an NVIDIA GPU and driver"]
    fn real_gpu() {
        let backend = NvmlBackend::init().unwrap();
        let mut s = GpuSource::new(Box::new(backend), 10_000).unwrap();
        assert!(!s.is_empty(), "no GPU found");
        for m in s.sensors() {
            println!("sensor {} ({}) method {:?}", m.name, m.source, m.method);
        }
        poll(&mut s, 0);
        std::thread::sleep(std::time::Duration::from_millis(1_000));
        let (r, g, e) = poll(&mut s, 1_000);
        for x in &r {
            println!(
                "reading {} {} uJ over {} ms ({:?} W)",
                x.sensor,
                x.energy_uj,
                x.end_ms - x.start_ms,
                x.power_w
            );
        }
        for x in &g {
            println!("gauge {} {} = {}", x.sensor, x.quantity.as_str(), x.value);
        }
        assert!(e.is_empty(), "{e:?}");
        assert_eq!(r.len(), s.inventory().len(), "one reading per GPU");
        for x in &r {
            // An idle datacenter GPU draws tens of watts, never zero, never kilowatts.
            let w = x.power_w.unwrap();
            assert!(w > 5.0 && w < 2_000.0, "{w} W");
        }
    }
}
