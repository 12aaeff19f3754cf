//! The `[store]` table: where the shared store lives (issue 18; see
//! `docs/high-availability.md`). Without `url`, SQLite in the data directory
//! (one node); with a `postgres://` URL (or `CERTCTL_DATABASE_URL`, which
//! takes precedence), PostgreSQL shared by every node.
//!
//! ```toml
//! [store]
//! url = "postgres://scepd@db.example:5432/scepd"
//! tls_ca_bundle = "/etc/scepd/db-ca.pem"   # verify the server (TLS required); relative to the config file
//! pool_size = 16                           # 1..=256
//! connect_timeout_secs = 5                 # 1..=60
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use scep_engine::config::ConfigError;
use scep_store::settings::{DEFAULT_CONNECT_TIMEOUT, DEFAULT_POOL_SIZE};
use scep_store::{Backend, PostgresSettings, StoreSettings};
use serde::Deserialize;

use super::{int_in, resolve};

/// The `[store]` table, as written.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    /// `url`: `postgres://...` or `postgresql://...`.
    pub url: Option<String>,
    /// `tls_ca_bundle`: PEM roots for the server's certificate.
    pub tls_ca_bundle: Option<PathBuf>,
    /// `pool_size`
    pub pool_size: Option<i64>,
    /// `connect_timeout_secs`
    pub connect_timeout_secs: Option<i64>,
}

impl StoreSection {
    /// Validates the `[store]` table.
    ///
    /// # Errors
    /// Naming `store.<key>`.
    pub fn validate(&self, base: Option<&Path>) -> Result<StoreSettings, ConfigError> {
        let Some(url) = &self.url else {
            if self.tls_ca_bundle.is_some() || self.pool_size.is_some() || self.connect_timeout_secs.is_some() {
                return Err(ConfigError(
                    "store: tls_ca_bundle, pool_size and connect_timeout_secs need store.url (PostgreSQL); \
                     without it the store is SQLite in the data directory"
                        .into(),
                ));
            }
            return Ok(StoreSettings::default());
        };
        let url = url.trim();
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(ConfigError(format!(
                "store.url: {:?} is not a PostgreSQL URL (postgres://user@host:port/database); \
                 leave it out for SQLite in the data directory",
                scep_store::settings::redact_url(url)
            )));
        }
        let tls_ca_bundle = match &self.tls_ca_bundle {
            Some(p) if p.as_os_str().is_empty() => {
                return Err(ConfigError("store.tls_ca_bundle: must not be empty".into()));
            }
            Some(p) => Some(resolve(base, p)),
            None => None,
        };
        let pool_size = int_in("store.pool_size", self.pool_size, 1, 256, DEFAULT_POOL_SIZE)?;
        let connect_timeout = Duration::from_secs(int_in(
            "store.connect_timeout_secs",
            self.connect_timeout_secs,
            1,
            60,
            DEFAULT_CONNECT_TIMEOUT.as_secs(),
        )?);
        Ok(StoreSettings {
            backend: Backend::Postgres(PostgresSettings {
                url: url.to_string(),
                tls_ca_bundle,
                pool_size,
                connect_timeout,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<StoreSettings, ConfigError> {
        let section: StoreSection = toml::from_str(text).unwrap();
        section.validate(Some(Path::new("/etc/scepd")))
    }

    #[test]
    fn no_url_is_sqlite_and_a_url_is_postgresql() {
        assert_eq!(parse("").unwrap(), StoreSettings::default());
        let pg = parse("url = \"postgres://u@db/scepd\"\ntls_ca_bundle = \"db-ca.pem\"\npool_size = 4").unwrap();
        let Backend::Postgres(pg) = pg.backend else { panic!("postgres expected") };
        assert_eq!(pg.tls_ca_bundle.as_deref(), Some(Path::new("/etc/scepd/db-ca.pem")));
        assert_eq!((pg.pool_size, pg.connect_timeout), (4, DEFAULT_CONNECT_TIMEOUT));
    }

    #[test]
    fn bad_values_name_the_key() {
        for (text, key) in [
            ("url = \"mysql://u:pw@db/x\"", "store.url"),
            ("url = \"postgres://db/x\"\npool_size = 0", "store.pool_size"),
            ("url = \"postgres://db/x\"\nconnect_timeout_secs = 600", "store.connect_timeout_secs"),
            ("pool_size = 4", "store:"),
            ("url = \"postgres://db/x\"\ntls_ca_bundle = \"\"", "store.tls_ca_bundle"),
        ] {
            let e = parse(text).expect_err(text);
            assert!(e.0.starts_with(key), "{text}: {e}");
            assert!(!e.0.contains("pw@"), "no password in {e}");
        }
    }
}
