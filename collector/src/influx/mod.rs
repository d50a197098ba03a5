//! The optional InfluxDB 2 sink (`[influxdb]`): minute energy and power
//! per (host, sensor) and the site's figures, as line protocol to
//! `POST /api/v2/write` (InfluxDB 2, InfluxDB 1.8+, VictoriaMetrics).
//!
//! It never slows ingest: it runs on its own task, reads the ledger on
//! its own connection (WAL: readers never block the writer), holds at
//! most `max_buffer` points (new ones refused and counted past it) and
//! writes them in batches, retrying 5xx, 429 and connection errors with
//! backoff; any other 4xx drops the batch, counted with its reason.
//!
//! Minute buckets can still grow after they close (late or redelivered
//! batches), so every `interval` the minutes from `lateness` before the
//! last closed minute (and back to the last minute written, after a
//! pause) are read again, and those whose energy changed since they were
//! queued are written again: InfluxDB keeps one point per measurement,
//! tag set and timestamp, so a rewrite replaces it. Energy committed for
//! a minute older than `lateness` when it arrives is in the ledger and
//! the API, not in InfluxDB.

mod line;
mod write;

pub use line::{ENERGY, SITE, SITE_METER};

use crate::backend::{LedgerError, LedgerRead};
use crate::metrics::{Metrics, ReasonLabels, SiteGauges};
use crate::store;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Deserialize;
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use vigie_energy::MINUTE_MS;
use write::{Attempt, Writer};

/// `[influxdb]`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct InfluxConfig {
    /// Base URL of the server (`https://influx.example:8086`); the sink
    /// posts to `<url>/api/v2/write`.
    pub url: String,
    /// Organisation (InfluxDB 2; others ignore it).
    #[serde(default)]
    pub org: String,
    /// Bucket (InfluxDB 2), or `database/retention` for InfluxDB 1.8.
    pub bucket: String,
    /// File holding the API token, sent as `Authorization: Token ...`;
    /// none: no `Authorization` header.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// PEM file of the CA(s) to trust instead of the system's.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Timestamp precision on the wire: `s` (default) or `ms`.
    #[serde(default)]
    pub precision: Precision,
    /// How often the ledger is read and the buffer written.
    #[serde(default = "d_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// How long after it closes a minute is read again for late energy.
    #[serde(default = "d_lateness", with = "humantime_serde")]
    pub lateness: Duration,
    /// At start-up, how far back minutes are written (again).
    #[serde(default = "d_backfill", with = "humantime_serde")]
    pub backfill: Duration,
    /// Most points in one request.
    #[serde(default = "d_batch_size")]
    pub batch_size: usize,
    /// Most points held while the server is slow or away; past it new
    /// points are refused (`reason="buffer_full"`).
    #[serde(default = "d_max_buffer")]
    pub max_buffer: usize,
    /// Time limit of one request.
    #[serde(default = "d_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Retries of a batch within one interval; a batch still not written
    /// stays in the buffer for the next interval.
    #[serde(default = "d_retries")]
    pub retries: u32,
    /// First wait before a retry; doubled each time up to `retry_max`.
    #[serde(default = "d_retry_initial", with = "humantime_serde")]
    pub retry_initial: Duration,
    /// Longest wait before a retry.
    #[serde(default = "d_retry_max", with = "humantime_serde")]
    pub retry_max: Duration,
}

/// Timestamp precision of the lines.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
pub enum Precision {
    /// Seconds (minute buckets start on whole seconds: nothing lost).
    #[default]
    #[serde(rename = "s")]
    Seconds,
    /// Milliseconds.
    #[serde(rename = "ms")]
    Milliseconds,
}

impl Precision {
    /// The `precision` query parameter.
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::Seconds => "s",
            Precision::Milliseconds => "ms",
        }
    }
}

