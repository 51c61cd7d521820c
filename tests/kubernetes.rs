//! Kubernetes mode against a real kube-apiserver: Sentry runs with the ServiceAccount and exactly
//! the RBAC of deploy/rbac.yaml, validates pod-bound tokens through TokenReview, and keeps its
//! trust bundle in the `dapr-trust-bundle` Secret and ConfigMap.

mod common;

use common::cluster::*;
use common::*;
use sentry_proto::ca_client::CaClient;
use sentry_proto::SignCertificateRequest;
use tonic::transport::Channel;

/// Starts Sentry in Kubernetes mode with control-plane namespace `cp`.
async fn start_sentry(tmp: &std::path::Path, cp: &str) -> (Sentry, String) {
    let c = cluster();
    let kubeconfig = c.control_plane(cp).await;
    let s = Sentry::start(tmp, sentry_opts(&kubeconfig, cp));
    let anchors = configmap_anchors(&c.client().await, cp)
        .await
        .expect("ConfigMap created");
    (s, anchors)
}

fn leaf_uri(resp: &sentry_proto::SignCertificateResponse) -> String {
    let leaf = pem_certs(&resp.workload_certificate).remove(0);
    let uris = sentry_client::uri_sans(&leaf).unwrap();
    assert_eq!(uris.len(), 1);
    uris[0].clone()
}

async fn denied(c: &mut CaClient<Channel>, r: SignCertificateRequest, msg: &str) {
    let err = c.sign_certificate(r).await.expect_err(msg);
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{msg}: {err:?}");
    assert!(
        err.message().contains(msg),
        "{:?} does not contain {msg:?}",
        err.message()
    );
}

