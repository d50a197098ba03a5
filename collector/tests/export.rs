//! Regulators' exports of a small site: every field checked, CSV shape,
//! EnEfG targets, the CLI (export, keygen, verify with tamper and wrong
//! key) on the built binary, and the HTTP route.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use vigie_collector::config::CollectorConfig;
use vigie_collector::export::{self, ExportRequest, Format, Regime, date::Date};
use vigie_collector::{site, store};

const KWH: u64 = 3_600_000_000_000;
const MIN: i64 = 60_000;

/// The period: the last two minutes of 2027.
fn period() -> (i64, i64) {
    let to = Date::parse("2028-01-01").unwrap().start_ms();
    (to - 2 * MIN, to)
}

fn add(conn: &rusqlite::Connection, sensor: &str, at: i64, uj: u64) {
    let mut p = store::Pending::default();
    p.minute.insert(
        ("facility".into(), sensor.into(), at),
        store::Amount {
            measured: uj,
            estimated: 0,
        },
    );
    let tx = conn.unchecked_transaction().unwrap();
    store::add_energy(&tx, &p).unwrap();
    tx.commit().unwrap();
}

/// A ledger and configuration: grid 1.5 kWh and IT 1 kWh a minute, 300 L
/// of water and 0.3 kWh of heat delivered read by hand.
fn small_site(dir: &Path) -> (PathBuf, CollectorConfig) {
    site_with(dir, "")
}

/// [`small_site`] with more configuration appended.
fn site_with(dir: &Path, extra: &str) -> (PathBuf, CollectorConfig) {
    let db = dir.join("ledger.sqlite");
    let cfg_path = dir.join("collector.toml");
    let text = format!(
        r#"
[store]
path = "{}"
[carbon]
zone = "FR"
intensity_g_per_kwh = 33.0
source = "test factor"
[site]
installed_it_kw = 800.0
floor_area_m2 = 1200.0
computer_room_area_m2 = 500.0
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
{extra}"#,
        db.display()
    );
    std::fs::write(&cfg_path, &text).unwrap();
    let cfg = CollectorConfig::from_toml(&text).unwrap();
    let mut conn = store::open(&db).unwrap();
    vigie_collector::grid::store::init(&conn).unwrap();
    let (from, to) = period();
    for m in [from, from + MIN] {
        add(&conn, "meter:mains", m, 3 * KWH / 2);
        add(&conn, "pdu:total", m, KWH);
    }
    let reading = |amount| site::ManualReading {
        start_ms: from,
        end_ms: to,
        amount,
        estimated: false,
        note: None,
    };
    site::add_manual(&mut conn, "water", &[reading(300)], 0).unwrap();
    site::add_manual(
        &mut conn,
        "heat-out",
        &[reading(u128::from(3 * KWH / 10))],
        0,
    )
    .unwrap();
    (cfg_path, cfg)
}

fn field<'a>(doc: &'a Value, id: &str) -> &'a Value {
    doc["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == id)
        .unwrap_or_else(|| panic!("no field {id}"))
}

fn close(v: &Value, x: f64) -> bool {
    v.as_f64()
        .is_some_and(|v| (v - x).abs() < 1e-9 * x.abs().max(1.0))
}

fn build(regime: Regime, commissioned: Option<&str>) -> export::Export {
    build_with(regime, commissioned, "")
}

fn build_with(regime: Regime, commissioned: Option<&str>, extra: &str) -> export::Export {
    let dir = tempfile::tempdir().unwrap();
    let (_, cfg) = site_with(dir.path(), extra);
    let conn = store::open(&cfg.store.path).unwrap();
    let (from_ms, to_ms) = period();
    let mut steps = Vec::new();
    let e = export::build(
        &conn,
        &cfg.site,
        &cfg.carbon,
        &ExportRequest {
            regime,
            from_ms,
            to_ms,
            commissioned: commissioned.map(|c| Date::parse(c).unwrap()),
        },
        &mut |s| steps.push(s.to_owned()),
    )
    .unwrap();
    assert!(steps.len() >= 3, "{steps:?}");
    e
}

