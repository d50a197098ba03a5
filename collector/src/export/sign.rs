//! Signing exports: SHA-256 of the bytes and a detached Ed25519
//! signature over the same bytes.
//!
//! Keys are PKCS#8 PEM files (private: `BEGIN PRIVATE KEY`, public:
//! SubjectPublicKeyInfo `BEGIN PUBLIC KEY`), the format OpenSSL writes
//! with `openssl genpkey -algorithm ed25519`, so a regulator can check a
//! signature without vigie. Next to `FILE` go `FILE.sha256` (the
//! `sha256sum` line, so `sha256sum -c FILE.sha256` works) and `FILE.sig`
//! (the 64-byte signature, hex, one line).

use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePublicKey};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Why signing or checking failed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// A file could not be read or written. The cause is in the message
    /// and not also a `source`, so a chain printed with `{:#}` says it once.
    #[error("{path}: {cause}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        cause: std::io::Error,
    },
    /// A key file is not a PKCS#8 PEM Ed25519 key.
    #[error("{0}: not an Ed25519 key in PKCS#8 PEM (BEGIN PRIVATE KEY / BEGIN PUBLIC KEY)")]
    Key(PathBuf),
    /// A file to create already exists.
    #[error("{0} already exists; refusing to overwrite a key")]
    Exists(PathBuf),
    /// No randomness from the system.
    #[error("system randomness: {0}")]
    Random(String),
    /// The export does not match its `.sha256` file.
    #[error(
        "SHA-256 mismatch: {path} hashes to {actual}, {sha_file} says {expected}: the file was changed after it was exported"
    )]
    HashMismatch {
        /// Export.
        path: PathBuf,
        /// Its `.sha256` file.
        sha_file: PathBuf,
        /// Recorded.
        expected: String,
        /// Computed.
        actual: String,
    },
    /// The `.sig` or `.sha256` file is malformed.
    #[error("{0}: malformed (expected a hex line)")]
    Malformed(PathBuf),
    /// The signature does not verify with this public key.
    #[error(
        "signature of {0} does not verify with this public key: the file was changed, or signed with another key"
    )]
    BadSignature(PathBuf),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SignError + '_ {
    move |cause| SignError::Io {
        path: path.to_owned(),
        cause,
    }
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Standard base64 with padding (RFC 4648), for the HTTP `Digest` header.
pub fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(char::from(A[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// The sibling `FILE.<ext>`.
pub fn sibling(path: &Path, ext: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".");
    s.push(ext);
    PathBuf::from(s)
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), SignError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                SignError::Exists(path.to_owned())
            } else {
                SignError::Io {
                    path: path.to_owned(),
                    cause: e,
                }
            }
        })?;
    f.write_all(bytes).map_err(io(path))
}

/// Creates `export-signing.key` (0600) and `export-signing.pub` in `dir`;
/// returns their paths. Refuses to overwrite.
pub fn keygen(dir: &Path) -> Result<(PathBuf, PathBuf), SignError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let mut seed = zeroize::Zeroizing::new([0u8; 32]);
    getrandom::fill(seed.as_mut_slice()).map_err(|e| SignError::Random(e.to_string()))?;
    let key = SigningKey::from_bytes(&seed);
    let (kp, pp) = (
        dir.join("export-signing.key"),
        dir.join("export-signing.pub"),
    );
    let pem = private_key_pem(&key);
    let public = key
        .verifying_key()
        .to_public_key_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
        .map_err(|_| SignError::Key(pp.clone()))?;
    if pp.exists() {
        return Err(SignError::Exists(pp));
    }
    write_new(&kp, pem.as_bytes(), 0o600)?;
    write_new(&pp, public.as_bytes(), 0o644)?;
    Ok((kp, pp))
}

/// PKCS#8 v1 (RFC 8410 section 7, without the optional public key: the
/// v2 form is not read by OpenSSL 3.0) in PEM.
fn private_key_pem(key: &SigningKey) -> zeroize::Zeroizing<String> {
    // PrivateKeyInfo { version 0, AlgorithmIdentifier id-Ed25519,
    // OCTET STRING { OCTET STRING seed } }.
    const PREFIX: [u8; 16] = [
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    let mut der = zeroize::Zeroizing::new(PREFIX.to_vec());
    der.extend_from_slice(&key.to_bytes());
    zeroize::Zeroizing::new(format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        base64(&der)
    ))
}

/// Reads a private key file.
pub fn load_signing_key(path: &Path) -> Result<SigningKey, SignError> {
    let text = zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(io(path))?);
    SigningKey::from_pkcs8_pem(&text).map_err(|_| SignError::Key(path.to_owned()))
}

/// Reads a public key file.
pub fn load_verifying_key(path: &Path) -> Result<VerifyingKey, SignError> {
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    VerifyingKey::from_public_key_pem(&text).map_err(|_| SignError::Key(path.to_owned()))
}

