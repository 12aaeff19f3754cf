//! Intune API mode (issue 15) against the real `scepd` binary and the local
//! stand-in of the three hops (`scep_tests::intune_standin`): every row of
//! the contract's classification table (`shared/docs/INTUNE-API.md` §5.2)
//! with its expected outcome (issued or not, notification sent or not, calls
//! made), the local single-use gate, the notification contract, and a real
//! client (certmonger), on both transports.
#![allow(clippy::unwrap_used)]

use std::io::{Read as _, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::time::{Duration, Instant};

use scep_tests::client::{
    CertRep, CsrSpec, DeviceKey, FailInfo, MessageBody, MessageOptions, PkiMethod, PkiStatus, ScepClient, Signer,
    build_csr, build_pki_message,
};
use scep_tests::intune_standin::{Fault, Hop, IntuneStandIn};
use scep_tests::server::{Scepd, ScepdOptions, Transport};
use serde_json::Value;

const ADMIN_KEY: &str = "intune-api-e2e-admin-key-0123456789";
const HOUR: Duration = Duration::from_secs(3600);

struct Setup {
    standin: IntuneStandIn,
    server: Scepd,
    _secret_dir: tempfile::TempDir,
}

fn start(transport: Transport, extra: &str) -> Setup {
    let standin = IntuneStandIn::start();
    let secret_dir = tempfile::tempdir().unwrap();
    let secret = secret_dir.path().join("entra-secret");
    std::fs::write(&secret, format!("{}\n", standin.client_secret)).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let credential = format!("intune_client_secret_path = \"{}\"\n", secret.display());
    let server = serve(transport, &standin, &credential, extra);
    Setup { standin, server, _secret_dir: secret_dir }
}

/// scepd with profile `intune` in API mode against `standin`, proving
/// itself with the `credential` keys.
fn serve(transport: Transport, standin: &IntuneStandIn, credential: &str, extra: &str) -> Scepd {
    let config = format!(
        "[[api_key]]\nname = \"ops\"\nkey = \"{ADMIN_KEY}\"\nrole = \"admin\"\n\n\
         [[profile]]\nname = \"intune\"\nintune_enabled = true\nintune_mode = \"api\"\n\
         intune_tenant_id = \"{}\"\nintune_client_id = \"{}\"\n{credential}\
         intune_authority_url = \"{base}/\"\nintune_graph_url = \"{base}/\"\n{extra}",
        standin.tenant,
        standin.client_id,
        base = standin.base_url(),
    );
    let mut opts = ScepdOptions::with_config(config).on(transport);
    opts.startup_timeout = Duration::from_secs(30);
    Scepd::start(opts).unwrap_or_else(|e| panic!("{e}"))
}

/// As [`serve`], as node `node` on the shared PostgreSQL database `url`.
fn serve_shared(
    transport: Transport,
    standin: &IntuneStandIn,
    credential: &str,
    extra: &str,
    url: &str,
    node: &str,
) -> Scepd {
    let config = format!(
        "[server]\nnode_name = \"{node}\"\n\n\
         [[api_key]]\nname = \"ops\"\nkey = \"{ADMIN_KEY}\"\nrole = \"admin\"\n\n\
         [[profile]]\nname = \"intune\"\nintune_enabled = true\nintune_mode = \"api\"\n\
         intune_tenant_id = \"{}\"\nintune_client_id = \"{}\"\n{credential}\
         intune_authority_url = \"{base}/\"\nintune_graph_url = \"{base}/\"\n{extra}",
        standin.tenant,
        standin.client_id,
        base = standin.base_url(),
    );
    let mut opts = ScepdOptions::with_config(config).on(transport);
    opts.env.push(("CERTCTL_DATABASE_URL".into(), url.into()));
    opts.startup_timeout = Duration::from_secs(30);
    Scepd::start(opts).unwrap_or_else(|e| panic!("{e}"))
}

fn enroll(server: &Scepd, key: &DeviceKey, cn: &str, challenge: &str) -> CertRep {
    let client = ScepClient::new(&server.profile_url("intune")).unwrap();
    client.enroll(key, &CsrSpec::new(cn, Some(challenge)), &MessageOptions::default(), PkiMethod::Post).unwrap().reply
}

fn issued(rep: &CertRep, key: &DeviceKey, server: &Scepd) -> Vec<u8> {
    assert_eq!((rep.status, rep.fail_info), (PkiStatus::SUCCESS, None), "{rep:?}\n{}", server.log_tail(30));
    rep.issued_certificate(key).expect("SUCCESS carries the device's certificate").to_vec()
}

fn refused(rep: &CertRep, server: &Scepd) {
    assert_eq!(
        (rep.status, rep.fail_info),
        (PkiStatus::FAILURE, Some(FailInfo::BAD_REQUEST)),
        "{rep:?}\n{}",
        server.log_tail(30)
    );
    assert!(rep.certificates.is_empty(), "a refusal carries no certificate");
}

/// GET `path` with the admin key: the body.
fn get(server: &Scepd, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", server.port())).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_KEY}\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    raw.split_once("\r\n\r\n").unwrap().1.to_string()
}

/// The value of `scepd_intune_api_calls_total` for (action, code), 0 when absent.
fn api_metric(server: &Scepd, action: &str, code: &str) -> u64 {
    let series = format!("scepd_intune_api_calls_total{{profile=\"intune\",action=\"{action}\",code=\"{code}\"}} ");
    get(server, "/metrics").lines().find_map(|l| l.strip_prefix(&series)).map_or(0, |n| n.trim().parse().unwrap())
}

/// The audit events of profile `intune` with `outcome`, enrolments only.
fn events(server: &Scepd, outcome: &str) -> Vec<Value> {
    let v: Value =
        serde_json::from_str(&get(server, &format!("/api/v1/admin/scep/events?profile=intune&outcome={outcome}")))
            .unwrap();
    v["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| {
            e["action"].as_str().is_some_and(|a| a.starts_with("scep_pkcsreq") || a.starts_with("scep_renewal"))
        })
        .cloned()
        .collect()
}

