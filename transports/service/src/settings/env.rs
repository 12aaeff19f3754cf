//! The spec's `CERTCTL_*` environment variables, accepted as written, mapped
//! onto the same configuration structures as the TOML file. A variable
//! overrides the file's value for the same key.
//!
//! | variable | TOML |
//! |---|---|
//! | `CERTCTL_SCEP_ENABLED` | — (`true`; `false` is refused: scepd would serve nothing) |
//! | `CERTCTL_SCEP_PROFILES=corp,iot` | the `[[profile]]` entries named (created when absent from the file) |
//! | `CERTCTL_SCEP_PROFILE_<NAME>_ISSUER_ID` | `issuer` (`iss-local` = the built-in local CA) |
//! | `CERTCTL_SCEP_PROFILE_<NAME>_PROFILE_ID` | `certificate_profile` (reserved: see below) |
//! | `CERTCTL_SCEP_PROFILE_<NAME>_CHALLENGE_PASSWORD` | `challenge_password` |
//! | `CERTCTL_SCEP_PROFILE_<NAME>_CHALLENGE_MODE` | `challenge_mode` (`static` or `one-time`) |
//! | `CERTCTL_SCEP_PROFILE_<NAME>_RA_CERT_PATH` / `_RA_KEY_PATH` | `ra_cert` / `ra_key` |
//! | `CERTCTL_SCEP_PROFILE_<NAME>_RA_ENCRYPTION_CERT_PATH` / `_RA_ENCRYPTION_KEY_PATH` | `ra_encryption_cert` / `ra_encryption_key` |
//! | `CERTCTL_SCEP_PROFILE_<NAME>_REPLY_SIGNATURE` | `reply_signature` (`rsa-encryption`, `mirror`) |
//! | `CERTCTL_SCEP_PROFILE_<NAME>_TRUST_REQUESTED_SID` | `trust_requested_sid` |
//! | `CERTCTL_SCEP_PROFILE_<NAME>_URL_ALIASES=/a,/b` | `url_aliases` (comma-separated) |
//! | `CERTCTL_SCEP_PROFILE_<NAME>_MTLS_ENABLED` | `mtls_enabled` |
//! | `CERTCTL_SCEP_PROFILE_<NAME>_MTLS_CLIENT_CA_TRUST_BUNDLE_PATH` | `mtls_client_ca_trust_bundle_path` |
//! | `CERTCTL_SCEP_PROFILE_<NAME>_INTUNE_ENABLED` (and the other `INTUNE_*`) | `intune_enabled`, ... |
//! | `CERTCTL_SCEP_PROFILE_<NAME>_RENEWAL_WINDOW_DAYS` | `renewal_window_days` |
//! | `CERTCTL_SCEP_PROFILE_<NAME>_INTUNE_RENEWAL_BY_CERTIFICATE` | `intune_renewal_by_certificate` |
//! | `CERTCTL_SCEP_PUBLIC_URL` | `[server] public_url` |
//! | `CERTCTL_SCEP_OCSP_SIGNER` | `[server] ocsp_signer` |
//! | `CERTCTL_DATABASE_URL=postgres://...` | `[store] url` (the shared PostgreSQL store) |
//! | `CERTCTL_API_KEYS_NAMED=name:key[:admin\|:reader],...` | `[[api_key]]` (replaces the file's list; any other third field is refused) |
//!
//! `<NAME>` is the profile name upper-cased (`corp` → `CORP`); the URL uses
//! the lower-case name (`/scep/corp`). Booleans are parsed as Go's
//! `strconv.ParseBool` does (`1 t T TRUE true True 0 f F FALSE false False`),
//! so certctl env files migrate unchanged.
//!
//! A per-profile variable sets one key of a profile that
//! `CERTCTL_SCEP_PROFILES` lists or that the configuration file defines
//! (`[[profile]] name = "corp"`): variables override the file key by key, the
//! file's profiles included, and need not be listed again.
//!
//! Every value is checked: an unknown `CERTCTL_SCEP_*` variable (a typo), a
//! per-profile variable for a profile neither listed in
//! `CERTCTL_SCEP_PROFILES` nor defined in the file, a malformed boolean or
//! number, all stop the start naming the variable.
//! Errors found later, while the profile is built, name the variable too
//! ([`Applied::annotate`]). Other `CERTCTL_*` variables (certctl settings
//! scepd does not have) are reported in the log and otherwise ignored.

use std::path::PathBuf;

use scep_engine::config::ConfigError;

use super::ConfigFile;
use super::api_keys::ApiKeySection;
use super::profile::{ProfileSection, is_valid_name};

/// Prefix of every variable this module reads.
pub const PREFIX: &str = "CERTCTL_";
const ENABLED: &str = "CERTCTL_SCEP_ENABLED";
const PROFILES: &str = "CERTCTL_SCEP_PROFILES";
const PROFILE_PREFIX: &str = "CERTCTL_SCEP_PROFILE_";
const API_KEYS: &str = "CERTCTL_API_KEYS_NAMED";
const PUBLIC_URL: &str = "CERTCTL_SCEP_PUBLIC_URL";
const OCSP_SIGNER: &str = "CERTCTL_SCEP_OCSP_SIGNER";
/// The variable certctl itself uses for its PostgreSQL database.
pub const DATABASE_URL: &str = "CERTCTL_DATABASE_URL";

/// How a per-profile variable's value is read.
#[derive(Clone, Copy)]
enum Kind {
    Text,
    Path,
    Bool,
    Int,
}

