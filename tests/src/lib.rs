//! Helpers for the end-to-end tests: the workspace's binaries as child
//! processes, and an MQTT test client.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use anyhow::Context;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Path of a daemon's binary (`vigie-agent`, `vigie-collector`) as this
/// package builds it for its tests: `e2e-<name>`, the same `cli::main`.
pub fn binary(name: &str) -> anyhow::Result<PathBuf> {
    // Test executables live in target/<profile>/deps; binaries one level up.
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .context("no target directory")?;
    let path = dir.join(format!("e2e-{name}"));
    anyhow::ensure!(
        path.is_file(),
        "{} not built: run the tests with `cargo test` (which builds this package's binaries first)",
        path.display()
    );
    Ok(path)
}

/// Starts `vigie-collector run --config DIR/collector.toml`, logging in
/// `dir`, and waits until it is ready at `http` (see [`wait_ready`]).
pub fn start_collector(dir: &Path, http: std::net::SocketAddr) -> anyhow::Result<Proc> {
    start_collector_with_env(dir, http, &[])
}

/// As [`start_collector`], with extra environment variables (such as
/// `VIGIE_E2E_NOW_MS`, which pins the test build's clock: see
/// `src/bin/collector.rs`).
pub fn start_collector_with_env(
    dir: &Path,
    http: std::net::SocketAddr,
    env: &[(&str, &str)],
) -> anyhow::Result<Proc> {
    let config = dir.join("collector.toml");
    let collector = Proc::start_with_env(
        "collector",
        &binary("vigie-collector")?,
        &["run", "--config", &config.to_string_lossy()],
        env,
        dir,
    )?;
    wait_ready(http, &collector, Duration::from_secs(30));
    Ok(collector)
}

