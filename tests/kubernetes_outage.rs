//! The API server goes away while Sentry runs: a token it has just reviewed keeps working (the
//! review cache), any other request fails fast with a clear status instead of hanging, and
//! everything succeeds again once it is back, without restarting Sentry. (Its own test binary:
//! stopping the API server must not disturb the other Kubernetes tests.)

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::cluster::*;
use common::*;
use sentry_core::bundle::KeyType;

#[tokio::test]
async fn api_server_down_then_back() {
    let tmp = tempfile::tempdir().unwrap();
    let c = cluster();
    let cp = "cp-outage";
    let kubeconfig = c.control_plane(cp).await;
    let s = Sentry::start(tmp.path(), sentry_opts(&kubeconfig, cp));
    let kc = c.client().await;
    let anchors = configmap_anchors(&kc, cp).await.unwrap();
    let ns = "apps-outage";
    create_namespace(&kc, ns).await;
    create_service_account(&kc, ns, "app").await;
    let uid = create_pod(&kc, ns, "app-0", "app", &[("dapr.io/app-id", "app")]).await;
    let token = token_request(
        &kc,
        ns,
        "app",
        Some(("app-0", &uid)),
        &["dapr.io/sentry"],
        3600,
    )
    .await
    .unwrap();
    let fresh_token = token_request(
        &kc,
        ns,
        "app",
        Some(("app-0", &uid)),
        &["dapr.io/sentry"],
        3600,
    )
    .await
    .unwrap();
    let tls = Arc::new(
        sentry_client::tls_config(
            anchors.as_bytes(),
            &format!("spiffe://cluster.local/ns/{cp}/dapr-sentry"),
        )
        .unwrap(),
    );
    let req_with = |token: &str| {
        let mut r = request("app", ns, KeyType::Ed25519);
        r.token = token.to_owned();
        let mut r = tonic::Request::new(r);
        r.set_timeout(Duration::from_secs(30));
        r
    };
    let req = || req_with(&token);
    let mut client = sentry_client::connect(s.grpc, tls.clone()).await.unwrap();
    client.sign_certificate(req()).await.unwrap();

    c.stop_apiserver();
    // Reviewed moments ago: served from the review cache (the pod is in the watch cache).
    client
        .sign_certificate(req())
        .await
        .expect("cached review survives the outage");
    for _ in 0..3 {
        let err = client
            .sign_certificate(req_with(&fresh_token))
            .await
            .unwrap_err();
        assert_eq!(
            err.code(),
            tonic::Code::PermissionDenied,
            "a clear status, not a deadline: {err:?}"
        );
        assert!(err.message().contains("token review failed"), "{err:?}");
    }
    assert_eq!(
        http_get(s.healthz, "/healthz").unwrap().0,
        200,
        "Sentry itself stays up"
    );

    c.start_apiserver();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match client.sign_certificate(req_with(&fresh_token)).await {
            Ok(_) => break,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => panic!(
                "not recovered after the API server came back: {e:?}\n{}",
                s.log_text()
            ),
        }
    }
    // A fresh connection works too; same process.
    let mut fresh = sentry_client::connect(s.grpc, tls).await.unwrap();
    fresh
        .sign_certificate(req_with(&fresh_token))
        .await
        .unwrap();
    assert!(s.child_alive());
}
