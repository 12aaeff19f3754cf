//! Intune per profile: Connector challenges (the trust anchors), and
//! Microsoft's SCEP validation API in [`api`] (`intune_mode = "api"`). What lives here: the start-up preflight, trust anchor reload (SIGHUP and admin), the counters
//! the admin plane reads, and the structured log of every Intune decision.
//!
//! ```toml
//! [[profile]]
//! name = "corp"
//! challenge_password = "..."                 # still required: non-JWS challenges use it
//! intune_enabled = true                      # INTUNE_ENABLED; default false
//! intune_connector_cert_path = "intune.pem"  # INTUNE_CONNECTOR_CERT_PATH: PEM bundle, one
//!                                            #   certificate per Connector (HA); required when enabled
//! intune_audience = "https://scep.example.com/scep/corp"  # INTUNE_AUDIENCE; unset skips gate 5
//! intune_challenge_validity = "60m"          # INTUNE_CHALLENGE_VALIDITY (also the replay TTL); default 60m
//! intune_clock_skew_tolerance = "60s"        # INTUNE_CLOCK_SKEW_TOLERANCE; < validity; default 60s
//! intune_per_device_rate_limit_24h = 3       # INTUNE_PER_DEVICE_RATE_LIMIT_24H; 0 disables; 0..=1000; default 3
//! intune_replay_capacity = 100000            # INTUNE_REPLAY_CAPACITY: live nonces held (challenges
//!                                            #   issued within one validity); default 100,000
//! intune_rate_limit_devices = 100000         # INTUNE_RATE_LIMIT_DEVICES: devices tracked within
//!                                            #   24 h; default 100,000
//! intune_renewal_by_certificate = false      # INTUNE_RENEWAL_BY_CERTIFICATE: renewal signed by a
//!                                            #   certificate of this profile, no challenge (counted
//!                                            #   against the rate limit, audited `*_intune`); default false
//! ```
//!
//! Both caches are fixed tables sized at start (32-64 bytes per replay
//! entry, `16 + 16 × limit` to twice that per device) that never evict a live
//! entry: when full they refuse (`replay_cache_full`, `rate_limited`), so size
//! them for the fleet (a rate limiter table over 2 GiB is refused). A
//! reload decides what it carries over before allocating anything, so it
//! never holds two copies of a table. A running replay cache cannot be resized without
//! forgetting nonces, so a changed `intune_replay_capacity` is refused on
//! reload and takes a restart.
//!
//! The `intune_*` keys are read by `crate::settings::profile`
//! ([`IntuneProfileSettings`]); this folder imports only `crate::settings`.
//!
//! Durations are Go-style: one or more `<integer><unit>` with unit `h`, `m`
//! or `s` (`"60m"`, `"3600s"`, `"1h30m"`). Every invalid value stops the
//! start with an error naming `profile[<name>].<key>`; the preflight also
//! refuses a bundle that is missing, unreadable, holds no certificate, holds an
//! unparsable or expired certificate, or a key that cannot verify RS256/ES256.
//!
//! One replay cache serves every Intune profile of the process, keyed by the
//! Connector key that signed each challenge (so a challenge is single-use
//! across all profiles trusting that Connector, issue 13), sized for the sum
//! of the profiles' `intune_replay_capacity` ([`shared_replay_cache`]).
//!
//! State that must survive a reload (SIGHUP re-reads the whole configuration):
//! the replay cache (always: a reload must never reopen a replay window), the
//! rate limiter (when the limit is unchanged) and the counters are carried from
//! the previous profile of the same name into the new validator.

pub mod api;
pub mod compliance;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use scep_engine::config::ConfigError;
use scep_engine::crypto::SystemRandom;
use scep_engine::intune::{AnchorKeyKind, IntuneValidator, Label, ReplayCache, SharedPool, TrustAnchorPool, load_pool};
use scep_engine::time::UnixTime;
use scep_engine::{IntuneIdentity, Outcome};

use crate::settings::profile::IntuneProfileSettings;

/// Trust anchors expiring within this many seconds are warned about at load.
const EXPIRY_WARNING_SECS: i64 = 30 * 86_400;

/// One profile's Intune setup: where its anchors come from and its validator
/// (the same validator the engine's `ProfileConfig::intune` holds).
#[derive(Clone, Debug)]
pub struct IntuneProfile {
    /// The Connector certificate bundle, resolved (re-read on reload).
    pub bundle: PathBuf,
    /// The validator: anchors, settings, replay cache, rate limiter, counters.
    pub validator: IntuneValidator,
}

