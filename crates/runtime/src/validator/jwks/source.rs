//! Where the `jwks` validator's keys come from, and keeping them current: an `http(s)://` URL
//! (fetched at start with retries, re-fetched every `minRefreshInterval` and on demand when a
//! token names an unknown key, at most once per `minRefreshInterval`), a file (polled for
//! changes), or inline JSON (optionally base64). The current key set is published on a watch
//! channel; the request path only reads it.

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper::Uri;
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use tracing::{info, warn};

use super::KeySet;

/// Default minimum interval between two fetches of a URL source.
pub const DEFAULT_MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(600);
/// Default HTTP timeout of a URL source.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Settings of the `jwks` validator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwksOptions {
    /// `http(s)://` URL, file path, or inline JWKS JSON (optionally base64).
    pub source: String,
    /// PEM CA (inline or a file path) trusted for an HTTPS source; system roots otherwise.
    pub ca_certificate: Option<String>,
    /// Minimum interval between fetches of a URL source.
    pub min_refresh_interval: Duration,
    /// HTTP timeout.
    pub request_timeout: Duration,
}

/// How often a file source is checked for changes.
pub(super) const FILE_POLL_INTERVAL: Duration = Duration::from_millis(500);
/// First retry delay after a failed load; doubles up to [`MAX_RETRY`].
pub(super) const FIRST_RETRY: Duration = Duration::from_millis(200);
/// Longest retry delay while no key set has been loaded.
pub(super) const MAX_RETRY: Duration = Duration::from_secs(5);
/// Largest JWKS document accepted.
pub(super) const MAX_JWKS_BYTES: usize = 1 << 20;
/// Shortest interval between two periodic fetches of a URL source.
pub(super) const MIN_PERIOD: Duration = Duration::from_secs(1);

/// Why the `jwks` validator could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum JwksSetupError {
    /// The `source` option is unusable.
    #[error("jwks validator source: {0}")]
    Source(String),
    /// The `caCertificate` option is unusable.
    #[error("jwks validator caCertificate: {0}")]
    Ca(String),
}

/// A classified `source` option.
enum Source {
    Url {
        uri: Uri,
        tls: Option<tokio_rustls::TlsConnector>,
    },
    File(PathBuf),
    Inline(KeySet),
}

/// The current key set and the means to ask for a fresh one.
#[derive(Clone)]
pub struct KeyCache {
    rx: watch::Receiver<Option<Arc<KeySet>>>,
    on_demand: Option<OnDemand>,
}

/// On-demand refresh of a URL source, rate-limited by `minRefreshInterval`.
#[derive(Clone)]
struct OnDemand {
    notify: Arc<Notify>,
    last_fetch: Arc<Mutex<Option<Instant>>>,
    min_interval: Duration,
    wait: Duration,
}

impl KeyCache {
    /// Classifies the source, loads an inline set at once, and spawns the loader for a URL or a
    /// file; [`KeyCache::loaded`] resolves once the first set is in.
    pub fn start(opts: &JwksOptions) -> Result<Self, JwksSetupError> {
        let (tx, rx) = watch::channel(None);
        let source = classify(opts)?;
        let mut on_demand = None;
        match source {
            Source::Inline(set) => {
                tx.send_replace(Some(Arc::new(set)));
            }
            Source::File(path) => {
                tokio::spawn(watch_file(path, tx));
            }
            Source::Url { uri, tls } => {
                let od = OnDemand {
                    notify: Arc::new(Notify::new()),
                    last_fetch: Arc::new(Mutex::new(None)),
                    min_interval: opts.min_refresh_interval,
                    wait: opts.request_timeout + Duration::from_secs(1),
                };
                let fetcher = Fetcher {
                    uri,
                    tls,
                    timeout: opts.request_timeout,
                };
                tokio::spawn(poll_url(fetcher, od.clone(), tx));
                on_demand = Some(od);
            }
        }
        Ok(Self { rx, on_demand })
    }

    /// Resolves once the first key set has loaded (never, if the source never yields one).
    pub fn loaded(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.rx.clone();
        async move {
            let _ = rx.wait_for(|s| s.is_some()).await;
        }
    }

    /// The current key set, waiting up to `wait` for the first one.
    pub async fn current(&self, wait: Duration) -> Option<Arc<KeySet>> {
        let mut rx = self.rx.clone();
        let res = tokio::time::timeout(wait, rx.wait_for(|s| s.is_some())).await;
        match res {
            Ok(Ok(set)) => set.clone(),
            _ => None,
        }
    }

    /// Asks a URL source for a fresh set (unless one was fetched within `minRefreshInterval`)
    /// and waits for it; `None` when no newer set arrived.
    pub async fn refreshed(&self) -> Option<Arc<KeySet>> {
        let od = self.on_demand.as_ref()?;
        let recent = od
            .last_fetch
            .lock()
            .ok()
            .and_then(|g| *g)
            .is_some_and(|t| t.elapsed() < od.min_interval);
        if recent {
            return None;
        }
        let mut rx = self.rx.clone();
        rx.borrow_and_update();
        od.notify.notify_one();
        match tokio::time::timeout(od.wait, rx.changed()).await {
            Ok(Ok(())) => rx.borrow().clone(),
            _ => None,
        }
    }
}

