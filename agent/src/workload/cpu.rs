//! CPU time per workload: cgroup v2 `cpu.stat` (`usage_usec`) under a
//! root, or `/proc/<pid>/stat` (utime + stime) under a proc root, turned
//! into per-interval deltas.

use super::identify::{Found, Level, Workload, classify, leaf};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use vigie_protocol::WorkloadKind;

/// Most cgroups looked at in one read: a bound on the work a runaway tree
/// can make the agent do each second.
const MAX_CGROUPS: usize = 20_000;

/// One read: CPU time counters by the thing that owns them (a cgroup path,
/// a process), with the workload each belongs to, and the host's total.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    /// Counter key (cgroup path, or `pid:starttime`) -> (workload, µs).
    pub counters: HashMap<String, (Workload, u64)>,
    /// Host CPU time of every workload or none, µs (root `cpu.stat`, or
    /// `/proc/stat`); `None` when unreadable.
    pub host_us: Option<u64>,
    /// Cgroups or processes that could not be read (gone while reading).
    pub unreadable: u64,
    /// Whether [`MAX_CGROUPS`] cut the walk short.
    pub truncated: bool,
}

/// `usage_usec` from a `cpu.stat` file's text.
fn usage_usec(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("usage_usec "))
        .and_then(|v| v.trim().parse().ok())
}

/// Reads CPU time per workload from the cgroup v2 tree under `root`.
pub fn read_cgroups(root: &Path, level: Level) -> Snapshot {
    let mut snap = Snapshot {
        host_us: std::fs::read_to_string(root.join("cpu.stat"))
            .ok()
            .and_then(|t| usage_usec(&t)),
        ..Snapshot::default()
    };
    // Depth-first, children in name order: the same tree reads the same way.
    let mut stack: Vec<String> = children(root, "");
    let mut seen = 0usize;
    while let Some(rel) = stack.pop() {
        seen += 1;
        if seen > MAX_CGROUPS {
            snap.truncated = true;
            break;
        }
        let dir = root.join(&rel);
        let w = match classify(&rel, level) {
            Found::Workload(w) => w,
            Found::Descend => {
                let kids = children(root, &rel);
                if !kids.is_empty() {
                    stack.extend(kids);
                    continue;
                }
                leaf(&rel)
            }
        };
        match std::fs::read_to_string(dir.join("cpu.stat"))
            .ok()
            .and_then(|t| usage_usec(&t))
        {
            Some(us) => {
                snap.counters.insert(rel, (w, us));
            }
            None => snap.unreadable += 1,
        }
    }
    snap
}

/// Child cgroups of `rel` (directories), relative paths, sorted in reverse
/// so that popping from a stack visits them in name order.
fn children(root: &Path, rel: &str) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(root.join(rel)) else {
        return Vec::new();
    };
    let mut out: Vec<String> = rd
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .map(|name| {
            if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            }
        })
        .collect();
    out.sort_unstable_by(|a, b| b.cmp(a));
    out
}

/// Fields of `/proc/<pid>/stat` after the command: (comm, utime + stime in
/// ticks, starttime in ticks). The command is in parentheses and may hold
/// spaces and parentheses itself, so the fields are counted from the last `)`.
pub fn parse_proc_stat(text: &str) -> Option<(String, u64, u64)> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_owned();
    let f: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    // f[0] is field 3 (state): utime 14, stime 15, starttime 22.
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    let start: u64 = f.get(19)?.parse().ok()?;
    Some((comm, utime.saturating_add(stime), start))
}

/// Busy CPU time of the host from `/proc/stat`'s `cpu` line, ticks: user,
/// nice, system, irq, softirq and steal (guest time is inside user).
pub fn parse_proc_stat_total(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal ...
    Some(
        [0usize, 1, 2, 5, 6, 7]
            .iter()
            .filter_map(|&i| v.get(i))
            .sum(),
    )
}

