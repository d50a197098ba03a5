//! Electricity Maps API v3: `carbon-intensity/latest`, `history` (last 24
//! hours), `past-range` and `forecast`, with the `auth-token` header.
//! Values are average gCO2eq/kWh of consumption, life-cycle by default.

use super::files::ELECTRICITY_MAPS_SOURCE;
use super::http::{Http, HttpConfig, json, secret_header};
use super::time::{self, DAY_MS};
use super::{
    Basis, FetchFuture, GridError, Intensity, IntensityPoint, Provider, check_live_range,
    checked_value, past_then_forecast, sort_dedup, windows,
};
use reqwest::header::HeaderMap;
use serde::Deserialize;
use std::path::PathBuf;
use vigie_energy::{HOUR_MS, MINUTE_MS};
use vigie_service::secrets::{Redacted, read_secret};

/// Longest span of one `past-range` request at hourly or finer
/// granularity.
const PAST_RANGE_MAX_MS: i64 = 10 * DAY_MS;

/// `[grid.electricity_maps]`-style settings.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ElectricityMapsConfig {
    /// API origin; `/v3/...` is appended.
    #[serde(default = "default_base_url")]
    pub base_url: String,
    /// File holding the API token (sent as `auth-token`).
    pub token_file: PathBuf,
    /// `lifecycle` (the API's default) or `direct`.
    #[serde(default = "default_basis")]
    pub emission_factor_type: Basis,
    /// Length of one value.
    #[serde(default)]
    pub granularity: Granularity,
    /// Hours of forecast asked for when a range reaches past now.
    #[serde(default = "default_horizon")]
    pub forecast_horizon_hours: u32,
    /// Transport.
    #[serde(default)]
    pub http: HttpConfig,
}

fn default_base_url() -> String {
    "https://api.electricitymaps.com".into()
}

fn default_basis() -> Basis {
    Basis::Lifecycle
}

fn default_horizon() -> u32 {
    24
}

/// `temporalGranularity` of the values asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum Granularity {
    /// 5 minutes.
    #[serde(rename = "5_minutes")]
    FiveMinutes,
    /// 15 minutes.
    #[serde(rename = "15_minutes")]
    FifteenMinutes,
    /// One hour (the API's default).
    #[default]
    #[serde(rename = "hourly")]
    Hourly,
}

impl Granularity {
    fn ms(self) -> i64 {
        match self {
            Granularity::FiveMinutes => 5 * MINUTE_MS,
            Granularity::FifteenMinutes => 15 * MINUTE_MS,
            Granularity::Hourly => HOUR_MS,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Granularity::FiveMinutes => "5_minutes",
            Granularity::FifteenMinutes => "15_minutes",
            Granularity::Hourly => "hourly",
        }
    }
}

/// An Electricity Maps client.
#[derive(Debug)]
pub struct ElectricityMaps {
    http: Http,
    token: Redacted,
    basis: Basis,
    granularity: Granularity,
    horizon_hours: u32,
}

#[derive(Deserialize)]
struct Point {
    #[serde(rename = "carbonIntensity")]
    carbon_intensity: Option<f64>,
    datetime: String,
    #[serde(rename = "emissionFactorType")]
    emission_factor_type: Option<String>,
    #[serde(rename = "isEstimated")]
    is_estimated: Option<bool>,
}

#[derive(Deserialize)]
struct Latest {
    zone: Option<String>,
    #[serde(flatten)]
    point: Point,
}

#[derive(Deserialize)]
struct History {
    history: Vec<Point>,
}

#[derive(Deserialize)]
struct Range {
    data: Vec<Point>,
}

#[derive(Deserialize)]
struct Forecast {
    forecast: Vec<Point>,
}

impl ElectricityMaps {
    /// Reads the token file and builds the client. Makes no request.
    pub fn new(cfg: &ElectricityMapsConfig) -> Result<Self, GridError> {
        let token = read_secret(&cfg.token_file)?;
        Ok(ElectricityMaps {
            http: Http::new(&cfg.base_url, &cfg.http)?,
            token: Redacted(token),
            basis: cfg.emission_factor_type,
            granularity: cfg.granularity,
            horizon_hours: cfg.forecast_horizon_hours,
        })
    }

    async fn get(&self, path: &str, query: &[(&str, &str)]) -> Result<Vec<u8>, GridError> {
        let mut url = self.http.url(path)?;
        {
            let mut q = url.query_pairs_mut();
            for (k, v) in query {
                q.append_pair(k, v);
            }
            q.append_pair("emissionFactorType", self.basis.as_str());
            if self.granularity != Granularity::Hourly {
                q.append_pair("temporalGranularity", self.granularity.as_str());
            }
        }
        let mut headers = HeaderMap::new();
        headers.insert("auth-token", secret_header(&self.token.0)?);
        self.http.get(url, headers, None).await
    }

