//! Shared parts of the receiver tests: loopback capture sinks, a receiver running in-process
//! on loopback ports with its queue in a temporary folder, and Strapi-shaped events.
//!
//! The queue backend is chosen by `SWO_TEST_QUEUE`: unset or `sqlite` for a SQLite file, `nats`
//! for a JetStream server started per test ([`TestStore`]), so the same suite runs against both.

use super::{eventually, nats_server};

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::Path,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    body::Bytes,
    http::{HeaderMap, StatusCode},
    routing::post,
};
use serde_json::{Value, json};
use strapi_webhook_operator::{
    api::StrapiWebhookSpec,
    config::{InMemorySecrets, compile_webhook},
    http::AdminToken,
    queue::{NewDelivery, NewEvent, Queue, RoutedEvent, SinkKey, now_millis, sqlite::Durability},
    receiver::{
        QueueSpec, ReceiverSettings, ReceiverState,
        engine::EngineSettings,
        own_ports, serve,
        source::{ConfigSource, Snapshot, StaticSource},
    },
    sinks::EgressBase,
};
use tokio::{net::TcpListener, sync::oneshot};

/// The instance every test routes through, and its shared secret.
pub const INSTANCE: &str = "cms/strapi";
pub const SECRET: &str = "s3cret-shared-with-strapi";
/// The admin API token of every test receiver; [`client`] sends it.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// The admin API token as the receiver and its clients take it.
pub fn admin_token() -> AdminToken {
    AdminToken::new(ADMIN_TOKEN).unwrap()
}

/// A request a capture sink received.
#[derive(Clone, Debug)]
pub struct Captured {
    /// The `webhook-id` header.
    pub webhook_id: String,
    /// The body as JSON.
    pub body: Value,
}

/// A request a capture sink answered, accepted or not.
#[derive(Clone, Debug)]
pub struct Attempted {
    /// The status it answered.
    pub status: u16,
    /// The `traceparent` header, as sent.
    pub traceparent: Option<String>,
}

/// A loopback HTTP sink that records what it receives and answers with a status that the test
/// can change while it runs; `hang` makes it never answer. Waiters wake on each accepted request.
#[derive(Clone)]
pub struct CaptureSink {
    pub address: SocketAddr,
    received: Arc<Received>,
    attempted: Arc<Mutex<Vec<Attempted>>>,
    answer: Arc<Mutex<Answer>>,
    stop: Arc<Mutex<Option<oneshot::Sender<()>>>>,
}

/// What a sink accepted, kept across restarts, and how many requests that is, for waiters.
#[derive(Default)]
struct Received {
    requests: Mutex<Vec<Captured>>,
    count: tokio::sync::watch::Sender<usize>,
}

#[derive(Clone, Copy, Debug)]
pub enum Answer {
    Status(u16),
    Hang,
}

impl CaptureSink {
    /// Starts a sink on a free loopback port, answering 200.
    pub async fn start() -> Self {
        Self::start_on("127.0.0.1:0".parse().unwrap(), Arc::default()).await
    }

    async fn start_on(address: SocketAddr, received: Arc<Received>) -> Self {
        // On a restart the old listener may still be closing its last connection.
        let listener = rebind(address).await;
        let address = listener.local_addr().unwrap();
        let answer = Arc::new(Mutex::new(Answer::Status(200)));
        let (stop, stopped) = oneshot::channel();
        let sink = Self {
            address,
            received,
            attempted: Arc::default(),
            answer,
            stop: Arc::new(Mutex::new(Some(stop))),
        };
        let app = {
            let sink = sink.clone();
            Router::new().route(
                "/hook",
                post(move |headers: HeaderMap, body: Bytes| {
                    let sink = sink.clone();
                    async move { sink.take(&headers, &body).await }
                }),
            )
        };
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        sink
    }

