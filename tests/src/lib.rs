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

//! - [`database`]: PostgreSQL databases and clusters for the shared-store tests.
//! - [`missing_tool`]: what a test does when a program it needs is absent.

pub mod client;
pub mod compliance_webhook;
pub mod database;
pub mod intune_connector;
pub mod intune_standin;
pub mod real_clients;
pub mod server;
pub mod tls;

/// A program or service `what` a test needs is missing: the test FAILS,
/// naming `install` (the command that provides it). There is no opt-out:
/// `bash .ci/run`, the README's test command, installs everything first.
///
/// # Panics
/// Always.
pub fn missing_tool(test: &str, what: &str, install: &str) -> ! {
    panic!("{test} needs {what}: {install} (or run `bash .ci/run`, which installs it)")
}
