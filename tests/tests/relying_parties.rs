//! Issue 17, relying parties, against the running binary on both transports,
//! as one flow: certmonger (a real SCEP client) enrols on a server with
//! `[server] public_url` set; the certificate names the CRL distribution
//! point and the OCSP and caIssuers URLs under it; `openssl ocsp` and GnuTLS's
//! `ocsptool` report it `good` (and the nonce-less answer is now cached); an
//! admin revokes it through the admin API while scepd keeps running (a
//! `reader` key gets 403), and at once both tools report `revoked` with the
//! reason, the cached nonce-less GET answer included, and `openssl verify
//! -crl_check` with the CRL fetched from the distribution point fails with
//! "certificate revoked". After a restart on the same data it is still
//! revoked. Nonces are echoed; a malformed request gets `malformedRequest`
//! (so does one that is not DER or carries a critical extension scepd does
//! not understand), one for another CA `unauthorized`; the CRL and the
//! nonce-less OCSP GET honour conditional GETs (the OCSP answer's ETag
//! changes with the revocation), and an OCSP HEAD is answered as the GET;
//! `[server] ocsp_signer = "ca"` signs with the CA key, and a bad value is a
//! start-up error naming the setting.
//!
//! `public_url` names a front end (`http://pki.scepd.test`): the test checks
//! the URLs in the certificate against it and fetches their paths from the
//! server's own address, as a reverse proxy would.
#![allow(clippy::unwrap_used)]

use std::io::{Read as _, Write as _};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use scep_engine::x509::CertificateRef;
use scep_tests::client::{CsrSpec, DeviceKey, MessageOptions, PkiMethod, PkiStatus, ScepClient};
use scep_tests::real_clients::Certmonger;
use scep_tests::server::{Scepd, ScepdError, ScepdOptions, Signal, Transport};

const WAIT: Duration = Duration::from_secs(30);
const PUBLIC: &str = "http://pki.scepd.test";
const CHALLENGE: &str = "rp-secret";
const ADMIN_KEY: &str = "relying-parties-admin-key-0123456789";
const READER_KEY: &str = "relying-parties-reader-key-0123456789";

/// The `[server]` table's extra lines, API keys and the `corp` profile.
fn config(server_extra: &str) -> String {
    format!(
        "[server]\npublic_url = \"{PUBLIC}/\"\n{server_extra}\n\
         [[api_key]]\nname = \"ops\"\nkey = \"{ADMIN_KEY}\"\nrole = \"admin\"\n\n\
         [[api_key]]\nname = \"viewer\"\nkey = \"{READER_KEY}\"\nrole = \"reader\"\n\n\
         [[profile]]\nname = \"corp\"\nchallenge_password = \"{CHALLENGE}\"\n"
    )
}

fn start_with(transport: Transport, server_extra: &str, data_dir: Option<&Path>) -> Scepd {
    let mut opts = ScepdOptions::with_config(config(server_extra)).on(transport);
    opts.data_dir = data_dir.map(Path::to_path_buf);
    opts.startup_timeout = WAIT;
    Scepd::start(opts).unwrap_or_else(|e| panic!("{transport:?}: {e}"))
}

fn start(transport: Transport, data_dir: Option<&Path>) -> Scepd {
    start_with(transport, "", data_dir)
}

/// One HTTP request to the server: status and body.
fn http(server: &Scepd, method: &str, path: &str, key: &str, body: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", server.port())).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    (head.split(' ').nth(1).unwrap().parse().unwrap(), body.to_string())
}

/// The serial as the admin API names it: lower-case hex, no leading zero octets.
fn serial_hex(cert: &[u8]) -> String {
    let serial = CertificateRef::parse(cert).unwrap().serial;
    let start = serial.iter().position(|b| *b != 0).unwrap_or(serial.len());
    serial[start..].iter().map(|b| format!("{b:02x}")).collect()
}

