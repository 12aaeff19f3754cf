//! Issue 13 items 4 and 5 against the running binary, on both transports:
//!
//! - a certificate enrolled on a static-password profile cannot renew on an
//!   Intune profile (RenewalReq or challenge-less PKCSReq: `renewal_disabled`;
//!   with renewal by certificate turned on: `renewal_other_profile`), renews
//!   once on its own profile, and is then superseded (`renewal_superseded`);
//! - the renewal window (`renewal_window_days`): an early renewal is refused
//!   (`renewal_outside_window`) and the same certificate enrols with the
//!   challenge instead;
//! - on an Intune profile that allows renewal by certificate, the renewal is
//!   audited as `scep_renewalreq_intune` and counts against the device's rate
//!   limit (`rate_limited`);
//! - one Intune challenge on two profiles trusting one Connector, no audience
//!   configured: the second use is refused as `replay`.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::Duration;

use scep_tests::client::{
    CertRep, CsrSpec, DeviceKey, Enrollment, FailInfo, MessageBody, MessageOptions, PkiMethod, PkiStatus, ScepClient,
    Signer, SubjectAltName, build_csr, build_pki_message,
};
use scep_tests::intune_connector::{Claims, Connector, JwsAlg};
use scep_tests::server::{Scepd, ScepdOptions, Transport};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);
const ADMIN_KEY: &str = "renewal-scope-admin-key-0123456789";
const STATIC: &str = "static-secret";
const BUNDLE: &str = "intune.pem";

/// Starts scepd on `transport` with `profiles` (TOML `[[profile]]` tables)
/// and the Connector bundle `bundle`.
fn start(transport: Transport, profiles: &str, bundle: &str) -> Scepd {
    let mut opts = ScepdOptions::with_config(format!(
        "[server]\ndata_dir = \"data\"\n\n[[api_key]]\nname = \"ops\"\nkey = \"{ADMIN_KEY}\"\nrole = \"admin\"\n\n\
         {profiles}"
    ))
    .on(transport);
    opts.files.push((PathBuf::from(BUNDLE), bundle.as_bytes().to_vec()));
    opts.startup_timeout = WAIT;
    Scepd::start(opts).unwrap_or_else(|e| panic!("{transport:?}: {e}"))
}

fn intune_profile(name: &str, extra: &str) -> String {
    format!(
        "[[profile]]\nname = \"{name}\"\nchallenge_password = \"{STATIC}\"\nintune_enabled = true\n\
         intune_connector_cert_path = \"{BUNDLE}\"\n{extra}\n"
    )
}

fn spec(cn: &str, challenge: Option<&str>) -> CsrSpec {
    let mut spec = CsrSpec::new(cn, challenge);
    spec.subject_alt_names = vec![SubjectAltName::Dns(cn.into())];
    spec
}

/// A first enrolment on `url` with `challenge`; the enrolment and its key.
fn enrol(url: &str, cn: &str, challenge: &str) -> (Enrollment, DeviceKey) {
    let key = DeviceKey::generate().unwrap();
    let e = ScepClient::new(url)
        .unwrap()
        .enroll(&key, &spec(cn, Some(challenge)), &MessageOptions::default(), PkiMethod::Post)
        .unwrap();
    assert_eq!(e.reply.status, PkiStatus::SUCCESS, "{url}: {:?} {:?}", e.reply.fail_info, e.reply.fail_info_text);
    (e, key)
}

/// A request for `cn` (a new key) signed by `old` (certificate, key) to
/// `url`: a RenewalReq, or a PKCSReq carrying `challenge` when `pkcs_req`.
/// The reply and the new key.
fn signed_by(
    url: &str,
    cn: &str,
    old: (&[u8], &DeviceKey),
    pkcs_req: bool,
    challenge: Option<&str>,
) -> (CertRep, DeviceKey) {
    let client = ScepClient::new(url).unwrap();
    let ca = client.get_ca_cert().unwrap();
    let new_key = DeviceKey::generate().unwrap();
    let csr = build_csr(&new_key, &spec(cn, challenge)).unwrap();
    let body = if pkcs_req { MessageBody::PkcsReq(csr) } else { MessageBody::RenewalReq(csr) };
    let request =
        build_pki_message(&body, Signer { certificate: old.0, key: old.1 }, ca.recipient(), &MessageOptions::default())
            .unwrap();
    let rep = client.transact(&request, old.1, &ca, PkiMethod::Post).unwrap();
    (rep, new_key)
}

