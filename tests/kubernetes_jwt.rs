//! JWT-SVIDs in Kubernetes mode against a real kube-apiserver (Sentry with the RBAC of
//! deploy/rbac.yaml): the JWT key and JWKS live in Secret `dapr-trust-bundle` (`jwt.key`,
//! `jwks.json`) and the JWKS is published in ConfigMap `dapr-trust-bundle`, which is what the
//! issued tokens are checked against (with PyJWT). Generated once, reused after, refused when
//! partial or corrupt (nothing written), agreed on by replicas starting together, and kept by
//! bundle writes (issuer renewal, root rotation).

mod common;
#[path = "common/jwt.rs"]
mod jwt_common;

use common::cluster::*;
use common::*;
use jwt_common::*;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::ByteString;
use kube::api::{Api, ObjectMeta, PostParams};
use sentry_core::bundle::jwt::{generate_jwt, JwtKeySettings};
use sentry_core::jose::Algorithm;

const BUNDLE: &str = "dapr-trust-bundle";

fn secrets(kc: &kube::Client, cp: &str) -> Api<Secret> {
    Api::namespaced(kc.clone(), cp)
}

fn config_maps(kc: &kube::Client, cp: &str) -> Api<ConfigMap> {
    Api::namespaced(kc.clone(), cp)
}

/// The Secret's (`jwt.key`, `jwks.json`).
async fn secret_jwt(kc: &kube::Client, cp: &str) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
    let data = secrets(kc, cp)
        .get_opt(BUNDLE)
        .await
        .unwrap()
        .and_then(|s| s.data)
        .unwrap_or_default();
    let get = |k: &str| data.get(k).map(|b| b.0.clone());
    (get("jwt.key"), get("jwks.json"))
}

/// The ConfigMap's `jwks.json`.
async fn configmap_jwks(kc: &kube::Client, cp: &str) -> Option<String> {
    config_maps(kc, cp)
        .get_opt(BUNDLE)
        .await
        .unwrap()?
        .data?
        .get("jwks.json")
        .cloned()
}

/// Verifies `tokens` with PyJWT against `jwks` (served from a local HTTP server); returns the
/// header and claims of each. Every token's base audience list is `[td, extra...]`.
async fn verify_against(jwks: &str, tokens: Vec<String>, aud: &[&str]) -> Vec<serde_json::Value> {
    let port = free_port();
    let _server = JwksServer::start(port, jwks, None).await;
    let auds = vec![aud.iter().map(|a| a.to_string()).collect(); tokens.len()];
    let url = format!("http://127.0.0.1:{port}/jwks.json");
    tokio::task::spawn_blocking(move || pyjwt_verify(&url, "RS256", &tokens, &auds, None))
        .await
        .unwrap()
}

/// A JWT-SVID for the workload (`app`, `ns`) from `s`.
async fn jwt_svid(s: &Sentry, anchors: &str, cp: &str, ns: &str, token: &str) -> String {
    let mut r = req("app", ns, token);
    r.jwt_audiences = vec!["api.example.com".into()];
    let resp = client(s, anchors, cp)
        .await
        .sign_certificate(r)
        .await
        .unwrap()
        .into_inner();
    resp.jwt.expect("a JWT-SVID beside the certificate")
}

