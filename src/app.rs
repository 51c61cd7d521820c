//! Wires the parts together for `sentry` (serve): load or generate the bundle, start the CA, the
//! serving certificate, the gRPC listener and the health/metrics endpoints, and shut down cleanly
//! on SIGINT/SIGTERM. The JWT features (JWT-SVIDs, OIDC discovery, the `jwks` validator) are
//! wired in `app/jwt.rs`.

mod jwt;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::transport::server::Connected;
use tower::util::MapResponseLayer;
use tracing::{info, warn};

use crate::config::{self, Config, ConfigError, Flags, Limits, LoadedConfiguration, Mode};
use sentry_core::ca::{Lifetimes, Signer};
use sentry_proto::ca_server::CaServer;
use sentry_runtime::authority::Ca;
use sentry_runtime::k8s;
use sentry_runtime::rotation::{self, Rotator, SystemClock};
use sentry_runtime::server::admission::Admission;
use sentry_runtime::server::conn_limit;
use sentry_runtime::server::grpc::{CaService, ControlPlane};
use sentry_runtime::server::heap_trim;
use sentry_runtime::server::http;
use sentry_runtime::server::side_listener;
use sentry_runtime::server::status;
use sentry_runtime::server::stream_budget::StreamBudget;
use sentry_runtime::server::tls::{self, ServingCert};
use sentry_runtime::store::changes::Changes;
use sentry_runtime::store::{Files, Store};
use sentry_runtime::telemetry::health::{Condition, Target};
use sentry_runtime::telemetry::{Metrics, Readiness};
use sentry_runtime::validator::jwks::JwksValidator;
use sentry_runtime::validator::kubernetes::KubernetesValidator;
use sentry_runtime::validator::Validators;

/// How long in-flight requests may take to finish after a shutdown signal.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// HTTP/2 streams opened by peers and not yet answered, over all connections, per admitted
/// request (`--max-in-flight-requests`): every stream beyond the in-flight bound is shed, so this
/// keeps a queue for the shedding and no more ([`sentry_runtime::server::stream_budget`]).
pub const OPEN_STREAMS_PER_IN_FLIGHT: usize = 4;

/// Resolves the configuration (from a file, or from the API server in Kubernetes mode) and runs
/// Sentry until a shutdown signal arrives.
pub async fn run(flags: Flags, namespace_env: Option<String>) -> anyhow::Result<()> {
    // Every line already carries the version as `ver` (Dapr's log schema).
    info!("Starting Dapr Sentry certificate authority (sentry-rs)");
    match flags.mode {
        Mode::Standalone => {
            let loaded =
                config::load_configuration_file(&flags).context("invalid configuration")?;
            let config =
                Config::resolve(&flags, namespace_env, loaded).context("invalid configuration")?;
            serve(config, None).await
        }
        Mode::Kubernetes => {
            check_non_root()?;
            let client = k8s::client(flags.kubeconfig.as_deref()).await?;
            let namespace = namespace_env
                .clone()
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| "default".into());
            let (name, explicit) = config::configuration_name(&flags);
            let loaded = k8s::configuration::load(&client, &namespace, &name)
                .await
                .map_err(ConfigError::Kubernetes)
                .context("invalid configuration")?;
            if loaded.is_none() && explicit {
                anyhow::bail!("invalid configuration: Configuration {namespace}/{name} not found");
            }
            let loaded = loaded.map(|file| LoadedConfiguration {
                origin: format!("Configuration {namespace}/{name}"),
                file,
            });
            let config =
                Config::resolve(&flags, namespace_env, loaded).context("invalid configuration")?;
            serve(config, Some(client)).await
        }
    }
}

/// Refuses to run as root in Kubernetes mode, as Dapr does, unless explicitly overridden.
fn check_non_root() -> anyhow::Result<()> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or("");
    let skip = std::env::var("DAPR_UNSAFE_SKIP_CONTAINER_UID_GID_CHECK").is_ok_and(|v| v == "true");
    if uid == "0" && !skip {
        anyhow::bail!(
            "Sentry must not run as root in Kubernetes mode (set DAPR_UNSAFE_SKIP_CONTAINER_UID_GID_CHECK=true to override)"
        );
    }
    info!(uid, "Running in Kubernetes environment");
    Ok(())
}