#[tokio::test]
async fn bound_pod_tokens_get_certificates_and_every_refusal_has_its_message() {
    let tmp = tempfile::tempdir().unwrap();
    let cp = "cp-main";
    let (s, anchors) = start_sentry(tmp.path(), cp).await;
    let kc = cluster().client().await;
    let ns = "apps-main";
    create_namespace(&kc, ns).await;
    let mut c = client(&s, &anchors, cp).await;

    // A pod with dapr.io/app-id and a token bound to it.
    let (_, token) = workload(
        &kc,
        ns,
        "myapp-pod",
        "myapp-sa",
        &[("dapr.io/app-id", "myapp")],
    )
    .await;
    let resp = c
        .sign_certificate(req("myapp", ns, &token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(leaf_uri(&resp), format!("spiffe://public/ns/{ns}/myapp"));
    assert_eq!(resp.trust_chain_certificates[0], anchors.as_bytes());
    // UNKNOWN picks the Kubernetes validator by default.
    let mut r = req("myapp", ns, &token);
    r.token_validator = 0;
    c.sign_certificate(r).await.unwrap();
    // The requested trust domain is ignored.
    let mut r = req("myapp", ns, &token);
    r.trust_domain = "evil.org".into();
    assert_eq!(
        leaf_uri(&c.sign_certificate(r).await.unwrap().into_inner()),
        format!("spiffe://public/ns/{ns}/myapp")
    );

    // Trust domain from the pod's Configuration.
    create_configuration(&kc, ns, "appconfig", "example.org").await;
    let (_, token_td) = workload(
        &kc,
        ns,
        "tdapp-pod",
        "tdapp-sa",
        &[("dapr.io/app-id", "myapp"), ("dapr.io/config", "appconfig")],
    )
    .await;
    let resp = c
        .sign_certificate(req("myapp", ns, &token_td))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        leaf_uri(&resp),
        format!("spiffe://example.org/ns/{ns}/myapp")
    );

    // No app-id annotation: the pod name is the id.
    let (_, token_bare) = workload(&kc, ns, "bare-pod", "bare-sa", &[]).await;
    let resp = c
        .sign_certificate(req("bare-pod", ns, &token_bare))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(leaf_uri(&resp), format!("spiffe://public/ns/{ns}/bare-pod"));

    // Refusals, each with Dapr's message.
    denied(
        &mut c,
        req("other", ns, &token),
        "app-id mismatch. expected: myapp, received: other",
    )
    .await;
    denied(
        &mut c,
        req("myapp", "default", &token),
        "namespace mismatch; received namespace: default",
    )
    .await;
    denied(&mut c, req("myapp", ns, "not-a-token"), "").await;
    let err = c
        .sign_certificate(req("myapp", ns, "not-a-token"))
        .await
        .unwrap_err();
    assert!(
        err.message().contains("invalid token") || err.message().contains("authentication failed"),
        "{err:?}"
    );
    let wrong_aud = token_request(
        &kc,
        ns,
        "myapp-sa",
        Some(("myapp-pod", &pod_uid(&kc, ns, "myapp-pod").await)),
        &["someone-else"],
        600,
    )
    .await
    .unwrap();
    let err = c
        .sign_certificate(req("myapp", ns, &wrong_aud))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    assert!(
        err.message().contains("invalid token") || err.message().contains("authentication failed"),
        "{err:?}"
    );
    denied(&mut c, req("myapp", ns, ""), "authentication failed").await;

    // A token the API server would issue only for another service account than the pod's:
    // forged with the cluster's signing key (TokenReview accepts it; Sentry must not).
    let other_sa_uid = sa_uid(&kc, ns, "bare-sa").await;
    let myapp_uid = pod_uid(&kc, ns, "myapp-pod").await;
    let forged = forge_token(
        cluster(),
        &claims(ns, "bare-sa", &other_sa_uid, "myapp-pod", &myapp_uid, 600),
    );
    denied(
        &mut c,
        req("myapp", ns, &forged),
        "pod service account mismatch",
    )
    .await;

    // Expired token (also forged: the API server will not issue one shorter than 10 minutes).
    let bare_uid = pod_uid(&kc, ns, "bare-pod").await;
    let expired = forge_token(
        cluster(),
        &claims(ns, "bare-sa", &other_sa_uid, "bare-pod", &bare_uid, -120),
    );
    let err = c
        .sign_certificate(req("bare-pod", ns, &expired))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    assert!(
        err.message().contains("invalid token") || err.message().contains("authentication failed"),
        "{err:?}"
    );

    // Token of a deleted pod.
    let (_, token_gone) = workload(&kc, ns, "gone-pod", "gone-sa", &[]).await;
    delete_pod(&kc, ns, "gone-pod").await;
    let err = c
        .sign_certificate(req("gone-pod", ns, &token_gone))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    assert!(
        err.message().contains("failed to get pod of identity")
            || err.message().contains("invalid token"),
        "{err:?}"
    );

    // Token of a deleted-and-recreated pod with the same name.
    let (_, token_old) = workload(&kc, ns, "again-pod", "again-sa", &[]).await;
    delete_pod(&kc, ns, "again-pod").await;
    create_pod(&kc, ns, "again-pod", "again-sa", &[]).await;
    let err = c
        .sign_certificate(req("again-pod", ns, &token_old))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    assert!(
        err.message().contains("pod UID mismatch") || err.message().contains("invalid token"),
        "{err:?}"
    );

    // After all of that, a good request still succeeds.
    c.sign_certificate(req("myapp", ns, &token)).await.unwrap();
}

#[tokio::test]
async fn control_plane_annotation_rules() {
    let tmp = tempfile::tempdir().unwrap();
    let cp = "cp-ctrl";
    let (s, anchors) = start_sentry(tmp.path(), cp).await;
    let kc = cluster().client().await;
    let mut c = client(&s, &anchors, cp).await;

    // A control-plane pod in the control-plane namespace gets the control-plane trust domain and
    // its DNS names.
    let (_, t) = workload(
        &kc,
        cp,
        "operator-0",
        "dapr-operator",
        &[("dapr.io/control-plane", "operator")],
    )
    .await;
    let resp = c
        .sign_certificate(req("dapr-operator", cp, &t))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        leaf_uri(&resp),
        format!("spiffe://cluster.local/ns/{cp}/dapr-operator")
    );
    let leaf = pem_certs(&resp.workload_certificate).remove(0);
    let (_, cert) = x509_parser::parse_x509_certificate(&leaf).unwrap();
    let san = cert.subject_alternative_name().unwrap().unwrap();
    assert!(format!("{:?}", san.value).contains(&format!("dapr-webhook.{cp}.svc")));
    denied(
        &mut c,
        req("dapr-injector", cp, &t),
        "app-id mismatch. expected: dapr-operator, received: dapr-injector",
    )
    .await;

    // Unknown control-plane service.
    let (_, t) = workload(
        &kc,
        cp,
        "weird-0",
        "weird",
        &[("dapr.io/control-plane", "weird")],
    )
    .await;
    denied(
        &mut c,
        req("dapr-weird", cp, &t),
        "unknown control plane service 'weird-0'",
    )
    .await;
    // Control-plane pod that also has an app id.
    let (_, t) = workload(
        &kc,
        cp,
        "both-0",
        "both",
        &[
            ("dapr.io/control-plane", "injector"),
            ("dapr.io/app-id", "x"),
        ],
    )
    .await;
    denied(
        &mut c,
        req("dapr-injector", cp, &t),
        "control plane service 'both-0' cannot have annotation 'dapr.io/app-id'",
    )
    .await;
    // Control-plane annotation outside the control-plane namespace.
    let ns = "apps-ctrl";
    create_namespace(&kc, ns).await;
    let (_, t) = workload(
        &kc,
        ns,
        "fake-injector",
        "fake",
        &[("dapr.io/control-plane", "injector")],
    )
    .await;
    denied(
        &mut c,
        req("dapr-injector", ns, &t),
        &format!("control plane service in namespace '{ns}' is not allowed"),
    )
    .await;
}

