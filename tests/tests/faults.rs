//! Delivery without loss: the broker goes away while an agent keeps
//! measuring, the agent is then SIGKILLed, and after both come back the
//! spooled batches reach the ledger. Totals equal the script to the µJ.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::{Path, PathBuf};
use std::time::Duration;
use vigie_e2e::{Proc, binary, wait_host_online, wait_ready};
use vigie_testkit::{FakePowercap, Mosquitto, free_addr, http_get, wait_for};

fn total_uj(http: std::net::SocketAddr) -> Option<u64> {
    let v = http_get(http, "/api/v1/energy?group_by=host")
        .ok()?
        .json()
        .ok()?;
    v["total"]["energy_uj"].as_u64()
}

/// A collector (client id `client_id`) and an agent's configuration for
/// host h1 on a single-socket fake powercap tree, sampling every 100 ms.
fn start_site(
    d: &Path,
    port: u16,
    http: std::net::SocketAddr,
    client_id: &str,
) -> (Proc, FakePowercap, PathBuf) {
    let collector_cfg = d.join("collector.toml");
    std::fs::write(
        &collector_cfg,
        format!(
            "[mqtt]\nport = {port}\nclient_id = \"{client_id}\"\n[store]\npath = \"{}\"\n[http]\nlisten = \"{http}\"\n",
            d.join("ledger.sqlite").display()
        ),
    )
    .unwrap();
    let collector = Proc::start(
        "collector",
        &binary("vigie-collector").unwrap(),
        &["run", "--config", collector_cfg.to_str().unwrap()],
        d,
    )
    .unwrap();
    wait_ready(http, &collector, Duration::from_secs(30));
    let root = d.join("powercap");
    std::fs::create_dir_all(&root).unwrap();
    let tree = FakePowercap::single_socket(&root, 262_143_328_850, 0).unwrap();
    let agent_cfg = d.join("agent.toml");
    std::fs::write(
        &agent_cfg,
        format!(
            "site = \"f\"\nhost = \"h1\"\nstate_dir = \"{}\"\n[mqtt]\nport = {port}\n[sampling]\ninterval = \"100ms\"\npublish_interval = \"300ms\"\n[gpu]\nenabled = false\n[rapl]\nroot = \"{}\"\n",
            d.join("state").display(),
            root.display()
        ),
    )
    .unwrap();
    (collector, tree, agent_cfg)
}

