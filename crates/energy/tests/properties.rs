//! Property tests for the invariants the rest of vigie relies on: counters
//! never lose or invent energy across wraps, interval splitting conserves
//! energy exactly, and ledger totals ignore batch order and duplicates.

// A failed unwrap here is a failed test case, which proptest then shrinks.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use proptest::prelude::*;
use vigie_energy::{
    Applied, BatchId, CounterStep, HOUR_MS, Interval, Ledger, MINUTE_MS, Microjoules,
    WrappingCounter, split_interval,
};

/// A counter maximum: small ones wrap often; large ones exercise the
/// arithmetic while leaving room for 64 increments in a `u64` total.
fn counter_max() -> impl Strategy<Value = u64> {
    prop_oneof![1..=1_000u64, 1..=u64::MAX / 64]
}

// 256 cases each (proptest's default).
proptest! {
    /// Targets wraps, single and repeated: half the cases use a counter of
    /// at most 1000 µJ with up to 64 increments of up to a full turn, so
    /// nearly every such case wraps, often several times; the others
    /// exercise large moduli.
    #[test]
    fn wrapping_counter_total_equals_sum_of_increments(
        (max, start, increments) in counter_max().prop_flat_map(|max| (
            Just(max),
            0..=max,
            prop::collection::vec(0..=max, 0..64),
        ))
    ) {
        let modulus = u128::from(max) + 1;
        let mut counter = WrappingCounter::new(max).unwrap();
        prop_assert_eq!(counter.observe(start).unwrap(), None);
        let mut position = u128::from(start);
        let mut sum = 0u64;
        for inc in increments {
            let before = position % modulus;
            position += u128::from(inc);
            let value = u64::try_from(position % modulus).unwrap();
            let step = counter.observe(value).unwrap().unwrap();
            prop_assert_eq!(step.energy(), Microjoules(inc));
            let crossed = before + u128::from(inc) >= modulus;
            prop_assert_eq!(matches!(step, CounterStep::Wrapped(_)), crossed);
            sum += inc;
            prop_assert_eq!(counter.last(), Some(value));
        }
        prop_assert_eq!(counter.total(), Microjoules(sum));
    }
}

/// `(start_ms, end_ms, bucket_ms)` with negative and extreme timestamps and
/// few enough buckets to enumerate. One interval in eight is empty
/// (`start == end`, a point in time): drawn from the length range alone it
/// would be about one in 10^4.
fn interval_and_bucket() -> impl Strategy<Value = (i64, i64, i64)> {
    let bucket = prop_oneof![1..=10i64, Just(MINUTE_MS), Just(HOUR_MS), 1..=2 * HOUR_MS];
    bucket.prop_flat_map(|bucket| {
        let start = prop_oneof![
            -10_000_000_000_000i64..10_000_000_000_000,
            -3 * bucket..3 * bucket,
            i64::MAX - 300 * bucket..=i64::MAX,
        ];
        let len = prop_oneof![1 => Just(0), 7 => 0..=200 * bucket];
        (start, len, Just(bucket)).prop_map(|(start, len, bucket)| {
            let end = start.saturating_add(len);
            (start, end, bucket)
        })
    })
}

proptest! {
    /// Targets empty intervals, intervals inside one bucket, across up to
    /// 200 buckets, starting at negative times and ending at `i64::MAX`
    /// (saturated), with small energies (where rounding dominates) and
    /// huge ones (where overflow would).
    #[test]
    fn split_conserves_and_is_proportional(
        (start, end, bucket) in interval_and_bucket(),
        energy in prop_oneof![0..=1_000u64, 0..=u64::MAX / 2],
    ) {
        let shares = split_interval(start, end, Microjoules(energy), bucket).unwrap();

        let sum: u128 = shares.iter().map(|(_, e)| u128::from(e.0)).sum();
        prop_assert_eq!(sum, u128::from(energy));
        prop_assert!(shares.windows(2).all(|w| w[0].0 < w[1].0), "buckets not increasing");
        prop_assert!(shares.iter().all(|(_, e)| e.0 > 0), "zero share returned");

        let got: BTreeMap<i64, u64> = shares.iter().map(|&(b, e)| (b, e.0)).collect();
        if start == end {
            let b = start.div_euclid(bucket) * bucket;
            prop_assert!(b <= start && start - b < bucket);
            let want: BTreeMap<i64, u64> =
                if energy == 0 { BTreeMap::new() } else { [(b, energy)].into() };
            prop_assert_eq!(got, want);
            return Ok(());
        }

        // Walk the overlapping buckets independently, in i128.
        let (s, e, w) = (i128::from(start), i128::from(end), i128::from(bucket));
        let total = e - s;
        let mut b = s.div_euclid(w) * w;
        let mut overlapping = 0usize;
        while b < e {
            let overlap = e.min(b + w) - s.max(b);
            prop_assert!(overlap > 0);
            let share = i128::from(got.get(&i64::try_from(b).unwrap()).copied().unwrap_or(0));
            // |share - E * overlap / total| < 1, scaled by total.
            let error = share * total - i128::from(energy) * overlap;
            prop_assert!(error.abs() < total, "bucket {b}: share {share} off by {error}/{total}");
            overlapping += 1;
            b += w;
        }
        // Every returned bucket was among those visited above.
        prop_assert!(got.len() <= overlapping);
        for &b in got.keys() {
            let b = i128::from(b);
            prop_assert!(b.rem_euclid(w) == 0 && b < e && b + w > s, "bucket {b} outside interval");
        }
    }
}