/// Per-profile variable suffix → TOML key.
const PROFILE_KEYS: &[(&str, &str, Kind)] = &[
    ("ISSUER_ID", "issuer", Kind::Text),
    ("PROFILE_ID", "certificate_profile", Kind::Text),
    ("CHALLENGE_PASSWORD", "challenge_password", Kind::Text),
    ("CHALLENGE_MODE", "challenge_mode", Kind::Text),
    ("RA_CERT_PATH", "ra_cert", Kind::Path),
    ("RA_KEY_PATH", "ra_key", Kind::Path),
    // scepd's own (not in the certctl spec): the NDES RA arrangement, reply form, SID trust, URL aliases.
    ("RA_ENCRYPTION_CERT_PATH", "ra_encryption_cert", Kind::Path),
    ("RA_ENCRYPTION_KEY_PATH", "ra_encryption_key", Kind::Path),
    ("REPLY_SIGNATURE", "reply_signature", Kind::Text),
    ("TRUST_REQUESTED_SID", "trust_requested_sid", Kind::Bool),
    ("URL_ALIASES", "url_aliases", Kind::Text),
    ("MTLS_ENABLED", "mtls_enabled", Kind::Bool),
    ("MTLS_CLIENT_CA_TRUST_BUNDLE_PATH", "mtls_client_ca_trust_bundle_path", Kind::Path),
    ("INTUNE_ENABLED", "intune_enabled", Kind::Bool),
    ("INTUNE_CONNECTOR_CERT_PATH", "intune_connector_cert_path", Kind::Path),
    ("INTUNE_AUDIENCE", "intune_audience", Kind::Text),
    ("INTUNE_CHALLENGE_VALIDITY", "intune_challenge_validity", Kind::Text),
    ("INTUNE_CLOCK_SKEW_TOLERANCE", "intune_clock_skew_tolerance", Kind::Text),
    ("INTUNE_PER_DEVICE_RATE_LIMIT_24H", "intune_per_device_rate_limit_24h", Kind::Int),
    // scepd's own (not in the certctl spec): sizes of the Intune replay cache and rate limiter.
    ("INTUNE_REPLAY_CAPACITY", "intune_replay_capacity", Kind::Int),
    ("INTUNE_RATE_LIMIT_DEVICES", "intune_rate_limit_devices", Kind::Int),
    // scepd's own: renewal by certificate (issue 13).
    ("INTUNE_RENEWAL_BY_CERTIFICATE", "intune_renewal_by_certificate", Kind::Bool),
    ("INTUNE_MODE", "intune_mode", Kind::Text),
    ("INTUNE_TENANT_ID", "intune_tenant_id", Kind::Text),
    ("INTUNE_CLIENT_ID", "intune_client_id", Kind::Text),
    ("INTUNE_CLIENT_SECRET_PATH", "intune_client_secret_path", Kind::Path),
    ("INTUNE_CLIENT_CERT_PATH", "intune_client_cert_path", Kind::Path),
    ("INTUNE_CLIENT_KEY_PATH", "intune_client_key_path", Kind::Path),
    ("INTUNE_AUTHORITY_URL", "intune_authority_url", Kind::Text),
    ("INTUNE_GRAPH_URL", "intune_graph_url", Kind::Text),
    ("INTUNE_RESOURCE_URL", "intune_resource_url", Kind::Text),
    ("INTUNE_API_CA_BUNDLE_PATH", "intune_api_ca_bundle_path", Kind::Path),
    ("INTUNE_REVOCATION_POLL_INTERVAL", "intune_revocation_poll_interval", Kind::Text),
    ("INTUNE_COMPLIANCE_CHECK", "intune_compliance_check", Kind::Text),
    ("INTUNE_RETURN_BEFORE_NOTIFICATION", "intune_return_before_notification", Kind::Bool),
    // scepd's own: the per-answer timeout of the three hops.
    ("INTUNE_API_TIMEOUT", "intune_api_timeout", Kind::Text),
    ("RENEWAL_WINDOW_DAYS", "renewal_window_days", Kind::Int),
];

/// The `CERTCTL_*` variables of this process, sorted by name.
pub fn from_process() -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .filter(|(k, _)| k.starts_with(PREFIX))
        .collect();
    v.sort();
    v
}

/// What [`apply`] changed: which TOML key came from which variable.
#[derive(Clone, Debug, Default)]
pub struct Applied {
    /// (TOML key as named in errors, variable), e.g.
    /// (`profile[corp].ra_cert`, `CERTCTL_SCEP_PROFILE_CORP_RA_CERT_PATH`).
    origins: Vec<(String, String)>,
    /// Whether `CERTCTL_SCEP_PROFILES` defined profiles.
    pub defines_profiles: bool,
}

impl Applied {
    /// Rewrites an error about a key that came from a variable so it names the
    /// variable first: `VAR (profile[corp].key): why`.
    pub fn annotate(&self, e: ConfigError) -> ConfigError {
        for (key, var) in &self.origins {
            let Some(rest) = e.0.strip_prefix(key.as_str()) else { continue };
            if rest.starts_with(':') {
                return ConfigError(format!("{var} ({key}){rest}"));
            }
            // A sub-key of an entry from a variable: `api_key[0].key: why`.
            if rest.starts_with('.')
                && let Some((sub, why)) = rest.split_once(':')
            {
                return ConfigError(format!("{var} ({key}{sub}):{why}"));
            }
        }
        e
    }

