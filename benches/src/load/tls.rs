//! HTTPS for `scep-load`: a rustls client (aws-lc-rs provider, TLS 1.3 and
//! 1.2) trusting the server's CA from `--cacert FILE` or, as curl and
//! OpenSSL do, the `SSL_CERT_FILE` variable; session resumption (RFC 8446
//! §2.2 tickets, or TLS 1.2 session IDs) on or off.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};

use super::LoadError;

/// What every connection of a run needs to speak TLS.
#[derive(Clone, Debug)]
pub struct TlsClient {
    /// The client configuration, shared by all workers (and so is its
    /// session cache: a ticket one worker received can resume another's
    /// next connection, as in a fleet's client library it would not; see
    /// docs/benchmarks-e2e.md).
    pub config: Arc<ClientConfig>,
    /// The name the server's certificate is checked against (SNI is sent
    /// only for DNS names, RFC 6066 §3).
    pub server_name: ServerName<'static>,
    /// Whether sessions are resumed.
    pub resumption: bool,
}

impl TlsClient {
    /// A client for `host` trusting the certificates in `ca_file`.
    ///
    /// # Errors
    /// An unreadable or empty CA file, or a host that is not a DNS name or IP address.
    pub fn new(host: &str, ca_file: &Path, resumption: bool) -> Result<Self, LoadError> {
        let mut roots = RootCertStore::empty();
        let mut count = 0;
        for cert in CertificateDer::pem_file_iter(ca_file)
            .map_err(|e| LoadError::Setup(format!("--cacert {}: {e}", ca_file.display())))?
        {
            let cert = cert.map_err(|e| LoadError::Setup(format!("--cacert {}: {e}", ca_file.display())))?;
            roots.add(cert).map_err(|e| LoadError::Setup(format!("--cacert {}: {e}", ca_file.display())))?;
            count += 1;
        }
        if count == 0 {
            return Err(LoadError::Setup(format!("--cacert {}: no CERTIFICATE block", ca_file.display())));
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| LoadError::Setup(format!("TLS: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        if !resumption {
            config.resumption = rustls::client::Resumption::disabled();
        }
        let server_name = ServerName::try_from(host.to_string())
            .map_err(|e| LoadError::Setup(format!("{host}: not a TLS server name: {e}")))?;
        Ok(Self { config: Arc::new(config), server_name, resumption })
    }
}

impl TlsClient {
    /// The same client with a session cache of its own: each load worker
    /// stands for one device, which resumes with the tickets of its own
    /// earlier connections (RFC 8446 §2.2), not with another device's. A
    /// shared cache would hand the same few tickets to every worker (rustls
    /// keeps at most 8 per server, each used once), and workers would fall
    /// back to full handshakes no real device would make.
    pub fn with_own_sessions(&self) -> Self {
        let mut config = ClientConfig::clone(&self.config);
        if self.resumption {
            config.resumption = rustls::client::Resumption::in_memory_sessions(8);
        }
        Self { config: Arc::new(config), server_name: self.server_name.clone(), resumption: self.resumption }
    }
}

/// The CA file for an `https://` target: `--cacert`, else `SSL_CERT_FILE`.
///
/// # Errors
/// When neither is given.
pub fn ca_file(explicit: Option<&Path>) -> Result<PathBuf, LoadError> {
    match (explicit, std::env::var_os("SSL_CERT_FILE")) {
        (Some(path), _) => Ok(path.to_path_buf()),
        (None, Some(path)) if !path.is_empty() => Ok(PathBuf::from(path)),
        _ => Err(LoadError::Setup(
            "an https:// target needs the server's CA: pass --cacert FILE or set SSL_CERT_FILE".into(),
        )),
    }
}
