//! Agent configuration (TOML). Every field is documented in the README's
//! configuration reference; defaults work on a stock Linux server.

use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;
use vigie_protocol::RackPosition;

/// Top-level agent configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Site name, the second topic level.
    #[serde(default = "default_site")]
    pub site: String,
    /// Host name; defaults to the machine's host name, cleaned to `[A-Za-z0-9._-]`.
    #[serde(default)]
    pub host: Option<String>,
    /// Where the agent keeps its state (epoch, counters).
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Broker connection.
    #[serde(default)]
    pub mqtt: MqttConfig,
    /// Sampling and publishing periods.
    #[serde(default)]
    pub sampling: SamplingConfig,
    /// RAPL through powercap.
    #[serde(default)]
    pub rapl: RaplConfig,
    /// Rack position, published in the host inventory.
    #[serde(default)]
    pub rack: Option<RackPosition>,
    /// Bounds of the on-disk spool.
    #[serde(default)]
    pub spool: SpoolConfig,
    /// NVIDIA GPUs through NVML.
    #[serde(default)]
    pub gpu: GpuConfig,
    /// The host power model (hosts without RAPL).
    #[serde(default)]
    pub model: ModelConfig,
    /// Remote devices this agent polls (PDUs, BMCs, meters).
    #[serde(default)]
    pub devices: Vec<crate::device::DeviceConfig>,
    /// Signing of published messages.
    #[serde(default)]
    pub signing: SigningConfig,
    /// Energy per workload (`[workloads]`).
    #[serde(default)]
    pub workloads: crate::workload::WorkloadsConfig,
}

/// Signing of published messages (`[signing]`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigningConfig {
    /// Ed25519 private key, PKCS#8 PEM (`vigie-agent keygen --out FILE`):
    /// every telemetry, status and inventory message is signed with it.
    /// None: messages go unsigned (a collector with keys refuses them).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

/// GPU settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpuConfig {
    /// Read NVIDIA GPUs; a host without the NVIDIA library runs on without them.
    #[serde(default = "yes")]
    pub enabled: bool,
}

impl Default for GpuConfig {
    fn default() -> Self {
        GpuConfig { enabled: true }
    }
}

/// When the host model is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelMode {
    /// Only when RAPL finds no zone (VMs, hosts without powercap).
    Auto,
    /// Always, next to whatever is measured.
    On,
    /// Never.
    Off,
}

/// Host model settings. Readings are flagged `estimated`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// `auto`, `on` or `off`.
    #[serde(default = "default_model_mode")]
    pub mode: ModelMode,
    /// Host power at 0 % CPU, W (from the vendor's data or a SPECpower result).
    #[serde(default = "default_idle_w")]
    pub idle_w: f64,
    /// Host power at 100 % CPU, W.
    #[serde(default = "default_max_w")]
    pub max_w: f64,
}

fn default_model_mode() -> ModelMode {
    ModelMode::Auto
}
fn default_idle_w() -> f64 {
    100.0
}
fn default_max_w() -> f64 {
    300.0
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            mode: default_model_mode(),
            idle_w: default_idle_w(),
            max_w: default_max_w(),
        }
    }
}

/// Bounds of the spool. Past `max_batches`, the oldest never-published
/// batches are merged pairwise (energies added, intervals widened): totals
/// stay exact, only resolution is lost. Past `max_age`, a batch is dropped,
/// logged with its energy, and counted.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpoolConfig {
    /// Most batches kept before merging starts.
    #[serde(default = "default_spool_max_batches")]
    pub max_batches: usize,
    /// Longest a merged reading may span (the collector refuses readings
    /// over 7 days; keep this well below).
    #[serde(default = "default_merge_max_span", with = "humantime_serde")]
    pub merge_max_span: Duration,
    /// Oldest data kept; older batches are dropped and counted. `0s` keeps
    /// everything.
    #[serde(default = "default_spool_max_age", with = "humantime_serde")]
    pub max_age: Duration,
    /// How often the agent republishes its status with spool figures.
    #[serde(default = "default_status_interval", with = "humantime_serde")]
    pub status_interval: Duration,
    /// Largest size of the spool file in bytes; 0: as large as the disk
    /// allows. Past it the agent behaves as on a full disk: new batches
    /// wait in memory (bounded) until the spool takes them again.
    #[serde(default)]
    pub max_bytes: u64,
}

fn default_spool_max_batches() -> usize {
    50_000
}
fn default_merge_max_span() -> Duration {
    Duration::from_secs(3600)
}
fn default_spool_max_age() -> Duration {
    Duration::from_secs(90 * 24 * 3600)
}
fn default_status_interval() -> Duration {
    Duration::from_secs(30)
}

impl Default for SpoolConfig {
    fn default() -> Self {
        SpoolConfig {
            max_batches: default_spool_max_batches(),
            merge_max_span: default_merge_max_span(),
            max_age: default_spool_max_age(),
            status_interval: default_status_interval(),
            max_bytes: 0,
        }
    }
}

