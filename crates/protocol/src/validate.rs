//! Decoding and validating a telemetry payload against its topic.

use crate::{
    Gauge, IdError, Reading, SCHEMA_VERSION, SIGNATURE_SCHEME, TelemetryBatch, Topic, TopicError,
    WorkloadEnergy, WorkloadSplit, is_valid_host_or_site, is_valid_sensor,
};
use serde::Deserialize;
use std::fmt;
use std::marker::PhantomData;

/// Bounds a telemetry batch must respect. Defaults suit a datacenter:
/// a single sensor above 10 MW is a broken or hostile sender.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Largest payload accepted, in bytes.
    pub max_payload_bytes: usize,
    /// Most readings in one batch.
    pub max_readings: usize,
    /// Highest average power one reading may imply, in watts.
    pub max_power_w: f64,
    /// How far in the future an interval may end, in milliseconds (clock skew).
    pub max_future_ms: i64,
    /// Longest interval one reading may cover, in milliseconds.
    pub max_interval_ms: i64,
    /// Earliest accepted timestamp, Unix milliseconds.
    pub min_timestamp_ms: i64,
    /// Most minute buckets the readings of one batch may touch (see
    /// [`minute_buckets`]): the work its commit costs, bounded before
    /// anything is written.
    pub max_minute_buckets: u64,
    /// Most workload lines in one batch: every split and every workload
    /// in it counts one (each is ledger rows and metric series).
    pub max_workloads: usize,
}

/// Default of [`Limits::max_workloads`]: a minute of 1 Hz splits of two
/// sensors with 15 workloads each, with room.
pub const DEFAULT_MAX_WORKLOADS: usize = 4_000;
/// Longest workload id, bytes.
pub const MAX_WORKLOAD_ID_BYTES: usize = 256;
/// Most labels on one workload.
pub const MAX_WORKLOAD_LABELS: usize = 8;
/// Longest label key, bytes (`[a-z0-9_]`).
pub const MAX_LABEL_KEY_BYTES: usize = 64;
/// Longest label value, bytes.
pub const MAX_LABEL_VALUE_BYTES: usize = 256;

/// Default of [`Limits::max_minute_buckets`]: 200,000, about 20 sensors
/// bridging a 7-day downtime, or 2,000 sensors merged over 100 minutes;
/// a few seconds of commit, well inside a 30 s watchdog.
pub const DEFAULT_MAX_MINUTE_BUCKETS: u64 = 200_000;

/// How many minute buckets `readings` touch, counted per reading (the
/// work of splitting them; readings of one sensor in the same minute
/// count twice, which only overestimates). Intervals that end before
/// they start count as one bucket. Saturates at `u64::MAX`.
///
/// ```
/// use vigie_protocol::{minute_buckets, samples};
/// let mut r = samples::telemetry().readings[0].clone();
/// (r.start_ms, r.end_ms) = (59_000, 121_000); // minutes 0, 1 and 2
/// assert_eq!(minute_buckets(std::slice::from_ref(&r)), 3);
/// ```
pub fn minute_buckets(readings: &[Reading]) -> u64 {
    const MINUTE_MS: i64 = 60_000;
    readings
        .iter()
        .map(|r| {
            let first = r.start_ms.div_euclid(MINUTE_MS);
            // The end is exclusive: an interval ending on a minute does not touch it.
            let last = r.end_ms.saturating_sub(1).div_euclid(MINUTE_MS).max(first);
            last.abs_diff(first).saturating_add(1)
        })
        .fold(0u64, u64::saturating_add)
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_payload_bytes: 256 * 1024,
            max_readings: 10_000,
            max_power_w: 10_000_000.0,
            max_future_ms: 5 * 60 * 1000,
            max_interval_ms: 7 * 24 * 3600 * 1000,
            // 2020-01-01T00:00:00Z: nothing older is live telemetry.
            min_timestamp_ms: 1_577_836_800_000,
            max_minute_buckets: DEFAULT_MAX_MINUTE_BUCKETS,
            max_workloads: DEFAULT_MAX_WORKLOADS,
        }
    }
}

