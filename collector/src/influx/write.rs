//! The HTTP side of the sink: `POST /api/v2/write` over reqwest with
//! rustls (ring provider, no OpenSSL), the token in a sensitive header,
//! and each answer sorted into written, retry later or refused.

use super::{InfluxConfig, InfluxError};
use reqwest::header::HeaderValue;
use vigie_service::errors::chain;

/// Most bytes of an error answer kept for the log.
const DETAIL_BYTES: usize = 4096;

/// What became of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Attempt {
    /// 2xx: every line is stored.
    Written,
    /// 5xx, 429 or no answer: worth sending again later.
    Retry(String),
    /// Another 4xx: the server refuses these lines (bad line, wrong
    /// token, unknown bucket); sending them again would be refused again.
    Refused {
        /// Status.
        status: u16,
        /// What the server said, shortened.
        detail: String,
    },
}

/// A client and the write URL.
#[derive(Debug)]
pub(crate) struct Writer {
    client: reqwest::Client,
    url: reqwest::Url,
    auth: Option<HeaderValue>,
}

impl Writer {
    /// Builds the client and reads the token file. Makes no request.
    pub(crate) fn new(cfg: &InfluxConfig) -> Result<Self, InfluxError> {
        let mut url = cfg.base_url().map_err(InfluxError::Config)?;
        let path = format!("{}api/v2/write", url.path());
        url.set_path(&path);
        url.query_pairs_mut()
            .append_pair("org", &cfg.org)
            .append_pair("bucket", &cfg.bucket)
            .append_pair("precision", cfg.precision.as_str());
        let auth = match &cfg.token_file {
            Some(file) => {
                let token = vigie_service::secrets::read_secret(file)?;
                let mut v = HeaderValue::from_str(&format!("Token {token}")).map_err(|_| {
                    InfluxError::Config(format!(
                        "influxdb.token_file {}: characters not allowed in a header",
                        file.display()
                    ))
                })?;
                v.set_sensitive(true);
                Some(v)
            }
            None => None,
        };
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls_config(cfg)?)
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout)
            .no_proxy()
            .user_agent(concat!("vigie-collector/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| InfluxError::Config(format!("influxdb HTTP client: {}", chain(&e))))?;
        Ok(Writer { client, url, auth })
    }

    /// The write URL (the token is not in it).
    pub(crate) fn url(&self) -> &reqwest::Url {
        &self.url
    }

    /// Sends `body` (lines) once.
    pub(crate) async fn post(&self, body: Vec<u8>) -> Attempt {
        let mut request = self
            .client
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(body);
        if let Some(auth) = &self.auth {
            request = request.header(reqwest::header::AUTHORIZATION, auth.clone());
        }
        let mut response = match request.send().await {
            Ok(r) => r,
            Err(e) => return Attempt::Retry(chain(&e)),
        };
        let status = response.status();
        if status.is_success() {
            return Attempt::Written;
        }
        let mut detail = Vec::new();
        while detail.len() < DETAIL_BYTES {
            match response.chunk().await {
                Ok(Some(c)) => detail.extend_from_slice(&c),
                _ => break,
            }
        }
        let detail: String = String::from_utf8_lossy(&detail)
            .trim()
            .chars()
            .take(300)
            .collect();
        let code = status.as_u16();
        if status.is_server_error() || code == 429 {
            Attempt::Retry(format!("HTTP {code}: {detail}"))
        } else {
            Attempt::Refused {
                status: code,
                detail,
            }
        }
    }
}

fn tls_config(cfg: &InfluxConfig) -> Result<rustls::ClientConfig, InfluxError> {
    vigie_grid::client_tls(cfg.ca_file.as_deref(), "influxdb.ca_file").map_err(InfluxError::Config)
}
