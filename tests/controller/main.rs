//! Controller scenarios: the real reconcile functions against an in-memory Kubernetes API
//! ([`support::fake_api`]), the real test Strapi, and a real receiver running in-process. They prove
//! the finalizer, the registration (create, repair, union of events, hand-made webhooks left
//! alone, removal), end-to-end verification, status and Events.

mod health;
mod login_limit;
mod routed;
#[path = "../support/mod.rs"]
mod support;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use kube::runtime::{reflector, watcher};
use prometheus_client::registry::Registry;
use serde_json::{Value, json};
use strapi_webhook_operator::{
    api::{NextjsMode, NextjsRoute, PathKind, RevalidatePath, StrapiInstance, StrapiWebhook},
    controller::{self, Context, Metrics, Options},
    receiver::source::Snapshot,
    registration::MARKER_HEADER,
    strapi::{StrapiClient, WebhookSpec},
};
use support::fake_api::{FakeApi, path_of};
use support::receiver;
use support::receiver::TestReceiver;
use support::{StrapiCleanup, StrapiServer, eventually};

const NAMESPACE: &str = "web";

/// One test's world: a fake API server, stores, a context, and a unique instance name so that
/// tests sharing one Strapi never see each other's registrations.
struct World {
    api: FakeApi,
    ctx: Arc<Context>,
    // Behind locks so that every method takes `&self` and retry closures can share the world.
    instances: std::sync::Mutex<reflector::store::Writer<StrapiInstance>>,
    webhooks: std::sync::Mutex<reflector::store::Writer<StrapiWebhook>>,
    name: String,
    // The test Strapi, for scenarios that need one, and what to remove from it at the end.
    strapi: Option<(StrapiClient, StrapiCleanup)>,
    receiver: TestReceiver,
    ingest: std::net::SocketAddr,
}

impl World {
    async fn new(strapi: &StrapiServer) -> Self {
        let receiver = TestReceiver::start(Snapshot::new(BTreeMap::new(), [])).await;
        let (ingest, admin) = (receiver.ingest, receiver.admin);
        Self::with_receivers(strapi, FakeApi::default(), receiver, ingest, admin, None)
    }

    /// A world for scenarios that never reach a Strapi; its admin Secret holds placeholders.
    async fn without_strapi() -> Self {
        let receiver = TestReceiver::start(Snapshot::new(BTreeMap::new(), [])).await;
        let (ingest, admin) = (receiver.ingest, receiver.admin);
        let credentials = ("nobody@example.com", "never-used");
        Self::build(
            FakeApi::default(),
            credentials,
            receiver,
            ingest,
            admin,
            None,
        )
    }

    /// A world whose controller sends Strapi to `ingest` and asks the receiver at `admin`
    /// (and, with `replicas`, every ready endpoint of that Service) what it routes.
    fn with_receivers(
        strapi: &StrapiServer,
        api: FakeApi,
        receiver: TestReceiver,
        ingest: std::net::SocketAddr,
        admin: std::net::SocketAddr,
        replicas: Option<controller::ServiceRef>,
    ) -> Self {
        let credentials = (strapi.email(), strapi.password());
        let mut world = Self::build(api, credentials, receiver, ingest, admin, replicas);
        let cleanup = strapi.cleanup();
        cleanup.instance(&world.key());
        world.strapi = Some((strapi.client(), cleanup));
        world
    }

    fn build(
        api: FakeApi,
        (email, password): (&str, &str),
        receiver: TestReceiver,
        ingest: std::net::SocketAddr,
        admin: std::net::SocketAddr,
        replicas: Option<controller::ServiceRef>,
    ) -> Self {
        let name = format!("cms-{}", uuid::Uuid::now_v7().simple());
        api.put_secret(
            NAMESPACE,
            "strapi-admin",
            &[("email", email), ("password", password)],
        );
        let (instance_store, instances) = reflector::store();
        let (webhook_store, webhooks) = reflector::store();
        let options = Options {
            receiver_url: format!("http://{ingest}"),
            receiver_admin_url: format!("http://{admin}"),
            receiver_replicas: replicas,
            secret_header: strapi_webhook_operator::event::SECRET_HEADER.into(),
            secret_grace: k8s_openapi::jiff::SignedDuration::from_mins(15),
            verify_timeout: Duration::from_secs(10),
            // The fixtures' sinks are loopback URLs, as the test receiver allows.
            allow_loopback_sinks: true,
            receiver_admin_token: Some(receiver::admin_token()),
            // Strapi's calls count as settled after a second of quiet, to keep tests quick.
            repair: strapi_webhook_operator::repair::CheckSettings {
                settle: Duration::from_secs(1),
                ..strapi_webhook_operator::repair::CheckSettings::default()
            },
            pod_name: None,
        };
        let metrics = Metrics::register(&mut Registry::default());
        let ctx = Arc::new(Context::new(
            api.client(),
            options,
            metrics,
            instance_store,
            webhook_store,
        ));
        World {
            api,
            ctx,
            instances: instances.into(),
            webhooks: webhooks.into(),
            name,
            strapi: None,
            receiver,
            ingest,
        }
    }

