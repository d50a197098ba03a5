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

mod discover;
mod extract;
#[cfg(test)]
mod tests;
mod transport;

use extract::*;
use transport::*;

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
}
