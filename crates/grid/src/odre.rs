//! RTE eCO2mix through the ODRE open-data portal (Opendatasoft Explore API
//! v2.1): `GET /api/explore/v2.1/catalog/datasets/eco2mix-national-tr/records`
//! with a `where` clause on `date_heure`, ordered by it, paged with
//! `limit` and `offset`. `taux_co2` is the direct average gCO2/kWh of
//! French generation, one value per 15 minutes. An API key is optional.

use super::files::ECO2MIX_SOURCE;
use super::http::{Http, HttpConfig, json, secret_header};
use super::time::{self, DAY_MS, Step};
use super::{
    Basis, FetchFuture, GridError, Intensity, IntensityPoint, Provider, check_live_range,
    checked_value, sort_dedup, windows,
};
use reqwest::header::HeaderMap;
use serde::Deserialize;
use std::path::PathBuf;
use vigie_energy::MINUTE_MS;
use vigie_service::secrets::{Redacted, read_secret};

/// The zone of the national datasets.
pub const ZONE: &str = "FR";

/// Most records one request returns (the API's own cap).
pub const MAX_PAGE: usize = 100;

/// `offset + limit` may not pass this on the records endpoint; windows are
/// kept well under it (31 days of 15-minute values is 2,976 records).
const MAX_OFFSET: usize = 10_000;

/// Span of one windowed query.
const WINDOW_MS: i64 = 31 * DAY_MS;

/// `[grid.odre]`-style settings.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OdreConfig {
    /// Portal origin; `/api/explore/v2.1/...` is appended.
    #[serde(default = "default_base_url")]
    pub base_url: String,
    /// Dataset: `eco2mix-national-tr` (real time) or
    /// `eco2mix-national-cons-def` (consolidated and final).
    #[serde(default = "default_dataset")]
    pub dataset: String,
    /// File holding an API key (sent as `Authorization: Apikey ...`);
    /// anonymous access works within the portal's quotas.
    #[serde(default)]
    pub api_key_file: Option<PathBuf>,
    /// Records per request (1 to 100).
    #[serde(default = "default_page")]
    pub page_size: usize,
    /// Transport.
    #[serde(default)]
    pub http: HttpConfig,
}

fn default_base_url() -> String {
    "https://odre.opendatasoft.com".into()
}

fn default_dataset() -> String {
    "eco2mix-national-tr".into()
}

fn default_page() -> usize {
    MAX_PAGE
}

/// An ODRE eCO2mix client (zone `FR`).
#[derive(Debug)]
pub struct Odre {
    http: Http,
    dataset: String,
    api_key: Option<Redacted>,
    page_size: usize,
}

#[derive(Deserialize)]
struct Page {
    total_count: usize,
    results: Vec<Record>,
}

#[derive(Deserialize)]
struct Record {
    date_heure: String,
    taux_co2: Option<f64>,
}

impl Odre {
    /// Reads the API key file, if any, and builds the client. Makes no
    /// request.
    pub fn new(cfg: &OdreConfig) -> Result<Self, GridError> {
        if !(1..=MAX_PAGE).contains(&cfg.page_size) {
            return Err(GridError::Config(format!(
                "page_size {}: must be 1 to {MAX_PAGE}",
                cfg.page_size
            )));
        }
        if cfg.dataset.is_empty()
            || !cfg
                .dataset
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(GridError::Config(format!("dataset {:?}", cfg.dataset)));
        }
        let api_key = cfg
            .api_key_file
            .as_deref()
            .map(read_secret)
            .transpose()?
            .map(Redacted);
        Ok(Odre {
            http: Http::new(&cfg.base_url, &cfg.http)?,
            dataset: cfg.dataset.clone(),
            api_key,
            page_size: cfg.page_size,
        })
    }

    /// Records with a CO2 value in `[from_ms, to_ms)`, every page of every
    /// window, as points.
    pub async fn records(
        &self,
        from_ms: i64,
        to_ms: i64,
        now_ms: i64,
    ) -> Result<Vec<IntensityPoint>, GridError> {
        let path = format!("api/explore/v2.1/catalog/datasets/{}/records", self.dataset);
        let what = format!("/{path}");
        let mut headers = HeaderMap::new();
        if let Some(key) = &self.api_key {
            headers.insert(
                reqwest::header::AUTHORIZATION,
                secret_header(&format!("Apikey {}", key.0))?,
            );
        }
        let mut rows: Vec<(i64, f64)> = Vec::new();
        for (start, end) in windows(from_ms, to_ms, WINDOW_MS) {
            tracing::debug!(provider = "odre", from = %time::format_utc(start), to = %time::format_utc(end), "fetching");
            let clause = format!(
                "date_heure >= date'{}' AND date_heure < date'{}' AND taux_co2 IS NOT NULL",
                time::format_utc(start),
                time::format_utc(end)
            );
            let mut offset = 0usize;
            loop {
                let mut url = self.http.url(&path)?;
                url.query_pairs_mut()
                    .append_pair("select", "date_heure,taux_co2")
                    .append_pair("where", &clause)
                    .append_pair("order_by", "date_heure")
                    .append_pair("timezone", "UTC")
                    .append_pair("limit", &self.page_size.to_string())
                    .append_pair("offset", &offset.to_string());
                let body = self.http.get(url, headers.clone(), None).await?;
                let page: Page = json(&body, &what)?;
                if page.total_count + self.page_size > MAX_OFFSET {
                    return Err(GridError::Format {
                        what,
                        detail: format!(
                            "{} records in one window: more than the API pages through",
                            page.total_count
                        ),
                    });
                }
                let n = page.results.len();
                for (i, r) in page.results.into_iter().enumerate() {
                    let at = || format!("{what} record {}", offset + i);
                    let Some(v) = r.taux_co2 else { continue };
                    let t = time::parse_instant(&r.date_heure).map_err(|e| GridError::Format {
                        what: at(),
                        detail: e.to_string(),
                    })?;
                    rows.push((t, checked_value(v, at)?.0));
                }
                offset += n;
                if n == 0 || offset >= page.total_count {
                    break;
                }
            }
        }
        let starts: Vec<i64> = rows.iter().map(|r| r.0).collect();
        let step = time::infer_step(&starts, Step::Fixed(15 * MINUTE_MS));
        let mut points: Vec<IntensityPoint> = rows
            .into_iter()
            .map(|(start, v)| IntensityPoint {
                zone: ZONE.into(),
                start_ms: start,
                end_ms: step.end(start),
                intensity: Intensity::Average(vigie_energy::GramsPerKwh(v)),
                basis: Basis::Direct,
                estimated: false,
                source: ECO2MIX_SOURCE.into(),
                retrieved_ms: now_ms,
            })
            .collect();
        sort_dedup(&mut points);
        Ok(points)
    }
}

impl Provider for Odre {
    fn source(&self) -> &str {
        ECO2MIX_SOURCE
    }

    /// Published values only: eCO2mix has no CO2 forecast.
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
                    provider: ECO2MIX_SOURCE.into(),
                    zone: zone.to_owned(),
                });
            }
            // The value that started up to 15 minutes before `from_ms`
            // still covers its start.
            let mut points = self
                .records(from_ms - 15 * MINUTE_MS, to_ms, now_ms)
                .await?;
            points.retain(|p| p.overlaps(from_ms, to_ms));
            Ok(points)
        })
    }
}
