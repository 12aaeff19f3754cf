//! TLS material for tests that start scepd with `[server.tls]`: a throwaway
//! CA and a P-256 server certificate for `localhost` and `127.0.0.1`, made
//! with the `openssl` command line (a test without it fails naming it).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The files [`server_certificate`] wrote.
#[derive(Clone, Debug)]
pub struct ServerTls {
    /// The CA certificate, PEM (`ca.pem`): what clients trust.
    pub ca_pem: PathBuf,
    /// The same CA certificate, DER.
    pub ca_der: Vec<u8>,
    /// The server certificate, PEM (`server.pem`): `[server.tls] cert`.
    pub cert: PathBuf,
    /// Its key, PEM, mode 0600 as scepd requires (`server.key`): `[server.tls] key`.
    pub key: PathBuf,
}

impl ServerTls {
    /// The `[server.tls]` section naming these files.
    pub fn toml_section(&self) -> String {
        format!("[server.tls]\ncert = \"{}\"\nkey = \"{}\"\n", self.cert.display(), self.key.display())
    }
}

/// Writes a CA (`ca.pem`, `ca.key`) and a server certificate signed by it
/// (`server.pem`, `server.key`; subjectAltName `DNS:localhost`,
/// `IP:127.0.0.1`; serverAuth) into `dir`.
///
/// # Panics
/// When `openssl` is missing or fails (a test setup error).
pub fn server_certificate(dir: &Path) -> ServerTls {
    let openssl = |args: &[&str]| {
        let out = match Command::new("openssl").current_dir(dir).args(args).output() {
            Ok(out) => out,
            Err(e) => {
                crate::missing_tool("tls::server_certificate", &format!("openssl ({e})"), "apt-get install openssl")
            }
        };
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
    let ca_args = [
        "-days",
        "2",
        "-subj",
        "/CN=scep-tests TLS CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign",
    ];
    openssl(&[&["req", "-x509"][..], &ec, &ca_args].concat());
    openssl(&[&["req"][..], &ec, &["-subj", "/CN=localhost", "-keyout", "server.key", "-out", "server.csr"]].concat());
    let ext = "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n";
    if let Err(e) = std::fs::write(dir.join("server.ext"), ext) {
        panic!("{}: {e}", dir.display());
    }
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-out",
        "server.pem",
        "-extfile",
        "server.ext",
    ]);
    openssl(&["x509", "-in", "ca.pem", "-outform", "DER", "-out", "ca.der"]);
    use std::os::unix::fs::PermissionsExt as _;
    let key = dir.join("server.key");
    if let Err(e) = std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)) {
        panic!("{}: {e}", key.display());
    }
    let ca_der = std::fs::read(dir.join("ca.der")).unwrap_or_else(|e| panic!("ca.der: {e}"));
    ServerTls { ca_pem: dir.join("ca.pem"), ca_der, cert: dir.join("server.pem"), key }
}
