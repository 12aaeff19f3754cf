//! Wiring: turns settings into the running parts, in one place.
//!
//! [`ServiceState::load`], [`ServiceState::reload`] and [`check_config`] read
//! the configuration (`crate::settings`: file, `CERTCTL_*` environment,
//! start options) and build from it each profile's engine, issuer and RA
//! ([`profile`]), the remote issuers ([`issuers`]), the local CA and the
//! first-run data directory ([`bootstrap`]), the Intune trust anchors
//! (`crate::intune::build`), the mTLS policies and the TLS configuration
//! ([`tls`]), the audit log (`crate::store`) and the admin API keys. This is
//! the only module that knows every part.
//!
//! May import every other folder except `http` and `operator` (which serve
//! what is wired here); nothing but the crate root imports `wiring`, apart
//! from the start-up constants transports read ([`bootstrap::CHALLENGE_FILE`]).

pub mod bootstrap;
pub mod check;
pub mod files;
pub mod issuers;
pub mod profile;
pub mod refuse;
pub mod tls;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};

use arc_swap::ArcSwap;
use scep_engine::config::ConfigError;
use scep_engine::intune::IntuneValidator;
use scep_engine::time::UnixTime;

use crate::settings::profile::ProfileSection;
use crate::settings::start::StartOptions;
use crate::settings::{self, ConfigFile, ServerSettings, env};
use crate::state::api_keys::ApiKeys;
use crate::state::metrics::{ChallengeEvent, Metrics};
use crate::state::{Profiles, ServiceState, Started};
use crate::store::audit::{AuditEvent, AuditLog};
use crate::store::challenges::{ExpiredChallenge, SqliteChallenges};
use crate::store::data_dir_lock::{DataDirLock, LockError, LockHolder};
use crate::tls::ReloadableTls;
use bootstrap::{AdminKey, Challenge};
use check::DryRun;
use profile::BuildContext;

impl ServiceState {
    /// Loads the configuration named by `options` (or bootstraps without one).
    ///
    /// # Errors
    /// The first invalid key, file or profile, named.
    pub fn load(options: StartOptions) -> Result<Started, ConfigError> {
        let Loaded {
            settings,
            profiles,
            challenge,
            admin_key,
            api_keys,
            local_ca,
            configured_local,
            pool,
            data_dir_lock,
        } = load_all(&options, UnixTime::now(), HashMap::new(), Running::default(), None)?;
        // On PostgreSQL the protection store first: it applies the migrations
        // the shared audit and challenge tables are part of (the audit log
        // takes the node's pool with the rest). On SQLite the audit log first,
        // as always: it creates its directory.
        let (protection, audit) = if pool.is_some() {
            let protection = open_protection(&settings, pool.as_ref())?;
            (protection, open_audit(&settings, pool.clone())?)
        } else {
            let audit = open_audit(&settings, None)?;
            (open_protection(&settings, None)?, audit)
        };
        let revocation_sync = pool.clone().map(|pool| {
            Arc::new(crate::store::revocation_sync::PostgresSyncLease::new(pool, &settings.node_name))
                as Arc<dyn crate::store::revocation_sync::RevocationSyncLease>
        });
        if let Some(ca) = &local_ca {
            crate::store::audit::record_undelivered(&audit, ca, UnixTime::now(), settings.audit.retention_days)?;
        }
        // Persist generated secrets (and retire stale ones) only once everything
        // else has loaded, so a failed start never hides a secret never shown.
        let mut banner = Vec::new();
        let bootstrap_mode = challenge.is_some();
        let generated_challenge = match challenge {
            Some(c) => {
                let removed = c.persist(&settings.data_dir)?;
                banner.push(bootstrap::challenge_banner(&c, &settings.data_dir, removed));
                c.generated().then_some(c.password)
            }
            None => None,
        };
        if bootstrap_mode {
            let removed = match &admin_key {
                Some(k) => {
                    k.persist(&settings.data_dir)?;
                    false
                }
                None => AdminKey::retire(&settings.data_dir)?,
            };
            banner.push(bootstrap::admin_key_banner(admin_key.as_ref(), api_keys.len(), &settings.data_dir, removed));
        }
        // The store reports challenges that expired unused to the state built
        // below (audit and metrics); the ones found at start are reported once it exists.
        let owner: Arc<OnceLock<Weak<Self>>> = Arc::new(OnceLock::new());
        let pending: Arc<Mutex<Vec<ExpiredChallenge>>> = Arc::default();
        let (report_to, queue) = (owner.clone(), pending.clone());
        let on_expired: crate::store::challenges::ExpiryObserver =
            Box::new(move |expired| match report_to.get().and_then(Weak::upgrade) {
                Some(state) => state.challenge_expired(expired),
                None => queue.lock().unwrap_or_else(PoisonError::into_inner).push(expired.clone()),
            });
        let challenges: Arc<dyn crate::store::challenges::ChallengeStore> = match &pool {
            None => Arc::new(SqliteChallenges::open(&SqliteChallenges::file(&settings.data_dir), on_expired)?),
            Some(pool) => Arc::new(crate::store::challenges_pg::PostgresChallenges::open(pool.clone(), on_expired)?),
        };
        let ocsp_signer = settings.ocsp_signer;
        let state = Arc::new(Self {
            settings,
            profiles: ArcSwap::from_pointee(profiles),
            options: Some(options),
            api_keys: ArcSwap::from_pointee(api_keys),
            audit: Some(audit),
            metrics: Metrics::default(),
            auth_limit: crate::state::auth_limit::AuthFailureLimit::default(),
            challenges: Some(challenges),
            protection: Some(protection),
            revocation_sync,
            shared_pool: pool,
            data_dir_lock,
            relying_parties: match &local_ca {
                Some(ca) => Some(Arc::new(
                    scep_issuers::ocsp::OcspResponder::new((**ca).clone(), ocsp_signer)
                        .map_err(|e| ConfigError(format!("local CA OCSP responder: {e}")))?,
                )),
                None => None,
            },
            configured_cas: ArcSwap::from_pointee(Vec::new()),
        });
        let _ = owner.set(Arc::downgrade(&state));
        state.publish_configured_cas(state.configured_ca_responders(&configured_local, ocsp_signer)?);
        for (name, api) in state.profiles.load().intune_api_profiles() {
            api.start_revocation_sync(name, state.revocation_reporter(), state.revocation_lease());
        }
        for expired in std::mem::take(&mut *pending.lock().unwrap_or_else(PoisonError::into_inner)) {
            state.challenge_expired(&expired);
        }
        Ok(Started { state, generated_challenge, banner })
    }

