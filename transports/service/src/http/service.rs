//! The HTTP service (hyper 1 [`Service`]), shared by every runtime.
//!
//! Routes (RFC 8894 §4.1 allows any path; these are scepd's):
//!
//! | path | serves |
//! |---|---|
//! | `/scep`, `/scep/pkiclient.exe` | the default profile |
//! | `/scep/<profile>`, `/scep/<profile>/pkiclient.exe` | the named profile (`[a-z0-9-]`) |
//! | `/scep-mtls/<profile>`, `/scep-mtls/<profile>/pkiclient.exe` | the same profile, client certificate required ([`crate::tls::client_auth`]) |
//! | a profile's `url_aliases` (+ `/pkiclient.exe`), NDES's `/certsrv/mscep/mscep.dll` | that profile; NDES's path: the default profile unless a profile claims it ([`crate::state::Profiles::by_alias`]) |
//! | `/healthz` | `200 ok` (GET, HEAD), with a line on the store; `503` while the node's own SQLite audit log cannot commit (`ScepService::health`) |
//! | `/metrics` | Prometheus text ([`crate::operator::metrics`]) |
//! | `/api/v1/admin/...` | the admin API ([`crate::operator::admin`]) |
//! | `/ui/...` | the admin web GUI ([`crate::operator::ui`]) |
//! | `/pki/...` | the local CA's CRL, certificate and OCSP responder, for relying parties ([`crate::http::pki`]) |
//!
//! Every answer on a SCEP route is audited ([`crate::store::audit`]) and counted in
//! the metrics. A decision (every PKIOperation answered with a CertRep) is one
//! event, committed before the response is returned; when it cannot be, the
//! answer is `503` (fail closed: no unaudited decision reaches a client).
//! Discovery answers (GetCACaps, GetCACert, GetNextCACert) and HTTP 4xx
//! refusals made before a request could be attributed (no transactionID) go to
//! the audit tally unless `[audit] discovery = "each"`; a discovery GET is then answered at once from
//! the profile's kept answers ([`crate::state::discovery`],
//! [`ScepService::answer_discovery_now`]), without a request future.
//!
//! The `/pkiclient.exe` suffix is what Windows/NDES-style clients append to the
//! configured URL. A trailing `/` is tolerated. SCEP routes accept GET and POST,
//! and HEAD for every operation but PKIOperation (RFC 9110 §9.3.2: answered as
//! GET, hyper sends no body); otherwise 405 with `Allow` (RFC 9110 §15.5.6, also
//! on `/healthz` and `/metrics`: `GET, HEAD`). POST bodies are accepted with any content type
//! (RFC 8894 §4.1: `application/x-pki-message`; clients also send
//! `application/octet-stream` or none) and limited to the configured size (413).
//! Before any route, an HTTP/1.1 request without a `Host` header, or an HTTP/1
//! request with more than one, is answered 400 (RFC 9112 §3.2).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{ALLOW, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, HOST};
use http::{HeaderValue, Method as HttpMethod, StatusCode, Version};
use http_body_util::{BodyExt as _, Full, LengthLimitError, Limited};
use hyper::body::Body;
use hyper::rt::{Executor, Timer};
use hyper::service::Service;
use scep_engine::time::UnixTime;
use scep_engine::{Message, Method, Operation, Outcome, Request, Response};

use crate::http::drive::{DurableProtection, IntuneHooks, OneTimeChallenges, drive_with};
use crate::query::parse_query;
use crate::settings::audit::DiscoveryAudit;
use crate::settings::profile::is_valid_name;
use crate::state::ServiceState;
use crate::state::metrics::Observation;
use crate::store::audit::{AuditEvent, DiscoveryAnswer};
use crate::tls::ConnectionInfo;

/// Where a request path leads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route<'a> {
    /// `/healthz`
    Health,
    /// A SCEP endpoint: `None` is the default profile.
    Scep(Option<&'a str>),
    /// The mTLS sibling of a profile's SCEP endpoint.
    ScepMtls(&'a str),
    /// `/metrics`
    Metrics,
    /// `/api/v1/admin/...`
    Admin,
    /// `/ui`, `/ui/...`: the admin web GUI ([`crate::operator::ui`]).
    Ui,
    /// `/pki/...`: CRL, CA certificate and OCSP ([`crate::http::pki`]).
    Pki,
    /// Anything else (404).
    NotFound,
}

/// Maps a request path to a [`Route`].
pub fn route(path: &str) -> Route<'_> {
    match path {
        "/healthz" => return Route::Health,
        "/metrics" => return Route::Metrics,
        _ => {}
    }
    if path.starts_with("/api/v1/admin/") {
        return Route::Admin;
    }
    if path == crate::operator::ui::PREFIX || path.starts_with("/ui/") {
        return Route::Ui;
    }
    if path.starts_with(crate::http::pki::PREFIX) {
        return Route::Pki;
    }
    if let Some(rest) = path.strip_prefix("/scep-mtls/") {
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let rest = rest.strip_suffix("/pkiclient.exe").unwrap_or(rest);
        return if is_valid_name(rest) { Route::ScepMtls(rest) } else { Route::NotFound };
    }
    let Some(rest) = path.strip_prefix("/scep") else { return Route::NotFound };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let rest = rest.strip_suffix("/pkiclient.exe").unwrap_or(rest);
    if rest.is_empty() {
        return Route::Scep(None);
    }
    match rest.strip_prefix('/') {
        Some(name) if is_valid_name(name) => Route::Scep(Some(name)),
        _ => Route::NotFound,
    }
}

/// The hyper service: one clone per connection, all sharing the state.
#[derive(Clone)]
pub struct ScepService {
    state: Arc<ServiceState>,
    timer: Option<Arc<dyn Timer + Send + Sync>>,
    connection: Option<Arc<ConnectionInfo>>,
    detach: Option<(Arc<dyn Executor<DetachedRequest> + Send + Sync>, Arc<DetachedRequests>)>,
}

/// A request handled as a task of its own ([`ScepService::detaching_with`]).
pub type DetachedRequest = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The requests running as tasks of their own, counted: at most `limit` at
/// once, so that a client cannot pile up work by sending requests and
/// leaving (a request past the bound runs on its connection, cancelled with
/// it, as hyper runs any request), and shutdown waits for them before the
/// audit log's last flush.
#[derive(Debug)]
pub struct DetachedRequests {
    running: AtomicUsize,
    limit: usize,
}

