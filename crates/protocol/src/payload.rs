//! JSON payloads. Every struct refuses unknown fields: a typo or a newer
//! schema is a visible rejection, never silently dropped data.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Whether an energy figure was measured by a meter or estimated by a model.
/// Estimates stay flagged end to end: the collector keeps them apart in
/// every total.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Quality {
    /// Read from an energy counter or meter.
    Measured,
    /// Computed from a model (e.g. CPU utilisation x power curve).
    Estimated,
}

/// One sensor's energy over one interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reading {
    /// Sensor name, unique within the host, e.g. `rapl:package-0`.
    pub sensor: String,
    /// Interval start, Unix milliseconds (inclusive).
    pub start_ms: i64,
    /// Interval end, Unix milliseconds (exclusive).
    pub end_ms: i64,
    /// Energy over the interval, wrap-corrected, in microjoules.
    pub energy_uj: u64,
    /// Energy since the agent epoch began, this interval included, in microjoules.
    pub cumulative_uj: u64,
    /// Average power over the interval in watts, when the source reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power_w: Option<f64>,
    /// Measured or estimated.
    pub quality: Quality,
}

/// A batch of readings: the unit of publication, deduplication and acknowledgement.
/// `(host, epoch, seq)` identifies it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryBatch {
    /// Payload schema version ([`crate::SCHEMA_VERSION`]).
    pub schema: u32,
    /// Site name; must match the topic.
    pub site: String,
    /// Host name; must match the topic.
    pub host: String,
    /// Linux boot id (`/proc/sys/kernel/random/boot_id`) when the batch was made.
    pub boot_id: String,
    /// Agent epoch: changes whenever the agent's counters start afresh.
    pub epoch: u64,
    /// Sequence number, strictly increasing within an epoch.
    pub seq: u64,
    /// The readings, in time order per sensor.
    pub readings: Vec<Reading>,
    /// Instantaneous values that are not energy (temperatures, utilisation,
    /// limits); they never enter the energy ledger.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gauges: Vec<Gauge>,
    /// Energy per workload: each entry splits one reading's interval (or a
    /// part of it) among the workloads that ran. Absent from older agents
    /// and when attribution is off, so older collectors read such batches
    /// as before.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workloads: Vec<WorkloadSplit>,
}

/// What a workload is, from where the agent found it. A closed list: the
/// collector exports it as a label value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkloadKind {
    /// A systemd service or scope (`system.slice/nginx.service`).
    Service,
    /// A systemd slice with no finer unit the agent tells apart.
    Slice,
    /// A user's login session or user manager (`user-1000.slice`).
    Session,
    /// A Kubernetes pod; the id is its uid.
    Pod,
    /// A container in a pod; the id is the container id.
    Container,
    /// A virtual machine (libvirt/QEMU machine scope).
    Vm,
    /// A Slurm job; the id is the job id.
    SlurmJob,
    /// A step of a Slurm job; the id is `<job>.<step>`.
    SlurmStep,
    /// A process; the id is its pid.
    Process,
    /// A cgroup none of the above describes; the id is its path.
    Cgroup,
}

impl WorkloadKind {
    /// The snake_case label.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkloadKind::Service => "service",
            WorkloadKind::Slice => "slice",
            WorkloadKind::Session => "session",
            WorkloadKind::Pod => "pod",
            WorkloadKind::Container => "container",
            WorkloadKind::Vm => "vm",
            WorkloadKind::SlurmJob => "slurm_job",
            WorkloadKind::SlurmStep => "slurm_step",
            WorkloadKind::Process => "process",
            WorkloadKind::Cgroup => "cgroup",
        }
    }
}

/// What the active energy of a [`WorkloadSplit`] was apportioned by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActivityBasis {
    /// CPU time (cgroup `cpu.stat` `usage_usec`, or `/proc/<pid>/stat`).
    CpuTime,
    /// GPU use per process (NVML process utilisation samples).
    GpuUse,
}

