//! Issue 17, the operators' half, end to end against the real `scepd` binary
//! on both transports: devices enrol with the independent Rust client; the
//! admin API lists and finds their certificates (a `reader` key may), shows
//! one with its PEM and history; a `reader` key is refused the revocation
//! (403); an `admin` key revokes with an RFC 5280 reason (bad reason 400,
//! unknown serial 404, twice 409); the revocation is an audit event naming
//! the key; SCEP GetCRL then lists the serial with its reason (OpenSSL reads
//! it); `/metrics` counts the certificates by status and the charts endpoint
//! counts the enrolments of the hour.
#![allow(clippy::unwrap_used)]

use std::io::{Read as _, Write as _};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use scep_engine::x509::CertificateRef;
use scep_tests::client::{
    CertRep, CsrSpec, DeviceKey, MessageBody, MessageOptions, PkiMethod, PkiStatus, ScepClient, Signer,
    build_pki_message,
};
use scep_tests::server::{Scepd, ScepdOptions, Transport};
use serde_json::{Value, json};

const ADMIN_KEY: &str = "lifecycle-e2e-admin-key-0123456789";
const READER_KEY: &str = "lifecycle-e2e-reader-key-0123456789";
const CHALLENGE: &str = "lifecycle-secret";
const CERTS: &str = "/api/v1/admin/scep/certificates";

fn start(transport: Transport) -> Scepd {
    let config = format!(
        "[[api_key]]\nname = \"ops\"\nkey = \"{ADMIN_KEY}\"\nrole = \"admin\"\n\n\
         [[api_key]]\nname = \"viewer\"\nkey = \"{READER_KEY}\"\nrole = \"reader\"\n\n\
         [[profile]]\nname = \"corp\"\nchallenge_password = \"{CHALLENGE}\"\n"
    );
    let mut opts = ScepdOptions::with_config(config).on(transport);
    opts.startup_timeout = Duration::from_secs(30);
    Scepd::start(opts).unwrap_or_else(|e| panic!("{e}"))
}

/// One HTTP request: status and body.
fn http(server: &Scepd, method: &str, path: &str, key: Option<&str>, body: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", server.port())).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let auth = key.map(|k| format!("Authorization: Bearer {k}\r\n")).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Content-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    (head.split(' ').nth(1).unwrap().parse().unwrap(), body.to_string())
}

