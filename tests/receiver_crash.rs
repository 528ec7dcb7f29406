//! The real binary, killed with SIGKILL in the middle of a burst: every event it acknowledged
//! is delivered after a restart on the same queue, and SIGTERM stops it cleanly.

mod support;

use std::{collections::BTreeSet, process::Command, time::Duration};

use futures::{StreamExt, stream};
use support::receiver;
use support::receiver::{
    BinaryReceiver as Receiver, CaptureSink, SECRET, article_event, client, manifests,
};

const EVENTS: usize = 1_000;
const KILL_AFTER: usize = 400;

/// Posts the events with some concurrency; returns the entry numbers that were acknowledged.
async fn post_all(
    http: &reqwest::Client,
    ingest: &str,
    numbers: Vec<usize>,
    on_ack: impl Fn(usize) + Sync,
) -> BTreeSet<usize> {
    let url = format!("http://{ingest}/v1/instances/cms/strapi");
    stream::iter(numbers)
        .map(|n| {
            let request = http
                .post(&url)
                .header("content-type", "application/json")
                .header("x-strapi-webhook-secret", SECRET)
                .body(article_event(n).to_string())
                .send();
            async move {
                request
                    .await
                    .is_ok_and(|response| response.status().is_success())
                    .then_some(n)
            }
        })
        .buffer_unordered(16)
        .filter_map(|acked| async move { acked })
        .inspect(|n| on_ack(*n))
        .collect()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_burst_loses_no_acknowledged_event() {
    let store = receiver::TestStore::start();
    let dir = &store.dir;
    let sink = CaptureSink::start().await;
    std::fs::write(dir.path().join("manifests.yaml"), manifests(&sink.url())).unwrap();
    let http = client();

    let Receiver {
        child: first,
        ingest: first_ingest,
        ..
    } = Receiver::start(dir.path(), &store.spec()).await;
    let first = std::sync::Mutex::new(Some(first));
    let acks = std::sync::atomic::AtomicUsize::new(0);
    let acked = post_all(&http, &first_ingest, (0..EVENTS).collect(), |_| {
        let count = acks.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        if count == KILL_AFTER
            && let Some(mut process) = first.lock().unwrap().take()
        {
            process.kill().expect("SIGKILL");
            process.wait().unwrap();
            eprintln!(
                "killed after {KILL_AFTER} acks; the sink had {} deliveries",
                sink.received().len()
            );
        }
    })
    .await;
    assert!(
        acked.len() >= KILL_AFTER,
        "only {} events acknowledged",
        acked.len()
    );
    assert!(
        acked.len() < EVENTS,
        "the kill came too late to interrupt the burst"
    );

    let mut second = Receiver::start(dir.path(), &store.spec()).await;
    let rest: Vec<usize> = (0..EVENTS).filter(|n| !acked.contains(n)).collect();
    let resent = post_all(&http, &second.ingest, rest.clone(), |_| {}).await;
    assert_eq!(
        resent.len(),
        rest.len(),
        "the restarted receiver acknowledges the rest"
    );

    sink.wait_for(Duration::from_secs(120), |received| {
        let ids: BTreeSet<u64> = received
            .iter()
            .map(|captured| captured.body["entry"]["id"].as_u64().unwrap())
            .collect();
        ids.len() == EVENTS
    })
    .await;

    // SIGTERM: the receiver stops accepting and exits by itself, successfully.
    let pid = second.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = second.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the receiver ignored SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status:?}");
    let admin = format!("http://{}/healthz", second.admin);
    assert!(
        http.get(&admin).send().await.is_err(),
        "the admin port is closed after shutdown"
    );
}
