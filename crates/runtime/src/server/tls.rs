//! TLS for the gRPC listener: Sentry's own serving certificate (its SVID
//! `spiffe://<td>/ns/<ns>/dapr-sentry`, issued in-process by its own CA and re-issued at half its
//! life and whenever the CA publishes a new signer, without touching the listener), the rustls server configuration (TLS ≥ 1.2, ALPN h2, no
//! client certificate), and the accept loop that hands finished handshakes to tonic.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use time::OffsetDateTime;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tracing::{error, info, warn};

use super::conn_limit::Limited;
use super::stream_budget::StreamBudget;
use super::write_batch::Batched;
use crate::authority::Ca;
use crate::telemetry::handshakes::{self, Kind};
use crate::telemetry::Metrics;
use sentry_core::ca::{IssueError, Signer};
use sentry_core::spiffe::SpiffeId;

/// Why the serving certificate could not be issued.
#[derive(Debug, thiserror::Error)]
pub enum ServingCertError {
    /// Key generation failed.
    #[error("generating the serving key: {0}")]
    Key(String),
    /// The CA refused to sign.
    #[error("signing the serving certificate: {0}")]
    Sign(#[from] IssueError),
}

/// Sentry's current serving certificate, swapped atomically on renewal.
#[derive(Debug)]
pub struct ServingCert {
    id: SpiffeId,
    current: ArcSwap<CertifiedKey>,
}

impl ResolvesServerCert for ServingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

impl ServingCert {
    /// Issues the first serving certificate for `id`; returns it and when to renew it.
    pub fn issue(ca: &Ca, id: SpiffeId) -> Result<(Arc<Self>, OffsetDateTime), ServingCertError> {
        let (key, renew_at) = issue_key(ca, &id)?;
        Ok((
            Arc::new(Self {
                id,
                current: ArcSwap::from_pointee(key),
            }),
            renew_at,
        ))
    }

    /// Re-issues the certificate now; returns when to renew next.
    pub fn renew(&self, ca: &Ca) -> Result<OffsetDateTime, ServingCertError> {
        let (key, renew_at) = issue_key(ca, &self.id)?;
        self.current.store(Arc::new(key));
        Ok(renew_at)
    }

    /// The certificate chain currently presented (leaf first).
    pub fn chain(&self) -> Vec<rustls_pki_types::CertificateDer<'static>> {
        self.current.load().cert.clone()
    }

    /// Keeps the certificate current, forever: re-issues it whenever `ca` publishes a new signer
    /// (a reload, renewal or rotation step) and at half of each certificate's remaining life.
    /// Timer failures are counted and retried with back-off; a failure after a signer change is
    /// counted and logged, and the timer stays as it was. Subscribes to `ca` before returning, so
    /// no change after this call is missed.
    pub fn follow(
        self: Arc<Self>,
        ca: Arc<Ca>,
        metrics: Arc<Metrics>,
        mut renew_at: OffsetDateTime,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut signers = ca.subscribe();
        async move {
            let mut backoff = Duration::from_millis(500);
            loop {
                let wait = (renew_at - OffsetDateTime::now_utc()).max(time::Duration::ZERO);
                tokio::select! {
                    () = signer_changed(&mut signers) => {
                        if let Err(e) = self.renew(&ca) {
                            count_failure(&metrics);
                            error!(error = %e, "Trust bundle changed but the serving certificate could not be re-issued");
                        }
                        continue;
                    }
                    () = tokio::time::sleep(wait.try_into().unwrap_or(Duration::ZERO)) => {}
                }
                match self.renew(&ca) {
                    Ok(next) => {
                        info!(renew_at = %next, "Renewed Sentry's serving certificate");
                        renew_at = next;
                        backoff = Duration::from_millis(500);
                    }
                    Err(e) => {
                        count_failure(&metrics);
                        warn!(error = %e, "Failed to renew Sentry's serving certificate; retrying");
                        renew_at = OffsetDateTime::now_utc() + backoff;
                        backoff = (backoff * 2).min(Duration::from_secs(10));
                    }
                }
            }
        }
    }
}

