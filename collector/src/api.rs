//! HTTP: `/metrics` and the JSON API. Queries read the ledger through
//! their own connection (WAL: they never block ingest) on the blocking pool.

use crate::auth::{self, Guard, Role, Tokens};
use crate::backend::{self, Backend, Db, LedgerError};
use crate::metrics::Metrics;
use crate::store::Resolution;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use vigie_energy::{HOUR_MS, MINUTE_MS};

/// Static grid factor and its provenance.
#[derive(Debug, Clone, Serialize)]
pub struct Factor {
    /// Grid zone.
    pub zone: String,
    /// gCO2e/kWh.
    pub g_per_kwh: f64,
    /// Always `average` here: marginal factors never enter inventories.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Where the figure comes from.
    pub source: String,
    /// Whether the factor is itself an estimate.
    pub estimated: bool,
}

/// Shared state of the handlers.
#[derive(Clone)]
pub struct AppState {
    db: Arc<Mutex<Option<Backend>>>,
    db_path: Arc<PathBuf>,
    metrics: Arc<Metrics>,
    factor: Arc<Factor>,
    carbon: Arc<crate::config::CarbonConfig>,
    site: Arc<crate::site::SiteConfig>,
    /// The site's PUE over the last week for the signals, and when it was
    /// computed (it needs a pass over the facility meters).
    pue_cache: Arc<Mutex<PueCache>>,
    /// One PUE computation at a time: the API has one ledger connection,
    /// and at 2,000 signal requests a second an expired cache would
    /// otherwise queue one computation per request.
    pue_refresh: Arc<tokio::sync::Mutex<()>>,
    /// How many times the PUE was computed (tests only).
    #[cfg(test)]
    pue_computed: Arc<std::sync::atomic::AtomicU64>,
    /// Grid points for the signal routes.
    points_cache: Arc<crate::signals::PointsCache>,
    /// Signs exports served over HTTP.
    signing_key: Option<Arc<ed25519_dalek::SigningKey>>,
    /// The public disclosure page's settings and cache.
    public: Arc<crate::public::PublicState>,
    /// The permit dossier's settings.
    dossier: Arc<crate::dossier::Settings>,
    /// A host whose last batch is older than this is `stale` (ms).
    host_stale_after_ms: i64,
}

/// Default of `[ingest] host_stale_after`, in ms.
pub const DEFAULT_HOST_STALE_AFTER_MS: i64 = 5 * 60_000;

/// When the PUE was computed, and what it was.
type PueCache = Option<(i64, Option<MeasuredPue>)>;

/// The site's measured PUE, for the signals.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MeasuredPue {
    /// The value.
    pub value: f64,
    /// `measured` or `estimated` (incomplete figures are not used).
    pub status: &'static str,
    /// The period's start, Unix ms (it ends at the computation time).
    pub from_ms: i64,
}

impl AppState {
    /// State reading the ledger at `db_path`.
    pub fn new(
        db_path: PathBuf,
        metrics: Arc<Metrics>,
        factor: Factor,
        carbon: crate::config::CarbonConfig,
        site: crate::site::SiteConfig,
    ) -> Self {
        AppState {
            db: Arc::new(Mutex::new(None)),
            db_path: Arc::new(db_path),
            metrics,
            factor: Arc::new(factor),
            dossier: Arc::new(crate::dossier::Settings {
                site: site.clone(),
                carbon: carbon.clone(),
                dossier: crate::dossier::DossierConfig::default(),
                site_id: String::new(),
            }),
            carbon: Arc::new(carbon),
            site: Arc::new(site),
            pue_cache: Arc::new(Mutex::new(None)),
            pue_refresh: Arc::new(tokio::sync::Mutex::new(())),
            #[cfg(test)]
            pue_computed: Arc::new(std::sync::atomic::AtomicU64::new(0)),
            points_cache: Arc::new(crate::signals::PointsCache::default()),
            host_stale_after_ms: DEFAULT_HOST_STALE_AFTER_MS,
            signing_key: None,
            public: Arc::new(crate::public::PublicState::default()),
        }
    }

    /// Signs the exports served over HTTP with `key`.
    pub fn with_signing_key(mut self, key: Option<ed25519_dalek::SigningKey>) -> Self {
        self.signing_key = key.map(Arc::new);
        self
    }

    /// [`crate::signals::points`], from memory when the cache holds them.
    pub async fn points(
        &self,
        zone: String,
        from_ms: i64,
        to_ms: i64,
        want: crate::signals::Want,
    ) -> Result<Vec<crate::grid::IntensityPoint>, ApiError> {
        use crate::signals::{self, PointsCache};
        let now = crate::now_ms();
        if let Some(v) = self.points_cache.get(&zone, from_ms, to_ms, want, now) {
            return Ok(v);
        }
        let cache = self.points_cache.clone();
        self.read(move |c| {
            if PointsCache::covers(from_ms, to_ms, now) {
                // Requests queued behind a reload find it done.
                if let Some(v) = cache.get(&zone, from_ms, to_ms, want, now) {
                    return Ok(v);
                }
                cache.load(c, &zone, now)?;
                if let Some(v) = cache.get(&zone, from_ms, to_ms, want, now) {
                    return Ok(v);
                }
            }
            signals::points(c, &zone, from_ms, to_ms, want)
        })
        .await
    }

    /// The site's PUE over the seven days before `now`, recomputed at most
    /// every five minutes; `None` without facility and IT meters or when
    /// the figure is incomplete. A value expired less than an hour ago is
    /// still answered while one background task recomputes it; without
    /// such a value, concurrent callers wait for one computation.
    pub async fn measured_pue(&self, now: i64) -> Result<Option<MeasuredPue>, ApiError> {
        const REFRESH: i64 = 300_000;
        const USABLE: i64 = HOUR_MS;
        let fresh = |at: i64| (now - at).abs() < REFRESH;
        let cached = || self.pue_cache.lock().ok().and_then(|g| *g);
        if let Some((at, v)) = cached()
            && (now - at).abs() < USABLE
        {
            // Holding the guard, re-read: a refresh that finished since the
            // first read stored its value before releasing it.
            if !fresh(at)
                && let Ok(guard) = self.pue_refresh.clone().try_lock_owned()
                && cached().is_none_or(|(at, _)| !fresh(at))
            {
                let state = self.clone();
                tokio::spawn(async move {
                    let _one_at_a_time = guard;
                    if let Err(e) = state.compute_pue(now).await {
                        tracing::debug!(error = %e, "measured PUE not refreshed");
                    }
                });
            }
            return Ok(v);
        }
        let _one_at_a_time = self.pue_refresh.lock().await;
        if let Some((at, v)) = cached()
            && fresh(at)
        {
            return Ok(v);
        }
        self.compute_pue(now).await
    }

    /// Computes the measured PUE for [`AppState::measured_pue`] and caches it.
    async fn compute_pue(&self, now: i64) -> Result<Option<MeasuredPue>, ApiError> {
        const WEEK: i64 = 7 * 86_400_000;
        #[cfg(test)]
        self.pue_computed
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let site = self.site.clone();
        let carbon = self.carbon.clone();
        // Whole hours: a period cut inside a minute has a sliver no bucket
        // covers, and the strict gap rule would leave PUE without a value.
        let to = now.div_euclid(HOUR_MS) * HOUR_MS;
        let from = to - WEEK;
        let v = self
            .read(move |c| {
                let f = match crate::site::figures(c, &site, &carbon.market, from, to) {
                    Ok(f) => f,
                    Err(e) => {
                        tracing::debug!(error = %e, "no measured PUE for the signals");
                        return Ok(None);
                    }
                };
                Ok(f.figures
                    .iter()
                    .find(|x| matches!(x.indicator, vigie_energy::Indicator::Pue { .. }))
                    .and_then(|x| {
                        if !x.status.is_complete() {
                            return None;
                        }
                        let status = x.status.as_str();
                        // A PUE under 1 means the meters' boundaries are
                        // wrong: not a figure to scale a signal with.
                        x.value
                            .filter(|v| (1.0..=10.0).contains(v))
                            .map(|value| MeasuredPue {
                                value,
                                status,
                                from_ms: from,
                            })
                    }))
            })
            .await?;
        if let Ok(mut g) = self.pue_cache.lock() {
            *g = Some((now, v));
        }
        Ok(v)
    }

