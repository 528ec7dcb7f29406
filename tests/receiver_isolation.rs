//! Isolation: what one tenant's webhook, one sink or one client does never stalls, crashes or
//! wedges the receiver for the others (issue 13). Each test reproduces a way the receiver was
//! taken down and checks it no longer is.

mod support;

use std::{collections::BTreeMap, time::Duration};

use serde_json::json;
use strapi_webhook_operator::{
    api::StrapiWebhookSpec,
    config::{CompiledWebhook, InMemorySecrets, compile_webhook},
    queue::{DeliveryFilter, DeliveryState, SinkKey, now_millis},
    receiver::source::Snapshot,
};
use support::receiver;
use support::receiver::{
    CaptureSink, TestReceiver, TestStore, article_event, snapshot, webhook_spec,
};

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
    receiver::store_routed_delivery(queue.as_ref(), "poison-event", "poison", &crm).await;
    // Earlier runs of the receiver claimed it and died before any outcome, three times (the
    // lease running out is what a crash looks like to the queue).
    // JetStream keeps the first lease as its consumer's ack wait, also for the receiver started
    // below, so the lease is long enough for that receiver to finish with the delivery.
    for _ in 0..3 {
        let claimed = queue
            .claim(crm.clone(), now_millis(), 1, 1_000)
            .await
            .unwrap();
        assert_eq!(claimed.len(), 1);
        tokio::time::sleep(Duration::from_millis(1_100)).await;
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

/// A webhook `cms/bomb` whose templates are hostile but compile: a CPU bomb (nested loops) and
/// an output bomb (the entry printed 100,000 times), each on its own route and sink, plus a
/// filter near the cost budget. (The memory and compile bombs repeat strings with `*`,
/// which no longer compiles.)
fn bomb_webhook(sink_url: &str) -> CompiledWebhook {
    let cpu = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}{}";
    let memory = "{% for i in range(100000) %}{{ entry | tojson }}{% endfor %}";
    let list = format!("[{}]", vec!["1"; 100].join(", "));
    let heavy_filter = format!("{list}.all(uid, {list}.exists(media, uid == media))");
    let spec: StrapiWebhookSpec = serde_json::from_value(json!({
        "instanceRef": { "name": "strapi" },
        "events": ["entry.create"],
        "sinks": [
            { "name": "cpu", "http": { "url": sink_url } },
            { "name": "memory", "http": { "url": sink_url } },
        ],
        "routes": [
            { "name": "cpu", "sink": "cpu", "filter": heavy_filter, "http": { "body": cpu } },
            { "name": "memory", "sink": "memory", "http": { "body": memory } },
        ],
    }))
    .unwrap();
    compile_webhook("cms", "bomb", 1, &spec, &InMemorySecrets::new()).expect("the bombs compile")
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bomb_webhook_beside_a_normal_one_neither_delays_nor_loses_the_normal_events() {
    const EVENTS: usize = 1_000;
    let normal_sink = CaptureSink::start().await;
    let bomb_sink = CaptureSink::start().await;
    let normal = compile_webhook(
        "cms",
        "site",
        1,
        &webhook_spec(&[("crm", normal_sink.url())]),
        &InMemorySecrets::new(),
    )
    .unwrap();
    let snapshot = Snapshot::new(
        BTreeMap::from([(
            receiver::INSTANCE.to_owned(),
            vec![receiver::SECRET.to_owned()],
        )]),
        [normal, bomb_webhook(&bomb_sink.url())],
    );
    let receiver = TestReceiver::start(snapshot).await;
    let http = receiver::client();
    let rss_before = rss_kib();
    let mut peak_rss = rss_before;
    let mut latencies = Vec::with_capacity(EVENTS);
    for n in 0..EVENTS {
        let started = std::time::Instant::now();
        let status = receiver.post(&http, &article_event(n)).await;
        latencies.push(started.elapsed());
        assert!(status.is_success(), "event {n}: {status}");
        peak_rss = peak_rss.max(rss_kib());
    }
    latencies.sort();
    let p99 = latencies[EVENTS * 99 / 100];
    let p50 = latencies[EVENTS / 2];

    normal_sink
        .wait_for(Duration::from_secs(120), |received| {
            received.len() >= EVENTS
        })
        .await;
    let dead_filter = DeliveryFilter {
        state: Some(DeliveryState::Dead),
        webhook: Some("cms/bomb".into()),
        limit: 10 * EVENTS as u32,
        ..DeliveryFilter::default()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    let dead = loop {
        let dead = receiver
            .state
            .queue
            .list(dead_filter.clone())
            .await
            .unwrap();
        peak_rss = peak_rss.max(rss_kib());
        if dead.len() >= 2 * EVENTS || tokio::time::Instant::now() > deadline {
            break dead;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!(
        "ingest latency p50 {p50:?} p99 {p99:?}; RSS {rss_before} KiB before, peak {peak_rss} KiB; \
         {} normal deliveries, {} bomb deliveries dead-lettered",
        normal_sink.received().len(),
        dead.len()
    );
    assert_eq!(
        dead.len(),
        2 * EVENTS,
        "every bomb delivery is dead-lettered"
    );
    for delivery in &dead {
        let error = delivery.last_error.as_deref().unwrap_or_default();
        // The cpu route's filter is near the cost budget: on a loaded machine it may pass its
        // time limit before the template's fuel runs out; either way a bound is named.
        let expected: &[&str] = match delivery.sink.as_str() {
            "cpu" => &["exceeded the CPU limit", "exceeded its time limit"],
            _ => &["exceeded the output limit"],
        };
        assert!(
            expected.iter().any(|reason| error.contains(reason)),
            "{}: {error}",
            delivery.sink
        );
    }
    assert!(bomb_sink.received().is_empty());
    // Generous bounds for a debug build on a shared machine; the targets (p99 under
    // 50 ms, RSS under 128 MiB) are what the numbers printed above are compared with.
    assert!(p99 < Duration::from_millis(500), "p99 {p99:?}");
    assert!(peak_rss < 256 * 1024, "peak RSS {peak_rss} KiB");
    receiver.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_loris_connections_are_closed_after_the_header_timeout_and_ingest_still_answers() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const SLOW: usize = 1_000;
    let header_timeout = Duration::from_secs(2);
    let sink = CaptureSink::start().await;
    let mut settings = TestReceiver::settings();
    settings.server.header_read_timeout = header_timeout;
    settings.server.max_connections = 2 * SLOW;
    let store = TestStore::start();
    let queue = store.open().await;
    let receiver = TestReceiver::start_with_settings(
        store,
        queue,
        snapshot(&webhook_spec(&[("crm", sink.url())])),
        settings,
    )
    .await;

    let mut slow = Vec::with_capacity(SLOW);
    for _ in 0..SLOW {
        let mut stream = tokio::net::TcpStream::connect(receiver.ingest)
            .await
            .unwrap();
        stream
            .write_all(b"POST /v1/instances/cms/strapi HTTP/1.1\r\nhost: x\r\nx-slow: ")
            .await
            .unwrap();
        slow.push(stream);
    }
    // One more header byte on every connection, as a slow-loris client keeps them alive.
    for stream in &mut slow {
        stream.write_all(b"a").await.unwrap();
    }
    // From here on every slow connection is open.
    let all_open = std::time::Instant::now();
    let status = receiver.post(&receiver::client(), &article_event(1)).await;
    let answered = all_open.elapsed();
    assert!(status.is_success(), "{status}");

    // Every slow connection must be closed by the receiver within its header timeout; the margin
    // is for a loaded machine, where the receiver accepts (and starts each timer) late. A
    // receiver without the timeout keeps them open past any deadline.
    let deadline =
        tokio::time::Instant::from_std(all_open + header_timeout + Duration::from_secs(10));
    let mut closed = 0;
    for stream in &mut slow {
        let mut buffer = [0u8; 512];
        // A closed connection reads its end (after any error response hyper wrote).
        let read = tokio::time::timeout_at(deadline, async {
            loop {
                match stream.read(&mut buffer).await {
                    Ok(0) | Err(_) => return true,
                    Ok(_) => continue,
                }
            }
        })
        .await;
        closed += usize::from(read == Ok(true));
    }
    eprintln!(
        "with {SLOW} slow connections open, an ingest answered in {answered:?}; \
         {closed} slow connections closed, the last {:?} after all were open (header timeout \
         {header_timeout:?})",
        all_open.elapsed()
    );
    assert_eq!(closed, SLOW, "every slow connection is closed");
    // Generous for a debug build on a shared machine; the target is 100 ms.
    assert!(answered < Duration::from_secs(1), "{answered:?}");
    receiver.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_not_ready_while_storage_writes_fail_and_ready_again_after() {
    let store = TestStore::start();
    if store.nats.is_some() {
        return; // The SQLite file is what this test blocks.
    }
    let path = store.dir.path().join("queue.db");
    let queue = store.open().await;
    let sink = CaptureSink::start().await;
    let receiver = TestReceiver::start_on(
        store,
        queue,
        snapshot(&webhook_spec(&[("crm", sink.url())])),
    )
    .await;
    let http = receiver::client();
    let ready = format!("{}/readyz", receiver.admin_url());
    let readiness = || async { http.get(&ready).send().await.unwrap().status().as_u16() };
    assert_eq!(readiness().await, 200);

    // Another process holding the write lock makes every write fail, as a full disk does.
    let blocker = rusqlite::Connection::open(&path).unwrap();
    blocker.execute_batch("BEGIN EXCLUSIVE;").unwrap();
    let status = receiver.post(&http, &article_event(1)).await;
    assert_eq!(status.as_u16(), 503);
    assert_eq!(readiness().await, 503, "not ready while writes fail");

    blocker.execute_batch("COMMIT;").unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while readiness().await != 200 {
        assert!(tokio::time::Instant::now() < deadline, "never ready again");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let status = receiver.post(&http, &article_event(2)).await;
    assert!(status.is_success(), "{status}");
    receiver.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_beyond_the_default_open_files_limit_do_not_starve_ingest() {
    const IDLE: usize = 1_100;
    let store = TestStore::start();
    let sink = CaptureSink::start().await;
    std::fs::write(
        store.dir.path().join("manifests.yaml"),
        receiver::manifests(&sink.url()),
    )
    .unwrap();
    let receiver =
        receiver::BinaryReceiver::start_with_open_files(store.dir.path(), &store.spec(), 1024)
            .await;
    let mut idle = Vec::with_capacity(IDLE);
    for _ in 0..IDLE {
        idle.push(
            tokio::net::TcpStream::connect(&receiver.ingest)
                .await
                .unwrap(),
        );
    }
    let http = receiver::client();
    let started = std::time::Instant::now();
    let response = tokio::time::timeout(
        Duration::from_secs(5),
        http.post(format!(
            "http://{}/v1/instances/cms/strapi",
            receiver.ingest
        ))
        .header("content-type", "application/json")
        .header("x-strapi-webhook-secret", receiver::SECRET)
        .body(article_event(1).to_string())
        .send(),
    )
    .await
    .expect("ingest answers with 1,100 idle connections open")
    .unwrap();
    let answered = started.elapsed();
    assert!(response.status().is_success(), "{}", response.status());
    let ready = tokio::time::timeout(
        Duration::from_secs(5),
        http.get(format!("http://{}/readyz", receiver.admin)).send(),
    )
    .await
    .expect("readyz answers")
    .unwrap();
    assert!(ready.status().is_success());
    eprintln!(
        "with {IDLE} idle connections and a soft limit of 1,024 files, ingest answered in {answered:?}"
    );
    drop(idle);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_receiver_on_the_same_sqlite_file_exits_naming_it() {
    let store = TestStore::start();
    if store.nats.is_some() {
        return; // Several receivers on one JetStream is the supported setup.
    }
    let sink = CaptureSink::start().await;
    let dir = store.dir.path();
    std::fs::write(dir.join("manifests.yaml"), receiver::manifests(&sink.url())).unwrap();
    let _first = receiver::BinaryReceiver::start(dir, &store.spec()).await;
    let second = std::process::Command::new(env!("CARGO_BIN_EXE_strapi-webhook-operator"))
        .args([
            "receiver",
            "--ingest-addr",
            "127.0.0.1:0",
            "--admin-addr",
            "127.0.0.1:0",
        ])
        .arg(format!("--queue={}", store.spec()))
        .arg(format!(
            "--config-source=file:{}",
            dir.join("manifests.yaml").display()
        ))
        .output()
        .expect("running a second receiver");
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "the second receiver kept running");
    let path = dir.join("queue.db").display().to_string();
    assert!(
        stderr.contains("another receiver holds") && stderr.contains(&path),
        "{stderr}"
    );
}

/// Seconds of CPU used so far by this process (`own`) and by its children, the tenant processes
/// (`children`: live ones and those already waited for).
struct CpuSeconds {
    own: f64,
    children: f64,
}

fn cpu_seconds() -> CpuSeconds {
    let ticks_per_second = 100.0; // USER_HZ on Linux
    let fields = |stat: &str| -> Vec<u64> {
        // The fields after `(comm)`: utime, stime, cutime and cstime are the 12th to 15th.
        let rest = &stat[stat.rfind(')').map_or(0, |end| end + 2)..];
        rest.split_whitespace()
            .map(|field| field.parse().unwrap_or(0))
            .collect()
    };
    let own = fields(&std::fs::read_to_string("/proc/self/stat").unwrap());
    let mut children = own[13] + own[14];
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let listed = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        for child in listed.split_whitespace() {
            if let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) {
                let stat = fields(&stat);
                children += stat[11] + stat[12];
            }
        }
    }
    CpuSeconds {
        own: (own[11] + own[12]) as f64 / ticks_per_second,
        children: children as f64 / ticks_per_second,
    }
}

/// A webhook whose one route's template or filter is `route` (fields `filter`/`http`), beside
/// [`webhook_spec`]'s normal one, in one snapshot.
fn normal_and_hostile(normal_sink: &str, hostile_sink: &str, route: serde_json::Value) -> Snapshot {
    let normal = compile_webhook(
        "cms",
        "site",
        1,
        &webhook_spec(&[("crm", normal_sink.to_owned())]),
        &InMemorySecrets::new(),
    )
    .unwrap();
    let mut route = route;
    route["name"] = json!("hostile");
    route["sink"] = json!("hostile");
    let spec: StrapiWebhookSpec = serde_json::from_value(json!({
        "instanceRef": { "name": "strapi" },
        "events": ["entry.create"],
        "sinks": [{ "name": "hostile", "http": { "url": hostile_sink } }],
        "routes": [route],
    }))
    .unwrap();
    let hostile = compile_webhook("cms", "hostile", 1, &spec, &InMemorySecrets::new())
        .expect("the hostile webhook is within every compile-time bound");
    Snapshot::new(
        BTreeMap::from([(
            receiver::INSTANCE.to_owned(),
            vec![receiver::SECRET.to_owned()],
        )]),
        [normal, hostile],
    )
}

/// Waits until `count` deliveries of `cms/hostile` are dead and returns them.
async fn hostile_dead_letters(
    receiver: &TestReceiver,
    count: usize,
) -> Vec<strapi_webhook_operator::queue::DeliverySummary> {
    let filter = DeliveryFilter {
        state: Some(DeliveryState::Dead),
        webhook: Some("cms/hostile".into()),
        limit: 100,
        ..DeliveryFilter::default()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let dead = receiver.state.queue.list(filter.clone()).await.unwrap();
        if dead.len() >= count || tokio::time::Instant::now() > deadline {
            return dead;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_that_grows_a_string_past_the_memory_limit_is_dead_lettered_not_the_receiver() {
    const EVENTS: usize = 3;
    let (normal_sink, hostile_sink) = (CaptureSink::start().await, CaptureSink::start().await);
    // No `*`, no loop, one instruction of fuel: a built-in filter asked for a gigabyte of
    // indentation allocates it before anything is printed.
    let grow = "{{ entry.title|indent(1000000000, true) }}";
    let snapshot = normal_and_hostile(
        &normal_sink.url(),
        &hostile_sink.url(),
        json!({ "http": { "body": grow } }),
    );
    let receiver = TestReceiver::start(snapshot).await;
    let http = receiver::client();
    let rss_before = rss_kib();
    for n in 0..EVENTS {
        let status = receiver.post(&http, &article_event(n)).await;
        assert!(status.is_success(), "event {n}: {status}");
    }
    normal_sink
        .wait_for(Duration::from_secs(30), |received| received.len() >= EVENTS)
        .await;
    let dead = hostile_dead_letters(&receiver, EVENTS).await;
    let rss_after = rss_kib();
    eprintln!("RSS {rss_before} KiB before, {rss_after} KiB after; {dead:?}");
    assert_eq!(
        dead.len(),
        EVENTS,
        "every hostile delivery is dead-lettered"
    );
    for delivery in &dead {
        let error = delivery.last_error.as_deref().unwrap_or_default();
        assert!(
            error.contains("exceeded the memory limit of 64 MiB"),
            "the reason names the bound: {error}"
        );
    }
    assert!(hostile_sink.received().is_empty());
    // The gigabyte was asked for in a tenant process, never here.
    assert!(
        rss_after < rss_before + 64 * 1024,
        "RSS grew from {rss_before} to {rss_after} KiB"
    );
    receiver.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revalidation_tag_past_the_memory_limit_costs_that_tag_only() {
    // A delivery's templates render in one request to a tenant process; when one of them ends
    // the process, each is rendered again alone, so the path beside it still goes out.
    let site = CaptureSink::start().await;
    let spec: StrapiWebhookSpec = serde_json::from_value(json!({
        "instanceRef": { "name": "strapi" },
        "events": ["entry.create"],
        "sinks": [{ "name": "site", "nextjs": { "url": site.url(), "mode": "Revalidate" } }],
        "routes": [{
            "name": "articles",
            "sink": "site",
            "nextjs": {
                "tags": ["{{ entry.title|indent(1000000000, true) }}", "{{ model }}"],
                "paths": [{ "path": "/articles/{{ entry.documentId }}" }]
            }
        }],
    }))
    .unwrap();
    let receiver = TestReceiver::start(snapshot(&spec)).await;
    let status = receiver.post(&receiver::client(), &article_event(7)).await;
    assert!(status.is_success(), "{status}");
    site.wait_for(Duration::from_secs(30), |received| !received.is_empty())
        .await;
    let call = site.received()[0].body.clone();
    assert_eq!(call["tags"], json!(["article"]), "{call}");
    assert_eq!(call["paths"][0]["path"], "/articles/doc7", "{call}");
    receiver.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filter_slow_on_a_long_event_list_is_stopped_at_its_time_limit() {
    let (normal_sink, hostile_sink) = (CaptureSink::start().await, CaptureSink::start().await);
    // Within the cost budget (event lists are assumed to hold 1,000 elements), but the event
    // below carries 200,000: 20 million comparisons, seconds even in a release build.
    let numbers: Vec<String> = (1..=100).map(|n| n.to_string()).collect();
    let filter = format!(
        "entry.tags.exists(t, [{}].exists(u, u == t))",
        numbers.join(", ")
    );
    let snapshot = normal_and_hostile(
        &normal_sink.url(),
        &hostile_sink.url(),
        json!({ "filter": filter }),
    );
    let receiver = TestReceiver::start(snapshot).await;
    let http = receiver::client();
    let mut event = article_event(1);
    event["entry"]["tags"] = json!(vec![0; 200_000]);
    let status = receiver.post(&http, &event).await;
    assert!(status.is_success(), "{status}");
    normal_sink
        .wait_for(Duration::from_secs(30), |received| !received.is_empty())
        .await;
    let dead = hostile_dead_letters(&receiver, 1).await;
    assert_eq!(dead.len(), 1, "the filtered delivery is dead-lettered");
    let error = dead[0].last_error.as_deref().unwrap_or_default();
    assert!(
        error.contains("time limit"),
        "the reason names the bound: {error}"
    );
    // The evaluation was stopped (its tenant process is killed after 1 s), not left running:
    // over the next seconds neither this process nor the tenant processes keep a core busy
    // with it. (Left running in a thread here, it used 1.2 s of these 3 s on a machine with a
    // load of 18 on 2 cores; stopped, 0.00 s.)
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = cpu_seconds();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = cpu_seconds();
    let (own, children) = (after.own - before.own, after.children - before.children);
    eprintln!("CPU in 3 s: {own:.2} s here, {children:.2} s in tenant processes; {error}");
    assert!(
        own < 0.5 && children < 0.5,
        "{own:.1} s of CPU here and {children:.1} s in tenant processes in 3 s: the evaluation \
         kept running"
    );
    assert!(hostile_sink.received().is_empty());
    receiver.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_acknowledged_while_the_router_waits_on_tenant_filters_and_routed_after() {
    use strapi_webhook_operator::receiver::tenant;
    const EVENTS: usize = 20;
    let sink = CaptureSink::start().await;
    let mut spec = serde_json::to_value(webhook_spec(&[("crm", sink.url())])).unwrap();
    spec["routes"][0]["filter"] = json!("true");
    let receiver = TestReceiver::start(snapshot(&serde_json::from_value(spec).unwrap())).await;
    // Every filter slot held by an evaluation that ends only when the test lets it: the router
    // cannot evaluate this webhook's filter until then.
    let (started, mut running) = tokio::sync::mpsc::unbounded_channel();
    let mut gates = Vec::new();
    for _ in 0..tenant::SLOTS {
        let (gate, wait) = std::sync::mpsc::channel::<()>();
        gates.push(gate);
        let (started, wait) = (started.clone(), std::sync::Mutex::new(wait));
        tokio::spawn(tenant::run_each(
            tenant::Kind::Filter,
            Duration::from_secs(600),
            std::sync::Arc::new(vec![()]),
            move |()| {
                started.send(()).unwrap();
                // Returns when the test drops the gate.
                let _ = wait.lock().unwrap().recv();
            },
        ));
    }
    for _ in 0..tenant::SLOTS {
        running.recv().await.unwrap();
    }

    let http = receiver::client();
    for n in 0..EVENTS {
        let status = receiver.post(&http, &article_event(n)).await;
        assert!(status.is_success(), "event {n}: {status}");
    }
    let stats: serde_json::Value = receiver.admin_json("/v1/stats").await;
    assert_eq!(stats["unrouted"], EVENTS, "{stats}");
    assert!(sink.received().is_empty());

    drop(gates);
    sink.wait_for(Duration::from_secs(30), |received| received.len() >= EVENTS)
        .await;
    let dead = DeliveryFilter {
        state: Some(DeliveryState::Dead),
        limit: 100,
        ..DeliveryFilter::default()
    };
    assert!(
        receiver.state.queue.list(dead).await.unwrap().is_empty(),
        "waiting for a filter slot is not the filter exceeding its time limit"
    );
    assert_eq!(receiver.state.queue.unrouted_count().await.unwrap(), 0);
    receiver.shutdown().await;
}
