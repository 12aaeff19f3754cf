//! `intune-standin`: the loopback stand-in of Microsoft's Intune SCEP
//! validation API (`scep_tests::intune_standin`: Entra token, Graph
//! discovery, Intune `ScepActions`) as a process, for load tests of scepd's
//! Intune API mode. Knows every challenge that starts with `--prefix` (what
//! `scep-load --opaque-challenge-prefix` sends), writes its settings to
//! `--out` as `key=value` lines (`base_url`, `tenant`, `client_id`) and the
//! client secret to `--secret` (mode 0600), then serves until killed.
//!
//! ```text
//! intune-standin --prefix bench- --out standin.env --secret entra-secret &
//! ```
#![allow(clippy::print_stdout)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use scep_tests::intune_standin::IntuneStandIn;

#[derive(Parser)]
#[command(about = "A loopback stand-in of the Intune SCEP validation API, for load tests")]
struct Args {
    /// Every challenge starting with this is valid.
    #[arg(long, default_value = "bench-")]
    prefix: String,
    /// Where to write `base_url=`, `tenant=`, `client_id=` lines.
    #[arg(long)]
    out: PathBuf,
    /// Where to write the client secret (mode 0600).
    #[arg(long)]
    secret: PathBuf,
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    let standin = IntuneStandIn::start();
    standin.know_prefix(&args.prefix);
    std::fs::write(&args.secret, format!("{}\n", standin.client_secret))
        .and_then(|()| std::fs::set_permissions(&args.secret, std::fs::Permissions::from_mode(0o600)))
        .map_err(|e| format!("{}: {e}", args.secret.display()))?;
    let env = format!("base_url={}\ntenant={}\nclient_id={}\n", standin.base_url(), standin.tenant, standin.client_id);
    std::fs::write(&args.out, env).map_err(|e| format!("{}: {e}", args.out.display()))?;
    println!("intune-standin listening at {}", standin.base_url());
    loop {
        // The record of calls is for tests; a load test would only grow it.
        std::thread::sleep(Duration::from_secs(1));
        standin.forget_calls();
    }
}
