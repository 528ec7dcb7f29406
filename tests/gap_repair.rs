//! Gap repair against the real test Strapi: what Strapi fired while the receiver was down
//! reaches the sinks as recovered events, and nothing that arrived normally is recovered again.
//!
//! Each test registers a catch-all webhook of its own instance (`cms/gap-<id>`) in the shared
//! Strapi, pointing at an in-process receiver on loopback, and looks only at its own documents:
//! other tests change content in the same Strapi at the same time.

mod support;

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use axum::http::StatusCode;
use futures::{StreamExt, stream};
use serde_json::{Value, json};
use strapi_webhook_operator::{
    config::{InMemorySecrets, compile_webhook},
    event::SECRET_HEADER,
    key::ObjectKey,
    receiver::{repair::RECOVERED_HEADER, source::Snapshot},
    registration::{self, Desired},
    repair::{self, CheckSettings, RepairClient, Report, Target},
    strapi::{Document, StrapiClient},
};
use support::receiver;
use support::receiver::{SECRET, TestReceiver, webhook_spec};
use support::{CaptureServer, CapturedRequest, StrapiServer};

const ARTICLE: &str = "api::article.article";
const PAGE: &str = "api::page.page";
const COMMENT: &str = "api::comment.comment";
// A short settle time keeps the outage test quick. Under a burst Strapi's calls trail its writes
// by more (it calls the whole suite's webhooks one after the other for each event, and a webhook
// of another test that stopped answering holds one of its five workers), which the check must
// tell from a loss: `BURST_SETTLE`.
const SETTLE: Duration = Duration::from_secs(3);
const BURST_SETTLE: Duration = Duration::from_secs(10);
const EVENTS: [&str; 4] = [
    "entry.create",
    "entry.update",
    "entry.delete",
    "entry.publish",
];

/// One test's instance: its receiver, its registration in Strapi and its sink.
struct Setup {
    // Keeps a private Strapi (outside scripts/with-strapi.sh) running for the test.
    _strapi: StrapiServer,
    client: StrapiClient,
    receiver: Option<TestReceiver>,
    admin_url: String,
    sink: CaptureServer,
    instance: String,
    tag: String,
}

impl Setup {
    async fn start() -> Self {
        let strapi = StrapiServer::shared().await;
        let client = strapi.client();
        let sink = CaptureServer::start().await;
        let tag = uuid::Uuid::now_v7().simple().to_string();
        let name = format!("gap-{}", &tag[tag.len() - 10..]);
        let instance = format!("cms/{name}");
        let mut spec = webhook_spec(&[("site", sink.url().to_owned())]);
        spec.instance_ref.name = name.clone();
        let webhook = compile_webhook("cms", "site", 1, &spec, &InMemorySecrets::new()).unwrap();
        let snapshot = Snapshot::new(
            BTreeMap::from([(instance.clone(), vec![SECRET.to_owned()])]),
            [webhook],
        );
        let receiver = TestReceiver::start(snapshot).await;
        let desired = Desired {
            instance: instance.clone(),
            endpoint: registration::endpoint(
                &format!("http://{}", receiver.ingest),
                &ObjectKey::new("cms", &name),
            ),
            secret: (SECRET_HEADER.to_owned(), SECRET.to_owned()),
            events: EVENTS.iter().map(|event| (*event).to_owned()).collect(),
        };
        registration::ensure(&client, &desired).await.unwrap();
        Self {
            _strapi: strapi,
            client,
            admin_url: receiver.admin_url(),
            receiver: Some(receiver),
            sink,
            instance,
            tag,
        }
    }

    async fn check(&self) -> Report {
        self.check_with(SETTLE).await
    }

    async fn check_with(&self, settle: Duration) -> Report {
        let events: BTreeSet<String> = EVENTS.iter().map(|event| (*event).to_owned()).collect();
        let target = Target {
            instance: &self.instance,
            strapi: &self.client,
            events: &events,
            models: None,
        };
        let settings = CheckSettings {
            settle,
            ..CheckSettings::default()
        };
        repair::check(
            &target,
            &RepairClient::new(&self.admin_url, Some(&receiver::admin_token())),
            &settings,
        )
        .await
        .unwrap()
    }

