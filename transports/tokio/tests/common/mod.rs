//! Starting the real `scepd` binary in this package's tests.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The binary under test: this package's, or the one `SCEPD_BIN` names (how
/// `.ci/run` runs these tests against the pure-Rust build, which cargo cannot
/// build beside the test harness: the harness's dev-dependencies turn aws-lc on).
pub(crate) fn bin() -> &'static str {
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| std::env::var("SCEPD_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_scepd").to_string()))
}
/// Longest wait for start-up (and other bounded waits of the tests).
pub(crate) const WAIT: Duration = Duration::from_secs(30);

/// A running scepd; killed and reaped on drop.
pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) port: u16,
    /// The stdout lines printed up to `scepd listening on ...` and the web
    /// GUI's line after it (the start-up banner).
    #[allow(dead_code, reason = "read by first_run.rs; every test binary compiles this module")]
    pub(crate) banner: Vec<String>,
}

impl Server {
    /// Runs `cmd` (`scepd serve ...`, arguments and environment already set)
    /// on 127.0.0.1:0 with stderr in `<dir>/stderr.log`, and waits at most
    /// [`WAIT`] for its `scepd listening on <scheme>://ADDR` line.
    pub(crate) fn spawn(cmd: &mut Command, dir: &Path) -> Self {
        let stderr = std::fs::File::create(dir.join("stderr.log")).unwrap();
        let mut child = cmd
            .args(["--listen", "127.0.0.1:0"])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + WAIT;
        let mut banner = Vec::new();
        let port = loop {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => {
                    banner.push(line.clone());
                    if let Some(addr) = line.strip_prefix("scepd listening on ") {
                        let port = addr.rsplit_once(':').unwrap().1.parse().unwrap();
                        // The web GUI's line, written with the listening line.
                        if let Ok(next) = rx.recv_timeout(Duration::from_secs(5)) {
                            banner.push(next);
                        }
                        break port;
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let log = std::fs::read_to_string(dir.join("stderr.log")).unwrap_or_default();
                    panic!("scepd did not start within {WAIT:?}; stderr:\n{log}");
                }
            }
        };
        Self { child, port, banner }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
