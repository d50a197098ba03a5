//! The ledger as its readers see it: [`LedgerRead`] (energy, registers,
//! hand readings, hosts, known losses) and [`LedgerWrite`] (hand readings,
//! imported histories, retention), in the words of the domain, not SQL.
//!
//! Every read the facility figures, documents, signals, metrics and the
//! API make goes through these traits, so a second backend implements
//! them and no caller changes. The SQLite backend is in
//! [`crate::sqlite`]; the ingest write path ([`crate::ingest`]) commits
//! groups of messages in its own transactions and is not part of them.
//!
//! The traits are object safe (callers hold `&dyn LedgerRead`), name no
//! backend type, and report failures as [`LedgerError`].

use crate::store::losses::{Gap, Losses};
use crate::store::manual::ManualReading;
use crate::store::{Amount, EnergyRow, HostRow, Pending, Resolution, Total};
use std::collections::{HashMap, HashSet};
use vigie_energy::Microjoules;
use vigie_protocol::GaugeQuantity;

/// A failure of the ledger's backend, boxed as the backend reported it.
pub type BackendError = Box<dyn std::error::Error + Send + Sync>;

/// Why a ledger read or write failed.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The backend failed (I/O, a lock held past its timeout, a corrupt
    /// file, a full disk): the message is the backend's own. Retrying
    /// later may succeed, unless the store is corrupt.
    #[error(transparent)]
    Backend(BackendError),
    /// A write the ledger refuses (the message says which value and why);
    /// nothing of that call is stored. Retrying the same call fails again.
    #[error("{0}")]
    Refused(String),
}

impl LedgerError {
    /// Wraps any backend failure (for callers that join the ledger's reads
    /// with another store's, such as the grid points).
    pub fn backend(e: impl Into<BackendError>) -> Self {
        LedgerError::Backend(e.into())
    }
}

/// The ledger's reads, in the words of the domain.
pub trait LedgerRead {
    /// Energy of buckets at `res` starting in `[from_ms, to_ms)`, summed
    /// per host, and per sensor and/or per bucket when asked, ordered by
    /// host, sensor, bucket.
    fn energy(
        &self,
        res: Resolution,
        from_ms: i64,
        to_ms: i64,
        by_sensor: bool,
        by_bucket: bool,
    ) -> Result<Vec<EnergyRow>, LedgerError>;

    /// Energy over `[from_ms, to_ms)` (whole minutes), per host and per
    /// sensor when asked: whole hours at hour resolution, the partial hours
    /// at the edges at minute resolution, from one consistent snapshot.
    fn energy_span(
        &self,
        from_ms: i64,
        to_ms: i64,
        by_sensor: bool,
    ) -> Result<Vec<EnergyRow>, LedgerError>;