    /// The variable that set `key`, if any.
    pub fn origin(&self, key: &str) -> Option<&str> {
        self.origins.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// Applies `vars` (name, value) on top of `file`.
///
/// # Errors
/// A [`ConfigError`] naming the variable and why.
pub fn apply(file: &mut ConfigFile, vars: &[(String, String)]) -> Result<Applied, ConfigError> {
    let mut applied = Applied::default();
    let get = |name: &str| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());

    if let Some(v) = get(ENABLED)
        && !parse_bool(ENABLED, v)?
    {
        return Err(ConfigError(format!(
            "{ENABLED}: is false, but scepd only serves SCEP and would serve nothing; remove it or set it to true"
        )));
    }

    let mut names: Vec<String> = Vec::new();
    if let Some(list) = get(PROFILES) {
        for raw in list.split(',') {
            let name = raw.trim();
            if !is_valid_name(name) {
                return Err(ConfigError(format!(
                    "{PROFILES}: {name:?} is not a valid profile name (1 to 63 of a-z, 0-9, '-'; lower case)"
                )));
            }
            if names.iter().any(|n| n == name) {
                return Err(ConfigError(format!("{PROFILES}: {name:?} is listed twice")));
            }
            names.push(name.to_string());
        }
        applied.defines_profiles = true;
    }

    // The profiles a per-profile variable may name: those listed, and those
    // the file defines (a name the file gets wrong is refused later, naming
    // the file's key).
    let in_file: Vec<String> = file
        .profiles
        .iter()
        .filter_map(|p| p.name.clone())
        .filter(|n| is_valid_name(n) && !names.contains(n))
        .collect();
    let known = ProfileNames { listed: &names, in_file: &in_file };

    for (var, value) in vars {
        if var == ENABLED || var == PROFILES || var == API_KEYS {
            continue;
        }
        if var == PUBLIC_URL {
            // Validated with the rest of [server]; the error names the key.
            file.server.public_url = Some(value.clone());
            applied.origins.push(("server.public_url".to_string(), var.clone()));
            continue;
        }
        if var == DATABASE_URL {
            // Takes precedence over the file's [store] url; validated with [store].
            file.store.url = Some(value.clone());
            applied.origins.push(("store.url".to_string(), var.clone()));
            continue;
        }
        if var == OCSP_SIGNER {
            file.server.ocsp_signer = Some(value.clone());
            applied.origins.push(("server.ocsp_signer".to_string(), var.clone()));
            continue;
        }
        let Some(rest) = var.strip_prefix(PROFILE_PREFIX) else {
            if var.starts_with("CERTCTL_SCEP_") {
                return Err(ConfigError(format!("{var}: unknown variable (a typo?)")));
            }
            tracing::info!(variable = %var, "ignoring a certctl variable scepd has no use for");
            continue;
        };
        let (name, suffix, key, kind) = split_profile_var(var, rest, &known)?;
        let index = match file.profiles.iter().position(|p| p.name.as_deref() == Some(name)) {
            Some(i) => i,
            None => {
                file.profiles.push(ProfileSection { name: Some(name.to_string()), ..ProfileSection::default() });
                file.profiles.len() - 1
            }
        };
        let section = &mut file.profiles[index];
        set(section, key, kind, var, value)?;
        let toml_key = if suffix == "PROFILE_ID" { "certificate_profile" } else { key };
        applied.origins.push((format!("profile[{name}].{toml_key}"), var.clone()));
    }

    // Listed profiles with no variable of their own still exist (and fail on
    // their missing required keys, naming them).
    for name in &names {
        if !file.profiles.iter().any(|p| p.name.as_deref() == Some(name)) {
            file.profiles.push(ProfileSection { name: Some(name.clone()), ..ProfileSection::default() });
        }
    }

    if let Some(list) = get(API_KEYS) {
        file.api_keys = parse_api_keys(list)?;
        for i in 0..file.api_keys.len() {
            applied.origins.push((format!("api_key[{i}]"), format!("{API_KEYS} (entry {})", i + 1)));
        }
    }
    Ok(applied)
}

/// The profile names a per-profile variable may name.
struct ProfileNames<'a> {
    /// Listed in `CERTCTL_SCEP_PROFILES`.
    listed: &'a [String],
    /// Defined by the configuration file and not listed.
    in_file: &'a [String],
}

/// Splits `CERTCTL_SCEP_PROFILE_<NAME>_<SUFFIX>` into the profile name
/// (listed, or defined by the file) and the key it sets.
fn split_profile_var<'n>(
    var: &str,
    rest: &str,
    names: &ProfileNames<'n>,
) -> Result<(&'n str, &'static str, &'static str, Kind), ConfigError> {
    // Longest name first, so `IOT` does not capture `IOT-2`'s variables.
    let mut by_len: Vec<&'n String> = names.listed.iter().chain(names.in_file).collect();
    by_len.sort_by_key(|n| std::cmp::Reverse(n.len()));
    for name in by_len {
        let upper = name.to_ascii_uppercase();
        if let Some(suffix) = rest.strip_prefix(upper.as_str()).and_then(|s| s.strip_prefix('_')) {
            return match PROFILE_KEYS.iter().find(|(s, _, _)| *s == suffix) {
                Some(&(s, key, kind)) => Ok((name.as_str(), s, key, kind)),
                None => Err(ConfigError(format!(
                    "{var}: unknown setting {suffix:?} for profile {name:?} (known: {})",
                    PROFILE_KEYS.iter().map(|(s, _, _)| *s).collect::<Vec<_>>().join(", ")
                ))),
            };
        }
    }
    let list = |n: &[String]| if n.is_empty() { "none".to_string() } else { n.join(",") };
    Err(ConfigError(format!(
        "{var}: names a profile that {PROFILES} does not list and the configuration file does not define \
         (listed: {}; in the file: {}); add the profile to {PROFILES}, or a [[profile]] with that name to the file",
        list(names.listed),
        list(names.in_file)
    )))
}

