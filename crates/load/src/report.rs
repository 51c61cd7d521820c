//! Results of a load run: per-sidecar tallies merged into one report, printed as a table or JSON.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;

use super::Options;

/// What one sidecar saw: latencies of good answers and errors by class.
#[derive(Debug, Default)]
pub struct Tally {
    latencies_us: Vec<u32>,
    errors: BTreeMap<String, u64>,
    examples: BTreeMap<String, String>,
}

impl Tally {
    /// Records a good answer.
    pub fn ok(&mut self, latency: Duration) {
        let us = u32::try_from(latency.as_micros()).unwrap_or(u32::MAX);
        self.latencies_us.push(us);
    }

    /// Records a failure of class `kind` (a gRPC code name, `connect`, `timeout` or `verify`).
    pub fn error(&mut self, kind: String, detail: String) {
        self.examples.entry(kind.clone()).or_insert(detail);
        *self.errors.entry(kind).or_default() += 1;
    }

    /// Adds `other` into this tally.
    pub fn merge(&mut self, other: Tally) {
        self.latencies_us.extend(other.latencies_us);
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
        for (k, v) in other.examples {
            self.examples.entry(k).or_insert(v);
        }
    }
}

/// Latency percentiles of good answers, in milliseconds.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct Latency {
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Slowest.
    pub max_ms: f64,
    /// Mean.
    pub mean_ms: f64,
}

impl Latency {
    fn from_samples(samples: &mut [u32]) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        samples.sort_unstable();
        let at = |q: f64| {
            let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
            f64::from(samples[rank - 1]) / 1000.0
        };
        let sum: u64 = samples.iter().map(|&v| u64::from(v)).sum();
        Self {
            p50_ms: at(0.50),
            p90_ms: at(0.90),
            p99_ms: at(0.99),
            max_ms: at(1.0),
            mean_ms: sum as f64 / samples.len() as f64 / 1000.0,
        }
    }
}

/// The outcome of a run.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Server address.
    pub addr: String,
    /// CSR key type.
    pub key_type: String,
    /// Simulated sidecars.
    pub concurrency: usize,
    /// `new` (a connection per request) or `reused`.
    pub connections: &'static str,
    /// Open-loop target rate, if any.
    pub target_rate: Option<f64>,
    /// Wall time of the timed run, seconds.
    pub elapsed_s: f64,
    /// Good, checked answers.
    pub ok: u64,
    /// Failed requests.
    pub errors: u64,
    /// Failures by class: gRPC code name, `connect`, `timeout` or `verify`.
    pub errors_by_kind: BTreeMap<String, u64>,
    /// One example message per failure class.
    pub error_examples: BTreeMap<String, String>,
    /// Good answers per second.
    pub signs_per_s: f64,
    /// Latency of good answers.
    pub latency: Latency,
    /// Keys + CSRs generated before the run.
    pub csrs_generated: usize,
    /// Their generation rate on this machine, per second (not part of the timed run).
    pub csr_generation_per_s: f64,
    /// The load generator's own CPU use during the run, in percent of one core (≥ ~95 means the
    /// generator, not the server, may be the limit).
    pub client_cpu_percent: Option<f64>,
}

impl Report {
    /// Builds the report of a finished run.
    pub fn new(
        opts: &Options,
        addr: SocketAddr,
        mut tally: Tally,
        elapsed: Duration,
        csrs_generated: usize,
        csr_generation: Duration,
        client_cpu: Option<Duration>,
    ) -> Self {
        let ok = tally.latencies_us.len() as u64;
        let errors = tally.errors.values().sum();
        let secs = elapsed.as_secs_f64().max(1e-9);
        Self {
            addr: addr.to_string(),
            key_type: format!("{:?}", opts.key_type).to_lowercase(),
            concurrency: opts.concurrency,
            connections: if opts.reuse { "reused" } else { "new" },
            target_rate: opts.rate,
            elapsed_s: secs,
            ok,
            errors,
            errors_by_kind: tally.errors,
            error_examples: tally.examples,
            signs_per_s: ok as f64 / secs,
            latency: Latency::from_samples(&mut tally.latencies_us),
            csrs_generated,
            csr_generation_per_s: csrs_generated as f64 / csr_generation.as_secs_f64().max(1e-9),
            client_cpu_percent: client_cpu.map(|c| 100.0 * c.as_secs_f64() / secs),
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rate = self
            .target_rate
            .map(|r| format!("  open loop at {r:.0}/s"))
            .unwrap_or_default();
        writeln!(
            f,
            "sentry-load → {}  csr={}  sidecars={}  connections={}{rate}",
            self.addr, self.key_type, self.concurrency, self.connections
        )?;
        writeln!(
            f,
            "{:>10} {:>8} {:>9} {:>10} {:>9} {:>9} {:>9} {:>9}",
            "elapsed", "ok", "errors", "signs/s", "p50", "p90", "p99", "max"
        )?;
        let l = &self.latency;
        writeln!(
            f,
            "{:>9.2}s {:>8} {:>9} {:>10.0} {:>7.2}ms {:>7.2}ms {:>7.2}ms {:>7.2}ms",
            self.elapsed_s,
            self.ok,
            self.errors,
            self.signs_per_s,
            l.p50_ms,
            l.p90_ms,
            l.p99_ms,
            l.max_ms
        )?;
        for (kind, n) in &self.errors_by_kind {
            let example = self
                .error_examples
                .get(kind)
                .map(String::as_str)
                .unwrap_or("");
            writeln!(f, "  error {kind}: {n}  (e.g. {example})")?;
        }
        write!(
            f,
            "keys+CSRs: {} generated before the run at {:.0}/s (not timed)",
            self.csrs_generated, self.csr_generation_per_s
        )?;
        if let Some(cpu) = self.client_cpu_percent {
            write!(f, "; load generator CPU {cpu:.0}% of a core")?;
        }
        Ok(())
    }
}

/// CPU time (user + system) this process has used so far, from `/proc/self/stat`.
pub(crate) fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')')?.1;
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    // Linux reports these in USER_HZ, which is 100 on every supported architecture.
    Some(Duration::from_millis((utime + stime) * 10))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let mut v: Vec<u32> = (1..=100).map(|i| i * 1000).collect();
        let l = Latency::from_samples(&mut v);
        assert_eq!(l.p50_ms, 50.0);
        assert_eq!(l.p90_ms, 90.0);
        assert_eq!(l.p99_ms, 99.0);
        assert_eq!(l.max_ms, 100.0);
        assert_eq!(l.mean_ms, 50.5);
        assert_eq!(Latency::from_samples(&mut []).max_ms, 0.0);
    }

    #[test]
    fn tallies_merge() {
        let mut a = Tally::default();
        a.ok(Duration::from_millis(1));
        a.error("Unavailable".into(), "x".into());
        let mut b = Tally::default();
        b.error("Unavailable".into(), "y".into());
        b.error("verify".into(), "z".into());
        a.merge(b);
        assert_eq!(a.latencies_us, [1000]);
        assert_eq!(a.errors["Unavailable"], 2);
        assert_eq!(a.examples["Unavailable"], "x");
        assert_eq!(a.errors["verify"], 1);
    }

    #[test]
    fn own_cpu_time_is_readable() {
        assert!(process_cpu().is_some());
    }
}
