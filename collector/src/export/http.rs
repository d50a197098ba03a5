//! `GET /api/v1/exports/{regime}?from=&to=&format=&commissioned=`: the
//! export, unsigned (no key in the configuration), with its SHA-256 in
//! `Digest: sha-256=<base64>` (RFC 3230).

use super::{ExportRequest, Format, Regime, build, date};
use crate::config::CarbonConfig;
use crate::site::SiteConfig;
use axum::extract::{Path, Query};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use std::path::PathBuf;
use std::sync::Arc;

/// Query parameters.
#[derive(Debug, Default, Deserialize)]
pub struct ExportQuery {
    /// Period start (`YYYY-MM-DD`, RFC 3339 or Unix ms); default: 1 January of last year.
    pub from: Option<String>,
    /// Period end, exclusive; default: 1 January of this year.
    pub to: Option<String>,
    /// `json` (default) or `csv`.
    pub format: Option<String>,
    /// Commissioning date `YYYY-MM-DD` (EnEfG targets).
    pub commissioned: Option<String>,
}

fn bad(msg: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(serde_json::json!({ "error": msg })),
    )
        .into_response()
}

/// Parses the request the same way for the CLI and HTTP.
pub fn request(
    regime: &str,
    from: Option<&str>,
    to: Option<&str>,
    commissioned: Option<&str>,
    now_ms: i64,
) -> Result<ExportRequest, String> {
    let regime = Regime::parse(regime)
        .ok_or_else(|| format!("regime must be eed, enefg or fr, got {regime:?}"))?;
    let (from_ms, to_ms) = date::period(from, to, now_ms)?;
    let commissioned = commissioned
        .map(|c| {
            date::Date::parse(c)
                .ok_or_else(|| format!("commissioned: expected YYYY-MM-DD, got {c:?}"))
        })
        .transpose()?;
    Ok(ExportRequest {
        regime,
        from_ms,
        to_ms,
        commissioned,
    })
}

/// The handler; the router passes the ledger path and configuration.
pub async fn http_handler(
    db_path: Arc<PathBuf>,
    site: Arc<SiteConfig>,
    carbon: Arc<CarbonConfig>,
    Path(regime): Path<String>,
    Query(q): Query<ExportQuery>,
) -> Response {
    let req = match request(
        &regime,
        q.from.as_deref(),
        q.to.as_deref(),
        q.commissioned.as_deref(),
        crate::now_ms(),
    ) {
        Ok(r) => r,
        Err(e) => return bad(e),
    };
    let format = match q
        .format
        .as_deref()
        .map_or(Some(Format::Json), Format::parse)
    {
        Some(f) => f,
        None => return bad("format must be json or csv".into()),
    };
    let result = tokio::task::spawn_blocking(move || {
        let conn = crate::store::open(&db_path)?;
        build(&conn, &site, &carbon, &req, &mut |_| {}).map(|e| e.render(format))
    })
    .await;
    let bytes = match result {
        Ok(Ok(b)) => b,
        Ok(Err(super::ExportError::Request(e))) => return bad(e),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "export");
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                axum::Json(serde_json::json!({ "error": e.to_string() })),
            )
                .into_response();
        }
        Err(e) => {
            return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
        }
    };
    let digest = format!(
        "sha-256={}",
        super::sign::base64(&super::sign::sha256(&bytes))
    );
    let mut resp = bytes.into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    if let Ok(v) = HeaderValue::from_str(&digest) {
        h.insert("digest", v);
    }
    resp
}
