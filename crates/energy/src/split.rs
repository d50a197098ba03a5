//! Apportioning an interval's energy over aligned time buckets.
//!
//! A reading covers `[start_ms, end_ms)`; reports want energy per minute or
//! per hour. [`split_interval`] shares the energy in proportion to overlap
//! and conserves it to the microjoule, so totals do not drift however the
//! readings are cut.

use crate::units::Microjoules;

/// One minute in milliseconds.
pub const MINUTE_MS: i64 = 60_000;
/// One hour in milliseconds.
pub const HOUR_MS: i64 = 3_600_000;
/// Most buckets one interval may span (about 1.9 years of minutes). Bounds the
/// memory a single reading from the network can make the collector allocate.
pub const MAX_BUCKETS: u64 = 1_000_000;

/// An interval or bucket width that cannot be split. Not retryable with the
/// same arguments.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum SplitError {
    /// The interval ends before it starts.
    #[error("interval ends at {end_ms} ms, before its start at {start_ms} ms")]
    EndBeforeStart {
        /// Start of the interval, Unix ms.
        start_ms: i64,
        /// End of the interval, Unix ms.
        end_ms: i64,
    },
    /// The bucket width is not positive.
    #[error("bucket width must be positive, got {0} ms")]
    BadBucket(i64),
    /// The interval spans more than [`MAX_BUCKETS`] buckets.
    #[error(
        "interval [{start_ms}, {end_ms}) spans more than {MAX_BUCKETS} buckets of {bucket_ms} ms"
    )]
    TooManyBuckets {
        /// Start of the interval, Unix ms.
        start_ms: i64,
        /// End of the interval, Unix ms.
        end_ms: i64,
        /// Bucket width, ms.
        bucket_ms: i64,
    },
    /// The bucket containing the timestamp would start before `i64::MIN` ms.
    #[error("no bucket of {bucket_ms} ms for timestamp {t_ms} ms")]
    OutOfRange {
        /// The timestamp, Unix ms.
        t_ms: i64,
        /// Bucket width, ms.
        bucket_ms: i64,
    },
}

/// Start of the bucket of width `bucket_ms` that contains `t_ms`, rounding
/// towards negative infinity so that negative timestamps align too.
fn bucket_start(t_ms: i64, bucket_ms: i64) -> Result<i64, SplitError> {
    t_ms.div_euclid(bucket_ms)
        .checked_mul(bucket_ms)
        .ok_or(SplitError::OutOfRange { t_ms, bucket_ms })
}

