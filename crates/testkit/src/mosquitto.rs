//! A real Mosquitto broker on 127.0.0.1, one per test, killed on drop.

use anyhow::Context;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running `mosquitto` process listening on a free loopback port.
#[derive(Debug)]
pub struct Mosquitto {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    listener_config: String,
}

impl Mosquitto {
    /// Starts Mosquitto (from `$PATH`, `/usr/sbin` or `/usr/local/sbin`)
    /// with persistence in a temporary directory, and waits until it listens.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with("allow_anonymous true\n")
    }

    /// Starts a broker whose listener takes `listener_config` (TLS,
    /// authentication, ACL lines) instead of `allow_anonymous true`.
    pub fn start_with(listener_config: &str) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let port = crate::free_port()?;
        let mut m = Mosquitto {
            child: None,
            port,
            dir,
            listener_config: listener_config.to_owned(),
        };
        m.spawn()?;
        Ok(m)
    }

    fn binary() -> anyhow::Result<PathBuf> {
        let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
            .map(|p| {
                std::env::split_paths(&p)
                    .map(|d| d.join("mosquitto"))
                    .collect()
            })
            .unwrap_or_default();
        candidates.push("/usr/sbin/mosquitto".into());
        candidates.push("/usr/local/sbin/mosquitto".into());
        candidates.into_iter().find(|p| p.is_file()).context(
            "mosquitto not found: install it (Debian: apt-get install -y mosquitto) to run the end-to-end tests",
        )
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let conf = self.dir.path().join("mosquitto.conf");
        // `user root`: started as root (CI), Mosquitto would otherwise drop
        // to user `mosquitto`, which cannot write its persistence file into
        // our private temporary directory; as any other user it is ignored.
        std::fs::write(
            &conf,
            format!(
                "user root\nlistener {port} 127.0.0.1\n{listener}persistence true\npersistence_location {dir}/\nmax_queued_messages 100000\nlog_dest stderr\nlog_type error\nlog_type warning\n",
                port = self.port,
                listener = self.listener_config,
                dir = self.dir.path().display()
            ),
        )?;
        let child = Command::new(Self::binary()?)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.dir.path().join("mosquitto.log"))?,
            )
            .spawn()
            .context("starting mosquitto")?;
        self.child = Some(child);
        let addr = self.addr();
        crate::wait_for(
            "mosquitto to listen",
            Duration::from_secs(10),
            Duration::from_millis(20),
            || TcpStream::connect(addr).ok(),
        )
        .with_context(|| {
            format!(
                "mosquitto log:\n{}",
                std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
            )
        })?;
        Ok(())
    }

    /// Mosquitto's own log (errors and warnings), for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }

    /// Its process id while it runs (benches read its CPU time).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Address it listens on.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Stops the broker the way an operator does (SIGTERM): Mosquitto
    /// writes its persistence file, so persistent sessions and the
    /// messages queued for them survive a [`Self::restart`].
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let term = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while term.is_ok() && std::time::Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port with the same persistence directory.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.spawn()
    }

    /// Stops it, deletes its persistence file, and starts it again: a
    /// broker that lost every session and queued message (crash without
    /// persistence, replaced machine).
    pub fn restart_amnesic(&mut self) -> anyhow::Result<()> {
        self.stop();
        let db = self.dir.path().join("mosquitto.db");
        if db.exists() {
            std::fs::remove_file(&db)?;
        }
        self.spawn()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.stop();
    }
}
