//! Clients that never open their flow-control window (SETTINGS_INITIAL_WINDOW_SIZE = 0): 200
//! connections × 128 SignCertificate calls at the default limits. Responses hold their in-flight
//! slots until written, so the fair shares shed the rest at once; a response the peer does not read within the write timeout is reset
//! (RST_STREAM CANCEL); the server's resident memory stays under 256 MiB during the attack and
//! comes down after it, while a good client keeps being served.

mod common;

use std::time::{Duration, Instant};

use common::attack::*;
use common::*;
use futures::StreamExt;
use sentry::bundle::KeyType;

const STREAMS: usize = 128;
const RSS_BOUND_MIB: u64 = 256;

struct Outcome {
    codes: std::collections::BTreeMap<String, usize>,
    peak_rss_mib: u64,
    after_rss_mib: u64,
}

/// One attacking connection: 128 calls, responses never read; returns the pending responses.
async fn attacker(s: &Sentry, body: prost::bytes::Bytes) -> Vec<h2::client::ResponseFuture> {
    let Ok(mut h2) = h2_from(s, ATTACK_SOURCE, Some(0)).await else {
        return Vec::new();
    };
    let mut responses = Vec::with_capacity(STREAMS);
    for _ in 0..STREAMS {
        let Ok(ready) = h2.ready().await else { break };
        h2 = ready;
        let Ok((response, mut send)) = h2.send_request(sign_headers("application/grpc"), false)
        else {
            break;
        };
        let _ = send.send_data(body.clone(), true);
        responses.push(response);
    }
    responses
}

async fn closed_windows(connections: usize, req: sentry::pb::SignCertificateRequest) -> Outcome {
    allow_open_files(connections as u64 + 2048);
    let tmp = tempfile::tempdir().unwrap();
    let s = Sentry::start(tmp.path(), Opts::default());
    let pid = s.child.id();
    let good = GoodClient::with_deadline(&s, GOOD_DEADLINE_UNDER_LOAD);
    let body = grpc_message(&req);

    let sampler = {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (stop2, peak2) = (stop.clone(), peak.clone());
        let task = tokio::spawn(async move {
            while !stop2.load(std::sync::atomic::Ordering::Acquire) {
                peak2.fetch_max(rss_mib(pid), std::sync::atomic::Ordering::AcqRel);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        (stop, peak, task)
    };

    let started = Instant::now();
    let responses: Vec<Vec<_>> = futures::stream::iter(0..connections)
        .map(|_| attacker(&s, body.clone()))
        .buffer_unordered(8)
        .collect()
        .await;
    let sent: usize = responses.iter().map(Vec::len).sum();
    eprintln!(
        "{sent} calls on {} connections in {:?}",
        responses.len(),
        started.elapsed()
    );
    assert!(
        sent >= connections * STREAMS * 9 / 10,
        "attack incomplete: {sent} calls"
    );

    // Every call ends: shed at once (trailers only), or reset once the write timeout passes.
    let mut codes = std::collections::BTreeMap::new();
    let all = futures::stream::iter(responses.into_iter().flatten())
        .map(|r| async move {
            let reason = |e: h2::Error| e.reason().map_or(format!("{e}"), |r| format!("{r:?}"));
            match r.await {
                Ok(resp) => match resp.headers().get("grpc-status") {
                    Some(code) => code.to_str().unwrap_or("?").to_owned(),
                    // Admitted: the body never flows (window 0), so it must end in a reset.
                    None => match resp.into_body().data().await {
                        Some(Err(e)) => reason(e),
                        other => format!("body {:?}", other.map(|d| d.map(|b| b.len()))),
                    },
                },
                Err(e) => reason(e),
            }
        })
        .buffer_unordered(4096)
        .collect::<Vec<_>>();
    for code in tokio::time::timeout(Duration::from_secs(120), all)
        .await
        .expect("attack calls not answered")
    {
        *codes.entry(code).or_insert(0) += 1;
    }
    eprintln!("answers {codes:?} after {:?}", started.elapsed());

    sampler.0.store(true, std::sync::atomic::Ordering::Release);
    sampler.2.await.unwrap();
    let peak_rss_mib = sampler.1.load(std::sync::atomic::Ordering::Acquire);
    eprintln!("peak RSS during the attack {peak_rss_mib} MiB");
    let served = good.finish().await.expect("good client during the attack");
    assert!(served > 0);
    assert_eq!(http_get(s.healthz, "/healthz").map(|r| r.0), Some(200));
    // The attack's connections are gone (their tasks ended with the last response); the next
    // good request is served and memory has come back down.
    sign(&s, request("after", "default", KeyType::Ed25519))
        .await
        .expect("served after the attack");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after_rss_mib = rss_mib(pid);
    eprintln!("peak RSS {peak_rss_mib} MiB, after {after_rss_mib} MiB");
    Outcome {
        codes,
        peak_rss_mib,
        after_rss_mib,
    }
}

fn check(o: &Outcome) {
    assert!(
        o.peak_rss_mib <= RSS_BOUND_MIB,
        "peak RSS {} MiB > {RSS_BOUND_MIB} MiB",
        o.peak_rss_mib
    );
    let reset = o.codes.get("CANCEL").copied().unwrap_or(0);
    assert!(reset > 0, "no unread response was reset: {:?}", o.codes);
    assert!(
        o.codes.keys().all(|c| c == "CANCEL" || c == "8"),
        "only resets and RESOURCE_EXHAUSTED: {:?}",
        o.codes
    );
    assert!(
        o.after_rss_mib <= o.peak_rss_mib.max(64),
        "memory not returned: {} MiB after, peak {} MiB",
        o.after_rss_mib,
        o.peak_rss_mib
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_windows_cannot_pile_up_responses() {
    let o = closed_windows(200, request("attacker", "default", KeyType::Ed25519)).await;
    check(&o);
}
