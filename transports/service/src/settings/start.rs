//! The command-line start options of `scepd serve` and `scepd check-config`.

use std::net::SocketAddr;
use std::path::PathBuf;

/// How `scepd serve` was started (command line / environment).
#[derive(Clone, Debug, Default)]
pub struct StartOptions {
    /// `--config`: the TOML file. Without it, bootstrap mode (see `crate::wiring::bootstrap`).
    pub config: Option<PathBuf>,
    /// `--data-dir`: overrides `server.data_dir`.
    pub data_dir: Option<PathBuf>,
    /// `--listen`: overrides `server.listen`.
    pub listen: Option<SocketAddr>,
    /// `--challenge-password`: the bootstrap profile's challenge (ignored with `--config`).
    pub challenge_password: Option<String>,
    /// The `CERTCTL_*` variables to apply; `None` reads the process environment
    /// ([`super::env::from_process`]).
    pub env: Option<Vec<(String, String)>>,
}
