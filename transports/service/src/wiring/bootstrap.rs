//! First run without a configuration file: the data directory gets a local CA
//! and RA, and a profile `default` is served at `/scep` and `/scep/default`
//! with a static challenge password.
//!
//! The challenge comes from `--challenge-password` / `SCEPD_CHALLENGE_PASSWORD`;
//! otherwise one is generated (32 random URL-safe characters), persisted in
//! `<data_dir>/challenge-password` (mode 0600) so restarts keep it, and
//! reported once, to the run that created it, through
//! [`Challenge::generated`]. The file always holds the password in force: an
//! explicit password removes one left by an earlier run.
//!
//! Without configured API keys (`CERTCTL_API_KEYS_NAMED`), an admin API key is
//! bootstrapped the same way ([`AdminKey`], `<data_dir>/admin-api-key`), so
//! the web GUI at `/ui/scep` can be opened on the built-in defaults.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use scep_engine::config::ConfigError;
use scep_engine::crypto::provider::PrivateKey;
use scep_engine::time::UnixTime;
use scep_issuers::Issuer;

use crate::settings::api_keys::{ApiKeySetting, Role};
use crate::settings::profile::ProfileSection;
use crate::wiring::files::check_key_file_permissions;

/// Name of the profile served when there is no configuration file.
pub const DEFAULT_PROFILE: &str = "default";
/// File (in the data directory) holding the generated challenge password.
pub const CHALLENGE_FILE: &str = "challenge-password";

/// The local CA as the service uses it: the issuer, and the RA certificate and
/// key files it bootstrapped in the data directory.
#[derive(Clone)]
pub struct LocalCa {
    /// The issuer (shared by every `issuer = "local"` profile).
    pub issuer: Arc<dyn Issuer>,
    /// The same CA, concretely (start-up reconciliation with the audit log).
    pub ca: Arc<scep_issuers::LocalCa>,
    /// RA certificate PEM file.
    pub ra_cert_path: PathBuf,
    /// RA private key PEM file (mode 0600).
    pub ra_key_path: PathBuf,
    /// The NDES RA pair (`ra-signing.*`, `ra-encryption.*`) the bootstrap
    /// profile publishes.
    pub ndes: Option<scep_issuers::NdesRaFiles>,
}

/// Opens the local CA in `data_dir`, creating the CA and RA on first use.
///
/// This is the ONE place where `scep_issuers::local` is wired in.
///
/// # Errors
/// When the CA cannot be created or opened.
/// `public_url` (`[server] public_url`): issued certificates name the CRL
/// and OCSP URLs under it.
pub fn open_local_ca(data_dir: &Path, now: UnixTime, public_url: Option<&str>) -> Result<LocalCa, ConfigError> {
    open_or_keep_local_ca(data_dir, now, public_url, None, None, None, Vec::new())
}

/// Where the built-in CA's certificates are recorded, as the bootstrap reads
/// it before it creates a CA ([`scep_issuers::IndexLocation`]): the shared
/// index on `shared_index`, leaving out the certificates of `other_cas` (the
/// ids of the `[[issuer]] type = "local"` CAs, whose certificates share its
/// tables), else the SQLite file `sqlite_index`.
pub fn index_location(
    shared_index: Option<Arc<scep_store::postgres::Pool>>,
    other_cas: Vec<String>,
    sqlite_index: PathBuf,
) -> scep_issuers::IndexLocation {
    match shared_index {
        Some(pool) => scep_issuers::IndexLocation::Shared { pool, other_cas },
        None => scep_issuers::IndexLocation::SqliteFile(sqlite_index),
    }
}

