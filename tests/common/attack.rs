//! Attack tooling for tests/hostile_*.rs, built from the `h2` crate's client and hand-written
//! frames (never from the server's code): HTTP/2 connections with chosen settings from a chosen
//! loopback address, raw frames, gRPC message framing, a good client that keeps signing while an
//! attack runs, and the server's resident memory.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use prost::bytes::Bytes;
use rustls_pki_types::ServerName;
use sentry_core::bundle::KeyType;
use sentry_proto::ca_client::CaClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tonic::transport::{Channel, Endpoint};

use super::{http_get, request, Sentry};

pub(crate) const SENTRY_ID: &str = "spiffe://localhost/ns/default/dapr-sentry";
pub(crate) const SIGN_PATH: &str = "https://dapr-sentry/dapr.proto.sentry.v1.CA/SignCertificate";
/// Where the attacks come from; the good client uses [`GOOD_SOURCE`], another address.
pub(crate) const ATTACK_SOURCE: [u8; 4] = [127, 0, 0, 1];
pub(crate) const GOOD_SOURCE: [u8; 4] = [127, 0, 0, 2];
/// A good request's deadline while an attack runs.
pub(crate) const GOOD_DEADLINE: Duration = Duration::from_secs(2);

/// A TLS connection (ALPN h2, Sentry's ID verified) from `source`.
pub(crate) async fn tls_from(s: &Sentry, source: [u8; 4]) -> std::io::Result<TlsStream<TcpStream>> {
    let tls = Arc::new(
        sentry_client::tls_config(&s.anchors(), SENTRY_ID).map_err(std::io::Error::other)?,
    );
    let sock = tokio::net::TcpSocket::new_v4()?;
    sock.bind(SocketAddr::from((source, 0)))?;
    let tcp = sock.connect(s.grpc).await?;
    let name = ServerName::try_from("dapr-sentry").map_err(std::io::Error::other)?;
    tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
}

/// A gRPC client whose connections come from `source` (any 127/8 address works on Linux).
pub(crate) async fn client_from(s: &Sentry, source: [u8; 4]) -> CaClient<Channel> {
    client_at(s.grpc, &s.anchors(), source).await.unwrap()
}

/// A gRPC client of the Sentry at `addr` (trusting `anchors`) whose connections come from
/// `source`.
pub(crate) async fn client_at(
    addr: SocketAddr,
    anchors: &[u8],
    source: [u8; 4],
) -> Result<CaClient<Channel>, String> {
    let tls = Arc::new(sentry_client::tls_config(anchors, SENTRY_ID).map_err(|e| e.to_string())?);
    let connector = tokio_rustls::TlsConnector::from(tls);
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| e.to_string())?
        .connect_with_connector(tower::service_fn(move |_| {
            let connector = connector.clone();
            async move {
                let sock = tokio::net::TcpSocket::new_v4()?;
                sock.bind(SocketAddr::from((source, 0)))?;
                let tcp = sock.connect(addr).await?;
                let name = ServerName::try_from("dapr-sentry").map_err(std::io::Error::other)?;
                Ok::<_, std::io::Error>(TokioIo::new(connector.connect(name, tcp).await?))
            }
        }))
        .await
        .map_err(|e| e.to_string())?;
    Ok(CaClient::new(channel))
}

/// An `h2` client connection from `source`; `window` sets SETTINGS_INITIAL_WINDOW_SIZE.
pub(crate) async fn h2_from(
    s: &Sentry,
    source: [u8; 4],
    window: Option<u32>,
) -> std::io::Result<h2::client::SendRequest<Bytes>> {
    let tls = tls_from(s, source).await?;
    let mut builder = h2::client::Builder::new();
    if let Some(w) = window {
        builder.initial_window_size(w);
    }
    let (send, conn) = builder
        .handshake(tls)
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(conn);
    Ok(send)
}

/// The HEADERS of a SignCertificate call with `content_type`.
pub(crate) fn sign_headers(content_type: &str) -> http::Request<()> {
    http::Request::post(SIGN_PATH)
        .header("content-type", content_type)
        .header("te", "trailers")
        .body(())
        .unwrap()
}

/// `msg` in gRPC's framing (uncompressed, 4-byte length).
pub(crate) fn grpc_message(msg: &impl prost::Message) -> Bytes {
    let body = msg.encode_to_vec();
    let mut out = vec![0];
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend(body);
    Bytes::from(out)
}

/// The grpc-status of a response: in its headers (trailers-only) or its trailers.
pub(crate) async fn grpc_status(
    response: h2::client::ResponseFuture,
) -> Result<(http::StatusCode, Option<String>), h2::Error> {
    let response = response.await?;
    let status = response.status();
    let from_headers = response
        .headers()
        .get("grpc-status")
        .map(|v| v.to_str().unwrap_or("?").to_owned());
    if from_headers.is_some() {
        return Ok((status, from_headers));
    }
    let mut body = response.into_body();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    let trailers = body.trailers().await?;
    Ok((
        status,
        trailers.and_then(|t| {
            t.get("grpc-status")
                .map(|v| v.to_str().unwrap_or("?").to_owned())
        }),
    ))
}

