//! The gRPC port's TLS policy, probed with `openssl s_client`: TLS 1.0 and 1.1 and weak cipher
//! suites are refused by the server (the client really offers them: security level 0, and the
//! server's alert is checked), TLS 1.2 and 1.3 are accepted.

mod common;

use std::process::Command;

use common::*;

/// Runs `s_client` against `s` with `args`; returns (success, all output).
fn s_client(s: &Sentry, args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &s.grpc.to_string(),
            "-msg",
            "-alpn",
            "h2",
        ])
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The client sent a ClientHello and the server answered it with a fatal alert.
fn refused_by_server(text: &str) -> bool {
    text.contains(">>> ")
        && text.contains("ClientHello")
        && text.contains("<<< ")
        && text.contains("Alert")
}

#[test]
fn old_protocols_and_weak_ciphers_are_refused_modern_ones_accepted() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Sentry::start(tmp.path(), Opts::default());

    for (name, args) in [
        ("TLS 1.0", &["-tls1", "-cipher", "DEFAULT:@SECLEVEL=0"][..]),
        (
            "TLS 1.1",
            &["-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"][..],
        ),
        (
            "weak TLS 1.2 ciphers",
            &["-tls1_2", "-cipher", "RC4:DES:3DES:NULL:EXPORT:@SECLEVEL=0"][..],
        ),
    ] {
        let (ok, text) = s_client(&s, args);
        assert!(!ok, "{name} was accepted:\n{text}");
        assert!(
            refused_by_server(&text),
            "{name}: not refused by the server:\n{text}"
        );
        assert!(
            !text.contains("New, TLS"),
            "{name}: a session was set up:\n{text}"
        );
    }
    for (name, flag, proto) in [
        ("TLS 1.2", "-tls1_2", "TLSv1.2"),
        ("TLS 1.3", "-tls1_3", "TLSv1.3"),
    ] {
        let (ok, text) = s_client(&s, &[flag]);
        assert!(ok, "{name} refused:\n{text}");
        assert!(text.contains(&format!("New, {proto}")), "{name}:\n{text}");
        assert!(text.contains("ALPN protocol: h2"), "{name}: no h2:\n{text}");
    }
    assert_eq!(http_get(s.healthz, "/healthz").map(|(c, _)| c), Some(200));
}
