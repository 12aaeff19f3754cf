//! Connection-level hostile clients against the running binary (issue 13,
//! items 1-3), on both transports.
//!
//! Attackers connect from other loopback addresses (127.0.0.2, 127.0.1.2 ...:
//! Linux routes all of 127/8 to `lo`) while a legitimate client on 127.0.0.1
//! is measured: under each attack its GetCACaps is answered within a second,
//! and the server closes the attackers' connections on its own within its
//! configured (short) timeouts. Each scenario checks the counters `/metrics`
//! shows an operator for it.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use scep_tests::server::{Scepd, ScepdOptions, Transport};
use socket2::{Domain, Protocol, Socket, Type};

/// The legitimate client's bound on a GetCACaps under attack.
const LEGIT_BOUND: Duration = Duration::from_secs(1);
/// Slack on top of a configured timeout before a close counts as late
/// (timer granularity, a loaded 2-core machine).
const SLACK: Duration = Duration::from_millis(2500);

/// The HTTP/2 client connection preface (RFC 9113 §3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An empty SETTINGS frame (RFC 9113 §6.5).
const SETTINGS: &[u8] = &[0, 0, 0, 0x4, 0, 0, 0, 0, 0];
/// A HEADERS frame on stream 1 with END_STREAM but without END_HEADERS
/// (RFC 9113 §6.2): its header block never ends. One HPACK byte, `:method: GET`.
const HEADERS_UNFINISHED: &[u8] = &[0, 0, 1, 0x1, 0x1, 0, 0, 0, 1, 0x82];

fn ip(a: u8, b: u8, c: u8, d: u8) -> Ipv4Addr {
    Ipv4Addr::new(a, b, c, d)
}

/// The open-file limit must hold the attack's sockets (a low limit would
/// make the test measure itself).
fn require_fds(needed: u64) {
    let limits = std::fs::read_to_string("/proc/self/limits").expect("read /proc/self/limits");
    let soft = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(u64::MAX);
    assert!(soft >= needed, "this test opens about {needed} sockets; raise `ulimit -n` (now {soft})");
}

/// A TCP connection from `from` to the server on 127.0.0.1:`port`.
fn connect_from(from: Ipv4Addr, port: u16, small_buffers: bool) -> TcpStream {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).expect("socket");
    if small_buffers {
        socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
        socket.set_send_buffer_size(4096).expect("SO_SNDBUF");
    }
    socket.bind(&SocketAddr::from((from, 0)).into()).unwrap_or_else(|e| panic!("bind {from}: {e}"));
    socket
        .connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)).into(), Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect from {from}: {e}"));
    socket.into()
}

/// Reads (and discards what the server sends) until the server closes the
/// connection or `deadline` passes: when it was seen closed.
fn wait_closed<S: Read>(stream: &mut S, set_timeout: impl Fn(Duration), deadline: Instant) -> Option<Instant> {
    set_timeout(Duration::from_millis(50));
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Some(Instant::now()),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => return Some(Instant::now()),
        }
        if Instant::now() >= deadline {
            return None;
        }
    }
}

fn wait_tcp_closed(stream: &TcpStream, deadline: Instant) -> Option<Instant> {
    let mut reader = stream;
    wait_closed(&mut reader, |t| stream.set_read_timeout(Some(t)).expect("timeout"), deadline)
}

/// True when the server has closed `stream` (checked within `within`).
fn is_closed(stream: &TcpStream, within: Duration) -> bool {
    wait_tcp_closed(stream, Instant::now() + within).is_some()
}

/// One HTTP/1.1 request from 127.0.0.1 on a fresh connection, over TLS when
/// `tls` is given: (status line, body, time taken).
fn request(port: u16, tls: Option<&Arc<ClientConfig>>, target: &str) -> (String, String, Duration) {
    try_request(port, tls, target).unwrap_or_else(|e| panic!("legitimate request {target}: {e}"))
}

