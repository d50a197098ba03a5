//! A remote device end to end: the agent binary polls a Modbus TCP energy
//! meter (a real Modbus server on 127.0.0.1), publishes through Mosquitto,
//! and the collector's ledger holds exactly the energy the meter's
//! register counted, including what it counted while the agent was
//! SIGKILLed (register checkpoints). The inventory carries the topology.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_modbus::server::tcp::{Server, accept_tcp_connection};
use tokio_modbus::{ExceptionCode, Request, Response, SlaveRequest};
use vigie_e2e::{Proc, binary, start_collector};
use vigie_testkit::{Mosquitto, free_addr, http_get, wait_for};

type Registers = Arc<Mutex<HashMap<u16, u16>>>;

#[derive(Clone)]
struct Meter(Registers);

impl tokio_modbus::server::Service for Meter {
    type Request = SlaveRequest<'static>;
    type Response = Response;
    type Exception = ExceptionCode;
    type Future = std::future::Ready<Result<Response, ExceptionCode>>;

    fn call(&self, req: Self::Request) -> Self::Future {
        let Request::ReadHoldingRegisters(start, n) = req.request else {
            return std::future::ready(Err(ExceptionCode::IllegalFunction));
        };
        let regs = self.0.lock().unwrap();
        let words: Option<Vec<u16>> = (0..n).map(|i| regs.get(&(start + i)).copied()).collect();
        std::future::ready(
            words
                .map(Response::ReadHoldingRegisters)
                .ok_or(ExceptionCode::IllegalDataAddress),
        )
    }
}

/// Sets the u32 Wh register at 0..2 (high word first).
fn set_wh(regs: &Registers, wh: u32) {
    let mut r = regs.lock().unwrap();
    r.insert(0, (wh >> 16) as u16);
    r.insert(1, (wh & 0xffff) as u16);
}

/// Sets the u32 heat kWh register at 2..4.
fn set_heat_kwh(regs: &Registers, kwh: u32) {
    let mut r = regs.lock().unwrap();
    r.insert(2, (kwh >> 16) as u16);
    r.insert(3, (kwh & 0xffff) as u16);
}

