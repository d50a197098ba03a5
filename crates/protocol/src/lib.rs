//! vigie wire protocol, version 1.
//!
//! The agent and the collector both depend on this crate and on nothing else
//! of each other. It holds the MQTT topic layout, the JSON payload types and
//! their validation, and the signature trailer of signed messages
//! (`sign_payload`, `verify_signed`). It does no I/O and reads no clock: validation takes the
//! current time as an argument.
//!
//! Energies travel as integer microjoules (`*_uj`) so that totals are exact;
//! times as integer Unix milliseconds (`*_ms`).

mod ids;
mod payload;
mod sign;
mod topic;
mod validate;

pub use ids::{IdError, is_valid_host_or_site, is_valid_sensor};
pub use payload::{
    ActivityBasis, EnergyScope, Gauge, GaugeQuantity, GpuMeta, HostMeta, Method, Quality,
    RackPosition, Reading, ScopeRole, SensorMeta, SpoolHealth, Status, StatusMessage,
    TelemetryBatch, Topology, WorkloadEnergy, WorkloadKind, WorkloadSplit,
};
pub use sign::{
    SIGNATURE_SCHEME, SIGNATURE_TRAILER_LEN, Split, key_hex, parse_key_hex, sign_payload,
    split_signed, verify_signed,
};
pub use topic::{Topic, TopicError, TopicKind};
pub use validate::{
    DEFAULT_MAX_MINUTE_BUCKETS, DEFAULT_MAX_WORKLOADS, Limits, MAX_LABEL_KEY_BYTES,
    MAX_LABEL_VALUE_BYTES, MAX_WORKLOAD_ID_BYTES, MAX_WORKLOAD_LABELS, Rejection, decode_telemetry,
    minute_buckets,
};

/// Version of the payload schema this crate reads and writes.
pub const SCHEMA_VERSION: u32 = 1;

/// Prefix of every vigie topic.
pub const TOPIC_PREFIX: &str = "vigie/v1";

pub mod samples;
