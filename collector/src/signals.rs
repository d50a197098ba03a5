//! Carbon signals for schedulers: the Green Software Foundation Carbon
//! Aware SDK web API shapes (so Kubernetes and batch tools that speak it
//! work unchanged), native signals (the site's effective intensity, the
//! best start for a job), and the forecast as the ConfigMap the
//! carbon-aware KEDA operator reads.
//!
//! Signals may use marginal factors (that is what they are for); with
//! both kinds stored, `factor` picks (marginal by default when present).

use crate::backend::{LedgerError, grid_err};
use crate::grid::store::GridRead;
use crate::grid::{self, Factor, IntensityPoint};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// One point in Carbon Aware SDK shape.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EmissionsData {
    /// Location (a grid zone here).
    pub location: String,
    /// Start, RFC 3339.
    pub time: String,
    /// gCO2e/kWh.
    pub rating: f64,
    /// Length, `hh:mm:ss`.
    pub duration: String,
}

/// The SDK's `hh:mm:ss` durations.
pub fn timespan(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    format!("{:02}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
}

/// Which factor a signal uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// Marginal when the zone has it, else average.
    Prefer,
    /// Average only.
    Average,
    /// Marginal only.
    Marginal,
}

impl Want {
    /// Parses `average`, `marginal`, or nothing.
    pub fn parse(s: Option<&str>) -> Option<Want> {
        match s {
            None => Some(Want::Prefer),
            Some("average") => Some(Want::Average),
            Some("marginal") => Some(Want::Marginal),
            _ => None,
        }
    }
}

/// The stored points of `zone` meeting [`from`, `to`), of the wanted
/// kind, one per start time (the latest retrieval wins, sources merged).
pub fn points(
    conn: &dyn GridRead,
    zone: &str,
    from_ms: i64,
    to_ms: i64,
    want: Want,
) -> Result<Vec<IntensityPoint>, LedgerError> {
    let all = conn
        .grid_points(zone, from_ms, to_ms, &grid::store::Filter::default())
        .map_err(grid_err)?;
    Ok(select(all, want))
}

/// [`points`] from every stored point meeting the period (any kind, any
/// source), in store order.
pub fn select(all: Vec<IntensityPoint>, want: Want) -> Vec<IntensityPoint> {
    let has_marginal = all.iter().any(|p| p.factor() == Factor::Marginal);
    let keep = |p: &IntensityPoint| match want {
        Want::Average => p.factor() == Factor::Average,
        Want::Marginal => p.factor() == Factor::Marginal,
        Want::Prefer => {
            p.factor()
                == if has_marginal {
                    Factor::Marginal
                } else {
                    Factor::Average
                }
        }
    };
    let mut v: Vec<IntensityPoint> = all.into_iter().filter(keep).collect();
    v.sort_by(|a, b| {
        a.start_ms
            .cmp(&b.start_ms)
            .then(b.retrieved_ms.cmp(&a.retrieved_ms))
    });
    v.dedup_by_key(|p| p.start_ms);
    v
}

/// What the cache holds of one zone: every stored point meeting a span
/// around the time it was loaded.
#[derive(Debug)]
struct Cached {
    generation: u64,
    loaded_ms: i64,
    from_ms: i64,
    to_ms: i64,
    all: Arc<Vec<IntensityPoint>>,
}

/// The grid points of the signal routes, kept in memory: schedulers ask
/// the same questions about the next hours thousands of times a minute,
/// and the answer changes only when new points are stored. A zone's
/// points from two days back to eight days ahead are loaded once and
/// reloaded after any write of grid points in this process
/// ([`grid::store::generation`]) or after [`PointsCache::TTL_MS`] (for
/// writes by another process). Queries reaching outside that span go to
/// the store.
#[derive(Debug)]
pub struct PointsCache {
    zones: Mutex<HashMap<String, Cached>>,
    generation: GenerationSource,
}

/// Where a [`PointsCache`] reads the write generation of the grid points:
/// [`grid::store::generation`] unless a test gives its own, so that grid
/// writes by other tests of the same process cannot make its copy stale.
pub type GenerationSource = fn() -> u64;

impl Default for PointsCache {
    fn default() -> Self {
        Self::with_generation(grid::store::generation)
    }
}

impl PointsCache {
    /// An empty cache that reads the write generation from `generation`.
    pub fn with_generation(generation: GenerationSource) -> Self {
        Self {
            zones: Mutex::default(),
            generation,
        }
    }

    /// Longest a loaded copy is used, ms.
    pub const TTL_MS: i64 = 30_000;
    const BEFORE_MS: i64 = 2 * 86_400_000;
    const AFTER_MS: i64 = 8 * 86_400_000;

