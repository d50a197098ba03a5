//! The SQLite ledger: deduplication keys, energy per sensor per minute and
//! per hour, hosts, and the quarantine of rejected messages.
//!
//! Energy is stored as integer microjoules, measured and estimated apart.
//! A group of messages is applied in one transaction: the dedupe keys and
//! the energy they carry commit together or not at all, which is what makes
//! acknowledging after commit safe.

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use std::collections::HashMap;
use std::path::Path;

pub mod history;
pub mod losses;
pub mod manual;

/// Storage failures (retryable unless the database is corrupt or the disk full).
pub type StoreError = rusqlite::Error;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS batches (
    host TEXT NOT NULL, epoch INTEGER NOT NULL, seq INTEGER NOT NULL,
    boot_id TEXT NOT NULL, received_ms INTEGER NOT NULL, readings INTEGER NOT NULL,
    digest BLOB,
    PRIMARY KEY (host, epoch, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS energy_minute (
    host TEXT NOT NULL, sensor TEXT NOT NULL, bucket_ms INTEGER NOT NULL,
    measured_uj INTEGER NOT NULL DEFAULT 0, estimated_uj INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (host, sensor, bucket_ms)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS energy_hour (
    host TEXT NOT NULL, sensor TEXT NOT NULL, bucket_ms INTEGER NOT NULL,
    measured_uj INTEGER NOT NULL DEFAULT 0, estimated_uj INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (host, sensor, bucket_ms)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS energy_minute_time ON energy_minute (bucket_ms);
CREATE INDEX IF NOT EXISTS energy_hour_time ON energy_hour (bucket_ms);
CREATE TABLE IF NOT EXISTS hosts (
    host TEXT PRIMARY KEY, site TEXT NOT NULL,
    boot_id TEXT, epoch INTEGER, last_seq INTEGER, last_seen_ms INTEGER,
    online INTEGER, status_ms INTEGER, meta TEXT
);
-- Meter registers and temperatures that facility figures read (heat and
-- water meters): every value, so intervals come from exact differences.
CREATE TABLE IF NOT EXISTS registers (
    host TEXT NOT NULL, sensor TEXT NOT NULL, quantity TEXT NOT NULL,
    at_ms INTEGER NOT NULL, value REAL NOT NULL,
    PRIMARY KEY (host, sensor, quantity, at_ms)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS quarantine (
    id INTEGER PRIMARY KEY, received_ms INTEGER NOT NULL, topic TEXT NOT NULL,
    reason TEXT NOT NULL, detail TEXT NOT NULL, payload BLOB NOT NULL
);
"#;

/// Kept of a rejected payload: enough to see what was sent, bounded so a
/// flood of huge messages cannot fill the disk.
pub const QUARANTINE_PAYLOAD_BYTES: usize = 4096;
/// Rows kept in quarantine; older ones are deleted.
pub const QUARANTINE_ROWS: i64 = 10_000;

/// Opens (creating if needed) the ledger at `path`, in WAL mode.
pub fn open(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)?;
    configure(&conn)?;
    Ok(conn)
}

/// An in-memory ledger (benchmarks and unit tests).
pub fn open_in_memory() -> Result<Connection, StoreError> {
    let conn = Connection::open_in_memory()?;
    configure(&conn)?;
    Ok(conn)
}

fn configure(conn: &Connection) -> Result<(), StoreError> {
    // WAL: readers (the API) never block the writer. synchronous=FULL: a
    // commit is on disk before the broker gets its acknowledgement.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.execute_batch(SCHEMA)?;
    conn.execute_batch(losses::SCHEMA)?;
    manual::init(conn)?;
    losses::migrate(conn)?;
    migrate(conn)
}

/// Brings a ledger written by an older collector up to [`SCHEMA`]:
/// `batches.digest` (SHA-256 of each batch's JSON) came with signed
/// batches; the rows before it have none, and a batch arriving again
/// under their keys compares as unknown (a plain duplicate).
fn migrate(conn: &Connection) -> Result<(), StoreError> {
    let has_digest: bool = conn.query_row(
        "SELECT COUNT(*) > 0 FROM pragma_table_info('batches') WHERE name = 'digest'",
        [],
        |r| r.get(0),
    )?;
    if !has_digest {
        conn.execute_batch("ALTER TABLE batches ADD COLUMN digest BLOB")?;
    }
    Ok(())
}

/// Energy to add to one bucket.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Amount {
    /// Measured microjoules.
    pub measured: u64,
    /// Estimated microjoules.
    pub estimated: u64,
}

/// Energy summed over many buckets, µJ. Wider than a bucket's [`Amount`]:
/// a 10 MW facility meter passes 2^63 µJ (SQLite's integer range) in
/// about 11 days and 2^64 in 21.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Total {
    /// Measured microjoules.
    pub measured: u128,
    /// Estimated microjoules.
    pub estimated: u128,
}

/// SQL summing the µJ column `col` without overflowing SQLite's 64-bit
/// integers: whole joules and the µJ remainders as two sums, rejoined
/// exactly by [`joined`].
fn split_sum(col: &str) -> String {
    format!("SUM({col} / 1000000), SUM({col} % 1000000)")
}

/// The µJ total from the two columns of [`split_sum`] at `at`. Signed
/// parts are joined as such (SQLite's `/` and `%` keep the dividend's
/// sign); a float, left by a ledger written before sums were clamped,
/// counts at its value; a negative total (never written by vigie) is 0.
fn joined(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<u128> {
    use rusqlite::types::Value;
    let part = |i: usize| -> rusqlite::Result<i128> {
        Ok(match r.get::<_, Value>(i)? {
            Value::Integer(v) => i128::from(v),
            Value::Real(v) if v.is_finite() => v as i128,
            _ => 0,
        })
    };
    let total = part(at)? * 1_000_000 + part(at + 1)?;
    Ok(u128::try_from(total).unwrap_or(0))
}

/// Key of a bucket: host, sensor, bucket start.
pub type BucketKey = (String, String, i64);

/// Energy and dedupe keys of a group of messages, applied in one transaction.
#[derive(Debug, Default)]
pub struct Pending {
    /// Minute buckets.
    pub minute: HashMap<BucketKey, Amount>,
    /// Hour buckets.
    pub hour: HashMap<BucketKey, Amount>,
}

impl Pending {
    /// Forgets everything (after a commit or a rollback).
    pub fn clear(&mut self) {
        self.minute.clear();
        self.hour.clear();
    }
}

/// What [`insert_batch_key`] found under a batch's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyInsert {
    /// A new key, now recorded with its digest: add the batch.
    New,
    /// The key with the same digest: a redelivery, nothing to add.
    Same,
    /// The key with another digest: not the same batch. Nothing added;
    /// the stored content stays.
    Conflict {
        /// The stored digest.
        stored: Vec<u8>,
    },
    /// The key from a ledger older than digests: cannot compare, taken
    /// as a duplicate.
    Unknown,
}

/// Records a batch key with the SHA-256 `digest` of its JSON, or says
/// what the ledger already holds under it.
#[allow(clippy::too_many_arguments)]
pub fn insert_batch_key(
    tx: &Transaction<'_>,
    host: &str,
    epoch: u64,
    seq: u64,
    boot_id: &str,
    received_ms: i64,
    readings: usize,
    digest: &[u8; 32],
) -> Result<KeyInsert, StoreError> {
    let mut stmt = tx.prepare_cached(
        "INSERT OR IGNORE INTO batches (host, epoch, seq, boot_id, received_ms, readings, digest) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    let n = stmt.execute(params![
        host,
        epoch as i64,
        seq as i64,
        boot_id,
        received_ms,
        readings as i64,
        &digest[..]
    ])?;
    if n == 1 {
        return Ok(KeyInsert::New);
    }
    let stored: Option<Vec<u8>> = tx
        .prepare_cached("SELECT digest FROM batches WHERE host = ?1 AND epoch = ?2 AND seq = ?3")?
        .query_row(params![host, epoch as i64, seq as i64], |r| r.get(0))?;
    Ok(match stored {
        None => KeyInsert::Unknown,
        Some(d) if d == digest[..] => KeyInsert::Same,
        Some(stored) => KeyInsert::Conflict { stored },
    })
}

/// The upsert of `col`: the sum, clamped at i64::MAX µJ (2.56 GWh in one
/// bucket, reachable only by a host replaying claims on one hour). SQLite
/// would otherwise turn the overflowing sum into a float, which every later
/// integer read of the ledger refuses.
fn saturating_sum(col: &str) -> String {
    format!(
        "CASE WHEN excluded.{col} > 9223372036854775807 - {col} THEN 9223372036854775807 ELSE {col} + excluded.{col} END"
    )
}

/// Adds the pending energy into the bucket tables.
pub fn add_energy(tx: &Transaction<'_>, pending: &Pending) -> Result<(), StoreError> {
    for (table, map) in [
        ("energy_minute", &pending.minute),
        ("energy_hour", &pending.hour),
    ] {
        let mut stmt = tx.prepare_cached(&format!(
            "INSERT INTO {table} (host, sensor, bucket_ms, measured_uj, estimated_uj) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (host, sensor, bucket_ms) DO UPDATE SET
               measured_uj = {m},
               estimated_uj = {e}",
            m = saturating_sum("measured_uj"),
            e = saturating_sum("estimated_uj"),
        ))?;
        // In key order: consecutive upserts land on neighbouring B-tree
        // pages instead of random ones, which is markedly cheaper.
        let mut rows: Vec<(&BucketKey, &Amount)> = map.iter().collect();
        rows.sort_unstable_by(|a, b| a.0.cmp(b.0));
        for ((host, sensor, bucket), a) in rows {
            stmt.execute(params![
                host,
                sensor,
                bucket,
                i64::try_from(a.measured).unwrap_or(i64::MAX),
                i64::try_from(a.estimated).unwrap_or(i64::MAX)
            ])?;
        }
    }
    Ok(())
}

/// Gauge quantities kept as register series (the rest are only exported
/// as their latest value).
pub const REGISTER_QUANTITIES: &[vigie_protocol::GaugeQuantity] = &[
    vigie_protocol::GaugeQuantity::HeatEnergyKwh,
    vigie_protocol::GaugeQuantity::VolumeCubicMetres,
    vigie_protocol::GaugeQuantity::SupplyTemperatureCelsius,
    vigie_protocol::GaugeQuantity::ReturnTemperatureCelsius,
];

/// Records the register gauges of an accepted batch.
pub fn record_registers(
    tx: &Transaction<'_>,
    host: &str,
    gauges: &[vigie_protocol::Gauge],
) -> Result<(), StoreError> {
    let mut stmt = tx.prepare_cached(
        "INSERT OR REPLACE INTO registers (host, sensor, quantity, at_ms, value) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for g in gauges
        .iter()
        .filter(|g| REGISTER_QUANTITIES.contains(&g.quantity))
    {
        stmt.execute(params![
            host,
            g.sensor,
            g.quantity.as_str(),
            g.at_ms,
            g.value
        ])?;
    }
    Ok(())
}

/// Every (host, sensor) with register values, in order: one index seek
/// per pair (a skip scan), not a pass over the values.
pub fn register_sensors(conn: &Connection) -> Result<Vec<(String, String)>, StoreError> {
    let mut same_host = conn.prepare(
        "SELECT sensor FROM registers WHERE host = ?1 AND sensor > ?2 ORDER BY sensor LIMIT 1",
    )?;
    let mut next_host = conn.prepare(
        "SELECT host, sensor FROM registers WHERE host > ?1 ORDER BY host, sensor LIMIT 1",
    )?;
    let mut out: Vec<(String, String)> = Vec::new();
    let mut at: Option<(String, String)> = next_host
        .query_row(params![""], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    while let Some((host, sensor)) = at {
        at = match same_host
            .query_row(params![host, sensor], |r| r.get::<_, String>(0))
            .optional()?
        {
            Some(next) => Some((host.clone(), next)),
            None => next_host
                .query_row(params![host], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?,
        };
        out.push((host, sensor));
    }
    Ok(out)
}

/// Register values of (`host`, `sensor`, `quantity`) in [`from_ms`,
/// `to_ms`], plus the last one before `from_ms` and the first after
/// `to_ms` (intervals crossing the period's edges count their part), in
/// time order.
pub fn registers(
    conn: &Connection,
    host: &str,
    sensor: &str,
    quantity: &str,
    from_ms: i64,
    to_ms: i64,
) -> Result<Vec<(i64, f64)>, StoreError> {
    let mut before = conn.prepare_cached(
        "SELECT at_ms, value FROM registers WHERE host = ?1 AND sensor = ?2 AND quantity = ?3 AND at_ms < ?4
         ORDER BY at_ms DESC LIMIT 1",
    )?;
    let mut out: Vec<(i64, f64)> = before
        .query_map(params![host, sensor, quantity, from_ms], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?
        .collect::<Result<_, _>>()?;
    let mut within = conn.prepare_cached(
        "SELECT at_ms, value FROM registers WHERE host = ?1 AND sensor = ?2 AND quantity = ?3
         AND at_ms >= ?4 AND at_ms <= ?5 ORDER BY at_ms",
    )?;
    let rows = within.query_map(params![host, sensor, quantity, from_ms, to_ms], |r| {
        Ok((r.get(0)?, r.get(1)?))
    })?;
    for r in rows {
        out.push(r?);
    }
    let mut after = conn.prepare_cached(
        "SELECT at_ms, value FROM registers WHERE host = ?1 AND sensor = ?2 AND quantity = ?3 AND at_ms > ?4
         ORDER BY at_ms LIMIT 1",
    )?;
    for r in after.query_map(params![host, sensor, quantity, to_ms], |r| {
        Ok((r.get(0)?, r.get(1)?))
    })? {
        out.push(r?);
    }
    Ok(out)
}

/// Updates a host's last-seen row after an accepted batch.
pub fn touch_host(
    tx: &Transaction<'_>,
    site: &str,
    host: &str,
    boot_id: &str,
    epoch: u64,
    seq: u64,
    seen_ms: i64,
) -> Result<(), StoreError> {
    let mut stmt = tx.prepare_cached(
        "INSERT INTO hosts (host, site, boot_id, epoch, last_seq, last_seen_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (host) DO UPDATE SET site = excluded.site, boot_id = excluded.boot_id,
           epoch = excluded.epoch, last_seq = excluded.last_seq, last_seen_ms = excluded.last_seen_ms
         WHERE excluded.epoch > hosts.epoch OR (excluded.epoch = hosts.epoch AND excluded.last_seq > hosts.last_seq)
           OR hosts.epoch IS NULL",
    )?;
    stmt.execute(params![
        host,
        site,
        boot_id,
        epoch as i64,
        seq as i64,
        seen_ms
    ])?;
    Ok(())
}

/// Records a host's retained status (online or offline).
pub fn set_status(
    tx: &Transaction<'_>,
    site: &str,
    host: &str,
    online: bool,
    at_ms: i64,
) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO hosts (host, site, online, status_ms) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (host) DO UPDATE SET online = excluded.online, status_ms = excluded.status_ms",
    )?
    .execute(params![host, site, online, at_ms])?;
    Ok(())
}

/// Records a host's retained inventory (JSON as received and validated).
pub fn set_meta(
    tx: &Transaction<'_>,
    site: &str,
    host: &str,
    meta: &str,
) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO hosts (host, site, meta) VALUES (?1, ?2, ?3)
         ON CONFLICT (host) DO UPDATE SET meta = excluded.meta",
    )?
    .execute(params![host, site, meta])?;
    Ok(())
}

/// Keeps a rejected message for inspection (bounded).
pub fn quarantine(
    tx: &Transaction<'_>,
    received_ms: i64,
    topic: &str,
    reason: &str,
    detail: &str,
    payload: &[u8],
) -> Result<(), StoreError> {
    let topic: String = topic.chars().take(256).collect();
    let kept = &payload[..payload.len().min(QUARANTINE_PAYLOAD_BYTES)];
    tx.prepare_cached(
        "INSERT INTO quarantine (received_ms, topic, reason, detail, payload) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![received_ms, topic, reason, detail, kept])?;
    tx.prepare_cached("DELETE FROM quarantine WHERE id <= (SELECT MAX(id) FROM quarantine) - ?1")?
        .execute(params![QUARANTINE_ROWS])?;
    Ok(())
}

/// Deletes the minute buckets of the whole hours before `before_ms`
/// (rounded down to an hour, so that an hour keeps all its minutes or
/// none, and ledger meters read a pruned hour from its hour bucket); hour
/// buckets are kept. One hour per statement, so the ledger writer, which
/// waits for the lock up to its busy timeout, is never held up long.
/// Returns the rows deleted.
pub fn prune_minutes(conn: &Connection, before_ms: i64) -> Result<u64, StoreError> {
    use vigie_energy::HOUR_MS;
    let cutoff = before_ms.div_euclid(HOUR_MS) * HOUR_MS;
    let mut oldest =
        conn.prepare_cached("SELECT MIN(bucket_ms) FROM energy_minute WHERE bucket_ms >= ?1")?;
    let mut delete =
        conn.prepare_cached("DELETE FROM energy_minute WHERE bucket_ms >= ?1 AND bucket_ms < ?2")?;
    let (mut from, mut deleted) = (i64::MIN, 0u64);
    loop {
        // The next hour holding minutes: gaps are skipped, not walked.
        let Some(t) = oldest.query_row(params![from], |r| r.get::<_, Option<i64>>(0))? else {
            break;
        };
        let hour = t.div_euclid(HOUR_MS) * HOUR_MS;
        if hour >= cutoff {
            break;
        }
        deleted += delete.execute(params![hour, hour + HOUR_MS])? as u64;
        from = hour + HOUR_MS;
    }
    Ok(deleted)
}

/// Total energy per (host, sensor) over all time, from the hour table.
pub fn totals(conn: &Connection) -> Result<Vec<(String, String, Total)>, StoreError> {
    let mut stmt = conn.prepare(&format!(
        "SELECT host, sensor, {}, {} FROM energy_hour GROUP BY host, sensor ORDER BY host, sensor",
        split_sum("measured_uj"),
        split_sum("estimated_uj")
    ))?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            Total {
                measured: joined(r, 2)?,
                estimated: joined(r, 4)?,
            },
        ))
    })?;
    rows.collect()
}

