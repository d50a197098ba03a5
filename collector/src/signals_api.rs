//! HTTP handlers of the scheduler signals (see [`crate::signals`]).

use crate::api::{ApiError, AppState, rfc3339};
use crate::signals::{self, Want};
use axum::extract::{Query, RawQuery, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

const H: i64 = 3_600_000;
/// Longest window or job a signal plans for: a week.
const MAX_WINDOW_MIN: i64 = 7 * 24 * 60;
/// Longest span a search for the best window runs over (its cost grows
/// with the square of the points in it): eight days, the forecast
/// horizon the point cache holds.
const MAX_SEARCH_MS: i64 = 8 * 24 * H;

fn time(name: &str, v: Option<&str>, default: i64) -> Result<i64, ApiError> {
    match v {
        None => Ok(default),
        Some(s) => crate::api::parse_time_str(s)
            .ok_or_else(|| ApiError::BadRequest(format!("{name}: RFC 3339 or Unix ms expected"))),
    }
}

/// `location` values of a query string (the SDK repeats the parameter).
fn locations(raw: Option<&str>) -> Vec<String> {
    raw.unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, _)| *k == "location")
        .map(|(_, v)| v.replace("%2F", "/").replace('+', " "))
        .filter(|v| !v.is_empty())
        .collect()
}

fn param<'a>(raw: Option<&'a str>, name: &str) -> Option<&'a str> {
    raw.unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn decode(v: &str) -> String {
    v.replace("%3A", ":")
        .replace("%2B", "+")
        .replace("%3a", ":")
        .replace("%2b", "+")
}

async fn sdk_points(
    s: &AppState,
    zones: Vec<String>,
    from: i64,
    to: i64,
    want: Want,
) -> Result<Vec<signals::EmissionsData>, ApiError> {
    let mut out = Vec::new();
    for z in zones {
        let points = s.points(z.clone(), from, to, want).await?;
        if points.is_empty() {
            known_location(s, &z).await?;
        }
        out.extend(signals::as_sdk(&points, rfc3339));
    }
    Ok(out)
}

/// `Ok` for a location the collector has grid data for (or its
/// configured zone); a 400 naming the known ones otherwise, as the Carbon
/// Aware SDK answers an unknown location. Asked only when a location has
/// no point in the window, so the hot path reads nothing more.
async fn known_location(s: &AppState, zone: &str) -> Result<(), ApiError> {
    let configured = s.carbon().zone.clone();
    let mut zones = s
        .read(|c| c.grid_zones().map_err(crate::backend::grid_err))
        .await?;
    if zone == configured || zones.iter().any(|z| z == zone) {
        return Ok(());
    }
    if !zones.contains(&configured) {
        zones.push(configured);
    }
    zones.sort();
    Err(ApiError::BadRequest(format!(
        "unknown location {zone:?}: no grid data is stored for it (known: {}; see GET /locations)",
        zones.join(", ")
    )))
}

/// The Carbon Aware SDK's answer to a query without data: 204 No Content
/// rather than an empty array.
fn sdk_answer<T: serde::Serialize>(items: Vec<T>) -> Response {
    if items.is_empty() {
        axum::http::StatusCode::NO_CONTENT.into_response()
    } else {
        axum::Json(items).into_response()
    }
}

/// The observed-emissions window, with the Carbon Aware SDK's defaults:
/// `toTime` now, `time` seven days before `toTime` (forecasts are
/// `/emissions/forecasts/current`'s, never mixed into observations).
fn window(raw: Option<&str>, now: i64) -> Result<(i64, i64, Want), ApiError> {
    let to = time("toTime", param(raw, "toTime").map(decode).as_deref(), now)?;
    let from = time(
        "time",
        param(raw, "time").map(decode).as_deref(),
        to.saturating_sub(7 * 24 * H),
    )?;
    if to <= from {
        return Err(ApiError::BadRequest("toTime must come after time".into()));
    }
    let want = Want::parse(param(raw, "factor"))
        .ok_or_else(|| ApiError::BadRequest("factor: average or marginal".into()))?;
    Ok((from, to, want))
}

