//! The run summary: throughput, latency percentiles, errors by kind, server
//! CPU per enrollment; printed as text and as JSON.

use std::collections::BTreeMap;

use serde::Serialize;

/// Latency percentiles, milliseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Slowest.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

impl Latency {
    /// Percentiles (nearest rank) of `samples_us`, which it sorts.
    pub fn of(samples_us: &mut [u32]) -> Self {
        if samples_us.is_empty() {
            return Self::default();
        }
        samples_us.sort_unstable();
        let n = samples_us.len();
        let at = |q: f64| {
            let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
            f64::from(samples_us[rank - 1]) / 1000.0
        };
        let sum: u64 = samples_us.iter().map(|&v| u64::from(v)).sum();
        Self { p50: at(0.50), p90: at(0.90), p99: at(0.99), max: at(1.0), mean: sum as f64 / n as f64 / 1000.0 }
    }
}

/// The server process, when `--server-pid` was given.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ServerUse {
    /// The process id.
    pub pid: u32,
    /// CPU time spent during the run, milliseconds (10 ms resolution).
    pub cpu_ms: u64,
    /// CPU milliseconds per successful request.
    pub cpu_ms_per_ok: f64,
    /// Resident set size at the end, MiB.
    pub rss_mib: f64,
}

/// TLS of an `https://` run.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct TlsUse {
    /// Whether the client offered to resume sessions.
    pub resumption: bool,
    /// Connections whose handshake resumed a session.
    pub resumed: u64,
}

/// One run's summary (the JSON printed at the end).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Summary {
    /// Target URL.
    pub url: String,
    /// `pkcsreq`, `getcacaps`, `getcacert` or `device` (GetCACaps,
    /// GetCACert, PKIOperation).
    pub operation: String,
    /// `POST` or `GET`.
    pub method: String,
    /// Content cipher and digest of the requests.
    pub cipher: String,
    /// SignerInfo digest.
    pub digest: String,
    /// `static` or `intune`.
    pub challenge: String,
    /// `closed` (concurrency) or `open` (rate).
    pub mode: String,
    /// Workers / connections.
    pub concurrency: usize,
    /// Open-loop target rate.
    pub target_rate: Option<f64>,
    /// Requests sent.
    pub sent: usize,
    /// Requests answered and accepted (after reply verification).
    pub ok: u64,
    /// Errors by kind.
    pub errors: BTreeMap<String, u64>,
    /// Wall time, seconds.
    pub seconds: f64,
    /// `ok / seconds`.
    pub throughput: f64,
    /// Latency of accepted requests.
    pub latency_ms: Latency,
    /// When replies were checked (`after`, `inline`, `off`).
    pub verify: String,
    /// Connections opened.
    pub connections: u64,
    /// `keep-alive`, `per-device` or `per-request`.
    pub connection_use: String,
    /// TLS (`None`: plain HTTP).
    pub tls: Option<TlsUse>,
    /// Server process use.
    pub server: Option<ServerUse>,
}

impl Summary {
    /// A short human-readable report.
    pub fn text(&self) -> String {
        let mut s = format!(
            "{} {} {} ({}, {}, {} challenge) {} c={}{}\n  sent {} ok {} in {:.2}s: {:.0}/s\n  latency ms: p50 {:.2} p90 {:.2} p99 {:.2} max {:.2} mean {:.2}\n",
            self.url,
            self.operation,
            self.method,
            self.cipher,
            self.digest,
            self.challenge,
            self.mode,
            self.concurrency,
            self.target_rate.map(|r| format!(" rate={r}")).unwrap_or_default(),
            self.sent,
            self.ok,
            self.seconds,
            self.throughput,
            self.latency_ms.p50,
            self.latency_ms.p90,
            self.latency_ms.p99,
            self.latency_ms.max,
            self.latency_ms.mean,
        );
        if !self.errors.is_empty() {
            let list: Vec<String> = self.errors.iter().map(|(k, v)| format!("{k}={v}")).collect();
            s.push_str(&format!("  errors: {}\n", list.join(" ")));
        }
        s.push_str(&format!("  {} connections ({})", self.connections, self.connection_use));
        match &self.tls {
            Some(t) if t.resumption => s.push_str(&format!(", TLS: {} resumed\n", t.resumed)),
            Some(_) => s.push_str(", TLS without resumption\n"),
            None => s.push_str(", plain HTTP\n"),
        }
        if let Some(srv) = &self.server {
            s.push_str(&format!(
                "  server pid {}: {} ms CPU, {:.3} ms per ok request, RSS {:.1} MiB\n",
                srv.pid, srv.cpu_ms, srv.cpu_ms_per_ok, srv.rss_mib
            ));
        }
        s
    }
}

/// Compare mode: two targets, several alternating rounds each.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Comparison {
    /// Rounds of A.
    pub a: Vec<Summary>,
    /// Rounds of B.
    pub b: Vec<Summary>,
    /// Best A throughput / best B throughput.
    pub throughput_ratio: f64,
    /// Best (lowest) A p99 / best B p99.
    pub p99_ratio: f64,
    /// A CPU per request / B CPU per request (best rounds), when both pids were given.
    pub cpu_ratio: Option<f64>,
}

impl Comparison {
    /// Builds the ratios from the rounds.
    pub fn new(a: Vec<Summary>, b: Vec<Summary>) -> Self {
        let best = |v: &[Summary]| v.iter().map(|s| s.throughput).fold(0.0, f64::max);
        let best_p99 = |v: &[Summary]| v.iter().map(|s| s.latency_ms.p99).fold(f64::INFINITY, f64::min);
        let best_cpu = |v: &[Summary]| {
            v.iter()
                .filter_map(|s| s.server.as_ref().map(|x| x.cpu_ms_per_ok))
                .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.min(x))))
        };
        let ratio = |x: f64, y: f64| if y > 0.0 { x / y } else { f64::NAN };
        Self {
            throughput_ratio: ratio(best(&a), best(&b)),
            p99_ratio: ratio(best_p99(&a), best_p99(&b)),
            cpu_ratio: match (best_cpu(&a), best_cpu(&b)) {
                (Some(x), Some(y)) => Some(ratio(x, y)),
                _ => None,
            },
            a,
            b,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut v: Vec<u32> = (1..=100).map(|i| i * 1000).collect();
        v.reverse();
        let l = Latency::of(&mut v);
        assert_eq!((l.p50, l.p90, l.p99, l.max), (50.0, 90.0, 99.0, 100.0));
        assert!((l.mean - 50.5).abs() < 1e-9);
        assert_eq!(Latency::of(&mut []), Latency::default());
    }

    #[test]
    fn comparison_ratios_use_the_best_rounds() {
        let s = |t: f64, p99: f64| Summary {
            throughput: t,
            latency_ms: Latency { p99, ..Latency::default() },
            ..Summary::default()
        };
        let c = Comparison::new(vec![s(100.0, 10.0), s(200.0, 8.0)], vec![s(50.0, 4.0), s(100.0, 5.0)]);
        assert!((c.throughput_ratio - 2.0).abs() < 1e-9);
        assert!((c.p99_ratio - 2.0).abs() < 1e-9);
        assert_eq!(c.cpu_ratio, None);
    }
}
