//! `scep-load`: a SCEP fleet simulator for load tests against any RFC 8894
//! server (scepd or a peer).
//!
//! [`prepare`] fetches the CA certificates and builds the fleet's messages
//! (before the clock); [`execute`] runs the load and checks every reply;
//! [`report::Summary`] is the result. See `docs/benchmarks-e2e.md`.

pub mod fleet;
pub mod floor;
pub mod http;
pub mod intune;
pub mod report;
pub mod run;
pub mod server;
pub mod tls;

use std::net::{SocketAddr, ToSocketAddrs as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use scep_engine::crypto::{ContentCipher, DigestAlg};
use scep_tests::client::{CaCertificates, ClientError, HttpUrl, MessageOptions, PkiMethod};

use fleet::{Challenge, Device, Pool, Prepared};
use report::{Latency, ServerUse, Summary};
use run::{ConnectionUse, Operation, Plan, Verify};
use tls::TlsClient;

/// Why a load run could not start.
#[derive(Debug)]
pub enum LoadError {
    /// A file could not be read or written.
    Io(PathBuf, std::io::Error),
    /// The SCEP client failed (setup requests, keys, message building).
    Client(ClientError),
    /// Anything else in the setup.
    Setup(String),
}

impl LoadError {
    pub(crate) fn io(path: &Path, e: std::io::Error) -> Self {
        Self::Io(path.to_path_buf(), e)
    }
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Io(p, e) => write!(f, "{}: {e}", p.display()),
            Self::Client(e) => write!(f, "{e}"),
            Self::Setup(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for LoadError {}

impl From<ClientError> for LoadError {
    fn from(e: ClientError) -> Self {
        Self::Client(e)
    }
}

/// A resolved target: where to connect and what to put in requests.
#[derive(Clone, Debug)]
pub struct Target {
    /// The URL as given.
    pub url: String,
    /// Socket address.
    pub addr: SocketAddr,
    /// Host header value.
    pub host: String,
    /// Request path (the SCEP endpoint).
    pub path: String,
    /// TLS, for an `https://` URL.
    pub tls: Option<Arc<TlsClient>>,
}

/// How an `https://` target is reached.
#[derive(Clone, Debug)]
pub struct TlsOptions {
    /// The server's CA (`--cacert`, else `SSL_CERT_FILE`).
    pub ca_file: Option<PathBuf>,
    /// Resume TLS sessions.
    pub resumption: bool,
}

impl Target {
    /// Parses `url` (`http://host[:port]/path` or `https://...`, port 443 by
    /// default) and resolves it. Refuses non-loopback addresses unless
    /// `allow_remote` (a load test is an attack on anything else).
    ///
    /// # Errors
    /// Unparsable URL, unresolvable host, a non-loopback address, or (https)
    /// no usable CA file.
    pub fn resolve(url: &str, allow_remote: bool, tls: &TlsOptions) -> Result<Self, LoadError> {
        let https = url.get(..8).is_some_and(|p| p.eq_ignore_ascii_case("https://"));
        let u = if https {
            let rest = &url[8..];
            let authority = rest.split(['/', '?']).next().unwrap_or_default();
            let has_port =
                authority.rsplit_once(':').is_some_and(|(h, p)| !h.ends_with(':') && p.parse::<u16>().is_ok())
                    && !authority.ends_with(']');
            let mut u = HttpUrl::parse(&format!("http://{rest}"))?;
            if !has_port {
                u.port = 443;
            }
            u
        } else {
            HttpUrl::parse(url)?
        };
        let addrs: Vec<SocketAddr> = (u.host.as_str(), u.port)
            .to_socket_addrs()
            .map_err(|e| LoadError::Setup(format!("{}: {e}", u.host)))?
            .collect();
        let Some(&addr) = addrs.first() else {
            return Err(LoadError::Setup(format!("{} does not resolve", u.host)));
        };
        if !allow_remote && addrs.iter().any(|a| !a.ip().is_loopback()) {
            return Err(LoadError::Setup(format!(
                "{url} resolves to {addr}, which is not loopback; pass --allow-remote to load a remote server"
            )));
        }
        let default_port = if https { 443 } else { 80 };
        let host = if u.port == default_port { u.host.clone() } else { format!("{}:{}", u.host, u.port) };
        let tls = if https {
            let ca = tls::ca_file(tls.ca_file.as_deref())?;
            Some(Arc::new(TlsClient::new(&u.host, &ca, tls.resumption)?))
        } else {
            None
        };
        Ok(Self { url: url.to_string(), addr, host, path: u.path, tls })
    }

    /// A new connection to this target: one load worker, with a TLS session
    /// cache of its own ([`TlsClient::with_own_sessions`]).
    pub fn connection(&self, timeout: Duration) -> http::Connection {
        let tls = self.tls.as_ref().map(|t| Arc::new(t.with_own_sessions()));
        http::Connection::new(self.addr, self.host.clone(), timeout, tls)
    }

    /// GetCACert (RFC 8894 §4.2) over this target's own connection (plain or TLS).
    ///
    /// # Errors
    /// Socket, TLS or HTTP errors, or an answer that is not a CA certificate.
    pub fn get_ca_cert(&self) -> Result<CaCertificates, LoadError> {
        let mut c = self.connection(Duration::from_secs(30));
        let r = c
            .request("GET", &format!("{}?operation=GetCACert&message=scep-load", self.path), None)
            .map_err(|e| LoadError::Setup(format!("GetCACert from {}: {e}", self.url)))?;
        c.close();
        if r.status != 200 {
            return Err(LoadError::Setup(format!("GetCACert from {}: HTTP {}", self.url, r.status)));
        }
        Ok(CaCertificates::parse(r.content_type.as_deref().unwrap_or_default(), &r.body)?)
    }
}

/// The fleet-independent choices of a run.
#[derive(Debug)]
pub struct Setup {
    /// Devices (keys) in the fleet.
    pub devices: usize,
    /// Key and message cache directory.
    pub cache: PathBuf,
    /// How devices authenticate.
    pub challenge: Challenge,
    /// Content cipher.
    pub cipher: ContentCipher,
    /// SignerInfo digest.
    pub digest: DigestAlg,
    /// Threads for building messages and checking replies.
    pub threads: usize,
}

/// A target's CA certificates and prepared messages.
#[derive(Debug)]
pub struct Loaded {
    /// GetCACert's answer.
    pub ca: CaCertificates,
    /// The messages to send, in order.
    pub prepared: Vec<Prepared>,
    /// The static-challenge pool they came from (to mark consumed).
    pub pool: Option<Pool>,
}

/// Builds the device list (from the cache).
///
/// # Errors
/// Key or file errors.
pub fn fleet(setup: &Setup) -> Result<Vec<Device>, LoadError> {
    fleet::devices(&setup.cache, setup.devices.max(1), setup.threads)
}

/// Fetches `target`'s CA certificates and prepares `count` PKCSReq messages.
///
/// # Errors
/// GetCACert or message-building errors.
pub fn prepare(target: &Target, setup: &Setup, devices: &[Device], count: usize) -> Result<Loaded, LoadError> {
    let ca = target.get_ca_cert()?;
    let options: MessageOptions = fleet::options(setup.cipher, setup.digest);
    match &setup.challenge {
        Challenge::Static(pw) => {
            let pool = Pool::new(&setup.cache, &ca, &options, pw, devices.len());
            let prepared = pool.take(count, devices, &ca, pw, &options, setup.threads)?;
            Ok(Loaded { ca, prepared, pool: Some(pool) })
        }
        Challenge::Intune(_) | Challenge::Opaque { .. } => {
            let prepared = fleet::build_fresh(count, devices, &ca, &setup.challenge, &options, setup.threads)?;
            Ok(Loaded { ca, prepared, pool: None })
        }
    }
}

/// Runs `plan` against `target`, checks the replies, and summarises.
///
/// # Errors
/// When the consumed-message counter cannot be saved.
pub fn execute(
    target: &Target,
    plan: &Plan,
    setup: &Setup,
    devices: &[Device],
    loaded: Option<&mut Loaded>,
    server_pid: Option<u32>,
) -> Result<Summary, LoadError> {
    let (prepared, ca): (&[Prepared], Option<&CaCertificates>) = match &loaded {
        Some(l) => (&l.prepared, Some(&l.ca)),
        None => (&[], None),
    };
    let before = server_pid.and_then(server::snapshot);
    let mut m = run::run(plan, prepared, devices, ca);
    let after = server_pid.and_then(server::snapshot);

    let mut ok = m.latencies_us.len() as u64;
    if let Some(ca) = ca
        && !m.deferred.is_empty()
    {
        let (checked_ok, errors) = run::check_deferred(&m.deferred, prepared, devices, ca, setup.threads);
        ok = ok.saturating_sub(m.deferred.len() as u64) + checked_ok;
        for (k, v) in errors {
            *m.errors.entry(k).or_default() += v;
        }
    }
    if let Some(l) = loaded
        && let Some(pool) = &mut l.pool
    {
        pool.consume(m.sent)?;
    }
    let seconds = m.elapsed.as_secs_f64();
    let server = match (server_pid, before, after) {
        (Some(pid), Some(b), Some(a)) => {
            let cpu_ms = a.cpu_ms.saturating_sub(b.cpu_ms);
            Some(ServerUse {
                pid,
                cpu_ms,
                cpu_ms_per_ok: if ok > 0 { cpu_ms as f64 / ok as f64 } else { f64::NAN },
                rss_mib: a.rss_kib as f64 / 1024.0,
            })
        }
        _ => None,
    };
    Ok(Summary {
        url: target.url.clone(),
        operation: match plan.operation {
            Operation::PkcsReq => "pkcsreq",
            Operation::GetCaCaps => "getcacaps",
            Operation::GetCaCert => "getcacert",
            Operation::Device => "device",
        }
        .into(),
        method: match plan.method {
            PkiMethod::Post if plan.operation.sends_pki_messages() => "POST",
            _ => "GET",
        }
        .into(),
        cipher: format!("{:?}", setup.cipher),
        digest: format!("{:?}", setup.digest),
        challenge: match setup.challenge {
            Challenge::Static(_) => "static",
            Challenge::Intune(_) => "intune",
            Challenge::Opaque { .. } => "opaque",
        }
        .into(),
        mode: if plan.rate.is_some() { "open" } else { "closed" }.into(),
        concurrency: plan.concurrency,
        target_rate: plan.rate,
        sent: m.sent,
        ok,
        errors: m.errors,
        seconds,
        throughput: if seconds > 0.0 { ok as f64 / seconds } else { 0.0 },
        latency_ms: Latency::of(&mut m.latencies_us),
        verify: match plan.verify {
            Verify::Inline => "inline",
            Verify::After => "after",
            Verify::Off => "off",
        }
        .into(),
        connections: m.connections,
        tls: target.tls.as_ref().map(|t| report::TlsUse { resumption: t.resumption, resumed: m.resumed }),
        connection_use: match plan.connection_use {
            ConnectionUse::KeepAlive => "keep-alive",
            ConnectionUse::PerDevice => "per-device",
            ConnectionUse::PerRequest => "per-request",
        }
        .into(),
        server,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_non_loopback_targets_unless_allowed() {
        let plain = TlsOptions { ca_file: None, resumption: true };
        let t = Target::resolve("http://127.0.0.1:8080/scep", false, &plain).unwrap();
        assert_eq!((t.host.as_str(), t.path.as_str()), ("127.0.0.1:8080", "/scep"));
        assert!(t.tls.is_none());
        let err = Target::resolve("http://192.0.2.1:8080/scep", false, &plain).unwrap_err().to_string();
        assert!(err.contains("--allow-remote"), "{err}");
        assert!(Target::resolve("http://192.0.2.1:8080/scep", true, &plain).is_ok());
    }

    #[test]
    fn https_targets_default_to_port_443_and_need_a_ca() {
        let dir = tempfile::tempdir().unwrap();
        let key = scep_tests::client::DeviceKey::pregenerated(0).unwrap();
        let cert =
            scep_tests::client::self_signed_certificate(&key, &scep_tests::client::SubjectName::cn("load-ca"), 1)
                .unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, scep_engine::pem::encode("CERTIFICATE", &cert)).unwrap();
        let with_ca = TlsOptions { ca_file: Some(ca), resumption: false };
        let t = Target::resolve("https://localhost/scep", false, &with_ca).unwrap();
        assert_eq!((t.addr.port(), t.host.as_str(), t.path.as_str()), (443, "localhost", "/scep"));
        assert!(t.tls.as_ref().is_some_and(|t| !t.resumption));
        let t = Target::resolve("HTTPS://127.0.0.1:8443/scep", false, &with_ca).unwrap();
        assert_eq!((t.addr.port(), t.host.as_str()), (8443, "127.0.0.1:8443"));
        let none = TlsOptions { ca_file: Some(dir.path().join("missing.pem")), resumption: true };
        let err = Target::resolve("https://127.0.0.1:8443/scep", false, &none).unwrap_err().to_string();
        assert!(err.contains("--cacert") && err.contains("missing.pem"), "{err}");
    }
}