    /// What the sink received for this test's documents (their text carries the tag).
    fn mine(&self) -> Vec<CapturedRequest> {
        self.sink
            .requests()
            .into_iter()
            .filter(|request| request.json()["entry"].to_string().contains(&self.tag))
            .collect()
    }

    async fn wait_for_mine(&self, count: usize, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while self.mine().len() < count {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the sink got {} of {count} events of this test within {limit:?}",
                self.mine().len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn finish(mut self) {
        registration::remove(&self.client, &self.instance)
            .await
            .unwrap();
        if let Some(receiver) = self.receiver.take() {
            receiver.shutdown().await;
        }
    }
}

impl Drop for Setup {
    // A failed test still removes its registration: Strapi calls every registered webhook one
    // after the other for each event, so a dead one slows every later test on the shared Strapi.
    fn drop(&mut self) {
        if self.receiver.is_none() {
            return;
        }
        let (client, instance) = (self.client.clone(), self.instance.clone());
        tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(async {
                let _ = registration::remove(&client, &instance).await;
            });
        });
    }
}

/// Creates a document of `uid` whose text carries `tag`; returns its documentId.
async fn create(client: &StrapiClient, uid: &str, text: &str) -> String {
    let data = match uid {
        COMMENT => json!({"author": "reader", "text": text}),
        _ => json!({ "title": text }),
    };
    client.create_entry(uid, &data).await.unwrap().document_id
}

async fn update(client: &StrapiClient, uid: &str, document_id: &str, text: &str) {
    let data = match uid {
        COMMENT => json!({ "text": text }),
        _ => json!({ "title": text }),
    };
    client
        .update_document(Document::Entry { uid, document_id }, &data)
        .await
        .unwrap();
}

fn text_of(body: &Value) -> String {
    let entry = &body["entry"];
    entry["title"]
        .as_str()
        .or_else(|| entry["text"].as_str())
        .unwrap_or_default()
        .to_owned()
}

fn is_recovered(request: &CapturedRequest) -> bool {
    request.header(RECOVERED_HEADER) == Some("true")
}