fn sensor_uj(http: std::net::SocketAddr, sensor: &str) -> Option<u64> {
    let v = http_get(http, "/api/v1/energy?group_by=sensor")
        .ok()?
        .json()
        .ok()?;
    let groups = v["groups"].as_array()?;
    Some(
        groups
            .iter()
            .find(|g| g["sensor"] == sensor)
            .and_then(|g| g["energy_uj"].as_u64())
            .unwrap_or(0),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_modbus_meter_through_the_agent_exact_across_an_agent_crash() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let regs: Registers = Arc::new(Mutex::new(HashMap::new()));
    set_wh(&regs, 1_000_000);
    set_heat_kwh(&regs, 500);
    let started = vigie_service::now_ms();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let modbus_port = listener.local_addr().unwrap().port();
    {
        let meter = Meter(regs.clone());
        tokio::spawn(async move {
            let server = Server::new(listener);
            let on_connected = move |stream, addr| {
                let meter = meter.clone();
                async move { accept_tcp_connection(stream, addr, move |_| Ok(Some(meter.clone()))) }
            };
            let _ = server.serve(&on_connected, |_| {}).await;
        });
    }
    let broker = Mosquitto::start().unwrap();
    let port = broker.port();
    let http = free_addr().unwrap();
    std::fs::write(
        d.join("collector.toml"),
        format!(
            "[mqtt]\nport = {port}\nclient_id = \"dev-collector\"\n[store]\npath = \"{}\"\n[http]\nlisten = \"{http}\"\n[[site.meters]]\nname = \"grid\"\nrole = \"grid-import\"\nsensors = [{{ host = \"facility\", sensor = \"meter-1:mains\" }}]\n[[site.meters]]\nname = \"heat-out\"\nrole = \"heat-delivered\"\nregister = {{ host = \"facility\", sensor = \"meter-1:heat\", quantity = \"heat-energy-kwh\" }}\n",
            d.join("ledger.sqlite").display()
        ),
    )
    .unwrap();
    let mut collector = start_collector(d, http).unwrap();
    let agent_cfg = d.join("agent.toml");
    std::fs::write(
        &agent_cfg,
        format!(
            r#"site = "dev"
host = "facility"
state_dir = "{}"
[mqtt]
port = {port}
[sampling]
publish_interval = "300ms"
[rapl]
enabled = false
[gpu]
enabled = false
[model]
mode = "off"
[[devices]]
name = "meter-1"
period = "200ms"
[devices.modbus]
host = "127.0.0.1"
port = {modbus_port}
timeout = "2s"
[[devices.modbus.registers]]
name = "mains"
address = 0
type = "u32"
unit = "Wh"
measures = "electricity"
[[devices.modbus.registers]]
name = "heat"
address = 2
type = "u32"
unit = "kWh"
measures = "heat"
[[devices.points]]
point = "mains"
room = "hall-a"
feeds = "it-load"
"#,
            d.join("state").display()
        ),
    )
    .unwrap();
    let agent_bin = binary("vigie-agent").unwrap();
    let start_agent = |name: &str| {
        Proc::start(
            name,
            &agent_bin,
            &["run", "--config", agent_cfg.to_str().unwrap()],
            d,
        )
        .unwrap()
    };
    let mut agent = start_agent("agent-1");
    let meta = tokio::task::spawn_blocking(move || {
        wait_for(
            "the meter in the inventory",
            Duration::from_secs(30),
            Duration::from_millis(100),
            || {
                let v = http_get(http, "/api/v1/hosts").ok()?.json().ok()?;
                let sensors = v["hosts"][0]["meta"]["sensors"].as_array()?.clone();
                sensors.into_iter().find(|s| s["name"] == "meter-1:mains")
            },
        )
    })
    .await
    .unwrap()
    .unwrap_or_else(|e| panic!("{e}\n{}", agent.log_tail()));
    assert_eq!(meta["kind"], "modbus");
    assert_eq!(meta["method"], "counter");
    assert_eq!(meta["topology"]["feeds"], "it-load");

    // The meter counts; the ledger follows, in whole Wh.
    let wh = 3_600_000_000u64; // µJ
    set_wh(&regs, 1_000_007);
    let expect = 7 * wh;
    let got = tokio::task::spawn_blocking(move || {
        wait_for(
            "7 Wh",
            Duration::from_secs(20),
            Duration::from_millis(100),
            || sensor_uj(http, "meter-1:mains").filter(|e| *e == expect),
        )
    })
    .await
    .unwrap();
    got.unwrap_or_else(|e| {
        panic!(
            "{e}: {:?}\n{}",
            sensor_uj(http, "meter-1:mains"),
            agent.log_tail()
        )
    });

    // The heat meter delivers 5 kWh (its register is a gauge series the
    // collector keeps; ERF's numerator reads its differences).
    set_heat_kwh(&regs, 505);

    // Crash; the meter counts 5 Wh meanwhile; the new run counts them.
    tokio::time::sleep(Duration::from_millis(700)).await;
    agent.kill();
    set_wh(&regs, 1_000_012);
    let mut agent = start_agent("agent-2");
    tokio::time::sleep(Duration::from_millis(500)).await;
    set_wh(&regs, 1_000_013);
    let expect = 13 * wh;
    let got = tokio::task::spawn_blocking(move || {
        wait_for(
            "13 Wh",
            Duration::from_secs(20),
            Duration::from_millis(100),
            || sensor_uj(http, "meter-1:mains").filter(|e| *e == expect),
        )
    })
    .await
    .unwrap();
    got.unwrap_or_else(|e| {
        panic!(
            "{e}: {:?}\n{}",
            sensor_uj(http, "meter-1:mains"),
            agent.log_tail()
        )
    });
    let log = std::fs::read_to_string(d.join("agent-2.log")).unwrap();
    assert!(log.contains("device registers resumed"), "{log}");
    let q = format!(
        "/api/v1/kpi?from={}&to={}",
        started - 3_600_000,
        vigie_service::now_ms() + 3_600_000
    );
    let erf = tokio::task::spawn_blocking(move || {
        wait_for(
            "5 kWh of heat in ERF's input",
            Duration::from_secs(20),
            Duration::from_millis(100),
            || {
                let v = http_get(http, &q).ok()?.json().ok()?;
                let f = v["figures"]
                    .as_array()?
                    .iter()
                    .find(|f| f["indicator"] == "ERF")?
                    .clone();
                (f["inputs"][0]["measured"].as_f64()? == 5.0).then_some(f)
            },
        )
    })
    .await
    .unwrap();
    erf.unwrap_or_else(|e| panic!("{e}"));
    assert!(agent.interrupt(Duration::from_secs(15)).unwrap().success());
    assert!(
        collector
            .interrupt(Duration::from_secs(15))
            .unwrap()
            .success()
    );
}