#[test]
fn eed_export_of_a_small_site_field_by_field() {
    let e = build(Regime::Eed, None);
    let d = &e.doc;
    assert_eq!(d["period"]["from"], "2027-12-31T23:58:00Z");
    assert_eq!(d["period"]["to"], "2028-01-01T00:00:00Z");
    assert_eq!(d["regime"]["site_in_scope"], true);
    // (id, value or None, status, missing share)
    let expect: [(&str, Option<f64>, &str); 36] = [
        ("name", None, "not-declared"),
        ("owner", None, "not-declared"),
        ("operators", None, "not-declared"),
        ("date_of_start", None, "not-declared"),
        ("municipality", None, "not-declared"),
        ("nuts_code", None, "not-declared"),
        ("installed_it_power", Some(800.0), "declared"),
        ("total_floor_area", Some(1200.0), "declared"),
        ("computer_room_floor_area", Some(500.0), "declared"),
        ("redundancy_level_power", None, "not-declared"),
        ("redundancy_level_cooling", None, "not-declared"),
        ("total_energy_consumption", Some(3.0), "measured"),
        ("it_energy_consumption", Some(2.0), "measured"),
        ("backup_generator_energy", None, "not-metered"),
        ("total_water_input", Some(0.3), "measured"),
        ("potable_water_input", None, "not-metered"),
        ("waste_heat_reused", Some(0.3), "measured"),
        ("waste_heat_average_temperature", None, "not-metered"),
        ("temperature_set_points", None, "not-declared"),
        ("renewable_energy_total", Some(0.0), "contractual"),
        (
            "renewable_energy_guarantees_of_origin",
            Some(0.0),
            "contractual",
        ),
        ("renewable_energy_ppa", Some(0.0), "contractual"),
        ("renewable_energy_onsite", Some(0.0), "contractual"),
        ("incoming_traffic_bandwidth", None, "not-declared"),
        ("outgoing_traffic_bandwidth", None, "not-declared"),
        ("incoming_data_traffic", None, "not-declared"),
        ("outgoing_data_traffic", None, "not-declared"),
        ("storage_capacity", None, "not-declared"),
        ("server_capacity", None, "not-declared"),
        ("pue", Some(1.5), "measured"),
        // Data year 2027: WUE on freshwater input (the 2026 amending
        // act), which this site does not meter.
        ("wue", None, "not-metered"),
        ("fuel_energy", None, "not-metered"),
        ("data_centre_type", None, "not-declared"),
        ("freshwater_input", None, "not-metered"),
        ("erf", Some(0.1), "measured"),
        ("ref", Some(0.0), "measured"),
    ];
    assert_eq!(d["fields"].as_array().unwrap().len(), expect.len());
    // Every field names the provision requiring it.
    for f in d["fields"].as_array().unwrap() {
        assert!(!f["legal_ref"].as_str().unwrap().is_empty(), "{f}");
        assert!(f["legal_ref_status"].is_string(), "{f}");
    }
    assert!(!d["methodology"]["acts"].as_array().unwrap().is_empty());
    for (id, value, status) in expect {
        let f = field(d, id);
        match value {
            Some(x) => assert!(close(&f["value"], x), "{id}: {f}"),
            None => assert!(f["value"].is_null(), "{id}: {f}"),
        }
        assert_eq!(f["status"], status, "{id}: {f}");
        if status == "measured" {
            assert_eq!(f["missing_share"], 0.0, "{id}: {f}");
        }
    }
    // Methodology and provenance.
    assert!(
        d["methodology"]["gap_rule"]
            .as_str()
            .unwrap()
            .starts_with("strict")
    );
    assert!(d["methodology"]["formulas"]["PUE"].is_string());
    let ef = &d["provenance"]["emission_factors"];
    assert_eq!(ef["zone"], "FR");
    assert_eq!(ef["static_fallback_source"], "test factor");
    assert_eq!(ef["hours"], 1);
    assert_eq!(ef["hours_on_static_fallback"], 1);
    // One basis, stated for the inventory and its fallback alike, and the
    // rule by which an hour's factor meets energy used in part of it.
    assert_eq!(ef["basis"], "lifecycle");
    assert_eq!(ef["static_fallback_basis"], "lifecycle");
    let m = d["methodology"]["emission_factors"].as_str().unwrap();
    assert!(m.contains("of the lifecycle basis"), "{m}");
    assert!(m.contains(vigie_collector::carbon::HOURLY_RULE), "{m}");
    let meters = d["provenance"]["meters"].as_array().unwrap();
    assert_eq!(meters.len(), 4);
    assert_eq!(meters[0]["sensors"][0], "facility/meter:mains");
    assert_eq!(meters[2]["kind"], "manual readings");
    assert!(
        d["figures"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["indicator"] == "PUE")
    );
    assert!(d.get("targets").is_none());
}

#[test]
fn enefg_checks_targets_and_says_when_the_commissioning_date_is_unknown() {
    let e = build(Regime::Enefg, Some("2010-01-01"));
    let t = e.doc["targets"].as_array().unwrap();
    assert_eq!(t[0]["id"], "pue_max");
    assert_eq!(t[0]["limit"], 1.5);
    assert_eq!(t[0]["result"], "met");
    assert_eq!(t[1]["result"], "not-applicable");
    assert_eq!(t[2]["limit"], 100.0);
    assert_eq!(t[2]["result"], "not-met");
    assert!(close(&field(&e.doc, "erf")["value"], 10.0));
    assert_eq!(e.doc["commissioned"], "2010-01-01");
    let u = build(Regime::Enefg, None);
    assert!(
        u.doc["commissioned"]
            .as_str()
            .unwrap()
            .starts_with("unknown")
    );
    assert_eq!(u.doc["targets"][0]["result"], "unknown-commissioning-date");
}

#[test]
fn enefg_takes_the_configured_commissioning_date_unless_the_request_gives_one() {
    let dir = tempfile::tempdir().unwrap();
    let (_, mut cfg) = small_site(dir.path());
    cfg.site.commissioned = Date::parse("2010-01-01");
    let conn = store::open(&cfg.store.path).unwrap();
    let (from_ms, to_ms) = period();
    let export = |commissioned: Option<&str>| {
        export::build(
            &conn,
            &cfg.site,
            &cfg.carbon,
            &ExportRequest {
                regime: Regime::Enefg,
                from_ms,
                to_ms,
                commissioned: commissioned.map(|c| Date::parse(c).unwrap()),
            },
            &mut |_| {},
        )
        .unwrap()
    };
    let e = export(None);
    assert_eq!(e.doc["commissioned"], "2010-01-01");
    assert_eq!(e.doc["targets"][0]["limit"], 1.5);
    // A site starting 2026-07-01 meets 1.2 from 2028-07-01 (EnEfG § 11(2)
    // sentence 2): at the end of 2027 not yet.
    let e = export(Some("2026-07-01"));
    assert_eq!(e.doc["commissioned"], "2026-07-01");
    assert_eq!(e.doc["targets"][0]["limit"], Value::Null);
    assert_eq!(e.doc["targets"][0]["result"], "not-in-force");
    assert_eq!(e.doc["targets"][0]["applies_from"], "2028-07-01");
    // A day earlier it is an existing site: 1.5 since 2027-07-01.
    let e = export(Some("2026-06-30"));
    assert_eq!(e.doc["targets"][0]["limit"], 1.5);
    assert_eq!(e.doc["targets"][0]["result"], "met");
}

