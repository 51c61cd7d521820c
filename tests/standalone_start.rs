//! Standalone start-up: generate on first start, reuse on the next, load an openssl-made bundle,
//! and refuse (clearly, writing nothing) every bundle or configuration that is not usable.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use sentry_core::bundle::KeyType;

#[tokio::test]
async fn first_start_generates_second_start_reuses() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Sentry::start(tmp.path(), Opts::default());
    let ca1 = s.anchors();
    assert!(s.log_text().contains("generating self signed CA"));
    assert!(s
        .metrics_text()
        .contains("dapr_sentry_issuercert_changed_total 1"));
    sign(&s, request("a", "default", KeyType::Ed25519))
        .await
        .unwrap();
    s.stop();
    let before = snapshot(&tmp.path().join("creds"));
    let names: Vec<_> = before.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["ca.crt", "issuer.crt", "issuer.key", "root.key"],
        "the bundle plus the root key Sentry keeps"
    );
    let s = Sentry::start(tmp.path(), Opts::default());
    assert_eq!(s.anchors(), ca1, "same ca.crt bytes");
    assert!(s.log_text().contains("using credentials from store"));
    assert!(s
        .metrics_text()
        .contains("dapr_sentry_issuercert_changed_total 0"));
    sign(&s, request("a", "default", KeyType::Ed25519))
        .await
        .unwrap();
    assert_eq!(snapshot(&tmp.path().join("creds")), before);
}

#[tokio::test]
async fn every_key_type_flag_generates_a_working_ca() {
    for (flag, oid) in [
        ("ecdsa-p256", "1.2.840.10045.4.3.2"),
        ("ecdsa-p384", "1.2.840.10045.4.3.3"),
        ("rsa-2048", "1.2.840.113549.1.1.11"),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let s = Sentry::start(tmp.path(), Opts::default().arg("--key-type").arg(flag));
        let resp = sign(&s, request("a", "default", KeyType::Ed25519))
            .await
            .unwrap();
        let leaf = pem_certs(&resp.workload_certificate).remove(0);
        let (_, cert) = x509_parser::parse_x509_certificate(&leaf).unwrap();
        assert_eq!(
            cert.signature_algorithm.algorithm.to_id_string(),
            oid,
            "{flag}"
        );
    }
}

/// Writes an ECDSA P-256 root + issuer made by openssl (SEC1 keys) into `dir`.
fn openssl_bundle(dir: &Path, days: u32) {
    std::fs::create_dir_all(dir).unwrap();
    let sh = format!(
        r#"set -e
cd '{d}'
cat > ext.cnf <<EOT
basicConstraints=critical,CA:TRUE
keyUsage=critical,keyCertSign,cRLSign,digitalSignature
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
EOT
openssl ecparam -name prime256v1 -genkey -noout -out root.key
openssl req -x509 -new -key root.key -subj "/O=example.org/CN=Example Root" -days {days} -out ca.crt \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature"
openssl ecparam -name prime256v1 -genkey -noout -out issuer.key
openssl req -new -key issuer.key -subj "/O=example.org/CN=Example Issuer" -out issuer.csr
openssl x509 -req -in issuer.csr -CA ca.crt -CAkey root.key -CAcreateserial -days {days} -extfile ext.cnf -out issuer.crt 2>/dev/null
rm -f issuer.csr ext.cnf ca.srl
"#,
        d = dir.display()
    );
    run_ok(Command::new("bash").arg("-c").arg(sh));
}

