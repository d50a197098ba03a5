//! Signed messages: who sent a payload, checked without trusting the broker.
//!
//! A signed message is the payload's JSON bytes exactly as serialised,
//! followed by one trailer line:
//!
//! ```text
//! {"schema":1,...}\nvigie-ed25519 <public key, 64 hex> <signature, 128 hex>\n
//! ```
//!
//! The Ed25519 signature covers exactly the JSON bytes before the
//! trailer's newline: nothing is re-serialised to verify, so a verifier
//! never depends on how another serde version orders or formats fields.
//! The public key in the trailer names the key used; a receiver accepts it
//! only if it is one registered for the topic's host (one, or two during a
//! rotation). An unsigned payload is the JSON alone, as before signatures.
//!
//! Pure functions: no I/O, no clock, no key files (the daemons load keys).

use crate::Rejection;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

/// First word of the trailer line.
pub const SIGNATURE_SCHEME: &str = "vigie-ed25519";

/// Bytes the trailer adds to a payload: a newline, the scheme, a space,
/// 64 hex digits of public key, a space, 128 of signature, a newline.
pub const SIGNATURE_TRAILER_LEN: usize = 1 + SIGNATURE_SCHEME.len() + 1 + 64 + 1 + 128 + 1;

/// A payload taken apart by [`split_signed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Split<'a> {
    /// No trailer: the whole payload is the JSON.
    Unsigned(&'a [u8]),
    /// JSON and the trailer's key and signature (not yet checked).
    Signed {
        /// The signed bytes: the JSON before the trailer.
        json: &'a [u8],
        /// The public key the trailer names.
        key: [u8; 32],
        /// The signature it carries.
        signature: [u8; 64],
    },
}

impl<'a> Split<'a> {
    /// The JSON part, signed or not.
    pub fn json(&self) -> &'a [u8] {
        match self {
            Split::Unsigned(json) | Split::Signed { json, .. } => json,
        }
    }
}

/// `json` followed by the trailer of its signature with `key`.
///
/// ```
/// use vigie_protocol::{sign_payload, verify_signed, samples};
/// let key = samples::signing_key();
/// let json = serde_json::to_vec(&samples::telemetry()).unwrap();
/// let signed = sign_payload(&key, &json);
/// assert_eq!(verify_signed(&signed, &[key.verifying_key()]), Ok(&json[..]));
/// ```
pub fn sign_payload(key: &SigningKey, json: &[u8]) -> Vec<u8> {
    let signature = key.sign(json);
    let mut out = Vec::with_capacity(json.len() + SIGNATURE_TRAILER_LEN);
    out.extend_from_slice(json);
    out.push(b'\n');
    out.extend_from_slice(SIGNATURE_SCHEME.as_bytes());
    out.push(b' ');
    push_hex(&mut out, key.verifying_key().as_bytes());
    out.push(b' ');
    push_hex(&mut out, &signature.to_bytes());
    out.push(b'\n');
    out
}

/// Lower-case hex of a public key, as in the trailer and the collector's
/// `[ingest.keys]`.
pub fn key_hex(key: &VerifyingKey) -> String {
    let mut out = Vec::with_capacity(64);
    push_hex(&mut out, key.as_bytes());
    String::from_utf8_lossy(&out).into_owned()
}

/// The public key written as 64 hex digits (either case); `None` when it
/// is not 32 bytes of hex or not a valid Ed25519 point.
pub fn parse_key_hex(text: &str) -> Option<VerifyingKey> {
    let bytes: [u8; 32] = unhex(text.trim().as_bytes())?;
    VerifyingKey::from_bytes(&bytes).ok()
}