    async fn take(&self, headers: &HeaderMap, body: &Bytes) -> StatusCode {
        let answer = *self.answer.lock().unwrap();
        match answer {
            Answer::Hang => std::future::pending().await,
            Answer::Status(code) => {
                let status = StatusCode::from_u16(code).unwrap();
                let traceparent = headers
                    .get("traceparent")
                    .map(|value| value.to_str().unwrap().to_owned());
                self.attempted.lock().unwrap().push(Attempted {
                    status: code,
                    traceparent,
                });
                if status.is_success() {
                    let webhook_id = headers
                        .get("webhook-id")
                        .map(|value| value.to_str().unwrap().to_owned())
                        .unwrap_or_default();
                    let body = serde_json::from_slice(body).unwrap_or(Value::Null);
                    let total = {
                        let mut requests = self.received.requests.lock().unwrap();
                        requests.push(Captured { webhook_id, body });
                        requests.len()
                    };
                    self.received.count.send_replace(total);
                }
                status
            }
        }
    }

    /// The URL deliveries go to.
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.address)
    }

    /// Changes the answer to every following request.
    pub fn answer(&self, answer: Answer) {
        *self.answer.lock().unwrap() = answer;
    }

    /// Stops listening; connections are refused until [`CaptureSink::restart`].
    pub fn stop(&self) {
        if let Some(stop) = self.stop.lock().unwrap().take() {
            let _ = stop.send(());
        }
    }

    /// Listens again on the same port, keeping what was received.
    pub async fn restart(&self) -> Self {
        Self::start_on(self.address, Arc::clone(&self.received)).await
    }

    /// Everything accepted so far.
    pub fn received(&self) -> Vec<Captured> {
        self.received.requests.lock().unwrap().clone()
    }

    /// Every request answered since this listener started, oldest first, accepted or not.
    pub fn attempted(&self) -> Vec<Attempted> {
        self.attempted.lock().unwrap().clone()
    }

    /// Waits until `done` holds for what was received, checking on each accepted request, or
    /// panics after `limit`.
    pub async fn wait_for(&self, limit: Duration, done: impl Fn(&[Captured]) -> bool) {
        let mut arrivals = self.received.count.subscribe();
        let held = tokio::time::timeout(limit, async {
            while !done(&self.received()) {
                arrivals.changed().await.expect("the sink's record lives");
            }
        })
        .await;
        assert!(
            held.is_ok(),
            "the sink at {} received {} requests; the condition did not hold within {limit:?}",
            self.address,
            self.received().len()
        );
    }
}

/// A `StrapiWebhook` spec with one HTTP sink per `(name, url)`, each with a route that takes
/// every event, and quick retries so the tests do not wait long.
pub fn webhook_spec(sinks: &[(&str, String)]) -> StrapiWebhookSpec {
    let sink_specs: Vec<Value> = sinks
        .iter()
        .map(|(name, url)| {
            json!({
                "name": name,
                "http": { "url": url },
                "delivery": {
                    "timeout": "2s",
                    "maxAttempts": 100,
                    "backoff": { "initial": "50ms", "max": "400ms" },
                    "rateLimit": { "perSecond": 1000, "burst": 1000 },
                    "concurrency": 8
                }
            })
        })
        .collect();
    let routes: Vec<Value> = sinks
        .iter()
        .map(|(name, _)| json!({ "name": format!("to-{name}"), "sink": name }))
        .collect();
    serde_json::from_value(json!({
        "instanceRef": { "name": "strapi" },
        "events": ["entry.create", "entry.update", "entry.delete", "entry.publish"],
        "sinks": sink_specs,
        "routes": routes,
    }))
    .expect("a valid StrapiWebhook spec")
}

/// A snapshot with the test instance and one webhook `cms/site` built from `spec`.
pub fn snapshot(spec: &StrapiWebhookSpec) -> Snapshot {
    let webhook = compile_webhook("cms", "site", 1, spec, &InMemorySecrets::new())
        .expect("the webhook compiles");
    Snapshot::new(
        BTreeMap::from([(INSTANCE.to_owned(), vec![SECRET.to_owned()])]),
        [webhook],
    )
}

