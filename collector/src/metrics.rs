//! The collector's Prometheus metrics (OpenMetrics text on `/metrics`).
//!
//! Label cardinality: host x sensor x quality for energy (a few per host),
//! host for emissions, lag and presence, reason for rejections (a fixed
//! list), meter x period x quality for the site figures (a few per
//! configured `[site]` meter). No label carries a batch id, a time or free
//! text.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicU64;
use vigie_energy::{GramsPerKwh, Microjoules};
use vigie_protocol::{Quality, Rejection, TelemetryBatch};

type FloatCounter = Counter<f64, AtomicU64>;
type FloatGauge = Gauge<f64, AtomicU64>;

/// Labels of the energy counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EnergyLabels {
    /// Host.
    pub host: String,
    /// Sensor.
    pub sensor: String,
    /// `measured` or `estimated`.
    pub quality: String,
}

/// Labels of per-sensor gauges.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SensorLabels {
    /// Host.
    pub host: String,
    /// Sensor.
    pub sensor: String,
}

/// Labels of per-host series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HostLabels {
    /// Host.
    pub host: String,
}

/// Labels of per-host energy.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HostQualityLabels {
    /// Host.
    pub host: String,
    /// `measured` or `estimated`.
    pub quality: String,
}

/// Labels of sensor gauges.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GaugeLabels {
    /// Host.
    pub host: String,
    /// Sensor.
    pub sensor: String,
    /// What is measured, from the protocol's closed list (unit in the name).
    pub quantity: String,
}

/// Labels of the scheduler signal.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SignalLabels {
    /// Grid zone.
    pub zone: String,
    /// `average` or `marginal`.
    pub factor: String,
}

/// Labels of the rejection counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// Reason label from [`Rejection::reason`].
    pub reason: String,
}

/// Labels of the grid-intensity gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ZoneLabels {
    /// Grid zone.
    pub zone: String,
}

/// Labels of a site indicator.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SiteFigureLabels {
    /// `day` (since UTC midnight) or `ytd` (since 1 January, UTC).
    pub period: String,
    /// `measured` or `estimated` (an input estimated or gap-filled).
    pub quality: String,
}

/// Labels of a zone's partial PUE.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SiteZoneLabels {
    /// The zone, from `[[site.meters]] zone`.
    pub zone: String,
    /// `day` or `ytd`.
    pub period: String,
    /// `measured` or `estimated`.
    pub quality: String,
}

/// Labels of a site meter's series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SiteMeterLabels {
    /// Meter name, from `[[site.meters]]`.
    pub meter: String,
    /// Its role (`grid-import`, `it`, `heat-delivered`...).
    pub role: String,
    /// `day` or `ytd`.
    pub period: String,
}

/// Labels of a site meter's energy.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SiteEnergyLabels {
    /// Meter name.
    pub meter: String,
    /// Its role.
    pub role: String,
    /// `day` or `ytd`.
    pub period: String,
    /// `measured` or `estimated`.
    pub quality: String,
}

/// Labels of a site meter's power.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SiteMeterPowerLabels {
    /// Meter name.
    pub meter: String,
    /// Its role.
    pub role: String,
}

/// Labels of a site meter's energy counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MeterEnergyLabels {
    /// Meter name.
    pub meter: String,
    /// Its role.
    pub role: String,
    /// `measured` or `estimated`.
    pub quality: String,
}

/// Labels of a per-meter series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MeterLabels {
    /// Meter name.
    pub meter: String,
}

/// The site meters each sensor belongs to: host, then sensor, then
/// (meter, role).
type MeterIndex = std::collections::HashMap<
    String,
    std::collections::HashMap<String, Vec<(String, &'static str)>>,
>;

/// Labels of a legal target.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetLabels {
    /// Since when the limit applies (`YYYY-MM-DD`).
    pub applies_from: String,
}

