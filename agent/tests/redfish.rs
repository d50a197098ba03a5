//! The Redfish driver against the DMTF mockups in `testdata/redfish` at the workspace root
//! served from 127.0.0.1 by a small HTTP(S) server, one `index.json` per
//! resource directory as the mockups are laid out.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use vigie_agent::device::redfish::{self, RedfishConfig, RedfishDevice};
use vigie_agent::device::{Device, DeviceError, PointValue, Value};
use vigie_protocol::GaugeQuantity;

fn mockup(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/redfish")
        .join(name)
}

/// What the server saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    authorization: Option<String>,
}

#[derive(Default)]
struct Options {
    /// Bodies served instead of the mockup's, by path.
    overrides: HashMap<String, String>,
    /// The `Authorization` header to require.
    authorization: Option<String>,
    tls: Option<TlsAcceptor>,
}

struct Mock {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// While set, every request gets 503.
    failing: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Mock {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Mock {
    fn paths(&self) -> Vec<String> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|s| s.path.clone())
            .collect()
    }

    fn clear(&self) {
        self.seen.lock().unwrap().clear();
    }
}

async fn serve(root: PathBuf, options: Options) -> Mock {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let failing = Arc::new(AtomicBool::new(false));
    let shared = Arc::new((root, options, seen.clone(), failing.clone()));
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let shared = shared.clone();
            tokio::spawn(async move {
                let (root, options, seen, failing) = &*shared;
                let ctx = (
                    root.as_path(),
                    options,
                    &**seen,
                    failing.load(Ordering::SeqCst),
                );
                match &options.tls {
                    Some(acceptor) => {
                        // A client that refuses our certificate ends here.
                        if let Ok(tls) = acceptor.accept(stream).await {
                            answer(tls, ctx).await;
                        }
                    }
                    None => answer(stream, ctx).await,
                }
            });
        }
    });
    Mock {
        addr,
        seen,
        failing,
        task,
    }
}

/// Reads one request head and answers it, then closes.
async fn answer<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    (root, options, seen, failing): (&Path, &Options, &Mutex<Vec<Seen>>, bool),
) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        // Not HTTP (a TLS ClientHello starts with record type 22): answer
        // as HTTP servers do, 400 in clear, and close.
        if head.first().is_some_and(|b| !b.is_ascii_alphabetic()) {
            let _ = stream
                .write_all(
                    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                )
                .await;
            let _ = stream.shutdown().await;
            return;
        }
        if head.len() > 64 * 1024 {
            return;
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut lines = head.split("\r\n");
    let target = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("/")
        .to_owned();
    let authorization = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("authorization"))
        .map(|(_, v)| v.trim().to_owned());
    let path = target.split('?').next().unwrap_or("/").to_owned();
    seen.lock().unwrap().push(Seen {
        path: path.clone(),
        authorization: authorization.clone(),
    });

    let (status, body) = if failing {
        ("503 Service Unavailable", String::new())
    } else if options.authorization.is_some() && options.authorization != authorization {
        ("401 Unauthorized", String::new())
    } else if let Some(body) = options.overrides.get(&path) {
        ("200 OK", body.clone())
    } else {
        match mockup_file(root, &path).and_then(|f| std::fs::read_to_string(f).ok()) {
            Some(body) => ("200 OK", body),
            None => ("404 Not Found", "{}".to_owned()),
        }
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// `/redfish/v1/Chassis/1U` -> `{root}/Chassis/1U/index.json`.
fn mockup_file(root: &Path, path: &str) -> Option<PathBuf> {
    let rest = path.strip_prefix("/redfish/v1")?.trim_matches('/');
    if rest.split('/').any(|part| part == "..") {
        return None;
    }
    Some(root.join(rest).join("index.json"))
}

fn config(url: String) -> RedfishConfig {
    RedfishConfig {
        url,
        username: None,
        password_file: None,
        ca_file: None,
        insecure: false,
        timeout: Duration::from_secs(20),
        chassis: Vec::new(),
    }
}

fn device(mock: &Mock) -> RedfishDevice {
    redfish::build(&config(format!("http://{}", mock.addr))).unwrap()
}

/// The values of one point, in the order the driver gave them.
fn of(values: &[PointValue], point: &str) -> Vec<Value> {
    values
        .iter()
        .filter(|v| v.point == point)
        .map(|v| v.value)
        .collect()
}

fn kwh(kwh: u64) -> Value {
    // Milliwatt-hours, 3.6 J each.
    Value::EnergyCounter {
        raw: kwh * 1_000_000,
        uj_per_unit: 3_600_000,
        max_raw: u64::MAX,
    }
}

fn gauge(quantity: GaugeQuantity, x: f64) -> Value {
    Value::Gauge(quantity, x)
}

use GaugeQuantity::{
    CurrentAmperes, PowerLimitWatts, PowerWatts, TemperatureCelsius, VoltageVolts,
};

fn assert_names_are_clean_and_unique(values: &[PointValue]) {
    let mut seen = std::collections::HashSet::new();
    for v in values {
        assert!(
            !v.point.is_empty()
                && v.point
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".-_".contains(c)),
            "{}",
            v.point
        );
        let kind = match v.value {
            Value::PowerW(_) => "power".to_owned(),
            Value::EnergyCounter { .. } => "energy".to_owned(),
            Value::Gauge(q, _) => q.as_str().to_owned(),
        };
        assert!(seen.insert((v.point.clone(), kind)), "twice: {v:?}");
    }
}

