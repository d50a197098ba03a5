//! The Modbus TCP driver against a real Modbus TCP server on 127.0.0.1
//! (tokio-modbus's server, serving a register map from memory): values
//! decoded from the wire, requests grouped, energy through the tracker,
//! exceptions and unreachable meters.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_modbus::server::tcp::{Server, accept_tcp_connection};
use tokio_modbus::{ExceptionCode, Request, Response, SlaveRequest};
use vigie_agent::device::modbus::{self, ModbusConfig, ModbusDevice};
use vigie_agent::device::{Device, DeviceError, PointValue, Tracker, Value};
use vigie_protocol::GaugeQuantity;

/// Registers a test meter serves, by (function code, address).
type Registers = Arc<Mutex<HashMap<(u8, u16), u16>>>;
/// (unit id, function code, start, count) of every request.
type Requests = Arc<Mutex<Vec<(u8, u8, u16, u16)>>>;

#[derive(Clone)]
struct Meter {
    registers: Registers,
    seen: Requests,
}

impl tokio_modbus::server::Service for Meter {
    type Request = SlaveRequest<'static>;
    type Response = Response;
    type Exception = ExceptionCode;
    type Future = std::future::Ready<Result<Response, ExceptionCode>>;

    fn call(&self, req: Self::Request) -> Self::Future {
        let (fc, start, count) = match req.request {
            Request::ReadHoldingRegisters(a, n) => (3, a, n),
            Request::ReadInputRegisters(a, n) => (4, a, n),
            _ => return std::future::ready(Err(ExceptionCode::IllegalFunction)),
        };
        self.seen
            .lock()
            .unwrap()
            .push((req.slave, fc, start, count));
        let regs = self.registers.lock().unwrap();
        let words: Option<Vec<u16>> = (0..count)
            .map(|i| regs.get(&(fc, start.checked_add(i)?)).copied())
            .collect();
        std::future::ready(match words {
            None => Err(ExceptionCode::IllegalDataAddress),
            Some(w) if fc == 3 => Ok(Response::ReadHoldingRegisters(w)),
            Some(w) => Ok(Response::ReadInputRegisters(w)),
        })
    }
}

/// Serves `meter` on a free loopback port until the test's runtime ends.
async fn serve(meter: Meter) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let server = Server::new(listener);
        let on_connected = move |stream, addr| {
            let meter = meter.clone();
            async move { accept_tcp_connection(stream, addr, move |_| Ok(Some(meter.clone()))) }
        };
        let _ = server
            .serve(&on_connected, |e| eprintln!("modbus server: {e}"))
            .await;
    });
    port
}

fn device(port: u16, extra: &str, registers: &str) -> ModbusDevice {
    let cfg: ModbusConfig = toml::from_str(&format!(
        "host = \"127.0.0.1\"\nport = {port}\ntimeout = \"2s\"\n{extra}\n{registers}"
    ))
    .unwrap();
    modbus::build(&cfg).unwrap()
}

async fn poll(d: &mut ModbusDevice) -> Result<Vec<PointValue>, DeviceError> {
    tokio::time::timeout(Duration::from_secs(30), d.poll())
        .await
        .expect("a poll is bounded by its timeout")
}

