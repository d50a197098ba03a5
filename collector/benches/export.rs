//! Annual export benchmark (issue 6): "annual export for 1,000 hosts at
//! hourly resolution: under 5 seconds".
//!
//! Builds an on-disk ledger in a temporary directory holding a year
//! (8,760 hours) of `energy_hour` rows for 1,000 hosts x 2 sensors and no
//! minute rows (the year is kept at hourly resolution), the `hosts` table,
//! and two facility sensors (grid import, cooling) at hourly resolution.
//! The site has an IT meter summing the 1,000 hosts' `psu:input` sensors
//! (category 3, IT equipment input: 8.76 M hour rows to read), a
//! grid-import meter and a cooling meter, and a stored half-hourly grid
//! intensity series over the year (the static factor is the fallback).
//! Then, for each regime (EED, EnEfG, FR) and format (JSON, CSV), times
//! `export::build` followed by `Export::render`, and checks the IT
//! meter's total against the energy written.
//!
//! Run with `cargo bench -p vigie-collector --bench export`.
//! `VIGIE_BENCH_HOSTS` (default 1000) sets the hosts, `VIGIE_BENCH_REPS`
//! (default 3) the repetitions per regime and format.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use rusqlite::params;
use std::fmt::Write as _;
use std::time::{Duration, Instant};
use vigie_collector::config::CollectorConfig;
use vigie_collector::export::{self, ExportRequest, Format, Regime, date::Date};
use vigie_collector::store;

const HOUR_MS: i64 = 3_600_000;
/// The sensor the IT meter sums, and a second one per host it does not read.
const SENSORS: [&str; 2] = ["psu:input", "rapl:package-0"];
/// The target for one export, build and render.
const TARGET: Duration = Duration::from_secs(5);

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn host(h: usize) -> String {
    format!("node-{h:04}")
}

/// Hourly µJ of host `h`'s sensor `s` in hour `t`: ~400 W for the PSU,
/// ~150 W for the package, varying by host and hour.
fn uj(h: usize, s: usize, t: usize) -> u64 {
    let base: u64 = if s == 0 {
        1_440_000_000_000
    } else {
        540_000_000_000
    };
    base + ((h * 7_919 + s * 104_729 + t * 1_299) % 1_000_000_000) as u64
}