    /// The revocation-sync lease the pollers share with the other nodes, and
    /// this node's name (`None` on SQLite: one node).
    fn revocation_lease(&self) -> Option<(Arc<dyn crate::store::revocation_sync::RevocationSyncLease>, String)> {
        Some((self.revocation_sync.clone()?, self.settings.node_name.clone()))
    }

    /// Where the Intune revocation sync audits each request it handled
    /// (sent to the audit writer, not waited for: no request waits on it;
    /// `flush_audit` at shutdown commits what was queued).
    fn revocation_reporter(&self) -> Option<crate::intune::api::revocation::Reporter> {
        let audit = self.audit.clone()?;
        Some(Arc::new(move |profile: &str, serial: &str, code: &str, detail: String| {
            drop(audit.record(AuditEvent::intune_revocation(profile, serial, code, detail, UnixTime::now())));
        }))
    }

    /// Audits and counts a one-time challenge that expired unused.
    fn challenge_expired(&self, expired: &ExpiredChallenge) {
        self.metrics.challenge(&expired.profile, ChallengeEvent::Expired);
        tracing::info!(target: "scepd::challenges", profile = %expired.profile, id = expired.id, "one-time challenge expired unused");
        if let Some(audit) = &self.audit {
            let detail =
                format!("one-time challenge #{} (minted by API key {}) expired unused", expired.id, expired.created_by);
            // Sent to the writer now; the commit is not waited for (no request waits on it).
            drop(audit.record(AuditEvent::challenge(
                &expired.profile,
                "challenge_expired",
                "store",
                0,
                detail,
                UnixTime::now(),
            )));
        }
    }

    /// Re-reads the configuration (file and environment) and atomically swaps
    /// in the new profile set and API keys; on any error the current ones stay.
    /// Server settings (listen, TLS paths, limits, audit) are not reloaded:
    /// changes to them are logged and need a restart. (The TLS certificate and
    /// key *files* are re-read by [`ReloadableTls::reload`].)
    ///
    /// # Errors
    /// Why the new configuration was refused (the old one keeps serving).
    pub fn reload(&self) -> Result<(), ConfigError> {
        let options = self
            .options
            .as_ref()
            .ok_or_else(|| ConfigError("no configuration source to reload (state built in code)".into()))?;
        let previous = self.profiles.load().intune_validators();
        let running_local = self.relying_parties.as_ref().map(|r| r.ca().clone());
        let Loaded { settings, profiles, challenge, admin_key, api_keys, configured_local, .. } = load_all(
            options,
            UnixTime::now(),
            previous,
            Running {
                local_ca: running_local,
                pool: self.shared_pool.clone(),
                data_dir: Some(self.settings.data_dir.clone()),
            },
            None,
        )?;
        if challenge.is_some_and(|c| c.generated()) {
            return Err(ConfigError("challenge password file disappeared from the data directory".into()));
        }
        if admin_key.is_some_and(|k| k.generated) {
            return Err(ConfigError(format!(
                "{} disappeared from the data directory; restart scepd to create a new admin API key",
                bootstrap::ADMIN_KEY_FILE
            )));
        }
        let changed = self.settings.changed_keys(&settings);
        if !changed.is_empty() {
            let keys = changed.join(", ");
            tracing::warn!(changed = %keys, "server settings changed ({keys}); they take effect after a restart");
        }
        let published = self.configured_ca_responders(&configured_local, self.settings.ocsp_signer)?;
        let names = profiles.names().join(",");
        for (name, api) in profiles.intune_api_profiles() {
            api.start_revocation_sync(name, self.revocation_reporter(), self.revocation_lease());
        }
        self.profiles.store(Arc::new(profiles));
        self.publish_configured_cas(published);
        self.api_keys.store(Arc::new(api_keys));
        tracing::info!(profiles = %names, "configuration reloaded");
        Ok(())
    }

    /// SIGHUP, as both transports answer it: re-reads the configuration
    /// ([`Self::reload`]), then the TLS certificate and key when TLS is on
    /// ([`ReloadableTls::reload`]); whatever is refused keeps its
    /// previous version in force. Logs every outcome. Reads files: call it off
    /// the async executor.
    pub fn reload_on_hangup(&self, tls: Option<&ReloadableTls>) {
        tracing::info!("SIGHUP: reloading configuration");
        if let Err(e) = self.reload() {
            tracing::error!(error = %e, "reload refused; the previous configuration keeps serving");
        }
        match tls.map(|t| t.reload(self)) {
            None => {}
            Some(Ok(())) => tracing::info!("TLS certificate reloaded"),
            Some(Err(e)) => tracing::error!(error = %e, "TLS reload refused; the previous certificate keeps serving"),
        }
    }
}

/// One complete configuration load.
struct Loaded {
    settings: ServerSettings,
    profiles: Profiles,
    /// `Some` in bootstrap mode (no configuration file).
    challenge: Option<Challenge>,
    /// The bootstrap admin API key: `Some` in bootstrap mode when the operator
    /// configured no API key.
    admin_key: Option<AdminKey>,
    api_keys: ApiKeys,
    /// The local CA, when a profile issues through it.
    local_ca: Option<Arc<scep_issuers::LocalCa>>,
    /// Every `[[issuer]] type = "local"` CA by issuer id (sorted), whether
    /// or not a profile uses it: all are published under `/pki/`.
    configured_local: Vec<(String, scep_issuers::LocalCa)>,
    /// The node's one PostgreSQL pool ([`node_pool`]); `None` on SQLite.
    pool: SharedPool,
    /// The data directory's lock, taken by `serve`'s first load before
    /// anything is written there ([`lock_data_dir`]); `None` otherwise.
    data_dir_lock: Option<DataDirLock>,
}

/// The node's one PostgreSQL pool, when `[store]` names PostgreSQL.
type SharedPool = Option<Arc<scep_store::postgres::Pool>>;

/// `serve`'s first load locks the data directory ([`DataDirLock`]) before
/// anything is written there, when a SQLite store lives in it (the default
/// `[store]`): a second process serving from the directory would answer from
/// diverging memory. `first_serve` is false on a reload (the data directory
/// in use stays, and with it the running process's lock) and for
/// `check-config` (which writes nothing and works beside a running server).
/// With the store on PostgreSQL the directory holds no database and may be
/// shared by nodes (see `docs/high-availability.md`): no lock.
///
/// # Errors
/// Naming the data directory, and the process holding it.
fn lock_data_dir(settings: &ServerSettings, first_serve: bool) -> Result<Option<DataDirLock>, ConfigError> {
    if !first_serve || !matches!(settings.store.backend, scep_store::Backend::Sqlite) {
        return Ok(None);
    }
    let lock = DataDirLock::acquire(&settings.data_dir, LockHolder::Serve)?;
    tracing::info!(lock = %lock.path().display(), "data directory locked: no other scepd may serve from it");
    Ok(Some(lock))
}

