//! What the admin plane shows of one profile's Intune API client
//! (`intune/stats`): last token and discovery results, call latencies, and
//! the Intune codes seen.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;

use super::client::ApiFailure;

/// One hop's last result.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct LastResult {
    /// Attempts made.
    pub calls: u64,
    /// `ok`, or the failure's detail.
    pub last: Option<String>,
    /// Latency of the last attempt, milliseconds.
    pub last_ms: u64,
    /// Sum of all latencies, milliseconds (`total_ms / calls` is the mean).
    pub total_ms: u64,
}

/// A snapshot of the counters.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct ApiStatsSnapshot {
    /// Entra token fetches.
    pub token: LastResult,
    /// Graph discoveries.
    pub discovery: LastResult,
    /// `ScepActions` calls by action (`validateRequest`, ...).
    pub actions: BTreeMap<String, LastResult>,
    /// By action: Intune's codes (or the local failure label when Intune
    /// gave none) with counts. At most [`MAX_CODES`] distinct codes per
    /// action; codes that are not `[A-Za-z0-9_]{1,64}` or beyond the bound
    /// count as `other` (the label set of the metric stays bounded).
    pub codes: BTreeMap<String, BTreeMap<String, u64>>,
}

/// Distinct codes kept per action.
pub const MAX_CODES: usize = 64;

/// The live counters.
#[derive(Debug, Default)]
pub struct ApiStats {
    inner: Mutex<ApiStatsSnapshot>,
}

fn record<T>(slot: &mut LastResult, spent: Duration, result: &Result<T, ApiFailure>) {
    slot.calls += 1;
    slot.last_ms = u64::try_from(spent.as_millis()).unwrap_or(u64::MAX);
    slot.total_ms = slot.total_ms.saturating_add(slot.last_ms);
    slot.last = Some(match result {
        Ok(_) => "ok".into(),
        Err(e) => e.detail.clone(),
    });
}

impl ApiStats {
    /// Records one token fetch.
    pub fn record_token<T>(&self, spent: Duration, result: &Result<T, ApiFailure>) {
        record(&mut self.inner.lock().unwrap_or_else(PoisonError::into_inner).token, spent, result);
    }

    /// Records one discovery.
    pub fn record_discovery<T>(&self, spent: Duration, result: &Result<T, ApiFailure>) {
        record(&mut self.inner.lock().unwrap_or_else(PoisonError::into_inner).discovery, spent, result);
    }

    /// Records one `ScepActions` call and the code it produced.
    pub fn record_action(&self, action: &str, spent: Duration, result: &Result<(), ApiFailure>) {
        let mut s = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        record(s.actions.entry(action.to_string()).or_default(), spent, result);
        let code = match result {
            Ok(()) => "Success".to_string(),
            Err(e) => e.code.clone().unwrap_or_else(|| e.label.to_string()),
        };
        let codes = s.codes.entry(action.to_string()).or_default();
        let plain = (1..=64).contains(&code.len()) && code.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        let code = if plain && (codes.contains_key(&code) || codes.len() < MAX_CODES) { code } else { "other".into() };
        *codes.entry(code).or_default() += 1;
    }

    /// A copy of the counters.
    pub fn snapshot(&self) -> ApiStatsSnapshot {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}
