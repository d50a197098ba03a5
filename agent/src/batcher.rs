//! Groups readings into batches with a sequence number.

use vigie_protocol::{Reading, SCHEMA_VERSION, TelemetryBatch};

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
}

impl Batcher {
    /// A batcher for one agent epoch.
    pub fn new(id: Identity) -> Self {
        Batcher {
            id,
            next_seq: 0,
            pending: Vec::new(),
        }
    }

    /// Buffer where the sampler appends readings.
    pub fn pending_mut(&mut self) -> &mut Vec<Reading> {
        &mut self.pending
    }

    /// Takes the buffered readings as the next batch, or `None` if there are none.
    pub fn cut(&mut self) -> Option<TelemetryBatch> {
        if self.pending.is_empty() {
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