/// Reads and checks one profile's Connector bundle (the preflight, also run
/// by every reload).
///
/// # Errors
/// `profile[<name>].intune_connector_cert_path: <file>: <why>` when the file
/// is missing or unreadable, holds no certificate, or a certificate is
/// unparsable, expired at `now`, or has an unusable key.
pub fn load_bundle(profile: &str, path: &Path, now: UnixTime) -> Result<TrustAnchorPool, ConfigError> {
    let key = format!("profile[{profile}].intune_connector_cert_path");
    let text = scep_issuers::config_file::read_to_string(path)
        .map_err(|e| ConfigError(format!("{key}: cannot read {}: {e}", path.display())))?;
    let pool = load_pool(&text, now).map_err(|e| ConfigError(format!("{key}: {}: {e}", path.display())))?;
    for a in pool.anchors() {
        if a.not_after().secs() - now.secs() < EXPIRY_WARNING_SECS {
            tracing::warn!(
                profile,
                file = %path.display(),
                subject = a.subject(),
                not_after = %a.not_after().to_rfc3339(),
                "Intune trust anchor expires within 30 days: rotate the Connector certificate"
            );
        }
    }
    Ok(pool)
}

/// The one replay cache every Intune profile of the process shares (issue
/// 13): challenges are keyed by the anchor that signed them, so a nonce is
/// single-use across every profile that trusts that anchor, whatever the
/// audience setting. It is sized for the sum of the profiles'
/// `intune_replay_capacity` (the same memory as one cache per profile).
/// `profiles` are (name, settings) of the Intune profiles being built;
/// `previous` the validators of the configuration being replaced, by name:
/// their cache (the running shared one) is carried over, never forgotten. A
/// running cache cannot be resized without forgetting nonces, so a changed
/// `intune_replay_capacity`, or new profiles that together ask for more than
/// it holds, are refused (restart to apply them); asking for less keeps the
/// running cache.
///
/// # Errors
/// `profile[<name>].intune_replay_capacity: ...` naming the profile(s).
pub fn shared_replay_cache<'a>(
    profiles: impl IntoIterator<Item = (&'a str, &'a IntuneProfileSettings)>,
    previous: &HashMap<String, IntuneValidator>,
) -> Result<Option<Arc<ReplayCache>>, ConfigError> {
    let mut names = Vec::new();
    let mut total: usize = 0;
    for (name, settings) in profiles {
        let asked = settings.validator.replay_capacity;
        if let Some(old) = previous.get(name)
            && old.settings().replay_capacity != asked
        {
            return Err(ConfigError(format!(
                "profile[{name}].intune_replay_capacity: changed from {} to {asked}; the running replay cache \
                 cannot be resized without forgetting the nonces it holds: restart scepd to apply it",
                old.settings().replay_capacity
            )));
        }
        names.push(name);
        total = total.saturating_add(asked);
    }
    let previous = previous.values().next();
    if names.is_empty() {
        return Ok(previous.map(|v| Arc::clone(v.replay_cache())));
    }
    match previous {
        Some(old) if total > old.replay_cache().capacity() => Err(ConfigError(format!(
            "profile[{}].intune_replay_capacity: the Intune profiles together need a replay cache of {total} \
             live nonces, the running one (shared by every Intune profile) holds {}; it cannot grow without \
             forgetting the nonces it holds: restart scepd to apply it",
            names.join(","),
            old.replay_cache().capacity()
        ))),
        Some(old) => Ok(Some(Arc::clone(old.replay_cache()))),
        None => Ok(Some(Arc::new(ReplayCache::new(total, &SystemRandom)))),
    }
}

/// Builds the Intune setup of the profile `name` from its validated
/// settings (reading the Connector bundle: the preflight). `previous` is the
/// same-named profile's validator from the configuration being replaced (its
/// counters and, when the limit is unchanged, rate limiter are carried
/// over). `replay` is the process-wide replay cache
/// ([`shared_replay_cache`]); `None` gives the profile a cache of its own
/// (builds of a single profile).
///
/// # Errors
/// A [`ConfigError`] naming `profile[<name>].intune_*` and the reason.
pub fn build(
    name: &str,
    intune: &IntuneProfileSettings,
    now: UnixTime,
    previous: Option<&IntuneValidator>,
    replay: Option<&Arc<ReplayCache>>,
) -> Result<IntuneProfile, ConfigError> {
    let k = |key: &str| format!("profile[{name}].{key}");
    let bundle = intune.connector_cert_path.clone();
    let pool = load_bundle(name, &bundle, now)?;
    let settings = intune.validator.clone();
    let limit = settings.per_device_rate_limit_24h;
    let anchors = SharedPool::new(pool);
    let validator = match (previous, replay) {
        (None, None) => IntuneValidator::new(name, anchors, settings, &SystemRandom),
        (None, Some(shared)) => {
            IntuneValidator::with_shared_replay(name, anchors, settings, Arc::clone(shared), &SystemRandom)
        }
        (Some(old), _) => {
            // Decided before anything is allocated: a reload must not hold two copies of the tables.
            let (was, asked) = (old.settings().replay_capacity, settings.replay_capacity);
            if was != asked {
                return Err(ConfigError(format!(
                    "{}: changed from {was} to {asked}; the running replay cache cannot be resized without \
                     forgetting the nonces it holds: restart scepd to apply it",
                    k("intune_replay_capacity")
                )));
            }
            let keep_limiter = old.settings().per_device_rate_limit_24h == limit
                && old.settings().rate_limit_devices == settings.rate_limit_devices;
            if !keep_limiter {
                tracing::warn!(
                    profile = name,
                    old_limit = old.settings().per_device_rate_limit_24h,
                    new_limit = limit,
                    old_devices = old.settings().rate_limit_devices,
                    new_devices = settings.rate_limit_devices,
                    "intune_per_device_rate_limit_24h or intune_rate_limit_devices changed: \
                     the per-device enrolment log starts afresh"
                );
            }
            IntuneValidator::succeeding(old, anchors, settings, keep_limiter, &SystemRandom).map(|v| match replay {
                Some(shared) => v.with_replay_cache(Arc::clone(shared)),
                None => v,
            })
        }
    }
    .map_err(|e| ConfigError(format!("profile[{name}]: {e}")))?;
    Ok(IntuneProfile { bundle, validator })
}

