//! Collector configuration (TOML). Every field is documented in the
//! README's configuration reference.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Top-level collector configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectorConfig {
    /// Broker connection and subscription.
    #[serde(default)]
    pub mqtt: MqttConfig,
    /// Ledger location.
    #[serde(default)]
    pub store: StoreConfig,
    /// HTTP server (API and metrics).
    #[serde(default)]
    pub http: HttpConfig,
    /// Static grid carbon factor.
    #[serde(default)]
    pub carbon: CarbonConfig,
    /// Input limits.
    #[serde(default)]
    pub ingest: IngestConfig,
    /// The site model: boundary meters and facility facts.
    #[serde(default)]
    pub site: crate::site::SiteConfig,
    /// The permit dossier: site name, commissioning date, heat study.
    #[serde(default)]
    pub dossier: crate::dossier::DossierConfig,
    /// The public disclosure page (off unless enabled).
    #[serde(default)]
    pub public: crate::public::PublicConfig,
    /// Compliance exports served over HTTP.
    #[serde(default)]
    pub export: ExportConfig,
    /// The optional InfluxDB 2 sink (checked as it is parsed).
    #[serde(default, deserialize_with = "crate::influx::checked")]
    pub influxdb: Option<crate::influx::InfluxConfig>,
}

/// `[export]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportConfig {
    /// Ed25519 private key (PKCS#8 PEM, `vigie-collector export keygen`)
    /// signing every export served over HTTP; none: served unsigned.
    #[serde(default)]
    pub signing_key: Option<std::path::PathBuf>,
}

/// Broker settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// Broker host.
    #[serde(default = "d_host")]
    pub host: String,
    /// Broker port.
    #[serde(default = "d_port")]
    pub port: u16,
    /// Client id; the broker keeps this id's session (and queues its
    /// messages) while the collector is down. Each replica needs its own.
    #[serde(default = "d_client_id")]
    pub client_id: String,
    /// Only this site's topics (`+` for every site).
    #[serde(default = "d_site")]
    pub site: String,
    /// How long the broker keeps the session while the collector is away.
    #[serde(default = "d_session_expiry", with = "humantime_serde")]
    pub session_expiry: Duration,
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

/// Ledger settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// SQLite file.
    #[serde(default = "d_db")]
    pub path: PathBuf,
    /// How long minute buckets are kept (e.g. `"400d"`); older whole hours
    /// keep only their hour buckets, which ledger meters then read. None:
    /// minute buckets are kept for ever.
    #[serde(default, with = "humantime_serde")]
    pub minute_retention: Option<std::time::Duration>,
}

/// HTTP settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Listen address for the API and `/metrics`.
    #[serde(default = "d_listen")]
    pub listen: SocketAddr,
    /// Bearer tokens with roles (`<role> <name> sha256:<hex>` per line,
    /// made by `vigie-collector token`). Absent: every route is open.
    #[serde(default)]
    pub tokens_file: Option<PathBuf>,
    /// HTTPS instead of HTTP.
    #[serde(default)]
    pub tls: Option<HttpTls>,
}

/// Certificate and key of the HTTPS server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpTls {
    /// PEM certificate chain.
    pub cert_file: PathBuf,
    /// PEM private key.
    pub key_file: PathBuf,
}

