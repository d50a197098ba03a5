//! Local energy sources polled by the sampling loop (RAPL, NVIDIA GPUs,
//! the host model). A source is told the time and appends what it read;
//! it never reads the clock itself, so each is tested with made-up times.
//! Remote devices (PDUs, BMCs, meters) are slower and run in their own
//! tasks instead (see [`crate::device`]).

use crate::checkpoint::{Checkpoint, Unresumed};
use vigie_protocol::{Gauge, Reading, SensorMeta};

/// Where a poll appends: the batcher's pending readings and gauges.
pub struct Sink<'a> {
    /// Interval energy readings.
    pub readings: &'a mut Vec<Reading>,
    /// Instantaneous values.
    pub gauges: &'a mut Vec<Gauge>,
}

/// A sensor that could not be read this time; retried at the next poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollError {
    /// Sensor (or source) name.
    pub sensor: String,
    /// What happened, and what to do about it when known.
    pub message: String,
    /// A counter went back (a reset, counted): its next reading is a new
    /// baseline.
    pub reset: bool,
}

impl std::fmt::Display for PollError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.sensor, self.message)
    }
}

/// A local source of energy readings.
pub trait Source: Send {
    /// Short name for logs (`rapl`, `nvml`, `model`).
    fn kind(&self) -> &'static str;
    /// The sensors it provides, for the inventory and `probe`.
    fn sensors(&self) -> Vec<SensorMeta>;
    /// Reads every sensor at `now_ms`. The first poll of a counter only
    /// sets its baseline.
    fn poll(&mut self, now_ms: i64, sink: &mut Sink<'_>) -> Vec<PollError>;
    /// Where its counters stand (persisted with each spooled batch).
    fn checkpoints(&self) -> Vec<Checkpoint> {
        Vec::new()
    }
    /// Restores counters from an earlier run in the same boot.
    fn resume(&mut self, _checkpoints: &[Checkpoint], _now_ms: i64) -> Vec<Unresumed> {
        Vec::new()
    }
    /// Sensors whose counter could wrap twice within `period_ms`, with the
    /// longest safe period of each.
    fn too_slow_for(&self, _period_ms: u64) -> Vec<(String, u64)> {
        Vec::new()
    }
    /// Use per process behind each sensor since the last call (GPU use,
    /// for energy per workload): (sensor, [(pid, weight)]).
    fn process_activity(&mut self) -> Vec<crate::workload::GpuActivity> {
        Vec::new()
    }
}

/// Every local source of the agent, polled together.
#[derive(Default)]
pub struct Sources {
    sources: Vec<Box<dyn Source>>,
}

impl Sources {
    /// Adds a source.
    pub fn push(&mut self, s: Box<dyn Source>) {
        self.sources.push(s);
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// The kinds in use, for logs.
    pub fn kinds(&self) -> Vec<&'static str> {
        self.sources.iter().map(|s| s.kind()).collect()
    }

    /// Every sensor of every source.
    pub fn sensors(&self) -> Vec<SensorMeta> {
        self.sources.iter().flat_map(|s| s.sensors()).collect()
    }

    /// Polls every source.
    pub fn poll(&mut self, now_ms: i64, sink: &mut Sink<'_>) -> Vec<PollError> {
        self.sources
            .iter_mut()
            .flat_map(|s| s.poll(now_ms, sink))
            .collect()
    }

    /// Every source's checkpoints.
    pub fn checkpoints(&self) -> Vec<Checkpoint> {
        self.sources.iter().flat_map(|s| s.checkpoints()).collect()
    }

    /// Hands the checkpoints to every source (each takes its own sensors').
    pub fn resume(&mut self, checkpoints: &[Checkpoint], now_ms: i64) -> Vec<Unresumed> {
        self.sources
            .iter_mut()
            .flat_map(|s| s.resume(checkpoints, now_ms))
            .collect()
    }

    /// Every source's [`Source::process_activity`].
    pub fn process_activity(&mut self) -> Vec<crate::workload::GpuActivity> {
        self.sources
            .iter_mut()
            .flat_map(|s| s.process_activity())
            .collect()
    }

    /// See [`Source::too_slow_for`].
    pub fn too_slow_for(&self, period_ms: u64) -> Vec<(String, u64)> {
        self.sources
            .iter()
            .flat_map(|s| s.too_slow_for(period_ms))
            .collect()
    }
}
