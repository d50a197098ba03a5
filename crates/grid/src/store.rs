//! The `grid_intensity` table: intensities with their provenance, one row
//! per zone, source, factor, basis and start.
//!
//! A row is replaced only by a point retrieved at the same time or later,
//! and never a published value by an estimate: a forecast fetched after
//! the fact must not overwrite what was measured, while a measured value
//! replaces the forecast it follows.

use super::{Basis, Factor, Intensity, IntensityPoint};
use rusqlite::types::Type;
use rusqlite::{Connection, Row, params};
use vigie_energy::GramsPerKwh;

/// Storage failures (as the ledger's: retryable unless the database is
/// corrupt or the disk full).
pub type StoreError = rusqlite::Error;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS grid_intensity (
    zone TEXT NOT NULL,
    start_ms INTEGER NOT NULL,
    end_ms INTEGER NOT NULL,
    g_per_kwh REAL NOT NULL,
    factor TEXT NOT NULL CHECK (factor IN ('average', 'marginal')),
    basis TEXT NOT NULL CHECK (basis IN ('lifecycle', 'direct')),
    estimated INTEGER NOT NULL CHECK (estimated IN (0, 1)),
    source TEXT NOT NULL,
    retrieved_ms INTEGER NOT NULL,
    CHECK (end_ms > start_ms),
    PRIMARY KEY (zone, source, factor, basis, start_ms)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS grid_intensity_end ON grid_intensity (zone, end_ms);
"#;

/// Bumped after every committed write of grid points in this process, so
/// in-memory copies (the signal cache) know when to reload.
static GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The write generation of the grid points (see [`GENERATION`]).
pub fn generation() -> u64 {
    GENERATION.load(std::sync::atomic::Ordering::Acquire)
}

fn bump() {
    GENERATION.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
}

/// Creates the table and its index if missing.
pub fn init(conn: &Connection) -> Result<(), StoreError> {
    conn.execute_batch(SCHEMA)
}

/// Writes `points`, each replacing its row under the rule above, in the
/// caller's transaction if one is open (wrap large batches in one: each
/// statement is otherwise its own commit). Returns the rows written or
/// replaced.
pub fn upsert(conn: &Connection, points: &[IntensityPoint]) -> Result<usize, StoreError> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO grid_intensity
             (zone, start_ms, end_ms, g_per_kwh, factor, basis, estimated, source, retrieved_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
         ON CONFLICT (zone, source, factor, basis, start_ms) DO UPDATE SET
             end_ms = excluded.end_ms,
             g_per_kwh = excluded.g_per_kwh,
             estimated = excluded.estimated,
             retrieved_ms = excluded.retrieved_ms
         WHERE excluded.retrieved_ms >= grid_intensity.retrieved_ms
           AND NOT (excluded.estimated = 1 AND grid_intensity.estimated = 0)",
    )?;
    let mut n = 0;
    for p in points {
        n += stmt.execute(params![
            p.zone,
            p.start_ms,
            p.end_ms,
            p.signal().0,
            p.factor().as_str(),
            p.basis.as_str(),
            p.estimated,
            p.source,
            p.retrieved_ms,
        ])?;
    }
    if conn.is_autocommit() {
        // Each statement was its own commit; in a caller's transaction the
        // caller's commit is not seen here, so `upsert_all` bumps after it.
        bump();
    }
    Ok(n)
}

/// [`upsert`] in a transaction of its own: all points or none.
pub fn upsert_all(conn: &mut Connection, points: &[IntensityPoint]) -> Result<usize, StoreError> {
    let tx = conn.transaction()?;
    let n = upsert(&tx, points)?;
    tx.commit()?;
    bump();
    Ok(n)
}

/// Which rows a query returns; `None` fields match anything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only this source.
    pub source: Option<String>,
    /// Only this kind of factor (inventories ask for
    /// [`Factor::Average`]).
    pub factor: Option<Factor>,
    /// Only this basis.
    pub basis: Option<Basis>,
}

impl Filter {
    /// Average factors of one basis: what an inventory reads.
    pub fn inventory(basis: Basis) -> Self {
        Filter {
            source: None,
            factor: Some(Factor::Average),
            basis: Some(basis),
        }
    }
}

const COLUMNS: &str =
    "zone, start_ms, end_ms, g_per_kwh, factor, basis, estimated, source, retrieved_ms";

