//! The OIDC discovery server against the real binary: discovery document and JWKS over HTTP and
//! HTTPS, headers, methods, path prefix, allowed hosts, and `X-Forwarded-Host` unable to change
//! the issuer or `jwks_uri` unless a concrete allow-list entry vouches for it.

mod common;
#[path = "common/jwt.rs"]
mod jwt_common;

use std::net::SocketAddr;

use common::*;
use jwt_common::*;

fn oidc_opts(port: u16) -> Opts {
    Opts::default()
        .arg("--jwt-enabled")
        .arg("--jwt-signing-algorithm=ES256")
        .arg("--oidc-enabled")
        .arg("--oidc-server-listen-address=127.0.0.1")
        .arg(&format!("--oidc-server-listen-port={port}"))
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

#[tokio::test]
async fn discovery_and_jwks_over_plain_http() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let s = Sentry::start(
        tmp.path(),
        oidc_opts(port)
            .arg("--oidc-server-tls-enabled=false")
            .arg("--oidc-path-prefix=/auth/"),
    );
    let host = format!("127.0.0.1:{port}");
    let r = http(
        addr(port),
        "GET",
        "/auth/.well-known/openid-configuration",
        &[("Host", &host)],
    )
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("cache-control"), Some("public, max-age=3600"));
    let d = r.json();
    assert_eq!(d["issuer"], format!("http://{host}"));
    assert_eq!(d["jwks_uri"], format!("http://{host}/auth/jwks.json"));
    assert_eq!(
        d["id_token_signing_alg_values_supported"],
        serde_json::json!(["ES256"])
    );
    assert_eq!(d["subject_types_supported"], serde_json::json!(["public"]));
    assert_eq!(d["scopes_supported"], serde_json::json!(["openid"]));
    assert_eq!(
        d["claims_supported"],
        serde_json::json!(["sub", "iss", "aud", "exp", "iat", "nbf", "use"])
    );

    let r = http(addr(port), "GET", "/auth/jwks.json", &[("Host", &host)]).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("cache-control"), Some("public, max-age=3600"));
    let file: serde_json::Value =
        serde_json::from_slice(&std::fs::read(s.creds().join("jwks.json")).unwrap()).unwrap();
    assert_eq!(r.json(), file);
    assert_eq!(file["keys"][0]["kty"], "EC");
    assert_eq!(file["keys"][0]["crv"], "P-256");

    assert_eq!(
        http(addr(port), "GET", "/jwks.json", &[("Host", &host)])
            .unwrap()
            .status,
        404
    );
    assert_eq!(
        http(addr(port), "POST", "/auth/jwks.json", &[("Host", &host)])
            .unwrap()
            .status,
        405
    );
    assert_eq!(
        http(
            addr(port),
            "DELETE",
            "/auth/.well-known/openid-configuration",
            &[("Host", &host)]
        )
        .unwrap()
        .status,
        405
    );
}

#[tokio::test]
async fn discovery_and_jwks_over_https() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let (cert, key) = ca.write_server_cert(tmp.path());
    let port = free_port();
    let s = Sentry::start(
        tmp.path(),
        oidc_opts(port)
            .arg(&format!("--oidc-server-tls-cert-file={cert}"))
            .arg(&format!("--oidc-server-tls-key-file={key}")),
    );
    let host = format!("localhost:{port}");
    let r = https_get(
        addr(port),
        "localhost",
        "/.well-known/openid-configuration",
        &ca.cert_pem,
        &[("Host", &host)],
    )
    .await;
    assert_eq!(r.status, 200);
    let d = r.json();
    assert_eq!(d["issuer"], format!("https://{host}"));
    assert_eq!(d["jwks_uri"], format!("https://{host}/jwks.json"));
    let r = https_get(
        addr(port),
        "localhost",
        "/jwks.json",
        &ca.cert_pem,
        &[("Host", &host)],
    )
    .await;
    assert_eq!(r.status, 200);
    let file: serde_json::Value =
        serde_json::from_slice(&std::fs::read(s.creds().join("jwks.json")).unwrap()).unwrap();
    assert_eq!(r.json(), file);
    // Plain HTTP on the TLS port gets nothing useful.
    assert!(
        http(addr(port), "GET", "/jwks.json", &[("Host", &host)]).is_none_or(|r| r.status != 200)
    );
}