/// `GET /emissions/bylocation?location=&time=&toTime=`.
pub async fn by_location(
    State(s): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let locs = locations(raw.as_deref());
    let Some(loc) = locs.first() else {
        return Err(ApiError::BadRequest("location is required".into()));
    };
    let (from, to, want) = window(raw.as_deref(), crate::now_ms())?;
    Ok(sdk_answer(
        sdk_points(&s, vec![loc.clone()], from, to, want).await?,
    ))
}

/// `GET /emissions/bylocations?location=a&location=b&time=&toTime=`.
pub async fn by_locations(
    State(s): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let locs = locations(raw.as_deref());
    if locs.is_empty() {
        return Err(ApiError::BadRequest(
            "at least one location is required".into(),
        ));
    }
    let (from, to, want) = window(raw.as_deref(), crate::now_ms())?;
    Ok(sdk_answer(sdk_points(&s, locs, from, to, want).await?))
}

/// `GET /emissions/bylocations/best`: the lowest-rated point(s).
pub async fn best(
    State(s): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let locs = locations(raw.as_deref());
    if locs.is_empty() {
        return Err(ApiError::BadRequest(
            "at least one location is required".into(),
        ));
    }
    let (from, to, want) = window(raw.as_deref(), crate::now_ms())?;
    let all = sdk_points(&s, locs, from, to, want).await?;
    let min = all.iter().map(|p| p.rating).fold(f64::INFINITY, f64::min);
    let best: Vec<_> = all.into_iter().filter(|p| p.rating == min).collect();
    Ok(sdk_answer(best))
}

/// `GET /emissions/average-carbon-intensity?location=&startTime=&endTime=`.
pub async fn average(
    State(s): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let raw = raw.as_deref();
    let loc = locations(raw)
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::BadRequest("location is required".into()))?;
    let from = time(
        "startTime",
        param(raw, "startTime").map(decode).as_deref(),
        i64::MIN,
    )?;
    let to = time(
        "endTime",
        param(raw, "endTime").map(decode).as_deref(),
        i64::MIN,
    )?;
    if from == i64::MIN || to == i64::MIN || to <= from {
        return Err(ApiError::BadRequest(
            "startTime and endTime are required, endTime after startTime".into(),
        ));
    }
    let l = loc.clone();
    let pts = s.points(l.clone(), from, to, Want::Average).await?;
    let Some(v) = signals::average(&pts, from, to) else {
        return Err(ApiError::BadRequest(format!(
            "no intensity stored for {loc} in that range"
        )));
    };
    Ok(axum::Json(json!({
        "location": loc,
        "startTime": rfc3339(from),
        "endTime": rfc3339(to),
        "carbonIntensity": v,
    }))
    .into_response())
}

