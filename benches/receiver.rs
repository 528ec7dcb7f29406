//! Receiver benchmarks (issue 9, items 1–4), each against a baseline from the same run:
//!
//! 1. ingest ceiling: `wrk` against the real receiver binary (auth, parse, durable store, answer)
//!    and against a bare axum server answering 200 to the same request, same connections; once
//!    with `--queue-durability full` (the default) and once with `normal`;
//! 2. added latency: Strapi-shaped POSTs at a steady 500/s through the receiver to a loopback
//!    Next.js sink in `Forward` mode, against the same POSTs sent straight to that sink;
//! 3. coalescing: 10,000 `entry.update` events for one model into a `Revalidate` sink: calls
//!    that reach the sink, tags and paths covered, worst freshness delay against the window;
//! 4. memory: the receiver's RSS idle (configured from a manifest file, and from a Kubernetes
//!    API server as in a cluster), at its peak during the ingest run, and with 100,000 events
//!    queued for a sink that is down;
//! 5. bounded evaluation: ingest and delivery throughput of a normal webhook beside a hostile
//!    one (a CEL filter near its budget, a CPU-bomb template), against the normal one alone.
//!
//! The receiver runs as its own process (the release binary Cargo built for this bench) so its
//! memory is its own; the load generators and sinks run in this process. Sections can be run on
//! their own: `cargo bench --bench receiver -- jetstream coalescing` (see [`Sections::ALL`]), and
//! another build of the receiver measured with `SWO_BENCH_RECEIVER=<binary>`.

mod common;
// The tests' in-memory API server, for the receiver as it runs in a cluster; the bench uses
// only its serving half.
#[allow(dead_code)]
#[path = "../tests/support/fake_api.rs"]
mod fake_api;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{Router, body::Bytes, http::StatusCode, routing::post};
use common::{BenchError, RecordingSink, Row, cpu_by_thread, ms, percentile, publish, rss_mib};
use fake_api::{FakeApi, path_of};

use futures::{StreamExt, stream};
use serde_json::{Value, json};
use strapi_webhook_operator::{api::shared_secret, event::SECRET_HEADER};

const API_VERSION: &str = "webhooks.strapi-operator.dev/v1alpha1";
const NAMESPACE: &str = "bench";
const INSTANCE: &str = "cms";
const SECRET: &str = "bench-shared-secret";
/// Connections `wrk` keeps open, for the receiver and the bare server alike.
const CONNECTIONS: usize = 32;
const WRK_SECONDS: u64 = 8;
const STEADY_RATE: u64 = 500;
const STEADY_EVENTS: u64 = 3_000;
const COALESCE_EVENTS: usize = 10_000;
const COALESCE_WINDOW_MS: f64 = 250.0;
// A filter every event passes: routing then runs tenant code, off the ingest path.
const COALESCE_FILTER: &str = "entry.slug != ''";
const QUEUED_EVENTS: usize = 100_000;
/// Events sent to measure delivery throughput beside a hostile webhook.
const ISOLATION_EVENTS: usize = 2_000;

fn main() -> Result<(), BenchError> {
    let runtime = tokio::runtime::Runtime::new().map_err(BenchError::setup("the runtime"))?;
    runtime.block_on(run())
}

async fn run() -> Result<(), BenchError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let sections = Sections::from_args();
    let client = reqwest::Client::new();
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    let down = format!("http://127.0.0.1:{}/down", free_port()?);

    if sections.wants("ingest") || sections.wants("jetstream") {
        ingest(&sections, &down, &mut rows, &mut notes).await?;
    }
    if sections.wants("latency") {
        rows.extend(added_latency(&client).await?);
    }
    if sections.wants("coalescing") {
        rows.extend(coalescing(&client, None).await?);
        rows.extend(coalescing(&client, Some(COALESCE_FILTER)).await?);
        notes.push(format!(
            "Coalescing: {COALESCE_EVENTS} `entry.update` of distinct articles, {CONNECTIONS} at \
             a time, into a `Revalidate` sink with the default delivery policy (10/s, burst 20, \
             4 at once) and coalesceWindow {COALESCE_WINDOW_MS} ms; tags `{{{{ model }}}}`, \
             paths `/articles` and `/articles/{{{{ entry.slug }}}}`. Freshness delay: from the \
             ack of an event to the arrival of the first call that revalidates its path. \
             \"filtered route\": the same route with the filter `{COALESCE_FILTER}`, so the \
             router (not ingest) routes each event, running the filter as tenant code."
        ));
    }
    if sections.wants("bounded") {
        rows.extend(bounded_evaluation(&client).await?);
        notes.push(format!(
            "Bounded evaluation: a normal webhook (an HTTP sink whose body is a template) alone, \
             then beside a hostile one on the same instance (a CEL filter near the cost budget \
             and a CPU-bomb template, stopped by minijinja fuel and the 1 s render limit, each \
             to its own sink). Ingest: `wrk` as above. Delivery: {ISOLATION_EVENTS} events sent \
             {CONNECTIONS} at a time, deliveries/s = events ÷ time until the normal sink had \
             them all. Each measurement on a fresh receiver."
        ));
    }
    if sections.wants("memory") {
        rows.extend(queued_memory(&client, &down).await?);
    }
    publish("receiver", &rows, &notes)
}