/// A site with register facts, a generator, on-site generation, a heat
/// pump and grid feed-in: grid 1.5, generator 0.5, on-site 0.25, heat
/// pump 0.2 kWh a minute; IT 1 kWh a minute.
fn full_site(renewable: bool, exemption: bool) -> (tempfile::TempDir, CollectorConfig) {
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        r#"[[site.meters]]
name = "genset"
role = "generator"
sensors = [{{ host = "facility", sensor = "gen:out" }}]
[[site.meters]]
name = "pv"
role = "onsite-generation"
sensors = [{{ host = "facility", sensor = "pv:out" }}]
[[site.meters]]
name = "heat-pump"
role = "heat-upgrade"
sensors = [{{ host = "facility", sensor = "hp:in" }}]
[[site.meters]]
name = "feed-in"
role = "grid-export"
sensors = [{{ host = "facility", sensor = "meter:export" }}]
[site.register]
name = "DC Nord"
owner = "Immo GmbH"
operators = ["Ops AG", "Colo SE"]
address = "Hafenstrasse 1, 20457 Hamburg"
postcode = "20457"
municipality = "Hamburg"
nuts_code = "DE600"
siret = "12345678900011"
contact_name = "A. Martin"
contact_email = "dc@example.org"
non_redundant_power_kw = 1400.0
redundancy_power = "2N"
data_centre_type = "colocation"
redundancy_cooling = "N+1"
waste_heat_max_kw = 900.0
waste_heat_control = "supply temperature set by the network operator"
onsite_generation_renewable = {renewable}
{exemption}
[[site.yearly]]
year = 2027
traffic_in_bandwidth_gbps = 40.0
traffic_out_bandwidth_gbps = 40.0
traffic_in_volume_tb = 900.0
traffic_out_volume_tb = 1200.0
storage_capacity_pb = 3.5
server_capacity = 1.0e6
data_stored_tb = 2500.0
data_processed_tb = 8000.0
temperature_set_point_c = 24.0
heat_released_mean_c = 32.0
"#,
        exemption = if exemption {
            r#"[site.register.erf_exemption]
ground = "agreement"
evidence = "Abwaermevereinbarung mit Stadtwerke Hamburg"
date = "2026-05-01""#
        } else {
            ""
        }
    );
    let (_, cfg) = site_with(dir.path(), &extra);
    let conn = store::open(&cfg.store.path).unwrap();
    let (from, _) = period();
    for m in [from, from + MIN] {
        add(&conn, "gen:out", m, KWH / 2);
        add(&conn, "pv:out", m, KWH / 4);
        add(&conn, "hp:in", m, KWH / 5);
        add(&conn, "meter:export", m, KWH / 10);
    }
    (dir, cfg)
}

fn export_of(cfg: &CollectorConfig, regime: Regime, commissioned: Option<&str>) -> Value {
    let conn = store::open(&cfg.store.path).unwrap();
    let (from_ms, to_ms) = period();
    export::build(
        &conn,
        &cfg.site,
        &cfg.carbon,
        &ExportRequest {
            regime,
            from_ms,
            to_ms,
            commissioned: commissioned.map(|c| Date::parse(c).unwrap()),
        },
        &mut |_| {},
    )
    .unwrap()
    .doc
}

#[test]
fn e_dc_counts_every_energy_input_and_onsite_generation_is_renewable_only_when_declared() {
    let (_d, cfg) = full_site(false, false);
    let d = export_of(&cfg, Regime::Eed, None);
    let v = |id| field(&d, id)["value"].clone();
    // Grid 3 + on-site 0.5 + generator 1 kWh over two minutes.
    assert!(
        close(&v("total_energy_consumption"), 4.5),
        "{}",
        v("total_energy_consumption")
    );
    assert!(close(&v("backup_generator_energy"), 1.0));
    // PUE and ERF over the whole E_DC.
    assert!(close(&v("pue"), 2.25), "{}", v("pue"));
    assert!(close(&v("erf"), 0.3 / 4.5), "{}", v("erf"));
    // Not declared renewable: on-site generation is no renewable energy.
    assert!(
        close(&v("renewable_energy_onsite"), 0.0),
        "{}",
        v("renewable_energy_onsite")
    );
    assert!(close(&v("ref"), 0.0), "{}", v("ref"));
    let (_d, cfg) = full_site(true, false);
    let d = export_of(&cfg, Regime::Eed, None);
    let v = |id| field(&d, id)["value"].clone();
    assert!(close(&v("renewable_energy_onsite"), 0.5));
    assert!(close(&v("ref"), 0.5 / 4.5), "{}", v("ref"));
    // Administrative facts and the four traffic items, declared.
    assert_eq!(v("name"), "DC Nord");
    assert_eq!(v("operators"), "Ops AG; Colo SE");
    assert_eq!(v("nuts_code"), "DE600");
    assert!(close(&v("incoming_traffic_bandwidth"), 40.0));
    assert!(close(&v("outgoing_data_traffic"), 1200.0));
    assert!(close(&v("server_capacity"), 1.0e6));
    assert_eq!(field(&d, "server_capacity")["status"], "declared");
}