/// Why a telemetry message was refused. [`Rejection::reason`] gives the
/// stable label counted in `vigie_ingest_rejected_total{reason}`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Rejection {
    /// Topic is not a vigie v1 telemetry topic.
    #[error("bad topic: {0}")]
    BadTopic(#[from] TopicError),
    /// Payload larger than the limit.
    #[error("payload of {len} bytes exceeds the {max}-byte limit")]
    Oversized {
        /// Payload length.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// Not JSON, or truncated.
    #[error("malformed JSON: {0}")]
    Malformed(String),
    /// JSON, but a field is missing, unknown or of the wrong type.
    #[error("invalid field: {0}")]
    InvalidField(String),
    /// A schema version this collector does not read.
    #[error("unsupported schema version {0} (this collector reads {SCHEMA_VERSION})")]
    UnsupportedSchema(u64),
    /// Payload host differs from the topic host.
    #[error("payload host {payload:?} differs from topic host {topic:?}")]
    HostMismatch {
        /// Host in the topic.
        topic: String,
        /// Host in the payload.
        payload: String,
    },
    /// Payload site differs from the topic site.
    #[error("payload site {payload:?} differs from topic site {topic:?}")]
    SiteMismatch {
        /// Site in the topic.
        topic: String,
        /// Site in the payload.
        payload: String,
    },
    /// A host, site, sensor or boot id with forbidden characters or length.
    #[error("bad identifier in {field}: {source}")]
    BadIdentifier {
        /// Which field.
        field: &'static str,
        /// What is wrong.
        source: IdError,
    },
    /// No readings.
    #[error("batch has no readings")]
    Empty,
    /// More readings than allowed.
    #[error("batch has {count} readings, limit {max}")]
    TooManyReadings {
        /// Readings in the batch.
        count: usize,
        /// Limit.
        max: usize,
    },
    /// The batch names sensors the ledger does not hold for its host, and
    /// they would take the host past its limit of distinct sensors (each
    /// sensor is ledger rows and metric series). Decided by the collector,
    /// which knows the host's sensors; never by [`decode_telemetry`].
    #[error("host {host:?} has {known} sensors; this batch adds {new} more, limit {max}")]
    TooManySensors {
        /// The host.
        host: String,
        /// Distinct sensors already in the ledger for it.
        known: usize,
        /// New sensor names in the batch.
        new: usize,
        /// Limit.
        max: usize,
    },
    /// A message from a host the collector does not know while it already
    /// knows its limit of hosts (each host is ledger rows and metric
    /// series). Decided by the collector; never by [`decode_telemetry`].
    #[error("host {host:?} is new and the collector already knows {known} hosts, limit {max}")]
    TooManyHosts {
        /// The host.
        host: String,
        /// Hosts the collector knows.
        known: usize,
        /// Limit.
        max: usize,
    },
    /// The readings would touch more minute buckets than one batch may:
    /// refused before anything is written (a small message of long
    /// intervals once became 19 M rows and a 293 s commit).
    #[error("readings touch {buckets} minute buckets; at most {max} per batch")]
    TooMuchWork {
        /// Minute buckets the readings touch.
        buckets: u64,
        /// Limit.
        max: u64,
    },
    /// Interval ends before it starts, or is too long.
    #[error("reading {index}: bad interval [{start_ms}, {end_ms})")]
    BadInterval {
        /// Reading index.
        index: usize,
        /// Start.
        start_ms: i64,
        /// End.
        end_ms: i64,
    },
    /// Two readings of the same sensor overlap or are out of order.
    #[error("reading {index}: sensor {sensor:?} overlaps or precedes its previous reading")]
    Overlap {
        /// Reading index.
        index: usize,
        /// Sensor.
        sensor: String,
    },
    /// Energy implies a power above the limit (or energy over an empty interval).
    #[error("reading {index}: {energy_uj} µJ over {duration_ms} ms exceeds {max_power_w} W")]
    EnergyOutOfRange {
        /// Reading index.
        index: usize,
        /// Energy.
        energy_uj: u64,
        /// Interval length.
        duration_ms: i64,
        /// Limit.
        max_power_w: f64,
    },
    /// Cumulative energy smaller than the interval's own energy.
    #[error("reading {index}: cumulative {cumulative_uj} µJ below interval energy {energy_uj} µJ")]
    CumulativeInconsistent {
        /// Reading index.
        index: usize,
        /// Interval energy.
        energy_uj: u64,
        /// Cumulative energy.
        cumulative_uj: u64,
    },
    /// Average power negative, or above the limit.
    #[error("reading {index}: power {power_w} W out of range")]
    PowerOutOfRange {
        /// Reading index.
        index: usize,
        /// Reported power.
        power_w: f64,
    },
    /// Interval ends too far in the future (sender clock or hostile).
    #[error("reading {index}: ends at {end_ms}, more than {max_future_ms} ms after now ({now_ms})")]
    FutureTimestamp {
        /// Reading index.
        index: usize,
        /// Interval end.
        end_ms: i64,
        /// Collector time.
        now_ms: i64,
        /// Allowed skew.
        max_future_ms: i64,
    },
    /// Keys are configured and the message carries no signature (an old
    /// agent, or anyone writing to the broker).
    #[error(
        "unsigned message: this collector requires signed messages ({SIGNATURE_SCHEME} trailer)"
    )]
    Unsigned,
    /// A malformed signature trailer, or a signature that does not verify
    /// over the message's bytes.
    #[error("bad signature: {0}")]
    BadSignature(String),
    /// Signed with a key that is not registered for the topic's host (a
    /// host publishing as another, or a host with no key).
    #[error(
        "signed with key {key}, which is not registered for this topic's host ({registered} key(s) registered)"
    )]
    UnknownKey {
        /// The trailer's public key, hex.
        key: String,
        /// How many keys the host has.
        registered: usize,
    },
    /// A batch whose key (host, epoch, seq) the ledger already holds with
    /// other content: refused, the first content stays. Decided by the
    /// collector, which holds the digests; never by [`decode_telemetry`].
    #[error(
        "batch ({host}, epoch {epoch}, seq {seq}) is already in the ledger with other content (SHA-256 {stored} there, {received} here); the first content stays"
    )]
    ConflictingDuplicate {
        /// Host.
        host: String,
        /// Epoch.
        epoch: u64,
        /// Sequence number.
        seq: u64,
        /// Digest of the stored batch, hex.
        stored: String,
        /// Digest of this one, hex.
        received: String,
    },
    /// More workload lines (splits and the workloads in them) than allowed.
    #[error("batch has {count} workload lines, limit {max}")]
    TooManyWorkloads {
        /// Splits plus workloads in the batch.
        count: usize,
        /// Limit.
        max: usize,
    },
    /// A workload split that cannot be accounted: an id or label out of
    /// bounds, a duplicate workload, no reading of its sensor around its
    /// interval, or splits of one sensor that overlap.
    #[error("workload split {index}: {detail}")]
    BadWorkload {
        /// Split index.
        index: usize,
        /// What is wrong.
        detail: String,
    },
    /// A split whose lines do not add up to its energy, or whose energy is
    /// not the reading's it splits.
    #[error("workload split {index} ({sensor}): {detail}")]
    WorkloadSumMismatch {
        /// Split index.
        index: usize,
        /// Sensor split.
        sensor: String,
        /// The sums that disagree.
        detail: String,
    },
    /// Interval starts before the earliest accepted time.
    #[error("reading {index}: starts at {start_ms}, before {min_ms}")]
    AncientTimestamp {
        /// Reading index.
        index: usize,
        /// Interval start.
        start_ms: i64,
        /// Earliest accepted.
        min_ms: i64,
    },
}

