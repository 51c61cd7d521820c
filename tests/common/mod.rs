//! Test harness: runs the real `sentry` binary on free loopback ports and talks to it over real
//! TLS with the crate's own sidecar-style client.
#![allow(dead_code)]

pub(crate) mod attack;
pub(crate) mod cluster;
pub(crate) mod hostile;
pub(crate) mod kubelet;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use sentry_core::bundle::KeyType;
use sentry_proto::{SignCertificateRequest, SignCertificateResponse};

/// Path of the binary under test.
pub(crate) const SENTRY: &str = env!("CARGO_BIN_EXE_sentry");

/// A free TCP port on 127.0.0.1.
pub(crate) fn free_port() -> u16 {
    // Below the kernel's ephemeral range: a port the kernel may hand to any outgoing connection
    // (a concurrent test opening thousands) could be taken between this check and the server's
    // bind. Each process starts at its own offset; within one, a counter keeps picks apart.
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const SPAN: u32 = 12_000;
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768);
    if low <= SPAN + 1024 {
        return TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
    }
    let offset = std::process::id() % SPAN;
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = low - SPAN + (offset + n) % SPAN;
        let port = u16::try_from(port).expect("ports fit in u16");
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port below the ephemeral range");
}

/// A running sentry process; killed on drop.
pub(crate) struct Sentry {
    pub child: Child,
    pub dir: PathBuf,
    pub grpc: SocketAddr,
    pub healthz: SocketAddr,
    pub metrics: SocketAddr,
    pub log: PathBuf,
}

/// Options for starting sentry.
#[derive(Default, Clone)]
pub(crate) struct Opts {
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Contents of a Configuration YAML passed with --config.
    pub config_yaml: Option<String>,
    /// Open-files limit (soft and hard) to start the process with.
    pub nofile: Option<u64>,
    /// Log as an operator's default flags do (no `RUST_LOG`).
    pub default_log: bool,
}

impl Opts {
    pub(crate) fn arg(mut self, a: &str) -> Self {
        self.args.push(a.to_owned());
        self
    }
    pub(crate) fn args(mut self, a: &[&str]) -> Self {
        self.args.extend(a.iter().map(|s| s.to_string()));
        self
    }
    pub(crate) fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.to_owned(), v.to_owned()));
        self
    }
    pub(crate) fn config(mut self, yaml: &str) -> Self {
        self.config_yaml = Some(yaml.to_owned());
        self
    }
    /// Starts the process with `RLIMIT_NOFILE` = `n` (via `prlimit`).
    pub(crate) fn nofile(mut self, n: u64) -> Self {
        self.nofile = Some(n);
        self
    }
    /// Leaves `RUST_LOG` unset, so the default log filter applies.
    pub(crate) fn default_log(mut self) -> Self {
        self.default_log = true;
        self
    }
    /// A Configuration with the given TTL and skew.
    pub(crate) fn mtls(self, ttl: &str, skew: &str) -> Self {
        self.config(&format!(
            "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: daprsystem\nspec:\n  mtls:\n    workloadCertTTL: {ttl}\n    allowedClockSkew: {skew}\n"
        ))
    }
}

fn command(
    creds: &Path,
    grpc: u16,
    healthz: u16,
    metrics: u16,
    opts: &Opts,
    log: &Path,
) -> Command {
    let mut cmd = match opts.nofile {
        None => Command::new(SENTRY),
        Some(n) => {
            let mut c = Command::new("prlimit");
            c.arg(format!("--nofile={n}:{n}")).arg("--").arg(SENTRY);
            c
        }
    };
    cmd.arg("--issuer-credentials")
        .arg(creds)
        .args([
            "--listen-address",
            "127.0.0.1",
            "--healthz-listen-address",
            "127.0.0.1",
        ])
        .args(["--metrics-listen-address", "127.0.0.1"])
        .arg("--port")
        .arg(grpc.to_string())
        .arg("--healthz-port")
        .arg(healthz.to_string())
        .arg("--metrics-port")
        .arg(metrics.to_string())
        .args(&opts.args)
        .env_remove("NAMESPACE")
        .env(
            "RUST_LOG",
            "debug,h2=info,hyper=info,tower=info,rustls=info",
        )
        .stdin(Stdio::null());
    for (k, v) in &opts.env {
        cmd.env(k, v);
    }
    if opts.default_log {
        cmd.env_remove("RUST_LOG");
    }
    if let Ok(f) = std::fs::File::create(log) {
        if let Ok(f2) = f.try_clone() {
            cmd.stdout(f).stderr(f2);
        }
    }
    cmd
}

