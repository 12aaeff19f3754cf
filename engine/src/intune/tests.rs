//! Scenario tests for the Intune validator: the reference vectors, then minted
//! challenges (RS256, ES256 raw and DER) for every gate and label.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use base64::Engine as _;
use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};

use super::*;
use crate::crypto::{DigestAlg, RandomSource, SigningKey};
use crate::wire::{Writer, tag};

macro_rules! vector {
    ($f:literal) => {
        include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/vectors/intune-connector/", $f))
    };
}

/// 2026-01-01T12:01:00Z, the "now" of the vector README.
const NOW: UnixTime = UnixTime(1_767_268_860);
const FIXTURE_AUD: &str = "https://certctl.example.com/scep/test";
const AUD: &str = "https://scep.example/scep/intune";

#[derive(Debug)]
struct TestRng(AtomicU64);
impl RandomSource for TestRng {
    fn fill(&self, buf: &mut [u8]) {
        let seed = self.0.fetch_add(1, Ordering::Relaxed);
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (seed as u8).wrapping_mul(31).wrapping_add(i as u8).wrapping_mul(167);
        }
    }
}

fn rng() -> TestRng {
    TestRng(AtomicU64::new(7))
}

struct Csr {
    cn: Vec<String>,
    dns: Vec<String>,
    emails: Vec<String>,
    upns: Vec<String>,
}

impl Csr {
    fn new(cn: &[&str], dns: &[&str], emails: &[&str], upns: &[&str]) -> Self {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect();
        Self { cn: v(cn), dns: v(dns), emails: v(emails), upns: v(upns) }
    }
    fn id(&self) -> CsrIdentity<'_> {
        CsrIdentity { common_names: &self.cn, dns: &self.dns, emails: &self.emails, upns: &self.upns }
    }
}

fn fixture_csr() -> Csr {
    Csr::new(&["fixture-device.example.com"], &["fixture-device.example.com"], &["fixture-user@example.com"], &[])
}

fn settings(audience: Option<&str>) -> IntuneSettings {
    IntuneSettings { audience: audience.map(str::to_string), ..IntuneSettings::default() }
}

fn validator(pem: &str, s: IntuneSettings) -> IntuneValidator {
    let pool = SharedPool::from_pem(pem, NOW).unwrap();
    IntuneValidator::new("intune", pool, s, &rng()).unwrap()
}

fn label(r: Result<ValidatedChallenge, Rejection>) -> Label {
    r.expect_err("expected a rejection").label
}

// ---------------------------------------------------------------- vectors

#[test]
fn reference_vector_success() {
    let v = validator(vector!("intune_trust_anchor.pem"), settings(Some(FIXTURE_AUD)));
    let ok = v.validate(vector!("intune_challenge_golden_success.txt").trim(), &fixture_csr().id(), NOW).unwrap();
    assert_eq!(ok.issuer, "intune-connector-installation-guid-test-fixture");
    assert_eq!(ok.subject, "device-guid-fixture-0001");
    assert_eq!(ok.nonce, "fixture-nonce-success-001");
    assert_eq!(ok.issued_at, UnixTime(1_767_268_800));
    assert_eq!(ok.expires_at, UnixTime(1_767_272_400));
    assert_eq!(ok.device_name.as_deref(), Some("fixture-device.example.com"));
    assert_eq!(ok.san_dns, vec!["fixture-device.example.com"]);
    assert_eq!(ok.san_rfc822, vec!["fixture-user@example.com"]);
    assert!(ok.san_upn.is_empty());
    assert_eq!(ok.audience, vec![FIXTURE_AUD]);
    assert_eq!((ok.alg, ok.version), (JwsAlg::Es256, ChallengeVersion::V1));
    assert_eq!(ok.anchor_subject, "CN=intune-connector-fixture");
    assert_eq!(ok.identity().nonce, "fixture-nonce-success-001");
    assert_eq!(v.counters().success(), 1);
    // The same challenge again is a replay.
    let r = v.validate(vector!("intune_challenge_golden_success.txt").trim(), &fixture_csr().id(), NOW).unwrap_err();
    assert_eq!((r.label, r.fail_info), (Label::Replay, FailInfo::BAD_MESSAGE_CHECK));
    assert_eq!(r.identity.unwrap().subject, "device-guid-fixture-0001");
    assert_eq!(v.counters().get(Label::Replay), 1);
}

