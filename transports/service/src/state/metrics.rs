//! The process's metrics counters and histograms, updated on the request path
//! (`crate::operator::metrics` renders them with the gauges for `GET /metrics`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::connections::ConnectionCounters;

/// Upper bounds of the issuance latency buckets, in seconds.
pub const LATENCY_BUCKETS: [f64; 12] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

#[derive(Clone, Debug, Default)]
struct Histogram {
    buckets: [u64; LATENCY_BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// Counters keyed by label values, nested so that counting an existing series
/// looks it up by `&str` and allocates nothing (the request path's cost).
type Labels2<V> = BTreeMap<String, BTreeMap<String, V>>;

#[derive(Debug, Default)]
struct Inner {
    /// profile → operation → status → count
    requests: Labels2<BTreeMap<u16, u64>>,
    /// profile → action → outcome → count
    outcomes: Labels2<BTreeMap<String, u64>>,
    issuer_errors: BTreeMap<String, u64>,
    issuance: BTreeMap<String, Histogram>,
    audit_failures: u64,
    /// profile → event → count (one-time challenges)
    challenges: Labels2<u64>,
}

/// What happened to a one-time challenge (`scepd_challenges_total{event}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChallengeEvent {
    /// Minted through the admin API.
    Minted,
    /// Consumed by an enrolment.
    Used,
    /// Reached its expiry unused.
    Expired,
    /// Presented and refused (unknown, used, expired, binding mismatch).
    Refused,
}

impl ChallengeEvent {
    /// The `event` label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Minted => "minted",
            Self::Used => "used",
            Self::Expired => "expired",
            Self::Refused => "refused",
        }
    }
}

/// The value under `key`, created on first use; an existing key costs a
/// lookup by `&str` and no allocation.
fn series<'m, V: Default>(map: &'m mut BTreeMap<String, V>, key: &str) -> &'m mut V {
    if !map.contains_key(key) {
        map.insert(key.to_string(), V::default());
    }
    map.get_mut(key).unwrap_or_else(|| unreachable!("inserted above"))
}

/// Counters and histograms updated by the service (one per process).
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
    connections: Arc<ConnectionCounters>,
    pki: PkiCounters,
}

/// What relying parties fetched under `/pki/` (lock-free: the OCSP path is hot).
#[derive(Debug, Default)]
pub struct PkiCounters {
    /// OCSP responses by OCSPResponseStatus code (RFC 6960 §4.2.1), 0..=6.
    ocsp: [AtomicU64; 7],
    /// CRL requests answered 200 (the CRL), 304 (not modified), other.
    crl: [AtomicU64; 3],
}

/// The `status` label of an OCSPResponseStatus code.
const OCSP_STATUS_LABELS: [&str; 7] =
    ["successful", "malformedRequest", "internalError", "tryLater", "", "sigRequired", "unauthorized"];

impl PkiCounters {
    /// Counts one OCSP response.
    pub fn ocsp(&self, status: scep_engine::ocsp::ResponseStatus) {
        if let Some(c) = self.ocsp.get(usize::from(status.code())) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts one CRL request by the HTTP status it got.
    pub fn crl(&self, status: u16) {
        let slot = match status {
            200 => 0,
            304 => 1,
            _ => 2,
        };
        self.crl[slot].fetch_add(1, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String) {
        header(
            out,
            "scepd_ocsp_responses_total",
            "counter",
            "OCSP responses sent under /pki/ocsp, by OCSPResponseStatus (RFC 6960 4.2.1).",
        );
        for (label, n) in OCSP_STATUS_LABELS.iter().zip(&self.ocsp) {
            if !label.is_empty() {
                let _ = writeln!(out, "scepd_ocsp_responses_total{{status=\"{label}\"}} {}", n.load(Ordering::Relaxed));
            }
        }
        header(out, "scepd_crl_requests_total", "counter", "CRL requests under /pki/<ca-id>/crl, by HTTP status.");
        for (label, n) in ["200", "304", "other"].iter().zip(&self.crl) {
            let _ = writeln!(out, "scepd_crl_requests_total{{status=\"{label}\"}} {}", n.load(Ordering::Relaxed));
        }
    }
}

/// One answered SCEP request, as the metrics see it.
#[derive(Clone, Copy, Debug)]
pub struct Observation<'a> {
    /// The profile (empty when none matched).
    pub profile: &'a str,
    /// The SCEP operation name.
    pub operation: &'a str,
    /// HTTP status.
    pub status: u16,
    /// The audit action.
    pub action: &'a str,
    /// The outcome label.
    pub outcome: &'a str,
    /// Time spent in the issuer, when it was asked.
    pub issuance: Option<Duration>,
}

impl Metrics {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The connection counters the transports update (refusals at accept,
    /// connections closed by a timeout); shared, so a connection can hold them.
    pub fn connections(&self) -> &Arc<ConnectionCounters> {
        &self.connections
    }

    /// Counts one answered SCEP request.
    pub fn observe(&self, o: &Observation<'_>) {
        let mut m = self.lock();
        *series(series(&mut m.requests, o.profile), o.operation).entry(o.status).or_default() += 1;
        *series(series(series(&mut m.outcomes, o.profile), o.action), o.outcome) += 1;
        if o.outcome == "issuer_rejected" {
            *series(&mut m.issuer_errors, o.profile) += 1;
        }
        if let Some(d) = o.issuance {
            let h = series(&mut m.issuance, o.profile);
            let secs = d.as_secs_f64();
            for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
                if secs <= *bound {
                    h.buckets[i] += 1;
                }
            }
            h.count += 1;
            h.sum += secs;
        }
    }

