//! The real grid series in `testdata/grid` at the workspace root and the file fixtures in
//! `collector/testdata/grid`, read through the providers. Expected values
//! were read in the files; means are recomputed here from the raw text.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::PathBuf;
use vigie_collector::grid::files::{
    self, CARBON_INTENSITY_SOURCE, ECO2MIX_SOURCE, ELECTRICITY_MAPS_SOURCE,
};
use vigie_collector::grid::fixed::CO2JS_SOURCE;
use vigie_collector::grid::time::{format_utc, parse_instant};
use vigie_collector::grid::{
    Basis, Factor, FileFormat, GridError, Provider, Series, StaticFactor, YearlyTable,
};
use vigie_energy::{GramsPerKwh, MINUTE_MS};

fn real_series(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/grid")
        .join(name)
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/grid")
        .join(name)
}

fn t(s: &str) -> i64 {
    parse_instant(s).unwrap()
}

const ECO2MIX: &str = "fr_rte_eco2mix_national_tr_2021-12_15min.csv";

#[tokio::test]
async fn grid_eco2mix_real_month() {
    let series = Series::load(&real_series(ECO2MIX), FileFormat::Eco2mix, "FR", 42).unwrap();
    let points = series.points();
    assert_eq!(points.len(), 2976);
    assert_eq!(series.skipped_rows(), 0);

    // First and last quarter hours of December 2021, French time.
    let first = &points[0];
    assert_eq!(first.start_ms, t("2021-12-01T00:00:00+01:00"));
    assert_eq!(format_utc(first.start_ms), "2021-11-30T23:00:00Z");
    assert_eq!(first.end_ms - first.start_ms, 15 * MINUTE_MS);
    assert_eq!(first.inventory_factor(), Ok(GramsPerKwh(70.0)));
    let last = points.last().unwrap();
    assert_eq!(last.start_ms, t("2021-12-31T23:45:00+01:00"));
    assert_eq!(last.signal(), GramsPerKwh(32.0));
    for p in points {
        assert_eq!((p.zone.as_str(), p.source.as_str()), ("FR", ECO2MIX_SOURCE));
        assert_eq!(
            (p.factor(), p.basis, p.estimated),
            (Factor::Average, Basis::Direct, false)
        );
        assert_eq!(p.retrieved_ms, 42);
    }
    // Contiguous: rows are out of order in the file, not missing.
    for w in points.windows(2) {
        assert_eq!(w[0].end_ms, w[1].start_ms);
    }

    // A few values read in the file.
    let at = |s: &str| {
        points
            .iter()
            .find(|p| p.start_ms == t(s))
            .map(|p| p.signal().0)
    };
    assert_eq!(at("2021-12-11T10:00:00+01:00"), Some(73.0));
    assert_eq!(at("2021-12-15T12:45:00+01:00"), Some(84.0));
    // Extremes of the month, each reached twice.
    assert_eq!(at("2021-12-28T19:00:00+01:00"), Some(23.0));
    assert_eq!(at("2021-12-28T19:15:00+01:00"), Some(23.0));
    assert_eq!(at("2021-12-06T06:00:00+01:00"), Some(94.0));
    assert_eq!(at("2021-12-08T23:15:00+01:00"), Some(94.0));
    let min = points.iter().map(|p| p.signal().0).fold(f64::MAX, f64::min);
    let max = points.iter().map(|p| p.signal().0).fold(f64::MIN, f64::max);
    assert_eq!((min, max), (23.0, 94.0));

    // The month's mean, recomputed from the raw text: column 19 of the
    // semicolon-separated rows, header skipped.
    let text = std::fs::read_to_string(real_series(ECO2MIX)).unwrap();
    let raw: Vec<f64> = text
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split(';').nth(18).unwrap().trim().parse().unwrap())
        .collect();
    assert_eq!(raw.len(), 2976);
    let raw_sum: f64 = raw.iter().sum();
    assert_eq!(raw_sum, 191_501.0);
    // Equal spans: the time-weighted mean is the plain mean.
    let weighted: f64 = points
        .iter()
        .map(|p| p.signal().0 * (p.end_ms - p.start_ms) as f64)
        .sum::<f64>()
        / points
            .iter()
            .map(|p| (p.end_ms - p.start_ms) as f64)
            .sum::<f64>();
    assert!((weighted - raw_sum / 2976.0).abs() < 1e-9);
    assert!((weighted - 64.348_454_301_075_26).abs() < 1e-9);

    // As a provider: the range meets the quarter hours it overlaps.
    let day = series
        .fetch(
            "FR",
            t("2021-12-01T00:00:00+01:00"),
            t("2021-12-02T00:00:00+01:00"),
            0,
        )
        .await
        .unwrap();
    assert_eq!(day.len(), 96);
    let day_mean = day.iter().map(|p| p.signal().0).sum::<f64>() / 96.0;
    assert_eq!(day_mean, 66.15625);
    let inside = series
        .fetch(
            "FR",
            t("2021-12-01T00:05:00+01:00"),
            t("2021-12-01T00:20:00+01:00"),
            0,
        )
        .await
        .unwrap();
    assert_eq!(
        inside.iter().map(|p| p.signal().0).collect::<Vec<_>>(),
        [70.0, 72.0]
    );
    assert!(matches!(
        series.fetch("DE", 0, 1, 0).await,
        Err(GridError::UnknownZone { .. })
    ));
    assert!(matches!(
        series.fetch("FR", 5, 5, 0).await,
        Err(GridError::EmptyRange { .. })
    ));
}

