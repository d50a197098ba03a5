//! `vigie-agent probe`: what this agent would read, with a live value for
//! every sensor, and for every source not in use, why (no permission and
//! the fix, no library, not configured, device unreachable).

use crate::config::AgentConfig;
use crate::device::{self, Value};
use crate::source::Sink;
use crate::{AgentError, Hardware, SourceNote, build_sources};
use serde::Serialize;
use std::time::Duration;

/// One sensor with what it read.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ProbedSensor {
    /// Sensor name as published.
    pub name: String,
    /// Where it is read.
    pub source: String,
    /// Average power over the probe window, W (energy sensors).
    pub power_w: Option<f64>,
    /// Energy over the probe window, µJ.
    pub energy_uj: Option<u64>,
    /// `measured` or `estimated`.
    pub quality: Option<String>,
    /// Other values: `quantity=value`.
    pub gauges: Vec<String>,
}

/// One source.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ProbedSource {
    /// `rapl`, `nvml`, `model`, or a device's name.
    pub name: String,
    /// Protocol for devices (`snmp`...), else the same as `name`.
    pub kind: String,
    /// In use and read.
    pub ok: bool,
    /// Why not, and what to do.
    pub reason: Option<String>,
    /// What it read.
    pub sensors: Vec<ProbedSensor>,
    /// What the device showed and is not read, with why (devices only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unread: Vec<String>,
}

/// The whole report.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    /// Host name the agent would publish as.
    pub host: String,
    /// Site.
    pub site: String,
    /// Probe window, ms.
    pub window_ms: u64,
    /// Every source.
    pub sources: Vec<ProbedSource>,
}

fn note_reason(notes: &[SourceNote], source: &str) -> Option<String> {
    notes
        .iter()
        .find(|n| n.source == source)
        .and_then(|n| n.unused.clone())
}

/// Reads everything twice, `window` apart, and reports.
pub async fn probe(cfg: &AgentConfig, hw: Hardware, window: Duration) -> Report {
    let host = cfg.host.clone().unwrap_or_else(crate::host::host_name);
    let mut out = Vec::new();
    // A RAPL error (no permission) is a finding here, not a stop.
    let (built, rapl_error) = match build_sources(cfg, hw) {
        Ok(b) => (Some(b), None),
        Err(AgentError::Rapl(e)) => {
            let mut without = cfg.clone();
            without.rapl.enabled = false;
            (build_sources(&without, Hardware::default()).ok(), Some(e))
        }
        Err(e) => {
            out.push(ProbedSource {
                name: "agent".into(),
                kind: "agent".into(),
                ok: false,
                reason: Some(e.to_string()),
                sensors: Vec::new(),
                unread: Vec::new(),
            });
            (None, None)
        }
    };
    let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
    if let Some(mut built) = built {
        let (mut r, mut g) = (Vec::new(), Vec::new());
        let t0 = vigie_service::now_ms();
        built.sources.poll(
            t0,
            &mut Sink {
                readings: &mut r,
                gauges: &mut g,
            },
        );
        tokio::time::sleep(window).await;
        let (mut readings, mut gauges) = (Vec::new(), Vec::new());
        let errors = built.sources.poll(
            t0 + window_ms as i64,
            &mut Sink {
                readings: &mut readings,
                gauges: &mut gauges,
            },
        );
        let metas = built.sources.sensors();
        for kind in ["rapl", "nvml", "model"] {
            let mut reason = note_reason(&built.notes, kind);
            if kind == "rapl"
                && let Some(e) = &rapl_error
            {
                reason = Some(e.to_string());
            }
            let sensors = metas
                .iter()
                .filter(|m| m.kind == kind)
                .map(|m| {
                    let r = readings.iter().find(|x| x.sensor == m.name);
                    let err = errors.iter().find(|e| e.sensor == m.name);
                    ProbedSensor {
                        name: m.name.clone(),
                        source: m.source.clone(),
                        power_w: r.and_then(|x| x.power_w),
                        energy_uj: r.map(|x| x.energy_uj),
                        quality: r.map(|x| format!("{:?}", x.quality).to_lowercase()),
                        gauges: gauges
                            .iter()
                            .filter(|x| x.sensor == m.name)
                            .map(|x| format!("{}={}", x.quantity.as_str(), x.value))
                            .chain(err.map(|e| format!("error={}", e.message)))
                            .collect(),
                    }
                })
                .collect();
            out.push(ProbedSource {
                name: kind.into(),
                kind: kind.into(),
                ok: reason.is_none(),
                reason,
                sensors,
                unread: Vec::new(),
            });
        }
    }
    if let Some(e) = rapl_error
        && !out.iter().any(|s| s.name == "rapl")
    {
        out.push(ProbedSource {
            name: "rapl".into(),
            kind: "rapl".into(),
            ok: false,
            reason: Some(e.to_string()),
            sensors: Vec::new(),
            unread: Vec::new(),
        });
    }
    for d in &cfg.devices {
        out.push(probe_device(d).await);
    }
    if cfg.devices.is_empty() {
        out.push(ProbedSource {
            name: "devices".into(),
            kind: "redfish, snmp, modbus, ipmi".into(),
            ok: false,
            reason: Some(
                "not configured: add [[devices]] entries for PDUs, BMCs and meters".into(),
            ),
            sensors: Vec::new(),
            unread: Vec::new(),
        });
    }
    Report {
        host,
        site: cfg.site.clone(),
        window_ms,
        sources: out,
    }
}

