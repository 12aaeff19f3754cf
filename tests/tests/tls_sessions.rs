//! TLS session resumption on the running binary, both transports (issue 20:
//! "session tickets and resumption on by default").
//!
//! A real rustls client, as a device's TLS stack does, connects, keeps what
//! the server gave it, and connects again: the second handshake resumes. Each
//! handshake leaves the client exactly one TLS 1.3 ticket (the server sends
//! one, not rustls's default two, `wiring/tls.rs`), and a TLS 1.2 client
//! resumes too.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rustls::client::{
    ClientSessionMemoryCache, ClientSessionStore, Resumption, Tls12ClientSessionValue, Tls13ClientSessionValue,
};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, HandshakeKind, NamedGroup, ProtocolVersion, RootCertStore, StreamOwned};
use scep_tests::server::{Scepd, ScepdOptions, Transport};

/// A client session store that counts the TLS 1.3 tickets it is given and
/// otherwise keeps sessions as rustls's own in-memory store does.
#[derive(Debug)]
struct CountingStore {
    inner: ClientSessionMemoryCache,
    tickets: AtomicUsize,
}

impl ClientSessionStore for CountingStore {
    fn set_kx_hint(&self, server_name: ServerName<'static>, group: NamedGroup) {
        self.inner.set_kx_hint(server_name, group);
    }
    fn kx_hint(&self, server_name: &ServerName<'_>) -> Option<NamedGroup> {
        self.inner.kx_hint(server_name)
    }
    fn set_tls12_session(&self, server_name: ServerName<'static>, value: Tls12ClientSessionValue) {
        self.inner.set_tls12_session(server_name, value);
    }
    fn tls12_session(&self, server_name: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        self.inner.tls12_session(server_name)
    }
    fn remove_tls12_session(&self, server_name: &ServerName<'static>) {
        self.inner.remove_tls12_session(server_name);
    }
    fn insert_tls13_ticket(&self, server_name: ServerName<'static>, value: Tls13ClientSessionValue) {
        self.tickets.fetch_add(1, Ordering::SeqCst);
        self.inner.insert_tls13_ticket(server_name, value);
    }
    fn take_tls13_ticket(&self, server_name: &ServerName<'static>) -> Option<Tls13ClientSessionValue> {
        self.inner.take_tls13_ticket(server_name)
    }
}

fn start(transport: Transport, dir: &std::path::Path) -> Scepd {
    let toml = format!(
        "[server.tls]\ncert = \"{}\"\nkey = \"{}\"\n[[profile]]\nname = \"corp\"\nchallenge_password = \"tls-sessions-secret\"\n",
        dir.join("server.pem").display(),
        dir.join("server.key").display()
    );
    Scepd::start(ScepdOptions::with_config(toml).on(transport)).unwrap_or_else(|e| panic!("{e}"))
}

fn client(
    ca: &CertificateDer<'static>,
    version: &'static rustls::SupportedProtocolVersion,
) -> (Arc<ClientConfig>, Arc<CountingStore>) {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone()).expect("CA");
    let mut config = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_protocol_versions(&[version])
        .expect("TLS version")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let store = Arc::new(CountingStore { inner: ClientSessionMemoryCache::new(16), tickets: AtomicUsize::new(0) });
    config.resumption = Resumption::store(store.clone());
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    (Arc::new(config), store)
}

/// One GetCACaps on a new connection: the handshake's kind and protocol.
fn get_ca_caps(port: u16, config: &Arc<ClientConfig>) -> (HandshakeKind, ProtocolVersion) {
    let tcp =
        TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), Duration::from_secs(5)).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let conn = ClientConnection::new(config.clone(), ServerName::try_from("localhost").expect("name")).expect("TLS");
    let mut stream = StreamOwned::new(conn, tcp);
    stream
        .write_all(b"GET /scep/corp?operation=GetCACaps HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .expect("request");
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "GetCACaps: {answer}");
    (stream.conn.handshake_kind().expect("handshake done"), stream.conn.protocol_version().expect("handshake done"))
}

/// scepd on TLS with a fresh server certificate in `dir`, and a client of
/// `version` that trusts it: (server, client, the client's session store).
fn server_and_client(
    transport: Transport,
    dir: &std::path::Path,
    version: &'static rustls::SupportedProtocolVersion,
) -> (Scepd, Arc<ClientConfig>, Arc<CountingStore>) {
    let ca = CertificateDer::from(scep_tests::tls::server_certificate(dir).ca_der);
    let server = start(transport, dir);
    let (config, store) = client(&ca, version);
    (server, config, store)
}

/// TLS 1.3: the first connection is a full handshake, each later one resumes
/// with the ticket the previous one left, and every handshake leaves one.
fn tls13_connections_resume_with_one_ticket_each(transport: Transport) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, config, store) = server_and_client(transport, dir.path(), &rustls::version::TLS13);
    assert_eq!(get_ca_caps(server.port(), &config), (HandshakeKind::Full, ProtocolVersion::TLSv1_3));
    assert_eq!(store.tickets.load(Ordering::SeqCst), 1, "tickets after the full handshake");
    for n in 2..=4 {
        assert_eq!(
            get_ca_caps(server.port(), &config),
            (HandshakeKind::Resumed, ProtocolVersion::TLSv1_3),
            "connection {n}\n{}",
            server.log_tail(20)
        );
        assert_eq!(store.tickets.load(Ordering::SeqCst), n, "one new ticket per handshake");
    }
}

/// TLS 1.2 clients resume too (a ticket, RFC 5077, or the session ID cache).
fn tls12_connections_resume(transport: Transport) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, config, _) = server_and_client(transport, dir.path(), &rustls::version::TLS12);
    assert_eq!(get_ca_caps(server.port(), &config), (HandshakeKind::Full, ProtocolVersion::TLSv1_2));
    assert_eq!(get_ca_caps(server.port(), &config), (HandshakeKind::Resumed, ProtocolVersion::TLSv1_2));
}

scep_tests::on_each_transport!(tls13_connections_resume_with_one_ticket_each, tls12_connections_resume);
