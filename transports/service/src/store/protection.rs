//! The durable protection state around the engine (issue 18): Intune replay
//! nonces and per-device rate-limit windows in the [`ProtectionStore`]
//! (`scep_store`: SQLite in the data directory, or PostgreSQL shared by every
//! node).
//!
//! The engine is sans-IO: its in-memory, lock-free replay cache and rate
//! limiter (gates 7 and 8) answer first, as the fast local check. When they
//! pass, `http::drive` calls [`check_intune`] before the issuer: the nonce is
//! claimed in the store (refused as `replay` when any node, before or after
//! any restart, claimed it) and the device's window counted (`rate_limited`
//! when every node's enrolments of the device reach the limit). A store that
//! does not answer is [`Verdict::Unavailable`]: the request is answered 503,
//! never issued on local state alone.
//!
//! Keys are SHA-256 digests (fixed size, no raw claim text in the database):
//! the nonce's under its anchor scope, exactly as the in-memory cache scopes
//! it; the device's under its profile, `sub` and `iss`, as the in-memory
//! limiter keys it.

use std::sync::{Arc, Weak};
use std::time::Duration;

use scep_engine::UnixTime;
use scep_engine::codes::FailInfo;
use scep_engine::crypto::DigestAlg;
use scep_engine::intune::Label;
use scep_store::{Decision, ProtectionStore};

/// How often expired nonces and rate-limit events are deleted.
pub const PURGE_EVERY: Duration = Duration::from_secs(60);

/// One Intune-authorised enrolment to check.
#[derive(Clone, Debug)]
pub struct IntuneUse {
    /// The profile (scopes the device's window).
    pub profile: String,
    /// The nonce to claim, for a Connector challenge (none for a renewal by
    /// certificate, which presents no challenge).
    pub nonce: Option<NonceUse>,
    /// Claim `sub` (the device); for a renewal by certificate, the
    /// certificate's subject.
    pub subject: String,
    /// Claim `iss` (the Connector installation); for a renewal by
    /// certificate, [`scep_engine::intune::CERTIFICATE_RENEWAL_ISSUER`].
    pub issuer: String,
    /// The profile's per-device limit in the window (0: none).
    pub limit: u32,
    /// The window, in seconds.
    pub window_secs: i64,
}

/// A Connector challenge's nonce, as gate 7 scoped it.
#[derive(Clone, Debug)]
pub struct NonceUse {
    /// The nonce's anchor scope (`Authorization::Intune::replay_scope`).
    pub scope: String,
    /// Claim `nonce`.
    pub nonce: String,
    /// Until when the nonce must be refused.
    pub until: UnixTime,
}

/// What the store decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Nonce claimed and enrolment counted: go on to the issuer.
    Admitted,
    /// Refused (signed CertRep FAILURE with this failInfo and label).
    Refused {
        /// The Intune decision label (`replay`, `rate_limited`).
        label: Label,
        /// The failInfo to answer with.
        fail_info: FailInfo,
        /// Audit detail.
        detail: String,
    },
    /// The store did not answer: 503, nothing issued.
    Unavailable(String),
}

fn key(parts: &[&str]) -> Vec<u8> {
    let lengths: Vec<[u8; 8]> = parts.iter().map(|p| (p.len() as u64).to_be_bytes()).collect();
    let framed: Vec<&[u8]> = parts.iter().zip(&lengths).flat_map(|(p, len)| [&len[..], p.as_bytes()]).collect();
    DigestAlg::Sha256.digest_parts(&framed)
}

/// The nonce's key: SHA-256 over (domain, scope, nonce), length-prefixed.
pub fn nonce_key(scope: &str, nonce: &str) -> Vec<u8> {
    key(&["scepd intune nonce", scope, nonce])
}

/// The device's key: SHA-256 over (domain, profile, sub, iss), length-prefixed.
pub fn device_key(profile: &str, subject: &str, issuer: &str) -> Vec<u8> {
    key(&["scepd intune device", profile, subject, issuer])
}

/// Claims the nonce, then counts the device, on the `blocking` pool.
pub async fn check_intune(store: Arc<dyn ProtectionStore>, check: IntuneUse, now: UnixTime) -> Verdict {
    blocking::unblock(move || check_intune_blocking(store.as_ref(), &check, now)).await
}

