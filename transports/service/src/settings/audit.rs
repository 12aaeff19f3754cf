//! The `[audit]` table: where the audit log lives, how long it keeps events
//! and how discovery answers are audited (see `crate::store::audit`).
//!
//! ```toml
//! [audit]
//! path = "audit.db"        # default <data_dir>/audit.db; relative to the config file
//! retention_days = 365     # 1..=36500; default 365
//! discovery = "aggregate"  # or "each"; default "aggregate"
//! ```

use std::path::{Path, PathBuf};

use scep_engine::Operation;
use scep_engine::config::ConfigError;
use serde::Deserialize;

use super::{int_in, resolve};

/// Default audit database file name, in the data directory.
pub const DEFAULT_FILE: &str = "audit.db";
/// Default retention.
pub const DEFAULT_RETENTION_DAYS: i64 = 365;

/// The `[audit]` table, as written.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSection {
    /// `path`
    pub path: Option<PathBuf>,
    /// `retention_days`
    pub retention_days: Option<i64>,
    /// `discovery`: `"aggregate"` or `"each"`.
    pub discovery: Option<String>,
}

/// How the discovery operations (GetCACaps, GetCACert, GetNextCACert) and
/// the HTTP 4xx refusals made before a request can be attributed are
/// audited; see `crate::store::audit`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DiscoveryAudit {
    /// Tallied, written once a second as counted rows; answers do not wait.
    #[default]
    Aggregate,
    /// One durable event per answer, committed before it is sent.
    Each,
}

impl DiscoveryAudit {
    /// Whether `operation` is a discovery operation.
    pub fn covers(operation: Option<Operation>) -> bool {
        matches!(operation, Some(Operation::GetCaCaps | Operation::GetCaCert | Operation::GetNextCaCert))
    }
}

/// Validated audit settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditSettings {
    /// The database file; `None`: `<data_dir>/audit.db`.
    pub path: Option<PathBuf>,
    /// Events older than this many days are deleted.
    pub retention_days: i64,
    /// How discovery answers are audited.
    pub discovery: DiscoveryAudit,
}

impl Default for AuditSettings {
    fn default() -> Self {
        Self { path: None, retention_days: DEFAULT_RETENTION_DAYS, discovery: DiscoveryAudit::default() }
    }
}

impl AuditSection {
    /// Validates the `[audit]` table.
    ///
    /// # Errors
    /// Naming `audit.<key>`.
    pub fn validate(&self, base: Option<&Path>) -> Result<AuditSettings, ConfigError> {
        let path = match &self.path {
            Some(p) if p.as_os_str().is_empty() => return Err(ConfigError("audit.path: must not be empty".into())),
            Some(p) => Some(resolve(base, p)),
            None => None,
        };
        let retention_days = int_in("audit.retention_days", self.retention_days, 1, 36_500, DEFAULT_RETENTION_DAYS)?;
        let discovery = match self.discovery.as_deref() {
            None | Some("aggregate") => DiscoveryAudit::Aggregate,
            Some("each") => DiscoveryAudit::Each,
            Some(other) => {
                return Err(ConfigError(format!("audit.discovery: `{other}` is neither \"aggregate\" nor \"each\"")));
            }
        };
        Ok(AuditSettings { path, retention_days, discovery })
    }
}

impl AuditSettings {
    /// The database file for `data_dir`.
    pub fn file(&self, data_dir: &Path) -> PathBuf {
        self.path.clone().unwrap_or_else(|| data_dir.join(DEFAULT_FILE))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_validate() {
        let s = AuditSection::default().validate(None).unwrap();
        assert_eq!(s, AuditSettings::default());
        assert_eq!(s.file(Path::new("/d")), PathBuf::from("/d/audit.db"));
        let e = AuditSection { retention_days: Some(0), ..Default::default() }.validate(None).unwrap_err();
        assert!(e.0.starts_with("audit.retention_days"), "{e}");
        let e = AuditSection { path: Some(PathBuf::new()), ..Default::default() }.validate(None).unwrap_err();
        assert!(e.0.starts_with("audit.path"), "{e}");
        let each = AuditSection { discovery: Some("each".into()), ..Default::default() }.validate(None).unwrap();
        assert_eq!(each.discovery, DiscoveryAudit::Each);
        let agg = AuditSection { discovery: Some("aggregate".into()), ..Default::default() }.validate(None).unwrap();
        assert_eq!(agg.discovery, DiscoveryAudit::Aggregate);
        let e = AuditSection { discovery: Some("none".into()), ..Default::default() }.validate(None).unwrap_err();
        assert!(e.0.starts_with("audit.discovery") && e.0.contains("none"), "{e}");
        let s =
            AuditSection { path: Some("a.db".into()), ..Default::default() }.validate(Some(Path::new("/etc"))).unwrap();
        assert_eq!(s.path, Some(PathBuf::from("/etc/a.db")));
    }
}
