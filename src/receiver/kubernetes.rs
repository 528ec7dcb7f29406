//! The configuration source in a cluster: reflectors over `StrapiInstance`s, `StrapiWebhook`s
//! and the instances' shared-secret Secrets, turned into a [`Snapshot`] after every change.
//!
//! Least privilege in what is read: only Secrets carrying the controller's instance label are
//! watched, and the Secrets a webhook's sinks reference are fetched by name when it is compiled
//! (and again at every resync, so a rotated credential is picked up without a restart). A
//! webhook that stops compiling — a Secret deleted, the API server unreachable — keeps its last
//! good version rather than vanishing, because a vanished webhook has its waiting deliveries
//! dead-lettered; the controller reports the problem in the webhook's status. A webhook whose
//! namespace its instance does not allow is left out. For `allowedNamespaces.from: Selector` the
//! namespace's labels are read when the webhook is compiled (and at every resync); a namespace
//! that cannot be read is not allowed (failing closed).

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::Duration,
};

use futures::{StreamExt, stream};
use k8s_openapi::{api::core::v1::Secret, jiff::Timestamp};
use kube::{
    Api, Client, ResourceExt,
    runtime::{
        WatchStreamExt,
        reflector::{self, Store},
        watcher,
    },
};
use tokio::sync::{Notify, watch};

use super::source::{ConfigSource, Snapshot};
use crate::{
    api::{
        SinkEgress, StrapiInstance, StrapiWebhook,
        shared_secret::{self, INSTANCE_LABEL},
    },
    cluster::{FetchedSecrets, NamespaceLabels, secret_text},
    config::{CompiledWebhook, compile_webhook, egress_rules},
    config::{referenced_instance, secret_refs},
    key::ObjectKey,
};

// Rebuild at least this often, to pick up rotated sink Secrets (which are read, not watched).
const RESYNC: Duration = Duration::from_secs(60);
// Changes arriving together (a rollout of several resources) make one rebuild.
const DEBOUNCE: Duration = Duration::from_millis(200);

/// Why the Kubernetes source could not start.
#[derive(Debug, thiserror::Error)]
pub enum KubernetesSourceError {
    /// No cluster configuration (in-cluster service account or kubeconfig) was found.
    #[error("connecting to the cluster: {0}")]
    Connect(#[source] kube::Error),
}

/// Watches the cluster and publishes snapshots. Dropping it stops the watches.
#[derive(Debug)]
pub struct KubernetesSource {
    snapshots: watch::Receiver<Arc<Snapshot>>,
    task: tokio::task::JoinHandle<()>,
}

impl KubernetesSource {
    /// Connects with the default client configuration and starts watching. The first snapshot
    /// is unsynced; the synced one follows once every watch has listed its objects.
    pub async fn start() -> Result<Self, KubernetesSourceError> {
        let client = Client::try_default()
            .await
            .map_err(KubernetesSourceError::Connect)?;
        Ok(Self::with_client(client))
    }

