//! The controller: reconciles `StrapiInstance`s into one registration per Strapi (through the
//! admin REST API) and validates `StrapiWebhook`s, reporting honest status conditions on both.
//!
//! Two kube-runtime `Controller`s share one [`Context`]. The instance controller watches the
//! StrapiWebhooks that use an instance (their events form the registration's union) and the
//! Secrets it reads; the webhook controller watches its instance and the Secrets its sinks name.
//! Each reconcile is a pipeline — dereference → validate → build (pure) → apply → status — with
//! status written only by server-side apply under [`FIELD_MANAGER`]. Leader election through a
//! Lease lets two replicas run; only the leader reconciles.

mod conditions;
mod error;
mod events;
mod instance;
pub mod metrics;
mod receiver_admin;
mod repair;
mod routing;
mod secrets;
mod webhook;

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

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

pub use conditions::Reported;
pub use error::Error;
pub use events::{Notice, Publisher};
pub use metrics::{Metrics, ReceiverCallLabels};
pub use receiver_admin::{ReceiverAdmin, ReceiverError};
pub use routing::{REPORT_TTL as ROUTING_REPORT_TTL, ServiceRef};
pub use webhook::{unknown_models, validation_conditions};

use crate::{
    admin_api::Stats,
    api::{StrapiAuth, StrapiInstance, StrapiWebhook, shared_secret},
    config::{instance_key, referenced_instance, secret_refs},
    key::ObjectKey,
    strapi::{ClientCache, ContentType, Credentials, StrapiClient, StrapiError},
};

/// The one field manager for everything the controller writes with server-side apply.
pub const FIELD_MANAGER: &str = "strapi-webhook-operator";

/// How long content types listed from a Strapi are reused by webhook validation.
const CONTENT_TYPES_TTL: Duration = Duration::from_secs(60);
/// How long the receiver's delivery counters are reused: one request serves every webhook.
const STATS_TTL: Duration = Duration::from_secs(10);

/// Content types of one Strapi and when they were listed.
type ListedContentTypes = (Instant, Arc<Vec<ContentType>>);

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

