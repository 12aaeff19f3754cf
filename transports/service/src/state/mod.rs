//! The running state: server settings, the hot-swappable profile set, the
//! admin API keys, the audit log and the metrics, as a transport serves them.
//!
//! What lives here: [`ServiceState`] ([`mod@self`]), the running profiles
//! ([`profiles`]: [`Profile`], [`Profiles`]), each profile's kept discovery
//! answers ([`discovery`]), the admin API key set ([`api_keys`]), the limiter of
//! failed admin authentications per client address ([`auth_limit`]) and the
//! metrics counters ([`metrics`]). The state is a container: it is built,
//! reloaded and checked by `crate::wiring` (`ServiceState::load`, `reload`,
//! `check_config`), which sits above it.
//!
//! May import: `settings`, `store`, `intune`, `tls` (the mTLS policy). Never
//! `http`, `operator` or `wiring`.

pub mod api_keys;
pub mod auth_limit;
pub mod connections;
pub mod discovery;
pub mod metrics;
pub mod profiles;

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use scep_engine::config::ConfigError;
use scep_engine::time::UnixTime;

use crate::intune::ProfileIntuneStats;
use crate::settings::ServerSettings;
use crate::settings::start::StartOptions;
use crate::store::audit::AuditLog;
use crate::store::challenges::ChallengeStore;
use api_keys::ApiKeys;
use auth_limit::AuthFailureLimit;
use metrics::Metrics;
pub use profiles::{Profile, Profiles};

/// What a successful [`ServiceState::load`] reports besides the state.
#[derive(Debug)]
pub struct Started {
    /// The state to serve.
    pub state: Arc<ServiceState>,
    /// A challenge password generated (and persisted) by this run: print it
    /// once. `None` on every later run.
    pub generated_challenge: Option<String>,
    /// Lines for stdout before serving (bootstrap mode): which challenge
    /// password and admin API key are in force and where they are kept; a
    /// secret appears only on the run that generated it. Empty with a
    /// configuration file.
    pub banner: Vec<String>,
}

/// Everything a transport needs to serve: settings (fixed until restart) and
/// the profile set (atomically replaced by [`ServiceState::reload`]).
#[derive(Debug)]
pub struct ServiceState {
    pub(crate) settings: ServerSettings,
    pub(crate) profiles: ArcSwap<Profiles>,
    /// Where the configuration came from; `None` for states built by [`ServiceState::new`].
    pub(crate) options: Option<StartOptions>,
    pub(crate) api_keys: ArcSwap<ApiKeys>,
    pub(crate) audit: Option<AuditLog>,
    pub(crate) metrics: Metrics,
    pub(crate) auth_limit: AuthFailureLimit,
    /// The one-time challenge store (every state `load` builds has one).
    pub(crate) challenges: Option<Arc<dyn ChallengeStore>>,
    /// What relying parties fetch under `/pki/` (the local CA's CRL and
    /// certificate, its OCSP responder); `None` without a local CA.
    pub(crate) relying_parties: Option<Arc<scep_issuers::ocsp::OcspResponder>>,
    /// The same for each `[[issuer]] type = "local"` CA of the running
    /// configuration (their certificates name `/pki/` too); replaced on
    /// every reload ([`ServiceState::publish_configured_cas`]).
    pub(crate) configured_cas: ArcSwap<Vec<Arc<scep_issuers::ocsp::OcspResponder>>>,
    /// The durable protection state (Intune replay nonces, per-device
    /// rate-limit windows): SQLite or the shared PostgreSQL store. Every
    /// state `load` builds has one; without it only the in-memory checks run.
    pub(crate) protection: Option<Arc<dyn scep_store::ProtectionStore>>,
    /// The Intune revocation-sync lease shared by the nodes (PostgreSQL
    /// store only; with SQLite the one node's pollers run on their own timer).
    pub(crate) revocation_sync: Option<Arc<dyn crate::store::revocation_sync::RevocationSyncLease>>,
    /// The node's one PostgreSQL pool (`[store] url`), built by the wiring:
    /// the protection store, the one-time challenges and the local CA's
    /// certificate index draw their connections from it (the audit log on
    /// PostgreSQL is to take it from here too). `None` on SQLite.
    pub(crate) shared_pool: Option<Arc<scep_store::postgres::Pool>>,
    /// The data directory's lock, held for as long as the state lives (the
    /// process's life, for `serve`): one process per data directory while
    /// its SQLite stores are in use (`crate::store::data_dir_lock`). `None`
    /// on PostgreSQL and for states built in code.
    pub(crate) data_dir_lock: Option<crate::store::data_dir_lock::DataDirLock>,
}

