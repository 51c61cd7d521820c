//! The OIDC discovery endpoints (Dapr §7.4): `<prefix>/.well-known/openid-configuration` and
//! `<prefix>/jwks.json`, GET only, behind an optional host allow-list. `X-Forwarded-Host` shapes
//! the announced issuer and `jwks_uri` only when it matched a concrete allow-list entry (the
//! v1.18 fix for issuer injection). The listener itself lives in [`super::oidc_listener`].

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;

use std::path::PathBuf;

use super::listen_addr::ListenAddr;

/// TLS files of the OIDC server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcTls {
    /// Certificate chain (PEM).
    pub cert: PathBuf,
    /// Private key (PEM).
    pub key: PathBuf,
}

/// OIDC discovery server settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcConfig {
    /// Listener.
    pub listen: ListenAddr,
    /// TLS, when configured; plain HTTP otherwise.
    pub tls: Option<OidcTls>,
    /// Forced `jwks_uri`.
    pub jwks_uri: Option<String>,
    /// Path prefix (`""` or `/something`, no trailing slash).
    pub path_prefix: String,
    /// Allowed host names (empty = any).
    pub allowed_hosts: Vec<String>,
}

/// `Cache-Control` of both documents.
pub const CACHE_CONTROL: &str = "public, max-age=3600";
/// Path of the discovery document (after the prefix).
pub const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";
/// Path of the key set (after the prefix).
pub const JWKS_PATH: &str = "/jwks.json";
/// Claims listed in the discovery document.
const CLAIMS: [&str; 7] = ["sub", "iss", "aud", "exp", "iat", "nbf", "use"];

/// What the OIDC endpoints serve.
#[derive(Debug, Clone)]
pub struct OidcSite {
    /// The JWKS JSON; `None` answers 404.
    pub jwks: Option<Bytes>,
    /// Signature algorithm announced.
    pub algorithm: String,
    /// `--jwt-issuer`, when set.
    pub issuer: Option<String>,
    /// `--oidc-jwks-uri`, when set.
    pub jwks_uri: Option<String>,
    /// Path prefix (`""` or `/x`).
    pub path_prefix: String,
    /// Allowed hosts (empty = any).
    pub allowed_hosts: Vec<String>,
    /// `https` when served over TLS.
    pub scheme: &'static str,
}

impl OidcSite {
    /// The site for `config`, serving `jwks` signed with `algorithm`.
    pub fn new(config: &OidcConfig, jwks: Bytes, algorithm: &str, issuer: Option<String>) -> Self {
        Self {
            jwks: Some(jwks),
            algorithm: algorithm.to_owned(),
            issuer,
            jwks_uri: config.jwks_uri.clone(),
            path_prefix: config.path_prefix.clone(),
            allowed_hosts: config.allowed_hosts.clone(),
            scheme: if config.tls.is_some() {
                "https"
            } else {
                "http"
            },
        }
    }

    /// The router serving both endpoints (everything else is 404).
    pub fn router(self) -> Router {
        let discovery = format!("{}{DISCOVERY_PATH}", self.path_prefix);
        let jwks = format!("{}{JWKS_PATH}", self.path_prefix);
        Router::new()
            .route(&discovery, any(discovery_handler))
            .route(&jwks, any(jwks_handler))
            .with_state(Arc::new(self))
    }

    /// The host to answer for: `Err` is the response refusing the request.
    fn host(&self, headers: &HeaderMap) -> Result<String, Refusal> {
        let header_str = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.split(',').next().unwrap_or("").trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let host = header_str(header::HOST.as_str());
        let forwarded = header_str("x-forwarded-host");
        if !self.allowed_hosts.is_empty() {
            let Some(candidate) = forwarded.as_deref().or(host.as_deref()) else {
                return Err(Refusal::Forbidden);
            };
            let allowed =
                self.allowed_hosts.iter().any(|a| a == "*") || self.matches_concrete(candidate);
            if !allowed {
                return Err(Refusal::Forbidden);
            }
        }
        // The forwarded host names the issuer only when a concrete allow-list entry vouched for it.
        let chosen = match forwarded {
            Some(f) if self.matches_concrete(&f) => f,
            _ => host.ok_or(Refusal::BadRequest("missing Host header"))?,
        };
        if !chosen
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._:[]".contains(&b))
        {
            return Err(Refusal::BadRequest("invalid host"));
        }
        Ok(chosen)
    }

    fn matches_concrete(&self, host: &str) -> bool {
        let without_port = strip_port(host);
        self.allowed_hosts
            .iter()
            .filter(|a| *a != "*")
            .any(|a| a == host || a == without_port)
    }

