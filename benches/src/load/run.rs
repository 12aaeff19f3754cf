//! The load loop: worker threads with one connection each (kept alive, or
//! reopened per device or per request: [`ConnectionUse`]).
//!
//! - Closed loop (`rate = None`): `concurrency` workers send back to back.
//! - Open loop (`rate = Some(r)`): request `i` is due at `start + i / r`; up
//!   to `concurrency` are in flight. Latency is measured from the due time,
//!   not the send time, so a slow server cannot hide its queueing delay
//!   (no coordinated omission).

use std::collections::BTreeMap;
use std::io::IsTerminal as _;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use scep_tests::client::{CaCertificates, PkiMethod, PkiStatus, url_encode, verify_cert_rep};

use super::Target;
use super::fleet::{Device, Prepared};
use super::http::Reply;

/// What each request does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    /// PKIOperation with a prepared PKCSReq (needs a fleet).
    PkcsReq,
    /// GetCACaps.
    GetCaCaps,
    /// GetCACert.
    GetCaCert,
    /// What an Intune-managed device does to enrol: GetCACaps, GetCACert,
    /// then PKIOperation with a prepared PKCSReq (three requests; one
    /// enrolment is counted, its latency the three together).
    Device,
}

impl Operation {
    /// True for operations that send prepared PKIMessages.
    pub const fn sends_pki_messages(self) -> bool {
        matches!(self, Self::PkcsReq | Self::Device)
    }
}

/// When a worker closes its connection and opens a new one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectionUse {
    /// Never (unless the server closes it): one connection per worker.
    KeepAlive,
    /// After each device's requests ([`Operation::Device`]: its three
    /// requests on one connection; otherwise as per request).
    PerDevice,
    /// After every request.
    PerRequest,
}

/// When each reply's CertRep is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verify {
    /// During the run (costs the client an RSA decryption per reply).
    Inline,
    /// After the clock stops, every reply (the default: the client's CPU stays off the server's cores).
    After,
    /// HTTP status and Content-Type only.
    Off,
}

/// A load run's parameters.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Server address, Host header, SCEP path and TLS.
    pub target: Target,
    /// Operation.
    pub operation: Operation,
    /// GET or POST for PKIOperation.
    pub method: PkiMethod,
    /// Workers (= connections = most requests in flight).
    pub concurrency: usize,
    /// Open-loop target rate (requests/s), or closed loop.
    pub rate: Option<f64>,
    /// Requests to send (PKCSReq: at most the prepared messages).
    pub requests: usize,
    /// Stop sending after this long.
    pub duration: Option<Duration>,
    /// Socket timeout.
    pub timeout: Duration,
    /// Reply checking.
    pub verify: Verify,
    /// Draw a progress bar on stderr.
    pub progress: bool,
    /// When connections are closed and reopened.
    pub connection_use: ConnectionUse,
}

/// What the run measured (before verification after the clock).
#[derive(Debug, Default)]
pub struct Measured {
    /// Latency of every answered-and-accepted request, microseconds.
    pub latencies_us: Vec<u32>,
    /// Requests sent.
    pub sent: usize,
    /// Errors by kind.
    pub errors: BTreeMap<String, u64>,
    /// Wall time from the first send to the last reply.
    pub elapsed: Duration,
    /// Connections opened.
    pub connections: u64,
    /// TLS connections that resumed a session.
    pub resumed: u64,
    /// Replies kept for checking after the clock: (prepared index, body).
    pub deferred: Vec<(usize, Vec<u8>)>,
}

/// Checks one CertRep: SUCCESS, and the issued certificate decrypts and is
/// for the device's key and name. `Err` is the error kind.
pub fn check_cert_rep(body: &[u8], p: &Prepared, devices: &[Device], ca: &CaCertificates) -> Result<(), String> {
    let device = &devices[p.device];
    let rep = verify_cert_rep(body, &p.request, &device.key, &ca.certificates).map_err(|e| {
        let kind = match e {
            scep_tests::client::ClientError::Crypto(_) => "certrep_decrypt",
            scep_tests::client::ClientError::Protocol(_) => "certrep_protocol",
            _ => "certrep_invalid",
        };
        kind.to_string()
    })?;
    if rep.status != PkiStatus::SUCCESS {
        return Err(match rep.fail_info {
            Some(f) => format!("certrep_failure_{f:?}").to_ascii_lowercase(),
            None => format!("certrep_status_{:?}", rep.status).to_ascii_lowercase(),
        });
    }
    let cert = rep.issued_certificate(&device.key).ok_or_else(|| "certrep_no_certificate".to_string())?;
    let parsed = scep_engine::x509::CertificateRef::parse(cert).map_err(|_| "issued_cert_unparsable".to_string())?;
    if parsed.spki.raw != device.key.spki_der() {
        return Err("issued_cert_wrong_key".into());
    }
    let want_cn = scep_tests::client::SubjectName::cn(device.name.clone()).to_der();
    if parsed.subject != want_cn.as_slice() {
        return Err("issued_cert_wrong_subject".into());
    }
    Ok(())
}

