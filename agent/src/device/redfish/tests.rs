//! Unit tests of the Redfish driver's pure parts (the mockup tests are in
//! `agent/tests/redfish.rs`).

#![allow(clippy::unwrap_used)]
use super::*;

#[test]
fn energy_registers_are_exact() {
    let kwh = |x| match energy(x, EnergyUnit::KWh) {
        Some(Value::EnergyCounter { raw, .. }) => raw,
        other => panic!("{other:?}"),
    };
    assert_eq!(kwh(36166.0), 36_166_000_000);
    assert_eq!(kwh(7855.123), 7_855_123_000);
    assert_eq!(kwh(0.000_001), 1);
    // 1 mWh = 3.6 J.
    assert!(matches!(
        energy(1.0, EnergyUnit::Wh),
        Some(Value::EnergyCounter {
            raw: 1000,
            uj_per_unit: 3_600_000,
            max_raw: u64::MAX
        })
    ));
    assert!(matches!(
        energy(2.5, EnergyUnit::Joules),
        Some(Value::EnergyCounter {
            raw: 2500,
            uj_per_unit: 1000,
            ..
        })
    ));
    assert_eq!(energy(-1.0, EnergyUnit::KWh), None);
    assert_eq!(energy(f64::INFINITY, EnergyUnit::KWh), None);
    assert_eq!(energy(1e300, EnergyUnit::KWh), None);
}

#[test]
fn point_parts_keep_only_safe_characters() {
    assert_eq!(clean("A1"), "A1");
    assert_eq!(clean("Line 1:N/é"), "Line_1_N__");
    assert_eq!(clean(""), "_");
    assert_eq!(last_segment("/redfish/v1/Chassis/1U/"), "1U");
}

#[test]
fn links_outside_the_service_are_not_followed() {
    let doc = serde_json::json!({
        "A": {"@odata.id": "/redfish/v1/Chassis/1U/Power#/PowerControl/0"},
        "B": {"@odata.id": "https://pdu.example/redfish/v1/PowerEquipment"},
        "C": {"@odata.id": null},
    });
    assert_eq!(
        link(&doc, "A").as_deref(),
        Some("/redfish/v1/Chassis/1U/Power")
    );
    assert_eq!(link(&doc, "B"), None);
    assert_eq!(link(&doc, "C"), None);
    assert_eq!(link(&doc, "D"), None);
}

#[test]
fn config_defaults_and_unknown_fields() {
    let cfg: RedfishConfig = toml::from_str(r#"url = "https://10.0.0.5""#).unwrap();
    assert_eq!(cfg.timeout, Duration::from_secs(10));
    assert!(!cfg.insecure);
    assert!(cfg.chassis.is_empty());
    let cfg: RedfishConfig =
        toml::from_str("url = \"https://10.0.0.5\"\ntimeout = \"2s\"\nchassis = [\"1U\"]").unwrap();
    assert_eq!(cfg.timeout, Duration::from_secs(2));
    assert!(toml::from_str::<RedfishConfig>("url = \"https://x\"\npassword = \"p\"").is_err());
}

#[test]
fn build_refuses_configurations_that_cannot_work() {
    let base = |url: &str| RedfishConfig {
        url: url.into(),
        username: None,
        password_file: None,
        ca_file: None,
        insecure: false,
        timeout: Duration::from_secs(1),
        chassis: Vec::new(),
    };
    let config_error = |cfg: &RedfishConfig| matches!(build(cfg), Err(DeviceError::Config(_)));
    assert!(config_error(&base("ftp://10.0.0.5")));
    assert!(config_error(&base("https://admin:pw@10.0.0.5")));
    assert!(config_error(&base("https://10.0.0.5/redfish/v1")));
    assert!(config_error(&RedfishConfig {
        username: Some("admin".into()),
        ..base("https://10.0.0.5")
    }));
    assert!(config_error(&RedfishConfig {
        insecure: true,
        ca_file: Some("/nonexistent/ca.pem".into()),
        ..base("https://10.0.0.5")
    }));
    assert!(config_error(&RedfishConfig {
        ca_file: Some("/nonexistent/ca.pem".into()),
        ..base("https://10.0.0.5")
    }));
    let dev = build(&base("https://10.0.0.5:8443/")).unwrap();
    assert_eq!(dev.source(), "https://10.0.0.5:8443");
}