fn d_interval() -> Duration {
    Duration::from_secs(10)
}
fn d_lateness() -> Duration {
    Duration::from_secs(15 * 60)
}
fn d_backfill() -> Duration {
    Duration::from_secs(3600)
}
fn d_batch_size() -> usize {
    5_000
}
fn d_max_buffer() -> usize {
    200_000
}
fn d_timeout() -> Duration {
    Duration::from_secs(10)
}
fn d_retries() -> u32 {
    3
}
fn d_retry_initial() -> Duration {
    Duration::from_secs(1)
}
fn d_retry_max() -> Duration {
    Duration::from_secs(30)
}

impl InfluxConfig {
    /// The settings' rules; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        self.base_url()?;
        if self.bucket.trim().is_empty() {
            return Err("influxdb.bucket is empty".into());
        }
        if self.batch_size == 0 {
            return Err("influxdb.batch_size must be at least 1".into());
        }
        if self.max_buffer < self.batch_size {
            return Err(format!(
                "influxdb.max_buffer ({}) must be at least influxdb.batch_size ({})",
                self.max_buffer, self.batch_size
            ));
        }
        if self.interval < Duration::from_secs(1) {
            return Err("influxdb.interval must be at least 1s".into());
        }
        if self.lateness < Duration::from_secs(60) {
            return Err("influxdb.lateness must be at least 1m".into());
        }
        if self.timeout.is_zero() {
            return Err("influxdb.timeout must be more than 0".into());
        }
        if self.retry_initial.is_zero() || self.retry_max < self.retry_initial {
            return Err(
                "influxdb.retry_initial must be more than 0 and at most influxdb.retry_max".into(),
            );
        }
        Ok(())
    }

    /// `url` checked, with a trailing `/`.
    fn base_url(&self) -> Result<reqwest::Url, String> {
        let bad = |why: &str| format!("influxdb.url {:?}: {why}", self.url);
        let mut url = reqwest::Url::parse(&self.url).map_err(|e| bad(&e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(bad("scheme must be https or http"));
        }
        if url.host_str().is_none() {
            return Err(bad("no host"));
        }
        if !url.username().is_empty() || url.password().is_some() || url.query().is_some() {
            // Not echoed: what is there may be a secret.
            return Err("influxdb.url: no credentials or query in the URL; the token comes from influxdb.token_file".into());
        }
        if !url.path().ends_with('/') {
            let path = format!("{}/", url.path());
            url.set_path(&path);
        }
        Ok(url)
    }
}

/// `[influxdb]` parsed and checked (`#[serde(deserialize_with)]` of the
/// collector configuration's field), so a bad setting stops loading with
/// the field named.
pub fn checked<'de, D>(d: D) -> Result<Option<InfluxConfig>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let c = Option::<InfluxConfig>::deserialize(d)?;
    if let Some(c) = &c {
        c.validate().map_err(serde::de::Error::custom)?;
    }
    Ok(c)
}

/// Why the sink cannot start.
#[derive(Debug, thiserror::Error)]
pub enum InfluxError {
    /// A setting, the CA file or the HTTP client.
    #[error("{0}")]
    Config(String),
    /// The token file.
    #[error("influxdb.token_file: {0}")]
    Token(#[from] vigie_service::secrets::SecretError),
}

/// Drop reasons, every one registered at 0.
pub const DROP_REASONS: [&str; 4] = ["buffer_full", "refused", "unauthorized", "invalid"];

/// The sink's own metrics.
#[derive(Debug, Clone, Default)]
pub struct SinkMetrics {
    written: Counter,
    dropped: Family<ReasonLabels, Counter>,
    errors: Counter,
    buffered: Gauge,
}

impl SinkMetrics {
    /// Registers `vigie_influxdb_*` in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = SinkMetrics::default();
        registry.register(
            "vigie_influxdb_points_written",
            "Points the InfluxDB sink wrote (a minute rewritten after late energy counts again)",
            m.written.clone(),
        );
        registry.register(
            "vigie_influxdb_points_dropped",
            "Points the InfluxDB sink dropped, by reason: buffer_full (refused past influxdb.max_buffer; minutes still in the window are read again), refused (a 4xx answer), unauthorized (401/403), invalid (a figure no line can carry)",
            m.dropped.clone(),
        );
        registry.register(
            "vigie_influxdb_write_errors",
            "Write requests to InfluxDB that failed (each retry counts)",
            m.errors.clone(),
        );
        registry.register(
            "vigie_influxdb_buffer_points",
            "Points waiting in the InfluxDB sink's buffer",
            m.buffered.clone(),
        );
        for reason in DROP_REASONS {
            let _ = m.dropped.get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            });
        }
        m
    }

    fn drop_n(&self, reason: &str, n: u64) {
        self.dropped
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc_by(n);
    }

    /// Points written so far.
    pub fn written(&self) -> u64 {
        self.written.get()
    }

    /// Points dropped so far for `reason`.
    pub fn dropped(&self, reason: &str) -> u64 {
        self.dropped
            .get(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .map_or(0, |c| c.get())
    }

    /// Failed write requests so far.
    pub fn write_errors(&self) -> u64 {
        self.errors.get()
    }
}