    /// [`points`] from memory, if the cache holds a fresh copy covering
    /// the query.
    pub fn get(
        &self,
        zone: &str,
        from_ms: i64,
        to_ms: i64,
        want: Want,
        now_ms: i64,
    ) -> Option<Vec<IntensityPoint>> {
        let zones = self.zones.lock().ok()?;
        let c = zones.get(zone)?;
        let fresh = c.generation == (self.generation)()
            && (0..Self::TTL_MS).contains(&(now_ms - c.loaded_ms));
        if !fresh || from_ms < c.from_ms || to_ms > c.to_ms {
            return None;
        }
        let all = c.all.clone();
        drop(zones);
        let meeting: Vec<IntensityPoint> = all
            .iter()
            .filter(|p| p.end_ms > from_ms && p.start_ms < to_ms)
            .cloned()
            .collect();
        Some(select(meeting, want))
    }

    /// Whether a query of `[from_ms, to_ms)` at `now_ms` lies in the span
    /// a load covers.
    pub fn covers(from_ms: i64, to_ms: i64, now_ms: i64) -> bool {
        from_ms >= now_ms - Self::BEFORE_MS && to_ms <= now_ms + Self::AFTER_MS
    }

    /// Loads `zone`'s span around `now_ms` from the store (the generation
    /// is read first, so a write during the load makes the copy stale).
    pub fn load(&self, conn: &dyn GridRead, zone: &str, now_ms: i64) -> Result<(), LedgerError> {
        let generation = (self.generation)();
        let (from_ms, to_ms) = (now_ms - Self::BEFORE_MS, now_ms + Self::AFTER_MS);
        let all = conn
            .grid_points(zone, from_ms, to_ms, &grid::store::Filter::default())
            .map_err(grid_err)?;
        if let Ok(mut zones) = self.zones.lock() {
            // A bounded map: zones come from queries.
            if zones.len() >= 64 && !zones.contains_key(zone) {
                zones.clear();
            }
            zones.insert(
                zone.to_owned(),
                Cached {
                    generation,
                    loaded_ms: now_ms,
                    from_ms,
                    to_ms,
                    all: Arc::new(all),
                },
            );
        }
        Ok(())
    }
}

/// SDK shape of points.
pub fn as_sdk(points: &[IntensityPoint], rfc3339: fn(i64) -> String) -> Vec<EmissionsData> {
    points
        .iter()
        .map(|p| EmissionsData {
            location: p.zone.clone(),
            time: rfc3339(p.start_ms),
            rating: p.signal().0,
            duration: timespan(p.end_ms - p.start_ms),
        })
        .collect()
}

/// Time-weighted mean intensity over [`from`, `to`) (the SDK's average).
pub fn average(points: &[IntensityPoint], from_ms: i64, to_ms: i64) -> Option<f64> {
    let (mut w, mut sum) = (0i64, 0.0);
    for p in points {
        let o = p.end_ms.min(to_ms) - p.start_ms.max(from_ms);
        if o > 0 {
            w += o;
            sum += p.signal().0 * o as f64;
        }
    }
    (w > 0).then(|| sum / w as f64)
}

/// The start among the points' starts (from `earliest`, with the whole
/// window before `latest_end`) whose window of `window_ms` has the lowest
/// time-weighted mean intensity, with that mean. Windows not fully covered
/// by points are skipped.
pub fn best_window(
    points: &[IntensityPoint],
    window_ms: i64,
    earliest_ms: i64,
    latest_end_ms: i64,
) -> Option<(i64, f64)> {
    let covered = |s: i64, e: i64| {
        let mut t = s;
        for p in points.iter().filter(|p| p.end_ms > s && p.start_ms < e) {
            if p.start_ms > t {
                return false;
            }
            t = t.max(p.end_ms);
        }
        t >= e
    };
    points
        .iter()
        .map(|p| p.start_ms.max(earliest_ms))
        .filter(|s| {
            s.saturating_add(window_ms) <= latest_end_ms && covered(*s, s.saturating_add(window_ms))
        })
        .filter_map(|s| Some((s, average(points, s, s.saturating_add(window_ms))?)))
        .min_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)))
}

/// The market-based factor of one more kWh drawn from the grid: the
/// supplier's disclosed factor for its share of the supply, the residual
/// mix for the rest (GHG Protocol Scope 2 hierarchy, without certificates:
/// a certificate volume for the year does not change with the hour a job
/// runs, so it does not belong in a scheduling signal). `None` when
/// neither is configured.
pub fn market_factor(m: &crate::site::MarketConfig) -> Option<f64> {
    let residual = m.residual_mix_g_per_kwh;
    match (&m.supplier, residual) {
        (Some(s), Some(r)) => {
            let share = s.share.clamp(0.0, 1.0);
            Some(share * s.factor_g_per_kwh + (1.0 - share) * r)
        }
        (Some(s), None) if s.share >= 1.0 => Some(s.factor_g_per_kwh),
        (None, Some(r)) => Some(r),
        _ => None,
    }
}

