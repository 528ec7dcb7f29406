//! Several receivers on one NATS JetStream: three real receiver processes share the queue, one
//! is killed with SIGKILL and another restarted in the middle of 10,000 events, and every event
//! still reaches the sink; NATS itself restarted mid-run makes ingest answer 5xx (never 2xx while
//! it cannot store) until it is back, and the receiver recovers by itself.
//!
//! These tests always use JetStream (they start their own `nats-server -js`), whatever
//! `SWO_TEST_QUEUE` says.

mod support;

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use futures::{StreamExt, TryStreamExt, stream};
use support::{
    nats_server::NatsServer,
    receiver::{
        BinaryReceiver, CaptureSink, Captured, SECRET, article_event, client, free_port, manifests,
    },
};

const EVENTS: usize = 10_000;
const REPLICAS: usize = 3;
// The sink's concurrency in `manifests`: the most deliveries one replica has in flight, so the
// most a SIGKILL can make JetStream send twice.
const SINK_CONCURRENCY: usize = 16;
// Concurrent posts: the most events a SIGKILL can catch between storing and answering.
const POSTS_IN_FLIGHT: usize = 24;

/// The test manifests with a 1 s sink timeout, which makes the engine's lease (and so the
/// consumer's ack wait, after which a dead replica's deliveries go to another) about 32 s.
fn ha_manifests(sink_url: &str) -> String {
    manifests(sink_url).replace(
        "      delivery:\n",
        "      delivery:\n        timeout: 1s\n",
    )
}

async fn post(http: &reqwest::Client, ingest: &str, n: usize) -> Option<u16> {
    http.post(format!("http://{ingest}/v1/instances/cms/strapi"))
        .header("content-type", "application/json")
        .header("x-strapi-webhook-secret", SECRET)
        .body(article_event(n).to_string())
        .timeout(Duration::from_secs(15))
        .send()
        .await
        .ok()
        .map(|response| response.status().as_u16())
}

