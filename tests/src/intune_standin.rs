//! A local stand-in of the three hops of Microsoft's Intune SCEP validation
//! API, written from §6.2 of `shared/docs/INTUNE-API.md`: the Entra token
//! endpoint, Microsoft Graph discovery and the Intune `ScepActions`, on one
//! loopback base URL, with a fault plan and a record of every call.
//!
//! - Token `POST /{tenant}/oauth2/v2.0/token` (form): `grant_type =
//!   client_credentials` (else 400 `unsupported_grant_type`), `client_id`
//!   (else 400 `invalid_request`), `scope` ending in `/.default` (else 400
//!   `invalid_scope`), the configured `client_secret` or a `client_assertion`
//!   of the jwt-bearer type (contract §1.3) naming a certificate registered
//!   with [`IntuneStandIn::accept_assertion_certificate`] by `x5t#S256` or
//!   `x5t`, signed PS256 or RS256 by that certificate's key (the signature
//!   is verified), `aud` this token URL, `iss`/`sub` the client id, inside
//!   its `nbf`..`exp` window (else 401 `invalid_client`, `AADSTS7000215`).
//!   The token is opaque here (`sim-graph-<n>` / `sim-intune-<n>`): the
//!   stand-in checks the audience by the token it issued, and refuses it
//!   (401) once its `expires_in` (default 3599 s,
//!   [`IntuneStandIn::token_lifetime`]) has passed. Both `…//.default` and `…/.default` of
//!   `https://api.manage.microsoft.com/` map to the Intune audience, the
//!   stand-in's own base URL to Graph.
//! - Graph `GET /v1.0/servicePrincipals/appId={id}/endpoints` and the
//!   `(appId='{id}')` form: bearer must be a Graph token (else 401
//!   `InvalidAuthenticationToken`); answers the endpoint collection with a
//!   decoy, `ScepRequestValidationFEService` and `PkiConnectorFEService`.
//! - `POST {scep}/ScepActions/{validateRequest|successNotification|failureNotification}`:
//!   bearer must be an Intune token (else 401), `api-version` required (400);
//!   the verdict of `validateRequest` comes from the challenge registry:
//!   no challengePassword ⇒ `ChallengePasswordMissing`, unknown ⇒
//!   `ChallengeDecryptionError`, expired ⇒ `ChallengeExpired`, a CSR
//!   commonName other than the registered one ⇒ `SubjectNameMismatch`.
//!   Always 200 with `@odata.context`, `code`, `errorDescription`.
//! - Graph `GET /v1.0/deviceManagement/managedDevices/{id}` (contract §8,
//!   the compliance gate): bearer must be a Graph token (else 401); a device
//!   registered with [`IntuneStandIn::device`] answers its `complianceState`,
//!   any other id 404 `ResourceNotFound`.
//! - Faults: per hop, a queue consumed one call at a time.
#![allow(clippy::unwrap_used)]

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;

/// The three hops.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Hop {
    /// Entra token endpoint.
    Token,
    /// Graph discovery.
    Graph,
    /// Intune ScepActions.
    Intune,
    /// Graph `managedDevices` (the compliance gate).
    Devices,
}

/// One injected misbehaviour.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Answer this call normally (to reach a later call with the next fault).
    Pass,
    /// Answer this status with this body (and `Retry-After` seconds).
    Status(u16, String, Option<u64>),
    /// Wait this long, then answer normally.
    Delay(Duration),
    /// 200 with a body that is not JSON.
    NonJson,
    /// 200 with this `code` (Intune), whatever the verdict.
    Code(String),
    /// Graph 200 without the SCEP service entry.
    MissingEntry,
    /// Close the connection without answering.
    Close,
}

/// One recorded call.
#[derive(Clone, Debug)]
pub struct Call {
    /// Which hop.
    pub hop: Hop,
    /// Request path.
    pub path: String,
    /// Headers, names lower-cased.
    pub headers: HashMap<String, String>,
    /// Body (JSON parsed when it is JSON, else a string).
    pub body: serde_json::Value,
    /// When it arrived.
    pub at: Instant,
}

/// A challenge the stand-in knows.
#[derive(Clone, Debug)]
pub struct KnownChallenge {
    /// The commonName the CSR must carry (`None`: any).
    pub common_name: Option<String>,
    /// Expiry (`SystemTime`).
    pub expires: SystemTime,
}

