//! Slowloris-style clients: hundreds of TCP connections to the gRPC port that send nothing, or
//! dribble a TLS ClientHello one byte at a time. While they are open, /healthz answers and a
//! normal client is served; the server closes every one of them after its handshake timeout.
//! Clients that finish the handshake and then fall silent are closed after the idle timeout, so
//! they cannot hold every connection slot either.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use sentry_core::bundle::KeyType;

const SILENT: usize = 400;
const DRIBBLERS: usize = 150;
const HANDSHAKE_TIMEOUT: &str = "30s";
/// How long the server may take to accept them all; well inside [`HANDSHAKE_TIMEOUT`].
const HOLD_WAIT: Duration = Duration::from_secs(20);

/// The start of a TLS 1.2 ClientHello record announcing 512 bytes that never all arrive.
const HELLO_PREFIX: [u8; 11] = [
    0x16, 0x03, 0x01, 0x02, 0x00, // handshake record, 512 bytes
    0x01, 0x00, 0x01, 0xfc, // ClientHello, 508 bytes
    0x03, 0x03, // client version TLS 1.2
];

/// Accepted connections on local `port` that process `pid` holds open: its socket descriptors
/// whose inode /proc/net/tcp{,6} lists with that local port, not listening. (Counting every
/// descriptor would also count whatever else the server has open at the moment, such as the
/// harness's health-check connection.)
fn held_connections(pid: u32, port: u16) -> usize {
    let mut inodes = std::collections::HashSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state), Some(inode)) = (f.get(1), f.get(3), f.get(9)) else {
                continue;
            };
            let local_port = local
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if local_port == Some(port) && *state != "0A" {
                inodes.insert(format!("socket:[{inode}]"));
            }
        }
    }
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .filter(|l| inodes.contains(l.to_string_lossy().as_ref()))
                .count()
        })
        .unwrap_or(0)
}

/// True once the peer has closed the connection (EOF, reset, or a failed write).
fn closed_by_server(conn: &mut TcpStream, next_byte: u8) -> bool {
    let mut buf = [0u8; 64];
    match conn.read(&mut buf) {
        Ok(0) => return true,
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        Err(_) => return true,
    }
    conn.write_all(&[next_byte]).is_err()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_dribbling_clients_do_not_exhaust_sentry() {
    let tmp = tempfile::tempdir().unwrap();
    // A handshake timeout longer than the wait below for the server to hold every connection,
    // so a slow machine gets time to accept them all and none is closed before it is counted.
    let s = Sentry::start(
        tmp.path(),
        Opts::default().args(&["--tls-handshake-timeout", HANDSHAKE_TIMEOUT]),
    );
    let pid = s.child.id();

    let opened_at = Instant::now();
    let mut silent: Vec<TcpStream> = (0..SILENT)
        .map(|_| TcpStream::connect(s.grpc).unwrap())
        .collect();
    let mut dribblers: Vec<TcpStream> = (0..DRIBBLERS)
        .map(|_| {
            let mut c = TcpStream::connect(s.grpc).unwrap();
            c.write_all(&HELLO_PREFIX).unwrap();
            c.set_nonblocking(true).unwrap();
            c
        })
        .collect();

    // The server has accepted them all and holds them (a bounded wait, inside the handshake
    // timeout: failing to get there fails the test).
    loop {
        let held = held_connections(pid, s.grpc.port());
        if held >= SILENT + DRIBBLERS {
            break;
        }
        assert!(
            opened_at.elapsed() < HOLD_WAIT,
            "server holds only {held} of {} connections after {HOLD_WAIT:?}",
            SILENT + DRIBBLERS
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // Meanwhile Sentry is healthy and serves a normal client.
    assert_eq!(http_get(s.healthz, "/healthz").map(|(c, _)| c), Some(200));
    let resp = sign(&s, request("myapp", "default", KeyType::Ed25519))
        .await
        .expect("a normal client is served while slowloris clients are connected");
    assert_eq!(pem_certs(&resp.workload_certificate).len(), 2);

    // Keep dribbling; the handshake timeout must close every connection (bounded wait: this is
    // a hang detector, not a timing assertion).
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut open = [true; DRIBBLERS];
    let mut next = 0u8;
    while open.iter().any(|o| *o) {
        assert!(
            Instant::now() < deadline,
            "{} dribbling connections still open after 90 s",
            open.iter().filter(|o| **o).count()
        );
        for (conn, is_open) in dribblers.iter_mut().zip(open.iter_mut()) {
            if *is_open && closed_by_server(conn, next) {
                *is_open = false;
            }
        }
        next = next.wrapping_add(1);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    for conn in &mut silent {
        conn.set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let mut buf = [0u8; 16];
        match conn.read(&mut buf) {
            Ok(0) => {}
            Err(e) if !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            other => panic!("silent connection not closed by the server: {other:?}"),
        }
    }

    // Still healthy, still serving, and only the good request was counted.
    assert_eq!(http_get(s.healthz, "/healthz").map(|(c, _)| c), Some(200));
    sign(&s, request("myapp", "default", KeyType::EcdsaP256))
        .await
        .unwrap();
    let metrics = s.metrics_text();
    assert_eq!(
        metric_sum(&metrics, "dapr_sentry_cert_sign_success_total"),
        2
    );
    assert_eq!(
        metric_sum(&metrics, "dapr_sentry_cert_sign_request_received_total"),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_silent_after_the_handshake_cannot_hold_every_slot() {
    const SLOTS: usize = 4;
    let tmp = tempfile::tempdir().unwrap();
    let slots = SLOTS.to_string();
    let s = Sentry::start(
        tmp.path(),
        Opts::default().args(&[
            "--max-connections",
            &slots,
            "--connection-idle-timeout",
            "2s",
        ]),
    );
    // Every slot taken by a client that completed TLS and then sends nothing.
    let mut idle = Vec::new();
    for _ in 0..SLOTS {
        idle.push(tls_connect(s.grpc).await.0);
    }
    // A normal client waits in the backlog until an idle connection is closed, then is served
    // (without the idle timeout it would wait for ever; the bound only detects a hang).
    let resp = tokio::time::timeout(
        Duration::from_secs(60),
        sign(&s, request("myapp", "default", KeyType::Ed25519)),
    )
    .await
    .expect("a normal client is served once idle connections are closed")
    .unwrap();
    assert_eq!(pem_certs(&resp.workload_certificate).len(), 2);
    // Each idle connection was ended by the server (end-of-file, close_notify or reset).
    for mut conn in idle {
        // Whatever the server sent (its HTTP/2 SETTINGS) is read; then the stream must end.
        let mut rest = Vec::new();
        let read = tokio::time::timeout(
            Duration::from_secs(60),
            tokio::io::AsyncReadExt::read_to_end(&mut conn, &mut rest),
        )
        .await;
        assert!(read.is_ok(), "idle connection not closed by the server");
    }
    assert_eq!(http_get(s.healthz, "/healthz").map(|(c, _)| c), Some(200));
}