fn only_kid(jwks: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(jwks).unwrap();
    let keys = v["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1, "one key in {v}");
    keys[0]["kid"].as_str().unwrap().to_owned()
}

fn jwt_opts(kubeconfig: &std::path::Path, cp: &str) -> Opts {
    sentry_opts(kubeconfig, cp).arg("--jwt-enabled")
}

#[tokio::test]
async fn generated_into_the_secret_published_in_the_configmap_and_reused() {
    let tmp = tempfile::tempdir().unwrap();
    let cp = "cp-jwt";
    let c = cluster();
    let kubeconfig = c.control_plane(cp).await;
    let s = Sentry::start(&tmp.path().join("first"), jwt_opts(&kubeconfig, cp));
    let kc = c.client().await;

    let (key, jwks) = secret_jwt(&kc, cp).await;
    let (key, jwks) = (
        key.expect("jwt.key stored"),
        jwks.expect("jwks.json stored"),
    );
    let published = configmap_jwks(&kc, cp).await.expect("jwks.json published");
    assert_eq!(published.as_bytes(), jwks, "ConfigMap JWKS = Secret JWKS");
    let kid = only_kid(&jwks);
    let parsed: serde_json::Value = serde_json::from_slice(&jwks).unwrap();
    assert_eq!(parsed["keys"][0]["kty"], "RSA");
    assert_eq!(parsed["keys"][0]["alg"], "RS256");
    let data = secrets(&kc, cp).get(BUNDLE).await.unwrap().data.unwrap();
    for k in ["ca.crt", "issuer.crt", "issuer.key"] {
        assert!(data.contains_key(k), "the X.509 bundle is there too: {k}");
    }
    assert!(
        !s.log_text().contains("BEGIN PRIVATE KEY"),
        "no key in logs"
    );

    // A sidecar with a real bound service-account token gets a JWT-SVID that verifies against
    // the ConfigMap's JWKS.
    let anchors = configmap_anchors(&kc, cp).await.unwrap();
    let ns = "apps-jwt";
    create_namespace(&kc, ns).await;
    let (_, token) = workload(&kc, ns, "app-0", "app", &[("dapr.io/app-id", "app")]).await;
    let svid = jwt_svid(&s, &anchors, cp, ns, &token).await;
    let d = verify_against(&published, vec![svid], &["public", "api.example.com"]).await;
    assert_eq!(d[0]["header"]["kid"], kid.as_str());
    assert_eq!(
        d[0]["claims"]["sub"],
        format!("spiffe://public/ns/{ns}/app")
    );
    drop(s);

    // Restart with the ConfigMap's JWKS damaged: the Secret's key is reused, the ConfigMap
    // repaired from it, nothing generated.
    let mut cm = config_maps(&kc, cp).get(BUNDLE).await.unwrap();
    cm.data
        .as_mut()
        .unwrap()
        .insert("jwks.json".into(), r#"{"keys":[]}"#.into());
    config_maps(&kc, cp)
        .replace(BUNDLE, &PostParams::default(), &cm)
        .await
        .unwrap();
    let s = Sentry::start(&tmp.path().join("again"), jwt_opts(&kubeconfig, cp));
    assert_eq!(
        secret_jwt(&kc, cp).await,
        (Some(key), Some(jwks.clone())),
        "same key"
    );
    assert_eq!(configmap_jwks(&kc, cp).await.unwrap().as_bytes(), jwks);
    assert!(s.log_text().contains("repairing the ConfigMap"));
    assert!(s
        .metrics_text()
        .contains("dapr_sentry_issuercert_changed_total 0"));
    let svid = jwt_svid(&s, &anchors, cp, ns, &token).await;
    let d = verify_against(&published, vec![svid], &["public", "api.example.com"]).await;
    assert_eq!(
        d[0]["header"]["kid"],
        kid.as_str(),
        "same kid after restart"
    );
}

#[tokio::test]
async fn partial_or_corrupt_jwt_material_stops_start_up_and_nothing_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let cp = "cp-jwt-bad";
    let c = cluster();
    let kubeconfig = c.control_plane(cp).await;
    let kc = c.client().await;
    let settings = JwtKeySettings {
        algorithm: Algorithm::RS256,
        key_id: None,
    };
    let mine = generate_jwt(&settings).unwrap();
    let other = generate_jwt(&settings).unwrap();
    let put = |data: Vec<(&str, &str)>| {
        let kc = kc.clone();
        let data = data
            .into_iter()
            .map(|(k, v)| (k.to_owned(), ByteString(v.as_bytes().to_vec())))
            .collect();
        async move {
            let api = secrets(&kc, cp);
            let mut secret = api.get_opt(BUNDLE).await.unwrap().unwrap_or(Secret {
                metadata: ObjectMeta {
                    name: Some(BUNDLE.into()),
                    ..Default::default()
                },
                ..Default::default()
            });
            secret.data = Some(data);
            let stored = match secret.metadata.resource_version {
                Some(_) => api.replace(BUNDLE, &PostParams::default(), &secret).await,
                None => api.create(&PostParams::default(), &secret).await,
            };
            stored.unwrap().metadata.resource_version.unwrap()
        }
    };
    // (case, Secret data, expected messages)
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a [&'a str]);
    let cases: [Case; 4] = [
        (
            "only jwt.key",
            vec![("jwt.key", mine.key_pem.as_str())],
            &[
                "incomplete JWT credentials",
                "Secret cp-jwt-bad/dapr-trust-bundle key jwt.key present",
                "key jwks.json missing",
            ],
        ),
        (
            "only jwks.json",
            vec![("jwks.json", mine.jwks_json.as_str())],
            &["incomplete JWT credentials", "key jwt.key missing"],
        ),
        (
            "corrupt jwks.json",
            vec![("jwt.key", mine.key_pem.as_str()), ("jwks.json", "{")],
            &[
                "Secret cp-jwt-bad/dapr-trust-bundle key jwks.json",
                "invalid JWKS",
            ],
        ),
        (
            "JWKS of another key",
            vec![
                ("jwt.key", mine.key_pem.as_str()),
                ("jwks.json", other.jwks_json.as_str()),
            ],
            &[
                "key jwks.json",
                "doesn't contain a key matching the signing key",
            ],
        ),
    ];
    for (i, (case, data, messages)) in cases.into_iter().enumerate() {
        let version = put(data).await;
        let out = run_to_exit(&tmp.path().join(i.to_string()), jwt_opts(&kubeconfig, cp));
        let log = String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success(), "{case}: started anyway\n{log}");
        for m in messages {
            assert!(log.contains(m), "{case}: {m:?} not in\n{log}");
        }
        let now = secrets(&kc, cp).get(BUNDLE).await.unwrap();
        assert_eq!(
            now.metadata.resource_version.as_deref(),
            Some(version.as_str()),
            "{case}: Secret untouched"
        );
        assert!(
            config_maps(&kc, cp)
                .get(BUNDLE)
                .await
                .unwrap()
                .data
                .unwrap_or_default()
                .is_empty(),
            "{case}: nothing written into the ConfigMap (the Secret's resourceVersion says no CA was generated)"
        );
    }
}

#[tokio::test]
async fn three_replicas_on_empty_objects_end_with_one_jwt_key() {
    let tmp = tempfile::tempdir().unwrap();
    let cp = "cp-jwt-ha";
    let c = cluster();
    let kubeconfig = c.control_plane(cp).await;
    let replicas: Vec<Sentry> = (0..3)
        .map(|i| Sentry::spawn(&tmp.path().join(format!("r{i}")), jwt_opts(&kubeconfig, cp)))
        .collect();
    for r in &replicas {
        r.wait_ready();
    }
    let kc = c.client().await;
    let (_, jwks) = secret_jwt(&kc, cp).await;
    let jwks = jwks.expect("jwks.json stored");
    let kid = only_kid(&jwks);
    let published = configmap_jwks(&kc, cp).await.unwrap();
    assert_eq!(published.as_bytes(), jwks);
    let anchors = configmap_anchors(&kc, cp).await.unwrap();
    let ns = "apps-jwt-ha";
    create_namespace(&kc, ns).await;
    let (_, token) = workload(&kc, ns, "app-0", "app", &[("dapr.io/app-id", "app")]).await;
    let mut svids = Vec::new();
    for r in &replicas {
        assert!(r.child_alive(), "no replica exited:\n{}", r.log_text());
        svids.push(jwt_svid(r, &anchors, cp, ns, &token).await);
    }
    for d in verify_against(&published, svids, &["public", "api.example.com"]).await {
        assert_eq!(
            d["header"]["kid"],
            kid.as_str(),
            "every replica signs with the one key"
        );
    }
}

#[tokio::test]
async fn issuer_renewal_and_root_rotation_keep_the_jwt_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let cp = "cp-jwt-rotate";
    let c = cluster();
    let kubeconfig = c.control_plane(cp).await;
    let kc = c.client().await;
    // The Secret mounted at --issuer-credentials, as in Dapr's chart: changes arrive through it.
    let _volume =
        common::kubelet::SecretVolume::start(&kc, cp, BUNDLE, &tmp.path().join("creds")).await;
    let s = Sentry::start(
        tmp.path(),
        jwt_opts(&kubeconfig, cp).args(&["--root-rotation-grace", "1s"]),
    );
    let pair = secret_jwt(&kc, cp).await;
    assert!(pair.0.is_some() && pair.1.is_some());
    let published = configmap_jwks(&kc, cp).await.unwrap();
    let kept = |what: &str| {
        let (kc, pair, published, what) =
            (kc.clone(), pair.clone(), published.clone(), what.to_owned());
        async move {
            assert_eq!(
                secret_jwt(&kc, cp).await,
                pair,
                "{what}: Secret JWT keys kept"
            );
            assert_eq!(
                configmap_jwks(&kc, cp).await.as_ref(),
                Some(&published),
                "{what}: ConfigMap JWKS kept"
            );
        }
    };

    ca_kube_ok(&["renew"], cp);
    kept("issuer renewal").await;

    // A root rotation goes through several bundle writes (prepare, publish, activate).
    ca_kube_ok(&["renew", "--root"], cp);
    wait_for_rotation_phase(&kc, cp, sentry_runtime::rotation::Phase::Active, &s).await;
    let anchors = configmap_anchors(&kc, cp).await.unwrap();
    assert_eq!(pem_certs(anchors.as_bytes()).len(), 2, "rotated: two roots");
    kept("root rotation").await;
    // The running Sentry still signs JWT-SVIDs the published JWKS verifies.
    let ns = "apps-jwt-rotate";
    create_namespace(&kc, ns).await;
    let (_, token) = workload(&kc, ns, "app-0", "app", &[("dapr.io/app-id", "app")]).await;
    let svid = jwt_svid(&s, &anchors, cp, ns, &token).await;
    verify_against(&published, vec![svid], &["public", "api.example.com"]).await;
}
