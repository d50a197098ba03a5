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

/// The power of every meter read from agent sensors, from the latest
/// power of each (registers and manual meters have none); a meter one of
/// whose sensors has not reported yet is left out.
pub fn meter_power(metrics: &Metrics, site: &SiteConfig) -> Vec<(String, &'static str, f64)> {
    site.meters
        .iter()
        .filter(|m| !m.sensors.is_empty() && !m.role.is_water())
        .filter_map(|m| {
            let w = m
                .sensors
                .iter()
                .map(|s| metrics.sensor_power(&s.host, &s.sensor))
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
    let state = Arc::new((site, carbon.market));
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
            let (metrics, db, state) = (metrics.clone(), db.clone(), state.clone());
            let result = tokio::task::spawn_blocking(move || {
                let (site, market) = &*state;
                let now = clock();
                metrics.set_targets(target_gauges(site.commissioned, now));
                metrics.set_site_power(&meter_power(&metrics, site));
                let conn = backend::open(&db)?;
                refresh(&metrics, &*conn, site, market, KpiPeriod::Day, now)?;
                if ytd {
                    refresh(&metrics, &*conn, site, market, KpiPeriod::YearToDate, now)?;
                }
                Ok::<(), SiteError>(())
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
    use vigie_energy::GramsPerKwh;
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
    fn meter_power_sums_the_latest_power_of_every_sensor() {
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
        let mut batch = one_reading("h");
        batch.readings[0].sensor = "pdu:1".into();
        batch.readings[0].power_w = Some(100.0);
        m.accepted(&batch, batch.readings[0].end_ms);
        // pdu:2 has not reported: no power for the meter yet.
        assert!(meter_power(&m, &site).is_empty());
        batch.readings[0].sensor = "pdu:2".into();
        batch.readings[0].power_w = Some(50.0);
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
        // 10 J at 50 g/kWh.
        let l = "vigie_site_emissions_location_grams_total{meter=\"mains\"} ".to_owned();
        assert!((value(l) - 10.0 / 3.6e6 * 50.0).abs() < 1e-12);
        assert!(!text.contains("role=\"water\""), "{text}");
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