    /// Starts watching through `client`.
    pub fn with_client(client: Client) -> Self {
        let (sender, snapshots) = watch::channel(Arc::new(Snapshot::default()));
        let task = tokio::spawn(watch_cluster(client, sender));
        Self { snapshots, task }
    }
}

impl Drop for KubernetesSource {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ConfigSource for KubernetesSource {
    fn snapshots(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.snapshots.clone()
    }
}

async fn watch_cluster(client: Client, sender: watch::Sender<Arc<Snapshot>>) {
    let changed = Arc::new(Notify::new());
    let (instances, instance_writer) = reflector::store::<StrapiInstance>();
    let (webhooks, webhook_writer) = reflector::store::<StrapiWebhook>();
    let (secrets, secret_writer) = reflector::store::<Secret>();
    let streams = stream::select_all([
        changes(
            instance_writer,
            Api::all(client.clone()),
            watcher::Config::default(),
        ),
        changes(
            webhook_writer,
            Api::all(client.clone()),
            watcher::Config::default(),
        ),
        changes(
            secret_writer,
            Api::all(client.clone()),
            watcher::Config::default().labels(INSTANCE_LABEL),
        ),
    ]);
    let notify = Arc::clone(&changed);
    tokio::spawn(streams.for_each(move |event| {
        if let Err(error) = event {
            tracing::warn!(%error, "watching the configuration failed; retrying");
        }
        notify.notify_one();
        std::future::ready(())
    }));

    for ready in [
        instances.wait_until_ready().await.is_ok(),
        webhooks.wait_until_ready().await.is_ok(),
        secrets.wait_until_ready().await.is_ok(),
    ] {
        if !ready {
            return;
        }
    }
    let mut compiled = Compiled::new();
    loop {
        let by_key: HashMap<ObjectKey, Arc<StrapiInstance>> = instances
            .state()
            .into_iter()
            .map(|instance| (ObjectKey::of(instance.as_ref()), instance))
            .collect();
        compiled = compile_all(&client, &by_key, &webhooks, &compiled).await;
        let snapshot = Snapshot {
            synced: true,
            instances: accepted(&by_key, &secrets),
            instance_generations: by_key
                .iter()
                .map(|(key, instance)| {
                    (
                        key.to_string(),
                        instance.metadata.generation.unwrap_or_default(),
                    )
                })
                .collect(),
            webhooks: compiled
                .iter()
                .map(|(key, (_, webhook))| (key.clone(), Arc::clone(webhook)))
                .collect(),
        };
        tracing::debug!(
            instances = snapshot.instances.len(),
            webhooks = snapshot.webhooks.len(),
            "configuration updated"
        );
        if sender.send(Arc::new(snapshot)).is_err() {
            return;
        }
        let _ = tokio::time::timeout(RESYNC, changed.notified()).await;
        tokio::time::sleep(DEBOUNCE).await;
    }
}

/// A reflector filling `writer` from a watch on `api`, as a stream of "something changed".
fn changes<K>(
    writer: reflector::store::Writer<K>,
    api: Api<K>,
    config: watcher::Config,
) -> stream::BoxStream<'static, Result<(), String>>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    reflector::reflector(writer, watcher(api, config))
        .default_backoff()
        .touched_objects()
        .map(|event| event.map(drop).map_err(|error| error.to_string()))
        .boxed()
}

async fn compile_all(
    client: &Client,
    instances: &HashMap<ObjectKey, Arc<StrapiInstance>>,
    webhooks: &Store<StrapiWebhook>,
    previous: &Compiled,
) -> Compiled {
    let mut compiled = BTreeMap::new();
    let mut labels = NamespaceLabels::default();
    for webhook in webhooks.state() {
        let ObjectKey { namespace, name } = ObjectKey::of(webhook.as_ref());
        let key = ObjectKey::new(&namespace, &name).to_string();
        let Some(instance) = instances.get(&referenced_instance(&webhook)) else {
            continue;
        };
        let allowed = labels
            .allows(client, instance, &namespace)
            .await
            .unwrap_or_else(|error| {
                tracing::warn!(%namespace, %error, "reading the namespace's labels failed; not allowing it");
                false
            });
        if !allowed {
            continue;
        }
        let fetched = match FetchedSecrets::fetch(client, &namespace, secret_refs(&webhook.spec))
            .await
        {
            Ok(fetched) => fetched,
            Err(error) => {
                // Not the same as a missing Secret: keep what runs rather than recompile without it.
                tracing::warn!(webhook = %key, %error, "reading the sink Secrets failed; keeping the webhook's last good version");
                keep_last_good(&mut compiled, previous, key);
                continue;
            }
        };
        let values = fetched.values();
        let generation = webhook.metadata.generation.unwrap_or_default();
        let inputs = Inputs {
            generation,
            secrets: values.clone(),
            egress: instance.spec.egress.clone(),
        };
        if let Some((old_inputs, old)) = previous.get(&key)
            && *old_inputs == inputs
        {
            // Nothing changed: keep the running version, so the sink's worker (with its circuit
            // breaker and pause state) carries on.
            compiled.insert(key, (inputs, Arc::clone(old)));
            continue;
        }
        let rules = match egress_rules(instance.spec.egress.as_ref()) {
            Ok(rules) => rules,
            Err(error) => {
                tracing::warn!(webhook = %key, %error, "the instance's egress policy does not parse; keeping the webhook's last good version");
                keep_last_good(&mut compiled, previous, key);
                continue;
            }
        };
        match compile_webhook(&namespace, &name, generation, &webhook.spec, &fetched) {
            Ok(mut webhook) => {
                webhook.hold_to(&rules);
                compiled.insert(key, (inputs, Arc::new(webhook)));
            }
            Err(errors) => {
                tracing::warn!(webhook = %key, %errors, "webhook does not compile; keeping its last good version");
                keep_last_good(&mut compiled, previous, key);
            }
        }
    }
    compiled
}

/// What a compiled webhook was built from; the same inputs give the same webhook.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Inputs {
    generation: i64,
    secrets: BTreeMap<(String, String), String>,
    // The instance's egress rules apply to the webhook's sinks, so a change recompiles it.
    egress: Option<SinkEgress>,
}

type Compiled = BTreeMap<String, (Inputs, Arc<CompiledWebhook>)>;

/// Carries the running version of webhook `key` over, if it has one: a webhook whose new
/// version cannot be built keeps routing (and its waiting deliveries keep going out).
fn keep_last_good(compiled: &mut Compiled, previous: &Compiled, key: String) {
    if let Some(old) = previous.get(&key) {
        compiled.insert(key, old.clone());
    }
}

fn accepted(
    instances: &HashMap<ObjectKey, Arc<StrapiInstance>>,
    shared: &Store<Secret>,
) -> BTreeMap<String, Vec<String>> {
    instances
        .iter()
        .map(|(key, instance)| (key.to_string(), accepted_secrets(instance, shared)))
        .collect()
}

fn accepted_secrets(instance: &StrapiInstance, shared: &Store<Secret>) -> Vec<String> {
    let namespace = instance.namespace().unwrap_or_default();
    let name = shared_secret::name(&instance.name_any());
    let Some(secret) = shared.state().into_iter().find(|secret| {
        secret.namespace().as_deref() == Some(&namespace) && secret.name_any() == name
    }) else {
        return Vec::new();
    };
    shared_secret::accepted(|key| secret_text(&secret, key), Timestamp::now())
}
