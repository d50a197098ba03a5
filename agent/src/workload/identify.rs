//! Which workload a cgroup is, from its path under the cgroup v2 root.
//!
//! Recognised layouts (systemd and cgroupfs drivers):
//! - systemd services and scopes: `system.slice/nginx.service`,
//!   `system.slice/system-getty.slice/getty@tty1.service`, `init.scope`;
//!   a slice with nothing under it is a workload of its own;
//! - user sessions: `user.slice/user-1000.slice` (everything of that user);
//! - Kubernetes: `kubepods.slice/kubepods-burstable.slice/
//!   kubepods-burstable-pod<uid>.slice/cri-containerd-<id>.scope` (systemd
//!   driver; the pod uid's `-` are `_` there) and `kubepods/burstable/
//!   pod<uid>/<id>` (cgroupfs); guaranteed pods sit right under `kubepods`;
//! - libvirt/QEMU: `machine.slice/machine-qemu\x2d1\x2dvm1.scope`;
//! - Slurm: `system.slice/slurmstepd.scope/job_<id>/step_<n>` and
//!   `slurm/uid_<u>/job_<id>/step_<n>`;
//! - Docker outside Kubernetes: `system.slice/docker-<id>.scope`;
//! - anything else: a leaf cgroup is a workload of kind `cgroup` named by
//!   its path; an inner one is looked into.

use std::collections::BTreeMap;
use vigie_protocol::WorkloadKind;

/// How finely workloads are told apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Each systemd service, user, pod, VM and Slurm job is one workload.
    Service,
    /// As `service`, with pods split into their containers and Slurm jobs
    /// into their steps.
    Container,
    /// Each process (from `/proc`), whatever its cgroup.
    Process,
}

/// A workload found in the cgroup tree.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Workload {
    /// What it is.
    pub kind: WorkloadKind,
    /// Its id within the kind.
    pub id: String,
    /// Descriptive labels (`pod_uid`, `runtime`, `uid`, `job`).
    pub labels: BTreeMap<String, String>,
}

/// What a cgroup is at a level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// A workload: its CPU time counts for it, its children are not read.
    Workload(Workload),
    /// Not a workload: look at its children (a leaf is a `cgroup`).
    Descend,
}

fn workload(kind: WorkloadKind, id: impl Into<String>, labels: &[(&str, &str)]) -> Found {
    Found::Workload(Workload {
        kind,
        id: id.into(),
        labels: labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    })
}

