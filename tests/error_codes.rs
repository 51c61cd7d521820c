//! Every applicable row of the contract's error table (§3.6), over real TLS: the gRPC code, the
//! message, nothing issued — and the next good request still succeeds.

mod common;

use common::*;
use sentry_core::bundle::KeyType;
use sentry_proto::SignCertificateRequest;
use tonic::Code;

fn good() -> SignCertificateRequest {
    request("myapp", "default", KeyType::Ed25519)
}

fn csr_pem_with(label: &str, der: Vec<u8>) -> Vec<u8> {
    sentry_core::bundle::pem_block(label, &der).into_bytes()
}

fn good_csr_der() -> Vec<u8> {
    let (_k, pem_text) = sentry_client::new_csr(KeyType::EcdsaP256).unwrap();
    pem::parse(pem_text).unwrap().into_contents()
}

fn cases() -> Vec<(&'static str, SignCertificateRequest, Code, &'static str)> {
    let mut v = Vec::new();
    let mut r = good();
    r.token_validator = 3;
    v.push((
        "jwks validator not enabled",
        r,
        Code::InvalidArgument,
        "the requested validator is not enabled",
    ));
    let mut r = good();
    r.token_validator = 2;
    v.push((
        "kubernetes validator not enabled",
        r,
        Code::InvalidArgument,
        "not enabled",
    ));
    let mut r = good();
    r.token_validator = -1;
    v.push((
        "unknown validator number",
        r,
        Code::InvalidArgument,
        "not enabled",
    ));
    let mut r = good();
    r.token_validator = 99;
    v.push((
        "out-of-range validator number",
        r,
        Code::InvalidArgument,
        "not enabled",
    ));
    let mut r = good();
    r.certificate_signing_request.clear();
    v.push(("missing CSR", r, Code::PermissionDenied, "CSR is required"));
    let mut r = good();
    r.namespace.clear();
    v.push((
        "missing namespace",
        r,
        Code::PermissionDenied,
        "namespace is required",
    ));
    let mut r = good();
    r.id.clear();
    v.push((
        "missing id",
        r,
        Code::PermissionDenied,
        "parameter app-id cannot be empty",
    ));
    let mut r = good();
    r.id = "my.app".into();
    v.push((
        "dotted id",
        r,
        Code::PermissionDenied,
        "parameter app-id cannot contain dots",
    ));
    let mut r = good();
    r.id = "a".repeat(65);
    v.push((
        "65-byte id",
        r,
        Code::PermissionDenied,
        "app ID must be 64 characters or less",
    ));
    let mut r = good();
    r.trust_domain = "Not A Domain".into();
    v.push((
        "bad trust domain",
        r,
        Code::PermissionDenied,
        "trust domain characters are limited",
    ));
    let mut r = good();
    r.certificate_signing_request = b"definitely not PEM".to_vec();
    v.push((
        "not PEM",
        r,
        Code::InvalidArgument,
        "invalid certificate signing request",
    ));
    let mut r = good();
    r.certificate_signing_request = csr_pem_with("PUBLIC KEY", good_csr_der());
    v.push((
        "wrong PEM type",
        r,
        Code::InvalidArgument,
        "invalid certificate signing request",
    ));
    let mut r = good();
    r.certificate_signing_request =
        csr_pem_with("CERTIFICATE REQUEST", vec![0x30, 0x82, 0x01, 0x00, 0x01]);
    v.push((
        "DER garbage",
        r,
        Code::InvalidArgument,
        "failed to parse certificate signing request",
    ));
    let mut r = good();
    let mut der = good_csr_der();
    let n = der.len();
    der[n - 5] ^= 0x55;
    r.certificate_signing_request = csr_pem_with("CERTIFICATE REQUEST", der);
    v.push((
        "bad CSR signature",
        r,
        Code::InvalidArgument,
        "invalid signature",
    ));
    let mut r = good();
    let weak = rsa_1024_csr();
    r.certificate_signing_request = weak;
    v.push((
        "RSA-1024 key",
        r,
        Code::InvalidArgument,
        "RSA key of 1024 bits",
    ));
    let mut r = good();
    r.id = "my app".into();
    v.push((
        "id with a space",
        r,
        Code::InvalidArgument,
        "failed to sign certificate",
    ));
    let mut r = good();
    r.namespace = "..".into();
    v.push((
        "dot-dot namespace",
        r,
        Code::InvalidArgument,
        "failed to sign certificate",
    ));
    let mut r = good();
    r.namespace = "ns\u{7}\u{0}".into();
    v.push((
        "control characters in namespace",
        r,
        Code::InvalidArgument,
        "failed to sign certificate",
    ));
    v
}

/// An RSA-1024 CSR made with openssl (aws-lc-rs does not generate keys that small).
fn rsa_1024_csr() -> Vec<u8> {
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg("openssl req -new -newkey rsa:1024 -nodes -keyout /dev/null -subj / 2>/dev/null")
        .output()
        .unwrap();
    assert!(out.status.success());
    out.stdout
}

#[tokio::test]
async fn each_error_row_has_its_code_and_message_and_the_next_request_succeeds() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Sentry::start(tmp.path(), Opts::default());
    let mut client = s.client().await;
    let mut bad = 0;
    for (name, req, code, msg) in cases() {
        let err = client.sign_certificate(req).await.expect_err(name);
        assert_eq!(err.code(), code, "{name}: {err:?}");
        assert!(
            err.message().contains(msg),
            "{name}: {:?} does not contain {msg:?}",
            err.message()
        );
        bad += 1;
        // The very next good request on the same connection succeeds.
        client
            .sign_certificate(good())
            .await
            .unwrap_or_else(|e| panic!("after {name}: {e:?}"));
    }
    // A burst of bad requests, then a good one over a new connection.
    for _ in 0..20 {
        for (_, req, _, _) in cases() {
            assert!(client.sign_certificate(req).await.is_err());
            bad += 1;
        }
    }
    sign(&s, good()).await.unwrap();
    let metrics = s.metrics_text();
    let failures: u64 = metrics
        .lines()
        .filter(|l| l.starts_with("dapr_sentry_cert_sign_failure_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(failures, bad, "{metrics}");
    assert!(metrics.contains(&format!(
        "dapr_sentry_cert_sign_success_total {}",
        cases().len() + 1
    )));
    // Nothing a request sent is in the log: no CSR bodies.
    assert!(!s.log_text().contains("BEGIN CERTIFICATE REQUEST"));
}
