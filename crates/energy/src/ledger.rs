//! The reference, in-memory model of the collector's ledger.
//!
//! The collector receives batches of readings at least once: the agent
//! retries until acknowledged, so the same batch can arrive twice and batches
//! arrive out of order. The ledger must end up with the same totals whatever
//! the order and however many duplicates. This model states that contract in
//! the simplest form; the collector's persistent ledger is tested against it.

use std::collections::{BTreeMap, BTreeSet};

use crate::split::{SplitError, split_interval};
use crate::units::Microjoules;

/// Identity of a batch of readings, unique per host.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BatchId {
    /// The host that produced the batch.
    pub host: String,
    /// Agent epoch: changes when the agent loses its sequence (new spool).
    pub epoch: u64,
    /// Sequence number of the batch within the epoch.
    pub seq: u64,
}

/// A half-open time interval `[start_ms, end_ms)` in Unix milliseconds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interval {
    /// Inclusive start, Unix ms.
    pub start_ms: i64,
    /// Exclusive end, Unix ms.
    pub end_ms: i64,
}

/// What [`Ledger::apply`] did with a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// The batch was new and its energy has been added.
    New,
    /// The batch had been applied before; nothing changed.
    Duplicate,
}

/// A batch the ledger refused. Nothing from it was applied, and it is not
/// recorded as seen; retrying the same batch fails the same way.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum LedgerError {
    /// A reading's interval cannot be split into buckets.
    #[error("bad reading interval")]
    Split(#[from] SplitError),
    /// Adding the batch would take the ledger's total past `u64::MAX` µJ.
    #[error("energy total would overflow")]
    Overflow,
}

/// Deduplicates batches on [`BatchId`] and adds each reading's energy into
/// `(key, bucket_start_ms)` buckets; `K` is e.g. `(host, sensor)`.
///
/// Totals depend only on the set of batches applied, never on their order or
/// on duplicates.
#[derive(Clone, Debug)]
pub struct Ledger<K> {
    bucket_ms: i64,
    seen: BTreeSet<BatchId>,
    buckets: BTreeMap<(K, i64), Microjoules>,
    by_key: BTreeMap<K, Microjoules>,
    total: Microjoules,
}

impl<K: Ord + Clone> Ledger<K> {
    /// An empty ledger with buckets `bucket_ms` wide.
    ///
    /// # Errors
    ///
    /// [`SplitError::BadBucket`] if `bucket_ms <= 0`.
    pub fn new(bucket_ms: i64) -> Result<Self, SplitError> {
        if bucket_ms <= 0 {
            return Err(SplitError::BadBucket(bucket_ms));
        }
        Ok(Self {
            bucket_ms,
            seen: BTreeSet::new(),
            buckets: BTreeMap::new(),
            by_key: BTreeMap::new(),
            total: Microjoules::ZERO,
        })
    }

    /// Applies batch `id`, unless it was applied before.
    ///
    /// All readings are validated first; the batch is applied whole or not
    /// at all. A duplicate is not validated again: it changes nothing.
    ///
    /// # Errors
    ///
    /// [`LedgerError::Split`] if a reading's interval is invalid,
    /// [`LedgerError::Overflow`] if the ledger's total would pass
    /// `u64::MAX` µJ.
    pub fn apply<I: IntoIterator<Item = (K, Interval, Microjoules)>>(
        &mut self,
        id: BatchId,
        readings: I,
    ) -> Result<Applied, LedgerError> {
        if self.seen.contains(&id) {
            return Ok(Applied::Duplicate);
        }
        let mut staged = Vec::new();
        let mut batch_total = Microjoules::ZERO;
        for (key, interval, energy) in readings {
            let shares =
                split_interval(interval.start_ms, interval.end_ms, energy, self.bucket_ms)?;
            batch_total = batch_total
                .checked_add(energy)
                .ok_or(LedgerError::Overflow)?;
            staged.push((key, shares));
        }
        // Every bucket and per-key total is at most the grand total, so if the
        // grand total fits, the additions below cannot overflow.
        let new_total = self
            .total
            .checked_add(batch_total)
            .ok_or(LedgerError::Overflow)?;

        for (key, shares) in staged {
            let mut key_sum = Microjoules::ZERO;
            for (bucket, share) in shares {
                *self.buckets.entry((key.clone(), bucket)).or_default() += share;
                key_sum += share;
            }
            *self.by_key.entry(key).or_default() += key_sum;
        }
        self.total = new_total;
        self.seen.insert(id);
        Ok(Applied::New)
    }

    /// Energy over all keys and buckets.
    pub fn total(&self) -> Microjoules {
        self.total
    }