    /// The test Strapi's admin client.
    fn strapi(&self) -> &StrapiClient {
        &self.strapi.as_ref().expect("this world has a Strapi").0
    }

    /// What this world removes from Strapi when it ends.
    fn cleanup(&self) -> &StrapiCleanup {
        &self.strapi.as_ref().expect("this world has a Strapi").1
    }

    /// Where Strapi reaches the receiver.
    fn ingest_url(&self) -> String {
        format!("http://{}", self.ingest)
    }

    fn key(&self) -> String {
        format!("{NAMESPACE}/{}", self.name)
    }

    fn instance_path(&self) -> String {
        path_of(
            "webhooks.strapi-operator.dev/v1alpha1",
            "strapiinstances",
            NAMESPACE,
            &self.name,
        )
    }

    /// Applies an instance pointing at `url`, as `kubectl apply` would.
    fn apply_instance(&self, url: &str) {
        self.apply_instance_with(url, json!({}));
    }

    /// Applies an instance with extra spec fields merged in.
    fn apply_instance_with(&self, url: &str, extra_spec: Value) {
        let mut object = json!({
            "apiVersion": "webhooks.strapi-operator.dev/v1alpha1",
            "kind": "StrapiInstance",
            "metadata": {"name": self.name, "namespace": NAMESPACE, "uid": uuid::Uuid::now_v7().to_string(), "generation": 1},
            "spec": {"url": url, "auth": {"credentials": {"secretName": "strapi-admin"}}},
        });
        json_patch::merge(&mut object["spec"], &extra_spec);
        self.api.put(&self.instance_path(), object);
        self.sync_instance();
    }

    fn sync_instance(&self) {
        let object: StrapiInstance =
            serde_json::from_value(self.api.get(&self.instance_path()).unwrap()).unwrap();
        self.instances
            .lock()
            .unwrap()
            .apply_watcher_event(&watcher::Event::Apply(object));
    }

    /// Adds a StrapiWebhook from a fixture to the store, pointed at this world's instance.
    fn add_webhook(&self, fixture: &str, name: &str) {
        let mut webhook: StrapiWebhook = serde_saphyr::from_str(fixture).unwrap();
        webhook.metadata.name = Some(name.into());
        webhook.metadata.namespace = Some(NAMESPACE.into());
        webhook.metadata.uid = Some(uuid::Uuid::now_v7().to_string());
        webhook.spec.instance_ref.name = self.name.clone();
        webhook.spec.instance_ref.namespace = None;
        self.webhooks
            .lock()
            .unwrap()
            .apply_watcher_event(&watcher::Event::Apply(webhook));
    }

    /// Runs one reconcile on the instance as the API server holds it now.
    async fn reconcile(&self) -> Result<(), controller::Error> {
        self.sync_instance();
        let object: StrapiInstance =
            serde_json::from_value(self.api.get(&self.instance_path()).unwrap()).unwrap();
        controller::reconcile_instance(Arc::new(object), self.ctx.clone())
            .await
            .map(|_| ())
    }

    fn status(&self) -> Value {
        self.api.get(&self.instance_path()).unwrap()["status"].clone()
    }

    fn condition(&self, kind: &str) -> (String, String, String) {
        condition_of(&self.status(), kind)
    }

    /// The managed registrations of this world's instance in Strapi.
    async fn registrations(&self) -> Vec<strapi_webhook_operator::strapi::Webhook> {
        let key = self.key();
        self.strapi()
            .list_webhooks()
            .await
            .unwrap()
            .into_iter()
            .filter(|webhook| webhook.headers.get(MARKER_HEADER) == Some(&key))
            .collect()
    }

    fn shared_secret(&self) -> String {
        let path = path_of(
            "v1",
            "secrets",
            NAMESPACE,
            &strapi_webhook_operator::api::shared_secret::name(&self.name),
        );
        let secret: k8s_openapi::api::core::v1::Secret =
            serde_json::from_value(self.api.get(&path).unwrap()).unwrap();
        String::from_utf8(
            secret.data.unwrap()[strapi_webhook_operator::api::shared_secret::CURRENT_KEY]
                .0
                .clone(),
        )
        .unwrap()
    }
}

const ARTICLES: &str = include_str!("../fixtures/controller/webhook-articles.yaml");
const COMMENTS: &str = include_str!("../fixtures/controller/webhook-comments.yaml");