/// What a reload carries over from the running state (nothing on a first load).
#[derive(Default)]
struct Running {
    /// The local CA already serving (kept, see [`bootstrap::open_or_keep_local_ca`]).
    local_ca: Option<scep_issuers::LocalCa>,
    /// The node's pool ([`node_pool`]).
    pool: SharedPool,
    /// The data directory in use, on a reload: it stays until a restart, as
    /// every `[server]` setting (a reload once bootstrapped a new CA in the
    /// new directory before refusing it).
    data_dir: Option<std::path::PathBuf>,
}

/// The node's one pool for `settings.store` (one pool per node: the
/// protection store, the one-time challenges, the local CA's certificate
/// index and the audit log share it), named after `settings.node_name`:
/// `existing` when a reload already has one, a new one (connecting lazily)
/// otherwise, `None` on SQLite.
///
/// # Errors
/// Naming `store.url` when the settings cannot work.
fn node_pool(settings: &ServerSettings, existing: SharedPool) -> Result<SharedPool, ConfigError> {
    if existing.is_some() {
        return Ok(existing);
    }
    scep_store::shared_pool(&settings.store, &settings.node_name)
        .map_err(|e| ConfigError(format!("store ({}): {e}", settings.store.describe())))
}

/// `previous`: Intune validators of the configuration being replaced (see
/// [`crate::intune::build`]); `running`: on reload, the local CA
/// already serving (kept, see [`bootstrap::open_or_keep_local_ca`]) and the
/// node's pool;
/// `dry_run`: `check-config` (nothing written).
fn load_all(
    options: &StartOptions,
    now: UnixTime,
    previous: HashMap<String, IntuneValidator>,
    running: Running,
    dry_run: Option<&mut DryRun>,
) -> Result<Loaded, ConfigError> {
    let vars = match &options.env {
        Some(v) => v.clone(),
        None => env::from_process(),
    };
    // The file (if any), then the environment on top of it.
    let (mut file, base) = match &options.config {
        Some(path) => (settings::read(path)?, path.parent().filter(|p| !p.as_os_str().is_empty())),
        None => (ConfigFile::default(), None),
    };
    let applied = env::apply(&mut file, &vars)?;
    if options.config.is_none() && !applied.defines_profiles {
        if !file.profiles.is_empty() {
            return Err(ConfigError(
                "CERTCTL_SCEP_PROFILE_* variables need CERTCTL_SCEP_PROFILES (or a --config file)".into(),
            ));
        }
        return bootstrap_load(options, now, file, running, dry_run).map_err(|e| applied.annotate(e));
    }
    if options.challenge_password.is_some() {
        tracing::warn!("--challenge-password is ignored with a configuration: profiles set challenge_password");
    }
    build_file(options, now, &file, base, previous, running, dry_run).map_err(|e| applied.annotate(e))
}

fn build_file(
    options: &StartOptions,
    now: UnixTime,
    file: &ConfigFile,
    base: Option<&Path>,
    previous: HashMap<String, IntuneValidator>,
    running: Running,
    dry_run: Option<&mut DryRun>,
) -> Result<Loaded, ConfigError> {
    let mut settings = file.server.validate(base)?;
    settings.audit = file.audit.validate(base)?;
    settings.store = file.store.validate(base)?;
    apply_overrides(&mut settings, options);
    let first_serve = running.data_dir.is_none() && dry_run.is_none();
    if let Some(running_dir) = running.data_dir {
        if settings.data_dir != running_dir {
            tracing::warn!(
                configured = %settings.data_dir.display(),
                in_use = %running_dir.display(),
                "server.data_dir changed; the data directory in use stays until a restart"
            );
        }
        settings.data_dir = running_dir;
    }
    let api_keys = ApiKeys::from_settings(&settings::api_keys::validate(&file.api_keys)?);
    // Before anything below writes to the data directory.
    let data_dir_lock = lock_data_dir(&settings, first_serve)?;
    let pool = node_pool(&settings, running.pool)?;
    let mut dry_run = dry_run;
    // `[[issuer]] type = "local"` entries keep their index in the shared
    // store, or in the data directory (check-config: its scratch directory).
    let index_dir = match dry_run.as_deref_mut() {
        Some(d) => d.scratch()?,
        None => settings.data_dir.clone(),
    };
    let place = issuers::LocalIssuerPlace {
        index_dir: &index_dir,
        shared_index: if dry_run.is_some() { None } else { pool.clone() },
        now,
        public_url: settings.public_url.as_deref(),
    };
    let issuers = issuers::build_issuers(&file.issuers, base, &place)?;
    let mut configured_local: Vec<(String, scep_issuers::LocalCa)> =
        issuers.iter().filter_map(|(id, i)| i.inventory().map(|ca| (id.clone(), ca.clone()))).collect();
    configured_local.sort_by(|a, b| a.0.cmp(&b.0));
    // Every profile is validated first: the Intune profiles share one replay
    // cache sized for all of them.
    let validated =
        file.profiles.iter().enumerate().map(|(i, s)| s.validate(i, base)).collect::<Result<Vec<_>, _>>()?;
    let replay = crate::intune::shared_replay_cache(
        validated.iter().filter_map(|p| p.intune.as_ref().map(|i| (p.name.as_str(), i))),
        &previous,
    )?;
    let pkcs11 = file.pkcs11.validate(base)?;
    let mut ctx = BuildContext::new(base, &settings.data_dir, now)
        .with_public_url(settings.public_url.clone())
        .with_pkcs11(pkcs11)
        .with_running_local_ca(running.local_ca)
        .with_shared_index(pool.clone())
        .with_issuers(issuers)
        .with_previous_intune(previous)
        .with_replay_cache(replay);
    if let Some(dry_run) = dry_run {
        ctx = ctx.with_dry_run(dry_run);
    }
    let mut built = Vec::with_capacity(validated.len());
    for profile in &validated {
        built.push(profile::build(profile, &mut ctx)?);
    }
    let default = match &file.server.default_profile {
        Some(name) => name.clone(),
        None => first_name(&file.profiles)?,
    };
    let local_ca = ctx.opened_local_ca();
    Ok(Loaded {
        settings,
        profiles: Profiles::new(built, default)?,
        challenge: None,
        admin_key: None,
        api_keys,
        local_ca,
        configured_local,
        pool,
        data_dir_lock,
    })
}

