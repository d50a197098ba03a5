//! In-process ingest benchmark: no broker, no network. Measures, on one
//! thread, how many readings per second the collector can
//!
//! - (a) decode and validate (`Topic::parse` + `decode_telemetry`),
//! - (b) fully ingest into an in-memory SQLite ledger,
//! - (c) fully ingest into an on-disk SQLite ledger (WAL, synchronous=FULL,
//!   one fsync'd commit per group: what production does),
//!
//! and the same as (b) and (c) with 10 % of the messages being duplicates;
//! and, A/B on the same data and machine, what signatures cost:
//!
//! - (d) `verify_signed` alone (Ed25519, strict) over each signed message,
//! - (e) the SHA-256 digest alone (kept with every batch's dedupe key),
//! - (f) full ingest of the same batches signed, with every host's key
//!   registered (`Ingestor::with_keys`), in memory and on disk.
//!
//! And the two halves the collector runs on different threads (issue 12.5):
//!
//! - (g) prepare only: `Preparer::prepare` of each message (decode,
//!   validate, verify when signed, digest, per-batch sums), what the
//!   collector's prepare threads do;
//! - (h) commit only: `Ingestor::commit_group` of groups prepared
//!   beforehand (untimed), what the one ledger-writer thread does;
//! - (i) `Metrics::accepted_group` of each group's batches, after commit.
//!
//! Run with `cargo bench -p vigie-collector --bench ingest`.
//! `VIGIE_BENCH_SLICES` (default 10) sets how many 10 s slices of the 1,000
//! hosts are generated; `VIGIE_BENCH_REPS` (default 5) the repetitions.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use ed25519_dalek::SigningKey;
use sha2::Digest;
use std::hint::black_box;
use std::time::{Duration, Instant};
use vigie_collector::ingest::{Ingestor, KeyRing, Message, Outcome, Prepared};
use vigie_collector::metrics::Metrics;
use vigie_collector::store;
use vigie_protocol::{
    Limits, Quality, Reading, SCHEMA_VERSION, TelemetryBatch, Topic, decode_telemetry,
    sign_payload, verify_signed,
};

/// Hosts publishing.
const HOSTS: usize = 1_000;
/// Sensors per host.
const SENSORS: [&str; 8] = [
    "rapl:package-0",
    "rapl:package-1",
    "rapl:dram-0",
    "rapl:dram-1",
    "nvml:gpu-0",
    "nvml:gpu-1",
    "nvml:gpu-2",
    "nvml:gpu-3",
];
/// Samples per sensor per batch (1 s each: a 10 s batch).
const SAMPLES: usize = 10;
/// Messages per `ingest_group` (the collector's default `max_group`).
const GROUP: usize = 512;
/// First reading start.
const T0: i64 = 1_795_000_000_000;
/// The target: readings per second per core.
const TARGET: f64 = 1_000_000.0;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One host's batch for the 10 s slice `slice`.
fn batch(host: usize, slice: usize) -> TelemetryBatch {
    let start = T0 + (slice * SAMPLES * 1000) as i64;
    let mut readings = Vec::with_capacity(SENSORS.len() * SAMPLES);
    // Tick after tick, every sensor at each tick: the order the agent's
    // sampler appends them in.
    for i in 0..SAMPLES {
        for (s, sensor) in SENSORS.iter().enumerate() {
            // ~100 J per second, varying a little by host, sensor and sample.
            let energy_uj =
                100_000_000 + ((host * 7_919 + s * 104_729 + i * 1_299) % 5_000_000) as u64;
            let n = (slice * SAMPLES + i + 1) as u64;
            let start_ms = start + (i * 1000) as i64;
            readings.push(Reading {
                sensor: (*sensor).to_string(),
                start_ms,
                end_ms: start_ms + 1000,
                energy_uj,
                // Roughly increasing: the agent's running total.
                cumulative_uj: 5_000_000_000_000 + n * 102_500_000 + energy_uj,
                power_w: Some((energy_uj as f64 / 1000.0).round() / 1000.0),
                quality: if s < 4 {
                    Quality::Measured
                } else {
                    Quality::Estimated
                },
            });
        }
    }
    TelemetryBatch {
        schema: SCHEMA_VERSION,
        site: "par1".into(),
        host: format!("node-{host:04}"),
        boot_id: format!("2f1c7f0e-8c1e-4d55-9a57-{host:012x}"),
        epoch: 1_790_000_000_000 + host as u64,
        seq: slice as u64 + 1,
        readings,
        gauges: Vec::new(),
        workloads: Vec::new(),
    }
}

