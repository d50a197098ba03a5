//! RAPL energy counters through Linux powercap.
//!
//! Zones are found under a root given by the caller (tests and the demo use
//! a fake tree). Only zones that do not contain one another are read:
//! each socket's package plus its dram; `core` and `uncore` sit inside the
//! package, `intel-rapl-mmio` repeats the MSR package, and `psys` (whole
//! SoC, client parts) is used only when no package zone exists.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

/// What a zone measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Domain {
    /// A CPU package (socket).
    Package,
    /// DRAM attached to a socket.
    Dram,
    /// Whole platform (client SoCs).
    Psys,
}

impl Domain {
    /// Short name used in sensor names and inventory.
    pub fn as_str(self) -> &'static str {
        match self {
            Domain::Package => "package",
            Domain::Dram => "dram",
            Domain::Psys => "psys",
        }
    }
}

/// One RAPL zone selected for reading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zone {
    /// Sensor name, e.g. `rapl:package-0`, `rapl:dram-1`, `rapl:psys`.
    pub sensor: String,
    /// What it measures.
    pub domain: Domain,
    /// Zone directory.
    pub path: PathBuf,
    /// `max_energy_range_uj`: the counter runs 0..=this.
    pub max_range_uj: u64,
}

/// RAPL failures, each saying what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum RaplError {
    /// `energy_uj` is root-only (Linux >= 5.10, CVE-2020-8694).
    #[error(
        "cannot read {path}: permission denied. Since Linux 5.10 (CVE-2020-8694) energy_uj is readable by root only. \
         Fix: install udev/60-vigie-powercap.rules (gives group 'vigie' read access), add the agent's user to group 'vigie', \
         then run `udevadm control --reload && udevadm trigger --subsystem-match=powercap --action=add`; or run the agent as root"
    )]
    PermissionDenied {
        /// The file.
        path: String,
    },
    /// The root does not exist or holds no RAPL zone.
    #[error(
        "no RAPL zone under {root}: this CPU or kernel exposes no powercap RAPL (load the intel_rapl_msr or amd_energy driver), \
         or set [rapl] enabled = false"
    )]
    NoZones {
        /// The powercap root.
        root: String,
    },
    /// Any other I/O error (retry on the next sample).
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A file did not hold a number.
    #[error("{path} does not hold a number: {text:?}")]
    Parse {
        /// The file.
        path: String,
        /// What it held.
        text: String,
    },
}

fn read_u64(path: &Path) -> Result<u64, RaplError> {
    let text = read_text(path)?;
    text.trim().parse().map_err(|_| RaplError::Parse {
        path: path.display().to_string(),
        text: text.chars().take(40).collect(),
    })
}

fn read_text(path: &Path) -> Result<String, RaplError> {
    std::fs::read_to_string(path).map_err(|e| io_error(path, e))
}

fn io_error(path: &Path, e: std::io::Error) -> RaplError {
    match e.kind() {
        ErrorKind::PermissionDenied => RaplError::PermissionDenied {
            path: path.display().to_string(),
        },
        _ => RaplError::Io {
            path: path.display().to_string(),
            source: e,
        },
    }
}

/// Parses `intel-rapl:N` or `intel-rapl:N:M` (and the mmio form) into
/// (mmio, socket, sub-zone).
fn parse_dir(name: &str) -> Option<(bool, u32, Option<u32>)> {
    let (mmio, rest) = if let Some(r) = name.strip_prefix("intel-rapl-mmio:") {
        (true, r)
    } else {
        (false, name.strip_prefix("intel-rapl:")?)
    };
    let mut it = rest.split(':');
    let socket = it.next()?.parse().ok()?;
    let sub = match it.next() {
        Some(s) => Some(s.parse().ok()?),
        None => None,
    };
    if it.next().is_some() {
        return None;
    }
    Some((mmio, socket, sub))
}

struct Found {
    mmio: bool,
    socket: u32,
    name: String,
    path: PathBuf,
}