impl Rejection {
    /// Stable, low-cardinality label for metrics and the quarantine table.
    pub fn reason(&self) -> &'static str {
        match self {
            Rejection::BadTopic(_) => "bad_topic",
            Rejection::Oversized { .. } => "oversized",
            Rejection::Malformed(_) => "malformed",
            Rejection::InvalidField(_) => "invalid_field",
            Rejection::UnsupportedSchema(_) => "unsupported_schema",
            Rejection::HostMismatch { .. } => "host_mismatch",
            Rejection::SiteMismatch { .. } => "site_mismatch",
            Rejection::BadIdentifier { .. } => "bad_identifier",
            Rejection::Empty => "empty_batch",
            Rejection::TooManyReadings { .. } => "too_many_readings",
            Rejection::TooManySensors { .. } => "too_many_sensors",
            Rejection::TooManyHosts { .. } => "too_many_hosts",
            Rejection::TooMuchWork { .. } => "too_much_work",
            Rejection::BadInterval { .. } => "bad_interval",
            Rejection::Overlap { .. } => "overlapping_readings",
            Rejection::EnergyOutOfRange { .. } => "energy_out_of_range",
            Rejection::CumulativeInconsistent { .. } => "cumulative_inconsistent",
            Rejection::PowerOutOfRange { .. } => "power_out_of_range",
            Rejection::FutureTimestamp { .. } => "future_timestamp",
            Rejection::AncientTimestamp { .. } => "ancient_timestamp",
            Rejection::Unsigned => "unsigned",
            Rejection::BadSignature(_) => "bad_signature",
            Rejection::UnknownKey { .. } => "unknown_key",
            Rejection::ConflictingDuplicate { .. } => "conflicting_duplicate",
            Rejection::TooManyWorkloads { .. } => "too_many_workloads",
            Rejection::BadWorkload { .. } => "bad_workload",
            Rejection::WorkloadSumMismatch { .. } => "workload_sum_mismatch",
        }
    }

    /// The rejection for a payload serde_json could not read into the
    /// expected type: [`Rejection::Malformed`] when it is not JSON (or is
    /// truncated), [`Rejection::InvalidField`] when it is JSON of the wrong
    /// shape. The detail is cut to 200 bytes.
    pub fn from_json_error(e: &serde_json::Error) -> Rejection {
        use serde_json::error::Category;
        match e.classify() {
            Category::Syntax | Category::Eof | Category::Io => Rejection::Malformed(short(e)),
            Category::Data => Rejection::InvalidField(short(e)),
        }
    }

    /// Every reason label, for pre-registering metrics so that a zero shows.
    pub const ALL_REASONS: &'static [&'static str] = &[
        "bad_topic",
        "oversized",
        "malformed",
        "invalid_field",
        "unsupported_schema",
        "host_mismatch",
        "site_mismatch",
        "bad_identifier",
        "empty_batch",
        "too_many_readings",
        "too_many_sensors",
        "too_many_hosts",
        "too_much_work",
        "bad_interval",
        "overlapping_readings",
        "energy_out_of_range",
        "cumulative_inconsistent",
        "power_out_of_range",
        "future_timestamp",
        "ancient_timestamp",
        "unsigned",
        "bad_signature",
        "unknown_key",
        "conflicting_duplicate",
        "too_many_workloads",
        "bad_workload",
        "workload_sum_mismatch",
    ];
}

/// At most 200 bytes of the error, cut on a character boundary: the
/// message quotes the input (an unknown field's name, a bad value), which
/// may be any UTF-8.
fn short(e: &serde_json::Error) -> String {
    let mut s = e.to_string();
    let mut end = s.len().min(200);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s
}

/// `T` read from a JSON object only. serde's derived structs also accept a
/// JSON array of their fields in order, which is not the wire format: it
/// would make field order part of the contract and skip the field names
/// that `deny_unknown_fields` checks.
struct Object<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for V<T> {
            type Value = T;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(V(PhantomData)).map(Object)
    }
}

/// [`TelemetryBatch`] as read from the wire: the same fields (the
/// conversion below stops compiling when one is added there and not
/// here), each reading an [`Object`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireBatch {
    schema: u32,
    site: String,
    host: String,
    boot_id: String,
    epoch: u64,
    seq: u64,
    readings: Vec<Object<Reading>>,
    #[serde(default)]
    gauges: Vec<Object<Gauge>>,
    #[serde(default)]
    workloads: Vec<Object<WireSplit>>,
}

/// [`WorkloadSplit`] as read from the wire, each workload an [`Object`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireSplit {
    sensor: String,
    start_ms: i64,
    end_ms: i64,
    energy_uj: u64,
    idle_uj: u64,
    unattributed_uj: u64,
    #[serde(default)]
    other_uj: u64,
    #[serde(default)]
    other_count: u64,
    quality: crate::Quality,
    basis: crate::ActivityBasis,
    workloads: Vec<Object<WorkloadEnergy>>,
}

impl From<WireSplit> for WorkloadSplit {
    fn from(w: WireSplit) -> Self {
        WorkloadSplit {
            sensor: w.sensor,
            start_ms: w.start_ms,
            end_ms: w.end_ms,
            energy_uj: w.energy_uj,
            idle_uj: w.idle_uj,
            unattributed_uj: w.unattributed_uj,
            other_uj: w.other_uj,
            other_count: w.other_count,
            quality: w.quality,
            basis: w.basis,
            workloads: w.workloads.into_iter().map(|x| x.0).collect(),
        }
    }
}

