//! gRPC status codes as Dapr's sentry (gRPC-Go) sends them where tonic's differ: a request larger
//! than the receive limit is `RESOURCE_EXHAUSTED` in gRPC-Go and `OUT_OF_RANGE` in tonic's
//! decoder. Sentry's own handler never answers `OUT_OF_RANGE` (see `crate::error`), so every such
//! answer is the decoder's, rewritten here before it leaves.

use http::header::HeaderValue;

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
}
