//! Settings: what the operator wrote, parsed and validated into plain types.
//!
//! This folder is a leaf: it imports nothing else from the crate (only std,
//! serde, toml and plain value types of scep-engine / scep-issuers). It reads
//! the configuration file (TOML, this module), the `CERTCTL_*` environment
//! ([`env`](mod@env)) and the command-line start options ([`start`]); every
//! error names the key or variable. Turning settings into running parts is
//! `crate::wiring`'s job.
//!
//! | module | reads |
//! |---|---|
//! | this one | the file, the `[server]` table, the parsing helpers |
//! | [`profile`] | `[[profile]]` entries |
//! | [`audit`] | `[audit]` |
//! | [`store`] | `[store]` (SQLite or the shared PostgreSQL store) |
//! | [`api_keys`] | `[[api_key]]` |
//! | [`issuers`] | `[[issuer]]` |
//! | [`pkcs11`](mod@pkcs11) | `[pkcs11]` (RA keys in a PKCS#11 token) |
//!
//! ```toml
//! [server]
//! listen = "127.0.0.1:8080"          # default 127.0.0.1:8080 (loopback: exposing is a choice)
//! data_dir = "/var/lib/scepd"        # default ./scepd-data; relative paths are relative to this file
//! default_profile = "corp"           # served at /scep; default: the first [[profile]]
//! body_limit = 262144                # largest POST body in bytes; default 256 KiB
//! header_read_timeout_secs = 10      # default 10
//! body_read_timeout_secs = 30        # default 30
//! shutdown_grace_secs = 30           # in-flight requests get this long on SIGTERM; default 30
//! max_connections = 1024             # concurrent connections; default 1024
//! max_connections_per_client = 64    # per client address; default max_connections / 16 (at least 1)
//! max_connections_per_network = 256  # per IPv4 /24 or IPv6 /64; default: no network limit
//! write_timeout_secs = 30            # a write with no progress this long closes; default 30
//! h2_keep_alive_interval_secs = 20   # HTTP/2 PING after this long without frames; default 20
//! h2_keep_alive_timeout_secs = 20    # ... and close if unanswered this long; default 20
//! h2_max_concurrent_streams = 100    # per HTTP/2 connection; default 100
//! gui = true                         # the admin web GUI at /ui/scep (crate::operator::ui); default true
//! node_name = "scep-1"               # names this node in every audit event; default the hostname
//!
//! [server.tls]                       # optional; plain HTTP without it
//! cert = "tls/cert.pem"              # certificate chain PEM, leaf first
//! key = "tls/key.pem"                # private key PEM, mode 0600
//!
//! [audit]                            # see settings::audit
//! retention_days = 365
//!
//! [[api_key]]                        # see settings::api_keys
//! name = "ops"
//! key = "..."
//! role = "admin"
//! [[issuer]]                         # remote issuers by id: see settings::issuers, docs/issuers.md
//! id = "iss-bao"
//! type = "vault"
//!
//! [[profile]]                        # see settings::profile for every profile key
//! name = "corp"
//! challenge_password = "..."
//! ```
//!
//! Absent keys take the defaults above; an invalid value is always an error
//! naming the key and the reason. Unknown keys are errors too (a typo must not
//! silently fall back to a default).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use scep_engine::config::ConfigError;
use serde::Deserialize;

pub mod api_keys;
pub mod audit;
pub mod env;
pub mod issuers;
pub mod pkcs11;
pub mod profile;
pub mod start;
pub mod store;

use api_keys::ApiKeySection;
use audit::{AuditSection, AuditSettings};
use issuers::IssuerSection;
use profile::ProfileSection;
use store::StoreSection;

