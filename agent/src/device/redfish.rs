//! Redfish driver: BMCs (chassis power, power supplies, sensors) and rack
//! PDUs (mains, branch circuits, outlets) over HTTPS and JSON.
//!
//! The first poll walks the service from `/redfish/v1/` and keeps a plan:
//! the resources that hold readings and what each one yields. Later polls
//! read only those resources; any error drops the plan, so the next poll
//! discovers again (a BMC that was updated or a PDU that gained outlets).
//!
//! Point names are built from the last segment of each resource's URI,
//! which is unique within its collection even where a vendor repeats an
//! `Id`, and keep `[A-Za-z0-9._-]`:
//!
//! | point | from | values |
//! |---|---|---|
//! | `chassis-{C}` | `Chassis/{C}/Power`, `PowerControl[0]` (`.{MemberId}` for the others) | power; power limit |
//! | `chassis-{C}.env` | `Chassis/{C}/EnvironmentMetrics` | power, energy; temperature, power limit |
//! | `psu-{C}.{P}` | `PowerSubsystem/PowerSupplies/{P}/Metrics`, or legacy `Power.PowerSupplies[]` by `MemberId` | input power (gauge), energy; voltage, current; `.output` power (a gauge; legacy `LastPowerOutputWatts`: power, integrated) |
//! | `sensor-{C}.{S}` | `Chassis/{C}/Sensors/{S}` of type power or energy | power or energy |
//! | `pdu-{D}` | `PowerEquipment/RackPDUs/{D}/Metrics` | power, energy; temperature |
//! | `mains-{M}`, `branch-{B}`, `outlet-{O}` | `Mains`, `Branches`, `Outlets` of PDU `1`; other PDUs prefix `pdu-{D}.` | power, energy; voltage, current (per line, `.{Line}`, when only poly-phase values exist) |
//! | `shelf-{D}`, `shelf-{D}.mains-{M}`, `.psu-{P}`, `.branch-{B}`, `.outlet-{O}` | `PowerEquipment/PowerShelves/{D}`: `Metrics`, `Mains`, `PowerSupplies/{P}/Metrics`, `Branches`, `Outlets` | as PDUs; a shelf's supplies count their input power or energy |
//! | `bus-{D}`, `bus-{D}.mains-{M}`, ... | `PowerEquipment/ElectricalBuses/{D}` (also `Feeders`, `Subfeeds`) | as PDUs |
//! | `cdu-{U}` (`hx-`, `immersion-`) | `ThermalEquipment/CDUs/{U}/EnvironmentMetrics` (`HeatExchangers`, `ImmersionUnits`) | the unit's electrical power, energy; temperature |
//! | `cdu-{U}.primary-{K}`, `.secondary-{K}` | its `Primary-`/`SecondaryCoolantConnectors/{K}` | heat removed (W thermal), flow (m³/h), supply and return temperatures: gauges |
//!
//! What the walk finds and does not read (floor PDUs, switchgear, transfer
//! switches, cooling loops, a power supply without `Metrics`) is listed by
//! [`Device::unread`], so `probe` names it and the runner logs it once.
//!
//! A power supply's input power is a gauge, not energy: the chassis figure
//! already counts the server, and a supply's own energy register, where it
//! has one, is counted. A legacy supply's `LastPowerOutputWatts` is
//! integrated (the only figure a blade enclosure may give): output energy,
//! without the supply's own losses, a part of the chassis's scope. A sensor
//! that a resource above already reads (its `DataSourceUri`) is not read
//! twice. A cooling unit's electrical figures join the scope of its chassis
//! (`Links.Chassis`), where the chassis's own readings come first.
//!
//! Energy registers (`EnergykWh`, `EnergyWh`, `EnergyJoules`) become exact
//! integer counters in milliwatt-hours or millijoules; Redfish energy does
//! not wrap, so a step backwards is a reset (`ResetMetrics`).

use super::scope::Place;
use super::{Device, DeviceError, PointValue, PollFuture, Value};
use serde_json::Value as Json;
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use vigie_protocol::GaugeQuantity;
use vigie_service::errors::{chain, rustls_cause};
use vigie_service::secrets::{Redacted, read_secret};

/// Requests in flight at once towards one service: BMCs are small
/// computers and some refuse bursts.
const CONCURRENCY: usize = 4;

/// One Redfish service (`kind = "redfish"`).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedfishConfig {
    /// Base URL of the service, scheme and host only
    /// (`https://10.0.0.5`, `https://bmc-r12.example:8443`); the driver
    /// starts at `/redfish/v1/` under it.
    pub url: String,
    /// User name for HTTP basic authentication; leave out for a service
    /// that answers anonymous reads.
    #[serde(default)]
    pub username: Option<String>,
    /// File holding the password on its first line; required with
    /// `username`. Read once when the device is built, never logged.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// PEM file of the CA(s) to trust for this service instead of the
    /// system's, e.g. the BMC's own self-signed certificate.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Skips certificate verification altogether (logs a warning). Prefer
    /// `ca_file`; this is for a lab BMC whose certificate cannot be had.
    #[serde(default)]
    pub insecure: bool,
    /// Time limit of one HTTP request.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Chassis `Id`s to read (`["1U"]`); empty reads every chassis. PDUs
    /// under `PowerEquipment` are always read.
    #[serde(default)]
    pub chassis: Vec<String>,
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

/// A Redfish service, ready to poll.
pub struct RedfishDevice {
    client: reqwest::Client,
    /// `scheme://host[:port]`, no trailing slash.
    origin: String,
    login: Option<(String, Redacted)>,
    chassis: Vec<String>,
    plan: Option<Vec<Target>>,
    /// Resources the last discovery found and does not read, with why.
    unread: Vec<String>,
}

impl std::fmt::Debug for RedfishDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedfishDevice")
            .field("origin", &self.origin)
            .field("username", &self.login.as_ref().map(|(u, _)| u))
            .field("targets", &self.plan.as_ref().map(Vec::len))
            .finish()
    }
}

