//! Sample payloads, the same as the golden files under `golden/`.
//! A test fails when the types and the files disagree.

use crate::{
    ActivityBasis, EnergyScope, Gauge, GaugeQuantity, GpuMeta, HostMeta, Method, Quality,
    RackPosition, Reading, SCHEMA_VERSION, ScopeRole, SensorMeta, SpoolHealth, Status,
    StatusMessage, TelemetryBatch, Topology, WorkloadEnergy, WorkloadKind, WorkloadSplit,
};
use std::collections::BTreeMap;

/// A two-sensor telemetry batch.
pub fn telemetry() -> TelemetryBatch {
    TelemetryBatch {
        schema: SCHEMA_VERSION,
        site: "par1".into(),
        host: "node-01".into(),
        boot_id: "2f1c7f0e-8c1e-4d55-9a57-0c6d3f6f2b11".into(),
        epoch: 1_795_000_000_000,
        seq: 42,
        readings: vec![
            Reading {
                sensor: "rapl:package-0".into(),
                start_ms: 1_795_000_010_000,
                end_ms: 1_795_000_011_000,
                energy_uj: 85_250_113,
                cumulative_uj: 3_566_102_774,
                power_w: Some(85.250113),
                quality: Quality::Measured,
            },
            Reading {
                sensor: "rapl:dram-0".into(),
                start_ms: 1_795_000_010_000,
                end_ms: 1_795_000_011_000,
                energy_uj: 9_870_004,
                cumulative_uj: 411_004_370,
                power_w: None,
                quality: Quality::Measured,
            },
        ],
        gauges: vec![Gauge {
            sensor: "nvml:gpu-0".into(),
            quantity: GaugeQuantity::TemperatureCelsius,
            value: 61.0,
            at_ms: 1_795_000_011_000,
        }],
        workloads: Vec::new(),
    }
}

/// The two-sensor batch with its package energy split among workloads
/// (`golden/telemetry-workloads-v1.json`): a pod, a service and a Slurm
/// job by CPU time, two more summed into `other`, 20 W idle.
pub fn telemetry_with_workloads() -> TelemetryBatch {
    let labels = |kv: &[(&str, &str)]| -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    TelemetryBatch {
        workloads: vec![WorkloadSplit {
            sensor: "rapl:package-0".into(),
            start_ms: 1_795_000_010_000,
            end_ms: 1_795_000_011_000,
            energy_uj: 85_250_113,
            idle_uj: 20_000_000,
            unattributed_uj: 1_250_113,
            other_uj: 4_000_000,
            other_count: 2,
            quality: Quality::Measured,
            basis: ActivityBasis::CpuTime,
            workloads: vec![
                WorkloadEnergy {
                    kind: WorkloadKind::Pod,
                    id: "7f3c2a51-94d2-4c8e-b1a0-3e5d2c9f0a11".into(),
                    labels: labels(&[("namespace", "shop"), ("pod", "cart-5d9f7")]),
                    energy_uj: 30_000_000,
                },
                WorkloadEnergy {
                    kind: WorkloadKind::SlurmJob,
                    id: "1234".into(),
                    labels: labels(&[("user", "1001")]),
                    energy_uj: 20_000_000,
                },
                WorkloadEnergy {
                    kind: WorkloadKind::Service,
                    id: "postgresql.service".into(),
                    labels: BTreeMap::new(),
                    energy_uj: 10_000_000,
                },
            ],
        }],
        ..telemetry()
    }
}

/// The retained online status.
pub fn status_online() -> StatusMessage {
    StatusMessage {
        schema: SCHEMA_VERSION,
        state: Status::Online,
        epoch: Some(1_795_000_000_000),
        agent_version: Some("0.1.0".into()),
        since_ms: Some(1_795_000_000_000),
        spool: Some(SpoolHealth {
            batches: 3,
            oldest_ms: Some(1_794_999_970_000),
            merged_total: 0,
            dropped_total: 0,
            counter_resets_total: 0,
            spool_errors_total: 0,
            in_memory: 0,
            unbridged_total: 0,
            unbridged_ms: 0,
            broker_disconnects_total: 0,
            publish_failures_total: 0,
            dropped_uj_total: 0,
        }),
    }
}

/// The last will.
pub fn status_offline() -> StatusMessage {
    StatusMessage {
        schema: SCHEMA_VERSION,
        state: Status::Offline,
        epoch: None,
        agent_version: None,
        since_ms: None,
        spool: None,
    }
}

/// A host inventory.
pub fn meta() -> HostMeta {
    HostMeta {
        schema: SCHEMA_VERSION,
        site: "par1".into(),
        host: "node-01".into(),
        agent_version: "0.1.0".into(),
        cpu_model: "Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz".into(),
        sockets: 2,
        logical_cpus: 128,
        memory_bytes: 549_755_813_888,
        gpus: vec![GpuMeta {
            index: 0,
            name: "NVIDIA A100-SXM4-40GB".into(),
            uuid: "GPU-5b2c1f9e-0000-4a4b-9c7d-000000000000".into(),
        }],
        sensors: vec![
            SensorMeta {
                name: "rapl:package-0".into(),
                kind: "rapl".into(),
                domain: "package".into(),
                source: "/sys/class/powercap/intel-rapl:0".into(),
                max_range_uj: Some(262_143_328_850),
                method: None,
                topology: None,
                scope: None,
            },
            SensorMeta {
                name: "pdu-a1:outlet-7".into(),
                kind: "snmp".into(),
                domain: "outlet".into(),
                source: "snmp://10.0.0.21".into(),
                max_range_uj: None,
                method: Some(Method::Counter),
                topology: Some(Topology {
                    room: Some("hall-a".into()),
                    rack: Some("r12".into()),
                    pdu: Some("pdu-a1".into()),
                    outlet: Some("7".into()),
                    feeds: Some("node-01".into()),
                }),
                scope: Some(EnergyScope {
                    scope: "pdu-a1".into(),
                    role: ScopeRole::Component,
                    of: Some("pdu-a1:device".into()),
                }),
            },
        ],
        rack: Some(RackPosition {
            room: "hall-a".into(),
            rack: "r12".into(),
            unit: Some(20),
        }),
    }
}

/// The fixed key the signed golden file is signed with (a test key: its
/// seed is public, never use it).
pub fn signing_key() -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[7u8; 32])
}

/// The sample batch as an agent with [`signing_key`] publishes it: its
/// compact JSON and the signature trailer (`golden/telemetry-v1.signed`).
pub fn telemetry_signed() -> Vec<u8> {
    let json = serde_json::to_vec(&telemetry()).unwrap_or_default();
    crate::sign_payload(&signing_key(), &json)
}