    /// The period of a query with `from` and `to` as `range` read them:
    /// when `from` was not asked for, it starts at the hour of the ledger's
    /// first data (energy, hand readings, registers; data stamped before
    /// 2000, by a device whose clock was never set, is ignored), not in
    /// 1970, and never after `to`.
    pub(crate) async fn period(
        &self,
        q_from: Option<&str>,
        q_to: Option<&str>,
    ) -> Result<(i64, i64), ApiError> {
        let (from, to, _) = range(q_from, q_to)?;
        if q_from.is_some() {
            return Ok((from, to));
        }
        let first = self.read(|c| c.first_data_ms()).await?;
        let from = first.map_or(from, |t| t.div_euclid(HOUR_MS) * HOUR_MS);
        Ok((from.min(to), to))
    }

    /// The same state serving the public disclosure page as `cfg` says.
    pub fn with_public(mut self, cfg: crate::public::PublicConfig) -> Self {
        self.public = Arc::new(crate::public::PublicState::new(cfg));
        self
    }

    /// `/api/v1/hosts` calls a host `stale` once its last batch is older
    /// than `after` (or it never sent one).
    pub fn with_host_stale_after(mut self, after: std::time::Duration) -> Self {
        self.host_stale_after_ms = i64::try_from(after.as_millis()).unwrap_or(i64::MAX);
        self
    }

    /// The public page's settings and cache.
    pub(crate) fn public_state(&self) -> &Arc<crate::public::PublicState> {
        &self.public
    }

    /// The site model.
    pub(crate) fn site_arc(&self) -> Arc<crate::site::SiteConfig> {
        self.site.clone()
    }

    /// The carbon settings, shared.
    pub(crate) fn carbon_arc(&self) -> Arc<crate::config::CarbonConfig> {
        self.carbon.clone()
    }

    /// The permit dossier's settings (`[dossier]` and the MQTT site id);
    /// without this call the dossier says its study is not configured.
    pub fn with_dossier(mut self, dossier: crate::dossier::DossierConfig, site_id: &str) -> Self {
        self.dossier = Arc::new(crate::dossier::Settings {
            site: (*self.site).clone(),
            carbon: (*self.carbon).clone(),
            dossier,
            site_id: site_id.to_owned(),
        });
        self
    }

    /// The carbon settings.
    pub fn carbon(&self) -> &crate::config::CarbonConfig {
        &self.carbon
    }

    /// Runs `f` on the ledger in the blocking pool.
    pub async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Db) -> Result<T, LedgerError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let db = self.db.clone();
        let path = self.db_path.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = db
                .lock()
                .map_err(|_| ApiError::Internal("lock poisoned".into()))?;
            if guard.is_none() {
                *guard = Some(backend::open(&path)?);
            }
            let conn = guard
                .as_deref()
                .ok_or_else(|| ApiError::Internal("no connection".into()))?;
            Ok(f(conn)?)
        })
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
    }
}

/// API failures, rendered as JSON with a status.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is wrong; the message says how.
    #[error("{0}")]
    BadRequest(String),
    /// What the request names does not exist.
    #[error("{0}")]
    NotFound(String),
    /// Storage trouble.
    #[error("storage: {0}")]
    Store(#[from] LedgerError),
    /// Anything else on our side.
    #[error("internal: {0}")]
    Internal(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            _ => {
                tracing::error!(error = %self, "API error");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        let body = ErrorBody {
            error: self.to_string(),
        };
        (status, axum::Json(body)).into_response()
    }
}

/// The body of every error answer: `{"error": "..."}`.
#[derive(Debug, Serialize)]
struct ErrorBody {
    error: String,
}

/// Readiness: 200 once the broker has acknowledged every subscription of
/// the current connection, 503 before that and while it is down. A
/// telemetry message published while the collector is not subscribed is
/// not queued for it by the broker the first time it connects, so a
/// deployment (or a test) waits for this before sending.
async fn readyz(State(state): State<AppState>) -> axum::response::Response {
    if state.metrics.subscribed() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: not subscribed to the broker\n",
        )
            .into_response()
    }
}

/// The router: `/metrics`, `/healthz`, `/readyz`, `/api/v1/{hosts,energy,emissions}`.
pub fn router(state: AppState, tokens: Option<Arc<Tokens>>) -> Router {
    use Role::{Operator, Regulator, Scheduler};
    let guard = |allowed: &'static [Role]| {
        axum::middleware::from_fn_with_state(Guard::new(tokens.clone(), allowed), auth::require)
    };
    // Who may call what. Public routes (health, and the disclosure page)
    // take no token.
    let operator = Router::new()
        .route("/metrics", get(metrics))
        .route("/api/v1/hosts", get(hosts))
        .route("/api/v1/hosts/{host}/gaps", get(crate::losses_api::gaps))
        .route(
            "/api/v1/meters/{name}/readings",
            axum::routing::post(post_readings),
        )
        .route_layer(guard(&[Operator]));
    let reporting = Router::new()
        .route("/api/v1/energy", get(energy))
        .route("/api/v1/kpi", get(kpi))
        .route("/api/v1/scope2", get(scope2_route))
        .route("/api/v1/heat", get(heat_route))
        .route(
            "/api/v1/exports/{regime}",
            get(|State(s): State<AppState>, p, q| {
                crate::export::http_handler(
                    s.db_path.clone(),
                    s.site.clone(),
                    s.carbon.clone(),
                    s.signing_key.clone(),
                    p,
                    q,
                )
            }),
        )
        .route(
            "/api/v1/exports/public-key",
            get(|State(s): State<AppState>| async move {
                crate::export::http::public_key(s.signing_key.as_deref())
            }),
        )
        .route(
            "/api/v1/dossier",
            get(|State(s): State<AppState>, q| {
                crate::dossier::http::http_handler(
                    s.db_path.clone(),
                    s.dossier.clone(),
                    s.signing_key.clone(),
                    q,
                )
            }),
        )
        .route(
            "/api/v1/heat/potential",
            axum::routing::post(heat_potential),
        )
        .route_layer(guard(&[Operator, Regulator]));
    use crate::signals_api as sig;
    let signals = Router::new()
        .route("/emissions/bylocation", get(sig::by_location))
        .route("/emissions/bylocations", get(sig::by_locations))
        .route("/emissions/bylocations/best", get(sig::best))
        .route("/emissions/forecasts/current", get(sig::forecast))
        .route("/emissions/average-carbon-intensity", get(sig::average))
        .route("/locations", get(sig::locations_route))
        .route("/api/v1/signals/best-start", get(sig::best_start))
        .route("/api/v1/signals/keda-configmap", get(sig::keda))
        .route("/api/v1/signals/intensity", get(sig::intensity))
        .route("/api/v1/emissions", get(emissions_route))
        .route_layer(guard(&[Operator, Regulator, Scheduler]));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/api/openapi.json", get(openapi))
        .route("/public", get(crate::public::page))
        .route("/public/data.json", get(crate::public::data_json))
        .route("/public/data.csv", get(crate::public::data_csv))
        .merge(operator)
        .merge(reporting)
        .merge(signals)
        .with_state(state)
}

async fn metrics(State(s): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
        .into_response()
}

/// RFC 3339 (`2026-11-23T12:00:00Z`) or Unix milliseconds, if it is one
/// (the one calendar's rule, [`vigie_energy::calendar::parse_time`]).
pub use vigie_energy::calendar::parse_time as parse_time_str;

/// RFC 3339 (`2026-11-23T12:00:00Z`) or Unix milliseconds.
pub(crate) fn parse_time(name: &str, v: &str) -> Result<i64, ApiError> {
    parse_time_str(v).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "{name}: expected RFC 3339 (2026-11-23T12:00:00Z) or Unix milliseconds, got {v:?}"
        ))
    })
}

/// Unix ms as RFC 3339 with milliseconds: the API's shape (one calendar,
/// [`vigie_energy::calendar`]).
pub use vigie_energy::calendar::rfc3339_millis as rfc3339;

/// A time range: `from` and `to` floored to the bucket width, and the
/// hour table used when both fall on hours.
fn range(from: Option<&str>, to: Option<&str>) -> Result<(i64, i64, Resolution), ApiError> {
    let from = from
        .map(|v| parse_time("from", v))
        .transpose()?
        .unwrap_or(0);
    let to = match to {
        Some(v) => parse_time("to", v)?,
        // Up to the end of the current minute, so the open minute counts.
        None => (crate::now_ms() / MINUTE_MS + 1) * MINUTE_MS,
    };
    if to < from {
        return Err(ApiError::BadRequest("to is before from".into()));
    }
    let res = if from % HOUR_MS == 0 && to % HOUR_MS == 0 {
        Resolution::Hour
    } else {
        Resolution::Minute
    };
    let w = res.bucket_ms();
    Ok((from.div_euclid(w) * w, to.div_euclid(w) * w, res))
}

