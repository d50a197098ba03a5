//! A device's configuration: `[[devices]]` and its points' place in the site.

use super::{ipmi, modbus, redfish, snmp};

/// One remote device in the agent's configuration (`[[devices]]`).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    /// Device name, the first part of its sensors' names (`pdu-a1:outlet-7`).
    pub name: String,
    /// Poll period.
    #[serde(default = "default_period", with = "humantime_serde")]
    pub period: std::time::Duration,
    /// Highest plausible power of one point, W: a register that goes back
    /// by more than this could explain is a reset, not a wrap.
    #[serde(default = "default_max_power_w")]
    pub max_power_w: f64,
    /// Whose energy the device measures: `host` (the agent's own host:
    /// its BMC, the outlet feeding it) or `site` (equipment the agent only
    /// reads: facility meters, a rack PDU feeding other hosts, cooling).
    /// A `site` device's sensors go to the ledger and the site figures,
    /// never into the polling host's totals ([`scope::off_host`](super::scope::off_host)).
    #[serde(default)]
    pub counts_in: CountsIn,
    /// Where each point sits in the site.
    #[serde(default)]
    pub points: Vec<PointTopology>,
    /// A Redfish BMC or PDU.
    #[serde(default)]
    pub redfish: Option<redfish::RedfishConfig>,
    /// IPMI DCMI power through ipmitool or FreeIPMI.
    #[serde(default)]
    pub ipmi: Option<ipmi::IpmiConfig>,
    /// An SNMP rack PDU.
    #[serde(default)]
    pub snmp: Option<snmp::SnmpConfig>,
    /// A Modbus TCP meter.
    #[serde(default)]
    pub modbus: Option<modbus::ModbusConfig>,
}

/// Whose totals a device's energy belongs to (`counts_in`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CountsIn {
    /// The polling host's own energy: its boundary sensors add to the
    /// host's totals (what configurations without the setting meant).
    #[default]
    Host,
    /// Site equipment the agent merely reads: none of its sensors is in
    /// the host's totals.
    Site,
}

/// A point's place in the site topology.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PointTopology {
    /// Point name as the driver reports it (`outlet-7`).
    pub point: String,
    /// Room or hall.
    #[serde(default)]
    pub room: Option<String>,
    /// Rack.
    #[serde(default)]
    pub rack: Option<String>,
    /// PDU.
    #[serde(default)]
    pub pdu: Option<String>,
    /// Outlet.
    #[serde(default)]
    pub outlet: Option<String>,
    /// The host it feeds.
    #[serde(default)]
    pub feeds: Option<String>,
}

fn default_period() -> std::time::Duration {
    std::time::Duration::from_secs(10)
}
fn default_max_power_w() -> f64 {
    100_000.0
}
