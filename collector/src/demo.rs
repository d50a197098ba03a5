//! `vigie-collector demo`: the whole pipeline on one machine with nothing
//! installed. An embedded MQTT broker (rumqttd) on loopback, simulated
//! hosts on fake powercap trees whose counters move (one wraps every few
//! seconds), real agents reading them, and the real collector.

use crate::config::CollectorConfig;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::watch;
use vigie_agent::Hardware;
use vigie_agent::config::AgentConfig;
use vigie_agent::device::{Device, DeviceConfig, FakeFacility, FakePdu};
use vigie_agent::gpu::FakeGpus;
use vigie_energy::Microjoules;
use vigie_testkit::FakePowercap;

/// Demo settings (command-line flags).
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// HTTP listen address.
    pub http: SocketAddr,
    /// Port of the embedded broker on 127.0.0.1.
    pub mqtt_port: u16,
    /// Simulated hosts.
    pub hosts: usize,
    /// Directory for the ledger, fake trees and agent state (a temporary one if `None`).
    pub dir: Option<PathBuf>,
    /// Write a simulated history of the facility meters into a new ledger
    /// (see [`store_simulated_history`]).
    pub history: bool,
}

/// Starts the embedded broker on a thread; it lives as long as the process.
fn start_broker(port: u16) -> anyhow::Result<()> {
    // rumqttd reports a busy port only in its own thread, and the wait
    // below would then connect to whatever holds it: ask first.
    std::net::TcpListener::bind(("127.0.0.1", port)).map_err(|e| {
        listen_error(
            "the embedded MQTT broker",
            &format!("127.0.0.1:{port}"),
            "--mqtt-port PORT",
            &e,
        )
    })?;
    let config: rumqttd::Config = toml::from_str(&format!(
        r#"
id = 0
[router]
max_connections = 1000
max_outgoing_packet_count = 200
max_segment_size = 104857600
max_segment_count = 10
[v5.1]
name = "demo"
listen = "127.0.0.1:{port}"
next_connection_delay_ms = 1
[v5.1.connections]
connection_timeout_ms = 60000
max_payload_size = 1048576
max_inflight_count = 500
"#
    ))?;
    std::thread::Builder::new()
        .name("rumqttd".into())
        .spawn(move || {
            let mut broker = rumqttd::Broker::new(config);
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "embedded broker stopped");
            }
        })?;
    vigie_testkit::wait_for(
        "the embedded broker to listen",
        Duration::from_secs(10),
        Duration::from_millis(20),
        || std::net::TcpStream::connect(("127.0.0.1", port)).ok(),
    )?;
    Ok(())
}

/// Why the demo cannot listen, with the address and the flag that moves it.
fn listen_error(what: &str, addr: &str, flag: &str, e: &std::io::Error) -> anyhow::Error {
    let why = if e.kind() == std::io::ErrorKind::AddrInUse {
        "the address is already in use (another demo, collector or broker?)".to_owned()
    } else {
        e.to_string()
    };
    anyhow::anyhow!("cannot listen on {addr} for {what}: {why}; choose another with {flag}")
}

/// A simulated host: its fake tree and the share of its power each
/// counted zone receives (core moves too, as inside the package).
struct SimHost {
    name: String,
    tree: FakePowercap,
    shares: Vec<(String, f64)>,
    mmio: bool,
}

impl SimHost {
    fn new(name: String, tree: FakePowercap) -> Self {
        let zones = tree.zones();
        let packages = zones
            .iter()
            .filter(|z| z.name.starts_with("package") && !z.dir.contains("mmio"))
            .count()
            .max(1) as f64;
        let drams = zones.iter().filter(|z| z.name == "dram").count() as f64;
        let package_share = if drams > 0.0 { 0.8 } else { 1.0 } / packages;
        let shares = zones
            .iter()
            .filter(|z| !z.dir.contains("mmio"))
            .filter_map(|z| match z.name.as_str() {
                n if n.starts_with("package") => Some((z.dir.clone(), package_share)),
                "dram" => Some((z.dir.clone(), 0.2 / drams)),
                "core" => Some((z.dir.clone(), package_share / 2.0)),
                _ => None,
            })
            .collect();
        let mmio = zones.iter().any(|z| z.dir == "intel-rapl-mmio:0");
        SimHost {
            name,
            tree,
            shares,
            mmio,
        }
    }

    /// Spends `joules` across the zones.
    fn step(&self, joules: f64) -> anyhow::Result<()> {
        for (dir, share) in &self.shares {
            self.tree.advance(dir, (joules * share * 1e6) as u64)?;
        }
        // mmio mirrors package 0, as on real hardware.
        if self.mmio {
            self.tree
                .set_energy("intel-rapl-mmio:0", self.tree.energy("intel-rapl:0")?)?;
        }
        Ok(())
    }
}

/// Power of simulated host `i` at time `t_s`: a base load plus a slow wave.
fn simulated_watts(i: usize, t_s: f64) -> f64 {
    let base = 90.0 + 35.0 * i as f64;
    base + 40.0 * (t_s / 30.0 + i as f64).sin()
}

/// The simulated GPUs' power limit, W (what `FakeGpus` reports).
const GPU_POWER_LIMIT_W: f64 = 400.0;