#[tokio::test]
async fn rack_pdu_mockup_outlets_branches_mains_and_totals() {
    let mock = serve(mockup("public-pdu"), Options::default()).await;
    let values = device(&mock).poll().await.unwrap();
    assert_names_are_clean_and_unique(&values);

    // PowerEquipment/RackPDUs/1/Outlets/A1: PowerWatts 197.4 W, EnergykWh
    // 36166, Voltage 117.5 V, CurrentAmps 1.68 A.
    assert_eq!(
        of(&values, "outlet-A1"),
        vec![
            Value::PowerW(197.4),
            kwh(36166),
            gauge(VoltageVolts, 117.5),
            gauge(CurrentAmperes, 1.68)
        ]
    );
    assert_eq!(
        of(&values, "outlet-B3"),
        vec![
            Value::PowerW(426.5),
            kwh(61848),
            gauge(VoltageVolts, 204.1),
            gauge(CurrentAmperes, 2.09)
        ]
    );
    assert_eq!(
        of(&values, "outlet-C1"),
        vec![
            Value::PowerW(56.8),
            kwh(36166),
            gauge(VoltageVolts, 118.4),
            gauge(CurrentAmperes, 0.48)
        ]
    );
    // Outlets A4 and A5 report nothing.
    assert!(of(&values, "outlet-A4").is_empty());
    assert_eq!(
        values
            .iter()
            .filter(|v| v.point.starts_with("outlet-"))
            .count(),
        9 * 4
    );

    // Branch A: single power, energy and current; voltage only per line.
    assert_eq!(
        of(&values, "branch-A"),
        vec![
            Value::PowerW(937.4),
            kwh(325_675),
            gauge(CurrentAmperes, 5.19)
        ]
    );
    assert_eq!(
        of(&values, "branch-A.Line1ToNeutral"),
        vec![gauge(VoltageVolts, 118.2)]
    );
    assert_eq!(
        of(&values, "branch-A.Line1ToLine2"),
        vec![gauge(VoltageVolts, 203.5)]
    );
    assert_eq!(
        of(&values, "branch-C"),
        vec![
            Value::PowerW(816.5),
            kwh(121_666),
            gauge(CurrentAmperes, 4.13)
        ]
    );

    // Mains AC1 is three-phase with no single figure: per-line gauges only.
    assert!(of(&values, "mains-AC1").is_empty());
    assert_eq!(
        of(&values, "mains-AC1.Line1ToNeutral"),
        vec![gauge(VoltageVolts, 117.8), gauge(PowerWatts, 198.4)]
    );
    assert_eq!(
        of(&values, "mains-AC1.Line2ToLine3"),
        vec![gauge(VoltageVolts, 203.8), gauge(PowerWatts, 748.3)]
    );
    assert_eq!(
        of(&values, "mains-AC1.Line3"),
        vec![gauge(CurrentAmperes, 6.91)]
    );
    assert_eq!(
        of(&values, "mains-AC1.Neutral"),
        vec![gauge(CurrentAmperes, 2.74)]
    );

    // RackPDUs/1/Metrics: the whole PDU.
    assert_eq!(
        of(&values, "pdu-1"),
        vec![
            Value::PowerW(6438.0),
            kwh(56438),
            gauge(TemperatureCelsius, 31.0)
        ]
    );

    // Chassis/PDU/Sensors: those the PDU resources read through their
    // DataSourceUri are not read twice, the others are.
    for duplicate in [
        "sensor-PDU.PowerA1",
        "sensor-PDU.EnergyA1",
        "sensor-PDU.PowerA",
        "sensor-PDU.PDUPower",
        "sensor-PDU.PowerMains1-4",
    ] {
        assert!(of(&values, duplicate).is_empty(), "{duplicate}");
    }
    assert_eq!(
        of(&values, "sensor-PDU.ACMainPower"),
        vec![Value::PowerW(28783.0)]
    );
    assert_eq!(
        of(&values, "sensor-PDU.GroupEnergyRack5Storage"),
        vec![kwh(26880)]
    );
    // Not power or energy: not read.
    assert!(of(&values, "sensor-PDU.VoltageA1").is_empty());
    assert!(of(&values, "sensor-PDU.CabTemp").is_empty());
}

