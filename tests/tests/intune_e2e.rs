//! Intune end to end: a test Connector mints challenges, devices enrol over
//! HTTP against the real `scepd` binary with an Intune profile.
//!
//! - success, then the same challenge replayed (FAILURE badMessageCheck,
//!   label `replay`), then the device over its limit (FAILURE badRequest,
//!   label `rate_limited`): CertRep status/failInfo, and the decision log lines
//!   (target `scepd::intune`, JSON) that carry the counters' labels;
//! - SIGHUP rotation of the Connector certificate (new anchor accepted, old
//!   one `signature_invalid`, a garbage bundle keeps the pool);
//! - start-up preflight (missing bundle, expired anchor, tolerance >=
//!   validity): non-zero exit naming profile and file/key;
//! - a real client (micromdm `scepclient`, certmonger) enrolling with a minted
//!   challenge as its challenge password.
//!
//! The binary is `target/<profile>/scepd`: build it first (`cargo build -p scepd`).
#![allow(clippy::unwrap_used)]

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use scep_tests::client::{
    CertRep, CsrSpec, DeviceKey, FailInfo, MessageOptions, PkiMethod, PkiStatus, ScepClient, SubjectAltName,
};
use scep_tests::intune_connector::{Claims, Connector, JwsAlg};
use serde_json::Value;

const AUD: &str = "https://scep.example.test/scep/corp";
const WAIT: Duration = Duration::from_secs(30);

/// `target/<profile>/scepd`, next to this test's `deps/` directory.
fn scepd_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().and_then(Path::parent).unwrap().join("scepd");
    assert!(bin.is_file(), "{} not found: build it first with `cargo build -p scepd`", bin.display());
    bin
}

/// A running `scepd serve` with JSON logs on `dir/stderr.log`. Killed on drop.
struct Scepd {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Scepd {
    fn start(config: &Path, dir: &Path) -> Self {
        let log = dir.join("stderr.log");
        let mut child = Command::new(scepd_bin())
            .args(["--log-format", "json", "serve", "--config"])
            .arg(config)
            .args(["--listen", "127.0.0.1:0"])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
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
        let port = loop {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => {
                    if let Some(addr) = line.strip_prefix("scepd listening on http://") {
                        break addr.rsplit_once(':').unwrap().1.parse().unwrap();
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    panic!("scepd did not start; stderr:\n{}", std::fs::read_to_string(&log).unwrap_or_default());
                }
            }
        };
        Self { child, port, log }
    }

    fn url(&self, profile: &str) -> String {
        format!("http://127.0.0.1:{}/scep/{profile}", self.port)
    }