/// A Strapi 5 `entry.create` event for article number `n`.
pub fn article_event(n: usize) -> Value {
    json!({
        "event": "entry.create",
        "createdAt": "2026-11-27T01:00:00.000Z",
        "model": "article",
        "uid": "api::article.article",
        "entry": { "id": n, "documentId": format!("doc{n}"), "title": format!("Article {n}") }
    })
}

/// Where a test's queue lives: a SQLite file in a temporary folder, or a JetStream server of
/// its own (`SWO_TEST_QUEUE=nats`), stopped with the store.
pub struct TestStore {
    pub dir: tempfile::TempDir,
    pub nats: Option<nats_server::NatsServer>,
}

impl TestStore {
    /// A fresh, empty store of the backend `SWO_TEST_QUEUE` names.
    pub fn start() -> Self {
        let nats = match std::env::var("SWO_TEST_QUEUE").as_deref() {
            Ok("nats") => Some(nats_server::NatsServer::start()),
            Ok("sqlite") | Err(_) => None,
            Ok(other) => panic!("SWO_TEST_QUEUE={other}: expected sqlite or nats"),
        };
        Self {
            dir: tempfile::tempdir().unwrap(),
            nats,
        }
    }

    /// The receiver's `--queue` value.
    pub fn spec(&self) -> String {
        match &self.nats {
            Some(server) => server.url(),
            None => format!("sqlite:{}", self.dir.path().join("queue.db").display()),
        }
    }

    /// Opens the queue in this process.
    pub async fn open(&self) -> Arc<dyn Queue> {
        let spec: QueueSpec = self.spec().parse().unwrap();
        spec.open(Durability::default()).await.unwrap()
    }
}

/// A receiver serving on loopback ports, with its queue in a temporary folder (or on a queue
/// the test shares between several receivers), routing with the configuration `source` gives.
pub struct TestReceiver<S = StaticSource> {
    pub ingest: SocketAddr,
    pub admin: SocketAddr,
    pub state: Arc<ReceiverState>,
    pub source: Arc<S>,
    stop: Option<oneshot::Sender<()>>,
    served: tokio::task::JoinHandle<()>,
    _store: Option<TestStore>,
}

impl TestReceiver {
    /// Starts a receiver routing with `snapshot`, which the test can replace through
    /// [`TestReceiver::source`].
    pub async fn start(snapshot: Snapshot) -> Self {
        let store = TestStore::start();
        let queue = store.open().await;
        Self::start_on(store, queue, snapshot).await
    }

    /// Stops it the way SIGTERM does, keeping what it needs to come back as a restarted pod
    /// would: the same ports, queue and configuration.
    pub async fn stop_for_restart(self) -> StoppedReceiver {
        let (ingest, admin) = (self.ingest, self.admin);
        let snapshot = self.source.snapshots().borrow().as_ref().clone();
        let store = self
            .stop()
            .await
            .expect("a receiver started on its own store");
        StoppedReceiver {
            store,
            snapshot,
            ingest,
            admin,
        }
    }

    /// Starts a receiver on a store the test has already opened (and perhaps filled).
    pub async fn start_on(store: TestStore, queue: Arc<dyn Queue>, snapshot: Snapshot) -> Self {
        Self::start_with_settings(store, queue, snapshot, Self::settings()).await
    }

    /// Starts a receiver with the given settings.
    pub async fn start_with_settings(
        store: TestStore,
        queue: Arc<dyn Queue>,
        snapshot: Snapshot,
        settings: ReceiverSettings,
    ) -> Self {
        let source = Arc::new(StaticSource::new(snapshot));
        let (ingest, admin) = (bind_loopback().await, bind_loopback().await);
        Self::launch(queue, Some(store), source, settings, ingest, admin).await
    }

    /// The settings test receivers use: quick shutdown and sweeps, sinks on loopback allowed
    /// (every test sink is a loopback server; the receiver's own ports stay refused) and the
    /// test admin token.
    pub fn settings() -> ReceiverSettings {
        ReceiverSettings {
            engine: EngineSettings {
                shutdown_grace: Duration::from_secs(1),
                sweep_interval: Duration::from_secs(1),
                ..EngineSettings::default()
            },
            egress: EgressBase {
                allow_loopback: true,
                own_ports: Vec::new(),
                own_addresses: Vec::new(),
            },
            admin_token: Some(admin_token()),
            ..ReceiverSettings::default()
        }
    }
}