#[tokio::test]
async fn rackmount_mockup_chassis_power_supplies_and_sensors() {
    let mock = serve(mockup("public-rackmount1"), Options::default()).await;
    let values = device(&mock).poll().await.unwrap();
    assert_names_are_clean_and_unique(&values);

    // Chassis/1U/Power: PowerControl[0].PowerConsumedWatts 344 W, limit 500 W.
    assert_eq!(
        of(&values, "chassis-1U"),
        vec![Value::PowerW(344.0), gauge(PowerLimitWatts, 500.0)]
    );
    // Legacy PowerSupplies[0]: LineInputVoltage 120 V, no input power.
    assert_eq!(of(&values, "psu-1U.0"), vec![gauge(VoltageVolts, 120.0)]);
    // Chassis/1U/EnvironmentMetrics: PowerWatts 374 W, 39 °C, limit 500 W.
    assert_eq!(
        of(&values, "chassis-1U.env"),
        vec![
            Value::PowerW(374.0),
            gauge(TemperatureCelsius, 39.0),
            gauge(PowerLimitWatts, 500.0)
        ]
    );
    // PowerSubsystem/PowerSupplies/Bay1/Metrics.
    assert_eq!(
        of(&values, "psu-1U.Bay1"),
        vec![
            gauge(PowerWatts, 937.4),
            kwh(325_675),
            gauge(VoltageVolts, 230.2),
            gauge(CurrentAmperes, 5.19)
        ]
    );
    assert_eq!(
        of(&values, "psu-1U.Bay1.output"),
        vec![gauge(PowerWatts, 937.4)]
    );
    // Bay2 has no Metrics.
    assert!(values.iter().all(|v| !v.point.starts_with("psu-1U.Bay2")));
    // Sensors (the collection's members; the mockup's CPU1Power is not
    // one): TotalEnergy 325675 kWh is read;
    // TotalPower (EnvironmentMetrics) and PS1InputPower, PS1Energy (Bay1
    // Metrics) are read there; PS2InputPower and PS2Energy have a null
    // Reading; temperatures are not power.
    assert_eq!(of(&values, "sensor-1U.TotalEnergy"), vec![kwh(325_675)]);
    let sensors: Vec<&str> = values
        .iter()
        .filter(|v| v.point.starts_with("sensor-"))
        .map(|v| v.point.as_str())
        .collect();
    assert_eq!(sensors, vec!["sensor-1U.TotalEnergy"]);
}

#[tokio::test]
async fn later_polls_read_only_the_planned_resources_and_errors_rediscover() {
    let mock = serve(mockup("public-rackmount1"), Options::default()).await;
    let mut dev = device(&mock);
    let first = dev.poll().await.unwrap();
    assert!(mock.paths().contains(&"/redfish/v1/".to_owned()));

    mock.clear();
    assert_eq!(dev.poll().await.unwrap(), first);
    let mut planned = mock.paths();
    planned.sort();
    assert_eq!(
        planned,
        vec![
            "/redfish/v1/Chassis/1U/EnvironmentMetrics",
            "/redfish/v1/Chassis/1U/Power",
            "/redfish/v1/Chassis/1U/PowerSubsystem/PowerSupplies/Bay1/Metrics",
            "/redfish/v1/Chassis/1U/Sensors/PS2Energy",
            "/redfish/v1/Chassis/1U/Sensors/PS2InputPower",
            "/redfish/v1/Chassis/1U/Sensors/TotalEnergy",
        ]
    );

    // A busy BMC: the poll fails and the plan is dropped.
    mock.failing.store(true, Ordering::SeqCst);
    assert!(matches!(
        dev.poll().await,
        Err(DeviceError::Unreachable(m)) if m.contains("503")
    ));
    mock.failing.store(false, Ordering::SeqCst);
    mock.clear();
    assert_eq!(dev.poll().await.unwrap(), first);
    assert!(
        mock.paths().contains(&"/redfish/v1/".to_owned()),
        "discovered again"
    );
}

#[tokio::test]
async fn null_and_missing_readings_are_skipped() {
    let root = mockup("public-pdu");
    let path = "/redfish/v1/PowerEquipment/RackPDUs/1/Outlets/A1";
    let mut outlet: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("PowerEquipment/RackPDUs/1/Outlets/A1/index.json"))
            .unwrap(),
    )
    .unwrap();
    outlet["PowerWatts"]["Reading"] = serde_json::Value::Null;
    outlet.as_object_mut().unwrap().remove("EnergykWh");
    outlet["Voltage"]["Reading"] = "n/a".into();
    let mut legacy: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(mockup("public-rackmount1").join("Chassis/1U/Power/index.json"))
            .unwrap(),
    )
    .unwrap();
    legacy["PowerControl"][0]["PowerConsumedWatts"] = serde_json::Value::Null;
    legacy["PowerSupplies"][0]
        .as_object_mut()
        .unwrap()
        .remove("LineInputVoltage");

    let mock = serve(
        root,
        Options {
            overrides: HashMap::from([(path.to_owned(), outlet.to_string())]),
            ..Options::default()
        },
    )
    .await;
    let values = device(&mock).poll().await.unwrap();
    // Power null, energy missing, voltage not a number: the current is left.
    assert_eq!(of(&values, "outlet-A1"), vec![gauge(CurrentAmperes, 1.68)]);
    // Without its single voltage, the outlet's per-line one stands in;
    // its current is single, so no per-line current.
    assert!(of(&values, "outlet-A1.Line1").is_empty());
    assert_eq!(
        of(&values, "outlet-A1.Line1ToNeutral"),
        vec![gauge(VoltageVolts, 117.5)]
    );
    assert_eq!(of(&values, "outlet-A2").len(), 4, "the others are whole");

    let mock = serve(
        mockup("public-rackmount1"),
        Options {
            overrides: HashMap::from([(
                "/redfish/v1/Chassis/1U/Power".to_owned(),
                legacy.to_string(),
            )]),
            ..Options::default()
        },
    )
    .await;
    let values = device(&mock).poll().await.unwrap();
    assert_eq!(
        of(&values, "chassis-1U"),
        vec![gauge(PowerLimitWatts, 500.0)]
    );
    assert!(of(&values, "psu-1U.0").is_empty());
    assert_eq!(of(&values, "chassis-1U.env")[0], Value::PowerW(374.0));
}

