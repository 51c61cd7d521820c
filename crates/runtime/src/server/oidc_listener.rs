//! The OIDC server's listener: plain HTTP/1.1 or TLS (rustls, TLS ≥ 1.2) from the configured
//! certificate and key files, each connection bounded as [`super::side_listener`]
//! does for every HTTP listener.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use axum::Router;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::oidc::OidcTls;
use super::side_listener::{self, OIDC};

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

/// Serves `router` on `listener` (over TLS when `tls` is set) until `shutdown` resolves, within
/// the [`OIDC`] bounds.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
) {
    side_listener::serve("oidc", listener, router, tls, OIDC, shutdown).await;
}
