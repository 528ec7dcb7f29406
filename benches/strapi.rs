//! Benchmarks that need the real test Strapi (issue 9, items 4–6); run them with one up:
//! `scripts/with-strapi.sh cargo bench --bench strapi` (what `scripts/bench.sh` does).
//!
//! 5. Controller scale: the real reconcile functions against an in-process fake Kubernetes API,
//!    the real Strapi behind a counting loopback proxy and a real receiver in this process:
//!    1,000 StrapiWebhooks in 10 namespaces on one StrapiInstance against 10 webhooks as the
//!    baseline — time until all are Ready, Strapi admin API calls (they must not grow with
//!    webhooks), Kubernetes API calls, and calls to the receiver asking what it routes (issue
//!    22: at most one per replica per change, fewer when one answer covers many webhooks; none
//!    when a resync finds every webhook still routed).
//! 4. Controller memory: this process's RSS after the 1,000-webhook run against after the 10
//!    webhook run. It holds the fake API and the receiver too, so it is an upper bound.
//! 6. Real Strapi throughput: content-manager updates as fast as Strapi takes them, without a
//!    webhook (baseline) and with the receiver registered; events/s that reach the receiver.

mod common;
// The controller tests' in-memory API server, shared rather than copied.
#[path = "../tests/support/fake_api.rs"]
#[allow(dead_code)]
mod fake_api;

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Body,
    extract::{Request, State},
    http::{StatusCode, header},
    response::Response,
};
use common::{BenchError, RecordingSink, Row, cpu_by_thread, ms, percentile, publish, rss_mib};
use fake_api::{FakeApi, path_of};
use futures::{StreamExt, stream};
use kube::runtime::{reflector, watcher};
use prometheus_client::registry::Registry;
use serde_json::{Value, json};
use strapi_webhook_operator::{
    api::StrapiWebhookSpec,
    api::{StrapiInstance, StrapiWebhook, shared_secret},
    config::{CompiledWebhook, InMemorySecrets, compile_webhook},
    controller::{self, Context, Metrics, Options, ReceiverCallLabels},
    event::SECRET_HEADER,
    http::AdminToken,
    queue::sqlite::SqliteQueue,
    receiver::{
        self, ReceiverSettings, ReceiverState,
        metrics::InstanceLabels,
        source::{Snapshot, StaticSource},
    },
    repair::{self, CheckSettings, RepairClient, Target},
    sinks::EgressBase,
    strapi::{Credentials, Document, StrapiClient, WebhookSpec},
};

const GROUP: &str = "webhooks.strapi-operator.dev/v1alpha1";
const INSTANCE_NAMESPACE: &str = "cms";
const NAMESPACES: usize = 10;
const BASELINE_WEBHOOKS: usize = 10;
const WEBHOOKS: usize = 1_000;
/// Webhook reconciles in flight at once, like a controller worker pool.
const RECONCILE_CONCURRENCY: usize = 16;
const ARTICLES: usize = 8;
/// Saves timed one after another in each run of the save-to-sink latency.
const SAVES: usize = 40;
/// Changes made while the receiver was unreachable, for the gap repair to recover.
const MISSED: usize = 1_000;
/// The gap repair's settle time in the recovery run (the tests' value; the default is 15 s).
const RECOVERY_SETTLE_S: u64 = 3;
const UPDATE_SECONDS: u64 = 8;

fn main() -> Result<(), BenchError> {
    let runtime = tokio::runtime::Runtime::new().map_err(BenchError::setup("the runtime"))?;
    runtime.block_on(run())
}

