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
`scepd check-config` (with serve's flags, e.g. --config FILE) validates what serve would run, writes
nothing and lists what the first serve creates; exit status 0 valid, 1 invalid.
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
    /// Validate what `serve` would run with the same flags and environment (the file and CERTCTL_*
    /// variables, or without them the bootstrap `default` profile: every profile, key and file, and
    /// every flag) without writing anything, list what the first `serve` would create, and exit
    /// (0 valid, 1 invalid, 2 a command line that does not parse).
    CheckConfig(ServeArgs),
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

/// The options of `serve`, which `check-config` takes too (it checks what
/// `serve` would run with them).
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Configuration file (TOML).
    #[arg(long, env = "SCEPD_CONFIG")]
    pub(crate) config: Option<PathBuf>,
    /// Data directory (overrides server.data_dir; default ./scepd-data).
    #[arg(long, env = "SCEPD_DATA_DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    /// Listen address (overrides server.listen; default 127.0.0.1:8080; port 0 picks one).
    #[arg(long, env = "SCEPD_LISTEN", value_parser = parse_listen)]
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

impl ServeArgs {
    /// The service's start options from these flags (the process's
    /// environment is read by the service itself).
    pub(crate) fn start_options(&self) -> scep_service::StartOptions {
        scep_service::StartOptions {
            config: self.config.clone(),
            data_dir: self.data_dir.clone(),
            listen: self.listen,
            challenge_password: self.challenge_password.clone(),
            env: None,
        }
    }
}

/// The async runtime under the HTTP service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Transport {
    /// tokio (multi-threaded runtime), the default.
    Tokio,
    /// smol (async-executor, one thread per core).
    Smol,
}

/// `--listen` / `SCEPD_LISTEN`: a socket address; the error names both
/// (clap names only the flag, also for a value from the variable).
fn parse_listen(value: &str) -> Result<SocketAddr, String> {
    value.trim().parse().map_err(|_| {
        "not a socket address: give IP:PORT, e.g. 127.0.0.1:8080 or [::]:8443 (from --listen or SCEPD_LISTEN)"
            .to_string()
    })
}

/// Whether `e`, an error parsing this process's command line, is a value a
/// flag (or the `SCEPD_*` variable behind it) was given that does not
/// parse, in a `check-config` command line: `check-config` answers it with
/// exit status 1 (invalid), as any other invalid setting, where clap would
/// exit with 2.
pub(crate) fn is_invalid_check_config_value(e: &clap::Error, args: &[std::ffi::OsString]) -> bool {
    matches!(e.kind(), clap::error::ErrorKind::ValueValidation | clap::error::ErrorKind::InvalidValue)
        && args.iter().skip(1).any(|a| a == "check-config")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &[&str]) -> Vec<std::ffi::OsString> {
        line.iter().map(Into::into).collect()
    }

    /// The probe's report: `serve` refused `SCEPD_LISTEN=garbage`,
    /// `check-config` said OK (it had no `--listen`).
    #[test]
    fn check_config_takes_and_checks_every_flag_serve_takes() {
        let line = args(&["scepd", "check-config", "--listen", "garbage"]);
        let e = Cli::try_parse_from(&line).unwrap_err();
        assert!(e.to_string().contains("SCEPD_LISTEN"), "{e}");
        assert!(is_invalid_check_config_value(&e, &line));
        let line = args(&["scepd", "serve", "--listen", "garbage"]);
        assert!(!is_invalid_check_config_value(&Cli::try_parse_from(&line).unwrap_err(), &line));
        let line = args(&[
            "scepd",
            "check-config",
            "--listen",
            "127.0.0.1:0",
            "--challenge-password",
            "s3cret",
            "--transport",
            "smol",
            "--smol-threads",
            "2",
        ]);
        let Command::CheckConfig(a) = Cli::try_parse_from(&line).unwrap().command else { panic!("not check-config") };
        assert_eq!(a.listen, Some("127.0.0.1:0".parse().unwrap()));
        assert_eq!(a.challenge_password.as_deref(), Some("s3cret"));
        let line = args(&["scepd", "check-config", "--smol-threads", "0"]);
        assert!(is_invalid_check_config_value(&Cli::try_parse_from(&line).unwrap_err(), &line));
    }
}
