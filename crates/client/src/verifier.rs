//! Server-certificate verification the SPIFFE way: the chain must lead to one of the trust
//! anchors and the leaf's only URI SAN must equal the expected SPIFFE ID. Host names are ignored.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, TrustAnchor, UnixTime};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// Verifies a server's X.509-SVID against trust anchors and one expected SPIFFE ID.
#[derive(Debug)]
pub struct SpiffeServerVerifier {
    anchors: Vec<TrustAnchor<'static>>,
    expected_id: String,
    provider: Arc<CryptoProvider>,
}

/// The trust anchors in a PEM bundle, ready for webpki path building.
pub fn trust_anchors(anchors_pem: &[u8]) -> Result<Vec<TrustAnchor<'static>>, String> {
    let blocks = pem::parse_many(anchors_pem).map_err(|e| e.to_string())?;
    let mut anchors = Vec::new();
    for block in blocks.into_iter().filter(|b| b.tag() == "CERTIFICATE") {
        let der = CertificateDer::from(block.into_contents());
        let anchor = webpki::anchor_from_trusted_cert(&der).map_err(|e| e.to_string())?;
        anchors.push(anchor.to_owned());
    }
    if anchors.is_empty() {
        return Err("no certificates found in the trust anchors".into());
    }
    Ok(anchors)
}

impl SpiffeServerVerifier {
    /// Trusts the certificates in `anchors_pem` and authorises only `expected_id`.
    pub fn new(anchors_pem: &[u8], expected_id: &str) -> Result<Self, String> {
        Ok(Self {
            anchors: trust_anchors(anchors_pem)?,
            expected_id: expected_id.to_owned(),
            provider: Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
        })
    }
}

/// The URI SANs of a certificate.
pub fn uri_sans(der: &[u8]) -> Result<Vec<String>, String> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| e.to_string())?;
    let san = cert.subject_alternative_name().map_err(|e| e.to_string())?;
    Ok(san
        .map(|s| {
            s.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::URI(u) => Some((*u).to_owned()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default())
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = webpki::EndEntityCert::try_from(end_entity)
            .map_err(|e| rustls::Error::General(format!("bad server certificate: {e}")))?;
        cert.verify_for_usage(
            self.provider.signature_verification_algorithms.all,
            &self.anchors,
            intermediates,
            now,
            webpki::KeyUsage::server_auth(),
            None,
            None,
        )
        .map_err(|e| rustls::Error::General(format!("server certificate not trusted: {e}")))?;
        let uris = uri_sans(end_entity).map_err(rustls::Error::General)?;
        if uris.len() != 1 || uris[0] != self.expected_id {
            return Err(rustls::Error::General(format!(
                "server SPIFFE ID {uris:?} is not the expected {}",
                self.expected_id
            )));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
