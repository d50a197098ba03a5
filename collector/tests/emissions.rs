//! Location-based emissions of a known energy profile over the real RTE
//! eCO2mix series (France, December 2021, 15-minute points), checked
//! against an independent computation made here from the raw CSV.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::PathBuf;
use vigie_collector::config::CarbonConfig;
use vigie_collector::ingest::{Ingestor, Message, Outcome};
use vigie_collector::{carbon, grid, store};
use vigie_protocol::{Limits, Quality, Reading, SCHEMA_VERSION, TelemetryBatch};

const HOUR: i64 = 3_600_000;
const KWH_UJ: u64 = 3_600_000_000_000;

fn eco2mix() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/grid/fr_rte_eco2mix_national_tr_2021-12_15min.csv")
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `2021-12-11T10:00:00+01:00` -> Unix ms.
fn parse_local(s: &str) -> i64 {
    let n = |a: usize, b: usize| s[a..b].parse::<i64>().unwrap();
    let (y, mo, d, h, mi) = (n(0, 4), n(5, 7), n(8, 10), n(11, 13), n(14, 16));
    let sign = if &s[19..20] == "-" { -1 } else { 1 };
    let off_min = sign * (n(20, 22) * 60 + n(23, 25));
    ((days_from_civil(y, mo, d) * 24 + h) * 60 + mi - off_min) * 60_000
}

/// The independent side: (start ms, g/kWh) of every row with a CO2 rate.
fn raw_series() -> Vec<(i64, f64)> {
    let bytes = std::fs::read(eco2mix()).unwrap();
    let text = String::from_utf8_lossy(&bytes);
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(';').collect();
    let t = header.iter().position(|h| *h == "Date - Heure").unwrap();
    let c = header
        .iter()
        .position(|h| h.starts_with("Taux de CO2"))
        .unwrap();
    lines
        .filter_map(|l| {
            let f: Vec<&str> = l.split(';').collect();
            let rate: f64 = f.get(c)?.trim().parse().ok()?;
            Some((parse_local(f.get(t)?), rate))
        })
        .collect()
}