#[tokio::test]
async fn an_instance_is_registered_once_with_the_union_of_events_and_verified() {
    let strapi = StrapiServer::shared().await;
    let world = World::new(&strapi).await;
    world.add_webhook(ARTICLES, "articles");
    world.add_webhook(COMMENTS, "comments");
    world.apply_instance(strapi.base_url());

    // First pass: only the finalizer.
    world.reconcile().await.unwrap();
    let finalizers =
        world.api.get(&world.instance_path()).unwrap()["metadata"]["finalizers"].clone();
    assert_eq!(
        finalizers,
        json!(["webhooks.strapi-operator.dev/registration"])
    );
    assert!(
        world.registrations().await.is_empty(),
        "nothing is registered before the finalizer is in place"
    );

    // Second pass: registration. The receiver does not know the new secret yet, so Strapi's
    // trigger is refused and Verified says which hop failed.
    world.reconcile().await.unwrap();
    let registrations = world.registrations().await;
    assert_eq!(registrations.len(), 1, "{registrations:#?}");
    let registration = &registrations[0];
    assert_eq!(
        registration.events,
        ["entry.create", "entry.publish", "entry.update"]
    );
    assert_eq!(
        registration.url,
        format!("{}/v1/instances/{}", world.ingest_url(), world.key())
    );
    assert!(registration.enabled);
    let secret = world.shared_secret();
    assert_eq!(
        registration.headers.get("x-strapi-webhook-secret"),
        Some(&secret)
    );
    assert_eq!(world.condition("Reachable").0, "True");
    assert_eq!(world.condition("Registered").0, "True");
    let (verified, reason, message) = world.condition("Verified");
    assert_eq!(
        (verified.as_str(), reason.as_str()),
        ("False", "ReceiverRejected"),
        "{message}"
    );
    assert!(message.contains("401"), "{message}");
    assert_eq!(world.condition("Ready").0, "False");
    health::assert_argo_health(&world.api.get(&world.instance_path()).unwrap(), "Degraded");
    assert_eq!(world.status()["registrationId"], json!(registration.id));
    assert_eq!(world.status()["webhooks"], json!(2));

    // The receiver learns the secret; the next reconcile verifies end to end.
    // As the cluster source would once it sees the controller's Secret.
    let instances = BTreeMap::from([(world.key(), vec![secret.clone()])]);
    world.receiver.source.publish(Snapshot::new(instances, []));
    world.reconcile().await.unwrap();
    assert_eq!(
        world.condition("Verified").0,
        "True",
        "{:?}",
        world.condition("Verified")
    );
    assert_eq!(world.condition("Ready").0, "True");
    health::assert_argo_health(&world.api.get(&world.instance_path()).unwrap(), "Healthy");
    health::assert_flux_ready_rule(&world.api);
    assert!(world.status()["lastVerifiedTime"].is_string());
    assert_eq!(
        world.registrations().await.len(),
        1,
        "reconciling again creates nothing"
    );
    assert!(
        world.api.event_reasons().contains(&"Registered".to_owned()),
        "{:?}",
        world.api.event_reasons()
    );
}

#[tokio::test]
async fn drift_in_strapi_is_repaired_and_reported() {
    let strapi = StrapiServer::shared().await;
    let world = World::new(&strapi).await;
    world.add_webhook(ARTICLES, "articles");
    world.apply_instance(strapi.base_url());
    world.reconcile().await.unwrap();
    world.reconcile().await.unwrap();
    let original = world.registrations().await.remove(0);

    // Someone edits the webhook in the admin UI.
    let mut edited = WebhookSpec::of(&original);
    edited.events = vec!["entry.delete".into()];
    edited.enabled = false;
    world
        .strapi()
        .update_webhook(&original.id, &edited)
        .await
        .unwrap();
    world.reconcile().await.unwrap();
    let repaired = world.registrations().await.remove(0);
    assert_eq!(repaired, original);

    // Someone deletes it.
    world.strapi().delete_webhook(&original.id).await.unwrap();
    world.reconcile().await.unwrap();
    let recreated = world.registrations().await;
    assert_eq!(recreated.len(), 1);
    assert_eq!(recreated[0].events, original.events);
    let repairs = world
        .api
        .event_reasons()
        .iter()
        .filter(|reason| *reason == "DriftRepaired")
        .count();
    assert_eq!(repairs, 2, "{:?}", world.api.event_reasons());
}