/// One workload's share of a [`WorkloadSplit`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadEnergy {
    /// What it is.
    pub kind: WorkloadKind,
    /// Its id within the kind on this host (a unit name, a pod uid, a job
    /// id, a pid): at most 256 bytes, no control characters.
    pub id: String,
    /// Descriptive labels (`namespace`, `pod`, `user`, `comm`): at most 8,
    /// keys `[a-z0-9_]` up to 64 bytes, values up to 256.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Its share of the active energy, µJ.
    pub energy_uj: u64,
}

/// One sensor's energy over one interval, split among workloads. Exactly:
/// `Σ workloads + other_uj + idle_uj + unattributed_uj == energy_uj`, and
/// `energy_uj` is the energy of the reading of `sensor` over the same
/// interval (or a part of it when readings were merged). The split is a
/// model (activity shares); `quality` is that of the energy split.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadSplit {
    /// The sensor whose energy is split, as in readings.
    pub sensor: String,
    /// Interval start, Unix milliseconds (inclusive).
    pub start_ms: i64,
    /// Interval end, Unix milliseconds (exclusive).
    pub end_ms: i64,
    /// The sensor's energy over the interval, µJ: the sum of every line.
    pub energy_uj: u64,
    /// The idle baseline's part, which stays with the host, µJ.
    pub idle_uj: u64,
    /// Active energy no workload accounts for (kernel, root cgroup,
    /// cgroups gone before their last read; all of it when no workload
    /// had activity), µJ.
    pub unattributed_uj: u64,
    /// Workloads past the agent's cardinality bound, summed, µJ.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub other_uj: u64,
    /// How many workloads `other_uj` sums.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub other_count: u64,
    /// Measured or estimated, as the reading split.
    pub quality: Quality,
    /// What the active energy was apportioned by.
    pub basis: ActivityBasis,
    /// The workloads kept, most energy first.
    pub workloads: Vec<WorkloadEnergy>,
}

/// What a [`Gauge`] measures, with its unit. A closed list: the collector
/// exports each as a label value, so senders cannot invent series names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GaugeQuantity {
    /// Electrical power, W (a PDU outlet, a BMC, a GPU).
    PowerWatts,
    /// Configured power limit, W.
    PowerLimitWatts,
    /// Temperature, °C.
    TemperatureCelsius,
    /// Utilisation, 0 to 1.
    UtilizationRatio,
    /// 1 when MIG mode is on, else 0.
    MigEnabled,
    /// Voltage, V.
    VoltageVolts,
    /// Current, A.
    CurrentAmperes,
    /// Heat-meter supply temperature, °C.
    SupplyTemperatureCelsius,
    /// Heat-meter return temperature, °C.
    ReturnTemperatureCelsius,
    /// Thermal power, W.
    HeatPowerWatts,
    /// Cumulative thermal energy of a heat meter, kWh (register value).
    HeatEnergyKwh,
    /// Volume flow, m³/h.
    FlowCubicMetresPerHour,
    /// Cumulative volume of a water meter, m³ (register value).
    VolumeCubicMetres,
    /// A UPS battery's estimated charge, 0 to 1.
    BatteryChargeRatio,
    /// A UPS battery's estimated runtime at the present load, s.
    BatteryRuntimeSeconds,
}

impl GaugeQuantity {
    /// The snake_case label.
    pub fn as_str(self) -> &'static str {
        match self {
            GaugeQuantity::PowerWatts => "power_watts",
            GaugeQuantity::PowerLimitWatts => "power_limit_watts",
            GaugeQuantity::TemperatureCelsius => "temperature_celsius",
            GaugeQuantity::UtilizationRatio => "utilization_ratio",
            GaugeQuantity::MigEnabled => "mig_enabled",
            GaugeQuantity::VoltageVolts => "voltage_volts",
            GaugeQuantity::CurrentAmperes => "current_amperes",
            GaugeQuantity::SupplyTemperatureCelsius => "supply_temperature_celsius",
            GaugeQuantity::ReturnTemperatureCelsius => "return_temperature_celsius",
            GaugeQuantity::HeatPowerWatts => "heat_power_watts",
            GaugeQuantity::HeatEnergyKwh => "heat_energy_kwh",
            GaugeQuantity::FlowCubicMetresPerHour => "flow_cubic_metres_per_hour",
            GaugeQuantity::VolumeCubicMetres => "volume_cubic_metres",
            GaugeQuantity::BatteryChargeRatio => "battery_charge_ratio",
            GaugeQuantity::BatteryRuntimeSeconds => "battery_runtime_seconds",
        }
    }
}

