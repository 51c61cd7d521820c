//! JWT-SVIDs (`--jwt-enabled`): tokens issued over real TLS, verified by an independent library
//! (PyJWT) against the JWKS fetched from Sentry's own OIDC endpoint, claim by claim; the JWT key
//! files (generated, reused, supplied with a user key id, refused when they do not match).

mod common;
#[path = "common/jwt.rs"]
mod jwt_common;

use std::process::Command;

use common::*;
use jwt_common::*;
use sentry_core::bundle::KeyType;

const SKEW: i64 = 15 * 60;

fn jwt_args(alg: &str, oidc_port: u16) -> Opts {
    Opts::default()
        .arg("--jwt-enabled")
        .arg("--jwt-signing-algorithm")
        .arg(alg)
        .arg("--jwt-ttl")
        .arg("2h")
        .arg("--oidc-enabled")
        .arg("--oidc-server-tls-enabled=false")
        .arg("--oidc-server-listen-address")
        .arg("127.0.0.1")
        .arg("--oidc-server-listen-port")
        .arg(&oidc_port.to_string())
}

#[tokio::test]
async fn jwt_svids_verify_with_pyjwt_against_the_served_jwks() {
    for (alg, issuer) in [
        ("RS256", None),
        ("ES256", Some("https://issuer.example.com")),
        ("EdDSA", Some("")),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let oidc = free_port();
        let mut opts = jwt_args(alg, oidc);
        if let Some(iss) = issuer {
            opts = opts.arg(&format!("--jwt-issuer={iss}"));
        }
        let s = Sentry::start(tmp.path(), opts);
        let mut req = request("myapp", "default", KeyType::Ed25519);
        req.trust_domain = "example.org".into();
        req.jwt_audiences = vec!["api.example.com".into(), "db".into()];
        let before = ::time::OffsetDateTime::now_utc().unix_timestamp();
        let resp = sign(&s, req).await.unwrap();
        let after = ::time::OffsetDateTime::now_utc().unix_timestamp();

        let base = resp.jwt.clone().expect("jwt present");
        let all = vec![
            "example.org".to_owned(),
            "api.example.com".to_owned(),
            "db".to_owned(),
        ];
        assert_eq!(resp.per_audience_jwts.len(), 3, "{alg}");
        let mut tokens = vec![base];
        let mut auds = vec![all.clone()];
        for a in &all {
            tokens.push(resp.per_audience_jwts[a].clone());
            auds.push(vec![a.clone()]);
        }
        let url = format!("http://127.0.0.1:{oidc}/jwks.json");
        let decoded = pyjwt_verify(&url, alg, &tokens, &auds, issuer);
        let served = http(
            format!("127.0.0.1:{oidc}").parse().unwrap(),
            "GET",
            "/jwks.json",
            &[("Host", "127.0.0.1")],
        )
        .unwrap()
        .json();
        let kid = served["keys"][0]["kid"].as_str().unwrap().to_owned();
        assert_eq!(served["keys"][0]["alg"], alg);
        assert_eq!(served["keys"][0]["use"], "sig");

        let mut jtis = std::collections::BTreeSet::new();
        for (d, aud) in decoded.iter().zip(&auds) {
            let (h, c) = (&d["header"], &d["claims"]);
            assert_eq!(h["alg"], alg);
            assert_eq!(h["kid"], kid.as_str());
            assert_eq!(h["typ"], "JWT");
            assert_eq!(c["sub"], "spiffe://example.org/ns/default/myapp");
            assert_eq!(c["aud"], serde_json::json!(aud), "aud is always an array");
            assert_eq!(c["use"], "sig");
            let iat = c["iat"].as_i64().unwrap();
            assert!((before..=after).contains(&iat), "{iat}");
            assert_eq!(c["nbf"].as_i64().unwrap(), iat - SKEW);
            assert_eq!(c["exp"].as_i64().unwrap(), iat + 2 * 3600);
            match issuer {
                Some(i) => assert_eq!(c["iss"], i),
                None => assert!(c.get("iss").is_none(), "no iss without --jwt-issuer"),
            }
            let jti = c["jti"].as_str().unwrap();
            assert!(
                jti.len() == 32
                    && jti
                        .bytes()
                        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            );
            jtis.insert(jti.to_owned());
            let keys: std::collections::BTreeSet<_> =
                c.as_object().unwrap().keys().cloned().collect();
            let mut expected = vec!["aud", "exp", "iat", "jti", "nbf", "sub", "use"];
            if issuer.is_some() {
                expected.push("iss");
            }
            assert_eq!(
                keys,
                expected.into_iter().map(String::from).collect(),
                "{alg}"
            );
        }
        assert_eq!(jtis.len(), 4, "every token has its own jti");
    }
}