    fn discovery(&self, host: &str) -> serde_json::Value {
        let issuer = self
            .issuer
            .clone()
            .unwrap_or_else(|| format!("{}://{host}", self.scheme));
        let jwks_path = format!("{}{JWKS_PATH}", self.path_prefix);
        let jwks_uri = self.jwks_uri.clone().unwrap_or_else(|| {
            // Resolved against the issuer when it is an absolute URL, else against the request.
            match self
                .issuer
                .as_deref()
                .and_then(|i| i.parse::<axum::http::Uri>().ok())
            {
                Some(u) if u.scheme().is_some() && u.authority().is_some() => format!(
                    "{}://{}{jwks_path}",
                    u.scheme_str().unwrap_or(self.scheme),
                    u.authority().map(|a| a.as_str()).unwrap_or(host)
                ),
                _ => format!("{}://{host}{jwks_path}", self.scheme),
            }
        });
        serde_json::json!({
            "issuer": issuer,
            "jwks_uri": jwks_uri,
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": [self.algorithm],
            "scopes_supported": ["openid"],
            "claims_supported": CLAIMS,
        })
    }
}

fn strip_port(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !h.ends_with(':') => h,
        _ => host,
    }
}

/// Why a request is not answered with a document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    Forbidden,
    BadRequest(&'static str),
    MethodNotAllowed,
    NotFound,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::Forbidden => {
                (StatusCode::FORBIDDEN, "Forbidden: unauthorized domain").into_response()
            }
            Refusal::BadRequest(why) => (StatusCode::BAD_REQUEST, why).into_response(),
            Refusal::MethodNotAllowed => {
                (StatusCode::METHOD_NOT_ALLOWED, "Method not allowed").into_response()
            }
            Refusal::NotFound => (StatusCode::NOT_FOUND, "JWKS not available").into_response(),
        }
    }
}

fn json(body: Bytes) -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static(CACHE_CONTROL),
            ),
        ],
        body,
    )
        .into_response()
}

/// Host, method and JWKS checks shared by both endpoints, in Dapr's order.
fn precheck(site: &OidcSite, method: &Method, headers: &HeaderMap) -> Result<String, Refusal> {
    let host = site.host(headers)?;
    if method != Method::GET {
        return Err(Refusal::MethodNotAllowed);
    }
    if site.jwks.is_none() {
        return Err(Refusal::NotFound);
    }
    Ok(host)
}

async fn discovery_handler(
    State(site): State<Arc<OidcSite>>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    match precheck(&site, &method, &headers) {
        Ok(host) => json(Bytes::from(site.discovery(&host).to_string())),
        Err(r) => r.into_response(),
    }
}

