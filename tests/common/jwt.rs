//! Helpers for the JWT, JWKS-validator and OIDC tests: raw HTTP(S) requests, a test CA for TLS
//! listeners, a JWKS server, token minting, and the PyJWT verifier (tests/jwtverify/verify.py).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use sentry_core::jose::{b64url, Algorithm, SigningKey};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A parsed HTTP response.
#[derive(Debug)]
pub(crate) struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

fn parse_response(raw: &[u8]) -> Option<HttpResponse> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Some(HttpResponse {
        status,
        headers,
        body: body.to_owned(),
    })
}

fn request_text(method: &str, path: &str, headers: &[(&str, &str)]) -> String {
    let mut req = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("Content-Length: 0\r\n\r\n");
    req
}

/// One plain HTTP/1.1 request (the caller sets `Host`).
pub(crate) fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Option<HttpResponse> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(request_text(method, path, headers).as_bytes())
        .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    parse_response(&buf)
}

/// One HTTPS GET to `addr`, verifying the server as `server_name` against `ca_pem`.
pub(crate) async fn https_get(
    addr: SocketAddr,
    server_name: &str,
    path: &str,
    ca_pem: &str,
    headers: &[(&str, &str)],
) -> HttpResponse {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from(server_name.to_owned()).unwrap(), tcp)
        .await
        .unwrap();
    tls.write_all(request_text("GET", path, headers).as_bytes())
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tls.read_to_end(&mut buf).await;
    parse_response(&buf).unwrap()
}

/// A CA for test TLS listeners.
pub(crate) struct TestCa {
    pub cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl TestCa {
    pub(crate) fn new() -> Self {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "test CA");
        let cert = params.self_signed(&key).unwrap();
        Self {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A server certificate for `localhost` and 127.0.0.1: (cert PEM, key PEM).
    pub(crate) fn server_cert(&self) -> (String, String) {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params
            .subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// Writes a server certificate and key into `dir`; returns their paths.
    pub(crate) fn write_server_cert(&self, dir: &Path) -> (String, String) {
        let (cert, key) = self.server_cert();
        let (c, k) = (dir.join("tls.crt"), dir.join("tls.key"));
        std::fs::write(&c, cert).unwrap();
        std::fs::write(&k, key).unwrap();
        (c.display().to_string(), k.display().to_string())
    }
}

/// A JWKS document served at any path, over HTTP or HTTPS; the body can be swapped.
pub(crate) struct JwksServer {
    pub body: Arc<Mutex<String>>,
}

impl JwksServer {
    /// Serves on `127.0.0.1:port` until the test ends.
    pub(crate) async fn start(port: u16, body: &str, tls: Option<(String, String)>) -> Self {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let body = Arc::new(Mutex::new(body.to_owned()));
        let acceptor = tls.map(|(cert, key)| {
            let chain: Vec<_> = CertificateDer::pem_slice_iter(cert.as_bytes())
                .map(|c| c.unwrap())
                .collect();
            let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
            let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
            let cfg = rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .unwrap();
            tokio_rustls::TlsAcceptor::from(Arc::new(cfg))
        });
        let shared = body.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let shared = shared.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |_req| {
                        let b = shared.lock().unwrap().clone();
                        async move {
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                                Bytes::from(b),
                            )))
                        }
                    });
                    let http = hyper::server::conn::http1::Builder::new();
                    match acceptor {
                        None => {
                            let _ = http.serve_connection(TokioIo::new(tcp), svc).await;
                        }
                        Some(a) => {
                            if let Ok(s) = a.accept(tcp).await {
                                let _ = http.serve_connection(TokioIo::new(s), svc).await;
                            }
                        }
                    }
                });
            }
        });
        Self { body }
    }
}

/// A Configuration enabling the jwks validator with `options` (YAML mapping lines, indented 8).
pub(crate) fn jwks_config(options: &str) -> String {
    format!(
        "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: daprsystem\nspec:\n  mtls:\n    tokenValidators:\n    - name: jwks\n      options:\n{options}"
    )
}

/// A signing key of `alg` with its JWKS (one key, `kid`).
pub(crate) fn key_and_jwks(alg: Algorithm, kid: &str) -> (SigningKey, String) {
    let key = SigningKey::generate(alg).unwrap();
    let jwk = key.public_key().to_jwk(kid, alg);
    let jwks = serde_json::json!({ "keys": [jwk] }).to_string();
    (key, jwks)
}

/// A compact JWS of `claims` signed by `key`.
pub(crate) fn mint(
    key: &SigningKey,
    alg: Algorithm,
    kid: &str,
    claims: serde_json::Value,
) -> String {
    let header = serde_json::json!({"alg": alg.name(), "kid": kid, "typ": "JWT"});
    let input = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    );
    let sig = key.sign(alg, input.as_bytes()).unwrap();
    format!("{input}.{}", b64url(&sig))
}

/// Claims a Dapr client's token has: aud = Sentry's ID, sub = the requested identity.
pub(crate) fn claims_for(sub: &str, exp_offset: i64, nbf_offset: i64) -> serde_json::Value {
    let now = ::time::OffsetDateTime::now_utc().unix_timestamp();
    serde_json::json!({
        "aud": ["spiffe://localhost/ns/default/dapr-sentry"],
        "sub": sub,
        "iat": now,
        "nbf": now + nbf_offset,
        "exp": now + exp_offset,
    })
}

fn python(args: &[&str], stdin: &str) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/jwtverify/verify.py");
    let mut child = Command::new("python3")
        .arg(script)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 with PyJWT is required (pip install pyjwt cryptography)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "verify.py {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Verifies `tokens` with PyJWT against the JWKS at `url`; returns header + claims of each.
pub(crate) fn pyjwt_verify(
    url: &str,
    alg: &str,
    tokens: &[String],
    audiences: &[Vec<String>],
    issuer: Option<&str>,
) -> Vec<serde_json::Value> {
    let input = serde_json::json!({"tokens": tokens, "audiences": audiences, "issuer": issuer});
    let out = python(&["verify", url, alg], &input.to_string());
    serde_json::from_str(&out).unwrap()
}

/// A token minted by PyJWT with `key_pem`.
pub(crate) fn pyjwt_mint(
    key_pem: &str,
    alg: &str,
    kid: &str,
    claims: &serde_json::Value,
) -> String {
    let input = serde_json::json!({"key_pem": key_pem, "claims": claims});
    python(&["mint", alg, kid], &input.to_string())
}