/// Counts of (token, graph, validate, success notification, failure notification).
fn counts(s: &IntuneStandIn) -> [usize; 5] {
    [
        s.count(Hop::Token, None),
        s.count(Hop::Graph, None),
        s.count(Hop::Intune, Some("validateRequest")),
        s.count(Hop::Intune, Some("successNotification")),
        s.count(Hop::Intune, Some("failureNotification")),
    ]
}

fn delta(before: [usize; 5], after: [usize; 5]) -> [usize; 5] {
    std::array::from_fn(|i| after[i] - before[i])
}

scep_tests::on_each_transport!(
    enrolment_and_notification_contract,
    concurrent_first_enrolments_share_one_token_and_discovery,
    timeouts_retry_once_then_fail_closed,
    definitive_rejections_issue_nothing,
    classification_of_hop_failures,
    failed_notification_leaves_the_device_without_a_certificate,
    certmonger_enrols_with_an_opaque_challenge,
    strongswan_pki_enrols_with_an_opaque_challenge,
    queued_revocations_are_applied_and_reported_within_the_poll_interval,
    two_nodes_on_one_database_download_revocations_once_per_interval,
    renewal_with_a_fresh_challenge_is_validated_and_without_one_refused,
    tokens_are_refreshed_before_they_expire,
    the_certificate_credential_is_verified_by_entra,
);

/// A token is fetched again before it expires (at half its lifetime for a
/// short one): a stand-in issuing 6 s tokens and refusing expired ones sees
/// a second Intune token for an enrolment 3.2 s after the first (the first
/// token still valid), then a third after it too expired; never a 401.
fn tokens_are_refreshed_before_they_expire(transport: Transport) {
    let Setup { standin, server, .. } = start(transport, "");
    standin.token_lifetime(6);
    for i in 0..3 {
        standin.know(&format!("refresh-{i}"), None, HOUR);
    }
    let key = DeviceKey::generate().unwrap();
    issued(&enroll(&server, &key, "refresh-0", "refresh-0"), &key, &server);
    let first = Instant::now();
    assert_eq!((standin.tokens_for(Hop::Graph), standin.tokens_for(Hop::Intune)), (1, 1));
    std::thread::sleep(Duration::from_millis(3200).saturating_sub(first.elapsed()));
    issued(&enroll(&server, &key, "refresh-1", "refresh-1"), &key, &server);
    assert_eq!(standin.tokens_for(Hop::Intune), 2, "refreshed before the 6 s token expired");
    std::thread::sleep(Duration::from_millis(6500));
    issued(&enroll(&server, &key, "refresh-2", "refresh-2"), &key, &server);
    assert_eq!(standin.tokens_for(Hop::Intune), 3);
    assert_eq!(standin.tokens_for(Hop::Graph), 1, "discovery stays cached: no second Graph token needed");
    assert_eq!(standin.expired_token_refusals(), 0, "no call ever carried an expired token");
    assert_eq!(counts(&standin)[2..], [3, 3, 0], "no retry after a 401");
}

