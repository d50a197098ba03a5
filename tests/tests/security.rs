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
        workloads: Vec::new(),
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

/// A batch of `host` (epoch, seq) with one reading of `energy_uj` ending
/// a second ago.
fn batch_of(host: &str, epoch: u64, seq: u64, energy_uj: u64) -> Vec<u8> {
    let now = vigie_service::now_ms();
    serde_json::to_vec(&TelemetryBatch {
        schema: SCHEMA_VERSION,
        site: "sec".into(),
        host: host.into(),
        boot_id: "forged".into(),
        epoch,
        seq,
        readings: vec![Reading {
            sensor: "rapl:package-0".into(),
            start_ms: now - 2_000,
            end_ms: now - 1_000,
            energy_uj,
            cumulative_uj: energy_uj,
            power_w: None,
            quality: Quality::Measured,
        }],
        gauges: Vec::new(),
        workloads: Vec::new(),
    })
    .unwrap()
}

/// Issue 10.5: a broker with no ACL at all (any client may publish under
/// any topic). With the host's key registered at the collector, another
/// client can neither add to h1's energy nor erase it by taking h1's next
/// sequence numbers first (−67 % before), signed or not, nor change its
/// inventory or status. The agent's key comes from `vigie-agent keygen`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_broker_acl_signed_batches_stop_forged_and_erased_energy() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let broker = Mosquitto::start().unwrap();
    let port = broker.port();
    let key_file = d.join("h1.key");
    let out = std::process::Command::new(binary("vigie-agent").unwrap())
        .args(["keygen", "--out", key_file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let public = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert_eq!(public.len(), 64, "{public}");
    assert_eq!(
        std::fs::read_to_string(d.join("h1.key.pub"))
            .unwrap()
            .trim(),
        public
    );
    let plain = format!("[mqtt]\nport = {port}\n");
    let mut site = start_site(
        d,
        &format!("{plain}[ingest.keys]\nh1 = \"{public}\"\n"),
        &format!("{plain}[signing]\nkey_file = \"{}\"\n", key_file.display()),
    );
    let http = site.http;
    site.tree.advance("intel-rapl:0", 7_000_000).unwrap();
    wait_for(
        "h1's energy, signed",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || (energy_of(http, "h1")? == 7_000_000).then_some(()),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", site.collector.log_tail()));

    let mallory = TestClient::connect(port, "mallory", None).await.unwrap();
    let mallory_key = ed25519_dalek::SigningKey::from_bytes(&[42u8; 32]);
    let signed = |json: Vec<u8>| vigie_protocol::sign_payload(&mallory_key, &json);
    let topic = "vigie/v1/sec/h1/telemetry";
    // Adding: h1's name on h1's topic, unsigned and signed with another key.
    mallory
        .publish(topic, batch_of("h1", 1, 0, 999_000_000))
        .await
        .unwrap();
    mallory
        .publish(topic, signed(batch_of("h1", 1, 1, 999_000_000)))
        .await
        .unwrap();
    // Erasing: h1's epoch and its next sequence numbers, read from the API,
    // taken first with 1 µJ batches.
    let v = http_get(http, "/api/v1/hosts").unwrap().json().unwrap();
    let (epoch, last) = (
        v["hosts"][0]["epoch"].as_u64().unwrap(),
        v["hosts"][0]["last_seq"].as_u64().unwrap(),
    );
    for seq in last + 1..=last + 20 {
        let json = batch_of("h1", epoch, seq, 1);
        let payload = if seq % 2 == 0 { signed(json) } else { json };
        mallory.publish(topic, payload).await.unwrap();
    }
    // The inventory, which says which sensors count, and the status.
    let mut meta = vigie_protocol::samples::meta();
    (meta.site, meta.host) = ("sec".into(), "h1".into());
    meta.cpu_model = "forged by mallory".into();
    mallory
        .publish(
            "vigie/v1/sec/h1/meta",
            signed(serde_json::to_vec(&meta).unwrap()),
        )
        .await
        .unwrap();
    mallory
        .publish(
            "vigie/v1/sec/h1/status",
            serde_json::to_vec(&vigie_protocol::samples::status_offline()).unwrap(),
        )
        .await
        .unwrap();
    let want = [("unsigned", 12.0), ("unknown_key", 12.0)];
    wait_for(
        "every forged message refused",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || {
            want.iter()
                .all(|(r, n)| rejected(http, r) == Some(*n))
                .then_some(())
        },
    )
    .unwrap_or_else(|e| {
        panic!(
            "{e}: {:?}\n{}",
            want.map(|(r, _)| rejected(http, r)),
            site.collector.log_tail()
        )
    });
    // h1's real batches, including those under the sequence numbers
    // mallory tried to take, all count: exact, to the µJ.
    site.tree.advance("intel-rapl:0", 1_000).unwrap();
    wait_for(
        "h1's energy after the attacks",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || {
            let v = http_get(http, "/api/v1/hosts").ok()?.json().ok()?;
            let seq = v["hosts"][0]["last_seq"].as_u64()?;
            (seq > last + 20 && energy_of(http, "h1")? == 7_001_000).then_some(())
        },
    )
    .unwrap_or_else(|e| {
        panic!(
            "{e}: {:?}\n{}",
            energy_of(http, "h1"),
            site.collector.log_tail()
        )
    });
    assert_eq!(energy_of(http, "h1"), Some(7_001_000));
    for r in ["bad_signature", "conflicting_duplicate", "host_mismatch"] {
        assert_eq!(rejected(http, r), Some(0.0), "{r}");
    }
    let v = http_get(http, "/api/v1/hosts").unwrap().json().unwrap();
    assert_eq!(v["hosts"][0]["online"], true, "forged offline status taken");
    assert!(
        !v["hosts"][0]["meta"]
            .to_string()
            .contains("forged by mallory"),
        "forged inventory taken"
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
