//! Rotation without outages: a bundle replaced on disk is served without a restart (a bad one is
//! refused), the issuer renews itself, a root rotation under continuous load fails no request and
//! no mutual-TLS handshake, and a SIGKILL in any phase resumes cleanly.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sentry_core::bundle::KeyType;

fn served_issuer(resp: &sentry_proto::SignCertificateResponse) -> Vec<u8> {
    pem_certs(&resp.workload_certificate).remove(1)
}

fn file_issuer(dir: &Path) -> Vec<u8> {
    pem_certs(&std::fs::read(dir.join("issuer.crt")).unwrap()).remove(0)
}

fn ca(args: &[&str], creds: &Path) -> std::process::Output {
    Command::new(SENTRY)
        .arg("ca")
        .args(args)
        .arg("--issuer-credentials")
        .arg(creds)
        .args(["--namespace", "default"])
        .output()
        .unwrap()
}

fn journal_phase(creds: &Path) -> Option<String> {
    let text = std::fs::read(creds.join("rotation.json")).ok()?;
    let j = sentry_runtime::rotation::Journal::parse(&text).ok()?;
    Some(format!("{:?}", j.phase))
}

async fn wait_until<F: FnMut() -> bool>(limit: Duration, mut f: F) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    f()
}

#[tokio::test]
async fn replaced_issuer_is_served_without_restart_and_a_bad_one_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Sentry::start(tmp.path(), Opts::default());
    let creds = s.creds();
    let before = served_issuer(&sign(&s, request("a", "b", KeyType::Ed25519)).await.unwrap());
    // A new issuer under the same root, from the root key Sentry keeps.
    let out = ca(&["renew"], &creds);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let new_issuer = file_issuer(&creds);
    assert_ne!(new_issuer, before);
    let started = Instant::now();
    loop {
        let resp = sign(&s, request("a", "b", KeyType::Ed25519)).await.unwrap();
        if served_issuer(&resp) == new_issuer {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "new issuer not served within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The serving certificate moved to the new issuer too.
    let chain = server_chain(s.grpc).await;
    assert_eq!(chain[1].as_ref(), new_issuer.as_slice());

    // Now an invalid issuer: a key that does not match.
    let other = tempfile::tempdir().unwrap();
    let o = Sentry::start(other.path(), Opts::default());
    std::fs::copy(o.creds().join("issuer.key"), creds.join("issuer.key")).unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || s
            .metrics_text()
            .contains("dapr_sentry_issuercert_reload_failed_total 1"))
        .await
    );
    let resp = sign(&s, request("a", "b", KeyType::Ed25519)).await.unwrap();
    assert_eq!(
        served_issuer(&resp),
        new_issuer,
        "the last good issuer keeps serving"
    );
    assert!(s.log_text().contains("Refusing the changed trust bundle"));
    assert_eq!(
        s.log_text()
            .matches("Refusing the changed trust bundle")
            .count(),
        1,
        "logged once"
    );
}

#[tokio::test]
async fn issuer_with_a_one_minute_life_renews_itself() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Sentry::start(
        tmp.path(),
        Opts::default().mtls("1h", "0s").args(&[
            "--issuer-ttl",
            "1m",
            "--renew-when-remaining",
            "0.8",
            "--bundle-check-interval",
            "200ms",
        ]),
    );
    let creds = s.creds();
    let anchors = s.anchors();
    let first = file_issuer(&creds);
    let leaf = sign(&s, request("a", "b", KeyType::Ed25519)).await.unwrap();
    assert_eq!(served_issuer(&leaf), first);
    assert!(
        wait_until(Duration::from_secs(40), || file_issuer(&creds) != first).await,
        "issuer not renewed"
    );
    let renewed = file_issuer(&creds);
    assert!(wait_until(Duration::from_secs(5), || journal_phase(&creds).is_none()).await);
    assert_eq!(s.anchors(), anchors, "same root");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let resp = sign(&s, request("a", "b", KeyType::Ed25519)).await.unwrap();
        if served_issuer(&resp) == renewed {
            let leaf_der = pem_certs(&resp.workload_certificate).remove(0);
            let (_, leaf) = x509_parser::parse_x509_certificate(&leaf_der).unwrap();
            let (_, iss) = x509_parser::parse_x509_certificate(&renewed).unwrap();
            assert!(
                leaf.validity().not_after <= iss.validity().not_after,
                "leaf capped at the 1-minute issuer"
            );
            break;
        }
        assert!(Instant::now() < deadline, "renewed issuer not served");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A simulated sidecar: its key, certificate chain and the anchors of its last response.