/// Which parts of this bench run: every part, or those named on the command line
/// (`cargo bench --bench receiver -- coalescing memory`), to measure one change quickly.
struct Sections(Vec<String>);

impl Sections {
    const ALL: [&str; 6] = [
        "ingest",
        "jetstream",
        "latency",
        "coalescing",
        "bounded",
        "memory",
    ];

    /// Cargo passes `--bench` (and its own flags) too; only bare words name sections.
    fn from_args() -> Self {
        let named: Vec<String> = std::env::args()
            .skip(1)
            .filter(|arg| !arg.starts_with('-'))
            .collect();
        for name in &named {
            assert!(
                Self::ALL.contains(&name.as_str()),
                "unknown section {name:?}; the sections are {:?}",
                Self::ALL
            );
        }
        Self(named)
    }

    fn wants(&self, section: &str) -> bool {
        self.0.is_empty() || self.0.iter().any(|name| name == section)
    }
}

/// Item 1 (and 4's idle and peak RSS): the ingest ceiling on SQLite and on JetStream.
async fn ingest(
    sections: &Sections,
    down: &str,
    rows: &mut Vec<Row>,
    notes: &mut Vec<String>,
) -> Result<(), BenchError> {
    let bare = BareServer::start().await?;
    // The bare server runs in this process, which does nothing else meanwhile.
    let before = cpu_by_thread("self")?;
    let baseline = wrk(&bare.url(), &article_update(1))?;
    let bare_cpu = cpu_used(&before, &cpu_by_thread("self")?);
    let bare_us = micros_per_request(bare_cpu.values().sum(), &baseline);
    rows.push(Row::plain(
        "ingest: bare axum 200",
        "events/s (baseline)",
        baseline.per_second,
    ));
    rows.push(Row::plain(
        "ingest: bare axum 200",
        "CPU µs per request (baseline)",
        bare_us,
    ));
    if sections.wants("ingest") {
        sqlite_ingest(down, &baseline, bare_us, rows).await?;
    }
    if sections.wants("jetstream") {
        // The same ingest run on NATS JetStream (issue 10's backend for several replicas).
        let nats = NatsServer::start().await?;
        let receiver =
            Receiver::start(&[http_webhook(down)], &Queue::JetStream(nats.url())).await?;
        let same = wrk(&receiver.ingest_url(), &article_update(1))?;
        let distinct = wrk_distinct(&receiver.ingest_url())?;
        drop(receiver);
        drop(nats);
        for (scenario, result) in [
            ("ingest: receiver, NATS JetStream (1 replica)", same),
            (
                "ingest: receiver, NATS JetStream (1 replica), distinct documents",
                distinct,
            ),
        ] {
            push_wrk_rows(rows, scenario, &result, &baseline);
        }
        notes.push(
            "JetStream: one local `nats-server -js` with file storage; an ack follows \
             JetStream's publish ack, which (unlike SQLite `full`) does not wait for an fsync."
                .to_owned(),
        );
    }
    notes.push(format!(
        "Ingest: `wrk -t2 -c{CONNECTIONS} -d{WRK_SECONDS}s`, one Strapi-shaped `entry.update` \
         (~350 bytes) per request; the receiver stores each event and one delivery (its sink is \
         down, so delivery work stays out of the way). Bare: axum, same route, answers 200."
    ));
    Ok(())
}

/// The SQLite ingest rows, with both durabilities, and the receiver's idle and peak RSS.
async fn sqlite_ingest(
    down: &str,
    baseline: &WrkResult,
    bare_us: f64,
    rows: &mut Vec<Row>,
) -> Result<(), BenchError> {
    let mut full_rate = 0.0;
    for durability in ["full", "normal"] {
        let receiver = Receiver::start(&[http_webhook(down)], &Queue::Sqlite(durability)).await?;
        let (idle, _) = rss_mib(receiver.pid())?;
        let pid = receiver.pid().to_string();
        let before = cpu_by_thread(&pid)?;
        let result = wrk(&receiver.ingest_url(), &article_update(1))?;
        let cpu = cpu_used(&before, &cpu_by_thread(&pid)?);
        let (_, peak) = rss_mib(receiver.pid())?;
        let scenario = format!("ingest: receiver, durability {durability}");
        push_wrk_rows(rows, &scenario, &result, baseline);
        if durability == "full" {
            push_cpu_rows(rows, &scenario, &cpu, &result, bare_us);
            full_rate = result.per_second;
            let distinct = wrk_distinct(&receiver.ingest_url())?;
            push_wrk_rows(
                rows,
                "ingest: receiver, durability full, distinct documents",
                &distinct,
                baseline,
            );
            rows.push(Row::against(
                "receiver memory",
                "peak RSS during ingest MiB",
                peak,
                idle,
                "idle",
            ));
        } else {
            rows.push(Row::against(
                "what durability costs",
                "events/s full ÷ normal",
                full_rate,
                result.per_second,
                "normal",
            ));
        }
    }
    Ok(())
}