struct Shared<'a> {
    plan: &'a Plan,
    prepared: &'a [Prepared],
    devices: &'a [Device],
    ca: Option<&'a CaCertificates>,
    next: AtomicUsize,
    done: AtomicU64,
    failed: AtomicU64,
    stop: AtomicBool,
    start: Instant,
    deadline: Option<Instant>,
}

/// Runs `plan`. `prepared` is consumed in order for PKCSReq.
pub fn run(plan: &Plan, prepared: &[Prepared], devices: &[Device], ca: Option<&CaCertificates>) -> Measured {
    let total = if plan.operation.sends_pki_messages() { plan.requests.min(prepared.len()) } else { plan.requests };
    let start = Instant::now();
    let shared = Shared {
        plan,
        prepared,
        devices,
        ca,
        next: AtomicUsize::new(0),
        done: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        start,
        deadline: plan.duration.map(|d| start + d),
    };
    let merged = Mutex::new(Measured::default());
    let last_reply = Mutex::new(start);
    std::thread::scope(|s| {
        let progress = plan.progress.then(|| s.spawn(|| draw_progress(&shared, total)));
        let workers: Vec<_> =
            (0..plan.concurrency.max(1)).map(|_| s.spawn(|| worker(&shared, total, &merged, &last_reply))).collect();
        for w in workers {
            let _ = w.join();
        }
        shared.stop.store(true, Ordering::Relaxed);
        if let Some(p) = progress {
            let _ = p.join();
        }
    });
    let mut m = merged.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
    m.sent = shared.next.load(Ordering::Relaxed).min(total);
    m.elapsed = last_reply.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner).duration_since(start);
    m
}

