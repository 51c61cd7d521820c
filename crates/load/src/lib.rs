//! The load generator behind `sentry-load`: N simulated sidecars calling `SignCertificate` and
//! checking every answer, with latency percentiles and errors by gRPC status.
//!
//! What is timed: for each request, from the moment the sidecar starts dialing (new connection
//! per request, as daprd does) or starts the call (`--reuse`) until the response has arrived.
//! Key and CSR generation happen *before* the timed run (a real sidecar generates its key before
//! dialing) and are reported separately; checking the answer happens after the timed section but
//! inside the run, so it does limit the request rate of a closed-loop sidecar.
//!
//! This module owns only the client side; it never touches the server's internals.

mod check;
mod options;
mod progress;
mod report;
mod sidecar;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

pub use check::{AnswerChecker, CachingServerVerifier};
pub use options::{CsrKey, Options};
pub use report::{Latency, Report, Tally};

use sentry_client::ClientError;

/// Why a load run could not start.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The anchors file could not be read.
    #[error("reading trust anchors {path}: {source}")]
    Anchors {
        /// The `--anchors` path as given.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The address does not resolve.
    #[error("address {0:?}: {1}")]
    Address(String, String),
    /// The client could not be set up.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The options contradict each other.
    #[error("{0}")]
    Options(String),
}

/// Counters shared by every sidecar while a run is going (read by the progress line).
#[derive(Debug, Default)]
pub struct Live {
    /// Answers received and checked.
    pub ok: AtomicU64,
    /// Failed requests.
    pub errors: AtomicU64,
    /// Requests started (the `--requests` ticket counter).
    pub started: AtomicU64,
    /// Set when the run must end.
    pub stop: AtomicBool,
}

/// Runs the load described by `opts` to completion and returns the report.
pub async fn run(opts: &Options) -> Result<Report, LoadError> {
    opts.validate().map_err(LoadError::Options)?;
    let addr = resolve(&opts.addr).await?;
    let anchors = std::fs::read(&opts.anchors).map_err(|source| LoadError::Anchors {
        path: opts.anchors.display().to_string(),
        source,
    })?;
    let tls = Arc::new(check::client_tls(&anchors, &opts.server_id)?);
    let checker = Arc::new(AnswerChecker::new(&anchors).map_err(ClientError::Anchors)?);

    let gen_start = Instant::now();
    let pools = sidecar::csr_pools(opts)?;
    let csr_count: usize = pools.iter().map(Vec::len).sum();
    let csr_gen = gen_start.elapsed();

    let live = Arc::new(Live::default());
    let mut sidecars = Vec::with_capacity(opts.concurrency);
    for (index, pool) in pools.into_iter().enumerate() {
        sidecars.push(sidecar::Sidecar::new(
            index,
            opts,
            addr,
            tls.clone(),
            checker.clone(),
            live.clone(),
            pool,
        ));
    }
    if opts.reuse {
        for s in &mut sidecars {
            s.connect_ahead().await;
        }
    }

    let cpu_before = report::process_cpu();
    let start = Instant::now();
    let deadline = opts.duration.map(|d| start + d);
    let progress = progress::spawn(live.clone(), start);
    let mut tasks = Vec::with_capacity(sidecars.len());
    for s in sidecars {
        tasks.push(tokio::spawn(s.run(start, deadline)));
    }
    let mut tally = Tally::default();
    for t in tasks {
        if let Ok(part) = t.await {
            tally.merge(part);
        }
    }
    let elapsed = start.elapsed();
    let client_cpu = report::process_cpu()
        .zip(cpu_before)
        .map(|(after, before)| after.saturating_sub(before));
    live.stop.store(true, Ordering::Relaxed);
    if let Some(p) = progress {
        let _ = p.await;
    }
    Ok(Report::new(
        opts, addr, tally, elapsed, csr_count, csr_gen, client_cpu,
    ))
}

async fn resolve(addr: &str) -> Result<SocketAddr, LoadError> {
    let mut addrs = tokio::net::lookup_host(addr)
        .await
        .map_err(|e| LoadError::Address(addr.to_owned(), e.to_string()))?;
    addrs
        .next()
        .ok_or_else(|| LoadError::Address(addr.to_owned(), "no address".into()))
}
