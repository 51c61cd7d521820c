//! The OIDC server's listener: plain HTTP/1.1 or TLS (rustls, TLS ≥ 1.2) from the configured
//! certificate and key files, each connection bounded by a handshake and header-read timeout.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, warn};

use crate::config::OidcTls;

/// Bound on the TLS handshake and on reading the request headers.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the TLS files could not be used.
#[derive(Debug, thiserror::Error)]
#[error("OIDC server TLS: {0}")]
pub struct OidcTlsError(String);

/// True when both TLS files exist.
pub fn tls_files_present(tls: &OidcTls) -> bool {
    tls.cert.exists() && tls.key.exists()
}

/// Loads the certificate chain and key into a TLS acceptor (ALPN http/1.1).
pub fn load_tls(tls: &OidcTls) -> Result<TlsAcceptor, OidcTlsError> {
    let err = |p: &Path, e: &dyn std::fmt::Display| OidcTlsError(format!("{}: {e}", p.display()));
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&tls.cert)
        .map_err(|e| err(&tls.cert, &e))?
        .collect::<Result<_, _>>()
        .map_err(|e| err(&tls.cert, &e))?;
    if chain.is_empty() {
        return Err(err(&tls.cert, &"no certificates found"));
    }
    let key = PrivateKeyDer::from_pem_file(&tls.key).map_err(|e| err(&tls.key, &e))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| OidcTlsError(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| err(&tls.key, &e))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Serves `router` on `listener` (over TLS when `tls` is set) until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
) {
    let service = TowerToHyperService::new(router);
    tokio::pin!(shutdown);
    loop {
        let (tcp, _peer) = tokio::select! {
            () = &mut shutdown => return,
            res = listener.accept() => match res {
                Ok(conn) => conn,
                Err(e) => {
                    warn!(error = %e, "OIDC accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let service = service.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => serve_conn(tcp, service).await,
                Some(acceptor) => {
                    match tokio::time::timeout(READ_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => serve_conn(stream, service).await,
                        Ok(Err(e)) => debug!(error = %e, "OIDC TLS handshake failed"),
                        Err(_) => debug!("OIDC TLS handshake timed out"),
                    }
                }
            }
        });
    }
}

async fn serve_conn<S>(stream: S, service: TowerToHyperService<Router>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let result = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(READ_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service)
        .await;
    if let Err(e) = result {
        debug!(error = %e, "OIDC connection ended with an error");
    }
}