struct Sidecar {
    id: String,
    key: rcgen::KeyPair,
    chain: Vec<CertificateDer<'static>>,
    anchors: Vec<u8>,
    renew_at: Instant,
}

async fn fetch(s: &Sentry, id: &str, anchors: &[u8]) -> Result<Sidecar, String> {
    let (key, csr) = sentry_client::new_csr(KeyType::Ed25519).map_err(|e| e.to_string())?;
    let tls = Arc::new(
        sentry_client::tls_config(anchors, "spiffe://localhost/ns/default/dapr-sentry")
            .map_err(|e| e.to_string())?,
    );
    let mut c = sentry_client::connect(s.grpc, tls)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let req = sentry_proto::SignCertificateRequest {
        id: id.into(),
        namespace: "default".into(),
        certificate_signing_request: csr.into_bytes(),
        ..Default::default()
    };
    let resp = c
        .sign_certificate(req)
        .await
        .map_err(|e| format!("sign: {e}"))?
        .into_inner();
    let chain: Vec<CertificateDer<'static>> = pem_certs(&resp.workload_certificate)
        .into_iter()
        .map(CertificateDer::from)
        .collect();
    let (_, leaf) = x509_parser::parse_x509_certificate(&chain[0]).map_err(|e| e.to_string())?;
    let nb = leaf.validity().not_before.timestamp();
    let na = leaf.validity().not_after.timestamp();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let half = (nb + (na - nb) / 2 - now).max(0) as u64;
    Ok(Sidecar {
        id: id.into(),
        key,
        chain,
        anchors: resp.trust_chain_certificates[0].clone(),
        renew_at: Instant::now() + Duration::from_secs(half),
    })
}

/// Mutual TLS between two sidecars, each trusting only the anchors it last received (as daprd).
async fn mtls(server: &Sidecar, client: &Sidecar) -> Result<(), String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for der in pem_certs(&server.anchors) {
        roots
            .add(CertificateDer::from(der))
            .map_err(|e| e.to_string())?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| e.to_string())?;
    let key =
        |k: &rcgen::KeyPair| PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(k.serialize_der()));
    let server_cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_single_cert(server.chain.clone(), key(&server.key))
        .map_err(|e| e.to_string())?;
    let server_id = format!("spiffe://public/ns/default/{}", server.id);
    let peer_verifier = sentry_client::SpiffeServerVerifier::new(&client.anchors, &server_id)?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let client_cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(peer_verifier))
        .with_client_auth_cert(client.chain.clone(), key(&client.key))
        .map_err(|e| e.to_string())?;
    let (a, b) = tokio::io::duplex(64 * 1024);
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_cfg));
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_cfg));
    let name = rustls_pki_types::ServerName::try_from("peer").unwrap();
    let (srv, cli) = tokio::join!(acceptor.accept(a), connector.connect(name, b));
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut srv, mut cli) = (
        srv.map_err(|e| format!("server side: {e}"))?,
        cli.map_err(|e| format!("client side: {e}"))?,
    );
    cli.write_all(b"ping").await.map_err(|e| e.to_string())?;
    let mut buf = [0u8; 4];
    srv.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_rotation_under_continuous_load_fails_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Sentry::start(
        tmp.path(),
        Opts::default()
            .mtls("4s", "1s")
            .args(&["--bundle-check-interval", "200ms"]),
    );
    let creds = s.creds();
    let old_anchors = s.anchors();
    let mut sidecars = Vec::new();
    for i in 0..4 {
        sidecars.push(fetch(&s, &format!("app-{i}"), &old_anchors).await.unwrap());
    }
    let out = ca(&["renew", "--root"], &creds);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (mut signs, mut handshakes, mut failures) = (0, 0, Vec::new());
    let mut phases = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut done_at = None;
    while done_at.is_none_or(|t: Instant| t.elapsed() < Duration::from_secs(4)) {
        assert!(
            Instant::now() < deadline,
            "rotation did not finish; phases seen {phases:?}\n{}",
            s.log_text()
        );
        if let Some(p) = journal_phase(&creds) {
            phases.insert(p);
        } else if done_at.is_none()
            && s.anchors() != old_anchors
            && pem_certs(&s.anchors()).len() == 1
        {
            done_at = Some(Instant::now());
        }
        for sc in sidecars.iter_mut() {
            if Instant::now() >= sc.renew_at {
                match fetch(&s, &sc.id, &sc.anchors).await {
                    Ok(n) => *sc = n,
                    Err(e) => failures.push(format!("renew {}: {e}", sc.id)),
                }
                signs += 1;
            }
        }
        for i in 0..sidecars.len() {
            let j = (i + 1) % sidecars.len();
            if let Err(e) = mtls(&sidecars[i], &sidecars[j]).await {
                failures.push(format!(
                    "mtls {} -> {}: {e}",
                    sidecars[j].id, sidecars[i].id
                ));
            }
            handshakes += 1;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        failures.is_empty(),
        "{} failures of {signs} renewals and {handshakes} handshakes: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    for p in ["Published", "Active"] {
        assert!(phases.contains(p), "phase {p} not seen: {phases:?}");
    }
    assert!(
        signs > 10 && handshakes > 100,
        "load too light: {signs} renewals, {handshakes} handshakes"
    );
    // Everything now chains to the new root only.
    let new_anchors = s.anchors();
    let sc = fetch(&s, "after", &new_anchors).await.unwrap();
    assert_eq!(sc.anchors, new_anchors);
    assert!(
        std::fs::read(creds.join("root.key")).is_ok(),
        "the new root key is kept"
    );
}

