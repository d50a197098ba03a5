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
//! - [`integrate`]: energy from power samples (the trapezoid rule), for
//!   sources without an energy register;
//! - [`split`]: exact, energy-conserving apportioning of an interval's energy
//!   over aligned time buckets;
//! - [`attribution`]: one interval's energy split into idle, workloads
//!   (by CPU or GPU activity), `other` past a cardinality bound and
//!   unattributed, exactly;
//! - [`ledger`]: the reference in-memory model of the collector's ledger,
//!   deduplicating batches and summing energy per key and bucket;
//! - [`coverage`]: series over time and how much of a period they cover
//!   (measured, estimated, missing), with the gap rules figures apply;
//! - [`kpi`]: facility indicators (PUE, pPUE, REF, ERF, CER, CUE, WUE) as
//!   [`Figure`]s that carry their inputs and coverage;
//! - [`scope2`](mod@scope2): hourly GHG Protocol Scope 2, location- and
//!   market-based, and the hourly carbon-free-energy score;
//! - [`heat`]: measured heat-reuse figures and the heat-reuse potential
//!   study for permit files;
//! - [`heat_cba`]: the waste-heat cost-benefit analysis (NPV, payback,
//!   CO2 avoided against a reference heat source);
//! - [`quantities`]: water, temperature and planning-scale energy;
//! - [`calendar`]: the one civil calendar (UTC dates, day numbers) and the
//!   RFC 3339 shapes, one function per precision.
//!
//! Invariant: the crate does no I/O and never reads a clock. Time is always
//! an argument, as `i64` Unix milliseconds. Energy is integer microjoules so
//! that sums are exact and independent of order.

pub mod attribution;
pub mod calendar;
pub mod counter;
pub mod coverage;
pub mod heat;
pub mod heat_cba;
pub mod integrate;
pub mod kpi;
pub mod ledger;
pub mod quantities;
pub mod scope2;
pub mod split;
pub mod units;

pub use attribution::{Attribution, IdleBaseline, LearnedIdle, attribute};
pub use counter::{CounterError, CounterStep, Judged, WrappingCounter, counter_delta, judge_step};
pub use coverage::{
    Amount, Coverage, GapRule, InputUsed, Period, Quality, Sample, Series, SeriesError, Status,
};
pub use heat::{
    Assumption, AssumptionValue, Cooling, CoolingTechnology, CopModel, FacilityEnergy, HeatError,
    HeatMeterSample, HeatPump, HeatStudy, HeatStudyInput, MeasuredHeat, Offtaker, heat_potential,
    measured_heat,
};
pub use integrate::integrate_power;
pub use kpi::{
    Figure, Indicator, PueCategory, carbon_usage_effectiveness, cooling_efficiency_ratio,
    energy_reuse_factor, partial_pue, pue, renewable_energy_factor, water_usage_effectiveness,
};
pub use ledger::{Applied, BatchId, Interval, Ledger, LedgerError};
pub use quantities::{Celsius, KilowattHours, Litres};
pub use scope2::{
    AverageFactor, CfeScore, GridFactorSource, GridFactors, Instrument, InstrumentKind,
    InstrumentUse, MAX_HOURS, MarginalFactor, MarketInputs, MarketSource, Origin, Scope2Basis,
    Scope2Error, Scope2Hour, Scope2Report, SupplierFactor, Tranche, Volume, scope2,
};
pub use split::{HOUR_MS, MAX_BUCKETS, MINUTE_MS, SplitError, apportion, split_interval};
pub use units::{
    GramsCo2e, GramsPerKwh, Microjoules, MicrojoulesSum, Watts, average_power, emissions,
};
