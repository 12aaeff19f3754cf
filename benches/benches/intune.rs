//! Intune challenge validation benchmarks (figures in docs/benchmarks-intune.md).
//!
//! 1. `intune/validate/{es256,rs256}`: the full gates 2-9 (JWS parse, signature
//!    against the pool, claims, time, audience, CSR binding, replay insert,
//!    rate-limit record) beside `intune/raw_verify/{es256,rs256}`: the bare
//!    aws-lc-rs signature verification of the same challenges. Target: full
//!    validation >= 0.8x the raw verify rate.
//! 2. `intune/replay_rate/{lockfree,mutex_hashmap}/{1,2}t`: one replay
//!    check-and-insert plus one rate-limit check-and-record per op, distinct
//!    nonce and device each, on 1 and 2 threads; the baseline is the obvious
//!    `Mutex<HashMap>` pair.
//!
//! Each measured chunk uses fresh structures (built outside the timing) so the
//! replay cache never fills and every op is a real insert.
#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED, RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use scep_engine::crypto::SystemRandom;
use scep_engine::intune::{
    CsrIdentity, IntuneSettings, IntuneValidator, RATE_WINDOW_SECS, RateLimiter, ReplayCache, SharedPool,
    TrustAnchorPool,
};
use scep_engine::time::UnixTime;
use scep_tests::intune_connector::{Claims, Connector, JwsAlg};

const AUD: &str = "https://scep.example.test/scep/corp";
const CN: &str = "dev1.example.com";
/// Challenges minted per algorithm (each validates once per validator).
const CHALLENGES: usize = 2_000;
/// Ops per chunk in the replay/rate benchmark.
const OPS: usize = 100_000;

struct AlgSet {
    name: &'static str,
    pool: TrustAnchorPool,
    challenges: Vec<String>,
    /// (signing input, signature) of each challenge.
    raw: Vec<(Vec<u8>, Vec<u8>)>,
    /// The anchor's public key (PKCS#1 RSAPublicKey or SEC1 point).
    key: Vec<u8>,
}

fn alg_set(alg: JwsAlg, now: UnixTime) -> AlgSet {
    let connector = Connector::generate(alg, "bench-connector").unwrap();
    let pool = TrustAnchorPool::from_ders(vec![connector.certificate_der().to_vec()], now).unwrap();
    let challenges: Vec<String> = (0..CHALLENGES)
        .map(|i| {
            let mut c =
                Claims::new("bench-connector-installation", &format!("device-{i}"), CN).audience(AUD).dns(&[CN]);
            c.iat = Some(now.secs() - 5);
            c.exp = Some(now.secs() + 3000);
            connector.mint(&c)
        })
        .collect();
    let raw = challenges
        .iter()
        .map(|c| {
            let (input, sig) = c.rsplit_once('.').unwrap();
            (input.as_bytes().to_vec(), URL_SAFE_NO_PAD.decode(sig).unwrap())
        })
        .collect();
    let key = pool.anchors()[0].public_key().to_vec();
    AlgSet { name: alg.name(), pool, challenges, raw, key }
}

fn validator(pool: &TrustAnchorPool) -> IntuneValidator {
    let settings = IntuneSettings {
        audience: Some(AUD.into()),
        replay_capacity: CHALLENGES * 2,
        rate_limit_devices: CHALLENGES * 2,
        ..IntuneSettings::default()
    };
    IntuneValidator::new("corp", SharedPool::new(pool.clone()), settings, &SystemRandom).unwrap()
}

fn bench_validation(c: &mut Criterion) {
    let now = UnixTime::now();
    let names = vec![CN.to_string()];
    let csr = CsrIdentity { common_names: &names, dns: &names, emails: &[], upns: &[] };
    let mut g = c.benchmark_group("intune");
    g.throughput(Throughput::Elements(1));
    for set in [alg_set(JwsAlg::Es256, now), alg_set(JwsAlg::Rs256, now)] {
        let id = set.name.to_ascii_lowercase();
        g.bench_function(BenchmarkId::new("validate", &id), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut left = iters as usize;
                while left > 0 {
                    let v = validator(&set.pool);
                    let n = left.min(CHALLENGES);
                    let start = Instant::now();
                    let mut ok = 0usize;
                    for ch in &set.challenges[..n] {
                        ok += usize::from(black_box(v.validate(black_box(ch), &csr, now)).is_ok());
                    }
                    total += start.elapsed();
                    assert_eq!(ok, n, "every challenge must pass every gate");
                    left -= n;
                }
                total
            });
        });
        g.bench_function(BenchmarkId::new("raw_verify", &id), |b| {
            let key = match set.name {
                "ES256" => UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, set.key.as_slice()),
                _ => UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, set.key.as_slice()),
            };
            let mut i = 0;
            b.iter(|| {
                let (input, sig) = &set.raw[i % CHALLENGES];
                i += 1;
                key.verify(black_box(input), black_box(sig)).unwrap();
            });
        });
    }
    g.finish();
}