/// Default listen address: loopback only; serving the network is an explicit choice.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default data directory (relative to the working directory).
pub const DEFAULT_DATA_DIR: &str = "scepd-data";
/// Default largest accepted POST body: 256 KiB.
pub const DEFAULT_BODY_LIMIT: usize = 256 * 1024;
/// Default time allowed for a client to send the request headers.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time allowed for a client to send the request body.
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Default bound on in-flight requests at shutdown.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// Default limit on concurrent connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Default limit on concurrent HTTP/2 streams per connection.
pub const DEFAULT_H2_MAX_STREAMS: u32 = 100;
/// The default per-client connection limit is `max_connections` divided by this (at least 1).
pub const DEFAULT_PER_CLIENT_DIVISOR: usize = 16;
/// Default time a write may make no progress before the connection is closed.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default HTTP/2 keep-alive PING interval.
pub const DEFAULT_H2_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(20);
/// Default wait for an HTTP/2 keep-alive PING's acknowledgement.
pub const DEFAULT_H2_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// The whole configuration file, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// `[server]`
    #[serde(default)]
    pub server: ServerSection,
    /// `[[profile]]` entries.
    #[serde(default, rename = "profile")]
    pub profiles: Vec<ProfileSection>,
    /// `[audit]`
    #[serde(default)]
    pub audit: AuditSection,
    /// `[[api_key]]` entries (admin API).
    #[serde(default, rename = "api_key")]
    pub api_keys: Vec<ApiKeySection>,
    /// `[[issuer]]` entries (remote issuers, referenced by profiles by id).
    #[serde(default, rename = "issuer")]
    pub issuers: Vec<IssuerSection>,
    /// `[store]` (the shared store: SQLite or PostgreSQL).
    #[serde(default)]
    pub store: StoreSection,
    /// `[pkcs11]` (keys named by `pkcs11:` URIs).
    #[serde(default)]
    pub pkcs11: pkcs11::Pkcs11Section,
}

/// The `[server]` table, as written (every key optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    /// `listen`: socket address.
    pub listen: Option<String>,
    /// `data_dir`: where the local CA, RA and generated secrets live.
    pub data_dir: Option<PathBuf>,
    /// `default_profile`: the profile served at `/scep`.
    pub default_profile: Option<String>,
    /// `body_limit`: bytes.
    pub body_limit: Option<i64>,
    /// `header_read_timeout_secs`
    pub header_read_timeout_secs: Option<i64>,
    /// `body_read_timeout_secs`
    pub body_read_timeout_secs: Option<i64>,
    /// `shutdown_grace_secs`
    pub shutdown_grace_secs: Option<i64>,
    /// `max_connections`
    pub max_connections: Option<i64>,
    /// `max_connections_per_client`
    pub max_connections_per_client: Option<i64>,
    /// `max_connections_per_network`
    pub max_connections_per_network: Option<i64>,
    /// `write_timeout_secs`
    pub write_timeout_secs: Option<i64>,
    /// `h2_keep_alive_interval_secs`
    pub h2_keep_alive_interval_secs: Option<i64>,
    /// `h2_keep_alive_timeout_secs`
    pub h2_keep_alive_timeout_secs: Option<i64>,
    /// `h2_max_concurrent_streams`
    pub h2_max_concurrent_streams: Option<i64>,
    /// `gui`: serve the admin web GUI.
    pub gui: Option<bool>,
    /// `public_url`: the base URL relying parties reach scepd at.
    pub public_url: Option<String>,
    /// `ocsp_signer`: `"delegated"` (default) or `"ca"`.
    pub ocsp_signer: Option<String>,
    /// `node_name`: names this node in the audit events it writes.
    pub node_name: Option<String>,
    /// `[server.tls]`
    pub tls: Option<TlsSection>,
}

/// The `[server.tls]` table, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// `cert`: certificate chain PEM path.
    pub cert: Option<PathBuf>,
    /// `key`: private key PEM path.
    pub key: Option<PathBuf>,
}

/// TLS certificate and key files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsSettings {
    /// Certificate chain PEM, leaf first.
    pub cert: PathBuf,
    /// Private key PEM (must not be readable by group or others).
    pub key: PathBuf,
}