#[tokio::test]
async fn hand_made_webhooks_are_never_touched_and_deletion_removes_only_ours() {
    let strapi = StrapiServer::shared().await;
    let world = World::new(&strapi).await;
    let by_hand = world
        .strapi()
        .create_webhook(&WebhookSpec {
            name: format!("strapi-webhook-operator {} (made by hand)", world.key()),
            url: "https://example.com/by-hand".into(),
            headers: BTreeMap::new(),
            events: vec!["entry.create".into()],
            enabled: true,
        })
        .await
        .unwrap();
    world.cleanup().webhook(&by_hand.id);
    world.add_webhook(ARTICLES, "articles");
    world.apply_instance(strapi.base_url());
    world.reconcile().await.unwrap();
    world.reconcile().await.unwrap();
    assert_eq!(world.registrations().await.len(), 1);

    // `kubectl delete`: the API server sets deletionTimestamp and keeps the object.
    let mut object = world.api.get(&world.instance_path()).unwrap();
    object["metadata"]["deletionTimestamp"] = json!("2026-11-27T00:00:00Z");
    world.api.put(&world.instance_path(), object);
    world.reconcile().await.unwrap();
    assert!(
        world.registrations().await.is_empty(),
        "the registration is removed on deletion"
    );
    let finalizers =
        world.api.get(&world.instance_path()).unwrap()["metadata"]["finalizers"].clone();
    assert!(
        finalizers.as_array().is_none_or(Vec::is_empty),
        "finalizer released: {finalizers}"
    );
    let still_there = world.strapi().get_webhook(&by_hand.id).await.unwrap();
    assert_eq!(
        still_there, by_hand,
        "a webhook made by hand is never touched"
    );
}

#[tokio::test]
async fn an_unreachable_strapi_is_reported_not_hidden() {
    let world = World::without_strapi().await;
    world.apply_instance("http://127.0.0.1:9");
    world.reconcile().await.unwrap();
    world.reconcile().await.unwrap();
    let (reachable, reason, message) = world.condition("Reachable");
    assert_eq!(
        (reachable.as_str(), reason.as_str()),
        ("False", "StrapiUnreachable")
    );
    assert!(message.contains("127.0.0.1:9"), "{message}");
    let (ready, ready_reason, _) = world.condition("Ready");
    assert_eq!(
        (ready.as_str(), ready_reason.as_str()),
        ("False", "StrapiUnreachable")
    );
    assert_eq!(world.status()["observedGeneration"], json!(1));
    health::assert_argo_health(&world.api.get(&world.instance_path()).unwrap(), "Degraded");
    health::assert_flux_ready_rule(&world.api);
}

impl World {
    fn webhook_path(&self, name: &str) -> String {
        path_of(
            "webhooks.strapi-operator.dev/v1alpha1",
            "strapiwebhooks",
            NAMESPACE,
            name,
        )
    }

    /// Applies a StrapiWebhook from a fixture in `namespace`, pointed at this world's instance.
    fn apply_webhook(&self, fixture: &str, name: &str, namespace: &str) -> StrapiWebhook {
        let mut webhook: StrapiWebhook = serde_saphyr::from_str(fixture).unwrap();
        webhook.metadata.name = Some(name.into());
        webhook.metadata.namespace = Some(namespace.into());
        webhook.metadata.generation = Some(3);
        webhook.spec.instance_ref.name = self.name.clone();
        webhook.spec.instance_ref.namespace = Some(NAMESPACE.into());
        let path = path_of(
            "webhooks.strapi-operator.dev/v1alpha1",
            "strapiwebhooks",
            namespace,
            name,
        );
        self.api.put(&path, serde_json::to_value(&webhook).unwrap());
        self.webhooks
            .lock()
            .unwrap()
            .apply_watcher_event(&watcher::Event::Apply(webhook.clone()));
        webhook
    }

    async fn reconcile_webhook(&self, webhook: StrapiWebhook) -> Value {
        let path = path_of(
            "webhooks.strapi-operator.dev/v1alpha1",
            "strapiwebhooks",
            webhook.metadata.namespace.as_deref().unwrap(),
            webhook.metadata.name.as_deref().unwrap(),
        );
        controller::reconcile_webhook(Arc::new(webhook), self.ctx.clone())
            .await
            .unwrap();
        self.api.get(&path).unwrap()["status"].clone()
    }
}

fn condition_of(status: &Value, kind: &str) -> (String, String, String) {
    let condition = status["conditions"]
        .as_array()
        .and_then(|conditions| {
            conditions
                .iter()
                .find(|condition| condition["type"] == kind)
        })
        .unwrap_or_else(|| panic!("no {kind} condition in {status:#}"));
    let text = |field: &str| condition[field].as_str().unwrap_or_default().to_owned();
    (text("status"), text("reason"), text("message"))
}

