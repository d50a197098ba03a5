//! Hostile input end to end: a real Mosquitto, the real collector, and a
//! publisher ("mallory") sending some forty kinds of bad telemetry, status
//! and meta messages, each followed by a good batch from a legitimate host.
//!
//! Each kind must be refused with its own reason, seen from outside: an
//! exact +1 on `vigie_ingest_rejected_total{reason}` in `/metrics` and
//! one more `message rejected` log line with that reason. The good batches
//! must all reach the ledger, to the µJ, and the collector must still
//! answer at the end. Every reason is exercised.
//!
//! The collector has keys for good-01 and mallory (`[ingest.keys]`), so
//! every message is signed by its topic host's key unless the case is
//! about signatures: an unsigned batch, one signed by another host's key
//! (a forged host, issue 10.5's erase attack), a host without a key, a
//! changed byte, a malformed trailer, and a batch whose key the ledger
//! holds with other content (`conflicting_duplicate`).
//!
//! Some inputs never reach the collector: the MQTT client library and the
//! broker refuse wildcard and malformed topic names, and topics outside
//! `vigie/v1/{site}/{host}/{kind}` are routed by the broker but match none
//! of the collector's subscriptions. `broker_side` checks those at the
//! broker; the final exact counter totals show none of them leaked through.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use ed25519_dalek::SigningKey;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;
use vigie_e2e::client::TestClient;
use vigie_e2e::{Proc, binary};
use vigie_protocol::{
    ActivityBasis, Quality, Reading, Rejection, SCHEMA_VERSION, SIGNATURE_TRAILER_LEN,
    TelemetryBatch, WorkloadEnergy, WorkloadKind, WorkloadSplit, key_hex, samples, sign_payload,
};
use vigie_testkit::{Mosquitto, free_addr, http_get, wait_for};

/// The collector's limits in this test: small, so that the boundary
/// cases stay small messages.
const MAX_PAYLOAD: usize = 16 * 1024;
const MAX_READINGS: usize = 8;
const MAX_MINUTE_BUCKETS: u64 = 50_000;
/// Workload lines per message: a split and five workloads.
const MAX_WORKLOADS: usize = 6;
/// good-01 reaches it exactly: rapl:package-0, rapl:dram-0 and gpu:0 to 7.
const MAX_SENSORS: usize = 10;
/// good-01 is the one host admitted.
const MAX_HOSTS: usize = 1;
/// 10 MW (the default `max_power_w`) over 1 s, in µJ: the most one
/// reading of one second may carry.
const MAX_UJ_PER_S: u64 = 10_000_000 * 1_000_000;

/// good-01's signing key (test seeds: public, never use them).
fn good_key() -> SigningKey {
    SigningKey::from_bytes(&[1u8; 32])
}

/// mallory's: a registered host, so its messages reach validation.
fn mallory_key() -> SigningKey {
    SigningKey::from_bytes(&[2u8; 32])
}