/// Builds the driver: checks the URL, reads the password and sets up TLS.
/// Makes no request.
pub fn build(cfg: &RedfishConfig) -> Result<RedfishDevice, DeviceError> {
    let url = reqwest::Url::parse(&cfg.url)
        .map_err(|e| DeviceError::Config(format!("url {:?}: {e}", cfg.url)))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(DeviceError::Config(format!(
            "url {:?}: scheme must be https or http",
            cfg.url
        )));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(DeviceError::Config(
            "url must not hold credentials: use username and password_file".into(),
        ));
    }
    if !(url.path().is_empty() || url.path() == "/") || url.query().is_some() {
        return Err(DeviceError::Config(format!(
            "url {:?}: give the scheme and host only; the driver adds /redfish/v1/",
            cfg.url
        )));
    }
    let Some(host) = url.host_str() else {
        return Err(DeviceError::Config(format!("url {:?}: no host", cfg.url)));
    };
    let origin = match url.port() {
        Some(port) => format!("{}://{host}:{port}", url.scheme()),
        None => format!("{}://{host}", url.scheme()),
    };

    let login = match (&cfg.username, &cfg.password_file) {
        (Some(user), Some(file)) => {
            let password = read_secret(file)
                .map_err(|e| DeviceError::Config(format!("password_file: {e}")))?;
            Some((user.clone(), Redacted(password)))
        }
        (None, None) => None,
        (Some(_), None) => {
            return Err(DeviceError::Config("username needs password_file".into()));
        }
        (None, Some(_)) => {
            return Err(DeviceError::Config("password_file needs username".into()));
        }
    };
    if login.is_some() && url.scheme() == "http" {
        tracing::warn!(url = %origin, "Redfish over plain http: the password crosses the network in clear");
    }

    let tls = tls_config(cfg, &origin)?;
    let client = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .timeout(cfg.timeout)
        .connect_timeout(cfg.timeout)
        // A proxy from the environment must not see BMC credentials.
        .no_proxy()
        .user_agent(concat!("vigie-agent/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| DeviceError::Config(format!("HTTP client: {}", chain(&e))))?;

    Ok(RedfishDevice {
        client,
        origin,
        login,
        chassis: cfg.chassis.clone(),
        plan: None,
        unread: Vec::new(),
    })
}

/// rustls with the ring provider (the one the whole workspace uses),
/// trusting `ca_file`, or nothing (`insecure`), or the system's roots.
fn tls_config(cfg: &RedfishConfig, origin: &str) -> Result<rustls::ClientConfig, DeviceError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier: Arc<dyn rustls::client::danger::ServerCertVerifier> = match (
        &cfg.ca_file,
        cfg.insecure,
    ) {
        (Some(_), true) => {
            return Err(DeviceError::Config(
                "ca_file and insecure exclude each other".into(),
            ));
        }
        (None, true) => {
            tracing::warn!(url = %origin, "insecure = true: the Redfish service's certificate is not verified");
            Arc::new(AcceptAnyCertificate(provider.clone()))
        }
        (Some(file), false) => {
            let mut roots = rustls::RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(file)
                .map_err(|e| DeviceError::Config(format!("ca_file {}: {e}", file.display())))?;
            for cert in certs {
                let cert = cert
                    .map_err(|e| DeviceError::Config(format!("ca_file {}: {e}", file.display())))?;
                roots
                    .add(cert)
                    .map_err(|e| DeviceError::Config(format!("ca_file {}: {e}", file.display())))?;
            }
            if roots.is_empty() {
                return Err(DeviceError::Config(format!(
                    "ca_file {}: no certificate in it",
                    file.display()
                )));
            }
            rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                provider.clone(),
            )
            .build()
            .map_err(|e| DeviceError::Config(format!("ca_file {}: {e}", file.display())))?
        }
        (None, false) => Arc::new(
            rustls_platform_verifier::Verifier::new(provider.clone())
                .map_err(|e| DeviceError::Config(format!("system trust store: {e}")))?,
        ),
    };
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| DeviceError::Config(format!("TLS: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

/// `insecure = true`: any certificate is accepted, but the handshake's
/// signatures are still checked, so the session is at least encrypted
/// to whoever holds the key it presented.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// What a planned resource yields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Legacy `Chassis/{C}/Power`: `PowerControl[]` and `PowerSupplies[]`.
    LegacyPower,
    /// `PowerSupplyMetrics`.
    SupplyMetrics,
    /// `PowerSupplyMetrics` of a power shelf's supply: its input power is
    /// energy (integrated where it has no register), not a gauge.
    ShelfSupply,
    /// A cooling unit's `CoolantConnector`: heat, flow, temperatures.
    Coolant,
    /// `EnvironmentMetrics`.
    Environment,
    /// One `Sensor`.
    Sensor,
    /// A PDU's `Circuit` (mains, branch) or `Outlet`.
    Circuit,
    /// `PowerDistributionMetrics`.
    PduMetrics,
}

/// A resource read at every poll.
#[derive(Debug, Clone)]
struct Target {
    /// Absolute path (`/redfish/v1/...`).
    path: String,
    /// Base point name.
    point: String,
    kind: Kind,
    /// For legacy power: the prefix of its supplies' points (`psu-1U`).
    supply_prefix: String,
    /// Its point's place in the device ([`super::scope`]).
    place: Option<(String, u8, u8)>,
}

/// Tiers within one chassis, above the chassis's own base tier (three per
/// level of containment): its whole, its power supplies, its insides.
const WHOLE: u8 = 0;
const SUPPLY: u8 = 1;
const INSIDE: u8 = 2;
/// Preference among a chassis's whole readings: `EnvironmentMetrics`, a
/// chassis power or energy sensor, legacy `PowerControl`, then the
/// `EnvironmentMetrics` of a cooling unit housed in the chassis.
const RANK_ENV: u8 = 0;
const RANK_SENSOR: u8 = 1;
const RANK_LEGACY: u8 = 2;
const RANK_UNIT: u8 = 3;

/// `PowerEquipment` collections of `PowerDistribution` equipment: link
/// name, point prefix, and whether they are read.
const DISTRIBUTION: &[(&str, &str, bool)] = &[
    ("RackPDUs", "pdu", true),
    ("PowerShelves", "shelf", true),
    ("ElectricalBuses", "bus", true),
    ("FloorPDUs", "floor PDU", false),
    ("Switchgear", "switchgear", false),
    ("TransferSwitches", "transfer switch", false),
];

/// A `PowerDistribution`'s circuit collections and their tiers below its
/// whole (`Metrics`): inputs, then supplies and feeders, then branches,
/// then outlets.
const CIRCUITS: &[(&str, &str, u8)] = &[
    ("Mains", "mains", 1),
    ("Feeders", "feeder", 2),
    ("Subfeeds", "subfeed", 3),
    ("Branches", "branch", 3),
    ("Outlets", "outlet", 4),
];
/// A power shelf's supplies: between its mains and its outputs.
const SHELF_SUPPLY_TIER: u8 = 2;

/// `ThermalEquipment` collections of `CoolingUnit`s: link name, prefix.
const COOLING: &[(&str, &str)] = &[
    ("CDUs", "cdu"),
    ("HeatExchangers", "hx"),
    ("ImmersionUnits", "immersion"),
];

impl Device for RedfishDevice {
    fn kind(&self) -> &'static str {
        "redfish"
    }

    fn source(&self) -> String {
        self.origin.clone()
    }

    fn unread(&self) -> Vec<String> {
        self.unread.clone()
    }

    fn places(&self, points: &[&str]) -> Vec<Place> {
        let plan = self.plan.as_deref().unwrap_or_default();
        points
            .iter()
            .filter_map(|p| {
                let exact = plan.iter().find(|t| t.point == *p);
                // Further `PowerControl` members of a legacy `Power`
                // resource (`chassis-1U.CPU`): parts of the chassis.
                let member = || {
                    plan.iter().find(|t| {
                        t.kind == Kind::LegacyPower
                            && p.strip_prefix(t.point.as_str())
                                .is_some_and(|rest| rest.starts_with('.'))
                    })
                };
                // A legacy supply's integrated output (`psu-1U.0.output`):
                // a part of the chassis, at the supplies' tier.
                let supply = || {
                    plan.iter().find(|t| {
                        t.kind == Kind::LegacyPower
                            && p.strip_prefix(t.supply_prefix.as_str())
                                .is_some_and(|rest| rest.starts_with('.'))
                    })
                };
                let (scope, tier, rank) = match exact {
                    Some(t) => t.place.clone()?,
                    None => match member() {
                        Some(t) => {
                            let (scope, whole, _) = t.place.clone()?;
                            (scope, whole.saturating_add(INSIDE), 0)
                        }
                        None => {
                            let (scope, whole, _) = supply()?.place.clone()?;
                            (scope, whole.saturating_add(SUPPLY), 0)
                        }
                    },
                };
                Some(Place {
                    point: (*p).to_owned(),
                    scope,
                    tier,
                    rank,
                })
            })
            .collect()
    }

    fn poll(&mut self) -> PollFuture<'_> {
        Box::pin(async move {
            let result = match self.plan.take() {
                Some(plan) => self.read(&plan).await.map(|values| (plan, values, None)),
                None => self
                    .discover()
                    .await
                    .map(|(plan, values, unread)| (plan, values, Some(unread))),
            };
            match result {
                Ok((plan, values, unread)) => {
                    self.plan = Some(plan);
                    if let Some(unread) = unread {
                        self.unread = unread;
                    }
                    Ok(values)
                }
                // The plan stays dropped: the next poll discovers again.
                Err(e) => Err(e),
            }
        })
    }
}