#[tokio::test]
async fn a_valid_webhook_becomes_ready_once_its_events_are_registered() {
    let strapi = StrapiServer::shared().await;
    let world = World::new(&strapi).await;
    world.apply_instance(strapi.base_url());
    let webhook = world.apply_webhook(ARTICLES, "articles", NAMESPACE);

    // Before the instance registered anything, the webhook waits and says why.
    let status = world.reconcile_webhook(webhook.clone()).await;
    assert_eq!(condition_of(&status, "RoutesValid").0, "True");
    assert_eq!(condition_of(&status, "SinksResolved").0, "True");
    assert_eq!(
        condition_of(&status, "Registered").1,
        "InstanceNotRegistered"
    );
    assert_eq!(condition_of(&status, "Ready").0, "False");
    assert_eq!(status["observedGeneration"], json!(3));
    let articles = world.webhook_path("articles");
    health::assert_argo_health(&world.api.get(&articles).unwrap(), "Progressing");

    world.reconcile().await.unwrap();
    world.reconcile().await.unwrap();
    world.sync_instance();
    let status = world.reconcile_webhook(webhook.clone()).await;
    assert_eq!(condition_of(&status, "Registered").0, "True", "{status:#}");
    // Registered, but the receiver does not route it yet: events would miss it.
    let (ready, reason, message) = condition_of(&status, "Ready");
    assert_eq!(
        (ready.as_str(), reason.as_str()),
        ("False", "WaitingForReceiver"),
        "{message}"
    );
    assert!(
        message.contains("does not route this webhook yet"),
        "{message}"
    );
    health::assert_argo_health(&world.api.get(&articles).unwrap(), "Progressing");

    // The receiver loads it, as the cluster source would once it sees the webhook.
    let compiled = strapi_webhook_operator::config::compile_webhook(
        NAMESPACE,
        "articles",
        3,
        &webhook.spec,
        &strapi_webhook_operator::config::InMemorySecrets::new(),
    )
    .unwrap();
    let instances = BTreeMap::from([(world.key(), vec![world.shared_secret()])]);
    let generations = BTreeMap::from([(world.key(), 1)]);
    world
        .receiver
        .source
        .publish(Snapshot::new(instances, [compiled]).with_instance_generations(generations));
    let status = world.reconcile_webhook(webhook).await;
    assert_eq!(condition_of(&status, "Routed").0, "True", "{status:#}");
    assert_eq!(condition_of(&status, "Ready").0, "True", "{status:#}");
    health::assert_argo_health(&world.api.get(&articles).unwrap(), "Healthy");
    health::assert_flux_ready_rule(&world.api);
    // `article` exists in the test Strapi.
    assert_eq!(condition_of(&status, "ModelsKnown").0, "True", "{status:#}");
    assert_eq!(
        status["endpoint"],
        json!(format!(
            "{}/v1/instances/{}",
            world.ingest_url(),
            world.key()
        ))
    );
}

#[tokio::test]
async fn an_invalid_webhook_reports_each_problem_with_its_field() {
    let strapi = StrapiServer::shared().await;
    let world = World::new(&strapi).await;
    world.apply_instance(strapi.base_url());
    let mut webhook = world.apply_webhook(COMMENTS, "comments", NAMESPACE);
    webhook.spec.routes[0].filter = Some("entry.author ==".into());
    webhook.spec.routes[0].matches.models = Some(vec!["no-such-model".into()]);
    world.api.put(
        &world.webhook_path("comments"),
        serde_json::to_value(&webhook).unwrap(),
    );

    let status = world.reconcile_webhook(webhook).await;
    let (routes, _, message) = condition_of(&status, "RoutesValid");
    assert_eq!(routes, "False");
    assert!(message.contains("spec.routes[0].filter"), "{message}");
    let (sinks, reason, message) = condition_of(&status, "SinksResolved");
    assert_eq!(
        (sinks.as_str(), reason.as_str()),
        ("False", "SecretMissing")
    );
    assert!(message.contains("slack-webhook"), "{message}");
    let (known, reason, message) = condition_of(&status, "ModelsKnown");
    assert_eq!(
        (known.as_str(), reason.as_str()),
        ("False", "UnknownModels")
    );
    assert!(message.contains("no-such-model"), "{message}");
    let (ready, reason, _) = condition_of(&status, "Ready");
    assert_eq!((ready.as_str(), reason.as_str()), ("False", "RouteInvalid"));
    health::assert_argo_health(
        &world.api.get(&world.webhook_path("comments")).unwrap(),
        "Degraded",
    );
    health::assert_flux_ready_rule(&world.api);
    assert!(
        world
            .api
            .event_reasons()
            .contains(&"InvalidSpec".to_owned())
    );
}

#[tokio::test]
async fn a_type_on_a_templated_literal_path_is_a_warning_not_an_error() {
    let strapi = StrapiServer::shared().await;
    let world = World::new(&strapi).await;
    world.apply_instance(strapi.base_url());
    let mut webhook = world.apply_webhook(ARTICLES, "articles", NAMESPACE);
    webhook.spec.sinks[0].nextjs.as_mut().unwrap().mode = NextjsMode::Revalidate;
    webhook.spec.routes[0].nextjs = Some(NextjsRoute {
        tags: Vec::new(),
        paths: vec![RevalidatePath {
            path: "/articles/{{ entry.slug }}".into(),
            kind: Some(PathKind::Page),
        }],
    });
    world.api.put(
        &world.webhook_path("articles"),
        serde_json::to_value(&webhook).unwrap(),
    );

    let status = world.reconcile_webhook(webhook).await;
    let (valid, reason, message) = condition_of(&status, "RoutesValid");
    assert_eq!(
        (valid.as_str(), reason.as_str()),
        ("True", "PathTypeIgnored")
    );
    assert!(
        message.contains("spec.routes[0].nextjs.paths[0].type"),
        "{message}"
    );
    assert!(
        world
            .api
            .event_reasons()
            .contains(&"SpecWarning".to_owned())
    );
}