fn from_row(row: &Row<'_>) -> Result<IntensityPoint, StoreError> {
    let bad = |i: usize, what: String| {
        rusqlite::Error::FromSqlConversionFailure(i, Type::Text, what.into())
    };
    let factor: String = row.get(4)?;
    let factor = Factor::parse(&factor).ok_or_else(|| bad(4, format!("factor {factor:?}")))?;
    let basis: String = row.get(5)?;
    let basis = Basis::parse(&basis).ok_or_else(|| bad(5, format!("basis {basis:?}")))?;
    Ok(IntensityPoint {
        zone: row.get(0)?,
        start_ms: row.get(1)?,
        end_ms: row.get(2)?,
        intensity: Intensity::new(factor, GramsPerKwh(row.get(3)?)),
        basis,
        estimated: row.get(6)?,
        source: row.get(7)?,
        retrieved_ms: row.get(8)?,
    })
}

/// The zones the table holds a point of, in order.
pub fn zones(conn: &Connection) -> Result<Vec<String>, StoreError> {
    let mut st = conn.prepare("SELECT DISTINCT zone FROM grid_intensity ORDER BY zone")?;
    st.query_map([], |r| r.get(0))?.collect()
}

/// Points of `zone` meeting `[from_ms, to_ms)` that pass `filter`, by
/// start, then source, factor and basis.
pub fn overlapping(
    conn: &Connection,
    zone: &str,
    from_ms: i64,
    to_ms: i64,
    filter: &Filter,
) -> Result<Vec<IntensityPoint>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM grid_intensity
         WHERE zone = ?1 AND end_ms > ?2 AND start_ms < ?3
           AND (?4 IS NULL OR source = ?4)
           AND (?5 IS NULL OR factor = ?5)
           AND (?6 IS NULL OR basis = ?6)
         ORDER BY start_ms, source, factor, basis"
    ))?;
    let rows = stmt.query_map(
        params![
            zone,
            from_ms,
            to_ms,
            filter.source,
            filter.factor.map(Factor::as_str),
            filter.basis.map(Basis::as_str),
        ],
        from_row,
    )?;
    rows.collect()
}

/// The point of `zone` passing `filter` with the latest start not after
/// `at_ms` (the value in force then, forecasts beyond it left out); ties
/// go to the latest retrieved.
pub fn latest(
    conn: &Connection,
    zone: &str,
    at_ms: i64,
    filter: &Filter,
) -> Result<Option<IntensityPoint>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM grid_intensity
         WHERE zone = ?1 AND start_ms <= ?2
           AND (?3 IS NULL OR source = ?3)
           AND (?4 IS NULL OR factor = ?4)
           AND (?5 IS NULL OR basis = ?5)
         ORDER BY start_ms DESC, retrieved_ms DESC, source, factor, basis
         LIMIT 1"
    ))?;
    let mut rows = stmt.query_map(
        params![
            zone,
            at_ms,
            filter.source,
            filter.factor.map(Factor::as_str),
            filter.basis.map(Basis::as_str),
        ],
        from_row,
    )?;
    rows.next().transpose()
}

/// Why a read or write of the grid points failed: the backend's own
/// error, boxed so that no caller names the backend.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct GridStoreError(pub Box<dyn std::error::Error + Send + Sync>);

impl From<rusqlite::Error> for GridStoreError {
    fn from(e: rusqlite::Error) -> Self {
        GridStoreError(Box::new(e))
    }
}

/// The grid points as their readers see them (carbon accounting, the
/// signals, the gauges): what a backend of the grid table implements.
/// Object safe; SQLite's is a `rusqlite::Connection` with [`init`] run.
pub trait GridRead {
    /// The zones with at least one point, in order.
    fn grid_zones(&self) -> Result<Vec<String>, GridStoreError>;

    /// Points of `zone` meeting `[from_ms, to_ms)` that pass `filter`, by
    /// start, then source, factor and basis.
    fn grid_points(
        &self,
        zone: &str,
        from_ms: i64,
        to_ms: i64,
        filter: &Filter,
    ) -> Result<Vec<IntensityPoint>, GridStoreError>;

    /// The point of `zone` passing `filter` in force at `at_ms` (latest
    /// start not after it; ties to the latest retrieved).
    fn grid_latest(
        &self,
        zone: &str,
        at_ms: i64,
        filter: &Filter,
    ) -> Result<Option<IntensityPoint>, GridStoreError>;
}

/// Writes of grid points.
pub trait GridWrite {
    /// Writes `points` in one transaction, all or none, each replacing its
    /// row under the module's rule; returns the rows written or replaced.
    fn upsert_grid_points(&mut self, points: &[IntensityPoint]) -> Result<usize, GridStoreError>;
}

