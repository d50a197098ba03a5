//! IPMI DCMI power reading through `ipmitool dcmi power reading` or
//! FreeIPMI's `ipmi-dcmi --get-system-power-statistics`, run as a
//! subprocess with a time limit (killed when it runs over).
//!
//! DCMI gives one figure for the whole server: an averaged, rate-limited
//! wall power. It becomes the point `dcmi` (power, integrated into energy
//! by the tracker); the tool's minimum, maximum and average over the BMC's
//! sampling period become power gauges on `dcmi.min`, `dcmi.max` and
//! `dcmi.avg`.
//!
//! The password never reaches a command line that `ps` shows: ipmitool
//! gets it in `IPMI_PASSWORD` (`-E`); FreeIPMI, which reads no password
//! from the environment, gets a private temporary configuration file
//! (`--config-file`, mode 0600, removed after the run).

use super::{Device, DeviceError, PointValue, PollFuture, Value};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use vigie_protocol::GaugeQuantity;
use vigie_service::secrets::{Redacted, read_secret};

/// Which program reads the BMC.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IpmiTool {
    /// `ipmitool dcmi power reading`.
    #[default]
    Ipmitool,
    /// FreeIPMI `ipmi-dcmi --get-system-power-statistics`.
    Freeipmi,
}

/// One BMC read with DCMI (`kind = "ipmi"`).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpmiConfig {
    /// `"ipmitool"` (default) or `"freeipmi"`.
    #[serde(default)]
    pub tool: IpmiTool,
    /// The program to run instead of `ipmitool` or `ipmi-dcmi` from
    /// `PATH`: a full path, or a wrapper that takes the same arguments.
    #[serde(default)]
    pub command: Option<PathBuf>,
    /// BMC address for IPMI over LAN (IPMI 2.0, `lanplus`); leave out to
    /// read this host's own BMC through `/dev/ipmi0`.
    #[serde(default)]
    pub host: Option<String>,
    /// BMC user (with `host`).
    #[serde(default)]
    pub username: Option<String>,
    /// File holding the BMC password on its first line (with `host`).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Time limit of one run of the tool; it is killed past it.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

/// A BMC read through an IPMI tool.
#[derive(Debug)]
pub struct IpmiDevice {
    tool: IpmiTool,
    program: PathBuf,
    host: Option<String>,
    username: Option<String>,
    password: Option<Redacted>,
    timeout: Duration,
}

/// Builds the driver: checks the configuration and reads the password.
/// Runs nothing.
pub fn build(cfg: &IpmiConfig) -> Result<IpmiDevice, DeviceError> {
    if cfg.host.is_none() && (cfg.username.is_some() || cfg.password_file.is_some()) {
        return Err(DeviceError::Config(
            "username and password_file are for a remote BMC: set host too".into(),
        ));
    }
    if let Some(host) = &cfg.host
        && (host.is_empty() || host.starts_with('-') || host.contains(char::is_whitespace))
    {
        return Err(DeviceError::Config(format!(
            "host {host:?} is not a host name"
        )));
    }
    let password = match &cfg.password_file {
        Some(file) => {
            let p = read_secret(file)
                .map_err(|e| DeviceError::Config(format!("password_file: {e}")))?;
            // FreeIPMI's configuration file takes a quoted string; these
            // cannot be written into one safely.
            if cfg.tool == IpmiTool::Freeipmi && p.contains(['"', '\\', '\n', '\r']) {
                return Err(DeviceError::Config(
                    "password_file: FreeIPMI cannot be given a password holding \" or \\ this way; use tool = \"ipmitool\"".into(),
                ));
            }
            Some(Redacted(p))
        }
        None => None,
    };
    let program = cfg.command.clone().unwrap_or_else(|| {
        PathBuf::from(match cfg.tool {
            IpmiTool::Ipmitool => "ipmitool",
            IpmiTool::Freeipmi => "ipmi-dcmi",
        })
    });
    Ok(IpmiDevice {
        tool: cfg.tool,
        program,
        host: cfg.host.clone(),
        username: cfg.username.clone(),
        password,
        timeout: cfg.timeout,
    })
}

