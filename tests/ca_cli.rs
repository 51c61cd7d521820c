//! The operator CLI (`sentry ca …`) against a credentials directory: one test per subcommand,
//! including `check` failing on a broken bundle.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;

fn ca(args: &[&str], creds: &Path) -> Output {
    Command::new(SENTRY)
        .arg("ca")
        .args(args)
        .arg("--issuer-credentials")
        .arg(creds)
        .output()
        .unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn err(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "unexpected success: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn init_creates_a_bundle_with_root_key_and_refuses_to_overwrite() {
    let tmp = tempfile::tempdir().unwrap();
    let creds = tmp.path().join("creds");
    let text = ok(&ca(
        &[
            "init",
            "--valid-until",
            "30",
            "--key-type",
            "ecdsa-p256",
            "--trust-domain",
            "example.org",
        ],
        &creds,
    ));
    assert!(text.contains("Generated a new CA"));
    for f in ["ca.crt", "issuer.crt", "issuer.key", "root.key"] {
        assert_eq!(file_mode(&creds.join(f)), 0o600, "{f}");
    }
    let root_der = pem_certs(&std::fs::read(creds.join("ca.crt")).unwrap()).remove(0);
    let (_, root) = x509_parser::parse_x509_certificate(&root_der).unwrap();
    assert_eq!(root.subject().to_string(), "O=example.org");
    let before = snapshot(&creds);
    assert!(err(&ca(&["init"], &creds)).contains("already exists"));
    assert_eq!(snapshot(&creds), before);
}

#[test]
fn check_expiry_and_export() {
    let tmp = tempfile::tempdir().unwrap();
    let creds = tmp.path().join("creds");
    ok(&ca(&["init", "--valid-until", "10"], &creds));
    let text = ok(&ca(&["check"], &creds));
    assert!(text.contains("trust anchor: O=localhost"), "{text}");
    assert!(text.contains("issuer: O=spiffe://localhost/ns/"), "{text}");
    assert!(text.contains("root key: held by Sentry"), "{text}");
    assert!(text.trim_end().ends_with("OK"));
    let text = ok(&ca(&["expiry"], &creds));
    let hours: i64 = text.split_whitespace().nth(4).unwrap().parse().unwrap();
    assert!((238..=240).contains(&hours), "{text}");
    let out = tmp.path().join("exported");
    ok(&ca(&["export", "-o", out.to_str().unwrap()], &creds));
    for f in ["ca.crt", "issuer.crt", "issuer.key"] {
        assert_eq!(
            std::fs::read(out.join(f)).unwrap(),
            std::fs::read(creds.join(f)).unwrap()
        );
        assert_eq!(file_mode(&out.join(f)), 0o600, "{f}");
    }
    assert!(
        !out.join("root.key").exists(),
        "the root key is never exported"
    );
}

#[test]
fn check_fails_on_broken_bundles() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    ok(&ca(&["init"], &a));
    ok(&ca(&["init"], &b));
    std::fs::copy(b.join("issuer.key"), a.join("issuer.key")).unwrap();
    let e = err(&ca(&["check"], &a));
    assert!(
        e.contains("issuer.key") && e.contains("does not match"),
        "{e}"
    );
    let c = tmp.path().join("c");
    ok(&ca(&["init"], &c));
    std::fs::copy(b.join("ca.crt"), c.join("ca.crt")).unwrap();
    let e = err(&ca(&["check"], &c));
    assert!(e.contains("does not belong to trust anchors"), "{e}");
    std::fs::remove_file(a.join("ca.crt")).unwrap();
    assert!(err(&ca(&["check"], &a)).contains("incomplete trust bundle"));
    assert!(err(&ca(&["check"], &tmp.path().join("empty"))).contains("no trust bundle"));
}

#[test]
fn renew_issuer_root_and_supplied_files() {
    let tmp = tempfile::tempdir().unwrap();
    let creds = tmp.path().join("creds");
    ok(&ca(&["init"], &creds));
    let anchors = std::fs::read(creds.join("ca.crt")).unwrap();
    let issuer = std::fs::read(creds.join("issuer.crt")).unwrap();
    // Issuer only: same root, new issuer, journal closed.
    assert!(ok(&ca(&["renew", "--valid-until", "7"], &creds)).contains("Renewed the issuer"));
    assert_eq!(std::fs::read(creds.join("ca.crt")).unwrap(), anchors);
    assert_ne!(std::fs::read(creds.join("issuer.crt")).unwrap(), issuer);
    assert!(!creds.join("rotation.json").exists());
    ok(&ca(&["check"], &creds));
    // Supplied files (as `dapr mtls renew-certificate`): verified, then installed.
    let other = tmp.path().join("other");
    ok(&ca(&["init"], &other));
    let files = |d: &Path| {
        [
            "--ca-root-certificate".to_string(),
            d.join("ca.crt").display().to_string(),
            "--issuer-public-certificate".to_string(),
            d.join("issuer.crt").display().to_string(),
            "--issuer-private-key".to_string(),
            d.join("issuer.key").display().to_string(),
        ]
    };
    let args: Vec<String> = ["renew".to_string()]
        .into_iter()
        .chain(files(&other))
        .collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ok(&ca(&args, &creds));
    assert_eq!(
        std::fs::read(creds.join("ca.crt")).unwrap(),
        std::fs::read(other.join("ca.crt")).unwrap()
    );
    // A mismatched supplied set is refused and changes nothing.
    std::fs::copy(creds.join("issuer.key"), tmp.path().join("wrong.key")).unwrap();
    let before = snapshot(&creds);
    let e = err(&ca(
        &[
            "renew",
            "--ca-root-certificate",
            a(&creds, "ca.crt"),
            "--issuer-public-certificate",
            a(&creds, "issuer.crt"),
            "--issuer-private-key",
            a(&tmp.path().join("a-missing-dir"), "x.key"),
        ],
        &creds,
    ));
    assert!(e.contains("x.key"), "{e}");
    assert_eq!(snapshot(&creds), before);
    // Root rotation is prepared for the running server to carry out.
    let _ = std::fs::remove_file(creds.join("root.key"));
    assert!(ok(&ca(&["renew", "--root"], &creds)).contains("Root rotation prepared"));
    assert!(creds.join("rotation.json").exists());
    assert!(err(&ca(&["renew", "--root"], &creds)).contains("in progress"));
    // --help works for each subcommand.
    for sub in ["init", "renew", "export", "expiry", "check"] {
        let out = Command::new(SENTRY)
            .args(["ca", sub, "--help"])
            .output()
            .unwrap();
        assert!(
            out.status.success() && !out.stdout.is_empty(),
            "{sub} --help"
        );
    }
}

fn a(dir: &Path, name: &str) -> &'static str {
    Box::leak(dir.join(name).display().to_string().into_boxed_str())
}
