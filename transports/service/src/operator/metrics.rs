//! Prometheus metrics (`GET /metrics`, text exposition format 0.0.4).
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `scepd_requests_total` | counter | `profile`, `operation`, `status` (HTTP) |
//! | `scepd_scep_outcomes_total` | counter | `profile`, `action`, `outcome` (audit label) |
//! | `scepd_issuer_errors_total` | counter | `profile` (issuer refused or failed) |
//! | `scepd_challenges_total` | counter | `profile`, `event` (`minted`, `used`, `expired`, `refused`: one-time challenges) |
//! | `scepd_issuance_duration_seconds` | histogram | `profile` (time spent in the issuer) |
//! | `scepd_audit_write_failures_total` | counter | — |
//! | `scepd_audit_tally_write_failures_total` | counter | — (discovery tally writes that failed; retried) |
//! | `scepd_connections_refused_total` | counter | `reason` (`global`, `per_client`, `per_network`: see [`crate::state::connections`]) |
//! | `scepd_connections_closed_total` | counter | `reason` (`tls_handshake_timeout`, `request_timeout`, `write_timeout`, `hyper_timeout`, `malformed_request`) |
//! | `scepd_admin_auth_failures_total` | counter | — (admin API requests with an unknown key) |
//! | `scepd_admin_auth_refused_total` | counter | — (admin API requests answered 429: too many failures from the address) |
//! | `scepd_admin_auth_tracked_clients` | gauge | — (addresses with failures in their window; bounded) |
//! | `scepd_intune_challenges_total` | counter | `profile`, `outcome` (`success`, `signature_invalid`, ...) |
//! | `scepd_intune_api_calls_total` | counter | `profile`, `action` (`validateRequest`, `successNotification`, `failureNotification`), `code` (Intune's code, or the local failure label) |
//! | `scepd_ra_cert_expiry_seconds` | gauge | `profile` (negative once expired) |
//! | `scepd_ca_cert_expiry_seconds` | gauge | `profile` |
//! | `scepd_mtls_bundle_expiry_seconds` | gauge | `profile` (earliest CA of the bundle) |
//! | `scepd_intune_trust_anchor_expiry_seconds` | gauge | `profile`, `subject`, `fingerprint` (SHA-256 of the certificate, first 16 hex digits: two Connectors with one subject are two series) |
//! | `scepd_build_info` | gauge | `version` (always 1) |
//! | `scepd_intune_replay_cache_entries` | gauge | `profile` (live nonces) |
//! | `scepd_intune_replay_cache_capacity` | gauge | `profile` (`intune_replay_capacity`) |
//! | `scepd_intune_rate_limit_devices_tracked` | gauge | `profile` (devices with an enrolment in 24 h) |
//! | `scepd_intune_rate_limit_devices_capacity` | gauge | `profile` (`intune_rate_limit_devices`; 0 when off) |
//! | `scepd_certificates` | gauge | `issuer`, `status` (`valid`, `revoked`, `expired`: issuers that keep an inventory, the local CA) |
//! | `scepd_certificates_expiring` | gauge | `issuer`, `within` (`7d`, `30d`: valid certificates whose notAfter is that close) |
//!
//! The certificate gauges are one indexed aggregate query per local CA on
//! each scrape (a reader connection; the writer is not involved).
//!
//! `profile` is empty for requests naming no existing profile (so a scanner
//! cannot grow the label set). `scepd_issuer_errors_total` and
//! `scepd_issuance_duration_seconds` have a series for every configured
//! profile from the start (zero until something happens), so an alert on
//! them needs no `absent()`.

use std::fmt::Write as _;

use scep_engine::UnixTime;
use scep_engine::x509::CertificateRef;

use crate::intune::ProfileIntuneStats;
use crate::state::ServiceState;
use crate::state::connections::{Closed, Refusal};
use crate::state::metrics::{esc, header};
use crate::store::audit::AuditLog;

/// Reads one per-profile Intune gauge from the profile's stats.
type IntuneGauge = fn(&ProfileIntuneStats) -> usize;