    fn point(
        &self,
        zone: &str,
        p: Point,
        forecast: bool,
        what: &str,
        now_ms: i64,
    ) -> Result<Option<IntensityPoint>, GridError> {
        let Some(v) = p.carbon_intensity else {
            return Ok(None);
        };
        let bad = |detail: String| GridError::Format {
            what: what.to_owned(),
            detail,
        };
        let start = time::parse_instant(&p.datetime).map_err(|e| bad(e.to_string()))?;
        let basis = match p.emission_factor_type.as_deref() {
            None => self.basis,
            Some(t) => Basis::parse(t).ok_or_else(|| bad(format!("emissionFactorType {t:?}")))?,
        };
        Ok(Some(IntensityPoint {
            zone: zone.to_owned(),
            start_ms: start,
            end_ms: start + self.granularity.ms(),
            intensity: Intensity::Average(checked_value(v, || what.to_owned())?),
            basis,
            estimated: forecast || p.is_estimated.unwrap_or(false),
            source: ELECTRICITY_MAPS_SOURCE.into(),
            retrieved_ms: now_ms,
        }))
    }

    fn points(
        &self,
        zone: &str,
        list: Vec<Point>,
        forecast: bool,
        what: &str,
        now_ms: i64,
    ) -> Result<Vec<IntensityPoint>, GridError> {
        let mut out = Vec::with_capacity(list.len());
        for p in list {
            out.extend(self.point(zone, p, forecast, what, now_ms)?);
        }
        Ok(out)
    }

    /// `GET /v3/carbon-intensity/latest?zone=`: the latest value, or
    /// `None` when the API has none.
    pub async fn latest(
        &self,
        zone: &str,
        now_ms: i64,
    ) -> Result<Option<IntensityPoint>, GridError> {
        const WHAT: &str = "/v3/carbon-intensity/latest";
        let body = self
            .get("v3/carbon-intensity/latest", &[("zone", zone)])
            .await?;
        let latest: Latest = json(&body, WHAT)?;
        if let Some(z) = &latest.zone
            && z != zone
        {
            return Err(GridError::Format {
                what: WHAT.into(),
                detail: format!("asked for zone {zone:?}, got {z:?}"),
            });
        }
        self.point(zone, latest.point, false, WHAT, now_ms)
    }

    /// `GET /v3/carbon-intensity/history?zone=`: the last 24 hours.
    pub async fn history(&self, zone: &str, now_ms: i64) -> Result<Vec<IntensityPoint>, GridError> {
        const WHAT: &str = "/v3/carbon-intensity/history";
        let body = self
            .get("v3/carbon-intensity/history", &[("zone", zone)])
            .await?;
        let h: History = json(&body, WHAT)?;
        let mut points = self.points(zone, h.history, false, WHAT, now_ms)?;
        sort_dedup(&mut points);
        Ok(points)
    }

    /// `GET /v3/carbon-intensity/past-range?zone=&start=&end=`, in windows
    /// of at most 10 days.
    pub async fn past_range(
        &self,
        zone: &str,
        from_ms: i64,
        to_ms: i64,
        now_ms: i64,
    ) -> Result<Vec<IntensityPoint>, GridError> {
        const WHAT: &str = "/v3/carbon-intensity/past-range";
        let mut points = Vec::new();
        for (start, end) in windows(from_ms, to_ms, PAST_RANGE_MAX_MS) {
            tracing::debug!(provider = "electricitymaps", from = %time::format_utc(start), to = %time::format_utc(end), "fetching");
            let (start, end) = (time::format_utc(start), time::format_utc(end));
            let body = self
                .get(
                    "v3/carbon-intensity/past-range",
                    &[("zone", zone), ("start", &start), ("end", &end)],
                )
                .await?;
            let r: Range = json(&body, WHAT)?;
            points.extend(self.points(zone, r.data, false, WHAT, now_ms)?);
        }
        sort_dedup(&mut points);
        Ok(points)
    }

    /// `GET /v3/carbon-intensity/forecast?zone=&horizonHours=`: every point
    /// flagged estimated.
    pub async fn forecast(
        &self,
        zone: &str,
        now_ms: i64,
    ) -> Result<Vec<IntensityPoint>, GridError> {
        const WHAT: &str = "/v3/carbon-intensity/forecast";
        let horizon = self.horizon_hours.to_string();
        let body = self
            .get(
                "v3/carbon-intensity/forecast",
                &[("zone", zone), ("horizonHours", &horizon)],
            )
            .await?;
        let f: Forecast = json(&body, WHAT)?;
        let mut points = self.points(zone, f.forecast, true, WHAT, now_ms)?;
        sort_dedup(&mut points);
        Ok(points)
    }
}

impl Provider for ElectricityMaps {
    fn source(&self) -> &str {
        ELECTRICITY_MAPS_SOURCE
    }

    /// `past-range` up to `now_ms`, then `forecast` if the range goes on.
    fn fetch<'a>(
        &'a self,
        zone: &'a str,
        from_ms: i64,
        to_ms: i64,
        now_ms: i64,
    ) -> FetchFuture<'a> {
        Box::pin(async move {
            check_live_range(from_ms, to_ms)?;
            let mut past = Vec::new();
            if from_ms < now_ms {
                // The value that started before `from_ms` still covers it.
                let from = from_ms - self.granularity.ms();
                past = self
                    .past_range(zone, from, to_ms.min(now_ms), now_ms)
                    .await?;
            }
            let forecast = if to_ms > now_ms {
                self.forecast(zone, now_ms).await?
            } else {
                Vec::new()
            };
            Ok(past_then_forecast(past, forecast, from_ms, to_ms))
        })
    }
}
