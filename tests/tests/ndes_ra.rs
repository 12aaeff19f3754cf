//! The RA arrangements end to end, in process: the data directory's bootstrap
//! (CA, single RA, NDES signing + encryption RA pair), the engine built from
//! those files, the local CA issuing, and the independent client building
//! requests to whichever published certificate a test chooses and verifying
//! the replies.
//!
//! What it proves: every RA certificate a profile publishes receives requests
//! (in both arrangements), the CA's certificate does not when the CA is not the
//! RA (badMessageCheck), replies are signed by the signing RA, as rsaEncryption
//! by default or in the request's form when the profile mirrors, and Intune's strong-mapping SID reaches the
//! certificate as a SAN URI always and as the SID extension only when the
//! profile trusts it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use scep_engine::config::{
    AlgorithmPolicy, CaCertShape, ChallengePolicy, KeyPolicy, ProfileConfig, RaIdentity, RenewalPolicy,
    ReplySignaturePolicy, SanPolicy,
};
use scep_engine::crypto::{RsaPrivateKey, SystemRandom};
use scep_engine::issue::IssuancePolicy;
use scep_engine::strong_mapping::{SID_URI_PREFIX, parse_sid_extension, sid_extension_value};
use scep_engine::x509::{CertificateRef, parse_subject_alt_names};
use scep_engine::{Action, Engine, Message, Method, Outcome, Request, UnixTime, oid, pem};
use scep_issuers::{BootstrapOptions, Issuer, LocalCa, LocalCaConfig, bootstrap};
use scep_tests::client::{
    CaCertificates, CertRep, CsrSpec, DeviceKey, FailInfo, MessageBody, MessageOptions, PkiStatus, SignatureOid,
    Signer, SubjectAltName, build_csr, build_pki_message, self_signed_certificate, verify_cert_rep,
};

const CHALLENGE: &str = "ndes-secret";
const SID: &str = "S-1-5-21-3623811015-3361044348-30300820-1013";

/// Runs a future to completion on this thread (the local CA answers through
/// its writer thread, which wakes us).
fn block_on<F: Future>(f: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "the issuer did not answer within 30 s");
        std::thread::park_timeout(std::time::Duration::from_millis(100));
    }
}

fn load_ra(cert: &Path, key: &Path) -> RaIdentity {
    let certificate = pem::certificates(&std::fs::read_to_string(cert).unwrap()).unwrap().remove(0);
    let key = RsaPrivateKey::from_der(&pem::private_key(&std::fs::read_to_string(key).unwrap()).unwrap()).unwrap();
    RaIdentity { certificate, key: key.into() }
}

/// A bootstrapped data directory and its local CA.
struct Pki {
    _dir: tempfile::TempDir,
    ca: LocalCa,
    /// ra.pem / ra.key
    single: (std::path::PathBuf, std::path::PathBuf),
    ndes: scep_issuers::NdesRaFiles,
}

impl Pki {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let out = bootstrap(dir.path(), &BootstrapOptions::default()).unwrap();
        let ca = LocalCa::open(LocalCaConfig::new(&out.ca_cert, &out.ca_key, dir.path())).unwrap();
        Self { ca, single: (out.ra_cert, out.ra_key), ndes: out.ndes.unwrap(), _dir: dir }
    }

    fn profile(&self, ra: RaIdentity, issuance: IssuancePolicy) -> ProfileConfig {
        ProfileConfig {
            name: "ndes".into(),
            ra,
            ca_chain: self.ca.ca_chain(),
            ca_cert_shape: CaCertShape::RaAndChain,
            challenge: ChallengePolicy::Static(CHALLENGE.into()),
            algorithms: AlgorithmPolicy::default(),
            keys: KeyPolicy::default(),
            renewal: RenewalPolicy::default(),
            issuance,
            allowed_ekus: vec![oid::KP_CLIENT_AUTH.to_vec(), oid::KP_SERVER_AUTH.to_vec()],
            sans: SanPolicy::default(),
            signing_time_tolerance: Some(3600),
            max_message_size: 256 * 1024,
            rng: Arc::new(SystemRandom),
            crypto: scep_engine::crypto::default_provider().clone(),
            intune: None,
        }
    }

    /// The NDES arrangement from the bootstrap's pair.
    fn ndes_engine(&self, issuance: IssuancePolicy) -> Engine {
        let signing = load_ra(&self.ndes.signing_cert, &self.ndes.signing_key);
        let encryption = load_ra(&self.ndes.encryption_cert, &self.ndes.encryption_key);
        Engine::with_encryption_ras(self.profile(signing, issuance), vec![encryption]).unwrap()
    }

    /// The single-RA arrangement from the bootstrap's `ra.pem`.
    fn single_engine(&self) -> Engine {
        Engine::new(self.profile(load_ra(&self.single.0, &self.single.1), IssuancePolicy::default())).unwrap()
    }

    fn get_ca_cert(&self, engine: &Engine) -> CaCertificates {
        let Action::Respond(r) = engine
            .handle(Request { method: Method::Get, operation: "GetCACert", message: Message::None }, UnixTime::now())
        else {
            panic!("GetCACert asked the issuer")
        };
        assert_eq!(r.status, 200);
        CaCertificates::parse(r.content_type, &r.body).unwrap()
    }

    /// One PKCSReq built by the client to `ca.recipient()`, answered by the
    /// engine (and the local CA when it asks), verified by the client.
    fn enrol(
        &self,
        engine: &Engine,
        ca: &CaCertificates,
        spec: &CsrSpec,
        options: &MessageOptions,
    ) -> (DeviceKey, CertRep, Outcome) {
        let key = DeviceKey::generate().unwrap();
        let self_signed = self_signed_certificate(&key, &spec.subject, 1).unwrap();
        let csr = build_csr(&key, spec).unwrap();
        let request = build_pki_message(
            &MessageBody::PkcsReq(csr),
            Signer { certificate: &self_signed, key: &key },
            ca.recipient(),
            options,
        )
        .unwrap();
        let now = UnixTime::now();
        let response = match engine.handle(
            Request { method: Method::Post, operation: "PKIOperation", message: Message::Body(&request.der) },
            now,
        ) {
            Action::Respond(r) => r,
            Action::Issue(pending) => {
                let answer = block_on(self.ca.handle(pending.request(), now));
                pending.resume(answer, now)
            }
            other => panic!("unexpected action {other:?}"),
        };
        assert_eq!(response.status, 200, "{:?}", response.outcome);
        let rep = verify_cert_rep(&response.body, &request, &key, &ca.certificates).unwrap();
        (key, rep, response.outcome)
    }
}