impl Device for IpmiDevice {
    fn kind(&self) -> &'static str {
        "ipmi"
    }

    fn source(&self) -> String {
        let tool = match self.tool {
            IpmiTool::Ipmitool => "ipmitool",
            IpmiTool::Freeipmi => "freeipmi",
        };
        match &self.host {
            Some(host) => format!("{tool} lanplus {host}"),
            None => format!("{tool} local"),
        }
    }

    fn poll(&mut self) -> PollFuture<'_> {
        Box::pin(async move {
            let stdout = self.run().await?;
            match self.tool {
                IpmiTool::Ipmitool => parse_ipmitool(&stdout),
                IpmiTool::Freeipmi => parse_freeipmi(&stdout),
            }
        })
    }
}

impl IpmiDevice {
    /// Runs the tool once; its standard output when it succeeded.
    async fn run(&self) -> Result<String, DeviceError> {
        let mut cmd = tokio::process::Command::new(&self.program);
        // Kept alive until the child has exited.
        let mut _config_file = None;
        match self.tool {
            IpmiTool::Ipmitool => {
                if let Some(host) = &self.host {
                    cmd.args(["-I", "lanplus", "-H", host]);
                    if let Some(user) = &self.username {
                        cmd.args(["-U", user]);
                    }
                    if let Some(password) = &self.password {
                        cmd.arg("-E").env("IPMI_PASSWORD", &password.0);
                    }
                }
                cmd.args(["dcmi", "power", "reading"]);
            }
            IpmiTool::Freeipmi => {
                if let Some(host) = &self.host {
                    cmd.args(["-h", host, "--driver-type=LAN_2_0"]);
                    if let Some(user) = &self.username {
                        cmd.args(["-u", user]);
                    }
                    if let Some(password) = &self.password {
                        let file = freeipmi_config(password)?;
                        cmd.arg(format!("--config-file={}", file.path().display()));
                        _config_file = Some(file);
                    }
                }
                cmd.arg("--get-system-power-statistics");
            }
        }
        cmd.env("LC_ALL", "C")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Dropping the child on time-out kills it.
            .kill_on_drop(true);
        let program = self.program.display().to_string();
        let child = cmd.spawn().map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                DeviceError::Config(format!("{program} not found: install it or set command"))
            }
            _ => DeviceError::Config(format!("running {program}: {e}")),
        })?;
        let output = match tokio::time::timeout(self.timeout, child.wait_with_output()).await {
            Ok(Ok(output)) => output,
            Ok(Err(e)) => {
                return Err(DeviceError::Unreachable(format!("{program}: {e}")));
            }
            Err(_) => {
                return Err(DeviceError::Unreachable(format!(
                    "{program} gave no answer within {:?}; killed",
                    self.timeout
                )));
            }
        };
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if output.status.success() {
            return Ok(stdout);
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        Err(classify_failure(&program, output.status, &stderr, &stdout))
    }
}

/// A private FreeIPMI configuration file holding the password.
fn freeipmi_config(password: &Redacted) -> Result<tempfile::NamedTempFile, DeviceError> {
    use std::io::Write;
    // NamedTempFile is created 0600.
    let mut file = tempfile::Builder::new()
        .prefix("vigie-ipmi-")
        .tempfile()
        .map_err(|e| DeviceError::Config(format!("temporary FreeIPMI configuration: {e}")))?;
    writeln!(file, "password \"{}\"", password.0)
        .and_then(|()| file.flush())
        .map_err(|e| DeviceError::Config(format!("temporary FreeIPMI configuration: {e}")))?;
    Ok(file)
}

/// Why a tool exited with an error, from what it printed.
fn classify_failure(
    program: &str,
    status: std::process::ExitStatus,
    stderr: &str,
    stdout: &str,
) -> DeviceError {
    let text = format!("{stderr}\n{stdout}");
    let lower = text.to_ascii_lowercase();
    let said = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("no message")
        .to_owned();
    let has = |needles: &[&str]| needles.iter().any(|n| lower.contains(n));
    if has(&[
        "dcmi request failed",
        "valid dcmi command was not returned",
        "invalid command",
        "command invalid or unsupported",
        "bad completion code",
    ]) {
        DeviceError::Protocol(format!(
            "the BMC does not support DCMI power reading ({program}: {said})"
        ))
    } else if has(&[
        "unauthorized name",
        "hmac is invalid",
        "password invalid",
        "username invalid",
        "k_g invalid",
        "privilege level",
        "invalid authentication",
        "unable to read password",
    ]) {
        DeviceError::Auth(format!("{program}: {said}"))
    } else if has(&[
        "could not open device",
        "device not found",
        "driver path required",
        "no such file",
    ]) {
        DeviceError::Config(format!(
            "{program}: no local IPMI device ({said}); load ipmi_devintf and check /dev/ipmi0 permissions"
        ))
    } else if has(&[
        "unable to establish",
        "timeout",
        "no response",
        "invalid hostname",
        "address lookup",
        "bmc busy",
    ]) {
        DeviceError::Unreachable(format!("{program}: {said}"))
    } else {
        DeviceError::Protocol(format!("{program} failed ({status}): {said}"))
    }
}