const MAP: &str = r#"
# A facility meter: u32 energy in hundredths of kWh, f32 power in kW (low word first).
[[registers]]
name = "mains"
address = 100
type = "u32"
scale = 0.01
unit = "kWh"
measures = "electricity"
[[registers]]
name = "mains"
address = 102
type = "f32"
word_order = "little"
unit = "kW"
measures = "electricity"
# A sub-meter with a float kWh register (high word first).
[[registers]]
name = "pumps"
address = 104
type = "f32"
unit = "kWh"
measures = "electricity"
# Outdoor temperature, tenths of °C, signed.
[[registers]]
name = "outdoor"
address = 0
kind = "input"
type = "i16"
scale = 0.1
unit = "C"
measures = "temperature"
# A heat meter.
[[registers]]
name = "heat"
address = 10
kind = "input"
type = "u32"
unit = "W"
measures = "heat"
[[registers]]
name = "heat"
address = 12
kind = "input"
type = "u32"
scale = 0.001
unit = "MWh"
measures = "heat"
[[registers]]
name = "heat"
address = 14
kind = "input"
type = "i16"
scale = 0.1
unit = "C"
measures = "heat"
role = "supply"
[[registers]]
name = "heat"
address = 15
kind = "input"
type = "i16"
scale = 0.1
unit = "C"
measures = "heat"
role = "return"
# A water meter: litres and l/min.
[[registers]]
name = "water"
address = 200
type = "u32"
unit = "l"
measures = "water"
[[registers]]
name = "water"
address = 202
type = "u16"
unit = "l/min"
measures = "water"
"#;

fn words(registers: &Registers, fc: u8, start: u16, w: &[u16]) {
    let mut r = registers.lock().unwrap();
    for (i, v) in w.iter().enumerate() {
        r.insert((fc, start + i as u16), *v);
    }
}

fn gauge(point: &str, q: GaugeQuantity, v: f64) -> PointValue {
    PointValue {
        point: point.into(),
        value: Value::Gauge(q, v),
    }
}

#[tokio::test]
async fn a_register_map_is_read_in_grouped_requests_and_decoded_exactly() {
    let registers: Registers = Arc::default();
    // mains energy: 0xFFFF_FFFE = 4294967294 (two below the u32 wrap).
    words(&registers, 3, 100, &[0xFFFF, 0xFFFE]);
    // mains power: 2.5f32 = 0x4020_0000, low word first -> 2.5 kW = 2500 W.
    words(&registers, 3, 102, &[0x0000, 0x4020]);
    // pumps energy: 1234.5f32 = 0x449A_5000 -> 1234.5 kWh = 1_234_500_000 mWh.
    words(&registers, 3, 104, &[0x449A, 0x5000]);
    // outdoor: -125 as i16 = 0xFF83 -> -12.5 °C.
    words(&registers, 4, 0, &[0xFF83]);
    // heat: 50000 W; 123456 × 0.001 MWh = 123456 kWh; 655 -> 65.5 °C; 412 -> 41.2 °C.
    words(
        &registers,
        4,
        10,
        &[0x0000, 0xC350, 0x0001, 0xE240, 655, 412],
    );
    // water: 1500 l = 1.5 m³; 50 l/min = 3 m³/h.
    words(&registers, 3, 200, &[0x0000, 1500, 50]);
    let meter = Meter {
        registers: registers.clone(),
        seen: Arc::default(),
    };
    let port = serve(meter.clone()).await;
    let mut d = device(port, "unit_id = 7", MAP);
    assert_eq!(d.source(), format!("modbus://127.0.0.1:{port}/7"));

    let expected = vec![
        PointValue {
            point: "mains".into(),
            value: Value::EnergyCounter {
                raw: 4_294_967_294,
                // 0.01 kWh = 36 kJ = 36_000_000_000 µJ.
                uj_per_unit: 36_000_000_000,
                max_raw: u64::from(u32::MAX),
            },
        },
        PointValue {
            point: "mains".into(),
            value: Value::PowerW(2500.0),
        },
        PointValue {
            point: "pumps".into(),
            value: Value::EnergyCounter {
                raw: 1_234_500_000,
                // 1 mWh = 3.6 J.
                uj_per_unit: 3_600_000,
                max_raw: u64::MAX,
            },
        },
        gauge("outdoor", GaugeQuantity::TemperatureCelsius, -12.5),
        gauge("heat", GaugeQuantity::HeatPowerWatts, 50_000.0),
        gauge("heat", GaugeQuantity::HeatEnergyKwh, 123_456.0),
        gauge("heat", GaugeQuantity::SupplyTemperatureCelsius, 65.5),
        gauge("heat", GaugeQuantity::ReturnTemperatureCelsius, 41.2),
        gauge("water", GaugeQuantity::VolumeCubicMetres, 1.5),
        gauge("water", GaugeQuantity::FlowCubicMetresPerHour, 3.0),
    ];
    assert_eq!(poll(&mut d).await.unwrap(), expected);
    // Ten registers in four requests: holding 100..106 and 200..203,
    // input 0..1 and 10..16, all to unit 7.
    assert_eq!(
        *meter.seen.lock().unwrap(),
        vec![(7, 3, 100, 6), (7, 3, 200, 3), (7, 4, 0, 1), (7, 4, 10, 6)]
    );

    // The u32 register wraps: 4294967294 -> 3 is 2 + 3 = 5 units, 0.05 kWh,
    // 180 kJ; the tracker counts it exactly over the same connection.
    let mut tracker = Tracker::new("plant", 100_000.0, 60_000);
    let (mut readings, mut gauges) = (Vec::new(), Vec::new());
    let first = poll(&mut d).await.unwrap();
    tracker.observe(0, &first, &mut readings, &mut gauges);
    words(&registers, 3, 100, &[0x0000, 0x0003]);
    let second = poll(&mut d).await.unwrap();
    let events = tracker.observe(10_000, &second, &mut readings, &mut gauges);
    assert!(events.is_empty(), "{events:?}");
    let mains: Vec<_> = readings
        .iter()
        .filter(|r| r.sensor == "plant:mains")
        .collect();
    assert_eq!(mains.len(), 1);
    assert_eq!(mains[0].energy_uj, 5 * 36_000_000_000);
}

