//! A quick run of the `sentry-load` binary against the real server: a few hundred requests, new
//! and reused connections, every answer checked, JSON report parsed.

mod common;

use std::process::Command;

use common::*;

fn run_load(s: &Sentry, extra: &[&str]) -> serde_json::Value {
    let anchors = s.creds().join("ca.crt");
    let out = run_ok(
        Command::new(env!("CARGO_BIN_EXE_sentry-load"))
            .arg("--addr")
            .arg(s.grpc.to_string())
            .arg("--anchors")
            .arg(&anchors)
            .args(["--json", "--concurrency", "8"])
            .args(extra),
    );
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[test]
fn sentry_load_signs_and_checks_every_answer() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Sentry::start(tmp.path(), Opts::default());
    let new = run_load(&s, &["--requests", "200", "--key-type", "ed25519"]);
    assert_eq!(new["ok"], 200, "{new:#}");
    assert_eq!(new["errors"], 0, "{new:#}");
    assert_eq!(new["connections"], "new");
    assert!(new["latency"]["p99_ms"].as_f64().unwrap() > 0.0);
    let reused = run_load(&s, &["--requests", "200", "--key-type", "p256", "--reuse"]);
    assert_eq!(reused["ok"], 200, "{reused:#}");
    assert_eq!(reused["connections"], "reused");
    assert!(s
        .metrics_text()
        .contains("dapr_sentry_cert_sign_success_total 400"));
}

#[test]
fn sentry_load_reports_a_wrong_server_id_as_connect_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Sentry::start(tmp.path(), Opts::default());
    let out = Command::new(env!("CARGO_BIN_EXE_sentry-load"))
        .arg("--addr")
        .arg(s.grpc.to_string())
        .arg("--anchors")
        .arg(s.creds().join("ca.crt"))
        .args(["--json", "--requests", "5", "--concurrency", "1"])
        .args(["--server-id", "spiffe://localhost/ns/default/not-sentry"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "no answer may be accepted");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], 0);
    assert_eq!(report["errors_by_kind"]["connect"], 5, "{report:#}");
}