#[test]
fn enefg_scope_powers_anlage_3_items_heat_pump_pue_and_exemption() {
    let (_d, cfg) = full_site(true, true);
    let d = export_of(&cfg, Regime::Enefg, Some("2026-07-01"));
    let v = |id| field(&d, id)["value"].clone();
    // Two quantities of Anlage 3 no. 1 f, and the scope on the second.
    assert!(close(&v("it_rated_connection_power"), 800.0));
    assert!(close(&v("non_redundant_rated_connection_power"), 1400.0));
    assert_eq!(
        d["regime"]["scope_source"],
        "register.non_redundant_power_kw"
    );
    assert_eq!(d["regime"]["site_in_scope"], true);
    assert_eq!(v("size_class"), "500 kW to < 1 MW");
    assert_eq!(
        v("owner_and_operator"),
        "owner: Immo GmbH; operators: Ops AG; Colo SE"
    );
    assert_eq!(v("postcode"), "20457");
    assert!(close(&v("grid_purchase"), 3.0));
    assert!(close(&v("grid_feed_in"), 0.2));
    assert!(close(&v("heat_released_average_temperature"), 32.0));
    assert!(close(&v("data_processed"), 8000.0));
    // § 11(2) sentence 3: (4.5 - 0.4) / 2, not 4.5 / 2.
    assert!(close(&v("pue"), 2.05), "{}", v("pue"));
    // § 11(3): exempt, with the evidence.
    let t = &d["targets"][1];
    assert_eq!(t["result"], "exempt");
    assert!(
        t["evidence"].as_str().unwrap().contains("Stadtwerke"),
        "{t}"
    );
    // The § 17 platform data set.
    let p = d["waste_heat_platform"]["fields"].as_array().unwrap();
    let max = p
        .iter()
        .find(|f| f["id"] == "maximum_thermal_power")
        .unwrap();
    assert!(close(&max["value"], 900.0));
    // Below 300 kW of non-redundant power the site is out of scope,
    // whatever its IT power.
    let (_d, mut cfg) = full_site(true, false);
    cfg.site.register.non_redundant_power_kw = Some(250.0);
    let d = export_of(&cfg, Regime::Enefg, None);
    assert_eq!(d["regime"]["site_in_scope"], false);
    let d = export_of(&cfg, Regime::Eed, None);
    assert_eq!(d["regime"]["site_in_scope"], true);
    // France: SIRET and the D.236-2 contact.
    let d = export_of(&cfg, Regime::Fr, None);
    assert_eq!(field(&d, "siret")["value"], "12345678900011");
    assert_eq!(field(&d, "contact_email")["value"], "dc@example.org");
}

/// [`full_site`] with fuel read by hand (2.4 kWh over the period: the
/// generator's fuel), 150 L of freshwater, 0.6 kWh of heat released and
/// a certified management system.
fn fuel_site() -> (tempfile::TempDir, CollectorConfig) {
    let (dir, mut cfg) = full_site(true, false);
    let extra: CollectorConfig = CollectorConfig::from_toml(&format!(
        "[store]\npath = \"{}\"\n[carbon]\nzone = \"FR\"\nintensity_g_per_kwh = 33.0\nsource = \"t\"\n[[site.meters]]\nname = \"diesel\"\nrole = \"fuel\"\n[[site.meters]]\nname = \"fresh\"\nrole = \"freshwater\"\n[[site.meters]]\nname = \"dry-coolers\"\nrole = \"heat-rejected\"\n[site.register]\nmanagement_system = {{ kind = \"iso-50001\", since = \"2025-03-01\", certified_until = \"2028-02-29\", certificate = \"DE-50001-42\" }}\n",
        cfg.store.path.display()
    ))
    .unwrap();
    cfg.site.meters.extend(extra.site.meters);
    cfg.site.register.management_system = extra.site.register.management_system;
    let mut conn = store::open(&cfg.store.path).unwrap();
    let (from, to) = period();
    let reading = |amount| site::ManualReading {
        start_ms: from,
        end_ms: to,
        amount,
        estimated: false,
        note: None,
    };
    site::add_manual(&mut conn, "diesel", &[reading(u128::from(12 * KWH / 5))], 0).unwrap();
    site::add_manual(&mut conn, "fresh", &[reading(150)], 0).unwrap();
    site::add_manual(
        &mut conn,
        "dry-coolers",
        &[reading(u128::from(3 * KWH / 5))],
        0,
    )
    .unwrap();
    (dir, cfg)
}

#[test]
fn e_dc_counts_fuel_in_place_of_the_electricity_made_from_it() {
    let (_d, cfg) = fuel_site();
    let d = export_of(&cfg, Regime::Eed, None);
    let v = |id| field(&d, id)["value"].clone();
    // Grid 3 + on-site PV 0.5 (declared renewable) + fuel 2.4 kWh; the
    // generator's 1 kWh of electricity is made from that fuel.
    assert!(close(&v("fuel_energy"), 2.4), "{}", v("fuel_energy"));
    assert!(
        close(&v("total_energy_consumption"), 5.9),
        "{}",
        v("total_energy_consumption")
    );
    // PUE and ERF over that E_DC, fuel read by hand spread over the
    // metered minutes: not 4.5 / 2.
    assert!(close(&v("pue"), 2.95), "{}", v("pue"));
    assert!(close(&v("erf"), 0.3 / 5.9), "{}", v("erf"));
    assert!(close(&v("ref"), 0.5 / 5.9), "{}", v("ref"));
    // EnEfG Anlage 3 Nr. 2 a is electricity including own generation,
    // without the fuel; its PUE takes the whole E_DC, less the heat pump.
    let d = export_of(&cfg, Regime::Enefg, Some("2026-07-01"));
    let v = |id| field(&d, id)["value"].clone();
    assert!(
        close(&v("total_electricity"), 4.5),
        "{}",
        v("total_electricity")
    );
    assert!(close(&v("pue"), (5.9 - 0.4) / 2.0), "{}", v("pue"));
}

