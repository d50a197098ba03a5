//! Throughput through a real broker, side by side (issue 12.5): the same
//! distinct, valid 80-reading batches of many hosts are queued once at a
//! Mosquitto (QoS 1, persistent sessions) for two subscribers, then drained
//!
//! - by a plain subscriber (rumqttc, one thread, automatic PUBACKs,
//!   counting messages): the broker's own delivery rate for these
//!   payloads;
//! - by `vigie-collector run` (the real binary, a separate process, its
//!   SQLite ledger on disk), timed from its first committed batch to its
//!   last by polling the ledger's batch keys.
//!
//! Reports messages/s, readings/s, the collector's ratio to the broker,
//! the CPU time per message of each process (`/proc/<pid>/stat`), and the
//! collector's CPU per thread (ledger writer, prepare, MQTT runtime).
//!
//! `cargo bench -p vigie-collector --bench broker`. Environment:
//! `VIGIE_BENCH_MESSAGES` (default 10000; the test broker queues at most
//! 100000), `VIGIE_BENCH_HOSTS` (default 1000), `VIGIE_BENCH_MODES`
//! (`unsigned,signed`), `VIGIE_BENCH_COLLECTOR` (another collector binary,
//! e.g. an older build for an A/B), `VIGIE_BENCH_PREPARE_THREADS`
//! (`ingest.prepare_threads`, default 0: cores - 1), `VIGIE_BENCH_INFLIGHT`
//! (the broker's `max_inflight_messages`, default 100 as shipped).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::needless_range_loop,
    missing_docs
)]

use ed25519_dalek::SigningKey;
use rumqttc::{
    AsyncClient, BrokerSessionResumePolicy, Event, MqttOptions, Packet, PublishOptions, QoS,
    SessionMode,
};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use vigie_protocol::{Quality, Reading, SCHEMA_VERSION, TelemetryBatch, sign_payload};
use vigie_testkit::Mosquitto;

const SENSORS: [&str; 8] = [
    "rapl:package-0",
    "rapl:package-1",
    "rapl:dram-0",
    "rapl:dram-1",
    "nvml:gpu-0",
    "nvml:gpu-1",
    "nvml:gpu-2",
    "nvml:gpu-3",
];
const SAMPLES: usize = 10;
const SITE: &str = "par1";
/// Linux's USER_HZ: the unit of `/proc/<pid>/stat` CPU times.
const TICKS_PER_S: f64 = 100.0;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn host_name(h: usize) -> String {
    format!("node-{h:06}")
}

fn host_key(h: usize) -> SigningKey {
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&(h as u64 + 1).to_le_bytes());
    SigningKey::from_bytes(&seed)
}

/// Host `h`'s batch of the 10 s slice `slice`, starting at `t0`.
fn batch(h: usize, slice: usize, t0: i64) -> TelemetryBatch {
    let start = t0 + (slice * SAMPLES * 1000) as i64;
    let mut readings = Vec::with_capacity(SENSORS.len() * SAMPLES);
    for i in 0..SAMPLES {
        for (s, sensor) in SENSORS.iter().enumerate() {
            let energy_uj =
                100_000_000 + ((h * 7_919 + s * 104_729 + i * 1_299) % 5_000_000) as u64;
            let n = (slice * SAMPLES + i + 1) as u64;
            let start_ms = start + (i * 1000) as i64;
            readings.push(Reading {
                sensor: (*sensor).to_string(),
                start_ms,
                end_ms: start_ms + 1000,
                energy_uj,
                cumulative_uj: 5_000_000_000_000 + n * 102_500_000 + energy_uj,
                power_w: Some((energy_uj as f64 / 1000.0).round() / 1000.0),
                quality: if s < 4 {
                    Quality::Measured
                } else {
                    Quality::Estimated
                },
            });
        }
    }
    TelemetryBatch {
        schema: SCHEMA_VERSION,
        site: SITE.into(),
        host: host_name(h),
        boot_id: format!("2f1c7f0e-8c1e-4d55-9a57-{h:012x}"),
        epoch: 1_790_000_000_000 + h as u64,
        seq: slice as u64 + 1,
        readings,
        gauges: Vec::new(),
        workloads: Vec::new(),
    }
}

