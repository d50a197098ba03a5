//! Ingest: decode, validate, dedupe and accumulate a group of messages in
//! one ledger transaction. No MQTT here: messages arrive as (topic, payload)
//! and the caller acknowledges them once [`Ingestor::ingest_group`] returns.

use crate::store::losses::{self, Cumulative};
use crate::store::{self, Amount, KeyInsert, Pending, StoreError};
use ed25519_dalek::VerifyingKey;
use rusqlite::Connection;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use vigie_energy::{HOUR_MS, MINUTE_MS, Microjoules, split_interval};
use vigie_protocol::{
    HostMeta, Limits, Quality, Rejection, Status, StatusMessage, TelemetryBatch, Topic, TopicKind,
    decode_telemetry, minute_buckets, split_signed, verify_signed,
};

/// The public keys each host signs with (`[ingest.keys]`): one, or two
/// while it rotates. Empty: messages are not authenticated.
pub type KeyRing = HashMap<String, Vec<VerifyingKey>>;

/// One message as received from the broker.
#[derive(Debug, Clone)]
pub struct Message {
    /// MQTT topic.
    pub topic: String,
    /// Payload bytes.
    pub payload: Vec<u8>,
}

/// What became of a message.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// New telemetry, now in the ledger.
    Accepted(TelemetryBatch),
    /// A batch already in the ledger; nothing added.
    Duplicate,
    /// Refused: the reason label and the detail. Kept in quarantine.
    Rejected {
        /// Stable reason label.
        reason: &'static str,
        /// Human-readable detail.
        detail: String,
    },
    /// A status message applied.
    Status {
        /// Host.
        host: String,
        /// Online or not.
        online: bool,
        /// The agent's spool figures, when it sent them.
        spool: Option<vigie_protocol::SpoolHealth>,
    },
    /// An inventory message applied.
    Meta {
        /// Host.
        host: String,
        /// Its sensors that totals leave out (components and alternatives
        /// of another sensor, `SensorMeta::in_totals`).
        uncounted: std::collections::HashSet<String>,
    },
    /// An empty retained message (a topic being cleared).
    Cleared,
    /// Valid telemetry that would take this transaction past its bucket
    /// bound: nothing written, not to be acknowledged; the caller hands
    /// it to the next group (where it comes first, so it always fits).
    Deferred,
}

/// Default of `[ingest] max_sensors_per_host`.
pub const DEFAULT_MAX_SENSORS_PER_HOST: usize = 2048;

/// Default of `[ingest] max_hosts`.
pub const DEFAULT_MAX_HOSTS: usize = 10_000;

/// Owns the ledger's write connection.
pub struct Ingestor {
    conn: Connection,
    /// Limits and keys: what is checked before the ledger.
    preparer: Preparer,
    pending: Pending,
    /// Distinct sensors per host in the ledger (committed).
    sensors: HashMap<String, HashSet<String>>,
    /// Sensors new in the group under way, added to `sensors` on commit.
    staged: HashMap<String, HashSet<String>>,
    max_sensors_per_host: usize,
    /// The admitted hosts and their limit.
    hosts: Hosts,
    /// Log lines for `too_many_hosts`: a flood of new names must not
    /// become a flood of lines.
    host_refusals: LogBudget,
    /// Most minute buckets one group writes (see [`Outcome::Deferred`]).
    max_group_buckets: u64,
    /// The group's per-(host, epoch, sensor) received energy and latest
    /// cumulative counter (known losses, `store::losses`).
    cumulative: BTreeMap<(String, u64, String), Cumulative>,
    /// Hosts whose known losses changed in the last committed group.
    losses_changed: HashSet<String>,
}

impl Ingestor {
    /// An ingestor writing into `conn` and checking `limits`, with at
    /// most [`DEFAULT_MAX_SENSORS_PER_HOST`] sensors per host. It knows
    /// no sensor yet: see [`Ingestor::with_known_sensors`].
    pub fn new(conn: Connection, limits: Limits) -> Self {
        Ingestor {
            conn,
            preparer: Preparer {
                keys: Arc::new(KeyRing::new()),
                limits: Arc::new(limits),
            },
            pending: Pending::default(),
            sensors: HashMap::new(),
            staged: HashMap::new(),
            max_sensors_per_host: DEFAULT_MAX_SENSORS_PER_HOST,
            hosts: Hosts {
                known: HashSet::new(),
                staged: HashSet::new(),
                max: DEFAULT_MAX_HOSTS,
            },
            host_refusals: LogBudget::default(),
            max_group_buckets: u64::MAX,
            cumulative: BTreeMap::new(),
            losses_changed: HashSet::new(),
        }
    }

    /// Requires every telemetry, status and inventory message to be
    /// signed by a key of its topic's host (`unsigned`, `bad_signature`,
    /// `unknown_key` otherwise, a host without keys included). An empty
    /// ring changes nothing: signed messages are then taken without
    /// checking their trailer, as unsigned ones are.
    pub fn with_keys(mut self, keys: KeyRing) -> Self {
        self.preparer.keys = Arc::new(keys);
        self
    }

    /// Writes at most `max` minute buckets per group: a batch that would
    /// take the group past it is [`Outcome::Deferred`], unless it is the
    /// group's first (which is bounded by the per-message limit).
    pub fn with_max_group_buckets(mut self, max: u64) -> Self {
        self.max_group_buckets = max;
        self
    }

    /// Refuses a batch that would take its host past `max` distinct
    /// sensors (`too_many_sensors`).
    pub fn with_max_sensors_per_host(mut self, max: usize) -> Self {
        self.max_sensors_per_host = max;
        self
    }

    /// Refuses a status, inventory or batch from a host it does not know
    /// once it knows `max` hosts (`too_many_hosts`).
    pub fn with_max_hosts(mut self, max: usize) -> Self {
        self.hosts.max = max;
        self
    }