/// The two request forms and the reply's signatureAlgorithm under the
/// default policy (always rsaEncryption, RFC 3370 §3.2) and the mirroring one.
fn forms() -> [(MessageOptions, &'static [u8], &'static [u8]); 2] {
    [
        // certmonger, sscep, PyScep, scepreq: rsaEncryption.
        (
            MessageOptions { signature_oid: SignatureOid::RsaEncryption, ..MessageOptions::default() },
            oid::RSA_ENCRYPTION,
            oid::RSA_ENCRYPTION,
        ),
        // jscep, micromdm, strongSwan: sha256WithRSAEncryption.
        (MessageOptions::default(), oid::RSA_ENCRYPTION, oid::SHA256_WITH_RSA),
    ]
}

/// The issued certificate chains to the CA (its signature verifies with the CA key).
fn assert_issued_by_ca(rep: &CertRep, key: &DeviceKey, ca_der: &[u8]) -> Vec<u8> {
    assert_eq!(rep.status, PkiStatus::SUCCESS, "failInfo {:?} {:?}", rep.fail_info, rep.fail_info_text);
    let issued = rep.issued_certificate(key).unwrap().to_vec();
    let cert = CertificateRef::parse(&issued).unwrap();
    let ca = CertificateRef::parse(ca_der).unwrap();
    assert_eq!(cert.spki.raw, key.spki_der());
    cert.verify_signed_by(ca.spki.public_key().unwrap()).unwrap();
    issued
}

#[test]
fn ndes_pair_from_bootstrap_publishes_both_and_each_receives_requests() {
    let pki = Pki::new();
    let engine = pki.ndes_engine(IssuancePolicy::default());
    let ca = pki.get_ca_cert(&engine);
    let signing = pem::certificates(&std::fs::read_to_string(&pki.ndes.signing_cert).unwrap()).unwrap().remove(0);
    let encryption = pem::certificates(&std::fs::read_to_string(&pki.ndes.encryption_cert).unwrap()).unwrap().remove(0);
    // GetCACert: signing RA, encryption RA, CA.
    assert_eq!(ca.content_type, "application/x-x509-ca-ra-cert");
    assert_eq!(ca.certificates, [signing.clone(), encryption.clone(), pki.ca.ca_chain()[0].clone()]);
    // A client choosing by key usage (PyScep, scepreq, jscep) encrypts to the
    // encryption RA and verifies replies with the signing RA.
    assert_eq!((ca.recipient_index, ca.signing_ra_index(), ca.ca_index), (1, Some(0), 2));
    let mirroring = engine.clone().with_reply_signature(ReplySignaturePolicy::MirrorRequest);
    for index in [0, 1] {
        let ca = ca.clone().encrypting_to(index).unwrap();
        for (options, default_oid, mirrored_oid) in forms() {
            for (engine, reply_oid) in [(&engine, default_oid), (&mirroring, mirrored_oid)] {
                let spec = CsrSpec::new("ndes-device", Some(CHALLENGE));
                let (key, rep, outcome) = pki.enrol(engine, &ca, &spec, &options);
                assert_issued_by_ca(&rep, &key, ca.ca());
                assert_eq!(outcome.label, "success");
                assert_eq!(rep.signer_certificate, signing, "CertReps are signed by the signing RA");
                assert_eq!(rep.signature_oid, reply_oid, "the reply's signatureAlgorithm follows the policy");
            }
        }
    }
}