/// Runs Sentry with `config` until a shutdown signal, step by step.
async fn serve(config: Config, kube_client: Option<kube::Client>) -> anyhow::Result<()> {
    check_key_files(&config)?;
    let metrics = Arc::new(Metrics::new().context("registering metrics")?);
    let readiness = Readiness::default();
    let stop = Stop::default();
    start_telemetry(&config, &metrics, &readiness, &stop).await?;
    let store = open_store(&config, kube_client.as_ref());
    let jwt_store = jwt::checked_store(&config, &store).await?;
    let (ca, served) = start_ca(&config, &store, &metrics).await?;
    readiness.condition(Target::Ca).met();
    let jwt_parts = jwt::start(
        &config,
        jwt_store.as_ref(),
        &metrics,
        jwt::Ready {
            oidc: readiness.condition(Target::OidcServer),
        },
        stop.stopped(),
    )
    .await?;
    let serving = start_serving_cert(&config, &ca, &metrics)?;
    readiness.condition(Target::SecurityProvider).met();
    start_rotation(&config, &store, &ca, &metrics, served).await;
    let validators = start_validators(&config, kube_client, jwt_parts.jwks, &readiness);
    let admission = Admission::new(&config.limits, metrics.clone());
    let mut service = CaService::new(ca, validators, metrics, control_plane(&config));
    if let Some(issuer) = jwt_parts.issuer {
        service = service.with_jwt(issuer);
    }
    let incoming = listen_grpc(&config, serving).await?;
    let grpc_ready = readiness.condition(Target::GrpcServer);
    grpc_ready.met();
    serve_until_signal(&config.limits, admission, service, incoming, grpc_ready).await?;
    stop.stop();
    info!("Sentry shut down gracefully");
    Ok(())
}

/// Refuses (standalone) or warns about (Kubernetes) private-key files others can read.
fn check_key_files(config: &Config) -> anyhow::Result<()> {
    let oidc_key = config.oidc.as_ref().and_then(|o| o.tls.as_ref());
    sentry_runtime::store::perms::check(
        &config.credentials,
        config.jwt.as_ref().map(|j| j.key_path.as_path()),
        oidc_key.map(|t| t.key.as_path()),
        config.mode == Mode::Kubernetes,
    )
    .context("refusing to use key material")
}

/// Tells the side servers (health, metrics, OIDC) to stop, once the gRPC server is done.
#[derive(Default)]
struct Stop(watch::Sender<bool>);

impl Stop {
    /// Resolves once [`Stop::stop`] is called.
    fn stopped(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.0.subscribe();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    }

    fn stop(self) {
        self.0.send_replace(true);
    }
}

/// The failed-handshake summary, the health server and (when enabled) the metrics server.
async fn start_telemetry(
    config: &Config,
    metrics: &Arc<Metrics>,
    readiness: &Readiness,
    stop: &Stop,
) -> anyhow::Result<()> {
    tokio::spawn(sentry_runtime::telemetry::handshakes::report_forever());
    let healthz = bind(&config.healthz.to_bind_string()).await?;
    info!(addr = %healthz.local_addr()?, "Healthz server is listening");
    tokio::spawn(http::serve_healthz(
        healthz,
        readiness.clone(),
        stop.stopped(),
    ));
    if let Some(addr) = &config.metrics {
        let listener = bind(&addr.to_bind_string()).await?;
        info!(addr = %listener.local_addr()?, "metrics server started");
        tokio::spawn(http::serve_metrics(
            listener,
            metrics.clone(),
            stop.stopped(),
        ));
    }
    readiness.condition(Target::Metrics).met();
    Ok(())
}

/// The bundle store: the credentials directory, or the Secret/ConfigMap with a client.
fn open_store(config: &Config, kube_client: Option<&kube::Client>) -> Store {
    match kube_client {
        None => info!("Using local file system for trust bundle storage"),
        Some(_) => info!("Using kubernetes secret store for trust bundle storage"),
    }
    Store::open(
        config.credentials.clone(),
        kube_client.map(|c| (c.clone(), config.namespace.as_str())),
    )
}

/// Loads (or generates) the bundle and starts the CA on it; also returns the files as stored.
async fn start_ca(
    config: &Config,
    store: &Store,
    metrics: &Metrics,
) -> anyhow::Result<(Arc<Ca>, Files)> {
    let loaded = rotation::bootstrap(store, &config.rotation, &SystemClock)
        .await
        .context("error creating CA")?;
    if loaded.generated {
        metrics.issuercert_changed.inc();
    } else {
        info!("Root and issuer certs found: using credentials from store");
    }
    let signer = Signer::new(loaded.bundle).context("error creating CA")?;
    rotation::publish_expiry(metrics, signer.bundle());
    let ca = Arc::new(Ca::new(
        signer,
        Lifetimes {
            ttl: config.workload_cert_ttl,
            allowed_clock_skew: config.allowed_clock_skew,
        },
    ));
    Ok((ca, loaded.files))
}