impl DetachedRequests {
    /// At most `limit` detached requests at once.
    #[must_use]
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self { running: AtomicUsize::new(0), limit })
    }

    /// How many are running now.
    pub fn running(&self) -> usize {
        self.running.load(Ordering::Acquire)
    }

    /// Counts one more, unless `limit` are running.
    fn try_start(self: &Arc<Self>) -> Option<DetachedRequestGuard> {
        self.running
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < self.limit).then_some(n + 1))
            .ok()
            .map(|_| DetachedRequestGuard(self.clone()))
    }
}

/// One running detached request: counted until dropped.
struct DetachedRequestGuard(Arc<DetachedRequests>);

impl Drop for DetachedRequestGuard {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::AcqRel);
    }
}

impl std::fmt::Debug for ScepService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScepService").field("state", &self.state).finish_non_exhaustive()
    }
}

impl ScepService {
    /// A service over `state`. With a `timer` (the runtime's, e.g. hyper-util's
    /// `TokioTimer`), POST bodies must arrive within
    /// [`crate::settings::ServerSettings::body_read_timeout`] (else 408).
    pub fn new(state: Arc<ServiceState>, timer: Option<Arc<dyn Timer + Send + Sync>>) -> Self {
        Self { state, timer, connection: None, detach: None }
    }

    /// This service handling every request that reaches hyper's path (an
    /// enrolment, a revocation, anything but the answers kept ready) as a
    /// task of its own on `executor`, the connection only waiting for its
    /// answer. A client that closes its connection, or resets its HTTP/2
    /// stream, once the request is sent then no longer cancels the request
    /// halfway: without this, hyper dropped the request's future and a
    /// certificate the issuer had already signed was recorded with no audit
    /// event, no log line and no Intune notification. A request is decided,
    /// audited and counted whether or not anyone is left to read the answer.
    /// At most `requests`' limit run so at once ([`DetachedRequests`]).
    #[must_use]
    pub fn detaching_with(
        self,
        executor: Arc<dyn Executor<DetachedRequest> + Send + Sync>,
        requests: Arc<DetachedRequests>,
    ) -> Self {
        Self { detach: Some((executor, requests)), ..self }
    }

    /// This service for one connection: `info` (client address, TLS peer
    /// certificates) is audited and checked by the mTLS routes. A
    /// [`ConnectionInfo`] request extension, when present, takes precedence.
    #[must_use]
    pub fn with_connection(&self, info: ConnectionInfo) -> Self {
        Self { connection: Some(Arc::new(info)), ..self.clone() }
    }

    /// Answers a discovery GET (GetCACaps, GetCACert on `/scep/...`) at once
    /// from the profile's kept answers ([`crate::state::discovery`]), counting it in
    /// the metrics and the audit tally; `None` for every other request (and
    /// when discovery is audited one durable event at a time, which must be
    /// awaited). Nothing here waits, so the caller needs no request future.
    pub fn answer_discovery_now<B>(&self, req: &http::Request<B>) -> Option<http::Response<Full<Bytes>>> {
        if req.method() != HttpMethod::GET {
            return None;
        }
        let client =
            req.extensions().get::<ConnectionInfo>().or(self.connection.as_deref()).and_then(|c| c.remote_addr);
        let (status, content_type, body) =
            self.discovery_answer(req.uri().path(), req.uri().query().unwrap_or(""), client)?;
        Some(http_response(status, content_type, body))
    }