fn set(section: &mut ProfileSection, key: &str, kind: Kind, var: &str, value: &str) -> Result<(), ConfigError> {
    let text = || value.to_string();
    let path = || -> Result<PathBuf, ConfigError> {
        if value.is_empty() {
            return Err(ConfigError(format!("{var}: must not be empty")));
        }
        Ok(PathBuf::from(value))
    };
    match (key, kind) {
        ("issuer", _) => {
            section.issuer = Some(text());
        }
        ("certificate_profile", _) => {
            // certctl's CertificateProfile id. scepd keeps the crypto policy in the
            // profile itself; the id is accepted and must name the profile's own policy.
            if value.is_empty() {
                return Err(ConfigError(format!("{var}: must not be empty")));
            }
            tracing::info!(variable = %var, value, "certificate profile id noted; scepd applies the [[profile]]'s own crypto policy keys");
        }
        ("challenge_password", _) => section.challenge_password = Some(text()),
        ("challenge_mode", _) => section.challenge_mode = Some(text()),
        ("ra_cert", _) => section.ra_cert = Some(path()?),
        ("ra_key", _) => section.ra_key = Some(path()?),
        ("ra_encryption_cert", _) => section.ra_encryption_cert = Some(path()?),
        ("ra_encryption_key", _) => section.ra_encryption_key = Some(path()?),
        ("reply_signature", _) => section.reply_signature = Some(text()),
        ("trust_requested_sid", _) => section.trust_requested_sid = Some(parse_bool(var, value)?),
        ("url_aliases", _) => {
            section.url_aliases =
                Some(value.split(',').map(|a| a.trim().to_string()).filter(|a| !a.is_empty()).collect());
        }
        ("mtls_enabled", _) => section.mtls_enabled = Some(parse_bool(var, value)?),
        ("mtls_client_ca_trust_bundle_path", _) => section.mtls_client_ca_trust_bundle_path = Some(path()?),
        ("intune_enabled", _) => section.intune_enabled = Some(parse_bool(var, value)?),
        ("intune_connector_cert_path", _) => section.intune_connector_cert_path = Some(path()?),
        ("intune_audience", _) => section.intune_audience = Some(text()),
        ("intune_challenge_validity", _) => section.intune_challenge_validity = Some(duration_text(var, value)?),
        ("intune_clock_skew_tolerance", _) => section.intune_clock_skew_tolerance = Some(duration_text(var, value)?),
        ("intune_per_device_rate_limit_24h", Kind::Int) => {
            section.intune_per_device_rate_limit_24h = Some(value.trim().parse::<u32>().map_err(|_| {
                ConfigError(format!("{var}: {value:?} is not a whole number (e.g. 3; 0 disables the limit)"))
            })?);
        }
        ("intune_replay_capacity", Kind::Int) => section.intune_replay_capacity = Some(whole_number(var, value)?),
        ("intune_rate_limit_devices", Kind::Int) => {
            section.intune_rate_limit_devices = Some(whole_number(var, value)?);
        }
        ("intune_mode", _) => section.intune_mode = Some(text()),
        ("intune_tenant_id", _) => section.intune_tenant_id = Some(text()),
        ("intune_client_id", _) => section.intune_client_id = Some(text()),
        ("intune_client_secret_path", _) => section.intune_client_secret_path = Some(path()?),
        ("intune_client_cert_path", _) => section.intune_client_cert_path = Some(path()?),
        ("intune_client_key_path", _) => section.intune_client_key_path = Some(path()?),
        ("intune_authority_url", _) => section.intune_authority_url = Some(text()),
        ("intune_graph_url", _) => section.intune_graph_url = Some(text()),
        ("intune_resource_url", _) => section.intune_resource_url = Some(text()),
        ("intune_api_ca_bundle_path", _) => section.intune_api_ca_bundle_path = Some(path()?),
        ("intune_revocation_poll_interval", _) => section.intune_revocation_poll_interval = Some(text()),
        ("intune_compliance_check", _) => section.intune_compliance_check = Some(text()),
        ("intune_api_timeout", _) => section.intune_api_timeout = Some(duration_text(var, value)?),
        ("intune_return_before_notification", _) => {
            section.intune_return_before_notification = Some(parse_bool(var, value)?);
        }
        ("intune_renewal_by_certificate", _) => {
            section.intune_renewal_by_certificate = Some(parse_bool(var, value)?);
        }
        ("renewal_window_days", Kind::Int) => section.renewal_window_days = Some(whole_number(var, value)?),
        _ => return Err(ConfigError(format!("{var}: internal error: no mapping for key {key}"))),
    }
    Ok(())
}

/// A whole number (its range is checked with the key it sets).
fn whole_number(var: &str, value: &str) -> Result<i64, ConfigError> {
    value.trim().parse::<i64>().map_err(|_| ConfigError(format!("{var}: {value:?} is not a whole number")))
}

/// Go's `strconv.ParseBool`.
///
/// # Errors
/// Naming `var` when `value` is not one of Go's boolean spellings.
pub fn parse_bool(var: &str, value: &str) -> Result<bool, ConfigError> {
    match value {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        other => Err(ConfigError(format!("{var}: {other:?} is not a boolean (true or false)"))),
    }
}

/// Checks a Go-style duration (`60m`, `90s`, `1h30m`) and returns it unchanged.
fn duration_text(var: &str, value: &str) -> Result<String, ConfigError> {
    parse_duration(value)
        .map(|_| value.to_string())
        .ok_or_else(|| ConfigError(format!("{var}: {value:?} is not a duration (e.g. 60m, 90s, 1h30m)")))
}

/// Parses a Go-style duration of whole `h`, `m`, `s` units into seconds.
pub fn parse_duration(value: &str) -> Option<i64> {
    let mut total: i64 = 0;
    let mut digits = String::new();
    let mut any = false;
    for c in value.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return None,
        };
        let n: i64 = digits.parse().ok()?;
        digits.clear();
        total = total.checked_add(n.checked_mul(unit)?)?;
        any = true;
    }
    (any && digits.is_empty()).then_some(total)
}