#[test]
fn requests_to_the_ca_are_refused_with_bad_message_check_in_both_arrangements() {
    let pki = Pki::new();
    for engine in [pki.ndes_engine(IssuancePolicy::default()), pki.single_engine()] {
        let ca = pki.get_ca_cert(&engine);
        let ca_index = ca.ca_index;
        let to_ca = ca.encrypting_to(ca_index).unwrap();
        let mirroring = engine.clone().with_reply_signature(ReplySignaturePolicy::MirrorRequest);
        for (options, default_oid, mirrored_oid) in forms() {
            for (engine, reply_oid) in [(&engine, default_oid), (&mirroring, mirrored_oid)] {
                let (_, rep, outcome) = pki.enrol(engine, &to_ca, &CsrSpec::new("to-ca", Some(CHALLENGE)), &options);
                assert_eq!((rep.status, rep.fail_info), (PkiStatus::FAILURE, Some(FailInfo::BAD_MESSAGE_CHECK)));
                assert_eq!(outcome.label, "unknown_recipient");
                assert_eq!(rep.signature_oid, reply_oid, "failures follow the reply signature policy too");
            }
        }
    }
}

#[test]
fn single_ra_from_bootstrap_still_enrols() {
    let pki = Pki::new();
    let engine = pki.single_engine();
    let ca = pki.get_ca_cert(&engine);
    let ra = pem::certificates(&std::fs::read_to_string(&pki.single.0).unwrap()).unwrap().remove(0);
    assert_eq!(ca.certificates, [ra.clone(), pki.ca.ca_chain()[0].clone()]);
    assert_eq!((ca.recipient_index, ca.signing_ra_index()), (0, Some(0)));
    for (options, reply_oid, _) in forms() {
        let (key, rep, _) = pki.enrol(&engine, &ca, &CsrSpec::new("single-device", Some(CHALLENGE)), &options);
        assert_issued_by_ca(&rep, &key, ca.ca());
        assert_eq!((rep.signer_certificate.as_slice(), rep.signature_oid.as_slice()), (ra.as_slice(), reply_oid));
    }
}

/// A CSR as an Intune profile with strong mapping makes it: the SID as a SAN
/// URI and, from clients that add it, the SID extension.
fn intune_like_spec(sid_uri: &str) -> CsrSpec {
    let mut spec = CsrSpec::new("intune-device", Some(CHALLENGE));
    spec.subject_alt_names =
        vec![SubjectAltName::Uri(sid_uri.to_string()), SubjectAltName::Upn("user@corp.example".into())];
    spec.other_extensions = vec![(oid::MS_NTDS_CA_SECURITY_EXT.to_vec(), sid_extension_value(SID))];
    spec
}

#[test]
fn sid_uri_is_carried_and_the_sid_extension_only_when_the_profile_trusts_it() {
    let pki = Pki::new();
    let sid_uri = format!("{SID_URI_PREFIX}{SID}");
    let spec = intune_like_spec(&sid_uri);
    let default = pki.ndes_engine(IssuancePolicy::default());
    let trusting = pki.ndes_engine(IssuancePolicy { trust_requested_sid: true, ..IssuancePolicy::default() });
    for (engine, trusted) in [(&default, false), (&trusting, true)] {
        let ca = pki.get_ca_cert(engine);
        let (key, rep, outcome) = pki.enrol(engine, &ca, &spec, &MessageOptions::default());
        let issued = assert_issued_by_ca(&rep, &key, ca.ca());
        let cert = CertificateRef::parse(&issued).unwrap();
        let (_, san) = cert.extension(oid::SUBJECT_ALT_NAME).unwrap().unwrap();
        assert!(parse_subject_alt_names(san).unwrap().contains(&SubjectAltName::Uri(sid_uri.clone())));
        let ext = cert.extension(oid::MS_NTDS_CA_SECURITY_EXT).unwrap();
        if trusted {
            let (critical, value) = ext.expect("a trusting profile copies the SID extension");
            assert!(!critical);
            assert_eq!(parse_sid_extension(value), Ok(SID));
        } else {
            assert_eq!(ext, None, "the SID extension is dropped by default");
            assert!(outcome.detail.unwrap().contains("1.3.6.1.4.1.311.25.2"), "the drop is noted for the audit log");
        }
    }
    // A strong-mapping URI that does not carry a SID is refused.
    let ca = pki.get_ca_cert(&default);
    let bad = intune_like_spec(&format!("{SID_URI_PREFIX}S-1-5-21-not-a-sid"));
    let (_, rep, outcome) = pki.enrol(&default, &ca, &bad, &MessageOptions::default());
    assert_eq!((rep.status, rep.fail_info), (PkiStatus::FAILURE, Some(FailInfo::BAD_REQUEST)));
    assert_eq!(outcome.label, "bad_csr");
    // A malformed SID extension on a trusting profile is refused, not copied.
    let mut malformed = intune_like_spec(&sid_uri);
    malformed.other_extensions = vec![(oid::MS_NTDS_CA_SECURITY_EXT.to_vec(), sid_extension_value("S-1-x"))];
    let (_, rep, _) = pki.enrol(&trusting, &ca, &malformed, &MessageOptions::default());
    assert_eq!((rep.status, rep.fail_info), (PkiStatus::FAILURE, Some(FailInfo::BAD_REQUEST)));
}
