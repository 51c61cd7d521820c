//! Secrets hygiene: at debug level (text and JSON logs), a workload of good and bad requests
//! carrying tokens leaves no token, no private key and no CSR body in any log line; the key files
//! (and every other file in the credentials directory) are 0600 in a 0700 directory.

mod common;

use common::*;
use sentry_core::bundle::KeyType;
use sentry_proto::SignCertificateRequest;

/// Strings that must never appear in a log, with what they are.
struct Secrets(Vec<(String, String)>);

impl Secrets {
    fn add(&mut self, what: impl Into<String>, value: impl Into<String>) {
        self.0.push((what.into(), value.into()));
    }

    /// Every way a DER blob could show up: base64 (whole and per PEM line), hex, and the
    /// decimal byte list of `{:?}`, each of its last 32 bytes (the secret part of a key).
    fn add_der(&mut self, what: &str, der: &[u8]) {
        let pem_text = pem::encode(&pem::Pem::new("X", der.to_vec()));
        for (i, line) in pem_text
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .enumerate()
        {
            if line.len() >= 24 {
                self.add(format!("{what} base64 line {i}"), line);
            }
        }
        let tail = &der[der.len().saturating_sub(32)..];
        self.add(
            format!("{what} hex"),
            tail.iter().map(|b| format!("{b:02x}")).collect::<String>(),
        );
        self.add(
            format!("{what} byte list"),
            tail.iter()
                .map(|b| b.to_string())
                .collect::<Vec<_>>()
                .join(", "),
        );
    }
}

fn token(i: usize) -> String {
    let (_, csr) = sentry_client::new_csr(KeyType::Ed25519).unwrap();
    // Random, unmistakable token material (the CSR signature bytes are random enough).
    let der = pem::parse(csr).unwrap().into_contents();
    let tail: String = der[der.len() - 16..]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("tok{i}-{tail}")
}

/// The workload: good and bad requests, each with its own token; records what it sent.
async fn workload(s: &Sentry, secrets: &mut Secrets) {
    let mut client = s.client().await;
    let send = |mut req: SignCertificateRequest, i: usize, secrets: &mut Secrets| {
        req.token = token(i);
        secrets.add(format!("token {i}"), req.token.clone());
        if let Ok(p) = pem::parse(&req.certificate_signing_request) {
            secrets.add_der(&format!("CSR {i}"), p.contents());
        }
        req
    };
    let good = || request("myapp", "default", KeyType::EcdsaP256);
    let cases: Vec<(SignCertificateRequest, bool)> = vec![
        (good(), true),
        (
            {
                let mut r = good();
                r.token_validator = 1;
                r
            },
            true,
        ),
        (
            {
                let mut r = good();
                r.token_validator = 2;
                r
            },
            false,
        ),
        (
            {
                let mut r = good();
                r.token_validator = 3;
                r
            },
            false,
        ),
        (
            {
                let mut r = good();
                let mut der = pem::parse(&r.certificate_signing_request)
                    .unwrap()
                    .into_contents();
                let n = der.len();
                der[n - 3] ^= 0x40;
                r.certificate_signing_request =
                    sentry_core::bundle::pem_block("CERTIFICATE REQUEST", &der).into_bytes();
                r
            },
            false,
        ),
        (
            {
                let mut r = good();
                r.id = "bad id".into();
                r
            },
            false,
        ),
        (
            {
                let mut r = good();
                r.trust_domain = "UPPER".into();
                r
            },
            false,
        ),
    ];
    for (i, (req, ok)) in cases.into_iter().enumerate() {
        let req = send(req, i, secrets);
        let result = client.sign_certificate(req).await;
        assert_eq!(result.is_ok(), ok, "case {i}: {result:?}");
    }
    // A CSR sent as raw DER (not PEM) and a huge token.
    let mut r = good();
    let der = pem::parse(&r.certificate_signing_request)
        .unwrap()
        .into_contents();
    secrets.add_der("raw DER CSR", &der);
    r.certificate_signing_request = der;
    r.token = format!("{}{}", token(100), "x".repeat(64 * 1024));
    secrets.add("huge token", r.token[..40].to_owned());
    assert!(client.sign_certificate(r).await.is_err());
}

fn scan(log: &str, secrets: &Secrets, label: &str) {
    assert!(
        log.contains("Processing SignCertificate request"),
        "{label}: debug logging was not on"
    );
    for needle in ["PRIVATE KEY", "CERTIFICATE REQUEST"] {
        assert!(!log.contains(needle), "{label}: log contains {needle}");
    }
    for (what, value) in &secrets.0 {
        assert!(
            !log.contains(value.as_str()),
            "{label}: log contains {what}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_logs_hold_no_tokens_keys_or_csrs() {
    for (label, extra) in [("text", None), ("json", Some("--log-as-json"))] {
        let tmp = tempfile::tempdir().unwrap();
        let mut opts = Opts::default()
            .arg("--log-level")
            .arg("debug")
            .env("RUST_LOG", "debug");
        if let Some(a) = extra {
            opts = opts.arg(a);
        }
        let s = Sentry::start(tmp.path(), opts);
        let mut secrets = Secrets(Vec::new());
        // Every private key in the credentials directory (issuer key, kept root key).
        let mut keys = 0;
        for entry in std::fs::read_dir(s.creds()).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read(&path).unwrap();
            for block in pem::parse_many(&text).unwrap_or_default() {
                if block.tag().ends_with("PRIVATE KEY") {
                    secrets.add_der(&path.display().to_string(), block.contents());
                    keys += 1;
                }
            }
        }
        assert!(
            keys >= 1,
            "{label}: no private key found in the credentials directory"
        );
        workload(&s, &mut secrets).await;

        // Key material on disk: 0600 files in a 0700 directory.
        assert_eq!(file_mode(&s.creds()), 0o700, "{label}: directory mode");
        for entry in std::fs::read_dir(s.creds()).unwrap() {
            let path = entry.unwrap().path();
            assert_eq!(file_mode(&path), 0o600, "{label}: {} mode", path.display());
        }

        let log_path = s.log.clone();
        let status = s.stop();
        assert!(status.success());
        let log = std::fs::read_to_string(log_path).unwrap();
        scan(&log, &secrets, label);
    }
}
