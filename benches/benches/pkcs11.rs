//! SoftHSM2 key operations through `scep_issuers::pkcs11` (issue 19 figures):
//! RSA-2048 decrypt (raw RSA in the token + our constant-time unpadding) and
//! sign, ECDSA P-256 sign, with the aws-lc-rs software key beside each.
//!
//! SoftHSM2 reads `SOFTHSM2_CONF` when initialised, and the workspace forbids
//! the `unsafe` that `set_var` needs, so without that variable this bench
//! makes a throwaway token (`softhsm2-util`, `pkcs11-tool`: Debian `softhsm2`,
//! `opensc`) and runs itself again with the variable set.
#![allow(clippy::unwrap_used)]

use criterion::{Criterion, criterion_group};
use scep_engine::crypto::provider::{KeyKind, PrivateKey};
use scep_engine::crypto::{DigestAlg, EcCurve, default_provider, rsa_encrypt_pkcs1};
use scep_issuers::pkcs11::{KeyUri, PinSource, Pkcs11Key, Pkcs11Options};
use std::process::Command;

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const DIR: &str = "SCEPD_PKCS11_BENCH_DIR";

fn token_key(uri: &str) -> Pkcs11Key {
    let dir = std::env::var(DIR).unwrap();
    let options = Pkcs11Options {
        module_path: Some(MODULE.into()),
        pin: Some(PinSource::File(std::path::Path::new(&dir).join("pin"))),
        max_sessions: 4,
    };
    Pkcs11Key::open(&KeyUri::parse(uri).unwrap(), &options).unwrap()
}

fn softhsm(c: &mut Criterion) {
    let rsa = token_key("pkcs11:token=scepd;object=rsa");
    let ec = token_key("pkcs11:token=scepd;object=ec");
    let soft_rsa = default_provider().generate_private_key(KeyKind::Rsa { modulus_bits: 2048 }).unwrap().key;
    let soft_ec = default_provider().generate_private_key(KeyKind::Ec(EcCurve::P256)).unwrap().key;
    let ct = rsa_encrypt_pkcs1(rsa.spki_der(), &[7; 32]).unwrap();
    let soft_ct = rsa_encrypt_pkcs1(soft_rsa.spki_der(), &[7; 32]).unwrap();
    let attrs = [0x31u8; 200];
    let mut g = c.benchmark_group("pkcs11");
    g.bench_function("rsa2048_decrypt/softhsm2", |b| b.iter(|| PrivateKey::decrypt_pkcs1v15(&rsa, &ct).unwrap()));
    g.bench_function("rsa2048_decrypt/aws-lc", |b| b.iter(|| soft_rsa.decrypt_pkcs1v15(&soft_ct).unwrap()));
    g.bench_function("rsa2048_sign/softhsm2", |b| {
        b.iter(|| PrivateKey::sign(&rsa, DigestAlg::Sha256, &attrs).unwrap())
    });
    g.bench_function("rsa2048_sign/aws-lc", |b| b.iter(|| soft_rsa.sign(DigestAlg::Sha256, &attrs).unwrap()));
    g.bench_function("p256_sign/softhsm2", |b| b.iter(|| PrivateKey::sign(&ec, DigestAlg::Sha256, &attrs).unwrap()));
    g.bench_function("p256_sign/aws-lc", |b| b.iter(|| soft_ec.sign(DigestAlg::Sha256, &attrs).unwrap()));
    g.finish();
}

criterion_group!(benches, softhsm);

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e} (apt-get install softhsm2 opensc)"));
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn main() {
    if std::env::var_os(DIR).is_none() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("softhsm2.conf");
        std::fs::create_dir(dir.path().join("tokens")).unwrap();
        std::fs::write(&conf, format!("directories.tokendir = {}\n", dir.path().join("tokens").display())).unwrap();
        std::fs::write(dir.path().join("pin"), "1234\n").unwrap();
        run(Command::new("softhsm2-util").env("SOFTHSM2_CONF", &conf).args([
            "--init-token",
            "--free",
            "--label",
            "scepd",
            "--pin",
            "1234",
            "--so-pin",
            "56781234",
        ]));
        for (kind, label) in [("rsa:2048", "rsa"), ("EC:prime256v1", "ec")] {
            run(Command::new("pkcs11-tool").env("SOFTHSM2_CONF", &conf).args([
                "--module",
                MODULE,
                "--token-label",
                "scepd",
                "--login",
                "--pin",
                "1234",
                "--keypairgen",
                "--key-type",
                kind,
                "--label",
                label,
                "--usage-sign",
                "--usage-decrypt",
            ]));
        }
        let status = Command::new(std::env::current_exe().unwrap())
            .args(std::env::args_os().skip(1))
            .env("SOFTHSM2_CONF", &conf)
            .env(DIR, dir.path())
            .status()
            .unwrap();
        std::process::exit(status.code().unwrap_or(1));
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