impl RedfishDevice {
    /// GETs `path`. `Ok(None)` when the service says it does not exist.
    async fn get(&self, path: &str) -> Result<Option<Json>, DeviceError> {
        get_json(&self.client, &self.origin, self.login.as_ref(), path).await
    }

    /// GETs every path, a few at a time, answers in the order asked.
    async fn get_all(&self, paths: &[String]) -> Result<Vec<Option<Json>>, DeviceError> {
        let mut out: Vec<Option<Json>> = vec![None; paths.len()];
        let mut set = tokio::task::JoinSet::new();
        let mut next = 0;
        loop {
            while set.len() < CONCURRENCY && next < paths.len() {
                let (client, origin, login, path) = (
                    self.client.clone(),
                    self.origin.clone(),
                    self.login.clone(),
                    paths[next].clone(),
                );
                let i = next;
                set.spawn(
                    async move { (i, get_json(&client, &origin, login.as_ref(), &path).await) },
                );
                next += 1;
            }
            let Some(done) = set.join_next().await else {
                break;
            };
            let (i, doc) =
                done.map_err(|e| DeviceError::Protocol(format!("request task failed: {e}")))?;
            // Dropping `set` on an early return aborts the other requests.
            if let Some(slot) = out.get_mut(i) {
                *slot = doc?;
            }
        }
        Ok(out)
    }

    /// Reads a planned poll.
    async fn read(&self, plan: &[Target]) -> Result<Vec<PointValue>, DeviceError> {
        let paths: Vec<String> = plan.iter().map(|t| t.path.clone()).collect();
        let docs = self.get_all(&paths).await?;
        let mut values = Vec::new();
        for (target, doc) in plan.iter().zip(docs) {
            let Some(doc) = doc else {
                return Err(DeviceError::Protocol(format!(
                    "{} is gone; discovering again",
                    target.path
                )));
            };
            extract(target, &doc, &mut values);
        }
        Ok(values)
    }