fn scan(dir: &Path, out: &mut Vec<Found>) -> Result<(), RaplError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(RaplError::Io {
                path: dir.display().to_string(),
                source: e,
            });
        }
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(name) = file_name.to_str() else {
            continue;
        };
        let Some((mmio, socket, sub)) = parse_dir(name) else {
            continue;
        };
        let path = entry.path();
        // sysfs links sub-zones both at the top and inside the parent.
        if out.iter().any(|f| f.path.file_name() == path.file_name()) {
            continue;
        }
        let zone_name = read_text(&path.join("name"))?.trim().to_owned();
        out.push(Found {
            mmio,
            socket,
            name: zone_name,
            path: path.clone(),
        });
        if sub.is_none() {
            scan(&path, out)?;
        }
    }
    Ok(())
}

/// Finds the zones to read under `root`, checks each counter is readable,
/// and returns them sorted by sensor name.
pub fn discover(root: &Path) -> Result<Vec<Zone>, RaplError> {
    let mut found = Vec::new();
    scan(root, &mut found)?;
    let has_msr_package = found
        .iter()
        .any(|f| !f.mmio && f.name.starts_with("package"));
    let has_package = found.iter().any(|f| f.name.starts_with("package"));
    let mut zones = Vec::new();
    for f in found {
        // mmio repeats the MSR package: count it once.
        if f.mmio && has_msr_package {
            continue;
        }
        let domain = if f.name.starts_with("package") {
            Domain::Package
        } else if f.name == "dram" {
            Domain::Dram
        } else if f.name == "psys" && !has_package {
            Domain::Psys
        } else {
            // core, uncore: inside the package; psys: contains the package.
            continue;
        };
        let sensor = match domain {
            Domain::Psys => "rapl:psys".to_owned(),
            d => format!("rapl:{}-{}", d.as_str(), f.socket),
        };
        if zones.iter().any(|z: &Zone| z.sensor == sensor) {
            continue;
        }
        let max_range_uj = read_u64(&f.path.join("max_energy_range_uj"))?;
        // Fail now, with the fix, rather than at the first sample.
        read_u64(&f.path.join("energy_uj"))?;
        zones.push(Zone {
            sensor,
            domain,
            path: f.path,
            max_range_uj,
        });
    }
    if zones.is_empty() {
        return Err(RaplError::NoZones {
            root: root.display().to_string(),
        });
    }
    zones.sort_by(|a, b| a.sensor.cmp(&b.sensor));
    drop_die_copies(&mut zones)?;
    Ok(zones)
}

/// Some AMD parts expose one package zone per die, each a copy of the
/// socket's counter. Two independent packages reading the very same
/// non-zero microjoule count at the same instant are copies: keep the
/// first. (Both at 0, just after boot, cannot be told apart; they are kept.)
fn drop_die_copies(zones: &mut Vec<Zone>) -> Result<(), RaplError> {
    let mut seen: Vec<(u64, u64)> = Vec::new();
    let mut keep = Vec::with_capacity(zones.len());
    for z in zones.drain(..) {
        if z.domain == Domain::Package {
            let v = z.read_energy_uj()?;
            if v != 0 && seen.contains(&(z.max_range_uj, v)) {
                tracing::info!(sensor = %z.sensor, path = %z.path.display(), "package zone is a per-die copy of another package: not counted");
                continue;
            }
            seen.push((z.max_range_uj, v));
        }
        keep.push(z);
    }
    *zones = keep;
    Ok(())
}