/// One instantaneous value of a sensor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gauge {
    /// Sensor name, as in readings.
    pub sensor: String,
    /// What is measured.
    pub quantity: GaugeQuantity,
    /// The value, in the quantity's unit.
    pub value: f64,
    /// When it was read, Unix milliseconds.
    pub at_ms: i64,
}

/// Agent presence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Agent connected and publishing.
    Online,
    /// Agent stopped, or its connection was lost (last will).
    Offline,
}

/// Retained message on the `status` topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusMessage {
    /// Payload schema version.
    pub schema: u32,
    /// Online or offline.
    pub state: Status,
    /// Agent epoch (absent in the last will, which is fixed at connect time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    /// Agent version string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_version: Option<String>,
    /// When this state began, Unix milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_ms: Option<i64>,
    /// The agent's spool when this status was sent (online only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spool: Option<SpoolHealth>,
}

/// What an agent's spool holds and has had to do, reported in its status
/// so the collector can export it per host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpoolHealth {
    /// Batches waiting for the broker's acknowledgement.
    pub batches: u64,
    /// Start of the oldest spooled reading, Unix milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_ms: Option<i64>,
    /// Merges done since the agent started (each loses resolution, never energy).
    pub merged_total: u64,
    /// Batches dropped for age since the agent started.
    pub dropped_total: u64,
    /// Energy in those dropped batches, µJ.
    pub dropped_uj_total: u64,
    /// Counter resets seen since the agent started (a RAPL or GPU driver
    /// reload, a device's register set back): each is a new baseline, and
    /// the energy between the last reading and the reset is not known.
    /// Absent (0) from older agents; sent only when not 0, so a collector
    /// that predates it reads an agent that saw none.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub counter_resets_total: u64,
    /// Spool writes that failed since the agent started (a full disk):
    /// the agent keeps the batches in memory and retries. Absent when 0,
    /// as are the fields below (older collectors read an agent that had
    /// none).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub spool_errors_total: u64,
    /// Batches held in memory because the spool could not take them.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub in_memory: u64,
    /// Counters not resumed at this start although a checkpoint of the
    /// same boot existed (downtime past the safe window, or a bad
    /// checkpoint): the downtime is a gap in their data.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unbridged_total: u64,
    /// The downtime those counters did not bridge (the longest), ms.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unbridged_ms: u64,
    /// Times the agent lost its broker connection since it started (a
    /// broker refusing a packet over its `max_packet_size` disconnects
    /// the sender). Optional as `counter_resets_total`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub broker_disconnects_total: u64,
    /// Batch publishes the broker did not acknowledge since the agent
    /// started (refused, or the connection lost first): each batch stays
    /// spooled and is sent again. Optional as `counter_resets_total`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub publish_failures_total: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// One energy sensor the agent found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SensorMeta {
    /// Sensor name as used in readings.
    pub name: String,
    /// Kind of source, e.g. `rapl`, `nvml`, `redfish`, `snmp`.
    pub kind: String,
    /// What it measures, e.g. `package`, `dram`, `gpu`.
    pub domain: String,
    /// Where it is read from (a path or URL).
    pub source: String,
    /// Counter range before it wraps, in microjoules, when it is a counter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_range_uj: Option<u64>,
    /// How its energy is obtained; absent means an energy counter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<Method>,
    /// Where it sits in the site (remote devices).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology: Option<Topology>,
    /// Which physical energy it counts, when a device shows the same
    /// energy several ways or in parts; absent means a boundary of its own
    /// (what inventories without the field meant).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<EnergyScope>,
}