    /// [`Self::answer_discovery_now`] for a GET of `path?query` from `client`,
    /// without an `http::Request` (the transports' HTTP/1.1 fast path,
    /// [`crate::http::fast_path`]): the kept answer's status, content type and body,
    /// counted in the metrics and the audit tally.
    pub(crate) fn discovery_answer(
        &self,
        path: &str,
        query: &str,
        client: Option<std::net::SocketAddr>,
    ) -> Option<(u16, &'static str, Bytes)> {
        let target = route(path);
        if !matches!(target, Route::Scep(_) | Route::NotFound) {
            return None;
        }
        let audit = self.state.audit();
        if audit.is_some_and(|a| a.discovery() != DiscoveryAudit::Aggregate) {
            return None;
        }
        let operation = Operation::parse(&parse_query(query).ok()?.operation);
        let profiles = self.state.profiles();
        let profile = match target {
            Route::Scep(name) => profiles.get(name)?,
            _ => profiles.by_alias(path)?,
        };
        let ready = profile.discovery.get(operation)?;
        let start = tracing::enabled!(target: "scepd::request", tracing::Level::DEBUG).then(Instant::now);
        let outcome = &ready.outcome;
        if let Some(audit) = audit {
            audit.tally(&DiscoveryAnswer {
                outcome,
                profile: &outcome.profile,
                operation: operation.name(),
                http_status: ready.status,
                route: "scep",
                client,
                now: UnixTime::now(),
            });
        }
        self.state.metrics().observe(&Observation {
            profile: &outcome.profile,
            operation: operation.name(),
            status: ready.status,
            action: outcome.action(),
            outcome: outcome.label,
            issuance: None,
        });
        if let Some(start) = start {
            tracing::debug!(
                target: "scepd::request",
                method = "GET",
                path,
                profile = %outcome.profile,
                operation = operation.name(),
                status = ready.status,
                outcome = outcome.label,
                txid = "",
                latency_us = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX),
                "request"
            );
        }
        Some((ready.status, ready.content_type, ready.body.clone()))
    }

    /// The DER answer to an OCSP request when the local CA's responder can
    /// give it from memory (the transports' HTTP/1.1 fast path,
    /// [`crate::http::fast_path`]), counted in the OCSP metric like the
    /// `/pki/ocsp` route counts it. `None`: no responder, or it needs the
    /// database.
    pub(crate) fn ocsp_answer_from_memory(&self, request: &[u8]) -> Option<Arc<[u8]>> {
        let responder = self.state.ocsp_responder_for(request)?;
        let answer = responder.respond_from_memory(request, UnixTime::now())?;
        self.state.metrics().pki().ocsp(answer.status);
        Some(answer.der)
    }

    /// The shared state this service answers from.
    #[cfg(test)]
    pub(crate) fn state(&self) -> &Arc<ServiceState> {
        &self.state
    }

    /// The client address of this service's connection, when known.
    pub(crate) fn client_addr(&self) -> Option<std::net::SocketAddr> {
        self.connection.as_deref().and_then(|c| c.remote_addr)
    }

    /// Handles one HTTP request; always answers. (The `Host` check of RFC
    /// 9112 §3.2 is the [`Service`] implementation's, which hyper calls.)
    pub async fn handle<B>(&self, req: http::Request<B>) -> http::Response<Full<Bytes>>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        match self.answer_discovery_now(&req) {
            Some(response) => response,
            None => self.handle_awaiting(req).await,
        }
    }

    /// Every request [`Self::answer_discovery_now`] does not answer.
    async fn handle_awaiting<B>(&self, req: http::Request<B>) -> http::Response<Full<Bytes>>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let start = Instant::now();
        let method = req.method().clone();
        // `Uri` clones share its bytes: no copy of the path.
        let uri = req.uri().clone();
        let path = uri.path();
        match route(path) {
            Route::Metrics => return self.metrics(&method),
            // Boxed, as the POST body below: rare paths keep the common future small.
            Route::Admin => return Box::pin(self.admin(req)).await,
            Route::Ui if self.state.settings().gui => return crate::operator::ui::handle(&method, path),
            Route::Ui => return crate::operator::ui::turned_off(),
            Route::Pki => return Box::pin(self.pki(req)).await,
            _ => {}
        }
        let connection =
            req.extensions().get::<ConnectionInfo>().cloned().map(Arc::new).or_else(|| self.connection.clone());
        let (mut response, mut log) = self.answer(req, connection.as_deref()).await;
        if let Some(route_name) = log.route {
            let now = UnixTime::now();
            let outcome = &response.outcome;
            let profile = if outcome.profile.is_empty() { log.profile.as_str() } else { outcome.profile.as_str() };
            let action = outcome.action();
            let client = connection.as_ref().and_then(|c| c.remote_addr);
            let recorded = match self.state.audit() {
                None => Ok(()),
                Some(audit)
                    if audit.discovery() == DiscoveryAudit::Aggregate
                        && (DiscoveryAudit::covers(outcome.operation)
                            || is_unattributed_refusal(response.status, outcome)) =>
                {
                    audit.tally(&DiscoveryAnswer {
                        outcome,
                        profile,
                        operation: log.operation,
                        http_status: response.status,
                        route: route_name,
                        client,
                        now,
                    });
                    Ok(())
                }
                Some(audit) => {
                    let mut event = AuditEvent::from_outcome(
                        outcome,
                        now,
                        response.status,
                        log.operation,
                        route_name,
                        client.map(|a| a.to_string()),
                    );
                    event.profile = profile.to_string();
                    audit.record(event).await.map(drop)
                }
            };
            // The label of a 503 for an event that could not commit.
            let audit_failed = match &recorded {
                Ok(()) => None,
                Err(e) => {
                    tracing::error!(target: "scepd::audit", error = %e, profile, label = e.label(), "audit event not stored: answering 503");
                    self.state.metrics().audit_failure();
                    Some(e.label())
                }
            };
            self.state.metrics().observe(&Observation {
                profile,
                operation: log.operation,
                status: if audit_failed.is_some() { 503 } else { response.status },
                action,
                outcome: audit_failed.unwrap_or(log.label),
                issuance: log.issuance,
            });
            if let Some(label) = audit_failed {
                // The request's log line, like the metric above, names why it was answered 503.
                log.label = label;
                response = Response {
                    status: 503,
                    content_type: "text/plain; charset=utf-8",
                    body: unaudited_body(&response),
                    outcome: Outcome { label, ..Outcome::default() },
                };
            }
        }
        // Discovery answers are counted (metrics, audit tally) rather than
        // logged one by one at `info`: a polling fleet would drown the log.
        let level_info = !DiscoveryAudit::covers(response.outcome.operation) || response.status >= 400;
        let latency_us = || u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
        macro_rules! request_log {
            ($level:ident) => {
                tracing::$level!(
                    target: "scepd::request",
                    method = %method,
                    path = %path,
                    profile = %log.profile,
                    operation = log.operation,
                    status = response.status,
                    outcome = log.label,
                    txid = log.transaction_id.as_deref().unwrap_or(""),
                    latency_us = latency_us(),
                    "request"
                )
            };
        }
        if level_info {
            request_log!(info);
        } else {
            request_log!(debug);
        }
        let mut out = to_http(response);
        if out.status() == StatusCode::METHOD_NOT_ALLOWED && matches!(route(uri.path()), Route::Health) {
            out.headers_mut().insert(ALLOW, HeaderValue::from_static(ALLOW_READ));
        }
        out
    }

    fn metrics(&self, method: &HttpMethod) -> http::Response<Full<Bytes>> {
        if method != HttpMethod::GET && method != HttpMethod::HEAD {
            let mut r = to_http(plain(405, "method_not_allowed", "method not allowed: use GET\n").0);
            r.headers_mut().insert(ALLOW, HeaderValue::from_static(ALLOW_READ));
            return r;
        }
        let text = crate::operator::metrics::render(&self.state, UnixTime::now());
        let mut r = to_http(Response {
            status: 200,
            content_type: crate::operator::metrics::CONTENT_TYPE,
            body: text.into_bytes(),
            outcome: Outcome::default(),
        });
        r.headers_mut().remove(ALLOW);
        r
    }

    /// `/pki/...`: the POST body (an OCSP request) is collected here, bounded
    /// in size and time like every other body.
    async fn pki<B>(&self, req: http::Request<B>) -> http::Response<Full<Bytes>>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (parts, body) = req.into_parts();
        let body = if parts.method == HttpMethod::POST {
            let collect = Limited::new(body, crate::http::pki::MAX_OCSP_REQUEST).collect();
            let collected = match self.timer.as_deref() {
                Some(t) => timeout(t, self.state.settings().body_read_timeout, collect).await,
                None => Some(collect.await),
            };
            match collected {
                Some(Ok(c)) => c.to_bytes(),
                Some(Err(_)) => {
                    let mut r = http::Response::new(Full::new(Bytes::from_static(b"OCSP request too large\n")));
                    *r.status_mut() = StatusCode::PAYLOAD_TOO_LARGE;
                    return r;
                }
                None => {
                    let mut r = http::Response::new(Full::new(Bytes::from_static(b"request body timed out\n")));
                    *r.status_mut() = StatusCode::REQUEST_TIMEOUT;
                    return r;
                }
            }
        } else {
            Bytes::new()
        };
        crate::http::pki::handle(
            &self.state.published_cas(),
            self.state.metrics().pki(),
            &parts.method,
            parts.uri.path(),
            &parts.headers,
            body,
        )
        .await
    }

    async fn admin<B>(&self, req: http::Request<B>) -> http::Response<Full<Bytes>>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let client = req
            .extensions()
            .get::<ConnectionInfo>()
            .or(self.connection.as_deref())
            .and_then(|c| c.remote_addr)
            .map(|a| a.ip());
        let (parts, body) = req.into_parts();
        let limit = crate::operator::admin::max_body();
        let collect = Limited::new(body, limit).collect();
        let collected = match self.timer.as_deref() {
            Some(t) => timeout(t, self.state.settings().body_read_timeout, collect).await,
            None => Some(collect.await),
        };
        let body = match collected {
            Some(Ok(c)) => c.to_bytes(),
            Some(Err(_)) => {
                return crate::operator::admin::error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    "request body too large or unreadable",
                );
            }
            None => {
                return crate::operator::admin::error(
                    StatusCode::REQUEST_TIMEOUT,
                    "body_timeout",
                    "request body timed out",
                );
            }
        };
        crate::operator::admin::handle(
            &self.state,
            crate::operator::admin::AdminRequest {
                method: &parts.method,
                path: parts.uri.path(),
                query: parts.uri.query(),
                authorization: parts.headers.get(http::header::AUTHORIZATION),
                body: &body,
                client,
            },
        )
        .await
    }

    /// `/healthz`: `200 ok`, a line on the audit log while its commits fail,
    /// and a line on the protection store (issue 18).
    ///
    /// - The audit log in this node's own SQLite file failing to commit (a
    ///   full disk, a file system gone read-only): `503`, first line
    ///   `unavailable: ...`, then `audit: sqlite <file> cannot commit: <why>`.
    ///   Every request that needs an event is answered 503 on this node
    ///   while other nodes may be fine, so a balancer should send elsewhere.
    ///   `200` again once a commit succeeds (the audit writer retries every
    ///   second by itself, so this needs no traffic).
    /// - The audit log on the shared PostgreSQL store failing to commit:
    ///   `200`, the line `audit: postgresql cannot commit: <why>` last; the
    ///   store unreachable: `200` with `store: <backend> unreachable: why`.
    ///   A shared outage fails every node alike; a balancer taking them all
    ///   out would also stop discovery (and every request that needs no
    ///   store), so the lines and the 503s of enrolments say what is wrong.
    async fn health(&self) -> (Response, LogFields) {
        let mut label = "health";
        let store_line = match self.state.protection().cloned() {
            None => String::new(),
            Some(store) => {
                let backend = store.backend();
                match blocking::unblock(move || store.health(true)).await {
                    scep_store::StoreHealth::Reachable => format!("store: {backend} reachable\n"),
                    scep_store::StoreHealth::Unreachable(why) => {
                        label = "health_store_unreachable";
                        format!("store: {backend} unreachable: {}\n", why.replace(['\r', '\n'], " "))
                    }
                }
            }
        };
        let audit_failure = self.state.audit().and_then(|audit| Some((audit.path(), audit.commit_failure()?)));
        match audit_failure {
            None => plain(200, label, &format!("ok\n{store_line}")),
            Some((Some(file), why)) => plain(
                503,
                "health_audit_failing",
                &format!(
                    "unavailable: the audit log cannot commit\naudit: sqlite {} cannot commit: {}\n{store_line}",
                    // The file's name only: /healthz is unauthenticated, the
                    // log has the path.
                    file.file_name().map_or_else(|| "audit log".into(), |n| n.to_string_lossy()),
                    why.replace(['\r', '\n'], " ")
                ),
            ),
            // After the store's line, which monitoring may already match on.
            Some((None, why)) => plain(
                200,
                "health_audit_failing",
                &format!("ok\n{store_line}audit: postgresql cannot commit: {}\n", why.replace(['\r', '\n'], " ")),
            ),
        }
    }

    async fn answer<B>(&self, req: http::Request<B>, connection: Option<&ConnectionInfo>) -> (Response, LogFields)
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (parts, body) = req.into_parts();
        let profiles = self.state.profiles();
        let (profile_name, mtls) = match route(parts.uri.path()) {
            Route::NotFound => match profiles.by_alias(parts.uri.path()) {
                Some(p) => (Some(p.engine.config().name.as_str()), false),
                None => return plain(404, "not_found", "not found: use /scep or /scep/<profile>\n"),
            },
            Route::Metrics | Route::Admin | Route::Ui | Route::Pki => {
                return plain(404, "not_found", "not found: use /scep or /scep/<profile>\n");
            }
            Route::Health => {
                return match parts.method {
                    HttpMethod::GET | HttpMethod::HEAD => self.health().await,
                    _ => plain(405, "method_not_allowed", "method not allowed\n"),
                };
            }
            Route::Scep(name) => (name, false),
            Route::ScepMtls(name) => (Some(name), true),
        };
        let route_name = if mtls { "scep-mtls" } else { "scep" };
        // The operation, when the query names one, for audit and metrics of early answers.
        let early_op = parse_query(parts.uri.query().unwrap_or("")).ok().map(|q| Operation::parse(&q.operation));
        let scep = |(mut r, mut l): (Response, LogFields)| {
            l.route = Some(route_name);
            if let Some(op) = early_op {
                r.outcome.operation.get_or_insert(op);
                l.operation = op.name();
            }
            (r, l)
        };
        let method = match parts.method {
            HttpMethod::GET => Method::Get,
            HttpMethod::POST => Method::Post,
            // RFC 9110 §9.3.2: HEAD answers as GET, without the body (hyper sends
            // none). Not for PKIOperation: a GET PKIOperation is not safe (it enrols).
            HttpMethod::HEAD if early_op.is_some_and(|op| op != Operation::PkiOperation) => Method::Get,
            _ => {
                return scep(plain(
                    405,
                    "method_not_allowed",
                    "method not allowed: use GET or POST (HEAD for GetCACaps/GetCACert)\n",
                ));
            }
        };
        let Some(profile) = profiles.get(profile_name) else {
            return scep(plain(404, "unknown_profile", "not found: no such SCEP profile\n"));
        };
        let profile_label = profile.engine.config().name.clone();
        let with_profile = |(r, mut l): (Response, LogFields)| {
            l.profile.clone_from(&profile_label);
            scep((r, l))
        };
        let query = match parse_query(parts.uri.query().unwrap_or("")) {
            Ok(q) => q,
            Err(e) => return with_profile(plain(400, "bad_query", &format!("bad request: {e}\n"))),
        };
        let operation = Operation::parse(&query.operation).name();
        let with_op = |(r, mut l): (Response, LogFields)| {
            l.operation = operation;
            with_profile((r, l))
        };
        if mtls {
            // The sibling route: a client certificate chaining to this profile's bundle.
            let Some(policy) = &profile.mtls else {
                return with_op(plain(404, "mtls_not_enabled", "not found: mTLS is not enabled for this profile\n"));
            };
            let empty: &[rustls_pki_types::CertificateDer<'static>] = &[];
            let chain = connection.map_or(empty, |c| &c.peer_certificates[..]);
            if let Err(why) = policy.verify(chain, UnixTime::now()) {
                let (mut r, l) = with_op(plain(
                    401,
                    "mtls_unauthorized",
                    "unauthorized: a client certificate issued by this profile's CA is required\n",
                ));
                r.outcome.detail = Some(why);
                return (r, l);
            }
        }

        let body_bytes;
        let message = match method {
            Method::Post => {
                body_bytes = match Box::pin(self.read_body(&parts.headers, body)).await {
                    Ok(b) => b,
                    Err(early) => return with_op(early),
                };
                if body_bytes.is_empty() { Message::None } else { Message::Body(&body_bytes) }
            }
            _ => query.message.map_or(Message::None, Message::Query),
        };

        let request = Request { method, operation: &query.operation, message };
        let challenges = self
            .state
            .challenges()
            .map(|store| OneTimeChallenges { store: store.as_ref(), metrics: self.state.metrics() });
        let protection = self
            .state
            .protection()
            .map(|store| DurableProtection { store, intune: profile.intune.as_ref().map(|i| &i.validator) });
        let (response, issuance) = drive_with(
            &profile.engine,
            &*profile.issuer,
            challenges,
            IntuneHooks {
                api: profile.intune_api.as_ref(),
                compliance: profile.intune_compliance.as_ref(),
                protection,
            },
            request,
            UnixTime::now,
        )
        .await;
        crate::intune::log_decision(&response.outcome, profile.intune.is_some());
        let log = LogFields {
            profile: if response.outcome.profile.is_empty() { profile_label } else { response.outcome.profile.clone() },
            operation: response.outcome.operation.map_or(operation, Operation::name),
            label: response.outcome.label,
            transaction_id: response.outcome.transaction_id.clone(),
            route: Some(route_name),
            issuance,
        };
        (response, log)
    }
}