impl From<WireBatch> for TelemetryBatch {
    fn from(w: WireBatch) -> Self {
        TelemetryBatch {
            schema: w.schema,
            site: w.site,
            host: w.host,
            boot_id: w.boot_id,
            epoch: w.epoch,
            seq: w.seq,
            // Same layout: collected in place, no new allocation.
            readings: w.readings.into_iter().map(|r| r.0).collect(),
            gauges: w.gauges.into_iter().map(|g| g.0).collect(),
            workloads: w.workloads.into_iter().map(|s| s.0.into()).collect(),
        }
    }
}

/// Decodes a telemetry payload received on `topic` and checks it against
/// `limits`, with `now_ms` the receiver's clock. On success the batch is
/// safe to account: identifiers are clean, intervals are ordered per sensor
/// and energies are plausible.
pub fn decode_telemetry(
    topic: &Topic,
    payload: &[u8],
    now_ms: i64,
    limits: &Limits,
) -> Result<TelemetryBatch, Rejection> {
    if payload.len() > limits.max_payload_bytes {
        return Err(Rejection::Oversized {
            len: payload.len(),
            max: limits.max_payload_bytes,
        });
    }
    let batch: TelemetryBatch = match serde_json::from_slice::<Object<WireBatch>>(payload) {
        Ok(b) => b.0.into(),
        Err(e) => return Err(classify(payload, &e)),
    };
    if batch.schema != SCHEMA_VERSION {
        return Err(Rejection::UnsupportedSchema(u64::from(batch.schema)));
    }
    validate(topic, &batch, now_ms, limits)?;
    Ok(batch)
}

/// Tells a newer schema (whose fields we may not know) from a broken payload.
fn classify(payload: &[u8], e: &serde_json::Error) -> Rejection {
    let r = Rejection::from_json_error(e);
    if !matches!(r, Rejection::InvalidField(_)) {
        return r;
    }
    #[derive(Deserialize)]
    struct Version {
        schema: u64,
    }
    match serde_json::from_slice::<Object<Version>>(payload) {
        Ok(Object(v)) if v.schema != u64::from(SCHEMA_VERSION) => {
            Rejection::UnsupportedSchema(v.schema)
        }
        _ => r,
    }
}

fn validate(
    topic: &Topic,
    batch: &TelemetryBatch,
    now_ms: i64,
    limits: &Limits,
) -> Result<(), Rejection> {
    let id = |field: &'static str| move |source| Rejection::BadIdentifier { field, source };
    is_valid_host_or_site(&batch.host).map_err(id("host"))?;
    is_valid_host_or_site(&batch.site).map_err(id("site"))?;
    if batch.host != topic.host {
        return Err(Rejection::HostMismatch {
            topic: topic.host.clone(),
            payload: batch.host.clone(),
        });
    }
    if batch.site != topic.site {
        return Err(Rejection::SiteMismatch {
            topic: topic.site.clone(),
            payload: batch.site.clone(),
        });
    }
    // boot_id is a UUID on Linux; allow any short identifier for other OSes.
    is_valid_host_or_site(&batch.boot_id).map_err(id("boot_id"))?;
    // The ledger stores both as SQL integers (i64): larger ones were shown
    // as negative numbers. Agents make epochs from the clock, far below.
    for (field, v) in [("epoch", batch.epoch), ("seq", batch.seq)] {
        if i64::try_from(v).is_err() {
            return Err(Rejection::InvalidField(format!(
                "{field} {v} is above {} (the ledger's integer range)",
                i64::MAX
            )));
        }
    }

    let n = batch.readings.len() + batch.gauges.len();
    if n == 0 {
        return Err(Rejection::Empty);
    }
    if n > limits.max_readings {
        return Err(Rejection::TooManyReadings {
            count: n,
            max: limits.max_readings,
        });
    }
    // mW, so that the energy bound is integer arithmetic: µJ / ms = mW.
    let max_power_mw = (limits.max_power_w * 1000.0) as u128;
    // Last end per sensor; batches hold few sensors, so a small vector beats a map.
    let mut last_end: Vec<(&str, i64)> = Vec::new();
    for (index, r) in batch.readings.iter().enumerate() {
        is_valid_sensor(&r.sensor).map_err(id("sensor"))?;
        let duration_ms = r.end_ms.checked_sub(r.start_ms).unwrap_or(-1);
        if duration_ms < 0 || duration_ms > limits.max_interval_ms {
            return Err(Rejection::BadInterval {
                index,
                start_ms: r.start_ms,
                end_ms: r.end_ms,
            });
        }
        if r.start_ms < limits.min_timestamp_ms {
            return Err(Rejection::AncientTimestamp {
                index,
                start_ms: r.start_ms,
                min_ms: limits.min_timestamp_ms,
            });
        }
        if r.end_ms > now_ms.saturating_add(limits.max_future_ms) {
            return Err(Rejection::FutureTimestamp {
                index,
                end_ms: r.end_ms,
                now_ms,
                max_future_ms: limits.max_future_ms,
            });
        }
        // Saturating: a configured limit near f64::MAX must not wrap the bound.
        let max_energy = max_power_mw.saturating_mul(duration_ms as u128);
        if u128::from(r.energy_uj) > max_energy {
            return Err(Rejection::EnergyOutOfRange {
                index,
                energy_uj: r.energy_uj,
                duration_ms,
                max_power_w: limits.max_power_w,
            });
        }
        if r.cumulative_uj < r.energy_uj {
            return Err(Rejection::CumulativeInconsistent {
                index,
                energy_uj: r.energy_uj,
                cumulative_uj: r.cumulative_uj,
            });
        }
        if let Some(p) = r.power_w
            && !(p.is_finite() && p >= 0.0 && p <= limits.max_power_w)
        {
            return Err(Rejection::PowerOutOfRange { index, power_w: p });
        }
        match last_end.iter_mut().find(|(s, _)| *s == r.sensor) {
            Some((_, end)) if r.start_ms < *end => {
                return Err(Rejection::Overlap {
                    index,
                    sensor: r.sensor.clone(),
                });
            }
            Some((_, end)) => *end = r.end_ms,
            None => last_end.push((&r.sensor, r.end_ms)),
        }
    }
    // After the interval checks: every interval is ordered and bounded here.
    let buckets = minute_buckets(&batch.readings);
    if buckets > limits.max_minute_buckets {
        return Err(Rejection::TooMuchWork {
            buckets,
            max: limits.max_minute_buckets,
        });
    }
    for (i, g) in batch.gauges.iter().enumerate() {
        // Gauges are numbered after the readings in rejection details.
        let index = batch.readings.len() + i;
        is_valid_sensor(&g.sensor).map_err(id("sensor"))?;
        if !g.value.is_finite() {
            return Err(Rejection::InvalidField(format!(
                "gauge {index}: value must be a finite number"
            )));
        }
        if g.at_ms < limits.min_timestamp_ms {
            return Err(Rejection::AncientTimestamp {
                index,
                start_ms: g.at_ms,
                min_ms: limits.min_timestamp_ms,
            });
        }
        if g.at_ms > now_ms.saturating_add(limits.max_future_ms) {
            return Err(Rejection::FutureTimestamp {
                index,
                end_ms: g.at_ms,
                now_ms,
                max_future_ms: limits.max_future_ms,
            });
        }
    }
    validate_workloads(batch, limits)
}