/// Power of simulated GPU `g` at `t_s`: a training-like load of 200 to
/// 380 W, the two GPUs in phase opposition, under their 400 W limit.
fn simulated_gpu_watts(g: usize, t_s: f64) -> f64 {
    290.0 + 90.0 * (t_s / 20.0 + g as f64 * std::f64::consts::PI).sin()
}

/// The demo site's facility meters at IT power `it_w`: grid import (IT
/// plus cooling, UPS losses, lighting: a PUE near 1.4), cooling
/// electricity, and heat delivered to a district network (a third of the
/// IT heat, recovered by a heat pump), all in W.
fn facility_watts(it_w: f64) -> (f64, f64, f64) {
    let cooling = 0.25 * it_w + 40.0;
    let grid = 1.35 * it_w + 150.0;
    (grid, cooling, it_w / 3.0)
}

/// A simulated grid intensity (gCO2e/kWh) at `ms`: a daily wave, lowest
/// in the early afternoon (solar), highest in the evening peak.
fn simulated_intensity(ms: i64) -> f64 {
    let h = (ms.rem_euclid(86_400_000)) as f64 / 3_600_000.0;
    let day = std::f64::consts::TAU * h / 24.0;
    45.0 + 20.0 * (day - std::f64::consts::TAU * 19.0 / 24.0).cos() + 5.0 * (2.0 * day).sin()
}

/// Stores a simulated half-hourly grid intensity series for `zone` from a
/// day before `now_ms` to a week after it (the future flagged estimated,
/// as a forecast is), so the grid and scheduler signals have values.
fn store_simulated_grid(
    ledger: &std::path::Path,
    zone: &str,
    basis: crate::grid::Basis,
    since_ms: Option<i64>,
    now_ms: i64,
) -> anyhow::Result<usize> {
    const HALF_HOUR: i64 = 1_800_000;
    let first = now_ms.div_euclid(HALF_HOUR) * HALF_HOUR - 48 * HALF_HOUR;
    let first = since_ms
        .map_or(first, |s| s.div_euclid(HALF_HOUR) * HALF_HOUR)
        .min(first);
    let n = (now_ms - first) / HALF_HOUR + 48 * 7;
    let points: Vec<crate::grid::IntensityPoint> = (0..n)
        .map(|i| {
            let start_ms = first + i * HALF_HOUR;
            let g = simulated_intensity(start_ms + HALF_HOUR / 2);
            crate::grid::IntensityPoint {
                zone: zone.to_owned(),
                start_ms,
                end_ms: start_ms + HALF_HOUR,
                intensity: crate::grid::Intensity::Average(vigie_energy::GramsPerKwh(
                    (g * 10.0).round() / 10.0,
                )),
                basis,
                estimated: start_ms > now_ms,
                source: "simulated (vigie demo)".into(),
                retrieved_ms: now_ms,
            }
        })
        .collect();
    if let Some(dir) = ledger.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut conn = crate::backend::open(ledger)?;
    Ok(conn.upsert_grid_points(&points)?)
}

/// What [`store_simulated_history`] wrote.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct History {
    /// First hour, Unix ms (1 January of the previous year).
    pub from_ms: i64,
    /// End of what was written, Unix ms: the current minute's start (whole
    /// hours, then the hour under way minute by minute).
    pub to_ms: i64,
    /// The heat meter's register at `to_ms`, kWh.
    pub heat_kwh: f64,
    /// Heat delivered per hour at `to_ms`, kW (to carry the register on).
    pub heat_kw: f64,
    /// Hour rows written.
    pub rows: usize,
}

/// The demo site's average powers over hour `h_ms`: each PDU outlet's
/// wall power, cooling, grid import (W) and heat delivered (kW thermal).
/// IT load grows through the history and follows the working day;
/// cooling follows the seasons (free cooling in winter), so PUE is
/// higher in summer; heat is taken more in winter.
fn history_hour(h_ms: i64, from_ms: i64, to_ms: i64, outlets: usize) -> (Vec<f64>, f64, f64, f64) {
    use std::f64::consts::TAU;
    let day_of_year = (h_ms.rem_euclid(365 * 86_400_000) / 86_400_000) as f64;
    let hour = (h_ms.rem_euclid(86_400_000) / 3_600_000) as f64;
    let summer = (TAU * (day_of_year - 200.0) / 365.0).cos(); // +1 mid-July
    let working = (TAU * (hour - 8.0) / 24.0).sin();
    let growth = 0.8 + 0.2 * ((h_ms - from_ms) as f64 / (to_ms - from_ms).max(1) as f64);
    let walls: Vec<f64> = (0..outlets)
        .map(|i| {
            let base = (90.0 + 35.0 * i as f64) * 1.6 + 60.0 + if i == 0 { 900.0 } else { 0.0 };
            base * growth * (1.0 + 0.08 * working)
        })
        .collect();
    let it: f64 = walls.iter().sum();
    let cooling = (0.16 + 0.10 * (summer + 1.0) / 2.0) * it + 40.0;
    let grid = it + cooling + 0.1 * it + 110.0;
    let heat_kw = it * (0.15 + 0.25 * (1.0 - summer) / 2.0) / 1000.0;
    (walls, cooling, grid, heat_kw)
}

