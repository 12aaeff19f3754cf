//! Authentication to Vault: a token from a file or an environment variable,
//! or an AppRole login; renewal before expiry.
//!
//! Tokens never come from the command line (they would show in `ps`).
//! - Token file: re-read whenever its modification time or size changes (so
//!   Vault Agent or an operator can rotate it without a restart).
//! - Environment variable: read once, at start-up.
//! - AppRole: `POST /v1/auth/<mount>/login` with the role_id and secret_id
//!   read from their files; logs in again when the token expires, cannot be
//!   renewed, or Vault refuses it (403).
//!
//! A token with a TTL is renewed (`POST /v1/auth/token/renew-self`) once two
//! thirds of its TTL have passed. The TTL of a file or environment token is
//! learned with `GET /v1/auth/token/lookup-self` the first time it is used.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};

use super::client::{CallError, Client, Idempotence};

/// How scepd authenticates to Vault.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum VaultAuth {
    /// A token read from this file (trailing whitespace ignored), re-read
    /// when the file changes. The file should be mode 0600.
    TokenFile(PathBuf),
    /// A token read from this environment variable at start-up.
    TokenEnv(String),
    /// AppRole login.
    AppRole {
        /// The auth method's mount path (default `approle`).
        mount: String,
        /// File holding the role_id.
        role_id_file: PathBuf,
        /// File holding the secret_id (mode 0600).
        secret_id_file: PathBuf,
    },
}

/// A token and what is known of its lifetime.
#[derive(Debug)]
struct Lease {
    token: String,
    /// For file tokens: (mtime, size) of the file it was read from.
    stamp: Option<(Option<SystemTime>, u64)>,
    /// When to renew (None: never, e.g. root tokens or not renewable).
    renew_at: Option<Instant>,
    /// When it expires (None: no TTL or unknown).
    expires_at: Option<Instant>,
    /// An AppRole token is replaced by a new login this long before expiry.
    margin: Duration,
    /// Whether lookup-self was done (file/env tokens).
    looked_up: bool,
}

/// Token management for one issuer.
#[derive(Debug)]
pub(crate) struct Auth {
    method: VaultAuth,
    /// The environment token, captured at start-up.
    env_token: Option<String>,
    lease: Mutex<Option<Lease>>,
}

/// Largest margin before expiry at which an AppRole token is replaced by a
/// new login (a quarter of the TTL for short TTLs).
const EXPIRY_MARGIN: Duration = Duration::from_secs(10);

impl Auth {
    /// Prepares authentication; reads the environment token now.
    pub(crate) fn new(method: VaultAuth) -> Result<Self, String> {
        let env_token = match &method {
            VaultAuth::TokenEnv(var) => {
                let t = std::env::var(var).map_err(|_| format!("environment variable {var} is not set"))?;
                let t = t.trim().to_string();
                if t.is_empty() {
                    return Err(format!("environment variable {var} is empty"));
                }
                Some(t)
            }
            VaultAuth::TokenFile(path) => {
                read_secret(path)?;
                None
            }
            VaultAuth::AppRole { role_id_file, secret_id_file, .. } => {
                read_secret(role_id_file)?;
                read_secret(secret_id_file)?;
                None
            }
        };
        Ok(Self { method, env_token, lease: Mutex::new(None) })
    }

    /// A valid token: renews, re-reads or logs in as needed.
    pub(crate) fn token(&self, client: &Client) -> Result<String, CallError> {
        let mut guard = self.lease.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        // Renew first: a token past two thirds of its TTL but not expired.
        if let Some(lease) = guard.as_mut()
            && lease.renew_at.is_some_and(|r| r <= now)
            && lease.expires_at.is_none_or(|e| now < e)
        {
            match renew(client, &lease.token) {
                Ok((renew_at, expires_at, margin)) => {
                    (lease.renew_at, lease.expires_at, lease.margin) = (renew_at, expires_at, margin);
                    tracing::debug!("Vault token renewed");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "Vault token renewal failed");
                    // Do not retry the renewal on every request.
                    lease.renew_at = None;
                    if matches!(self.method, VaultAuth::AppRole { .. }) {
                        *guard = None;
                    }
                }
            }
        }
        let fresh = match (&self.method, guard.as_ref()) {
            (VaultAuth::TokenFile(path), Some(l)) => l.stamp == file_stamp(path),
            (VaultAuth::AppRole { .. }, Some(l)) => l.expires_at.is_none_or(|e| now + l.margin < e),
            (_, Some(_)) => true,
            (_, None) => false,
        };
        if !fresh {
            *guard = Some(self.obtain(client)?);
        }
        let lease = guard.as_mut().ok_or_else(|| CallError::Invalid("no token".into()))?;
        if !lease.looked_up {
            lease.looked_up = true;
            lookup(client, lease);
        }
        Ok(lease.token.clone())
    }

    /// Forgets the current token (Vault answered 403): the next
    /// [`Auth::token`] re-reads the file or logs in again. Returns whether a
    /// new token could differ (not for an environment token).
    pub(crate) fn invalidate(&self) -> bool {
        if matches!(self.method, VaultAuth::TokenEnv(_)) {
            return false;
        }
        *self.lease.lock().unwrap_or_else(PoisonError::into_inner) = None;
        true
    }

    fn obtain(&self, client: &Client) -> Result<Lease, CallError> {
        let unreadable = |e: String| CallError::Invalid(format!("credentials: {e}"));
        match &self.method {
            VaultAuth::TokenEnv(_) => {
                let token = self.env_token.clone().ok_or_else(|| unreadable("no environment token".into()))?;
                Ok(Lease {
                    token,
                    stamp: None,
                    renew_at: None,
                    expires_at: None,
                    margin: Duration::ZERO,
                    looked_up: false,
                })
            }
            VaultAuth::TokenFile(path) => {
                let stamp = file_stamp(path);
                let token = read_secret(path).map_err(unreadable)?;
                Ok(Lease { token, stamp, renew_at: None, expires_at: None, margin: Duration::ZERO, looked_up: false })
            }
            VaultAuth::AppRole { mount, role_id_file, secret_id_file } => {
                let role_id = read_secret(role_id_file).map_err(unreadable)?;
                let secret_id = read_secret(secret_id_file).map_err(unreadable)?;
                let body = json!({ "role_id": role_id, "secret_id": secret_id });
                let reply = client.call(
                    "POST",
                    &format!("/v1/auth/{mount}/login"),
                    None,
                    Some(&body),
                    Idempotence::Idempotent,
                )?;
                let v = reply.json()?;
                let token = v
                    .pointer("/auth/client_token")
                    .and_then(Value::as_str)
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| CallError::Invalid("AppRole login: no auth.client_token".into()))?
                    .to_string();
                let (renew_at, expires_at, margin) = lifetime(&v["auth"]["lease_duration"], &v["auth"]["renewable"]);
                tracing::info!(mount = %mount, ttl_secs = v["auth"]["lease_duration"].as_u64().unwrap_or(0), "logged in to Vault with AppRole");
                Ok(Lease { token, stamp: None, renew_at, expires_at, margin, looked_up: true })
            }
        }
    }
}