#[derive(Deserialize)]
struct EnergyQuery {
    from: Option<String>,
    to: Option<String>,
    group_by: Option<String>,
}

/// An energy amount in API answers. µJ as u128: a facility's total passes
/// u64 in weeks. (Serialized by `axum::Json` straight to text: a
/// `serde_json::Value` cannot hold an integer above u64.)
#[derive(Debug, Serialize)]
struct AmountJson {
    energy_uj: u128,
    measured_uj: u128,
    estimated_uj: u128,
    energy_kwh: f64,
    estimated: bool,
}

fn amount_json(m: u128, e: u128) -> AmountJson {
    AmountJson {
        energy_uj: m + e,
        measured_uj: m,
        estimated_uj: e,
        energy_kwh: (m + e) as f64 / 3.6e12,
        estimated: e > 0,
    }
}

#[derive(Debug, Serialize)]
struct EnergyGroup {
    host: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    sensor: Option<String>,
    /// False for a sensor its host's inventory marks as a component or
    /// an alternative of another: shown, not added into `total`.
    in_total: bool,
    #[serde(flatten)]
    amount: AmountJson,
}

#[derive(Debug, Serialize)]
struct EnergyAnswer {
    from: String,
    to: String,
    from_ms: i64,
    to_ms: i64,
    resolution: &'static str,
    group_by: &'static str,
    groups: Vec<EnergyGroup>,
    total: AmountJson,
}

async fn energy(
    State(s): State<AppState>,
    Query(q): Query<EnergyQuery>,
) -> Result<axum::Json<EnergyAnswer>, ApiError> {
    let (from, to, res) = range(q.from.as_deref(), q.to.as_deref())?;
    let by_sensor = match q.group_by.as_deref().unwrap_or("host") {
        "host" => false,
        "sensor" => true,
        other => {
            return Err(ApiError::BadRequest(format!(
                "group_by must be host or sensor, got {other:?}"
            )));
        }
    };
    // Read per sensor: a component or an alternative of a device's
    // boundary sensor is shown but never added into a host or the total.
    let (rows, uncounted) = s
        .read(move |c| Ok((c.energy_span(from, to, true)?, c.uncounted_sensors()?)))
        .await?;
    let (mut tm, mut te) = (0u128, 0u128);
    let mut groups: Vec<EnergyGroup> = Vec::new();
    for r in rows {
        let (m, e) = (r.amount.measured, r.amount.estimated);
        let counted = !r
            .sensor
            .as_ref()
            .is_some_and(|x| uncounted.get(&r.host).is_some_and(|u| u.contains(x)));
        if counted {
            tm += m;
            te += e;
        }
        if by_sensor {
            groups.push(EnergyGroup {
                host: r.host,
                sensor: r.sensor,
                in_total: counted,
                amount: amount_json(m, e),
            });
        } else if counted {
            match groups.last_mut() {
                Some(g) if g.host == r.host => {
                    g.amount = amount_json(g.amount.measured_uj + m, g.amount.estimated_uj + e);
                }
                _ => groups.push(EnergyGroup {
                    host: r.host,
                    sensor: None,
                    in_total: true,
                    amount: amount_json(m, e),
                }),
            }
        }
    }
    Ok(axum::Json(EnergyAnswer {
        from: rfc3339(from),
        to: rfc3339(to),
        from_ms: from,
        to_ms: to,
        resolution: res.as_str(),
        group_by: if by_sensor { "sensor" } else { "host" },
        groups,
        total: amount_json(tm, te),
    }))
}

#[derive(Debug, Serialize)]
struct HostJson {
    host: String,
    site: String,
    online: Option<bool>,
    boot_id: Option<String>,
    epoch: Option<i64>,
    last_seq: Option<i64>,
    last_seen: Option<String>,
    /// Seconds since `last_seen` (the collector's clock).
    last_batch_age_seconds: Option<i64>,
    /// No batch for longer than `ingest.host_stale_after`, or none ever:
    /// whatever its retained status says, its agent is not sending.
    stale: bool,
    sensors: Vec<String>,
    energy: AmountJson,
    meta: Option<Value>,
}

#[derive(Debug, Serialize)]
struct HostsAnswer {
    hosts: Vec<HostJson>,
}

async fn hosts(State(s): State<AppState>) -> Result<axum::Json<HostsAnswer>, ApiError> {
    let (hosts, totals, uncounted) = s
        .read(|c| Ok((c.hosts()?, c.totals()?, c.uncounted_sensors()?)))
        .await?;
    let mut per_host: BTreeMap<String, (u128, u128, Vec<String>)> = BTreeMap::new();
    for (host, sensor, a) in totals {
        let skip = uncounted.get(&host).is_some_and(|u| u.contains(&sensor));
        let e = per_host.entry(host).or_default();
        if !skip {
            e.0 += a.measured;
            e.1 += a.estimated;
        }
        e.2.push(sensor);
    }
    let now = crate::now_ms();
    let hosts = hosts
        .into_iter()
        .map(|h| {
            let (m, e, sensors) = per_host.remove(&h.host).unwrap_or_default();
            let (last_batch_age_seconds, stale) =
                liveness(h.last_seen_ms, now, s.host_stale_after_ms);
            HostJson {
                last_batch_age_seconds,
                stale,
                host: h.host,
                site: h.site,
                online: h.online,
                boot_id: h.boot_id,
                epoch: h.epoch,
                last_seq: h.last_seq,
                last_seen: h.last_seen_ms.map(rfc3339),
                sensors,
                energy: amount_json(m, e),
                meta: h.meta.and_then(|m| serde_json::from_str::<Value>(&m).ok()),
            }
        })
        .collect();
    Ok(axum::Json(HostsAnswer { hosts }))
}

/// A host's last batch age in seconds at `now_ms`, and whether it is
/// stale: no batch for longer than `stale_after_ms`, or none ever. Data
/// decide, not the retained status (which a broker restored from its
/// persistence keeps `online` for an agent that died meanwhile).
fn liveness(last_batch_ms: Option<i64>, now_ms: i64, stale_after_ms: i64) -> (Option<i64>, bool) {
    match last_batch_ms {
        None => (None, true),
        Some(t) => {
            let age_ms = now_ms.saturating_sub(t).max(0);
            (Some(age_ms / 1000), age_ms > stale_after_ms)
        }
    }
}

#[derive(Deserialize)]
struct EmissionsQuery {
    from: Option<String>,
    to: Option<String>,
    #[serde(default)]
    group_by: Option<String>,
}

/// `/api/v1/emissions` without `from`: the days up to `to` it answers.
pub const EMISSIONS_DEFAULT_DAYS: i64 = 7;
/// The longest period `/api/v1/emissions` answers, in days.
pub const EMISSIONS_MAX_DAYS: i64 = 366;
/// The most host-hours (`series` rows) one `/api/v1/emissions` answer holds.
pub const EMISSIONS_MAX_ROWS: usize = 50_000;

