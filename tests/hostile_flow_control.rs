//! Clients that never open their flow-control window (SETTINGS_INITIAL_WINDOW_SIZE = 0), at the
//! default limits: 1,000 connections × 128 SignCertificate calls, by the Go attacker in
//! tests/h2attack (its own process, so its connections do not starve the good client's runtime).
//! Responses hold their in-flight slots until written, so the fair shares shed the rest at once;
//! a response the peer does not read within the write timeout is reset (RST_STREAM CANCEL). The
//! server's resident memory stays under 256 MiB during the attack and comes back down after it,
//! while a good client keeps being served within its deadline and `/healthz` stays 200. The same
//! with `--jwt-enabled` and the most audiences a request may carry (bigger responses).

mod common;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::attack::*;
use common::*;
use sentry_core::bundle::KeyType;

const CONNECTIONS: usize = 1000;
const STREAMS: usize = 128;
/// The bound on resident memory while the attack runs.
const RSS_BOUND_MIB: u64 = 256;
/// Resident memory once the attack has gone may exceed what Sentry had before it by this much.
const RSS_LEFT_AFTER_MIB: u64 = 48;
/// A good request's deadline (a fresh connection and a call): generous, as the attacker's 1,000
/// TLS handshakes share two cores with Sentry (a debug build here) and the good client. Measured
/// on a loaded 2-core machine, three runs each: the slowest good request took 1.7 to 5.3 s (a
/// release build: 145 ms). The resident-memory bound is the hard assert.
const GOOD_DEADLINE_UNDER_ATTACK: Duration = Duration::from_secs(15);
/// The attacker's own bound on waiting for its calls to end.
const ATTACK_WAIT: &str = "150s";

/// What the attacker printed (tests/h2attack's JSON).
#[derive(Debug, serde::Deserialize)]
struct AttackResult {
    conns: usize,
    dial_errors: usize,
    sent: usize,
    ends: BTreeMap<String, usize>,
    first_error: Option<String>,
}

struct Outcome {
    attack: AttackResult,
    before_rss_mib: u64,
    peak_rss_mib: u64,
    after_rss_mib: u64,
}

async fn closed_windows(opts: Opts, req: sentry_proto::SignCertificateRequest) -> Outcome {
    allow_open_files(CONNECTIONS as u64 + 2048);
    let tmp = tempfile::tempdir().unwrap();
    let s = Sentry::start(tmp.path(), opts);
    let pid = s.child.id();
    let body = tmp.path().join("request.grpc");
    std::fs::write(&body, grpc_message(&req)).unwrap();
    // One call first, so the baseline includes a served request's allocations.
    sign(&s, req.clone())
        .await
        .expect("served before the attack");
    let before_rss_mib = rss_mib(pid);

    let good = GoodClient::with_deadline(&s, GOOD_DEADLINE_UNDER_ATTACK);
    let mut attacker = Command::new(go_tool("h2attack"))
        .arg(format!("-addr={}", s.grpc))
        .arg(format!(
            "-source={}",
            std::net::Ipv4Addr::from(ATTACK_SOURCE)
        ))
        .arg(format!("-conns={CONNECTIONS}"))
        .arg(format!("-streams={STREAMS}"))
        .arg(format!("-wait={ATTACK_WAIT}"))
        .arg("-body")
        .arg(&body)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start tests/h2attack");
    let started = Instant::now();
    let mut peak_rss_mib = 0;
    while attacker.try_wait().unwrap().is_none() {
        peak_rss_mib = peak_rss_mib.max(rss_mib(pid));
        assert!(
            started.elapsed() < Duration::from_secs(240),
            "the attacker did not finish"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let out = attacker.wait_with_output().unwrap();
    assert!(out.status.success(), "tests/h2attack failed");
    let attack: AttackResult = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!("attack: {attack:?}");
    eprintln!(
        "RSS before {before_rss_mib} MiB, peak during the attack {peak_rss_mib} MiB, \
         slowest good request {} ms",
        good.slowest_ms.load(std::sync::atomic::Ordering::Acquire)
    );
    let served = good.finish().await.expect("good client during the attack");
    assert!(served > 0, "no good request ran during the attack");
    assert_eq!(http_get(s.healthz, "/healthz").map(|r| r.0), Some(200));

    // The attack's connections are closed; the next good request is served and memory has come
    // back down.
    sign(&s, request("after", "default", KeyType::Ed25519))
        .await
        .expect("served after the attack");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after_rss_mib = rss_mib(pid);
    eprintln!("RSS after the attack {after_rss_mib} MiB");
    Outcome {
        attack,
        before_rss_mib,
        peak_rss_mib,
        after_rss_mib,
    }
}

fn check(o: &Outcome) {
    let a = &o.attack;
    assert_eq!(a.dial_errors, 0, "attack incomplete: {:?}", a.first_error);
    assert_eq!(a.conns, CONNECTIONS, "attack incomplete: {a:?}");
    assert!(
        a.sent >= CONNECTIONS * STREAMS * 9 / 10,
        "attack incomplete: {a:?}"
    );
    assert!(
        o.peak_rss_mib <= RSS_BOUND_MIB,
        "peak RSS {} MiB > {RSS_BOUND_MIB} MiB",
        o.peak_rss_mib
    );
    // Every call ends: shed at once (RESOURCE_EXHAUSTED, trailers only), or reset once the write
    // timeout passes.
    let reset = a.ends.get("CANCEL").copied().unwrap_or(0);
    assert!(reset > 0, "no unread response was reset: {a:?}");
    assert!(
        a.ends.keys().all(|c| c == "CANCEL" || c == "8"),
        "only resets and RESOURCE_EXHAUSTED: {a:?}"
    );
    assert_eq!(
        a.ends.values().sum::<usize>(),
        a.sent,
        "every call answered: {a:?}"
    );
    assert!(
        o.after_rss_mib <= o.before_rss_mib + RSS_LEFT_AFTER_MIB,
        "memory not returned: {} MiB after the attack, {} MiB before (peak {} MiB)",
        o.after_rss_mib,
        o.before_rss_mib,
        o.peak_rss_mib
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_windows_cannot_pile_up_responses() {
    let o = closed_windows(
        Opts::default(),
        request("attacker", "default", KeyType::Ed25519),
    )
    .await;
    check(&o);
}

/// With JWT-SVIDs each response carries one RS256 token per audience: the most audiences a
/// request may ask for (7 and the trust domain) make every queued response several times bigger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_windows_cannot_pile_up_jwt_responses() {
    let mut req = request("attacker", "default", KeyType::Ed25519);
    req.jwt_audiences = (0..7).map(|i| format!("audience-{i}")).collect();
    let o = closed_windows(Opts::default().arg("--jwt-enabled"), req).await;
    check(&o);
}
