//! The example integrations' sinks driven through the real receiver and delivery engine, with
//! loopback servers that behave like Next.js and Slack: coalescing a burst of 1,000 updates,
//! honouring Slack's `Retry-After`, and pausing a Slack webhook that is gone.

mod support;

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    body::Bytes,
    response::{IntoResponse, Response},
    routing::post,
};
use examples::example_at;
use futures::StreamExt;
use serde_json::{Value, json};
use strapi_webhook_operator::{
    admin_api::Stats,
    api::StrapiWebhookSpec,
    queue::{NewDelivery, Queue, RoutedEvent, SinkKey},
    receiver::source::Snapshot,
};
use support::receiver::{INSTANCE, SECRET, TestReceiver, TestStore, client};
use support::{examples, receiver};
use tokio::time::Instant;

const PATIENCE: Duration = Duration::from_secs(90);

/// A loopback server that records when each request arrived and what it carried, and answers
/// the n-th request with `answers[n]` (the last answer repeats).
#[derive(Clone)]
struct Recorder {
    url: String,
    seen: Arc<Mutex<Vec<(Instant, Value)>>>,
}

impl Recorder {
    async fn start(answers: Vec<fn() -> Response>) -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&seen);
        let app = Router::new().route(
            "/hook",
            post(move |body: Bytes| {
                let record = Arc::clone(&record);
                let answers = answers.clone();
                async move {
                    let mut seen = record.lock().unwrap();
                    let answer = answers[seen.len().min(answers.len() - 1)];
                    seen.push((
                        Instant::now(),
                        serde_json::from_slice(&body).unwrap_or(Value::Null),
                    ));
                    answer()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { url, seen }
    }

    fn seen(&self) -> Vec<(Instant, Value)> {
        self.seen.lock().unwrap().clone()
    }

    async fn wait_for(&self, done: impl Fn(&[(Instant, Value)]) -> bool) {
        let deadline = Instant::now() + PATIENCE;
        while !done(&self.seen()) {
            assert!(
                Instant::now() < deadline,
                "condition not met; received {:?}",
                self.seen()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// An example from `examples/` routing the test receiver's instance to `url`.
fn example_snapshot(file: &str, url: &str) -> Snapshot {
    let (namespace, instance) = INSTANCE.split_once('/').unwrap();
    Snapshot::new(
        BTreeMap::from([(INSTANCE.to_owned(), vec![SECRET.to_owned()])]),
        [example_at(file, namespace, instance, url)],
    )
}

fn article_update(slug: &str) -> Value {
    json!({
        "event": "entry.update",
        "createdAt": "2026-11-27T01:00:00.000Z",
        "model": "article",
        "uid": "api::article.article",
        "entry": {"id": 1, "documentId": slug, "slug": slug, "title": slug, "locale": "en"}
    })
}

fn comment(author: &str, text: &str) -> Value {
    json!({
        "event": "entry.create",
        "createdAt": "2026-11-27T01:00:00.000Z",
        "model": "comment",
        "uid": "api::comment.comment",
        "entry": {"id": 1, "documentId": "c1", "author": author, "text": text}
    })
}

fn paths(body: &Value) -> impl Iterator<Item = String> + '_ {
    body["paths"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|path| path["path"].as_str().unwrap().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_updates_become_a_handful_of_revalidations_covering_every_path() {
    const UPDATES: usize = 1000;
    let site = Recorder::start(vec![|| {
        axum::Json(json!({"revalidated": true})).into_response()
    }])
    .await;
    let receiver =
        TestReceiver::start(example_snapshot("nextjs-revalidation.yaml", &site.url)).await;
    let http = client();

    // Strapi fires webhooks concurrently during a bulk import; so do we.
    let acked: BTreeMap<String, Instant> = futures::stream::iter(0..UPDATES)
        .map(|n| {
            let (receiver, http) = (&receiver, &http);
            async move {
                let slug = format!("article-{n}");
                let status = receiver.post(http, &article_update(&slug)).await;
                assert!(status.is_success(), "{status}");
                (format!("/articles/{slug}"), Instant::now())
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;

    site.wait_for(|seen| {
        let covered: BTreeSet<String> = seen.iter().flat_map(|(_, body)| paths(body)).collect();
        acked.keys().all(|path| covered.contains(path))
    })
    .await;
    let seen = site.seen();
    let mut first_arrival: BTreeMap<String, Instant> = BTreeMap::new();
    for (arrived, body) in &seen {
        assert_eq!(body["tags"], json!(["article"]), "{body}");
        for path in paths(body) {
            first_arrival.entry(path).or_insert(*arrived);
        }
    }
    let worst_delay = acked
        .iter()
        .map(|(path, acked)| first_arrival[path].saturating_duration_since(*acked))
        .max()
        .unwrap();
    eprintln!(
        "coalescing: {UPDATES} updates reached the Next.js sink in {} calls; worst delay from ack to revalidation {worst_delay:?}",
        seen.len()
    );
    // Every call also carries the list page; the bound is loose on purpose (timing varies), the
    // point is that a burst does not become one call per update.
    assert!(seen.len() <= UPDATES / 10, "{} calls", seen.len());
    receiver.shutdown().await;
}

/// A `Revalidate` sink of the test instance with a long coalesce window, revalidating each
/// article's page.
fn slow_window_revalidation(url: &str, window: Duration) -> Snapshot {
    let spec: StrapiWebhookSpec = serde_json::from_value(json!({
        "instanceRef": { "name": "strapi" },
        "events": ["entry.update"],
        "sinks": [{
            "name": "site",
            "nextjs": {
                "url": url,
                "mode": "Revalidate",
                "coalesceWindow": format!("{}ms", window.as_millis()),
            },
        }],
        "routes": [{
            "name": "articles",
            "sink": "site",
            "nextjs": { "paths": [{ "path": "/articles/{{ entry.slug }}" }] },
        }],
    }))
    .unwrap();
    receiver::snapshot(&spec)
}

/// Stores `count` article updates and routes each to `sink` (as the router would), so they
/// are all due when a receiver starts on `queue`.
async fn store_routed_updates(queue: &Arc<dyn Queue>, sink: &SinkKey, count: usize) {
    futures::stream::iter(0..count)
        .map(|n| {
            let queue = Arc::clone(queue);
            async move {
                let update = article_update(&format!("article-{n}"));
                queue
                    .ingest(receiver::new_event(
                        &format!("event-{n:05}"),
                        "entry.update",
                        &update,
                    ))
                    .await
                    .unwrap();
            }
        })
        .buffer_unordered(32)
        .collect::<()>()
        .await;
    let mut routed = 0;
    while routed < count {
        let events = queue.unrouted(500).await.unwrap();
        assert!(!events.is_empty(), "{routed} of {count} events routed");
        routed += events.len();
        let events = events
            .into_iter()
            .map(|event| RoutedEvent {
                deliveries: vec![NewDelivery {
                    id: event.id.replace("event", "delivery"),
                    sink: sink.clone(),
                    route: "articles".into(),
                    dead_on_arrival: None,
                }],
                event,
            })
            .collect();
        queue.route(events).await.unwrap();
    }
}

fn site_sink() -> SinkKey {
    SinkKey {
        webhook: "cms/site".into(),
        sink: "site".into(),
    }
}

/// A backlog larger than one call's cap (1,000 deliveries): the updates of a bulk import that
/// arrived faster than the window, or that waited while the receiver was down. The full calls
/// go out at once, side by side, and the rest once its oldest delivery has waited one window,
/// instead of one call per window; otherwise the last page of the backlog stays stale for one
/// window per thousand updates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_larger_than_one_call_goes_out_in_concurrent_calls_within_one_window() {
    const BACKLOG: usize = 2_500;
    const WINDOW: Duration = Duration::from_secs(3);
    let site = Recorder::start(vec![|| {
        axum::Json(json!({"revalidated": true})).into_response()
    }])
    .await;
    let store = TestStore::start();
    let queue = store.open().await;
    let stored = Instant::now();
    // Stored and routed before the receiver starts, so the whole backlog is due at once.
    store_routed_updates(&queue, &site_sink(), BACKLOG).await;
    let receiver =
        TestReceiver::start_on(store, queue, slow_window_revalidation(&site.url, WINDOW)).await;

    site.wait_for(|seen| seen.iter().flat_map(|(_, body)| paths(body)).count() >= BACKLOG)
        .await;
    let seen = site.seen();
    let sent: Vec<String> = seen.iter().flat_map(|(_, body)| paths(body)).collect();
    let distinct: BTreeSet<&String> = sent.iter().collect();
    assert_eq!(
        (sent.len(), distinct.len()),
        (BACKLOG, BACKLOG),
        "every page once"
    );
    assert_eq!(seen.len(), BACKLOG.div_ceil(1000), "calls of at most 1,000");
    // One call per window would put the last call three windows after the backlog was stored.
    let last = seen.iter().map(|(at, _)| *at).max().unwrap();
    assert!(
        last.duration_since(stored) < 2 * WINDOW,
        "the last call arrived {:?} after the backlog was stored, more than two windows",
        last.duration_since(stored)
    );
    receiver.shutdown().await;
}

/// A full call (1,000 deliveries) cannot merge anything more, so it goes out without waiting
/// for the window; only what does not fill a call waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_call_goes_out_without_waiting_for_the_window() {
    const WINDOW: Duration = Duration::from_secs(60);
    let site = Recorder::start(vec![|| {
        axum::Json(json!({"revalidated": true})).into_response()
    }])
    .await;
    let store = TestStore::start();
    let queue = store.open().await;
    store_routed_updates(&queue, &site_sink(), 1_001).await;
    let started = Instant::now();
    let receiver =
        TestReceiver::start_on(store, queue, slow_window_revalidation(&site.url, WINDOW)).await;

    site.wait_for(|seen| !seen.is_empty()).await;
    let seen = site.seen();
    let (arrived, body) = &seen[0];
    assert_eq!(paths(body).count(), 1_000, "one full call first");
    assert!(
        arrived.duration_since(started) < WINDOW / 2,
        "the full call waited {:?} (the window is {WINDOW:?})",
        arrived.duration_since(started)
    );
    // The one left over waits for its window; it is not sent yet.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        site.seen().len(),
        1,
        "the partial call waits for its window"
    );
    receiver.shutdown().await;
}

#[tokio::test]
async fn slack_429_waits_for_retry_after_then_posts_the_comment() {
    let hook = Recorder::start(vec![
        || {
            (
                axum::http::StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", "2")],
                "rate_limited",
            )
                .into_response()
        },
        || "ok".into_response(),
    ])
    .await;
    let receiver = TestReceiver::start(example_snapshot("slack-comments.yaml", &hook.url)).await;
    let status = receiver
        .post(&client(), &comment("Ada", "Great post"))
        .await;
    assert!(status.is_success(), "{status}");

    hook.wait_for(|seen| seen.len() >= 2).await;
    let seen = hook.seen();
    let waited = seen[1].0.duration_since(seen[0].0);
    assert!(waited >= Duration::from_secs(2), "retried after {waited:?}");
    for (_, body) in &seen {
        assert_eq!(
            body,
            &json!({"text": "New comment from Ada: \"Great post\""})
        );
    }
    receiver.shutdown().await;
}

#[tokio::test]
async fn a_retry_after_beyond_any_clock_waits_the_max_backoff_instead() {
    let hook = Recorder::start(vec![
        || {
            (
                axum::http::StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", "18446744073709551615")],
            )
                .into_response()
        },
        || "ok".into_response(),
    ])
    .await;
    // One HTTP sink whose backoff max is 400 ms.
    let spec = receiver::webhook_spec(&[("crm", hook.url.clone())]);
    let receiver = TestReceiver::start(receiver::snapshot(&spec)).await;
    let status = receiver.post(&client(), &article_update("hello")).await;
    assert!(status.is_success(), "{status}");

    hook.wait_for(|seen| seen.len() >= 2).await;
    let seen = hook.seen();
    let waited = seen[1].0.duration_since(seen[0].0);
    assert!(
        waited >= Duration::from_millis(400) && waited < Duration::from_secs(10),
        "retried after {waited:?}"
    );
    receiver.shutdown().await;
}

#[tokio::test]
async fn slack_no_service_pauses_the_sink_and_sends_nothing_more() {
    let hook = Recorder::start(vec![|| {
        (axum::http::StatusCode::NOT_FOUND, "no_service").into_response()
    }])
    .await;
    let receiver = TestReceiver::start(example_snapshot("slack-comments.yaml", &hook.url)).await;
    let http = client();
    for n in 0..3 {
        let status = receiver
            .post(&http, &comment("Ada", &format!("comment {n}")))
            .await;
        assert!(status.is_success(), "{status}");
    }

    let deadline = Instant::now() + PATIENCE;
    let sink = loop {
        let stats: Stats = receiver.admin_json("/v1/stats").await;
        let sink = stats
            .webhooks
            .get("cms/slack-comments")
            .and_then(|sinks| sinks.first().cloned());
        // Events are routed after they are acknowledged: wait for the last one's delivery too.
        match sink {
            Some(sink) if sink.paused && stats.unrouted == 0 => break sink,
            _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
            other => panic!("the sink was not paused: {other:?}"),
        }
    };
    assert_eq!(sink.pending, 3, "{sink:?}");
    assert!(
        sink.last_error
            .as_deref()
            .is_some_and(|error| error.contains("no_service")),
        "{sink:?}"
    );
    // Give the engine time to misbehave: with the sink paused, nothing more may go out.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(hook.seen().len(), 1);
    receiver.shutdown().await;
}