impl<S: ConfigSource> TestReceiver<S> {
    /// Starts a receiver on the queue `queue` (a `--queue` value; `store` is kept until the
    /// receiver is dropped) with its configuration from `source`.
    pub async fn start_with(queue: &str, store: Option<TestStore>, source: Arc<S>) -> Self {
        let spec: QueueSpec = queue.parse().unwrap();
        let queue = spec.open(Durability::default()).await.unwrap();
        let settings = TestReceiver::<StaticSource>::settings();
        let (ingest, admin) = (bind_loopback().await, bind_loopback().await);
        Self::launch(queue, store, source, settings, ingest, admin).await
    }

    async fn launch(
        queue: Arc<dyn Queue>,
        store: Option<TestStore>,
        source: Arc<S>,
        mut settings: ReceiverSettings,
        ingest: TcpListener,
        admin: TcpListener,
    ) -> Self {
        settings.egress.own_ports.extend(own_ports(&ingest, &admin));
        install_tenant_processes();
        let state = ReceiverState::new(queue, source.as_ref(), settings).unwrap();
        let (ingest_addr, admin_addr) = (ingest.local_addr().unwrap(), admin.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let served = tokio::spawn(serve(Arc::clone(&state), ingest, admin, async move {
            let _ = stopped.await;
        }));
        let served = tokio::spawn(async move { served.await.unwrap().unwrap() });
        Self {
            ingest: ingest_addr,
            admin: admin_addr,
            state,
            source,
            stop: Some(stop),
            served,
            _store: store,
        }
    }

    /// The files of a SQLite queue (the database, its WAL and shared memory); none for NATS.
    pub fn queue_files(&self) -> Vec<std::path::PathBuf> {
        let Some(store) = self._store.as_ref().filter(|store| store.nats.is_none()) else {
            return Vec::new();
        };
        let db = store.dir.path().join("queue.db");
        ["", "-wal", "-shm"]
            .iter()
            .map(|suffix| db.with_file_name(format!("queue.db{suffix}")))
            .collect()
    }

    /// The admin port's base URL.
    pub fn admin_url(&self) -> String {
        format!("http://{}", self.admin)
    }

    /// `GET path` on the admin port with the test admin token, read as `T` (a JSON `Value` or
    /// an `admin_api` type, e.g. `/v1/stats` as `Stats`). An answer that is not a 2xx with such
    /// a body fails the test, saying which.
    pub async fn admin_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> T {
        self.admin_get(path)
            .await
            .json()
            .await
            .unwrap_or_else(|error| panic!("GET {path}: {error}"))
    }

    /// The exposition text of `/metrics` (which needs no token).
    pub async fn metrics(&self) -> String {
        self.admin_get("/metrics")
            .await
            .text()
            .await
            .unwrap_or_else(|error| panic!("GET /metrics: {error}"))
    }

    /// `GET path` on the admin port with the test admin token; anything but a 2xx fails the test.
    async fn admin_get(&self, path: &str) -> reqwest::Response {
        let response = client()
            .get(format!("{}{path}", self.admin_url()))
            .send()
            .await
            .unwrap_or_else(|error| panic!("GET {path}: {error}"));
        let status = response.status();
        assert!(status.is_success(), "GET {path} answered {status}");
        response
    }

    /// Posts an event the way Strapi does; returns the status.
    pub async fn post(&self, client: &reqwest::Client, event: &Value) -> StatusCode {
        let url = format!("http://{}/v1/instances/{INSTANCE}", self.ingest);
        let response = client
            .post(url)
            .header("content-type", "application/json")
            .header("x-strapi-webhook-secret", SECRET)
            .body(event.to_string())
            .send()
            .await
            .expect("the receiver answers");
        StatusCode::from_u16(response.status().as_u16()).unwrap()
    }

    /// Stops the receiver the way SIGTERM does and waits for it.
    pub async fn shutdown(self) {
        self.stop().await;
    }

    /// Stops the receiver and hands back its queue (if it had its own).
    pub async fn stop(mut self) -> Option<TestStore> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.served).await.unwrap();
        self._store
    }
}

