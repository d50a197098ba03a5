//! A fake cgroup v2 tree and `/proc`: the files the agent's per-workload
//! attribution reads (`cpu.stat`, `/proc/<pid>/stat`, `/proc/<pid>/cgroup`,
//! `/proc/stat`), in a directory, with counters a test moves by hand.

use anyhow::Context;
use std::path::{Path, PathBuf};

/// A cgroup tree under `<dir>/cgroup` and a proc tree under `<dir>/proc`.
#[derive(Debug)]
pub struct FakeCgroups {
    cgroup: PathBuf,
    proc: PathBuf,
}

fn cpu_stat(usage_usec: u64) -> String {
    // The kernel's layout; the agent reads `usage_usec` only.
    format!(
        "usage_usec {usage_usec}\nuser_usec {}\nsystem_usec {}\nnr_periods 0\nnr_throttled 0\nthrottled_usec 0\n",
        usage_usec / 2,
        usage_usec - usage_usec / 2
    )
}

impl FakeCgroups {
    /// Creates both trees under `dir` (which must exist); the root cgroup
    /// starts at 0 µs.
    pub fn create(dir: &Path) -> anyhow::Result<Self> {
        let cg = FakeCgroups {
            cgroup: dir.join("cgroup"),
            proc: dir.join("proc"),
        };
        std::fs::create_dir_all(&cg.cgroup)?;
        std::fs::create_dir_all(&cg.proc)?;
        cg.set_root_usage(0)?;
        cg.set_proc_total_ticks(0)?;
        Ok(cg)
    }

    /// The cgroup root (what `/sys/fs/cgroup` is).
    pub fn cgroup_root(&self) -> PathBuf {
        self.cgroup.clone()
    }

    /// The proc root (what `/proc` is).
    pub fn proc_root(&self) -> PathBuf {
        self.proc.clone()
    }

    /// Sets the root cgroup's `usage_usec` (the whole host's CPU time).
    pub fn set_root_usage(&self, usage_usec: u64) -> anyhow::Result<()> {
        std::fs::write(self.cgroup.join("cpu.stat"), cpu_stat(usage_usec))?;
        Ok(())
    }

    /// Creates cgroup `path` (relative, `/`-separated, with its parents)
    /// with `usage_usec` of CPU time.
    pub fn add(&self, path: &str, usage_usec: u64) -> anyhow::Result<()> {
        let dir = self.cgroup.join(path);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        self.set_usage(path, usage_usec)
    }

    /// Sets cgroup `path`'s `usage_usec`.
    pub fn set_usage(&self, path: &str, usage_usec: u64) -> anyhow::Result<()> {
        std::fs::write(
            self.cgroup.join(path).join("cpu.stat"),
            cpu_stat(usage_usec),
        )?;
        Ok(())
    }

    /// Cgroup `path`'s `usage_usec`.
    pub fn usage(&self, path: &str) -> anyhow::Result<u64> {
        let text = std::fs::read_to_string(self.cgroup.join(path).join("cpu.stat"))?;
        text.lines()
            .find_map(|l| l.strip_prefix("usage_usec "))
            .context("no usage_usec")?
            .trim()
            .parse()
            .context("bad usage_usec")
    }

    /// Adds `delta_usec` to cgroup `path` and every cgroup above it up to
    /// the root, as the kernel's hierarchical counters do.
    pub fn add_usage(&self, path: &str, delta_usec: u64) -> anyhow::Result<()> {
        let mut p = path.to_owned();
        loop {
            if self.cgroup.join(&p).join("cpu.stat").exists() {
                self.set_usage(&p, self.usage(&p)? + delta_usec)?;
            }
            match p.rfind('/') {
                Some(i) => p.truncate(i),
                None => break,
            }
        }
        let root = std::fs::read_to_string(self.cgroup.join("cpu.stat"))?;
        let now: u64 = root
            .lines()
            .find_map(|l| l.strip_prefix("usage_usec "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        self.set_root_usage(now + delta_usec)
    }

    /// Removes cgroup `path` (the kernel removes an empty cgroup).
    pub fn remove(&self, path: &str) -> anyhow::Result<()> {
        std::fs::remove_dir_all(self.cgroup.join(path))?;
        Ok(())
    }

    /// Creates process `pid` named `comm`, with `ticks` of CPU time (utime
    /// + stime, USER_HZ), in cgroup `cgroup`.
    pub fn add_process(
        &self,
        pid: u32,
        comm: &str,
        ticks: u64,
        cgroup: &str,
    ) -> anyhow::Result<()> {
        let dir = self.proc.join(pid.to_string());
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("cgroup"), format!("0::/{cgroup}\n"))?;
        self.set_process_ticks(pid, comm, ticks)
    }

    /// Sets process `pid`'s CPU time, ticks (utime gets the odd tick).
    pub fn set_process_ticks(&self, pid: u32, comm: &str, ticks: u64) -> anyhow::Result<()> {
        let (utime, stime) = (ticks - ticks / 2, ticks / 2);
        let line = format!(
            "{pid} ({comm}) S 1 {pid} {pid} 0 -1 4194560 500 0 0 0 {utime} {stime} 0 0 20 0 1 0 {start} 1000000 100 18446744073709551615\n",
            start = 1_000 + u64::from(pid)
        );
        std::fs::write(self.proc.join(pid.to_string()).join("stat"), line)?;
        Ok(())
    }

    /// Sets `/proc/stat`'s busy CPU time (all of it as user time), ticks.
    pub fn set_proc_total_ticks(&self, ticks: u64) -> anyhow::Result<()> {
        std::fs::write(
            self.proc.join("stat"),
            format!("cpu  {ticks} 0 0 1000000 0 0 0 0 0 0\ncpu0 {ticks} 0 0 1000000 0 0 0 0 0 0\n"),
        )?;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn usage_rolls_up_to_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let cg = FakeCgroups::create(dir.path()).unwrap();
        cg.add("kubepods.slice", 0).unwrap();
        cg.add("kubepods.slice/pod-a", 10).unwrap();
        cg.add_usage("kubepods.slice/pod-a", 5).unwrap();
        assert_eq!(cg.usage("kubepods.slice/pod-a").unwrap(), 15);
        assert_eq!(cg.usage("kubepods.slice").unwrap(), 5);
        assert_eq!(cg.usage("").unwrap(), 5);
    }
}
