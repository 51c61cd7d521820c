//! A real kube-apiserver + etcd for the Kubernetes tests (tests/kube/cluster), shared by the tests
//! of one test binary and stopped by the script's watchdog when the test process exits, plus
//! helpers to create namespaces, service accounts, pods, Configurations and tokens, to talk to a
//! Kubernetes-mode Sentry as a sidecar would, and to run `sentry ca` against the cluster.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};

use base64::Engine;
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Container, Namespace, Pod, PodSpec, ServiceAccount};
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};
use sentry_core::bundle::KeyType;
use sentry_proto::ca_client::CaClient;
use sentry_proto::SignCertificateRequest;
use tonic::transport::Channel;

use super::{request, run_ok, Sentry, SENTRY};

/// `token_validator` value of the Kubernetes validator.
pub(crate) const KUBERNETES: i32 = 2;

/// The shared cluster of this test process.
pub(crate) struct Cluster {
    pub dir: PathBuf,
    pub env: HashMap<String, String>,
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

static CLUSTER: OnceLock<Cluster> = OnceLock::new();

/// Starts the cluster on first use (the build is cached under target/kube).
pub(crate) fn cluster() -> &'static Cluster {
    CLUSTER.get_or_init(|| {
        let dir =
            Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("kube-{}", std::process::id()));
        // A start can fail on a loaded machine (a port taken between pick and bind, a slow
        // etcd): stop whatever half started and try again.
        let script = repo().join("tests/kube/cluster");
        let mut last = String::new();
        let up = (0..3).any(|_| {
            let out = Command::new(&script)
                .arg("up")
                .arg(&dir)
                .env("KUBE_CLUSTER_WATCH_PID", std::process::id().to_string())
                .env("KUBE_AUDIT_LOG", "1")
                .output()
                .unwrap();
            if !out.status.success() {
                last = format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
                let _ = Command::new(&script).arg("down").arg(&dir).output();
            }
            out.status.success()
        });
        assert!(up, "tests/kube/cluster up failed 3 times:\n{last}");
        let env = std::fs::read_to_string(dir.join("env"))
            .unwrap()
            .lines()
            .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
            .collect();
        let c = Cluster { dir, env };
        c.apply(&repo().join("deploy/crds/configuration.yaml"));
        c
    })
}

impl Cluster {
    /// The audit events (tests/kube/cluster `KUBE_AUDIT_LOG`) of requests made by `user` (e.g.
    /// `system:serviceaccount:NS:dapr-sentry`) that completed at or after `since`.
    pub(crate) fn audit_events(
        &self,
        user: &str,
        since: time::OffsetDateTime,
    ) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(&self.env["KUBE_AUDIT_LOG"]).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|e| e["user"]["username"] == user)
            .filter(|e| {
                e["stageTimestamp"]
                    .as_str()
                    .and_then(|t| {
                        time::OffsetDateTime::parse(
                            t,
                            &time::format_description::well_known::Rfc3339,
                        )
                        .ok()
                    })
                    .is_some_and(|t| t >= since)
            })
            .collect()
    }

    /// Admin kubeconfig.
    pub(crate) fn kubeconfig(&self) -> PathBuf {
        self.dir.join("admin.kubeconfig")
    }

    /// An admin client (one per test: clients are bound to the test's runtime).
    pub(crate) async fn client(&self) -> kube::Client {
        let kc = kube::config::Kubeconfig::read_from(self.kubeconfig()).unwrap();
        let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .unwrap();
        kube::Client::try_from(cfg).unwrap()
    }

    /// Server-side applies a YAML file (retried: tests applying the same cluster-scoped objects
    /// at once may hit an optimistic-concurrency conflict).
    pub(crate) fn apply(&self, file: &Path) {
        let mut last = String::new();
        for attempt in 0..6 {
            let out = Command::new(repo().join("tests/kube/kctl"))
                .arg("--env")
                .arg(self.dir.join("env"))
                .arg("apply")
                .arg(file)
                .output()
                .unwrap();
            if out.status.success() {
                return;
            }
            last = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(std::time::Duration::from_millis(200 * (attempt + 1)));
        }
        panic!("kctl apply {} failed:\n{last}", file.display());
    }

    pub(crate) fn stop_apiserver(&self) {
        run_ok(
            Command::new(repo().join("tests/kube/cluster"))
                .arg("stop-apiserver")
                .arg(&self.dir),
        );
    }

    pub(crate) fn start_apiserver(&self) {
        run_ok(
            Command::new(repo().join("tests/kube/cluster"))
                .arg("start-apiserver")
                .arg(&self.dir),
        );
    }

    /// Creates `ns` with the RBAC of deploy/rbac.yaml (the Role of Dapr's chart) and the empty
    /// trust-bundle Secret and ConfigMap of deploy/trust-bundle.yaml (as the chart creates them),
    /// their namespace replaced by `ns`, and returns a kubeconfig holding a token of the
    /// `dapr-sentry` ServiceAccount: Sentry runs with exactly the permissions we ship.
    pub(crate) async fn control_plane(&self, ns: &str) -> PathBuf {
        self.control_plane_with(ns, |rbac| rbac).await
    }

    /// [`Self::control_plane`] with the RBAC YAML changed by `edit` first (a stricter cluster).
    pub(crate) async fn control_plane_with(
        &self,
        ns: &str,
        edit: impl FnOnce(String) -> String,
    ) -> PathBuf {
        let client = self.client().await;
        create_namespace(&client, ns).await;
        let rbac = std::fs::read_to_string(repo().join("deploy/rbac.yaml"))
            .unwrap()
            .replace(
                "kind: ClusterRoleBinding\nmetadata:\n  name: dapr-sentry",
                &format!("kind: ClusterRoleBinding\nmetadata:\n  name: dapr-sentry-{ns}"),
            )
            .replace("dapr-system", ns);
        let objects = std::fs::read_to_string(repo().join("deploy/trust-bundle.yaml"))
            .unwrap()
            .replace("dapr-system", ns);
        let file = self.dir.join(format!("rbac-{ns}.yaml"));
        std::fs::write(&file, format!("{}\n---\n{objects}", edit(rbac))).unwrap();
        self.apply(&file);
        let token = token_request(&client, ns, "dapr-sentry", None, &[], 3600)
            .await
            .unwrap();
        let ca = std::fs::read(&self.env["KUBE_CA_FILE"]).unwrap();
        let kubeconfig = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {}\n    certificate-authority-data: {}\nusers:\n- name: dapr-sentry\n  user:\n    token: {}\ncontexts:\n- name: test\n  context:\n    cluster: test\n    user: dapr-sentry\n    namespace: {ns}\ncurrent-context: test\n",
            self.env["APISERVER_URL"],
            base64::engine::general_purpose::STANDARD.encode(ca),
            token
        );
        let path = self.dir.join(format!("sentry-{ns}.kubeconfig"));
        std::fs::write(&path, kubeconfig).unwrap();
        path
    }
}

