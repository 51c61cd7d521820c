//! Costly and lenient input, hand-made with openssl or as raw DER, against a running Sentry while
//! a good client keeps requesting:
//!
//! - 3.8 MB CSRs from four senders are refused before parsing, naming the cap; an RSA-8192 CSR
//!   (the largest key accepted) still fits under it;
//! - with `--jwt-enabled` (RS256), the most audiences one request may ask for, and one more;
//! - EC keys in compressed form (P-256, P-384) are refused; the uncompressed ones are issued and
//!   the leaves parse and verify in Go's crypto/x509;
//! - PEM text around or beside the CSR block, and non-minimal DER lengths, are refused;
//! - bundle files with text around their PEM, or a certificate with a non-minimal DER length,
//!   and key material with loose permissions, stop a standalone Sentry with a clear message.
//!
//! CPU per costly request (from /proc/PID/stat) is printed for the record, never asserted.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use common::hostile::*;
use common::*;
use sentry_core::bundle::KeyType;
use sentry_proto::SignCertificateRequest;
use tonic::Code;

fn good() -> SignCertificateRequest {
    request("myapp", "default", KeyType::Ed25519)
}

fn with_csr(csr: Vec<u8>) -> SignCertificateRequest {
    SignCertificateRequest {
        certificate_signing_request: csr,
        ..good()
    }
}