    /// Walks the service and returns the plan with the first poll's values,
    /// and what it found and does not read.
    async fn discover(&self) -> Result<Discovered, DeviceError> {
        let Some(root) = self.get("/redfish/v1/").await? else {
            return Err(DeviceError::Protocol(
                "no Redfish service at /redfish/v1/".into(),
            ));
        };
        let mut found: Vec<(Target, Json)> = Vec::new();
        let mut unread: Vec<String> = Vec::new();
        if let Some(chassis) = link(&root, "Chassis") {
            self.discover_chassis(&chassis, &mut found, &mut unread)
                .await?;
        }
        if let Some(equipment) = link(&root, "PowerEquipment")
            && let Some(equipment) = self.get(&equipment).await?
        {
            for (key, prefix, read) in DISTRIBUTION {
                let Some(collection) = link(&equipment, key) else {
                    continue;
                };
                if *read {
                    self.discover_distribution(&collection, prefix, &mut found, &mut unread)
                        .await?;
                } else {
                    for path in self.members(&collection).await? {
                        unread.push(format!("{path}: a {prefix}, not read by this driver"));
                    }
                }
            }
        }
        if let Some(thermal) = link(&root, "ThermalEquipment")
            && let Some(thermal) = self.get(&thermal).await?
        {
            for (key, prefix) in COOLING {
                if let Some(collection) = link(&thermal, key) {
                    self.discover_cooling(&collection, prefix, &mut found, &mut unread)
                        .await?;
                }
            }
            if let Some(loops) = link(&thermal, "CoolingLoops") {
                for path in self.members(&loops).await? {
                    unread.push(format!("{path}: a cooling loop, not read by this driver"));
                }
            }
        }

        // A sensor that a resource above reads through its DataSourceUri
        // would be the same figure twice.
        let mut sourced = HashSet::new();
        for (t, doc) in &found {
            if t.kind != Kind::Sensor {
                data_sources(doc, &mut sourced);
            }
        }
        let mut names = HashSet::new();
        let mut plan = Vec::new();
        let mut values = Vec::new();
        for (t, doc) in found {
            if t.kind == Kind::Sensor && sourced.contains(t.path.as_str()) {
                continue;
            }
            if !names.insert(t.point.clone()) {
                tracing::warn!(point = %t.point, path = %t.path, "two Redfish resources give the same point name; keeping the first");
                continue;
            }
            extract(&t, &doc, &mut values);
            plan.push(t);
        }
        if plan.is_empty() {
            // Kept as an error, not as an empty plan: a BMC still booting
            // lists nothing, and the next poll should look again.
            return Err(DeviceError::Protocol(if self.chassis.is_empty() {
                "no power or energy reading found".into()
            } else {
                format!(
                    "no power or energy reading found (chassis filter {:?})",
                    self.chassis
                )
            }));
        }
        tracing::info!(url = %self.origin, resources = plan.len(), values = values.len(), unread = unread.len(), "Redfish service discovered");
        Ok((plan, values, unread))
    }

    async fn discover_chassis(
        &self,
        collection: &str,
        found: &mut Vec<(Target, Json)>,
        unread: &mut Vec<String>,
    ) -> Result<(), DeviceError> {
        let members = self.members(collection).await?;
        let docs = self.get_all(&members).await?;
        let read: Vec<(&String, Json)> = members
            .iter()
            .zip(docs)
            .filter_map(|(path, doc)| {
                let chassis = doc?;
                let id = chassis
                    .get("Id")
                    .and_then(Json::as_str)
                    .map_or_else(|| last_segment(path), str::to_owned);
                (self.chassis.is_empty() || self.chassis.contains(&id)).then_some((path, chassis))
            })
            .collect();
        let parents: Vec<(&str, Option<String>)> = read
            .iter()
            .map(|(path, doc)| {
                let parent = doc.get("Links").and_then(|l| link(l, "ContainedBy"));
                (path.as_str(), parent)
            })
            .collect();
        for (path, chassis) in &read {
            let (root, depth) = containment(&parents, path);
            // A PDU's chassis is the PDU: its sensors join the PDU's scope.
            let pdu = read
                .iter()
                .find(|(p, _)| p.as_str() == root)
                .and_then(|(_, doc)| doc.get("Links").and_then(|l| link(l, "PowerDistribution")))
                .and_then(|d| distribution_scope(&d));
            let scope = pdu.unwrap_or_else(|| format!("chassis-{}", clean(&last_segment(root))));
            let base = depth.saturating_mul(3);
            let place = |tier: u8, rank: u8| Some((scope.clone(), base.saturating_add(tier), rank));
            let c = clean(&last_segment(path));
            let mut targets = Vec::new();
            if let Some(power) = link(chassis, "Power") {
                targets.push(Target {
                    path: power,
                    point: format!("chassis-{c}"),
                    kind: Kind::LegacyPower,
                    supply_prefix: format!("psu-{c}"),
                    place: place(WHOLE, RANK_LEGACY),
                });
            }
            if let Some(env) = link(chassis, "EnvironmentMetrics") {
                let mut t = target(env, format!("chassis-{c}.env"), Kind::Environment);
                t.place = place(WHOLE, RANK_ENV);
                targets.push(t);
            }
            if let Some(subsystem) = link(chassis, "PowerSubsystem")
                && let Some(subsystem) = self.get(&subsystem).await?
                && let Some(supplies) = link(&subsystem, "PowerSupplies")
            {
                let supplies = self.members(&supplies).await?;
                let docs = self.get_all(&supplies).await?;
                for (path, supply) in supplies.iter().zip(docs) {
                    let Some(supply) = supply else { continue };
                    let Some(metrics) = link(&supply, "Metrics") else {
                        unread.push(format!("{path}: a power supply without Metrics"));
                        continue;
                    };
                    let p = clean(&last_segment(path));
                    let mut t = target(metrics, format!("psu-{c}.{p}"), Kind::SupplyMetrics);
                    t.place = place(SUPPLY, 0);
                    targets.push(t);
                }
            }
            if let Some(sensors) = link(chassis, "Sensors") {
                for path in self.members(&sensors).await? {
                    let s = clean(&last_segment(&path));
                    let mut t = target(path, format!("sensor-{c}.{s}"), Kind::Sensor);
                    // Its tier comes with its `PhysicalContext` once read.
                    t.place = place(INSIDE, RANK_SENSOR);
                    targets.push(t);
                }
            }
            self.fetch_targets(targets, found).await?;
        }
        Ok(())
    }

