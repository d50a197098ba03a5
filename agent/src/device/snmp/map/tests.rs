//! Unit tests of the OID maps: every embedded map, detection, plans and
//! extraction from made-up snapshots.

#![allow(clippy::unwrap_used)]
use super::*;

fn oid(t: &str) -> Oid {
    parse_oid(t).unwrap()
}

#[test]
fn every_embedded_map_parses_and_names_are_unique() {
    let all = models().unwrap();
    assert_eq!(all.len(), EMBEDDED.len());
    for m in all {
        assert!(
            !m.plan().get.is_empty() || !m.plan().walk.is_empty(),
            "{}",
            m.name
        );
    }
}

#[test]
fn detection_takes_the_longest_prefix() {
    let m = detect(&oid("1.3.6.1.4.1.318.1.3.4.6")).unwrap().unwrap();
    assert_eq!(m.name, "apc-rpdu2");
    let m = detect(&oid("1.3.6.1.4.1.318.1.3.4.8")).unwrap().unwrap();
    assert_eq!(m.name, "apc-rpdu");
    let m = detect(&oid("1.3.6.1.4.1.13742.6")).unwrap().unwrap();
    assert_eq!(m.name, "raritan-pdu2");
    assert!(detect(&oid("1.3.6.1.4.1.9.1.1")).unwrap().is_none());
    assert!(model("nope").unwrap_err().contains("apc-rpdu2"));
}

const TEST_MAP: &str = r#"
    name = "test"
    description = "t"
    unavailable = [-1]
    [[points]]
    point = "device"
    oid = "1.9.1.0"
    measures = "power"
    multiply = 10
    [[points]]
    point = "outlet-{n}"
    column = "1.9.2.1.5"
    index = "1.{i}"
    vars = { n = "1.9.2.1.2" }
    where = { "1.9.2.1.3" = 1 }
    measures = "current"
    divide = 10
    [[points]]
    point = "outlet-{n}"
    column = "1.9.2.1.6"
    index = "1.{i}"
    vars = { n = "1.9.2.1.2" }
    decimals = "1.9.3.1"
    measures = "energy"
    uj_per_unit = 3_600_000_000
    counter = "u32"
"#;

#[test]
fn plan_gets_scalars_and_walks_columns_once() {
    let m = Model::parse(TEST_MAP).unwrap();
    let plan = m.plan();
    assert_eq!(plan.get, vec![oid("1.9.1.0")]);
    assert_eq!(
        plan.walk,
        vec![
            oid("1.9.2.1.5"),
            oid("1.9.2.1.2"),
            oid("1.9.2.1.3"),
            oid("1.9.2.1.6"),
            oid("1.9.3.1")
        ]
    );
}

#[test]
fn extraction_scales_names_filters_and_skips() {
    let m = Model::parse(TEST_MAP).unwrap();
    let mut snap = Snapshot::new();
    let mut put = |o: &str, r: Raw| {
        snap.insert(oid(o), r);
    };
    put("1.9.1.0", Raw::Num(121));
    // Row 1.1: label "A 1", module 1; row 1.2: module 2 (filtered out).
    put("1.9.2.1.2.1.1", Raw::Text("A 1".into()));
    put("1.9.2.1.2.1.2", Raw::Num(2));
    put("1.9.2.1.3.1.1", Raw::Num(1));
    put("1.9.2.1.3.1.2", Raw::Num(2));
    put("1.9.2.1.5.1.1", Raw::Num(16));
    put("1.9.2.1.5.1.2", Raw::Num(7));
    put("1.9.2.1.5.2.1", Raw::Num(9)); // pdu 2: index literal does not match
    // Energy: 1 decimal digit => units of 0.1 Wh; row 2 unavailable.
    put("1.9.2.1.6.1.1", Raw::Num(12345));
    put("1.9.2.1.6.1.2", Raw::Num(-1));
    put("1.9.3.1.1.1", Raw::Num(1));
    let ex = m.extract(&snap);
    assert_eq!(
        ex.values,
        vec![
            PointValue {
                point: "device".into(),
                value: Value::PowerW(1210.0)
            },
            PointValue {
                point: "outlet-A_1".into(),
                value: Value::Gauge(GaugeQuantity::CurrentAmperes, 1.6)
            },
            PointValue {
                point: "outlet-A_1".into(),
                value: Value::EnergyCounter {
                    raw: 12345,
                    uj_per_unit: 360_000_000,
                    max_raw: u64::from(u32::MAX)
                }
            },
        ]
    );
    assert!(ex.problems.is_empty(), "{:?}", ex.problems);
    assert_eq!(ex.answered, 1 + 2 + 2);
}

#[test]
fn bad_values_are_reported_not_invented() {
    let m = Model::parse(TEST_MAP).unwrap();
    let mut snap = Snapshot::new();
    snap.insert(oid("1.9.1.0"), Raw::Text("n/a".into()));
    snap.insert(oid("1.9.2.1.6.1.1"), Raw::Num(i128::from(u32::MAX) + 1));
    snap.insert(oid("1.9.2.1.2.1.1"), Raw::Num(1));
    snap.insert(oid("1.9.3.1.1.1"), Raw::Num(0));
    let ex = m.extract(&snap);
    assert!(ex.values.is_empty());
    assert_eq!(ex.problems.len(), 2, "{:?}", ex.problems);
    assert!(m.extract(&Snapshot::new()).answered == 0);
}

