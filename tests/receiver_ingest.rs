//! Ingest: what Strapi's calls are answered, and what is (and is not) stored. The routers are
//! driven with `oneshot`, the event router runs as in the receiver; the queue is a real SQLite
//! file.

mod support;

use std::sync::Arc;

use axum::{
    Router,
    body::{Body, to_bytes},
    http::{Request, StatusCode},
};
use serde_json::{Value, json};
use strapi_webhook_operator::{
    config::{InMemorySecrets, compile_webhook},
    receiver::source::Snapshot,
};
use strapi_webhook_operator::{
    queue::DeliveryFilter,
    receiver::{
        ReceiverSettings, ReceiverState, admin,
        ingest::{self, SECRET_HEADER},
        router,
        source::StaticSource,
    },
};
use support::receiver;
use support::receiver::{INSTANCE, SECRET, article_event, snapshot, webhook_spec};
use tower::ServiceExt;

struct Harness {
    state: Arc<ReceiverState>,
    source: StaticSource,
    _stop: tokio::sync::watch::Sender<bool>,
    _store: receiver::TestStore,
}

impl Harness {
    async fn new(max_body_bytes: usize) -> Self {
        let store = receiver::TestStore::start();
        let queue = store.open().await;
        let spec = webhook_spec(&[("crm", "http://127.0.0.1:9/hook".to_owned())]);
        let source = StaticSource::new(snapshot(&spec));
        let settings = ReceiverSettings {
            max_body_bytes,
            admin_token: Some(receiver::admin_token()),
            ..ReceiverSettings::default()
        };
        let state = ReceiverState::new(queue, &source, settings).unwrap();
        let (stop, stopping) = tokio::sync::watch::channel(false);
        tokio::spawn(router::run(Arc::clone(&state), stopping));
        Self {
            state,
            source,
            _stop: stop,
            _store: store,
        }
    }

    async fn call(&self, app: Router, request: Request<Body>) -> (StatusCode, Value) {
        let response = app.oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = to_bytes(response.into_body(), usize::MAX).await.unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    async fn ingest(&self, request: Request<Body>) -> (StatusCode, Value) {
        self.call(ingest::app(Arc::clone(&self.state)), request)
            .await
    }

    async fn admin_get(&self, path: &str) -> (StatusCode, Value) {
        let request = Request::get(path)
            .header("authorization", format!("Bearer {}", receiver::ADMIN_TOKEN))
            .body(Body::empty())
            .unwrap();
        self.call(admin::app(Arc::clone(&self.state)), request)
            .await
    }

    /// Deliveries stored, once the router has routed every stored event.
    async fn stored(&self) -> usize {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while self.state.queue.unrouted_count().await.unwrap() > 0 {
            assert!(std::time::Instant::now() < deadline, "events stay unrouted");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let filter = DeliveryFilter {
            limit: 10_000,
            ..DeliveryFilter::default()
        };
        self.state.queue.list(filter).await.unwrap().len()
    }
}

fn strapi_call(secret: Option<&str>, content_type: &str, body: impl Into<Body>) -> Request<Body> {
    let mut request =
        Request::post(format!("/v1/instances/{INSTANCE}")).header("content-type", content_type);
    if let Some(secret) = secret {
        request = request.header(SECRET_HEADER, secret);
    }
    request.body(body.into()).unwrap()
}

#[tokio::test]
async fn a_wrong_or_missing_secret_is_401_without_detail_and_stores_nothing() {
    let harness = Harness::new(1024 * 1024).await;
    let event = article_event(1).to_string();
    for secret in [Some("not-the-secret"), Some(""), None] {
        let (status, body) = harness
            .ingest(strapi_call(secret, "application/json", event.clone()))
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "secret {secret:?}");
        assert_eq!(body, Value::Null, "a 401 says nothing about why");
    }
    assert_eq!(harness.stored().await, 0);

    let (status, body) = harness
        .ingest(strapi_call(Some(SECRET), "application/json", event))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // No route has a filter: ingest routed it as it stored it.
    assert_eq!(body["routing"], "done");
    assert_eq!(body["deliveries"], 1);
    assert!(body["id"].is_string());
    assert_eq!(harness.stored().await, 1);
    let (_, stats) = harness.admin_get("/v1/stats").await;
    assert_eq!(stats["unrouted"], 0, "{stats}");
}

#[tokio::test]
async fn oversize_non_json_and_malformed_bodies_are_refused_with_a_clear_status() {
    let harness = Harness::new(512).await;
    let oversize = json!({ "event": "entry.create", "entry": { "body": "x".repeat(600) } });
    let (status, body) = harness
        .ingest(strapi_call(
            Some(SECRET),
            "application/json",
            oversize.to_string(),
        ))
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        body["error"].as_str().unwrap().contains("512 bytes"),
        "{body}"
    );

    let (status, body) = harness
        .ingest(strapi_call(
            Some(SECRET),
            "text/plain",
            article_event(1).to_string(),
        ))
        .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(body["error"].as_str().unwrap().contains("JSON"), "{body}");

    let (status, body) = harness
        .ingest(strapi_call(
            Some(SECRET),
            "application/json",
            "{\"event\": ",
        ))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("not a Strapi webhook event"),
        "{body}"
    );

    let (status, body) = harness
        .ingest(strapi_call(
            Some(SECRET),
            "application/json",
            r#"{"model":"article"}"#,
        ))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("missing field `event`"),
        "{body}"
    );

    assert_eq!(harness.stored().await, 0);
}