/// Waits (`within` at most) until the collector at `http` answers
/// `/readyz` with 200: its HTTP server is up and the broker has
/// acknowledged its subscriptions, so a message published from now on
/// reaches it. Panics with `proc`'s log otherwise.
pub fn wait_ready(http: std::net::SocketAddr, proc: &Proc, within: Duration) {
    vigie_testkit::wait_for(
        "the collector to be ready",
        within,
        Duration::from_millis(50),
        || {
            let r = vigie_testkit::http_get(http, "/readyz").ok()?;
            (r.status == 200).then_some(())
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", proc.log_tail()));
}

/// Starts `vigie-collector demo` on free loopback ports, its ledger and
/// fake trees under `DIR/data`, `extra` arguments appended: the process
/// and its HTTP address.
pub fn start_demo(dir: &Path, extra: &[&str]) -> anyhow::Result<(Proc, std::net::SocketAddr)> {
    let http = vigie_testkit::free_addr()?;
    let mqtt = vigie_testkit::free_port()?.to_string();
    let data = dir.join("data");
    let http_arg = http.to_string();
    let data_arg = data.to_string_lossy();
    let mut args = vec![
        "demo",
        "--http",
        &http_arg,
        "--mqtt-port",
        &mqtt,
        "--dir",
        &data_arg,
    ];
    args.extend_from_slice(extra);
    let demo = Proc::start("demo", &binary("vigie-collector")?, &args, dir)?;
    // A new demo ledger first gets a year of simulated history.
    wait_ready(http, &demo, Duration::from_secs(120));
    Ok((demo, http))
}

/// Waits (30 s at most) until the first host the collector at `http`
/// knows is online; panics with `agent`'s log otherwise.
pub fn wait_host_online(http: std::net::SocketAddr, agent: &Proc) {
    vigie_testkit::wait_for(
        "host online",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || {
            let v = vigie_testkit::http_get(http, "/api/v1/hosts")
                .ok()?
                .json()
                .ok()?;
            (v["hosts"][0]["online"] == true).then_some(())
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", agent.log_tail()));
}

/// A child process killed on drop, its stderr kept in a file for failures.
pub struct Proc {
    child: Option<Child>,
    name: String,
    log: PathBuf,
}

impl Proc {
    /// Starts `bin` with `args`, logging stderr to `log_dir/<name>.log`.
    pub fn start(name: &str, bin: &Path, args: &[&str], log_dir: &Path) -> anyhow::Result<Self> {
        Self::start_with_env(name, bin, args, &[], log_dir)
    }

    /// As [`Proc::start`], with extra environment variables.
    pub fn start_with_env(
        name: &str,
        bin: &Path,
        args: &[&str],
        env: &[(&str, &str)],
        log_dir: &Path,
    ) -> anyhow::Result<Self> {
        let log = log_dir.join(format!("{name}.log"));
        let child = Command::new(bin)
            .args(args)
            .envs(env.iter().copied())
            .env(
                "RUST_LOG",
                std::env::var("VIGIE_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(log_dir.join(format!("{name}.out")))?)
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        Ok(Proc {
            child: Some(child),
            name: name.to_owned(),
            log,
        })
    }

    /// Sends SIGINT (as Ctrl-C does) and waits for the exit, at most `timeout`.
    pub fn interrupt(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let child = self.child.as_mut().context("already stopped")?;
        let st = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()?;
        anyhow::ensure!(st.success(), "kill -INT failed");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait()? {
                self.child = None;
                return Ok(status);
            }
            if Instant::now() > deadline {
                anyhow::bail!(
                    "{} did not exit within {timeout:?} of SIGINT\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the process with SIGKILL (a crash) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The last lines of its log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A raw MQTT client for tests: publishes anything, records what it receives.
pub mod client {
    use rumqttc::{
        AsyncClient, Event, MqttOptions, Packet, PublishOptions, QoS, SubscribeReasonCode,
    };
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    /// A received message: topic and payload.
    pub type Received = (String, Vec<u8>);

    /// Connected test client.
    pub struct TestClient {
        client: AsyncClient,
        received: Arc<Mutex<Vec<Received>>>,
    }

    impl TestClient {
        /// Connects to 127.0.0.1:`port` and subscribes to `filter` (if any).
        pub async fn connect(port: u16, id: &str, filter: Option<&str>) -> anyhow::Result<Self> {
            Self::connect_with(MqttOptions::new(id, ("127.0.0.1", port)), filter).await
        }

        /// Connects over TLS to 127.0.0.1:`port`, trusting `ca` and
        /// presenting `client` (certificate, key) if given.
        pub async fn connect_tls(
            port: u16,
            id: &str,
            ca: &std::path::Path,
            client: Option<&vigie_testkit::pki::CertFiles>,
            login: Option<(&str, &str)>,
        ) -> anyhow::Result<Self> {
            let mut opts = MqttOptions::new(id, ("127.0.0.1", port));
            let client_auth = match client {
                Some(c) => Some((std::fs::read(&c.cert)?, std::fs::read(&c.key)?)),
                None => None,
            };
            opts.set_transport(rumqttc::Transport::tls_with_config(
                rumqttc::TlsConfiguration::Simple {
                    ca: std::fs::read(ca)?,
                    alpn: None,
                    client_auth,
                },
            ));
            if let Some((user, pass)) = login {
                opts.set_credentials(user, pass.to_owned());
            }
            Self::connect_with(opts, None).await
        }

        /// Connects with `opts` and subscribes to `filter` (if any). Returns
        /// once the broker has granted the subscription (its SUBACK), so a
        /// message published from then on reaches this client; without a
        /// filter, once connected (CONNACK). Fails if that takes over 10 s
        /// or the broker refuses the filter.
        pub async fn connect_with(
            mut opts: MqttOptions,
            filter: Option<&str>,
        ) -> anyhow::Result<Self> {
            opts.set_keep_alive(10);
            let (client, mut eventloop) = AsyncClient::builder(opts).capacity(100).build();
            let received = Arc::new(Mutex::new(Vec::new()));
            let sink = received.clone();
            let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
            let mut ready_tx = Some(ready_tx);
            tokio::spawn(async move {
                loop {
                    match eventloop.poll().await {
                        Ok(Event::Incoming(Packet::ConnAck(_))) => {
                            if let Some(tx) = ready_tx.take() {
                                let _ = tx.send(());
                            }
                        }
                        Ok(Event::Incoming(Packet::Publish(p))) => {
                            sink.lock().unwrap().push((
                                String::from_utf8_lossy(&p.topic).into_owned(),
                                p.payload.to_vec(),
                            ));
                        }
                        Ok(_) => {}
                        Err(rumqttc::ConnectionError::RequestsDone) => break,
                        Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                }
            });
            let within = Duration::from_secs(10);
            match filter {
                Some(f) => {
                    let granted = client.subscribe_tracked(f, QoS::AtLeastOnce).await?;
                    let ack = tokio::time::timeout(within, granted.wait_async())
                        .await?
                        .map_err(|e| anyhow::anyhow!("subscribing to {f}: {e:?}"))?;
                    anyhow::ensure!(
                        !ack.return_codes.is_empty()
                            && ack
                                .return_codes
                                .iter()
                                .all(|c| matches!(c, SubscribeReasonCode::Success(_))),
                        "the broker refused {f}: {:?}",
                        ack.return_codes
                    );
                }
                None => tokio::time::timeout(within, ready_rx).await??,
            }
            Ok(TestClient { client, received })
        }

        /// Publishes with QoS 1.
        pub async fn publish(&self, topic: &str, payload: Vec<u8>) -> anyhow::Result<()> {
            let notice = self
                .client
                .publish_tracked(topic.to_owned(), payload, PublishOptions::at_least_once())
                .await?;
            tokio::time::timeout(Duration::from_secs(10), notice.wait_async()).await??;
            Ok(())
        }

        /// Publishes with QoS 1, retained (as an agent's status).
        pub async fn publish_retained(&self, topic: &str, payload: Vec<u8>) -> anyhow::Result<()> {
            let notice = self
                .client
                .publish_tracked(
                    topic.to_owned(),
                    payload,
                    PublishOptions::at_least_once().retained(),
                )
                .await?;
            tokio::time::timeout(Duration::from_secs(10), notice.wait_async()).await??;
            Ok(())
        }

        /// Messages received so far.
        pub fn received(&self) -> Vec<Received> {
            self.received.lock().unwrap().clone()
        }
    }
}
