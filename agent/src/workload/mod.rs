//! Energy per workload. At each sample the agent reads CPU time per
//! workload (cgroup v2 `cpu.stat`, or `/proc/<pid>/stat` at the process
//! level) and GPU use per process, and splits each new reading of a host
//! sensor (RAPL, the host model) and of each GPU with
//! [`vigie_energy::attribute`]: idle from a configured power or a learned
//! baseline, the rest by activity share, the top `max_workloads` kept and
//! the rest as `other`, exact to the µJ. The splits travel in the batch
//! beside the readings they split ([`vigie_protocol::WorkloadSplit`]).
//!
//! Roots are configuration ([`WorkloadsConfig`]): tests and the demo point
//! them at a [`FakeCgroups`](https://docs.rs/vigie-testkit) tree.

pub mod cpu;
pub mod identify;

pub use identify::{Level, Workload};

use cpu::{CpuReader, Deltas, Interval};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use vigie_energy::{IdleBaseline, LearnedIdle, Microjoules, Watts, attribute};
use vigie_protocol::{
    ActivityBasis, MAX_LABEL_VALUE_BYTES, MAX_WORKLOAD_ID_BYTES, MAX_WORKLOAD_LABELS, Reading,
    WorkloadEnergy, WorkloadKind, WorkloadSplit,
};

/// `[workloads]`: energy per workload.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadsConfig {
    /// Split energy per workload and send it with each batch.
    #[serde(default)]
    pub enabled: bool,
    /// The cgroup v2 mount.
    #[serde(default = "default_cgroup_root")]
    pub cgroup_root: PathBuf,
    /// The proc mount (process level, and the cgroup of GPU processes).
    #[serde(default = "default_proc_root")]
    pub proc_root: PathBuf,
    /// `service`, `container` or `process`.
    #[serde(default = "default_level")]
    pub level: Level,
    /// Workloads kept per split (most energy first); the rest is `other`.
    #[serde(default = "default_max_workloads")]
    pub max_workloads: usize,
    /// Idle power per sensor, W (`"rapl:package-0" = 35.0`); a sensor not
    /// named here learns its baseline (lowest interval power seen).
    #[serde(default)]
    pub idle_watts: BTreeMap<String, f64>,
    /// Sensors to split; empty: every `rapl:` sensor and `model:host` by
    /// CPU time, every `nvml:` GPU by GPU use.
    #[serde(default)]
    pub sensors: Vec<String>,
    /// The kernel's USER_HZ, ticks per second of `/proc/<pid>/stat`.
    #[serde(default = "default_clock_ticks")]
    pub clock_ticks: u64,
    /// A Kubernetes pod list in the kubelet's `/pods` JSON shape (kept
    /// current by another process): pods and containers get `namespace`
    /// and `pod` labels from it. Re-read when it changes. None: the pod
    /// uid alone.
    #[serde(default)]
    pub pod_list: Option<PathBuf>,
}

fn default_cgroup_root() -> PathBuf {
    PathBuf::from("/sys/fs/cgroup")
}
fn default_proc_root() -> PathBuf {
    PathBuf::from("/proc")
}
fn default_level() -> Level {
    Level::Service
}
fn default_max_workloads() -> usize {
    20
}
fn default_clock_ticks() -> u64 {
    100
}

impl Default for WorkloadsConfig {
    fn default() -> Self {
        WorkloadsConfig {
            enabled: false,
            cgroup_root: default_cgroup_root(),
            proc_root: default_proc_root(),
            level: default_level(),
            max_workloads: default_max_workloads(),
            idle_watts: BTreeMap::new(),
            sensors: Vec::new(),
            clock_ticks: default_clock_ticks(),
            pod_list: None,
        }
    }
}

/// GPU use per process behind one GPU sensor since the last sample:
/// (pid, weight).
pub type GpuActivity = (String, Vec<(u32, u64)>);

/// What attribution met since the agent started (logged at the stop).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Cgroups or processes gone between two reads: their last partial
    /// interval went to `unattributed` (through the host's total).
    pub vanished: u64,
    /// Counters that went back: new baselines.
    pub resets: u64,
    /// Cgroups or processes that could not be read.
    pub unreadable: u64,
    /// Reads cut short by the bound on cgroups.
    pub truncated: u64,
}

/// Pod names by uid, from a pod list file.
#[derive(Debug, Default)]
struct PodNames {
    modified: Option<std::time::SystemTime>,
    names: BTreeMap<String, (String, String)>,
}