/// Validated server settings (not reloadable: a change needs a restart).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerSettings {
    /// Listen address.
    pub listen: SocketAddr,
    /// Data directory.
    pub data_dir: PathBuf,
    /// TLS, when configured.
    pub tls: Option<TlsSettings>,
    /// Largest accepted POST body in bytes.
    pub body_limit: usize,
    /// Time allowed for the request headers.
    pub header_read_timeout: Duration,
    /// Time allowed for the request body.
    pub body_read_timeout: Duration,
    /// Bound on in-flight requests at shutdown.
    pub shutdown_grace: Duration,
    /// Concurrent connection limit; beyond it a new connection is closed at
    /// accept (`scepd_connections_refused_total{reason="global"}`).
    pub max_connections: usize,
    /// Concurrent connections one client address may hold
    /// (`state::connections::ClientLimits`).
    pub max_connections_per_client: usize,
    /// Concurrent connections one IPv4 /24 or IPv6 /64 may hold; `None`: no network limit.
    pub max_connections_per_network: Option<usize>,
    /// A write that makes no progress this long closes the connection (a client that does not read).
    pub write_timeout: Duration,
    /// HTTP/2: a PING is sent after this long without a frame from the client.
    pub h2_keep_alive_interval: Duration,
    /// HTTP/2: the connection is closed when a PING is not acknowledged within this.
    pub h2_keep_alive_timeout: Duration,
    /// Concurrent HTTP/2 streams per connection.
    pub h2_max_concurrent_streams: u32,
    /// Whether `/ui/` serves the admin web GUI (`crate::operator::ui`); `404` when not.
    pub gui: bool,
    /// `public_url`: the absolute http(s) URL (no query, no fragment, no
    /// trailing `/`) under which relying parties reach `/pki/...`; when set,
    /// the local CA's certificates name its CRL and OCSP URLs.
    pub public_url: Option<String>,
    /// `ocsp_signer`: who signs the local CA's OCSP answers (RFC 6960
    /// §4.2.2.2): a delegated responder certificate the CA issues itself
    /// (default) or the CA key. Read at start; a reload keeps the responder.
    pub ocsp_signer: scep_issuers::ocsp::ResponderSigning,
    /// `node_name`: the node named in every audit event it writes (several
    /// nodes share one trail on PostgreSQL); default the hostname.
    pub node_name: String,
    /// The audit log (`[audit]`).
    pub audit: AuditSettings,
    /// The shared store (`[store]`, `CERTCTL_DATABASE_URL`).
    pub store: scep_store::StoreSettings,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            tls: None,
            body_limit: DEFAULT_BODY_LIMIT,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            body_read_timeout: DEFAULT_BODY_READ_TIMEOUT,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_client: DEFAULT_MAX_CONNECTIONS / DEFAULT_PER_CLIENT_DIVISOR,
            max_connections_per_network: None,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            h2_keep_alive_interval: DEFAULT_H2_KEEP_ALIVE_INTERVAL,
            h2_keep_alive_timeout: DEFAULT_H2_KEEP_ALIVE_TIMEOUT,
            h2_max_concurrent_streams: DEFAULT_H2_MAX_STREAMS,
            gui: true,
            public_url: None,
            node_name: hostname().unwrap_or_default(),
            ocsp_signer: scep_issuers::ocsp::ResponderSigning::Delegated,
            audit: AuditSettings::default(),
            store: scep_store::StoreSettings::default(),
        }
    }
}