#[tokio::test(flavor = "multi_thread")]
async fn what_strapi_fired_while_the_receiver_was_down_reaches_the_sink_marked_recovered() {
    let mut setup = Setup::start().await;
    let tag = setup.tag.clone();
    let types = [ARTICLE, PAGE, COMMENT];
    // Documents to change later: 20 to update, 3 drafts to publish.
    let mut existing = Vec::new();
    for n in 0..20 {
        let uid = types[n % 3];
        let document_id = create(&setup.client, uid, &format!("{n} {tag}")).await;
        existing.push((uid, document_id));
    }
    let mut drafts = Vec::new();
    for n in 0..3 {
        let uid = [ARTICLE, PAGE][n % 2];
        let document_id = create(&setup.client, uid, &format!("draft {n} {tag}")).await;
        drafts.push((uid, document_id));
    }
    setup.wait_for_mine(23, Duration::from_secs(120)).await;
    let first = setup.check().await;
    assert_eq!(first.baselined, first.content_types, "{first:?}");
    let quiet = setup.check().await;
    assert!(quiet.recovered.is_empty(), "{quiet:?}");
    // The cost of a check: the content-type list, then one call per content type and version
    // listed (drafts and published versions where there are drafts), each under 100 changes.
    let content_types = setup.client.list_content_types().await.unwrap();
    let listings: u32 = content_types
        .iter()
        .filter(|content_type| content_type.uid.starts_with("api::"))
        .map(|content_type| if content_type.draft_and_publish { 2 } else { 1 })
        .sum();
    assert_eq!(quiet.strapi_calls, 1 + listings, "{quiet:?}");
    eprintln!(
        "a check of {} content types made {} admin API calls",
        quiet.content_types, quiet.strapi_calls
    );
    let normal = setup.mine().len();

    let stopped = setup.receiver.take().unwrap().stop_for_restart().await;
    // While the receiver is stopped its port answers 503, as a receiver that cannot store does:
    // Strapi gives up on each call at once, as it does on a refused connection, and the test can
    // see that it tried every one before the receiver comes back.
    let refusing =
        CaptureServer::answering_on(stopped.bind_ingest().await, StatusCode::SERVICE_UNAVAILABLE)
            .await;
    // The final text each document must have at the sink, and the event that carries it.
    let mut expected: BTreeMap<String, (&str, String)> = BTreeMap::new();
    for (n, (uid, document_id)) in existing.iter().enumerate() {
        let text = format!("updated {n} {tag}");
        update(&setup.client, uid, document_id, &text).await;
        expected.insert(document_id.clone(), ("entry.update", text));
    }
    for n in 0..5 {
        let text = format!("created {n} {tag}");
        let document_id = create(&setup.client, types[n % 3], &text).await;
        expected.insert(document_id, ("entry.create", text));
    }
    for (n, (uid, document_id)) in drafts.iter().enumerate() {
        setup
            .client
            .publish(Document::Entry { uid, document_id })
            .await
            .unwrap();
        expected.insert(
            document_id.clone(),
            ("entry.publish", format!("draft {n} {tag}")),
        );
    }
    assert_eq!(expected.len(), 28);
    // Strapi sends from a queue that trails its writes (up to 14 s measured under load, minutes
    // when the whole suite edits the shared Strapi), in order: wait until it has tried (and
    // failed) the call of the last change, so the calls before it were tried too. It never tries
    // a failed call again.
    let (_, last) = drafts.last().unwrap();
    let document_of = |request: &CapturedRequest| {
        request.json()["entry"]["documentId"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    let tried = |requests: Vec<CapturedRequest>| -> BTreeSet<String> {
        requests
            .iter()
            .filter(|request| {
                let body = request.json();
                expected
                    .get(&document_of(request))
                    .is_some_and(|(event, text)| body["event"] == *event && text_of(&body) == *text)
            })
            .map(document_of)
            .collect()
    };
    let refused = support::eventually(Duration::from_secs(180), || {
        let tried = tried(refusing.requests());
        async move {
            if tried.contains(last) {
                Ok(tried)
            } else {
                Err(format!(
                    "Strapi has tried {} of the 28 calls, not the last",
                    tried.len()
                ))
            }
        }
    })
    .await;
    drop(refusing);
    assert_eq!(setup.mine().len(), normal, "the receiver was down");

    setup.receiver = Some(stopped.start().await);
    let arrived_normally = || -> BTreeSet<String> {
        setup.mine()[normal..]
            .iter()
            .filter(|request| !is_recovered(request))
            .map(document_of)
            .filter(|document_id| expected.contains_key(document_id))
            .collect()
    };
    let recovered_of_mine = |reports: &[Report]| -> BTreeSet<String> {
        reports
            .iter()
            .flat_map(|report| &report.recovered)
            .filter(|recovered| expected.contains_key(&recovered.document_id))
            .map(|recovered| recovered.document_id.clone())
            .collect()
    };
    // A call Strapi tried before the receiver was back is recovered, never sent again. One it
    // tried on a connection that had closed (a keep-alive from before the stop), or connected
    // as the receiver came back, is not among the refused: it arrives either way, never both.
    let mut reports = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    while recovered_of_mine(&reports).len() + arrived_normally().len() < 28
        && tokio::time::Instant::now() < deadline
    {
        reports.push(setup.check().await);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let recovered = recovered_of_mine(&reports);
    let normally = arrived_normally();
    eprintln!(
        "{} changes refused, {} recovered, {} delivered late by Strapi itself",
        refused.len(),
        recovered.len(),
        normally.len()
    );
    assert!(
        recovered.is_disjoint(&normally),
        "delivered twice: {:?}",
        recovered.intersection(&normally).collect::<Vec<_>>()
    );
    assert_eq!(recovered.len() + normally.len(), 28, "{reports:#?}");
    assert!(
        refused.is_subset(&recovered),
        "refused but not recovered: {:?}",
        refused.difference(&recovered).collect::<Vec<_>>()
    );
    setup
        .wait_for_mine(normal + 28, Duration::from_secs(120))
        .await;
    let delivered = setup.mine();
    let after: Vec<&CapturedRequest> = delivered[normal..].iter().collect();
    for request in &after {
        let document_id = document_of(request);
        assert_eq!(
            is_recovered(request),
            recovered.contains(&document_id),
            "document {document_id} is marked recovered exactly when it was"
        );
    }
    let mut seen = BTreeMap::new();
    for request in &after {
        let body = request.json();
        seen.insert(
            document_of(request),
            (body["event"].as_str().unwrap().to_owned(), text_of(&body)),
        );
    }
    for (document_id, (event, text)) in &expected {
        assert_eq!(
            seen.get(document_id),
            Some(&((*event).to_owned(), text.clone())),
            "document {document_id}"
        );
    }
    // `deliveries list` shows the recovered ones as recovered.
    let listed: Vec<Value> = receiver::client()
        .get(format!("{}/v1/deliveries?limit=1000", setup.admin_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let marked = listed
        .iter()
        .filter(|delivery| delivery["recovered"] == json!(true))
        .count();
    assert!(
        marked >= recovered.len(),
        "{marked} deliveries listed as recovered"
    );
    // Nothing more is recovered: each change was recovered once.
    let again = setup.check().await;
    assert!(
        again
            .recovered
            .iter()
            .all(|recovered| !expected.contains_key(&recovered.document_id)),
        "{again:#?}"
    );
    setup.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn with_the_receiver_up_nothing_is_recovered_and_nothing_is_delivered_twice() {
    const CHANGES: usize = 500;
    const CLIENTS: usize = 8;
    let setup = Arc::new(Setup::start().await);
    let tag = setup.tag.clone();
    let mut documents: Vec<(&str, String)> = Vec::new();
    for n in 0..CLIENTS {
        let uid = [ARTICLE, PAGE, COMMENT][n % 3];
        documents.push((uid, create(&setup.client, uid, &format!("{n} {tag}")).await));
    }
    setup.wait_for_mine(CLIENTS, Duration::from_secs(120)).await;
    setup.check().await;
    // Checks run back to back while editors change the documents.
    let editing = Arc::new(AtomicBool::new(true));
    let checker = {
        let (setup, editing) = (Arc::clone(&setup), Arc::clone(&editing));
        tokio::spawn(async move {
            let mut reports = Vec::new();
            while editing.load(Ordering::Relaxed) {
                reports.push(setup.check_with(BURST_SETTLE).await);
            }
            reports
        })
    };
    // Half the changes edit the same few documents over and over, half create new ones (which
    // the checks compare once they are older than the settle time).
    let created = std::sync::Mutex::new(Vec::new());
    stream::iter(0..CHANGES)
        .for_each_concurrent(CLIENTS, |n| {
            let (setup, documents, tag, created) = (&setup, &documents, &tag, &created);
            async move {
                let text = format!("edit {n} {tag}");
                if n % 2 == 0 {
                    let uid = [ARTICLE, PAGE, COMMENT][n % 3];
                    let document_id = create(&setup.client, uid, &text).await;
                    created.lock().unwrap().push(document_id);
                } else {
                    let (uid, document_id) = &documents[n % CLIENTS];
                    update(&setup.client, uid, document_id, &text).await;
                }
            }
        })
        .await;
    documents.extend(
        created
            .into_inner()
            .unwrap()
            .into_iter()
            .map(|document_id| (ARTICLE, document_id)),
    );
    setup
        .wait_for_mine(CLIENTS + CHANGES, Duration::from_secs(300))
        .await;
    editing.store(false, Ordering::Relaxed);
    let mut reports = checker.await.unwrap();
    tokio::time::sleep(BURST_SETTLE).await;
    reports.push(setup.check_with(BURST_SETTLE).await);
    let recovered: Vec<_> = reports
        .iter()
        .flat_map(|report| &report.recovered)
        .filter(|recovered| documents.iter().any(|(_, id)| *id == recovered.document_id))
        .collect();
    let recovering: Vec<&Report> = reports
        .iter()
        .filter(|report| !report.recovered.is_empty())
        .collect();
    assert!(recovered.is_empty(), "{recovering:#?}");
    let compared: usize = reports.iter().map(|report| report.compared).sum();
    assert!(
        reports.len() > 2 && compared >= CHANGES / 4,
        "checks compared while the editors worked: {reports:#?}"
    );
    let mine = setup.mine();
    assert_eq!(mine.len(), CLIENTS + CHANGES);
    assert!(mine.iter().all(|request| !is_recovered(request)));
    let versions: BTreeSet<String> = mine
        .iter()
        .map(|request| {
            let body = request.json();
            format!(
                "{}@{}",
                body["entry"]["documentId"], body["entry"]["updatedAt"]
            )
        })
        .collect();
    assert_eq!(versions.len(), mine.len(), "an event was delivered twice");
    Arc::into_inner(setup).unwrap().finish().await;
}

/// The real receiver binary, killed with SIGKILL at random moments while eight editors update
/// documents and restarted at once on the same ports and queue: every document's last state
/// reaches the sink, through Strapi's own call or recovered.
#[tokio::test(flavor = "multi_thread")]
async fn every_last_state_reaches_the_sink_when_the_receiver_is_killed_during_a_burst() {
    const UPDATES: usize = 500;
    const CLIENTS: usize = 8;
    const DOCUMENTS: usize = 16;
    let strapi = StrapiServer::shared().await;
    let client = strapi.client();
    let sink = CaptureServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let tag = uuid::Uuid::now_v7().simple().to_string();
    let name = format!("gapkill-{}", &tag[tag.len() - 10..]);
    let instance = format!("cms/{name}");
    std::fs::write(
        dir.path().join("manifests.yaml"),
        format!(
            r#"
apiVersion: v1
kind: Secret
metadata: {{ name: {secret_name}, namespace: cms }}
stringData: {{ secret: {SECRET} }}
---
apiVersion: webhooks.strapi-operator.dev/v1alpha1
kind: StrapiInstance
metadata: {{ name: {name}, namespace: cms }}
spec:
  url: http://127.0.0.1:1337
  auth: {{ apiToken: {{ name: strapi-admin, key: token }} }}
---
apiVersion: webhooks.strapi-operator.dev/v1alpha1
kind: StrapiWebhook
metadata: {{ name: site, namespace: cms, generation: 1 }}
spec:
  instanceRef: {{ name: {name} }}
  events: [entry.create, entry.update]
  sinks:
    - name: site
      http: {{ url: "{sink}" }}
      delivery:
        backoff: {{ initial: 50ms, max: 500ms }}
        rateLimit: {{ perSecond: 10000, burst: 1000 }}
        concurrency: 16
  routes:
    - {{ name: all, sink: site, match: {{ uids: ["{ARTICLE}"] }} }}
"#,
            secret_name = strapi_webhook_operator::api::shared_secret::name(&name),
            sink = sink.url(),
        ),
    )
    .unwrap();
    let queue = format!("sqlite:{}", dir.path().join("queue.db").display());
    let receiver = receiver::BinaryReceiver::start(dir.path(), &queue).await;
    let (ingest, admin) = (receiver.ingest.clone(), receiver.admin.clone());
    let desired = Desired {
        instance: instance.clone(),
        endpoint: registration::endpoint(
            &format!("http://{ingest}"),
            &ObjectKey::new("cms", &name),
        ),
        secret: (SECRET_HEADER.to_owned(), SECRET.to_owned()),
        events: ["entry.create", "entry.update"]
            .map(str::to_owned)
            .into_iter()
            .collect(),
    };
    registration::ensure(&client, &desired).await.unwrap();
    let repair = RepairClient::new(&format!("http://{admin}"), Some(&receiver::admin_token()));
    let events: BTreeSet<String> = desired.events.clone();
    let target = Target {
        instance: &instance,
        strapi: &client,
        events: &events,
        models: None,
    };
    let settings = CheckSettings {
        settle: SETTLE,
        ..CheckSettings::default()
    };
    repair::check(&target, &repair, &settings).await.unwrap();
    let mut documents = Vec::new();
    for n in 0..DOCUMENTS {
        documents.push(create(&client, ARTICLE, &format!("{n} {tag}")).await);
    }

    // The killer: SIGKILL at a random moment every 0.5 to 2.5 s, restart at once.
    let bursting = Arc::new(AtomicBool::new(true));
    let killer = {
        let (bursting, dir, queue) = (Arc::clone(&bursting), dir.path().to_owned(), queue.clone());
        tokio::spawn(async move {
            let mut receiver = receiver;
            let mut kills = 0;
            while bursting.load(Ordering::Relaxed) {
                let pause = rand::random_range(500..2_500);
                tokio::time::sleep(Duration::from_millis(pause)).await;
                receiver.child.kill().unwrap();
                receiver.child.wait().unwrap();
                kills += 1;
                receiver = receiver::BinaryReceiver::start_on(
                    &dir,
                    &queue,
                    receiver.ingest.clone(),
                    receiver.admin.clone(),
                )
                .await;
            }
            (receiver, kills)
        })
    };
    // Each document's last update, as Strapi answered it.
    let last = std::sync::Mutex::new(BTreeMap::<String, (i64, String)>::new());
    stream::iter(0..UPDATES)
        .for_each_concurrent(CLIENTS, |n| {
            let (client, documents, tag, last) = (&client, &documents, &tag, &last);
            async move {
                let document_id = &documents[n % DOCUMENTS];
                let title = format!("edit {n} {tag}");
                let entry = client
                    .update_document(
                        Document::Entry {
                            uid: ARTICLE,
                            document_id,
                        },
                        &json!({ "title": title }),
                    )
                    .await
                    .unwrap();
                let at = entry.fields["updatedAt"]
                    .as_str()
                    .and_then(strapi_webhook_operator::receiver::repair::strapi_millis)
                    .unwrap();
                let mut last = last.lock().unwrap();
                let known = last
                    .entry(document_id.clone())
                    .or_insert((at, title.clone()));
                if at >= known.0 {
                    *known = (at, title);
                }
            }
        })
        .await;
    bursting.store(false, Ordering::Relaxed);
    let (receiver, kills) = killer.await.unwrap();
    assert!(kills >= 2, "the receiver was killed {kills} times");
    let last = last.into_inner().unwrap();

    let at_sink = |document_id: &str, title: &str| {
        sink.requests().iter().any(|request| {
            let body = request.json();
            body["entry"]["documentId"] == document_id && body["entry"]["title"] == title
        })
    };
    let missing = || -> Vec<(String, String)> {
        last.iter()
            .filter(|(document_id, (_, title))| !at_sink(document_id, title))
            .map(|(document_id, (_, title))| (document_id.clone(), title.clone()))
            .collect()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    let mut recovered = 0;
    while !missing().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "last states missing at the sink after {kills} kills: {:?}",
            missing()
        );
        recovered += repair::check(&target, &repair, &settings)
            .await
            .unwrap()
            .recovered
            .len();
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    eprintln!("{kills} kills during {UPDATES} updates; {recovered} events recovered");
    registration::remove(&client, &instance).await.unwrap();
    drop(receiver);
}
