//! `/healthz`, `/metrics` (Dapr's metric names) and a graceful SIGTERM.

mod common;

use common::*;
use sentry_core::bundle::KeyType;

#[tokio::test]
async fn healthz_and_metrics_report_dapr_names() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Sentry::start(tmp.path(), Opts::default());
    assert_eq!(http_get(s.healthz, "/healthz").unwrap().0, 200);
    sign(&s, request("a", "b", KeyType::Ed25519)).await.unwrap();
    let _ = sign(&s, request("", "b", KeyType::Ed25519))
        .await
        .unwrap_err();
    for path in ["/", "/metrics"] {
        let (status, text) = http_get(s.metrics, path).unwrap();
        assert_eq!(status, 200);
        for line in [
            "dapr_sentry_cert_sign_request_received_total 2",
            "dapr_sentry_cert_sign_success_total 1",
            "dapr_sentry_cert_sign_failure_total{reason=\"validation\"} 1",
            "dapr_sentry_servercert_issue_failed_total{reason=\"sign\"} 0",
            "dapr_sentry_issuercert_changed_total 1",
            "dapr_sentry_issuercert_expiry_timestamp ",
            "dapr_sentry_rootcert_expiry_timestamp ",
        ] {
            assert!(text.contains(line), "{line} missing:\n{text}");
        }
        let issuer = pem_certs(&std::fs::read(s.creds().join("issuer.crt")).unwrap()).remove(0);
        let (_, cert) = x509_parser::parse_x509_certificate(&issuer).unwrap();
        let expiry = cert.validity().not_after.timestamp();
        assert!(
            text.contains(&format!("dapr_sentry_issuercert_expiry_timestamp {expiry}")),
            "{text}"
        );
    }
    let status = s.stop();
    assert!(status.success(), "graceful exit on SIGTERM: {status:?}");
}

#[tokio::test]
async fn metrics_can_be_disabled() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Sentry::start(tmp.path(), Opts::default().arg("--enable-metrics=false"));
    assert!(
        http_get(s.metrics, "/metrics").is_none(),
        "metrics port closed"
    );
    sign(&s, request("a", "b", KeyType::Ed25519)).await.unwrap();
}
