//! What a driver is: the [`Device`] trait, the raw values it returns and
//! why a read can fail. A driver only reads; the [`Tracker`](super::Tracker)
//! turns its values into energy.

use super::scope;
use std::future::Future;
use std::pin::Pin;
use vigie_protocol::GaugeQuantity;

/// `mains-1`, `chassis`, `meter`).
#[derive(Debug, Clone, PartialEq)]
pub struct PointValue {
    /// Point name, unique within the device: `[A-Za-z0-9._:-]`.
    pub point: String,
    /// What was read.
    pub value: Value,
}

/// A raw reading of a point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    /// Electrical power in watts, as the device averages it.
    PowerW(f64),
    /// An energy register: `raw` units of `uj_per_unit` microjoules each,
    /// wrapping to 0 after `max_raw` (e.g. SNMP Counter32 in tenths of
    /// kWh: `uj_per_unit` 360_000_000_000, `max_raw` u32::MAX).
    EnergyCounter {
        /// Register value.
        raw: u64,
        /// Microjoules per unit.
        uj_per_unit: u64,
        /// Largest value before the register wraps.
        max_raw: u64,
    },
    /// Anything else (temperature, current, a heat meter's registers).
    Gauge(GaugeQuantity, f64),
}

/// Why a device could not be read. The runner logs it and retries at the
/// next period; nothing already read is lost.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// No answer (network, timeout, no such host).
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// The device refused our credentials.
    #[error("authentication refused: {0}")]
    Auth(String),
    /// An answer we could not understand.
    #[error("unexpected answer: {0}")]
    Protocol(String),
    /// The configuration cannot work (missing file, bad map).
    #[error("configuration: {0}")]
    Config(String),
}

/// The future a poll returns.
pub type PollFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Vec<PointValue>, DeviceError>> + Send + 'a>>;

/// A device driver.
pub trait Device: Send {
    /// Protocol name: `redfish`, `snmp`, `modbus`, `ipmi`.
    fn kind(&self) -> &'static str;
    /// Where it is read from, for the inventory and `probe` (no secrets).
    fn source(&self) -> String;
    /// Reads every point once.
    fn poll(&mut self) -> PollFuture<'_>;
    /// Where each of `points` sits in the device, so that one physical
    /// energy is counted once ([`scope::assign`]). The default reads PDU
    /// point names ([`scope::by_name`]); a driver that knows the device's
    /// structure says so; meters whose points are independent return none.
    fn places(&self, points: &[&str]) -> Vec<scope::Place> {
        scope::by_name(points)
    }
    /// What the device showed and the driver does not read (equipment it
    /// has no reader for, a power supply without metrics), each with why,
    /// so that `probe` names it and the runner logs it once. Known after a
    /// successful poll.
    fn unread(&self) -> Vec<String> {
        Vec::new()
    }
}