impl GridRead for Connection {
    fn grid_zones(&self) -> Result<Vec<String>, GridStoreError> {
        Ok(zones(self)?)
    }

    fn grid_points(
        &self,
        zone: &str,
        from_ms: i64,
        to_ms: i64,
        filter: &Filter,
    ) -> Result<Vec<IntensityPoint>, GridStoreError> {
        Ok(overlapping(self, zone, from_ms, to_ms, filter)?)
    }

    fn grid_latest(
        &self,
        zone: &str,
        at_ms: i64,
        filter: &Filter,
    ) -> Result<Option<IntensityPoint>, GridStoreError> {
        Ok(latest(self, zone, at_ms, filter)?)
    }
}

impl GridWrite for Connection {
    fn upsert_grid_points(&mut self, points: &[IntensityPoint]) -> Result<usize, GridStoreError> {
        Ok(upsert_all(self, points)?)
    }
}

impl<T: GridWrite + ?Sized> GridWrite for Box<T> {
    fn upsert_grid_points(&mut self, points: &[IntensityPoint]) -> Result<usize, GridStoreError> {
        (**self).upsert_grid_points(points)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn db() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        init(&conn).unwrap();
        // Idempotent.
        init(&conn).unwrap();
        conn
    }

    fn pt(start_ms: i64, g: f64, estimated: bool, retrieved_ms: i64) -> IntensityPoint {
        IntensityPoint {
            zone: "FR".into(),
            start_ms,
            end_ms: start_ms + 900_000,
            intensity: Intensity::Average(GramsPerKwh(g)),
            basis: Basis::Direct,
            estimated,
            source: "rte-eco2mix".into(),
            retrieved_ms,
        }
    }

    #[test]
    fn the_traits_read_and_write_the_same_table() {
        let mut conn = db();
        let w: &mut dyn GridWrite = &mut conn;
        assert_eq!(
            w.upsert_grid_points(&[pt(0, 50.0, false, 1), pt(900_000, 60.0, true, 1)])
                .unwrap(),
            2
        );
        let mut other = pt(0, 70.0, false, 1);
        other.zone = "DE".into();
        let mut boxed: Box<dyn GridWrite> = Box::new(db());
        assert_eq!(boxed.upsert_grid_points(&[other.clone()]).unwrap(), 1);
        conn.upsert_grid_points(&[other]).unwrap();
        let r: &dyn GridRead = &conn;
        assert_eq!(
            r.grid_zones().unwrap(),
            vec!["DE".to_owned(), "FR".to_owned()]
        );
        let fr = r
            .grid_points("FR", 0, 1_800_000, &Filter::default())
            .unwrap();
        assert_eq!(fr, vec![pt(0, 50.0, false, 1), pt(900_000, 60.0, true, 1)]);
        assert_eq!(
            r.grid_latest("FR", 1_000_000, &Filter::default()).unwrap(),
            Some(pt(900_000, 60.0, true, 1))
        );
        assert_eq!(r.grid_latest("FR", -1, &Filter::default()).unwrap(), None);
    }

    fn all(conn: &Connection) -> Vec<IntensityPoint> {
        overlapping(conn, "FR", i64::MIN, i64::MAX, &Filter::default()).unwrap()
    }