/// Power figures of one DCMI reading.
#[derive(Debug, Default)]
struct Reading {
    current: Option<f64>,
    min: Option<f64>,
    max: Option<f64>,
    avg: Option<f64>,
    active: Option<bool>,
}

impl Reading {
    fn into_points(self, tool: &str, state_line: &str) -> Result<Vec<PointValue>, DeviceError> {
        if self.active == Some(false) {
            return Err(DeviceError::Protocol(format!(
                "power reading is not active on the BMC ({tool}: {state_line})"
            )));
        }
        let Some(current) = self.current else {
            return Err(DeviceError::Protocol(format!(
                "no power reading in {tool}'s output"
            )));
        };
        let mut points = vec![PointValue {
            point: "dcmi".into(),
            value: Value::PowerW(current),
        }];
        for (suffix, x) in [("min", self.min), ("max", self.max), ("avg", self.avg)] {
            if let Some(x) = x {
                points.push(PointValue {
                    point: format!("dcmi.{suffix}"),
                    value: Value::Gauge(GaugeQuantity::PowerWatts, x),
                });
            }
        }
        Ok(points)
    }
}

/// `220 Watts` (any case): the number, when the unit is watts.
fn watts(value: &str) -> Option<f64> {
    let mut words = value.split_whitespace();
    let number: f64 = words.next()?.parse().ok()?;
    let unit = words.next()?;
    (unit.eq_ignore_ascii_case("watts") || unit.eq_ignore_ascii_case("w"))
        .then_some(number)
        .filter(|x| x.is_finite() && *x >= 0.0)
}

/// A `label: value` line split at its first colon.
fn field(line: &str) -> Option<(&str, &str)> {
    let (label, value) = line.split_once(':')?;
    Some((label.trim(), value.trim()))
}

/// Parses the output of `ipmitool dcmi power reading`:
///
/// ```text
///     Instantaneous power reading:                   220 Watts
///     Minimum during sampling period:                 68 Watts
///     Maximum during sampling period:                504 Watts
///     Average power reading over sample period:      218 Watts
///     IPMI timestamp:                           ...
///     Sampling period:                          00000001 Seconds.
///     Power reading state is:                   activated
/// ```
///
/// A `deactivated` state is an error: the figures are then not
/// measurements. ipmitool 1.8.19 prints the time stamp and the sampling
/// period on one line; neither is used.
pub fn parse_ipmitool(text: &str) -> Result<Vec<PointValue>, DeviceError> {
    if let Some(line) = text.lines().find(|l| {
        l.contains("DCMI request failed") || l.contains("A valid DCMI command was not returned")
    }) {
        return Err(DeviceError::Protocol(format!(
            "the BMC does not support DCMI power reading (ipmitool: {})",
            line.trim()
        )));
    }
    let mut r = Reading::default();
    let mut state_line = String::new();
    for line in text.lines() {
        let Some((label, value)) = field(line) else {
            continue;
        };
        match label {
            "Instantaneous power reading" => r.current = watts(value),
            "Minimum during sampling period" => r.min = watts(value),
            "Maximum during sampling period" => r.max = watts(value),
            "Average power reading over sample period" => r.avg = watts(value),
            "Power reading state is" => {
                r.active = Some(value.eq_ignore_ascii_case("activated"));
                state_line = line.trim().to_owned();
            }
            _ => {}
        }
    }
    r.into_points("ipmitool", &state_line)
}