#[tokio::test]
async fn the_chassis_filter_keeps_the_pdus() {
    let mock = serve(mockup("public-pdu"), Options::default()).await;
    let mut cfg = config(format!("http://{}", mock.addr));
    cfg.chassis = vec!["TransferSwitch1".into()];
    let values = redfish::build(&cfg).unwrap().poll().await.unwrap();
    assert!(values.iter().all(|v| !v.point.starts_with("sensor-PDU.")));
    assert!(!of(&values, "outlet-A1").is_empty());
    assert!(
        !mock
            .paths()
            .iter()
            .any(|p| p.starts_with("/redfish/v1/Chassis/PDU/"))
    );

    // Nothing to read is an error (the next poll looks again), not an
    // empty success.
    let mock = serve(mockup("public-rackmount1"), Options::default()).await;
    let mut cfg = config(format!("http://{}", mock.addr));
    cfg.chassis = vec!["2U".into()];
    let err = redfish::build(&cfg).unwrap().poll().await.unwrap_err();
    assert!(
        matches!(&err, DeviceError::Protocol(m) if m.contains("2U")),
        "{err:?}"
    );
}

fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn secret_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

#[tokio::test]
async fn basic_auth_comes_from_the_password_file() {
    assert_eq!(
        base64(b"Aladdin:open sesame"),
        "QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
    );
    let dir = tempfile::tempdir().unwrap();
    let expected = format!("Basic {}", base64(b"vigie:s3cret pw"));
    let mock = serve(
        mockup("public-rackmount1"),
        Options {
            authorization: Some(expected.clone()),
            ..Options::default()
        },
    )
    .await;
    let mut cfg = config(format!("http://{}", mock.addr));
    cfg.username = Some("vigie".into());
    cfg.password_file = Some(secret_file(dir.path(), "pw", "s3cret pw\n"));
    let mut dev = redfish::build(&cfg).unwrap();
    assert!(
        !format!("{dev:?}").contains("s3cret"),
        "the password shows in Debug"
    );
    let values = dev.poll().await.unwrap();
    assert_eq!(of(&values, "chassis-1U")[0], Value::PowerW(344.0));
    let seen = mock.seen.lock().unwrap().clone();
    assert!(seen.len() > 5);
    assert!(
        seen.iter()
            .all(|s| s.authorization.as_deref() == Some(expected.as_str())),
        "{seen:?}"
    );

    cfg.password_file = Some(secret_file(dir.path(), "wrong", "nope\n"));
    let err = redfish::build(&cfg).unwrap().poll().await.unwrap_err();
    assert!(
        matches!(&err, DeviceError::Auth(m) if m.contains("401")),
        "{err:?}"
    );

    cfg.password_file = Some(dir.path().join("missing"));
    assert!(matches!(
        redfish::build(&cfg),
        Err(DeviceError::Config(m)) if m.contains("password_file")
    ));
}

fn tls_acceptor(pki: &vigie_testkit::pki::Pki) -> TlsAcceptor {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let files = pki.server().unwrap();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(&files.key).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    TlsAcceptor::from(Arc::new(config))
}

#[tokio::test]
async fn https_with_the_targets_own_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (ca_dir, other_dir) = (dir.path().join("ca"), dir.path().join("other"));
    std::fs::create_dir_all(&ca_dir).unwrap();
    std::fs::create_dir_all(&other_dir).unwrap();
    let pki = vigie_testkit::pki::Pki::new(&ca_dir).unwrap();
    let other = vigie_testkit::pki::Pki::new(&other_dir).unwrap();
    let mock = serve(
        mockup("public-rackmount1"),
        Options {
            tls: Some(tls_acceptor(&pki)),
            ..Options::default()
        },
    )
    .await;
    let url = format!("https://{}", mock.addr);

    let mut cfg = config(url.clone());
    cfg.ca_file = Some(pki.ca_file.clone());
    let values = redfish::build(&cfg).unwrap().poll().await.unwrap();
    assert_eq!(of(&values, "chassis-1U")[0], Value::PowerW(344.0));

    // Another CA, or the system's roots: the certificate is refused.
    for ca_file in [Some(other.ca_file.clone()), None] {
        let mut cfg = config(url.clone());
        cfg.ca_file = ca_file;
        let err = redfish::build(&cfg).unwrap().poll().await.unwrap_err();
        assert!(
            matches!(&err, DeviceError::Config(m) if m.contains("not trusted")),
            "{err:?}"
        );
    }

    // The explicit switch: no verification.
    let mut cfg = config(url);
    cfg.insecure = true;
    let values = redfish::build(&cfg).unwrap().poll().await.unwrap();
    assert_eq!(of(&values, "chassis-1U")[0], Value::PowerW(344.0));
}