/// As [`open_local_ca`], but a reload keeps `running`, the local CA already
/// serving, when the data directory still holds its certificate: one
/// [`scep_issuers::LocalCa`] per process, so that a revocation made through
/// the reloaded profiles is seen at once by everything that holds the CA
/// (the OCSP responder's cache and the CRL are versioned by its revocation
/// counter, [`scep_issuers::LocalCa::revocation_version`]). A CA certificate
/// replaced on disk is refused: the new CA needs a restart. `shared_index`:
/// the node's PostgreSQL pool, where the certificate index then lives;
/// `other_cas`: the ids of the configured `[[issuer]] type = "local"` CAs,
/// whose certificates in a shared index do not stop a first bootstrap
/// ([`index_location`]).
///
/// # Errors
/// When the CA cannot be created or opened, or its certificate changed.
pub fn open_or_keep_local_ca(
    data_dir: &Path,
    now: UnixTime,
    public_url: Option<&str>,
    running: Option<&scep_issuers::LocalCa>,
    token_ca_key: Option<Arc<dyn PrivateKey>>,
    shared_index: Option<Arc<scep_store::postgres::Pool>>,
    other_cas: Vec<String>,
) -> Result<LocalCa, ConfigError> {
    create_private_dir(data_dir)?;
    let opts = scep_issuers::BootstrapOptions {
        now,
        token_ca_key: token_ca_key.clone(),
        index: index_location(shared_index.clone(), other_cas, data_dir.join(scep_issuers::local::store::DB_FILE)),
        ..scep_issuers::BootstrapOptions::default()
    };
    let files = scep_issuers::bootstrap(data_dir, &opts).map_err(|e| {
        // The data directory is named once.
        let why = match e {
            scep_issuers::IssuerError::DataDir { reason, .. } => reason,
            other => other.to_string(),
        };
        ConfigError(format!("data_dir {}: cannot bootstrap the local CA: {why}", data_dir.display()))
    })?;
    if files.ca_created {
        tracing::info!(ca = %files.ca_cert.display(), "created a new local CA");
    }
    if files.ra_created {
        tracing::info!(ra = %files.ra_cert.display(), "created a new RA certificate");
    }
    if let Some(pair) = &files.ndes {
        if pair.signing_created {
            tracing::info!(ra = %pair.signing_cert.display(), "created a new signing RA certificate (NDES arrangement)");
        }
        if pair.encryption_created {
            tracing::info!(ra = %pair.encryption_cert.display(), "created a new encryption RA certificate (NDES arrangement)");
        }
    }
    if let Some(running) = running {
        let text = scep_issuers::config_file::read_to_string(&files.ca_cert)
            .map_err(|e| ConfigError(format!("local CA: cannot read {}: {e}", files.ca_cert.display())))?;
        let on_disk = scep_engine::pem::certificates(&text)
            .map_err(|e| ConfigError(format!("local CA: {}: {e}", files.ca_cert.display())))?;
        if on_disk.first().map(Vec::as_slice) != Some(running.signer().certificate()) {
            return Err(ConfigError(format!(
                "local CA: {} is no longer the certificate this process serves; restart scepd to use a new CA",
                files.ca_cert.display()
            )));
        }
        let ca = Arc::new(running.clone());
        return Ok(LocalCa {
            issuer: ca.clone(),
            ca,
            ra_cert_path: files.ra_cert.clone(),
            ra_key_path: files.ra_key.clone(),
            ndes: files.ndes.clone(),
        });
    }
    local_ca_from(&files, data_dir, now, data_dir, public_url, token_ca_key, shared_index)
}