/// Tells a signed payload from an unsigned one. A payload whose last line
/// starts with [`SIGNATURE_SCHEME`] must carry a well-formed trailer:
/// otherwise it is [`Rejection::BadSignature`].
pub fn split_signed(payload: &[u8]) -> Result<Split<'_>, Rejection> {
    let Some(body) = payload.strip_suffix(b"\n") else {
        return Ok(Split::Unsigned(payload));
    };
    let Some(at) = body.iter().rposition(|&b| b == b'\n') else {
        return Ok(Split::Unsigned(payload));
    };
    let (json, line) = (&body[..at], &body[at + 1..]);
    let Some(rest) = line
        .strip_prefix(SIGNATURE_SCHEME.as_bytes())
        .and_then(|r| r.strip_prefix(b" "))
    else {
        return Ok(Split::Unsigned(payload));
    };
    let malformed = || {
        Rejection::BadSignature(format!(
            "malformed {SIGNATURE_SCHEME} trailer: expected 64 hex digits of key and 128 of signature"
        ))
    };
    let mut parts = rest.split(|&b| b == b' ');
    let (Some(key), Some(sig), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(malformed());
    };
    let key: [u8; 32] = unhex(key).ok_or_else(malformed)?;
    let signature: [u8; 64] = unhex(sig).ok_or_else(malformed)?;
    Ok(Split::Signed {
        json,
        key,
        signature,
    })
}

/// The JSON of `payload` if it is signed by one of `keys` (the keys
/// registered for the topic's host: one, or two while it rotates).
/// Refusals: [`Rejection::Unsigned`] (no trailer),
/// [`Rejection::UnknownKey`] (a key not among `keys`; every key when
/// `keys` is empty), [`Rejection::BadSignature`] (malformed trailer, or a
/// signature that does not verify: the bytes were changed or signed with
/// another key). Verification is strict (RFC 8032 and no small-order
/// keys).
pub fn verify_signed<'a>(payload: &'a [u8], keys: &[VerifyingKey]) -> Result<&'a [u8], Rejection> {
    let (json, key, signature) = match split_signed(payload)? {
        Split::Unsigned(_) => return Err(Rejection::Unsigned),
        Split::Signed {
            json,
            key,
            signature,
        } => (json, key, signature),
    };
    let Some(known) = keys.iter().find(|k| k.as_bytes() == &key) else {
        let mut hex = Vec::with_capacity(64);
        push_hex(&mut hex, &key);
        return Err(Rejection::UnknownKey {
            key: String::from_utf8_lossy(&hex).into_owned(),
            registered: keys.len(),
        });
    };
    known
        .verify_strict(json, &Signature::from_bytes(&signature))
        .map_err(|_| {
            Rejection::BadSignature(
                "signature does not verify: the payload was changed after signing".into(),
            )
        })?;
    Ok(json)
}

fn push_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(HEX[usize::from(b >> 4)]);
        out.push(HEX[usize::from(b & 15)]);
    }
}

