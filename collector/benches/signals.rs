//! Scheduler-signal latency under load, on loopback.
//!
//! The collector's real HTTP stack (axum router, middleware, SQLite ledger
//! with a 48-hour half-hourly forecast) runs on a 2-worker tokio runtime;
//! an open-loop load generator on its own single-threaded runtime sends
//! requests at a fixed rate over keep-alive HTTP/1.1 connections (reqwest's
//! pool opens as many as the load needs). Latency is measured from each
//! request's *scheduled* send time, so a stalled server cannot hide its
//! queueing delay (no coordinated omission).
//!
//! Run with `cargo bench -p vigie-collector --bench signals`.
//! `VIGIE_BENCH_RPS` (default 2000) and `VIGIE_BENCH_SECS` (default 20)
//! set the rate and the measured duration per endpoint.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};
use vigie_collector::api::{self, AppState};
use vigie_collector::grid::{Basis, Intensity, IntensityPoint};
use vigie_collector::metrics::Metrics;
use vigie_energy::GramsPerKwh;

const H: i64 = 3_600_000;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Serves the collector's router on 127.0.0.1 from a 2-worker runtime.
fn serve(dir: &std::path::Path) -> std::net::SocketAddr {
    let db = dir.join("ledger.sqlite");
    let mut conn = vigie_collector::store::open(&db).unwrap();
    vigie_collector::grid::store::init(&conn).unwrap();
    let now = vigie_service::now_ms();
    let h0 = now / H * H;
    let points: Vec<IntensityPoint> = (-2..96)
        .map(|i| IntensityPoint {
            zone: "FR".into(),
            start_ms: h0 + i * H / 2,
            end_ms: h0 + (i + 1) * H / 2,
            intensity: Intensity::Average(GramsPerKwh(60.0 + 30.0 * ((i as f64) / 8.0).sin())),
            basis: Basis::Direct,
            estimated: i > 0,
            source: "bench".into(),
            retrieved_ms: now,
        })
        .collect();
    vigie_collector::grid::store::upsert_all(&mut conn, &points).unwrap();
    drop(conn);
    let carbon: vigie_collector::config::CarbonConfig =
        toml::from_str("zone = \"FR\"\nintensity_g_per_kwh = 56.0").unwrap();
    let metrics = Arc::new(Metrics::new("FR", GramsPerKwh(56.0)));
    let state = AppState::new(
        db,
        metrics,
        api::Factor {
            zone: "FR".into(),
            g_per_kwh: 56.0,
            kind: "average",
            source: "bench".into(),
            estimated: false,
        },
        carbon,
        vigie_collector::site::SiteConfig::default(),
    );
    let router = api::router(state, None);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(l.local_addr().unwrap()).unwrap();
            axum::serve(l, router).await.unwrap();
        });
    });
    rx.recv().unwrap()
}

struct Run {
    sent: usize,
    errors: usize,
    elapsed: Duration,
    lat_us: Vec<u64>,
}

/// Sends `rps` requests per second to `url` for `secs`, open loop.
fn load(url: &str, rps: u64, secs: u64) -> Run {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .http1_only()
            .build()
            .unwrap();
        let n = (rps * secs) as usize;
        let gap = Duration::from_nanos(1_000_000_000 / rps);
        let start = tokio::time::Instant::now() + Duration::from_millis(10);
        let mut tasks = Vec::with_capacity(n);
        for i in 0..n {
            let at = start + gap * i as u32;
            tokio::time::sleep_until(at).await;
            let c = client.clone();
            let u = url.to_owned();
            tasks.push(tokio::spawn(async move {
                let ok = match c.get(&u).send().await {
                    Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                    Err(_) => false,
                };
                (ok, at.elapsed())
            }));
        }
        let mut lat_us = Vec::with_capacity(n);
        let mut errors = 0;
        for t in tasks {
            let (ok, d) = t.await.unwrap();
            if !ok {
                errors += 1;
            }
            lat_us.push(d.as_micros() as u64);
        }
        Run {
            sent: n,
            errors,
            elapsed: start.elapsed(),
            lat_us,
        }
    })
}

fn pct(sorted: &[u64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

fn main() {
    rustls::crypto::ring::default_provider()
        .install_default()
        .ok();
    let rps = env("VIGIE_BENCH_RPS", 2000);
    let secs = env("VIGIE_BENCH_SECS", 20);
    let dir = tempfile::tempdir().unwrap();
    let addr = serve(dir.path());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "signal latency, open loop at {rps} req/s for {secs} s per endpoint, {cores} cores, server on 2 tokio workers"
    );
    println!(
        "| endpoint | requests | errors | achieved req/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | p99 < 5 ms |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    let endpoints = [
        "/api/v1/signals/intensity?pue=1.3",
        "/api/v1/signals/intensity",
        "/emissions/bylocation?location=FR",
        "/emissions/forecasts/current?location=FR&windowSize=120",
        "/api/v1/signals/best-start?duration=2h&power_kw=40",
    ];
    for path in endpoints {
        let url = format!("http://{addr}{path}");
        // Warm-up: connections, caches, the page cache of the ledger.
        let _ = load(&url, rps, 2);
        let t0 = Instant::now();
        let r = load(&url, rps, secs);
        let _ = t0;
        let mut l = r.lat_us.clone();
        l.sort_unstable();
        let p99 = pct(&l, 0.99);
        println!(
            "| `{path}` | {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {} |",
            r.sent,
            r.errors,
            r.sent as f64 / r.elapsed.as_secs_f64(),
            pct(&l, 0.50),
            pct(&l, 0.90),
            p99,
            pct(&l, 0.999),
            *l.last().unwrap() as f64 / 1000.0,
            if p99 < 5.0 && r.errors == 0 {
                "yes"
            } else {
                "no"
            }
        );
    }
}
