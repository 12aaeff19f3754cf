//! The rustls server configuration, shared by every runtime's TLS acceptor.

use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use scep_engine::config::ConfigError;

use crate::config::TlsSettings;
use crate::profile::check_key_file_permissions;

/// Builds the TLS server configuration: aws-lc-rs provider, TLS 1.2 and 1.3,
/// ALPN `h2` then `http/1.1`, no client authentication (SCEP clients are
/// anonymous at the TLS layer; RFC 8894 §2.6 authenticates in the messages).
///
/// # Errors
/// Naming `server.tls.cert` / `server.tls.key` and the file when unreadable,
/// empty, mismatched or (key) readable by group or others.
pub fn server_config(tls: &TlsSettings) -> Result<Arc<ServerConfig>, ConfigError> {
    let certs = load_certs(&tls.cert)?;
    check_key_file_permissions(&tls.key, "server.tls.key")?;
    let key = PrivateKeyDer::from_pem_file(&tls.key)
        .map_err(|e| ConfigError(format!("server.tls.key: {}: {e}", tls.key.display())))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| ConfigError(format!("server.tls: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| ConfigError(format!("server.tls.key: {} does not fit the certificate: {e}", tls.key.display())))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| ConfigError(format!("server.tls.cert: {}: {e}", path.display())))?
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

    #[test]
    fn builds_with_h2_and_http11() {
        let dir = TestDir::new();
        let tls = TlsSettings { cert: dir.path().join("ra.pem"), key: dir.path().join("ra.key") };
        let c = server_config(&tls).unwrap();
        assert_eq!(c.alpn_protocols, vec![b"h2".to_vec(), b"http/1.1".to_vec()]);
    }

    #[test]
    fn errors_name_the_key() {
        let dir = TestDir::new();
        let missing = TlsSettings { cert: dir.path().join("none.pem"), key: dir.path().join("ra.key") };
        assert!(server_config(&missing).unwrap_err().0.starts_with("server.tls.cert"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let key = dir.path().join("ra.key");
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
            let tls = TlsSettings { cert: dir.path().join("ra.pem"), key };
            assert!(server_config(&tls).unwrap_err().0.starts_with("server.tls.key"));
        }
    }
}