/// A `wrk` run's rate and ack latencies against the bare server's.
fn push_wrk_rows(rows: &mut Vec<Row>, scenario: &str, result: &WrkResult, bare: &WrkResult) {
    for (metric, value, baseline) in [
        ("events/s", result.per_second, bare.per_second),
        ("ack p50 ms", result.p50_ms, bare.p50_ms),
        ("ack p99 ms", result.p99_ms, bare.p99_ms),
    ] {
        rows.push(Row::against(scenario, metric, value, baseline, "bare"));
    }
}

/// Where an ingested event's CPU time goes: every thread of the receiver against the bare
/// server's CPU per request, then the SQLite writer thread and the HTTP workers alone.
fn push_cpu_rows(
    rows: &mut Vec<Row>,
    scenario: &str,
    cpu: &BTreeMap<String, Duration>,
    result: &WrkResult,
    bare_us: f64,
) {
    let total = micros_per_request(cpu.values().sum(), result);
    rows.push(Row::against(
        scenario,
        "CPU µs per event",
        total,
        bare_us,
        "bare",
    ));
    for (thread, part) in [
        ("queue-writer", "SQLite writer"),
        ("tokio-rt-worker", "HTTP workers"),
    ] {
        let used = cpu.get(thread).copied().unwrap_or_default();
        rows.push(Row::plain(
            scenario,
            format!("CPU µs per event, {part}"),
            micros_per_request(used, result),
        ));
    }
}

/// The CPU time each thread name used between two `cpu_by_thread` readings.
pub fn cpu_used(
    before: &BTreeMap<String, Duration>,
    after: &BTreeMap<String, Duration>,
) -> BTreeMap<String, Duration> {
    after
        .iter()
        .map(|(name, total)| {
            let earlier = before.get(name).copied().unwrap_or_default();
            (name.clone(), total.saturating_sub(earlier))
        })
        .collect()
}

/// CPU time per request of a `wrk` run, in microseconds.
fn micros_per_request(cpu: Duration, result: &WrkResult) -> f64 {
    cpu.as_secs_f64() * 1e6 / result.requests.max(1.0)
}

/// Item 2: added latency at a steady rate.
async fn added_latency(client: &reqwest::Client) -> Result<Vec<Row>, BenchError> {
    let sink = RecordingSink::start().await?;
    let direct = steady(client, &sink.url()).await?;
    let direct_latency = latencies(&direct, &sink).await?;
    let receiver = Receiver::start(&[forward_webhook(&sink.url())], &Queue::Sqlite("full")).await?;
    let forwarded = steady(client, &receiver.ingest_url()).await?;
    let forwarded_latency = latencies(&forwarded, &sink).await?;
    drop(receiver);
    Ok([("p50", 0.5), ("p99", 0.99)]
        .into_iter()
        .map(|(label, fraction)| {
            Row::against(
                format!("added latency @ {STEADY_RATE}/s, Forward"),
                format!("POST → sink {label} ms"),
                ms(percentile(&forwarded_latency, fraction)),
                ms(percentile(&direct_latency, fraction)),
                "direct to sink",
            )
        })
        .collect())
}

/// A Strapi 5 `entry.update` of article `n`, as Strapi sends it.
fn article_update(n: usize) -> Value {
    json!({
        "event": "entry.update",
        "createdAt": "2026-11-27T01:00:00.000Z",
        "model": "article",
        "uid": "api::article.article",
        "entry": {
            "id": n,
            "documentId": format!("doc{n:08}"),
            "title": format!("Article {n}"),
            "slug": format!("article-{n}"),
            "locale": "en",
            "updatedAt": "2026-11-27T01:00:00.000Z",
            "publishedAt": null
        }
    })
}

fn webhook(name: &str, sink: Value, route: Value) -> Value {
    json!({
        "apiVersion": API_VERSION,
        "kind": "StrapiWebhook",
        "metadata": {"name": name, "namespace": NAMESPACE, "generation": 1},
        "spec": {
            "instanceRef": {"name": INSTANCE},
            "events": ["entry.update"],
            "sinks": [sink],
            "routes": [route],
        }
    })
}

/// The instance's shared secret, as the controller writes it.
fn shared_secret_object() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": shared_secret::name(INSTANCE), "namespace": NAMESPACE},
        "stringData": {shared_secret::CURRENT_KEY: SECRET}
    })
}

/// The one Strapi instance every webhook of the bench belongs to.
fn instance_object() -> Value {
    json!({
        "apiVersion": API_VERSION,
        "kind": "StrapiInstance",
        "metadata": {"name": INSTANCE, "namespace": NAMESPACE, "generation": 1},
        "spec": {
            "url": "http://127.0.0.1:1337",
            "auth": {"credentials": {"secretName": "strapi-admin"}}
        }
    })
}

/// Every event to an HTTP sink at `url`.
fn http_webhook(url: &str) -> Value {
    webhook(
        "to-http",
        json!({"name": "http", "http": {"url": url}}),
        json!({"name": "all", "sink": "http"}),
    )
}

/// Articles to a Next.js sink in `Forward` mode, with room for the steady rate.
fn forward_webhook(url: &str) -> Value {
    webhook(
        "forward",
        json!({
            "name": "site",
            "nextjs": {"url": url, "mode": "Forward"},
            "delivery": {"rateLimit": {"perSecond": 5000, "burst": 5000}, "concurrency": 32}
        }),
        json!({"name": "articles", "sink": "site", "match": {"models": ["article"]}}),
    )
}

