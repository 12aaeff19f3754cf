//! The running profiles: each one's engine, issuer, mTLS policy, Intune
//! setup and kept discovery answers, and the immutable set a reload swaps.

use std::collections::HashMap;
use std::sync::Arc;

use scep_engine::Engine;
use scep_engine::config::ConfigError;
use scep_engine::intune::IntuneValidator;
use scep_engine::time::UnixTime;
use scep_issuers::Issuer;

use crate::intune::api::IntuneApi;
use crate::intune::compliance::ComplianceGate;
use crate::intune::{self, IntuneProfile, ProfileIntuneStats};
use crate::settings::profile::NDES_PATH;
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
    /// The Intune API setup, when `intune_mode = "api"`.
    pub intune_api: Option<IntuneApi>,
    /// The compliance gate (gate 9), when `intune_compliance_check` is not `off`.
    pub intune_compliance: Option<Arc<ComplianceGate>>,
    /// The engine's GetCACaps and GetCACert answers, kept for every request.
    pub discovery: DiscoveryAnswers,
    /// Extra paths that serve this profile (`url_aliases`, validated, without
    /// a trailing `/`; `/pkiclient.exe` below each is served too); `None`: the
    /// key is not set, so the default profile gets NDES's path when no profile
    /// claims it ([`Profiles::aliases`] lists what is served).
    pub url_aliases: Option<Vec<String>>,
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
    /// (alias path, profile name), sorted by path: every profile's
    /// `url_aliases`, plus NDES's path for the default profile when unclaimed.
    aliases: Vec<(String, String)>,
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
        let Some(default_profile) = by_name.get(&default) else {
            return Err(ConfigError(format!("server.default_profile: no profile named {default:?}")));
        };
        let default_takes_ndes_path = default_profile.url_aliases.is_none();
        let mut aliases: Vec<(String, String)> = Vec::new();
        let mut names: Vec<&String> = by_name.keys().collect();
        names.sort_unstable();
        for name in names {
            for alias in by_name[name].url_aliases.iter().flatten() {
                // Paths are matched ignoring ASCII case (as IIS, and so NDES, does).
                if let Some((_, other)) = aliases.iter().find(|(a, _)| a.eq_ignore_ascii_case(alias)) {
                    return Err(ConfigError(format!(
                        "profile[{name}].url_aliases: {alias:?} is already an alias of profile {other:?}"
                    )));
                }
                aliases.push((alias.clone(), name.clone()));
            }
        }
        if default_takes_ndes_path && !aliases.iter().any(|(a, _)| a.eq_ignore_ascii_case(NDES_PATH)) {
            aliases.push((NDES_PATH.to_string(), default.clone()));
        }
        aliases.sort_unstable();
        Ok(Self { by_name, default, aliases })
    }

    /// The profile a `url_aliases` path serves: `path` is one alias, with an
    /// optional `/pkiclient.exe` and an optional trailing `/`, compared
    /// ignoring ASCII case.
    pub fn by_alias(&self, path: &str) -> Option<&Profile> {
        let path = path.strip_suffix('/').unwrap_or(path);
        let base = match path.len().checked_sub("/pkiclient.exe".len()) {
            Some(cut) if path.is_char_boundary(cut) && path[cut..].eq_ignore_ascii_case("/pkiclient.exe") => {
                &path[..cut]
            }
            _ => path,
        };
        let (_, name) = self.aliases.iter().find(|(alias, _)| alias.eq_ignore_ascii_case(base))?;
        self.by_name.get(name)
    }

    /// Every alias path served, with the profile it serves, sorted by path.
    pub fn aliases(&self) -> &[(String, String)] {
        &self.aliases
    }

    /// The alias paths that serve the profile `name`, sorted.
    pub fn aliases_of(&self, name: &str) -> Vec<&str> {
        self.aliases.iter().filter(|(_, n)| n == name).map(|(a, _)| a.as_str()).collect()
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

    /// The Intune API setups by profile name (profiles in `intune_mode = "api"`).
    pub fn intune_api_profiles(&self) -> Vec<(&str, &IntuneApi)> {
        self.iter().filter_map(|p| Some((p.engine.config().name.as_str(), p.intune_api.as_ref()?))).collect()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{TestDir, section};
    use crate::wiring::profile::BuildContext;

    fn build(dir: &TestDir, edits: &[(&str, Option<Vec<&str>>)], default: &str) -> Result<Profiles, ConfigError> {
        let mut ctx = BuildContext::new(None, dir.path(), dir.now());
        let mut out = Vec::new();
        for (i, (name, aliases)) in edits.iter().enumerate() {
            let mut s = section(dir, name);
            s.url_aliases = aliases.as_ref().map(|a| a.iter().map(|x| (*x).to_string()).collect());
            out.push(s.build(i, &mut ctx)?);
        }
        Profiles::new(out, default.into())
    }

    fn served(p: &Profiles, path: &str) -> Option<String> {
        p.by_alias(path).map(|p| p.engine.config().name.clone())
    }

    #[test]
    fn the_default_profile_gets_ndes_path_unless_claimed_or_opted_out() {
        let dir = TestDir::new();
        let p = build(&dir, &[("corp", None), ("iot", None)], "iot").unwrap();
        assert_eq!(p.aliases(), &[(NDES_PATH.to_string(), "iot".to_string())]);
        for path in [
            NDES_PATH,
            "/certsrv/mscep/mscep.dll/",
            "/certsrv/mscep/mscep.dll/pkiclient.exe",
            "/CERTSRV/MSCEP/MSCEP.DLL",
        ] {
            assert_eq!(served(&p, path).as_deref(), Some("iot"), "{path}");
        }
        for path in ["/certsrv/mscep", "/certsrv/mscep/mscep.dll/x", "/certsrv/mscep/mscep.dllx", "/pkiclient.exe", ""]
        {
            assert_eq!(served(&p, path), None, "{path}");
        }
        // Claimed by another profile: that one serves it.
        let p =
            build(&dir, &[("corp", Some(vec!["/certsrv/mscep/mscep.dll", "/enroll"])), ("iot", None)], "iot").unwrap();
        assert_eq!(served(&p, NDES_PATH).as_deref(), Some("corp"));
        assert_eq!(served(&p, "/enroll/pkiclient.exe").as_deref(), Some("corp"));
        assert_eq!(p.aliases_of("iot"), Vec::<&str>::new());
        // An explicit empty list on the default profile opts out.
        let p = build(&dir, &[("corp", Some(vec![]))], "corp").unwrap();
        assert!(p.aliases().is_empty() && served(&p, NDES_PATH).is_none());
    }

    #[test]
    fn an_alias_claimed_twice_is_refused_naming_the_key() {
        let dir = TestDir::new();
        let e = build(&dir, &[("a", Some(vec!["/enroll"])), ("b", Some(vec!["/ENROLL/"]))], "a").unwrap_err();
        assert!(e.0.starts_with("profile[b].url_aliases: ") && e.0.contains("profile \"a\""), "{e}");
    }
}
