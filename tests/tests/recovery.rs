//! Fault injection against a real Mosquitto on 127.0.0.1: the collector
//! SIGKILLed mid-ingest, a storm of duplicated and reordered batches, and a
//! spool overflow during a long outage. Each compares the ledger with the
//! ground truth to the microjoule.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::Path;
use std::time::Duration;
use vigie_e2e::client::TestClient;
use vigie_e2e::{Proc, binary, wait_host_online, wait_ready};
use vigie_protocol::{Quality, Reading, SCHEMA_VERSION, TelemetryBatch};
use vigie_testkit::{FakePowercap, Mosquitto, free_addr, http_get, wait_for};

fn total_uj(http: std::net::SocketAddr) -> Option<u64> {
    let v = http_get(http, "/api/v1/energy?group_by=host")
        .ok()?
        .json()
        .ok()?;
    v["total"]["energy_uj"].as_u64()
}

/// The value of one sample line of `/metrics`, e.g. `vigie_ingest_duplicates_total`.
fn metric(http: std::net::SocketAddr, series: &str) -> Option<f64> {
    let text = http_get(http, "/metrics").ok()?.body;
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn collector_config(d: &Path, port: u16, http: std::net::SocketAddr, id: &str) -> String {
    let path = d.join("collector.toml");
    std::fs::write(
        &path,
        format!(
            "[mqtt]\nport = {port}\nclient_id = \"{id}\"\n[store]\npath = \"{}\"\n[http]\nlisten = \"{http}\"\n",
            d.join("ledger.sqlite").display()
        ),
    )
    .unwrap();
    path.display().to_string()
}

fn start_collector(d: &Path, name: &str, cfg: &str) -> Proc {
    Proc::start(
        name,
        &binary("vigie-collector").unwrap(),
        &["run", "--config", cfg],
        d,
    )
    .unwrap()
}

/// A small deterministic generator, so a failure replays identically.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A batch of 4 readings with energies drawn from `rng`; returns it and its energy.
fn batch(host: &str, seq: u64, rng: &mut Lcg) -> (TelemetryBatch, u64) {
    // Recent, so the collector's time checks accept it.
    let start = vigie_service::now_ms() - 3_600_000 + seq as i64 * 1_000;
    let readings: Vec<Reading> = (0..4)
        .map(|i| Reading {
            sensor: format!("pdu:outlet-{i}"),
            start_ms: start,
            end_ms: start + 1_000,
            energy_uj: 1_000_000 + rng.below(1_000_000),
            // Consistent with the energy (the collector checks it).
            cumulative_uj: (seq + 1) * 2_000_000,
            power_w: None,
            quality: if i == 3 {
                Quality::Estimated
            } else {
                Quality::Measured
            },
        })
        .collect();
    let energy = readings.iter().map(|r| r.energy_uj).sum();
    (
        TelemetryBatch {
            schema: SCHEMA_VERSION,
            site: "rec".into(),
            host: host.into(),
            boot_id: "boot-1".into(),
            epoch: 7,
            seq,
            readings,
            gauges: Vec::new(),
            workloads: Vec::new(),
        },
        energy,
    )
}

fn topic(host: &str) -> String {
    format!("vigie/v1/rec/{host}/telemetry")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_sigkilled_mid_ingest_loses_and_doubles_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let broker = Mosquitto::start().unwrap();
    let port = broker.port();
    let http = free_addr().unwrap();
    let cfg = collector_config(d, port, http, "kill-collector");
    let mut collector = start_collector(d, "collector-1", &cfg);
    wait_ready(http, &collector, Duration::from_secs(30));

    let mut rng = Lcg(42);
    let mut batches = Vec::new();
    let mut truth = 0u64;
    for seq in 0..1_500u64 {
        for host in ["k1", "k2"] {
            let (b, e) = batch(host, seq, &mut rng);
            truth += e;
            batches.push(b);
        }
    }
    let publisher = TestClient::connect(port, "kill-publisher", None)
        .await
        .unwrap();
    let sender = tokio::spawn(async move {
        for b in batches {
            publisher
                .publish(&topic(&b.host), serde_json::to_vec(&b).unwrap())
                .await
                .unwrap();
        }
    });

    // Two crashes while messages are flowing, each after some progress.
    let mut seen = 0;
    for round in 2..=3 {
        let progress = tokio::task::spawn_blocking(move || {
            wait_for(
                "ingest progress before the kill",
                Duration::from_secs(60),
                Duration::from_millis(20),
                || total_uj(http).filter(|t| *t > seen),
            )
        })
        .await
        .unwrap()
        .unwrap();
        seen = progress;
        collector.kill();
        tokio::time::sleep(Duration::from_millis(300)).await;
        collector = start_collector(d, &format!("collector-{round}"), &cfg);
        // Same client id: the broker resumes its session and subscriptions,
        // and the restarted collector says it is ready.
        let c = &collector;
        tokio::task::block_in_place(|| wait_ready(http, c, Duration::from_secs(30)));
    }
    sender.await.unwrap();
    let got = tokio::task::spawn_blocking(move || {
        wait_for(
            "every batch in the ledger",
            Duration::from_secs(120),
            Duration::from_millis(100),
            || total_uj(http).filter(|t| *t == truth),
        )
    })
    .await
    .unwrap();
    let got = got.unwrap_or_else(|e| {
        panic!(
            "{e}: ledger {:?}, truth {truth}\n{}",
            total_uj(http),
            collector.log_tail()
        )
    });
    assert_eq!(got, truth);
    assert!(seen < truth, "the kills happened mid-ingest");
    assert!(
        collector
            .interrupt(Duration::from_secs(15))
            .unwrap()
            .success()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_duplicates_and_reordering_changes_no_total() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let broker = Mosquitto::start().unwrap();
    let port = broker.port();
    let http = free_addr().unwrap();
    let cfg = collector_config(d, port, http, "storm-collector");
    let mut collector = start_collector(d, "collector", &cfg);
    wait_ready(http, &collector, Duration::from_secs(30));

    let mut rng = Lcg(7);
    let mut unique = Vec::new();
    let mut truth = 0u64;
    for seq in 0..300u64 {
        for host in ["s1", "s2", "s3"] {
            let (b, e) = batch(host, seq, &mut rng);
            truth += e;
            unique.push(b);
        }
    }
    // Every batch 1 to 4 times, all copies shuffled (Fisher-Yates).
    let mut storm = Vec::new();
    for b in &unique {
        for _ in 0..=rng.below(4) {
            storm.push(b.clone());
        }
    }
    for i in (1..storm.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        storm.swap(i, j);
    }
    let copies = storm.len();
    let publishers = [
        TestClient::connect(port, "storm-a", None).await.unwrap(),
        TestClient::connect(port, "storm-b", None).await.unwrap(),
    ];
    // Two connections interleave, so arrival order differs from send order too.
    let mut tasks = Vec::new();
    for (n, p) in publishers.into_iter().enumerate() {
        let mine: Vec<TelemetryBatch> = storm.iter().skip(n).step_by(2).cloned().collect();
        tasks.push(tokio::spawn(async move {
            for b in mine {
                p.publish(&topic(&b.host), serde_json::to_vec(&b).unwrap())
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let expected_dups = (copies - unique.len()) as f64;
    let got = tokio::task::spawn_blocking(move || {
        wait_for(
            "the storm absorbed",
            Duration::from_secs(60),
            Duration::from_millis(100),
            || {
                let dups = metric(http, "vigie_ingest_duplicates_total")?;
                (dups == expected_dups).then(|| total_uj(http))?
            },
        )
    })
    .await
    .unwrap()
    .unwrap_or_else(|e| panic!("{e}: ledger {:?}, truth {truth}", total_uj(http)));
    assert_eq!(got, truth, "{copies} copies of {} batches", unique.len());
    assert!(
        collector
            .interrupt(Duration::from_secs(15))
            .unwrap()
            .success()
    );
}

/// A long outage with a tiny spool: the agent merges its oldest batches,
/// the collector receives fewer, coarser readings, and not a µJ differs.
#[test]
fn spool_overflow_during_an_outage_keeps_totals_exact() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut broker = Mosquitto::start().unwrap();
    let port = broker.port();
    let http = free_addr().unwrap();
    let cfg = collector_config(d, port, http, "overflow-collector");
    let mut collector = start_collector(d, "collector", &cfg);

    let root = d.join("powercap");
    std::fs::create_dir_all(&root).unwrap();
    let tree = FakePowercap::dual_socket(&root, 262_143_328_850, 0).unwrap();
    let agent_cfg = d.join("agent.toml");
    std::fs::write(
        &agent_cfg,
        format!(
            "site = \"rec\"\nhost = \"ovf\"\nstate_dir = \"{}\"\n[mqtt]\nport = {port}\n[sampling]\ninterval = \"50ms\"\npublish_interval = \"100ms\"\n[gpu]\nenabled = false\n[rapl]\nroot = \"{}\"\n[spool]\nmax_batches = 10\nstatus_interval = \"200ms\"\n",
            d.join("state").display(),
            root.display()
        ),
    )
    .unwrap();
    let mut agent = Proc::start(
        "agent",
        &binary("vigie-agent").unwrap(),
        &["run", "--config", agent_cfg.to_str().unwrap()],
        d,
    )
    .unwrap();
    wait_host_online(http, &agent);

    // The zones the agent counts (never core/uncore, inside the package, nor
    // the mmio copy of package-0).
    let zones: Vec<String> = tree
        .zones()
        .iter()
        .filter(|z| !["core", "uncore"].contains(&z.name.as_str()))
        .filter(|z| !z.dir.starts_with("intel-rapl-mmio"))
        .map(|z| z.dir.clone())
        .collect();
    let mut truth = 0u64;
    let step = |n: u64, truth: &mut u64| {
        for i in 0..n {
            for (k, z) in zones.iter().enumerate() {
                let e = 100_000 + i * 10 + k as u64;
                tree.advance(z.as_str(), e).unwrap();
                *truth += e;
            }
            std::thread::sleep(Duration::from_millis(60));
        }
    };
    step(5, &mut truth);
    wait_for(
        "energy before the outage",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || (total_uj(http)? == truth).then_some(()),
    )
    .unwrap();
    let readings_before = metric(http, "vigie_ingest_readings_total").unwrap();

    let ready = |http| http_get(http, "/readyz").map(|r| r.status).ok();
    assert_eq!(ready(http), Some(200));
    broker.stop();
    // About 60 publish periods: six times the spool's bound.
    step(100, &mut truth);
    // Without its broker the collector says it is not ready.
    wait_for(
        "not ready without the broker",
        Duration::from_secs(20),
        Duration::from_millis(50),
        || (ready(http)? == 503).then_some(()),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", collector.log_tail()));
    broker.restart().unwrap();
    wait_ready(http, &collector, Duration::from_secs(30));
    let got = wait_for(
        "totals after the outage",
        Duration::from_secs(40),
        Duration::from_millis(100),
        || total_uj(http).filter(|t| *t == truth),
    );
    got.unwrap_or_else(|e| {
        panic!(
            "{e}: ledger {:?}, truth {truth}\nagent:\n{}\ncollector:\n{}",
            total_uj(http),
            agent.log_tail(),
            collector.log_tail()
        )
    });
    let log = std::fs::read_to_string(d.join("agent.log")).unwrap();
    assert!(log.contains("oldest batches merged"), "{log}");
    // Resolution coarser: far fewer readings than 100 samples x zones.
    let readings_after = metric(http, "vigie_ingest_readings_total").unwrap();
    let sampled = 100.0 * zones.len() as f64;
    assert!(
        readings_after - readings_before < sampled / 2.0,
        "{} readings for {sampled} samples",
        readings_after - readings_before
    );
    let merges = wait_for(
        "the agent's merges exported",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || metric(http, "vigie_agent_spool_merges{host=\"ovf\"}").filter(|m| *m > 0.0),
    );
    assert!(
        merges.is_ok(),
        "{:?}",
        http_get(http, "/metrics").unwrap().body
    );
    assert!(agent.interrupt(Duration::from_secs(15)).unwrap().success());
    assert!(
        collector
            .interrupt(Duration::from_secs(15))
            .unwrap()
            .success()
    );
}

#[test]
fn a_collector_whose_broker_is_gone_still_stops_on_sigint() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A port nobody listens on.
    let port = vigie_testkit::free_port().unwrap();
    let http = free_addr().unwrap();
    let cfg = collector_config(d, port, http, "lonely-collector");
    let mut collector = start_collector(d, "collector", &cfg);
    wait_for(
        "the collector's HTTP server",
        Duration::from_secs(30),
        Duration::from_millis(50),
        || http_get(http, "/healthz").ok(),
    )
    .unwrap();
    // Up but not ready: it has no broker.
    assert_eq!(http_get(http, "/readyz").unwrap().status, 503);
    let status = collector.interrupt(Duration::from_secs(20)).unwrap();
    assert!(status.success(), "{status:?}\n{}", collector.log_tail());
}

/// Issue 10.8: an agent that dies while the broker is down never gets its
/// last will sent, and the broker restored from its persistence keeps its
/// retained `online`. Its data say otherwise: the last batch time, which
/// a collector restart does not forget, and `stale` in `/api/v1/hosts`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_agent_whose_status_says_online_is_stale_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut broker = Mosquitto::start().unwrap();
    let port = broker.port();
    let http = free_addr().unwrap();
    let cfg = collector_config(d, port, http, "liveness-collector");
    // Any age is stale: what is asserted is that a batch's age, not the
    // status, decides.
    let text = std::fs::read_to_string(&cfg).unwrap() + "[ingest]\nhost_stale_after = \"1ms\"\n";
    std::fs::write(&cfg, text).unwrap();
    let mut collector = start_collector(d, "collector-1", &cfg);
    wait_ready(http, &collector, Duration::from_secs(30));

    let agent = TestClient::connect(port, "liveness-agent", None)
        .await
        .unwrap();
    let mut status = vigie_protocol::samples::status_online();
    status.spool = None;
    agent
        .publish_retained(
            "vigie/v1/rec/gone/status",
            serde_json::to_vec(&status).unwrap(),
        )
        .await
        .unwrap();
    let (b, energy) = batch("gone", 0, &mut Lcg(7));
    agent
        .publish(&topic("gone"), serde_json::to_vec(&b).unwrap())
        .await
        .unwrap();
    let series = r#"vigie_host_last_batch_timestamp_seconds{host="gone"}"#;
    let last = tokio::task::spawn_blocking(move || {
        wait_for(
            "the batch committed",
            Duration::from_secs(30),
            Duration::from_millis(50),
            || {
                (total_uj(http)? == energy)
                    .then(|| metric(http, series))
                    .flatten()
            },
        )
    })
    .await
    .unwrap()
    .unwrap_or_else(|e| panic!("{e}\n{}", collector.log_tail()));

    // The agent dies while the broker is down: no last will.
    broker.stop();
    drop(agent);
    broker.restart().unwrap();
    assert!(
        collector
            .interrupt(Duration::from_secs(15))
            .unwrap()
            .success()
    );
    let collector = start_collector(d, "collector-2", &cfg);
    wait_ready(http, &collector, Duration::from_secs(30));

    let hosts = wait_for(
        "the retained status redelivered",
        Duration::from_secs(30),
        Duration::from_millis(50),
        || {
            let v = http_get(http, "/api/v1/hosts").ok()?.json().ok()?;
            (v["hosts"][0]["online"] == true).then_some(v)
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", collector.log_tail()));
    let host = &hosts["hosts"][0];
    assert_eq!(host["host"], "gone");
    // Online says the broker; stale say its data.
    assert_eq!(host["stale"], true, "{host}");
    assert!(host["last_batch_age_seconds"].is_i64(), "{host}");
    // The restarted collector still knows when the last batch came, so
    // `time() - vigie_host_last_batch_timestamp_seconds` keeps growing.
    assert_eq!(metric(http, series), Some(last));
    assert_eq!(metric(http, r#"vigie_host_online{host="gone"}"#), Some(1.0));
}
