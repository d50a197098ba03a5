//! Property tests of per-workload attribution: every interval's energy is
//! conserved to the microjoule, the result ignores the order workloads are
//! given in, and no more than `max_workloads` are kept.

#![allow(clippy::unwrap_used, missing_docs)]

use proptest::prelude::*;
use vigie_energy::{Microjoules, attribute};

/// Workload ids from a small alphabet, so duplicates happen; activity up to
/// an hour of 256 CPUs in µs, with zeros.
fn activity() -> impl Strategy<Value = Vec<(u16, u64)>> {
    prop::collection::vec(
        (
            0u16..40,
            prop_oneof![Just(0u64), 0..1_000u64, 0..921_600_000_000u64],
        ),
        0..60,
    )
}

fn energy() -> impl Strategy<Value = u64> {
    prop_oneof![0..1_000u64, 0..u64::MAX]
}

proptest! {
    #[test]
    fn workloads_idle_other_and_unattributed_add_up_exactly(
        e in energy(),
        idle in energy(),
        act in activity(),
        unassigned in prop_oneof![Just(0u64), 0..u64::MAX],
        max in 0usize..20,
    ) {
        let a = attribute(Microjoules(e), Microjoules(idle), &act, unassigned, max);
        prop_assert_eq!(a.total(), u128::from(e));
        prop_assert!(a.idle.0 <= e);
        prop_assert_eq!(a.idle.0, idle.min(e));
        prop_assert!(a.workloads.iter().all(|(_, x)| x.0 > 0));
        // No activity at all: the active energy is unattributed.
        if unassigned == 0 && act.iter().all(|(_, x)| *x == 0) {
            prop_assert_eq!(a.unattributed.0, e - idle.min(e));
            prop_assert!(a.workloads.is_empty());
        }
        // Each workload (kept or in other) is within 1 µJ of its exact share.
        let active = u128::from(e - idle.min(e));
        let total: u128 = act.iter().map(|(_, x)| u128::from(*x)).sum::<u128>()
            + u128::from(unassigned);
        if total > 0 && total <= u128::from(u64::MAX) {
            for (id, got) in &a.workloads {
                let w: u128 = act.iter().filter(|(k, _)| k == id).map(|(_, x)| u128::from(*x)).sum();
                let exact = active * w;
                let lo = exact / total;
                prop_assert!(u128::from(got.0) == lo || u128::from(got.0) == lo + 1,
                    "{id}: {} vs {lo}", got.0);
            }
        }
    }

    #[test]
    fn the_order_of_workloads_does_not_matter(
        e in energy(),
        idle in energy(),
        act in activity(),
        unassigned in 0..1_000_000u64,
        max in 0usize..20,
        seed in any::<u64>(),
    ) {
        let a = attribute(Microjoules(e), Microjoules(idle), &act, unassigned, max);
        let mut shuffled = act.clone();
        // A deterministic shuffle from the seed (Fisher-Yates, xorshift).
        let mut s = seed | 1;
        for i in (1..shuffled.len()).rev() {
            s ^= s << 13; s ^= s >> 7; s ^= s << 17;
            shuffled.swap(i, (s % (i as u64 + 1)) as usize);
        }
        let b = attribute(Microjoules(e), Microjoules(idle), &shuffled, unassigned, max);
        prop_assert_eq!(a, b);
    }

    #[test]
    fn at_most_max_workloads_are_kept_and_they_are_the_largest(
        e in energy(),
        act in activity(),
        max in 0usize..20,
    ) {
        let all = attribute(Microjoules(e), Microjoules(0), &act, 0, usize::MAX);
        let a = attribute(Microjoules(e), Microjoules(0), &act, 0, max);
        prop_assert!(a.workloads.len() <= max);
        prop_assert_eq!(a.workloads.len() + a.other_count, all.workloads.len());
        // The kept ones are the first of the full ranking; the rest is other.
        prop_assert_eq!(&a.workloads[..], &all.workloads[..a.workloads.len()]);
        let rest: u64 = all.workloads[a.workloads.len()..].iter().map(|(_, x)| x.0).sum();
        prop_assert_eq!(a.other.0, rest);
        prop_assert_eq!(a.unattributed, all.unattributed);
        // Ranked: energy descending, ties by id.
        for w in all.workloads.windows(2) {
            prop_assert!(w[0].1 > w[1].1 || (w[0].1 == w[1].1 && w[0].0 < w[1].0));
        }
    }
}
