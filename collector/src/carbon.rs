//! Location-based emissions from the ledger and the stored grid series:
//! each hour's energy times that hour's average grid factor (the
//! time-weighted mean of the series points covering it), with the static
//! configured factor as a flagged fallback for hours no series covers.
//! Marginal factors never enter here: the store is queried for average
//! factors only, and `inventory_factor` refuses anything else.
//!
//! One basis per inventory: [`check_basis`] and the loaders refuse, at
//! start-up, any static factor, file, yearly table or live provider whose
//! average factors are of another basis than `[carbon] basis`, so every
//! gram of an inventory comes from factors of the one basis it states.

use crate::backend::{self, LedgerError, LedgerRead, grid_err};
use crate::config::CarbonConfig;
use crate::grid::store::{GridRead, GridWrite};
use crate::grid::{self, Basis, GridError, IntensityPoint};
use crate::store::Resolution;
use std::collections::BTreeMap;
use vigie_energy::{GramsCo2e, GramsPerKwh, HOUR_MS, Microjoules, emissions};

/// How an hour's factor is made and applied, stated by every output that
/// reports location-based grams (API, exports, dossier, metrics help).
pub const HOURLY_RULE: &str = "each hour's factor is the time-weighted mean of the stored average points of the inventory's basis covering that hour (a point longer than a day, such as a yearly average, only where no shorter point covers the hour; the static factor, flagged estimated, where nothing does), and it applies to all the energy of that hour, whether used over the whole hour or part of it";

/// A point longer than this is a period average (a yearly table): it
/// stands in only for hours that no shorter point covers.
const COARSE_MS: i64 = 24 * HOUR_MS;

/// Refuses, before anything is loaded, a configuration whose inventory
/// would mix bases: the static fallback factor, a yearly table or a live
/// provider of average factors of another basis than `carbon.basis`
/// (series files are checked as they load, by [`load_series_files`]).
/// A marginal provider (WattTime) feeds scheduling signals only and is
/// accepted whatever its basis.
pub fn check_basis(carbon: &CarbonConfig) -> Result<(), GridError> {
    let want = carbon.basis;
    if carbon.intensity_basis != want {
        return Err(GridError::Config(format!(
            "[carbon] the static factor ({} g/kWh, {}) is a {} figure but the inventory's basis is {}: an inventory uses one basis; set intensity_basis = \"{}\" with a {} figure in intensity_g_per_kwh, or basis = \"{}\"",
            carbon.intensity_g_per_kwh,
            carbon.source,
            carbon.intensity_basis.as_str(),
            want.as_str(),
            want.as_str(),
            want.as_str(),
            carbon.intensity_basis.as_str(),
        )));
    }
    for y in &carbon.yearly {
        if y.basis != want {
            return Err(GridError::Config(format!(
                "[[carbon.yearly]] {}: its figures are {} but the inventory's basis is {}; they would never be used (co2.js publishes life-cycle figures only)",
                y.path.display(),
                y.basis.as_str(),
                want.as_str()
            )));
        }
    }
    for l in &carbon.live {
        if let Some(b) = l.average_basis()
            && b != want
        {
            return Err(GridError::Config(format!(
                "[[carbon.live]] {}: it writes {} average factors but the inventory's basis is {}; they would never be used{}",
                l.name(),
                b.as_str(),
                want.as_str(),
                if l.electricity_maps.is_some() {
                    format!(" (set emission_factor_type = \"{}\")", want.as_str())
                } else {
                    String::new()
                }
            )));
        }
    }
    Ok(())
}

/// The factor used for one hour, and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct HourFactor {
    /// gCO2e/kWh.
    pub g_per_kwh: f64,
    /// `series:<source>` names, or `static` for the configured fallback.
    pub sources: Vec<String>,
    /// Any contributing value was an estimate (forecast, model, fallback
    /// year), or the hour was only partly covered.
    pub estimated: bool,
    /// The static fallback was used.
    pub fallback: bool,
}

