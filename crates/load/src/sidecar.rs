//! One simulated sidecar: takes a pre-generated CSR, dials Sentry (or reuses its connection),
//! calls `SignCertificate`, times it and checks the answer; again until the run ends.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tonic::transport::Channel;

use super::check::AnswerChecker;
use super::report::Tally;
use super::{Live, Options};
use sentry_client::ClientError;
use sentry_proto::ca_client::CaClient;
use sentry_proto::SignCertificateRequest;

/// Generates every sidecar's CSRs before the run: `--csr-pool` distinct keys in all (at most one
/// per request), dealt round-robin so each sidecar has at least one.
pub(crate) fn csr_pools(opts: &Options) -> Result<Vec<Vec<Vec<u8>>>, ClientError> {
    let wanted = opts
        .request_limit()
        .map_or(opts.csr_pool as u64, |n| n.min(opts.csr_pool as u64));
    let total = (wanted as usize).max(opts.concurrency);
    let mut pools = vec![Vec::new(); opts.concurrency];
    for i in 0..total {
        let (_key, csr) = sentry_client::new_csr(opts.key_type.key_type())?;
        pools[i % opts.concurrency].push(csr.into_bytes());
    }
    Ok(pools)
}

/// A simulated sidecar and everything it needs for its loop.
pub(crate) struct Sidecar {
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    checker: Arc<AnswerChecker>,
    live: Arc<Live>,
    csrs: Vec<Vec<u8>>,
    app_id: String,
    expected_id: String,
    namespace: String,
    trust_domain: String,
    reuse: bool,
    timeout: Duration,
    limit: Option<u64>,
    /// Open-loop pacing: this sidecar's interval between request starts, and its first start.
    pace: Option<(Duration, Duration)>,
    conn: Option<CaClient<Channel>>,
}

impl Sidecar {
    /// Sidecar number `index` of the run described by `opts`, with its CSRs.
    pub(crate) fn new(
        index: usize,
        opts: &Options,
        addr: SocketAddr,
        tls: Arc<rustls::ClientConfig>,
        checker: Arc<AnswerChecker>,
        live: Arc<Live>,
        csrs: Vec<Vec<u8>>,
    ) -> Self {
        let app_id = format!("load-{index}");
        let pace = opts.rate.map(|rate| {
            let interval = Duration::from_secs_f64(opts.concurrency as f64 / rate);
            // Spread the sidecars' first starts evenly over one interval.
            let offset = interval.mul_f64(index as f64 / opts.concurrency as f64);
            (interval, offset)
        });
        Self {
            addr,
            tls,
            checker,
            live,
            csrs,
            expected_id: opts.expected_id(&app_id),
            app_id,
            namespace: opts.namespace.clone(),
            trust_domain: opts.trust_domain.clone(),
            reuse: opts.reuse,
            timeout: opts.timeout,
            limit: opts.request_limit(),
            pace,
            conn: None,
        }
    }

    /// With `--reuse`, dials before the timed run starts (a failure is retried in the run).
    pub(crate) async fn connect_ahead(&mut self) {
        self.conn = sentry_client::connect(self.addr, self.tls.clone())
            .await
            .ok();
    }

    fn take_ticket(&self, deadline: Option<Instant>) -> bool {
        if self.live.stop.load(Ordering::Relaxed) {
            return false;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return false;
        }
        match self.limit {
            Some(n) => self.live.started.fetch_add(1, Ordering::Relaxed) < n,
            None => {
                self.live.started.fetch_add(1, Ordering::Relaxed);
                true
            }
        }
    }

    /// Runs requests until the count or the deadline is reached; returns this sidecar's tally.
    pub(crate) async fn run(mut self, start: Instant, deadline: Option<Instant>) -> Tally {
        let mut tally = Tally::default();
        let mut next = self.pace.map(|(_, offset)| start + offset);
        let mut i = 0usize;
        while self.take_ticket(deadline) {
            let began = match next {
                Some(at) => {
                    if deadline.is_some_and(|d| at >= d) {
                        break;
                    }
                    tokio::time::sleep_until(at.into()).await;
                    at
                }
                None => Instant::now(),
            };
            if let (Some(at), Some((interval, _))) = (next.as_mut(), self.pace) {
                *at += interval;
            }
            let csr = self.csrs[i % self.csrs.len()].clone();
            i += 1;
            match self.one(csr, began).await {
                Ok(latency) => {
                    tally.ok(latency);
                    self.live.ok.fetch_add(1, Ordering::Relaxed);
                }
                Err((kind, detail)) => {
                    tally.error(kind, detail);
                    self.live.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        tally
    }

    /// One request; returns its latency, or the error class and what went wrong.
    async fn one(&mut self, csr: Vec<u8>, began: Instant) -> Result<Duration, (String, String)> {
        let req = SignCertificateRequest {
            id: self.app_id.clone(),
            namespace: self.namespace.clone(),
            trust_domain: self.trust_domain.clone(),
            certificate_signing_request: csr,
            ..Default::default()
        };
        let call = async {
            let mut conn = match self.conn.take() {
                Some(c) => c,
                None => sentry_client::connect(self.addr, self.tls.clone())
                    .await
                    .map_err(|e| ("connect".to_owned(), e.to_string()))?,
            };
            let resp = conn.sign_certificate(req).await;
            let broken = matches!(&resp, Err(s) if s.code() == tonic::Code::Unavailable);
            if self.reuse && !broken {
                self.conn = Some(conn);
            }
            resp.map_err(|s| (format!("{:?}", s.code()), s.message().to_owned()))
        };
        let resp = tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| ("timeout".to_owned(), String::new()))??;
        let latency = began.elapsed();
        self.checker
            .check(resp.get_ref(), &self.expected_id)
            .map_err(|e| ("verify".to_owned(), e))?;
        Ok(latency)
    }
}
