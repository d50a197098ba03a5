//! Modbus TCP meters: facility electricity meters, heat meters, water
//! meters, temperature probes. Every meter has its own register map, word
//! order and scaling, so the map is configuration: one entry per value
//! (`[[devices.registers]]`), decoded by the pure functions in [`decode`].
//!
//! A poll reads the configured registers in as few requests as possible
//! (contiguous spans of one register table share a request, up to 125
//! registers), over one TCP connection kept between polls and opened again
//! after any error.
//!
//! Electrical energy registers become [`Value::EnergyCounter`]s with an
//! exact `uj_per_unit` (integer registers) or a fixed-point count of
//! milliwatt-hours (float registers), so the [`Tracker`](super::Tracker)
//! does the counting; heat, water and temperature values are gauges.

pub mod decode;

use super::{Device, DeviceError, PointValue, PollFuture};
use decode::{
    Conversion, DataType, Measures, Read, RegisterKind, Role, Unit, WordOrder, decode, plan_reads,
};
use std::time::Duration;
use tokio_modbus::client::{Context, Reader};
use tokio_modbus::prelude::Slave;

/// One Modbus TCP meter (`kind = "modbus"`).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusConfig {
    /// Host name or address of the meter or of its TCP gateway.
    pub host: String,
    /// TCP port.
    #[serde(default = "default_port")]
    pub port: u16,
    /// Unit identifier (slave id): 1 for most meters, the serial address
    /// behind a gateway, 255 for some TCP-only devices.
    #[serde(default = "default_unit_id")]
    pub unit_id: u8,
    /// Time limit for connecting and for each request.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Unmapped registers a request may read to join two spans; 0 reads
    /// only configured registers (some meters answer an exception for a
    /// register they do not have).
    #[serde(default)]
    pub read_gap: u16,
    /// The register map.
    pub registers: Vec<RegisterConfig>,
}

/// One value in a meter's register map.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterConfig {
    /// Point name (`[A-Za-z0-9._:-]`); several registers may share a point
    /// when they measure different things (a heat meter's power, energy
    /// and temperatures).
    pub name: String,
    /// Register address as sent on the wire (0-based; a datasheet's
    /// "40001" is address 0 of the holding registers).
    pub address: u16,
    /// `holding` (function 3) or `input` (function 4).
    #[serde(default)]
    pub kind: RegisterKind,
    /// `u16`, `i16`, `u32`, `i32`, `u64`, `f32` or `f64`.
    #[serde(rename = "type")]
    pub data_type: DataType,
    /// `big` (high word first) or `little` (low word first).
    #[serde(default)]
    pub word_order: WordOrder,
    /// Multiplier from the register value to `unit` (0.01 for a register
    /// in hundredths).
    #[serde(default = "default_scale")]
    pub scale: f64,
    /// Unit after scaling: `W`, `kW`, `MW`, `Wh`, `kWh`, `MWh`, `MJ`,
    /// `GJ`, `m3`, `l`, `m3/h`, `l/h`, `l/min`, `l/s`, `C`.
    pub unit: Unit,
    /// `electricity` (power or energy counter), `heat` (thermal power,
    /// thermal energy, flow, volume, temperatures), `water` (volume, flow)
    /// or `temperature`.
    pub measures: Measures,
    /// Heat meter temperatures: `supply` or `return`.
    #[serde(default)]
    pub role: Option<Role>,
}

fn default_port() -> u16 {
    502
}
fn default_unit_id() -> u8 {
    1
}
fn default_timeout() -> Duration {
    Duration::from_secs(3)
}
fn default_scale() -> f64 {
    1.0
}

/// A register, checked.
#[derive(Debug, Clone)]
struct Register {
    point: String,
    kind: RegisterKind,
    address: u16,
    data_type: DataType,
    word_order: WordOrder,
    conversion: Conversion,
}

