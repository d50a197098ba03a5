//! Cost of energy per workload at one sample: one CPU-time read of every
//! workload plus the split of 8 RAPL readings (4 sockets x package and
//! DRAM), on fake trees of 100 cgroups (service level) and 500 processes
//! (process level), and on this machine's real `/sys/fs/cgroup` and
//! `/proc`. Reports the thread's CPU time per sample, which at 1 Hz is
//! also the share of one core (1 ms per sample = 0.1 %).
//!
//! `cargo bench -p vigie-agent --bench workload` (VIGIE_BENCH_ITERS sets
//! the samples per case, default 200).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::Path;
use vigie_agent::workload::{Attributor, Level, WorkloadsConfig};
use vigie_protocol::{Quality, Reading};
use vigie_testkit::FakeCgroups;

fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

fn readings(i: i64) -> Vec<Reading> {
    (0..4)
        .flat_map(|s| ["package", "dram"].map(|d| format!("rapl:{d}-{s}")))
        .map(|sensor| Reading {
            sensor,
            start_ms: i * 1_000,
            end_ms: (i + 1) * 1_000,
            energy_uj: 100_000_000,
            cumulative_uj: 100_000_000 * (i as u64 + 1),
            power_w: None,
            quality: Quality::Measured,
        })
        .collect()
}

/// CPU µs per sample (less `sim_us`, the cost of moving the fake tree)
/// and the mean number of workloads kept per split.
fn run(
    name: &str,
    cgroup: &Path,
    proc: &Path,
    level: Level,
    iters: i64,
    tick: &dyn Fn(i64),
    sim_us: f64,
) {
    let mut a = Attributor::new(&WorkloadsConfig {
        enabled: true,
        cgroup_root: cgroup.to_owned(),
        proc_root: proc.to_owned(),
        level,
        // Half the energy idle: a learned baseline would call all of this
        // constant energy idle and split nothing.
        idle_watts: readings(0).into_iter().map(|r| (r.sensor, 50.0)).collect(),
        ..WorkloadsConfig::default()
    });
    a.attribute(&readings(0), &[]);
    let mut kept = 0usize;
    let t0 = thread_cpu_ns();
    for i in 1..=iters {
        tick(i);
        let splits = a.attribute(&readings(i), &[]);
        kept += splits.iter().map(|s| s.workloads.len()).sum::<usize>();
    }
    let per = (thread_cpu_ns() - t0) as f64 / iters as f64 / 1_000.0 - sim_us;
    println!(
        "{name:<34} {per:>9.0} µs CPU per sample = {:.3} % of one core at 1 Hz; {:.1} workloads kept per split",
        per / 10_000.0,
        kept as f64 / iters as f64 / 8.0
    );
}

fn main() {
    let iters: i64 = std::env::var("VIGIE_BENCH_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let dir = tempfile::tempdir().unwrap();
    let cg = FakeCgroups::create(dir.path()).unwrap();
    let services: Vec<String> = (0..100)
        .map(|i| format!("system.slice/svc-{i}.service"))
        .collect();
    for s in &services {
        cg.add(s, 0).unwrap();
    }
    for pid in 1..=500u32 {
        cg.add_process(pid, "worker", 0, "system.slice/svc-0.service")
            .unwrap();
    }
    // The trees move between samples, as they would: the files are
    // rewritten on the measured thread, so that cost is printed apart.
    let move_cgroups = |i: i64| {
        for (n, s) in services.iter().enumerate().take(10) {
            cg.set_usage(s, (i as u64) * 1_000 * (n as u64 + 1))
                .unwrap();
        }
        cg.set_root_usage(i as u64 * 100_000).unwrap();
    };
    let move_processes = |i: i64| {
        for pid in 1..=10u32 {
            cg.set_process_ticks(pid, "worker", i as u64 * u64::from(pid))
                .unwrap();
        }
        cg.set_proc_total_ticks(i as u64 * 100).unwrap();
    };
    // The cost of moving the fake trees alone, subtracted from their rows.
    let cost = |f: &dyn Fn(i64)| {
        let t0 = thread_cpu_ns();
        for i in 1..=iters {
            f(i);
        }
        (thread_cpu_ns() - t0) as f64 / iters as f64 / 1_000.0
    };
    let (sim_cg, sim_proc) = (cost(&move_cgroups), cost(&move_processes));
    println!("(moving the fake trees: {sim_cg:.0} and {sim_proc:.0} µs per sample, subtracted)");
    run(
        "fake: 100 cgroups, service level",
        &cg.cgroup_root(),
        &cg.proc_root(),
        Level::Service,
        iters,
        &move_cgroups,
        sim_cg,
    );
    run(
        "fake: 500 processes, process level",
        &cg.cgroup_root(),
        &cg.proc_root(),
        Level::Process,
        iters,
        &move_processes,
        sim_proc,
    );
    let (real_cg, real_proc) = (Path::new("/sys/fs/cgroup"), Path::new("/proc"));
    let cgroups = walkdir_count(real_cg);
    let procs = std::fs::read_dir(real_proc)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| {
                    e.file_name()
                        .to_str()
                        .is_some_and(|n| n.parse::<u32>().is_ok())
                })
                .count()
        })
        .unwrap_or(0);
    println!("this machine: {cgroups} cgroups, {procs} processes");
    for (name, level) in [
        ("real: /sys/fs/cgroup, service level", Level::Service),
        ("real: /sys/fs/cgroup, container level", Level::Container),
        ("real: /proc, process level", Level::Process),
    ] {
        run(name, real_cg, real_proc, level, iters, &|_| (), 0.0);
    }
}

fn walkdir_count(p: &Path) -> usize {
    std::fs::read_dir(p)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| 1 + walkdir_count(&e.path()))
                .sum()
        })
        .unwrap_or(0)
}