#[derive(Default)]
struct State {
    faults: HashMap<Hop, VecDeque<Fault>>,
    calls: Vec<Call>,
    challenges: HashMap<String, KnownChallenge>,
    known_prefix: Option<String>,
    tokens: HashMap<String, (Hop, Instant)>,
    issued: u64,
    token_lifetime_secs: u64,
    expired_token_refusals: u64,
    assertion_certs: Vec<Vec<u8>>,
    revocations: VecDeque<(String, String)>,
    devices: HashMap<String, String>,
    uploads: Vec<serde_json::Value>,
}

/// The running stand-in.
pub struct IntuneStandIn {
    base: String,
    /// The tenant it serves.
    pub tenant: String,
    /// The accepted client id.
    pub client_id: String,
    /// The accepted client secret.
    pub client_secret: String,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl IntuneStandIn {
    /// Starts on a free loopback port.
    ///
    /// # Panics
    /// When no loopback port can be bound.
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let base = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
        let state = Arc::new(Mutex::new(State { token_lifetime_secs: 3599, ..State::default() }));
        let stop = Arc::new(AtomicBool::new(false));
        let ctx = Ctx {
            base: base.clone(),
            tenant: "contoso.onmicrosoft.com".into(),
            client_id: "11111111-2222-3333-4444-555555555555".into(),
            client_secret: "stand-in-secret".into(),
            state: state.clone(),
        };
        let (tenant, client_id, client_secret) = (ctx.tenant.clone(), ctx.client_id.clone(), ctx.client_secret.clone());
        let stop2 = stop.clone();
        let thread = std::thread::spawn(move || {
            let ctx = Arc::new(ctx);
            let mut workers: Vec<JoinHandle<()>> = Vec::new();
            while !stop2.load(Ordering::Acquire) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let ctx = ctx.clone();
                        workers.retain(|w| !w.is_finished());
                        if workers.len() < 256 {
                            workers.push(std::thread::spawn(move || serve(&ctx, stream)));
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
            for w in workers {
                let _ = w.join();
            }
        });
        Self { base, tenant, client_id, client_secret, state, stop, thread: Some(thread) }
    }

    /// `http://127.0.0.1:<port>` (authority, Graph and Intune base alike).
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// Registers a challenge.
    pub fn know(&self, challenge: &str, common_name: Option<&str>, valid_for: Duration) {
        self.state.lock().unwrap().challenges.insert(
            challenge.into(),
            KnownChallenge { common_name: common_name.map(str::to_string), expires: SystemTime::now() + valid_for },
        );
    }

    /// Knows every challenge that starts with `prefix` (any CSR, never
    /// expiring): a load test's stream of fresh opaque challenges.
    pub fn know_prefix(&self, prefix: &str) {
        self.state.lock().unwrap().known_prefix = Some(prefix.into());
    }

    /// Forgets the recorded calls (a long load test would hold them all).
    pub fn forget_calls(&self) {
        self.state.lock().unwrap().calls.clear();
    }

    /// Registers an Intune device with its Graph `complianceState`
    /// (`compliant`, `noncompliant`, `inGracePeriod`, ...).
    pub fn device(&self, id: &str, compliance_state: &str) {
        self.state.lock().unwrap().devices.insert(id.into(), compliance_state.into());
    }

    /// Queues `fault` for the next call of `hop`.
    pub fn fault(&self, hop: Hop, fault: Fault) {
        self.state.lock().unwrap().faults.entry(hop).or_default().push_back(fault);
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<Call> {
        self.state.lock().unwrap().calls.clone()
    }

    /// Calls to `hop` so far; for Intune, those to `ScepActions/<action>` when given.
    pub fn count(&self, hop: Hop, action: Option<&str>) -> usize {
        self.calls()
            .iter()
            .filter(|c| c.hop == hop && action.is_none_or(|a| c.path.ends_with(&format!("/ScepActions/{a}"))))
            .count()
    }

    /// Queues a revocation request (§5.3) for `serial` (hex) with `context`.
    pub fn queue_revocation(&self, serial: &str, context: &str) {
        self.state.lock().unwrap().revocations.push_back((context.into(), serial.into()));
    }

    /// Every result uploaded through `uploadRevocationResults`, in order.
    pub fn revocation_results(&self) -> Vec<serde_json::Value> {
        self.state.lock().unwrap().uploads.clone()
    }

    /// Tokens issued so far.
    pub fn tokens_issued(&self) -> u64 {
        self.state.lock().unwrap().issued
    }

    /// Tokens issued so far for `audience` (`Hop::Graph` or `Hop::Intune`).
    pub fn tokens_for(&self, audience: Hop) -> usize {
        self.state.lock().unwrap().tokens.values().filter(|(h, _)| *h == audience).count()
    }

    /// The `expires_in` of tokens issued from now on; a token is refused
    /// (401) once it has passed.
    pub fn token_lifetime(&self, secs: u64) {
        self.state.lock().unwrap().token_lifetime_secs = secs;
    }

    /// Calls refused because their token had expired.
    pub fn expired_token_refusals(&self) -> u64 {
        self.state.lock().unwrap().expired_token_refusals
    }

    /// Registers a certificate (DER) on the application: client assertions
    /// naming it and signed by its key are accepted.
    pub fn accept_assertion_certificate(&self, der: Vec<u8>) {
        self.state.lock().unwrap().assertion_certs.push(der);
    }
}

impl Drop for IntuneStandIn {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Ctx {
    base: String,
    tenant: String,
    client_id: String,
    client_secret: String,
    state: Arc<Mutex<State>>,
}

struct Answer {
    status: u16,
    body: String,
    retry_after: Option<u64>,
}

fn json(status: u16, v: serde_json::Value) -> Option<Answer> {
    Some(Answer { status, body: v.to_string(), retry_after: None })
}

fn serve(ctx: &Ctx, stream: TcpStream) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or("").to_string(), parts.next().unwrap_or("").to_string());
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
            break;
        }
        if let Some((n, v)) = h.split_once(':') {
            headers.insert(n.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let len: usize = headers.get("content-length").and_then(|l| l.parse().ok()).unwrap_or(0).min(1 << 20);
    let mut body = vec![0u8; len];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let hop = if path.contains("/oauth2/v2.0/token") {
        Hop::Token
    } else if path.starts_with("/v1.0/servicePrincipals") {
        Hop::Graph
    } else if path.starts_with("/v1.0/deviceManagement/managedDevices/") {
        Hop::Devices
    } else {
        Hop::Intune
    };
    let text = String::from_utf8_lossy(&body).to_string();
    let parsed = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text.clone()));
    let fault = {
        let mut st = ctx.state.lock().unwrap();
        st.calls.push(Call {
            hop,
            path: path.clone(),
            headers: headers.clone(),
            body: parsed.clone(),
            at: Instant::now(),
        });
        st.faults.get_mut(&hop).and_then(VecDeque::pop_front)
    };
    let answer = match fault {
        Some(Fault::Close) => return,
        Some(Fault::Status(status, body, retry_after)) => Some(Answer { status, body, retry_after }),
        Some(Fault::NonJson) => Some(Answer { status: 200, body: "<html>gateway</html>".into(), retry_after: None }),
        Some(Fault::Pass) => None,
        Some(Fault::Delay(d)) => {
            std::thread::sleep(d);
            None
        }
        Some(Fault::Code(code)) if hop == Hop::Intune => json(
            200,
            serde_json::json!({
            "@odata.context": format!("{}/$metadata#scepActionResult", ctx.base), "code": code, "errorDescription": "injected"}),
        ),
        Some(Fault::MissingEntry) if hop == Hop::Graph => json(
            200,
            serde_json::json!({"value": [
            {"providerName": "SomethingElse", "uri": format!("{}/decoy", ctx.base)}]}),
        ),
        _ => None,
    };
    let answer = answer.or_else(|| match hop {
        Hop::Token => token(ctx, &method, &path, &text),
        Hop::Graph => graph(ctx, &headers),
        Hop::Intune => intune(ctx, &path, &headers, &parsed),
        Hop::Devices => managed_device(ctx, &method, &path, &headers),
    });
    let Some(a) = answer else { return };
    let mut out = stream;
    let retry = a.retry_after.map(|s| format!("Retry-After: {s}\r\n")).unwrap_or_default();
    let _ = write!(
        out,
        "HTTP/1.1 {} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{retry}Connection: close\r\n\r\n{}",
        a.status,
        a.body.len(),
        a.body
    );
    let _ = out.flush();
}