/// A Modbus TCP meter, ready to poll.
pub struct ModbusDevice {
    host: String,
    port: u16,
    unit_id: u8,
    timeout: Duration,
    registers: Vec<Register>,
    reads: Vec<Read>,
    ctx: Option<Context>,
}

impl std::fmt::Debug for ModbusDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModbusDevice")
            .field("target", &format_args!("{}:{}", self.host, self.port))
            .field("unit_id", &self.unit_id)
            .field("registers", &self.registers.len())
            .field("reads", &self.reads)
            .finish_non_exhaustive()
    }
}

/// Builds the driver: checks every register and plans the reads. Opens
/// no connection.
pub fn build(cfg: &ModbusConfig) -> Result<ModbusDevice, DeviceError> {
    if cfg.host.is_empty() {
        return Err(DeviceError::Config("host is empty".into()));
    }
    if cfg.timeout.is_zero() {
        return Err(DeviceError::Config("timeout must be positive".into()));
    }
    if cfg.registers.is_empty() {
        return Err(DeviceError::Config("no registers".into()));
    }
    let mut registers: Vec<Register> = Vec::with_capacity(cfg.registers.len());
    for r in &cfg.registers {
        let err =
            |m: String| DeviceError::Config(format!("register {:?} at {}: {m}", r.name, r.address));
        if r.name.is_empty()
            || !r
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-'))
        {
            return Err(err("name must be [A-Za-z0-9._:-]".into()));
        }
        if u32::from(r.address) + u32::from(r.data_type.words()) > 0x1_0000 {
            return Err(err("runs past register 65535".into()));
        }
        let conversion =
            Conversion::new(r.measures, r.unit, r.role, r.data_type, r.scale).map_err(err)?;
        if let Some(other) = registers
            .iter()
            .find(|o| o.point == r.name && same_slot(&o.conversion, &conversion))
        {
            return Err(err(format!(
                "point {:?} already has this quantity (register {})",
                r.name, other.address
            )));
        }
        registers.push(Register {
            point: r.name.clone(),
            kind: r.kind,
            address: r.address,
            data_type: r.data_type,
            word_order: r.word_order,
            conversion,
        });
    }
    let spans: Vec<_> = registers
        .iter()
        .map(|r| (r.kind, r.address, r.data_type.words()))
        .collect();
    Ok(ModbusDevice {
        host: cfg.host.clone(),
        port: cfg.port,
        unit_id: cfg.unit_id,
        timeout: cfg.timeout,
        reads: plan_reads(&spans, cfg.read_gap),
        registers,
        ctx: None,
    })
}

/// Whether two conversions report the same thing for a point.
fn same_slot(a: &Conversion, b: &Conversion) -> bool {
    use Conversion::*;
    match (a, b) {
        (Power { .. }, Power { .. }) => true,
        (IntEnergy { .. } | FloatEnergy { .. }, IntEnergy { .. } | FloatEnergy { .. }) => true,
        (Gauge { quantity: x, .. }, Gauge { quantity: y, .. }) => x == y,
        _ => false,
    }
}

impl ModbusDevice {
    /// The read requests one poll makes.
    pub fn reads(&self) -> &[Read] {
        &self.reads
    }

    async fn poll_once(&mut self) -> Result<Vec<PointValue>, DeviceError> {
        let target = format!("{}:{}", self.host, self.port);
        let mut ctx = match self.ctx.take() {
            Some(ctx) => ctx,
            None => connect(&target, &self.host, self.port, self.unit_id, self.timeout).await?,
        };
        let label = format!("{target} unit {}", self.unit_id);
        let blocks = read_all(&mut ctx, &self.reads, self.timeout, &label).await?;
        // Kept only after a clean poll: any error reconnects next time.
        self.ctx = Some(ctx);
        Ok(values(&self.registers, &blocks, &self.host))
    }
}

