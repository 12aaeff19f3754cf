//! The transport conformance suite: every end-to-end scenario runs against
//! the real `scepd` binary on each transport (`--transport tokio` and
//! `--transport smol`), so the two cannot drift apart. A scenario is written
//! once, as `fn(&mut Server)`, and [`both!`] makes one test per transport.
//!
//! The server is the shared fixture [`scep_tests::server::Scepd`] (bootstrap
//! profile, `127.0.0.1:0`, fresh data dir, built from source when stale).
#![allow(clippy::unwrap_used)]

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::Duration;

use scep_tests::client::{
    CaCertificates, ContentCipher, CsrSpec, DeviceKey, DigestAlg, FailInfo, MessageBody, MessageOptions, PkiMethod,
    PkiStatus, ScepClient, Signer, build_csr, build_pki_message, self_signed_certificate, verify_cert_rep,
};
use scep_tests::server::{Scepd, ScepdOptions, Signal, Transport};

const CHALLENGE: &str = "conformance-secret";
const WAIT: Duration = Duration::from_secs(60);

/// A bootstrap `scepd serve --transport <transport>` (local CA, `default` profile).
struct Server {
    scepd: Scepd,
    transport: Transport,
}

impl Server {
    fn start(transport: Transport) -> Self {
        let opts = ScepdOptions { startup_timeout: WAIT, ..ScepdOptions::bootstrap(CHALLENGE).on(transport) };
        let scepd = Scepd::start(opts).unwrap_or_else(|e| panic!("{transport:?}: {e}"));
        Self { scepd, transport }
    }

    fn client(&self) -> ScepClient {
        ScepClient::new(&self.scepd.url()).unwrap().with_timeout(Duration::from_secs(20))
    }

    fn log(&self) -> String {
        self.scepd.stderr()
    }

    fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(("127.0.0.1", self.scepd.port())).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
        s
    }

    /// scepd exits with status 0 within `limit`.
    fn assert_exits_0(&mut self, limit: Duration) {
        let status = self
            .scepd
            .wait_exit(limit)
            .unwrap_or_else(|| panic!("{:?}: scepd did not exit within {limit:?}\n{}", self.transport, self.log()));
        assert!(status.success(), "{:?}: exit {status:?}\n{}", self.transport, self.log());
    }

    /// One raw HTTP/1.1 request with `Connection: close`: (status, headers+body text).
    fn raw(&self, head: &str, body: &[u8]) -> (u16, String) {
        let mut s = self.connect();
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(body).unwrap();
        read_response(&mut s)
    }
}

fn read_response(s: &mut TcpStream) -> (u16, String) {
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("no status in {text:?}"));
    (status, text)
}

/// A PKCSReq for `key`, ready to send, with its self-signed signer.
fn pkcs_req(
    key: &DeviceKey,
    cn: &str,
    challenge: &str,
    ca: &CaCertificates,
    options: &MessageOptions,
) -> scep_tests::client::PkiRequest {
    let spec = CsrSpec::new(cn, Some(challenge));
    let self_signed = self_signed_certificate(key, &spec.subject, 1).unwrap();
    let csr = build_csr(key, &spec).unwrap();
    build_pki_message(&MessageBody::PkcsReq(csr), Signer { certificate: &self_signed, key }, ca.recipient(), options)
        .unwrap()
}

/// One test per transport for each scenario.
macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod tokio {
            $( #[test] fn $name() { super::$name(&mut super::Server::start(super::Transport::Tokio)); } )*
        }
        mod smol {
            $( #[test] fn $name() { super::$name(&mut super::Server::start(super::Transport::Smol)); } )*
        }
    };
}

both!(
    get_ca_caps,
    get_ca_cert,
    pkcs_req_post_and_get_across_ciphers,
    renewal,
    wrong_challenge_fails,
    http_errors,
    sighup_survives,
    sigterm_answers_in_flight_and_exits_0,
    sigterm_closes_idle_keep_alive_connections,
    sigterm_finishes_request_heads_under_way,
    http2_cleartext_enrolment,
    ndes_url_serves_the_default_profile_and_its_ra_pair,
    half_closed_requests_are_answered,
);

