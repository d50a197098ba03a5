//! Agent overhead: 4 sockets x 3 RAPL zones, 8 GPUs and 2 PDUs of 24
//! outlets, sampled every second and published every 10 s to a real
//! Mosquitto on 127.0.0.1. Reports the CPU time the agent's thread used
//! per second of operation and the process's peak resident memory.
//!
//! `cargo bench -p vigie-agent --bench overhead` (VIGIE_BENCH_SECS sets
//! the duration, default 60). The agent runs on its own single-threaded
//! runtime, as `vigie-agent run` does; the hardware simulation runs on
//! another thread and is not counted in the CPU figure. GPUs and PDUs are
//! in-process fakes: NVML and SNMP/Redfish wire costs are not included.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::{Duration, Instant};
use vigie_agent::Hardware;
use vigie_agent::config::{AgentConfig, ModelMode};
use vigie_agent::device::{Device, DeviceConfig, FakePdu};
use vigie_agent::gpu::FakeGpus;
use vigie_testkit::{FakePowercap, Mosquitto, ZoneSpec};

/// Nanoseconds this thread has run on a CPU (`/proc/thread-self/schedstat`).
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

fn status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

fn main() {
    let secs: u64 = std::env::var("VIGIE_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start().unwrap();
    let root = dir.path().join("powercap");
    std::fs::create_dir_all(&root).unwrap();
    let mut zones = Vec::new();
    for s in 0..4 {
        let r = 262_143_328_850;
        zones.push(ZoneSpec::new(
            &format!("intel-rapl:{s}"),
            &format!("package-{s}"),
            r,
            0,
        ));
        zones.push(ZoneSpec::new(&format!("intel-rapl:{s}:0"), "core", r, 0));
        zones.push(ZoneSpec::new(&format!("intel-rapl:{s}:1"), "dram", r, 0));
    }
    let tree = FakePowercap::create(&root, zones).unwrap();
    let gpus = FakeGpus::new(8, "NVIDIA H100 80GB HBM3", true);
    let pdus = [FakePdu::new(24), FakePdu::new(24)];

    let mut cfg = AgentConfig {
        site: "bench".into(),
        host: Some("bench-01".into()),
        state_dir: dir.path().join("state"),
        ..AgentConfig::default()
    };
    cfg.mqtt.port = broker.port();
    cfg.rapl.root = root.clone();
    cfg.model.mode = ModelMode::Off;
    let devices: Vec<(DeviceConfig, Box<dyn Device>)> = pdus
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let d: DeviceConfig =
                toml::from_str(&format!("name = \"pdu-{i}\"\nperiod = \"1s\"\n")).unwrap();
            (d, Box::new(p.clone()) as Box<dyn Device>)
        })
        .collect();

    // The simulated hardware moves on another thread.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sim = {
        let (stop, gpus, pdus) = (stop.clone(), gpus.clone(), pdus.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for z in tree.zones() {
                    tree.advance(&z.dir, 50_000_000).unwrap();
                }
                for g in 0..8 {
                    gpus.spend(g, 400_000);
                }
                for p in &pdus {
                    for o in 0..24 {
                        p.set(o, 350.0, 1);
                    }
                }
                std::thread::sleep(Duration::from_millis(1_000));
            }
        })
    };

    let agent = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let hw = Hardware {
            gpus: Some(Box::new(gpus)),
            cpu_load: None,
            devices,
        };
        let warmup = Duration::from_secs(5);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let measured = std::sync::Arc::new(std::sync::Mutex::new(None));
        let m = measured.clone();
        rt.block_on(async move {
            let agent = vigie_agent::run_with(cfg, hw, async {
                let _ = rx.await;
            });
            let meter = async move {
                // Start-up (discovery, spool creation, connection) is not
                // steady-state cost: measure after a warm-up.
                tokio::time::sleep(warmup).await;
                let (cpu0, t0) = (thread_cpu_ns(), Instant::now());
                tokio::time::sleep(Duration::from_secs(secs)).await;
                *m.lock().unwrap() = Some((thread_cpu_ns() - cpu0, t0.elapsed()));
                let _ = tx.send(());
            };
            let (r, ()) = tokio::join!(agent, meter);
            r.unwrap();
        });
        let x = *measured.lock().unwrap();
        x.unwrap()
    });
    let (cpu_ns, wall) = agent.join().unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    sim.join().unwrap();
    let share = cpu_ns as f64 / wall.as_nanos() as f64;
    println!(
        "agent overhead over {:.1} s (4 sockets x 3 zones, 8 GPUs, 2 x 24-outlet PDUs, 1 s sampling, 10 s batches)",
        wall.as_secs_f64()
    );
    println!(
        "  CPU time per second: {:.3} ms ({:.4} % of one core)",
        cpu_ns as f64 / 1e6 / wall.as_secs_f64(),
        share * 100.0
    );
    println!(
        "  resident memory: {} kB now, {} kB peak (whole bench process)",
        status_kb("VmRSS:"),
        status_kb("VmHWM:")
    );
    drop(broker);
}
