//! Intune Connector challenge validation (the Connector-signed JWS carried in
//! the CSR's challengePassword, validated offline).
//!
//! [`looks_intune_shaped`] routes a challengePassword here (gate 1); then
//! [`IntuneValidator::validate`] walks the gates in order and stops at the
//! first failure, which it reports as a [`Rejection`] carrying the metric
//! [`Label`], the CertRep [`FailInfo`] and an audit detail:
//!
//! | gate | check | label | failInfo |
//! |---|---|---|---|
//! | 2 | JWS parse, header, signature against the pinned anchors | `malformed` / `signature_invalid` | badRequest / badMessageCheck |
//! | 3 | version dispatch | `unknown_version` | badRequest |
//! | 4 | `now+tol >= iat`, `now-tol < exp`, age <= validity (+tol) | `not_yet_valid` / `expired` | badMessageCheck |
//! | 5 | `aud` names the configured audience (skipped when none) | `wrong_audience` | badMessageCheck |
//! | 6 | CSR CN/SANs equal the claim's | `claim_mismatch` | badRequest |
//! | 7 | nonce not used within the TTL | `replay` (`replay_cache_full`) | badMessageCheck (badRequest) |
//! | 8 | per-device sliding window on (sub, iss) | `rate_limited` | badRequest |
//! | 9 | compliance (handed out: IO) | `compliance_failed` | badRequest |
//!
//! Gate 9 needs IO (Microsoft Graph or a webhook), so it is not run here:
//! the engine hands the enrolment out with
//! [`Authorization::Intune`](crate::issue::Authorization::Intune) (device id =
//! claim `sub`) and the transport runs the profile's compliance check before
//! the issuer, refusing with label `compliance_failed` (badRequest) and
//! counting it with [`IntuneCounters::record_compliance_refusal`].
//!
//! Where scepd is stricter than the reference: a challenge without `iat`,
//! `exp` or `nonce` is `malformed`; without `aud` while an audience is set it
//! is `wrong_audience`; replay protection cannot be disabled; a signature that
//! only an anchor outside its validity verifies is `expired` (the operator's
//! cue to rotate the anchor). Sans-IO: time is an argument; no clock, no IO.

mod anchors;
mod claims;
mod gates;
mod json;
mod jws;
mod keyed_hash;
mod rate_limit;
mod replay;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

pub use anchors::{AnchorError, AnchorKeyKind, SharedPool, TrustAnchor, TrustAnchorPool, load_pool};
pub use claims::ChallengeVersion;
pub use jws::{JwsAlg, MAX_CHALLENGE_LEN};
pub use rate_limit::{DEFAULT_RATE_DEVICES, DEFAULT_RATE_LIMIT, RATE_WINDOW_SECS, RateLimitError, RateLimiter};
pub use replay::{DEFAULT_REPLAY_CAPACITY, ReplayCache, ReplayError};

use crate::codes::FailInfo;
use crate::crypto::RandomSource;
use crate::engine::IntuneIdentity;
use crate::time::UnixTime;

/// Gate 1 (routing only): a challengePassword longer than 200 characters with
/// exactly two dots goes to the Intune validator; anything else to the static
/// password path. False positives are harmless (they fail as `malformed`).
pub fn looks_intune_shaped(challenge: &str) -> bool {
    challenge.len() > 200 && challenge.bytes().filter(|&b| b == b'.').count() == 2
}

/// The metric/audit label of a rejected challenge (stable strings).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Label {
    /// Not a well-formed JWS / claim set, a refused algorithm, or a missing required claim.
    Malformed,
    /// No trust anchor verifies the signature.
    SignatureInvalid,
    /// The claim set's `version` is not understood.
    UnknownVersion,
    /// `iat` is in the future beyond the tolerance.
    NotYetValid,
    /// Past `exp`, older than the validity cap, or signed by an expired anchor.
    Expired,
    /// `aud` missing or not the configured audience.
    WrongAudience,
    /// The CSR's CN/SANs differ from the claim.
    ClaimMismatch,
    /// The nonce was already used.
    Replay,
    /// The replay cache has no room (fail closed).
    ReplayCacheFull,
    /// The device is over its enrolment rate.
    RateLimited,
    /// The compliance check (gate 9, run by the transport) refused the device.
    ComplianceFailed,
}

