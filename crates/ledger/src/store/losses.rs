//! Known losses, kept in the ledger as exact functions of the set of
//! accepted batches, so duplicates, reordering, restarts and replicas
//! never change them:
//!
//! - **Holes in time** within an agent epoch: between two consecutive
//!   batches (in sequence order, batches without readings skipped), the
//!   time from the end of the first's readings to the start of the
//!   next's, when positive. Merged spool batches cover their whole span,
//!   so a merge is never a hole; lost batches (a broker that restarted
//!   without persistence, a spool that dropped batches for age) are.
//!   Maintained incrementally: a batch's arrival changes only the hole
//!   between its two neighbours, found by the primary key.
//! - **Missing energy** per (host, epoch, sensor): the agent's cumulative
//!   counter at the latest reading (energy since the epoch began) minus
//!   the energy the ledger received under that epoch. Exact whichever
//!   batches are lost, first ones included, as long as a later one
//!   arrives; a loss at the very end of an epoch is seen only as the
//!   hole before the next epoch (see [`gap_report`]).

use super::StoreError;
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use std::collections::{BTreeMap, HashSet};

/// Tables of the known losses (created with the ledger).
pub(super) const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS host_gaps (
    host TEXT PRIMARY KEY, gaps INTEGER NOT NULL DEFAULT 0, gap_ms INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS epoch_sensors (
    host TEXT NOT NULL, epoch INTEGER NOT NULL, sensor TEXT NOT NULL,
    received_uj INTEGER NOT NULL, last_end_ms INTEGER NOT NULL, last_cum_uj INTEGER NOT NULL,
    PRIMARY KEY (host, epoch, sensor)
) WITHOUT ROWID;
"#;

/// Adds the span columns to a `batches` table made before they existed.
pub(super) fn migrate(conn: &Connection) -> Result<(), StoreError> {
    let has_span: bool = conn
        .prepare("SELECT 1 FROM pragma_table_info('batches') WHERE name = 'start_ms'")?
        .exists([])?;
    if !has_span {
        // Old batches have no span: they are never a hole's neighbour.
        conn.execute_batch(
            "ALTER TABLE batches ADD COLUMN start_ms INTEGER;
             ALTER TABLE batches ADD COLUMN end_ms INTEGER;",
        )?;
    }
    Ok(())
}

/// What one group of batches did to a host's known losses.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LossDelta {
    /// Change in the number of holes.
    pub gaps: i64,
    /// Change in their total length, ms.
    pub gap_ms: i64,
    /// Whether some sensor's missing energy changed.
    pub missing_changed: bool,
}

impl LossDelta {
    /// Whether anything changed.
    pub fn is_zero(&self) -> bool {
        self.gaps == 0 && self.gap_ms == 0 && !self.missing_changed
    }
}

/// A host's known losses.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Losses {
    /// Holes in time within epochs.
    pub gaps: u64,
    /// Their total length, ms.
    pub gap_ms: u64,
    /// Energy the agents counted that the ledger does not hold, µJ, over
    /// the sensors that count in the host's total.
    pub missing_uj: u128,
}

fn hole(prev_end: i64, next_start: i64) -> i64 {
    next_start.saturating_sub(prev_end).max(0)
}

/// Records the span of a batch just inserted under its key and updates
/// its host's holes. `span` is the earliest start and latest end of its
/// readings; a batch without readings is not a neighbour of any hole.
pub fn record_span(
    tx: &Transaction<'_>,
    host: &str,
    epoch: u64,
    seq: u64,
    span: Option<(i64, i64)>,
) -> Result<LossDelta, StoreError> {
    let Some((start, end)) = span else {
        return Ok(LossDelta::default());
    };
    let (epoch, seq) = (epoch as i64, seq as i64);
    tx.prepare_cached(
        "UPDATE batches SET start_ms = ?4, end_ms = ?5 WHERE host = ?1 AND epoch = ?2 AND seq = ?3",
    )?
    .execute(params![host, epoch, seq, start, end])?;
    let prev: Option<i64> = tx
        .prepare_cached(
            "SELECT end_ms FROM batches WHERE host = ?1 AND epoch = ?2 AND seq < ?3
               AND end_ms IS NOT NULL ORDER BY seq DESC LIMIT 1",
        )?
        .query_row(params![host, epoch, seq], |r| r.get(0))
        .optional()?;
    let next: Option<i64> = tx
        .prepare_cached(
            "SELECT start_ms FROM batches WHERE host = ?1 AND epoch = ?2 AND seq > ?3
               AND start_ms IS NOT NULL ORDER BY seq LIMIT 1",
        )?
        .query_row(params![host, epoch, seq], |r| r.get(0))
        .optional()?;
    let count = |ms: i64| i64::from(ms > 0);
    let before = match (prev, next) {
        (Some(p), Some(n)) => hole(p, n),
        _ => 0,
    };
    let left = prev.map_or(0, |p| hole(p, start));
    let right = next.map_or(0, |n| hole(end, n));
    let delta = LossDelta {
        gaps: count(left) + count(right) - count(before),
        gap_ms: left + right - before,
        missing_changed: false,
    };
    if delta.gaps != 0 || delta.gap_ms != 0 {
        tx.prepare_cached(
            "INSERT INTO host_gaps (host, gaps, gap_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT (host) DO UPDATE SET gaps = gaps + excluded.gaps,
               gap_ms = gap_ms + excluded.gap_ms",
        )?
        .execute(params![host, delta.gaps, delta.gap_ms])?;
    }
    Ok(delta)
}

