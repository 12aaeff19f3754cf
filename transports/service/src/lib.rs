//! The scepd HTTP service, shared by every runtime.
//!
//! A transport (tokio, smol) accepts connections, terminates TLS with
//! [`ReloadableTls`] and serves [`ScepService`] with hyper. Everything else
//! lives here, one folder per concern (dependencies point down this list;
//! the unit test `layout` checks there is no circle):
//!
//! | folder | what | may import |
//! |---|---|---|
//! | [`wiring`] | settings → running parts: `ServiceState::load`/`reload`, [`check_config`], profiles, issuers, local CA, bootstrap, TLS | everything below |
//! | [`http`] | routing, [`ScepService`], [`drive()`], the fast path | `operator`, `state`, `store`, `intune`, `tls`, `settings`, `query` |
//! | [`operator`] | admin API, web GUI, metrics exposition | `state`, `store`, `intune`, `settings`, `query` |
//! | [`state`] | [`ServiceState`], [`Profiles`], API keys, metrics counters | `store`, `intune`, `tls`, `settings` |
//! | [`tls`] | [`ReloadableTls`], mTLS client-certificate policy, [`ConnectionInfo`] | `settings` |
//! | [`intune`] | Intune trust anchors and decisions | `settings` |
//! | [`store`] | the durable audit log, one-time challenges, protection state, the data directory's lock | `settings` |
//! | [`query`] | URL query decoding | nothing |
//! | [`settings`] | what the operator wrote: TOML, `CERTCTL_*`, start options | nothing |
//!
//! Startup: [`ServiceState::load`] with [`StartOptions`]; print
//! [`Started::banner`] (it shows a generated challenge password or admin API
//! key once); once bound, print [`banner::listening`]; serve
//! `ScepService::new(state, Some(timer))`; on SIGHUP call
//! [`ServiceState::reload_on_hangup`]. The admin plane reads Intune counters
//! and anchors with [`ServiceState::intune_stats`] and reloads anchors with
//! [`ServiceState::reload_trust`].
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod banner;
pub mod http;
pub mod intune;
pub mod operator;
pub mod query;
pub mod settings;
pub mod state;
pub mod store;
pub mod tls;
pub mod wiring;

#[cfg(test)]
mod layout;
#[cfg(test)]
mod operator_tests;
#[cfg(test)]
mod testutil;

pub use http::drive::drive;
pub use http::service::{DetachedRequests, Route, ScepService, route};
pub use settings::start::StartOptions;
pub use settings::{ServerSettings, TlsSettings};
pub use state::{Profile, Profiles, ServiceState, Started};
pub use tls::{ConnectionInfo, ReloadableTls};
pub use wiring::{CheckReport, check_config, migrate};