/// An admin API request: status and JSON.
fn admin(server: &Scepd, method: &str, path: &str, key: &str, body: Option<&Value>) -> (u16, Value) {
    let (status, text) = http(server, method, path, Some(key), &body.map(Value::to_string).unwrap_or_default());
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn serials(list: &Value) -> Vec<String> {
    list["certificates"].as_array().unwrap().iter().map(|c| c["serial"].as_str().unwrap().to_string()).collect()
}

fn serial_hex(cert: &[u8]) -> String {
    let c = CertificateRef::parse(cert).unwrap();
    let s = c.serial;
    let start = s.iter().position(|b| *b != 0).unwrap_or(s.len());
    s[start..].iter().map(|b| format!("{b:02x}")).collect()
}

/// Enrols `cn` on `corp`: the certificate DER and the device key.
fn enrol(server: &Scepd, cn: &str, seed: usize) -> (Vec<u8>, DeviceKey, ScepClient) {
    let client = ScepClient::new(&server.profile_url("corp")).unwrap();
    let key = DeviceKey::pregenerated(seed).unwrap();
    let e =
        client.enroll(&key, &CsrSpec::new(cn, Some(CHALLENGE)), &MessageOptions::default(), PkiMethod::Post).unwrap();
    assert_eq!(e.reply.status, PkiStatus::SUCCESS, "{:?}\n{}", e.reply, server.log_tail(20));
    (e.reply.issued_certificate(&key).unwrap().to_vec(), key, client)
}

fn openssl_crl_text(dir: &Path, crl: &[u8]) -> String {
    std::fs::write(dir.join("crl.der"), crl).unwrap();
    let out = Command::new("openssl")
        .args(["crl", "-inform", "DER", "-in"])
        .arg(dir.join("crl.der"))
        .args(["-noout", "-text"])
        .output()
        .expect("openssl must be installed (Debian package openssl)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn metric(server: &Scepd, line_start: &str) -> Option<u64> {
    let (status, text) = http(server, "GET", "/metrics", None, "");
    assert_eq!(status, 200);
    text.lines().find_map(|l| l.strip_prefix(line_start)).and_then(|v| v.trim().parse().ok())
}

fn inventory_list_revoke_and_crl(transport: Transport) {
    let server = start(transport);
    let (laptop, _, _) = enrol(&server, "laptop-17", 11);
    let (phone, phone_key, client) = enrol(&server, "phone-3", 12);
    let (laptop_serial, phone_serial) = (serial_hex(&laptop), serial_hex(&phone));

    // A reader lists and finds them.
    let (status, all) = admin(&server, "GET", CERTS, READER_KEY, None);
    assert_eq!(status, 200, "{all}");
    assert_eq!(serials(&all), [phone_serial.as_str(), laptop_serial.as_str()], "newest first: {all}");
    let first = &all["certificates"][1];
    assert_eq!((first["profile"].as_str(), first["status"].as_str()), (Some("corp"), Some("valid")), "{first}");
    assert!(first["subject"].as_str().unwrap().contains("laptop-17"), "{first}");
    assert_eq!(first["issuer_id"], "iss-local");
    let (_, found) = admin(&server, "GET", &format!("{CERTS}?q=LAPTOP&status=valid"), READER_KEY, None);
    assert_eq!(serials(&found), [laptop_serial.as_str()], "{found}");
    let colons: Vec<String> =
        (0..phone_serial.len()).step_by(2).map(|i| phone_serial[i..i + 2].to_uppercase()).collect();
    let (_, found) = admin(&server, "GET", &format!("{CERTS}?serial={}", colons.join(":")), READER_KEY, None);
    assert_eq!(serials(&found), [phone_serial.as_str()], "a serial with colons in upper case: {found}");
    let (_, page) = admin(&server, "GET", &format!("{CERTS}?limit=1"), READER_KEY, None);
    assert_eq!(serials(&page), [phone_serial.as_str()]);
    let next = page["next_before_id"].as_i64().unwrap();
    let (_, page) = admin(&server, "GET", &format!("{CERTS}?limit=1&before_id={next}"), READER_KEY, None);
    assert_eq!(serials(&page), [laptop_serial.as_str()], "the second page");
    let (status, v) = admin(&server, "GET", &format!("{CERTS}?status=lost"), READER_KEY, None);
    assert_eq!((status, v["error"].as_str()), (400, Some("bad_request")), "{v}");

    // One certificate: its PEM is the issued certificate, its history the enrolment.
    let (status, one) = admin(&server, "GET", &format!("{CERTS}/{laptop_serial}"), READER_KEY, None);
    assert_eq!(status, 200, "{one}");
    let pem = one["pem"].as_str().unwrap();
    assert_eq!(scep_engine::pem::certificates(pem).unwrap(), [laptop.as_slice()]);
    let history = one["history"].as_array().unwrap();
    assert!(history.iter().any(|e| e["action"] == "scep_pkcsreq" && e["serial"] == laptop_serial.as_str()), "{one}");
    let (status, _) = admin(&server, "GET", &format!("{CERTS}/7f7f7f7f"), READER_KEY, None);
    assert_eq!(status, 404);

    // Revocation: the reader may not; bad reason, unknown serial; then once.
    let body = json!({ "reason": "keyCompromise" });
    let revoke = format!("{CERTS}/{laptop_serial}/revoke");
    let (status, v) = admin(&server, "POST", &revoke, READER_KEY, Some(&body));
    assert_eq!((status, v["error"].as_str()), (403, Some("forbidden")), "{v}");
    let (status, v) = admin(&server, "POST", &revoke, ADMIN_KEY, Some(&json!({ "reason": "lost" })));
    assert_eq!((status, v["error"].as_str()), (400, Some("bad_reason")), "{v}");
    assert!(v["message"].as_str().unwrap().contains("keyCompromise"), "the message lists the names: {v}");
    let (status, v) = admin(&server, "POST", &format!("{CERTS}/7f7f7f7f/revoke"), ADMIN_KEY, Some(&body));
    assert_eq!((status, v["error"].as_str()), (404, Some("unknown_serial")), "{v}");
    let (status, v) = admin(&server, "POST", &revoke, ADMIN_KEY, Some(&body));
    assert_eq!(status, 200, "{v}\n{}", server.log_tail(20));
    assert_eq!((v["status"].as_str(), v["revocation_reason"].as_str()), (Some("revoked"), Some("keyCompromise")));
    assert_eq!(v["revoked_by"], "ops");
    let (status, v) = admin(&server, "POST", &revoke, ADMIN_KEY, Some(&json!({ "reason": "superseded" })));
    assert_eq!((status, v["error"].as_str()), (409, Some("already_revoked")), "{v}");

    // The audit event names the key and the reason; the certificate shows revoked.
    let (status, events) =
        admin(&server, "GET", "/api/v1/admin/scep/events?action=certificate_revoked", ADMIN_KEY, None);
    assert_eq!(status, 200, "{events}");
    let [event] = events["events"].as_array().unwrap().as_slice() else { panic!("one revocation event: {events}") };
    assert_eq!((event["serial"].as_str(), event["profile"].as_str()), (Some(laptop_serial.as_str()), Some("corp")));
    let detail = event["detail"].as_str().unwrap();
    assert!(detail.contains("API key ops") && detail.contains("keyCompromise"), "{detail}");
    let (_, revoked) = admin(&server, "GET", &format!("{CERTS}?status=revoked"), READER_KEY, None);
    assert_eq!(serials(&revoked), [laptop_serial.as_str()], "{revoked}");
    assert_eq!(revoked["certificates"][0]["revocation_reason"], "keyCompromise");
    let (_, one) = admin(&server, "GET", &format!("{CERTS}/{laptop_serial}"), READER_KEY, None);
    assert!(one["history"].as_array().unwrap().iter().any(|e| e["action"] == "certificate_revoked"), "{one}");

    // SCEP GetCRL (signed by the phone's valid certificate) lists the serial.
    let ca = client.get_ca_cert().unwrap();
    let req = build_pki_message(
        &MessageBody::get_crl_for(&phone).unwrap(),
        Signer { certificate: &phone, key: &phone_key },
        ca.recipient(),
        &MessageOptions::default(),
    )
    .unwrap();
    let rep: CertRep = client.transact(&req, &phone_key, &ca, PkiMethod::Post).unwrap();
    assert_eq!(rep.status, PkiStatus::SUCCESS, "{rep:?}");
    let [crl] = rep.crls.as_slice() else { panic!("expected one CRL, got {}", rep.crls.len()) };
    let dir = tempfile::tempdir().unwrap();
    let text = openssl_crl_text(dir.path(), crl);
    assert!(text.contains(&format!("Serial Number: {}", laptop_serial.to_uppercase())), "{text}");
    assert!(!text.contains(&phone_serial.to_uppercase()), "{text}");
    assert!(text.contains("Key Compromise"), "{text}");

    // Metrics by status; the charts count this hour's enrolments.
    let gauge =
        |status: &str| metric(&server, &format!("scepd_certificates{{issuer=\"iss-local\",status=\"{status}\"}}"));
    assert_eq!((gauge("valid"), gauge("revoked"), gauge("expired")), (Some(1), Some(1), Some(0)));
    let expiring = metric(&server, "scepd_certificates_expiring{issuer=\"iss-local\",within=\"30d\"}");
    assert_eq!(expiring, Some(0), "the profile's certificates live a year");
    let (status, charts) = admin(&server, "GET", "/api/v1/admin/scep/charts", READER_KEY, None);
    assert_eq!(status, 200, "{charts}");
    let enrolments: u64 =
        charts["activity"].as_array().unwrap().iter().map(|h| h["enrolments"].as_u64().unwrap()).sum();
    assert_eq!(enrolments, 2, "{charts}");
    let months: u64 =
        charts["expiry_months"].as_array().unwrap().iter().map(|m| m["certificates"].as_u64().unwrap()).sum();
    assert_eq!(months, 1, "the one valid certificate: {charts}");
}

scep_tests::on_each_transport!(inventory_list_revoke_and_crl);
