//! Security against a real Mosquitto on 127.0.0.1 configured as
//! `deploy/mosquitto/` ships it: TLS only, each client authenticated (by
//! certificate, or by password), and the shipped ACL confining each agent
//! to its own host's topics. An impostor can neither write under another
//! host's topic (the broker refuses) nor smuggle another host's name in a
//! payload (the collector refuses, `host_mismatch`). Totals stay exact.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::{Path, PathBuf};
use std::time::Duration;
use vigie_e2e::client::TestClient;
use vigie_e2e::{Proc, binary, wait_ready};
use vigie_protocol::{Quality, Reading, SCHEMA_VERSION, TelemetryBatch};
use vigie_testkit::pki::{CertFiles, Pki};
use vigie_testkit::{FakePowercap, Mosquitto, free_addr, http_get, wait_for};

fn shipped_acl() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/mosquitto/vigie.acl")
}

fn energy_of(http: std::net::SocketAddr, host: &str) -> Option<u64> {
    let v = http_get(http, "/api/v1/energy?group_by=host")
        .ok()?
        .json()
        .ok()?;
    let groups = v["groups"].as_array()?;
    Some(
        groups
            .iter()
            .find(|g| g["host"] == host)
            .and_then(|g| g["energy_uj"].as_u64())
            .unwrap_or(0),
    )
}