/// Runs a tool, failing the test (never skipping) when it is missing.
fn run(dir: &Path, program: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{program} is required for this test (Debian: openssl, gnutls-bin, curl): {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// The URIs of the extensions relying parties follow.
fn extension_uris(cert: &[u8], oid: &[u8]) -> Vec<String> {
    let c = CertificateRef::parse(cert).unwrap();
    let (_, value) = c.extension(oid).unwrap().unwrap_or_else(|| panic!("extension {oid:02x?} missing"));
    // Every URI is a [6] IA5String somewhere inside; collect them in order.
    let mut out = Vec::new();
    let mut i = 0;
    while i + 1 < value.len() {
        if value[i] == 0x86 && usize::from(value[i + 1]) < 0x80 {
            let len = usize::from(value[i + 1]);
            if let Some(s) = value.get(i + 2..i + 2 + len) {
                out.push(String::from_utf8_lossy(s).into_owned());
                i += 2 + len;
                continue;
            }
        }
        i += 1;
    }
    out
}

/// `url` (under [`PUBLIC`]) on the server's own address.
fn local(server: &Scepd, url: &str) -> String {
    format!("{}{}", server.base_url(), url.strip_prefix(PUBLIC).unwrap_or_else(|| panic!("{url} not under {PUBLIC}")))
}

struct Urls {
    crl: String,
    ocsp: String,
    ca_issuers: String,
}

fn ocsp_openssl(server: &Scepd, dir: &Path, urls: &Urls, extra: &[&str]) -> String {
    let url = local(server, &urls.ocsp);
    let mut args = vec!["ocsp", "-issuer", "ca.pem", "-cert", "leaf.pem", "-CAfile", "ca.pem", "-url", &url];
    args.extend_from_slice(extra);
    let (ok, text) = run(dir, "openssl", &args);
    assert!(ok, "openssl ocsp failed: {text}");
    assert!(text.contains("Response verify OK"), "{text}");
    text
}

fn ocsptool(server: &Scepd, dir: &Path, urls: &Urls, extra: &[&str]) -> String {
    let url = local(server, &urls.ocsp);
    let ask = format!("--ask={url}");
    let mut args = vec![ask.as_str(), "--load-issuer", "ca.pem", "--load-cert", "leaf.pem"];
    args.extend_from_slice(extra);
    let (ok, text) = run(dir, "ocsptool", &args);
    assert!(text.contains("Verifying OCSP Response: Success"), "ocsptool (ok={ok}): {text}");
    text
}

/// The DER response `ocsptool` printed (PEM armoured).
fn ocsptool_response(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    let pem: String = text
        .split("-----BEGIN OCSP RESPONSE-----")
        .nth(1)
        .and_then(|rest| rest.split("-----END OCSP RESPONSE-----").next())
        .unwrap_or_else(|| panic!("no response printed: {text}"))
        .split_whitespace()
        .collect();
    base64::engine::general_purpose::STANDARD.decode(pem).unwrap()
}

/// `revocationReason [0] EXPLICIT CRLReason keyCompromise (1)` (RFC 6960 §4.2.1).
const KEY_COMPROMISE_REASON: [u8; 5] = [0xa0, 0x03, 0x0a, 0x01, 0x01];

/// The URL of the nonce-less GET of `req.der` (RFC 6960 A.1).
fn ocsp_get_url(server: &Scepd, dir: &Path, urls: &Urls) -> String {
    let b64 = base64_of(&std::fs::read(dir.join("req.der")).unwrap());
    format!("{}/{}", local(server, &urls.ocsp), b64.replace('+', "%2B").replace('/', "%2F"))
}

/// The nonce-less GET of `req.der` (RFC 6960 A.1): the response headers,
/// the body written to `out`.
fn ocsp_get(server: &Scepd, dir: &Path, urls: &Urls, out: &str) -> String {
    let get_url = ocsp_get_url(server, dir, urls);
    let (ok, headers) = run(dir, "curl", &["-sSf", "-D", "-", "-o", out, &get_url]);
    assert!(ok, "{headers}");
    assert!(headers.contains("application/ocsp-response"), "{headers}");
    headers
}

/// The value of header `name` in the response head `curl -D -` printed.
fn header_of(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
    })
}

/// The HTTP status of a GET of `url` with `If-None-Match: etag`.
fn conditional_get(dir: &Path, url: &str, etag: &str) -> String {
    let (ok, code) = run(
        dir,
        "curl",
        &["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-H", &format!("If-None-Match: {etag}"), url],
    );
    assert!(ok, "{code}");
    code.trim().to_string()
}

/// `openssl ocsp -respin` of a stored answer, verified against the CA.
fn read_response(dir: &Path, file: &str) -> String {
    let (ok, text) =
        run(dir, "openssl", &["ocsp", "-respin", file, "-issuer", "ca.pem", "-cert", "leaf.pem", "-CAfile", "ca.pem"]);
    assert!(ok && text.contains("Response verify OK"), "{text}");
    text
}

/// Fetches the CRL from the distribution point and runs `openssl verify -crl_check` with it.
fn verify_with_crl(server: &Scepd, dir: &Path, urls: &Urls) -> (bool, String) {
    let (ok, text) = run(dir, "curl", &["-sSf", "-o", "crl.der", &local(server, &urls.crl)]);
    assert!(ok, "{text}");
    let (ok, text) = run(dir, "openssl", &["crl", "-inform", "DER", "-in", "crl.der", "-out", "crl.pem"]);
    assert!(ok, "{text}");
    run(dir, "openssl", &["verify", "-crl_check", "-CAfile", "ca.pem", "-CRLfile", "crl.pem", "leaf.pem"])
}

