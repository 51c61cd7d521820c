//! Attacks on the listeners, from raw sockets, while a good client keeps requesting:
//!
//! - 1,100 partial requests each to `/healthz`, metrics and OIDC discovery held open from one
//!   address, with Sentry's open-files limit at 1,024: Sentry's descriptors stay bounded, the
//!   gRPC listener keeps accepting and `/healthz` keeps answering the prober's address;
//! - 2,000 hand-made TLS ClientHellos with a 16,000-byte SNI: the log grows by a bounded
//!   number of bytes (no line quotes the SNI) and the failures are reported as a count.
//!
//! Figures (descriptors, log bytes) are printed for the record; bounds, not timings, are asserted.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use common::hostile::*;
use common::*;
use sentry_core::bundle::KeyType;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Where the attacks come from: not the prober's 127.0.0.1.
const ATTACKER: [u8; 4] = [127, 0, 0, 2];

async fn connect_from(src: [u8; 4], to: SocketAddr) -> std::io::Result<TcpStream> {
    let sock = TcpSocket::new_v4()?;
    sock.bind(SocketAddr::new(IpAddr::from(src), 0))?;
    sock.connect(to).await
}

/// Opens `n` connections to `to`, each sending the start of a request and never its end.
async fn partial_requests(to: SocketAddr, path: &str, n: usize) -> Vec<TcpStream> {
    let mut held = Vec::with_capacity(n);
    let mut refused_in_a_row = 0;
    for _ in 0..n {
        let Ok(Ok(mut c)) =
            tokio::time::timeout(Duration::from_millis(500), connect_from(ATTACKER, to)).await
        else {
            // The backlog is full: the server no longer accepts (keeps the attack bounded).
            refused_in_a_row += 1;
            if refused_in_a_row == 10 {
                break;
            }
            continue;
        };
        refused_in_a_row = 0;
        let _ = c
            .write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n").as_bytes())
            .await;
        held.push(c);
    }
    held
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_http_requests_cannot_take_the_descriptors() {
    let tmp = tempfile::tempdir().unwrap();
    let oidc_port = free_port();
    let oidc = SocketAddr::from(([127, 0, 0, 1], oidc_port));
    let opts = Opts::default()
        .nofile(1024)
        .args(&[
            "--jwt-enabled",
            "--oidc-enabled",
            "--oidc-server-tls-enabled=false",
        ])
        .arg("--oidc-server-listen-address=127.0.0.1")
        .arg(&format!("--oidc-server-listen-port={oidc_port}"));
    let s = Sentry::start(tmp.path(), opts);
    let pid = s.child.id();
    let base = open_fds(pid);

    let attack = async {
        let mut held = partial_requests(s.healthz, "/healthz", 1100).await;
        held.extend(partial_requests(s.metrics, "/metrics", 1100).await);
        held.extend(partial_requests(oidc, "/.well-known/openid-configuration", 1100).await);
        let opened = held.len();
        // Held while the good client runs.
        tokio::time::sleep(Duration::from_secs(6)).await;
        (opened, held)
    };
    let (run, (opened, held)) = tokio::join!(keep_requesting(&s, Duration::from_secs(8)), attack);
    let during = open_fds(pid);
    eprintln!(
        "partial requests: {opened} opened; Sentry fds base {base}, max {} while attacked, {during} at the end",
        run.max_fds
    );
    assert_all_good(&run, "partial HTTP requests");
    assert!(
        run.max_fds.max(during) <= base + 200,
        "Sentry held {} descriptors (base {base})",
        run.max_fds.max(during)
    );
    drop(held);

    let resp = sign(&s, request("after", "default", KeyType::Ed25519))
        .await
        .expect("the next good request succeeds");
    assert_eq!(pem_certs(&resp.workload_certificate).len(), 2);
    assert_eq!(http_get(s.metrics, "/metrics").map(|(c, _)| c), Some(200));
    assert_eq!(
        http_get(oidc, "/.well-known/openid-configuration").map(|(c, _)| c),
        Some(200)
    );
    let log = s.log_text();
    assert!(
        !log.contains("Too many open files"),
        "Sentry ran out of descriptors:\n{log}"
    );
}

/// A TLS 1.3 ClientHello (one record) whose SNI is `sni_len` bytes: a label far beyond 63
/// characters, so not a legal DNS name.
fn client_hello_with_sni(sni_len: usize) -> Vec<u8> {
    let u16be = |n: usize| (n as u16).to_be_bytes();
    let name = vec![b'a'; sni_len];
    let mut sni_list = vec![0u8];
    sni_list.extend(u16be(name.len()));
    sni_list.extend(&name);
    let mut sni_ext = u16be(sni_list.len()).to_vec();
    sni_ext.extend(sni_list);
    let mut exts = vec![0, 0];
    exts.extend(u16be(sni_ext.len()));
    exts.extend(sni_ext);
    // supported_versions: TLS 1.3.
    exts.extend([0x00, 0x2b, 0x00, 0x03, 0x02, 0x03, 0x04]);
    let mut body = vec![0x03, 0x03];
    body.extend([7u8; 32]);
    body.push(0);
    body.extend([0x00, 0x02, 0x13, 0x01]);
    body.extend([0x01, 0x00]);
    body.extend(u16be(exts.len()));
    body.extend(exts);
    let mut hs = vec![0x01, 0];
    hs.extend(u16be(body.len()));
    hs.extend(body);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend(u16be(hs.len()));
    record.extend(hs);
    record
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_sni_does_not_amplify_the_log() {
    const HELLOS: usize = 2000;
    const SNI: usize = 16_000;
    let tmp = tempfile::tempdir().unwrap();
    let s = Sentry::start(tmp.path(), Opts::default().default_log());
    let hello = client_hello_with_sni(SNI);
    assert!(hello.len() - 5 <= 16 * 1024, "one TLS record");
    let before = log_bytes(&s);

    let grpc = s.grpc;
    let attack = async move {
        let mut sent = 0;
        for _ in 0..HELLOS {
            let Ok(Ok(mut c)) =
                tokio::time::timeout(Duration::from_secs(2), connect_from(ATTACKER, grpc)).await
            else {
                continue;
            };
            if c.write_all(&hello).await.is_ok() {
                sent += 1;
            }
            // Whatever the server answers (an alert, or its ServerHello), then hang up.
            let mut buf = [0u8; 512];
            let _ = tokio::time::timeout(Duration::from_millis(200), c.read(&mut buf)).await;
        }
        sent
    };
    let (run, sent) = tokio::join!(keep_requesting(&s, Duration::from_secs(4)), attack);
    assert_all_good(&run, "oversized SNI");
    let grown = log_bytes(&s) - before;
    eprintln!(
        "{sent} ClientHellos with a {SNI}-byte SNI: log grew by {grown} bytes ({} good requests)",
        run.signed
    );
    assert!(sent >= HELLOS / 2, "only {sent} ClientHellos sent");
    assert!(
        grown < 64 * 1024,
        "log grew by {grown} bytes for {sent} ClientHellos"
    );
    assert!(
        s.log_text().lines().all(|l| l.len() < 1024),
        "a log line carries attacker-sized text"
    );

    // The failures are summarised: one line per interval with their count.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut counted = 0;
    while Instant::now() < deadline {
        counted = summed_counts(&s.log_text(), "TLS handshakes failed");
        if counted >= sent as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        counted >= sent as u64,
        "summaries count {counted} of {sent} failed handshakes:\n{}",
        s.log_text()
    );
    let resp = sign(&s, request("after", "default", KeyType::Ed25519))
        .await
        .expect("the next good request succeeds");
    assert_eq!(pem_certs(&resp.workload_certificate).len(), 2);
}