/// A minute bucket's key: host, sensor, start.
type Key = (String, String, i64);

/// A line waiting to be written, with the minute it carries (site
/// figures carry none).
#[derive(Debug)]
struct Point {
    key: Option<Key>,
    line: Vec<u8>,
}

/// The minutes read again each interval, and what was last queued of each.
#[derive(Debug, Clone, Default)]
struct Window {
    lateness_ms: i64,
    backfill_ms: i64,
    precision: Precision,
    /// End of the last window read (the last closed minute's end then).
    watermark: Option<i64>,
    /// Energy last queued per minute still in the window: (measured, estimated) µJ.
    queued: HashMap<Key, (u64, u64)>,
}

/// The ledger's minute buckets starting in [`from_ms`, `to_ms`), per
/// (host, sensor, minute): the sink's one read of the ledger.
fn read_minutes(
    conn: &dyn LedgerRead,
    from_ms: i64,
    to_ms: i64,
) -> Result<Vec<store::EnergyRow>, LedgerError> {
    conn.energy(store::Resolution::Minute, from_ms, to_ms, true, true)
}

impl Window {
    fn new(cfg: &InfluxConfig) -> Self {
        let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 4);
        Window {
            lateness_ms: ms(cfg.lateness),
            backfill_ms: ms(cfg.backfill),
            precision: cfg.precision,
            watermark: None,
            queued: HashMap::new(),
        }
    }

    /// The minutes to read at `now_ms`: from `lateness` before the last
    /// closed minute (or the last window's end, if older, after a pause;
    /// `backfill` at start-up), never more than the longer of the two.
    fn range(&self, now_ms: i64) -> (i64, i64) {
        let to = now_ms.div_euclid(MINUTE_MS) * MINUTE_MS;
        let reach = self.lateness_ms.max(self.backfill_ms);
        let from = match self.watermark {
            Some(w) => w.min(to - self.lateness_ms),
            None => to - self.backfill_ms.max(self.lateness_ms),
        };
        (from.max(to - reach), to)
    }

    /// Reads the window and returns the minutes new or changed since they
    /// were last queued (and how many could not be made into a line).
    fn collect(
        &mut self,
        conn: &dyn LedgerRead,
        now_ms: i64,
    ) -> Result<(Vec<Point>, u64), LedgerError> {
        let (from, to) = self.range(now_ms);
        let rows = read_minutes(conn, from, to)?;
        self.queued.retain(|k, _| k.2 >= from);
        let mut points = Vec::new();
        let mut invalid = 0;
        for r in rows {
            let (Some(sensor), Some(bucket)) = (r.sensor, r.bucket_ms) else {
                continue;
            };
            let amount = (
                u64::try_from(r.amount.measured).unwrap_or(u64::MAX),
                u64::try_from(r.amount.estimated).unwrap_or(u64::MAX),
            );
            let key = (r.host, sensor, bucket);
            if self.queued.get(&key) == Some(&amount) {
                continue;
            }
            match line::minute(&key.0, &key.1, bucket, amount.0, amount.1, self.precision) {
                Some(line) => {
                    self.queued.insert(key.clone(), amount);
                    points.push(Point {
                        key: Some(key),
                        line,
                    });
                }
                None => invalid += 1,
            }
        }
        self.watermark = Some(to);
        Ok((points, invalid))
    }
}