    /// `PowerDistribution` equipment of one collection (`RackPDUs`,
    /// `PowerShelves`, `ElectricalBuses`), each its own scope.
    async fn discover_distribution(
        &self,
        collection: &str,
        kind: &str,
        found: &mut Vec<(Target, Json)>,
        unread: &mut Vec<String>,
    ) -> Result<(), DeviceError> {
        let members = self.members(collection).await?;
        let docs = self.get_all(&members).await?;
        for (path, doc) in members.iter().zip(docs) {
            let Some(equipment) = doc else { continue };
            let d = clean(&last_segment(path));
            let scope = format!("{kind}-{d}");
            // One PDU per address is the common case: its points go
            // unprefixed; further PDUs (a daisy chain) get `pdu-{D}.`, and
            // shelves and buses always carry theirs.
            let prefix = if kind == "pdu" && d == "1" {
                String::new()
            } else {
                format!("{scope}.")
            };
            let mut targets = Vec::new();
            if let Some(metrics) = link(&equipment, "Metrics") {
                let mut t = target(metrics, scope.clone(), Kind::PduMetrics);
                t.place = Some((scope.clone(), 0, 0));
                targets.push(t);
            }
            for (collection, name, tier) in CIRCUITS {
                if let Some(collection) = link(&equipment, collection) {
                    for path in self.members(&collection).await? {
                        let m = clean(&last_segment(&path));
                        let mut t = target(path, format!("{prefix}{name}-{m}"), Kind::Circuit);
                        t.place = Some((scope.clone(), *tier, 0));
                        targets.push(t);
                    }
                }
            }
            if let Some(supplies) = link(&equipment, "PowerSupplies") {
                let supplies = self.members(&supplies).await?;
                let docs = self.get_all(&supplies).await?;
                for (path, supply) in supplies.iter().zip(docs) {
                    let Some(supply) = supply else { continue };
                    let Some(metrics) = link(&supply, "Metrics") else {
                        unread.push(format!("{path}: a power supply without Metrics"));
                        continue;
                    };
                    let p = clean(&last_segment(path));
                    let mut t = target(metrics, format!("{prefix}psu-{p}"), Kind::ShelfSupply);
                    t.place = Some((scope.clone(), SHELF_SUPPLY_TIER, 0));
                    targets.push(t);
                }
            }
            self.fetch_targets(targets, found).await?;
        }
        Ok(())
    }

    /// `CoolingUnit`s of one collection (`CDUs`, ...): the unit's own
    /// electrical figures (`EnvironmentMetrics`) and its coolant
    /// connectors' heat, flow and temperatures.
    async fn discover_cooling(
        &self,
        collection: &str,
        kind: &str,
        found: &mut Vec<(Target, Json)>,
        unread: &mut Vec<String>,
    ) -> Result<(), DeviceError> {
        let members = self.members(collection).await?;
        let docs = self.get_all(&members).await?;
        for (path, doc) in members.iter().zip(docs) {
            let Some(unit) = doc else { continue };
            let u = clean(&last_segment(path));
            let point = format!("{kind}-{u}");
            // The unit's chassis is the same physical device: one scope,
            // where the chassis's own readings rank first.
            let chassis = unit
                .get("Links")
                .and_then(|l| l.get("Chassis"))
                .and_then(Json::as_array)
                .and_then(|c| c.first())
                .and_then(odata_id);
            let place = match chassis {
                Some(c) => (
                    format!("chassis-{}", clean(&last_segment(&c))),
                    WHOLE,
                    RANK_UNIT,
                ),
                None => (point.clone(), WHOLE, 0),
            };
            let mut targets = Vec::new();
            if let Some(env) = link(&unit, "EnvironmentMetrics") {
                let mut t = target(env, point.clone(), Kind::Environment);
                t.place = Some(place);
                targets.push(t);
            }
            for (key, side) in [
                ("PrimaryCoolantConnectors", "primary"),
                ("SecondaryCoolantConnectors", "secondary"),
            ] {
                if let Some(connectors) = link(&unit, key) {
                    for path in self.members(&connectors).await? {
                        let k = clean(&last_segment(&path));
                        targets.push(target(path, format!("{point}.{side}-{k}"), Kind::Coolant));
                    }
                }
            }
            if targets.is_empty() {
                unread.push(format!(
                    "{path}: a cooling unit with no EnvironmentMetrics or coolant connectors"
                ));
            }
            self.fetch_targets(targets, found).await?;
        }
        Ok(())
    }

    /// Reads each target once; keeps those that exist and, for sensors,
    /// only those that measure power or energy.
    async fn fetch_targets(
        &self,
        targets: Vec<Target>,
        found: &mut Vec<(Target, Json)>,
    ) -> Result<(), DeviceError> {
        let paths: Vec<String> = targets.iter().map(|t| t.path.clone()).collect();
        let docs = self.get_all(&paths).await?;
        for (t, doc) in targets.into_iter().zip(docs) {
            let Some(doc) = doc else {
                tracing::debug!(path = %t.path, "Redfish resource listed but absent; skipped");
                continue;
            };
            if t.kind == Kind::Sensor && sensor_kind(&doc).is_none() {
                continue;
            }
            let mut t = t;
            if t.kind == Kind::Sensor
                && let Some((_, tier, _)) = t.place.as_mut()
            {
                // Placed as the chassis's insides; a whole-chassis or a
                // power-supply sensor moves up.
                let base = *tier - INSIDE;
                match doc.get("PhysicalContext").and_then(Json::as_str) {
                    Some("Chassis" | "Rack" | "Enclosure" | "PowerSubsystem") => *tier = base,
                    Some("PowerSupply") => *tier = base + SUPPLY,
                    _ => {}
                }
            }
            found.push((t, doc));
        }
        Ok(())
    }

    /// The member paths of a collection; none when it does not exist.
    async fn members(&self, collection: &str) -> Result<Vec<String>, DeviceError> {
        let Some(doc) = self.get(collection).await? else {
            return Ok(Vec::new());
        };
        Ok(doc
            .get("Members")
            .and_then(Json::as_array)
            .map(|m| m.iter().filter_map(odata_id).collect())
            .unwrap_or_default())
    }
}

/// What a discovery yields: the plan, the first values, what is not read.
type Discovered = (Vec<Target>, Vec<PointValue>, Vec<String>);

/// The scope of the `PowerDistribution` equipment at `path` (a chassis's
/// `Links.PowerDistribution`), named as its points are.
fn distribution_scope(path: &str) -> Option<String> {
    DISTRIBUTION
        .iter()
        .filter(|(_, _, read)| *read)
        .find_map(|(key, prefix, _)| {
            let (_, id) = path.split_once(&format!("/PowerEquipment/{key}/"))?;
            Some(format!("{prefix}-{}", clean(id.trim_end_matches('/'))))
        })
}