/// Articles (those `filter` takes, if any) to a Next.js sink in `Revalidate` mode with the
/// default delivery policy.
fn revalidate_webhook(url: &str, filter: Option<&str>) -> Value {
    let mut route = json!({
        "name": "articles",
        "sink": "site",
        "match": {"models": ["article"]},
        "nextjs": {
            "tags": ["{{ model }}"],
            "paths": [{"path": "/articles"}, {"path": "/articles/{{ entry.slug }}"}]
        }
    });
    if let Some(filter) = filter {
        route["filter"] = json!(filter);
    }
    webhook(
        "revalidate",
        json!({
            "name": "site",
            "nextjs": {
                "url": url,
                "mode": "Revalidate",
                "coalesceWindow": format!("{COALESCE_WINDOW_MS}ms")
            }
        }),
        route,
    )
}

/// Every article to an HTTP sink at `url` with a templated body, with room for a high rate.
fn templated_webhook(url: &str) -> Value {
    webhook(
        "normal",
        json!({
            "name": "http",
            "http": {"url": url},
            "delivery": {"rateLimit": {"perSecond": 5000, "burst": 5000}, "concurrency": 32}
        }),
        json!({
            "name": "articles",
            "sink": "http",
            "http": {"body": "{\"slug\": {{ entry.slug | tojson }}, \"model\": {{ model | tojson }}}"}
        }),
    )
}

/// A tenant's hostile webhook that still compiles (as in `tests/receiver_isolation.rs`): a
/// filter near the CEL cost budget on every event, and a CPU-bomb template that runs until its
/// fuel or the render time limit stops it.
fn hostile_webhook(url: &str) -> Value {
    let cpu = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}{}";
    let list = format!("[{}]", vec!["1"; 100].join(", "));
    let heavy_filter = format!("{list}.all(uid, {list}.exists(media, uid == media))");
    webhook(
        "hostile",
        json!({"name": "bomb", "http": {"url": url}}),
        json!({"name": "bomb", "sink": "bomb", "filter": heavy_filter, "http": {"body": cpu}}),
    )
}