/// An RSA key and a self-signed certificate for it (PEM files `<name>.key`,
/// `<name>.pem` in `dir`); returns the certificate's DER.
fn rsa_credential(dir: &std::path::Path, name: &str) -> Vec<u8> {
    let out = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj"])
        .arg(format!("/CN=scepd Entra credential {name}"))
        .arg("-keyout")
        .arg(dir.join(format!("{name}.key")))
        .arg("-out")
        .arg(dir.join(format!("{name}.pem")))
        .output()
        .unwrap_or_else(|e| {
            scep_tests::missing_tool("intune_api", "openssl", &format!("apt-get install openssl ({e})"))
        });
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::set_permissions(dir.join(format!("{name}.key")), std::fs::Permissions::from_mode(0o600)).unwrap();
    let pem = std::fs::read_to_string(dir.join(format!("{name}.pem"))).unwrap();
    scep_engine::pem::certificates(&pem).unwrap().remove(0)
}

/// The certificate credential end to end: scepd signs a client assertion
/// with the key of the certificate registered on the app, and the stand-in
/// verifies the signature against that certificate, so a device enrols.
/// The same certificate with another key (a server that signed with the
/// wrong key) gets no token, and the device nothing.
fn the_certificate_credential_is_verified_by_entra(transport: Transport) {
    let standin = IntuneStandIn::start();
    let dir = tempfile::tempdir().unwrap();
    let registered = rsa_credential(dir.path(), "app");
    rsa_credential(dir.path(), "other");
    standin.accept_assertion_certificate(registered);
    let keys = |cert: &str, key: &str| {
        format!(
            "intune_client_cert_path = \"{}\"\nintune_client_key_path = \"{}\"\n",
            dir.path().join(cert).display(),
            dir.path().join(key).display()
        )
    };
    standin.know("assertion-blob-1", None, HOUR);
    standin.know("assertion-blob-2", None, HOUR);
    {
        let server = serve(transport, &standin, &keys("app.pem", "app.key"), "");
        let key = DeviceKey::generate().unwrap();
        issued(&enroll(&server, &key, "assertion-1", "assertion-blob-1"), &key, &server);
        let token_calls: Vec<_> = standin.calls().into_iter().filter(|c| c.hop == Hop::Token).collect();
        assert_eq!(token_calls.len(), 2, "one token per audience");
        for call in &token_calls {
            let form = call.body.as_str().unwrap();
            assert!(
                form.contains("client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer")
            );
            assert!(!form.contains("client_secret"), "{form}");
        }
    }
    let tokens_before = standin.tokens_issued();
    let server = serve(transport, &standin, &keys("app.pem", "other.key"), "");
    let key = DeviceKey::generate().unwrap();
    refused(&enroll(&server, &key, "assertion-2", "assertion-blob-2"), &server);
    assert_eq!(standin.tokens_issued(), tokens_before, "a wrongly signed assertion gets no token");
    let failed = events(&server, "intune_token_failed");
    assert!(failed.iter().any(|e| e["detail"].as_str().unwrap_or("").contains("AADSTS7000215")), "{failed:?}");
    assert_eq!(standin.count(Hop::Intune, Some("successNotification")), 1);
}

