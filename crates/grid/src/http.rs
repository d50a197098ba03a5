//! The HTTPS client the live providers share: rustls with the ring
//! provider (no aws-lc, no OpenSSL), the system's roots or a given CA
//! file, an explicit proxy or none, and HTTP statuses mapped to
//! [`GridError`]s that tell retryable from fatal.

use super::GridError;
use reqwest::header::{HeaderMap, HeaderValue};
use serde::Deserialize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use vigie_service::errors::{chain, rustls_cause};

/// Largest response body read; more is a format error (a runaway or
/// hostile server must not fill memory).
const MAX_BODY_BYTES: usize = 32 << 20;

/// How to reach a live API.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Time limit of one request.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// PEM file of the CA(s) to trust instead of the system's (a TLS
    /// inspecting proxy).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Proxy URL for every request (`http://proxy:3128`). Proxies from the
    /// environment are ignored: endpoints are configuration, not ambient.
    #[serde(default)]
    pub proxy: Option<String>,
}

fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            timeout: default_timeout(),
            ca_file: None,
            proxy: None,
        }
    }
}

/// A client and the origin it talks to.
#[derive(Debug, Clone)]
pub(crate) struct Http {
    client: reqwest::Client,
    base: reqwest::Url,
}

impl Http {
    /// Checks `base_url` and builds the client. Makes no request.
    pub(crate) fn new(base_url: &str, cfg: &HttpConfig) -> Result<Self, GridError> {
        let mut base = reqwest::Url::parse(base_url)
            .map_err(|e| GridError::Config(format!("base_url {base_url:?}: {e}")))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(GridError::Config(format!(
                "base_url {base_url:?}: scheme must be https or http"
            )));
        }
        if !base.username().is_empty() || base.password().is_some() || base.query().is_some() {
            return Err(GridError::Config(format!(
                "base_url {base_url:?}: no credentials or query in the URL; credentials come from files"
            )));
        }
        if base.host_str().is_none() {
            return Err(GridError::Config(format!("base_url {base_url:?}: no host")));
        }
        // Paths are appended to the base's path.
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let mut builder = reqwest::Client::builder()
            .tls_backend_preconfigured(tls_config(cfg)?)
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout)
            .user_agent(concat!("vigie-collector/", env!("CARGO_PKG_VERSION")));
        builder = match &cfg.proxy {
            Some(p) => builder.proxy(
                reqwest::Proxy::all(p)
                    .map_err(|e| GridError::Config(format!("proxy {p:?}: {e}")))?,
            ),
            None => builder.no_proxy(),
        };
        let client = builder
            .build()
            .map_err(|e| GridError::Config(format!("HTTP client: {}", chain(&e))))?;
        Ok(Http { client, base })
    }

    /// The URL of `path` (relative, no leading slash) under the base.
    pub(crate) fn url(&self, path: &str) -> Result<reqwest::Url, GridError> {
        self.base
            .join(path)
            .map_err(|e| GridError::Config(format!("{path}: {e}")))
    }

    /// GETs `url` with `headers` (and basic auth when given) and returns the
    /// body of a 2xx response; other statuses become errors.
    pub(crate) async fn get(
        &self,
        url: reqwest::Url,
        headers: HeaderMap,
        basic: Option<(&str, &str)>,
    ) -> Result<Vec<u8>, GridError> {
        let what = url.path().to_owned();
        let mut request = self
            .client
            .get(url)
            .header(reqwest::header::ACCEPT, "application/json")
            .headers(headers);
        if let Some((user, password)) = basic {
            request = request.basic_auth(user, Some(password));
        }
        let mut response = request
            .send()
            .await
            .map_err(|e| transport_error(&e, &what))?;
        let status = response.status();
        if status.is_success() {
            let mut body = Vec::new();
            while let Some(chunk) = response
                .chunk()
                .await
                .map_err(|e| transport_error(&e, &what))?
            {
                if body.len() + chunk.len() > MAX_BODY_BYTES {
                    return Err(GridError::Format {
                        what,
                        detail: format!("response larger than {MAX_BODY_BYTES} bytes"),
                    });
                }
                body.extend_from_slice(&chunk);
            }
            return Ok(body);
        }
        let code = status.as_u16();
        Err(match code {
            401 | 403 => GridError::Auth { what, status: code },
            429 => GridError::RateLimited {
                retry_after_s: response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse().ok()),
                what,
            },
            500..=599 => GridError::Unavailable { what, status: code },
            _ => {
                // What the service says helps (unknown zone, range too
                // long); bounded, and never echoing our own request.
                let text = response.text().await.unwrap_or_default();
                let detail: String = text.trim().chars().take(300).collect();
                GridError::Rejected {
                    what,
                    status: code,
                    detail,
                }
            }
        })
    }
}

/// A header value from a secret; the value is marked sensitive so that
/// reqwest's own debug output hides it.
pub(crate) fn secret_header(value: &str) -> Result<HeaderValue, GridError> {
    let mut v = HeaderValue::from_str(value).map_err(|_| {
        GridError::Config("credentials file holds characters not allowed in a header".into())
    })?;
    v.set_sensitive(true);
    Ok(v)
}

/// JSON of a body, or a format error naming the request.
pub(crate) fn json<T: serde::de::DeserializeOwned>(
    body: &[u8],
    what: &str,
) -> Result<T, GridError> {
    serde_json::from_slice(body).map_err(|e| GridError::Format {
        what: what.to_owned(),
        detail: format!("unexpected JSON: {e}"),
    })
}

fn tls_config(cfg: &HttpConfig) -> Result<rustls::ClientConfig, GridError> {
    client_tls(cfg.ca_file.as_deref(), "ca_file").map_err(GridError::Config)
}

/// The TLS set-up of vigie's HTTPS clients (the live grid APIs, the
/// collector's InfluxDB sink): rustls with the ring provider, the
/// certificates of `ca_file` (PEM) as the only roots when given, else the
/// system's trust store. An error names `setting` and the file.
pub fn client_tls(
    ca_file: Option<&std::path::Path>,
    setting: &str,
) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier: Arc<dyn rustls::client::danger::ServerCertVerifier> = match ca_file {
        Some(file) => {
            let bad = |e: &dyn std::fmt::Display| format!("{setting} {}: {e}", file.display());
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(file).map_err(|e| bad(&e))? {
                roots.add(cert.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
            }
            if roots.is_empty() {
                return Err(bad(&"no certificate in it"));
            }
            rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                provider.clone(),
            )
            .build()
            .map_err(|e| bad(&e))?
        }
        None => Arc::new(
            rustls_platform_verifier::Verifier::new(provider.clone())
                .map_err(|e| format!("system trust store: {e}"))?,
        ),
    };
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

/// A certificate the configuration does not trust needs a person (set
/// `ca_file`); anything else on the way is the network's.
fn transport_error(e: &reqwest::Error, what: &str) -> GridError {
    if let Some(rustls::Error::InvalidCertificate(why)) = rustls_cause(e) {
        return GridError::Config(format!(
            "{what}: the service's TLS certificate is not trusted ({why:?}): set ca_file to its CA"
        ));
    }
    GridError::Unreachable {
        what: what.to_owned(),
        detail: chain(e),
    }
}