fn form(text: &str) -> HashMap<String, String> {
    text.split('&').filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.to_string(), decode(v))).collect()
}

fn decode(v: &str) -> String {
    let bytes = v.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let h = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                out.push(u8::from_str_radix(h, 16).unwrap_or(b'?'));
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).to_string()
}

fn token(ctx: &Ctx, method: &str, path: &str, body: &str) -> Option<Answer> {
    let err =
        |status, code: &str, desc: &str| json(status, serde_json::json!({"error": code, "error_description": desc}));
    if method != "POST" || path != format!("/{}/oauth2/v2.0/token", ctx.tenant) {
        return err(400, "invalid_request", "AADSTS90002: Tenant not found");
    }
    let f = form(body);
    if f.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return err(400, "unsupported_grant_type", "AADSTS70003");
    }
    if f.get("client_id").is_none_or(String::is_empty) {
        return err(400, "invalid_request", "AADSTS900144: client_id missing");
    }
    let scope = f.get("scope").cloned().unwrap_or_default();
    let Some(resource) = scope.strip_suffix("/.default") else {
        return err(
            400,
            "invalid_scope",
            "AADSTS1002012: client-credential flows must have a scope value with /.default suffixed",
        );
    };
    // The Graph root is this stand-in (`{base}/.default`); the Intune
    // resource is only a scope string (`https://api.manage.microsoft.com//.default`
    // or the single-slash form), never fetched.
    let audience = if resource.trim_end_matches('/') == ctx.base {
        Hop::Graph
    } else if resource.trim_end_matches('/') == "https://api.manage.microsoft.com" {
        Hop::Intune
    } else {
        return err(400, "invalid_resource", "AADSTS500011: The resource principal was not found");
    };
    let secret_ok = f.get("client_secret") == Some(&ctx.client_secret);
    let assertion_ok = f.get("client_assertion_type").map(String::as_str)
        == Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
        && f.get("client_assertion").is_some_and(|jwt| {
            let certs = ctx.state.lock().unwrap().assertion_certs.clone();
            assertion_verifies(jwt, &certs, &format!("{}{}", ctx.base, path), &ctx.client_id)
        });
    if f.get("client_id") != Some(&ctx.client_id) || !(secret_ok || assertion_ok) {
        return err(401, "invalid_client", "AADSTS7000215: Invalid client secret provided.");
    }
    let mut st = ctx.state.lock().unwrap();
    st.issued += 1;
    let value = format!("sim-{}-{}", if audience == Hop::Graph { "graph" } else { "intune" }, st.issued);
    let lifetime = st.token_lifetime_secs;
    st.tokens.insert(value.clone(), (audience, Instant::now() + Duration::from_secs(lifetime)));
    json(
        200,
        serde_json::json!({"token_type": "Bearer", "expires_in": lifetime, "ext_expires_in": lifetime, "access_token": value}),
    )
}

