//! Secrets and TLS material read from files named in the configuration,
//! never from the command line or the environment, and never logged.

use serde::Deserialize;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Why a secret or TLS file could not be used. The message names the file,
/// never its contents.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The file could not be read. The cause is in the message and not
    /// also a `source`, so a chain printed with `{:#}` says it once.
    #[error("reading {path}: {cause}")]
    Read {
        /// File.
        path: String,
        /// Cause.
        cause: std::io::Error,
    },
    /// The file is empty.
    #[error("{path} is empty")]
    Empty {
        /// File.
        path: String,
    },
    /// A client certificate without its key, or the reverse.
    #[error("cert_file and key_file go together: set both or neither")]
    HalfClientIdentity,
}

/// TLS towards the MQTT broker (`[mqtt.tls]`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// PEM file of the CA(s) that signed the broker's certificate.
    pub ca_file: PathBuf,
    /// PEM client certificate, for brokers that authenticate clients by
    /// certificate (Mosquitto `require_certificate`).
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

/// The contents of [`TlsFiles`].
pub struct TlsMaterial {
    /// CA certificates, PEM.
    pub ca: Vec<u8>,
    /// Client certificate chain and key, PEM.
    pub client: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("ca_bytes", &self.ca.len())
            .field("client", &self.client.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl TlsFiles {
    /// Reads every file.
    pub fn load(&self) -> Result<TlsMaterial, SecretError> {
        let client = match (&self.cert_file, &self.key_file) {
            (Some(c), Some(k)) => Some((read_bytes(c)?, read_secret_bytes(k)?)),
            (None, None) => None,
            _ => return Err(SecretError::HalfClientIdentity),
        };
        Ok(TlsMaterial {
            ca: read_bytes(&self.ca_file)?,
            client,
        })
    }
}

fn read_bytes(path: &Path) -> Result<Vec<u8>, SecretError> {
    let bytes = std::fs::read(path).map_err(|cause| SecretError::Read {
        path: path.display().to_string(),
        cause,
    })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(SecretError::Empty {
            path: path.display().to_string(),
        });
    }
    Ok(bytes)
}

/// Reads a secret file's bytes. Warns when others can read the file.
pub fn read_secret_bytes(path: &Path) -> Result<Vec<u8>, SecretError> {
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o007 != 0
    {
        tracing::warn!(file = %path.display(), "secret file is readable by every user: chmod o-rwx it");
    }
    read_bytes(path)
}

/// Reads a one-line secret (a password, a token list) from `path`,
/// without its trailing newline. Warns when others can read the file.
pub fn read_secret(path: &Path) -> Result<String, SecretError> {
    let bytes = read_secret_bytes(path)?;
    let text = String::from_utf8_lossy(&bytes);
    Ok(text.trim_end_matches(['\n', '\r']).to_owned())
}

/// What a daemon needs to authenticate to the broker, loaded from files.
#[derive(Debug)]
pub struct BrokerSecrets {
    /// TLS material, when TLS is configured.
    pub tls: Option<TlsMaterial>,
    /// User name and password, when a user name is configured.
    pub login: Option<(String, Redacted)>,
}

/// A secret string that prints as `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Redacted(pub String);

impl std::fmt::Debug for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Loads the broker secrets named in a `[mqtt]` section. A user name
/// without a password file logs in with an empty password.
pub fn broker_secrets(
    tls: Option<&TlsFiles>,
    username: Option<&str>,
    password_file: Option<&Path>,
) -> Result<BrokerSecrets, SecretError> {
    let tls = tls.map(TlsFiles::load).transpose()?;
    let login = match username {
        Some(user) => {
            let pass = password_file
                .map(read_secret)
                .transpose()?
                .unwrap_or_default();
            Some((user.to_owned(), Redacted(pass)))
        }
        None => None,
    };
    Ok(BrokerSecrets { tls, login })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_read_trimmed_and_errors_name_the_file_only() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pass");
        std::fs::write(&p, "s3cret\n").unwrap();
        assert_eq!(read_secret(&p).unwrap(), "s3cret");
        std::fs::write(&p, "\n").unwrap();
        let e = read_secret(&p).unwrap_err().to_string();
        assert!(e.contains("is empty") && e.contains("pass"), "{e}");
        let missing = read_secret(&dir.path().join("nope"))
            .unwrap_err()
            .to_string();
        assert!(missing.contains("nope"), "{missing}");
    }

    #[test]
    fn a_certificate_needs_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\n").unwrap();
        let half = TlsFiles {
            ca_file: ca.clone(),
            cert_file: Some(ca.clone()),
            key_file: None,
        };
        assert!(matches!(half.load(), Err(SecretError::HalfClientIdentity)));
        let only_ca = TlsFiles {
            ca_file: ca,
            cert_file: None,
            key_file: None,
        };
        let m = only_ca.load().unwrap();
        assert!(m.client.is_none());
        assert!(
            !format!("{m:?}").contains("BEGIN"),
            "material is never printed"
        );
    }
}
