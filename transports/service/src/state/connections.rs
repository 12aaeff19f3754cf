//! Connection-level defences shared by every transport, sans-IO: a per-client
//! share of the connection budget, the "no request in flight" tracker behind the
//! request deadline, and the counters `/metrics` shows for both.
//!
//! - [`ClientLimits`]: one client address may hold at most
//!   [`ServerSettings::max_connections_per_client`](crate::ServerSettings::max_connections_per_client)
//!   connections, and, when configured, one IPv4 /24 or IPv6 /64 at most
//!   [`ServerSettings::max_connections_per_network`](crate::ServerSettings::max_connections_per_network).
//!   A transport asks [`ClientLimits::admit`] right after `accept`, before TLS,
//!   and closes the connection when refused. The table is sharded (one short
//!   lock per accept and per close, on one of [`SHARDS`] maps), so accepts from
//!   different clients rarely meet on a lock.
//! - [`RequestActivity`] and [`TrackedService`]: how many requests of one
//!   connection are inside the service or still sending their response body
//!   ([`TrackedBody`]), and since when none is. hyper has no
//!   deadline for "no complete request yet" on HTTP/2 (a partial preface, a
//!   preface with SETTINGS and nothing else, a HEADERS frame whose header block
//!   never ends all stay open forever) nor on its HTTP/1-or-HTTP/2 detection;
//!   the transports close a connection idle for
//!   [`ServerSettings::header_read_timeout`](crate::ServerSettings::header_read_timeout)
//!   with it.
//! - [`ConnectionCounters`]: refused connections by [`Refusal`] and closed
//!   connections by [`Closed`] reason, rendered by [`crate::operator::metrics`] as
//!   `scepd_connections_refused_total` and `scepd_connections_closed_total`.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::future::Future;
use std::hash::BuildHasher as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

/// Number of independently locked maps in [`ClientLimits`].
pub const SHARDS: usize = 64;

/// Why a connection was refused at accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// `max_connections` connections are open.
    Global,
    /// The client address holds `max_connections_per_client` connections.
    PerClient,
    /// The client's /24 (IPv4) or /64 (IPv6) holds `max_connections_per_network` connections.
    PerNetwork,
}

impl Refusal {
    /// Every reason, in the order `/metrics` lists them.
    pub const ALL: [Self; 3] = [Self::Global, Self::PerClient, Self::PerNetwork];

    /// The `reason` label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Global => "global",
            Self::PerClient => "per_client",
            Self::PerNetwork => "per_network",
        }
    }
}

/// Why the server closed a connection on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Closed {
    /// The TLS handshake did not finish within `header_read_timeout`.
    TlsHandshakeTimeout,
    /// No complete request head within `header_read_timeout` (HTTP/1.1
    /// fast path), or no request within it on a connection hyper serves
    /// (HTTP/2 preface variants, an unfinished header block, idle HTTP/2).
    RequestTimeout,
    /// A write made no progress for `write_timeout` (a client that does not read).
    WriteTimeout,
    /// One of hyper's own timers: an HTTP/2 keep-alive PING not acknowledged
    /// within `h2_keep_alive_timeout`, or hyper's HTTP/1 `header_read_timeout`
    /// for a request head it reads itself.
    HyperTimeout,
    /// A request head that is not HTTP/1.1 (the fast path answered 400 with
    /// the reason, then closed the connection).
    MalformedRequest,
}

impl Closed {
    /// Every reason, in the order `/metrics` lists them.
    pub const ALL: [Self; 5] = [
        Self::TlsHandshakeTimeout,
        Self::RequestTimeout,
        Self::WriteTimeout,
        Self::HyperTimeout,
        Self::MalformedRequest,
    ];

    /// The `reason` label.
    pub fn label(self) -> &'static str {
        match self {
            Self::TlsHandshakeTimeout => "tls_handshake_timeout",
            Self::RequestTimeout => "request_timeout",
            Self::WriteTimeout => "write_timeout",
            Self::HyperTimeout => "hyper_timeout",
            Self::MalformedRequest => "malformed_request",
        }
    }
}

