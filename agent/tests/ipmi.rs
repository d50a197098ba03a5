//! The IPMI DCMI driver against the tools' real output formats
//! (`testdata/ipmi/`) and against fake `ipmitool` / `ipmi-dcmi` scripts.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use vigie_agent::device::ipmi::{self, IpmiConfig, IpmiTool, parse_freeipmi, parse_ipmitool};
use vigie_agent::device::{Device, DeviceError, PointValue, Value};
use vigie_protocol::GaugeQuantity;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/ipmi")
        .join(name)
}

fn read(name: &str) -> String {
    std::fs::read_to_string(fixture(name)).unwrap()
}

fn point(point: &str, value: Value) -> PointValue {
    PointValue {
        point: point.into(),
        value,
    }
}

fn expected(current: f64, min: f64, max: f64, avg: f64) -> Vec<PointValue> {
    vec![
        point("dcmi", Value::PowerW(current)),
        point("dcmi.min", Value::Gauge(GaugeQuantity::PowerWatts, min)),
        point("dcmi.max", Value::Gauge(GaugeQuantity::PowerWatts, max)),
        point("dcmi.avg", Value::Gauge(GaugeQuantity::PowerWatts, avg)),
    ]
}

#[test]
fn ipmitool_output_of_both_timestamp_layouts() {
    assert_eq!(
        parse_ipmitool(&read("ipmitool-1.8.19.txt")).unwrap(),
        expected(220.0, 68.0, 504.0, 218.0)
    );
    assert_eq!(
        parse_ipmitool(&read("ipmitool-1.8.18.txt")).unwrap(),
        expected(1340.0, 12.0, 1912.0, 1297.0)
    );
}

#[test]
fn freeipmi_output() {
    assert_eq!(
        parse_freeipmi(&read("freeipmi.txt")).unwrap(),
        expected(332.0, 68.0, 504.0, 348.0)
    );
}