/// The average factor of every hour of [`from_ms`, `to_ms`) (whole hours)
/// for `zone` and `basis`, from the stored series; hours without any
/// point get the static `fallback`.
pub fn hourly_factors(
    conn: &dyn GridRead,
    zone: &str,
    basis: Basis,
    fallback: GramsPerKwh,
    from_ms: i64,
    to_ms: i64,
) -> Result<BTreeMap<i64, HourFactor>, LedgerError> {
    let points = conn
        .grid_points(zone, from_ms, to_ms, &grid::store::Filter::inventory(basis))
        .map_err(grid_err)?;
    Ok(factors_from_points(&points, fallback, from_ms, to_ms))
}

/// The pure part of [`hourly_factors`]: see [`HOURLY_RULE`].
pub fn factors_from_points(
    points: &[IntensityPoint],
    fallback: GramsPerKwh,
    from_ms: i64,
    to_ms: i64,
) -> BTreeMap<i64, HourFactor> {
    let mut out = BTreeMap::new();
    // Period averages (yearly tables) apart: they only stand in where no
    // shorter point covers the hour, and kept out of the sweep, whose
    // window they would otherwise hold open for their whole span.
    let (coarse, fine): (Vec<&IntensityPoint>, Vec<&IntensityPoint>) = points
        .iter()
        .partition(|p| p.end_ms.saturating_sub(p.start_ms) > COARSE_MS);
    // A sweep: points in start order, so each hour looks only at those
    // from the first that has not ended yet to the first starting after
    // the hour (a year of half-hour points is ~17,500 points and ~8,760
    // hours: all pairs would be 150 million).
    let mut sorted = fine;
    sorted.sort_by_key(|p| p.start_ms);
    let mut first = 0;
    let mut hour = from_ms.div_euclid(HOUR_MS) * HOUR_MS;
    while hour < to_ms {
        let end = hour + HOUR_MS;
        while first < sorted.len() && sorted[first].end_ms <= hour {
            first += 1;
        }
        let window = sorted[first..].iter().take_while(|p| p.start_ms < end);
        let f = mean_over(window.copied(), hour)
            .or_else(|| mean_over(coarse.iter().copied(), hour))
            .unwrap_or_else(|| HourFactor {
                g_per_kwh: fallback.0,
                sources: vec!["static".into()],
                estimated: true,
                fallback: true,
            });
        out.insert(hour, f);
        hour = end;
    }
    out
}

/// The time-weighted mean of the average points of `points` over the hour
/// starting at `hour`, if any covers part of it.
fn mean_over<'a>(
    points: impl Iterator<Item = &'a IntensityPoint>,
    hour: i64,
) -> Option<HourFactor> {
    let end = hour + HOUR_MS;
    let (mut weight, mut sum) = (0i64, 0.0f64);
    let mut sources: Vec<String> = Vec::new();
    let mut estimated = false;
    for p in points {
        let overlap = p.end_ms.min(end) - p.start_ms.max(hour);
        let Ok(g) = p.inventory_factor() else {
            continue;
        };
        if overlap <= 0 {
            continue;
        }
        weight += overlap;
        sum += g.0 * overlap as f64;
        estimated |= p.estimated;
        let name = format!("series:{}", p.source);
        if !sources.contains(&name) {
            sources.push(name);
        }
    }
    (weight > 0).then(|| HourFactor {
        g_per_kwh: sum / weight as f64,
        sources,
        // A partly covered hour is the mean of what covers it.
        estimated: estimated || weight < HOUR_MS,
        fallback: false,
    })
}

/// One host's energy and emissions in one hour.
#[derive(Debug, Clone, PartialEq)]
pub struct HostHour {
    /// Host.
    pub host: String,
    /// Hour start, ms.
    pub hour_ms: i64,
    /// Energy, measured and estimated.
    pub energy: Microjoules,
    /// Of which estimated.
    pub estimated_energy: Microjoules,
    /// Location-based emissions.
    pub emissions: GramsCo2e,
    /// The hour's factor is an estimate (the static fallback, a forecast,
    /// a partly covered hour).
    pub factor_estimated: bool,
}