/// GetCACaps (RFC 8894 §3.5.2): what clients need to pick POST, AES and SHA-256.
fn get_ca_caps(s: &mut Server) {
    let caps = s.client().get_ca_caps().unwrap();
    for cap in ["POSTPKIOperation", "AES", "SHA-256", "SCEPStandard", "Renewal"] {
        assert!(caps.has(cap), "{:?}: {cap} missing from {:?}", s.transport, caps.capabilities);
    }
    let r = s.client().get("GetCACaps", None).unwrap();
    assert!(r.content_type.unwrap().starts_with("text/plain"));
}

/// GetCACert (RFC 8894 §4.2): the CA (and RA when separate) as a degenerate PKCS#7.
fn get_ca_cert(s: &mut Server) {
    let ca = s.client().get_ca_cert().unwrap();
    assert!(!ca.certificates.is_empty());
    scep_engine::x509::CertificateRef::parse(ca.ca()).unwrap();
    scep_engine::x509::CertificateRef::parse(ca.recipient()).unwrap();
}

/// PKCSReq over POST and GET with several cipher/digest choices; every
/// CertRep verifies and carries a certificate for the request's key.
fn pkcs_req_post_and_get_across_ciphers(s: &mut Server) {
    let client = s.client();
    let combos = [
        (PkiMethod::Post, ContentCipher::Aes256Cbc, DigestAlg::Sha256),
        (PkiMethod::Get, ContentCipher::Aes128Cbc, DigestAlg::Sha512),
        (PkiMethod::Post, ContentCipher::DesEde3Cbc, DigestAlg::Sha1),
    ];
    for (i, (method, cipher, digest)) in combos.into_iter().enumerate() {
        let key = DeviceKey::pregenerated(i).unwrap();
        let options = MessageOptions { cipher, digest, ..MessageOptions::default() };
        let cn = format!("conf-{i}");
        let e = client.enroll(&key, &CsrSpec::new(cn.clone(), Some(CHALLENGE)), &options, method).unwrap();
        assert_eq!(
            e.reply.status,
            PkiStatus::SUCCESS,
            "{:?} {method:?} {cipher:?} {digest:?}: {:?}",
            s.transport,
            e.reply.fail_info_text
        );
        let cert = scep_engine::x509::CertificateRef::parse(e.issued().unwrap()).unwrap();
        assert_eq!(cert.spki.raw, key.spki_der());
        assert_eq!(cert.subject, scep_tests::client::SubjectName::cn(cn).to_der().as_slice());
    }
}

/// RenewalReq (RFC 8894 §3.3.1.2) signed with the issued certificate.
fn renewal(s: &mut Server) {
    let client = s.client();
    let key = DeviceKey::pregenerated(3).unwrap();
    let e = client
        .enroll(&key, &CsrSpec::new("conf-renew", Some(CHALLENGE)), &MessageOptions::default(), PkiMethod::Post)
        .unwrap();
    let issued = e.issued().unwrap().to_vec();
    let new_key = DeviceKey::pregenerated(4).unwrap();
    let csr = build_csr(&new_key, &CsrSpec::new("conf-renew", None)).unwrap();
    let req = build_pki_message(
        &MessageBody::RenewalReq(csr),
        Signer { certificate: &issued, key: &key },
        e.ca.recipient(),
        &MessageOptions::default(),
    )
    .unwrap();
    let rep = client.transact(&req, &key, &e.ca, PkiMethod::Post).unwrap();
    assert_eq!(rep.status, PkiStatus::SUCCESS, "{:?}: {:?}", s.transport, rep.fail_info_text);
    let renewed = scep_engine::x509::CertificateRef::parse(rep.issued_certificate(&new_key).unwrap()).unwrap();
    assert_eq!(renewed.spki.raw, new_key.spki_der());
}

/// A wrong challenge is a signed CertRep FAILURE with a failInfo (RFC 8894 §3.3.2.2).
fn wrong_challenge_fails(s: &mut Server) {
    let key = DeviceKey::pregenerated(5).unwrap();
    let e = s
        .client()
        .enroll(&key, &CsrSpec::new("conf-bad", Some("wrong")), &MessageOptions::default(), PkiMethod::Post)
        .unwrap();
    assert_eq!(e.reply.status, PkiStatus::FAILURE);
    assert!(e.reply.fail_info.is_some());
    assert!(e.issued().is_err());
}