/// What a group's accepted batches say of one (host, epoch, sensor).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Cumulative {
    /// Energy received, µJ.
    pub received_uj: u64,
    /// End of the latest reading, ms.
    pub last_end_ms: i64,
    /// The agent's cumulative counter at that reading, µJ.
    pub last_cum_uj: u64,
}

impl Cumulative {
    /// Joins another part of the same (host, epoch, sensor): received
    /// energy adds, the latest reading's counter wins (the larger counter
    /// on a tie, so the result does not depend on the order).
    pub fn join(&mut self, other: Cumulative) {
        self.received_uj = self.received_uj.saturating_add(other.received_uj);
        if (other.last_end_ms, other.last_cum_uj) > (self.last_end_ms, self.last_cum_uj) {
            self.last_end_ms = other.last_end_ms;
            self.last_cum_uj = other.last_cum_uj;
        }
    }

    /// Energy counted by the agent and not received, µJ; `None` when a
    /// figure reached the top of the ledger's integers (unknown).
    pub fn missing_uj(&self) -> Option<u64> {
        let top = i64::MAX as u64;
        (self.received_uj < top && self.last_cum_uj < top)
            .then(|| self.last_cum_uj.saturating_sub(self.received_uj))
    }
}

fn to_db(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Joins a group's per-(host, epoch, sensor) figures into the ledger;
/// returns the hosts whose missing energy changed.
pub fn record_cumulative(
    tx: &Transaction<'_>,
    parts: &BTreeMap<(String, u64, String), Cumulative>,
) -> Result<HashSet<String>, StoreError> {
    let mut changed = HashSet::new();
    for ((host, epoch, sensor), part) in parts {
        let epoch = *epoch as i64;
        let old: Option<Cumulative> = tx
            .prepare_cached(
                "SELECT received_uj, last_end_ms, last_cum_uj FROM epoch_sensors
                 WHERE host = ?1 AND epoch = ?2 AND sensor = ?3",
            )?
            .query_row(params![host, epoch, sensor], |r| {
                Ok(Cumulative {
                    received_uj: r.get::<_, i64>(0)?.max(0) as u64,
                    last_end_ms: r.get(1)?,
                    last_cum_uj: r.get::<_, i64>(2)?.max(0) as u64,
                })
            })
            .optional()?;
        let mut new = old.unwrap_or_default();
        new.join(*part);
        tx.prepare_cached(
            "INSERT OR REPLACE INTO epoch_sensors
               (host, epoch, sensor, received_uj, last_end_ms, last_cum_uj)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![
            host,
            epoch,
            sensor,
            to_db(new.received_uj),
            new.last_end_ms,
            to_db(new.last_cum_uj)
        ])?;
        if old.and_then(|o| o.missing_uj()).unwrap_or(0) != new.missing_uj().unwrap_or(0) {
            changed.insert(host.clone());
        }
    }
    Ok(changed)
}

/// Missing energy per (epoch, sensor) of `host`, µJ, only where some is
/// missing.
pub fn missing_by_sensor(
    conn: &Connection,
    host: &str,
) -> Result<Vec<(u64, String, u64)>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT epoch, sensor, received_uj, last_end_ms, last_cum_uj FROM epoch_sensors
         WHERE host = ?1 AND last_cum_uj > received_uj ORDER BY epoch, sensor",
    )?;
    let rows = stmt.query_map([host], |r| {
        let c = Cumulative {
            received_uj: r.get::<_, i64>(2)?.max(0) as u64,
            last_end_ms: r.get(3)?,
            last_cum_uj: r.get::<_, i64>(4)?.max(0) as u64,
        };
        Ok((r.get::<_, i64>(0)? as u64, r.get::<_, String>(1)?, c))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (epoch, sensor, c) = row?;
        if let Some(m) = c.missing_uj().filter(|m| *m > 0) {
            out.push((epoch, sensor, m));
        }
    }
    Ok(out)
}

