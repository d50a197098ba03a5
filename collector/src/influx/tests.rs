//! The sink's configuration, window, buffer and metrics.
#![allow(clippy::unwrap_used)]
use super::*;
use crate::config::CollectorConfig;
use crate::ingest::{Ingestor, Message};
use vigie_protocol::{Quality, Reading, SCHEMA_VERSION, TelemetryBatch};

const T0: i64 = 1_795_000_020_000 / MINUTE_MS * MINUTE_MS;

fn cfg(extra: &str) -> Result<Option<InfluxConfig>, String> {
    CollectorConfig::from_toml(&format!(
        "[influxdb]\nurl = \"http://127.0.0.1:9\"\nbucket = \"vigie\"\n{extra}"
    ))
    .map(|c| c.influxdb)
    .map_err(|e| e.to_string())
}

#[test]
fn the_section_is_optional_and_bad_settings_name_their_field() {
    assert_eq!(CollectorConfig::default().influxdb, None);
    let c = cfg("").unwrap().unwrap();
    assert_eq!(c.precision, Precision::Seconds);
    assert_eq!(c.lateness, Duration::from_secs(900));
    assert_eq!(c.max_buffer, 200_000);
    for (extra, field) in [
        ("batch_size = 0", "influxdb.batch_size"),
        ("max_buffer = 10\nbatch_size = 20", "influxdb.max_buffer"),
        ("lateness = \"30s\"", "influxdb.lateness"),
        ("precision = \"ns\"", "precision"),
        ("tocken_file = \"x\"", "tocken_file"),
        ("retry_initial = \"1m\"", "influxdb.retry_initial"),
    ] {
        let e = cfg(extra).unwrap_err();
        assert!(e.contains(field), "{extra}: {e}");
    }
    for url in [
        "ftp://h",
        "http://user:pw@h:8086",
        "http://h/?token=x",
        "nope",
    ] {
        let e =
            CollectorConfig::from_toml(&format!("[influxdb]\nurl = \"{url}\"\nbucket = \"b\"\n"))
                .unwrap_err()
                .to_string();
        assert!(e.contains("influxdb.url"), "{url}: {e}");
        assert!(!e.contains("pw@") && !e.contains("token=x"), "{e}");
    }
    // The token file is read at start, and its contents never shown.
    let c = cfg("token_file = \"/nonexistent/influx.token\"")
        .unwrap()
        .unwrap();
    let e = Sink::new(&c, SinkMetrics::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("/nonexistent/influx.token"), "{e}");
}

#[test]
fn the_window_reaches_back_lateness_or_to_the_last_read_bounded() {
    let c = cfg("lateness = \"15m\"\nbackfill = \"1h\"")
        .unwrap()
        .unwrap();
    let mut w = Window::new(&c);
    let now = T0 + 10 * MINUTE_MS + 30_000;
    let to = T0 + 10 * MINUTE_MS;
    // Start-up: the backfill.
    assert_eq!(w.range(now), (to - 60 * MINUTE_MS, to));
    // Then lateness before the last closed minute.
    w.watermark = Some(to);
    assert_eq!(
        w.range(now + MINUTE_MS),
        (to + MINUTE_MS - 15 * MINUTE_MS, to + MINUTE_MS)
    );
    // After a pause, back to where the last read ended, at most the backfill.
    w.watermark = Some(to - 30 * MINUTE_MS);
    assert_eq!(w.range(now), (to - 30 * MINUTE_MS, to));
    w.watermark = Some(to - 600 * MINUTE_MS);
    assert_eq!(w.range(now), (to - 60 * MINUTE_MS, to));
}

fn batch(seq: u64, sensor: &str, start: i64, energy: u64, cum: u64) -> Message {
    let b = TelemetryBatch {
        schema: SCHEMA_VERSION,
        site: "par1".into(),
        host: "node-01".into(),
        boot_id: "b".into(),
        epoch: 1_700_000_000_000,
        seq,
        readings: vec![Reading {
            sensor: sensor.into(),
            start_ms: start,
            end_ms: start + MINUTE_MS,
            energy_uj: energy,
            cumulative_uj: cum,
            power_w: None,
            quality: Quality::Measured,
        }],
        gauges: vec![],
        workloads: vec![],
    };
    Message {
        topic: "vigie/v1/par1/node-01/telemetry".into(),
        payload: serde_json::to_vec(&b).unwrap(),
    }
}

#[test]
fn a_full_buffer_refuses_the_newest_counted_and_reads_them_again() {
    let mut ing = Ingestor::new(
        crate::store::open_in_memory().unwrap(),
        vigie_protocol::Limits::default(),
    );
    let now = T0 + 10 * MINUTE_MS;
    let msgs: Vec<Message> = (0..5)
        .map(|i| {
            batch(
                i + 1,
                "rapl:package-0",
                T0 + i as i64 * MINUTE_MS,
                1_000,
                (i + 1) * 1_000,
            )
        })
        .collect();
    ing.ingest_group(&msgs, now).unwrap();
    let c = cfg("batch_size = 2\nmax_buffer = 3").unwrap().unwrap();
    let metrics = SinkMetrics::default();
    let mut sink = Sink::new(&c, metrics.clone()).unwrap();
    assert_eq!(sink.collect(ing.conn(), now).unwrap(), 3);
    assert_eq!(sink.pending(), 3);
    assert_eq!(metrics.dropped("buffer_full"), 2);
    // The two refused minutes are read again; the queued ones are not.
    let kept: Vec<i64> = sink
        .buffer
        .iter()
        .filter_map(|p| p.key.as_ref().map(|k| k.2))
        .collect();
    assert_eq!(kept, vec![T0, T0 + MINUTE_MS, T0 + 2 * MINUTE_MS]);
    sink.buffer.clear();
    assert_eq!(sink.collect(ing.conn(), now + 1_000).unwrap(), 2);
    assert_eq!(sink.collect(ing.conn(), now + 2_000).unwrap(), 0);
    // A minute past the lateness is no longer read.
    let later = T0 + 20 * MINUTE_MS;
    ing.ingest_group(
        &[batch(6, "rapl:package-0", later - MINUTE_MS, 5, 5_005)],
        later,
    )
    .unwrap();
    assert_eq!(sink.collect(ing.conn(), later).unwrap(), 1);
    assert!(
        sink.window
            .queued
            .keys()
            .all(|k| k.2 >= later - 15 * MINUTE_MS)
    );
}

#[test]
fn the_metrics_are_registered_with_every_reason() {
    let m = Metrics::new("FR", vigie_energy::GramsPerKwh(33.0));
    m.influx().drop_n("refused", 3);
    let text = m.encode_at(0);
    for line in [
        "vigie_influxdb_points_written_total 0",
        "vigie_influxdb_points_dropped_total{reason=\"buffer_full\"} 0",
        "vigie_influxdb_points_dropped_total{reason=\"refused\"} 3",
        "vigie_influxdb_write_errors_total 0",
        "vigie_influxdb_buffer_points 0",
    ] {
        assert!(text.lines().any(|l| l == line), "{line}\n{text}");
    }
}