    /// The `/pki/` counters.
    pub const fn pki(&self) -> &PkiCounters {
        &self.pki
    }

    /// Counts an audit write that failed (the request was answered 503).
    pub fn audit_failure(&self) {
        self.lock().audit_failures += 1;
    }

    /// Counts one event of a one-time challenge of `profile`.
    pub fn challenge(&self, profile: &str, event: ChallengeEvent) {
        *series(series(&mut self.lock().challenges, profile), event.as_str()) += 1;
    }

    /// Appends the counters and histograms in the exposition format
    /// (`crate::operator::metrics` adds the gauges read from the state).
    /// Every name in `profiles` gets its per-profile issuer series (zero until
    /// counted), so alerts need no `absent()`.
    pub fn render_counters(&self, out: &mut String, profiles: &[&str]) {
        {
            let mut m = self.lock();
            for p in profiles {
                series(&mut m.issuer_errors, p);
                series(&mut m.issuance, p);
            }
            header(
                out,
                "scepd_requests_total",
                "counter",
                "SCEP requests answered, by profile, operation and HTTP status.",
            );
            for (p, ops) in &m.requests {
                for (op, statuses) in ops {
                    for (status, n) in statuses {
                        let _ = writeln!(
                            out,
                            "scepd_requests_total{{profile=\"{}\",operation=\"{}\",status=\"{status}\"}} {n}",
                            esc(p),
                            esc(op)
                        );
                    }
                }
            }
            header(
                out,
                "scepd_scep_outcomes_total",
                "counter",
                "SCEP decisions, by profile, audit action and outcome label.",
            );
            for (p, actions) in &m.outcomes {
                for (action, outcomes) in actions {
                    for (outcome, n) in outcomes {
                        let _ = writeln!(
                            out,
                            "scepd_scep_outcomes_total{{profile=\"{}\",action=\"{}\",outcome=\"{}\"}} {n}",
                            esc(p),
                            esc(action),
                            esc(outcome)
                        );
                    }
                }
            }
            header(out, "scepd_issuer_errors_total", "counter", "Issuance requests the issuer refused or failed.");
            for (p, n) in &m.issuer_errors {
                let _ = writeln!(out, "scepd_issuer_errors_total{{profile=\"{}\"}} {n}", esc(p));
            }
            header(out, "scepd_issuance_duration_seconds", "histogram", "Time spent in the issuer per request.");
            for (p, h) in &m.issuance {
                let p = esc(p);
                for (bound, n) in LATENCY_BUCKETS.iter().zip(h.buckets) {
                    let _ =
                        writeln!(out, "scepd_issuance_duration_seconds_bucket{{profile=\"{p}\",le=\"{bound}\"}} {n}");
                }
                let _ =
                    writeln!(out, "scepd_issuance_duration_seconds_bucket{{profile=\"{p}\",le=\"+Inf\"}} {}", h.count);
                let _ = writeln!(out, "scepd_issuance_duration_seconds_sum{{profile=\"{p}\"}} {}", h.sum);
                let _ = writeln!(out, "scepd_issuance_duration_seconds_count{{profile=\"{p}\"}} {}", h.count);
            }
            header(
                out,
                "scepd_challenges_total",
                "counter",
                "One-time challenges, by profile and event (minted, used, expired, refused).",
            );
            for (p, events) in &m.challenges {
                for (event, n) in events {
                    let _ = writeln!(out, "scepd_challenges_total{{profile=\"{}\",event=\"{event}\"}} {n}", esc(p));
                }
            }
            header(out, "scepd_audit_write_failures_total", "counter", "Audit events that could not be committed.");
            let _ = writeln!(out, "scepd_audit_write_failures_total {}", m.audit_failures);
        }
        self.pki.render(out);
    }
}

/// Writes the `# HELP` and `# TYPE` lines of the metric `name`.
pub fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Escapes a label value (backslash, double quote, newline).
pub fn esc(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_labels_escaped() {
        let m = Metrics::default();
        let o = Observation {
            profile: "corp",
            operation: "PKIOperation",
            status: 200,
            action: "scep_pkcsreq",
            outcome: "success",
            issuance: Some(Duration::from_millis(20)),
        };
        m.observe(&o);
        m.observe(&Observation { issuance: Some(Duration::from_secs(60)), outcome: "issuer_rejected", ..o });
        let inner = m.lock();
        let h = &inner.issuance["corp"];
        assert_eq!(h.count, 2);
        assert_eq!(h.buckets[0], 0, "5 ms");
        assert_eq!(h.buckets[2], 1, "25 ms");
        assert_eq!(h.buckets[LATENCY_BUCKETS.len() - 1], 1, "30 s: the 60 s one is only in +Inf");
        assert_eq!(inner.issuer_errors["corp"], 1);
        assert_eq!(esc("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