/// Writes `FILE.sha256` and, with a key, `FILE.sig`; returns the hex digest.
pub fn write_sidecars(
    file: &Path,
    bytes: &[u8],
    key: Option<&SigningKey>,
) -> Result<String, SignError> {
    let digest = hex(&sha256(bytes));
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let sha_file = sibling(file, "sha256");
    std::fs::write(&sha_file, format!("{digest}  {name}\n")).map_err(io(&sha_file))?;
    if let Some(k) = key {
        let sig = k.sign(bytes);
        let sig_file = sibling(file, "sig");
        std::fs::write(&sig_file, format!("{}\n", hex(&sig.to_bytes()))).map_err(io(&sig_file))?;
    }
    Ok(digest)
}

/// Checks `FILE` against `FILE.sha256` and `FILE.sig` with `public`.
pub fn verify(file: &Path, public: &VerifyingKey) -> Result<String, SignError> {
    let bytes = std::fs::read(file).map_err(io(file))?;
    let actual = hex(&sha256(&bytes));
    let sha_file = sibling(file, "sha256");
    let line = std::fs::read_to_string(&sha_file).map_err(io(&sha_file))?;
    let expected = line
        .split_whitespace()
        .next()
        .filter(|h| h.len() == 64 && unhex(h).is_some())
        .ok_or_else(|| SignError::Malformed(sha_file.clone()))?
        .to_lowercase();
    if expected != actual {
        return Err(SignError::HashMismatch {
            path: file.to_owned(),
            sha_file,
            expected,
            actual,
        });
    }
    let sig_file = sibling(file, "sig");
    let sig_text = std::fs::read_to_string(&sig_file).map_err(io(&sig_file))?;
    let sig = unhex(&sig_text)
        .and_then(|b| Signature::from_slice(&b).ok())
        .ok_or_else(|| SignError::Malformed(sig_file.clone()))?;
    public
        .verify_strict(&bytes, &sig)
        .map_err(|_| SignError::BadSignature(file.to_owned()))?;
    Ok(actual)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn base64_and_hex_match_known_vectors() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
        assert_eq!(hex(&[0, 255, 16]), "00ff10");
        assert_eq!(unhex("00ff10"), Some(vec![0, 255, 16]));
        assert_eq!(unhex("0g"), None);
        // SHA-256("abc"), FIPS 180-2.
        assert_eq!(
            hex(&sha256(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn reads_the_rfc_8410_example_keys_and_writes_pkcs8_v1() {
        // RFC 8410 section 10.3 private key and section 10.1 public key.
        let dir = tempfile::tempdir().unwrap();
        let (k, p) = (dir.path().join("k.pem"), dir.path().join("p.pem"));
        std::fs::write(&k, "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC\n-----END PRIVATE KEY-----\n").unwrap();
        std::fs::write(&p, "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n-----END PUBLIC KEY-----\n").unwrap();
        let key = load_signing_key(&k).unwrap();
        assert_eq!(key.verifying_key(), load_verifying_key(&p).unwrap());
        // Written back byte for byte as OpenSSL writes it.
        assert_eq!(
            private_key_pem(&key).as_str(),
            std::fs::read_to_string(&k).unwrap()
        );
    }

    #[test]
    fn sign_then_verify_tamper_and_wrong_key() {
        let dir = tempfile::tempdir().unwrap();
        let (kp, pp) = keygen(dir.path()).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&kp).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(matches!(keygen(dir.path()), Err(SignError::Exists(_))));
        let key = load_signing_key(&kp).unwrap();
        let public = load_verifying_key(&pp).unwrap();
        let file = dir.path().join("export.json");
        let bytes = b"{\"pue\": 1.25}\n".to_vec();
        std::fs::write(&file, &bytes).unwrap();
        let digest = write_sidecars(&file, &bytes, Some(&key)).unwrap();
        assert_eq!(verify(&file, &public).unwrap(), digest);

        // One byte changed: the hash no longer matches.
        let mut t = bytes.clone();
        t[10] ^= 1;
        std::fs::write(&file, &t).unwrap();
        assert!(matches!(
            verify(&file, &public),
            Err(SignError::HashMismatch { .. })
        ));
        // ... and with the hash file updated too, the signature fails.
        write_sidecars(&file, &t, None).unwrap();
        assert!(matches!(
            verify(&file, &public),
            Err(SignError::BadSignature(_))
        ));

        // Another key.
        std::fs::write(&file, &bytes).unwrap();
        write_sidecars(&file, &bytes, Some(&key)).unwrap();
        let other = tempfile::tempdir().unwrap();
        let (_, opp) = keygen(other.path()).unwrap();
        let wrong = load_verifying_key(&opp).unwrap();
        assert!(matches!(
            verify(&file, &wrong),
            Err(SignError::BadSignature(_))
        ));
        // A public key where a private one is expected.
        assert!(matches!(load_signing_key(&pp), Err(SignError::Key(_))));
    }
}
