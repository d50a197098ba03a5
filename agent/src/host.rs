//! Facts about the machine: host name, boot id, inventory, epoch.

use std::path::Path;
use vigie_protocol::{HostMeta, SCHEMA_VERSION, SensorMeta};

/// Keeps `[A-Za-z0-9._-]`, replaces anything else with `-`, and caps the length,
/// so any host name becomes a valid topic level.
pub fn clean_name(raw: &str) -> String {
    let s: String = raw
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    if s.is_empty() { "unknown".into() } else { s }
}

/// The machine's host name, cleaned.
pub fn host_name() -> String {
    let raw = sysinfo::System::host_name()
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .unwrap_or_default();
    clean_name(&raw)
}

/// `/proc/sys/kernel/random/boot_id`, or `unknown` off Linux.
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| clean_name(&s))
        .unwrap_or_else(|_| "unknown".into())
}

/// Picks this run's epoch: the current time in milliseconds, or one more
/// than the last epoch if the clock went back, and records it in
/// `state_dir`. A new epoch on every start keeps (host, epoch, seq) unique
/// even if the state directory is lost.
pub fn next_epoch(state_dir: &Path, now_ms: i64) -> std::io::Result<u64> {
    std::fs::create_dir_all(state_dir)?;
    let path = state_dir.join("epoch");
    let last: u64 = std::fs::read_to_string(&path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let epoch = u64::try_from(now_ms)
        .unwrap_or(0)
        .max(last.saturating_add(1));
    let tmp = state_dir.join("epoch.tmp");
    std::fs::write(&tmp, format!("{epoch}\n"))?;
    std::fs::rename(&tmp, &path)?;
    Ok(epoch)
}

/// [`next_epoch`], or, when the state directory cannot be written (a
/// full disk), the epoch it would have written, kept in memory with the
/// error: the agent keeps measuring instead of failing at every start.
/// Unique as long as the clock does not go back before the next start
/// that can write.
pub fn next_epoch_or_memory(state_dir: &Path, now_ms: i64) -> (u64, Option<std::io::Error>) {
    match next_epoch(state_dir, now_ms) {
        Ok(e) => (e, None),
        Err(err) => {
            let last: u64 = std::fs::read_to_string(state_dir.join("epoch"))
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0);
            let epoch = u64::try_from(now_ms)
                .unwrap_or(0)
                .max(last.saturating_add(1));
            (epoch, Some(err))
        }
    }
}

/// Host inventory for the retained `meta` topic.
pub fn inventory(
    site: &str,
    host: &str,
    sockets: u32,
    gpus: Vec<vigie_protocol::GpuMeta>,
    sensors: Vec<SensorMeta>,
    rack: Option<vigie_protocol::RackPosition>,
) -> HostMeta {
    use sysinfo::{CpuRefreshKind, MemoryRefreshKind, RefreshKind, System};
    let sys = System::new_with_specifics(
        RefreshKind::nothing()
            .with_cpu(CpuRefreshKind::nothing())
            .with_memory(MemoryRefreshKind::nothing().with_ram()),
    )
    .ok();
    let cpu_model = sys
        .as_ref()
        .and_then(|s| s.cpus().first().map(|c| c.brand().trim().to_owned()))
        .unwrap_or_default();
    HostMeta {
        schema: SCHEMA_VERSION,
        site: site.to_owned(),
        host: host.to_owned(),
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        cpu_model,
        sockets: sockets.max(1),
        logical_cpus: sys.as_ref().map(|s| s.cpus().len() as u32).unwrap_or(0),
        memory_bytes: sys.as_ref().map(|s| s.total_memory()).unwrap_or(0),
        gpus,
        sensors,
        rack,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_become_topic_safe() {
        assert_eq!(clean_name("node01.example\n"), "node01.example");
        assert_eq!(clean_name("a/b+c#d e"), "a-b-c-d-e");
        assert_eq!(clean_name(""), "unknown");
        assert!(vigie_protocol::is_valid_host_or_site(&clean_name(&"é".repeat(80))).is_ok());
    }

    #[test]
    fn epochs_increase_even_if_the_clock_goes_back() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(next_epoch(dir.path(), 1_000).unwrap(), 1_000);
        assert_eq!(next_epoch(dir.path(), 5_000).unwrap(), 5_000);
        assert_eq!(next_epoch(dir.path(), 4_000).unwrap(), 5_001);
    }
}