impl Label {
    /// Every label, in gate order.
    pub const ALL: [Self; 11] = [
        Self::Malformed,
        Self::SignatureInvalid,
        Self::UnknownVersion,
        Self::NotYetValid,
        Self::Expired,
        Self::WrongAudience,
        Self::ClaimMismatch,
        Self::Replay,
        Self::ReplayCacheFull,
        Self::RateLimited,
        Self::ComplianceFailed,
    ];

    /// The counter label (`malformed`, `signature_invalid`, ...).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::SignatureInvalid => "signature_invalid",
            Self::UnknownVersion => "unknown_version",
            Self::NotYetValid => "not_yet_valid",
            Self::Expired => "expired",
            Self::WrongAudience => "wrong_audience",
            Self::ClaimMismatch => "claim_mismatch",
            Self::Replay => "replay",
            Self::ReplayCacheFull => "replay_cache_full",
            Self::RateLimited => "rate_limited",
            Self::ComplianceFailed => "compliance_failed",
        }
    }

    /// The CertRep failInfo for this label (pkiStatus is FAILURE; RFC 8894 §3.2.1.4).
    /// `replay_cache_full` is badRequest: the request is refused for lack of
    /// server capacity, not because its integrity failed.
    pub const fn fail_info(self) -> FailInfo {
        match self {
            Self::SignatureInvalid | Self::NotYetValid | Self::Expired | Self::WrongAudience | Self::Replay => {
                FailInfo::BAD_MESSAGE_CHECK
            }
            Self::Malformed
            | Self::UnknownVersion
            | Self::ClaimMismatch
            | Self::ReplayCacheFull
            | Self::RateLimited
            | Self::ComplianceFailed => FailInfo::BAD_REQUEST,
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for Label {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refused challenge: what to count, what to answer, what to audit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// The counter label.
    pub label: Label,
    /// The CertRep failInfo (pkiStatus FAILURE).
    pub fail_info: FailInfo,
    /// Audit detail (never sent to the client), e.g. which SAN dimension
    /// mismatched with expected and actual values.
    pub detail: String,
    /// Device `sub`, claim `iss` and `nonce`, once the claims are signature-checked
    /// and parsed (`None` before that: unverified claims are not audited as identity).
    pub identity: Option<IntuneIdentity>,
}

impl Rejection {
    fn new(label: Label, detail: impl Into<String>, identity: Option<IntuneIdentity>) -> Self {
        Self { label, fail_info: label.fail_info(), detail: detail.into(), identity }
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "intune challenge rejected ({}): {}", self.label, self.detail)
    }
}

impl std::error::Error for Rejection {}

/// The identity a CSR asks for, as gate 6 compares it. Plain slices so any CSR
/// parser can fill it.
#[derive(Clone, Copy, Debug, Default)]
pub struct CsrIdentity<'a> {
    /// Subject commonName values.
    pub common_names: &'a [String],
    /// subjectAltName dNSName values.
    pub dns: &'a [String],
    /// subjectAltName rfc822Name values.
    pub emails: &'a [String],
    /// subjectAltName otherName UPN (1.3.6.1.4.1.311.20.2.3) values.
    pub upns: &'a [String],
}