/// Which bucket table a query reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// `energy_minute`.
    Minute,
    /// `energy_hour`.
    Hour,
}

impl Resolution {
    /// Bucket width in milliseconds.
    pub fn bucket_ms(self) -> i64 {
        match self {
            Resolution::Minute => vigie_energy::MINUTE_MS,
            Resolution::Hour => vigie_energy::HOUR_MS,
        }
    }
    fn table(self) -> &'static str {
        match self {
            Resolution::Minute => "energy_minute",
            Resolution::Hour => "energy_hour",
        }
    }
    /// Name in API responses.
    pub fn as_str(self) -> &'static str {
        match self {
            Resolution::Minute => "minute",
            Resolution::Hour => "hour",
        }
    }
}

/// One row of an energy query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnergyRow {
    /// Host.
    pub host: String,
    /// Sensor, when grouped by sensor.
    pub sensor: Option<String>,
    /// Bucket start, when grouped by bucket.
    pub bucket_ms: Option<i64>,
    /// Energy.
    pub amount: Total,
}

/// Sums energy over buckets starting in [from_ms, to_ms), grouped by host,
/// and by sensor and/or bucket when asked.
pub fn energy(
    conn: &Connection,
    res: Resolution,
    from_ms: i64,
    to_ms: i64,
    by_sensor: bool,
    by_bucket: bool,
) -> Result<Vec<EnergyRow>, StoreError> {
    let sensor = if by_sensor { "sensor" } else { "NULL" };
    let bucket = if by_bucket { "bucket_ms" } else { "NULL" };
    let sql = format!(
        "SELECT host, {sensor}, {bucket}, {m}, {e} FROM {table}
         WHERE bucket_ms >= ?1 AND bucket_ms < ?2 GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
        m = split_sum("measured_uj"),
        e = split_sum("estimated_uj"),
        table = res.table()
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(params![from_ms, to_ms], |r| {
        Ok(EnergyRow {
            host: r.get(0)?,
            sensor: r.get(1)?,
            bucket_ms: r.get(2)?,
            amount: Total {
                measured: joined(r, 3)?,
                estimated: joined(r, 5)?,
            },
        })
    })?;
    rows.collect()
}

/// Sums energy over [from_ms, to_ms) (whole minutes), grouped by host
/// and by sensor when asked: whole hours from the hour table, the partial
/// hours at either edge from the minute table, in one read snapshot.
/// Exact (an hour bucket is the sum of its minutes), and complete over
/// whole hours whose minutes were pruned (`store.minute_retention`) or never
/// written (simulated history); an edge hour without minutes counts none.
pub fn energy_span(
    conn: &Connection,
    from_ms: i64,
    to_ms: i64,
    by_sensor: bool,
) -> Result<Vec<EnergyRow>, StoreError> {
    use vigie_energy::HOUR_MS;
    let h0 = (from_ms + HOUR_MS - 1).div_euclid(HOUR_MS) * HOUR_MS;
    let h1 = to_ms.div_euclid(HOUR_MS) * HOUR_MS;
    let parts: Vec<(Resolution, i64, i64)> = if h0 < h1 {
        vec![
            (Resolution::Minute, from_ms, h0),
            (Resolution::Hour, h0, h1),
            (Resolution::Minute, h1, to_ms),
        ]
    } else {
        vec![(Resolution::Minute, from_ms, to_ms)]
    };
    let mut merged: std::collections::BTreeMap<(String, Option<String>), Total> =
        std::collections::BTreeMap::new();
    // One snapshot: the writer may commit between the three reads.
    let snapshot = conn.unchecked_transaction()?;
    for (res, a, b) in parts {
        if a >= b {
            continue;
        }
        for r in energy(&snapshot, res, a, b, by_sensor, false)? {
            let t = merged.entry((r.host, r.sensor)).or_default();
            t.measured += r.amount.measured;
            t.estimated += r.amount.estimated;
        }
    }
    Ok(merged
        .into_iter()
        .map(|((host, sensor), amount)| EnergyRow {
            host,
            sensor,
            bucket_ms: None,
            amount,
        })
        .collect())
}

/// The SQL of [`sensor_buckets`]: a range of the primary key
/// (host, sensor, bucket_ms), so its cost is that sensor's rows in the
/// period, whatever the size of the ledger.
pub fn sensor_buckets_sql(res: Resolution) -> String {
    format!(
        "SELECT bucket_ms, measured_uj, estimated_uj FROM {table}
         WHERE host = ?1 AND sensor = ?2 AND bucket_ms >= ?3 AND bucket_ms < ?4 ORDER BY bucket_ms",
        table = res.table()
    )
}

/// The buckets of one (`host`, `sensor`) starting in [`from_ms`, `to_ms`),
/// in time order, each with its energy.
pub fn sensor_buckets(
    conn: &Connection,
    res: Resolution,
    host: &str,
    sensor: &str,
    from_ms: i64,
    to_ms: i64,
) -> Result<Vec<(i64, Amount)>, StoreError> {
    let mut stmt = conn.prepare_cached(&sensor_buckets_sql(res))?;
    let rows = stmt.query_map(params![host, sensor, from_ms, to_ms], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            Amount {
                measured: r.get::<_, i64>(1)? as u64,
                estimated: r.get::<_, i64>(2)? as u64,
            },
        ))
    })?;
    rows.collect()
}

