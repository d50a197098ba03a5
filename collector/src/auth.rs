//! Bearer tokens with roles for the HTTP API.
//!
//! The tokens file holds one line per token: `<role> <name> sha256:<hex>`,
//! the SHA-256 of the token, never the token itself (a leaked file grants
//! nothing). `vigie-collector token --role R --name N` mints a token and
//! prints the line to append. Without a tokens file every route is open,
//! which suits a loopback-only listener (the default).

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::Arc;

/// Who a token belongs to, which decides the routes it opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Facility operator: everything (Grafana, Prometheus, administration).
    Operator,
    /// Regulator or permit authority: energy figures and exports.
    Regulator,
    /// Scheduler: carbon and energy signals.
    Scheduler,
}

impl Role {
    /// Parses `operator`, `regulator` or `scheduler`.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "operator" => Some(Role::Operator),
            "regulator" => Some(Role::Regulator),
            "scheduler" => Some(Role::Scheduler),
            _ => None,
        }
    }

    /// The role's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Operator => "operator",
            Role::Regulator => "regulator",
            Role::Scheduler => "scheduler",
        }
    }
}

/// A tokens file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    /// The file could not be read.
    #[error(transparent)]
    Read(#[from] vigie_service::secrets::SecretError),
    /// A line does not parse; the message quotes no secret.
    #[error("tokens file line {line}: {why}")]
    Line {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        why: &'static str,
    },
}

#[derive(Debug)]
struct Entry {
    role: Role,
    name: String,
    digest: [u8; 32],
}

/// The accepted tokens.
#[derive(Debug, Default)]
pub struct Tokens {
    entries: Vec<Entry>,
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

impl Tokens {
    /// Parses a tokens file's text.
    pub fn parse(text: &str) -> Result<Tokens, TokensError> {
        let mut entries = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |why| TokensError::Line { line: i + 1, why };
            let mut parts = line.split_whitespace();
            let (Some(role), Some(name), Some(hash), None) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return Err(err("expected `<role> <name> sha256:<hex>`"));
            };
            let role =
                Role::parse(role).ok_or(err("role must be operator, regulator or scheduler"))?;
            let digest = hash
                .strip_prefix("sha256:")
                .and_then(unhex)
                .ok_or(err("the token must be given as sha256:<64 hex digits>"))?;
            entries.push(Entry {
                role,
                name: name.to_owned(),
                digest,
            });
        }
        Ok(Tokens { entries })
    }

    /// Reads a tokens file.
    pub fn load(path: &Path) -> Result<Tokens, TokensError> {
        Self::parse(&vigie_service::secrets::read_secret(path)?)
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The role and name of `token`, if it is one of ours.
    pub fn check(&self, token: &str) -> Option<(Role, &str)> {
        let d = digest(token);
        // Comparing digests, not tokens: timing reveals nothing usable.
        self.entries
            .iter()
            .find(|e| e.digest == d)
            .map(|e| (e.role, e.name.as_str()))
    }
}

/// Mints a random token: the token itself and its tokens-file line.
pub fn mint(role: Role, name: &str) -> std::io::Result<(String, String)> {
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw).map_err(|e| std::io::Error::other(e.to_string()))?;
    let token = format!("vigie_{}", hex(&raw));
    let line = format!("{} {name} sha256:{}", role.as_str(), hex(&digest(&token)));
    Ok((token, line))
}

/// Access rule of a group of routes.
#[derive(Clone)]
pub struct Guard {
    tokens: Option<Arc<Tokens>>,
    allowed: &'static [Role],
}

impl Guard {
    /// Routes open to `allowed` (every role has operator rights implicitly
    /// only if listed). `tokens: None` disables checking.
    pub fn new(tokens: Option<Arc<Tokens>>, allowed: &'static [Role]) -> Self {
        Guard { tokens, allowed }
    }
}

fn deny(status: StatusCode, why: &'static str) -> Response {
    (
        status,
        [(header::WWW_AUTHENTICATE, "Bearer realm=\"vigie\"")],
        axum::Json(serde_json::json!({ "error": why })),
    )
        .into_response()
}

/// Middleware: lets the request through if its bearer token has a role
/// the guard allows.
pub async fn require(State(guard): State<Guard>, req: Request, next: Next) -> Response {
    let Some(tokens) = &guard.tokens else {
        return next.run(req).await;
    };
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(token) = presented else {
        return deny(StatusCode::UNAUTHORIZED, "bearer token required");
    };
    match tokens.check(token) {
        None => {
            tracing::warn!(path = %req.uri().path(), "unknown bearer token");
            deny(StatusCode::UNAUTHORIZED, "unknown token")
        }
        Some((role, name)) if !guard.allowed.contains(&role) => {
            tracing::warn!(token = name, role = role.as_str(), path = %req.uri().path(), "token's role may not use this route");
            deny(
                StatusCode::FORBIDDEN,
                "this token's role may not use this route",
            )
        }
        Some(_) => next.run(req).await,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn minted_tokens_check_against_their_line_only() {
        let (token, line) = mint(Role::Scheduler, "slurm").unwrap();
        assert!(!line.contains(&token), "the file never holds the token");
        let (other, other_line) = mint(Role::Operator, "grafana").unwrap();
        let tokens = Tokens::parse(&format!("# comment\n\n{line}\n{other_line}\n")).unwrap();
        assert_eq!(tokens.len(), 2);
        assert_eq!(tokens.check(&token), Some((Role::Scheduler, "slurm")));
        assert_eq!(tokens.check(&other), Some((Role::Operator, "grafana")));
        assert_eq!(tokens.check("vigie_guess"), None);
        assert_ne!(token, other);
    }

    #[test]
    fn bad_lines_say_where_without_quoting_secrets() {
        for (text, want) in [
            ("admin x sha256:00", "role must be"),
            ("operator x plain-token", "sha256:<64"),
            ("operator x", "expected"),
            ("operator x sha256:zz", "sha256:<64"),
        ] {
            let e = Tokens::parse(text).unwrap_err().to_string();
            assert!(e.contains("line 1") && e.contains(want), "{text}: {e}");
            assert!(!e.contains("plain-token"), "{e}");
        }
    }
}