#[tokio::test]
async fn jwt_files_are_generated_0600_and_reused_and_absent_when_disabled() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = Opts::default()
        .arg("--jwt-enabled")
        .arg("--jwt-key-filename")
        .arg("ignored.key");
    let s = Sentry::start(tmp.path(), opts.clone());
    let resp = sign(&s, request("a", "default", KeyType::Ed25519))
        .await
        .unwrap();
    let token = resp.jwt.unwrap();
    assert_eq!(resp.per_audience_jwts["public"], token, "single audience");
    drop(s);
    let creds = tmp.path().join("creds");
    for f in ["jwt.key", "jwks.json"] {
        assert_eq!(file_mode(&creds.join(f)), 0o600, "{f}");
    }
    assert!(
        !creds.join("ignored.key").exists(),
        "relative names are ignored (Dapr quirk)"
    );
    let jwks_before = std::fs::read(creds.join("jwks.json")).unwrap();
    let jwks: serde_json::Value = serde_json::from_slice(&jwks_before).unwrap();
    assert_eq!(jwks["keys"][0]["kty"], "RSA", "RS256 by default");
    let key_out = run_ok(
        Command::new("openssl")
            .args(["pkey", "-noout", "-text", "-in"])
            .arg(creds.join("jwt.key")),
    );
    assert!(key_out.contains("2048 bit"), "RSA-2048: {key_out}");

    let s = Sentry::start(tmp.path(), opts);
    let again = sign(&s, request("a", "default", KeyType::Ed25519))
        .await
        .unwrap();
    assert!(again.jwt.is_some());
    assert_eq!(
        std::fs::read(creds.join("jwks.json")).unwrap(),
        jwks_before,
        "reused"
    );
    drop(s);

    let s = Sentry::start(tmp.path(), Opts::default());
    let plain = sign(&s, request("a", "default", KeyType::Ed25519))
        .await
        .unwrap();
    assert!(plain.jwt.is_none() && plain.per_audience_jwts.is_empty());
}

#[tokio::test]
async fn supplied_openssl_key_with_user_key_id() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let key = keys.join("signing.pem");
    run_ok(
        Command::new("openssl")
            .args(["genpkey", "-algorithm", "ed25519", "-out"])
            .arg(&key),
    );
    let der = Command::new("openssl")
        .args(["pkey", "-pubout", "-outform", "DER", "-in"])
        .arg(&key)
        .output()
        .unwrap()
        .stdout;
    let x = sentry_core::jose::b64url(&der[der.len() - 32..]);
    let jwks = serde_json::json!({"keys": [
        {"kty": "OKP", "crv": "Ed25519", "x": sentry_core::jose::b64url(&[7u8; 32]), "kid": "old-key", "use": "sig"},
        {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": "my-key", "use": "sig", "alg": "EdDSA"},
    ]});
    let jwks_path = keys.join("jwks.json");
    std::fs::write(&jwks_path, jwks.to_string()).unwrap();
    let oidc = free_port();
    let opts = |key_id: &str| {
        jwt_args("EdDSA", oidc)
            .arg("--jwt-key-filename")
            .arg(key.to_str().unwrap())
            .arg("--jwks-filename")
            .arg(jwks_path.to_str().unwrap())
            .arg("--jwt-key-id")
            .arg(key_id)
    };
    let s = Sentry::start(tmp.path(), opts("my-key"));
    let resp = sign(&s, request("svc", "prod", KeyType::Ed25519))
        .await
        .unwrap();
    let token = resp.jwt.unwrap();
    let url = format!("http://127.0.0.1:{oidc}/jwks.json");
    let d = pyjwt_verify(&url, "EdDSA", &[token], &[vec!["public".into()]], None);
    assert_eq!(d[0]["header"]["kid"], "my-key");
    assert_eq!(d[0]["claims"]["sub"], "spiffe://public/ns/prod/svc");
    let served = http(
        format!("127.0.0.1:{oidc}").parse().unwrap(),
        "GET",
        "/jwks.json",
        &[("Host", "x")],
    )
    .unwrap()
    .json();
    assert_eq!(served, jwks, "the supplied JWKS is served, every key");
    drop(s);

    // A JWKS that does not publish the key under the required id stops start-up.
    let out = run_to_exit(tmp.path(), opts("old-key"));
    assert!(!out.status.success());
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(log.contains("doesn't match the signing key"), "{log}");
    // So does a key that does not fit the algorithm.
    let out = run_to_exit(
        tmp.path(),
        Opts::default()
            .arg("--jwt-enabled")
            .arg("--jwt-key-filename")
            .arg(key.to_str().unwrap())
            .arg("--jwks-filename")
            .arg(jwks_path.to_str().unwrap()),
    );
    assert!(!out.status.success());
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(
        log.contains("not compatible with signature algorithm RS256"),
        "{log}"
    );
}

#[test]
fn jwt_issuer_without_jwt_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run_to_exit(tmp.path(), Opts::default().arg("--jwt-issuer").arg("x"));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("--jwt-issuer"));
}
