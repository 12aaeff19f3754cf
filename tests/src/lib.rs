//! Test support for scepd.
//!
//! - [`client`]: an independent SCEP client (RFC 8894 / RFC 5652), written
//!   from the RFCs rather than from the server's code, so that it checks the
//!   server instead of agreeing with it.
//! - [`server`]: the real `scepd` binary as a fixture ([`server::Scepd`]).
//! - [`real_clients`]: drives third-party SCEP clients (certmonger, micromdm's
//!   `scepclient`) and peer servers (micromdm's `scepserver`, only inside a
//!   private network namespace).
//! - [`intune_connector`]: a test Intune Certificate Connector (own key pair,
//!   self-signed trust anchor, minted JWS challenges).

pub mod client;
pub mod intune_connector;
pub mod intune_standin;
pub mod real_clients;
pub mod server;
