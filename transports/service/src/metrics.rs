//! Prometheus metrics (`GET /metrics`, text exposition format 0.0.4).
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `scepd_requests_total` | counter | `profile`, `operation`, `status` (HTTP) |
//! | `scepd_scep_outcomes_total` | counter | `profile`, `action`, `outcome` (audit label) |
//! | `scepd_issuer_errors_total` | counter | `profile` (issuer refused or failed) |
//! | `scepd_issuance_duration_seconds` | histogram | `profile` (time spent in the issuer) |
//! | `scepd_audit_write_failures_total` | counter | — |
//! | `scepd_audit_tally_write_failures_total` | counter | — (discovery tally writes that failed; retried) |
//! | `scepd_intune_challenges_total` | counter | `profile`, `outcome` (`success`, `signature_invalid`, ...) |
//! | `scepd_ra_cert_expiry_seconds` | gauge | `profile` (negative once expired) |
//! | `scepd_ca_cert_expiry_seconds` | gauge | `profile` |
//! | `scepd_mtls_bundle_expiry_seconds` | gauge | `profile` (earliest CA of the bundle) |
//! | `scepd_intune_trust_anchor_expiry_seconds` | gauge | `profile`, `subject` |
//! | `scepd_intune_replay_cache_entries` | gauge | `profile` (live nonces) |
//! | `scepd_intune_replay_cache_capacity` | gauge | `profile` (`intune_replay_capacity`) |
//! | `scepd_intune_rate_limit_devices_tracked` | gauge | `profile` (devices with an enrolment in 24 h) |
//! | `scepd_intune_rate_limit_devices_capacity` | gauge | `profile` (`intune_rate_limit_devices`; 0 when off) |
//! | `scepd_connections_refused_total` | counter | `reason` (`global`, `per_client`, `per_network`: see [`crate::connections`]) |
//! | `scepd_connections_closed_total` | counter | `reason` (`tls_handshake_timeout`, `request_timeout`, `write_timeout`, `hyper_timeout`) |
//!
//! `profile` is empty for requests naming no existing profile (so a scanner
//! cannot grow the label set).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use scep_engine::UnixTime;
use scep_engine::x509::CertificateRef;

use crate::connections::{Closed, ConnectionCounters, Refusal};
use crate::state::ServiceState;

/// Reads one per-profile Intune gauge from the profile's stats.
type IntuneGauge = fn(&crate::intune::ProfileIntuneStats) -> usize;

