//! Hostile clients against the real binary (issue 13 item 6): an attacker on
//! another loopback address (127.0.0.2) while a legitimate client on
//! 127.0.0.1 is measured. Admin key guessing is cut off per address, a
//! client's malformed requests are tallied rather than journaled one by one,
//! and a newline in an operator-supplied value cannot forge a log line; on
//! both transports. Every wait is bounded.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Server, bin};
use scep_tests::server::Transport;

const RA_CERT: &str = include_str!("../../../tests/vectors/real-clients/recipient-cert.pem");
const RA_KEY: &str = include_str!("../../../tests/vectors/real-clients/recipient-key.pem");
const ADMIN_KEY: &str = "admin-key-0123456789abcdef";
/// The attacker's source address.
const ATTACKER: &str = "127.0.0.2";
/// The legitimate client's source address.
const OPERATOR: &str = "127.0.0.1";

fn start(transport: Transport) -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ra.pem"), RA_CERT).unwrap();
    std::fs::write(dir.path().join("ra.key"), RA_KEY).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(dir.path().join("ra.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let d = dir.path().display();
    let env = [
        ("CERTCTL_SCEP_ENABLED", "true".to_string()),
        ("CERTCTL_SCEP_PROFILES", "corp".to_string()),
        ("CERTCTL_SCEP_PROFILE_CORP_ISSUER_ID", "iss-local".to_string()),
        ("CERTCTL_SCEP_PROFILE_CORP_CHALLENGE_PASSWORD", "secret123".to_string()),
        ("CERTCTL_SCEP_PROFILE_CORP_RA_CERT_PATH", format!("{d}/ra.pem")),
        ("CERTCTL_SCEP_PROFILE_CORP_RA_KEY_PATH", format!("{d}/ra.key")),
        ("CERTCTL_API_KEYS_NAMED", format!("ops:{ADMIN_KEY}:admin")),
    ];
    let mut cmd = Command::new(bin());
    cmd.arg("serve").args(["--transport", transport.flag(), "--data-dir"]).arg(dir.path().join("data"));
    cmd.envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    let server = Server::spawn(&mut cmd, dir.path());
    (dir, server)
}

/// A connection to the server from `source` (another loopback address).
fn connect_from(source: &str, port: u16) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let from: SocketAddr = format!("{source}:0").parse().unwrap();
    socket.bind(&from.into()).unwrap();
    let to: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    socket.connect_timeout(&to.into(), Duration::from_secs(5)).unwrap();
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream
}

/// One request with `Connection: close`; (status, head, body).
fn request(source: &str, port: u16, method: &str, target: &str, headers: &str, body: &str) -> (u16, String, String) {
    let mut s = connect_from(source, port);
    write!(
        s,
        "{method} {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{headers}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (status, head.to_string(), body.to_string())
}

fn bearer(key: &str) -> String {
    format!("Authorization: Bearer {key}\r\n")
}

fn metric(port: u16, name: &str) -> u64 {
    let (status, _, body) = request(OPERATOR, port, "GET", "/metrics", "", "");
    assert_eq!(status, 200);
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} in\n{body}"))
        .parse()
        .unwrap()
}

scep_tests::on_each_transport!(
    admin_key_guessing_is_cut_off_per_address_while_the_operator_is_served,
    malformed_requests_from_one_client_are_tallied_not_journaled_one_by_one,
    a_newline_in_a_reload_body_cannot_forge_a_log_line,
);