#[test]
fn reference_vector_outcomes() {
    let challenge = vector!("intune_challenge_golden_success.txt").trim();
    assert!(looks_intune_shaped(challenge));
    let csr = fixture_csr();
    let v = validator(vector!("intune_trust_anchor.pem"), settings(Some("https://other.example/scep")));
    let r = v.validate(challenge, &csr.id(), NOW).unwrap_err();
    assert_eq!((r.label, r.fail_info), (Label::WrongAudience, FailInfo::BAD_MESSAGE_CHECK));
    assert!(r.detail.contains(FIXTURE_AUD), "{}", r.detail);

    // Without a configured audience the audience gate is skipped.
    let v = validator(vector!("intune_trust_anchor.pem"), settings(None));
    v.validate(challenge, &csr.id(), NOW).unwrap();

    let v = validator(vector!("intune_trust_anchor.pem"), settings(Some(FIXTURE_AUD)));
    let r = v.validate(vector!("intune_challenge_golden_expired.txt").trim(), &csr.id(), NOW).unwrap_err();
    assert_eq!((r.label, r.fail_info), (Label::Expired, FailInfo::BAD_MESSAGE_CHECK));
    assert_eq!(r.identity.unwrap().nonce, "fixture-nonce-expired-001");
    let r = v.validate(vector!("intune_challenge_golden_tampered_sig.txt").trim(), &csr.id(), NOW).unwrap_err();
    assert_eq!((r.label, r.fail_info), (Label::SignatureInvalid, FailInfo::BAD_MESSAGE_CHECK));
    assert!(r.identity.is_none());

    // Another anchor (a fresh P-256 key) does not verify it.
    let other = Connector::ec();
    let v = validator(&other.pem, settings(Some(FIXTURE_AUD)));
    assert_eq!(label(v.validate(challenge, &csr.id(), NOW)), Label::SignatureInvalid);
}

#[test]
fn shape_precheck() {
    let long = "a".repeat(150);
    assert!(looks_intune_shaped(&format!("{long}.{long}.x")));
    assert!(!looks_intune_shaped(&format!("{long}.{long}")));
    assert!(!looks_intune_shaped(&format!("{long}.{long}.x.y")));
    assert!(!looks_intune_shaped("a.b.c"));
    assert!(!looks_intune_shaped("secret123"));
    let exactly_200 = format!("{}.{}.", "a".repeat(99), "b".repeat(99));
    assert_eq!(exactly_200.len(), 200);
    assert!(!looks_intune_shaped(&exactly_200));
}

// ---------------------------------------------------------------- minting

/// A DER `ECDSA-Sig-Value` as the 64-byte P-256 `r || s` (RFC 7518 §3.4).
fn der_to_fixed(der: &[u8]) -> Vec<u8> {
    let seq = crate::wire::parse_single(der).unwrap();
    let mut r = seq.reader();
    let mut out = Vec::with_capacity(64);
    for _ in 0..2 {
        let v = r.read().unwrap().unsigned_integer().unwrap();
        let v = &v[v.iter().position(|&b| b != 0).unwrap_or(v.len())..];
        out.extend(std::iter::repeat_n(0u8, 32 - v.len()));
        out.extend_from_slice(v);
    }
    assert_eq!(crate::crypto::ecdsa_fixed_to_der(&out).as_deref(), Some(der), "fixed form round-trips");
    out
}

enum Key {
    Rsa(crate::crypto::RsaPrivateKey),
    /// Signs the RFC 7518 §3.4 fixed `r || s` form.
    EcRaw(crate::crypto::EcPrivateKey),
    EcDer(crate::crypto::EcPrivateKey),
}

struct Connector {
    key: Key,
    pem: String,
}

fn rsa_der() -> &'static [u8] {
    static DER: OnceLock<Vec<u8>> = OnceLock::new();
    DER.get_or_init(|| crate::crypto::RsaPrivateKey::generate(2048).unwrap().1)
}

fn ec_der() -> &'static [u8] {
    static DER: OnceLock<Vec<u8>> = OnceLock::new();
    DER.get_or_init(|| crate::crypto::EcPrivateKey::generate().unwrap().1)
}

fn write_name(w: &mut Writer, cn: &str) {
    w.sequence(|w| {
        w.set(|w| {
            w.sequence(|w| {
                w.oid(crate::oid::COMMON_NAME).utf8_string(cn);
            });
        });
    });
}

/// A minimal self-signed X.509 v3 certificate (test-only builder).
fn self_signed(key: &SigningKey, cn: &str, not_before: i64, not_after: i64) -> Vec<u8> {
    let mut tbs = Writer::new();
    tbs.sequence(|w| {
        w.nested(tag::context_constructed(0), |w| {
            w.small_uint(2);
        });
        w.small_uint(0x1234);
        key.write_signature_algorithm(w, DigestAlg::Sha256);
        write_name(w, cn);
        w.sequence(|w| {
            UnixTime(not_before).write_asn1(w);
            UnixTime(not_after).write_asn1(w);
        });
        write_name(w, cn);
        w.raw(key.spki_der());
    });
    let tbs = tbs.into_vec();
    let sig = key.sign(DigestAlg::Sha256, &tbs).unwrap();
    let mut w = Writer::new();
    w.sequence(|w| {
        w.raw(&tbs);
        key.write_signature_algorithm(w, DigestAlg::Sha256);
        w.bit_string(&sig);
    });
    w.into_vec()
}

