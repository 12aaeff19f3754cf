//! TLS wiring: reads the `[server.tls]` certificate and key into the rustls
//! configuration ([`server_config`]) and builds and reloads the transports'
//! [`ReloadableTls`].

use std::path::Path;
use std::sync::Arc;

use rustls::{DistinguishedName, ServerConfig};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use scep_engine::config::ConfigError;

use crate::settings::TlsSettings;
use crate::state::{Profiles, ServiceState};
use crate::tls::ReloadableTls;
use crate::tls::client_auth::{self, OptionalClientCert};
use crate::wiring::files::{check_key_file_permissions, read_text};

impl ReloadableTls {
    /// Builds the first configuration from the state's TLS settings and
    /// profiles; `None` when TLS is not configured.
    ///
    /// # Errors
    /// As [`server_config`].
    pub fn new(state: &ServiceState) -> Result<Option<Self>, ConfigError> {
        let Some(tls) = &state.settings().tls else { return Ok(None) };
        Ok(Some(Self::with_config(server_config(tls, &state.profiles())?)))
    }

    /// Re-reads the certificate and key files (after [`ServiceState::reload`],
    /// so the mTLS hints follow the new profiles). On error the current
    /// configuration stays.
    ///
    /// # Errors
    /// As [`server_config`].
    pub fn reload(&self, state: &ServiceState) -> Result<(), ConfigError> {
        let Some(tls) = &state.settings().tls else { return Ok(()) };
        self.swap(server_config(tls, &state.profiles())?);
        Ok(())
    }
}

/// Builds the TLS server configuration: aws-lc-rs provider, TLS 1.2 and 1.3
/// (Windows SCEP clients need 1.2), ALPN `h2` then `http/1.1`. Without mTLS
/// profiles there is no client authentication (SCEP clients are anonymous at
/// the TLS layer; RFC 8894 §2.6 authenticates in the messages). When a profile
/// serves `/scep-mtls/<name>`, clients are asked for an optional certificate
/// ([`OptionalClientCert`]), hinting the mTLS bundles' CA subjects.
///
/// # Errors
/// Naming `server.tls.cert` / `server.tls.key` and the file when unreadable,
/// empty, mismatched or (key) readable by group or others.
pub fn server_config(tls: &TlsSettings, profiles: &Profiles) -> Result<Arc<ServerConfig>, ConfigError> {
    let certs = load_certs(&tls.cert)?;
    check_key_file_permissions(&tls.key, "server.tls.key")?;
    let key_text = read_text(&tls.key, "server.tls.key")?;
    let key = PrivateKeyDer::from_pem_slice(key_text.as_bytes())
        .map_err(|e| ConfigError(format!("server.tls.key: {}: {e}", tls.key.display())))?;
    let builder = ServerConfig::builder_with_provider(server_provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| ConfigError(format!("server.tls: {e}")))?;
    let mtls_hints: Option<Vec<DistinguishedName>> =
        profiles.iter().filter_map(|p| p.mtls.as_ref()).map(|m| m.subjects().to_vec()).reduce(|mut a, b| {
            a.extend(b);
            a
        });
    let builder = match mtls_hints {
        None => builder.with_no_client_auth(),
        Some(hints) => builder.with_client_cert_verifier(Arc::new(OptionalClientCert::new(hints))),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| ConfigError(format!("server.tls.key: {} does not fit the certificate: {e}", tls.key.display())))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    // The server's order of cipher suites ([`server_provider`]), not the client's.
    config.ignore_client_order = true;
    resume_sessions(&mut config)?;
    Ok(Arc::new(config))
}

/// The cipher suites the server prefers, first to last: AES-128-GCM with
/// SHA-256 before AES-256-GCM with SHA-384, as Mozilla's server-side TLS
/// guidelines order them ("intermediate"; both are 128-bit secure or more).
/// SHA-256 runs on the CPU's SHA extensions and SHA-384 does not: measured
/// with rustls clients, which offer AES-256 first, the TLS 1.3 key schedule
/// in SHA-384 was 2.5% of the server's CPU in a connection per enrolment
/// (session 7, docs/benchmarks-e2e.md). Suites not named keep their order
/// after these.
const SUITE_PREFERENCE: &[rustls::CipherSuite] = &[
    rustls::CipherSuite::TLS13_AES_128_GCM_SHA256,
    rustls::CipherSuite::TLS13_AES_256_GCM_SHA384,
    rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
    rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    rustls::CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    rustls::CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    rustls::CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
];