/// The key of topic `topic`'s host (mallory's for any other).
fn key_of_topic(topic: &str) -> SigningKey {
    match topic.split('/').nth(3) {
        Some("good-01") => good_key(),
        _ => mallory_key(),
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn reading(sensor: &str, start_ms: i64, duration_ms: i64, energy_uj: u64) -> Reading {
    Reading {
        sensor: sensor.into(),
        start_ms,
        end_ms: start_ms + duration_ms,
        energy_uj,
        cumulative_uj: energy_uj.saturating_mul(10),
        power_w: None,
        quality: Quality::Measured,
    }
}

fn batch(host: &str, seq: u64, readings: Vec<Reading>) -> TelemetryBatch {
    TelemetryBatch {
        schema: SCHEMA_VERSION,
        site: "e2e".into(),
        host: host.into(),
        boot_id: format!("boot-{host}"),
        epoch: 1,
        seq,
        readings,
        gauges: Vec::new(),
        workloads: Vec::new(),
    }
}

/// `r`'s energy split evenly among `n` services, exact: the odd µJ idle.
fn split_of(r: &Reading, n: usize) -> WorkloadSplit {
    let each = r.energy_uj / n as u64;
    WorkloadSplit {
        sensor: r.sensor.clone(),
        start_ms: r.start_ms,
        end_ms: r.end_ms,
        energy_uj: r.energy_uj,
        idle_uj: r.energy_uj - each * n as u64,
        unattributed_uj: 0,
        other_uj: 0,
        other_count: 0,
        quality: r.quality,
        basis: ActivityBasis::CpuTime,
        workloads: (0..n)
            .map(|i| WorkloadEnergy {
                kind: WorkloadKind::Service,
                id: format!("s{i}.service"),
                labels: BTreeMap::new(),
                energy_uj: each,
            })
            .collect(),
    }
}

fn to_json(b: &TelemetryBatch) -> Vec<u8> {
    serde_json::to_vec(b).unwrap()
}

/// The JSON of `b`, edited as a tree (for what the types cannot hold).
fn edit(b: &TelemetryBatch, f: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut v = serde_json::to_value(b).unwrap();
    f(&mut v);
    serde_json::to_vec(&v).unwrap()
}

/// The JSON of `b` with the first `from` replaced by `to`, as bytes.
fn replace(b: &TelemetryBatch, from: &str, to: &[u8]) -> Vec<u8> {
    let text = to_json(b);
    let at = text
        .windows(from.len())
        .position(|w| w == from.as_bytes())
        .unwrap_or_else(|| panic!("{from} not in {}", String::from_utf8_lossy(&text)));
    [&text[..at], to, &text[at + from.len()..]].concat()
}

/// `vigie_ingest_rejected_total` by reason, from `/metrics`.
fn rejected(http: SocketAddr) -> Option<BTreeMap<String, u64>> {
    let body = http_get(http, "/metrics").ok()?.body;
    let mut out = BTreeMap::new();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("vigie_ingest_rejected_total{reason=\"") {
            let (reason, value) = rest.split_once("\"} ")?;
            out.insert(reason.to_owned(), value.trim().parse().ok()?);
        }
    }
    Some(out)
}

/// `total.energy_uj` of `/api/v1/energy?group_by=host`, and the hosts in it.
fn ledger(http: SocketAddr) -> Option<(u64, Vec<String>)> {
    let v = http_get(http, "/api/v1/energy?group_by=host")
        .ok()?
        .json()
        .ok()?;
    let hosts = v["groups"]
        .as_array()?
        .iter()
        .map(|g| g["host"].as_str().map(str::to_owned))
        .collect::<Option<_>>()?;
    Some((v["total"]["energy_uj"].as_u64()?, hosts))
}

/// The collector's `message rejected` log lines with `reason`.
fn logged(log: &Path, reason: &str) -> Vec<String> {
    let needle = format!("reason=\"{reason}\"");
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("message rejected") && l.contains(&needle))
        .map(str::to_owned)
        .collect()
}

/// One hostile message and the reason it must be refused with.
struct Hostile {
    what: &'static str,
    topic: String,
    payload: Vec<u8>,
    reason: &'static str,
    /// Part of the detail its log line must give: pins down why.
    detail: String,
    /// Sent as given; otherwise signed by its topic host's key.
    raw: bool,
}