/// Host `host`'s signing key (a fixed seed per host).
fn host_key(host: usize) -> SigningKey {
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&(host as u64 + 1).to_le_bytes());
    SigningKey::from_bytes(&seed)
}

/// Every host's public key, as `[ingest.keys]` gives them.
fn ring() -> KeyRing {
    (0..HOSTS)
        .map(|h| (format!("node-{h:04}"), vec![host_key(h).verifying_key()]))
        .collect()
}

/// `data` with each payload signed by its host's key.
fn signed(data: &[Msg]) -> Vec<Msg> {
    let keys: Vec<SigningKey> = (0..HOSTS).map(host_key).collect();
    data.iter()
        .map(|m| {
            let host: usize = m.msg.topic.split('/').nth(3).unwrap()[5..].parse().unwrap();
            Msg {
                msg: Message {
                    topic: m.msg.topic.clone(),
                    payload: sign_payload(&keys[host], &m.msg.payload),
                },
                ..*m
            }
        })
        .collect()
}

#[derive(Clone)]
struct Msg {
    msg: Message,
    readings: usize,
    end_ms: i64,
    duplicate: bool,
}

/// Every host's batch for each slice, slice after slice (the order they
/// arrive in). With `dup_every = Some(k)`, after every k-th message a copy of
/// an earlier one (from about one group back) is inserted: 1 in k+1 is a
/// duplicate.
fn dataset(slices: usize, dup_every: Option<usize>) -> Vec<Msg> {
    let mut out: Vec<Msg> = Vec::new();
    let mut fresh = 0usize;
    for slice in 0..slices {
        for host in 0..HOSTS {
            let b = batch(host, slice);
            let end_ms = b.readings.iter().map(|r| r.end_ms).max().unwrap();
            let msg = Message {
                topic: format!("vigie/v1/{}/{}/telemetry", b.site, b.host),
                payload: serde_json::to_vec(&b).unwrap(),
            };
            out.push(Msg {
                msg,
                readings: b.readings.len(),
                end_ms,
                duplicate: false,
            });
            fresh += 1;
            if let Some(k) = dup_every
                && fresh.is_multiple_of(k)
            {
                // A message already seen, ~one group earlier (or the first).
                let src = out.len().saturating_sub(GROUP + 1);
                let d = &out[src];
                let copy = Msg {
                    msg: d.msg.clone(),
                    readings: d.readings,
                    end_ms: d.end_ms,
                    duplicate: true,
                };
                out.push(copy);
            }
        }
    }
    out
}

/// Groups of `GROUP` messages, each with its `now_ms` just after its last end.
fn groups(data: &[Msg]) -> Vec<(Vec<Message>, i64)> {
    data.chunks(GROUP)
        .map(|c| {
            let now = c.iter().map(|m| m.end_ms).max().unwrap() + 50;
            (c.iter().map(|m| m.msg.clone()).collect(), now)
        })
        .collect()
}

struct Row {
    name: &'static str,
    messages: usize,
    readings: usize,
    times: Vec<Duration>,
}

impl Row {
    fn median(&self) -> Duration {
        let mut t = self.times.clone();
        t.sort();
        t[t.len() / 2]
    }
    fn best(&self) -> Duration {
        self.times.iter().copied().min().unwrap()
    }
    fn rate(&self, d: Duration) -> f64 {
        self.readings as f64 / d.as_secs_f64()
    }
}