/// Options that run Sentry in Kubernetes mode with control-plane namespace `cp`.
pub(crate) fn sentry_opts(kubeconfig: &Path, cp: &str) -> super::Opts {
    super::Opts::default()
        .args(&[
            "--mode",
            "kubernetes",
            "--trust-domain",
            "cluster.local",
            "--kubeconfig",
        ])
        .arg(kubeconfig.to_str().unwrap_or_default())
        .env("NAMESPACE", cp)
        .env("DAPR_UNSAFE_SKIP_CONTAINER_UID_GID_CHECK", "true")
}

/// A sidecar-style client of a Sentry whose control-plane namespace is `cp`, trusting `anchors`.
pub(crate) async fn client(s: &Sentry, anchors: &str, cp: &str) -> CaClient<Channel> {
    let tls = Arc::new(
        sentry_client::tls_config(
            anchors.as_bytes(),
            &format!("spiffe://cluster.local/ns/{cp}/dapr-sentry"),
        )
        .unwrap(),
    );
    sentry_client::connect(s.grpc, tls).await.unwrap()
}

/// A request for `id` in `ns` authenticated by a service-account `token`.
pub(crate) fn req(id: &str, ns: &str, token: &str) -> SignCertificateRequest {
    let mut r = request(id, ns, KeyType::Ed25519);
    r.token = token.into();
    r.token_validator = KUBERNETES;
    r
}

/// A workload pod with a bound token (audience dapr.io/sentry): (pod UID, token).
pub(crate) async fn workload(
    kc: &kube::Client,
    ns: &str,
    pod: &str,
    sa: &str,
    annotations: &[(&str, &str)],
) -> (String, String) {
    create_service_account(kc, ns, sa).await;
    let uid = create_pod(kc, ns, pod, sa, annotations).await;
    let token = token_request(kc, ns, sa, Some((pod, &uid)), &["dapr.io/sentry"], 600)
        .await
        .unwrap();
    (uid, token)
}

/// Runs `sentry ca ARGS` in Kubernetes mode against control-plane namespace `cp` (as admin).
pub(crate) fn ca_kube(args: &[&str], cp: &str) -> std::process::Output {
    Command::new(SENTRY)
        .arg("ca")
        .args(args)
        .args([
            "--mode",
            "kubernetes",
            "--namespace",
            cp,
            "--trust-domain",
            "cluster.local",
            "--kubeconfig",
        ])
        .arg(cluster().kubeconfig())
        .output()
        .unwrap()
}

