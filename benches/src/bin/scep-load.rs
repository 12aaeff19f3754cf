//! `scep-load`: simulates a SCEP fleet against an RFC 8894 server and reports
//! throughput, latency percentiles, errors by kind and (with `--server-pid`)
//! the server's CPU time per enrollment. See `docs/benchmarks-e2e.md`.
//!
//! ```text
//! scep-load run --url http://127.0.0.1:8080/scep --challenge PW --requests 20000 --concurrency 32
//! scep-load run --url ... --operation getcacaps --duration 10
//! scep-load run --url https://127.0.0.1:8443/scep --cacert ca.pem --challenge PW \
//!     --operation device --connections per-device --tls-resumption on
//! scep-load compare --url http://127.0.0.1:8080/scep --url-b http://127.0.0.1:8081/scep --challenge PW
//! scep-load connector --dir ./connector     # writes the test Connector key + trust anchor
//! scep-load floor --seconds 3                # the raw crypto of one enrolment, to compare with
//! ```
//!
//! The summary goes to stdout as JSON (`--json FILE` also writes it to a
//! file); the human-readable report and the progress bar go to stderr.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use scep_bench::load::fleet::Challenge;
use scep_bench::load::intune::{ANCHOR_FILE, Connector};
use scep_bench::load::report::{Comparison, Summary};
use scep_bench::load::run::{ConnectionUse, Operation, Plan, Verify};
use scep_bench::load::{self, LoadError, Loaded, Setup, Target, TlsOptions};
use scep_engine::crypto::{ContentCipher, DigestAlg};
use scep_tests::client::PkiMethod;