/// systemd's unit-name escaping: `\x2d` is `-`.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("\\x") {
        out.push_str(&rest[..i]);
        let hex = rest.get(i + 2..i + 4);
        match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
            Some(b) if b.is_ascii() => {
                out.push(char::from(b));
                rest = &rest[i + 4..];
            }
            _ => {
                out.push_str("\\x");
                rest = &rest[i + 2..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The pod uid in `kubepods-burstable-pod<uid>.slice` (underscores back to
/// dashes) or `pod<uid>` (cgroupfs).
fn pod_uid(component: &str) -> Option<String> {
    let c = component.strip_suffix(".slice").unwrap_or(component);
    let at = c.rfind("pod")?;
    let uid = &c[at + 3..];
    let prefix_ok = at == 0 || c[..at].ends_with('-');
    (prefix_ok
        && uid.len() >= 8
        && uid
            .bytes()
            .all(|b| b.is_ascii_hexdigit() || b == b'_' || b == b'-'))
    .then(|| uid.replace('_', "-"))
}

/// A container id and runtime in `cri-containerd-<id>.scope`,
/// `crio-<id>.scope`, `crio-conmon-<id>.scope`, `docker-<id>.scope`, or a
/// bare `<id>` (cgroupfs).
fn container(component: &str) -> Option<(String, &'static str)> {
    if let Some(c) = component.strip_suffix(".scope") {
        for (prefix, runtime) in [
            ("cri-containerd-", "containerd"),
            ("crio-conmon-", "cri-o"),
            ("crio-", "cri-o"),
            ("docker-", "docker"),
            ("cri-dockerd-", "docker"),
        ] {
            if let Some(id) = c.strip_prefix(prefix) {
                return Some((id.to_owned(), runtime));
            }
        }
        return None;
    }
    (component.len() >= 12 && component.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| (component.to_owned(), "unknown"))
}

/// What the cgroup at `path` (relative to the root, `/`-separated, no
/// leading `/`) is at `level`. At [`Level::Process`] nothing is a
/// workload: processes are read from `/proc` instead.
pub fn classify(path: &str, level: Level) -> Found {
    if level == Level::Process || path.is_empty() {
        return Found::Descend;
    }
    let parts: Vec<&str> = path.split('/').collect();
    let last = parts[parts.len() - 1];

    // Slurm, before the generic `.scope` rule (slurmstepd.scope holds jobs).
    if let Some(i) = parts
        .iter()
        .position(|p| *p == "slurmstepd.scope" || *p == "slurm")
    {
        let uid = parts[i + 1..]
            .iter()
            .find_map(|p| p.strip_prefix("uid_"))
            .unwrap_or("");
        let job = parts[i + 1..].iter().position(|p| p.starts_with("job_"));
        let Some(j) = job.map(|j| i + 1 + j) else {
            return Found::Descend;
        };
        let job_id = &parts[j][4..];
        let labels: Vec<(&str, &str)> = if uid.is_empty() {
            Vec::new()
        } else {
            vec![("uid", uid)]
        };
        if parts.len() == j + 1 {
            return match level {
                Level::Service => workload(WorkloadKind::SlurmJob, job_id, &labels),
                _ => Found::Descend,
            };
        }
        if parts.len() == j + 2 {
            if let Some(step) = parts[j + 1].strip_prefix("step_") {
                let mut l = labels.clone();
                l.push(("job", job_id));
                return workload(WorkloadKind::SlurmStep, format!("{job_id}.{step}"), &l);
            }
            // `job_<id>/user` and the like: still the job's.
            return workload(WorkloadKind::SlurmJob, job_id, &labels);
        }
        return Found::Descend;
    }

    // Kubernetes.
    if parts[0] == "kubepods.slice" || parts[0] == "kubepods" {
        let Some(p) = parts.iter().position(|c| pod_uid(c).is_some()) else {
            return Found::Descend;
        };
        let uid = pod_uid(parts[p]).unwrap_or_default();
        if parts.len() == p + 1 {
            return match level {
                Level::Service => workload(WorkloadKind::Pod, uid, &[]),
                _ => Found::Descend,
            };
        }
        if parts.len() == p + 2
            && let Some((id, runtime)) = container(last)
        {
            return workload(
                WorkloadKind::Container,
                id,
                &[("pod_uid", &uid), ("runtime", runtime)],
            );
        }
        // Something else inside a pod (a pause cgroup under another name):
        // the pod's.
        return workload(WorkloadKind::Pod, uid, &[]);
    }

    // VMs.
    if let Some(name) = last
        .strip_prefix("machine-")
        .and_then(|m| m.strip_suffix(".scope"))
    {
        let name = unescape(name);
        // libvirt: `qemu-<n>-<name>`.
        let vm = name
            .strip_prefix("qemu-")
            .and_then(|r| r.split_once('-'))
            .map_or(name.as_str(), |(_, n)| n)
            .to_owned();
        return workload(WorkloadKind::Vm, vm, &[("unit", &name)]);
    }

    // Users.
    if let Some(uid) = last
        .strip_prefix("user-")
        .and_then(|u| u.strip_suffix(".slice"))
        && uid.bytes().all(|b| b.is_ascii_digit())
    {
        return workload(
            WorkloadKind::Session,
            format!("user-{uid}"),
            &[("uid", uid)],
        );
    }

    if let Some((id, runtime)) = container(last).filter(|_| last.ends_with(".scope")) {
        return workload(WorkloadKind::Container, id, &[("runtime", runtime)]);
    }
    if last.ends_with(".service") || last.ends_with(".scope") {
        return workload(WorkloadKind::Service, unescape(last), &[]);
    }
    Found::Descend
}

/// The workload of a leaf cgroup [`classify`] says to look into: a slice
/// of its own, or a cgroup named by its path.
pub fn leaf(path: &str) -> Workload {
    let kind = if path.ends_with(".slice") {
        WorkloadKind::Slice
    } else {
        WorkloadKind::Cgroup
    };
    let id = path.rsplit('/').next().unwrap_or(path);
    Workload {
        kind,
        id: if kind == WorkloadKind::Slice {
            unescape(id)
        } else {
            path.to_owned()
        },
        labels: BTreeMap::new(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    fn at(path: &str, level: Level) -> (WorkloadKind, String, Vec<(String, String)>) {
        match classify(path, level) {
            Found::Workload(w) => (w.kind, w.id, w.labels.into_iter().collect()),
            Found::Descend => panic!("{path}: not a workload at {level:?}"),
        }
    }

    fn kind_id(path: &str, level: Level) -> (WorkloadKind, String) {
        let (k, id, _) = at(path, level);
        (k, id)
    }

    #[test]
    fn systemd_units() {
        use WorkloadKind::*;
        for level in [Level::Service, Level::Container] {
            assert_eq!(
                kind_id("system.slice/nginx.service", level),
                (Service, "nginx.service".into())
            );
            assert_eq!(
                kind_id("system.slice/system-getty.slice/getty@tty1.service", level),
                (Service, "getty@tty1.service".into())
            );
            assert_eq!(kind_id("init.scope", level), (Service, "init.scope".into()));
            assert_eq!(
                kind_id(
                    r"system.slice/system-systemd\x2dfsck.slice/systemd-fsck@dev-sda1.service",
                    level
                ),
                (Service, "systemd-fsck@dev-sda1.service".into())
            );
            assert_eq!(
                at("user.slice/user-1000.slice", level),
                (
                    Session,
                    "user-1000".into(),
                    vec![("uid".into(), "1000".into())]
                )
            );
            for inner in [
                "system.slice",
                "user.slice",
                "machine.slice",
                "system.slice/system-getty.slice",
            ] {
                assert_eq!(classify(inner, level), Found::Descend, "{inner}");
            }
        }
        assert_eq!(leaf("system.slice/system-foo.slice").kind, Slice);
        assert_eq!(leaf("odd/thing").id, "odd/thing");
        assert_eq!(leaf("odd/thing").kind, Cgroup);
    }

    #[test]
    fn kubernetes_pods_and_containers_with_both_drivers() {
        use WorkloadKind::*;
        let uid = "0b5d3e9c-6f2a-4d8e-9b1c-2a7f4e6d8c10";
        let sd_pod = "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0b5d3e9c_6f2a_4d8e_9b1c_2a7f4e6d8c10.slice";
        let cid = "4f1b9a2c7d3e8f0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f607182";
        let fs_pod = format!("kubepods/burstable/pod{uid}");
        let guaranteed = format!("kubepods.slice/kubepods-pod{}.slice", uid.replace('-', "_"));
        for pod in [sd_pod, &fs_pod, &guaranteed] {
            assert_eq!(kind_id(pod, Level::Service), (Pod, uid.into()));
            assert_eq!(classify(pod, Level::Container), Found::Descend);
        }
        for (c, runtime) in [
            (format!("{sd_pod}/cri-containerd-{cid}.scope"), "containerd"),
            (format!("{sd_pod}/crio-{cid}.scope"), "cri-o"),
            (format!("{sd_pod}/crio-conmon-{cid}.scope"), "cri-o"),
            (format!("{fs_pod}/{cid}"), "unknown"),
        ] {
            assert_eq!(
                at(&c, Level::Container),
                (
                    Container,
                    cid.into(),
                    vec![
                        ("pod_uid".into(), uid.into()),
                        ("runtime".into(), runtime.into())
                    ]
                ),
                "{c}"
            );
        }
        for inner in [
            "kubepods.slice",
            "kubepods.slice/kubepods-burstable.slice",
            "kubepods",
            "kubepods/besteffort",
        ] {
            assert_eq!(classify(inner, Level::Service), Found::Descend, "{inner}");
        }
    }

    #[test]
    fn libvirt_vms() {
        assert_eq!(
            at(
                r"machine.slice/machine-qemu\x2d1\x2dweb\x2dvm.scope",
                Level::Service
            ),
            (
                WorkloadKind::Vm,
                "web-vm".into(),
                vec![("unit".into(), "qemu-1-web-vm".into())]
            )
        );
    }

    #[test]
    fn slurm_jobs_and_steps() {
        use WorkloadKind::*;
        assert_eq!(
            kind_id("system.slice/slurmstepd.scope/job_1234", Level::Service),
            (SlurmJob, "1234".into())
        );
        assert_eq!(
            classify("system.slice/slurmstepd.scope", Level::Service),
            Found::Descend
        );
        assert_eq!(
            classify("system.slice/slurmstepd.scope/job_1234", Level::Container),
            Found::Descend
        );
        assert_eq!(
            at(
                "system.slice/slurmstepd.scope/job_1234/step_0",
                Level::Container
            ),
            (
                SlurmStep,
                "1234.0".into(),
                vec![("job".into(), "1234".into())]
            )
        );
        assert_eq!(
            kind_id(
                "system.slice/slurmstepd.scope/job_1234/step_batch",
                Level::Container
            ),
            (SlurmStep, "1234.batch".into())
        );
        assert_eq!(
            at("slurm/uid_1001/job_77", Level::Service),
            (SlurmJob, "77".into(), vec![("uid".into(), "1001".into())])
        );
        assert_eq!(
            at("slurm/uid_1001/job_77/step_extern", Level::Container),
            (
                SlurmStep,
                "77.extern".into(),
                vec![("job".into(), "77".into()), ("uid".into(), "1001".into())]
            )
        );
        // slurmstepd's own cgroup is not a job.
        assert_eq!(
            classify("system.slice/slurmstepd.scope/system", Level::Service),
            Found::Descend
        );
    }

    #[test]
    fn docker_outside_kubernetes_and_the_process_level() {
        let cid = "9a8b7c6d5e4f30211a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f7081";
        assert_eq!(
            kind_id(&format!("system.slice/docker-{cid}.scope"), Level::Service),
            (WorkloadKind::Container, cid.into())
        );
        assert_eq!(
            classify("system.slice/nginx.service", Level::Process),
            Found::Descend
        );
    }
}