#[tokio::test]
async fn sigkill_in_every_phase_resumes_and_finishes() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = Opts::default()
        .mtls("3s", "1s")
        .args(&["--bundle-check-interval", "1s"]);
    let mut s = Sentry::start(tmp.path(), opts.clone());
    let creds = s.creds();
    let old_anchors = s.anchors();
    let out = ca(&["renew", "--root"], &creds);
    assert!(out.status.success());
    let mut killed = Vec::new();
    for target in ["Prepared", "Published", "Activating", "Active", "Retiring"] {
        // Wait for the phase (or a later one: a short phase may pass between polls).
        let order = ["Prepared", "Published", "Activating", "Active", "Retiring"];
        let idx = |p: &str| order.iter().position(|o| *o == p);
        let mut seen = None;
        let ok = wait_until(Duration::from_secs(30), || {
            seen = journal_phase(&creds);
            seen.as_deref().and_then(idx) >= idx(target) || seen.is_none()
        })
        .await;
        assert!(ok, "phase {target} never reached");
        let Some(phase) = seen else { break };
        if killed.last() == Some(&phase) {
            continue;
        }
        let _ = s.child.kill();
        let _ = s.child.wait();
        killed.push(phase.clone());
        if phase == "Activating" {
            // Simulate a crash between the two renames of the issuer update.
            let j = sentry_runtime::rotation::Journal::parse(
                &std::fs::read(creds.join("rotation.json")).unwrap(),
            )
            .unwrap();
            std::fs::write(creds.join("issuer.key"), j.next_issuer_key.as_bytes()).unwrap();
        }
        // Whatever the phase, the stored bundle stays usable: restart and sign.
        s = Sentry::start(tmp.path(), opts.clone());
        let resp = sign(&s, request("a", "b", KeyType::Ed25519)).await.unwrap();
        assert_eq!(
            resp.trust_chain_certificates[0],
            std::fs::read(creds.join("ca.crt")).unwrap()
        );
        let out = ca(&["check"], &creds);
        assert!(
            out.status.success(),
            "after kill in {phase}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(killed.len() >= 3, "killed in {killed:?}");
    assert!(
        wait_until(Duration::from_secs(30), || journal_phase(&creds).is_none()).await,
        "rotation did not finish"
    );
    assert!(
        wait_until(Duration::from_secs(10), || pem_certs(&s.anchors()).len()
            == 1
            && s.anchors() != old_anchors)
        .await
    );
    let out = ca(&["check"], &creds);
    assert!(String::from_utf8_lossy(&out.stdout).contains("root key: held by Sentry"));
}
