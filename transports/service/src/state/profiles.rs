//! The running profiles: each one's engine, issuer, mTLS policy, Intune
//! setup and kept discovery answers, and the immutable set a reload swaps.

use std::collections::HashMap;
use std::sync::Arc;

use scep_engine::Engine;
use scep_engine::config::ConfigError;
use scep_engine::intune::IntuneValidator;
use scep_engine::time::UnixTime;
use scep_issuers::Issuer;

use crate::intune::{self, IntuneProfile, ProfileIntuneStats};
use crate::state::discovery::DiscoveryAnswers;
use crate::tls::client_auth::MtlsPolicy;

/// A profile ready to serve: its engine and its issuer.
#[derive(Clone)]
pub struct Profile {
    /// The engine (the profile's configuration snapshot).
    pub engine: Engine,
    /// The issuer that answers the engine's issue requests.
    pub issuer: Arc<dyn Issuer>,
    /// The `/scep-mtls/<name>` client-certificate policy, when enabled.
    pub mtls: Option<Arc<MtlsPolicy>>,
    /// The Intune setup, when `intune_enabled = true` (its validator is also
    /// in the engine's configuration).
    pub intune: Option<IntuneProfile>,
    /// The engine's GetCACaps and GetCACert answers, kept for every request.
    pub discovery: DiscoveryAnswers,
}

impl std::fmt::Debug for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Profile")
            .field("name", &self.engine.config().name)
            .field("issuer", &self.issuer.id())
            .field("intune", &self.intune.is_some())
            .finish()
    }
}

/// Every served profile, by name, plus the one served at `/scep`. Immutable:
/// a reload builds a new set and swaps it in.
#[derive(Debug)]
pub struct Profiles {
    by_name: HashMap<String, Profile>,
    default: String,
}

impl Profiles {
    /// Builds a set. `default` must name one of `profiles`.
    ///
    /// # Errors
    /// On duplicate names, an empty set or an unknown default.
    pub fn new(profiles: Vec<Profile>, default: String) -> Result<Self, ConfigError> {
        let mut by_name = HashMap::with_capacity(profiles.len());
        for p in profiles {
            let name = p.engine.config().name.clone();
            if by_name.insert(name.clone(), p).is_some() {
                return Err(ConfigError(format!("profile[{name}].name: defined more than once")));
            }
        }
        if by_name.is_empty() {
            return Err(ConfigError("profile: at least one [[profile]] is required".into()));
        }
        if !by_name.contains_key(&default) {
            return Err(ConfigError(format!("server.default_profile: no profile named {default:?}")));
        }
        Ok(Self { by_name, default })
    }

    /// The profile `name`, or the default profile for `None`.
    pub fn get(&self, name: Option<&str>) -> Option<&Profile> {
        self.by_name.get(name.unwrap_or(&self.default))
    }

    /// The default profile's name.
    pub fn default_name(&self) -> &str {
        &self.default
    }

    /// Every profile, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = &Profile> {
        let mut v: Vec<&Profile> = self.by_name.values().collect();
        v.sort_unstable_by(|a, b| a.engine.config().name.cmp(&b.engine.config().name));
        v.into_iter()
    }

    /// Profile names, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.by_name.keys().map(String::as_str).collect();
        v.sort_unstable();
        v
    }

    /// Every Intune-enabled profile with its Intune setup, sorted by name.
    pub fn intune_profiles(&self) -> Vec<(&str, &IntuneProfile)> {
        self.iter().filter_map(|p| Some((p.engine.config().name.as_str(), p.intune.as_ref()?))).collect()
    }

    /// Intune counters, anchors and settings of every Intune-enabled profile,
    /// sorted by profile name.
    pub fn intune_stats(&self, now: UnixTime) -> Vec<ProfileIntuneStats> {
        intune::stats(self.intune_profiles(), now)
    }

    /// The Intune validators by profile name (carried into the profiles of a
    /// reload: see [`intune::build`]).
    pub fn intune_validators(&self) -> HashMap<String, IntuneValidator> {
        intune::validators(self.intune_profiles())
    }

    /// Re-reads the Connector bundle of `only` (or of every Intune profile)
    /// and swaps the anchors in ([`intune::reload_trust`]).
    ///
    /// # Errors
    /// An unknown profile, a profile without Intune, or the first bundle that
    /// fails the preflight (naming profile and file); the old anchors stay.
    pub fn reload_intune_trust(
        &self,
        only: Option<&str>,
        now: UnixTime,
    ) -> Result<Vec<ProfileIntuneStats>, ConfigError> {
        let selected = match only {
            Some(n) => {
                let p = self.get(Some(n)).ok_or_else(|| ConfigError(format!("no profile named {n:?}")))?;
                let Some(ip) = p.intune.as_ref() else {
                    return Err(ConfigError(format!("profile[{n}]: Intune is not enabled")));
                };
                vec![(n, ip)]
            }
            None => self.intune_profiles(),
        };
        intune::reload_trust(selected, now)
    }
}