/// Splits `energy`, spent over `[start_ms, end_ms)`, across buckets of width
/// `bucket_ms` aligned on multiples of `bucket_ms` (bucket start =
/// `floor(t / bucket_ms) * bucket_ms`), in proportion to each bucket's overlap.
///
/// Returns `(bucket_start_ms, share)` pairs in increasing bucket order.
/// Buckets whose share is zero are omitted, so zero energy gives an empty
/// vector. The shares sum to `energy` exactly, and each is within 1 µJ of
/// its exact real share: share *i* is `floor(E·cumᵢ/T) − floor(E·cumᵢ₋₁/T)`,
/// where `cumᵢ` is the overlap of the first *i* buckets and `T` the length.
/// A zero-length interval puts all the energy in the bucket containing
/// `start_ms`.
///
/// # Errors
///
/// [`SplitError::BadBucket`] if `bucket_ms <= 0`,
/// [`SplitError::EndBeforeStart`] if `end_ms < start_ms`,
/// [`SplitError::TooManyBuckets`] past [`MAX_BUCKETS`], and
/// [`SplitError::OutOfRange`] for a timestamp within one bucket of `i64::MIN`.
///
/// # Examples
///
/// ```
/// use vigie_energy::{split_interval, Microjoules, MINUTE_MS};
///
/// // 90 s from 00:00:30: a third in the first minute, two thirds in the next.
/// let shares = split_interval(30_000, 120_000, Microjoules(900), MINUTE_MS)?;
/// assert_eq!(shares, vec![(0, Microjoules(300)), (MINUTE_MS, Microjoules(600))]);
/// # Ok::<(), vigie_energy::SplitError>(())
/// ```
pub fn split_interval(
    start_ms: i64,
    end_ms: i64,
    energy: Microjoules,
    bucket_ms: i64,
) -> Result<Vec<(i64, Microjoules)>, SplitError> {
    if bucket_ms <= 0 {
        return Err(SplitError::BadBucket(bucket_ms));
    }
    if end_ms < start_ms {
        return Err(SplitError::EndBeforeStart { start_ms, end_ms });
    }
    let first = bucket_start(start_ms, bucket_ms)?;
    if start_ms == end_ms {
        return Ok(if energy == Microjoules::ZERO {
            Vec::new()
        } else {
            vec![(first, energy)]
        });
    }
    // i128 throughout: interval lengths reach 2^64 - 1 and bucket ends may
    // pass i64::MAX.
    let (start, end, width) = (
        i128::from(start_ms),
        i128::from(end_ms),
        i128::from(bucket_ms),
    );
    let last = i128::from(bucket_start(end_ms - 1, bucket_ms)?);
    let count = (last - i128::from(first)) / width + 1;
    if count > i128::from(MAX_BUCKETS) {
        return Err(SplitError::TooManyBuckets {
            start_ms,
            end_ms,
            bucket_ms,
        });
    }

    // E < 2^64 and cum <= total < 2^64, so E * cum < 2^128: no overflow.
    let e = u128::from(energy.0);
    let total = (end - start).unsigned_abs();
    let mut shares = Vec::new();
    let mut cum: u128 = 0;
    let mut allotted: u128 = 0;
    let mut b = i128::from(first);
    while b <= last {
        let overlap = (end.min(b + width) - start.max(b)).unsigned_abs();
        cum += overlap;
        let upto = e * cum / total;
        let share = upto - allotted;
        allotted = upto;
        if share > 0 {
            // Both fit: b lies in [first, last], and share <= E.
            shares.push((b as i64, Microjoules(share as u64)));
        }
        b += width;
    }
    Ok(shares)
}