/// Whether `s` is a usable workload id or label value: not empty (ids),
/// at most `max` bytes, no control characters.
fn check_text(what: &str, s: &str, max: usize, empty_ok: bool) -> Result<(), String> {
    if s.is_empty() && !empty_ok {
        return Err(format!("{what} is empty"));
    }
    if s.len() > max {
        return Err(format!("{what} is {} bytes, at most {max}", s.len()));
    }
    if s.chars().any(char::is_control) {
        return Err(format!("{what} has a control character"));
    }
    Ok(())
}

fn check_workload(w: &WorkloadEnergy) -> Result<(), String> {
    check_text("workload id", &w.id, MAX_WORKLOAD_ID_BYTES, false)?;
    if w.labels.len() > MAX_WORKLOAD_LABELS {
        return Err(format!(
            "workload {:?} has {} labels, at most {MAX_WORKLOAD_LABELS}",
            w.id,
            w.labels.len()
        ));
    }
    for (k, v) in &w.labels {
        let key_ok = !k.is_empty()
            && k.len() <= MAX_LABEL_KEY_BYTES
            && k.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !key_ok {
            return Err(format!(
                "label key {:?} must be [a-z0-9_], 1 to {MAX_LABEL_KEY_BYTES} bytes",
                k.chars().take(80).collect::<String>()
            ));
        }
        check_text("label value", v, MAX_LABEL_VALUE_BYTES, true)?;
    }
    Ok(())
}