    /// Energy recorded for `key` over all buckets.
    pub fn total_for(&self, key: &K) -> Microjoules {
        self.by_key.get(key).copied().unwrap_or_default()
    }

    /// Energy per `(key, bucket_start_ms)`. Only buckets that received some
    /// energy are present.
    pub fn buckets(&self) -> &BTreeMap<(K, i64), Microjoules> {
        &self.buckets
    }

    /// Energy per key over all buckets. Keys whose readings all carried zero
    /// energy may appear with a zero total.
    pub fn totals_by_key(&self) -> BTreeMap<K, Microjoules> {
        self.by_key.clone()
    }

    /// The bucket width in milliseconds.
    pub fn bucket_ms(&self) -> i64 {
        self.bucket_ms
    }

    /// Whether batch `id` has been applied.
    pub fn contains(&self, id: &BatchId) -> bool {
        self.seen.contains(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::split::MINUTE_MS;

    fn id(host: &str, seq: u64) -> BatchId {
        BatchId {
            host: host.to_owned(),
            epoch: 1,
            seq,
        }
    }

    fn iv(start_ms: i64, end_ms: i64) -> Interval {
        Interval { start_ms, end_ms }
    }

    #[test]
    fn applies_splits_and_deduplicates() -> Result<(), LedgerError> {
        let mut l = Ledger::new(MINUTE_MS)?;
        let batch = || {
            vec![
                ("a", iv(30_000, 90_000), Microjoules(100)),
                ("b", iv(0, 60_000), Microjoules(7)),
            ]
        };
        assert_eq!(l.apply(id("h", 1), batch())?, Applied::New);
        assert_eq!(l.apply(id("h", 1), batch())?, Applied::Duplicate);
        assert!(l.contains(&id("h", 1)));
        assert_eq!(l.total(), Microjoules(107));
        assert_eq!(l.total_for(&"a"), Microjoules(100));
        assert_eq!(l.total_for(&"c"), Microjoules::ZERO);
        let want: BTreeMap<_, _> = [
            (("a", 0), Microjoules(50)),
            (("a", MINUTE_MS), Microjoules(50)),
            (("b", 0), Microjoules(7)),
        ]
        .into();
        assert_eq!(l.buckets(), &want);
        assert_eq!(
            l.totals_by_key(),
            [("a", Microjoules(100)), ("b", Microjoules(7))].into()
        );
        Ok(())
    }

    #[test]
    fn bad_batch_is_all_or_nothing() -> Result<(), LedgerError> {
        let mut l = Ledger::new(MINUTE_MS)?;
        let bad = vec![
            ("a", iv(0, 10), Microjoules(5)),
            ("a", iv(10, 0), Microjoules(5)),
        ];
        assert_eq!(
            l.apply(id("h", 1), bad),
            Err(LedgerError::Split(SplitError::EndBeforeStart {
                start_ms: 10,
                end_ms: 0
            }))
        );
        assert_eq!(l.total(), Microjoules::ZERO);
        assert!(l.buckets().is_empty());
        assert!(!l.contains(&id("h", 1)));
        // The id was not burnt: a corrected batch with it still applies.
        let good = vec![("a", iv(0, 10), Microjoules(5))];
        assert_eq!(l.apply(id("h", 1), good)?, Applied::New);
        assert_eq!(l.total(), Microjoules(5));
        Ok(())
    }

    #[test]
    fn overflow_is_refused_whole() -> Result<(), LedgerError> {
        let mut l = Ledger::new(MINUTE_MS)?;
        l.apply(id("h", 1), [("a", iv(0, 1), Microjoules(u64::MAX - 1))])?;
        // Within one batch.
        let within = [
            ("b", iv(0, 1), Microjoules(u64::MAX)),
            ("b", iv(0, 1), Microjoules(1)),
        ];
        assert_eq!(l.apply(id("h", 2), within), Err(LedgerError::Overflow));
        // Against what is already there.
        let against = [
            ("b", iv(0, 1), Microjoules(1)),
            ("b", iv(0, 1), Microjoules(1)),
        ];
        assert_eq!(l.apply(id("h", 3), against), Err(LedgerError::Overflow));
        assert_eq!(l.total(), Microjoules(u64::MAX - 1));
        assert_eq!(l.total_for(&"b"), Microjoules::ZERO);
        assert_eq!(l.buckets().len(), 1);
        assert_eq!(
            l.apply(id("h", 4), [("b", iv(0, 1), Microjoules(1))])?,
            Applied::New
        );
        assert_eq!(l.total(), Microjoules(u64::MAX));
        Ok(())
    }

    #[test]
    fn rejects_bad_bucket() {
        assert_eq!(
            Ledger::<u8>::new(0).map(|l| l.bucket_ms()),
            Err(SplitError::BadBucket(0))
        );
    }
}