/// The inventory the device runner announces from the first poll.
async fn announced(device: RedfishDevice) -> Vec<vigie_protocol::SensorMeta> {
    let cfg: vigie_agent::device::DeviceConfig =
        toml::from_str("name = \"bmc\"\nperiod = \"1s\"\n[redfish]\nurl = \"http://x\"\n").unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    fn clock() -> i64 {
        1_000
    }
    let task = vigie_agent::device::spawn(&cfg, Box::new(device), tx, clock, &[]);
    let first = tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .unwrap()
        .unwrap();
    task.abort();
    first.new_sensors
}

fn role_of(
    inventory: &[vigie_protocol::SensorMeta],
    sensor: &str,
) -> Option<(vigie_protocol::ScopeRole, Option<String>)> {
    let meta = inventory.iter().find(|m| m.name == sensor)?;
    meta.scope.as_ref().map(|s| (s.role, s.of.clone()))
}

#[tokio::test]
async fn one_server_seen_five_ways_has_one_boundary_and_a_nested_card_is_a_part() {
    use vigie_protocol::ScopeRole::{Alternative, Boundary, Component};
    let root = mockup("public-rackmount1");
    let read = |rel: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(root.join(rel)).unwrap()).unwrap()
    };
    // A card inside the 1U server, with its own EnvironmentMetrics power.
    let mut collection = read("Chassis/index.json");
    collection["Members"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"@odata.id": "/redfish/v1/Chassis/Card1"}));
    let card = serde_json::json!({
        "@odata.id": "/redfish/v1/Chassis/Card1",
        "Id": "Card1",
        "ChassisType": "Card",
        "EnvironmentMetrics": {"@odata.id": "/redfish/v1/Chassis/Card1/EnvironmentMetrics"},
        "Links": {"ContainedBy": {"@odata.id": "/redfish/v1/Chassis/1U"}}
    });
    let card_env = serde_json::json!({
        "@odata.id": "/redfish/v1/Chassis/Card1/EnvironmentMetrics",
        "PowerWatts": {"Reading": 75.0}
    });
    let mut overrides = HashMap::new();
    overrides.insert("/redfish/v1/Chassis".to_owned(), collection.to_string());
    overrides.insert("/redfish/v1/Chassis/Card1".to_owned(), card.to_string());
    overrides.insert(
        "/redfish/v1/Chassis/Card1/EnvironmentMetrics".to_owned(),
        card_env.to_string(),
    );
    let mock = serve(
        root.clone(),
        Options {
            overrides,
            ..Options::default()
        },
    )
    .await;
    let inventory = announced(device(&mock)).await;

    // The whole server, read four ways: the TotalEnergy sensor (an energy
    // register, so the boundary), EnvironmentMetrics and legacy
    // PowerControl power (alternatives of it).
    let boundary = "bmc:sensor-1U.TotalEnergy";
    assert_eq!(role_of(&inventory, boundary), Some((Boundary, None)));
    for alt in ["bmc:chassis-1U.env", "bmc:chassis-1U"] {
        assert_eq!(
            role_of(&inventory, alt),
            Some((Alternative, Some(boundary.to_owned()))),
            "{alt}"
        );
    }
    // A power supply's register and the nested card: parts of the whole.
    for part in ["bmc:psu-1U.Bay1", "bmc:chassis-Card1.env"] {
        assert_eq!(
            role_of(&inventory, part),
            Some((Component, Some(boundary.to_owned()))),
            "{part}"
        );
    }
    let counted: Vec<&str> = inventory
        .iter()
        .filter(|m| m.method.is_some() && m.in_totals())
        .map(|m| m.name.as_str())
        .collect();
    assert_eq!(
        counted,
        vec![boundary],
        "one energy sensor counts the server"
    );

    // Without the register, EnvironmentMetrics is preferred over legacy.
    let mut no_total = read("Chassis/1U/Sensors/index.json");
    no_total["Members"]
        .as_array_mut()
        .unwrap()
        .retain(|m| !m["@odata.id"].as_str().unwrap().ends_with("/TotalEnergy"));
    let mut overrides = HashMap::new();
    overrides.insert(
        "/redfish/v1/Chassis/1U/Sensors".to_owned(),
        no_total.to_string(),
    );
    let mock = serve(
        root,
        Options {
            overrides,
            ..Options::default()
        },
    )
    .await;
    let inventory = announced(device(&mock)).await;
    assert_eq!(
        role_of(&inventory, "bmc:chassis-1U.env"),
        Some((Boundary, None))
    );
    assert_eq!(
        role_of(&inventory, "bmc:chassis-1U").map(|r| r.0),
        Some(Alternative)
    );
}

