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
//! The server is the shared fixture [`scep_tests::server::Scepd`]
//! (`127.0.0.1:0`, the configuration and Connector bundle in its temporary
//! directory, JSON logs).
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::Duration;

use scep_tests::client::{
    CertRep, CsrSpec, DeviceKey, FailInfo, MessageOptions, PkiMethod, PkiStatus, ScepClient, SubjectAltName,
};
use scep_tests::intune_connector::{Claims, Connector, JwsAlg};
use scep_tests::server::{Scepd, ScepdError, ScepdOptions, Signal, Transport};
use serde_json::Value;

const AUD: &str = "https://scep.example.test/scep/corp";
const WAIT: Duration = Duration::from_secs(30);

/// Starts `scepd --log-format json serve` as configured by `opts` (see [`setup`]).
fn start(mut opts: ScepdOptions) -> Scepd {
    opts.args.extend(["--log-format".to_string(), "json".to_string()]);
    opts.startup_timeout = WAIT;
    Scepd::start(opts).unwrap_or_else(|e| panic!("{e}"))
}

/// The JSON log lines logged so far.
fn log_lines(server: &Scepd) -> Vec<Value> {
    json_lines(&server.stderr())
}

fn json_lines(log: &str) -> Vec<Value> {
    log.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// The `scepd::intune` decision lines logged so far.
fn decisions(server: &Scepd) -> Vec<Value> {
    log_lines(server).into_iter().filter(|v| v["target"] == "scepd::intune").map(|v| v["fields"].clone()).collect()
}

/// Waits until `pred` holds for the log lines.
fn wait_log(server: &Scepd, what: &str, pred: impl Fn(&[Value]) -> bool) {
    if !server.wait_for_stderr(WAIT, |log| pred(&json_lines(log))) {
        panic!("no {what} in the log within {WAIT:?}:\n{}", server.stderr());
    }
}

/// Sends SIGHUP and waits for the reload's outcome line (`message`).
fn hangup(server: &Scepd, message: &str) {
    let count = |lines: &[Value]| lines.iter().filter(|v| v["fields"]["message"] == message).count();
    let before = count(&log_lines(server));
    server.signal(Signal::Hup).unwrap();
    wait_log(server, message, |lines| count(lines) > before);
}

/// The admin API key of the test configurations.
const ADMIN_KEY: &str = "intune-e2e-admin-key-0123456789";

/// GET an admin API path on `url`'s server with [`ADMIN_KEY`]; the JSON answer.
fn admin_get(url: &str, path: &str) -> Value {
    serde_json::from_str(&authorized_get(url, path)).unwrap()
}

/// GET `path` on `url`'s server with [`ADMIN_KEY`]; the body of the 200 answer.
fn authorized_get(url: &str, path: &str) -> String {
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
    body.to_string()
}

/// The file name of the Connector bundle, next to the configuration.
const BUNDLE: &str = "intune.pem";

/// A configuration with the Connector bundle `bundle` (in [`BUNDLE`], none
/// when `None`) and profile `corp` (Intune, audience [`AUD`], `extra` keys appended).
fn setup(bundle: Option<&str>, extra: &str) -> ScepdOptions {
    let mut opts = ScepdOptions::with_config(format!(
        "[server]\ndata_dir = \"data\"\n\n[[api_key]]\nname = \"ops\"\nkey = \"{ADMIN_KEY}\"\nrole = \"admin\"\n\n\
             [[profile]]\nname = \"corp\"\nchallenge_password = \"static-secret\"\n\
             intune_enabled = true\nintune_connector_cert_path = \"{BUNDLE}\"\nintune_audience = \"{AUD}\"\n{extra}\n"
    ));
    if let Some(bundle) = bundle {
        opts.files.push((PathBuf::from(BUNDLE), bundle.as_bytes().to_vec()));
    }
    opts
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
    // One subject for both, as every Connector of an HA pair has.
    let rs = Connector::generate(JwsAlg::Rs256, "Microsoft Intune Certificate Connector").unwrap();
    let server =
        start(setup(Some(&(es.certificate_pem() + &rs.certificate_pem())), "intune_per_device_rate_limit_24h = 2\n"));
    let url = server.profile_url("corp");
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
    wait_log(&server, "six intune decisions", |l| l.iter().filter(|v| v["target"] == "scepd::intune").count() >= 6);
    let d = decisions(&server);
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
    let outcomes: Vec<String> = log_lines(&server)
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
    assert_eq!(corp_stats["replay_cache_capacity"], 100_000, "the default: {stats}");
    // The same fill levels as Prometheus gauges, for alerting before either table is full.
    let metrics = authorized_get(&url, "/metrics");
    for line in [
        format!("scepd_intune_replay_cache_entries{{profile=\"corp\"}} {}", corp_stats["replay_cache_entries"]),
        "scepd_intune_replay_cache_capacity{profile=\"corp\"} 100000".to_string(),
        "scepd_intune_rate_limit_devices_tracked{profile=\"corp\"} 2".to_string(),
        "scepd_intune_rate_limit_devices_capacity{profile=\"corp\"} 100000".to_string(),
    ] {
        assert!(metrics.lines().any(|l| l == line), "missing {line:?} in\n{metrics}");
    }
    // Two Connectors with one subject are two expiry series, told apart by fingerprint.
    for connector in [&es, &rs] {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, connector.certificate_der());
        let hex: String = digest.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect();
        let series = format!(
            "scepd_intune_trust_anchor_expiry_seconds{{profile=\"corp\",\
             subject=\"CN=Microsoft Intune Certificate Connector\",fingerprint=\"{hex}\"}} "
        );
        assert!(metrics.lines().any(|l| l.starts_with(&series)), "missing {series:?} in\n{metrics}");
    }
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
    let server = start(setup(Some(&a.certificate_pem()), ""));
    let url = server.profile_url("corp");
    let bundle = server.dir().join(BUNDLE);
    let mut n = 0;
    let mut try_with = |c: &Connector| {
        n += 1;
        let cn = format!("rot{n}.example.com");
        enroll(&url, &cn, &c.mint(&claims(&format!("device-rot-{n}"), &cn)))
    };

    assert_success(&try_with(&a));
    assert_failure(&try_with(&b), FailInfo::BAD_MESSAGE_CHECK);

    std::fs::write(&bundle, b.certificate_pem()).unwrap();
    hangup(&server, "configuration reloaded");
    assert_success(&try_with(&b));
    assert_failure(&try_with(&a), FailInfo::BAD_MESSAGE_CHECK);

    std::fs::write(&bundle, "-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n").unwrap();
    hangup(&server, "reload refused; the previous configuration keeps serving");
    assert_success(&try_with(&b));
    assert_failure(&try_with(&a), FailInfo::BAD_MESSAGE_CHECK);

    let refused = log_lines(&server)
        .into_iter()
        .find(|v| v["fields"]["message"] == "reload refused; the previous configuration keeps serving")
        .unwrap();
    let why = refused["fields"]["error"].as_str().unwrap();
    assert!(why.contains("profile[corp].intune_connector_cert_path") && why.contains("intune.pem"), "{why}");

    let labels: Vec<String> = decisions(&server).iter().map(|f| f["label"].as_str().unwrap().to_string()).collect();
    assert_eq!(
        labels,
        ["success", "signature_invalid", "success", "signature_invalid", "success", "signature_invalid"]
    );
}

