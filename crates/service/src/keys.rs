//! Message-signing keys of the agent: Ed25519 in PKCS#8 PEM (`BEGIN
//! PRIVATE KEY`, the form `openssl genpkey -algorithm ed25519` writes),
//! read from the file named in `[signing] key_file`. The public half is
//! given to the collector as 64 hex digits (`[ingest.keys]`).

use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey, KeypairBytes};
use std::path::{Path, PathBuf};

/// Why a key file could not be made or used. Never shows key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file could not be read or written (the cause in the message
    /// only, so that `{:#}` says it once).
    #[error("{path}: {cause}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        cause: std::io::Error,
    },
    /// The key file could not be read.
    #[error(transparent)]
    Read(#[from] crate::secrets::SecretError),
    /// Not an Ed25519 private key in PKCS#8 PEM.
    #[error("{0}: not an Ed25519 private key in PKCS#8 PEM (BEGIN PRIVATE KEY)")]
    Format(PathBuf),
    /// The file to create exists.
    #[error("{0} already exists; refusing to overwrite a key")]
    Exists(PathBuf),
    /// No randomness from the system.
    #[error("system randomness: {0}")]
    Random(String),
}

/// Reads a private key file (warns when other users can read it).
pub fn load_signing_key(path: &Path) -> Result<SigningKey, KeyError> {
    let bytes = zeroize::Zeroizing::new(crate::secrets::read_secret_bytes(path)?);
    let text = zeroize::Zeroizing::new(String::from_utf8_lossy(&bytes).into_owned());
    SigningKey::from_pkcs8_pem(&text).map_err(|_| KeyError::Format(path.to_owned()))
}

/// A new key from the system's randomness, written to `path` (mode 0600,
/// refusing to overwrite); its public half, hex, to `path.pub`. Returns
/// the key.
pub fn generate_key_file(path: &Path) -> Result<SigningKey, KeyError> {
    let mut seed = zeroize::Zeroizing::new([0u8; 32]);
    getrandom::fill(seed.as_mut_slice()).map_err(|e| KeyError::Random(e.to_string()))?;
    let key = SigningKey::from_bytes(&seed);
    // PKCS#8 v1, without the optional public key: OpenSSL 3.0 reads only v1.
    let pem = KeypairBytes {
        secret_key: *seed,
        public_key: None,
    }
    .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
    .map_err(|_| KeyError::Format(path.to_owned()))?;
    let public = pub_path(path);
    if public.exists() {
        return Err(KeyError::Exists(public));
    }
    write_new(path, pem.as_bytes(), 0o600)?;
    let hex = vigie_hex(key.verifying_key().as_bytes());
    write_new(&public, format!("{hex}\n").as_bytes(), 0o644)?;
    Ok(key)
}

/// `FILE.pub`, where [`generate_key_file`] writes the public key.
pub fn pub_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".pub");
    PathBuf::from(s)
}

fn vigie_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), KeyError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |cause| KeyError::Io {
        path: path.to_owned(),
        cause,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                KeyError::Exists(path.to_owned())
            } else {
                io(e)
            }
        })?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_missing_key_file_gives_its_cause_once() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nowhere.key");
        let e = format!(
            "{:#}",
            anyhow::Error::from(load_signing_key(&missing).unwrap_err())
        );
        assert!(e.contains(&missing.display().to_string()), "{e}");
        assert_eq!(e.matches("os error 2").count(), 1, "{e}");
    }

    #[test]
    fn a_generated_key_reads_back_and_is_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.key");
        let key = generate_key_file(&path).unwrap();
        let back = load_signing_key(&path).unwrap();
        assert_eq!(back.to_bytes(), key.to_bytes());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let public = std::fs::read_to_string(pub_path(&path)).unwrap();
        assert_eq!(public.trim(), vigie_hex(key.verifying_key().as_bytes()));
        assert!(matches!(generate_key_file(&path), Err(KeyError::Exists(_))));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{text}");
        std::fs::write(dir.path().join("bad.key"), "not a key").unwrap();
        assert!(matches!(
            load_signing_key(&dir.path().join("bad.key")),
            Err(KeyError::Format(_))
        ));
    }
}
