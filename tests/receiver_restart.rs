//! A restart of the real binary whose Kubernetes configuration source is slow to sync (issue
//! 15, item 1): the receiver answers Strapi from the last known configuration it persisted with
//! the queue, stores the events unrouted, and routes them with the live configuration once the
//! watches have synced, also after being killed while they were unrouted. The API server is the
//! shared in-memory one (`support::fake_api`) served on loopback, with its lists held back as a
//! slow or unreachable one holds them.

mod support;

use std::{
    collections::BTreeSet,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use support::fake_api::{self, FakeApi, path_of};
use support::receiver::{
    ADMIN_TOKEN, CaptureSink, KillOnDrop, SECRET, TestStore, article_event, client, free_port,
};

const API_VERSION: &str = "webhooks.strapi-operator.dev/v1alpha1";

/// Stores the instance `cms/strapi`, its shared secret and the webhook `cms/site`.
fn put_config(api: &FakeApi, webhook: Value) {
    api.put(
        &path_of(API_VERSION, "strapiinstances", "cms", "strapi"),
        instance(),
    );
    api.put_labelled_secret(
        "cms",
        "strapi-strapi-webhook-secret",
        &[("webhooks.strapi-operator.dev/instance", "strapi")],
        &[("secret", SECRET)],
    );
    put_webhook(api, webhook);
}

fn put_webhook(api: &FakeApi, webhook: Value) {
    api.put(
        &path_of(API_VERSION, "strapiwebhooks", "cms", "site"),
        webhook,
    );
}

fn instance() -> Value {
    json!({
        "apiVersion": "webhooks.strapi-operator.dev/v1alpha1", "kind": "StrapiInstance",
        "metadata": { "name": "strapi", "namespace": "cms", "generation": 1 },
        "spec": { "url": "http://127.0.0.1:9", "auth": { "apiToken": { "name": "admin", "key": "token" } } }
    })
}

/// Webhook `cms/site` with a route to each of `routes` (sink name and URL).
fn webhook(generation: i64, routes: &[(&str, &str)]) -> Value {
    let sinks: Vec<Value> = routes
        .iter()
        .map(|(name, url)| {
            json!({ "name": name, "http": { "url": url },
                    "delivery": { "backoff": { "initial": "50ms", "max": "500ms" } } })
        })
        .collect();
    let routes: Vec<Value> = routes
        .iter()
        .map(|(name, _)| json!({ "name": format!("to-{name}"), "sink": name }))
        .collect();
    json!({
        "apiVersion": "webhooks.strapi-operator.dev/v1alpha1", "kind": "StrapiWebhook",
        "metadata": { "name": "site", "namespace": "cms", "generation": generation },
        "spec": {
            "instanceRef": { "name": "strapi", "namespace": "cms" },
            "events": ["entry.create"],
            "sinks": sinks,
            "routes": routes
        }
    })
}

fn kubeconfig(dir: &Path, server: &str) -> std::path::PathBuf {
    let path = dir.join("kubeconfig");
    std::fs::write(&path, fake_api::kubeconfig(server)).unwrap();
    path
}

/// The receiver binary watching the fake cluster; not waited on.
fn spawn(queue: &str, kubeconfig: &Path, ingest: &str, admin: &str) -> KillOnDrop {
    Command::new(env!("CARGO_BIN_EXE_strapi-webhook-operator"))
        .args(["receiver", "--ingest-addr", ingest, "--admin-addr", admin])
        .arg(format!("--queue={queue}"))
        .arg("--config-source=kubernetes")
        .arg("--allow-loopback-sinks")
        .env("KUBECONFIG", kubeconfig)
        .env("RECEIVER_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .map(KillOnDrop)
        .expect("starting the receiver binary")
}

async fn post(http: &reqwest::Client, url: &str, n: usize) -> Option<reqwest::StatusCode> {
    http.post(url)
        .header("content-type", "application/json")
        .header("x-strapi-webhook-secret", SECRET)
        .body(article_event(n).to_string())
        .send()
        .await
        .ok()
        .map(|response| response.status())
}

/// Posts event `n` until it is acknowledged; returns the time from `since` to that answer.
async fn first_ack(http: &reqwest::Client, ingest: &str, n: usize, since: Instant) -> Duration {
    let url = format!("http://{ingest}/v1/instances/cms/strapi");
    while since.elapsed() < Duration::from_secs(60) {
        if post(http, &url, n).await.is_some_and(|s| s.is_success()) {
            return since.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("event {n} was not acknowledged within a minute of the start");
}

async fn get_json(http: &reqwest::Client, url: String) -> (u16, Value) {
    let response = http.get(url).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn entries(sink: &CaptureSink) -> BTreeSet<u64> {
    sink.received()
        .iter()
        .filter_map(|captured| captured.body["entry"]["id"].as_u64())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_receiver_answers_before_its_watches_sync_and_routes_with_the_live_config() {
    const EVENTS: usize = 20;
    let store = TestStore::start();
    let (crm, erp) = (CaptureSink::start().await, CaptureSink::start().await);
    let (crm_url, erp_url) = (crm.url(), erp.url());
    let api = FakeApi::default();
    put_config(&api, webhook(1, &[("crm", &crm_url), ("erp", &erp_url)]));
    let server = api.serve_loopback().await;
    let kubeconfig = kubeconfig(store.dir.path(), &server);
    let (ingest, admin) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let http = client();

    // First start: nothing persisted yet, so Strapi is answered once the watches synced.
    let started = Instant::now();
    let mut first = spawn(&store.spec(), &kubeconfig, &ingest, &admin);
    let synced = first_ack(&http, &ingest, 0, started).await;
    crm.wait_for(Duration::from_secs(30), |received| !received.is_empty())
        .await;
    erp.wait_for(Duration::from_secs(30), |received| !received.is_empty())
        .await;
    first.kill().unwrap();
    first.wait().unwrap();

    // While it is down the API server stops answering lists, and the erp route is removed.
    api.hold_lists(true);
    put_webhook(&api, webhook(2, &[("crm", &crm_url)]));
    let started = Instant::now();
    let mut second = spawn(&store.spec(), &kubeconfig, &ingest, &admin);
    let answered = first_ack(&http, &ingest, 1, started).await;
    let (ready, _) = get_json(&http, format!("http://{admin}/readyz")).await;
    let unknown = http
        .post(format!("http://{ingest}/v1/instances/cms/other"))
        .header("content-type", "application/json")
        .header("x-strapi-webhook-secret", SECRET)
        .body(article_event(0).to_string())
        .send()
        .await
        .unwrap()
        .status();
    let url = format!("http://{ingest}/v1/instances/cms/strapi");
    for n in 2..=EVENTS {
        let status = post(&http, &url, n).await;
        assert!(
            status.is_some_and(|s| s.is_success()),
            "event {n}: {status:?}"
        );
    }
    let wrong_secret = http
        .post(&url)
        .header("content-type", "application/json")
        .header("x-strapi-webhook-secret", "not-the-secret")
        .body(article_event(99).to_string())
        .send()
        .await
        .unwrap()
        .status();
    let (_, stats) = get_json(&http, format!("http://{admin}/v1/stats")).await;
    eprintln!(
        "first start (nothing persisted): first 2xx after {} ms, once the watches synced; \
         restart with the API server not answering lists: first 2xx after {} ms",
        synced.as_millis(),
        answered.as_millis()
    );
    assert_eq!(ready, 200, "ready from the last known configuration");
    assert_eq!(
        unknown, 503,
        "an instance not known before the restart waits for the sync"
    );
    assert_eq!(wrong_secret, 401);
    assert_eq!(stats["unrouted"], EVENTS, "{stats}");
    assert_eq!(entries(&crm), BTreeSet::from([0]));
    // Killed while every event it acknowledged is still unrouted.
    second.kill().unwrap();
    second.wait().unwrap();

    // The API server answers again: the events are routed with what it says now.
    api.hold_lists(false);
    let started = Instant::now();
    let _third = spawn(&store.spec(), &kubeconfig, &ingest, &admin);
    let _ = first_ack(&http, &ingest, EVENTS + 1, started).await;
    let all: BTreeSet<u64> = (0..=EVENTS as u64 + 1).collect();
    crm.wait_for(Duration::from_secs(60), |_| entries(&crm) == all)
        .await;
    assert_eq!(entries(&crm), all);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        entries(&erp),
        BTreeSet::from([0]),
        "the route removed while the receiver was down takes nothing"
    );
    let (_, stats) = get_json(&http, format!("http://{admin}/v1/stats")).await;
    assert_eq!(stats["unrouted"], 0, "{stats}");
}