/// HTTP/2 with prior knowledge (h2c), from curl (nghttp2): GetCACaps, and a
/// PKCSReq POSTed over h2 whose CertRep verifies and carries the device key.
fn http2_cleartext_enrolment(s: &mut Server) {
    if std::process::Command::new("curl").arg("--version").output().is_err() {
        scep_tests::missing_tool("http2_cleartext_enrolment", "curl", "apt-get install curl");
    }
    let dir = tempfile::tempdir().unwrap();
    let base = s.scepd.url();
    let curl = |query: &str, body: Option<&[u8]>| -> (String, Vec<u8>) {
        let out = dir.path().join("response");
        let mut cmd = std::process::Command::new("curl");
        cmd.args(["-s", "--http2-prior-knowledge", "--max-time", "20", "-w", "%{http_code} %{http_version}", "-o"])
            .arg(&out);
        if let Some(body) = body {
            let file = dir.path().join("request");
            std::fs::write(&file, body).unwrap();
            cmd.args(["-H", "Content-Type: application/x-pki-message", "--data-binary"])
                .arg(format!("@{}", file.display()));
        }
        let run = cmd.arg(format!("{base}?{query}")).output().unwrap();
        (String::from_utf8_lossy(&run.stdout).into_owned(), std::fs::read(&out).unwrap_or_default())
    };

    let (status, caps) = curl("operation=GetCACaps", None);
    assert_eq!(status, "200 2", "{:?}: {}", s.transport, s.log());
    assert!(String::from_utf8_lossy(&caps).contains("POSTPKIOperation"));

    let ca = s.client().get_ca_cert().unwrap();
    let key = DeviceKey::pregenerated(6).unwrap();
    let req = pkcs_req(&key, "conf-h2", CHALLENGE, &ca, &MessageOptions::default());
    let (status, reply) = curl("operation=PKIOperation", Some(&req.der));
    assert_eq!(status, "200 2", "{:?}: {}", s.transport, s.log());
    let rep = verify_cert_rep(&reply, &req, &key, &ca.certificates).unwrap();
    assert_eq!(rep.status, PkiStatus::SUCCESS, "{:?}: {:?}", s.transport, rep.fail_info_text);
    let issued = scep_engine::x509::CertificateRef::parse(rep.issued_certificate(&key).unwrap()).unwrap();
    assert_eq!(issued.spki.raw, key.spki_der());
}