/// Waits for the next signer the CA publishes. The sender lives in the CA the follower holds, so
/// the channel never closes while anyone waits; if it did, nothing would change again.
async fn signer_changed(signers: &mut watch::Receiver<Arc<Signer>>) {
    if signers.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

fn count_failure(metrics: &Metrics) {
    metrics
        .servercert_issue_failed
        .with_label_values(&["sign"])
        .inc();
}

fn issue_key(ca: &Ca, id: &SpiffeId) -> Result<(CertifiedKey, OffsetDateTime), ServingCertError> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)
        .map_err(|e| ServingCertError::Key(e.to_string()))?;
    let issued_at = OffsetDateTime::now_utc();
    // One signer for the leaf and the chain sent with it, even if a rotation swaps it meanwhile.
    let signer = ca.signer();
    let issued = ca.sign_with(&signer, &key, id, &[])?;
    let mut chain = Vec::with_capacity(1 + signer.bundle().issuer_chain.len());
    chain.push(issued.leaf_der);
    chain.extend(signer.bundle().issuer_chain.iter().cloned());
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let signing_key = rustls::crypto::aws_lc_rs::sign::any_supported_type(&der)
        .map_err(|e| ServingCertError::Key(e.to_string()))?;
    let half_life: time::Duration = (issued.not_after - issued_at) / 2;
    let renew_at = issued_at + half_life.max(time::Duration::seconds(1));
    Ok((CertifiedKey::new(chain, signing_key), renew_at))
}

/// rustls server configuration: TLS 1.2 and 1.3, ALPN h2, no client certificate requested, no
/// session resumption: Sentry's clients (daprd, the control plane) dial with a fresh TLS
/// configuration and never resume, so session tickets and a session cache would be pure cost on
/// every handshake (an extra encrypted flight, a cache insert under a lock).
pub fn server_config(cert: Arc<ServingCert>) -> Result<rustls::ServerConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(cert);
    config.alpn_protocols = vec![b"h2".to_vec()];
    config.send_tls13_tickets = 0;
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    Ok(config)
}

/// Accepts TCP connections while `connections` has a permit (each connection keeps one until it
/// closes), runs each TLS handshake in its own task (bounded by `handshake_timeout`, so silent
/// clients cannot stall others) and sends finished streams on, each ended after `idle_timeout`
/// without traffic and counting its open HTTP/2 streams in `streams`.
pub fn spawn_accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    connections: Arc<Semaphore>,
    handshake_timeout: Duration,
    idle_timeout: Duration,
    streams: Arc<StreamBudget>,
) -> mpsc::Receiver<Result<Limited<Batched<TlsStream<TcpStream>>>, std::io::Error>> {
    let (tx, rx) = mpsc::channel(1024);
    tokio::spawn(async move {
        loop {
            let Ok(permit) = connections.clone().acquire_owned().await else {
                break;
            };
            let (tcp, _peer) = match listener.accept().await {
                Ok(conn) => conn,
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            if tx.is_closed() {
                break;
            }
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            let streams = streams.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let conn = Limited::new(Batched::new(tls), permit, idle_timeout, streams);
                        let _ = tx.send(Ok(conn)).await;
                    }
                    Ok(Err(e)) => handshakes::record(Kind::of(&e)),
                    Err(_) => handshakes::record(Kind::Timeout),
                }
            });
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;
    use sentry_core::bundle::{generate, CaParams, KeyType};
    use sentry_core::ca::Lifetimes;
    use sentry_core::spiffe::TrustDomain;

    fn signer() -> Signer {
        let p = CaParams::new(
            TrustDomain::public(),
            "default",
            KeyType::Ed25519,
            Duration::ZERO,
        );
        Signer::new(generate(&p, OffsetDateTime::now_utc()).unwrap().bundle).unwrap()
    }

    #[tokio::test]
    async fn the_serving_certificate_follows_the_signer_the_ca_publishes() {
        let lifetimes = Lifetimes {
            ttl: Duration::from_secs(3600),
            allowed_clock_skew: Duration::ZERO,
        };
        let ca = Arc::new(Ca::new(signer(), lifetimes));
        let id = SpiffeId::new(TrustDomain::public(), "default", "dapr-sentry").unwrap();
        let (serving, renew_at) = ServingCert::issue(&ca, id).unwrap();
        let first = serving.chain();
        // Renewal by the timer is half an hour away: only the published signer can re-issue.
        let metrics = Arc::new(Metrics::new().unwrap());
        let task = tokio::spawn(serving.clone().follow(ca.clone(), metrics, renew_at));
        let next = signer();
        let next_issuer = next.bundle().issuer_chain[0].clone();
        ca.replace(next);
        let followed = async {
            while serving.chain()[1] != next_issuer {
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(Duration::from_secs(60), followed)
            .await
            .expect("re-issued under the new signer");
        let chain = serving.chain();
        assert_eq!(chain.len(), 2);
        assert_ne!(chain[0], first[0], "a new leaf");
        task.abort();
    }
}