/// Upper bounds of the issuance latency buckets, in seconds.
pub const LATENCY_BUCKETS: [f64; 12] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// The `Content-Type` of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

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

    /// The connection counters the transports update (refusals at accept,
    /// connections closed by a timeout); shared, so a connection can hold them.
    pub fn connections(&self) -> &Arc<ConnectionCounters> {
        &self.connections
    }

    /// Counts an audit write that failed (the request was answered 503).
    pub fn audit_failure(&self) {
        self.lock().audit_failures += 1;
    }

    /// The exposition text: the counters plus gauges read from `state` at `now`.
    pub fn render(&self, state: &ServiceState, now: UnixTime) -> String {
        let mut out = String::with_capacity(4096);
        {
            let m = self.lock();
            header(
                &mut out,
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
                &mut out,
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
            header(&mut out, "scepd_issuer_errors_total", "counter", "Issuance requests the issuer refused or failed.");
            for (p, n) in &m.issuer_errors {
                let _ = writeln!(out, "scepd_issuer_errors_total{{profile=\"{}\"}} {n}", esc(p));
            }
            header(&mut out, "scepd_issuance_duration_seconds", "histogram", "Time spent in the issuer per request.");
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
                &mut out,
                "scepd_audit_write_failures_total",
                "counter",
                "Audit events that could not be committed.",
            );
            let _ = writeln!(out, "scepd_audit_write_failures_total {}", m.audit_failures);
        }
        header(
            &mut out,
            "scepd_audit_tally_write_failures_total",
            "counter",
            "Failed attempts to write the discovery tally (kept and retried).",
        );
        let tally_failures = state.audit().map_or(0, crate::audit::AuditLog::tally_write_failures);
        let _ = writeln!(out, "scepd_audit_tally_write_failures_total {tally_failures}");
        header(
            &mut out,
            "scepd_connections_refused_total",
            "counter",
            "Connections closed at accept, before TLS, by the limit they were over.",
        );
        for why in Refusal::ALL {
            let n = self.connections.refused_total(why);
            let _ = writeln!(out, "scepd_connections_refused_total{{reason=\"{}\"}} {n}", why.label());
        }
        header(
            &mut out,
            "scepd_connections_closed_total",
            "counter",
            "Connections the server closed on its own, by the timeout that fired.",
        );
        for why in Closed::ALL {
            let n = self.connections.closed_total(why);
            let _ = writeln!(out, "scepd_connections_closed_total{{reason=\"{}\"}} {n}", why.label());
        }

        let stats = state.intune_stats();
        header(
            &mut out,
            "scepd_intune_challenges_total",
            "counter",
            "Intune challenge decisions, by profile and outcome.",
        );
        for s in &stats {
            for (label, n) in &s.counters {
                let _ = writeln!(
                    out,
                    "scepd_intune_challenges_total{{profile=\"{}\",outcome=\"{}\"}} {n}",
                    esc(&s.profile),
                    esc(label)
                );
            }
        }
        header(
            &mut out,
            "scepd_intune_trust_anchor_expiry_seconds",
            "gauge",
            "Seconds until each Intune Connector trust anchor expires.",
        );
        for s in &stats {
            for a in &s.anchors {
                let _ = writeln!(
                    out,
                    "scepd_intune_trust_anchor_expiry_seconds{{profile=\"{}\",subject=\"{}\"}} {}",
                    esc(&s.profile),
                    esc(&a.subject),
                    a.not_after.secs() - now.secs()
                );
            }
        }

        // Both tables fail closed when full: alert on these before they are.
        let per_profile: [(&str, &str, IntuneGauge); 4] = [
            ("scepd_intune_replay_cache_entries", "Live nonces in each Intune replay cache.", |s| s.replay_entries),
            (
                "scepd_intune_replay_cache_capacity",
                "Live nonces each Intune replay cache is sized for (intune_replay_capacity).",
                |s| s.replay_capacity,
            ),
            (
                "scepd_intune_rate_limit_devices_tracked",
                "Devices with an Intune enrolment inside the rate limit window.",
                |s| s.rate_limit_devices_tracked,
            ),
            (
                "scepd_intune_rate_limit_devices_capacity",
                "Devices each Intune rate limiter is sized for (intune_rate_limit_devices; 0 when off).",
                |s| if s.per_device_rate_limit_24h == 0 { 0 } else { s.rate_limit_devices },
            ),
        ];
        for (name, help, value) in per_profile {
            header(&mut out, name, "gauge", help);
            for s in &stats {
                let _ = writeln!(out, "{name}{{profile=\"{}\"}} {}", esc(&s.profile), value(s));
            }
        }

        let profiles = state.profiles();
        let expiry = |der: &[u8]| CertificateRef::parse(der).ok().map(|c| c.not_after.secs() - now.secs());
        header(
            &mut out,
            "scepd_ra_cert_expiry_seconds",
            "gauge",
            "Seconds until each profile's RA certificate expires.",
        );
        for p in profiles.iter() {
            let c = p.engine.config();
            if let Some(s) = expiry(&c.ra.certificate) {
                let _ = writeln!(out, "scepd_ra_cert_expiry_seconds{{profile=\"{}\"}} {s}", esc(&c.name));
            }
        }
        header(
            &mut out,
            "scepd_ca_cert_expiry_seconds",
            "gauge",
            "Seconds until each profile's issuing CA certificate expires.",
        );
        for p in profiles.iter() {
            let c = p.engine.config();
            if let Some(s) = c.ca_chain.first().and_then(|d| expiry(d)) {
                let _ = writeln!(out, "scepd_ca_cert_expiry_seconds{{profile=\"{}\"}} {s}", esc(&c.name));
            }
        }
        header(
            &mut out,
            "scepd_mtls_bundle_expiry_seconds",
            "gauge",
            "Seconds until the earliest CA of each mTLS client bundle expires.",
        );
        for p in profiles.iter() {
            if let Some(m) = &p.mtls {
                let _ = writeln!(
                    out,
                    "scepd_mtls_bundle_expiry_seconds{{profile=\"{}\"}} {}",
                    esc(&p.engine.config().name),
                    m.earliest_expiry.secs() - now.secs()
                );
            }
        }
        out
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Escapes a label value (backslash, double quote, newline).
fn esc(s: &str) -> String {
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