/// `name:key[:admin],...`
fn parse_api_keys(list: &str) -> Result<Vec<ApiKeySection>, ConfigError> {
    let mut out = Vec::new();
    for (i, entry) in list.split(',').enumerate() {
        let entry = entry.trim();
        let bad = |why: &str| ConfigError(format!("{API_KEYS}: entry {}: {why}", i + 1));
        let (name, rest) = entry.split_once(':').ok_or_else(|| bad("expected name:key or name:key:admin"))?;
        // A third field is a role, exactly as `[[api_key]] role` spells it; it is
        // never taken as part of the key (`ops:KEY:Admin` would otherwise make a
        // reader whose key ends in ":Admin"). The field is not quoted: it might be
        // key material.
        let (key, role) = match rest.split_once(':') {
            None => (rest, "reader"),
            Some((key, "admin")) => (key, "admin"),
            Some((key, "reader")) => (key, "reader"),
            Some(_) => {
                return Err(bad("the field after the key must be the role \"admin\" or \"reader\" (lower case); \
                     a key cannot contain ':' here (use [[api_key]] in the configuration file)"));
            }
        };
        if name.is_empty() || key.is_empty() {
            return Err(bad("expected name:key or name:key:admin (name and key must not be empty)"));
        }
        out.push(ApiKeySection { name: Some(name.into()), key: Some(key.into()), role: Some(role.into()) });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn vars(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(k, v)| ((*k).to_string(), (*v).to_string())).collect()
    }

    #[test]
    fn the_spec_example_maps_onto_profiles() {
        let mut file = ConfigFile::default();
        let applied = apply(
            &mut file,
            &vars(&[
                ("CERTCTL_SCEP_ENABLED", "true"),
                ("CERTCTL_SCEP_PROFILES", "corp,iot"),
                ("CERTCTL_SCEP_PROFILE_CORP_ISSUER_ID", "iss-local"),
                ("CERTCTL_SCEP_PROFILE_CORP_CHALLENGE_PASSWORD", "pw"),
                ("CERTCTL_SCEP_PROFILE_CORP_RA_CERT_PATH", "/etc/certctl/ra-corp.pem"),
                ("CERTCTL_SCEP_PROFILE_CORP_RA_KEY_PATH", "/etc/certctl/ra-corp.key"),
                ("CERTCTL_SCEP_PROFILE_CORP_MTLS_ENABLED", "True"),
                ("CERTCTL_SCEP_PROFILE_CORP_MTLS_CLIENT_CA_TRUST_BUNDLE_PATH", "/b.pem"),
                ("CERTCTL_SCEP_PROFILE_CORP_INTUNE_ENABLED", "1"),
                ("CERTCTL_SCEP_PROFILE_CORP_INTUNE_CONNECTOR_CERT_PATH", "/i.pem"),
                ("CERTCTL_SCEP_PROFILE_CORP_INTUNE_AUDIENCE", "https://x/scep/corp"),
                ("CERTCTL_SCEP_PROFILE_CORP_INTUNE_CHALLENGE_VALIDITY", "60m"),
                ("CERTCTL_SCEP_PROFILE_CORP_INTUNE_CLOCK_SKEW_TOLERANCE", "60s"),
                ("CERTCTL_SCEP_PROFILE_CORP_INTUNE_PER_DEVICE_RATE_LIMIT_24H", "3"),
                ("CERTCTL_SCEP_PROFILE_CORP_INTUNE_REPLAY_CAPACITY", "250000"),
                ("CERTCTL_SCEP_PROFILE_CORP_INTUNE_RATE_LIMIT_DEVICES", " 300000 "),
                ("CERTCTL_SCEP_PROFILE_IOT_CHALLENGE_PASSWORD", "iot-pw"),
                ("CERTCTL_API_KEYS_NAMED", "ops:k1:admin,grafana:k2"),
                ("CERTCTL_SERVER_PORT", "8443"),
            ]),
        )
        .unwrap();
        assert!(applied.defines_profiles);
        let corp = &file.profiles[0];
        assert_eq!(corp.name.as_deref(), Some("corp"));
        assert_eq!(corp.issuer.as_deref(), Some("iss-local"));
        assert_eq!(corp.challenge_password.as_deref(), Some("pw"));
        assert_eq!(corp.ra_cert.as_deref(), Some(Path::new("/etc/certctl/ra-corp.pem")));
        assert_eq!(corp.ra_key.as_deref(), Some(Path::new("/etc/certctl/ra-corp.key")));
        assert_eq!(corp.mtls_enabled, Some(true));
        assert_eq!(corp.mtls_client_ca_trust_bundle_path.as_deref(), Some(Path::new("/b.pem")));
        assert_eq!(corp.intune_enabled, Some(true));
        assert_eq!(corp.intune_connector_cert_path.as_deref(), Some(Path::new("/i.pem")));
        assert_eq!(corp.intune_audience.as_deref(), Some("https://x/scep/corp"));
        assert_eq!(corp.intune_challenge_validity.as_deref(), Some("60m"));
        assert_eq!(corp.intune_clock_skew_tolerance.as_deref(), Some("60s"));
        assert_eq!(corp.intune_per_device_rate_limit_24h, Some(3));
        assert_eq!((corp.intune_replay_capacity, corp.intune_rate_limit_devices), (Some(250_000), Some(300_000)));
        assert_eq!(file.profiles[1].challenge_password.as_deref(), Some("iot-pw"));
        assert_eq!(file.api_keys.len(), 2);
        assert_eq!(file.api_keys[0].role.as_deref(), Some("admin"));
        assert_eq!(file.api_keys[1].role.as_deref(), Some("reader"));
        assert_eq!(applied.origin("profile[corp].ra_cert"), Some("CERTCTL_SCEP_PROFILE_CORP_RA_CERT_PATH"));
        let e = applied.annotate(ConfigError("profile[corp].ra_cert: cannot read".into()));
        assert_eq!(e.0, "CERTCTL_SCEP_PROFILE_CORP_RA_CERT_PATH (profile[corp].ra_cert): cannot read");
        // Not from a variable: unchanged.
        let e = applied.annotate(ConfigError("profile[corp].ciphers: x".into()));
        assert_eq!(e.0, "profile[corp].ciphers: x");
        let e = applied.annotate(ConfigError("api_key[1].key: too short".into()));
        assert_eq!(e.0, "CERTCTL_API_KEYS_NAMED (entry 2) (api_key[1].key): too short");
    }

    /// Every per-profile variable of [`PROFILE_KEYS`] sets its key: two
    /// documented variables once stopped the start with "no mapping".
    #[test]
    fn every_profile_variable_maps_onto_its_key() {
        for (suffix, key, kind) in PROFILE_KEYS {
            let value = match kind {
                Kind::Bool => "true",
                Kind::Int => "30",
                Kind::Path => "/p.pem",
                Kind::Text => match *key {
                    "intune_challenge_validity" | "intune_clock_skew_tolerance" | "intune_api_timeout" => "60s",
                    "url_aliases" => "/a",
                    _ => "x",
                },
            };
            let var = format!("CERTCTL_SCEP_PROFILE_CORP_{suffix}");
            let mut file = ConfigFile::default();
            let applied = apply(&mut file, &vars(&[("CERTCTL_SCEP_PROFILES", "corp"), (&var, value)]));
            assert!(applied.is_ok(), "{var}={value}: {:?}", applied.err());
        }
    }

    #[test]
    fn challenge_mode_comes_from_its_variable_and_a_bad_value_names_it() {
        let mut file = super::super::parse("", Path::new("t.toml")).unwrap();
        let applied = apply(
            &mut file,
            &vars(&[("CERTCTL_SCEP_PROFILES", "corp"), ("CERTCTL_SCEP_PROFILE_CORP_CHALLENGE_MODE", "one-time")]),
        )
        .unwrap();
        assert_eq!(file.profiles[0].challenge_mode.as_deref(), Some("one-time"));
        assert!(file.profiles[0].validate(0, None).is_ok(), "one-time needs no challenge password");
        file.profiles[0].challenge_mode = Some("once".into());
        let e = applied.annotate(file.profiles[0].validate(0, None).unwrap_err());
        assert!(e.0.starts_with("CERTCTL_SCEP_PROFILE_CORP_CHALLENGE_MODE (profile[corp].challenge_mode):"), "{e}");
    }

    #[test]
    fn env_overrides_the_file_key_by_key() {
        let mut file = super::super::parse(
            "[[profile]]\nname = \"corp\"\nchallenge_password = \"from-file\"\nvalidity_days = 30\n",
            Path::new("t.toml"),
        )
        .unwrap();
        apply(
            &mut file,
            &vars(&[("CERTCTL_SCEP_PROFILES", "corp"), ("CERTCTL_SCEP_PROFILE_CORP_CHALLENGE_PASSWORD", "from-env")]),
        )
        .unwrap();
        assert_eq!(file.profiles.len(), 1);
        assert_eq!(file.profiles[0].challenge_password.as_deref(), Some("from-env"));
        assert_eq!(file.profiles[0].validity_days, Some(30), "keys the environment does not set stay");
    }

    /// The probe's report: with a file defining `corp`,
    /// `CERTCTL_SCEP_PROFILE_CORP_CHALLENGE_PASSWORD` alone was refused
    /// ("names a profile that CERTCTL_SCEP_PROFILES does not list (listed:
    /// none)"), though variables override the file key by key. A profile the
    /// file defines need not be listed; one neither listed nor defined is
    /// still refused, the error saying both and the fix.
    #[test]
    fn a_profile_variable_overrides_a_profile_the_file_defines_without_listing_it() {
        let text = "[[profile]]\nname = \"corp\"\nchallenge_password = \"from-file\"\nvalidity_days = 30\n\
                    [[profile]]\nname = \"iot\"\nchallenge_password = \"iot-file\"\n";
        let mut file = super::super::parse(text, Path::new("t.toml")).unwrap();
        let applied = apply(&mut file, &vars(&[("CERTCTL_SCEP_PROFILE_CORP_CHALLENGE_PASSWORD", "from-env")])).unwrap();
        assert!(!applied.defines_profiles);
        assert_eq!(file.profiles.len(), 2, "no profile added or dropped");
        assert_eq!(file.profiles[0].challenge_password.as_deref(), Some("from-env"));
        assert_eq!(file.profiles[0].validity_days, Some(30), "keys the environment does not set stay");
        assert_eq!(file.profiles[1].challenge_password.as_deref(), Some("iot-file"));
        assert_eq!(
            applied.origin("profile[corp].challenge_password"),
            Some("CERTCTL_SCEP_PROFILE_CORP_CHALLENGE_PASSWORD")
        );

        // Listed and file-defined profiles together, the longest name first as for listed ones.
        let mut file = super::super::parse(text, Path::new("t.toml")).unwrap();
        apply(
            &mut file,
            &vars(&[
                ("CERTCTL_SCEP_PROFILES", "iot-2"),
                ("CERTCTL_SCEP_PROFILE_IOT-2_CHALLENGE_PASSWORD", "b"),
                ("CERTCTL_SCEP_PROFILE_IOT_CHALLENGE_PASSWORD", "a"),
            ]),
        )
        .unwrap();
        let pw =
            |n: &str| file.profiles.iter().find(|p| p.name.as_deref() == Some(n)).unwrap().challenge_password.clone();
        assert_eq!((pw("iot").as_deref(), pw("iot-2").as_deref()), (Some("a"), Some("b")));

        let mut file = super::super::parse(text, Path::new("t.toml")).unwrap();
        let e = apply(&mut file, &vars(&[("CERTCTL_SCEP_PROFILE_LAB_CHALLENGE_PASSWORD", "x")])).unwrap_err();
        assert!(
            e.0.starts_with(
                "CERTCTL_SCEP_PROFILE_LAB_CHALLENGE_PASSWORD: names a profile that CERTCTL_SCEP_PROFILES does not \
                 list and the configuration file does not define (listed: none; in the file: corp,iot)"
            ),
            "{e}"
        );
    }

    #[test]
    fn hyphenated_names_do_not_capture_each_other() {
        let mut file = ConfigFile::default();
        apply(
            &mut file,
            &vars(&[
                ("CERTCTL_SCEP_PROFILES", "iot,iot-2"),
                ("CERTCTL_SCEP_PROFILE_IOT-2_CHALLENGE_PASSWORD", "b"),
                ("CERTCTL_SCEP_PROFILE_IOT_CHALLENGE_PASSWORD", "a"),
            ]),
        )
        .unwrap();
        let pw =
            |n: &str| file.profiles.iter().find(|p| p.name.as_deref() == Some(n)).unwrap().challenge_password.clone();
        assert_eq!(pw("iot").as_deref(), Some("a"));
        assert_eq!(pw("iot-2").as_deref(), Some("b"));
    }

    /// scepd's own per-profile variables: the NDES RA pair, the reply form,
    /// SID trust and URL aliases; an invalid value names the variable.
    #[test]
    fn ndes_variables_map_onto_their_keys() {
        let mut file = ConfigFile::default();
        let applied = apply(
            &mut file,
            &vars(&[
                ("CERTCTL_SCEP_PROFILES", "corp"),
                ("CERTCTL_SCEP_PROFILE_CORP_RA_ENCRYPTION_CERT_PATH", "/etc/scepd/enc.pem"),
                ("CERTCTL_SCEP_PROFILE_CORP_RA_ENCRYPTION_KEY_PATH", "/etc/scepd/enc.key"),
                ("CERTCTL_SCEP_PROFILE_CORP_REPLY_SIGNATURE", "mirror"),
                ("CERTCTL_SCEP_PROFILE_CORP_TRUST_REQUESTED_SID", "true"),
                ("CERTCTL_SCEP_PROFILE_CORP_URL_ALIASES", "/certsrv/mscep/mscep.dll, /enroll"),
            ]),
        )
        .unwrap();
        let p = &file.profiles[0];
        assert_eq!(p.ra_encryption_cert.as_deref(), Some(Path::new("/etc/scepd/enc.pem")));
        assert_eq!(p.ra_encryption_key.as_deref(), Some(Path::new("/etc/scepd/enc.key")));
        assert_eq!(p.reply_signature.as_deref(), Some("mirror"));
        assert_eq!(p.trust_requested_sid, Some(true));
        assert_eq!(p.url_aliases, Some(vec!["/certsrv/mscep/mscep.dll".to_string(), "/enroll".to_string()]));
        let e = applied.annotate(
            ProfileSection {
                url_aliases: Some(vec!["/scep/x".into()]),
                challenge_password: Some("pw".into()),
                ..p.clone()
            }
            .validate(0, None)
            .unwrap_err(),
        );
        assert!(e.0.starts_with("CERTCTL_SCEP_PROFILE_CORP_URL_ALIASES (profile[corp].url_aliases): "), "{e}");
        let mut file = ConfigFile::default();
        let e = apply(
            &mut file,
            &vars(&[("CERTCTL_SCEP_PROFILES", "corp"), ("CERTCTL_SCEP_PROFILE_CORP_TRUST_REQUESTED_SID", "yes")]),
        )
        .unwrap_err();
        assert!(e.0.starts_with("CERTCTL_SCEP_PROFILE_CORP_TRUST_REQUESTED_SID: "), "{e}");
    }

    #[test]
    fn intune_api_variables_map_onto_their_keys() {
        let mut file = ConfigFile::default();
        apply(
            &mut file,
            &vars(&[
                ("CERTCTL_SCEP_PROFILES", "corp"),
                ("CERTCTL_SCEP_PROFILE_CORP_INTUNE_ENABLED", "true"),
                ("CERTCTL_SCEP_PROFILE_CORP_INTUNE_MODE", "api"),
                ("CERTCTL_SCEP_PROFILE_CORP_INTUNE_TENANT_ID", "contoso.onmicrosoft.com"),
                ("CERTCTL_SCEP_PROFILE_CORP_INTUNE_CLIENT_ID", "app-1"),
                ("CERTCTL_SCEP_PROFILE_CORP_INTUNE_CLIENT_SECRET_PATH", "/etc/scepd/secret"),
                ("CERTCTL_SCEP_PROFILE_CORP_INTUNE_AUTHORITY_URL", "https://login.microsoftonline.us/"),
                ("CERTCTL_SCEP_PROFILE_CORP_INTUNE_GRAPH_URL", "https://graph.microsoft.us"),
                ("CERTCTL_SCEP_PROFILE_CORP_INTUNE_RESOURCE_URL", "https://api.manage.microsoft.us/"),
                ("CERTCTL_SCEP_PROFILE_CORP_INTUNE_API_CA_BUNDLE_PATH", "/etc/scepd/roots.pem"),
                ("CERTCTL_SCEP_PROFILE_CORP_INTUNE_REVOCATION_POLL_INTERVAL", "0"),
                ("CERTCTL_SCEP_PROFILE_CORP_INTUNE_COMPLIANCE_CHECK", "off"),
                ("CERTCTL_SCEP_PROFILE_CORP_INTUNE_RETURN_BEFORE_NOTIFICATION", "true"),
            ]),
        )
        .unwrap();
        let p = &file.profiles[0];
        assert_eq!(p.intune_client_secret_path.as_deref(), Some(Path::new("/etc/scepd/secret")));
        assert_eq!(p.intune_api_ca_bundle_path.as_deref(), Some(Path::new("/etc/scepd/roots.pem")));
        let s = p.validate(0, None).unwrap();
        assert!(matches!(s.challenge, scep_engine::config::ChallengePolicy::IntuneApi));
        assert!(s.intune.is_none(), "no Connector setup in API mode");
        let api = s.intune_api.unwrap();
        assert_eq!((api.tenant_id.as_str(), api.client_id.as_str()), ("contoso.onmicrosoft.com", "app-1"));
        assert_eq!(api.graph_url, "https://graph.microsoft.us/", "a trailing slash is added");
        assert_eq!(api.resource_url, "https://api.manage.microsoft.us/");
        assert_eq!((api.revocation_poll_interval_secs, api.return_before_notification), (0, true));
        let mut file = ConfigFile::default();
        let e = apply(
            &mut file,
            &vars(&[
                ("CERTCTL_SCEP_PROFILES", "corp"),
                ("CERTCTL_SCEP_PROFILE_CORP_INTUNE_RETURN_BEFORE_NOTIFICATION", "maybe"),
            ]),
        )
        .unwrap_err();
        assert!(e.0.starts_with("CERTCTL_SCEP_PROFILE_CORP_INTUNE_RETURN_BEFORE_NOTIFICATION: "), "{e}");
    }

    /// One case per kind of invalid variable; each error names the variable.
    #[test]
    fn invalid_variables_are_named() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("CERTCTL_SCEP_ENABLED", "yes")], "CERTCTL_SCEP_ENABLED"),
            (&[("CERTCTL_SCEP_ENABLED", "false")], "CERTCTL_SCEP_ENABLED"),
            (&[("CERTCTL_SCEP_PROFILES", "Corp")], "CERTCTL_SCEP_PROFILES"),
            (&[("CERTCTL_SCEP_PROFILES", "corp,,iot")], "CERTCTL_SCEP_PROFILES"),
            (&[("CERTCTL_SCEP_PROFILES", "corp,corp")], "CERTCTL_SCEP_PROFILES"),
            (&[("CERTCTL_SCEP_PROFILE_CORP_CHALLENGE_PASSWORD", "x")], "CERTCTL_SCEP_PROFILE_CORP_CHALLENGE_PASSWORD"),
            (
                &[("CERTCTL_SCEP_PROFILES", "corp"), ("CERTCTL_SCEP_PROFILE_CORP_CHALENGE_PASSWORD", "x")],
                "CERTCTL_SCEP_PROFILE_CORP_CHALENGE_PASSWORD",
            ),
            (
                &[("CERTCTL_SCEP_PROFILES", "corp"), ("CERTCTL_SCEP_PROFILE_CORP_MTLS_ENABLED", "on")],
                "CERTCTL_SCEP_PROFILE_CORP_MTLS_ENABLED",
            ),
            (
                &[
                    ("CERTCTL_SCEP_PROFILES", "corp"),
                    ("CERTCTL_SCEP_PROFILE_CORP_INTUNE_PER_DEVICE_RATE_LIMIT_24H", "x"),
                ],
                "CERTCTL_SCEP_PROFILE_CORP_INTUNE_PER_DEVICE_RATE_LIMIT_24H",
            ),
            (
                &[("CERTCTL_SCEP_PROFILES", "corp"), ("CERTCTL_SCEP_PROFILE_CORP_INTUNE_CHALLENGE_VALIDITY", "1 hour")],
                "CERTCTL_SCEP_PROFILE_CORP_INTUNE_CHALLENGE_VALIDITY",
            ),
            (
                &[("CERTCTL_SCEP_PROFILES", "corp"), ("CERTCTL_SCEP_PROFILE_CORP_RA_CERT_PATH", "")],
                "CERTCTL_SCEP_PROFILE_CORP_RA_CERT_PATH",
            ),
            (&[("CERTCTL_SCEP_DEFAULT", "corp")], "CERTCTL_SCEP_DEFAULT"),
            (&[("CERTCTL_API_KEYS_NAMED", "justakey")], "CERTCTL_API_KEYS_NAMED"),
            (&[("CERTCTL_API_KEYS_NAMED", "ops:")], "CERTCTL_API_KEYS_NAMED"),
        ];
        for (list, var) in cases {
            let e = apply(&mut ConfigFile::default(), &vars(list)).expect_err(var);
            assert!(e.0.starts_with(var), "{list:?}: {e} does not start with {var}");
        }
    }

    /// Issue 13 item 6b: a third field that is not exactly `admin` or `reader`
    /// was silently appended to the key of a reader.
    #[test]
    fn an_unknown_role_in_api_keys_named_is_refused_not_appended_to_the_key() {
        let key = "0123456789abcdefXYZ";
        for value in [
            format!("ops:{key}:Admin"),
            format!("ops:{key}:root"),
            format!("ops:{key}:"),
            format!("ops:{key}:admin:admin"),
            format!("good:{key}:admin,ops:{key}x:ADMIN"),
        ] {
            let e = apply(&mut ConfigFile::default(), &vars(&[("CERTCTL_API_KEYS_NAMED", &value)])).expect_err(&value);
            assert!(e.0.starts_with("CERTCTL_API_KEYS_NAMED: entry "), "{value}: {e}");
            assert!(e.0.contains("must be the role \"admin\" or \"reader\""), "{value}: {e}");
            assert!(!e.0.contains(key), "the error quotes the key: {e}");
        }
        let mut file = ConfigFile::default();
        apply(&mut file, &vars(&[("CERTCTL_API_KEYS_NAMED", &format!("a:{key}:admin,b:{key}b:reader,c:{key}c"))]))
            .unwrap();
        let got: Vec<(&str, &str)> =
            file.api_keys.iter().map(|k| (k.key.as_deref().unwrap(), k.role.as_deref().unwrap())).collect();
        let (b, c) = (format!("{key}b"), format!("{key}c"));
        assert_eq!(got, [(key, "admin"), (b.as_str(), "reader"), (c.as_str(), "reader")]);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("60m"), Some(3600));
        assert_eq!(parse_duration("60s"), Some(60));
        assert_eq!(parse_duration("1h30m"), Some(5400));
        for bad in ["", "60", "m", "1.5h", "-1s", "1d"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }
}