/// `(uid, namespace, name)` of each pod in a kubelet `/pods` document.
fn parse_pod_list(text: &str) -> Option<BTreeMap<String, (String, String)>> {
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    let items = v.get("items")?.as_array()?;
    Some(
        items
            .iter()
            .filter_map(|p| {
                let m = p.get("metadata")?;
                let s = |k: &str| m.get(k).and_then(|x| x.as_str()).map(str::to_owned);
                Some((s("uid")?, (s("namespace")?, s("name")?)))
            })
            .collect(),
    )
}

impl PodNames {
    /// Re-reads `path` when its modification time changed; keeps the last
    /// good list when it cannot be read.
    fn refresh(&mut self, path: &std::path::Path) {
        let Ok(modified) = std::fs::metadata(path).and_then(|m| m.modified()) else {
            return;
        };
        if self.modified == Some(modified) {
            return;
        }
        self.modified = Some(modified);
        match std::fs::read_to_string(path)
            .ok()
            .as_deref()
            .and_then(parse_pod_list)
        {
            Some(names) => self.names = names,
            None => {
                tracing::warn!(path = %path.display(), "pod list unreadable; keeping the last one")
            }
        }
    }

    /// Adds `namespace` and `pod` to a pod's or container's labels.
    fn label(&self, kind: WorkloadKind, id: &str, labels: &mut BTreeMap<String, String>) {
        let uid = match kind {
            WorkloadKind::Pod => id.to_owned(),
            WorkloadKind::Container => match labels.get("pod_uid") {
                Some(u) => u.clone(),
                None => return,
            },
            _ => return,
        };
        if let Some((ns, name)) = self.names.get(&uid) {
            labels.insert("namespace".into(), ns.clone());
            labels.insert("pod".into(), name.clone());
        }
    }
}

/// Splits each sample's readings among workloads.
pub struct Attributor {
    cfg: WorkloadsConfig,
    reader: CpuReader,
    deltas: Deltas,
    learned: BTreeMap<String, LearnedIdle>,
    stats: Stats,
    pods: PodNames,
}

type Key = (WorkloadKind, String);