#[tokio::test]
async fn a_redfish_pdu_counts_its_total_once_not_with_its_mains_branches_and_outlets() {
    use vigie_protocol::ScopeRole::{Alternative, Boundary, Component};
    let mock = serve(mockup("public-pdu"), Options::default()).await;
    let inventory = announced(device(&mock)).await;
    let energy: Vec<&vigie_protocol::SensorMeta> =
        inventory.iter().filter(|m| m.method.is_some()).collect();
    assert!(energy.len() > 3, "{energy:?}");
    let mut boundaries: Vec<&str> = energy
        .iter()
        .filter(|m| m.in_totals())
        .map(|m| m.name.as_str())
        .collect();
    boundaries.sort_unstable();
    // The PDU's metrics (an energy register) and the mockup's transfer
    // switch, a device of its own; its sensors all say `Chassis`, so its
    // register stands for it and its power sensors are the same whole.
    assert_eq!(
        boundaries,
        vec!["bmc:pdu-1", "bmc:sensor-TransferSwitch1.EnergyA1"]
    );
    assert_eq!(
        role_of(&inventory, "bmc:pdu-1").map(|r| r.0),
        Some(Boundary)
    );
    // The PDU's chassis is the PDU: its mains power sensor is the same
    // whole; mains, branches and outlets are parts.
    assert_eq!(
        role_of(&inventory, "bmc:sensor-PDU.ACMainPower"),
        Some((Alternative, Some("bmc:pdu-1".to_owned())))
    );
    for m in energy.iter().filter(|m| {
        ["bmc:mains-", "bmc:branch-", "bmc:outlet-"]
            .iter()
            .any(|p| m.name.starts_with(p))
    }) {
        assert_eq!(
            role_of(&inventory, &m.name),
            Some((Component, Some("bmc:pdu-1".to_owned()))),
            "{}",
            m.name
        );
    }
    assert!(energy.iter().any(|m| m.name.starts_with("bmc:outlet-")));
}

/// The synthetic power-shelf, bus, CDU and blade-enclosure service in
/// `agent/testdata/redfish/` (see its README).
fn synthetic(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/redfish")
        .join(name)
}

/// An exact register of `mwh` milliwatt-hours (Redfish kWh x 10^6).
fn mwh(mwh: u64) -> Value {
    Value::EnergyCounter {
        raw: mwh,
        uj_per_unit: 3_600_000,
        max_raw: u64::MAX,
    }
}

#[tokio::test]
async fn legacy_last_power_output_is_read_and_integrated_as_a_part_of_the_chassis() {
    use vigie_protocol::ScopeRole::{Boundary, Component};
    // The 1U server's legacy supply reports LastPowerOutputWatts 325 W.
    let mock = serve(mockup("public-rackmount1"), Options::default()).await;
    let values = device(&mock).poll().await.unwrap();
    assert_names_are_clean_and_unique(&values);
    assert_eq!(of(&values, "psu-1U.0.output"), vec![Value::PowerW(325.0)]);
    let inventory = announced(device(&mock)).await;
    let out = inventory
        .iter()
        .find(|m| m.name == "bmc:psu-1U.0.output")
        .unwrap();
    assert_eq!(out.method, Some(vigie_protocol::Method::IntegratedPower));
    assert_eq!(
        role_of(&inventory, "bmc:psu-1U.0.output"),
        Some((Component, Some("bmc:sensor-1U.TotalEnergy".to_owned())))
    );

    // A blade enclosure: no PowerConsumedWatts, only its supplies' output.
    let mock = serve(synthetic("synthetic-power-cooling"), Options::default()).await;
    let values = device(&mock).poll().await.unwrap();
    assert_names_are_clean_and_unique(&values);
    assert!(of(&values, "chassis-Enclosure").is_empty());
    assert_eq!(
        of(&values, "psu-Enclosure.1"),
        vec![gauge(VoltageVolts, 230.0)]
    );
    assert_eq!(
        of(&values, "psu-Enclosure.1.output"),
        vec![Value::PowerW(1520.0)]
    );
    assert_eq!(
        of(&values, "psu-Enclosure.2.output"),
        vec![Value::PowerW(1480.0)]
    );
    let inventory = announced(device(&mock)).await;
    for psu in ["bmc:psu-Enclosure.1.output", "bmc:psu-Enclosure.2.output"] {
        let meta = inventory.iter().find(|m| m.name == psu).unwrap();
        assert_eq!(meta.method, Some(vigie_protocol::Method::IntegratedPower));
        // Two supplies and no whole: each is the boundary of its share.
        assert_eq!(role_of(&inventory, psu).map(|r| r.0), Some(Boundary));
    }
}