/// Item 6c: one connection guessing keys (there were ~12,000 guesses a second
/// with no slow-down) is answered 429 with Retry-After after 10 failures; the
/// operator's correct key from 127.0.0.1 is answered at once meanwhile.
fn admin_key_guessing_is_cut_off_per_address_while_the_operator_is_served(transport: Transport) {
    let (_dir, server) = start(transport);
    let port = server.port;
    let profiles = "/api/v1/admin/scep/profiles";
    // One keep-alive connection pipelining guesses, as the probe did.
    let mut attacker = connect_from(ATTACKER, port);
    let guesses = 200;
    let mut batch = String::new();
    for i in 0..guesses {
        batch.push_str(&format!(
            "GET {profiles} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer guess-{i:020}\r\nContent-Length: 0\r\n\r\n"
        ));
    }
    attacker.write_all(batch.as_bytes()).unwrap();
    let mut statuses = Vec::new();
    let mut raw = Vec::new();
    let mut buf = [0u8; 16384];
    let deadline = Instant::now() + Duration::from_secs(20);
    while statuses.len() < guesses {
        assert!(Instant::now() < deadline, "only {} answers: {statuses:?}", statuses.len());
        let n = attacker.read(&mut buf).unwrap();
        assert!(n > 0, "connection closed after {} answers", statuses.len());
        raw.extend_from_slice(&buf[..n]);
        statuses =
            String::from_utf8_lossy(&raw).split("HTTP/1.1 ").skip(1).map(|r| r[..3].parse::<u16>().unwrap()).collect();
        // The operator, from another address, is served promptly during the attack.
        let t = Instant::now();
        let (status, _, body) = request(OPERATOR, port, "GET", profiles, &bearer(ADMIN_KEY), "");
        assert_eq!(status, 200, "{body}");
        assert!(t.elapsed() < Duration::from_secs(1), "operator waited {:?}", t.elapsed());
    }
    assert!(statuses[..10].iter().all(|s| *s == 401), "{statuses:?}");
    assert!(statuses[10..].iter().all(|s| *s == 429), "{statuses:?}");
    let text = String::from_utf8_lossy(&raw).to_ascii_lowercase();
    let retry: u64 = text.split("retry-after: ").nth(1).unwrap().split("\r\n").next().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    // Even the right key waits while the address is cut off: guesses are not compared.
    let (status, head, _) = request(ATTACKER, port, "GET", profiles, &bearer(ADMIN_KEY), "");
    assert_eq!(status, 429, "{head}");
    assert_eq!(metric(port, "scepd_admin_auth_failures_total"), 10);
    assert_eq!(metric(port, "scepd_admin_auth_refused_total"), u64::try_from(guesses - 10 + 1).unwrap());
    assert_eq!(metric(port, "scepd_admin_auth_tracked_clients"), 1);
}

/// Item 6e: a client sending malformed PKIMessages (the probe measured ~1,900
/// audit rows a second) costs one tallied row per second and label, with
/// every refusal counted; a real enrolment stays its own event.
fn malformed_requests_from_one_client_are_tallied_not_journaled_one_by_one(transport: Transport) {
    let (_dir, server) = start(transport);
    let port = server.port;
    let sent = 300;
    let started = Instant::now();
    for _ in 0..sent {
        let (status, _, _) = request(ATTACKER, port, "POST", "/scep/corp?operation=PKIOperation", "", "junk");
        assert_eq!(status, 400);
    }
    let seconds = started.elapsed().as_secs() + 2;
    // A query writes the tally first.
    let (status, _, body) = request(
        OPERATOR,
        port,
        "GET",
        "/api/v1/admin/scep/events?action=scep_pkioperation&limit=1000",
        &bearer(ADMIN_KEY),
        "",
    );
    assert_eq!(status, 200, "{body}");
    let page: serde_json::Value = serde_json::from_str(&body).unwrap();
    let rows = page["events"].as_array().unwrap();
    let counted: u64 = rows.iter().map(|e| e["count"].as_u64().unwrap()).sum();
    assert_eq!(counted, sent, "{body}");
    assert!(rows.len() as u64 <= seconds, "{} rows for {seconds} s: {body}", rows.len());
    assert!(rows.iter().all(|e| e["client_addr"] == ATTACKER && e["http_status"] == 400), "{body}");
}

/// Item 6f: a reload-trust body whose `path_id` holds a newline and a forged
/// log line is logged escaped, on one line.
fn a_newline_in_a_reload_body_cannot_forge_a_log_line(transport: Transport) {
    let (dir, server) = start(transport);
    let port = server.port;
    let forged = "FORGED scepd::admin: Intune trust anchor reload key=\\\"root\\\" ok=true";
    let body = format!("{{\"path_id\": \"corp\\n2026-01-01T00:00:00.000000Z  INFO {forged}\\r\\u001b[2J\"}}");
    let (status, _, answer) =
        request(OPERATOR, port, "POST", "/api/v1/admin/scep/intune/reload-trust", &bearer(ADMIN_KEY), &body);
    assert_eq!(status, 404, "{answer}");
    let log = wait_for_log(dir.path(), "Intune trust anchor reload");
    let line = log.lines().find(|l| l.contains("Intune trust anchor reload")).unwrap();
    assert!(line.contains(r"profile=corp\n2026-01-01T00:00:00.000000Z  INFO FORGED"), "{line}");
    assert!(line.contains(r"\r\u{1b}[2J"), "{line}");
    assert!(!log.lines().any(|l| l.starts_with("2026-01-01") || l.contains("\x1b")), "{log}");
}

/// The server's log once it holds `needle` (bounded wait).
fn wait_for_log(dir: &Path, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = std::fs::read_to_string(dir.join("stderr.log")).unwrap();
        if log.contains(needle) {
            return log;
        }
        assert!(Instant::now() < deadline, "no {needle:?} in the log:\n{log}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
