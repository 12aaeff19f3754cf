//! `scepd check-config` writes nothing: what it needs of the local CA is
//! built in a throwaway scratch directory, and what the first `serve` would
//! create in the data directory is reported instead of created.
//!
//! The CA and RA files that already exist in the data directory are checked
//! in place (permissions, parsing, key match, validity, the profile built from
//! them); a missing one is generated in the scratch directory, so the rest of
//! every `issuer = "local"` profile is still checked, and listed in
//! [`DryRun::would_create`]. The scratch directory (under the system's
//! temporary directory, mode 0700) is removed when the check ends.

use std::path::{Path, PathBuf};

use scep_engine::config::ConfigError;
use scep_engine::time::UnixTime;
use scep_issuers::local::bootstrap::{
    CA_CERT_FILE, CA_KEY_FILE, RA_CERT_FILE, RA_ENCRYPTION_CERT_FILE, RA_ENCRYPTION_KEY_FILE, RA_KEY_FILE,
    RA_SIGNING_CERT_FILE, RA_SIGNING_KEY_FILE,
};
use scep_issuers::local::store::DB_FILE;

use crate::wiring::bootstrap::{self, LocalCa};
use crate::wiring::files::check_key_file_permissions;

/// One file the local CA bootstrap keeps in the data directory.
struct CaFile {
    name: &'static str,
    /// What it is, as `check-config` lists it.
    what: &'static str,
    /// A private key: mode 0600, checked before it is read.
    is_key: bool,
}

/// The files the local CA bootstrap keeps in the data directory.
const CA_FILES: [CaFile; 8] = [
    CaFile { name: CA_CERT_FILE, what: "local CA certificate", is_key: false },
    CaFile { name: CA_KEY_FILE, what: "local CA private key, mode 0600", is_key: true },
    CaFile { name: RA_CERT_FILE, what: "RA certificate, decrypts requests and signs replies", is_key: false },
    CaFile { name: RA_KEY_FILE, what: "RA private key, mode 0600", is_key: true },
    CaFile { name: RA_SIGNING_CERT_FILE, what: "signing RA certificate of the NDES arrangement", is_key: false },
    CaFile { name: RA_SIGNING_KEY_FILE, what: "signing RA private key, mode 0600", is_key: true },
    CaFile { name: RA_ENCRYPTION_CERT_FILE, what: "encryption RA certificate of the NDES arrangement", is_key: false },
    CaFile { name: RA_ENCRYPTION_KEY_FILE, what: "encryption RA private key, mode 0600", is_key: true },
];

/// A configuration check in progress: the scratch directory and what the
/// first `serve` would create.
#[derive(Debug, Default)]
pub struct DryRun {
    scratch: Option<PathBuf>,
    /// What `serve` would create, one human-readable entry each (path first).
    pub would_create: Vec<String>,
}

impl DryRun {
    /// Notes that `serve` would create `path` (described by `what`) unless it
    /// exists.
    pub fn note_missing(&mut self, path: &Path, what: &str) {
        let listed = format!("{} (", path.display());
        if !path.exists() && !self.would_create.iter().any(|e| e.starts_with(&listed)) {
            self.would_create.push(format!("{listed}{what})"));
        }
    }

    /// The local CA as `serve` would open it from `data_dir`, without writing
    /// there: existing files are checked in place, missing ones generated in
    /// the scratch directory and listed. `index`: where `serve` would look
    /// for certificates of an earlier CA before creating one (the data
    /// directory's `local-ca.sqlite`, read in place, or the shared index).
    ///
    /// # Errors
    /// As `serve` would fail on the existing files, naming them.
    pub fn open_local_ca(
        &mut self,
        data_dir: &Path,
        now: UnixTime,
        public_url: Option<&str>,
        token_ca_key: Option<std::sync::Arc<dyn scep_engine::crypto::provider::PrivateKey>>,
        index: scep_issuers::IndexLocation,
    ) -> Result<LocalCa, ConfigError> {
        self.note_missing(data_dir, "data directory, mode 0700");
        let scratch = self.scratch()?;
        let mut present = Vec::new();
        for &CaFile { name, is_key, .. } in &CA_FILES {
            let original = data_dir.join(name);
            if !original.exists() {
                continue;
            }
            if is_key {
                check_key_file_permissions(&original, &format!("data_dir {}", data_dir.display()))?;
            }
            let copy = scratch.join(name);
            std::fs::copy(&original, &copy)
                .map_err(|e| ConfigError(format!("cannot read {}: {e}", original.display())))?;
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt as _;
                std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o600))
                    .map_err(|e| ConfigError(format!("check-config scratch {}: {e}", copy.display())))?;
            }
            present.push(name);
        }
        // The bootstrap runs on the copy: it validates what exists and generates what is missing.
        let opts = scep_issuers::BootstrapOptions {
            now,
            token_ca_key: token_ca_key.clone(),
            index,
            ..scep_issuers::BootstrapOptions::default()
        };
        let mut files = scep_issuers::bootstrap(&scratch, &opts).map_err(|e| {
            // Named by the data directory checked, not by the scratch copy.
            let why = match e {
                scep_issuers::IssuerError::DataDir { reason, .. } => reason,
                other => other.to_string(),
            };
            ConfigError(format!("data_dir {}: the local CA: {why}", data_dir.display()))
        })?;
        for &CaFile { name, what, .. } in &CA_FILES {
            if scratch.join(name).exists() && !present.contains(&name) {
                self.would_create.push(format!("{} ({what})", data_dir.join(name).display()));
            }
        }
        // Files that exist are checked where they are, so errors name them.
        let in_place = |p: &mut PathBuf| {
            if let Some(name) = p.file_name().and_then(|n| n.to_str())
                && present.contains(&name)
            {
                *p = data_dir.join(name);
            }
        };
        in_place(&mut files.ca_cert);
        in_place(&mut files.ca_key);
        in_place(&mut files.ra_cert);
        in_place(&mut files.ra_key);
        if let Some(n) = files.ndes.as_mut() {
            in_place(&mut n.signing_cert);
            in_place(&mut n.signing_key);
            in_place(&mut n.encryption_cert);
            in_place(&mut n.encryption_key);
        }
        self.note_missing(&data_dir.join(DB_FILE), "issued-certificate database");
        bootstrap::local_ca_from(&files, &scratch, now, data_dir, public_url, token_ca_key, None)
    }

    /// Its scratch directory (created on first use, removed when dropped).
    pub(crate) fn scratch(&mut self) -> Result<PathBuf, ConfigError> {
        if let Some(dir) = &self.scratch {
            return Ok(dir.clone());
        }
        let mut random = [0u8; 8];
        scep_engine::crypto::default_provider()
            .fill_random(&mut random)
            .map_err(|_| ConfigError("OS random source failed".into()))?;
        let hex: String = random.iter().map(|b| format!("{b:02x}")).collect();
        let dir = std::env::temp_dir().join(format!("scepd-check-config-{}-{hex}", std::process::id()));
        let mut b = std::fs::DirBuilder::new();
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
        b.create(&dir).map_err(|e| {
            ConfigError(format!("check-config: cannot create a scratch directory {}: {e}", dir.display()))
        })?;
        self.scratch = Some(dir.clone());
        Ok(dir)
    }
}

impl Drop for DryRun {
    fn drop(&mut self) {
        if let Some(dir) = self.scratch.take()
            && let Err(e) = std::fs::remove_dir_all(&dir)
        {
            tracing::warn!(dir = %dir.display(), error = %e, "check-config: cannot remove its scratch directory");
        }
    }
}
