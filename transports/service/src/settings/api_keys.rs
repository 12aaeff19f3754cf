//! `[[api_key]]` entries: the admin API's keys (also `CERTCTL_API_KEYS_NAMED`).
//!
//! ```toml
//! [[api_key]]
//! name = "ops"            # [A-Za-z0-9._-]{1,64}, unique; logged on use
//! key = "..."             # at least 16 characters, no whitespace
//! role = "admin"          # "admin" or "reader"; default "reader"
//! ```
//!
//! Errors name `api_key[<index>].<key>` and never quote a key.

use scep_engine::config::ConfigError;
use serde::Deserialize;

/// Shortest accepted API key.
pub const MIN_KEY_LEN: usize = 16;

/// One `[[api_key]]` entry, as written.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeySection {
    /// `name`
    pub name: Option<String>,
    /// `key`
    pub key: Option<String>,
    /// `role`: `admin` or `reader`.
    pub role: Option<String>,
}

/// What a key may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Every admin endpoint.
    Admin,
    /// Authenticated, but no admin endpoint (403).
    Reader,
}

/// One validated API key.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKeySetting {
    /// The key's name (logged and audited).
    pub name: String,
    /// The secret itself.
    pub key: String,
    /// What the key may do.
    pub role: Role,
}

impl std::fmt::Debug for ApiKeySetting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeySetting").field("name", &self.name).field("role", &self.role).finish_non_exhaustive()
    }
}

/// Validates the `[[api_key]]` entries.
///
/// # Errors
/// Naming `api_key[<index>].<key>`, without ever quoting a key: a missing or
/// malformed name, a short key or one with whitespace, an unknown role, a name
/// or a key defined twice.
pub fn validate(sections: &[ApiKeySection]) -> Result<Vec<ApiKeySetting>, ConfigError> {
    let mut keys: Vec<ApiKeySetting> = Vec::with_capacity(sections.len());
    for (i, s) in sections.iter().enumerate() {
        let err = |k: &str, why: &str| ConfigError(format!("api_key[{i}].{k}: {why}"));
        let name = s.name.as_deref().ok_or_else(|| err("name", "required"))?;
        if !(1..=64).contains(&name.len())
            || !name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return Err(err("name", "must be 1 to 64 of A-Z, a-z, 0-9, '.', '_', '-'"));
        }
        let key = s.key.as_deref().ok_or_else(|| err("key", "required"))?;
        if key.len() < MIN_KEY_LEN || key.chars().any(char::is_whitespace) {
            return Err(err("key", &format!("must be at least {MIN_KEY_LEN} characters without whitespace")));
        }
        let role = match s.role.as_deref() {
            None | Some("reader") => Role::Reader,
            Some("admin") => Role::Admin,
            Some(_) => return Err(err("role", "must be \"admin\" or \"reader\"")),
        };
        if keys.iter().any(|k| k.name == name) {
            return Err(err("name", "defined more than once"));
        }
        if keys.iter().any(|k| k.key == key) {
            return Err(err("key", "the same key is configured twice"));
        }
        keys.push(ApiKeySetting { name: name.to_string(), key: key.to_string(), role });
    }
    Ok(keys)
}