    /// The buckets at `res` of one (`host`, `sensor`) starting in
    /// `[from_ms, to_ms)`, in time order; the cost is that sensor's
    /// buckets in the period, whatever the size of the ledger.
    fn sensor_buckets(
        &self,
        res: Resolution,
        host: &str,
        sensor: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<(i64, Amount)>, LedgerError>;

    /// Energy of every (host, sensor) over all time, by host and sensor.
    fn totals(&self) -> Result<Vec<(String, String, Total)>, LedgerError>;

    /// Every host the ledger knows, by name.
    fn hosts(&self) -> Result<Vec<HostRow>, LedgerError>;

    /// Per host, the sensors its inventory keeps out of its totals
    /// (components and alternatives of another sensor).
    fn uncounted_sensors(&self) -> Result<HashMap<String, HashSet<String>>, LedgerError>;

    /// [`LedgerRead::uncounted_sensors`] of one host.
    fn uncounted_sensors_of(&self, host: &str) -> Result<HashSet<String>, LedgerError>;

    /// Every (host, sensor) with register values (heat and water meters,
    /// temperatures), in order.
    fn register_sensors(&self) -> Result<Vec<(String, String)>, LedgerError>;

    /// Register values of (`host`, `sensor`, `quantity`) in `[from_ms,
    /// to_ms]`, with the last one before and the first one after, in time
    /// order: `(at_ms, value)`.
    fn registers(
        &self,
        host: &str,
        sensor: &str,
        quantity: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<(i64, f64)>, LedgerError>;

    /// Hand readings of `meter` overlapping `[from_ms, to_ms)`, by start:
    /// `(start_ms, end_ms, amount, estimated)` (µJ or litres).
    fn manual_samples(
        &self,
        meter: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<(i64, i64, u64, bool)>, LedgerError>;

    /// How many rejected messages are kept in quarantine.
    fn quarantine_count(&self) -> Result<i64, LedgerError>;

    /// When the ledger's data starts (energy, hand readings or registers,
    /// from 2000 on), if it has any.
    fn first_data_ms(&self) -> Result<Option<i64>, LedgerError>;

    /// `host`'s known losses (holes in time, missing energy); missing
    /// energy leaves out the `uncounted` sensors.
    fn host_losses(
        &self,
        host: &str,
        uncounted: Option<&HashSet<String>>,
    ) -> Result<Losses, LedgerError>;

    /// Hosts with any known loss.
    fn hosts_with_losses(&self) -> Result<Vec<String>, LedgerError>;

    /// Missing energy of `host` per (epoch, sensor), µJ, where some is
    /// missing.
    fn missing_by_sensor(&self, host: &str) -> Result<Vec<(u64, String, u64)>, LedgerError>;

    /// The holes in `host`'s data ending in `[from_ms, to_ms)`, oldest
    /// first, at most `limit`; the bool says whether more were left out.
    fn gap_report(
        &self,
        host: &str,
        from_ms: i64,
        to_ms: i64,
        limit: usize,
    ) -> Result<(Vec<Gap>, bool), LedgerError>;
}

/// Adds an imported history's buckets and register values, inside the one
/// transaction of [`LedgerWrite::write_history`]. What the ledger already
/// holds is kept: a history never overwrites.
pub trait HistorySink {
    /// Measured energy of the hour bucket starting at `bucket_ms`, unless
    /// the ledger has it already.
    fn hour(
        &mut self,
        host: &str,
        sensor: &str,
        bucket_ms: i64,
        measured: Microjoules,
    ) -> Result<(), LedgerError>;

    /// Measured energy of the minute bucket starting at `bucket_ms`, unless
    /// the ledger has it already. The hour holding it is the caller's to
    /// write too (buckets of both widths hold every reading).
    fn minute(
        &mut self,
        host: &str,
        sensor: &str,
        bucket_ms: i64,
        measured: Microjoules,
    ) -> Result<(), LedgerError>;

    /// A register's value at `at_ms`, unless one is stored at that time.
    fn register(
        &mut self,
        host: &str,
        sensor: &str,
        quantity: GaugeQuantity,
        at_ms: i64,
        value: f64,
    ) -> Result<(), LedgerError>;

    /// Hour buckets written so far (those the ledger did not have).
    fn hour_rows(&self) -> usize;
}

/// The ledger's writes outside the ingest path.
pub trait LedgerWrite {
    /// Stores hand readings of `meter` in one transaction; refuses them all
    /// ([`LedgerError::Refused`]) if one overlaps a stored reading or
    /// another of the call, ends before it starts, or is too large.
    fn add_manual(
        &mut self,
        meter: &str,
        readings: &[ManualReading],
        now_ms: i64,
    ) -> Result<(), LedgerError>;

    /// Runs `f` with a [`HistorySink`] in one transaction, committed when
    /// `f` returns `Ok` and rolled back otherwise. See [`write_history`]
    /// for a version that returns what `f` returns.
    fn write_history(
        &mut self,
        f: &mut dyn FnMut(&mut dyn HistorySink) -> Result<(), LedgerError>,
    ) -> Result<(), LedgerError>;

    /// Adds `pending`'s energy to its minute and hour buckets in one
    /// transaction, as a committed group of messages does (summed into
    /// what the buckets hold, clamped at `i64::MAX` µJ a bucket): imports
    /// with estimated parts, and tests' ledgers. The caller keeps minutes
    /// and hours consistent (every minute's energy in its hour too).
    fn add_energy(&mut self, pending: &Pending) -> Result<(), LedgerError>;

    /// Deletes the minute buckets of the whole hours before `before_ms`
    /// (hours keep their buckets); returns the buckets deleted.
    fn prune_minutes(&mut self, before_ms: i64) -> Result<u64, LedgerError>;
}

/// [`LedgerWrite::write_history`] returning what `f` returns.
pub fn write_history<T>(
    ledger: &mut dyn LedgerWrite,
    f: impl FnOnce(&mut dyn HistorySink) -> Result<T, LedgerError>,
) -> Result<T, LedgerError> {
    let mut f = Some(f);
    let mut out = None;
    ledger.write_history(&mut |w| {
        if let Some(f) = f.take() {
            out = Some(f(w)?);
        }
        Ok(())
    })?;
    out.ok_or_else(|| LedgerError::Refused("the history writer was not run".into()))
}
