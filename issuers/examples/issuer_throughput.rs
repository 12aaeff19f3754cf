//! Enrollment throughput of the local CA and of OpenBao, in one run.
//!
//! ```text
//! BAO_ADDR=http://127.0.0.1:8299 BAO_TOKEN=root \
//!   cargo run --release -p scep-issuers --example issuer_throughput -- [N] [CONCURRENCY]
//! ```
//!
//! Issues N certificates (default 200) through each issuer with CONCURRENCY
//! parallel requests (default 8) and prints certificates per second. The CSRs
//! (P-256, from `openssl req`) are made before timing; the issuers' own work
//! (signing, storing; for OpenBao the HTTP round trip and its signing) is what
//! is measured. Without BAO_ADDR/BAO_TOKEN only the local CA is measured.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use scep_engine::csr::CsrRef;
use scep_engine::issue::{Authorization, EnrollRequest, IssuancePolicy, IssueOutcome, IssueRequest};
use scep_engine::time::UnixTime;
use scep_issuers::{Issuer, LocalCa, LocalCaConfig, VaultAuth, VaultConfig, VaultIssuer, bootstrap};

fn csr(dir: &Path, i: usize) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let out = dir.join(format!("{i}.csr"));
    let st = Command::new("openssl")
        .args(["req", "-new", "-nodes", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-keyout"])
        .arg(dir.join(format!("{i}.key")))
        .args(["-subj", &format!("/CN=bench-{i}"), "-outform", "DER", "-out"])
        .arg(&out)
        .output()
        .expect("openssl");
    assert!(st.status.success());
    let der = std::fs::read(&out).unwrap();
    let csr = CsrRef::parse(&der).unwrap();
    let (subject, spki) = (csr.subject.to_vec(), csr.spki.raw.to_vec());
    (der, subject, spki)
}

/// Issues every request with `concurrency` threads; returns (elapsed, failures).
fn run(issuer: Arc<dyn Issuer>, requests: &[IssueRequest], concurrency: usize) -> (Duration, usize) {
    let next = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(requests.to_vec());
    let start = Instant::now();
    let threads: Vec<_> = (0..concurrency)
        .map(|_| {
            let (issuer, next, failures, requests) = (issuer.clone(), next.clone(), failures.clone(), requests.clone());
            std::thread::spawn(move || {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(req) = requests.get(i) else { break };
                    match futures_lite::future::block_on(issuer.handle(req, UnixTime::now())) {
                        IssueOutcome::Issued { .. } => {}
                        other => {
                            if failures.fetch_add(1, Ordering::Relaxed) == 0 {
                                eprintln!("first failure: {other:?}");
                            }
                        }
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    (start.elapsed(), failures.load(Ordering::Relaxed))
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(200).clamp(1, 100_000);
    let concurrency: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(8).clamp(1, 256);
    let dir = tempfile::tempdir().unwrap();
    eprintln!("making {n} CSRs ...");
    let csrs: Vec<_> = (0..n).map(|i| csr(dir.path(), i)).collect();
    let requests = |tag: &str| -> Vec<IssueRequest> {
        csrs.iter()
            .enumerate()
            .map(|(i, (der, subject, spki))| {
                IssueRequest::Enroll(EnrollRequest {
                    profile: "bench".into(),
                    transaction_id: format!("{tag}-{i}"),
                    csr_der: der.clone(),
                    subject_der: subject.clone(),
                    spki_der: spki.clone(),
                    subject_alt_names: Vec::new(),
                    requested_ekus: Vec::new(),
                    policy: IssuancePolicy { validity_secs: 86_400, ..IssuancePolicy::default() },
                    authorization: Authorization::StaticChallenge,
                    sid_extension: None,
                })
            })
            .collect()
    };

    let out = bootstrap(dir.path(), &scep_issuers::BootstrapOptions::default()).unwrap();
    let local: Arc<dyn Issuer> =
        Arc::new(LocalCa::open(LocalCaConfig::new(&out.ca_cert, &out.ca_key, dir.path())).unwrap());
    let report = |name: &str, (elapsed, failed): (Duration, usize)| {
        println!(
            "{name:<10} {n:>6} certificates, concurrency {concurrency:>3}: {:>8.1} certs/s ({:.2} ms each, {failed} failed)",
            n as f64 / elapsed.as_secs_f64(),
            elapsed.as_secs_f64() * 1000.0 / n as f64 * concurrency as f64
        );
    };
    report("local CA", run(local, &requests("local"), concurrency));

    match (std::env::var("BAO_ADDR"), std::env::var("BAO_TOKEN")) {
        (Ok(addr), Ok(token)) => {
            let token_file = dir.path().join("token");
            std::fs::write(&token_file, token).unwrap();
            let issuer = VaultIssuer::connect(VaultConfig::new(
                "iss-bao",
                addr,
                "pki",
                "devices",
                VaultAuth::TokenFile(token_file),
            ))
            .expect("OpenBao reachable");
            report("OpenBao", run(Arc::new(issuer), &requests("bao"), concurrency));
        }
        _ => println!("OpenBao    skipped (set BAO_ADDR and BAO_TOKEN)"),
    }
}