/// NDES's URL (`/certsrv/mscep/mscep.dll`, with `/pkiclient.exe`, any ASCII
/// case) serves the bootstrap profile: the same GetCACaps and GetCACert
/// (signing RA, encryption RA, CA), on the fast path and through hyper
/// alike, and PKCSReqs encrypted to either RA certificate enrol; one
/// encrypted to the CA is refused with badMessageCheck (`unknown_recipient`).
fn ndes_url_serves_the_default_profile_and_its_ra_pair(s: &mut Server) {
    let t = s.transport;
    let base = s.scepd.base_url().to_string();
    let reference = s.client();
    let (caps, certs) = (reference.get_ca_caps().unwrap(), reference.get_ca_cert().unwrap());
    assert_eq!(certs.certificates.len(), 3, "{t:?}: signing RA, encryption RA, CA");
    assert_eq!((certs.recipient_index, certs.ca_index), (1, 2), "{t:?}: encrypt to the encryption RA");
    for path in ["/certsrv/mscep/mscep.dll", "/certsrv/mscep/mscep.dll/pkiclient.exe", "/CertSrv/mscep/MSCEP.DLL/"] {
        let client = ScepClient::new(&format!("{base}{path}")).unwrap().with_timeout(Duration::from_secs(20));
        assert_eq!(client.get_ca_caps().unwrap(), caps, "{t:?} {path}");
        assert_eq!(client.get_ca_cert().unwrap(), certs, "{t:?} {path}");
    }

    // Enrolment at the alias, encrypted to each published certificate in turn.
    let client = ScepClient::new(&format!("{base}/certsrv/mscep/mscep.dll/pkiclient.exe"))
        .unwrap()
        .with_timeout(Duration::from_secs(20));
    for (index, want) in [(0, PkiStatus::SUCCESS), (1, PkiStatus::SUCCESS), (2, PkiStatus::FAILURE)] {
        let to = certs.clone().encrypting_to(index).unwrap();
        let key = DeviceKey::pregenerated(7 + index).unwrap();
        let req = pkcs_req(&key, &format!("ndes-{index}"), CHALLENGE, &to, &MessageOptions::default());
        let rep = client.transact(&req, &key, &to, PkiMethod::Post).unwrap();
        assert_eq!(rep.status, want, "{t:?}: encrypted to certificate #{index}: {:?}", rep.fail_info_text);
        if want == PkiStatus::SUCCESS {
            let issued = scep_engine::x509::CertificateRef::parse(rep.issued_certificate(&key).unwrap()).unwrap();
            assert_eq!(issued.spki.raw, key.spki_der());
        } else {
            assert_eq!(rep.fail_info, Some(FailInfo::BAD_MESSAGE_CHECK), "{t:?}");
        }
    }
    assert!(s.log().contains("outcome=\"unknown_recipient\""), "{t:?}: {}", s.log());

    // One keep-alive connection: the alias on the fast path, then hyper
    // (after the hand-off at /healthz) answers the alias with the same bytes.
    let pipelined = "GET /certsrv/mscep/mscep.dll?operation=GetCACaps HTTP/1.1\r\nHost: x\r\n\r\n\
         GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n\
         GET /certsrv/mscep/mscep.dll?operation=GetCACaps HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let (_, text) = s.raw(pipelined, b"");
    let answers: Vec<String> = text
        .split("HTTP/1.1 ")
        .skip(1)
        .map(|a| {
            a.split("\r\n")
                .filter(|l| !l.starts_with("date: ") && *l != "connection: close")
                .collect::<Vec<_>>()
                .join("\r\n")
        })
        .collect();
    assert_eq!(answers.len(), 3, "{t:?}: {text}");
    assert!(answers[0].starts_with("200 "), "{t:?}: {text}");
    assert_eq!(answers[0], answers[2], "{t:?}: fast path and hyper differ");
    // Beside the alias: 404.
    let get = |target: &str| s.raw(&format!("GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"), b"").0;
    assert_eq!(get("/certsrv/mscep/other.dll?operation=GetCACaps"), 404, "{t:?}");
    assert_eq!(get("/certsrv/mscep/mscep.dll/x?operation=GetCACaps"), 404, "{t:?}");
}