#[test]
fn eed_wue_takes_freshwater_from_data_year_2026() {
    let (_d, cfg) = fuel_site();
    let d = export_of(&cfg, Regime::Eed, None);
    let wue = field(&d, "wue");
    // 2027: 150 L of freshwater over 2 kWh of IT, not the 300 L of water.
    assert!(close(&wue["value"], 75.0), "{wue}");
    assert!(
        wue["note"].as_str().unwrap().contains("freshwater"),
        "{wue}"
    );
    assert!(close(&field(&d, "freshwater_input")["value"], 0.15));
    // Without a freshwater meter: not metered, saying why.
    let d = build(Regime::Eed, None).doc;
    let wue = field(&d, "wue");
    assert_eq!(wue["status"], "not-metered", "{wue}");
    assert!(
        wue["note"].as_str().unwrap().contains("freshwater"),
        "{wue}"
    );
    // Before 2026: total water input, as the KPI computes it.
    let dir = tempfile::tempdir().unwrap();
    let (_, cfg) = small_site(dir.path());
    let conn = store::open(&cfg.store.path).unwrap();
    let d = export::build(
        &conn,
        &cfg.site,
        &cfg.carbon,
        &ExportRequest {
            regime: Regime::Eed,
            from_ms: Date::parse("2025-12-31").unwrap().start_ms(),
            to_ms: Date::parse("2026-01-01").unwrap().start_ms(),
            commissioned: None,
        },
        &mut |_| {},
    )
    .unwrap()
    .doc;
    let wue = field(&d, "wue");
    assert!(
        wue["note"].as_str().unwrap().contains("total water input"),
        "{wue}"
    );
    assert_eq!(d["due_by"], "2026-05-15");
}

#[test]
fn enefg_management_system_load_profile_and_due_date() {
    let (_d, mut cfg) = fuel_site();
    let d = export_of(&cfg, Regime::Enefg, Some("2026-07-01"));
    assert_eq!(d["due_by"], "2028-03-31");
    let o = d["obligations"].as_array().unwrap();
    assert_eq!(
        (o[0]["id"].as_str(), o[0]["result"].as_str()),
        (Some("ems_in_place"), Some("met"))
    );
    assert_eq!(o[0]["deadline"], "2025-07-01");
    // 1400 kW, certified until 2028-02-29: met on 2027-12-31.
    assert_eq!(o[1]["result"], "met", "{}", o[1]);
    assert!(o[1]["evidence"].as_str().unwrap().contains("DE-50001-42"));
    // The § 17 load profile: the one month of the period.
    let p = d["waste_heat_platform"]["fields"].as_array().unwrap();
    let prof = p.iter().find(|f| f["id"] == "annual_load_profile").unwrap();
    let months = prof["value"].as_array().unwrap();
    assert_eq!(months.len(), 1, "{prof}");
    assert_eq!(months[0]["month"], "2027-12");
    assert!(close(&months[0]["heat_kwh"], 0.6), "{prof}");
    // 0.6 kWh over two minutes: 18 kW on average.
    assert!(close(&months[0]["mean_kw"], 18.0), "{prof}");
    assert_eq!(prof["status"], "measured");
    // CSV: the obligations and the profile.
    let csv = String::from_utf8(export::Export { doc: d }.render(Format::Csv)).unwrap();
    assert!(csv.contains("obligation,ems_certified,"), "{csv}");
    assert!(csv.contains("2027-12=0.6"), "{csv}");
    // Not certified: not met for a 1.4 MW site.
    if let Some(m) = cfg.site.register.management_system.as_mut() {
        m.certified_until = None;
    }
    let d = export_of(&cfg, Regime::Enefg, Some("2026-07-01"));
    assert_eq!(d["obligations"][1]["result"], "not-met");
}

#[test]
fn renewable_split_from_guarantees_of_origin_and_ppas_pro_rata() {
    // 2027 volumes; two minutes are 120 000 / 31 536 000 000 of the year:
    // 394.2 MWh -> 1.5 kWh, 197.1 MWh -> 0.75 kWh. A non-renewable
    // certificate does not count.
    let extra = "[[carbon.market.instruments]]\nname = \"GO hydro\"\nkind = \"certificate\"\norigin = \"renewable\"\nyear = 2027\nvolume_mwh = 394.2\n[[carbon.market.instruments]]\nname = \"wind PPA\"\nkind = \"ppa\"\norigin = \"renewable\"\nyear = 2027\nvolume_mwh = 197.1\n[[carbon.market.instruments]]\nname = \"nuclear\"\nkind = \"certificate\"\norigin = \"carbon-free\"\nyear = 2027\nvolume_mwh = 1000.0\n";
    let e = build_with(Regime::Eed, None, extra);
    let v = |id| field(&e.doc, id)["value"].clone();
    assert!(close(&v("renewable_energy_guarantees_of_origin"), 1.5));
    assert!(close(&v("renewable_energy_ppa"), 0.75));
    assert!(close(&v("renewable_energy_onsite"), 0.0));
    assert!(close(&v("renewable_energy_total"), 2.25));
    assert!(close(&v("ref"), 0.75), "{}", v("ref"));
    let instruments = e.doc["provenance"]["instruments"].as_array().unwrap();
    assert_eq!(instruments.len(), 3);
    assert_eq!(instruments[1]["kind"], "ppa");
    // EnEfG: 75 % renewable, short of the 100 % in force at the end of 2027.
    let g = build_with(Regime::Enefg, Some("2010-01-01"), extra);
    assert!(close(&field(&g.doc, "renewable_share")["value"], 75.0));
    assert_eq!(g.doc["targets"][2]["result"], "not-met");
}