impl Sentry {
    /// Starts sentry with credentials in `dir/creds` and waits until /healthz is 200.
    ///
    /// The ports come from [`free_port`], and another process (a parallel test's client, say) can
    /// take one between that check and Sentry's bind. A start that fails only for that reason is
    /// retried on fresh ports, from a clean credentials directory if the failed attempt made it.
    pub(crate) fn start(dir: &Path, opts: Opts) -> Sentry {
        let creds_existed = dir.join("creds").exists();
        for _ in 0..4 {
            let mut s = Self::spawn(dir, opts.clone());
            match s.ready_or_exit() {
                Ok(()) => return s,
                Err(log) if log.contains("Address already in use") => {
                    drop(s);
                    if !creds_existed {
                        let _ = std::fs::remove_dir_all(dir.join("creds"));
                    }
                }
                Err(log) => panic!("sentry exited before it was ready; log:\n{log}"),
            }
        }
        panic!("sentry found no free ports in 4 attempts");
    }

    /// Waits until /healthz is 200 (Ok) or the process has exited (Err with its log).
    fn ready_or_exit(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if http_get(self.healthz, "/healthz").map(|(s, _)| s) == Some(200) {
                return Ok(());
            }
            if self.child.try_wait().ok().flatten().is_some() {
                return Err(self.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("sentry not ready; log:\n{}", self.log_text());
    }

    /// Starts sentry without waiting.
    pub(crate) fn spawn(dir: &Path, mut opts: Opts) -> Sentry {
        std::fs::create_dir_all(dir).unwrap();
        let creds = dir.join("creds");
        if let Some(yaml) = opts.config_yaml.take() {
            let cfg = dir.join("config.yaml");
            std::fs::write(&cfg, yaml).unwrap();
            opts.args.push("--config".into());
            opts.args.push(cfg.display().to_string());
        }
        let (g, h, m) = (free_port(), free_port(), free_port());
        let log = dir.join(format!("sentry-{g}.log"));
        let child = command(&creds, g, h, m, &opts, &log).spawn().unwrap();
        Sentry {
            child,
            dir: dir.to_path_buf(),
            grpc: SocketAddr::from(([127, 0, 0, 1], g)),
            healthz: SocketAddr::from(([127, 0, 0, 1], h)),
            metrics: SocketAddr::from(([127, 0, 0, 1], m)),
            log,
        }
    }

    pub(crate) fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if http_get(self.healthz, "/healthz").map(|(s, _)| s) == Some(200) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("sentry not ready; log:\n{}", self.log_text());
    }

    /// True while the process is running.
    pub(crate) fn child_alive(&self) -> bool {
        std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))
            .map(|s| !s.contains(") Z "))
            .unwrap_or(false)
    }

    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub(crate) fn creds(&self) -> PathBuf {
        self.dir.join("creds")
    }

    pub(crate) fn anchors(&self) -> Vec<u8> {
        std::fs::read(self.creds().join("ca.crt")).unwrap()
    }

    /// A gRPC client over a fresh TLS connection that authorises `server_id`.
    pub(crate) async fn client_for(
        &self,
        server_id: &str,
    ) -> Result<
        sentry_proto::ca_client::CaClient<tonic::transport::Channel>,
        sentry_client::ClientError,
    > {
        let tls = Arc::new(sentry_client::tls_config(&self.anchors(), server_id)?);
        sentry_client::connect(self.grpc, tls).await
    }

    /// A client that authorises the default Sentry ID.
    pub(crate) async fn client(
        &self,
    ) -> sentry_proto::ca_client::CaClient<tonic::transport::Channel> {
        self.client_for("spiffe://localhost/ns/default/dapr-sentry")
            .await
            .unwrap()
    }

    pub(crate) fn metrics_text(&self) -> String {
        http_get(self.metrics, "/metrics")
            .map(|(_, b)| b)
            .unwrap_or_default()
    }

    pub(crate) fn stop(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                return self.child.wait().unwrap();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Sentry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.keep_log_for_scan();
    }
}

