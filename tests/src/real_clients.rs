//! Real third-party SCEP clients, and a real peer server, for interop tests.
//!
//! - [`certmonger_enroll`] / [`Certmonger`]: a private certmonger daemon (no
//!   D-Bus) enrolling through `getcert add-scep-ca` + `getcert request -w`.
//! - [`scepclient_enroll`]: micromdm's `scepclient` (Debian package `scep`).
//! - [`PeerScepServer`]: micromdm's `scepserver`. It binds every interface,
//!   so it only starts inside a private network namespace: see
//!   [`run_in_private_netns`].
//!
//! Every external process runs with a bounded timeout and is killed when its
//! handle drops.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Environment variable set in the re-executed test process that runs inside
/// a private network namespace.
pub const NETNS_ENV: &str = "SCEP_TESTS_IN_PRIVATE_NETNS";

/// Why a real client could not produce a certificate.
#[derive(Debug)]
#[non_exhaustive]
pub enum RealClientError {
    /// The binary is not installed (name and where it was looked for).
    MissingTool(String),
    /// A tool ran and failed; `output` holds its stdout/stderr and any status dump.
    Failed {
        /// Which tool.
        tool: String,
        /// What went wrong.
        detail: String,
        /// The tool's output (and daemon logs where relevant).
        output: String,
    },
    /// A tool did not finish in time (it was killed).
    Timeout {
        /// Which tool.
        tool: String,
        /// Its output so far.
        output: String,
    },
    /// A local I/O failure (temp files, spawning).
    Io(std::io::Error),
}

impl std::fmt::Display for RealClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::MissingTool(t) => write!(f, "tool not installed: {t}"),
            Self::Failed { tool, detail, output } => write!(f, "{tool} failed: {detail}\n--- output ---\n{output}"),
            Self::Timeout { tool, output } => write!(f, "{tool} timed out\n--- output ---\n{output}"),
            Self::Io(e) => write!(f, "I/O error: {e}"),
        }
    }
}

impl std::error::Error for RealClientError {}

impl From<std::io::Error> for RealClientError {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e)
    }
}

/// Result alias for this module.
pub type Result<T> = std::result::Result<T, RealClientError>;

/// A certificate a real client obtained.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedCertificate {
    /// The certificate DER.
    pub der: Vec<u8>,
    /// The certificate PEM as the tool wrote it.
    pub pem: String,
    /// The private key PEM the tool used.
    pub key_pem: String,
    /// The tool's output, for diagnostics.
    pub log: String,
}

/// Finds `name` on PATH or in the usual system directories.
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/lib/certmonger"].iter().map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn require_tool(name: &str) -> Result<PathBuf> {
    find_tool(name)
        .ok_or_else(|| RealClientError::MissingTool(format!("{name} (PATH, /usr/sbin, /usr/lib/certmonger)")))
}

/// Output of a bounded run.
#[derive(Debug)]
pub struct RunOutput {
    /// Exit status.
    pub status: ExitStatus,
    /// stdout then stderr, as text.
    pub output: String,
}

/// Runs `cmd` with stdout/stderr captured to files in `dir`, killing it after `timeout`.
///
/// # Errors
/// Spawn failures, or [`RealClientError::Timeout`].
pub fn run_bounded(tool: &str, cmd: &mut Command, dir: &Path, timeout: Duration) -> Result<RunOutput> {
    let stamp = format!("{}-{}", tool.replace(['/', ' '], "_"), std::process::id());
    let out_path = dir.join(format!("{stamp}.stdout"));
    let err_path = dir.join(format!("{stamp}.stderr"));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path)?)
        .stderr(std::fs::File::create(&err_path)?)
        .spawn()?;
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break Some(s);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = format!(
        "{}{}",
        std::fs::read_to_string(&out_path).unwrap_or_default(),
        std::fs::read_to_string(&err_path).unwrap_or_default()
    );
    match status {
        Some(status) => Ok(RunOutput { status, output }),
        None => Err(RealClientError::Timeout { tool: tool.to_string(), output }),
    }
}

fn read_issued(cert_path: &Path, key_path: &Path, log: String) -> Result<IssuedCertificate> {
    let pem = std::fs::read_to_string(cert_path)?;
    let der = scep_engine::pem::certificates(&pem).ok().and_then(|c| c.into_iter().next()).ok_or_else(|| {
        RealClientError::Failed {
            tool: "certificate file".into(),
            detail: format!("{} holds no PEM certificate", cert_path.display()),
            output: pem.clone(),
        }
    })?;
    let key_pem = std::fs::read_to_string(key_path).unwrap_or_default();
    Ok(IssuedCertificate { der, pem, key_pem, log })
}

