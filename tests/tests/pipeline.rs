//! End to end against a real Mosquitto on 127.0.0.1: three agent processes
//! on fake powercap trees driven by a script that wraps a counter, a batch
//! published twice, two batches delivered out of order, a malformed message.
//! The collector's ledger must equal the scripted ground truth to the µJ.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;
use vigie_e2e::client::TestClient;
use vigie_e2e::{Proc, binary, wait_ready};
use vigie_protocol::{Quality, Reading, SCHEMA_VERSION, TelemetryBatch};
use vigie_testkit::{FakePowercap, Mosquitto, ZoneSpec, free_addr, http_get, wait_for};

type Truth = BTreeMap<(String, String), u64>;

fn write(path: &Path, text: &str) -> String {
    std::fs::write(path, text).unwrap();
    path.display().to_string()
}

/// What the collector's API says, per (host, sensor), in µJ.
fn ledger(http: std::net::SocketAddr) -> Option<Truth> {
    let r = http_get(http, "/api/v1/energy?group_by=sensor").ok()?;
    let v = r.json().ok()?;
    let mut out = Truth::new();
    for g in v["groups"].as_array()? {
        out.insert(
            (
                g["host"].as_str()?.to_owned(),
                g["sensor"].as_str()?.to_owned(),
            ),
            g["energy_uj"].as_u64()?,
        );
    }
    Some(out)
}