/// A sensor's place among the sensors of one device scope (one physical
/// device: a server chassis, a PDU). Each scope has exactly one
/// [`ScopeRole::Boundary`] sensor; totals add boundaries only, so the same
/// energy is never counted twice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnergyScope {
    /// The scope, e.g. `bmc-r12:1U` or `pdu-a1`.
    pub scope: String,
    /// What this sensor is within it.
    pub role: ScopeRole,
    /// The sensor it is a part of (component) or the same energy as
    /// (alternative); absent on the boundary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub of: Option<String>,
}

/// What a sensor's energy is within its device scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScopeRole {
    /// The whole device's energy: the one sensor of the scope that totals add.
    Boundary,
    /// A part of the whole (a power supply, a nested chassis, a PDU's
    /// outlet, branch or phase): shown, never added to the whole.
    Component,
    /// The same energy as another sensor, read another way (a power
    /// reading beside an energy register): shown, never added.
    Alternative,
}

impl SensorMeta {
    /// Whether totals add this sensor: a boundary, or a sensor with no
    /// scope (a host's own counters, older inventories).
    pub fn in_totals(&self) -> bool {
        self.scope
            .as_ref()
            .is_none_or(|s| s.role == ScopeRole::Boundary)
    }
}

/// How a sensor's interval energy is obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Differences of an energy counter (RAPL, NVML total energy, meters).
    Counter,
    /// Power readings integrated over time: may miss short peaks.
    IntegratedPower,
    /// A model (readings are flagged `estimated`).
    Model,
}

/// A sensor's place in the site, from the agent's configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    /// Room or hall.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    /// Rack.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rack: Option<String>,
    /// PDU name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pdu: Option<String>,
    /// Outlet on the PDU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlet: Option<String>,
    /// The host this outlet or device feeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feeds: Option<String>,
}

/// One GPU the agent found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpuMeta {
    /// Index on the host.
    pub index: u32,
    /// Model name.
    pub name: String,
    /// Device UUID.
    pub uuid: String,
}

/// Where a host sits in the site.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RackPosition {
    /// Room or hall.
    pub room: String,
    /// Rack name.
    pub rack: String,
    /// Lowest rack unit the host occupies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<u32>,
}

/// Retained inventory on the `meta` topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostMeta {
    /// Payload schema version.
    pub schema: u32,
    /// Site name.
    pub site: String,
    /// Host name.
    pub host: String,
    /// Agent version string.
    pub agent_version: String,
    /// CPU model name.
    pub cpu_model: String,
    /// CPU sockets (RAPL packages found, or 1).
    pub sockets: u32,
    /// Logical CPUs.
    pub logical_cpus: u32,
    /// Physical memory in bytes.
    pub memory_bytes: u64,
    /// GPUs found.
    pub gpus: Vec<GpuMeta>,
    /// Energy sensors in use.
    pub sensors: Vec<SensorMeta>,
    /// Rack position from the agent's configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rack: Option<RackPosition>,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::GaugeQuantity;

    #[test]
    fn gauge_labels_are_their_wire_names() {
        for q in [
            GaugeQuantity::PowerWatts,
            GaugeQuantity::UtilizationRatio,
            GaugeQuantity::HeatPowerWatts,
            GaugeQuantity::FlowCubicMetresPerHour,
            GaugeQuantity::BatteryChargeRatio,
            GaugeQuantity::BatteryRuntimeSeconds,
        ] {
            let wire = serde_json::to_string(&q).unwrap();
            assert_eq!(wire, format!("\"{}\"", q.as_str()));
            assert_eq!(serde_json::from_str::<GaugeQuantity>(&wire).unwrap(), q);
        }
    }
}
