//! The admin API's running key set: each configured key's SHA-256 digest and
//! role, compared in constant time.

use scep_engine::config::ConfigError;
use scep_engine::crypto::DigestAlg;

use crate::settings::api_keys::{self, ApiKeySection, ApiKeySetting, Role};

struct ApiKey {
    name: String,
    digest: Vec<u8>,
    role: Role,
}

/// The configured API keys (replaced on reload).
#[derive(Default)]
pub struct ApiKeys {
    keys: Vec<ApiKey>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.keys.iter().map(|k| (&k.name, k.role))).finish()
    }
}

impl ApiKeys {
    /// Validates the `[[api_key]]` entries ([`api_keys::validate`]) and keeps
    /// their digests.
    ///
    /// # Errors
    /// Naming `api_key[<index>].<key>`, without ever quoting a key.
    pub fn from_sections(sections: &[ApiKeySection]) -> Result<Self, ConfigError> {
        Ok(Self::from_settings(&api_keys::validate(sections)?))
    }

    /// The running key set of validated keys (only their digests are kept).
    pub fn from_settings(settings: &[ApiKeySetting]) -> Self {
        let keys = settings
            .iter()
            .map(|s| ApiKey { name: s.name.clone(), digest: DigestAlg::Sha256.digest(s.key.as_bytes()), role: s.role })
            .collect();
        Self { keys }
    }

    /// How many keys are configured.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key is configured (the admin API then answers 401).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// How many keys have the `admin` role (the web GUI signs in with one).
    pub fn admins(&self) -> usize {
        self.keys.iter().filter(|k| k.role == Role::Admin).count()
    }

    /// The key's name and role, comparing against every key in constant time.
    pub fn authenticate(&self, presented: &str) -> Option<(&str, Role)> {
        let digest = DigestAlg::Sha256.digest(presented.as_bytes());
        let mut found = None;
        for k in &self.keys {
            // No early exit: every configured key is compared.
            let same = scep_engine::crypto::constant_time_eq(&k.digest, &digest);
            if same && found.is_none() {
                found = Some((k.name.as_str(), k.role));
            }
        }
        found
    }
}
