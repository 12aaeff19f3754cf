//! Vault API calls: JSON in and out, bounded retries with exponential backoff,
//! and a circuit breaker so a Vault that is down is not hammered.
//!
//! Retry policy: a call is retried (at most `max_retries` times, after
//! `backoff`, `2·backoff`, ... plus jitter) when no request reached Vault
//! (connect failure), or when Vault answered 429/502/503/504 (standby,
//! sealed, overloaded). A non-idempotent call (sign) whose request may have
//! reached Vault (read timeout, broken connection) is *not* retried: it
//! would issue a second certificate. After `breaker_threshold` consecutive
//! calls that ended unavailable, the breaker opens: calls fail at once for a
//! cool-down (doubling up to [`MAX_COOLDOWN`]); then one probe call is let
//! through, and its result closes or re-opens the breaker.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::http::{Endpoint, TransportError};

/// Longest breaker cool-down.
pub(crate) const MAX_COOLDOWN: Duration = Duration::from_secs(60);

/// Why a call failed.
#[derive(Debug)]
pub(crate) enum CallError {
    /// Vault could not be reached or answered 5xx (after retries), or the
    /// breaker is open.
    Unavailable(String),
    /// Vault answered 4xx: its `errors` array, joined.
    Refused {
        /// HTTP status.
        status: u16,
        /// Vault's `errors[]`, joined with "; " (or the body's start).
        errors: String,
    },
    /// Vault answered 2xx with a body that is not what the API documents.
    Invalid(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unavailable(e) => write!(f, "issuer unavailable: {e}"),
            Self::Refused { status, errors } => write!(f, "Vault refused the request (HTTP {status}): {errors}"),
            Self::Invalid(e) => write!(f, "unexpected Vault answer: {e}"),
        }
    }
}

/// Timeouts and retry settings of a client.
#[derive(Clone, Debug)]
pub(crate) struct ClientSettings {
    pub(crate) connect_timeout: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) max_retries: u32,
    pub(crate) backoff: Duration,
    pub(crate) breaker_threshold: u32,
    pub(crate) breaker_cooldown: Duration,
    pub(crate) namespace: Option<String>,
}

#[derive(Debug, Default)]
struct BreakerState {
    consecutive_failures: u32,
    open_until: Option<Instant>,
    cooldown: Duration,
    probing: bool,
}

/// A Vault API client bound to one server.
#[derive(Debug)]
pub(crate) struct Client {
    endpoint: Endpoint,
    settings: ClientSettings,
    breaker: Mutex<BreakerState>,
}

/// Whether a call may be repeated without side effects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Idempotence {
    /// Reads, logins and renewals.
    Idempotent,
    /// Signing: a repeat would issue another certificate.
    NotIdempotent,
}

/// A 2xx answer.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) body: Vec<u8>,
}

impl Reply {
    /// The body as JSON.
    pub(crate) fn json(&self) -> Result<Value, CallError> {
        serde_json::from_slice(&self.body).map_err(|e| CallError::Invalid(format!("not JSON: {e}")))
    }
}

impl Client {
    pub(crate) fn new(endpoint: Endpoint, settings: ClientSettings) -> Self {
        Self { endpoint, settings, breaker: Mutex::new(BreakerState::default()) }
    }

