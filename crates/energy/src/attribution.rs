//! Energy per workload: one interval's energy split into idle, the
//! workloads' shares, and what no workload accounts for, exactly.
//!
//! The model, for one sensor and one interval:
//!
//! 1. **Idle** is the baseline the host draws doing nothing: a configured
//!    power times the interval, or one learned from the lowest interval
//!    power seen ([`LearnedIdle`]). It is clamped to the interval's energy,
//!    so idle never exceeds what was metered. Idle stays with the host as
//!    its own line; no workload is charged for it.
//! 2. **Active** energy is the rest, apportioned in proportion to each
//!    workload's activity over the interval (CPU time in µs for CPU energy,
//!    GPU use for a GPU's energy) with the exact rule of
//!    [`apportion`](crate::split::apportion).
//! 3. Activity that belongs to no workload (the kernel, processes in the
//!    root cgroup, cgroups that vanished before their last read) takes its
//!    share of active energy as **unattributed**. When no activity at all
//!    was seen, the whole active energy is unattributed.
//! 4. **Cardinality**: the `max_workloads` workloads with the most energy
//!    are kept (ties broken by id); the rest are summed into **other**.
//!
//! Conservation is exact in integer µJ:
//! `Σ workloads + other + idle + unattributed == energy`. The result does not
//! depend on the order the workloads are given in: they are merged by id
//! (duplicates add) and sorted before apportioning.

use crate::split::apportion;
use crate::units::{Microjoules, Watts};

/// How the idle baseline of an interval is known.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum IdleBaseline {
    /// A constant power, W (configured: a vendor's idle figure, a measured
    /// quiet hour).
    Power(Watts),
    /// An energy for this very interval, µJ.
    Energy(Microjoules),
}

impl IdleBaseline {
    /// The baseline's energy over an interval of `duration_ms`: W × ms is
    /// mJ, so µJ = round(W × ms × 1000). Negative, NaN or infinite power
    /// and negative durations give zero; past `u64::MAX` it saturates (and
    /// is clamped to the metered energy by [`attribute`] anyway).
    pub fn energy(self, duration_ms: i64) -> Microjoules {
        match self {
            IdleBaseline::Energy(e) => e,
            IdleBaseline::Power(w) => {
                if duration_ms <= 0 || !w.0.is_finite() || w.0 <= 0.0 {
                    return Microjoules::ZERO;
                }
                let uj = (w.0 * duration_ms as f64 * 1000.0).round();
                // `as` saturates at u64::MAX, which the clamp then bounds.
                Microjoules(uj as u64)
            }
        }
    }
}

/// An idle baseline learned from the intervals seen: the lowest average
/// power of any interval observed so far, in integer mW (µJ / ms), so the
/// baseline is deterministic. Before any interval it is zero (nothing is
/// called idle until a quiet interval has been seen). Feed it an interval
/// after attributing that interval, so an interval never sets its own
/// baseline.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LearnedIdle {
    min_mw: Option<u64>,
}

impl LearnedIdle {
    /// Learns from one interval; empty intervals are ignored.
    pub fn observe(&mut self, energy: Microjoules, duration_ms: i64) {
        let Ok(ms) = u64::try_from(duration_ms) else {
            return;
        };
        if ms == 0 {
            return;
        }
        let mw = energy.0 / ms;
        self.min_mw = Some(self.min_mw.map_or(mw, |m| m.min(mw)));
    }

    /// The lowest power seen, W (`None` before any interval).
    pub fn power(&self) -> Option<Watts> {
        self.min_mw.map(|mw| Watts(mw as f64 / 1000.0))
    }

    /// The baseline for an interval of `duration_ms`, exact in µJ.
    pub fn baseline(&self, duration_ms: i64) -> IdleBaseline {
        let ms = u64::try_from(duration_ms).unwrap_or(0);
        IdleBaseline::Energy(Microjoules(self.min_mw.unwrap_or(0).saturating_mul(ms)))
    }
}

/// One interval's energy, split. `workloads` are the kept ones, most energy
/// first (ties by id); `Σ workloads + other + idle + unattributed` equals
/// the energy split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribution<K> {
    /// Kept workloads with their energy, each above zero.
    pub workloads: Vec<(K, Microjoules)>,
    /// Energy of the workloads past the cardinality bound.
    pub other: Microjoules,
    /// How many workloads `other` sums.
    pub other_count: usize,
    /// The idle baseline, clamped to the energy.
    pub idle: Microjoules,
    /// Active energy no workload accounts for.
    pub unattributed: Microjoules,
}

impl<K> Attribution<K> {
    /// The sum of every line: equals the energy that was split.
    pub fn total(&self) -> u128 {
        self.workloads
            .iter()
            .map(|(_, e)| u128::from(e.0))
            .chain([self.other.0, self.idle.0, self.unattributed.0].map(u128::from))
            .sum()
    }
}