fn entry_ids(received: &[Captured]) -> BTreeSet<u64> {
    received
        .iter()
        .map(|captured| captured.body["entry"]["id"].as_u64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_receivers_deliver_every_event_through_a_sigkill_and_a_restart() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let sink = CaptureSink::start().await;
    std::fs::write(dir.path().join("manifests.yaml"), ha_manifests(&sink.url())).unwrap();
    let addresses: Vec<(String, String)> = (0..REPLICAS)
        .map(|_| {
            (
                format!("127.0.0.1:{}", free_port()),
                format!("127.0.0.1:{}", free_port()),
            )
        })
        .collect();
    let mut started = Vec::new();
    for (ingest, admin) in &addresses {
        started.push(Some(
            BinaryReceiver::start_on(dir.path(), &nats.url(), ingest.clone(), admin.clone()).await,
        ));
    }
    let receivers = Arc::new(Mutex::new(started));
    let acked = Arc::new(AtomicUsize::new(0));

    // Halfway, replica 0 dies; at three quarters, replica 1 is restarted (SIGTERM, then started
    // again on its ports).
    let chaos = {
        let (receivers, acked, addresses) = (
            Arc::clone(&receivers),
            Arc::clone(&acked),
            addresses.clone(),
        );
        let (dir, queue) = (dir.path().to_owned(), nats.url());
        tokio::spawn(async move {
            while acked.load(Ordering::SeqCst) < EVENTS / 2 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let mut killed = receivers.lock().unwrap()[0].take().unwrap();
            killed.child.kill().expect("SIGKILL");
            killed.child.wait().unwrap();
            eprintln!(
                "SIGKILLed replica 0 after {} acks",
                acked.load(Ordering::SeqCst)
            );
            while acked.load(Ordering::SeqCst) < EVENTS * 3 / 4 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let mut stopping = receivers.lock().unwrap()[1].take().unwrap();
            let pid = stopping.child.id().to_string();
            std::process::Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap();
            let status = stopping.child.wait().unwrap();
            assert!(status.success(), "replica 1 stopped with {status:?}");
            let (ingest, admin) = addresses[1].clone();
            let restarted = BinaryReceiver::start_on(&dir, &queue, ingest, admin).await;
            receivers.lock().unwrap()[1] = Some(restarted);
            eprintln!(
                "restarted replica 1 after {} acks",
                acked.load(Ordering::SeqCst)
            );
        })
    };

    // Round robin; an event whose receiver is down or answers 5xx goes to the next one, the way
    // a Service would route Strapi's call.
    let http = client();
    let started_at = std::time::Instant::now();
    stream::iter(0..EVENTS)
        .for_each_concurrent(POSTS_IN_FLIGHT, |n| {
            let (http, addresses, acked) = (&http, &addresses, &acked);
            async move {
                for attempt in 0..300 {
                    let (ingest, _) = &addresses[(n + attempt) % REPLICAS];
                    if post(http, ingest, n)
                        .await
                        .is_some_and(|status| status < 300)
                    {
                        acked.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                panic!("event {n} was never acknowledged");
            }
        })
        .await;
    eprintln!("{EVENTS} events acknowledged in {:?}", started_at.elapsed());
    chaos.await.unwrap();

    sink.wait_for(Duration::from_secs(240), |received| {
        entry_ids(received).len() == EVENTS
    })
    .await;
    eprintln!(
        "all {EVENTS} delivered {:?} after the first post",
        started_at.elapsed()
    );
    let mut per_id: BTreeMap<String, usize> = BTreeMap::new();
    for captured in sink.received() {
        *per_id.entry(captured.webhook_id).or_default() += 1;
    }
    let twice = per_id.values().filter(|count| **count > 1).count();
    eprintln!("{twice} deliveries sent more than once");
    // A post in flight to the killed replica may have been stored without an answer; the
    // client then sends it to another replica, which stores it again as a new event.
    assert!(
        per_id.len() - EVENTS <= POSTS_IN_FLIGHT,
        "{} events stored more than once",
        per_id.len() - EVENTS
    );
    assert!(
        twice <= SINK_CONCURRENCY,
        "{twice} deliveries were sent twice; only the killed replica's in-flight ones may be"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_answers_5xx_while_nats_is_down_and_recovers_by_itself() {
    let mut nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let sink = CaptureSink::start().await;
    std::fs::write(dir.path().join("manifests.yaml"), ha_manifests(&sink.url())).unwrap();
    let receiver = BinaryReceiver::start(dir.path(), &nats.url()).await;
    let http = client();
    let mut acknowledged = BTreeSet::new();
    for n in 0..50 {
        assert_eq!(post(&http, &receiver.ingest, n).await, Some(200));
        acknowledged.insert(n as u64);
    }

    nats.kill();
    let down: Vec<Option<u16>> = stream::iter(50..56)
        .map(|n| post(&http, &receiver.ingest, n))
        .buffer_unordered(6)
        .collect()
        .await;
    assert!(
        down.iter()
            .all(|status| status.is_some_and(|status| status >= 500)),
        "while NATS is down every ingest is a 5xx: {down:?}"
    );

    nats.restart();
    let mut n = 100;
    let recovered_at = loop {
        let status = post(&http, &receiver.ingest, n).await;
        if status == Some(200) {
            acknowledged.insert(n as u64);
            break n;
        }
        assert!(
            n < 400,
            "ingest did not recover after NATS came back: {status:?}"
        );
        n += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for n in recovered_at + 1..recovered_at + 50 {
        assert_eq!(post(&http, &receiver.ingest, n).await, Some(200));
        acknowledged.insert(n as u64);
    }

    sink.wait_for(Duration::from_secs(60), |received| {
        entry_ids(received).is_superset(&acknowledged)
    })
    .await;
}

/// With two replicas, one delivers the sink and the other claims nothing for it, so the sink's
/// token bucket, concurrency limit and coalesce window are those of a single engine. Which
/// replica delivered what is read from the per-replica counters in the `swo-state` bucket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_at_a_time_delivers_a_sink() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let sink = CaptureSink::start().await;
    std::fs::write(dir.path().join("manifests.yaml"), ha_manifests(&sink.url())).unwrap();
    let replicas = [
        BinaryReceiver::start(dir.path(), &nats.url()).await,
        BinaryReceiver::start(dir.path(), &nats.url()).await,
    ];
    let http = client();
    for n in 0..200 {
        let ingest = &replicas[n % replicas.len()].ingest;
        assert_eq!(post(&http, ingest, n).await, Some(200));
    }
    sink.wait_for(Duration::from_secs(60), |received| {
        entry_ids(received).len() == 200
    })
    .await;

    let nats_client = async_nats::connect(nats.url()).await.unwrap();
    let state = async_nats::jetstream::new(nats_client)
        .get_key_value("swo-state")
        .await
        .unwrap();
    let keys: Vec<String> = state.keys().await.unwrap().try_collect().await.unwrap();
    let mut delivered_by_replica = Vec::new();
    for key in keys.iter().filter(|key| key.starts_with("counters.")) {
        let counters: serde_json::Value =
            serde_json::from_slice(&state.get(key).await.unwrap().unwrap()).unwrap();
        delivered_by_replica.push(counters["delivered"].as_i64().unwrap());
    }
    assert_eq!(
        delivered_by_replica,
        vec![200],
        "exactly one replica delivered the sink"
    );
}
