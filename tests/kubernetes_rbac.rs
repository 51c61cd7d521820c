//! Kubernetes mode within the RBAC of Dapr's Helm chart (deploy/rbac.yaml is the chart's Role and
//! ClusterRole) and stricter ones, against a real kube-apiserver with an audit log: custody of an
//! earlier version migrated where readable, a refused optional permission reported in one line
//! while Sentry keeps serving, bundle changes learnt from a kubelet-style Secret volume, and no
//! API request at all while idle.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::cluster::*;
use common::kubelet::SecretVolume;
use common::*;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use kube::api::{Api, ObjectMeta, PostParams};
use sentry_core::bundle::{self, CaParams, KeyType};
use sentry_core::spiffe::TrustDomain;
use time::OffsetDateTime;

const BUNDLE: &str = "dapr-trust-bundle";

fn user(cp: &str) -> String {
    format!("system:serviceaccount:{cp}:dapr-sentry")
}

fn params(cp: &str, issuer_ttl: Duration) -> CaParams {
    CaParams {
        issuer_ttl,
        ..CaParams::new(
            TrustDomain::parse("cluster.local").unwrap(),
            cp,
            KeyType::Ed25519,
            Duration::ZERO,
        )
    }
}

/// A generated bundle as Secret data (with its root key under `root.key` when `with_root`) and
/// the root key.
fn generated(cp: &str, issuer_ttl: Duration) -> (BTreeMap<String, ByteString>, String) {
    let g = bundle::generate(&params(cp, issuer_ttl), OffsetDateTime::now_utc()).unwrap();
    let b = |s: &str| ByteString(s.as_bytes().to_vec());
    let data = BTreeMap::from([
        ("ca.crt".to_owned(), b(&g.bundle.anchors_pem)),
        ("issuer.crt".to_owned(), b(&g.bundle.issuer_chain_pem)),
        ("issuer.key".to_owned(), b(&g.bundle.issuer_key_pem)),
    ]);
    (data, g.root_key_pem)
}

/// Replaces the data of Secret `name` (creating it if needed) as the admin; its new version.
async fn put_secret(
    kc: &kube::Client,
    cp: &str,
    name: &str,
    data: BTreeMap<String, ByteString>,
) -> String {
    let api: Api<Secret> = Api::namespaced(kc.clone(), cp);
    let stored = match api.get_opt(name).await.unwrap() {
        Some(mut s) => {
            s.data = Some(data);
            api.replace(name, &PostParams::default(), &s).await
        }
        None => {
            let s = Secret {
                metadata: ObjectMeta {
                    name: Some(name.into()),
                    ..Default::default()
                },
                data: Some(data),
                ..Default::default()
            };
            api.create(&PostParams::default(), &s).await
        }
    };
    stored.unwrap().metadata.resource_version.unwrap()
}

async fn secret_data(kc: &kube::Client, cp: &str) -> BTreeMap<String, ByteString> {
    let api: Api<Secret> = Api::namespaced(kc.clone(), cp);
    api.get(BUNDLE).await.unwrap().data.unwrap_or_default()
}

fn served_issuer(resp: &sentry_proto::SignCertificateResponse) -> Vec<u8> {
    pem_certs(&resp.workload_certificate).remove(1)
}

/// Sentry's refused requests (HTTP 403) in the audit log since `since`.
fn refused(c: &Cluster, cp: &str, since: OffsetDateTime) -> Vec<String> {
    c.audit_events(&user(cp), since)
        .into_iter()
        .filter(|e| e["responseStatus"]["code"] == 403)
        .map(|e| format!("{} {}", e["verb"], e["requestURI"]))
        .collect()
}