    #[test]
    fn grid_store_round_trip_and_overlap() {
        let mut conn = db();
        let mut marginal = pt(0, 400.0, false, 5);
        marginal.intensity = Intensity::Marginal(GramsPerKwh(400.0));
        marginal.source = "watttime".into();
        let points = vec![
            pt(0, 70.0, false, 5),
            pt(900_000, 71.5, false, 5),
            marginal.clone(),
        ];
        assert_eq!(upsert_all(&mut conn, &points).unwrap(), 3);
        let got = all(&conn);
        assert_eq!(
            got,
            vec![points[0].clone(), marginal.clone(), points[1].clone()]
        );
        // Half-open: [900_000, 1_800_000) meets only the second.
        let got = overlapping(&conn, "FR", 900_000, 1_800_000, &Filter::default()).unwrap();
        assert_eq!(got, vec![points[1].clone()]);
        // A range inside one span finds it.
        let got =
            overlapping(&conn, "FR", 1_000, 2_000, &Filter::inventory(Basis::Direct)).unwrap();
        assert_eq!(got, vec![points[0].clone()]);
        // Marginal rows come back marginal.
        let m = Filter {
            factor: Some(Factor::Marginal),
            ..Filter::default()
        };
        let got = overlapping(&conn, "FR", 0, 1, &m).unwrap();
        assert_eq!(got.len(), 1);
        assert!(got[0].inventory_factor().is_err());
        assert!(
            overlapping(&conn, "DE", 0, 1, &Filter::default())
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn grid_store_replacement_rules() {
        let conn = db();
        upsert(&conn, &[pt(0, 50.0, true, 10)]).unwrap();
        // An older retrieval does not overwrite.
        assert_eq!(upsert(&conn, &[pt(0, 60.0, false, 9)]).unwrap(), 0);
        assert_eq!(all(&conn)[0].signal().0, 50.0);
        // A newer measured value replaces the estimate.
        assert_eq!(upsert(&conn, &[pt(0, 55.0, false, 11)]).unwrap(), 1);
        assert_eq!(all(&conn)[0].signal().0, 55.0);
        // A later estimate does not replace a measured value.
        assert_eq!(upsert(&conn, &[pt(0, 99.0, true, 12)]).unwrap(), 0);
        let p = &all(&conn)[0];
        assert_eq!(
            (p.signal().0, p.estimated, p.retrieved_ms),
            (55.0, false, 11)
        );
        // A newer measured value (revision) does.
        assert_eq!(upsert(&conn, &[pt(0, 56.0, false, 13)]).unwrap(), 1);
        assert_eq!(all(&conn).len(), 1);
        assert_eq!(all(&conn)[0].signal().0, 56.0);
    }

    #[test]
    fn grid_store_latest_ignores_future() {
        let conn = db();
        upsert(
            &conn,
            &[
                pt(0, 1.0, false, 1),
                pt(900_000, 2.0, false, 1),
                pt(1_800_000, 3.0, true, 1),
            ],
        )
        .unwrap();
        let l = latest(&conn, "FR", 1_000_000, &Filter::default())
            .unwrap()
            .unwrap();
        assert_eq!(l.start_ms, 900_000);
        let l = latest(&conn, "FR", i64::MAX, &Filter::default())
            .unwrap()
            .unwrap();
        assert_eq!(l.start_ms, 1_800_000);
        assert!(
            latest(&conn, "FR", -1, &Filter::default())
                .unwrap()
                .is_none()
        );
        let other = Filter {
            source: Some("electricitymaps".into()),
            ..Filter::default()
        };
        assert!(latest(&conn, "FR", i64::MAX, &other).unwrap().is_none());
    }

    #[test]
    fn grid_store_refuses_bad_rows() {
        let conn = db();
        let mut p = pt(0, 1.0, false, 1);
        p.end_ms = 0;
        assert!(upsert(&conn, &[p]).is_err());
        conn.execute(
            "INSERT INTO grid_intensity VALUES ('FR', 0, 1, 1.0, 'average', 'direct', 0, 's', 0)",
            [],
        )
        .unwrap();
        conn.execute("PRAGMA ignore_check_constraints = 1", [])
            .unwrap();
        conn.execute(
            "INSERT INTO grid_intensity VALUES ('FR', 5, 6, 1.0, 'weird', 'direct', 0, 's', 0)",
            [],
        )
        .unwrap();
        assert!(overlapping(&conn, "FR", 0, 10, &Filter::default()).is_err());
    }

    // 256 cases (proptest's default).
    proptest! {
        /// The SQL overlap query returns exactly what a plain filter over
        /// the stored points keeps, whatever the order of insertion.
        /// Targets spans that straddle, touch (half-open ends) or miss the
        /// query: up to 40 spans of 1-19 ms start in 0..100 and the query
        /// (1-49 ms) in 0..120, so most cases have all three, and spans that
        /// start at the same instant (the later one dropped, as the
        /// store's key would).
        #[test]
        fn grid_store_overlap_matches_filter(
            spans in proptest::collection::vec((0i64..100, 1i64..20), 1..40),
            from in 0i64..120,
            len in 1i64..50,
        ) {
            let conn = db();
            let mut points: Vec<IntensityPoint> = Vec::new();
            for (i, (start, dur)) in spans.iter().enumerate() {
                let mut p = pt(*start, i as f64, false, 1);
                p.end_ms = start + dur;
                if points.iter().any(|q| q.start_ms == p.start_ms) {
                    continue;
                }
                points.push(p);
            }
            for p in points.iter().rev() {
                upsert(&conn, std::slice::from_ref(p)).unwrap();
            }
            let got = overlapping(&conn, "FR", from, from + len, &Filter::default()).unwrap();
            let mut want: Vec<IntensityPoint> =
                points.into_iter().filter(|p| p.overlaps(from, from + len)).collect();
            want.sort_by_key(|p| p.start_ms);
            prop_assert_eq!(got, want);
        }
    }
}