/// Splits `energy` (one sensor, one interval) as the module describes:
/// `idle` (the interval's baseline, see [`IdleBaseline::energy`]) clamped
/// to `energy`; the rest apportioned over `activity`
/// (workload id, activity amount, e.g. CPU µs) and `unassigned` (activity
/// of no workload, whose share is unattributed); the top `max_workloads`
/// by energy kept, the rest summed into `other`.
///
/// ```
/// use vigie_energy::{attribute, Microjoules};
/// // 10 J, 4 J of it idle; CPU time 3:1:2 with 2 of it the kernel's.
/// let a = attribute(
///     Microjoules(10_000_000),
///     Microjoules(4_000_000),
///     &[("web", 3), ("db", 1)],
///     2,
///     1,
/// );
/// assert_eq!(a.workloads, vec![("web", Microjoules(3_000_000))]);
/// assert_eq!(a.other, Microjoules(1_000_000));
/// assert_eq!(a.unattributed, Microjoules(2_000_000));
/// assert_eq!(a.idle, Microjoules(4_000_000));
/// assert_eq!(a.total(), 10_000_000);
/// ```
pub fn attribute<K: Ord + Clone>(
    energy: Microjoules,
    idle: Microjoules,
    activity: &[(K, u64)],
    unassigned: u64,
    max_workloads: usize,
) -> Attribution<K> {
    // Idle ≤ energy always, whatever the baseline said.
    let idle = Microjoules(idle.0.min(energy.0));
    let active = Microjoules(energy.0 - idle.0);

    // Merge by id, sorted: the apportioning (and where its odd µJ land)
    // then depends only on the set of (id, amount), never on input order.
    let mut merged: Vec<(K, u64)> = activity.iter().filter(|(_, a)| *a > 0).cloned().collect();
    merged.sort_by(|a, b| a.0.cmp(&b.0));
    merged.dedup_by(|later, kept| {
        if later.0 == kept.0 {
            kept.1 = kept.1.saturating_add(later.1);
            true
        } else {
            false
        }
    });

    let mut weights: Vec<u64> = merged.iter().map(|(_, a)| *a).collect();
    weights.push(unassigned);
    let shares = apportion(active, &weights);
    let unattributed = if weights.iter().all(|&w| w == 0) {
        // No activity seen: nothing to apportion by.
        active
    } else {
        shares[merged.len()]
    };

    let mut ranked: Vec<(K, Microjoules)> = merged
        .into_iter()
        .zip(shares)
        .map(|((k, _), e)| (k, e))
        .filter(|(_, e)| e.0 > 0)
        .collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let rest = ranked.split_off(max_workloads.min(ranked.len()));
    // The rest sums to at most `active`, a u64.
    let other = Microjoules(rest.iter().map(|(_, e)| e.0).sum());
    Attribution {
        workloads: ranked,
        other,
        other_count: rest.len(),
        idle,
        unattributed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_is_clamped_to_the_energy() {
        let a = attribute(Microjoules(100), Microjoules(500), &[("a", 5)], 0, 10);
        assert_eq!(a.idle, Microjoules(100));
        assert!(a.workloads.is_empty());
        assert_eq!((a.unattributed, a.other), (Microjoules(0), Microjoules(0)));
    }

    #[test]
    fn no_activity_leaves_the_active_energy_unattributed() {
        let none: [(&str, u64); 0] = [];
        for act in [&none[..], &[("a", 0)][..]] {
            let a = attribute(Microjoules(1_000), Microjoules(300), act, 0, 10);
            assert_eq!(a.unattributed, Microjoules(700));
            assert_eq!(a.idle, Microjoules(300));
            assert!(a.workloads.is_empty());
        }
    }

    #[test]
    fn shares_follow_activity_and_odd_microjoules_land_by_id() {
        let a = attribute(
            Microjoules(10),
            Microjoules::ZERO,
            &[("c", 1), ("a", 1), ("b", 1)],
            0,
            10,
        );
        // Apportioned in id order a, b, c: 3, 3, 4; ranked by energy.
        assert_eq!(
            a.workloads,
            vec![
                ("c", Microjoules(4)),
                ("a", Microjoules(3)),
                ("b", Microjoules(3))
            ]
        );
    }

    #[test]
    fn duplicates_add_up() {
        let a = attribute(
            Microjoules(90),
            Microjoules::ZERO,
            &[("a", 1), ("b", 1), ("a", 1)],
            0,
            10,
        );
        assert_eq!(
            a.workloads,
            vec![("a", Microjoules(60)), ("b", Microjoules(30))]
        );
    }

    #[test]
    fn power_baselines() {
        assert_eq!(
            IdleBaseline::Power(Watts(40.0)).energy(1_000),
            Microjoules(40_000_000)
        );
        assert_eq!(
            IdleBaseline::Power(Watts(-1.0)).energy(1_000),
            Microjoules(0)
        );
        assert_eq!(
            IdleBaseline::Power(Watts(f64::NAN)).energy(1_000),
            Microjoules(0)
        );
        assert_eq!(IdleBaseline::Power(Watts(5.0)).energy(-3), Microjoules(0));
        let mut l = LearnedIdle::default();
        assert_eq!(l.baseline(1_000), IdleBaseline::Energy(Microjoules(0)));
        l.observe(Microjoules(50_000_000), 1_000); // 50 W
        l.observe(Microjoules(80_000_000), 2_000); // 40 W
        l.observe(Microjoules(90_000_000), 1_000); // 90 W
        l.observe(Microjoules(1), 0); // ignored
        assert_eq!(l.power(), Some(Watts(40.0)));
        assert_eq!(
            l.baseline(500),
            IdleBaseline::Energy(Microjoules(20_000_000))
        );
    }
}