/// At most `max` bytes of `s`, cut on a character boundary.
fn cut(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

impl Attributor {
    /// An attributor reading the roots of `cfg`.
    pub fn new(cfg: &WorkloadsConfig) -> Self {
        Attributor {
            reader: CpuReader {
                cgroup_root: cfg.cgroup_root.clone(),
                proc_root: cfg.proc_root.clone(),
                level: cfg.level,
                ticks_per_s: cfg.clock_ticks,
            },
            cfg: cfg.clone(),
            deltas: Deltas::default(),
            learned: BTreeMap::new(),
            stats: Stats::default(),
            pods: PodNames::default(),
        }
    }

    /// What it met so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    fn splits_by_cpu(&self, sensor: &str) -> bool {
        if self.cfg.sensors.is_empty() {
            sensor.starts_with("rapl:") || sensor == crate::model::SENSOR
        } else {
            !sensor.starts_with("nvml:") && self.cfg.sensors.iter().any(|s| s == sensor)
        }
    }

    fn splits_gpu(&self, sensor: &str) -> bool {
        sensor.starts_with("nvml:")
            && (self.cfg.sensors.is_empty() || self.cfg.sensors.iter().any(|s| s == sensor))
    }

    /// Reads CPU time now and splits `readings` (what the sources read at
    /// this sample) with it, and GPU readings with `gpu`. The first call
    /// only sets the CPU baseline: readings it splits (a resumed counter's
    /// downtime) are all idle and unattributed.
    pub fn attribute(&mut self, readings: &[Reading], gpu: &[GpuActivity]) -> Vec<WorkloadSplit> {
        let snap = self.reader.read();
        self.stats.unreadable += snap.unreadable;
        self.stats.truncated += u64::from(snap.truncated);
        let interval = self.deltas.step(snap);
        if let Some(i) = &interval {
            self.stats.vanished += i.vanished;
            self.stats.resets += i.resets;
        }
        let (cpu, mut cpu_labels, unassigned) = by_key(interval.as_ref());
        if let Some(path) = &self.cfg.pod_list {
            self.pods.refresh(path);
            for ((kind, id), l) in cpu_labels.iter_mut() {
                self.pods.label(*kind, id, l);
            }
        }
        let mut out = Vec::new();
        for r in readings {
            if self.splits_by_cpu(&r.sensor) {
                out.push(self.split(r, &cpu, &cpu_labels, unassigned, ActivityBasis::CpuTime));
            } else if self.splits_gpu(&r.sensor) {
                let procs = gpu
                    .iter()
                    .find(|(s, _)| *s == r.sensor)
                    .map_or(&[][..], |(_, p)| &p[..]);
                let mut act: BTreeMap<Key, u64> = BTreeMap::new();
                let mut labels: BTreeMap<Key, BTreeMap<String, String>> = BTreeMap::new();
                for &(pid, weight) in procs {
                    let mut w = self.reader.workload_of_pid(pid);
                    self.pods.label(w.kind, &w.id, &mut w.labels);
                    let key = (w.kind, w.id);
                    *act.entry(key.clone()).or_insert(0) += weight;
                    labels.entry(key).or_insert(w.labels);
                }
                let act: Vec<(Key, u64)> = act.into_iter().collect();
                out.push(self.split(r, &act, &labels, 0, ActivityBasis::GpuUse));
            }
        }
        out
    }

    fn split(
        &mut self,
        r: &Reading,
        activity: &[(Key, u64)],
        labels: &BTreeMap<Key, BTreeMap<String, String>>,
        unassigned: u64,
        basis: ActivityBasis,
    ) -> WorkloadSplit {
        let duration_ms = r.end_ms.saturating_sub(r.start_ms);
        let learned = self.learned.entry(r.sensor.clone()).or_default();
        let idle = match self.cfg.idle_watts.get(&r.sensor) {
            Some(w) => IdleBaseline::Power(Watts(*w)),
            None => learned.baseline(duration_ms),
        }
        .energy(duration_ms);
        let energy = Microjoules(r.energy_uj);
        let a = attribute(energy, idle, activity, unassigned, self.cfg.max_workloads);
        // After attributing: an interval never sets its own baseline.
        learned.observe(energy, duration_ms);
        WorkloadSplit {
            sensor: r.sensor.clone(),
            start_ms: r.start_ms,
            end_ms: r.end_ms,
            energy_uj: r.energy_uj,
            idle_uj: a.idle.0,
            unattributed_uj: a.unattributed.0,
            other_uj: a.other.0,
            other_count: a.other_count as u64,
            quality: r.quality,
            basis,
            workloads: a
                .workloads
                .into_iter()
                .map(|((kind, id), e)| WorkloadEnergy {
                    labels: labels
                        .get(&(kind, id.clone()))
                        .map(|l| {
                            l.iter()
                                .take(MAX_WORKLOAD_LABELS)
                                .map(|(k, v)| (k.clone(), cut(v, MAX_LABEL_VALUE_BYTES)))
                                .collect()
                        })
                        .unwrap_or_default(),
                    kind,
                    id: cut(&id, MAX_WORKLOAD_ID_BYTES),
                    energy_uj: e.0,
                })
                .collect(),
        }
    }
}

