//! The scepd HTTP service, shared by every runtime.
//!
//! A transport (tokio, smol) accepts connections, terminates TLS with
//! [`tls::server_config`] and serves [`ScepService`] with hyper. Everything
//! else lives here: routing, query and body handling, the driving loop
//! ([`drive()`]), configuration ([`config`], [`profile`]), first-run bootstrap
//! ([`bootstrap`]) and the hot-swappable [`ServiceState`]; the operator plane:
//! `CERTCTL_*` environment ([`env`](mod@env)), the durable audit log ([`audit`]), the
//! admin API ([`admin`]) and its web GUI ([`ui`]), Prometheus metrics
//! ([`metrics`]) and the mTLS sibling route ([`mtls`]).
//!
//! Startup: [`ServiceState::load`] with [`StartOptions`]; print
//! [`Started::generated_challenge`] once if set; serve
//! `ScepService::new(state, Some(timer))`; on SIGHUP call
//! [`ServiceState::reload`]. The admin plane reads Intune counters and
//! anchors with [`ServiceState::intune_stats`] and reloads anchors with
//! [`ServiceState::reload_trust`].
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod admin;
pub mod audit;
pub mod bootstrap;
pub mod config;
pub mod connections;
pub mod discovery;
pub mod drive;
pub mod env;
pub mod fast_path;
pub mod intune;
pub mod issuers;
pub mod metrics;
pub mod mtls;
pub mod profile;
pub mod query;
pub mod refuse;
pub mod service;
pub mod state;
pub mod tls;
pub mod ui;

#[cfg(test)]
mod operator_tests;
#[cfg(test)]
mod testutil;

pub use config::{ServerSettings, TlsSettings};
pub use drive::drive;
pub use profile::Profile;
pub use service::{Route, ScepService, route};
pub use state::{Profiles, ServiceState, StartOptions, Started, check_config};
