//! A Sentry client as a sidecar uses it: a fresh key, an empty-subject CSR, a TLS connection that
//! authorises exactly Sentry's SPIFFE ID (no host-name check), and `SignCertificate`. Used by the
//! load generator and the integration tests.

mod verifier;

use std::net::SocketAddr;
use std::sync::Arc;

use hyper_util::rt::TokioIo;
use rcgen::{CertificateParams, DistinguishedName, KeyPair};
use rustls_pki_types::ServerName;
use tonic::transport::{Channel, Endpoint};

pub use verifier::{trust_anchors, uri_sans, SpiffeServerVerifier};

use sentry_core::bundle::KeyType;
use sentry_proto::ca_client::CaClient;

/// Why a client could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The trust anchors could not be used.
    #[error("trust anchors: {0}")]
    Anchors(String),
    /// Key or CSR generation failed.
    #[error("csr: {0}")]
    Csr(String),
    /// TLS configuration failed.
    #[error("tls: {0}")]
    Tls(#[from] rustls::Error),
    /// Connecting failed.
    #[error("connect: {0}")]
    Connect(#[from] tonic::transport::Error),
}

/// Builds the rustls client configuration that trusts `anchors_pem` and authorises `server_id`.
pub fn tls_config(
    anchors_pem: &[u8],
    server_id: &str,
) -> Result<rustls::ClientConfig, ClientError> {
    let verifier =
        SpiffeServerVerifier::new(anchors_pem, server_id).map_err(ClientError::Anchors)?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// Opens one TLS connection to `addr` and returns a gRPC client on it.
pub async fn connect(
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
) -> Result<CaClient<Channel>, ClientError> {
    Ok(CaClient::new(channel(addr, tls).await?))
}

/// Opens one TLS connection to `addr` as a bare gRPC channel (for callers that encode requests
/// themselves, such as the hostile-input tests).
pub async fn channel(
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
) -> Result<Channel, ClientError> {
    let connector = tokio_rustls::TlsConnector::from(tls);
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))?;
    let channel = endpoint
        .connect_with_connector(tower::service_fn(move |_uri| {
            let connector = connector.clone();
            async move {
                let tcp = tokio::net::TcpStream::connect(addr).await?;
                tcp.set_nodelay(true)?;
                let name = ServerName::try_from("dapr-sentry").map_err(std::io::Error::other)?;
                let tls = connector.connect(name, tcp).await?;
                Ok::<_, std::io::Error>(TokioIo::new(tls))
            }
        }))
        .await?;
    Ok(channel)
}

/// A fresh key of `key_type` and a PEM CSR with an empty subject, as daprd sends.
pub fn new_csr(key_type: KeyType) -> Result<(KeyPair, String), ClientError> {
    let key = key_type
        .generate()
        .map_err(|e| ClientError::Csr(e.to_string()))?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    let csr = params
        .serialize_request(&key)
        .and_then(|c| c.pem())
        .map_err(|e| ClientError::Csr(e.to_string()))?;
    Ok((key, csr))
}