#[test]
fn grid_eco2mix_website_layout_latin1_tabs() {
    // RTE's own download layout (written for this test from the first
    // real rows of the shared file): Latin-1, tabs, Date and Heures in
    // French time, "Taux de Co2", two rows not yet measured, a notice.
    let bytes = std::fs::read(fixture("rte_eco2mix_website_2021-12-01_latin1.tsv")).unwrap();
    assert!(
        std::str::from_utf8(&bytes).is_err(),
        "fixture must stay Latin-1"
    );
    let parsed = files::parse_eco2mix(&bytes, 0).unwrap();
    assert_eq!(parsed.points.len(), 8);
    assert_eq!(parsed.skipped_rows, 3);
    assert_eq!(
        parsed
            .points
            .iter()
            .map(|p| p.signal().0)
            .collect::<Vec<_>>(),
        [70.0, 72.0, 71.0, 69.0, 66.0, 66.0, 64.0, 62.0]
    );
    assert_eq!(parsed.points[0].start_ms, t("2021-11-30T23:00:00Z"));
    // The same instants and values as the ODRE export.
    let real = Series::load(&real_series(ECO2MIX), FileFormat::Eco2mix, "FR", 0).unwrap();
    assert_eq!(&real.points()[..8], parsed.points.as_slice());
}

#[tokio::test]
async fn grid_co2js_yearly_table() {
    let bytes = std::fs::read(real_series(
        "co2js_electricitymaps_yearly_2024_by_zone.json",
    ))
    .unwrap();
    let table = YearlyTable::from_co2js_json(&bytes, 2024, 7).unwrap();
    assert_eq!(table.zones(2024), 352);
    assert_eq!(table.get("FR", 2024), Some(GramsPerKwh(33.0)));
    assert_eq!(table.get("DE", 2024), Some(GramsPerKwh(341.0)));
    assert_eq!(table.get("GB", 2024), Some(GramsPerKwh(175.0)));
    assert_eq!(table.get("SE", 2024), Some(GramsPerKwh(23.0)));
    assert_eq!(table.get("PL", 2024), Some(GramsPerKwh(581.0)));

    // The sum over every zone, recomputed from the JSON.
    let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    let zones = json.as_object().unwrap();
    let sum: f64 = zones
        .values()
        .map(|z| z["carbonIntensity"]["value"].as_f64().unwrap())
        .sum();
    assert_eq!(sum, 134_873.0);
    let table_sum: f64 = zones.keys().map(|z| table.get(z, 2024).unwrap().0).sum();
    assert_eq!(table_sum, sum);

    // 2024 itself, then 2025 answered with 2024's value flagged estimated.
    let got = table
        .fetch("FR", t("2024-06-01T00:00Z"), t("2025-02-01T00:00Z"), 99)
        .await
        .unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(
        (got[0].start_ms, got[0].end_ms),
        (t("2024-01-01T00:00Z"), t("2025-01-01T00:00Z"))
    );
    assert_eq!((got[0].estimated, got[1].estimated), (false, true));
    assert_eq!(got[1].inventory_factor(), Ok(GramsPerKwh(33.0)));
    assert_eq!(
        (got[0].basis, got[0].source.as_str()),
        (Basis::Lifecycle, CO2JS_SOURCE)
    );
    assert_eq!(got[0].retrieved_ms, 7);
    // Before the first year: nothing; unknown zone: an error.
    assert!(
        table
            .fetch("FR", t("2023-01-01T00:00Z"), t("2023-02-01T00:00Z"), 0)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        table.fetch("XX", 0, 1, 0).await,
        Err(GridError::UnknownZone { .. })
    ));
}

