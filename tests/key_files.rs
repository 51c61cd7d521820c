//! Key files Sentry generates are PKCS#8 v1 `PRIVATE KEY`, as Dapr's sentry writes them (Go's
//! `x509.MarshalPKCS8PrivateKey`): OpenSSL 3.0's `openssl pkey` reads every one, for Ed25519 and
//! P-256 CAs and the JWT signing key.

mod common;

use std::process::Command;

use common::*;

#[test]
fn openssl_pkey_reads_every_generated_key() {
    for (key_type, jwt_alg) in [("ed25519", "EdDSA"), ("ecdsa-p256", "ES256")] {
        let tmp = tempfile::tempdir().unwrap();
        let s = Sentry::start(
            tmp.path(),
            Opts::default().args(&[
                "--key-type",
                key_type,
                "--jwt-enabled",
                &format!("--jwt-signing-algorithm={jwt_alg}"),
            ]),
        );
        let creds = s.creds();
        let mut keys: Vec<String> = std::fs::read_dir(&creds)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".key"))
            .collect();
        keys.sort();
        assert!(
            keys.iter().any(|k| k == "issuer.key") && keys.iter().any(|k| k == "jwt.key"),
            "{key_type}: {keys:?}"
        );
        for name in &keys {
            let path = creds.join(name);
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(
                text.starts_with("-----BEGIN PRIVATE KEY-----\n"),
                "{key_type} {name}"
            );
            run_ok(
                Command::new("openssl")
                    .args(["pkey", "-noout", "-in"])
                    .arg(&path),
            );
            // The version INTEGER of PrivateKeyInfo is 0 (v1), as Go writes it.
            let asn1 = run_ok(
                Command::new("openssl")
                    .args(["asn1parse", "-in"])
                    .arg(&path),
            );
            let version = asn1.lines().nth(1).unwrap_or_default();
            assert!(
                version.contains("INTEGER") && version.trim_end().ends_with(":00"),
                "{key_type} {name}: {asn1}"
            );
        }
        s.stop();
    }
}
