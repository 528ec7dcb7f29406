//! The controller: reconciles `StrapiInstance`s into one registration per Strapi (through the
//! admin REST API) and validates `StrapiWebhook`s, reporting honest status conditions on both.
//!
//! Two kube-runtime `Controller`s share one [`Context`]. The instance controller watches the
//! StrapiWebhooks that use an instance (their events form the registration's union) and the
//! Secrets it reads; the webhook controller watches its instance and the Secrets its sinks name.
//! Each reconcile is a pipeline — dereference → validate → build (pure) → apply → status — with
//! status written only by server-side apply under [`FIELD_MANAGER`]. Leader election through a
//! Lease lets two replicas run; only the leader reconciles.

mod backoff;
mod conditions;
mod error;
mod events;
#[cfg(test)]
mod fixtures;
mod instance;
pub mod metrics;
mod receiver_admin;
mod repair;
mod routing;
mod secrets;
mod strapi_access;
mod webhook;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{Router, extract::State, http::StatusCode, routing::get};
use futures::StreamExt;
use k8s_openapi::{api::core::v1::Secret, jiff::SignedDuration};
use kube::{
    Api, Client, ResourceExt,
    runtime::{
        Controller,
        controller::{Action, Error as ControllerError},
        reflector::{ObjectRef, Store},
        watcher,
    },
};
use prometheus_client::registry::Registry;

pub use backoff::{Backoff, retry_delay};
pub use conditions::Reported;
pub use error::Error;
pub use events::{Notice, Publisher};
pub use metrics::{Metrics, ReceiverCallLabels};
pub use receiver_admin::{ReceiverAdmin, ReceiverError, StatsCache};
pub use repair::GapRepair;
pub use routing::{REPORT_TTL as ROUTING_REPORT_TTL, ReceiverReplicas, RoutingTracker, ServiceRef};
pub use strapi_access::StrapiAccess;
pub use webhook::{unknown_models, validation_conditions};

use crate::{
    api::{StrapiAuth, StrapiInstance, StrapiWebhook, shared_secret},
    config::{instance_key, referenced_instance, secret_refs},
    key::ObjectKey,
};

/// The one field manager for everything the controller writes with server-side apply.
pub const FIELD_MANAGER: &str = "strapi-webhook-operator";

/// Settings of the controller.
#[derive(Clone, Debug)]
pub struct Options {
    /// Base URL at which Strapi reaches the receiver (unless an instance overrides it).
    pub receiver_url: String,
    /// Base URL of the receiver's admin API, for verification and delivery counters; also the
    /// one replica asked what it routes unless `receiver_replicas` is set.
    pub receiver_admin_url: String,
    /// The receiver's admin Service: with it, every ready endpoint of its EndpointSlices is a
    /// replica that must route a webhook's generation before the webhook is `Routed`.
    pub receiver_replicas: Option<ServiceRef>,
    /// The bearer token of the receiver's admin API.
    pub receiver_admin_token: Option<crate::http::AdminToken>,
    /// Header that carries the shared secret to the receiver.
    pub secret_header: String,
    /// How long the previous shared secret stays valid after a rotation.
    pub secret_grace: SignedDuration,
    /// How long to wait for the receiver to see Strapi's trigger.
    pub verify_timeout: Duration,
    /// Whether the receiver lets sinks call loopback addresses (its `--allow-loopback-sinks`),
    /// so validation refuses the same sinks the receiver will.
    pub allow_loopback_sinks: bool,
    /// How gap repair checks compare.
    pub repair: crate::repair::CheckSettings,
    /// This replica's pod, named as the reporting instance of the Events it publishes.
    pub pod_name: Option<String>,
}

/// What every reconcile shares: its dependencies, each component owning its own state.
pub struct Context {
    /// The Kubernetes client.
    pub client: Client,
    /// Settings.
    pub options: Options,
    /// Metrics.
    pub metrics: Metrics,
    /// Event publisher.
    pub events: Publisher,
    /// Every StrapiInstance, from the instance controller's reflector.
    pub instances: Store<StrapiInstance>,
    /// Every StrapiWebhook, from the webhook controller's reflector.
    pub webhooks: Store<StrapiWebhook>,
    /// The instances' Strapis: credentials, clients, content types.
    pub strapi: StrapiAccess,
    /// The receiver's admin API.
    pub receiver: ReceiverAdmin,
    /// The receiver's delivery counters, fetched at a bounded rate.
    pub receiver_stats: StatsCache,
    /// Whether the receiver replicas route each webhook's generation.
    pub routing: RoutingTracker,
    /// The receiver's gap repair routes and the instances' check schedule.
    pub repair: GapRepair,
    /// Retry delays of failing reconciles.
    pub backoff: Backoff,
}