/// A host as the collector knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct HostRow {
    /// Host.
    pub host: String,
    /// Site.
    pub site: String,
    /// Boot id of the last batch.
    pub boot_id: Option<String>,
    /// Agent epoch of the last batch.
    pub epoch: Option<i64>,
    /// Sequence of the last batch.
    pub last_seq: Option<i64>,
    /// When the last batch arrived.
    pub last_seen_ms: Option<i64>,
    /// Retained status, if any was seen.
    pub online: Option<bool>,
    /// Inventory JSON, if any was seen.
    pub meta: Option<String>,
}

/// All hosts, by name.
pub fn hosts(conn: &Connection) -> Result<Vec<HostRow>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT host, site, boot_id, epoch, last_seq, last_seen_ms, online, meta FROM hosts ORDER BY host",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(HostRow {
            host: r.get(0)?,
            site: r.get(1)?,
            boot_id: r.get(2)?,
            epoch: r.get(3)?,
            last_seq: r.get(4)?,
            last_seen_ms: r.get(5)?,
            online: r.get(6)?,
            meta: r.get(7)?,
        })
    })?;
    rows.collect()
}

/// Per host, the sensors its inventory marks as a component or an
/// alternative of another sensor (`SensorMeta::scope`): kept per sensor,
/// never added into a host's or a query's total, so one device's energy
/// counts once. Hosts without an inventory, and inventories written before
/// scopes existed, count every sensor.
pub fn uncounted_sensors(
    conn: &Connection,
) -> Result<HashMap<String, std::collections::HashSet<String>>, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT host, meta FROM hosts WHERE meta IS NOT NULL")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    let mut out = HashMap::new();
    for row in rows {
        let (host, meta) = row?;
        let skip = uncounted_in(&meta);
        if !skip.is_empty() {
            out.insert(host, skip);
        }
    }
    Ok(out)
}

