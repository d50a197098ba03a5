//! Live providers (`[[carbon.live]]`): their configuration and one
//! refresh, which fetches [now - backfill, now + horizon) and upserts it
//! (later retrievals replace earlier ones; an estimate never replaces a
//! measured value). The periodic task that calls it is the collector's
//! (`grid_live`): this crate knows no clock and spawns nothing.

use crate as grid;
use crate::Provider;
use serde::Deserialize;
use std::time::Duration;

/// One live provider (`[[carbon.live]]`): exactly one provider section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LiveConfig {
    /// Zone to fetch; defaults to `carbon.zone`.
    #[serde(default)]
    pub zone: Option<String>,
    /// Refresh period.
    #[serde(default = "d_every", with = "humantime_serde")]
    pub every: Duration,
    /// How far back each refresh reaches (late corrections, outages).
    #[serde(default = "d_backfill", with = "humantime_serde")]
    pub backfill: Duration,
    /// How far ahead (forecasts, for scheduling signals).
    #[serde(default = "d_horizon", with = "humantime_serde")]
    pub horizon: Duration,
    /// Electricity Maps v3.
    #[serde(default)]
    pub electricity_maps: Option<grid::electricity_maps::ElectricityMapsConfig>,
    /// WattTime v3 (marginal: scheduling signals only).
    #[serde(default)]
    pub watttime: Option<grid::watttime::WattTimeConfig>,
    /// UK Carbon Intensity API (zone GB).
    #[serde(default)]
    pub carbon_intensity_uk: Option<grid::carbon_intensity_uk::CarbonIntensityUkConfig>,
    /// RTE eCO2mix through the ODRE open-data API (zone FR).
    #[serde(default)]
    pub odre: Option<grid::odre::OdreConfig>,
}

fn d_every() -> Duration {
    Duration::from_secs(15 * 60)
}
fn d_backfill() -> Duration {
    Duration::from_secs(48 * 3600)
}
fn d_horizon() -> Duration {
    Duration::from_secs(24 * 3600)
}

impl LiveConfig {
    /// The basis of the average factors this provider writes, `None` for
    /// a marginal one (scheduling signals only, never an inventory).
    pub fn average_basis(&self) -> Option<grid::Basis> {
        if let Some(c) = &self.electricity_maps {
            return Some(c.emission_factor_type);
        }
        if self.carbon_intensity_uk.is_some() || self.odre.is_some() {
            // Both publish direct (combustion) emissions of generation.
            return Some(grid::Basis::Direct);
        }
        None
    }

    /// The section's name, for messages.
    pub fn name(&self) -> &'static str {
        if self.electricity_maps.is_some() {
            "electricity_maps"
        } else if self.watttime.is_some() {
            "watttime"
        } else if self.carbon_intensity_uk.is_some() {
            "carbon_intensity_uk"
        } else {
            "odre"
        }
    }

    /// Makes the provider its section names.
    pub fn build(&self) -> Result<Box<dyn Provider>, grid::GridError> {
        let n = usize::from(self.electricity_maps.is_some())
            + usize::from(self.watttime.is_some())
            + usize::from(self.carbon_intensity_uk.is_some())
            + usize::from(self.odre.is_some());
        if n != 1 {
            return Err(grid::GridError::Config(format!(
                "[[carbon.live]] needs exactly one provider section (electricity_maps, watttime, carbon_intensity_uk, odre), found {n}"
            )));
        }
        if let Some(c) = &self.electricity_maps {
            return Ok(Box::new(grid::electricity_maps::ElectricityMaps::new(c)?));
        }
        if let Some(c) = &self.watttime {
            return Ok(Box::new(grid::watttime::WattTime::new(c)?));
        }
        if let Some(c) = &self.carbon_intensity_uk {
            return Ok(Box::new(grid::carbon_intensity_uk::CarbonIntensityUk::new(
                c,
            )?));
        }
        match &self.odre {
            Some(c) => Ok(Box::new(grid::odre::Odre::new(c)?)),
            None => Err(grid::GridError::Config("no provider".into())),
        }
    }
}

/// One refresh: fetch and store. Returns the points written.
pub async fn refresh<W: grid::store::GridWrite + ?Sized>(
    provider: &dyn Provider,
    conn: &std::sync::Mutex<W>,
    zone: &str,
    backfill: Duration,
    horizon: Duration,
    now_ms: i64,
) -> Result<usize, grid::GridError> {
    let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 4);
    let points = provider
        .fetch(zone, now_ms - ms(backfill), now_ms + ms(horizon), now_ms)
        .await?;
    let mut c = conn.lock().unwrap_or_else(|p| p.into_inner());
    c.upsert_grid_points(&points)
        .map_err(|e| grid::GridError::Io {
            path: "grid table".into(),
            source: std::io::Error::other(e.to_string()),
        })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::{Basis, FetchFuture, Intensity, IntensityPoint};
    use vigie_energy::GramsPerKwh;

    struct Fixed(std::sync::atomic::AtomicUsize);
    impl Provider for Fixed {
        fn source(&self) -> &str {
            "fixed"
        }
        fn fetch<'a>(&'a self, zone: &'a str, from: i64, to: i64, now: i64) -> FetchFuture<'a> {
            let n = self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Box::pin(async move {
                if n == 1 {
                    return Err(grid::GridError::Unavailable {
                        what: "/fixed".into(),
                        status: 503,
                    });
                }
                Ok((from..to)
                    .step_by(3_600_000)
                    .map(|s| IntensityPoint {
                        zone: zone.into(),
                        start_ms: s,
                        end_ms: s + 3_600_000,
                        intensity: Intensity::Average(GramsPerKwh(50.0 + n as f64)),
                        basis: Basis::Direct,
                        estimated: s >= now,
                        source: "fixed".into(),
                        retrieved_ms: now,
                    })
                    .collect())
            })
        }
    }

    #[tokio::test]
    async fn refreshes_store_and_replace_and_a_failure_keeps_what_is_stored() {
        let conn = std::sync::Mutex::new(rusqlite::Connection::open_in_memory().unwrap());
        grid::store::init(&conn.lock().unwrap()).unwrap();
        let p = Fixed(std::sync::atomic::AtomicUsize::new(0));
        let h = Duration::from_secs(3600);
        let now = 1_795_000_000_000 - 1_795_000_000_000 % 3_600_000;
        assert_eq!(refresh(&p, &conn, "FR", 2 * h, h, now).await.unwrap(), 3);
        assert!(
            refresh(&p, &conn, "FR", 2 * h, h, now)
                .await
                .unwrap_err()
                .is_retryable()
        );
        refresh(&p, &conn, "FR", 2 * h, h, now).await.unwrap();
        let c = conn.lock().unwrap();
        let pts = grid::store::overlapping(
            &c,
            "FR",
            now - 7_200_000,
            now + 3_600_000,
            &grid::store::Filter::default(),
        )
        .unwrap();
        assert_eq!(pts.len(), 3);
        assert!(
            pts.iter()
                .all(|p| p.intensity == Intensity::Average(GramsPerKwh(52.0))),
            "later retrieval replaced: {pts:?}"
        );
    }

    #[test]
    fn one_provider_section_per_entry() {
        let c: LiveConfig = toml::from_str("every = \"5m\"\n").unwrap();
        assert!(c.build().is_err());
        let c: LiveConfig = toml::from_str("[carbon_intensity_uk]\n").unwrap();
        assert_eq!(
            c.build().unwrap().source(),
            grid::files::CARBON_INTENSITY_SOURCE
        );
    }
}
