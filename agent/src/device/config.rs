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
