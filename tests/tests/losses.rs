//! Known losses end to end, through a real Mosquitto: batches that never
//! reach the collector (as when a broker restarts without persistence)
//! show as a hole and as missing energy, in `/metrics` and in the host's
//! gap report, and close again when the batch comes late. An agent's own
//! losses (spool errors, downtime not bridged) show from its status.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;
use vigie_e2e::client::TestClient;
use vigie_e2e::start_collector;
use vigie_protocol::{Quality, Reading, SCHEMA_VERSION, TelemetryBatch};
use vigie_testkit::{Mosquitto, free_addr, http_get, wait_for};

const HOST: &str = "lossy";
const T0: i64 = 1_795_000_000_000;

/// Batch `seq` of a host whose two sensors read 10 s each, contiguous.
fn batch(seq: u64) -> TelemetryBatch {
    let start_ms = T0 + seq as i64 * 10_000;
    let reading = |sensor: &str, per: u64| Reading {
        sensor: sensor.into(),
        start_ms,
        end_ms: start_ms + 10_000,
        energy_uj: per,
        cumulative_uj: per * (seq + 1),
        power_w: None,
        quality: Quality::Measured,
    };
    TelemetryBatch {
        schema: SCHEMA_VERSION,
        site: "e2e".into(),
        host: HOST.into(),
        boot_id: "boot-1".into(),
        epoch: 7,
        seq,
        readings: vec![
            reading("rapl:package-0", 1_000_000),
            reading("rapl:dram-0", 250_000),
        ],
        gauges: Vec::new(),
        workloads: Vec::new(),
    }
}