/// A [`TestReceiver`] stopped by [`TestReceiver::stop_for_restart`].
pub struct StoppedReceiver {
    store: TestStore,
    snapshot: Snapshot,
    ingest: SocketAddr,
    admin: SocketAddr,
}

impl StoppedReceiver {
    /// Its ingest port, bound again for something else to answer on while it is stopped (drop
    /// that listener before [`StoppedReceiver::start`]).
    pub async fn bind_ingest(&self) -> TcpListener {
        rebind(self.ingest).await
    }

    /// Starts it again on the same ports and queue.
    pub async fn start(self) -> TestReceiver {
        let (ingest, admin) = (rebind(self.ingest).await, rebind(self.admin).await);
        let queue = self.store.open().await;
        let source = Arc::new(StaticSource::new(self.snapshot));
        let settings = TestReceiver::settings();
        TestReceiver::launch(queue, Some(self.store), source, settings, ingest, admin).await
    }
}

/// Binds `address` again; the previous listener may still be closing its last connection.
async fn rebind(address: SocketAddr) -> TcpListener {
    eventually(Duration::from_secs(5), || async move {
        TcpListener::bind(address)
            .await
            .map_err(|error| format!("binding {address}: {error}"))
    })
    .await
}

/// A listener on a free loopback port.
async fn bind_loopback() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").await.unwrap()
}

/// An HTTP client for the tests, sending the test receivers' admin token (which the ingest
/// port ignores).
pub fn client() -> reqwest::Client {
    strapi_webhook_operator::http::client_builder()
        .default_headers(admin_token().authorization())
        .build()
        .expect("an HTTP client")
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Local-mode manifests: the test instance and webhook `cms/site` with one HTTP sink `crm`
/// taking every `entry.create`.
pub fn manifests(sink_url: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Secret
metadata: {{ name: strapi-strapi-webhook-secret, namespace: cms }}
stringData: {{ secret: {SECRET} }}
---
apiVersion: webhooks.strapi-operator.dev/v1alpha1
kind: StrapiInstance
metadata: {{ name: strapi, namespace: cms }}
spec:
  url: http://127.0.0.1:1337
  auth: {{ apiToken: {{ name: strapi-admin, key: token }} }}
---
apiVersion: webhooks.strapi-operator.dev/v1alpha1
kind: StrapiWebhook
metadata: {{ name: site, namespace: cms, generation: 1 }}
spec:
  instanceRef: {{ name: strapi }}
  events: [entry.create]
  sinks:
    - name: crm
      http: {{ url: "{sink_url}" }}
      delivery:
        backoff: {{ initial: 50ms, max: 500ms }}
        rateLimit: {{ perSecond: 10000, burst: 1000 }}
        concurrency: 16
  routes:
    - {{ name: all, sink: crm }}
"#
    )
}

/// A child process that is killed when dropped, so a failing test leaves no receiver behind
/// (holding its ports and the test runner's output pipe).
pub struct KillOnDrop(pub Child);

impl std::ops::Deref for KillOnDrop {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The real receiver binary in local mode, reading `manifests.yaml` from `dir`.
pub struct BinaryReceiver {
    pub child: KillOnDrop,
    pub ingest: String,
    pub admin: String,
}

impl BinaryReceiver {
    /// Starts it on free ports with `--queue=<queue>` and waits until it is ready.
    pub async fn start(dir: &Path, queue: &str) -> Self {
        let ingest = format!("127.0.0.1:{}", free_port());
        let admin = format!("127.0.0.1:{}", free_port());
        Self::start_on(dir, queue, ingest, admin).await
    }