/// Static grid factor for location-based emissions.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CarbonConfig {
    /// Grid zone name (e.g. an Electricity Maps zone such as `FR`).
    #[serde(default = "d_zone")]
    pub zone: String,
    /// Static average grid intensity, gCO2e/kWh: the fallback for hours no
    /// series or yearly table covers (flagged estimated).
    #[serde(default = "d_intensity")]
    pub intensity_g_per_kwh: f64,
    /// What the static factor counts (`lifecycle` or `direct`); it must be
    /// the inventory's `basis`, else start-up is refused. The built-in 33
    /// g/kWh is a life-cycle figure.
    #[serde(default = "d_basis")]
    pub intensity_basis: crate::grid::Basis,
    /// Where the figure comes from, reported with every emission figure.
    #[serde(default = "d_source")]
    pub source: String,
    /// Which factors the inventory uses: `lifecycle` (default) or `direct`
    /// (combustion). One basis per inventory: a series, yearly table, live
    /// provider or static factor of the other basis is refused at start-up.
    #[serde(default = "d_basis")]
    pub basis: crate::grid::Basis,
    /// Grid intensity series files loaded at start-up; hours they cover
    /// use their values, the others the static factor (flagged).
    #[serde(default)]
    pub series: Vec<SeriesFile>,
    /// Yearly average tables (co2.js's Electricity Maps yearly data) loaded
    /// at start-up: each stands in for the hours of its year that no
    /// shorter series point covers.
    #[serde(default)]
    pub yearly: Vec<YearlyFile>,
    /// Live grid-data providers refreshed periodically (optional: vigie
    /// needs none of them to run).
    #[serde(default)]
    pub live: Vec<crate::grid_live::LiveConfig>,
    /// Contracts for market-based Scope 2.
    #[serde(default)]
    pub market: crate::site::MarketConfig,
}

/// A grid intensity time-series file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeriesFile {
    /// The file.
    pub path: PathBuf,
    /// `eco2mix` (RTE export), `electricity-maps-csv`, `carbon-intensity-json`.
    pub format: crate::grid::FileFormat,
    /// Zone it describes; defaults to `carbon.zone`.
    #[serde(default)]
    pub zone: Option<String>,
}

/// A yearly table file (`[[carbon.yearly]]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct YearlyFile {
    /// co2.js's `electricitymaps-yearly` JSON for one year
    /// (`{ "FR": { "carbonIntensity": { "value": 33, ... } }, ... }`).
    pub path: PathBuf,
    /// The calendar year (UTC) the file describes.
    pub year: i64,
    /// Zone to take from it; defaults to `carbon.zone`.
    #[serde(default)]
    pub zone: Option<String>,
    /// What its figures count: co2.js republishes Electricity Maps'
    /// life-cycle figures (default).
    #[serde(default = "d_basis")]
    pub basis: crate::grid::Basis,
}

fn d_basis() -> crate::grid::Basis {
    // The built-in static factor and co2.js's yearly data are life-cycle
    // figures: the default inventory basis matches them.
    crate::grid::Basis::Lifecycle
}