/// No configuration at all: the bootstrap `default` profile. API keys come
/// from `CERTCTL_API_KEYS_NAMED`; without any, the bootstrap admin key
/// ([`AdminKey`]). With `dry_run` (`check-config`) the local CA is checked
/// as [`DryRun`] describes; the challenge and the admin key are only read,
/// never written (that is [`ServiceState::load`]'s, after loading).
fn bootstrap_load(
    options: &StartOptions,
    now: UnixTime,
    file: ConfigFile,
    running: Running,
    dry_run: Option<&mut DryRun>,
) -> Result<Loaded, ConfigError> {
    let mut settings = ServerSettings::default();
    apply_overrides(&mut settings, options);
    settings.store = file.store.validate(None)?;
    settings.public_url = file.server.public_url.as_deref().map(settings::validate_public_url).transpose()?;
    settings.node_name = settings::node_name(file.server.node_name.as_deref())?;
    // Before anything below writes to the data directory; not for a reload
    // (the lock is held) nor for check-config (a dry run writes nothing and
    // must work beside a running serve).
    let data_dir_lock = lock_data_dir(&settings, running.data_dir.is_none() && dry_run.is_none())?;
    let pool = node_pool(&settings, running.pool)?;
    if let Some(signer) = file.server.ocsp_signer.as_deref() {
        settings.ocsp_signer = settings::parse_ocsp_signer(signer)?;
    }
    let mut configured = settings::api_keys::validate(&file.api_keys)?;
    let admin_key = if configured.is_empty() { Some(AdminKey::choose(&settings.data_dir)?) } else { None };
    configured.extend(admin_key.iter().map(AdminKey::setting));
    let api_keys = ApiKeys::from_settings(&configured);
    let challenge = Challenge::choose(&settings.data_dir, options.challenge_password.as_deref())?;
    let section = bootstrap::default_profile_section(&challenge);
    let mut ctx = BuildContext::new(None, &settings.data_dir, now)
        .with_public_url(settings.public_url.clone())
        .with_running_local_ca(running.local_ca)
        .with_shared_index(pool.clone());
    if let Some(dry_run) = dry_run {
        ctx = ctx.with_dry_run(dry_run);
    }
    let profile = section.build(0, &mut ctx)?;
    let profiles = Profiles::new(vec![profile], bootstrap::DEFAULT_PROFILE.into())?;
    let local_ca = ctx.opened_local_ca();
    Ok(Loaded {
        settings,
        profiles,
        challenge: Some(challenge),
        admin_key,
        api_keys,
        local_ca,
        configured_local: Vec::new(),
        pool,
        data_dir_lock,
    })
}

fn first_name(sections: &[ProfileSection]) -> Result<String, ConfigError> {
    let first = sections.first().ok_or_else(|| ConfigError("profile: at least one [[profile]] is required".into()))?;
    Ok(first.validated_name(0)?.to_string())
}

fn apply_overrides(settings: &mut ServerSettings, options: &StartOptions) {
    if let Some(d) = &options.data_dir {
        settings.data_dir.clone_from(d);
    }
    if let Some(l) = options.listen {
        settings.listen = l;
    }
}

/// What `scepd check-config` found: the profiles, and what the first
/// `serve` would create (nothing was written).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// The profile names, in configuration order.
    pub profiles: Vec<String>,
    /// Paths (with what each is) the first `serve` would create.
    pub would_create: Vec<String>,
    /// No configuration file and no `CERTCTL_SCEP_PROFILES`: what was
    /// checked is the built-in bootstrap configuration `serve` would run
    /// (the `default` profile on the local CA in the data directory).
    pub bootstrap: bool,
}

/// Opens the protection store `settings` name (applying pending
/// migrations) and starts its purge of expired entries.
///
/// # Errors
/// Naming `store.url` (or the SQLite file) and why.
fn open_protection(
    settings: &ServerSettings,
    pool: Option<&Arc<scep_store::postgres::Pool>>,
) -> Result<Arc<dyn scep_store::ProtectionStore>, ConfigError> {
    let store = scep_store::open_with_pool(&settings.store, &settings.data_dir, pool)
        .map_err(|e| ConfigError(format!("store ({}): {e}", settings.store.describe())))?;
    tracing::info!(store = %settings.store.describe(), "protection store open (Intune nonces, rate-limit windows)");
    if matches!(settings.store.backend, scep_store::Backend::Postgres(_)) {
        // Said at every start so that no operator mistakes this for full sharing.
        tracing::warn!(
            "the PostgreSQL store shares Intune replay nonces, rate-limit windows, one-time challenges and the \
             audit log and the local CA's certificate index between nodes; each node keeps only caches \
             in the data directory (see docs/high-availability.md)"
        );
    }
    crate::store::protection::start_purge(&store);
    Ok(store)
}

/// Opens the audit log: `audit.db` (`[audit] path`) with SQLite, the shared
/// table on PostgreSQL (`pool`: the node's pool for the audit log and the
/// revocation-sync lease, until the store's pools are one).
///
/// # Errors
/// Naming `audit.path` or the store and why.
fn open_audit(
    settings: &ServerSettings,
    pool: Option<Arc<scep_store::postgres::Pool>>,
) -> Result<AuditLog, ConfigError> {
    let (retention, node) = (settings.audit.retention_days, settings.node_name.as_str());
    let log = match pool {
        None => AuditLog::open(&settings.audit.file(&settings.data_dir), retention, node)?,
        Some(pool) => AuditLog::open_postgres(pool, retention, node)?,
    };
    tracing::info!(node, store = log.path().map_or("postgresql", |_| "sqlite"), "audit log open");
    Ok(log.with_discovery(settings.audit.discovery))
}

