//! gRPC status codes as Dapr's sentry (gRPC-Go) sends them where tonic's differ: a request larger
//! than the receive limit is `RESOURCE_EXHAUSTED` in gRPC-Go and `OUT_OF_RANGE` in tonic's
//! decoder. Sentry's own handler never answers `OUT_OF_RANGE` (see `crate::error`), so every such
//! answer is the decoder's, rewritten here before it leaves. A request whose content-type is not
//! gRPC's gets gRPC-Go's early answer: HTTP 415 with `INVALID_ARGUMENT`.

use http::header::{HeaderValue, CONTENT_TYPE};
use http::StatusCode;

const GRPC_STATUS: &str = "grpc-status";
const OUT_OF_RANGE: &str = "11";
const RESOURCE_EXHAUSTED: &str = "8";

/// Rewrites a trailers-only `OUT_OF_RANGE` answer (the decoder's "message length too large") to
/// gRPC-Go's `RESOURCE_EXHAUSTED`; any other response passes unchanged.
pub fn as_grpc_go<B>(mut response: http::Response<B>) -> http::Response<B> {
    let headers = response.headers_mut();
    if headers.get(GRPC_STATUS).is_some_and(|v| v == OUT_OF_RANGE) {
        headers.insert(GRPC_STATUS, HeaderValue::from_static(RESOURCE_EXHAUSTED));
    }
    response
}

const GRPC: &str = "application/grpc";
/// Longest prefix of a refused content-type quoted back.
const QUOTED_MAX: usize = 64;

/// True for gRPC-Go's valid content-types: `application/grpc`, or it followed by `+` or `;`.
fn is_grpc(content_type: &[u8]) -> bool {
    match content_type.strip_prefix(GRPC.as_bytes()) {
        Some(rest) => rest.is_empty() || matches!(rest[0], b'+' | b';'),
        None => false,
    }
}

/// gRPC-Go's answer to a request that is not gRPC (`None` if it is): HTTP 415, `INVALID_ARGUMENT`
/// "invalid gRPC request content-type …" (the value quoted, cut to 64 bytes).
pub fn refuse_non_grpc<B, R>(req: &http::Request<B>) -> Option<http::Response<R>>
where
    R: Default,
{
    let value = req.headers().get(CONTENT_TYPE);
    let bytes = value.map_or(&b""[..], |v| v.as_bytes());
    if is_grpc(bytes) {
        return None;
    }
    let shown = String::from_utf8_lossy(&bytes[..bytes.len().min(QUOTED_MAX)]).into_owned();
    let mut response =
        tonic::Status::invalid_argument(format!("invalid gRPC request content-type {shown:?}"))
            .into_http::<R>();
    *response.status_mut() = StatusCode::UNSUPPORTED_MEDIA_TYPE;
    Some(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_out_of_range_is_rewritten() {
        let status = |code: tonic::Code| {
            let r = as_grpc_go(tonic::Status::new(code, "m").into_http::<()>());
            tonic::Status::from_header_map(r.headers()).map(|s| s.code())
        };
        assert_eq!(
            status(tonic::Code::OutOfRange),
            Some(tonic::Code::ResourceExhausted)
        );
        for code in [
            tonic::Code::PermissionDenied,
            tonic::Code::InvalidArgument,
            tonic::Code::Internal,
        ] {
            assert_eq!(status(code), Some(code));
        }
        let ok = as_grpc_go(http::Response::new(()));
        assert!(ok.headers().get(GRPC_STATUS).is_none());
    }

    #[test]
    fn content_types_as_grpc_go_checks_them() {
        for ok in [
            "application/grpc",
            "application/grpc+proto",
            "application/grpc;x=y",
        ] {
            assert!(is_grpc(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "",
            "text/plain",
            "application/grpcx",
            "application/json",
            "APPLICATION/GRPC",
        ] {
            assert!(!is_grpc(bad.as_bytes()), "{bad}");
        }
        let req = http::Request::post("/x")
            .header(CONTENT_TYPE, "text/plain")
            .body(())
            .unwrap();
        let r: http::Response<()> = refuse_non_grpc(&req).unwrap();
        assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
        let status = tonic::Status::from_header_map(r.headers()).unwrap();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert_eq!(
            status.message(),
            "invalid gRPC request content-type \"text/plain\""
        );
    }
}