/// Runs `sentry ca ARGS` like [`ca_kube`] and asserts that it succeeds.
pub(crate) fn ca_kube_ok(args: &[&str], cp: &str) {
    let out = ca_kube(args, cp);
    assert!(
        out.status.success(),
        "sentry ca {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Waits (up to 60 s) until the rotation journal in `cp` reports `phase`; `s` is the Sentry
/// driving it (its log goes into the failure message).
pub(crate) async fn wait_for_rotation_phase(
    kc: &kube::Client,
    cp: &str,
    phase: sentry_runtime::rotation::Phase,
    s: &Sentry,
) {
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(kc.clone(), cp);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let journal = secrets
            .get("dapr-trust-bundle")
            .await
            .unwrap()
            .data
            .unwrap()
            .get("rotation.json")
            .map(|b| b.0.clone());
        let now = journal.map(|j| sentry_runtime::rotation::Journal::parse(&j).unwrap().phase);
        if now == Some(phase) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "rotation stuck in {now:?}\n{}",
            s.log_text()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

pub(crate) async fn create_namespace(client: &kube::Client, ns: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    let obj = Namespace {
        metadata: ObjectMeta {
            name: Some(ns.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    match api.create(&PostParams::default(), &obj).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => panic!("create namespace {ns}: {e}"),
    }
}

pub(crate) async fn create_service_account(client: &kube::Client, ns: &str, name: &str) {
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let obj = ServiceAccount {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    match api.create(&PostParams::default(), &obj).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => panic!("create sa {ns}/{name}: {e}"),
    }
}

/// Creates a pod (never scheduled: there is no kubelet) and returns its UID.
pub(crate) async fn create_pod(
    client: &kube::Client,
    ns: &str,
    name: &str,
    sa: &str,
    annotations: &[(&str, &str)],
) -> String {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let obj = Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            annotations: Some(
                annotations
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<BTreeMap<_, _>>(),
            ),
            ..Default::default()
        },
        spec: Some(PodSpec {
            service_account_name: Some(sa.into()),
            containers: vec![Container {
                name: "app".into(),
                image: Some("example.invalid/app:1".into()),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    let created = api
        .create(&PostParams::default(), &obj)
        .await
        .unwrap_or_else(|e| panic!("create pod {ns}/{name}: {e}"));
    created.metadata.uid.unwrap()
}

pub(crate) async fn delete_pod(client: &kube::Client, ns: &str, name: &str) {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    api.delete(name, &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    for _ in 0..100 {
        if api.get_opt(name).await.unwrap().is_none() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("pod {ns}/{name} not deleted");
}

/// A TokenRequest for `sa`, optionally bound to a pod `(name, uid)`.
pub(crate) async fn token_request(
    client: &kube::Client,
    ns: &str,
    sa: &str,
    pod: Option<(&str, &str)>,
    audiences: &[&str],
    expiration: i64,
) -> Result<String, kube::Error> {
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let req = TokenRequest {
        spec: TokenRequestSpec {
            audiences: audiences.iter().map(|s| s.to_string()).collect(),
            expiration_seconds: Some(expiration),
            bound_object_ref: pod.map(|(name, uid)| BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(name.into()),
                uid: Some(uid.into()),
            }),
        },
        ..Default::default()
    };
    let resp: TokenRequest = api
        .create_subresource("token", sa, &PostParams::default(), &req)
        .await?;
    Ok(resp.status.map(|s| s.token).unwrap_or_default())
}

/// Creates a Dapr Configuration with `spec.accessControl.trustDomain`.
pub(crate) async fn create_configuration(
    client: &kube::Client,
    ns: &str,
    name: &str,
    trust_domain: &str,
) {
    let ar = sentry_runtime::k8s::configuration::api_resource();
    let api: Api<kube::api::DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
    let obj = kube::api::DynamicObject::new(name, &ar).data(serde_json::json!({
        "spec": {"accessControl": {"trustDomain": trust_domain}}
    }));
    api.create(&PostParams::default(), &obj).await.unwrap();
}

/// The ConfigMap `dapr-trust-bundle` ca.crt in `ns`, if present.
pub(crate) async fn configmap_anchors(client: &kube::Client, ns: &str) -> Option<String> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    api.get_opt("dapr-trust-bundle")
        .await
        .unwrap()?
        .data?
        .get("ca.crt")
        .cloned()
}

/// Signs an RS256 JWT with the cluster's service-account signing key (for tokens the API server
/// would never issue: expired ones, or pods with a different service account).
pub(crate) fn forge_token(cluster: &Cluster, claims: &serde_json::Value) -> String {
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let pem_text = std::fs::read_to_string(&cluster.env["KUBE_SA_SIGNING_KEY"]).unwrap();
    let der = pem::parse(pem_text).unwrap().into_contents();
    let key = aws_lc_rs::rsa::KeyPair::from_pkcs8(&der)
        .or_else(|_| aws_lc_rs::rsa::KeyPair::from_der(&der))
        .unwrap();
    let header = b64(br#"{"alg":"RS256","typ":"JWT"}"#);
    let payload = b64(claims.to_string().as_bytes());
    let signing_input = format!("{header}.{payload}");
    let mut sig = vec![0; key.public_modulus_len()];
    key.sign(
        &aws_lc_rs::signature::RSA_PKCS1_SHA256,
        &aws_lc_rs::rand::SystemRandom::new(),
        signing_input.as_bytes(),
        &mut sig,
    )
    .unwrap();
    format!("{signing_input}.{}", b64(&sig))
}