/// Writes a simulated history of the demo site's meters into the ledger
/// at `ledger`: hour buckets of the grid-import, cooling and PDU-outlet
/// sensors of `host`, and the heat meter's register every hour, from
/// 1 January of the year before `now_ms` to the last whole hour, so that
/// the public page, the permit dossier, the exports and the year-to-date
/// dashboards have a year and more to show. Only into a new ledger: an
/// existing one keeps what it has. Hour rows only (as a ledger holds once
/// minute rows are pruned); the site figures read them at hour
/// resolution.
pub fn store_simulated_history(
    ledger: &std::path::Path,
    host: &str,
    facility: &str,
    pdu: &str,
    outlets: usize,
    now_ms: i64,
) -> anyhow::Result<History> {
    use crate::export::date::Date;
    const H: i64 = 3_600_000;
    const MINUTE: i64 = 60_000;
    let from_ms = Date {
        y: Date::from_ms(now_ms).y - 1,
        m: 1,
        d: 1,
    }
    .start_ms();
    let to_ms = now_ms.div_euclid(H) * H;
    if let Some(dir) = ledger.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut conn = crate::backend::open(ledger)?;
    let mut heat_kwh = 0.0;
    let mut heat_kw = 0.0;
    let (rows, written_to) = vigie_ledger::write_history(&mut *conn, |w| {
        let quantity = vigie_protocol::GaugeQuantity::HeatEnergyKwh;
        let heat = format!("{facility}:heat");
        let uj = |w: f64| Microjoules((w * 3.6e9).round() as u64);
        let mut h = from_ms;
        w.register(host, &heat, quantity, h, 0.0)?;
        while h < to_ms {
            let (walls, cooling, grid, kw) = history_hour(h, from_ms, to_ms, outlets);
            for (i, wall) in walls.iter().enumerate() {
                w.hour(host, &format!("{pdu}:outlet-{}", i + 1), h, uj(*wall))?;
            }
            w.hour(host, &format!("{facility}:cooling"), h, uj(cooling))?;
            w.hour(host, &format!("{facility}:grid"), h, uj(grid))?;
            heat_kwh += kw;
            heat_kw = kw;
            h += H;
            w.register(host, &heat, quantity, h, heat_kwh)?;
        }
        // The hour under way, minute by minute up to the current minute,
        // where the live agents take over: no gap at the seam. Its hour
        // row holds the same energy, to which the live batches add.
        let end = now_ms.div_euclid(MINUTE) * MINUTE;
        if end > to_ms {
            let (walls, cooling, grid, kw) = history_hour(to_ms, from_ms, to_ms, outlets);
            let sensors: Vec<(String, f64)> = walls
                .iter()
                .enumerate()
                .map(|(i, w)| (format!("{pdu}:outlet-{}", i + 1), *w))
                .chain([
                    (format!("{facility}:cooling"), cooling),
                    (format!("{facility}:grid"), grid),
                ])
                .collect();
            for (sensor, watts) in &sensors {
                let per_minute = (watts * 60e6).round() as u64;
                let mut sum = 0u64;
                let mut m = to_ms;
                while m < end {
                    w.minute(host, sensor, m, Microjoules(per_minute))?;
                    sum += per_minute;
                    m += MINUTE;
                }
                w.hour(host, sensor, to_ms, Microjoules(sum))?;
            }
            heat_kwh += kw * (end - to_ms) as f64 / H as f64;
            heat_kw = kw;
            w.register(host, &heat, quantity, end, heat_kwh)?;
        }
        Ok((w.hour_rows(), end.max(to_ms)))
    })?;
    Ok(History {
        from_ms,
        to_ms: written_to,
        heat_kwh,
        heat_kw,
        rows,
    })
}

/// The demo site's commissioning date: 1 January of the year before
/// `now_ms`, when its simulated history starts (a site is commissioned
/// before the periods its documents report on).
fn commissioned(now_ms: i64) -> crate::export::date::Date {
    crate::export::date::Date {
        y: crate::export::date::Date::from_ms(now_ms).y - 1,
        m: 1,
        d: 1,
    }
}

/// The demo collector's `[site]`: the grid-import, cooling and heat meters
/// of `facility` and the PDU outlets as the IT meter (category 2), all
/// polled by `host`'s agent. Gaps are scaled to the period (the demo is
/// younger than the day and the year), so its figures are estimated.
#[cfg(test)]
fn demo_site(
    host: &str,
    facility: &str,
    pdu: &str,
    outlets: usize,
    now_ms: i64,
) -> anyhow::Result<crate::site::SiteConfig> {
    let cfg: CollectorConfig =
        toml::from_str(&demo_site_toml(host, facility, pdu, outlets, now_ms))?;
    Ok(cfg.site)
}