/// `host`'s known losses; missing energy leaves out `uncounted` sensors
/// (components and alternatives of another, as in the host's total).
pub fn host_losses(
    conn: &Connection,
    host: &str,
    uncounted: Option<&HashSet<String>>,
) -> Result<Losses, StoreError> {
    let (gaps, gap_ms): (i64, i64) = conn
        .prepare_cached("SELECT gaps, gap_ms FROM host_gaps WHERE host = ?1")?
        .query_row([host], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?
        .unwrap_or((0, 0));
    let missing_uj = missing_by_sensor(conn, host)?
        .into_iter()
        .filter(|(_, s, _)| !uncounted.is_some_and(|u| u.contains(s)))
        .map(|(_, _, m)| u128::from(m))
        .sum();
    Ok(Losses {
        gaps: gaps.max(0) as u64,
        gap_ms: gap_ms.max(0) as u64,
        missing_uj,
    })
}

/// Hosts with any known loss (start-up: the metrics are seeded from them).
pub fn hosts_with_losses(conn: &Connection) -> Result<Vec<String>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT host FROM host_gaps WHERE gaps > 0
         UNION SELECT host FROM epoch_sensors WHERE last_cum_uj > received_uj",
    )?;
    let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
    rows.collect()
}

/// Where a hole is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GapKind {
    /// Between two batches of one epoch: batches lost on the way.
    Batches,
    /// Between the last batch of an epoch and the first of the next: the
    /// agent stopped and its counters were not resumed (or the last
    /// batches before the stop were lost).
    Restart,
}

/// A hole in a host's data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    /// Where it is.
    pub kind: GapKind,
    /// Epoch of the batch before it.
    pub epoch_before: u64,
    /// Sequence number of the batch before it.
    pub seq_before: u64,
    /// Epoch of the batch after it.
    pub epoch_after: u64,
    /// Sequence number of the batch after it.
    pub seq_after: u64,
    /// End of the data before it, ms.
    pub from_ms: i64,
    /// Start of the data after it, ms.
    pub to_ms: i64,
}