/// utime + stime of a process or thread, seconds (`/proc/.../stat`).
fn cpu_s(stat: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(stat).ok()?;
    // The name (field 2) may hold spaces: fields after its ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / TICKS_PER_S)
}

fn proc_cpu(pid: u32) -> f64 {
    cpu_s(Path::new(&format!("/proc/{pid}/stat"))).unwrap_or(0.0)
}

/// CPU seconds per thread name of `pid` (threads alive now).
fn threads_cpu(pid: u32) -> Vec<(String, f64)> {
    let mut by: std::collections::BTreeMap<String, f64> = Default::default();
    if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in dir.flatten() {
            let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
            let name = comm
                .trim()
                .trim_end_matches(|c: char| c.is_ascii_digit())
                .to_owned();
            *by.entry(name).or_default() += cpu_s(&t.path().join("stat")).unwrap_or(0.0);
        }
    }
    let mut v: Vec<_> = by.into_iter().collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1));
    v
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn options(id: &str, port: u16) -> MqttOptions {
    let mut o = MqttOptions::new(id, ("127.0.0.1", port));
    o.set_keep_alive(30);
    o.set_session_mode(SessionMode::Persistent);
    o.set_session_expiry_interval(Some(3_600));
    // Resume the session the broker kept (as the collector does).
    o.set_broker_session_resume_policy(BrokerSessionResumePolicy::AllowBrokerOnly);
    o.set_incoming_packet_size_limit(rumqttc::IncomingPacketSizeLimit::Bytes(16 * 1024 * 1024));
    o
}

/// Makes the plain subscriber's persistent session and subscription.
fn plain_session(port: u16) {
    runtime().block_on(async {
        let (c, mut ev) = AsyncClient::builder(options("bench-plain", port))
            .capacity(64)
            .build();
        c.subscribe(format!("vigie/v1/{SITE}/+/telemetry"), QoS::AtLeastOnce)
            .await
            .unwrap();
        loop {
            if let Event::Incoming(Packet::SubAck(_)) = ev.poll().await.unwrap() {
                break;
            }
        }
        c.disconnect().await.unwrap();
        while ev.poll().await.is_ok() {}
    });
}

/// Publishes every payload at QoS 1 and waits for every PUBACK.
fn publish(port: u16, msgs: Vec<(String, Vec<u8>)>) {
    let n = msgs.len();
    runtime().block_on(async {
        let mut o = MqttOptions::new("bench-pub", ("127.0.0.1", port));
        o.set_outgoing_inflight_upper_limit(200);
        let (c, mut ev) = AsyncClient::builder(o).capacity(256).build();
        let client = c.clone();
        let pubber = tokio::spawn(async move {
            for (t, p) in msgs {
                client
                    .publish(t, p, PublishOptions::at_least_once())
                    .await
                    .unwrap();
            }
        });
        let mut acked = 0;
        while acked < n {
            if let Event::Incoming(Packet::PubAck(_)) = ev.poll().await.unwrap() {
                acked += 1;
            }
        }
        pubber.await.unwrap();
        c.disconnect().await.unwrap();
        while ev.poll().await.is_ok() {}
    });
}

/// One drain: messages in the timed window, its length, and the CPU
/// seconds of each process over it.
struct Drain {
    messages: usize,
    seconds: f64,
    cpu_s: f64,
    broker_cpu_s: f64,
}

