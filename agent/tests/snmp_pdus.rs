//! The SNMP driver against a real SNMP agent: snmpsim on 127.0.0.1 serving
//! the APC dumps in `testdata/snmp/` at the workspace root (AP8641 rPDU2, AP7902B rPDU)
//! and the synthetic Raritan, ServerTech, Eaton, Tripp Lite, UPS-MIB and
//! APC UPS files in `agent/testdata/snmp/`, over SNMPv2c and SNMPv3.
//!
//! snmpsim is a Python program (PyPI `snmpsim`). The tests look for
//! `snmpsim-command-responder` in `$VIGIE_SNMPSIM`, on `PATH`, then in
//! `~/.cache/vigie/snmpsim-venv/bin/` (`$VIGIE_SNMPSIM`, when set, must
//! exist); without it they are skipped with a `SKIPPED` line in the
//! normal output (`vigie_testkit::skip`), unless `VIGIE_REQUIRE_SNMPSIM=1`
//! (CI) makes that a failure.
//! Install:
//!
//! ```sh
//! python3 -m venv ~/.cache/vigie/snmpsim-venv
//! ~/.cache/vigie/snmpsim-venv/bin/pip install snmpsim pysmi cryptography
//! ```
//!
//! Every expected value below is derived by hand from the simulation
//! files, shown as `OID = raw -> scaled`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use vigie_agent::device::snmp::{self, SnmpConfig, SnmpDevice};
use vigie_agent::device::{Device, DeviceError, PointValue, Value};
use vigie_protocol::GaugeQuantity;

/// Tenths of a kWh in µJ (0.1 × 3.6e6 J × 1e6).
const TENTH_KWH_UJ: u64 = 360_000_000_000;
/// One Wh in µJ (3600 J × 1e6).
const WH_UJ: u64 = 3_600_000_000;
const I32_MAX: u64 = i32::MAX as u64;
const U32_MAX: u64 = u32::MAX as u64;

fn apc_dumps() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/snmp")
}

fn synthetic() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/snmp")
}

fn find_snmpsim() -> Option<PathBuf> {
    vigie_testkit::find_tool(
        "VIGIE_SNMPSIM",
        "snmpsim-command-responder",
        &vigie_testkit::home_dir(".cache/vigie/snmpsim-venv/bin"),
    )
}

/// SNMPv3 users the simulator accepts: (user, auth proto, auth key,
/// priv proto, priv key), in snmpsim's spelling.
const V3_USERS: &[(&str, &str, &str, &str, &str)] = &[
    (
        "vigie-sha",
        "SHA",
        "auth-passphrase",
        "AES",
        "priv-passphrase",
    ),
    (
        "vigie-md5",
        "MD5",
        "md5-passphrase",
        "AES",
        "aes-passphrase",
    ),
    // Blumenthal key extension (Net-SNMP AES-256): our "aes256".
    (
        "vigie-256",
        "SHA256",
        "sha256-passphrase",
        "AES256BLMT",
        "aes256-passphrase",
    ),
    // Reeder key extension (Cisco AES-256C): our "aes256c".
    (
        "vigie-512",
        "SHA512",
        "sha512-passphrase",
        "AES256",
        "aes256c-passphrase",
    ),
];

