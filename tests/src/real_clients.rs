//! Real third-party SCEP clients, and a real peer server, for interop tests.
//!
//! - [`certmonger_enroll`] / [`Certmonger`]: a private certmonger daemon (no
//!   D-Bus) enrolling through `getcert add-scep-ca` + `getcert request -w`.
//! - [`scepclient_enroll`]: micromdm's `scepclient` (Debian package `scep`).
//! - [`strongswan_enroll`]: strongSwan's `pki --scepca` + `pki --scep`
//!   (Debian `strongswan-pki` and `libstrongswan-extra-plugins`).
//! - [`pyscep_enroll`] and [`scepreq_enroll`]: the Python clients PyScep 0.0.14
//!   and scepreq 0.1.1 (PyPI), through the driver scripts in `tests/clients/`
//!   ([`client_script`]), which also get oscrypto 1.3.0 loading on OpenSSL
//!   3.0.10+ (`tests/clients/oscrypto_openssl3.py` says why and how).
//! - [`PeerScepServer`]: micromdm's `scepserver`. It binds every interface,
//!   so it only starts inside a private network namespace: see
//!   [`run_in_private_netns`].
//!
//! Every external process runs with a bounded timeout and is killed when its
//! handle drops; its output is kept in the error for diagnostics. A client
//! that is not installed is [`RealClientError::MissingTool`], whose message
//! says how to install it (`.ci/run` installs all of them).

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
    /// The client is not installed: what is missing, and how to install it.
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
            Self::MissingTool(t) => write!(f, "real client not installed: {t}"),
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

/// How to install the tool `name` on Debian (what `.ci/run` does).
fn install_hint(name: &str) -> &'static str {
    match name {
        "certmonger" | "getcert" => "apt-get install certmonger",
        "scepclient" | "scepserver" => "apt-get install scep",
        "pki" => "apt-get install strongswan-pki libstrongswan-extra-plugins",
        "python3" => "apt-get install python3 python3-pip",
        "openssl" => "apt-get install openssl",
        _ => "see .ci/run",
    }
}

fn require_tool(name: &str) -> Result<PathBuf> {
    find_tool(name).ok_or_else(|| {
        RealClientError::MissingTool(format!(
            "{name} is not on PATH, /usr/sbin or /usr/lib/certmonger; install it with `{}` (.ci/run does)",
            install_hint(name)
        ))
    })
}

/// Removes proxy settings from `cmd`'s environment: every client here talks to
/// a server on loopback, and curl- or requests-based clients would otherwise
/// send that traffic to a proxy named in the environment.
fn without_proxies(cmd: &mut Command) -> &mut Command {
    for var in ["http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"] {
        cmd.env_remove(var);
    }
    cmd.env("no_proxy", "127.0.0.1,localhost,::1").env("NO_PROXY", "127.0.0.1,localhost,::1")
}

