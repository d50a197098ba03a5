//! Groups readings into batches with a sequence number.

use crate::source::Sink;
use vigie_protocol::{Gauge, Reading, SCHEMA_VERSION, TelemetryBatch};

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
}

impl Batcher {
    /// A batcher for one agent epoch.
    pub fn new(id: Identity) -> Self {
        Batcher {
            id,
            next_seq: 0,
            pending: Vec::new(),
            gauges: Vec::new(),
        }
    }

    /// Buffer where the sampler appends readings.
    pub fn pending_mut(&mut self) -> &mut Vec<Reading> {
        &mut self.pending
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
        Some(TelemetryBatch {
            schema: SCHEMA_VERSION,
            site: self.id.site.clone(),
            host: self.id.host.clone(),
            boot_id: self.id.boot_id.clone(),
            epoch: self.id.epoch,
            seq,
            readings: std::mem::take(&mut self.pending),
            gauges: std::mem::take(&mut self.gauges),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use vigie_protocol::samples;

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