#[tokio::test]
async fn grid_static_factor() {
    let f = StaticFactor::new("FR", 52.0, Basis::Lifecycle, "ademe-base-empreinte").unwrap();
    let got = f.fetch("FR", 1_000, 2_000, 5).await.unwrap();
    assert_eq!(got.len(), 1);
    let p = &got[0];
    assert_eq!((p.start_ms, p.end_ms, p.retrieved_ms), (1_000, 2_000, 5));
    assert_eq!(p.inventory_factor(), Ok(GramsPerKwh(52.0)));
    assert_eq!(p.source, "ademe-base-empreinte");
    assert!(!p.estimated);
    assert!(matches!(
        f.fetch("DE", 0, 1, 0).await,
        Err(GridError::UnknownZone { .. })
    ));
    assert!(StaticFactor::new("FR", -1.0, Basis::Direct, "x").is_err());
    assert!(StaticFactor::new("FR", f64::NAN, Basis::Direct, "x").is_err());
}

#[tokio::test]
async fn grid_neso_intensity_real_day() {
    let path = real_series("gb_neso_intensity_pt24h_2023-03-14T1201Z.json");
    let series = Series::load(&path, FileFormat::CarbonIntensityJson, "GB", 3).unwrap();
    let points = series.points();
    assert_eq!(points.len(), 48);
    assert_eq!(series.skipped_rows(), 0);
    assert_eq!(
        (points[0].start_ms, points[0].end_ms),
        (t("2023-03-13T12:00Z"), t("2023-03-13T12:30Z"))
    );
    // Actual (54) preferred over the forecast (47).
    assert_eq!(points[0].signal(), GramsPerKwh(54.0));
    assert_eq!(points[47].start_ms, t("2023-03-14T11:30Z"));
    assert_eq!(points[47].signal(), GramsPerKwh(97.0));
    assert!(points.iter().all(|p| !p.estimated
        && p.basis == Basis::Direct
        && p.zone == "GB"
        && p.source == CARBON_INTENSITY_SOURCE));

    // Recomputed from the JSON: every period has an actual value.
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let actual: Vec<f64> = json["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["intensity"]["actual"].as_f64().unwrap())
        .collect();
    assert_eq!(actual.iter().sum::<f64>(), 3728.0);
    let mean = points.iter().map(|p| p.signal().0).sum::<f64>() / 48.0;
    assert!((mean - 3728.0 / 48.0).abs() < 1e-12);
}

#[test]
fn grid_neso_forecast_file_flags_estimates() {
    let bytes = std::fs::read(fixture("carbonintensity_fw24h_2023-03-14T1200Z.json")).unwrap();
    let parsed = files::parse_carbon_intensity_json(&bytes, "GB", 0).unwrap();
    assert_eq!(parsed.points.len(), 48);
    assert!(!parsed.points[0].estimated);
    assert_eq!(parsed.points[0].signal(), GramsPerKwh(97.0));
    assert!(parsed.points[1..].iter().all(|p| p.estimated));
    assert_eq!(parsed.points[11].signal(), GramsPerKwh(153.0));
}

#[tokio::test]
async fn grid_electricity_maps_csv_export() {
    // Written for these tests in the data portal's column layout (no
    // export is in testdata/ at the workspace root): FR, 24 hours of 2024-01-01.
    let path = fixture("electricitymaps_FR_2024-01-01_hourly.csv");
    let series = Series::load(&path, FileFormat::ElectricityMapsCsv, "", 1).unwrap();
    let points = series.points();
    assert_eq!(points.len(), 48);
    assert_eq!(series.skipped_rows(), 0);
    let direct: Vec<_> = points.iter().filter(|p| p.basis == Basis::Direct).collect();
    let lifecycle: Vec<_> = points
        .iter()
        .filter(|p| p.basis == Basis::Lifecycle)
        .collect();
    assert_eq!((direct.len(), lifecycle.len()), (24, 24));
    assert_eq!(direct[0].start_ms, t("2024-01-01T00:00Z"));
    assert_eq!(direct[0].end_ms, t("2024-01-01T01:00Z"));
    assert_eq!(direct[0].signal(), GramsPerKwh(21.4));
    assert_eq!(lifecycle[0].signal(), GramsPerKwh(38.6));
    assert_eq!(direct[18].signal(), GramsPerKwh(38.1));
    assert_eq!(lifecycle[18].signal(), GramsPerKwh(59.4));
    // The last two hours are estimated in the export.
    assert_eq!(
        direct.iter().filter(|p| p.estimated).count(),
        2,
        "Data Estimated column"
    );
    assert!(direct[22].estimated && direct[23].estimated && !direct[21].estimated);
    assert!(points.iter().all(|p| p.zone == "FR"
        && p.source == ELECTRICITY_MAPS_SOURCE
        && p.factor() == Factor::Average));

    // Means recomputed from the raw CSV (columns 5 and 6; the quoted data
    // source holds a comma, so split the line before the quote).
    let text = std::fs::read_to_string(&path).unwrap();
    let (mut d, mut l) = (0.0, 0.0);
    for line in text.lines().skip(1) {
        let head: Vec<&str> = line.split('"').next().unwrap().split(',').collect();
        d += head[4].parse::<f64>().unwrap();
        l += head[5].parse::<f64>().unwrap();
    }
    let mean = |v: &[&vigie_collector::grid::IntensityPoint]| {
        v.iter().map(|p| p.signal().0).sum::<f64>() / v.len() as f64
    };
    assert!((mean(&direct) - d / 24.0).abs() < 1e-9);
    assert!((mean(&lifecycle) - l / 24.0).abs() < 1e-9);
    assert!((mean(&direct) - 26.85).abs() < 1e-9);

    let fetched = series
        .fetch("FR", t("2024-01-01T10:30Z"), t("2024-01-01T12:00Z"), 0)
        .await
        .unwrap();
    assert_eq!(fetched.len(), 4);
    assert!(
        fetched
            .iter()
            .all(|p| p.start_ms == t("2024-01-01T10:00Z") || p.start_ms == t("2024-01-01T11:00Z"))
    );
}

#[test]
fn grid_electricity_maps_csv_monthly_and_missing_values() {
    let csv = "Datetime (UTC),Country,Zone Name,Zone Id,Carbon Intensity gCO₂eq/kWh (direct),Carbon Intensity gCO₂eq/kWh (Life cycle),Data Estimated\n\
               2023-01-01 00:00:00,Germany,Germany,DE,420.5,468.1,false\n\
               2023-02-01 00:00:00,Germany,Germany,DE,,455.0,false\n\
               2023-03-01 00:00:00,Germany,Germany,DE,371.0,,true\n";
    let parsed = files::parse_electricity_maps_csv(csv.as_bytes(), 0).unwrap();
    assert_eq!(parsed.points.len(), 4);
    // Monthly rows last a calendar month.
    assert_eq!(parsed.points[0].end_ms, t("2023-02-01T00:00Z"));
    assert_eq!(parsed.points[2].end_ms, t("2023-03-01T00:00Z"));
    assert_eq!(parsed.points[3].end_ms, t("2023-04-01T00:00Z"));
    assert!(parsed.points[3].estimated);
    let bad = "Datetime (UTC),Zone Id\n2023-01-01 00:00:00,DE\n";
    assert!(matches!(
        files::parse_electricity_maps_csv(bad.as_bytes(), 0),
        Err(GridError::Format { .. })
    ));
}