async fn run() -> Result<(), BenchError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let strapi = TestStrapi::from_env()?;
    let receiver = InProcessReceiver::start().await?;
    let proxy = CountingProxy::start(&strapi.url).await?;
    let mut rows = Vec::new();

    let baseline = scale(&strapi, &proxy, &receiver, BASELINE_WEBHOOKS).await?;
    let baseline_rss = rss_mib(std::process::id())?.0;
    let full = scale(&strapi, &proxy, &receiver, WEBHOOKS).await?;
    let full_rss = rss_mib(std::process::id())?.0;
    let scenario = format!("controller: {WEBHOOKS} webhooks, {NAMESPACES} namespaces, 1 instance");
    let base = format!("{BASELINE_WEBHOOKS} webhooks");
    rows.push(Row::against(
        &scenario,
        "s until all Ready",
        full.seconds,
        baseline.seconds,
        &base,
    ));
    rows.push(Row::against(
        &scenario,
        "Strapi admin API calls",
        full.strapi_calls as f64,
        baseline.strapi_calls as f64,
        &base,
    ));
    rows.push(Row::against(
        &scenario,
        "Kubernetes API calls",
        full.kube_calls as f64,
        baseline.kube_calls as f64,
        &base,
    ));
    rows.push(Row::against(
        &scenario,
        "receiver routing calls per webhook change",
        full.routing_calls as f64 / WEBHOOKS as f64,
        baseline.routing_calls as f64 / BASELINE_WEBHOOKS as f64,
        &base,
    ));
    rows.push(Row::against(
        &scenario,
        "receiver routing calls in a resync of every webhook",
        full.resync_routing_calls as f64,
        baseline.resync_routing_calls as f64,
        &base,
    ));
    rows.push(Row::against(
        "controller memory (with fake API and receiver in process)",
        format!("RSS after {WEBHOOKS} webhooks MiB"),
        full_rss,
        baseline_rss,
        &base,
    ));

    rows.extend(throughput(&strapi, &receiver).await?);
    rows.extend(save_to_sink(&strapi, &receiver).await?);
    rows.extend(repair_check(&strapi, &receiver).await?);
    rows.extend(recover_missed(&strapi, &receiver).await?);
    let notes = [format!(
        "Controller: real `reconcile_instance`/`reconcile_webhook` against an in-process fake \
         Kubernetes API (not a real API server), the real test Strapi behind a counting proxy, \
         {RECONCILE_CONCURRENCY} webhook reconciles at a time after the instance is Ready. \
         Strapi throughput: {ARTICLES} articles updated in parallel for {UPDATE_SECONDS} s \
         through the content-manager API. Save to sink: {SAVES} saves of one article one \
         after another; from the content-manager update returning to the sink receiving \
         Strapi's `entry.update`, straight from Strapi (a Strapi webhook pointing at the sink) \
         and through the receiver (a Next.js sink in `Forward` mode). Gap repair: the second \
         of two checks in a row of one instance whose webhooks take every model, nothing \
         changed in between; CPU is this process's (the check and the in-process receiver \
         answering it), summed over its threads from /proc. Recovery: {MISSED} articles \
         created while no webhook reached the receiver, then checks every second (settle \
         {RECOVERY_SETTLE_S} s) until every one reached the sink as a recovered \
         `entry.create`; the default 60 s repair interval comes on top."
    )];
    publish("strapi", &rows, &notes)
}

/// The test Strapi `scripts/with-strapi.sh` started.
struct TestStrapi {
    url: String,
    email: String,
    password: String,
}

impl TestStrapi {
    fn from_env() -> Result<Self, BenchError> {
        let var = |name: &str| {
            std::env::var(name).map_err(|_| {
                BenchError::step(
                    "finding the test Strapi",
                    format!("{name} is not set; run under scripts/with-strapi.sh"),
                )
            })
        };
        Ok(Self {
            url: var("STRAPI_TEST_URL")?,
            email: var("STRAPI_TEST_EMAIL")?,
            password: var("STRAPI_TEST_PASSWORD")?,
        })
    }

    fn client(&self) -> Result<StrapiClient, BenchError> {
        let credentials = Credentials::Password {
            email: self.email.clone(),
            password: self.password.clone().into(),
        };
        StrapiClient::new(&self.url, credentials)
            .map_err(|error| BenchError::step("building the Strapi client", error))
    }
}

/// A loopback reverse proxy in front of Strapi that counts the calls it forwards.
struct CountingProxy {
    url: String,
    calls: Arc<AtomicU64>,
}

struct Upstream {
    base: String,
    client: reqwest::Client,
    calls: Arc<AtomicU64>,
}

impl CountingProxy {
    async fn start(upstream: &str) -> Result<Self, BenchError> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(BenchError::setup("the counting proxy"))?;
        let address = listener
            .local_addr()
            .map_err(BenchError::setup("the counting proxy"))?;
        let calls = Arc::new(AtomicU64::new(0));
        let state = Arc::new(Upstream {
            base: upstream.trim_end_matches('/').to_owned(),
            client: reqwest::Client::new(),
            calls: Arc::clone(&calls),
        });
        let app = Router::new().fallback(forward).with_state(state);
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Self {
            url: format!("http://{address}"),
            calls,
        })
    }

    fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }
}

