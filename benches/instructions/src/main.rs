//! `scep-instructions`: one run of a scepd hot path for callgrind to count
//! (issue 20). Wall-clock benchmarks vary by 20% from run to run on a shared
//! machine; the number of instructions a run executes repeats to within a
//! fraction of a percent for the same binary and input, so `.ci/instructions`
//! can fail a change that makes these paths grow (as rustls's `ci-bench`
//! does).
//!
//! ```text
//! valgrind --tool=callgrind --toggle-collect='*measured_*' target/release/scep-instructions enrolment
//! ```
//!
//! Cases (each set up first, then run once unmeasured to warm lazily
//! initialised state, then once inside a `measured_*` function, the only
//! code callgrind counts with `--toggle-collect`):
//! - `enrolment`: a full engine enrolment with the built-in local CA (RSA-2048
//!   CA and RA, AES-256-CBC and SHA-256 PKCSReq): `Engine::handle` (parse,
//!   verify, decrypt, CSR checks, challenge) → `LocalCa::sign_enrollment` →
//!   `PendingIssue::resume` (CertRep signed and encrypted). No database: the
//!   store's share is SQLite's and the disk's;
//! - `getcacaps`: `Engine::handle` answering GetCACaps.

use std::hint::black_box;
use std::process::ExitCode;
use std::sync::Arc;

use scep_engine::config::{
    AlgorithmPolicy, CaCertShape, ChallengePolicy, KeyPolicy, ProfileConfig, RaIdentity, RenewalPolicy,
};
use scep_engine::crypto::{RsaPrivateKey, SystemRandom};
use scep_engine::issue::IssuancePolicy;
use scep_engine::{Action, Engine, IssueOutcome, IssueRequest, Message, Method, Request, UnixTime, pem};
use scep_issuers::{BootstrapOptions, Issuer as _, LocalCa, LocalCaConfig, bootstrap};
use scep_tests::client::{
    CsrSpec, DeviceKey, MessageBody, MessageOptions, Signer, SubjectName, build_csr, build_pki_message,
    self_signed_certificate,
};

/// What a case needs: a local CA, an engine in front of it, and two PKCSReqs.
struct Pki {
    _dir: tempfile::TempDir,
    ca: LocalCa,
    engine: Engine,
    /// The warm-up message and the measured one (distinct transactionIDs).
    messages: [Vec<u8>; 2],
    now: UnixTime,
}

fn setup() -> Result<Pki, String> {
    let dir = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
    let files = bootstrap(dir.path(), &BootstrapOptions::default()).map_err(|e| format!("bootstrap: {e}"))?;
    let read = |p: &std::path::Path| std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()));
    let ca_cert = pem::certificates(&read(&files.ca_cert)?).map_err(|e| format!("CA: {e:?}"))?.remove(0);
    let ra_cert = pem::certificates(&read(&files.ra_cert)?).map_err(|e| format!("RA: {e:?}"))?.remove(0);
    let ra_key = pem::private_key(&read(&files.ra_key)?).map_err(|e| format!("RA key: {e:?}"))?;
    let ca = LocalCa::open(LocalCaConfig::new(&files.ca_cert, &files.ca_key, dir.path().join("data")))
        .map_err(|e| format!("local CA: {e}"))?;
    let config = ProfileConfig {
        name: "instructions".into(),
        ra: RaIdentity {
            certificate: ra_cert.clone(),
            key: RsaPrivateKey::from_der(&ra_key).map_err(|e| format!("RA key: {e}"))?.into(),
        },
        ca_chain: vec![ca_cert],
        ca_cert_shape: CaCertShape::RaAndChain,
        challenge: ChallengePolicy::Static("secret123".into()),
        algorithms: AlgorithmPolicy::default(),
        keys: KeyPolicy::default(),
        renewal: RenewalPolicy::default(),
        issuance: IssuancePolicy::default(),
        allowed_ekus: vec![scep_engine::oid::KP_CLIENT_AUTH.to_vec()],
        signing_time_tolerance: Some(3600),
        max_message_size: 256 * 1024,
        rng: Arc::new(SystemRandom),
        sans: scep_engine::config::SanPolicy::default(),
        intune: None,
        crypto: scep_engine::crypto::default_provider().clone(),
    };
    let engine = Engine::new(config).map_err(|e| format!("engine: {e:?}"))?;
    let device = DeviceKey::pregenerated(0).map_err(|e| format!("device key: {e}"))?;
    let device_cert = self_signed_certificate(&device, &SubjectName::cn("instructions-device"), 1)
        .map_err(|e| format!("device certificate: {e}"))?;
    let csr =
        build_csr(&device, &CsrSpec::new("instructions-device", Some("secret123"))).map_err(|e| format!("CSR: {e}"))?;
    let message = |id: &str| {
        let options = MessageOptions { transaction_id: Some(id.into()), ..MessageOptions::default() };
        let signer = Signer { certificate: &device_cert, key: &device };
        build_pki_message(&MessageBody::PkcsReq(csr.clone()), signer, &ra_cert, &options)
            .map(|m| m.der)
            .map_err(|e| format!("PKCSReq: {e}"))
    };
    Ok(Pki { messages: [message("warm-up")?, message("measured")?], _dir: dir, ca, engine, now: UnixTime::now() })
}

/// One enrolment, as `benches/benches/engine.rs`'s `engine/...` group runs it.
fn enrol(p: &Pki, message: &[u8]) -> Result<usize, String> {
    let request = Request { method: Method::Post, operation: "PKIOperation", message: Message::Body(message) };
    let Action::Issue(pending) = p.engine.handle(request, p.now) else {
        return Err("the engine refused the PKCSReq".into());
    };
    let IssueRequest::Enroll(e) = pending.request() else { return Err("not an enrolment".into()) };
    let signed = p.ca.sign_enrollment(e, p.now).map_err(|e| format!("CA: {e}"))?;
    let outcome = IssueOutcome::Issued { certificate: signed.der, chain: p.ca.ca_chain() };
    let response = pending.resume(outcome, p.now);
    if response.outcome.label != "success" {
        return Err(format!("CertRep {}", response.outcome.label));
    }
    Ok(response.body.len())
}

fn get_ca_caps(p: &Pki) -> Result<usize, String> {
    let request = Request { method: Method::Get, operation: "GetCACaps", message: Message::None };
    match p.engine.handle(request, p.now) {
        Action::Respond(r) if r.status == 200 => Ok(r.body.len()),
        _ => Err("GetCACaps was not answered".into()),
    }
}

/// The measured enrolment (callgrind counts only inside `measured_*`).
#[inline(never)]
fn measured_enrolment(p: &Pki) -> Result<usize, String> {
    black_box(enrol(p, black_box(&p.messages[1])))
}

/// The measured GetCACaps answer.
#[inline(never)]
fn measured_getcacaps(p: &Pki) -> Result<usize, String> {
    black_box(get_ca_caps(black_box(p)))
}

fn run(case: &str) -> Result<(), String> {
    let p = setup()?;
    match case {
        "enrolment" => {
            enrol(&p, &p.messages[0])?;
            measured_enrolment(&p)?;
        }
        "getcacaps" => {
            get_ca_caps(&p)?;
            measured_getcacaps(&p)?;
        }
        other => return Err(format!("unknown case {other:?}: enrolment or getcacaps")),
    }
    Ok(())
}

fn main() -> ExitCode {
    let case = std::env::args().nth(1).unwrap_or_default();
    match run(&case) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("scep-instructions: {e}");
            ExitCode::FAILURE
        }
    }
}
