//! Groups readings into batches with a sequence number.

use crate::source::Sink;
use vigie_protocol::{Gauge, Reading, SCHEMA_VERSION, TelemetryBatch, WorkloadSplit};

/// Identity stamped on every batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Site.
    pub site: String,
    /// Host.
    pub host: String,
    /// Linux boot id.
    pub boot_id: String,
    /// Agent epoch.
    pub epoch: u64,
}

/// Collects readings and cuts them into batches, numbering them from 0
/// within the epoch.
#[derive(Debug)]
pub struct Batcher {
    id: Identity,
    next_seq: u64,
    pending: Vec<Reading>,
    gauges: Vec<Gauge>,
    /// Energy per workload of the pending readings.
    workloads: Vec<WorkloadSplit>,
    /// The collector's per-message bounds: a cut never makes a batch it
    /// would refuse for its size or its work.
    max_items: usize,
    max_buckets: u64,
}

impl Batcher {
    /// A batcher for one agent epoch.
    pub fn new(id: Identity) -> Self {
        Batcher {
            id,
            next_seq: 0,
            pending: Vec::new(),
            gauges: Vec::new(),
            workloads: Vec::new(),
            max_items: vigie_protocol::Limits::default().max_readings,
            max_buckets: vigie_protocol::DEFAULT_MAX_MINUTE_BUCKETS,
        }
    }

    /// Cuts batches of at most `max_items` readings and gauges touching at
    /// most `max_buckets` minute buckets (the collector's `max_readings`
    /// and `max_minute_buckets`).
    pub fn with_bounds(mut self, max_items: usize, max_buckets: u64) -> Self {
        self.max_items = max_items.max(1);
        self.max_buckets = max_buckets;
        self
    }

    /// Takes everything buffered as consecutive batches, each within the
    /// bounds (after a long downtime one cut can hold days of readings);
    /// gauges go in the first. Empty when nothing is buffered.
    pub fn cut_all(&mut self) -> Vec<TelemetryBatch> {
        let mut out = Vec::new();
        let mut rest = std::mem::take(&mut self.pending).into_iter().peekable();
        let mut gauges = std::mem::take(&mut self.gauges);
        let mut splits = std::mem::take(&mut self.workloads);
        loop {
            // Gauges first (they cost no bucket), then readings while they fit.
            let take = gauges.len().min(self.max_items);
            let mut chunk_gauges: Vec<Gauge> = gauges.drain(..take).collect();
            let mut chunk: Vec<Reading> = Vec::new();
            let mut buckets = 0u64;
            while let Some(r) = rest.peek() {
                let b = vigie_protocol::minute_buckets(std::slice::from_ref(r));
                let full = chunk.len() + chunk_gauges.len() >= self.max_items
                    || (!chunk.is_empty() && buckets.saturating_add(b) > self.max_buckets);
                if full {
                    break;
                }
                buckets = buckets.saturating_add(b);
                chunk.extend(rest.next());
            }
            if chunk.is_empty() && chunk_gauges.is_empty() {
                return out;
            }
            // Each split goes with the reading it splits.
            let (mine, rest): (Vec<WorkloadSplit>, Vec<WorkloadSplit>) =
                splits.into_iter().partition(|s| {
                    chunk.iter().any(|r| {
                        r.sensor == s.sensor
                            && r.quality == s.quality
                            && r.start_ms <= s.start_ms
                            && s.end_ms <= r.end_ms
                    })
                });
            splits = rest;
            self.workloads = mine;
            self.pending = chunk;
            std::mem::swap(&mut self.gauges, &mut chunk_gauges);
            out.extend(self.cut());
        }
    }

    /// Buffer where the sampler appends readings.
    pub fn pending_mut(&mut self) -> &mut Vec<Reading> {
        &mut self.pending
    }

    /// How many readings are pending.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// The pending readings from index `from` on.
    pub fn pending_since(&self, from: usize) -> &[Reading] {
        self.pending.get(from..).unwrap_or(&[])
    }

    /// Adds splits of pending readings among workloads.
    pub fn push_workloads(&mut self, splits: Vec<WorkloadSplit>) {
        self.workloads.extend(splits);
    }