/// The least time `probe` gives one device's first poll.
const PROBE_DEVICE_TIMEOUT: Duration = Duration::from_secs(30);

async fn probe_device(d: &device::DeviceConfig) -> ProbedSource {
    let mut src = ProbedSource {
        name: d.name.clone(),
        kind: "device".into(),
        ok: false,
        reason: None,
        sensors: Vec::new(),
        unread: Vec::new(),
    };
    let mut dev = match device::build(d) {
        Ok(dev) => dev,
        Err(e) => {
            src.reason = Some(e.to_string());
            return src;
        }
    };
    src.kind = dev.kind().into();
    // Long enough for a driver's own timeouts and retries to end first, so
    // that its diagnosis, not this deadline, is what the user reads.
    let timeout = d.period.max(PROBE_DEVICE_TIMEOUT);
    match tokio::time::timeout(timeout, dev.poll()).await {
        Err(_) => {
            src.reason = Some(format!(
                "no complete answer within {timeout:?}: device unreachable or too slow"
            ));
        }
        Ok(Err(e)) => src.reason = Some(e.to_string()),
        Ok(Ok(values)) => {
            src.unread = dev.unread();
            // A device that answers with nothing to read is not in use.
            src.ok = !values.is_empty();
            if values.is_empty() {
                src.reason = Some(
                    "the device answers but gave no reading (every value null or missing)".into(),
                );
            }
            let mut names: Vec<&str> = values.iter().map(|v| v.point.as_str()).collect();
            names.dedup();
            for p in names {
                let mut s = ProbedSensor {
                    name: format!("{}:{p}", d.name),
                    source: dev.source(),
                    power_w: None,
                    energy_uj: None,
                    quality: None,
                    gauges: Vec::new(),
                };
                for v in values.iter().filter(|v| v.point == p) {
                    match v.value {
                        Value::PowerW(w) => s.power_w = Some(w),
                        Value::EnergyCounter {
                            raw, uj_per_unit, ..
                        } => s.gauges.push(format!(
                            "energy_register={raw} (x {} J)",
                            uj_per_unit as f64 / 1e6
                        )),
                        Value::Gauge(q, x) => s.gauges.push(format!("{}={x}", q.as_str())),
                    }
                }
                src.sensors.push(s);
            }
        }
    }
    src
}

