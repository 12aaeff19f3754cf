//! How the front of a connection is read, on both transports: what the
//! HTTP/1.1 fast path answers, and what TLS ALPN chose, fix the protocol
//! hyper serves the rest of the connection with (RFC 9113 §3.2-§3.4), so
//! the same bytes are never read as HTTP/1.1 by one path and HTTP/2 by
//! the other.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use scep_tests::server::{Scepd, ScepdOptions, Transport};
use scep_tests::tls::ServerTls;

/// The HTTP/2 client connection preface (RFC 9113 §3.4) and an empty SETTINGS frame (§6.5).
const PREFACE_AND_SETTINGS: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";
/// A discovery GET the fast path answers.
const CACAPS: &[u8] = b"GET /scep?operation=GetCACaps HTTP/1.1\r\nHost: localhost\r\n\r\n";

fn start(transport: Transport, tls: Option<&ServerTls>) -> Scepd {
    let tls = tls.map(ServerTls::toml_section).unwrap_or_default();
    Scepd::start(
        ScepdOptions::with_config(format!(
            "[server]\ndata_dir = \"data\"\n{tls}\n[[profile]]\nname = \"corp\"\nchallenge_password = \"framing-secret\"\n"
        ))
        .on(transport),
    )
    .unwrap_or_else(|e| panic!("{transport:?}: {e}"))
}

/// Reads what the server sends until it closes the connection, or for at
/// most `limit` (an HTTP/2 server keeps an open connection open).
fn read_for<S: Read>(stream: &mut S, set_timeout: impl Fn(Duration), limit: Duration) -> Vec<u8> {
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while let Some(left) = deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) {
        set_timeout(left.min(Duration::from_millis(200)));
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    got
}

/// `bytes` on a fresh cleartext connection: what came back.
fn exchange(port: u16, bytes: &[u8]) -> Vec<u8> {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.write_all(bytes).unwrap();
    let clone = tcp.try_clone().unwrap();
    read_for(&mut tcp, |t| clone.set_read_timeout(Some(t)).unwrap(), Duration::from_secs(3))
}

/// `bytes` on a fresh TLS connection offering only `alpn`: what came back.
fn exchange_tls(port: u16, ca: &CertificateDer<'static>, alpn: &[u8], bytes: &[u8]) -> Vec<u8> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    let mut config = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let clone = tcp.try_clone().unwrap();
    let conn = ClientConnection::new(Arc::new(config), ServerName::try_from("localhost").unwrap()).unwrap();
    let mut stream = StreamOwned::new(conn, tcp);
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock).unwrap();
    }
    assert_eq!(stream.conn.alpn_protocol(), Some(alpn), "the server chose what the client offered");
    stream.write_all(bytes).unwrap();
    stream.flush().unwrap();
    read_for(&mut stream, |t| clone.set_read_timeout(Some(t)).unwrap(), Duration::from_secs(3))
}

