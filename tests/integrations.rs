//! The three example integrations end to end: the real Strapi test app fires its webhooks at the
//! real receiver, which routes them with the examples in `examples/` to loopback servers that
//! stand in for a Next.js site, a Slack incoming webhook and a CRM.
//!
//! Strapi is shared by the suite and sends every test's events to every webhook subscribed to
//! them, so each test looks only for the entries it made itself (unique slugs, names, authors).

mod support;

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use examples::example_at;
use serde_json::{Value, json};
use strapi_webhook_operator::{
    api::{SecretKeyRef, StrapiWebhookSpec},
    config::{CompiledWebhook, InMemorySecrets, SecretResolver, compile_webhook},
    event::SECRET_HEADER,
    receiver::source::Snapshot,
    strapi::{Document, StrapiClient, WebhookSpec},
};
use support::receiver::{INSTANCE, SECRET, TestReceiver};
use support::{CaptureServer, CapturedRequest, StrapiServer};
use support::{examples, nextjs};

const PATIENCE: Duration = Duration::from_secs(60);

/// A receiver routing `webhooks` for the test instance, and a Strapi webhook that feeds it.
struct Pipeline {
    client: StrapiClient,
    receiver: TestReceiver,
    registration: String,
    _strapi: StrapiServer,
}

impl Pipeline {
    async fn start(webhooks: Vec<CompiledWebhook>, events: &[&str]) -> Self {
        let strapi = StrapiServer::shared().await;
        let client = strapi.client();
        let receiver = TestReceiver::start(Snapshot::new(
            BTreeMap::from([(INSTANCE.to_owned(), vec![SECRET.to_owned()])]),
            webhooks,
        ))
        .await;
        let registration = client
            .create_webhook(&WebhookSpec {
                name: unique("integration"),
                url: format!("http://{}/v1/instances/{INSTANCE}", receiver.ingest),
                headers: BTreeMap::from([(SECRET_HEADER.to_owned(), SECRET.to_owned())]),
                events: events.iter().map(|event| event.to_string()).collect(),
                enabled: true,
            })
            .await
            .unwrap()
            .id;
        Self {
            client,
            receiver,
            registration,
            _strapi: strapi,
        }
    }

    async fn stop(self) {
        self.client
            .delete_webhook(&self.registration)
            .await
            .unwrap();
        self.receiver.shutdown().await;
    }
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::now_v7().simple())
}

fn at(capture: &CaptureServer, path: &str) -> String {
    format!("{}{path}", capture.url())
}

/// The tags and the paths (with their `type`, sent only for layouts and route patterns) the site
/// was asked to revalidate.
type Revalidated = (BTreeSet<String>, BTreeSet<(String, Option<String>)>);

fn revalidated(requests: &[CapturedRequest]) -> Revalidated {
    let mut tags = BTreeSet::new();
    let mut paths = BTreeSet::new();
    for request in requests {
        let body = request.json();
        tags.extend(
            body["tags"]
                .as_array()
                .unwrap()
                .iter()
                .map(|tag| tag.as_str().unwrap().to_owned()),
        );
        paths.extend(body["paths"].as_array().unwrap().iter().map(|path| {
            (
                path["path"].as_str().unwrap().to_owned(),
                path.get("type")
                    .map(|kind| kind.as_str().unwrap().to_owned()),
            )
        }));
    }
    (tags, paths)
}