/// Every relying-party check after the revocation: both tools, with and
/// without a nonce, the nonce-less GET, and the CRL.
fn assert_revoked_everywhere(server: &Scepd, dir: &Path, urls: &Urls, when: &str) {
    for extra in [&[][..], &["-no_nonce"][..]] {
        let text = ocsp_openssl(server, dir, urls, extra);
        assert!(text.contains("leaf.pem: revoked"), "{when}, openssl ocsp {extra:?}: {text}");
        assert!(text.contains("Reason: keyCompromise"), "{when}: {text}");
    }
    for extra in [&[][..], &["--nonce"][..]] {
        let text = ocsptool(server, dir, urls, extra);
        assert!(text.contains("Certificate Status: revoked"), "{when}, ocsptool {extra:?}: {text}");
        // ocsptool prints the revocation time but not the reason: read the
        // reason from the response it printed.
        let der = ocsptool_response(&text);
        assert!(der.windows(5).any(|w| w == KEY_COMPROMISE_REASON), "{when}: no keyCompromise reason in {der:02x?}");
    }
    let headers = ocsp_get(server, dir, urls, "resp-revoked.der");
    assert!(headers.to_ascii_lowercase().contains("cache-control: public, max-age="), "{headers}");
    let text = read_response(dir, "resp-revoked.der");
    assert!(text.contains("leaf.pem: revoked") && text.contains("Reason: keyCompromise"), "{when}, GET: {text}");
    let (ok, text) = verify_with_crl(server, dir, urls);
    assert!(!ok, "{when}: verify must fail: {text}");
    assert!(text.contains("certificate revoked"), "{when}: {text}");
}

