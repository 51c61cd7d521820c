//! Hostile HTTP/2 streams against a running Sentry with its default limits, each while a good
//! client (another loopback address) keeps signing within its deadline and /healthz stays 200:
//!
//! - HEADERS without a body on many connections, kept alive with PINGs: the body timeout answers
//!   them, the fair shares keep slots for others, and every slot comes back;
//! - PINGs more often than gRPC-Go's keepalive policy allows: `GOAWAY(ENHANCE_YOUR_CALM,
//!   "too_many_pings")`; PINGs are not activity for the idle timeout;
//! - a content-type that is not gRPC (HTTP 415, as gRPC-Go answers) and a unary call carrying two
//!   messages (INTERNAL, gRPC-Go's cardinality violation); the next call on the same connection
//!   is served.

mod common;

use std::time::{Duration, Instant};

use common::attack::*;
use common::*;
use prost::bytes::Bytes;
use sentry_core::bundle::KeyType;

const CONNECTIONS: usize = 9;
const STREAMS: usize = 128;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;

fn in_flight(s: &Sentry) -> u64 {
    metric_sum(&s.metrics_text(), "sentry_rs_requests_in_flight")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_without_a_body_cannot_hold_the_slots() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Sentry::start(tmp.path(), Opts::default());
    let good = GoodClient::start(&s);

    // 9 connections × 128 HEADERS-only streams (more than --max-in-flight-requests), each
    // connection pinging every 4 s as a keepalive would (its third strike, at 16 s, would close
    // it; the body timeout comes first).
    let started = Instant::now();
    let mut pending = Vec::new();
    let mut pingers = Vec::new();
    for _ in 0..CONNECTIONS {
        let tls = tls_from(&s, ATTACK_SOURCE).await.unwrap();
        let (mut h2, mut conn) = h2::client::handshake(tls).await.unwrap();
        let mut pings = conn.ping_pong().unwrap();
        tokio::spawn(conn);
        pingers.push(tokio::spawn(async move {
            for _ in 0..10 {
                tokio::time::sleep(Duration::from_secs(4)).await;
                if pings.ping(h2::Ping::opaque()).await.is_err() {
                    break;
                }
            }
        }));
        for _ in 0..STREAMS {
            h2 = h2.ready().await.unwrap();
            let (response, body) = h2
                .send_request(sign_headers("application/grpc"), false)
                .unwrap();
            pending.push((response, body));
        }
    }
    // Every stream is answered without its body: shed at once, or the body timeout (10 s).
    let mut codes = std::collections::BTreeMap::new();
    for (response, _body) in pending {
        let code = tokio::time::timeout(Duration::from_secs(60), grpc_status(response))
            .await
            .expect("a HEADERS-only stream was never answered")
            .map(|(_, code)| code.unwrap_or_default())
            .unwrap_or_else(|e| format!("reset {e}"));
        *codes.entry(code).or_insert(0) += 1;
    }
    let answered_in = started.elapsed();
    eprintln!("HEADERS-only streams answered {codes:?} within {answered_in:?}");
    // 4 = DEADLINE_EXCEEDED (the body timeout), 8 = RESOURCE_EXHAUSTED (over a fair share).
    assert!(codes.keys().all(|c| c == "4" || c == "8"), "{codes:?}");
    let timed_out = codes.get("4").copied().unwrap_or(0);
    assert!(
        (1..=256).contains(&timed_out),
        "at most the per-peer share (256) admitted at once: {codes:?}"
    );
    assert_eq!(in_flight(&s), 0, "every slot came back");

    let served = good.finish().await.expect("good client during the attack");
    assert!(served > 0);
    assert_eq!(http_get(s.healthz, "/healthz").map(|r| r.0), Some(200));
    sign(&s, request("after", "default", KeyType::Ed25519))
        .await
        .expect("served after the attack");
    let metrics = s.metrics_text();
    assert!(
        metrics.contains("sentry_rs_requests_shed_total{reason=\"connection_in_flight\"}"),
        "{metrics}"
    );
    for p in pingers {
        p.abort();
    }
}