fn check_intune_blocking(store: &dyn ProtectionStore, check: &IntuneUse, now: UnixTime) -> Verdict {
    let nonce = check.nonce.as_ref().map(|used| (nonce_key(&used.scope, &used.nonce), used.until.secs()));
    let device = device_key(&check.profile, &check.subject, &check.issuer);
    let decided = store.claim_and_admit(
        nonce.as_ref().map(|(key, until)| (key.as_slice(), *until)),
        &device,
        now.secs(),
        check.window_secs,
        check.limit,
    );
    match decided {
        Ok(Decision::Admitted) => Verdict::Admitted,
        Ok(Decision::Replay) => Verdict::Refused {
            label: Label::Replay,
            fail_info: Label::Replay.fail_info(),
            detail: format!(
                "nonce {:?} was already used ({} store)",
                check.nonce.as_ref().map_or("", |n| n.nonce.as_str()),
                store.backend()
            ),
        },
        Ok(Decision::Limited { retry_at }) => Verdict::Refused {
            label: Label::RateLimited,
            fail_info: Label::RateLimited.fail_info(),
            detail: format!(
                "device {:?} of {:?} reached {} enrolments in {}s across every node; next allowed at {}",
                check.subject,
                check.issuer,
                check.limit,
                check.window_secs,
                UnixTime(retry_at).to_rfc3339()
            ),
        },
        Err(e) => Verdict::Unavailable(e.to_string()),
    }
}

/// Starts a thread deleting expired entries every [`PURGE_EVERY`]; it ends
/// with the store (it holds only a weak reference).
pub fn start_purge(store: &Arc<dyn ProtectionStore>) {
    let weak: Weak<dyn ProtectionStore> = Arc::downgrade(store);
    let spawned = std::thread::Builder::new().name("scepd-store-purge".into()).spawn(move || {
        loop {
            std::thread::sleep(PURGE_EVERY);
            let Some(store) = weak.upgrade() else { return };
            match store.purge_expired(UnixTime::now().secs()) {
                Ok(p) if p.nonces + p.rate_events > 0 => {
                    tracing::debug!(target: "scepd::store", nonces = p.nonces, rate_events = p.rate_events, "purged expired protection state");
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(target: "scepd::store", error = %e, "purging expired protection state failed; retrying later"),
            }
        }
    });
    if let Err(e) = spawned {
        tracing::error!(target: "scepd::store", error = %e, "could not start the purge thread; expired nonces stay until restart");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sqlite() -> (tempfile::TempDir, Arc<dyn ProtectionStore>) {
        let dir = tempfile::tempdir().unwrap();
        let store = scep_store::open(&scep_store::StoreSettings::default(), dir.path()).unwrap();
        (dir, store)
    }

    fn use_of(nonce: &str, subject: &str, limit: u32) -> IntuneUse {
        IntuneUse {
            profile: "intune".into(),
            nonce: Some(NonceUse { scope: "anchor:1".into(), nonce: nonce.into(), until: UnixTime(2_000) }),
            subject: subject.into(),
            issuer: "connector".into(),
            limit,
            window_secs: 86_400,
        }
    }

    #[test]
    fn a_replayed_nonce_and_a_device_over_its_limit_are_refused() {
        let (_dir, store) = sqlite();
        let now = UnixTime(1_000);
        assert_eq!(check_intune_blocking(&*store, &use_of("n1", "dev", 2), now), Verdict::Admitted);
        let Verdict::Refused { label, .. } = check_intune_blocking(&*store, &use_of("n1", "other", 2), now) else {
            panic!("replay expected")
        };
        assert_eq!(label, Label::Replay);
        assert_eq!(check_intune_blocking(&*store, &use_of("n2", "dev", 2), now), Verdict::Admitted);
        let Verdict::Refused { label, detail, .. } = check_intune_blocking(&*store, &use_of("n3", "dev", 2), now)
        else {
            panic!("rate limit expected")
        };
        assert_eq!(label, Label::RateLimited, "{detail}");
        // A renewal by certificate (no nonce) counts in its own window.
        let renewal = IntuneUse { nonce: None, issuer: "scepd:certificate-renewal".into(), ..use_of("", "CN=dev", 1) };
        assert_eq!(check_intune_blocking(&*store, &renewal, now), Verdict::Admitted);
        assert!(matches!(
            check_intune_blocking(&*store, &renewal, now),
            Verdict::Refused { label: Label::RateLimited, .. }
        ));
    }

    #[test]
    fn keys_separate_their_parts() {
        assert_ne!(nonce_key("ab", "c"), nonce_key("a", "bc"));
        assert_ne!(device_key("p", "s", "i"), device_key("p", "si", ""));
        assert_eq!(nonce_key("a", "b").len(), 32);
    }
}