fn bench_decode(data: &[Msg], reps: usize) -> Row {
    let limits = Limits::default();
    let gs = groups(data);
    let mut times = Vec::new();
    for _ in 0..reps {
        let t = Instant::now();
        let mut n = 0usize;
        for (msgs, now) in &gs {
            for m in msgs {
                let topic = Topic::parse(&m.topic).unwrap();
                let b = decode_telemetry(&topic, &m.payload, *now, &limits).unwrap();
                n += black_box(b).readings.len();
            }
        }
        times.push(t.elapsed());
        assert_eq!(n, data.iter().map(|m| m.readings).sum::<usize>());
    }
    Row {
        name: "decode+validate",
        messages: data.len(),
        readings: data.iter().map(|m| m.readings).sum(),
        times,
    }
}

/// `verify_signed` alone over every (signed) message, with its host's key.
fn bench_verify(data: &[Msg], ring: &KeyRing, reps: usize) -> Row {
    let mut times = Vec::new();
    for _ in 0..reps {
        let t = Instant::now();
        let mut n = 0usize;
        for m in data {
            let host = m.msg.topic.split('/').nth(3).unwrap();
            let json = verify_signed(&m.msg.payload, &ring[host]).unwrap();
            n += black_box(json).len().min(1);
        }
        times.push(t.elapsed());
        assert_eq!(n, data.len());
    }
    Row {
        name: "verify signature only",
        messages: data.len(),
        readings: data.iter().map(|m| m.readings).sum(),
        times,
    }
}

/// The SHA-256 digest of every payload alone.
fn bench_digest(data: &[Msg], reps: usize) -> Row {
    let mut times = Vec::new();
    for _ in 0..reps {
        let t = Instant::now();
        for m in data {
            black_box(sha2::Sha256::digest(&m.msg.payload));
        }
        times.push(t.elapsed());
    }
    Row {
        name: "SHA-256 digest only",
        messages: data.len(),
        readings: data.iter().map(|m| m.readings).sum(),
        times,
    }
}

/// Full ingest, group after group, into a fresh ledger each repetition;
/// with `keys`, every message must be signed.
fn bench_ingest(
    name: &'static str,
    data: &[Msg],
    reps: usize,
    on_disk: bool,
    expected_total_uj: u64,
    keys: Option<&KeyRing>,
) -> Row {
    let gs = groups(data);
    let new = data.iter().filter(|m| !m.duplicate).count();
    let mut times = Vec::new();
    for _ in 0..reps {
        let dir = tempfile::tempdir().unwrap();
        let conn = if on_disk {
            store::open(&dir.path().join("ledger.sqlite")).unwrap()
        } else {
            store::open_in_memory().unwrap()
        };
        let mut ing =
            Ingestor::new(conn, Limits::default()).with_keys(keys.cloned().unwrap_or_default());
        let (mut accepted, mut dups) = (0usize, 0usize);
        let t = Instant::now();
        for (msgs, now) in &gs {
            for o in ing.ingest_group(msgs, *now).unwrap() {
                match o {
                    Outcome::Accepted(_) => accepted += 1,
                    Outcome::Duplicate => dups += 1,
                    other => panic!("unexpected outcome {other:?}"),
                }
            }
        }
        times.push(t.elapsed());
        // Check the run did the work it claims.
        assert_eq!(accepted, new);
        assert_eq!(dups, data.len() - new);
        let total: u128 = store::totals(ing.conn())
            .unwrap()
            .iter()
            .map(|(_, _, a)| a.measured + a.estimated)
            .sum();
        assert_eq!(total, u128::from(expected_total_uj));
    }
    Row {
        name,
        messages: data.len(),
        readings: data.iter().map(|m| m.readings).sum(),
        times,
    }
}

/// `Preparer::prepare` alone over every message, group after group.
fn bench_prepare(name: &'static str, data: &[Msg], reps: usize, keys: Option<&KeyRing>) -> Row {
    let gs = groups(data);
    let ing = Ingestor::new(store::open_in_memory().unwrap(), Limits::default())
        .with_keys(keys.cloned().unwrap_or_default());
    let p = ing.preparer();
    let mut times = Vec::new();
    for _ in 0..reps {
        let t = Instant::now();
        for (msgs, now) in &gs {
            for m in msgs {
                black_box(p.prepare(m, *now));
            }
        }
        times.push(t.elapsed());
    }
    Row {
        name,
        messages: data.len(),
        readings: data.iter().map(|m| m.readings).sum(),
        times,
    }
}

