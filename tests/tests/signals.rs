//! Scheduler signals in the shapes schedulers already speak (Green
//! Software Foundation Carbon Aware SDK web API, carbon-aware KEDA
//! ConfigMap), from a forecast loaded into a running collector.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;
use vigie_e2e::start_collector_with_env;
use vigie_testkit::{Mosquitto, free_addr, http_get};

const H: i64 = 3_600_000;

/// The collector's clock, pinned (`VIGIE_E2E_NOW_MS`): 2026-11-23T10:20Z.
/// Its "now" stays in the forecast's first hour however long the test
/// takes, so the answers that read the clock are the same in every run.
const NOW: i64 = 1_795_429_200_000;

/// `2026-11-23T10:00Z`, the Carbon Intensity API's format.
fn ci_time(ms: i64) -> String {
    let secs = ms / 1000;
    let days = secs.div_euclid(86_400);
    // Civil date from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let rem = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}Z",
        rem / 3600,
        (rem / 60) % 60
    )
}

#[test]
fn carbon_aware_sdk_routes_and_native_signals() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A forecast from the collector's current hour: 48 half-hours, 200 g
    // for the whole current hour, then falling, with a trough of 20 g at
    // hours 6-7.
    let h0 = NOW / H * H;
    assert_eq!(NOW - h0, 20 * 60_000, "now is 10:20");
    let value = |i: i64| match i {
        0 | 1 => 200,
        12 | 13 => 20,
        _ => 200 - i,
    };
    let data: Vec<String> = (0..48)
        .map(|i| {
            format!(
                r#"{{"from":"{}","to":"{}","intensity":{{"forecast":{},"actual":null,"index":"moderate"}}}}"#,
                ci_time(h0 + i * H / 2),
                ci_time(h0 + (i + 1) * H / 2),
                value(i)
            )
        })
        .collect();
    std::fs::write(
        d.join("gb.json"),
        format!(r#"{{"data":[{}]}}"#, data.join(",")),
    )
    .unwrap();
    let broker = Mosquitto::start().unwrap();
    let http = free_addr().unwrap();
    std::fs::write(
        d.join("collector.toml"),
        format!(
            "[mqtt]\nport = {}\n[store]\npath = \"{}\"\n[http]\nlisten = \"{http}\"\n[carbon]\nzone = \"GB\"\nbasis = \"direct\"\nintensity_basis = \"direct\"\nsource = \"test figure\"\n[[carbon.series]]\npath = \"{}\"\nformat = \"carbon-intensity-json\"\n[carbon.market]\nresidual_mix_g_per_kwh = 400.0\n[carbon.market.supplier]\nfactor_g_per_kwh = 100.0\nshare = 0.5\n",
            broker.port(),
            d.join("ledger.sqlite").display(),
            d.join("gb.json").display()
        ),
    )
    .unwrap();
    let now = NOW.to_string();
    let mut collector =
        start_collector_with_env(d, http, &[("VIGIE_E2E_NOW_MS", now.as_str())]).unwrap();
    let get = |path: &str| http_get(http, path).unwrap();

    let (t0, t1) = (h0, h0 + 24 * H);
    let by = get(&format!(
        "/emissions/bylocation?location=GB&time={t0}&toTime={t1}"
    ))
    .json()
    .unwrap();
    let by = by.as_array().unwrap();
    assert_eq!(by.len(), 48, "{by:?}");
    assert_eq!(by[0]["location"], "GB");
    assert_eq!(by[0]["rating"], 200.0);
    assert_eq!(by[0]["duration"], "00:30:00");

    let best = get(&format!(
        "/emissions/bylocations/best?location=GB&time={t0}&toTime={t1}"
    ))
    .json()
    .unwrap();
    assert_eq!(best.as_array().unwrap().len(), 2, "the two 20 g half-hours");
    assert_eq!(best[0]["rating"], 20.0);

    // Mean over the first hour and a half: (200 + 200 + 198) / 3.
    let avg = get(&format!(
        "/emissions/average-carbon-intensity?location=GB&startTime={t0}&endTime={}",
        t0 + 3 * H / 2
    ))
    .json()
    .unwrap();
    assert!(
        (avg["carbonIntensity"].as_f64().unwrap() - 598.0 / 3.0).abs() < 1e-9,
        "{avg}"
    );

    let f = get(&format!(
        "/emissions/forecasts/current?location=GB&dataStartAt={t0}&dataEndAt={t1}&windowSize=60"
    ))
    .json()
    .unwrap();
    let f = &f[0];
    assert_eq!(f["windowSize"], 60);
    assert_eq!(f["forecastData"].as_array().unwrap().len(), 48);
    // The best hour is the trough, hours 6 to 7, at 20 g.
    assert_eq!(f["optimalDataPoints"][0]["value"], 20.0);
    assert_eq!(
        f["optimalDataPoints"][0]["timestamp"],
        f["forecastData"][12]["timestamp"]
    );

    // Native: a 1-hour, 10 kW job with PUE 1.2.
    let b = get("/api/v1/signals/best-start?duration=1h&power_kw=10&pue=1.2&location=GB")
        .json()
        .unwrap();
    assert_eq!(b["mean_intensity_g_per_kwh"], 20.0);
    assert_eq!(b["pue_source"], "query");
    assert!(
        (b["emissions_g"].as_f64().unwrap() - 10.0 * 20.0 * 1.2).abs() < 1e-9,
        "{b}"
    );
    assert!(
        b["emissions_g_if_started_at_earliest"].as_f64().unwrap()
            > b["emissions_g"].as_f64().unwrap()
    );

    // The site's effective intensity: the grid factor times the PUE given.
    let i = get("/api/v1/signals/intensity?pue=1.5&hours=12")
        .json()
        .unwrap();
    assert_eq!(i["pue_source"], "query", "{i}");
    assert_eq!(i["basis"], "location");
    assert_eq!(i["now"]["grid_g_per_kwh"], 200.0, "{i}");
    assert!((i["now"]["effective_g_per_kwh"].as_f64().unwrap() - 300.0).abs() < 1e-9);
    assert!((i["lowest"]["effective_g_per_kwh"].as_f64().unwrap() - 30.0).abs() < 1e-9);
    let n = i["forecast"].as_array().unwrap().len();
    assert!((24..=25).contains(&n), "12 h of half-hours: {n}");
    // No facility meters here: no measured PUE, and the answer says so.
    let i = get("/api/v1/signals/intensity").json().unwrap();
    assert_eq!(i["pue_source"], "none");
    assert_eq!(i["pue"], 1.0);
    // Market-based: half from the supplier (100 g), half residual mix (400 g).
    let m = get("/api/v1/signals/intensity?basis=market&pue=1.2")
        .json()
        .unwrap();
    assert_eq!(m["basis"], "market");
    assert_eq!(m["now"]["grid_g_per_kwh"], 250.0, "{m}");
    assert!((m["now"]["effective_g_per_kwh"].as_f64().unwrap() - 300.0).abs() < 1e-9);
    // Searches for the best window are bounded (their cost is quadratic).
    let far = h0 + 9 * 24 * H;
    assert_eq!(
        get(&format!(
            "/emissions/forecasts/current?location=GB&dataStartAt={h0}&dataEndAt={far}"
        ))
        .status,
        400
    );
    assert_eq!(
        get(&format!(
            "/api/v1/signals/best-start?duration=1h&location=GB&earliest={h0}&deadline={far}"
        ))
        .status,
        400
    );
    // Without a PUE and without facility meters: 1.0, and it says so; a
    // PUE under 1 is refused, as by the intensity route.
    let b = get("/api/v1/signals/best-start?duration=1h&location=GB")
        .json()
        .unwrap();
    assert_eq!(
        (b["pue"].as_f64(), b["pue_source"].as_str()),
        (Some(1.0), Some("none")),
        "{b}"
    );
    assert_eq!(
        get("/api/v1/signals/best-start?duration=1h&location=GB&pue=0.5").status,
        400
    );
    for bad in [
        "basis=residual",
        "hours=0",
        "hours=1000",
        "pue=0.5",
        "factor=mean",
    ] {
        assert_eq!(
            get(&format!("/api/v1/signals/intensity?{bad}")).status,
            400,
            "{bad}"
        );
    }

    // The Carbon Aware SDK's defaults: without times, observations of the
    // last seven days up to now, no forecast mixed in (the series starts
    // at 10:00; now is 10:20: only the current half-hour).
    let observed = get("/emissions/bylocation?location=GB").json().unwrap();
    let observed = observed.as_array().unwrap();
    assert_eq!(observed.len(), 1, "{observed:?}");
    assert_eq!(observed[0]["rating"], 200.0);
    // A known location without data in the window: 204, as the SDK.
    assert_eq!(
        get("/emissions/bylocation?location=GB&time=2020-01-01T00:00:00Z&toTime=2020-01-02T00:00:00Z")
            .status,
        204
    );
    // Unknown locations are an error naming the known ones, alone or
    // beside a known one, and the KEDA route gives no empty forecast.
    for path in [
        "/emissions/bylocation?location=DE",
        "/emissions/bylocations?location=GB&location=DE",
        "/emissions/bylocations/best?location=DE",
        "/emissions/forecasts/current?location=DE",
        "/api/v1/signals/keda-configmap?location=DE",
    ] {
        let r = get(path);
        assert_eq!(r.status, 400, "{path}: {}", r.body);
        assert!(
            r.body.contains("unknown location") && r.body.contains("GB"),
            "{path}: {}",
            r.body
        );
    }

    let keda = get("/api/v1/signals/keda-configmap?location=GB");
    assert_eq!(keda.status, 200);
    assert!(
        keda.body.contains("kind: ConfigMap") && keda.body.contains("forecast: '[{"),
        "{}",
        keda.body
    );

    // The gauges follow the stored forecast: 200 g now, minimum 20 g.
    let text = get("/metrics").body;
    assert!(
        text.contains(r#"vigie_signal_intensity_grams_per_kwh{zone="GB",factor="average"} 200.0"#),
        "{text}"
    );
    assert!(
        text.contains(r#"vigie_signal_forecast_min_grams_per_kwh{zone="GB"} 20.0"#),
        "{text}"
    );
    assert!(
        text.contains(r#"vigie_grid_intensity_grams_per_kwh{zone="GB"} 200.0"#),
        "{text}"
    );

    let locs = get("/locations").json().unwrap();
    assert_eq!(locs["GB"]["name"], "GB");
    assert_eq!(
        get("/emissions/bylocation").status,
        400,
        "location is required"
    );
    assert!(
        collector
            .interrupt(Duration::from_secs(15))
            .unwrap()
            .success()
    );
}