/// Apportions `energy` over `weights` in proportion, exactly: the shares
/// sum to `energy` (when any weight is positive) and each is within 1 µJ
/// of its real share. The same cumulative rule as [`split_interval`]:
/// share *i* is `floor(E·cumᵢ/W) − floor(E·cumᵢ₋₁/W)`, so the result depends
/// on the order of `weights` only through where the odd microjoules land;
/// callers that need order independence sort first. All weights zero (or
/// none) gives all-zero shares: the caller decides where that energy goes.
///
/// ```
/// use vigie_energy::{split::apportion, Microjoules};
/// assert_eq!(
///     apportion(Microjoules(10), &[1, 1, 1]),
///     vec![Microjoules(3), Microjoules(3), Microjoules(4)]
/// );
/// ```
pub fn apportion(energy: Microjoules, weights: &[u64]) -> Vec<Microjoules> {
    let mut total: u128 = weights.iter().map(|&w| u128::from(w)).sum();
    if total == 0 {
        return vec![Microjoules::ZERO; weights.len()];
    }
    // E · cum must fit in u128: E < 2^64, so keep the total below 2^64 by
    // scaling the weights down (only past 2^64 µs of CPU time, never in
    // practice; the shares stay exact, only their proportions coarsen).
    let mut shift = 0;
    while total > u128::from(u64::MAX) {
        shift += 1;
        total = weights.iter().map(|&w| u128::from(w >> shift)).sum();
    }
    let e = u128::from(energy.0);
    let mut cum: u128 = 0;
    let mut allotted: u128 = 0;
    weights
        .iter()
        .map(|&w| {
            cum += u128::from(w >> shift);
            let upto = e * cum / total;
            let share = upto - allotted;
            allotted = upto;
            // share <= E.
            Microjoules(share as u64)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors() {
        assert_eq!(
            split_interval(0, 10, Microjoules(1), 0),
            Err(SplitError::BadBucket(0))
        );
        assert_eq!(
            split_interval(0, 10, Microjoules(1), -60),
            Err(SplitError::BadBucket(-60))
        );
        assert_eq!(
            split_interval(10, 9, Microjoules(1), 60),
            Err(SplitError::EndBeforeStart {
                start_ms: 10,
                end_ms: 9
            })
        );
        assert_eq!(
            split_interval(0, i64::MAX, Microjoules(1), MINUTE_MS),
            Err(SplitError::TooManyBuckets {
                start_ms: 0,
                end_ms: i64::MAX,
                bucket_ms: MINUTE_MS
            })
        );
        assert_eq!(
            split_interval(i64::MIN + 1, i64::MIN + 2, Microjoules(1), 10),
            Err(SplitError::OutOfRange {
                t_ms: i64::MIN + 1,
                bucket_ms: 10
            })
        );
    }

    #[test]
    fn exact_bucket_limit_is_accepted() -> Result<(), SplitError> {
        let n = MAX_BUCKETS as i64;
        let shares = split_interval(0, n, Microjoules(n as u64), 1)?;
        assert_eq!(shares.len(), MAX_BUCKETS as usize);
        assert!(split_interval(0, n + 1, Microjoules(1), 1).is_err());
        Ok(())
    }

    #[test]
    fn zero_length_goes_to_containing_bucket() -> Result<(), SplitError> {
        assert_eq!(
            split_interval(125_000, 125_000, Microjoules(7), MINUTE_MS)?,
            vec![(120_000, Microjoules(7))]
        );
        assert_eq!(
            split_interval(-1, -1, Microjoules(7), MINUTE_MS)?,
            vec![(-MINUTE_MS, Microjoules(7))]
        );
        assert_eq!(
            split_interval(5, 5, Microjoules::ZERO, MINUTE_MS)?,
            Vec::new()
        );
        Ok(())
    }

    #[test]
    fn within_one_bucket() -> Result<(), SplitError> {
        assert_eq!(
            split_interval(HOUR_MS + 1, 2 * HOUR_MS, Microjoules(99), HOUR_MS)?,
            vec![(HOUR_MS, Microjoules(99))]
        );
        Ok(())
    }

    #[test]
    fn negative_timestamps_align_downwards() -> Result<(), SplitError> {
        // [-90 s, +30 s): 30 s in [-120, -60), 60 s in [-60, 0), 30 s in [0, 60).
        assert_eq!(
            split_interval(-90_000, 30_000, Microjoules(1200), MINUTE_MS)?,
            vec![
                (-120_000, Microjoules(300)),
                (-60_000, Microjoules(600)),
                (0, Microjoules(300)),
            ]
        );
        Ok(())
    }

    #[test]
    fn remainders_are_apportioned_cumulatively() -> Result<(), SplitError> {
        // 10 µJ over three equal buckets: floor(10/3)=3, floor(20/3)-3=3, 10-6=4.
        assert_eq!(
            split_interval(0, 3, Microjoules(10), 1)?,
            vec![
                (0, Microjoules(3)),
                (1, Microjoules(3)),
                (2, Microjoules(4))
            ]
        );
        // 1 µJ over three buckets lands in the last; the zero shares are omitted.
        assert_eq!(
            split_interval(0, 3, Microjoules(1), 1)?,
            vec![(2, Microjoules(1))]
        );
        Ok(())
    }

    #[test]
    fn extreme_values_do_not_overflow() -> Result<(), SplitError> {
        let shares = split_interval(i64::MAX - 10, i64::MAX, Microjoules(u64::MAX), 4)?;
        let sum: u128 = shares.iter().map(|s| u128::from(s.1.0)).sum();
        assert_eq!(sum, u128::from(u64::MAX));
        assert_eq!(shares.last().map(|s| s.0), Some(i64::MAX - 3));
        Ok(())
    }
}
