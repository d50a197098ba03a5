//! The golden payloads under `golden/` are the wire contract. This test
//! fails when the types change without the files changing with them.
//! After an intended change, run with `VIGIE_BLESS=1` and review the diff.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use serde::{Serialize, de::DeserializeOwned};
use std::fmt::Debug;
use std::path::PathBuf;
use vigie_protocol::samples;

fn check<T: Serialize + DeserializeOwned + PartialEq + Debug>(file: &str, value: T) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("golden")
        .join(file);
    let want = serde_json::to_string_pretty(&value).unwrap() + "\n";
    if std::env::var_os("VIGIE_BLESS").is_some() {
        std::fs::write(&path, &want).unwrap();
    }
    let have = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with VIGIE_BLESS=1 to create)", path.display()));
    assert_eq!(have, want, "{file} and the types disagree");
    let parsed: T = serde_json::from_str(&have).unwrap();
    assert_eq!(parsed, value, "{file} does not parse back to the sample");
}

#[test]
fn telemetry() {
    check("telemetry-v1.json", samples::telemetry());
}

#[test]
fn telemetry_with_workloads() {
    check(
        "telemetry-workloads-v1.json",
        samples::telemetry_with_workloads(),
    );
}

#[test]
fn batches_without_workloads_keep_their_bytes() {
    // Older collectors refuse unknown fields: a batch with no split must
    // not name the field at all.
    let text = serde_json::to_string(&samples::telemetry()).unwrap();
    assert!(!text.contains("workloads"), "{text}");
}

#[test]
fn status() {
    check("status-online-v1.json", samples::status_online());
    check("status-offline-v1.json", samples::status_offline());
}

#[test]
fn meta() {
    check("meta-v1.json", samples::meta());
}

#[test]
fn inventories_without_scopes_still_decode_and_count_every_sensor() {
    // A v1 inventory written before `scope` existed.
    let mut old: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("golden/meta-v1.json"),
        )
        .unwrap(),
    )
    .unwrap();
    for s in old["sensors"].as_array_mut().unwrap() {
        s.as_object_mut().unwrap().remove("scope");
    }
    let meta: vigie_protocol::HostMeta = serde_json::from_value(old).unwrap();
    assert!(
        meta.sensors
            .iter()
            .all(|s| s.scope.is_none() && s.in_totals())
    );
    // The sample's outlet is a component of its PDU: not in totals.
    let sample = samples::meta();
    let outlet = sample
        .sensors
        .iter()
        .find(|s| s.name == "pdu-a1:outlet-7")
        .unwrap();
    assert!(!outlet.in_totals());
    assert!(
        sample
            .sensors
            .iter()
            .find(|s| s.name == "rapl:package-0")
            .unwrap()
            .in_totals()
    );
}

#[test]
fn counter_resets_travel_in_the_status_and_are_left_out_when_none() {
    let mut status = samples::status_online();
    let zero = serde_json::to_string(&status).unwrap();
    assert!(!zero.contains("counter_resets_total"), "{zero}");
    let spool = status.spool.as_mut().unwrap();
    spool.counter_resets_total = 2;
    let text = serde_json::to_string(&status).unwrap();
    assert!(text.contains(r#""counter_resets_total":2"#), "{text}");
    let back: vigie_protocol::StatusMessage = serde_json::from_str(&text).unwrap();
    assert_eq!(back, status);
}

#[test]
fn broker_trouble_travels_in_the_status_and_is_left_out_when_none() {
    let mut status = samples::status_online();
    let zero = serde_json::to_string(&status).unwrap();
    assert!(!zero.contains("broker_disconnects_total"), "{zero}");
    assert!(!zero.contains("publish_failures_total"), "{zero}");
    let spool = status.spool.as_mut().unwrap();
    spool.broker_disconnects_total = 4;
    spool.publish_failures_total = 5;
    let text = serde_json::to_string(&status).unwrap();
    assert!(text.contains(r#""broker_disconnects_total":4"#), "{text}");
    assert!(text.contains(r#""publish_failures_total":5"#), "{text}");
    let back: vigie_protocol::StatusMessage = serde_json::from_str(&text).unwrap();
    assert_eq!(back, status);
}

#[test]
fn signed_telemetry() {
    // The bytes an agent with the sample key publishes: compact JSON, then
    // the trailer. Ed25519 is deterministic, so the file is stable.
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("golden/telemetry-v1.signed");
    let want = samples::telemetry_signed();
    if std::env::var_os("VIGIE_BLESS").is_some() {
        std::fs::write(&path, &want).unwrap();
    }
    let have = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with VIGIE_BLESS=1 to create)", path.display()));
    assert_eq!(
        String::from_utf8_lossy(&have),
        String::from_utf8_lossy(&want),
        "telemetry-v1.signed and the types or the trailer format disagree"
    );
    let key = samples::signing_key().verifying_key();
    let json = vigie_protocol::verify_signed(&have, &[key]).unwrap();
    let batch: vigie_protocol::TelemetryBatch = serde_json::from_slice(json).unwrap();
    assert_eq!(batch, samples::telemetry());
    assert_eq!(
        have.len(),
        json.len() + vigie_protocol::SIGNATURE_TRAILER_LEN
    );
}