fn target(path: String, point: String, kind: Kind) -> Target {
    Target {
        path,
        point,
        kind,
        supply_prefix: String::new(),
        place: None,
    }
}

/// The outermost chassis that holds `path` (through `Links.ContainedBy`,
/// among the chassis read), and how many levels down `path` sits.
fn containment<'a>(parents: &[(&'a str, Option<String>)], path: &'a str) -> (&'a str, u8) {
    let mut at = path;
    let mut depth = 0u8;
    // Bounded: a service that loops its containment stops here.
    while depth < 8 {
        let parent = parents
            .iter()
            .find(|(p, _)| *p == at)
            .and_then(|(_, parent)| parent.as_deref())
            .and_then(|parent| parents.iter().find(|(p, _)| *p == parent));
        let Some((parent, _)) = parent else { break };
        at = parent;
        depth += 1;
    }
    (at, depth)
}

async fn get_json(
    client: &reqwest::Client,
    origin: &str,
    login: Option<&(String, Redacted)>,
    path: &str,
) -> Result<Option<Json>, DeviceError> {
    let mut request = client
        .get(format!("{origin}{path}"))
        .header(reqwest::header::ACCEPT, "application/json");
    if let Some((user, password)) = login {
        request = request.basic_auth(user, Some(&password.0));
    }
    let response = match request.send().await {
        Ok(response) => response,
        Err(e) => return Err(transport_error(&e, origin, path).await),
    };
    let status = response.status();
    if status == reqwest::StatusCode::NOT_FOUND || status == reqwest::StatusCode::GONE {
        return Ok(None);
    }
    if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
        return Err(DeviceError::Auth(format!("{path}: HTTP {status}")));
    }
    if status.is_server_error() {
        return Err(DeviceError::Unreachable(format!("{path}: HTTP {status}")));
    }
    if !status.is_success() {
        return Err(DeviceError::Protocol(format!("{path}: HTTP {status}")));
    }
    let body = match response.bytes().await {
        Ok(body) => body,
        Err(e) => return Err(transport_error(&e, origin, path).await),
    };
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(|e| DeviceError::Protocol(format!("{path}: not JSON: {e}")))
}

/// A certificate the configuration does not trust, or a scheme the service
/// does not speak, is a configuration problem; anything else on the way is
/// the network's.
async fn transport_error(e: &reqwest::Error, origin: &str, path: &str) -> DeviceError {
    match rustls_cause(e) {
        Some(rustls::Error::InvalidCertificate(why)) => {
            return DeviceError::Config(format!(
                "{path}: the service's TLS certificate is not trusted ({why:?}): set ca_file to its CA"
            ));
        }
        // What rustls calls "received corrupt message of type
        // InvalidContentType": the first bytes back were not a TLS record.
        Some(rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType)) => {
            let plain = origin.replacen("https://", "http://", 1);
            return DeviceError::Config(format!(
                "{path}: the server at {origin} answered in plain HTTP, not TLS: use {plain} as url (or enable HTTPS on the service)"
            ));
        }
        _ => {}
    }
    // Plain HTTP that got an answer it could not parse: a TLS service?
    if let Some(rest) = origin.strip_prefix("http://")
        && !e.is_connect()
        && !e.is_timeout()
        && speaks_tls(origin).await
    {
        return DeviceError::Config(format!(
            "{path}: the server at {origin} speaks TLS, not plain HTTP: use https://{rest} as url"
        ));
    }
    DeviceError::Unreachable(format!("{path}: {}", chain(e)))
}

/// Whether the server at `origin` answers a TLS ClientHello with a TLS
/// record (a handshake or an alert). Bounded by a short timeout.
async fn speaks_tls(origin: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(url) = reqwest::Url::parse(origin) else {
        return false;
    };
    let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
        return false;
    };
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let Ok(name) = rustls::pki_types::ServerName::try_from(host.clone()) else {
        return false;
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let Ok(builder) = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
    else {
        return false;
    };
    let config = builder
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
        .with_no_client_auth();
    let Ok(mut conn) = rustls::ClientConnection::new(Arc::new(config), name) else {
        return false;
    };
    let mut hello = Vec::new();
    if conn.write_tls(&mut hello).is_err() {
        return false;
    }
    let exchange = async {
        let mut tcp = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .ok()?;
        tcp.write_all(&hello).await.ok()?;
        let mut head = [0u8; 2];
        tcp.read_exact(&mut head).await.ok()?;
        // Content type handshake (22) or alert (21), then major version 3.
        Some(matches!(head, [0x15 | 0x16, 0x03]))
    };
    tokio::time::timeout(Duration::from_secs(3), exchange)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

/// `doc[key]["@odata.id"]`, when it is a path on this service.
fn link(doc: &Json, key: &str) -> Option<String> {
    doc.get(key).and_then(odata_id)
}

/// A reference's path, without fragment; links to other services are not
/// followed.
fn odata_id(reference: &Json) -> Option<String> {
    let id = reference.get("@odata.id")?.as_str()?;
    let id = id.split('#').next().unwrap_or(id);
    id.starts_with("/redfish/v1").then(|| id.to_owned())
}

fn last_segment(path: &str) -> String {
    path.trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(path)
        .to_owned()
}

/// A point-name part: `[A-Za-z0-9._-]`, anything else becomes `_`.
fn clean(part: &str) -> String {
    let cleaned: String = part
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if cleaned.is_empty() {
        "_".into()
    } else {
        cleaned
    }
}

/// Every `DataSourceUri` in a document.
fn data_sources(doc: &Json, out: &mut HashSet<String>) {
    match doc {
        Json::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("DataSourceUri", Json::String(uri)) => {
                        out.insert(uri.split('#').next().unwrap_or(uri).to_owned());
                    }
                    _ => data_sources(value, out),
                }
            }
        }
        Json::Array(items) => items.iter().for_each(|v| data_sources(v, out)),
        _ => {}
    }
}

