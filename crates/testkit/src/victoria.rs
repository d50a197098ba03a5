//! A real VictoriaMetrics single-node server on 127.0.0.1, one per test,
//! killed on drop: it takes InfluxDB line protocol on `/api/v2/write` and
//! gives the samples back on `/api/v1/export`.

use anyhow::Context;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The environment variable that makes a missing VictoriaMetrics a
/// failure rather than a skip (`.ci/run` sets it).
pub const REQUIRE_VICTORIA: &str = "VIGIE_REQUIRE_VICTORIA";

/// Series as [`VictoriaMetrics::export`] gives them: labels (`__name__`
/// among them) and `(timestamp ms, value)` samples.
pub type Exported = Vec<(serde_json::Map<String, serde_json::Value>, Vec<(i64, f64)>)>;

/// A running `victoria-metrics` process on a free loopback port.
#[derive(Debug)]
pub struct VictoriaMetrics {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl VictoriaMetrics {
    /// The binary: `$VIGIE_VICTORIA_METRICS`, else `victoria-metrics` in
    /// `PATH` or `/usr/bin` (Debian's `victoria-metrics` package). `None`
    /// when it is nowhere: the caller skips ([`crate::skip`]).
    pub fn binary() -> Option<PathBuf> {
        crate::find_tool(
            "VIGIE_VICTORIA_METRICS",
            "victoria-metrics",
            &["/usr/bin".into()],
        )
    }

    /// Starts `binary` with its data in a temporary directory (retention
    /// long enough for any timestamp a test writes), and waits until it
    /// answers `/health`.
    pub fn start(binary: &std::path::Path) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let port = crate::free_port()?;
        let log = std::fs::File::create(dir.path().join("victoria.log"))?;
        let child = Command::new(binary)
            .arg(format!(
                "-storageDataPath={}",
                dir.path().join("data").display()
            ))
            .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
            .arg("-retentionPeriod=100y")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let vm = VictoriaMetrics { child, port, dir };
        let addr = vm.addr();
        crate::wait_for(
            "victoria-metrics to answer /health",
            Duration::from_secs(20),
            Duration::from_millis(50),
            || {
                TcpStream::connect(addr).ok()?;
                crate::http_get(addr, "/health")
                    .ok()
                    .filter(|r| r.status == 200)
            },
        )
        .with_context(|| format!("victoria-metrics log:\n{}", vm.log()))?;
        Ok(vm)
    }

    /// Address it listens on.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Base URL (`http://127.0.0.1:<port>`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// Its log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("victoria.log")).unwrap_or_default()
    }

    /// Every sample of the series whose metric name matches the regular
    /// expression `name_re`, as `(labels, [(timestamp ms, value)])`, after
    /// making the server flush what it buffers so recent writes show.
    pub fn export(&self, name_re: &str) -> anyhow::Result<Exported> {
        crate::http_get(self.addr(), "/internal/force_flush")?;
        let query = format!("{{__name__=~\"{name_re}\"}}");
        let path = format!("/api/v1/export?match[]={}", percent(&query));
        let r = crate::http_get(self.addr(), &path)?;
        anyhow::ensure!(r.status == 200, "export: HTTP {}: {}", r.status, r.body);
        let mut out = Vec::new();
        for line in r.body.lines().filter(|l| !l.trim().is_empty()) {
            let v: serde_json::Value = serde_json::from_str(line)?;
            let labels = v["metric"]
                .as_object()
                .cloned()
                .context("export line without metric")?;
            let ts = v["timestamps"].as_array().context("no timestamps")?;
            let vals = v["values"].as_array().context("no values")?;
            let samples = ts
                .iter()
                .zip(vals)
                .filter_map(|(t, x)| Some((t.as_i64()?, x.as_f64()?)))
                .collect();
            out.push((labels, samples));
        }
        Ok(out)
    }
}

/// Percent-encodes everything but unreserved characters.
fn percent(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

impl Drop for VictoriaMetrics {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