/// validate → issue → successNotification (same transactionId, the issued
/// certificate's SHA-1 thumbprint and serial) before the device gets its
/// certificate; token per audience and discovery fetched once for many
/// enrolments; the same challenge twice is refused locally as `replay`.
fn enrolment_and_notification_contract(transport: Transport) {
    let Setup { standin, server, .. } = start(transport, "");
    let mut certs = Vec::new();
    for i in 0..5 {
        let challenge = format!("opaque-blob-{i}");
        standin.know(&challenge, Some(&format!("device-{i}")), HOUR);
        let key = DeviceKey::generate().unwrap();
        let rep = enroll(&server, &key, &format!("device-{i}"), &challenge);
        let got_at = Instant::now();
        let cert = issued(&rep, &key, &server);
        let calls = standin.calls();
        let validate = calls.iter().rev().find(|c| c.path.ends_with("/validateRequest")).unwrap();
        let success = calls.iter().rev().find(|c| c.path.ends_with("/successNotification")).unwrap();
        let tx = validate.body["request"]["transactionId"].as_str().unwrap();
        assert_eq!(success.body["notification"]["transactionId"].as_str(), Some(tx));
        assert_eq!(validate.headers.get("api-version").map(String::as_str), Some("2018-02-20"));
        let thumb: String = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, &cert)
            .as_ref()
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect();
        assert_eq!(success.body["notification"]["certificateThumbprint"].as_str(), Some(thumb.as_str()));
        let parsed = scep_engine::x509::CertificateRef::parse(&cert).unwrap();
        let serial: String = parsed.serial.iter().map(|b| format!("{b:02X}")).collect();
        assert_eq!(success.body["notification"]["certificateSerialNumber"].as_str(), Some(serial.as_str()));
        assert_eq!(
            success.body["notification"]["certificateRequest"], validate.body["request"]["certificateRequest"],
            "the same CSR in both calls"
        );
        assert!(success.at < got_at, "the notification reaches Intune before the device has its certificate");
        certs.push(cert);
    }
    // One token per audience, one discovery, for five enrolments.
    assert_eq!(counts(&standin), [2, 1, 5, 5, 0]);
    assert_eq!(events(&server, "success").len(), 5);
    // The operator plane: admin stats and metrics.
    let stats: Value = serde_json::from_str(&get(&server, "/api/v1/admin/scep/intune/stats")).unwrap();
    let p = &stats["profiles"][0];
    assert_eq!((p["mode"].as_str(), p["credential"].as_str()), (Some("api"), Some("client_secret")), "{stats}");
    assert!(!stats.to_string().contains(&standin.client_secret), "the secret leaks into the stats");
    assert_eq!((p["stats"]["token"]["calls"].as_u64(), p["stats"]["discovery"]["calls"].as_u64()), (Some(2), Some(1)));
    assert_eq!(p["stats"]["discovery"]["last"], "ok");
    assert_eq!(p["stats"]["codes"]["validateRequest"]["Success"], 5, "{stats}");
    assert_eq!(api_metric(&server, "successNotification", "Success"), 5);

    // The same challenge again: refused locally, Intune not asked.
    let before = counts(&standin);
    let key = DeviceKey::generate().unwrap();
    refused(&enroll(&server, &key, "device-0", "opaque-blob-0"), &server);
    assert_eq!(delta(before, counts(&standin)), [0, 0, 0, 0, 0]);
    assert_eq!(events(&server, "replay").len(), 1);
}

/// A 200 with any `code` but the exact `Success` is a definitive rejection:
/// no retry, nothing issued, no notification; the code is in the audit.
fn definitive_rejections_issue_nothing(transport: Transport) {
    let Setup { standin, server, .. } = start(transport, "");
    standin.know("expired-blob", None, Duration::ZERO);
    standin.know("bound-blob", Some("the-right-device"), HOUR);
    standin.know("good-blob-1", None, HOUR);
    standin.know("good-blob-2", None, HOUR);
    let cases: [(&str, &str, Option<Fault>, &str); 5] = [
        ("never-issued-by-intune", "device-a", None, "ChallengeDecryptionError"),
        ("expired-blob", "device-b", None, "ChallengeExpired"),
        ("bound-blob", "another-device", None, "SubjectNameMismatch"),
        ("good-blob-1", "device-c", Some(Fault::Code("success".into())), "success"),
        ("good-blob-2", "device-d", Some(Fault::Code("BadTenantIdInChallenge".into())), "BadTenantIdInChallenge"),
    ];
    for (challenge, cn, fault, code) in cases {
        if let Some(f) = fault {
            standin.fault(Hop::Intune, f);
        }
        let before = counts(&standin);
        let key = DeviceKey::generate().unwrap();
        refused(&enroll(&server, &key, cn, challenge), &server);
        let d = delta(before, counts(&standin));
        assert_eq!(&d[2..], &[1, 0, 0], "{code}: one validate, no retry, no notification");
        let rejected = events(&server, "intune_rejected");
        assert!(rejected.iter().any(|e| e["detail"].as_str().unwrap_or("").contains(code)), "{code}: {rejected:?}");
    }
    assert!(events(&server, "success").is_empty(), "nothing issued");
    for code in
        ["ChallengeDecryptionError", "ChallengeExpired", "SubjectNameMismatch", "success", "BadTenantIdInChallenge"]
    {
        assert_eq!(api_metric(&server, "validateRequest", code), 1, "{code}");
    }
    assert_eq!(api_metric(&server, "successNotification", "Success"), 0);
}