fn relying_parties_see_a_revocation(transport: Transport) {
    let mut server = start(transport, None);
    let dir = server.dir().to_path_buf();
    std::fs::write(dir.join("ca.pem"), server.ca_pem()).unwrap();

    // A real client enrols: certmonger, on its defaults (what GetCACert tells it).
    let daemon = Certmonger::start().unwrap_or_else(|e| panic!("{e}"));
    daemon
        .add_scep_ca("scepd", &server.profile_url("corp"), None)
        .unwrap_or_else(|e| panic!("add-scep-ca: {e}\n--- scepd log ---\n{}", server.log_tail(20)));
    let issued = daemon
        .request("scepd", "rp-device.example", CHALLENGE, WAIT)
        .unwrap_or_else(|e| panic!("certmonger did not enrol: {e}\n--- scepd log ---\n{}", server.log_tail(20)));
    drop(daemon);
    let cert = issued.der.clone();
    std::fs::write(dir.join("leaf.pem"), &issued.pem).unwrap();

    // The certificate names the URLs under public_url.
    let crl_uris = extension_uris(&cert, scep_engine::oid::CRL_DISTRIBUTION_POINTS);
    let aia = extension_uris(&cert, scep_engine::oid::AUTHORITY_INFO_ACCESS);
    assert_eq!(crl_uris.len(), 1, "{crl_uris:?}");
    assert_eq!(aia.len(), 2, "{aia:?}");
    let urls = Urls { crl: crl_uris[0].clone(), ocsp: aia[0].clone(), ca_issuers: aia[1].clone() };
    assert!(urls.crl.starts_with(&format!("{PUBLIC}/pki/")) && urls.crl.ends_with("/crl"), "{}", urls.crl);
    assert_eq!(urls.ocsp, format!("{PUBLIC}/pki/ocsp"));
    assert!(urls.ca_issuers.ends_with("/ca.crt"), "{}", urls.ca_issuers);
    let (_, text) = run(&dir, "openssl", &["x509", "-in", "leaf.pem", "-noout", "-text"]);
    assert!(text.contains("CRL Distribution Points") && text.contains("OCSP - URI:"), "{text}");

    // caIssuers serves the CA certificate, DER.
    let (ok, text) = run(&dir, "curl", &["-sSf", "-o", "ca-aia.der", &local(&server, &urls.ca_issuers)]);
    assert!(ok, "{text}");
    let (ok, text) = run(&dir, "openssl", &["x509", "-inform", "DER", "-in", "ca-aia.der", "-noout", "-subject"]);
    assert!(ok, "{text}");

    // good, from both tools; openssl's request carries a nonce by default and it is echoed.
    let text = ocsp_openssl(&server, &dir, &urls, &[]);
    assert!(text.contains("leaf.pem: good"), "{text}");
    assert!(!text.contains("WARNING: no nonce in response"), "nonce not echoed: {text}");
    let text = ocsp_openssl(&server, &dir, &urls, &["-no_nonce"]);
    assert!(text.contains("leaf.pem: good"), "{text}");
    let text = ocsptool(&server, &dir, &urls, &[]);
    assert!(text.contains("Certificate Status: good"), "{text}");

    // GET (RFC 6960 A.1) of a nonce-less request, with RFC 5019 caching
    // headers; asked twice, the second answer is the cached one (same bytes,
    // same thisUpdate), so the revocation below must replace a cached answer.
    let (ok, text) =
        run(&dir, "openssl", &["ocsp", "-issuer", "ca.pem", "-cert", "leaf.pem", "-no_nonce", "-reqout", "req.der"]);
    assert!(ok, "{text}");
    let headers = ocsp_get(&server, &dir, &urls, "resp.der");
    assert!(headers.to_ascii_lowercase().contains("cache-control: public, max-age="), "{headers}");
    assert!(read_response(&dir, "resp.der").contains("leaf.pem: good"));
    std::thread::sleep(Duration::from_millis(1100));
    ocsp_get(&server, &dir, &urls, "resp-again.der");
    assert_eq!(
        std::fs::read(dir.join("resp.der")).unwrap(),
        std::fs::read(dir.join("resp-again.der")).unwrap(),
        "the nonce-less answer is served from the cache"
    );
    // RFC 5019 §6.2: the answer has a strong ETag, and as for the CRL a
    // conditional GET of the kept answer is 304; HEAD is answered as GET,
    // without the content (RFC 9110 §9.3.2).
    let ocsp_etag = header_of(&headers, "etag").unwrap_or_else(|| panic!("no ETag on the OCSP GET: {headers}"));
    let get_url = ocsp_get_url(&server, &dir, &urls);
    assert_eq!(conditional_get(&dir, &get_url, &ocsp_etag), "304", "conditional OCSP GET");
    let (ok, head) = run(&dir, "curl", &["-sS", "-I", &get_url]);
    assert!(ok && head.starts_with("HTTP/1.1 200"), "HEAD: {head}");
    assert_eq!(header_of(&head, "etag").as_ref(), Some(&ocsp_etag), "{head}");
    assert_eq!(header_of(&head, "content-type").as_deref(), Some("application/ocsp-response"), "{head}");

    // The CRL: DER, caching headers, conditional GET; verify passes before the revocation.
    let crl_url = local(&server, &urls.crl);
    let (ok, headers) = run(&dir, "curl", &["-sSf", "-D", "-", "-o", "crl-before.der", &crl_url]);
    assert!(ok, "{headers}");
    assert!(headers.contains("application/pkix-crl"), "{headers}");
    let etag = headers
        .lines()
        .find_map(|l| l.strip_prefix("etag: ").or_else(|| l.strip_prefix("ETag: ")))
        .unwrap_or_else(|| panic!("no ETag: {headers}"))
        .trim()
        .to_string();
    let (ok, headers) = run(
        &dir,
        "curl",
        &["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-H", &format!("If-None-Match: {etag}"), &crl_url],
    );
    assert!(ok && headers.trim() == "304", "conditional GET: {headers}");
    let (ok, text) = verify_with_crl(&server, &dir, &urls);
    assert!(ok, "verify before the revocation: {text}");

    // An admin revokes through the API, scepd running; a reader may not.
    let revoke = format!("/api/v1/admin/scep/certificates/{}/revoke", serial_hex(&cert));
    let body = r#"{"reason": "keyCompromise"}"#;
    let (status, text) = http(&server, "POST", &revoke, READER_KEY, body);
    assert_eq!(status, 403, "a reader key must not revoke: {text}");
    let (ok, text) = verify_with_crl(&server, &dir, &urls);
    assert!(ok, "the refused revocation changed nothing: {text}");
    let (status, text) = http(&server, "POST", &revoke, ADMIN_KEY, body);
    assert_eq!(status, 200, "{text}");

    // At once: no restart, and the cached nonce-less answer is replaced.
    assert_revoked_everywhere(&server, &dir, &urls, "right after the API revocation");
    assert_ne!(
        std::fs::read(dir.join("resp.der")).unwrap(),
        std::fs::read(dir.join("resp-revoked.der")).unwrap(),
        "the cached good answer must not be served after the revocation"
    );
    // The CRL changed (new number, new ETag): the old ETag no longer answers 304.
    let (_, code) = run(
        &dir,
        "curl",
        &["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-H", &format!("If-None-Match: {etag}"), &crl_url],
    );
    assert_eq!(code.trim(), "200", "the CRL was re-signed");
    // So was the OCSP answer: the old ETag gets the new answer.
    assert_eq!(conditional_get(&dir, &get_url, &ocsp_etag), "200", "the OCSP answer was re-signed");

    // /metrics counts what relying parties got (before the restart resets the counters).
    let (status, metrics) = http(&server, "GET", "/metrics", ADMIN_KEY, "");
    assert_eq!(status, 200, "{metrics}");
    let count = |line: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(line))
            .unwrap_or_else(|| panic!("no {line} in\n{metrics}"))
            .trim()
            .parse()
            .unwrap()
    };
    // 3 good (openssl with and without nonce, ocsptool), 2 GETs, a 304 and a
    // HEAD, 5 revoked, and the conditional GET after the revocation.
    assert_eq!(count("scepd_ocsp_responses_total{status=\"successful\"}"), 13, "{metrics}");
    assert_eq!(count("scepd_crl_requests_total{status=\"200\"}"), 5, "{metrics}");
    assert_eq!(count("scepd_crl_requests_total{status=\"304\"}"), 1, "{metrics}");

    // The revocation is stored: a restart on the same data still says revoked.
    let data_dir = server.data_dir().to_path_buf();
    server.stop();
    let server = start(transport, Some(&data_dir));
    assert_revoked_everywhere(&server, &dir, &urls, "after a restart");
}