/// Verifies a client assertion (contract §1.3): the certificate it names by
/// `x5t#S256` (or `x5t`) is registered, its key verifies the PS256 or RS256
/// signature, and the claims fit (`aud`, `iss` = `sub` = client id, time window).
fn assertion_verifies(jwt: &str, certs: &[Vec<u8>], token_url: &str, client_id: &str) -> bool {
    use aws_lc_rs::digest::{SHA1_FOR_LEGACY_USE_ONLY, SHA256, digest};
    use aws_lc_rs::signature::{RSA_PKCS1_2048_8192_SHA256, RSA_PSS_2048_8192_SHA256, UnparsedPublicKey};
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let parts: Vec<&str> = jwt.split('.').collect();
    let [header, claims, signature] = parts[..] else { return false };
    let json = |s: &str| -> serde_json::Value {
        b64.decode(s).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
    };
    let (header_v, claims_v) = (json(header), json(claims));
    let named = |der: &&Vec<u8>| {
        header_v["x5t#S256"] == b64.encode(digest(&SHA256, der)).as_str()
            || header_v["x5t"] == b64.encode(digest(&SHA1_FOR_LEGACY_USE_ONLY, der)).as_str()
    };
    let Some(cert_der) = certs.iter().find(named) else { return false };
    let Ok(cert) = scep_engine::x509::CertificateRef::parse(cert_der) else { return false };
    let Ok(signature) = b64.decode(signature) else { return false };
    let alg: &'static dyn aws_lc_rs::signature::VerificationAlgorithm = match header_v["alg"].as_str() {
        Some("PS256") => &RSA_PSS_2048_8192_SHA256,
        Some("RS256") => &RSA_PKCS1_2048_8192_SHA256,
        _ => return false,
    };
    let signed = format!("{header}.{claims}");
    if UnparsedPublicKey::new(alg, cert.spki.key).verify(signed.as_bytes(), &signature).is_err() {
        return false;
    }
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    let skew = 300;
    claims_v["aud"] == token_url
        && claims_v["iss"] == client_id
        && claims_v["sub"] == client_id
        && claims_v["nbf"].as_u64().is_some_and(|nbf| nbf <= now + skew)
        && claims_v["exp"].as_u64().is_some_and(|exp| exp > now)
}