/// Where a bench receiver keeps its queue.
enum Queue {
    /// SQLite in the receiver's folder, with this `--queue-durability`.
    Sqlite(&'static str),
    /// NATS JetStream at this `nats://` URL.
    JetStream(String),
}

/// A `nats-server -js` on a free loopback port with its store in a temporary folder, for the
/// JetStream ingest row. The binary comes from `NATS_SERVER` (set by `scripts/bench.sh` from
/// `scripts/ensure-nats.sh`). Killed when dropped.
struct NatsServer {
    child: Child,
    port: u16,
    _store: tempfile::TempDir,
}

impl NatsServer {
    async fn start() -> Result<Self, BenchError> {
        let binary = std::env::var("NATS_SERVER").map_err(|_| {
            BenchError::step(
                "starting nats-server",
                "NATS_SERVER is not set; run the bench through scripts/bench.sh".to_owned(),
            )
        })?;
        let store = tempfile::tempdir().map_err(BenchError::setup("the JetStream store"))?;
        let port = free_port()?;
        let child = Command::new(binary)
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(store.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(BenchError::setup("the nats-server process"))?;
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Ok(Self {
                    child,
                    port,
                    _store: store,
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(BenchError::step(
            "starting nats-server",
            format!("port {port} not open after 10 s"),
        ))
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The receiver binary of this build, serving one instance with `webhooks` from a manifest
/// file, its queue in a temporary folder. Killed when dropped.
struct Receiver {
    child: Child,
    ingest: u16,
    _dir: tempfile::TempDir,
}

impl Receiver {
    async fn start(webhooks: &[Value], queue: &Queue) -> Result<Self, BenchError> {
        let dir = tempfile::tempdir().map_err(BenchError::setup("the receiver's folder"))?;
        let documents = [shared_secret_object(), instance_object()];
        // YAML is a superset of JSON, so each document is written as JSON.
        let manifest: Vec<String> = documents
            .iter()
            .chain(webhooks)
            .map(Value::to_string)
            .collect();
        let manifest_path = dir.path().join("manifest.yaml");
        std::fs::write(&manifest_path, manifest.join("\n---\n"))
            .map_err(BenchError::setup("the receiver's manifest"))?;
        let source = format!("--config-source=file:{}", manifest_path.display());
        Self::spawn(dir, queue, &source, None).await
    }

    /// The same receiver with its configuration from a Kubernetes API server (the tests'
    /// in-memory one, served by this process), as it runs in a cluster: the manifest file's
    /// admission checks (YAML, schema, CEL) are the API server's there, not the receiver's.
    async fn start_in_cluster(webhooks: &[Value], queue: &Queue) -> Result<Self, BenchError> {
        let dir = tempfile::tempdir().map_err(BenchError::setup("the receiver's folder"))?;
        let api = FakeApi::default();
        api.put_labelled_secret(
            NAMESPACE,
            &shared_secret::name(INSTANCE),
            &[(shared_secret::INSTANCE_LABEL, INSTANCE)],
            &[(shared_secret::CURRENT_KEY, SECRET)],
        );
        for object in std::iter::once(instance_object()).chain(webhooks.iter().cloned()) {
            let plural = match object["kind"].as_str() {
                Some("StrapiInstance") => "strapiinstances",
                _ => "strapiwebhooks",
            };
            let name = object["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            api.put(&path_of(API_VERSION, plural, NAMESPACE, &name), object);
        }
        let server = api.serve_loopback().await;
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(&kubeconfig, fake_api::kubeconfig(&server))
            .map_err(BenchError::setup("the receiver's kubeconfig"))?;
        Self::spawn(dir, queue, "--config-source=kubernetes", Some(&kubeconfig)).await
    }

    /// Starts the receiver binary with its configuration `source` (and `kubeconfig`, if it
    /// watches a cluster) and its queue in `dir`; waits until it is ready.
    async fn spawn(
        dir: tempfile::TempDir,
        queue: &Queue,
        source: &str,
        kubeconfig: Option<&std::path::Path>,
    ) -> Result<Self, BenchError> {
        let (ingest, admin) = (free_port()?, free_port()?);
        let log = std::fs::File::create(dir.path().join("receiver.log"))
            .map_err(BenchError::setup("the receiver's log"))?;
        let queue_args = match queue {
            Queue::Sqlite(durability) => vec![
                format!("--queue=sqlite:{}", dir.path().join("queue.db").display()),
                format!("--queue-durability={durability}"),
            ],
            Queue::JetStream(url) => vec![format!("--queue={url}")],
        };
        let mut command = Command::new(receiver_binary());
        if let Some(kubeconfig) = kubeconfig {
            command.env("KUBECONFIG", kubeconfig);
        }
        let child = command
            .arg("receiver")
            .arg(source)
            .args(queue_args)
            .arg(format!("--ingest-addr=127.0.0.1:{ingest}"))
            .arg(format!("--admin-addr=127.0.0.1:{admin}"))
            // The sinks are loopback servers in this process.
            .arg("--allow-loopback-sinks")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(BenchError::setup("the receiver process"))?;
        let receiver = Self {
            child,
            ingest,
            _dir: dir,
        };
        receiver.wait_ready(admin).await?;
        Ok(receiver)
    }

    async fn wait_ready(&self, admin: u16) -> Result<(), BenchError> {
        let url = format!("http://127.0.0.1:{admin}/readyz");
        let client = reqwest::Client::new();
        for _ in 0..300 {
            if let Ok(response) = client.get(&url).send().await
                && response.status().is_success()
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let log =
            std::fs::read_to_string(self._dir.path().join("receiver.log")).unwrap_or_default();
        Err(BenchError::step(
            "starting the receiver",
            format!("not ready after 30 s; its log:\n{log}"),
        ))
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn ingest_url(&self) -> String {
        format!(
            "http://127.0.0.1:{}/v1/instances/{NAMESPACE}/{INSTANCE}",
            self.ingest
        )
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The receiver binary: this build's, or the one `SWO_BENCH_RECEIVER` names, so that two builds
/// (before and after a change) can be measured back to back by the same bench process.
fn receiver_binary() -> std::ffi::OsString {
    std::env::var_os("SWO_BENCH_RECEIVER")
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_strapi-webhook-operator").into())
}

/// The baseline: an axum server that reads the body and answers 200, nothing else.
struct BareServer {
    address: std::net::SocketAddr,
}

impl BareServer {
    async fn start() -> Result<Self, BenchError> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(BenchError::setup("the bare server"))?;
        let address = listener
            .local_addr()
            .map_err(BenchError::setup("the bare server"))?;
        let app = Router::new().route(
            "/v1/instances/{namespace}/{name}",
            post(|_body: Bytes| async { StatusCode::OK }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Self { address })
    }

    fn url(&self) -> String {
        format!(
            "http://{}/v1/instances/{NAMESPACE}/{INSTANCE}",
            self.address
        )
    }
}

/// What `wrk` measured.
struct WrkResult {
    requests: f64,
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// Runs `wrk` with the Strapi-shaped POST; every answer must be 2xx, since a receiver that
/// sheds load by failing would look fast.
fn wrk(url: &str, body: &Value) -> Result<WrkResult, BenchError> {
    run_wrk(url, &format!("wrk.body = {:?}\n", body.to_string()))
}

/// Runs `wrk` with a different article on every request (`article_update(n)`, `n` counting up
/// in each of `wrk`'s threads): many documents at once, as in a bulk publish, rather than one
/// document sent again and again.
fn wrk_distinct(url: &str) -> Result<WrkResult, BenchError> {
    const MARK: usize = 987_654_321;
    let template = article_update(MARK).to_string();
    run_wrk(
        url,
        &format!(
            "local template = {template:?}\n\
             local threads = 0\n\
             function setup(thread) thread:set(\"first\", threads); threads = threads + 1 end\n\
             local sent = 0\n\
             function request()\n\
               sent = sent + 1\n\
               local body = string.gsub(template, \"{MARK}\", tostring(sent * 2 + first))\n\
               return wrk.format(nil, nil, nil, body)\n\
             end\n"
        ),
    )
}

fn run_wrk(url: &str, lua: &str) -> Result<WrkResult, BenchError> {
    let dir = tempfile::tempdir().map_err(BenchError::setup("the wrk script"))?;
    let script = dir.path().join("post.lua");
    let lua = format!(
        "wrk.method = \"POST\"\n\
         wrk.headers[\"Content-Type\"] = \"application/json\"\n\
         wrk.headers[\"{SECRET_HEADER}\"] = \"{SECRET}\"\n{lua}"
    );
    std::fs::write(&script, lua).map_err(BenchError::setup("the wrk script"))?;
    let output = Command::new("wrk")
        .args([
            "-t2",
            &format!("-c{CONNECTIONS}"),
            &format!("-d{WRK_SECONDS}s"),
        ])
        .args(["--latency", "-s"])
        .arg(&script)
        .arg(url)
        .output()
        .map_err(BenchError::setup("wrk (scripts/bench.sh installs it)"))?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        return Err(BenchError::step("running wrk", text));
    }
    if text.contains("Non-2xx") || text.contains("Socket errors") {
        return Err(BenchError::step(
            "running wrk",
            format!("some requests failed:\n{text}"),
        ));
    }
    let field = |prefix: &str| {
        text.lines()
            .find_map(|line| line.trim().strip_prefix(prefix))
            .map(str::trim)
            .ok_or_else(|| {
                BenchError::step("reading wrk's output", format!("no {prefix:?} in:\n{text}"))
            })
    };
    let per_second = field("Requests/sec:")?
        .parse()
        .map_err(|error| BenchError::step("reading wrk's output", error))?;
    // "  123456 requests in 8.00s, 12.34MB read"
    let requests = text
        .lines()
        .find_map(|line| line.trim().split_once(" requests in "))
        .and_then(|(count, _)| count.trim().parse().ok())
        .ok_or_else(|| {
            BenchError::step(
                "reading wrk's output",
                format!("no request count in:\n{text}"),
            )
        })?;
    Ok(WrkResult {
        requests,
        per_second,
        p50_ms: wrk_ms(field("50%")?)?,
        p99_ms: wrk_ms(field("99%")?)?,
    })
}

/// `wrk` prints latencies as `812.00us`, `1.23ms` or `1.01s`.
fn wrk_ms(text: &str) -> Result<f64, BenchError> {
    let split = text
        .find(|c: char| c.is_ascii_alphabetic())
        .ok_or_else(|| BenchError::step("reading wrk's output", format!("no unit in {text:?}")))?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|error| BenchError::step("reading wrk's output", format!("{text:?}: {error}")))?;
    match unit {
        "us" => Ok(number / 1000.0),
        "ms" => Ok(number),
        "s" => Ok(number * 1000.0),
        other => Err(BenchError::step(
            "reading wrk's output",
            format!("unknown unit {other:?}"),
        )),
    }
}

/// Posts `event` the way Strapi does and fails on anything but 2xx.
async fn send(client: &reqwest::Client, url: &str, event: &Value) -> Result<(), BenchError> {
    let response = client
        .post(url)
        .header("content-type", "application/json")
        .header(SECRET_HEADER, SECRET)
        .body(event.to_string())
        .send()
        .await
        .map_err(|error| BenchError::step("posting an event", error))?;
    if !response.status().is_success() {
        return Err(BenchError::step(
            "posting an event",
            format!("{url} answered {}", response.status()),
        ));
    }
    Ok(())
}

/// Sends article updates 1..=STEADY_EVENTS at a steady rate, each on its own task so a slow
/// answer does not hold back the next send; returns when each was sent, by article id.
async fn steady(client: &reqwest::Client, url: &str) -> Result<HashMap<u64, Instant>, BenchError> {
    let mut ticker = tokio::time::interval(Duration::from_micros(1_000_000 / STEADY_RATE));
    let mut sends = tokio::task::JoinSet::new();
    let mut sent = HashMap::new();
    for n in 1..=STEADY_EVENTS {
        ticker.tick().await;
        let (client, url) = (client.clone(), url.to_owned());
        sent.insert(n, Instant::now());
        sends.spawn(async move { send(&client, &url, &article_update(n as usize)).await });
    }
    while let Some(done) = sends.join_next().await {
        done.map_err(|error| BenchError::step("posting at a steady rate", error))??;
    }
    Ok(sent)
}

/// Waits until the sink has every event of `sent` and returns the sorted send→arrival times.
async fn latencies(
    sent: &HashMap<u64, Instant>,
    sink: &RecordingSink,
) -> Result<Vec<Duration>, BenchError> {
    if !common::wait_until(Duration::from_secs(30), || sink.count() >= sent.len()).await {
        return Err(BenchError::step(
            "waiting for the sink",
            format!("{} of {} calls arrived", sink.count(), sent.len()),
        ));
    }
    let mut latencies = Vec::with_capacity(sent.len());
    for arrival in sink.take() {
        let body: Value = serde_json::from_slice(&arrival.body)
            .map_err(|error| BenchError::step("reading a forwarded call", error))?;
        let id = body["entry"]["id"].as_u64().unwrap_or_default();
        let at = sent.get(&id).ok_or_else(|| {
            BenchError::step("reading a forwarded call", format!("unknown article {id}"))
        })?;
        latencies.push(arrival.at.duration_since(*at));
    }
    latencies.sort();
    Ok(latencies)
}

/// Item 3: a burst of updates into a coalescing sink, through a route with `filter` if any.
async fn coalescing(
    client: &reqwest::Client,
    filter: Option<&str>,
) -> Result<Vec<Row>, BenchError> {
    let scenario = if filter.is_some() {
        "coalescing, filtered route"
    } else {
        "coalescing"
    };
    let sink = RecordingSink::start().await?;
    let receiver = Receiver::start(
        &[revalidate_webhook(&sink.url(), filter)],
        &Queue::Sqlite("full"),
    )
    .await?;
    let url = receiver.ingest_url();
    let started = Instant::now();
    let acked: Vec<(String, Instant)> = stream::iter(1..=COALESCE_EVENTS)
        .map(|n| {
            let (client, url) = (client.clone(), url.clone());
            async move {
                send(&client, &url, &article_update(n)).await?;
                Ok::<_, BenchError>((format!("/articles/article-{n}"), Instant::now()))
            }
        })
        .buffer_unordered(CONNECTIONS)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    let burst = started.elapsed();
    let expected: BTreeSet<String> = acked
        .iter()
        .map(|(path, _)| path.clone())
        .chain(["/articles".to_owned()])
        .collect();

    // Arrivals in order, each with the paths it revalidates.
    let mut calls: Vec<(Instant, BTreeSet<String>, BTreeSet<String>)> = Vec::new();
    let mut covered = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while covered.len() < expected.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        for arrival in sink.take() {
            let body: Value = serde_json::from_slice(&arrival.body)
                .map_err(|error| BenchError::step("reading a revalidation", error))?;
            let field = |name: &str, key: Option<&str>| -> BTreeSet<String> {
                body[name]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|item| match key {
                        Some(key) => item[key].as_str(),
                        None => item.as_str(),
                    })
                    .map(str::to_owned)
                    .collect()
            };
            let paths = field("paths", Some("path"));
            covered.extend(paths.iter().cloned());
            calls.push((arrival.at, field("tags", None), paths));
        }
    }
    if covered != expected {
        let missing = expected.difference(&covered).count();
        return Err(BenchError::step(
            "waiting for the revalidations",
            format!("{missing} of {} paths never arrived", expected.len()),
        ));
    }
    let tags: BTreeSet<&String> = calls.iter().flat_map(|(_, tags, _)| tags).collect();
    let mut worst = Duration::ZERO;
    for (path, acked_at) in &acked {
        let first = calls
            .iter()
            .find(|(at, _, paths)| at >= acked_at && paths.contains(path))
            .map(|(at, _, _)| at.duration_since(*acked_at))
            .ok_or_else(|| {
                BenchError::step(
                    "measuring freshness",
                    format!("{path} was only revalidated before its event was acknowledged"),
                )
            })?;
        worst = worst.max(first);
    }
    let events = COALESCE_EVENTS as f64;
    Ok(vec![
        Row::plain(
            scenario,
            format!("burst of {COALESCE_EVENTS} updates sent in s"),
            burst.as_secs_f64(),
        ),
        Row::against(
            scenario,
            "revalidation calls reaching the sink",
            calls.len() as f64,
            events,
            "events",
        ),
        Row::against(
            scenario,
            "paths covered",
            covered.len() as f64,
            expected.len() as f64,
            "expected",
        ),
        Row::against(scenario, "tags covered", tags.len() as f64, 1.0, "expected"),
        Row::against(
            scenario,
            "worst freshness delay ms",
            ms(worst),
            COALESCE_WINDOW_MS,
            "coalesce window",
        ),
    ])
}

/// Item 5: ingest and delivery throughput of a normal webhook alone, and beside a hostile one.
async fn bounded_evaluation(client: &reqwest::Client) -> Result<Vec<Row>, BenchError> {
    let hostile_sink = RecordingSink::start().await?;
    let (alone_ingest, alone_delivered) = beside(client, None).await?;
    let hostile = hostile_webhook(&hostile_sink.url());
    let (beside_ingest, beside_delivered) = beside(client, Some(&hostile)).await?;
    let scenario = "bounded evaluation: normal webhook beside a hostile one";
    Ok(vec![
        Row::against(
            scenario,
            "ingest events/s",
            beside_ingest,
            alone_ingest,
            "normal webhook alone",
        ),
        Row::against(
            scenario,
            "deliveries/s to the normal sink",
            beside_delivered,
            alone_delivered,
            "normal webhook alone",
        ),
    ])
}

/// Ingest events/s and deliveries/s of the normal webhook, with `other` configured beside it;
/// each on a fresh receiver, so the ingest run's backlog does not slow the delivery run.
async fn beside(client: &reqwest::Client, other: Option<&Value>) -> Result<(f64, f64), BenchError> {
    let webhooks = |sink: &RecordingSink| -> Vec<Value> {
        [templated_webhook(&sink.url())]
            .into_iter()
            .chain(other.cloned())
            .collect()
    };
    let ingest_sink = RecordingSink::start().await?;
    let receiver = Receiver::start(&webhooks(&ingest_sink), &Queue::Sqlite("full")).await?;
    let ingest = wrk(&receiver.ingest_url(), &article_update(1))?;
    drop(receiver);

    let sink = RecordingSink::start().await?;
    let receiver = Receiver::start(&webhooks(&sink), &Queue::Sqlite("full")).await?;
    let url = receiver.ingest_url();
    let started = Instant::now();
    let posted: Vec<Result<(), BenchError>> = stream::iter(1..=ISOLATION_EVENTS)
        .map(|n| {
            let (client, url) = (client.clone(), url.clone());
            async move { send(&client, &url, &article_update(n)).await }
        })
        .buffer_unordered(CONNECTIONS)
        .collect()
        .await;
    posted.into_iter().collect::<Result<Vec<()>, _>>()?;
    let arrived = common::wait_until(Duration::from_secs(120), || {
        sink.count() >= ISOLATION_EVENTS
    })
    .await;
    if !arrived {
        return Err(BenchError::step(
            "delivering beside a hostile webhook",
            format!(
                "{} of {ISOLATION_EVENTS} deliveries arrived within 120 s",
                sink.count()
            ),
        ));
    }
    let delivered = ISOLATION_EVENTS as f64 / started.elapsed().as_secs_f64();
    Ok((ingest.per_second, delivered))
}

/// Item 4: RSS of a receiver idle after start, then holding `QUEUED_EVENTS` events for a sink
/// that is down.
async fn queued_memory(client: &reqwest::Client, down: &str) -> Result<Vec<Row>, BenchError> {
    let in_cluster = {
        let receiver =
            Receiver::start_in_cluster(&[http_webhook(down)], &Queue::Sqlite("full")).await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        rss_mib(receiver.pid())?.0
    };
    let receiver = Receiver::start(&[http_webhook(down)], &Queue::Sqlite("full")).await?;
    // Give the tenant processes started at install time a moment to be up.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (idle, _) = rss_mib(receiver.pid())?;
    let anonymous = status_mib(receiver.pid(), "RssAnon:")?;
    let tenants = children(receiver.pid());
    let tenants_pss = tenants
        .iter()
        .map(|child| pss_mib(*child))
        .sum::<Result<f64, _>>()?;
    let url = Arc::new(receiver.ingest_url());
    let posted: Vec<Result<(), BenchError>> = stream::iter(1..=QUEUED_EVENTS)
        .map(|n| {
            let (client, url) = (client.clone(), Arc::clone(&url));
            async move { send(&client, &url, &article_update(n)).await }
        })
        .buffer_unordered(CONNECTIONS)
        .collect()
        .await;
    posted.into_iter().collect::<Result<Vec<()>, _>>()?;
    // Let the engine look at its backlog once more before measuring.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let queued = rss_mib(receiver.pid())?.0;
    Ok(vec![
        Row::plain("receiver memory", "RSS idle MiB", idle),
        Row::against(
            "receiver memory",
            "RSS idle, configuration from a Kubernetes API server, MiB",
            in_cluster,
            idle,
            "RSS idle (manifest file)",
        ),
        Row::against(
            "receiver memory",
            "RSS idle, anonymous (heap, stacks) MiB",
            anonymous,
            idle,
            "RSS idle",
        ),
        Row::against(
            "receiver memory",
            format!("tenant processes idle ({}), PSS MiB", tenants.len()),
            tenants_pss,
            idle,
            "receiver RSS idle",
        ),
        Row::against(
            "receiver memory",
            format!("RSS with {QUEUED_EVENTS} queued, sink down, MiB"),
            queued,
            idle,
            "idle",
        ),
    ])
}

/// One `kB` field of `/proc/<pid>/status`, in MiB.
fn status_mib(pid: u32, field: &str) -> Result<f64, BenchError> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).map_err(BenchError::setup(path))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse::<f64>().ok())
        .map(|kib| kib / 1024.0)
        .ok_or_else(|| BenchError::step("reading memory", format!("no {field} for {pid}")))
}

/// A process's proportional set size in MiB: its private pages plus its share of the pages it
/// shares (the executable's, with the receiver), so the sizes of processes add up.
fn pss_mib(pid: u32) -> Result<f64, BenchError> {
    let path = format!("/proc/{pid}/smaps_rollup");
    let rollup = std::fs::read_to_string(&path).map_err(BenchError::setup(path))?;
    rollup
        .lines()
        .find_map(|line| line.strip_prefix("Pss:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse::<f64>().ok())
        .map(|kib| kib / 1024.0)
        .ok_or_else(|| BenchError::step("reading memory", format!("no Pss for {pid}")))
}

/// The child processes of `pid` (its tenant processes), from every thread's `children` list.
fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|child| child.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// A loopback port that was free a moment ago, for a child process that takes its address
/// as a flag.
pub fn free_port() -> Result<u16, BenchError> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(BenchError::setup("a free loopback port"))?;
    listener
        .local_addr()
        .map(|address| address.port())
        .map_err(BenchError::setup("a free loopback port"))
}
