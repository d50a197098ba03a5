//! Hand readings of the site's meters (the `manual_readings` table): an
//! amount over an interval, µJ for energy meters and litres for water
//! meters, stored in pieces that each fit a row.

use super::StoreError;
use rusqlite::{Connection, params};

/// Why readings were not stored.
#[derive(Debug, thiserror::Error)]
pub enum ManualError {
    /// The ledger.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// A reading that cannot be stored (the message says which and why);
    /// none of the call's readings is stored.
    #[error("{0}")]
    Refused(String),
}

/// Creates the manual-readings table.
pub fn init(conn: &Connection) -> Result<(), StoreError> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS manual_readings (
            meter TEXT NOT NULL, start_ms INTEGER NOT NULL, end_ms INTEGER NOT NULL,
            -- µJ for energy meters, litres for water meters
            amount INTEGER NOT NULL CHECK (amount >= 0),
            estimated INTEGER NOT NULL, entered_ms INTEGER NOT NULL, note TEXT,
            PRIMARY KEY (meter, start_ms), CHECK (end_ms > start_ms)
        ) WITHOUT ROWID;",
    )
}

/// One manual reading: an amount over an interval.
#[derive(Debug, Clone, PartialEq)]
pub struct ManualReading {
    /// Start, Unix ms.
    pub start_ms: i64,
    /// End, Unix ms.
    pub end_ms: i64,
    /// µJ (energy) or litres (water). Wide: a month of a large facility
    /// is past u64 µJ (5.1 GWh); [`add`] stores it in pieces.
    pub amount: u128,
    /// An estimate rather than a reading.
    pub estimated: bool,
    /// Free text (who read it, the index values).
    pub note: Option<String>,
}

/// Largest amount one stored row holds (2^62 µJ, about 1.28 GWh): an
/// `INTEGER` column is i64, and a meter's series adds rows as u64.
pub const MAX_PIECE: u128 = 1 << 62;

/// `[start_ms, end_ms)` holding `amount` cut into the fewest pieces of
/// equal duration (to the ms) whose amounts each fit [`MAX_PIECE`], the
/// amount spread in proportion to time exactly as reading it pro rata
/// would (the pieces sum to `amount`); `None` if that cannot be done (a
/// reading of absurd size, or too many pieces for its duration).
fn pieces(start_ms: i64, end_ms: i64, amount: u128) -> Option<Vec<(i64, i64, i64)>> {
    let span = u128::try_from(end_ms.checked_sub(start_ms)?).ok()?;
    // Half the limit per piece leaves room for rounding.
    let k = amount.div_ceil(MAX_PIECE / 2).max(1);
    if k > span || k > 1_000_000 {
        return None;
    }
    let at = |i: u128| -> Option<(i64, u128)> {
        let off = span * i / k;
        Some((
            start_ms + i64::try_from(off).ok()?,
            amount.checked_mul(off)? / span,
        ))
    };
    let mut out = Vec::with_capacity(usize::try_from(k).ok()?);
    let mut prev = at(0)?;
    for i in 1..=k {
        let next = at(i)?;
        out.push((prev.0, next.0, i64::try_from(next.1 - prev.1).ok()?));
        prev = next;
    }
    Some(out)
}

/// Stores manual readings of `meter` in one transaction; refuses them all
/// if any overlaps a stored one or another in the same call. A reading
/// larger than one row holds is stored as consecutive rows (see
/// [`pieces`]).
pub fn add(
    conn: &mut Connection,
    meter: &str,
    readings: &[ManualReading],
    now_ms: i64,
) -> Result<(), ManualError> {
    let tx = conn.transaction()?;
    {
        let mut overlap = tx.prepare_cached(
            "SELECT start_ms, end_ms FROM manual_readings WHERE meter = ?1 AND start_ms < ?3 AND end_ms > ?2 LIMIT 1",
        )?;
        let mut insert = tx.prepare_cached(
            "INSERT INTO manual_readings (meter, start_ms, end_ms, amount, estimated, entered_ms, note)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?;
        for r in readings {
            if r.end_ms <= r.start_ms {
                return Err(ManualError::Refused(format!(
                    "reading {}..{}: the end must come after the start",
                    r.start_ms, r.end_ms
                )));
            }
            if overlap.exists(params![meter, r.start_ms, r.end_ms])? {
                return Err(ManualError::Refused(format!(
                    "reading {}..{} overlaps one already stored for {meter}",
                    r.start_ms, r.end_ms
                )));
            }
            let Some(rows) = pieces(r.start_ms, r.end_ms, r.amount) else {
                return Err(ManualError::Refused(format!(
                    "reading {}..{}: amount {} is too large for its duration",
                    r.start_ms, r.end_ms, r.amount
                )));
            };
            for (start, end, amount) in rows {
                insert.execute(params![
                    meter,
                    start,
                    end,
                    amount,
                    r.estimated,
                    now_ms,
                    r.note
                ])?;
            }
        }
    }
    tx.commit()?;
    Ok(())
}

/// Stored readings of `meter` overlapping `[from_ms, to_ms)`, by start:
/// `(start, end, amount, estimated)`.
pub fn samples(
    conn: &Connection,
    meter: &str,
    from_ms: i64,
    to_ms: i64,
) -> Result<Vec<(i64, i64, u64, bool)>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT start_ms, end_ms, amount, estimated FROM manual_readings
         WHERE meter = ?1 AND start_ms < ?3 AND end_ms > ?2 ORDER BY start_ms",
    )?;
    let rows = stmt.query_map(params![meter, from_ms, to_ms], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? as u64, r.get(3)?))
    })?;
    rows.collect()
}