impl ScepService {
    /// Reads a POST body within the size limit (413) and the body timeout (408).
    async fn read_body<B>(&self, headers: &http::HeaderMap, body: B) -> Result<Bytes, (Response, LogFields)>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let limit = self.state.settings().body_limit;
        let declared = headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(too_large(limit));
        }
        let collect = Limited::new(body, limit).collect();
        let collected = match self.timer.as_deref() {
            Some(t) => match timeout(t, self.state.settings().body_read_timeout, collect).await {
                Some(r) => r,
                None => return Err(plain(408, "body_timeout", "request body timed out\n")),
            },
            None => collect.await,
        };
        match collected {
            Ok(c) => Ok(c.to_bytes()),
            Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large(limit)),
            Err(_) => Err(plain(400, "body_error", "bad request: body could not be read\n")),
        }
    }
}

impl<B> Service<http::Request<B>> for ScepService
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = http::Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, req: http::Request<B>) -> Self::Future {
        if let Some(response) = bad_host(&req) {
            return Box::pin(std::future::ready(Ok(response)));
        }
        if let Some(response) = self.answer_discovery_now(&req) {
            return Box::pin(std::future::ready(Ok(response)));
        }
        let this = self.clone();
        let detached = self.detach.as_ref().and_then(|(executor, requests)| Some((executor, requests.try_start()?)));
        let Some((executor, running)) = detached else {
            return Box::pin(async move { Ok(this.handle_awaiting(req).await) });
        };
        let (answer, answered) = scep_issuers::oneshot::channel();
        executor.execute(Box::pin(async move {
            let _running = running;
            answer.send(this.handle_awaiting(req).await);
        }));
        Box::pin(async move {
            Ok(answered.await.unwrap_or_else(|| {
                // The task ended without an answer: it panicked, or the runtime dropped it.
                tracing::error!("a request's task ended without an answer: answering 500");
                let mut r = http::Response::new(Full::new(Bytes::from_static(
                    b"internal error: the request ended without an answer\n",
                )));
                *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                r
            }))
        })
    }
}

