//! Command line (every flag also from a `SCEPD_*` environment variable).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// scepd: a SCEP (RFC 8894) server.
#[derive(Debug, Parser)]
#[command(name = "scepd", version, about, after_help = AFTER_HELP)]
pub(crate) struct Cli {
    /// Log format on stderr (filter with RUST_LOG, default `info`).
    #[arg(long, env = "SCEPD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub(crate) log_format: LogFormat,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Log output format.
/// What a newcomer needs before the first run (shown after `--help`).
const AFTER_HELP: &str = "\
Quick start: `scepd serve` with no configuration creates ./scepd-data/ (mode 0700; --data-dir or
SCEPD_DATA_DIR to move it) holding a local CA, the RA certificates, a challenge password
(challenge-password), an admin API key (admin-api-key, unless CERTCTL_API_KEYS_NAMED sets keys), the
issued-certificate database and the audit log. The start-up lines on stdout say which challenge
password and admin key are in force and where they are kept (a generated secret is printed only on
the run that created it), then `scepd listening on URL`, the web GUI's URL (URL/ui/scep) and how to
stop. Stop with Ctrl-C or SIGTERM (in-flight requests finish); SIGHUP reloads the configuration.
`scepd check-config --config FILE` validates without writing and lists what the first serve creates.
Documentation: README.md and docs/ (configuration.md, gui.md, admin-api.md, troubleshooting.md)
in the source tree.";

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Serve SCEP. Without --config: bootstrap a local CA and a `default` profile in the data dir. One serve
    /// per data dir on the SQLite store (a second one exits, naming the first's PID).
    Serve(ServeArgs),
    /// Validate the configuration (file and CERTCTL_* environment: every profile, key and file) without
    /// writing anything, list what the first `serve` would create, and exit (0 valid, 1 invalid).
    CheckConfig(CheckArgs),
    /// Apply the store's pending schema migrations (SQLite in the data dir, or the PostgreSQL database of
    /// `[store] url` or CERTCTL_DATABASE_URL) and exit. `serve` applies them too, under the same lock, so
    /// nodes starting at once are safe; this runs them ahead of a rolling upgrade. On SQLite, beside a
    /// running serve it only reports the schema version (and refuses when migrations are pending).
    Migrate(MigrateArgs),
}

#[derive(Debug, Args)]
pub(crate) struct MigrateArgs {
    /// Configuration file (TOML).
    #[arg(long, env = "SCEPD_CONFIG")]
    pub(crate) config: Option<PathBuf>,
    /// Data directory (overrides server.data_dir; default ./scepd-data).
    #[arg(long, env = "SCEPD_DATA_DIR")]
    pub(crate) data_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Configuration file (TOML).
    #[arg(long, env = "SCEPD_CONFIG")]
    pub(crate) config: Option<PathBuf>,
    /// Data directory (overrides server.data_dir; default ./scepd-data).
    #[arg(long, env = "SCEPD_DATA_DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    /// Listen address (overrides server.listen; default 127.0.0.1:8080; port 0 picks one).
    #[arg(long, env = "SCEPD_LISTEN")]
    pub(crate) listen: Option<SocketAddr>,
    /// Static challenge password of the bootstrap `default` profile (without --config).
    #[arg(long, env = "SCEPD_CHALLENGE_PASSWORD", hide_env_values = true)]
    pub(crate) challenge_password: Option<String>,
    /// Async runtime serving the connections (same service, same behaviour).
    #[arg(long, env = "SCEPD_TRANSPORT", value_enum, default_value_t = Transport::Tokio)]
    pub(crate) transport: Transport,
    /// Executor threads of the smol transport (default: one per core).
    #[arg(long, env = "SCEPD_SMOL_THREADS")]
    pub(crate) smol_threads: Option<std::num::NonZeroUsize>,
}

/// The async runtime under the HTTP service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Transport {
    /// tokio (multi-threaded runtime), the default.
    Tokio,
    /// smol (async-executor, one thread per core).
    Smol,
}

#[derive(Debug, Args)]
pub(crate) struct CheckArgs {
    /// Configuration file (TOML).
    #[arg(long, env = "SCEPD_CONFIG")]
    pub(crate) config: Option<PathBuf>,
    /// Data directory (overrides server.data_dir; default ./scepd-data), as `serve` would use it.
    #[arg(long, env = "SCEPD_DATA_DIR")]
    pub(crate) data_dir: Option<PathBuf>,
}