impl Context {
    /// A context over the given stores; with `options.receiver_replicas` it starts watching
    /// the receiver's endpoints (so it needs a Tokio runtime).
    pub fn new(
        client: Client,
        options: Options,
        metrics: Metrics,
        instances: Store<StrapiInstance>,
        webhooks: Store<StrapiWebhook>,
    ) -> Self {
        let receiver = ReceiverAdmin::new(
            &options.receiver_admin_url,
            options.receiver_admin_token.as_ref(),
        );
        let replicas = options
            .receiver_replicas
            .clone()
            .map(|service| routing::ReceiverReplicas::watch(client.clone(), service));
        Context {
            events: Publisher::new(client.clone(), options.pod_name.clone()),
            strapi: StrapiAccess::new(client.clone(), metrics.strapi_calls.clone()),
            routing: RoutingTracker::new(
                receiver.clone(),
                replicas,
                metrics.receiver_calls.clone(),
            ),
            repair: GapRepair::new(crate::repair::RepairClient::new(
                &options.receiver_admin_url,
                options.receiver_admin_token.as_ref(),
            )),
            receiver,
            receiver_stats: StatsCache::default(),
            backoff: Backoff::default(),
            client,
            options,
            metrics,
            instances,
            webhooks,
        }
    }
}

fn error_policy<K: kube::Resource<DynamicType = ()>>(
    object: Arc<K>,
    error: &Error,
    ctx: Arc<Context>,
) -> Action {
    tracing::warn!(object = %ObjectRef::from_obj(object.as_ref()), reason = error.reason(), %error, "reconcile failed");
    ctx.backoff
        .failed(ObjectRef::from_obj(object.as_ref()).to_string(), error)
}

/// Runs both controllers until SIGTERM/SIGINT, serving `/healthz`, `/readyz` and `/metrics`.
pub async fn run(
    client: Client,
    options: Options,
    metrics_addr: SocketAddr,
    leader_election: Option<LeaderElection>,
) -> Result<(), RunError> {
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let registry = Arc::new(registry);
    let listener = tokio::net::TcpListener::bind(metrics_addr)
        .await
        .map_err(RunError::Bind)?;
    tracing::info!(%metrics_addr, "serving /healthz, /readyz and /metrics");
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, health_app(registry)).await {
            tracing::error!(%error, "the metrics server stopped");
        }
    });

    let _lease = match leader_election {
        Some(election) => Some(election.acquire(client.clone()).await?),
        None => None,
    };

    let instance_api: Api<StrapiInstance> = Api::all(client.clone());
    let webhook_api: Api<StrapiWebhook> = Api::all(client.clone());
    let secret_api: Api<Secret> = Api::all(client.clone());
    let instances = Controller::new(instance_api.clone(), watcher::Config::default());
    let webhooks = Controller::new(webhook_api.clone(), watcher::Config::default());
    let ctx = Arc::new(Context::new(
        client,
        options,
        metrics,
        instances.store(),
        webhooks.store(),
    ));

    let instance_store = ctx.instances.clone();
    let (repair_due, receiver_changes) = futures::channel::mpsc::unbounded();
    tokio::spawn(repair::watch_receiver(ctx.clone(), repair_due));
    let instance_controller = instances
        .reconcile_all_on(receiver_changes)
        .watches(webhook_api, watcher::Config::default(), |webhook| {
            let ObjectKey { namespace, name } = referenced_instance(&webhook);
            Some(ObjectRef::new(&name).within(&namespace))
        })
        .watches(
            secret_api.clone(),
            watcher::Config::default(),
            move |secret| instances_using_secret(&instance_store, &secret),
        )
        .shutdown_on_signal()
        .run(reconcile_instance, error_policy, ctx.clone())
        .for_each(|outcome| log_stream_error("StrapiInstance", outcome));

    let webhook_store = ctx.webhooks.clone();
    let webhooks_of_instance = ctx.webhooks.clone();
    let webhook_controller = webhooks
        .watches(instance_api, watcher::Config::default(), move |instance| {
            let key = instance_key(&instance);
            webhooks_of_instance
                .state()
                .into_iter()
                .filter(|webhook| referenced_instance(webhook) == key)
                .map(|webhook| ObjectRef::from_obj(webhook.as_ref()))
                .collect::<Vec<_>>()
        })
        .watches(secret_api, watcher::Config::default(), move |secret| {
            webhooks_using_secret(&webhook_store, &secret)
        })
        .shutdown_on_signal()
        .run(reconcile_webhook, error_policy, ctx.clone())
        .for_each(|outcome| log_stream_error("StrapiWebhook", outcome));

    tracing::info!("controllers started");
    futures::join!(instance_controller, webhook_controller);
    tracing::info!("controllers stopped");
    Ok(())
}