/// A challenge that passed every gate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidatedChallenge {
    /// The claim-set format.
    pub version: ChallengeVersion,
    /// The JWS algorithm.
    pub alg: JwsAlg,
    /// Subject of the trust anchor that verified the signature.
    pub anchor_subject: String,
    /// Claim `iss` (the Connector installation), empty when absent.
    pub issuer: String,
    /// Claim `sub` (the device), empty when absent.
    pub subject: String,
    /// Claim `aud` values.
    pub audience: Vec<String>,
    /// Claim `iat`.
    pub issued_at: UnixTime,
    /// Claim `exp`.
    pub expires_at: UnixTime,
    /// Claim `nonce`.
    pub nonce: String,
    /// Claim `device_name`.
    pub device_name: Option<String>,
    /// Claim `san_dns`.
    pub san_dns: Vec<String>,
    /// Claim `san_rfc822`.
    pub san_rfc822: Vec<String>,
    /// Claim `san_upn`.
    pub san_upn: Vec<String>,
    /// Gate 7's scope of the nonce (the signing anchor's replay scope,
    /// [`TrustAnchor::replay_scope`]): a durable replay store keys the nonce by
    /// (scope, nonce), as the in-memory cache does.
    pub replay_scope: String,
    /// Until when gate 7 keeps the nonce (the challenge can no longer pass
    /// the time gate after it): how long a durable replay store must refuse it.
    pub replay_until: UnixTime,
}

impl ValidatedChallenge {
    /// (sub, iss, nonce) for the audit record and [`crate::Outcome::intune`].
    pub fn identity(&self) -> IntuneIdentity {
        IntuneIdentity { subject: self.subject.clone(), issuer: self.issuer.clone(), nonce: self.nonce.clone() }
    }
}

/// The `iss` under which renewals by certificate are counted (with the
/// certificate's subject as `sub`): it can never meet a Connector's claims.
pub const CERTIFICATE_RENEWAL_ISSUER: &str = "scepd:certificate-renewal";

/// Per-label decision counters (lock-free), plus `success`.
#[derive(Debug, Default)]
pub struct IntuneCounters {
    success: AtomicU64,
    rejected: [AtomicU64; Label::ALL.len()],
}

impl IntuneCounters {
    /// Challenges that passed every gate.
    pub fn success(&self) -> u64 {
        self.success.load(Ordering::Relaxed)
    }

    /// Rejections with `label`.
    pub fn get(&self, label: Label) -> u64 {
        self.rejected[label.index()].load(Ordering::Relaxed)
    }

    /// `("success", n)` then every label in gate order with its count.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        std::iter::once(("success", self.success()))
            .chain(Label::ALL.iter().map(|&l| (l.as_str(), self.get(l))))
            .collect()
    }

    /// Counts a gate-9 refusal made by the transport after gates 2-8 passed
    /// (and were counted as `success`): the decision moves from `success` to
    /// `compliance_failed`, so each challenge is counted once.
    pub fn record_compliance_refusal(&self) {
        self.overturn_success(Label::ComplianceFailed);
    }

    /// Moves one decision the gates counted as `success` to `label`: a
    /// challenge the engine accepted that a check after it (the service's
    /// durable replay store or rate-limit windows, the compliance gate)
    /// refused.
    pub fn overturn_success(&self, label: Label) {
        // Saturating: a reset or a reload between the two counts must not wrap.
        let _ = self.success.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        self.rejected[label.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one refusal with `label` made after the engine's checks for a
    /// decision the gates did not count as `success` (a renewal by
    /// certificate refused by a durable rate-limit window).
    pub fn count_rejection(&self, label: Label) {
        self.rejected[label.index()].fetch_add(1, Ordering::Relaxed);
    }

    fn record(&self, result: &Result<ValidatedChallenge, Rejection>) {
        match result {
            Ok(_) => self.success.fetch_add(1, Ordering::Relaxed),
            Err(r) => self.rejected[r.label.index()].fetch_add(1, Ordering::Relaxed),
        };
    }
}

/// Per-profile Intune settings (spec names in the field docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IntuneSettings {
    /// `INTUNE_AUDIENCE`: the required `aud`; `None` skips gate 5.
    pub audience: Option<String>,
    /// `INTUNE_CHALLENGE_VALIDITY` in seconds (default 3600): the age cap and the replay TTL.
    pub challenge_validity_secs: i64,
    /// `INTUNE_CLOCK_SKEW_TOLERANCE` in seconds (default 60); must be < validity.
    pub clock_skew_tolerance_secs: i64,
    /// `INTUNE_PER_DEVICE_RATE_LIMIT_24H` (default 3; 0 disables gate 8).
    pub per_device_rate_limit_24h: u32,
    /// Live nonces the replay cache holds (default 100 000).
    pub replay_capacity: usize,
    /// Devices the rate limiter tracks (default 100 000).
    pub rate_limit_devices: usize,
}

