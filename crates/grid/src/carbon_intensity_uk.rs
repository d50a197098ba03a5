//! Great Britain's Carbon Intensity API (NESO): `GET /intensity/{from}/{to}`
//! and `/intensity/{from}/fw24h`, 30-minute periods of average direct
//! gCO2/kWh, the actual value once published and the forecast before. No
//! credentials.

use super::files::{CARBON_INTENSITY_SOURCE, CiBody, carbon_intensity_points};
use super::http::{Http, HttpConfig, json};
use super::time::{self, DAY_MS};
use super::{
    FetchFuture, GridError, IntensityPoint, Provider, check_live_range, sort_dedup, windows,
};
use reqwest::header::HeaderMap;
use serde::Deserialize;

/// Longest span of one `/intensity/{from}/{to}` request.
const RANGE_MAX_MS: i64 = 14 * DAY_MS;

/// The zone of the national endpoints.
pub const ZONE: &str = "GB";

/// `[grid.carbon_intensity_uk]`-style settings.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CarbonIntensityUkConfig {
    /// API origin; `/intensity/...` is appended.
    #[serde(default = "default_base_url")]
    pub base_url: String,
    /// Transport.
    #[serde(default)]
    pub http: HttpConfig,
}

fn default_base_url() -> String {
    "https://api.carbonintensity.org.uk".into()
}

impl Default for CarbonIntensityUkConfig {
    fn default() -> Self {
        CarbonIntensityUkConfig {
            base_url: default_base_url(),
            http: HttpConfig::default(),
        }
    }
}

/// A Carbon Intensity API client (national data, zone `GB`).
#[derive(Debug)]
pub struct CarbonIntensityUk {
    http: Http,
}

impl CarbonIntensityUk {
    /// Builds the client. Makes no request.
    pub fn new(cfg: &CarbonIntensityUkConfig) -> Result<Self, GridError> {
        Ok(CarbonIntensityUk {
            http: Http::new(&cfg.base_url, &cfg.http)?,
        })
    }

    async fn get(&self, path: String, now_ms: i64) -> Result<Vec<IntensityPoint>, GridError> {
        let url = self.http.url(&path)?;
        let what = url.path().to_owned();
        let body = self.http.get(url, HeaderMap::new(), None).await?;
        let body: CiBody = json(&body, &what)?;
        Ok(carbon_intensity_points(body, ZONE, &what, now_ms)?.points)
    }

    /// `GET /intensity/{from}/{to}` in windows of at most 14 days.
    pub async fn range(
        &self,
        from_ms: i64,
        to_ms: i64,
        now_ms: i64,
    ) -> Result<Vec<IntensityPoint>, GridError> {
        let mut points = Vec::new();
        for (start, end) in windows(from_ms, to_ms, RANGE_MAX_MS) {
            tracing::debug!(provider = "carbon-intensity-uk", from = %time::format_utc(start), to = %time::format_utc(end), "fetching");
            let path = format!(
                "intensity/{}/{}",
                time::format_utc_minutes(start),
                time::format_utc_minutes(end)
            );
            points.extend(self.get(path, now_ms).await?);
        }
        sort_dedup(&mut points);
        Ok(points)
    }

    /// `GET /intensity/{from}/fw24h`: the 24 hours from `from_ms`, forecasts
    /// flagged estimated.
    pub async fn forward_24h(
        &self,
        from_ms: i64,
        now_ms: i64,
    ) -> Result<Vec<IntensityPoint>, GridError> {
        let path = format!("intensity/{}/fw24h", time::format_utc_minutes(from_ms));
        let mut points = self.get(path, now_ms).await?;
        sort_dedup(&mut points);
        Ok(points)
    }
}

impl Provider for CarbonIntensityUk {
    fn source(&self) -> &str {
        CARBON_INTENSITY_SOURCE
    }

    /// `/intensity/{from}/{to}`: past periods and forecasts alike.
    fn fetch<'a>(
        &'a self,
        zone: &'a str,
        from_ms: i64,
        to_ms: i64,
        now_ms: i64,
    ) -> FetchFuture<'a> {
        Box::pin(async move {
            check_live_range(from_ms, to_ms)?;
            if zone != ZONE {
                return Err(GridError::UnknownZone {
                    provider: CARBON_INTENSITY_SOURCE.into(),
                    zone: zone.to_owned(),
                });
            }
            let mut points = self.range(from_ms, to_ms, now_ms).await?;
            points.retain(|p| p.overlaps(from_ms, to_ms));
            Ok(points)
        })
    }
}