async fn connect(
    target: &str,
    host: &str,
    port: u16,
    unit_id: u8,
    timeout: Duration,
) -> Result<Context, DeviceError> {
    let unreachable = |m: String| DeviceError::Unreachable(format!("{target}: {m}"));
    let connect = async {
        let addrs = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let mut last = unreachable("no address".into());
        for addr in addrs {
            match tokio_modbus::client::tcp::connect_slave(addr, Slave(unit_id)).await {
                Ok(ctx) => return Ok(ctx),
                Err(e) => last = unreachable(e.to_string()),
            }
        }
        Err(last)
    };
    tokio::time::timeout(timeout, connect)
        .await
        .map_err(|_| unreachable(format!("no connection within {timeout:?}")))?
}

/// Makes every read, each bounded by `timeout`.
async fn read_all(
    ctx: &mut Context,
    reads: &[Read],
    timeout: Duration,
    label: &str,
) -> Result<Vec<(Read, Vec<u16>)>, DeviceError> {
    let mut out = Vec::with_capacity(reads.len());
    for read in reads {
        let what = format!(
            "{label} {:?} {}..{}",
            read.kind,
            read.start,
            u32::from(read.start) + u32::from(read.count)
        );
        let request = async {
            match read.kind {
                RegisterKind::Holding => ctx.read_holding_registers(read.start, read.count).await,
                RegisterKind::Input => ctx.read_input_registers(read.start, read.count).await,
            }
        };
        let words = match tokio::time::timeout(timeout, request).await {
            Err(_) => {
                return Err(DeviceError::Unreachable(format!(
                    "{what}: no answer within {timeout:?}"
                )));
            }
            Ok(Err(tokio_modbus::Error::Transport(e))) => {
                return Err(DeviceError::Unreachable(format!("{what}: {e}")));
            }
            Ok(Err(tokio_modbus::Error::Protocol(e))) => {
                return Err(DeviceError::Protocol(format!("{what}: {e}")));
            }
            Ok(Ok(Err(exception))) => {
                return Err(DeviceError::Protocol(format!(
                    "{what}: exception {exception}"
                )));
            }
            Ok(Ok(Ok(words))) => words,
        };
        if words.len() != usize::from(read.count) {
            return Err(DeviceError::Protocol(format!(
                "{what}: {} registers in the answer",
                words.len()
            )));
        }
        out.push((*read, words));
    }
    Ok(out)
}

/// Decodes every register from the words read. Pure.
fn values(registers: &[Register], blocks: &[(Read, Vec<u16>)], host: &str) -> Vec<PointValue> {
    let mut out = Vec::with_capacity(registers.len());
    for r in registers {
        let words = blocks.iter().find_map(|(read, words)| {
            let off = usize::from(r.address.checked_sub(read.start)?);
            (read.kind == r.kind && off + usize::from(r.data_type.words()) <= words.len())
                .then(|| &words[off..])
        });
        let Some(n) = words.and_then(|w| decode(w, r.data_type, r.word_order)) else {
            continue;
        };
        match r.conversion.apply(n) {
            Ok(value) => out.push(PointValue {
                point: r.point.clone(),
                value,
            }),
            Err(why) => {
                tracing::debug!(host, point = %r.point, address = r.address, "register skipped: {why}");
            }
        }
    }
    out
}