impl Default for IntuneSettings {
    fn default() -> Self {
        Self {
            audience: None,
            challenge_validity_secs: 3600,
            clock_skew_tolerance_secs: 60,
            per_device_rate_limit_24h: DEFAULT_RATE_LIMIT,
            replay_capacity: DEFAULT_REPLAY_CAPACITY,
            rate_limit_devices: DEFAULT_RATE_DEVICES,
        }
    }
}

/// Invalid Intune settings; the message names the setting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IntuneConfigError(pub String);

impl std::fmt::Display for IntuneConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for IntuneConfigError {}

impl IntuneSettings {
    /// Checks the settings (run at start-up and on reload).
    ///
    /// # Errors
    /// Naming the offending setting: validity must be > 0 (replay protection
    /// cannot be off), tolerance >= 0 and < validity, capacities > 0, audience
    /// non-empty when set.
    pub fn validate(&self) -> Result<(), IntuneConfigError> {
        let err = |m: String| Err(IntuneConfigError(m));
        if self.challenge_validity_secs <= 0 {
            return err(format!(
                "INTUNE_CHALLENGE_VALIDITY must be positive (got {}s); it is also the replay TTL",
                self.challenge_validity_secs
            ));
        }
        if self.clock_skew_tolerance_secs < 0 {
            return err(format!(
                "INTUNE_CLOCK_SKEW_TOLERANCE must not be negative (got {}s)",
                self.clock_skew_tolerance_secs
            ));
        }
        if self.clock_skew_tolerance_secs >= self.challenge_validity_secs {
            return err(format!(
                "INTUNE_CLOCK_SKEW_TOLERANCE ({}s) must be less than INTUNE_CHALLENGE_VALIDITY ({}s)",
                self.clock_skew_tolerance_secs, self.challenge_validity_secs
            ));
        }
        if self.audience.as_deref() == Some("") {
            return err("INTUNE_AUDIENCE is set but empty; unset it to skip the audience check".into());
        }
        if self.replay_capacity == 0 || self.rate_limit_devices == 0 {
            return err("Intune replay cache and rate limiter capacities must be positive".into());
        }
        Ok(())
    }

    /// A fresh rate limiter sized and limited by these settings.
    fn rate_limiter(&self, rng: &dyn RandomSource) -> RateLimiter {
        RateLimiter::new(self.per_device_rate_limit_24h, RATE_WINDOW_SECS, self.rate_limit_devices, rng)
    }
}

/// One profile's Intune challenge validator. Cheap to clone; clones share the
/// anchor pool, replay cache, rate limiter and counters. On a configuration
/// reload, carry the replay cache and rate limiter over
/// ([`IntuneValidator::with_replay_cache`], [`IntuneValidator::with_rate_limiter`])
/// so a reload never reopens a replay window.
#[derive(Clone)]
pub struct IntuneValidator {
    profile: Arc<str>,
    anchors: SharedPool,
    settings: IntuneSettings,
    replay: Arc<ReplayCache>,
    rate: Arc<RateLimiter>,
    counters: Arc<IntuneCounters>,
}

impl std::fmt::Debug for IntuneValidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IntuneValidator")
            .field("profile", &self.profile)
            .field("settings", &self.settings)
            .field("anchors", &self.anchors.load().len())
            .finish_non_exhaustive()
    }
}