/// `GET /api/v1/emissions?from=&to=&group_by=`: location- and
/// market-based grams per host and hour. Bounded: without `from`, the
/// [`EMISSIONS_DEFAULT_DAYS`] up to `to` (default now), as the scheduler
/// routes; at most [`EMISSIONS_MAX_DAYS`] and [`EMISSIONS_MAX_ROWS`]
/// host-hours, else 400 naming the limit.
async fn emissions_route(
    State(s): State<AppState>,
    Query(q): Query<EmissionsQuery>,
) -> Result<axum::Json<Value>, ApiError> {
    let (from, to, _) = range(q.from.as_deref(), q.to.as_deref())?;
    let from = if q.from.is_none() {
        to - EMISSIONS_DEFAULT_DAYS * 24 * HOUR_MS
    } else {
        from
    };
    // Hourly figures: widen to whole hours.
    let from = from.div_euclid(HOUR_MS) * HOUR_MS;
    let to = (to + HOUR_MS - 1).div_euclid(HOUR_MS) * HOUR_MS;
    if to - from > EMISSIONS_MAX_DAYS * 24 * HOUR_MS {
        return Err(ApiError::BadRequest(format!(
            "emissions are given per host and hour: ask for at most {EMISSIONS_MAX_DAYS} days at a time (from, to); without from, the last {EMISSIONS_DEFAULT_DAYS} days"
        )));
    }
    let carbon = s.carbon.clone();
    let (rows, factors) = s
        .read(move |c| crate::carbon::location_based(c, &carbon, from, to))
        .await?;
    if rows.len() > EMISSIONS_MAX_ROWS {
        return Err(ApiError::BadRequest(format!(
            "{} host-hours in that period, more than the {EMISSIONS_MAX_ROWS} one answer holds: ask for a shorter period (from, to)",
            rows.len()
        )));
    }
    let group_by = q.group_by.as_deref().unwrap_or("host");
    if !["host", "rack", "room", "site"].contains(&group_by) {
        return Err(ApiError::BadRequest(
            "group_by must be host, rack, room or site".into(),
        ));
    }
    // Market-based: the site's hourly effective factor, when a grid-import
    // meter makes the site's Scope 2 computable, allocated by consumption.
    let (site, carbon) = (s.site.clone(), s.carbon.clone());
    let market = s
        .read(move |c| {
            let places = crate::carbon::host_places(c)?;
            let has_grid = site
                .meters
                .iter()
                .any(|m| m.role == crate::site::Role::GridImport);
            let factors = if has_grid {
                crate::site::scope2(c, &site, &carbon, from, to)
                    .map(|(r, _)| crate::carbon::market_factors(&r))
                    .map_err(|e| e.to_string())
            } else {
                Err("no [site] grid-import meter".to_owned())
            };
            Ok((places, factors))
        })
        .await?;
    let (places, market) = market;
    let (market, market_note) = match market {
        Ok(f) => (Some(f), None),
        Err(why) => (None, Some(why)),
    };
    let group_of = |host: &str| -> String {
        match group_by {
            "site" => "site".into(),
            "rack" => places
                .get(host)
                .map(|(room, rack)| format!("{room}/{rack}"))
                .unwrap_or_else(|| "unassigned".into()),
            "room" => places
                .get(host)
                .map(|(room, _)| room.clone())
                .unwrap_or_else(|| "unassigned".into()),
            _ => host.to_owned(),
        }
    };
    // group -> (µJ, location g, estimated µJ, market g, hours without a market factor)
    let mut totals: BTreeMap<String, (u128, f64, u128, f64, usize)> = BTreeMap::new();
    // Groups with grams from an estimated factor (fallback, forecast, partial hour).
    let mut factor_estimated: std::collections::BTreeSet<String> = Default::default();
    let series: Vec<Value> = rows
        .iter()
        .map(|r| {
            let f = factors.get(&r.hour_ms);
            let m = market.as_ref().and_then(|m| m.get(&r.hour_ms));
            let market_g = m.map(|g_per_kwh| r.energy.as_kwh() * g_per_kwh);
            let t = totals.entry(group_of(&r.host)).or_default();
            t.0 += u128::from(r.energy.0);
            t.1 += r.emissions.0;
            t.2 += u128::from(r.estimated_energy.0);
            if r.factor_estimated {
                factor_estimated.insert(group_of(&r.host));
            }
            match market_g {
                Some(g) => t.3 += g,
                None => t.4 += 1,
            }
            json!({
                "host": r.host,
                "group": group_of(&r.host),
                "hour": rfc3339(r.hour_ms),
                "energy_kwh": r.energy.as_kwh(),
                "emissions_g": r.emissions.0,
                "market_emissions_g": market_g,
                "estimated": r.estimated(),
                "factor_g_per_kwh": f.map(|f| f.g_per_kwh),
                "factor_estimated": r.factor_estimated,
                "fallback": f.is_some_and(|f| f.fallback),
            })
        })
        .collect();
    let with_market = market.is_some();
    let totals: Vec<Value> = totals
        .into_iter()
        .map(|(group, (uj, g, est, mg, missing))| {
            let estimated = est > 0 || factor_estimated.contains(&group);
            json!({
                group_by: group,
                "energy_kwh": uj as f64 / 3.6e12,
                "emissions_g": g,
                "market_emissions_g": (with_market && missing == 0).then_some(mg),
                "market_hours_missing": if with_market { Some(missing) } else { None },
                "estimated": estimated,
            })
        })
        .collect();
    let fallback_hours = factors.values().filter(|f| f.fallback).count();
    let factors: Vec<Value> = factors
        .iter()
        .map(|(h, f)| {
            json!({
                "hour": rfc3339(*h),
                "g_per_kwh": f.g_per_kwh,
                "sources": f.sources,
                "estimated": f.estimated,
                "fallback": f.fallback,
            })
        })
        .collect();
    Ok(axum::Json(json!({
        "method": "location-based",
        "group_by": group_by,
        "market_based": match &market_note {
            None => "the site's hourly market-based factor (market-based grams / site grid import) applied to each group's consumption".to_owned(),
            Some(why) => format!("not computed: {why}"),
        },
        "zone": s.carbon.zone,
        "basis": s.carbon.basis.as_str(),
        "factor_type": "average",
        "static_factor": *s.factor,
        "factor_rule": crate::carbon::HOURLY_RULE,
        "fallback_hours": fallback_hours,
        "from": rfc3339(from),
        "to": rfc3339(to),
        "series": series,
        "totals": totals,
        "factors": factors,
    })))
}

/// The OpenAPI document of every route.
pub const OPENAPI: &str = include_str!("../api/openapi.json");

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// `GET /api/v1/kpi?from=&to=`: every facility indicator whose meters
/// are configured, each with its coverage and status.
/// The `/api/v1/kpi` answer. Fields are declared in alphabetical order:
/// the `json!` object this replaced sorted its keys, and the bytes stay
/// the same.
#[derive(Debug, Serialize)]
struct KpiAnswer {
    computer_room_area_m2: Option<f64>,
    figures: Vec<Value>,
    floor_area_m2: Option<f64>,
    from: String,
    installed_it_kw: Option<f64>,
    meters: Vec<MeterTotal>,
    roles_without_meter: Vec<&'static str>,
    to: String,
}

/// One meter's total over the period in [`KpiAnswer`] (fields in
/// alphabetical order, as there).
#[derive(Debug, Serialize)]
struct MeterTotal {
    estimated: f64,
    filled: f64,
    measured: f64,
    meter: String,
    missing_share: Option<f64>,
    role: &'static str,
    total: Option<f64>,
    unit: &'static str,
}

impl MeterTotal {
    fn new(meter: &str, role: crate::site::Role, i: &vigie_energy::InputUsed) -> Self {
        MeterTotal {
            estimated: i.estimated,
            filled: i.filled,
            measured: i.measured,
            meter: meter.to_owned(),
            missing_share: i.coverage.map(|c| c.missing_share()),
            role: role.as_str(),
            total: i.total,
            unit: i.unit,
        }
    }
}

async fn kpi(
    State(s): State<AppState>,
    Query(q): Query<EmissionsQuery>,
) -> Result<axum::Json<KpiAnswer>, ApiError> {
    let (from, to) = s.period(q.from.as_deref(), q.to.as_deref()).await?;
    let (site, carbon) = (s.site.clone(), s.carbon.clone());
    let result = s
        .read(move |c| Ok(crate::site::figures(c, &site, &carbon.market, from, to)))
        .await?;
    let f = result.map_err(|e| ApiError::BadRequest(e.to_string()))?;
    Ok(axum::Json(KpiAnswer {
        computer_room_area_m2: s.site.computer_room_area_m2,
        figures: f.figures.iter().map(crate::site::figure_json).collect(),
        floor_area_m2: s.site.floor_area_m2,
        from: rfc3339(from),
        installed_it_kw: s.site.installed_it_kw,
        meters: f
            .totals
            .iter()
            .map(|(name, role, i)| MeterTotal::new(name, *role, i))
            .collect(),
        roles_without_meter: f.missing_roles.iter().map(|r| r.as_str()).collect(),
        to: rfc3339(to),
    }))
}

