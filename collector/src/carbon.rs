//! Location-based emissions from the ledger and the stored grid series:
//! each hour's energy times that hour's average grid factor (the
//! time-weighted mean of the series points covering it), with the static
//! configured factor as a flagged fallback for hours no series covers.
//! Marginal factors never enter here: the store is queried for average
//! factors only, and `inventory_factor` refuses anything else.

use crate::config::CarbonConfig;
use crate::grid::{self, Basis, IntensityPoint};
use crate::store::{self, Resolution};
use rusqlite::Connection;
use std::collections::BTreeMap;
use vigie_energy::{GramsCo2e, GramsPerKwh, HOUR_MS, Microjoules, emissions};

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
    conn: &Connection,
    zone: &str,
    basis: Basis,
    fallback: GramsPerKwh,
    from_ms: i64,
    to_ms: i64,
) -> Result<BTreeMap<i64, HourFactor>, rusqlite::Error> {
    let points = grid::store::overlapping(
        conn,
        zone,
        from_ms,
        to_ms,
        &grid::store::Filter::inventory(basis),
    )?;
    Ok(factors_from_points(&points, fallback, from_ms, to_ms))
}

/// The pure part of [`hourly_factors`].
pub fn factors_from_points(
    points: &[IntensityPoint],
    fallback: GramsPerKwh,
    from_ms: i64,
    to_ms: i64,
) -> BTreeMap<i64, HourFactor> {
    let mut out = BTreeMap::new();
    // A sweep: points in start order, so each hour looks only at those
    // from the first that has not ended yet to the first starting after
    // the hour (a year of half-hour points is ~17,500 points and ~8,760
    // hours: all pairs would be 150 million).
    let mut sorted: Vec<&IntensityPoint> = points.iter().collect();
    sorted.sort_by_key(|p| p.start_ms);
    let mut first = 0;
    let mut hour = from_ms.div_euclid(HOUR_MS) * HOUR_MS;
    while hour < to_ms {
        let end = hour + HOUR_MS;
        let (mut weight, mut sum) = (0i64, 0.0f64);
        let mut sources: Vec<String> = Vec::new();
        let mut estimated = false;
        while first < sorted.len() && sorted[first].end_ms <= hour {
            first += 1;
        }
        for p in sorted[first..].iter().take_while(|p| p.start_ms < end) {
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
        let f = if weight > 0 {
            HourFactor {
                g_per_kwh: sum / weight as f64,
                sources,
                // A partly covered hour is the mean of what covers it.
                estimated: estimated || weight < HOUR_MS,
                fallback: false,
            }
        } else {
            HourFactor {
                g_per_kwh: fallback.0,
                sources: vec!["static".into()],
                estimated: true,
                fallback: true,
            }
        };
        out.insert(hour, f);
        hour = end;
    }
    out
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
}

/// Location-based emissions per host and hour over [`from_ms`, `to_ms`).
pub fn location_based(
    conn: &Connection,
    carbon: &CarbonConfig,
    from_ms: i64,
    to_ms: i64,
) -> Result<(Vec<HostHour>, BTreeMap<i64, HourFactor>), rusqlite::Error> {
    let from = from_ms.div_euclid(HOUR_MS) * HOUR_MS;
    let to = (to_ms + HOUR_MS - 1).div_euclid(HOUR_MS) * HOUR_MS;
    let rows = store::energy(conn, Resolution::Hour, from, to, false, true)?;
    let (first, last) = rows
        .iter()
        .filter_map(|r| r.bucket_ms)
        .fold((i64::MAX, i64::MIN), |(a, b), h| (a.min(h), b.max(h)));
    // Only the hours with energy need a factor.
    let factors = if first <= last {
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
    let out = rows
        .iter()
        .filter_map(|r| {
            let hour = r.bucket_ms?;
            let f = factors.get(&hour)?;
            // One host's hour: far inside u64 µJ (5 GWh).
            let narrow = |uj: u128| Microjoules(u64::try_from(uj).unwrap_or(u64::MAX));
            let energy = narrow(r.amount.measured + r.amount.estimated);
            Some(HostHour {
                host: r.host.clone(),
                hour_ms: hour,
                energy,
                estimated_energy: narrow(r.amount.estimated),
                emissions: emissions(energy, GramsPerKwh(f.g_per_kwh)),
            })
        })
        .collect();
    Ok((out, factors))
}

/// Loads the configured series files into the grid table; returns the
/// points written.
pub fn load_series_files(
    conn: &mut Connection,
    carbon: &CarbonConfig,
    now_ms: i64,
) -> Result<usize, grid::GridError> {
    let mut n = 0;
    for f in &carbon.series {
        let zone = f.zone.as_deref().unwrap_or(&carbon.zone);
        let s = grid::Series::load(&f.path, f.format, zone, now_ms)?;
        let written =
            grid::store::upsert_all(conn, s.points()).map_err(|e| grid::GridError::Io {
                path: f.path.display().to_string(),
                source: std::io::Error::other(e.to_string()),
            })?;
        tracing::info!(file = %f.path.display(), zone, points = s.points().len(), skipped_rows = s.skipped_rows(), written, "grid intensity series loaded");
        n += written;
    }
    Ok(n)
}

/// Where a host sits, from its retained inventory: (room, rack).
pub fn host_places(
    conn: &Connection,
) -> Result<BTreeMap<String, (String, String)>, rusqlite::Error> {
    let mut out = BTreeMap::new();
    for h in store::hosts(conn)? {
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
        let naive = |hour: i64| {
            let end = hour + HOUR_MS;
            let (mut w, mut sum) = (0i64, 0.0);
            for p in &pts {
                let o = p.end_ms.min(end) - p.start_ms.max(hour);
                if o > 0 {
                    w += o;
                    sum += p.inventory_factor().unwrap().0 * o as f64;
                }
            }
            sum / w as f64
        };
        let f = factors_from_points(&pts, GramsPerKwh(1.0), 0, 60 * HOUR_MS);
        assert_eq!(f.len(), 60);
        for (h, v) in &f {
            assert!((v.g_per_kwh - naive(*h)).abs() < 1e-9, "hour {h}");
        }
    }
}