impl ServiceState {
    /// A state serving `profiles` with `settings` (for embedding and tests;
    /// it has no configuration source, so [`ServiceState::reload`] refuses).
    /// No API keys, no audit log until [`ServiceState::with_api_keys`] /
    /// [`ServiceState::with_audit`].
    pub fn new(settings: ServerSettings, profiles: Profiles) -> Self {
        Self {
            settings,
            profiles: ArcSwap::from_pointee(profiles),
            options: None,
            api_keys: ArcSwap::from_pointee(ApiKeys::default()),
            audit: None,
            metrics: Metrics::default(),
            auth_limit: AuthFailureLimit::default(),
            challenges: None,
            relying_parties: None,
            configured_cas: ArcSwap::from_pointee(Vec::new()),
            protection: None,
            revocation_sync: None,
            shared_pool: None,
            data_dir_lock: None,
        }
    }

    /// This state checking Intune nonces and rate-limit windows in `store`
    /// too (across restarts, and across nodes when it is shared).
    #[must_use]
    pub fn with_protection(mut self, store: Arc<dyn scep_store::ProtectionStore>) -> Self {
        self.protection = Some(store);
        self
    }

    /// The durable protection store, when there is one.
    pub fn protection(&self) -> Option<&Arc<dyn scep_store::ProtectionStore>> {
        self.protection.as_ref()
    }

    /// The lock file of the data directory this state holds locked
    /// (`<data_dir>/scepd.lock`, see `crate::store::data_dir_lock`): `Some`
    /// for a `serve` on the SQLite store, until the state is dropped.
    pub fn data_dir_lock(&self) -> Option<&std::path::Path> {
        self.data_dir_lock.as_ref().map(crate::store::data_dir_lock::DataDirLock::path)
    }

    /// This state publishing the CRL, CA certificate and OCSP answers of
    /// `responder`'s CA under `/pki/` ([`crate::http::pki`]).
    #[must_use]
    pub fn with_relying_parties(mut self, responder: Arc<scep_issuers::ocsp::OcspResponder>) -> Self {
        self.relying_parties = Some(responder);
        self
    }

    /// The OCSP responder (and through it the local CA) published under `/pki/`.
    pub fn relying_parties(&self) -> Option<&Arc<scep_issuers::ocsp::OcspResponder>> {
        self.relying_parties.as_ref()
    }

    /// Every CA published under `/pki/`: the built-in local CA's responder
    /// first, then one per `[[issuer]] type = "local"` CA of the running
    /// configuration. Empty without a local CA.
    pub fn published_cas(&self) -> Vec<Arc<scep_issuers::ocsp::OcspResponder>> {
        let configured = self.configured_cas.load();
        self.relying_parties.iter().chain(configured.iter()).cloned().collect()
    }

    /// The responder that answers the DER OCSPRequest `request`: the one
    /// whose CA its first CertID names; with none, the first published (it
    /// answers `unauthorized`, or `malformedRequest`). `None` without a
    /// local CA. With only the built-in CA the request is not parsed here.
    pub fn ocsp_responder_for(&self, request: &[u8]) -> Option<Arc<scep_issuers::ocsp::OcspResponder>> {
        let configured = self.configured_cas.load();
        if configured.is_empty() {
            return self.relying_parties.clone();
        }
        scep_issuers::ocsp::responder_for(self.relying_parties.iter().chain(configured.iter()), request).cloned()
    }