/// An explicit profile on the local CA keeps its single RA and its own EKU
/// policy: it is served at its `url_aliases` (and, as the default profile
/// with no alias of its own would not be, NDES's path goes to the profile
/// that claims it), a CSR asking for an EKU it does not allow is refused
/// with badRequest and the audit event names the EKU. Both transports.
#[test]
fn explicit_profiles_keep_a_single_ra_and_serve_their_aliases() {
    const ADMIN_KEY: &str = "conformance-admin-key";
    for transport in [Transport::Tokio, Transport::Smol] {
        let config = format!(
            "[[api_key]]\nname = \"ops\"\nkey = \"{ADMIN_KEY}\"\nrole = \"admin\"\n\n\
             [[profile]]\nname = \"corp\"\nchallenge_password = \"{CHALLENGE}\"\nurl_aliases = [\"/enroll/corp\"]\n\n\
             [[profile]]\nname = \"intune\"\nchallenge_password = \"{CHALLENGE}\"\n\
             url_aliases = [\"/certsrv/mscep/mscep.dll\"]\nekus = [\"client-auth\", \"server-auth\"]\n"
        );
        let opts = ScepdOptions { startup_timeout: WAIT, ..ScepdOptions::with_config(config).on(transport) };
        let scepd = Scepd::start(opts).unwrap_or_else(|e| panic!("{transport:?}: {e}"));
        let at = |path: &str| {
            ScepClient::new(&format!("{}{path}", scepd.base_url())).unwrap().with_timeout(Duration::from_secs(20))
        };
        let corp = at("/enroll/corp/pkiclient.exe").get_ca_cert().unwrap();
        assert_eq!(corp, at("/scep/corp").get_ca_cert().unwrap(), "{transport:?}");
        assert_eq!(corp.certificates.len(), 2, "{transport:?}: one RA and the CA");
        // NDES's path belongs to the profile that claims it, not to the default (corp).
        let intune = at("/certsrv/mscep/mscep.dll").get_ca_caps().unwrap();
        assert_eq!(intune, at("/scep/intune").get_ca_caps().unwrap(), "{transport:?}");

        let server_auth = || {
            let mut spec = CsrSpec::new("both-ekus", Some(CHALLENGE));
            spec.extended_key_usage =
                vec![scep_engine::oid::KP_CLIENT_AUTH.to_vec(), scep_engine::oid::KP_SERVER_AUTH.to_vec()];
            spec
        };
        let key = DeviceKey::pregenerated(10).unwrap();
        let refused =
            at("/enroll/corp").enroll(&key, &server_auth(), &MessageOptions::default(), PkiMethod::Post).unwrap();
        assert_eq!(refused.reply.status, PkiStatus::FAILURE, "{transport:?}");
        assert_eq!(refused.reply.fail_info, Some(FailInfo::BAD_REQUEST), "{transport:?}");
        let allowed = at("/certsrv/mscep/mscep.dll/pkiclient.exe")
            .enroll(&key, &server_auth(), &MessageOptions::default(), PkiMethod::Post)
            .unwrap();
        assert_eq!(allowed.reply.status, PkiStatus::SUCCESS, "{transport:?}: {:?}", allowed.reply.fail_info_text);

        let mut stream = TcpStream::connect(("127.0.0.1", scepd.port())).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        write!(
            stream,
            "GET /api/v1/admin/scep/events?profile=corp&outcome=policy_violation HTTP/1.1\r\nHost: x\r\n\
             Authorization: Bearer {ADMIN_KEY}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let (status, text) = read_response(&mut stream);
        assert_eq!(status, 200, "{transport:?}: {text}");
        let body: serde_json::Value = serde_json::from_str(text.split("\r\n\r\n").nth(1).unwrap()).unwrap();
        let events = body["events"].as_array().unwrap();
        assert_eq!(events.len(), 1, "{transport:?}: {body}");
        let detail = events[0]["detail"].as_str().unwrap_or_default();
        assert!(detail.contains("1.3.6.1.5.5.7.3.1") && detail.contains("not allowed"), "{transport:?}: {detail}");
    }
}

/// 404 for unknown paths and profiles, 405 for other methods, 413 for
/// oversized bodies (declared or streamed).
/// 404 for unknown paths and profiles, 405 (with `Allow`) for other methods,
/// HEAD as GET without a body, 413 for oversized bodies (declared or streamed).
fn http_errors(s: &mut Server) {
    let get = |target: &str| s.raw(&format!("GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"), b"").0;
    assert_eq!(get("/nope"), 404);
    assert_eq!(get("/scep/no-such-profile?operation=GetCACaps"), 404);
    assert_eq!(get("/healthz"), 200);
    // RFC 9112 §3.2: an HTTP/1.1 request without Host, or one with two, is
    // 400, on the fast path's route (GetCACaps) as on hyper's; HTTP/1.0 may omit it.
    for target in ["/scep?operation=GetCACaps", "/healthz"] {
        for hosts in ["", "Host: x\r\nHost: y\r\n"] {
            let (status, text) = s.raw(&format!("GET {target} HTTP/1.1\r\n{hosts}Connection: close\r\n\r\n"), b"");
            assert_eq!(status, 400, "{:?} {target} {hosts:?}: {text}", s.transport);
            assert!(text.contains("Host header"), "{:?} {target}: {text}", s.transport);
        }
        assert_eq!(s.raw(&format!("GET {target} HTTP/1.0\r\n\r\n"), b"").0, 200, "{:?} {target}", s.transport);
    }
    let (status, text) = s.raw("DELETE /scep HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", b"");
    assert_eq!(status, 405);
    assert!(text.to_ascii_lowercase().contains("allow:"), "405 without Allow: {text}");
    // RFC 9110 §9.3.2: HEAD on a discovery GET answers as GET, headers only.
    for target in ["/scep?operation=GetCACaps", "/scep?operation=GetCACert", "/metrics"] {
        let (status, text) = s.raw(&format!("HEAD {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"), b"");
        assert_eq!(status, 200, "HEAD {target}: {text}");
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(body.is_empty(), "HEAD {target} sent a body: {text}");
        assert!(head.to_ascii_lowercase().contains("content-length:"), "HEAD {target}: {head}");
    }
    let (status, _) = s.raw(
        "POST /scep?operation=PKIOperation HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 300000\r\n\r\n",
        b"",
    );
    assert_eq!(status, 413);
    // Chunked, no declared length: refused once the limit is crossed.
    let mut stream = s.connect();
    write!(stream, "POST /scep?operation=PKIOperation HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        .unwrap();
    let chunk = vec![b'A'; 64 * 1024];
    for _ in 0..5 {
        if write!(stream, "{:x}\r\n", chunk.len())
            .and_then(|()| stream.write_all(&chunk))
            .and_then(|()| stream.write_all(b"\r\n"))
            .is_err()
        {
            break;
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n");
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).unwrap();
    assert_eq!(&head[9..12], b"413");
}

/// RFC 9112 §9.6: a client may close its sending side (TCP half-close,
/// `shutdown(SHUT_WR)`) once its request is complete and still read the
/// answer, on a keep-alive connection: a route hyper serves (`/healthz`), a
/// PKCSReq POST, and a GetCACaps the fast path answers. The server then
/// closes the connection.
fn half_closed_requests_are_answered(s: &mut Server) {
    let half_closed = |request: &[u8]| {
        let mut stream = s.connect();
        stream.write_all(request).unwrap();
        stream.shutdown(std::net::Shutdown::Write).unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).unwrap();
        raw
    };
    for head in
        ["GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", "GET /scep?operation=GetCACaps HTTP/1.1\r\nHost: x\r\n\r\n"]
    {
        let raw = half_closed(head.as_bytes());
        let text = String::from_utf8_lossy(&raw);
        assert!(text.starts_with("HTTP/1.1 200 "), "{:?} {head:?}: {text:?}\n{}", s.transport, s.log());
    }
    let ca = s.client().get_ca_cert().unwrap();
    let key = DeviceKey::pregenerated(8).unwrap();
    let req = pkcs_req(&key, "conf-half-close", CHALLENGE, &ca, &MessageOptions::default());
    let head = format!(
        "POST /scep?operation=PKIOperation HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-pki-message\r\nContent-Length: {}\r\n\r\n",
        req.der.len()
    );
    let raw = half_closed(&[head.as_bytes(), &req.der].concat());
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("{:?}: no answer to a half-closed PKCSReq: {raw:?}\n{}", s.transport, s.log()));
    assert!(raw.starts_with(b"HTTP/1.1 200 "), "{:?}: {:?}", s.transport, String::from_utf8_lossy(&raw[..split]));
    let rep = verify_cert_rep(&raw[split + 4..], &req, &key, &ca.certificates).unwrap();
    assert_eq!(rep.status, PkiStatus::SUCCESS);
    // A request that ends early is not waited for: closed at once, on the
    // fast path (a partial head) and in hyper (a body shorter than declared),
    // well before header_read_timeout (10 s) or body_read_timeout.
    for partial in [
        "GET /scep?operation=GetCACaps HTTP/1.1\r\nHost: x\r\n".to_string(),
        format!("{head}{}", "A".repeat(10))
            .replace(&format!("Content-Length: {}", req.der.len()), "Content-Length: 100"),
    ] {
        let started = std::time::Instant::now();
        let raw = half_closed(partial.as_bytes());
        let took = started.elapsed();
        assert!(took < Duration::from_secs(3), "{:?} {partial:?}: open {took:?}", s.transport);
        assert!(!raw.starts_with(b"HTTP/1.1 2"), "{:?} {partial:?}: {:?}", s.transport, String::from_utf8_lossy(&raw));
    }
}

/// SIGHUP reloads (here: the bootstrap state) and the server keeps serving.
fn sighup_survives(s: &mut Server) {
    let before = s.client().get("GetCACaps", None).unwrap().body;
    for _ in 0..3 {
        s.scepd.signal(Signal::Hup).unwrap();
        std::thread::sleep(Duration::from_millis(200));
    }
    let after = s.client().get("GetCACaps", None).unwrap();
    assert_eq!(after.status, 200, "{:?}\n{}", s.transport, s.log());
    assert_eq!(after.body, before);
    assert!(s.log().contains("SIGHUP"), "{:?}: SIGHUP not logged\n{}", s.transport, s.log());
    let key = DeviceKey::pregenerated(6).unwrap();
    let e = s
        .client()
        .enroll(&key, &CsrSpec::new("conf-hup", Some(CHALLENGE)), &MessageOptions::default(), PkiMethod::Post)
        .unwrap();
    assert_eq!(e.reply.status, PkiStatus::SUCCESS);
}

/// SIGTERM: a PKCSReq whose body is still arriving is answered with a valid
/// CertRep, then scepd exits 0.
fn sigterm_answers_in_flight_and_exits_0(s: &mut Server) {
    let ca = s.client().get_ca_cert().unwrap();
    let key = DeviceKey::pregenerated(7).unwrap();
    let req = pkcs_req(&key, "conf-term", CHALLENGE, &ca, &MessageOptions::default());
    let mut stream = s.connect();
    write!(
        stream,
        "POST /scep?operation=PKIOperation HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-pki-message\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        req.der.len()
    )
    .unwrap();
    let half = req.der.len() / 2;
    stream.write_all(&req.der[..half]).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    s.scepd.signal(Signal::Term).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    stream.write_all(&req.der[half..]).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    assert!(head.starts_with("HTTP/1.1 200"), "{:?}: {head}", s.transport);
    let rep = verify_cert_rep(&raw[split + 4..], &req, &key, &ca.certificates).unwrap();
    assert_eq!(rep.status, PkiStatus::SUCCESS);

    s.assert_exits_0(Duration::from_secs(20));
}

/// One response from a keep-alive connection (read up to its `content-length`): (status, head, body).
fn read_one(s: &mut TcpStream) -> (u16, String, Vec<u8>) {
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    while !raw.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).unwrap();
        raw.push(byte[0]);
    }
    let head = String::from_utf8(raw).unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
        .unwrap_or_else(|| panic!("no content-length in {head}"));
    let mut body = vec![0; length];
    s.read_exact(&mut body).unwrap();
    (head.split(' ').nth(1).unwrap().parse().unwrap(), head, body)
}

