//! The `[store]` table, validated (the service parses the TOML and the
//! `CERTCTL_DATABASE_URL` variable into these plain values).
//!
//! ```toml
//! [store]
//! url = "postgres://scepd@db.example:5432/scepd?sslmode=require"   # absent: SQLite in the data dir
//! tls_ca_bundle = "/etc/scepd/db-ca.pem"   # PEM roots that sign the server's certificate
//! pool_size = 16                           # 1..=256 connections per node
//! connect_timeout_secs = 5                 # 1..=60
//! ```

use std::path::PathBuf;
use std::time::Duration;

/// Default connections per node.
pub const DEFAULT_POOL_SIZE: usize = 16;
/// Default connect timeout (also how long a request waits for a free connection).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Which database holds the store.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Backend {
    /// `protection.sqlite` in the data directory (one node).
    #[default]
    Sqlite,
    /// A PostgreSQL database shared by every node.
    Postgres(PostgresSettings),
}

/// How to reach PostgreSQL.
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresSettings {
    /// `postgres://user:password@host:port/dbname?sslmode=...` (or the
    /// `key=value` form libpq accepts). The password is never logged.
    pub url: String,
    /// PEM file of the roots that sign the server's certificate. With it, TLS
    /// is used and verified (hostname included); `sslmode=disable` in the URL
    /// is then refused, and an absent `sslmode` means `require`. Without it,
    /// the connection is plain TCP (a URL asking for TLS is refused, naming
    /// this setting).
    pub tls_ca_bundle: Option<PathBuf>,
    /// Most connections this node opens.
    pub pool_size: usize,
    /// Connect timeout, and the longest a caller waits for a free connection.
    pub connect_timeout: Duration,
}

impl std::fmt::Debug for PostgresSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresSettings")
            .field("url", &redact_url(&self.url))
            .field("tls_ca_bundle", &self.tls_ca_bundle)
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

/// The validated `[store]` table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreSettings {
    /// Where the store lives.
    pub backend: Backend,
}

impl StoreSettings {
    /// A short description for logs and `check-config` (no password).
    pub fn describe(&self) -> String {
        match &self.backend {
            Backend::Sqlite => "SQLite (protection.sqlite in the data directory)".to_string(),
            Backend::Postgres(pg) => format!(
                "PostgreSQL {} (TLS {}, pool {})",
                redact_url(&pg.url),
                if pg.tls_ca_bundle.is_some() { "verified" } else { "off" },
                pg.pool_size
            ),
        }
    }
}

/// `url` with any password replaced by `***`.
pub fn redact_url(url: &str) -> String {
    // URL form: scheme://user:password@host...
    if let Some((scheme, rest)) = url.split_once("://") {
        let (authority, tail) = rest.split_once('/').map_or((rest, None), |(a, t)| (a, Some(t)));
        let authority = match authority.rsplit_once('@') {
            Some((userinfo, host)) => match userinfo.split_once(':') {
                Some((user, _)) => format!("{user}:***@{host}"),
                None => format!("{userinfo}@{host}"),
            },
            None => authority.to_string(),
        };
        let tail = tail.map(|t| {
            t.split('&')
                .map(|kv| if kv.starts_with("password=") { "password=***" } else { kv })
                .collect::<Vec<_>>()
                .join("&")
        });
        return match tail {
            Some(t) => format!("{scheme}://{authority}/{t}"),
            None => format!("{scheme}://{authority}"),
        };
    }
    // key=value form.
    url.split_whitespace()
        .map(|kv| if kv.starts_with("password=") { "password=***" } else { kv })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://u:secret@h:5432/db?sslmode=require"),
            "postgres://u:***@h:5432/db?sslmode=require"
        );
        assert_eq!(redact_url("postgres://h/db?user=u&password=secret"), "postgres://h/db?user=u&password=***");
        assert_eq!(redact_url("host=h password=secret dbname=d"), "host=h password=*** dbname=d");
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
    }
}