fn renew(url: &str, cn: &str, old: (&[u8], &DeviceKey)) -> (CertRep, DeviceKey) {
    signed_by(url, cn, old, false, None)
}

fn issued(rep: &CertRep, key: &DeviceKey) -> Vec<u8> {
    assert_eq!(rep.status, PkiStatus::SUCCESS, "{:?} {:?}", rep.fail_info, rep.fail_info_text);
    rep.issued_certificate(key).unwrap().to_vec()
}

fn refused(rep: &CertRep, fail_info: FailInfo) {
    assert_eq!((rep.status, rep.fail_info), (PkiStatus::FAILURE, Some(fail_info)), "{:?}", rep.fail_info_text);
}

/// GET an admin API path with [`ADMIN_KEY`]; the JSON answer.
fn admin_get(server: &Scepd, path: &str) -> Value {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", server.port())).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {ADMIN_KEY}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}\n{body}");
    // The admin API answers with a length or chunked: take the JSON object.
    let start = body.find('{').unwrap();
    let end = body.rfind('}').unwrap();
    serde_json::from_str(&body[start..=end]).unwrap()
}

/// (action, outcome) of a profile's PKIOperation audit events, oldest first.
fn audited(server: &Scepd, profile: &str) -> Vec<(String, String)> {
    let events = admin_get(server, &format!("/api/v1/admin/scep/events?profile={profile}&limit=100"));
    let mut v: Vec<(String, String)> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"].as_str().is_some_and(|a| !a.starts_with("scep_getca")))
        .map(|e| (e["action"].as_str().unwrap().to_string(), e["outcome"].as_str().unwrap().to_string()))
        .collect();
    v.reverse();
    v
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter().map(|(a, o)| (a.to_string(), o.to_string())).collect()
}

/// Item 4: the exact probe (static profile → Intune profile), once-only
/// renewal on the same profile, and the renewal window.
fn renewal_stays_on_its_profile_and_happens_once(transport: Transport) {
    let connector = Connector::generate(JwsAlg::Es256, "Microsoft Intune Certificate Connector").unwrap();
    let profiles = format!(
        "[[profile]]\nname = \"static\"\nchallenge_password = \"{STATIC}\"\n\n\
         [[profile]]\nname = \"windowed\"\nchallenge_password = \"{STATIC}\"\nrenewal_window_days = 30\n\n{}{}",
        intune_profile("corp", ""),
        intune_profile("corp-renew", "intune_renewal_by_certificate = true\n"),
    );
    let server = start(transport, &profiles, &connector.certificate_pem());
    let (static_url, corp, corp_renew, windowed) = (
        server.profile_url("static"),
        server.profile_url("corp"),
        server.profile_url("corp-renew"),
        server.profile_url("windowed"),
    );
    let cn = "hopper.example.com";
    let (first, key) = enrol(&static_url, cn, STATIC);
    let cert_a = first.issued().unwrap().to_vec();

    // The probe: renewal on the Intune profile, as RenewalReq and as a
    // challenge-less PKCSReq: refused before the issuer (no Intune gate bypassed).
    refused(&renew(&corp, cn, (&cert_a, &key)).0, FailInfo::BAD_REQUEST);
    refused(&signed_by(&corp, cn, (&cert_a, &key), true, None).0, FailInfo::BAD_REQUEST);
    // An Intune profile that allows renewal by certificate still refuses another profile's certificate.
    refused(&renew(&corp_renew, cn, (&cert_a, &key)).0, FailInfo::BAD_CERT_ID);

    // On its own profile: renewed once, then superseded.
    let (rep, key_b) = renew(&static_url, cn, (&cert_a, &key));
    let cert_b = issued(&rep, &key_b);
    for _ in 0..3 {
        refused(&renew(&static_url, cn, (&cert_a, &key)).0, FailInfo::BAD_CERT_ID);
    }
    // The renewed certificate carries on the chain.
    let (rep, key_c) = renew(&static_url, cn, (&cert_b, &key_b));
    issued(&rep, &key_c);

    // The window: a year-long certificate is 335 days early on a 30-day window.
    let (w, wkey) = enrol(&windowed, "early.example.com", STATIC);
    let cert_w = w.issued().unwrap().to_vec();
    refused(&renew(&windowed, "early.example.com", (&cert_w, &wkey)).0, FailInfo::BAD_REQUEST);
    // ... and enrols with the challenge instead (a fresh enrolment, not a renewal).
    let (rep, k) = signed_by(&windowed, "early.example.com", (&cert_w, &wkey), true, Some(STATIC));
    issued(&rep, &k);

    assert_eq!(
        audited(&server, "corp"),
        pairs(&[("scep_renewalreq", "renewal_disabled"), ("scep_pkcsreq", "renewal_disabled")]),
    );
    assert_eq!(audited(&server, "corp-renew"), pairs(&[("scep_renewalreq_intune", "renewal_other_profile")]));
    assert_eq!(
        audited(&server, "static"),
        pairs(&[
            ("scep_pkcsreq", "success"),
            ("scep_renewalreq", "success"),
            ("scep_renewalreq", "renewal_superseded"),
            ("scep_renewalreq", "renewal_superseded"),
            ("scep_renewalreq", "renewal_superseded"),
            ("scep_renewalreq", "success"),
        ]),
    );
    assert_eq!(
        audited(&server, "windowed"),
        pairs(&[
            ("scep_pkcsreq", "success"),
            ("scep_renewalreq", "renewal_outside_window"),
            ("scep_pkcsreq", "success")
        ]),
    );
}