    /// The hosts the ledger already holds, counted against the host limit
    /// (and admitted whatever the limit).
    pub fn with_known_hosts<'a>(mut self, known: impl IntoIterator<Item = &'a str>) -> Self {
        self.hosts
            .known
            .extend(known.into_iter().map(str::to_owned));
        self
    }

    /// How many hosts are admitted (committed).
    pub fn hosts_known(&self) -> usize {
        self.hosts.known.len()
    }

    /// The (host, sensor) pairs the ledger already holds, counted against
    /// the limit (and their hosts against the host limit).
    pub fn with_known_sensors<'a>(
        mut self,
        known: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Self {
        for (host, sensor) in known {
            if !self.hosts.known.contains(host) {
                self.hosts.known.insert(host.to_owned());
            }
            self.sensors
                .entry(host.to_owned())
                .or_default()
                .insert(sensor.to_owned());
        }
        self
    }

    /// Read access to the ledger (tests and start-up).
    pub fn conn(&self) -> &Connection {
        &self.conn
    }

    /// The hosts whose known losses (holes, missing energy) the last
    /// committed group changed: their loss figures need a refresh.
    pub fn take_losses_changed(&mut self) -> HashSet<String> {
        std::mem::take(&mut self.losses_changed)
    }

    /// Applies `msgs` in one transaction, with `now_ms` the collector's
    /// clock. On `Err` nothing was committed and the messages must not be
    /// acknowledged; on `Ok` every message is settled (accepted, duplicate,
    /// rejected into quarantine, or applied) and may be acknowledged.
    ///
    /// The same as [`Preparer::prepare`] on each message, then
    /// [`Ingestor::commit_group`], on this thread.
    pub fn ingest_group(
        &mut self,
        msgs: &[Message],
        now_ms: i64,
    ) -> Result<Vec<Outcome>, StoreError> {
        let mut prepared: Vec<Prepared> = msgs
            .iter()
            .map(|m| self.preparer.prepare(m, now_ms))
            .collect();
        self.commit_group(msgs, &mut prepared, now_ms)
    }

    /// What works out, on any thread, the part of ingest that needs no
    /// ledger: decoding, validation, signatures, the payload digest and
    /// the batch's minute, hour and per-sensor sums.
    pub fn preparer(&self) -> Preparer {
        self.preparer.clone()
    }

    /// Commits `msgs` in one transaction, `prepared[i]` being
    /// [`Preparer::prepare`] of `msgs[i]` (a slice of another length is
    /// a caller's bug: the extra entries are left out). What needs the
    /// ledger and the group's state happens here, in message order: the
    /// sensor and host limits, the group's bucket bound, the dedupe key,
    /// the energy and every other write, and the quarantine of rejected
    /// messages. Same contract as [`Ingestor::ingest_group`].
    ///
    /// The prepared work of each settled message is used up; that of a
    /// [`Outcome::Deferred`] one is left for the group that takes it. A
    /// used-up entry (after an `Err`, say) is prepared again here, so a
    /// failed commit is retried by calling this again with the same slices.
    pub fn commit_group(
        &mut self,
        msgs: &[Message],
        prepared: &mut [Prepared],
        now_ms: i64,
    ) -> Result<Vec<Outcome>, StoreError> {
        self.pending.clear();
        self.staged.clear();
        self.cumulative.clear();
        let mut losses_changed = HashSet::new();
        self.hosts.staged.clear();
        let tx = self.conn.transaction()?;
        let mut outcomes = Vec::with_capacity(msgs.len());
        let mut group_buckets = 0u64;
        for (m, p) in msgs.iter().zip(prepared.iter_mut()) {
            let prep = match std::mem::replace(&mut p.0, Prep::Spent) {
                Prep::Spent => self.preparer.prepare(m, now_ms).0,
                prep => prep,
            };
            let outcome = match prep {
                Prep::Spent | Prep::Cleared => Outcome::Cleared,
                Prep::Rejected { reason, detail } => Outcome::Rejected { reason, detail },
                Prep::Telemetry(ready) => {
                    let checked = new_sensors(
                        &self.sensors,
                        &self.staged,
                        self.max_sensors_per_host,
                        &ready.batch,
                    )
                    .and_then(|new| {
                        self.hosts.admit(&ready.batch.host)?;
                        Ok(new)
                    });
                    match checked {
                        Err(r) => reject(r),
                        Ok(_)
                            if group_buckets > 0
                                && group_buckets.saturating_add(ready.buckets)
                                    > self.max_group_buckets =>
                        {
                            // Kept as prepared, for the group that takes it.
                            p.0 = Prep::Telemetry(ready);
                            Outcome::Deferred
                        }
                        Ok(new) => {
                            let Ready {
                                batch,
                                digest,
                                buckets,
                                minutes,
                                hours,
                                span,
                                cumulative,
                            } = *ready;
                            match store::insert_batch_key(
                                &tx,
                                &batch.host,
                                batch.epoch,
                                batch.seq,
                                &batch.boot_id,
                                now_ms,
                                batch.readings.len(),
                                &digest,
                            )? {
                                KeyInsert::New => {
                                    self.hosts.stage(&batch.host);
                                    if !new.is_empty() {
                                        self.staged
                                            .entry(batch.host.clone())
                                            .or_default()
                                            .extend(new);
                                    }
                                    group_buckets = group_buckets.saturating_add(buckets);
                                    accumulate(&mut self.pending, &batch.host, minutes, hours);
                                    let holes = losses::record_span(
                                        &tx,
                                        &batch.host,
                                        batch.epoch,
                                        batch.seq,
                                        span,
                                    )?;
                                    if !holes.is_zero() {
                                        losses_changed.insert(batch.host.clone());
                                    }
                                    for (sensor, c) in cumulative {
                                        self.cumulative
                                            .entry((batch.host.clone(), batch.epoch, sensor))
                                            .or_default()
                                            .join(c);
                                    }
                                    store::record_registers(&tx, &batch.host, &batch.gauges)?;
                                    store::touch_host(
                                        &tx,
                                        &batch.site,
                                        &batch.host,
                                        &batch.boot_id,
                                        batch.epoch,
                                        batch.seq,
                                        now_ms,
                                    )?;
                                    Outcome::Accepted(batch)
                                }
                                KeyInsert::Same | KeyInsert::Unknown => Outcome::Duplicate,
                                KeyInsert::Conflict { stored } => {
                                    reject(Rejection::ConflictingDuplicate {
                                        host: batch.host,
                                        epoch: batch.epoch,
                                        seq: batch.seq,
                                        stored: hex(&stored),
                                        received: hex(&digest),
                                    })
                                }
                            }
                        }
                    }
                }
                Prep::Status {
                    site,
                    host,
                    online,
                    since_ms,
                    spool,
                } => match self.hosts.admit(&host) {
                    Err(r) => reject(r),
                    Ok(()) => {
                        self.hosts.stage(&host);
                        store::set_status(&tx, &site, &host, online, since_ms.unwrap_or(now_ms))?;
                        Outcome::Status {
                            host,
                            online,
                            spool,
                        }
                    }
                },
                Prep::Meta {
                    site,
                    host,
                    text,
                    uncounted,
                } => match self.hosts.admit(&host) {
                    Err(r) => reject(r),
                    Ok(()) => {
                        self.hosts.stage(&host);
                        store::set_meta(&tx, &site, &host, &text)?;
                        Outcome::Meta { host, uncounted }
                    }
                },
            };
            if let Outcome::Rejected { reason, detail } = &outcome {
                // A flood of new host names is refused in full but logged
                // within a budget; the next line says how many went unlogged.
                let unlogged = if *reason == "too_many_hosts" {
                    self.host_refusals.take(now_ms)
                } else {
                    Some(0)
                };
                // Topic as Debug, escaped: it is the sender's text, and a broker
                // that allows control characters in topics would let it forge
                // log lines.
                match unlogged {
                    Some(0) => {
                        tracing::warn!(topic = ?m.topic.chars().take(200).collect::<String>(), reason, detail, "message rejected")
                    }
                    Some(n) => {
                        tracing::warn!(topic = ?m.topic.chars().take(200).collect::<String>(), reason, detail, unlogged = n, "message rejected (and {n} more for this reason not logged)")
                    }
                    None => {}
                }
                store::quarantine(&tx, now_ms, &m.topic, reason, detail, &m.payload)?;
            }
            outcomes.push(outcome);
        }
        store::add_energy(&tx, &self.pending)?;
        losses_changed.extend(losses::record_cumulative(&tx, &self.cumulative)?);
        tx.commit()?;
        self.losses_changed.extend(losses_changed);
        for (host, new) in self.staged.drain() {
            self.sensors.entry(host).or_default().extend(new);
        }
        let staged = std::mem::take(&mut self.hosts.staged);
        self.hosts.known.extend(staged);
        Ok(outcomes)
    }
}