fn pem_wrap(der: &[u8]) -> Vec<u8> {
    let mut out = b"-----BEGIN CERTIFICATE REQUEST-----\n".to_vec();
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    for line in b64.as_bytes().chunks(64) {
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    out.extend_from_slice(b"-----END CERTIFICATE REQUEST-----\n");
    out
}

fn der_of(pem_bytes: &[u8]) -> Vec<u8> {
    pem::parse(pem_bytes).unwrap().into_contents()
}

/// `der` with its outermost length re-encoded one byte longer (a leading zero): still the same
/// value to a lenient parser, and outside the signed part of a CSR or certificate.
fn non_minimal_outer_length(der: &[u8]) -> Vec<u8> {
    let first = der[1];
    if first & 0x80 == 0 {
        [&[der[0], 0x81, first], &der[2..]].concat()
    } else {
        [&[der[0], first + 1, 0x00], &der[2..]].concat()
    }
}

async fn refused(s: &Sentry, req: SignCertificateRequest, msg: &str) {
    let err = sign(s, req).await.expect_err(msg);
    assert_eq!(err.code(), Code::InvalidArgument, "{msg}: {err:?}");
    assert!(err.message().contains(msg), "{msg}: {:?}", err.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_csrs_are_refused_before_parsing() {
    const SENDERS: usize = 4;
    const EACH: usize = 5;
    let tmp = tempfile::tempdir().unwrap();
    let s = Sentry::start(tmp.path(), Opts::default());
    let pid = s.child.id();
    // A real CSR followed inside its PEM by 3.8 MB of base64 (one valid-looking block).
    let mut big = b"-----BEGIN CERTIFICATE REQUEST-----\n".to_vec();
    for _ in 0..(3_800_000 / 65) {
        big.extend_from_slice(&[b'A'; 64]);
        big.push(b'\n');
    }
    big.extend_from_slice(b"-----END CERTIFICATE REQUEST-----\n");

    let cpu_before = cpu_ms(pid);
    let attack = async {
        let senders = (0..SENDERS).map(|_| {
            let big = big.clone();
            let s = &s;
            async move {
                let mut client = s.client().await;
                for _ in 0..EACH {
                    let err = client
                        .sign_certificate(with_csr(big.clone()))
                        .await
                        .expect_err("oversized CSR");
                    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
                    assert!(
                        err.message().contains("at most 8192 bytes"),
                        "{:?}",
                        err.message()
                    );
                }
            }
        });
        futures::future::join_all(senders).await;
    };
    let (run, ()) = tokio::join!(keep_requesting(&s, Duration::from_secs(3)), attack);
    let cpu = cpu_ms(pid) - cpu_before;
    eprintln!(
        "{} CSRs of {} bytes and {} good requests: {cpu} ms of CPU in all",
        SENDERS * EACH,
        big.len(),
        run.signed
    );
    assert_all_good(&run, "oversized CSRs");

    // The largest key accepted fits under the cap.
    let rsa8192 =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rsa8192.csr"))
            .unwrap();
    let resp = sign(&s, with_csr(rsa8192))
        .await
        .expect("an RSA-8192 CSR is issued");
    assert_eq!(pem_certs(&resp.workload_certificate).len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_audiences_bound_the_signatures_per_request() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Sentry::start(tmp.path(), Opts::default().arg("--jwt-enabled"));
    let pid = s.child.id();
    let mut client = s.client().await;
    let most: Vec<String> = (0..7).map(|i| format!("aud-{i}")).collect();
    let rounds = 10;
    let cpu_before = cpu_ms(pid);
    for _ in 0..rounds {
        let resp = client
            .sign_certificate(SignCertificateRequest {
                jwt_audiences: most.clone(),
                ..good()
            })
            .await
            .expect("the most audiences allowed")
            .into_inner();
        assert_eq!(resp.per_audience_jwts.len(), 8, "7 and the trust domain");
    }
    let cpu = cpu_ms(pid) - cpu_before;
    eprintln!(
        "JWT with 7 audiences (RS256): {:.1} ms of CPU per request",
        cpu as f64 / rounds as f64
    );
    let one_more: Vec<String> = (0..8).map(|i| format!("aud-{i}")).collect();
    let err = client
        .sign_certificate(SignCertificateRequest {
            jwt_audiences: one_more,
            ..good()
        })
        .await
        .expect_err("one audience too many");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message()
            .contains("too many JWT audiences: 9 requested, at most 8 allowed"),
        "{:?}",
        err.message()
    );
}

const P256: &str = "openssl ecparam -name prime256v1 -genkey -noout -out k0.pem";
const P384: &str = "openssl ecparam -name secp384r1 -genkey -noout -out k0.pem";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_ec_keys_refused_and_every_issued_leaf_parses_in_go() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Sentry::start(tmp.path(), Opts::default());
    for (curve, make) in [("P-256", P256), ("P-384", P384)] {
        let compressed = openssl_csr(
            &format!("{make}; openssl ec -in k0.pem -conv_form compressed -out k.pem 2>/dev/null"),
            "-subj /CN=x",
        );
        refused(&s, with_csr(compressed), "compressed form").await;

        let uncompressed = openssl_csr(&format!("{make}; mv k0.pem k.pem"), "-subj /CN=x");
        let resp = sign(&s, with_csr(uncompressed))
            .await
            .unwrap_or_else(|e| panic!("{curve} uncompressed: {e:?}"));
        let chain = tmp.path().join(format!("chain-{curve}.pem"));
        std::fs::write(&chain, &resp.workload_certificate).unwrap();
        go_verify(
            &s.creds().join("ca.crt"),
            &chain,
            "spiffe://public/ns/default/myapp",
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pem_framing_and_der_lengths_are_strict() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Sentry::start(tmp.path(), Opts::default());
    let csr = openssl_csr(&format!("{P256}; mv k0.pem k.pem"), "-subj /CN=x");
    let other = openssl_csr(&format!("{P256}; mv k0.pem k.pem"), "-subj /CN=y");
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "text before the block",
            [b"hello\n".as_slice(), &csr].concat(),
            "text outside a PEM block",
        ),
        (
            "text after the block",
            [csr.as_slice(), b"trailer\n"].concat(),
            "text outside a PEM block",
        ),
        (
            "two blocks",
            [csr.as_slice(), &other].concat(),
            "2 blocks where one is expected",
        ),
        (
            "non-minimal outer DER length",
            pem_wrap(&non_minimal_outer_length(&der_of(&csr))),
            "non-minimal DER length",
        ),
    ];
    for (name, bytes, msg) in cases {
        refused(&s, with_csr(bytes), msg).await;
        sign(&s, with_csr(csr.clone()))
            .await
            .unwrap_or_else(|e| panic!("good request after {name}: {e:?}"));
    }
    let metrics = s.metrics_text();
    assert_eq!(
        metric_sum(&metrics, "dapr_sentry_cert_sign_success_total"),
        4
    );
}

/// Starts Sentry once to generate a bundle in `dir/creds`, then stops it.
fn generated_bundle(dir: &Path, opts: Opts) {
    let s = Sentry::start(dir, opts);
    assert!(s.stop().success());
}

fn assert_start_refused(dir: &Path, opts: Opts, needles: &[&str]) {
    let out = run_to_exit(dir, opts);
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "started:\n{log}");
    for n in needles {
        assert!(log.contains(n), "{n:?} not in:\n{log}");
    }
}

#[test]
fn bundle_files_with_loose_pem_or_der_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    generated_bundle(tmp.path(), Opts::default());
    let creds = tmp.path().join("creds");
    let issuer = std::fs::read(creds.join("issuer.crt")).unwrap();
    let anchors = std::fs::read(creds.join("ca.crt")).unwrap();

    std::fs::write(
        creds.join("issuer.crt"),
        [b"# a comment\n".as_slice(), &issuer].concat(),
    )
    .unwrap();
    assert_start_refused(
        tmp.path(),
        Opts::default(),
        &["issuer.crt", "text outside a PEM block on line 1"],
    );
    std::fs::write(creds.join("issuer.crt"), &issuer).unwrap();

    let stretched = non_minimal_outer_length(&der_of(&anchors));
    std::fs::write(
        creds.join("ca.crt"),
        sentry_core::bundle::pem_block("CERTIFICATE", &stretched),
    )
    .unwrap();
    assert_start_refused(
        tmp.path(),
        Opts::default(),
        &["ca.crt", "non-minimal DER length"],
    );
    std::fs::write(creds.join("ca.crt"), &anchors).unwrap();

    let key = std::fs::read_to_string(creds.join("issuer.key")).unwrap();
    std::fs::write(creds.join("issuer.key"), format!("{key}{key}")).unwrap();
    assert_start_refused(
        tmp.path(),
        Opts::default(),
        &["issuer.key", "2 blocks where one is expected"],
    );
    std::fs::write(creds.join("issuer.key"), &key).unwrap();

    let s = Sentry::start(tmp.path(), Opts::default());
    assert!(s.stop().success(), "the restored bundle is used");
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn loose_key_permissions_stop_a_standalone_sentry() {
    let tmp = tempfile::tempdir().unwrap();
    let jwt = Opts::default().arg("--jwt-enabled");
    generated_bundle(tmp.path(), jwt.clone());
    let creds = tmp.path().join("creds");
    for file in ["issuer.key", "root.key", "jwt.key"] {
        let path = creds.join(file);
        assert!(path.exists(), "{file} generated");
        chmod(&path, 0o644);
        assert_start_refused(
            tmp.path(),
            jwt.clone(),
            &[
                "private key is readable by group or others",
                &format!("run `chmod go-rwx '{}'`", path.display()),
            ],
        );
        chmod(&path, 0o600);
    }
    chmod(&creds, 0o777);
    assert_start_refused(
        tmp.path(),
        jwt.clone(),
        &[
            "credentials directory is writable by group or others",
            &format!("run `chmod go-w '{}'`", creds.display()),
        ],
    );
    chmod(&creds, 0o755);
    let s = Sentry::start(tmp.path(), jwt);
    assert!(s.stop().success(), "fixed permissions start");
}