/// Connection counters for `/metrics` (lock-free).
#[derive(Debug, Default)]
pub struct ConnectionCounters {
    refused: [AtomicU64; Refusal::ALL.len()],
    closed: [AtomicU64; Closed::ALL.len()],
}

impl ConnectionCounters {
    /// Counts one refused connection.
    pub fn refused(&self, why: Refusal) {
        self.refused[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one connection the server closed on its own.
    pub fn closed(&self, why: Closed) {
        self.closed[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Connections refused for `why` so far.
    pub fn refused_total(&self, why: Refusal) -> u64 {
        self.refused[why as usize].load(Ordering::Relaxed)
    }

    /// Connections closed for `why` so far.
    pub fn closed_total(&self, why: Closed) -> u64 {
        self.closed[why as usize].load(Ordering::Relaxed)
    }
}

/// What one shard counts: connections per client address or per network.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
enum Key {
    Client(IpAddr),
    Network(IpAddr),
}

/// Open connections per client address and per network, with their limits.
#[derive(Debug)]
pub struct ClientLimits {
    per_client: usize,
    per_network: Option<usize>,
    hasher: RandomState,
    shards: Box<[Mutex<HashMap<Key, usize>>]>,
}

impl ClientLimits {
    /// Limits of `per_client` connections per address and, when set,
    /// `per_network` per IPv4 /24 or IPv6 /64.
    pub fn new(per_client: usize, per_network: Option<usize>) -> Arc<Self> {
        Arc::new(Self {
            per_client,
            per_network,
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        })
    }

    /// Admits one more connection from `peer`, or says which limit it is over.
    /// The returned permit gives the place back when dropped (when the
    /// connection ends).
    ///
    /// # Errors
    /// [`Refusal::PerClient`] or [`Refusal::PerNetwork`] when `peer` (or its
    /// network) already holds its share.
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Result<ClientPermit, Refusal> {
        let client = Key::Client(peer.to_canonical());
        if !self.take(client, self.per_client) {
            return Err(Refusal::PerClient);
        }
        let network = match self.per_network {
            None => None,
            Some(limit) => {
                let network = Key::Network(network_of(peer));
                if !self.take(network, limit) {
                    self.give_back(client);
                    return Err(Refusal::PerNetwork);
                }
                Some(network)
            }
        };
        Ok(ClientPermit { limits: self.clone(), client, network })
    }

    /// Connections `peer` holds now.
    pub fn open_from(&self, peer: IpAddr) -> usize {
        let key = Key::Client(peer.to_canonical());
        self.shard(&key).get(&key).copied().unwrap_or(0)
    }

    fn shard(&self, key: &Key) -> std::sync::MutexGuard<'_, HashMap<Key, usize>> {
        // `SHARDS` is a power of two: the low bits of the hash pick the shard.
        let index = (self.hasher.hash_one(key) as usize) % SHARDS;
        self.shards[index].lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// One more under `key` when it holds fewer than `limit`.
    fn take(&self, key: Key, limit: usize) -> bool {
        let mut shard = self.shard(&key);
        let open = shard.entry(key).or_insert(0);
        if *open >= limit {
            return false;
        }
        *open += 1;
        true
    }

    fn give_back(&self, key: Key) {
        let mut shard = self.shard(&key);
        if let Some(open) = shard.get_mut(&key) {
            *open = open.saturating_sub(1);
            if *open == 0 {
                shard.remove(&key);
            }
        }
    }
}

/// The network a client address counts against: its IPv4 /24, or its IPv6 /64
/// (IPv4-mapped IPv6 addresses count as IPv4).
fn network_of(peer: IpAddr) -> IpAddr {
    match peer.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(Ipv4Addr::from(v4.to_bits() & 0xffff_ff00)),
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(v6.to_bits() & !((1u128 << 64) - 1))),
    }
}

/// One admitted connection's place in [`ClientLimits`]; given back on drop.
#[derive(Debug)]
pub struct ClientPermit {
    limits: Arc<ClientLimits>,
    client: Key,
    network: Option<Key>,
}

impl Drop for ClientPermit {
    fn drop(&mut self) {
        self.limits.give_back(self.client);
        if let Some(network) = self.network {
            self.limits.give_back(network);
        }
    }
}

/// Requests of one connection inside the service, and when the last one left.
///
/// Timestamps are milliseconds since the connection started, so one atomic
/// holds them.
#[derive(Debug)]
pub struct RequestActivity {
    started: Instant,
    in_flight: AtomicUsize,
    idle_since_ms: AtomicU64,
}

impl RequestActivity {
    /// A connection that starts now, with no request yet.
    pub fn new() -> Arc<Self> {
        Arc::new(Self { started: Instant::now(), in_flight: AtomicUsize::new(0), idle_since_ms: AtomicU64::new(0) })
    }

    /// When the connection must be closed if nothing happens before: `idle`
    /// after the last request left the service (or after the start), or
    /// `None` while a request is inside the service.
    pub fn deadline(&self, idle: Duration) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let since = Duration::from_millis(self.idle_since_ms.load(Ordering::Acquire));
        Some(self.started + since + idle)
    }

    fn enter(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }
}

/// One request inside the service or sending its response; leaving marks the
/// connection idle from now when it was the last.
#[derive(Debug)]
struct InFlight(Arc<RequestActivity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let ms = u64::try_from(self.0.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        // Stored before the count drops, so a reader seeing 0 sees the new time.
        self.0.idle_since_ms.fetch_max(ms, Ordering::AcqRel);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A hyper service that records its requests in a [`RequestActivity`], each
/// from `call` until its response body has been handed to hyper to the end
/// ([`TrackedBody`]): a response still leaving for a slow reader keeps the
/// connection from counting as idle, so the request deadline never cuts it
/// off (the write timeout alone judges a reader that takes bytes slowly).
#[derive(Clone, Debug)]
pub struct TrackedService<S> {
    inner: S,
    activity: Arc<RequestActivity>,
}

impl<S> TrackedService<S> {
    /// `inner`, with its requests counted in `activity`.
    pub fn new(inner: S, activity: Arc<RequestActivity>) -> Self {
        Self { inner, activity }
    }
}

impl<S, R, B> hyper::service::Service<R> for TrackedService<S>
where
    S: hyper::service::Service<R, Response = http::Response<B>>,
    S::Future: Unpin,
    B: Body<Data = Bytes> + Unpin,
{
    type Response = http::Response<TrackedBody<B>>;
    type Error = S::Error;
    type Future = Tracked<S::Future>;

    fn call(&self, req: R) -> Self::Future {
        let in_flight = self.activity.enter();
        Tracked { inner: self.inner.call(req), in_flight: Some(in_flight) }
    }
}

/// A [`TrackedService`] request: counted until it fails or is dropped, or,
/// once answered, by its [`TrackedBody`]. (The service's future is already
/// boxed, so no second allocation.)
#[derive(Debug)]
pub struct Tracked<F> {
    inner: F,
    in_flight: Option<InFlight>,
}

impl<F, B, E> Future for Tracked<F>
where
    F: Future<Output = Result<http::Response<B>, E>> + Unpin,
{
    type Output = Result<http::Response<TrackedBody<B>>, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let response = std::task::ready!(Pin::new(&mut self.inner).poll(cx));
        let in_flight = self.in_flight.take();
        Poll::Ready(response.map(|r| r.map(|inner| TrackedBody { inner, last: None, started: false, in_flight })))
    }
}

/// A response body that keeps its request counted in [`RequestActivity`]
/// until hyper has taken all of it (or dropped it).
///
/// The body's last byte is handed over as a frame of its own, and the end
/// only on the poll after it. hyper's HTTP/2 stream asks for that byte only
/// once the stream's flow-control window has room for everything before it
/// (RFC 9113 §5.2, §6.9), so a reader that opens its window slowly keeps the
/// request counted while the response is still leaving. On HTTP/1 the end
/// comes once hyper has buffered the body (at most `max_buf_size` left to
/// write).
#[derive(Debug)]
pub struct TrackedBody<B> {
    inner: B,
    /// The last byte, held back from the inner body's last data frame.
    last: Option<Bytes>,
    /// hyper has polled the body.
    started: bool,
    in_flight: Option<InFlight>,
}

impl<B> Body for TrackedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        this.started = true;
        if let Some(last) = this.last.take() {
            return Poll::Ready(Some(Ok(Frame::data(last))));
        }
        let frame = std::task::ready!(Pin::new(&mut this.inner).poll_frame(cx));
        match frame {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(mut data) if data.len() > 1 && this.inner.is_end_stream() => {
                    this.last = Some(data.split_off(data.len() - 1));
                    Poll::Ready(Some(Ok(Frame::data(data))))
                }
                Ok(data) => Poll::Ready(Some(Ok(Frame::data(data)))),
                Err(frame) => Poll::Ready(Some(Ok(frame))),
            },
            ended => {
                this.in_flight = None;
                Poll::Ready(ended)
            }
        }
    }

    /// An empty body is empty from the start (hyper then sends none); once
    /// polled, the end is the `None` of [`Self::poll_frame`].
    fn is_end_stream(&self) -> bool {
        self.in_flight.is_none() || (!self.started && self.inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let held = self.last.as_ref().map_or(0, |b| b.len() as u64);
        let inner = self.inner.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower() + held);
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper + held);
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn one_address_gets_its_share_and_gets_it_back() {
        let limits = ClientLimits::new(2, None);
        let a = limits.admit(ip("192.0.2.1")).unwrap();
        let _b = limits.admit(ip("192.0.2.1")).unwrap();
        assert_eq!(limits.admit(ip("192.0.2.1")).unwrap_err(), Refusal::PerClient);
        // Another address is not affected, nor is the same address mapped to IPv6 spared.
        let _c = limits.admit(ip("192.0.2.2")).unwrap();
        assert_eq!(limits.admit(ip("::ffff:192.0.2.1")).unwrap_err(), Refusal::PerClient);
        drop(a);
        assert_eq!(limits.open_from(ip("192.0.2.1")), 1);
        let _d = limits.admit(ip("192.0.2.1")).unwrap();
    }

    #[test]
    fn a_network_share_counts_every_address_in_its_24_or_64() {
        let limits = ClientLimits::new(2, Some(3));
        let held: Vec<_> =
            ["198.51.100.1", "198.51.100.2", "198.51.100.2"].iter().map(|a| limits.admit(ip(a)).unwrap()).collect();
        assert_eq!(limits.admit(ip("198.51.100.200")).unwrap_err(), Refusal::PerNetwork);
        // A refusal by network gives the address place back.
        assert_eq!(limits.open_from(ip("198.51.100.200")), 0);
        let _other_net = limits.admit(ip("198.51.101.1")).unwrap();
        let v6: Vec<_> = (1..=3).map(|i| limits.admit(ip(&format!("2001:db8::{i}"))).unwrap()).collect();
        assert_eq!(limits.admit(ip("2001:db8::ffff:1")).unwrap_err(), Refusal::PerNetwork);
        let _next_64 = limits.admit(ip("2001:db8:0:1::1")).unwrap();
        drop(held);
        drop(v6);
        let _again = limits.admit(ip("198.51.100.200")).unwrap();
    }

    #[test]
    fn the_deadline_waits_for_requests_in_flight() {
        let activity = RequestActivity::new();
        let idle = Duration::from_secs(5);
        let first = activity.deadline(idle).unwrap();
        assert!(first <= Instant::now() + idle);
        let request = activity.enter();
        let second = activity.enter();
        assert_eq!(activity.deadline(idle), None, "no deadline while a request is inside");
        drop(request);
        assert_eq!(activity.deadline(idle), None);
        std::thread::sleep(Duration::from_millis(5));
        drop(second);
        let after = activity.deadline(idle).unwrap();
        assert!(after > first, "the deadline restarts when the last request leaves");
    }

    /// A request counts from `call` until its response body has been taken
    /// to the end (or dropped, or the service failed); the body's last byte
    /// comes as a frame of its own.
    #[test]
    fn a_tracked_service_counts_its_requests_until_the_body_ends() {
        use http_body_util::{BodyExt as _, Full};
        use hyper::service::Service as _;
        #[derive(Clone)]
        struct Echo;
        impl hyper::service::Service<&'static str> for Echo {
            type Response = http::Response<Full<Bytes>>;
            type Error = &'static str;
            type Future = std::future::Ready<Result<Self::Response, Self::Error>>;
            fn call(&self, req: &'static str) -> Self::Future {
                std::future::ready(if req == "fail" { Err(req) } else { Ok(http::Response::new(Full::from(req))) })
            }
        }
        let activity = RequestActivity::new();
        let service = TrackedService::new(Echo, activity.clone());
        let idle = Duration::from_secs(1);
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);

        let mut call = service.call("answer");
        assert_eq!(activity.deadline(idle), None, "a request is inside");
        let Poll::Ready(Ok(response)) = Pin::new(&mut call).poll(&mut cx) else { panic!("not ready") };
        drop(call);
        assert_eq!(activity.deadline(idle), None, "still counted while the body is unsent");
        let mut body = response.into_body();
        assert!(!body.is_end_stream());
        assert_eq!(body.size_hint().exact(), Some(6));
        let mut frames = Vec::new();
        while let Poll::Ready(Some(frame)) = Pin::new(&mut body).poll_frame(&mut cx) {
            assert_eq!(activity.deadline(idle), None, "counted until the end is polled");
            frames.push(frame.unwrap().into_data().unwrap());
        }
        assert_eq!(frames, ["answe", "r"], "the last byte on its own");
        assert!(body.is_end_stream());
        assert!(activity.deadline(idle).is_some(), "the end of the body ends the request");

        // A body dropped before its end, an empty body, a failed call: not counted after.
        for req in ["dropped", "", "fail"] {
            let mut call = service.call(req);
            let polled = Pin::new(&mut call).poll(&mut cx);
            drop(call);
            match polled {
                Poll::Ready(Ok(response)) => {
                    assert_eq!(activity.deadline(idle), None, "{req:?}");
                    assert_eq!(response.body().is_end_stream(), req.is_empty(), "{req:?}");
                    drop(response);
                }
                other => assert!(matches!(other, Poll::Ready(Err("fail"))), "{req:?}"),
            }
            assert!(activity.deadline(idle).is_some(), "{req:?}");
        }
        let collected = futures_lite::future::block_on(service.call("whole")).unwrap().into_body().collect();
        assert_eq!(futures_lite::future::block_on(collected).unwrap().to_bytes(), "whole");
    }

    #[test]
    fn counters_count_by_reason() {
        let c = ConnectionCounters::default();
        c.refused(Refusal::PerClient);
        c.refused(Refusal::PerClient);
        c.closed(Closed::WriteTimeout);
        assert_eq!(c.refused_total(Refusal::PerClient), 2);
        assert_eq!(c.refused_total(Refusal::Global), 0);
        assert_eq!(c.closed_total(Closed::WriteTimeout), 1);
        assert_eq!(Refusal::ALL.map(Refusal::label), ["global", "per_client", "per_network"]);
    }
}