/// `GET /api/v1/scope2?from=&to=`: the site's location- and market-based
/// Scope 2 over whole hours, instrument use, the hourly CFE score and CUE.
async fn scope2_route(
    State(s): State<AppState>,
    Query(q): Query<EmissionsQuery>,
) -> Result<axum::Json<Value>, ApiError> {
    use vigie_energy::MarketSource;
    let (from, to, _) = range(q.from.as_deref(), q.to.as_deref())?;
    // As documented: the last 24 hours by default (Scope 2 is hour by
    // hour, and periods are bounded).
    // Without `to`, up to the last whole hour: the hour under way is not
    // over, and would count as a gap.
    let to = if q.to.is_none() {
        to.div_euclid(HOUR_MS) * HOUR_MS
    } else {
        to
    };
    let from = if q.from.is_none() {
        to - 24 * HOUR_MS
    } else {
        from
    };
    let (site, carbon) = (s.site.clone(), s.carbon.clone());
    let result = s
        .read(move |c| Ok(crate::site::scope2(c, &site, &carbon, from, to)))
        .await?;
    let (r, cue) = result.map_err(|e| ApiError::BadRequest(e.to_string()))?;
    // `+ 0.0` turns a -0.0 (a sum of nothing) into 0.
    let kg = |g: vigie_energy::GramsCo2e| g.0 / 1000.0 + 0.0;
    let fallback_hours = r
        .hours
        .iter()
        .filter(|h| {
            h.tranches
                .iter()
                .any(|t| t.source == MarketSource::GridAverage)
        })
        .count();
    Ok(axum::Json(json!({
        "from": rfc3339(r.period.from_ms()),
        "to": rfc3339(r.period.to_ms()),
        "consumption_kwh": r.consumption().as_kwh(),
        "measured_kwh": r.measured.as_kwh(),
        "estimated_kwh": r.estimated.as_kwh(),
        "coverage": {
            "measured_share": r.coverage.measured_share(),
            "estimated_share": r.coverage.estimated_share(),
            "missing_share": r.coverage.missing_share(),
        },
        // Over the hours the grid meter covers (nothing is extrapolated):
        // `incomplete` says a part of the period is missing from them.
        "location_based_kg": kg(r.location),
        "location_based_status": crate::report::scope2_status(&r, vigie_energy::Scope2Basis::LocationBased),
        "market_based_kg": kg(r.market),
        "market_based_status": crate::report::scope2_status(&r, vigie_energy::Scope2Basis::MarketBased),
        "market_hours_on_grid_average": fallback_hours,
        "zone": s.carbon.zone,
        "basis": s.carbon.basis.as_str(),
        "instruments": r.instruments.iter().map(|i| json!({
            "name": i.name,
            "kind": format!("{:?}", i.kind).to_lowercase(),
            "origin": format!("{:?}", i.origin).to_lowercase(),
            "factor_g_per_kwh": i.factor.0,
            "offered_kwh": i.offered.as_kwh(),
            "applied_kwh": i.applied.as_kwh(),
            "surplus_kwh": i.surplus.as_kwh(),
        })).collect::<Vec<_>>(),
        "allocation": "annual volumes enter pro rata to the part of their year the period covers, then to hours pro rata to uncovered consumption",
        "cfe": {
            "score": r.cfe.score,
            "consumption_kwh": r.cfe.consumption.as_kwh(),
            "carbon_free_supply_kwh": r.cfe.supply.as_kwh(),
            "matched_kwh": r.cfe.matched.as_kwh(),
            "note": "hourly matching counts hourly volumes only; annual certificates have no hour",
        },
        "cue": cue.iter().map(crate::site::figure_json).collect::<Vec<_>>(),
    })))
}

/// `GET /api/v1/heat?from=&to=`: measured heat reuse.
async fn heat_route(
    State(s): State<AppState>,
    Query(q): Query<EmissionsQuery>,
) -> Result<axum::Json<Value>, ApiError> {
    let (from, to) = s.period(q.from.as_deref(), q.to.as_deref()).await?;
    let site = s.site.clone();
    let r = s
        .read(move |c| Ok(crate::site::measured_heat(c, &site, from, to)))
        .await?;
    r.map(axum::Json)
        .map_err(|e| ApiError::BadRequest(e.to_string()))
}

/// `POST /api/v1/heat/potential`: the heat-reuse potential study.
async fn heat_potential(
    axum::Json(req): axum::Json<crate::heat_api::PotentialRequest>,
) -> Result<axum::Json<Value>, ApiError> {
    tokio::task::spawn_blocking(move || crate::heat_api::study(&req))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map(axum::Json)
        .map_err(ApiError::BadRequest)
}

/// One manual reading as posted: an amount over an interval.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PostedReading {
    from: String,
    to: String,
    /// Energy meters.
    #[serde(default)]
    kwh: Option<f64>,
    /// Water meters.
    #[serde(default)]
    litres: Option<f64>,
    #[serde(default)]
    estimated: bool,
    #[serde(default)]
    note: Option<String>,
}

/// `POST /api/v1/meters/{name}/readings`: manual readings of a manual
/// meter (no ledger sensors), all or none.
async fn post_readings(
    State(s): State<AppState>,
    axum::extract::Path(name): axum::extract::Path<String>,
    axum::Json(body): axum::Json<Vec<PostedReading>>,
) -> Result<axum::Json<Stored>, ApiError> {
    let meter = s
        .site
        .meters
        .iter()
        .find(|m| m.name == name)
        .ok_or_else(|| ApiError::BadRequest(format!("no meter {name:?} in [site]")))?;
    if !meter.is_manual() {
        return Err(ApiError::BadRequest(format!(
            "meter {name:?} reads the ledger; manual readings go to meters without sensors or register"
        )));
    }
    let water = matches!(
        meter.role,
        crate::site::Role::Water
            | crate::site::Role::WaterPotable
            | crate::site::Role::WaterNonPotable
    );
    let mut readings = Vec::with_capacity(body.len());
    for r in body {
        let amount = match (water, r.kwh, r.litres) {
            (false, Some(k), None) if k.is_finite() && k >= 0.0 => (k * 3.6e12).round() as u128,
            (true, None, Some(l)) if l.is_finite() && l >= 0.0 => l.round() as u128,
            _ => {
                return Err(ApiError::BadRequest(format!(
                    "each reading needs a non-negative {} (and nothing else)",
                    if water { "`litres`" } else { "`kwh`" }
                )));
            }
        };
        readings.push(crate::site::ManualReading {
            start_ms: parse_time("from", &r.from)?,
            end_ms: parse_time("to", &r.to)?,
            amount,
            estimated: r.estimated,
            note: r.note,
        });
    }
    let n = readings.len();
    let path = s.db_path.clone();
    let result = tokio::task::spawn_blocking(move || {
        let mut conn = backend::open(&path)?;
        Ok::<_, LedgerError>(crate::site::add_manual(
            &mut *conn,
            &name,
            &readings,
            crate::now_ms(),
        ))
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))??;
    result.map_err(|e| ApiError::BadRequest(e.to_string()))?;
    Ok(axum::Json(Stored { stored: n }))
}

/// The answer to posted readings: how many were stored.
#[derive(Debug, Serialize)]
struct Stored {
    stored: usize,
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::store;

    /// The API's state over the ledger at `db` with `site`, a static FR
    /// factor of 50 g/kWh and no token.
    fn test_state(db: PathBuf, site: crate::site::SiteConfig) -> AppState {
        AppState::new(
            db,
            Arc::new(Metrics::new("FR", vigie_energy::GramsPerKwh(50.0))),
            Factor {
                zone: "FR".into(),
                g_per_kwh: 50.0,
                kind: "average",
                source: "test".into(),
                estimated: false,
            },
            crate::config::CarbonConfig::default(),
            site,
        )
    }

    #[test]
    fn a_host_is_stale_from_its_data_not_its_status() {
        let t = 1_795_000_000_000;
        let after = 5 * 60_000;
        assert_eq!(liveness(Some(t), t + 42_900, after), (Some(42), false));
        assert_eq!(liveness(Some(t), t + after, after), (Some(300), false));
        assert_eq!(liveness(Some(t), t + after + 1, after), (Some(300), true));
        assert_eq!(
            liveness(Some(t), t + 293_000_000, after),
            (Some(293_000), true)
        );
        // Never a batch: stale, whatever its status.
        assert_eq!(liveness(None, t, after), (None, true));
        // A batch stamped after now (a clock stepped back): age 0, live.
        assert_eq!(liveness(Some(t + 5_000), t, after), (Some(0), false));
    }