/// One point of the site's effective intensity.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EffectivePoint {
    /// Start, Unix ms.
    pub start_ms: i64,
    /// End, Unix ms.
    pub end_ms: i64,
    /// The grid (or market) factor, gCO2e per kWh at the meter.
    pub grid_g_per_kwh: f64,
    /// Per kWh of IT energy: the factor times the PUE.
    pub effective_g_per_kwh: f64,
    /// Whether the grid point is a forecast or estimate.
    pub estimated: bool,
}

/// The site's effective intensity over `points`: the grid factor (or the
/// market factor in every hour, when given) times `pue`, so that a
/// scheduler multiplying by its job's IT energy gets the facility's
/// emissions for it.
pub fn effective(points: &[IntensityPoint], pue: f64, market: Option<f64>) -> Vec<EffectivePoint> {
    points
        .iter()
        .map(|p| {
            let g = market.unwrap_or(p.signal().0);
            EffectivePoint {
                start_ms: p.start_ms,
                end_ms: p.end_ms,
                grid_g_per_kwh: g,
                effective_g_per_kwh: g * pue,
                estimated: p.estimated,
            }
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::grid::{Basis, Intensity};
    use vigie_energy::GramsPerKwh;

    const H: i64 = 3_600_000;

    fn p(h: i64, g: f64, marginal: bool) -> IntensityPoint {
        IntensityPoint {
            zone: "FR".into(),
            start_ms: h * H,
            end_ms: (h + 1) * H,
            intensity: if marginal {
                Intensity::Marginal(GramsPerKwh(g))
            } else {
                Intensity::Average(GramsPerKwh(g))
            },
            basis: Basis::Direct,
            estimated: true,
            source: "t".into(),
            retrieved_ms: 0,
        }
    }

    #[test]
    fn sdk_shapes_and_windows() {
        assert_eq!(timespan(H), "01:00:00");
        assert_eq!(timespan(5 * 60_000), "00:05:00");
        let pts: Vec<_> = [50.0, 40.0, 10.0, 20.0, 90.0]
            .iter()
            .enumerate()
            .map(|(h, g)| p(h as i64, *g, false))
            .collect();
        // Two-hour windows: 45, 25, 15, 55 -> the one starting at hour 2.
        assert_eq!(best_window(&pts, 2 * H, 0, 5 * H), Some((2 * H, 15.0)));
        // A deadline at hour 3 leaves windows starting at 0 and 1.
        assert_eq!(best_window(&pts, 2 * H, 0, 3 * H), Some((H, 25.0)));
        // Not before hour 3: only 3..5 (55).
        assert_eq!(best_window(&pts, 2 * H, 3 * H, 5 * H), Some((3 * H, 55.0)));
        assert_eq!(
            best_window(&pts, 6 * H, 0, 10 * H),
            None,
            "no covered window"
        );
        assert_eq!(average(&pts, 0, 2 * H), Some(45.0));
        assert_eq!(average(&pts, H / 2, 3 * H / 2), Some(45.0));
        let sdk = as_sdk(&pts[..1], |ms| ms.to_string());
        assert_eq!(sdk[0].rating, 50.0);
        assert_eq!(sdk[0].duration, "01:00:00");
    }

    #[test]
    fn marginal_is_preferred_for_signals_when_present() {
        let conn = crate::store::open_in_memory().unwrap();
        crate::grid::store::init(&conn).unwrap();
        crate::grid::store::upsert(
            &conn,
            &[p(0, 30.0, false), p(0, 400.0, true), p(1, 35.0, false)],
        )
        .unwrap();
        let pref = points(&conn, "FR", 0, 2 * H, Want::Prefer).unwrap();
        assert_eq!(pref.len(), 1);
        assert_eq!(pref[0].signal().0, 400.0);
        let avg = points(&conn, "FR", 0, 2 * H, Want::Average).unwrap();
        assert_eq!(
            avg.iter().map(|p| p.signal().0).collect::<Vec<_>>(),
            [30.0, 35.0]
        );
        assert_eq!(Want::parse(Some("nope")), None);
    }
    #[test]
    fn effective_intensity_is_the_factor_times_pue() {
        let pts = [p(0, 100.0, false), p(1, 300.0, true)];
        let e = effective(&pts, 1.5, None);
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].effective_g_per_kwh, 150.0);
        assert_eq!(e[1].grid_g_per_kwh, 300.0);
        assert_eq!(e[1].effective_g_per_kwh, 450.0);
        let m = effective(&pts, 1.2, Some(50.0));
        assert!(
            m.iter()
                .all(|x| x.grid_g_per_kwh == 50.0 && (x.effective_g_per_kwh - 60.0).abs() < 1e-12)
        );
    }

    #[test]
    fn market_factor_blends_supplier_share_and_residual_mix() {
        use crate::site::{MarketConfig, SupplierConfig};
        let mut m = MarketConfig::default();
        assert_eq!(market_factor(&m), None);
        m.residual_mix_g_per_kwh = Some(400.0);
        assert_eq!(market_factor(&m), Some(400.0));
        m.supplier = Some(SupplierConfig {
            factor_g_per_kwh: 100.0,
            share: 0.75,
        });
        assert_eq!(market_factor(&m), Some(0.75 * 100.0 + 0.25 * 400.0));
        m.residual_mix_g_per_kwh = None;
        assert_eq!(
            market_factor(&m),
            None,
            "a quarter of the supply has no factor"
        );
        m.supplier = Some(SupplierConfig {
            factor_g_per_kwh: 100.0,
            share: 1.0,
        });
        assert_eq!(market_factor(&m), Some(100.0));
    }
    #[test]
    fn the_cache_answers_like_the_store_until_a_write_or_its_ttl() {
        // This cache's own generation: the process-wide one is bumped by
        // other tests writing grid points in parallel (see below).
        static GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        fn generation() -> u64 {
            GENERATION.load(std::sync::atomic::Ordering::Acquire)
        }
        let mut conn = crate::store::open_in_memory().unwrap();
        crate::grid::store::init(&conn).unwrap();
        let now = 100 * H;
        crate::grid::store::upsert_all(
            &mut conn,
            &[
                p(100, 30.0, false),
                p(100, 400.0, true),
                p(101, 35.0, false),
                p(102, 20.0, false),
            ],
        )
        .unwrap();
        let cache = PointsCache::with_generation(generation);
        assert!(
            cache
                .get("FR", now, now + 3 * H, Want::Average, now)
                .is_none(),
            "empty"
        );
        cache.load(&conn, "FR", now).unwrap();
        // A write to another store, as another test does at any moment,
        // leaves this cache's copy fresh.
        let mut other = crate::store::open_in_memory().unwrap();
        crate::grid::store::init(&other).unwrap();
        crate::grid::store::upsert_all(&mut other, &[p(100, 1.0, false)]).unwrap();
        for want in [Want::Prefer, Want::Average, Want::Marginal] {
            for (a, b) in [(now, now + 3 * H), (now + H, now + 2 * H), (now - H, now)] {
                assert_eq!(
                    cache.get("FR", a, b, want, now + 1),
                    Some(points(&conn, "FR", a, b, want).unwrap()),
                    "{want:?} {a} {b}"
                );
            }
        }
        assert!(
            cache.get("DE", now, now + H, Want::Average, now).is_none(),
            "other zone"
        );
        assert!(
            cache
                .get("FR", now, now + 30 * 86_400_000, Want::Average, now)
                .is_none(),
            "beyond the loaded span"
        );
        assert!(!PointsCache::covers(now, now + 30 * 86_400_000, now));
        assert!(
            cache
                .get("FR", now, now + H, Want::Average, now + PointsCache::TTL_MS)
                .is_none(),
            "expired"
        );
        // A write (its generation bump) makes the copy stale at once.
        assert!(
            cache
                .get("FR", now, now + H, Want::Average, now + 2)
                .is_some()
        );
        crate::grid::store::upsert_all(&mut conn, &[p(101, 99.0, false)]).unwrap();
        GENERATION.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        assert!(
            cache
                .get("FR", now, now + H, Want::Average, now + 3)
                .is_none()
        );
        // Loaded again, the copy has the new point.
        cache.load(&conn, "FR", now).unwrap();
        let got = cache
            .get("FR", now + H, now + 2 * H, Want::Average, now + 4)
            .unwrap();
        assert_eq!(
            got,
            points(&conn, "FR", now + H, now + 2 * H, Want::Average).unwrap()
        );
        assert_eq!(got[0].signal().0, 99.0);
    }

    #[test]
    fn the_default_cache_follows_the_store_generation() {
        // Other tests may bump the process-wide generation too, which only
        // ever makes a copy stale early: a write must never leave it fresh.
        let mut conn = crate::store::open_in_memory().unwrap();
        crate::grid::store::init(&conn).unwrap();
        let now = 100 * H;
        let cache = PointsCache::default();
        cache.load(&conn, "FR", now).unwrap();
        crate::grid::store::upsert_all(&mut conn, &[p(100, 30.0, false)]).unwrap();
        assert!(
            cache
                .get("FR", now, now + H, Want::Average, now + 1)
                .is_none()
        );
    }
}
