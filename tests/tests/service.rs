//! The daemons speak the systemd notify protocol: READY=1 once started,
//! WATCHDOG=1 at half the watchdog period while healthy, STOPPING=1 on
//! SIGINT/SIGTERM. A Unix datagram socket stands in for systemd.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};
use vigie_e2e::{Proc, binary};
use vigie_testkit::{FakePowercap, Mosquitto, free_addr};

/// Every datagram received until `n` of them hold the line `until`, or
/// `timeout` passes (a bound for a stuck daemon, not a measure of speed).
fn collect(sock: &UnixDatagram, until: &str, n: usize, timeout: Duration) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    while Instant::now() < deadline {
        if let Ok(n_read) = sock.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n_read]).into_owned());
            if count(&got, until) >= n {
                break;
            }
        }
    }
    got
}

fn count(msgs: &[String], line: &str) -> usize {
    msgs.iter().filter(|m| m.lines().any(|l| l == line)).count()
}

fn check(name: &str, bin: &str, args: &[&str], d: &std::path::Path) {
    let path = d.join(format!("{name}.notify"));
    let sock = UnixDatagram::bind(&path).unwrap();
    let mut p = Proc::start_with_env(
        name,
        &binary(bin).unwrap(),
        args,
        // 400 ms watchdog: a keep-alive every 200 ms.
        &[
            ("NOTIFY_SOCKET", path.to_str().unwrap()),
            ("WATCHDOG_USEC", "400000"),
        ],
        d,
    )
    .unwrap();
    let ready = collect(&sock, "READY=1", 1, Duration::from_secs(20));
    assert_eq!(count(&ready, "READY=1"), 1, "{ready:?}\n{}", p.log_tail());
    // Keep-alives repeat while the daemon is healthy: wait for three
    // (every 200 ms unless the machine is loaded; 30 s is the bound for a
    // daemon that stopped sending them).
    let alive = collect(&sock, "WATCHDOG=1", 3, Duration::from_secs(30));
    assert!(
        count(&alive, "WATCHDOG=1") >= 3,
        "three keep-alives: {alive:?}\n{}",
        p.log_tail()
    );
    assert!(p.interrupt(Duration::from_secs(15)).unwrap().success());
    // Sent before the exit that `interrupt` waited for: already queued.
    let stopping = collect(&sock, "STOPPING=1", 1, Duration::from_secs(10));
    assert_eq!(count(&stopping, "STOPPING=1"), 1, "{stopping:?}");
}

#[test]
fn both_daemons_notify_systemd() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let broker = Mosquitto::start().unwrap();
    let port = broker.port();
    let http = free_addr().unwrap();
    let collector_cfg = d.join("collector.toml");
    std::fs::write(
        &collector_cfg,
        format!(
            "[mqtt]\nport = {port}\n[store]\npath = \"{}\"\n[http]\nlisten = \"{http}\"\n",
            d.join("ledger.sqlite").display()
        ),
    )
    .unwrap();
    check(
        "collector",
        "vigie-collector",
        &["run", "--config", collector_cfg.to_str().unwrap()],
        d,
    );

    let root = d.join("powercap");
    std::fs::create_dir_all(&root).unwrap();
    let _tree = FakePowercap::single_socket(&root, 262_143_328_850, 0).unwrap();
    let agent_cfg = d.join("agent.toml");
    std::fs::write(
        &agent_cfg,
        format!(
            "site = \"n\"\nhost = \"h\"\nstate_dir = \"{}\"\n[mqtt]\nport = {port}\n[gpu]\nenabled = false\n[rapl]\nroot = \"{}\"\n",
            d.join("state").display(),
            root.display()
        ),
    )
    .unwrap();
    check(
        "agent",
        "vigie-agent",
        &["run", "--config", agent_cfg.to_str().unwrap()],
        d,
    );
}
