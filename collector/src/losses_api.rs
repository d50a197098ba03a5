//! `GET /api/v1/hosts/{host}/gaps`: a host's known losses: the holes in
//! its data (batches lost within an agent epoch, downtime between epochs
//! that the agent could not bridge) and the energy its agents counted that
//! the ledger does not hold (`store::losses`).

use crate::api::{ApiError, AppState, parse_time, rfc3339};
use crate::store::losses;
use axum::extract::{Path, Query, State};
use serde::{Deserialize, Serialize};
use vigie_energy::Microjoules;

/// Most gaps one answer lists; `truncated` says when more exist.
pub const MAX_GAPS: usize = 1000;
/// Default window: the last 30 days.
const DEFAULT_WINDOW_MS: i64 = 30 * 24 * 3_600_000;

#[derive(Debug, Deserialize)]
pub(crate) struct GapsQuery {
    from: Option<String>,
    to: Option<String>,
}

#[derive(Debug, Serialize)]
struct GapJson {
    /// `batches` (lost within an epoch) or `restart` (between epochs).
    kind: &'static str,
    from: String,
    to: String,
    seconds: f64,
    /// The batch before and after the hole: (epoch, seq).
    after_batch: [u64; 2],
    before_batch: [u64; 2],
}

#[derive(Debug, Serialize)]
struct MissingJson {
    epoch: u64,
    sensor: String,
    joules: f64,
    /// Whether the host's total counts this sensor.
    in_total: bool,
}

#[derive(Debug, Serialize)]
pub(crate) struct GapsAnswer {
    host: String,
    from: String,
    to: String,
    gaps: Vec<GapJson>,
    truncated: bool,
    /// Within-epoch holes over all time (what the metrics show).
    total_gaps: u64,
    total_gap_seconds: f64,
    /// Energy counted by the host's agents and missing from the ledger,
    /// over the sensors in its total, joules (all time).
    missing_joules: f64,
    missing: Vec<MissingJson>,
}

pub(crate) async fn gaps(
    State(s): State<AppState>,
    Path(host): Path<String>,
    Query(q): Query<GapsQuery>,
) -> Result<axum::Json<GapsAnswer>, ApiError> {
    let time = |name: &str, v: Option<&str>| v.map(|v| parse_time(name, v)).transpose();
    let to = time("to", q.to.as_deref())?.unwrap_or_else(|| crate::now_ms() + 1);
    let from = time("from", q.from.as_deref())?.unwrap_or(to - DEFAULT_WINDOW_MS);
    if to < from {
        return Err(ApiError::BadRequest("to is before from".into()));
    }
    let h = host.clone();
    let read = s
        .read(move |c| {
            let known = c.hosts()?.iter().any(|r| r.host == h);
            if !known {
                return Ok(None);
            }
            let uncounted = c.uncounted_sensors_of(&h)?;
            let (gaps, truncated) = c.gap_report(&h, from, to, MAX_GAPS)?;
            let totals = c.host_losses(&h, Some(&uncounted))?;
            let missing = c.missing_by_sensor(&h)?;
            Ok(Some((gaps, truncated, totals, missing, uncounted)))
        })
        .await?;
    let Some((gaps, truncated, totals, missing, uncounted)) = read else {
        return Err(ApiError::NotFound(format!(
            "no host {host:?} in the ledger"
        )));
    };
    Ok(axum::Json(GapsAnswer {
        from: rfc3339(from),
        to: rfc3339(to),
        gaps: gaps
            .into_iter()
            .map(|g| GapJson {
                kind: match g.kind {
                    losses::GapKind::Batches => "batches",
                    losses::GapKind::Restart => "restart",
                },
                from: rfc3339(g.from_ms),
                to: rfc3339(g.to_ms),
                seconds: (g.to_ms - g.from_ms) as f64 / 1e3,
                after_batch: [g.epoch_before, g.seq_before],
                before_batch: [g.epoch_after, g.seq_after],
            })
            .collect(),
        truncated,
        total_gaps: totals.gaps,
        total_gap_seconds: totals.gap_ms as f64 / 1e3,
        missing_joules: totals.missing_uj as f64 / 1e6,
        missing: missing
            .into_iter()
            .map(|(epoch, sensor, uj)| MissingJson {
                epoch,
                in_total: !uncounted.contains(&sensor),
                sensor,
                joules: Microjoules(uj).as_joules(),
            })
            .collect(),
        host,
    }))
}