impl Sentry {
    /// When `SENTRY_TEST_LOGS` names a directory (scripts/test sets it), keeps this run's debug
    /// log there, with the base64 lines of every private key in the credentials directory beside
    /// it (`.secrets`), for the suite-wide scan (tests/logscan.py).
    fn keep_log_for_scan(&self) {
        let Some(dir) = std::env::var_os("SENTRY_TEST_LOGS") else {
            return;
        };
        let dir = PathBuf::from(dir);
        let test = std::env::current_exe()
            .ok()
            .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
            .unwrap_or_default();
        let base = dir.join(format!(
            "{test}-{}-{}",
            std::process::id(),
            self.grpc.port()
        ));
        let _ = std::fs::create_dir_all(&dir);
        let _ = std::fs::copy(&self.log, base.with_extension("log"));
        let mut secrets = String::new();
        for entry in std::fs::read_dir(self.creds())
            .into_iter()
            .flatten()
            .flatten()
        {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            if text.contains("PRIVATE KEY-----") {
                for line in text.lines().filter(|l| !l.starts_with("-----")) {
                    secrets.push_str(line);
                    secrets.push('\n');
                }
            }
        }
        let _ = std::fs::write(base.with_extension("secrets"), secrets);
    }
}

/// The permission bits of a file or directory (`0o600`, say).
pub(crate) fn file_mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Runs sentry to completion (for start-up failures); returns its output.
pub(crate) fn run_to_exit(dir: &Path, opts: Opts) -> Output {
    let mut s = Sentry::spawn(dir, opts);
    let deadline = Instant::now() + Duration::from_secs(20);
    while s.child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            panic!("sentry did not exit; log:\n{}", s.log_text());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = s.child.wait().unwrap();
    let text = s.log_text();
    Output {
        status,
        stdout: text.into_bytes(),
        stderr: Vec::new(),
    }
}

/// Minimal HTTP/1.1 GET; returns status and body.
pub(crate) fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let status = buf.split_whitespace().nth(1)?.parse().ok()?;
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((status, body))
}

/// A well-formed request for `id` in `namespace` with a fresh key of `key_type`.
pub(crate) fn request(id: &str, namespace: &str, key_type: KeyType) -> SignCertificateRequest {
    let (_key, csr) = sentry_client::new_csr(key_type).unwrap();
    SignCertificateRequest {
        id: id.into(),
        namespace: namespace.into(),
        certificate_signing_request: csr.into_bytes(),
        ..Default::default()
    }
}

/// Signs a request over a fresh connection.
pub(crate) async fn sign(
    s: &Sentry,
    req: SignCertificateRequest,
) -> Result<SignCertificateResponse, tonic::Status> {
    s.client()
        .await
        .sign_certificate(req)
        .await
        .map(|r| r.into_inner())
}

/// Splits a PEM text into DER certificates.
pub(crate) fn pem_certs(pem_bytes: &[u8]) -> Vec<Vec<u8>> {
    pem::parse_many(pem_bytes)
        .unwrap()
        .into_iter()
        .filter(|b| b.tag() == "CERTIFICATE")
        .map(|b| b.into_contents())
        .collect()
}