#[tokio::test]
async fn openssl_made_p256_bundle_is_loaded_and_used() {
    let tmp = tempfile::tempdir().unwrap();
    let creds = tmp.path().join("creds");
    openssl_bundle(&creds, 30);
    assert!(std::fs::read_to_string(creds.join("issuer.key"))
        .unwrap()
        .contains("EC PRIVATE KEY"));
    // Root appended to issuer.crt (a common mistake) is stripped.
    let mut chain = std::fs::read(creds.join("issuer.crt")).unwrap();
    chain.extend(std::fs::read(creds.join("ca.crt")).unwrap());
    std::fs::write(creds.join("issuer.crt"), chain).unwrap();
    let before = snapshot(&creds);
    let s = Sentry::start(tmp.path(), Opts::default());
    let resp = sign(&s, request("myapp", "default", KeyType::EcdsaP256))
        .await
        .unwrap();
    let certs = pem_certs(&resp.workload_certificate);
    assert_eq!(certs.len(), 2, "root not repeated in the chain");
    std::fs::write(
        tmp.path().join("leaf.pem"),
        sentry_core::bundle::pem_block("CERTIFICATE", &certs[0]),
    )
    .unwrap();
    let out = run_ok(
        Command::new("openssl")
            .arg("verify")
            .arg("-CAfile")
            .arg(creds.join("ca.crt"))
            .arg("-untrusted")
            .arg(creds.join("issuer.crt"))
            .arg(tmp.path().join("leaf.pem")),
    );
    assert!(out.contains("OK"));
    assert_eq!(
        resp.trust_chain_certificates[0],
        std::fs::read(creds.join("ca.crt")).unwrap()
    );
    assert_eq!(
        snapshot(&creds),
        before,
        "a supplied bundle is never rewritten"
    );
}

#[tokio::test]
async fn multiple_anchors_and_intermediate_chains_are_accepted() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    openssl_bundle(&a, 30);
    openssl_bundle(&b, 30);
    // Anchors: both roots; issuer: A's. Then an intermediate under A's issuer.
    let creds = tmp.path().join("creds");
    std::fs::create_dir_all(&creds).unwrap();
    let mut anchors = std::fs::read(b.join("ca.crt")).unwrap();
    anchors.extend(std::fs::read(a.join("ca.crt")).unwrap());
    let sh = format!(
        r#"set -e
cd '{a}'
printf 'basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n' > ext2.cnf
openssl genpkey -algorithm ed25519 -out int2.key
openssl req -new -key int2.key -subj "/O=example.org/CN=Second Level" -out int2.csr
openssl x509 -req -in int2.csr -CA issuer.crt -CAkey issuer.key -CAcreateserial -days 10 -extfile ext2.cnf -out int2.crt 2>/dev/null
"#,
        a = a.display()
    );
    run_ok(Command::new("bash").arg("-c").arg(sh));
    std::fs::write(creds.join("ca.crt"), &anchors).unwrap();
    let mut chain = std::fs::read(a.join("int2.crt")).unwrap();
    chain.extend(std::fs::read(a.join("issuer.crt")).unwrap());
    std::fs::write(creds.join("issuer.crt"), &chain).unwrap();
    std::fs::copy(a.join("int2.key"), creds.join("issuer.key")).unwrap();
    let s = Sentry::start(tmp.path(), Opts::default());
    let resp = sign(&s, request("myapp", "default", KeyType::Ed25519))
        .await
        .unwrap();
    assert_eq!(
        pem_certs(&resp.workload_certificate).len(),
        3,
        "leaf, int2, issuer"
    );
    assert_eq!(
        pem_certs(&resp.trust_chain_certificates[0]).len(),
        2,
        "both anchors in one element"
    );
}

fn assert_refused(tmp: &Path, expect: &[&str]) {
    let creds = tmp.join("creds");
    let before = snapshot(&creds);
    let out = run_to_exit(tmp, Opts::default());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "must exit non-zero:\n{text}");
    let line = text
        .lines()
        .rev()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line:\n{text}"));
    for e in expect {
        assert!(line.contains(e), "{e:?} not in {line:?}");
    }
    assert_eq!(snapshot(&creds), before, "nothing written");
}

#[test]
fn mismatched_issuer_key_stops_start_up() {
    let tmp = tempfile::tempdir().unwrap();
    openssl_bundle(&tmp.path().join("creds"), 30);
    openssl_bundle(&tmp.path().join("other"), 30);
    std::fs::copy(
        tmp.path().join("other/issuer.key"),
        tmp.path().join("creds/issuer.key"),
    )
    .unwrap();
    assert_refused(
        tmp.path(),
        &["issuer.key", "issuer key does not match issuer certificate"],
    );
}

