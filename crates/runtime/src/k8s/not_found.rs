//! A 404 answered without a Kubernetes `Status` body means "not found". kube-rs maps such an
//! answer (a proxy's or a minimal API server's plain `404`) to an error whose reason is not
//! `NotFound`, so `get_opt` fails instead of returning `None`; client-go reads the same answer as
//! `NotFound`. This module owns the one response filter, on every API call of the client, that
//! gives such an answer the `Status` body a real API server sends; it touches no other response.

use http::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use kube::client::DynBody;
use tower::BoxError;

/// A `Status` body is a few hundred bytes; a longer 404 body is not one.
const MAX_STATUS_BODY: usize = 64 * 1024;

/// The `Status` a real API server sends for a missing object (client-go's message, and why).
const NOT_FOUND_STATUS: &[u8] = br#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"the server could not find the requested resource (a 404 without a Status body)","reason":"NotFound","code":404}"#;

/// Passes every response through, except a 404 whose body is not a `Status` with a reason:
/// that one gets [`NOT_FOUND_STATUS`] as its body.
pub(super) async fn classify(
    res: Response<Box<DynBody>>,
) -> Result<Response<Box<DynBody>>, BoxError> {
    if res.status() != StatusCode::NOT_FOUND {
        return Ok(res);
    }
    let (mut parts, body) = res.into_parts();
    let status_body = read_bounded(body).await?.filter(|b| has_reason(b));
    let body = status_body.map(Bytes::from).unwrap_or_else(|| {
        parts
            .headers
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        parts.headers.remove(CONTENT_LENGTH);
        Bytes::from_static(NOT_FOUND_STATUS)
    });
    let body: Box<DynBody> = Box::new(Full::new(body).map_err(|never| match never {}));
    Ok(Response::from_parts(parts, body))
}

/// The body, or `None` when it is longer than [`MAX_STATUS_BODY`] (then it is no `Status`).
async fn read_bounded(mut body: Box<DynBody>) -> Result<Option<Vec<u8>>, BoxError> {
    let mut buf = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            if buf.len() + data.len() > MAX_STATUS_BODY {
                return Ok(None);
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(Some(buf))
}

/// True when `body` is a JSON `Status` that says why (kube-rs then classifies it itself).
fn has_reason(body: &[u8]) -> bool {
    serde_json::from_slice::<kube::core::Status>(body).is_ok_and(|s| !s.reason.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn through(code: u16, body: &'static str) -> (u16, kube::core::Status) {
        let body: Box<DynBody> = Box::new(
            Full::new(Bytes::from_static(body.as_bytes())).map_err(|never| match never {}),
        );
        let res = Response::builder().status(code).body(body).unwrap();
        let out = classify(res).await.unwrap();
        let code = out.status().as_u16();
        let bytes = out.into_body().collect().await.unwrap().to_bytes();
        (code, serde_json::from_slice(&bytes).unwrap_or_default())
    }

    #[tokio::test]
    async fn bare_404_becomes_not_found() {
        for body in ["", "404 page not found\n", "{}", "<html>gone</html>"] {
            let (code, status) = through(404, body).await;
            assert_eq!(code, 404);
            assert!(status.is_not_found(), "{body:?} -> {status:?}");
        }
    }

    #[tokio::test]
    async fn status_bodies_and_other_codes_pass_unchanged() {
        let gone = r#"{"kind":"Status","status":"Failure","reason":"NotFound","message":"secrets \"x\" not found","code":404}"#;
        let (_, status) = through(404, gone).await;
        assert_eq!(status.message, "secrets \"x\" not found");
        let forbidden = r#"{"kind":"Status","status":"Failure","reason":"Forbidden","code":403}"#;
        let (code, status) = through(403, forbidden).await;
        assert_eq!((code, status.reason.as_str()), (403, "Forbidden"));
        let (code, status) = through(403, "").await;
        assert_eq!((code, status.is_not_found()), (403, false));
    }
}
