//! One-time challenge passwords (issue 12) end to end, against the real
//! `scepd` binary on both transports: a profile with
//! `challenge_mode = "one-time"`, challenges minted through the admin API
//! (`POST /api/v1/admin/scep/challenges`), devices enrolling with the
//! independent Rust client (and certmonger).
//!
//! - use, then reuse refused (CertRep FAILURE badRequest, audit outcome
//!   `challenge_used`), an unknown challenge refused (`challenge_unknown`);
//! - expiry: a challenge minted with the smallest TTL (1 s) is refused once
//!   it has passed (`challenge_expired`), and the expiry is audited and counted;
//! - binding: a challenge bound to a commonName and a SAN refuses another
//!   identity (`challenge_binding_mismatch`) without being consumed, then
//!   enrols the identity it is bound to;
//! - restart: an outstanding challenge stays usable and a used one stays
//!   refused after scepd restarts on the same data directory;
//! - concurrency: N devices presenting one challenge at once get exactly one
//!   certificate;
//! - the admin API's refusals (TTL bounds, unknown or static profile, bad
//!   binding, reader key) and the list, which never shows a secret;
//! - certmonger (a real client) enrolling with a minted challenge.
#![allow(clippy::unwrap_used)]

use std::io::{Read as _, Write as _};
use std::time::{Duration, Instant};

use scep_tests::client::{
    CertRep, CsrSpec, DeviceKey, FailInfo, MessageBody, MessageOptions, PkiMethod, PkiStatus, ScepClient, Signer,
    SubjectAltName, build_csr, build_pki_message,
};
use scep_tests::server::{Scepd, ScepdOptions, Transport};
use serde_json::{Value, json};

const ADMIN_KEY: &str = "one-time-e2e-admin-key-0123456789";
const READER_KEY: &str = "one-time-e2e-reader-key-0123456789";
const WAIT: Duration = Duration::from_secs(30);

/// A configuration with profile `otp` (one-time challenges), profile
/// `static` (a static password), an admin key `ops` and a reader key `viewer`.
fn config() -> String {
    format!(
        "[[api_key]]\nname = \"ops\"\nkey = \"{ADMIN_KEY}\"\nrole = \"admin\"\n\n\
         [[api_key]]\nname = \"viewer\"\nkey = \"{READER_KEY}\"\nrole = \"reader\"\n\n\
         [[profile]]\nname = \"otp\"\nchallenge_mode = \"one-time\"\n\n\
         [[profile]]\nname = \"static\"\nchallenge_password = \"static-secret\"\n"
    )
}

/// Starts scepd on `transport`, on `data_dir` (`None`: a fresh one).
fn start(transport: Transport, data_dir: Option<&std::path::Path>) -> Scepd {
    let mut opts = ScepdOptions::with_config(config()).on(transport);
    opts.startup_timeout = WAIT;
    opts.data_dir = data_dir.map(std::path::Path::to_path_buf);
    Scepd::start(opts).unwrap_or_else(|e| panic!("{e}"))
}

/// One admin API request with `key`: status and JSON body.
fn admin(server: &Scepd, method: &str, path: &str, body: Option<&Value>, key: &str) -> (u16, Value) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", server.port())).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let body = body.map(Value::to_string).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// Mints a challenge on `otp` with `extra` fields; the answer (201 asserted).
fn mint(server: &Scepd, extra: Value) -> Value {
    let mut body = json!({ "profile": "otp" });
    body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    let (status, v) = admin(server, "POST", "/api/v1/admin/scep/challenges", Some(&body), ADMIN_KEY);
    assert_eq!(status, 201, "{v}");
    let challenge = v["challenge"].as_str().unwrap();
    assert_eq!(challenge.len(), 32, "128 bits as hex: {v}");
    v
}

fn secret(minted: &Value) -> String {
    minted["challenge"].as_str().unwrap().to_string()
}

/// A device enrolling on `otp` as `cn` (and `sans`) with `challenge`.
fn enroll(server: &Scepd, key: &DeviceKey, cn: &str, sans: &[&str], challenge: &str) -> CertRep {
    let mut spec = CsrSpec::new(cn, Some(challenge));
    spec.subject_alt_names = sans.iter().map(|s| SubjectAltName::Dns((*s).to_string())).collect();
    let client = ScepClient::new(&server.profile_url("otp")).unwrap();
    client.enroll(key, &spec, &MessageOptions::default(), PkiMethod::Post).unwrap().reply
}