    /// Calls `method path` (path starts with `/v1/`), with the token when
    /// given and a JSON body when given; retries as the module docs say.
    pub(crate) fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
        idempotence: Idempotence,
    ) -> Result<Reply, CallError> {
        self.breaker_admit()?;
        let result = self.call_with_retries(method, path, token, body, idempotence);
        self.breaker_record(matches!(result, Err(CallError::Unavailable(_))));
        result
    }

    fn call_with_retries(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
        idempotence: Idempotence,
    ) -> Result<Reply, CallError> {
        let body_bytes = body.map(|b| b.to_string().into_bytes());
        let mut headers: Vec<(&str, &str)> = Vec::with_capacity(2);
        if let Some(t) = token {
            headers.push(("X-Vault-Token", t));
        }
        if let Some(ns) = &self.settings.namespace {
            headers.push(("X-Vault-Namespace", ns));
        }
        let mut attempt = 0u32;
        loop {
            let sent = self.endpoint.send(
                method,
                path,
                &headers,
                body_bytes.as_deref(),
                self.settings.connect_timeout,
                self.settings.request_timeout,
            );
            let (retryable, err) = match sent {
                Ok(r) if (200..300).contains(&r.status) => return Ok(Reply { body: r.body }),
                Ok(r) if (400..500).contains(&r.status) && r.status != 429 => {
                    return Err(CallError::Refused { status: r.status, errors: vault_errors(&r.body) });
                }
                Ok(r) => {
                    let retryable = matches!(r.status, 429 | 502 | 503 | 504);
                    (retryable, format!("{method} {path}: HTTP {}: {}", r.status, vault_errors(&r.body)))
                }
                Err(e) => {
                    let retryable = idempotence == Idempotence::Idempotent || e.before_request();
                    let timeout = matches!(e, TransportError::Timeout(_));
                    let s = format!("{method} {path}: {e}");
                    // A timed-out sign may have been acted on: never repeat it.
                    (retryable && !(timeout && idempotence == Idempotence::NotIdempotent), s)
                }
            };
            if !retryable || attempt >= self.settings.max_retries {
                let tries = attempt + 1;
                return Err(CallError::Unavailable(if tries > 1 {
                    format!("{err} (after {tries} attempts)")
                } else {
                    err
                }));
            }
            std::thread::sleep(backoff(self.settings.backoff, attempt));
            attempt += 1;
        }
    }

    /// Refuses a call while the breaker is open (one probe after the cool-down).
    fn breaker_admit(&self) -> Result<(), CallError> {
        let mut b = self.breaker.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(until) = b.open_until else { return Ok(()) };
        let now = Instant::now();
        if now < until || b.probing {
            let wait = until.saturating_duration_since(now);
            return Err(CallError::Unavailable(format!(
                "circuit open after {} consecutive failures; next attempt in {}s",
                b.consecutive_failures,
                wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
            )));
        }
        b.probing = true;
        Ok(())
    }

    fn breaker_record(&self, failed: bool) {
        let mut b = self.breaker.lock().unwrap_or_else(PoisonError::into_inner);
        let was_probe = std::mem::take(&mut b.probing);
        if !failed {
            if b.open_until.is_some() {
                tracing::info!("Vault reachable again: circuit closed");
            }
            *b = BreakerState::default();
            return;
        }
        b.consecutive_failures = b.consecutive_failures.saturating_add(1);
        if was_probe || (b.open_until.is_none() && b.consecutive_failures >= self.settings.breaker_threshold) {
            b.cooldown = if was_probe { (b.cooldown * 2).min(MAX_COOLDOWN) } else { self.settings.breaker_cooldown };
            b.open_until = Some(Instant::now() + b.cooldown);
            tracing::warn!(
                failures = b.consecutive_failures,
                cooldown_secs = b.cooldown.as_secs_f64(),
                "Vault unavailable: circuit open"
            );
        }
    }
}

/// Delay before retry `attempt` (0-based): `base · 2^attempt`, ±25 % jitter.
fn backoff(base: Duration, attempt: u32) -> Duration {
    let d = base.saturating_mul(1u32 << attempt.min(10));
    let mut b = [0u8; 1];
    let jitter = if scep_engine::crypto::default_provider().fill_random(&mut b).is_ok() {
        f64::from(b[0]) / 255.0 * 0.5 + 0.75
    } else {
        1.0
    };
    d.mul_f64(jitter)
}

/// Vault's error body `{"errors": [...]}`, joined; else the body's start.
pub(crate) fn vault_errors(body: &[u8]) -> String {
    if let Ok(v) = serde_json::from_slice::<Value>(body)
        && let Some(list) = v.get("errors").and_then(Value::as_array)
    {
        let msgs: Vec<&str> = list.iter().filter_map(Value::as_str).collect();
        return if msgs.is_empty() { "(no error message)".into() } else { msgs.join("; ") };
    }
    let text = String::from_utf8_lossy(&body[..body.len().min(200)]).trim().to_string();
    if text.is_empty() { "(empty body)".into() } else { text }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vault_error_bodies() {
        assert_eq!(vault_errors(br#"{"errors":["a","b"]}"#), "a; b");
        assert_eq!(vault_errors(br#"{"errors":[]}"#), "(no error message)");
        assert_eq!(vault_errors(b"oops"), "oops");
        assert_eq!(vault_errors(b""), "(empty body)");
    }

    #[test]
    fn backoff_grows_with_jitter() {
        let base = Duration::from_millis(100);
        for attempt in 0..4 {
            let d = backoff(base, attempt);
            let nominal = base * (1 << attempt);
            assert!(d >= nominal.mul_f64(0.74) && d <= nominal.mul_f64(1.26), "{attempt}: {d:?}");
        }
    }
}