impl ServerSettings {
    /// The configuration keys whose values differ between `self` and
    /// `other`, named as the file names them (`server.body_limit`,
    /// `audit.retention_days`, `store.url`, ...), in this struct's order: what
    /// a reload logs as needing a restart. Every field is compared (the
    /// destructuring below names each one, so a new field must be added).
    pub fn changed_keys(&self, other: &Self) -> Vec<&'static str> {
        let Self {
            listen,
            data_dir,
            tls,
            body_limit,
            header_read_timeout,
            body_read_timeout,
            shutdown_grace,
            max_connections,
            max_connections_per_client,
            max_connections_per_network,
            write_timeout,
            h2_keep_alive_interval,
            h2_keep_alive_timeout,
            h2_max_concurrent_streams,
            gui,
            public_url,
            ocsp_signer,
            node_name,
            audit,
            store,
        } = self;
        let mut changed = Vec::new();
        let mut compare = |differs: bool, key: &'static str| {
            if differs {
                changed.push(key);
            }
        };
        compare(*listen != other.listen, "server.listen");
        compare(*data_dir != other.data_dir, "server.data_dir");
        match (tls, &other.tls) {
            (Some(a), Some(b)) => {
                compare(a.cert != b.cert, "server.tls.cert");
                compare(a.key != b.key, "server.tls.key");
            }
            (a, b) => compare(a.is_some() != b.is_some(), "server.tls"),
        }
        compare(*body_limit != other.body_limit, "server.body_limit");
        compare(*header_read_timeout != other.header_read_timeout, "server.header_read_timeout_secs");
        compare(*body_read_timeout != other.body_read_timeout, "server.body_read_timeout_secs");
        compare(*shutdown_grace != other.shutdown_grace, "server.shutdown_grace_secs");
        compare(*max_connections != other.max_connections, "server.max_connections");
        compare(*max_connections_per_client != other.max_connections_per_client, "server.max_connections_per_client");
        compare(
            *max_connections_per_network != other.max_connections_per_network,
            "server.max_connections_per_network",
        );
        compare(*write_timeout != other.write_timeout, "server.write_timeout_secs");
        compare(*h2_keep_alive_interval != other.h2_keep_alive_interval, "server.h2_keep_alive_interval_secs");
        compare(*h2_keep_alive_timeout != other.h2_keep_alive_timeout, "server.h2_keep_alive_timeout_secs");
        compare(*h2_max_concurrent_streams != other.h2_max_concurrent_streams, "server.h2_max_concurrent_streams");
        compare(*gui != other.gui, "server.gui");
        compare(*public_url != other.public_url, "server.public_url");
        compare(*ocsp_signer != other.ocsp_signer, "server.ocsp_signer");
        compare(*node_name != other.node_name, "server.node_name");
        let AuditSettings { path, retention_days, discovery } = audit;
        compare(*path != other.audit.path, "audit.path");
        compare(*retention_days != other.audit.retention_days, "audit.retention_days");
        compare(*discovery != other.audit.discovery, "audit.discovery");
        match (&store.backend, &other.store.backend) {
            (scep_store::Backend::Postgres(a), scep_store::Backend::Postgres(b)) => {
                let scep_store::PostgresSettings { url, tls_ca_bundle, pool_size, connect_timeout } = a;
                compare(*url != b.url, "store.url");
                compare(*tls_ca_bundle != b.tls_ca_bundle, "store.tls_ca_bundle");
                compare(*pool_size != b.pool_size, "store.pool_size");
                compare(*connect_timeout != b.connect_timeout, "store.connect_timeout_secs");
            }
            (a, b) => compare(a != b, "store.url"),
        }
        changed
    }
}

/// Parses configuration text. `origin` names the file in errors.
///
/// # Errors
/// TOML syntax errors, unknown keys and wrongly typed values, each naming the
/// key (the TOML error shows the offending line).
pub fn parse(text: &str, origin: &Path) -> Result<ConfigFile, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError(format!("{}: {e}", origin.display())))
}

/// Reads and parses a configuration file.
///
/// # Errors
/// When the file cannot be read, or as [`parse`].
pub fn read(path: &Path) -> Result<ConfigFile, ConfigError> {
    let text = scep_issuers::config_file::read_to_string(path)
        .map_err(|e| ConfigError(format!("cannot read config file {}: {e}", path.display())))?;
    parse(&text, path)
}