async fn forward(State(upstream): State<Arc<Upstream>>, request: Request) -> Response {
    upstream.calls.fetch_add(1, Ordering::Relaxed);
    let (parts, body) = request.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |path| path.as_str());
    let bad_gateway = |message: String| {
        Response::builder()
            .status(StatusCode::BAD_GATEWAY)
            .body(Body::from(message))
            .unwrap_or_default()
    };
    let Ok(body) = axum::body::to_bytes(body, usize::MAX).await else {
        return bad_gateway("reading the request body failed".into());
    };
    let mut headers = parts.headers;
    headers.remove(header::HOST);
    let answer = upstream
        .client
        .request(parts.method, format!("{}{path}", upstream.base))
        .headers(headers)
        .body(body)
        .send()
        .await;
    let answer = match answer {
        Ok(answer) => answer,
        Err(error) => return bad_gateway(error.to_string()),
    };
    let mut response = Response::builder().status(answer.status());
    for (name, value) in answer.headers() {
        if name != header::TRANSFER_ENCODING && name != header::CONNECTION {
            response = response.header(name, value);
        }
    }
    match answer.bytes().await {
        Ok(bytes) => response.body(Body::from(bytes)).unwrap_or_default(),
        Err(error) => bad_gateway(error.to_string()),
    }
}

/// A receiver serving on loopback in this process; the benchmark publishes the shared
/// secrets it accepts, as the cluster source would once it sees the controller's Secret.
struct InProcessReceiver {
    state: Arc<ReceiverState>,
    source: StaticSource,
    ingest_url: String,
    admin_url: String,
    admin_token: AdminToken,
    _dir: tempfile::TempDir,
}

impl InProcessReceiver {
    async fn start() -> Result<Self, BenchError> {
        let dir = tempfile::tempdir().map_err(BenchError::setup("the receiver's folder"))?;
        let queue = SqliteQueue::open(&dir.path().join("queue.db"))
            .map_err(|error| BenchError::step("opening the receiver's queue", error))?;
        let source = StaticSource::new(Snapshot::new(BTreeMap::new(), []));
        let bind = || async {
            tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .map_err(BenchError::setup("the receiver's ports"))
        };
        let (ingest, admin) = (bind().await?, bind().await?);
        let address = |listener: &tokio::net::TcpListener| {
            listener
                .local_addr()
                .map_err(BenchError::setup("the receiver's ports"))
        };
        let (ingest_address, admin_address) = (address(&ingest)?, address(&admin)?);
        let admin_token = AdminToken::generate();
        let settings = ReceiverSettings {
            admin_token: Some(admin_token.clone()),
            // The latency bench's sink is a loopback server in this process.
            egress: EgressBase {
                allow_loopback: true,
                own_ports: vec![ingest_address.port(), admin_address.port()],
                own_addresses: Vec::new(),
            },
            ..ReceiverSettings::default()
        };
        let state = ReceiverState::new(Arc::new(queue), &source, settings)
            .map_err(|error| BenchError::step("starting the receiver", error))?;
        let (ingest_url, admin_url) = (
            format!("http://{ingest_address}"),
            format!("http://{admin_address}"),
        );
        tokio::spawn(receiver::serve(
            Arc::clone(&state),
            ingest,
            admin,
            std::future::pending(),
        ));
        Ok(Self {
            state,
            source,
            ingest_url,
            admin_url,
            admin_token,
            _dir: dir,
        })
    }

    /// Accepts `secret` from the instance `key` (generation 1, and no other), routing with
    /// `webhooks`, as the cluster source would once it sees them.
    fn route(&self, key: &str, secret: &str, webhooks: Vec<CompiledWebhook>) {
        let instances = BTreeMap::from([(key.to_owned(), vec![secret.to_owned()])]);
        let generations = BTreeMap::from([(key.to_owned(), 1)]);
        self.source
            .publish(Snapshot::new(instances, webhooks).with_instance_generations(generations));
    }

    /// Events of instance `key` stored so far.
    fn stored(&self, key: &str) -> u64 {
        self.state
            .metrics
            .stored
            .get_or_create(&InstanceLabels {
                strapi_instance: key.to_owned(),
            })
            .get()
    }
}

struct ScaleResult {
    seconds: f64,
    strapi_calls: u64,
    kube_calls: usize,
    routing_calls: u64,
    resync_routing_calls: u64,
}

