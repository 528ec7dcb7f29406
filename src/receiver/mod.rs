//! The receiver: where Strapi's fire-and-forget webhooks become durable, at-least-once
//! deliveries.
//!
//! Two HTTP servers share one [`ReceiverState`]: the ingest port ([`ingest::app`]), which Strapi
//! calls and which answers only after the event is stored, and the admin port ([`admin::app`])
//! for probes, metrics and the delivery API. The [`engine::Engine`] sends what was stored, one
//! worker per sink; the [`router::run`] task turns stored events into deliveries in between.
//! Configuration arrives as [`source::Snapshot`]s from a
//! [`source::ConfigSource`]; the queue is any [`crate::queue::Queue`]. [`serve`] runs it all
//! until a shutdown signal and then stops in order: stop accepting, finish storing what arrived,
//! let in-flight deliveries finish within a grace period, hand back the rest.

pub mod admin;
pub mod deliveries;
pub mod engine;
pub mod ingest;
pub mod kubernetes;
pub mod metrics;
pub mod repair;
pub mod router;
pub mod server;
pub mod source;
pub mod tenant;

use std::{
    future::Future,
    path::PathBuf,
    str::FromStr,
    sync::{Arc, PoisonError, RwLock},
    time::Duration,
};

use tokio::{
    net::TcpListener,
    sync::{Notify, watch},
};

use crate::{
    http::AdminToken,
    queue::{
        KnownInstances, Queue, QueueError,
        nats::{NatsQueue, NatsSpec},
        sqlite::{Durability, SqliteQueue},
    },
    sinks::{EgressBase, SinkClient, SinkClientError},
};
use engine::{Engine, EngineSettings};
use metrics::Metrics;
use source::{ConfigSource, Snapshot};