fn rejected(http: std::net::SocketAddr, reason: &str) -> Option<f64> {
    let text = http_get(http, "/metrics").ok()?.body;
    let series = format!("vigie_ingest_rejected_total{{reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(series.as_str())?.parse().ok())
}

fn forged(host_in_payload: &str) -> Vec<u8> {
    let now = vigie_service::now_ms();
    serde_json::to_vec(&TelemetryBatch {
        schema: SCHEMA_VERSION,
        site: "sec".into(),
        host: host_in_payload.into(),
        boot_id: "forged".into(),
        epoch: 1,
        seq: 0,
        readings: vec![Reading {
            sensor: "rapl:package-0".into(),
            start_ms: now - 2_000,
            end_ms: now - 1_000,
            energy_uj: 999_000_000,
            cumulative_uj: 999_000_000,
            power_w: None,
            quality: Quality::Measured,
        }],
        gauges: Vec::new(),
    })
    .unwrap()
}

/// `[mqtt]` lines for a daemon: TLS with an optional client identity, and
/// an optional user name with its password file.
fn mqtt_section(
    port: u16,
    ca: &Path,
    ident: Option<&CertFiles>,
    login: Option<(&str, &Path)>,
    extra: &str,
) -> String {
    let mut s = format!("[mqtt]\nhost = \"127.0.0.1\"\nport = {port}\n{extra}");
    if let Some((user, file)) = login {
        s += &format!(
            "username = \"{user}\"\npassword_file = \"{}\"\n",
            file.display()
        );
    }
    s += &format!("[mqtt.tls]\nca_file = \"{}\"\n", ca.display());
    if let Some(c) = ident {
        s += &format!(
            "cert_file = \"{}\"\nkey_file = \"{}\"\n",
            c.cert.display(),
            c.key.display()
        );
    }
    s
}

struct Site {
    collector: Proc,
    agent: Proc,
    http: std::net::SocketAddr,
    tree: FakePowercap,
}

/// A collector and an agent "h1" configured by `collector_mqtt` and `agent_mqtt`.
fn start_site(d: &Path, collector_mqtt: &str, agent_mqtt: &str) -> Site {
    let http = free_addr().unwrap();
    let ccfg = d.join("collector.toml");
    std::fs::write(
        &ccfg,
        format!(
            "[store]\npath = \"{}\"\n[http]\nlisten = \"{http}\"\n{collector_mqtt}",
            d.join("ledger.sqlite").display()
        ),
    )
    .unwrap();
    let collector = Proc::start(
        "collector",
        &binary("vigie-collector").unwrap(),
        &["run", "--config", ccfg.to_str().unwrap()],
        d,
    )
    .unwrap();
    // Agents publish as soon as they start: the collector subscribes first.
    wait_ready(http, &collector, Duration::from_secs(30));
    let root = d.join("powercap");
    std::fs::create_dir_all(&root).unwrap();
    let tree = FakePowercap::single_socket(&root, 262_143_328_850, 0).unwrap();
    let acfg = d.join("agent.toml");
    std::fs::write(
        &acfg,
        format!(
            "site = \"sec\"\nhost = \"h1\"\nstate_dir = \"{}\"\n[sampling]\ninterval = \"100ms\"\npublish_interval = \"200ms\"\n[gpu]\nenabled = false\n[rapl]\nroot = \"{}\"\n{agent_mqtt}",
            d.join("state").display(),
            root.display()
        ),
    )
    .unwrap();
    let agent = Proc::start(
        "agent",
        &binary("vigie-agent").unwrap(),
        &["run", "--config", acfg.to_str().unwrap()],
        d,
    )
    .unwrap();
    wait_for(
        "h1 online over TLS",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || {
            let v = http_get(http, "/api/v1/hosts").ok()?.json().ok()?;
            (v["hosts"][0]["online"] == true).then_some(())
        },
    )
    .unwrap_or_else(|e| {
        panic!(
            "{e}\nagent:\n{}\ncollector:\n{}",
            agent.log_tail(),
            collector.log_tail()
        )
    });
    Site {
        collector,
        agent,
        http,
        tree,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_and_the_shipped_acl_stop_impersonation() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pki = Pki::new(d).unwrap();
    let server = pki.server().unwrap();
    let broker = Mosquitto::start_with(&format!(
        "cafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\nuse_identity_as_username true\nallow_anonymous false\nacl_file {}\n",
        pki.ca_file.display(),
        server.cert.display(),
        server.key.display(),
        shipped_acl().display()
    ))
    .unwrap();
    let port = broker.port();
    let (h1, h2, col) = (
        pki.client("h1").unwrap(),
        pki.client("h2").unwrap(),
        pki.client("vigie-collector").unwrap(),
    );
    let mut site = start_site(
        d,
        &mqtt_section(
            port,
            &pki.ca_file,
            Some(&col),
            None,
            "client_id = \"vigie-collector\"\n",
        ),
        &mqtt_section(port, &pki.ca_file, Some(&h1), None, ""),
    );
    let http = site.http;
    site.tree.advance("intel-rapl:0", 7_000_000).unwrap();
    wait_for(
        "h1's energy",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || (energy_of(http, "h1")? == 7_000_000).then_some(()),
    )
    .unwrap();

    // h2 holds a valid certificate, but for h2.
    let impostor = TestClient::connect_tls(port, "h2", &pki.ca_file, Some(&h2), None)
        .await
        .unwrap();
    // Writing under h1's topic: refused by the broker (ACL), never delivered.
    // (Mosquitto acknowledges it without saying so, as MQTT lets it; the
    // proof is below: it never reaches the ledger, though the next publish
    // on the same connection, which arrives after it, does reach the collector.)
    impostor
        .publish("vigie/v1/sec/h1/telemetry", forged("h1"))
        .await
        .unwrap();
    // Writing under its own topic with h1's name inside: refused by the collector.
    impostor
        .publish("vigie/v1/sec/h2/telemetry", forged("h1"))
        .await
        .unwrap();
    wait_for(
        "the smuggled host name rejected",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || (rejected(http, "host_mismatch")? == 1.0).then_some(()),
    )
    .unwrap();
    // Still exactly h1's own energy, and nothing for h2.
    site.tree.advance("intel-rapl:0", 1_000).unwrap();
    wait_for(
        "h1's energy after the attempts",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || (energy_of(http, "h1")? == 7_001_000).then_some(()),
    )
    .unwrap();
    assert_eq!(energy_of(http, "h2"), Some(0));

    // No certificate, no connection.
    let anonymous = TestClient::connect_tls(port, "anon", &pki.ca_file, None, None).await;
    assert!(
        anonymous.is_err(),
        "a client without a certificate connected"
    );

    assert!(
        site.agent
            .interrupt(Duration::from_secs(15))
            .unwrap()
            .success()
    );
    assert!(
        site.collector
            .interrupt(Duration::from_secs(15))
            .unwrap()
            .success()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_from_files_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pki = Pki::new(d).unwrap();
    let server = pki.server().unwrap();
    let passwd = d.join("mosquitto.passwd");
    for (i, (user, pass)) in [("h1", "h1-secret"), ("vigie-collector", "c-secret")]
        .iter()
        .enumerate()
    {
        let mut cmd = std::process::Command::new("mosquitto_passwd");
        if i == 0 {
            cmd.arg("-c");
        }
        let st = cmd
            .args(["-b", passwd.to_str().unwrap(), user, pass])
            .status()
            .unwrap();
        assert!(st.success());
    }
    let secret = |name: &str, value: &str| {
        let p = d.join(name);
        std::fs::write(&p, format!("{value}\n")).unwrap();
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        p
    };
    let (h1_pass, col_pass) = (
        secret("h1.pass", "h1-secret"),
        secret("col.pass", "c-secret"),
    );
    let broker = Mosquitto::start_with(&format!(
        "cafile {}\ncertfile {}\nkeyfile {}\nallow_anonymous false\npassword_file {}\nacl_file {}\n",
        pki.ca_file.display(),
        server.cert.display(),
        server.key.display(),
        passwd.display(),
        shipped_acl().display()
    ))
    .unwrap();
    let port = broker.port();
    let mut site = start_site(
        d,
        &mqtt_section(
            port,
            &pki.ca_file,
            None,
            Some(("vigie-collector", &col_pass)),
            "client_id = \"vigie-collector\"\n",
        ),
        &mqtt_section(port, &pki.ca_file, None, Some(("h1", &h1_pass)), ""),
    );
    let http = site.http;
    site.tree.advance("intel-rapl:0", 3_000_000).unwrap();
    wait_for(
        "h1's energy",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || (energy_of(http, "h1")? == 3_000_000).then_some(()),
    )
    .unwrap();
    let wrong =
        TestClient::connect_tls(port, "h1-bis", &pki.ca_file, None, Some(("h1", "guess"))).await;
    assert!(wrong.is_err(), "a wrong password was accepted");
    for p in [&site.agent, &site.collector] {
        let log = p.log_tail();
        assert!(
            !log.contains("h1-secret") && !log.contains("c-secret"),
            "a password in the logs:\n{log}"
        );
    }
    assert!(
        site.agent
            .interrupt(Duration::from_secs(15))
            .unwrap()
            .success()
    );
    assert!(
        site.collector
            .interrupt(Duration::from_secs(15))
            .unwrap()
            .success()
    );
}
