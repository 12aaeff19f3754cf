//! `scep-load` over HTTPS against the real scepd (issue 20): the device
//! pattern (GetCACaps, GetCACert, PKIOperation) on one connection per device
//! with TLS session resumption, every request on its own connection without
//! it, the CA taken from `--cacert` or `SSL_CERT_FILE`; and the server does not
//! log a warning per handshake when a client sends an IP address as SNI.

use std::path::Path;
use std::process::Command;

use scep_tests::server::{Scepd, ScepdOptions};

/// Runs `scep-load run` with `args` (and `env`), returns its JSON summary.
fn scep_load(args: &[&str], env: &[(&str, &Path)]) -> serde_json::Value {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_scep-load"));
    cmd.arg("run").args(args).args(["--progress", "false"]).env_remove("SSL_CERT_FILE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("scep-load runs");
    assert!(
        out.status.success(),
        "scep-load {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    serde_json::from_slice(&out.stdout).expect("a JSON summary on stdout")
}

#[test]
fn the_device_pattern_over_https_resumes_sessions_and_the_server_logs_no_sni_noise() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tls = scep_tests::tls::server_certificate(dir.path());
    let server = Scepd::start(ScepdOptions::with_config(format!(
        "{}\n[[profile]]\nname = \"corp\"\nchallenge_password = \"load-https\"\n",
        tls.toml_section()
    )))
    .unwrap_or_else(|e| panic!("{e}"));
    let url = server.profile_url("corp").replace("127.0.0.1", "localhost");
    assert!(url.starts_with("https://localhost:"), "{url}");
    let cache = dir.path().join("cache");
    let cache = cache.to_str().expect("utf-8 path");
    let ca = tls.ca_pem.to_str().expect("utf-8 path");
    let common = ["--challenge", "load-https", "--devices", "4", "--concurrency", "4", "--cache", cache];

    // One connection per device, its three requests on it, sessions resumed.
    let s = scep_load(
        &[
            &[
                "--url",
                &url,
                "--cacert",
                ca,
                "--operation",
                "device",
                "--connections",
                "per-device",
                "--requests",
                "24",
            ][..],
            &common,
        ]
        .concat(),
        &[],
    );
    assert_eq!(s["ok"], 24, "{s:#}");
    assert_eq!(s["operation"], "device", "{s:#}");
    assert_eq!(s["connections"], 24, "a connection per device: {s:#}");
    let resumed = s["tls"]["resumed"].as_u64().expect("TLS summary");
    // Only a worker's first connection may need a full handshake.
    assert!(resumed >= 20, "sessions must be resumed: {s:#}");

    // Every request on its own connection, no resumption; the CA from SSL_CERT_FILE.
    let s = scep_load(
        &[
            &[
                "--url",
                &url,
                "--operation",
                "device",
                "--connections",
                "per-request",
                "--tls-resumption",
                "off",
                "--requests",
                "6",
            ][..],
            &common,
        ]
        .concat(),
        &[("SSL_CERT_FILE", tls.ca_pem.as_path())],
    );
    assert_eq!(s["ok"], 6, "{s:#}");
    assert_eq!(s["connections"], 18, "three connections per device: {s:#}");
    assert_eq!(s["tls"]["resumed"], 0, "{s:#}");
    assert_eq!(s["tls"]["resumption"], false, "{s:#}");

    // Without --cacert or SSL_CERT_FILE an https:// target is refused up front.
    let out = Command::new(env!("CARGO_BIN_EXE_scep-load"))
        .args(["run", "--url", &url, "--operation", "getcacaps", "--requests", "1"])
        .env_remove("SSL_CERT_FILE")
        .output()
        .expect("scep-load runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--cacert"), "{}", String::from_utf8_lossy(&out.stderr));

    // An OpenSSL client sending the IP address as SNI (as wrk does for
    // https://127.0.0.1 URLs) completes its handshake without a warning in
    // the server's log.
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{}", server.port()), "-servername", "127.0.0.1"])
        .args(["-CAfile", ca, "-verify_return_error", "-brief"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl s_client runs");
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("Verification: OK") || text.contains("CONNECTION ESTABLISHED"), "{text}");
    std::thread::sleep(std::time::Duration::from_millis(200));
    let log = server.stderr();
    assert!(!log.contains("Illegal SNI"), "per-handshake SNI noise in the server log:\n{log}");
}

/// The rustls reference server of `benches/scripts/tls-connection-ceiling.sh`
/// (`http-baseline raw --tls`) must resume sessions as scepd does, or the
/// per-connection cost it stands for would be a full handshake's.
#[test]
fn the_tls_reference_server_resumes_sessions_like_scepd() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tls = scep_tests::tls::server_certificate(dir.path());
    let mut server = Command::new(env!("CARGO_BIN_EXE_http-baseline"))
        .args(["raw", "127.0.0.1:0", "--tls"])
        .args([&tls.cert, &tls.key])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("http-baseline starts");
    let mut first_line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(server.stdout.take().expect("stdout")), &mut first_line)
        .expect("http-baseline prints its address");
    let url = first_line.trim().rsplit(' ').next().expect("an address").replace("127.0.0.1", "localhost");
    assert!(url.starts_with("https://localhost:"), "{first_line}");
    let ca = tls.ca_pem.to_str().expect("utf-8 path");
    let s = scep_load(
        &[
            "--url",
            &format!("{url}/scep"),
            "--cacert",
            ca,
            "--operation",
            "getcacaps",
            "--connections",
            "per-request",
            "--requests",
            "40",
            "--concurrency",
            "4",
        ],
        &[],
    );
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(s["ok"], 40, "{s:#}");
    assert_eq!(s["connections"], 40, "{s:#}");
    // Only a worker's first connection may need a full handshake.
    assert!(s["tls"]["resumed"].as_u64().expect("TLS summary") >= 36, "sessions must be resumed: {s:#}");
}
