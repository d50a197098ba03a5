//! The site's figures as metrics: PUE, ERF, REF, CER and WUE, every
//! meter's energy and coverage over the current day and the year to date,
//! and the EnEfG targets in force, refreshed by a background task.
//!
//! Periods end at the last whole minute (the ledger's minute buckets are
//! complete there) and are UTC. The figures are those of [`site::figures`]
//! under the configured gap rule: with `strict`, a period the meters do
//! not cover whole has no PUE (the series is absent, not 0) and the
//! coverage gauges say why; with `scale-to-period`, gaps are filled and the
//! figure is marked `estimated`.

use crate::backend::{self, LedgerRead};
use crate::config::CarbonConfig;
use crate::export::date::Date;
use crate::export::targets;
use crate::metrics::{Metrics, SiteGauges, TargetGauges};
use crate::site::{self, MarketConfig, SiteConfig, SiteError};
use std::sync::Arc;
use vigie_energy::{MINUTE_MS, Status};

/// A period the metrics show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KpiPeriod {
    /// Since midnight UTC.
    Day,
    /// Since 1 January, UTC.
    YearToDate,
}

impl KpiPeriod {
    /// The `period` label.
    pub fn label(self) -> &'static str {
        match self {
            KpiPeriod::Day => "day",
            KpiPeriod::YearToDate => "ytd",
        }
    }

    /// `[from, to)` at `now_ms`: to the last whole minute; `None` in the
    /// first minute of the period.
    pub fn bounds(self, now_ms: i64) -> Option<(i64, i64)> {
        let to = now_ms.div_euclid(MINUTE_MS) * MINUTE_MS;
        let today = Date::from_ms(now_ms);
        let from = match self {
            KpiPeriod::Day => today.start_ms(),
            KpiPeriod::YearToDate => Date {
                y: today.y,
                m: 1,
                d: 1,
            }
            .start_ms(),
        };
        (to > from).then_some((from, to))
    }
}

/// The gauges of the site over `[from_ms, to_ms)`. Figures without a value
/// (incomplete, undefined) and totals the gap rule leaves unknown are
/// left out; zone meters are given in `energy` and `coverage` like the
/// others.
pub fn gauges(
    conn: &dyn LedgerRead,
    site: &SiteConfig,
    market: &MarketConfig,
    from_ms: i64,
    to_ms: i64,
) -> Result<SiteGauges, SiteError> {
    let f = site::figures(conn, site, market, from_ms, to_ms)?;
    let mut g = SiteGauges::default();
    for fig in &f.figures {
        let estimated = match fig.status {
            Status::Measured => false,
            Status::Estimated => true,
            Status::Incomplete | Status::Undefined => continue,
        };
        if let Some(v) = fig.value.filter(|v| v.is_finite()) {
            if let vigie_energy::Indicator::PartialPue { zone, .. } = &fig.indicator {
                g.ppue.push((zone.clone(), v, estimated));
                continue;
            }
            // + 0.0 turns a -0.0 (0 renewable over a positive E_DC) into 0.
            g.figures.push((fig.indicator.symbol(), v + 0.0, estimated));
        }
    }
    for (meter, role, input) in &f.totals {
        if let Some(c) = input.coverage {
            g.coverage
                .push((meter.clone(), role.as_str(), 1.0 - c.missing_share()));
        }
        if role.is_water() {
            continue;
        }
        if let Some(kwh) = input.total.filter(|t| t.is_finite()) {
            let estimated = input.estimated > 0.0 || input.filled > 0.0;
            g.energy
                .push((meter.clone(), role.as_str(), kwh * 3.6e6, estimated));
        }
    }
    Ok(g)
}

/// The EnEfG targets in force on the day holding `now_ms`, for a site
/// commissioned on `commissioned` (PUE and ERF are unknown without it).
pub fn target_gauges(commissioned: Option<Date>, now_ms: i64) -> TargetGauges {
    let checks = targets::check(Date::from_ms(now_ms), commissioned, None, None, None);
    // The limit in force, else the one the site is built and run to meet
    // with the day it applies (a new site's, two years after
    // commissioning): the `applies_from` label tells them apart.
    let limit = |id: &str, scale: f64| {
        checks
            .iter()
            .find(|c| c.id == id)
            .and_then(|c| Some((c.limit.or(c.upcoming)? * scale, c.applies_from.clone()?)))
    };
    TargetGauges {
        pue: limit("pue_max", 1.0),
        // The targets module speaks percent; the metrics, ratios.
        erf: limit("erf_min", 0.01),
        renewable_share: limit("renewable_share_min", 0.01),
    }
}