#[tokio::test]
async fn a_webhook_from_a_namespace_the_instance_does_not_allow_is_refused() {
    let strapi = StrapiServer::shared().await;
    let world = World::new(&strapi).await;
    world.apply_instance(strapi.base_url());
    let webhook = world.apply_webhook(ARTICLES, "articles", "shop");
    let status = world.reconcile_webhook(webhook).await;
    let (registered, reason, message) = condition_of(&status, "Registered");
    assert_eq!(
        (registered.as_str(), reason.as_str()),
        ("False", "NamespaceNotAllowed")
    );
    assert!(message.contains("shop"), "{message}");
    assert_eq!(condition_of(&status, "Ready").1, "NamespaceNotAllowed");

    // The instance leaves it out of the registration.
    world.reconcile().await.unwrap();
    world.reconcile().await.unwrap();
    assert_eq!(world.status()["webhooks"], json!(0));
    let registration = world.registrations().await.remove(0);
    assert!(
        !registration.enabled,
        "no allowed webhook: the registration stays but sends nothing"
    );
}

#[tokio::test]
async fn registrations_of_vanished_instances_are_collected_and_others_left_alone() {
    let strapi = StrapiServer::shared().await;
    let world = World::new(&strapi).await;
    let ghost = |name: &str, url: String| WebhookSpec {
        name: format!("strapi-webhook-operator {NAMESPACE}/{name}"),
        url,
        headers: BTreeMap::from([(MARKER_HEADER.to_owned(), format!("{NAMESPACE}/{name}"))]),
        events: vec!["entry.create".into()],
        enabled: true,
    };
    let suffix = uuid::Uuid::now_v7().simple().to_string();
    // Left behind by an instance deleted while the operator was away: points at our receiver.
    let orphan = world
        .strapi()
        .create_webhook(&ghost(
            &format!("gone-{suffix}"),
            format!("{}/v1/instances/{NAMESPACE}/gone", world.ingest_url()),
        ))
        .await
        .unwrap();
    // Managed by another installation: points at another receiver.
    let foreign = world
        .strapi()
        .create_webhook(&ghost(
            &format!("elsewhere-{suffix}"),
            "https://receiver.example.com:8443/v1/instances/web/x".into(),
        ))
        .await
        .unwrap();
    world.cleanup().webhook(&orphan.id);
    world.cleanup().webhook(&foreign.id);

    world.apply_instance(strapi.base_url());
    world.reconcile().await.unwrap();
    world.reconcile().await.unwrap();
    assert!(
        world.strapi().get_webhook(&orphan.id).await.is_err(),
        "the orphan is deleted"
    );
    assert_eq!(
        world.strapi().get_webhook(&foreign.id).await.unwrap(),
        foreign,
        "another installation's webhook stays"
    );
    assert!(
        world
            .api
            .event_reasons()
            .contains(&"GarbageCollected".to_owned())
    );
}

#[tokio::test]
async fn restart_on_change_rolls_the_strapi_deployment_once_per_change() {
    let strapi = StrapiServer::shared().await;
    let world = World::new(&strapi).await;
    let deployment = path_of("apps/v1", "deployments", NAMESPACE, "strapi");
    world.api.put(
        &deployment,
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "strapi", "namespace": NAMESPACE},
            "spec": {"template": {"metadata": {"labels": {"app": "strapi"}}}},
        }),
    );
    world.add_webhook(ARTICLES, "articles");
    world.apply_instance_with(
        strapi.base_url(),
        json!({"restartOnChange": {"deployment": "strapi"}}),
    );
    world.reconcile().await.unwrap();
    world.reconcile().await.unwrap();

    let restarted_at = world.api.get(&deployment).unwrap()["spec"]["template"]["metadata"]["annotations"]
        ["webhooks.strapi-operator.dev/restartedAt"]
        .clone();
    assert!(
        restarted_at.is_string(),
        "the pod template is annotated: {restarted_at}"
    );
    assert_eq!(world.status()["lastRestartTime"], restarted_at);
    assert!(
        world
            .api
            .event_reasons()
            .contains(&"StrapiRestarted".to_owned())
    );

    // Nothing changed: no second roll.
    world.reconcile().await.unwrap();
    let patches = world
        .api
        .requests()
        .into_iter()
        .filter(|request| request.method == http::Method::PATCH && request.path == deployment)
        .count();
    assert_eq!(patches, 1);
}