#[test]
fn heat_from_a_register_meter_carries_its_energy_weighted_temperature() {
    let dir = tempfile::tempdir().unwrap();
    // The heat meter is a register this time (no hand readings for it).
    let (_, mut cfg) = small_site(dir.path());
    cfg.site.meters.retain(|m| m.name != "heat-out");
    cfg.site.meters.push(
        toml::from_str(
            "name = \"heat-reg\"\nrole = \"heat-delivered\"\nregister = { host = \"facility\", sensor = \"hm:1\", quantity = \"heat-energy-kwh\" }\n",
        )
        .unwrap(),
    );
    let (from, to) = period();
    use vigie_protocol::GaugeQuantity::{
        HeatEnergyKwh, ReturnTemperatureCelsius, SupplyTemperatureCelsius,
    };
    let g = |q, t, v| vigie_protocol::Gauge {
        sensor: "hm:1".into(),
        quantity: q,
        value: v,
        at_ms: t,
    };
    // 0.1 kWh at 60 degC, then 0.3 kWh at 70 degC: (6 + 21) / 0.4 = 67.5.
    let mut conn = store::open(&cfg.store.path).unwrap();
    let tx = conn.transaction().unwrap();
    store::record_registers(
        &tx,
        "facility",
        &[
            g(HeatEnergyKwh, from, 100.0),
            g(HeatEnergyKwh, from + MIN, 100.1),
            g(HeatEnergyKwh, to, 100.4),
            g(SupplyTemperatureCelsius, from + MIN, 60.0),
            g(ReturnTemperatureCelsius, from + MIN, 40.0),
            g(SupplyTemperatureCelsius, to, 70.0),
            g(ReturnTemperatureCelsius, to, 45.0),
        ],
    )
    .unwrap();
    tx.commit().unwrap();
    let e = export::build(
        &conn,
        &cfg.site,
        &cfg.carbon,
        &ExportRequest {
            regime: Regime::Eed,
            from_ms: from,
            to_ms: to,
            commissioned: None,
        },
        &mut |_| {},
    )
    .unwrap();
    let f = field(&e.doc, "waste_heat_average_temperature");
    assert!(close(&f["value"], 67.5), "{f}");
    assert_eq!(f["status"], "measured");
    assert!(close(&field(&e.doc, "waste_heat_reused")["value"], 0.4));
    assert!(close(&field(&e.doc, "erf")["value"], 0.4 / 3.0));
    let meters = e.doc["provenance"]["meters"].as_array().unwrap();
    assert_eq!(meters[3]["kind"], "register");
    assert_eq!(meters[3]["register"]["sensor"], "hm:1");
}

/// The checked-in exports of the small site: a change of the export's
/// shape or of a field table shows up as a diff of these files.
/// `VIGIE_UPDATE_GOLDEN=1 cargo test -p vigie-collector --test export` rewrites them.
#[test]
fn exports_match_the_checked_in_golden_files() {
    let golden = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("exports/golden");
    for (regime, name) in [
        (Regime::Eed, "eed-small-site.json"),
        (Regime::Enefg, "enefg-small-site.csv"),
        (Regime::Fr, "fr-small-site.json"),
    ] {
        let mut e = build(regime, Some("2010-01-01"));
        // The version changes with every release; the shape does not.
        e.doc["generator"] = Value::from("vigie-collector");
        let format = if name.ends_with(".csv") {
            Format::Csv
        } else {
            Format::Json
        };
        let bytes = e.render(format);
        let path = golden.join(name);
        if std::env::var_os("VIGIE_UPDATE_GOLDEN").is_some() {
            std::fs::create_dir_all(&golden).unwrap();
            std::fs::write(&path, &bytes).unwrap();
        }
        let want = std::fs::read(&path).unwrap_or_default();
        assert!(
            want == bytes,
            "{} differs from this build's export; if the change is meant, rerun with VIGIE_UPDATE_GOLDEN=1 and commit the file:\n{}",
            path.display(),
            String::from_utf8_lossy(&bytes)
        );
    }
    // A site declaring every register fact, with a generator, on-site
    // renewable generation, a heat pump, feed-in and a § 11(3) exemption.
    let (_d, cfg) = full_site(true, true);
    for (regime, name) in [
        (Regime::Eed, "eed-full-site.json"),
        (Regime::Enefg, "enefg-full-site.json"),
        (Regime::Fr, "fr-full-site.json"),
    ] {
        let mut doc = export_of(&cfg, regime, Some("2026-07-01"));
        doc["generator"] = Value::from("vigie-collector");
        let bytes = export::Export { doc }.render(Format::Json);
        let path = golden.join(name);
        if std::env::var_os("VIGIE_UPDATE_GOLDEN").is_some() {
            std::fs::write(&path, &bytes).unwrap();
        }
        let want = std::fs::read(&path).unwrap_or_default();
        assert!(
            want == bytes,
            "{} differs from this build's export; if the change is meant, rerun with VIGIE_UPDATE_GOLDEN=1 and commit the file:\n{}",
            path.display(),
            String::from_utf8_lossy(&bytes)
        );
    }
}