/// The other rows of §5.2: configuration errors fail closed with no Intune
/// call; 401 re-acquires the token once; 404 re-discovers once; 429 honours
/// Retry-After and retries once; 5xx twice fails closed; non-JSON fails
/// closed without a retry.
fn classification_of_hop_failures(transport: Transport) {
    let Setup { standin, server, .. } = start(transport, "");
    let mut n = 0;
    let mut attempt = |standin: &IntuneStandIn, faults: Vec<(Hop, Fault)>| {
        n += 1;
        let challenge = format!("blob-{n}");
        standin.know(&challenge, None, HOUR);
        for (hop, f) in faults {
            standin.fault(hop, f);
        }
        let before = counts(standin);
        let key = DeviceKey::generate().unwrap();
        let started = Instant::now();
        let rep = enroll(&server, &key, &format!("dev-{n}"), &challenge);
        (rep, delta(before, counts(standin)), started.elapsed(), key)
    };
    let s = &standin;
    let invalid_client =
        || Fault::Status(401, r#"{"error":"invalid_client","error_description":"AADSTS7000215"}"#.into(), None);

    // Token 401 invalid_client: fatal, no retry, no Graph, no Intune call.
    let (rep, d, _, _) = attempt(s, vec![(Hop::Token, invalid_client())]);
    refused(&rep, &server);
    assert_eq!(d, [1, 0, 0, 0, 0]);
    // Token 500 twice: one retry, then fail closed.
    let e500 = || Fault::Status(500, "{}".into(), None);
    let (rep, d, _, _) = attempt(s, vec![(Hop::Token, e500()), (Hop::Token, e500())]);
    refused(&rep, &server);
    assert_eq!(d, [2, 0, 0, 0, 0]);
    // Graph 403 (no Application.Read.All): fail closed, no Intune call.
    let forbidden = Fault::Status(403, r#"{"error":{"code":"Authorization_RequestDenied"}}"#.into(), None);
    let (rep, d, _, _) = attempt(s, vec![(Hop::Graph, forbidden)]);
    refused(&rep, &server);
    assert_eq!(d, [2, 1, 0, 0, 0], "a Graph and an Intune token, one discovery");
    // Graph without the SCEP entry: fail closed, and the next request discovers again.
    let (rep, d, _, _) = attempt(s, vec![(Hop::Graph, Fault::MissingEntry)]);
    refused(&rep, &server);
    assert_eq!(d, [0, 1, 0, 0, 0]);
    let (rep, d, _, key) = attempt(s, vec![]);
    issued(&rep, &key, &server);
    assert_eq!(d, [0, 1, 1, 1, 0], "re-discovered, then issued");
    // Intune 401: drop the Intune token, re-acquire once, retry: issued.
    let (rep, d, _, key) = attempt(s, vec![(Hop::Intune, Fault::Status(401, "{}".into(), None))]);
    issued(&rep, &key, &server);
    assert_eq!(d, [1, 0, 2, 1, 0]);
    // Intune 404 (stale shard): forget discovery, re-discover, retry: issued.
    let (rep, d, _, key) = attempt(s, vec![(Hop::Intune, Fault::Status(404, "{}".into(), None))]);
    issued(&rep, &key, &server);
    assert_eq!(d, [0, 1, 2, 1, 0]);
    // 429 with Retry-After: 1 s: retried once after waiting: issued.
    let (rep, d, took, key) = attempt(s, vec![(Hop::Intune, Fault::Status(429, "{}".into(), Some(1)))]);
    issued(&rep, &key, &server);
    assert_eq!(d, [0, 0, 2, 1, 0]);
    assert!(took >= Duration::from_secs(1), "Retry-After honoured: {took:?}");
    // 500 twice: one retry (with a re-discovery), then fail closed, no notification.
    let (rep, d, _, _) = attempt(s, vec![(Hop::Intune, e500()), (Hop::Intune, e500())]);
    refused(&rep, &server);
    assert_eq!(d, [0, 1, 2, 0, 0]);
    // A 200 that is not JSON: fail closed, no retry (the 500s above made
    // it discover again).
    let (rep, d, _, _) = attempt(s, vec![(Hop::Intune, Fault::NonJson)]);
    refused(&rep, &server);
    assert_eq!(d, [0, 1, 1, 0, 0]);
    // A connection closed after the request was sent: Intune may have acted
    // on it, so no retry: fail closed.
    let (rep, d, _, _) = attempt(s, vec![(Hop::Intune, Fault::Close)]);
    refused(&rep, &server);
    assert_eq!(d, [0, 0, 1, 0, 0]);
    // And the next request goes through with what is cached.
    let (rep, d, _, key) = attempt(s, vec![]);
    issued(&rep, &key, &server);
    assert_eq!(d, [0, 0, 1, 1, 0]);
    for label in ["intune_token_failed", "intune_discovery_failed", "intune_unavailable", "intune_protocol"] {
        assert!(!events(&server, label).is_empty(), "{label} audited");
    }
}

/// A successNotification that Intune does not accept: the device gets no
/// certificate, the signed one is revoked locally, and both are audited.
fn failed_notification_leaves_the_device_without_a_certificate(transport: Transport) {
    let Setup { standin, server, .. } = start(transport, "");
    standin.know("blob", None, HOUR);
    standin.fault(Hop::Intune, Fault::Pass);
    standin.fault(Hop::Intune, Fault::Code("Unknown".into()));
    let key = DeviceKey::generate().unwrap();
    refused(&enroll(&server, &key, "dev", "blob"), &server);
    assert_eq!(counts(&standin)[2..], [1, 1, 0]);
    let failed = events(&server, "intune_notification_failed");
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(failed[0]["detail"].as_str().unwrap().contains("revoked by issuer"), "{failed:?}");
}

/// certmonger (a real client) enrols with an opaque challenge the stand-in
/// knows; an unknown one gets nothing.
fn certmonger_enrols_with_an_opaque_challenge(transport: Transport) {
    let Setup { standin, server, .. } = start(transport, "");
    standin.know("certmonger-opaque-blob", Some("cm-device"), HOUR);
    let url = server.profile_url("intune");
    let cert = scep_tests::real_clients::certmonger_enroll(
        &url,
        "certmonger-opaque-blob",
        "cm-device",
        Some(&server.ca_pem()),
        Duration::from_secs(60),
    )
    .unwrap_or_else(|e| panic!("certmonger: {e}\n{}", server.log_tail(30)));
    let success = standin.calls().into_iter().find(|c| c.path.ends_with("/successNotification")).unwrap();
    let thumb: String = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, &cert.der)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect();
    assert_eq!(success.body["notification"]["certificateThumbprint"].as_str(), Some(thumb.as_str()));
    assert!(
        scep_tests::real_clients::certmonger_enroll(
            &url,
            "not-an-intune-blob",
            "cm-device-2",
            Some(&server.ca_pem()),
            Duration::from_secs(60)
        )
        .is_err(),
        "an unknown challenge gets no certificate"
    );
    assert_eq!(standin.count(Hop::Intune, Some("successNotification")), 1);
}

/// Twelve devices at once on a fresh server: one token per audience and one
/// discovery between them (no stampede), every device issued.
fn concurrent_first_enrolments_share_one_token_and_discovery(transport: Transport) {
    let Setup { standin, server, .. } = start(transport, "");
    for i in 0..12 {
        standin.know(&format!("parallel-{i}"), None, HOUR);
    }
    // Slow Entra a little, so that the requests really wait on one fetch.
    standin.fault(Hop::Token, Fault::Delay(Duration::from_millis(300)));
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..12)
            .map(|i| {
                let server = &server;
                scope.spawn(move || {
                    let key = DeviceKey::generate().unwrap();
                    let rep = enroll(server, &key, &format!("par-{i}"), &format!("parallel-{i}"));
                    issued(&rep, &key, server);
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    });
    assert_eq!(counts(&standin), [2, 1, 12, 12, 0]);
}

/// A hop that does not answer within `intune_api_timeout`: retried once
/// within the request's deadline; twice is a refusal with nothing issued.
fn timeouts_retry_once_then_fail_closed(transport: Transport) {
    let Setup { standin, server, .. } = start(transport, "intune_api_timeout = \"1s\"\n");
    standin.know("slow-1", None, HOUR);
    standin.know("slow-2", None, HOUR);
    let slow = || Fault::Delay(Duration::from_millis(1500));
    standin.fault(Hop::Intune, slow());
    let key = DeviceKey::generate().unwrap();
    issued(&enroll(&server, &key, "slow-1", "slow-1"), &key, &server);
    assert_eq!(counts(&standin)[2..], [2, 1, 0]);
    standin.fault(Hop::Intune, slow());
    standin.fault(Hop::Intune, slow());
    let key = DeviceKey::generate().unwrap();
    refused(&enroll(&server, &key, "slow-2", "slow-2"), &server);
    assert_eq!(counts(&standin)[2..], [4, 1, 0]);
    assert_eq!(events(&server, "intune_timeout").len(), 1);
}

/// strongSwan's `pki --scep` (a real client) enrols with an opaque challenge
/// the stand-in knows; the notification names the certificate it received;
/// an unknown challenge gets nothing.
fn strongswan_pki_enrols_with_an_opaque_challenge(transport: Transport) {
    let Setup { standin, server, .. } = start(transport, "");
    standin.know("strongswan-opaque-blob", Some("sw-device"), HOUR);
    let url = server.profile_url("intune");
    let cert = scep_tests::real_clients::strongswan_enroll(
        &url,
        "strongswan-opaque-blob",
        "sw-device",
        Duration::from_secs(60),
    )
    .unwrap_or_else(|e| panic!("strongSwan pki: {e}\n{}", server.log_tail(30)));
    let success = standin.calls().into_iter().find(|c| c.path.ends_with("/successNotification")).unwrap();
    let thumb: String = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, &cert.der)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect();
    assert_eq!(success.body["notification"]["certificateThumbprint"].as_str(), Some(thumb.as_str()));
    assert!(
        scep_tests::real_clients::strongswan_enroll(&url, "not-an-intune-blob", "sw-device-2", Duration::from_secs(60))
            .is_err(),
        "an unknown challenge gets no certificate"
    );
    assert_eq!(standin.count(Hop::Intune, Some("successNotification")), 1);
    assert_eq!(standin.count(Hop::Intune, Some("validateRequest")), 2);
}

/// Revocation sync (§5.3): a queued revocation of an issued certificate is
/// applied on the local CA and reported `None` within the poll interval; a
/// serial this CA never issued is `CertificateNotFoundError`; the same serial
/// again is `ConflictError`.
fn queued_revocations_are_applied_and_reported_within_the_poll_interval(transport: Transport) {
    let Setup { standin, server, .. } = start(transport, "intune_revocation_poll_interval = \"1s\"\n");
    standin.know("to-be-revoked", None, HOUR);
    let key = DeviceKey::generate().unwrap();
    let cert = issued(&enroll(&server, &key, "revoked-device", "to-be-revoked"), &key, &server);
    let success = standin.calls().into_iter().find(|c| c.path.ends_with("/successNotification")).unwrap();
    // Intune hands back the serial exactly as the success notification sent it.
    let serial = success.body["notification"]["certificateSerialNumber"].as_str().unwrap().to_string();
    let parsed = scep_engine::x509::CertificateRef::parse(&cert).unwrap();
    assert_eq!(serial, parsed.serial.iter().map(|b| format!("{b:02X}")).collect::<String>());
    standin.queue_revocation(&serial, "ctx-1");
    standin.queue_revocation("0BADC0FFEE", "ctx-2");
    let wait_for = |n: usize| {
        let until = Instant::now() + Duration::from_secs(10);
        while standin.revocation_results().len() < n {
            assert!(Instant::now() < until, "no upload within 10 s (poll interval 1 s)\n{}", server.log_tail(20));
            std::thread::sleep(Duration::from_millis(100));
        }
        standin.revocation_results()
    };
    let results = wait_for(2);
    let by_context = |ctx: &str| results.iter().find(|r| r["requestContext"] == ctx).cloned().unwrap();
    assert_eq!(
        (by_context("ctx-1")["succeeded"].as_bool(), by_context("ctx-1")["errorCode"].as_str()),
        (Some(true), Some("None"))
    );
    assert_eq!(by_context("ctx-2")["errorCode"], "CertificateNotFoundError");
    assert_eq!(by_context("ctx-2")["succeeded"], false);
    standin.queue_revocation(&serial, "ctx-3");
    let results = wait_for(3);
    assert_eq!(results[2]["errorCode"], "ConflictError", "already revoked: {results:?}");
    let stats: Value = serde_json::from_str(&get(&server, "/api/v1/admin/scep/intune/stats")).unwrap();
    assert!(stats["profiles"][0]["revocation_last_sync"].is_object(), "{stats}");
    // Each request is audited with Intune's request context.
    let audited = |outcome: &str| -> Vec<Value> {
        let v: Value =
            serde_json::from_str(&get(&server, &format!("/api/v1/admin/scep/events?profile=intune&outcome={outcome}")))
                .unwrap();
        v["events"].as_array().unwrap().iter().filter(|e| e["action"] == "intune_revocation").cloned().collect()
    };
    let revoked = audited("None");
    assert_eq!(revoked.len(), 1, "{revoked:?}");
    assert!(revoked[0]["detail"].as_str().unwrap().contains("ctx-1"), "{revoked:?}");
    assert_eq!(revoked[0]["serial"].as_str(), Some(serial.as_str()));
    assert_eq!(audited("CertificateNotFoundError").len(), 1);
    assert_eq!(audited("ConflictError").len(), 1);
}

/// Two nodes on one PostgreSQL database share the revocation-sync lease:
/// the stand-in sees one download per interval, not one per node; a queued
/// revocation is handled (and uploaded) once; and a node's `intune/stats`
/// shows the last run even when the other node made it.
fn two_nodes_on_one_database_download_revocations_once_per_interval(transport: Transport) {
    let db = scep_tests::database::TestDatabase::create("two_nodes_download_revocations_once_per_interval");
    let standin = IntuneStandIn::start();
    let secret_dir = tempfile::tempdir().unwrap();
    let secret = secret_dir.path().join("entra-secret");
    std::fs::write(&secret, format!("{}\n", standin.client_secret)).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let credential = format!("intune_client_secret_path = \"{}\"\n", secret.display());
    let extra = "intune_revocation_poll_interval = \"1s\"\n";
    let a = serve_shared(transport, &standin, &credential, extra, &db.url, "node-a");
    let b = serve_shared(transport, &standin, &credential, extra, &db.url, "node-b");
    let downloads = || standin.calls().iter().filter(|c| c.path.ends_with("/downloadRevocationRequests")).count();
    let start = downloads();
    std::thread::sleep(Duration::from_secs(6));
    let in_six_intervals = downloads() - start;
    // One node per interval: at most 6 (+1 at a window edge); two racing pollers would make ~12.
    assert!((3..=7).contains(&in_six_intervals), "{in_six_intervals} downloads in 6 intervals of 1 s");

    // A queued revocation is handled by one node, once.
    standin.queue_revocation("0BADC0FFEE", "ctx-shared");
    let until = Instant::now() + Duration::from_secs(10);
    while standin.revocation_results().is_empty() {
        assert!(Instant::now() < until, "no upload within 10 s\n{}\n{}", a.log_tail(20), b.log_tail(20));
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(standin.revocation_results().len(), 1, "{:?}", standin.revocation_results());
    let audited: Value =
        serde_json::from_str(&get(&a, "/api/v1/admin/scep/events?profile=intune&outcome=CertificateNotFoundError"))
            .unwrap();
    assert_eq!(audited["events"].as_array().unwrap().len(), 1, "audited once, in the shared trail: {audited}");

    // Each node's intune/stats shows the last run; at least one shows a run of the other node.
    let ran_by = |server: &Scepd| -> String {
        let stats: Value = serde_json::from_str(&get(server, "/api/v1/admin/scep/intune/stats")).unwrap();
        stats["profiles"][0]["revocation_last_sync"]["node"].as_str().unwrap_or_default().to_string()
    };
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let (on_a, on_b) = (ran_by(&a), ran_by(&b));
        assert!(["node-a", "node-b"].contains(&on_a.as_str()) || on_a.is_empty(), "{on_a}");
        if on_a == "node-b" || on_b == "node-a" {
            break;
        }
        assert!(Instant::now() < until, "no node showed the other's run: A {on_a:?}, B {on_b:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A RenewalReq signed by the device's certificate (RFC 8894 §3.3.1.2) on
/// an API-mode profile: with a fresh challenge it is validated by Intune like
/// an enrolment (and notified); without one it is refused
/// (`renewal_disabled`: `intune_renewal_by_certificate` is off), Intune not asked.
fn renewal_with_a_fresh_challenge_is_validated_and_without_one_refused(transport: Transport) {
    let Setup { standin, server, .. } = start(transport, "");
    standin.know("first", Some("renewing-device"), HOUR);
    standin.know("second", Some("renewing-device"), HOUR);
    let key = DeviceKey::generate().unwrap();
    let cert = issued(&enroll(&server, &key, "renewing-device", "first"), &key, &server);
    let renew = |challenge: Option<&str>| {
        let client = ScepClient::new(&server.profile_url("intune")).unwrap();
        let ca = client.get_ca_cert().unwrap();
        let new_key = DeviceKey::generate().unwrap();
        let csr = build_csr(&new_key, &CsrSpec::new("renewing-device", challenge)).unwrap();
        let request = build_pki_message(
            &MessageBody::RenewalReq(csr),
            Signer { certificate: &cert, key: &key },
            ca.recipient(),
            &MessageOptions::default(),
        )
        .unwrap();
        (client.transact(&request, &key, &ca, PkiMethod::Post).unwrap(), new_key)
    };
    let before = counts(&standin);
    let (rep, new_key) = renew(Some("second"));
    issued(&rep, &new_key, &server);
    assert_eq!(delta(before, counts(&standin))[2..], [1, 1, 0], "validated and notified");
    let before = counts(&standin);
    let (rep, _) = renew(None);
    refused(&rep, &server);
    assert_eq!(delta(before, counts(&standin)), [0, 0, 0, 0, 0], "Intune not asked");
    let refusals: Vec<Value> = serde_json::from_str::<Value>(&get(
        &server,
        "/api/v1/admin/scep/events?profile=intune&outcome=renewal_disabled",
    ))
    .unwrap()["events"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(refusals.len(), 1, "{refusals:?}");
}
