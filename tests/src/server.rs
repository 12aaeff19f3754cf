//! The real `scepd` binary as a test fixture.
//!
//! [`Scepd::start`] runs `scepd serve` on `127.0.0.1:0` with its data
//! directory in a fresh temporary directory (and, optionally, a TOML
//! configuration file written next to it), waits a bounded time for the
//! `scepd listening on http://…` (or `https://…`) line on stdout, and stops the process on drop
//! (SIGTERM, then SIGKILL after a bound). stderr (the server's log) is kept in
//! a file and included in every failure message.
//!
//! A test can also signal the running server ([`Scepd::signal`]: SIGHUP
//! reloads, SIGTERM drains and exits), wait for a log line
//! ([`Scepd::wait_for_stderr`]) or for the exit ([`Scepd::wait_exit`]), and,
//! when a start is refused, read the exit status and log from
//! [`ScepdError::Startup`]. The transport is chosen with [`ScepdOptions::on`];
//! the log format (`--log-format json`) and the like are extra
//! [`ScepdOptions::args`].
//!
//! The binary is `$SCEPD_BIN` when set, else `<target>/<profile>/scepd` next
//! to the running test executable (`target/debug/deps/…`). When that file is
//! missing, or older than a source file of the crates it is built from, it is
//! built once per process with `$CARGO build -p scepd --bin scepd`.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

/// How long to wait for the listening line by default.
pub const DEFAULT_STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a SIGTERM'd server gets before SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// How to start a server.
#[derive(Clone, Debug)]
pub struct ScepdOptions {
    /// TOML configuration text. It is written to `<tempdir>/scepd.toml`, so
    /// relative paths in it resolve against the temporary directory, where
    /// the data directory is `data/`. `None`: the bootstrap `default` profile.
    pub config: Option<String>,
    /// `--challenge-password` (bootstrap profile, without a configuration).
    pub challenge_password: Option<String>,
    /// Extra command-line arguments after `serve`.
    pub args: Vec<String>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// Files to write into the temporary directory before starting (relative path, contents).
    pub files: Vec<(PathBuf, Vec<u8>)>,
    /// Bound on the wait for the listening line.
    pub startup_timeout: Duration,
    /// `--data-dir`: `None` is `<tempdir>/data`; a stopped server's
    /// [`Scepd::data_dir`] restarts on its state.
    pub data_dir: Option<PathBuf>,
}

impl Default for ScepdOptions {
    fn default() -> Self {
        Self {
            config: None,
            challenge_password: None,
            args: Vec::new(),
            env: Vec::new(),
            files: Vec::new(),
            startup_timeout: DEFAULT_STARTUP_TIMEOUT,
            data_dir: None,
        }
    }
}

impl ScepdOptions {
    /// The bootstrap `default` profile with a static challenge.
    pub fn bootstrap(challenge: &str) -> Self {
        Self { challenge_password: Some(challenge.to_string()), ..Self::default() }
    }

    /// A server configured by `toml` (see the module docs for paths).
    pub fn with_config(toml: impl Into<String>) -> Self {
        Self { config: Some(toml.into()), ..Self::default() }
    }
}

/// The transports `scepd serve --transport` offers. End-to-end scenarios run
/// on each, so that the two cannot drift apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// `--transport tokio`, the default.
    Tokio,
    /// `--transport smol`.
    Smol,
}

impl Transport {
    /// The `--transport` value.
    pub fn flag(self) -> &'static str {
        match self {
            Self::Tokio => "tokio",
            Self::Smol => "smol",
        }
    }
}

/// One `#[test]` per transport for each scenario `fn(Transport)` named:
/// `<scenario>::tokio` and `<scenario>::smol`.
///
/// ```ignore
/// fn enrols(transport: Transport) { /* start scepd with `.on(transport)` */ }
/// scep_tests::on_each_transport!(enrols);
/// ```
#[macro_export]
macro_rules! on_each_transport {
    ($($scenario:ident),* $(,)?) => {
        $(
            mod $scenario {
                #[test]
                fn tokio() {
                    super::$scenario($crate::server::Transport::Tokio);
                }
                #[test]
                fn smol() {
                    super::$scenario($crate::server::Transport::Smol);
                }
            }
        )*
    };
}

impl ScepdOptions {
    /// These options, served by `transport`.
    #[must_use]
    pub fn on(mut self, transport: Transport) -> Self {
        self.args.extend(["--transport".to_string(), transport.flag().to_string()]);
        self
    }
}

/// Why a server could not be started.
#[derive(Debug)]
#[non_exhaustive]
pub enum ScepdError {
    /// The binary could not be found or built.
    Binary(String),
    /// Local I/O (temp files, spawning).
    Io(std::io::Error),
    /// The server exited or did not print its listening line in time.
    Startup {
        /// What happened.
        detail: String,
        /// The server's stderr.
        stderr: String,
        /// The exit status when the server exited by itself (a refused
        /// start); `None` when it was killed after the startup timeout.
        exit: Option<ExitStatus>,
    },
}

