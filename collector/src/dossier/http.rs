//! `GET /api/v1/dossier?from=&to=&format=html|pdf`: the permit dossier,
//! with its SHA-256 in `Digest: sha-256=<base64>` (RFC 3230).

use super::{Format, Settings, build, request};
use axum::extract::Query;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use std::path::PathBuf;
use std::sync::Arc;

/// Query parameters.
#[derive(Debug, Default, Deserialize)]
pub struct DossierQuery {
    /// Period start (`YYYY-MM-DD`, RFC 3339 or Unix ms); default: 1 January of last year.
    pub from: Option<String>,
    /// Period end, exclusive; default: 1 January of this year.
    pub to: Option<String>,
    /// `html` (default) or `pdf`.
    pub format: Option<String>,
}

fn error(status: StatusCode, msg: String) -> Response {
    (status, axum::Json(serde_json::json!({ "error": msg }))).into_response()
}

/// The handler; the router passes the ledger path and configuration.
pub async fn http_handler(
    db_path: Arc<PathBuf>,
    cfg: Arc<Settings>,
    key: Option<Arc<ed25519_dalek::SigningKey>>,
    Query(q): Query<DossierQuery>,
) -> Response {
    let now = crate::now_ms();
    let req = match request(q.from.as_deref(), q.to.as_deref(), now) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let Some(format) = q
        .format
        .as_deref()
        .map_or(Some(Format::Html), Format::parse)
    else {
        return error(StatusCode::BAD_REQUEST, "format must be html or pdf".into());
    };
    let result = tokio::task::spawn_blocking(move || {
        let conn = crate::backend::open(&db_path).map_err(|e| (false, e.to_string()))?;
        build(&*conn, &cfg, req, format, now, &mut |_| {})
            .map_err(|e| (matches!(e, super::DossierError::Request(_)), e.to_string()))
    })
    .await;
    let bytes = match result {
        Ok(Ok(b)) => b,
        Ok(Err((true, e))) => return error(StatusCode::BAD_REQUEST, e),
        Ok(Err((false, e))) => {
            tracing::error!(error = %e, "dossier");
            return error(StatusCode::INTERNAL_SERVER_ERROR, e);
        }
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let mut h = crate::export::http::integrity_headers(&bytes, key.as_deref());
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    let name = format!(
        "inline; filename=\"dossier-{}.{}\"",
        crate::export::date::Date::from_ms(req.from_ms),
        format.extension()
    );
    if let Ok(v) = HeaderValue::from_str(&name) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    (h, bytes).into_response()
}