/// [`request`], with a failure to connect or an empty answer as an error.
fn try_request(port: u16, tls: Option<&Arc<ClientConfig>>, target: &str) -> Result<(String, String, Duration), String> {
    let started = Instant::now();
    let tcp = TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), Duration::from_secs(5))
        .map_err(|e| format!("cannot connect: {e}"))?;
    tcp.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let text = format!("GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let mut response = Vec::new();
    let read = match tls {
        None => {
            let mut tcp = tcp;
            tcp.write_all(text.as_bytes()).and_then(|()| tcp.read_to_end(&mut response))
        }
        Some(config) => {
            let conn = ClientConnection::new(config.clone(), ServerName::try_from("localhost").expect("name"))
                .expect("TLS client");
            let mut stream = StreamOwned::new(conn, tcp);
            stream.write_all(text.as_bytes()).and_then(|()| stream.read_to_end(&mut response))
        }
    };
    if response.is_empty() {
        return Err(match read {
            Err(e) => e.to_string(),
            Ok(_) => "closed without an answer".to_string(),
        });
    }
    let response = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    Ok((head.lines().next().unwrap_or("").to_string(), body.to_string(), started.elapsed()))
}

/// A legitimate GetCACaps from 127.0.0.1 is answered 200 within [`LEGIT_BOUND`].
fn assert_legit_answered(server: &Scepd, tls: Option<&Arc<ClientConfig>>, during: &str) {
    let (status, body, took) = request(server.port(), tls, "/scep?operation=GetCACaps");
    assert!(status.contains(" 200 "), "{during}: GetCACaps answered {status:?}\n{}", server.log_tail(20));
    assert!(body.contains("POSTPKIOperation"), "{during}: GetCACaps body {body:?}");
    assert!(took < LEGIT_BOUND, "{during}: a legitimate GetCACaps took {took:?}");
}

/// The value of one metric series in `/metrics`.
fn metric(server: &Scepd, tls: Option<&Arc<ClientConfig>>, series: &str) -> u64 {
    let (status, body, _) = request(server.port(), tls, "/metrics");
    assert!(status.contains(" 200 "), "/metrics answered {status:?}");
    body.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no {series} in /metrics:\n{body}"))
}

