//! The mTLS sibling route `/scep-mtls/<name>`: a client certificate chaining
//! to the profile's CA bundle is required (401 otherwise), and the SCEP
//! challenge is still required inside the message.
//!
//! Two layers:
//!
//! 1. The TLS listener *asks* every client for a certificate but requires none
//!    ([`OptionalClientCert`]): the plain `/scep/<name>` routes stay anonymous
//!    (RFC 8894 §2.6 authenticates inside the messages), and Windows clients
//!    that have no certificate still connect. A presented certificate must prove
//!    possession of its key (the TLS CertificateVerify signature is checked),
//!    but its chain is not judged here, because the listener cannot know which
//!    profile the request will name.
//! 2. The route checks the presented chain against *that profile's* bundle with
//!    a webpki verifier ([`MtlsPolicy::verify`]), after the request line is read.
//!
//! The transport hands the peer certificates to the service as a
//! [`ConnectionInfo`] (per connection, see
//! [`crate::ScepService::with_connection`], or as a request extension).
//!
//! The `mtls_*` keys are read by `crate::settings::profile`; the route itself
//! is served by `crate::http::service`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use rustls_pki_types::CertificateDer;
use scep_engine::config::ConfigError;
use scep_engine::x509::CertificateRef;
use scep_engine::{UnixTime, pem};

use crate::settings::profile::MtlsSettings;

/// What the transport knows about the connection a request came on.
#[derive(Clone, Debug, Default)]
pub struct ConnectionInfo {
    /// The client's address (audited).
    pub remote_addr: Option<SocketAddr>,
    /// The certificates the client presented in the TLS handshake, leaf first
    /// (empty without TLS or without a client certificate).
    pub peer_certificates: Arc<[CertificateDer<'static>]>,
}

impl ConnectionInfo {
    /// A plain-TCP connection from `remote_addr`.
    pub fn plain(remote_addr: SocketAddr) -> Self {
        Self { remote_addr: Some(remote_addr), peer_certificates: Arc::from(Vec::new()) }
    }

    /// A TLS connection from `remote_addr`, after the handshake: keeps the
    /// client certificate chain it presented (if any) for the mTLS routes.
    /// Both runtimes' accept loops call this, so they cannot drift apart.
    pub fn tls(remote_addr: SocketAddr, connection: &rustls::ServerConnection) -> Self {
        let peer_certificates: Vec<CertificateDer<'static>> = connection
            .peer_certificates()
            .map(|chain| chain.iter().map(|c| c.clone().into_owned()).collect())
            .unwrap_or_default();
        Self { remote_addr: Some(remote_addr), peer_certificates: peer_certificates.into() }
    }
}

/// One profile's mTLS policy: the client CA bundle and its verifier.
pub struct MtlsPolicy {
    /// The bundle file (reported by the admin API).
    pub bundle_path: PathBuf,
    /// The earliest `notAfter` among the bundle's certificates.
    pub earliest_expiry: UnixTime,
    subjects: Vec<DistinguishedName>,
    verifier: Arc<dyn ClientCertVerifier>,
}

impl std::fmt::Debug for MtlsPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MtlsPolicy").field("bundle_path", &self.bundle_path).finish_non_exhaustive()
    }
}