/// The certificate chain a TLS server presents (no verification).
pub(crate) async fn server_chain(addr: SocketAddr) -> Vec<CertificateDer<'static>> {
    tls_connect(addr).await.1
}

/// A finished TLS handshake (ALPN h2, server not verified) and the chain the server presented.
pub(crate) async fn tls_connect(
    addr: SocketAddr,
) -> (
    tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    Vec<CertificateDer<'static>>,
) {
    #[derive(Debug)]
    struct Record(
        Mutex<Vec<CertificateDer<'static>>>,
        Arc<rustls::crypto::CryptoProvider>,
    );
    impl ServerCertVerifier for Record {
        fn verify_server_cert(
            &self,
            ee: &CertificateDer<'_>,
            im: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            let mut v = vec![ee.clone().into_owned()];
            v.extend(im.iter().map(|c| c.clone().into_owned()));
            *self.0.lock().unwrap() = v;
            Ok(ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &rustls::DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                m,
                c,
                d,
                &self.1.signature_verification_algorithms,
            )
        }
        fn verify_tls13_signature(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &rustls::DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                m,
                c,
                d,
                &self.1.signature_verification_algorithms,
            )
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.1.signature_verification_algorithms.supported_schemes()
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let rec = Arc::new(Record(Mutex::new(Vec::new()), provider.clone()));
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(rec.clone())
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from("x").unwrap(), tcp)
        .await
        .unwrap();
    let chain = rec.0.lock().unwrap().clone();
    (tls, chain)
}

/// The Go crypto/x509 verifier (tests/x509verify), built once per target directory.
pub(crate) fn go_verifier() -> PathBuf {
    go_tool("x509verify")
}

/// The Go command in `tests/<name>`, built once per target directory (and once per test process,
/// so parallel tests do not build over each other).
pub(crate) fn go_tool(name: &str) -> PathBuf {
    static BUILT: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if !built.iter().any(|b| b == name) {
        run_ok(
            Command::new("go")
                .args(["build", "-o"])
                .arg(&out)
                .arg(".")
                .current_dir(
                    Path::new(env!("CARGO_MANIFEST_DIR"))
                        .join("tests")
                        .join(name),
                ),
        );
        built.push(name.to_owned());
    }
    out
}

/// Verifies `chain` (PEM, leaf first) against `anchors` with Go's crypto/x509, requiring the
/// leaf's URI SAN to be `id`; returns the verifier's output.
pub(crate) fn go_verify(anchors: &Path, chain: &Path, id: &str) -> String {
    run_ok(Command::new(go_verifier()).arg(anchors).arg(chain).arg(id))
}

/// Runs a command and asserts success, returning stdout.
pub(crate) fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Snapshot of a directory: file names and contents.
pub(crate) fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| {
                    (
                        e.file_name().to_string_lossy().into_owned(),
                        std::fs::read(e.path()).unwrap_or_default(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// A bare gRPC channel to `s` over real TLS that authorises the default Sentry ID (for raw,
/// hand-encoded requests).
pub(crate) async fn channel(s: &Sentry) -> tonic::transport::Channel {
    let tls = sentry_client::tls_config(&s.anchors(), "spiffe://localhost/ns/default/dapr-sentry")
        .unwrap();
    sentry_client::channel(s.grpc, Arc::new(tls)).await.unwrap()
}

/// A PEM CSR made by openssl: `make_key` is a shell snippet run in a scratch directory that
/// writes the key to `k.pem`; `req_args` are the `openssl req` arguments after `-key k.pem`
/// (at least a `-subj`).
pub(crate) fn openssl_csr(make_key: &str, req_args: &str) -> Vec<u8> {
    let tmp = tempfile::tempdir().unwrap();
    let script = format!(
        "set -e; cd {dir}; {make_key}; openssl req -new -key k.pem {req_args}",
        dir = tmp.path().display()
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Sum of every sample of a metric family (all label sets) in a Prometheus text.
pub(crate) fn metric_sum(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}