/// [`uncounted_sensors`] of one host.
pub fn uncounted_sensors_of(
    conn: &Connection,
    host: &str,
) -> Result<std::collections::HashSet<String>, StoreError> {
    let meta: Option<Option<String>> = conn
        .prepare_cached("SELECT meta FROM hosts WHERE host = ?1")?
        .query_row([host], |r| r.get(0))
        .optional()?;
    Ok(meta.flatten().map(|m| uncounted_in(&m)).unwrap_or_default())
}

/// The sensors a stored inventory marks as not in the host's total.
fn uncounted_in(meta: &str) -> std::collections::HashSet<String> {
    // Stored only after decoding at ingest; a row that no longer
    // decodes (a hand edit) counts every sensor rather than none.
    let Ok(meta) = serde_json::from_str::<vigie_protocol::HostMeta>(meta) else {
        return std::collections::HashSet::new();
    };
    meta.sensors
        .into_iter()
        .filter(|s| !s.in_totals())
        .map(|s| s.name)
        .collect()
}

/// Number of quarantined messages.
pub fn quarantine_count(conn: &Connection) -> Result<i64, StoreError> {
    conn.query_row("SELECT COUNT(*) FROM quarantine", [], |r| r.get(0))
}

/// When the ledger's data starts: the earliest energy bucket, hand
/// reading or register value from 2000 on (a device whose clock was never
/// set stamps 1970, and must not stretch "all time" over decades).
pub fn first_data_ms(conn: &Connection) -> Result<Option<i64>, StoreError> {
    const FLOOR_MS: i64 = 946_684_800_000;
    conn.query_row(
        "SELECT MIN(t) FROM (SELECT MIN(bucket_ms) AS t FROM energy_hour WHERE bucket_ms >= ?1
         UNION ALL SELECT MIN(start_ms) FROM manual_readings WHERE start_ms >= ?1
         UNION ALL SELECT MIN(at_ms) FROM registers WHERE at_ms >= ?1)",
        [FLOOR_MS],
        |r| r.get(0),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn add(conn: &mut Connection, uj: u64) {
        let mut p = Pending::default();
        let key = ("h".to_owned(), "s".to_owned(), 0i64);
        let a = Amount {
            measured: uj,
            estimated: 0,
        };
        p.minute.insert(key.clone(), a);
        p.hour.insert(key, a);
        let tx = conn.transaction().unwrap();
        add_energy(&tx, &p).unwrap();
        tx.commit().unwrap();
    }

    #[test]
    fn a_bucket_claimed_past_i64_clamps_and_the_ledger_stays_readable() {
        let mut conn = open_in_memory().unwrap();
        // Three claims of 2^62 µJ on one bucket: past i64::MAX.
        for _ in 0..3 {
            add(&mut conn, 1 << 62);
        }
        let kind: String = conn
            .query_row("SELECT typeof(measured_uj) FROM energy_hour", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(kind, "integer");
        let t = totals(&conn).unwrap();
        assert_eq!(t[0].2.measured, i64::MAX as u128);
        // A pending amount past i64 is clamped too, not wrapped negative.
        let mut conn = open_in_memory().unwrap();
        add(&mut conn, u64::MAX);
        assert_eq!(totals(&conn).unwrap()[0].2.measured, i64::MAX as u128);
    }

    #[test]
    fn split_sums_join_signed_parts_and_legacy_floats() {
        let conn = open_in_memory().unwrap();
        for (b, v) in [
            (0, "1200000"),
            (3_600_000, "-400000"),
            (7_200_000, "2500000.0"),
        ] {
            conn.execute(
                &format!("INSERT INTO energy_hour (host, sensor, bucket_ms, measured_uj, estimated_uj) VALUES ('h', 's', {b}, {v}, 0)"),
                [],
            )
            .unwrap();
        }
        // 1,200,000 - 400,000 + 2,500,000.
        assert_eq!(totals(&conn).unwrap()[0].2.measured, 3_300_000);
    }
}