/// CPU µs per (kind, id), the labels of each, and the unassigned µs.
#[allow(clippy::type_complexity)]
fn by_key(
    interval: Option<&Interval>,
) -> (
    Vec<(Key, u64)>,
    BTreeMap<Key, BTreeMap<String, String>>,
    u64,
) {
    let Some(i) = interval else {
        return (Vec::new(), BTreeMap::new(), 0);
    };
    let mut act: BTreeMap<Key, u64> = BTreeMap::new();
    let mut labels = BTreeMap::new();
    for (w, us) in &i.per_workload {
        let key = (w.kind, w.id.clone());
        *act.entry(key.clone()).or_insert(0) += us;
        labels.entry(key).or_insert_with(|| w.labels.clone());
    }
    (act.into_iter().collect(), labels, i.unassigned_us)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::batcher::{Batcher, Identity};
    use crate::config::AgentConfig;
    use vigie_testkit::{FakeCgroups, FakePowercap};

    const T0: i64 = 1_795_000_000_000;

    #[test]
    fn a_batch_splits_rapl_energy_by_cpu_share_exactly() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("powercap")).unwrap();
        let rapl =
            FakePowercap::single_socket(&dir.path().join("powercap"), 262_143_328_850, 0).unwrap();
        let cg = FakeCgroups::create(dir.path()).unwrap();
        let pod = "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod0b5d3e9c_6f2a_4d8e_9b1c_2a7f4e6d8c10.slice";
        for (path, us) in [
            ("system.slice/nginx.service", 1_000),
            ("system.slice/postgresql.service", 1_000),
            (pod, 1_000),
            ("system.slice/slurmstepd.scope/job_1234", 0),
        ] {
            cg.add(path, us).unwrap();
        }
        cg.set_root_usage(10_000).unwrap();

        let mut cfg = AgentConfig::default();
        cfg.rapl.root = rapl.root().to_owned();
        cfg.gpu.enabled = false;
        cfg.model.mode = crate::config::ModelMode::Off;
        let pod_list = dir.path().join("pods.json");
        std::fs::write(
            &pod_list,
            r#"{"kind":"PodList","apiVersion":"v1","items":[{"metadata":{"name":"cart-5d9f7","namespace":"shop","uid":"0b5d3e9c-6f2a-4d8e-9b1c-2a7f4e6d8c10"},"spec":{}}]}"#,
        )
        .unwrap();
        cfg.workloads = WorkloadsConfig {
            enabled: true,
            cgroup_root: cg.cgroup_root(),
            proc_root: cg.proc_root(),
            pod_list: Some(pod_list),
            max_workloads: 3,
            idle_watts: BTreeMap::from([("rapl:package-0".to_owned(), 20.0)]),
            ..WorkloadsConfig::default()
        };
        let mut built = crate::build_sources(&cfg, crate::Hardware::default()).unwrap();
        let mut attributor = Attributor::new(&cfg.workloads);
        let mut batcher = Batcher::new(Identity {
            site: "par1".into(),
            host: "node-01".into(),
            boot_id: "b".into(),
            epoch: 1,
        });
        let errors = crate::sample(&mut built.sources, &mut batcher, Some(&mut attributor), T0);
        assert!(errors.is_empty(), "{errors:?}");

        // One second: 100 J on the package; CPU 4:3:2:1 among the job, the
        // pod, nginx and postgresql, and 1 part the kernel's.
        rapl.advance("intel-rapl:0", 100_000_000).unwrap();
        for (path, us) in [
            ("system.slice/slurmstepd.scope/job_1234", 400_000),
            (pod, 300_000),
            ("system.slice/nginx.service", 200_000),
            ("system.slice/postgresql.service", 100_000),
        ] {
            cg.add_usage(path, us).unwrap();
        }
        cg.set_root_usage(10_000 + 1_100_000).unwrap();
        crate::sample(
            &mut built.sources,
            &mut batcher,
            Some(&mut attributor),
            T0 + 1_000,
        );
        let batch = batcher.cut().unwrap();

        // What a collector decodes: valid, and the same.
        let topic =
            vigie_protocol::Topic::new("par1", "node-01", vigie_protocol::TopicKind::Telemetry)
                .unwrap();
        let decoded = vigie_protocol::decode_telemetry(
            &topic,
            &serde_json::to_vec(&batch).unwrap(),
            T0 + 2_000,
            &vigie_protocol::Limits::default(),
        )
        .unwrap();
        assert_eq!(decoded, batch);

        let package = batch
            .readings
            .iter()
            .find(|r| r.sensor == "rapl:package-0")
            .unwrap();
        let split = batch
            .workloads
            .iter()
            .find(|s| s.sensor == "rapl:package-0")
            .unwrap();
        assert_eq!(package.energy_uj, 100_000_000);
        let sum: u64 = split.workloads.iter().map(|w| w.energy_uj).sum::<u64>()
            + split.other_uj
            + split.idle_uj
            + split.unattributed_uj;
        assert_eq!(sum, package.energy_uj, "{split:?}");
        // 20 W idle over 1 s; 80 J active in 11 parts of CPU time.
        assert_eq!(split.idle_uj, 20_000_000);
        let got: Vec<(WorkloadKind, &str, u64)> = split
            .workloads
            .iter()
            .map(|w| (w.kind, w.id.as_str(), w.energy_uj))
            .collect();
        let part = 80_000_000 / 11; // 7,272,727.27 µJ
        assert_eq!(
            got,
            vec![
                (WorkloadKind::SlurmJob, "1234", 29_090_909),
                (
                    WorkloadKind::Pod,
                    "0b5d3e9c-6f2a-4d8e-9b1c-2a7f4e6d8c10",
                    21_818_182
                ),
                (WorkloadKind::Service, "nginx.service", 14_545_454),
            ]
        );
        assert!(got[0].2.abs_diff(4 * part) <= 4);
        let labels: Vec<(&str, &str)> = split.workloads[1]
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(labels, [("namespace", "shop"), ("pod", "cart-5d9f7")]);
        // postgresql past the bound of 3: other.
        assert_eq!((split.other_count, split.other_uj), (1, 7_272_727));
        assert_eq!(
            split.unattributed_uj,
            80_000_000 - 29_090_909 - 21_818_182 - 14_545_454 - 7_272_727
        );
        assert_eq!(split.basis, ActivityBasis::CpuTime);
        assert_eq!(attributor.stats(), Stats::default());
    }

    #[test]
    fn gpu_energy_is_split_by_process_use_and_mapped_to_workloads() {
        let dir = tempfile::tempdir().unwrap();
        let cg = FakeCgroups::create(dir.path()).unwrap();
        cg.add("system.slice/slurmstepd.scope/job_7", 0).unwrap();
        cg.add_process(
            100,
            "train",
            0,
            "system.slice/slurmstepd.scope/job_7/step_0/user/task_0",
        )
        .unwrap();
        cg.add_process(200, "infer", 0, "system.slice/triton.service")
            .unwrap();
        let mut a = Attributor::new(&WorkloadsConfig {
            enabled: true,
            cgroup_root: cg.cgroup_root(),
            proc_root: cg.proc_root(),
            idle_watts: BTreeMap::from([("nvml:gpu-0".to_owned(), 50.0)]),
            ..WorkloadsConfig::default()
        });
        let r = Reading {
            sensor: "nvml:gpu-0".into(),
            start_ms: T0,
            end_ms: T0 + 1_000,
            energy_uj: 350_000_000,
            cumulative_uj: 350_000_000,
            power_w: None,
            quality: vigie_protocol::Quality::Measured,
        };
        let gpu: Vec<GpuActivity> = vec![("nvml:gpu-0".into(), vec![(100, 75), (200, 25)])];
        let s = a.attribute(std::slice::from_ref(&r), &gpu).remove(0);
        assert_eq!(s.basis, ActivityBasis::GpuUse);
        assert_eq!(s.idle_uj, 50_000_000);
        let got: Vec<(WorkloadKind, &str, u64)> = s
            .workloads
            .iter()
            .map(|w| (w.kind, w.id.as_str(), w.energy_uj))
            .collect();
        assert_eq!(
            got,
            vec![
                (WorkloadKind::SlurmJob, "7", 225_000_000),
                (WorkloadKind::Service, "triton.service", 75_000_000),
            ]
        );
        assert_eq!(s.unattributed_uj, 0);
        // A GPU nobody used: its active energy is unattributed.
        let s = a.attribute(std::slice::from_ref(&r), &[]).remove(0);
        assert!(s.workloads.is_empty());
        assert_eq!(s.unattributed_uj, 300_000_000);
    }

    #[test]
    fn without_cpu_activity_the_active_energy_is_unattributed_and_idle_is_learned() {
        let dir = tempfile::tempdir().unwrap();
        let cg = FakeCgroups::create(dir.path()).unwrap();
        let mut a = Attributor::new(&WorkloadsConfig {
            enabled: true,
            cgroup_root: cg.cgroup_root(),
            proc_root: cg.proc_root(),
            ..WorkloadsConfig::default()
        });
        let r = |i: i64, uj: u64| Reading {
            sensor: "rapl:package-0".into(),
            start_ms: T0 + i * 1_000,
            end_ms: T0 + (i + 1) * 1_000,
            energy_uj: uj,
            cumulative_uj: uj,
            power_w: None,
            quality: vigie_protocol::Quality::Measured,
        };
        // First: baseline read, nothing learned yet: all unattributed.
        let s = a.attribute(&[r(0, 60_000_000)], &[]).remove(0);
        assert_eq!((s.idle_uj, s.unattributed_uj), (0, 60_000_000));
        // 60 W learned; then 40 W: idle clamped to it.
        let s = a.attribute(&[r(1, 40_000_000)], &[]).remove(0);
        assert_eq!((s.idle_uj, s.unattributed_uj), (40_000_000, 0));
        // 40 W learned.
        let s = a.attribute(&[r(2, 100_000_000)], &[]).remove(0);
        assert_eq!((s.idle_uj, s.unattributed_uj), (40_000_000, 60_000_000));
        // Not a split sensor.
        assert!(
            a.attribute(
                &[Reading {
                    sensor: "pdu:outlet-1".into(),
                    ..r(3, 1)
                }],
                &[]
            )
            .is_empty()
        );
    }
}