/// The first HTTP/1.1 response in `bytes` (read up to its `content-length`) and what follows it.
fn split_response(bytes: &[u8]) -> (&[u8], &[u8]) {
    let end = bytes.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4).unwrap_or_else(|| {
        panic!("no complete response head in {:?}", String::from_utf8_lossy(bytes));
    });
    let head = String::from_utf8_lossy(&bytes[..end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
        .unwrap_or_else(|| panic!("no content-length in {head}"));
    bytes.split_at(end + length)
}

/// True when `bytes` start with an HTTP/2 SETTINGS frame (RFC 9113 §6.5: type 0x4).
fn starts_with_h2_settings(bytes: &[u8]) -> bool {
    bytes.len() >= 9 && bytes[3] == 0x4
}

/// What an HTTP/1 server does with an HTTP/2 preface: nothing HTTP/2, and no
/// success (hyper closes the connection; a 4xx or 5xx would do as well).
fn refused_as_http1(bytes: &[u8]) -> bool {
    bytes.is_empty() || bytes.starts_with(b"HTTP/1.1 4") || bytes.starts_with(b"HTTP/1.1 5")
}

scep_tests::on_each_transport!(an_http2_preface_after_an_answered_request_is_not_http2);

/// RFC 9113 §3.4: with prior knowledge the HTTP/2 preface opens a
/// connection. After a GetCACaps the fast path answered, a preface on the
/// same connection is refused by hyper serving HTTP/1 (it closes) instead of
/// turning the connection into HTTP/2; on a fresh connection it still is
/// HTTP/2.
fn an_http2_preface_after_an_answered_request_is_not_http2(transport: Transport) {
    let server = start(transport, None);
    let got = exchange(server.port(), &[CACAPS, PREFACE_AND_SETTINGS].concat());
    assert!(got.starts_with(b"HTTP/1.1 200 "), "{transport:?}: {:?}", String::from_utf8_lossy(&got));
    let (_, rest) = split_response(&got);
    assert!(
        refused_as_http1(rest),
        "{transport:?}: after an HTTP/1.1 answer, the preface got {:?}",
        String::from_utf8_lossy(rest)
    );
    let fresh = exchange(server.port(), PREFACE_AND_SETTINGS);
    assert!(starts_with_h2_settings(&fresh), "{transport:?}: prior knowledge on a fresh connection: {fresh:?}");
}

scep_tests::on_each_transport!(tls_alpn_fixes_the_protocol);

/// Over TLS, ALPN (RFC 7301; RFC 9113 §3.2) decides: a connection that
/// chose `http/1.1` is not turned into HTTP/2 by a preface, and one
/// that chose `h2` does not answer an HTTP/1.1 request; each still serves
/// its own protocol.
fn tls_alpn_fixes_the_protocol(transport: Transport) {
    let dir = tempfile::tempdir().unwrap();
    let tls = scep_tests::tls::server_certificate(dir.path());
    let ca = CertificateDer::from(tls.ca_der.clone());
    let server = start(transport, Some(&tls));
    let port = server.port();

    let http1 = exchange_tls(port, &ca, b"http/1.1", PREFACE_AND_SETTINGS);
    assert!(refused_as_http1(&http1), "{transport:?}: ALPN http/1.1, preface: {http1:?}");
    let http1 = exchange_tls(port, &ca, b"http/1.1", CACAPS);
    assert!(http1.starts_with(b"HTTP/1.1 200 "), "{transport:?}: ALPN http/1.1, GetCACaps: {http1:?}");

    let healthz = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n";
    for request in [&healthz[..], CACAPS] {
        let h2 = exchange_tls(port, &ca, b"h2", request);
        assert!(
            !h2.starts_with(b"HTTP/1.1"),
            "{transport:?}: ALPN h2, HTTP/1.1 request answered as HTTP/1.1: {:?}",
            String::from_utf8_lossy(&h2)
        );
    }
    let h2 = exchange_tls(port, &ca, b"h2", PREFACE_AND_SETTINGS);
    assert!(starts_with_h2_settings(&h2), "{transport:?}: ALPN h2, preface: {h2:?}");
}

scep_tests::on_each_transport!(heads_that_are_not_http1_get_a_400_that_says_why);

/// A request head that is not HTTP/1.1 (RFC 9112 §2-§5) gets a 400 whose
/// body names what is wrong, then the connection closes: hyper's own 400
/// has no body. A TLS ClientHello sent to a plain-HTTP port (an `https://`
/// URL for an `http://` server) is named as such. Requests answered before
/// it on the connection keep their answers, and each refusal is counted in
/// `scepd_connections_closed_total{reason="malformed_request"}`.
fn heads_that_are_not_http1_get_a_400_that_says_why(transport: Transport) {
    let server = start(transport, None);
    let bad_header = b"GET /scep?operation=GetCACaps HTTP/1.1\r\nHost: localhost\r\nBad Header\r\n\r\n";
    let started = Instant::now();
    let got = exchange(server.port(), &[CACAPS, bad_header].concat());
    assert!(started.elapsed() < Duration::from_secs(3), "{transport:?}: the connection was not closed");
    assert!(got.starts_with(b"HTTP/1.1 200 "), "{transport:?}: {:?}", String::from_utf8_lossy(&got));
    let (_, refusal) = split_response(&got);
    let (response, after) = split_response(refusal);
    assert!(after.is_empty(), "{transport:?}: nothing after the 400: {:?}", String::from_utf8_lossy(after));
    let response = String::from_utf8_lossy(response);
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(
        head.starts_with("HTTP/1.1 400 ") && head.to_ascii_lowercase().contains("connection: close"),
        "{transport:?}: {head}"
    );
    assert!(body.starts_with("bad request: ") && body.contains("header field name"), "{transport:?}: {body:?}");

    // A real ClientHello (rustls) on the plain-HTTP port.
    let config = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth();
    let mut client = ClientConnection::new(Arc::new(config), ServerName::try_from("localhost").unwrap()).unwrap();
    let mut hello = Vec::new();
    client.write_tls(&mut hello).unwrap();
    let got = exchange(server.port(), &hello);
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 400 ") && text.contains("TLS handshake"), "{transport:?}: {text:?}");

    let metrics = String::from_utf8_lossy(&exchange(
        server.port(),
        b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    ))
    .into_owned();
    assert!(
        metrics.lines().any(|l| l == "scepd_connections_closed_total{reason=\"malformed_request\"} 2"),
        "{transport:?}: {metrics}"
    );
}