/// Enrolls with micromdm's `scepclient` (single DES, SHA-1; it generates its
/// own RSA-2048 key): `scepclient -server-url URL -challenge PW -private-key
/// key.pem -certificate cert.pem -cn NAME`.
///
/// # Errors
/// Missing binary, timeout, non-zero exit, or no certificate written.
pub fn scepclient_enroll(url: &str, challenge: &str, cn: &str, timeout: Duration) -> Result<IssuedCertificate> {
    let bin = require_tool("scepclient")?;
    let dir = tempfile::tempdir()?;
    let key = dir.path().join("key.pem");
    let cert = dir.path().join("cert.pem");
    let mut cmd = Command::new(bin);
    cmd.current_dir(dir.path())
        .args(["-server-url", url, "-challenge", challenge, "-cn", cn, "-private-key"])
        .arg(&key)
        .arg("-certificate")
        .arg(&cert);
    let run = run_bounded("scepclient", &mut cmd, dir.path(), timeout)?;
    if !run.status.success() || !cert.is_file() {
        return Err(RealClientError::Failed {
            tool: "scepclient".into(),
            detail: format!("exit {}, certificate written: {}", run.status, cert.is_file()),
            output: run.output,
        });
    }
    read_issued(&cert, &key, run.output)
}

/// A private certmonger daemon (`certmonger -n -L -P <socket>`), with all its
/// state in a temporary directory. Killed on drop.
#[derive(Debug)]
pub struct Certmonger {
    child: Child,
    dir: tempfile::TempDir,
    socket: PathBuf,
}