/// Reads frames until a GOAWAY (returns its error code and debug data) or end-of-file.
async fn goaway(
    io: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
) -> Option<(u32, Vec<u8>)> {
    while let Some((kind, _, _, payload)) = read_frame(io).await {
        if kind == GOAWAY && payload.len() >= 8 {
            let code = u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]);
            return Some((code, payload[8..].to_vec()));
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_frequent_pings_end_the_connection_as_grpc_go_does() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Sentry::start(tmp.path(), Opts::default());
    let mut io = tls_from(&s, ATTACK_SOURCE).await.unwrap();
    raw_h2_open(&mut io).await.unwrap();
    // The first PING is free; each one within MinTime (5 min, 2 h without a stream) is a strike;
    // the third strike ends the connection.
    for i in 0..4u8 {
        write_frame(&mut io, PING, 0, 0, &[i; 8]).await.unwrap();
    }
    let got = tokio::time::timeout(Duration::from_secs(30), goaway(&mut io))
        .await
        .expect("no GOAWAY after too many PINGs");
    assert_eq!(
        got,
        Some((0xb, b"too_many_pings".to_vec())),
        "ENHANCE_YOUR_CALM"
    );
    let mut rest = Vec::new();
    let end = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::io::AsyncReadExt::read_to_end(&mut io, &mut rest),
    )
    .await;
    assert!(end.is_ok(), "connection not closed after the GOAWAY");
    sign(&s, request("after", "default", KeyType::Ed25519))
        .await
        .expect("served after the PING flood");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_are_not_activity_for_the_idle_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Sentry::start(
        tmp.path(),
        Opts::default().args(&["--connection-idle-timeout", "3s"]),
    );
    let mut io = tls_from(&s, ATTACK_SOURCE).await.unwrap();
    raw_h2_open(&mut io).await.unwrap();
    // Two PINGs a second apart (one strike, well under the three that end a connection), then
    // silence: the connection has had no stream since it opened, so it is idle.
    for i in 0..2u8 {
        write_frame(&mut io, PING, 0, 0, &[i; 8]).await.unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let got = tokio::time::timeout(Duration::from_secs(30), goaway(&mut io))
        .await
        .expect("a connection kept busy only with PINGs was not closed as idle");
    assert_eq!(got, Some((0, b"max_idle".to_vec())), "GOAWAY(NO_ERROR)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_type_and_message_count_are_checked_as_grpc_go_does() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Sentry::start(tmp.path(), Opts::default());
    let mut h2 = h2_from(&s, ATTACK_SOURCE, None).await.unwrap();
    let good = grpc_message(&request("myapp", "default", KeyType::Ed25519));

    // Not gRPC: HTTP 415, INVALID_ARGUMENT, as gRPC-Go's early abort.
    for content_type in ["text/plain", "application/json", "application/grpcx"] {
        h2 = h2.ready().await.unwrap();
        let (response, mut body) = h2.send_request(sign_headers(content_type), false).unwrap();
        body.send_data(good.clone(), true).unwrap();
        let (status, code) = grpc_status(response).await.unwrap();
        assert_eq!(
            status,
            http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{content_type}"
        );
        assert_eq!(code.as_deref(), Some("3"), "{content_type}");
    }

    // Two messages on a unary call: INTERNAL (gRPC-Go's cardinality violation).
    let two = Bytes::from([good.as_ref(), good.as_ref()].concat());
    h2 = h2.ready().await.unwrap();
    let (response, mut body) = h2
        .send_request(sign_headers("application/grpc"), false)
        .unwrap();
    body.send_data(two, true).unwrap();
    let (status, code) = grpc_status(response).await.unwrap();
    assert_eq!(
        (status, code.as_deref()),
        (http::StatusCode::OK, Some("13"))
    );

    // The same connection still serves a proper call.
    h2 = h2.ready().await.unwrap();
    let (response, mut body) = h2
        .send_request(sign_headers("application/grpc+proto"), false)
        .unwrap();
    body.send_data(good, true).unwrap();
    let (status, code) = grpc_status(response).await.unwrap();
    assert_eq!((status, code.as_deref()), (http::StatusCode::OK, Some("0")));
    let metrics = s.metrics_text();
    assert_eq!(
        metric_sum(&metrics, "dapr_sentry_cert_sign_success_total"),
        1
    );
}