impl std::fmt::Display for ScepdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Binary(m) => write!(f, "scepd binary: {m}"),
            Self::Io(e) => write!(f, "I/O error: {e}"),
            Self::Startup { detail, stderr, .. } => {
                write!(f, "scepd did not start: {detail}\n--- stderr ---\n{stderr}")
            }
        }
    }
}

impl std::error::Error for ScepdError {}

impl From<std::io::Error> for ScepdError {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e)
    }
}

/// A running `scepd serve`. Stopped on drop.
#[derive(Debug)]
pub struct Scepd {
    child: Child,
    dir: tempfile::TempDir,
    data_dir: PathBuf,
    base: String,
    port: u16,
}

impl Scepd {
    /// Starts a server as described by `opts` and waits for it to listen.
    ///
    /// # Errors
    /// No binary, spawn failure, or no listening line within
    /// `opts.startup_timeout` (the error holds stderr).
    pub fn start(opts: ScepdOptions) -> Result<Self, ScepdError> {
        let bin = scepd_binary()?;
        let dir = tempfile::tempdir()?;
        let data_dir = opts.data_dir.clone().unwrap_or_else(|| dir.path().join("data"));
        for (rel, contents) in &opts.files {
            let path = dir.path().join(rel);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&path, contents)?;
        }
        let mut cmd = Command::new(&bin);
        cmd.arg("serve").arg("--data-dir").arg(&data_dir).args(["--listen", "127.0.0.1:0"]);
        if let Some(toml) = &opts.config {
            let path = dir.path().join("scepd.toml");
            std::fs::write(&path, toml)?;
            cmd.arg("--config").arg(path);
        }
        if let Some(pw) = &opts.challenge_password {
            cmd.args(["--challenge-password", pw]);
        }
        cmd.args(&opts.args);
        // A clean environment for the knobs scepd reads, then the caller's.
        for var in ["SCEPD_CONFIG", "SCEPD_DATA_DIR", "SCEPD_LISTEN", "SCEPD_CHALLENGE_PASSWORD", "SCEPD_LOG_FORMAT"] {
            cmd.env_remove(var);
        }
        cmd.env("RUST_LOG", "info");
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        let stderr_path = dir.path().join("scepd.stderr");
        cmd.current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr_path)?);
        let mut child = cmd.spawn().map_err(|e| ScepdError::Binary(format!("cannot run {}: {e}", bin.display())))?;
        let Some(stdout) = child.stdout.take() else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(ScepdError::Binary("no stdout pipe".into()));
        };
        let (tx, rx) = mpsc::channel();
        // Reads stdout to its end so the server never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + opts.startup_timeout;
        let fail = |mut child: Child, detail: String, exit: Option<ExitStatus>| {
            let _ = child.kill();
            let _ = child.wait();
            Err(ScepdError::Startup { detail, stderr: std::fs::read_to_string(&stderr_path).unwrap_or_default(), exit })
        };
        let mut seen = Vec::new();
        let (scheme, addr) = loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix("scepd listening on ")
                        && let Some((scheme, addr)) = rest.split_once("://")
                        && (scheme == "http" || scheme == "https")
                    {
                        break (scheme.to_string(), addr.trim().to_string());
                    }
                    seen.push(line);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let exit = child.wait().ok();
                    let status = exit.map(|s| s.to_string()).unwrap_or_default();
                    return fail(child, format!("exited ({status}); stdout: {seen:?}"), exit);
                }
            }
            if Instant::now() >= deadline {
                return fail(
                    child,
                    format!("no listening line within {:?}; stdout: {seen:?}", opts.startup_timeout),
                    None,
                );
            }
        };
        let Some(port) = addr.rsplit_once(':').and_then(|(_, p)| p.parse::<u16>().ok()) else {
            return fail(child, format!("unparsable listening address {addr:?}"), None);
        };
        Ok(Self { child, dir, data_dir, base: format!("{scheme}://{addr}"), port })
    }

    /// `http://127.0.0.1:PORT` (`https://` when the configuration has `[server.tls]`).
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The default profile's URL, `http://127.0.0.1:PORT/scep`.
    pub fn url(&self) -> String {
        format!("{}/scep", self.base)
    }

    /// A named profile's URL, `http://127.0.0.1:PORT/scep/<name>`.
    pub fn profile_url(&self, name: &str) -> String {
        format!("{}/scep/{name}", self.base)
    }

    /// The data directory (`<tempdir>/data`: local CA, RA, database).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The temporary directory holding the configuration and the data directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The local CA certificate PEM (`data/ca.pem`), empty if there is none.
    pub fn ca_pem(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("ca.pem")).unwrap_or_default()
    }

    /// The server's stderr (its log) so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("scepd.stderr")).unwrap_or_default()
    }

    /// The last `lines` lines of the log, for assertion messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.stderr();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Polls the log (stderr) until `pred` holds for the whole log so far or
    /// `timeout` passes; true when it held.
    pub fn wait_for_stderr(&self, timeout: Duration, mut pred: impl FnMut(&str) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if pred(&self.stderr()) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends `signal` to the server (with `kill(1)`). It does not wait for
    /// the effect: see [`Scepd::wait_for_stderr`] and [`Scepd::wait_exit`].
    ///
    /// # Errors
    /// When `kill` cannot run or fails (e.g. the process is gone).
    pub fn signal(&self, signal: Signal) -> std::io::Result<()> {
        let status = Command::new("kill")
            .arg(signal.flag())
            .arg(self.child.id().to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        if status.success() {
            Ok(())
        } else {
            Err(std::io::Error::other(format!("kill {} {}: {status}", signal.flag(), self.child.id())))
        }
    }

    /// Waits up to `timeout` for the process to exit by itself; its status,
    /// or `None` while it still runs (it is not stopped here).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the server: SIGTERM, then SIGKILL after [`STOP_GRACE`].
    pub fn stop(&mut self) {
        if !self.is_running() {
            return;
        }
        let _ = self.signal(Signal::Term);
        if self.wait_exit(STOP_GRACE).is_some() {
            return;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A signal [`Scepd::signal`] sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Signal {
    /// SIGHUP: scepd reloads its configuration.
    Hup,
    /// SIGTERM: scepd answers in-flight requests, then exits 0.
    Term,
    /// SIGKILL: the process dies at once, as in a crash (`kill -9`).
    Kill,
}

impl Signal {
    /// The `kill(1)` flag.
    fn flag(self) -> &'static str {
        match self {
            Self::Hup => "-HUP",
            Self::Term => "-TERM",
            Self::Kill => "-KILL",
        }
    }
}

impl Drop for Scepd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The `scepd` binary, located (and built when missing or stale) once per process.
///
/// # Errors
/// When it cannot be found or built.
pub fn scepd_binary() -> Result<PathBuf, ScepdError> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(locate_or_build).clone().map_err(ScepdError::Binary)
}

fn locate_or_build() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("SCEPD_BIN") {
        let p = PathBuf::from(p);
        return if p.is_file() { Ok(p) } else { Err(format!("SCEPD_BIN={} is not a file", p.display())) };
    }
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    // target/<profile>/deps/<test> -> target/<profile>/scepd
    let profile_dir = exe
        .parent()
        .filter(|d| d.file_name().is_some_and(|n| n == "deps"))
        .and_then(Path::parent)
        .or_else(|| exe.parent())
        .ok_or_else(|| format!("cannot derive the target directory from {}", exe.display()))?;
    let bin = profile_dir.join(format!("scepd{}", std::env::consts::EXE_SUFFIX));
    if bin.is_file() && !is_stale(&bin) {
        return Ok(bin);
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.args(["build", "-p", "scepd", "--bin", "scepd"]).current_dir(workspace_root());
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    if let Some(target_dir) = profile_dir.parent() {
        cmd.arg("--target-dir").arg(target_dir);
    }
    let out = cmd.output().map_err(|e| format!("cannot run {cargo:?} build: {e}"))?;
    if !out.status.success() || !bin.is_file() {
        return Err(format!(
            "`cargo build -p scepd` failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(bin)
}

/// The workspace root (this crate is `<root>/tests`).
fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(Path::to_path_buf).unwrap_or(manifest)
}

/// True when a file of the crates `scepd` is built from (sources, manifests,
/// embedded assets) is newer than `bin`.
fn is_stale(bin: &Path) -> bool {
    let Ok(built) = std::fs::metadata(bin).and_then(|m| m.modified()) else { return true };
    let root = workspace_root();
    let newest = ["engine", "issuers", "store", "transports"]
        .iter()
        .map(|d| newest_mtime(&root.join(d), 0))
        .chain([root.join("Cargo.lock"), root.join("Cargo.toml")].iter().map(|p| mtime(p)))
        .max()
        .flatten();
    newest.is_some_and(|n| n > built)
}

fn mtime(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

fn newest_mtime(dir: &Path, depth: u32) -> Option<SystemTime> {
    if depth > 8 {
        return None;
    }
    let mut newest = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let Ok(ft) = entry.file_type() else { continue };
        let t = if ft.is_dir() {
            if path.file_name().is_some_and(|n| n == "target" || n == "tests") {
                continue;
            }
            newest_mtime(&path, depth + 1)
        } else {
            // Every file: the binary embeds assets too (the GUI's HTML, CSS
            // and scripts through include_bytes!), not only Rust sources.
            mtime(&path)
        };
        newest = newest.max(t);
    }
    newest
}