/// `Ingestor::commit_group` alone (the writer thread's part): each group
/// is prepared beforehand, untimed, then committed, timed.
fn bench_commit(
    name: &'static str,
    data: &[Msg],
    reps: usize,
    on_disk: bool,
    expected_total_uj: u64,
    keys: Option<&KeyRing>,
) -> Row {
    let gs = groups(data);
    let mut times = Vec::new();
    for _ in 0..reps {
        let dir = tempfile::tempdir().unwrap();
        let conn = if on_disk {
            store::open(&dir.path().join("ledger.sqlite")).unwrap()
        } else {
            store::open_in_memory().unwrap()
        };
        let mut ing =
            Ingestor::new(conn, Limits::default()).with_keys(keys.cloned().unwrap_or_default());
        let p = ing.preparer();
        let mut elapsed = Duration::ZERO;
        let mut accepted = 0usize;
        for (msgs, now) in &gs {
            let mut prepared: Vec<Prepared> = msgs.iter().map(|m| p.prepare(m, *now)).collect();
            let t = Instant::now();
            let out = ing.commit_group(msgs, &mut prepared, *now).unwrap();
            elapsed += t.elapsed();
            accepted += out
                .iter()
                .filter(|o| matches!(o, Outcome::Accepted(_)))
                .count();
        }
        times.push(elapsed);
        assert_eq!(accepted, data.iter().filter(|m| !m.duplicate).count());
        let total: u128 = store::totals(ing.conn())
            .unwrap()
            .iter()
            .map(|(_, _, a)| a.measured + a.estimated)
            .sum();
        assert_eq!(total, u128::from(expected_total_uj));
    }
    Row {
        name,
        messages: data.len(),
        readings: data.iter().map(|m| m.readings).sum(),
        times,
    }
}

/// `Metrics::accepted_group` of each group's accepted batches (the
/// writer's work after each commit), timed alone.
fn bench_metrics(data: &[Msg], reps: usize) -> Row {
    let gs = groups(data);
    let mut ing = Ingestor::new(store::open_in_memory().unwrap(), Limits::default());
    let batches: Vec<(Vec<vigie_protocol::TelemetryBatch>, i64)> = gs
        .iter()
        .map(|(msgs, now)| {
            let out = ing.ingest_group(msgs, *now).unwrap();
            let b = out
                .into_iter()
                .filter_map(|o| match o {
                    Outcome::Accepted(b) => Some(b),
                    _ => None,
                })
                .collect();
            (b, *now)
        })
        .collect();
    let mut times = Vec::new();
    for _ in 0..reps {
        let m = Metrics::new("FR", vigie_energy::GramsPerKwh(50.0));
        let t = Instant::now();
        for (b, now) in &batches {
            m.accepted_group(b, *now);
        }
        times.push(t.elapsed());
    }
    Row {
        name: "metrics (accepted_group)",
        messages: data.len(),
        readings: data.iter().map(|m| m.readings).sum(),
        times,
    }
}

