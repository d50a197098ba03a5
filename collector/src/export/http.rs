//! `GET /api/v1/exports/{regime}?from=&to=&format=&commissioned=`: the
//! export, with its SHA-256 in `Digest: sha-256=<base64>` (RFC 3230) and,
//! when `[export] signing_key` is configured, its Ed25519 signature in
//! `Vigie-Signature: ed25519=<hex>`: the same hex line the command line
//! writes to `FILE.sig`, so a regulator saves it next to the file and runs
//! `vigie-collector verify` (or OpenSSL) against the public key from
//! `GET /api/v1/exports/public-key`.

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
    key: Option<Arc<ed25519_dalek::SigningKey>>,
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
        let conn = crate::backend::open(&db_path)?;
        build(&*conn, &site, &carbon, &req, &mut |_| {}).map(|e| e.render(format))
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
    let mut h = integrity_headers(&bytes, key.as_deref());
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    (h, bytes).into_response()
}

/// `Digest: sha-256=<base64>` (RFC 3230) of `bytes` and, with a key,
/// `Vigie-Signature: ed25519=<hex>`: the headers of every document a
/// regulator downloads (exports, the permit dossier).
pub fn integrity_headers(
    bytes: &[u8],
    key: Option<&ed25519_dalek::SigningKey>,
) -> axum::http::HeaderMap {
    let mut h = axum::http::HeaderMap::new();
    let digest = format!(
        "sha-256={}",
        super::sign::base64(&super::sign::sha256(bytes))
    );
    if let Ok(v) = HeaderValue::from_str(&digest) {
        h.insert("digest", v);
    }
    if let Some(k) = key {
        use ed25519_dalek::Signer;
        let sig = super::sign::hex(&k.sign(bytes).to_bytes());
        if let Ok(v) = HeaderValue::from_str(&format!("ed25519={sig}")) {
            h.insert("vigie-signature", v);
        }
    }
    h
}

/// `GET /api/v1/exports/public-key`: the key that checks the signatures,
/// as a PEM public key (404 when exports are not signed).
pub fn public_key(key: Option<&ed25519_dalek::SigningKey>) -> Response {
    use ed25519_dalek::pkcs8::EncodePublicKey;
    let pem = key.and_then(|k| {
        k.verifying_key()
            .to_public_key_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
            .ok()
    });
    match pem {
        Some(p) => ([(header::CONTENT_TYPE, "application/x-pem-file")], p).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            axum::Json(serde_json::json!({
                "error": "exports are not signed: no [export] signing_key configured"
            })),
        )
            .into_response(),
    }
}