    /// Where sources append readings and gauges.
    pub fn sink(&mut self) -> Sink<'_> {
        Sink {
            readings: &mut self.pending,
            gauges: &mut self.gauges,
        }
    }

    /// Takes the buffered readings and gauges as the next batch, or `None`
    /// if there are none.
    pub fn cut(&mut self) -> Option<TelemetryBatch> {
        if self.pending.is_empty() && self.gauges.is_empty() {
            return None;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        // The collector refuses a batch past its workload lines: the
        // oldest splits go first, logged (their readings stay whole).
        let mut lines = 0usize;
        let keep_from = self
            .workloads
            .iter()
            .rposition(|s| {
                lines += 1 + s.workloads.len();
                lines > vigie_protocol::DEFAULT_MAX_WORKLOADS
            })
            .map_or(0, |i| i + 1);
        if keep_from > 0 {
            tracing::warn!(
                splits = keep_from,
                "more workload lines than a batch may carry: the oldest splits dropped (their energy stays in the readings)"
            );
            self.workloads.drain(..keep_from);
        }
        Some(TelemetryBatch {
            schema: SCHEMA_VERSION,
            site: self.id.site.clone(),
            host: self.id.host.clone(),
            boot_id: self.id.boot_id.clone(),
            epoch: self.id.epoch,
            seq,
            readings: std::mem::take(&mut self.pending),
            gauges: std::mem::take(&mut self.gauges),
            workloads: std::mem::take(&mut self.workloads),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use vigie_protocol::samples;

    #[test]
    fn a_long_downtime_is_cut_into_batches_the_collector_accepts() {
        let mut b = Batcher::new(Identity {
            site: "s".into(),
            host: "h".into(),
            boot_id: "b".into(),
            epoch: 7,
        })
        .with_bounds(4, 25_000);
        // 7 device points bridging a week each (10,080 buckets apiece),
        // then two gauges.
        let week = 7 * 24 * 3_600_000;
        let template = samples::telemetry().readings[0].clone();
        for i in 0..7 {
            b.pending_mut().push(Reading {
                sensor: format!("pdu:outlet-{i}"),
                start_ms: 1_795_000_020_000 - week,
                end_ms: 1_795_000_020_000,
                energy_uj: 1_000 + i,
                ..template.clone()
            });
        }
        b.sink()
            .gauges
            .extend(samples::telemetry().gauges.iter().cloned().cycle().take(2));
        let batches = b.cut_all();
        let shape: Vec<(u64, usize, usize)> = batches
            .iter()
            .map(|x| (x.seq, x.readings.len(), x.gauges.len()))
            .collect();
        // Gauges first; at most 2 weeks (20,160 buckets) and 4 items a batch.
        assert_eq!(shape, [(0, 2, 2), (1, 2, 0), (2, 2, 0), (3, 1, 0)]);
        for x in &batches {
            assert!(vigie_protocol::minute_buckets(&x.readings) <= 25_000);
        }
        let energy: u64 = batches
            .iter()
            .flat_map(|x| &x.readings)
            .map(|r| r.energy_uj)
            .sum();
        assert_eq!(
            energy,
            (0..7).map(|i| 1_000 + i).sum::<u64>(),
            "nothing lost"
        );
        assert!(b.cut_all().is_empty());
    }

    #[test]
    fn each_split_goes_in_the_batch_of_its_reading() {
        let mut b = Batcher::new(Identity {
            site: "s".into(),
            host: "h".into(),
            boot_id: "b".into(),
            epoch: 7,
        })
        .with_bounds(2, 1_000);
        let sample = samples::telemetry_with_workloads();
        let template = sample.readings[0].clone();
        let split = sample.workloads[0].clone();
        for i in 0..3i64 {
            let (start_ms, end_ms) = (template.start_ms + i * 1_000, template.end_ms + i * 1_000);
            b.pending_mut().push(Reading {
                start_ms,
                end_ms,
                ..template.clone()
            });
            b.push_workloads(vec![WorkloadSplit {
                start_ms,
                end_ms,
                ..split.clone()
            }]);
        }
        let batches = b.cut_all();
        let shape: Vec<(usize, usize)> = batches
            .iter()
            .map(|x| (x.readings.len(), x.workloads.len()))
            .collect();
        assert_eq!(shape, [(2, 2), (1, 1)]);
        for x in &batches {
            for (r, s) in x.readings.iter().zip(&x.workloads) {
                assert_eq!((r.start_ms, r.end_ms), (s.start_ms, s.end_ms));
            }
        }
    }

    #[test]
    fn numbers_batches_and_skips_empty_ones() {
        let mut b = Batcher::new(Identity {
            site: "s".into(),
            host: "h".into(),
            boot_id: "b".into(),
            epoch: 7,
        });
        assert!(b.cut().is_none());
        b.pending_mut()
            .push(samples::telemetry().readings[0].clone());
        let first = b.cut().unwrap();
        assert_eq!((first.epoch, first.seq, first.readings.len()), (7, 0, 1));
        assert!(b.cut().is_none());
        b.pending_mut()
            .push(samples::telemetry().readings[1].clone());
        assert_eq!(b.cut().unwrap().seq, 1);
    }
}
