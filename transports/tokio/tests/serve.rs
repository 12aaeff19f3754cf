//! The real `scepd` binary over real sockets: startup line, routes, reload,
//! graceful shutdown, check-config. Every wait is bounded.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

use common::{Server, WAIT, bin};
use std::time::{Duration, Instant};

const RA_CERT: &str = include_str!("../../../tests/vectors/real-clients/recipient-cert.pem");
const RA_KEY: &str = include_str!("../../../tests/vectors/real-clients/recipient-key.pem");

fn profile(name: &str) -> String {
    format!(
        "[[profile]]\nname = \"{name}\"\nissuer = \"none\"\nchallenge_password = \"secret123\"\n\
         ra_cert = \"ra.pem\"\nra_key = \"ra.key\"\nca_chain = \"ra.pem\"\n"
    )
}

/// A temp directory with the RA files and a config serving `corp`.
fn setup(server: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ra.pem"), RA_CERT).unwrap();
    let key = dir.path().join("ra.key");
    std::fs::write(&key, RA_KEY).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let config = dir.path().join("scepd.toml");
    std::fs::write(&config, format!("[server]\ndata_dir = \"data\"\n{server}\n{}", profile("corp"))).unwrap();
    (dir, config)
}

impl Server {
    fn start(config: &Path, dir: &Path) -> Self {
        Self::spawn(Command::new(bin()).args(["serve", "--config"]).arg(config), dir)
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill").arg(format!("-{sig}")).arg(self.child.id().to_string()).status().unwrap();
        assert!(ok.success());
    }

    fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("scepd did not exit within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    }

    /// One HTTP/1.1 request on a fresh connection: (status, body).
    fn request(&self, method: &str, target: &str, body: &[u8]) -> (u16, String) {
        let mut s = self.connect();
        write!(
            s,
            "{method} {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .unwrap();
        s.write_all(body).unwrap();
        read_response(&mut s)
    }
}

fn read_response(s: &mut TcpStream) -> (u16, String) {
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("no status in {text:?}"));
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

#[test]
fn serves_routes_reloads_and_stops_cleanly() {
    let (dir, config) = setup("shutdown_grace_secs = 10");
    let mut server = Server::start(&config, dir.path());

    assert_eq!(server.request("GET", "/healthz", b""), (200, "ok\nstore: sqlite reachable\n".into()));

    // The SCEP routes reach the engine (whatever it answers today, not a routing error).
    let (caps, _) = server.request("GET", "/scep?operation=GetCACaps", b"");
    assert!(![404, 405, 413].contains(&caps), "GetCACaps: {caps}");
    for target in [
        "/scep/corp?operation=GetCACaps",
        "/scep/corp/pkiclient.exe?operation=GetCACaps",
        "/scep/pkiclient.exe?operation=GetCACaps",
    ] {
        assert_eq!(server.request("GET", target, b"").0, caps, "{target}");
    }
    assert_eq!(server.request("GET", "/scep/iot?operation=GetCACaps", b"").0, 404);
    assert_eq!(server.request("DELETE", "/scep", b"").0, 405);
    // Declared body over the 256 KiB default: refused before reading.
    let mut s = server.connect();
    write!(s, "POST /scep?operation=PKIOperation HTTP/1.1\r\nHost: x\r\nContent-Length: 300000\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut s).0, 413);

    // SIGHUP: a new profile appears; an invalid config is refused and the old one keeps serving.
    std::fs::write(&config, format!("[server]\ndata_dir = \"data\"\n{}\n{}", profile("corp"), profile("iot"))).unwrap();
    server.signal("HUP");
    let deadline = Instant::now() + WAIT;
    while server.request("GET", "/scep/iot?operation=GetCACaps", b"").0 == 404 {
        assert!(Instant::now() < deadline, "profile iot not served after SIGHUP");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::fs::write(&config, "[[profile]]\nname = \"BAD NAME\"\n").unwrap();
    server.signal("HUP");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(server.request("GET", "/scep/iot?operation=GetCACaps", b"").0, caps);
    assert_eq!(server.request("GET", "/healthz", b"").0, 200);

    // An in-flight request (headers sent, body half sent) finishes after SIGTERM
    // with the same answer the engine gives that body when nothing stops.
    let (engine_answer, _) = server.request("POST", "/scep?operation=PKIOperation", b"0123456789");
    let mut inflight = server.connect();
    write!(inflight, "POST /scep?operation=PKIOperation HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n01234")
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    server.signal("TERM");
    std::thread::sleep(Duration::from_millis(300));
    inflight.write_all(b"56789").unwrap();
    let (status, body) = read_response(&mut inflight);
    assert_eq!((status, engine_answer), (400, 400), "the in-flight POST got the engine's answer");
    assert!(body.contains("not a SCEP PKIMessage"));

    let status = server.wait_exit(Duration::from_secs(15));
    assert!(status.success(), "exit status {status:?}");
}

#[test]
fn shutdown_is_bounded_by_the_grace_period() {
    let (dir, config) = setup("shutdown_grace_secs = 1\nbody_read_timeout_secs = 600");
    let mut server = Server::start(&config, dir.path());
    // A request that never completes.
    let mut stalled = server.connect();
    write!(stalled, "POST /scep?operation=PKIOperation HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n01").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let start = Instant::now();
    server.signal("TERM");
    let status = server.wait_exit(Duration::from_secs(15));
    assert!(status.success(), "exit status {status:?}");
    assert!(start.elapsed() >= Duration::from_millis(900), "did not wait for the in-flight request");
}

/// Runs a command to completion within 30 s: (success, stdout, stderr).
fn run_bounded(cmd: &mut Command) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let (out, err) = (dir.path().join("out"), dir.path().join("err"));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("command did not finish within {WAIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status.success(), std::fs::read_to_string(out).unwrap(), std::fs::read_to_string(err).unwrap())
}

#[test]
fn check_config_names_the_invalid_key() {
    let (dir, config) = setup("");
    let (ok, stdout, stderr) = run_bounded(Command::new(bin()).args(["check-config", "--config"]).arg(&config));
    assert!(ok, "{stderr}");
    assert!(stdout.contains("corp"), "{stdout}");

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[server]\nmax_connections = 0\n").unwrap();
    let (ok, _, stderr) = run_bounded(Command::new(bin()).args(["check-config", "--config"]).arg(&bad));
    assert!(!ok);
    assert!(stderr.contains("server.max_connections"), "{stderr}");

    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(dir.path().join("ra.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let (ok, _, err) = run_bounded(Command::new(bin()).args(["check-config", "--config"]).arg(&config));
    assert!(!ok);
    assert!(err.contains("profile[corp].ra_key") && err.contains("ra.key"), "{err}");

    // serve refuses the same config and exits non-zero.
    let (ok, stdout, _) =
        run_bounded(Command::new(bin()).args(["serve", "--listen", "127.0.0.1:0", "--config"]).arg(&config));
    assert!(!ok);
    assert!(!stdout.contains("listening"), "{stdout}");

    // Without --config, check-config checks the bootstrap configuration serve would run.
    let (ok, stdout, err) = run_bounded(
        Command::new(bin())
            .arg("check-config")
            .current_dir(dir.path())
            .env_remove("SCEPD_CONFIG")
            .env_remove("SCEPD_DATA_DIR")
            .env_remove("CERTCTL_SCEP_PROFILES"),
    );
    assert!(ok, "{err}");
    assert!(stdout.contains("OK (profiles: default)"), "{stdout}");
}