fn classify(opts: &JwksOptions) -> Result<Source, JwksSetupError> {
    let src = opts.source.trim();
    if src.starts_with("http://") || src.starts_with("https://") {
        let uri: Uri = src
            .parse()
            .map_err(|e| JwksSetupError::Source(format!("invalid URL: {e}")))?;
        let tls = if uri.scheme_str() == Some("https") {
            Some(tls_connector(opts.ca_certificate.as_deref())?)
        } else {
            None
        };
        return Ok(Source::Url { uri, tls });
    }
    if src.starts_with('{') {
        return KeySet::from_json(src.as_bytes())
            .map(Source::Inline)
            .map_err(JwksSetupError::Source);
    }
    if let Ok(decoded) = STANDARD.decode(src) {
        if decoded.first() == Some(&b'{') {
            return KeySet::from_json(&decoded)
                .map(Source::Inline)
                .map_err(JwksSetupError::Source);
        }
    }
    Ok(Source::File(PathBuf::from(src)))
}

fn tls_connector(ca: Option<&str>) -> Result<tokio_rustls::TlsConnector, JwksSetupError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(ca) => {
            let pem_bytes = if ca.contains("-----BEGIN") {
                ca.as_bytes().to_vec()
            } else {
                std::fs::read(ca).map_err(|e| JwksSetupError::Ca(format!("{ca}: {e}")))?
            };
            for cert in CertificateDer::pem_slice_iter(&pem_bytes) {
                let cert = cert.map_err(|e| JwksSetupError::Ca(format!("invalid PEM: {e}")))?;
                roots
                    .add(cert)
                    .map_err(|e| JwksSetupError::Ca(e.to_string()))?;
            }
            if roots.is_empty() {
                return Err(JwksSetupError::Ca("no certificates found".into()));
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(native.certs);
            if added == 0 {
                return Err(JwksSetupError::Ca(
                    "no system trust anchors found; set caCertificate".into(),
                ));
            }
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| JwksSetupError::Ca(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

async fn watch_file(path: PathBuf, tx: watch::Sender<Option<Arc<KeySet>>>) {
    let mut last: Option<Result<Vec<u8>, String>> = None;
    loop {
        let now = tokio::fs::read(&path).await.map_err(|e| e.to_string());
        if last.as_ref() != Some(&now) {
            match &now {
                Ok(bytes) => match KeySet::from_json(bytes) {
                    Ok(set) => {
                        info!(path = %path.display(), keys = set.len(), "Loaded JWKS for the jwks validator");
                        tx.send_replace(Some(Arc::new(set)));
                    }
                    Err(e) => {
                        warn!(path = %path.display(), error = %e, "Ignoring invalid JWKS file")
                    }
                },
                Err(e) => warn!(path = %path.display(), error = %e, "Cannot read JWKS file"),
            }
            last = Some(now);
        }
        tokio::time::sleep(FILE_POLL_INTERVAL).await;
    }
}

struct Fetcher {
    uri: Uri,
    tls: Option<tokio_rustls::TlsConnector>,
    timeout: Duration,
}

impl Fetcher {
    async fn fetch(&self) -> Result<KeySet, String> {
        let body = tokio::time::timeout(self.timeout, self.get())
            .await
            .map_err(|_| format!("timed out after {:?}", self.timeout))??;
        KeySet::from_json(&body)
    }

    async fn get(&self) -> Result<Bytes, String> {
        let host = self.uri.host().ok_or("URL has no host")?;
        let bare_host = host.trim_start_matches('[').trim_end_matches(']');
        let port = self
            .uri
            .port_u16()
            .unwrap_or(if self.tls.is_some() { 443 } else { 80 });
        let tcp = TcpStream::connect((bare_host, port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        match &self.tls {
            None => self.request(tcp).await,
            Some(tls) => {
                let name = ServerName::try_from(bare_host.to_owned())
                    .map_err(|e| format!("server name: {e}"))?;
                let stream = tls
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS: {e}"))?;
                self.request(stream).await
            }
        }
    }

    async fn request<S>(&self, stream: S) -> Result<Bytes, String>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP: {e}"))?;
        tokio::spawn(conn);
        let authority = self.uri.authority().map(|a| a.as_str()).unwrap_or("");
        let path = self.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let req = hyper::Request::get(path)
            .header(hyper::header::HOST, authority)
            .header(hyper::header::ACCEPT, "application/json")
            .body(Empty::<Bytes>::new())
            .map_err(|e| format!("HTTP request: {e}"))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("HTTP: {e}"))?;
        if resp.status() != hyper::StatusCode::OK {
            return Err(format!("HTTP status {}", resp.status()));
        }
        Limited::new(resp.into_body(), MAX_JWKS_BYTES)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .map_err(|e| format!("reading body: {e}"))
    }
}

async fn poll_url(fetcher: Fetcher, od: OnDemand, tx: watch::Sender<Option<Arc<KeySet>>>) {
    let mut retry = FIRST_RETRY;
    loop {
        let result = fetcher.fetch().await;
        if let Ok(mut g) = od.last_fetch.lock() {
            *g = Some(Instant::now());
        }
        let wait = match result {
            Ok(set) => {
                info!(url = %fetcher.uri, keys = set.len(), "Loaded JWKS for the jwks validator");
                tx.send_replace(Some(Arc::new(set)));
                retry = FIRST_RETRY;
                od.min_interval.max(MIN_PERIOD)
            }
            Err(e) => {
                warn!(url = %fetcher.uri, error = %e, "Failed to fetch JWKS; retrying");
                let wait = retry;
                let cap = if tx.borrow().is_some() {
                    od.min_interval.max(MIN_PERIOD)
                } else {
                    MAX_RETRY
                };
                retry = (retry * 2).min(cap);
                wait
            }
        };
        let next = Instant::now() + wait;
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(next) => break,
                () = od.notify.notified() => {
                    let recent = od.last_fetch.lock().ok().and_then(|g| *g)
                        .is_some_and(|t| t.elapsed() < od.min_interval);
                    if !recent {
                        break;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(source: &str) -> JwksOptions {
        JwksOptions {
            source: source.into(),
            ca_certificate: None,
            min_refresh_interval: Duration::from_secs(600),
            request_timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn classifies_sources() {
        let jwks = r#"{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"k"}]}"#;
        assert!(matches!(classify(&opts(jwks)), Ok(Source::Inline(_))));
        let b64 = STANDARD.encode(jwks);
        assert!(matches!(classify(&opts(&b64)), Ok(Source::Inline(_))));
        assert!(matches!(
            classify(&opts("http://127.0.0.1:1/jwks.json")),
            Ok(Source::Url { tls: None, .. })
        ));
        assert!(matches!(
            classify(&opts("/etc/jwks.json")),
            Ok(Source::File(_))
        ));
        assert!(classify(&opts(r#"{"keys":[]}"#)).is_err());
        let mut o = opts("https://127.0.0.1/jwks.json");
        o.ca_certificate =
            Some("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".into());
        assert!(classify(&o).is_err());
    }

    /// Serves whatever `body` holds, one HTTP/1.1 response per connection.
    async fn serve(body: Arc<Mutex<String>>) -> std::net::SocketAddr {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                let mut buf = [0u8; 4096];
                let _ = tcp.read(&mut buf).await;
                let b = body.lock().unwrap().clone();
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{b}",
                    b.len()
                );
                let _ = tcp.write_all(resp.as_bytes()).await;
            }
        });
        addr
    }

    fn jwks(n: usize) -> String {
        let keys: Vec<_> = (0..n)
            .map(|i| {
                let key =
                    sentry_core::jose::SigningKey::generate(sentry_core::jose::Algorithm::EdDSA)
                        .unwrap();
                key.public_key()
                    .to_jwk(&format!("k{i}"), sentry_core::jose::Algorithm::EdDSA)
            })
            .collect();
        serde_json::json!({ "keys": keys }).to_string()
    }

    #[tokio::test]
    async fn url_source_refreshes_on_demand_at_most_once_per_interval() {
        let body = Arc::new(Mutex::new(jwks(1)));
        let addr = serve(body.clone()).await;
        let url = format!("http://{addr}/jwks.json");
        // No minimum interval: an unknown kid always triggers a fetch.
        let mut o = opts(&url);
        o.min_refresh_interval = Duration::ZERO;
        let cache = KeyCache::start(&o).unwrap();
        let first = cache.current(Duration::from_secs(10)).await.unwrap();
        assert_eq!(first.len(), 1);
        *body.lock().unwrap() = jwks(2);
        let fresh = cache.refreshed().await.expect("a new key set");
        assert_eq!(fresh.len(), 2);
        // Within the minimum interval of the last fetch, no on-demand fetch happens.
        let limited = KeyCache::start(&opts(&url)).unwrap();
        assert_eq!(
            limited
                .current(Duration::from_secs(10))
                .await
                .unwrap()
                .len(),
            2
        );
        *body.lock().unwrap() = jwks(3);
        assert!(limited.refreshed().await.is_none());
        assert_eq!(limited.current(Duration::ZERO).await.unwrap().len(), 2);
        let mut o = opts("/nonexistent/jwks.json");
        o.min_refresh_interval = Duration::ZERO;
        let file_cache = KeyCache::start(&o).unwrap();
        assert!(
            file_cache.refreshed().await.is_none(),
            "only URL sources refresh on demand"
        );
    }
}