fn bearer_is(ctx: &Ctx, headers: &HashMap<String, String>, want: Hop) -> bool {
    let token = headers.get("authorization").and_then(|a| a.strip_prefix("Bearer ")).unwrap_or("");
    let mut st = ctx.state.lock().unwrap();
    match st.tokens.get(token).copied() {
        Some((hop, expires)) if hop == want => {
            if Instant::now() >= expires {
                st.expired_token_refusals += 1;
                return false;
            }
            true
        }
        _ => false,
    }
}

fn graph(ctx: &Ctx, headers: &HashMap<String, String>) -> Option<Answer> {
    if !bearer_is(ctx, headers, Hop::Graph) {
        return json(
            401,
            serde_json::json!({"error": {"code": "InvalidAuthenticationToken", "message": "Access token validation failure."}}),
        );
    }
    json(
        200,
        serde_json::json!({
        "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#servicePrincipals('x')/endpoints",
        "value": [
            {"id": "1", "capability": "Decoy", "providerId": "p", "providerName": "IntuneDecoyService", "providerResourceId": "r",
             "uri": format!("{}/decoy", ctx.base)},
            {"id": "2", "capability": "ScepRequestValidation", "providerId": "p", "providerName": "ScepRequestValidationFEService",
             "providerResourceId": "r", "uri": format!("{}/RACerts/ScepRequestValidationFEService/Gateway/StatelessScepRequestValidationService", ctx.base)},
            {"id": "3", "capability": "PkiConnector", "providerId": "p", "providerName": "PkiConnectorFEService", "providerResourceId": "r",
             "uri": format!("{}/RACerts/StatelessPkiConnectorService/Gateway/StatelessPkiConnectorService", ctx.base)}
        ]}),
    )
}

/// Graph `managedDevices/{id}` (§8): the registered `complianceState`.
fn managed_device(ctx: &Ctx, method: &str, path: &str, headers: &HashMap<String, String>) -> Option<Answer> {
    if !bearer_is(ctx, headers, Hop::Graph) {
        return json(
            401,
            serde_json::json!({"error": {"code": "InvalidAuthenticationToken", "message": "Access token validation failure."}}),
        );
    }
    let rest = path.strip_prefix("/v1.0/deviceManagement/managedDevices/").unwrap_or_default();
    let id = rest.split('?').next().unwrap_or_default();
    if method != "GET" || id.is_empty() {
        return json(400, serde_json::json!({"error": {"code": "BadRequest", "message": "GET managedDevices/{id}"}}));
    }
    let state = ctx.state.lock().unwrap().devices.get(id).cloned();
    match state {
        Some(state) => json(
            200,
            serde_json::json!({
                "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#deviceManagement/managedDevices(id,complianceState)/$entity",
                "id": id, "complianceState": state}),
        ),
        None => json(
            404,
            serde_json::json!({"error": {"code": "ResourceNotFound", "message": format!("managedDevice {id} not found")}}),
        ),
    }
}