fn scripted_batch(seq: u64, start_ms: i64, energy_uj: u64, cumulative_uj: u64) -> TelemetryBatch {
    TelemetryBatch {
        schema: SCHEMA_VERSION,
        site: "e2e".into(),
        host: "scripted".into(),
        boot_id: "boot-1".into(),
        epoch: 1,
        seq,
        readings: vec![Reading {
            sensor: "pdu:outlet-7".into(),
            start_ms,
            end_ms: start_ms + 1_000,
            energy_uj,
            cumulative_uj,
            power_w: None,
            quality: Quality::Measured,
        }],
        gauges: Vec::new(),
        workloads: Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_agents_through_mosquitto_exact_totals() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let broker = Mosquitto::start().unwrap();
    let port = broker.port();
    let http = free_addr().unwrap();

    // A spy that sees every telemetry batch, to replay one as a duplicate.
    let spy = TestClient::connect(port, "e2e-spy", Some("vigie/v1/e2e/+/telemetry"))
        .await
        .unwrap();

    let collector_cfg = write(
        &d.join("collector.toml"),
        &format!(
            "[mqtt]\nport = {port}\nclient_id = \"e2e-collector\"\n[store]\npath = \"{}\"\n[http]\nlisten = \"{http}\"\n",
            d.join("ledger.sqlite").display()
        ),
    );
    let mut collector = Proc::start(
        "collector",
        &binary("vigie-collector").unwrap(),
        &["run", "--config", &collector_cfg],
        d,
    )
    .unwrap();
    // Agents publish as soon as they start: the collector subscribes first.
    wait_ready(http, &collector, Duration::from_secs(30));

    // Three hosts. h3's package range is 50 J and starts at 49 J: the
    // script wraps it twice. h2 has an mmio duplicate and core sub-zones
    // that move but must not be counted.
    const RANGE: u64 = 1_000_000_000;
    let mut trees = Vec::new();
    for (i, host) in ["h1", "h2", "h3"].iter().enumerate() {
        let root = d.join(format!("powercap-{host}"));
        std::fs::create_dir_all(&root).unwrap();
        let tree = match i {
            0 => FakePowercap::single_socket(&root, RANGE, 123_456).unwrap(),
            1 => FakePowercap::dual_socket(&root, RANGE, 5_000_000).unwrap(),
            _ => FakePowercap::create(
                &root,
                vec![ZoneSpec::new(
                    "intel-rapl:0",
                    "package-0",
                    50_000_000,
                    49_000_000,
                )],
            )
            .unwrap(),
        };
        trees.push((host.to_string(), tree));
    }
    let mut agents = Vec::new();
    for (host, tree) in &trees {
        let cfg = write(
            &d.join(format!("agent-{host}.toml")),
            &format!(
                "site = \"e2e\"\nhost = \"{host}\"\nstate_dir = \"{}\"\n[mqtt]\nport = {port}\n[sampling]\ninterval = \"100ms\"\npublish_interval = \"300ms\"\n[gpu]\nenabled = false\n[rapl]\nroot = \"{}\"\n",
                d.join(format!("state-{host}")).display(),
                tree.root().display()
            ),
        );
        agents.push(
            Proc::start(
                &format!("agent-{host}"),
                &binary("vigie-agent").unwrap(),
                &["run", "--config", &cfg],
                d,
            )
            .unwrap(),
        );
    }

    // Agents announce themselves online only after their baseline read.
    wait_for(
        "three hosts online",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || {
            let v = http_get(http, "/api/v1/hosts").ok()?.json().ok()?;
            let online = v["hosts"]
                .as_array()?
                .iter()
                .filter(|h| h["online"] == true)
                .count();
            (online == 3).then_some(())
        },
    )
    .unwrap_or_else(|e| {
        panic!(
            "{e}\ncollector:\n{}\nagent:\n{}",
            collector.log_tail(),
            agents[0].log_tail()
        )
    });

    // The script: 40 steps, 100 ms apart (agents sample every 100 ms).
    let mut truth = Truth::new();
    let mut add = |host: &str, sensor: &str, uj: u64| {
        *truth.entry((host.into(), sensor.into())).or_default() += uj
    };
    for step in 0..40u64 {
        let (_, h1) = &trees[0];
        h1.advance("intel-rapl:0", 1_000_000 + step).unwrap();
        add("h1", "rapl:package-0", 1_000_000 + step);
        let (_, h2) = &trees[1];
        for (zone, sensor, uj) in [
            ("intel-rapl:0", "rapl:package-0", 2_500_000),
            ("intel-rapl:1", "rapl:package-1", 2_400_000),
            ("intel-rapl:0:1", "rapl:dram-0", 300_000),
            ("intel-rapl:1:1", "rapl:dram-1", 310_000),
        ] {
            h2.advance(zone, uj + step).unwrap();
            add("h2", sensor, uj + step);
        }
        // Not counted: contained in the package, or a copy of it.
        h2.advance("intel-rapl:0:0", 1_700_000).unwrap();
        h2.advance("intel-rapl-mmio:0", 2_500_000 + step).unwrap();
        let (_, h3) = &trees[2];
        h3.advance("intel-rapl:0", 2_000_000).unwrap();
        add("h3", "rapl:package-0", 2_000_000);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Out of order: seq 1 arrives before seq 0. Then a malformed message.
    let test_client = TestClient::connect(port, "e2e-publisher", None)
        .await
        .unwrap();
    let t0 = vigie_agent_now_ms() - 10_000;
    let topic = "vigie/v1/e2e/scripted/telemetry";
    test_client
        .publish(
            topic,
            serde_json::to_vec(&scripted_batch(1, t0 + 1_000, 7_000_000, 12_000_000)).unwrap(),
        )
        .await
        .unwrap();
    test_client
        .publish(
            topic,
            serde_json::to_vec(&scripted_batch(0, t0, 5_000_000, 5_000_000)).unwrap(),
        )
        .await
        .unwrap();
    truth.insert(("scripted".into(), "pdu:outlet-7".into()), 12_000_000);
    test_client
        .publish(topic, b"{\"schema\":1,\"site\":".to_vec())
        .await
        .unwrap();

    // Replay one agent batch verbatim: it must not count twice. A batch
    // that carries energy, or counting it twice would not move a total.
    let energy = |payload: &[u8]| -> u64 {
        serde_json::from_slice::<TelemetryBatch>(payload)
            .map(|b| b.readings.iter().map(|r| r.energy_uj).sum())
            .unwrap_or(0)
    };
    let captured = wait_for(
        "a captured agent batch with energy",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || {
            spy.received()
                .into_iter()
                .find(|(t, p)| t.ends_with("/h1/telemetry") && energy(p) > 0)
        },
    )
    .unwrap();
    assert!(energy(&captured.1) > 0, "the replayed batch carries energy");
    test_client
        .publish(&captured.0, captured.1.clone())
        .await
        .unwrap();

    let got = wait_for(
        "ledger totals to reach the ground truth",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || {
            let l = ledger(http)?;
            (l == truth).then_some(l)
        },
    );
    let got = got.unwrap_or_else(|e| {
        panic!(
            "{e}\nledger: {:?}\ntruth:  {truth:?}\ncollector:\n{}",
            ledger(http),
            collector.log_tail()
        )
    });
    assert_eq!(got, truth);

    // Stop the agents: their last samples hold no new energy, so nothing moves.
    for a in &mut agents {
        let st = a.interrupt(Duration::from_secs(15)).unwrap();
        assert!(st.success(), "agent exit {st}\n{}", a.log_tail());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        ledger(http).unwrap(),
        truth,
        "totals moved after the agents stopped"
    );

    let metrics = http_get(http, "/metrics").unwrap().body;
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from /metrics:\n{metrics}"))
    };
    assert!(value("vigie_ingest_duplicates_total") >= 1.0);
    assert_eq!(
        value("vigie_ingest_rejected_total{reason=\"malformed\"}"),
        1.0
    );
    let h1 = value(
        "vigie_energy_joules_total{host=\"h1\",sensor=\"rapl:package-0\",quality=\"measured\"}",
    );
    assert!(
        (h1 - truth[&("h1".into(), "rapl:package-0".into())] as f64 / 1e6).abs() < 1e-6,
        "{h1}"
    );

    // The agents marked themselves offline on the way out.
    let hosts = http_get(http, "/api/v1/hosts").unwrap().json().unwrap();
    for h in hosts["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["host"] != "scripted")
    {
        assert_eq!(h["online"], false, "{h}");
    }
    let st = collector.interrupt(Duration::from_secs(15)).unwrap();
    assert!(
        st.success(),
        "collector exit {st}\n{}",
        collector.log_tail()
    );
    drop(broker);
}

fn vigie_agent_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}
