//! The operator plane over the real binary: configuration from the spec's
//! environment variables, audit durability across `kill -9`, the admin API,
//! TLS 1.2/1.3 with reload on SIGHUP and the mTLS sibling route (curl and
//! openssl as the clients). Every wait is bounded.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Server, WAIT, bin};
use scep_tests::server::Transport;

const RA_CERT: &str = include_str!("../../../tests/vectors/real-clients/recipient-cert.pem");
const RA_KEY: &str = include_str!("../../../tests/vectors/real-clients/recipient-key.pem");
const ADMIN_KEY: &str = "admin-key-0123456789abcdef";

fn write_key(path: &Path, pem: &str) {
    std::fs::write(path, pem).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// A temp directory holding the RA files.
fn ra_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ra.pem"), RA_CERT).unwrap();
    write_key(&dir.path().join("ra.key"), RA_KEY);
    dir
}

/// The spec's variables for one profile issued by the built-in local CA
/// (`iss-local`), as the spec's example has it, plus two API keys.
fn spec_env(dir: &Path) -> Vec<(String, String)> {
    let v = |k: &str, val: &str| (k.to_string(), val.to_string());
    vec![
        v("CERTCTL_SCEP_ENABLED", "true"),
        v("CERTCTL_SCEP_PROFILES", "corp"),
        v("CERTCTL_SCEP_PROFILE_CORP_ISSUER_ID", "iss-local"),
        v("CERTCTL_SCEP_PROFILE_CORP_CHALLENGE_PASSWORD", "secret123"),
        v("CERTCTL_SCEP_PROFILE_CORP_RA_CERT_PATH", &dir.join("ra.pem").display().to_string()),
        v("CERTCTL_SCEP_PROFILE_CORP_RA_KEY_PATH", &dir.join("ra.key").display().to_string()),
        v("CERTCTL_API_KEYS_NAMED", &format!("ops:{ADMIN_KEY}:admin,viewer:viewer-key-0123456789")),
    ]
}

impl Server {
    fn start(args: &[&str], env: &[(String, String)], dir: &Path) -> Self {
        let mut cmd = Command::new(bin());
        cmd.arg("serve").args(args).arg("--data-dir").arg(dir.join("data"));
        for (k, v) in env {
            cmd.env(k, v);
        }
        Self::spawn(&mut cmd, dir)
    }

    fn request(&self, method: &str, target: &str, headers: &str) -> (u16, String) {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            s,
            "{method} {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{headers}Content-Length: 0\r\n\r\n"
        )
        .unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).unwrap();
        let text = String::from_utf8_lossy(&raw).into_owned();
        let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        (status, text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default())
    }

    fn admin(&self, target: &str) -> serde_like::Json {
        let (status, body) = self.request("GET", target, &format!("Authorization: Bearer {ADMIN_KEY}\r\n"));
        assert_eq!(status, 200, "{target}: {body}");
        serde_like::Json(body)
    }

    fn kill9(&mut self) {
        let ok = Command::new("kill").arg("-KILL").arg(self.child.id().to_string()).status().unwrap();
        assert!(ok.success());
        let _ = self.child.wait();
    }
}

/// Minimal JSON peeking without a JSON dependency in this test crate.
mod serde_like {
    pub(crate) struct Json(pub(crate) String);
    impl Json {
        /// How many times `"key": value` occurs.
        pub(crate) fn count(&self, needle: &str) -> usize {
            self.0.matches(needle).count()
        }
    }
}

/// Runs `cmd` to its exit, at most [`WAIT`] (then it is killed and the test
/// fails: a start must never hang, e.g. reading an endless file).
fn run(cmd: &mut Command) -> (bool, String, String) {
    let out = tempfile::tempdir().unwrap();
    let (stdout, stderr) = (out.path().join("stdout"), out.path().join("stderr"));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout).unwrap())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not exit within {WAIT:?}; stderr:\n{}", std::fs::read_to_string(&stderr).unwrap());
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    (status.success(), std::fs::read_to_string(&stdout).unwrap(), std::fs::read_to_string(&stderr).unwrap())
}