/// Input limits (see `vigie_protocol::Limits`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    /// Largest payload accepted.
    #[serde(default = "d_max_payload")]
    pub max_payload_bytes: usize,
    /// Most readings per batch.
    #[serde(default = "d_max_readings")]
    pub max_readings: usize,
    /// Highest plausible power of one sensor, watts.
    #[serde(default = "d_max_power")]
    pub max_power_w: f64,
    /// Accepted clock skew into the future.
    #[serde(default = "d_max_future", with = "humantime_serde")]
    pub max_future: Duration,
    /// Most messages committed in one transaction.
    #[serde(default = "d_group")]
    pub max_group: usize,
    /// Threads decoding, validating and verifying messages before the
    /// ledger writer commits them (0: the available cores less one, at
    /// least 1).
    #[serde(default)]
    pub prepare_threads: usize,
    /// Most distinct sensors one host may have in the ledger: a batch
    /// that would add more is refused (`too_many_sensors`), so a faulty
    /// or hostile agent cannot grow the ledger and the metrics without
    /// bound.
    #[serde(default = "d_max_sensors")]
    pub max_sensors_per_host: usize,
    /// Most hosts the collector knows: a status, inventory or batch from
    /// a new host past it is refused (`too_many_hosts`). Hosts already in
    /// the ledger count against it, so `/metrics` stays within about
    /// `max_hosts` x `max_sensors_per_host` series.
    #[serde(default = "d_max_hosts")]
    pub max_hosts: usize,
    /// `/api/v1/hosts` marks a host `stale` when its last batch is older.
    #[serde(default = "d_host_stale_after", with = "humantime_serde")]
    pub host_stale_after: Duration,
    /// Most minute buckets the readings of one message may touch: the
    /// work of its commit, measured before any write. A message past it
    /// is refused (`too_much_work`), acknowledged and quarantined.
    #[serde(default = "d_max_minute_buckets")]
    pub max_minute_buckets: u64,
    /// Most workload lines one message may carry (each split of a
    /// sensor's energy among workloads, and each workload in it): past it
    /// the message is refused (`too_many_workloads`).
    #[serde(default = "d_max_workloads")]
    pub max_workloads: usize,
    /// Most minute buckets one transaction writes: a message that would
    /// take the group under way past it waits for the next transaction
    /// (it is neither refused nor acknowledged before its own commit).
    #[serde(default = "d_max_group_minute_buckets")]
    pub max_group_minute_buckets: u64,
    /// Public keys per host (`node-01 = "<64 hex>"`, or a list of two
    /// during a rotation). When any key is configured (here or in
    /// `keys_dir`) every message must be signed by its host's key.
    #[serde(default)]
    pub keys: BTreeMap<String, HostKeys>,
    /// A directory of `<host>.pub` files, each one or two hex public keys
    /// (one a line; `#` comments), read at start-up.
    #[serde(default)]
    pub keys_dir: Option<PathBuf>,
}

/// One host's public keys in `[ingest.keys]`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum HostKeys {
    /// One key.
    One(String),
    /// One or two keys (two while the host rotates).
    Several(Vec<String>),
}

/// A key configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    /// A host name that no topic can carry.
    #[error("ingest keys: {host:?} is not a valid host name")]
    Host {
        /// The name.
        host: String,
    },
    /// Not one or two keys.
    #[error("ingest keys: host {host:?} has {count} keys; give one, or two during a rotation")]
    Count {
        /// Host.
        host: String,
        /// Keys given.
        count: usize,
    },
    /// Not an Ed25519 public key in hex.
    #[error(
        "ingest keys: host {host:?}: {key:?} is not an Ed25519 public key (64 hex digits, from `vigie-agent keygen`)"
    )]
    Key {
        /// Host.
        host: String,
        /// What was given (a public key: not a secret).
        key: String,
    },
    /// A host given both in `[ingest.keys]` and in `keys_dir`.
    #[error("ingest keys: host {host:?} is in both [ingest.keys] and keys_dir; keep one")]
    Twice {
        /// Host.
        host: String,
    },
    /// The directory or a file in it could not be read.
    #[error("ingest keys_dir {path}: {source}")]
    Io {
        /// Path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
}

impl IngestConfig {
    /// The threads preparing messages: `prepare_threads`, or, when 0,
    /// the available cores less the writer's, at least 1.
    pub fn prepare_threads(&self) -> usize {
        match self.prepare_threads {
            0 => std::thread::available_parallelism()
                .map_or(1, |n| n.get().saturating_sub(1))
                .max(1),
            n => n,
        }
    }