/// The power of every meter read from agent sensors: each sensor's mean
/// power over its readings of the last [`crate::metrics::POWER_WINDOW_MS`]
/// (registers and manual meters have none); a meter one of whose sensors
/// has not reported yet is left out.
pub fn meter_power(metrics: &Metrics, site: &SiteConfig) -> Vec<(String, &'static str, f64)> {
    site.meters
        .iter()
        .filter(|m| !m.sensors.is_empty() && !m.role.is_water())
        .filter_map(|m| {
            let w = m
                .sensors
                .iter()
                .map(|s| metrics.meter_sensor_power(&s.host, &s.sensor))
                .sum::<Option<f64>>()?;
            Some((m.name.clone(), m.role.as_str(), w))
        })
        .collect()
}

/// The sensors of every energy meter read by agents, as (host, sensor,
/// meter, role), for [`Metrics::set_meter_sensors`].
pub fn meter_sensors(site: &SiteConfig) -> Vec<(String, String, String, &'static str)> {
    let mut out: Vec<_> = site
        .meters
        .iter()
        .filter(|m| !m.role.is_water())
        .flat_map(|m| {
            m.sensors.iter().map(|s| {
                (
                    s.host.clone(),
                    s.sensor.clone(),
                    m.name.clone(),
                    m.role.as_str(),
                )
            })
        })
        .collect();
    // A sensor listed twice in one meter counts once.
    out.sort_unstable();
    out.dedup();
    out
}

/// The grid-import meter's emission counter
/// (`vigie_site_emissions_location_grams`), kept equal to what
/// `/api/v1/scope2` gives as `location_based_kg` for its closed hours
/// (those [`crate::carbon::EmissionCounters::closed_until`] says): each
/// refresh computes [`site::scope2`] over the hours not folded yet, with
/// the same hourly factors.
///
/// Hours before the last [`RECOUNT_MS`] are folded into a base; a reading
/// of a meter sensor accepted for an hour before that makes the next
/// refresh compute from the meter's first data again. The caller passes
/// the time: no clock here.
#[derive(Debug, Default)]
pub struct SiteEmissionCounter {
    /// Hours before this are in `base_g` (0: nothing folded).
    base_until: i64,
    base_g: f64,
    /// Hours before this were counted by the last refresh (0: none yet).
    counted_until: i64,
}

/// Closed hours recomputed at each refresh, for late energy.
const RECOUNT_MS: i64 = 48 * vigie_energy::HOUR_MS;

impl SiteEmissionCounter {
    /// A counter that has counted nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Brings the counter up to date at `now_ms`; returns whether the
    /// ledger was read.
    pub fn refresh(
        &mut self,
        conn: &dyn backend::Db,
        site: &SiteConfig,
        carbon: &CarbonConfig,
        metrics: &Metrics,
        now_ms: i64,
    ) -> Result<bool, SiteError> {
        let Some(grid) = site
            .meters
            .iter()
            .find(|m| m.role == site::Role::GridImport && !m.is_manual())
        else {
            return Ok(false);
        };
        let closed = crate::carbon::EmissionCounters::closed_until(now_ms);
        let dirty = metrics.take_site_emissions_dirty();
        let first = self.counted_until == 0;
        if !first && closed <= self.counted_until && dirty >= self.counted_until {
            return Ok(false);
        }
        // Worked on copies: a failed read leaves the state as it was (and
        // the late-energy mark back), and the next refresh tries again.
        self.count(
            conn, site, carbon, metrics, closed, dirty, first, &grid.name,
        )
        .inspect_err(|_| metrics.remark_site_emissions_dirty(dirty))?;
        Ok(true)
    }

    /// The work of [`SiteEmissionCounter::refresh`], on copies of the state.
    #[allow(clippy::too_many_arguments)]
    fn count(
        &mut self,
        conn: &dyn backend::Db,
        site: &SiteConfig,
        carbon: &CarbonConfig,
        metrics: &Metrics,
        closed: i64,
        dirty: i64,
        first: bool,
        meter: &str,
    ) -> Result<(), SiteError> {
        use vigie_energy::HOUR_MS;
        let (mut base_until, mut base_g) = (self.base_until, self.base_g);
        if first || dirty < base_until {
            let start = site::first_data_ms(conn)?.unwrap_or(closed);
            base_until = start.div_euclid(HOUR_MS) * HOUR_MS;
            base_g = 0.0;
        }
        let fold_until = (closed - RECOUNT_MS).max(base_until);
        let mut total = base_g;
        // At most a year per call (scope2 bounds its periods).
        let year = 365 * 24 * HOUR_MS;
        let mut from = base_until;
        while from < closed {
            let to = (from + year).min(closed);
            let (r, _) = site::scope2(conn, site, carbon, from, to)?;
            for h in &r.hours {
                total += h.location.0;
                if h.start_ms < fold_until {
                    base_g += h.location.0;
                }
            }
            from = to;
        }
        (self.base_until, self.base_g) = (fold_until, base_g);
        metrics.set_site_emissions(meter, total);
        self.counted_until = closed.max(1);
        Ok(())
    }
}