#[test]
fn csv_has_one_line_per_field_and_target() {
    let e = build(Regime::Enefg, Some("2010-01-01"));
    let csv = String::from_utf8(e.render(Format::Csv)).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert!(lines[0].starts_with("# vigie export regime=enefg from=2027-12-31T23:58:00Z"));
    assert_eq!(
        lines[1],
        "section,id,label,value,unit,status,missing_share,source,legal_ref"
    );
    let t = Regime::Enefg.table().unwrap();
    // Fields, platform rows, three targets and two § 12 obligations.
    assert_eq!(lines.len(), 2 + t.fields.len() + t.platform.len() + 3 + 2);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("obligation,ems_in_place,"))
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("field,pue,")
                && l.contains(",1.5,1,measured,0,derived.pue_enefg,")),
        "{lines:?}"
    );
    assert!(lines.iter().any(|l| l.starts_with("target,pue_max,")));
    // Every line has 8 cells (labels with commas are quoted).
    for l in &lines[1..] {
        let mut cells = 1;
        let mut quoted = false;
        for c in l.chars() {
            match c {
                '"' => quoted = !quoted,
                ',' if !quoted => cells += 1,
                _ => {}
            }
        }
        assert_eq!(cells, 9, "{l}");
    }
    let fr = build(Regime::Fr, None);
    assert!(close(
        &field(&fr.doc, "total_energy_consumption")["value"],
        3.0
    ));
    assert!(close(&field(&fr.doc, "total_water_input")["value"], 0.3));
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vigie-collector"))
}

fn run(c: &mut Command) -> (bool, String, String) {
    let o = c.output().unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn cli_exports_signs_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, _) = small_site(dir.path());
    let keys = dir.path().join("keys");
    let (ok, _, err) = run(bin().args(["export", "keygen", "--out"]).arg(&keys));
    assert!(ok, "{err}");
    let (key, public) = (
        keys.join("export-signing.key"),
        keys.join("export-signing.pub"),
    );
    let out = dir.path().join("eed-2027.json");
    let (from, to) = period();
    let (ok, _, err) = run(bin()
        .args(["export", "--regime", "eed", "--format", "json"])
        .args(["--from", &from.to_string(), "--to", &to.to_string()])
        .arg("--config")
        .arg(&cfg)
        .arg("--out")
        .arg(&out)
        .arg("--key")
        .arg(&key));
    assert!(ok, "{err}");
    for step in ["reading meters", "writing", "signing", "sha-256"] {
        assert!(err.contains(step), "no progress line for {step}: {err}");
    }
    let doc: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert!(close(&field(&doc, "pue")["value"], 1.5));
    let sha_line = std::fs::read_to_string(dir.path().join("eed-2027.json.sha256")).unwrap();
    assert!(sha_line.ends_with("  eed-2027.json\n"), "{sha_line}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("eed-2027.json.sig"))
            .unwrap()
            .trim()
            .len(),
        128
    );
    let verify = |public: &Path| {
        run(bin()
            .arg("verify")
            .arg("--public-key")
            .arg(public)
            .arg(&out))
    };
    let (ok, _, err) = verify(&public);
    assert!(ok, "{err}");
    assert!(err.contains("OK"), "{err}");

    // One byte changed.
    let good = std::fs::read(&out).unwrap();
    let mut bad = good.clone();
    bad[20] ^= 0x01;
    std::fs::write(&out, &bad).unwrap();
    let (ok, _, err) = verify(&public);
    assert!(!ok);
    assert!(err.contains("SHA-256 mismatch"), "{err}");

    // Another key.
    std::fs::write(&out, &good).unwrap();
    let other = dir.path().join("other");
    assert!(run(bin().args(["export", "keygen", "--out"]).arg(&other)).0);
    let (ok, _, err) = verify(&other.join("export-signing.pub"));
    assert!(!ok);
    assert!(err.contains("does not verify"), "{err}");

    // CSV to stdout; a bad regime is refused with a clear message.
    let (ok, csv, err) = run(bin()
        .args([
            "export",
            "--regime",
            "fr",
            "--format",
            "csv",
            "--from",
            "2027-12-31T23:58:00Z",
            "--to",
            "2028-01-01",
        ])
        .arg("--config")
        .arg(&cfg));
    assert!(ok, "{err}");
    assert_eq!(
        csv.lines().nth(1),
        Some("section,id,label,value,unit,status,missing_share,source,legal_ref")
    );
    let (ok, _, err) = run(bin()
        .args(["export", "--regime", "xx"])
        .arg("--config")
        .arg(&cfg));
    assert!(!ok);
    assert!(err.contains("eed, enefg or fr"), "{err}");
    // No ledger where the configuration says: refused, none created.
    let missing = dir.path().join("missing.toml");
    let ledger = dir.path().join("nowhere.sqlite");
    std::fs::write(
        &missing,
        format!("[store]\npath = \"{}\"\n", ledger.display()),
    )
    .unwrap();
    let (ok, _, err) = run(bin()
        .args(["export", "--regime", "eed", "--config"])
        .arg(&missing));
    assert!(!ok);
    assert!(err.contains("no ledger at"), "{err}");
    assert!(!ledger.exists());
    // --key without --out.
    let (ok, _, err) = run(bin()
        .args(["export", "--regime", "eed", "--key"])
        .arg(&key)
        .arg("--config")
        .arg(&cfg));
    assert!(!ok);
    assert!(err.contains("--key needs --out"), "{err}");
}

