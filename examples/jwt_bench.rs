//! JWT signing throughput, per algorithm, on one thread (not a test; run it in release):
//!
//! ```sh
//! taskset -c 1 cargo run --release --example jwt_bench
//! ```
//!
//! With `-- --e2e ADDR CA_FILE [SECONDS]` it instead drives `SignCertificate` end to end against a
//! running `sentry --jwt-enabled` (one TLS connection, 16 requests in flight, Ed25519 CSRs).

use std::sync::Arc;
use std::time::{Duration, Instant};

use sentry_core::bundle::jwt::{generate_jwt, JwtKeySettings};
use sentry_core::bundle::KeyType;
use sentry_core::ca::jwt::{JwtIssuer, JwtSettings};
use sentry_core::jose::Algorithm;
use sentry_core::spiffe::{SpiffeId, TrustDomain};
use sentry_proto::SignCertificateRequest;

const RUN: Duration = Duration::from_secs(2);

fn rate(mut f: impl FnMut()) -> f64 {
    for _ in 0..20 {
        f();
    }
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < RUN {
        for _ in 0..10 {
            f();
        }
        n += 10;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn micro() {
    let id = SpiffeId::new(TrustDomain::public(), "default", "myapp").expect("id");
    let extra = vec!["api".to_owned(), "db".to_owned()];
    println!(
        "{:<6} {:>14} {:>22} {:>26}",
        "alg", "JWS sign/s", "issue(td only)/s", "issue(td+2 audiences)/s"
    );
    for alg in [
        Algorithm::RS256,
        Algorithm::PS256,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::ES512,
        Algorithm::EdDSA,
    ] {
        let bundle = generate_jwt(&JwtKeySettings {
            algorithm: alg,
            key_id: None,
        })
        .expect("key");
        let issuer = JwtIssuer::new(
            &bundle,
            JwtSettings {
                issuer: None,
                ttl: Duration::from_secs(86400),
                allowed_clock_skew: Duration::from_secs(900),
            },
        );
        let msg = [0x5au8; 300];
        let raw = rate(|| {
            let _ = bundle.key.sign(alg, &msg);
        });
        let now = time::OffsetDateTime::now_utc();
        let one = rate(|| {
            let _ = issuer.issue(&id, &[], now);
        });
        let three = rate(|| {
            let _ = issuer.issue(&id, &extra, now);
        });
        println!("{:<6} {raw:>14.0} {one:>22.0} {three:>26.0}", alg.name());
    }
}

async fn e2e(addr: &str, ca: &str, secs: u64) -> Result<(), Box<dyn std::error::Error>> {
    let anchors = std::fs::read(ca)?;
    let tls = Arc::new(sentry_client::tls_config(
        &anchors,
        "spiffe://localhost/ns/default/dapr-sentry",
    )?);
    let client = sentry_client::connect(addr.parse()?, tls).await?;
    let (_key, csr) = sentry_client::new_csr(KeyType::Ed25519)?;
    let req = SignCertificateRequest {
        id: "myapp".into(),
        namespace: "default".into(),
        certificate_signing_request: csr.into_bytes(),
        ..Default::default()
    };
    let deadline = Instant::now() + Duration::from_secs(secs);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let mut c = client.clone();
        let r = req.clone();
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut jwt) = (0u64, 0u64);
            while Instant::now() < deadline {
                if let Ok(resp) = c.sign_certificate(r.clone()).await {
                    ok += 1;
                    jwt += u64::from(resp.into_inner().jwt.is_some());
                }
            }
            (ok, jwt)
        }));
    }
    let (mut ok, mut jwt) = (0, 0);
    for t in tasks {
        let (o, j) = t.await?;
        ok += o;
        jwt += j;
    }
    let el = start.elapsed().as_secs_f64();
    println!(
        "SignCertificate: {:.0}/s ({ok} ok, {jwt} with JWT) over {el:.1}s",
        ok as f64 / el
    );
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--e2e") {
        let (Some(addr), Some(ca)) = (args.get(2), args.get(3)) else {
            return Err("usage: jwt_bench --e2e ADDR CA_FILE [SECONDS]".into());
        };
        let secs = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(5);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        return rt.block_on(e2e(addr, ca, secs));
    }
    micro();
    Ok(())
}