/// Item 5: `webhooks` StrapiWebhooks on one new instance, from nothing to all Ready.
async fn scale(
    strapi: &TestStrapi,
    proxy: &CountingProxy,
    receiver: &InProcessReceiver,
    webhooks: usize,
) -> Result<ScaleResult, BenchError> {
    let api = FakeApi::default();
    api.put_secret(
        INSTANCE_NAMESPACE,
        "strapi-admin",
        &[("email", &strapi.email), ("password", &strapi.password)],
    );
    let name = format!("scale-{webhooks}-{}", uuid::Uuid::now_v7().simple());
    let key = format!("{INSTANCE_NAMESPACE}/{name}");
    // The shared secret exists and the receiver knows it, as in a cluster whose receiver has
    // synced; otherwise the first verification would wait out its timeout on a 401.
    let secret = uuid::Uuid::now_v7().simple().to_string();
    api.put_secret(
        INSTANCE_NAMESPACE,
        &shared_secret::name(&name),
        &[(shared_secret::CURRENT_KEY, &secret)],
    );
    receiver.route(&key, &secret, Vec::new());
    let instance_path = path_of(GROUP, "strapiinstances", INSTANCE_NAMESPACE, &name);
    api.put(
        &instance_path,
        json!({
            "apiVersion": GROUP,
            "kind": "StrapiInstance",
            "metadata": {
                "name": name, "namespace": INSTANCE_NAMESPACE, "generation": 1,
                "uid": uuid::Uuid::now_v7().to_string(),
                // kube's finalizer helper tests `/metadata/finalizers` for null before adding;
                // the fake's JSON patch, unlike the API server, needs the field present.
                "finalizers": null
            },
            "spec": {
                "url": proxy.url,
                "auth": {"credentials": {"secretName": "strapi-admin"}},
                "allowedNamespaces": {"from": "All"}
            }
        }),
    );
    let (instance_store, mut instances) = reflector::store();
    let (webhook_store, mut webhook_writer) = reflector::store();
    let mut paths = Vec::with_capacity(webhooks);
    let mut compiled = Vec::with_capacity(webhooks);
    for n in 0..webhooks {
        let namespace = format!("team-{}", n % NAMESPACES);
        let webhook_name = format!("site-{n}");
        let path = path_of(GROUP, "strapiwebhooks", &namespace, &webhook_name);
        let object = json!({
            "apiVersion": GROUP,
            "kind": "StrapiWebhook",
            "metadata": {
                "name": webhook_name, "namespace": namespace, "generation": 1,
                "uid": uuid::Uuid::now_v7().to_string()
            },
            "spec": {
                "instanceRef": {"name": name, "namespace": INSTANCE_NAMESPACE},
                "events": ["entry.update", "entry.publish"],
                "sinks": [{"name": "site", "nextjs": {"url": "http://127.0.0.1:3000/api/revalidate"}}],
                "routes": [{"name": "articles", "sink": "site", "match": {"models": ["article"]}}]
            }
        });
        let webhook: StrapiWebhook = serde_json::from_value(object.clone())
            .map_err(|error| BenchError::step("building a StrapiWebhook", error))?;
        compiled.push(
            compile_webhook(
                &namespace,
                &webhook_name,
                1,
                &webhook.spec,
                &InMemorySecrets::new(),
            )
            .map_err(|error| BenchError::step("compiling a StrapiWebhook", error))?,
        );
        webhook_writer.apply_watcher_event(&watcher::Event::Apply(webhook));
        api.put(&path, object);
        paths.push(path);
    }
    let options = Options {
        receiver_url: receiver.ingest_url.clone(),
        receiver_admin_url: receiver.admin_url.clone(),
        receiver_replicas: None,
        secret_header: SECRET_HEADER.into(),
        secret_grace: k8s_openapi::jiff::SignedDuration::from_mins(15),
        verify_timeout: Duration::from_secs(10),
        allow_loopback_sinks: true,
        receiver_admin_token: Some(receiver.admin_token.clone()),
        repair: strapi_webhook_operator::repair::CheckSettings::default(),
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
    let read_instance = |api: &FakeApi| -> Result<StrapiInstance, BenchError> {
        let object = api.get(&instance_path).unwrap_or_default();
        serde_json::from_value(object)
            .map_err(|error| BenchError::step("reading the StrapiInstance", error))
    };
    let (strapi_before, kube_before) = (proxy.calls(), api.requests().len());
    let started = Instant::now();
    // Finalizer, then registration and verification: each reconcile moves the instance on, as
    // the controller's requeues would.
    let mut ready = false;
    for _ in 0..6 {
        let instance = read_instance(&api)?;
        instances.apply_watcher_event(&watcher::Event::Apply(instance.clone()));
        controller::reconcile_instance(Arc::new(instance), Arc::clone(&ctx))
            .await
            .map_err(|error| BenchError::step("reconciling the StrapiInstance", error))?;
        if is_ready(&api.get(&instance_path).unwrap_or_default()) {
            ready = true;
            break;
        }
    }
    let instance = read_instance(&api)?;
    if !ready {
        return Err(BenchError::step(
            "waiting for the StrapiInstance",
            format!("not Ready after 6 reconciles: {:#}", json!(instance.status)),
        ));
    }
    instances.apply_watcher_event(&watcher::Event::Apply(instance));
    receiver.route(&key, &secret, compiled);
    let reconcile_all = || reconcile_webhooks(&api, &ctx, &paths);
    reconcile_all().await?;
    let seconds = started.elapsed().as_secs_f64();
    let routing_calls = count_routing_calls(&ctx);
    let (strapi_calls, kube_calls) = (
        proxy.calls() - strapi_before,
        api.requests().len() - kube_before,
    );
    if let Some(path) = paths
        .iter()
        .find(|path| !is_ready(&api.get(path).unwrap_or_default()))
    {
        return Err(BenchError::step(
            "checking the StrapiWebhooks",
            format!(
                "{path} is not Ready: {:#}",
                api.get(path).unwrap_or_default()["status"]
            ),
        ));
    }
    // A resync: every webhook reconciled again, none changed, after the controller stopped
    // reusing the receiver's last answer (as the periodic resync a minute later would).
    tokio::time::sleep(controller::ROUTING_REPORT_TTL).await;
    reconcile_all().await?;
    let resync_routing_calls = count_routing_calls(&ctx) - routing_calls;

    // `kubectl delete`: the finalizer removes the registration, leaving Strapi as it was.
    let mut object = api.get(&instance_path).unwrap_or_default();
    object["metadata"]["deletionTimestamp"] = json!("2026-11-27T00:00:00Z");
    api.put(&instance_path, object);
    controller::reconcile_instance(Arc::new(read_instance(&api)?), ctx)
        .await
        .map_err(|error| BenchError::step("deleting the StrapiInstance", error))?;
    Ok(ScaleResult {
        seconds,
        strapi_calls,
        kube_calls,
        routing_calls,
        resync_routing_calls,
    })
}

/// Calls the controller made to the receiver asking what it routes, whatever the outcome.
fn count_routing_calls(ctx: &Context) -> u64 {
    ["ok", "ReceiverUnreachable", "ReceiverError"]
        .into_iter()
        .map(|outcome| {
            ctx.metrics
                .receiver_calls
                .get_or_create(&ReceiverCallLabels {
                    call: "routing",
                    outcome,
                })
                .get()
        })
        .sum()
}

/// Reconciles every webhook once, [`RECONCILE_CONCURRENCY`] at a time.
async fn reconcile_webhooks(
    api: &FakeApi,
    ctx: &Arc<Context>,
    paths: &[String],
) -> Result<(), BenchError> {
    let reconciled: Vec<Result<(), BenchError>> = stream::iter(paths)
        .map(|path| {
            let (api, ctx) = (api.clone(), Arc::clone(ctx));
            async move {
                let webhook: StrapiWebhook =
                    serde_json::from_value(api.get(path).unwrap_or_default())
                        .map_err(|error| BenchError::step("reading a StrapiWebhook", error))?;
                controller::reconcile_webhook(Arc::new(webhook), ctx)
                    .await
                    .map(drop)
                    .map_err(|error| BenchError::step("reconciling a StrapiWebhook", error))
            }
        })
        .buffer_unordered(RECONCILE_CONCURRENCY)
        .collect()
        .await;
    reconciled.into_iter().collect::<Result<Vec<()>, _>>()?;
    Ok(())
}

fn is_ready(object: &Value) -> bool {
    object["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|condition| condition["type"] == "Ready" && condition["status"] == "True")
}

/// Item 6: content-manager updates as fast as Strapi takes them, without and with the receiver
/// registered.
async fn throughput(
    strapi: &TestStrapi,
    receiver: &InProcessReceiver,
) -> Result<Vec<Row>, BenchError> {
    let client = strapi.client()?;
    let mut documents = Vec::with_capacity(ARTICLES);
    for n in 0..ARTICLES {
        let title = format!("throughput {n} {}", uuid::Uuid::now_v7().simple());
        let entry = client
            .create_entry("api::article.article", &json!({"title": title}))
            .await
            .map_err(|error| BenchError::step("creating an article", error))?;
        documents.push(entry.document_id);
    }
    let (without, _) = update_for(&client, &documents).await?;

    let key = format!("{INSTANCE_NAMESPACE}/throughput");
    let secret = uuid::Uuid::now_v7().simple().to_string();
    receiver.route(&key, &secret, Vec::new());
    let registration = client
        .create_webhook(&WebhookSpec {
            name: "strapi-webhook-operator benchmark".into(),
            url: format!("{}/v1/instances/{key}", receiver.ingest_url),
            headers: BTreeMap::from([(SECRET_HEADER.to_owned(), secret)]),
            events: vec!["entry.update".into()],
            enabled: true,
        })
        .await
        .map_err(|error| BenchError::step("registering the receiver in Strapi", error))?;
    let started = Instant::now();
    let (with, updates) = update_for(&client, &documents).await?;
    // Strapi sends webhooks after answering the update, so the last ones trail the updates.
    let arrived =
        common::wait_until(Duration::from_secs(60), || receiver.stored(&key) >= updates).await;
    let elapsed = started.elapsed().as_secs_f64();
    let stored = receiver.stored(&key);

    client
        .delete_webhook(&registration.id)
        .await
        .map_err(|error| BenchError::step("removing the registration", error))?;
    for document_id in &documents {
        client
            .delete_document(Document::Entry {
                uid: "api::article.article",
                document_id,
            })
            .await
            .map_err(|error| BenchError::step("deleting an article", error))?;
    }
    if !arrived {
        return Err(BenchError::step(
            "waiting for Strapi's webhooks",
            format!("{stored} of {updates} events reached the receiver within 60 s"),
        ));
    }
    Ok(vec![
        Row::plain(
            "real Strapi: updates without a webhook",
            "updates/s (baseline)",
            without,
        ),
        Row::against(
            "real Strapi: receiver registered",
            "updates/s",
            with,
            without,
            "no webhook",
        ),
        Row::against(
            "real Strapi: receiver registered",
            "events/s reaching the receiver",
            stored as f64 / elapsed,
            without,
            "updates/s, no webhook",
        ),
    ])
}

/// Updates every document in a loop, one task per document, for `UPDATE_SECONDS`; returns
/// updates/s and the number of updates.
async fn update_for(client: &StrapiClient, documents: &[String]) -> Result<(f64, u64), BenchError> {
    let started = Instant::now();
    let until = started + Duration::from_secs(UPDATE_SECONDS);
    let counts: Vec<Result<u64, BenchError>> = stream::iter(documents)
        .map(|document_id| async move {
            let mut count = 0;
            while Instant::now() < until {
                count += 1;
                client
                    .update_document(
                        Document::Entry {
                            uid: "api::article.article",
                            document_id,
                        },
                        &json!({"body": format!("revision {count}")}),
                    )
                    .await
                    .map_err(|error| BenchError::step("updating an article", error))?;
            }
            Ok(count)
        })
        .buffer_unordered(documents.len())
        .collect()
        .await;
    let total: u64 = counts.into_iter().sum::<Result<u64, _>>()?;
    Ok((total as f64 / started.elapsed().as_secs_f64(), total))
}

/// Item 7: the time from an editor's save (the content-manager update returning) to the sink
/// receiving the call: Strapi calling the sink itself, then through the receiver.
async fn save_to_sink(
    strapi: &TestStrapi,
    receiver: &InProcessReceiver,
) -> Result<Vec<Row>, BenchError> {
    let client = strapi.client()?;
    let sink = RecordingSink::start().await?;
    let title = format!("latency {}", uuid::Uuid::now_v7().simple());
    let document_id = client
        .create_entry("api::article.article", &json!({"title": title}))
        .await
        .map_err(|error| BenchError::step("creating an article", error))?
        .document_id;

    let direct = register(&client, "direct", sink.url(), BTreeMap::new()).await?;
    let straight = saves(&client, &document_id, &sink, "direct").await;
    unregister(&client, &direct.id).await?;

    let name = "latency";
    let key = format!("{INSTANCE_NAMESPACE}/{name}");
    let secret = uuid::Uuid::now_v7().simple().to_string();
    let events = ["entry.update".to_owned()].into();
    receiver.route(
        &key,
        &secret,
        vec![forward_webhook(name, &sink.url(), &events)?],
    );
    let headers = BTreeMap::from([(SECRET_HEADER.to_owned(), secret)]);
    let url = format!("{}/v1/instances/{key}", receiver.ingest_url);
    let through = register(&client, "through the receiver", url, headers).await?;
    let forwarded = saves(&client, &document_id, &sink, "receiver").await;
    unregister(&client, &through.id).await?;
    client
        .delete_document(Document::Entry {
            uid: "api::article.article",
            document_id: &document_id,
        })
        .await
        .map_err(|error| BenchError::step("deleting an article", error))?;
    let (straight, forwarded) = (straight?, forwarded?);
    let scenario = "real Strapi: save → sink, through the receiver";
    Ok(["p50", "p99"]
        .into_iter()
        .zip([0.5, 0.99])
        .map(|(label, fraction)| {
            Row::against(
                scenario,
                format!("save → sink {label} ms"),
                ms(percentile(&forwarded, fraction)),
                ms(percentile(&straight, fraction)),
                "Strapi calling the sink",
            )
        })
        .collect())
}

/// A webhook on instance `name` forwarding `events` to a Next.js sink at `url`.
fn forward_webhook(
    name: &str,
    url: &str,
    events: &BTreeSet<String>,
) -> Result<CompiledWebhook, BenchError> {
    let spec: StrapiWebhookSpec = serde_json::from_value(json!({
        "instanceRef": {"name": name},
        "events": events,
        // Room for a burst: the recovery row measures the repair, not the sink's rate limit.
        "sinks": [{
            "name": "site",
            "nextjs": {"url": url, "mode": "Forward"},
            "delivery": {"rateLimit": {"perSecond": 5000, "burst": 5000}, "concurrency": 32},
        }],
        "routes": [{"name": "all", "sink": "site"}],
    }))
    .map_err(|error| BenchError::step("writing the latency webhook", error))?;
    compile_webhook(INSTANCE_NAMESPACE, name, 1, &spec, &InMemorySecrets::new())
        .map_err(|error| BenchError::step("compiling the latency webhook", error))
}

async fn register(
    client: &StrapiClient,
    what: &str,
    url: String,
    headers: BTreeMap<String, String>,
) -> Result<strapi_webhook_operator::strapi::Webhook, BenchError> {
    client
        .create_webhook(&WebhookSpec {
            name: format!("strapi-webhook-operator latency benchmark, {what}"),
            url,
            headers,
            events: vec!["entry.update".into()],
            enabled: true,
        })
        .await
        .map_err(|error| BenchError::step("registering a webhook in Strapi", error))
}

async fn unregister(client: &StrapiClient, id: &str) -> Result<(), BenchError> {
    client
        .delete_webhook(id)
        .await
        .map_err(|error| BenchError::step("removing a webhook from Strapi", error))
}

/// Saves the article `SAVES` times, one after another, each once its call reached the sink;
/// returns the sorted delays from each save returning to its call's arrival.
async fn saves(
    client: &StrapiClient,
    document_id: &str,
    sink: &RecordingSink,
    run: &str,
) -> Result<Vec<Duration>, BenchError> {
    sink.take();
    let mut delays = Vec::with_capacity(SAVES);
    for n in 0..SAVES {
        let revision = format!("{run} {n}");
        client
            .update_document(
                Document::Entry {
                    uid: "api::article.article",
                    document_id,
                },
                &json!({"body": revision}),
            )
            .await
            .map_err(|error| BenchError::step("saving an article", error))?;
        let saved = Instant::now();
        let mut arrival = None;
        while arrival.is_none() {
            if !common::wait_until(Duration::from_secs(10), || sink.count() > 0).await {
                return Err(BenchError::step(
                    "waiting for a save to reach the sink",
                    format!("save {revision:?} did not arrive within 10 s"),
                ));
            }
            arrival = sink.take().into_iter().find(|arrival| {
                serde_json::from_slice::<Value>(&arrival.body)
                    .is_ok_and(|body| body["entry"]["body"] == revision.as_str())
            });
        }
        // Strapi may call the sink before its answer to the save is read: that counts as 0.
        delays.extend(arrival.map(|arrival| arrival.at.saturating_duration_since(saved)));
    }
    delays.sort();
    Ok(delays)
}

/// Item 8: what one gap-repair check of the test app costs: Strapi admin API calls and CPU.
async fn repair_check(
    strapi: &TestStrapi,
    receiver: &InProcessReceiver,
) -> Result<Vec<Row>, BenchError> {
    let client = strapi.client()?;
    let key = format!("{INSTANCE_NAMESPACE}/repair");
    receiver.route(&key, &uuid::Uuid::now_v7().simple().to_string(), Vec::new());
    let events: BTreeSet<String> = [
        "entry.create",
        "entry.update",
        "entry.delete",
        "entry.publish",
    ]
    .map(str::to_owned)
    .into();
    let target = Target {
        instance: &key,
        strapi: &client,
        events: &events,
        models: None,
    };
    let repair_client = RepairClient::new(&receiver.admin_url, Some(&receiver.admin_token));
    let settings = CheckSettings::default();
    let check = || async {
        repair::check(&target, &repair_client, &settings)
            .await
            .map_err(|error| BenchError::step("checking for a gap", error))
    };
    // The first check of an instance sets its watermarks; the second is the steady state.
    check().await?;
    let (cpu_before, started) = (cpu_time()?, Instant::now());
    let report = check().await?;
    let (cpu, wall) = (cpu_time()?.saturating_sub(cpu_before), started.elapsed());
    let scenario = format!(
        "gap repair: one check, test app ({} content types)",
        report.content_types
    );
    Ok(vec![
        Row::against(
            &scenario,
            "Strapi admin API calls",
            f64::from(report.strapi_calls),
            report.content_types as f64,
            "content types",
        ),
        Row::against(
            &scenario,
            "CPU ms (check and receiver)",
            ms(cpu),
            ms(wall),
            "wall ms of the check",
        ),
    ])
}

/// CPU time this process's threads have used.
fn cpu_time() -> Result<Duration, BenchError> {
    Ok(cpu_by_thread("self")?.values().sum())
}

/// Item 9: the time to recover `MISSED` changes Strapi made while the receiver was down: the
/// instance has no webhook registered in Strapi (what a receiver that does not answer looks
/// like to the check), the articles are created, then gap-repair checks run back to back, as a
/// restarted controller would, until every article reached the sink.
async fn recover_missed(
    strapi: &TestStrapi,
    receiver: &InProcessReceiver,
) -> Result<Vec<Row>, BenchError> {
    let client = strapi.client()?;
    let sink = RecordingSink::start().await?;
    let name = "missed";
    let key = format!("{INSTANCE_NAMESPACE}/{name}");
    let events: BTreeSet<String> = ["entry.create".to_owned()].into();
    let webhook = forward_webhook(name, &sink.url(), &events)?;
    receiver.route(
        &key,
        &uuid::Uuid::now_v7().simple().to_string(),
        vec![webhook],
    );
    let target = Target {
        instance: &key,
        strapi: &client,
        events: &events,
        models: None,
    };
    let repair_client = RepairClient::new(&receiver.admin_url, Some(&receiver.admin_token));
    let settings = CheckSettings {
        settle: Duration::from_secs(RECOVERY_SETTLE_S),
        ..CheckSettings::default()
    };
    let check = || async {
        repair::check(&target, &repair_client, &settings)
            .await
            .map_err(|error| BenchError::step("recovering missed changes", error))
    };
    // The watermarks from before the outage.
    check().await?;

    let tag = uuid::Uuid::now_v7().simple().to_string();
    let created = Instant::now();
    let documents: Vec<Result<String, BenchError>> = stream::iter(0..MISSED)
        .map(|n| {
            let (client, title) = (&client, format!("missed {n} {tag}"));
            async move {
                client
                    .create_entry("api::article.article", &json!({"title": title}))
                    .await
                    .map(|entry| entry.document_id)
                    .map_err(|error| BenchError::step("creating an article", error))
            }
        })
        .buffer_unordered(ARTICLES)
        .collect()
        .await;
    let missed: BTreeSet<String> = documents.into_iter().collect::<Result<_, _>>()?;
    let creating = created.elapsed();

    let started = Instant::now();
    let mut arrived = BTreeSet::new();
    while arrived.len() < missed.len() {
        if started.elapsed() > Duration::from_secs(300) {
            return Err(BenchError::step(
                "recovering missed changes",
                format!(
                    "{} of {MISSED} reached the sink within 300 s",
                    arrived.len()
                ),
            ));
        }
        check().await?;
        common::wait_until(Duration::from_secs(1), || sink.count() > 0).await;
        for arrival in sink.take() {
            let Ok(body) = serde_json::from_slice::<Value>(&arrival.body) else {
                continue;
            };
            if let Some(document_id) = body["entry"]["documentId"].as_str()
                && missed.contains(document_id)
            {
                arrived.insert(document_id.to_owned());
            }
        }
    }
    // The test Strapi is private to this run (scripts/with-strapi.sh removes its database), so
    // the thousand articles are left in place rather than deleted one by one.
    Ok(vec![Row::against(
        format!("gap repair: {MISSED} changes made while the receiver was down"),
        "s until all reached the sink",
        started.elapsed().as_secs_f64(),
        creating.as_secs_f64(),
        "s Strapi took to make them",
    )])
}