/// Refreshes the gauges of `period` at `now_ms`. In the first minute of a
/// period nothing is computed and the period's series are removed.
pub fn refresh(
    metrics: &Metrics,
    conn: &dyn LedgerRead,
    site: &SiteConfig,
    market: &MarketConfig,
    period: KpiPeriod,
    now_ms: i64,
) -> Result<(), SiteError> {
    let g = match period.bounds(now_ms) {
        Some((from, to)) => gauges(conn, site, market, from, to)?,
        None => SiteGauges::default(),
    };
    metrics.set_site(period.label(), g);
    Ok(())
}

/// Spawns the task: the day's figures at once and every `site.kpi_every`,
/// the year's at once and every `site.kpi_ytd_every`, the targets with
/// each. Errors are logged when they change, and the previous values stay.
pub fn spawn(
    metrics: Arc<Metrics>,
    db: std::path::PathBuf,
    site: SiteConfig,
    carbon: CarbonConfig,
    clock: fn() -> i64,
) -> tokio::task::JoinHandle<()> {
    let floor = std::time::Duration::from_secs(1);
    let every = site.kpi_every.max(floor);
    let ytd_every = site.kpi_ytd_every.max(every);
    let state = Arc::new((site, carbon));
    let counter = Arc::new(std::sync::Mutex::new(SiteEmissionCounter::new()));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_ytd: Option<tokio::time::Instant> = None;
        let mut last_error: Option<String> = None;
        loop {
            tick.tick().await;
            let ytd = last_ytd.is_none_or(|t| t.elapsed() >= ytd_every);
            if ytd {
                last_ytd = Some(tokio::time::Instant::now());
            }
            let (metrics, db, state, counter) =
                (metrics.clone(), db.clone(), state.clone(), counter.clone());
            let result = tokio::task::spawn_blocking(move || {
                let (site, carbon) = &*state;
                let market = &carbon.market;
                let now = clock();
                metrics.set_targets(target_gauges(site.commissioned, now));
                metrics.set_site_power(&meter_power(&metrics, site));
                let conn = backend::open(&db)?;
                // The counter's trouble does not hold the figures back.
                let counted = counter
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .refresh(&*conn, site, carbon, &metrics, now);
                refresh(&metrics, &*conn, site, market, KpiPeriod::Day, now)?;
                if ytd {
                    refresh(&metrics, &*conn, site, market, KpiPeriod::YearToDate, now)?;
                }
                counted.map(|_| ())
            })
            .await;
            let error = match result {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e.to_string()),
                Err(e) => Some(e.to_string()),
            };
            if error != last_error {
                match &error {
                    Some(e) => tracing::warn!(error = %e, "site figures for the metrics"),
                    None if last_error.is_some() => {
                        tracing::info!("site figures for the metrics computed again")
                    }
                    None => {}
                }
                last_error = error;
            }
        }
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rusqlite::Connection;
    use vigie_energy::{GramsPerKwh, Microjoules};
    use vigie_protocol::Quality;

    /// 2026-03-10T12:00:00Z.
    const NOON: i64 = 1_773_144_000_000;
    const HOUR: i64 = 3_600_000;

    #[test]
    fn periods_end_at_the_last_whole_minute_and_start_at_midnight_or_new_year() {
        let now = NOON + 90_500;
        assert_eq!(
            KpiPeriod::Day.bounds(now),
            Some((NOON - 12 * HOUR, NOON + 60_000))
        );
        let jan1 = Date::parse("2026-01-01").unwrap().start_ms();
        assert_eq!(
            KpiPeriod::YearToDate.bounds(now),
            Some((jan1, NOON + 60_000))
        );
        // In the first minute of the day there is no whole minute yet.
        assert_eq!(KpiPeriod::Day.bounds(NOON - 12 * HOUR + 30_000), None);
        assert_eq!(KpiPeriod::Day.label(), "day");
        assert_eq!(KpiPeriod::YearToDate.label(), "ytd");
    }

    #[test]
    fn targets_follow_the_commissioning_date() {
        // A new site's targets apply two years after commissioning
        // (EnEfG § 11(2) sentence 2): after five months the gauges show
        // them with the day they apply.
        let at = Date::parse("2026-11-23").unwrap().start_ms();
        let t = target_gauges(Date::parse("2026-07-01"), at);
        assert_eq!(t.pue, Some((1.2, "2028-07-01".into())));
        assert_eq!(t.erf, Some((0.1, "2028-07-01".into())));
        assert_eq!(t.renewable_share, Some((0.5, "2024-01-01".into())));
        let at = Date::parse("2028-07-01").unwrap().start_ms();
        let t = target_gauges(Date::parse("2026-07-01"), at);
        assert_eq!(t.pue, Some((1.2, "2028-07-01".into())));
        assert_eq!(t.erf, Some((0.1, "2028-07-01".into())));
        // Unknown commissioning date: only the renewable share is known.
        let t = target_gauges(None, at);
        assert_eq!((t.pue, t.erf), (None, None));
        assert!(t.renewable_share.is_some());
    }

    #[test]
    fn roles_as_labels_are_the_configured_names() {
        #[derive(serde::Deserialize)]
        struct W {
            r: site::Role,
        }
        for name in [
            "grid-import",
            "onsite-generation",
            "it",
            "cooling",
            "heat-delivered",
            "heat-removed",
            "heat-rejected",
            "water",
            "water-potable",
            "water-non-potable",
            "generator",
            "zone-total",
            "zone-it",
        ] {
            let w: W = toml::from_str(&format!("r = {name:?}")).unwrap();
            assert_eq!(w.r.as_str(), name);
        }
    }

    const MIN: i64 = MINUTE_MS;

    /// The value of `series` (name and labels as served) in `text`.
    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-9)
    }

    const SITE: &str = r#"