#[tokio::test]
async fn a_sink_the_egress_policy_refuses_is_reported_before_any_event() {
    let strapi = StrapiServer::shared().await;
    let world = World::new(&strapi).await;
    world.apply_instance_with(
        strapi.base_url(),
        json!({"egress": {"allowPrivateNetworks": true, "deniedHosts": ["*.internal"]}}),
    );
    let mut webhook = world.apply_webhook(ARTICLES, "metadata", NAMESPACE);
    let mut sink = webhook.spec.sinks[0].clone();
    webhook.spec.sinks[0].nextjs.as_mut().unwrap().url =
        "http://[::ffff:169.254.169.254]/computeMetadata/v1/".into();
    sink.name = "internal".into();
    sink.nextjs.as_mut().unwrap().url = "http://metadata.google.internal/".into();
    webhook.spec.sinks.push(sink);
    world.api.put(
        &world.webhook_path("metadata"),
        serde_json::to_value(&webhook).unwrap(),
    );

    let status = world.reconcile_webhook(webhook).await;
    let (sinks, reason, message) = condition_of(&status, "SinksResolved");
    assert_eq!(
        (sinks.as_str(), reason.as_str()),
        ("False", "EgressRefused"),
        "{status:#}"
    );
    assert!(
        message.contains("spec.sinks[0].nextjs.url") && message.contains("169.254.169.254"),
        "{message}"
    );
    assert!(
        message.contains("spec.sinks[1].nextjs.url") && message.contains("*.internal")
            || message.contains("metadata.google.internal is denied"),
        "{message}"
    );
    assert_eq!(condition_of(&status, "Ready").0, "False", "{status:#}");
}