/// A frame as read from the wire: type, flags, stream, payload.
pub(crate) type RawFrame = (u8, u8, u32, Vec<u8>);

/// Writes one frame.
pub(crate) async fn write_frame(
    io: &mut TlsStream<TcpStream>,
    kind: u8,
    flags: u8,
    stream: u32,
    payload: &[u8],
) -> std::io::Result<()> {
    let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    f.extend_from_slice(&[kind, flags]);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    io.write_all(&f).await?;
    io.flush().await
}

/// Reads one frame; `None` at end-of-file or on error.
pub(crate) async fn read_frame(io: &mut TlsStream<TcpStream>) -> Option<RawFrame> {
    let mut h = [0u8; 9];
    io.read_exact(&mut h).await.ok()?;
    let len = u32::from_be_bytes([0, h[0], h[1], h[2]]) as usize;
    let mut payload = vec![0; len];
    io.read_exact(&mut payload).await.ok()?;
    let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
    Some((h[3], h[4], stream, payload))
}

/// Sends the client preface and an empty SETTINGS frame.
pub(crate) async fn raw_h2_open(io: &mut TlsStream<TcpStream>) -> std::io::Result<()> {
    io.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await?;
    write_frame(io, 0x4, 0, 0, &[]).await
}

/// The server's resident memory in MiB (`VmRSS`).
pub(crate) fn rss_mib(pid: u32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kib| kib / 1024)
}

/// A good client that signs over fresh connections from [`GOOD_SOURCE`] until stopped, each
/// request within [`GOOD_DEADLINE`], and checks /healthz between requests.
pub(crate) struct GoodClient {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Result<u64, String>>,
    pub peak_rss_mib: Arc<AtomicU64>,
    /// The slowest good request so far, in milliseconds (connection and call).
    pub slowest_ms: Arc<AtomicU64>,
}

impl GoodClient {
    pub(crate) fn start(s: &Sentry) -> Self {
        Self::with_deadline(s, GOOD_DEADLINE)
    }

    /// A good client whose requests each have `deadline`.
    pub(crate) fn with_deadline(s: &Sentry, deadline: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let view = SentryView {
            grpc: s.grpc,
            healthz: s.healthz,
            pid: s.child.id(),
            deadline,
        };
        let slowest = Arc::new(AtomicU64::new(0));
        let (stop2, peak2, slowest2) = (stop.clone(), peak.clone(), slowest.clone());
        let anchors = s.anchors();
        let task = tokio::spawn(async move { view.run(anchors, stop2, peak2, slowest2).await });
        Self {
            stop,
            task,
            peak_rss_mib: peak,
            slowest_ms: slowest,
        }
    }

    /// Stops it; returns how many requests succeeded, or the first failure.
    pub(crate) async fn finish(self) -> Result<u64, String> {
        self.stop.store(true, Ordering::Release);
        self.task.await.map_err(|e| e.to_string())?
    }
}

struct SentryView {
    grpc: SocketAddr,
    healthz: SocketAddr,
    pid: u32,
    deadline: Duration,
}

impl SentryView {
    async fn run(
        self,
        anchors: Vec<u8>,
        stop: Arc<AtomicBool>,
        peak: Arc<AtomicU64>,
        slowest: Arc<AtomicU64>,
    ) -> Result<u64, String> {
        let req = request("good", "default", KeyType::Ed25519);
        let mut served = 0;
        while !stop.load(Ordering::Acquire) {
            let call = async {
                client_at(self.grpc, &anchors, GOOD_SOURCE)
                    .await?
                    .sign_certificate(req.clone())
                    .await
                    .map_err(|e| e.to_string())
            };
            let started = std::time::Instant::now();
            match tokio::time::timeout(self.deadline, call).await {
                Ok(Ok(_)) => {
                    served += 1;
                    let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                    slowest.fetch_max(ms, Ordering::AcqRel);
                }
                Ok(Err(e)) => return Err(format!("good request {served} failed: {e}")),
                Err(_) => {
                    return Err(format!(
                        "good request {served} not answered within {:?}",
                        self.deadline
                    ))
                }
            }
            let healthz = self.healthz;
            let code = tokio::task::spawn_blocking(move || http_get(healthz, "/healthz"))
                .await
                .map_err(|e| e.to_string())?
                .map(|r| r.0);
            if code != Some(200) {
                return Err(format!("/healthz answered {code:?} during the attack"));
            }
            peak.fetch_max(rss_mib(self.pid), Ordering::AcqRel);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(served)
    }
}

/// Raises this process's open-files limit so it can hold `n` sockets (the child inherits it).
pub(crate) fn allow_open_files(n: u64) {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut lim = getrlimit(Resource::Nofile);
    let max = lim.maximum.unwrap_or(u64::MAX);
    assert!(
        max >= n,
        "this test needs {n} open files; the hard limit (ulimit -Hn) is {max}"
    );
    lim.current = Some(max);
    setrlimit(Resource::Nofile, lim).unwrap();
}
