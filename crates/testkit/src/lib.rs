//! Fakes for tests and the demo: a powercap sysfs tree in a directory,
//! a cgroup v2 tree and `/proc` with CPU time per workload,
//! a Mosquitto broker and a VictoriaMetrics server on loopback, a minimal HTTP client, bounded waits,
//! and the external tools some tests need (found, or skipped loudly).
//! Nothing here touches real hardware or leaves 127.0.0.1.

mod cgroup;
mod http;
mod mosquitto;
pub mod pki;
mod powercap;
mod tools;
mod victoria;

pub use cgroup::FakeCgroups;
pub use http::{HttpResponse, http_get, http_get_with, http_post_json, https_get};
pub use mosquitto::Mosquitto;
pub use powercap::{FakePowercap, ZoneSpec};
pub use tools::{find_tool, home_dir, required, skip};
pub use victoria::{Exported, REQUIRE_VICTORIA, VictoriaMetrics};

use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> anyhow::Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// Loopback address with a free port.
pub fn free_addr() -> anyhow::Result<SocketAddr> {
    Ok(SocketAddr::from(([127, 0, 0, 1], free_port()?)))
}

/// Polls `f` every `step` until it returns `Some`, for at most `timeout`.
/// Returns the last error message on time-out, so the test can say what it waited for.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    step: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(step);
    }
}