/// The 400 for an HTTP/1 request whose `Host` header is missing (HTTP/1.1)
/// or repeated; `None` when it is fine. HTTP/1.0 may omit it, and HTTP/2
/// names the authority in `:authority` (RFC 9113 §8.3.1), so neither needs
/// one. Checked before any routing, on every route hyper serves (the fast
/// path hands such requests to hyper, [`crate::http::fast_path`]).
//= https://www.rfc-editor.org/rfc/rfc9112#section-3.2
//# A server MUST respond with a 400 (Bad Request) status code to any
//# HTTP/1.1 request message that lacks a Host header field and to any
//# request message that contains more than one Host header field line or
//# a Host header field with an invalid field value.
fn bad_host<B>(req: &http::Request<B>) -> Option<http::Response<Full<Bytes>>> {
    let version = req.version();
    if version > Version::HTTP_11 {
        return None;
    }
    let mut hosts = req.headers().get_all(HOST).iter();
    let why = match (hosts.next(), hosts.next()) {
        (Some(_), None) => return None,
        (None, _) if version < Version::HTTP_11 => return None,
        (None, _) => "bad request: an HTTP/1.1 request needs a Host header\n",
        (Some(_), Some(_)) => "bad request: more than one Host header\n",
    };
    tracing::debug!(target: "scepd::request", method = %req.method(), path = req.uri().path(), ?version, "refused: Host header missing or repeated");
    Some(to_http(plain(400, "bad_host", why).0))
}

