//! The README's first command: `vigie-collector demo` starts with nothing
//! installed, serves non-zero energy on /metrics, and exits cleanly on SIGINT.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;
use vigie_e2e::start_demo;
use vigie_testkit::{http_get, wait_for};

#[test]
fn demo_serves_energy_and_stops_on_sigint() {
    let dir = tempfile::tempdir().unwrap();
    let (mut demo, http) = start_demo(dir.path(), &[]).unwrap();
    let data = dir.path().join("data");
    let joules = wait_for(
        "non-zero energy on /metrics",
        Duration::from_secs(60),
        Duration::from_millis(250),
        || {
            let body = http_get(http, "/metrics").ok()?.body;
            let total: f64 = body
                .lines()
                .filter(|l| l.starts_with("vigie_energy_joules_total{"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum();
            let hosts: std::collections::BTreeSet<&str> = body
                .lines()
                .filter_map(|l| {
                    l.strip_prefix("vigie_energy_joules_total{host=\"")?
                        .split('"')
                        .next()
                })
                .collect();
            (total > 0.0 && hosts.len() == 3).then_some(total)
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", demo.log_tail()));
    assert!(joules > 0.0);
    // Signed from agent to ledger: each agent has its key, the collector
    // requires signatures, and no message of the demo was refused.
    assert!(data.join("agent-demo-01.key").is_file());
    let log = std::fs::read_to_string(dir.path().join("demo.log")).unwrap();
    assert!(log.contains("signed messages required"), "{log}");
    let metrics = http_get(http, "/metrics").unwrap().body;
    for reason in ["unsigned", "bad_signature", "unknown_key"] {
        let series = format!("vigie_ingest_rejected_total{{reason=\"{reason}\"}} 0");
        assert!(metrics.contains(&series), "{series}");
    }
    let printed = std::fs::read_to_string(dir.path().join("demo.out")).unwrap();
    assert!(
        printed.contains(&format!("http://{http}/metrics")),
        "{printed}"
    );
    // The demo publishes its disclosure page, without a token.
    assert!(
        printed.contains(&format!("http://{http}/public")),
        "{printed}"
    );
    let public = http_get(http, "/public").unwrap();
    assert_eq!(public.status, 200, "{}", public.body);
    assert!(public.body.contains("vigie demo site"));
    assert!(
        !public.body.contains("demo-0"),
        "a host name on the public page"
    );
    // The simulated history gives last year whole: its PUE is measured,
    // higher in July (cooling) than in January.
    let last_year: serde_json::Value = {
        let y = vigie_collector::export::date::Date::from_ms(vigie_service::now_ms()).y - 1;
        let r = http_get(http, &format!("/public/data.json?year={y}")).unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        serde_json::from_str(&r.body).unwrap()
    };
    let text = last_year.to_string();
    let pue = |v: &serde_json::Value| v["pue"]["value"].as_f64().unwrap_or(0.0);
    let months = last_year["months"].as_array().expect(&text);
    assert_eq!(months.len(), 12, "{text}");
    assert_eq!(last_year["total"]["pue"]["status"], "measured", "{text}");
    assert!(pue(&months[6]) > pue(&months[0]), "{text}");
    // The signals scale the grid by the site's measured PUE of the week.
    let i: serde_json::Value =
        serde_json::from_str(&http_get(http, "/api/v1/signals/intensity").unwrap().body).unwrap();
    assert_eq!(i["pue_source"], "measured-7d", "{i}");
    assert!((1.1..1.7).contains(&i["pue"].as_f64().unwrap()), "{i}");

    // One computation of heat for every route: /api/v1/heat over last year
    // gives the heat and ERF of /api/v1/kpi (the history's hour registers
    // have no temperatures: they count all the same).
    {
        let y = vigie_collector::export::date::Date::from_ms(vigie_service::now_ms()).y - 1;
        let q = format!("from={y}-01-01T00:00:00Z&to={}-01-01T00:00:00Z", y + 1);
        let get = |route: &str| -> serde_json::Value {
            let r = http_get(http, &format!("{route}?{q}")).unwrap();
            assert_eq!(r.status, 200, "{route}: {}", r.body);
            serde_json::from_str(&r.body).unwrap()
        };
        let heat = get("/api/v1/heat");
        let kpi = get("/api/v1/kpi");
        let kpi_erf = kpi["figures"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["indicator"] == "ERF")
            .cloned()
            .unwrap_or_else(|| panic!("{kpi}"));
        assert_eq!(heat["erf"], kpi_erf, "{heat}\n{kpi}");
        assert_eq!(heat["erf"]["status"], "measured", "{heat}");
        let kpi_heat = kpi["meters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["role"] == "heat-delivered")
            .map(|m| m["total"].clone())
            .unwrap();
        assert_eq!(heat["delivered"]["total_kwh"], kpi_heat, "{heat}\n{kpi}");
        assert!(kpi_heat.as_f64().unwrap() > 1000.0, "{kpi}");
    }

    // The dossier it serves (last year's) reads without the contradictions
    // of issue 13 (the unit test demo::history_tests checks each in
    // detail on the same configuration).
    {
        let r = http_get(http, "/api/v1/dossier?format=html").unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        let d = &r.body;
        assert!(d.contains("vigie demo site"), "{d}");
        for bad in [
            "site name not configured",
            "about 1 homes",
            "default: 1.3",
            "-0.0",
            "(reference)",
        ] {
            assert!(!d.contains(bad), "{bad:?} in the demo dossier:\n{d}");
        }
        assert!(d.contains("measured: the period"), "{d}");
    }

    // The grid meter's emission counter is /api/v1/scope2's location-based
    // figure for the closed hours (from the history's first hour to 5
    // minutes past the last hour), at the same hourly factors (issue 16).
    let counter_and_api = wait_for(
        "the site emission counter to equal /api/v1/scope2",
        Duration::from_secs(60),
        Duration::from_millis(500),
        || {
            let now = vigie_service::now_ms();
            let closed = (now - 300_000).div_euclid(3_600_000) * 3_600_000;
            let metrics = http_get(http, "/metrics").ok()?.body;
            let g: f64 = metrics.lines().find_map(|l| {
                l.strip_prefix("vigie_site_emissions_location_grams_total{meter=\"mains\"} ")?
                    .parse()
                    .ok()
            })?;
            let y = vigie_collector::export::date::Date::from_ms(now).y - 1;
            let to = vigie_collector::export::date::Date::from_ms(closed);
            let hour = (closed % 86_400_000) / 3_600_000;
            let v: serde_json::Value = http_get(
                http,
                &format!("/api/v1/scope2?from={y}-01-01T00:00:00Z&to={to}T{hour:02}:00:00Z"),
            )
            .ok()?
            .json()
            .ok()?;
            let api_g = v["location_based_kg"].as_f64()? * 1000.0;
            // Not within the hour's grace: an hour closing between the
            // two reads.
            let again = (vigie_service::now_ms() - 300_000).div_euclid(3_600_000) * 3_600_000;
            (again == closed && (g - api_g).abs() <= 1e-9 * api_g.max(1.0) && g > 0.0)
                .then_some((g, api_g))
        },
    );
    assert!(counter_and_api.is_ok(), "{counter_and_api:?}");

    let status = demo.interrupt(Duration::from_secs(20)).unwrap();
    assert!(status.success(), "demo exit {status}\n{}", demo.log_tail());
    let printed = std::fs::read_to_string(dir.path().join("demo.out")).unwrap();
    assert!(printed.contains("stopped."), "{printed}");
    // The ledger it leaves behind holds the energy it served.
    assert!(data.join("ledger.sqlite").is_file());

    // The regulator's commands on the configuration the demo printed: the
    // export is signed with the demo's key and verifies.
    let config = data.join("collector.toml");
    assert!(
        printed.contains(&format!("config:    {}", config.display())),
        "{printed}"
    );
    let collector = vigie_e2e::binary("vigie-collector").unwrap();
    let out = dir.path().join("eed.json");
    let run = |args: &[&std::ffi::OsStr]| {
        let o = std::process::Command::new(&collector)
            .args(args)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    run(&[
        "export".as_ref(),
        "--regime".as_ref(),
        "eed".as_ref(),
        "--config".as_ref(),
        config.as_os_str(),
        "--out".as_ref(),
        out.as_os_str(),
    ]);
    assert!(dir.path().join("eed.json.sig").is_file());
    run(&[
        "verify".as_ref(),
        "--public-key".as_ref(),
        data.join("export-signing.pub").as_os_str(),
        out.as_os_str(),
    ]);
}

#[test]
fn a_busy_port_names_the_address_and_the_flag_that_moves_it() {
    let dir = tempfile::tempdir().unwrap();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_addr = busy.local_addr().unwrap();
    let bin = vigie_e2e::binary("vigie-collector").unwrap();
    let data = dir.path().join("data");
    let run = |args: &[&str]| {
        let mut cmd = std::process::Command::new(&bin);
        cmd.arg("demo")
            .args(args)
            .arg("--dir")
            .arg(&data)
            .current_dir(dir.path());
        // Bounded: a demo that did start is stopped by the kill below.
        let mut child = cmd
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let status = wait_for(
            "the demo to refuse the busy port",
            Duration::from_secs(120),
            Duration::from_millis(100),
            || child.try_wait().ok().flatten(),
        );
        if status.is_err() {
            let _ = child.kill();
        }
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
        (status.map(|s| s.success()), err)
    };
    let mqtt = busy_addr.port().to_string();
    let free_http = vigie_testkit::free_addr().unwrap().to_string();
    let (ok, err) = run(&["--mqtt-port", &mqtt, "--http", &free_http]);
    assert_eq!(ok.ok(), Some(false), "{err}");
    assert!(
        err.contains(&format!("cannot listen on {busy_addr}")),
        "{err}"
    );
    assert!(err.contains("already in use"), "{err}");
    assert!(err.contains("--mqtt-port"), "{err}");

    let free_mqtt = vigie_testkit::free_port().unwrap().to_string();
    let http = busy_addr.to_string();
    let (ok, err) = run(&["--mqtt-port", &free_mqtt, "--http", &http]);
    assert_eq!(ok.ok(), Some(false), "{err}");
    assert!(
        err.contains(&format!("cannot listen on {busy_addr}")),
        "{err}"
    );
    assert!(err.contains("--http"), "{err}");
    drop(busy);
}
