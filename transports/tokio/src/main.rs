//! scepd: `scepd serve` (tokio by default, `--transport smol`) and `scepd check-config`.
//!
//! Logs go to stderr (`RUST_LOG` filter, `--log-format text|json`); stdout
//! carries only the lines an operator or a script reads:
//! `scepd listening on http://ADDR` (or `https://`) once the socket is bound,
//! and, on the first bootstrap run only, the generated challenge password.
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
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::CheckConfig(args) => {
            let origin = args.config.as_ref().map_or_else(|| "environment".to_string(), |p| p.display().to_string());
            let options = StartOptions { config: args.config, ..StartOptions::default() };
            match scep_service::check_config(&options) {
                Ok(names) => {
                    println!("{origin}: OK (profiles: {})", names.join(", "));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("scepd: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Serve(args) => {
            let options = StartOptions {
                config: args.config,
                data_dir: args.data_dir,
                listen: args.listen,
                challenge_password: args.challenge_password,
                env: None,
            };
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
    if let Some(pw) = &started.generated_challenge {
        let file = started.state.settings().data_dir.join(scep_service::wiring::bootstrap::CHALLENGE_FILE);
        // Shown once, on the run that created it; later runs read it from the file.
        println!("scepd challenge password (profile default, saved in {}): {pw}", file.display());
    }
    let _ = std::io::stdout().flush();
    if let Runtime::Smol(threads) = runtime {
        return scep_smol::run(started.state, threads);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the tokio runtime: {e}"))?;
    runtime.block_on(server::run(started.state))
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.fmt_fields(log_text::EscapedFields).init(),
    }
}
