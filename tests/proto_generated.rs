//! `src/pb/dapr.proto.sentry.v1.rs` is checked in, so that building Sentry compiles no protobuf
//! compiler: it must be exactly what tonic-prost-build generates from `proto/` (with protox, so no
//! protoc). After changing the proto: `REGENERATE_PROTO=1 cargo test --test proto_generated`.

use std::path::Path;

#[test]
fn checked_in_code_is_what_the_proto_generates() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tmp = tempfile::tempdir().unwrap();
    let fds = protox::compile(["dapr/proto/sentry/v1/sentry.proto"], [root.join("proto")]).unwrap();
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .out_dir(tmp.path())
        .compile_fds(fds)
        .unwrap();
    let name = "dapr.proto.sentry.v1.rs";
    let fresh = std::fs::read_to_string(tmp.path().join(name)).unwrap();
    let kept_path = root.join("src/pb").join(name);
    if std::env::var_os("REGENERATE_PROTO").is_some() {
        std::fs::write(&kept_path, &fresh).unwrap();
    }
    let kept = std::fs::read_to_string(&kept_path).unwrap();
    assert!(
        kept == fresh,
        "{} differs from what proto/ generates; run REGENERATE_PROTO=1 cargo test --test proto_generated",
        kept_path.display()
    );
}