/// Resolves `path` against the directory of the configuration file.
pub fn resolve(base: Option<&Path>, path: &Path) -> PathBuf {
    match base {
        Some(dir) if path.is_relative() => dir.join(path),
        _ => path.to_path_buf(),
    }
}

impl ServerSection {
    /// Validates the `[server]` table. `base` is the configuration file's
    /// directory (relative paths are resolved against it).
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first invalid key.
    pub fn validate(&self, base: Option<&Path>) -> Result<ServerSettings, ConfigError> {
        let defaults = ServerSettings::default();
        let listen = match &self.listen {
            None => defaults.listen,
            Some(s) => s.parse().map_err(|e| {
                ConfigError(format!("server.listen: {s:?} is not a socket address (e.g. 0.0.0.0:8080): {e}"))
            })?,
        };
        let data_dir = match &self.data_dir {
            None => defaults.data_dir,
            Some(p) if p.as_os_str().is_empty() => {
                return Err(ConfigError("server.data_dir: must not be empty".into()));
            }
            Some(p) => resolve(base, p),
        };
        let tls = match &self.tls {
            None => None,
            Some(t) => {
                let cert = t.cert.as_deref().ok_or_else(|| ConfigError("server.tls.cert: required".into()))?;
                let key = t.key.as_deref().ok_or_else(|| ConfigError("server.tls.key: required".into()))?;
                Some(TlsSettings { cert: resolve(base, cert), key: resolve(base, key) })
            }
        };
        let max_connections: usize =
            int_in("server.max_connections", self.max_connections, 1, 1_000_000, defaults.max_connections)?;
        let max = i64::try_from(max_connections).unwrap_or(i64::MAX);
        let share_key = |key: &str, value: Option<i64>| match value {
            Some(v) if v > max => Err(ConfigError(format!(
                "{key}: {v} is more than server.max_connections ({max_connections}), so it would limit nothing"
            ))),
            _ => Ok(()),
        };
        share_key("server.max_connections_per_client", self.max_connections_per_client)?;
        share_key("server.max_connections_per_network", self.max_connections_per_network)?;
        let max_connections_per_client = int_in(
            "server.max_connections_per_client",
            self.max_connections_per_client,
            1,
            1_000_000,
            (max_connections / DEFAULT_PER_CLIENT_DIVISOR).max(1),
        )?;
        let max_connections_per_network = match self.max_connections_per_network {
            None => None,
            Some(v) => Some(int_in("server.max_connections_per_network", Some(v), 1, 1_000_000, 0usize)?),
        };
        Ok(ServerSettings {
            listen,
            data_dir,
            tls,
            body_limit: int_in("server.body_limit", self.body_limit, 1024, 64 << 20, defaults.body_limit)?,
            header_read_timeout: secs_in(
                "server.header_read_timeout_secs",
                self.header_read_timeout_secs,
                defaults.header_read_timeout,
            )?,
            body_read_timeout: secs_in(
                "server.body_read_timeout_secs",
                self.body_read_timeout_secs,
                defaults.body_read_timeout,
            )?,
            shutdown_grace: secs_in("server.shutdown_grace_secs", self.shutdown_grace_secs, defaults.shutdown_grace)?,
            max_connections,
            max_connections_per_client,
            max_connections_per_network,
            write_timeout: secs_in("server.write_timeout_secs", self.write_timeout_secs, defaults.write_timeout)?,
            h2_keep_alive_interval: secs_in(
                "server.h2_keep_alive_interval_secs",
                self.h2_keep_alive_interval_secs,
                defaults.h2_keep_alive_interval,
            )?,
            h2_keep_alive_timeout: secs_in(
                "server.h2_keep_alive_timeout_secs",
                self.h2_keep_alive_timeout_secs,
                defaults.h2_keep_alive_timeout,
            )?,
            h2_max_concurrent_streams: int_in(
                "server.h2_max_concurrent_streams",
                self.h2_max_concurrent_streams,
                1,
                10_000,
                defaults.h2_max_concurrent_streams,
            )?,
            gui: self.gui.unwrap_or(defaults.gui),
            public_url: self.public_url.as_deref().map(validate_public_url).transpose()?,
            ocsp_signer: self
                .ocsp_signer
                .as_deref()
                .map(parse_ocsp_signer)
                .transpose()?
                .unwrap_or(defaults.ocsp_signer),
            node_name: node_name(self.node_name.as_deref())?,
            audit: AuditSettings::default(),
            store: scep_store::StoreSettings::default(),
        })
    }
}