#[tokio::test]
async fn an_unknown_instance_is_404() {
    let harness = Harness::new(1024).await;
    let request = Request::post("/v1/instances/cms/other")
        .header("content-type", "application/json")
        .header(SECRET_HEADER, SECRET)
        .body(Body::from(article_event(1).to_string()))
        .unwrap();
    let (status, body) = harness.ingest(request).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        body["error"].as_str().unwrap().contains("cms/other"),
        "{body}"
    );
}

#[tokio::test]
async fn trigger_test_is_a_handshake_and_is_not_routed() {
    let harness = Harness::new(1024 * 1024).await;
    let (_, before) = harness
        .admin_get("/v1/instances/cms/strapi/handshake")
        .await;
    assert_eq!(before["count"], 0);
    let trigger = json!({ "event": "trigger-test", "createdAt": "2026-11-27T01:00:00.000Z" });
    for _ in 0..2 {
        let (status, _) = harness
            .ingest(strapi_call(
                Some(SECRET),
                "application/json",
                trigger.to_string(),
            ))
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    let (status, after) = harness
        .admin_get("/v1/instances/cms/strapi/handshake")
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(after["count"], 2);
    assert!(after["lastAt"].as_i64().unwrap() > 0, "{after}");
    assert_eq!(harness.stored().await, 0);
}

#[tokio::test]
async fn strapis_duplicate_delete_is_stored_once_and_unknown_events_are_kept() {
    let harness = Harness::new(1024 * 1024).await;
    let delete = json!({
        "event": "entry.delete",
        "model": "article",
        "uid": "api::article.article",
        "entry": { "id": 7, "documentId": "abc", "locale": "en", "publishedAt": null }
    });
    let (_, first) = harness
        .ingest(strapi_call(
            Some(SECRET),
            "application/json",
            delete.to_string(),
        ))
        .await;
    let (status, second) = harness
        .ingest(strapi_call(
            Some(SECRET),
            "application/json",
            delete.to_string(),
        ))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(second["duplicateOf"], first["id"]);
    assert_eq!(harness.stored().await, 1);

    // An event name this version does not know is stored (and answered 2xx), not dropped.
    let unknown = json!({ "event": "entry.archive", "model": "article", "entry": { "id": 1 } });
    let (status, body) = harness
        .ingest(strapi_call(
            Some(SECRET),
            "application/json",
            unknown.to_string(),
        ))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["routing"], "done");
    assert_eq!(body["deliveries"], 0);
    assert!(body["id"].is_string());
    assert_eq!(
        harness.stored().await,
        1,
        "no route takes the unknown event"
    );
}

#[tokio::test]
async fn metrics_count_rejections_by_reason_with_bounded_labels() {
    let harness = Harness::new(1024 * 1024).await;
    harness
        .ingest(strapi_call(
            Some("wrong"),
            "application/json",
            article_event(1).to_string(),
        ))
        .await;
    let request = Request::post("/v1/instances/attacker/chosen-name")
        .header("content-type", "application/json")
        .body(Body::from("{}"))
        .unwrap();
    harness.ingest(request).await;
    let response = admin::app(Arc::clone(&harness.state))
        .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let text = String::from_utf8(
        to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap()
            .to_vec(),
    )
    .unwrap();
    assert!(
        text.contains(
            r#"events_rejected_total{strapi_instance="cms/strapi",reason="Unauthorized"} 1"#
        ),
        "{text}"
    );
    assert!(
        text.contains(
            r#"events_rejected_total{strapi_instance="unknown",reason="UnknownInstance"} 1"#
        ),
        "{text}"
    );
    assert!(
        !text.contains("attacker"),
        "request data must not become a label: {text}"
    );
}

#[tokio::test]
async fn routing_reports_the_generation_the_next_event_is_routed_with_and_waits_for_one_asked() {
    let harness = Harness::new(1024 * 1024).await;
    let (status, routing) = harness.admin_get("/v1/routing").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        routing,
        json!({ "synced": true, "instances": { INSTANCE: 0 }, "webhooks": { "cms/site": 1 } })
    );

    // Asked for generation 2, the answer waits until the receiver routes it.
    let asked = harness.admin_get(
        "/v1/routing?webhook=cms/site&generation=2&instance=cms/strapi&instanceGeneration=4\
         &timeoutSeconds=10",
    );
    let publish = async {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let spec = webhook_spec(&[
            ("crm", "http://127.0.0.1:9/hook".to_owned()),
            ("erp", "http://127.0.0.1:9/erp".to_owned()),
        ]);
        let webhook = compile_webhook("cms", "site", 2, &spec, &InMemorySecrets::new()).unwrap();
        let instances =
            std::collections::BTreeMap::from([(INSTANCE.to_owned(), vec![SECRET.to_owned()])]);
        let generations = std::collections::BTreeMap::from([(INSTANCE.to_owned(), 4)]);
        harness
            .source
            .publish(Snapshot::new(instances, [webhook]).with_instance_generations(generations));
    };
    let started = std::time::Instant::now();
    let ((status, routing), ()) = tokio::join!(asked, publish);
    assert_eq!(status, StatusCode::OK);
    assert_eq!(routing["webhooks"]["cms/site"], json!(2));
    assert_eq!(routing["instances"][INSTANCE], json!(4));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "answered when generation 2 was loaded, not at the timeout"
    );
    // The ingest routes the next event with what the report showed: both sinks of generation 2.
    let (status, _) = harness
        .ingest(strapi_call(
            Some(SECRET),
            "application/json",
            article_event(1).to_string(),
        ))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(harness.stored().await, 2);

    // A generation the receiver never gets: after the timeout, what it has.
    let (status, routing) = harness
        .admin_get("/v1/routing?webhook=cms/site&generation=9&timeoutSeconds=1")
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(routing["webhooks"]["cms/site"], json!(2));
}