#[test]
fn issuer_not_chaining_to_anchors_stops_start_up() {
    let tmp = tempfile::tempdir().unwrap();
    openssl_bundle(&tmp.path().join("creds"), 30);
    openssl_bundle(&tmp.path().join("other"), 30);
    std::fs::copy(
        tmp.path().join("other/ca.crt"),
        tmp.path().join("creds/ca.crt"),
    )
    .unwrap();
    assert_refused(
        tmp.path(),
        &["issuer.crt", "does not belong to trust anchors"],
    );
}

#[test]
fn expired_issuer_stops_start_up() {
    let tmp = tempfile::tempdir().unwrap();
    let long_ago = time::OffsetDateTime::now_utc() - Duration::from_secs(400 * 86400);
    let td = sentry_core::spiffe::TrustDomain::parse("localhost").unwrap();
    let params =
        sentry_core::bundle::CaParams::new(td, "default", KeyType::Ed25519, Duration::ZERO);
    let g = sentry_core::bundle::generate(&params, long_ago).unwrap();
    let store = sentry_runtime::store::file::FileStore::new(
        sentry_runtime::store::file::CredentialPaths::new(
            &tmp.path().join("creds"),
            "ca.crt",
            "issuer.crt",
            "issuer.key",
        ),
    );
    store
        .write_files(None, &sentry_runtime::store::Files::of(&g.bundle))
        .unwrap();
    assert_refused(tmp.path(), &["issuer.crt", "expired"]);
}

#[test]
fn partial_bundle_is_refused_not_overwritten() {
    let tmp = tempfile::tempdir().unwrap();
    openssl_bundle(&tmp.path().join("creds"), 30);
    std::fs::remove_file(tmp.path().join("creds/issuer.key")).unwrap();
    assert_refused(tmp.path(), &["incomplete trust bundle", "issuer.key"]);
}

#[test]
fn garbage_files_are_named_in_the_error() {
    let tmp = tempfile::tempdir().unwrap();
    openssl_bundle(&tmp.path().join("creds"), 30);
    std::fs::write(tmp.path().join("creds/ca.crt"), "not a certificate").unwrap();
    assert_refused(tmp.path(), &["ca.crt", "no certificates found"]);
    std::fs::copy(
        tmp.path().join("creds/issuer.crt"),
        tmp.path().join("creds/ca.crt"),
    )
    .unwrap();
    assert_refused(tmp.path(), &["ca.crt", "not self-signed"]);
}

#[test]
fn invalid_or_missing_config_file_stops_start_up() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run_to_exit(
        tmp.path(),
        Opts::default()
            .arg("--config")
            .arg("/nonexistent/daprsystem.yaml"),
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("/nonexistent/daprsystem.yaml"));
    let out = run_to_exit(tmp.path(), Opts::default().mtls("forever", "1m"));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("workloadCertTTL"));
    let out = run_to_exit(
        tmp.path(),
        Opts::default().config("spec:\n  mtls:\n    tokenValidators:\n    - name: kubernetes\n"),
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("cannot be configured manually"));
    assert!(!tmp.path().join("creds").exists(), "nothing generated");
}

#[tokio::test]
async fn single_dash_flags_are_accepted() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Sentry::start(
        tmp.path(),
        Opts::default()
            .arg("-trust-domain")
            .arg("example.org")
            .arg("-log-level")
            .arg("debug"),
    );
    let tls = std::sync::Arc::new(
        sentry_client::tls_config(&s.anchors(), "spiffe://example.org/ns/default/dapr-sentry")
            .unwrap(),
    );
    let mut c = sentry_client::connect(s.grpc, tls).await.unwrap();
    c.sign_certificate(request("a", "b", KeyType::Ed25519))
        .await
        .unwrap();
}
