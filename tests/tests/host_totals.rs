//! Issue 13: facility meters polled by a host's agent are not that host's
//! energy. The inventory the agent's device runner publishes for a device
//! configured `counts_in = "site"`, stored in the ledger as the collector
//! stores it, leaves the host's total at the host's own counters while
//! every meter's energy stays in the ledger for the site figures.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::atomic::{AtomicI64, Ordering};
use vigie_agent::checkpoint::Checkpoint;
use vigie_agent::device::{DeviceConfig, DeviceOutput, FakeFacility, spawn};
use vigie_collector::store;

static CLOCK: AtomicI64 = AtomicI64::new(1_700_000_000_000);
fn clock() -> i64 {
    CLOCK.fetch_add(1_000, Ordering::SeqCst)
}

/// What the runner publishes at its first poll of the demo's facility
/// meters (grid and cooling electricity, a heat meter), resumed from
/// registers 2 Wh and 1 Wh behind so that the poll already counts energy.
async fn facility_output(counts_in: Option<&str>) -> DeviceOutput {
    let facility = FakeFacility::new();
    facility.electricity("grid", 1000.0, 10);
    facility.electricity("cooling", 300.0, 5);
    facility.heat("heat", 0.5, 45.0, 30.0);
    let mut cfg = serde_json::json!({"name": "facility", "period": "1s"});
    if let Some(c) = counts_in {
        cfg["counts_in"] = c.into();
    }
    let cfg: DeviceConfig = serde_json::from_value(cfg).unwrap();
    let before = CLOCK.load(Ordering::SeqCst) - 1_000;
    let resume = [("facility:grid", 8), ("facility:cooling", 4)].map(|(sensor, raw)| Checkpoint {
        sensor: sensor.into(),
        raw_uj: raw,
        at_ms: before,
    });
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    let task = spawn(&cfg, Box::new(facility), tx, clock, &resume);
    let first = rx.recv().await.unwrap();
    task.abort();
    first
}

/// The host's total as the collector computes it for `/api/v1/hosts`:
/// every sensor of the host less those its inventory leaves out.
fn host_total(db: &std::path::Path, host: &str) -> u128 {
    let conn = store::open(db).unwrap();
    let uncounted = store::uncounted_sensors_of(&conn, host).unwrap();
    store::totals(&conn)
        .unwrap()
        .into_iter()
        .filter(|(h, s, _)| h == host && !uncounted.contains(s))
        .map(|(_, _, t)| t.measured)
        .sum()
}

/// A ledger holding the host's own RAPL energy, the facility readings and
/// the inventory (the RAPL sensor plus what the runner announced).
fn ledger_with(db: &std::path::Path, out: &DeviceOutput) {
    let mut conn = store::open(db).unwrap();
    let mut meta = vigie_protocol::samples::meta();
    meta.host = "demo-01".into();
    meta.sensors.retain(|s| s.name == "rapl:package-0");
    meta.sensors.extend(out.new_sensors.iter().cloned());
    let mut p = store::Pending::default();
    let mut add = |sensor: &str, uj: u64| {
        let key = ("demo-01".to_owned(), sensor.to_owned(), 0i64);
        let a = store::Amount {
            measured: uj,
            estimated: 0,
        };
        p.minute.insert(key.clone(), a);
        p.hour.insert(key, a);
    };
    add("rapl:package-0", 1_000_007);
    for r in &out.readings {
        add(&r.sensor, r.energy_uj);
    }
    let tx = conn.transaction().unwrap();
    store::add_energy(&tx, &p).unwrap();
    store::set_meta(
        &tx,
        "demo",
        "demo-01",
        &serde_json::to_string(&meta).unwrap(),
    )
    .unwrap();
    tx.commit().unwrap();
}

#[tokio::test]
async fn facility_meters_of_the_site_are_not_in_the_polling_hosts_total() {
    let site = facility_output(Some("site")).await;
    let meters: Vec<(&str, u64)> = site
        .readings
        .iter()
        .map(|r| (r.sensor.as_str(), r.energy_uj))
        .collect();
    assert_eq!(
        meters,
        [
            ("facility:grid", 2 * 3_600_000_000),
            ("facility:cooling", 3_600_000_000)
        ]
    );
    // The agent says so: none of them is in totals.
    assert!(
        site.new_sensors
            .iter()
            .filter(|m| m.method.is_some())
            .all(|m| !m.in_totals()),
        "{:?}",
        site.new_sensors
    );
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ledger.sqlite");
    ledger_with(&db, &site);
    // The host's total is its own counter...
    assert_eq!(host_total(&db, "demo-01"), 1_000_007);
    // ...and the meters' energy is in the ledger all the same.
    let totals = store::totals(&store::open(&db).unwrap()).unwrap();
    let of = |sensor: &str| {
        totals
            .iter()
            .find(|(_, s, _)| s == sensor)
            .map(|(_, _, t)| t.measured)
    };
    assert_eq!(of("facility:grid"), Some(2 * 3_600_000_000));
    assert_eq!(of("facility:cooling"), Some(3_600_000_000));

    // A device that is the host's own (the default) still adds to it.
    let own = facility_output(None).await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ledger.sqlite");
    ledger_with(&db, &own);
    assert_eq!(host_total(&db, "demo-01"), 1_000_007 + 3 * 3_600_000_000);
}