/// `GET /emissions/forecasts/current?location=&dataStartAt=&dataEndAt=&windowSize=`.
pub async fn forecast(
    State(s): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let raw = raw.as_deref();
    let locs = locations(raw);
    if locs.is_empty() {
        return Err(ApiError::BadRequest(
            "at least one location is required".into(),
        ));
    }
    let now = crate::now_ms();
    let start = time(
        "dataStartAt",
        param(raw, "dataStartAt").map(decode).as_deref(),
        now,
    )?;
    let end = time(
        "dataEndAt",
        param(raw, "dataEndAt").map(decode).as_deref(),
        now + 24 * H,
    )?;
    if end <= start || end - start > MAX_SEARCH_MS {
        return Err(ApiError::BadRequest(
            "dataEndAt must come after dataStartAt, at most 8 days later".into(),
        ));
    }
    let window_min: i64 = param(raw, "windowSize")
        .map_or(Ok(5), str::parse)
        .ok()
        .filter(|m| (1..=MAX_WINDOW_MIN).contains(m))
        .ok_or_else(|| {
            ApiError::BadRequest(format!("windowSize: minutes, 1 to {MAX_WINDOW_MIN}"))
        })?;
    let want = Want::parse(param(raw, "factor"))
        .ok_or_else(|| ApiError::BadRequest("factor: average or marginal".into()))?;
    let mut out = Vec::new();
    for loc in locs {
        let l = loc.clone();
        let pts = s.points(l.clone(), start, end, want).await?;
        if pts.is_empty() {
            known_location(&s, &loc).await?;
        }
        let data: Vec<Value> = pts
            .iter()
            .filter(|p| p.start_ms >= start && p.start_ms < end)
            .map(|p| {
                json!({
                    "location": loc,
                    "timestamp": rfc3339(p.start_ms),
                    "duration": (p.end_ms - p.start_ms) / 60_000,
                    "value": p.signal().0,
                })
            })
            .collect();
        let optimal: Vec<Value> = signals::best_window(&pts, window_min * 60_000, start, end)
            .map(|(t, v)| json!({ "location": loc, "timestamp": rfc3339(t), "duration": window_min, "value": v }))
            .into_iter()
            .collect();
        let generated = pts.iter().map(|p| p.retrieved_ms).max().unwrap_or(now);
        out.push(json!({
            "requestedAt": rfc3339(now),
            "generatedAt": rfc3339(generated),
            "location": loc,
            "dataStartAt": rfc3339(start),
            "dataEndAt": rfc3339(end),
            "windowSize": window_min,
            "optimalDataPoints": optimal,
            "forecastData": data,
        }));
    }
    Ok(axum::Json(out).into_response())
}

/// `GET /locations`: the zones vigie knows.
pub async fn locations_route(State(s): State<AppState>) -> Result<Response, ApiError> {
    let zone = s.carbon().zone.clone();
    let mut zones = s
        .read(|c| c.grid_zones().map_err(crate::backend::grid_err))
        .await?;
    if !zones.contains(&zone) {
        zones.push(zone);
    }
    let map: serde_json::Map<String, Value> = zones
        .into_iter()
        .map(|z| (z.clone(), json!({ "name": z })))
        .collect();
    Ok(axum::Json(Value::Object(map)).into_response())
}

/// Native signal query.
#[derive(Debug, Deserialize)]
pub struct BestStartQuery {
    /// Job length, e.g. `2h` or `90m`.
    duration: String,
    /// Job power, kW (for the emissions estimate).
    #[serde(default)]
    power_kw: Option<f64>,
    /// Not before (default now).
    #[serde(default)]
    earliest: Option<String>,
    /// Finish by (default now + 24 h).
    #[serde(default)]
    deadline: Option<String>,
    /// Zone (default `[carbon] zone`).
    #[serde(default)]
    location: Option<String>,
    /// PUE applied to the job's IT power, 1 to 10 (default: the site's
    /// measured PUE of the last week, else 1.0).
    #[serde(default)]
    pue: Option<f64>,
    /// `average` or `marginal` (default: marginal when stored).
    #[serde(default)]
    factor: Option<String>,
}