    /// Every host's verified public keys, from `keys` and `keys_dir`.
    /// Empty when none is configured (messages are then not checked).
    pub fn key_ring(&self) -> Result<crate::ingest::KeyRing, KeysError> {
        let mut listed: Vec<(String, Vec<String>)> = self
            .keys
            .iter()
            .map(|(h, k)| {
                let keys = match k {
                    HostKeys::One(k) => vec![k.clone()],
                    HostKeys::Several(v) => v.clone(),
                };
                (h.clone(), keys)
            })
            .collect();
        if let Some(dir) = &self.keys_dir {
            let io = |path: &std::path::Path| {
                let path = path.display().to_string();
                move |source| KeysError::Io { path, source }
            };
            let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
                .map_err(io(dir))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "pub"))
                .collect();
            files.sort();
            for path in files {
                let host = path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let text = std::fs::read_to_string(&path).map_err(io(&path))?;
                let keys = text
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(str::to_owned)
                    .collect();
                if self.keys.contains_key(&host) {
                    return Err(KeysError::Twice { host });
                }
                listed.push((host, keys));
            }
        }
        let mut ring = crate::ingest::KeyRing::new();
        for (host, keys) in listed {
            if vigie_protocol::is_valid_host_or_site(&host).is_err() {
                return Err(KeysError::Host { host });
            }
            if !(1..=2).contains(&keys.len()) {
                return Err(KeysError::Count {
                    host,
                    count: keys.len(),
                });
            }
            let mut parsed = Vec::with_capacity(keys.len());
            for key in keys {
                match vigie_protocol::parse_key_hex(&key) {
                    Some(k) => parsed.push(k),
                    None => return Err(KeysError::Key { host, key }),
                }
            }
            ring.insert(host, parsed);
        }
        Ok(ring)
    }
}

fn d_host() -> String {
    "127.0.0.1".into()
}
fn d_port() -> u16 {
    1883
}
fn d_client_id() -> String {
    "vigie-collector".into()
}
fn d_site() -> String {
    "+".into()
}
fn d_session_expiry() -> Duration {
    Duration::from_secs(7 * 24 * 3600)
}
fn d_db() -> PathBuf {
    "/var/lib/vigie-collector/ledger.sqlite".into()
}
fn d_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9464))
}
fn d_zone() -> String {
    "FR".into()
}
fn d_intensity() -> f64 {
    // France, 2024 yearly average (Electricity Maps, lifecycle): see shared testdata.
    33.0
}
fn d_source() -> String {
    "static configuration".into()
}
fn d_max_payload() -> usize {
    256 * 1024
}
fn d_max_readings() -> usize {
    10_000
}
fn d_max_minute_buckets() -> u64 {
    vigie_protocol::DEFAULT_MAX_MINUTE_BUCKETS
}
fn d_max_workloads() -> usize {
    vigie_protocol::DEFAULT_MAX_WORKLOADS
}
fn d_max_group_minute_buckets() -> u64 {
    2 * vigie_protocol::DEFAULT_MAX_MINUTE_BUCKETS
}
fn d_max_sensors() -> usize {
    crate::ingest::DEFAULT_MAX_SENSORS_PER_HOST
}
fn d_host_stale_after() -> Duration {
    Duration::from_millis(crate::api::DEFAULT_HOST_STALE_AFTER_MS.unsigned_abs())
}
fn d_max_hosts() -> usize {
    crate::ingest::DEFAULT_MAX_HOSTS
}
fn d_max_power() -> f64 {
    10_000_000.0
}
fn d_max_future() -> Duration {
    Duration::from_secs(300)
}
fn d_group() -> usize {
    512
}

macro_rules! default_from_serde {
    ($($t:ty),*) => {$(
        impl Default for $t {
            fn default() -> Self {
                // Every field has a serde default, so an empty table parses.
                toml::from_str("").unwrap_or_else(|e| unreachable!("{e}"))
            }
        }
    )*};
}
default_from_serde!(
    MqttConfig,
    StoreConfig,
    HttpConfig,
    CarbonConfig,
    IngestConfig,
    CollectorConfig
);

impl CollectorConfig {
    /// Parses a TOML document.
    pub fn from_toml(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }

    /// The validation limits these settings describe.
    pub fn limits(&self) -> vigie_protocol::Limits {
        vigie_protocol::Limits {
            max_payload_bytes: self.ingest.max_payload_bytes,
            max_readings: self.ingest.max_readings,
            max_power_w: self.ingest.max_power_w,
            max_future_ms: self.ingest.max_future.as_millis() as i64,
            max_minute_buckets: self.ingest.max_minute_buckets,
            max_workloads: self.ingest.max_workloads,
            ..vigie_protocol::Limits::default()
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn host_keys_from_the_table_and_the_directory() {
        let k = |seed: u8| {
            vigie_protocol::key_hex(
                &ed25519_dalek::SigningKey::from_bytes(&[seed; 32]).verifying_key(),
            )
        };
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("node-03.pub"),
            format!("# rotating\n{}\n{}\n", k(3), k(4)),
        )
        .unwrap();
        std::fs::write(dir.path().join("README"), "not a key").unwrap();
        let text = format!(
            "[ingest]\nkeys_dir = \"{}\"\n[ingest.keys]\nnode-01 = \"{}\"\nnode-02 = [\"{}\", \"{}\"]\n",
            dir.path().display(),
            k(1),
            k(1),
            k(2)
        );
        let ring = CollectorConfig::from_toml(&text)
            .unwrap()
            .ingest
            .key_ring()
            .unwrap();
        assert_eq!(ring.len(), 3);
        assert_eq!(ring["node-02"].len(), 2);
        assert_eq!(vigie_protocol::key_hex(&ring["node-03"][1]), k(4));
        assert!(
            CollectorConfig::default()
                .ingest
                .key_ring()
                .unwrap()
                .is_empty()
        );

        let bad = |keys: &str| {
            CollectorConfig::from_toml(&format!("[ingest.keys]\n{keys}\n"))
                .unwrap()
                .ingest
                .key_ring()
                .unwrap_err()
                .to_string()
        };
        assert!(bad("node-01 = \"00\"").contains("not an Ed25519 public key"));
        let three = format!("node-01 = [\"{}\", \"{}\", \"{}\"]", k(1), k(2), k(3));
        assert!(bad(&three).contains("has 3 keys"));
        assert!(bad("node-01 = []").contains("has 0 keys"));
        assert!(bad(&format!("\"a/b\" = \"{}\"", k(1))).contains("not a valid host name"));
        let twice = format!(
            "[ingest]\nkeys_dir = \"{}\"\n[ingest.keys]\nnode-03 = \"{}\"\n",
            dir.path().display(),
            k(1)
        );
        let err = CollectorConfig::from_toml(&twice)
            .unwrap()
            .ingest
            .key_ring()
            .unwrap_err();
        assert!(err.to_string().contains("in both"), "{err}");
    }

    #[test]
    fn defaults_and_overrides() {
        let c = CollectorConfig::default();
        assert_eq!(c.http.listen.port(), 9464);
        assert_eq!(c.limits(), vigie_protocol::Limits::default());
        let c = CollectorConfig::from_toml(
            "[carbon]\nzone = \"DE\"\nintensity_g_per_kwh = 380.0\n[ingest]\nmax_future = \"1m\"\n",
        )
        .unwrap();
        assert_eq!(c.carbon.zone, "DE");
        assert_eq!(c.limits().max_future_ms, 60_000);
        assert!(CollectorConfig::from_toml("[store]\npaht = \"x\"\n").is_err());
        assert_eq!(c.store.minute_retention, None);
        let c = CollectorConfig::from_toml("[store]\nminute_retention = \"400d\"\n").unwrap();
        assert_eq!(
            c.store.minute_retention,
            Some(std::time::Duration::from_secs(400 * 86_400))
        );
    }

    /// The example the Debian package installs as
    /// /etc/vigie/collector.toml parses, and its ledger is in the unit's
    /// StateDirectory=.
    #[test]
    fn packaged_example_parses() {
        let c = CollectorConfig::from_toml(include_str!("../../deploy/collector.toml")).unwrap();
        assert_eq!(
            c.store.path,
            PathBuf::from("/var/lib/vigie-collector/ledger.sqlite")
        );
        assert_eq!(c.http.listen.port(), 9464);
        assert_eq!(c.limits(), vigie_protocol::Limits::default());
    }
}
