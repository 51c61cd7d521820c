//! Kubernetes client tolerance, against a minimal fake API server (plain HTTP on loopback) that
//! answers like Dapr's integration-test apiserver: a missing object is a bare 404 without a
//! `Status` body, and lists carry no `metadata.resourceVersion` (so kube-rs's watcher cannot
//! watch them). client-go tolerates both; Sentry must too. A fake whose RBAC refuses `watch` on
//! pods checks that the refusal is logged with its verb and resource, bounded and once per
//! interval. The real-apiserver behaviour is covered by tests/kubernetes.rs.

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
    serve(axum::Router::new().fallback(fake).with_state(pods)).await
}

/// Serves `app` as the API server and returns a Sentry client for it.
async fn serve(app: axum::Router) -> (kube::Client, tempfile::TempDir) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
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

/// Log lines written on this thread (the test's current-thread runtime runs the watch tasks).
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A Role with `list` but without `watch` on pods: the API server lists them, then answers every
/// watch with 403 and a long message. Configurations are listed and watched (the watch stays open).
async fn no_watch_on_pods(State(watches): State<Arc<Mutex<usize>>>, uri: Uri) -> Response {
    let watch = uri.query().unwrap_or("").contains("watch=true");
    match (uri.path(), watch) {
        ("/api/v1/pods", true) => {
            *watches.lock().unwrap() += 1;
            let message = format!(
                "pods is forbidden: User \"system:serviceaccount:dapr-system:dapr-sentry\" cannot watch resource \"pods\" in API group \"\" at the cluster scope{}",
                "\nINFO forged line".repeat(10_000)
            );
            let status = serde_json::json!({
                "kind": "Status", "apiVersion": "v1", "status": "Failure",
                "reason": "Forbidden", "code": 403, "message": message,
            });
            json(StatusCode::FORBIDDEN, status.to_string())
        }
        ("/api/v1/pods", false) => json(
            StatusCode::OK,
            r#"{"apiVersion":"v1","kind":"PodList","metadata":{"resourceVersion":"1"},"items":[]}"#
                .into(),
        ),
        ("/apis/dapr.io/v1alpha1/configurations", true) => (
            [("content-type", "application/json")],
            axum::body::Body::from_stream(futures::stream::pending::<Result<String, String>>()),
        )
            .into_response(),
        ("/apis/dapr.io/v1alpha1/configurations", false) => json(
            StatusCode::OK,
            r#"{"apiVersion":"dapr.io/v1alpha1","kind":"ConfigurationList","metadata":{"resourceVersion":"1"},"items":[]}"#
                .into(),
        ),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

#[tokio::test]
async fn a_refused_watch_is_logged_with_verb_and_resource_once_per_interval() {
    let logs = Captured::default();
    let writer = {
        let logs = logs.clone();
        move || logs.clone()
    };
    let subscriber = tracing_subscriber::fmt()
        .with_writer(writer)
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let watches = Arc::new(Mutex::new(0usize));
    let app = axum::Router::new()
        .fallback(no_watch_on_pods)
        .with_state(watches.clone());
    let (client, _dir) = serve(app).await;
    let caches = Caches::start(client);
    assert!(caches.wait_ready(Duration::from_secs(30)).await);
    // The watcher retries with its backoff (0.8 s, 1.6 s, ...): wait for three refused watches.
    let retried = tokio::time::timeout(Duration::from_secs(50), async {
        while *watches.lock().unwrap() < 3 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(retried.is_ok(), "the watch was not retried");

    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("watch pods: 403 Forbidden: pods is forbidden"))
        .collect();
    assert_eq!(lines.len(), 1, "one line per interval:\n{text}");
    assert!(lines[0].contains("WARN"), "{}", lines[0]);
    assert!(lines[0].len() < 1000, "bounded: {} bytes", lines[0].len());
    assert!(!text.contains("\nINFO forged"), "{text}");
}