/// What one [`Sink::flush`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flushed {
    /// Points written.
    pub written: usize,
    /// Points dropped (refused by the server).
    pub dropped: usize,
    /// Points still buffered (the server unreachable or failing).
    pub pending: usize,
}

/// The sink: its window over the ledger, its buffer and its client.
#[derive(Debug)]
pub struct Sink {
    writer: Writer,
    window: Window,
    buffer: VecDeque<Point>,
    metrics: SinkMetrics,
    batch_size: usize,
    max_buffer: usize,
    retries: u32,
    retry_initial: Duration,
    retry_max: Duration,
    /// Minute end at which the site figures were last queued.
    site_at: Option<i64>,
    /// The last write failure logged, so a server down is logged once.
    last_error: Option<String>,
}

impl Sink {
    /// Reads the token file and builds the client; makes no request.
    pub fn new(cfg: &InfluxConfig, metrics: SinkMetrics) -> Result<Self, InfluxError> {
        cfg.validate().map_err(InfluxError::Config)?;
        Ok(Sink {
            writer: Writer::new(cfg)?,
            window: Window::new(cfg),
            buffer: VecDeque::new(),
            metrics,
            batch_size: cfg.batch_size,
            max_buffer: cfg.max_buffer,
            retries: cfg.retries,
            retry_initial: cfg.retry_initial,
            retry_max: cfg.retry_max,
            site_at: None,
            last_error: None,
        })
    }

    /// Queues the minutes of the ledger `conn` that are new or changed at
    /// `now_ms`; returns how many.
    pub fn collect(&mut self, conn: &dyn LedgerRead, now_ms: i64) -> Result<usize, LedgerError> {
        let (points, invalid) = self.window.collect(conn, now_ms)?;
        self.metrics.drop_n("invalid", invalid);
        Ok(self.queue(points))
    }

    /// Queues the site figures of each `(period, gauges)`, stamped at the
    /// last whole minute of `now_ms`, once per minute; returns how many.
    pub fn collect_site(&mut self, site: &[(&str, SiteGauges)], now_ms: i64) -> usize {
        let at = now_ms.div_euclid(MINUTE_MS) * MINUTE_MS;
        if self.site_at == Some(at) {
            return 0;
        }
        self.site_at = Some(at);
        let mut points = Vec::new();
        for (period, g) in site {
            let (lines, invalid) = line::site(period, g, at, self.window.precision);
            self.metrics.drop_n("invalid", invalid);
            points.extend(lines.into_iter().map(|line| Point { key: None, line }));
        }
        self.queue(points)
    }

    /// Adds `points` while there is room, refusing the rest (counted
    /// `buffer_full`): the newest are refused rather than the oldest
    /// dropped, because a refused minute is forgotten and read again at
    /// the next interval while it is in the window, and the newest stay
    /// in it longest. Returns how many were queued.
    fn queue(&mut self, points: Vec<Point>) -> usize {
        let room = self.max_buffer.saturating_sub(self.buffer.len());
        let mut refused = 0u64;
        let mut queued = 0;
        for p in points {
            if queued < room {
                self.buffer.push_back(p);
                queued += 1;
            } else {
                if let Some(key) = p.key {
                    self.window.queued.remove(&key);
                }
                refused += 1;
            }
        }
        if refused > 0 {
            self.metrics.drop_n("buffer_full", refused);
            tracing::warn!(
                refused,
                max_buffer = self.max_buffer,
                "InfluxDB sink buffer full: newest points refused (minutes still within influxdb.lateness are read again)"
            );
        }
        self.metrics.buffered.set(self.buffer.len() as i64);
        queued
    }

    /// Points waiting.
    pub fn pending(&self) -> usize {
        self.buffer.len()
    }