/// Issues Sentry's own serving certificate and keeps it renewed.
fn start_serving_cert(
    config: &Config,
    ca: &Arc<Ca>,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<Arc<ServingCert>> {
    let (serving, renew_at) = ServingCert::issue(ca, config.sentry_id.clone())
        .context("issuing Sentry's serving certificate")?;
    info!(id = %config.sentry_id, renew_at = %renew_at, "Issued Sentry's serving certificate");
    tokio::spawn(
        serving
            .clone()
            .follow(ca.clone(), metrics.clone(), renew_at),
    );
    Ok(serving)
}

/// Starts the rotator, woken by changes of the store.
async fn start_rotation(
    config: &Config,
    store: &Store,
    ca: &Arc<Ca>,
    metrics: &Arc<Metrics>,
    served: Files,
) {
    let rotator = Rotator::new(
        store.clone(),
        config.rotation.clone(),
        ca.clone(),
        metrics.clone(),
        served,
    );
    let changes = Changes::start(
        store,
        &config.credentials_dir,
        config.rotation.interval,
        config.rotation.resync,
    )
    .await;
    tokio::spawn(rotator.run(changes));
}

/// The enabled validators; each one's readiness condition is met once it can answer.
fn start_validators(
    config: &Config,
    kube_client: Option<kube::Client>,
    jwks: Option<JwksValidator>,
    readiness: &Readiness,
) -> Arc<Validators> {
    let kubernetes =
        kube_client.map(|client| KubernetesValidator::start(client, &config.sentry_id));
    let mut validators = Validators::new(config.validators.clone(), kubernetes);
    if let Some(jwks) = jwks {
        validators = validators.with_jwks(jwks);
    }
    validators.report_ready(
        readiness.condition(Target::KubernetesValidator),
        readiness.condition(Target::JwksValidator),
    );
    Arc::new(validators)
}

/// Binds the gRPC listener and starts accepting TLS connections within the capacity limits.
async fn listen_grpc(
    config: &Config,
    serving: Arc<ServingCert>,
) -> anyhow::Result<impl Stream<Item = std::io::Result<impl Connection>>> {
    let grpc = bind(&config.grpc.to_bind_string()).await?;
    info!(addr = %grpc.local_addr()?, "Running gRPC server");
    let acceptor = TlsAcceptor::from(Arc::new(tls::server_config(serving)?));
    let limits = &config.limits;
    // The side listeners' connections come out of the same descriptor budget.
    let side = side_listener::fd_budget();
    let max_connections = conn_limit::fit_to_fd_limit(limits.max_connections.saturating_add(side))
        .saturating_sub(side)
        .max(1);
    info!(max_connections, max_in_flight = limits.max_in_flight, peer_rate = ?limits.peer_rate, "Capacity limits");
    let connections = Arc::new(Semaphore::new(max_connections));
    heap_trim::spawn();
    let write_timeout = limits.response_write_timeout;
    Ok(ReceiverStream::new(tls::spawn_accept_loop(
        grpc,
        acceptor,
        connections,
        limits.handshake_timeout,
        limits.idle_timeout,
        StreamBudget::new(
            limits
                .max_in_flight
                .saturating_mul(OPEN_STREAMS_PER_IN_FLIGHT),
        ),
    ))
    .map(move |conn| conn.map(|c| c.with_write_timeout(write_timeout))))
}

/// What tonic serves gRPC over: an accepted connection.
trait Connection: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static> Connection for T {}

/// Serves gRPC on `incoming` until SIGTERM/SIGINT; then reports not ready (`grpc_ready`), stops
/// accepting and lets in-flight requests finish (bounded by [`DRAIN_TIMEOUT`]).
async fn serve_until_signal(
    limits: &Limits,
    admission: Admission,
    service: CaService,
    incoming: impl Stream<Item = std::io::Result<impl Connection>>,
    grpc_ready: Condition,
) -> anyhow::Result<()> {
    let (draining_tx, draining_rx) = oneshot::channel::<()>();
    let shutdown = async move {
        shutdown_signal().await;
        info!("Shutting down: finishing in-flight requests");
        grpc_ready.unmet();
        let _ = draining_tx.send(());
    };
    let server = tonic::transport::Server::builder()
        .max_concurrent_streams(limits.max_streams_per_connection)
        .layer(admission)
        .layer(MapResponseLayer::new(status::as_grpc_go))
        .add_service(CaServer::new(service))
        .serve_with_incoming_shutdown(incoming, shutdown);
    let drain_deadline = async {
        match draining_rx.await {
            Ok(()) => tokio::time::sleep(DRAIN_TIMEOUT).await,
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        res = server => res.context("gRPC server failed")?,
        () = drain_deadline => warn!(timeout = ?DRAIN_TIMEOUT, "In-flight requests did not finish in time; exiting anyway"),
    }
    Ok(())
}

async fn bind(addr: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr}"))
}

fn control_plane(config: &Config) -> ControlPlane {
    let from_resolv = match config.mode {
        Mode::Kubernetes => std::fs::read_to_string("/etc/resolv.conf")
            .ok()
            .and_then(|rc| k8s::cluster_domain(&rc, &config.namespace)),
        Mode::Standalone => None,
    };
    let cluster_domain = from_resolv.unwrap_or_else(|| config.trust_domain.to_string());
    info!(%cluster_domain, "Control-plane cluster domain");
    ControlPlane {
        namespace: config.namespace.clone(),
        cluster_domain,
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