/// Reads CPU time per process under `proc_root`; `ticks_per_s` is the
/// kernel's USER_HZ (100 on Linux).
pub fn read_processes(proc_root: &Path, ticks_per_s: u64) -> Snapshot {
    let us_per_tick = 1_000_000 / ticks_per_s.max(1);
    let mut snap = Snapshot {
        host_us: std::fs::read_to_string(proc_root.join("stat"))
            .ok()
            .and_then(|t| parse_proc_stat_total(&t))
            .map(|t| t.saturating_mul(us_per_tick)),
        ..Snapshot::default()
    };
    let Ok(rd) = std::fs::read_dir(proc_root) else {
        return snap;
    };
    for e in rd.filter_map(Result::ok) {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if snap.counters.len() >= MAX_CGROUPS * 4 {
            snap.truncated = true;
            break;
        }
        match std::fs::read_to_string(e.path().join("stat"))
            .ok()
            .and_then(|t| parse_proc_stat(&t))
        {
            Some((comm, ticks, start)) => {
                let w = Workload {
                    kind: WorkloadKind::Process,
                    id: pid.to_string(),
                    labels: BTreeMap::from([("comm".to_owned(), comm)]),
                };
                snap.counters.insert(
                    format!("{pid}:{start}"),
                    (w, ticks.saturating_mul(us_per_tick)),
                );
            }
            None => snap.unreadable += 1,
        }
    }
    snap
}

/// The cgroup a process is in (cgroup v2 `0::/path` line of
/// `/proc/<pid>/cgroup`), relative to the root.
pub fn process_cgroup(proc_root: &Path, pid: u32) -> Option<String> {
    let text = std::fs::read_to_string(proc_root.join(pid.to_string()).join("cgroup")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(|p| p.trim().trim_start_matches('/').to_owned())
}

/// What one interval's CPU time was, per workload, from two reads.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Interval {
    /// CPU µs per workload in the interval.
    pub per_workload: BTreeMap<Workload, u64>,
    /// CPU µs of the host that no workload read accounts for.
    pub unassigned_us: u64,
    /// Counters that were there last time and are gone (their last
    /// partial interval is not known; the host total still has it).
    pub vanished: u64,
    /// Counters that went back (a cgroup recreated under the same name):
    /// new baselines, nothing counted for them this interval.
    pub resets: u64,
}

/// Turns successive [`Snapshot`]s into [`Interval`]s.
#[derive(Debug, Default)]
pub struct Deltas {
    prev: Option<(HashMap<String, u64>, Option<u64>)>,
}

impl Deltas {
    /// The interval since the previous snapshot; `None` for the first
    /// (a baseline).
    pub fn step(&mut self, snap: Snapshot) -> Option<Interval> {
        let now: HashMap<String, u64> = snap
            .counters
            .iter()
            .map(|(k, (_, us))| (k.clone(), *us))
            .collect();
        let prev = self.prev.replace((now, snap.host_us));
        let (prev, prev_host) = prev?;
        let mut out = Interval::default();
        for (key, (w, us)) in snap.counters {
            let d = match prev.get(&key) {
                Some(&p) if us >= p => us - p,
                Some(_) => {
                    out.resets += 1;
                    0
                }
                // New since the last read: its counter started at 0 then.
                None => us,
            };
            if d > 0 {
                *out.per_workload.entry(w).or_insert(0) += d;
            }
        }
        out.vanished = prev
            .keys()
            .filter(|k| !self.prev.as_ref().is_some_and(|(n, _)| n.contains_key(*k)))
            .count() as u64;
        let assigned: u64 = out.per_workload.values().sum();
        if let (Some(h), Some(p)) = (snap.host_us, prev_host)
            && h >= p
        {
            out.unassigned_us = (h - p).saturating_sub(assigned);
        }
        Some(out)
    }
}

/// Reads CPU time per workload at a level, from cgroups or processes.
#[derive(Debug)]
pub struct CpuReader {
    /// cgroup v2 root (`/sys/fs/cgroup`).
    pub cgroup_root: PathBuf,
    /// proc root (`/proc`).
    pub proc_root: PathBuf,
    /// Granularity.
    pub level: Level,
    /// USER_HZ.
    pub ticks_per_s: u64,
}

impl CpuReader {
    /// One read at the configured level.
    pub fn read(&self) -> Snapshot {
        match self.level {
            Level::Process => read_processes(&self.proc_root, self.ticks_per_s),
            l => read_cgroups(&self.cgroup_root, l),
        }
    }

