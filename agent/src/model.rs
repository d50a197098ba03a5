//! The host model: for machines without RAPL (VMs, some cloud and ARM
//! hosts), power estimated from CPU utilisation with a linear idle-to-max
//! curve. Its readings are `estimated`, and the collector keeps them apart
//! in every total.

use crate::source::{PollError, Sink, Source};
use vigie_energy::{Microjoules, average_power};
use vigie_protocol::{Method, Quality, Reading, SensorMeta};

/// Average CPU utilisation since the previous call, 0 to 1.
pub trait CpuLoad: Send {
    /// `None` on the first call (nothing to average yet) or on failure.
    fn utilization(&mut self) -> Option<f64>;
}

/// CPU utilisation from sysinfo (`/proc/stat` on Linux).
pub struct SysinfoLoad {
    sys: Option<sysinfo::System>,
    primed: bool,
}

impl SysinfoLoad {
    /// Starts measuring.
    pub fn new() -> Self {
        let mut sys = sysinfo::System::new().ok();
        if let Some(s) = &mut sys {
            s.refresh_cpu_usage();
        }
        SysinfoLoad { sys, primed: false }
    }
}

impl Default for SysinfoLoad {
    fn default() -> Self {
        Self::new()
    }
}

impl CpuLoad for SysinfoLoad {
    fn utilization(&mut self) -> Option<f64> {
        let sys = self.sys.as_mut()?;
        sys.refresh_cpu_usage();
        if !self.primed {
            self.primed = true;
            return None;
        }
        let u = f64::from(sys.global_cpu_usage()) / 100.0;
        u.is_finite().then_some(u.clamp(0.0, 1.0))
    }
}

/// The linear power model of a host.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PowerCurve {
    /// Power at 0 % CPU, W.
    pub idle_w: f64,
    /// Power at 100 % CPU, W.
    pub max_w: f64,
}

impl PowerCurve {
    /// Power at utilisation `u` (0 to 1).
    pub fn power(&self, u: f64) -> f64 {
        self.idle_w + (self.max_w - self.idle_w) * u.clamp(0.0, 1.0)
    }
}

/// The model source: one `model:host` sensor.
pub struct ModelSource {
    load: Box<dyn CpuLoad>,
    curve: PowerCurve,
    last_ms: Option<i64>,
    total: Microjoules,
}

/// Name of the model's sensor.
pub const SENSOR: &str = "model:host";

impl ModelSource {
    /// A model over `load` with `curve`.
    pub fn new(load: Box<dyn CpuLoad>, curve: PowerCurve) -> Self {
        ModelSource {
            load,
            curve,
            last_ms: None,
            total: Microjoules::ZERO,
        }
    }
}

impl Source for ModelSource {
    fn kind(&self) -> &'static str {
        "model"
    }

    fn sensors(&self) -> Vec<SensorMeta> {
        vec![SensorMeta {
            name: SENSOR.into(),
            kind: "model".into(),
            domain: "host".into(),
            source: format!(
                "linear CPU model, {} W idle to {} W at full load",
                self.curve.idle_w, self.curve.max_w
            ),
            max_range_uj: None,
            method: Some(Method::Model),
            topology: None,
            scope: None,
        }]
    }

    fn poll(&mut self, now_ms: i64, sink: &mut Sink<'_>) -> Vec<PollError> {
        let u = self.load.utilization();
        let start = self.last_ms.replace(now_ms);
        let (Some(u), Some(start)) = (u, start) else {
            return Vec::new();
        };
        let dt = now_ms - start;
        if dt <= 0 {
            return Vec::new();
        }
        let w = self.curve.power(u);
        let uj = (w * dt as f64 * 1000.0).round();
        let e = Microjoules(if uj > 0.0 { uj as u64 } else { 0 });
        self.total = self.total.saturating_add(e);
        sink.readings.push(Reading {
            sensor: SENSOR.into(),
            start_ms: start,
            end_ms: now_ms,
            energy_uj: e.0,
            cumulative_uj: self.total.0,
            power_w: average_power(e, dt).map(|p| (p.0 * 1000.0).round() / 1000.0),
            quality: Quality::Estimated,
        });
        Vec::new()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    struct Script(Vec<Option<f64>>);
    impl CpuLoad for Script {
        fn utilization(&mut self) -> Option<f64> {
            if self.0.is_empty() {
                None
            } else {
                self.0.remove(0)
            }
        }
    }

    #[test]
    fn estimated_energy_follows_the_curve() {
        let curve = PowerCurve {
            idle_w: 100.0,
            max_w: 300.0,
        };
        let mut m = ModelSource::new(Box::new(Script(vec![None, Some(0.5), Some(1.0)])), curve);
        let (mut r, mut g) = (Vec::new(), Vec::new());
        let mut sink = Sink {
            readings: &mut r,
            gauges: &mut g,
        };
        m.poll(0, &mut sink);
        m.poll(10_000, &mut sink);
        m.poll(12_000, &mut sink);
        // 50 %: 200 W x 10 s = 2000 J; 100 %: 300 W x 2 s = 600 J.
        assert_eq!(r.len(), 2);
        assert_eq!(
            (r[0].energy_uj, r[0].quality),
            (2_000_000_000, Quality::Estimated)
        );
        assert_eq!(r[1].energy_uj, 600_000_000);
        assert_eq!(r[1].cumulative_uj, 2_600_000_000);
        assert_eq!(m.sensors()[0].method, Some(Method::Model));
    }

    #[test]
    fn real_cpu_load_is_between_zero_and_one() {
        let mut l = SysinfoLoad::new();
        assert_eq!(l.utilization(), None);
        std::thread::sleep(std::time::Duration::from_millis(250));
        let u = l.utilization().unwrap();
        assert!((0.0..=1.0).contains(&u), "{u}");
    }
}