#[test]
fn location_based_emissions_over_the_real_eco2mix_series() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite");
    let mut conn = store::open(&path).unwrap();
    grid::store::init(&conn).unwrap();
    // eCO2mix's taux_co2 counts direct emissions: a direct inventory, with
    // a direct static fallback (a test figure).
    let cfg: CarbonConfig = toml::from_str(&format!(
        "zone = \"FR\"\nbasis = \"direct\"\nintensity_basis = \"direct\"\nintensity_g_per_kwh = 33.0\n[[series]]\npath = \"{}\"\nformat = \"eco2mix\"\n",
        eco2mix().display()
    ))
    .unwrap();
    carbon::check_basis(&cfg).unwrap();
    assert_eq!(
        carbon::load_series_files(&mut conn, &cfg, 1_700_000_000_000).unwrap(),
        2976
    );

    // 48 hours from 2021-12-01T00:00Z, (1 + i % 5) kWh in hour i, and one
    // hour in 2022, which the series does not cover (static fallback).
    let start = days_from_civil(2021, 12, 1) * 86_400_000;
    let hours: Vec<(i64, u64)> = (0..48)
        .map(|i| (start + i * HOUR, 1 + (i as u64 % 5)))
        .chain(std::iter::once((
            days_from_civil(2022, 1, 10) * 86_400_000,
            2,
        )))
        .collect();
    let readings: Vec<Reading> = hours
        .iter()
        .map(|&(h, kwh)| Reading {
            sensor: "pdu:outlet-1".into(),
            start_ms: h,
            end_ms: h + HOUR,
            energy_uj: kwh * KWH_UJ,
            cumulative_uj: kwh * KWH_UJ,
            power_w: None,
            quality: Quality::Measured,
        })
        .collect();
    let batch = TelemetryBatch {
        schema: SCHEMA_VERSION,
        site: "par1".into(),
        host: "rack-7".into(),
        boot_id: "b".into(),
        epoch: 1,
        seq: 0,
        readings,
        gauges: Vec::new(),
        workloads: Vec::new(),
    };
    let mut ing = Ingestor::new(store::open(&path).unwrap(), Limits::default());
    let out = ing
        .ingest_group(
            &[Message {
                topic: "vigie/v1/par1/rack-7/telemetry".into(),
                payload: serde_json::to_vec(&batch).unwrap(),
            }],
            vigie_service::now_ms(),
        )
        .unwrap();
    assert!(matches!(out[0], Outcome::Accepted(_)), "{out:?}");

    let (rows, factors) =
        carbon::location_based(&conn, &cfg, start, days_from_civil(2022, 2, 1) * 86_400_000)
            .unwrap();
    assert_eq!(rows.len(), 49);
    // A factor for each hour with energy, and only those: the one
    // fallback hour, not the ~950 empty hours between the profile and it.
    assert_eq!(factors.len(), 49);
    assert_eq!(factors.values().filter(|f| f.fallback).count(), 1);

    // Independent computation: per UTC hour, the mean of the 15-minute
    // rates starting in it, times that hour's kWh.
    let raw = raw_series();
    let mut expected = 0.0;
    for &(h, kwh) in &hours[..48] {
        let rates: Vec<f64> = raw
            .iter()
            .filter(|(t, _)| *t >= h && *t < h + HOUR)
            .map(|(_, r)| *r)
            .collect();
        assert_eq!(rates.len(), 4, "four quarters in hour {h}");
        let mean = rates.iter().sum::<f64>() / 4.0;
        assert_eq!(factors[&h].g_per_kwh, mean);
        assert!(!factors[&h].fallback && !factors[&h].estimated);
        expected += kwh as f64 * mean;
    }
    // The 2022 hour: the static 33 g/kWh, flagged, and its grams too.
    let late = hours[48].0;
    assert!(factors[&late].fallback);
    let late_row = rows.iter().find(|r| r.hour_ms == late).unwrap();
    assert!(late_row.estimated());
    assert!(
        rows.iter()
            .filter(|r| r.hour_ms != late)
            .all(|r| !r.estimated())
    );
    expected += 2.0 * 33.0;
    let got: f64 = rows.iter().map(|r| r.emissions.0).sum();
    assert!(
        (got - expected).abs() < 1e-6 * expected,
        "{got} vs {expected}"
    );
    // The Prometheus counter, once the hours have closed, is the same
    // grams as the API's rows (it used to take the static factor: 1,630 g
    // against the API's 2,710 g on a profile like this one).
    let metrics = vigie_collector::metrics::Metrics::new("FR", vigie_energy::GramsPerKwh(33.0));
    metrics.accepted(&batch, vigie_service::now_ms());
    let mut counters = carbon::EmissionCounters::new();
    let now = days_from_civil(2022, 2, 1) * 86_400_000;
    assert!(counters.refresh(&conn, &cfg, &metrics, now).unwrap());
    let text = metrics.encode();
    let shown: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix(r#"vigie_emissions_location_grams_total{host="rack-7"} "#))
        .unwrap()
        .parse()
        .unwrap();
    assert!((shown - got).abs() < 1e-9 * got, "{shown} vs {got}");
    let estimated: f64 = text
        .lines()
        .find_map(|l| {
            l.strip_prefix(r#"vigie_emissions_location_estimated_grams_total{host="rack-7"} "#)
        })
        .unwrap()
        .parse()
        .unwrap();
    assert!((estimated - 2.0 * 33.0).abs() < 1e-9, "{estimated}");
    // Sanity: the earliest row (the file is not in time order) is 70 g at
    // 2021-12-01T00:00+01:00, i.e. 2021-11-30T23:00Z, before the profile.
    let first = raw.iter().min_by_key(|(t, _)| *t).unwrap();
    assert_eq!(*first, (start - HOUR, 70.0));
}

/// A series of the other basis than the inventory's would load and never be
/// used (every hour on the static factor, silently): refused at start-up.
#[test]
fn a_series_of_another_basis_is_refused_not_silently_unused() {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = store::open(&dir.path().join("ledger.sqlite")).unwrap();
    grid::store::init(&conn).unwrap();
    let cfg: CarbonConfig = toml::from_str(&format!(
        "zone = \"FR\"\nbasis = \"lifecycle\"\n[[series]]\npath = \"{}\"\nformat = \"eco2mix\"\n",
        eco2mix().display()
    ))
    .unwrap();
    carbon::check_basis(&cfg).unwrap();
    let err = carbon::load_series_files(&mut conn, &cfg, 1_700_000_000_000).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("direct") && msg.contains("lifecycle"), "{msg}");
    assert!(msg.contains("fr_rte_eco2mix"), "{msg}");
    // Nothing written.
    let stored =
        grid::store::overlapping(&conn, "FR", i64::MIN, i64::MAX, &Default::default()).unwrap();
    assert!(stored.is_empty());
}