/// Fields logged for every request.
struct LogFields {
    profile: String,
    operation: &'static str,
    label: &'static str,
    transaction_id: Option<String>,
    /// `Some("scep" | "scep-mtls")` on a SCEP route: the answer is audited.
    route: Option<&'static str>,
    /// Time spent in the issuer, when asked.
    issuance: Option<Duration>,
}

/// The body of the 503 that replaces `answer` when its audit event could not
/// commit: the first cause when it is known (in an outage of a PostgreSQL
/// store the audit log fails because the same database does), short and
/// without internal detail.
fn unaudited_body(answer: &Response) -> Vec<u8> {
    if answer.status == 503 {
        // Already a 503 naming what failed first (the issuer's store, the
        // shared protection store).
        return answer.body.clone();
    }
    let body: &[u8] = if answer.outcome.label == "challenge_store_unavailable" {
        b"service unavailable: the one-time challenge store cannot be reached; retry later\n"
    } else {
        b"service unavailable: the audit log cannot record this request\n"
    };
    body.to_vec()
}

/// A transport-level answer (no engine involved).
/// Whether an answer is a refusal made before the request could be attributed
/// (an HTTP 4xx: no transactionID known, so no signed CertRep): a malformed
/// PKIMessage, an unknown profile, a wrong method. These decide nothing that
/// could issue, so they are tallied per (profile, operation, label, status,
/// route, client IP) and written once a second like discovery answers, not
/// committed one by one (issue 13: one client's bad requests grew the audit
/// database by about 1,900 rows a second). Every CertRep, SUCCESS or FAILURE,
/// is still its own durable event, committed before the answer.
fn is_unattributed_refusal(status: u16, outcome: &Outcome) -> bool {
    (400..500).contains(&status) && outcome.transaction_id.is_none()
}

fn plain(status: u16, label: &'static str, text: &str) -> (Response, LogFields) {
    let response = Response {
        status,
        content_type: "text/plain; charset=utf-8",
        body: text.as_bytes().to_vec(),
        outcome: Outcome { label, ..Outcome::default() },
    };
    (
        response,
        LogFields { profile: String::new(), operation: "", label, transaction_id: None, route: None, issuance: None },
    )
}

fn too_large(limit: usize) -> (Response, LogFields) {
    plain(413, "body_too_large", &format!("payload too large: the limit is {limit} bytes\n"))
}

/// Writes an engine [`Response`] as HTTP: status, Content-Type, Content-Length.
fn to_http(r: Response) -> http::Response<Full<Bytes>> {
    http_response(r.status, r.content_type, Bytes::from(r.body))
}