/// The hostile kinds that reach the collector. `t0` is half an hour in
/// the past, so that timestamps are otherwise plausible.
fn hostile_kinds(t0: i64) -> Vec<Hostile> {
    const TOPIC: &str = "vigie/v1/e2e/mallory/telemetry";
    // A batch mallory could legitimately send; each kind breaks one thing.
    let base = batch(
        "mallory",
        1,
        vec![reading("rapl:package-0", t0, 1_000, 1_000_000)],
    );
    let with = |f: &dyn Fn(&mut TelemetryBatch)| {
        let mut b = base.clone();
        f(&mut b);
        to_json(&b)
    };
    let on = |topic: &str, host: &str| {
        let mut b = base.clone();
        b.host = host.into();
        (topic.to_owned(), to_json(&b))
    };
    let long_non_ascii = "é".repeat(150);
    let positional = format!(
        "[1,\"e2e\",\"mallory\",\"boot-mallory\",1,1,[[\"rapl:package-0\",{t0},{},1000000,10000000,null,\"measured\"]]]",
        t0 + 1_000
    );
    let nested = {
        let text = String::from_utf8(to_json(&base)).unwrap();
        let deep = format!("{}{}", "[".repeat(7_000), "]".repeat(7_000));
        let at = text.find("\"readings\":[").unwrap() + "\"readings\":[".len();
        format!("{}{deep},{}", &text[..at], &text[at..])
    };
    let mut meta = samples::meta();
    meta.site = "e2e".into();
    meta.host = "good-01".into();

    let kinds = vec![
        // Not JSON.
        (
            "truncated JSON",
            TOPIC.into(),
            to_json(&base)[..60].to_vec(),
            "malformed",
            "EOF while parsing a string",
        ),
        (
            "binary garbage",
            TOPIC.into(),
            b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe\x00".to_vec(),
            "malformed",
            "expected value at line 1 column 1",
        ),
        // An empty message is how MQTT clears a retained one; telemetry is
        // never retained, so on this topic it is refused.
        (
            "empty payload",
            TOPIC.into(),
            Vec::new(),
            "malformed",
            "EOF while parsing a value at line 1 column 0",
        ),
        (
            "invalid UTF-8 inside a string",
            TOPIC.into(),
            replace(&base, "mallory", b"mal\xffory"),
            "malformed",
            "invalid unicode code point",
        ),
        // JSON, but not a batch.
        (
            "wrong type (seq as a string)",
            TOPIC.into(),
            edit(&base, |v| v["seq"] = json!("1")),
            "invalid_field",
            "invalid type: string",
        ),
        (
            "unknown field",
            TOPIC.into(),
            edit(&base, |v| v["admin"] = json!(true)),
            "invalid_field",
            "unknown field `admin`",
        ),
        (
            "missing field",
            TOPIC.into(),
            edit(&base, |v| {
                v.as_object_mut().unwrap().remove("boot_id");
            }),
            "invalid_field",
            "missing field `boot_id`",
        ),
        (
            "negative energy",
            TOPIC.into(),
            edit(&base, |v| v["readings"][0]["energy_uj"] = json!(-5_000_000)),
            "invalid_field",
            "invalid value: integer `-5000000`, expected u64",
        ),
        (
            "energy beyond u64 (2^64)",
            TOPIC.into(),
            replace(
                &base,
                "\"energy_uj\":1000000",
                b"\"energy_uj\":18446744073709551616",
            ),
            "invalid_field",
            "invalid type: floating point",
        ),
        (
            "duplicated JSON key (seq twice)",
            TOPIC.into(),
            replace(&base, "{", b"{\"seq\":999,"),
            "invalid_field",
            "duplicate field `seq`",
        ),
        // Was accepted: serde's derived structs read a JSON array as the
        // fields in order. Fixed in vigie-protocol (objects only).
        (
            "positional (array) encoding",
            TOPIC.into(),
            positional.into_bytes(),
            "invalid_field",
            "invalid type: sequence, expected a JSON object at line 1 column 0",
        ),
        // Refused at the first level by typed decoding: no deep recursion.
        (
            "deeply nested arrays",
            TOPIC.into(),
            nested.into_bytes(),
            "invalid_field",
            "invalid type: sequence, expected a JSON object at line 1 column 97",
        ),
        // Panicked the ledger writer (detail cut inside a character), which
        // stopped all ingestion while /healthz still answered. Fixed.
        (
            "long non-ASCII field name",
            TOPIC.into(),
            edit(&base, |v| v[long_non_ascii.as_str()] = json!(1)),
            "invalid_field",
            "unknown field `ééé",
        ),
        (
            "long non-ASCII field name in meta",
            "vigie/v1/e2e/mallory/meta".into(),
            format!("{{\"{long_non_ascii}\":1}}").into_bytes(),
            "invalid_field",
            "unknown field `ééé",
        ),
        (
            "status with an unknown state",
            "vigie/v1/e2e/mallory/status".into(),
            br#"{"schema":1,"state":"pwned"}"#.to_vec(),
            "invalid_field",
            "unknown variant `pwned`",
        ),
        // Size.
        (
            "huge payload (1 MiB)",
            TOPIC.into(),
            [to_json(&base), vec![b' '; 1 << 20]].concat(),
            "oversized",
            "exceeds the 16384-byte limit",
        ),
        (
            "one byte over max_payload_bytes",
            TOPIC.into(),
            // Signed, it is one byte over.
            pad(to_json(&base), MAX_PAYLOAD + 1 - SIGNATURE_TRAILER_LEN),
            "oversized",
            "payload of 16385 bytes",
        ),
        (
            "too many readings (max_readings + 1)",
            TOPIC.into(),
            with(&|b| {
                b.readings = (0..=MAX_READINGS)
                    .map(|i| reading(&format!("gpu:{i}"), t0, 1_000, 1_000))
                    .collect()
            }),
            "too_many_readings",
            "batch has 9 readings, limit 8",
        ),
        (
            "no readings",
            TOPIC.into(),
            with(&|b| b.readings.clear()),
            "empty_batch",
            "batch has no readings",
        ),
        // Versions.
        (
            "unknown schema version",
            TOPIC.into(),
            with(&|b| b.schema = 2),
            "unsupported_schema",
            "unsupported schema version 2 ",
        ),
        (
            "future schema with new fields",
            TOPIC.into(),
            edit(&base, |v| {
                v["schema"] = json!(99);
                v["compression"] = json!("zstd");
            }),
            "unsupported_schema",
            "unsupported schema version 99 ",
        ),
        // Identity. A sender naming its victim in both topic and payload is
        // not the collector's to catch: the broker's ACL, with a credential
        // per host, confines each agent to its own topics
        // (deploy/mosquitto/).
        (
            "impersonated host (payload host is another host)",
            TOPIC.into(),
            with(&|b| b.host = "good-01".into()),
            "host_mismatch",
            r#"payload host \"good-01\" differs from topic host \"mallory\""#,
        ),
        (
            "impersonated host in meta",
            "vigie/v1/e2e/mallory/meta".into(),
            serde_json::to_vec(&meta).unwrap(),
            "host_mismatch",
            r#"payload host \"good-01\" differs from topic host \"mallory\""#,
        ),
        (
            "wrong site",
            TOPIC.into(),
            with(&|b| b.site = "par1".into()),
            "site_mismatch",
            r#"payload site \"par1\" differs from topic site \"e2e\""#,
        ),
        (
            "MQTT wildcard as the payload host",
            TOPIC.into(),
            with(&|b| b.host = "+".into()),
            "bad_identifier",
            "bad identifier in host: identifier contains a forbidden character '+'",
        ),
        (
            "path traversal in a sensor name",
            TOPIC.into(),
            with(&|b| b.readings[0].sensor = "../../etc/passwd".into()),
            "bad_identifier",
            "bad identifier in sensor: identifier contains a forbidden character '/'",
        ),
        (
            "boot id with spaces",
            TOPIC.into(),
            with(&|b| b.boot_id = "x y".into()),
            "bad_identifier",
            "bad identifier in boot_id: identifier contains a forbidden character ' '",
        ),
        // Topic injection that MQTT allows and the `+` level matches.
        {
            let (t, p) = on("vigie/v1/e2e//telemetry", "");
            (
                "empty host level",
                t,
                p,
                "bad_topic",
                "bad topic: bad site or host in topic: identifier length must be 1..=64, got 0",
            )
        },
        {
            let (t, p) = on("vigie/v1//mallory/telemetry", "mallory");
            (
                "empty site level",
                t,
                p,
                "bad_topic",
                "bad topic: bad site or host in topic: identifier length must be 1..=64, got 0",
            )
        },
        {
            let (t, p) = on("vigie/v1/e2e/hôte-01/telemetry", "hôte-01");
            (
                "non-ASCII host in the topic",
                t,
                p,
                "bad_topic",
                "bad topic: bad site or host in topic: identifier contains a forbidden character 'ô'",
            )
        },
        {
            let (t, p) = on("vigie/v1/e2e/x';DROP TABLE batches;--/telemetry", "x");
            (
                "SQL in the topic's host level",
                t,
                p,
                "bad_topic",
                "bad topic: bad site or host in topic: identifier contains a forbidden character",
            )
        },
        {
            // Mosquitto refuses C0/C1 controls in topics (see broker_side)
            // but lets U+2028 LINE SEPARATOR through; the collector logs
            // the topic escaped.
            let (t, p) = on("vigie/v1/e2e/x\u{2028}forged/telemetry", "x");
            (
                "line separator in the topic",
                t,
                p,
                "bad_topic",
                "bad topic: bad site or host in topic: identifier contains a forbidden character",
            )
        },
        {
            let host = "h".repeat(65);
            let (t, p) = on(&format!("vigie/v1/e2e/{host}/telemetry"), &host);
            (
                "65-character host in the topic",
                t,
                p,
                "bad_topic",
                "bad topic: bad site or host in topic: identifier length must be 1..=64, got 65",
            )
        },
        // Time.
        (
            "end before start",
            TOPIC.into(),
            with(&|b| b.readings[0].end_ms = b.readings[0].start_ms - 1),
            "bad_interval",
            "reading 0: bad interval",
        ),
        (
            "interval longer than 7 days",
            TOPIC.into(),
            with(&|b| b.readings[0].start_ms -= 8 * 24 * 3_600_000),
            "bad_interval",
            "reading 0: bad interval",
        ),
        (
            "timestamps an hour in the future",
            TOPIC.into(),
            with(&|b| {
                b.readings[0].start_ms = now_ms() + 3_600_000;
                b.readings[0].end_ms = b.readings[0].start_ms + 1_000;
            }),
            "future_timestamp",
            "ms after now",
        ),
        (
            "timestamps in 1970",
            TOPIC.into(),
            with(&|b| {
                b.readings[0].start_ms = 1_000;
                b.readings[0].end_ms = 2_000;
            }),
            "ancient_timestamp",
            "reading 0: starts at 1000, before 1577836800000",
        ),
        (
            "same reading twice in one batch",
            TOPIC.into(),
            with(&|b| b.readings.push(b.readings[0].clone())),
            "overlapping_readings",
            r#"reading 1: sensor \"rapl:package-0\" overlaps"#,
        ),
        (
            "overlapping intervals of one sensor",
            TOPIC.into(),
            with(&|b| {
                b.readings
                    .push(reading("rapl:package-0", t0 + 500, 1_000, 1))
            }),
            "overlapping_readings",
            r#"reading 1: sensor \"rapl:package-0\" overlaps"#,
        ),
        // Energy.
        (
            "absurd energy (1 µJ above max_power_w over 1 s)",
            TOPIC.into(),
            with(&|b| b.readings[0] = reading("rapl:package-0", t0, 1_000, MAX_UJ_PER_S + 1)),
            "energy_out_of_range",
            "reading 0: 10000000000001 µJ over 1000 ms exceeds 10000000 W",
        ),
        (
            "energy over an empty interval",
            TOPIC.into(),
            with(&|b| b.readings[0].end_ms = b.readings[0].start_ms),
            "energy_out_of_range",
            "reading 0: 1000000 µJ over 0 ms exceeds 10000000 W",
        ),
        (
            "cumulative energy below the interval's",
            TOPIC.into(),
            with(&|b| b.readings[0].cumulative_uj = 1),
            "cumulative_inconsistent",
            "reading 0: cumulative 1 µJ below interval energy 1000000 µJ",
        ),
        (
            "negative power",
            TOPIC.into(),
            with(&|b| b.readings[0].power_w = Some(-1.0)),
            "power_out_of_range",
            "reading 0: power -1 W out of range",
        ),
        (
            "power above max_power_w",
            TOPIC.into(),
            with(&|b| b.readings[0].power_w = Some(2e7)),
            "power_out_of_range",
            "reading 0: power 20000000 W out of range",
        ),
        // A valid status from one more host: 20,000 new names once made
        // 20,000 hosts and an 805 KB /metrics.
        (
            "a status from a new host past max_hosts",
            "vigie/v1/e2e/intruder/status".into(),
            serde_json::to_vec(&samples::status_online()).unwrap(),
            "too_many_hosts",
            r#"host \"intruder\" is new and the collector already knows 1 hosts, limit 1"#,
        ),
        (
            "a small batch of week-long readings (19 M minute rows once)",
            TOPIC.into(),
            to_json(&batch(
                "mallory",
                2,
                (0..6)
                    .map(|i| reading(&format!("week-{i}"), t0 - 7 * 86_400_000, 7 * 86_400_000, 1))
                    .collect(),
            )),
            "too_much_work",
            "readings touch 60480 minute buckets; at most 50000 per batch",
        ),
        (
            "an epoch above the ledger's integer range",
            TOPIC.into(),
            with(&|b| b.epoch = 1 << 63),
            "invalid_field",
            "epoch 9223372036854775808 is above 9223372036854775807",
        ),
        // Energy per workload.
        (
            "more workload lines than max_workloads",
            TOPIC.into(),
            with(&|b| {
                b.workloads = vec![split_of(&b.readings[0], MAX_WORKLOADS)];
            }),
            "too_many_workloads",
            "batch has 7 workload lines, limit 6",
        ),
        (
            "a workload with an empty id",
            TOPIC.into(),
            with(&|b| {
                let mut s = split_of(&b.readings[0], 2);
                s.workloads[1].id.clear();
                b.workloads = vec![s];
            }),
            "bad_workload",
            "workload split 0: workload id is empty",
        ),
        (
            "workload energies that do not add up to the reading split",
            TOPIC.into(),
            with(&|b| {
                let mut s = split_of(&b.readings[0], 2);
                s.idle_uj += 1;
                b.workloads = vec![s];
            }),
            "workload_sum_mismatch",
            "add up to 1000001 µJ, not the 1000000 µJ split",
        ),
        // Cardinality. Last, so that good-01's batches before it have
        // brought it to exactly max_sensors_per_host (all accepted).
        (
            "a new sensor name for a host at max_sensors_per_host",
            "vigie/v1/e2e/good-01/telemetry".into(),
            to_json(&batch(
                "good-01",
                1_000_000,
                vec![reading("gpu:99", t0, 1_000, 1_000)],
            )),
            "too_many_sensors",
            r#"host \"good-01\" has 10 sensors; this batch adds 1 more, limit 10"#,
        ),
    ];
    let mut kinds: Vec<Hostile> = kinds
        .into_iter()
        .map(|(what, topic, payload, reason, detail)| Hostile {
            what,
            topic,
            payload,
            reason,
            detail: detail.to_owned(),
            raw: false,
        })
        .collect();
    // Signatures, sent as they are. Before the cardinality case, which
    // stays last; the erase attack aims at the sequence number of the good
    // batch sent after that last case.
    let erased_seq = (kinds.len() + 7) as u64;
    let good_topic = "vigie/v1/e2e/good-01/telemetry";
    let one_uj = |seq| {
        to_json(&batch(
            "good-01",
            seq,
            vec![reading("rapl:package-0", t0 + seq as i64 * 1_000, 1_000, 1)],
        ))
    };
    let signed_base = sign_payload(&mallory_key(), &to_json(&base));
    let mut changed = signed_base.clone();
    let at = changed.windows(7).position(|w| w == b"1000000").unwrap();
    changed[at] = b'9';
    let mut eve = base.clone();
    eve.host = "eve".into();
    let eve_key = SigningKey::from_bytes(&[3u8; 32]);
    let signatures: Vec<(&'static str, String, Vec<u8>, &'static str, String)> = vec![
        (
            "an unsigned batch (an old agent, or anyone on the broker)",
            TOPIC.into(),
            to_json(&base),
            "unsigned",
            "unsigned message: this collector requires signed messages".into(),
        ),
        (
            "another host's name and topic, signed with mallory's key",
            good_topic.into(),
            sign_payload(&mallory_key(), &one_uj(900)),
            "unknown_key",
            "not registered for this topic's host (1 key(s) registered)".into(),
        ),
        (
            "issue 10.5's erase attack: good-01's epoch and a coming sequence number, 1 µJ, unsigned",
            good_topic.into(),
            one_uj(erased_seq),
            "unsigned",
            "unsigned message".into(),
        ),
        (
            "the same, signed with mallory's key",
            good_topic.into(),
            sign_payload(&mallory_key(), &one_uj(erased_seq)),
            "unknown_key",
            format!(
                "signed with key {}",
                key_hex(&mallory_key().verifying_key())
            ),
        ),
        (
            "a host with no key registered",
            "vigie/v1/e2e/eve/telemetry".into(),
            sign_payload(&eve_key, &to_json(&eve)),
            "unknown_key",
            "(0 key(s) registered)".into(),
        ),
        (
            "one byte of a signed batch changed",
            TOPIC.into(),
            changed,
            "bad_signature",
            "signature does not verify".into(),
        ),
        (
            "a malformed signature trailer",
            TOPIC.into(),
            [&to_json(&base)[..], b"\nvigie-ed25519 00 11\n"].concat(),
            "bad_signature",
            "malformed vigie-ed25519 trailer".into(),
        ),
        (
            "good-01's first batch again with other content, signed with its key (a broken agent)",
            good_topic.into(),
            sign_payload(
                &good_key(),
                &to_json(&batch(
                    "good-01",
                    0,
                    vec![reading("rapl:package-0", t0, 1_000, 1)],
                )),
            ),
            "conflicting_duplicate",
            "(good-01, epoch 1, seq 0) is already in the ledger with other content".into(),
        ),
    ];
    assert_eq!(signatures.len(), 8);
    let last = kinds.pop().unwrap();
    kinds.extend(
        signatures
            .into_iter()
            .map(|(what, topic, payload, reason, detail)| Hostile {
                what,
                topic,
                payload,
                reason,
                detail,
                raw: true,
            }),
    );
    kinds.push(last);
    assert_eq!(kinds.len() as u64 - 1, erased_seq);
    kinds
}