/// The `Content-Type` of [`render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The exposition text: the counters plus gauges read from `state` at `now`.
pub fn render(state: &ServiceState, now: UnixTime) -> String {
    let mut out = String::with_capacity(4096);
    header(&mut out, "scepd_build_info", "gauge", "The running scepd's version (always 1).");
    let _ = writeln!(out, "scepd_build_info{{version=\"{}\"}} 1", esc(env!("CARGO_PKG_VERSION")));
    let profiles = state.profiles();
    state.metrics().render_counters(&mut out, &profiles.names());
    drop(profiles);
    header(
        &mut out,
        "scepd_audit_tally_write_failures_total",
        "counter",
        "Failed attempts to write the discovery tally (kept and retried).",
    );
    let tally_failures = state.audit().map_or(0, AuditLog::tally_write_failures);
    let _ = writeln!(out, "scepd_audit_tally_write_failures_total {tally_failures}");
    header(
        &mut out,
        "scepd_connections_refused_total",
        "counter",
        "Connections closed at accept, before TLS, by the limit they were over.",
    );
    let connections = state.metrics().connections();
    for why in Refusal::ALL {
        let n = connections.refused_total(why);
        let _ = writeln!(out, "scepd_connections_refused_total{{reason=\"{}\"}} {n}", why.label());
    }
    header(
        &mut out,
        "scepd_connections_closed_total",
        "counter",
        "Connections the server closed on its own, by the timeout that fired.",
    );
    for why in Closed::ALL {
        let n = connections.closed_total(why);
        let _ = writeln!(out, "scepd_connections_closed_total{{reason=\"{}\"}} {n}", why.label());
    }

    let limit = state.auth_limit();
    header(&mut out, "scepd_admin_auth_failures_total", "counter", "Admin API requests with an unknown API key.");
    let _ = writeln!(out, "scepd_admin_auth_failures_total {}", limit.failures());
    header(
        &mut out,
        "scepd_admin_auth_refused_total",
        "counter",
        "Admin API requests refused (429) after too many failed authentications from their address.",
    );
    let _ = writeln!(out, "scepd_admin_auth_refused_total {}", limit.refused());
    header(
        &mut out,
        "scepd_admin_auth_tracked_clients",
        "gauge",
        "Client addresses with failed admin authentications in their window.",
    );
    let _ = writeln!(out, "scepd_admin_auth_tracked_clients {}", limit.tracked());

    let stats = state.intune_stats();
    header(&mut out, "scepd_intune_challenges_total", "counter", "Intune challenge decisions, by profile and outcome.");
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
        "scepd_intune_api_calls_total",
        "counter",
        "Intune SCEP API calls, by profile, action and Intune code (or local failure label).",
    );
    for (profile, api) in state.profiles().intune_api_profiles() {
        for (action, codes) in &api.client.stats.snapshot().codes {
            for (code, n) in codes {
                let _ = writeln!(
                    out,
                    "scepd_intune_api_calls_total{{profile=\"{}\",action=\"{}\",code=\"{}\"}} {n}",
                    esc(profile),
                    esc(action),
                    esc(code)
                );
            }
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
                "scepd_intune_trust_anchor_expiry_seconds{{profile=\"{}\",subject=\"{}\",fingerprint=\"{}\"}} {}",
                esc(&s.profile),
                esc(&a.subject),
                a.fingerprint.get(..16).unwrap_or(&a.fingerprint),
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

    render_certificates(&mut out, state, now);

    let profiles = state.profiles();
    let expiry = |der: &[u8]| CertificateRef::parse(der).ok().map(|c| c.not_after.secs() - now.secs());
    header(&mut out, "scepd_ra_cert_expiry_seconds", "gauge", "Seconds until each profile's RA certificate expires.");
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

/// `scepd_certificates` and `scepd_certificates_expiring` for every issuer
/// that keeps an inventory; an issuer whose database cannot be read is
/// left out and logged (the scrape still answers).
fn render_certificates(out: &mut String, state: &ServiceState, now: UnixTime) {
    let mut seen = std::collections::HashSet::new();
    let mut summaries = Vec::new();
    for p in state.profiles().iter() {
        let id = p.issuer.id();
        if !seen.insert(id.to_string()) {
            continue;
        }
        if let Some(ca) = p.issuer.inventory() {
            match ca.inventory_summary(now) {
                Ok(s) => summaries.push((id.to_string(), s)),
                Err(e) => tracing::error!(issuer = id, error = %e, "metrics: cannot count the certificates"),
            }
        }
    }
    header(out, "scepd_certificates", "gauge", "Certificates an issuer recorded, by status (valid, revoked, expired).");
    for (id, s) in &summaries {
        for (status, n) in [("valid", s.valid), ("revoked", s.revoked), ("expired", s.expired)] {
            let _ = writeln!(out, "scepd_certificates{{issuer=\"{}\",status=\"{status}\"}} {n}", esc(id));
        }
    }
    header(
        out,
        "scepd_certificates_expiring",
        "gauge",
        "Valid certificates expiring within 7 or 30 days (the 30-day count includes the 7-day one).",
    );
    for (id, s) in &summaries {
        for (within, n) in [("7d", s.expiring_within_7_days), ("30d", s.expiring_within_30_days)] {
            let _ = writeln!(out, "scepd_certificates_expiring{{issuer=\"{}\",within=\"{within}\"}} {n}", esc(id));
        }
    }
}
