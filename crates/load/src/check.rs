//! Checking what the server says, cheaply enough that one load-generator core can keep up with
//! the server: the TLS client configuration (SPIFFE server authorisation, no session resumption)
//! and the answer checker (leaf chains to the anchors, URI SAN is the expected ID).
//!
//! Both cache the part of the work that is identical for every request — the server's own
//! certificate chain and the issuer chain of the answers — keyed by the exact bytes, so every
//! request still gets its own signature checks (TLS `CertificateVerify`, leaf signature).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::Resumption;
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, TrustAnchor, UnixTime};

use sentry_client::{uri_sans, ClientError, SpiffeServerVerifier};
use sentry_proto::SignCertificateResponse;

/// How long a verified server chain is trusted without re-verification.
const SERVER_CHAIN_CACHE: Duration = Duration::from_secs(10);

/// The client TLS configuration of a simulated sidecar: trusts `anchors_pem`, authorises
/// `server_id`, never resumes a session (daprd does a full handshake on every dial), prefers
/// AES-128-GCM-SHA256 like Go.
pub(crate) fn client_tls(
    anchors_pem: &[u8],
    server_id: &str,
) -> Result<rustls::ClientConfig, ClientError> {
    let inner = SpiffeServerVerifier::new(anchors_pem, server_id).map_err(ClientError::Anchors)?;
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    // Offer TLS_AES_128_GCM_SHA256 first, as Go's crypto/tls (daprd) does on CPUs with AES
    // instructions, so that each server negotiates what it would with a real sidecar.
    provider
        .cipher_suites
        .sort_by_key(|s| s.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(CachingServerVerifier::new(inner)))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    config.resumption = Resumption::disabled();
    Ok(config)
}

/// A [`SpiffeServerVerifier`] that remembers the last chain it accepted for a few seconds; the
/// handshake signature is still checked on every connection.
#[derive(Debug)]
pub struct CachingServerVerifier {
    inner: SpiffeServerVerifier,
    last: Mutex<Option<(Vec<u8>, Instant)>>,
}

impl CachingServerVerifier {
    /// Wraps `inner`.
    pub fn new(inner: SpiffeServerVerifier) -> Self {
        Self {
            inner,
            last: Mutex::new(None),
        }
    }
}

fn chain_key(end_entity: &[u8], intermediates: &[CertificateDer<'_>]) -> Vec<u8> {
    let mut key = Vec::with_capacity(end_entity.len() + 2048);
    for part in std::iter::once(end_entity).chain(intermediates.iter().map(|c| c.as_ref())) {
        key.extend_from_slice(&(part.len() as u32).to_be_bytes());
        key.extend_from_slice(part);
    }
    key
}

impl ServerCertVerifier for CachingServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let key = chain_key(end_entity, intermediates);
        if let Ok(last) = self.last.lock() {
            if let Some((k, at)) = last.as_ref() {
                if *k == key && at.elapsed() < SERVER_CHAIN_CACHE {
                    return Ok(ServerCertVerified::assertion());
                }
            }
        }
        let verified = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        if let Ok(mut last) = self.last.lock() {
            *last = Some((key, Instant::now()));
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Checks `SignCertificate` answers: the leaf chains to the trust anchors through the returned
/// issuer chain and carries exactly the expected URI SAN.
pub struct AnswerChecker {
    anchors: Vec<TrustAnchor<'static>>,
    /// Issuer chains already proven to lead to an anchor, by their bytes → the issuer as anchor.
    issuers: RwLock<HashMap<Vec<u8>, Arc<[TrustAnchor<'static>; 1]>>>,
    algs: &'static [&'static dyn rustls_pki_types::SignatureVerificationAlgorithm],
}

impl AnswerChecker {
    /// Trusts the certificates in `anchors_pem`.
    pub fn new(anchors_pem: &[u8]) -> Result<Self, String> {
        Ok(Self {
            anchors: sentry_client::trust_anchors(anchors_pem)?,
            issuers: RwLock::new(HashMap::new()),
            algs: webpki::ALL_VERIFICATION_ALGS,
        })
    }

    /// Checks one answer for `expected_id`.
    pub fn check(&self, resp: &SignCertificateResponse, expected_id: &str) -> Result<(), String> {
        let certs: Vec<CertificateDer<'static>> = pem::parse_many(&resp.workload_certificate)
            .map_err(|e| format!("workload certificate PEM: {e}"))?
            .into_iter()
            .filter(|b| b.tag() == "CERTIFICATE")
            .map(|b| CertificateDer::from(b.into_contents()))
            .collect();
        let (leaf, chain) = certs
            .split_first()
            .ok_or_else(|| "no certificate in the answer".to_owned())?;
        if resp.valid_until.is_none() {
            return Err("no valid_until".into());
        }
        let ee = webpki::EndEntityCert::try_from(leaf).map_err(|e| format!("leaf: {e}"))?;
        let now = UnixTime::now();
        let usage = webpki::KeyUsage::server_auth();
        let key: Vec<u8> = chain
            .iter()
            .flat_map(|c| c.as_ref().iter().copied())
            .collect();
        let cached = self.issuers.read().ok().and_then(|m| m.get(&key).cloned());
        match cached {
            Some(issuer) => {
                ee.verify_for_usage(self.algs, &issuer[..], &[], now, usage, None, None)
                    .map_err(|e| format!("leaf does not chain to the issuer: {e}"))?;
            }
            None => {
                ee.verify_for_usage(self.algs, &self.anchors, chain, now, usage, None, None)
                    .map_err(|e| format!("leaf does not chain to the anchors: {e}"))?;
                let first = chain
                    .first()
                    .ok_or_else(|| "answer has no issuer certificate".to_owned())?;
                let issuer = webpki::anchor_from_trusted_cert(first)
                    .map_err(|e| format!("issuer: {e}"))?
                    .to_owned();
                if let Ok(mut m) = self.issuers.write() {
                    m.insert(key, Arc::new([issuer]));
                }
            }
        }
        let uris = uri_sans(leaf)?;
        if uris.len() != 1 || uris[0] != expected_id {
            return Err(format!("leaf URI SANs {uris:?}, expected {expected_id}"));
        }
        Ok(())
    }
}