#[tokio::test]
async fn power_shelves_buses_and_cooling_units_are_read_with_scopes() {
    use GaugeQuantity::{
        FlowCubicMetresPerHour, HeatPowerWatts, ReturnTemperatureCelsius, SupplyTemperatureCelsius,
    };
    use vigie_protocol::ScopeRole::{Alternative, Boundary, Component};
    let mock = serve(synthetic("synthetic-power-cooling"), Options::default()).await;
    let mut dev = device(&mock);
    let values = dev.poll().await.unwrap();
    assert_names_are_clean_and_unique(&values);

    // PowerShelves/1/Mains/AC1: 6210 W, 48210.25 kWh; per-line voltages.
    assert_eq!(
        of(&values, "shelf-1.mains-AC1"),
        vec![Value::PowerW(6210.0), mwh(48_210_250_000)]
    );
    assert_eq!(
        of(&values, "shelf-1.mains-AC1.Line2ToNeutral"),
        vec![gauge(VoltageVolts, 229.5)]
    );
    // Its supplies: input power (energy), register, voltage; output a gauge.
    assert_eq!(
        of(&values, "shelf-1.psu-PSU1"),
        vec![
            Value::PowerW(2075.0),
            mwh(16_070_500_000),
            gauge(VoltageVolts, 230.4)
        ]
    );
    assert_eq!(
        of(&values, "shelf-1.psu-PSU2.output"),
        vec![gauge(PowerWatts, 1962.0)]
    );
    assert!(values.iter().all(|v| !v.point.contains("PSU3")));
    // The DC bus bar and its outputs.
    assert_eq!(
        of(&values, "shelf-1.branch-DC"),
        vec![
            Value::PowerW(5890.0),
            gauge(VoltageVolts, 54.1),
            gauge(CurrentAmperes, 108.9)
        ]
    );
    assert_eq!(
        of(&values, "shelf-1.outlet-2"),
        vec![Value::PowerW(2940.0), gauge(VoltageVolts, 54.1)]
    );
    // ElectricalBuses/Busway1: metrics and its feed.
    assert_eq!(
        of(&values, "bus-Busway1"),
        vec![Value::PowerW(41200.0), mwh(912_345_500_000)]
    );
    assert_eq!(
        of(&values, "bus-Busway1.mains-Feed1"),
        vec![Value::PowerW(41200.0)]
    );
    // ThermalEquipment/CDUs/1: its electricity, and per connector heat
    // removed (kW -> W), flow (L/min -> m3/h), supply and return.
    assert_eq!(
        of(&values, "cdu-1"),
        vec![
            Value::PowerW(3150.0),
            mwh(8_123_500_000),
            gauge(TemperatureCelsius, 24.5)
        ]
    );
    assert_eq!(
        of(&values, "cdu-1.primary-1"),
        vec![
            gauge(HeatPowerWatts, 68_400.0),
            gauge(FlowCubicMetresPerHour, 5.7),
            gauge(SupplyTemperatureCelsius, 32.0),
            gauge(ReturnTemperatureCelsius, 42.5)
        ]
    );
    assert_eq!(
        of(&values, "cdu-1.secondary-1"),
        vec![
            gauge(HeatPowerWatts, 67_900.0),
            gauge(FlowCubicMetresPerHour, 6.6),
            gauge(SupplyTemperatureCelsius, 35.0),
            gauge(ReturnTemperatureCelsius, 44.0)
        ]
    );

    // Found and not read: the floor PDU and the supply bay without Metrics.
    let unread = dev.unread();
    assert_eq!(unread.len(), 2, "{unread:?}");
    assert!(
        unread
            .iter()
            .any(|u| u.starts_with("/redfish/v1/PowerEquipment/FloorPDUs/FPDU1:"))
    );
    assert!(unread.iter().any(|u| u.starts_with(
        "/redfish/v1/PowerEquipment/PowerShelves/1/PowerSupplies/PSU3:"
    )));

    let inventory = announced(device(&mock)).await;
    // The shelf: its one mains input is the boundary; supplies, bus bar
    // and outputs are parts of it.
    let mains = "bmc:shelf-1.mains-AC1";
    assert_eq!(role_of(&inventory, mains), Some((Boundary, None)));
    for part in [
        "bmc:shelf-1.psu-PSU1",
        "bmc:shelf-1.psu-PSU2",
        "bmc:shelf-1.branch-DC",
        "bmc:shelf-1.outlet-1",
        "bmc:shelf-1.outlet-2",
    ] {
        assert_eq!(
            role_of(&inventory, part),
            Some((Component, Some(mains.to_owned()))),
            "{part}"
        );
    }
    assert_eq!(
        role_of(&inventory, "bmc:bus-Busway1.mains-Feed1"),
        Some((Component, Some("bmc:bus-Busway1".to_owned())))
    );
    // The CDU's electricity is its chassis's: counted once, there.
    assert_eq!(
        role_of(&inventory, "bmc:cdu-1"),
        Some((Alternative, Some("bmc:chassis-CDU1.env".to_owned())))
    );
    let mut counted: Vec<&str> = inventory
        .iter()
        .filter(|m| m.method.is_some() && m.in_totals())
        .map(|m| m.name.as_str())
        .collect();
    counted.sort_unstable();
    assert_eq!(
        counted,
        vec![
            "bmc:bus-Busway1",
            "bmc:chassis-CDU1.env",
            "bmc:psu-Enclosure.1.output",
            "bmc:psu-Enclosure.2.output",
            "bmc:shelf-1.mains-AC1",
        ]
    );
    // Heat is a gauge, never energy.
    let connector = inventory
        .iter()
        .find(|m| m.name == "bmc:cdu-1.primary-1")
        .unwrap();
    assert_eq!((connector.method, connector.scope.as_ref()), (None, None));
}