commissioned = "2026-07-01"
[[meters]]
name = "mains"
role = "grid-import"
sensors = [{ host = "facility", sensor = "meter:mains" }]
[[meters]]
name = "pdus"
role = "it"
sensors = [{ host = "facility", sensor = "pdu:total" }]
[[meters]]
name = "heat-out"
role = "heat-delivered"
register = { host = "facility", sensor = "hm:1", quantity = "heat-energy-kwh" }
"#;

    /// Three minutes from midnight of 2026-03-10: 1.5 kWh from the grid
    /// and 1 kWh of IT each minute, 0.9 kWh of heat delivered in all.
    fn ledger() -> Connection {
        let conn = crate::store::open_in_memory().unwrap();
        let day = NOON - 12 * HOUR;
        let mut p = crate::store::Pending::default();
        for m in 0..3 {
            for (sensor, kwh) in [("meter:mains", 1.5), ("pdu:total", 1.0)] {
                p.minute.insert(
                    ("facility".into(), sensor.into(), day + m * MIN),
                    crate::store::Amount {
                        measured: (kwh * 3.6e12) as u64,
                        estimated: 0,
                    },
                );
            }
        }
        let heat = |t, v| vigie_protocol::Gauge {
            sensor: "hm:1".into(),
            quantity: vigie_protocol::GaugeQuantity::HeatEnergyKwh,
            value: v,
            at_ms: t,
        };
        let tx = conn.unchecked_transaction().unwrap();
        crate::store::add_energy(&tx, &p).unwrap();
        crate::store::record_registers(
            &tx,
            "facility",
            &[
                heat(day, 100.0),
                heat(day + 90_000, 100.45),
                heat(day + 3 * MIN, 100.9),
            ],
        )
        .unwrap();
        tx.commit().unwrap();
        conn
    }

    #[test]
    fn figures_energy_and_coverage_of_a_known_ledger() {
        let conn = ledger();
        let site: SiteConfig = toml::from_str(SITE).unwrap();
        let market = MarketConfig::default();
        let m = unused_metrics();
        // Three whole minutes into the day.
        let now = NOON - 12 * HOUR + 3 * MIN + 20_000;
        refresh(&m, &conn, &site, &market, KpiPeriod::Day, now).unwrap();
        let text = m.encode();
        let pue = value(&text, r#"vigie_site_pue{period="day",quality="measured"}"#);
        assert!(close(pue, 1.5), "{text}");
        let erf = value(&text, r#"vigie_site_erf{period="day",quality="measured"}"#);
        assert!(close(erf, 0.9 / 4.5), "{text}");
        let grid = value(
            &text,
            r#"vigie_site_energy_joules{meter="mains",role="grid-import",period="day",quality="measured"}"#,
        );
        assert!(close(grid, 4.5 * 3.6e6), "{text}");
        let heat = value(
            &text,
            r#"vigie_site_energy_joules{meter="heat-out",role="heat-delivered",period="day",quality="measured"}"#,
        );
        assert!(close(heat.map(|j| j / 1e3), 0.9 * 3.6e3), "{text}");
        let cov = value(
            &text,
            r#"vigie_site_coverage_ratio{meter="pdus",role="it",period="day"}"#,
        );
        assert!(close(cov, 1.0), "{text}");

        // Year to date under the strict rule: January to March are not
        // metered, so there is no PUE (absent, not 0), and the coverage
        // says why.
        refresh(&m, &conn, &site, &market, KpiPeriod::YearToDate, now).unwrap();
        let text = m.encode();
        assert!(!text.contains(r#"vigie_site_pue{period="ytd""#), "{text}");
        let cov = value(
            &text,
            r#"vigie_site_coverage_ratio{meter="pdus",role="it",period="ytd"}"#,
        )
        .unwrap();
        assert!(cov > 0.0 && cov < 0.001, "{cov}");
        // The day's figures stay.
        assert!(text.contains(r#"vigie_site_pue{period="day",quality="measured"}"#));

        // Under scale-to-period the year's figures exist, marked estimated.
        let scaled: SiteConfig =
            toml::from_str(&format!("gap_rule = \"scale-to-period\"\n{SITE}")).unwrap();
        refresh(&m, &conn, &scaled, &market, KpiPeriod::YearToDate, now).unwrap();
        let text = m.encode();
        let pue = value(&text, r#"vigie_site_pue{period="ytd",quality="estimated"}"#);
        assert!(close(pue, 1.5), "{text}");
    }

    #[test]
    fn a_figure_whose_meter_goes_missing_disappears() {
        let conn = ledger();
        let market = MarketConfig::default();
        let m = unused_metrics();
        let now = NOON - 12 * HOUR + 3 * MIN;
        let full: SiteConfig = toml::from_str(SITE).unwrap();
        refresh(&m, &conn, &full, &market, KpiPeriod::Day, now).unwrap();
        assert!(m.encode().contains("vigie_site_erf{"));
        // No heat meter: no ERF and no heat energy; PUE stays.
        let mut no_heat = full.clone();
        no_heat
            .meters
            .retain(|x| x.role != site::Role::HeatDelivered);
        refresh(&m, &conn, &no_heat, &market, KpiPeriod::Day, now).unwrap();
        let text = m.encode();
        assert!(!text.contains("vigie_site_erf{"), "{text}");
        assert!(!text.contains(r#"meter="heat-out""#), "{text}");
        assert!(text.contains("vigie_site_pue{"), "{text}");
        // No IT meter: no PUE either.
        no_heat.meters.retain(|x| x.role != site::Role::It);
        refresh(&m, &conn, &no_heat, &market, KpiPeriod::Day, now).unwrap();
        assert!(!m.encode().contains("vigie_site_pue{"));
    }

    fn unused_metrics() -> Metrics {
        Metrics::new("FR", GramsPerKwh(50.0))
    }

    /// The sample batch, from `host`, with one reading and no gauges.
    fn one_reading(host: &str) -> vigie_protocol::TelemetryBatch {
        let mut batch = vigie_protocol::samples::telemetry();
        batch.host = host.into();
        batch.gauges.clear();
        batch.readings.truncate(1);
        batch
    }

    #[test]
    fn meter_power_sums_the_power_of_every_sensor() {
        let m = unused_metrics();
        let site: SiteConfig = toml::from_str(
            r#"
[[meters]]
name = "pdus"
role = "it"
sensors = [{ host = "h", sensor = "pdu:1" }, { host = "h", sensor = "pdu:2" }]
[[meters]]
name = "heat-out"
role = "heat-delivered"
register = { host = "h", sensor = "hm:1", quantity = "heat-energy-kwh" }
"#,
        )
        .unwrap();
        m.set_meter_sensors(meter_sensors(&site));
        let mut batch = one_reading("h");
        // One second each: 100 J, then 50 J.
        batch.readings[0].sensor = "pdu:1".into();
        batch.readings[0].energy_uj = 100_000_000;
        m.accepted(&batch, batch.readings[0].end_ms);
        // pdu:2 has not reported: no power for the meter yet.
        assert!(meter_power(&m, &site).is_empty());
        batch.readings[0].sensor = "pdu:2".into();
        batch.readings[0].energy_uj = 50_000_000;
        m.accepted(&batch, batch.readings[0].end_ms);
        assert_eq!(meter_power(&m, &site), [("pdus".to_owned(), "it", 150.0)]);
        m.set_site_power(&meter_power(&m, &site));
        assert!(
            m.encode()
                .contains(r#"vigie_site_power_watts{meter="pdus",role="it"} 150.0"#)
        );
        m.set_site_power(&[]);
        assert!(!m.encode().contains("vigie_site_power_watts{"));
    }

    #[test]
    fn meter_energy_counts_each_meter_once_from_its_own_sensors() {
        let m = unused_metrics();
        let site: SiteConfig = toml::from_str(
            r#"
[[meters]]
name = "mains"
role = "grid-import"
sensors = [{ host = "fac", sensor = "meter:mains" }]
[[meters]]
name = "pdus"
role = "it"
sensors = [{ host = "fac", sensor = "pdu:1" }, { host = "fac", sensor = "pdu:2" }, { host = "fac", sensor = "pdu:1" }]
[[meters]]
name = "hall-a"
role = "zone-it"
zone = "a"
sensors = [{ host = "fac", sensor = "pdu:1" }]
[[meters]]
name = "water"
role = "water"
sensors = [{ host = "fac", sensor = "pdu:2" }]
"#,
        )
        .unwrap();
        m.set_meter_sensors(meter_sensors(&site));
        // 2 J of mains already in the ledger at start: the sensor's
        // counter starts there, the meter's at zero.
        m.seed("fac", "meter:mains", 2_000_000, 0);
        let mut batch = one_reading("fac");
        let reading = |sensor: &str, uj: u64, q: Quality| {
            let mut r = batch.readings[0].clone();
            r.sensor = sensor.into();
            r.energy_uj = uj;
            r.quality = q;
            r
        };
        batch.readings = vec![
            reading("meter:mains", 10_000_000, Quality::Measured),
            reading("pdu:1", 3_000_000, Quality::Measured),
            reading("pdu:2", 4_000_000, Quality::Estimated),
            // A server inside the PDUs: not part of any meter.
            reading("rapl:package-0", 1_000_000, Quality::Measured),
        ];
        m.accepted(&batch, batch.readings[0].end_ms);
        // The same host name elsewhere is another sensor.
        batch.host = "other".into();
        m.accepted(&batch, batch.readings[0].end_ms);
        let text = m.encode();
        let line = |meter: &str, role: &str, q: &str| {
            format!(
                "vigie_meter_energy_joules_total{{meter=\"{meter}\",role=\"{role}\",quality=\"{q}\"}} "
            )
        };
        let value = |l: String| -> f64 {
            let at = text
                .find(&l)
                .unwrap_or_else(|| panic!("{l} missing:\n{text}"));
            text[at + l.len()..]
                .lines()
                .next()
                .unwrap()
                .parse()
                .unwrap()
        };
        assert_eq!(value(line("mains", "grid-import", "measured")), 10.0);
        assert_eq!(value(line("pdus", "it", "measured")), 3.0);
        assert_eq!(value(line("pdus", "it", "estimated")), 4.0);
        assert_eq!(value(line("hall-a", "zone-it", "measured")), 3.0);
        assert!(!text.contains("meter=\"water\""), "{text}");
        // The grams come as the hours close (SiteEmissionCounter), not at
        // the static factor as energy arrives; the series shows at once.
        let l = "vigie_site_emissions_location_grams_total{meter=\"mains\"} ".to_owned();
        assert_eq!(value(l), 0.0);
        assert!(!text.contains("role=\"water\""), "{text}");
    }

    /// A Wh register read every 5 s: what the demo's facility meters send.
    /// Returns the readings of `[from, from + n × 5 s)` at `watts`, the
    /// energy of each the whole Wh the register moved in it.
    fn wh_register_readings(
        sensor: &str,
        from: i64,
        n: i64,
        watts: f64,
    ) -> Vec<vigie_protocol::Reading> {
        let mut carry = 0.0;
        (0..n)
            .map(|i| {
                carry += watts * 5.0 / 3600.0;
                let whole = carry.floor();
                carry -= whole;
                let uj = (whole * 3.6e9) as u64;
                vigie_protocol::Reading {
                    sensor: sensor.into(),
                    start_ms: from + i * 5_000,
                    end_ms: from + (i + 1) * 5_000,
                    energy_uj: uj,
                    cumulative_uj: 0,
                    power_w: vigie_energy::average_power(Microjoules(uj), 5_000).map(|w| w.0),
                    quality: Quality::Measured,
                }
            })
            .collect()
    }

    #[test]
    fn meter_power_is_a_smooth_rate_over_the_window_not_one_wh_step() {
        let m = unused_metrics();
        let site: SiteConfig = toml::from_str(
            r#"
[[meters]]
name = "chillers"
role = "cooling"
sensors = [{ host = "fac", sensor = "facility:cooling" }]
"#,
        )
        .unwrap();
        m.set_meter_sensors(meter_sensors(&site));
        // Readings that straddle minute boundaries: from 57 s past a
        // minute, every 5 s, at 427 W.
        let from = NOON + 57_000;
        let mut batch = one_reading("fac");
        let mut shown = Vec::new();
        for r in wh_register_readings("facility:cooling", from, 240, 427.0) {
            batch.readings = vec![r];
            m.accepted(&batch, batch.readings[0].end_ms);
            // Each reading alone says 0 or 720 W: never near 427.
            let own = m.sensor_power("fac", "facility:cooling").unwrap();
            assert!(own == 0.0 || own >= 720.0, "{own}");
            let p = meter_power(&m, &site);
            assert_eq!(p.len(), 1);
            shown.push(p[0].2);
        }
        // Once the window is full (5 minutes of readings), the shown power
        // stays within one Wh per window (12 W) of the true 427 W.
        for w in &shown[60..] {
            assert!((w - 427.0).abs() <= 12.0, "{w}");
        }
        m.set_site_power(&meter_power(&m, &site));
        let text = m.encode();
        let v = value(
            &text,
            r#"vigie_site_power_watts{meter="chillers",role="cooling"}"#,
        )
        .unwrap();
        assert!((v - 427.0).abs() <= 12.0, "{text}");
        // A late batch of an older interval takes its place in the window
        // without moving it; one before the window is left out.
        let before = meter_power(&m, &site)[0].2;
        batch.readings = wh_register_readings("facility:cooling", from - 3_600_000, 1, 100_000.0);
        m.accepted(&batch, NOON);
        assert_eq!(meter_power(&m, &site)[0].2, before);
    }

    /// A grid meter's hour buckets at `kwh` per hour over `hours` hours
    /// from `from`, and a stored grid series of one factor per hour.
    fn grid_ledger(from: i64, kwh: &[f64], factors: &[f64]) -> Connection {
        let mut conn = crate::store::open_in_memory().unwrap();
        crate::grid::store::init(&conn).unwrap();
        add_hours(&conn, from, kwh);
        let points: Vec<crate::grid::IntensityPoint> = factors
            .iter()
            .enumerate()
            .map(|(i, g)| crate::grid::IntensityPoint {
                zone: "FR".into(),
                start_ms: from + i as i64 * HOUR,
                end_ms: from + (i as i64 + 1) * HOUR,
                intensity: crate::grid::Intensity::Average(GramsPerKwh(*g)),
                basis: crate::grid::Basis::Lifecycle,
                estimated: false,
                source: "test".into(),
                retrieved_ms: from,
            })
            .collect();
        crate::grid::store::upsert_all(&mut conn, &points).unwrap();
        conn
    }

    fn add_hours(conn: &Connection, from: i64, kwh: &[f64]) {
        let mut p = crate::store::Pending::default();
        for (i, k) in kwh.iter().enumerate() {
            p.hour.insert(
                ("fac".into(), "meter:mains".into(), from + i as i64 * HOUR),
                crate::store::Amount {
                    measured: (k * 3.6e12) as u64,
                    estimated: 0,
                },
            );
        }
        let tx = conn.unchecked_transaction().unwrap();
        crate::store::add_energy(&tx, &p).unwrap();
        tx.commit().unwrap();
    }

    #[test]
    fn the_grid_meter_counter_gives_scope2_grams_as_hours_close() {
        let site: SiteConfig = toml::from_str(
            r#"
[[meters]]
name = "mains"
role = "grid-import"
sensors = [{ host = "fac", sensor = "meter:mains" }]
"#,
        )
        .unwrap();
        let carbon = CarbonConfig {
            zone: "FR".into(),
            ..CarbonConfig::default()
        };
        let h0 = NOON - 4 * HOUR;
        // Four hours of import; factors of 20, 40 and 80 g/kWh for the
        // first three, the static factor for the fourth (no series).
        let conn = grid_ledger(h0, &[10.0, 20.0, 30.0, 40.0], &[20.0, 40.0, 80.0]);
        let m = unused_metrics();
        m.set_meter_sensors(meter_sensors(&site));
        let grams = |m: &Metrics| {
            value(
                &m.encode(),
                r#"vigie_site_emissions_location_grams_total{meter="mains"}"#,
            )
        };
        let api = |from: i64, to: i64| {
            site::scope2(&conn, &site, &carbon, from, to)
                .unwrap()
                .0
                .location
                .0
        };
        let mut c = SiteEmissionCounter::new();
        // At 12:04 the 11:00 hour is not closed yet (5 minutes' grace).
        assert!(
            c.refresh(&conn, &site, &carbon, &m, NOON + 4 * MIN)
                .unwrap()
        );
        let g = grams(&m).unwrap();
        assert!((g - api(h0, NOON - HOUR)).abs() < 1e-9, "{g}");
        assert!(
            (g - (10.0 * 20.0 + 20.0 * 40.0 + 30.0 * 80.0)).abs() < 1e-9,
            "{g}"
        );
        // Nothing new: the ledger is not read again.
        assert!(
            !c.refresh(&conn, &site, &carbon, &m, NOON + 5 * MIN - 1)
                .unwrap()
        );
        // 12:05: the fourth hour closes, at the static factor as the API.
        assert!(
            c.refresh(&conn, &site, &carbon, &m, NOON + 6 * MIN)
                .unwrap()
        );
        let g = grams(&m).unwrap();
        assert!((g - api(h0, NOON)).abs() < 1e-9, "{g} vs {}", api(h0, NOON));
        assert!((g - (3400.0 + 40.0 * carbon.intensity_g_per_kwh)).abs() < 1e-9);
        // Late energy for a counted hour: the accepted reading marks it,
        // and the next refresh counts it at that hour's factor.
        add_hours(&conn, h0 + HOUR, &[5.0]);
        let mut batch = one_reading("fac");
        batch.readings[0].sensor = "meter:mains".into();
        batch.readings[0].start_ms = h0 + HOUR + 60_000;
        batch.readings[0].end_ms = h0 + HOUR + 65_000;
        m.accepted(&batch, NOON + 7 * MIN);
        assert!(
            c.refresh(&conn, &site, &carbon, &m, NOON + 7 * MIN)
                .unwrap()
        );
        let g = grams(&m).unwrap();
        assert!((g - api(h0, NOON)).abs() < 1e-9, "{g} vs {}", api(h0, NOON));
        assert!((g - (3600.0 + 40.0 * carbon.intensity_g_per_kwh)).abs() < 1e-9);
        // Two days on, the first hours are folded; a fresh counter (a
        // restart) reading the whole ledger gives the same grams.
        let later = NOON + 50 * HOUR;
        assert!(c.refresh(&conn, &site, &carbon, &m, later).unwrap());
        let fresh = unused_metrics();
        SiteEmissionCounter::new()
            .refresh(&conn, &site, &carbon, &fresh, later)
            .unwrap();
        assert!((grams(&fresh).unwrap() - grams(&m).unwrap()).abs() < 1e-9);
    }

    #[test]
    fn an_empty_site_exports_no_figures() {
        let m = unused_metrics();
        m.set_site("day", SiteGauges::default());
        m.set_targets(target_gauges(None, NOON));
        let text = m.encode();
        assert!(!text.contains("vigie_site_pue{"), "{text}");
        assert!(!text.contains("vigie_target_pue{"), "{text}");
        assert!(text.contains("vigie_target_renewable_share{"), "{text}");
    }
    #[test]
    fn a_zone_with_both_meters_has_its_partial_pue() {
        let conn = ledger();
        // Hall A: all of the grid import against the PDUs (1.5 / 1).
        let site: SiteConfig = toml::from_str(&format!(
            "{SITE}
[[meters]]
name = \"hall-a-total\"
role = \"zone-total\"
zone = \"hall-a\"
sensors = [{{ host = \"facility\", sensor = \"meter:mains\" }}]
[[meters]]
name = \"hall-a-it\"
role = \"zone-it\"
zone = \"hall-a\"
sensors = [{{ host = \"facility\", sensor = \"pdu:total\" }}]
"
        ))
        .unwrap();
        let m = unused_metrics();
        let now = NOON - 12 * HOUR + 3 * MIN + 20_000;
        refresh(
            &m,
            &conn,
            &site,
            &MarketConfig::default(),
            KpiPeriod::Day,
            now,
        )
        .unwrap();
        let text = m.encode();
        let ppue = value(
            &text,
            r#"vigie_site_ppue{zone="hall-a",period="day",quality="measured"}"#,
        );
        assert!(close(ppue, 1.5), "{text}");
        // Not mixed into the site's own PUE series.
        assert_eq!(text.matches("vigie_site_pue{").count(), 1, "{text}");
        // Without the zone, the series goes.
        let plain: SiteConfig = toml::from_str(SITE).unwrap();
        refresh(
            &m,
            &conn,
            &plain,
            &MarketConfig::default(),
            KpiPeriod::Day,
            now,
        )
        .unwrap();
        assert!(!m.encode().contains("vigie_site_ppue{"));
    }
}