fn start(transport: Transport, server_toml: &str) -> Scepd {
    Scepd::start(
        ScepdOptions::with_config(format!(
            "{server_toml}\n[[profile]]\nname = \"corp\"\nchallenge_password = \"hostile-test-secret\"\n"
        ))
        .on(transport),
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

/// How one HTTP/2 attack connection behaves after connecting.
#[derive(Clone, Copy, Debug)]
enum H2Attack {
    /// Sends nothing at all.
    Nothing,
    /// The first 16 bytes of the preface, `PRI * HTTP/2.0\r\n`.
    PartialPreface,
    /// The whole preface.
    Preface,
    /// The preface and a SETTINGS frame.
    PrefaceSettings,
    /// The preface, SETTINGS, and a HEADERS frame whose header block never ends.
    UnfinishedHeaders,
}

impl H2Attack {
    const ALL: [Self; 5] =
        [Self::Nothing, Self::PartialPreface, Self::Preface, Self::PrefaceSettings, Self::UnfinishedHeaders];

    fn bytes(self) -> Vec<u8> {
        match self {
            Self::Nothing => Vec::new(),
            Self::PartialPreface => PREFACE[..16].to_vec(),
            Self::Preface => PREFACE.to_vec(),
            Self::PrefaceSettings => [PREFACE, SETTINGS].concat(),
            Self::UnfinishedHeaders => [PREFACE, SETTINGS, HEADERS_UNFINISHED].concat(),
        }
    }
}

/// Attack connections per variant.
const H2_SOCKETS_PER_VARIANT: usize = 40;
/// `header_read_timeout_secs` in the HTTP/2 scenarios.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);

scep_tests::on_each_transport!(
    h2c_connections_without_a_request_are_closed,
    h2_over_tls_connections_without_a_request_are_closed
);

/// Issue 13 item 1, h2c: every preface variant is closed within
/// `header_read_timeout` (our request deadline; a graceful GOAWAY first, with a
/// second's grace), not before, while a legitimate client is served.
fn h2c_connections_without_a_request_are_closed(transport: Transport) {
    require_fds(1024);
    let server = start(
        transport,
        "[server]\nheader_read_timeout_secs = 1\nmax_connections = 512\nmax_connections_per_client = 64\nh2_keep_alive_interval_secs = 600\n",
    );
    let port = server.port();
    let opened = Instant::now();
    let mut attackers: Vec<(H2Attack, TcpStream)> = Vec::new();
    for (i, variant) in H2Attack::ALL.into_iter().enumerate() {
        let from = ip(127, 0, 0, 2 + u8::try_from(i).expect("few variants"));
        for _ in 0..H2_SOCKETS_PER_VARIANT {
            let mut s = connect_from(from, port, false);
            s.write_all(&variant.bytes()).expect("attack bytes");
            attackers.push((variant, s));
        }
    }
    assert_legit_answered(&server, None, "h2c attack");
    // Still open half-way through its timeout: the close is the timeout's, not a refusal.
    let probe_opened = Instant::now();
    let mut probe = connect_from(ip(127, 0, 0, 9), port, false);
    probe.write_all(&H2Attack::PrefaceSettings.bytes()).expect("attack bytes");
    std::thread::sleep(REQUEST_TIMEOUT / 2);
    assert_legit_answered(&server, None, "h2c attack");
    assert!(
        probe_opened.elapsed() >= REQUEST_TIMEOUT || !is_closed(&probe, Duration::from_millis(10)),
        "{transport:?}: an h2c connection was closed before header_read_timeout"
    );
    attackers.push((H2Attack::PrefaceSettings, probe));

    let deadline = opened + 2 * REQUEST_TIMEOUT + SLACK;
    for (variant, s) in &mut attackers {
        let closed = wait_tcp_closed(s, deadline);
        assert!(
            closed.is_some(),
            "{transport:?}: an h2c {variant:?} connection still open after {:?}",
            deadline - opened
        );
    }
    assert_legit_answered(&server, None, "after the h2c attack");
    let closed = metric(&server, None, "scepd_connections_closed_total{reason=\"request_timeout\"}");
    assert!(closed >= attackers.len() as u64, "request_timeout closes counted: {closed} < {}", attackers.len());
}

/// A CA and a `localhost` server certificate in `dir`
/// ([`scep_tests::tls::server_certificate`]); the CA in DER for the client.
fn tls_files(dir: &Path) -> CertificateDer<'static> {
    CertificateDer::from(scep_tests::tls::server_certificate(dir).ca_der)
}

fn client_config(ca: &CertificateDer<'static>, alpn: &[u8]) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone()).expect("CA");
    let mut config = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    Arc::new(config)
}

/// Issue 13 item 1, TLS: a handshake never started is closed within
/// `header_read_timeout`; a connection that completes TLS with ALPN h2 and then
/// sends nothing, only the preface, or a header block that never ends, is
/// closed by the request deadline.
fn h2_over_tls_connections_without_a_request_are_closed(transport: Transport) {
    require_fds(512);
    let certs = tempfile::tempdir().expect("tempdir");
    let ca = tls_files(certs.path());
    let toml = format!(
        "[server]\nheader_read_timeout_secs = 1\nmax_connections = 256\nmax_connections_per_client = 64\nh2_keep_alive_interval_secs = 600\n[server.tls]\ncert = \"{}\"\nkey = \"{}\"\n",
        certs.path().join("server.pem").display(),
        certs.path().join("server.key").display()
    );
    let server = start(transport, &toml);
    assert!(server.base_url().starts_with("https://"), "{}", server.base_url());
    let port = server.port();
    let legit = client_config(&ca, b"http/1.1");
    let h2 = client_config(&ca, b"h2");

    let opened = Instant::now();
    // No handshake at all.
    let mut silent: Vec<TcpStream> = (0..20).map(|_| connect_from(ip(127, 0, 0, 2), port, false)).collect();
    // TLS with ALPN h2, then nothing / the preface / an unfinished header block.
    let mut tls_attackers = Vec::new();
    for (i, payload) in
        [Vec::new(), PREFACE.to_vec(), [PREFACE, SETTINGS, HEADERS_UNFINISHED].concat()].iter().enumerate()
    {
        let from = ip(127, 0, 0, 3 + u8::try_from(i).expect("three"));
        for _ in 0..10 {
            let tcp = connect_from(from, port, false);
            tcp.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
            let conn =
                ClientConnection::new(h2.clone(), ServerName::try_from("localhost").expect("name")).expect("TLS");
            let mut stream = StreamOwned::new(conn, tcp);
            while stream.conn.is_handshaking() {
                stream.conn.complete_io(&mut stream.sock).expect("TLS handshake with ALPN h2");
            }
            assert_eq!(stream.conn.alpn_protocol(), Some(b"h2".as_slice()), "the server chose h2");
            stream.write_all(payload).expect("attack bytes");
            stream.flush().expect("flush");
            tls_attackers.push((i, stream));
        }
    }
    assert_legit_answered(&server, Some(&legit), "TLS attack");

    let deadline = opened + 2 * REQUEST_TIMEOUT + SLACK + Duration::from_secs(1);
    for s in &mut silent {
        assert!(
            wait_tcp_closed(s, deadline).is_some(),
            "{transport:?}: a connection without a TLS handshake still open"
        );
    }
    for (i, s) in &mut tls_attackers {
        let clone = s.sock.try_clone().expect("clone");
        let closed = wait_closed(s, |t| clone.set_read_timeout(Some(t)).expect("timeout"), deadline);
        assert!(
            closed.is_some(),
            "{transport:?}: a TLS+h2 connection (variant {i}) still open after {:?}",
            deadline - opened
        );
    }
    assert_legit_answered(&server, Some(&legit), "after the TLS attack");
    let handshakes = metric(&server, Some(&legit), "scepd_connections_closed_total{reason=\"tls_handshake_timeout\"}");
    assert!(handshakes >= silent.len() as u64, "TLS handshake timeouts counted: {handshakes}");
    let requests = metric(&server, Some(&legit), "scepd_connections_closed_total{reason=\"request_timeout\"}");
    assert!(requests >= tls_attackers.len() as u64, "request timeouts counted: {requests}");
}

scep_tests::on_each_transport!(h2_keep_alive_closes_a_peer_that_does_not_answer_pings);

/// Issue 13 item 1, hyper's own mechanism: with a long request deadline, an
/// h2c peer that never acknowledges PING is closed by the keep-alive
/// (`h2_keep_alive_interval_secs` + `h2_keep_alive_timeout_secs`), after the
/// server has sent a PING frame.
fn h2_keep_alive_closes_a_peer_that_does_not_answer_pings(transport: Transport) {
    let server = start(
        transport,
        "[server]\nheader_read_timeout_secs = 60\nh2_keep_alive_interval_secs = 1\nh2_keep_alive_timeout_secs = 1\n",
    );
    let opened = Instant::now();
    let mut s = connect_from(ip(127, 0, 0, 2), server.port(), false);
    s.write_all(&[PREFACE, SETTINGS].concat()).expect("preface");
    s.set_read_timeout(Some(Duration::from_millis(100))).expect("timeout");
    let deadline = opened + Duration::from_secs(2) + SLACK;
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = loop {
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => break true,
        }
        if Instant::now() >= deadline {
            break false;
        }
    };
    assert!(closed, "{transport:?}: a peer ignoring PINGs still connected after {:?}", deadline - opened);
    // Frame types the server sent (RFC 9113 §4.1: 9-byte header, type at offset 3).
    let mut types = Vec::new();
    let mut at = 0;
    while at + 9 <= received.len() {
        let len = usize::from(received[at]) << 16 | usize::from(received[at + 1]) << 8 | usize::from(received[at + 2]);
        types.push(received[at + 3]);
        at += 9 + len;
    }
    assert!(types.contains(&0x6), "{transport:?}: no PING frame before the close (frame types {types:?})");
    assert_legit_answered(&server, None, "after the keep-alive close");
    let hyper = metric(&server, None, "scepd_connections_closed_total{reason=\"hyper_timeout\"}");
    assert!(hyper >= 1, "the keep-alive close is counted");
}