fn main() {
    let slices = env_usize("VIGIE_BENCH_SLICES", 10);
    let reps = env_usize("VIGIE_BENCH_REPS", 5).max(1);
    let disk_reps = reps.min(3);

    let t = Instant::now();
    let data = dataset(slices, None);
    let with_dups = dataset(slices, Some(9));
    let bytes: usize = data.iter().map(|m| m.msg.payload.len()).sum();
    let total_uj: u64 = (0..slices)
        .flat_map(|s| (0..HOSTS).map(move |h| (h, s)))
        .map(|(h, s)| {
            batch(h, s)
                .readings
                .iter()
                .map(|r| r.energy_uj)
                .sum::<u64>()
        })
        .sum();
    println!(
        "dataset: {HOSTS} hosts x {slices} batches of {} readings ({} sensors x {SAMPLES} s), \
         {} messages, {:.1} KiB/payload, {} per group; built in {:.1?}",
        SENSORS.len() * SAMPLES,
        SENSORS.len(),
        data.len(),
        bytes as f64 / data.len() as f64 / 1024.0,
        GROUP,
        t.elapsed()
    );
    println!(
        "with duplicates: {} messages, {} duplicates ({:.1} %)",
        with_dups.len(),
        with_dups.iter().filter(|m| m.duplicate).count(),
        100.0 * with_dups.iter().filter(|m| m.duplicate).count() as f64 / with_dups.len() as f64
    );
    println!("repetitions: {reps} (on-disk: {disk_reps}), one thread\n");

    let signed_data = signed(&data);
    let ring = ring();
    let rows = vec![
        bench_decode(&data, reps),
        bench_ingest("ingest, in-memory", &data, reps, false, total_uj, None),
        bench_ingest(
            "ingest, on-disk WAL FULL",
            &data,
            disk_reps,
            true,
            total_uj,
            None,
        ),
        bench_ingest(
            "ingest, in-memory, 10% dup",
            &with_dups,
            reps,
            false,
            total_uj,
            None,
        ),
        bench_ingest(
            "ingest, on-disk, 10% dup",
            &with_dups,
            disk_reps,
            true,
            total_uj,
            None,
        ),
        bench_digest(&data, reps),
        bench_verify(&signed_data, &ring, reps),
        bench_ingest(
            "ingest, in-memory, signed",
            &signed_data,
            reps,
            false,
            total_uj,
            Some(&ring),
        ),
        bench_ingest(
            "ingest, on-disk, signed",
            &signed_data,
            disk_reps,
            true,
            total_uj,
            Some(&ring),
        ),
        bench_prepare("prepare only", &data, reps, None),
        bench_prepare("prepare only, signed", &signed_data, reps, Some(&ring)),
        bench_commit("commit only, in-memory", &data, reps, false, total_uj, None),
        bench_commit(
            "commit only, on-disk",
            &data,
            disk_reps,
            true,
            total_uj,
            None,
        ),
        bench_commit(
            "commit only, on-disk, signed",
            &signed_data,
            disk_reps,
            true,
            total_uj,
            Some(&ring),
        ),
        bench_metrics(&data, reps),
    ];

    println!(
        "| {:<27} | {:>8} | {:>9} | {:>10} | {:>15} | {:>15} | {:<9} |",
        "variant",
        "messages",
        "readings",
        "median",
        "readings/s med",
        "readings/s best",
        ">= 1 M/s"
    );
    println!(
        "|{:-<29}|{:->10}|{:->11}|{:->12}|{:->17}|{:->17}|{:-<11}|",
        "", "", "", "", "", "", ""
    );
    for r in &rows {
        let med = r.rate(r.median());
        println!(
            "| {:<27} | {:>8} | {:>9} | {:>10.1?} | {:>15.0} | {:>15.0} | {:<9} |",
            r.name,
            r.messages,
            r.readings,
            r.median(),
            med,
            r.rate(r.best()),
            if med >= TARGET { "yes" } else { "NO" }
        );
    }
    println!("\nreadings/s counts every reading offered (duplicates included), on one thread.");
    // A/B: the same batches unsigned and signed, same machine, same run.
    let per_msg = |r: &Row| r.median().as_secs_f64() * 1e6 / r.messages as f64;
    let by_name = |n: &str| rows.iter().find(|r| r.name == n).unwrap();
    println!("\nper message (median, µs):");
    for n in [
        "SHA-256 digest only",
        "verify signature only",
        "ingest, in-memory",
        "ingest, in-memory, signed",
        "ingest, on-disk WAL FULL",
        "ingest, on-disk, signed",
        "prepare only",
        "prepare only, signed",
        "commit only, in-memory",
        "commit only, on-disk",
        "commit only, on-disk, signed",
        "metrics (accepted_group)",
    ] {
        println!("  {n:<28} {:>8.2}", per_msg(by_name(n)));
    }
    for (plain, signed) in [
        ("ingest, in-memory", "ingest, in-memory, signed"),
        ("ingest, on-disk WAL FULL", "ingest, on-disk, signed"),
    ] {
        let (a, b) = (per_msg(by_name(plain)), per_msg(by_name(signed)));
        println!(
            "  signed - unsigned, {:<10} {:>+8.2} µs/message ({:+.0} %)",
            if plain.contains("disk") {
                "on disk"
            } else {
                "in memory"
            },
            b - a,
            100.0 * (b - a) / a
        );
    }
}
