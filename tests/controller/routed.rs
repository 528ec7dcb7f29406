//! `Routed` (issue 22): a StrapiWebhook is Ready only once every live receiver routes events with
//! its current generation. The receivers here run the real Kubernetes configuration source
//! against the same in-memory API server the controller writes to — with its watch and its
//! debounce, the lag a cluster has — so right after Ready an article created in the real test
//! Strapi must reach the new sink with its very first event.

use std::sync::Arc;

use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::controller::Action;
use strapi_webhook_operator::{
    controller::{ReceiverCallLabels, ServiceRef},
    receiver::{kubernetes::KubernetesSource, source::StaticSource},
};

use super::{
    support::{
        nats_server::NatsServer,
        receiver::{CaptureSink, TestReceiver, TestStore},
    },
    *,
};

const RECEIVER_NAMESPACE: &str = "strapi-system";
const ADMIN_SERVICE: &str = "receiver-admin";
const ARTICLE: &str = "api::article.article";
/// How long a delivery may take to reach a loopback sink: most of it is Strapi's webhook queue,
/// which trails its writes by seconds alone and by minutes when the whole suite edits the shared
/// Strapi (15 s was seen to fail under load). A lost event fails only after this.
const DELIVERY: Duration = Duration::from_secs(180);

/// A receiver whose configuration comes from the fake API server, as in a cluster.
async fn cluster_receiver(api: &FakeApi, queue: &str) -> TestReceiver<KubernetesSource> {
    let source = Arc::new(KubernetesSource::with_client(api.client()));
    TestReceiver::start_with(queue, None, source).await
}

/// A receiver that loads a new configuration only when the test copies one to it: a replica
/// whose watch lags.
async fn paused_receiver(queue: &str) -> TestReceiver {
    let source = Arc::new(StaticSource::new(Snapshot::default()));
    TestReceiver::start_with(queue, None, source).await
}

/// Lets the paused replica (its `source`) catch up with what `live` routes with.
fn catch_up(paused: &StaticSource, live: &TestReceiver<KubernetesSource>) {
    let snapshot = live.state.config.borrow().clone();
    paused.publish((*snapshot).clone());
}

/// The generation `receiver` routes webhook `key` with, if any.
fn routed_generation<S>(receiver: &TestReceiver<S>, key: &str) -> Option<i64> {
    let snapshot = receiver.state.config.borrow().clone();
    snapshot.webhooks.get(key).map(|webhook| webhook.generation)
}

/// The receiver's admin Service has one EndpointSlice per replica here, because each replica
/// listens on its own loopback port.
fn put_endpoint_slice(api: &FakeApi, pod: &str, admin_port: u16) {
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": format!("{ADMIN_SERVICE}-{pod}"),
            "namespace": RECEIVER_NAMESPACE,
            "labels": { "kubernetes.io/service-name": ADMIN_SERVICE }
        },
        "addressType": "IPv4",
        "endpoints": [{
            "addresses": ["127.0.0.1"],
            "conditions": { "ready": true },
            "targetRef": { "kind": "Pod", "name": pod, "namespace": RECEIVER_NAMESPACE }
        }],
        "ports": [{ "name": "admin", "port": admin_port, "protocol": "TCP" }]
    });
    serde_json::from_value::<EndpointSlice>(slice.clone()).expect("a valid EndpointSlice");
    let path = path_of(
        "discovery.k8s.io/v1",
        "endpointslices",
        RECEIVER_NAMESPACE,
        &format!("{ADMIN_SERVICE}-{pod}"),
    );
    api.put(&path, slice);
}

fn routing_calls(world: &World) -> u64 {
    world
        .ctx
        .metrics
        .receiver_calls
        .get_or_create(&ReceiverCallLabels {
            call: "routing",
            outcome: "ok",
        })
        .get()
}