/// The validators of `profiles` (each Intune profile by name), by name (the
/// `previous` argument of [`build`] during a reload).
pub fn validators<'a>(
    profiles: impl IntoIterator<Item = (&'a str, &'a IntuneProfile)>,
) -> HashMap<String, IntuneValidator> {
    profiles.into_iter().map(|(n, p)| (n.to_string(), p.validator.clone())).collect()
}

/// One trust anchor, as the admin plane lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnchorInfo {
    /// Certificate subject (`CN=Microsoft Intune Certificate Connector`).
    pub subject: String,
    /// SHA-256 of the certificate (DER), lowercase hex: tells apart Connectors
    /// that share a subject (every Connector of an HA pair does).
    pub fingerprint: String,
    /// notBefore.
    pub not_before: UnixTime,
    /// notAfter (the expiry countdown).
    pub not_after: UnixTime,
    /// `"rsa"` (RS256) or `"ec-p256"` (ES256).
    pub key: &'static str,
}

/// One Intune profile's live state for the admin plane.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProfileIntuneStats {
    /// The profile name.
    pub profile: String,
    /// The Connector bundle file.
    pub bundle: PathBuf,
    /// The configured audience (`None`: gate 5 skipped).
    pub audience: Option<String>,
    /// Challenge validity (and replay TTL), seconds.
    pub challenge_validity_secs: i64,
    /// Clock skew tolerance, seconds.
    pub clock_skew_tolerance_secs: i64,
    /// Per-device limit per 24 h (0: disabled).
    pub per_device_rate_limit_24h: u32,
    /// The rate limiter's sliding window, seconds.
    pub rate_limit_window_secs: i64,
    /// Devices with an enrolment inside the current window.
    pub rate_limit_devices_tracked: usize,
    /// Buckets of the rate limiter (0 when disabled): twice the configured devices, to a power of two.
    pub rate_limit_capacity: usize,
    /// Devices the rate limiter is sized for (`intune_rate_limit_devices`).
    pub rate_limit_devices: usize,
    /// `("success", n)` then every failure label in gate order with its count.
    pub counters: Vec<(&'static str, u64)>,
    /// The trust anchors currently in force, in bundle order.
    pub anchors: Vec<AnchorInfo>,
    /// Nonces currently held by the replay cache.
    pub replay_entries: usize,
    /// Live nonces the replay cache is sized for (`intune_replay_capacity`).
    pub replay_capacity: usize,
}

fn stats_of(name: &str, p: &IntuneProfile, now: UnixTime) -> ProfileIntuneStats {
    let v = &p.validator;
    let s = v.settings();
    ProfileIntuneStats {
        profile: name.to_string(),
        bundle: p.bundle.clone(),
        audience: s.audience.clone(),
        challenge_validity_secs: s.challenge_validity_secs,
        clock_skew_tolerance_secs: s.clock_skew_tolerance_secs,
        per_device_rate_limit_24h: s.per_device_rate_limit_24h,
        rate_limit_window_secs: v.rate_limiter().window_secs(),
        rate_limit_devices_tracked: v.rate_limiter().tracked_devices(now),
        rate_limit_capacity: v.rate_limiter().capacity(),
        rate_limit_devices: s.rate_limit_devices,
        counters: v.counters().snapshot(),
        anchors: v
            .anchors()
            .load()
            .anchors()
            .iter()
            .map(|a| AnchorInfo {
                subject: a.subject().to_string(),
                fingerprint: scep_engine::crypto::DigestAlg::Sha256
                    .digest(a.der())
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect(),
                not_before: a.not_before(),
                not_after: a.not_after(),
                key: match a.key_kind() {
                    AnchorKeyKind::Rsa => "rsa",
                    AnchorKeyKind::EcP256 => "ec-p256",
                },
            })
            .collect(),
        replay_entries: v.replay_cache().live_entries(now),
        replay_capacity: v.replay_cache().capacity(),
    }
}