impl Device for ModbusDevice {
    fn kind(&self) -> &'static str {
        "modbus"
    }

    fn source(&self) -> String {
        format!("modbus://{}:{}/{}", self.host, self.port, self.unit_id)
    }

    fn poll(&mut self) -> PollFuture<'_> {
        Box::pin(self.poll_once())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::device::Value;

    const METER: &str = r#"
        host = "10.0.0.9"
        [[registers]]
        name = "mains"
        address = 100
        type = "u32"
        unit = "Wh"
        measures = "electricity"
        [[registers]]
        name = "mains"
        address = 102
        type = "f32"
        word_order = "little"
        unit = "kW"
        measures = "electricity"
        [[registers]]
        name = "room"
        address = 0
        kind = "input"
        type = "i16"
        scale = 0.1
        unit = "C"
        measures = "temperature"
    "#;

    #[test]
    fn config_defaults_plan_and_source() {
        let cfg: ModbusConfig = toml::from_str(METER).unwrap();
        assert_eq!((cfg.port, cfg.unit_id, cfg.read_gap), (502, 1, 0));
        assert_eq!(cfg.timeout, Duration::from_secs(3));
        let d = build(&cfg).unwrap();
        assert_eq!(d.source(), "modbus://10.0.0.9:502/1");
        assert_eq!(
            d.reads(),
            &[
                Read {
                    kind: RegisterKind::Holding,
                    start: 100,
                    count: 4
                },
                Read {
                    kind: RegisterKind::Input,
                    start: 0,
                    count: 1
                },
            ]
        );
    }

    #[test]
    fn values_come_from_the_right_words() {
        let d = build(&toml::from_str(METER).unwrap()).unwrap();
        // 100..101: 0x0001_86A0 = 100000 Wh; 102..103: 2.5f32 = 0x4020_0000, low word first.
        let blocks = vec![
            (d.reads[0], vec![0x0001, 0x86A0, 0x0000, 0x4020]),
            (d.reads[1], vec![0xFF38]), // -200 tenths: -20.0 °C
        ];
        assert_eq!(
            values(&d.registers, &blocks, "m"),
            vec![
                PointValue {
                    point: "mains".into(),
                    value: Value::EnergyCounter {
                        raw: 100_000,
                        uj_per_unit: 3_600_000_000,
                        max_raw: u64::from(u32::MAX)
                    }
                },
                PointValue {
                    point: "mains".into(),
                    value: Value::PowerW(2500.0)
                },
                PointValue {
                    point: "room".into(),
                    value: Value::Gauge(vigie_protocol::GaugeQuantity::TemperatureCelsius, -20.0)
                },
            ]
        );
    }

    #[test]
    fn configuration_mistakes_are_config_errors() {
        let base = |reg: &str| format!("host = \"h\"\n[[registers]]\n{reg}");
        for (reg, why) in [
            (
                "name = \"a b\"\naddress = 1\ntype = \"u16\"\nunit = \"W\"\nmeasures = \"electricity\"",
                "name must be",
            ),
            (
                "name = \"a\"\naddress = 65535\ntype = \"u32\"\nunit = \"W\"\nmeasures = \"electricity\"",
                "past register",
            ),
            (
                "name = \"a\"\naddress = 1\ntype = \"u16\"\nunit = \"C\"\nmeasures = \"heat\"",
                "role",
            ),
            (
                "name = \"a\"\naddress = 1\ntype = \"u16\"\nunit = \"kWh\"\nmeasures = \"water\"",
                "does not fit",
            ),
        ] {
            let err = build(&toml::from_str(&base(reg)).unwrap()).unwrap_err();
            assert!(
                matches!(&err, DeviceError::Config(m) if m.contains(why)),
                "{reg}: {err}"
            );
        }
        let twice = format!(
            "{}\n[[registers]]\nname = \"a\"\naddress = 5\ntype = \"u16\"\nunit = \"kW\"\nmeasures = \"electricity\"",
            base(
                "name = \"a\"\naddress = 1\ntype = \"u16\"\nunit = \"W\"\nmeasures = \"electricity\""
            )
        );
        let err = build(&toml::from_str(&twice).unwrap()).unwrap_err();
        assert!(err.to_string().contains("already has"), "{err}");
        assert!(
            toml::from_str::<ModbusConfig>("host = \"h\"\nregisters = []\nbaud = 9600").is_err()
        );
        let none: ModbusConfig = toml::from_str("host = \"h\"\nregisters = []").unwrap();
        assert!(build(&none).is_err());
    }
}