/// Output of a bounded run.
#[derive(Debug)]
pub struct RunOutput {
    /// Exit status.
    pub status: ExitStatus,
    /// stdout then stderr, as text.
    pub output: String,
    /// stdout alone, as text (for tools that write their result there).
    pub stdout: String,
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
    let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
    let output = format!("{stdout}{}", std::fs::read_to_string(&err_path).unwrap_or_default());
    match status {
        Some(status) => Ok(RunOutput { status, output, stdout }),
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
    without_proxies(&mut cmd)
        .current_dir(dir.path())
        .args(["-server-url", url, "-challenge", challenge, "-cn", cn, "-private-key"])
        .arg(&key)
        .arg("-certificate")
        .arg(&cert);
    let run = run_bounded("scepclient", &mut cmd, dir.path(), timeout)?;
    if !run.status.success() || !cert.is_file() {
        return Err(RealClientError::Failed {
            tool: "scepclient".into(),
            detail: format!("{}, certificate written: {}", run.status, cert.is_file()),
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
        without_proxies(&mut cmd)
            .args(["-n", "-L", "-P"])
            .arg(&socket)
            .arg("-p")
            .arg(dir.path().join("certmonger.pid"));
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
            Err(self.failure("getcert add-scep-ca", run.status.to_string(), run.output))
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
            format!("{}, no certificate written", run.status),
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

/// The path of a driver script in `tests/clients/` (e.g. `pyscep_enroll.py`).
pub fn client_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("clients").join(name)
}

/// A Python package a driver needs: import name, distribution name, and the
/// version the suite is pinned to (`.ci/run` installs exactly these).
struct PythonRequirement {
    module: &'static str,
    distribution: &'static str,
    version: &'static str,
}

/// PyScep's requirements. PyScep 0.0.14 declares no dependencies of its own;
/// it imports those that scepreq declares, pinned here to the versions tested.
const PYSCEP_REQUIREMENTS: &[PythonRequirement] = &[
    PythonRequirement { module: "scep", distribution: "PyScep", version: "0.0.14" },
    PythonRequirement { module: "oscrypto", distribution: "oscrypto", version: "1.3.0" },
    PythonRequirement { module: "asn1crypto", distribution: "asn1crypto", version: "1.5.1" },
    PythonRequirement { module: "csrbuilder", distribution: "csrbuilder", version: "0.10.1" },
    PythonRequirement { module: "certbuilder", distribution: "certbuilder", version: "0.14.2" },
];

/// scepreq's requirements (it declares the same dependencies).
const SCEPREQ_REQUIREMENTS: &[PythonRequirement] = &[
    PythonRequirement { module: "scepreq", distribution: "scepreq", version: "0.1.1" },
    PythonRequirement { module: "oscrypto", distribution: "oscrypto", version: "1.3.0" },
    PythonRequirement { module: "asn1crypto", distribution: "asn1crypto", version: "1.5.1" },
    PythonRequirement { module: "csrbuilder", distribution: "csrbuilder", version: "0.10.1" },
    PythonRequirement { module: "certbuilder", distribution: "certbuilder", version: "0.14.2" },
];

/// The `python3 -m pip install` line for `requirements`.
fn pip_install_line(requirements: &[PythonRequirement]) -> String {
    let pins: Vec<String> = requirements.iter().map(|r| format!("{}=={}", r.distribution, r.version)).collect();
    format!("python3 -m pip install {}", pins.join(" "))
}

/// Checks that `python3` has every requirement at its pinned version.
fn require_python(client: &str, requirements: &[PythonRequirement], dir: &Path) -> Result<PathBuf> {
    let python = require_tool("python3")?;
    let probe = "import importlib.metadata as md, importlib.util as u, sys\n\
                 bad = []\n\
                 for module, dist, want in zip(*[iter(sys.argv[1:])] * 3):\n\
                 \x20   try:\n\
                 \x20       have = md.version(dist)\n\
                 \x20   except md.PackageNotFoundError:\n\
                 \x20       have = None\n\
                 \x20   if u.find_spec(module) is None or have != want:\n\
                 \x20       bad.append('%s %s (found: %s)' % (dist, want, have))\n\
                 print('; '.join(bad))\n\
                 sys.exit(1 if bad else 0)\n";
    let mut cmd = Command::new(&python);
    cmd.env("PYTHONDONTWRITEBYTECODE", "1").arg("-c").arg(probe);
    for r in requirements {
        cmd.args([r.module, r.distribution, r.version]);
    }
    let run = run_bounded(&format!("{client} requirements"), &mut cmd, dir, Duration::from_secs(30))?;
    if run.status.success() {
        return Ok(python);
    }
    Err(RealClientError::MissingTool(format!(
        "{client} needs {}; install with `{}` (.ci/run does)",
        run.output.trim(),
        pip_install_line(requirements)
    )))
}

/// A `python3 tests/clients/<script>` command, bounded by the caller, with the
/// driver directory on `PYTHONPATH`, no bytecode written into the source tree,
/// no proxy, and `dir` as its working directory.
fn python_driver(python: &Path, script: &str, dir: &Path) -> Result<Command> {
    let path = client_script(script);
    if !path.is_file() {
        return Err(RealClientError::MissingTool(format!(
            "driver script {} (part of the source tree)",
            path.display()
        )));
    }
    let mut cmd = Command::new(python);
    without_proxies(&mut cmd)
        .current_dir(dir)
        .env("PYTHONPATH", client_script(""))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONUNBUFFERED", "1")
        .arg(path);
    Ok(cmd)
}

/// Enrols with PyScep 0.0.14 as its README does (`tests/clients/pyscep_enroll.py`):
/// a fresh RSA-2048 key, a self-signed identity certificate and a CSR with
/// keyUsage digitalSignature + keyEncipherment (csrbuilder adds extKeyUsage
/// serverAuth + clientAuth), `Client.enrol`. PyScep chooses the certificates
/// from GetCACert itself: it encrypts to an RA certificate with keyEncipherment
/// and without digitalSignature, nonRepudiation, dataEncipherment, else to the
/// CA; the driver prints its choice.
///
/// # Errors
/// Missing Python packages ([`RealClientError::MissingTool`] with the pip
/// line), timeout, a FAILURE/PENDING reply or any other error (the output holds
/// the Python traceback).
pub fn pyscep_enroll(url: &str, challenge: &str, cn: &str, timeout: Duration) -> Result<IssuedCertificate> {
    let dir = tempfile::tempdir()?;
    let python = require_python("PyScep", PYSCEP_REQUIREMENTS, dir.path())?;
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let mut cmd = python_driver(&python, "pyscep_enroll.py", dir.path())?;
    cmd.args(["--url", url, "--challenge", challenge, "--cn", cn, "--cert"]).arg(&cert).arg("--key").arg(&key);
    let run = run_bounded("PyScep", &mut cmd, dir.path(), timeout)?;
    if !run.status.success() || !cert.is_file() {
        return Err(RealClientError::Failed {
            tool: "PyScep".into(),
            detail: format!("{}, certificate written: {}", run.status, cert.is_file()),
            output: run.output,
        });
    }
    read_issued(&cert, &key, run.output)
}

/// Enrols with scepreq 0.1.1's own command line on its defaults
/// (`tests/clients/scepreq_enroll.py -u URL -p PW -s CN=<cn>`): RSA-2048,
/// keyUsage digitalSignature + keyEncipherment, EKU clientAuth. It chooses the
/// certificate to encrypt to as PyScep does (it is derived from it).
///
/// # Errors
/// As [`pyscep_enroll`].
pub fn scepreq_enroll(url: &str, challenge: &str, cn: &str, timeout: Duration) -> Result<IssuedCertificate> {
    let dir = tempfile::tempdir()?;
    let python = require_python("scepreq", SCEPREQ_REQUIREMENTS, dir.path())?;
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let subject = format!("CN={cn}");
    let mut cmd = python_driver(&python, "scepreq_enroll.py", dir.path())?;
    cmd.args(["-u", url, "-p", challenge, "-s", &subject, "--output-cert"]).arg(&cert).arg("--output-key").arg(&key);
    let run = run_bounded("scepreq", &mut cmd, dir.path(), timeout)?;
    if !run.status.success() || !cert.is_file() {
        return Err(RealClientError::Failed {
            tool: "scepreq".into(),
            detail: format!("{}, certificate written: {}", run.status, cert.is_file()),
            output: run.output,
        });
    }
    read_issued(&cert, &key, run.output)
}

/// keyUsage bits of a certificate (RFC 5280 §4.2.1.3): `(digitalSignature,
/// keyEncipherment)`; `None` when it has no keyUsage extension.
fn signature_and_encipherment_bits(cert: &scep_engine::x509::CertificateRef<'_>) -> Option<(bool, bool)> {
    let (_, value) = cert.extension(scep_engine::oid::KEY_USAGE).ok()??;
    let bits = scep_engine::wire::parse_single(value).ok().filter(|t| t.tag == scep_engine::wire::tag::BIT_STRING)?;
    let first = bits.contents.get(1).copied().unwrap_or(0);
    Some((first & 0x80 != 0, first & 0x20 != 0))
}

/// basicConstraints cA = TRUE (RFC 5280 §4.2.1.9).
fn is_ca_certificate(cert: &scep_engine::x509::CertificateRef<'_>) -> bool {
    let Ok(Some((_, value))) = cert.extension(scep_engine::oid::BASIC_CONSTRAINTS) else { return false };
    scep_engine::wire::parse_single(value)
        .ok()
        .and_then(|seq| seq.reader().optional(scep_engine::wire::tag::BOOLEAN).ok().flatten())
        .is_some_and(|b| b.contents.first().is_some_and(|&v| v != 0))
}

/// What `pki --scepca` wrote, and which files an operator passes to `pki --scep`.
#[derive(Clone, Debug)]
pub struct StrongswanCaFiles {
    /// Every certificate file written (`ca*.pem`, `ra*.pem`), in name order.
    pub written: Vec<PathBuf>,
    /// `--cacert-enc`: the RA certificate with keyEncipherment (one without
    /// digitalSignature preferred), else the CA certificate.
    pub encryption: PathBuf,
    /// `--cacert-sig`: the RA certificate with digitalSignature (one without
    /// keyEncipherment preferred), else the CA certificate.
    pub signature: PathBuf,
    /// `--cacert`: the CA certificates.
    pub ca: Vec<PathBuf>,
}

/// `pki --scepca --url URL --caout ca.pem --raout ra.pem --outform pem` in
/// `dir`, then the operator's reading of the files (strongSwan leaves the
/// choice of `--cacert-enc` / `--cacert-sig` to the user; the man page's
/// example passes the RA certificate for encryption and the issuing CA for
/// signature only when the RA cannot sign).
///
/// # Errors
/// Missing `pki`, timeout, non-zero exit, or no certificate written.
pub fn strongswan_scepca(url: &str, dir: &Path, timeout: Duration) -> Result<StrongswanCaFiles> {
    let pki = require_tool("pki")?;
    let mut cmd = Command::new(&pki);
    without_proxies(&mut cmd).current_dir(dir).args([
        "--scepca",
        "--url",
        url,
        "--caout",
        "ca.pem",
        "--raout",
        "ra.pem",
        "--outform",
        "pem",
        "--force",
    ]);
    let run = run_bounded("pki --scepca", &mut cmd, dir, timeout)?;
    let fail = |detail: String, output: &str| RealClientError::Failed {
        tool: "pki --scepca".into(),
        detail,
        output: output.to_string(),
    };
    if run.output.contains("no capable fetcher found") {
        return Err(RealClientError::MissingTool(format!(
            "strongSwan's HTTP fetcher (\"no capable fetcher found\"); install it with `{}`",
            install_hint("pki")
        )));
    }
    if !run.status.success() {
        return Err(fail(run.status.to_string(), &run.output));
    }
    let mut written: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            (name.starts_with("ca") || name.starts_with("ra")) && name.ends_with(".pem")
        })
        .collect();
    written.sort();
    let mut certificates = Vec::new();
    for path in &written {
        let pem = std::fs::read_to_string(path)?;
        let der = scep_engine::pem::certificates(&pem)
            .ok()
            .and_then(|c| c.into_iter().next())
            .ok_or_else(|| fail(format!("{} holds no certificate", path.display()), &run.output))?;
        certificates.push((path.clone(), der));
    }
    choose_strongswan_files(written, &certificates).map_err(|detail| fail(detail, &run.output))
}

/// The operator's reading of what `pki --scepca` wrote (`(file, DER)` in
/// name order): CA certificates (basicConstraints cA) go to `--cacert`; among
/// the others, `--cacert-enc` is one with keyEncipherment and without
/// digitalSignature, else one with keyEncipherment or no keyUsage, else the
/// last CA; `--cacert-sig` likewise with digitalSignature.
fn choose_strongswan_files(
    written: Vec<PathBuf>,
    certificates: &[(PathBuf, Vec<u8>)],
) -> std::result::Result<StrongswanCaFiles, String> {
    let mut ca = Vec::new();
    let mut ra = Vec::new();
    for (path, der) in certificates {
        let cert = scep_engine::x509::CertificateRef::parse(der).map_err(|e| format!("{}: {e:?}", path.display()))?;
        if is_ca_certificate(&cert) {
            ca.push(path.clone());
        } else {
            ra.push((path.clone(), signature_and_encipherment_bits(&cert)));
        }
    }
    // (digitalSignature, keyEncipherment) of the purpose wanted, and of the other one.
    let pick = |wanted: fn((bool, bool)) -> (bool, bool)| {
        let only = ra.iter().find(|(_, ku)| ku.map(wanted) == Some((true, false)));
        let also = ra.iter().find(|(_, ku)| ku.is_none_or(|k| wanted(k).0));
        only.or(also).map(|(p, _)| p.clone()).or_else(|| ca.last().cloned())
    };
    let encryption = pick(|(sig, enc)| (enc, sig));
    let signature = pick(|(sig, enc)| (sig, enc));
    match (encryption, signature) {
        (Some(encryption), Some(signature)) => Ok(StrongswanCaFiles { written, encryption, signature, ca }),
        _ => Err(format!("no usable certificate among {written:?}")),
    }
}

/// Enrols with strongSwan's `pki`, as its man pages do: `pki --gen` (RSA-2048),
/// [`strongswan_scepca`], then `pki --scep --url URL --in key.pem --dn CN=<cn>
/// --password PW --cacert-enc … --cacert-sig … --cacert ca.pem --outform pem`
/// on its defaults otherwise (AES-128-CBC when the server's caps let 5.9.8
/// choose it, SHA-256, PKCS#1 v1.5). The log starts with which files were
/// passed as `--cacert-enc` and `--cacert-sig`.
///
/// # Errors
/// Missing `pki` or its HTTP fetcher, timeout, non-zero exit (strongSwan
/// prints why, e.g. "only RSA digest encryption supported"), or no certificate.
pub fn strongswan_enroll(url: &str, challenge: &str, cn: &str, timeout: Duration) -> Result<IssuedCertificate> {
    let pki = require_tool("pki")?;
    let dir = tempfile::tempdir()?;
    let mut keygen = Command::new(&pki);
    keygen.current_dir(dir.path()).args(["--gen", "--type", "rsa", "--size", "2048", "--outform", "pem"]);
    let run = run_bounded("pki --gen", &mut keygen, dir.path(), timeout)?;
    if !run.status.success() || !run.stdout.contains("PRIVATE KEY") {
        return Err(RealClientError::Failed {
            tool: "pki --gen".into(),
            detail: run.status.to_string(),
            output: run.output,
        });
    }
    let key = dir.path().join("key.pem");
    std::fs::write(&key, &run.stdout)?;
    let files = strongswan_scepca(url, dir.path(), timeout)?;
    let mut cmd = Command::new(&pki);
    without_proxies(&mut cmd)
        .current_dir(dir.path())
        .args(["--scep", "--url", url, "--in"])
        .arg(&key)
        .args(["--dn", &format!("CN={cn}"), "--password", challenge, "--cacert-enc"])
        .arg(&files.encryption)
        .arg("--cacert-sig")
        .arg(&files.signature);
    for ca in &files.ca {
        cmd.arg("--cacert").arg(ca);
    }
    // Bounded polling in case the server answers PENDING.
    cmd.args(["--outform", "pem", "--interval", "2", "--maxpolltime", "20"]);
    let run = run_bounded("pki --scep", &mut cmd, dir.path(), timeout)?;
    let choice = format!(
        "pki --scepca wrote {:?}; --cacert-enc {}, --cacert-sig {}\n",
        files.written.iter().filter_map(|p| p.file_name()).collect::<Vec<_>>(),
        files.encryption.display(),
        files.signature.display()
    );
    if !run.status.success() || !run.stdout.contains("BEGIN CERTIFICATE") {
        return Err(RealClientError::Failed {
            tool: "pki --scep".into(),
            detail: format!("{}, no certificate on stdout", run.status),
            output: format!("{choice}{}", run.output),
        });
    }
    let cert = dir.path().join("cert.pem");
    std::fs::write(&cert, &run.stdout)?;
    read_issued(&cert, &key, format!("{choice}{}", run.output))
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
                detail: run.status.to_string(),
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
            Err(reason) => crate::missing_tool(
                test_path,
                &format!("a private network namespace ({reason})"),
                "run as root with unshare and ip (apt-get install util-linux iproute2)",
            ),
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

    /// A client that is not installed is an error that names it and says how
    /// to install it (the suite fails with it instead of skipping).
    #[test]
    fn a_missing_client_is_reported_with_its_install_command() {
        let err = require_tool("scep-tests-no-such-client").unwrap_err();
        assert!(
            matches!(&err, RealClientError::MissingTool(m) if m.contains("scep-tests-no-such-client") && m.contains("install it with")),
            "{err}"
        );
        let err = require_tool("pki").map(|_| ()).map_err(|e| e.to_string());
        if let Err(text) = err {
            assert!(text.contains("apt-get install strongswan-pki libstrongswan-extra-plugins"), "{text}");
        }
        let dir = tempfile::tempdir().unwrap();
        let missing = [PythonRequirement {
            module: "scep_tests_no_such_module",
            distribution: "scep-tests-no-such-dist",
            version: "9.9.9",
        }];
        let err = require_python("nothing", &missing, dir.path()).unwrap_err();
        assert!(
            matches!(&err, RealClientError::MissingTool(m)
                if m.contains("python3 -m pip install scep-tests-no-such-dist==9.9.9") && m.contains("found: None")),
            "{err}"
        );
    }

    /// oscrypto 1.3.0 loads through `tests/clients/oscrypto_openssl3.py` and
    /// reads the same libcrypto version as the `openssl` command (3.0.19 has a
    /// two-digit patch number, which the unfixed pattern cannot match).
    #[test]
    fn oscrypto_loads_with_the_version_pattern_fix() {
        let dir = tempfile::tempdir().unwrap();
        let python = require_python("PyScep", PYSCEP_REQUIREMENTS, dir.path()).unwrap_or_else(|e| panic!("{e}"));
        let mut cmd = Command::new(python);
        cmd.env("PYTHONPATH", client_script("")).env("PYTHONDONTWRITEBYTECODE", "1").arg("-c").arg(
            "import oscrypto_openssl3\nfrom oscrypto._openssl import _libcrypto as l\n\
                 print('.'.join(str(p) for p in l.libcrypto_version_info))",
        );
        let run = run_bounded("python3 oscrypto", &mut cmd, dir.path(), Duration::from_secs(60)).unwrap();
        assert!(run.status.success(), "{}", run.output);
        let mut openssl = Command::new(require_tool("openssl").unwrap());
        openssl.arg("version");
        let version = run_bounded("openssl version", &mut openssl, dir.path(), Duration::from_secs(30)).unwrap();
        let expected = version.stdout.split_whitespace().nth(1).unwrap_or_default().to_string();
        assert!(!expected.is_empty(), "{}", version.output);
        assert_eq!(run.stdout.trim(), expected.trim_end_matches(char::is_alphabetic), "{}", run.output);
    }

    /// A self-signed certificate made by `openssl req -x509` with these extensions.
    fn openssl_certificate(dir: &Path, name: &str, extensions: &[&str]) -> (PathBuf, Vec<u8>) {
        let path = dir.join(format!("{name}.pem"));
        let mut cmd = Command::new(require_tool("openssl").unwrap_or_else(|e| panic!("{e}")));
        cmd.args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", &format!("/CN={name}")])
            .arg("-keyout")
            .arg(dir.join(format!("{name}.key")))
            .arg("-out")
            .arg(&path);
        for ext in extensions {
            cmd.args(["-addext", ext]);
        }
        let run = run_bounded("openssl req", &mut cmd, dir, Duration::from_secs(60)).unwrap();
        assert!(run.status.success(), "{}", run.output);
        let der = scep_engine::pem::certificates(&std::fs::read_to_string(&path).unwrap()).unwrap().remove(0);
        (path, der)
    }

    /// The files handed to `pki --scep` for each RA arrangement: one RA with
    /// both key usages; NDES's signing + encryption pair (in either order);
    /// the CA alone.
    #[test]
    fn strongswan_gets_the_ra_certificates_by_key_usage() {
        let dir = tempfile::tempdir().unwrap();
        let ca = openssl_certificate(
            dir.path(),
            "ca",
            &["basicConstraints=critical,CA:TRUE", "keyUsage=critical,keyCertSign,cRLSign"],
        );
        let both = openssl_certificate(
            dir.path(),
            "ra-both",
            &["basicConstraints=critical,CA:FALSE", "keyUsage=critical,digitalSignature,keyEncipherment"],
        );
        let sig = openssl_certificate(
            dir.path(),
            "ra-sig",
            &["basicConstraints=critical,CA:FALSE", "keyUsage=critical,digitalSignature"],
        );
        let enc = openssl_certificate(
            dir.path(),
            "ra-enc",
            &["basicConstraints=critical,CA:FALSE", "keyUsage=critical,keyEncipherment"],
        );
        let choose = |certs: Vec<(PathBuf, Vec<u8>)>| {
            choose_strongswan_files(certs.iter().map(|(p, _)| p.clone()).collect(), &certs).unwrap()
        };
        let one = choose(vec![ca.clone(), both.clone()]);
        assert_eq!((one.encryption, one.signature, one.ca), (both.0.clone(), both.0.clone(), vec![ca.0.clone()]));
        for pair in [vec![sig.clone(), enc.clone(), ca.clone()], vec![ca.clone(), enc.clone(), sig.clone()]] {
            let two = choose(pair);
            assert_eq!((two.encryption, two.signature, two.ca), (enc.0.clone(), sig.0.clone(), vec![ca.0.clone()]));
        }
        let alone = choose(vec![ca.clone()]);
        assert_eq!((alone.encryption, alone.signature), (ca.0.clone(), ca.0.clone()));
        let err = choose_strongswan_files(Vec::new(), &[]).unwrap_err();
        assert!(err.contains("no usable certificate"), "{err}");
    }

    #[test]
    fn peer_server_refuses_to_run_outside_a_namespace() {
        if in_private_netns() {
            return;
        }
        assert!(PeerScepServer::start(CHALLENGE, 18082).is_err());
    }
}