/// Stats of `profiles` (each Intune profile by name), in the order given.
pub fn stats<'a>(
    profiles: impl IntoIterator<Item = (&'a str, &'a IntuneProfile)>,
    now: UnixTime,
) -> Vec<ProfileIntuneStats> {
    profiles.into_iter().map(|(n, p)| stats_of(n, p, now)).collect()
}

/// Re-reads the Connector bundles of the `selected` profiles and swaps the
/// new anchors in. All selected bundles are loaded first; only when every one
/// is valid are they all swapped (atomically per profile); otherwise nothing
/// changes. Replay caches, rate limiters and counters are untouched.
///
/// # Errors
/// The first bundle that fails the preflight (naming profile and file); the
/// old anchors stay.
pub fn reload_trust<'a>(
    selected: Vec<(&'a str, &'a IntuneProfile)>,
    now: UnixTime,
) -> Result<Vec<ProfileIntuneStats>, ConfigError> {
    let mut loaded = Vec::with_capacity(selected.len());
    for (name, ip) in selected {
        match load_bundle(name, &ip.bundle, now) {
            Ok(pool) => loaded.push((name, ip, pool)),
            Err(e) => {
                tracing::error!(profile = name, file = %ip.bundle.display(), error = %e,
                    "Intune trust anchor reload refused; the previous anchors stay in force");
                return Err(e);
            }
        }
    }
    let mut out = Vec::with_capacity(loaded.len());
    for (name, ip, pool) in loaded {
        let subjects: Vec<String> = pool.anchors().iter().map(|a| a.subject().to_string()).collect();
        ip.validator.anchors().store(pool);
        tracing::info!(profile = name, file = %ip.bundle.display(), anchors = ?subjects, "Intune trust anchors reloaded");
        out.push(stats_of(name, ip, now));
    }
    Ok(out)
}

/// One Intune decision, as the audit trail records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IntuneDecision<'a> {
    /// `scep_pkcsreq_intune` / `scep_renewalreq_intune`.
    pub action: &'static str,
    /// `success` or the failing gate's label (`replay`, `rate_limited`, ...).
    pub label: &'static str,
    /// The request's final outcome label (differs from `label` when the
    /// challenge passed but issuance then failed).
    pub outcome: &'static str,
    /// Device `sub`, claim `iss`, `nonce`; `None` when the challenge was
    /// refused before its signature was verified (unverified claims are not
    /// identity).
    pub identity: Option<&'a IntuneIdentity>,
    /// The SCEP transactionID.
    pub transaction_id: Option<&'a str>,
    /// CSR-binding detail: on failure the gate's detail (for `claim_mismatch`
    /// the dimension with expected and actual values); on success the bound
    /// subject and SANs.
    pub detail: String,
}

/// The Intune decision in `outcome`, if the request carried an Intune
/// challenge: a gate label, or an identity set by a passed challenge.
pub fn decision(outcome: &Outcome) -> Option<IntuneDecision<'_>> {
    let rejected = Label::ALL.iter().find(|l| l.as_str() == outcome.label).map(|l| l.as_str());
    if rejected.is_none() && outcome.intune.is_none() && !outcome.intune_renewal {
        return None;
    }
    // `Outcome::action` appends `_intune` on exactly this condition.
    let action = outcome.action();
    let detail = match rejected {
        Some(_) => outcome.detail.clone().unwrap_or_default(),
        None if outcome.intune.is_none() => match &outcome.detail {
            // Refused by the issuer (e.g. `renewal_superseded`): its reason.
            Some(d) => d.clone(),
            None => format!(
                "renewal by certificate {} (intune_renewal_by_certificate = true), subject {:?}",
                outcome.renewal_of.as_deref().unwrap_or(""),
                outcome.subject.as_deref().unwrap_or("")
            ),
        },
        None => format!(
            "bound subject {:?} SANs [{}]",
            outcome.subject.as_deref().unwrap_or(""),
            outcome.subject_alt_names.join(", ")
        ),
    };
    Some(IntuneDecision {
        action,
        label: rejected.unwrap_or("success"),
        outcome: outcome.label,
        identity: outcome.intune.as_ref(),
        transaction_id: outcome.transaction_id.as_deref(),
        detail,
    })
}