/// The part of ingest that needs neither the ledger nor the group under
/// way: shareable between threads (cheap to clone), so that decoding,
/// validation and signature checks run on other cores than the one
/// committing.
#[derive(Clone)]
pub struct Preparer {
    keys: Arc<KeyRing>,
    limits: Arc<Limits>,
}

/// A message's prepared work (see [`Preparer::prepare`]), for
/// [`Ingestor::commit_group`].
#[derive(Debug)]
pub struct Prepared(Prep);

#[derive(Debug)]
enum Prep {
    /// Used up by a commit.
    Spent,
    Cleared,
    Rejected {
        reason: &'static str,
        detail: String,
    },
    Telemetry(Box<Ready>),
    Status {
        site: String,
        host: String,
        online: bool,
        since_ms: Option<i64>,
        spool: Option<vigie_protocol::SpoolHealth>,
    },
    Meta {
        site: String,
        host: String,
        /// The inventory's JSON as kept.
        text: String,
        uncounted: HashSet<String>,
    },
}

/// A valid batch and what its commit adds, worked out beforehand.
#[derive(Debug)]
struct Ready {
    batch: TelemetryBatch,
    /// SHA-256 of its JSON (kept with its dedupe key).
    digest: [u8; 32],
    /// Minute buckets it touches (the group bound's unit).
    buckets: u64,
    /// Its energy per (sensor, minute).
    minutes: Vec<(String, i64, Amount)>,
    /// Its energy per (sensor, hour), the sums of those minutes.
    hours: Vec<(String, i64, Amount)>,
    /// Earliest reading start and latest end.
    span: Option<(i64, i64)>,
    /// Per sensor, received energy and latest cumulative counter.
    cumulative: Vec<(String, Cumulative)>,
}

impl Preparer {
    /// Decodes, authenticates and validates `m` with `now_ms` the
    /// collector's clock, and, for a valid batch, digests its JSON and
    /// sums its energy per minute, hour and sensor. Reads no ledger.
    pub fn prepare(&self, m: &Message, now_ms: i64) -> Prepared {
        let rejected = |r: Rejection| Prep::Rejected {
            reason: r.reason(),
            detail: r.to_string(),
        };
        let prep = match Topic::parse(&m.topic) {
            Err(e) => rejected(Rejection::BadTopic(e)),
            Ok(topic) if m.payload.is_empty() && topic.kind != TopicKind::Telemetry => {
                Prep::Cleared
            }
            Ok(topic) => match authenticate(&self.keys, &self.limits, &topic, &m.payload) {
                Err(r) => rejected(r),
                Ok(body) => match topic.kind {
                    TopicKind::Telemetry => {
                        match decode_telemetry(&topic, body, now_ms, &self.limits) {
                            Err(r) => rejected(r),
                            Ok(batch) => Prep::Telemetry(Box::new(ready(batch, body))),
                        }
                    }
                    TopicKind::Status => match decode_small::<StatusMessage>(body, &self.limits) {
                        Err(r) => rejected(r),
                        Ok(s) => Prep::Status {
                            site: topic.site,
                            host: topic.host,
                            online: s.state == Status::Online,
                            since_ms: s.since_ms,
                            spool: s.spool,
                        },
                    },
                    TopicKind::Meta => match decode_small::<HostMeta>(body, &self.limits) {
                        Err(r) => rejected(r),
                        Ok(meta) if meta.host != topic.host => rejected(Rejection::HostMismatch {
                            topic: topic.host,
                            payload: meta.host,
                        }),
                        Ok(meta) if meta.site != topic.site => rejected(Rejection::SiteMismatch {
                            topic: topic.site,
                            payload: meta.site,
                        }),
                        Ok(meta) => Prep::Meta {
                            site: topic.site,
                            host: topic.host,
                            text: String::from_utf8_lossy(body).into_owned(),
                            uncounted: meta
                                .sensors
                                .into_iter()
                                .filter(|s| !s.in_totals())
                                .map(|s| s.name)
                                .collect(),
                        },
                    },
                },
            },
        };
        Prepared(prep)
    }
}

/// A valid batch with its digest and sums (see [`Ready`]).
fn ready(batch: TelemetryBatch, body: &[u8]) -> Ready {
    let digest: [u8; 32] = Sha256::digest(body).into();
    let buckets = minute_buckets(&batch.readings);
    let (minutes, hours) = sums(&batch);
    let span = span(&batch);
    let cumulative = cumulate(&batch);
    Ready {
        batch,
        digest,
        buckets,
        minutes,
        hours,
        span,
        cumulative,
    }
}

/// The hosts the collector admits: those the ledger holds, those new in
/// the group under way, and the limit.
struct Hosts {
    /// In the ledger (committed).
    known: HashSet<String>,
    /// New in the group under way, joining `known` on commit.
    staged: HashSet<String>,
    max: usize,
}

impl Hosts {
    /// `Ok` if a message from `host` may be applied: a host the ledger or
    /// the group under way holds, or a new one while fewer than
    /// `max_hosts` are known.
    fn admit(&self, host: &str) -> Result<(), Rejection> {
        if self.known.contains(host) || self.staged.contains(host) {
            return Ok(());
        }
        let known = self.known.len() + self.staged.len();
        if known >= self.max {
            return Err(Rejection::TooManyHosts {
                host: host.to_owned(),
                known,
                max: self.max,
            });
        }
        Ok(())
    }

    /// Counts `host` (admitted by [`Hosts::admit`]) as known from the
    /// commit of the group under way.
    fn stage(&mut self, host: &str) {
        if !self.known.contains(host) && !self.staged.contains(host) {
            self.staged.insert(host.to_owned());
        }
    }
}

/// At most [`LogBudget::LINES`] log lines per [`LogBudget::WINDOW_MS`] for
/// one kind of rejection.
#[derive(Debug, Default)]
struct LogBudget {
    window_start_ms: i64,
    lines: u32,
    unlogged: u64,
}

impl LogBudget {
    const WINDOW_MS: i64 = 60_000;
    const LINES: u32 = 10;

    /// `Some(n)`: log this one, saying that `n` before it were not;
    /// `None`: over budget, counted for the next line.
    fn take(&mut self, now_ms: i64) -> Option<u64> {
        if now_ms.saturating_sub(self.window_start_ms) >= Self::WINDOW_MS
            || now_ms < self.window_start_ms
        {
            self.window_start_ms = now_ms;
            self.lines = 0;
        }
        if self.lines < Self::LINES {
            self.lines += 1;
            Some(std::mem::take(&mut self.unlogged))
        } else {
            self.unlogged += 1;
            None
        }
    }
}

/// The sensors `batch` names (readings and gauges) its host does not
/// have yet; `Err` when they would take it past the limit. The caller stages them once the batch
/// is in (not a duplicate), and they join the known ones on commit.
fn new_sensors(
    sensors: &HashMap<String, HashSet<String>>,
    staged: &HashMap<String, HashSet<String>>,
    max: usize,
    batch: &TelemetryBatch,
) -> Result<Vec<String>, Rejection> {
    let known = sensors.get(&batch.host);
    let staged = staged.get(&batch.host);
    let is_known =
        |s: &str| known.is_some_and(|k| k.contains(s)) || staged.is_some_and(|k| k.contains(s));
    // A batch holds runs of one sensor's samples: look each run up once.
    // Gauges name sensors too (metric series, register rows).
    let mut new: Vec<&str> = Vec::new();
    let mut prev: Option<&str> = None;
    let names = batch.readings.iter().map(|r| r.sensor.as_str());
    for s in names.chain(batch.gauges.iter().map(|g| g.sensor.as_str())) {
        if prev != Some(s) {
            prev = Some(s);
            if !is_known(s) {
                new.push(s);
            }
        }
    }
    if new.is_empty() {
        return Ok(Vec::new());
    }
    new.sort_unstable();
    new.dedup();
    let have = known.map_or(0, HashSet::len) + staged.map_or(0, HashSet::len);
    if have + new.len() > max {
        return Err(Rejection::TooManySensors {
            host: batch.host.clone(),
            known: have,
            new: new.len(),
            max,
        });
    }
    Ok(new.into_iter().map(str::to_owned).collect())
}