/// Runs `scepd serve` expecting it to refuse to start (exit non-zero); returns its stderr.
fn refused_start(opts: ScepdOptions) -> String {
    match Scepd::start(ScepdOptions { startup_timeout: WAIT, ..opts }) {
        Ok(_) => panic!("scepd started with an invalid Intune configuration"),
        Err(ScepdError::Startup { stderr, exit, detail }) => {
            let exit = exit.unwrap_or_else(|| panic!("scepd did not exit by itself: {detail}\n{stderr}"));
            assert!(!exit.success(), "{stderr}");
            stderr
        }
        Err(e) => panic!("{e}"),
    }
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
    let err = refused_start(setup(None, ""));
    assert!(err.contains("profile[corp].intune_connector_cert_path") && err.contains("intune.pem"), "{err}");
    assert!(err.contains("cannot read"), "{err}");

    // A bundle holding an expired Connector certificate (next to a valid one).
    let err = refused_start(setup(Some(&(valid.certificate_pem() + &expired.certificate_pem())), ""));
    assert!(err.contains("profile[corp].intune_connector_cert_path") && err.contains("intune.pem"), "{err}");
    assert!(err.contains("expired") && err.contains("expired-connector"), "{err}");

    // No certificate at all.
    let err = refused_start(setup(Some("just text\n"), ""));
    assert!(err.contains("profile[corp].intune_connector_cert_path") && err.contains("no CERTIFICATE"), "{err}");

    // Tolerance >= validity.
    let err = refused_start(setup(
        Some(&valid.certificate_pem()),
        "intune_challenge_validity = \"5m\"\nintune_clock_skew_tolerance = \"300s\"\n",
    ));
    assert!(err.contains("profile[corp].intune_clock_skew_tolerance"), "{err}");
}

scep_tests::on_each_transport!(real_clients_enrol_with_a_minted_challenge);

fn real_clients_enrol_with_a_minted_challenge(transport: Transport) {
    use scep_tests::real_clients::{certmonger_enroll, find_tool, scepclient_enroll};
    let connector = Connector::generate(JwsAlg::Es256, "Microsoft Intune Certificate Connector").unwrap();
    // scepclient encrypts with single DES: this profile opts in.
    let ciphers = "ciphers = [\"des\", \"des3\", \"aes128\", \"aes256\"]\n";
    let server = start(setup(Some(&connector.certificate_pem()), ciphers).on(transport));
    let url = server.profile_url("corp");
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

    let labels: Vec<String> = decisions(&server).iter().map(|f| f["label"].as_str().unwrap().to_string()).collect();
    assert_eq!(labels.len(), ran, "{labels:?}");
    assert!(labels.iter().all(|l| l == "success"), "{labels:?}");
}
