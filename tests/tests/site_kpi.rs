//! The site model end to end: a facility's grid and IT meters arrive as
//! telemetry through Mosquitto, water and delivered heat are read by hand
//! and posted to the API, and the collector's PUE, WUE, ERF, Scope 2 and
//! CUE match the figures computed here by hand.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;
use vigie_e2e::client::TestClient;
use vigie_e2e::start_collector;
use vigie_protocol::{Quality, Reading, SCHEMA_VERSION, TelemetryBatch};
use vigie_testkit::{Mosquitto, free_addr, http_get, http_post_json, wait_for};

const HOUR: i64 = 3_600_000;
const MIN: i64 = 60_000;

fn iso(ms: i64) -> String {
    ms.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn facility_figures_from_telemetry_and_hand_readings() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let broker = Mosquitto::start().unwrap();
    let port = broker.port();
    let http = free_addr().unwrap();
    std::fs::write(
        d.join("collector.toml"),
        format!(
            r#"[mqtt]
port = {port}
client_id = "site-collector"
[store]
path = "{}"
[http]
listen = "{http}"
[carbon]
zone = "FR"
intensity_g_per_kwh = 50.0
[carbon.market]
residual_mix_g_per_kwh = 300.0
[site]
installed_it_kw = 1.0
it_category = 2
[[site.meters]]
name = "grid"
role = "grid-import"
sensors = [{{ host = "facility", sensor = "meter:mains" }}]
[[site.meters]]
name = "it"
role = "it"
sensors = [{{ host = "facility", sensor = "pdu:total" }}]
[[site.meters]]
name = "water"
role = "water"
[[site.meters]]
name = "heat-out"
role = "heat-delivered"
"#,
            d.join("ledger.sqlite").display()
        ),
    )
    .unwrap();
    let mut collector = start_collector(d, http).unwrap();

    // One whole hour, three hours ago: per minute 0.025 kWh from the grid
    // (1.5 kWh in the hour) and 1/60 kWh to IT (1 kWh).
    let hour = vigie_service::now_ms() / HOUR * HOUR - 3 * HOUR;
    let (grid_uj, it_uj) = (90_000_000_000u64, 60_000_000_000u64);
    let mut readings = Vec::new();
    for m in 0..60 {
        for (sensor, uj) in [("meter:mains", grid_uj), ("pdu:total", it_uj)] {
            readings.push(Reading {
                sensor: sensor.into(),
                start_ms: hour + m * MIN,
                end_ms: hour + (m + 1) * MIN,
                energy_uj: uj,
                cumulative_uj: uj * (m as u64 + 1),
                power_w: None,
                quality: Quality::Measured,
            });
        }
    }
    let batch = TelemetryBatch {
        schema: SCHEMA_VERSION,
        site: "par1".into(),
        host: "facility".into(),
        boot_id: "b".into(),
        epoch: 1,
        seq: 0,
        readings,
        gauges: Vec::new(),
        workloads: Vec::new(),
    };
    let client = TestClient::connect(port, "facility-meters", None)
        .await
        .unwrap();
    client
        .publish(
            "vigie/v1/par1/facility/telemetry",
            serde_json::to_vec(&batch).unwrap(),
        )
        .await
        .unwrap();

    let q = format!("from={}&to={}", iso(hour), iso(hour + HOUR));
    let kpi = tokio::task::spawn_blocking({
        let q = q.clone();
        move || {
            wait_for(
                "PUE",
                Duration::from_secs(20),
                Duration::from_millis(100),
                || {
                    let v = http_get(http, &format!("/api/v1/kpi?{q}"))
                        .ok()?
                        .json()
                        .ok()?;
                    v["figures"]
                        .as_array()?
                        .iter()
                        .any(|f| f["indicator"] == "PUE" && f["status"] == "measured")
                        .then_some(v)
                },
            )
        }
    })
    .await
    .unwrap()
    .unwrap_or_else(|e| panic!("{e}\n{}", collector.log_tail()));
    let fig = |v: &serde_json::Value, name: &str| {
        v["figures"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["indicator"] == name)
            .cloned()
            .unwrap()
    };
    // PUE = 1.5 kWh / 1 kWh, category 2, fully measured.
    let pue = fig(&kpi, "PUE");
    assert_eq!(pue["value"], 1.5);
    assert_eq!(pue["measurement_category"], 2);
    // Before the hand readings: no water and no heat yet -> incomplete.
    assert_eq!(fig(&kpi, "WUE")["status"], "incomplete");

    // Hand readings: 2 litres of water and 0.3 kWh of heat delivered.
    let post = |meter: &str, body: &str| {
        http_post_json(
            http,
            &format!("/api/v1/meters/{meter}/readings"),
            None,
            body,
        )
        .unwrap()
    };
    let water = format!(
        r#"[{{"from": "{}", "to": "{}", "litres": 2, "note": "index 1000 -> 1002"}}]"#,
        hour,
        hour + HOUR
    );
    assert_eq!(post("water", &water).status, 200);
    let heat = format!(
        r#"[{{"from": "{}", "to": "{}", "kwh": 0.3}}]"#,
        hour,
        hour + HOUR
    );
    assert_eq!(post("heat-out", &heat).status, 200);
    // The same hour again overlaps: refused; a ledger meter takes no hand readings.
    assert_eq!(post("water", &water).status, 400);
    assert_eq!(post("grid", &heat).status, 400);
    assert_eq!(post("nope", &heat).status, 400);

    let kpi = http_get(http, &format!("/api/v1/kpi?{q}"))
        .unwrap()
        .json()
        .unwrap();
    // Every meter's total is reported with its unit.
    let water_total = kpi["meters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["meter"] == "water")
        .unwrap()
        .clone();
    assert_eq!(
        (water_total["unit"].as_str(), water_total["total"].as_f64()),
        (Some("L"), Some(2.0))
    );
    // WUE = 2 L / 1 kWh; ERF = 0.3 / 1.5; REF = 0 (nothing renewable).
    assert_eq!(fig(&kpi, "WUE")["value"], 2.0);
    assert!((fig(&kpi, "ERF")["value"].as_f64().unwrap() - 0.2).abs() < 1e-12);
    assert_eq!(fig(&kpi, "REF")["value"], 0.0);

    // Scope 2: 1.5 kWh x 50 g = 75 g location-based; x 300 g (residual
    // mix, no instruments) = 450 g market-based; CUE = kg / kWh_IT.
    let s2 = http_get(http, &format!("/api/v1/scope2?{q}"))
        .unwrap()
        .json()
        .unwrap();
    assert!(
        (s2["location_based_kg"].as_f64().unwrap() - 0.075).abs() < 1e-9,
        "{s2}"
    );
    assert!(
        (s2["market_based_kg"].as_f64().unwrap() - 0.45).abs() < 1e-9,
        "{s2}"
    );
    assert_eq!(s2["coverage"]["missing_share"], 0.0);
    // The grid meter covers the hour; the factor is the configured yearly
    // average applied to it: an estimate, and said so.
    assert_eq!(s2["location_based_status"], "estimated", "{s2}");
    // An hour the meter does not cover: incomplete, and 0 kg is not a
    // negative zero.
    let empty = http_get(
        http,
        &format!(
            "/api/v1/scope2?from={}&to={}",
            iso(hour + HOUR),
            iso(hour + 2 * HOUR)
        ),
    )
    .unwrap()
    .json()
    .unwrap();
    assert_eq!(empty["location_based_status"], "incomplete", "{empty}");
    assert_eq!(empty["market_based_status"], "incomplete", "{empty}");
    assert!(!empty.to_string().contains("-0.0"), "{empty}");
    let cue_loc = s2["cue"][0]["value"].as_f64().unwrap();
    assert!((cue_loc - 0.075).abs() < 1e-9, "{s2}");
    assert!(
        collector
            .interrupt(Duration::from_secs(15))
            .unwrap()
            .success()
    );
}