impl HostHour {
    /// The grams are an estimate: estimated energy or an estimated factor.
    pub fn estimated(&self) -> bool {
        self.estimated_energy.0 > 0 || self.factor_estimated
    }
}

/// Location-based emissions per host and hour over [`from_ms`, `to_ms`)
/// (widened to whole hours), with the factor of each hour that has energy
/// (and only those: a fallback counts where it was applied). A sensor its
/// host's inventory marks as a component or an alternative is left out,
/// as in every host total.
pub fn location_based(
    conn: &dyn backend::Db,
    carbon: &CarbonConfig,
    from_ms: i64,
    to_ms: i64,
) -> Result<(Vec<HostHour>, BTreeMap<i64, HourFactor>), LedgerError> {
    let from = from_ms.div_euclid(HOUR_MS) * HOUR_MS;
    let to = (to_ms + HOUR_MS - 1).div_euclid(HOUR_MS) * HOUR_MS;
    let uncounted = conn.uncounted_sensors()?;
    // (host, hour) -> (measured, estimated) µJ of the counted sensors.
    let mut sums: BTreeMap<(String, i64), (u128, u128)> = BTreeMap::new();
    for r in conn.energy(Resolution::Hour, from, to, true, true)? {
        let Some(hour) = r.bucket_ms else { continue };
        let part = r
            .sensor
            .as_ref()
            .is_some_and(|x| uncounted.get(&r.host).is_some_and(|u| u.contains(x)));
        if part {
            continue;
        }
        let e = sums.entry((r.host, hour)).or_default();
        e.0 += r.amount.measured;
        e.1 += r.amount.estimated;
    }
    let (first, last) = sums.keys().fold((i64::MAX, i64::MIN), |(a, b), (_, h)| {
        (a.min(*h), b.max(*h))
    });
    // Only the hours with energy need a factor.
    let mut factors = if first <= last {
        hourly_factors(
            conn,
            &carbon.zone,
            carbon.basis,
            GramsPerKwh(carbon.intensity_g_per_kwh),
            first,
            last + HOUR_MS,
        )?
    } else {
        BTreeMap::new()
    };
    let with_energy: std::collections::BTreeSet<i64> = sums.keys().map(|(_, h)| *h).collect();
    factors.retain(|h, _| with_energy.contains(h));
    let out = sums
        .into_iter()
        .filter_map(|((host, hour), (m, e))| {
            let f = factors.get(&hour)?;
            // One host's hour: far inside u64 µJ (5 GWh).
            let narrow = |uj: u128| Microjoules(u64::try_from(uj).unwrap_or(u64::MAX));
            let energy = narrow(m + e);
            Some(HostHour {
                host,
                hour_ms: hour,
                energy,
                estimated_energy: narrow(e),
                emissions: emissions(energy, GramsPerKwh(f.g_per_kwh)),
                factor_estimated: f.estimated,
            })
        })
        .collect();
    Ok((out, factors))
}

/// How long after its end an hour is counted by the emission counters:
/// the batches of its last seconds reach the ledger within it, so that
/// an hour is rarely counted twice. Energy arriving later still counts
/// (see [`EmissionCounters`]).
pub const CLOSE_GRACE_MS: i64 = 5 * 60_000;

/// Closed hours whose per-hour grams are kept to take late energy in
/// without reading the whole ledger again.
const RECOUNT_WINDOW_MS: i64 = 48 * HOUR_MS;

/// The Prometheus emission counters (`vigie_emissions_location_grams`,
/// and its estimated part) kept equal to what `/api/v1/emissions` gives
/// for the closed hours: each refresh reads the ledger's hour buckets
/// through [`location_based`] (the same hourly factors, the same counted
/// sensors) and sets each host's counter to its total.
///
/// The hours before the last [`RECOUNT_WINDOW_MS`] are folded into a base
/// per host; energy accepted for an hour before that (a spool emptied
/// after a long outage) makes the next refresh read the whole ledger
/// again. The caller passes the time: no clock here.
#[derive(Debug, Default)]
pub struct EmissionCounters {
    /// Hours before this are in `base`.
    base_until: i64,
    /// Per host, grams and estimated grams of the hours before `base_until`.
    base: BTreeMap<String, (f64, f64)>,
    /// Hours before this were counted by the last refresh (0: none yet).
    counted_until: i64,
}