/// The JSON of a message, once its size and, with keys configured, its
/// signature are checked: the bytes the rest of ingest reads, digests and
/// keeps. Without keys a trailer is removed unchecked (an unconfigured
/// collector trusts the broker, as before signatures).
fn authenticate<'a>(
    keys: &KeyRing,
    limits: &Limits,
    topic: &Topic,
    payload: &'a [u8],
) -> Result<&'a [u8], Rejection> {
    // Before any hashing: the size bound is what makes the work bounded.
    if payload.len() > limits.max_payload_bytes {
        return Err(Rejection::Oversized {
            len: payload.len(),
            max: limits.max_payload_bytes,
        });
    }
    if keys.is_empty() {
        return Ok(split_signed(payload)?.json());
    }
    verify_signed(payload, keys.get(&topic.host).map_or(&[], Vec::as_slice))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn reject(r: Rejection) -> Outcome {
    Outcome::Rejected {
        reason: r.reason(),
        detail: r.to_string(),
    }
}

fn decode_small<T: serde::de::DeserializeOwned>(
    payload: &[u8],
    limits: &Limits,
) -> Result<T, Rejection> {
    if payload.len() > limits.max_payload_bytes {
        return Err(Rejection::Oversized {
            len: payload.len(),
            max: limits.max_payload_bytes,
        });
    }
    serde_json::from_slice(payload).map_err(|e| Rejection::from_json_error(&e))
}

/// A batch's energy per (sensor, minute) and per (sensor, hour), each
/// minute share going into its hour, so an hour is always exactly the sum
/// of its minutes. Summed on borrowed names (a batch of one host's 10 s of
/// 1 s samples touches a handful of buckets), so names are cloned per
/// bucket, not per reading. Saturating addition of non-negative amounts
/// is `min(sum, u64::MAX)` whatever the grouping, so the totals are the
/// same as adding reading by reading.
type Sums = Vec<(String, i64, Amount)>;

fn sums(batch: &TelemetryBatch) -> (Sums, Sums) {
    let mut minutes: HashMap<(&str, i64), Amount> = HashMap::new();
    for r in &batch.readings {
        // Validation bounded the interval and energy, so splitting succeeds.
        let Ok(shares) = split_interval(r.start_ms, r.end_ms, Microjoules(r.energy_uj), MINUTE_MS)
        else {
            continue;
        };
        for (minute, uj) in shares {
            add(
                minutes.entry((r.sensor.as_str(), minute)).or_default(),
                r.quality,
                uj.0,
            );
        }
    }
    let mut hours: HashMap<(&str, i64), Amount> = HashMap::new();
    for (&(sensor, minute), a) in &minutes {
        join(
            hours
                .entry((sensor, minute.div_euclid(HOUR_MS) * HOUR_MS))
                .or_default(),
            *a,
        );
    }
    let owned = |m: HashMap<(&str, i64), Amount>| -> Sums {
        m.into_iter()
            .map(|((sensor, bucket), a)| (sensor.to_owned(), bucket, a))
            .collect()
    };
    (owned(minutes), owned(hours))
}

/// Adds a batch's sums (see [`sums`]) into the group's buckets.
fn accumulate(p: &mut Pending, host: &str, minutes: Sums, hours: Sums) {
    for (map, sums) in [(&mut p.minute, minutes), (&mut p.hour, hours)] {
        for (sensor, bucket, a) in sums {
            join(map.entry((host.to_owned(), sensor, bucket)).or_default(), a);
        }
    }
}

fn join(t: &mut Amount, a: Amount) {
    t.measured = t.measured.saturating_add(a.measured);
    t.estimated = t.estimated.saturating_add(a.estimated);
}

/// Earliest start and latest end of a batch's readings.
fn span(batch: &TelemetryBatch) -> Option<(i64, i64)> {
    let start = batch.readings.iter().map(|r| r.start_ms).min()?;
    let end = batch.readings.iter().map(|r| r.end_ms).max()?;
    Some((start, end))
}

/// A batch's per-sensor received energy and latest cumulative counter,
/// joined into the group's per-(host, epoch, sensor) figures on commit.
fn cumulate(batch: &TelemetryBatch) -> Vec<(String, Cumulative)> {
    let mut mine: BTreeMap<&str, Cumulative> = BTreeMap::new();
    for r in &batch.readings {
        mine.entry(r.sensor.as_str()).or_default().join(Cumulative {
            received_uj: r.energy_uj,
            last_end_ms: r.end_ms,
            last_cum_uj: r.cumulative_uj,
        });
    }
    mine.into_iter()
        .map(|(sensor, c)| (sensor.to_owned(), c))
        .collect()
}

