//! Process plumbing shared by `vigie-agent` and `vigie-collector`: logging
//! set-up, the shutdown signal, systemd readiness and watchdog, reading a
//! TOML configuration file, and the one place that reads the wall clock.
//!
//! Library crates of vigie take time and shutdown as arguments; only the
//! binaries' entry points call into this crate.

use anyhow::Context;
use serde::de::DeserializeOwned;
use std::path::Path;
use std::time::Duration;

pub mod errors;
pub mod keys;
pub mod secrets;

/// Installs the `tracing` subscriber on stderr. `RUST_LOG` overrides
/// `default_filter`.
pub fn init_tracing(default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    // A second call (tests in one process) keeps the first subscriber.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Reads a TOML configuration file, or the defaults when no path is given.
/// Unknown fields are errors (the config types deny them).
pub fn load_config<T: DeserializeOwned + Default>(path: Option<&Path>) -> anyhow::Result<T> {
    let Some(path) = path else {
        return Ok(T::default());
    };
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// An instant [`now_ms`] returns instead of the system clock's, once set
/// by [`pin_clock`].
static PINNED_MS: std::sync::OnceLock<i64> = std::sync::OnceLock::new();

/// Pins [`now_ms`] to `ms` for the rest of the process, so that an
/// end-to-end test can run a daemon at a chosen instant (the test builds
/// of the daemons call it, from `VIGIE_E2E_NOW_MS`; the shipped binaries
/// never do). Returns false, changing nothing, if already pinned.
pub fn pin_clock(ms: i64) -> bool {
    PINNED_MS.set(ms).is_ok()
}

/// Milliseconds since the Unix epoch, from the system clock (or the
/// instant given to [`pin_clock`]).
pub fn now_ms() -> i64 {
    if let Some(&ms) = PINNED_MS.get() {
        return ms;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}

/// Tells systemd (`Type=notify`) that start-up is complete. A no-op when
/// not started by systemd.
pub fn notify_ready() {
    if let Err(e) = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]) {
        tracing::debug!(error = %e, "sd_notify READY failed");
    }
}

/// Tells systemd that shutdown has begun.
pub fn notify_stopping() {
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
}

/// The systemd watchdog period (`WatchdogSec=`) when one is set for this
/// process: `WATCHDOG_USEC`, applying to us when `WATCHDOG_PID` is our pid
/// or absent (as libsystemd's `sd_watchdog_enabled` reads them).
pub fn watchdog_period() -> Option<Duration> {
    watchdog_from(
        std::env::var("WATCHDOG_USEC").ok().as_deref(),
        std::env::var("WATCHDOG_PID").ok().as_deref(),
        std::process::id(),
    )
}

fn watchdog_from(usec: Option<&str>, pid: Option<&str>, me: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok().filter(|u| *u > 0)?;
    match pid {
        Some(p) if p.trim().parse::<u32>().ok() != Some(me) => None,
        _ => Some(Duration::from_micros(usec)),
    }
}

/// Sends one watchdog keep-alive. Callers send it from the loop whose
/// progress it vouches for, at half the period or more often.
pub fn notify_watchdog() {
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
}

/// Sends a one-line status shown by `systemctl status`.
pub fn notify_status(text: &str) {
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Status(text)]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchdog_settings_as_systemd_passes_them() {
        let d = |ms| Some(Duration::from_millis(ms));
        assert_eq!(watchdog_from(Some("30000000"), Some("7"), 7), d(30_000));
        assert_eq!(watchdog_from(Some("400000"), None, 7), d(400));
        assert_eq!(
            watchdog_from(Some("400000"), Some("8"), 7),
            None,
            "another process's"
        );
        assert_eq!(watchdog_from(Some("0"), None, 7), None);
        assert_eq!(watchdog_from(Some("x"), None, 7), None);
        assert_eq!(watchdog_from(None, Some("7"), 7), None);
    }
}
