//! The durable spool: every batch is committed to disk before it is
//! published, and deleted only when the broker has acknowledged it. After a
//! reconnect or a restart the spool is replayed oldest first; the collector
//! dedupes on (host, epoch, seq), so a replay never double counts.

use crate::checkpoint::Checkpoint;
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
                -- earliest start and latest end of its readings, Unix ms
                start_ms INTEGER NOT NULL DEFAULT 0, end_ms INTEGER NOT NULL DEFAULT 0,
                -- 1 once handed to the broker: such a batch may already be in
                -- the ledger under its key, so it is never merged
                published INTEGER NOT NULL DEFAULT 0,
                PRIMARY KEY (epoch, seq)
            ) WITHOUT ROWID;
            CREATE TABLE IF NOT EXISTS checkpoints (
                sensor TEXT PRIMARY KEY, boot_id TEXT NOT NULL,
                raw_uj INTEGER NOT NULL, at_ms INTEGER NOT NULL
            ) WITHOUT ROWID;",
        )?;
        // Spools written before the bounds existed lack three columns.
        let has_span: bool = conn
            .prepare("SELECT 1 FROM pragma_table_info('spool') WHERE name = 'published'")?
            .exists([])?;
        if !has_span {
            conn.execute_batch(
                "ALTER TABLE spool ADD COLUMN start_ms INTEGER NOT NULL DEFAULT 0;
                 ALTER TABLE spool ADD COLUMN end_ms INTEGER NOT NULL DEFAULT 0;
                 ALTER TABLE spool ADD COLUMN published INTEGER NOT NULL DEFAULT 1;",
            )?;
        }
        Ok(Spool {
            conn: Mutex::new(conn),
        })
    }

    /// Caps the spool file at about `bytes` (0: only the disk's size).
    /// Past it every write fails as on a full disk, and the agent holds
    /// new batches in memory until the spool takes them again.
    pub fn set_max_bytes(&self, bytes: u64) -> Result<(), SpoolError> {
        let conn = self.conn();
        let pages = if bytes == 0 {
            // SQLite's own ceiling.
            4_294_967_294
        } else {
            let page: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
            (bytes / page.max(512) as u64).max(2)
        };
        let _: i64 = conn.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |r| {
            r.get(0)
        })?;
        Ok(())
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
        device_checkpoints: &[Checkpoint],
    ) -> Result<(), SpoolError> {
        self.push_all(&[(batch, payload)], checkpoints, device_checkpoints)
    }

    /// [`Spool::push`] for the batches one cut was split into: all of
    /// them and the checkpoints that follow the last in one transaction,
    /// so a crash between two neither loses nor repeats energy.
    pub fn push_all(
        &self,
        batches: &[(&TelemetryBatch, &[u8])],
        checkpoints: &[Checkpoint],
        device_checkpoints: &[Checkpoint],
    ) -> Result<(), SpoolError> {
        let Some((last, _)) = batches.last() else {
            return Ok(());
        };
        let boot_id = last.boot_id.clone();
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        for (batch, payload) in batches {
            let (start, end) = span(batch);
            tx.prepare_cached(
                "INSERT OR REPLACE INTO spool (epoch, seq, payload, start_ms, end_ms, published)
                 VALUES (?1, ?2, ?3, ?4, ?5, 0)",
            )?
            .execute(params![
                batch.epoch as i64,
                batch.seq as i64,
                payload,
                start,
                end
            ])?;
        }
        {
            let mut stmt = tx.prepare_cached(
                "INSERT OR REPLACE INTO checkpoints (sensor, boot_id, raw_uj, at_ms) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for cp in checkpoints {
                stmt.execute(params![cp.sensor, boot_id, cp.raw_uj as i64, cp.at_ms])?;
            }
            // A device's registers do not restart with this host: valid in
            // any boot.
            for cp in device_checkpoints {
                stmt.execute(params![cp.sensor, ANY_BOOT, cp.raw_uj as i64, cp.at_ms])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Checkpoints written during boot `boot_id` (those of an earlier boot
    /// are useless: the counters restarted from zero), and those of remote
    /// devices, whatever the boot.
    pub fn checkpoints(&self, boot_id: &str) -> Result<Vec<Checkpoint>, SpoolError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT sensor, raw_uj, at_ms FROM checkpoints WHERE boot_id = ?1 OR boot_id = '*' ORDER BY sensor",
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

    /// Records that a batch was handed to the broker: from now on it may be
    /// in the ledger under its key, so it is never merged.
    pub fn mark_published(&self, epoch: u64, seq: u64) -> Result<(), SpoolError> {
        self.conn()
            .prepare_cached("UPDATE spool SET published = 1 WHERE epoch = ?1 AND seq = ?2")?
            .execute(params![epoch as i64, seq as i64])?;
        Ok(())
    }

    /// Start of the oldest spooled reading.
    pub fn oldest_ms(&self) -> Result<Option<i64>, SpoolError> {
        Ok(self.conn().query_row(
            "SELECT MIN(start_ms) FROM spool WHERE start_ms < ?1",
            [NO_TIME],
            |r| r.get(0),
        )?)
    }

    /// Enforces the bounds: drops batches older than `max_age_ms` (0: no
    /// limit), then, while more than `max_batches` remain, merges adjacent
    /// never-published batches of the same epoch pairwise, oldest first, as
    /// long as a merged reading spans at most `max_span_ms`. Energy is
    /// conserved exactly by every merge.
    pub fn enforce(&self, bounds: &Bounds, now_ms: i64) -> Result<Enforced, SpoolError> {
        let mut done = Enforced::default();
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        if bounds.max_age_ms > 0 {
            let cutoff = now_ms.saturating_sub(bounds.max_age_ms);
            let old: Vec<(i64, i64, Vec<u8>)> = {
                let mut stmt =
                    tx.prepare_cached("SELECT epoch, seq, payload FROM spool WHERE end_ms < ?1")?;
                stmt.query_map([cutoff], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                    .collect::<Result<_, _>>()?
            };
            for (epoch, seq, payload) in old {
                let energy = Self::decode(epoch as u64, seq as u64, &payload)
                    .map(|b| {
                        b.readings
                            .iter()
                            .map(|r| r.energy_uj)
                            .fold(0u64, u64::saturating_add)
                    })
                    .unwrap_or(0);
                tx.prepare_cached("DELETE FROM spool WHERE epoch = ?1 AND seq = ?2")?
                    .execute(params![epoch, seq])?;
                done.dropped += 1;
                done.dropped_uj = done.dropped_uj.saturating_add(energy);
            }
        }
        let depth = |tx: &rusqlite::Transaction<'_>| -> Result<usize, rusqlite::Error> {
            tx.query_row("SELECT COUNT(*) FROM spool", [], |r| r.get::<_, i64>(0))
                .map(|n| n as usize)
        };
        // Merge down to 90 % of the bound, so merging is not redone at every push.
        let target = bounds.max_batches - bounds.max_batches / 10;
        if depth(&tx)? > bounds.max_batches {
            loop {
                let mut excess = depth(&tx)?.saturating_sub(target);
                if excess == 0 {
                    break;
                }
                let rows: Vec<(i64, i64, Vec<u8>)> = {
                    let mut stmt = tx.prepare_cached(
                        "SELECT epoch, seq, payload FROM spool WHERE published = 0 ORDER BY epoch, seq",
                    )?;
                    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                        .collect::<Result<_, _>>()?
                };
                let mut merged_this_pass = 0usize;
                let mut i = 0;
                while i + 1 < rows.len() && excess > 0 {
                    let (a, b) = (&rows[i], &rows[i + 1]);
                    let decoded = (
                        Self::decode(a.0 as u64, a.1 as u64, &a.2),
                        Self::decode(b.0 as u64, b.1 as u64, &b.2),
                    );
                    let (Ok(first), Ok(second)) = decoded else {
                        i += 1;
                        continue;
                    };
                    match merge(
                        &first,
                        &second,
                        bounds.max_span_ms,
                        bounds.max_readings,
                        bounds.max_minute_buckets,
                    ) {
                        Some(m) => {
                            let payload = serde_json::to_vec(&m).unwrap_or_default();
                            let (start, end) = span(&m);
                            tx.prepare_cached(
                                "UPDATE spool SET payload = ?3, start_ms = ?4, end_ms = ?5
                                 WHERE epoch = ?1 AND seq = ?2",
                            )?
                            .execute(params![a.0, a.1, payload, start, end])?;
                            tx.prepare_cached("DELETE FROM spool WHERE epoch = ?1 AND seq = ?2")?
                                .execute(params![b.0, b.1])?;
                            merged_this_pass += 1;
                            excess -= 1;
                            i += 2;
                        }
                        None => i += 1,
                    }
                }
                done.merged += merged_this_pass as u64;
                if merged_this_pass == 0 {
                    // Every remaining batch is published or at the span
                    // limit: the spool stays over its bound, nothing is lost.
                    done.over_bound = true;
                    break;
                }
            }
        }
        tx.commit()?;
        Ok(done)
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

const ANY_BOOT: &str = "*";

/// The spool's bounds, in the units the spool works in.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// Most batches before merging starts.
    pub max_batches: usize,
    /// Longest span of a merged reading, ms.
    pub max_span_ms: i64,
    /// Oldest data kept, ms; 0 keeps everything.
    pub max_age_ms: i64,
    /// Most readings in a merged batch (the collector's limit).
    pub max_readings: usize,
    /// Most minute buckets a merged batch may touch (the collector's
    /// `max_minute_buckets`): a merge never makes a batch it would refuse.
    pub max_minute_buckets: u64,
}

/// What [`Spool::enforce`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Enforced {
    /// Pairs merged.
    pub merged: u64,
    /// Batches dropped for age.
    pub dropped: u64,
    /// Energy in them, µJ.
    pub dropped_uj: u64,
    /// Still over the batch bound: nothing left that may be merged.
    pub over_bound: bool,
}

/// Stands for "no time" in the spool's `start_ms`/`end_ms` columns: a batch
/// holding neither readings nor gauges (the batcher makes none) is never
/// aged out and never taken as the oldest.
const NO_TIME: i64 = i64::MAX;

/// The time a batch covers: its readings' intervals and its gauges' times.
/// A batch of gauges alone is as old as its gauges (it was once given
/// `start_ms = 0` and dropped by the age bound as 56 years old).
fn span(b: &TelemetryBatch) -> (i64, i64) {
    let starts = b.readings.iter().map(|r| r.start_ms);
    let ends = b.readings.iter().map(|r| r.end_ms);
    let gauges = b.gauges.iter().map(|g| g.at_ms);
    let start = starts.chain(gauges.clone()).min().unwrap_or(NO_TIME);
    let end = ends.chain(gauges).max().unwrap_or(NO_TIME);
    (start, end)
}

/// Merges two consecutive batches of one epoch into one under `first`'s
/// key, with one reading per (sensor, quality): energies are added and the interval runs
/// from the earliest start to the latest end; the cumulative counter is the
/// later one. `None` when they may not be merged (different epoch or boot,
/// a merged reading longer than `max_span_ms`, too many readings, or an
/// energy sum that overflows).
pub fn merge(
    first: &TelemetryBatch,
    second: &TelemetryBatch,
    max_span_ms: i64,
    max_readings: usize,
    max_buckets: u64,
) -> Option<TelemetryBatch> {
    if first.epoch != second.epoch
        || first.boot_id != second.boot_id
        || first.host != second.host
        || first.site != second.site
    {
        return None;
    }
    // One reading per (sensor, quality) over both batches: a batch holds
    // several consecutive readings of a sensor, and the collector refuses
    // readings of one sensor that overlap.
    let mut out: Vec<vigie_protocol::Reading> = Vec::new();
    for r in first.readings.iter().chain(&second.readings) {
        match out
            .iter_mut()
            .find(|o| o.sensor == r.sensor && o.quality == r.quality)
        {
            Some(o) => {
                o.energy_uj = o.energy_uj.checked_add(r.energy_uj)?;
                if r.end_ms >= o.end_ms {
                    o.cumulative_uj = r.cumulative_uj;
                }
                o.start_ms = o.start_ms.min(r.start_ms);
                o.end_ms = o.end_ms.max(r.end_ms);
            }
            None => out.push(r.clone()),
        }
    }
    if out.len() > max_readings
        || out.iter().any(|r| r.end_ms - r.start_ms > max_span_ms)
        || vigie_protocol::minute_buckets(&out) > max_buckets
    {
        return None;
    }
    for r in &mut out {
        r.power_w = vigie_energy::average_power(
            vigie_energy::Microjoules(r.energy_uj),
            r.end_ms - r.start_ms,
        )
        .map(|w| (w.0 * 1000.0).round() / 1000.0);
    }
    // The splits among workloads stay as they were, each inside its merged
    // reading; past the collector's bound on lines the pair is not merged.
    let workloads: Vec<vigie_protocol::WorkloadSplit> = first
        .workloads
        .iter()
        .chain(&second.workloads)
        .cloned()
        .collect();
    let lines: usize = workloads.iter().map(|s| 1 + s.workloads.len()).sum();
    if lines > vigie_protocol::DEFAULT_MAX_WORKLOADS {
        return None;
    }
    Some(TelemetryBatch {
        readings: out,
        workloads,
        ..first.clone()
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use vigie_protocol::samples;

    #[test]
    fn a_merge_keeps_the_splits_among_workloads() {
        let mut a = samples::telemetry_with_workloads();
        a.gauges.clear();
        let mut b = a.clone();
        b.seq += 1;
        for r in &mut b.readings {
            (r.start_ms, r.end_ms) = (r.end_ms, r.end_ms + 1_000);
        }
        (b.workloads[0].start_ms, b.workloads[0].end_ms) =
            (b.readings[0].start_ms, b.readings[0].end_ms);
        let m = merge(&a, &b, 3_600_000, 100, 1_000).unwrap();
        assert_eq!(m.workloads.len(), 2);
        // Still what a collector accepts: each split inside its merged reading.
        let topic =
            vigie_protocol::Topic::new("par1", "node-01", vigie_protocol::TopicKind::Telemetry)
                .unwrap();
        let payload = serde_json::to_vec(&m).unwrap();
        vigie_protocol::decode_telemetry(
            &topic,
            &payload,
            1_795_000_020_000,
            &vigie_protocol::Limits::default(),
        )
        .unwrap();
    }

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
                s.push(x, &serde_json::to_vec(x).unwrap(), &[], &[])
                    .unwrap();
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

    /// Test times are offsets from here (the collector refuses pre-2020 times).
    const BASE: i64 = 1_795_000_000_000;

    fn batch(seq: u64, start_ms: i64, energies: &[(&str, u64)]) -> TelemetryBatch {
        let start_ms = BASE + start_ms;
        let mut b = samples::telemetry();
        b.seq = seq;
        // The sample's gauges have fixed times, which now count in a batch's span.
        b.gauges.clear();
        b.readings = energies
            .iter()
            .map(|(sensor, e)| vigie_protocol::Reading {
                sensor: (*sensor).into(),
                start_ms,
                end_ms: start_ms + 10_000,
                energy_uj: *e,
                cumulative_uj: (seq * 1_000).wrapping_add(*e),
                power_w: None,
                quality: vigie_protocol::Quality::Measured,
            })
            .collect();
        b
    }

    fn spooled_energy(s: &Spool) -> (u64, usize) {
        let mut total = 0;
        let mut readings = 0;
        for (e, q, p) in s.pending().unwrap() {
            let b = Spool::decode(e, q, &p).unwrap();
            readings += b.readings.len();
            total += b.readings.iter().map(|r| r.energy_uj).sum::<u64>();
        }
        (total, readings)
    }

    /// What the collector will say of it.
    fn assert_valid(b: &TelemetryBatch) {
        let topic =
            vigie_protocol::Topic::new(&b.site, &b.host, vigie_protocol::TopicKind::Telemetry)
                .unwrap();
        let payload = serde_json::to_vec(b).unwrap();
        let now = BASE + 86_400_000;
        if let Err(r) = vigie_protocol::decode_telemetry(
            &topic,
            &payload,
            now,
            &vigie_protocol::Limits::default(),
        ) {
            panic!("merged batch refused: {r}\n{b:#?}");
        }
    }

    const BOUNDS: Bounds = Bounds {
        max_batches: 10,
        max_span_ms: 3_600_000,
        max_age_ms: 0,
        max_readings: 100,
        max_minute_buckets: u64::MAX,
    };

    #[test]
    fn merge_adds_energy_and_widens_the_interval() {
        // Two consecutive readings of package-0 in the first batch.
        let mut a = batch(0, 1_000, &[("package-0", 2), ("dram-0", 7)]);
        let mut later = a.readings[0].clone();
        (later.start_ms, later.end_ms, later.energy_uj) = (BASE + 6_000, BASE + 11_000, 3);
        a.readings[0].end_ms = BASE + 6_000;
        a.readings.push(later);
        let b = batch(1, 11_000, &[("package-0", 11), ("psys", 1)]);
        let m = merge(&a, &b, 3_600_000, 100, u64::MAX).unwrap();
        assert_eq!(
            (m.epoch, m.seq),
            (a.epoch, 0),
            "the merge keeps the first key"
        );
        let p = m.readings.iter().find(|r| r.sensor == "package-0").unwrap();
        assert_eq!(
            (p.start_ms - BASE, p.end_ms - BASE, p.energy_uj),
            (1_000, 21_000, 16)
        );
        assert_eq!(p.cumulative_uj, 1_011, "the later cumulative counter");
        assert_eq!(m.readings.len(), 3);
        assert_valid(&m);
        // Too long a span, too much work for the collector, another
        // epoch, an overflow: no merge.
        assert!(merge(&a, &b, 10_000, 100, u64::MAX).is_none());
        let buckets = vigie_protocol::minute_buckets(&m.readings);
        assert!(merge(&a, &b, 3_600_000, 100, buckets).is_some());
        assert!(merge(&a, &b, 3_600_000, 100, buckets - 1).is_none());
        let mut other = b.clone();
        other.epoch += 1;
        assert!(merge(&a, &other, 3_600_000, 100, u64::MAX).is_none());
        let huge = batch(1, 11_000, &[("package-0", u64::MAX)]);
        assert!(merge(&a, &huge, 3_600_000, 100, u64::MAX).is_none());
    }

    #[test]
    fn over_the_bound_the_oldest_unpublished_batches_merge_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let s = Spool::open(&dir.path().join("spool.sqlite")).unwrap();
        let mut truth = 0;
        for seq in 0..25u64 {
            let b = batch(
                seq,
                1_000 + seq as i64 * 10_000,
                &[("package-0", 1_000 + seq)],
            );
            truth += 1_000 + seq;
            s.push(&b, &serde_json::to_vec(&b).unwrap(), &[], &[])
                .unwrap();
        }
        // The first two went out before the outage: never merged.
        s.mark_published(samples::telemetry().epoch, 0).unwrap();
        s.mark_published(samples::telemetry().epoch, 1).unwrap();
        let done = s.enforce(&BOUNDS, 0).unwrap();
        assert!(done.merged > 0 && !done.over_bound, "{done:?}");
        assert!(s.depth().unwrap() <= 9, "merged down to 90 % of the bound");
        assert_eq!(spooled_energy(&s).0, truth, "not a µJ lost or added");
        let keys: Vec<u64> = s.pending().unwrap().iter().map(|p| p.1).collect();
        assert_eq!(&keys[..2], &[0, 1], "published batches kept as they were");
        for (e, q, p) in s.pending().unwrap() {
            assert_valid(&Spool::decode(e, q, &p).unwrap());
        }
        let first_merged = s.pending().unwrap()[2].clone();
        let m = Spool::decode(first_merged.0, first_merged.1, &first_merged.2).unwrap();
        assert!(m.readings[0].end_ms - m.readings[0].start_ms > 10_000);
    }

    #[test]
    fn when_nothing_may_merge_the_spool_stays_over_its_bound() {
        let dir = tempfile::tempdir().unwrap();
        let s = Spool::open(&dir.path().join("spool.sqlite")).unwrap();
        for seq in 0..12u64 {
            let b = batch(seq, seq as i64 * 10_000, &[("package-0", 1)]);
            s.push(&b, &serde_json::to_vec(&b).unwrap(), &[], &[])
                .unwrap();
        }
        let tight = Bounds {
            max_span_ms: 10_000,
            ..BOUNDS
        };
        let done = s.enforce(&tight, 0).unwrap();
        assert!(done.over_bound);
        assert_eq!((done.merged, s.depth().unwrap()), (0, 12));
    }

    #[test]
    fn batches_past_the_age_bound_are_dropped_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let s = Spool::open(&dir.path().join("spool.sqlite")).unwrap();
        for seq in 0..3u64 {
            let b = batch(seq, seq as i64 * 100_000, &[("package-0", 10 + seq)]);
            s.push(&b, &serde_json::to_vec(&b).unwrap(), &[], &[])
                .unwrap();
        }
        let aged = Bounds {
            max_age_ms: 150_000,
            ..BOUNDS
        };
        // now = 300 s: batches ending at 10 s and 110 s are past 150 s old.
        let done = s.enforce(&aged, BASE + 300_000).unwrap();
        assert_eq!((done.dropped, done.dropped_uj), (2, 21));
        assert_eq!(s.depth().unwrap(), 1);
        assert_eq!(s.oldest_ms().unwrap(), Some(BASE + 200_000));
    }

    #[test]
    fn a_batch_of_gauges_alone_is_as_old_as_its_gauges() {
        let dir = tempfile::tempdir().unwrap();
        let s = Spool::open(&dir.path().join("spool.sqlite")).unwrap();
        let gauges_at = |seq: u64, at_ms: i64| {
            let mut b = batch(seq, 0, &[]);
            b.gauges = vec![vigie_protocol::Gauge {
                sensor: "pdu-a1:outlet-1".into(),
                quantity: vigie_protocol::GaugeQuantity::PowerWatts,
                value: 120.0,
                at_ms: BASE + at_ms,
            }];
            b
        };
        for (seq, at) in [(0, 10_000), (1, 250_000)] {
            let b = gauges_at(seq, at);
            assert!(b.readings.is_empty());
            s.push(&b, &serde_json::to_vec(&b).unwrap(), &[], &[])
                .unwrap();
        }
        assert_eq!(s.oldest_ms().unwrap(), Some(BASE + 10_000));
        let aged = Bounds {
            max_age_ms: 150_000,
            ..BOUNDS
        };
        // now = 300 s: the gauges of 10 s are past the bound, those of 250 s are not.
        let done = s.enforce(&aged, BASE + 300_000).unwrap();
        assert_eq!((done.dropped, done.dropped_uj), (1, 0));
        let kept: Vec<u64> = s.pending().unwrap().iter().map(|p| p.1).collect();
        assert_eq!(kept, vec![1], "recent gauges are kept through an outage");
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
            .push(&batch, b"{}", std::slice::from_ref(&cp), &[])
            .unwrap();
        let s = Spool::open(&path).unwrap();
        assert_eq!(s.checkpoints(&batch.boot_id).unwrap(), vec![cp]);
        assert!(s.checkpoints("another-boot").unwrap().is_empty());
    }
}