#[test]
fn the_spec_environment_configures_a_server_with_no_file() {
    let dir = ra_dir();
    let env = spec_env(dir.path());
    let (ok, stdout, stderr) =
        run(Command::new(bin()).current_dir(dir.path()).arg("check-config").envs(env.iter().cloned()));
    assert!(ok, "{stderr}");
    assert!(stdout.contains("environment: OK (profiles: corp)"), "{stdout}");

    let server = Server::start(&[], &env, dir.path());
    let (status, body) = server.request("GET", "/scep/corp?operation=GetCACaps", "");
    assert_eq!(status, 200, "{body}");
    // The admin API with the keys from CERTCTL_API_KEYS_NAMED.
    let profiles = server.admin("/api/v1/admin/scep/profiles");
    assert_eq!(profiles.count("\"path_id\": \"corp\""), 1, "{}", profiles.0);
    let (status, _) =
        server.request("GET", "/api/v1/admin/scep/profiles", "Authorization: Bearer viewer-key-0123456789\r\n");
    assert_eq!(status, 403);
    let (status, _) = server.request("GET", "/api/v1/admin/scep/profiles", "");
    assert_eq!(status, 401);
}

/// One invalid value per kind of variable: check-config and serve both stop,
/// naming the variable.
#[test]
fn each_invalid_variable_kind_stops_the_start_naming_it() {
    let dir = ra_dir();
    let ra = dir.path().join("ra.pem").display().to_string();
    let cases: &[(&str, &str, &str)] = &[
        ("CERTCTL_SCEP_ENABLED", "maybe", "CERTCTL_SCEP_ENABLED"),
        ("CERTCTL_SCEP_PROFILES", "Corp", "CERTCTL_SCEP_PROFILES"),
        ("CERTCTL_SCEP_PROFILE_CORP_ISSUER_ID", "iss-vault", "CERTCTL_SCEP_PROFILE_CORP_ISSUER_ID"),
        ("CERTCTL_SCEP_PROFILE_CORP_CHALLENGE_PASSWORD", "", "CERTCTL_SCEP_PROFILE_CORP_CHALLENGE_PASSWORD"),
        ("CERTCTL_SCEP_PROFILE_CORP_RA_CERT_PATH", "/nonexistent/ra.pem", "CERTCTL_SCEP_PROFILE_CORP_RA_CERT_PATH"),
        ("CERTCTL_SCEP_PROFILE_CORP_RA_KEY_PATH", &ra, "CERTCTL_SCEP_PROFILE_CORP_RA_KEY_PATH"),
        ("CERTCTL_SCEP_PROFILE_CORP_MTLS_ENABLED", "yes", "CERTCTL_SCEP_PROFILE_CORP_MTLS_ENABLED"),
        (
            "CERTCTL_SCEP_PROFILE_CORP_MTLS_CLIENT_CA_TRUST_BUNDLE_PATH",
            "/nonexistent/ca.pem",
            "CERTCTL_SCEP_PROFILE_CORP_MTLS_CLIENT_CA_TRUST_BUNDLE_PATH",
        ),
        (
            "CERTCTL_SCEP_PROFILE_CORP_INTUNE_CHALLENGE_VALIDITY",
            "an hour",
            "CERTCTL_SCEP_PROFILE_CORP_INTUNE_CHALLENGE_VALIDITY",
        ),
        (
            "CERTCTL_SCEP_PROFILE_CORP_INTUNE_PER_DEVICE_RATE_LIMIT_24H",
            "three",
            "CERTCTL_SCEP_PROFILE_CORP_INTUNE_PER_DEVICE_RATE_LIMIT_24H",
        ),
        ("CERTCTL_SCEP_PROFILE_CORP_CHALENGE_PASSWORD", "typo", "CERTCTL_SCEP_PROFILE_CORP_CHALENGE_PASSWORD"),
        ("CERTCTL_SCEP_PROFILE_IOT_CHALLENGE_PASSWORD", "x", "CERTCTL_SCEP_PROFILE_IOT_CHALLENGE_PASSWORD"),
        ("CERTCTL_API_KEYS_NAMED", "ops:short:admin", "CERTCTL_API_KEYS_NAMED"),
        // Issue 13 item 6b: a third field that is not exactly a role was appended to a reader's key.
        ("CERTCTL_API_KEYS_NAMED", "ops:admin-key-0123456789abcdef:Admin", "CERTCTL_API_KEYS_NAMED: entry 1"),
        ("CERTCTL_API_KEYS_NAMED", "ops:admin-key-0123456789abcdef:root", "CERTCTL_API_KEYS_NAMED: entry 1"),
        ("CERTCTL_API_KEYS_NAMED", "ops:admin-key-0123456789abcdef:", "CERTCTL_API_KEYS_NAMED: entry 1"),
        // Issue 13 item 6a: a path that never ends stops the start instead of reading forever.
        ("CERTCTL_SCEP_PROFILE_CORP_RA_CERT_PATH", "/dev/urandom", "CERTCTL_SCEP_PROFILE_CORP_RA_CERT_PATH"),
        ("CERTCTL_SCEP_PROFILE_CORP_RA_KEY_PATH", "/dev/zero", "CERTCTL_SCEP_PROFILE_CORP_RA_KEY_PATH"),
    ];
    for (var, value, named) in cases {
        let mut env = spec_env(dir.path());
        env.retain(|(k, _)| k != var);
        env.push(((*var).to_string(), (*value).to_string()));
        if var.ends_with("_MTLS_CLIENT_CA_TRUST_BUNDLE_PATH") {
            env.push(("CERTCTL_SCEP_PROFILE_CORP_MTLS_ENABLED".into(), "true".into()));
        }
        let (ok, _, stderr) =
            run(Command::new(bin()).current_dir(dir.path()).arg("check-config").envs(env.iter().cloned()));
        assert!(!ok, "{var}={value:?} passed check-config");
        assert!(stderr.contains(named), "{var}={value:?}: {stderr}");
        let (ok, stdout, stderr) = run(Command::new(bin())
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join("data"))
            .envs(env.iter().cloned()));
        assert!(!ok && !stdout.contains("listening"), "{var}={value:?} served");
        assert!(stderr.contains(named), "{var}={value:?}: {stderr}");
    }
    // An RA key readable by others is refused, naming the variable and the file.
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(dir.path().join("ra.key"), std::fs::Permissions::from_mode(0o640)).unwrap();
    let (ok, _, stderr) =
        run(Command::new(bin()).current_dir(dir.path()).arg("check-config").envs(spec_env(dir.path())));
    assert!(!ok);
    assert!(stderr.contains("CERTCTL_SCEP_PROFILE_CORP_RA_KEY_PATH") && stderr.contains("chmod 600"), "{stderr}");
}