/// The holes in `host`'s data that end in `[from_ms, to_ms)`, oldest
/// first, at most `limit`; the bool says whether more were left out.
pub fn gap_report(
    conn: &Connection,
    host: &str,
    from_ms: i64,
    to_ms: i64,
    limit: usize,
) -> Result<(Vec<Gap>, bool), StoreError> {
    // The batch before the window's first one is its neighbour too.
    let mut stmt = conn.prepare_cached(
        "SELECT epoch, seq, start_ms, end_ms, prev_epoch, prev_seq, prev_end FROM (
           SELECT epoch, seq, start_ms, end_ms,
             LAG(epoch) OVER w AS prev_epoch, LAG(seq) OVER w AS prev_seq,
             LAG(end_ms) OVER w AS prev_end
           FROM batches WHERE host = ?1 AND start_ms IS NOT NULL
           WINDOW w AS (ORDER BY epoch, seq))
         WHERE prev_end IS NOT NULL AND start_ms > prev_end
           AND start_ms >= ?2 AND start_ms < ?3
         ORDER BY epoch, seq LIMIT ?4",
    )?;
    let rows = stmt.query_map(
        params![
            host,
            from_ms,
            to_ms,
            i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX)
        ],
        |r| {
            let epoch = r.get::<_, i64>(0)? as u64;
            let prev_epoch = r.get::<_, i64>(4)? as u64;
            Ok(Gap {
                kind: if epoch == prev_epoch {
                    GapKind::Batches
                } else {
                    GapKind::Restart
                },
                epoch_before: prev_epoch,
                seq_before: r.get::<_, i64>(5)? as u64,
                epoch_after: epoch,
                seq_after: r.get::<_, i64>(1)? as u64,
                from_ms: r.get(6)?,
                to_ms: r.get(2)?,
            })
        },
    )?;
    let mut out: Vec<Gap> = rows.collect::<Result<_, _>>()?;
    let more = out.len() > limit;
    out.truncate(limit);
    Ok((out, more))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::ingest::{Ingestor, Message, Outcome};
    use proptest::prelude::*;
    use vigie_protocol::{Limits, Quality, Reading, SCHEMA_VERSION, TelemetryBatch};

    const T0: i64 = 1_795_000_000_000;
    const NOW: i64 = T0 + 3_600_000;
    const PER: [(&str, u64); 2] = [("rapl:package-0", 1_000_000), ("pdu:outlet-1", 40_000)];

    /// Batch `seq` of epoch `epoch`: two sensors, 10 s each, contiguous
    /// from `start`, counters cumulative since the epoch began.
    fn batch(epoch: u64, start: i64, seq: u64) -> TelemetryBatch {
        let start_ms = start + seq as i64 * 10_000;
        TelemetryBatch {
            schema: SCHEMA_VERSION,
            site: "s".into(),
            host: "h".into(),
            boot_id: "b".into(),
            epoch,
            seq,
            readings: PER
                .iter()
                .map(|(sensor, per)| Reading {
                    sensor: (*sensor).into(),
                    start_ms,
                    end_ms: start_ms + 10_000,
                    energy_uj: *per,
                    cumulative_uj: per * (seq + 1),
                    power_w: None,
                    quality: Quality::Measured,
                })
                .collect(),
            gauges: Vec::new(),
            workloads: Vec::new(),
        }
    }

    fn msg(b: &TelemetryBatch) -> Message {
        Message {
            topic: format!("vigie/v1/{}/{}/telemetry", b.site, b.host),
            payload: serde_json::to_vec(b).unwrap(),
        }
    }

    fn ingest(ing: &mut Ingestor, batches: &[TelemetryBatch]) {
        let msgs: Vec<Message> = batches.iter().map(msg).collect();
        for o in ing.ingest_group(&msgs, NOW).unwrap() {
            assert!(
                matches!(o, Outcome::Accepted(_) | Outcome::Duplicate),
                "{o:?}"
            );
        }
    }

    fn losses(ing: &Ingestor) -> Losses {
        host_losses(ing.conn(), "h", None).unwrap()
    }

    fn ingestor() -> Ingestor {
        Ingestor::new(crate::store::open_in_memory().unwrap(), Limits::default())
    }

    #[test]
    fn lost_batches_are_a_hole_and_missing_energy_until_they_come() {
        let mut ing = ingestor();
        let b: Vec<TelemetryBatch> = (0..6).map(|s| batch(7, T0, s)).collect();
        ingest(
            &mut ing,
            &[b[0].clone(), b[1].clone(), b[3].clone(), b[5].clone()],
        );
        let per_batch: u128 = PER.iter().map(|(_, p)| u128::from(*p)).sum();
        assert_eq!(
            losses(&ing),
            Losses {
                gaps: 2,
                gap_ms: 20_000,
                missing_uj: 2 * per_batch,
            }
        );
        assert_eq!(ing.take_losses_changed(), HashSet::from(["h".to_owned()]));
        // Missing per sensor, for the report.
        let by_sensor = missing_by_sensor(ing.conn(), "h").unwrap();
        assert_eq!(
            by_sensor,
            vec![
                (7, "pdu:outlet-1".to_owned(), 80_000),
                (7, "rapl:package-0".to_owned(), 2_000_000)
            ]
        );
        // A contiguous batch changes nothing and asks for no refresh.
        ingest(&mut ing, &[batch(7, T0, 6)]);
        assert!(ing.take_losses_changed().is_empty());
        ingest(&mut ing, &[b[4].clone()]);
        assert_eq!(losses(&ing).gaps, 1);
        ingest(&mut ing, &[b[2].clone(), b[2].clone()]);
        assert_eq!(losses(&ing), Losses::default());
        let (report, more) = gap_report(ing.conn(), "h", 0, i64::MAX, 10).unwrap();
        assert!(report.is_empty() && !more);
    }

    #[test]
    fn the_first_batches_lost_are_missing_energy_and_a_sensor_left_out_is_not_counted() {
        let mut ing = ingestor();
        ingest(&mut ing, &[batch(7, T0, 2), batch(7, T0, 3)]);
        let l = losses(&ing);
        assert_eq!((l.gaps, l.missing_uj), (0, 2 * 1_040_000));
        let skip = HashSet::from(["pdu:outlet-1".to_owned()]);
        assert_eq!(
            host_losses(ing.conn(), "h", Some(&skip))
                .unwrap()
                .missing_uj,
            2_000_000
        );
    }

    #[test]
    fn a_merged_batch_is_no_hole() {
        let mut ing = ingestor();
        // Seq 0 and 1 merged by the agent's spool under seq 0.
        let mut merged = batch(7, T0, 0);
        for r in &mut merged.readings {
            r.end_ms += 10_000;
            r.energy_uj *= 2;
            r.cumulative_uj *= 2;
        }
        ingest(&mut ing, &[merged, batch(7, T0, 2)]);
        assert_eq!(losses(&ing), Losses::default());
    }

    #[test]
    fn a_restart_not_bridged_is_a_restart_gap_in_the_report() {
        let mut ing = ingestor();
        ingest(&mut ing, &[batch(7, T0, 0), batch(7, T0, 1)]);
        // The next epoch starts 60 s after the last reading of the first.
        ingest(
            &mut ing,
            &[batch(9, T0 + 80_000, 0), batch(9, T0 + 80_000, 2)],
        );
        let (report, _) = gap_report(ing.conn(), "h", 0, i64::MAX, 10).unwrap();
        assert_eq!(
            report,
            vec![
                Gap {
                    kind: GapKind::Restart,
                    epoch_before: 7,
                    seq_before: 1,
                    epoch_after: 9,
                    seq_after: 0,
                    from_ms: T0 + 20_000,
                    to_ms: T0 + 80_000,
                },
                Gap {
                    kind: GapKind::Batches,
                    epoch_before: 9,
                    seq_before: 0,
                    epoch_after: 9,
                    seq_after: 2,
                    from_ms: T0 + 90_000,
                    to_ms: T0 + 100_000,
                }
            ]
        );
        // The window and the bound.
        let (late, _) = gap_report(ing.conn(), "h", T0 + 81_000, i64::MAX, 10).unwrap();
        assert_eq!(late.len(), 1);
        let (first, more) = gap_report(ing.conn(), "h", 0, i64::MAX, 1).unwrap();
        assert_eq!((first.len(), more), (1, true));
        // Within epochs: one hole only.
        assert_eq!(losses(&ing).gaps, 1);
    }

    proptest! {
        // Region: any subset of 12 batches of two epochs, delivered in any
        // order, with duplicates, in groups of any size. The result must
        // equal the holes and missing energy computed from the set alone.
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn losses_depend_only_on_the_set_delivered(
            picks in proptest::collection::vec((0usize..12, any::<bool>()), 1..30),
            cut in 1usize..6,
        ) {
            let all: Vec<TelemetryBatch> = (0..12)
                .map(|i| if i < 6 { batch(7, T0, i as u64) } else { batch(9, T0 + 200_000, i as u64 - 6) })
                .collect();
            let mut ing = ingestor();
            let mut sent: Vec<TelemetryBatch> = Vec::new();
            for (i, dup) in &picks {
                sent.push(all[*i].clone());
                if *dup {
                    sent.push(all[*i].clone());
                }
            }
            for group in sent.chunks(cut) {
                ingest(&mut ing, group);
            }
            // Reference: from the set of distinct batches per epoch.
            let mut want = Losses::default();
            for epoch in [7u64, 9] {
                let mut seqs: Vec<u64> = picks
                    .iter()
                    .map(|(i, _)| &all[*i])
                    .filter(|b| b.epoch == epoch)
                    .map(|b| b.seq)
                    .collect();
                seqs.sort_unstable();
                seqs.dedup();
                for w in seqs.windows(2) {
                    if w[1] > w[0] + 1 {
                        want.gaps += 1;
                        want.gap_ms += (w[1] - w[0] - 1) * 10_000;
                    }
                }
                if let Some(last) = seqs.last() {
                    let got = seqs.len() as u128;
                    let per: u128 = PER.iter().map(|(_, p)| u128::from(*p)).sum();
                    want.missing_uj += (u128::from(*last) + 1 - got) * per;
                }
            }
            prop_assert_eq!(losses(&ing), want);
        }
    }
}