    /// Starts it on the given addresses (a restart on the same ports).
    pub async fn start_on(dir: &Path, queue: &str, ingest: String, admin: String) -> Self {
        let command = Command::new(env!("CARGO_BIN_EXE_strapi-webhook-operator"));
        Self::start_command(command, dir, queue, ingest, admin).await
    }

    /// Starts it with a soft open-files limit of `files`, as a default `ulimit -n` would.
    pub async fn start_with_open_files(dir: &Path, queue: &str, files: u32) -> Self {
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(format!("ulimit -S -n {files} && exec \"$0\" \"$@\""))
            .arg(env!("CARGO_BIN_EXE_strapi-webhook-operator"));
        let ingest = format!("127.0.0.1:{}", free_port());
        let admin = format!("127.0.0.1:{}", free_port());
        Self::start_command(command, dir, queue, ingest, admin).await
    }

    async fn start_command(
        mut command: Command,
        dir: &Path,
        queue: &str,
        ingest: String,
        admin: String,
    ) -> Self {
        let child = command
            .args(["receiver", "--ingest-addr", &ingest, "--admin-addr", &admin])
            .arg(format!("--queue={queue}"))
            .arg(format!(
                "--config-source=file:{}",
                dir.join("manifests.yaml").display()
            ))
            .arg("--allow-loopback-sinks")
            .env("RECEIVER_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .map(KillOnDrop)
            .expect("starting the receiver binary");
        let mut receiver = Self {
            child,
            ingest,
            admin,
        };
        let http = client();
        let ready = format!("http://{}/readyz", receiver.admin);
        eventually(Duration::from_secs(30), || {
            let exited = receiver.child.try_wait();
            let answer = http.get(&ready).send();
            let ready = ready.clone();
            async move {
                if let Ok(Some(status)) = exited {
                    panic!("the receiver exited before it was ready: {status}");
                }
                match answer.await {
                    Ok(response) if response.status().is_success() => Ok(()),
                    Ok(response) => Err(format!("{ready} answered {}", response.status())),
                    Err(error) => Err(format!("{ready}: {error}")),
                }
            }
        })
        .await;
        receiver
    }
}

/// Runs filters and templates in tenant processes of the operator's binary, as the receiver
/// binary does (`--tenant-memory-mib`, default limits), so every test receiver is isolated the
/// way a deployed one is.
pub fn install_tenant_processes() {
    strapi_webhook_operator::routing::sandbox::install(
        env!("CARGO_BIN_EXE_strapi-webhook-operator").into(),
        strapi_webhook_operator::routing::sandbox::Limits::default(),
    );
}

/// An event of the test instance as ingest hands it to the queue: `raw` is Strapi's body, received
/// now, with no dedup key and no document versions.
pub fn new_event(id: &str, event: &str, raw: &Value) -> NewEvent {
    NewEvent {
        id: id.into(),
        instance: INSTANCE.into(),
        event: event.into(),
        received_at: now_millis(),
        raw: raw.to_string().into_bytes(),
        dedup_key: None,
        dedup_window_ms: 0,
        recovered: false,
        versions: Vec::new(),
        deliveries: None,
    }
}

/// Stores one article event in `queue` and routes it to one delivery `delivery_id` of `sink`, as
/// ingest and the router do, for tests that drive the queue's claims themselves.
pub async fn store_routed_delivery(
    queue: &dyn Queue,
    event_id: &str,
    delivery_id: &str,
    sink: &SinkKey,
) {
    queue
        .ingest(new_event(event_id, "entry.create", &article_event(1)))
        .await
        .unwrap();
    let unrouted = queue.unrouted(10).await.unwrap();
    assert_eq!(unrouted.len(), 1, "one event waits for routing");
    queue
        .route(vec![RoutedEvent {
            event: unrouted.into_iter().next().unwrap(),
            deliveries: vec![NewDelivery {
                id: delivery_id.into(),
                sink: sink.clone(),
                route: "all".into(),
                dead_on_arrival: None,
            }],
        }])
        .await
        .unwrap();
}