/// kill -9 in the middle of a load of enrolments (decisions: each its own
/// durable event, committed before the answer): every acknowledged answer has
/// its event, and after the restart every certificate in the local CA's store
/// is explained by the trail (issue 13 item 6d: a certificate recorded by the
/// CA just before the kill, whose event was not yet committed, gets an
/// `issued_not_delivered` event at start-up).
#[test]
fn audit_events_survive_kill_9_mid_load() {
    audit_events_survive_kill_9_mid_load_on(None);
}

/// The same with the audit trail in the shared PostgreSQL store
/// (`SCEPD_TEST_DATABASE_URL`), and the certificate index with it:
/// start-up reconciliation explains the certificates this node recorded.
#[test]
fn audit_events_survive_kill_9_mid_load_on_postgresql() {
    let db = scep_tests::database::TestDatabase::create("audit_events_survive_kill_9_mid_load_on_postgresql");
    audit_events_survive_kill_9_mid_load_on(Some(&db.url));
}

fn audit_events_survive_kill_9_mid_load_on(database: Option<&str>) {
    use scep_tests::client::{CsrSpec, DeviceKey, MessageOptions, PkiMethod, ScepClient};
    let dir = ra_dir();
    let mut env = spec_env(dir.path());
    if let Some(url) = database {
        env.push(("CERTCTL_DATABASE_URL".to_string(), url.to_string()));
    }
    // Several rounds of load and kill -9 on one data directory: each kill may
    // land between the CA's commit of a certificate and the commit of its event.
    const ROUNDS: usize = 4;
    let acked = Arc::new(AtomicUsize::new(0));
    let sent = Arc::new(AtomicUsize::new(0));
    for round in 0..ROUNDS {
        let mut server = Server::start(&[], &env, dir.path());
        let url = format!("http://127.0.0.1:{}/scep/corp", server.port);
        let stop = Arc::new(AtomicBool::new(false));
        let target = acked.load(Ordering::SeqCst) + 40;
        let workers: Vec<_> = (0..8)
            .map(|slot| {
                let (acked, sent, stop, url) = (acked.clone(), sent.clone(), stop.clone(), url.clone());
                std::thread::spawn(move || {
                    let key = DeviceKey::pregenerated(slot).unwrap();
                    let client = ScepClient::new(&url).unwrap().with_timeout(Duration::from_secs(5));
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        let id = format!("kill9-{round}-{slot}-{n}");
                        let spec = CsrSpec::new(id.clone(), Some("secret123"));
                        let options = MessageOptions { transaction_id: Some(id), ..MessageOptions::default() };
                        sent.fetch_add(1, Ordering::SeqCst);
                        match client.enroll(&key, &spec, &options, PkiMethod::Post) {
                            Ok(e) if e.issued().is_ok() => {
                                acked.fetch_add(1, Ordering::SeqCst);
                            }
                            Ok(e) => panic!("enrolment refused: {:?}", e.reply.fail_info_text),
                            Err(_) => return, // the server is gone
                        }
                    }
                })
            })
            .collect();
        let deadline = Instant::now() + WAIT;
        while acked.load(Ordering::SeqCst) < target {
            assert!(Instant::now() < deadline, "load did not progress");
            std::thread::sleep(Duration::from_millis(5));
        }
        server.kill9();
        stop.store(true, Ordering::Relaxed);
        for w in workers {
            w.join().unwrap();
        }
    }
    let (acked, sent) = (acked.load(Ordering::SeqCst), sent.load(Ordering::SeqCst));

    // Restart on the same data directory; read the trail through the admin API.
    let server = Server::start(&[], &env, dir.path());
    let mut events = Vec::new();
    let mut before = String::new();
    loop {
        let page = server.admin(&format!("/api/v1/admin/scep/events?action=scep_pkcsreq&limit=1000{before}"));
        let page: serde_json::Value = serde_json::from_str(&page.0).unwrap();
        let list = page["events"].as_array().unwrap().clone();
        let n = list.len();
        if let Some(last) = list.last() {
            before = format!("&before_id={}", last["id"]);
        }
        events.extend(list);
        if n < 1000 {
            break;
        }
    }
    let with_outcome = |o: &str| events.iter().filter(|e| e["outcome"] == o).count();
    let (delivered, undelivered) = (with_outcome("success"), with_outcome("issued_not_delivered"));
    // Every acknowledged answer was audited before it was written; requests cut
    // by the kill may have their event without their answer, never the reverse.
    assert!(delivered >= acked, "events {delivered} < acknowledged {acked}");
    assert!(delivered + undelivered <= sent, "events {delivered}+{undelivered} > sent {sent}");
    assert!(
        delivered - acked <= 8 * ROUNDS,
        "more unacknowledged events ({}) than requests in flight at the kills",
        delivered - acked
    );

    // Every certificate in the CA store has an event naming its serial.
    let norm = |s: &str| s.trim_start_matches("00").to_ascii_lowercase();
    let audited: std::collections::HashSet<String> =
        events.iter().filter_map(|e| e["serial"].as_str()).map(norm).collect();
    let stored: Vec<String> = match database {
        None => {
            let db = rusqlite::Connection::open(dir.path().join("data/local-ca.sqlite")).unwrap();
            let mut stmt = db.prepare("SELECT serial FROM certificates").unwrap();
            stmt.query_map([], |r| r.get::<_, String>(0)).unwrap().map(|r| norm(&r.unwrap())).collect()
        }
        // The certificate index is in the shared store too.
        Some(url) => {
            let mut db = postgres::Client::connect(url, postgres::NoTls).unwrap();
            let rows = db.query("SELECT serial FROM ca_certificates", &[]).unwrap();
            rows.iter().map(|r| norm(r.get::<_, &str>(0))).collect()
        }
    };
    assert!(stored.len() >= acked, "{} certificates stored, {acked} acknowledged", stored.len());
    let unexplained: Vec<&String> = stored.iter().filter(|s| !audited.contains(*s)).collect();
    assert!(unexplained.is_empty(), "certificates without an audit event: {unexplained:?}");
    assert_eq!(stored.len(), delivered + undelivered, "one event per certificate");
    eprintln!("kill -9: {acked} acknowledged, {delivered} delivered events, {undelivered} issued_not_delivered");
}