/// `GET /api/v1/signals/best-start?duration=&power_kw=&earliest=&deadline=`:
/// the start within [earliest, deadline − duration] with the lowest mean
/// intensity, the job's estimated emissions there and if started now.
pub async fn best_start(
    State(s): State<AppState>,
    Query(q): Query<BestStartQuery>,
) -> Result<Response, ApiError> {
    let now = crate::now_ms();
    let dur = humantime::parse_duration(&q.duration)
        .map_err(|_| ApiError::BadRequest("duration like 2h or 90m".into()))?;
    let dur_ms = i64::try_from(dur.as_millis()).unwrap_or(i64::MAX);
    if dur_ms <= 0 || dur_ms > MAX_WINDOW_MIN * 60_000 {
        return Err(ApiError::BadRequest(
            "duration: more than zero, at most a week".into(),
        ));
    }
    let earliest = time("earliest", q.earliest.as_deref(), now)?;
    let deadline = time("deadline", q.deadline.as_deref(), now + 24 * H)?;
    if deadline <= earliest || deadline - earliest > MAX_SEARCH_MS {
        return Err(ApiError::BadRequest(
            "deadline must come after earliest, at most 8 days later".into(),
        ));
    }
    let zone = q
        .location
        .clone()
        .unwrap_or_else(|| s.carbon().zone.clone());
    let want = Want::parse(q.factor.as_deref())
        .ok_or_else(|| ApiError::BadRequest("factor: average or marginal".into()))?;
    let (pue, pue_source, _) = pue_for(&s, q.pue, now).await?;
    let z = zone.clone();
    let pts = s.points(z.clone(), earliest - H, deadline, want).await?;
    let Some((start, mean)) = signals::best_window(&pts, dur_ms, earliest, deadline) else {
        return Err(ApiError::BadRequest(format!(
            "no window of {} with intensity data for {zone} between earliest and deadline",
            q.duration
        )));
    };
    let now_mean = signals::average(&pts, earliest, earliest.saturating_add(dur_ms));
    let kwh = q.power_kw.map(|kw| kw * dur_ms as f64 / H as f64);
    Ok(axum::Json(json!({
        "location": zone,
        "start": rfc3339(start),
        "end": rfc3339(start + dur_ms),
        "mean_intensity_g_per_kwh": mean,
        "effective_intensity_g_per_kwh": mean * pue,
        "pue": pue,
        "pue_source": pue_source,
        "job_energy_kwh": kwh,
        "emissions_g": kwh.map(|k| k * mean * pue),
        "emissions_g_if_started_at_earliest": kwh.zip(now_mean).map(|(k, m)| k * m * pue),
    }))
    .into_response())
}

/// The PUE a signal applies, where it comes from, and the measured
/// figure's status: the query's (1 to 10), else the site's measured PUE
/// over the last week, else 1.0 (`none`: no facility meters).
async fn pue_for(
    s: &AppState,
    asked: Option<f64>,
    now: i64,
) -> Result<(f64, &'static str, Option<&'static str>), ApiError> {
    Ok(match asked {
        Some(p) if p.is_finite() && (1.0..=10.0).contains(&p) => (p, "query", None),
        Some(_) => return Err(ApiError::BadRequest("pue: 1 to 10".into())),
        None => match s.measured_pue(now).await? {
            Some(m) => (m.value, "measured-7d", Some(m.status)),
            None => (1.0, "none", None),
        },
    })
}

/// Native intensity query.
#[derive(Debug, Deserialize)]
pub struct IntensityQuery {
    /// Zone (default `[carbon] zone`).
    #[serde(default)]
    location: Option<String>,
    /// `average` or `marginal` (default: marginal when stored).
    #[serde(default)]
    factor: Option<String>,
    /// `location` (grid factors, the default) or `market` (the supplier
    /// and residual-mix factors of `[carbon.market]`).
    #[serde(default)]
    basis: Option<String>,
    /// Forecast horizon, hours (default 24, at most a week).
    #[serde(default)]
    hours: Option<i64>,
    /// PUE to apply instead of the site's measured one.
    #[serde(default)]
    pue: Option<f64>,
}

