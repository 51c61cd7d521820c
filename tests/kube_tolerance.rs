//! Kubernetes client tolerance, against a minimal fake API server (plain HTTP on loopback) that
//! answers like Dapr's integration-test apiserver: a missing object is a bare 404 without a
//! `Status` body, and lists carry no `metadata.resourceVersion` (so kube-rs's watcher cannot
//! watch them). client-go tolerates both; Sentry must too. The real-apiserver behaviour is
//! covered by tests/kubernetes.rs.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use sentry_runtime::validator::kubernetes::Caches;

/// Pod names the fake lists (namespace `ns`, app id `app`).
type Pods = Arc<Mutex<Vec<String>>>;

fn json(code: StatusCode, body: String) -> Response {
    (code, [("content-type", "application/json")], body).into_response()
}

fn pod_list(pods: &[String]) -> String {
    let items: Vec<_> = pods
        .iter()
        .map(|name| {
            serde_json::json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"namespace": "ns", "name": name, "annotations": {"dapr.io/app-id": "app"}},
                "spec": {"serviceAccountName": "sa"}
            })
        })
        .collect();
    serde_json::json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items})
        .to_string()
}

async fn fake(State(pods): State<Pods>, uri: Uri) -> Response {
    let watch = uri.query().unwrap_or("").contains("watch=true");
    match uri.path() {
        // A watch that ends at once with no event, like the fake's informer with nothing queued.
        _ if watch => json(StatusCode::OK, String::new()),
        "/api/v1/pods" => json(StatusCode::OK, pod_list(&pods.lock().unwrap())),
        "/apis/dapr.io/v1alpha1/configurations" => json(
            StatusCode::OK,
            r#"{"apiVersion":"dapr.io/v1alpha1","kind":"ConfigurationList","metadata":{},"items":[]}"#
                .into(),
        ),
        "/api/v1/namespaces/ns/secrets/with-status" => json(
            StatusCode::NOT_FOUND,
            r#"{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404}"#
                .into(),
        ),
        "/api/v1/namespaces/ns/secrets/forbidden" => json(
            StatusCode::FORBIDDEN,
            r#"{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"Forbidden","code":403}"#
                .into(),
        ),
        "/api/v1/namespaces/ns/secrets/long-404" => {
            (StatusCode::NOT_FOUND, "x".repeat(200_000)).into_response()
        }
        // Everything else: Go's bare `w.WriteHeader(http.StatusNotFound)`.
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

/// Starts the fake and returns a Sentry client for it (built by `sentry_runtime::k8s::client`).
async fn start(pods: Pods) -> (kube::Client, tempfile::TempDir) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new().fallback(fake).with_state(pods);
    tokio::spawn(async move { axum::serve(listener, app).await });
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: c\n\
             clusters: [{{name: c, cluster: {{server: 'http://127.0.0.1:{port}'}}}}]\n\
             contexts: [{{name: c, context: {{cluster: c, user: u}}}}]\n\
             users: [{{name: u, user: {{}}}}]\n"
        ),
    )
    .unwrap();
    let client = sentry_runtime::k8s::client(Some(&kubeconfig))
        .await
        .unwrap();
    (client, dir)
}

#[tokio::test]
async fn a_404_without_status_body_is_not_found() {
    let (client, _dir) = start(Pods::default()).await;
    let secrets: Api<Secret> = Api::namespaced(client, "ns");
    for name in ["bare", "with-status", "long-404"] {
        let got = sentry_runtime::k8s::call(secrets.get_opt(name)).await;
        assert!(matches!(got, Ok(None)), "{name}: {got:?}");
        let err = sentry_runtime::k8s::call(secrets.get(name))
            .await
            .unwrap_err();
        assert!(err.is_not_found(), "{name}: {err:?}");
    }
    let err = sentry_runtime::k8s::call(secrets.get_opt("forbidden"))
        .await
        .unwrap_err();
    assert!(!err.is_not_found(), "{err:?}");
    assert!(
        matches!(&err, sentry_runtime::k8s::K8sError::Api(kube::Error::Api(s)) if s.reason == "Forbidden"),
        "{err:?}"
    );
}

#[tokio::test]
async fn lists_without_resource_version_fill_the_caches() {
    let pods = Pods::new(Mutex::new(vec!["mypod".into()]));
    let (client, _dir) = start(pods.clone()).await;
    let caches = Caches::start(client);
    assert!(caches.wait_ready(Duration::from_secs(10)).await);
    let pod = caches.cached_pod("ns", "mypod").expect("listed pod cached");
    let sa = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.as_deref());
    assert_eq!(sa, Some("sa"));
    // A pod the fake cannot GET is absent, not an error; one listed later is re-listed in.
    assert!(matches!(caches.live_pod("ns", "later").await, Ok(None)));
    assert!(matches!(caches.configuration("ns", "x").await, Ok(None)));
    pods.lock().unwrap().push("later".into());
    let relisted = tokio::time::timeout(Duration::from_secs(30), async {
        while caches.cached_pod("ns", "later").is_none() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    assert!(relisted.is_ok(), "pod listed later never reached the cache");
}