/// The co2.js yearly table is a configured source: `[[carbon.yearly]]`
/// loads the zone's figure for its year, which then stands in for the
/// hours of that year, with its own basis (life-cycle).
#[test]
fn the_co2js_yearly_table_is_a_configured_source() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite");
    let mut conn = store::open(&path).unwrap();
    grid::store::init(&conn).unwrap();
    let yearly = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/grid/co2js_electricitymaps_yearly_2024_by_zone.json");
    let cfg: CarbonConfig = toml::from_str(&format!(
        "zone = \"DE\"\nintensity_g_per_kwh = 999.0\n[[yearly]]\npath = \"{}\"\nyear = 2024\n",
        yearly.display()
    ))
    .unwrap();
    let collector: vigie_collector::config::CollectorConfig = toml::from_str(&format!(
        "[carbon]\nzone = \"DE\"\n[[carbon.yearly]]\npath = \"{}\"\nyear = 2024\n",
        yearly.display()
    ))
    .unwrap();
    assert_eq!(collector.carbon.yearly.len(), 1);
    carbon::check_basis(&cfg).unwrap();
    assert_eq!(carbon::load_yearly_files(&mut conn, &cfg, 1).unwrap(), 1);
    // 2024-06-01 00:00Z: Germany's 2024 figure (341), not the static 999.
    let h = days_from_civil(2024, 6, 1) * 86_400_000;
    let f = carbon::hourly_factors(
        &conn,
        "DE",
        cfg.basis,
        vigie_energy::GramsPerKwh(999.0),
        h,
        h + HOUR,
    )
    .unwrap();
    assert_eq!(f[&h].g_per_kwh, 341.0);
    assert!(!f[&h].fallback);
    assert_eq!(f[&h].sources, ["series:electricitymaps-yearly"]);
    // A year it does not describe: the static factor.
    let h = days_from_civil(2025, 6, 1) * 86_400_000;
    let f = carbon::hourly_factors(
        &conn,
        "DE",
        cfg.basis,
        vigie_energy::GramsPerKwh(999.0),
        h,
        h + HOUR,
    )
    .unwrap();
    assert!(f[&h].fallback);
    // A zone it lacks is a configuration error.
    let bad: CarbonConfig = toml::from_str(&format!(
        "zone = \"XX-NOWHERE\"\n[[yearly]]\npath = \"{}\"\nyear = 2024\n",
        yearly.display()
    ))
    .unwrap();
    assert!(carbon::load_yearly_files(&mut conn, &bad, 1).is_err());
}

/// `vigie-collector run` refuses at start-up a configuration whose
/// inventory would mix bases (here the built-in life-cycle fallback under
/// a direct inventory), before it touches the broker, with the reason.
#[tokio::test]
async fn run_refuses_a_fallback_of_another_basis_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = vigie_collector::config::CollectorConfig::from_toml(&format!(
        "[store]\npath = \"{}\"\n[carbon]\nbasis = \"direct\"\n",
        dir.path().join("ledger.sqlite").display()
    ))
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = vigie_collector::run(cfg, listener, std::future::pending())
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("lifecycle") && msg.contains("intensity_basis"),
        "{msg}"
    );
}
