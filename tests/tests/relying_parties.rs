//! Issue 17, relying parties, against the running binary on both transports:
//! a certificate enrolled with `[server] public_url` set names the CRL
//! distribution point and the OCSP and caIssuers URLs under it; `openssl ocsp`
//! and GnuTLS's `ocsptool` report it `good`; after a revocation both report
//! `revoked` with the reason, and `openssl verify -crl_check` with the CRL
//! fetched from the distribution point fails with "certificate revoked".
//! Nonces are echoed; a malformed request gets `malformedRequest`, one for
//! another CA `unauthorized`; the CRL honours conditional GETs.
//!
//! `public_url` names a front end (`http://pki.scepd.test`): the test checks
//! the URLs in the certificate against it and fetches their paths from the
//! server's own address, as a reverse proxy would. The revocation goes through
//! the local CA's revoke function on the stopped server's data directory (the
//! admin API's revoke endpoint is another branch's work); the server then
//! restarts on the same data.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use scep_engine::time::UnixTime;
use scep_engine::x509::CertificateRef;
use scep_issuers::crl::RevocationReason;
use scep_tests::client::{CsrSpec, DeviceKey, MessageOptions, PkiMethod, ScepClient, SubjectAltName};
use scep_tests::server::{Scepd, ScepdOptions, Transport};

const WAIT: Duration = Duration::from_secs(30);
const PUBLIC: &str = "http://pki.scepd.test";
const CHALLENGE: &str = "rp-secret";

fn start(transport: Transport, data_dir: Option<&Path>) -> Scepd {
    let mut opts = ScepdOptions::bootstrap(CHALLENGE).on(transport);
    opts.env.push(("CERTCTL_SCEP_PUBLIC_URL".into(), format!("{PUBLIC}/")));
    opts.data_dir = data_dir.map(Path::to_path_buf);
    opts.startup_timeout = WAIT;
    Scepd::start(opts).unwrap_or_else(|e| panic!("{transport:?}: {e}"))
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

fn ocsptool(server: &Scepd, dir: &Path, urls: &Urls) -> String {
    let url = local(server, &urls.ocsp);
    let (ok, text) =
        run(dir, "ocsptool", &[&format!("--ask={url}"), "--load-issuer", "ca.pem", "--load-cert", "leaf.pem"]);
    assert!(text.contains("Verifying OCSP Response: Success"), "ocsptool (ok={ok}): {text}");
    text
}

fn relying_parties_see_a_revocation(transport: Transport) {
    let mut server = start(transport, None);
    let dir = server.dir().to_path_buf();
    std::fs::write(dir.join("ca.pem"), server.ca_pem()).unwrap();

    // A real enrolment (the independent Rust client).
    let key = DeviceKey::generate().unwrap();
    let mut spec = CsrSpec::new("rp-device.example", Some(CHALLENGE));
    spec.subject_alt_names = vec![SubjectAltName::Dns("rp-device.example".into())];
    let e = ScepClient::new(&server.url())
        .unwrap()
        .enroll(&key, &spec, &MessageOptions::default(), PkiMethod::Post)
        .unwrap();
    let cert = e.issued().unwrap().to_vec();
    std::fs::write(dir.join("leaf.der"), &cert).unwrap();
    let (ok, text) = run(&dir, "openssl", &["x509", "-inform", "DER", "-in", "leaf.der", "-out", "leaf.pem"]);
    assert!(ok, "{text}");

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
    let text = ocsptool(&server, &dir, &urls);
    assert!(text.contains("Certificate Status: good"), "{text}");

    // GET (RFC 6960 A.1) of a nonce-less request, with RFC 5019 caching headers.
    let (ok, text) =
        run(&dir, "openssl", &["ocsp", "-issuer", "ca.pem", "-cert", "leaf.pem", "-no_nonce", "-reqout", "req.der"]);
    assert!(ok, "{text}");
    let b64 = base64_of(&std::fs::read(dir.join("req.der")).unwrap());
    let get_url = format!("{}/{}", local(&server, &urls.ocsp), b64.replace('+', "%2B").replace('/', "%2F"));
    let (ok, headers) = run(&dir, "curl", &["-sSf", "-D", "-", "-o", "resp.der", &get_url]);
    assert!(ok, "{headers}");
    assert!(headers.contains("application/ocsp-response"), "{headers}");
    assert!(headers.to_ascii_lowercase().contains("cache-control: public, max-age="), "{headers}");
    let (ok, text) = run(
        &dir,
        "openssl",
        &["ocsp", "-respin", "resp.der", "-issuer", "ca.pem", "-cert", "leaf.pem", "-CAfile", "ca.pem"],
    );
    assert!(ok && text.contains("leaf.pem: good"), "{text}");

    // The CRL: DER, caching headers, conditional GET.
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

    // Revoke (keyCompromise) through the local CA, on the stopped server's data.
    let data_dir = server.data_dir().to_path_buf();
    server.stop();
    {
        let files = scep_issuers::bootstrap(&data_dir, &scep_issuers::BootstrapOptions::default()).unwrap();
        let ca =
            scep_issuers::LocalCa::open(scep_issuers::LocalCaConfig::new(&files.ca_cert, &files.ca_key, &data_dir))
                .unwrap();
        let serial = CertificateRef::parse(&cert).unwrap().serial.to_vec();
        ca.revoke(&serial, RevocationReason::KeyCompromise, UnixTime::now()).unwrap();
    }
    let server = start(transport, Some(&data_dir));

    let text = ocsp_openssl(&server, &dir, &urls, &[]);
    assert!(text.contains("leaf.pem: revoked"), "{text}");
    assert!(text.contains("Reason: keyCompromise"), "{text}");
    let text = ocsptool(&server, &dir, &urls);
    assert!(text.contains("Certificate Status: revoked"), "{text}");
    // ocsptool prints the revocation time but not the reason: read the reason
    // from the response it printed (revocationReason [0] ENUMERATED keyCompromise).
    let pem: String = text
        .split("-----BEGIN OCSP RESPONSE-----")
        .nth(1)
        .and_then(|rest| rest.split("-----END OCSP RESPONSE-----").next())
        .unwrap_or_else(|| panic!("no response printed: {text}"))
        .split_whitespace()
        .collect();
    let der = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.decode(pem).unwrap()
    };
    assert!(der.windows(5).any(|w| w == [0xa0, 0x03, 0x0a, 0x01, 0x01]), "no keyCompromise reason in {der:02x?}");

    // The CRL from the distribution point lists it.
    let crl_url = local(&server, &urls.crl);
    let (ok, text) = run(&dir, "curl", &["-sSf", "-o", "crl.der", &crl_url]);
    assert!(ok, "{text}");
    let (ok, text) = run(&dir, "openssl", &["crl", "-inform", "DER", "-in", "crl.der", "-out", "crl.pem"]);
    assert!(ok, "{text}");
    let (ok, text) =
        run(&dir, "openssl", &["verify", "-crl_check", "-CAfile", "ca.pem", "-CRLfile", "crl.pem", "leaf.pem"]);
    assert!(!ok, "verify must fail: {text}");
    assert!(text.contains("certificate revoked"), "{text}");
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

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

scep_tests::on_each_transport!(relying_parties_see_a_revocation, responder_refusals);
