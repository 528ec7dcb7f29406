//! Isolation: what one tenant's webhook, one sink or one client does never stalls, crashes or
//! wedges the receiver for the others (issue 13). Each test reproduces a way the receiver was
//! taken down and checks it no longer is.

#[path = "support/receiver.rs"]
mod support;

use std::time::Duration;

use serde_json::json;
use strapi_webhook_operator::{
    api::StrapiWebhookSpec,
    queue::{DeliveryFilter, DeliveryState, NewDelivery, NewEvent, SinkKey, now_millis},
};
use support::{CaptureSink, TestReceiver, TestStore, article_event, snapshot, webhook_spec};

/// [`webhook_spec`] with its first sink's max attempts set.
fn spec_with_max_attempts(sink_url: String, max_attempts: u32) -> StrapiWebhookSpec {
    let mut spec = serde_json::to_value(webhook_spec(&[("crm", sink_url)])).unwrap();
    spec["sinks"][0]["delivery"]["maxAttempts"] = json!(max_attempts);
    serde_json::from_value(spec).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_that_crashed_the_receiver_at_every_attempt_is_dead_lettered() {
    let sink = CaptureSink::start().await;
    let spec = spec_with_max_attempts(sink.url(), 3);
    let store = TestStore::start();
    let queue = store.open().await;
    let crm = SinkKey {
        webhook: "cms/site".into(),
        sink: "crm".into(),
    };
    queue
        .ingest(NewEvent {
            id: "poison-event".into(),
            instance: support::INSTANCE.into(),
            event: "entry.create".into(),
            received_at: now_millis(),
            raw: article_event(1).to_string().into_bytes(),
            dedup_key: None,
            dedup_window_ms: 0,
            deliveries: vec![NewDelivery {
                id: "poison".into(),
                sink: crm.clone(),
                route: "to-crm".into(),
                dead_on_arrival: None,
            }],
        })
        .await
        .unwrap();
    // Earlier runs of the receiver claimed it and died before any outcome, three times (the
    // lease running out is what a crash looks like to the queue).
    for _ in 0..3 {
        let claimed = queue.claim(crm.clone(), now_millis(), 1, 1).await.unwrap();
        assert_eq!(claimed.len(), 1);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let receiver = TestReceiver::start_on(store, queue, snapshot(&spec)).await;
    let dead = DeliveryFilter {
        state: Some(DeliveryState::Dead),
        limit: 10,
        ..DeliveryFilter::default()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let dead = loop {
        let dead = receiver.state.queue.list(dead.clone()).await.unwrap();
        if !dead.is_empty() || tokio::time::Instant::now() > deadline {
            break dead;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(dead.len(), 1, "the poison delivery is dead-lettered");
    let error = dead[0].last_error.clone().unwrap_or_default();
    assert!(
        error.contains("the receiver stopped while delivering"),
        "{error}"
    );
    assert_eq!(dead[0].attempts, 3);
    assert!(sink.received().is_empty(), "it is not tried a fourth time");
    receiver.shutdown().await;
}