/// What every reconcile shares.
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
    /// The receiver's admin API.
    pub receiver: ReceiverAdmin,
    /// The receiver's gap repair routes.
    pub repair_client: crate::repair::RepairClient,
    // When each instance's next gap repair check is due.
    repair_schedule: Mutex<crate::repair::Schedule>,
    // One client per instance, so its admin session survives between reconciles.
    strapi_clients: ClientCache<ObjectKey>,
    // An async lock held across the fetch, so concurrent reconciles of one instance's webhooks
    // wait for one listing instead of each asking Strapi.
    content_types: tokio::sync::Mutex<HashMap<ObjectKey, ListedContentTypes>>,
    failures: Mutex<HashMap<String, u32>>,
    stats: Mutex<Option<(Instant, Arc<Stats>)>>,
    receiver_replicas: Option<routing::ReceiverReplicas>,
    routing_reports: routing::Reports,
    routing_waits: Mutex<HashMap<String, u32>>,
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
        Context {
            events: Publisher::new(client.clone(), options.pod_name.clone()),
            receiver: ReceiverAdmin::new(
                &options.receiver_admin_url,
                options.receiver_admin_token.as_ref(),
            ),
            receiver_replicas: options
                .receiver_replicas
                .clone()
                .map(|service| routing::ReceiverReplicas::watch(client.clone(), service)),
            routing_reports: routing::Reports::default(),
            routing_waits: Mutex::default(),
            repair_client: crate::repair::RepairClient::new(
                &options.receiver_admin_url,
                options.receiver_admin_token.as_ref(),
            ),
            repair_schedule: Mutex::default(),
            client,
            options,
            metrics,
            instances,
            webhooks,
            strapi_clients: ClientCache::default(),
            content_types: tokio::sync::Mutex::default(),
            failures: Mutex::default(),
            stats: Mutex::default(),
        }
    }

    /// The Strapi client for an instance, reused while its URL and credentials stay the same.
    pub fn strapi_client(
        &self,
        key: &ObjectKey,
        url: &str,
        credentials: Credentials,
    ) -> Result<StrapiClient, Error> {
        Ok(self.strapi_clients.client(key, url, credentials)?)
    }

    async fn forget_strapi_client(&self, key: &ObjectKey) {
        self.strapi_clients.forget(key);
        self.content_types.lock().await.remove(key);
    }

    /// Awaits one Strapi call and counts it by step and outcome.
    pub async fn observe_strapi<T>(
        &self,
        step: &'static str,
        call: impl Future<Output = Result<T, StrapiError>>,
    ) -> Result<T, StrapiError> {
        let result = call.await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(error) => error::strapi_reason(error),
        };
        self.metrics
            .strapi_calls
            .get_or_create(&metrics::StrapiCallLabels { step, outcome })
            .inc();
        result
    }

    /// The content types of an instance's Strapi, cached briefly: many webhooks share them.
    pub async fn content_types(
        &self,
        instance: &StrapiInstance,
    ) -> Result<Arc<Vec<ContentType>>, Error> {
        let key = instance_key(instance);
        let mut cache = self.content_types.lock().await;
        if let Some((fetched, types)) = cache.get(&key)
            && fetched.elapsed() < CONTENT_TYPES_TTL
        {
            return Ok(types.clone());
        }
        let credentials = instance::credentials(self, instance).await?;
        let client = self.strapi_client(&key, &instance.spec.url, credentials)?;
        let types = Arc::new(
            self.observe_strapi("list content types", client.list_content_types())
                .await?,
        );
        cache.insert(key, (Instant::now(), types.clone()));
        Ok(types)
    }

    /// The receiver's delivery counters, fetched at most every ten seconds: one request serves every webhook.
    pub async fn receiver_stats(&self) -> Result<Arc<Stats>, ReceiverError> {
        if let Some((fetched, stats)) = self.stats.lock().expect("stats cache lock").as_ref()
            && fetched.elapsed() < STATS_TTL
        {
            return Ok(stats.clone());
        }
        let stats = Arc::new(self.receiver.stats().await?);
        *self.stats.lock().expect("stats cache lock") = Some((Instant::now(), stats.clone()));
        Ok(stats)
    }

    /// The delay before retrying an object that failed `failures` times in a row.
    fn backoff(&self, object: String, error: &Error) -> Action {
        let mut failures = self.failures.lock().expect("failure count lock");
        let count = failures.entry(object).or_default();
        *count += 1;
        if error.needs_user_change() {
            return Action::await_change();
        }
        Action::requeue(retry_delay(*count))
    }

    fn succeeded(&self, object: String) {
        self.failures
            .lock()
            .expect("failure count lock")
            .remove(&object);
    }
}

/// Exponential backoff for transient failures: 2 s, 4 s, 8 s … capped at 5 minutes.
pub fn retry_delay(failures: u32) -> Duration {
    Duration::from_secs(2u64.saturating_pow(failures.min(9))).min(Duration::from_secs(300))
}

fn error_policy<K: kube::Resource<DynamicType = ()>>(
    object: Arc<K>,
    error: &Error,
    ctx: Arc<Context>,
) -> Action {
    tracing::warn!(object = %ObjectRef::from_obj(object.as_ref()), reason = error.reason(), %error, "reconcile failed");
    ctx.backoff(ObjectRef::from_obj(object.as_ref()).to_string(), error)
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
    ctx.succeeded(key);
    Ok(action)
}

/// Reconciles one `StrapiWebhook` (the controller's entry point; public for tests and embedders).
pub async fn reconcile_webhook(
    object: Arc<StrapiWebhook>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let key = ObjectRef::from_obj(object.as_ref()).to_string();
    let action = webhook::reconcile(object, ctx.clone()).await?;
    ctx.succeeded(key);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_failures_back_off_exponentially_up_to_five_minutes() {
        assert_eq!(retry_delay(1), Duration::from_secs(2));
        assert_eq!(retry_delay(3), Duration::from_secs(8));
        assert_eq!(retry_delay(30), Duration::from_secs(300));
    }
}