/// A request the fast path answers itself, and one it hands to hyper (a
/// chunked, empty body): the write timeout must hold on both paths.
const FAST_PATH_REQUEST: &str = "GET /scep?operation=GetCACert HTTP/1.1\r\nHost: a\r\n\r\n";
const HYPER_REQUEST: &str =
    "GET /scep?operation=GetCACert HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
/// `write_timeout_secs` in the pipelining scenario.
const WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// Pipelines `request` on `s` without ever reading, until the socket takes
/// nothing for 300 ms: when it stalled.
fn pipeline_until_stalled(s: &mut TcpStream, request: &str, deadline: Instant) -> Instant {
    let batch = request.repeat(64).into_bytes();
    s.set_nonblocking(true).expect("nonblocking");
    let mut offset = 0;
    let mut progress = Instant::now();
    loop {
        match s.write(&batch[offset..]) {
            Ok(n) => {
                offset = (offset + n) % batch.len();
                progress = Instant::now();
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if progress.elapsed() >= Duration::from_millis(300) {
                    return progress;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("the server closed a pipelining connection before it stalled: {e}"),
        }
        assert!(Instant::now() < deadline, "a non-reading pipeliner never filled the buffers");
    }
}

/// True once the server has closed (reset) a stalled pipelining connection.
fn pipeliner_closed(s: &mut TcpStream) -> bool {
    if matches!(s.take_error(), Ok(Some(_))) {
        return true;
    }
    match s.write(b"G") {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}

scep_tests::on_each_transport!(a_pipelining_client_that_never_reads_is_closed_by_the_write_timeout);

/// Issue 13 item 2: connections that pipeline GetCACert and never read, on the
/// fast path and on hyper, lose their connection within `write_timeout` of
/// the buffers filling, while a legitimate client is served throughout.
fn a_pipelining_client_that_never_reads_is_closed_by_the_write_timeout(transport: Transport) {
    let server =
        start(transport, "[server]\nwrite_timeout_secs = 1\nheader_read_timeout_secs = 30\nmax_connections = 64\n");
    let port = server.port();
    let bound = Instant::now() + Duration::from_secs(60);
    let mut attackers = Vec::new();
    for i in 0..8u8 {
        let request = if i % 2 == 0 { FAST_PATH_REQUEST } else { HYPER_REQUEST };
        let mut s = connect_from(ip(127, 0, 0, 2 + i / 2), port, true);
        let stalled = pipeline_until_stalled(&mut s, request, bound);
        attackers.push((request, s, stalled));
    }
    assert_legit_answered(&server, None, "pipelining attack");
    for (request, s, stalled) in &mut attackers {
        // The server's write stalls some time after the client's does: it first
        // answers what its receive buffer holds, into a send buffer the kernel
        // may have grown to megabytes (a debug build on a loaded machine takes
        // seconds for that), hence the wider bound.
        let deadline = *stalled + WRITE_TIMEOUT + 2 * SLACK;
        // Checked at least once: the later ones stalled while the first was being filled.
        let closed = loop {
            if pipeliner_closed(s) {
                break true;
            }
            if Instant::now() >= deadline {
                break false;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let path = if *request == FAST_PATH_REQUEST { "fast path" } else { "hyper" };
        assert!(closed, "{transport:?}: a non-reading pipeliner ({path}) kept its connection past write_timeout");
    }
    assert_legit_answered(&server, None, "after the pipelining attack");
    let timeouts = metric(&server, None, "scepd_connections_closed_total{reason=\"write_timeout\"}");
    assert!(timeouts >= attackers.len() as u64, "write timeouts counted: {timeouts}");
}

scep_tests::on_each_transport!(one_client_cannot_take_the_connection_budget);

/// Issue 13 item 3: one address holds at most `max_connections_per_client`
/// connections and one /24 at most `max_connections_per_network`; the rest
/// are closed at once and counted by reason, while 127.0.0.1 is served. At
/// `max_connections` a new connection is refused at once too (counted
/// `global`), instead of waiting in the backlog until a slot frees.
fn one_client_cannot_take_the_connection_budget(transport: Transport) {
    require_fds(512);
    let server = start(
        transport,
        "[server]\nheader_read_timeout_secs = 30\nmax_connections = 24\nmax_connections_per_client = 4\nmax_connections_per_network = 6\n",
    );
    let port = server.port();

    // One address, 40 connections: 4 kept, 36 refused.
    let one: Vec<TcpStream> = (0..40).map(|_| connect_from(ip(127, 0, 0, 2), port, false)).collect();
    assert_legit_answered(&server, None, "one address over its share");
    let refused = one.iter().filter(|s| is_closed(s, Duration::from_millis(300))).count();
    assert_eq!(refused, 36, "{transport:?}: connections refused from one address over max_connections_per_client = 4");
    assert_eq!(metric(&server, None, "scepd_connections_refused_total{reason=\"per_client\"}"), 36);

    // One /24 from two addresses, 4 each: 6 kept, 2 refused by the network share.
    let net: Vec<TcpStream> = [ip(127, 0, 1, 2), ip(127, 0, 1, 3)]
        .iter()
        .flat_map(|from| (0..4).map(|_| connect_from(*from, port, false)).collect::<Vec<_>>())
        .collect();
    let refused = net.iter().filter(|s| is_closed(s, Duration::from_millis(300))).count();
    assert_eq!(refused, 2, "{transport:?}: connections refused from one /24 over max_connections_per_network = 6");
    assert_eq!(metric(&server, None, "scepd_connections_refused_total{reason=\"per_network\"}"), 2);
    assert_legit_answered(&server, None, "one /24 over its share");

    // Fill the rest of max_connections (24 - 4 - 6 = 14) from other networks, then one more
    // (after the legitimate client's closed connections have given their slots back).
    std::thread::sleep(Duration::from_millis(300));
    let fill: Vec<TcpStream> = (0..14u8).map(|i| connect_from(ip(127, 0, 2 + i / 4, 2 + i % 4), port, false)).collect();
    assert!(!fill.iter().any(|s| is_closed(s, Duration::from_millis(100))), "the fill is within every share");
    let started = Instant::now();
    let over = connect_from(ip(127, 0, 9, 2), port, false);
    assert!(
        is_closed(&over, Duration::from_secs(1)),
        "{transport:?}: at max_connections a new connection must be refused at once, not queued"
    );
    assert!(started.elapsed() < LEGIT_BOUND);
    // Leaving frees the slots: the legitimate client is served again, and sees the count.
    drop(fill);
    drop(one);
    drop(net);
    let deadline = Instant::now() + Duration::from_secs(5);
    let global = loop {
        if let Ok((status, body, _)) = try_request(port, None, "/metrics")
            && status.contains(" 200 ")
        {
            break body
                .lines()
                .find_map(|l| l.strip_prefix("scepd_connections_refused_total{reason=\"global\"}"))
                .and_then(|v| v.trim().parse::<u64>().ok());
        }
        assert!(Instant::now() < deadline, "slots not freed after the attackers left");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(global.is_some_and(|n| n >= 1), "global refusals counted: {global:?}");
    assert_legit_answered(&server, None, "after the attackers left");
}

scep_tests::on_each_transport!(
    an_enrolment_whose_client_leaves_at_once_is_still_recorded,
    enrolments_whose_streams_were_reset_are_recorded_across_a_shutdown,
);

const LEAVER_KEY: &str = "hostile-test-admin-key-0123456789";

/// Starts scepd with an admin key (for the audit events), on `data_dir` when given.
fn start_with_admin_key(transport: Transport, data_dir: Option<&Path>) -> Scepd {
    let mut opts = ScepdOptions::with_config(format!(
        "[[api_key]]\nname = \"ops\"\nkey = \"{LEAVER_KEY}\"\nrole = \"admin\"\n\n\
         [[profile]]\nname = \"corp\"\nchallenge_password = \"hostile-test-secret\"\n"
    ))
    .on(transport);
    opts.data_dir = data_dir.map(Path::to_path_buf);
    Scepd::start(opts).unwrap_or_else(|e| panic!("{e}"))
}

/// A whole PKCSReq for `cn` as HTTP/1.1 bytes, and its transactionID.
fn pkcsreq_bytes(ca: &scep_tests::client::CaCertificates, slot: usize, cn: &str) -> (Vec<u8>, String) {
    use scep_tests::client::{
        CsrSpec, DeviceKey, MessageBody, MessageOptions, Signer, SubjectName, build_csr, build_pki_message,
        self_signed_certificate,
    };
    let key = DeviceKey::pregenerated(slot).expect("device key");
    let csr = build_csr(&key, &CsrSpec::new(cn, Some("hostile-test-secret"))).expect("CSR");
    let signer = self_signed_certificate(&key, &SubjectName::cn(cn), 1).expect("signer certificate");
    let request = build_pki_message(
        &MessageBody::PkcsReq(csr),
        Signer { certificate: &signer, key: &key },
        ca.recipient(),
        &MessageOptions::default(),
    )
    .expect("PKCSReq");
    let mut bytes = format!(
        "POST /scep/corp?operation=PKIOperation HTTP/1.1\r\nHost: 127.0.0.1\r\n\
         Content-Type: application/x-pki-message\r\nContent-Length: {}\r\n\r\n",
        request.der.len()
    )
    .into_bytes();
    bytes.extend_from_slice(&request.der);
    (bytes, request.transaction_id)
}

/// Sends `request` from 127.0.0.7 and closes the connection at once, reading nothing.
fn send_and_leave(server: &Scepd, request: &[u8]) {
    let mut s = connect_from(ip(127, 0, 0, 7), server.port(), false);
    s.write_all(request).expect("request");
    drop(s);
}

/// The audit events of profile `corp` with `outcome`.
fn corp_events(server: &Scepd, outcome: &str) -> Vec<serde_json::Value> {
    let mut s = TcpStream::connect(("127.0.0.1", server.port())).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("read timeout");
    write!(
        s,
        "GET /api/v1/admin/scep/events?profile=corp&outcome={outcome}&limit=1000 HTTP/1.1\r\nHost: 127.0.0.1\r\n\
         Authorization: Bearer {LEAVER_KEY}\r\nConnection: close\r\n\r\n"
    )
    .expect("events request");
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("events answer");
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {raw}"));
    v["events"].as_array().cloned().unwrap_or_default()
}

/// A client that sends a whole PKCSReq and closes its connection at once (it
/// gave up, or crashed) does not cancel the request halfway: the request is
/// decided, the certificate issued and its audit event committed, as if the
/// answer had been read. Before requests ran as tasks of their own
/// (`ScepService::detaching_with`), hyper dropped the request's future when
/// it read the end of the connection: the certificate was signed and
/// recorded, but no audit event, log line or metric was ever written.
fn an_enrolment_whose_client_leaves_at_once_is_still_recorded(transport: Transport) {
    let server = start_with_admin_key(transport, None);
    let client = scep_tests::client::ScepClient::new(&server.profile_url("corp")).expect("profile URL");
    let ca = client.get_ca_cert().expect("GetCACert");
    let (request, transaction_id) = pkcsreq_bytes(&ca, 0, "left-at-once");
    send_and_leave(&server, &request);
    let deadline = Instant::now() + Duration::from_secs(20);
    let recorded = loop {
        let found: Vec<_> = corp_events(&server, "success")
            .into_iter()
            .filter(|e| e["transaction_id"] == transaction_id.as_str())
            .collect();
        if !found.is_empty() || Instant::now() > deadline {
            break found;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(recorded.len(), 1, "the enrolment must be audited although its client left:\n{}", server.log_tail(20));
    assert!(recorded[0]["serial"].is_string(), "{recorded:?}");
    assert!(recorded[0]["client_addr"].as_str().is_some_and(|a| a.starts_with("127.0.0.7")), "{recorded:?}");
}

/// An HTTP/2 frame (RFC 9113 §4.1).
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("frame size").to_be_bytes();
    [&len[1..], &[kind, flags], &stream.to_be_bytes(), payload].concat()
}

/// The HTTP/1.1 `request` of [`pkcsreq_bytes`] as HTTP/2 stream `stream`:
/// HEADERS (RFC 7541: `:method POST`, `:scheme http` indexed; `:path`,
/// `:authority`, `content-type` literal without indexing), DATA with the
/// body and END_STREAM, then RST_STREAM (CANCEL): the client gives up on it.
fn h2_post_then_reset(stream: u32, request: &[u8]) -> Vec<u8> {
    const HEADERS: u8 = 0x1;
    const DATA: u8 = 0x0;
    const RST_STREAM: u8 = 0x3;
    const END_STREAM: u8 = 0x1;
    const END_HEADERS: u8 = 0x4;
    let body_at = request.windows(4).position(|w| w == b"\r\n\r\n").expect("head") + 4;
    let literal = |index: &[u8], value: &str| {
        [index, &[u8::try_from(value.len()).expect("short value")], value.as_bytes()].concat()
    };
    let block = [
        &[0x83, 0x86][..],
        &literal(&[0x04], "/scep/corp?operation=PKIOperation"),
        &literal(&[0x01], "127.0.0.1"),
        // content-type: static table index 31 (4-bit prefix: 15, then 16).
        &literal(&[0x0f, 0x10], "application/x-pki-message"),
    ]
    .concat();
    [
        h2_frame(HEADERS, END_HEADERS, stream, &block),
        h2_frame(DATA, END_STREAM, stream, &request[body_at..]),
        h2_frame(RST_STREAM, 0, stream, &8u32.to_be_bytes()),
    ]
    .concat()
}

/// Enrolments whose HTTP/2 streams their client reset once sent (hyper then
/// drops the stream's future), followed by a SIGTERM: every certificate
/// issued has exactly one success event after a restart, and none is left to
/// the start-up reconciliation (`issued_not_delivered`). Without requests as
/// tasks of their own, a reset stream's certificate was issued with no event.
/// (The shutdown's wait for requests still being decided is rarely reached
/// here: on this machine they are usually decided before the signal.)
fn enrolments_whose_streams_were_reset_are_recorded_across_a_shutdown(transport: Transport) {
    const PREFACE_AND_SETTINGS: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";
    let mut first = start_with_admin_key(transport, None);
    let client = scep_tests::client::ScepClient::new(&first.profile_url("corp")).expect("profile URL");
    let ca = client.get_ca_cert().expect("GetCACert");
    let mut wire = PREFACE_AND_SETTINGS.to_vec();
    for i in 0..16 {
        let (request, _) = pkcsreq_bytes(&ca, i, &format!("left-{i}"));
        wire.extend(h2_post_then_reset(u32::try_from(2 * i + 1).expect("stream id"), &request));
    }
    let mut s = connect_from(ip(127, 0, 0, 7), first.port(), false);
    s.write_all(&wire).expect("requests");
    // Once the server acknowledges the SETTINGS sent before the streams, it
    // has taken them in: leave, and stop the server.
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("read timeout");
    loop {
        let mut head = [0u8; 9];
        s.read_exact(&mut head).expect("a frame from the server");
        let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
        let mut payload = vec![0u8; len];
        s.read_exact(&mut payload).expect("the frame's payload");
        if head[3] == 0x4 && head[4] & 0x1 == 0x1 {
            break;
        }
    }
    drop(s);
    first.signal(scep_tests::server::Signal::Term).expect("SIGTERM");
    let status = first.wait_exit(Duration::from_secs(60)).expect("scepd exits after SIGTERM");
    assert!(status.success(), "{status:?}\n{}", first.log_tail(20));

    let second = start_with_admin_key(transport, Some(first.data_dir()));
    let (_, issued) = {
        let mut s = TcpStream::connect(("127.0.0.1", second.port())).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).expect("read timeout");
        write!(
            s,
            "GET /api/v1/admin/scep/certificates?limit=1000 HTTP/1.1\r\nHost: 127.0.0.1\r\n\
             Authorization: Bearer {LEAVER_KEY}\r\nConnection: close\r\n\r\n"
        )
        .expect("certificates request");
        let mut raw = String::new();
        s.read_to_string(&mut raw).expect("certificates answer");
        let body = raw.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default().to_string();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {raw}"));
        (raw, v["certificates"].as_array().cloned().unwrap_or_default())
    };
    assert!(!issued.is_empty(), "no request was decided before the exit:\n{}", first.log_tail(30));
    let recorded = corp_events(&second, "success");
    for certificate in &issued {
        let serial = certificate["serial"].as_str().expect("serial");
        let events = recorded.iter().filter(|e| e["serial"] == serial).count();
        assert_eq!(
            events,
            1,
            "certificate {serial}: one success event, written before the exit:\n{}",
            first.log_tail(30)
        );
    }
    let reconciled = corp_events(&second, "issued_not_delivered");
    assert!(reconciled.is_empty(), "left to reconciliation: {reconciled:?}");
}