/// Logs the Intune decision in `outcome` (if any) on target `scepd::intune`
/// with fields profile, action, sub, iss, nonce, txid, label, outcome, detail.
/// Only profiles with Intune enabled (`intune_enabled`) produce decisions.
pub fn log_decision(outcome: &Outcome, intune_enabled: bool) {
    if !intune_enabled {
        return;
    }
    let Some(d) = decision(outcome) else { return };
    let (sub, iss, nonce) = d.identity.map_or(("", "", ""), |i| (&*i.subject, &*i.issuer, &*i.nonce));
    if d.label == "success" {
        tracing::info!(target: "scepd::intune", profile = %outcome.profile, action = %d.action, sub, iss, nonce,
            txid = d.transaction_id.unwrap_or(""), label = d.label, outcome = d.outcome, detail = %d.detail,
            "intune decision");
    } else {
        tracing::warn!(target: "scepd::intune", profile = %outcome.profile, action = %d.action, sub, iss, nonce,
            txid = d.transaction_id.unwrap_or(""), label = d.label, outcome = d.outcome, detail = %d.detail,
            "intune decision");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use scep_engine::crypto::{EcPrivateKey, SigningKey};
    use scep_issuers::x509_build::{Validity, common_name, self_signed_ca};

    use super::*;
    use crate::settings::start::StartOptions;
    use crate::state::ServiceState;
    use crate::testutil::TestDir;

    /// A self-signed P-256 Connector certificate PEM valid over [nb, na].
    fn anchor_pem(cn: &str, nb: i64, na: i64) -> String {
        let (_, der) = EcPrivateKey::generate().unwrap();
        let key = SigningKey::from_der(&der).unwrap();
        let validity = Validity { not_before: UnixTime::from_secs(nb), not_after: UnixTime::from_secs(na) };
        let cert = self_signed_ca(&key, &common_name(cn), &[1], validity).unwrap();
        scep_engine::pem::encode("CERTIFICATE", &cert)
    }

    fn now() -> UnixTime {
        UnixTime::now()
    }

    fn valid_pem(cn: &str) -> String {
        anchor_pem(cn, now().secs() - 86_400, now().secs() + 365 * 86_400)
    }

    /// A config with profile `corp` (Intune on, extra keys appended) and `plain`.
    fn config(dir: &TestDir, intune: &str) -> StartOptions {
        let cfg = format!(
            "[server]\ndata_dir = \"data\"\n{}intune_enabled = true\nintune_connector_cert_path = \"intune.pem\"\n{intune}\n{}",
            dir.profile_toml("corp"),
            dir.profile_toml("plain")
        );
        let path = dir.path().join("scepd.toml");
        std::fs::write(&path, cfg).unwrap();
        StartOptions { config: Some(path), ..StartOptions::default() }
    }

    #[test]
    fn loads_settings_and_anchors_and_reports_stats() {
        let dir = TestDir::new();
        std::fs::write(dir.path().join("intune.pem"), valid_pem("connector-a") + &valid_pem("connector-b")).unwrap();
        let opts = config(
            &dir,
            "intune_audience = \"https://scep.example/scep/corp\"\nintune_challenge_validity = \"30m\"\n\
             intune_clock_skew_tolerance = \"2m\"\nintune_per_device_rate_limit_24h = 5\n",
        );
        let state = ServiceState::load(opts).unwrap().state;
        let stats = state.intune_stats();
        assert_eq!(stats.len(), 1, "only corp has Intune");
        let s = &stats[0];
        assert_eq!(s.profile, "corp");
        assert_eq!(s.bundle, dir.path().join("intune.pem"));
        assert_eq!(s.audience.as_deref(), Some("https://scep.example/scep/corp"));
        assert_eq!((s.challenge_validity_secs, s.clock_skew_tolerance_secs), (1800, 120));
        assert_eq!(s.per_device_rate_limit_24h, 5);
        assert_eq!((s.rate_limit_window_secs, s.rate_limit_devices_tracked), (86_400, 0));
        assert!(s.rate_limit_capacity > 0);
        assert_eq!(s.replay_entries, 0);
        let subjects: Vec<&str> = s.anchors.iter().map(|a| a.subject.as_str()).collect();
        assert_eq!(subjects, ["CN=connector-a", "CN=connector-b"]);
        assert!(s.anchors.iter().all(|a| a.key == "ec-p256"));
        assert_eq!(s.counters.len(), 12);
        assert_eq!(s.counters[0], ("success", 0));
        assert!(s.counters.iter().any(|&(l, _)| l == "rate_limited"));
        let p = state.profiles();
        assert!(p.get(Some("corp")).unwrap().engine.config().intune.is_some());
        assert!(p.get(Some("plain")).unwrap().intune.is_none());
    }

    #[test]
    fn preflight_refuses_to_start_naming_profile_and_file_or_key() {
        let dir = TestDir::new();
        let file = dir.path().join("intune.pem");
        let expired = anchor_pem("old-connector", now().secs() - 10 * 86_400, now().secs() - 86_400);
        let cases: Vec<(Option<String>, &str, &str)> = vec![
            (None, "", "cannot read"),
            (Some("not a pem\n".into()), "", "no CERTIFICATE"),
            (
                Some("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".into()),
                "",
                "not a valid certificate",
            ),
            (Some(valid_pem("ok") + &expired), "", "expired"),
        ];
        for (content, extra, why) in cases {
            match &content {
                Some(c) => std::fs::write(&file, c).unwrap(),
                None => {
                    let _ = std::fs::remove_file(&file);
                }
            }
            let e = ServiceState::load(config(&dir, extra)).unwrap_err();
            assert!(e.0.starts_with("profile[corp].intune_connector_cert_path: "), "{e}");
            assert!(e.0.contains(&file.display().to_string()) && e.0.contains(why), "{why}: {e}");
        }

        std::fs::write(&file, valid_pem("ok")).unwrap();
        let key_cases = [
            ("intune_clock_skew_tolerance = \"60m\"\n", "profile[corp].intune_clock_skew_tolerance"),
            ("intune_clock_skew_tolerance = \"2h\"\n", "profile[corp].intune_clock_skew_tolerance"),
            ("intune_challenge_validity = \"0s\"\n", "profile[corp].intune_challenge_validity"),
            ("intune_challenge_validity = \"60\"\n", "profile[corp].intune_challenge_validity"),
            ("intune_clock_skew_tolerance = \"1 minute\"\n", "profile[corp].intune_clock_skew_tolerance"),
            ("intune_audience = \"\"\n", "profile[corp].intune_audience"),
            ("intune_per_device_rate_limit_24h = -1\n", "intune_per_device_rate_limit_24h"),
            ("intune_per_device_rate_limit_24h = \"3\"\n", "intune_per_device_rate_limit_24h"),
            ("intune_replay_capacity = 0\n", "profile[corp].intune_replay_capacity: 0 is out of range"),
            ("intune_replay_capacity = 10000001\n", "profile[corp].intune_replay_capacity"),
            ("intune_rate_limit_devices = -5\n", "profile[corp].intune_rate_limit_devices: -5 is out of range"),
            ("intune_rate_limit_devices = \"many\"\n", "intune_rate_limit_devices"),
            (
                "intune_per_device_rate_limit_24h = 1001\n",
                "profile[corp].intune_per_device_rate_limit_24h: 1001 is out of range",
            ),
            (
                "intune_per_device_rate_limit_24h = 100\nintune_rate_limit_devices = 10000000\n",
                "profile[corp].intune_rate_limit_devices: 10000000 devices at 100 enrolments per 24 h would need",
            ),
        ];
        for (extra, key) in key_cases {
            let e = ServiceState::load(config(&dir, extra)).unwrap_err();
            assert!(e.0.contains(key), "{extra}: {e}");
        }
    }

    #[test]
    fn config_reload_keeps_replay_cache_and_counters_and_refuses_a_bad_bundle() {
        let dir = TestDir::new();
        let file = dir.path().join("intune.pem");
        std::fs::write(&file, valid_pem("connector-a")).unwrap();
        let opts = config(&dir, "intune_per_device_rate_limit_24h = 2\n");
        let cfg_path = opts.config.clone().unwrap();
        let state = ServiceState::load(opts).unwrap().state;
        let before = state.profiles().get(Some("corp")).unwrap().intune.clone().unwrap().validator;

        std::fs::write(&file, valid_pem("connector-b")).unwrap();
        state.reload().unwrap();
        let after = state.profiles().get(Some("corp")).unwrap().intune.clone().unwrap().validator;
        assert!(Arc::ptr_eq(before.replay_cache(), after.replay_cache()), "a reload must keep the replay cache");
        assert!(Arc::ptr_eq(before.counters(), after.counters()));
        assert!(Arc::ptr_eq(before.rate_limiter(), after.rate_limiter()));
        assert_eq!(state.intune_stats()[0].anchors[0].subject, "CN=connector-b");
        // The engine's validator is the same one the stats read.
        let engine_v = state.profiles().get(Some("corp")).unwrap().engine.config().intune.clone().unwrap();
        assert!(Arc::ptr_eq(engine_v.replay_cache(), after.replay_cache()));

        // A changed limit gets a new limiter; the replay cache still carries over.
        let text = std::fs::read_to_string(&cfg_path).unwrap().replace("= 2\n", "= 4\n");
        std::fs::write(&cfg_path, text).unwrap();
        state.reload().unwrap();
        let changed = state.profiles().get(Some("corp")).unwrap().intune.clone().unwrap().validator;
        assert!(Arc::ptr_eq(before.replay_cache(), changed.replay_cache()));
        assert!(!Arc::ptr_eq(before.rate_limiter(), changed.rate_limiter()));
        assert_eq!(changed.rate_limiter().limit(), 4);

        // A bad bundle: reload refused, the old anchors serve on.
        std::fs::write(&file, "garbage").unwrap();
        let e = state.reload().unwrap_err();
        assert!(e.0.starts_with("profile[corp].intune_connector_cert_path"), "{e}");
        assert_eq!(state.intune_stats()[0].anchors[0].subject, "CN=connector-b");
    }

    /// The replay cache and rate limiter are sized by their keys; a running
    /// replay cache is never resized (that would forget nonces), so a reload
    /// that changes its size is refused, while a new limiter size starts a
    /// new log.
    /// Issue 13 item 5: every Intune profile shares one replay cache sized
    /// for all of them; a reload carries it, and refuses to grow it.
    #[test]
    fn intune_profiles_share_one_replay_cache_across_reloads() {
        let dir = TestDir::new();
        std::fs::write(dir.path().join("intune.pem"), valid_pem("connector-a")).unwrap();
        let intune =
            "intune_enabled = true\nintune_connector_cert_path = \"intune.pem\"\nintune_replay_capacity = 300\n";
        let write = |profiles: &[&str]| {
            let mut cfg = String::from("[server]\ndata_dir = \"data\"\n");
            for p in profiles {
                cfg.push_str(&dir.profile_toml(p));
                cfg.push_str(intune);
            }
            let path = dir.path().join("scepd.toml");
            std::fs::write(&path, cfg).unwrap();
            StartOptions { config: Some(path), ..StartOptions::default() }
        };
        let state = ServiceState::load(write(&["corp", "lab"])).unwrap().state;
        let validator = |name: &str| state.profiles().get(Some(name)).unwrap().intune.clone().unwrap().validator;
        let (corp, lab) = (validator("corp"), validator("lab"));
        assert!(Arc::ptr_eq(corp.replay_cache(), lab.replay_cache()), "one cache for both profiles");
        assert_eq!(corp.replay_cache().capacity(), 600, "sized for the sum");
        // A nonce spent through one profile's cache is spent for the other.
        let now = UnixTime::now();
        corp.replay_cache().check_and_insert("anchor:x", "n-1", now, now.plus(600)).unwrap();
        assert!(lab.replay_cache().check_and_insert("anchor:x", "n-1", now, now.plus(600)).is_err());

        // Dropping a profile keeps the running cache (and its nonces).
        state.reload().unwrap();
        write(&["corp"]);
        state.reload().unwrap();
        assert!(Arc::ptr_eq(corp.replay_cache(), validator("corp").replay_cache()));
        // Growing past the running cache needs a restart: refused, nothing changes.
        write(&["corp", "lab", "lab2"]);
        let e = state.reload().unwrap_err();
        assert!(e.0.starts_with("profile[corp,lab,lab2].intune_replay_capacity") && e.0.contains("restart"), "{e}");
        assert!(state.profiles().get(Some("lab2")).is_none());
        assert!(Arc::ptr_eq(corp.replay_cache(), validator("corp").replay_cache()));
    }

    #[test]
    fn cache_sizes_come_from_their_keys_and_a_replay_resize_needs_a_restart() {
        let dir = TestDir::new();
        std::fs::write(dir.path().join("intune.pem"), valid_pem("connector-a")).unwrap();
        let opts = config(&dir, "intune_replay_capacity = 500\nintune_rate_limit_devices = 300\n");
        let cfg_path = opts.config.clone().unwrap();
        let state = ServiceState::load(opts).unwrap().state;
        let s = &state.intune_stats()[0];
        assert_eq!(s.replay_capacity, 500);
        assert_eq!(s.rate_limit_capacity, 1024, "buckets: twice the devices, to a power of two");
        let before = state.profiles().get(Some("corp")).unwrap().intune.clone().unwrap().validator;

        let text = std::fs::read_to_string(&cfg_path).unwrap();
        std::fs::write(&cfg_path, text.replace("intune_rate_limit_devices = 300", "intune_rate_limit_devices = 5000"))
            .unwrap();
        state.reload().unwrap();
        let after = state.profiles().get(Some("corp")).unwrap().intune.clone().unwrap().validator;
        assert!(Arc::ptr_eq(before.replay_cache(), after.replay_cache()));
        assert!(!Arc::ptr_eq(before.rate_limiter(), after.rate_limiter()));
        assert_eq!(state.intune_stats()[0].rate_limit_capacity, 16_384);
        // A size that rounds to the same table is still a new setting, so a new log.
        let text = std::fs::read_to_string(&cfg_path).unwrap();
        std::fs::write(&cfg_path, text.replace("intune_rate_limit_devices = 5000", "intune_rate_limit_devices = 6000"))
            .unwrap();
        state.reload().unwrap();
        let resized = state.profiles().get(Some("corp")).unwrap().intune.clone().unwrap().validator;
        assert!(!Arc::ptr_eq(after.rate_limiter(), resized.rate_limiter()));
        assert_eq!(resized.settings().rate_limit_devices, 6000);
        assert!(Arc::ptr_eq(before.replay_cache(), resized.replay_cache()));

        let text = std::fs::read_to_string(&cfg_path).unwrap();
        std::fs::write(&cfg_path, text.replace("intune_replay_capacity = 500", "intune_replay_capacity = 900"))
            .unwrap();
        let e = state.reload().unwrap_err();
        assert!(e.0.starts_with("profile[corp].intune_replay_capacity: changed from 500 to 900"), "{e}");
        assert!(e.0.contains("restart"), "{e}");
        let kept = state.profiles().get(Some("corp")).unwrap().intune.clone().unwrap().validator;
        assert!(Arc::ptr_eq(before.replay_cache(), kept.replay_cache()), "the refused reload keeps the cache");
        assert_eq!(state.intune_stats()[0].replay_capacity, 500);
    }

    #[test]
    fn reload_trust_swaps_anchors_or_keeps_the_old_pool() {
        let dir = TestDir::new();
        let file = dir.path().join("intune.pem");
        std::fs::write(&file, valid_pem("connector-a")).unwrap();
        let state = ServiceState::load(config(&dir, "")).unwrap().state;
        let replay = state.profiles().get(Some("corp")).unwrap().intune.clone().unwrap().validator;

        std::fs::write(&file, valid_pem("connector-b") + &valid_pem("connector-c")).unwrap();
        let out = state.reload_trust(Some("corp")).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].anchors.len(), 2);
        assert_eq!(state.intune_stats()[0].anchors[0].subject, "CN=connector-b");
        let now_v = state.profiles().get(Some("corp")).unwrap().intune.clone().unwrap().validator;
        assert!(Arc::ptr_eq(replay.replay_cache(), now_v.replay_cache()));

        let expired = anchor_pem("old", now().secs() - 10 * 86_400, now().secs() - 86_400);
        for bad in ["garbage".to_string(), expired] {
            std::fs::write(&file, bad).unwrap();
            let e = state.reload_trust(None).unwrap_err();
            assert!(e.0.starts_with("profile[corp].intune_connector_cert_path"), "{e}");
            assert_eq!(state.intune_stats()[0].anchors.len(), 2, "old pool kept");
        }
        assert!(state.reload_trust(Some("plain")).unwrap_err().0.contains("not enabled"));
        assert!(state.reload_trust(Some("nope")).unwrap_err().0.contains("no profile"));
    }

    #[test]
    fn decisions_cover_rejections_before_and_after_the_signature() {
        use scep_engine::Operation;
        use scep_engine::codes::MessageType;
        let base = Outcome {
            profile: "corp".into(),
            operation: Some(Operation::PkiOperation),
            message_type: Some(MessageType::PKCS_REQ),
            transaction_id: Some("tx".into()),
            ..Outcome::default()
        };
        // Refused at the signature: no identity yet, still an Intune decision.
        let sig = Outcome { label: "signature_invalid", detail: Some("no anchor".into()), ..base.clone() };
        let d = decision(&sig).unwrap();
        assert_eq!((d.action, d.label, d.identity), ("scep_pkcsreq_intune", "signature_invalid", None));
        assert_eq!(d.detail, "no anchor");
        // Passed: identity set, label success, binding detail from the CSR.
        let id = IntuneIdentity { subject: "dev".into(), issuer: "conn".into(), nonce: "n1".into() };
        let ok = Outcome {
            label: "success",
            intune: Some(id.clone()),
            subject: Some("CN=dev1".into()),
            subject_alt_names: vec!["DNS:dev1".into()],
            ..base.clone()
        };
        let d = decision(&ok).unwrap();
        assert_eq!((d.label, d.identity, d.transaction_id), ("success", Some(&id), Some("tx")));
        assert!(d.detail.contains("CN=dev1") && d.detail.contains("DNS:dev1"), "{}", d.detail);
        // Passed the challenge, failed at the issuer: still the challenge's success.
        let iss = Outcome { label: "issuer_rejected", intune: Some(id), ..base.clone() };
        assert_eq!(decision(&iss).map(|d| (d.label, d.outcome)), Some(("success", "issuer_rejected")));
        // Not Intune at all.
        assert!(decision(&Outcome { label: "bad_challenge", ..base.clone() }).is_none());
        assert!(decision(&Outcome { label: "success", ..base }).is_none());
    }
}