/// Opens the bootstrapped `files` as the service's local CA, its database in
/// `db_dir` (`data_dir` names it in errors), or in the shared store when
/// `shared_index` is the node's PostgreSQL pool. `open_local_ca` and
/// `check-config` (`super::check`) share it.
///
/// # Errors
/// When the CA cannot be opened.
pub(crate) fn local_ca_from(
    files: &scep_issuers::BootstrapOutcome,
    db_dir: &Path,
    now: UnixTime,
    data_dir: &Path,
    public_url: Option<&str>,
    token_ca_key: Option<Arc<dyn PrivateKey>>,
    shared_index: Option<Arc<scep_store::postgres::Pool>>,
) -> Result<LocalCa, ConfigError> {
    let mut config = scep_issuers::LocalCaConfig::new(&files.ca_cert, &files.ca_key, db_dir);
    config.ca_key = token_ca_key;
    config.shared_index = shared_index;
    config.public_url = public_url.map(str::to_string);
    let ca = scep_issuers::LocalCa::open_at(config, now)
        .map_err(|e| ConfigError(format!("local CA ({}): {e}", data_dir.display())))?;
    let ca = Arc::new(ca);
    Ok(LocalCa {
        issuer: ca.clone(),
        ca,
        ra_cert_path: files.ra_cert.clone(),
        ra_key_path: files.ra_key.clone(),
        ndes: files.ndes.clone(),
    })
}

/// Where the bootstrap challenge password in force came from (the banner
/// says which).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChallengeSource {
    /// Generated by this run; [`Challenge::persist`] writes it to
    /// `<data_dir>/challenge-password`.
    Generated,
    /// Read from `<data_dir>/challenge-password` (generated by an earlier run).
    File,
    /// Given with `--challenge-password` / `SCEPD_CHALLENGE_PASSWORD`;
    /// [`Challenge::persist`] removes a password file left by an earlier run,
    /// so the file never holds a password that is not in force.
    Explicit,
}

/// The static challenge password of the bootstrap profile.
#[derive(Clone, PartialEq, Eq)]
pub struct Challenge {
    /// The password.
    pub password: String,
    /// Where it came from.
    pub source: ChallengeSource,
}

impl std::fmt::Debug for Challenge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Challenge").field("password", &"<redacted>").field("source", &self.source).finish()
    }
}

impl Challenge {
    /// Chooses the challenge: `explicit` if given, else the persisted one in
    /// `data_dir`, else a new random one (not yet written: call
    /// [`Challenge::persist`] once everything else has loaded, so a failed
    /// start never hides a password that was never shown).
    ///
    /// # Errors
    /// When the persisted file is unreadable, empty, or readable by others.
    pub fn choose(data_dir: &Path, explicit: Option<&str>) -> Result<Self, ConfigError> {
        if let Some(p) = explicit {
            if p.is_empty() {
                return Err(ConfigError("--challenge-password: must not be empty".into()));
            }
            return Ok(Self { password: p.to_string(), source: ChallengeSource::Explicit });
        }
        Ok(match read_secret(&data_dir.join(CHALLENGE_FILE), "challenge password")? {
            Some(password) => Self { password, source: ChallengeSource::File },
            None => Self { password: generate()?, source: ChallengeSource::Generated },
        })
    }

    /// Whether this run generated the password (print it once).
    pub fn generated(&self) -> bool {
        self.source == ChallengeSource::Generated
    }

    /// Makes `<data_dir>/challenge-password` hold the password in force: a
    /// generated one is written (0600, never overwriting); with an explicit
    /// one, a file left by an earlier run is removed. Returns whether a stale
    /// file was removed.
    ///
    /// # Errors
    /// When the file cannot be created or removed.
    pub fn persist(&self, data_dir: &Path) -> Result<bool, ConfigError> {
        let path = data_dir.join(CHALLENGE_FILE);
        match self.source {
            ChallengeSource::Generated => write_secret(data_dir, &path, &self.password).map(|()| false),
            ChallengeSource::File => Ok(false),
            ChallengeSource::Explicit => remove_stale(&path),
        }
    }
}

/// File (in the data directory) holding the bootstrap admin API key.
pub const ADMIN_KEY_FILE: &str = "admin-api-key";
/// Name of the bootstrap admin API key (logged and audited on use).
pub const ADMIN_KEY_NAME: &str = "bootstrap-admin";

/// The admin API key of a run without configured keys, so the GUI
/// (`/ui/scep`) and the admin API can be used on the built-in defaults. Like
/// the challenge password it is generated on the first run, kept in
/// `<data_dir>/admin-api-key` (mode 0600), printed once and never logged.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminKey {
    /// The key.
    pub key: String,
    /// Generated by this run and not yet persisted ([`AdminKey::persist`]).
    pub generated: bool,
}