/// Writes the ledger; returns the IT meter's exact total, µJ.
fn build_ledger(path: &std::path::Path, hosts: usize, from_ms: i64, hours: usize) -> u128 {
    // Creates the schema, then bulk-loads without a journal or fsync (a
    // benchmark fixture, not a ledger anyone relies on).
    drop(store::open(path).unwrap());
    let mut conn = rusqlite::Connection::open(path).unwrap();
    conn.pragma_update(None, "journal_mode", "OFF").unwrap();
    conn.pragma_update(None, "synchronous", "OFF").unwrap();
    conn.pragma_update(None, "cache_size", -262_144).unwrap();
    // The time index is built once after the load rather than row by row.
    conn.execute_batch("DROP INDEX energy_hour_time").unwrap();
    let tx = conn.transaction().unwrap();
    let mut it_total = 0u128;
    {
        let mut ins = tx
            .prepare(
                "INSERT INTO energy_hour (host, sensor, bucket_ms, measured_uj, estimated_uj)
                 VALUES (?1, ?2, ?3, ?4, 0)",
            )
            .unwrap();
        // Key order: each insert appends to the primary key's B-tree.
        for h in 0..hosts {
            let name = host(h);
            for (s, sensor) in SENSORS.iter().enumerate() {
                for t in 0..hours {
                    let e = uj(h, s, t);
                    if s == 0 {
                        it_total += u128::from(e);
                    }
                    ins.execute(params![
                        name,
                        sensor,
                        from_ms + t as i64 * HOUR_MS,
                        e as i64
                    ])
                    .unwrap();
                }
            }
        }
        for (sensor, uj) in [
            ("meter:mains", 2_000_000_000_000_000u64),
            ("cooling:total", 350_000_000_000_000),
        ] {
            for t in 0..hours {
                ins.execute(params![
                    "facility",
                    sensor,
                    from_ms + t as i64 * HOUR_MS,
                    (uj + (t as u64 % 97) * 1_000_000_000) as i64
                ])
                .unwrap();
            }
        }
        let mut host_row = tx
            .prepare(
                "INSERT INTO hosts (host, site, boot_id, epoch, last_seq, last_seen_ms, online)
                 VALUES (?1, 'par1', 'boot-1', 1, ?2, ?3, 1)",
            )
            .unwrap();
        let end_ms = from_ms + hours as i64 * HOUR_MS;
        for h in (0..hosts).map(host).chain(["facility".to_owned()]) {
            host_row
                .execute(params![h, hours as i64 * 360, end_ms])
                .unwrap();
        }
    }
    tx.execute_batch("CREATE INDEX energy_hour_time ON energy_hour (bucket_ms)")
        .unwrap();
    tx.commit().unwrap();
    // The grid's half-hourly average intensity over the year, as a live
    // provider or an eCO2mix file stores it: 17,520 points.
    use vigie_collector::grid::{Basis, Intensity, IntensityPoint};
    vigie_collector::grid::store::init(&conn).unwrap();
    let half = HOUR_MS / 2;
    let points: Vec<IntensityPoint> = (0..hours as i64 * 2)
        .map(|i| IntensityPoint {
            zone: "FR".into(),
            start_ms: from_ms + i * half,
            end_ms: from_ms + (i + 1) * half,
            intensity: Intensity::Average(vigie_energy::GramsPerKwh(30.0 + (i % 48) as f64)),
            basis: Basis::Direct,
            estimated: false,
            source: "bench series".into(),
            retrieved_ms: from_ms,
        })
        .collect();
    vigie_collector::grid::store::upsert_all(&mut conn, &points).unwrap();
    it_total
}

fn config(hosts: usize) -> CollectorConfig {
    let mut it = String::new();
    for h in 0..hosts {
        let sep = if h == 0 { "" } else { ", " };
        write!(
            it,
            "{sep}{{ host = \"{}\", sensor = \"{}\" }}",
            host(h),
            SENSORS[0]
        )
        .unwrap();
    }
    CollectorConfig::from_toml(&format!(
        r#"
[carbon]
zone = "FR"
intensity_g_per_kwh = 33.0
source = "bench static factor"
[site]
installed_it_kw = 600.0
floor_area_m2 = 2500.0
computer_room_area_m2 = 1200.0
it_category = 3
[[site.meters]]
name = "grid"
role = "grid-import"
sensors = [{{ host = "facility", sensor = "meter:mains" }}]
[[site.meters]]
name = "it"
role = "it"
sensors = [{it}]
[[site.meters]]
name = "cooling"
role = "cooling"
sensors = [{{ host = "facility", sensor = "cooling:total" }}]
"#
    ))
    .unwrap()
}

struct Row {
    regime: Regime,
    format: Format,
    bytes: usize,
    build: Vec<Duration>,
    render: Vec<Duration>,
    total: Vec<Duration>,
}

fn median(t: &[Duration]) -> Duration {
    let mut t = t.to_vec();
    t.sort();
    t[t.len() / 2]
}

fn max(t: &[Duration]) -> Duration {
    t.iter().copied().max().unwrap()
}