fn add(a: &mut Amount, quality: Quality, uj: u64) {
    match quality {
        Quality::Measured => a.measured = a.measured.saturating_add(uj),
        Quality::Estimated => a.estimated = a.estimated.saturating_add(uj),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use vigie_protocol::samples;

    const NOW: i64 = 1_795_000_020_000;

    fn msg(batch: &TelemetryBatch) -> Message {
        Message {
            topic: format!("vigie/v1/{}/{}/telemetry", batch.site, batch.host),
            payload: serde_json::to_vec(batch).unwrap(),
        }
    }

    fn ingestor() -> Ingestor {
        Ingestor::new(store::open_in_memory().unwrap(), Limits::default())
    }

    #[test]
    fn duplicates_add_nothing_and_rejections_are_quarantined() {
        let mut ing = ingestor();
        let b = samples::telemetry();
        let bad = Message {
            topic: "vigie/v1/par1/node-01/telemetry".into(),
            payload: b"{not json".to_vec(),
        };
        let out = ing.ingest_group(&[msg(&b), msg(&b), bad], NOW).unwrap();
        assert!(matches!(out[0], Outcome::Accepted(_)));
        assert_eq!(out[1], Outcome::Duplicate);
        assert!(matches!(
            out[2],
            Outcome::Rejected {
                reason: "malformed",
                ..
            }
        ));
        // Again in a later transaction: still a duplicate.
        assert_eq!(
            ing.ingest_group(&[msg(&b)], NOW).unwrap()[0],
            Outcome::Duplicate
        );
        let totals = store::totals(ing.conn()).unwrap();
        assert_eq!(totals.len(), 2);
        let sum: u128 = totals.iter().map(|t| t.2.measured).sum();
        assert_eq!(sum, 85_250_113 + 9_870_004);
        assert_eq!(store::quarantine_count(ing.conn()).unwrap(), 1);
    }

    #[test]
    fn a_group_writes_at_most_its_bucket_bound_and_defers_the_rest() {
        // Each batch: two readings of 10 minutes, 20 buckets in all.
        let batch = |seq: u64| {
            let mut b = samples::telemetry();
            b.seq = seq;
            b.gauges.clear();
            for r in &mut b.readings {
                (r.start_ms, r.end_ms) = (NOW - 600_000, NOW);
            }
            assert_eq!(minute_buckets(&b.readings), 20);
            b
        };
        let mut ing = ingestor().with_max_group_buckets(45);
        let msgs: Vec<Message> = (0..4).map(|s| msg(&batch(s))).collect();
        let out = ing.ingest_group(&msgs, NOW).unwrap();
        let kinds: Vec<bool> = out.iter().map(|o| *o == Outcome::Deferred).collect();
        assert_eq!(kinds, [false, false, true, true], "{out:?}");
        assert!(matches!(out[1], Outcome::Accepted(_)));
        let sum = |ing: &Ingestor| -> u128 {
            store::totals(ing.conn())
                .unwrap()
                .iter()
                .map(|t| t.2.measured + t.2.estimated)
                .sum()
        };
        let one = sum(&ing) / 2;
        assert_eq!(sum(&ing), 2 * one, "deferred batches wrote nothing");
        // The caller hands them to the next group: both fit, nothing lost.
        let out = ing.ingest_group(&msgs[2..], NOW).unwrap();
        assert!(out.iter().all(|o| matches!(o, Outcome::Accepted(_))));
        assert_eq!(sum(&ing), 4 * one);
        // A group's first batch always goes in, whatever its size: the
        // per-message limit bounds it.
        let mut tight = ingestor().with_max_group_buckets(1);
        let out = tight.ingest_group(&msgs[..2], NOW).unwrap();
        assert!(matches!(out[0], Outcome::Accepted(_)));
        assert_eq!(out[1], Outcome::Deferred);
    }

    /// Every row of `table`, in order, as text.
    fn rows(c: &Connection, table: &str) -> Vec<String> {
        let mut stmt = c
            .prepare(&format!("SELECT * FROM {table} ORDER BY 1, 2, 3"))
            .unwrap();
        let n = stmt.column_count();
        stmt.query_map([], |r| {
            let cols: Vec<String> = (0..n)
                .map(|i| format!("{:?}", r.get::<_, rusqlite::types::Value>(i).unwrap()))
                .collect();
            Ok(cols.join("|"))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect()
    }

    #[test]
    fn prepared_on_other_threads_and_committed_is_ingest_group() {
        // A mixed group: batches of three hosts straddling an hour, a
        // redelivery, a conflicting duplicate, bad input, status and
        // inventory, and a host past the limit.
        let mut msgs = Vec::new();
        for (i, host) in ["node-01", "node-02", "node-03"].into_iter().enumerate() {
            for seq in 0..4u64 {
                let mut b = with_sensors(host, seq, &["rapl:package-0", "nvml:gpu-0"]);
                for (k, r) in b.readings.iter_mut().enumerate() {
                    r.start_ms = 1_795_003_170_000 + (seq as i64) * 20_000 + k as i64;
                    r.end_ms = r.start_ms + 20_000;
                    r.energy_uj = 1_000_003 * (i as u64 + 1) + seq + k as u64;
                    if k == 1 {
                        r.quality = Quality::Estimated;
                    }
                }
                msgs.push(msg(&b));
            }
        }
        msgs.push(msgs[1].clone());
        let mut other = with_sensors("node-01", 2, &["rapl:package-0"]);
        other.readings[0].energy_uj += 1;
        msgs.push(msg(&other));
        msgs.push(Message {
            topic: "vigie/v1/par1/node-02/telemetry".into(),
            payload: b"{not json".to_vec(),
        });
        msgs.push(status_of(
            "node-01",
            &serde_json::to_vec(&samples::status_online()).unwrap(),
        ));
        msgs.push(meta_of("node-01"));
        msgs.push(msg(&with_sensors("node-04", 1, &["rapl:package-0"])));
        let now = 1_795_003_300_000;
        let fresh = || ingestor().with_max_hosts(3);

        let mut whole = fresh();
        let want = whole.ingest_group(&msgs, now).unwrap();

        // Prepared in three parts on three threads, the last part first.
        let mut split = fresh();
        let preparer = split.preparer();
        let parts: Vec<Vec<Prepared>> = std::thread::scope(|s| {
            let handles: Vec<_> = msgs
                .chunks(msgs.len().div_ceil(3))
                .rev()
                .map(|c| {
                    let p = preparer.clone();
                    s.spawn(move || c.iter().map(|m| p.prepare(m, now)).collect::<Vec<_>>())
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut prepared: Vec<Prepared> = parts.into_iter().rev().flatten().collect();
        let got = split.commit_group(&msgs, &mut prepared, now).unwrap();
        assert_eq!(got, want);
        let reasons: Vec<_> = got.iter().map(reason).collect();
        assert_eq!(reasons.iter().filter(|r| **r == "accepted").count(), 12);
        assert!(reasons.contains(&"duplicate"));
        assert!(reasons.contains(&"conflicting_duplicate"));
        assert!(reasons.contains(&"malformed"));
        assert!(reasons.contains(&"too_many_hosts"));
        for table in [
            "energy_minute",
            "energy_hour",
            "batches",
            "hosts",
            "epoch_sensors",
            "quarantine",
        ] {
            assert_eq!(
                rows(split.conn(), table),
                rows(whole.conn(), table),
                "{table}"
            );
        }

        // Committed again, the used-up entries are prepared again: all
        // duplicates or refusals, nothing added twice.
        let again = split.commit_group(&msgs, &mut prepared, now).unwrap();
        assert!(
            again.iter().all(|o| !matches!(o, Outcome::Accepted(_))),
            "{again:?}"
        );
        assert_eq!(
            rows(split.conn(), "energy_hour"),
            rows(whole.conn(), "energy_hour")
        );
    }

    #[test]
    fn a_deferred_message_keeps_its_prepared_work_for_the_next_group() {
        let batch = |seq: u64| {
            let mut b = samples::telemetry();
            b.seq = seq;
            b.gauges.clear();
            for r in &mut b.readings {
                (r.start_ms, r.end_ms) = (NOW - 600_000, NOW);
            }
            b
        };
        let msgs: Vec<Message> = (0..3).map(|s| msg(&batch(s))).collect();
        let mut ing = ingestor().with_max_group_buckets(25);
        let p = ing.preparer();
        let mut prepared: Vec<Prepared> = msgs.iter().map(|m| p.prepare(m, NOW)).collect();
        let out = ing.commit_group(&msgs, &mut prepared, NOW).unwrap();
        assert_eq!(out[1..], [Outcome::Deferred, Outcome::Deferred]);
        assert!(matches!(prepared[0].0, Prep::Spent));
        assert!(matches!(prepared[1].0, Prep::Telemetry(_)));
        // The deferred ones, with their work, in the next groups.
        for i in 1..3 {
            let out = ing
                .commit_group(&msgs[i..=i], &mut prepared[i..=i], NOW)
                .unwrap();
            assert!(matches!(out[0], Outcome::Accepted(_)), "{out:?}");
        }
        assert_eq!(measured(&ing), 3 * (85_250_113 + 9_870_004));
    }

    /// A batch of `host` (seq `seq`) with one reading per sensor and no
    /// gauge.
    fn with_sensors(host: &str, seq: u64, sensors: &[&str]) -> TelemetryBatch {
        let mut b = samples::telemetry();
        b.host = host.into();
        b.seq = seq;
        b.gauges.clear();
        let r = b.readings[0].clone();
        b.readings = sensors
            .iter()
            .map(|s| {
                let mut r = r.clone();
                r.sensor = (*s).into();
                r
            })
            .collect();
        b
    }

    fn reason(o: &Outcome) -> &'static str {
        match o {
            Outcome::Accepted(_) => "accepted",
            Outcome::Duplicate => "duplicate",
            Outcome::Rejected { reason, .. } => reason,
            _ => "other",
        }
    }

    #[test]
    fn a_host_past_its_sensor_limit_is_refused_and_others_flow() {
        // node-01 has one sensor in the ledger already; the limit is 3.
        let mut ing = ingestor()
            .with_max_sensors_per_host(3)
            .with_known_sensors([("node-01", "rapl:package-0")]);
        let out = ing
            .ingest_group(
                &[
                    // Two new: 3 in all, on the limit.
                    msg(&with_sensors(
                        "node-01",
                        1,
                        &["rapl:package-0", "gpu:0", "gpu:1"],
                    )),
                    // The same batch again: a duplicate, not a rejection.
                    msg(&with_sensors(
                        "node-01",
                        1,
                        &["rapl:package-0", "gpu:0", "gpu:1"],
                    )),
                    // One more in the same transaction: refused.
                    msg(&with_sensors("node-01", 2, &["gpu:2"])),
                    // Known sensors only: accepted.
                    msg(&with_sensors("node-01", 3, &["gpu:1", "gpu:0"])),
                    // Another host has its own room.
                    msg(&with_sensors("node-02", 1, &["a", "b", "c"])),
                ],
                NOW,
            )
            .unwrap();
        let got: Vec<_> = out.iter().map(reason).collect();
        assert_eq!(
            got,
            [
                "accepted",
                "duplicate",
                "too_many_sensors",
                "accepted",
                "accepted"
            ]
        );
        let Outcome::Rejected { detail, .. } = &out[2] else {
            unreachable!()
        };
        assert_eq!(
            detail,
            "host \"node-01\" has 3 sensors; this batch adds 1 more, limit 3"
        );
        // After the commit, in a later transaction: still refused, and a
        // batch naming two new ones is refused whole (no reading of it kept).
        let out = ing
            .ingest_group(
                &[
                    msg(&with_sensors("node-01", 4, &["gpu:3"])),
                    msg(&with_sensors("node-02", 2, &["a", "d"])),
                ],
                NOW,
            )
            .unwrap();
        let got: Vec<_> = out.iter().map(reason).collect();
        assert_eq!(got, ["too_many_sensors", "too_many_sensors"]);
        let sensors: Vec<(String, String)> = store::totals(ing.conn())
            .unwrap()
            .into_iter()
            .map(|(h, s, _)| (h, s))
            .collect();
        assert_eq!(sensors.len(), 6, "{sensors:?}");
        assert_eq!(store::quarantine_count(ing.conn()).unwrap(), 3);
    }

    #[test]
    fn gauges_count_against_the_limit_and_a_restart_knows_every_sensor() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.sqlite");
        let mut ing = Ingestor::new(store::open(&path).unwrap(), Limits::default())
            .with_max_sensors_per_host(3);
        // Two reading sensors and a register gauge on a third: 3 in all.
        let mut b = with_sensors("node-01", 1, &["pdu:1", "pdu:2"]);
        let mut g = samples::telemetry().gauges.remove(0);
        g.sensor = "heat:1".into();
        g.quantity = vigie_protocol::GaugeQuantity::HeatEnergyKwh;
        b.gauges = vec![g.clone()];
        // A known reading with a fourth name only in a gauge: refused.
        let mut over = with_sensors("node-01", 2, &["pdu:1"]);
        let mut g4 = g.clone();
        g4.sensor = "temp:1".into();
        over.gauges = vec![g4];
        let out = ing.ingest_group(&[msg(&b), msg(&over)], NOW).unwrap();
        let got: Vec<_> = out.iter().map(reason).collect();
        assert_eq!(got, ["accepted", "too_many_sensors"]);
        drop(ing);

        // After a restart the ledger's sensors (energy rows and registers)
        // are known again: still full.
        let conn = store::open(&path).unwrap();
        let totals = store::totals(&conn).unwrap();
        let registers = store::register_sensors(&conn).unwrap();
        assert_eq!(registers, [("node-01".to_owned(), "heat:1".to_owned())]);
        let mut ing = Ingestor::new(conn, Limits::default())
            .with_max_sensors_per_host(3)
            .with_known_sensors(totals.iter().map(|(h, s, _)| (h.as_str(), s.as_str())))
            .with_known_sensors(registers.iter().map(|(h, s)| (h.as_str(), s.as_str())));
        let out = ing
            .ingest_group(
                &[
                    msg(&with_sensors("node-01", 3, &["pdu:3"])),
                    msg(&with_sensors("node-01", 4, &["pdu:2", "pdu:1"])),
                ],
                NOW,
            )
            .unwrap();
        let got: Vec<_> = out.iter().map(reason).collect();
        assert_eq!(got, ["too_many_sensors", "accepted"]);
    }

    fn status_of(host: &str, payload: &[u8]) -> Message {
        Message {
            topic: format!("vigie/v1/par1/{host}/status"),
            payload: payload.to_vec(),
        }
    }

    fn meta_of(host: &str) -> Message {
        let mut meta = samples::meta();
        meta.host = host.into();
        Message {
            topic: format!("vigie/v1/par1/{host}/meta"),
            payload: serde_json::to_vec(&meta).unwrap(),
        }
    }

    #[test]
    fn new_hosts_past_the_limit_are_refused_and_known_ones_flow() {
        let online = serde_json::to_vec(&samples::status_online()).unwrap();
        // node-01 is in the ledger already; the limit is 2.
        let mut ing = ingestor().with_max_hosts(2).with_known_hosts(["node-01"]);
        let out = ing
            .ingest_group(
                &[
                    // Refused for its own reason: takes no place.
                    status_of("node-05", b"{not json"),
                    // A second host: on the limit.
                    status_of("node-02", &online),
                    // A third, in the same transaction: refused.
                    status_of("node-03", &online),
                    msg(&with_sensors("node-04", 1, &["rapl:package-0"])),
                    meta_of("node-06"),
                    // Known hosts flow.
                    msg(&with_sensors("node-01", 1, &["rapl:package-0"])),
                    meta_of("node-02"),
                ],
                NOW,
            )
            .unwrap();
        let got: Vec<_> = out
            .iter()
            .map(|o| match o {
                Outcome::Status { .. } => "status",
                Outcome::Meta { .. } => "meta",
                o => reason(o),
            })
            .collect();
        assert_eq!(
            got,
            [
                "malformed",
                "status",
                "too_many_hosts",
                "too_many_hosts",
                "too_many_hosts",
                "accepted",
                "meta"
            ]
        );
        let Outcome::Rejected { detail, .. } = &out[2] else {
            unreachable!()
        };
        assert_eq!(
            detail,
            "host \"node-03\" is new and the collector already knows 2 hosts, limit 2"
        );
        assert_eq!(ing.hosts_known(), 2);
        // After the commit: still refused; known ones still flow.
        let out = ing
            .ingest_group(
                &[
                    msg(&with_sensors("node-03", 1, &["rapl:package-0"])),
                    status_of("node-02", &online),
                ],
                NOW,
            )
            .unwrap();
        assert_eq!(reason(&out[0]), "too_many_hosts");
        assert!(matches!(out[1], Outcome::Status { .. }), "{out:?}");
        let hosts: Vec<String> = store::hosts(ing.conn())
            .unwrap()
            .into_iter()
            .map(|h| h.host)
            .collect();
        assert_eq!(hosts, ["node-01", "node-02"]);
        // Every refusal is quarantined.
        assert_eq!(store::quarantine_count(ing.conn()).unwrap(), 5);
    }

    #[test]
    fn a_restart_counts_the_ledgers_hosts_against_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.sqlite");
        let online = serde_json::to_vec(&samples::status_online()).unwrap();
        let mut ing =
            Ingestor::new(store::open(&path).unwrap(), Limits::default()).with_max_hosts(2);
        let out = ing
            .ingest_group(
                &[
                    status_of("node-01", &online),
                    msg(&with_sensors("node-02", 1, &["rapl:package-0"])),
                ],
                NOW,
            )
            .unwrap();
        assert!(out.iter().all(|o| !matches!(o, Outcome::Rejected { .. })));
        drop(ing);
        // As the collector starts: the hosts table names every host.
        let conn = store::open(&path).unwrap();
        let known: Vec<String> = store::hosts(&conn)
            .unwrap()
            .into_iter()
            .map(|h| h.host)
            .collect();
        let mut ing = Ingestor::new(conn, Limits::default())
            .with_max_hosts(2)
            .with_known_hosts(known.iter().map(String::as_str));
        let out = ing
            .ingest_group(
                &[status_of("node-03", &online), status_of("node-01", &online)],
                NOW,
            )
            .unwrap();
        assert_eq!(reason(&out[0]), "too_many_hosts");
        assert!(matches!(out[1], Outcome::Status { .. }));
    }

    #[test]
    fn refusals_of_new_hosts_are_logged_within_a_budget() {
        let mut b = LogBudget::default();
        let t = NOW;
        let first: Vec<_> = (0..12).map(|_| b.take(t)).collect();
        assert_eq!(first[..10], [Some(0); 10]);
        assert_eq!(first[10..], [None, None]);
        // Same window: still quiet.
        assert_eq!(b.take(t + LogBudget::WINDOW_MS - 1), None);
        // The next window's first line says how many were not logged.
        assert_eq!(b.take(t + LogBudget::WINDOW_MS), Some(3));
        assert_eq!(b.take(t + LogBudget::WINDOW_MS), Some(0));
        // A clock stepped back opens a new window rather than going silent.
        assert_eq!(b.take(t), Some(0));
    }

    #[test]
    fn minutes_sum_to_hours_and_estimates_stay_apart() {
        let mut ing = ingestor();
        let mut b = samples::telemetry();
        // Straddles a minute and an hour boundary: 1_795_003_200_000 is an hour start.
        b.readings[0].start_ms = 1_795_003_170_000;
        b.readings[0].end_ms = 1_795_003_230_000;
        b.readings[1].quality = Quality::Estimated;
        ing.ingest_group(&[msg(&b)], 1_795_003_240_000).unwrap();
        let c = ing.conn();
        let sum = |table: &str, col: &str| -> i64 {
            c.query_row(&format!("SELECT SUM({col}) FROM {table}"), [], |r| r.get(0))
                .unwrap()
        };
        assert_eq!(sum("energy_minute", "measured_uj"), 85_250_113);
        assert_eq!(sum("energy_hour", "measured_uj"), 85_250_113);
        assert_eq!(sum("energy_hour", "estimated_uj"), 9_870_004);
        let hours: i64 = c
            .query_row(
                "SELECT COUNT(*) FROM energy_hour WHERE sensor = 'rapl:package-0'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(hours, 2);
        let first_half: i64 = c
            .query_row(
                "SELECT measured_uj FROM energy_hour WHERE sensor = 'rapl:package-0' AND bucket_ms = 1795003200000 - 3600000",
                [],
                |r| r.get(0),
            )
            .unwrap();
        // Cumulative apportioning gives the first half the floor.
        assert_eq!(first_half, 85_250_113 / 2);
    }

    #[test]
    fn long_non_ascii_details_are_rejected_not_a_panic() {
        // serde_json quotes the unknown field's name in its error; the detail
        // used to be cut at byte 200, inside a character, which panicked the
        // writer thread and stopped all ingestion.
        let mut ing = ingestor();
        let msgs: Vec<Message> = (0..2)
            .flat_map(|pad| {
                let name = format!("{}{}", "x".repeat(pad), "é".repeat(150));
                ["status", "meta", "telemetry"].map(|kind| Message {
                    topic: format!("vigie/v1/par1/node-01/{kind}"),
                    payload: format!("{{\"{name}\":1}}").into_bytes(),
                })
            })
            .collect();
        let out = ing.ingest_group(&msgs, NOW).unwrap();
        for o in &out {
            assert!(
                matches!(o, Outcome::Rejected { reason: "invalid_field", detail } if detail.len() < 256),
                "{o:?}"
            );
        }
        assert_eq!(store::quarantine_count(ing.conn()).unwrap(), 6);
    }

    #[test]
    fn status_and_meta_are_recorded_and_checked() {
        let mut ing = ingestor();
        let status = Message {
            topic: "vigie/v1/par1/node-01/status".into(),
            payload: serde_json::to_vec(&samples::status_online()).unwrap(),
        };
        let meta = Message {
            topic: "vigie/v1/par1/node-01/meta".into(),
            payload: serde_json::to_vec(&samples::meta()).unwrap(),
        };
        let wrong_meta = Message {
            topic: "vigie/v1/par1/node-02/meta".into(),
            payload: serde_json::to_vec(&samples::meta()).unwrap(),
        };
        let out = ing.ingest_group(&[status, meta, wrong_meta], NOW).unwrap();
        assert_eq!(
            out[0],
            Outcome::Status {
                host: "node-01".into(),
                online: true,
                spool: samples::status_online().spool,
            }
        );
        // The sample inventory marks one PDU outlet as a component.
        let parts: std::collections::HashSet<String> = samples::meta()
            .sensors
            .into_iter()
            .filter(|s| !s.in_totals())
            .map(|s| s.name)
            .collect();
        assert_eq!(parts.len(), 1);
        assert_eq!(
            out[1],
            Outcome::Meta {
                host: "node-01".into(),
                uncounted: parts
            }
        );
        assert!(matches!(
            out[2],
            Outcome::Rejected {
                reason: "host_mismatch",
                ..
            }
        ));
        let hosts = store::hosts(ing.conn()).unwrap();
        assert_eq!(hosts[0].online, Some(true));
        assert!(hosts[0].meta.as_deref().unwrap().contains("Xeon"));
    }

    fn signed(key: &ed25519_dalek::SigningKey, batch: &TelemetryBatch) -> Message {
        let mut m = msg(batch);
        m.payload = vigie_protocol::sign_payload(key, &m.payload);
        m
    }

    fn key(seed: u8) -> ed25519_dalek::SigningKey {
        ed25519_dalek::SigningKey::from_bytes(&[seed; 32])
    }

    fn measured(ing: &Ingestor) -> u128 {
        store::totals(ing.conn())
            .unwrap()
            .iter()
            .map(|t| t.2.measured + t.2.estimated)
            .sum()
    }

    #[test]
    fn with_keys_only_messages_signed_by_the_topic_hosts_key_are_taken() {
        // node-01 rotates: its old key (1) and its new one (2) both work.
        let ring: KeyRing = [(
            "node-01".to_owned(),
            vec![key(1).verifying_key(), key(2).verifying_key()],
        )]
        .into();
        let mut ing = ingestor().with_keys(ring);
        let b = |seq: u64| {
            let mut b = samples::telemetry();
            b.seq = seq;
            b
        };
        let mut tampered = signed(&key(1), &b(5));
        let at = tampered
            .payload
            .windows(8)
            .position(|w| w == b"85250113")
            .unwrap();
        tampered.payload[at] = b'9';
        let mut node2 = b(1);
        node2.host = "node-02".into();
        let status = |k: Option<&ed25519_dalek::SigningKey>| {
            let json = serde_json::to_vec(&samples::status_online()).unwrap();
            Message {
                topic: "vigie/v1/par1/node-01/status".into(),
                payload: k.map_or(json.clone(), |k| vigie_protocol::sign_payload(k, &json)),
            }
        };
        let meta = |k: &ed25519_dalek::SigningKey| Message {
            topic: "vigie/v1/par1/node-01/meta".into(),
            payload: vigie_protocol::sign_payload(
                k,
                &serde_json::to_vec(&samples::meta()).unwrap(),
            ),
        };
        let out = ing
            .ingest_group(
                &[
                    msg(&b(1)),
                    signed(&key(3), &b(2)),
                    signed(&key(1), &b(3)),
                    signed(&key(2), &b(4)),
                    tampered,
                    signed(&key(3), &node2),
                    status(None),
                    status(Some(&key(3))),
                    status(Some(&key(2))),
                    meta(&key(3)),
                    meta(&key(1)),
                ],
                NOW,
            )
            .unwrap();
        let got: Vec<_> = out.iter().map(reason).collect();
        assert_eq!(
            got,
            [
                "unsigned",
                "unknown_key",
                "accepted",
                "accepted",
                "bad_signature",
                "unknown_key",
                "unsigned",
                "unknown_key",
                "other",
                "unknown_key",
                "other"
            ]
        );
        assert!(matches!(out[8], Outcome::Status { online: true, .. }));
        assert!(matches!(&out[10], Outcome::Meta { host, .. } if host == "node-01"));
        // Two batches of the sample's energy, nothing else.
        assert_eq!(measured(&ing), 2 * (85_250_113 + 9_870_004));
        assert_eq!(store::quarantine_count(ing.conn()).unwrap(), 7);
        // The inventory is kept as JSON, without its trailer.
        let hosts = store::hosts(ing.conn()).unwrap();
        let kept = hosts[0].meta.as_deref().unwrap();
        assert!(!kept.contains("vigie-ed25519"));
        serde_json::from_str::<HostMeta>(kept).unwrap();
    }

    #[test]
    fn the_erase_attack_of_issue_10_is_refused_with_keys() {
        // Mallory publishes 1 µJ batches under node-01's epoch and next
        // sequence numbers before node-01 does: without keys they took the
        // keys and node-01's real batches became duplicates.
        let attack = |ing: &mut Ingestor, sign: bool| {
            let forged: Vec<Message> = (1..=3)
                .map(|seq| {
                    let mut b = samples::telemetry();
                    b.seq = seq;
                    b.gauges.clear();
                    for r in &mut b.readings {
                        (r.energy_uj, r.cumulative_uj, r.power_w) = (1, 1, None);
                    }
                    if sign { signed(&key(3), &b) } else { msg(&b) }
                })
                .collect();
            ing.ingest_group(&forged, NOW).unwrap()
        };
        let real: Vec<Message> = (1..=3)
            .map(|seq| {
                let mut b = samples::telemetry();
                b.seq = seq;
                signed(&key(1), &b)
            })
            .collect();
        let full = 3 * (85_250_113 + 9_870_004);

        // Before: no keys, the attack erases.
        let mut open = ingestor();
        attack(&mut open, false);
        let out = open.ingest_group(&real, NOW).unwrap();
        assert!(
            out.iter().all(|o| reason(o) == "conflicting_duplicate"),
            "{out:?}"
        );
        assert!(measured(&open) < full / 1000);

        // With node-01's key registered: refused, signed or not.
        let ring: KeyRing = [("node-01".to_owned(), vec![key(1).verifying_key()])].into();
        let mut ing = ingestor().with_keys(ring);
        for sign in [false, true] {
            let want = if sign { "unknown_key" } else { "unsigned" };
            let out = attack(&mut ing, sign);
            assert!(out.iter().all(|o| reason(o) == want), "{out:?}");
        }
        let out = ing.ingest_group(&real, NOW).unwrap();
        assert!(out.iter().all(|o| reason(o) == "accepted"), "{out:?}");
        assert_eq!(measured(&ing), full);
    }

    #[test]
    fn a_key_seen_again_with_other_content_is_a_conflicting_duplicate() {
        // No keys configured: the digest comparison holds all the same.
        let mut ing = ingestor();
        let b = samples::telemetry();
        let mut other = b.clone();
        other.readings[0].energy_uj -= 1;
        let out = ing
            .ingest_group(
                &[
                    msg(&b),
                    // The same JSON signed (a trailer removed unchecked): same content.
                    signed(&key(1), &b),
                    msg(&other),
                ],
                NOW,
            )
            .unwrap();
        let got: Vec<_> = out.iter().map(reason).collect();
        assert_eq!(got, ["accepted", "duplicate", "conflicting_duplicate"]);
        let Outcome::Rejected { detail, .. } = &out[2] else {
            unreachable!()
        };
        assert!(
            detail.starts_with(
                "batch (node-01, epoch 1795000000000, seq 42) is already in the ledger with other content"
            ),
            "{detail}"
        );
        // In a later transaction too; the first content stays.
        let out = ing.ingest_group(&[msg(&other), msg(&b)], NOW).unwrap();
        let got: Vec<_> = out.iter().map(reason).collect();
        assert_eq!(got, ["conflicting_duplicate", "duplicate"]);
        assert_eq!(measured(&ing), 85_250_113 + 9_870_004);
        assert_eq!(store::quarantine_count(ing.conn()).unwrap(), 2);
    }

    #[test]
    fn keys_of_a_ledger_older_than_digests_compare_as_unknown() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.sqlite");
        {
            // The batches table as it was before digests, with one key.
            let c = Connection::open(&path).unwrap();
            c.execute_batch(
                "CREATE TABLE batches (
                    host TEXT NOT NULL, epoch INTEGER NOT NULL, seq INTEGER NOT NULL,
                    boot_id TEXT NOT NULL, received_ms INTEGER NOT NULL, readings INTEGER NOT NULL,
                    PRIMARY KEY (host, epoch, seq)
                ) WITHOUT ROWID;
                INSERT INTO batches VALUES ('node-01', 1795000000000, 42, 'b', 0, 2);",
            )
            .unwrap();
        }
        let mut ing = Ingestor::new(store::open(&path).unwrap(), Limits::default());
        let mut b = samples::telemetry();
        let out = ing.ingest_group(&[msg(&b)], NOW).unwrap();
        assert_eq!(out[0], Outcome::Duplicate);
        b.seq = 43;
        let mut other = b.clone();
        other.readings[0].energy_uj -= 1;
        let out = ing.ingest_group(&[msg(&b), msg(&other)], NOW).unwrap();
        let got: Vec<_> = out.iter().map(reason).collect();
        assert_eq!(got, ["accepted", "conflicting_duplicate"]);
        drop(ing);
        // Opening again does not migrate twice.
        store::open(&path).unwrap();
    }
}