impl std::fmt::Debug for AdminKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminKey").field("key", &"<redacted>").field("generated", &self.generated).finish()
    }
}

impl AdminKey {
    /// The persisted key in `data_dir`, else a new random one (written by
    /// [`AdminKey::persist`] once everything else has loaded).
    ///
    /// # Errors
    /// When the persisted file is unreadable, empty, readable by others, or
    /// too short to be an API key.
    pub fn choose(data_dir: &Path) -> Result<Self, ConfigError> {
        let path = data_dir.join(ADMIN_KEY_FILE);
        match read_secret(&path, "admin API key")? {
            Some(key) if key.len() < crate::settings::api_keys::MIN_KEY_LEN || key.contains(char::is_whitespace) => {
                Err(ConfigError(format!(
                    "admin API key: {} does not hold a valid key (at least {} characters, no whitespace); \
                     remove it and a new one is generated",
                    path.display(),
                    crate::settings::api_keys::MIN_KEY_LEN
                )))
            }
            Some(key) => Ok(Self { key, generated: false }),
            None => Ok(Self { key: generate()?, generated: true }),
        }
    }

    /// The key as the admin API's key set holds it (role admin).
    pub fn setting(&self) -> ApiKeySetting {
        ApiKeySetting { name: ADMIN_KEY_NAME.into(), key: self.key.clone(), role: Role::Admin }
    }

    /// Writes a generated key to `<data_dir>/admin-api-key` (0600, never
    /// overwriting). Does nothing for a key read from the file.
    ///
    /// # Errors
    /// When the file cannot be created.
    pub fn persist(&self, data_dir: &Path) -> Result<(), ConfigError> {
        if !self.generated {
            return Ok(());
        }
        write_secret(data_dir, &data_dir.join(ADMIN_KEY_FILE), &self.key)
    }

    /// The operator configured API keys: none is created, and a key file left
    /// by an earlier run is removed (it is not in force). Returns whether a
    /// file was removed.
    ///
    /// # Errors
    /// When the file exists and cannot be removed.
    pub fn retire(data_dir: &Path) -> Result<bool, ConfigError> {
        remove_stale(&data_dir.join(ADMIN_KEY_FILE))
    }
}

/// The start-up banner's line about the challenge password in force: where
/// it came from, where it is kept; the password itself only when this run
/// generated it (shown once). `removed`: [`Challenge::persist`] removed a
/// stale file.
pub fn challenge_banner(challenge: &Challenge, data_dir: &Path, removed: bool) -> String {
    let file = data_dir.join(CHALLENGE_FILE);
    match challenge.source {
        ChallengeSource::Generated => format!(
            "scepd challenge password (profile default): generated by this run, saved in {} (shown only now): {}",
            file.display(),
            challenge.password
        ),
        ChallengeSource::File => {
            format!("scepd challenge password (profile default): the one saved in {}", file.display())
        }
        ChallengeSource::Explicit if removed => format!(
            "scepd challenge password (profile default): from --challenge-password / SCEPD_CHALLENGE_PASSWORD \
             (removed {}, which held an earlier one)",
            file.display()
        ),
        ChallengeSource::Explicit => {
            "scepd challenge password (profile default): from --challenge-password / SCEPD_CHALLENGE_PASSWORD".into()
        }
    }
}

