//! scepd: `scepd serve` (tokio by default, `--transport smol`), `scepd check-config`
//! (takes serve's flags and checks what serve would run with them, the bootstrap
//! configuration included; writes nothing; exit status 0 when valid, 1 when invalid,
//! 2 when the command line does not parse) and `scepd migrate` (applies the store's
//! pending schema migrations).
//!
//! Logs go to stderr (`RUST_LOG` filter, `--log-format text|json`); stdout
//! carries only the lines an operator or a script reads:
//! without a configuration file, which challenge password and admin API key
//! are in force and where they are kept (the secret itself only on the run
//! that generated it); then `scepd listening on http://ADDR` (or `https://`)
//! once the socket is bound, the web GUI's URL and how to stop.
#![forbid(unsafe_code)]

mod cli;
mod log_text;
mod server;
mod timed_stream;

use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser as _;
use scep_service::{ServiceState, StartOptions};

use crate::cli::{Cli, Command, LogFormat, Transport};

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if cli::is_invalid_check_config_value(&e, &args) {
                ExitCode::FAILURE
            } else {
                ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2))
            };
        }
    };
    init_logging(cli.log_format);
    match cli.command {
        Command::CheckConfig(args) => {
            let from_file = args.config.as_ref().map(|p| p.display().to_string());
            let options = args.start_options();
            match scep_service::check_config(&options) {
                Ok(report) => {
                    let origin = match from_file {
                        Some(file) => file,
                        None if report.bootstrap => {
                            "built-in defaults (no --config, no CERTCTL_SCEP_PROFILES: the bootstrap configuration)"
                                .to_string()
                        }
                        None => "environment".to_string(),
                    };
                    println!("{origin}: OK (profiles: {})", report.profiles.join(", "));
                    if report.would_create.is_empty() {
                        println!("nothing written; serve would create nothing new");
                    } else {
                        println!("nothing written; the first serve would create:");
                        for entry in &report.would_create {
                            println!("  {entry}");
                        }
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("scepd: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Migrate(args) => {
            let options = StartOptions { config: args.config, data_dir: args.data_dir, ..StartOptions::default() };
            match scep_service::migrate(&options) {
                Ok((store, before, after)) if before == after => {
                    println!("{store}: schema at version {after}; nothing to migrate");
                    ExitCode::SUCCESS
                }
                Ok((store, before, after)) => {
                    println!("{store}: schema migrated from version {before} to {after}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("scepd: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Serve(args) => {
            let options = args.start_options();
            let transport = match args.transport {
                Transport::Tokio => Runtime::Tokio,
                Transport::Smol => Runtime::Smol(args.smol_threads.unwrap_or_else(scep_smol::default_threads)),
            };
            match serve(options, transport) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "scepd stopped");
                    eprintln!("scepd: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// The runtime chosen with `--transport`.
enum Runtime {
    Tokio,
    Smol(std::num::NonZeroUsize),
}

fn serve(options: StartOptions, runtime: Runtime) -> Result<(), String> {
    let started = ServiceState::load(options).map_err(|e| e.to_string())?;
    // Which secrets are in force and where they are kept; a generated one is
    // shown here once, on the run that created it, and never logged.
    let mut stdout = std::io::stdout().lock();
    for line in &started.banner {
        let _ = writeln!(stdout, "{line}");
    }
    let _ = stdout.flush();
    drop(stdout);
    if let Runtime::Smol(threads) = runtime {
        return scep_smol::run(started.state, threads);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the tokio runtime: {e}"))?;
    // The accept loop runs as a task on a worker (not on this thread, which
    // block_on would use): a connection it accepts starts on that worker's
    // own queue instead of waking another thread.
    runtime.block_on(async move {
        tokio::spawn(server::run(started.state)).await.map_err(|e| format!("the server task failed: {e}"))?
    })
}

/// The log filter: `RUST_LOG` (default `info`), with rustls's per-handshake
/// complaints about what a client sent (e.g. "Illegal SNI extension: ignoring
/// IP address presented as hostname", which wrk and OpenSSL clients cause on
/// every handshake to an IP-address URL) kept at `error` unless `RUST_LOG`
/// names rustls itself.
fn log_filter(rust_log: Option<&str>) -> String {
    let spec = rust_log.map(str::trim).filter(|s| !s.is_empty()).unwrap_or("info");
    if spec.contains("rustls") { spec.to_string() } else { format!("{spec},rustls::msgs::handshake=error") }
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::new(log_filter(std::env::var("RUST_LOG").ok().as_deref()));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.fmt_fields(log_text::EscapedFields).init(),
    }
}
