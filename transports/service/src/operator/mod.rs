//! The operator plane: the admin API, its web GUI and the Prometheus
//! metrics exposition.
//!
//! What lives here: [`admin`] (JSON API under `/api/v1/admin/scep/`, Bearer
//! keys; its certificate inventory and revocation in [`certificates`], the
//! shared JSON answers in [`reply`]), [`ui`] (the GUI at `/ui/scep`), [`metrics`] (`GET /metrics`). New
//! admin endpoints and GUI actions belong here.
//!
//! May import: `state`, `store`, `intune`, `settings` and `query`. Never
//! `http` (which routes to this folder) or `wiring`.

pub mod admin;
pub mod certificates;
pub mod metrics;
pub mod reply;
pub mod ui;