/// The workload splits: bounded, well-formed, each adding up to its energy
/// and that energy being the reading's (or within a merged reading's).
fn validate_workloads(batch: &TelemetryBatch, limits: &Limits) -> Result<(), Rejection> {
    if batch.workloads.is_empty() {
        return Ok(());
    }
    let count = batch
        .workloads
        .iter()
        .map(|s| 1 + s.workloads.len())
        .fold(0usize, usize::saturating_add);
    if count > limits.max_workloads {
        return Err(Rejection::TooManyWorkloads {
            count,
            max: limits.max_workloads,
        });
    }
    // Energy of the splits inside each reading, to compare with it.
    let mut inside: Vec<u128> = vec![0; batch.readings.len()];
    let mut last_end: Vec<(&str, i64)> = Vec::new();
    for (index, s) in batch.workloads.iter().enumerate() {
        let bad = |detail: String| Rejection::BadWorkload { index, detail };
        let mismatch = |detail: String| Rejection::WorkloadSumMismatch {
            index,
            sensor: s.sensor.clone(),
            detail,
        };
        is_valid_sensor(&s.sensor).map_err(|source| Rejection::BadIdentifier {
            field: "workload sensor",
            source,
        })?;
        for w in &s.workloads {
            check_workload(w).map_err(bad)?;
        }
        let mut ids: Vec<(crate::WorkloadKind, &str)> = s
            .workloads
            .iter()
            .map(|w| (w.kind, w.id.as_str()))
            .collect();
        ids.sort_unstable();
        if let Some(d) = ids.windows(2).find(|p| p[0] == p[1]) {
            return Err(bad(format!(
                "workload {} {:?} appears twice",
                d[0].0.as_str(),
                d[0].1
            )));
        }
        let lines: u128 = s
            .workloads
            .iter()
            .map(|w| u128::from(w.energy_uj))
            .chain([s.other_uj, s.idle_uj, s.unattributed_uj].map(u128::from))
            .sum();
        if lines != u128::from(s.energy_uj) {
            return Err(mismatch(format!(
                "workloads, other, idle and unattributed add up to {lines} µJ, not the {} µJ split",
                s.energy_uj
            )));
        }
        if s.end_ms < s.start_ms {
            return Err(bad(format!(
                "interval [{}, {}) ends before it starts",
                s.start_ms, s.end_ms
            )));
        }
        match last_end.iter_mut().find(|(x, _)| *x == s.sensor) {
            Some((_, end)) if s.start_ms < *end => {
                return Err(bad(format!(
                    "overlaps or precedes the previous split of {}",
                    s.sensor
                )));
            }
            Some((_, end)) => *end = s.end_ms,
            None => last_end.push((&s.sensor, s.end_ms)),
        }
        let Some((r, reading)) = batch.readings.iter().enumerate().find(|(_, r)| {
            r.sensor == s.sensor
                && r.quality == s.quality
                && r.start_ms <= s.start_ms
                && s.end_ms <= r.end_ms
        }) else {
            return Err(bad(format!(
                "no {:?} reading of {} in the batch covers [{}, {})",
                s.quality, s.sensor, s.start_ms, s.end_ms
            )));
        };
        let exact = reading.start_ms == s.start_ms && reading.end_ms == s.end_ms;
        if exact && reading.energy_uj != s.energy_uj {
            return Err(mismatch(format!(
                "splits {} µJ, the reading over the same interval has {} µJ",
                s.energy_uj, reading.energy_uj
            )));
        }
        inside[r] += u128::from(s.energy_uj);
        if inside[r] > u128::from(reading.energy_uj) {
            return Err(mismatch(format!(
                "splits inside reading {r} add up to {} µJ, more than its {} µJ",
                inside[r], reading.energy_uj
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::{TopicKind, samples};

    const NOW: i64 = 1_795_000_020_000;

    fn topic() -> Topic {
        Topic::new("par1", "node-01", TopicKind::Telemetry).unwrap()
    }

    fn reason_of(payload: &[u8]) -> &'static str {
        decode_telemetry(&topic(), payload, NOW, &Limits::default())
            .unwrap_err()
            .reason()
    }

    fn with(f: impl FnOnce(&mut TelemetryBatch)) -> Vec<u8> {
        let mut b = samples::telemetry();
        f(&mut b);
        serde_json::to_vec(&b).unwrap()
    }

    #[test]
    fn accepts_the_sample() {
        let payload = serde_json::to_vec(&samples::telemetry()).unwrap();
        let b = decode_telemetry(&topic(), &payload, NOW, &Limits::default()).unwrap();
        assert_eq!(b, samples::telemetry());
    }

    #[test]
    fn epochs_and_sequences_past_the_ledger_range_are_refused() {
        for (epoch, seq) in [(1u64 << 63, 42), (1, u64::MAX)] {
            let bytes = with(|b| (b.epoch, b.seq) = (epoch, seq));
            let r = decode_telemetry(&topic(), &bytes, NOW, &Limits::default());
            assert!(
                matches!(&r, Err(e @ Rejection::InvalidField(_)) if e.reason() == "invalid_field"),
                "{r:?}"
            );
        }
        let top = with(|b| (b.epoch, b.seq) = (i64::MAX as u64, i64::MAX as u64));
        assert!(decode_telemetry(&topic(), &top, NOW, &Limits::default()).is_ok());
    }

    #[test]
    fn a_small_message_of_long_intervals_is_refused_before_any_work() {
        // The field finding: 1,900 readings of 7 days each, 254 KB, under
        // every other limit, were 19 M minute rows.
        const WEEK_MS: i64 = 7 * 24 * 3_600_000;
        let bytes = with(|b| {
            let template = b.readings[0].clone();
            b.gauges.clear();
            b.readings = (0..1_900)
                .map(|i| Reading {
                    sensor: format!("s-{i}"),
                    start_ms: NOW - WEEK_MS,
                    end_ms: NOW,
                    energy_uj: 1,
                    cumulative_uj: 1,
                    power_w: None,
                    ..template.clone()
                })
                .collect();
        });
        assert!(bytes.len() < Limits::default().max_payload_bytes);
        let r = decode_telemetry(&topic(), &bytes, NOW, &Limits::default());
        match r {
            Err(e @ Rejection::TooMuchWork { buckets, max }) => {
                assert_eq!(e.reason(), "too_much_work");
                // NOW is on a minute: each week touches 10,080 minutes.
                assert_eq!((buckets, max), (1_900 * 10_080, DEFAULT_MAX_MINUTE_BUCKETS));
            }
            other => panic!("{other:?}"),
        }
        // At the bound it passes: the limit is the work, not the shape.
        let limits = Limits {
            max_minute_buckets: 1_900 * 10_080,
            ..Limits::default()
        };
        assert!(decode_telemetry(&topic(), &bytes, NOW, &limits).is_ok());
    }

    #[test]
    fn minute_buckets_count_the_minutes_an_interval_touches() {
        let r = |start_ms, end_ms| Reading {
            start_ms,
            end_ms,
            ..samples::telemetry().readings[0].clone()
        };
        for (start, end, want) in [
            (0, 60_000, 1),
            (0, 60_001, 2),
            (59_999, 60_001, 2),
            (60_000, 60_000, 1),
            (-1, 1, 2),
            (5, 3, 1),
            (i64::MIN, i64::MAX, u64::MAX / 60_000 + 1),
        ] {
            assert_eq!(minute_buckets(&[r(start, end)]), want, "{start}..{end}");
        }
        assert_eq!(minute_buckets(&[r(0, 60_000), r(0, 120_000)]), 3);
    }

    #[test]
    fn each_bad_input_has_its_reason() {
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("malformed", b"{\"schema\":1,".to_vec()),
            ("malformed", b"\xff\xfe".to_vec()),
            (
                "invalid_field",
                with(|_| ()).replace_str("\"seq\":42", "\"seq\":\"42\""),
            ),
            (
                "invalid_field",
                with(|_| ()).replace_str("\"seq\":42", "\"seq\":42,\"x\":1"),
            ),
            (
                "invalid_field",
                with(|_| ()).replace_str("\"energy_uj\":85250113", "\"energy_uj\":-5"),
            ),
            ("unsupported_schema", with(|b| b.schema = 2)),
            (
                "unsupported_schema",
                with(|_| ()).replace_str("\"schema\":1", "\"schema\":7,\"new\":true"),
            ),
            ("host_mismatch", with(|b| b.host = "node-02".into())),
            ("site_mismatch", with(|b| b.site = "lyo1".into())),
            (
                "bad_identifier",
                with(|b| b.readings[0].sensor = "a/b".into()),
            ),
            ("bad_identifier", with(|b| b.boot_id = "x y".into())),
            (
                "empty_batch",
                with(|b| {
                    b.readings.clear();
                    b.gauges.clear();
                }),
            ),
            (
                "malformed",
                // JSON has no NaN or infinity: an overflowing number is
                // refused by the parser before the finite check.
                String::from_utf8(with(|b| b.gauges[0].value = 12345.5))
                    .unwrap()
                    .replace("12345.5", "1e999")
                    .into_bytes(),
            ),
            (
                "bad_identifier",
                with(|b| b.gauges[0].sensor = "a b".into()),
            ),
            (
                "future_timestamp",
                with(|b| b.gauges[0].at_ms = NOW + 3_600_000),
            ),
            ("ancient_timestamp", with(|b| b.gauges[0].at_ms = 0)),
            (
                "bad_interval",
                with(|b| b.readings[0].end_ms = b.readings[0].start_ms - 1),
            ),
            (
                "overlapping_readings",
                with(|b| b.readings[1].sensor = "rapl:package-0".into()),
            ),
            (
                "energy_out_of_range",
                with(|b| b.readings[0].energy_uj = u64::MAX / 2),
            ),
            (
                "energy_out_of_range",
                with(|b| {
                    b.readings[0].end_ms = b.readings[0].start_ms;
                }),
            ),
            (
                "cumulative_inconsistent",
                with(|b| b.readings[0].cumulative_uj = 1),
            ),
            (
                "power_out_of_range",
                with(|b| b.readings[0].power_w = Some(-1.0)),
            ),
            (
                "future_timestamp",
                with(|b| b.readings[0].end_ms = NOW + 3_600_000),
            ),
            (
                "ancient_timestamp",
                with(|b| {
                    b.readings[0].start_ms = 0;
                    b.readings[0].end_ms = 1000;
                }),
            ),
        ];
        for (want, payload) in cases {
            assert_eq!(
                reason_of(&payload),
                want,
                "{}",
                String::from_utf8_lossy(&payload[..payload.len().min(200)])
            );
        }
        let big = vec![b' '; 300 * 1024];
        assert_eq!(reason_of(&big), "oversized");
        let few = Limits {
            max_readings: 1,
            ..Limits::default()
        };
        let payload = with(|_| ());
        let err = decode_telemetry(&topic(), &payload, NOW, &few).unwrap_err();
        assert_eq!(err.reason(), "too_many_readings");
    }

    fn split_with(f: impl FnOnce(&mut TelemetryBatch)) -> Vec<u8> {
        let mut b = samples::telemetry_with_workloads();
        f(&mut b);
        serde_json::to_vec(&b).unwrap()
    }

    #[test]
    fn accepts_workload_splits_that_add_up_and_refuses_those_that_do_not() {
        let payload = split_with(|_| ());
        let b = decode_telemetry(&topic(), &payload, NOW, &Limits::default()).unwrap();
        assert_eq!(b, samples::telemetry_with_workloads());
        // Split over two halves of a merged reading: each within it, the
        // sum at most the reading's.
        let halves = split_with(|b| {
            let whole = b.workloads[0].clone();
            let half = |start_ms, end_ms, uj| WorkloadSplit {
                start_ms,
                end_ms,
                energy_uj: uj,
                idle_uj: uj,
                unattributed_uj: 0,
                other_uj: 0,
                other_count: 0,
                workloads: Vec::new(),
                ..whole.clone()
            };
            let mid = whole.start_ms + 500;
            b.workloads = vec![
                half(whole.start_ms, mid, 40_000_000),
                half(mid, whole.end_ms, 45_250_113),
            ];
        });
        assert!(decode_telemetry(&topic(), &halves, NOW, &Limits::default()).is_ok());
        let cases: Vec<(&str, Vec<u8>)> = vec![
            (
                "workload_sum_mismatch",
                split_with(|b| b.workloads[0].idle_uj += 1),
            ),
            (
                "workload_sum_mismatch",
                split_with(|b| b.workloads[0].workloads[0].energy_uj -= 1),
            ),
            (
                // Adds up, but not to the reading it splits.
                "workload_sum_mismatch",
                split_with(|b| {
                    b.workloads[0].energy_uj += 1;
                    b.workloads[0].unattributed_uj += 1;
                }),
            ),
            (
                // Two halves each claiming the whole reading.
                "workload_sum_mismatch",
                split_with(|b| {
                    let mut first = b.workloads[0].clone();
                    first.end_ms = first.start_ms + 500;
                    let mut second = first.clone();
                    (second.start_ms, second.end_ms) = (first.end_ms, b.workloads[0].end_ms);
                    b.workloads = vec![first, second];
                }),
            ),
            (
                "bad_workload",
                split_with(|b| b.workloads[0].workloads[1].id = "x".repeat(257)),
            ),
            (
                "bad_workload",
                split_with(|b| b.workloads[0].workloads[1].id = String::new()),
            ),
            (
                "bad_workload",
                split_with(|b| b.workloads[0].workloads[1].id = "a\nb".into()),
            ),
            (
                "bad_workload",
                split_with(|b| {
                    b.workloads[0].workloads[1]
                        .labels
                        .insert("Bad-Key".into(), "v".into());
                }),
            ),
            (
                "bad_workload",
                split_with(|b| {
                    b.workloads[0].workloads[1]
                        .labels
                        .insert("k".into(), "v".repeat(257));
                }),
            ),
            (
                "bad_workload",
                split_with(|b| {
                    let l = &mut b.workloads[0].workloads[1].labels;
                    for i in 0..9 {
                        l.insert(format!("k{i}"), "v".into());
                    }
                }),
            ),
            (
                "bad_workload",
                split_with(|b| {
                    let w = &mut b.workloads[0].workloads;
                    w[1].id = w[2].id.clone();
                    w[1].kind = w[2].kind;
                }),
            ),
            (
                // No reading of that sensor.
                "bad_workload",
                split_with(|b| {
                    b.readings.remove(0);
                }),
            ),
            (
                "bad_workload",
                split_with(|b| b.workloads[0].quality = crate::Quality::Estimated),
            ),
            ("bad_workload", split_with(|b| b.workloads[0].end_ms += 1)),
            (
                "bad_workload",
                split_with(|b| {
                    let again = b.workloads[0].clone();
                    b.workloads.push(again);
                }),
            ),
            (
                "bad_identifier",
                split_with(|b| b.workloads[0].sensor = "a b".into()),
            ),
            (
                "invalid_field",
                split_with(|_| ()).replace_str("\"kind\":\"pod\"", "\"kind\":\"lambda\""),
            ),
            (
                "invalid_field",
                split_with(|_| ())
                    .replace_str("\"basis\":\"cpu_time\"", "\"basis\":\"cpu_time\",\"x\":1"),
            ),
        ];
        for (want, payload) in cases {
            assert_eq!(
                reason_of(&payload),
                want,
                "{}",
                String::from_utf8_lossy(&payload[payload.len().saturating_sub(600)..])
            );
        }
        // The sample has 1 split and 3 workloads: 4 lines.
        let few = Limits {
            max_workloads: 3,
            ..Limits::default()
        };
        let err = decode_telemetry(&topic(), &payload, NOW, &few).unwrap_err();
        assert_eq!(err.reason(), "too_many_workloads");
        let enough = Limits {
            max_workloads: 4,
            ..Limits::default()
        };
        assert!(decode_telemetry(&topic(), &payload, NOW, &enough).is_ok());
        // Positional workloads are not the wire format.
        let positional = split_with(|_| ()).replace_str(
            "{\"kind\":\"service\",\"id\":\"postgresql.service\",\"energy_uj\":10000000}",
            "[\"service\",\"postgresql.service\",{},10000000]",
        );
        assert_eq!(reason_of(&positional), "invalid_field");
    }

    #[test]
    fn long_non_ascii_details_do_not_panic() {
        // serde_json quotes the offending field name or value in its error;
        // cutting the detail at a byte that is not a char boundary panicked.
        for pad in 0..4 {
            let name = format!("{}{}", "x".repeat(pad), "é".repeat(150));
            let payload =
                with(|_| ()).replace_str("\"seq\":42", &format!("\"seq\":42,\"{name}\":1"));
            let err = decode_telemetry(&topic(), &payload, NOW, &Limits::default()).unwrap_err();
            assert_eq!(err.reason(), "invalid_field");
            let payload = with(|_| ()).replace_str("\"measured\"", &format!("\"{name}\""));
            assert_eq!(reason_of(&payload), "invalid_field");
        }
    }

    #[test]
    fn only_json_objects_are_batches() {
        // serde's derived structs would take the fields in order from an array.
        let r = &samples::telemetry().readings[0];
        let reading = format!(
            "[\"{}\",{},{},{},{},null,\"measured\"]",
            r.sensor, r.start_ms, r.end_ms, r.energy_uj, r.cumulative_uj
        );
        let positional =
            format!("[1,\"par1\",\"node-01\",\"2f1c7f0e\",1795000000000,42,[{reading}]]");
        assert_eq!(reason_of(positional.as_bytes()), "invalid_field");
        let nested = format!(
            "{{\"schema\":1,\"site\":\"par1\",\"host\":\"node-01\",\"boot_id\":\"b\",\"epoch\":1,\"seq\":2,\"readings\":[{reading}]}}"
        );
        assert_eq!(reason_of(nested.as_bytes()), "invalid_field");
        // A future schema sent as an array is still not a schema we can name.
        assert_eq!(reason_of(b"[2]"), "invalid_field");
        assert_eq!(reason_of(b"{\"schema\":2}"), "unsupported_schema");
    }

    #[test]
    fn extreme_power_limit_does_not_overflow() {
        let payload = with(|b| b.readings[0].energy_uj = u64::MAX);
        for max_power_w in [f64::MAX, f64::INFINITY, 1e35] {
            let limits = Limits {
                max_power_w,
                ..Limits::default()
            };
            let b = decode_telemetry(&topic(), &payload, NOW, &limits);
            // u64::MAX µJ over 1 s is below any of these limits.
            assert!(
                matches!(b, Err(Rejection::CumulativeInconsistent { .. })),
                "{b:?}"
            );
        }
    }

    #[test]
    fn reasons_are_listed() {
        for r in Rejection::ALL_REASONS {
            assert_eq!(Rejection::ALL_REASONS.iter().filter(|x| *x == r).count(), 1);
        }
        assert!(Rejection::ALL_REASONS.contains(&Rejection::Empty.reason()));
        let conflict = Rejection::ConflictingDuplicate {
            host: "h".into(),
            epoch: 1,
            seq: 2,
            stored: "aa".into(),
            received: "bb".into(),
        };
        let unknown = Rejection::UnknownKey {
            key: "00".into(),
            registered: 1,
        };
        for r in [
            Rejection::Unsigned,
            Rejection::BadSignature("x".into()),
            unknown,
            conflict,
        ] {
            assert!(Rejection::ALL_REASONS.contains(&r.reason()), "{r}");
        }
    }

    trait ReplaceStr {
        fn replace_str(self, from: &str, to: &str) -> Vec<u8>;
    }
    impl ReplaceStr for Vec<u8> {
        fn replace_str(self, from: &str, to: &str) -> Vec<u8> {
            let s = String::from_utf8(self).unwrap();
            assert!(s.contains(from), "{from} not in {s}");
            s.replacen(from, to, 1).into_bytes()
        }
    }
}