fn probe_config(url: String) -> vigie_agent::config::AgentConfig {
    let mut cfg: vigie_agent::config::AgentConfig = toml::from_str(&format!(
        "host = \"probe\"\n[rapl]\nenabled = false\n[gpu]\nenabled = false\n[model]\nmode = \"off\"\n\
         [[devices]]\nname = \"bmc\"\nperiod = \"1s\"\n[devices.redfish]\nurl = \"{url}\"\ntimeout = \"5s\"\n"
    ))
    .unwrap();
    cfg.state_dir = std::env::temp_dir();
    cfg
}

#[tokio::test]
async fn probe_names_what_is_not_read_and_a_device_with_no_reading_is_not_in_use() {
    let mock = serve(synthetic("synthetic-power-cooling"), Options::default()).await;
    let report = vigie_agent::probe::probe(
        &probe_config(format!("http://{}", mock.addr)),
        vigie_agent::Hardware::default(),
        Duration::from_millis(10),
    )
    .await;
    let bmc = report.sources.iter().find(|s| s.name == "bmc").unwrap();
    assert!(bmc.ok, "{bmc:?}");
    assert_eq!(bmc.unread.len(), 2, "{bmc:?}");
    let text = report.render();
    assert!(
        text.contains("not read: /redfish/v1/PowerEquipment/FloorPDUs/FPDU1:"),
        "{text}"
    );

    // An enclosure whose supplies report nothing at all: it answers, but
    // nothing is read, and probe must not call that "in use".
    let mut power: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            synthetic("synthetic-power-cooling").join("Chassis/Enclosure/Power/index.json"),
        )
        .unwrap(),
    )
    .unwrap();
    for supply in power["PowerSupplies"].as_array_mut().unwrap() {
        let supply = supply.as_object_mut().unwrap();
        supply.remove("LastPowerOutputWatts");
        supply.remove("LineInputVoltage");
    }
    let mut overrides = HashMap::new();
    overrides.insert(
        "/redfish/v1/Chassis/Enclosure/Power".to_owned(),
        power.to_string(),
    );
    for gone in ["/redfish/v1/PowerEquipment", "/redfish/v1/ThermalEquipment"] {
        overrides.insert(gone.to_owned(), "{}".to_owned());
    }
    overrides.insert(
        "/redfish/v1/Chassis".to_owned(),
        serde_json::json!({"Members": [{"@odata.id": "/redfish/v1/Chassis/Enclosure"}]})
            .to_string(),
    );
    let mock = serve(
        synthetic("synthetic-power-cooling"),
        Options {
            overrides,
            ..Options::default()
        },
    )
    .await;
    let report = vigie_agent::probe::probe(
        &probe_config(format!("http://{}", mock.addr)),
        vigie_agent::Hardware::default(),
        Duration::from_millis(10),
    )
    .await;
    let bmc = report.sources.iter().find(|s| s.name == "bmc").unwrap();
    assert!(!bmc.ok, "{bmc:?}");
    assert!(
        bmc.reason.as_deref().unwrap().contains("no reading"),
        "{bmc:?}"
    );
    assert!(report.render().contains("NOT IN USE"));
}

#[tokio::test]
async fn the_wrong_scheme_is_named_not_reported_as_a_corrupt_message() {
    // https:// to a plain HTTP service.
    let mock = serve(mockup("public-rackmount1"), Options::default()).await;
    let err = redfish::build(&config(format!("https://{}", mock.addr)))
        .unwrap()
        .poll()
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(&err, DeviceError::Config(_))
            && text.contains("plain HTTP")
            && text.contains("http://"),
        "{err:?}"
    );
    assert!(!text.contains("InvalidContentType"), "{text}");

    // http:// to an HTTPS service.
    let dir = tempfile::tempdir().unwrap();
    let pki = vigie_testkit::pki::Pki::new(dir.path()).unwrap();
    let mock = serve(
        mockup("public-rackmount1"),
        Options {
            tls: Some(tls_acceptor(&pki)),
            ..Options::default()
        },
    )
    .await;
    let err = redfish::build(&config(format!("http://{}", mock.addr)))
        .unwrap()
        .poll()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("https://"), "{err:?}");
}