/// [`demo_site`] as the collector configuration's `[site]` tables.
fn demo_site_toml(host: &str, facility: &str, pdu: &str, outlets: usize, now_ms: i64) -> String {
    let it = (1..=outlets)
        .map(|i| format!("{{ host = \"{host}\", sensor = \"{pdu}:outlet-{i}\" }}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"
[site]
installed_it_kw = 5.0
it_category = 2
gap_rule = "scale-to-period"
# Commissioned when its history starts, before the periods it reports.
commissioned = "{commissioned}"
kpi_every = "5s"
kpi_ytd_every = "5s"
# Plausible register facts, so the demo's exports have no gaps a real
# site would fill.
[site.register]
name = "vigie demo hall"
owner = "Demo Immobilien GmbH"
operators = ["Demo Compute SAS"]
address = "1 rue de la Demo, 69007 Lyon"
postcode = "69007"
municipality = "Lyon"
nuts_code = "FRK26"
siret = "12345678900011"
contact_name = "Demo operator"
contact_email = "operator@example.org"
non_redundant_power_kw = 8.0
redundancy_power = "N+1"
redundancy_cooling = "N+1"
waste_heat_max_kw = 4.0
waste_heat_control = "supply temperature and flow set by the heat-network operator"
management_system = {{ kind = "iso-50001", since = "{commissioned}" }}
[[site.yearly]]
year = {year}
traffic_in_bandwidth_gbps = 1.0
traffic_out_bandwidth_gbps = 1.0
traffic_in_volume_tb = 2.0
traffic_out_volume_tb = 3.0
storage_capacity_pb = 0.01
server_capacity = 100.0
data_stored_tb = 5.0
data_processed_tb = 20.0
temperature_set_point_c = 25.0
heat_released_mean_c = 30.0
[[site.meters]]
name = "mains"
role = "grid-import"
sensors = [{{ host = "{host}", sensor = "{facility}:grid" }}]
[[site.meters]]
name = "pdus"
role = "it"
sensors = [{it}]
[[site.meters]]
name = "chillers"
role = "cooling"
sensors = [{{ host = "{host}", sensor = "{facility}:cooling" }}]
[[site.meters]]
name = "district-heat"
role = "heat-delivered"
register = {{ host = "{host}", sensor = "{facility}:heat", quantity = "heat-energy-kwh" }}
"#,
        commissioned = commissioned(now_ms),
        year = crate::export::date::Date::from_ms(now_ms).y,
    )
}

/// The demo site's name, on its documents and public page.
const DEMO_SITE_NAME: &str = "vigie demo site";

/// `s` as a TOML string (quoted and escaped).
fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// What a real site configures besides its meters, so that every document
/// the demo produces reads without a contradiction, as collector
/// configuration tables: `[site]` (commissioned when its history starts),
/// guarantees of origin for part of each year's grid import, `[dossier]`
/// (name, operator, a heat-reuse study of the demo's IT load, its PUE left
/// to the measured one) and an export signing key (made in `dir`, reused
/// with --dir), all for `host`'s agent polling the facility and `hosts`
/// PDU outlets.
fn site_toml(host: &str, hosts: usize, dir: &std::path::Path, now: i64) -> anyhow::Result<String> {
    let mut t = demo_site_toml(host, "facility", "pdu-a1", hosts, now);
    // Guarantees of origin for about half of each year's grid import
    // (~18 MWh a year), so REF has a value to compare with the renewable
    // target; the current year's enters pro rata to the part elapsed.
    let year = crate::export::date::Date::from_ms(now).y;
    for (y, mwh) in [(year - 1, 10.0), (year, 10.0)] {
        t.push_str(&format!(
            "\n[[carbon.market.instruments]]\nname = \"GO hydro {y} (demo)\"\nkind = \"certificate\"\norigin = \"renewable\"\nyear = {y}\nvolume_mwh = {mwh:.1}\n"
        ));
    }
    t.push_str(&format!(
        r#"
[dossier]
site_name = "{DEMO_SITE_NAME}"
operator = "Demo Compute SAS"
[dossier.heat_study]
it_load_kw_constant = 1.5
cooling = "air"
heat_pump = {{ carnot_fraction = 0.5 }}
offtaker = {{ supply_c = 65.0 }}
"#
    ));
    // Exports and dossiers signed, as a site's should be.
    let key = dir.join("export-signing.key");
    if !key.exists() {
        crate::export::sign::keygen(dir)?;
    }
    t.push_str(&format!(
        "\n[export]\nsigning_key = {}\n",
        toml_str(&key.to_string_lossy())
    ));
    Ok(t)
}

/// Sets `cfg`'s site, instruments, dossier and export key as
/// [`site_toml`] writes them.
#[cfg(test)]
fn configure_site(
    cfg: &mut CollectorConfig,
    host: &str,
    hosts: usize,
    dir: &std::path::Path,
    now: i64,
) -> anyhow::Result<()> {
    let site: CollectorConfig = toml::from_str(&site_toml(host, hosts, dir, now)?)?;
    cfg.site = site.site;
    cfg.carbon.market.instruments = site.carbon.market.instruments;
    cfg.dossier = site.dossier;
    cfg.export = site.export;
    Ok(())
}

/// The collector configuration the demo runs with, as the file it writes
/// (`collector.toml` in its directory): broker, ledger, HTTP address, the
/// agents' public keys (`keys`: host, hex), the public page and, with a
/// first host, [`site_toml`]. `vigie-collector export|dossier --config`
/// on this file read the demo's ledger and sign with its key.
fn collector_toml(
    opts: &DemoOptions,
    ledger: &std::path::Path,
    keys: &[(String, String)],
    dir: &std::path::Path,
    now: i64,
) -> anyhow::Result<String> {
    let mut t = format!(
        "# Written by `vigie-collector demo`: the configuration it runs with.\n\
         [mqtt]\nport = {}\nclient_id = \"vigie-collector-demo\"\n\
         [store]\npath = {}\n\
         [http]\nlisten = {}\n\
         [public]\nenabled = true\nsite_name = {}\ndescription = \"Simulated hosts of the vigie demo.\"\n\
         [ingest.keys]\n",
        opts.mqtt_port,
        toml_str(&ledger.to_string_lossy()),
        toml_str(&opts.http.to_string()),
        toml_str(DEMO_SITE_NAME),
    );
    for (host, hex) in keys {
        t.push_str(&format!("{} = {}\n", toml_str(host), toml_str(hex)));
    }
    if let Some((host, _)) = keys.first() {
        t.push_str(&site_toml(host, keys.len(), dir, now)?);
    }
    Ok(t)
}

/// Runs the demo until `shutdown` completes.
pub async fn run(
    opts: DemoOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let tmp;
    let dir = match &opts.dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            d.clone()
        }
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().to_owned()
        }
    };
    // Both addresses first: a busy one fails before anything starts.
    let listener = tokio::net::TcpListener::bind(opts.http)
        .await
        .map_err(|e| {
            listen_error(
                "the HTTP API and /metrics",
                &opts.http.to_string(),
                "--http ADDRESS:PORT",
                &e,
            )
        })?;
    start_broker(opts.mqtt_port)?;

    // Fake hosts: RAPL ranges as on real parts, except every second host,
    // whose package range is 2 kJ so that it wraps every ~15 s.
    let mut sims = Vec::new();
    for i in 0..opts.hosts {
        let root = dir.join(format!("powercap-{i}"));
        std::fs::create_dir_all(&root)?;
        let tree = if i % 2 == 0 {
            FakePowercap::dual_socket(&root, 262_143_328_850, 1_000_000)?
        } else {
            FakePowercap::single_socket(&root, 2_000_000_000, 1_900_000_000)?
        };
        sims.push(SimHost::new(format!("demo-{:02}", i + 1), tree));
    }
    let hosts: Vec<(String, PathBuf)> = sims
        .iter()
        .map(|s| (s.name.clone(), s.tree.root().to_owned()))
        .collect();
    // The first host also carries two simulated GPUs with energy counters,
    // and its agent polls a simulated rack PDU with one outlet per host
    // (wall power: the host's CPU power plus the rest of the server).
    let gpus = FakeGpus::new(2, "NVIDIA H100 80GB HBM3 (simulated)", true);
    let pdu = FakePdu::new(sims.len());
    // The same agent reads the facility's meters: grid import and cooling
    // (power and Wh registers) and the heat meter (kWh register).
    let facility = FakeFacility::new();
    let ledger = dir.join("ledger.sqlite");
    let now = crate::now_ms();
    let history = match sims.first() {
        Some(first) if opts.history && !ledger.exists() => {
            let h = store_simulated_history(
                &ledger,
                &first.name,
                "facility",
                "pdu-a1",
                sims.len(),
                now,
            )?;
            // The live heat register carries on from the history's, with
            // the heat of the part of the hour since.
            facility.heat(
                "heat",
                h.heat_kwh + h.heat_kw * (now - h.to_ms) as f64 / 3_600_000.0,
                45.0,
                30.0,
            );
            Some(h)
        }
        _ => None,
    };
    let facility_cfg: DeviceConfig =
        toml::from_str("name = \"facility\"\nperiod = \"5s\"\ncounts_in = \"site\"\n")?;
    let pdu_cfg: DeviceConfig = toml::from_str(&format!(
        "name = \"pdu-a1\"\nperiod = \"5s\"\ncounts_in = \"site\"\n{}",
        sims.iter()
            .enumerate()
            .map(|(i, h)| format!(
                "[[points]]\npoint = \"outlet-{}\"\nroom = \"hall-a\"\nrack = \"r01\"\npdu = \"pdu-a1\"\noutlet = \"{}\"\nfeeds = \"{}\"\n",
                i + 1,
                i + 1,
                h.name
            ))
            .collect::<String>()
    ))?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    let sim = {
        let rx = stop_rx.clone();
        let gpus = gpus.clone();
        let pdu = pdu.clone();
        let facility = facility.clone();
        tokio::spawn(async move {
            // Wh not yet whole, per outlet: the register counts whole Wh.
            let mut carry = vec![0.0f64; sims.len()];
            // The same for the grid and cooling meters.
            let mut meter_carry = [0.0f64; 2];
            let start = tokio::time::Instant::now();
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            while !*rx.borrow() {
                tick.tick().await;
                let t = start.elapsed().as_secs_f64();
                let mut it_w = 0.0;
                for (i, h) in sims.iter().enumerate() {
                    let w = simulated_watts(i, t);
                    if let Err(e) = h.step(w * 0.1) {
                        tracing::warn!(host = %h.name, error = %e, "simulator");
                    }
                    // Wall power: CPU + memory, fans, disks, PSU losses.
                    let wall = w * 1.6 + 60.0 + if i == 0 { 900.0 } else { 0.0 };
                    carry[i] += wall * 0.1 / 3600.0;
                    let whole = carry[i].floor();
                    carry[i] -= whole;
                    pdu.set(i, wall, whole as u64);
                    it_w += wall;
                }
                let (grid_w, cooling_w, heat_w) = facility_watts(it_w);
                for (k, (point, w)) in [("grid", grid_w), ("cooling", cooling_w)]
                    .into_iter()
                    .enumerate()
                {
                    meter_carry[k] += w * 0.1 / 3600.0;
                    let whole = meter_carry[k].floor();
                    meter_carry[k] -= whole;
                    facility.electricity(point, w, whole as u64);
                }
                facility.heat("heat", heat_w * 0.1 / 3.6e6, 45.0 + t.sin(), 30.0);
                for g in 0..2 {
                    let w = simulated_gpu_watts(g, t).min(GPU_POWER_LIMIT_W);
                    gpus.spend(g, (w * 100.0) as u64); // mJ in 100 ms
                    gpus.update(g, |s| {
                        s.power_mw = Some((w * 1000.0) as u32);
                        s.temperature_c = Some((35.0 + w / 12.0) as u32);
                        s.utilization_pct = Some(((w - 200.0) / 5.0).clamp(0.0, 100.0) as u32);
                    });
                }
            }
        })
    };

    // Each agent signs with its own key, registered with the collector
    // below: the demo runs as a site should (keys kept in --dir are reused).
    let mut keys = Vec::new();
    let mut agents = Vec::new();
    for (n, (host, root)) in hosts.iter().enumerate() {
        let key_file = dir.join(format!("agent-{host}.key"));
        let key = if key_file.exists() {
            vigie_service::keys::load_signing_key(&key_file)?
        } else {
            vigie_service::keys::generate_key_file(&key_file)?
        };
        keys.push((host.clone(), vigie_protocol::key_hex(&key.verifying_key())));
        let mut cfg = AgentConfig {
            site: "demo".into(),
            host: Some(host.clone()),
            state_dir: dir.join(format!("agent-{host}")),
            ..AgentConfig::default()
        };
        cfg.mqtt.port = opts.mqtt_port;
        cfg.sampling.publish_interval = Duration::from_secs(5);
        cfg.rapl.root = root.clone();
        cfg.signing.key_file = Some(key_file);
        let hw = Hardware {
            gpus: (n == 0).then(|| Box::new(gpus.clone()) as Box<dyn vigie_agent::gpu::GpuBackend>),
            cpu_load: None,
            devices: if n == 0 {
                vec![
                    (pdu_cfg.clone(), Box::new(pdu.clone()) as Box<dyn Device>),
                    (facility_cfg.clone(), Box::new(facility.clone())),
                ]
            } else {
                Vec::new()
            },
        };
        cfg.gpu.enabled = n == 0;
        agents.push(tokio::spawn(vigie_agent::run_with(
            cfg,
            hw,
            stopped(stop_rx.clone()),
        )));
    }

    // The collector runs with the configuration file it writes, so that
    // the regulator's commands can be given the same one.
    let config_file = dir.join("collector.toml");
    std::fs::write(
        &config_file,
        collector_toml(&opts, &ledger, &keys, &dir, now)?,
    )?;
    let cfg: CollectorConfig = vigie_service::load_config(Some(&config_file))?;
    store_simulated_grid(
        &cfg.store.path,
        &cfg.carbon.zone,
        cfg.carbon.basis,
        history.map(|h| h.from_ms),
        now,
    )?;
    let http = listener.local_addr()?;
    let collector = tokio::spawn(crate::run(cfg.clone(), listener, stopped(stop_rx.clone())));

    println!(
        "vigie demo running: {} simulated hosts, embedded MQTT broker on 127.0.0.1:{}",
        hosts.len(),
        opts.mqtt_port
    );
    println!("  metrics:   http://{http}/metrics");
    println!("  hosts:     http://{http}/api/v1/hosts");
    println!("  energy:    http://{http}/api/v1/energy?group_by=sensor");
    println!("  emissions: http://{http}/api/v1/emissions");
    println!("  site KPIs: http://{http}/api/v1/kpi");
    println!("  public:    http://{http}/public");
    println!("  dossier:   http://{http}/api/v1/dossier?format=pdf");
    if let Some(h) = history {
        println!(
            "  history:   simulated facility meters since {} (hour resolution)",
            crate::export::date::Date::from_ms(h.from_ms)
        );
    }
    println!("  ledger:    {}", cfg.store.path.display());
    println!("  config:    {}", config_file.display());
    println!(
        "  regulator: vigie-collector export --regime eed --config {} --out eed.json",
        config_file.display()
    );
    println!(
        "             vigie-collector verify --public-key {} eed.json",
        dir.join("export-signing.pub").display()
    );
    println!(
        "             vigie-collector dossier --config {} --format html --out dossier.html",
        config_file.display()
    );
    println!("Press Ctrl-C to stop.");

    shutdown.await;
    println!("stopping...");
    let _ = stop_tx.send(true);
    for a in agents {
        match a.await {
            Ok(Err(e)) => tracing::warn!(error = %e, "agent"),
            Err(e) => tracing::warn!(error = %e, "agent task"),
            Ok(Ok(())) => {}
        }
    }
    let _ = sim.await;
    collector.await??;
    println!("stopped.");
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod history_tests {
    use super::*;

    #[test]
    fn the_regulators_commands_run_on_the_configuration_the_demo_writes() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = dir.path().join("ledger.sqlite");
        // 2026-03-10T12:34Z.
        let now = 1_773_146_040_000;
        store_simulated_history(&ledger, "demo-01", "facility", "pdu-a1", 2, now).unwrap();
        let opts = DemoOptions {
            http: "127.0.0.1:9464".parse().unwrap(),
            mqtt_port: 11883,
            hosts: 2,
            dir: Some(dir.path().to_owned()),
            history: true,
        };
        let keys = vec![
            ("demo-01".to_owned(), "ab".repeat(32)),
            ("demo-02".to_owned(), "cd".repeat(32)),
        ];
        let file = dir.path().join("collector.toml");
        std::fs::write(
            &file,
            collector_toml(&opts, &ledger, &keys, dir.path(), now).unwrap(),
        )
        .unwrap();
        // The file is the configuration the demo runs with.
        let cfg: CollectorConfig = vigie_service::load_config(Some(&file)).unwrap();
        assert_eq!(cfg.store.path, ledger);
        assert_eq!(cfg.mqtt.port, 11883);
        assert_eq!(cfg.ingest.keys.len(), 2);
        assert!(cfg.public.enabled);
        assert_eq!(cfg.dossier.site_name.as_deref(), Some(DEMO_SITE_NAME));
        assert_eq!(cfg.site.meters.len(), 4);
        assert_eq!(cfg.carbon.market.instruments.len(), 2);
        let key = dir.path().join("export-signing.key");
        assert_eq!(cfg.export.signing_key.as_ref(), Some(&key));

        // export --config THAT --out: signed with the configured key, no --key.
        let out = dir.path().join("eed.json");
        crate::export::cli::export(crate::export::cli::ExportArgs {
            sub: None,
            regime: Some("eed".into()),
            format: "json".into(),
            from: Some("2025-01-01".into()),
            to: Some("2025-02-01".into()),
            commissioned: None,
            config: Some(file.clone()),
            out: Some(out.clone()),
            key: None,
        })
        .unwrap();
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
        assert!(json.to_string().contains("mains"), "{json}");
        let public = dir.path().join("export-signing.pub");
        let verify = |file: &std::path::Path| {
            crate::export::cli::verify(crate::export::cli::VerifyArgs {
                public_key: public.clone(),
                file: file.to_owned(),
            })
        };
        verify(&out).unwrap();
        // The signature is a real one: a changed byte fails.
        let mut bytes = std::fs::read(&out).unwrap();
        bytes[0] = b' ';
        std::fs::write(&out, &bytes).unwrap();
        assert!(verify(&out).is_err());

        // dossier --config THAT: signed too.
        let html = dir.path().join("dossier.html");
        crate::dossier::cli::dossier(crate::dossier::cli::DossierArgs {
            config: Some(file.clone()),
            from: Some("2025-01-01".into()),
            to: Some("2025-02-01".into()),
            format: "html".into(),
            out: html.clone(),
            key: None,
        })
        .unwrap();
        assert!(
            std::fs::read_to_string(&html)
                .unwrap()
                .contains(DEMO_SITE_NAME)
        );
        verify(&html).unwrap();
    }

    #[test]
    fn the_simulated_gpus_stay_under_their_power_limit() {
        let gpus = FakeGpus::new(2, "test", true);
        let mut limit = None;
        gpus.update(0, |s| limit = s.power_limit_mw);
        assert_eq!(
            limit.map(|mw| f64::from(mw) / 1000.0),
            Some(GPU_POWER_LIMIT_W)
        );
        let mut max: f64 = 0.0;
        for step in 0..100_000 {
            for g in 0..2 {
                max = max.max(simulated_gpu_watts(g, f64::from(step) * 0.1));
            }
        }
        assert!(max <= GPU_POWER_LIMIT_W, "{max}");
        assert!(max > 300.0, "a load worth showing: {max}");
    }

    /// The dossier's text: tags out, entities decoded, spaces collapsed.
    fn text_of(html: &str) -> String {
        let mut out = String::new();
        let mut in_tag = false;
        for c in html.chars() {
            match c {
                '<' => {
                    in_tag = true;
                    out.push(' ');
                }
                '>' => in_tag = false,
                c if !in_tag => out.push(c),
                _ => {}
            }
        }
        let out = out
            .replace("&amp;", "&")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&#39;", "'");
        out.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    #[test]
    fn the_demo_dossier_reads_without_a_contradiction() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = dir.path().join("ledger.sqlite");
        // 2026-03-10T12:34Z: the dossier is last year's, 2025.
        let now = 1_773_146_040_000;
        let h = store_simulated_history(&ledger, "demo-01", "facility", "pdu-a1", 3, now).unwrap();
        let mut cfg = CollectorConfig::default();
        cfg.store.path = ledger.clone();
        configure_site(&mut cfg, "demo-01", 3, dir.path(), now).unwrap();
        store_simulated_grid(
            &ledger,
            &cfg.carbon.zone,
            cfg.carbon.basis,
            Some(h.from_ms),
            now,
        )
        .unwrap();
        // The demo signs its exports and dossiers.
        let key = cfg.export.signing_key.clone().unwrap();
        crate::export::sign::load_signing_key(&key).unwrap();
        let conn = crate::store::open(&ledger).unwrap();
        let settings = crate::dossier::Settings::from_config(&cfg);
        let req = crate::dossier::request(None, None, now).unwrap();
        let render = |settings: &crate::dossier::Settings| {
            let html = crate::dossier::build(
                &conn,
                settings,
                req,
                crate::dossier::Format::Html,
                now,
                &mut |_| {},
            )
            .unwrap();
            let html = String::from_utf8(html).unwrap();
            (text_of(&html), html)
        };
        let (text, html) = render(&settings);
        // The site has a name.
        assert!(
            !text.contains("not configured ([dossier] site_name)"),
            "{text}"
        );
        assert!(text.contains("Site vigie demo site"), "{text}");
        // Commissioned before the year reported, not on the day it is made.
        assert!(text.contains("Commissioning date 2025-01-01"), "{text}");
        assert!(!text.contains("Commissioning date 2026-03-10"), "{text}");
        // No PUE limit in force in 2025 for a site commissioned then: the
        // table says so, and the chart draws no limit.
        assert!(text.contains("not-in-force"), "{text}");
        assert!(!html.contains("EnEfG limit"), "{text}");
        assert!(!html.contains("(reference)"), "{text}");
        assert!(
            text.contains("no EnEfG PUE limit is in force for this period"),
            "{text}"
        );
        // The renewable energy bought is below E_DC: REF under 100 %.
        assert!(!text.contains("REF (E_renewable / E_DC) 100.0"), "{text}");
        assert!(!text.contains("capped"), "{text}");
        // The heat study: its sentence reads as its table, and its PUE is
        // the measured one, not the study's default.
        assert!(!text.contains("about 1 homes"), "{text}");
        let peak = text
            .split("Peak thermal capacity ")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .unwrap();
        assert!(
            text.contains(&format!("(peak {peak} kW)")),
            "{peak}: {text}"
        );
        let homes = text
            .split("Homes heated (equivalent) ")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .unwrap();
        assert!(
            text.contains(&format!("enough for about {homes} home")),
            "{homes}: {text}"
        );
        assert!(!text.contains("default: 1.3"), "{text}");
        let pue = text
            .split("PUE (E_DC / E_IT) ")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .unwrap();
        assert!(
            text.contains(&format!("PUE {pue} 1 derived")),
            "the study's PUE is the measured {pue}: {text}"
        );
        assert!(text.contains("measured: the period's PUE"), "{text}");
        // No negative zero anywhere.
        assert!(!text.contains("-0.0") && !text.contains("-0 "), "{text}");

        // Renewable energy bought beyond E_DC: REF is capped, and says so.
        let mut more = cfg.clone();
        for i in &mut more.carbon.market.instruments {
            i.volume_mwh = Some(40.0);
        }
        let (text, _) = render(&crate::dossier::Settings::from_config(&more));
        assert!(text.contains("REF capped at 100 %"), "{text}");
    }

    #[test]
    fn the_history_gives_a_year_of_site_figures_with_seasons() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = dir.path().join("ledger.sqlite");
        // 2026-03-10T12:34Z: history from 2025-01-01.
        let now = 1_773_146_040_000;
        let h = store_simulated_history(&ledger, "demo-01", "facility", "pdu-a1", 3, now).unwrap();
        assert_eq!(h.from_ms, 1_735_689_600_000);
        assert_eq!(h.to_ms, now / 60_000 * 60_000);
        let hours = ((h.to_ms - h.from_ms) / 3_600_000) as usize;
        assert_eq!(
            h.rows,
            (hours + 1) * 5,
            "3 outlets, cooling, grid; the hour under way"
        );
        // The hour under way: its minutes add up to its hour row, exactly.
        {
            let conn = crate::backend::open(&ledger).unwrap();
            let hour = now / 3_600_000 * 3_600_000;
            let grid = |res| {
                conn.sensor_buckets(res, "demo-01", "facility:grid", hour, i64::MAX)
                    .unwrap()
            };
            let minute_rows = grid(crate::store::Resolution::Minute);
            let (n, minutes) = (
                minute_rows.len(),
                minute_rows.iter().map(|(_, a)| a.measured).sum::<u64>(),
            );
            let hour_rows = grid(crate::store::Resolution::Hour);
            assert_eq!(hour_rows.len(), 1);
            let hour_row = hour_rows[0].1.measured;
            assert_eq!(n, 34, "12:00 to 12:34");
            assert_eq!(minutes, hour_row);
        }
        let site = demo_site("demo-01", "facility", "pdu-a1", 3, h.from_ms).unwrap();
        let conn = crate::backend::open(&ledger).unwrap();
        let carbon = crate::config::CarbonConfig::default();
        let s =
            crate::report::summary(&*conn, &site, &carbon, "2025", h.from_ms, 1_767_225_600_000)
                .unwrap();
        assert_eq!(s.months.len(), 12);
        let pue = |m: &crate::report::Span| m.pue.value.unwrap();
        assert_eq!(s.total.pue.status, "measured", "{:?}", s.total.pue);
        // Summer cooling costs more than winter cooling.
        assert!(pue(&s.months[6]) > pue(&s.months[0]) + 0.05, "{s:?}");
        assert!((1.2..1.6).contains(&pue(&s.total)));
        // Heat: more reused in January than in July, all of the year measured.
        let heat = |m: &crate::report::Span| m.heat_reused_kwh.value.unwrap();
        assert!(heat(&s.months[0]) > heat(&s.months[6]));
        assert_eq!(s.total.erf.status, "measured");
        // Only into a new ledger... and idempotent if called again anyway.
        let again =
            store_simulated_history(&ledger, "demo-01", "facility", "pdu-a1", 3, now).unwrap();
        assert_eq!(again.rows, 0);
    }
}
