//! A minimal HTTP/1.1 GET for tests: enough to read the collector's JSON
//! and metrics without pulling an HTTP client stack into every test.

use anyhow::Context;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Status and body of a response.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// HTTP status code.
    pub status: u16,
    /// Body as text.
    pub body: String,
}

impl HttpResponse {
    /// Parses the body as JSON.
    pub fn json(&self) -> anyhow::Result<serde_json::Value> {
        serde_json::from_str(&self.body).with_context(|| format!("not JSON: {}", self.body))
    }
}

/// GETs `path` from `addr` with `Connection: close` and a 5 s time-out.
pub fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<HttpResponse> {
    http_get_with(addr, path, None)
}

/// As [`http_get`], presenting `bearer` as an `Authorization` token.
pub fn http_get_with(
    addr: SocketAddr,
    path: &str,
    bearer: Option<&str>,
) -> anyhow::Result<HttpResponse> {
    let s = connect(addr)?;
    exchange(s, addr, "GET", path, bearer, None)
}

/// POSTs a JSON `body` to `path` (optionally with a bearer token).
pub fn http_post_json(
    addr: SocketAddr,
    path: &str,
    bearer: Option<&str>,
    body: &str,
) -> anyhow::Result<HttpResponse> {
    let s = connect(addr)?;
    exchange(s, addr, "POST", path, bearer, Some(body))
}

/// GETs `path` over HTTPS, trusting only the PEM CA in `ca_file`, with an
/// optional bearer token.
pub fn https_get(
    addr: SocketAddr,
    ca_file: &std::path::Path,
    path: &str,
    bearer: Option<&str>,
) -> anyhow::Result<HttpResponse> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file)? {
        roots.add(cert?)?;
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::IpAddress(addr.ip().into());
    let conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name)?;
    let tls = rustls::StreamOwned::new(conn, connect(addr)?);
    exchange(tls, addr, "GET", path, bearer, None)
}

fn connect(addr: SocketAddr) -> anyhow::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    Ok(s)
}

fn exchange(
    mut s: impl Read + Write,
    addr: SocketAddr,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: Option<&str>,
) -> anyhow::Result<HttpResponse> {
    let auth = bearer
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let content = body
        .map(|b| {
            format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                b.len()
            )
        })
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}{content}Connection: close\r\n\r\n{}",
        body.unwrap_or("")
    )?;
    s.flush()?;
    let mut raw = Vec::new();
    match s.read_to_end(&mut raw) {
        Ok(_) => {}
        // rustls reports a peer that closed without close_notify; the
        // response is complete by then (Connection: close).
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => {}
        Err(e) => return Err(e.into()),
    }
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").context("no header end")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .context("no status")?
        .parse()?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)?
    } else {
        body.to_owned()
    };
    Ok(HttpResponse { status, body })
}

fn dechunk(mut s: &str) -> anyhow::Result<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = s.split_once("\r\n").context("bad chunk")?;
        let size = usize::from_str_radix(size.trim(), 16)?;
        if size == 0 {
            return Ok(out);
        }
        out.push_str(rest.get(..size).context("short chunk")?);
        s = rest.get(size + 2..).context("short chunk")?;
    }
}