/// Everything this test process logs, at every level.
#[derive(Clone, Default)]
struct LogBuffer(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn failing_sinks_leave_no_secret_in_the_status_events_or_logs() {
    let logs = LogBuffer::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_env_filter("trace")
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();
    let slack_path = "T0CTRL/B0CTRL/slackPathSecret4c1d";
    let bearer = "bearerSecretCtrl90aa";
    let strapi = StrapiServer::shared().await;
    let world = World::new(&strapi).await;
    world.apply_instance(strapi.base_url());
    let closed = receiver::free_port();
    let echo = support::CaptureServer::echoing(http::StatusCode::INTERNAL_SERVER_ERROR).await;
    world.api.put_secret(
        NAMESPACE,
        "leaky",
        &[
            (
                "slack",
                &format!("http://127.0.0.1:{closed}/services/{slack_path}"),
            ),
            ("token", bearer),
        ],
    );
    let webhook: StrapiWebhook = serde_json::from_value(json!({
        "apiVersion": "webhooks.strapi-operator.dev/v1alpha1",
        "kind": "StrapiWebhook",
        "metadata": {"name": "leaky", "namespace": NAMESPACE, "generation": 1,
                     "uid": uuid::Uuid::now_v7().to_string()},
        "spec": {
            "instanceRef": {"name": world.name},
            "events": ["entry.create"],
            "sinks": [
                {"name": "chat", "slack": {"webhookUrlSecretRef": {"name": "leaky", "key": "slack"}},
                 "delivery": {"backoff": {"initial": "50ms", "max": "100ms"}}},
                {"name": "crm", "http": {"url": format!("{}/crm", echo.url()), "headers": [
                    {"name": "Authorization", "valueFrom": {
                        "secretKeyRef": {"name": "leaky", "key": "token"}, "prefix": "Bearer "}}]},
                 "delivery": {"backoff": {"initial": "50ms", "max": "100ms"}}},
            ],
            "routes": [
                {"name": "to-chat", "sink": "chat", "slack": {"text": "{{ entry.title }}"}},
                {"name": "to-crm", "sink": "crm"},
            ],
        },
    }))
    .unwrap();
    world.api.put(
        &world.webhook_path("leaky"),
        serde_json::to_value(&webhook).unwrap(),
    );
    world
        .webhooks
        .lock()
        .unwrap()
        .apply_watcher_event(&watcher::Event::Apply(webhook.clone()));

    // The receiver routes the same webhook, as its cluster source would.
    let mut secrets = strapi_webhook_operator::config::InMemorySecrets::new();
    secrets
        .insert(
            NAMESPACE,
            "leaky",
            "slack",
            format!("http://127.0.0.1:{closed}/services/{slack_path}"),
        )
        .insert(NAMESPACE, "leaky", "token", bearer);
    let compiled = strapi_webhook_operator::config::compile_webhook(
        NAMESPACE,
        "leaky",
        1,
        &webhook.spec,
        &secrets,
    )
    .unwrap();
    let shared = "shared-secret-for-the-leak-test";
    world.receiver.source.publish(Snapshot::new(
        BTreeMap::from([(world.key(), vec![shared.to_owned()])]),
        [compiled],
    ));
    let http = receiver::client();
    let posted = http
        .post(format!(
            "http://{}/v1/instances/{}",
            world.receiver.ingest,
            world.key()
        ))
        .header(strapi_webhook_operator::event::SECRET_HEADER, shared)
        .json(
            &json!({"event": "entry.create", "model": "article", "entry": {"id": 1, "title": "t"}}),
        )
        .send()
        .await
        .unwrap();
    assert!(posted.status().is_success(), "{}", posted.status());

    // Both sinks fail a few times; the controller copies their counters into the status.
    let status = eventually(Duration::from_secs(30), || async {
        let status = world.reconcile_webhook(webhook.clone()).await;
        let sinks = status["sinks"].as_array().cloned().unwrap_or_default();
        if sinks.len() == 2 && sinks.iter().all(|sink| sink["lastError"].is_string()) {
            Ok(status)
        } else {
            Err(format!("not both sinks failed yet: {status:#}"))
        }
    })
    .await;
    let written: String = world
        .api
        .requests()
        .iter()
        .map(|request| request.body.to_string())
        .collect();
    let logs = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    assert!(
        logs.contains("TRACE"),
        "trace-level logging was not captured"
    );
    for (place, text) in [
        ("the status", status.to_string()),
        ("what the controller wrote to the API server", written),
        ("the logs", logs),
    ] {
        for secret in [slack_path, bearer, shared] {
            assert!(!text.contains(secret), "{secret} in {place}: {status:#}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn events_strapi_fired_while_the_receiver_refused_them_are_recovered_and_reported() {
    let strapi = StrapiServer::shared().await;
    let world = World::new(&strapi).await;
    world.add_webhook(ARTICLES, "articles");
    world.apply_instance_with(strapi.base_url(), json!({"repairInterval": "1s"}));
    world.reconcile().await.unwrap();
    // Registration, and the first gap repair check, which only records where repair starts.
    world.reconcile().await.unwrap();
    assert!(
        world.status()["repair"]["lastCheckTime"].is_string(),
        "{}",
        world.status()
    );
    assert_eq!(world.status()["repair"]["recoveredEvents"], json!(0));
    let configured = Snapshot::new(
        BTreeMap::from([(world.key(), vec![world.shared_secret()])]),
        [],
    );
    world.receiver.source.publish(configured.clone());

    // The receiver answers 503 while it loads its configuration: Strapi's update is lost there.
    let tag = uuid::Uuid::now_v7().simple().to_string();
    let article = world
        .strapi()
        .create_entry(
            "api::article.article",
            &json!({ "title": format!("a {tag}") }),
        )
        .await
        .unwrap();
    world.receiver.source.publish(Snapshot::default());
    let updated = world
        .strapi()
        .update_document(
            strapi_webhook_operator::strapi::Document::Entry {
                uid: "api::article.article",
                document_id: &article.document_id,
            },
            &json!({ "title": format!("refused {tag}") }),
        )
        .await
        .unwrap();
    // Strapi sends from a queue; give it time to be refused.
    tokio::time::sleep(Duration::from_secs(3)).await;
    world.receiver.source.publish(configured);

    eventually(Duration::from_secs(30), || async {
        // The repair interval is a second: each pass may run a check.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        world.reconcile().await.unwrap();
        match world.status()["repair"]["recoveredEvents"].as_i64() {
            Some(recovered) if recovered > 0 => Ok(()),
            _ => Err(format!("nothing recovered: {}", world.status())),
        }
    })
    .await;
    let repair = world.status()["repair"].clone();
    assert!(repair["lastRecoveryTime"].is_string(), "{repair}");
    assert!(repair["lastGap"]["start"].is_string(), "{repair}");
    assert!(
        repair["lastGap"]["recoveredEvents"].as_i64() > Some(0),
        "{repair}"
    );
    assert!(repair.get("lastError").is_none(), "{repair}");
    assert!(
        world
            .api
            .event_reasons()
            .contains(&"GapRepaired".to_owned()),
        "{:?}",
        world.api.event_reasons()
    );
    // The refused update itself is stored now (recovered).
    let updated_at = updated.fields["updatedAt"].as_str().unwrap();
    let stored = world
        .receiver
        .state
        .queue
        .covered(
            world.key(),
            vec![strapi_webhook_operator::queue::DocumentVersion {
                uid: "api::article.article".into(),
                document_id: article.document_id.clone(),
                locale: String::new(),
                kind: strapi_webhook_operator::queue::VersionKind::Content,
                at: strapi_webhook_operator::receiver::repair::strapi_millis(updated_at).unwrap(),
            }],
        )
        .await
        .unwrap();
    assert_eq!(stored, [true]);
}