impl World {
    /// Reconciles the instance until it is Ready (finalizer, registration, verification),
    /// running `between` after each pass.
    async fn instance_ready(&self, between: impl Fn()) {
        eventually(Duration::from_secs(10), || async {
            self.reconcile().await.unwrap();
            between();
            let ready = self.status()["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|condition| condition["type"] == "Ready" && condition["status"] == "True");
            match ready {
                true => Ok(()),
                false => Err(format!("the instance is not Ready: {:#}", self.status())),
            }
        })
        .await;
    }

    /// `kubectl apply` of a StrapiWebhook `name` taking every `entry.create` to one HTTP sink
    /// per `(name, url)`; the generation moves on as the API server's would.
    fn apply_http_webhook(&self, name: &str, sinks: &[(&str, String)]) -> StrapiWebhook {
        let path = self.webhook_path(name);
        let previous = self.api.get(&path);
        let mut spec = serde_json::to_value(receiver::webhook_spec(sinks)).unwrap();
        spec["instanceRef"] = json!({ "name": self.name });
        spec["events"] = json!(["entry.create"]);
        let mut object = json!({
            "apiVersion": "webhooks.strapi-operator.dev/v1alpha1",
            "kind": "StrapiWebhook",
            "metadata": {
                "name": name, "namespace": NAMESPACE, "generation": 1,
                "uid": uuid::Uuid::now_v7().to_string()
            },
            "spec": spec,
        });
        if let Some(previous) = previous {
            let generation = previous["metadata"]["generation"].as_i64().unwrap();
            object["metadata"]["generation"] = json!(generation + 1);
            object["metadata"]["uid"] = previous["metadata"]["uid"].clone();
            object["status"] = previous["status"].clone();
        }
        self.api.put(&path, object.clone());
        let webhook: StrapiWebhook = serde_json::from_value(object).unwrap();
        self.webhooks
            .lock()
            .unwrap()
            .apply_watcher_event(&watcher::Event::Apply(webhook.clone()));
        webhook
    }

    /// One reconcile of webhook `name` as the API server holds it now, with the instance
    /// reconciled first (it watches webhooks for the union of events); the status and action.
    async fn reconcile_current(&self, name: &str) -> (Value, Action) {
        self.reconcile().await.unwrap();
        self.sync_instance();
        let path = self.webhook_path(name);
        let webhook: StrapiWebhook = serde_json::from_value(self.api.get(&path).unwrap()).unwrap();
        let action = controller::reconcile_webhook(Arc::new(webhook), self.ctx.clone())
            .await
            .unwrap();
        (self.api.get(&path).unwrap()["status"].clone(), action)
    }

    /// Reconciles webhook `name` until its Ready condition is True for its current generation,
    /// as `kubectl wait --for=condition=Ready` after the status caught up with the apply.
    async fn wait_webhook_ready(&self, name: &str) -> Value {
        let generation =
            self.api.get(&self.webhook_path(name)).unwrap()["metadata"]["generation"].clone();
        eventually(Duration::from_secs(30), || async {
            let (status, _) = self.reconcile_current(name).await;
            let ready = status["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|condition| condition["type"] == "Ready");
            if ready.is_some_and(|ready| {
                ready["status"] == "True" && ready["observedGeneration"] == generation
            }) {
                Ok(status)
            } else {
                Err(format!("{name} is not Ready: {status:#}"))
            }
        })
        .await
    }

    /// Creates an article in the real Strapi; its `documentId`.
    async fn create_article(&self) -> String {
        let title = format!("routed {}", uuid::Uuid::now_v7().simple());
        self.strapi()
            .create_entry(ARTICLE, &json!({ "title": title }))
            .await
            .unwrap()
            .document_id
    }
}

/// Waits until `sink` received the event of `document`.
async fn expect_delivery(sink: &CaptureSink, document: &str) {
    sink.wait_for(DELIVERY, |received| {
        received
            .iter()
            .any(|captured| captured.body.to_string().contains(document))
    })
    .await;
}

/// A world with one receiver on the configuration the cluster holds, an older webhook to
/// `older` Ready, and its instance Ready.
async fn one_receiver_world(
    strapi: &StrapiServer,
    older: &CaptureSink,
) -> (World, TestReceiver<KubernetesSource>, TestStore) {
    let api = FakeApi::default();
    let store = TestStore::start();
    let receiver = cluster_receiver(&api, &store.spec()).await;
    let idle = TestReceiver::start(Snapshot::new(BTreeMap::new(), [])).await;
    let (ingest, admin) = (receiver.ingest, receiver.admin);
    let world = World::with_receivers(strapi, api, idle, ingest, admin, None);
    world.apply_instance(strapi.base_url());
    world.apply_http_webhook("older", &[("older", older.url())]);
    world.instance_ready(|| {}).await;
    world.wait_webhook_ready("older").await;
    (world, receiver, store)
}

#[tokio::test]
async fn a_new_webhook_is_ready_only_once_the_next_event_reaches_its_sink() {
    let strapi = StrapiServer::shared().await;
    let (older, new) = (CaptureSink::start().await, CaptureSink::start().await);
    let (world, receiver, _store) = one_receiver_world(&strapi, &older).await;

    let calls = routing_calls(&world);
    world.apply_http_webhook("new", &[("new", new.url())]);
    let status = world.wait_webhook_ready("new").await;
    let document = world.create_article().await;
    expect_delivery(&new, &document).await;
    expect_delivery(&older, &document).await;

    let (routed, reason, message) = condition_of(&status, "Routed");
    assert_eq!((routed.as_str(), reason.as_str()), ("True", "Routed"));
    assert!(message.contains("generation 1"), "{message}");
    assert_eq!(
        routed_generation(&receiver, &format!("{NAMESPACE}/new")),
        Some(1)
    );
    assert_eq!(
        routing_calls(&world) - calls,
        1,
        "one call to the receiver for the change: it answers once it routes the generation"
    );
    let calls = routing_calls(&world);
    world.reconcile_current("new").await;
    assert_eq!(
        routing_calls(&world),
        calls,
        "a webhook already routed is not asked about again at once"
    );
}

#[tokio::test]
async fn an_edit_that_adds_a_sink_is_ready_only_once_the_next_event_reaches_it() {
    let strapi = StrapiServer::shared().await;
    let (older, first, added) = (
        CaptureSink::start().await,
        CaptureSink::start().await,
        CaptureSink::start().await,
    );
    let (world, receiver, _store) = one_receiver_world(&strapi, &older).await;
    world.apply_http_webhook("site", &[("first", first.url())]);
    world.wait_webhook_ready("site").await;

    world.apply_http_webhook("site", &[("first", first.url()), ("added", added.url())]);
    let status = world.wait_webhook_ready("site").await;
    let document = world.create_article().await;
    expect_delivery(&added, &document).await;
    expect_delivery(&first, &document).await;
    assert_eq!(status["observedGeneration"], json!(2));
    assert_eq!(
        routed_generation(&receiver, &format!("{NAMESPACE}/site")),
        Some(2)
    );
}

#[tokio::test]
async fn with_two_receivers_on_jetstream_ready_waits_for_both() {
    let strapi = StrapiServer::shared().await;
    let nats = NatsServer::start();
    let api = FakeApi::default();
    let live = cluster_receiver(&api, &nats.url()).await;
    let paused = paused_receiver(&nats.url()).await;
    put_endpoint_slice(&api, "receiver-a", live.admin.port());
    put_endpoint_slice(&api, "receiver-b", paused.admin.port());
    // Strapi reaches the lagging replica, so an event routed without the new spec would be
    // lost to the new sink.
    let (ingest, admin, lagging) = (paused.ingest, live.admin, Arc::clone(&paused.source));
    let replicas: ServiceRef = format!("{RECEIVER_NAMESPACE}/{ADMIN_SERVICE}")
        .parse()
        .unwrap();
    let world = World::with_receivers(&strapi, api, paused, ingest, admin, Some(replicas));
    world.apply_instance(strapi.base_url());
    world.instance_ready(|| catch_up(&lagging, &live)).await;

    let sink = CaptureSink::start().await;
    let key = format!("{NAMESPACE}/site");
    world.apply_http_webhook("site", &[("site", sink.url())]);
    wait_routed(&live, &key, 1).await;
    let (status, action) = world.reconcile_current("site").await;
    let (ready, reason, message) = condition_of(&status, "Ready");
    assert_eq!(
        (ready.as_str(), reason.as_str()),
        ("False", "WaitingForReceiver")
    );
    assert!(
        message.contains("receiver-b") && message.contains("does not route this webhook yet"),
        "{message}"
    );
    assert_eq!(
        action,
        Action::requeue(Duration::from_millis(500)),
        "checked again soon, not in a minute"
    );

    catch_up(&lagging, &live);
    let status = world.wait_webhook_ready("site").await;
    let (_, _, message) = condition_of(&status, "Routed");
    assert!(message.contains("all 2 receiver replicas"), "{message}");
    let document = world.create_article().await;
    expect_delivery(&sink, &document).await;

    // An edit: the live replica has generation 2 at once, the paused one still routes 1.
    let added = CaptureSink::start().await;
    world.apply_http_webhook("site", &[("site", sink.url()), ("added", added.url())]);
    wait_routed(&live, &key, 2).await;
    let (status, _) = world.reconcile_current("site").await;
    let (ready, reason, message) = condition_of(&status, "Ready");
    assert_eq!(
        (ready.as_str(), reason.as_str()),
        ("False", "WaitingForReceiver")
    );
    assert!(message.contains("routes generation 1, not 2"), "{message}");
    catch_up(&lagging, &live);
    world.wait_webhook_ready("site").await;
    let document = world.create_article().await;
    expect_delivery(&added, &document).await;
}

/// Waits, on each configuration the receiver loads, until it routes webhook `key` with
/// `generation`.
async fn wait_routed<S>(receiver: &TestReceiver<S>, key: &str, generation: i64) {
    let mut config = receiver.state.config.clone();
    let routed = config.wait_for(|snapshot| {
        snapshot.webhooks.get(key).map(|webhook| webhook.generation) == Some(generation)
    });
    tokio::time::timeout(Duration::from_secs(10), routed)
        .await
        .unwrap_or_else(|_| panic!("the receiver does not route {key} at generation {generation}"))
        .expect("the receiver's configuration lives");
}
