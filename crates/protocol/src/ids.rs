//! Identifier rules shared by topics and payloads.

/// Why an identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// Empty or longer than allowed.
    #[error("identifier length must be 1..={max}, got {len}")]
    Length {
        /// Length seen.
        len: usize,
        /// Allowed maximum.
        max: usize,
    },
    /// A character outside the allowed set (MQTT wildcards and separators included).
    #[error("identifier contains a forbidden character {0:?}")]
    Char(char),
}

const MAX_HOST_LEN: usize = 64;
const MAX_SENSOR_LEN: usize = 128;

fn allowed(b: u8, extra: &[u8]) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.') || extra.contains(&b)
}

fn check(s: &str, max: usize, extra: &[u8]) -> Result<(), IdError> {
    if s.is_empty() || s.len() > max {
        return Err(IdError::Length { len: s.len(), max });
    }
    // Byte loop first: this runs for every reading on the ingest hot path.
    if s.bytes().all(|b| allowed(b, extra)) {
        return Ok(());
    }
    let bad = s
        .chars()
        .find(|c| !c.is_ascii() || !allowed(*c as u8, extra))
        .unwrap_or('\u{fffd}');
    Err(IdError::Char(bad))
}

/// A site or host name: 1 to 64 of `[A-Za-z0-9._-]`. This keeps MQTT
/// wildcards (`+`, `#`) and the level separator `/` out of topics.
pub fn is_valid_host_or_site(s: &str) -> Result<(), IdError> {
    check(s, MAX_HOST_LEN, b"")
}

/// A sensor name: 1 to 128 of `[A-Za-z0-9._:-]`, e.g. `rapl:package-0`.
pub fn is_valid_sensor(s: &str) -> Result<(), IdError> {
    check(s, MAX_SENSOR_LEN, b":")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn accepts_and_refuses() {
        assert!(is_valid_host_or_site("node-01.par1").is_ok());
        assert!(is_valid_host_or_site("").is_err());
        assert_eq!(is_valid_host_or_site("a/b"), Err(IdError::Char('/')));
        assert_eq!(is_valid_host_or_site("a+"), Err(IdError::Char('+')));
        assert_eq!(is_valid_host_or_site("#"), Err(IdError::Char('#')));
        assert!(is_valid_host_or_site(&"x".repeat(65)).is_err());
        assert!(is_valid_sensor("rapl:package-0").is_ok());
        assert!(is_valid_host_or_site("rapl:package-0").is_err());
        assert!(is_valid_sensor("é").is_err());
    }
}