impl Certmonger {
    /// Starts the daemon and waits (≤ 10 s) for its socket.
    ///
    /// # Errors
    /// Missing binary, or the daemon does not come up.
    pub fn start() -> Result<Self> {
        let bin = require_tool("certmonger")?;
        require_tool("getcert")?;
        let dir = tempfile::tempdir()?;
        for sub in ["config", "requests", "cas", "local", "tmp", "out"] {
            std::fs::create_dir_all(dir.path().join(sub))?;
        }
        let socket = dir.path().join("certmonger.sock");
        let mut cmd = Command::new(bin);
        cmd.args(["-n", "-L", "-P"]).arg(&socket).arg("-p").arg(dir.path().join("certmonger.pid"));
        Self::env(&mut cmd, dir.path());
        let log = std::fs::File::create(dir.path().join("daemon.log"))?;
        let child = cmd.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log).spawn()?;
        let mut me = Self { child, dir, socket };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !me.socket.exists() {
            if let Some(status) = me.child.try_wait()? {
                return Err(me.failure("certmonger", format!("daemon exited: {status}"), String::new()));
            }
            if Instant::now() >= deadline {
                return Err(RealClientError::Timeout { tool: "certmonger daemon".into(), output: me.daemon_log() });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(me)
    }

    fn env(cmd: &mut Command, dir: &Path) {
        cmd.env("CERTMONGER_CONFIG_DIR", dir.join("config"))
            .env("CERTMONGER_REQUESTS_DIR", dir.join("requests"))
            .env("CERTMONGER_CAS_DIR", dir.join("cas"))
            .env("CERTMONGER_LOCAL_CA_DIR", dir.join("local"))
            .env("CERTMONGER_TMPDIR", dir.join("tmp"));
    }

    /// The daemon's log so far.
    pub fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    fn failure(&self, tool: &str, detail: String, output: String) -> RealClientError {
        let log = self.daemon_log();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        RealClientError::Failed {
            tool: tool.into(),
            detail,
            output: format!("{output}\n--- certmonger daemon log (tail) ---\n{}", tail.join("\n")),
        }
    }

    /// Runs `getcert <args>` against this daemon.
    ///
    /// # Errors
    /// Spawn failure or timeout.
    pub fn getcert(&self, args: &[&str], timeout: Duration) -> Result<RunOutput> {
        let mut cmd = Command::new(require_tool("getcert")?);
        cmd.args(args).env("CERTMONGER_PVT_ADDRESS", format!("unix:path={}", self.socket.display()));
        Self::env(&mut cmd, self.dir.path());
        run_bounded(
            &format!("getcert {}", args.first().copied().unwrap_or_default()),
            &mut cmd,
            self.dir.path(),
            timeout,
        )
    }

    /// `getcert add-scep-ca -c <name> -u <url> [-N <signing CA PEM>]`.
    ///
    /// # Errors
    /// When getcert fails.
    pub fn add_scep_ca(&self, name: &str, url: &str, signing_ca_pem: Option<&str>) -> Result<()> {
        let mut args = vec!["add-scep-ca", "-c", name, "-u", url];
        let ca_path = self.dir.path().join(format!("{name}-ca.pem"));
        let ca_path_s = ca_path.to_string_lossy().into_owned();
        if let Some(pem) = signing_ca_pem {
            std::fs::write(&ca_path, pem)?;
            args.extend(["-N", &ca_path_s]);
        }
        let run = self.getcert(&args, Duration::from_secs(20))?;
        if run.status.success() {
            Ok(())
        } else {
            Err(self.failure("getcert add-scep-ca", format!("exit {}", run.status), run.output))
        }
    }

    /// `getcert request -c <ca> -I <id> -k key.pem -f cert.pem -N CN=<cn> -L
    /// <challenge> -w`, bounded by `timeout`; then reads the certificate file.
    ///
    /// # Errors
    /// Timeout, or no certificate (the error holds `getcert list` and the daemon log).
    pub fn request(&self, ca: &str, cn: &str, challenge: &str, timeout: Duration) -> Result<IssuedCertificate> {
        let id = format!("req-{}", cn.replace(|c: char| !c.is_ascii_alphanumeric(), "-"));
        let key = self.dir.path().join("out").join(format!("{id}.key.pem"));
        let cert = self.dir.path().join("out").join(format!("{id}.cert.pem"));
        let (k, c, subject) = (key.to_string_lossy(), cert.to_string_lossy(), format!("CN={cn}"));
        let args = ["request", "-c", ca, "-I", &id, "-k", &k, "-f", &c, "-N", &subject, "-L", challenge, "-w"];
        let run = match self.getcert(&args, timeout) {
            Ok(r) => r,
            Err(RealClientError::Timeout { output, .. }) => {
                let list = self.getcert(&["list", "-i", &id], Duration::from_secs(10)).map(|r| r.output);
                return Err(self.failure(
                    "getcert request",
                    format!("no result within {timeout:?}"),
                    format!("{output}\n{}", list.unwrap_or_default()),
                ));
            }
            Err(e) => return Err(e),
        };
        if cert.is_file() {
            return read_issued(&cert, &key, run.output);
        }
        let list = self.getcert(&["list", "-i", &id], Duration::from_secs(10)).map(|r| r.output).unwrap_or_default();
        Err(self.failure(
            "getcert request",
            format!("exit {}, no certificate written", run.status),
            format!("{}\n{list}", run.output),
        ))
    }
}

impl Drop for Certmonger {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One certmonger enrollment: private daemon, `add-scep-ca` (with
/// `signing_ca_pem` as `-N` when given), `request -w`.
///
/// # Errors
/// As [`Certmonger::start`], [`Certmonger::add_scep_ca`], [`Certmonger::request`].
pub fn certmonger_enroll(
    url: &str,
    challenge: &str,
    cn: &str,
    signing_ca_pem: Option<&str>,
    timeout: Duration,
) -> Result<IssuedCertificate> {
    let daemon = Certmonger::start()?;
    daemon.add_scep_ca("scep-tests", url, signing_ca_pem)?;
    daemon.request("scep-tests", cn, challenge, timeout)
}

/// True inside the process [`run_in_private_netns`] re-executed.
pub fn in_private_netns() -> bool {
    std::env::var_os(NETNS_ENV).is_some_and(|v| v == "1")
}

/// What [`run_in_private_netns`] decided.
#[derive(Debug, PartialEq, Eq)]
pub enum NetnsRun {
    /// We are inside the namespace: run the test body now.
    Inside,
    /// The test ran (and passed) in a re-executed child inside the namespace.
    RanInChild,
}

/// Runs the test `test_path` (full libtest name, e.g.
/// `real_clients::tests::x`) in a private network namespace: re-executes the
/// current test binary under `unshare --net` with only loopback up, and checks
/// that exactly that test ran and passed.
///
/// # Errors
/// `Err(reason)` when namespaces are unavailable (the caller prints a SKIP),
/// and `Err` with the child's output when the test failed in the child.
pub fn run_in_private_netns(test_path: &str, timeout: Duration) -> std::result::Result<NetnsRun, String> {
    if in_private_netns() {
        return Ok(NetnsRun::Inside);
    }
    let unshare = find_tool("unshare").ok_or("unshare not installed")?;
    let ip = find_tool("ip").ok_or("ip (iproute2) not installed")?;
    let probe = Command::new(&unshare).args(["--net", "true"]).output().map_err(|e| e.to_string())?;
    if !probe.status.success() {
        return Err(format!("unshare --net not permitted: {}", String::from_utf8_lossy(&probe.stderr).trim()));
    }
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut cmd = Command::new(unshare);
    cmd.args(["--net", "sh", "-c", "\"$0\" link set lo up && exec \"$@\""])
        .arg(ip)
        .arg(exe)
        .args([test_path, "--exact", "--nocapture", "--test-threads=1"])
        .env(NETNS_ENV, "1");
    let run = run_bounded("netns child", &mut cmd, dir.path(), timeout).map_err(|e| e.to_string())?;
    if !run.status.success() {
        return Err(format!("test {test_path} failed inside the network namespace:\n{}", run.output));
    }
    if !run.output.contains("test result: ok. 1 passed") {
        return Err(format!("test {test_path} did not run in the child:\n{}", run.output));
    }
    Ok(NetnsRun::RanInChild)
}

/// micromdm's `scepserver` (Debian package `scep`) as a peer: a throwaway CA
/// depot and a server on loopback. Refuses to start outside a private network
/// namespace, because it binds every interface. Killed on drop.
#[derive(Debug)]
pub struct PeerScepServer {
    child: Child,
    dir: tempfile::TempDir,
    /// The SCEP URL (`http://127.0.0.1:<port>/scep`).
    pub url: String,
}

impl PeerScepServer {
    /// Creates a CA (RSA-2048) and starts the server with `challenge` on `port`.
    ///
    /// # Errors
    /// Outside a private network namespace, missing binary, or start-up failure.
    pub fn start(challenge: &str, port: u16) -> Result<Self> {
        Self::start_with_args(challenge, port, &[])
    }

    /// As [`PeerScepServer::start`], with extra `scepserver` flags (e.g.
    /// `["-allowrenew", "0"]` to accept RenewalReq at any time).
    ///
    /// # Errors
    /// As [`PeerScepServer::start`].
    pub fn start_with_args(challenge: &str, port: u16, extra: &[&str]) -> Result<Self> {
        if !in_private_netns() {
            return Err(RealClientError::Failed {
                tool: "scepserver".into(),
                detail: "refusing to start outside a private network namespace (it binds all interfaces)".into(),
                output: String::new(),
            });
        }
        let bin = require_tool("scepserver")?;
        let dir = tempfile::tempdir()?;
        let depot = dir.path().join("depot");
        let mut init = Command::new(&bin);
        init.arg("ca").arg("-init").arg("-depot").arg(&depot).args(["-keySize", "2048"]);
        let run = run_bounded("scepserver ca -init", &mut init, dir.path(), Duration::from_secs(60))?;
        if !run.status.success() {
            return Err(RealClientError::Failed {
                tool: "scepserver ca -init".into(),
                detail: format!("exit {}", run.status),
                output: run.output,
            });
        }
        let log = std::fs::File::create(dir.path().join("server.log"))?;
        let child = Command::new(&bin)
            .arg("-depot")
            .arg(&depot)
            .args(["-port", &port.to_string(), "-challenge", challenge])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let me = Self { child, dir, url: format!("http://127.0.0.1:{port}/scep") };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() >= deadline {
                return Err(RealClientError::Timeout { tool: "scepserver".into(), output: me.log() });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(me)
    }

    /// The CA certificate PEM from the depot.
    ///
    /// # Errors
    /// When the depot has no `ca.pem`.
    pub fn ca_pem(&self) -> Result<String> {
        Ok(std::fs::read_to_string(self.dir.path().join("depot").join("ca.pem"))?)
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }
}

impl Drop for PeerScepServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::*;

    const CHALLENGE: &str = "secret123";

    /// Runs `body` inside a private network namespace, or reports a clear skip.
    fn netns_test(test_path: &str, body: impl FnOnce()) {
        match run_in_private_netns(test_path, Duration::from_secs(300)) {
            Ok(NetnsRun::Inside) => body(),
            Ok(NetnsRun::RanInChild) => {}
            Err(reason) if reason.contains("failed inside") || reason.contains("did not run") => panic!("{reason}"),
            Err(reason) => eprintln!("SKIPPED {test_path}: needs a private network namespace: {reason}"),
        }
    }

    /// Our client against micromdm's scepserver: GetCACaps, GetCACert,
    /// PKCSReq by POST and GET with every cipher and several digests, DER and
    /// BER, reply checks, tampering detection, and RenewalReq with the issued
    /// certificate.
    #[test]
    fn our_client_interoperates_with_micromdm_scepserver() {
        netns_test("real_clients::tests::our_client_interoperates_with_micromdm_scepserver", || {
            let peer = PeerScepServer::start_with_args(CHALLENGE, 18080, &["-allowrenew", "0"]).unwrap();
            let client = ScepClient::new(&peer.url).unwrap().with_timeout(Duration::from_secs(20));
            let caps = client.get_ca_caps().unwrap();
            assert!(caps.has("POSTPKIOperation"), "{caps:?}");
            let ca = client.get_ca_cert().unwrap();
            assert_eq!(ca.content_type, "application/x-x509-ca-cert");
            assert_eq!(ca.certificates.len(), 1);
            let ca_pem = peer.ca_pem().unwrap();
            assert_eq!(scep_engine::pem::certificates(&ca_pem).unwrap()[0], ca.ca());

            let key = DeviceKey::pregenerated(3).unwrap();
            let cases = [
                (
                    ContentCipher::Aes256Cbc,
                    DigestAlg::Sha256,
                    SignatureOid::RsaEncryption,
                    Encoding::Der,
                    PkiMethod::Get,
                ),
                // micromdm's Go pkcs7 reads only the first chunk of a constructed
                // eContent (digest mismatch with jscep's 1000-byte chunks, which
                // OpenSSL accepts: see client::tests), so one chunk here.
                (
                    ContentCipher::Aes128Cbc,
                    DigestAlg::Sha256,
                    SignatureOid::DigestWithRsa,
                    Encoding::Ber { chunk: 65536 },
                    PkiMethod::Post,
                ),
                (
                    ContentCipher::Aes256Cbc,
                    DigestAlg::Sha512,
                    SignatureOid::DigestWithRsa,
                    Encoding::Der,
                    PkiMethod::Post,
                ), // micromdm has no AES-192
                (
                    ContentCipher::DesEde3Cbc,
                    DigestAlg::Sha1,
                    SignatureOid::DigestWithRsa,
                    Encoding::Der,
                    PkiMethod::Get,
                ),
                (ContentCipher::DesCbc, DigestAlg::Sha1, SignatureOid::DigestWithRsa, Encoding::Der, PkiMethod::Post),
            ];
            let mut issued = None;
            for (i, (cipher, digest, signature_oid, encoding, method)) in cases.into_iter().enumerate() {
                let label = format!("{cipher:?}/{digest:?}/{signature_oid:?}/{encoding:?}/{method:?}");
                let options = MessageOptions { cipher, digest, signature_oid, encoding, ..MessageOptions::default() };
                let mut spec = CsrSpec::new(format!("mm-{i}"), Some(CHALLENGE));
                spec.subject_alt_names = vec![SubjectAltName::Dns(format!("mm-{i}.example"))];
                let e = client
                    .enroll(&key, &spec, &options, method)
                    .unwrap_or_else(|err| panic!("{label}: {err}\n{}", peer.log()));
                let cert = e.issued().unwrap();
                let c = scep_engine::x509::CertificateRef::parse(cert).unwrap();
                assert_eq!(c.spki.raw, key.spki_der(), "{label}");
                assert_eq!(c.subject_common_names().unwrap(), vec![format!("mm-{i}")], "{label}");
                let ca_ref = scep_engine::x509::CertificateRef::parse(ca.ca()).unwrap();
                c.verify_signed_by(ca_ref.spki.public_key().unwrap()).unwrap();
                assert_eq!(e.reply.recipient_nonce, e.request.sender_nonce);
                // micromdm answers in single DES + SHA-1 whatever we sent.
                assert_eq!(e.reply.content_cipher, Some(ContentCipher::DesCbc), "{label}");
                assert_eq!(e.reply.digest, DigestAlg::Sha1, "{label}");
                assert!(e.reply.strict_der, "{label}");

                // The same reply checked against a request with another nonce
                // or transactionID is refused; so is a corrupted reply.
                let mut other = e.request.clone();
                other.sender_nonce[0] ^= 1;
                assert!(
                    matches!(verify_cert_rep(&e.reply.raw, &other, &key, &e.ca.certificates), Err(ClientError::Protocol(m)) if m.contains("recipientNonce"))
                );
                let mut other = e.request.clone();
                other.transaction_id.push('x');
                assert!(verify_cert_rep(&e.reply.raw, &other, &key, &e.ca.certificates).is_err());
                let mut corrupt = e.reply.raw.clone();
                let at = corrupt.len() - 10;
                corrupt[at] ^= 0x40;
                assert!(verify_cert_rep(&corrupt, &e.request, &key, &e.ca.certificates).is_err());
                let stranger = DeviceKey::pregenerated(4).unwrap();
                assert!(verify_cert_rep(&e.reply.raw, &e.request, &stranger, &e.ca.certificates).is_err());
                issued = Some(cert.to_vec());
            }

            // A wrong challenge is answered FAILURE with a failInfo.
            let e = client
                .enroll(&key, &CsrSpec::new("mm-bad", Some("wrong")), &MessageOptions::default(), PkiMethod::Post)
                .unwrap();
            assert_eq!(e.reply.status, PkiStatus::FAILURE);
            assert!(e.reply.fail_info.is_some());
            assert!(e.issued().is_err());

            // RenewalReq signed with the issued certificate and key.
            let issued = issued.unwrap();
            let new_key = DeviceKey::pregenerated(5).unwrap();
            let csr = build_csr(&new_key, &CsrSpec::new("mm-4", Some(CHALLENGE))).unwrap();
            let req = build_pki_message(
                &MessageBody::RenewalReq(csr),
                Signer { certificate: &issued, key: &key },
                ca.recipient(),
                &MessageOptions::default(),
            )
            .unwrap();
            // The reply is encrypted to the signer (the old certificate), so it is opened with the old key.
            let rep = client.transact(&req, &key, &ca, PkiMethod::Post).unwrap();
            assert_eq!(rep.status, PkiStatus::SUCCESS, "{:?} {:?}\n{}", rep.status, rep.fail_info, peer.log());
            let renewed = scep_engine::x509::CertificateRef::parse(rep.issued_certificate(&new_key).unwrap()).unwrap();
            assert_eq!(renewed.spki.raw, new_key.spki_der());
        });
    }

    /// micromdm's scepclient enrolls against micromdm's scepserver through the
    /// harness; certmonger sends its request but (as INTEROP.md documents)
    /// cannot read micromdm's single-DES reply, and the harness must say so.
    #[test]
    fn real_client_harness_against_micromdm_scepserver() {
        netns_test("real_clients::tests::real_client_harness_against_micromdm_scepserver", || {
            let peer = PeerScepServer::start(CHALLENGE, 18081).unwrap();
            let got = scepclient_enroll(&peer.url, CHALLENGE, "harness-mm", Duration::from_secs(60))
                .unwrap_or_else(|e| panic!("{e}\n{}", peer.log()));
            let c = scep_engine::x509::CertificateRef::parse(&got.der).unwrap();
            assert_eq!(c.subject_common_names().unwrap(), vec!["harness-mm".to_string()]);
            assert!(got.key_pem.contains("PRIVATE KEY"));
            let bad = scepclient_enroll(&peer.url, "wrong", "harness-bad", Duration::from_secs(60)).unwrap_err();
            assert!(matches!(bad, RealClientError::Failed { .. }), "{bad}");

            let ca_pem = peer.ca_pem().unwrap();
            let err = certmonger_enroll(&peer.url, CHALLENGE, "harness-cm", Some(&ca_pem), Duration::from_secs(60))
                .expect_err("certmonger cannot decrypt micromdm's DES reply on OpenSSL 3");
            let text = err.to_string();
            assert!(text.contains("status:"), "the error must carry getcert's status: {text}");
            assert!(
                peer.log().matches("PKIOperation").count() >= 2,
                "certmonger never sent its request:\n{}",
                peer.log()
            );
        });
    }

    #[test]
    fn peer_server_refuses_to_run_outside_a_namespace() {
        if in_private_netns() {
            return;
        }
        assert!(PeerScepServer::start(CHALLENGE, 18082).is_err());
    }
}