impl MtlsPolicy {
    /// Builds the policy of one profile from its validated `mtls_*` settings:
    /// reads the client CA bundle.
    ///
    /// # Errors
    /// Naming the bundle key: an unreadable or empty bundle, a certificate
    /// that does not parse, has expired or is no usable CA.
    pub fn load(settings: &MtlsSettings, now: UnixTime) -> Result<Self, ConfigError> {
        let path = settings.bundle_path.clone();
        let bundle_key = settings.bundle_key.as_str();
        let text = scep_issuers::config_file::read_to_string(&path)
            .map_err(|e| ConfigError(format!("{bundle_key}: cannot read {}: {e}", path.display())))?;
        let ders =
            pem::certificates(&text).map_err(|e| ConfigError(format!("{bundle_key}: {}: {e}", path.display())))?;
        if ders.is_empty() {
            return Err(ConfigError(format!("{bundle_key}: {}: no CERTIFICATE block", path.display())));
        }
        let mut roots = RootCertStore::empty();
        let mut earliest_expiry = None::<UnixTime>;
        for (i, der) in ders.into_iter().enumerate() {
            let cert = CertificateRef::parse(&der).map_err(|e| {
                ConfigError(format!("{bundle_key}: {}: certificate #{} is not X.509: {e}", path.display(), i + 1))
            })?;
            if cert.not_after < now {
                return Err(ConfigError(format!(
                    "{bundle_key}: {}: certificate #{} expired at {}",
                    path.display(),
                    i + 1,
                    cert.not_after.to_rfc3339()
                )));
            }
            earliest_expiry = Some(earliest_expiry.map_or(cert.not_after, |e| e.min(cert.not_after)));
            roots.add(CertificateDer::from(der)).map_err(|e| {
                ConfigError(format!("{bundle_key}: {}: certificate #{} is not a usable CA: {e}", path.display(), i + 1))
            })?;
        }
        let subjects = roots.subjects();
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| ConfigError(format!("{bundle_key}: {}: {e}", path.display())))?;
        Ok(Self { bundle_path: path, earliest_expiry: earliest_expiry.unwrap_or(now), subjects, verifier })
    }

    /// Checks that `chain` (leaf first, as presented in the handshake) chains
    /// to this profile's bundle and is valid for TLS client authentication at
    /// `now` (RFC 5280 path validation, by webpki).
    ///
    /// # Errors
    /// Why the certificate is refused (for the audit log).
    pub fn verify(&self, chain: &[CertificateDer<'static>], now: UnixTime) -> Result<(), String> {
        let (leaf, intermediates) = chain.split_first().ok_or("no client certificate presented")?;
        let secs = u64::try_from(now.secs()).map_err(|_| "clock before 1970".to_string())?;
        let now = rustls_pki_types::UnixTime::since_unix_epoch(Duration::from_secs(secs));
        self.verifier
            .verify_client_cert(leaf, intermediates, now)
            .map(|_| ())
            .map_err(|e| format!("client certificate refused: {e}"))
    }

    /// The subjects of the bundle's CAs (sent as hints in the CertificateRequest).
    pub fn subjects(&self) -> &[DistinguishedName] {
        &self.subjects
    }
}

/// The provider used for every TLS object ([`scep_issuers::http::tls_crypto_provider`]:
/// aws-lc-rs, or RustCrypto in the pure-Rust build).
pub fn provider() -> Arc<CryptoProvider> {
    scep_issuers::http::tls_crypto_provider()
}

/// The listener's client-certificate verifier: asks for a certificate, accepts
/// its absence, checks the handshake signature of a presented one and defers
/// the chain to the route ([`MtlsPolicy::verify`]).
#[derive(Debug)]
pub struct OptionalClientCert {
    hints: Vec<DistinguishedName>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl OptionalClientCert {
    /// A verifier hinting `hints` (the union of every mTLS profile's CA subjects).
    pub fn new(hints: Vec<DistinguishedName>) -> Self {
        Self { hints, algorithms: provider().signature_verification_algorithms }
    }
}

impl ClientCertVerifier for OptionalClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    /// Accepted here; [`MtlsPolicy::verify`] judges the chain per route.
    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TestDir;

    fn bundle(path: PathBuf) -> MtlsSettings {
        MtlsSettings { bundle_path: path, bundle_key: "b".into() }
    }

    fn policy(dir: &TestDir) -> MtlsPolicy {
        MtlsPolicy::load(&bundle(dir.path().join("chain.pem")), dir.now()).unwrap()
    }

    #[test]
    fn off_unless_enabled_with_a_bundle() {
        let dir = TestDir::new();
        let off = crate::settings::profile::ProfileSection::default();
        assert!(off.mtls_settings("p", None).unwrap().is_none());
        let off = crate::settings::profile::ProfileSection { mtls_enabled: Some(false), ..off };
        assert!(off.mtls_settings("p", None).unwrap().is_none());
        let p = policy(&dir);
        assert_eq!(p.subjects().len(), 1);
        assert_eq!(p.bundle_path, dir.path().join("chain.pem"));
    }

    #[test]
    fn expired_or_empty_bundles_are_refused() {
        let dir = TestDir::new();
        let later = UnixTime::from_secs(2_200_000_000);
        let e = MtlsPolicy::load(&bundle(dir.path().join("chain.pem")), later).unwrap_err();
        assert!(e.0.starts_with("b:") && e.0.contains("expired"), "{e}");
        std::fs::write(dir.path().join("empty.pem"), "").unwrap();
        let e = MtlsPolicy::load(&bundle(dir.path().join("empty.pem")), dir.now()).unwrap_err();
        assert!(e.0.contains("no CERTIFICATE"), "{e}");
    }

    #[test]
    fn verify_refuses_no_certificate_and_a_foreign_one() {
        let dir = TestDir::new();
        let p = policy(&dir);
        assert!(p.verify(&[], dir.now()).unwrap_err().contains("no client certificate"));
        // The CA itself is no client certificate issued by it (self-signed, no clientAuth path).
        let ca = pem::certificates(crate::testutil::RA_CERT).unwrap().remove(0);
        let foreign = CertificateDer::from(ca);
        assert!(p.verify(&[foreign], dir.now()).is_err());
    }
}