/// The plain subscriber drains its session: timed from its first message
/// to its `n`-th.
fn plain_drain(port: u16, n: usize, broker: u32) -> Drain {
    runtime().block_on(async {
        let (c, mut ev) = AsyncClient::builder(options("bench-plain", port))
            .capacity(1024)
            .build();
        let me = std::process::id();
        let mut got = 0usize;
        let mut first: Option<(Instant, f64, f64)> = None;
        let deadline = Instant::now() + Duration::from_secs(600);
        while got < n && Instant::now() < deadline {
            if let Event::Incoming(Packet::Publish(_)) = ev.poll().await.unwrap() {
                got += 1;
                if first.is_none() {
                    first = Some((Instant::now(), proc_cpu(me), proc_cpu(broker)));
                }
            }
        }
        let (t, cpu, bcpu) = first.unwrap();
        let d = Drain {
            messages: got - 1,
            seconds: t.elapsed().as_secs_f64(),
            cpu_s: proc_cpu(me) - cpu,
            broker_cpu_s: proc_cpu(broker) - bcpu,
        };
        c.disconnect().await.unwrap();
        while ev.poll().await.is_ok() {}
        d
    })
}

fn collector(bin: &Path, config: &Path, log: &Path) -> Child {
    Command::new(bin)
        .args(["run", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("starting the collector")
}

fn stop(mut c: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &c.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = c.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = c.kill();
    let _ = c.wait();
}

fn batches_in(ledger: &Path) -> usize {
    let Ok(c) =
        rusqlite::Connection::open_with_flags(ledger, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
    else {
        return 0;
    };
    c.query_row("SELECT COUNT(*) FROM batches", [], |r| r.get::<_, i64>(0))
        .map_or(0, |n| n as usize)
}

/// The collector drains its session: timed from the first poll that sees
/// a committed batch to the one that sees all `n`; with its CPU per thread
/// at the end.
fn collector_drain(
    bin: &Path,
    config: &Path,
    ledger: &Path,
    log: &Path,
    n: usize,
    broker: u32,
) -> (Drain, Vec<(String, f64)>) {
    let child = collector(bin, config, log);
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut first: Option<(Instant, usize, f64, f64)> = None;
    let mut last = 0;
    while Instant::now() < deadline {
        let c = batches_in(ledger);
        if c > 0 && first.is_none() {
            first = Some((Instant::now(), c, proc_cpu(pid), proc_cpu(broker)));
        }
        last = c;
        if c >= n {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let (t, c0, cpu, bcpu) = first.expect("the collector committed nothing");
    let d = Drain {
        messages: last - c0,
        seconds: t.elapsed().as_secs_f64(),
        cpu_s: proc_cpu(pid) - cpu,
        broker_cpu_s: proc_cpu(broker) - bcpu,
    };
    let threads = threads_cpu(pid);
    stop(child);
    assert_eq!(last, n, "the collector committed {last} of {n} batches");
    (d, threads)
}

fn run(signed: bool, n: usize, hosts: usize, bin: &Path) {
    // The shipped broker's window (deploy/mosquitto/vigie.conf): how many
    // unacknowledged QoS 1 messages it sends a client, so the most that
    // can wait in one commit group (the collector acknowledges after it).
    let inflight = env_usize("VIGIE_BENCH_INFLIGHT", 100);
    let mut broker = Mosquitto::start_with(&format!(
        "allow_anonymous true\nmax_inflight_messages {inflight}\n"
    ))
    .expect("mosquitto");
    let port = broker.port();
    let bpid = broker.pid().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("ledger.sqlite");
    let log = dir.path().join("collector.log");
    let http = vigie_testkit::free_addr().unwrap();
    let mut cfg = format!(
        "[mqtt]\nhost = \"127.0.0.1\"\nport = {port}\nclient_id = \"bench-collector\"\nsite = \"{SITE}\"\n\
         [store]\npath = \"{}\"\n[http]\nlisten = \"{http}\"\n\
         [ingest]\nmax_hosts = {}\nprepare_threads = {}\n",
        ledger.display(),
        hosts.max(10_000),
        env_usize("VIGIE_BENCH_PREPARE_THREADS", 0),
    );
    if signed {
        cfg += "[ingest.keys]\n";
        for h in 0..hosts {
            let public: String = host_key(h)
                .verifying_key()
                .to_bytes()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            cfg += &format!("\"{}\" = \"{public}\"\n", host_name(h));
        }
    }
    let config = dir.path().join("collector.toml");
    std::fs::write(&config, &cfg).unwrap();
    if std::env::var_os("VIGIE_BENCH_COLLECTOR").is_some() {
        // An older collector may not know `prepare_threads`.
        std::fs::write(
            &config,
            cfg.replace(
                &format!(
                    "prepare_threads = {}\n",
                    env_usize("VIGIE_BENCH_PREPARE_THREADS", 0)
                ),
                "",
            ),
        )
        .unwrap();
    }

    // Sessions first, so that the broker queues every message for both.
    let c = collector(bin, &config, &log);
    vigie_testkit::wait_for(
        "the collector to subscribe",
        Duration::from_secs(60),
        Duration::from_millis(50),
        || {
            vigie_testkit::http_get(http, "/readyz")
                .ok()
                .filter(|r| r.status == 200)
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", std::fs::read_to_string(&log).unwrap_or_default()));
    stop(c);
    plain_session(port);

    let slices = n.div_ceil(hosts);
    let now = vigie_service::now_ms();
    let t0 = (now - (slices as i64 + 6) * 10_000) / 10_000 * 10_000;
    let mut msgs = Vec::with_capacity(n);
    let keys: Vec<SigningKey> = if signed {
        (0..hosts).map(host_key).collect()
    } else {
        Vec::new()
    };
    'all: for slice in 0..slices {
        for h in 0..hosts {
            if msgs.len() == n {
                break 'all;
            }
            let b = batch(h, slice, t0);
            let json = serde_json::to_vec(&b).unwrap();
            let payload = if signed {
                sign_payload(&keys[h], &json)
            } else {
                json
            };
            msgs.push((format!("vigie/v1/{SITE}/{}/telemetry", b.host), payload));
        }
    }
    let bytes: usize = msgs.iter().map(|m| m.1.len()).sum();
    let t = Instant::now();
    publish(port, msgs);
    let queued = t.elapsed();

    let plain = plain_drain(port, n, bpid);
    let (coll, threads) = collector_drain(bin, &config, &ledger, &log, n, bpid);
    broker.stop();

    let rate = |d: &Drain| d.messages as f64 / d.seconds;
    let readings = (SENSORS.len() * SAMPLES) as f64;
    println!(
        "\n## {} — {n} messages of {hosts} hosts, {:.1} KiB each, queued in {queued:.1?}, broker in-flight window {inflight}",
        if signed { "signed" } else { "unsigned" },
        bytes as f64 / n as f64 / 1024.0
    );
    println!(
        "| drain            | messages | seconds | msg/s   | readings/s | vs broker | CPU µs/msg (process) | broker CPU µs/msg |"
    );
    println!(
        "|------------------|---------:|--------:|--------:|-----------:|----------:|---------------------:|------------------:|"
    );
    for (name, d) in [("plain subscriber", &plain), ("vigie-collector", &coll)] {
        println!(
            "| {name:<16} | {:>8} | {:>7.2} | {:>7.0} | {:>10.0} | {:>9.2} | {:>20.1} | {:>17.1} |",
            d.messages,
            d.seconds,
            rate(d),
            rate(d) * readings,
            rate(d) / rate(&plain),
            d.cpu_s * 1e6 / d.messages as f64,
            d.broker_cpu_s * 1e6 / d.messages as f64,
        );
    }
    println!("collector CPU by thread over its whole run (s):");
    for (name, s) in threads.iter().filter(|t| t.1 > 0.0) {
        println!("  {name:<20} {s:>7.2}");
    }
}

fn main() {
    let n = env_usize("VIGIE_BENCH_MESSAGES", 10_000).max(2);
    let hosts = env_usize("VIGIE_BENCH_HOSTS", 1_000).clamp(1, n);
    let bin: PathBuf = std::env::var_os("VIGIE_BENCH_COLLECTOR").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_vigie-collector")),
        PathBuf::from,
    );
    let modes = std::env::var("VIGIE_BENCH_MODES").unwrap_or_else(|_| "unsigned,signed".into());
    println!(
        "collector: {}; cores: {}",
        bin.display(),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    for mode in modes.split(',') {
        run(mode.trim() == "signed", n, hosts, &bin);
    }
}
