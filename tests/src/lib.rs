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

//! - [`missing_tool`]: what a test does when a program it needs is absent.

pub mod client;
pub mod intune_connector;
pub mod intune_standin;
pub mod real_clients;
pub mod server;

/// The developer opt-out: with this variable set to `1`, a test whose tool
/// or service is missing prints `SKIPPED` and passes. Never set by `.ci/run`
/// (the README's test command), which installs everything first.
pub const ALLOW_SKIP_VAR: &str = "SCEPD_TEST_ALLOW_SKIP";

/// A program or service `what` a test needs is missing: the test FAILS,
/// naming `install` (the command that provides it), unless the developer
/// opted out with [`ALLOW_SKIP_VAR`]`=1`; then it prints `SKIPPED` and the
/// caller returns.
///
/// # Panics
/// Without the opt-out, always.
pub fn missing_tool(test: &str, what: &str, install: &str) {
    let opted_out = std::env::var(ALLOW_SKIP_VAR).is_ok_and(|v| v == "1");
    assert!(
        opted_out,
        "{test} needs {what}: {install} (or run `bash .ci/run`, which installs it; {ALLOW_SKIP_VAR}=1 skips instead)"
    );
    eprintln!("SKIPPED {test}: {what} is missing ({ALLOW_SKIP_VAR}=1); {install}");
}