/// The site's figures over one period, as the gauges show them. Anything
/// that cannot be computed is left out (its series disappears).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SiteGauges {
    /// `(indicator symbol, value, estimated)`: `PUE`, `ERF`, `REF`, `CER`,
    /// `WUE` (others are ignored).
    pub figures: Vec<(&'static str, f64, bool)>,
    /// `(meter, role, joules, estimated)` of every energy meter.
    pub energy: Vec<(String, &'static str, f64, bool)>,
    /// `(meter, role, share of the period covered by samples)`.
    pub coverage: Vec<(String, &'static str, f64)>,
    /// `(zone, partial PUE, estimated)` of every zone with both meters.
    pub ppue: Vec<(String, f64, bool)>,
}

/// The legal targets in force: `(limit, applies from)`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TargetGauges {
    /// Highest annual PUE.
    pub pue: Option<(f64, String)>,
    /// Lowest ERF (ratio, 0 to 1).
    pub erf: Option<(f64, String)>,
    /// Lowest renewable electricity share (ratio, 0 to 1).
    pub renewable_share: Option<(f64, String)>,
}

/// The site indicators exported, by symbol: metric name and help.
const SITE_FIGURES: [(&str, &str, &str); 5] = [
    (
        "PUE",
        "vigie_site_pue",
        "Power usage effectiveness of the site over the period (E_DC / E_IT)",
    ),
    (
        "ERF",
        "vigie_site_erf",
        "Energy reuse factor over the period (heat delivered / E_DC, 0 to 1)",
    ),
    (
        "REF",
        "vigie_site_ref",
        "Renewable energy factor over the period (renewable / E_DC, 0 to 1)",
    ),
    (
        "CER",
        "vigie_site_cer",
        "Cooling efficiency ratio over the period (heat removed / cooling electricity)",
    ),
    (
        "WUE",
        "vigie_site_wue_litres_per_kwh",
        "Water usage effectiveness over the period (water input / E_IT, litres per kWh)",
    ),
];

/// The span of readings a site meter's power is the mean over.
pub const POWER_WINDOW_MS: i64 = 300_000;

/// Readings of one sensor kept at most (a sender publishing tiny
/// intervals cannot grow it without bound).
const POWER_WINDOW_MAX: usize = 1024;

/// One sensor's readings of the last [`POWER_WINDOW_MS`] up to its latest
/// one, as (start, end, µJ).
#[derive(Debug, Default)]
struct PowerWindow {
    readings: std::collections::VecDeque<(i64, i64, u64)>,
    latest_end: i64,
}

impl PowerWindow {
    fn add(&mut self, start_ms: i64, end_ms: i64, uj: u64) {
        if end_ms <= start_ms {
            return;
        }
        self.latest_end = self.latest_end.max(end_ms);
        let horizon = self.latest_end - POWER_WINDOW_MS;
        if end_ms <= horizon {
            return;
        }
        // In end order (batches may arrive out of order).
        let at = self.readings.partition_point(|r| r.1 <= end_ms);
        self.readings.insert(at, (start_ms, end_ms, uj));
        while self
            .readings
            .front()
            .is_some_and(|r| r.1 <= horizon || self.readings.len() > POWER_WINDOW_MAX)
        {
            self.readings.pop_front();
        }
    }

    /// Energy over covered time, W.
    fn watts(&self) -> Option<f64> {
        let (uj, ms) = self.readings.iter().fold((0u128, 0i64), |(u, t), r| {
            (u + u128::from(r.2), t + (r.1 - r.0))
        });
        (ms > 0).then(|| uj as f64 / 1e3 / ms as f64)
    }
}

/// Every metric the collector exports.
pub struct Metrics {
    registry: Registry,
    energy: Family<EnergyLabels, FloatCounter>,
    power: Family<SensorLabels, FloatGauge>,
    emissions: Family<HostLabels, FloatCounter>,
    emissions_estimated: Family<HostLabels, FloatCounter>,
    /// Earliest reading start of the batches accepted since the emission
    /// counters last looked (`i64::MAX`: none): late energy for an hour
    /// they have already counted.
    emissions_dirty_from: std::sync::atomic::AtomicI64,
    host_energy: Family<HostQualityLabels, FloatCounter>,
    in_total: Family<SensorLabels, Gauge>,
    /// Per host, the sensors its inventory leaves out of totals.
    uncounted: std::sync::RwLock<HashMap<String, HashSet<String>>>,
    lag: Family<HostLabels, FloatGauge>,
    /// Each host's lag at its latest commit, in seconds: what the lag
    /// gauge shows while the writer keeps up.
    lag_at_commit: std::sync::Mutex<HashMap<String, f64>>,
    /// Handles on each accepted host's series (see `accepted_group`).
    series: std::sync::Mutex<HashMap<String, HostSeries>>,
    /// Receive time (Unix ms) of the oldest message not committed yet;
    /// 0 while the writer has nothing pending.
    pending_since_ms: std::sync::atomic::AtomicI64,
    last_batch: Family<HostLabels, FloatGauge>,
    online: Family<HostLabels, Gauge>,
    subscribed: Gauge,
    broker_disconnects: Counter,
    messages: Counter,
    readings: Counter,
    duplicates: Counter,
    rejected: Family<ReasonLabels, Counter>,
    commit_seconds: Histogram,
    spool_batches: Family<HostLabels, Gauge>,
    spool_age: Family<HostLabels, FloatGauge>,
    spool_merges: Family<HostLabels, Gauge>,
    spool_dropped: Family<HostLabels, FloatGauge>,
    counter_resets: Family<HostLabels, Gauge>,
    losses: LossGauges,
    agent_disconnects: Family<HostLabels, Gauge>,
    agent_publish_failures: Family<HostLabels, Gauge>,
    gauges: Family<GaugeLabels, FloatGauge>,
    grid: Family<ZoneLabels, FloatGauge>,
    signal: Family<SignalLabels, FloatGauge>,
    signal_best: Family<ZoneLabels, FloatGauge>,
    signal_best_start: Family<ZoneLabels, FloatGauge>,
    gauge_times: std::sync::Mutex<std::collections::HashMap<GaugeLabels, i64>>,
    site_figures: Vec<(&'static str, Family<SiteFigureLabels, FloatGauge>)>,
    site_energy: Family<SiteEnergyLabels, FloatGauge>,
    site_coverage: Family<SiteMeterLabels, FloatGauge>,
    site_ppue: Family<SiteZoneLabels, FloatGauge>,
    site_power: Family<SiteMeterPowerLabels, FloatGauge>,
    meter_energy: Family<MeterEnergyLabels, FloatCounter>,
    site_emissions: Family<MeterLabels, FloatCounter>,
    /// Earliest reading start of a meter sensor accepted since the site
    /// emission counter last looked (`i64::MAX`: none).
    site_emissions_dirty_from: std::sync::atomic::AtomicI64,
    /// The recent readings of every meter sensor, for the meters' power.
    meter_readings: std::sync::Mutex<HashMap<(String, String), PowerWindow>>,
    meter_index: std::sync::RwLock<MeterIndex>,
    site_power_shown: std::sync::Mutex<Vec<SiteMeterPowerLabels>>,
    /// The series last set per period, so those no longer computed go.
    site_shown: std::sync::Mutex<std::collections::HashMap<String, SiteGauges>>,
    target_pue: Family<TargetLabels, FloatGauge>,
    target_erf: Family<TargetLabels, FloatGauge>,
    target_renewable: Family<TargetLabels, FloatGauge>,
    targets_shown: std::sync::Mutex<TargetGauges>,
    influx: crate::influx::SinkMetrics,
}

fn quality_label(q: Quality) -> &'static str {
    match q {
        Quality::Measured => "measured",
        Quality::Estimated => "estimated",
    }
}

impl Metrics {
    /// Registers every metric; `zone` and `intensity` describe the static grid factor.
    pub fn new(zone: &str, intensity: GramsPerKwh) -> Self {
        let mut registry = Registry::default();
        let energy = Family::<EnergyLabels, FloatCounter>::default();
        registry.register(
            "vigie_energy_joules",
            "Energy per host and sensor, from interval readings (joules)",
            energy.clone(),
        );
        let power = Family::<SensorLabels, FloatGauge>::default();
        registry.register(
            "vigie_power_watts",
            "Average power over the latest reading of each sensor (watts)",
            power.clone(),
        );
        let emissions = Family::<HostLabels, FloatCounter>::default();
        registry.register(
            "vigie_emissions_location_grams",
            "Location-based emissions per host over closed hours, as /api/v1/emissions: each hour's energy of the counted sensors times that hour's average grid factor of the inventory's basis (stored series, else the static factor) (grams CO2e)",
            emissions.clone(),
        );
        let emissions_estimated = Family::<HostLabels, FloatCounter>::default();
        registry.register(
            "vigie_emissions_location_estimated_grams",
            "Of vigie_emissions_location_grams, the grams of host-hours flagged estimated: estimated energy or an estimated factor (static fallback, forecast, partly covered hour) (grams CO2e)",
            emissions_estimated.clone(),
        );
        let host_energy = Family::<HostQualityLabels, FloatCounter>::default();
        registry.register(
            "vigie_host_energy_joules",
            "Energy per host with each physical energy once: the sensors its inventory marks as a component or an alternative of another are left out (joules)",
            host_energy.clone(),
        );
        let in_total = Family::<SensorLabels, Gauge>::default();
        registry.register(
            "vigie_sensor_counted",
            "1 if the sensor's energy adds into its host's totals, 0 if its inventory marks it as a component or an alternative of another sensor (join on host, sensor to sum a device once)",
            in_total.clone(),
        );
        let grid = Family::<ZoneLabels, FloatGauge>::default();
        registry.register(
            "vigie_grid_intensity_grams_per_kwh",
            "Grid carbon intensity in use (gCO2e/kWh)",
            grid.clone(),
        );
        grid.get_or_create(&ZoneLabels {
            zone: zone.to_owned(),
        })
        .set(intensity.0);
        let lag = Family::<HostLabels, FloatGauge>::default();
        registry.register(
            "vigie_ingest_lag_seconds",
            "Seconds between the end of a host's latest batch and its commit; while a received message waits uncommitted, at least its wait (it grows during a stall)",
            lag.clone(),
        );
        let last_batch = Family::<HostLabels, FloatGauge>::default();
        registry.register(
            "vigie_host_last_batch_timestamp_seconds",
            "When the collector last committed a new batch from the host (Unix seconds, collector clock): the host's liveness, from its data",
            last_batch.clone(),
        );
        let online = Family::<HostLabels, Gauge>::default();
        registry.register(
            "vigie_host_online",
            "1 if the host's agent is online (retained status)",
            online.clone(),
        );
        let subscribed = Gauge::default();
        registry.register(
            "vigie_broker_subscribed",
            "1 while the collector is connected to the broker and every subscription is acknowledged",
            subscribed.clone(),
        );
        let broker_disconnects = Counter::default();
        registry.register(
            "vigie_broker_disconnects",
            "Times the collector lost its broker connection (or failed its first connection): a broker refusing a packet, a network cut, a restart",
            broker_disconnects.clone(),
        );
        let messages = Counter::default();
        registry.register(
            "vigie_ingest_messages",
            "Messages received",
            messages.clone(),
        );
        let readings = Counter::default();
        registry.register(
            "vigie_ingest_readings",
            "Readings accepted into the ledger",
            readings.clone(),
        );
        let duplicates = Counter::default();
        registry.register(
            "vigie_ingest_duplicates",
            "Batches already in the ledger, ignored",
            duplicates.clone(),
        );
        let rejected = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "vigie_ingest_rejected",
            "Messages rejected, by reason",
            rejected.clone(),
        );
        for reason in Rejection::ALL_REASONS {
            let _ = rejected.get_or_create(&ReasonLabels {
                reason: (*reason).to_owned(),
            });
        }
        let commit_seconds = Histogram::new(exponential_buckets(0.0005, 2.0, 14));
        registry.register(
            "vigie_ledger_commit_seconds",
            "Time to apply and commit one group of messages",
            commit_seconds.clone(),
        );
        let spool_batches = Family::<HostLabels, Gauge>::default();
        registry.register(
            "vigie_agent_spool_batches",
            "Batches in the agent's spool awaiting the broker's acknowledgement, as last reported",
            spool_batches.clone(),
        );
        let spool_age = Family::<HostLabels, FloatGauge>::default();
        registry.register(
            "vigie_agent_spool_oldest_age_seconds",
            "Age of the oldest spooled reading when the agent last reported (0 when empty)",
            spool_age.clone(),
        );
        let spool_merges = Family::<HostLabels, Gauge>::default();
        registry.register(
            "vigie_agent_spool_merges",
            "Spool merges since the agent started (resolution lost, energy exact)",
            spool_merges.clone(),
        );
        let spool_dropped = Family::<HostLabels, FloatGauge>::default();
        registry.register(
            "vigie_agent_spool_dropped_joules",
            "Energy the agent dropped from its spool for age since it started (joules, lost)",
            spool_dropped.clone(),
        );
        let counter_resets = Family::<HostLabels, Gauge>::default();
        registry.register(
            "vigie_agent_energy_resets",
            "Energy counters the agent found reset since it started (RAPL, GPU or device registers; each a new baseline, the energy just before it unknown)",
            counter_resets.clone(),
        );
        let losses = LossGauges::register(&mut registry);
        let agent_disconnects = Family::<HostLabels, Gauge>::default();
        registry.register(
            "vigie_agent_broker_disconnects",
            "Times the agent lost its broker connection since it started, as last reported (a broker refusing an oversized packet disconnects the sender)",
            agent_disconnects.clone(),
        );
        let agent_publish_failures = Family::<HostLabels, Gauge>::default();
        registry.register(
            "vigie_agent_publish_failures",
            "Batch publishes the broker did not acknowledge since the agent started, as last reported (each batch stays spooled and is sent again)",
            agent_publish_failures.clone(),
        );
        let gauges = Family::<GaugeLabels, FloatGauge>::default();
        registry.register(
            "vigie_sensor_value",
            "Latest instantaneous value of a sensor (temperature, utilisation, limit, device power...); unit in the quantity label",
            gauges.clone(),
        );
        let signal = Family::<SignalLabels, FloatGauge>::default();
        registry.register(
            "vigie_signal_intensity_grams_per_kwh",
            "Grid intensity now for schedulers (marginal when stored, else average), gCO2e/kWh",
            signal.clone(),
        );
        let signal_best = Family::<ZoneLabels, FloatGauge>::default();
        registry.register(
            "vigie_signal_forecast_min_grams_per_kwh",
            "Lowest forecast intensity over the next 24 hours, gCO2e/kWh",
            signal_best.clone(),
        );
        let signal_best_start = Family::<ZoneLabels, FloatGauge>::default();
        registry.register(
            "vigie_signal_forecast_min_start_timestamp_seconds",
            "Start of the lowest-intensity forecast point in the next 24 hours (Unix seconds)",
            signal_best_start.clone(),
        );
        let site_figures = SITE_FIGURES
            .iter()
            .map(|(symbol, name, help)| {
                let f = Family::<SiteFigureLabels, FloatGauge>::default();
                registry.register(*name, *help, f.clone());
                (*symbol, f)
            })
            .collect();
        let site_energy = Family::<SiteEnergyLabels, FloatGauge>::default();
        registry.register(
            "vigie_site_energy_joules",
            "Energy of each site meter over the period (joules; thermal for heat meters)",
            site_energy.clone(),
        );
        let site_coverage = Family::<SiteMeterLabels, FloatGauge>::default();
        registry.register(
            "vigie_site_coverage_ratio",
            "Share of the period for which a site meter has samples (0 to 1)",
            site_coverage.clone(),
        );
        let site_ppue = Family::<SiteZoneLabels, FloatGauge>::default();
        registry.register(
            "vigie_site_ppue",
            "Partial PUE of a zone over the period: the zone's energy over its IT energy (ISO/IEC 30134-2)",
            site_ppue.clone(),
        );
        let site_power = Family::<SiteMeterPowerLabels, FloatGauge>::default();
        registry.register(
            "vigie_site_power_watts",
            "Power of each site meter read by agents: the sum over its sensors of each sensor's mean power over its readings of the last 5 minutes up to its latest reading (their energy over the time they cover; not one reading, whose energy a Wh register rounds) (watts)",
            site_power.clone(),
        );
        let meter_energy = Family::<MeterEnergyLabels, FloatCounter>::default();
        registry.register(
            "vigie_meter_energy_joules",
            "Energy of each site meter read by agents: the sum of its sensors' readings (joules); the site's own totals without the overlap of nested sensors",
            meter_energy.clone(),
        );
        let site_emissions = Family::<MeterLabels, FloatCounter>::default();
        registry.register(
            "vigie_site_emissions_location_grams",
            "Location-based emissions of the site's grid-import meter read by agents over closed hours, as /api/v1/scope2's location_based_kg: each hour's import times that hour's average grid factor of the inventory's basis (stored series, else the static factor) (grams CO2e)",
            site_emissions.clone(),
        );
        let target_pue = Family::<TargetLabels, FloatGauge>::default();
        registry.register(
            "vigie_target_pue",
            "EnEfG: highest annual PUE allowed for the site now",
            target_pue.clone(),
        );
        let target_erf = Family::<TargetLabels, FloatGauge>::default();
        registry.register(
            "vigie_target_erf",
            "EnEfG: lowest energy reuse factor required of the site now (0 to 1)",
            target_erf.clone(),
        );
        let target_renewable = Family::<TargetLabels, FloatGauge>::default();
        registry.register(
            "vigie_target_renewable_share",
            "EnEfG: lowest renewable share of the electricity consumed required now (0 to 1)",
            target_renewable.clone(),
        );
        let influx = crate::influx::SinkMetrics::register(&mut registry);
        Metrics {
            influx,
            registry,
            site_figures,
            site_energy,
            site_coverage,
            site_ppue,
            site_power,
            meter_energy,
            site_emissions,
            site_emissions_dirty_from: std::sync::atomic::AtomicI64::new(i64::MAX),
            meter_readings: std::sync::Mutex::new(HashMap::new()),
            meter_index: std::sync::RwLock::default(),
            site_power_shown: std::sync::Mutex::new(Vec::new()),
            site_shown: std::sync::Mutex::new(std::collections::HashMap::new()),
            target_pue,
            target_erf,
            target_renewable,
            targets_shown: std::sync::Mutex::new(TargetGauges::default()),
            gauges,
            grid: grid.clone(),
            signal,
            signal_best,
            signal_best_start,
            gauge_times: std::sync::Mutex::new(std::collections::HashMap::new()),
            spool_batches,
            spool_age,
            spool_merges,
            spool_dropped,
            counter_resets,
            losses,
            agent_disconnects,
            agent_publish_failures,
            energy,
            power,
            emissions,
            emissions_estimated,
            emissions_dirty_from: std::sync::atomic::AtomicI64::new(i64::MAX),
            host_energy,
            in_total,
            uncounted: std::sync::RwLock::new(HashMap::new()),
            lag,
            lag_at_commit: std::sync::Mutex::new(HashMap::new()),
            series: std::sync::Mutex::new(HashMap::new()),
            pending_since_ms: std::sync::atomic::AtomicI64::new(0),
            last_batch,
            online,
            subscribed,
            broker_disconnects,
            messages,
            readings,
            duplicates,
            rejected,
            commit_seconds,
        }
    }

    /// Starts the energy and emission counters at the ledger's totals (µJ,
    /// as wide as the ledger's sums), so a collector restart does not look
    /// like a counter reset.
    pub fn seed(&self, host: &str, sensor: &str, measured_uj: u128, estimated_uj: u128) {
        let counted = self.counted(host, sensor);
        self.in_total
            .get_or_create(&SensorLabels {
                host: host.to_owned(),
                sensor: sensor.to_owned(),
            })
            .set(i64::from(counted));
        for (q, e) in [
            (Quality::Measured, measured_uj),
            (Quality::Estimated, estimated_uj),
        ] {
            if e > 0 {
                let joules = e as f64 / 1e6;
                self.energy
                    .get_or_create(&EnergyLabels {
                        host: host.to_owned(),
                        sensor: sensor.to_owned(),
                        quality: quality_label(q).to_owned(),
                    })
                    .inc_by(joules);
                if !counted {
                    continue;
                }
                self.host_energy
                    .get_or_create(&HostQualityLabels {
                        host: host.to_owned(),
                        quality: quality_label(q).to_owned(),
                    })
                    .inc_by(joules);
            }
        }
    }

    /// Sets which of `host`'s sensors its totals leave out, from its
    /// inventory. Set before [`Metrics::seed`] at start-up; an inventory
    /// that changes later applies to the energy that follows.
    pub fn set_uncounted(&self, host: &str, sensors: HashSet<String>) {
        let mut map = self.uncounted.write().unwrap_or_else(|p| p.into_inner());
        for (sensor, counted) in map
            .get(host)
            .into_iter()
            .flatten()
            .map(|s| (s, true))
            .chain(sensors.iter().map(|s| (s, false)))
        {
            self.in_total
                .get_or_create(&SensorLabels {
                    host: host.to_owned(),
                    sensor: sensor.clone(),
                })
                .set(i64::from(counted));
        }
        if sensors.is_empty() {
            map.remove(host);
        } else {
            map.insert(host.to_owned(), sensors);
        }
    }

    /// Whether `sensor` of `host` adds into the host's totals.
    fn counted(&self, host: &str, sensor: &str) -> bool {
        let map = self.uncounted.read().unwrap_or_else(|p| p.into_inner());
        map.get(host).is_none_or(|s| !s.contains(sensor))
    }

    /// Declares which sensors make up each site meter read by agents, as
    /// (host, sensor, meter, role). Their readings then also count into
    /// `vigie_meter_energy_joules_total`. Those counters start at zero
    /// with the process (not at the ledger's totals, which
    /// [`Metrics::seed`] gives the per-sensor counters): a meter's sensors
    /// may change with the configuration, and a counter seeded from a
    /// different set would jump; Prometheus reads the restart as a reset.
    pub fn set_meter_sensors(&self, sensors: Vec<(String, String, String, &'static str)>) {
        let mut index = MeterIndex::new();
        for (host, sensor, meter, role) in sensors {
            index
                .entry(host)
                .or_default()
                .entry(sensor)
                .or_default()
                .push((meter, role));
        }
        *self.meter_index.write().unwrap_or_else(|p| p.into_inner()) = index;
    }

    /// Adds a group's energy of one meter sensor and quality to its
    /// meters' counters (the grid import's grams follow as hours close).
    fn add_meter_energy(&self, meters: &[(String, &'static str)], q: Quality, e: Microjoules) {
        for (meter, role) in meters {
            self.meter_energy
                .get_or_create(&MeterEnergyLabels {
                    meter: meter.clone(),
                    role: (*role).to_owned(),
                    quality: quality_label(q).to_owned(),
                })
                .inc_by(e.as_joules());
            if *role == "grid-import" {
                // The grams follow as the hours close
                // (`site_kpi::SiteEmissionCounter`); the series shows
                // from the meter's first energy.
                drop(self.site_emissions.get_or_create(&MeterLabels {
                    meter: meter.clone(),
                }));
            }
        }
    }

    /// Notes one reading of a meter sensor: the hour from which the site
    /// emission counter must recount (grid import), and the reading in the
    /// sensor's power window.
    fn note_meter_reading(
        &self,
        meters: &[(String, &'static str)],
        host: &str,
        r: &vigie_protocol::Reading,
    ) {
        if meters.iter().any(|(_, role)| *role == "grid-import") {
            self.site_emissions_dirty_from
                .fetch_min(r.start_ms, std::sync::atomic::Ordering::AcqRel);
        }
        self.meter_readings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((host.to_owned(), r.sensor.clone()))
            .or_default()
            .add(r.start_ms, r.end_ms, r.energy_uj);
    }

    /// A meter sensor's mean power over its readings of the last
    /// [`POWER_WINDOW_MS`] up to its latest one (energy over the time they
    /// cover), if it has any: what `vigie_site_power_watts` sums.
    pub fn meter_sensor_power(&self, host: &str, sensor: &str) -> Option<f64> {
        self.meter_readings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(host.to_owned(), sensor.to_owned()))
            .and_then(PowerWindow::watts)
    }

    /// The earliest start of a meter sensor's reading accepted since the
    /// last call (`i64::MAX` if none), and a fresh start; taken before the
    /// ledger is read.
    pub fn take_site_emissions_dirty(&self) -> i64 {
        self.site_emissions_dirty_from
            .swap(i64::MAX, std::sync::atomic::Ordering::AcqRel)
    }

    /// Marks `from_ms` again (a refresh that took the mark failed).
    pub fn remark_site_emissions_dirty(&self, from_ms: i64) {
        self.site_emissions_dirty_from
            .fetch_min(from_ms, std::sync::atomic::Ordering::AcqRel);
    }

    /// Brings the grid-import `meter`'s emission counter up to `total_g`,
    /// the location-based grams of its closed hours; never down.
    pub fn set_site_emissions(&self, meter: &str, total_g: f64) {
        let c = self.site_emissions.get_or_create(&MeterLabels {
            meter: meter.to_owned(),
        });
        let d = total_g - c.get();
        if d > 0.0 {
            c.inc_by(d);
        }
    }

    /// Counts a received message.
    pub fn message(&self) {
        self.messages.inc();
    }

    /// Counts a duplicate.
    pub fn duplicate(&self) {
        self.duplicates.inc();
    }

    /// Counts a rejection.
    pub fn rejected(&self, reason: &str) {
        self.rejected
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Records when a new batch of `host` was last committed (Unix ms):
    /// from each commit, and from the ledger at start-up.
    pub fn last_batch(&self, host: &str, at_ms: i64) {
        self.last_batch
            .get_or_create(&HostLabels {
                host: host.to_owned(),
            })
            .set(at_ms as f64 / 1e3);
    }

    /// Records that the oldest received message not committed yet arrived
    /// at `since_ms` (Unix ms), or, with `None`, that nothing is pending:
    /// the lag gauges grow with that wait at every scrape, so a stalled
    /// writer shows.
    pub fn set_pending_since(&self, since_ms: Option<i64>) {
        self.pending_since_ms.store(
            since_ms.unwrap_or(0).max(0),
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// Records a host's presence.
    pub fn online(&self, host: &str, online: bool) {
        self.online
            .get_or_create(&HostLabels {
                host: host.to_owned(),
            })
            .set(i64::from(online));
    }

    /// Records whether the broker has acknowledged every subscription on
    /// the current connection (what `/readyz` answers).
    pub fn set_subscribed(&self, subscribed: bool) {
        self.subscribed.set(i64::from(subscribed));
    }

    /// Counts a lost broker connection.
    pub fn broker_disconnect(&self) {
        self.broker_disconnects.inc();
    }

    /// Whether the broker has acknowledged every subscription on the
    /// current connection.
    pub fn subscribed(&self) -> bool {
        self.subscribed.get() == 1
    }

    /// Records an agent's spool figures from its status message.
    pub fn agent_spool(&self, host: &str, spool: &vigie_protocol::SpoolHealth, now_ms: i64) {
        let labels = HostLabels {
            host: host.to_owned(),
        };
        let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.spool_batches
            .get_or_create(&labels)
            .set(clamp(spool.batches));
        let age_ms = spool.oldest_ms.map_or(0, |t| (now_ms - t).max(0));
        self.spool_age
            .get_or_create(&labels)
            .set(age_ms as f64 / 1e3);
        self.spool_merges
            .get_or_create(&labels)
            .set(clamp(spool.merged_total));
        self.spool_dropped
            .get_or_create(&labels)
            .set(Microjoules(spool.dropped_uj_total).as_joules());
        self.counter_resets
            .get_or_create(&labels)
            .set(clamp(spool.counter_resets_total));
        self.losses.agent(&labels, spool);
        self.agent_disconnects
            .get_or_create(&labels)
            .set(clamp(spool.broker_disconnects_total));
        self.agent_publish_failures
            .get_or_create(&labels)
            .set(clamp(spool.publish_failures_total));
    }

    /// Sets a host's known losses as the ledger holds them.
    pub fn host_losses(&self, host: &str, l: &crate::store::losses::Losses) {
        let labels = HostLabels {
            host: host.to_owned(),
        };
        self.losses.ledger(&labels, l);
    }

    /// Sets the grid and scheduler gauges of `zone` from stored points:
    /// the average factor in force now (inventory), the signal now, and
    /// the forecast minimum over the next 24 hours.
    pub fn set_signals(
        &self,
        zone: &str,
        average_now: Option<f64>,
        signal_now: Option<(f64, &str)>,
        best: Option<(i64, f64)>,
    ) {
        let z = ZoneLabels {
            zone: zone.to_owned(),
        };
        if let Some(g) = average_now {
            self.grid.get_or_create(&z).set(g);
        }
        if let Some((g, factor)) = signal_now {
            self.signal
                .get_or_create(&SignalLabels {
                    zone: zone.to_owned(),
                    factor: factor.to_owned(),
                })
                .set(g);
        }
        if let Some((start_ms, g)) = best {
            self.signal_best.get_or_create(&z).set(g);
            self.signal_best_start
                .get_or_create(&z)
                .set(start_ms as f64 / 1000.0);
        }
    }

    /// Shows the site's figures over `period` (`day` or `ytd`), removing
    /// the series of that period that are no longer computed.
    pub fn set_site(&self, period: &str, g: SiteGauges) {
        let quality = |estimated: bool| if estimated { "estimated" } else { "measured" }.to_owned();
        let figure = |(symbol, _, estimated): &(&str, f64, bool)| {
            let family = self
                .site_figures
                .iter()
                .find(|(s, _)| s == symbol)
                .map(|(_, f)| f);
            let labels = SiteFigureLabels {
                period: period.to_owned(),
                quality: quality(*estimated),
            };
            family.map(|f| (f, labels))
        };
        let energy = |(meter, role, _, estimated): &(String, &str, f64, bool)| SiteEnergyLabels {
            meter: meter.clone(),
            role: (*role).to_owned(),
            period: period.to_owned(),
            quality: quality(*estimated),
        };
        let coverage = |(meter, role, _): &(String, &str, f64)| SiteMeterLabels {
            meter: meter.clone(),
            role: (*role).to_owned(),
            period: period.to_owned(),
        };
        let zone = |(zone, _, estimated): &(String, f64, bool)| SiteZoneLabels {
            zone: zone.clone(),
            period: period.to_owned(),
            quality: quality(*estimated),
        };
        let mut shown = self.site_shown.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = shown.get(period) {
            let key = |f: &(&str, f64, bool)| (f.0.to_owned(), f.2);
            let new_figures: Vec<_> = g.figures.iter().map(key).collect();
            for f in &old.figures {
                if !new_figures.contains(&key(f))
                    && let Some((family, labels)) = figure(f)
                {
                    family.remove(&labels);
                }
            }
            let new_energy: Vec<_> = g.energy.iter().map(energy).collect();
            for labels in old.energy.iter().map(energy) {
                if !new_energy.contains(&labels) {
                    self.site_energy.remove(&labels);
                }
            }
            let new_coverage: Vec<_> = g.coverage.iter().map(coverage).collect();
            for labels in old.coverage.iter().map(coverage) {
                if !new_coverage.contains(&labels) {
                    self.site_coverage.remove(&labels);
                }
            }
            let new_zones: Vec<_> = g.ppue.iter().map(zone).collect();
            for labels in old.ppue.iter().map(zone) {
                if !new_zones.contains(&labels) {
                    self.site_ppue.remove(&labels);
                }
            }
        }
        for f in &g.figures {
            if let Some((family, labels)) = figure(f) {
                family.get_or_create(&labels).set(f.1);
            }
        }
        for e in &g.energy {
            self.site_energy.get_or_create(&energy(e)).set(e.2);
        }
        for c in &g.coverage {
            self.site_coverage.get_or_create(&coverage(c)).set(c.2);
        }
        for z in &g.ppue {
            self.site_ppue.get_or_create(&zone(z)).set(z.1);
        }
        shown.insert(period.to_owned(), g);
    }

    /// The site's figures over `period` as last shown, if any.
    pub fn site_gauges(&self, period: &str) -> Option<SiteGauges> {
        let shown = self.site_shown.lock().unwrap_or_else(|p| p.into_inner());
        shown.get(period).cloned()
    }

    /// The InfluxDB sink's metrics (registered, at 0, without `[influxdb]`).
    pub fn influx(&self) -> &crate::influx::SinkMetrics {
        &self.influx
    }

    /// The latest average power of a sensor, if it has reported one.
    pub fn sensor_power(&self, host: &str, sensor: &str) -> Option<f64> {
        self.power
            .get(&SensorLabels {
                host: host.to_owned(),
                sensor: sensor.to_owned(),
            })
            .map(|g| g.get())
    }

    /// Shows the power of the site meters, `(meter, role, watts)`; meters
    /// left out lose their series.
    pub fn set_site_power(&self, meters: &[(String, &str, f64)]) {
        let new: Vec<SiteMeterPowerLabels> = meters
            .iter()
            .map(|(meter, role, _)| SiteMeterPowerLabels {
                meter: meter.clone(),
                role: (*role).to_owned(),
            })
            .collect();
        let mut shown = self
            .site_power_shown
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for old in shown.iter().filter(|o| !new.contains(o)) {
            self.site_power.remove(old);
        }
        for (labels, (_, _, w)) in new.iter().zip(meters) {
            self.site_power.get_or_create(labels).set(*w);
        }
        *shown = new;
    }

    /// Shows the legal targets in force; a target not in force (or not
    /// known without a commissioning date) has no series.
    pub fn set_targets(&self, t: TargetGauges) {
        let mut shown = self.targets_shown.lock().unwrap_or_else(|p| p.into_inner());
        for (family, old, new) in [
            (&self.target_pue, &shown.pue, &t.pue),
            (&self.target_erf, &shown.erf, &t.erf),
            (
                &self.target_renewable,
                &shown.renewable_share,
                &t.renewable_share,
            ),
        ] {
            let labels = |x: &(f64, String)| TargetLabels {
                applies_from: x.1.clone(),
            };
            if let Some(o) = old
                && new.as_ref().is_none_or(|n| n.1 != o.1)
            {
                family.remove(&labels(o));
            }
            if let Some(n) = new {
                family.get_or_create(&labels(n)).set(n.0);
            }
        }
        *shown = t;
    }

    /// Records the commit time of a group.
    pub fn commit(&self, seconds: f64) {
        self.commit_seconds.observe(seconds);
    }

    /// Accounts a batch committed at `now_ms`: energy, emissions, latest
    /// power, lag, and the host's last batch time. The same as
    /// [`Metrics::accepted_group`] of this one batch.
    pub fn accepted(&self, batch: &TelemetryBatch, now_ms: i64) {
        self.accepted_group([batch], now_ms);
    }

    /// Accounts the batches of one group committed at `now_ms`, in their
    /// order: energy, emissions, latest power, lag, and each host's last
    /// batch time. The readings are first summed per (host, sensor,
    /// quality) in exact microjoules, on borrowed names; each series is
    /// then updated once per group through a handle kept per (host,
    /// sensor), so no label is built or looked up per reading. The handles
    /// are as many as the series themselves: bounded by the ingest limits
    /// (`ingest.max_hosts` x `ingest.max_sensors_per_host`).
    pub fn accepted_group<'a>(
        &self,
        batches: impl IntoIterator<Item = &'a TelemetryBatch>,
        now_ms: i64,
    ) {
        let mut hosts: Vec<HostSums<'a>> = Vec::new();
        let mut host_at: HashMap<&'a str, usize> = HashMap::new();
        let mut readings = 0u64;
        let mut first_start = i64::MAX;
        let index = self.meter_index.read().unwrap_or_else(|p| p.into_inner());
        for batch in batches {
            let i = *host_at.entry(batch.host.as_str()).or_insert_with(|| {
                hosts.push(HostSums::new(&batch.host));
                hosts.len() - 1
            });
            let h = &mut hosts[i];
            readings += batch.readings.len() as u64;
            let mut latest_end = i64::MIN;
            for r in &batch.readings {
                let s = h.sensor(&r.sensor);
                let e = Microjoules(r.energy_uj);
                let q = usize::from(r.quality == Quality::Estimated);
                s.uj[q] = s.uj[q].saturating_add(u128::from(r.energy_uj));
                s.seen[q] = true;
                let power = r
                    .power_w
                    .or_else(|| vigie_energy::average_power(e, r.end_ms - r.start_ms).map(|w| w.0));
                if power.is_some() {
                    s.power = power;
                }
                latest_end = latest_end.max(r.end_ms);
                first_start = first_start.min(r.start_ms);
                if let Some(meters) = index
                    .get(batch.host.as_str())
                    .and_then(|m| m.get(&r.sensor))
                {
                    self.note_meter_reading(meters, &batch.host, r);
                }
            }
            h.gauges.extend(&batch.gauges);
            // The lag is that of the host's last batch with readings.
            if !batch.readings.is_empty() {
                h.latest_end = Some(latest_end);
            }
        }
        if hosts.is_empty() {
            return;
        }
        let uncounted = self.uncounted.read().unwrap_or_else(|p| p.into_inner());
        let mut series = self.series.lock().unwrap_or_else(|p| p.into_inner());
        for h in &hosts {
            let host_meters = index.get(h.host);
            let uncounted = uncounted.get(h.host);
            let hs = match series.get_mut(h.host) {
                Some(hs) => hs,
                None => series
                    .entry(h.host.to_owned())
                    .or_insert_with(|| HostSeries::new(self, h.host)),
            };
            let mut host_uj = [0u128; 2];
            let mut host_seen = [false; 2];
            for s in &h.sensors {
                let ss = match hs.sensors.get_mut(s.sensor) {
                    Some(ss) => ss,
                    None => hs
                        .sensors
                        .entry(s.sensor.to_owned())
                        .or_insert_with(|| SensorSeries::new(self, h.host, s.sensor)),
                };
                let counted = uncounted.is_none_or(|u| !u.contains(s.sensor));
                ss.in_total.set(i64::from(counted));
                for (q, quality) in [Quality::Measured, Quality::Estimated]
                    .into_iter()
                    .enumerate()
                {
                    if !s.seen[q] {
                        continue;
                    }
                    let joules = s.uj[q] as f64 / 1e6;
                    if let Some(meters) = host_meters.and_then(|m| m.get(s.sensor)) {
                        let e = Microjoules(u64::try_from(s.uj[q]).unwrap_or(u64::MAX));
                        self.add_meter_energy(meters, quality, e);
                    }
                    ss.energy[q]
                        .get_or_insert_with(|| {
                            self.energy
                                .get_or_create(&EnergyLabels {
                                    host: h.host.to_owned(),
                                    sensor: s.sensor.to_owned(),
                                    quality: quality_label(quality).to_owned(),
                                })
                                .clone()
                        })
                        .inc_by(joules);
                    if counted {
                        host_uj[q] = host_uj[q].saturating_add(s.uj[q]);
                        host_seen[q] = true;
                    }
                }
                if let Some(p) = s.power {
                    ss.power
                        .get_or_insert_with(|| {
                            self.power
                                .get_or_create(&SensorLabels {
                                    host: h.host.to_owned(),
                                    sensor: s.sensor.to_owned(),
                                })
                                .clone()
                        })
                        .set(p);
                }
            }
            for (q, quality) in [Quality::Measured, Quality::Estimated]
                .into_iter()
                .enumerate()
            {
                if host_seen[q] {
                    hs.host_energy[q]
                        .get_or_insert_with(|| {
                            self.host_energy
                                .get_or_create(&HostQualityLabels {
                                    host: h.host.to_owned(),
                                    quality: quality_label(quality).to_owned(),
                                })
                                .clone()
                        })
                        .inc_by(host_uj[q] as f64 / 1e6);
                }
            }
            for g in &h.gauges {
                // Latest by time: batches may arrive out of order.
                let labels = GaugeLabels {
                    host: h.host.to_owned(),
                    sensor: g.sensor.clone(),
                    quantity: g.quantity.as_str().to_owned(),
                };
                let mut seen = self.gauge_times.lock().unwrap_or_else(|p| p.into_inner());
                let t = seen.entry(labels.clone()).or_insert(i64::MIN);
                if g.at_ms >= *t {
                    *t = g.at_ms;
                    self.gauges.get_or_create(&labels).set(g.value);
                }
            }
            hs.last_batch.set(now_ms as f64 / 1e3);
            let Some(latest_end) = h.latest_end else {
                continue;
            };
            // The grams follow as the hours close (`set_host_emissions`);
            // the series shows from the host's first counted energy.
            if !hs.emissions_shown && host_seen.iter().any(|s| *s) {
                drop(self.emissions.get_or_create(&HostLabels {
                    host: h.host.to_owned(),
                }));
                hs.emissions_shown = true;
            }
            let lag = (now_ms - latest_end) as f64 / 1000.0;
            let mut at_commit = self.lag_at_commit.lock().unwrap_or_else(|p| p.into_inner());
            match at_commit.get_mut(h.host) {
                Some(l) => *l = lag,
                None => {
                    at_commit.insert(h.host.to_owned(), lag);
                }
            }
            hs.lag
                .get_or_insert_with(|| {
                    self.lag
                        .get_or_create(&HostLabels {
                            host: h.host.to_owned(),
                        })
                        .clone()
                })
                .set(lag);
        }
        self.readings.inc_by(readings);
        if first_start != i64::MAX {
            self.emissions_dirty_from
                .fetch_min(first_start, std::sync::atomic::Ordering::AcqRel);
        }
    }

    /// How long the oldest received message has waited uncommitted at
    /// `now_ms` (0 when none).
    fn stall_seconds(&self, now_ms: i64) -> f64 {
        let since = self
            .pending_since_ms
            .load(std::sync::atomic::Ordering::Relaxed);
        if since == 0 {
            0.0
        } else {
            (now_ms - since).max(0) as f64 / 1000.0
        }
    }

    /// The earliest reading start accepted since the last call (`i64::MAX`
    /// if none), and a fresh start: the emission counters' sign of late
    /// energy. Taken before the ledger is read, so that a batch committed
    /// after the read marks the next call.
    pub fn take_emissions_dirty(&self) -> i64 {
        self.emissions_dirty_from
            .swap(i64::MAX, std::sync::atomic::Ordering::AcqRel)
    }

    /// Brings `host`'s emission counters up to the grams of its closed
    /// hours (`total_g`, of which `estimated_g` estimated), as computed
    /// from the ledger by `carbon::EmissionCounters`. A counter never goes
    /// down: a smaller figure (a factor revised downwards) leaves it as is.
    pub fn set_host_emissions(&self, host: &str, total_g: f64, estimated_g: f64) {
        let labels = HostLabels {
            host: host.to_owned(),
        };
        for (family, target) in [
            (&self.emissions, total_g),
            (&self.emissions_estimated, estimated_g),
        ] {
            let c = family.get_or_create(&labels);
            let d = target - c.get();
            if d > 0.0 {
                c.inc_by(d);
            }
        }
    }

    /// OpenMetrics text of every metric, now.
    pub fn encode(&self) -> String {
        self.encode_at(vigie_service::now_ms())
    }

    /// OpenMetrics text of every metric at `now_ms` (Unix ms): each lag
    /// gauge is its host's lag at its latest commit, or the wait of the
    /// oldest message still uncommitted if longer.
    pub fn encode_at(&self, now_ms: i64) -> String {
        let stall = self.stall_seconds(now_ms);
        for (host, lag) in self
            .lag_at_commit
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            self.lag
                .get_or_create(&HostLabels { host: host.clone() })
                .set(lag.max(stall));
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// One host's readings in a group, summed per sensor on borrowed names
/// ([`Metrics::accepted_group`]).
struct HostSums<'a> {
    host: &'a str,
    sensors: Vec<SensorSums<'a>>,
    /// Position of each sensor in `sensors`.
    at: HashMap<&'a str, usize>,
    /// Where the next reading's sensor is looked for first: a batch
    /// holds its sensors tick after tick, or in runs.
    guess: usize,
    gauges: Vec<&'a vigie_protocol::Gauge>,
    /// Latest reading end of the host's last batch with readings.
    latest_end: Option<i64>,
}

/// One sensor's readings in a group: µJ per quality (measured,
/// estimated), whether any reading had that quality, the latest power.
struct SensorSums<'a> {
    sensor: &'a str,
    uj: [u128; 2],
    seen: [bool; 2],
    power: Option<f64>,
}

impl<'a> HostSums<'a> {
    fn new(host: &'a str) -> Self {
        HostSums {
            host,
            sensors: Vec::new(),
            at: HashMap::new(),
            guess: 0,
            gauges: Vec::new(),
            latest_end: None,
        }
    }

    fn sensor(&mut self, sensor: &'a str) -> &mut SensorSums<'a> {
        let i = match self.sensors.get(self.guess) {
            Some(s) if s.sensor == sensor => self.guess,
            _ => match self.at.get(sensor) {
                Some(&i) => i,
                None => {
                    self.sensors.push(SensorSums {
                        sensor,
                        uj: [0; 2],
                        seen: [false; 2],
                        power: None,
                    });
                    self.at.insert(sensor, self.sensors.len() - 1);
                    self.sensors.len() - 1
                }
            },
        };
        self.guess = if i + 1 < self.sensors.len() { i + 1 } else { 0 };
        &mut self.sensors[i]
    }
}

/// Handles on one host's series, kept so that a commit updates them
/// without building labels ([`Metrics::accepted_group`]).
struct HostSeries {
    /// Per quality (measured, estimated); made at the first energy.
    host_energy: [Option<FloatCounter>; 2],
    /// Made at the first batch with readings.
    lag: Option<FloatGauge>,
    last_batch: FloatGauge,
    /// Whether the emission series has been made.
    emissions_shown: bool,
    sensors: HashMap<String, SensorSeries>,
}

impl HostSeries {
    fn new(m: &Metrics, host: &str) -> Self {
        let labels = HostLabels {
            host: host.to_owned(),
        };
        HostSeries {
            host_energy: [None, None],
            lag: None,
            last_batch: m.last_batch.get_or_create(&labels).clone(),
            emissions_shown: false,
            sensors: HashMap::new(),
        }
    }
}

/// Handles on one (host, sensor)'s series.
struct SensorSeries {
    /// Per quality (measured, estimated); made at the first reading.
    energy: [Option<FloatCounter>; 2],
    /// Made at the first power figure.
    power: Option<FloatGauge>,
    in_total: Gauge,
}

impl SensorSeries {
    fn new(m: &Metrics, host: &str, sensor: &str) -> Self {
        SensorSeries {
            energy: [None, None],
            power: None,
            in_total: m
                .in_total
                .get_or_create(&SensorLabels {
                    host: host.to_owned(),
                    sensor: sensor.to_owned(),
                })
                .clone(),
        }
    }
}

/// Known losses per host: holes and missing energy from the ledger, and
/// what the agent reports of its own (spool errors, downtime not bridged).
struct LossGauges {
    gaps: Family<HostLabels, Gauge>,
    gap_seconds: Family<HostLabels, FloatGauge>,
    missing: Family<HostLabels, FloatGauge>,
    spool_errors: Family<HostLabels, Gauge>,
    held: Family<HostLabels, Gauge>,
    unbridged: Family<HostLabels, Gauge>,
    unbridged_seconds: Family<HostLabels, FloatGauge>,
}

impl LossGauges {
    fn register(registry: &mut Registry) -> Self {
        let g = LossGauges {
            gaps: Family::default(),
            gap_seconds: Family::default(),
            missing: Family::default(),
            spool_errors: Family::default(),
            held: Family::default(),
            unbridged: Family::default(),
            unbridged_seconds: Family::default(),
        };
        registry.register(
            "vigie_host_data_gaps",
            "Holes in a host's data within agent epochs: batches lost between the agent and the ledger (GET /api/v1/hosts/{host}/gaps lists them)",
            g.gaps.clone(),
        );
        registry.register(
            "vigie_host_data_gap_seconds",
            "Total length of those holes (seconds)",
            g.gap_seconds.clone(),
        );
        registry.register(
            "vigie_host_missing_energy_joules",
            "Energy the agent counted that the ledger does not hold: its cumulative counters minus the energy received, per epoch, over the sensors in the host's total (joules, lost unless the batches come late)",
            g.missing.clone(),
        );
        registry.register(
            "vigie_agent_spool_errors",
            "Spool writes the agent could not make since it started (a full disk: the batches wait in memory)",
            g.spool_errors.clone(),
        );
        registry.register(
            "vigie_agent_batches_in_memory",
            "Batches the agent holds in memory because its spool cannot take them",
            g.held.clone(),
        );
        registry.register(
            "vigie_agent_unbridged_restarts",
            "Counters not resumed at the agent's start (downtime too long to rule out a wrap, or a bad checkpoint): the downtime is a gap",
            g.unbridged.clone(),
        );
        registry.register(
            "vigie_agent_unbridged_downtime_seconds",
            "The downtime those counters did not bridge (seconds)",
            g.unbridged_seconds.clone(),
        );
        g
    }

    fn ledger(&self, labels: &HostLabels, l: &crate::store::losses::Losses) {
        let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.gaps.get_or_create(labels).set(clamp(l.gaps));
        self.gap_seconds
            .get_or_create(labels)
            .set(l.gap_ms as f64 / 1e3);
        self.missing
            .get_or_create(labels)
            .set(l.missing_uj as f64 / 1e6);
    }

    fn agent(&self, labels: &HostLabels, spool: &vigie_protocol::SpoolHealth) {
        let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.spool_errors
            .get_or_create(labels)
            .set(clamp(spool.spool_errors_total));
        self.held.get_or_create(labels).set(clamp(spool.in_memory));
        self.unbridged
            .get_or_create(labels)
            .set(clamp(spool.unbridged_total));
        self.unbridged_seconds
            .get_or_create(labels)
            .set(spool.unbridged_ms as f64 / 1e3);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use vigie_protocol::samples;

    #[test]
    fn accepted_batches_show_in_the_text() {
        let m = Metrics::new("FR", GramsPerKwh(3_600_000.0));
        m.accepted(&samples::telemetry(), 1_795_000_012_000);
        m.rejected("malformed");
        let text = m.encode();
        assert!(
            text.contains(r#"vigie_energy_joules_total{host="node-01",sensor="rapl:package-0",quality="measured"} 85.250113"#),
            "{text}"
        );
        assert!(
            text.contains(r#"vigie_power_watts{host="node-01",sensor="rapl:package-0"} 85.250113"#)
        );
        // The grams come as the hours close (carbon::EmissionCounters);
        // the host's series shows from its first energy.
        assert!(
            text.contains(r#"vigie_emissions_location_grams_total{host="node-01"} 0.0"#),
            "{text}"
        );
        m.set_host_emissions("node-01", 95.5, 10.0);
        // A smaller figure never takes a counter down.
        m.set_host_emissions("node-01", 90.0, 12.5);
        let text = m.encode();
        assert!(text.contains(r#"vigie_emissions_location_grams_total{host="node-01"} 95.5"#));
        assert!(
            text.contains(r#"vigie_emissions_location_estimated_grams_total{host="node-01"} 12.5"#)
        );
        assert!(text.contains(r#"vigie_ingest_rejected_total{reason="malformed"} 1"#));
        assert!(text.contains(r#"vigie_ingest_rejected_total{reason="host_mismatch"} 0"#));
        assert!(text.contains(r#"vigie_ingest_lag_seconds{host="node-01"} 1.0"#));
        assert!(text.contains("vigie_ingest_readings_total 2"));
        assert!(text.trim_end().ends_with("# EOF"));
    }

    /// The value of the series `name` in `text`.
    fn value(text: &str, name: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn the_lag_grows_while_a_received_message_waits_uncommitted() {
        let m = Metrics::new("FR", GramsPerKwh(50.0));
        let t = 1_795_000_012_000;
        // The sample batch ends 1 s before its commit.
        m.accepted(&samples::telemetry(), t);
        let lag = r#"vigie_ingest_lag_seconds{host="node-01"}"#;
        assert_eq!(value(&m.encode_at(t + 300_000), lag), Some(1.0));
        // A message received at t + 10 s and not committed: a stalled
        // commit (once 293 s while this gauge read 0.002).
        m.set_pending_since(Some(t + 10_000));
        assert_eq!(value(&m.encode_at(t + 10_500), lag), Some(1.0));
        assert_eq!(value(&m.encode_at(t + 303_000), lag), Some(293.0));
        // Committed: back to the lag of the latest commit.
        m.set_pending_since(None);
        assert_eq!(value(&m.encode_at(t + 400_000), lag), Some(1.0));
    }

    #[test]
    fn the_last_batch_time_is_set_by_commits_and_at_start_up() {
        let m = Metrics::new("FR", GramsPerKwh(50.0));
        let series = r#"vigie_host_last_batch_timestamp_seconds{host="node-01"}"#;
        assert_eq!(value(&m.encode(), series), None);
        // From the ledger at start-up.
        m.last_batch("node-01", 1_795_000_000_000);
        assert_eq!(value(&m.encode(), series), Some(1_795_000_000.0));
        // From a commit (collector time, not the batch's).
        m.accepted(&samples::telemetry(), 1_795_000_042_500);
        assert_eq!(value(&m.encode(), series), Some(1_795_000_042.5));
        // A batch of gauges only is data too.
        let mut only = samples::telemetry();
        only.readings.clear();
        m.accepted(&only, 1_795_000_050_000);
        assert_eq!(value(&m.encode(), series), Some(1_795_000_050.0));
    }

    #[test]
    fn an_agents_counter_resets_show_per_host() {
        let m = Metrics::new("FR", GramsPerKwh(50.0));
        let mut spool = samples::status_online().spool.unwrap();
        spool.counter_resets_total = 3;
        m.agent_spool("node-01", &spool, 0);
        assert!(
            m.encode()
                .contains(r#"vigie_agent_energy_resets{host="node-01"} 3"#),
            "{}",
            m.encode()
        );
    }

    #[test]
    fn an_agents_broker_trouble_shows_per_host() {
        let m = Metrics::new("FR", GramsPerKwh(50.0));
        let mut spool = samples::status_online().spool.unwrap();
        spool.broker_disconnects_total = 4;
        spool.publish_failures_total = 5;
        m.agent_spool("node-01", &spool, 0);
        let text = m.encode();
        assert_eq!(
            value(&text, r#"vigie_agent_broker_disconnects{host="node-01"}"#),
            Some(4.0)
        );
        assert_eq!(
            value(&text, r#"vigie_agent_publish_failures{host="node-01"}"#),
            Some(5.0)
        );
    }

    #[test]
    fn host_energy_and_emissions_leave_out_what_the_inventory_marks_as_a_part() {
        let m = Metrics::new("FR", GramsPerKwh(3_600_000.0));
        let part = samples::telemetry().readings[1].sensor.clone();
        m.set_uncounted("node-01", HashSet::from([part.clone()]));
        // A restart: the ledger's totals seed the counters.
        m.seed("node-01", &part, 5_000_000, 0);
        m.seed("node-01", "rapl:package-0", 1_000_000, 0);
        m.accepted(&samples::telemetry(), 1_795_000_012_000);
        let text = m.encode();
        // Per sensor, both still show.
        assert!(text.contains(&format!(
            r#"vigie_energy_joules_total{{host="node-01",sensor="{part}",quality="measured"}}"#
        )));
        // Per host, only the counted sensor: 1 J seeded + 85.250113 J.
        assert!(
            text.contains(
                r#"vigie_host_energy_joules_total{host="node-01",quality="measured"} 86.250113"#
            ),
            "{text}"
        );
        assert!(text.contains(&format!(
            r#"vigie_sensor_counted{{host="node-01",sensor="{part}"}} 0"#
        )));
        assert!(text.contains(r#"vigie_sensor_counted{host="node-01",sensor="rapl:package-0"} 1"#));
        // Without an inventory saying so, every sensor counts.
        m.set_uncounted("node-01", HashSet::new());
        assert!(m.encode().contains(&format!(
            r#"vigie_sensor_counted{{host="node-01",sensor="{part}"}} 1"#
        )));
        m.accepted(&samples::telemetry(), 1_795_000_012_000);
        assert!(
            m.encode().contains(
                r#"vigie_host_energy_joules_total{host="node-01",quality="measured"} 181.37023"#
            ),
            "{}",
            m.encode()
        );
    }

    #[test]
    fn gauges_keep_the_latest_value_whatever_the_arrival_order() {
        let m = Metrics::new("FR", GramsPerKwh(50.0));
        let series = r#"vigie_sensor_value{host="node-01",sensor="nvml:gpu-0",quantity="temperature_celsius"}"#;
        let mut newer = samples::telemetry();
        newer.gauges[0].value = 70.0;
        newer.gauges[0].at_ms += 10_000;
        m.accepted(&newer, 1_795_000_030_000);
        m.accepted(&samples::telemetry(), 1_795_000_030_000);
        assert!(
            m.encode().contains(&format!("{series} 70.0")),
            "{}",
            m.encode()
        );
        // A batch of gauges only moves no energy and no lag.
        let mut only = samples::telemetry();
        only.readings.clear();
        only.host = "gauge-only".into();
        m.accepted(&only, 1_795_000_030_000);
        assert!(
            !m.encode()
                .contains(r#"vigie_ingest_lag_seconds{host="gauge-only"}"#)
        );
    }
    /// Every series of `text` and its value.
    fn values(text: &str) -> std::collections::BTreeMap<String, f64> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (name, v) = l.rsplit_once(' ')?;
                Some((name.to_owned(), v.parse().ok()?))
            })
            .collect()
    }

    #[test]
    fn a_group_shows_the_same_figures_as_its_batches_one_by_one() {
        // Two hosts, several batches each in arrival order (one older
        // than the one before it, one with gauges only), a metered sensor
        // and an uncounted one.
        let mut batches = Vec::new();
        for (h, host) in ["node-01", "node-02"].into_iter().enumerate() {
            for k in 0..4i64 {
                let mut b = samples::telemetry();
                b.host = host.into();
                b.seq = k as u64;
                let shift = if k == 2 { -30_000 } else { k * 10_000 };
                for (i, r) in b.readings.iter_mut().enumerate() {
                    r.start_ms += shift;
                    r.end_ms += shift;
                    r.energy_uj += (h as u64 + 1) * 1_000 + k as u64 * 7 + i as u64;
                    if k == 1 && i == 0 {
                        r.power_w = None;
                    }
                }
                for g in &mut b.gauges {
                    g.at_ms += shift;
                    g.value += k as f64;
                }
                if k == 3 && h == 1 {
                    b.readings.clear();
                }
                batches.push(b);
            }
        }
        let part = samples::telemetry().readings[1].sensor.clone();
        let metered = samples::telemetry().readings[0].sensor.clone();
        let setup = || {
            let m = Metrics::new("FR", GramsPerKwh(3_600_000.0));
            m.set_uncounted("node-02", HashSet::from([part.clone()]));
            m.set_meter_sensors(vec![(
                "node-01".into(),
                metered.clone(),
                "grid".into(),
                "grid-import",
            )]);
            m
        };
        let now = 1_795_000_100_000;
        let (one_by_one, grouped) = (setup(), setup());
        for b in &batches {
            one_by_one.accepted(b, now);
        }
        grouped.accepted_group(&batches, now);
        let (want, got) = (
            values(&one_by_one.encode_at(now)),
            values(&grouped.encode_at(now)),
        );
        assert_eq!(
            want.keys().collect::<Vec<_>>(),
            got.keys().collect::<Vec<_>>()
        );
        for (k, w) in &want {
            let g = got[k];
            assert!((w - g).abs() <= 1e-9 * w.abs().max(1.0), "{k}: {w} != {g}");
        }
        // And the figures are there: the meter, the lag of node-01's
        // last batch, node-02's host energy without its part.
        assert!(
            got.keys()
                .any(|k| k.starts_with("vigie_meter_energy_joules_total"))
        );
        assert_eq!(got[r#"vigie_ingest_lag_seconds{host="node-01"}"#], 59.0);
        assert_eq!(got["vigie_ingest_readings_total"], 14.0);
    }
}