#[tokio::test]
async fn allowed_hosts_and_forged_forwarded_host() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let _s = Sentry::start(
        tmp.path(),
        oidc_opts(port)
            .arg("--oidc-server-tls-enabled=false")
            .arg("--oidc-allowed-hosts=sentry.example.com,proxy.example.com"),
    );
    let get = |headers: &[(&str, &str)]| {
        http(
            addr(port),
            "GET",
            "/.well-known/openid-configuration",
            headers,
        )
        .unwrap()
    };
    let r = get(&[("Host", "evil.example.com")]);
    assert_eq!(
        (r.status, r.body.as_str()),
        (403, "Forbidden: unauthorized domain")
    );
    assert_eq!(
        http(
            addr(port),
            "GET",
            "/jwks.json",
            &[("Host", "evil.example.com")]
        )
        .unwrap()
        .status,
        403
    );
    assert_eq!(
        get(&[
            ("Host", "sentry.example.com"),
            ("X-Forwarded-Host", "evil.example.com")
        ])
        .status,
        403
    );
    let d = get(&[("Host", "sentry.example.com:9080")]).json();
    assert_eq!(d["issuer"], "http://sentry.example.com:9080");
    // Explicitly allowed forwarded host: used for the issuer and jwks_uri.
    let d = get(&[
        ("Host", "sentry.example.com"),
        ("X-Forwarded-Host", "proxy.example.com"),
    ])
    .json();
    assert_eq!(d["issuer"], "http://proxy.example.com");
    assert_eq!(d["jwks_uri"], "http://proxy.example.com/jwks.json");

    // Wildcard or no allow-list: any host, and X-Forwarded-Host never reaches the document.
    for hosts in ["--oidc-allowed-hosts=*", "--oidc-allowed-hosts="] {
        let tmp = tempfile::tempdir().unwrap();
        let port = free_port();
        let _s = Sentry::start(
            tmp.path(),
            oidc_opts(port)
                .arg("--oidc-server-tls-enabled=false")
                .arg(hosts),
        );
        let r = http(
            addr(port),
            "GET",
            "/.well-known/openid-configuration",
            &[
                ("Host", "real.example.com"),
                ("X-Forwarded-Host", "evil.example.com"),
            ],
        )
        .unwrap();
        assert_eq!(r.status, 200, "{hosts}");
        let d = r.json();
        assert_eq!(d["issuer"], "http://real.example.com", "{hosts}");
        assert_eq!(
            d["jwks_uri"], "http://real.example.com/jwks.json",
            "{hosts}"
        );
    }
}

#[tokio::test]
async fn configured_issuer_and_jwks_uri_win_over_request_headers() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let _s = Sentry::start(
        tmp.path(),
        oidc_opts(port)
            .arg("--oidc-server-tls-enabled=false")
            .arg("--jwt-issuer=https://issuer.example.com")
            .arg("--oidc-jwks-uri=https://cdn.example.com/keys.json"),
    );
    let d = http(
        addr(port),
        "GET",
        "/.well-known/openid-configuration",
        &[("Host", "x"), ("X-Forwarded-Host", "evil.example.com")],
    )
    .unwrap()
    .json();
    assert_eq!(d["issuer"], "https://issuer.example.com");
    assert_eq!(d["jwks_uri"], "https://cdn.example.com/keys.json");
}

#[test]
fn oidc_tls_without_files_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run_to_exit(tmp.path(), oidc_opts(free_port()));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("--oidc-server-tls-cert-file"));
}
