//! Unit tests of the SNMP driver (the simulator tests are in
//! `agent/tests/snmp_pdus.rs`).

#![allow(clippy::unwrap_used)]
use super::*;

fn cfg(extra: &str) -> Result<SnmpConfig, toml::de::Error> {
    toml::from_str(&format!("host = \"127.0.0.1\"\n{extra}"))
}

fn secret_file(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
    let p = dir.path().join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

#[test]
fn defaults_and_v2c() {
    let dir = tempfile::tempdir().unwrap();
    let f = secret_file(&dir, "c", "public\n");
    let c = cfg(&format!("community_file = {f:?}")).unwrap();
    assert_eq!(
        (c.port, c.version, c.model.as_str()),
        (161, SnmpVersion::V2c, "auto")
    );
    assert_eq!((c.timeout, c.retries), (Duration::from_secs(3), 1));
    let d = build(&c).unwrap();
    assert_eq!(d.source(), "snmp://127.0.0.1:161 (v2c, auto)");
    assert!(!format!("{d:?}").contains("public"));
}

#[test]
fn configuration_mistakes_are_config_errors() {
    let dir = tempfile::tempdir().unwrap();
    let short = secret_file(&dir, "short", "1234567\n");
    let good = secret_file(&dir, "good", "12345678\n");
    for (extra, why) in [
        ("", "needs community_file"),
        ("version = \"3\"", "needs user"),
        (
            &format!("community_file = {good:?}\nuser = \"u\""),
            "are for version",
        ),
        (
            &format!(
                "version = \"3\"\nuser = \"u\"\nauth_protocol = \"sha\"\nauth_passphrase_file = {short:?}"
            ),
            "authentication",
        ),
        (
            &format!(
                "version = \"3\"\nuser = \"u\"\npriv_protocol = \"aes\"\npriv_passphrase_file = {good:?}"
            ),
            "needs auth_protocol",
        ),
        (
            &format!("community_file = {good:?}\nmodel = \"acme\""),
            "unknown SNMP model",
        ),
        ("community_file = \"/nonexistent/x\"", "community_file"),
    ] {
        let err = build(&cfg(extra).unwrap()).unwrap_err();
        assert!(
            matches!(&err, DeviceError::Config(m) if m.contains(why)),
            "{extra}: {err}"
        );
    }
    assert!(cfg("version = \"1\"").is_err(), "v1 is not offered");
    assert!(cfg("colour = 1").is_err());
}

#[test]
fn v3_auth_priv_builds_with_a_named_model() {
    let dir = tempfile::tempdir().unwrap();
    let a = secret_file(&dir, "a", "auth-pass-1\n");
    let p = secret_file(&dir, "p", "priv-pass-1\n");
    let c = cfg(&format!(
        "version = \"3\"\nuser = \"ops\"\nauth_protocol = \"sha256\"\nauth_passphrase_file = {a:?}\n\
         priv_protocol = \"aes\"\npriv_passphrase_file = {p:?}\nmodel = \"raritan-pdu2\"\nport = 1161"
    ))
    .unwrap();
    let d = build(&c).unwrap();
    assert_eq!(d.source(), "snmp://127.0.0.1:1161 (v3, raritan-pdu2)");
    assert!(!format!("{d:?}").contains("pass"));
}

#[test]
fn des_salt_epoch_moves_on_at_each_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("des.state");
    assert_eq!(load_des_state(&path).unwrap().engine_boots(), 1);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "1\n");
    assert_eq!(load_des_state(&path).unwrap().engine_boots(), 2);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "2\n");
    std::fs::write(&path, "garbage").unwrap();
    assert!(matches!(load_des_state(&path), Err(DeviceError::Config(_))));
    // DES needs the file; the file needs DES.
    let a = secret_file(&dir, "a", "auth-pass-1\n");
    let p = secret_file(&dir, "p", "priv-pass-1\n");
    let v3 = format!(
        "version = \"3\"\nuser = \"u\"\nauth_protocol = \"md5\"\nauth_passphrase_file = {a:?}\n\
         priv_passphrase_file = {p:?}\n"
    );
    let err = build(&cfg(&format!("{v3}priv_protocol = \"des\"")).unwrap()).unwrap_err();
    assert!(err.to_string().contains("des_state_file"), "{err}");
    let err = build(
        &cfg(&format!(
            "{v3}priv_protocol = \"aes\"\ndes_state_file = {:?}",
            path.display().to_string()
        ))
        .unwrap(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("des_state_file"), "{err}");
    let ok = format!(
        "{v3}priv_protocol = \"des\"\ndes_state_file = {:?}",
        dir.path().join("new.state").display().to_string()
    );
    build(&cfg(&ok).unwrap()).unwrap();
}

#[test]
fn client_errors_say_what_to_do_next() {
    let target: std::net::SocketAddr = "127.0.0.1:161".parse().unwrap();
    let cases = [
        (
            async_snmp::Error::Timeout {
                target,
                elapsed: Duration::from_secs(1),
                retries: 1,
            },
            "unreachable",
        ),
        (async_snmp::Error::Auth { target }, "authentication"),
        (
            async_snmp::Error::MalformedResponse { target },
            "unexpected answer",
        ),
    ];
    for (e, want) in cases {
        let got = device_error(&e, "GET").to_string();
        assert!(got.starts_with(want), "{got}");
    }
}

#[test]
fn values_become_raw_numbers_or_text() {
    assert_eq!(raw(&SnmpValue::Integer(-1)), Some(Raw::Num(-1)));
    assert_eq!(
        raw(&SnmpValue::Counter32(u32::MAX)),
        Some(Raw::Num(i128::from(u32::MAX)))
    );
    assert_eq!(
        raw(&SnmpValue::Counter64(u64::MAX)),
        Some(Raw::Num(i128::from(u64::MAX)))
    );
    assert_eq!(raw(&SnmpValue::NoSuchInstance), None);
    assert_eq!(
        raw(&SnmpValue::OctetString("AA1".into())),
        Some(Raw::Text("AA1".into()))
    );
}