impl IntuneValidator {
    /// A validator for `profile` with fresh replay cache, rate limiter and
    /// counters (hash keys drawn from `rng`).
    ///
    /// # Errors
    /// [`IntuneConfigError`] from [`IntuneSettings::validate`].
    pub fn new(
        profile: &str,
        anchors: SharedPool,
        settings: IntuneSettings,
        rng: &dyn RandomSource,
    ) -> Result<Self, IntuneConfigError> {
        settings.validate()?;
        let replay = Arc::new(ReplayCache::new(settings.replay_capacity, rng));
        let rate = Arc::new(settings.rate_limiter(rng));
        Ok(Self {
            profile: profile.into(),
            anchors,
            settings,
            replay,
            rate,
            counters: Arc::new(IntuneCounters::default()),
        })
    }

    /// A validator for `profile` whose replay cache is `replay`, shared with
    /// other profiles (e.g. one cache for the whole process): nonces are
    /// keyed by the anchor that signed them, so a challenge accepted on one
    /// profile is a replay on every other profile that trusts the same
    /// anchor. Fresh rate limiter and counters.
    ///
    /// # Errors
    /// [`IntuneConfigError`] from [`IntuneSettings::validate`].
    pub fn with_shared_replay(
        profile: &str,
        anchors: SharedPool,
        settings: IntuneSettings,
        replay: Arc<ReplayCache>,
        rng: &dyn RandomSource,
    ) -> Result<Self, IntuneConfigError> {
        settings.validate()?;
        let rate = Arc::new(settings.rate_limiter(rng));
        Ok(Self {
            profile: profile.into(),
            anchors,
            settings,
            replay,
            rate,
            counters: Arc::new(IntuneCounters::default()),
        })
    }

    /// The validator that replaces `previous` on a configuration reload: it
    /// takes over `previous`'s replay cache and counters, and its rate
    /// limiter when `keep_rate_limiter` (else a fresh one for the new
    /// settings), and allocates nothing it takes over, so a reload never
    /// holds two copies of large tables.
    ///
    /// # Errors
    /// [`IntuneConfigError`] from [`IntuneSettings::validate`].
    pub fn succeeding(
        previous: &Self,
        anchors: SharedPool,
        settings: IntuneSettings,
        keep_rate_limiter: bool,
        rng: &dyn RandomSource,
    ) -> Result<Self, IntuneConfigError> {
        settings.validate()?;
        let rate = if keep_rate_limiter { previous.rate.clone() } else { Arc::new(settings.rate_limiter(rng)) };
        Ok(Self {
            profile: previous.profile.clone(),
            anchors,
            settings,
            replay: previous.replay.clone(),
            rate,
            counters: previous.counters.clone(),
        })
    }

    /// Uses an existing replay cache (e.g. the previous configuration's).
    #[must_use]
    pub fn with_replay_cache(mut self, cache: Arc<ReplayCache>) -> Self {
        self.replay = cache;
        self
    }

    /// Uses an existing rate limiter (e.g. the previous configuration's, when
    /// the limit is unchanged).
    #[must_use]
    pub fn with_rate_limiter(mut self, limiter: Arc<RateLimiter>) -> Self {
        self.rate = limiter;
        self
    }

    /// Uses existing counters (so metrics survive a reload).
    #[must_use]
    pub fn with_counters(mut self, counters: Arc<IntuneCounters>) -> Self {
        self.counters = counters;
        self
    }

    /// The settings.
    pub fn settings(&self) -> &IntuneSettings {
        &self.settings
    }

    /// The trust anchor handle (reload it on SIGHUP; list it in the admin plane).
    pub fn anchors(&self) -> &SharedPool {
        &self.anchors
    }

    /// The replay cache.
    pub fn replay_cache(&self) -> &Arc<ReplayCache> {
        &self.replay
    }

