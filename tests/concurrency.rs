//! Many sidecars at once: 1,000 concurrent requests over 50 TLS connections all succeed, and every
//! certificate has its own serial number.
//!
//! The 1,000 sidecars here share one source address, 127.0.0.1, where a cluster's have one each; by
//! default one address may hold only a quarter of the in-flight bound (`--max-in-flight-per-peer`,
//! tested in `hostile_streams.rs`), and whether 256 of these are in flight at once depends on how fast the
//! machine's client outruns its server. So this test lets the one address hold them all.

mod common;

use std::collections::HashSet;

use common::*;
use sentry_core::bundle::KeyType;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_requests_all_succeed_with_distinct_serials() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Sentry::start(
        tmp.path(),
        Opts::default().args(&["--max-in-flight-per-peer", "1000"]),
    );
    let mut clients = Vec::new();
    for _ in 0..50 {
        clients.push(s.client().await);
    }
    // Build the CSRs first so the requests really overlap on the server.
    let requests: Vec<_> = (0..1000)
        .map(|i| {
            request(
                &format!("app-{i}"),
                "default",
                if i % 2 == 0 {
                    KeyType::Ed25519
                } else {
                    KeyType::EcdsaP256
                },
            )
        })
        .collect();
    let mut tasks = Vec::new();
    for (i, req) in requests.into_iter().enumerate() {
        let mut c = clients[i % clients.len()].clone();
        tasks.push(tokio::spawn(async move {
            c.sign_certificate(req).await.map(|r| r.into_inner())
        }));
    }
    let mut serials = HashSet::new();
    for t in tasks {
        let resp = t.await.unwrap().expect("every request succeeds");
        let leaf = pem_certs(&resp.workload_certificate).remove(0);
        let (_, cert) = x509_parser::parse_x509_certificate(&leaf).unwrap();
        assert!(
            serials.insert(cert.raw_serial().to_vec()),
            "duplicate serial"
        );
    }
    assert_eq!(serials.len(), 1000);
    assert!(s
        .metrics_text()
        .contains("dapr_sentry_cert_sign_success_total 1000"));
}