/// Units of a Redfish energy reading.
#[derive(Debug, Clone, Copy)]
enum EnergyUnit {
    KWh,
    Wh,
    Joules,
}

/// An energy reading as an exact register: kWh and Wh in mWh
/// (3.6 J each), joules in mJ. `None` for a negative or absurd value.
fn energy(reading: f64, unit: EnergyUnit) -> Option<Value> {
    let (scale, uj_per_unit) = match unit {
        EnergyUnit::KWh => (1e6, 3_600_000),
        EnergyUnit::Wh => (1e3, 3_600_000),
        EnergyUnit::Joules => (1e3, 1_000),
    };
    let raw = (reading * scale).round();
    // u64::MAX as f64 rounds up to 2^64: `<` keeps the cast exact.
    (raw.is_finite() && raw >= 0.0 && raw < u64::MAX as f64).then_some(Value::EnergyCounter {
        raw: raw as u64,
        uj_per_unit,
        max_raw: u64::MAX,
    })
}

/// What a `Sensor` measures, when it is power or energy.
fn sensor_kind(doc: &Json) -> Option<Option<EnergyUnit>> {
    match doc.get("ReadingType").and_then(Json::as_str)? {
        "Power" => Some(None),
        "EnergykWh" => Some(Some(EnergyUnit::KWh)),
        "EnergyWh" => Some(Some(EnergyUnit::Wh)),
        "EnergyJoules" => Some(Some(EnergyUnit::Joules)),
        _ => None,
    }
}

/// A finite number, or nothing (null, missing, a string).
fn number(v: Option<&Json>) -> Option<f64> {
    v.and_then(Json::as_f64).filter(|x| x.is_finite())
}

/// `doc[key]["Reading"]`.
fn reading(doc: &Json, key: &str) -> Option<f64> {
    number(doc.get(key).and_then(|o| o.get("Reading")))
}

fn push(out: &mut Vec<PointValue>, point: &str, value: Option<Value>) {
    if let Some(value) = value {
        out.push(PointValue {
            point: point.to_owned(),
            value,
        });
    }
}

fn power(w: Option<f64>) -> Option<Value> {
    w.map(Value::PowerW)
}

fn gauge(quantity: GaugeQuantity, x: Option<f64>) -> Option<Value> {
    x.map(|x| Value::Gauge(quantity, x))
}

/// The values one resource yields; anything null or missing is skipped.
fn extract(t: &Target, doc: &Json, out: &mut Vec<PointValue>) {
    let p = t.point.as_str();
    match t.kind {
        Kind::LegacyPower => {
            let controls = doc.get("PowerControl").and_then(Json::as_array);
            for (i, control) in controls.into_iter().flatten().enumerate() {
                let point = if i == 0 {
                    p.to_owned()
                } else {
                    format!("{p}.{}", clean(&member_id(control, i)))
                };
                push(
                    out,
                    &point,
                    power(number(control.get("PowerConsumedWatts"))),
                );
                let limit = control
                    .get("PowerLimit")
                    .and_then(|l| l.get("LimitInWatts"));
                push(
                    out,
                    &point,
                    gauge(GaugeQuantity::PowerLimitWatts, number(limit)),
                );
            }
            let supplies = doc.get("PowerSupplies").and_then(Json::as_array);
            for (i, supply) in supplies.into_iter().flatten().enumerate() {
                let point = format!("{}.{}", t.supply_prefix, clean(&member_id(supply, i)));
                let input = number(supply.get("PowerInputWatts"));
                push(out, &point, gauge(GaugeQuantity::PowerWatts, input));
                let volts = number(supply.get("LineInputVoltage"));
                push(out, &point, gauge(GaugeQuantity::VoltageVolts, volts));
                // Average output over the supply's own window: integrated,
                // a part of the chassis (all a blade enclosure may report).
                let output = number(supply.get("LastPowerOutputWatts"));
                push(out, &format!("{point}.output"), power(output));
            }
        }
        Kind::SupplyMetrics | Kind::ShelfSupply => {
            let input = reading(doc, "InputPowerWatts");
            if t.kind == Kind::ShelfSupply {
                push(out, p, power(input));
            } else {
                push(out, p, gauge(GaugeQuantity::PowerWatts, input));
            }
            push(out, p, energy_of(doc));
            push(
                out,
                p,
                gauge(GaugeQuantity::VoltageVolts, reading(doc, "InputVoltage")),
            );
            let amps = reading(doc, "InputCurrentAmps");
            push(out, p, gauge(GaugeQuantity::CurrentAmperes, amps));
            let output = reading(doc, "OutputPowerWatts");
            push(
                out,
                &format!("{p}.output"),
                gauge(GaugeQuantity::PowerWatts, output),
            );
        }
        Kind::Environment => {
            push(out, p, power(reading(doc, "PowerWatts")));
            push(out, p, energy_of(doc));
            let temp = reading(doc, "TemperatureCelsius");
            push(out, p, gauge(GaugeQuantity::TemperatureCelsius, temp));
            let limit = number(doc.get("PowerLimitWatts").and_then(|l| l.get("SetPoint")));
            push(out, p, gauge(GaugeQuantity::PowerLimitWatts, limit));
        }
        Kind::Sensor => {
            let value = number(doc.get("Reading"));
            let value = match sensor_kind(doc) {
                Some(None) => power(value),
                Some(Some(unit)) => value.and_then(|x| energy(x, unit)),
                None => None,
            };
            push(out, p, value);
        }
        Kind::Coolant => {
            let heat = reading(doc, "HeatRemovedkW").map(|kw| kw * 1000.0);
            push(out, p, gauge(GaugeQuantity::HeatPowerWatts, heat));
            // L/min to m³/h: x 60 / 1000.
            let flow = reading(doc, "FlowLitersPerMinute").map(|lpm| lpm * 60.0 / 1000.0);
            push(out, p, gauge(GaugeQuantity::FlowCubicMetresPerHour, flow));
            let supply = reading(doc, "SupplyTemperatureCelsius");
            push(
                out,
                p,
                gauge(GaugeQuantity::SupplyTemperatureCelsius, supply),
            );
            let ret = reading(doc, "ReturnTemperatureCelsius");
            push(out, p, gauge(GaugeQuantity::ReturnTemperatureCelsius, ret));
        }
        Kind::PduMetrics => {
            push(out, p, power(reading(doc, "PowerWatts")));
            push(out, p, energy_of(doc));
            let temp = reading(doc, "TemperatureCelsius");
            push(out, p, gauge(GaugeQuantity::TemperatureCelsius, temp));
        }
        Kind::Circuit => {
            let watts = reading(doc, "PowerWatts");
            push(out, p, power(watts));
            push(out, p, energy_of(doc));
            let volts = reading(doc, "Voltage");
            push(out, p, gauge(GaugeQuantity::VoltageVolts, volts));
            let amps = reading(doc, "CurrentAmps");
            push(out, p, gauge(GaugeQuantity::CurrentAmperes, amps));
            // Per-line figures only where the circuit gives no single one
            // (three-phase mains): an outlet repeats its one line there.
            let lines = [
                ("PolyPhaseVoltage", GaugeQuantity::VoltageVolts, volts),
                ("PolyPhaseCurrentAmps", GaugeQuantity::CurrentAmperes, amps),
                ("PolyPhasePowerWatts", GaugeQuantity::PowerWatts, watts),
            ];
            for (key, quantity, single) in lines {
                if single.is_some() {
                    continue;
                }
                let Some(map) = doc.get(key).and_then(Json::as_object) else {
                    continue;
                };
                for (line, v) in map {
                    let x = number(v.get("Reading"));
                    push(out, &format!("{p}.{}", clean(line)), gauge(quantity, x));
                }
            }
        }
    }
}