#[tokio::test]
async fn an_exception_is_a_protocol_error_and_the_next_poll_recovers() {
    let registers: Registers = Arc::default();
    words(&registers, 3, 0, &[42]);
    let port = serve(Meter {
        registers: registers.clone(),
        seen: Arc::default(),
    })
    .await;
    let map = r#"
        [[registers]]
        name = "a"
        address = 0
        type = "u16"
        unit = "W"
        measures = "electricity"
        [[registers]]
        name = "b"
        address = 1
        type = "u16"
        unit = "W"
        measures = "electricity"
    "#;
    let mut d = device(port, "", map);
    // Register 1 is not served: IllegalDataAddress.
    let err = poll(&mut d).await.unwrap_err();
    assert!(
        matches!(&err, DeviceError::Protocol(m) if m.contains("exception")),
        "{err}"
    );
    words(&registers, 3, 1, &[7]);
    assert_eq!(
        poll(&mut d).await.unwrap(),
        vec![
            PointValue {
                point: "a".into(),
                value: Value::PowerW(42.0)
            },
            PointValue {
                point: "b".into(),
                value: Value::PowerW(7.0)
            },
        ]
    );
}

fn one_register() -> &'static str {
    "[[registers]]\nname = \"a\"\naddress = 0\ntype = \"u16\"\nunit = \"W\"\nmeasures = \"electricity\""
}

async fn unreachable_within<F: Future<Output = Result<Vec<PointValue>, DeviceError>>>(f: F) {
    let err = tokio::time::timeout(Duration::from_secs(10), f)
        .await
        .expect("bounded by the driver's timeout")
        .unwrap_err();
    assert!(matches!(err, DeviceError::Unreachable(_)), "{err}");
}

#[tokio::test]
async fn a_closed_port_or_a_silent_server_is_unreachable_within_the_timeout() {
    // Nothing listens: connection refused.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut d = device(port, "", one_register());
    unreachable_within(d.poll()).await;

    // Accepts the connection, never answers.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let cfg: ModbusConfig = toml::from_str(&format!(
        "host = \"127.0.0.1\"\nport = {port}\ntimeout = \"300ms\"\n{}",
        one_register()
    ))
    .unwrap();
    let mut d = modbus::build(&cfg).unwrap();
    unreachable_within(d.poll()).await;
    hold.abort();
}
