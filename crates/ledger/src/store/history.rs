//! Writing a history into the ledger in one transaction: hour and minute
//! buckets of measured energy and register values, as an importer (the
//! demo's simulated year) has them. Rows already there are kept (a
//! history never overwrites what the ledger holds).

use super::StoreError;
use rusqlite::{Connection, Statement, params};
use vigie_energy::Microjoules;
use vigie_protocol::GaugeQuantity;

/// Adds buckets and register values within one transaction (see
/// [`write`]).
pub struct HistoryWriter<'t> {
    hour: Statement<'t>,
    minute: Statement<'t>,
    register: Statement<'t>,
    hour_rows: usize,
}

/// A bucket amount as the ledger holds it (clamped at `i64::MAX`, like
/// the ingest's bucket upserts).
fn stored(e: Microjoules) -> i64 {
    i64::try_from(e.0).unwrap_or(i64::MAX)
}

impl HistoryWriter<'_> {
    /// Measured energy of an hour bucket starting at `bucket_ms`, unless
    /// the ledger has that bucket already.
    pub fn hour(
        &mut self,
        host: &str,
        sensor: &str,
        bucket_ms: i64,
        measured: Microjoules,
    ) -> Result<(), StoreError> {
        self.hour_rows += self
            .hour
            .execute(params![host, sensor, bucket_ms, stored(measured)])?;
        Ok(())
    }

    /// Measured energy of a minute bucket starting at `bucket_ms`, unless
    /// the ledger has that bucket already. The hour holding it is the
    /// caller's to write too (buckets of both widths hold every reading).
    pub fn minute(
        &mut self,
        host: &str,
        sensor: &str,
        bucket_ms: i64,
        measured: Microjoules,
    ) -> Result<(), StoreError> {
        self.minute
            .execute(params![host, sensor, bucket_ms, stored(measured)])?;
        Ok(())
    }

    /// A register's value at `at_ms`, unless one is stored at that time.
    pub fn register(
        &mut self,
        host: &str,
        sensor: &str,
        quantity: GaugeQuantity,
        at_ms: i64,
        value: f64,
    ) -> Result<(), StoreError> {
        self.register
            .execute(params![host, sensor, quantity.as_str(), at_ms, value])?;
        Ok(())
    }

    /// Hour buckets written so far (those the ledger did not have).
    pub fn hour_rows(&self) -> usize {
        self.hour_rows
    }
}

/// Runs `f` with a [`HistoryWriter`] in one transaction, committed when
/// `f` returns `Ok` (rolled back otherwise).
pub fn write<T, E: From<StoreError>>(
    conn: &mut Connection,
    f: impl FnOnce(&mut HistoryWriter<'_>) -> Result<T, E>,
) -> Result<T, E> {
    let tx = conn.transaction()?;
    let out = {
        let mut w = HistoryWriter {
            hour: tx.prepare(
                "INSERT OR IGNORE INTO energy_hour (host, sensor, bucket_ms, measured_uj, estimated_uj) VALUES (?1, ?2, ?3, ?4, 0)",
            )?,
            minute: tx.prepare(
                "INSERT OR IGNORE INTO energy_minute (host, sensor, bucket_ms, measured_uj, estimated_uj) VALUES (?1, ?2, ?3, ?4, 0)",
            )?,
            register: tx.prepare(
                "INSERT OR IGNORE INTO registers (host, sensor, quantity, at_ms, value) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?,
            hour_rows: 0,
        };
        f(&mut w)?
    };
    tx.commit()?;
    Ok(out)
}