/// `GET /api/v1/signals/intensity`: the site's effective intensity now and
/// over the horizon, per kWh of IT energy (the grid or market factor
/// times the PUE: the site's measured PUE over the last week, unless the
/// query gives one).
pub async fn intensity(
    State(s): State<AppState>,
    Query(q): Query<IntensityQuery>,
) -> Result<Response, ApiError> {
    let now = crate::now_ms();
    let hours = q.hours.unwrap_or(24);
    if !(1..=MAX_WINDOW_MIN / 60).contains(&hours) {
        return Err(ApiError::BadRequest(format!(
            "hours: 1 to {}",
            MAX_WINDOW_MIN / 60
        )));
    }
    let want = Want::parse(q.factor.as_deref())
        .ok_or_else(|| ApiError::BadRequest("factor: average or marginal".into()))?;
    let market = match q.basis.as_deref() {
        None | Some("location") => None,
        Some("market") => Some(signals::market_factor(&s.carbon().market).ok_or_else(|| {
            ApiError::BadRequest(
                "basis=market needs [carbon.market] residual_mix_g_per_kwh (and optionally a supplier)"
                    .into(),
            )
        })?),
        Some(_) => return Err(ApiError::BadRequest("basis: location or market".into())),
    };
    let (pue, pue_source, pue_status) = pue_for(&s, q.pue, now).await?;
    let zone = q
        .location
        .clone()
        .unwrap_or_else(|| s.carbon().zone.clone());
    let z = zone.clone();
    let end = now + hours * H;
    let pts = s.points(z.clone(), now - H, end, want).await?;
    let pts: Vec<_> = pts.into_iter().filter(|p| p.end_ms > now).collect();
    let factor = pts.first().map(|p| p.factor().as_str());
    let eff = signals::effective(&pts, pue, market);
    let point = |e: &signals::EffectivePoint| {
        json!({
            "start": rfc3339(e.start_ms),
            "end": rfc3339(e.end_ms),
            "grid_g_per_kwh": e.grid_g_per_kwh,
            "effective_g_per_kwh": e.effective_g_per_kwh,
            "estimated": e.estimated,
        })
    };
    let current = eff.iter().find(|e| e.start_ms <= now && e.end_ms > now);
    let best = eff
        .iter()
        .min_by(|a, b| a.effective_g_per_kwh.total_cmp(&b.effective_g_per_kwh));
    Ok(axum::Json(json!({
        "location": zone,
        "basis": if market.is_some() { "market" } else { "location" },
        "factor": factor,
        "pue": pue,
        "pue_source": pue_source,
        "pue_status": pue_status,
        "now": current.map(point),
        "lowest": best.map(point),
        "forecast": eff.iter().map(point).collect::<Vec<_>>(),
    }))
    .into_response())
}

/// `GET /api/v1/signals/keda-configmap?location=`: the forecast as the
/// ConfigMap the carbon-aware KEDA operator reads (`data.forecast` holds
/// the forecastData array), in YAML.
pub async fn keda(
    State(s): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let raw = raw.as_deref();
    let zone = locations(raw)
        .into_iter()
        .next()
        .unwrap_or_else(|| s.carbon().zone.clone());
    let now = crate::now_ms();
    let z = zone.clone();
    let pts = s.points(z.clone(), now, now + 24 * H, Want::Prefer).await?;
    // Never an empty forecast: applied with kubectl, it would blank the
    // working one the KEDA operator reads.
    if pts.is_empty() {
        known_location(&s, &zone).await?;
        return Err(ApiError::NotFound(format!(
            "no forecast for {zone:?} in the next 24 hours: no ConfigMap is given, so the one in place stays"
        )));
    }
    let data: Vec<Value> = pts
        .iter()
        .map(|p| json!({"location": zone, "timestamp": rfc3339(p.start_ms), "duration": (p.end_ms - p.start_ms) / 60_000, "value": p.signal().0}))
        .collect();
    let forecast = serde_json::to_string(&data).unwrap_or_else(|_| "[]".into());
    // JSON is valid YAML inside a single-quoted scalar once quotes are doubled.
    let yaml = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: carbon-intensity\n  namespace: kube-system\ndata:\n  lastHeartbeatTime: '{}'\n  message: 'vigie forecast for {}'\n  numOfRecords: '{}'\n  forecast: '{}'\n",
        rfc3339(now),
        zone,
        data.len(),
        forecast.replace('\'', "''")
    );
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/yaml")],
        yaml,
    )
        .into_response())
}