type Key = (String, u8);
type Reading = (Key, Interval, Microjoules);

fn reading() -> impl Strategy<Value = Reading> {
    (
        0..3u8,
        0..4u8,
        -2 * HOUR_MS..2 * HOUR_MS,
        0..=3 * MINUTE_MS,
        0..=1_000_000_000_000u64,
    )
        .prop_map(|(host, sensor, start_ms, len, energy)| {
            (
                (format!("host{host}"), sensor),
                Interval {
                    start_ms,
                    end_ms: start_ms + len,
                },
                Microjoules(energy),
            )
        })
}

/// Batches with distinct ids, and an order to apply them in: a permutation
/// of every batch, with some applied more than once.
fn batches_and_order() -> impl Strategy<Value = (Vec<(BatchId, Vec<Reading>)>, Vec<usize>)> {
    prop::collection::vec(prop::collection::vec(reading(), 0..6), 1..16).prop_flat_map(|readings| {
        let n = readings.len();
        let batches: Vec<_> = readings
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                let id = BatchId {
                    host: format!("host{}", i % 3),
                    epoch: (i % 2) as u64,
                    seq: i as u64,
                };
                (id, r)
            })
            .collect();
        let order = prop::collection::vec(0..n, 0..2 * n).prop_flat_map(move |dups| {
            let all: Vec<usize> = (0..n).chain(dups).collect();
            Just(all).prop_shuffle()
        });
        (Just(batches), order)
    })
}

proptest! {
    /// Targets duplicates and reordering: every case applies all batches in
    /// a shuffled order with up to 2n repeats (none only when the repeat
    /// count draws 0), and readings of 12 keys within 4 h overlap buckets.
    #[test]
    fn ledger_ignores_order_and_duplicates((batches, order) in batches_and_order()) {
        let mut reference = Ledger::new(MINUTE_MS).unwrap();
        for (id, readings) in &batches {
            prop_assert_eq!(reference.apply(id.clone(), readings.clone()).unwrap(), Applied::New);
        }

        let mut shuffled = Ledger::new(MINUTE_MS).unwrap();
        let mut new = 0;
        for &i in &order {
            let (id, readings) = &batches[i];
            if shuffled.apply(id.clone(), readings.clone()).unwrap() == Applied::New {
                new += 1;
            }
        }
        prop_assert_eq!(new, batches.len());

        prop_assert_eq!(shuffled.buckets(), reference.buckets());
        prop_assert_eq!(shuffled.totals_by_key(), reference.totals_by_key());
        prop_assert_eq!(shuffled.total(), reference.total());

        // And the totals are the energy of the readings, each counted once.
        let mut want_by_key: BTreeMap<Key, u64> = BTreeMap::new();
        for (key, _, energy) in batches.iter().flat_map(|(_, r)| r) {
            *want_by_key.entry(key.clone()).or_default() += energy.0;
        }
        let want_total: u64 = want_by_key.values().sum();
        prop_assert_eq!(shuffled.total(), Microjoules(want_total));
        for (key, want) in &want_by_key {
            prop_assert_eq!(shuffled.total_for(key), Microjoules(*want));
        }
        let bucket_sum: u64 = shuffled.buckets().values().map(|e| e.0).sum();
        prop_assert_eq!(bucket_sum, want_total);
    }
}