impl EmissionCounters {
    /// Counters that have counted nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The end of the last hour counted at `now_ms`.
    pub fn closed_until(now_ms: i64) -> i64 {
        (now_ms - CLOSE_GRACE_MS).div_euclid(HOUR_MS) * HOUR_MS
    }

    /// Brings the counters up to date at `now_ms`; returns whether the
    /// ledger was read (an hour closed, late energy, or the first call).
    pub fn refresh(
        &mut self,
        conn: &dyn backend::Db,
        carbon: &CarbonConfig,
        metrics: &crate::metrics::Metrics,
        now_ms: i64,
    ) -> Result<bool, LedgerError> {
        let closed = Self::closed_until(now_ms);
        // Taken before the ledger is read: a batch committed after the
        // read marks the next refresh.
        let dirty = metrics.take_emissions_dirty();
        let first = self.counted_until == 0;
        if !first && closed <= self.counted_until && dirty >= self.counted_until {
            return Ok(false);
        }
        if first || dirty < self.base_until {
            self.base_until = 0;
            self.base.clear();
        }
        let from = self.base_until;
        let to = closed.max(from);
        let (rows, _) = if from < to {
            location_based(conn, carbon, from, to)?
        } else {
            (Vec::new(), BTreeMap::new())
        };
        let fold_until = (to - RECOUNT_WINDOW_MS).max(self.base_until);
        let mut totals = self.base.clone();
        for r in &rows {
            let est = if r.estimated() { r.emissions.0 } else { 0.0 };
            let t = totals.entry(r.host.clone()).or_default();
            t.0 += r.emissions.0;
            t.1 += est;
            if r.hour_ms < fold_until {
                let b = self.base.entry(r.host.clone()).or_default();
                b.0 += r.emissions.0;
                b.1 += est;
            }
        }
        self.base_until = fold_until;
        for (host, (g, est)) in &totals {
            metrics.set_host_emissions(host, *g, *est);
        }
        self.counted_until = to.max(1);
        Ok(true)
    }
}

/// Refreshes the emission counters every minute from the ledger at `db`
/// (a connection of its own, in a blocking task); `clock` gives the time.
pub fn spawn_emission_counters(
    metrics: std::sync::Arc<crate::metrics::Metrics>,
    db: std::path::PathBuf,
    carbon: CarbonConfig,
    clock: fn() -> i64,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let state = std::sync::Arc::new(std::sync::Mutex::new(EmissionCounters::new()));
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let (metrics, db, carbon, state) =
                (metrics.clone(), db.clone(), carbon.clone(), state.clone());
            let done = tokio::task::spawn_blocking(move || {
                let conn = backend::open(&db)?;
                let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
                s.refresh(&*conn, &carbon, &metrics, clock())
            })
            .await;
            match done {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "emission counters: reading the ledger failed; retrying in a minute")
                }
                Err(e) => tracing::warn!(error = %e, "emission counters task failed"),
            }
        }
    })
}