/// SIGTERM closes keep-alive connections that wait for their next request at
/// once (not after `shutdown_grace`), and scepd exits 0.
fn sigterm_closes_idle_keep_alive_connections(s: &mut Server) {
    let mut idle = s.connect();
    write!(idle, "GET /scep?operation=GetCACaps HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert_eq!(read_one(&mut idle).0, 200);
    s.scepd.signal(Signal::Term).unwrap();
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    idle.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "{:?}: {rest:?}", s.transport);
    // At once, not when the 10 s header_read_timeout would close it anyway.
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "{:?}: the idle connection stayed open {took:?}", s.transport);
    s.assert_exits_0(Duration::from_secs(10)); // shutdown_grace is 30 s
}

/// SIGTERM while request heads are arriving: each is answered, with
/// `connection: close`, and then the connection ends; scepd exits 0. One is a
/// discovery GET (the fast path's), one is not (hyper's).
fn sigterm_finishes_request_heads_under_way(s: &mut Server) {
    let heads = ["GET /scep?operation=GetCACaps HTTP/1.1\r\nHost: x\r\n", "GET /healthz HTTP/1.1\r\nHost: x\r\n"];
    let mut streams: Vec<TcpStream> = heads
        .iter()
        .map(|head| {
            let mut stream = s.connect();
            stream.write_all(head.as_bytes()).unwrap();
            stream
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    s.scepd.signal(Signal::Term).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    for (stream, head) in streams.iter_mut().zip(heads) {
        stream.write_all(b"\r\n").unwrap();
        let (status, text) = read_response(stream);
        assert_eq!(status, 200, "{:?} {head:?}: {text}", s.transport);
        assert!(text.contains("connection: close\r\n"), "{:?} {head:?}: {text}", s.transport);
    }
    s.assert_exits_0(Duration::from_secs(20));
}

/// A request head that does not complete within `header_read_timeout_secs`
/// closes the connection (slowloris), on the first request of a connection and
/// on a keep-alive one; complete requests before it are answered.
#[test]
fn slow_request_heads_are_cut_off_on_both_transports() {
    for transport in [Transport::Tokio, Transport::Smol] {
        let config = format!(
            "[server]\ndata_dir = \"data\"\nheader_read_timeout_secs = 1\n\n\
             [[profile]]\nname = \"corp\"\nchallenge_password = \"{CHALLENGE}\"\n"
        );
        let opts = ScepdOptions { startup_timeout: WAIT, ..ScepdOptions::with_config(config).on(transport) };
        let scepd = Scepd::start(opts).unwrap_or_else(|e| panic!("{transport:?}: {e}"));
        let server = Server { scepd, transport };
        for keep_alive_first in [false, true] {
            let mut s = server.connect();
            if keep_alive_first {
                write!(s, "GET /scep?operation=GetCACaps HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
                assert_eq!(read_one(&mut s).0, 200, "{transport:?}");
            }
            let started = std::time::Instant::now();
            s.write_all(b"GET /scep?operation=GetCA").unwrap();
            let mut rest = Vec::new();
            // EOF (or a reset) well before the 20 s read timeout of `connect`.
            let _ = s.read_to_end(&mut rest);
            let took = started.elapsed();
            assert!(took < Duration::from_secs(10), "{transport:?}: connection open for {took:?}");
            assert!(!rest.starts_with(b"HTTP/1.1 200"), "{transport:?}: {rest:?}");
        }
    }
}

/// The transports answer the non-cryptographic routes byte for byte alike.
#[test]
fn transports_answer_alike() {
    let (t, m) = (Server::start(Transport::Tokio), Server::start(Transport::Smol));
    for target in [
        "/scep?operation=GetCACaps",
        "/nope",
        "/healthz",
        "/scep?operation=Bogus",
        "/certsrv/mscep/mscep.dll/pkiclient.exe?operation=GetCACaps",
        "/CERTSRV/mscep/mscep.dll?operation=GetCACaps",
        "/certsrv/mscep/nope.dll?operation=GetCACaps",
    ] {
        let head = format!("GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let strip_date = |text: String| -> String {
            text.lines().filter(|l| !l.to_ascii_lowercase().starts_with("date:")).collect::<Vec<_>>().join("\n")
        };
        let (a, b) = (t.raw(&head, b""), m.raw(&head, b""));
        assert_eq!(a.0, b.0, "{target}");
        assert_eq!(strip_date(a.1), strip_date(b.1), "{target}");
    }
    // Pipelined on one keep-alive connection: both answer the two discovery
    // GETs on the fast path (scep_service::http::fast_path) and hand the connection
    // to hyper at /healthz, which serves the rest.
    let pipelined = "GET /scep?operation=GetCACaps HTTP/1.1\r\nHost: x\r\n\r\n\
         GET /scep/default/pkiclient.exe?operation=GetCACaps&message=x HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n\
         GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n\
         GET /scep?operation=GetCACaps HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let without_dates = |raw: String| -> String {
        raw.split("\r\n").filter(|l| !l.starts_with("date: ")).collect::<Vec<_>>().join("\r\n")
    };
    let (a, b) = (t.raw(pipelined, b""), m.raw(pipelined, b""));
    let answers: Vec<&str> = a.1.split("HTTP/1.1 ").skip(1).collect();
    assert_eq!(answers.len(), 4, "{}", a.1);
    // The fast path's bytes are hyper's: the first GetCACaps (fast path) and
    // the last (hyper, after the hand-off) differ only in `connection: close`.
    assert_eq!(
        without_dates(answers[0].to_string()),
        without_dates(answers[3].replace("connection: close\r\n", "")),
        "{}",
        a.1
    );
    assert_eq!(without_dates(a.1), without_dates(b.1));
}