fn main() {
    let hosts = env_usize("VIGIE_BENCH_HOSTS", 1_000).max(1);
    let reps = env_usize("VIGIE_BENCH_REPS", 3).max(1);
    let from_ms = Date::parse("2025-01-01").unwrap().start_ms();
    let to_ms = Date::parse("2026-01-01").unwrap().start_ms();
    let hours = ((to_ms - from_ms) / HOUR_MS) as usize;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite");
    let t = Instant::now();
    let it_total = build_ledger(&path, hosts, from_ms, hours);
    let setup = t.elapsed();
    let size = std::fs::metadata(&path).unwrap().len();
    let cfg = config(hosts);
    println!(
        "ledger: {hosts} hosts x {} sensors x {hours} hours in energy_hour + 2 facility sensors \
         ({} rows, {:.0} MiB on disk), no minute rows; built in {setup:.1?}",
        SENSORS.len(),
        (hosts * SENSORS.len() + 2) * hours,
        size as f64 / (1 << 20) as f64
    );
    println!(
        "IT meter: {hosts} sensors ({} hour rows); period 2025-01-01..2026-01-01; {reps} repetitions\n",
        hosts * hours
    );

    // store::open as the collector does (WAL, synchronous=FULL).
    let conn = store::open(&path).unwrap();
    let mut rows = Vec::new();
    for regime in Regime::ALL {
        for format in [Format::Json, Format::Csv] {
            let req = ExportRequest {
                regime,
                from_ms,
                to_ms,
                commissioned: Some(Date::parse("2019-06-01").unwrap()),
            };
            let mut row = Row {
                regime,
                format,
                bytes: 0,
                build: Vec::new(),
                render: Vec::new(),
                total: Vec::new(),
            };
            for _ in 0..reps {
                let mut steps = Vec::new();
                let t0 = Instant::now();
                let e = export::build(&conn, &cfg.site, &cfg.carbon, &req, &mut |s: &str| {
                    steps.push((s.to_owned(), t0.elapsed()));
                })
                .unwrap();
                let t1 = Instant::now();
                let bytes = e.render(format);
                let t2 = Instant::now();
                row.build.push(t1 - t0);
                row.render.push(t2 - t1);
                row.total.push(t2 - t0);
                row.bytes = bytes.len();
                check(&e, it_total);
                if std::env::var_os("VIGIE_BENCH_STEPS").is_some() {
                    println!("{} {:?} steps: {steps:?}", regime.as_str(), format);
                }
            }
            rows.push(row);
        }
    }

    println!(
        "| {:<6} | {:<6} | {:>8} | {:>12} | {:>12} | {:>13} | {:>13} | {:<7} |",
        "regime",
        "format",
        "bytes",
        "build median",
        "render med.",
        "total median",
        "total max",
        "< 5 s"
    );
    println!(
        "|{:-<8}|{:-<8}|{:->10}|{:->14}|{:->14}|{:->15}|{:->15}|{:-<9}|",
        "", "", "", "", "", "", "", ""
    );
    for r in &rows {
        println!(
            "| {:<6} | {:<6} | {:>8} | {:>12.2?} | {:>12.2?} | {:>13.2?} | {:>13.2?} | {:<7} |",
            r.regime.as_str(),
            match r.format {
                Format::Json => "json",
                Format::Csv => "csv",
            },
            r.bytes,
            median(&r.build),
            median(&r.render),
            median(&r.total),
            max(&r.total),
            if max(&r.total) < TARGET { "yes" } else { "NO" }
        );
    }
    println!("\ntotal = export::build + Export::render, on one connection to the on-disk ledger.");
}

/// The export did the work: the IT meter's total is the energy written,
/// fully measured, and PUE has a value.
fn check(e: &export::Export, it_total_uj: u128) {
    let meters = e.doc["provenance"]["meters"].as_array().unwrap();
    let it = meters.iter().find(|m| m["name"] == "it").unwrap();
    let kwh = it_total_uj as f64 / 3.6e12;
    let got = it["total"].as_f64().unwrap();
    assert!(
        (got - kwh).abs() <= 1e-9 * kwh,
        "IT total {got} kWh, wrote {kwh}"
    );
    assert_eq!(it["status"], "measured", "{it}");
    let pue = e.doc["figures"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["indicator"] == "PUE")
        .unwrap();
    assert_eq!(pue["status"], "measured", "{pue}");
}