/// A Next.js sink in `Forward` mode for articles, next to the `Revalidate` example.
fn forward_articles(url: &str) -> CompiledWebhook {
    let (namespace, instance) = INSTANCE.split_once('/').unwrap();
    let spec: StrapiWebhookSpec = serde_json::from_value(json!({
        "instanceRef": {"name": instance},
        "events": ["entry.create", "entry.update", "entry.delete", "entry.publish", "entry.unpublish"],
        "sinks": [{"name": "legacy-site", "nextjs": {
            "url": url, "mode": "Forward", "secretRef": {"name": "nextjs-revalidate", "key": "secret"}
        }}],
        "routes": [{"name": "articles", "sink": "legacy-site", "match": {"models": ["article"]}}],
    }))
    .unwrap();
    let mut secrets = InMemorySecrets::new();
    secrets.insert(namespace, "nextjs-revalidate", "secret", "change-me");
    compile_webhook(namespace, "forward", 1, &spec, &secrets).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_edits_revalidate_the_nextjs_site_in_both_modes() {
    const EVENTS: [&str; 5] = [
        "entry.create",
        "entry.update",
        "entry.delete",
        "entry.publish",
        "entry.unpublish",
    ];
    let (namespace, instance) = INSTANCE.split_once('/').unwrap();
    let site = CaptureServer::start().await;
    let legacy = CaptureServer::start().await;
    // Strapi's own bytes, to compare with what Forward mode passes on.
    let tap = CaptureServer::start().await;
    let pipeline = Pipeline::start(
        vec![
            example_at(
                "nextjs-revalidation.yaml",
                namespace,
                instance,
                &at(&site, "/api/revalidate"),
            ),
            forward_articles(&at(&legacy, "/api/revalidate")),
        ],
        &EVENTS,
    )
    .await;
    let strapi = &pipeline.client;
    let tap_hook = strapi
        .create_webhook(&WebhookSpec {
            name: unique("integration-tap"),
            url: at(&tap, "/tap"),
            headers: BTreeMap::new(),
            events: EVENTS.iter().map(|event| event.to_string()).collect(),
            enabled: true,
        })
        .await
        .unwrap();

    let article_slug = unique("article");
    let article = strapi
        .create_entry(
            "api::article.article",
            &json!({"title": "Hello", "slug": article_slug, "body": "first"}),
        )
        .await
        .unwrap();
    let article_doc = Document::Entry {
        uid: "api::article.article",
        document_id: &article.document_id,
    };
    strapi
        .update_document(article_doc, &json!({"body": "second"}))
        .await
        .unwrap();
    strapi.publish(article_doc).await.unwrap();
    strapi.delete_document(article_doc).await.unwrap();

    let page_slug = unique("page");
    let page = strapi
        .create_entry(
            "api::page.page",
            &json!({"title": "About", "slug": page_slug}),
        )
        .await
        .unwrap();
    strapi
        .publish(Document::Entry {
            uid: "api::page.page",
            document_id: &page.document_id,
        })
        .await
        .unwrap();
    let category_slug = unique("category");
    strapi
        .create_entry(
            "api::category.category",
            &json!({"name": "News", "slug": category_slug}),
        )
        .await
        .unwrap();
    for (uid, data) in [
        ("api::homepage.homepage", json!({"title": "Welcome"})),
        ("api::global.global", json!({"siteName": "Example"})),
    ] {
        let document = Document::Single { uid };
        strapi.update_document(document, &data).await.unwrap();
        strapi.publish(document).await.unwrap();
    }

    let wanted_paths: BTreeSet<(String, Option<String>)> = [
        ("/articles".to_owned(), None),
        (format!("/articles/{article_slug}"), None),
        (format!("/{page_slug}"), None),
        (format!("/categories/{category_slug}"), None),
        ("/".to_owned(), Some("layout")),
    ]
    .into_iter()
    .map(|(path, kind)| (path, kind.map(str::to_owned)))
    .collect();
    let wanted_tags: BTreeSet<String> = ["article", "page", "category", "homepage", "global"]
        .into_iter()
        .map(str::to_owned)
        .collect();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (tags, paths) = revalidated(&site.requests());
        if wanted_tags.is_subset(&tags) && wanted_paths.is_subset(&paths) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the site saw tags {tags:?} and paths {paths:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for request in site.requests() {
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, "/api/revalidate");
        assert_eq!(request.header("x-webhook-secret"), Some("change-me"));
        assert!(
            request
                .header("webhook-id")
                .is_some_and(|id| !id.is_empty())
        );
    }

    // Forward mode: every call for our article is one of Strapi's own, byte for byte, with the
    // secret. Strapi stamps each webhook call with its own `createdAt`, so that is swapped first.
    let ours = |request: &CapturedRequest, event: &str| {
        let body = request.json();
        body["event"] == event && body["entry"]["documentId"] == article.document_id.as_str()
    };
    let stamp =
        |request: &CapturedRequest| request.json()["createdAt"].as_str().unwrap().to_owned();
    for event in [
        "entry.create",
        "entry.update",
        "entry.publish",
        "entry.delete",
    ] {
        legacy
            .wait_for(PATIENCE, |request| ours(request, event))
            .await;
        tap.wait_for(PATIENCE, |request| ours(request, event)).await;
        // Publishing also updates the draft, so there can be several calls per event.
        let originals: Vec<CapturedRequest> = tap
            .requests()
            .into_iter()
            .filter(|request| ours(request, event))
            .collect();
        for forwarded in legacy
            .requests()
            .iter()
            .filter(|request| ours(request, event))
        {
            let from_strapi = originals.iter().any(|original| {
                let restamped = String::from_utf8(original.body.to_vec()).unwrap().replacen(
                    &stamp(original),
                    &stamp(forwarded),
                    1,
                );
                restamped.as_bytes() == &forwarded.body[..]
            });
            assert!(
                from_strapi,
                "{event}: forwarded {} is none of Strapi's calls",
                String::from_utf8_lossy(&forwarded.body)
            );
            assert_eq!(forwarded.header("x-webhook-secret"), Some("change-me"));
            assert_eq!(forwarded.header("content-type"), Some("application/json"));
        }
    }

    strapi.delete_webhook(&tap_hook.id).await.unwrap();
    pipeline.stop().await;
}

/// The seed example, applied unchanged (but for the site's URL) against the documented handler
/// of a real Next.js 16 site, refreshes `/articles/{slug}` after the article is updated in Strapi.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_article_updated_in_strapi_refreshes_its_page_on_a_real_nextjs_site() {
    let (namespace, instance) = INSTANCE.split_once('/').unwrap();
    let site = nextjs::NextjsSite::start().await;
    let pipeline = Pipeline::start(
        vec![example_at(
            "nextjs-revalidation.yaml",
            namespace,
            instance,
            &site.revalidate_url(),
        )],
        &["entry.create", "entry.update"],
    )
    .await;
    let slug = unique("article");
    let article = pipeline
        .client
        .create_entry(
            "api::article.article",
            &json!({"title": "Hello", "slug": slug, "body": "first"}),
        )
        .await
        .unwrap();
    // The creation's revalidation goes first, so the page cached next is the one to refresh.
    wait_for_delivery(&pipeline.receiver, 1).await;
    wait_until_idle(&pipeline.receiver).await;
    let page = format!("/articles/{slug}");
    let before = site.render(&page).await;
    assert_eq!(site.render(&page).await, before, "{page} is not cached");

    pipeline
        .client
        .update_document(
            Document::Entry {
                uid: "api::article.article",
                document_id: &article.document_id,
            },
            &json!({"body": "second"}),
        )
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while site.render(&page).await == before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{page} still shows its rendering of {} after the update",
            before.at
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_comment_posts_to_slack() {
    let (namespace, instance) = INSTANCE.split_once('/').unwrap();
    let slack = CaptureServer::start().await;
    let pipeline = Pipeline::start(
        vec![example_at(
            "slack-comments.yaml",
            namespace,
            instance,
            &at(&slack, "/services/T000/B000/XXXX"),
        )],
        &["entry.create", "entry.update"],
    )
    .await;
    let author = unique("reader");
    let text = "This article changed how I think about webhooks. ".repeat(4);
    let comment = pipeline
        .client
        .create_entry(
            "api::comment.comment",
            &json!({"author": author, "text": text}),
        )
        .await
        .unwrap();
    pipeline
        .client
        .update_document(
            Document::Entry {
                uid: "api::comment.comment",
                document_id: &comment.document_id,
            },
            &json!({"text": "edited"}),
        )
        .await
        .unwrap();

    let expected = format!("New comment from {author}: \"{}\"", &text[..100]);
    let message = slack
        .wait_for(PATIENCE, |request| {
            request.json()["text"]
                .as_str()
                .is_some_and(|t| t.contains(&author))
        })
        .await;
    assert_eq!(message.path, "/services/T000/B000/XXXX");
    assert_eq!(message.json(), json!({"text": expected}));
    // The edit is an entry.update, which the example does not route: one message only. The
    // receiver has stored both events before Strapi's calls returned, so waiting for the
    // engine's queue to drain is enough to be sure nothing else is on its way.
    wait_until_idle(&pipeline.receiver).await;
    let ours = slack
        .requests()
        .into_iter()
        .filter(|request| {
            request.json()["text"]
                .as_str()
                .is_some_and(|t| t.contains(&author))
        })
        .count();
    assert_eq!(ours, 1);
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leads_reach_the_crm_with_the_bearer_token_and_a_valid_signature() {
    let (namespace, instance) = INSTANCE.split_once('/').unwrap();
    let crm = CaptureServer::answering(axum::http::StatusCode::CREATED).await;
    let pipeline = Pipeline::start(
        vec![example_at(
            "crm-sync.yaml",
            namespace,
            instance,
            &at(&crm, "/api/contacts"),
        )],
        &["entry.create", "entry.update"],
    )
    .await;
    let name = unique("Grace Hopper");
    let lead = pipeline
        .client
        .create_entry(
            "api::lead.lead",
            &json!({"name": name, "email": "grace@example.com", "company": "Navy"}),
        )
        .await
        .unwrap();
    pipeline
        .client
        .update_document(
            Document::Entry {
                uid: "api::lead.lead",
                document_id: &lead.document_id,
            },
            &json!({"company": "Yale"}),
        )
        .await
        .unwrap();

    let calls = crm
        .wait_for_many(PATIENCE, 2, |request| {
            request.json()["externalId"] == lead.document_id.as_str()
        })
        .await;
    let reference = SecretKeyRef {
        name: "crm-api".to_owned(),
        key: "signing-secret".to_owned(),
    };
    let secret = examples::example_secrets(None)
        .resolve("web", &reference)
        .unwrap();
    let signing = standardwebhooks::Webhook::new(&secret).unwrap();
    let mut seen = Vec::new();
    for call in &calls {
        assert_eq!(call.method, "POST");
        assert_eq!(call.header("authorization"), Some("Bearer change-me"));
        signing
            .verify(&call.body, &call.headers)
            .unwrap_or_else(|error| panic!("signature: {error}"));
        let body = call.json();
        assert_eq!(body["name"], name.as_str());
        assert_eq!(body["email"], "grace@example.com");
        assert_eq!(body["source"], "strapi");
        seen.push((body["event"].clone(), body["company"].clone()));
    }
    seen.sort_by_key(|(event, _)| event.to_string());
    assert_eq!(
        seen,
        [
            (json!("entry.create"), json!("Navy")),
            (json!("entry.update"), json!("Yale")),
        ]
    );
    pipeline.stop().await;
}

/// Waits until the receiver has nothing pending for any sink.
/// Waits until the receiver counts at least `count` deliveries done, over every sink.
async fn wait_for_delivery(receiver: &TestReceiver, count: i64) {
    wait_for_total(receiver, "delivered", |delivered| delivered >= count).await;
}

async fn wait_until_idle(receiver: &TestReceiver) {
    wait_for_total(receiver, "pending", |pending| pending == 0).await;
}

/// Waits until `done` holds for the sum of one counter over every sink of the receiver.
async fn wait_for_total(receiver: &TestReceiver, counter: &str, done: impl Fn(i64) -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let stats: Value = receiver.admin_json("/v1/stats").await;
        let total: i64 = stats["webhooks"]
            .as_object()
            .into_iter()
            .flat_map(|webhooks| webhooks.values())
            .flat_map(|sinks| sinks.as_array().unwrap())
            .map(|sink| sink[counter].as_i64().unwrap_or(0))
            .sum();
        if done(total) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{counter} did not get there: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
