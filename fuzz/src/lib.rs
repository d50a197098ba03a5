//! What `vigie_protocol::decode_telemetry` promises, checked on every input
//! the fuzz targets feed it. Shared by the targets in `fuzz_targets/`.

use std::collections::HashMap;
use vigie_protocol::{
    Limits, Rejection, SCHEMA_VERSION, TelemetryBatch, Topic, decode_telemetry,
    is_valid_host_or_site, is_valid_sensor,
};

/// The receiver's clock for every run: the golden batch ends 9 s before it,
/// so the seeds decode and the fuzzer starts from accepted inputs.
pub const NOW_MS: i64 = 1_795_000_020_000;

/// Limits small enough for the fuzzer to reach every bound with inputs of
/// a few KiB (libFuzzer's default `-max_len` is 4096).
pub fn limits() -> Limits {
    Limits {
        max_payload_bytes: 16 * 1024,
        max_readings: 4,
        ..Limits::default()
    }
}

/// Decodes `payload` received on `topic` and checks the result.
pub fn decode_and_check(topic: &Topic, payload: &[u8], limits: &Limits) {
    let result = decode_telemetry(topic, payload, NOW_MS, limits);
    // Decoding is a pure function of its arguments.
    assert_eq!(result, decode_telemetry(topic, payload, NOW_MS, limits));
    match result {
        Ok(batch) => check_accepted(topic, payload, &batch, limits),
        Err(r) => check_rejected(&r),
    }
}

/// Every rejection has a listed, stable label and a bounded description.
pub fn check_rejected(r: &Rejection) {
    assert!(
        Rejection::ALL_REASONS.contains(&r.reason()),
        "unlisted reason {}",
        r.reason()
    );
    // The description goes into a log line and the quarantine table.
    let text = r.to_string();
    assert!(text.len() < 1024, "description of {} bytes", text.len());
}

/// What an accepted batch guarantees to the ledger.
pub fn check_accepted(topic: &Topic, payload: &[u8], b: &TelemetryBatch, limits: &Limits) {
    assert!(payload.len() <= limits.max_payload_bytes);
    assert_eq!(b.schema, SCHEMA_VERSION);
    assert_eq!(b.host, topic.host, "payload host differs from the topic's");
    assert_eq!(b.site, topic.site, "payload site differs from the topic's");
    for id in [&b.host, &b.site, &b.boot_id] {
        assert!(is_valid_host_or_site(id).is_ok(), "bad identifier {id:?}");
    }
    assert!(!b.readings.is_empty(), "empty batch accepted");
    assert!(b.readings.len() <= limits.max_readings);

    // mW × ms = µJ: the power bound in integers, as wide as it gets.
    let max_power_mw = (limits.max_power_w * 1000.0) as u128;
    let mut last_end: HashMap<&str, i64> = HashMap::new();
    for r in &b.readings {
        assert!(
            is_valid_sensor(&r.sensor).is_ok(),
            "bad sensor {:?}",
            r.sensor
        );
        assert!(r.start_ms <= r.end_ms, "end before start");
        let duration = r
            .end_ms
            .checked_sub(r.start_ms)
            .expect("interval overflows");
        assert!(duration <= limits.max_interval_ms);
        assert!(r.start_ms >= limits.min_timestamp_ms);
        assert!(r.end_ms <= NOW_MS + limits.max_future_ms);
        assert!(
            u128::from(r.energy_uj) <= max_power_mw * duration as u128,
            "{} µJ over {duration} ms",
            r.energy_uj
        );
        assert!(r.cumulative_uj >= r.energy_uj);
        if let Some(p) = r.power_w {
            assert!(p.is_finite() && (0.0..=limits.max_power_w).contains(&p));
        }
        if let Some(end) = last_end.insert(&r.sensor, r.end_ms) {
            assert!(r.start_ms >= end, "overlapping readings of {}", r.sensor);
        }
    }

    // The wire format is JSON objects with named fields, as in the golden
    // files: no positional (array) encoding of a batch or a reading.
    let v: serde_json::Value = serde_json::from_slice(payload).expect("accepted but not JSON");
    assert!(v.is_object(), "batch accepted from a non-object");
    let readings = v["readings"].as_array().expect("readings not an array");
    assert!(
        readings.iter().all(serde_json::Value::is_object),
        "reading accepted from a non-object"
    );

    // What was accepted re-encodes to a payload accepted as the same batch.
    let again = serde_json::to_vec(b).expect("batch serializes");
    if again.len() <= limits.max_payload_bytes {
        let b2 = decode_telemetry(topic, &again, NOW_MS, limits).expect("re-encoded batch refused");
        // serde_json's float parsing may differ by one ULP between texts.
        let close = |x: Option<f64>, y: Option<f64>| match (x, y) {
            (Some(x), Some(y)) => (x - y).abs() <= x.abs() * 1e-15,
            (x, y) => x == y,
        };
        assert_eq!(b.readings.len(), b2.readings.len());
        for (r, r2) in b.readings.iter().zip(&b2.readings) {
            assert!(close(r.power_w, r2.power_w));
            let mut r2 = r2.clone();
            r2.power_w = r.power_w;
            assert_eq!(*r, r2);
        }
        assert_eq!(
            (&b.site, &b.host, &b.boot_id),
            (&b2.site, &b2.host, &b2.boot_id)
        );
        assert_eq!((b.schema, b.epoch, b.seq), (b2.schema, b2.epoch, b2.seq));
    }
}