/// Item 4, Intune side: renewal by certificate turned on is audited as an
/// Intune action and counts against the device's rate limit.
fn intune_renewal_is_audited_as_intune_and_rate_limited(transport: Transport) {
    let connector = Connector::generate(JwsAlg::Es256, "Microsoft Intune Certificate Connector").unwrap();
    let profiles =
        intune_profile("corp", "intune_renewal_by_certificate = true\nintune_per_device_rate_limit_24h = 1\n");
    let server = start(transport, &profiles, &connector.certificate_pem());
    let url = server.profile_url("corp");
    let cn = "intune-renewer.example.com";
    let challenge = connector.mint(&Claims::new("connector-installation-1", "device-guid-1", cn).dns(&[cn]));
    let (first, key) = enrol(&url, cn, &challenge);
    let cert = first.issued().unwrap().to_vec();
    let (rep, key2) = renew(&url, cn, (&cert, &key));
    let renewed = issued(&rep, &key2);
    // The second renewal in 24 h of this device (its renewed certificate): over the limit of 1.
    refused(&renew(&url, cn, (&renewed, &key2)).0, FailInfo::BAD_REQUEST);
    assert_eq!(
        audited(&server, "corp"),
        pairs(&[
            ("scep_pkcsreq_intune", "success"),
            ("scep_renewalreq_intune", "success"),
            ("scep_renewalreq_intune", "rate_limited"),
        ]),
    );
}

/// Item 5: one challenge, two Intune profiles trusting one Connector, no
/// audience: the second use is a replay.
fn one_challenge_enrols_on_one_profile_only(transport: Transport) {
    let connector = Connector::generate(JwsAlg::Es256, "Microsoft Intune Certificate Connector").unwrap();
    let profiles = format!("{}{}", intune_profile("corp", ""), intune_profile("lab", ""));
    let server = start(transport, &profiles, &connector.certificate_pem());
    let cn = "twice.example.com";
    let challenge = connector.mint(&Claims::new("connector-installation-1", "device-guid-9", cn).dns(&[cn]));
    enrol(&server.profile_url("corp"), cn, &challenge);
    let key = DeviceKey::generate().unwrap();
    let e = ScepClient::new(&server.profile_url("lab"))
        .unwrap()
        .enroll(&key, &spec(cn, Some(&challenge)), &MessageOptions::default(), PkiMethod::Post)
        .unwrap();
    refused(&e.reply, FailInfo::BAD_MESSAGE_CHECK);
    assert_eq!(audited(&server, "lab"), pairs(&[("scep_pkcsreq_intune", "replay")]));
}

scep_tests::on_each_transport!(
    renewal_stays_on_its_profile_and_happens_once,
    intune_renewal_is_audited_as_intune_and_rate_limited,
    one_challenge_enrols_on_one_profile_only,
);