/// Parses the output of FreeIPMI `ipmi-dcmi --get-system-power-statistics`:
///
/// ```text
/// Current Power                        : 220 Watts
/// Minimum Power over sampling duration : 68 watts
/// Maximum Power over sampling duration : 504 watts
/// Average Power over sampling duration : 218 watts
/// Time Stamp                           : 11/03/2023 - 08:36:29
/// Statistics reporting time period     : 1000 milliseconds
/// Power Measurement                    : Active
/// ```
///
/// `Power Measurement : Not Available` is an error.
pub fn parse_freeipmi(text: &str) -> Result<Vec<PointValue>, DeviceError> {
    let mut r = Reading::default();
    let mut state_line = String::new();
    for line in text.lines() {
        let Some((label, value)) = field(line) else {
            continue;
        };
        match label {
            "Current Power" => r.current = watts(value),
            "Minimum Power over sampling duration" => r.min = watts(value),
            "Maximum Power over sampling duration" => r.max = watts(value),
            "Average Power over sampling duration" => r.avg = watts(value),
            "Power Measurement" => {
                r.active = Some(value.eq_ignore_ascii_case("active"));
                state_line = line.trim().to_owned();
            }
            _ => {}
        }
    }
    r.into_points("ipmi-dcmi", &state_line)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn watts_takes_the_number_before_a_watt_unit() {
        assert_eq!(watts("220 Watts"), Some(220.0));
        assert_eq!(watts("68 watts"), Some(68.0));
        assert_eq!(watts("591 W"), Some(591.0));
        assert_eq!(watts("1000 milliseconds"), None);
        assert_eq!(watts("Watts"), None);
        assert_eq!(watts("-3 Watts"), None);
    }

    #[test]
    fn config_defaults_and_unknown_fields() {
        let cfg: IpmiConfig = toml::from_str("").unwrap();
        assert_eq!(cfg.tool, IpmiTool::Ipmitool);
        assert_eq!(cfg.timeout, Duration::from_secs(10));
        let cfg: IpmiConfig =
            toml::from_str("tool = \"freeipmi\"\nhost = \"10.0.0.9\"\ntimeout = \"3s\"").unwrap();
        assert_eq!(cfg.tool, IpmiTool::Freeipmi);
        assert!(toml::from_str::<IpmiConfig>("password = \"x\"").is_err());
        assert!(toml::from_str::<IpmiConfig>("tool = \"ipmiutil\"").is_err());
    }

    #[test]
    fn credentials_without_a_host_are_refused() {
        let cfg: IpmiConfig = toml::from_str("username = \"admin\"").unwrap();
        assert!(matches!(build(&cfg), Err(DeviceError::Config(_))));
        let cfg: IpmiConfig = toml::from_str("host = \"-oProxy\"").unwrap();
        assert!(matches!(build(&cfg), Err(DeviceError::Config(_))));
    }

    #[test]
    fn failures_are_told_apart_by_what_the_tool_said() {
        use std::os::unix::process::ExitStatusExt;
        let status = std::process::ExitStatus::from_raw(1 << 8);
        let kind = |stderr: &str| match classify_failure("ipmitool", status, stderr, "") {
            DeviceError::Unreachable(_) => "unreachable",
            DeviceError::Auth(_) => "auth",
            DeviceError::Protocol(_) => "protocol",
            DeviceError::Config(_) => "config",
        };
        assert_eq!(
            kind("\n    DCMI request failed because: Invalid command (c1)\n"),
            "protocol"
        );
        assert_eq!(
            kind("ipmi_cmd_dcmi_get_power_reading: command invalid or unsupported\n"),
            "protocol"
        );
        assert_eq!(
            kind(
                "Error in open session response message : insufficient resources for session\nRAKP 2 message indicates an error : unauthorized name\nError: Unable to establish IPMI v2 / RMCP+ session\n"
            ),
            "auth"
        );
        assert_eq!(kind("ipmi-dcmi: password invalid\n"), "auth");
        assert_eq!(
            kind("Error: Unable to establish IPMI v2 / RMCP+ session\n"),
            "unreachable"
        );
        assert_eq!(kind("ipmi-dcmi: connection timeout\n"), "unreachable");
        assert_eq!(
            kind(
                "Could not open device at /dev/ipmi0 or /dev/ipmi/0 or /dev/ipmidev/0: No such file or directory\n"
            ),
            "config"
        );
        assert_eq!(kind("something else\n"), "protocol");
    }
}