#[tokio::test]
async fn http_route_serves_the_export_with_its_digest() {
    let dir = tempfile::tempdir().unwrap();
    let (_, cfg) = small_site(dir.path());
    let state = app_state(&cfg);
    let app = vigie_collector::api::router(state, None);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let get = |path: String| raw_get(addr, path);
    let (from, to) = period();
    let (head, body) = get(format!(
        "/api/v1/exports/enefg?from={from}&to={to}&commissioned=2010-01-01"
    ))
    .await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let digest = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(": ")?;
            name.eq_ignore_ascii_case("digest")
                .then(|| value.to_owned())
        })
        .unwrap();
    let want = export::sign::base64(&export::sign::sha256(body.as_bytes()));
    assert_eq!(digest, format!("sha-256={want}"));
    let doc: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["targets"][0]["result"], "met");
    let (head, body) = get(format!(
        "/api/v1/exports/eed?from={from}&to={to}&format=csv"
    ))
    .await;
    assert!(head.contains("text/csv"), "{head}");
    assert!(body.contains("field,pue,"), "{body}");
    let (head, _) = get("/api/v1/exports/nope".into()).await;
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
}

#[tokio::test]
async fn http_exports_are_signed_with_the_configured_key_and_verify() {
    let dir = tempfile::tempdir().unwrap();
    let (_, cfg) = small_site(dir.path());
    let keys = dir.path().join("keys");
    let (private, _) = export::sign::keygen(&keys).unwrap();
    let state =
        app_state(&cfg).with_signing_key(Some(export::sign::load_signing_key(&private).unwrap()));
    let app = vigie_collector::api::router(state, None);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let get = |path: String| raw_get(addr, path);
    let header = |head: &str, name: &str| {
        head.lines().find_map(|l| {
            let (n, v) = l.split_once(": ")?;
            n.eq_ignore_ascii_case(name).then(|| v.to_owned())
        })
    };
    // The regulator fetches the public key once.
    let (head, pem) = get("/api/v1/exports/public-key".into()).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"), "{pem}");
    let public = dir.path().join("vigie.pub");
    std::fs::write(&public, &pem).unwrap();
    // Downloads an export and saves the signature header as FILE.sig.
    let (from, to) = period();
    let (head, body) = get(format!(
        "/api/v1/exports/eed?from={from}&to={to}&format=csv"
    ))
    .await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let sig = header(&head, "vigie-signature").expect("signed");
    let hex = sig.strip_prefix("ed25519=").unwrap();
    assert_eq!(hex.len(), 128);
    let file = dir.path().join("eed.csv");
    std::fs::write(&file, &body).unwrap();
    export::sign::write_sidecars(&file, body.as_bytes(), None).unwrap();
    std::fs::write(dir.path().join("eed.csv.sig"), format!("{hex}\n")).unwrap();
    let (ok, out, err) = run(bin()
        .arg("verify")
        .arg("--public-key")
        .arg(&public)
        .arg(&file));
    assert!(ok, "{out}{err}");
    // One byte changed, with a matching digest: the signature catches it.
    let forged = body.replacen("field", "fielD", 1);
    std::fs::write(&file, &forged).unwrap();
    export::sign::write_sidecars(&file, forged.as_bytes(), None).unwrap();
    let (ok, _, err) = run(bin()
        .arg("verify")
        .arg("--public-key")
        .arg(&public)
        .arg(&file));
    assert!(!ok && err.to_lowercase().contains("signature"), "{err}");
    // The permit dossier is signed the same way.
    let (head, body) = get(format!("/api/v1/dossier?from={from}&to={to}&format=html")).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let sig = header(&head, "vigie-signature").expect("signed dossier");
    let bytes: Vec<u8> = (0..128)
        .step_by(2)
        .map(|i| u8::from_str_radix(&sig["ed25519=".len()..][i..i + 2], 16).unwrap())
        .collect();
    let sig = ed25519_dalek::Signature::from_slice(&bytes).unwrap();
    let public = export::sign::load_verifying_key(&public).unwrap();
    public.verify_strict(body.as_bytes(), &sig).unwrap();
    assert!(
        public
            .verify_strict(body.replacen("<", "&lt;", 1).as_bytes(), &sig)
            .is_err()
    );
}

#[tokio::test]
async fn without_a_key_the_public_key_route_says_exports_are_unsigned() {
    let resp = vigie_collector::export::http::public_key(None);
    assert_eq!(resp.status(), 404);
}

/// The collector's API state over `cfg`'s ledger.
fn app_state(cfg: &vigie_collector::config::CollectorConfig) -> vigie_collector::api::AppState {
    vigie_collector::api::AppState::new(
        cfg.store.path.clone(),
        std::sync::Arc::new(vigie_collector::metrics::Metrics::new(
            "FR",
            vigie_energy::GramsPerKwh(33.0),
        )),
        vigie_collector::api::Factor {
            zone: "FR".into(),
            g_per_kwh: 33.0,
            kind: "average",
            source: "test".into(),
            estimated: false,
        },
        cfg.carbon.clone(),
        cfg.site.clone(),
    )
}

/// One HTTP/1.1 GET over a fresh connection: the head and the body.
async fn raw_get(addr: std::net::SocketAddr, path: String) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8(buf).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    (head.to_owned(), body.to_owned())
}

/// An export of an inventory whose static factor is of another basis than
/// the inventory's is refused, as `run` refuses it, with the reason.
#[test]
fn cli_refuses_an_export_mixing_factor_bases() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, _) = small_site(dir.path());
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("[carbon]\n", "[carbon]\nbasis = \"direct\"\n");
    std::fs::write(&cfg, text).unwrap();
    let (from, to) = period();
    let out = dir.path().join("eed.json");
    let (ok, _, err) = run(bin()
        .args(["export", "--regime", "eed", "--format", "json"])
        .args(["--from", &from.to_string(), "--to", &to.to_string()])
        .arg("--config")
        .arg(&cfg)
        .arg("--out")
        .arg(&out));
    assert!(!ok);
    assert!(err.contains("intensity_basis"), "{err}");
    assert!(!out.exists());
}