/// Learns a static token's TTL (best effort: a token without lookup-self
/// permission is simply never renewed).
fn lookup(client: &Client, lease: &mut Lease) {
    match client.call("GET", "/v1/auth/token/lookup-self", Some(&lease.token), None, Idempotence::Idempotent) {
        Ok(reply) => {
            if let Ok(v) = reply.json() {
                (lease.renew_at, lease.expires_at, lease.margin) = lifetime(&v["data"]["ttl"], &v["data"]["renewable"]);
            }
        }
        Err(e) => tracing::debug!(error = %e, "Vault token lookup-self failed; the token will not be renewed"),
    }
}

/// `POST /v1/auth/token/renew-self`: the new (renew_at, expires_at).
fn renew(client: &Client, token: &str) -> Result<(Option<Instant>, Option<Instant>, Duration), CallError> {
    let reply =
        client.call("POST", "/v1/auth/token/renew-self", Some(token), Some(&json!({})), Idempotence::Idempotent)?;
    let v = reply.json()?;
    Ok(lifetime(&v["auth"]["lease_duration"], &v["auth"]["renewable"]))
}

/// (renew_at, expires_at, margin) for a TTL in seconds: renew at two
/// thirds; replace [`EXPIRY_MARGIN`] (at most a quarter of the TTL) before expiry.
fn lifetime(ttl: &Value, renewable: &Value) -> (Option<Instant>, Option<Instant>, Duration) {
    let ttl = Duration::from_secs(ttl.as_u64().unwrap_or(0));
    if ttl.is_zero() {
        return (None, None, Duration::ZERO);
    }
    let now = Instant::now();
    let renew = renewable.as_bool().unwrap_or(false).then(|| now + ttl * 2 / 3);
    (renew, Some(now + ttl), EXPIRY_MARGIN.min(ttl / 4))
}

fn file_stamp(path: &Path) -> Option<(Option<SystemTime>, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.modified().ok(), m.len()))
}

/// A secret file's contents, trimmed; must not be empty.
fn read_secret(path: &Path) -> Result<String, String> {
    let text = crate::config_file::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let t = text.trim();
    if t.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    if t.contains(['\r', '\n']) {
        return Err(format!("{} holds more than one line", path.display()));
    }
    Ok(t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes() {
        assert_eq!(lifetime(&json!(0), &json!(true)), (None, None, Duration::ZERO));
        let (renew, exp, margin) = lifetime(&json!(90), &json!(true));
        let (renew, exp) = (renew.unwrap(), exp.unwrap());
        assert!(renew < exp && exp - renew >= Duration::from_secs(29));
        assert_eq!(margin, EXPIRY_MARGIN);
        assert_eq!(lifetime(&json!(8), &json!(true)).2, Duration::from_secs(2));
        assert!(lifetime(&json!(90), &json!(false)).0.is_none());
    }

    #[test]
    fn secrets_are_single_non_empty_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t");
        std::fs::write(&p, "s.abc\n").unwrap();
        assert_eq!(read_secret(&p).unwrap(), "s.abc");
        std::fs::write(&p, "\n").unwrap();
        assert!(read_secret(&p).is_err());
        std::fs::write(&p, "a\nb\n").unwrap();
        assert!(read_secret(&p).is_err());
        assert!(read_secret(&dir.path().join("missing")).is_err());
        assert!(Auth::new(VaultAuth::TokenEnv("SCEPD_TEST_SURELY_UNSET_VAR".into())).is_err());
    }
}