    /// Writes the buffer in batches. A batch the server cannot take now
    /// (5xx, 429, no answer) is retried `retries` times with backoff, then
    /// left at the head of the buffer for the next call; a batch refused
    /// (other 4xx) is dropped and counted.
    pub async fn flush(&mut self) -> Flushed {
        let mut done = Flushed::default();
        while !self.buffer.is_empty() {
            let n = self.batch_size.min(self.buffer.len());
            let body: Vec<u8> = self
                .buffer
                .iter()
                .take(n)
                .flat_map(|p| p.line.iter().copied())
                .collect();
            let mut delay = self.retry_initial;
            let mut tries = 0;
            let outcome = loop {
                match self.writer.post(body.clone()).await {
                    Attempt::Retry(why) if tries < self.retries => {
                        self.metrics.errors.inc();
                        tracing::debug!(error = %why, retry_in = ?delay, "InfluxDB write failed; retrying");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(self.retry_max);
                        tries += 1;
                    }
                    other => break other,
                }
            };
            match outcome {
                Attempt::Written => {
                    self.buffer.drain(..n);
                    self.metrics.written.inc_by(n as u64);
                    done.written += n;
                    if self.last_error.take().is_some() {
                        tracing::info!(url = %self.writer.url(), "InfluxDB writes succeed again");
                    }
                }
                Attempt::Refused { status, detail } => {
                    self.metrics.errors.inc();
                    self.buffer.drain(..n);
                    let reason = if matches!(status, 401 | 403) {
                        "unauthorized"
                    } else {
                        "refused"
                    };
                    self.metrics.drop_n(reason, n as u64);
                    done.dropped += n;
                    tracing::warn!(status, %detail, points = n, reason, "InfluxDB refused a batch; its points are dropped");
                }
                Attempt::Retry(why) => {
                    self.metrics.errors.inc();
                    if self.last_error.as_ref() != Some(&why) {
                        tracing::warn!(url = %self.writer.url(), error = %why, pending = self.buffer.len(), "InfluxDB unreachable or failing; points kept for the next interval");
                        self.last_error = Some(why);
                    }
                    break;
                }
            }
        }
        self.metrics.buffered.set(self.buffer.len() as i64);
        done.pending = self.buffer.len();
        done
    }
}

/// Runs the sink every `cfg.interval`: reads the ledger at `db` on a
/// blocking thread, queues the site figures the metrics last showed, and
/// writes. `clock` gives the time.
pub fn spawn(
    cfg: &InfluxConfig,
    mut sink: Sink,
    db: PathBuf,
    metrics: Arc<Metrics>,
    clock: fn() -> i64,
) -> tokio::task::JoinHandle<()> {
    let every = cfg.interval;
    tracing::info!(url = %sink.writer.url(), every = ?every, "InfluxDB sink");
    let template = Window::new(cfg);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_read_error: Option<String> = None;
        loop {
            tick.tick().await;
            let now = clock();
            let mut window = std::mem::take(&mut sink.window);
            let db = db.clone();
            let read = tokio::task::spawn_blocking(move || {
                let r = crate::backend::open(&db).and_then(|c| window.collect(&*c, now));
                (window, r)
            })
            .await;
            let error = match read {
                Ok((w, Ok((points, invalid)))) => {
                    sink.window = w;
                    sink.metrics.drop_n("invalid", invalid);
                    sink.queue(points);
                    None
                }
                Ok((w, Err(e))) => {
                    sink.window = w;
                    Some(e.to_string())
                }
                Err(e) => Some(e.to_string()),
            };
            if sink.window.lateness_ms == 0 {
                // The read panicked with the window: start afresh (the
                // next read covers `backfill` again).
                sink.window = template.clone();
            }
            if error != last_read_error {
                if let Some(e) = &error {
                    tracing::warn!(error = %e, "InfluxDB sink: reading the ledger failed; retrying next interval");
                }
                last_read_error = error;
            }
            let site: Vec<(&str, SiteGauges)> = ["day", "ytd"]
                .into_iter()
                .filter_map(|p| Some((p, metrics.site_gauges(p)?)))
                .collect();
            sink.collect_site(&site, now);
            sink.flush().await;
        }
    })
}

#[cfg(test)]
mod tests;
