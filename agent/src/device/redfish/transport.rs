//! HTTPS to the service: TLS trust, GETs with session or basic login, and
//! transport errors that say what to check.

use super::*;

/// rustls with the ring provider (the one the whole workspace uses),
/// trusting `ca_file`, or nothing (`insecure`), or the system's roots.
pub(super) fn tls_config(
    cfg: &RedfishConfig,
    origin: &str,
) -> Result<rustls::ClientConfig, DeviceError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier: Arc<dyn rustls::client::danger::ServerCertVerifier> = match (
        &cfg.ca_file,
        cfg.insecure,
    ) {
        (Some(_), true) => {
            return Err(DeviceError::Config(
                "ca_file and insecure exclude each other".into(),
            ));
        }
        (None, true) => {
            tracing::warn!(url = %origin, "insecure = true: the Redfish service's certificate is not verified");
            Arc::new(AcceptAnyCertificate(provider.clone()))
        }
        (Some(file), false) => {
            let mut roots = rustls::RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(file)
                .map_err(|e| DeviceError::Config(format!("ca_file {}: {e}", file.display())))?;
            for cert in certs {
                let cert = cert
                    .map_err(|e| DeviceError::Config(format!("ca_file {}: {e}", file.display())))?;
                roots
                    .add(cert)
                    .map_err(|e| DeviceError::Config(format!("ca_file {}: {e}", file.display())))?;
            }
            if roots.is_empty() {
                return Err(DeviceError::Config(format!(
                    "ca_file {}: no certificate in it",
                    file.display()
                )));
            }
            rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                provider.clone(),
            )
            .build()
            .map_err(|e| DeviceError::Config(format!("ca_file {}: {e}", file.display())))?
        }
        (None, false) => Arc::new(
            rustls_platform_verifier::Verifier::new(provider.clone())
                .map_err(|e| DeviceError::Config(format!("system trust store: {e}")))?,
        ),
    };
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| DeviceError::Config(format!("TLS: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

/// `insecure = true`: any certificate is accepted, but the handshake's
/// signatures are still checked, so the session is at least encrypted
/// to whoever holds the key it presented.
#[derive(Debug)]
pub(super) struct AcceptAnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

pub(super) async fn get_json(
    client: &reqwest::Client,
    origin: &str,
    login: Option<&(String, Redacted)>,
    path: &str,
) -> Result<Option<Json>, DeviceError> {
    let mut request = client
        .get(format!("{origin}{path}"))
        .header(reqwest::header::ACCEPT, "application/json");
    if let Some((user, password)) = login {
        request = request.basic_auth(user, Some(&password.0));
    }
    let response = match request.send().await {
        Ok(response) => response,
        Err(e) => return Err(transport_error(&e, origin, path).await),
    };
    let status = response.status();
    if status == reqwest::StatusCode::NOT_FOUND || status == reqwest::StatusCode::GONE {
        return Ok(None);
    }
    if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
        return Err(DeviceError::Auth(format!("{path}: HTTP {status}")));
    }
    if status.is_server_error() {
        return Err(DeviceError::Unreachable(format!("{path}: HTTP {status}")));
    }
    if !status.is_success() {
        return Err(DeviceError::Protocol(format!("{path}: HTTP {status}")));
    }
    let body = match response.bytes().await {
        Ok(body) => body,
        Err(e) => return Err(transport_error(&e, origin, path).await),
    };
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(|e| DeviceError::Protocol(format!("{path}: not JSON: {e}")))
}

/// A certificate the configuration does not trust, or a scheme the service
/// does not speak, is a configuration problem; anything else on the way is
/// the network's.
pub(super) async fn transport_error(e: &reqwest::Error, origin: &str, path: &str) -> DeviceError {
    match rustls_cause(e) {
        Some(rustls::Error::InvalidCertificate(why)) => {
            return DeviceError::Config(format!(
                "{path}: the service's TLS certificate is not trusted ({why:?}): set ca_file to its CA"
            ));
        }
        // What rustls calls "received corrupt message of type
        // InvalidContentType": the first bytes back were not a TLS record.
        Some(rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType)) => {
            let plain = origin.replacen("https://", "http://", 1);
            return DeviceError::Config(format!(
                "{path}: the server at {origin} answered in plain HTTP, not TLS: use {plain} as url (or enable HTTPS on the service)"
            ));
        }
        _ => {}
    }
    // Plain HTTP that got an answer it could not parse: a TLS service?
    if let Some(rest) = origin.strip_prefix("http://")
        && !e.is_connect()
        && !e.is_timeout()
        && speaks_tls(origin).await
    {
        return DeviceError::Config(format!(
            "{path}: the server at {origin} speaks TLS, not plain HTTP: use https://{rest} as url"
        ));
    }
    DeviceError::Unreachable(format!("{path}: {}", chain(e)))
}

/// Whether the server at `origin` answers a TLS ClientHello with a TLS
/// record (a handshake or an alert). Bounded by a short timeout.
pub(super) async fn speaks_tls(origin: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(url) = reqwest::Url::parse(origin) else {
        return false;
    };
    let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
        return false;
    };
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let Ok(name) = rustls::pki_types::ServerName::try_from(host.clone()) else {
        return false;
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let Ok(builder) = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
    else {
        return false;
    };
    let config = builder
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
        .with_no_client_auth();
    let Ok(mut conn) = rustls::ClientConnection::new(Arc::new(config), name) else {
        return false;
    };
    let mut hello = Vec::new();
    if conn.write_tls(&mut hello).is_err() {
        return false;
    }
    let exchange = async {
        let mut tcp = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .ok()?;
        tcp.write_all(&hello).await.ok()?;
        let mut head = [0u8; 2];
        tcp.read_exact(&mut head).await.ok()?;
        // Content type handshake (22) or alert (21), then major version 3.
        Some(matches!(head, [0x15 | 0x16, 0x03]))
    };
    tokio::time::timeout(Duration::from_secs(3), exchange)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}
