//! TLS: the rustls configuration a transport's acceptor uses and the mTLS
//! client-certificate policy.
//!
//! What lives here: [`ReloadableTls`] (the current rustls `ServerConfig`,
//! swapped on SIGHUP) and [`client_auth`] (the optional client certificate
//! the listener asks for, each profile's [`client_auth::MtlsPolicy`], and the
//! [`ConnectionInfo`] a transport hands the service). Reading the certificate,
//! key and bundle files into these is `crate::wiring::tls`'s job
//! (`ReloadableTls::new`, `ReloadableTls::reload`, `server_config`).
//!
//! May import: `settings` only.

pub mod client_auth;

use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::ServerConfig;

pub use client_auth::ConnectionInfo;

/// The current TLS configuration, swapped on reload; each new connection
/// takes the configuration current when it arrives.
#[derive(Debug)]
pub struct ReloadableTls {
    current: ArcSwap<ServerConfig>,
}

impl ReloadableTls {
    /// Serves `config` until the next [`ReloadableTls::swap`].
    pub fn with_config(config: Arc<ServerConfig>) -> Self {
        Self { current: ArcSwap::new(config) }
    }

    /// The configuration for a new connection.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.current.load_full()
    }

    /// Makes `config` the configuration of every later connection.
    pub fn swap(&self, config: Arc<ServerConfig>) {
        self.current.store(config);
    }
}