#[derive(Debug, Parser)]
#[command(name = "scep-load", about = "SCEP (RFC 8894) fleet load generator")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Load one target.
    Run(RunArgs),
    /// Load two targets in alternation and print the ratios (A / B).
    Compare(CompareArgs),
    /// Build (and cache) the messages of a later run, without sending them.
    Prepare(RunArgs),
    /// Time the raw aws-lc operations one RSA-2048 enrolment cannot avoid, on
    /// one thread: the crypto floor `run`'s server CPU per enrolment is read
    /// against (prints JSON).
    Floor {
        /// CPU seconds to measure for.
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
    },
    /// Create the test Intune Connector key and its trust anchor certificate.
    Connector {
        /// Directory for `connector.key` and `connector-anchor.pem`.
        #[arg(long, default_value = "scep-load-cache/connector")]
        dir: PathBuf,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum OpArg {
    Pkcsreq,
    Getcacaps,
    Getcacert,
    /// GetCACaps, GetCACert, then PKIOperation (what an Intune device does).
    Device,
}

impl OpArg {
    /// True when the run needs a fleet and prepared PKCSReq messages.
    fn enrols(self) -> bool {
        matches!(self, Self::Pkcsreq | Self::Device)
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ConnectionsArg {
    /// One connection per worker, kept alive.
    KeepAlive,
    /// A new connection for each device (its three requests on it with `--operation device`).
    PerDevice,
    /// A new connection for every request.
    PerRequest,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum OnOff {
    On,
    Off,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum MethodArg {
    Post,
    Get,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum CipherArg {
    Aes128,
    Aes192,
    Aes256,
    Des3,
    Des,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum DigestArg {
    Sha1,
    Sha256,
    Sha384,
    Sha512,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum VerifyArg {
    After,
    Inline,
    Off,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// SCEP endpoint URL (http://host:port/path or https://...).
    #[arg(long)]
    url: String,
    /// Allow a non-loopback target.
    #[arg(long)]
    allow_remote: bool,
    #[command(flatten)]
    common: Common,
    /// Server process to measure (CPU ms per request, RSS).
    #[arg(long)]
    server_pid: Option<u32>,
}

#[derive(Debug, Args)]
struct CompareArgs {
    /// Target A.
    #[arg(long)]
    url: String,
    /// Target B.
    #[arg(long)]
    url_b: String,
    /// Allow non-loopback targets.
    #[arg(long)]
    allow_remote: bool,
    /// Rounds per target (A, B, A, B, ...).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Server A's process id.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Server B's process id.
    #[arg(long)]
    server_pid_b: Option<u32>,
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, Args)]
struct Common {
    /// What each request does.
    #[arg(long, value_enum, default_value_t = OpArg::Pkcsreq)]
    operation: OpArg,
    /// PKIOperation over POST or GET.
    #[arg(long, value_enum, default_value_t = MethodArg::Post)]
    method: MethodArg,
    /// Devices (distinct keys) in the fleet.
    #[arg(long, default_value_t = 256)]
    devices: usize,
    /// Requests per run (PKCSReq: one prepared message each).
    #[arg(long, default_value_t = 10_000)]
    requests: usize,
    /// Stop after this many seconds (GetCACaps/GetCACert: unlimited requests).
    #[arg(long)]
    duration: Option<f64>,
    /// Closed loop: requests in flight (one connection each).
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Open loop: target requests per second (up to --concurrency in flight).
    #[arg(long)]
    rate: Option<f64>,
    /// Static challenge password.
    #[arg(long, env = "SCEP_LOAD_CHALLENGE", hide_env_values = true)]
    challenge: Option<String>,
    /// Intune mode: mint Connector challenges with the key in this directory (see `connector`).
    #[arg(long, conflicts_with = "challenge")]
    intune_connector: Option<PathBuf>,
    /// Intune mode: the `aud` claim.
    #[arg(long)]
    intune_audience: Option<String>,
    /// Intune API mode: a fresh opaque challenge per request, this prefix then a
    /// per-run random part and the request number (the `intune-standin` binary
    /// accepts every challenge with its `--prefix`).
    #[arg(long, conflicts_with_all = ["challenge", "intune_connector"])]
    opaque_challenge_prefix: Option<String>,
    /// Content encryption of the requests.
    #[arg(long, value_enum, default_value_t = CipherArg::Aes256)]
    cipher: CipherArg,
    /// Digest of the requests' signatures.
    #[arg(long, value_enum, default_value_t = DigestArg::Sha256)]
    digest: DigestArg,
    /// When replies are checked (`after` keeps the check off the clock).
    #[arg(long, value_enum, default_value_t = VerifyArg::After)]
    verify: VerifyArg,
    /// Key and message cache.
    #[arg(long, default_value = "scep-load-cache")]
    cache: PathBuf,
    /// When connections are closed and reopened.
    #[arg(long, value_enum, default_value_t = ConnectionsArg::KeepAlive)]
    connections: ConnectionsArg,
    /// https:// targets: the server's CA certificate(s), PEM (default: the SSL_CERT_FILE variable).
    #[arg(long)]
    cacert: Option<PathBuf>,
    /// https:// targets: resume TLS sessions on new connections.
    #[arg(long, value_enum, default_value_t = OnOff::On)]
    tls_resumption: OnOff,
    /// Socket timeout, seconds.
    #[arg(long, default_value_t = 30.0)]
    timeout: f64,
    /// Also write the JSON summary here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Progress bar (default: when stderr is a terminal).
    #[arg(long)]
    progress: Option<bool>,
}

impl Common {
    fn setup(&self) -> Result<Setup, LoadError> {
        let challenge = match (&self.intune_connector, &self.challenge) {
            _ if self.opaque_challenge_prefix.is_some() => {
                let mut run = [0u8; 8];
                aws_lc_rs::rand::fill(&mut run).map_err(|_| LoadError::Setup("no randomness".into()))?;
                Challenge::Opaque {
                    prefix: self.opaque_challenge_prefix.clone().unwrap_or_default(),
                    run: run.iter().map(|b| format!("{b:02x}")).collect(),
                }
            }
            (Some(dir), _) => Challenge::Intune(Connector::load_or_create(dir, self.intune_audience.clone())?),
            (None, Some(pw)) => Challenge::Static(pw.clone()),
            (None, None) if !self.operation.enrols() => Challenge::Static(String::new()),
            (None, None) => {
                return Err(LoadError::Setup(
                    "PKCSReq and device runs need --challenge PW, --intune-connector DIR or --opaque-challenge-prefix P"
                        .into(),
                ));
            }
        };
        Ok(Setup {
            devices: self.devices,
            cache: self.cache.clone(),
            challenge,
            cipher: match self.cipher {
                CipherArg::Aes128 => ContentCipher::Aes128Cbc,
                CipherArg::Aes192 => ContentCipher::Aes192Cbc,
                CipherArg::Aes256 => ContentCipher::Aes256Cbc,
                CipherArg::Des3 => ContentCipher::DesEde3Cbc,
                CipherArg::Des => ContentCipher::DesCbc,
            },
            digest: match self.digest {
                DigestArg::Sha1 => DigestAlg::Sha1,
                DigestArg::Sha256 => DigestAlg::Sha256,
                DigestArg::Sha384 => DigestAlg::Sha384,
                DigestArg::Sha512 => DigestAlg::Sha512,
            },
            threads: std::thread::available_parallelism().map_or(1, usize::from),
        })
    }

    fn plan(&self, target: &Target) -> Plan {
        let operation = match self.operation {
            OpArg::Pkcsreq => Operation::PkcsReq,
            OpArg::Getcacaps => Operation::GetCaCaps,
            OpArg::Getcacert => Operation::GetCaCert,
            OpArg::Device => Operation::Device,
        };
        let requests = match (operation.sends_pki_messages(), self.duration) {
            (true, _) | (_, None) => self.requests,
            (false, Some(_)) => usize::MAX,
        };
        Plan {
            target: target.clone(),
            operation,
            method: match self.method {
                MethodArg::Post => PkiMethod::Post,
                MethodArg::Get => PkiMethod::Get,
            },
            concurrency: self.concurrency.max(1),
            rate: self.rate.filter(|r| *r > 0.0),
            requests,
            duration: self.duration.map(Duration::from_secs_f64),
            timeout: Duration::from_secs_f64(self.timeout.max(0.1)),
            verify: match self.verify {
                VerifyArg::After => Verify::After,
                VerifyArg::Inline => Verify::Inline,
                VerifyArg::Off => Verify::Off,
            },
            progress: self.progress.unwrap_or_else(|| std::io::IsTerminal::is_terminal(&std::io::stderr())),
            connection_use: match self.connections {
                ConnectionsArg::KeepAlive => ConnectionUse::KeepAlive,
                ConnectionsArg::PerDevice => ConnectionUse::PerDevice,
                ConnectionsArg::PerRequest => ConnectionUse::PerRequest,
            },
        }
    }

    fn tls(&self) -> TlsOptions {
        TlsOptions { ca_file: self.cacert.clone(), resumption: matches!(self.tls_resumption, OnOff::On) }
    }

    fn write_json(&self, json: &str) -> Result<(), LoadError> {
        println!("{json}");
        if let Some(path) = &self.json {
            std::fs::write(path, format!("{json}\n")).map_err(|e| LoadError::Io(path.clone(), e))?;
        }
        Ok(())
    }
}

/// Prepares the fleet and messages for one target.
fn load_target(
    target: &Target,
    common: &Common,
    setup: &Setup,
    devices: &[load::fleet::Device],
    count: usize,
) -> Result<Option<Loaded>, LoadError> {
    if common.operation.enrols() { Ok(Some(load::prepare(target, setup, devices, count)?)) } else { Ok(None) }
}

fn run(args: &RunArgs, send: bool) -> Result<(), LoadError> {
    let target = Target::resolve(&args.url, args.allow_remote, &args.common.tls())?;
    let setup = args.common.setup()?;
    let devices = if args.common.operation.enrols() { load::fleet(&setup)? } else { Vec::new() };
    let mut loaded = load_target(&target, &args.common, &setup, &devices, args.common.requests)?;
    if !send {
        eprintln!("scep-load: prepared {} messages", loaded.as_ref().map_or(0, |l| l.prepared.len()));
        return Ok(());
    }
    let plan = args.common.plan(&target);
    let summary = load::execute(&target, &plan, &setup, &devices, loaded.as_mut(), args.server_pid)?;
    eprint!("{}", summary.text());
    let json = serde_json::to_string_pretty(&summary).map_err(|e| LoadError::Setup(e.to_string()))?;
    args.common.write_json(&json)
}

fn compare(args: &CompareArgs) -> Result<(), LoadError> {
    let a = Target::resolve(&args.url, args.allow_remote, &args.common.tls())?;
    let b = Target::resolve(&args.url_b, args.allow_remote, &args.common.tls())?;
    let setup = args.common.setup()?;
    let devices = if args.common.operation.enrols() { load::fleet(&setup)? } else { Vec::new() };
    let (mut ra, mut rb): (Vec<Summary>, Vec<Summary>) = (Vec::new(), Vec::new());
    for round in 0..args.rounds.max(1) {
        for (target, pid, out) in [(&a, args.server_pid, &mut ra), (&b, args.server_pid_b, &mut rb)] {
            let mut loaded = load_target(target, &args.common, &setup, &devices, args.common.requests)?;
            let plan = args.common.plan(target);
            let s = load::execute(target, &plan, &setup, &devices, loaded.as_mut(), pid)?;
            eprint!("round {}: {}", round + 1, s.text());
            out.push(s);
        }
    }
    let c = Comparison::new(ra, rb);
    eprintln!(
        "A/B: throughput x{:.3}, p99 x{:.3}{}",
        c.throughput_ratio,
        c.p99_ratio,
        c.cpu_ratio.map(|r| format!(", server CPU per request x{r:.3}")).unwrap_or_default()
    );
    let json = serde_json::to_string_pretty(&c).map_err(|e| LoadError::Setup(e.to_string()))?;
    args.common.write_json(&json)
}

fn floor(seconds: f64) -> Result<(), LoadError> {
    if !(0.1..=600.0).contains(&seconds) {
        return Err(LoadError::Setup(format!("--seconds {seconds}: must be 0.1 to 600")));
    }
    let f = load::floor::measure(Duration::from_secs_f64(seconds))?;
    eprintln!(
        "crypto floor of one enrolment: {:.3} ms (RSA-2048 sign {:.1} µs x2, decrypt {:.1} µs, verify {:.1} µs x2, \
         encrypt {:.1} µs, symmetric {:.1} µs; {} rounds)",
        f.enrolment_ms(),
        f.rsa_sign_us,
        f.rsa_decrypt_us,
        f.rsa_verify_us,
        f.rsa_encrypt_us,
        f.symmetric_us,
        f.rounds
    );
    let json = serde_json::to_string(&f).map_err(|e| LoadError::Setup(e.to_string()))?;
    println!("{json}");
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Run(args) => run(args, true),
        Command::Prepare(args) => run(args, false),
        Command::Compare(args) => compare(args),
        Command::Floor { seconds } => floor(*seconds),
        Command::Connector { dir } => Connector::load_or_create(dir, None).map(|_| {
            println!("{}", dir.join(ANCHOR_FILE).display());
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("scep-load: {e}");
            ExitCode::FAILURE
        }
    }
}