/// A running snmpsim, killed on drop. It also exits by itself after two
/// minutes, so a test that dies cannot leave it behind for long.
struct Simulator {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Simulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Simulator {
    /// Serves each file under its community (and SNMPv3 context) name.
    /// `None` when snmpsim is not installed and not required.
    fn start(files: &[(&str, PathBuf)]) -> Option<Simulator> {
        let Some(bin) = find_snmpsim() else {
            vigie_testkit::skip(
                "VIGIE_REQUIRE_SNMPSIM",
                "all",
                "snmpsim-command-responder not found ($VIGIE_SNMPSIM, PATH, ~/.cache/vigie/snmpsim-venv/bin)",
                "python3 -m venv ~/.cache/vigie/snmpsim-venv && ~/.cache/vigie/snmpsim-venv/bin/pip install snmpsim pysmi cryptography",
            );
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let cache = dir.path().join("cache");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::create_dir_all(&cache).unwrap();
        for (community, src) in files {
            std::fs::copy(src, data.join(format!("{community}.snmprec")))
                .unwrap_or_else(|e| panic!("{}: {e}", src.display()));
        }
        // A free loopback UDP port (released just before snmpsim binds it).
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log_path = dir.path().join("snmpsim.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let mut cmd = Command::new(&bin);
        cmd.arg("--data-dir")
            .arg(&data)
            .arg("--cache-dir")
            .arg(&cache)
            .arg(format!("--agent-udpv4-endpoint=127.0.0.1:{port}"))
            .args(["--timeout", "120"]);
        for (user, ap, ak, pp, pk) in V3_USERS {
            cmd.args([
                "--v3-user",
                user,
                "--v3-auth-proto",
                ap,
                "--v3-auth-key",
                ak,
                "--v3-priv-proto",
                pp,
                "--v3-priv-key",
                pk,
            ]);
        }
        // snmpsim refuses to run as root unless told; CI runs as root and
        // the simulator only listens on loopback.
        let child = cmd
            .env("SNMPSIM_ALLOW_ROOT", "true")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
        let mut sim = Simulator {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let mut text = String::new();
            std::fs::File::open(&log_path)
                .unwrap()
                .read_to_string(&mut text)
                .unwrap();
            if text.contains("Listening at") {
                return Some(sim);
            }
            if let Some(status) = sim.child.try_wait().unwrap() {
                panic!("snmpsim exited ({status}):\n{text}");
            }
            assert!(Instant::now() < deadline, "snmpsim did not start:\n{text}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn device(&self, toml_extra: &str) -> SnmpDevice {
        snmp::build(&self.config(toml_extra)).unwrap()
    }

    fn config(&self, toml_extra: &str) -> SnmpConfig {
        toml::from_str(&format!(
            "host = \"127.0.0.1\"\nport = {}\ntimeout = \"2s\"\nretries = 2\n{toml_extra}",
            self.port
        ))
        .unwrap()
    }
}

fn secret(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
    let p = dir.path().join(name);
    std::fs::write(&p, format!("{text}\n")).unwrap();
    p.display().to_string()
}

/// `community_file = "..."` for `community`.
fn v2c(dir: &tempfile::TempDir, community: &str) -> String {
    format!("community_file = {:?}", secret(dir, community, community))
}

async fn poll(d: &mut SnmpDevice) -> Result<Vec<PointValue>, DeviceError> {
    tokio::time::timeout(Duration::from_secs(60), d.poll())
        .await
        .expect("a poll is bounded by its timeouts")
}

fn power(point: &str, w: f64) -> PointValue {
    PointValue {
        point: point.into(),
        value: Value::PowerW(w),
    }
}

fn energy(point: &str, raw: u64, uj_per_unit: u64, max_raw: u64) -> PointValue {
    PointValue {
        point: point.into(),
        value: Value::EnergyCounter {
            raw,
            uj_per_unit,
            max_raw,
        },
    }
}

fn amps(point: &str, a: f64) -> PointValue {
    PointValue {
        point: point.into(),
        value: Value::Gauge(GaugeQuantity::CurrentAmperes, a),
    }
}

fn volts(point: &str, v: f64) -> PointValue {
    PointValue {
        point: point.into(),
        value: Value::Gauge(GaugeQuantity::VoltageVolts, v),
    }
}

/// AP8641 (`apc-ap8641-rpdu2.snmprec`) through the rPDU2 map.
fn ap8641_expected() -> Vec<PointValue> {
    // rPDU2OutletMeteredStatusPower (...26.9.4.3.1.7.N), W, outlets 1..24.
    let outlet_w = [
        163, 4, 81, 125, 71, 96, 66, 0, 66, 0, 0, 0, 0, 0, 0, 0, 0, 83, 101, 97, 0, 78, 86, 0,
    ];
    // rPDU2OutletMeteredStatusEnergy (...26.9.4.3.1.11.N), tenths of kWh.
    let outlet_e = [
        3046, 1225, 1530, 2326, 1346, 1848, 1226, 0, 1234, 0, 0, 0, 0, 0, 0, 0, 73, 1482, 1574,
        1888, 0, 1477, 1600, 0,
    ];
    // rPDU2OutletMeteredStatusCurrent (...26.9.4.3.1.6.N), tenths of A.
    let outlet_da = [
        9, 5, 4, 7, 4, 6, 4, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 5, 5, 5, 0, 4, 5, 0,
    ];
    let mut v = vec![
        // ...26.4.3.1.5.1 = 121 hundredths of kW -> 121 × 10 = 1210 W.
        power("device", 1210.0),
        // ...26.4.3.1.9.1 = 19516 tenths of kWh (1951.6 kWh), INTEGER.
        energy("device", 19516, TENTH_KWH_UJ, I32_MAX),
        // Phase row 1 (module .2.1 = 1, number .3.1 = 1):
        // ...26.6.3.1.7.1 = 122 -> 1220 W; .5.1 = 65 -> 6.5 A; .6.1 = 201 V.
        power("phase-1", 1220.0),
        amps("phase-1", 6.5),
        volts("phase-1", 201.0),
        // Bank rows (numbers .3.1 = 1, .3.2 = 2): ...26.8.3.1.5.{1,2} = 38, 24 -> 3.8 A, 2.4 A.
        amps("bank-1", 3.8),
        amps("bank-2", 2.4),
    ];
    for (i, w) in outlet_w.iter().enumerate() {
        v.push(power(&format!("outlet-{}", i + 1), f64::from(*w)));
    }
    for (i, e) in outlet_e.iter().enumerate() {
        v.push(energy(
            &format!("outlet-{}", i + 1),
            *e,
            TENTH_KWH_UJ,
            I32_MAX,
        ));
    }
    for (i, da) in outlet_da.iter().enumerate() {
        v.push(amps(&format!("outlet-{}", i + 1), f64::from(*da) / 10.0));
    }
    v
}

#[tokio::test]
async fn apc_rpdu2_dump_over_v2c_is_auto_detected_and_scaled() {
    let Some(sim) = Simulator::start(&[("ap8641", apc_dumps().join("apc-ap8641-rpdu2.snmprec"))])
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // sysObjectID.0 = 1.3.6.1.4.1.318.1.3.4.6 selects apc-rpdu2.
    let mut d = sim.device(&v2c(&dir, "ap8641"));
    let values = poll(&mut d).await.unwrap();
    assert_eq!(d.model().unwrap().name, "apc-rpdu2");
    assert_eq!(values, ap8641_expected());
    assert_eq!(
        d.source(),
        format!("snmp://127.0.0.1:{} (v2c, apc-rpdu2)", sim.port)
    );
    // A second poll reads the same plan again.
    assert_eq!(poll(&mut d).await.unwrap(), ap8641_expected());
}

#[tokio::test]
async fn apc_legacy_rpdu_dumps_and_unsupported_values() {
    let Some(sim) = Simulator::start(&[
        ("ap7902b", apc_dumps().join("apc-ap7902b-rpdu.snmprec")),
        ("ap8641", apc_dumps().join("apc-ap8641-rpdu2.snmprec")),
    ]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();

    // AP7902B, sysObjectID ...318.1.3.4.8 -> apc-rpdu.
    let mut d = sim.device(&v2c(&dir, "ap7902b"));
    assert_eq!(
        poll(&mut d).await.unwrap(),
        vec![
            // rPDUIdentDevicePowerWatts ...12.1.16.0 = 192 W.
            power("device", 192.0),
            // rPDULoadStatus rows (phase .4, bank .5, load .2 in tenths of A):
            // row 1: phase 1, bank 0, 16 -> phase-1 1.6 A;
            amps("phase-1", 1.6),
            // rows 2 and 3: banks 1 and 2, 0 and 11 -> 0 A and 1.1 A.
            amps("bank-1", 0.0),
            amps("bank-2", 1.1),
        ]
    );
    assert_eq!(d.model().unwrap().name, "apc-rpdu");

    // The same AP7902B forced onto the rPDU2 map: it answers -1 ("not
    // supported") for device power and energy and for phase power and
    // voltage, which are left out rather than read as numbers.
    let mut d = sim.device(&format!("{}\nmodel = \"apc-rpdu2\"", v2c(&dir, "ap7902b")));
    assert_eq!(
        poll(&mut d).await.unwrap(),
        vec![
            // ...26.6.3.1.5.1 = 16 -> 1.6 A; ...26.8.3.1.5.{1,2} = 0, 11.
            amps("phase-1", 1.6),
            amps("bank-1", 0.0),
            amps("bank-2", 1.1),
        ]
    );

    // The AP8641 also answers the legacy objects.
    let mut d = sim.device(&format!("{}\nmodel = \"apc-rpdu\"", v2c(&dir, "ap8641")));
    assert_eq!(
        poll(&mut d).await.unwrap(),
        vec![
            // ...12.1.16.0 = 1230 W; load rows 66, 40, 25 tenths of A.
            power("device", 1230.0),
            amps("phase-1", 6.6),
            amps("bank-1", 4.0),
            amps("bank-2", 2.5),
        ]
    );
}

#[tokio::test]
async fn raritan_servertech_and_eaton_maps_on_synthetic_agents() {
    let Some(sim) = Simulator::start(&[
        (
            "raritan",
            synthetic().join("raritan-pdu2-synthetic.snmprec"),
        ),
        (
            "sentry4",
            synthetic().join("servertech-sentry4-synthetic.snmprec"),
        ),
        ("eaton", synthetic().join("eaton-epdu-synthetic.snmprec")),
    ]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();

    // Raritan, sysObjectID 1.3.6.1.4.1.13742.6. Values are
    // measurements...SensorValue.1.<n>.<type> / 10^decimalDigits.
    let mut d = sim.device(&v2c(&dir, "raritan"));
    assert_eq!(
        poll(&mut d).await.unwrap(),
        vec![
            power("inlet-1", 935.0), // ...6.5.2.3.1.4.1.1.5 = 935, 0 digits
            energy("inlet-1", 123_456_789, WH_UJ, U32_MAX), // .1.1.8 = 123456789 Wh
            amps("inlet-1", 4.321),  // .1.1.1 = 4321, 3 digits
            volts("inlet-1", 229.0), // .1.1.4 = 229
            power("outlet-1", 271.0), // ...6.5.4.3.1.4.1.1.5
            power("outlet-2", 0.0),
            energy("outlet-1", 4_000_000, WH_UJ, U32_MAX), // .1.1.8 = 4000000 Wh
            energy("outlet-2", 17, WH_UJ, U32_MAX),
            amps("outlet-1", 1.25), // .1.1.1 = 1250, 3 digits
            amps("outlet-2", 0.0),
        ]
    );
    assert_eq!(d.model().unwrap().name, "raritan-pdu2");

    // ServerTech, sysObjectID 1.3.6.1.4.1.1718.4; names from the ID columns.
    let mut d = sim.device(&v2c(&dir, "sentry4"));
    assert_eq!(
        poll(&mut d).await.unwrap(),
        vec![
            power("inlet-AA", 1843.0), // st4InputCordActivePower.1.1 = 1843 W
            // st4InputCordEnergy.1.1 = 98765 tenths of kWh, Integer32.
            energy("inlet-AA", 98_765, TENTH_KWH_UJ, I32_MAX),
            amps("line-AL1", 8.12),     // st4LineCurrent.1.1.1 = 812 / 100
            volts("phase-AP1", 227.1),  // st4PhaseVoltage.1.1.1 = 2271 / 10
            power("outlet-AA1", 845.0), // st4OutletActivePower.1.1.1; AA2 = -1: left out
            energy("outlet-AA1", 2_500_000, WH_UJ, I32_MAX), // st4OutletEnergy, Wh
            amps("outlet-AA1", 3.77),   // st4OutletCurrent.1.1.1 = 377 / 100
        ]
    );
    assert_eq!(d.model().unwrap().name, "servertech-sentry4");

    // Eaton, sysObjectID 1.3.6.1.4.1.534.6.6.7; strapping unit 1 is not read.
    let mut d = sim.device(&v2c(&dir, "eaton"));
    assert_eq!(
        poll(&mut d).await.unwrap(),
        vec![
            power("inlet-1", 1187.0), // inputTotalWatts.0.1 (unit 1's 999 ignored)
            // inputTotalWh.0.1 = 4294967290 Wh: 5 below the Unsigned32 wrap.
            energy("inlet-1", 4_294_967_290, WH_UJ, U32_MAX),
            amps("phase-1", 5.25),   // inputCurrent.0.1.1 = 5250 mA
            volts("phase-1", 230.4), // inputVoltage.0.1.1 = 230400 mV
            power("outlet-1", 480.0),
            power("outlet-2", 0.0),
            energy("outlet-1", 73_000, WH_UJ, U32_MAX),
            energy("outlet-2", 12, WH_UJ, U32_MAX),
            amps("outlet-1", 2.1), // outletCurrent.0.1 = 2100 mA
            amps("outlet-2", 0.0),
        ]
    );
    assert_eq!(d.model().unwrap().name, "eaton-epdu");
}

#[tokio::test]
async fn snmpv3_auth_priv_reads_the_same_values_and_wrong_keys_read_nothing() {
    let Some(sim) = Simulator::start(&[("ap8641", apc_dumps().join("apc-ap8641-rpdu2.snmprec"))])
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let v3 = |user: &str, ap: &str, ak: &str, pp: &str, pk: &str| {
        format!(
            "version = \"3\"\nuser = {user:?}\ncontext = \"ap8641\"\n\
             auth_protocol = {ap:?}\nauth_passphrase_file = {:?}\n\
             priv_protocol = {pp:?}\npriv_passphrase_file = {:?}",
            secret(&dir, &format!("{user}-{ak}"), ak),
            secret(&dir, &format!("{user}-{pk}"), pk),
        )
    };
    // DES is not run here: snmpsim's pysnmp pads a scoped PDU whose length
    // is already a multiple of 8 with 8 more bytes, which RFC 3414 does not
    // allow and the client rejects, so a DES test would fail at random. The
    // DES salt state has its own test in the driver.
    for cfg in [
        v3(
            "vigie-sha",
            "sha",
            "auth-passphrase",
            "aes",
            "priv-passphrase",
        ),
        v3(
            "vigie-md5",
            "md5",
            "md5-passphrase",
            "aes",
            "aes-passphrase",
        ),
        v3(
            "vigie-256",
            "sha256",
            "sha256-passphrase",
            "aes256",
            "aes256-passphrase",
        ),
        v3(
            "vigie-512",
            "sha512",
            "sha512-passphrase",
            "aes256c",
            "aes256c-passphrase",
        ),
    ] {
        let mut d = sim.device(&cfg);
        assert_eq!(poll(&mut d).await.unwrap(), ap8641_expected(), "{cfg}");
        assert!(d.source().contains("(v3, apc-rpdu2)"));
    }
    // Wrong credentials never give values. snmpsim (pysnmp) signs its
    // usmStatsUnknownUserNames / usmStatsWrongDigests Report with the
    // request's security level, which the client cannot verify and drops,
    // so here they end as silence (Unreachable); an agent that sends the
    // Report unauthenticated, as RFC 3414 says, gives DeviceError::Auth
    // (see the driver's unit test of the error mapping).
    for cfg in [
        v3(
            "nobody-here",
            "sha",
            "auth-passphrase",
            "aes",
            "priv-passphrase",
        ),
        v3(
            "vigie-sha",
            "sha",
            "wrong-passphrase",
            "aes",
            "priv-passphrase",
        ),
    ] {
        let mut c = sim.config(&cfg);
        c.timeout = Duration::from_millis(500);
        c.retries = 0;
        let mut d = snmp::build(&c).unwrap();
        let err = poll(&mut d).await.unwrap_err();
        assert!(
            matches!(err, DeviceError::Auth(_) | DeviceError::Unreachable(_)),
            "{err}"
        );
    }
}

#[tokio::test]
async fn silence_is_unreachable_within_the_timeout() {
    let Some(sim) = Simulator::start(&[("ap8641", apc_dumps().join("apc-ap8641-rpdu2.snmprec"))])
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // snmpsim does not answer an unknown community.
    let mut cfg = sim.config(&v2c(&dir, "not-served"));
    cfg.timeout = Duration::from_millis(300);
    cfg.retries = 1;
    let mut d = snmp::build(&cfg).unwrap();
    let err = poll(&mut d).await.unwrap_err();
    assert!(matches!(err, DeviceError::Unreachable(_)), "{err}");

    // Nothing at all on the port.
    let free = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    cfg.port = free;
    let mut d = snmp::build(&cfg).unwrap();
    let err = poll(&mut d).await.unwrap_err();
    assert!(matches!(err, DeviceError::Unreachable(_)), "{err}");

    // A device that answers none of the map's OIDs is a protocol error,
    // not an empty success: the AP8641 read through the Eaton map.
    let mut d = sim.device(&format!("{}\nmodel = \"eaton-epdu\"", v2c(&dir, "ap8641")));
    let err = poll(&mut d).await.unwrap_err();
    assert!(
        matches!(&err, DeviceError::Protocol(m) if m.contains("eaton-epdu")),
        "{err}"
    );
}

#[tokio::test]
async fn an_apc_pdu_counts_its_device_register_once_not_with_its_phase_and_outlets() {
    use vigie_protocol::ScopeRole::{Boundary, Component};
    let Some(sim) = Simulator::start(&[("ap8641", apc_dumps().join("apc-ap8641-rpdu2.snmprec"))])
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = sim.device(&v2c(&dir, "ap8641"));
    let cfg: vigie_agent::device::DeviceConfig =
        toml::from_str("name = \"pdu-a1\"\nperiod = \"5s\"\n").unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    fn clock() -> i64 {
        1_000
    }
    let task = vigie_agent::device::spawn(&cfg, Box::new(d), tx, clock, &[]);
    let first = tokio::time::timeout(Duration::from_secs(60), rx.recv())
        .await
        .unwrap()
        .unwrap();
    task.abort();
    let scope = |name: &str| {
        let meta = first.new_sensors.iter().find(|m| m.name == name).unwrap();
        meta.scope.clone().map(|s| (s.role, s.of))
    };
    // The device register (rPDU2DeviceStatusEnergy) is the PDU's energy;
    // its phase power and its 24 metered outlets are parts of it.
    assert_eq!(scope("pdu-a1:device"), Some((Boundary, None)));
    let parts = std::iter::once("pdu-a1:phase-1".to_owned())
        .chain((1..=24).map(|i| format!("pdu-a1:outlet-{i}")));
    for p in parts {
        assert_eq!(
            scope(&p),
            Some((Component, Some("pdu-a1:device".to_owned()))),
            "{p}"
        );
    }
    let counted: Vec<&str> = first
        .new_sensors
        .iter()
        .filter(|m| m.method.is_some() && m.in_totals())
        .map(|m| m.name.as_str())
        .collect();
    assert_eq!(counted, vec!["pdu-a1:device"]);
}

#[tokio::test]
async fn a_wrong_community_is_named_as_a_likely_cause_not_just_unreachable() {
    let Some(sim) = Simulator::start(&[("ap8641", apc_dumps().join("apc-ap8641-rpdu2.snmprec"))])
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // The agent is up and speaks SNMPv3 (a first v3 exchange makes
    // snmpsim derive its users' keys, seconds of Python hashing).
    let mut warm = sim.device(&format!(
        "version = \"3\"\nuser = \"vigie-sha\"\ncontext = \"ap8641\"\n\
         auth_protocol = \"sha\"\nauth_passphrase_file = {:?}\n\
         priv_protocol = \"aes\"\npriv_passphrase_file = {:?}",
        secret(&dir, "a", "auth-passphrase"),
        secret(&dir, "p", "priv-passphrase"),
    ));
    poll(&mut warm).await.unwrap();
    // It ignores this community.
    let mut cfg = sim.config(&v2c(&dir, "wrong-community"));
    cfg.timeout = Duration::from_millis(500);
    cfg.retries = 0;
    let mut d = snmp::build(&cfg).unwrap();
    let err = poll(&mut d).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, DeviceError::Unreachable(_)), "{text}");
    assert!(
        text.contains("answers SNMPv3") && text.contains("community_file is most likely wrong"),
        "{text}"
    );
    assert!(
        !text.contains("wrong-community"),
        "the community is a secret: {text}"
    );
    // The same diagnosis at the next poll, without asking again.
    let again = poll(&mut d).await.unwrap_err().to_string();
    assert!(again.contains("most likely wrong"), "{again}");

    // Nobody there: it cannot tell, and says both.
    let free = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let silent = std::net::UdpSocket::bind(("127.0.0.1", free)).unwrap();
    cfg.port = free;
    let mut d = snmp::build(&cfg).unwrap();
    let text = poll(&mut d).await.unwrap_err().to_string();
    assert!(
        text.contains("device unreachable") && text.contains("wrong community"),
        "{text}"
    );
    drop(silent);
}

/// The values of `point`, in the driver's order.
fn of(values: &[PointValue], point: &str) -> Vec<Value> {
    values
        .iter()
        .filter(|v| v.point == point)
        .map(|v| v.value)
        .collect()
}

fn g(quantity: GaugeQuantity, x: f64) -> Value {
    Value::Gauge(quantity, x)
}

/// The inventory the runner announces from the first poll of `d`.
async fn inventory(name: &str, d: SnmpDevice) -> Vec<vigie_protocol::SensorMeta> {
    let cfg: vigie_agent::device::DeviceConfig =
        toml::from_str(&format!("name = \"{name}\"\nperiod = \"5s\"\n")).unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    fn clock() -> i64 {
        1_000
    }
    let task = vigie_agent::device::spawn(&cfg, Box::new(d), tx, clock, &[]);
    let first = tokio::time::timeout(Duration::from_secs(60), rx.recv())
        .await
        .unwrap()
        .unwrap();
    task.abort();
    first.new_sensors
}

fn role(
    inventory: &[vigie_protocol::SensorMeta],
    sensor: &str,
) -> Option<(vigie_protocol::ScopeRole, Option<String>)> {
    let meta = inventory.iter().find(|m| m.name == sensor)?;
    meta.scope.clone().map(|s| (s.role, s.of))
}

#[tokio::test]
async fn any_ups_through_the_ups_mib_input_output_load_battery_and_losses() {
    use GaugeQuantity::{
        BatteryChargeRatio, BatteryRuntimeSeconds, CurrentAmperes, TemperatureCelsius,
        UtilizationRatio, VoltageVolts,
    };
    use vigie_protocol::ScopeRole::{Boundary, Component};
    let Some(sim) = Simulator::start(&[("ups", synthetic().join("ups-mib-synthetic.snmprec"))])
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // sysObjectID 1.3.6.1.4.1.534.1 has no map; the device answers
    // upsIdentModel.0, so the standard UPS-MIB map is chosen.
    let mut d = sim.device(&v2c(&dir, "ups"));
    let values = poll(&mut d).await.unwrap();
    assert_eq!(d.model().unwrap().name, "ups-mib");
    // upsInputTable line 1: TruePower 3400 W, Voltage 231 V, Current 152 -> 15.2 A.
    assert_eq!(
        of(&values, "input-1"),
        vec![
            Value::PowerW(3400.0),
            g(VoltageVolts, 231.0),
            g(CurrentAmperes, 15.2)
        ]
    );
    // upsOutputTable line 3: Power 3300 W, 230 V, 144 -> 14.4 A, load 46 % -> 0.46.
    assert_eq!(
        of(&values, "output-3"),
        vec![
            Value::PowerW(3300.0),
            g(VoltageVolts, 230.0),
            g(CurrentAmperes, 14.4),
            g(UtilizationRatio, 0.46)
        ]
    );
    // upsBattery: charge 97 % -> 0.97, 32 min -> 1920 s, 5460 -> 546 V, 25 °C.
    assert_eq!(
        of(&values, "battery"),
        vec![
            g(BatteryChargeRatio, 0.97),
            g(BatteryRuntimeSeconds, 1920.0),
            g(VoltageVolts, 546.0),
            g(TemperatureCelsius, 25.0)
        ]
    );
    // Totals: in 3400 + 3350 + 3500, out 3200 + 3150 + 3300, losses the difference.
    assert_eq!(of(&values, "input"), vec![Value::PowerW(10_250.0)]);
    assert_eq!(of(&values, "output"), vec![Value::PowerW(9_650.0)]);
    assert_eq!(of(&values, "losses"), vec![Value::PowerW(600.0)]);

    // One boundary: the UPS's input; output and losses split it; lines
    // are parts. All energy is integrated from power.
    let inv = inventory("ups-1", sim.device(&v2c(&dir, "ups"))).await;
    assert_eq!(role(&inv, "ups-1:input"), Some((Boundary, None)));
    for part in [
        "ups-1:output",
        "ups-1:losses",
        "ups-1:input-2",
        "ups-1:output-1",
    ] {
        assert_eq!(
            role(&inv, part),
            Some((Component, Some("ups-1:input".to_owned()))),
            "{part}"
        );
    }
    assert!(
        inv.iter()
            .filter(|m| m.method.is_some())
            .all(|m| m.method == Some(vigie_protocol::Method::IntegratedPower))
    );
    let counted: Vec<&str> = inv
        .iter()
        .filter(|m| m.method.is_some() && m.in_totals())
        .map(|m| m.name.as_str())
        .collect();
    assert_eq!(counted, vec!["ups-1:input"]);
    let battery = inv.iter().find(|m| m.name == "ups-1:battery").unwrap();
    assert_eq!((battery.method, battery.scope.as_ref()), (None, None));
}

#[tokio::test]
async fn apc_ups_energy_register_tripp_lite_pdu_and_a_device_no_map_fits() {
    use GaugeQuantity::{BatteryChargeRatio, BatteryRuntimeSeconds, UtilizationRatio};
    let Some(sim) = Simulator::start(&[
        ("apcups", synthetic().join("apc-ups-synthetic.snmprec")),
        (
            "tripplite",
            synthetic().join("tripplite-pdu-synthetic.snmprec"),
        ),
        (
            "router",
            synthetic().join("unknown-device-synthetic.snmprec"),
        ),
    ]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();

    // APC, sysObjectID 1.3.6.1.4.1.318.1.3.27.
    let mut d = sim.device(&v2c(&dir, "apcups"));
    let values = poll(&mut d).await.unwrap();
    assert_eq!(d.model().unwrap().name, "apc-ups");
    // upsHighPrecOutputEnergyUsage 1234567 x 0.01 kWh (36 kJ); active
    // power 2150 W; load 537 -> 0.537.
    assert_eq!(
        of(&values, "output"),
        vec![
            energy("output", 1_234_567, 36_000_000_000, U32_MAX).value,
            Value::PowerW(2150.0),
            g(UtilizationRatio, 0.537)
        ]
    );
    // Capacity 100 %; runtime 246000 TimeTicks -> 2460 s.
    assert_eq!(
        of(&values, "battery"),
        vec![g(BatteryChargeRatio, 1.0), g(BatteryRuntimeSeconds, 2460.0)]
    );
    // UPS-MIB input 2290 W; losses 2290 - 2150.
    assert_eq!(of(&values, "input"), vec![Value::PowerW(2290.0)]);
    assert_eq!(of(&values, "losses"), vec![Value::PowerW(140.0)]);
    let inv = inventory("ups-2", sim.device(&v2c(&dir, "apcups"))).await;
    let output = inv.iter().find(|m| m.name == "ups-2:output").unwrap();
    assert_eq!(output.method, Some(vigie_protocol::Method::Counter));
    assert_eq!(
        role(&inv, "ups-2:output").map(|r| r.0),
        Some(vigie_protocol::ScopeRole::Component)
    );

    // Tripp Lite, sysObjectID 1.3.6.1.4.1.850.1.1.1: device 1 only.
    let mut d = sim.device(&v2c(&dir, "tripplite"));
    let values = poll(&mut d).await.unwrap();
    assert_eq!(d.model().unwrap().name, "tripplite-pdu");
    assert_eq!(
        values,
        vec![
            power("device", 1840.0),
            power("outlet-1", 420.0),
            power("outlet-2", 0.0),
            power("outlet-3", 1420.0),
        ]
    );

    // sysObjectID 1.3.6.1.4.1.9.1.1 and nothing any map reads.
    let mut d = sim.device(&v2c(&dir, "router"));
    let err = poll(&mut d).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, DeviceError::Config(_)), "{text}");
    assert!(text.contains("1.3.6.1.4.1.9.1.1"), "{text}");
    assert!(text.contains("none of the maps fits"), "{text}");
    for map in [
        "apc-rpdu2",
        "apc-rpdu",
        "raritan-pdu2",
        "servertech-sentry4",
        "eaton-epdu",
        "tripplite-pdu",
        "apc-ups",
        "ups-mib",
    ] {
        assert!(text.contains(&format!("{map} (")), "{map}: {text}");
    }
}

#[tokio::test]
async fn probe_shows_the_drivers_diagnosis_not_its_own_deadline() {
    let Some(sim) = Simulator::start(&[("ap8641", apc_dumps().join("apc-ap8641-rpdu2.snmprec"))])
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // Warm snmpsim's SNMPv3 (see a_wrong_community_...).
    let mut warm = sim.device(&format!(
        "version = \"3\"\nuser = \"vigie-sha\"\ncontext = \"ap8641\"\n\
         auth_protocol = \"sha\"\nauth_passphrase_file = {:?}\n\
         priv_protocol = \"aes\"\npriv_passphrase_file = {:?}",
        secret(&dir, "a", "auth-passphrase"),
        secret(&dir, "p", "priv-passphrase"),
    ));
    poll(&mut warm).await.unwrap();
    // Default timeout (3 s) and retries (1): the driver needs more than 5 s
    // to give up, which probe used to cut short as "device unreachable".
    let community = secret(&dir, "wrong", "wrong-community");
    let mut cfg: vigie_agent::config::AgentConfig = toml::from_str(&format!(
        "host = \"probe\"\n[rapl]\nenabled = false\n[gpu]\nenabled = false\n[model]\nmode = \"off\"\n\
         [[devices]]\nname = \"pdu\"\nperiod = \"1s\"\n[devices.snmp]\nhost = \"127.0.0.1\"\nport = {}\n\
         community_file = {community:?}\n",
        sim.port
    ))
    .unwrap();
    cfg.state_dir = dir.path().to_owned();
    let report = vigie_agent::probe::probe(
        &cfg,
        vigie_agent::Hardware::default(),
        Duration::from_millis(10),
    )
    .await;
    let pdu = report.sources.iter().find(|s| s.name == "pdu").unwrap();
    assert!(!pdu.ok);
    let why = pdu.reason.as_deref().unwrap();
    assert!(why.contains("community_file is most likely wrong"), "{why}");
}