fn worker(shared: &Shared<'_>, total: usize, merged: &Mutex<Measured>, last_reply: &Mutex<Instant>) {
    let plan = shared.plan;
    let mut conn = plan.target.connection(plan.timeout);
    let path = &plan.target.path;
    let caps_target = format!("{path}?operation=GetCACaps");
    let cacert_target = format!("{path}?operation=GetCACert&message=scep-load");
    let mut local = Measured::default();
    let mut last = shared.start;
    loop {
        if shared.deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let i = shared.next.fetch_add(1, Ordering::Relaxed);
        if i >= total {
            break;
        }
        let due = match plan.rate {
            Some(r) => {
                let due = shared.start + Duration::from_secs_f64(i as f64 / r);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                due
            }
            None => Instant::now(),
        };
        let per_request = plan.connection_use == ConnectionUse::PerRequest;
        let mut send = |method: &str, target: &str, body: Option<(&str, &[u8])>| {
            let r = conn.request(method, target, body);
            if per_request {
                conn.close();
            }
            r
        };
        let result = match plan.operation {
            Operation::GetCaCaps => send("GET", &caps_target, None),
            Operation::GetCaCert => send("GET", &cacert_target, None),
            Operation::PkcsReq => send_pki_message(&mut send, plan, &shared.prepared[i].request.der),
            Operation::Device => discovery(&mut send, &caps_target, &cacert_target)
                .and_then(|()| send_pki_message(&mut send, plan, &shared.prepared[i].request.der)),
        };
        if plan.connection_use == ConnectionUse::PerDevice {
            conn.close();
        }
        let now = Instant::now();
        last = now;
        let latency = u32::try_from(now.duration_since(due).as_micros()).unwrap_or(u32::MAX);
        let verdict = match result {
            // Discovery refusals and TLS errors carry their own text.
            Err(e) if e.kind() == std::io::ErrorKind::Other => Err(e.to_string()),
            Err(e) => Err(format!("io_{:?}", e.kind()).to_ascii_lowercase()),
            Ok(r) if r.status != 200 => Err(format!("http_{}", r.status)),
            Ok(r) => match plan.operation {
                Operation::PkcsReq | Operation::Device => {
                    let ct = r.content_type.as_deref().unwrap_or_default().to_ascii_lowercase();
                    if !ct.starts_with("application/x-pki-message") {
                        Err("content_type".to_string())
                    } else {
                        match (plan.verify, shared.ca) {
                            (Verify::Inline, Some(ca)) => {
                                check_cert_rep(&r.body, &shared.prepared[i], shared.devices, ca)
                            }
                            (Verify::After, _) => {
                                local.deferred.push((i, r.body));
                                Ok(())
                            }
                            _ => Ok(()),
                        }
                    }
                }
                _ => Ok(()),
            },
        };
        match verdict {
            Ok(()) => {
                local.latencies_us.push(latency);
                shared.done.fetch_add(1, Ordering::Relaxed);
            }
            Err(kind) => {
                *local.errors.entry(kind).or_default() += 1;
                shared.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    local.connections = conn.opened;
    local.resumed = conn.resumed;
    if let Ok(mut m) = merged.lock() {
        m.latencies_us.append(&mut local.latencies_us);
        for (k, v) in local.errors {
            *m.errors.entry(k).or_default() += v;
        }
        m.connections += local.connections;
        m.resumed += local.resumed;
        m.deferred.append(&mut local.deferred);
    }
    if let Ok(mut l) = last_reply.lock() {
        *l = (*l).max(last);
    }
}

/// Sends a prepared PKIMessage (RFC 8894 §4.3: POST, or GET with the
/// base64 message in the query).
fn send_pki_message(
    send: &mut impl FnMut(&str, &str, Option<(&str, &[u8])>) -> std::io::Result<Reply>,
    plan: &Plan,
    der: &[u8],
) -> std::io::Result<Reply> {
    let path = &plan.target.path;
    match plan.method {
        PkiMethod::Post => {
            send("POST", &format!("{path}?operation=PKIOperation"), Some(("application/x-pki-message", der)))
        }
        PkiMethod::Get => {
            let target = format!("{path}?operation=PKIOperation&message={}", url_encode(&STANDARD.encode(der)));
            send("GET", &target, None)
        }
    }
}

/// A device's discovery before it enrols: GetCACaps then GetCACert, each
/// of which must answer 200 (else an `http_<status>` error naming it).
fn discovery(
    send: &mut impl FnMut(&str, &str, Option<(&str, &[u8])>) -> std::io::Result<Reply>,
    caps_target: &str,
    cacert_target: &str,
) -> std::io::Result<()> {
    for (name, target) in [("getcacaps", caps_target), ("getcacert", cacert_target)] {
        let r = send("GET", target, None)?;
        if r.status != 200 {
            return Err(std::io::Error::other(format!("{name}_http_{}", r.status)));
        }
    }
    Ok(())
}

/// A progress bar on stderr, redrawn four times a second.
fn draw_progress(shared: &Shared<'_>, total: usize) {
    let tty = std::io::stderr().is_terminal();
    let mut ticks = 0u64;
    while !shared.stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(250));
        ticks += 1;
        // Not a terminal (CI logs): one line every 5 s instead of redraws.
        if !tty && !ticks.is_multiple_of(20) {
            continue;
        }
        let done = shared.done.load(Ordering::Relaxed);
        let failed = shared.failed.load(Ordering::Relaxed);
        let elapsed = shared.start.elapsed().as_secs_f64();
        let frac = match (shared.deadline, total) {
            (Some(d), _) => (elapsed / d.duration_since(shared.start).as_secs_f64().max(1e-9)).min(1.0),
            (None, 0) => 1.0,
            (None, t) => ((done + failed) as f64 / t as f64).min(1.0),
        };
        let width = 30usize;
        let filled = (frac * width as f64) as usize;
        let bar: String = (0..width).map(|i| if i < filled { '#' } else { '-' }).collect();
        let rate = done as f64 / elapsed.max(1e-9);
        let line = format!("[{bar}] {:>3.0}% {done} ok {failed} err {rate:.0}/s {elapsed:.1}s", frac * 100.0);
        if tty {
            eprint!("\r{line}\x1b[K");
        } else {
            eprintln!("{line}");
        }
    }
    if tty {
        eprintln!();
    }
}

/// Checks deferred replies on `threads` threads; returns (ok, errors by kind).
pub fn check_deferred(
    deferred: &[(usize, Vec<u8>)],
    prepared: &[Prepared],
    devices: &[Device],
    ca: &CaCertificates,
    threads: usize,
) -> (u64, BTreeMap<String, u64>) {
    let next = AtomicUsize::new(0);
    let errors = Arc::new(Mutex::new(BTreeMap::<String, u64>::new()));
    let ok = AtomicU64::new(0);
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((index, body)) = deferred.get(i) else { break };
                    match check_cert_rep(body, &prepared[*index], devices, ca) {
                        Ok(()) => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(kind) => {
                            if let Ok(mut e) = errors.lock() {
                                *e.entry(kind).or_default() += 1;
                            }
                        }
                    }
                }
            });
        }
    });
    let errors = errors.lock().map(|e| e.clone()).unwrap_or_default();
    (ok.into_inner(), errors)
}