/// The TLS provider ([`client_auth::provider`]) with its cipher suites in
/// the server's order of preference ([`SUITE_PREFERENCE`]).
fn server_provider() -> Arc<rustls::crypto::CryptoProvider> {
    let mut provider = (*client_auth::provider()).clone();
    provider
        .cipher_suites
        .sort_by_key(|s| SUITE_PREFERENCE.iter().position(|p| *p == s.suite()).unwrap_or(SUITE_PREFERENCE.len()));
    Arc::new(provider)
}

/// TLS sessions that clients can resume (a resumed handshake costs the
/// server about a third of a full one): stateless tickets (RFC 8446 §4.6.1,
/// RFC 5077 for TLS 1.2) sealed with a key that rustls's ticketer rotates
/// every 6 hours, and a larger session-ID cache for TLS 1.2 clients that do
/// not take tickets. Tickets do not survive a restart and are not shared
/// between nodes: a client then makes one full handshake.
///
/// The pure-Rust build (`rustcrypto` feature) has no ticketer: rustls then
/// sends stateful TLS 1.3 tickets that name entries of the session cache.
fn resume_sessions(config: &mut ServerConfig) -> Result<(), ConfigError> {
    #[cfg(feature = "aws-lc")]
    {
        config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()
            .map_err(|e| ConfigError(format!("server.tls: cannot create the session ticket key: {e}")))?;
    }
    config.session_storage = rustls::server::ServerSessionMemoryCache::new(SESSION_CACHE_ENTRIES);
    // One TLS 1.3 ticket per handshake (rustls sends two by default): a
    // client uses a ticket once (RFC 8446 §C.4) and every connection, resumed
    // or not, leaves it a new one for its next. The second ticket cost the
    // server a seal and a record on every handshake.
    config.send_tls13_tickets = 1;
    Ok(())
}

/// TLS 1.2 sessions kept for resumption by session ID (a few hundred bytes each).
const SESSION_CACHE_ENTRIES: usize = 4096;

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let text = read_text(path, "server.tls.cert")?;
    let certs = CertificateDer::pem_slice_iter(text.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ConfigError(format!("server.tls.cert: {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(ConfigError(format!("server.tls.cert: {}: no CERTIFICATE block", path.display())));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TestDir;

    fn profiles(dir: &TestDir, mtls: bool) -> Profiles {
        let mut s = crate::testutil::section(dir, "p");
        if mtls {
            s.mtls_enabled = Some(true);
            s.mtls_client_ca_trust_bundle_path = Some(dir.path().join("chain.pem"));
        }
        let p = s.build(0, &mut crate::wiring::profile::BuildContext::new(None, dir.path(), dir.now())).unwrap();
        Profiles::new(vec![p], "p".into()).unwrap()
    }

    #[test]
    fn builds_with_h2_and_http11() {
        let dir = TestDir::new();
        let tls = TlsSettings { cert: dir.path().join("ra.pem"), key: dir.path().join("ra.key") };
        // With an mTLS profile the listener asks for (and does not require) a certificate.
        server_config(&tls, &profiles(&dir, true)).unwrap();
        let c = server_config(&tls, &profiles(&dir, false)).unwrap();
        assert_eq!(c.alpn_protocols, vec![b"h2".to_vec(), b"http/1.1".to_vec()]);
        // The server picks the suite, from its own order: SHA-256 suites first.
        assert!(c.ignore_client_order);
        let suites: Vec<_> = c.crypto_provider().cipher_suites.iter().map(|s| s.suite()).collect();
        assert_eq!(suites.first(), Some(&rustls::CipherSuite::TLS13_AES_128_GCM_SHA256), "{suites:?}");
        let at = |suite| suites.iter().position(|s| *s == suite).unwrap();
        assert!(at(rustls::CipherSuite::TLS13_AES_128_GCM_SHA256) < at(rustls::CipherSuite::TLS13_AES_256_GCM_SHA384));
        assert_eq!(suites.len(), client_auth::provider().cipher_suites.len(), "no suite is dropped");
    }

    #[test]
    fn errors_name_the_key() {
        let dir = TestDir::new();
        let missing = TlsSettings { cert: dir.path().join("none.pem"), key: dir.path().join("ra.key") };
        let p = profiles(&dir, false);
        assert!(server_config(&missing, &p).unwrap_err().0.starts_with("server.tls.cert"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let key = dir.path().join("ra.key");
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
            let tls = TlsSettings { cert: dir.path().join("ra.pem"), key };
            assert!(server_config(&tls, &p).unwrap_err().0.starts_with("server.tls.key"));
        }
    }
}