/// Why the receiver could not start or stopped with an error. Each variant names the step.
#[derive(Debug, thiserror::Error)]
pub enum ReceiverError {
    /// `--queue` is not a queue this build supports.
    #[error("--queue {0:?}: expected sqlite:<path> or nats://<host>:<port>[?replicas=N]")]
    QueueSpec(String),
    /// `--config-source` is not a source this build supports.
    #[error("--config-source {0:?}: expected kubernetes or file:<path>")]
    ConfigSourceSpec(String),
    /// The queue could not be opened.
    #[error("opening the queue: {0}")]
    Queue(#[from] QueueError),
    /// The configuration could not be loaded.
    #[error("loading the configuration: {0}")]
    Config(#[from] source::ManifestError),
    /// The cluster could not be reached to watch the configuration.
    #[error("watching the configuration in the cluster: {0}")]
    Kubernetes(#[from] kubernetes::KubernetesSourceError),
    /// The sink HTTP client could not be built.
    #[error("setting up the sink client: {0}")]
    SinkClient(#[from] SinkClientError),
    /// A port could not be bound.
    #[error("binding {what} on {address}: {source}")]
    Bind {
        /// `ingest` or `admin`.
        what: &'static str,
        /// The address.
        address: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Where the queue lives: `sqlite:<path>` or `nats://<host>:<port>[?replicas=N]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QueueSpec {
    /// The embedded SQLite queue in this file.
    Sqlite(PathBuf),
    /// NATS JetStream, shared by several receiver replicas.
    Nats(NatsSpec),
}

impl FromStr for QueueSpec {
    type Err = ReceiverError;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        if let Some(nats) = NatsSpec::parse(spec) {
            return Ok(Self::Nats(nats));
        }
        match spec.strip_prefix("sqlite:") {
            Some(path) if !path.is_empty() => Ok(Self::Sqlite(PathBuf::from(path))),
            _ => Err(ReceiverError::QueueSpec(spec.to_owned())),
        }
    }
}

impl QueueSpec {
    /// Opens the queue; `durability` applies to backends that store on local disk.
    pub async fn open(&self, durability: Durability) -> Result<Arc<dyn Queue>, ReceiverError> {
        match self {
            QueueSpec::Sqlite(path) => Ok(Arc::new(SqliteQueue::open_with(path, durability)?)),
            QueueSpec::Nats(spec) => Ok(Arc::new(NatsQueue::connect(spec).await?)),
        }
    }
}

/// Where the configuration comes from: `kubernetes` or `file:<path>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigSourceSpec {
    /// `StrapiInstance`s, `StrapiWebhook`s and Secrets in the cluster, see
    /// [`kubernetes::KubernetesSource`].
    Kubernetes,
    /// A manifest file of instances, webhooks and Secrets, see [`source::ManifestFile`].
    File(PathBuf),
}

impl FromStr for ConfigSourceSpec {
    type Err = ReceiverError;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        if spec == "kubernetes" {
            return Ok(Self::Kubernetes);
        }
        match spec.strip_prefix("file:") {
            Some(path) if !path.is_empty() => Ok(Self::File(PathBuf::from(path))),
            _ => Err(ReceiverError::ConfigSourceSpec(spec.to_owned())),
        }
    }
}

impl ConfigSourceSpec {
    /// Loads the source.
    pub async fn load(&self) -> Result<Box<dyn ConfigSource>, ReceiverError> {
        match self {
            ConfigSourceSpec::Kubernetes => {
                Ok(Box::new(kubernetes::KubernetesSource::start().await?))
            }
            ConfigSourceSpec::File(path) => Ok(Box::new(source::ManifestFile::load(path)?)),
        }
    }
}

/// Receiver knobs.
#[derive(Clone, Debug)]
pub struct ReceiverSettings {
    /// Largest body accepted from Strapi.
    pub max_body_bytes: usize,
    /// Window within which Strapi's duplicate events are collapsed.
    pub dedup_window: Duration,
    /// Delivery engine knobs.
    pub engine: EngineSettings,
    /// The receiver's part of the sink egress policy. [`run`] adds its own ports.
    pub egress: EgressBase,
    /// The bearer token of the admin API; without one, only probes and metrics are served.
    pub admin_token: Option<AdminToken>,
    /// Timeouts and connection cap of both ports.
    pub server: server::ServerLimits,
}

impl Default for ReceiverSettings {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
            dedup_window: Duration::from_secs(2),
            engine: EngineSettings::default(),
            egress: EgressBase::default(),
            admin_token: None,
            server: server::ServerLimits::default(),
        }
    }
}

/// What the ingest and admin handlers share.
#[derive(Debug)]
pub struct ReceiverState {
    /// The durable queue.
    pub queue: Arc<dyn Queue>,
    /// The latest configuration.
    pub config: watch::Receiver<Arc<Snapshot>>,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// The delivery engine (not yet running until [`serve`]).
    pub engine: Arc<Engine>,
    /// Knobs.
    pub settings: ReceiverSettings,
    /// What the gap repair asks of this process.
    pub repair: repair::RepairState,
    /// Woken when an event is stored unrouted, so the [`router`] routes it at once.
    pub routing: Notify,
    /// The last known ingest configuration, loaded from the queue at start: what ingest
    /// authenticates with until the live configuration has loaded.
    known: RwLock<Arc<KnownInstances>>,
}

impl ReceiverState {
    /// Wires a queue and a configuration source together.
    pub fn new(
        queue: Arc<dyn Queue>,
        source: &dyn ConfigSource,
        settings: ReceiverSettings,
    ) -> Result<Arc<Self>, ReceiverError> {
        let config = source.snapshots();
        let metrics = Arc::new(Metrics::new());
        let engine = Engine::new(
            Arc::clone(&queue),
            SinkClient::new(settings.egress.clone())?,
            config.clone(),
            Arc::clone(&metrics),
            settings.engine.clone(),
        );
        Ok(Arc::new(Self {
            queue,
            config,
            metrics,
            engine,
            settings,
            repair: repair::RepairState::default(),
            routing: Notify::new(),
            known: RwLock::default(),
        }))
    }

    /// The last known ingest configuration (empty until [`ReceiverState::load_known_instances`]).
    pub fn known_instances(&self) -> Arc<KnownInstances> {
        Arc::clone(&self.known.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Loads the last known ingest configuration from the queue; a failure is logged and leaves
    /// ingest waiting for the live configuration, as without one.
    pub async fn load_known_instances(&self) {
        match self.queue.known_instances().await {
            Ok(known) => {
                tracing::info!(
                    instances = known.len(),
                    "loaded the last known configuration"
                );
                *self.known.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(known);
            }
            Err(error) => {
                tracing::warn!(%error, "reading the last known configuration failed");
            }
        }
    }
}

/// Runs the ingest server, the admin server and the engine until `shutdown` completes, then
/// stops them in order.
pub async fn serve(
    state: Arc<ReceiverState>,
    ingest: TcpListener,
    admin: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ReceiverError> {
    let (stop, stopping) = watch::channel(false);
    state.load_known_instances().await;
    let engine = tokio::spawn(Arc::clone(&state.engine).run(stopping.clone()));
    let router = tokio::spawn(router::run(Arc::clone(&state), stopping.clone()));
    tokio::spawn(source::persist_known_instances(
        Arc::clone(&state.queue),
        state.config.clone(),
        stopping.clone(),
    ));
    let limits = state.settings.server.clone();
    let admin_server = tokio::spawn({
        let (app, limits, stopping) = (
            admin::app(Arc::clone(&state)),
            limits.clone(),
            stopping.clone(),
        );
        async move { server::serve("admin", admin, app, &limits, stopping).await }
    });
    let ingest_server = server::serve(
        "ingest",
        ingest,
        ingest::app(Arc::clone(&state)),
        &limits,
        stopping.clone(),
    );
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!("shutting down: no new events; finishing in-flight work");
        stop.send_replace(true);
    });
    // Requests in flight are answered after they are stored; a client that keeps a request
    // open longer than the grace period (a trickling body) does not hold the shutdown up.
    let grace = state.settings.engine.shutdown_grace;
    let mut bound = stopping.clone();
    tokio::select! {
        () = ingest_server => {}
        () = async move {
            let _ = bound.wait_for(|stop| *stop).await;
            tokio::time::sleep(grace).await;
        } => {
            tracing::warn!("ingest requests still open after the grace period; closing them");
        }
    }
    // The engine's workers bound their own drain by the grace period; the router finishes the
    // batch it routes (what stays unrouted is routed after the next start).
    let _ = engine.await;
    let _ = router.await;
    let mut bound = stopping;
    let _ = tokio::time::timeout(grace, async {
        let _ = bound.wait_for(|stop| *stop).await;
        let _ = admin_server.await;
    })
    .await;
    let tracer = state.settings.engine.tracer.clone();
    let _ = tokio::task::spawn_blocking(move || tracer.flush()).await;
    tracing::info!("receiver stopped");
    Ok(())
}

/// What `strapi-webhook-operator receiver` was asked to run.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Address of the ingest port Strapi calls.
    pub ingest_addr: String,
    /// Address of the admin port.
    pub admin_addr: String,
    /// Where the queue lives.
    pub queue: QueueSpec,
    /// How hard the queue pushes each commit to disk.
    pub durability: Durability,
    /// Where the configuration comes from.
    pub config_source: ConfigSourceSpec,
    /// Knobs.
    pub settings: ReceiverSettings,
}

/// Opens the queue, loads the configuration, binds both ports and serves until SIGTERM.
pub async fn run(mut options: RunOptions) -> Result<(), ReceiverError> {
    let ingest = bind("ingest", &options.ingest_addr).await?;
    let admin = bind("admin", &options.admin_addr).await?;
    options
        .settings
        .egress
        .own_ports
        .extend(own_ports(&ingest, &admin));
    options.settings.server.fit_open_files_limit();
    let queue = options.queue.open(options.durability).await?;
    let source = options.config_source.load().await?;
    let state = ReceiverState::new(queue, source.as_ref(), options.settings)?;
    tracing::info!(
        ingest = %options.ingest_addr,
        admin = %options.admin_addr,
        queue = ?options.queue,
        "receiver listening"
    );
    serve(state, ingest, admin, shutdown_signal()).await
}

/// The ports of the ingest and admin listeners, which no sink may call.
pub fn own_ports(ingest: &TcpListener, admin: &TcpListener) -> Vec<u16> {
    [ingest, admin]
        .iter()
        .filter_map(|listener| listener.local_addr().ok())
        .map(|address| address.port())
        .collect()
}

/// Binds a listener, naming what for in the error.
pub async fn bind(what: &'static str, address: &str) -> Result<TcpListener, ReceiverError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| ReceiverError::Bind {
            what,
            address: address.to_owned(),
            source,
        })
}

/// Completes on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM; only Ctrl-C stops the receiver");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = terminate => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