    /// The rate limiter.
    pub fn rate_limiter(&self) -> &Arc<RateLimiter> {
        &self.rate
    }

    /// The decision counters.
    pub fn counters(&self) -> &Arc<IntuneCounters> {
        &self.counters
    }

    /// Counts a renewal by certificate (no challenge, so no claims) against
    /// the per-device rate limit (gate 8's limiter). Without claims the device
    /// is keyed by the renewed certificate's subject: a renewal keeps the
    /// subject, so every renewal of one certificate chain lands in one log.
    /// The key is prefixed so it cannot meet a claim-keyed (`sub`, `iss`) log.
    ///
    /// # Errors
    /// The [`Rejection`] (label `rate_limited`), counted like gate 8's.
    pub fn admit_certificate_renewal(&self, certificate_subject: &str, now: UnixTime) -> Result<(), Rejection> {
        let result = self
            .rate
            .check_and_record(&self.profile, certificate_subject, CERTIFICATE_RENEWAL_ISSUER, now)
            .map_err(|e| {
                let detail = match e {
                    RateLimitError::Limited { limit, retry_at } => format!(
                        "certificate {certificate_subject:?} reached {limit} enrolments and renewals in 24h; \
                         next allowed at {}",
                        retry_at.to_rfc3339()
                    ),
                    RateLimitError::Full => "rate limiter device table full".to_string(),
                    RateLimitError::Contended => "rate limiter contended; refused to stay safe".to_string(),
                };
                Rejection::new(Label::RateLimited, detail, None)
            });
        if let Err(r) = &result {
            self.counters.rejected[r.label.index()].fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    /// Runs gates 2–8 on `challenge` (the CSR's challengePassword) against the
    /// CSR identity `csr` at `now`, and counts the decision.
    ///
    /// # Errors
    /// The first failing gate's [`Rejection`].
    pub fn validate(
        &self,
        challenge: &str,
        csr: &CsrIdentity<'_>,
        now: UnixTime,
    ) -> Result<ValidatedChallenge, Rejection> {
        let result = self.run_gates(challenge, csr, now);
        self.counters.record(&result);
        result
    }

    fn run_gates(
        &self,
        challenge: &str,
        csr: &CsrIdentity<'_>,
        now: UnixTime,
    ) -> Result<ValidatedChallenge, Rejection> {
        use jws::JwsError;
        let s = &self.settings;
        let (tol, validity) = (s.clock_skew_tolerance_secs, s.challenge_validity_secs);

        // Gate 2: parse, header, signature.
        let pool = self.anchors.load();
        let jws = jws::verify(challenge, &pool, now).map_err(|e| match e {
            JwsError::Malformed(d) => Rejection::new(Label::Malformed, d, None),
            JwsError::SignatureInvalid(d) => Rejection::new(Label::SignatureInvalid, d, None),
            JwsError::AnchorExpired(d) => Rejection::new(Label::Expired, d, None),
        })?;

        // Gate 3: version dispatch, then the version's parser.
        let claims_err = |e| match e {
            claims::ClaimsError::Malformed(d) => Rejection::new(Label::Malformed, d, None),
            claims::ClaimsError::UnknownVersion(d) => Rejection::new(Label::UnknownVersion, d, None),
        };
        let version = claims::detect_version(&jws.payload).map_err(claims_err)?;
        let claims = version.parse(&jws.payload).map_err(claims_err)?;
        let identity = IntuneIdentity {
            subject: claims.sub.as_deref().unwrap_or_default().to_string(),
            issuer: claims.iss.as_deref().unwrap_or_default().to_string(),
            nonce: claims.nonce.to_string(),
        };
        let reject = |label, detail: String| Rejection::new(label, detail, Some(identity.clone()));

        // Gate 4: time.
        gates::check_time(&claims, now.secs(), tol, validity).map_err(|(l, d)| reject(l, d))?;
        // Gate 5: audience.
        gates::check_audience(&claims, s.audience.as_deref()).map_err(|d| reject(Label::WrongAudience, d))?;
        // Gate 6: CSR binding.
        gates::check_binding(&claims, csr).map_err(|d| reject(Label::ClaimMismatch, d))?;

        // Gate 7: replay. The entry lives for the validity (the TTL) and at
        // least until the time gate can no longer accept this challenge.
        let last = gates::last_acceptable(&claims, tol, validity);
        let expires = UnixTime(now.secs().saturating_add(validity).max(last.saturating_add(1)));
        // Scoped by the anchor that signed the challenge, not the profile: a
        // cache shared by several profiles then makes the nonce single-use
        // across every profile that trusts that anchor (issue 13).
        let scope = pool.anchors().get(jws.anchor).map_or("anchor:unknown", TrustAnchor::replay_scope);
        self.replay.check_and_insert(scope, &claims.nonce, now, expires).map_err(|e| match e {
            ReplayError::Replay => reject(Label::Replay, format!("nonce {:?} was already used", claims.nonce)),
            ReplayError::Full => reject(
                Label::ReplayCacheFull,
                format!("replay cache full ({} live nonces); refusing rather than evicting", self.replay.capacity()),
            ),
        })?;

        // Gate 8: per-device rate limit.
        self.rate.check_and_record(&self.profile, &identity.subject, &identity.issuer, now).map_err(|e| {
            let d = match e {
                RateLimitError::Limited { limit, retry_at } => format!(
                    "device {:?} of {:?} reached {limit} enrolments in 24h; next allowed at {}",
                    identity.subject,
                    identity.issuer,
                    retry_at.to_rfc3339()
                ),
                RateLimitError::Full => "rate limiter device table full".to_string(),
                RateLimitError::Contended => "rate limiter contended; refused to stay safe".to_string(),
            };
            reject(Label::RateLimited, d)
        })?;

        let anchor_subject = pool.anchors().get(jws.anchor).map(|a| a.subject().to_string()).unwrap_or_default();
        let owned = |v: &[std::borrow::Cow<'_, str>]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let validated = ValidatedChallenge {
            version: claims.version,
            alg: jws.alg,
            anchor_subject,
            issuer: identity.issuer.clone(),
            subject: identity.subject.clone(),
            audience: match &claims.aud {
                None => Vec::new(),
                Some(claims::Audience::One(a)) => vec![a.to_string()],
                Some(claims::Audience::Many(v)) => owned(v),
            },
            issued_at: UnixTime(claims.iat),
            expires_at: UnixTime(claims.exp),
            nonce: identity.nonce.clone(),
            device_name: claims.device_name.as_deref().map(str::to_string),
            san_dns: owned(&claims.san_dns),
            san_rfc822: owned(&claims.san_rfc822),
            san_upn: owned(&claims.san_upn),
            replay_scope: scope.to_string(),
            replay_until: expires,
        };

        // Gate 9 (compliance) needs IO: the transport runs it (module docs).
        Ok(validated)
    }
}

/// Entry points for the fuzz targets only (`--cfg fuzzing`, set by cargo-fuzz).
/// Production never parses a claim set before its signature verifies; the
/// fuzzer needs to, or it could not reach the claim parser at all.
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzzing {
    use super::{CsrIdentity, claims, gates};

    /// Runs gate 3 (version dispatch and claim parsing) and gates 4–6 on an
    /// unverified, already base64url-decoded payload; returns whether every
    /// gate passed.
    pub fn claims_and_gates(payload: &[u8], csr: &CsrIdentity<'_>, now: i64, audience: Option<&str>) -> bool {
        let Ok(version) = claims::detect_version(payload) else { return false };
        let Ok(c) = version.parse(payload) else { return false };
        let _ = gates::last_acceptable(&c, 60, 3600);
        gates::check_time(&c, now, 60, 3600).is_ok()
            && gates::check_audience(&c, audience).is_ok()
            && gates::check_binding(&c, csr).is_ok()
    }
}
