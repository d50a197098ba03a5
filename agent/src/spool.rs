//! The durable spool: every batch is committed to disk before it is
//! published, and deleted only when the broker has acknowledged it. After a
//! reconnect or a restart the spool is replayed oldest first; the collector
//! dedupes on (host, epoch, seq), so a replay never double counts.

use crate::sampler::Checkpoint;
use rusqlite::{Connection, params};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use vigie_protocol::TelemetryBatch;

/// Spool failures: the disk or the database file. Fatal for the agent,
/// since a batch that cannot be spooled could be lost.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// SQLite error.
    #[error("spool database: {0}")]
    Db(#[from] rusqlite::Error),
    /// A stored batch no longer decodes (written by an incompatible version).
    #[error("spooled batch ({epoch}, {seq}) does not decode: {source}")]
    Decode {
        /// Epoch.
        epoch: u64,
        /// Sequence.
        seq: u64,
        /// Cause.
        source: serde_json::Error,
    },
}

/// Batches waiting for the broker's acknowledgement, in SQLite (WAL,
/// synchronous=FULL: a pushed batch survives a crash or power loss).
pub struct Spool {
    // A mutex makes the spool shareable across the agent's await points;
    // it is never contended.
    conn: Mutex<Connection>,
}

impl Spool {
    /// Opens or creates the spool file.
    pub fn open(path: &Path) -> Result<Self, SpoolError> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS spool (
                epoch INTEGER NOT NULL, seq INTEGER NOT NULL, payload BLOB NOT NULL,
                PRIMARY KEY (epoch, seq)
            ) WITHOUT ROWID;
            CREATE TABLE IF NOT EXISTS checkpoints (
                sensor TEXT PRIMARY KEY, boot_id TEXT NOT NULL,
                raw_uj INTEGER NOT NULL, at_ms INTEGER NOT NULL
            ) WITHOUT ROWID;",
        )?;
        Ok(Spool {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding it cannot leave SQLite inconsistent.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores a batch (its JSON payload) before it is published, together
    /// with where the counters stood once its readings were taken. One
    /// transaction: after a crash the checkpoints describe exactly the
    /// energy already spooled, so a restart neither loses nor repeats any.
    pub fn push(
        &self,
        batch: &TelemetryBatch,
        payload: &[u8],
        checkpoints: &[Checkpoint],
    ) -> Result<(), SpoolError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.prepare_cached(
            "INSERT OR REPLACE INTO spool (epoch, seq, payload) VALUES (?1, ?2, ?3)",
        )?
        .execute(params![batch.epoch as i64, batch.seq as i64, payload])?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT OR REPLACE INTO checkpoints (sensor, boot_id, raw_uj, at_ms) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for cp in checkpoints {
                stmt.execute(params![
                    cp.sensor,
                    batch.boot_id,
                    cp.raw_uj as i64,
                    cp.at_ms
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Checkpoints written during boot `boot_id` (those of an earlier boot
    /// are useless: the counters restarted from zero).
    pub fn checkpoints(&self, boot_id: &str) -> Result<Vec<Checkpoint>, SpoolError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT sensor, raw_uj, at_ms FROM checkpoints WHERE boot_id = ?1 ORDER BY sensor",
        )?;
        let rows = stmt.query_map([boot_id], |r| {
            Ok(Checkpoint {
                sensor: r.get(0)?,
                raw_uj: r.get::<_, i64>(1)? as u64,
                at_ms: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Forgets a batch the broker acknowledged.
    pub fn ack(&self, epoch: u64, seq: u64) -> Result<(), SpoolError> {
        self.conn()
            .prepare_cached("DELETE FROM spool WHERE epoch = ?1 AND seq = ?2")?
            .execute(params![epoch as i64, seq as i64])?;
        Ok(())
    }

    /// Every spooled batch, oldest first: (epoch, seq, payload).
    pub fn pending(&self) -> Result<Vec<(u64, u64, Vec<u8>)>, SpoolError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare_cached("SELECT epoch, seq, payload FROM spool ORDER BY epoch, seq")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)? as u64,
                r.get::<_, i64>(1)? as u64,
                r.get::<_, Vec<u8>>(2)?,
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Number of spooled batches.
    pub fn depth(&self) -> Result<usize, SpoolError> {
        Ok(self
            .conn()
            .query_row("SELECT COUNT(*) FROM spool", [], |r| r.get::<_, i64>(0))?
            as usize)
    }

    /// Decodes a spooled payload (used by tests and diagnostics).
    pub fn decode(epoch: u64, seq: u64, payload: &[u8]) -> Result<TelemetryBatch, SpoolError> {
        serde_json::from_slice(payload).map_err(|source| SpoolError::Decode { epoch, seq, source })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use vigie_protocol::samples;

    #[test]
    fn survives_reopen_and_replays_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool.sqlite");
        let mut a = samples::telemetry();
        let mut b = samples::telemetry();
        let mut c = samples::telemetry();
        (a.epoch, a.seq) = (2, 0);
        (b.epoch, b.seq) = (1, 5);
        (c.epoch, c.seq) = (1, 6);
        {
            let s = Spool::open(&path).unwrap();
            for x in [&a, &b, &c] {
                s.push(x, &serde_json::to_vec(x).unwrap(), &[]).unwrap();
            }
            s.ack(1, 6).unwrap();
        }
        let s = Spool::open(&path).unwrap();
        assert_eq!(s.depth().unwrap(), 2);
        let order: Vec<(u64, u64)> = s.pending().unwrap().iter().map(|p| (p.0, p.1)).collect();
        assert_eq!(order, vec![(1, 5), (2, 0)]);
        let (e, q, payload) = &s.pending().unwrap()[0];
        assert_eq!(Spool::decode(*e, *q, payload).unwrap(), b);
    }

    #[test]
    fn checkpoints_are_kept_per_boot() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool.sqlite");
        let batch = samples::telemetry();
        let cp = Checkpoint {
            sensor: "package-0".into(),
            raw_uj: 42,
            at_ms: 7,
        };
        Spool::open(&path)
            .unwrap()
            .push(&batch, b"{}", std::slice::from_ref(&cp))
            .unwrap();
        let s = Spool::open(&path).unwrap();
        assert_eq!(s.checkpoints(&batch.boot_id).unwrap(), vec![cp]);
        assert!(s.checkpoints("another-boot").unwrap().is_empty());
    }
}