    /// The responders for the `[[issuer]] type = "local"` CAs `configured`
    /// (issuer id, CA), for [`ServiceState::publish_configured_cas`]: every
    /// one, used by a profile or not (its certificates in the field still
    /// name `/pki/`). `signing` is `[server] ocsp_signer`.
    ///
    /// # Errors
    /// When a responder cannot be built (a CA certificate that does not
    /// parse), or, on SQLite, when two local CAs (the built-in one included)
    /// have one key: each keeps its own index there, so `/pki/<ca-id>/` and
    /// OCSP could answer from only one of them. On PostgreSQL they share the
    /// index of that key, and one responder answers for both.
    pub(crate) fn configured_ca_responders(
        &self,
        configured: &[(String, scep_issuers::LocalCa)],
        signing: scep_issuers::ocsp::ResponderSigning,
    ) -> Result<Vec<Arc<scep_issuers::ocsp::OcspResponder>>, ConfigError> {
        let mut published: HashMap<String, String> = HashMap::new();
        if let Some(builtin) = &self.relying_parties {
            published.insert(builtin.ca().ca_id().to_string(), "the built-in local CA".to_string());
        }
        let mut responders = Vec::new();
        for (id, ca) in configured {
            if let Some(other) = published.get(ca.ca_id()) {
                if self.shared_pool.is_none() {
                    return Err(ConfigError(format!(
                        "issuer[{id}].ca_key: the same key as {other}: two local CAs with one key need the shared \
                         certificate index ([store] url); on SQLite use one of them"
                    )));
                }
                continue;
            }
            let responder = scep_issuers::ocsp::OcspResponder::new(ca.clone(), signing)
                .map_err(|e| ConfigError(format!("issuer[{id}]: OCSP responder: {e}")))?;
            published.insert(ca.ca_id().to_string(), format!("issuer[{id}]"));
            responders.push(Arc::new(responder));
        }
        Ok(responders)
    }

    /// Publishes `responders` (from [`ServiceState::configured_ca_responders`])
    /// under `/pki/`, replacing those of the previous configuration.
    pub(crate) fn publish_configured_cas(&self, responders: Vec<Arc<scep_issuers::ocsp::OcspResponder>>) {
        self.configured_cas.store(Arc::new(responders));
    }

    /// This state with `keys` as its admin API keys.
    #[must_use]
    pub fn with_api_keys(self, keys: ApiKeys) -> Self {
        self.api_keys.store(Arc::new(keys));
        self
    }

    /// This state recording SCEP decisions in `audit`.
    #[must_use]
    pub fn with_audit(mut self, audit: AuditLog) -> Self {
        self.audit = Some(audit);
        self
    }

    /// This state keeping one-time challenges in `store` (without one, a
    /// one-time profile refuses every enrolment that needs a challenge).
    #[must_use]
    pub fn with_challenges(mut self, store: Arc<dyn ChallengeStore>) -> Self {
        self.challenges = Some(store);
        self
    }

    /// The one-time challenge store, when there is one.
    pub fn challenges(&self) -> Option<&Arc<dyn ChallengeStore>> {
        self.challenges.as_ref()
    }

    /// The audit log, when there is one.
    pub fn audit(&self) -> Option<&AuditLog> {
        self.audit.as_ref()
    }

    /// The admin API keys (a request keeps the set it loaded).
    pub fn api_keys(&self) -> Arc<ApiKeys> {
        self.api_keys.load_full()
    }

    /// The limiter of failed admin API authentications per client address.
    pub fn auth_limit(&self) -> &AuthFailureLimit {
        &self.auth_limit
    }

    /// The process's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Server settings.
    pub fn settings(&self) -> &ServerSettings {
        &self.settings
    }

    /// The current profile set (a request keeps the snapshot it loaded).
    pub fn profiles(&self) -> Arc<Profiles> {
        self.profiles.load_full()
    }

    /// Writes what the audit log still holds in memory (the discovery tally).
    /// Both transports call this after their last connection has closed; a
    /// failure is logged.
    pub async fn flush_audit(&self) {
        if let Some(audit) = self.audit()
            && let Err(e) = audit.flush().await
        {
            tracing::error!(error = %e, "the discovery audit tally could not be written at shutdown");
        }
    }

    /// Intune counters, anchors and settings of every Intune-enabled profile,
    /// sorted by profile name (the admin plane's `intune/stats`).
    pub fn intune_stats(&self) -> Vec<ProfileIntuneStats> {
        self.profiles.load().intune_stats(UnixTime::now())
    }

    /// Re-reads the Connector certificate bundle of `profile` (or of every
    /// Intune profile for `None`) and swaps the anchors in: the admin plane's
    /// SIGHUP-equivalent. Reads files: call it off the async executor.
    ///
    /// # Errors
    /// Unknown profile, Intune not enabled, or a bundle failing the preflight
    /// (named); the previous anchors then stay in force everywhere.
    pub fn reload_trust(&self, profile: Option<&str>) -> Result<Vec<ProfileIntuneStats>, ConfigError> {
        self.profiles.load().reload_intune_trust(profile, UnixTime::now())
    }
}