#[test]
fn broker_outage_then_agent_crash_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut broker = Mosquitto::start().unwrap();
    let port = broker.port();
    let http = free_addr().unwrap();
    let (mut collector, tree, agent_cfg) = start_site(d, port, http, "faults-collector");
    let agent_bin = binary("vigie-agent").unwrap();
    let mut agent = Proc::start(
        "agent-1",
        &agent_bin,
        &["run", "--config", agent_cfg.to_str().unwrap()],
        d,
    )
    .unwrap();
    wait_host_online(http, &agent);

    let mut truth = 0u64;
    let run_steps = |n: u64, truth: &mut u64| {
        for i in 0..n {
            tree.advance("intel-rapl:0", 1_000_000 + i).unwrap();
            *truth += 1_000_000 + i;
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    run_steps(10, &mut truth);
    wait_for(
        "energy before the outage",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || (total_uj(http)? == truth).then_some(()),
    )
    .unwrap();

    // Outage (broker stopped with SIGTERM, so its persistent sessions and
    // their queues survive): the agent keeps measuring into its spool.
    broker.stop();
    run_steps(15, &mut truth);
    // Let every reading be cut into a spooled batch, then crash the agent.
    std::thread::sleep(Duration::from_millis(1_000));
    agent.kill();
    let spool = d.join("state").join("spool.sqlite");
    assert!(spool.is_file(), "no spool at {}", spool.display());

    broker.restart().unwrap();
    let mut agent = Proc::start(
        "agent-2",
        &agent_bin,
        &["run", "--config", agent_cfg.to_str().unwrap()],
        d,
    )
    .unwrap();
    run_steps(5, &mut truth);
    let got = wait_for(
        "totals after recovery",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || {
            let t = total_uj(http)?;
            (t == truth).then_some(t)
        },
    );
    let got = got.unwrap_or_else(|e| {
        panic!(
            "{e}: ledger {:?} µJ, truth {truth} µJ\nagent:\n{}\ncollector:\n{}",
            total_uj(http),
            agent.log_tail(),
            collector.log_tail()
        )
    });
    assert_eq!(got, truth);
    let log = std::fs::read_to_string(d.join("agent-2.log")).unwrap();
    assert!(log.contains("spooled batches from an earlier run"), "{log}");

    assert!(agent.interrupt(Duration::from_secs(15)).unwrap().success());
    assert_eq!(total_uj(http), Some(truth));
    assert!(
        collector
            .interrupt(Duration::from_secs(15))
            .unwrap()
            .success()
    );
}

/// A broker that comes back without its sessions (persistence lost): what
/// it had queued is gone, but both daemons reconnect, the collector
/// subscribes again, and new energy flows into the ledger.
#[test]
fn broker_that_forgot_everything_is_rejoined() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut broker = Mosquitto::start().unwrap();
    let port = broker.port();
    let http = free_addr().unwrap();
    let (mut collector, tree, agent_cfg) = start_site(d, port, http, "amnesia-collector");
    let mut agent = Proc::start(
        "agent",
        &binary("vigie-agent").unwrap(),
        &["run", "--config", agent_cfg.to_str().unwrap()],
        d,
    )
    .unwrap();
    wait_host_online(http, &agent);
    tree.advance("intel-rapl:0", 5_000_000).unwrap();
    wait_for(
        "energy before the broker loses its memory",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || (total_uj(http)? == 5_000_000).then_some(()),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", agent.log_tail()));

    broker.restart_amnesic().unwrap();
    // Both sides need a moment to notice and reconnect; then new energy
    // must arrive (what the broker had accepted and forgot may not).
    let before = total_uj(http).unwrap();
    let got = wait_for(
        "energy after the broker came back empty",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || {
            tree.advance("intel-rapl:0", 1_000).unwrap();
            let t = total_uj(http)?;
            (t > before + 10_000).then_some(t)
        },
    );
    got.unwrap_or_else(|e| {
        panic!(
            "{e}\nagent:\n{}\ncollector:\n{}",
            agent.log_tail(),
            collector.log_tail()
        )
    });
    // Both saw the broker go and say so: the collector in its own
    // counter, the agent in its status (issue 10.6).
    wait_for(
        "the lost connections counted",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || {
            let text = http_get(http, "/metrics").ok()?.body;
            let value = |series: &str| -> Option<f64> {
                text.lines()
                    .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            };
            let collector = value("vigie_broker_disconnects_total")?;
            let agent = value(r#"vigie_agent_broker_disconnects{host="h1"}"#)?;
            (collector >= 1.0 && agent >= 1.0).then_some(())
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", agent.log_tail()));
    assert!(agent.interrupt(Duration::from_secs(15)).unwrap().success());
    assert!(
        collector
            .interrupt(Duration::from_secs(15))
            .unwrap()
            .success()
    );
}

/// Issue 10.6: a payload over the broker's packet limit used to vanish
/// (the broker dropped it on its way to the collector, counted nowhere).
/// With the example configuration's `max_packet_size`, the broker refuses
/// it at the publisher, which learns it; a payload under that limit but
/// over the collector's reaches the collector and is counted; the
/// collector's connection is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_broker_limit_refuses_at_the_publisher_and_the_collector_counts_the_rest() {
    let conf = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/mosquitto/vigie.conf"),
    )
    .unwrap();
    let limit: usize = conf
        .lines()
        .find_map(|l| l.trim().strip_prefix("max_packet_size "))
        .expect("max_packet_size in deploy/mosquitto/vigie.conf")
        .trim()
        .parse()
        .unwrap();
    let broker =
        Mosquitto::start_with(&format!("allow_anonymous true\nmax_packet_size {limit}\n")).unwrap();
    let port = broker.port();
    let http = free_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // The collector's default limits: the example broker is sized for them.
    let (collector, _tree, _agent_cfg) = start_site(d, port, http, "limit-collector");
    let metric = |series: &str| -> Option<f64> {
        let text = http_get(http, "/metrics").ok()?.body;
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    };
    let oversized = r#"vigie_ingest_rejected_total{reason="oversized"}"#;
    assert_eq!(metric(oversized), Some(0.0));

    let topic = "vigie/v1/f/big/telemetry";
    let publisher = vigie_e2e::client::TestClient::connect(port, "limit-publisher", None)
        .await
        .unwrap();
    // Over the broker's limit: refused at the publisher (an MQTT v5
    // client learns the limit from the CONNACK; the broker disconnects
    // one that sends it anyway), which sees the failure; nothing reaches
    // the collector.
    let refused = publisher.publish(topic, vec![b' '; limit + 1]).await;
    assert!(refused.is_err(), "a PUBLISH over max_packet_size went out");
    // Over the collector's payload limit, under the broker's: it reaches
    // the collector, which refuses it and counts it.
    let payload = vigie_collector::config::CollectorConfig::default()
        .ingest
        .max_payload_bytes
        + 1;
    assert!(payload + 1024 < limit);
    let publisher = vigie_e2e::client::TestClient::connect(port, "limit-publisher-2", None)
        .await
        .unwrap();
    publisher.publish(topic, vec![b' '; payload]).await.unwrap();
    wait_for(
        "the oversized payload counted",
        Duration::from_secs(30),
        Duration::from_millis(50),
        || (metric(oversized)? == 1.0).then_some(()),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", collector.log_tail()));
    // The collector never lost its connection over any of it.
    assert_eq!(metric("vigie_broker_disconnects_total"), Some(0.0));
    assert_eq!(metric("vigie_broker_subscribed"), Some(1.0));
}