/// Logs what a controller's stream reports besides reconciles, with a bounded reason: a watch
/// that fails (a missing RBAC rule, the API server gone) would otherwise go unnoticed while the
/// controller stops seeing changes. Failed reconciles are logged by `error_policy` already.
async fn log_stream_error<K>(
    kind: &'static str,
    outcome: Result<(ObjectRef<K>, Action), ControllerError<Error, watcher::Error>>,
) where
    K: kube::Resource,
{
    let Err(error) = outcome else {
        return;
    };
    let reason = match &error {
        ControllerError::ReconcilerFailed(..) => return,
        // A scheduled reconcile of an object deleted meanwhile: expected, kube-runtime says.
        ControllerError::ObjectNotFound(_) => {
            tracing::debug!(controller = kind, %error, "object gone before its reconcile");
            return;
        }
        ControllerError::QueueError(_) => "WatchFailed",
        ControllerError::RunnerError(_) => "RunnerFailed",
    };
    tracing::warn!(controller = kind, reason, %error, "controller stream error");
}

/// Reconciles one `StrapiInstance` (the controller's entry point; public for tests and embedders).
pub async fn reconcile_instance(
    object: Arc<StrapiInstance>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let key = ObjectRef::from_obj(object.as_ref()).to_string();
    let action = ctx
        .metrics
        .measure(
            "StrapiInstance",
            Error::reason,
            instance::reconcile(object, ctx.clone()),
        )
        .await?;
    ctx.backoff.succeeded(&key);
    Ok(action)
}

/// Reconciles one `StrapiWebhook` (the controller's entry point; public for tests and embedders).
pub async fn reconcile_webhook(
    object: Arc<StrapiWebhook>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let key = ObjectRef::from_obj(object.as_ref()).to_string();
    let action = webhook::reconcile(object, ctx.clone()).await?;
    ctx.backoff.succeeded(&key);
    Ok(action)
}

/// Instances that read this Secret (admin credentials) or own it (shared secret).
fn instances_using_secret(
    store: &Store<StrapiInstance>,
    secret: &Secret,
) -> Vec<ObjectRef<StrapiInstance>> {
    let namespace = secret.namespace();
    let name = secret.name_any();
    store
        .state()
        .into_iter()
        .filter(|instance| instance.namespace() == namespace)
        .filter(|instance| {
            let reads = match &instance.spec.auth {
                StrapiAuth {
                    api_token: Some(token),
                    ..
                } => token.name == name,
                StrapiAuth {
                    credentials: Some(login),
                    ..
                } => login.secret_name == name,
                StrapiAuth { .. } => false,
            };
            reads || shared_secret::name(&instance.name_any()) == name
        })
        .map(|instance| ObjectRef::from_obj(instance.as_ref()))
        .collect()
}

/// Webhooks whose sinks read this Secret.
fn webhooks_using_secret(
    store: &Store<StrapiWebhook>,
    secret: &Secret,
) -> Vec<ObjectRef<StrapiWebhook>> {
    let namespace = secret.namespace();
    let name = secret.name_any();
    store
        .state()
        .into_iter()
        .filter(|webhook| webhook.namespace() == namespace)
        .filter(|webhook| {
            secret_refs(&webhook.spec)
                .iter()
                .any(|reference| reference.name == name)
        })
        .map(|webhook| ObjectRef::from_obj(webhook.as_ref()))
        .collect()
}

fn health_app(registry: Arc<Registry>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }))
        .route("/metrics", get(serve_metrics))
        .with_state(registry)
}

async fn serve_metrics(State(registry): State<Arc<Registry>>) -> Result<String, StatusCode> {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)
        .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
    Ok(text)
}

/// Leader election through a `coordination.k8s.io` Lease.
#[derive(Clone, Debug)]
pub struct LeaderElection {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub lease_name: String,
    /// This replica's identity (the pod name).
    pub identity: String,
}

impl LeaderElection {
    /// Waits until this replica holds the Lease. The returned guard keeps renewing it; losing
    /// it ends the process, so a replica that is no longer leader never reconciles.
    async fn acquire(self, client: Client) -> Result<tokio::task::JoinHandle<()>, RunError> {
        let manager = kube_lease_manager::LeaseManagerBuilder::new(client, &self.lease_name)
            .with_namespace(&self.namespace)
            .with_identity(&self.identity)
            .with_field_manager(FIELD_MANAGER)
            .build()
            .await
            .map_err(RunError::Lease)?;
        let (mut leader, _task) = manager.watch().await;
        tracing::info!(lease = %self.lease_name, identity = %self.identity, "waiting to become leader");
        while !*leader.borrow_and_update() {
            leader.changed().await.map_err(|_| RunError::LeaseLost)?;
        }
        tracing::info!("became leader");
        Ok(tokio::spawn(async move {
            while leader.changed().await.is_ok() {
                if !*leader.borrow_and_update() {
                    tracing::error!(
                        "lost the leader lease; exiting so that another replica takes over"
                    );
                    std::process::exit(1);
                }
            }
        }))
    }
}

/// Why the controller could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The metrics port could not be bound.
    #[error("binding the metrics address: {0}")]
    Bind(#[source] std::io::Error),
    /// The Lease could not be set up.
    #[error("leader election: {0}")]
    Lease(#[source] kube_lease_manager::LeaseManagerError),
    /// The Lease manager stopped before this replica became leader.
    #[error("leader election stopped before this replica became leader")]
    LeaseLost,
}