/// Discovery answers are tallied, not one event each: after a clean stop
/// (SIGTERM) the stored counts add up to exactly the answers sent.
#[test]
fn discovery_tally_is_complete_after_sigterm() {
    let dir = ra_dir();
    let env = spec_env(dir.path());
    let mut server = Server::start(&[], &env, dir.path());
    let port = server.port;
    let answered: usize = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                let mut ok = 0;
                for _ in 0..50 {
                    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
                    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                    let req = "GET /scep/corp?operation=GetCACaps HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
                    s.write_all(req.as_bytes()).unwrap();
                    let mut raw = Vec::new();
                    let _ = s.read_to_end(&mut raw);
                    ok += usize::from(complete_answer(&raw, 200));
                }
                ok
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .sum();
    assert_eq!(answered, 200);
    assert!(Command::new("kill").arg("-TERM").arg(server.child.id().to_string()).status().unwrap().success());
    let deadline = Instant::now() + WAIT;
    while server.child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "scepd did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }

    let server = Server::start(&[], &env, dir.path());
    let page = server.admin("/api/v1/admin/scep/events?action=scep_getcacaps&limit=1000");
    let counts: usize = page
        .0
        .split("\"count\": ")
        .skip(1)
        .map(|rest| rest.split(|c: char| !c.is_ascii_digit()).next().unwrap().parse::<usize>().unwrap())
        .sum();
    assert_eq!(counts, 200, "{}", page.0);
    assert!(page.count("\"client_addr\": \"127.0.0.1\"") >= 1, "tallied by client IP: {}", page.0);
}