    #[tokio::test]
    async fn hosts_say_which_are_stale() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("ledger.sqlite");
        let conn = store::open(&db).unwrap();
        // An agent whose retained status says online but that never sent
        // a batch, and one whose last batch is from 1970.
        conn.execute(
            "INSERT INTO hosts (host, site, online) VALUES ('ghost', 'par1', 1)",
            [],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO hosts (host, site, online, last_seen_ms) VALUES ('old', 'par1', 1, 1000)",
            [],
        )
        .unwrap();
        drop(conn);
        let state = test_state(db, crate::site::SiteConfig::default());
        let axum::Json(h) = hosts(State(state)).await.unwrap();
        let v = serde_json::to_value(&h).unwrap();
        assert_eq!(v["hosts"][0]["host"], "ghost");
        assert_eq!(v["hosts"][0]["online"], true);
        assert_eq!(v["hosts"][0]["stale"], true);
        assert_eq!(v["hosts"][0]["last_batch_age_seconds"], Value::Null);
        assert_eq!(v["hosts"][1]["stale"], true);
        assert!(v["hosts"][1]["last_batch_age_seconds"].as_i64().unwrap() > 1_700_000_000);
    }

    /// A grid-import meter on sensor `f/grid` and an IT meter on `f/it`.
    const GRID_AND_IT: &str = "[[meters]]\nname = \"grid\"\nrole = \"grid-import\"\nsensors = [{ host = \"f\", sensor = \"grid\" }]\n[[meters]]\nname = \"it\"\nrole = \"it\"\nsensors = [{ host = \"f\", sensor = \"it\" }]\n";

    #[test]
    fn the_openapi_document_covers_every_route() {
        let doc: Value = serde_json::from_str(OPENAPI).unwrap();
        let documented: std::collections::BTreeSet<String> =
            doc["paths"].as_object().unwrap().keys().cloned().collect();
        // Every `.route("...")` of this file, multi-line calls included.
        let src = include_str!("api.rs");
        let mut routed = std::collections::BTreeSet::new();
        for part in src.split(".route(").skip(1) {
            let rest = part.trim_start();
            if let Some(r) = rest.strip_prefix("\"/") {
                routed.insert(format!("/{}", r.split('"').next().unwrap()));
            }
        }
        assert!(routed.len() > 15, "{routed:?}");
        assert_eq!(
            routed, documented,
            "document every route in collector/api/openapi.json"
        );
    }

    #[test]
    fn ranges_pick_their_table() {
        let (f, t, r) = range(Some("2026-11-23T10:00:00Z"), Some("2026-11-23T12:00:00Z")).unwrap();
        assert_eq!(r, Resolution::Hour);
        assert_eq!(t - f, 2 * HOUR_MS);
        let (f, _, r) = range(Some("1795000030123"), Some("1795000100000")).unwrap();
        assert_eq!(r, Resolution::Minute);
        assert_eq!(f, 1_795_000_020_000);
        assert!(matches!(
            range(Some("yesterday"), None),
            Err(ApiError::BadRequest(_))
        ));
        assert!(matches!(
            range(Some("2000"), Some("1000")),
            Err(ApiError::BadRequest(_))
        ));
        assert_eq!(rfc3339(1_795_000_020_000), "2026-11-18T11:07:00.000Z");
        // Absurd instants are refused, not overflowed later.
        assert!(parse_time("t", "-9223372036854775808").is_err());
        assert!(parse_time("t", "9223372036854775807").is_err());
    }
    #[tokio::test]
    async fn the_signals_measured_pue_is_over_whole_hours_under_the_strict_rule() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("ledger.sqlite");
        let conn = store::open(&db).unwrap();
        // Minute buckets of a grid meter (1.5 kWh/min) and an IT meter
        // (1 kWh/min) from eight days ago to the end of this minute.
        let now = crate::now_ms();
        let end = (now / MINUTE_MS + 1) * MINUTE_MS;
        let mut t = (now / HOUR_MS - 8 * 24) * HOUR_MS;
        // One transaction: 23,000 rows, one sync.
        conn.execute_batch("BEGIN").unwrap();
        let mut ins = conn
            .prepare("INSERT INTO energy_minute (host, sensor, bucket_ms, measured_uj, estimated_uj) VALUES ('f', ?1, ?2, ?3, 0)")
            .unwrap();
        while t < end {
            ins.execute(rusqlite::params!["grid", t, 5_400_000_000_000i64])
                .unwrap();
            ins.execute(rusqlite::params!["it", t, 3_600_000_000_000i64])
                .unwrap();
            t += MINUTE_MS;
        }
        drop(ins);
        conn.execute_batch("COMMIT").unwrap();
        drop(conn);
        let site: crate::site::SiteConfig = toml::from_str(GRID_AND_IT).unwrap();
        let state = test_state(db, site);
        let pue = state
            .measured_pue(now)
            .await
            .unwrap()
            .expect("a measured PUE");
        assert!((pue.value - 1.5).abs() < 1e-9, "{pue:?}");
        assert_eq!(pue.status, "measured");
        assert_eq!(pue.from_ms % HOUR_MS, 0);
    }

    #[tokio::test]
    async fn a_facility_meter_past_u64_microjoules_stays_exact() {
        // 2,000 hours of a 10 MW meter (3.6e16 µJ each) and 123,456 µJ:
        // 7.2e19 µJ, past SQLite's and u64's integer ranges.
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("ledger.sqlite");
        let conn = store::open(&db).unwrap();
        conn.execute_batch("BEGIN").unwrap();
        let mut ins = conn
            .prepare("INSERT INTO energy_hour (host, sensor, bucket_ms, measured_uj, estimated_uj) VALUES ('fac', 'meter:mains', ?1, ?2, 0)")
            .unwrap();
        for h in 0..2_000i64 {
            ins.execute(rusqlite::params![h * HOUR_MS, 36_000_000_000_000_000i64])
                .unwrap();
        }
        ins.execute(rusqlite::params![2_000 * HOUR_MS, 123_456i64])
            .unwrap();
        drop(ins);
        conn.execute_batch("COMMIT").unwrap();
        conn.execute("INSERT INTO hosts (host, site) VALUES ('fac', 'par1')", [])
            .unwrap();
        let want: u128 = 2_000 * 36_000_000_000_000_000 + 123_456;
        let totals = store::totals(&conn).unwrap();
        assert_eq!(totals[0].2.measured, want);
        let rows = store::energy(&conn, Resolution::Hour, 0, 2_001 * HOUR_MS, true, false).unwrap();
        assert_eq!(rows[0].amount.measured, want);
        drop(conn);

        let state = test_state(db, crate::site::SiteConfig::default());
        let q = EnergyQuery {
            from: Some("0".into()),
            to: Some((2_001 * HOUR_MS).to_string()),
            group_by: Some("sensor".into()),
        };
        let axum::Json(answer) = energy(State(state.clone()), Query(q)).await.unwrap();
        let text = serde_json::to_string(&answer).unwrap();
        assert!(text.contains(&format!("\"energy_uj\":{want},")), "{text}");
        let axum::Json(hosts) = hosts(State(state)).await.unwrap();
        let text = serde_json::to_string(&hosts).unwrap();
        assert!(text.contains(&format!("\"measured_uj\":{want},")), "{text}");
    }

    #[tokio::test]
    async fn energy_over_unaligned_bounds_reads_hours_and_minute_edges() {
        // Five hours of hour rows only (as after `store.minute_retention`,
        // or the demo's simulated history), then an hour with its minutes:
        // 1,000 µJ a minute.
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("ledger.sqlite");
        let conn = store::open(&db).unwrap();
        for h in 0..5i64 {
            conn.execute(
                "INSERT INTO energy_hour (host, sensor, bucket_ms, measured_uj, estimated_uj) VALUES ('h', 's', ?1, 7000000, 0)",
                rusqlite::params![h * HOUR_MS],
            )
            .unwrap();
        }
        for m in 0..60i64 {
            conn.execute(
                "INSERT INTO energy_minute (host, sensor, bucket_ms, measured_uj, estimated_uj) VALUES ('h', 's', ?1, 1000, 0)",
                rusqlite::params![5 * HOUR_MS + m * MINUTE_MS],
            )
            .unwrap();
        }
        conn.execute(
            "INSERT INTO energy_hour (host, sensor, bucket_ms, measured_uj, estimated_uj) VALUES ('h', 's', ?1, 60000, 0)",
            rusqlite::params![5 * HOUR_MS],
        )
        .unwrap();
        drop(conn);
        let state = test_state(db, crate::site::SiteConfig::default());
        let total = |from: i64, to: i64| {
            let state = state.clone();
            async move {
                let q = EnergyQuery {
                    from: Some(from.to_string()),
                    to: Some(to.to_string()),
                    group_by: None,
                };
                let axum::Json(a) = energy(State(state), Query(q)).await.unwrap();
                a.total.energy_uj
            }
        };
        // From the start to half past hour 5: five history hours and 30
        // minutes. Before, an unaligned bound read minutes only: 30,000.
        assert_eq!(total(0, 5 * HOUR_MS + 30 * MINUTE_MS).await, 35_030_000);
        // From a quarter past hour 1: the history hour cut at the edge has
        // no minutes, so it is left out; hours 2 to 4 and hour 5 whole.
        assert_eq!(
            total(HOUR_MS + 15 * MINUTE_MS, 6 * HOUR_MS).await,
            21_060_000
        );
        // Inside one hour: its minutes.
        assert_eq!(
            total(5 * HOUR_MS + 10 * MINUTE_MS, 5 * HOUR_MS + 20 * MINUTE_MS).await,
            10_000
        );
    }

    #[tokio::test]
    async fn a_device_seen_several_ways_counts_once_in_every_total() {
        // The DMTF public-rackmount1 server as the agent publishes it: the
        // TotalEnergy register is the boundary; legacy PowerControl and
        // EnvironmentMetrics power are the same energy; the Bay1 supply's
        // register is a part of it. Plus the host's own RAPL (no scope).
        use vigie_protocol::{EnergyScope, ScopeRole};
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("ledger.sqlite");
        let mut conn = store::open(&db).unwrap();
        let sensors = [
            (
                "bmc:sensor-1U.TotalEnergy",
                3_600_000_001u64,
                Some((ScopeRole::Boundary, None)),
            ),
            (
                "bmc:chassis-1U",
                3_300_000_000,
                Some((ScopeRole::Alternative, Some("bmc:sensor-1U.TotalEnergy"))),
            ),
            (
                "bmc:chassis-1U.env",
                3_400_000_000,
                Some((ScopeRole::Alternative, Some("bmc:sensor-1U.TotalEnergy"))),
            ),
            (
                "bmc:psu-1U.Bay1",
                3_600_000_000,
                Some((ScopeRole::Component, Some("bmc:sensor-1U.TotalEnergy"))),
            ),
            ("rapl:package-0", 1_000_007, None),
        ];
        let mut meta = vigie_protocol::samples::meta();
        meta.host = "h".into();
        meta.sensors = sensors
            .iter()
            .map(|(name, _, scope)| vigie_protocol::SensorMeta {
                name: (*name).into(),
                kind: "redfish".into(),
                domain: "chassis".into(),
                source: "http://127.0.0.1".into(),
                max_range_uj: None,
                method: None,
                topology: None,
                scope: scope.map(|(role, of)| EnergyScope {
                    scope: "bmc:1U".into(),
                    role,
                    of: of.map(Into::into),
                }),
            })
            .collect();
        let mut p = store::Pending::default();
        for (name, uj, _) in &sensors {
            let a = store::Amount {
                measured: *uj,
                estimated: 0,
            };
            for bucket in [HOUR_MS, HOUR_MS + MINUTE_MS] {
                let key = ("h".to_owned(), (*name).to_owned(), bucket);
                p.minute.insert(key, a);
            }
            p.hour.insert(
                ("h".to_owned(), (*name).to_owned(), HOUR_MS),
                store::Amount {
                    measured: 2 * uj,
                    estimated: 0,
                },
            );
        }
        let tx = conn.transaction().unwrap();
        store::add_energy(&tx, &p).unwrap();
        store::set_meta(&tx, "par1", "h", &serde_json::to_string(&meta).unwrap()).unwrap();
        tx.commit().unwrap();
        drop(conn);
        // The boundary and the host's own counter, not the sum of five.
        let want: u128 = 2 * (3_600_000_001 + 1_000_007);
        let state = test_state(db, crate::site::SiteConfig::default());
        for (group_by, from, to) in [
            ("host", HOUR_MS, 2 * HOUR_MS),
            ("sensor", HOUR_MS, 2 * HOUR_MS),
            ("host", HOUR_MS, HOUR_MS + 2 * MINUTE_MS),
        ] {
            let q = EnergyQuery {
                from: Some(from.to_string()),
                to: Some(to.to_string()),
                group_by: Some(group_by.into()),
            };
            let axum::Json(a) = energy(State(state.clone()), Query(q)).await.unwrap();
            assert_eq!(a.total.energy_uj, want, "{group_by} {from}..{to}");
            if group_by == "host" {
                assert_eq!(a.groups.len(), 1);
                assert_eq!(a.groups[0].amount.energy_uj, want);
            } else {
                // Every sensor's own figure stays available.
                assert_eq!(a.groups.len(), 5);
                let psu = a
                    .groups
                    .iter()
                    .find(|g| g.sensor.as_deref() == Some("bmc:psu-1U.Bay1"))
                    .unwrap();
                assert_eq!((psu.in_total, psu.amount.energy_uj), (false, 7_200_000_000));
                assert_eq!(a.groups.iter().filter(|g| g.in_total).count(), 2);
            }
        }
        let axum::Json(h) = hosts(State(state)).await.unwrap();
        assert_eq!(h.hosts[0].energy.energy_uj, want);
        assert_eq!(h.hosts[0].sensors.len(), 5);
    }

    #[tokio::test]
    async fn all_time_figures_start_at_the_first_data_not_1970() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("ledger.sqlite");
        let conn = store::open(&db).unwrap();
        crate::grid::store::init(&conn).unwrap();
        let t0 = 1_790_000_000_000 / HOUR_MS * HOUR_MS;
        // A meter whose clock was never set once wrote in 1970: ignored.
        for (t, sensor) in [(60_000, "grid"), (t0 + 5 * MINUTE_MS, "grid"), (t0, "it")] {
            conn.execute(
                "INSERT INTO energy_hour (host, sensor, bucket_ms, measured_uj, estimated_uj) VALUES ('f', ?1, ?2, 1000, 0)",
                rusqlite::params![sensor, t],
            )
            .unwrap();
        }
        drop(conn);
        let site: crate::site::SiteConfig = toml::from_str(
            "[[meters]]\nname = \"grid\"\nrole = \"grid-import\"\nsensors = [{ host = \"f\", sensor = \"grid\" }]\n",
        )
        .unwrap();
        let state = test_state(db, site);
        let q = |from: Option<&str>| EmissionsQuery {
            from: from.map(str::to_owned),
            to: Some((t0 + 2 * HOUR_MS).to_string()),
            group_by: None,
        };
        // The answer as its JSON, as a client reads it.
        let kpi_json = |v: KpiAnswer| serde_json::to_value(v).unwrap();
        let axum::Json(v) = kpi(State(state.clone()), Query(q(None))).await.unwrap();
        let v = kpi_json(v);
        assert_eq!(v["from"], rfc3339(t0), "{v}");
        // Asked for: as asked.
        let axum::Json(v) = kpi(State(state.clone()), Query(q(Some("0"))))
            .await
            .unwrap();
        let v = kpi_json(v);
        assert_eq!(v["from"], rfc3339(0));
        // Emissions: the site's Scope 2 is computed (it used to fail on a
        // 1970 start, reported as "no grid-import meter").
        let axum::Json(v) = emissions_route(State(state), Query(q(None))).await.unwrap();
        let note = v["market_based"].as_str().unwrap();
        assert!(
            note.starts_with("the site's hourly market-based factor"),
            "{v}"
        );
    }

    #[tokio::test]
    async fn the_fallback_is_counted_and_flagged_where_it_was_applied() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("ledger.sqlite");
        let conn = store::open(&db).unwrap();
        crate::grid::store::init(&conn).unwrap();
        let t0 = 1_790_000_000_000 / HOUR_MS * HOUR_MS;
        // Energy in hour 0 (a stored series covers it) and 100 hours later
        // (nothing does: the static factor); none in between.
        for t in [t0, t0 + 100 * HOUR_MS] {
            conn.execute(
                "INSERT INTO energy_hour (host, sensor, bucket_ms, measured_uj, estimated_uj) VALUES ('h', 's', ?1, 3600000000000, 0)",
                rusqlite::params![t],
            )
            .unwrap();
        }
        let carbon = crate::config::CarbonConfig::default();
        crate::grid::store::upsert(
            &conn,
            &[crate::grid::IntensityPoint {
                zone: carbon.zone.clone(),
                start_ms: t0,
                end_ms: t0 + HOUR_MS,
                intensity: crate::grid::Intensity::Average(vigie_energy::GramsPerKwh(80.0)),
                basis: carbon.basis,
                estimated: false,
                source: "test-series".into(),
                retrieved_ms: 0,
            }],
        )
        .unwrap();
        drop(conn);
        let state = test_state(db, crate::site::SiteConfig::default());
        let q = EmissionsQuery {
            from: Some(t0.to_string()),
            to: Some((t0 + 101 * HOUR_MS).to_string()),
            group_by: None,
        };
        let axum::Json(v) = emissions_route(State(state), Query(q)).await.unwrap();
        // One hour with energy on the fallback, not the 99 empty ones.
        assert_eq!(v["fallback_hours"], 1, "{v}");
        assert_eq!(v["factors"].as_array().unwrap().len(), 2, "{v}");
        let series = v["series"].as_array().unwrap();
        assert_eq!(series.len(), 2);
        let (on_series, on_fallback) = (&series[0], &series[1]);
        assert_eq!(on_series["emissions_g"], 80.0);
        assert_eq!(on_series["estimated"], false);
        assert_eq!(on_series["fallback"], false);
        // The grams from the fallback are flagged where they are reported.
        assert_eq!(on_fallback["emissions_g"], 33.0);
        assert_eq!(on_fallback["estimated"], true, "{v}");
        assert_eq!(on_fallback["fallback"], true);
        assert_eq!(v["totals"][0]["estimated"], true);
        assert_eq!(v["basis"], "lifecycle");
        assert_eq!(v["factor_rule"], crate::carbon::HOURLY_RULE);
    }

    #[tokio::test]
    async fn emissions_without_a_period_are_the_last_week_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("ledger.sqlite");
        let conn = store::open(&db).unwrap();
        crate::grid::store::init(&conn).unwrap();
        let now = crate::now_ms() / HOUR_MS * HOUR_MS;
        // An hour of energy 30 days ago and one 2 hours ago.
        for t in [now - 30 * 24 * HOUR_MS, now - 2 * HOUR_MS] {
            conn.execute(
                "INSERT INTO energy_hour (host, sensor, bucket_ms, measured_uj, estimated_uj) VALUES ('h', 's', ?1, 3600000000000, 0)",
                rusqlite::params![t],
            )
            .unwrap();
        }
        drop(conn);
        let state = test_state(db, crate::site::SiteConfig::default());
        let q = |from: Option<&str>, to: Option<&str>| EmissionsQuery {
            from: from.map(str::to_owned),
            to: to.map(str::to_owned),
            group_by: None,
        };
        // No parameters: the last seven days only (it used to be all time).
        let axum::Json(v) = emissions_route(State(state.clone()), Query(q(None, None)))
            .await
            .unwrap();
        assert_eq!(v["series"].as_array().unwrap().len(), 1, "{v}");
        // Asked for, the older hour is there.
        let old = (now - 31 * 24 * HOUR_MS).to_string();
        let axum::Json(v) = emissions_route(State(state.clone()), Query(q(Some(&old), None)))
            .await
            .unwrap();
        assert_eq!(v["series"].as_array().unwrap().len(), 2, "{v}");
        // Longer than the limit: 400 naming it.
        let e = emissions_route(State(state), Query(q(Some("0"), None)))
            .await
            .unwrap_err();
        match e {
            ApiError::BadRequest(m) => assert!(m.contains("at most 366 days"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    /// Counts how many times the state computed the PUE.
    fn computed(state: &AppState) -> u64 {
        state
            .pue_computed
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_measured_pue_is_computed_once_however_many_ask() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("ledger.sqlite");
        drop(store::open(&db).unwrap());
        let site: crate::site::SiteConfig = toml::from_str(GRID_AND_IT).unwrap();
        let state = test_state(db, site);
        let now = 1_795_000_000_000;
        // Fifty requests at once before any value: one computation.
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..50 {
            let s = state.clone();
            set.spawn(async move { s.measured_pue(now).await.unwrap() });
        }
        while let Some(r) = set.join_next().await {
            // An empty ledger: no PUE, and that answer is cached too.
            assert_eq!(r.unwrap(), None);
        }
        assert_eq!(computed(&state), 1);
        // Within five minutes: from the cache.
        state.measured_pue(now + 299_000).await.unwrap();
        assert_eq!(computed(&state), 1);
        // Expired: fifty callers get the cached answer at once and one
        // background task recomputes.
        let later = now + 301_000;
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..50 {
            let s = state.clone();
            set.spawn(async move { s.measured_pue(later).await.unwrap() });
        }
        while let Some(r) = set.join_next().await {
            assert_eq!(r.unwrap(), None);
        }
        for _ in 0..200 {
            if computed(&state) == 2 && state.pue_refresh.try_lock().is_ok() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(computed(&state), 2);
        state.measured_pue(later + 1_000).await.unwrap();
        assert_eq!(computed(&state), 2);
        // More than an hour old: not answered stale but recomputed first.
        state.measured_pue(later + 2 * HOUR_MS).await.unwrap();
        assert_eq!(computed(&state), 3);
    }

    /// The typed answers write the same bytes as the `json!` objects they
    /// replaced (whose keys serde_json sorts): a field declared out of
    /// order, renamed or skipped when empty fails here.
    #[test]
    fn typed_answers_keep_the_json_bytes() {
        let bytes = |v: &dyn erased::Ser| v.bytes();
        let cov = vigie_energy::Coverage {
            period_ms: 1000,
            measured_ms: 750,
            estimated_ms: 0,
        };
        let i = vigie_energy::InputUsed {
            name: "E",
            unit: "kWh",
            measured: 3.0,
            estimated: 0.5,
            filled: 0.25,
            total: Some(3.75),
            coverage: Some(cov),
        };
        let role = crate::site::Role::GridImport;
        let meter = MeterTotal::new("mains", role, &i);
        let old_meter = json!({
            "meter": "mains",
            "role": role.as_str(),
            "unit": i.unit,
            "measured": i.measured,
            "estimated": i.estimated,
            "filled": i.filled,
            "total": i.total,
            "missing_share": i.coverage.map(|c| c.missing_share()),
        });
        assert_eq!(bytes(&meter), bytes(&old_meter));
        let none = vigie_energy::InputUsed {
            total: None,
            coverage: None,
            ..i.clone()
        };
        let old_none = json!({
            "meter": "m", "role": role.as_str(), "unit": "kWh", "measured": 3.0,
            "estimated": 0.5, "filled": 0.25, "total": null, "missing_share": null,
        });
        assert_eq!(bytes(&MeterTotal::new("m", role, &none)), bytes(&old_none));

        let answer = KpiAnswer {
            computer_room_area_m2: None,
            figures: vec![json!({"b": 1, "a": 2})],
            floor_area_m2: Some(120.5),
            from: "2026-01-01T00:00:00Z".to_owned(),
            installed_it_kw: Some(500.0),
            meters: vec![MeterTotal::new("mains", role, &i)],
            roles_without_meter: vec!["it"],
            to: "2026-02-01T00:00:00Z".to_owned(),
        };
        let old_answer = json!({
            "from": "2026-01-01T00:00:00Z",
            "to": "2026-02-01T00:00:00Z",
            "installed_it_kw": 500.0,
            "floor_area_m2": 120.5,
            "computer_room_area_m2": null,
            "figures": [json!({"b": 1, "a": 2})],
            "meters": [old_meter],
            "roles_without_meter": ["it".to_owned()],
        });
        assert_eq!(bytes(&answer), bytes(&old_answer));

        let err = ErrorBody {
            error: "bad \"from\"".to_owned(),
        };
        assert_eq!(bytes(&err), bytes(&json!({ "error": "bad \"from\"" })));
        assert_eq!(bytes(&Stored { stored: 3 }), bytes(&json!({ "stored": 3 })));
    }

    /// Serializes what the byte test compares, without naming each type.
    mod erased {
        pub trait Ser {
            fn bytes(&self) -> String;
        }
        impl<T: serde::Serialize> Ser for T {
            fn bytes(&self) -> String {
                serde_json::to_string(self).unwrap()
            }
        }
    }
}