/// Applies the store's pending schema migrations and reports the versions
/// before and after: `scepd migrate`. On SQLite it holds the data
/// directory's lock while it migrates ([`DataDirLock`]); beside a running
/// `serve` (which applied every migration it knows at its start) it only
/// reports the version when nothing is pending, and refuses to change the
/// schema under the running process otherwise.
///
/// # Errors
/// The first problem with the configuration or the database, named; on
/// SQLite, pending migrations while another scepd holds the data directory.
pub fn migrate(options: &StartOptions) -> Result<(String, i64, i64), ConfigError> {
    let vars = options.env.clone().unwrap_or_else(env::from_process);
    // Only what names the store: the file's [server] and [store], the
    // environment on top, the command line's data directory.
    let (mut file, base) = match &options.config {
        Some(path) => (settings::read(path)?, path.parent().filter(|p| !p.as_os_str().is_empty())),
        None => (ConfigFile::default(), None),
    };
    let applied = env::apply(&mut file, &vars)?;
    let mut settings = file.server.validate(base).map_err(|e| applied.annotate(e))?;
    apply_overrides(&mut settings, options);
    settings.store = file.store.validate(base).map_err(|e| applied.annotate(e))?;
    let store_error = |e: scep_store::StoreError| ConfigError(format!("store ({}): {e}", settings.store.describe()));
    let _lock = match settings.store.backend {
        scep_store::Backend::Postgres(_) => None,
        // Creates the data directory (0700) when missing.
        scep_store::Backend::Sqlite => match DataDirLock::acquire(&settings.data_dir, LockHolder::Migrate) {
            Ok(lock) => Some(lock),
            Err(LockError::Held { data_dir, pid, holder }) => {
                let (found, expected) = scep_store::check(&settings.store, &settings.data_dir).map_err(store_error)?;
                if found == expected {
                    return Ok((settings.store.describe(), found, found));
                }
                return Err(ConfigError(format!(
                    "data_dir {}: {} {}, and the store has migrations pending (schema version {found}, this \
                     scepd's {expected}); they would change the schema under the running process. Stop it \
                     first: `scepd migrate`, or the new scepd's serve, applies them",
                    data_dir.display(),
                    crate::store::data_dir_lock::describe_holder(pid, holder),
                    holder.map_or("holds it", |h| h.activity()),
                )));
            }
            Err(e) => return Err(e.into()),
        },
    };
    let (before, after) = scep_store::migrate(&settings.store, &settings.data_dir).map_err(store_error)?;
    Ok((settings.store.describe(), before, after))
}