#[tokio::test]
async fn three_replicas_on_empty_objects_end_with_one_bundle() {
    let tmp = tempfile::tempdir().unwrap();
    let cp = "cp-ha";
    let c = cluster();
    let kubeconfig = c.control_plane(cp).await;
    let opts = sentry_opts(&kubeconfig, cp);
    let dirs: Vec<_> = (0..3).map(|i| tmp.path().join(format!("r{i}"))).collect();
    for d in &dirs {
        std::fs::create_dir_all(d).unwrap();
    }
    let replicas: Vec<Sentry> = dirs
        .iter()
        .map(|d| Sentry::spawn(d, opts.clone()))
        .collect();
    for r in &replicas {
        r.wait_ready();
    }
    let kc = c.client().await;
    let anchors = configmap_anchors(&kc, cp).await.unwrap();
    let secret: k8s_openapi::api::core::v1::Secret = kube::Api::namespaced(kc.clone(), cp)
        .get("dapr-trust-bundle")
        .await
        .unwrap();
    assert_eq!(
        secret.data.unwrap()["ca.crt"].0,
        anchors.as_bytes(),
        "ConfigMap and Secret agree"
    );
    let generated: usize = replicas
        .iter()
        .map(|r| {
            r.metrics_text()
                .contains("dapr_sentry_issuercert_changed_total 1") as usize
        })
        .sum();
    assert_eq!(generated, 1, "exactly one replica generated the bundle");
    let custody: k8s_openapi::api::core::v1::Secret = kube::Api::namespaced(kc.clone(), cp)
        .get("dapr-trust-bundle")
        .await
        .expect("the generating replica keeps the root key");
    assert!(
        custody.data.unwrap_or_default().contains_key("root.key"),
        "root key kept for automatic renewal"
    );
    let ns = "apps-ha";
    create_namespace(&kc, ns).await;
    let (_, token) = workload(&kc, ns, "p", "p", &[]).await;
    for r in &replicas {
        assert!(r.child_alive(), "no replica exited");
        let mut cl = client(r, &anchors, cp).await;
        let resp = cl
            .sign_certificate(req("p", ns, &token))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            resp.trust_chain_certificates[0],
            anchors.as_bytes(),
            "all serve the same anchors"
        );
    }
}

#[tokio::test]
async fn configmap_that_differs_from_the_secret_is_repaired_not_regenerated() {
    let tmp = tempfile::tempdir().unwrap();
    let cp = "cp-repair";
    let (s, anchors) = start_sentry(tmp.path(), cp).await;
    drop(s);
    let kc = cluster().client().await;
    // Someone edits the ConfigMap (e.g. a partial manual rotation).
    let cms: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
        kube::Api::namespaced(kc.clone(), cp);
    let mut cm = cms.get("dapr-trust-bundle").await.unwrap();
    cm.data
        .as_mut()
        .unwrap()
        .insert("ca.crt".into(), "garbage".into());
    cms.replace("dapr-trust-bundle", &Default::default(), &cm)
        .await
        .unwrap();
    let (s, repaired) = start_sentry(&tmp.path().join("again"), cp).await;
    assert_eq!(
        repaired, anchors,
        "ConfigMap restored from the Secret, CA unchanged"
    );
    assert!(
        s.metrics_text()
            .contains("dapr_sentry_issuercert_changed_total 0"),
        "no new CA generated"
    );
    assert!(s.log_text().contains("repairing the ConfigMap"));
}

async fn pod_uid(kc: &kube::Client, ns: &str, name: &str) -> String {
    let api: kube::Api<k8s_openapi::api::core::v1::Pod> = kube::Api::namespaced(kc.clone(), ns);
    api.get(name).await.unwrap().metadata.uid.unwrap()
}

