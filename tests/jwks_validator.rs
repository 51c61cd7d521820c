//! The `jwks` validator over real TLS: inline, HTTPS (custom CA) and file sources; good and bad
//! tokens with Dapr's messages; not ready while the source is unreachable and recovering when it
//! comes up; a changed JWKS file picked up while running.

mod common;
#[path = "common/jwt.rs"]
mod jwt_common;

use std::time::{Duration, Instant};

use common::*;
use jwt_common::*;
use sentry_core::bundle::KeyType;
use sentry_core::jose::Algorithm;
use sentry_proto::SignCertificateRequest;
use tonic::Code;

const SUB: &str = "spiffe://public/ns/default/myapp";

fn jwks_request(token: &str) -> SignCertificateRequest {
    let mut r = request("myapp", "default", KeyType::Ed25519);
    r.token = token.into();
    r.token_validator = 3;
    r
}

async fn denied(s: &Sentry, token: &str) -> String {
    let err = sign(s, jwks_request(token)).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    err.message().to_owned()
}

/// Retries `f` until it returns true or 20 s pass.
async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn inline_jwks_accepts_good_tokens_and_names_the_failing_claim() {
    let (key, jwks) = key_and_jwks(Algorithm::EdDSA, "k1");
    let tmp = tempfile::tempdir().unwrap();
    let yaml = jwks_config(&format!("        source: '{jwks}'\n"));
    let s = Sentry::start(tmp.path(), Opts::default().config(&yaml));

    let good = mint(&key, Algorithm::EdDSA, "k1", claims_for(SUB, 60, -60));
    let resp = sign(&s, jwks_request(&good)).await.unwrap();
    let leaf = pem_certs(&resp.workload_certificate).remove(0);
    let (_, cert) = x509_parser::parse_x509_certificate(&leaf).unwrap();
    let san = cert.subject_alternative_name().unwrap().unwrap();
    assert_eq!(
        format!("{:?}", san.value.general_names),
        format!("[URI(\"{SUB}\")]")
    );

    // A token minted by an independent library (PyJWT) is accepted too.
    let py = pyjwt_mint(
        &key.to_pkcs8_pem().unwrap(),
        "EdDSA",
        "k1",
        &claims_for(SUB, 60, -60),
    );
    sign(&s, jwks_request(&py)).await.unwrap();

    // jwks replaces insecure; no default validator in standalone mode.
    let mut r = jwks_request(&good);
    r.token_validator = 1;
    let err = sign(&s, r).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("not enabled"), "{err:?}");
    let mut r = jwks_request(&good);
    r.token_validator = 0;
    let err = sign(&s, r).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err
        .message()
        .contains("a validator name must be specified in this environment"));

    let mut wrong_aud = claims_for(SUB, 60, -60);
    wrong_aud["aud"] = serde_json::json!(["spiffe://localhost/ns/default/other"]);
    let cases = [
        (
            "wrong aud",
            mint(&key, Algorithm::EdDSA, "k1", wrong_aud),
            "\"aud\"",
        ),
        (
            "wrong sub",
            mint(
                &key,
                Algorithm::EdDSA,
                "k1",
                claims_for("spiffe://public/ns/default/other", 60, -60),
            ),
            "\"sub\"",
        ),
        (
            "expired",
            mint(&key, Algorithm::EdDSA, "k1", claims_for(SUB, -3600, -7200)),
            "\"exp\"",
        ),
        (
            "not yet valid",
            mint(&key, Algorithm::EdDSA, "k1", claims_for(SUB, 7200, 3600)),
            "\"nbf\"",
        ),
        (
            "bad signature",
            mint(
                &key_and_jwks(Algorithm::EdDSA, "k1").0,
                Algorithm::EdDSA,
                "k1",
                claims_for(SUB, 60, -60),
            ),
            "could not verify message",
        ),
        (
            "unknown kid",
            mint(
                &key_and_jwks(Algorithm::EdDSA, "k9").0,
                Algorithm::EdDSA,
                "k9",
                claims_for(SUB, 60, -60),
            ),
            "no key with kid \"k9\"",
        ),
        ("garbage", "not-a-jwt".to_owned(), "failed to parse token"),
    ];
    for (name, token, want) in cases {
        let msg = denied(&s, &token).await;
        assert!(
            msg.starts_with("token validation failed: "),
            "{name}: {msg}"
        );
        assert!(msg.contains(want), "{name}: {msg}");
    }
    assert_eq!(denied(&s, "").await, "the request does not contain a token");
    // The good token still works afterwards.
    sign(&s, jwks_request(&good)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_source_unreachable_at_start_is_not_ready_then_recovers() {
    let (key, jwks) = key_and_jwks(Algorithm::ES256, "es");
    let tmp = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let ca_path = tmp.path().join("jwks-ca.pem");
    std::fs::write(&ca_path, &ca.cert_pem).unwrap();
    let port = free_port();
    let yaml = jwks_config(&format!(
        "        source: https://localhost:{port}/keys/jwks.json\n        caCertificate: {}\n        requestTimeout: 2s\n        minRefreshInterval: 10m\n",
        ca_path.display()
    ));
    let s = Sentry::spawn(tmp.path(), Opts::default().config(&yaml));
    let token = mint(&key, Algorithm::ES256, "es", claims_for(SUB, 60, -60));
    // gRPC is up, but the validator has no keys: requests are refused and /healthz says 503.
    eventually("gRPC to answer", || async {
        if !s.creds().join("ca.crt").exists() {
            return false;
        }
        match s
            .client_for("spiffe://localhost/ns/default/dapr-sentry")
            .await
        {
            Ok(mut c) => c.sign_certificate(jwks_request(&token)).await.is_err(),
            Err(_) => false,
        }
    })
    .await;
    assert_eq!(denied(&s, &token).await, "jwks validator not ready");
    assert_eq!(http_get(s.healthz, "/healthz").unwrap().0, 503);

    let _server = JwksServer::start(port, &jwks, Some(ca.server_cert())).await;
    s.wait_ready();
    sign(&s, jwks_request(&token)).await.unwrap();
}

#[tokio::test]
async fn file_source_changes_are_picked_up_while_running() {
    let (key_a, jwks_a) = key_and_jwks(Algorithm::RS256, "a");
    let (key_b, jwks_b) = key_and_jwks(Algorithm::EdDSA, "b");
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("jwks.json");
    std::fs::write(&file, &jwks_a).unwrap();
    let yaml = jwks_config(&format!("        source: {}\n", file.display()));
    let s = Sentry::start(tmp.path(), Opts::default().config(&yaml));
    let token_a = mint(&key_a, Algorithm::RS256, "a", claims_for(SUB, 600, -60));
    let token_b = mint(&key_b, Algorithm::EdDSA, "b", claims_for(SUB, 600, -60));
    sign(&s, jwks_request(&token_a)).await.unwrap();
    assert!(denied(&s, &token_b).await.contains("no key with kid \"b\""));

    // An invalid file is ignored: the previous keys stay in force.
    std::fs::write(&file, "{ not json").unwrap();
    std::fs::write(tmp.path().join("marker"), "").unwrap();
    sign(&s, jwks_request(&token_a)).await.unwrap();

    let tmp_file = tmp.path().join("jwks.json.new");
    std::fs::write(&tmp_file, &jwks_b).unwrap();
    std::fs::rename(&tmp_file, &file).unwrap();
    eventually("the new JWKS to be used", || async {
        sign(&s, jwks_request(&token_b)).await.is_ok()
    })
    .await;
    assert!(denied(&s, &token_a).await.contains("no key with kid \"a\""));
}