    fn log_lines(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The `scepd::intune` decision lines logged so far.
    fn decisions(&self) -> Vec<Value> {
        self.log_lines().into_iter().filter(|v| v["target"] == "scepd::intune").map(|v| v["fields"].clone()).collect()
    }

    /// Waits until `pred` holds for the log lines.
    fn wait_log(&self, what: &str, pred: impl Fn(&[Value]) -> bool) {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if pred(&self.log_lines()) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("no {what} in the log within {WAIT:?}:\n{}", std::fs::read_to_string(&self.log).unwrap_or_default());
    }

    /// Sends SIGHUP and waits for the reload's outcome line (`message`).
    fn hangup(&self, message: &str) {
        let before = self.log_lines().iter().filter(|v| v["fields"]["message"] == message).count();
        let status = Command::new("kill").args(["-HUP", &self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
        self.wait_log(message, |lines| lines.iter().filter(|v| v["fields"]["message"] == message).count() > before);
    }
}

impl Drop for Scepd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The admin API key of the test configurations.
const ADMIN_KEY: &str = "intune-e2e-admin-key-0123456789";

/// GET an admin API path on `url`'s server with [`ADMIN_KEY`]; the JSON answer.
fn admin_get(url: &str, path: &str) -> Value {
    use std::io::{Read as _, Write as _};
    let authority = url.trim_start_matches("http://").split('/').next().unwrap();
    let mut s = std::net::TcpStream::connect(authority).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nAuthorization: Bearer {ADMIN_KEY}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}\n{body}");
    serde_json::from_str(body).unwrap()
}

/// A config dir with the Connector bundle `bundle` and profile `corp` (Intune,
/// audience [`AUD`], `extra` keys appended).
fn setup(bundle: &str, extra: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("intune.pem"), bundle).unwrap();
    let config = dir.path().join("scepd.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\ndata_dir = \"data\"\n\n[[api_key]]\nname = \"ops\"\nkey = \"{ADMIN_KEY}\"\nrole = \"admin\"\n\n\
             [[profile]]\nname = \"corp\"\nchallenge_password = \"static-secret\"\n\
             intune_enabled = true\nintune_connector_cert_path = \"intune.pem\"\nintune_audience = \"{AUD}\"\n{extra}\n"
        ),
    )
    .unwrap();
    (dir, config)
}

/// A device `sub` enrolling as `cn` (CN and the one DNS SAN) with `challenge`.
fn enroll(url: &str, cn: &str, challenge: &str) -> CertRep {
    let key = DeviceKey::generate().unwrap();
    let mut spec = CsrSpec::new(cn, Some(challenge));
    spec.subject_alt_names = vec![SubjectAltName::Dns(cn.into())];
    let client = ScepClient::new(url).unwrap();
    client.enroll(&key, &spec, &MessageOptions::default(), PkiMethod::Post).unwrap().reply
}

fn claims(sub: &str, cn: &str) -> Claims {
    Claims::new("connector-installation-1", sub, cn).audience(AUD).dns(&[cn])
}

fn assert_failure(rep: &CertRep, fail_info: FailInfo) {
    assert_eq!(rep.status, PkiStatus::FAILURE, "{rep:?}");
    assert_eq!(rep.fail_info, Some(fail_info));
}

fn assert_success(rep: &CertRep) {
    assert_eq!(rep.status, PkiStatus::SUCCESS, "failInfo {:?} {:?}", rep.fail_info, rep.fail_info_text);
    assert!(!rep.certificates.is_empty());
}

#[test]
fn success_then_replay_then_rate_limited() {
    let es = Connector::generate(JwsAlg::Es256, "Microsoft Intune Certificate Connector").unwrap();
    let rs = Connector::generate(JwsAlg::Rs256, "Microsoft Intune Certificate Connector 2").unwrap();
    let (dir, config) =
        setup(&(es.certificate_pem() + &rs.certificate_pem()), "intune_per_device_rate_limit_24h = 2\n");
    let server = Scepd::start(&config, dir.path());
    let url = server.url("corp");
    let cn = "dev1.example.com";

    // 1. ES256 (raw r||s): issued.
    let c1 = claims("device-guid-1", cn);
    let first = es.mint(&c1);
    let rep = enroll(&url, cn, &first);
    assert_success(&rep);
    let tx1 = rep.transaction_id.clone();

    // 2. The same challenge again (another key, another transaction): replay.
    let rep = enroll(&url, cn, &first);
    assert_failure(&rep, FailInfo::BAD_MESSAGE_CHECK);
    let tx2 = rep.transaction_id.clone();

    // 3. A second distinct challenge, RS256 from the other Connector: issued (2 of 2).
    let rep = enroll(&url, cn, &rs.mint(&claims("device-guid-1", cn)));
    assert_success(&rep);

    // 4. A third one for the same device: over the limit.
    let c4 = claims("device-guid-1", cn);
    let rep = enroll(&url, cn, &es.mint_with(&c4, true));
    assert_failure(&rep, FailInfo::BAD_REQUEST);

    // 5. Another device is unaffected; a CSR that differs from the claim is refused.
    assert_success(&enroll(&url, "dev2.example.com", &es.mint(&claims("device-guid-2", "dev2.example.com"))));
    let rep = enroll(&url, "dev3.example.com", &es.mint(&claims("device-guid-3", "other.example.com")));
    assert_failure(&rep, FailInfo::BAD_REQUEST);

    // The decision log: one line per decision, with the counter label and identity.
    server.wait_log("six intune decisions", |l| l.iter().filter(|v| v["target"] == "scepd::intune").count() >= 6);
    let d = server.decisions();
    let labels: Vec<&str> = d.iter().map(|f| f["label"].as_str().unwrap()).collect();
    assert_eq!(labels, ["success", "replay", "success", "rate_limited", "success", "claim_mismatch"], "{d:#?}");
    for f in &d {
        assert_eq!(f["profile"], "corp");
        assert_eq!(f["action"], "scep_pkcsreq_intune");
        assert_eq!(f["iss"], "connector-installation-1");
    }
    assert_eq!(d[0]["sub"], "device-guid-1");
    assert_eq!(d[0]["nonce"], c1.nonce.as_deref().unwrap());
    assert_eq!(d[0]["txid"], tx1.as_str());
    assert!(d[0]["detail"].as_str().unwrap().contains(cn), "binding detail: {}", d[0]["detail"]);
    assert_eq!(d[1]["txid"], tx2.as_str());
    assert_eq!(d[1]["nonce"], c1.nonce.as_deref().unwrap());
    assert_eq!(d[3]["nonce"], c4.nonce.as_deref().unwrap());
    assert!(d[3]["detail"].as_str().unwrap().contains("device-guid-1"), "{}", d[3]["detail"]);
    assert!(d[5]["detail"].as_str().unwrap().contains("other.example.com"), "{}", d[5]["detail"]);
    // The per-request line carries the same label (the counters' key).
    let outcomes: Vec<String> = server
        .log_lines()
        .iter()
        .filter(|v| v["target"] == "scepd::request" && v["fields"]["operation"] == "PKIOperation")
        .map(|v| v["fields"]["outcome"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(outcomes, ["success", "replay", "success", "rate_limited", "success", "claim_mismatch"]);

    // The per-profile counters, as the admin plane reads them.
    let stats = admin_get(&url, "/api/v1/admin/scep/intune/stats");
    let corp = &stats["profiles"].as_array().unwrap().iter().find(|p| p["path_id"] == "corp").unwrap()["counters"];
    for (label, n) in [("success", 3), ("replay", 1), ("rate_limited", 1), ("claim_mismatch", 1), ("expired", 0)] {
        assert_eq!(corp[label], n, "{label}: {stats}");
    }
    // The live replay cache and rate limiter behind them (admitted challenges hold their nonce).
    let corp_stats = stats["profiles"].as_array().unwrap().iter().find(|p| p["path_id"] == "corp").unwrap();
    assert!(corp_stats["replay_cache_entries"].as_u64().unwrap() >= 3, "{stats}");
    assert_eq!(corp_stats["rate_limit"]["devices_tracked"], 2, "device-guid-1 and -2: {stats}");
    // And the durable audit trail holds every decision under the spec's action.
    let audit = admin_get(&url, "/api/v1/admin/scep/events?profile=corp&action=scep_pkcsreq_intune&limit=50");
    let mut audited: Vec<&str> =
        audit["events"].as_array().unwrap().iter().map(|e| e["outcome"].as_str().unwrap()).collect();
    audited.reverse();
    assert_eq!(audited, ["success", "replay", "success", "rate_limited", "success", "claim_mismatch"], "{audit}");
}

#[test]
fn sighup_rotates_the_connector_certificate_and_a_bad_file_keeps_the_pool() {
    let a = Connector::generate(JwsAlg::Es256, "connector-a").unwrap();
    let b = Connector::generate(JwsAlg::Rs256, "connector-b").unwrap();
    let (dir, config) = setup(&a.certificate_pem(), "");
    let server = Scepd::start(&config, dir.path());
    let url = server.url("corp");
    let bundle = dir.path().join("intune.pem");
    let mut n = 0;
    let mut try_with = |c: &Connector| {
        n += 1;
        let cn = format!("rot{n}.example.com");
        enroll(&url, &cn, &c.mint(&claims(&format!("device-rot-{n}"), &cn)))
    };

    assert_success(&try_with(&a));
    assert_failure(&try_with(&b), FailInfo::BAD_MESSAGE_CHECK);

    std::fs::write(&bundle, b.certificate_pem()).unwrap();
    server.hangup("configuration reloaded");
    assert_success(&try_with(&b));
    assert_failure(&try_with(&a), FailInfo::BAD_MESSAGE_CHECK);

    std::fs::write(&bundle, "-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n").unwrap();
    server.hangup("reload refused; the previous configuration keeps serving");
    assert_success(&try_with(&b));
    assert_failure(&try_with(&a), FailInfo::BAD_MESSAGE_CHECK);

    let refused = server
        .log_lines()
        .into_iter()
        .find(|v| v["fields"]["message"] == "reload refused; the previous configuration keeps serving")
        .unwrap();
    let why = refused["fields"]["error"].as_str().unwrap();
    assert!(why.contains("profile[corp].intune_connector_cert_path") && why.contains("intune.pem"), "{why}");

    let labels: Vec<String> = server.decisions().iter().map(|f| f["label"].as_str().unwrap().to_string()).collect();
    assert_eq!(
        labels,
        ["success", "signature_invalid", "success", "signature_invalid", "success", "signature_invalid"]
    );
}

/// Runs `scepd serve` expecting it to refuse to start; returns its stderr.
fn refused_start(config: &Path) -> String {
    let mut child = Command::new(scepd_bin())
        .args(["serve", "--config"])
        .arg(config)
        .args(["--listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("scepd started with an invalid Intune configuration");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success(), "{err}");
    err
}

#[test]
fn preflight_refuses_to_start_naming_profile_and_file() {
    let valid = Connector::generate(JwsAlg::Es256, "ok").unwrap();
    let now = scep_engine::time::UnixTime::now().secs();
    let expired = Connector::with_validity(
        JwsAlg::Es256,
        "expired-connector",
        scep_engine::time::UnixTime::from_secs(now - 10 * 86_400),
        scep_engine::time::UnixTime::from_secs(now - 86_400),
    )
    .unwrap();

    // Missing bundle.
    let (dir, config) = setup("", "");
    std::fs::remove_file(dir.path().join("intune.pem")).unwrap();
    let err = refused_start(&config);
    assert!(err.contains("profile[corp].intune_connector_cert_path") && err.contains("intune.pem"), "{err}");
    assert!(err.contains("cannot read"), "{err}");

    // A bundle holding an expired Connector certificate (next to a valid one).
    let (_dir, config) = setup(&(valid.certificate_pem() + &expired.certificate_pem()), "");
    let err = refused_start(&config);
    assert!(err.contains("profile[corp].intune_connector_cert_path") && err.contains("intune.pem"), "{err}");
    assert!(err.contains("expired") && err.contains("expired-connector"), "{err}");

    // No certificate at all.
    let (_dir, config) = setup("just text\n", "");
    let err = refused_start(&config);
    assert!(err.contains("profile[corp].intune_connector_cert_path") && err.contains("no CERTIFICATE"), "{err}");

    // Tolerance >= validity.
    let (_dir, config) =
        setup(&valid.certificate_pem(), "intune_challenge_validity = \"5m\"\nintune_clock_skew_tolerance = \"300s\"\n");
    let err = refused_start(&config);
    assert!(err.contains("profile[corp].intune_clock_skew_tolerance"), "{err}");
}

#[test]
fn real_clients_enrol_with_a_minted_challenge() {
    use scep_tests::real_clients::{certmonger_enroll, find_tool, scepclient_enroll};
    let connector = Connector::generate(JwsAlg::Es256, "Microsoft Intune Certificate Connector").unwrap();
    // scepclient encrypts with single DES: this profile opts in.
    let (dir, config) = setup(&connector.certificate_pem(), "ciphers = [\"des\", \"des3\", \"aes128\", \"aes256\"]\n");
    let server = Scepd::start(&config, dir.path());
    let url = server.url("corp");
    let mut ran = 0;

    if find_tool("scepclient").is_some() {
        let cn = "scepclient-device";
        let challenge = connector.mint(&Claims::new("connector-installation-1", "device-scepclient", cn).audience(AUD));
        let issued = scepclient_enroll(&url, &challenge, cn, WAIT).unwrap();
        assert!(!issued.der.is_empty());
        ran += 1;
    } else {
        eprintln!("SKIP scepclient: not installed");
    }

    if find_tool("certmonger").is_some() && find_tool("getcert").is_some() {
        let cn = "certmonger-device";
        let challenge = connector.mint(&Claims::new("connector-installation-1", "device-certmonger", cn).audience(AUD));
        let issued = certmonger_enroll(&url, &challenge, cn, None, WAIT).unwrap();
        assert!(!issued.der.is_empty());
        ran += 1;
    } else {
        eprintln!("SKIP certmonger: not installed");
    }

    let labels: Vec<String> = server.decisions().iter().map(|f| f["label"].as_str().unwrap().to_string()).collect();
    assert_eq!(labels.len(), ran, "{labels:?}");
    assert!(labels.iter().all(|l| l == "success"), "{labels:?}");
}