    /// The workload process `pid` belongs to at this level (for GPU use):
    /// its cgroup's workload, or the process itself.
    pub fn workload_of_pid(&self, pid: u32) -> Workload {
        let process = || Workload {
            kind: WorkloadKind::Process,
            id: pid.to_string(),
            labels: BTreeMap::new(),
        };
        if self.level == Level::Process {
            return process();
        }
        let Some(path) = process_cgroup(&self.proc_root, pid) else {
            return process();
        };
        // The shortest prefix of the path that is a workload.
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        for n in 1..=parts.len() {
            if let Found::Workload(w) = classify(&parts[..n].join("/"), self.level) {
                return w;
            }
        }
        if parts.is_empty() {
            process()
        } else {
            leaf(&parts.join("/"))
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use vigie_testkit::FakeCgroups;

    #[test]
    fn proc_stat_with_spaces_and_parentheses_in_the_command() {
        let line = "4242 (my (odd) prog) S 1 4242 4242 0 -1 4194560 500 0 0 0 250 75 0 0 20 0 4 0 123456 1000 100 18446744073709551615";
        assert_eq!(
            parse_proc_stat(line),
            Some(("my (odd) prog".into(), 325, 123456))
        );
        assert_eq!(parse_proc_stat("1 (x) S 1"), None);
        assert_eq!(
            parse_proc_stat_total("cpu  100 5 50 9000 7 3 2 1 0 0\ncpu0 1 2 3 4\n"),
            Some(161)
        );
    }

    #[test]
    fn cgroup_workloads_and_their_deltas() {
        let dir = tempfile::tempdir().unwrap();
        let cg = FakeCgroups::create(dir.path()).unwrap();
        let root = cg.cgroup_root();
        cg.set_root_usage(1_000).unwrap();
        cg.add("system.slice/nginx.service", 100).unwrap();
        cg.add("system.slice/gone.service", 50).unwrap();
        cg.add("system.slice/again.service", 500).unwrap();
        cg.add("odd/leaf", 7).unwrap();
        let mut d = Deltas::default();
        assert!(d.step(read_cgroups(&root, Level::Service)).is_none());

        cg.add_usage("system.slice/nginx.service", 300).unwrap();
        cg.set_root_usage(2_000).unwrap();
        cg.remove("system.slice/gone.service").unwrap();
        cg.remove("system.slice/again.service").unwrap();
        cg.add("system.slice/again.service", 20).unwrap(); // recreated: went back
        cg.add("system.slice/new.service", 40).unwrap();
        let i = d.step(read_cgroups(&root, Level::Service)).unwrap();
        let got: Vec<(String, u64)> = i
            .per_workload
            .iter()
            .map(|(w, us)| (w.id.clone(), *us))
            .collect();
        // nginx 300; new 40 (all of it since it appeared); again reset;
        // the leaf did not move.
        assert_eq!(
            got,
            vec![("new.service".into(), 40), ("nginx.service".into(), 300)]
        );
        assert_eq!((i.vanished, i.resets), (1, 1));
        assert_eq!(i.unassigned_us, 1_000 - 340);
    }

    #[test]
    fn processes_and_the_cgroup_of_a_gpu_process() {
        let dir = tempfile::tempdir().unwrap();
        let cg = FakeCgroups::create(dir.path()).unwrap();
        cg.add_process(
            4242,
            "python3",
            30,
            "kubepods.slice/kubepods-pod0b5d3e9c_6f2a_4d8e_9b1c_2a7f4e6d8c10.slice/cri-containerd-abcdefabcdef.scope",
        )
        .unwrap();
        cg.set_proc_total_ticks(500).unwrap();
        let snap = read_processes(&cg.proc_root(), 100);
        assert_eq!(snap.host_us, Some(5_000_000));
        let (w, us) = snap.counters.values().next().unwrap();
        assert_eq!((w.id.as_str(), *us), ("4242", 300_000));
        assert_eq!(w.labels["comm"], "python3");
        let reader = CpuReader {
            cgroup_root: cg.cgroup_root(),
            proc_root: cg.proc_root(),
            level: Level::Service,
            ticks_per_s: 100,
        };
        let w = reader.workload_of_pid(4242);
        assert_eq!(
            (w.kind, w.id.as_str()),
            (WorkloadKind::Pod, "0b5d3e9c-6f2a-4d8e-9b1c-2a7f4e6d8c10")
        );
        let w = CpuReader {
            level: Level::Container,
            ..reader
        }
        .workload_of_pid(4242);
        assert_eq!(
            (w.kind, w.id.as_str()),
            (WorkloadKind::Container, "abcdefabcdef")
        );
    }
}
