//! `[pkcs11]`: how RA keys named by `pkcs11:` URIs (RFC 7512) reach their
//! token (`scep_issuers::pkcs11`).
//!
//! ```toml
//! [pkcs11]
//! module_path = "/usr/lib/softhsm/libsofthsm2.so"  # the PKCS#11 library, unless a URI has module-path=
//! pin_file = "/run/secrets/hsm-pin"                  # the user PIN (mode 0600), or:
//! # pin_env = "SCEPD_HSM_PIN"                        # a variable holding it (not both)
//! max_sessions = 8                                   # logged-in sessions per token; default 8
//! ca_key = "pkcs11:token=scepd;object=ca"            # the local CA's key in the token (ca.pem is made
//!                                                    #   self-signed by it when absent; no ca.key file)
//!
//! [[profile]]
//! ra_key = "pkcs11:token=scepd;object=ra-signing"    # a URI wherever an RA key file is accepted
//! ```
//!
//! The PIN is never written in the configuration: a URI's `pin-value` is
//! refused, `pin-source=<file>` in a URI overrides `pin_file`/`pin_env`.

use std::path::{Path, PathBuf};

use scep_engine::config::ConfigError;
use scep_issuers::pkcs11::{DEFAULT_MAX_SESSIONS, KeyUri, PinSource, Pkcs11Options};
use serde::Deserialize;

use super::{int_in, resolve};

/// The `[pkcs11]` table, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pkcs11Section {
    /// `module_path`
    pub module_path: Option<PathBuf>,
    /// `pin_file`
    pub pin_file: Option<PathBuf>,
    /// `pin_env`
    pub pin_env: Option<String>,
    /// `max_sessions`
    pub max_sessions: Option<i64>,
    /// `ca_key`: the local CA's key in a token (a `pkcs11:` URI).
    pub ca_key: Option<String>,
}

/// Validated `[pkcs11]` settings.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Pkcs11Settings {
    /// What keys are opened with.
    pub options: Pkcs11Options,
    /// The setting that gave the PIN (`pkcs11.pin_file` or
    /// `pkcs11.pin_env`), named when the token refuses it.
    pub pin_setting: Option<&'static str>,
    /// `ca_key`: the local CA's key in a token.
    pub ca_key: Option<KeyUri>,
}

impl Pkcs11Section {
    /// Validates the table; relative paths resolve against `base`.
    ///
    /// # Errors
    /// Naming `pkcs11.<key>`: both `pin_file` and `pin_env`, an empty
    /// variable name, `max_sessions` outside 1..=1024.
    pub fn validate(&self, base: Option<&Path>) -> Result<Pkcs11Settings, ConfigError> {
        let (pin, pin_setting) = match (&self.pin_file, &self.pin_env) {
            (Some(_), Some(_)) => {
                return Err(ConfigError("pkcs11.pin_env: give the PIN by pin_file or pin_env, not both".into()));
            }
            (Some(f), None) => (Some(PinSource::File(resolve(base, f))), Some("pkcs11.pin_file")),
            (None, Some(v)) if v.trim().is_empty() => {
                return Err(ConfigError("pkcs11.pin_env: names no variable".into()));
            }
            (None, Some(v)) => (Some(PinSource::Env(v.clone())), Some("pkcs11.pin_env")),
            (None, None) => (None, None),
        };
        let max_sessions = int_in("pkcs11.max_sessions", self.max_sessions, 1, 1024, DEFAULT_MAX_SESSIONS)?;
        let ca_key = self
            .ca_key
            .as_deref()
            .map(KeyUri::parse)
            .transpose()
            .map_err(|e| ConfigError(format!("pkcs11.ca_key: {e}")))?;
        Ok(Pkcs11Settings {
            options: Pkcs11Options {
                module_path: self.module_path.as_deref().map(|p| resolve(base, p)),
                pin,
                max_sessions,
            },
            pin_setting,
            ca_key,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(text: &str) -> Pkcs11Section {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn pin_file_resolves_and_pin_env_is_named() {
        let s = section("module_path = \"lib.so\"\npin_file = \"pin\"\nmax_sessions = 3")
            .validate(Some(Path::new("/etc/scepd")))
            .unwrap();
        assert_eq!(s.options.pin, Some(PinSource::File("/etc/scepd/pin".into())));
        assert_eq!(s.options.module_path.as_deref(), Some(Path::new("/etc/scepd/lib.so")));
        assert_eq!((s.options.max_sessions, s.pin_setting), (3, Some("pkcs11.pin_file")));
        let s = section("pin_env = \"HSM_PIN\"").validate(None).unwrap();
        assert_eq!(s.options.pin, Some(PinSource::Env("HSM_PIN".into())));
        assert_eq!((s.options.max_sessions, s.pin_setting), (DEFAULT_MAX_SESSIONS, Some("pkcs11.pin_env")));
    }

    #[test]
    fn contradictions_and_bad_values_name_the_key() {
        for (text, key) in [
            ("pin_file = \"p\"\npin_env = \"V\"", "pkcs11.pin_env"),
            ("pin_env = \" \"", "pkcs11.pin_env"),
            ("max_sessions = 0", "pkcs11.max_sessions"),
            ("ca_key = \"pkcs11:object=ca?pin-value=1\"", "pkcs11.ca_key"),
            ("ca_key = \"/etc/ca.key\"", "pkcs11.ca_key"),
        ] {
            let e = section(text).validate(None).unwrap_err();
            assert!(e.0.starts_with(key), "{text}: {e}");
        }
        assert!(toml::from_str::<Pkcs11Section>("pin = \"1234\"").is_err(), "no key holds a PIN");
    }
}
