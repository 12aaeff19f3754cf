//! The HTTP surface: routing, request and body handling, the SCEP routes
//! (`/scep`, `/scep/<name>`, the mTLS sibling `/scep-mtls/<name>`), the
//! driving loop and the HTTP/1.1 discovery fast path.
//!
//! What lives here: [`service`] ([`ScepService`](service::ScepService), the
//! routing table), [`drive`](mod@drive) (the one loop between the engine and
//! the issuer), [`fast_path`] (GetCACaps/GetCACert answered before hyper),
//! [`pki`] (what relying parties fetch: CRL, CA certificate, OCSP).
//! Future per-connection limits and timeouts belong here too.
//!
//! May import: `state`, `operator` (the admin API, GUI and metrics it
//! routes to), `store` (audit events), `intune` (decision logs), `tls` (the
//! connection's client certificate), `settings` and `query`. Never `wiring`.

pub mod drive;
pub mod fast_path;
pub mod pki;
pub mod service;
