//! A fake `/sys/class/powercap` tree: the same files the kernel shows, in a
//! temporary directory, with counters a test or the demo moves by hand.

use anyhow::Context;
use std::path::{Path, PathBuf};

/// One RAPL zone to create.
#[derive(Debug, Clone)]
pub struct ZoneSpec {
    /// Directory name, e.g. `intel-rapl:0` or `intel-rapl:0:2`.
    pub dir: String,
    /// Contents of `name`, e.g. `package-0`, `dram`, `core`, `psys`.
    pub name: String,
    /// `max_energy_range_uj`.
    pub max_range_uj: u64,
    /// Initial `energy_uj`.
    pub energy_uj: u64,
}

impl ZoneSpec {
    /// A zone with the given directory, name, range and initial counter.
    pub fn new(dir: &str, name: &str, max_range_uj: u64, energy_uj: u64) -> Self {
        ZoneSpec {
            dir: dir.into(),
            name: name.into(),
            max_range_uj,
            energy_uj,
        }
    }
}

/// A powercap tree under a root directory. Sub-zones (`intel-rapl:0:1`) are
/// nested inside their parent, as in sysfs, and also linked at the top, as
/// the kernel does under `/sys/class/powercap`.
#[derive(Debug)]
pub struct FakePowercap {
    root: PathBuf,
    zones: Vec<ZoneSpec>,
}

impl FakePowercap {
    /// Creates the tree under `root` (which must exist).
    pub fn create(root: &Path, zones: Vec<ZoneSpec>) -> anyhow::Result<Self> {
        for z in &zones {
            let dir = root.join(&z.dir);
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            std::fs::write(dir.join("name"), format!("{}\n", z.name))?;
            std::fs::write(
                dir.join("max_energy_range_uj"),
                format!("{}\n", z.max_range_uj),
            )?;
            std::fs::write(dir.join("energy_uj"), format!("{}\n", z.energy_uj))?;
            std::fs::write(dir.join("enabled"), "1\n")?;
        }
        Ok(FakePowercap {
            root: root.to_owned(),
            zones,
        })
    }

    /// A typical dual-socket server: package and dram per socket, plus
    /// core sub-zones and an mmio duplicate that must not be counted.
    pub fn dual_socket(root: &Path, max_range_uj: u64, start_uj: u64) -> anyhow::Result<Self> {
        Self::create(
            root,
            vec![
                ZoneSpec::new("intel-rapl:0", "package-0", max_range_uj, start_uj),
                ZoneSpec::new("intel-rapl:0:0", "core", max_range_uj, start_uj / 2),
                ZoneSpec::new("intel-rapl:0:1", "dram", max_range_uj, start_uj / 4),
                // Two sockets never read the same count (equal values mark
                // per-die copies, see `amd_per_die`).
                ZoneSpec::new(
                    "intel-rapl:1",
                    "package-1",
                    max_range_uj,
                    (start_uj + start_uj / 3 + 1) % max_range_uj.max(1),
                ),
                ZoneSpec::new("intel-rapl:1:0", "core", max_range_uj, start_uj / 2),
                ZoneSpec::new("intel-rapl:1:1", "dram", max_range_uj, start_uj / 4),
                ZoneSpec::new("intel-rapl-mmio:0", "package-0", max_range_uj, start_uj),
            ],
        )
    }

    /// An AMD part that shows one package zone per die, each a copy of the
    /// socket's counter (keep them equal with [`Self::set_energy`]).
    pub fn amd_per_die(
        root: &Path,
        dies: u32,
        max_range_uj: u64,
        start_uj: u64,
    ) -> anyhow::Result<Self> {
        Self::create(
            root,
            (0..dies)
                .map(|d| {
                    ZoneSpec::new(
                        &format!("intel-rapl:{d}"),
                        &format!("package-{d}"),
                        max_range_uj,
                        start_uj,
                    )
                })
                .collect(),
        )
    }

    /// A client (laptop, desktop) part: package with core, uncore and dram
    /// sub-zones, and psys, which contains the package.
    pub fn client_with_psys(root: &Path, max_range_uj: u64, start_uj: u64) -> anyhow::Result<Self> {
        Self::create(
            root,
            vec![
                ZoneSpec::new("intel-rapl:0", "package-0", max_range_uj, start_uj),
                ZoneSpec::new("intel-rapl:0:0", "core", max_range_uj, start_uj),
                ZoneSpec::new("intel-rapl:0:1", "uncore", max_range_uj, start_uj),
                ZoneSpec::new("intel-rapl:1", "psys", max_range_uj, start_uj),
            ],
        )
    }

    /// A single-socket machine with one package zone.
    pub fn single_socket(root: &Path, max_range_uj: u64, start_uj: u64) -> anyhow::Result<Self> {
        Self::create(
            root,
            vec![ZoneSpec::new(
                "intel-rapl:0",
                "package-0",
                max_range_uj,
                start_uj,
            )],
        )
    }

    /// Root of the tree, to give the agent as its powercap root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The zones as created.
    pub fn zones(&self) -> &[ZoneSpec] {
        &self.zones
    }

    fn zone(&self, dir: &str) -> anyhow::Result<&ZoneSpec> {
        self.zones
            .iter()
            .find(|z| z.dir == dir)
            .with_context(|| format!("no zone {dir}"))
    }

    /// Current `energy_uj` of a zone.
    pub fn energy(&self, dir: &str) -> anyhow::Result<u64> {
        let p = self.root.join(dir).join("energy_uj");
        let s = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
        Ok(s.trim().parse()?)
    }

    /// Sets `energy_uj` (atomically: write then rename, so a reader never
    /// sees a half-written number).
    pub fn set_energy(&self, dir: &str, value: u64) -> anyhow::Result<()> {
        let zone = self.zone(dir)?;
        anyhow::ensure!(value <= zone.max_range_uj, "{value} above range of {dir}");
        let d = self.root.join(dir);
        let tmp = d.join(".energy_uj.tmp");
        std::fs::write(&tmp, format!("{value}\n"))?;
        std::fs::rename(&tmp, d.join("energy_uj"))?;
        Ok(())
    }

    /// Adds `delta_uj` to a zone's counter, wrapping like the hardware
    /// (the counter runs 0..=max_range_uj). Returns the new value.
    pub fn advance(&self, dir: &str, delta_uj: u64) -> anyhow::Result<u64> {
        let range = u128::from(self.zone(dir)?.max_range_uj) + 1;
        let cur = u128::from(self.energy(dir)?);
        let next = ((cur + u128::from(delta_uj)) % range) as u64;
        self.set_energy(dir, next)?;
        Ok(next)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn advance_wraps_like_hardware() {
        let dir = tempfile::tempdir().unwrap();
        let p = FakePowercap::single_socket(dir.path(), 1000, 990).unwrap();
        assert_eq!(p.advance("intel-rapl:0", 5).unwrap(), 995);
        // 995 + 10 = 1005 -> 1005 - 1001 = 4 (values 0..=1000)
        assert_eq!(p.advance("intel-rapl:0", 10).unwrap(), 4);
        assert!(p.set_energy("intel-rapl:0", 1001).is_err());
    }
}