/// `[server] ocsp_signer = "ca"`: the answers are signed by the CA key (no
/// responder certificate in them, responderID the CA's key hash) and verify
/// with `openssl ocsp`; the default delegated answers carry the responder
/// certificate. A value other than `delegated` or `ca` is a start-up error
/// naming the setting.
fn ocsp_signer_setting(transport: Transport) {
    let mut opts = ScepdOptions::with_config(config("ocsp_signer = \"ca-key\"")).on(transport);
    opts.startup_timeout = WAIT;
    let err = Scepd::start(opts).map(|_| ()).expect_err("a bad ocsp_signer must refuse the start");
    assert!(err.to_string().contains("server.ocsp_signer"), "{err}");

    let mut texts = Vec::new();
    for signer in ["ca", "delegated"] {
        let server = start_with(transport, &format!("ocsp_signer = \"{signer}\""), None);
        let dir = server.dir().to_path_buf();
        std::fs::write(dir.join("ca.pem"), server.ca_pem()).unwrap();
        // Any certificate of this CA will do: the CA certificate itself.
        std::fs::write(dir.join("leaf.pem"), server.ca_pem()).unwrap();
        let url = format!("{}/pki/ocsp", server.base_url());
        let (ok, text) = run(
            &dir,
            "openssl",
            &["ocsp", "-issuer", "ca.pem", "-cert", "leaf.pem", "-CAfile", "ca.pem", "-url", &url, "-resp_text"],
        );
        assert!(ok && text.contains("Response verify OK"), "{signer}: {text}");
        let (_, ski) = run(&dir, "openssl", &["x509", "-in", "ca.pem", "-noout", "-ext", "subjectKeyIdentifier"]);
        let ski = ski.lines().last().unwrap().trim().replace(':', "");
        let responder_id = text.lines().find(|l| l.contains("Responder Id:")).unwrap_or_default().to_string();
        match signer {
            "ca" => {
                assert!(responder_id.contains(&ski), "CA-signed, responderID {responder_id} is not {ski}");
                assert!(!text.contains("scepd OCSP responder"), "{text}");
            }
            _ => {
                assert!(!responder_id.contains(&ski), "delegated, responderID {responder_id}");
                assert!(text.contains("scepd OCSP responder") && text.contains("OCSP Signing"), "{text}");
            }
        }
        texts.push(responder_id);
    }
    assert_ne!(texts[0], texts[1]);
}