/// The `Mutex<HashMap>` baseline: a nonce set with expiry and a per-device log.
struct MutexBaseline {
    replay: Mutex<HashMap<String, i64>>,
    rate: Mutex<HashMap<(String, String), Vec<i64>>>,
    limit: usize,
}

impl MutexBaseline {
    fn new() -> Self {
        Self {
            replay: Mutex::new(HashMap::with_capacity(OPS)),
            rate: Mutex::new(HashMap::with_capacity(OPS)),
            limit: 3,
        }
    }

    fn op(&self, nonce: &str, sub: &str, iss: &str, now: i64) -> bool {
        {
            let mut r = self.replay.lock().unwrap();
            match r.get(nonce) {
                Some(&exp) if exp > now => return false,
                _ => {
                    r.insert(nonce.to_string(), now + 3600);
                }
            }
        }
        let mut m = self.rate.lock().unwrap();
        let log = m.entry((sub.to_string(), iss.to_string())).or_default();
        log.retain(|&t| t > now - RATE_WINDOW_SECS);
        if log.len() >= self.limit {
            return false;
        }
        log.push(now);
        true
    }
}

struct LockFree {
    replay: ReplayCache,
    rate: RateLimiter,
}

impl LockFree {
    fn new() -> Self {
        Self {
            replay: ReplayCache::new(OPS * 2, &SystemRandom),
            rate: RateLimiter::new(3, RATE_WINDOW_SECS, OPS * 2, &SystemRandom),
        }
    }

    fn op(&self, nonce: &str, sub: &str, iss: &str, now: i64) -> bool {
        let t = UnixTime::from_secs(now);
        self.replay.check_and_insert("corp", nonce, t, t.plus(3600)).is_ok()
            && self.rate.check_and_record("corp", sub, iss, t).is_ok()
    }
}

/// Runs `iters` ops on `threads` threads over fresh `make()` structures per
/// chunk of [`OPS`]; returns the wall time of the op loops.
fn run_threads<S: Sync>(
    iters: u64,
    threads: usize,
    keys: &[(String, String)],
    make: impl Fn() -> S,
    op: impl Fn(&S, &str, &str, i64) -> bool + Sync,
) -> Duration {
    let now = UnixTime::now().secs();
    let mut total = Duration::ZERO;
    let mut left = iters as usize;
    while left > 0 {
        let n = left.min(OPS);
        let shared = make();
        let barrier = Barrier::new(threads + 1);
        let elapsed = std::thread::scope(|s| {
            for t in 0..threads {
                let (shared, barrier, op) = (&shared, &barrier, &op);
                s.spawn(move || {
                    barrier.wait();
                    let mut ok = 0usize;
                    for (nonce, sub) in keys[..n].iter().skip(t).step_by(threads) {
                        ok += usize::from(op(shared, nonce, sub, now));
                    }
                    assert_eq!(ok, (n + threads - 1 - t) / threads, "every op is admitted");
                });
            }
            barrier.wait();
            Instant::now()
        })
        .elapsed();
        total += elapsed;
        left -= n;
    }
    total
}

fn bench_replay_rate(c: &mut Criterion) {
    let keys: Vec<(String, String)> =
        (0..OPS).map(|i| (format!("nonce-{i:08}-abcdef"), format!("device-{i}"))).collect();
    let mut g = c.benchmark_group("intune/replay_rate");
    g.throughput(Throughput::Elements(1));
    for threads in [1usize, 2] {
        g.bench_function(BenchmarkId::new("lockfree", format!("{threads}t")), |b| {
            b.iter_custom(|iters| {
                run_threads(iters, threads, &keys, LockFree::new, |s, n, d, now| s.op(n, d, "conn", now))
            });
        });
        g.bench_function(BenchmarkId::new("mutex_hashmap", format!("{threads}t")), |b| {
            b.iter_custom(|iters| {
                run_threads(iters, threads, &keys, MutexBaseline::new, |s, n, d, now| s.op(n, d, "conn", now))
            });
        });
    }
    g.finish();
}

criterion_group!(benches, bench_validation, bench_replay_rate);
criterion_main!(benches);
