//! A quick run of the load generator (`sentry-load`'s library, with the binary's own flags)
//! against the real server: a few hundred requests, new and reused connections, every answer
//! checked, the JSON form of the report read back.

mod common;

use clap::Parser;
use common::*;

/// Runs the load generator as `sentry-load --addr … --anchors … --json <args>` would.
fn load(s: &Sentry, args: &[&str]) -> serde_json::Value {
    let anchors = s.creds().join("ca.crt");
    let mut argv = vec![
        "sentry-load".to_owned(),
        "--addr".into(),
        s.grpc.to_string(),
    ];
    argv.extend([
        "--anchors".to_owned(),
        anchors.display().to_string(),
        "--json".into(),
    ]);
    argv.extend(args.iter().map(|a| a.to_string()));
    let opts = sentry_load::Options::try_parse_from(argv).unwrap();
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let report = rt.block_on(sentry_load::run(&opts)).unwrap();
    serde_json::to_value(&report).unwrap()
}

fn run_load(s: &Sentry, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["--concurrency", "8"];
    args.extend(extra);
    load(s, &args)
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
    let report = load(
        &s,
        &[
            "--requests",
            "5",
            "--concurrency",
            "1",
            "--server-id",
            "spiffe://localhost/ns/default/not-sentry",
        ],
    );
    assert_eq!(
        report["ok"], 0,
        "no answer may be accepted (the binary then exits 1)"
    );
    assert_eq!(report["errors_by_kind"]["connect"], 5, "{report:#}");
}