/// Acknowledged: a complete `status` response (the whole declared body arrived).
fn complete_answer(raw: &[u8], status: u16) -> bool {
    let text = String::from_utf8_lossy(raw);
    let Some((head, body)) = text.split_once("\r\n\r\n") else { return false };
    let len = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().ok()))
        .flatten();
    head.starts_with(&format!("HTTP/1.1 {status} ")) && len == Some(body.len())
}

fn openssl(dir: &Path, args: &[&str]) {
    let (ok, _, err) = run(Command::new("openssl").current_dir(dir).args(args));
    assert!(ok, "openssl {args:?}: {err}");
}

/// A CA (`name`-ca.pem/key) and a leaf (`leaf`.pem/key) it issues.
fn ca_and_leaf(dir: &Path, ca: &str, leaf: &str, ext: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "30",
            "-subj",
            &format!("/CN={ca}"),
            "-keyout",
            &format!("{ca}.key"),
            "-out",
            &format!("{ca}.pem"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            &format!("/CN={leaf}"),
            "-keyout",
            &format!("{leaf}.key"),
            "-out",
            &format!("{leaf}.csr"),
        ],
    );
    std::fs::write(dir.join(format!("{leaf}.ext")), ext).unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{leaf}.csr"),
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-days",
            "30",
            "-out",
            &format!("{leaf}.pem"),
            "-extfile",
            &format!("{leaf}.ext"),
        ],
    );
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(dir.join(format!("{leaf}.key")), std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn curl(port: u16, dir: &Path, path: &str, extra: &[&str]) -> String {
    let (_, out, _) = run(Command::new("curl")
        .current_dir(dir)
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10", "--cacert", "server-ca.pem"])
        .args(extra)
        .arg(format!("https://localhost:{port}{path}")));
    out
}

// On smol too: it reads through its own readiness-tracking stream, under TLS as well.
scep_tests::on_each_transport!(tls_12_and_13_mtls_route_and_certificate_reload_on_sighup);

fn tls_12_and_13_mtls_route_and_certificate_reload_on_sighup(transport: Transport) {
    let dir = ra_dir();
    let d = dir.path();
    ca_and_leaf(d, "server-ca", "server", "subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\n");
    ca_and_leaf(d, "client-ca", "client", "extendedKeyUsage=clientAuth\n");
    ca_and_leaf(d, "other-ca", "intruder", "extendedKeyUsage=clientAuth\n");
    let mut env = spec_env(d);
    env.push(("CERTCTL_SCEP_PROFILE_CORP_MTLS_ENABLED".into(), "true".into()));
    env.push((
        "CERTCTL_SCEP_PROFILE_CORP_MTLS_CLIENT_CA_TRUST_BUNDLE_PATH".into(),
        d.join("client-ca.pem").display().to_string(),
    ));
    let config = d.join("scepd.toml");
    std::fs::write(&config, "[server.tls]\ncert = \"server.pem\"\nkey = \"server.key\"\n").unwrap();
    let server = Server::start(&["--config", config.to_str().unwrap(), "--transport", transport.flag()], &env, d);
    let port = server.port;
    let caps = "/scep/corp?operation=GetCACaps";
    let mtls = "/scep-mtls/corp?operation=GetCACaps";

    // Anonymous SCEP over TLS 1.2 and 1.3 (Windows clients need 1.2).
    assert_eq!(curl(port, d, caps, &["--tlsv1.2", "--tls-max", "1.2"]), "200");
    assert_eq!(curl(port, d, caps, &["--tlsv1.3"]), "200");
    // ALPN offers h2 first: a client that speaks it gets HTTP/2 over TLS.
    let (_, version, _) = run(Command::new("curl")
        .current_dir(d)
        .args(["-s", "-o", "/dev/null", "-w", "%{http_version}", "--max-time", "10", "--cacert", "server-ca.pem"])
        .arg("--http2")
        .arg(format!("https://localhost:{port}{caps}")));
    assert_eq!(version, "2", "{transport:?}");
    // The mTLS sibling route: no certificate, a foreign CA's, this profile's CA's.
    assert_eq!(curl(port, d, mtls, &[]), "401");
    assert_eq!(curl(port, d, mtls, &["--cert", "intruder.pem", "--key", "intruder.key"]), "401");
    assert_eq!(curl(port, d, mtls, &["--cert", "client.pem", "--key", "client.key"]), "200");
    assert_eq!(curl(port, d, mtls, &["--tls-max", "1.2", "--cert", "client.pem", "--key", "client.key"]), "200");

    // Rotate the server certificate files and SIGHUP: new connections get the new certificate.
    let serial = || {
        let (_, out, _) = run(Command::new("sh").current_dir(d).arg("-c").arg(format!(
            "openssl s_client -connect 127.0.0.1:{port} -servername localhost </dev/null 2>/dev/null | openssl x509 -noout -serial"
        )));
        out
    };
    let before = serial();
    assert!(before.starts_with("serial="), "{before:?}");
    ca_and_leaf(d, "server-ca2", "server2", "subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\n");
    std::fs::copy(d.join("server2.pem"), d.join("server.pem")).unwrap();
    std::fs::copy(d.join("server2.key"), d.join("server.key")).unwrap();
    assert!(Command::new("kill").arg("-HUP").arg(server.child.id().to_string()).status().unwrap().success());
    let deadline = Instant::now() + WAIT;
    while serial() == before {
        assert!(Instant::now() < deadline, "certificate not reloaded after SIGHUP");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_, expected, _) =
        run(Command::new("openssl").current_dir(d).args(["x509", "-noout", "-serial", "-in", "server2.pem"]));
    assert_eq!(serial(), expected);
}
