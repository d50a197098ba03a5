//! JSON payloads. Every struct refuses unknown fields: a typo or a newer
//! schema is a visible rejection, never silently dropped data.

use serde::{Deserialize, Serialize};

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