async fn sa_uid(kc: &kube::Client, ns: &str, name: &str) -> String {
    let api: kube::Api<k8s_openapi::api::core::v1::ServiceAccount> =
        kube::Api::namespaced(kc.clone(), ns);
    api.get(name).await.unwrap().metadata.uid.unwrap()
}

/// Claims of a pod-bound service-account token expiring `ttl` seconds from now.
fn claims(
    ns: &str,
    sa: &str,
    sa_uid: &str,
    pod: &str,
    pod_uid: &str,
    ttl: i64,
) -> serde_json::Value {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    serde_json::json!({
        "aud": ["dapr.io/sentry"],
        "exp": now + ttl,
        "iat": now - 600,
        "nbf": now - 600,
        "iss": cluster().env["KUBE_SA_ISSUER"],
        "sub": format!("system:serviceaccount:{ns}:{sa}"),
        "kubernetes.io": {
            "namespace": ns,
            "pod": {"name": pod, "uid": pod_uid},
            "serviceaccount": {"name": sa, "uid": sa_uid}
        }
    })
}

#[tokio::test]
async fn root_key_custody_hot_reload_and_phased_rotation_in_the_cluster() {
    let tmp = tempfile::tempdir().unwrap();
    let cp = "cp-rotate";
    let c = cluster();
    let kubeconfig = c.control_plane(cp).await;
    let kc = c.client().await;
    // The Secret mounted at --issuer-credentials, as in Dapr's chart: changes arrive through it.
    let _volume = common::kubelet::SecretVolume::start(
        &kc,
        cp,
        "dapr-trust-bundle",
        &tmp.path().join("creds"),
    )
    .await;
    let s = Sentry::start(
        tmp.path(),
        sentry_opts(&kubeconfig, cp).args(&["--root-rotation-grace", "2s"]),
    );
    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(kc.clone(), cp);
    let root = secrets.get("dapr-trust-bundle").await.unwrap();
    assert!(
        root.data.unwrap().contains_key("root.key"),
        "Sentry keeps the root key in the trust-bundle Secret"
    );
    let anchors = configmap_anchors(&kc, cp).await.unwrap();
    let issuer_of = |resp: &sentry_proto::SignCertificateResponse| {
        pem_certs(&resp.workload_certificate).remove(1)
    };
    let ns = "apps-rotate";
    create_namespace(&kc, ns).await;
    let (_, token) = workload(&kc, ns, "w", "w", &[]).await;
    let mut cl = client(&s, &anchors, cp).await;
    let before = issuer_of(
        &cl.sign_certificate(req("w", ns, &token))
            .await
            .unwrap()
            .into_inner(),
    );

    // An operator renews the issuer through the API server; the running Sentry serves it.
    ca_kube_ok(&["renew"], cp);
    let stored = secrets
        .get("dapr-trust-bundle")
        .await
        .unwrap()
        .data
        .unwrap()["issuer.crt"]
        .0
        .clone();
    let new_issuer = pem_certs(&stored).remove(0);
    assert_ne!(new_issuer, before);
    let started = std::time::Instant::now();
    loop {
        let mut cl = client(&s, &anchors, cp).await;
        if issuer_of(
            &cl.sign_certificate(req("w", ns, &token))
                .await
                .unwrap()
                .into_inner(),
        ) == new_issuer
        {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "renewed issuer not served within 5 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let out = ca_kube(&["check"], cp);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("OK"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A root rotation: the new root is published beside the old one in Secret and ConfigMap,
    // then (after the 2 s grace) the new issuer activates while both roots stay trusted.
    ca_kube_ok(&["renew", "--root"], cp);
    wait_for_rotation_phase(&kc, cp, sentry_runtime::rotation::Phase::Active, &s).await;
    let published = configmap_anchors(&kc, cp).await.unwrap();
    assert_eq!(
        pem_certs(published.as_bytes()).len(),
        2,
        "old and new root published"
    );
    let secret_anchors = secrets
        .get("dapr-trust-bundle")
        .await
        .unwrap()
        .data
        .unwrap()["ca.crt"]
        .0
        .clone();
    assert_eq!(secret_anchors, published.as_bytes());
    // Clients holding either anchor set keep working: the old anchors verify nothing new, but the
    // published pair verifies everything Sentry now issues.
    let mut cl = client(&s, &published, cp).await;
    let resp = cl
        .sign_certificate(req("w", ns, &token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.trust_chain_certificates[0], published.as_bytes());
    assert_ne!(
        issuer_of(&resp),
        new_issuer,
        "the new root's issuer signs now"
    );
}