impl Zone {
    /// Reads the counter now.
    pub fn read_energy_uj(&self) -> Result<u64, RaplError> {
        read_u64(&self.path.join("energy_uj"))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use vigie_testkit::{FakePowercap, ZoneSpec};

    fn sensors(z: &[Zone]) -> Vec<&str> {
        z.iter().map(|z| z.sensor.as_str()).collect()
    }

    #[test]
    fn dual_socket_counts_packages_and_dram_once() {
        let dir = tempfile::tempdir().unwrap();
        FakePowercap::dual_socket(dir.path(), 262_143_328_850, 1_000).unwrap();
        let zones = discover(dir.path()).unwrap();
        assert_eq!(
            sensors(&zones),
            [
                "rapl:dram-0",
                "rapl:dram-1",
                "rapl:package-0",
                "rapl:package-1"
            ]
        );
        assert_eq!(zones[0].max_range_uj, 262_143_328_850);
    }

    #[test]
    fn nested_subzones_are_found_once() {
        let dir = tempfile::tempdir().unwrap();
        FakePowercap::create(
            dir.path(),
            vec![
                ZoneSpec::new("intel-rapl:0", "package-0", 1000, 1),
                ZoneSpec::new("intel-rapl:0/intel-rapl:0:1", "dram", 1000, 1),
                ZoneSpec::new("intel-rapl:0:1", "dram", 1000, 1),
            ],
        )
        .unwrap();
        assert_eq!(
            sensors(&discover(dir.path()).unwrap()),
            ["rapl:dram-0", "rapl:package-0"]
        );
    }

    #[test]
    fn psys_only_without_package() {
        let dir = tempfile::tempdir().unwrap();
        FakePowercap::create(
            dir.path(),
            vec![
                ZoneSpec::new("intel-rapl:0", "package-0", 1000, 1),
                ZoneSpec::new("intel-rapl:1", "psys", 1000, 1),
            ],
        )
        .unwrap();
        assert_eq!(sensors(&discover(dir.path()).unwrap()), ["rapl:package-0"]);
        let dir = tempfile::tempdir().unwrap();
        FakePowercap::create(
            dir.path(),
            vec![ZoneSpec::new("intel-rapl:1", "psys", 1000, 1)],
        )
        .unwrap();
        assert_eq!(sensors(&discover(dir.path()).unwrap()), ["rapl:psys"]);
    }

    #[test]
    fn mmio_used_only_when_alone() {
        let dir = tempfile::tempdir().unwrap();
        FakePowercap::create(
            dir.path(),
            vec![ZoneSpec::new("intel-rapl-mmio:0", "package-0", 1000, 1)],
        )
        .unwrap();
        assert_eq!(sensors(&discover(dir.path()).unwrap()), ["rapl:package-0"]);
    }

    #[test]
    fn amd_per_die_copies_of_the_package_are_counted_once() {
        let dir = tempfile::tempdir().unwrap();
        // One socket shown as four dies, all mirroring the socket counter.
        FakePowercap::amd_per_die(dir.path(), 4, 65_532_610_987, 7_654_321).unwrap();
        assert_eq!(sensors(&discover(dir.path()).unwrap()), ["rapl:package-0"]);
        // Two real sockets read different values: both are kept.
        let dir = tempfile::tempdir().unwrap();
        FakePowercap::create(
            dir.path(),
            vec![
                ZoneSpec::new("intel-rapl:0", "package-0", 65_532_610_987, 5),
                ZoneSpec::new("intel-rapl:1", "package-1", 65_532_610_987, 6),
            ],
        )
        .unwrap();
        assert_eq!(
            sensors(&discover(dir.path()).unwrap()),
            ["rapl:package-0", "rapl:package-1"]
        );
    }

    #[test]
    fn client_with_psys_counts_the_package_and_not_its_parts() {
        let dir = tempfile::tempdir().unwrap();
        FakePowercap::client_with_psys(dir.path(), 262_143_328_850, 1).unwrap();
        assert_eq!(sensors(&discover(dir.path()).unwrap()), ["rapl:package-0"]);
    }

    #[test]
    fn empty_root_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let e = discover(&dir.path().join("nope")).unwrap_err().to_string();
        assert!(e.contains("no RAPL zone"), "{e}");
    }

    #[test]
    fn permission_error_maps_to_fix() {
        // Tests run as root in CI, and root reads a 0400 file, so the
        // mapping from the kernel's EACCES is tested directly.
        let denied = std::io::Error::from(ErrorKind::PermissionDenied);
        let e = io_error(Path::new("/x/energy_uj"), denied).to_string();
        assert!(
            e.contains("CVE-2020-8694") && e.contains("group 'vigie'"),
            "{e}"
        );
    }
}