/// Loads the configured series files into the grid table; returns the
/// points written.
pub fn load_series_files(
    conn: &mut dyn GridWrite,
    carbon: &CarbonConfig,
    now_ms: i64,
) -> Result<usize, grid::GridError> {
    let mut n = 0;
    for f in &carbon.series {
        let zone = f.zone.as_deref().unwrap_or(&carbon.zone);
        let s = grid::Series::load(&f.path, f.format, zone, now_ms)?;
        let (usable, other) = s
            .points()
            .iter()
            .filter(|p| p.factor() == grid::Factor::Average)
            .fold((0usize, 0usize), |(u, o), p| {
                if p.basis == carbon.basis {
                    (u + 1, o)
                } else {
                    (u, o + 1)
                }
            });
        if usable == 0 && other > 0 {
            return Err(GridError::Config(format!(
                "[[carbon.series]] {}: its {other} points are {} factors but the inventory's basis is {}; none would ever be used (set [carbon] basis = \"{}\" with a static factor of that basis, or leave the file out)",
                f.path.display(),
                other_basis(carbon.basis).as_str(),
                carbon.basis.as_str(),
                other_basis(carbon.basis).as_str(),
            )));
        }
        let written = conn
            .upsert_grid_points(s.points())
            .map_err(|e| grid::GridError::Io {
                path: f.path.display().to_string(),
                source: std::io::Error::other(e.to_string()),
            })?;
        tracing::info!(file = %f.path.display(), zone, points = s.points().len(), skipped_rows = s.skipped_rows(), written, "grid intensity series loaded");
        if other > 0 {
            // A file with both columns (Electricity Maps CSV): the other
            // basis is kept with its provenance but never enters the grams.
            tracing::info!(file = %f.path.display(), points = other, basis = other_basis(carbon.basis).as_str(), inventory_basis = carbon.basis.as_str(), "points of the other basis stored, not used by the inventory");
        }
        n += written;
    }
    Ok(n)
}

fn other_basis(b: Basis) -> Basis {
    match b {
        Basis::Direct => Basis::Lifecycle,
        Basis::Lifecycle => Basis::Direct,
    }
}

/// Loads the configured yearly tables (`[[carbon.yearly]]`) into the grid
/// table: one point per table, its zone over its calendar year. Returns
/// the points written. A zone the table lacks is a configuration error.
pub fn load_yearly_files(
    conn: &mut dyn GridWrite,
    carbon: &CarbonConfig,
    now_ms: i64,
) -> Result<usize, GridError> {
    let mut points = Vec::new();
    for y in &carbon.yearly {
        let zone = y.zone.as_deref().unwrap_or(&carbon.zone);
        let bytes = std::fs::read(&y.path).map_err(|source| GridError::Io {
            path: y.path.display().to_string(),
            source,
        })?;
        let mut table = grid::YearlyTable::new(grid::fixed::CO2JS_SOURCE, y.basis, now_ms);
        table.add_co2js_json(&bytes, y.year)?;
        let p = table
            .get(zone, y.year)
            .and_then(|_| table.point(zone, y.year))
            .ok_or_else(|| GridError::UnknownZone {
                provider: format!("{} ({})", grid::fixed::CO2JS_SOURCE, y.path.display()),
                zone: zone.to_owned(),
            })?;
        tracing::info!(file = %y.path.display(), zone, year = y.year, g_per_kwh = p.signal().0, basis = y.basis.as_str(), "yearly grid factor loaded");
        points.push(p);
    }
    conn.upsert_grid_points(&points).map_err(|e| GridError::Io {
        path: "grid table".into(),
        source: std::io::Error::other(e.to_string()),
    })
}

/// Where a host sits, from its retained inventory: (room, rack).
pub fn host_places(
    conn: &dyn LedgerRead,
) -> Result<BTreeMap<String, (String, String)>, LedgerError> {
    let mut out = BTreeMap::new();
    for h in conn.hosts()? {
        let rack = h
            .meta
            .as_deref()
            .and_then(|m| serde_json::from_str::<serde_json::Value>(m).ok())
            .and_then(|v| {
                let r = v.get("rack")?;
                Some((
                    r.get("room")?.as_str()?.to_owned(),
                    r.get("rack")?.as_str()?.to_owned(),
                ))
            });
        if let Some(p) = rack {
            out.insert(h.host, p);
        }
    }
    Ok(out)
}