async fn jwks_handler(
    State(site): State<Arc<OidcSite>>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    match (precheck(&site, &method, &headers), &site.jwks) {
        (Ok(_), Some(jwks)) => json(jwks.clone()),
        (Err(r), _) => r.into_response(),
        (Ok(_), None) => Refusal::NotFound.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    fn site() -> OidcSite {
        OidcSite {
            jwks: Some(Bytes::from_static(br#"{"keys":[]}"#)),
            algorithm: "RS256".into(),
            issuer: None,
            jwks_uri: None,
            path_prefix: String::new(),
            allowed_hosts: Vec::new(),
            scheme: "http",
        }
    }

    async fn get(
        site: OidcSite,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (StatusCode, HeaderMap, String) {
        let mut req = Request::builder().method(method).uri(path);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = site
            .router()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let hdrs = resp.headers().clone();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, hdrs, String::from_utf8_lossy(&body).into_owned())
    }

    fn doc(body: &str) -> serde_json::Value {
        serde_json::from_str(body).unwrap()
    }

    #[tokio::test]
    async fn documents_headers_methods_and_missing_jwks() {
        let (s, h, body) = get(site(), "GET", DISCOVERY_PATH, &[("host", "sentry:9080")]).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(h[header::CONTENT_TYPE], "application/json");
        assert_eq!(h[header::CACHE_CONTROL], CACHE_CONTROL);
        let d = doc(&body);
        assert_eq!(d["issuer"], "http://sentry:9080");
        assert_eq!(d["jwks_uri"], "http://sentry:9080/jwks.json");
        assert_eq!(
            d["id_token_signing_alg_values_supported"],
            serde_json::json!(["RS256"])
        );
        assert_eq!(
            d["response_types_supported"],
            serde_json::json!(["id_token"])
        );
        let (s, _, body) = get(site(), "GET", JWKS_PATH, &[("host", "x")]).await;
        assert_eq!((s, body.as_str()), (StatusCode::OK, r#"{"keys":[]}"#));
        for m in ["POST", "PUT", "DELETE", "HEAD"] {
            assert_eq!(
                get(site(), m, JWKS_PATH, &[("host", "x")]).await.0,
                StatusCode::METHOD_NOT_ALLOWED,
                "{m}"
            );
        }
        let mut empty = site();
        empty.jwks = None;
        assert_eq!(
            get(empty.clone(), "GET", JWKS_PATH, &[("host", "x")])
                .await
                .0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            get(empty, "GET", DISCOVERY_PATH, &[("host", "x")]).await.0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            get(site(), "GET", "/other", &[("host", "x")]).await.0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            get(site(), "GET", DISCOVERY_PATH, &[("host", "a\"b")])
                .await
                .0,
            StatusCode::BAD_REQUEST
        );
    }

    #[tokio::test]
    async fn prefix_issuer_jwks_uri_and_tls_scheme() {
        let mut s = site();
        s.path_prefix = "/auth".into();
        s.issuer = Some("https://issuer.example.com/base".into());
        s.scheme = "https";
        assert_eq!(
            get(s.clone(), "GET", DISCOVERY_PATH, &[("host", "x")])
                .await
                .0,
            StatusCode::NOT_FOUND
        );
        let (st, _, body) = get(
            s.clone(),
            "GET",
            "/auth/.well-known/openid-configuration",
            &[("host", "x")],
        )
        .await;
        assert_eq!(st, StatusCode::OK);
        let d = doc(&body);
        assert_eq!(d["issuer"], "https://issuer.example.com/base");
        assert_eq!(d["jwks_uri"], "https://issuer.example.com/auth/jwks.json");
        s.issuer = Some("plain-issuer".into());
        s.jwks_uri = None;
        let d = doc(&get(
            s.clone(),
            "GET",
            "/auth/.well-known/openid-configuration",
            &[("host", "h:1")],
        )
        .await
        .2);
        assert_eq!(d["jwks_uri"], "https://h:1/auth/jwks.json");
        s.jwks_uri = Some("https://cdn.example.com/keys".into());
        let d = doc(&get(
            s,
            "GET",
            "/auth/.well-known/openid-configuration",
            &[("host", "x")],
        )
        .await
        .2);
        assert_eq!(d["jwks_uri"], "https://cdn.example.com/keys");
    }

    #[tokio::test]
    async fn allowed_hosts_and_forwarded_host() {
        // No allow-list: any host; X-Forwarded-Host is ignored for the issuer.
        let d = doc(&get(
            site(),
            "GET",
            DISCOVERY_PATH,
            &[("host", "real"), ("x-forwarded-host", "evil")],
        )
        .await
        .2);
        assert_eq!(d["issuer"], "http://real");
        // Concrete allow-list: others are refused; port stripped as a fallback.
        let mut s = site();
        s.allowed_hosts = vec!["sentry.example.com".into(), "proxy.example.com".into()];
        assert_eq!(
            get(s.clone(), "GET", DISCOVERY_PATH, &[("host", "other")])
                .await
                .0,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            get(
                s.clone(),
                "GET",
                DISCOVERY_PATH,
                &[("host", "sentry.example.com:9080")]
            )
            .await
            .0,
            StatusCode::OK
        );
        assert_eq!(
            get(
                s.clone(),
                "GET",
                DISCOVERY_PATH,
                &[("host", "sentry.example.com"), ("x-forwarded-host", "evil")]
            )
            .await
            .0,
            StatusCode::FORBIDDEN
        );
        let d = doc(&get(
            s.clone(),
            "GET",
            DISCOVERY_PATH,
            &[
                ("host", "sentry.example.com"),
                ("x-forwarded-host", "proxy.example.com"),
            ],
        )
        .await
        .2);
        assert_eq!(d["issuer"], "http://proxy.example.com");
        // Wildcard: any host, but the forwarded host never names the issuer.
        s.allowed_hosts = vec!["*".into()];
        let d = doc(&get(
            s,
            "GET",
            DISCOVERY_PATH,
            &[("host", "real"), ("x-forwarded-host", "evil")],
        )
        .await
        .2);
        assert_eq!(d["issuer"], "http://real");
        assert_eq!(d["jwks_uri"], "http://real/jwks.json");
    }

    #[test]
    fn port_stripping() {
        assert_eq!(strip_port("a.b:80"), "a.b");
        assert_eq!(strip_port("a.b"), "a.b");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
    }
}