/// `json` followed by spaces up to `len` bytes (still the same JSON).
fn pad(mut json: Vec<u8>, len: usize) -> Vec<u8> {
    assert!(json.len() <= len);
    json.resize(len, b' ');
    json
}

/// The legitimate host's `seq`-th batch and its energy. A few sit exactly
/// on a limit and must be accepted.
fn good(seq: u64, t0: i64) -> (Vec<u8>, u64) {
    let start = t0 + seq as i64 * 1_000;
    let b = match seq {
        0 => batch(
            "good-01",
            seq,
            vec![reading("rapl:package-0", start, 1_000, MAX_UJ_PER_S)],
        ),
        1 => batch(
            "good-01",
            seq,
            (0..MAX_READINGS)
                .map(|i| reading(&format!("gpu:{i}"), start, 1_000, 3_000_000 + i as u64))
                .collect(),
        ),
        _ => batch(
            "good-01",
            seq,
            vec![
                reading("rapl:package-0", start, 1_000, 85_250_113 + seq * 1_001),
                reading("rapl:dram-0", start, 1_000, 9_870_004 + seq * 7),
            ],
        ),
    };
    let energy = b.readings.iter().map(|r| r.energy_uj).sum();
    let json = if seq == 2 {
        // Exactly max_payload_bytes once signed.
        pad(to_json(&b), MAX_PAYLOAD - SIGNATURE_TRAILER_LEN)
    } else {
        to_json(&b)
    };
    (sign_payload(&good_key(), &json), energy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_inputs_are_refused_with_their_reason_while_good_batches_flow() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let broker = Mosquitto::start().unwrap();
    let port = broker.port();
    let http = free_addr().unwrap();

    let cfg = d.join("collector.toml");
    std::fs::write(
        &cfg,
        format!(
            "[mqtt]\nport = {port}\nclient_id = \"e2e-hostile-collector\"\n[store]\npath = \"{}\"\n[http]\nlisten = \"{http}\"\n[ingest]\nmax_payload_bytes = {MAX_PAYLOAD}\nmax_readings = {MAX_READINGS}\nmax_sensors_per_host = {MAX_SENSORS}\nmax_minute_buckets = {MAX_MINUTE_BUCKETS}\nmax_workloads = {MAX_WORKLOADS}\nmax_hosts = {MAX_HOSTS}\n[ingest.keys]\ngood-01 = \"{}\"\nmallory = \"{}\"\nintruder = \"{}\"\n",
            d.join("ledger.sqlite").display(),
            key_hex(&good_key().verifying_key()),
            key_hex(&mallory_key().verifying_key()),
            // The intruder signs (with mallory's key, as every host but
            // good-01 here): its status is authentic, and refused only
            // for the host limit.
            key_hex(&mallory_key().verifying_key()),
        ),
    )
    .unwrap();
    let collector = Proc::start(
        "collector",
        &binary("vigie-collector").unwrap(),
        &["run", "--config", &cfg.display().to_string()],
        d,
    )
    .unwrap();
    let log = d.join("collector.log");

    // A retained online status: the collector has subscribed once it shows.
    let status = sign_payload(
        &good_key(),
        &serde_json::to_vec(&samples::status_online()).unwrap(),
    );
    let sent = tokio::task::spawn_blocking(move || {
        raw_publish(port, b"vigie/v1/e2e/good-01/status", &status, true)
    });
    assert!(sent.await.unwrap(), "retained status refused");
    let good_client = TestClient::connect(port, "e2e-good-01", None)
        .await
        .unwrap();
    wait_for(
        "the collector to subscribe",
        Duration::from_secs(30),
        Duration::from_millis(50),
        || {
            let v = http_get(http, "/api/v1/hosts").ok()?.json().ok()?;
            let online = v["hosts"].as_array()?.iter().any(|h| h["online"] == true);
            online.then_some(())
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", collector.log_tail()));

    // Every reason is pre-registered at zero.
    let start = rejected(http).unwrap();
    let all: BTreeMap<String, u64> = Rejection::ALL_REASONS
        .iter()
        .map(|r| (r.to_string(), 0))
        .collect();
    assert_eq!(start, all);

    let spy = TestClient::connect(port, "e2e-hostile-spy", Some("#"))
        .await
        .unwrap();
    let mallory = TestClient::connect(port, "e2e-mallory", None)
        .await
        .unwrap();
    broker_side(&mallory, &spy, port).await;

    let t0 = now_ms() / 60_000 * 60_000 - 30 * 60_000;
    let kinds = hostile_kinds(t0);
    assert!(kinds.len() >= 20);
    let mut expected = all.clone();
    let mut good_total = 0u64;
    for (seq, k) in kinds.iter().enumerate() {
        let before = rejected(http).unwrap();
        let logged_before = logged(&log, k.reason).len();
        let payload = if k.raw {
            k.payload.clone()
        } else {
            sign_payload(&key_of_topic(&k.topic), &k.payload)
        };
        mallory.publish(&k.topic, payload).await.unwrap();
        let after = wait_for(
            k.what,
            Duration::from_secs(15),
            Duration::from_millis(20),
            || {
                let m = rejected(http)?;
                (m.values().sum::<u64>() > before.values().sum::<u64>()).then_some(m)
            },
        )
        .unwrap_or_else(|e| panic!("{e}: not rejected\n{}", collector.log_tail()));
        *expected.get_mut(k.reason).unwrap() += 1;
        let mut want = before.clone();
        *want.get_mut(k.reason).unwrap() += 1;
        assert_eq!(after, want, "{}: wrong reason", k.what);
        // One log line, which says why.
        let lines = logged(&log, k.reason);
        assert_eq!(
            lines.len(),
            logged_before + 1,
            "{}: no log line\n{}",
            k.what,
            collector.log_tail()
        );
        let line = &lines[logged_before];
        assert!(line.contains(&k.detail), "{}: {line}", k.what);

        // A good batch after every hostile one.
        let (payload, energy) = good(seq as u64, t0);
        good_client
            .publish("vigie/v1/e2e/good-01/telemetry", payload)
            .await
            .unwrap();
        good_total += energy;
    }

    // Exact: every good batch, nothing of mallory's.
    let (total, hosts) = wait_for(
        "the ledger to hold every good batch",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || ledger(http).filter(|(t, _)| *t == good_total),
    )
    .unwrap_or_else(|e| {
        panic!(
            "{e}: {:?}, want {good_total}\n{}",
            ledger(http),
            collector.log_tail()
        )
    });
    assert_eq!(total, good_total);
    assert_eq!(hosts, ["good-01"]);
    assert_eq!(rejected(http).unwrap(), expected);
    let used = expected.values().filter(|n| **n > 0).count();
    assert_eq!(
        used,
        Rejection::ALL_REASONS.len(),
        "some reason not exercised: {expected:?}"
    );

    // The sender's text is escaped in the log: no raw line separator.
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains('\u{2028}'), "topic logged unescaped");
    assert!(
        text.contains(r"x\u{2028}forged"),
        "escaped topic not logged"
    );

    // Still running.
    let health = http_get(http, "/healthz").unwrap();
    assert_eq!((health.status, health.body.trim()), (200, "ok"));
    drop(collector);
    drop(broker);
}

/// What never reaches the collector, checked at the broker.
async fn broker_side(mallory: &TestClient, spy: &TestClient, port: u16) {
    // The client library refuses to publish to a wildcard topic name...
    for topic in ["vigie/v1/e2e/+/telemetry", "vigie/v1/e2e/mallory/#"] {
        assert!(
            mallory.publish(topic, b"{}".to_vec()).await.is_err(),
            "{topic}: published"
        );
    }
    // ...and a raw client that does it anyway is disconnected by Mosquitto
    // (MQTT 3.1.1 §3.3.2.1, §1.5.3): so are NUL, invalid UTF-8 and, in
    // Mosquitto 2, other control characters.
    let refused: [&[u8]; 6] = [
        b"vigie/v1/e2e/+/telemetry",
        b"vigie/v1/e2e/#",
        b"vigie/v1/e2e/mal\0lory/telemetry",
        b"vigie/v1/e2e/\xff\xfe/telemetry",
        // Control characters, which could forge log lines.
        b"vigie/v1/e2e/x\n2026-01-01T00:00:00Z  INFO forged/telemetry",
        b"vigie/v1/e2e/x\x1b[2J/telemetry",
    ];
    for topic in refused {
        let t = topic.to_vec();
        let alive = tokio::task::spawn_blocking(move || raw_publish(port, &t, b"{}", false))
            .await
            .unwrap();
        assert!(
            !alive,
            "{}: Mosquitto kept the connection",
            String::from_utf8_lossy(topic)
        );
    }
    // Valid topic names outside the collector's filters
    // (`vigie/v1/+/+/{telemetry,status,meta}`): the broker routes them (the
    // spy on `#` gets them) but the collector is not subscribed.
    let unrouted = [
        "vigie/v1/e2e/mallory/telemetry/extra",
        "vigie/v1/e2e/mallory/x/telemetry",
        "vigie/v1/e2e/mallory/power",
        "vigie/v2/e2e/mallory/telemetry",
        "vigie/v1/e2e/mallory/telemetry ",
    ];
    // Control for the raw probe: a valid name keeps the connection.
    let t = unrouted[0].as_bytes().to_vec();
    assert!(
        tokio::task::spawn_blocking(move || raw_publish(port, &t, b"{}", false))
            .await
            .unwrap(),
        "the raw probe is broken: a valid topic lost the connection"
    );
    for topic in unrouted {
        mallory.publish(topic, b"{}".to_vec()).await.unwrap();
    }
    wait_for(
        "the spy to see the unrouted topics",
        Duration::from_secs(10),
        Duration::from_millis(20),
        || {
            let seen: Vec<String> = spy.received().into_iter().map(|(t, _)| t).collect();
            unrouted
                .iter()
                .all(|t| seen.iter().any(|s| s == t))
                .then_some(())
        },
    )
    .unwrap();
    for (topic, _) in spy.received() {
        assert!(
            !topic.contains(['+', '#', '\0', '\u{fffd}']),
            "the broker routed {topic:?}"
        );
    }
}

/// Connects with raw MQTT 3.1.1, publishes `payload` at QoS 0 to `topic`
/// (bytes as given, so also what no client library would send), then
/// pings: true if the broker answers the ping, false if it closed the
/// connection.
fn raw_publish(port: u16, topic: &[u8], payload: &[u8], retain: bool) -> bool {
    fn packet(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![kind];
        let mut len = body.len();
        loop {
            let mut byte = (len % 128) as u8;
            len /= 128;
            if len > 0 {
                byte |= 0x80;
            }
            out.push(byte);
            if len == 0 {
                break;
            }
        }
        out.extend_from_slice(body);
        out
    }
    fn string(s: &[u8]) -> Vec<u8> {
        [&(s.len() as u16).to_be_bytes()[..], s].concat()
    }
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // CONNECT: protocol "MQTT" level 4, clean session, keep-alive 60 s.
    let connect = [
        string(b"MQTT"),
        vec![4, 0x02, 0, 60],
        string(b"e2e-raw-mallory"),
    ]
    .concat();
    s.write_all(&packet(0x10, &connect)).unwrap();
    let mut connack = [0u8; 4];
    s.read_exact(&mut connack).unwrap();
    assert_eq!(connack, [0x20, 2, 0, 0], "CONNACK");
    let publish = [string(topic), payload.to_vec()].concat();
    // The broker may close as soon as it reads the PUBLISH.
    let _ = s.write_all(&packet(0x30 | u8::from(retain), &publish));
    let _ = s.write_all(&[0xc0, 0]);
    let mut pingresp = [0u8; 2];
    match s.read(&mut pingresp) {
        Ok(2) => {
            assert_eq!(pingresp, [0xd0, 0], "PINGRESP");
            true
        }
        Ok(_) | Err(_) => false,
    }
}