/// An HTTP answer: status, Content-Type, Content-Length, `Cache-Control:
/// no-store`, and `Allow` on 405.
fn http_response(status: u16, content_type: &'static str, body: Bytes) -> http::Response<Full<Bytes>> {
    let len = body.len();
    let mut out = http::Response::new(Full::new(body));
    *out.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = out.headers_mut();
    h.insert(CONTENT_TYPE, static_header_value(content_type));
    h.insert(CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if status == 405 {
        // RFC 9110 §15.5.6; the SCEP routes' methods (`/healthz` and `/metrics` narrow it).
        h.insert(ALLOW, HeaderValue::from_static("GET, HEAD, POST"));
    }
    out
}

/// `Allow` of the read-only routes (`/healthz`, `/metrics`).
const ALLOW_READ: &str = "GET, HEAD";

/// `value` as a header without copying it; never panics (a value that is not
/// visible ASCII, which no engine constant is, becomes `application/octet-stream`).
fn static_header_value(value: &'static str) -> HeaderValue {
    if value.bytes().all(|b| b == b'\t' || (0x20..0x7f).contains(&b)) {
        HeaderValue::from_static(value)
    } else {
        HeaderValue::from_static("application/octet-stream")
    }
}

/// Runs `fut` for at most `limit`; `None` when the time ran out.
async fn timeout<F: Future>(timer: &(dyn Timer + Send + Sync), limit: Duration, fut: F) -> Option<F::Output> {
    let mut sleep = timer.sleep(limit);
    let mut fut = std::pin::pin!(fut);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(v) = fut.as_mut().poll(cx) {
            return Poll::Ready(Some(v));
        }
        sleep.as_mut().poll(cx).map(|()| None)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::ServerSettings;
    use crate::state::Profiles;
    use crate::testutil::{TestDir, section};
    use crate::wiring::profile::BuildContext;
    use futures_lite::future::block_on;

    #[test]
    fn detached_requests_are_bounded_and_counted_until_done() {
        let requests = DetachedRequests::new(2);
        let a = requests.try_start().expect("one");
        let b = requests.try_start().expect("two");
        assert!(requests.try_start().is_none(), "a third waits on its connection");
        assert_eq!(requests.running(), 2);
        drop(a);
        assert_eq!(requests.running(), 1);
        let c = requests.try_start().expect("room again");
        drop((b, c));
        assert_eq!(requests.running(), 0);
    }

    #[test]
    fn routing_table() {
        let cases: &[(&str, Route<'_>)] = &[
            ("/scep", Route::Scep(None)),
            ("/scep/", Route::Scep(None)),
            ("/scep/pkiclient.exe", Route::Scep(None)),
            ("/scep/corp", Route::Scep(Some("corp"))),
            ("/scep/corp/", Route::Scep(Some("corp"))),
            ("/scep/corp/pkiclient.exe", Route::Scep(Some("corp"))),
            ("/scep/iot-2/pkiclient.exe", Route::Scep(Some("iot-2"))),
            ("/healthz", Route::Health),
            ("/ui", Route::Ui),
            ("/ui/scep", Route::Ui),
            ("/ui/assets/scepd.js", Route::Ui),
            ("/pki/ocsp", Route::Pki),
            ("/pki/0a1b/crl", Route::Pki),
            ("/pki", Route::NotFound),
            ("/uix", Route::NotFound),
            ("/", Route::NotFound),
            ("/scepx", Route::NotFound),
            ("/scep//corp", Route::NotFound),
            ("/scep/Corp", Route::NotFound),
            ("/scep/corp/x", Route::NotFound),
            ("/scep/corp/pkiclient.exe/pkiclient.exe", Route::NotFound),
            ("/scep/a_b", Route::NotFound),
            ("/healthz/", Route::NotFound),
            ("/certsrv/mscep/mscep.dll", Route::NotFound),
        ];
        for (path, want) in cases {
            assert_eq!(route(path), *want, "{path}");
        }
    }

    /// RFC 9112 §3.2: an HTTP/1.1 request without `Host`, or any HTTP/1
    /// request with two, is answered 400 before routing (a discovery GET
    /// included); HTTP/1.0 without `Host` and HTTP/2 are served.
    #[test]
    fn http1_requests_need_exactly_one_host() {
        let f = fixture(1024);
        let send = |version: Version, hosts: &[&str], uri: &str| {
            let mut b = http::Request::builder().version(version).uri(uri);
            for h in hosts {
                b = b.header(HOST, *h);
            }
            let r = block_on(Service::call(&f.svc, b.body(Full::new(Bytes::new())).unwrap())).unwrap();
            (r.status().as_u16(), body_text(r))
        };
        for uri in ["/healthz", "/scep?operation=GetCACaps", "/nope"] {
            let (status, text) = send(Version::HTTP_11, &[], uri);
            assert_eq!(status, 400, "{uri}: {text}");
            assert!(text.contains("Host"), "{uri}: {text}");
            for version in [Version::HTTP_10, Version::HTTP_11] {
                assert_eq!(send(version, &["a", "b"], uri).0, 400, "{uri} {version:?}");
                assert_eq!(send(version, &["a", "a"], uri).0, 400, "{uri} {version:?}");
            }
        }
        for uri in ["/healthz", "/scep?operation=GetCACaps"] {
            assert_eq!(send(Version::HTTP_11, &["scep.example"], uri).0, 200, "{uri}");
            assert_eq!(send(Version::HTTP_10, &[], uri).0, 200, "{uri}");
            assert_eq!(send(Version::HTTP_2, &[], uri).0, 200, "{uri}");
        }
    }

    struct Fixture {
        _dir: TestDir,
        svc: ScepService,
    }

    fn fixture(body_limit: usize) -> Fixture {
        fixture_with(ServerSettings { body_limit, ..ServerSettings::default() })
    }

    fn fixture_with(settings: ServerSettings) -> Fixture {
        let dir = TestDir::new();
        let mut ctx = BuildContext::new(None, dir.path(), dir.now());
        let profiles =
            vec![section(&dir, "corp").build(0, &mut ctx).unwrap(), section(&dir, "iot").build(1, &mut ctx).unwrap()];
        let state = Arc::new(ServiceState::new(settings, Profiles::new(profiles, "corp".into()).unwrap()));
        Fixture { _dir: dir, svc: ScepService::new(state, None) }
    }

    fn call(svc: &ScepService, method: &str, uri: &str, body: &[u8]) -> http::Response<Full<Bytes>> {
        let req =
            http::Request::builder().method(method).uri(uri).body(Full::new(Bytes::copy_from_slice(body))).unwrap();
        block_on(svc.handle(req))
    }

    fn body_text(r: http::Response<Full<Bytes>>) -> String {
        let b = block_on(r.into_body().collect()).unwrap().to_bytes();
        String::from_utf8_lossy(&b).into_owned()
    }

    /// The engine's answer for GetCACaps on a profile, whatever it is today.
    fn engine_status(f: &Fixture) -> u16 {
        let p = f.svc.state.profiles();
        let req = Request { method: Method::Get, operation: "GetCACaps", message: Message::None };
        block_on(crate::http::drive::drive(
            &p.get(None).unwrap().engine,
            &*p.get(None).unwrap().issuer,
            req,
            UnixTime::now,
        ))
        .status
    }

    #[test]
    fn scep_routes_reach_the_engine() {
        let f = fixture(1024);
        let want = engine_status(&f);
        for uri in [
            "/scep?operation=GetCACaps",
            "/scep/pkiclient.exe?operation=GetCACaps",
            "/scep/corp?operation=GetCACaps",
            "/scep/iot/pkiclient.exe?operation=GetCACaps",
        ] {
            let r = call(&f.svc, "GET", uri, b"");
            assert_eq!(r.status().as_u16(), want, "{uri}");
            assert!(r.headers().contains_key(CONTENT_TYPE), "{uri}");
            let len: usize = r.headers()[CONTENT_LENGTH].to_str().unwrap().parse().unwrap();
            assert_eq!(len, body_text(r).len(), "{uri}");
        }
    }

    /// NDES's path (the default profile's by default) reaches the engine on
    /// every method hyper serves, POST included; a path beside it is 404.
    #[test]
    fn ndes_path_reaches_the_default_profile() {
        let f = fixture(1024);
        let want = engine_status(&f);
        for uri in [
            "/certsrv/mscep/mscep.dll?operation=GetCACaps",
            "/certsrv/mscep/mscep.dll/pkiclient.exe?operation=GetCACaps",
        ] {
            let r = call(&f.svc, "GET", uri, b"");
            assert_eq!(r.status().as_u16(), want, "{uri}");
        }
        let direct = body_text(call(&f.svc, "POST", "/scep/corp?operation=PKIOperation", b"\x30\x03\x02\x01\x00"));
        let aliased = call(
            &f.svc,
            "POST",
            "/certsrv/mscep/mscep.dll/pkiclient.exe?operation=PKIOperation",
            b"\x30\x03\x02\x01\x00",
        );
        assert_ne!(aliased.status(), StatusCode::NOT_FOUND);
        assert_eq!(body_text(aliased), direct, "the alias is answered by the default profile's engine");
        let r = call(&f.svc, "PUT", "/certsrv/mscep/mscep.dll", b"");
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
        for uri in ["/certsrv/mscep/other.dll?operation=GetCACaps", "/certsrv?operation=GetCACaps"] {
            assert_eq!(call(&f.svc, "GET", uri, b"").status(), StatusCode::NOT_FOUND, "{uri}");
        }
    }

    #[test]
    fn unknown_paths_and_profiles_are_404_with_a_reason() {
        let f = fixture(1024);
        for uri in ["/scep/nope?operation=GetCACaps", "/other", "/scep/BAD", "/"] {
            let r = call(&f.svc, "GET", uri, b"");
            assert_eq!(r.status(), StatusCode::NOT_FOUND, "{uri}");
            assert!(body_text(r).starts_with("not found"), "{uri}");
        }
    }

    #[test]
    fn the_gui_is_served_unless_turned_off() {
        let on = fixture(1024);
        let r = call(&on.svc, "GET", "/ui/scep?tab=intune", b"");
        assert_eq!(r.status(), StatusCode::OK);
        assert!(r.headers().contains_key(http::header::CONTENT_SECURITY_POLICY));
        assert!(body_text(r).contains("SCEP Administration"));
        let off = fixture_with(ServerSettings { gui: false, ..ServerSettings::default() });
        for uri in ["/ui/scep", "/ui/assets/scepd.js", "/ui/"] {
            let r = call(&off.svc, "GET", uri, b"");
            assert_eq!(r.status(), StatusCode::NOT_FOUND, "{uri}");
            assert!(body_text(r).contains("server.gui = false"), "{uri}");
        }
        // The admin API does not depend on it.
        let r = call(&off.svc, "GET", "/api/v1/admin/scep/profiles", b"");
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }

    #[test]
    fn methods() {
        let f = fixture(1024);
        for m in ["PUT", "DELETE", "OPTIONS", "PATCH"] {
            let r = call(&f.svc, m, "/scep?operation=GetCACaps", b"");
            assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED, "{m}");
            assert_eq!(r.headers()[ALLOW], "GET, HEAD, POST");
        }
        // HEAD answers a discovery GET as GET would (hyper drops the body on the wire).
        for op in ["GetCACaps", "GetCACert"] {
            let get = call(&f.svc, "GET", &format!("/scep?operation={op}"), b"");
            let head = call(&f.svc, "HEAD", &format!("/scep?operation={op}"), b"");
            assert_eq!(
                (head.status(), head.headers()[CONTENT_LENGTH].clone()),
                (StatusCode::OK, get.headers()[CONTENT_LENGTH].clone()),
                "{op}"
            );
            assert_eq!(head.headers()[CONTENT_TYPE], get.headers()[CONTENT_TYPE], "{op}");
        }
        // Not for PKIOperation, which is not safe.
        let r = call(&f.svc, "HEAD", "/scep?operation=PKIOperation&message=AAAA", b"");
        assert_eq!(
            (r.status(), &r.headers()[ALLOW]),
            (StatusCode::METHOD_NOT_ALLOWED, &HeaderValue::from_static("GET, HEAD, POST"))
        );
        assert_eq!(call(&f.svc, "GET", "/healthz", b"").status(), StatusCode::OK);
        assert_eq!(body_text(call(&f.svc, "GET", "/healthz", b"")), "ok\n");
        assert_eq!(call(&f.svc, "HEAD", "/healthz", b"").status(), StatusCode::OK);
        for path in ["/healthz", "/metrics"] {
            let r = call(&f.svc, "POST", path, b"");
            assert_eq!(
                (r.status(), &r.headers()[ALLOW]),
                (StatusCode::METHOD_NOT_ALLOWED, &HeaderValue::from_static("GET, HEAD")),
                "{path}"
            );
        }
    }

    #[test]
    fn bad_query_is_400() {
        let f = fixture(1024);
        let r = call(&f.svc, "GET", "/scep?operation=GetCACaps&operation=GetCACert", b"");
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert!(body_text(r).contains("operation"));
    }

    #[test]
    fn post_body_over_the_limit_is_413() {
        let f = fixture(1024);
        // Within the limit (exactly at it): reaches the engine, which refuses the
        // garbage as not a PKIMessage (400 with its reason, not the transport's 413).
        let r = call(&f.svc, "POST", "/scep?operation=PKIOperation", &[0x30; 1024]);
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert!(body_text(r).contains("not a SCEP PKIMessage"));
        // Over the limit, with and without a declared length.
        let r = call(&f.svc, "POST", "/scep?operation=PKIOperation", &[0x30; 1025]);
        assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert!(body_text(r).contains("1024"));
        let req = http::Request::builder()
            .method("POST")
            .uri("/scep/corp?operation=PKIOperation")
            .header(CONTENT_LENGTH, "999999")
            .header(CONTENT_TYPE, "application/x-pki-message")
            .body(Full::new(Bytes::from_static(b"short")))
            .unwrap();
        assert_eq!(block_on(f.svc.handle(req)).status(), StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[test]
    fn post_with_any_content_type_reaches_the_engine() {
        let f = fixture(4096);
        for ct in [Some("application/x-pki-message"), Some("application/octet-stream"), None] {
            let mut b = http::Request::builder().method("POST").uri("/scep?operation=PKIOperation");
            if let Some(ct) = ct {
                b = b.header(CONTENT_TYPE, ct);
            }
            let req = b.body(Full::new(Bytes::from_static(&[0x30, 0x00]))).unwrap();
            let r = block_on(f.svc.handle(req));
            assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{ct:?}");
            assert!(body_text(r).contains("not a SCEP PKIMessage"), "{ct:?}: the engine answered");
        }
    }

    /// A timer whose sleeps end at once: the body read must time out when the
    /// body never arrives.
    #[derive(Clone)]
    struct InstantTimer;
    struct Done;
    impl Future for Done {
        type Output = ();
        fn poll(self: Pin<&mut Self>, _: &mut std::task::Context<'_>) -> Poll<()> {
            Poll::Ready(())
        }
    }
    impl hyper::rt::Sleep for Done {}
    impl Timer for InstantTimer {
        fn sleep(&self, _: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
            Box::pin(Done)
        }
        fn sleep_until(&self, _: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
            Box::pin(Done)
        }
    }

    /// A body that never yields a frame.
    struct Stalled;
    impl Body for Stalled {
        type Data = Bytes;
        type Error = Infallible;
        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
            Poll::Pending
        }
    }

    #[test]
    fn stalled_body_times_out_with_408() {
        let f = fixture(1024);
        let svc = ScepService::new(f.svc.state.clone(), Some(Arc::new(InstantTimer)));
        let req = http::Request::builder().method("POST").uri("/scep?operation=PKIOperation").body(Stalled).unwrap();
        assert_eq!(block_on(svc.handle(req)).status(), StatusCode::REQUEST_TIMEOUT);
    }
}