/// The start-up banner's line about the admin API key (bootstrap mode):
/// generated (the key shown once), the one in the file, or `configured` keys
/// from `CERTCTL_API_KEYS_NAMED` (`removed`: [`AdminKey::retire`] removed a
/// stale key file).
pub fn admin_key_banner(key: Option<&AdminKey>, configured: usize, data_dir: &Path, removed: bool) -> String {
    let file = data_dir.join(ADMIN_KEY_FILE);
    match key {
        Some(k) if k.generated => format!(
            "scepd admin API key ({ADMIN_KEY_NAME}, role admin, for the GUI at /ui/scep): generated by this run, \
             saved in {} (shown only now): {}",
            file.display(),
            k.key
        ),
        Some(_) => format!(
            "scepd admin API key ({ADMIN_KEY_NAME}, role admin, for the GUI at /ui/scep): the one saved in {}",
            file.display()
        ),
        None if removed => format!(
            "scepd admin API keys: {configured} from CERTCTL_API_KEYS_NAMED (removed {}: that key is not in force)",
            file.display()
        ),
        None => format!("scepd admin API keys: {configured} from CERTCTL_API_KEYS_NAMED"),
    }
}

/// Reads a one-line secret file: `None` when it does not exist.
fn read_secret(path: &Path, what: &str) -> Result<Option<String>, ConfigError> {
    match std::fs::metadata(path) {
        Ok(_) => {
            check_key_file_permissions(path, what)?;
            let text = scep_issuers::config_file::read_to_string(path)
                .map_err(|e| ConfigError(format!("{what}: cannot read {}: {e}", path.display())))?;
            let value = text.trim_end_matches(['\r', '\n']).to_string();
            if value.is_empty() {
                return Err(ConfigError(format!(
                    "{what}: {} is empty; remove it and a new one is generated",
                    path.display()
                )));
            }
            Ok(Some(value))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ConfigError(format!("{what}: cannot read {}: {e}", path.display()))),
    }
}

/// Creates `path` (0600, never overwriting) holding `value` and a newline.
fn write_secret(data_dir: &Path, path: &Path, value: &str) -> Result<(), ConfigError> {
    create_private_dir(data_dir)?;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(path).map_err(|e| ConfigError(format!("cannot create {}: {e}", path.display())))?;
    f.write_all(format!("{value}\n").as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| ConfigError(format!("cannot write {}: {e}", path.display())))
}

/// Removes `path` if it exists; whether it did.
fn remove_stale(path: &Path) -> Result<bool, ConfigError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => {
            Err(ConfigError(format!("cannot remove {}, which holds a secret no longer in force: {e}", path.display())))
        }
    }
}

/// Creates `dir` (and parents) with mode 0700 when missing.
///
/// # Errors
/// When it cannot be created.
pub fn create_private_dir(dir: &Path) -> Result<(), ConfigError> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir).map_err(|e| ConfigError(format!("cannot create data directory {}: {e}", dir.display())))
}

/// 24 random bytes as 32 URL-safe base64 characters.
fn generate() -> Result<String, ConfigError> {
    let mut buf = [0u8; 24];
    scep_engine::crypto::default_provider()
        .fill_random(&mut buf)
        .map_err(|_| ConfigError("OS random source failed".into()))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf))
}