impl Report {
    /// Human-readable text.
    pub fn render(&self) -> String {
        let mut t = format!(
            "vigie-agent probe: host {}, site {} ({} ms window)\n",
            self.host, self.site, self.window_ms
        );
        for s in &self.sources {
            let state = if s.ok { "in use" } else { "NOT IN USE" };
            t += &format!("\n{} ({}): {state}\n", s.name, s.kind);
            if let Some(r) = &s.reason {
                t += &format!("  why: {r}\n");
            }
            for u in &s.unread {
                t += &format!("  not read: {u}\n");
            }
            for x in &s.sensors {
                let power = x
                    .power_w
                    .map(|w| format!("{w:.3} W"))
                    .unwrap_or_else(|| "-".into());
                let quality = x.quality.as_deref().unwrap_or("");
                t += &format!("  {:<28} {:>14} {quality:<9} {}\n", x.name, power, x.source);
                for g in &x.gauges {
                    t += &format!("  {:<28} {g}\n", "");
                }
            }
        }
        t
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::gpu::FakeGpus;
    use vigie_testkit::FakePowercap;

    #[tokio::test(start_paused = true)]
    async fn probe_reads_each_source_and_says_why_others_are_off() {
        let dir = tempfile::tempdir().unwrap();
        let tree = FakePowercap::dual_socket(dir.path(), 262_143_328_850, 0).unwrap();
        let mut cfg = AgentConfig {
            host: Some("probe-host".into()),
            ..AgentConfig::default()
        };
        cfg.rapl.root = dir.path().to_owned();
        let gpus = FakeGpus::new(1, "H100", true);
        let hw = Hardware {
            gpus: Some(Box::new(gpus.clone())),
            ..Hardware::default()
        };
        // Energy moves during the window, on the probe's clock: time is
        // paused, so the mover's 50 ms come after the probe's first
        // reading (taken before its 200 ms sleep) and before its second,
        // however late either runs on a loaded machine.
        let mover = {
            let gpus = gpus.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                tree.advance("intel-rapl:0", 20_000_000).unwrap();
                gpus.spend(0, 30_000);
            })
        };
        let report = probe(&cfg, hw, Duration::from_millis(200)).await;
        mover.await.unwrap();
        let rapl = report.sources.iter().find(|s| s.name == "rapl").unwrap();
        assert!(rapl.ok);
        assert_eq!(
            rapl.sensors.len(),
            4,
            "2 packages + 2 dram, no core, no mmio"
        );
        let pkg = rapl
            .sensors
            .iter()
            .find(|s| s.name == "rapl:package-0")
            .unwrap();
        assert_eq!(pkg.energy_uj, Some(20_000_000));
        // 20 J over the 200 ms window is 100 W.
        assert_eq!(pkg.power_w, Some(100.0));
        let nvml = report.sources.iter().find(|s| s.name == "nvml").unwrap();
        assert!(nvml.ok);
        assert_eq!(nvml.sensors[0].energy_uj, Some(30_000_000));
        assert!(
            nvml.sensors[0]
                .gauges
                .iter()
                .any(|g| g.starts_with("temperature_celsius="))
        );
        let model = report.sources.iter().find(|s| s.name == "model").unwrap();
        assert!(!model.ok && model.reason.as_ref().unwrap().contains("RAPL measures"));
        let devices = report.sources.iter().find(|s| s.name == "devices").unwrap();
        assert!(devices.reason.as_ref().unwrap().contains("not configured"));
        let text = report.render();
        assert!(
            text.contains("rapl:package-0") && text.contains("100.000 W"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn without_rapl_the_model_steps_in_and_rapl_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = AgentConfig {
            host: Some("vm".into()),
            ..AgentConfig::default()
        };
        cfg.rapl.root = dir.path().join("no-powercap");
        cfg.gpu.enabled = false;
        let report = probe(&cfg, Hardware::default(), Duration::from_millis(150)).await;
        let rapl = report.sources.iter().find(|s| s.name == "rapl").unwrap();
        assert!(!rapl.ok);
        assert!(
            rapl.reason.as_ref().unwrap().contains("intel_rapl_msr"),
            "{rapl:?}"
        );
        let nvml = report.sources.iter().find(|s| s.name == "nvml").unwrap();
        assert!(nvml.reason.as_ref().unwrap().contains("disabled"));
        let model = report.sources.iter().find(|s| s.name == "model").unwrap();
        assert!(model.ok, "{model:?}");
        assert_eq!(model.sensors[0].quality.as_deref(), Some("estimated"));
    }
}
