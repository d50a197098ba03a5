//! WattTime API v3: `GET /login` with basic auth gives a bearer token (valid
//! 30 minutes); `GET /v3/historical` and `/v3/forecast` with
//! `signal_type=co2_moer` give the marginal operating emissions rate in lbs
//! CO2/MWh, one value per 5 minutes. Marginal: a scheduling signal, never
//! an inventory factor.

use super::http::{Http, HttpConfig, json, secret_header};
use super::time::{self, DAY_MS};
use super::{
    Basis, FetchFuture, GridError, Intensity, IntensityPoint, Provider, check_live_range,
    checked_value, past_then_forecast, sort_dedup, windows,
};
use reqwest::header::HeaderMap;
use serde::Deserialize;
use std::path::PathBuf;
use tokio::sync::Mutex;
use vigie_energy::{GramsPerKwh, MINUTE_MS};
use vigie_service::secrets::{Redacted, read_secret};

/// Source name of WattTime points.
pub const SOURCE: &str = "watttime";

/// Grams per pound (avoirdupois, exact by definition: 0.45359237 kg).
pub const GRAMS_PER_POUND: f64 = 453.592_37;

/// lbs CO2/MWh to g/kWh: × 453.59237 g/lb ÷ 1000 kWh/MWh.
pub fn lbs_per_mwh_to_g_per_kwh(lbs_per_mwh: f64) -> GramsPerKwh {
    GramsPerKwh(lbs_per_mwh * GRAMS_PER_POUND / 1000.0)
}

/// Longest span of one `/v3/historical` request.
const HISTORICAL_MAX_MS: i64 = 32 * DAY_MS;

/// Tokens last 30 minutes; a new one is fetched after 25.
const TOKEN_REUSE_MS: i64 = 25 * MINUTE_MS;

/// `[grid.watttime]`-style settings.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WattTimeConfig {
    /// API origin; `/login` and `/v3/...` are appended.
    #[serde(default = "default_base_url")]
    pub base_url: String,
    /// Account name.
    pub username: String,
    /// File holding the account's password.
    pub password_file: PathBuf,
    /// Hours of forecast asked for when a range reaches past now (0-72).
    #[serde(default = "default_horizon")]
    pub forecast_horizon_hours: u32,
    /// Transport.
    #[serde(default)]
    pub http: HttpConfig,
}

fn default_base_url() -> String {
    "https://api.watttime.org".into()
}

fn default_horizon() -> u32 {
    24
}

/// A WattTime client. Zones are WattTime regions (`CAISO_NORTH`).
#[derive(Debug)]
pub struct WattTime {
    http: Http,
    username: String,
    password: Redacted,
    horizon_hours: u32,
    /// The bearer token and when it was obtained.
    token: Mutex<Option<(Redacted, i64)>>,
}

#[derive(Deserialize)]
struct Login {
    token: String,
}

#[derive(Deserialize)]
struct Body {
    data: Vec<Point>,
    meta: Meta,
}

#[derive(Deserialize)]
struct Point {
    point_time: String,
    value: Option<f64>,
}

#[derive(Deserialize)]
struct Meta {
    #[serde(default)]
    region: Option<String>,
    #[serde(default)]
    signal_type: Option<String>,
    units: String,
    #[serde(default)]
    data_point_period_seconds: Option<i64>,
}

impl WattTime {
    /// Reads the password file and builds the client. Makes no request.
    pub fn new(cfg: &WattTimeConfig) -> Result<Self, GridError> {
        let password = read_secret(&cfg.password_file)?;
        Ok(WattTime {
            http: Http::new(&cfg.base_url, &cfg.http)?,
            username: cfg.username.clone(),
            password: Redacted(password),
            horizon_hours: cfg.forecast_horizon_hours.min(72),
            token: Mutex::new(None),
        })
    }

    async fn login(&self) -> Result<Redacted, GridError> {
        let body = self
            .http
            .get(
                self.http.url("login")?,
                HeaderMap::new(),
                Some((&self.username, &self.password.0)),
            )
            .await?;
        let login: Login = json(&body, "/login")?;
        Ok(Redacted(login.token))
    }