/// Broker connection settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// Broker host name or address.
    #[serde(default = "default_mqtt_host")]
    pub host: String,
    /// Broker port.
    #[serde(default = "default_mqtt_port")]
    pub port: u16,
    /// MQTT client id; defaults to `vigie-agent-{host}`.
    #[serde(default)]
    pub client_id: Option<String>,
    /// Keep-alive interval.
    #[serde(default = "default_keep_alive", with = "humantime_serde")]
    pub keep_alive: Duration,
    /// TLS to the broker; plain TCP when absent.
    #[serde(default)]
    pub tls: Option<vigie_service::secrets::TlsFiles>,
    /// User name for the broker (Mosquitto `password_file`).
    #[serde(default)]
    pub username: Option<String>,
    /// File holding the password of `username` (never on the command line).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
}

/// Sampling settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamplingConfig {
    /// How often counters are read.
    #[serde(default = "default_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// How often a batch is published.
    #[serde(default = "default_publish_interval", with = "humantime_serde")]
    pub publish_interval: Duration,
}

/// RAPL settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RaplConfig {
    /// Read RAPL at all.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Powercap root (tests and the demo point it at a fake tree).
    #[serde(default = "default_powercap_root")]
    pub root: PathBuf,
}

fn default_site() -> String {
    "default".into()
}
fn default_state_dir() -> PathBuf {
    "/var/lib/vigie-agent".into()
}
fn default_mqtt_host() -> String {
    "127.0.0.1".into()
}
fn default_mqtt_port() -> u16 {
    1883
}
fn default_keep_alive() -> Duration {
    Duration::from_secs(30)
}
fn default_interval() -> Duration {
    Duration::from_secs(1)
}
fn default_publish_interval() -> Duration {
    Duration::from_secs(10)
}
fn default_powercap_root() -> PathBuf {
    "/sys/class/powercap".into()
}
fn yes() -> bool {
    true
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            host: default_mqtt_host(),
            port: default_mqtt_port(),
            client_id: None,
            keep_alive: default_keep_alive(),
            tls: None,
            username: None,
            password_file: None,
        }
    }
}

impl Default for SamplingConfig {
    fn default() -> Self {
        SamplingConfig {
            interval: default_interval(),
            publish_interval: default_publish_interval(),
        }
    }
}

impl Default for RaplConfig {
    fn default() -> Self {
        RaplConfig {
            enabled: true,
            root: default_powercap_root(),
        }
    }
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            site: default_site(),
            host: None,
            state_dir: default_state_dir(),
            mqtt: MqttConfig::default(),
            sampling: SamplingConfig::default(),
            rapl: RaplConfig::default(),
            rack: None,
            spool: SpoolConfig::default(),
            gpu: GpuConfig::default(),
            model: ModelConfig::default(),
            devices: Vec::new(),
            signing: SigningConfig::default(),
            workloads: crate::workload::WorkloadsConfig::default(),
        }
    }
}

impl AgentConfig {
    /// Parses a TOML document.
    pub fn from_toml(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults() {
        let c = AgentConfig::from_toml("").unwrap();
        assert_eq!(c.sampling.interval, Duration::from_secs(1));
        assert_eq!(c.sampling.publish_interval, Duration::from_secs(10));
        assert_eq!(c.rapl.root, PathBuf::from("/sys/class/powercap"));
        assert_eq!(c.mqtt.port, 1883);
    }

    #[test]
    fn workloads_section() {
        let c = AgentConfig::from_toml("").unwrap();
        assert!(!c.workloads.enabled);
        let c = AgentConfig::from_toml(
            "[workloads]\nenabled = true\nlevel = \"container\"\nmax_workloads = 5\n[workloads.idle_watts]\n\"rapl:package-0\" = 35.5\n",
        )
        .unwrap();
        assert!(c.workloads.enabled);
        assert_eq!(c.workloads.level, crate::workload::Level::Container);
        assert_eq!(c.workloads.max_workloads, 5);
        assert_eq!(c.workloads.idle_watts["rapl:package-0"], 35.5);
        assert_eq!(c.workloads.cgroup_root, PathBuf::from("/sys/fs/cgroup"));
        assert!(AgentConfig::from_toml("[workloads]\nlevel = \"pods\"\n").is_err());
    }

    #[test]
    fn durations_and_unknown_fields() {
        let c =
            AgentConfig::from_toml("site = \"par1\"\n[sampling]\ninterval = \"250ms\"\n").unwrap();
        assert_eq!(c.sampling.interval, Duration::from_millis(250));
        assert!(AgentConfig::from_toml("[sampling]\nintervall = \"1s\"\n").is_err());
    }

    /// The example the Debian package installs as /etc/vigie/agent.toml
    /// parses, and its spool is the unit's StateDirectory=.
    #[test]
    fn packaged_example_parses() {
        let c = AgentConfig::from_toml(include_str!("../../deploy/agent.toml")).unwrap();
        assert_eq!(c.state_dir, PathBuf::from("/var/lib/vigie-agent"));
        assert_eq!(c.mqtt.host, "127.0.0.1");
        assert_eq!(c.sampling.interval, Duration::from_secs(1));
        assert!(c.devices.is_empty());
    }
}
