//! Capacity protection: load shedding under a small in-flight bound, 5,000 idle and slow
//! connections against the default limits, and the per-peer rate limit.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::attack::{allow_open_files, client_from};
use common::*;
use rustls_pki_types::ServerName;
use sentry_core::bundle::KeyType;

const SENTRY_ID: &str = "spiffe://localhost/ns/default/dapr-sentry";

fn sign_req(id: &str) -> sentry_proto::SignCertificateRequest {
    request(id, "default", KeyType::Ed25519)
}

/// Waits (bounded) until the metrics text contains `needle`.
fn wait_metric(s: &Sentry, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !s.metrics_text().contains(needle) {
        assert!(
            Instant::now() < deadline,
            "metric {needle:?} never appeared:\n{}",
            s.metrics_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_in_flight_bound_requests_are_shed_then_served_again() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Sentry::start(
        tmp.path(),
        Opts::default().arg("--max-in-flight-requests").arg("1"),
    );

    // Occupy the only slot: a SignCertificate whose headers arrive but whose body never does.
    let tls = sentry_client::tls_config(&s.anchors(), SENTRY_ID).unwrap();
    let tcp = tokio::net::TcpStream::connect(s.grpc).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect(ServerName::try_from("dapr-sentry").unwrap(), tcp)
        .await
        .unwrap();
    let (mut h2, conn) = h2::client::handshake(tls).await.unwrap();
    let conn = tokio::spawn(conn);
    let req = http::Request::post("https://dapr-sentry/dapr.proto.sentry.v1.CA/SignCertificate")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let (_response, mut stalled) = h2.send_request(req, false).unwrap();
    let s = tokio::task::spawn_blocking(move || {
        wait_metric(&s, "sentry_rs_requests_in_flight 1");
        s
    })
    .await
    .unwrap();

    let err = sign(&s, sign_req("shed")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    assert!(s
        .metrics_text()
        .contains("sentry_rs_requests_shed_total{reason=\"in_flight\"} 1"));

    // The stalled client gives up; its slot comes back and the next request is served.
    stalled.send_reset(h2::Reason::CANCEL);
    let s = tokio::task::spawn_blocking(move || {
        wait_metric(&s, "sentry_rs_requests_in_flight 0");
        s
    })
    .await
    .unwrap();
    sign(&s, sign_req("served"))
        .await
        .expect("served once the slot is free");
    conn.abort();
}

fn proc_status_kib(pid: u32, key: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// The first bytes of a TLS ClientHello (record header + handshake header), never finished.
const PARTIAL_HELLO: [u8; 9] = [0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc];

#[test]
fn five_thousand_idle_and_slow_connections_leave_sentry_healthy() {
    const N: usize = 5000;
    allow_open_files(N as u64 + 2048);
    let tmp = tempfile::tempdir().unwrap();
    // Default limits, except that a slow machine may need more than the default 10 s to open all
    // the connections: none may be dropped for being silent before the checks below.
    let s = Sentry::start(
        tmp.path(),
        Opts::default().arg("--tls-handshake-timeout").arg("10m"),
    );
    let pid = s.child.id();

    let mut held = Vec::with_capacity(N);
    for i in 0..N {
        let mut c = TcpStream::connect(s.grpc).unwrap();
        if i % 2 == 1 {
            c.write_all(&PARTIAL_HELLO).unwrap();
        }
        held.push(c);
    }
    // The server really holds them (bounded wait for the accept loop to catch up).
    let deadline = Instant::now() + Duration::from_secs(30);
    while open_fds(pid) < N {
        assert!(
            Instant::now() < deadline,
            "server holds only {} fds",
            open_fds(pid)
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    assert_eq!(http_get(s.healthz, "/healthz").map(|r| r.0), Some(200));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let resp = rt
        .block_on(sign(&s, sign_req("still-served")))
        .expect("normal client served");
    assert!(!resp.workload_certificate.is_empty());
    assert!(open_fds(pid) >= N, "idle connections were still open");
    let rss_mib = proc_status_kib(pid, "VmRSS") / 1024;
    let hwm_mib = proc_status_kib(pid, "VmHWM") / 1024;
    assert!(
        hwm_mib < 200,
        "peak RSS {hwm_mib} MiB with {N} connections (now {rss_mib} MiB)"
    );
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_peer_rate_limit_refuses_the_greedy_peer_only() {
    let tmp = tempfile::tempdir().unwrap();
    // One token per 100 s: nothing refills during the test, whatever the machine's speed.
    let opts = Opts::default()
        .arg("--peer-rate-limit")
        .arg("0.01")
        .arg("--peer-rate-burst")
        .arg("2");
    let s = Sentry::start(tmp.path(), opts);
    let mut greedy = client_from(&s, [127, 0, 0, 1]).await;
    for i in 0..2 {
        greedy
            .sign_certificate(sign_req(&format!("burst-{i}")))
            .await
            .expect("within the burst");
    }
    let err = greedy.sign_certificate(sign_req("over")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    let mut other = client_from(&s, [127, 0, 0, 2]).await;
    other
        .sign_certificate(sign_req("other-peer"))
        .await
        .expect("another address has its own budget");
    assert!(s
        .metrics_text()
        .contains("sentry_rs_requests_shed_total{reason=\"peer_rate\"} 1"));
}