/// `EnergykWh.Reading`, else `EnergyJoules.Reading`, as a register.
fn energy_of(doc: &Json) -> Option<Value> {
    reading(doc, "EnergykWh")
        .and_then(|x| energy(x, EnergyUnit::KWh))
        .or_else(|| reading(doc, "EnergyJoules").and_then(|x| energy(x, EnergyUnit::Joules)))
}

/// An array member's `MemberId`, else its index.
fn member_id(member: &Json, index: usize) -> String {
    member
        .get("MemberId")
        .and_then(Json::as_str)
        .map_or_else(|| index.to_string(), str::to_owned)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn energy_registers_are_exact() {
        let kwh = |x| match energy(x, EnergyUnit::KWh) {
            Some(Value::EnergyCounter { raw, .. }) => raw,
            other => panic!("{other:?}"),
        };
        assert_eq!(kwh(36166.0), 36_166_000_000);
        assert_eq!(kwh(7855.123), 7_855_123_000);
        assert_eq!(kwh(0.000_001), 1);
        // 1 mWh = 3.6 J.
        assert!(matches!(
            energy(1.0, EnergyUnit::Wh),
            Some(Value::EnergyCounter {
                raw: 1000,
                uj_per_unit: 3_600_000,
                max_raw: u64::MAX
            })
        ));
        assert!(matches!(
            energy(2.5, EnergyUnit::Joules),
            Some(Value::EnergyCounter {
                raw: 2500,
                uj_per_unit: 1000,
                ..
            })
        ));
        assert_eq!(energy(-1.0, EnergyUnit::KWh), None);
        assert_eq!(energy(f64::INFINITY, EnergyUnit::KWh), None);
        assert_eq!(energy(1e300, EnergyUnit::KWh), None);
    }

    #[test]
    fn point_parts_keep_only_safe_characters() {
        assert_eq!(clean("A1"), "A1");
        assert_eq!(clean("Line 1:N/é"), "Line_1_N__");
        assert_eq!(clean(""), "_");
        assert_eq!(last_segment("/redfish/v1/Chassis/1U/"), "1U");
    }

    #[test]
    fn links_outside_the_service_are_not_followed() {
        let doc = serde_json::json!({
            "A": {"@odata.id": "/redfish/v1/Chassis/1U/Power#/PowerControl/0"},
            "B": {"@odata.id": "https://pdu.example/redfish/v1/PowerEquipment"},
            "C": {"@odata.id": null},
        });
        assert_eq!(
            link(&doc, "A").as_deref(),
            Some("/redfish/v1/Chassis/1U/Power")
        );
        assert_eq!(link(&doc, "B"), None);
        assert_eq!(link(&doc, "C"), None);
        assert_eq!(link(&doc, "D"), None);
    }

    #[test]
    fn config_defaults_and_unknown_fields() {
        let cfg: RedfishConfig = toml::from_str(r#"url = "https://10.0.0.5""#).unwrap();
        assert_eq!(cfg.timeout, Duration::from_secs(10));
        assert!(!cfg.insecure);
        assert!(cfg.chassis.is_empty());
        let cfg: RedfishConfig =
            toml::from_str("url = \"https://10.0.0.5\"\ntimeout = \"2s\"\nchassis = [\"1U\"]")
                .unwrap();
        assert_eq!(cfg.timeout, Duration::from_secs(2));
        assert!(toml::from_str::<RedfishConfig>("url = \"https://x\"\npassword = \"p\"").is_err());
    }

    #[test]
    fn build_refuses_configurations_that_cannot_work() {
        let base = |url: &str| RedfishConfig {
            url: url.into(),
            username: None,
            password_file: None,
            ca_file: None,
            insecure: false,
            timeout: Duration::from_secs(1),
            chassis: Vec::new(),
        };
        let config_error = |cfg: &RedfishConfig| matches!(build(cfg), Err(DeviceError::Config(_)));
        assert!(config_error(&base("ftp://10.0.0.5")));
        assert!(config_error(&base("https://admin:pw@10.0.0.5")));
        assert!(config_error(&base("https://10.0.0.5/redfish/v1")));
        assert!(config_error(&RedfishConfig {
            username: Some("admin".into()),
            ..base("https://10.0.0.5")
        }));
        assert!(config_error(&RedfishConfig {
            insecure: true,
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..base("https://10.0.0.5")
        }));
        assert!(config_error(&RedfishConfig {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..base("https://10.0.0.5")
        }));
        let dev = build(&base("https://10.0.0.5:8443/")).unwrap();
        assert_eq!(dev.source(), "https://10.0.0.5:8443");
    }
}