/// Validates a configuration (the file, if any, and the `CERTCTL_*`
/// environment, with the start options `serve` takes) completely, every
/// profile built and every key and file checked, the `[server.tls]`
/// certificate and key and the audit database ([`AuditLog::check`])
/// included, without serving it and without writing to the data directory:
/// `scepd check-config`. The local CA is checked as [`check::DryRun`]
/// describes; what `serve` would create is reported. Without a file and
/// without `CERTCTL_SCEP_PROFILES` it checks what `serve` would run then:
/// the bootstrap `default` profile on the data directory
/// ([`CheckReport::bootstrap`]).
///
/// # Errors
/// The first problem, named.
pub fn check_config(options: &StartOptions) -> Result<CheckReport, ConfigError> {
    let vars = options.env.clone().unwrap_or_else(env::from_process);
    let options = StartOptions { env: Some(vars), ..options.clone() };
    let mut dry_run = DryRun::default();
    let loaded = load_all(&options, UnixTime::now(), HashMap::new(), Running::default(), Some(&mut dry_run))?;
    let bootstrap = loaded.challenge.is_some();
    if loaded.challenge.as_ref().is_some_and(Challenge::generated) {
        dry_run.note_missing(
            &loaded.settings.data_dir.join(bootstrap::CHALLENGE_FILE),
            "generated challenge password of the default profile, mode 0600",
        );
    }
    if loaded.admin_key.as_ref().is_some_and(|k| k.generated) {
        dry_run.note_missing(
            &loaded.settings.data_dir.join(bootstrap::ADMIN_KEY_FILE),
            "generated admin API key, mode 0600",
        );
    }
    if let Some(tls) = &loaded.settings.tls {
        tls::server_config(tls, &loaded.profiles)?;
    }
    let data_dir = &loaded.settings.data_dir;
    dry_run.note_missing(data_dir, "data directory, mode 0700");
    // On PostgreSQL the audit table is part of the store's schema, checked below.
    if matches!(loaded.settings.store.backend, scep_store::Backend::Sqlite) {
        let audit_file = loaded.settings.audit.file(data_dir);
        AuditLog::check(&audit_file)?;
        if let Some(parent) = audit_file.parent() {
            dry_run.note_missing(parent, "audit log directory");
        }
        dry_run.note_missing(&audit_file, "audit log database");
    }
    // The store: connection and schema (changing nothing).
    let (found, expected) = scep_store::check(&loaded.settings.store, data_dir)
        .map_err(|e| ConfigError(format!("store ({}): {e}", loaded.settings.store.describe())))?;
    if matches!(loaded.settings.store.backend, scep_store::Backend::Sqlite) {
        dry_run.note_missing(&scep_store::sqlite::SqliteStore::file(data_dir), "protection store database");
        dry_run.note_missing(&SqliteChallenges::file(data_dir), "one-time challenge database");
        dry_run.note_missing(
            &data_dir.join(crate::store::data_dir_lock::LOCK_FILE),
            "lock file: one scepd serves from the data directory",
        );
    } else if found < expected {
        dry_run.would_create.push(format!(
            "store schema: {} at version {found}; serve or `scepd migrate` brings it to {expected}",
            loaded.settings.store.describe()
        ));
    }
    let profiles = loaded.profiles.names().into_iter().map(str::to_string).collect();
    drop(loaded);
    Ok(CheckReport { profiles, would_create: std::mem::take(&mut dry_run.would_create), bootstrap })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Profiles;
    use crate::store::audit::AuditLog;
    use crate::testutil::TestDir;
    use profile::BuildContext;

    fn options(dir: &TestDir, config: &str) -> StartOptions {
        let path = dir.path().join("scepd.toml");
        std::fs::write(&path, config).unwrap();
        StartOptions {
            config: Some(path),
            data_dir: Some(dir.path().join("data")),
            env: Some(Vec::new()),
            ..StartOptions::default()
        }
    }

    #[test]
    fn loads_profiles_and_the_default() {
        let dir = TestDir::new();
        let cfg = format!("{}\n{}", dir.profile_toml("corp"), dir.profile_toml("iot"));
        let started = ServiceState::load(options(&dir, &cfg)).unwrap();
        assert!(started.generated_challenge.is_none());
        let p = started.state.profiles();
        assert_eq!(p.names(), vec!["corp", "iot"]);
        assert_eq!(p.default_name(), "corp");
        assert_eq!(p.get(None).unwrap().engine.config().name, "corp");
        assert_eq!(p.get(Some("iot")).unwrap().engine.config().name, "iot");
        assert!(p.get(Some("nope")).is_none());
    }

    #[test]
    fn default_profile_and_duplicates_are_checked() {
        let dir = TestDir::new();
        let cfg = format!("[server]\ndefault_profile = \"iot\"\n{}", dir.profile_toml("corp"));
        let e = ServiceState::load(options(&dir, &cfg)).unwrap_err();
        assert!(e.0.starts_with("server.default_profile"), "{e}");
        let cfg = format!("{}\n{}", dir.profile_toml("corp"), dir.profile_toml("corp"));
        let e = ServiceState::load(options(&dir, &cfg)).unwrap_err();
        assert!(e.0.starts_with("profile[corp].name"), "{e}");
        let e = ServiceState::load(options(&dir, "")).unwrap_err();
        assert!(e.0.starts_with("profile"), "{e}");
        let e = ServiceState::load(options(&dir, "[[profile]]\nname = \"x\"\nbogus = 1\n")).unwrap_err();
        assert!(e.0.contains("bogus"), "{e}");
    }

    #[test]
    fn reload_swaps_atomically_and_keeps_the_old_set_on_error() {
        let dir = TestDir::new();
        let opts = options(&dir, &dir.profile_toml("corp"));
        let path = opts.config.clone().unwrap();
        let state = ServiceState::load(opts).unwrap().state;
        let before = state.profiles();

        std::fs::write(&path, format!("{}\n{}", dir.profile_toml("corp"), dir.profile_toml("iot"))).unwrap();
        state.reload().unwrap();
        assert_eq!(state.profiles().names(), vec!["corp", "iot"]);
        // A request holding the old snapshot still sees it.
        assert_eq!(before.names(), vec!["corp"]);

        std::fs::write(&path, "[[profile]]\nname = \"BAD\"\n").unwrap();
        let e = state.reload().unwrap_err();
        assert!(e.0.starts_with("profile[0].name"), "{e}");
        assert_eq!(state.profiles().names(), vec!["corp", "iot"]);
    }

    /// The probe's report: a reload with `[server]` and `[audit]` changes
    /// logged "server settings changed; they take effect after a restart"
    /// without saying which.
    #[test]
    fn a_reload_names_the_server_and_audit_keys_that_need_a_restart() {
        let dir = TestDir::new();
        let config = |body_limit: u32, retention: u32| {
            format!(
                "[server]\nbody_limit = {body_limit}\n[audit]\nretention_days = {retention}\n{}",
                dir.profile_toml("corp")
            )
        };
        let opts = options(&dir, &config(4096, 30));
        let path = opts.config.clone().unwrap();
        let state = ServiceState::load(opts).unwrap().state;

        std::fs::write(&path, config(8192, 60)).unwrap();
        let log = crate::testutil::log_lines_of(|| state.reload().unwrap());
        let line = log.lines().find(|l| l.contains("server settings changed")).unwrap_or_else(|| panic!("{log}"));
        assert!(
            line.contains(
                "server settings changed (server.body_limit, audit.retention_days); they take effect after a restart"
            ),
            "{line}"
        );
        // The running settings stay until a restart.
        assert_eq!((state.settings().body_limit, state.settings().audit.retention_days), (4096, 30));

        // Nothing changed: nothing said.
        std::fs::write(&path, config(4096, 30)).unwrap();
        let log = crate::testutil::log_lines_of(|| state.reload().unwrap());
        assert!(!log.contains("server settings changed"), "{log}");
    }

    /// A reload keeps the data directory in use (a `[server]` setting, which
    /// takes effect at a restart): it once bootstrapped a new CA and RA in
    /// the new directory, then refused the reload.
    #[test]
    fn a_reload_keeps_the_data_directory_and_writes_nothing_in_a_new_one() {
        let dir = TestDir::new();
        let path = dir.path().join("scepd.toml");
        let config = |data: &str| {
            format!(
                "[server]\ndata_dir = \"{}\"\n[[profile]]\nname = \"corp\"\nissuer = \"local\"\n\
                 challenge_password = \"secret123\"\n",
                dir.path().join(data).display()
            )
        };
        std::fs::write(&path, config("first")).unwrap();
        let opts = StartOptions { config: Some(path.clone()), env: Some(Vec::new()), ..StartOptions::default() };
        let state = ServiceState::load(opts).unwrap().state;
        assert!(dir.path().join("first/ca.pem").exists());

        std::fs::write(&path, config("second")).unwrap();
        state.reload().unwrap();
        assert!(!dir.path().join("second").exists(), "the reload wrote into the new data directory");
        assert_eq!(state.settings().data_dir, dir.path().join("first"));
    }

    /// One serving state per data directory: a second load of the same
    /// directory is refused before it writes anything there, naming the
    /// directory and this process; check-config and a reload work beside the
    /// first; once the first state is gone a new one loads. On PostgreSQL
    /// nothing is locked.
    #[test]
    fn a_second_load_of_one_data_directory_is_refused_while_the_first_serves() {
        let dir = TestDir::new();
        let opts = options(&dir, &dir.profile_toml("corp"));
        let data = opts.data_dir.clone().unwrap();
        let first = ServiceState::load(opts.clone()).unwrap().state;
        assert_eq!(first.data_dir_lock(), Some(data.join("scepd.lock").as_path()));
        let listing = || {
            let mut names: Vec<_> = std::fs::read_dir(&data).unwrap().map(|e| e.unwrap().file_name()).collect();
            names.sort();
            names
        };
        let before = listing();
        let e = ServiceState::load(opts.clone()).unwrap_err();
        let held = format!(
            "data_dir {}: another scepd (pid {}, `scepd serve`) is serving from it",
            data.display(),
            std::process::id()
        );
        assert!(e.0.starts_with(&held), "{e}");
        assert_eq!(listing(), before, "the refused load wrote into the data directory");
        assert_eq!(check_config(&opts).unwrap().profiles, vec!["corp"]);
        first.reload().unwrap();
        drop(first);
        let second = ServiceState::load(opts).unwrap().state;
        assert!(second.data_dir_lock().is_some());

        let mut pg = ServerSettings { data_dir: dir.path().join("pg"), ..ServerSettings::default() };
        pg.store = settings::store::StoreSection {
            url: Some("postgres://scepd@127.0.0.1:9/scepd".into()),
            ..Default::default()
        }
        .validate(None)
        .unwrap();
        assert!(lock_data_dir(&pg, true).unwrap().is_none());
        assert!(!pg.data_dir.exists(), "nothing is written for a lock on PostgreSQL");
    }

    /// `scepd migrate` on SQLite beside a serving process changes nothing:
    /// with migrations pending it refuses, naming the process; with none it
    /// reports the version. Alone, it migrates under the lock.
    #[test]
    fn migrate_beside_a_serving_process_changes_nothing() {
        let dir = TestDir::new();
        let opts = options(&dir, &dir.profile_toml("corp"));
        let data = opts.data_dir.clone().unwrap();
        let store = scep_store::sqlite::SqliteStore::file(&data);
        let serving = DataDirLock::acquire(&data, LockHolder::Serve).unwrap();
        let e = migrate(&opts).unwrap_err();
        let held = format!(
            "data_dir {}: another scepd (pid {}, `scepd serve`) is serving from it, and the store has migrations \
             pending (schema version 0,",
            data.display(),
            std::process::id()
        );
        assert!(e.0.starts_with(&held) && e.0.contains("Stop it first"), "{e}");
        assert!(!store.exists(), "migrate wrote beside a serving process");
        drop(serving);
        let latest = scep_store::migrations::LATEST;
        let (_, before, after) = migrate(&opts).unwrap();
        assert_eq!((before, after), (0, latest));
        let _serving = DataDirLock::acquire(&data, LockHolder::Serve).unwrap();
        let (_, before, after) = migrate(&opts).unwrap();
        assert_eq!((before, after), (latest, latest));
    }

    /// A data directory that issued a certificate and lost `ca.pem` and
    /// `ca.key`: `serve` creates no new CA over it, and `check-config` (which
    /// bootstraps a scratch copy) reads the real directory's index and says
    /// the same, naming the data directory rather than its copy.
    #[test]
    fn check_config_and_serve_refuse_a_new_ca_where_certificates_were_issued() {
        use scep_issuers::local::store::{DB_FILE, NewCertificate, Store};
        let dir = TestDir::new();
        let opts =
            options(&dir, "[[profile]]\nname = \"corp\"\nissuer = \"local\"\nchallenge_password = \"secret123\"\n");
        let data = opts.data_dir.clone().unwrap();
        let state = ServiceState::load(opts.clone()).unwrap().state;
        let ca_id = state.relying_parties().unwrap().ca().ca_id().to_string();
        drop(state);
        // The RA certificate stands in for an issued one: the CA signed it.
        let der =
            scep_engine::pem::certificates(&std::fs::read_to_string(data.join("ra.pem")).unwrap()).unwrap().remove(0);
        let cert = scep_engine::x509::CertificateRef::parse(&der).unwrap();
        let store = Store::open(&data.join(DB_FILE)).unwrap();
        futures_lite::future::block_on(store.record_enrollment(NewCertificate {
            ca_id: ca_id.clone(),
            serial_hex: scep_issuers::x509_build::serial_hex(cert.serial),
            profile: "corp".into(),
            transaction_id: "t1".into(),
            subject: "CN=device".into(),
            sans: String::new(),
            not_before: cert.not_before,
            not_after: cert.not_after,
            der: der.clone(),
            issued_at: UnixTime::now(),
            renewal_of: None,
            intune_device: None,
        }))
        .unwrap();
        drop(store);
        std::fs::remove_file(data.join("ca.pem")).unwrap();
        std::fs::remove_file(data.join("ca.key")).unwrap();
        let holds =
            format!("{} holds 1 certificate(s) issued by CA {ca_id} (CN=scepd CA ", data.join(DB_FILE).display());
        let e = check_config(&opts).unwrap_err();
        assert!(e.0.starts_with(&format!("data_dir {}: the local CA: there is no CA", data.display())), "{e}");
        assert!(e.0.contains(&holds) && e.0.contains("restore ca.pem and ca.key from backup"), "{e}");
        let e = ServiceState::load(opts).unwrap_err();
        assert!(
            e.0.starts_with(&format!("data_dir {}: cannot bootstrap the local CA: there is no CA", data.display())),
            "{e}"
        );
        assert!(e.0.contains(&holds), "{e}");
        assert!(!data.join("ca.pem").exists(), "a new CA was created");
    }

    #[test]
    fn a_state_built_in_code_refuses_reload_and_keeps_serving() {
        let dir = TestDir::new();
        let p =
            crate::testutil::section(&dir, "p").build(0, &mut BuildContext::new(None, dir.path(), dir.now())).unwrap();
        let state = ServiceState::new(ServerSettings::default(), Profiles::new(vec![p], "p".into()).unwrap());
        assert!(state.reload().unwrap_err().0.contains("no configuration source"));
        assert_eq!(state.profiles().names(), vec!["p"]);
    }

    #[test]
    fn cli_overrides_win_over_the_file() {
        let dir = TestDir::new();
        let mut opts = options(&dir, &format!("[server]\nlisten = \"127.0.0.1:1\"\n{}", dir.profile_toml("p")));
        opts.listen = Some("127.0.0.1:2".parse().unwrap());
        opts.data_dir = Some(dir.path().join("elsewhere"));
        let state = ServiceState::load(opts).unwrap().state;
        assert_eq!(state.settings().listen.port(), 2);
        assert_eq!(state.settings().data_dir, dir.path().join("elsewhere"));
    }

    #[test]
    fn bootstrap_without_config_goes_through_the_local_ca_hook() {
        let dir = TestDir::new();
        let r = ServiceState::load(StartOptions {
            data_dir: Some(dir.path().join("d")),
            env: Some(Vec::new()),
            ..Default::default()
        });
        match r {
            // Placeholder: the local CA is not linked yet; nothing must be persisted then.
            Err(e) => {
                assert!(e.0.contains("local CA"), "{e}");
                assert!(!dir.path().join("d").join(bootstrap::CHALLENGE_FILE).exists());
            }
            // Linked: the default profile is served and the generated challenge reported once.
            Ok(started) => {
                assert_eq!(started.state.profiles().default_name(), "default");
                let pw = started.generated_challenge.unwrap();
                assert!(pw.len() >= 24);
                // A restart (the first state gone, with its data directory lock).
                drop(started.state);
                let again = ServiceState::load(StartOptions {
                    data_dir: Some(dir.path().join("d")),
                    env: Some(Vec::new()),
                    ..Default::default()
                })
                .unwrap();
                assert!(again.generated_challenge.is_none());
            }
        }
    }

    /// Intune API mode: no Connector bundle, no challenge password; the
    /// start and check-config refuse a secret file others can read, naming
    /// the key; a good setup serves the profile with its API client.
    #[test]
    fn intune_api_profiles_start_and_check_config_checks_the_secret_file() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = TestDir::new();
        let secret = dir.path().join("entra-secret");
        std::fs::write(&secret, "s3cret\n").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o640)).unwrap();
        let cfg = dir.profile_toml("intune").replace("challenge_password = \"secret123\"\n", "")
            + "intune_enabled = true\nintune_mode = \"api\"\nintune_tenant_id = \"t\"\nintune_client_id = \"c\"\n\
               intune_client_secret_path = \"entra-secret\"\nintune_authority_url = \"http://127.0.0.1:9/\"\n\
               intune_graph_url = \"http://127.0.0.1:9/\"\n";
        let opts = options(&dir, &cfg);
        for e in [check_config(&opts).unwrap_err(), ServiceState::load(opts.clone()).unwrap_err()] {
            assert!(e.0.starts_with("profile[intune].intune_client_secret_path: ") && e.0.contains("640"), "{e}");
        }
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(check_config(&opts).unwrap().profiles, vec!["intune"]);
        let state = ServiceState::load(opts).unwrap().state;
        let p = state.profiles();
        let profile = p.get(Some("intune")).unwrap();
        assert!(profile.intune_api.is_some() && profile.intune.is_none());
        assert!(matches!(profile.engine.config().challenge, scep_engine::config::ChallengePolicy::IntuneApi));
    }

    #[test]
    fn check_config_lists_profiles() {
        let dir = TestDir::new();
        let opts = options(&dir, &dir.profile_toml("corp"));
        assert_eq!(check_config(&opts).unwrap().profiles, vec!["corp"]);
    }

    /// The probe's report: on a bootstrap install (no file, no
    /// `CERTCTL_SCEP_PROFILES`) check-config said "nothing to check" and
    /// failed, though the Intune runbook's first step runs it. It checks
    /// what `serve` would run instead, writing nothing, and lists every file
    /// `serve` creates under its own name (the RA files were listed as "local
    /// CA certificate", `challenges.sqlite` not at all).
    #[test]
    fn check_config_without_a_configuration_checks_the_bootstrap_and_writes_nothing() {
        let dir = TestDir::new();
        let data = dir.path().join("data");
        let opts = StartOptions { data_dir: Some(data.clone()), env: Some(Vec::new()), ..StartOptions::default() };
        let report = check_config(&opts).unwrap();
        assert!(report.bootstrap);
        assert_eq!(report.profiles, vec!["default"]);
        assert!(!data.exists(), "check-config created the data directory");
        let listed = |file: &str, what: &str| {
            let entry = format!("{} ({what}", data.join(file).display());
            assert!(
                report.would_create.iter().any(|e| e.starts_with(&entry)),
                "{entry} not in {:#?}",
                report.would_create
            );
        };
        listed("ca.pem", "local CA certificate");
        listed("ca.key", "local CA private key");
        listed("ra.pem", "RA certificate");
        listed("ra.key", "RA private key");
        listed("ra-signing.pem", "signing RA certificate");
        listed("ra-signing.key", "signing RA private key");
        listed("ra-encryption.pem", "encryption RA certificate");
        listed("ra-encryption.key", "encryption RA private key");
        listed("challenges.sqlite", "one-time challenge database");
        listed(bootstrap::CHALLENGE_FILE, "generated challenge password");
        listed(bootstrap::ADMIN_KEY_FILE, "generated admin API key");
        assert!(
            !report.would_create.iter().any(|e| e.contains("/ra") && e.contains("local CA")),
            "{:#?}",
            report.would_create
        );

        // What serve refuses, check-config refuses: an empty challenge password.
        let empty = StartOptions { challenge_password: Some(String::new()), ..opts.clone() };
        let e = check_config(&empty).unwrap_err();
        assert!(e.0.contains("challenge-password"), "{e}");

        // Once serve has run, everything is checked in place and nothing is new.
        drop(ServiceState::load(opts.clone()).unwrap());
        let report = check_config(&opts).unwrap();
        assert!(report.bootstrap);
        assert_eq!(report.would_create, Vec::<String>::new());
    }

    /// check-config opens an existing audit database as `serve` would, and
    /// creates nothing.
    #[test]
    fn check_config_checks_the_audit_database() {
        let dir = TestDir::new();
        let cfg = format!("[audit]\npath = \"logs/audit.db\"\n{}", dir.profile_toml("corp"));
        let db = dir.path().join("logs").join("audit.db");
        check_config(&options(&dir, &cfg)).unwrap();
        assert!(!db.exists() && !db.parent().unwrap().exists(), "check-config must not create the database");
        std::fs::create_dir_all(db.parent().unwrap()).unwrap();
        std::fs::write(&db, b"not a database at all, just text").unwrap();
        let err = check_config(&options(&dir, &cfg)).unwrap_err();
        assert!(err.0.starts_with("audit.path: ") && err.0.contains("audit.db"), "{err}");
        std::fs::remove_file(&db).unwrap();
        drop(AuditLog::open(&db, 30, "node-a").unwrap());
        check_config(&options(&dir, &cfg)).unwrap();
        std::fs::remove_file(&db).unwrap();
        std::fs::write(&db, b"").unwrap();
        check_config(&options(&dir, &cfg)).expect("an empty file is a database serve initialises");
        rusqlite::Connection::open(&db).unwrap().execute_batch("CREATE TABLE other (x)").unwrap();
        let err = check_config(&options(&dir, &cfg)).unwrap_err();
        assert!(err.0.contains("not an scepd audit database"), "{err}");
        std::fs::remove_file(&db).unwrap();
        std::fs::create_dir(&db).unwrap();
        assert!(check_config(&options(&dir, &cfg)).unwrap_err().0.starts_with("audit.path: "));
    }

    /// check-config reads the TLS files as `serve` would, so a bad key is
    /// found before the restart, not by it.
    #[test]
    fn check_config_checks_the_tls_files() {
        let dir = TestDir::new();
        std::fs::copy(dir.path().join("ra.key"), dir.path().join("tls.key")).unwrap();
        let tls =
            |cert: &str| format!("[server.tls]\ncert = \"{cert}\"\nkey = \"tls.key\"\n{}", dir.profile_toml("corp"));
        assert_eq!(check_config(&options(&dir, &tls("ra.pem"))).unwrap().profiles, vec!["corp"]);
        let err = check_config(&options(&dir, &tls("missing.pem"))).unwrap_err();
        assert!(err.0.starts_with("server.tls.cert"), "{err}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(dir.path().join("tls.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
            let err = check_config(&options(&dir, &tls("ra.pem"))).unwrap_err();
            assert!(err.0.starts_with("server.tls.key"), "{err}");
        }
    }
}