/// Malformed requests, another CA, and nonce echo, checked on the OCSP bytes.
fn responder_refusals(transport: Transport) {
    let server = start(transport, None);
    let dir = server.dir().to_path_buf();
    let ocsp = format!("{}/pki/ocsp", server.base_url());

    // malformedRequest (RFC 6960 §4.2.1): an OCSPResponse {1}, HTTP 200.
    std::fs::write(dir.join("junk.der"), b"\x30\x03\x02\x01\x00").unwrap();
    let (ok, _) = run(
        &dir,
        "curl",
        &[
            "-sSf",
            "-o",
            "junk-resp.der",
            "-H",
            "Content-Type: application/ocsp-request",
            "--data-binary",
            "@junk.der",
            &ocsp,
        ],
    );
    assert!(ok);
    assert_eq!(std::fs::read(dir.join("junk-resp.der")).unwrap(), [0x30, 0x03, 0x0a, 0x01, 0x01]);
    let (ok, _) = run(&dir, "curl", &["-sSf", "-o", "junk-get.der", &format!("{ocsp}/%%%%not-base64")]);
    assert!(!ok, "an undecodable GET path is an HTTP error");
    let (ok, _) = run(&dir, "curl", &["-sSf", "-o", "junk-get.der", &format!("{ocsp}/bm90IGRlcg==")]);
    assert!(ok);
    assert_eq!(std::fs::read(dir.join("junk-get.der")).unwrap(), [0x30, 0x03, 0x0a, 0x01, 0x01]);

    // malformedRequest for what OpenSSL's request becomes when it is not
    // DER (RFC 6960 Appendix A.1) or carries a critical extension scepd does
    // not understand (RFC 6960 §4.4). The request asks about the CA
    // certificate itself: as sent, it is answered (`unknown`).
    std::fs::write(dir.join("ca.pem"), server.ca_pem()).unwrap();
    let (ok, text) =
        run(&dir, "openssl", &["ocsp", "-issuer", "ca.pem", "-cert", "ca.pem", "-no_nonce", "-reqout", "req.der"]);
    assert!(ok, "{text}");
    let request = std::fs::read(dir.join("req.der")).unwrap();
    let post = |name: &str, der: &[u8]| -> Vec<u8> {
        std::fs::write(dir.join(name), der).unwrap();
        let out = format!("{name}.resp");
        let data = format!("@{name}");
        let args = ["-sSf", "-o", &out, "-H", "Content-Type: application/ocsp-request", "--data-binary", &data, &ocsp];
        let (ok, text) = run(&dir, "curl", &args);
        assert!(ok, "{text}");
        std::fs::read(dir.join(out)).unwrap()
    };
    let as_sent = post("as-sent.der", &request);
    let status = scep_engine::wire::parse_single(&as_sent).unwrap().reader().read().unwrap();
    assert_eq!(status.contents, [0], "successful: {as_sent:02x?}");
    let ca_der = scep_engine::pem::certificates(&server.ca_pem()).unwrap().remove(0);
    let serial = CertificateRef::parse(&ca_der).unwrap().serial.to_vec();
    // OCSPRequest { tbsRequest { requestList { Request { CertID { ..., serialNumber } } } } },
    // every length in short form (headers at 0, 2, 4, 6, 8); the serial last.
    let serial_at = request.len() - serial.len() - 2;
    assert_eq!(request[serial_at..serial_at + 2], [0x02, u8::try_from(serial.len()).unwrap()]);
    let padded_serial = grow(&request, serial_at + 2, &[0x00], &[0, 2, 4, 6, 8, serial_at]);
    let indefinite = [&[0x30, 0x80][..], &request[2..], &[0, 0]].concat();
    // requestExtensions after the list: one Extension of the example arc
    // (2.999.1), critical, its value an empty SEQUENCE.
    let mut critical = scep_engine::wire::Writer::new();
    critical.nested(scep_engine::wire::tag::context_constructed(2), |w| {
        w.sequence(|w| {
            w.sequence(|w| {
                w.oid(&[0x88, 0x37, 0x01]).boolean(true).octet_string(&[0x30, 0x00]);
            });
        });
    });
    let critical_extension = grow(&request, request.len(), critical.as_slice(), &[0, 2]);
    for (name, der) in
        [("padded-serial.der", padded_serial), ("indefinite.der", indefinite), ("critical.der", critical_extension)]
    {
        assert_eq!(post(name, &der), [0x30, 0x03, 0x0a, 0x01, 0x01], "{name}: malformedRequest");
    }

    // unauthorized: a certificate of another CA.
    let (ok, text) = run(
        &dir,
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "other.key",
            "-out",
            "other.pem",
            "-subj",
            "/CN=Other CA",
            "-days",
            "2",
        ],
    );
    assert!(ok, "{text}");
    let (ok, text) = run(&dir, "openssl", &["ocsp", "-issuer", "other.pem", "-cert", "other.pem", "-url", &ocsp]);
    assert!(!ok || text.contains("unauthorized"), "{text}");
    assert!(text.contains("unauthorized"), "{text}");

    // Wrong media type on POST.
    let (_, code) = run(
        &dir,
        "curl",
        &[
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-H",
            "Content-Type: text/plain",
            "--data-binary",
            "@junk.der",
            &ocsp,
        ],
    );
    assert_eq!(code.trim(), "415");
}