#[test]
fn an_inactive_power_reading_is_an_error_not_a_value() {
    for err in [
        parse_ipmitool(&read("ipmitool-deactivated.txt")).unwrap_err(),
        parse_freeipmi(&read("freeipmi-not-available.txt")).unwrap_err(),
    ] {
        match err {
            DeviceError::Protocol(m) => assert!(m.contains("not active"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn output_without_a_reading_is_an_error() {
    assert!(matches!(parse_ipmitool(""), Err(DeviceError::Protocol(_))));
    assert!(matches!(
        parse_ipmitool(&read("ipmitool-no-dcmi.stderr")),
        Err(DeviceError::Protocol(m)) if m.contains("does not support DCMI")
    ));
    // One tool's output is not the other's.
    assert!(matches!(
        parse_freeipmi(&read("ipmitool-1.8.19.txt")),
        Err(DeviceError::Protocol(_))
    ));
}

/// Writes an executable script into `dir`.
fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn config(tool: IpmiTool, command: &Path) -> IpmiConfig {
    IpmiConfig {
        tool,
        command: Some(command.to_owned()),
        host: None,
        username: None,
        password_file: None,
        timeout: Duration::from_secs(20),
    }
}

fn password_file(dir: &Path) -> PathBuf {
    let path = dir.join("bmc-password");
    std::fs::write(&path, "s3cr et\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

#[tokio::test]
async fn local_ipmitool_is_run_and_parsed() {
    let dir = tempfile::tempdir().unwrap();
    let args = dir.path().join("args");
    let fake = script(
        dir.path(),
        "ipmitool",
        &format!(
            "echo \"$@\" > '{}'\ncat '{}'",
            args.display(),
            fixture("ipmitool-1.8.19.txt").display()
        ),
    );
    let mut dev = ipmi::build(&config(IpmiTool::Ipmitool, &fake)).unwrap();
    assert_eq!(dev.kind(), "ipmi");
    assert_eq!(dev.source(), "ipmitool local");
    assert_eq!(
        dev.poll().await.unwrap(),
        expected(220.0, 68.0, 504.0, 218.0)
    );
    assert_eq!(
        std::fs::read_to_string(&args).unwrap().trim(),
        "dcmi power reading"
    );
}

#[tokio::test]
async fn remote_ipmitool_gets_the_password_in_its_environment_not_its_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let (args, env) = (dir.path().join("args"), dir.path().join("env"));
    let fake = script(
        dir.path(),
        "ipmitool",
        &format!(
            "echo \"$@\" > '{}'\nprintf %s \"$IPMI_PASSWORD\" > '{}'\ncat '{}'",
            args.display(),
            env.display(),
            fixture("ipmitool-1.8.18.txt").display()
        ),
    );
    let mut cfg = config(IpmiTool::Ipmitool, &fake);
    cfg.host = Some("10.0.0.9".into());
    cfg.username = Some("vigie".into());
    cfg.password_file = Some(password_file(dir.path()));
    let mut dev = ipmi::build(&cfg).unwrap();
    assert_eq!(dev.source(), "ipmitool lanplus 10.0.0.9");
    assert_eq!(
        dev.poll().await.unwrap(),
        expected(1340.0, 12.0, 1912.0, 1297.0)
    );
    assert_eq!(
        std::fs::read_to_string(&args).unwrap().trim(),
        "-I lanplus -H 10.0.0.9 -U vigie -E dcmi power reading"
    );
    assert_eq!(std::fs::read_to_string(&env).unwrap(), "s3cr et");
}

#[tokio::test]
async fn remote_freeipmi_gets_the_password_in_a_private_file_that_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let (args, conf, mode) = (
        dir.path().join("args"),
        dir.path().join("conf"),
        dir.path().join("mode"),
    );
    // Copies the configuration file it was given, and its mode.
    let fake = script(
        dir.path(),
        "ipmi-dcmi",
        &format!(
            "echo \"$@\" > '{args}'\nfor a in \"$@\"; do case \"$a\" in --config-file=*) f=\"${{a#--config-file=}}\"; cp \"$f\" '{conf}'; stat -c %a \"$f\" > '{mode}';; esac; done\ncat '{out}'",
            args = args.display(),
            conf = conf.display(),
            mode = mode.display(),
            out = fixture("freeipmi.txt").display()
        ),
    );
    let mut cfg = config(IpmiTool::Freeipmi, &fake);
    cfg.host = Some("bmc-r12".into());
    cfg.username = Some("vigie".into());
    cfg.password_file = Some(password_file(dir.path()));
    let mut dev = ipmi::build(&cfg).unwrap();
    assert_eq!(
        dev.poll().await.unwrap(),
        expected(332.0, 68.0, 504.0, 348.0)
    );
    let args = std::fs::read_to_string(&args).unwrap();
    assert!(
        !args.contains("s3cr"),
        "password on the command line: {args}"
    );
    assert!(
        args.starts_with("-h bmc-r12 --driver-type=LAN_2_0 -u vigie --config-file="),
        "{args}"
    );
    assert!(args.trim_end().ends_with("--get-system-power-statistics"));
    assert_eq!(
        std::fs::read_to_string(&conf).unwrap(),
        "password \"s3cr et\"\n"
    );
    assert_eq!(std::fs::read_to_string(&mode).unwrap().trim(), "600");
    let given = args
        .split_whitespace()
        .find_map(|a| a.strip_prefix("--config-file="))
        .unwrap();
    assert!(!Path::new(given).exists(), "{given} left behind");
}

#[tokio::test]
async fn a_tool_that_fails_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let fake = script(
        dir.path(),
        "ipmitool",
        &format!(
            "cat '{}' >&2\nexit 1",
            fixture("ipmitool-no-dcmi.stderr").display()
        ),
    );
    let err = ipmi::build(&config(IpmiTool::Ipmitool, &fake))
        .unwrap()
        .poll()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, DeviceError::Protocol(m) if m.contains("does not support DCMI") && m.contains("Invalid command (c1)")),
        "{err:?}"
    );

    let fake = script(
        dir.path(),
        "ipmi-dcmi",
        &format!(
            "cat '{}' >&2\nexit 1",
            fixture("freeipmi-no-dcmi.stderr").display()
        ),
    );
    let err = ipmi::build(&config(IpmiTool::Freeipmi, &fake))
        .unwrap()
        .poll()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, DeviceError::Protocol(m) if m.contains("does not support DCMI")),
        "{err:?}"
    );

    // Exit status 0 but a deactivated reading: still an error.
    let fake = script(
        dir.path(),
        "ipmitool-off",
        &format!("cat '{}'", fixture("ipmitool-deactivated.txt").display()),
    );
    let err = ipmi::build(&config(IpmiTool::Ipmitool, &fake))
        .unwrap()
        .poll()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, DeviceError::Protocol(m) if m.contains("not active")),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_missing_tool_is_a_configuration_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = ipmi::build(&config(IpmiTool::Ipmitool, &dir.path().join("nope")))
        .unwrap()
        .poll()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, DeviceError::Config(m) if m.contains("not found")),
        "{err:?}"
    );
}

// Tokio's clock is paused (a current-thread runtime), and does not move
// while a blocking task runs: the time limit cannot pass before the fake
// has started and written its pid, however loaded the machine; once it
// has, the clock jumps to the limit.
#[tokio::test(start_paused = true)]
async fn a_tool_that_hangs_is_killed_at_the_time_limit() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pid");
    let fake = script(
        dir.path(),
        "ipmitool",
        &format!("echo $$ > '{}'\nexec sleep 600", pid_file.display()),
    );
    let mut cfg = config(IpmiTool::Ipmitool, &fake);
    cfg.timeout = Duration::from_millis(1500);
    let written = pid_file.clone();
    let started = tokio::task::spawn_blocking(move || {
        vigie_testkit::wait_for(
            "the fake ipmitool to start",
            Duration::from_secs(60),
            Duration::from_millis(20),
            || {
                std::fs::read_to_string(&written)
                    .ok()
                    .filter(|s| s.ends_with('\n'))
            },
        )
    });
    let err = ipmi::build(&cfg).unwrap().poll().await.unwrap_err();
    assert!(
        matches!(&err, DeviceError::Unreachable(m) if m.contains("killed")),
        "{err:?}"
    );
    let pid = started.await.unwrap().unwrap();
    let stat = format!("/proc/{}/stat", pid.trim());
    // Gone, or a zombie waiting for tokio to reap it: no longer running.
    vigie_testkit::wait_for(
        "the fake ipmitool to be killed",
        Duration::from_secs(10),
        Duration::from_millis(20),
        || match std::fs::read_to_string(&stat) {
            Err(_) => Some(()),
            Ok(s) => s
                .rsplit(')')
                .next()
                .and_then(|rest| rest.split_whitespace().next())
                .filter(|state| *state == "Z")
                .map(|_| ()),
        },
    )
    .unwrap();
}