/// The site's effective market-based factor of each hour (market grams
/// over the site's consumption that hour), to allocate market-based
/// emissions to hosts, racks and rooms by their consumption. Hours without
/// site consumption have none.
pub fn market_factors(report: &vigie_energy::Scope2Report) -> BTreeMap<i64, f64> {
    report
        .hours
        .iter()
        .filter_map(|h| {
            let kwh = h.consumption().as_kwh();
            (kwh > 0.0).then(|| (h.start_ms, h.market.0 / kwh))
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::grid::Intensity;
    use crate::store;
    use rusqlite::Connection;

    fn point(start: i64, end: i64, g: f64, estimated: bool) -> IntensityPoint {
        IntensityPoint {
            zone: "FR".into(),
            start_ms: start,
            end_ms: end,
            intensity: Intensity::Average(GramsPerKwh(g)),
            basis: Basis::Direct,
            estimated,
            source: "rte-eco2mix".into(),
            retrieved_ms: 0,
        }
    }

    #[test]
    fn hours_take_the_time_weighted_mean_or_the_flagged_fallback() {
        let q = 15 * 60_000;
        // Hour 0: four quarters 70, 72, 71, 69 -> 70.5. Hour 1: nothing.
        let pts = [
            point(0, q, 70.0, false),
            point(q, 2 * q, 72.0, false),
            point(2 * q, 3 * q, 71.0, false),
            point(3 * q, 4 * q, 69.0, false),
        ];
        let f = factors_from_points(&pts, GramsPerKwh(33.0), 0, 2 * HOUR_MS);
        assert_eq!(f[&0].g_per_kwh, 70.5);
        assert!(!f[&0].estimated && !f[&0].fallback);
        assert_eq!(f[&0].sources, ["series:rte-eco2mix"]);
        assert_eq!((f[&HOUR_MS].g_per_kwh, f[&HOUR_MS].fallback), (33.0, true));
        // Half an hour covered: the mean of that half, flagged estimated.
        let f = factors_from_points(&pts[..2], GramsPerKwh(33.0), 0, HOUR_MS);
        assert_eq!(f[&0].g_per_kwh, 71.0);
        assert!(f[&0].estimated);
        // Marginal points never count.
        let mut m = point(0, HOUR_MS, 500.0, false);
        m.intensity = Intensity::Marginal(GramsPerKwh(500.0));
        let f = factors_from_points(&[m], GramsPerKwh(33.0), 0, HOUR_MS);
        assert!(f[&0].fallback);
    }
    fn carbon(toml_text: &str) -> CarbonConfig {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn an_inventory_takes_factors_of_one_basis_only() {
        // The defaults agree: the built-in 33 g/kWh is a life-cycle figure.
        let d = CarbonConfig::default();
        assert_eq!(
            (d.basis, d.intensity_basis),
            (Basis::Lifecycle, Basis::Lifecycle)
        );
        check_basis(&d).unwrap();
        // A direct inventory over the built-in (life-cycle) fallback: refused.
        let err = check_basis(&carbon("basis = \"direct\"")).unwrap_err();
        assert!(err.to_string().contains("intensity_basis"), "{err}");
        check_basis(&carbon(
            "basis = \"direct\"\nintensity_basis = \"direct\"\nintensity_g_per_kwh = 20.0",
        ))
        .unwrap();
        // A yearly table of the other basis.
        let err = check_basis(&carbon(
            "basis = \"direct\"\nintensity_basis = \"direct\"\n[[yearly]]\npath = \"y.json\"\nyear = 2024\n",
        ))
        .unwrap_err();
        assert!(err.to_string().contains("y.json"), "{err}");
        // Live providers: Electricity Maps life-cycle (its default) into a
        // direct inventory is refused, eCO2mix (direct) into a life-cycle
        // one too; a marginal provider feeds signals only and passes.
        let em = "[[live]]\n[live.electricity_maps]\ntoken_file = \"t\"\n";
        let err = check_basis(&carbon(&format!(
            "basis = \"direct\"\nintensity_basis = \"direct\"\n{em}"
        )))
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("emission_factor_type = \"direct\""),
            "{err}"
        );
        check_basis(&carbon(em)).unwrap();
        assert!(check_basis(&carbon("[[live]]\n[live.odre]\n")).is_err());
        check_basis(&carbon(
            "[[live]]\n[live.watttime]\nusername = \"u\"\npassword_file = \"p\"\n",
        ))
        .unwrap();
    }

    #[test]
    fn a_yearly_average_stands_in_only_where_no_shorter_point_covers_the_hour() {
        let q = 15 * 60_000;
        let mut year = point(-HOUR_MS * 24 * 10, HOUR_MS * 24 * 355, 33.0, false);
        year.source = "electricitymaps-yearly".into();
        let pts = [year, point(0, q, 70.0, false), point(q, 2 * q, 72.0, false)];
        let f = factors_from_points(&pts, GramsPerKwh(1.0), 0, 2 * HOUR_MS);
        // Hour 0: half covered by 15-minute points: their mean, estimated,
        // not averaged with the yearly figure.
        assert_eq!(f[&0].g_per_kwh, 71.0);
        assert_eq!(f[&0].sources, ["series:rte-eco2mix"]);
        assert!(f[&0].estimated);
        // Hour 1: the yearly figure, not the static fallback.
        assert_eq!(f[&HOUR_MS].g_per_kwh, 33.0);
        assert_eq!(f[&HOUR_MS].sources, ["series:electricitymaps-yearly"]);
        assert!(!f[&HOUR_MS].fallback && !f[&HOUR_MS].estimated);
    }

    const T0: i64 = 1_800_000_000_000; // a whole hour
    const KWH: u64 = 3_600_000_000_000;

    fn add_hour(conn: &Connection, host: &str, hour: i64, kwh: u64) {
        let mut p = store::Pending::default();
        p.hour.insert(
            (host.into(), "pdu:outlet".into(), hour),
            store::Amount {
                measured: kwh * KWH,
                estimated: 0,
            },
        );
        let tx = conn.unchecked_transaction().unwrap();
        store::add_energy(&tx, &p).unwrap();
        tx.commit().unwrap();
    }

    /// What the writer tells the metrics after committing energy that
    /// starts at `start_ms`.
    fn accepted(m: &crate::metrics::Metrics, host: &str, start_ms: i64) {
        let mut b = vigie_protocol::samples::telemetry();
        b.host = host.into();
        b.readings.truncate(1);
        b.readings[0].start_ms = start_ms;
        b.readings[0].end_ms = start_ms + 1_000;
        m.accepted(&b, start_ms);
    }

    fn counter(m: &crate::metrics::Metrics, name: &str, host: &str) -> f64 {
        let text = m.encode();
        let key = format!("{name}_total{{host=\"{host}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&key))
            .unwrap_or_else(|| panic!("no {key} in\n{text}"))
            .parse()
            .unwrap()
    }

    /// The API's figure: per host, the sum of `location_based` over the
    /// closed hours, and of its rows flagged estimated.
    fn api_total(conn: &Connection, c: &CarbonConfig, host: &str, to: i64) -> (f64, f64) {
        let (rows, _) = location_based(conn, c, 0, to).unwrap();
        rows.iter()
            .filter(|r| r.host == host)
            .fold((0.0, 0.0), |(g, e), r| {
                (
                    g + r.emissions.0,
                    e + if r.estimated() { r.emissions.0 } else { 0.0 },
                )
            })
    }

    #[test]
    fn the_emission_counters_follow_the_apis_hourly_factors_as_hours_close() {
        let conn = store::open_in_memory().unwrap();
        grid::store::init(&conn).unwrap();
        let c = CarbonConfig::default(); // static 33 g/kWh
        // A series of 100 g/kWh over hour 0 only.
        let mut p = point(T0, T0 + HOUR_MS, 100.0, false);
        p.basis = c.basis;
        grid::store::upsert(&conn, &[p]).unwrap();
        let m = crate::metrics::Metrics::new(&c.zone, GramsPerKwh(c.intensity_g_per_kwh));
        // Long ago (beyond the recount window), hour 0 (series), hour 1
        // (fallback), hour 2 (still open).
        let old = T0 - 100 * HOUR_MS;
        for (h, kwh) in [(old, 1), (T0, 2), (T0 + HOUR_MS, 3), (T0 + 2 * HOUR_MS, 5)] {
            add_hour(&conn, "h", h, kwh);
            accepted(&m, "h", h);
        }
        // Before any hour is counted the series exists, at zero.
        assert_eq!(counter(&m, "vigie_emissions_location_grams", "h"), 0.0);
        let mut counters = EmissionCounters::new();
        let now = T0 + 2 * HOUR_MS + CLOSE_GRACE_MS;
        assert!(counters.refresh(&conn, &c, &m, now).unwrap());
        let closed = T0 + 2 * HOUR_MS;
        let (g, est) = api_total(&conn, &c, "h", closed);
        // 1 x 33 + 2 x 100 + 3 x 33: the open hour is not counted yet.
        assert!((g - 332.0).abs() < 1e-9, "{g}");
        assert_eq!(counter(&m, "vigie_emissions_location_grams", "h"), g);
        // The fallback hours' grams are the estimated part.
        assert!((est - 132.0).abs() < 1e-9, "{est}");
        assert_eq!(
            counter(&m, "vigie_emissions_location_estimated_grams", "h"),
            est
        );
        // Nothing new: the ledger is not read again.
        assert!(!counters.refresh(&conn, &c, &m, now + 60_000).unwrap());
        // Late energy for hour 0 (inside the window) and for the old hour
        // (folded into the base: the whole ledger is read again).
        for h in [T0, old] {
            add_hour(&conn, "h", h, 1);
            accepted(&m, "h", h);
            assert!(counters.refresh(&conn, &c, &m, now + 60_000).unwrap());
            let (g, est) = api_total(&conn, &c, "h", closed);
            assert!((counter(&m, "vigie_emissions_location_grams", "h") - g).abs() < 1e-9);
            assert!(
                (counter(&m, "vigie_emissions_location_estimated_grams", "h") - est).abs() < 1e-9
            );
        }
        // 1 x 33 more for the old hour, 100 for hour 0.
        assert!((counter(&m, "vigie_emissions_location_grams", "h") - 465.0).abs() < 1e-9);
        // The next hour closes: its grams join.
        assert!(counters.refresh(&conn, &c, &m, now + HOUR_MS).unwrap());
        let (g, _) = api_total(&conn, &c, "h", closed + HOUR_MS);
        assert!((g - 630.0).abs() < 1e-9, "{g}");
        assert!((counter(&m, "vigie_emissions_location_grams", "h") - g).abs() < 1e-9);
    }

    #[test]
    fn the_sweep_matches_every_point_against_every_hour() {
        // Irregular, overlapping, unsorted points, one spanning days.
        let m = 60_000;
        let mut pts = vec![point(0, 3 * 24 * HOUR_MS, 300.0, false)];
        let mut x: i64 = 7;
        for i in 0..400 {
            x = (x * 1_103_515_245 + 12_345) % 2_147_483_648;
            let start = (x % (48 * 60)) * m;
            let len = (15 + x % 200) * m;
            pts.push(point(
                start,
                start + len,
                20.0 + (i % 50) as f64,
                i % 3 == 0,
            ));
        }
        pts.push(point(5 * HOUR_MS, 5 * HOUR_MS + 30 * m, 99.0, false));
        // Every point against every hour: the shorter points' mean, else
        // the longer ones' (the 3-day point), else the fallback.
        let naive = |hour: i64| {
            let end = hour + HOUR_MS;
            let mean = |long: bool| {
                let (mut w, mut sum) = (0i64, 0.0);
                for p in pts
                    .iter()
                    .filter(|p| (p.end_ms - p.start_ms > COARSE_MS) == long)
                {
                    let o = p.end_ms.min(end) - p.start_ms.max(hour);
                    if o > 0 {
                        w += o;
                        sum += p.inventory_factor().unwrap().0 * o as f64;
                    }
                }
                (w > 0).then(|| sum / w as f64)
            };
            mean(false).or_else(|| mean(true)).unwrap_or(1.0)
        };
        let f = factors_from_points(&pts, GramsPerKwh(1.0), 0, 60 * HOUR_MS);
        assert_eq!(f.len(), 60);
        for (h, v) in &f {
            assert!((v.g_per_kwh - naive(*h)).abs() < 1e-9, "hour {h}");
        }
    }
}