/// `der` with `insert` put at byte `at`, and the short-form lengths of the
/// TLVs whose headers start at `enclosing` grown to match.
fn grow(der: &[u8], at: usize, insert: &[u8], enclosing: &[usize]) -> Vec<u8> {
    let mut out = der.to_vec();
    out.splice(at..at, insert.iter().copied());
    for &header in enclosing {
        out[header + 1] += u8::try_from(insert.len()).unwrap();
        assert!(out[header + 1] < 0x80, "short-form lengths only: {der:02x?}");
    }
    out
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A profile on an `[[issuer]] type = "local"` CA: its certificates name
/// `/pki/<its ca-id>/crl` and the one OCSP URL, and both answer for that
/// CA (before the fix they answered 404 and `unauthorized`); a revocation
/// reaches its OCSP answers and its CRL. The built-in CA, serving another
/// profile, is still published beside it, and OCSP answers each CA's
/// certificate with that CA's responder.
fn a_configured_local_ca_is_published_beside_the_built_in_one(transport: Transport) {
    let keys = tempfile::tempdir().unwrap();
    scep_issuers::bootstrap(keys.path(), &scep_issuers::BootstrapOptions::default()).unwrap();
    let k = keys.path();
    // A third CA no profile issues through (any more): still published.
    let retired = tempfile::tempdir().unwrap();
    scep_issuers::bootstrap(retired.path(), &scep_issuers::BootstrapOptions::default()).unwrap();
    let toml = format!(
        "{}\n[[issuer]]\nid = \"retired-ca\"\ntype = \"local\"\nca_cert = \"{}\"\nca_key = \"{}\"\n\n\
         [[issuer]]\nid = \"branch-ca\"\ntype = \"local\"\nca_cert = \"{ca}\"\nca_key = \"{key}\"\n\n\
         [[profile]]\nname = \"branch\"\nissuer = \"branch-ca\"\nchallenge_password = \"{CHALLENGE}\"\n\
         ra_cert = \"{ra}\"\nra_key = \"{ra_key}\"\n",
        config(""),
        retired.path().join("ca.pem").display(),
        retired.path().join("ca.key").display(),
        ca = k.join("ca.pem").display(),
        key = k.join("ca.key").display(),
        ra = k.join("ra.pem").display(),
        ra_key = k.join("ra.key").display(),
    );
    let mut opts = ScepdOptions::with_config(toml).on(transport);
    opts.startup_timeout = WAIT;
    let server = Scepd::start(opts).unwrap_or_else(|e| panic!("{transport:?}: {e}"));

    // One certificate from each CA, each in its own directory with its CA as ca.pem.
    let enrol = |profile: &str, ca_pem: &str| -> (std::path::PathBuf, Vec<u8>, Urls) {
        let dir = server.dir().join(profile);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("ca.pem"), ca_pem).unwrap();
        let key = DeviceKey::generate().unwrap();
        let spec = CsrSpec::new(format!("{profile}.example"), Some(CHALLENGE));
        let rep = ScepClient::new(&server.profile_url(profile))
            .unwrap()
            .enroll(&key, &spec, &MessageOptions::default(), PkiMethod::Post)
            .unwrap_or_else(|e| panic!("{profile}: {e}\n{}", server.log_tail(20)))
            .reply;
        assert_eq!(rep.status, PkiStatus::SUCCESS, "{profile}: {:?} {:?}", rep.fail_info, rep.fail_info_text);
        let cert = rep.issued_certificate(&key).unwrap().to_vec();
        std::fs::write(dir.join("leaf.pem"), scep_engine::pem::encode("CERTIFICATE", &cert)).unwrap();
        let crl = extension_uris(&cert, scep_engine::oid::CRL_DISTRIBUTION_POINTS);
        let aia = extension_uris(&cert, scep_engine::oid::AUTHORITY_INFO_ACCESS);
        let urls = Urls { crl: crl[0].clone(), ocsp: aia[0].clone(), ca_issuers: aia[1].clone() };
        (dir, cert, urls)
    };
    let branch_ca = std::fs::read_to_string(k.join("ca.pem")).unwrap();
    let (branch, branch_cert, branch_urls) = enrol("branch", &branch_ca);
    let (corp, _, corp_urls) = enrol("corp", &server.ca_pem());
    assert_ne!(branch_urls.crl, corp_urls.crl, "each CA names its own CRL");
    assert_eq!(branch_urls.ocsp, corp_urls.ocsp, "one OCSP URL for every CA");

    // The configured CA's certificate at its caIssuers URL.
    let (ok, text) = run(&branch, "curl", &["-sSf", "-o", "ca-aia.der", &local(&server, &branch_urls.ca_issuers)]);
    assert!(ok, "caIssuers of the configured CA: {text}");
    let published = std::fs::read(branch.join("ca-aia.der")).unwrap();
    assert_eq!(published, scep_engine::pem::certificates(&branch_ca).unwrap()[0], "the configured CA's certificate");

    let retired_der = scep_engine::pem::certificates(&std::fs::read_to_string(retired.path().join("ca.pem")).unwrap())
        .unwrap()
        .remove(0);
    let retired_id = scep_issuers::x509_build::serial_hex(
        &scep_issuers::x509_build::key_identifier(CertificateRef::parse(&retired_der).unwrap().spki.raw).unwrap(),
    );
    let (ok, text) =
        run(&branch, "curl", &["-sSf", "-o", "retired.der", &format!("{}/pki/{retired_id}/ca.crt", server.base_url())]);
    assert!(ok, "a configured CA no profile uses is published: {text}");
    assert_eq!(std::fs::read(branch.join("retired.der")).unwrap(), retired_der);
    let (ok, text) =
        run(&branch, "curl", &["-sSf", "-o", "retired.crl", &format!("{}/pki/{retired_id}/crl", server.base_url())]);
    assert!(ok, "its CRL: {text}");

    // Each CA's certificate is good, answered by its own CA's responder
    // (openssl checks the answer's signature against that CA), and each CRL verifies.
    for (dir, urls) in [(&branch, &branch_urls), (&corp, &corp_urls)] {
        let text = ocsp_openssl(&server, dir, urls, &[]);
        assert!(text.contains("leaf.pem: good"), "{}: {text}", dir.display());
        let text = ocsp_openssl(&server, dir, urls, &["-no_nonce"]);
        assert!(text.contains("leaf.pem: good"), "{}: {text}", dir.display());
        let (ok, text) = verify_with_crl(&server, dir, urls);
        assert!(ok, "{}: verify with the CRL: {text}", dir.display());
    }

    // Revoked through the admin API: the configured CA's OCSP and CRL say so.
    let (ok, text) =
        run(&branch, "openssl", &["ocsp", "-issuer", "ca.pem", "-cert", "leaf.pem", "-no_nonce", "-reqout", "req.der"]);
    assert!(ok, "{text}");
    let revoke = format!("/api/v1/admin/scep/certificates/{}/revoke", serial_hex(&branch_cert));
    let (status, text) = http(&server, "POST", &revoke, ADMIN_KEY, r#"{"reason": "keyCompromise"}"#);
    assert_eq!(status, 200, "{text}");
    assert_revoked_everywhere(&server, &branch, &branch_urls, "configured CA, after the revocation");
    let text = ocsp_openssl(&server, &corp, &corp_urls, &[]);
    assert!(text.contains("leaf.pem: good"), "the built-in CA's certificate is untouched: {text}");

    // A reload reopens the configured CA; it stays published, revocation included.
    server.signal(Signal::Hup).unwrap();
    assert!(
        server.wait_for_stderr(WAIT, |log| log.contains("configuration reloaded")),
        "no reload: {}",
        server.log_tail(20)
    );
    assert_revoked_everywhere(&server, &branch, &branch_urls, "configured CA, after a reload");
    let text = ocsp_openssl(&server, &corp, &corp_urls, &[]);
    assert!(text.contains("leaf.pem: good"), "the built-in CA after the reload: {text}");
    let (ok, text) = verify_with_crl(&server, &corp, &corp_urls);
    assert!(ok, "the built-in CA's CRL after the reload: {text}");
}

/// On SQLite two local CAs with one key would each keep their own index, and
/// `/pki/` could publish only one of them: refused at start, naming the setting.
#[test]
fn two_local_cas_with_one_key_are_refused_on_sqlite() {
    let keys = tempfile::tempdir().unwrap();
    scep_issuers::bootstrap(keys.path(), &scep_issuers::BootstrapOptions::default()).unwrap();
    let (ca, key) = (keys.path().join("ca.pem"), keys.path().join("ca.key"));
    let (ra, ra_key) = (keys.path().join("ra.pem"), keys.path().join("ra.key"));
    let mut toml = String::new();
    for id in ["one-ca", "two-ca"] {
        toml.push_str(&format!(
            "[[issuer]]\nid = \"{id}\"\ntype = \"local\"\nca_cert = \"{}\"\nca_key = \"{}\"\n\n",
            ca.display(),
            key.display()
        ));
    }
    for (name, issuer) in [("one", "one-ca"), ("two", "two-ca")] {
        toml.push_str(&format!(
            "[[profile]]\nname = \"{name}\"\nissuer = \"{issuer}\"\nchallenge_password = \"{CHALLENGE}\"\n\
             ra_cert = \"{}\"\nra_key = \"{}\"\n\n",
            ra.display(),
            ra_key.display()
        ));
    }
    match Scepd::start(ScepdOptions::with_config(toml)) {
        Err(ScepdError::Startup { stderr, exit, .. }) => {
            assert!(exit.is_some_and(|s| !s.success()), "{stderr}");
            assert!(stderr.contains("issuer[two-ca].ca_key") && stderr.contains("issuer[one-ca]"), "{stderr}");
        }
        Ok(server) => panic!("started with two local CAs of one key on SQLite: {}", server.log_tail(10)),
        Err(e) => panic!("{e}"),
    }
}

scep_tests::on_each_transport!(
    relying_parties_see_a_revocation,
    responder_refusals,
    ocsp_signer_setting,
    a_configured_local_ca_is_published_beside_the_built_in_one
);