impl Connector {
    fn with_validity(key: Key, der: &[u8], cn: &str, nb: i64, na: i64) -> Self {
        let cert = self_signed(&SigningKey::from_der(der).unwrap(), cn, nb, na);
        Self { key, pem: crate::pem::encode("CERTIFICATE", &cert) }
    }
    fn rsa() -> Self {
        let k = crate::crypto::RsaPrivateKey::from_der(rsa_der()).unwrap();
        Self::with_validity(Key::Rsa(k), rsa_der(), "rsa-connector", 1_700_000_000, 2_000_000_000)
    }
    fn ec() -> Self {
        let (k, der) = crate::crypto::EcPrivateKey::generate().unwrap();
        Self::with_validity(Key::EcDer(k), &der, "ec-other", 1_700_000_000, 2_000_000_000)
    }
    fn es_raw() -> Self {
        let k = crate::crypto::EcPrivateKey::from_der(ec_der()).unwrap();
        Self::with_validity(Key::EcRaw(k), ec_der(), "ec-connector", 1_700_000_000, 2_000_000_000)
    }
    fn es_der() -> Self {
        let k = crate::crypto::EcPrivateKey::from_der(ec_der()).unwrap();
        Self::with_validity(Key::EcDer(k), ec_der(), "ec-connector", 1_700_000_000, 2_000_000_000)
    }
    fn alg(&self) -> &'static str {
        match self.key {
            Key::Rsa(_) => "RS256",
            _ => "ES256",
        }
    }
    fn sign(&self, input: &[u8]) -> Vec<u8> {
        match &self.key {
            Key::Rsa(k) => k.sign(DigestAlg::Sha256, input).unwrap(),
            Key::EcRaw(k) => der_to_fixed(&k.sign(input).unwrap()),
            Key::EcDer(k) => k.sign(input).unwrap(),
        }
    }
    /// Signs exactly the wire text `h.p` given.
    fn sign_segments(&self, h: &str, p: &str) -> String {
        let input = format!("{h}.{p}");
        let sig = URL_SAFE_NO_PAD.encode(self.sign(input.as_bytes()));
        format!("{input}.{sig}")
    }
    fn mint_raw(&self, header: &str, payload: &str) -> String {
        self.sign_segments(&URL_SAFE_NO_PAD.encode(header), &URL_SAFE_NO_PAD.encode(payload))
    }
    fn mint(&self, payload: &str) -> String {
        self.mint_raw(&format!(r#"{{"alg":"{}","typ":"JWT"}}"#, self.alg()), payload)
    }
}

static NONCE: AtomicUsize = AtomicUsize::new(0);

/// Claim members as raw JSON; `None` drops a default member.
fn claims(overrides: &[(&str, Option<&str>)]) -> String {
    let nonce = format!("\"nonce-{}\"", NONCE.fetch_add(1, Ordering::Relaxed));
    let (iat, exp) = ((NOW.secs() - 60).to_string(), (NOW.secs() + 3540).to_string());
    let mut members: Vec<(&str, String)> = vec![
        ("iss", "\"connector-1\"".into()),
        ("sub", "\"device-1\"".into()),
        ("aud", format!("\"{AUD}\"")),
        ("iat", iat),
        ("exp", exp),
        ("nonce", nonce),
        ("device_name", "\"dev1.example.com\"".into()),
        ("san_dns", "[\"dev1.example.com\"]".into()),
        ("san_rfc822", "[\"user@example.com\"]".into()),
        ("san_upn", "[\"user@corp.example\"]".into()),
    ];
    for (k, v) in overrides {
        members.retain(|(m, _)| m != k);
        if let Some(v) = v {
            members.push((k, v.to_string()));
        }
    }
    let body: Vec<String> = members.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
    format!("{{{}}}", body.join(","))
}

fn csr() -> Csr {
    Csr::new(&["dev1.example.com"], &["dev1.example.com"], &["user@example.com"], &["user@corp.example"])
}

fn mk(c: &Connector) -> IntuneValidator {
    validator(&c.pem, settings(Some(AUD)))
}

// ---------------------------------------------------------------- gate 2

#[test]
fn rs256_es256_raw_and_der_verify() {
    for c in [Connector::rsa(), Connector::es_raw(), Connector::es_der()] {
        let v = mk(&c);
        let ok = v.validate(&c.mint(&claims(&[])), &csr().id(), NOW).unwrap();
        assert_eq!(ok.alg.as_str(), c.alg());
        assert_eq!(ok.san_upn, vec!["user@corp.example"]);
    }
}

#[test]
fn every_fitting_anchor_is_tried_and_key_types_must_fit() {
    let (rsa, ec) = (Connector::rsa(), Connector::es_raw());
    let bundle = format!("{}{}", ec.pem, rsa.pem);
    let v = validator(&bundle, settings(Some(AUD)));
    v.validate(&rsa.mint(&claims(&[])), &csr().id(), NOW).unwrap();
    v.validate(&ec.mint(&claims(&[])), &csr().id(), NOW).unwrap();
    // An RS256 token against an EC-only pool, and vice versa.
    let r = mk(&ec).validate(&rsa.mint(&claims(&[])), &csr().id(), NOW).unwrap_err();
    assert_eq!(r.label, Label::SignatureInvalid);
    assert!(r.detail.contains("no trust anchor"), "{}", r.detail);
    // An ES256 header on an RSA signature: no EC anchor fits.
    let forged = rsa.mint_raw(r#"{"alg":"ES256"}"#, &claims(&[]));
    assert_eq!(label(mk(&rsa).validate(&forged, &csr().id(), NOW)), Label::SignatureInvalid);
}

#[test]
fn tampering_is_caught() {
    let c = Connector::es_raw();
    let v = mk(&c);
    let good = c.mint(&claims(&[]));
    let parts: Vec<&str> = good.split('.').collect();
    // Payload swapped for another (valid, unsigned) claim set.
    let other = URL_SAFE_NO_PAD.encode(claims(&[("sub", Some("\"device-2\""))]));
    let forged = format!("{}.{}.{}", parts[0], other, parts[2]);
    assert_eq!(label(v.validate(&forged, &csr().id(), NOW)), Label::SignatureInvalid);
    // Signature byte flipped.
    let mut sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
    sig[10] ^= 1;
    let flipped = format!("{}.{}.{}", parts[0], parts[1], URL_SAFE_NO_PAD.encode(sig));
    assert_eq!(label(v.validate(&flipped, &csr().id(), NOW)), Label::SignatureInvalid);
    // A wrong anchor.
    assert_eq!(label(mk(&Connector::ec()).validate(&good, &csr().id(), NOW)), Label::SignatureInvalid);
    v.validate(&good, &csr().id(), NOW).unwrap();
}

#[test]
fn padded_base64_is_tolerated_and_signing_input_is_the_wire_text() {
    let c = Connector::rsa();
    let v = mk(&c);
    // Payload lengths chosen so padding is needed.
    for extra in ["", "x", "xy"] {
        let payload = claims(&[("extra", Some(&format!("\"{extra}\"")))]);
        let (h, p) = (URL_SAFE.encode(r#"{"alg":"RS256"}"#), URL_SAFE.encode(&payload));
        let jws = c.sign_segments(&h, &p);
        let sig_padded = {
            let (head, sig) = jws.rsplit_once('.').unwrap();
            format!("{head}.{}", URL_SAFE.encode(URL_SAFE_NO_PAD.decode(sig).unwrap()))
        };
        v.validate(&sig_padded, &csr().id(), NOW).unwrap();
    }
    // Signed without padding but sent with padding: the wire text differs, so
    // the signature must fail (no re-encoding of segments).
    let payload = claims(&[("extra", Some("\"x\""))]);
    let p = URL_SAFE_NO_PAD.encode(&payload);
    let jws = c.sign_segments(&URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256"}"#), &p);
    let padded = jws.replacen(&p, &URL_SAFE.encode(&payload), 1);
    assert_ne!(padded, jws);
    assert_eq!(label(v.validate(&padded, &csr().id(), NOW)), Label::SignatureInvalid);
}

#[test]
fn refused_algorithms_and_malformed_headers() {
    let c = Connector::rsa();
    let v = mk(&c);
    for header in [
        r#"{"alg":"none"}"#,
        r#"{"alg":"HS256"}"#,
        r#"{"alg":"HS512"}"#,
        r#"{"alg":"PS256"}"#,
        r#"{"alg":"RS512"}"#,
        r#"{"alg":"rs256"}"#,
        r#"{"typ":"JWT"}"#,
        r#"{"alg":256}"#,
        r#"{"alg":"RS256","alg":"RS256"}"#,
        r#"{"alg":"RS256","crit":["b64"],"b64":false}"#,
        r#"["RS256"]"#,
        "not json",
    ] {
        let jws = c.mint_raw(header, &claims(&[]));
        let r = v.validate(&jws, &csr().id(), NOW).unwrap_err();
        assert_eq!((r.label, r.fail_info), (Label::Malformed, FailInfo::BAD_REQUEST), "{header}");
    }
    // alg none with an empty signature segment.
    let none = format!("{}.{}.", URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#), URL_SAFE_NO_PAD.encode(claims(&[])));
    assert_eq!(label(v.validate(&none, &csr().id(), NOW)), Label::Malformed);
    // Headers it must ignore.
    let jws = c.mint_raw(r#"{"alg":"RS256","kid":"x","x5c":["AAAA"],"jku":"https://evil"}"#, &claims(&[]));
    v.validate(&jws, &csr().id(), NOW).unwrap();
}

#[test]
fn malformed_structure_and_payload() {
    let c = Connector::es_der();
    let v = mk(&c);
    let good = c.mint(&claims(&[]));
    let (a, b) = good.split_once('.').unwrap();
    for bad in [
        String::new(),
        "a.b".into(),
        "a.b.c.d".into(),
        format!("{a}.{b}.extra"),
        format!("{a}..{}", b.rsplit_once('.').unwrap().1),
        format!("{a}!.{b}"),
        format!("{}.{b}", &a[..a.len() - 1]), // truncated base64
        "x".repeat(MAX_CHALLENGE_LEN + 1),
    ] {
        assert_eq!(label(v.validate(&bad, &csr().id(), NOW)), Label::Malformed, "{bad:.60}");
    }
    // Signed, but the payload is not a JSON object / has duplicates / wrong types.
    for payload in [
        "[1]".to_string(),
        "{\"iat\":1".to_string(),
        claims(&[]).replacen('{', "{\"nonce\":\"dup\",", 1),
        claims(&[("san_dns", Some("\"dev1.example.com\""))]),
        claims(&[("exp", Some("\"soon\""))]),
    ] {
        let r = v.validate(&c.mint(&payload), &csr().id(), NOW).unwrap_err();
        assert_eq!(r.label, Label::Malformed, "{payload}");
        assert!(r.identity.is_none());
    }
}

#[test]
fn missing_required_claims_are_malformed() {
    let c = Connector::es_raw();
    let v = mk(&c);
    for claim in ["exp", "iat", "nonce"] {
        let r = v.validate(&c.mint(&claims(&[(claim, None)])), &csr().id(), NOW).unwrap_err();
        assert_eq!((r.label, r.fail_info), (Label::Malformed, FailInfo::BAD_REQUEST), "{claim}");
        assert!(r.detail.contains(claim), "{}", r.detail);
    }
}

// ---------------------------------------------------------------- gate 3

#[test]
fn version_dispatch() {
    let c = Connector::es_raw();
    let v = mk(&c);
    v.validate(&c.mint(&claims(&[("version", Some("\"v1\""))])), &csr().id(), NOW).unwrap();
    for ver in ["\"v2\"", "\"V1\"", "2", "null"] {
        let r = v.validate(&c.mint(&claims(&[("version", Some(ver))])), &csr().id(), NOW).unwrap_err();
        assert_eq!((r.label, r.fail_info), (Label::UnknownVersion, FailInfo::BAD_REQUEST), "{ver}");
    }
}

// ---------------------------------------------------------------- gate 4

#[test]
fn clock_skew_edges() {
    let c = Connector::es_raw();
    let v = mk(&c);
    let (now, tol) = (NOW.secs(), 60);
    let at = |iat: i64, exp: i64| claims(&[("iat", Some(&iat.to_string())), ("exp", Some(&exp.to_string()))]);
    let run = |p: String| v.validate(&c.mint(&p), &csr().id(), NOW);
    // iat exactly now + tol: accepted; one second later: not yet valid.
    run(at(now + tol, now + 3000)).unwrap();
    let r = run(at(now + tol + 1, now + 3000)).unwrap_err();
    assert_eq!((r.label, r.fail_info), (Label::NotYetValid, FailInfo::BAD_MESSAGE_CHECK));
    // exp exactly now - tol: expired; one second later: accepted.
    let r = run(at(now - 600, now - tol)).unwrap_err();
    assert_eq!((r.label, r.fail_info), (Label::Expired, FailInfo::BAD_MESSAGE_CHECK));
    run(at(now - 600, now - tol + 1)).unwrap();
}

#[test]
fn validity_cap() {
    let c = Connector::es_raw();
    let v = mk(&c);
    let (now, tol, validity) = (NOW.secs(), 60, 3600);
    let at = |iat: i64| claims(&[("iat", Some(&iat.to_string())), ("exp", Some(&(now + 86_400).to_string()))]);
    // A Connector minting day-long challenges: the age cap still applies.
    v.validate(&c.mint(&at(now - validity - tol)), &csr().id(), NOW).unwrap();
    let r = v.validate(&c.mint(&at(now - validity - tol - 1)), &csr().id(), NOW).unwrap_err();
    assert_eq!(r.label, Label::Expired);
    assert!(r.detail.contains("validity cap"), "{}", r.detail);
}

#[test]
fn anchor_outside_validity_reports_expired() {
    let k = crate::crypto::EcPrivateKey::from_der(ec_der()).unwrap();
    let c = Connector::with_validity(Key::EcDer(k), ec_der(), "old-connector", 1_600_000_000, NOW.secs() + 10);
    let pool = SharedPool::from_pem(&c.pem, NOW).unwrap();
    let v = IntuneValidator::new("p", pool, settings(None), &rng()).unwrap();
    let later = NOW.plus(11);
    let r = v.validate(&c.mint(&claims(&[])), &csr().id(), later).unwrap_err();
    assert_eq!(r.label, Label::Expired);
    assert!(r.detail.contains("old-connector"), "{}", r.detail);
}

// ---------------------------------------------------------------- gate 5

#[test]
fn audience() {
    let c = Connector::es_raw();
    let v = mk(&c);
    let run = |p: String| v.validate(&c.mint(&p), &csr().id(), NOW);
    assert_eq!(label(run(claims(&[("aud", None)]))), Label::WrongAudience);
    assert_eq!(label(run(claims(&[("aud", Some("\"https://evil.example\""))]))), Label::WrongAudience);
    assert_eq!(label(run(claims(&[("aud", Some(&format!("\"{AUD}/\"")))]))), Label::WrongAudience);
    run(claims(&[("aud", Some(&format!("[\"https://x\",\"{AUD}\"]")))])).unwrap();
    // Not configured: absent or any aud passes.
    let open = validator(&c.pem, settings(None));
    open.validate(&c.mint(&claims(&[("aud", None)])), &csr().id(), NOW).unwrap();
    open.validate(&c.mint(&claims(&[("aud", Some("\"whatever\""))])), &csr().id(), NOW).unwrap();
}

// ---------------------------------------------------------------- gate 6

#[test]
fn csr_binding_each_dimension() {
    let c = Connector::es_raw();
    let v = mk(&c);
    let cases: [(Csr, &str); 8] = [
        (Csr::new(&["other"], &["dev1.example.com"], &["user@example.com"], &["user@corp.example"]), "CN"),
        (Csr::new(&[], &["dev1.example.com"], &["user@example.com"], &["user@corp.example"]), "CN"),
        (
            Csr::new(&["dev1.example.com", "x"], &["dev1.example.com"], &["user@example.com"], &["user@corp.example"]),
            "CN",
        ),
        (Csr::new(&["DEV1.example.com"], &["dev1.example.com"], &["user@example.com"], &["user@corp.example"]), "CN"),
        (
            Csr::new(
                &["dev1.example.com"],
                &["dev1.example.com", "evil.example"],
                &["user@example.com"],
                &["user@corp.example"],
            ),
            "SAN DNS",
        ),
        (Csr::new(&["dev1.example.com"], &[], &["user@example.com"], &["user@corp.example"]), "SAN DNS"),
        (
            Csr::new(&["dev1.example.com"], &["dev1.example.com"], &["boss@example.com"], &["user@corp.example"]),
            "RFC822",
        ),
        (Csr::new(&["dev1.example.com"], &["dev1.example.com"], &["user@example.com"], &[]), "UPN"),
    ];
    for (csr, dim) in cases {
        let r = v.validate(&c.mint(&claims(&[])), &csr.id(), NOW).unwrap_err();
        assert_eq!((r.label, r.fail_info), (Label::ClaimMismatch, FailInfo::BAD_REQUEST), "{dim}");
        assert!(r.detail.contains(dim), "{dim}: {}", r.detail);
        assert!(r.detail.contains("expected") && r.detail.contains("got"), "{}", r.detail);
        assert_eq!(r.identity.as_ref().unwrap().subject, "device-1");
    }
    // DNS, e-mail and UPN compare case-insensitively; duplicates are ignored.
    let csr = Csr::new(
        &["dev1.example.com"],
        &["DEV1.Example.COM", "dev1.example.com"],
        &["User@Example.com"],
        &["USER@corp.example"],
    );
    v.validate(&c.mint(&claims(&[])), &csr.id(), NOW).unwrap();
    // A claim with no device_name and no SANs binds a CSR with none.
    let bare = claims(&[("device_name", None), ("san_dns", None), ("san_rfc822", None), ("san_upn", None)]);
    v.validate(&c.mint(&bare), &Csr::new(&[], &[], &[], &[]).id(), NOW).unwrap();
    assert_eq!(label(v.validate(&c.mint(&bare), &csr.id(), NOW)), Label::ClaimMismatch);
}

// ---------------------------------------------------------------- gates 7-9

#[test]
fn replay_and_full_cache() {
    let c = Connector::es_raw();
    let s = IntuneSettings { replay_capacity: 1, per_device_rate_limit_24h: 0, ..settings(Some(AUD)) };
    let v = validator(&c.pem, s);
    let slots = v.replay_cache().slots();
    let first = c.mint(&claims(&[]));
    v.validate(&first, &csr().id(), NOW).unwrap();
    assert_eq!(label(v.validate(&first, &csr().id(), NOW.plus(5))), Label::Replay);
    for _ in 1..slots {
        v.validate(&c.mint(&claims(&[])), &csr().id(), NOW).unwrap();
    }
    let r = v.validate(&c.mint(&claims(&[])), &csr().id(), NOW).unwrap_err();
    assert_eq!((r.label, r.fail_info), (Label::ReplayCacheFull, FailInfo::BAD_REQUEST));
    assert_eq!(v.counters().get(Label::ReplayCacheFull), 1);
}

#[test]
fn rate_limit_boundary_and_disable() {
    let c = Connector::es_raw();
    let v = mk(&c);
    for _ in 0..3 {
        v.validate(&c.mint(&claims(&[])), &csr().id(), NOW).unwrap();
    }
    let r = v.validate(&c.mint(&claims(&[])), &csr().id(), NOW).unwrap_err();
    assert_eq!((r.label, r.fail_info), (Label::RateLimited, FailInfo::BAD_REQUEST));
    assert!(r.detail.contains("device-1"), "{}", r.detail);
    // Another device, or the same sub from another Connector, is not limited.
    v.validate(&c.mint(&claims(&[("sub", Some("\"device-2\""))])), &csr().id(), NOW).unwrap();
    v.validate(&c.mint(&claims(&[("iss", Some("\"connector-2\""))])), &csr().id(), NOW).unwrap();

    let off = validator(&c.pem, IntuneSettings { per_device_rate_limit_24h: 0, ..settings(Some(AUD)) });
    for _ in 0..10 {
        off.validate(&c.mint(&claims(&[])), &csr().id(), NOW).unwrap();
    }
}

struct Refuse;
impl ComplianceCheck for Refuse {
    fn check(&self, claims: &ValidatedChallenge) -> Result<(), String> {
        Err(format!("device {} is not compliant", claims.subject))
    }
}

#[test]
fn compliance_hook() {
    let c = Connector::es_raw();
    let v = mk(&c).with_compliance(Arc::new(Refuse));
    let r = v.validate(&c.mint(&claims(&[])), &csr().id(), NOW).unwrap_err();
    assert_eq!((r.label, r.fail_info), (Label::ComplianceFailed, FailInfo::BAD_REQUEST));
    assert_eq!(r.detail, "device device-1 is not compliant");
    let snap = v.counters().snapshot();
    assert!(snap.contains(&("compliance_failed", 1)) && snap.contains(&("success", 0)), "{snap:?}");
}

#[test]
fn concurrent_replay_of_one_challenge() {
    let c = Arc::new(Connector::es_raw());
    let s = IntuneSettings { per_device_rate_limit_24h: 0, ..settings(Some(AUD)) };
    let v = validator(&c.pem, s);
    for round in 0..200 {
        let jws = Arc::new(c.mint(&claims(&[])));
        let wins = Arc::new(AtomicUsize::new(0));
        let barrier = Arc::new(std::sync::Barrier::new(8));
        let hs: Vec<_> = (0..8)
            .map(|_| {
                let (v, jws, wins, barrier) = (v.clone(), jws.clone(), wins.clone(), barrier.clone());
                std::thread::spawn(move || {
                    let csr = csr();
                    barrier.wait();
                    match v.validate(&jws, &csr.id(), NOW) {
                        Ok(_) => {
                            wins.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(r) => assert_eq!(r.label, Label::Replay),
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        assert_eq!(wins.load(Ordering::SeqCst), 1, "round {round}");
    }
    assert_eq!(v.counters().success(), 200);
    assert_eq!(v.counters().get(Label::Replay), 200 * 7);
}

// ---------------------------------------------------------------- anchors, settings

#[test]
fn anchor_loading_and_reload() {
    let (rsa, ec) = (Connector::rsa(), Connector::es_raw());
    assert_eq!(load_pool("", NOW).unwrap_err(), AnchorError::NoCertificate);
    assert_eq!(load_pool("just text\n", NOW).unwrap_err(), AnchorError::NoCertificate);
    let garbage = crate::pem::encode("CERTIFICATE", b"\x30\x03\x02\x01");
    let bundle = format!("{}{garbage}", ec.pem);
    assert!(matches!(load_pool(&bundle, NOW), Err(AnchorError::Parse { index: 1, .. })));
    assert!(matches!(
        load_pool("-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----\n", NOW),
        Err(AnchorError::Pem(_))
    ));
    let k = crate::crypto::EcPrivateKey::from_der(ec_der()).unwrap();
    let expired = Connector::with_validity(Key::EcDer(k), ec_der(), "retired", 1_600_000_000, NOW.secs() - 1);
    let err = load_pool(&format!("{}{}", rsa.pem, expired.pem), NOW).unwrap_err();
    assert!(matches!(&err, AnchorError::Expired { index: 1, subject, .. } if subject == "CN=retired"), "{err:?}");
    assert!(err.to_string().contains("retired"));

    let pool = load_pool(&format!("{}{}", rsa.pem, ec.pem), NOW).unwrap();
    let summary = pool.summary();
    assert_eq!(summary.len(), 2);
    assert_eq!(summary[0], ("CN=rsa-connector".to_string(), UnixTime(2_000_000_000)));
    assert_eq!(pool.anchors()[1].key_kind(), AnchorKeyKind::EcP256);

    // Reload: a bad bundle keeps the old pool; a good one swaps atomically.
    let shared = SharedPool::from_pem(&ec.pem, NOW).unwrap();
    let v = IntuneValidator::new("p", shared.clone(), settings(Some(AUD)), &rng()).unwrap();
    v.validate(&ec.mint(&claims(&[])), &csr().id(), NOW).unwrap();
    assert!(shared.reload(&garbage, NOW).is_err());
    assert!(shared.reload("", NOW).is_err());
    assert!(shared.reload(&expired.pem, NOW).is_err());
    assert_eq!(v.anchors().load().summary()[0].0, "CN=ec-connector");
    v.validate(&ec.mint(&claims(&[("sub", Some("\"d2\""))])), &csr().id(), NOW).unwrap();
    shared.reload(&rsa.pem, NOW).unwrap();
    assert_eq!(
        label(v.validate(&ec.mint(&claims(&[("sub", Some("\"d3\""))])), &csr().id(), NOW)),
        Label::SignatureInvalid
    );
    v.validate(&rsa.mint(&claims(&[("sub", Some("\"d3\""))])), &csr().id(), NOW).unwrap();
}

#[test]
fn settings_are_checked() {
    let bad = [
        IntuneSettings { clock_skew_tolerance_secs: 3600, ..IntuneSettings::default() },
        IntuneSettings { challenge_validity_secs: 0, ..IntuneSettings::default() },
        IntuneSettings { clock_skew_tolerance_secs: -1, ..IntuneSettings::default() },
        IntuneSettings { audience: Some(String::new()), ..IntuneSettings::default() },
        IntuneSettings { replay_capacity: 0, ..IntuneSettings::default() },
    ];
    for s in bad {
        let e = s.validate().unwrap_err();
        assert!(e.0.contains("INTUNE_") || e.0.contains("capacit"), "{e}");
    }
    let e = bad_tolerance();
    assert!(e.contains("INTUNE_CLOCK_SKEW_TOLERANCE") && e.contains("INTUNE_CHALLENGE_VALIDITY"), "{e}");
    IntuneSettings::default().validate().unwrap();
}

fn bad_tolerance() -> String {
    IntuneSettings { clock_skew_tolerance_secs: 3600, ..IntuneSettings::default() }.validate().unwrap_err().0
}

#[test]
fn labels_are_stable() {
    let names: Vec<&str> = Label::ALL.iter().map(|l| l.as_str()).collect();
    assert_eq!(
        names,
        [
            "malformed",
            "signature_invalid",
            "unknown_version",
            "not_yet_valid",
            "expired",
            "wrong_audience",
            "claim_mismatch",
            "replay",
            "replay_cache_full",
            "rate_limited",
            "compliance_failed"
        ]
    );
}

// ---------------------------------------------------------------- properties

mod prop {
    use super::*;
    use proptest::prelude::*;

    fn shared() -> &'static IntuneValidator {
        static V: OnceLock<IntuneValidator> = OnceLock::new();
        V.get_or_init(|| validator(vector!("intune_trust_anchor.pem"), settings(Some(FIXTURE_AUD))))
    }

    proptest! {
        #[test]
        fn arbitrary_strings_never_panic_nor_pass(s in ".{0,600}") {
            let r = shared().validate(&s, &fixture_csr().id(), NOW);
            prop_assert!(r.is_err(), "an arbitrary string passed: {:?}", s);
        }

        #[test]
        fn jws_shaped_strings_never_panic(a in "[A-Za-z0-9_=-]{0,120}", b in "[A-Za-z0-9_=-]{0,400}", c in "[A-Za-z0-9_=-]{0,120}") {
            let r = shared().validate(&format!("{a}.{b}.{c}"), &fixture_csr().id(), NOW);
            prop_assert!(r.is_err());
        }

        #[test]
        fn mutated_vector_never_panics_nor_passes(i in 0usize..600, byte in any::<u8>()) {
            let mut v = vector!("intune_challenge_golden_success.txt").trim().as_bytes().to_vec();
            let i = i % v.len();
            prop_assume!(v[i] != byte);
            v[i] = byte;
            if let Ok(s) = std::str::from_utf8(&v) {
                // The original may pass once (its nonce is then spent); a mutation never does,
                // unless it only changed base64 padding bits the decoder ignores (it refuses them).
                let r = shared().validate(s, &fixture_csr().id(), NOW);
                prop_assert!(r.is_err(), "mutation at {} accepted", i);
            }
        }

        #[test]
        fn json_payloads_never_panic_nor_pass(payload in "\\{[\"a-z0-9:,\\[\\]{}\\\\u. -]{0,200}\\}") {
            // Correctly signed, but no such payload is a complete, current claim set for this CSR.
            let c = Connector::es_raw_cached();
            let r = shared_ec().validate(&c.mint(&payload), &fixture_csr().id(), NOW);
            prop_assert!(r.is_err(), "payload accepted: {}", payload);
        }
    }

    fn shared_ec() -> &'static IntuneValidator {
        static V: OnceLock<IntuneValidator> = OnceLock::new();
        V.get_or_init(|| validator(&Connector::es_raw_cached().pem, settings(None)))
    }

    impl Connector {
        fn es_raw_cached() -> &'static Self {
            static C: OnceLock<Connector> = OnceLock::new();
            C.get_or_init(Self::es_raw)
        }
    }
}

/// Issue 13 item 5: profiles sharing one replay cache (the service shares
/// one per process) spend a nonce once across all of them when they trust
/// the same anchor; the same nonce signed by another anchor is its own.
#[test]
fn a_shared_replay_cache_spends_a_nonce_once_across_profiles() {
    let a = Connector::es_raw();
    let b = Connector::rsa();
    let shared = Arc::new(ReplayCache::new(1_000, &rng()));
    let on = |profile: &str, pem: &str| {
        let pool = SharedPool::from_pem(pem, NOW).unwrap();
        IntuneValidator::with_shared_replay(profile, pool, settings(None), Arc::clone(&shared), &rng()).unwrap()
    };
    let (corp, lab) = (on("corp", &a.pem), on("lab", &a.pem));
    let challenge = a.mint(&claims(&[("nonce", Some("\"one-nonce\""))]));
    corp.validate(&challenge, &csr().id(), NOW).unwrap();
    let r = lab.validate(&challenge, &csr().id(), NOW).unwrap_err();
    assert_eq!((r.label, r.fail_info), (Label::Replay, FailInfo::BAD_MESSAGE_CHECK));
    // Another Connector's challenge with the same nonce value is not a replay.
    let other = on("other", &b.pem);
    other.validate(&b.mint(&claims(&[("nonce", Some("\"one-nonce\""))])), &csr().id(), NOW).unwrap();
    // Without sharing (separate caches), the second profile would have accepted it.
    let alone = validator(&a.pem, settings(None));
    alone.validate(&challenge, &csr().id(), NOW).unwrap();
}