const UPS_MAP: &str = r#"
    name = "ups"
    description = "t"
    generic = true
    identify = "1.9.0.0"
    [[points]]
    point = "in-{n}"
    column = "1.9.1"
    index = "{n}"
    measures = "power"
    [[points]]
    point = "out"
    oid = "1.9.2.0"
    measures = "power"
    [[points]]
    point = "out"
    oid = "1.9.3.0"
    measures = "load"
    divide = 100
    [[points]]
    point = "battery"
    oid = "1.9.4.0"
    measures = "battery_runtime"
    multiply = 60
    [[totals]]
    point = "in"
    add = ["in-*"]
    [[totals]]
    point = "losses"
    add = ["in"]
    subtract = ["out"]
    [places]
    in = 0
    "in-*" = 1
    out = 1
    losses = 1
"#;

#[test]
fn totals_add_and_subtract_powers_and_need_every_term() {
    let m = Model::parse(UPS_MAP).unwrap();
    assert!(m.generic);
    assert_eq!(m.identify(), Some((oid("1.9.0.0"), true)));
    let mut snap = Snapshot::new();
    snap.insert(oid("1.9.1.1"), Raw::Num(400));
    snap.insert(oid("1.9.1.2"), Raw::Num(350));
    snap.insert(oid("1.9.2.0"), Raw::Num(700));
    snap.insert(oid("1.9.3.0"), Raw::Num(35));
    snap.insert(oid("1.9.4.0"), Raw::Num(12));
    let ex = m.extract(&snap);
    let get = |p: &str| -> Vec<Value> {
        ex.values
            .iter()
            .filter(|v| v.point == p)
            .map(|v| v.value)
            .collect()
    };
    assert_eq!(get("in"), vec![Value::PowerW(750.0)]);
    assert_eq!(get("losses"), vec![Value::PowerW(50.0)]);
    assert_eq!(
        get("out"),
        vec![
            Value::PowerW(700.0),
            Value::Gauge(GaugeQuantity::UtilizationRatio, 0.35)
        ]
    );
    assert_eq!(
        get("battery"),
        vec![Value::Gauge(GaugeQuantity::BatteryRuntimeSeconds, 720.0)]
    );
    // No output power: no losses (a difference with a missing term
    // would be the whole input).
    snap.remove(&oid("1.9.2.0"));
    let ex = m.extract(&snap);
    assert!(ex.values.iter().any(|v| v.point == "in"));
    assert!(!ex.values.iter().any(|v| v.point == "losses"));
    // Output above input (meters disagree at low load): left out, said.
    snap.insert(oid("1.9.2.0"), Raw::Num(800));
    let ex = m.extract(&snap);
    assert!(!ex.values.iter().any(|v| v.point == "losses"));
    assert!(ex.problems.iter().any(|p| p.contains("losses")), "{ex:?}");
}

#[test]
fn map_places_prefer_an_exact_name_and_leave_others_out() {
    let m = Model::parse(UPS_MAP).unwrap();
    let places = m
        .places(&["in", "in-1", "out", "losses", "battery"])
        .unwrap();
    let tier = |p: &str| places.iter().find(|x| x.point == p).map(|x| x.tier);
    assert_eq!(
        (tier("in"), tier("in-1"), tier("out"), tier("losses")),
        (Some(0), Some(1), Some(1), Some(1))
    );
    assert_eq!(tier("battery"), None);
    // PDU maps have no places: the naming rules apply.
    assert!(
        Model::parse(TEST_MAP)
            .unwrap()
            .places(&["device"])
            .is_none()
    );
    assert_eq!(
        Model::parse(TEST_MAP).unwrap().identify(),
        Some((oid("1.9.2.1.5"), false))
    );
}

#[test]
fn every_map_is_listed_and_ups_and_tripp_lite_ids_select_their_maps() {
    let all = catalogue();
    for m in models().unwrap() {
        assert!(all.contains(&format!("{} (", m.name)), "{all}");
    }
    let m = detect(&oid("1.3.6.1.4.1.318.1.3.27")).unwrap().unwrap();
    assert_eq!(m.name, "apc-ups");
    let m = detect(&oid("1.3.6.1.4.1.318.1.3.2.12")).unwrap().unwrap();
    assert_eq!(m.name, "apc-ups");
    let m = detect(&oid("1.3.6.1.4.1.850.1.1.1")).unwrap().unwrap();
    assert_eq!(m.name, "tripplite-pdu");
    // The standard map has no sysObjectID: only the device's answers
    // select it.
    assert!(model("ups-mib").unwrap().sys_object_ids.is_empty());
    assert!(model("ups-mib").unwrap().generic);
}

#[test]
fn malformed_maps_are_refused() {
    for (bad, why) in [
        (
            r#"oid = "1.2" 
            column = "1.3""#,
            "either",
        ),
        (
            r#"column = "1.3"
            index = "{i}"
            point_x = 1"#,
            "unknown field",
        ),
    ] {
        let text = format!(
            "name = \"x\"\ndescription = \"\"\n[[points]]\npoint = \"p\"\nmeasures = \"power\"\n{bad}\n"
        );
        let err = Model::parse(&text).unwrap_err();
        assert!(err.contains(why), "{err}");
    }
    let base = |extra: &str| {
        format!(
            "name = \"x\"\ndescription = \"\"\n[[points]]\ncolumn = \"1.3\"\nindex = \"{{i}}\"\n{extra}\n"
        )
    };
    for (extra, why) in [
        ("point = \"o-{n}\"\nmeasures = \"power\"", "neither"),
        ("point = \"o p\"\nmeasures = \"power\"", "bad point name"),
        ("point = \"o\"\nmeasures = \"energy\"", "uj_per_unit"),
        (
            "point = \"o\"\nmeasures = \"energy\"\nuj_per_unit = 1\ncounter = \"u32\"\ndivide = 10",
            "not multiply",
        ),
        (
            "point = \"o\"\nmeasures = \"power\"\ndivide = 0",
            "positive",
        ),
    ] {
        let err = Model::parse(&base(extra)).unwrap_err();
        assert!(err.contains(why), "{extra}: {err}");
    }
}