fn metric(text: &str, name: &str) -> Option<f64> {
    metric_of(text, HOST, name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_batches_show_as_a_gap_and_missing_energy_until_they_arrive() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let broker = Mosquitto::start().unwrap();
    let http = free_addr().unwrap();
    std::fs::write(
        d.join("collector.toml"),
        format!(
            "[mqtt]\nport = {}\nclient_id = \"losses-collector\"\n[store]\npath = \"{}\"\n[http]\nlisten = \"{http}\"\n",
            broker.port(),
            d.join("ledger.sqlite").display()
        ),
    )
    .unwrap();
    let mut collector = start_collector(d, http).unwrap();
    let client = TestClient::connect(broker.port(), "losses-sender", None)
        .await
        .unwrap();
    let topic = format!("vigie/v1/e2e/{HOST}/telemetry");
    // Batches 2 and 3 are lost on the way.
    for seq in [0, 1, 4, 5] {
        client
            .publish(&topic, serde_json::to_vec(&batch(seq)).unwrap())
            .await
            .unwrap();
    }
    let report = |want_gaps: usize| {
        wait_for(
            "the gap report",
            Duration::from_secs(30),
            Duration::from_millis(100),
            || {
                let r = http_get(http, &format!("/api/v1/hosts/{HOST}/gaps?from=0")).ok()?;
                let v = r.json().ok()?;
                (v["gaps"].as_array()?.len() == want_gaps && v["total_gaps"] == want_gaps)
                    .then_some(v)
            },
        )
        .unwrap_or_else(|e| panic!("{e}\n{}", collector.log_tail()))
    };
    let v = report(1);
    let gap = &v["gaps"][0];
    assert_eq!(gap["kind"], "batches");
    assert_eq!(gap["seconds"], 20.0, "{v}");
    assert_eq!(gap["after_batch"], serde_json::json!([7, 1]));
    assert_eq!(gap["before_batch"], serde_json::json!([7, 4]));
    // Two batches of 1.25 J each.
    assert_eq!(v["missing_joules"], 2.5, "{v}");
    let text = http_get(http, "/metrics").unwrap().body;
    assert_eq!(metric(&text, "vigie_host_data_gaps"), Some(1.0), "{text}");
    assert_eq!(metric(&text, "vigie_host_data_gap_seconds"), Some(20.0));
    assert_eq!(metric(&text, "vigie_host_missing_energy_joules"), Some(2.5));

    // They come late (a replica's backlog, a spool replay): nothing missing.
    for seq in [3, 2] {
        client
            .publish(&topic, serde_json::to_vec(&batch(seq)).unwrap())
            .await
            .unwrap();
    }
    let v = report(0);
    assert_eq!(v["missing_joules"], 0.0, "{v}");
    let text = http_get(http, "/metrics").unwrap().body;
    assert_eq!(metric(&text, "vigie_host_data_gaps"), Some(0.0), "{text}");
    assert_eq!(metric(&text, "vigie_host_missing_energy_joules"), Some(0.0));

    // An unknown host is a 404, not an empty report.
    let r = http_get(http, "/api/v1/hosts/nobody/gaps").unwrap();
    assert_eq!(r.status, 404);

    // The agent's own losses, from its status.
    let mut status = vigie_protocol::samples::status_online();
    let spool = status.spool.as_mut().unwrap();
    spool.spool_errors_total = 3;
    spool.in_memory = 12;
    spool.unbridged_total = 2;
    spool.unbridged_ms = 3_600_000;
    client
        .publish(
            &format!("vigie/v1/e2e/{HOST}/status"),
            serde_json::to_vec(&status).unwrap(),
        )
        .await
        .unwrap();
    let text = wait_for(
        "the agent's losses in /metrics",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || {
            let t = http_get(http, "/metrics").ok()?.body;
            metric(&t, "vigie_agent_spool_errors").filter(|v| *v == 3.0)?;
            Some(t)
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", collector.log_tail()));
    assert_eq!(metric(&text, "vigie_agent_batches_in_memory"), Some(12.0));
    assert_eq!(metric(&text, "vigie_agent_unbridged_restarts"), Some(2.0));
    assert_eq!(
        metric(&text, "vigie_agent_unbridged_downtime_seconds"),
        Some(3600.0)
    );
    assert!(
        collector
            .interrupt(Duration::from_secs(15))
            .unwrap()
            .success()
    );
}

/// An agent whose spool cannot grow (as on a full disk) while the broker
/// is away keeps running, holds its batches in memory and says so in its
/// status; once the broker is back and the spool drains, every joule
/// arrives. It used to exit on "database or disk is full" and crash-loop.
#[test]
fn an_agent_on_a_full_disk_keeps_measuring_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut broker = Mosquitto::start().unwrap();
    let http = free_addr().unwrap();
    std::fs::write(
        d.join("collector.toml"),
        format!(
            "[mqtt]\nport = {}\nclient_id = \"full-disk-collector\"\n[store]\npath = \"{}\"\n[http]\nlisten = \"{http}\"\n",
            broker.port(),
            d.join("ledger.sqlite").display()
        ),
    )
    .unwrap();
    let mut collector = start_collector(d, http).unwrap();
    broker.stop();
    let root = d.join("powercap");
    std::fs::create_dir_all(&root).unwrap();
    let tree = vigie_testkit::FakePowercap::single_socket(&root, 1_000_000_000, 1_000).unwrap();
    let cfg = d.join("agent.toml");
    std::fs::write(
        &cfg,
        format!(
            "site = \"e2e\"\nhost = \"full\"\nstate_dir = \"{}\"\n[mqtt]\nport = {}\n[sampling]\ninterval = \"100ms\"\npublish_interval = \"100ms\"\n[spool]\nmax_bytes = 1\nstatus_interval = \"300ms\"\n[gpu]\nenabled = false\n[rapl]\nroot = \"{}\"\n",
            d.join("state").display(),
            broker.port(),
            root.display()
        ),
    )
    .unwrap();
    let mut agent = vigie_e2e::Proc::start(
        "agent",
        &vigie_e2e::binary("vigie-agent").unwrap(),
        &["run", "--config", cfg.to_str().unwrap()],
        d,
    )
    .unwrap();
    wait_for(
        "the agent to start",
        Duration::from_secs(30),
        Duration::from_millis(50),
        || agent.log_tail().contains("agent started").then_some(()),
    )
    .unwrap();
    // The broker is away: the spool fills its fixed size, then batches
    // wait in memory.
    let mut advanced = 0u64;
    wait_for(
        "the spool to refuse a write",
        Duration::from_secs(60),
        Duration::from_millis(50),
        || {
            tree.advance("intel-rapl:0", 1_000_000).ok()?;
            advanced += 1_000_000;
            agent
                .log_tail()
                .contains("spool write failed")
                .then_some(())
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", agent.log_tail()));
    for _ in 0..10 {
        tree.advance("intel-rapl:0", 1_000_000).unwrap();
        advanced += 1_000_000;
        std::thread::sleep(Duration::from_millis(50));
    }
    broker.restart().unwrap();
    let errors = wait_for(
        "the agent's spool errors in /metrics",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || {
            let t = http_get(http, "/metrics").ok()?.body;
            metric_of(&t, "full", "vigie_agent_spool_errors").filter(|v| *v >= 1.0)
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", agent.log_tail()));
    assert!(errors >= 1.0);
    // Every joule the counters moved reaches the ledger.
    let total = || -> Option<u64> {
        let v = http_get(http, "/api/v1/energy").ok()?.json().ok()?;
        v["total"]["energy_uj"].as_u64()
    };
    wait_for(
        "all the energy in the ledger",
        Duration::from_secs(60),
        Duration::from_millis(100),
        || (total()? == advanced).then_some(()),
    )
    .unwrap_or_else(|e| panic!("{e}: {:?} of {advanced}\n{}", total(), agent.log_tail()));
    assert!(
        agent.interrupt(Duration::from_secs(15)).unwrap().success(),
        "{}",
        agent.log_tail()
    );
    assert!(
        collector
            .interrupt(Duration::from_secs(15))
            .unwrap()
            .success()
    );
}

fn metric_of(text: &str, host: &str, name: &str) -> Option<f64> {
    let prefix = format!("{name}{{host=\"{host}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}
