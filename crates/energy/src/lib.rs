//! Pure energy accounting for vigie.
//!
//! This crate holds the arithmetic every other part of vigie relies on, kept
//! in one place so that each sensor backend does not grow its own copy (and
//! its own unit bug):
//!
//! - [`units`]: typed quantities ([`Microjoules`], [`Watts`], [`GramsCo2e`],
//!   [`GramsPerKwh`]) and the conversions between them;
//! - [`counter`]: differences of hardware energy counters that wrap (RAPL,
//!   NVML, SNMP Counter32), as a pure function and a stateful wrapper;
//! - [`split`]: exact, energy-conserving apportioning of an interval's energy
//!   over aligned time buckets;
//! - [`ledger`]: the reference in-memory model of the collector's ledger,
//!   deduplicating batches and summing energy per key and bucket.
//!
//! Invariant: the crate does no I/O and never reads a clock. Time is always
//! an argument, as `i64` Unix milliseconds. Energy is integer microjoules so
//! that sums are exact and independent of order.

pub mod counter;
pub mod ledger;
pub mod split;
pub mod units;

pub use counter::{CounterError, CounterStep, WrappingCounter, counter_delta};
pub use ledger::{Applied, BatchId, Interval, Ledger, LedgerError};
pub use split::{HOUR_MS, MAX_BUCKETS, MINUTE_MS, SplitError, split_interval};
pub use units::{GramsCo2e, GramsPerKwh, Microjoules, Watts, average_power, emissions};