fn unhex<const N: usize>(text: &[u8]) -> Option<[u8; N]> {
    if text.len() != 2 * N {
        return None;
    }
    let digit = |c: u8| char::from(c).to_digit(16).map(|d| d as u8);
    let mut out = [0u8; N];
    for (o, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
        *o = (digit(pair[0])? << 4) | digit(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::samples;

    fn other_key() -> SigningKey {
        SigningKey::from_bytes(&[9u8; 32])
    }

    fn json() -> Vec<u8> {
        serde_json::to_vec(&samples::telemetry()).unwrap()
    }

    #[test]
    fn a_signed_payload_verifies_and_gives_back_the_exact_json() {
        let key = samples::signing_key();
        let json = json();
        let signed = sign_payload(&key, &json);
        assert_eq!(signed.len(), json.len() + SIGNATURE_TRAILER_LEN);
        assert!(signed.starts_with(&json));
        let line = std::str::from_utf8(&signed[json.len()..]).unwrap();
        assert!(line.starts_with("\nvigie-ed25519 "), "{line}");
        assert!(line.ends_with('\n'));
        assert_eq!(
            verify_signed(&signed, &[key.verifying_key()]),
            Ok(&json[..])
        );
        // Either of two keys (a rotation), in any order.
        let both = [other_key().verifying_key(), key.verifying_key()];
        assert_eq!(verify_signed(&signed, &both), Ok(&json[..]));
        // Deterministic: signing again gives the same bytes (a republished
        // batch is the same message).
        assert_eq!(sign_payload(&key, &json), signed);
        assert_eq!(split_signed(&signed).unwrap().json(), &json[..]);
    }

    #[test]
    fn each_refusal_has_its_reason() {
        let key = samples::signing_key();
        let keys = [key.verifying_key()];
        let json = json();
        let signed = sign_payload(&key, &json);
        let reason = |p: &[u8], keys: &[VerifyingKey]| verify_signed(p, keys).unwrap_err().reason();

        assert_eq!(reason(&json, &keys), "unsigned");
        // A trailing newline alone is not a signature.
        assert_eq!(reason(&[&json[..], b"\n"].concat(), &keys), "unsigned");
        // Signed by a key not registered for the host (a forged host).
        let forged = sign_payload(&other_key(), &json);
        assert_eq!(reason(&forged, &keys), "unknown_key");
        // No key registered at all.
        assert_eq!(reason(&signed, &[]), "unknown_key");
        let err = verify_signed(&forged, &keys).unwrap_err();
        assert!(
            err.to_string()
                .contains(&key_hex(&other_key().verifying_key())),
            "{err}"
        );
        // One byte of the JSON changed: 85250113 µJ becomes 85250114.
        let at = signed.windows(8).position(|w| w == b"85250113").unwrap();
        let mut changed = signed.clone();
        changed[at + 7] = b'4';
        assert_eq!(reason(&changed, &keys), "bad_signature");
        // The registered key named in a trailer over other bytes.
        let mut swapped = forged.clone();
        let k = json.len() + 1 + SIGNATURE_SCHEME.len() + 1;
        swapped[k..k + 64].copy_from_slice(key_hex(&key.verifying_key()).as_bytes());
        assert_eq!(reason(&swapped, &keys), "bad_signature");
        // Malformed trailers.
        for bad in [
            [&json[..], b"\nvigie-ed25519 \n"].concat(),
            [&json[..], b"\nvigie-ed25519 zz 00\n"].concat(),
            signed[..signed.len() - 3]
                .iter()
                .chain(b"\n")
                .copied()
                .collect(),
            [&signed[..signed.len() - 1], b" extra\n"].concat(),
        ] {
            assert_eq!(reason(&bad, &keys), "bad_signature");
        }
    }

    proptest::proptest! {
        // Ed25519 is slow in debug builds: fewer cases than the default 256.
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        #[test]
        fn any_bytes_sign_and_verify_back(json in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let key = samples::signing_key();
            let signed = sign_payload(&key, &json);
            proptest::prop_assert_eq!(verify_signed(&signed, &[key.verifying_key()]), Ok(&json[..]));
            proptest::prop_assert_eq!(split_signed(&signed).unwrap().json(), &json[..]);
        }

        #[test]
        fn no_input_panics(payload in proptest::collection::vec(proptest::num::u8::ANY, 0..400), cut in 0usize..400) {
            let key = samples::signing_key();
            let keys = [key.verifying_key()];
            let _ = verify_signed(&payload, &keys);
            // A signed message cut or extended anywhere is refused, never taken.
            let signed = sign_payload(&key, &payload);
            let cut = cut.min(signed.len());
            if cut < signed.len() {
                proptest::prop_assert!(verify_signed(&signed[..cut], &keys).is_err());
            }
            let longer = [&signed[..], &payload[..]].concat();
            if !payload.is_empty() {
                proptest::prop_assert!(verify_signed(&longer, &keys).is_err());
            }
        }
    }

    #[test]
    fn keys_read_back_from_their_hex() {
        let k = samples::signing_key().verifying_key();
        assert_eq!(parse_key_hex(&key_hex(&k)), Some(k));
        assert_eq!(parse_key_hex(&key_hex(&k).to_uppercase()), Some(k));
        assert_eq!(parse_key_hex("00"), None);
        assert_eq!(parse_key_hex(&"zz".repeat(32)), None);
    }
}