/// The `[[profile]]` entry the bootstrap serves: `default`, local issuer, the
/// local CA's NDES RA pair (signing RA + encryption RA, so that clients which
/// choose the certificate to encrypt to by key usage enrol too), a static
/// challenge, EKUs client-auth and server-auth allowed (what real enrolment
/// clients ask for: PyScep puts both in its CSR; a CSR asking for no EKU gets
/// client-auth), every other key at its default.
pub fn default_profile_section(challenge: &Challenge) -> ProfileSection {
    ProfileSection {
        name: Some(DEFAULT_PROFILE.into()),
        issuer: Some("local".into()),
        challenge_password: Some(challenge.password.clone()),
        ekus: Some(vec!["client-auth".into(), "server-auth".into()]),
        bootstrap: true,
        ..ProfileSection::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_challenge_is_long_random_and_persisted_once_0600() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let c = Challenge::choose(&data, None).unwrap();
        assert!(c.generated());
        assert!(c.password.len() >= 24);
        assert_ne!(c.password, Challenge::choose(&data, None).unwrap().password, "not random");
        c.persist(&data).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(data.join(CHALLENGE_FILE)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            assert_eq!(std::fs::metadata(&data).unwrap().permissions().mode() & 0o777, 0o700);
        }
        // A restart keeps it and does not report it as new.
        let again = Challenge::choose(&data, None).unwrap();
        assert_eq!(again, Challenge { password: c.password.clone(), source: ChallengeSource::File });
        // Persisting never overwrites.
        assert!(Challenge { password: "x".into(), source: ChallengeSource::Generated }.persist(&data).is_err());
    }

    #[test]
    fn explicit_challenge_wins_and_is_not_persisted() {
        let dir = tempfile::tempdir().unwrap();
        let c = Challenge::choose(dir.path(), Some("s3cret")).unwrap();
        assert_eq!(c, Challenge { password: "s3cret".into(), source: ChallengeSource::Explicit });
        assert!(!c.persist(dir.path()).unwrap());
        assert!(!dir.path().join(CHALLENGE_FILE).exists());
        assert!(Challenge::choose(dir.path(), Some("")).is_err());
    }

    /// The stale password file: a generated password, then a restart with an
    /// explicit one: the file no longer holds a password that is not in force.
    #[test]
    fn explicit_challenge_removes_the_file_of_an_earlier_generated_one() {
        let dir = tempfile::tempdir().unwrap();
        let generated = Challenge::choose(dir.path(), None).unwrap();
        generated.persist(dir.path()).unwrap();
        let explicit = Challenge::choose(dir.path(), Some("s3cret")).unwrap();
        assert!(explicit.persist(dir.path()).unwrap(), "reported as removed");
        assert!(!dir.path().join(CHALLENGE_FILE).exists());
        // Without the flag again: a new password is generated, not the old one resurrected.
        let next = Challenge::choose(dir.path(), None).unwrap();
        assert!(next.generated());
        assert_ne!(next.password, generated.password);
    }

    #[test]
    fn admin_key_is_generated_once_0600_and_valid_as_an_api_key() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let k = AdminKey::choose(&data).unwrap();
        assert!(k.generated && k.key.len() >= crate::settings::api_keys::MIN_KEY_LEN);
        assert!(format!("{k:?}").contains("redacted") && !format!("{k:?}").contains(&k.key));
        let keys = crate::state::api_keys::ApiKeys::from_settings(&[k.setting()]);
        assert_eq!(keys.authenticate(&k.key), Some((ADMIN_KEY_NAME, Role::Admin)));
        k.persist(&data).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(data.join(ADMIN_KEY_FILE)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(AdminKey::choose(&data).unwrap(), AdminKey { key: k.key.clone(), generated: false });
        assert!(AdminKey { key: "y".repeat(32), generated: true }.persist(&data).is_err(), "never overwrites");
        // Configured keys retire it.
        assert!(AdminKey::retire(&data).unwrap());
        assert!(!data.join(ADMIN_KEY_FILE).exists());
        assert!(!AdminKey::retire(&data).unwrap());
        // A file that cannot be a key is refused, naming the file and the fix.
        std::fs::write(data.join(ADMIN_KEY_FILE), "short\n").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(data.join(ADMIN_KEY_FILE), std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let e = AdminKey::choose(&data).unwrap_err();
        assert!(e.0.contains(ADMIN_KEY_FILE) && e.0.contains("remove it"), "{e}");
    }

    #[test]
    fn persisted_challenge_readable_by_others_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CHALLENGE_FILE);
        std::fs::write(&path, "pw\n").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            let e = Challenge::choose(dir.path(), None).unwrap_err();
            assert!(e.0.contains(&path.display().to_string()), "{e}");
        }
    }

    #[test]
    fn default_profile_is_named_default() {
        let s = default_profile_section(&Challenge { password: "pw".into(), source: ChallengeSource::File });
        assert_eq!(s.validated_name(0).unwrap(), DEFAULT_PROFILE);
        assert_eq!(s.challenge_password.as_deref(), Some("pw"));
    }
}