/// Most characters of `server.node_name`.
pub const MAX_NODE_NAME: usize = 64;

/// This machine's hostname (`/proc/sys/kernel/hostname`, else `/etc/hostname`).
pub fn hostname() -> Option<String> {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .map(|h| h.trim().to_string())
        .find(|h| !h.is_empty())
}

/// Checks `server.node_name`, or reads the hostname when it is not set: 1 to
/// [`MAX_NODE_NAME`] printable characters without spaces.
///
/// # Errors
/// Naming `server.node_name` and what is wrong (or that the hostname could
/// not be read, so it must be set).
pub fn node_name(configured: Option<&str>) -> Result<String, ConfigError> {
    let name = match configured {
        Some(n) => n.to_string(),
        None => hostname().ok_or_else(|| {
            ConfigError("server.node_name: not set, and the hostname cannot be read; name this node".into())
        })?,
    };
    if name.is_empty() || name.chars().count() > MAX_NODE_NAME {
        return Err(ConfigError(format!("server.node_name: {name:?} must be 1 to {MAX_NODE_NAME} characters")));
    }
    if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ConfigError(format!("server.node_name: {name:?} must not contain spaces or control characters")));
    }
    Ok(name)
}

/// Reads `server.ocsp_signer`: `"delegated"` or `"ca"`.
///
/// # Errors
/// Naming `server.ocsp_signer` and the accepted values.
pub fn parse_ocsp_signer(value: &str) -> Result<scep_issuers::ocsp::ResponderSigning, ConfigError> {
    match value {
        "delegated" => Ok(scep_issuers::ocsp::ResponderSigning::Delegated),
        "ca" => Ok(scep_issuers::ocsp::ResponderSigning::Ca),
        other => Err(ConfigError(format!(
            "server.ocsp_signer: {other:?} is not one of \"delegated\" (a responder certificate the CA issues) or \"ca\" (the CA key)"
        ))),
    }
}

/// Checks `server.public_url`: an absolute `http://` or `https://` URL with a
/// host, no query, fragment, user info or whitespace; a trailing `/` is
/// dropped. Returned as written otherwise.
///
/// # Errors
/// Naming `server.public_url` and what is wrong.
pub fn validate_public_url(url: &str) -> Result<String, ConfigError> {
    let bad = |why: &str| ConfigError(format!("server.public_url: {url:?} {why}"));
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| bad("is not an absolute http:// or https:// URL"))?;
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("contains whitespace or control characters"));
    }
    if url.contains(['?', '#']) {
        return Err(bad("must not have a query or fragment: relying parties append /pki/..."));
    }
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() || host.starts_with(':') {
        return Err(bad("has no host"));
    }
    if host.contains('@') {
        return Err(bad("must not carry user information"));
    }
    Ok(url.trim_end_matches('/').to_string())
}

/// An optional integer key that must lie in `[min, max]`.
///
/// # Errors
/// Naming `key` when `value` is out of range or does not fit `T`.
pub fn int_in<T: TryFrom<i64> + Copy>(
    key: &str,
    value: Option<i64>,
    min: i64,
    max: i64,
    default: T,
) -> Result<T, ConfigError> {
    let Some(v) = value else { return Ok(default) };
    if !(min..=max).contains(&v) {
        return Err(ConfigError(format!("{key}: {v} is out of range (allowed {min}..={max})")));
    }
    T::try_from(v).map_err(|_| ConfigError(format!("{key}: {v} does not fit this platform")))
}