#[tokio::test]
async fn root_key_of_an_earlier_version_is_migrated_where_readable_and_never_asked_for_otherwise() {
    let tmp = tempfile::tempdir().unwrap();
    let cp = "cp-migrate";
    let c = cluster();
    let since = OffsetDateTime::now_utc();
    let kubeconfig = c.control_plane(cp).await;
    let kc = c.client().await;
    // An earlier version's layout: the bundle in dapr-trust-bundle, the root key beside it.
    let (data, root_key) = generated(cp, Duration::from_secs(3600 * 24));
    put_secret(&kc, cp, BUNDLE, data).await;
    let legacy = BTreeMap::from([(
        "root.key".to_owned(),
        ByteString(root_key.clone().into_bytes()),
    )]);
    put_secret(&kc, cp, "dapr-trust-bundle-root", legacy).await;

    // Under the chart's RBAC the old Secret is not readable: Sentry serves, asks nothing it may
    // not, and holds no root key.
    let s = Sentry::start(&tmp.path().join("chart"), sentry_opts(&kubeconfig, cp));
    assert!(!secret_data(&kc, cp).await.contains_key("root.key"));
    assert!(!s.log_text().contains("Migrated"), "{}", s.log_text());
    s.stop();
    assert_eq!(refused(c, cp, since), Vec::<String>::new(), "no 403");

    // Where RBAC lets Sentry read it, the root key moves into dapr-trust-bundle.
    c.control_plane_with(cp, |rbac| {
        rbac.replace(
            "---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding",
            "  - apiGroups: [\"\"]\n    resources: [\"secrets\"]\n    verbs: [\"get\"]\n    resourceNames: [\"dapr-trust-bundle-root\"]\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding",
        )
    })
    .await;
    let s = Sentry::start(&tmp.path().join("wider"), sentry_opts(&kubeconfig, cp));
    let data = secret_data(&kc, cp).await;
    assert_eq!(
        data.get("root.key").map(|k| k.0.clone()),
        Some(root_key.into_bytes()),
        "root key migrated\n{}",
        s.log_text()
    );
    assert!(data.contains_key("issuer.crt"), "the bundle kept");
    assert!(s.log_text().contains("Migrated the root key"));
    let out = ca_kube(&["check"], cp);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("root key: held by Sentry"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[tokio::test]
async fn without_update_on_the_secret_renewal_and_jwt_are_off_in_one_line_each_and_sentry_keeps_serving(
) {
    let tmp = tempfile::tempdir().unwrap();
    let cp = "cp-no-update";
    let c = cluster();
    let kubeconfig = c
        .control_plane_with(cp, |rbac| {
            let chart = "verbs: [\"get\", \"update\", \"delete\"]\n    resourceNames: [\"dapr-trust-bundle\"]";
            assert!(rbac.contains(chart), "deploy/rbac.yaml is the chart's Role");
            rbac.replace(
                chart,
                "verbs: [\"get\", \"delete\"]\n    resourceNames: [\"dapr-trust-bundle\"]",
            )
        })
        .await;
    let kc = c.client().await;
    // A bundle whose issuer is due for renewal at once, with the root key to renew it.
    let (mut data, root_key) = generated(cp, Duration::from_secs(600));
    data.insert("root.key".into(), ByteString(root_key.into_bytes()));
    let before = put_secret(&kc, cp, BUNDLE, data).await;
    let s = Sentry::start(
        tmp.path(),
        sentry_opts(&kubeconfig, cp).args(&[
            "--renew-when-remaining",
            "0.999",
            "--bundle-resync-interval",
            "1s",
            "--jwt-enabled",
        ]),
    );
    let jwt_off = "RBAC does not allow update on secrets/dapr-trust-bundle: JWT-SVID issuance";
    assert_eq!(s.log_text().matches(jwt_off).count(), 1, "{}", s.log_text());
    let line = "RBAC does not allow update on secrets/dapr-trust-bundle: automatic issuer renewal";
    let deadline = Instant::now() + Duration::from_secs(20);
    while !s.log_text().contains(line) {
        assert!(Instant::now() < deadline, "no line\n{}", s.log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Several resyncs later: still one line, still serving the stored bundle.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(s.log_text().matches(line).count(), 1, "{}", s.log_text());
    assert!(s.child_alive());
    let anchors = configmap_anchors(&kc, cp)
        .await
        .expect("ConfigMap published");
    let ns = "apps-no-update";
    create_namespace(&kc, ns).await;
    let (_, token) = workload(&kc, ns, "w", "w", &[]).await;
    let resp = client(&s, &anchors, cp)
        .await
        .sign_certificate(req("w", ns, &token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.trust_chain_certificates[0], anchors.as_bytes());
    let api: Api<Secret> = Api::namespaced(kc.clone(), cp);
    assert_eq!(
        api.get(BUNDLE).await.unwrap().metadata.resource_version,
        Some(before),
        "nothing written"
    );
}

#[tokio::test]
async fn under_the_chart_rbac_an_idle_sentry_makes_no_api_request_and_serves_an_operator_issuer_from_the_volume(
) {
    let tmp = tempfile::tempdir().unwrap();
    let cp = "cp-volume";
    let c = cluster();
    let since = OffsetDateTime::now_utc();
    let kubeconfig = c.control_plane(cp).await;
    let kc = c.client().await;
    let volume = SecretVolume::start(&kc, cp, BUNDLE, &tmp.path().join("creds")).await;
    let s = Sentry::start(tmp.path(), sentry_opts(&kubeconfig, cp));
    assert!(
        s.log_text()
            .contains("Watching the mounted trust-bundle Secret for changes"),
        "{}",
        s.log_text()
    );
    let anchors = configmap_anchors(&kc, cp).await.unwrap();
    let ns = "apps-volume";
    create_namespace(&kc, ns).await;
    let (_, token) = workload(&kc, ns, "w", "w", &[]).await;
    let sign = || async {
        client(&s, &anchors, cp)
            .await
            .sign_certificate(req("w", ns, &token))
            .await
            .unwrap()
            .into_inner()
    };
    let first = served_issuer(&sign().await);

    // Idle: after start-up (and the validation above), not one request for 20 s.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_from = OffsetDateTime::now_utc();
    tokio::time::sleep(Duration::from_secs(20)).await;
    let idle: Vec<String> = c
        .audit_events(&user(cp), idle_from)
        .into_iter()
        .map(|e| format!("{} {} {}", e["stage"], e["verb"], e["requestURI"]))
        .collect();
    println!("API requests by Sentry in 20 s idle: {}", idle.len());
    assert_eq!(idle, Vec::<String>::new(), "requests while idle");

    // An operator puts a new issuer (under the same root) into the Secret.
    let data = secret_data(&kc, cp).await;
    let root_key = String::from_utf8(data["root.key"].0.clone()).unwrap();
    let (cert, key) = bundle::new_issuer(
        &params(cp, Duration::from_secs(3600 * 24)),
        &data["ca.crt"].0,
        &root_key,
        OffsetDateTime::now_utc(),
    )
    .unwrap();
    let mut changed = data.clone();
    changed.insert("issuer.crt".into(), ByteString(cert.clone().into_bytes()));
    changed.insert("issuer.key".into(), ByteString(key.into_bytes()));
    let version = put_secret(&kc, cp, BUNDLE, changed).await;
    let projected = volume.projected(&version).await;
    let wanted = pem_certs(cert.as_bytes()).remove(0);
    assert_ne!(wanted, first);
    loop {
        if served_issuer(&sign().await) == wanted {
            break;
        }
        assert!(
            projected.elapsed() < Duration::from_secs(5),
            "operator's issuer not served within 5 s of the volume update\n{}",
            s.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "volume update to serving the new issuer: {} ms",
        projected.elapsed().as_millis()
    );
    assert_eq!(refused(c, cp, since), Vec::<String>::new(), "no 403");
}