    /// GETs `path` with the bearer token, logging in first when there is
    /// no fresh token, and once more when the token is refused.
    async fn get(
        &self,
        path: &str,
        query: &[(&str, &str)],
        now_ms: i64,
    ) -> Result<Vec<u8>, GridError> {
        let mut url = self.http.url(path)?;
        url.query_pairs_mut().extend_pairs(query);
        let mut cached = self.token.lock().await;
        let mut fresh = false;
        let token = match cached.as_ref() {
            Some((t, at)) if now_ms - at < TOKEN_REUSE_MS && *at <= now_ms => t.clone(),
            _ => {
                let t = self.login().await?;
                *cached = Some((t.clone(), now_ms));
                fresh = true;
                t
            }
        };
        let bearer = |t: &Redacted| -> Result<HeaderMap, GridError> {
            let mut h = HeaderMap::new();
            h.insert(
                reqwest::header::AUTHORIZATION,
                secret_header(&format!("Bearer {}", t.0))?,
            );
            Ok(h)
        };
        match self.http.get(url.clone(), bearer(&token)?, None).await {
            Err(GridError::Auth { .. }) if !fresh => {
                let t = self.login().await?;
                *cached = Some((t.clone(), now_ms));
                self.http.get(url, bearer(&t)?, None).await
            }
            r => r,
        }
    }

    fn points(
        &self,
        region: &str,
        body: &[u8],
        forecast: bool,
        what: &str,
        now_ms: i64,
    ) -> Result<Vec<IntensityPoint>, GridError> {
        let body: Body = json(body, what)?;
        let bad = |detail: String| GridError::Format {
            what: what.to_owned(),
            detail,
        };
        if let Some(s) = &body.meta.signal_type
            && s != "co2_moer"
        {
            return Err(bad(format!("signal_type {s:?}, asked for co2_moer")));
        }
        if let Some(r) = &body.meta.region
            && r != region
        {
            return Err(bad(format!("region {r:?}, asked for {region:?}")));
        }
        let convert: fn(f64) -> GramsPerKwh = match body.meta.units.as_str() {
            "lbs_co2_per_mwh" => lbs_per_mwh_to_g_per_kwh,
            "kg_co2_per_mwh" | "g_co2_per_kwh" => GramsPerKwh,
            u => return Err(bad(format!("units {u:?}"))),
        };
        let period_ms = match body.meta.data_point_period_seconds {
            None => 5 * MINUTE_MS,
            Some(s) if s > 0 => s * 1000,
            Some(s) => return Err(bad(format!("data_point_period_seconds {s}"))),
        };
        let mut out = Vec::with_capacity(body.data.len());
        for p in body.data {
            let Some(v) = p.value else { continue };
            let start = time::parse_instant(&p.point_time).map_err(|e| bad(e.to_string()))?;
            let g = checked_value(convert(v).0, || what.to_owned())?;
            out.push(IntensityPoint {
                zone: region.to_owned(),
                start_ms: start,
                end_ms: start + period_ms,
                intensity: Intensity::Marginal(g),
                basis: Basis::Direct,
                estimated: forecast,
                source: SOURCE.into(),
                retrieved_ms: now_ms,
            });
        }
        Ok(out)
    }

    /// `GET /v3/historical?region=&start=&end=&signal_type=co2_moer`, in
    /// windows of at most 32 days.
    pub async fn historical(
        &self,
        region: &str,
        from_ms: i64,
        to_ms: i64,
        now_ms: i64,
    ) -> Result<Vec<IntensityPoint>, GridError> {
        let mut points = Vec::new();
        for (start, end) in windows(from_ms, to_ms, HISTORICAL_MAX_MS) {
            tracing::debug!(provider = "watttime", from = %time::format_utc(start), to = %time::format_utc(end), "fetching");
            let (start, end) = (time::format_utc(start), time::format_utc(end));
            let body = self
                .get(
                    "v3/historical",
                    &[
                        ("region", region),
                        ("start", &start),
                        ("end", &end),
                        ("signal_type", "co2_moer"),
                    ],
                    now_ms,
                )
                .await?;
            points.extend(self.points(region, &body, false, "/v3/historical", now_ms)?);
        }
        sort_dedup(&mut points);
        Ok(points)
    }

    /// `GET /v3/forecast?region=&signal_type=co2_moer&horizon_hours=`:
    /// the latest forecast, every point flagged estimated.
    pub async fn forecast(
        &self,
        region: &str,
        now_ms: i64,
    ) -> Result<Vec<IntensityPoint>, GridError> {
        let horizon = self.horizon_hours.to_string();
        let body = self
            .get(
                "v3/forecast",
                &[
                    ("region", region),
                    ("signal_type", "co2_moer"),
                    ("horizon_hours", &horizon),
                ],
                now_ms,
            )
            .await?;
        let mut points = self.points(region, &body, true, "/v3/forecast", now_ms)?;
        sort_dedup(&mut points);
        Ok(points)
    }
}

impl Provider for WattTime {
    fn source(&self) -> &str {
        SOURCE
    }

    /// `historical` up to `now_ms`, then `forecast` if the range goes on.
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
                let from = from_ms - 5 * MINUTE_MS;
                past = self
                    .historical(zone, from, to_ms.min(now_ms), now_ms)
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
