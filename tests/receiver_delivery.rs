//! The delivery engine against real loopback sinks: retries until a sink is back, dead letters
//! and replay, independence of sinks, and the admin counters.

mod support;

use std::{collections::BTreeSet, process::Command, time::Duration};

use axum::http::StatusCode;
use strapi_webhook_operator::{
    admin_api::Stats,
    queue::{Completion, DeliveryFilter, DeliveryState, SinkKey, now_millis},
};
use support::receiver;
use support::receiver::{
    Answer, CaptureSink, TestReceiver, TestStore, article_event, client, snapshot, webhook_spec,
};

const PATIENCE: Duration = Duration::from_secs(60);

fn entry_ids(received: &[receiver::Captured]) -> BTreeSet<u64> {
    received
        .iter()
        .map(|captured| captured.body["entry"]["id"].as_u64().unwrap())
        .collect()
}

async fn deliveries(receiver: &TestReceiver, state: DeliveryState) -> usize {
    let filter = DeliveryFilter {
        state: Some(state),
        limit: 10_000,
        ..DeliveryFilter::default()
    };
    receiver.state.queue.list(filter).await.unwrap().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_that_is_down_for_a_while_receives_everything_once_back() {
    let sink = CaptureSink::start().await;
    let receiver = TestReceiver::start(snapshot(&webhook_spec(&[("crm", sink.url())]))).await;
    sink.stop();
    let http = client();
    for n in 0..30 {
        assert_eq!(
            receiver.post(&http, &article_event(n)).await,
            StatusCode::OK
        );
    }
    // Failed attempts are recorded while the sink refuses connections.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let stats: Stats = receiver.admin_json("/v1/stats").await;
        let crm = &stats.webhooks["cms/site"][0];
        if crm.failed > 0 {
            assert_eq!(crm.delivered, 0);
            assert!(crm.last_error.is_some(), "{crm:?}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no failed attempt recorded: {crm:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let sink = sink.restart().await;
    sink.wait_for(PATIENCE, |received| entry_ids(received).len() == 30)
        .await;
    assert_eq!(entry_ids(&sink.received()), (0..30).collect());
    let ids: BTreeSet<String> = sink
        .received()
        .iter()
        .map(|captured| captured.webhook_id.clone())
        .collect();
    assert_eq!(
        ids.len(),
        30,
        "each delivery carries its own stable webhook-id"
    );
    assert_eq!(deliveries(&receiver, DeliveryState::Dead).await, 0);
    receiver.shutdown().await;
}

/// The `crm` sink's `dead_letters` gauge as `/metrics` shows it.
async fn dead_letters_gauge(receiver: &TestReceiver) -> i64 {
    let text = receiver.metrics().await;
    let line = text
        .lines()
        .find(|line| {
            line.starts_with("strapi_webhook_receiver_dead_letters{")
                && line.contains("sink=\"crm\"")
        })
        .unwrap_or_else(|| panic!("no dead_letters gauge for crm:\n{text}"));
    line.rsplit_once(' ').unwrap().1.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_400_dead_letters_and_replay_delivers_once_the_sink_is_fixed() {
    let sink = CaptureSink::start().await;
    sink.answer(Answer::Status(400));
    let receiver = TestReceiver::start(snapshot(&webhook_spec(&[("crm", sink.url())]))).await;
    let http = client();
    for n in 0..3 {
        assert_eq!(
            receiver.post(&http, &article_event(n)).await,
            StatusCode::OK
        );
    }
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while deliveries(&receiver, DeliveryState::Dead).await < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the 400s were not dead-lettered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let filter = DeliveryFilter {
        limit: 10,
        ..DeliveryFilter::default()
    };
    let dead = receiver.state.queue.list(filter).await.unwrap();
    assert!(
        dead.iter().all(|delivery| delivery.attempts == 1),
        "no retry after a 400: {dead:?}"
    );
    let error = dead[0].last_error.as_deref().unwrap();
    assert!(error.contains("400"), "the last error is kept: {error}");
    assert!(sink.received().is_empty());
    assert_eq!(dead_letters_gauge(&receiver).await, 3);

    sink.answer(Answer::Status(200));
    let cli = env!("CARGO_BIN_EXE_strapi-webhook-operator");
    let listed = Command::new(cli)
        .env("RECEIVER_ADMIN_TOKEN", receiver::ADMIN_TOKEN)
        .args([
            "deliveries",
            "--admin-url",
            &receiver.admin_url(),
            "list",
            "--dead",
        ])
        .output()
        .unwrap();
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let table = String::from_utf8(listed.stdout).unwrap();
    assert_eq!(
        table.lines().count(),
        4,
        "a header and three dead letters:\n{table}"
    );
    assert!(table.contains(&dead[0].id), "{table}");

    let replayed = Command::new(cli)
        .env("RECEIVER_ADMIN_TOKEN", receiver::ADMIN_TOKEN)
        .args([
            "deliveries",
            "--admin-url",
            &receiver.admin_url(),
            "replay",
            "--dead",
        ])
        .output()
        .unwrap();
    assert!(
        replayed.status.success(),
        "{}",
        String::from_utf8_lossy(&replayed.stderr)
    );
    assert_eq!(
        String::from_utf8(replayed.stdout).unwrap().trim(),
        "replayed 3"
    );

    sink.wait_for(PATIENCE, |received| received.len() == 3)
        .await;
    assert_eq!(entry_ids(&sink.received()), (0..3).collect());
    let delivered: BTreeSet<String> = sink
        .received()
        .iter()
        .map(|captured| captured.webhook_id.clone())
        .collect();
    let dead_ids: BTreeSet<String> = dead.iter().map(|delivery| delivery.id.clone()).collect();
    assert_eq!(
        delivered, dead_ids,
        "a replay keeps the delivery's webhook-id"
    );
    assert_eq!(
        dead_letters_gauge(&receiver).await,
        0,
        "replayed dead letters are no longer waiting"
    );

    let refused = Command::new(cli)
        .env("RECEIVER_ADMIN_TOKEN", receiver::ADMIN_TOKEN)
        .args([
            "deliveries",
            "--admin-url",
            &receiver.admin_url(),
            "replay",
            "no-such-id",
        ])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("no delivery with id no-such-id"));
    receiver.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_dead_sink_does_not_slow_another() {
    let dead = CaptureSink::start().await;
    dead.answer(Answer::Hang);
    let healthy = CaptureSink::start().await;
    let spec = webhook_spec(&[("dead", dead.url()), ("healthy", healthy.url())]);
    let receiver = TestReceiver::start(snapshot(&spec)).await;
    let http = client();
    for n in 0..50 {
        assert_eq!(
            receiver.post(&http, &article_event(n)).await,
            StatusCode::OK
        );
    }
    healthy
        .wait_for(PATIENCE, |received| received.len() == 50)
        .await;
    // The hanging sink has every one of its attempts stuck (its concurrency is used up), yet
    // the healthy sink got all fifty.
    let filter = DeliveryFilter {
        sink: Some("dead".into()),
        limit: 1_000,
        ..DeliveryFilter::default()
    };
    let stuck = receiver.state.queue.list(filter).await.unwrap();
    assert_eq!(stuck.len(), 50);
    assert!(
        stuck
            .iter()
            .all(|delivery| delivery.state != DeliveryState::Delivered)
    );
    assert!(dead.received().is_empty());
    assert_eq!(entry_ids(&healthy.received()), (0..50).collect());
    receiver.shutdown().await;
}

#[test]
fn deliveries_with_no_receiver_says_nothing_answers_and_which_flag_sets_the_address() {
    let admin = format!("http://127.0.0.1:{}", receiver::free_port());
    let output = Command::new(env!("CARGO_BIN_EXE_strapi-webhook-operator"))
        .env("RECEIVER_ADMIN_TOKEN", receiver::ADMIN_TOKEN)
        .env_remove("RECEIVER_ADMIN_URL")
        .args(["deliveries", "--admin-url", &admin, "list"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("nothing answers at {admin} (Connection refused"))
            && stderr.contains("--admin-url or RECEIVER_ADMIN_URL"),
        "{stderr}"
    );
}

/// A paused sink's deliveries are claimed and handed back, sometimes several times within one
/// millisecond. On JetStream a hand-back publishes the delivery again and then acknowledges the
/// old message; a message id made of the time collapsed two hand-backs in one millisecond into
/// one publish, and the second acknowledgement removed the delivery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_handed_back_many_times_in_quick_succession_is_never_lost() {
    let store = TestStore::start();
    let queue = store.open().await;
    let sink = SinkKey {
        webhook: "cms/site".into(),
        sink: "paused".into(),
    };
    receiver::store_routed_delivery(queue.as_ref(), "handed-back-event", "delivery-1", &sink).await;

    for handed_back in 0..300 {
        let claimed = queue
            .claim(sink.clone(), now_millis(), 1, 30_000)
            .await
            .unwrap();
        assert_eq!(
            claimed.len(),
            1,
            "the delivery is gone after {handed_back} hand-backs"
        );
        let release = Completion::Release {
            next_attempt_at: now_millis(),
        };
        queue
            .complete(claimed[0].id.clone(), release)
            .await
            .unwrap();
    }
    let pending = queue
        .list(DeliveryFilter {
            state: Some(DeliveryState::Pending),
            limit: 100,
            ..DeliveryFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(pending.len(), 1, "{pending:?}");
}