fn intune(ctx: &Ctx, path: &str, headers: &HashMap<String, String>, body: &serde_json::Value) -> Option<Answer> {
    if !bearer_is(ctx, headers, Hop::Intune) {
        return json(401, serde_json::json!({"error": {"code": "Unauthorized", "message": "ServiceRoleMismatch"}}));
    }
    if !headers.contains_key("api-version") {
        return json(400, serde_json::json!({"error": {"code": "BadRequest", "message": "api-version missing"}}));
    }
    if let Some(op) = path.strip_prefix(
        "/RACerts/StatelessPkiConnectorService/Gateway/StatelessPkiConnectorService/CertificateAuthorityRequests/",
    ) {
        return revocation(ctx, op, headers, body);
    }
    let Some(action) = path.strip_prefix(
        "/RACerts/ScepRequestValidationFEService/Gateway/StatelessScepRequestValidationService/ScepActions/",
    ) else {
        return json(404, serde_json::json!({"error": {"code": "NotFound", "message": path}}));
    };
    let reply = |code: &str, desc: &str| {
        json(
            200,
            serde_json::json!({
        "@odata.context": format!("{}/$metadata#microsoft.management.services.scepRequestValidationService.api.scepActionResult", ctx.base),
        "code": code, "errorDescription": desc}),
        )
    };
    let wrapper = if action == "validateRequest" { "request" } else { "notification" };
    let inner = &body[wrapper];
    if inner["transactionId"].as_str().is_none_or(str::is_empty) || inner["callerInfo"].as_str().is_none() {
        return reply("Unknown", "missing transactionId or callerInfo");
    }
    let csr_der =
        inner["certificateRequest"].as_str().and_then(|c| base64::engine::general_purpose::STANDARD.decode(c).ok());
    let Some(csr_der) = csr_der else { return reply("CertificateRequestDecodingFailed", "not base64") };
    let Ok(csr) = scep_engine::csr::CsrRef::parse(&csr_der) else {
        return reply("CertificateRequestDecodingFailed", "not a PKCS#10");
    };
    match action {
        "validateRequest" => {
            let Some(challenge) = csr.challenge_password.clone() else {
                return reply("ChallengePasswordMissing", "");
            };
            let known = {
                let st = ctx.state.lock().unwrap();
                st.challenges.get(&challenge).cloned().or_else(|| {
                    st.known_prefix.as_ref().filter(|p| challenge.starts_with(p.as_str())).map(|_| KnownChallenge {
                        common_name: None,
                        expires: SystemTime::now() + Duration::from_secs(3600),
                    })
                })
            };
            let Some(known) = known else { return reply("ChallengeDecryptionError", "unknown challenge") };
            if SystemTime::now() > known.expires {
                return reply("ChallengeExpired", "");
            }
            if let Some(cn) = &known.common_name
                && !csr.common_names().unwrap_or_default().contains(cn)
            {
                return reply("SubjectNameMismatch", "");
            }
            reply("Success", "")
        }
        "successNotification" => {
            let thumb = inner["certificateThumbprint"].as_str().unwrap_or("");
            if thumb.len() != 40 || !thumb.bytes().all(|b| b.is_ascii_hexdigit()) {
                return reply("Unknown", "thumbprint must be 40 hex digits");
            }
            if inner["certificateExpirationDateUtc"]
                .as_str()
                .and_then(scep_engine::time::UnixTime::parse_rfc3339)
                .is_none()
            {
                return reply("Unknown", "expiration is not ISO 8601 UTC");
            }
            reply("Success", "")
        }
        "failureNotification" => {
            if !inner["hResult"].is_i64()
                || inner["errorDescription"].as_str().is_none_or(|d| d.is_empty() || d.chars().count() > 255)
            {
                return reply("Unknown", "hResult integer and errorDescription 1..255 chars required");
            }
            reply("Success", "")
        }
        _ => json(404, serde_json::json!({"error": {"code": "NotFound", "message": action}})),
    }
}

/// The revocation service (§5.3): `api-version: 5019-05-05`, download drains
/// up to `maxRequests` queued requests, upload records each result (error
/// code as a name or a numeric string, either property casing).
fn revocation(ctx: &Ctx, op: &str, headers: &HashMap<String, String>, body: &serde_json::Value) -> Option<Answer> {
    if headers.get("api-version").map(String::as_str) != Some("5019-05-05") {
        return json(
            400,
            serde_json::json!({"error": {"code": "BadRequest", "message": "api-version 5019-05-05 required"}}),
        );
    }
    let mut st = ctx.state.lock().unwrap();
    match op {
        "downloadRevocationRequests" => {
            let max = body["downloadParameters"]["maxRequests"].as_u64().unwrap_or(0);
            if !(1..=500).contains(&max) {
                return json(
                    400,
                    serde_json::json!({"error": {"code": "BadRequest", "message": "maxRequests 1..500"}}),
                );
            }
            let n = st.revocations.len().min(usize::try_from(max).unwrap_or(0));
            let value: Vec<serde_json::Value> = st
                .revocations
                .drain(..n)
                .map(|(context, serial)| serde_json::json!({"requestContext": context, "serialNumber": serial, "issuerName": null, "caConfiguration": null}))
                .collect();
            json(
                200,
                serde_json::json!({
                "@odata.context": "x/$metadata#Collection(microsoft.management.services.api.caRevocationRequest)", "value": value}),
            )
        }
        "uploadRevocationResults" => {
            let Some(results) = body["results"].as_array() else {
                return json(400, serde_json::json!({"error": {"code": "BadRequest", "message": "results missing"}}));
            };
            st.uploads.extend(results.iter().cloned());
            json(200, serde_json::json!({"value": true}))
        }
        _ => json(404, serde_json::json!({"error": {"code": "NotFound", "message": op}})),
    }
}