fn assert_issued(rep: &CertRep, key: &DeviceKey, server: &Scepd) {
    assert_eq!((rep.status, rep.fail_info), (PkiStatus::SUCCESS, None), "{rep:?}\n{}", server.log_tail(30));
    assert!(rep.issued_certificate(key).is_some(), "SUCCESS without the device's certificate");
}

fn assert_refused(rep: &CertRep) {
    assert_eq!((rep.status, rep.fail_info), (PkiStatus::FAILURE, Some(FailInfo::BAD_REQUEST)), "{rep:?}");
    assert!(rep.certificates.is_empty(), "a refusal carries no certificate");
}

/// Audit events of profile `otp` with `outcome` (of enrolments, one-time
/// challenges and refusals: discovery answers, tallied as `success` too, are
/// left out).
fn events(server: &Scepd, outcome: &str) -> Vec<Value> {
    let (status, v) =
        admin(server, "GET", &format!("/api/v1/admin/scep/events?profile=otp&outcome={outcome}"), None, ADMIN_KEY);
    assert_eq!(status, 200, "{v}");
    let discovery = ["scep_getcacaps", "scep_getcacert", "scep_getnextcacert"];
    v["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| !discovery.contains(&e["action"].as_str().unwrap_or("")))
        .cloned()
        .collect()
}

/// The value of `scepd_challenges_total{profile="otp",event=...}` (0 when absent).
fn challenge_metric(server: &Scepd, event: &str) -> u64 {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", server.port())).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let series = format!("scepd_challenges_total{{profile=\"otp\",event=\"{event}\"}} ");
    raw.lines().find_map(|l| l.strip_prefix(&series)).map_or(0, |n| n.trim().parse().unwrap())
}

scep_tests::on_each_transport!(
    use_reuse_unknown_and_the_admin_api,
    expiry,
    binding_mismatch_then_the_bound_identity,
    restart_keeps_outstanding_and_used_challenges,
    concurrent_use_of_one_challenge_issues_exactly_one_certificate,
    certmonger_enrolls_with_a_minted_challenge,
    a_request_signed_with_an_ec_key_is_refused_before_anything_is_issued,
    a_resent_request_gets_the_certificate_already_issued,
);

fn use_reuse_unknown_and_the_admin_api(transport: Transport) {
    let server = start(transport, None);
    let minted = mint(&server, json!({}));
    let expires = minted["expires_at_unix"].as_i64().unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    assert!((3590..=3610).contains(&(expires - now)), "default TTL is 60 minutes: {minted}");

    // Listed (by a reader key too), never with the secret.
    let (status, list) = admin(&server, "GET", "/api/v1/admin/scep/challenges?profile=otp", None, READER_KEY);
    assert_eq!(status, 200, "{list}");
    let listed = list["challenges"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "{list}");
    assert_eq!((&listed[0]["id"], &listed[0]["created_by"]), (&minted["id"], &json!("ops")));
    assert!(!list.to_string().contains(&secret(&minted)), "the list shows the secret: {list}");

    // Use, then reuse by another device.
    let first = DeviceKey::generate().unwrap();
    let reply = enroll(&server, &first, "otp-device-1", &[], &secret(&minted));
    assert_issued(&reply, &first, &server);
    let issued = reply.issued_certificate(&first).unwrap().to_vec();
    let second = DeviceKey::generate().unwrap();
    assert_refused(&enroll(&server, &second, "otp-device-2", &[], &secret(&minted)));
    let used = events(&server, "challenge_used");
    assert_eq!(used.len(), 1, "{used:?}");
    assert_eq!(used[0]["fail_info"], "badRequest");
    let success = events(&server, "success");
    assert_eq!(success.len(), 1, "{success:?}");
    assert!(success[0]["detail"].as_str().unwrap().contains(&format!("#{} used", minted["id"])), "{success:?}");
    assert!(!success[0].to_string().contains(&secret(&minted)), "the audit log shows the secret");
    // A used challenge is no longer outstanding.
    let (_, list) = admin(&server, "GET", "/api/v1/admin/scep/challenges", None, ADMIN_KEY);
    assert_eq!(list["challenges"], json!([]), "{list}");

    // A challenge never minted.
    assert_refused(&enroll(&server, &second, "otp-device-2", &[], "00112233445566778899AABBCCDDEEFF"));
    assert_eq!(events(&server, "challenge_unknown").len(), 1);

    // Minting is audited with the key's name.
    let minted_events = events(&server, "minted");
    assert_eq!(minted_events.len(), 1, "{minted_events:?}");
    assert_eq!(minted_events[0]["action"], "challenge_minted");
    assert!(minted_events[0]["detail"].as_str().unwrap().contains("API key ops"), "{minted_events:?}");
    assert!(!minted_events[0].to_string().contains(&secret(&minted)), "the audit log shows the secret");

    // The admin API's refusals.
    let post = |body: Value, key: &str| admin(&server, "POST", "/api/v1/admin/scep/challenges", Some(&body), key);
    for (body, expected, code) in [
        (json!({ "profile": "nope" }), 404, "unknown_profile"),
        (json!({ "profile": "static" }), 409, "not_one_time"),
        (json!({ "profile": "otp", "ttl_secs": 0 }), 400, "bad_request"),
        (json!({ "profile": "otp", "ttl_secs": 7 * 86_400 + 1 }), 400, "bad_request"),
        (json!({ "profile": "otp", "subject_alt_names": ["x400:nope"] }), 400, "bad_request"),
        (json!({ "profile": "otp", "common_name": "" }), 400, "bad_request"),
        (json!({ "profile": "otp", "ttl": 60 }), 400, "bad_request"),
        (json!({}), 400, "bad_request"),
    ] {
        let (status, v) = post(body.clone(), ADMIN_KEY);
        assert_eq!((status, v["error"].as_str()), (expected, Some(code)), "{body}: {v}");
    }
    let (status, v) = post(json!({ "profile": "otp" }), READER_KEY);
    assert_eq!(status, 403, "a reader key cannot mint: {v}");

    // Renewal by the issued certificate needs no challenge on a one-time profile either.
    let client = ScepClient::new(&server.profile_url("otp")).unwrap();
    let ca = client.get_ca_cert().unwrap();
    let new_key = DeviceKey::generate().unwrap();
    let csr = build_csr(&new_key, &CsrSpec::new("otp-device-1", None)).unwrap();
    let req = build_pki_message(
        &MessageBody::RenewalReq(csr),
        Signer { certificate: &issued, key: &first },
        ca.recipient(),
        &MessageOptions::default(),
    )
    .unwrap();
    let rep = client.transact(&req, &first, &ca, PkiMethod::Post).unwrap();
    assert_issued(&rep, &new_key, &server);

    assert_eq!(challenge_metric(&server, "minted"), 1);
    assert_eq!(challenge_metric(&server, "used"), 1);
    assert_eq!(challenge_metric(&server, "refused"), 2);
}

/// A PKCSReq signed by an EC key (built by `tests/clients/ec_signed_request.py`)
/// cannot receive its reply, which is encrypted to the signer with RSA key
/// transport: it is refused with a signed FAILURE badAlg before a certificate
/// is issued or the challenge consumed, so the device can retry with an RSA
/// signer and the same challenge. Before the fix the certificate was issued
/// and recorded, the challenge used, and only then the reply failed.
fn a_request_signed_with_an_ec_key_is_refused_before_anything_is_issued(transport: Transport) {
    let server = start(transport, None);
    let challenge = secret(&mint(&server, json!({})));
    let client = ScepClient::new(&server.profile_url("otp")).unwrap();
    let ca = client.get_ca_cert().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (ra, request) = (dir.path().join("ra.der"), dir.path().join("request.der"));
    std::fs::write(&ra, ca.recipient()).unwrap();
    let out = std::process::Command::new("python3")
        .arg(scep_tests::real_clients::client_script("ec_signed_request.py"))
        .args([ra.as_os_str(), challenge.as_ref(), "ec-device".as_ref(), request.as_os_str()])
        .output()
        .expect("python3 runs");
    assert!(out.status.success(), "ec_signed_request.py: {}", String::from_utf8_lossy(&out.stderr));
    let transaction_id = String::from_utf8(out.stdout).unwrap().trim().to_string();

    let der = std::fs::read(&request).unwrap();
    let reply = client.send_pki_message(&der, PkiMethod::Post).unwrap();
    assert_eq!(reply.status, 200, "a signed CertRep, not an HTTP error");
    let rep = scep_engine::message::PkiMessageRef::parse(&reply.body).unwrap();
    rep.verify().unwrap();
    assert_eq!(rep.transaction_id, transaction_id);
    assert_eq!(
        (rep.pki_status, rep.fail_info),
        (Some(PkiStatus::FAILURE), Some(FailInfo::BAD_ALG)),
        "{}",
        server.log_tail(20)
    );
    let refused = events(&server, "bad_recipient");
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(refused[0]["serial"].is_null(), "nothing was issued: {refused:?}");
    let (status, listed) = admin(&server, "GET", "/api/v1/admin/scep/certificates", None, ADMIN_KEY);
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed["certificates"], json!([]), "no certificate may be recorded: {listed}");

    // The challenge was not consumed: the device enrols with an RSA key.
    let key = DeviceKey::generate().unwrap();
    assert_issued(&enroll(&server, &key, "ec-device", &[], &challenge), &key, &server);
}

/// A client that lost the CertRep sends the same request again (same
/// transactionID, key and challenge, RFC 8894 §3.2.1.1): it gets the
/// certificate already issued, as on a static profile, instead of
/// `challenge_used`. Another transaction presenting the challenge is still
/// refused, and a second key under the same transactionID gets no certificate.
fn a_resent_request_gets_the_certificate_already_issued(transport: Transport) {
    let server = start(transport, None);
    let challenge = secret(&mint(&server, json!({})));
    let client = ScepClient::new(&server.profile_url("otp")).unwrap();
    let ca = client.get_ca_cert().unwrap();
    let key = DeviceKey::generate().unwrap();
    let signer =
        scep_tests::client::self_signed_certificate(&key, &scep_tests::client::SubjectName::cn("resender"), 1).unwrap();
    let csr = build_csr(&key, &CsrSpec::new("resender", Some(&challenge))).unwrap();
    let request = build_pki_message(
        &MessageBody::PkcsReq(csr),
        Signer { certificate: &signer, key: &key },
        ca.recipient(),
        &MessageOptions::default(),
    )
    .unwrap();
    let first = client.transact(&request, &key, &ca, PkiMethod::Post).unwrap();
    assert_issued(&first, &key, &server);
    let resent = client.transact(&request, &key, &ca, PkiMethod::Post).unwrap();
    assert_issued(&resent, &key, &server);
    assert_eq!(resent.issued_certificate(&key), first.issued_certificate(&key), "the certificate already issued");
    let (_, listed) = admin(&server, "GET", "/api/v1/admin/scep/certificates", None, ADMIN_KEY);
    assert_eq!(listed["certificates"].as_array().map(Vec::len), Some(1), "one certificate: {listed}");

    // Another key under the same transactionID and challenge: no certificate.
    let thief = DeviceKey::generate().unwrap();
    let thief_signer =
        scep_tests::client::self_signed_certificate(&thief, &scep_tests::client::SubjectName::cn("resender"), 1)
            .unwrap();
    let options = MessageOptions { transaction_id: Some(request.transaction_id.clone()), ..MessageOptions::default() };
    let stolen = build_pki_message(
        &MessageBody::PkcsReq(build_csr(&thief, &CsrSpec::new("resender", Some(&challenge))).unwrap()),
        Signer { certificate: &thief_signer, key: &thief },
        ca.recipient(),
        &options,
    )
    .unwrap();
    assert_refused(&client.transact(&stolen, &thief, &ca, PkiMethod::Post).unwrap());
    // Another transaction: the challenge is used.
    let other = DeviceKey::generate().unwrap();
    assert_refused(&enroll(&server, &other, "resender", &[], &challenge));
    assert_eq!(events(&server, "challenge_used").len(), 1);
    assert_eq!(challenge_metric(&server, "used"), 1, "a resend does not use the challenge again");
}

fn expiry(transport: Transport) {
    let server = start(transport, None);
    let minted = mint(&server, json!({ "ttl_secs": 1 }));
    let deadline = minted["expires_at_unix"].as_i64().unwrap();
    // Wait (bounded) until the wall clock is past the expiry second.
    let started = Instant::now();
    while std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64 <= deadline {
        assert!(started.elapsed() < Duration::from_secs(5), "the clock does not reach the expiry");
        std::thread::sleep(Duration::from_millis(100));
    }
    let key = DeviceKey::generate().unwrap();
    assert_refused(&enroll(&server, &key, "late-device", &[], &secret(&minted)));
    assert_eq!(events(&server, "challenge_expired").len(), 1);
    let expired = events(&server, "expired");
    assert_eq!(expired.len(), 1, "the expiry itself is audited once: {expired:?}");
    assert_eq!(expired[0]["action"], "challenge_expired");
    assert_eq!(challenge_metric(&server, "expired"), 1);
    assert_eq!(challenge_metric(&server, "refused"), 1);
    assert_eq!(challenge_metric(&server, "used"), 0);
}

fn binding_mismatch_then_the_bound_identity(transport: Transport) {
    let server = start(transport, None);
    let minted =
        mint(&server, json!({ "common_name": "bound-device", "subject_alt_names": ["DNS:bound-device.corp.example"] }));
    assert_eq!(minted["binding"]["common_name"], "bound-device");
    let key = DeviceKey::generate().unwrap();
    assert_refused(&enroll(&server, &key, "other-device", &["bound-device.corp.example"], &secret(&minted)));
    assert_refused(&enroll(&server, &key, "bound-device", &["other.corp.example"], &secret(&minted)));
    assert_refused(&enroll(&server, &key, "bound-device", &[], &secret(&minted)));
    let mismatches = events(&server, "challenge_binding_mismatch");
    assert_eq!(mismatches.len(), 3, "{mismatches:?}");
    // Not consumed by the mismatches: the bound identity enrols.
    assert_issued(
        &enroll(&server, &key, "bound-device", &["bound-device.corp.example"], &secret(&minted)),
        &key,
        &server,
    );
}

fn restart_keeps_outstanding_and_used_challenges(transport: Transport) {
    let mut first = start(transport, None);
    let used = mint(&first, json!({}));
    let kept = mint(&first, json!({}));
    let key = DeviceKey::generate().unwrap();
    assert_issued(&enroll(&first, &key, "before-restart", &[], &secret(&used)), &key, &first);
    first.stop();

    // The same data directory, a new process.
    let second = start(transport, Some(first.data_dir()));
    let (_, list) = admin(&second, "GET", "/api/v1/admin/scep/challenges", None, ADMIN_KEY);
    assert_eq!(list["challenges"].as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list["challenges"][0]["id"], kept["id"]);
    let other = DeviceKey::generate().unwrap();
    assert_refused(&enroll(&second, &other, "reuse-after-restart", &[], &secret(&used)));
    assert_eq!(events(&second, "challenge_used").len(), 1);
    assert_issued(&enroll(&second, &other, "after-restart", &[], &secret(&kept)), &other, &second);
}

fn concurrent_use_of_one_challenge_issues_exactly_one_certificate(transport: Transport) {
    const DEVICES: usize = 6;
    let server = start(transport, None);
    let minted = mint(&server, json!({}));
    let keys: Vec<DeviceKey> = (0..DEVICES).map(|_| DeviceKey::generate().unwrap()).collect();
    let barrier = std::sync::Barrier::new(DEVICES);
    let replies: Vec<CertRep> = std::thread::scope(|scope| {
        let handles: Vec<_> = keys
            .iter()
            .enumerate()
            .map(|(i, key)| {
                let (server, barrier, challenge) = (&server, &barrier, secret(&minted));
                scope.spawn(move || {
                    barrier.wait();
                    enroll(server, key, &format!("racer-{i}"), &[], &challenge)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let issued: Vec<usize> = (0..DEVICES).filter(|&i| replies[i].status == PkiStatus::SUCCESS).collect();
    assert_eq!(issued.len(), 1, "{replies:?}");
    assert!(replies[issued[0]].issued_certificate(&keys[issued[0]]).is_some());
    for (_, rep) in replies.iter().enumerate().filter(|(i, _)| *i != issued[0]) {
        assert_refused(rep);
    }
    assert_eq!(events(&server, "challenge_used").len(), DEVICES - 1);
    assert_eq!(events(&server, "success").len(), 1);
    assert_eq!(challenge_metric(&server, "used"), 1);
}

fn certmonger_enrolls_with_a_minted_challenge(transport: Transport) {
    use scep_tests::real_clients::certmonger_enroll;
    let server = start(transport, None);
    let minted = mint(&server, json!({ "common_name": "certmonger-otp" }));
    let issued = certmonger_enroll(&server.profile_url("otp"), &secret(&minted), "certmonger-otp", None, WAIT)
        .unwrap_or_else(|e| panic!("certmonger did not enrol: {e}\n--- scepd log ---\n{}", server.log_tail(40)));
    let cert = scep_engine::x509::CertificateRef::parse(&issued.der).unwrap();
    assert_eq!(cert.subject_common_names().unwrap(), ["certmonger-otp"]);
    let success = events(&server, "success");
    assert_eq!(success.len(), 1, "{success:?}");
    assert!(success[0]["detail"].as_str().unwrap().contains("one-time challenge"), "{success:?}");
    // Used: a second enrolment with it is refused.
    let key = DeviceKey::generate().unwrap();
    assert_refused(&enroll(&server, &key, "certmonger-otp", &[], &secret(&minted)));
}