/// An optional timeout in whole seconds, 1 to 3600.
fn secs_in(key: &str, value: Option<i64>, default: Duration) -> Result<Duration, ConfigError> {
    let secs: u64 = int_in(key, value, 1, 3600, default.as_secs())?;
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(text: &str) -> Result<ServerSettings, ConfigError> {
        parse(text, Path::new("test.toml"))?.server.validate(None)
    }

    #[test]
    fn changed_keys_are_named_as_the_file_names_them() {
        let base = ServerSettings::default();
        assert_eq!(base.changed_keys(&base.clone()), Vec::<&str>::new());
        let mut other = base.clone();
        other.tls = Some(TlsSettings { cert: "a.pem".into(), key: "a.key".into() });
        other.header_read_timeout += Duration::from_secs(1);
        other.audit.discovery = audit::DiscoveryAudit::Each;
        other.store.backend = scep_store::Backend::Postgres(scep_store::PostgresSettings {
            url: "postgres://db/scepd".into(),
            tls_ca_bundle: None,
            pool_size: 4,
            connect_timeout: Duration::from_secs(5),
        });
        assert_eq!(
            base.changed_keys(&other),
            vec!["server.tls", "server.header_read_timeout_secs", "audit.discovery", "store.url"]
        );
        let mut third = other.clone();
        third.tls = Some(TlsSettings { cert: "a.pem".into(), key: "b.key".into() });
        if let scep_store::Backend::Postgres(pg) = &mut third.store.backend {
            pg.pool_size = 8;
        }
        assert_eq!(other.changed_keys(&third), vec!["server.tls.key", "store.pool_size"]);
    }

    #[test]
    fn empty_file_takes_documented_defaults() {
        let s = server("").unwrap();
        assert_eq!(s, ServerSettings::default());
        assert_eq!(s.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(s.body_limit, 256 * 1024);
    }

    #[test]
    fn every_server_key_parses() {
        let s = server(
            r#"
            [server]
            listen = "0.0.0.0:8443"
            data_dir = "/var/lib/scepd"
            body_limit = 4096
            header_read_timeout_secs = 5
            body_read_timeout_secs = 6
            shutdown_grace_secs = 7
            max_connections = 8
            max_connections_per_client = 3
            max_connections_per_network = 5
            write_timeout_secs = 11
            h2_keep_alive_interval_secs = 12
            h2_keep_alive_timeout_secs = 13
            h2_max_concurrent_streams = 9
            gui = false
            [server.tls]
            cert = "c.pem"
            key = "k.pem"
            "#,
        )
        .unwrap();
        assert_eq!(s.listen.port(), 8443);
        assert_eq!(s.data_dir, PathBuf::from("/var/lib/scepd"));
        assert_eq!(s.body_limit, 4096);
        assert_eq!(s.header_read_timeout, Duration::from_secs(5));
        assert_eq!(s.body_read_timeout, Duration::from_secs(6));
        assert_eq!(s.shutdown_grace, Duration::from_secs(7));
        assert_eq!(s.max_connections, 8);
        assert_eq!(s.max_connections_per_client, 3);
        assert_eq!(s.max_connections_per_network, Some(5));
        assert_eq!(s.write_timeout, Duration::from_secs(11));
        assert_eq!(s.h2_keep_alive_interval, Duration::from_secs(12));
        assert_eq!(s.h2_keep_alive_timeout, Duration::from_secs(13));
        assert_eq!(s.h2_max_concurrent_streams, 9);
        assert!(!s.gui);
        assert!(ServerSettings::default().gui, "the GUI is on by default");
        assert_eq!(s.tls.unwrap().key, PathBuf::from("k.pem"));
    }

    #[test]
    fn the_per_client_share_defaults_to_a_sixteenth_of_max_connections() {
        assert_eq!(ServerSettings::default().max_connections_per_client, 64);
        assert_eq!(server("[server]\nmax_connections = 100").unwrap().max_connections_per_client, 6);
        assert_eq!(server("[server]\nmax_connections = 4").unwrap().max_connections_per_client, 1);
        assert_eq!(ServerSettings::default().max_connections_per_network, None);
    }

    #[test]
    fn the_node_name_is_the_hostname_unless_set() {
        let host = hostname().expect("this machine has a hostname");
        assert_eq!(server("").unwrap().node_name, host);
        assert_eq!(server("[server]\nnode_name = \"scep-1.dc2\"").unwrap().node_name, "scep-1.dc2");
        let long = "n".repeat(MAX_NODE_NAME + 1);
        assert!(server(&format!("[server]\nnode_name = \"{long}\"")).unwrap_err().0.starts_with("server.node_name"));
    }

    #[test]
    fn relative_paths_resolve_against_the_config_directory() {
        let f = parse("[server]\ndata_dir = \"data\"\n", Path::new("x")).unwrap();
        let s = f.server.validate(Some(Path::new("/etc/scepd"))).unwrap();
        assert_eq!(s.data_dir, PathBuf::from("/etc/scepd/data"));
    }

    /// Each invalid value names its key.
    #[test]
    fn invalid_values_name_the_key() {
        let cases: &[(&str, &str)] = &[
            ("[server]\nlisten = \"localhost\"", "server.listen"),
            ("[server]\nbody_limit = 10", "server.body_limit"),
            ("[server]\nbody_limit = -1", "server.body_limit"),
            ("[server]\nheader_read_timeout_secs = 0", "server.header_read_timeout_secs"),
            ("[server]\nbody_read_timeout_secs = 99999", "server.body_read_timeout_secs"),
            ("[server]\nshutdown_grace_secs = 0", "server.shutdown_grace_secs"),
            ("[server]\nmax_connections = 0", "server.max_connections"),
            ("[server]\nh2_max_concurrent_streams = 0", "server.h2_max_concurrent_streams"),
            ("[server]\nmax_connections_per_client = 0", "server.max_connections_per_client"),
            ("[server]\nmax_connections = 10\nmax_connections_per_client = 11", "server.max_connections_per_client"),
            ("[server]\nmax_connections_per_network = 0", "server.max_connections_per_network"),
            ("[server]\nmax_connections = 10\nmax_connections_per_network = 11", "server.max_connections_per_network"),
            ("[server]\nwrite_timeout_secs = 0", "server.write_timeout_secs"),
            ("[server]\nh2_keep_alive_interval_secs = 0", "server.h2_keep_alive_interval_secs"),
            ("[server]\nh2_keep_alive_timeout_secs = 3601", "server.h2_keep_alive_timeout_secs"),
            ("[server]\ndata_dir = \"\"", "server.data_dir"),
            ("[server]\nnode_name = \"\"", "server.node_name"),
            ("[server]\nnode_name = \"node a\"", "server.node_name"),
            ("[server]\nnode_name = \"a\\u0007\"", "server.node_name"),
            ("[server.tls]\ncert = \"c.pem\"", "server.tls.key"),
            ("[server.tls]\nkey = \"k.pem\"", "server.tls.cert"),
            // Wrong types and unknown keys are named by the TOML layer.
            ("[server]\nbody_limit = \"big\"", "body_limit"),
            ("[server]\nlisten_addr = \"0.0.0.0:1\"", "listen_addr"),
            ("[servr]\n", "servr"),
        ];
        for (text, key) in cases {
            let err = server(text).expect_err(text);
            assert!(err.0.contains(key), "{text:?}: error {err} does not name {key}");
        }
    }
}
