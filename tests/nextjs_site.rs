//! The Next.js integration against a real Next.js 16 site (tests/nextjs), whose route handlers are
//! the ones docs/nextjs.md documents: Strapi-shaped events go through the real receiver, routed by
//! `examples/nextjs-revalidation.yaml` (Revalidate mode) or by a Forward sink to the documented
//! Forward handler, and each test fetches the site's cached pages before and after to see what was
//! really refreshed. A delivery the receiver counts as a success must have refreshed exactly the
//! pages its mapping names: tag per model, `/articles/{slug}`, `/{slug}`, `/categories/{slug}`,
//! and the root layout (every page) for the site-wide single types.

mod support;

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use axum::http::StatusCode;
use examples::example_at;
use nextjs::{NextjsSite, Rendering, SITE_SECRET};
use serde_json::{Value, json};
use strapi_webhook_operator::{
    admin_api::{SinkCounters, Stats},
    api::StrapiWebhookSpec,
    config::{CompiledWebhook, InMemorySecrets, compile_webhook},
    receiver::source::Snapshot,
};
use support::receiver::{INSTANCE, SECRET, TestReceiver, client};
use support::{examples, nextjs};

/// How long a page may take to show a revalidation the receiver reported as delivered.
const REFRESH_WITHIN: Duration = Duration::from_secs(10);
const DELIVERY_WITHIN: Duration = Duration::from_secs(30);

/// The slugs of one test's entries; the pages that show them exist only in that test's site.
struct Entries {
    article: String,
    page: String,
    category: String,
}

impl Entries {
    fn new() -> Self {
        let id = uuid::Uuid::now_v7().simple().to_string();
        Self {
            article: format!("article-{id}"),
            page: format!("about-{id}"),
            category: format!("news-{id}"),
        }
    }

    /// Every page the site caches for these entries, and one page per tag.
    fn pages(&self) -> Vec<String> {
        let mut pages = vec![
            "/".to_owned(),
            "/articles".to_owned(),
            format!("/articles/{}", self.article),
            format!("/{}", self.page),
            format!("/categories/{}", self.category),
        ];
        pages.extend(TAGS.iter().map(|tag| format!("/tags/{tag}")));
        pages
    }

    /// Each content edit, as Strapi 5 sends it, with the pages its mapping must refresh.
    fn edits(&self) -> Vec<(Value, Vec<String>)> {
        let every_page = self.pages();
        let mut edits = vec![
            (
                event(
                    "article",
                    json!({"id": 1, "documentId": "a1", "slug": self.article}),
                ),
                vec![
                    "/articles".to_owned(),
                    format!("/articles/{}", self.article),
                    "/tags/article".to_owned(),
                ],
            ),
            (
                event(
                    "page",
                    json!({"id": 2, "documentId": "p1", "slug": self.page}),
                ),
                vec![format!("/{}", self.page), "/tags/page".to_owned()],
            ),
            (
                event(
                    "category",
                    json!({"id": 3, "documentId": "c1", "slug": self.category}),
                ),
                vec![
                    format!("/categories/{}", self.category),
                    "/tags/category".to_owned(),
                ],
            ),
        ];
        for model in ["global", "homepage", "settings"] {
            edits.push((
                event(model, json!({"id": 4, "documentId": "s1"})),
                every_page.clone(),
            ));
        }
        edits
    }
}

/// The tags the site's `/tags/[tag]` pages cache their data under.
const TAGS: [&str; 6] = [
    "article", "page", "category", "global", "homepage", "settings",
];

fn event(model: &str, entry: Value) -> Value {
    json!({
        "event": "entry.update",
        "createdAt": "2026-11-29T20:00:00.000Z",
        "model": model,
        "uid": format!("api::{model}.{model}"),
        "entry": entry,
    })
}

fn receiver_snapshot(webhook: CompiledWebhook) -> Snapshot {
    Snapshot::new(
        BTreeMap::from([(INSTANCE.to_owned(), vec![SECRET.to_owned()])]),
        [webhook],
    )
}

/// The seed example, unchanged but for the site's URL.
fn seed(site: &NextjsSite) -> CompiledWebhook {
    let (namespace, instance) = INSTANCE.split_once('/').unwrap();
    example_at(
        "nextjs-revalidation.yaml",
        namespace,
        instance,
        &site.revalidate_url(),
    )
}

/// A Forward sink taking every content event, to `url`, with the site's secret or another.
fn forward(url: &str, secret: &str) -> CompiledWebhook {
    let (namespace, instance) = INSTANCE.split_once('/').unwrap();
    let spec: StrapiWebhookSpec = serde_json::from_value(json!({
        "instanceRef": {"name": instance},
        "events": ["entry.create", "entry.update", "entry.delete", "entry.publish", "entry.unpublish"],
        "sinks": [{"name": "website", "nextjs": {
            "url": url, "mode": "Forward", "secretRef": {"name": "nextjs-revalidate", "key": "secret"},
            "delivery": {"backoff": {"initial": "50ms", "max": "200ms"}}
        }}],
        "routes": [{"name": "content", "sink": "website"}],
    }))
    .unwrap();
    let mut secrets = InMemorySecrets::new();
    secrets.insert(namespace, "nextjs-revalidate", "secret", secret);
    compile_webhook(namespace, "forward", 1, &spec, &secrets).unwrap()
}

/// The receiver's counters for the sink `website` of `webhook`.
async fn website(receiver: &TestReceiver, webhook: &str) -> SinkCounters {
    let stats: Stats = receiver.admin_json("/v1/stats").await;
    stats
        .webhooks
        .get(webhook)
        .and_then(|sinks| sinks.iter().find(|sink| sink.name == "website"))
        .cloned()
        .unwrap_or_default()
}

/// Waits until `done` holds for the sink's counters.
async fn wait_for_sink(
    receiver: &TestReceiver,
    webhook: &str,
    done: impl Fn(&SinkCounters) -> bool,
) -> SinkCounters {
    let deadline = tokio::time::Instant::now() + DELIVERY_WITHIN;
    loop {
        let status = website(receiver, webhook).await;
        if done(&status) {
            return status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the receiver's counters did not get there: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn renderings(site: &NextjsSite, pages: &[String]) -> BTreeMap<String, Rendering> {
    let mut shown = BTreeMap::new();
    for page in pages {
        shown.insert(page.clone(), site.render(page).await);
    }
    shown
}

/// Renders every page, and checks that a second request is served from the cache: a page that
/// is rendered on every request would prove nothing about revalidation.
async fn cached(site: &NextjsSite, pages: &[String]) -> BTreeMap<String, Rendering> {
    let first = renderings(site, pages).await;
    assert_eq!(
        first,
        renderings(site, pages).await,
        "the site's pages are not cached"
    );
    first
}

/// Sends each edit through the receiver; after the receiver counts it delivered, the pages its
/// mapping names must show a new rendering within [`REFRESH_WITHIN`], and no other page may.
async fn every_edit_refreshes_its_pages(
    site: &NextjsSite,
    receiver: &TestReceiver,
    webhook: &str,
    entries: &Entries,
) {
    let http = client();
    let pages = entries.pages();
    let mut before = cached(site, &pages).await;
    for (edit, refreshed) in entries.edits() {
        let what = format!("{} {}", edit["model"], edit["entry"]);
        let delivered = website(receiver, webhook).await.delivered;
        assert_eq!(receiver.post(&http, &edit).await, StatusCode::OK);
        wait_for_sink(receiver, webhook, |sink| sink.delivered > delivered).await;

        let deadline = tokio::time::Instant::now() + REFRESH_WITHIN;
        for page in &refreshed {
            // A tag revalidated with the "max" profile is served stale once, then fresh.
            loop {
                let now = site.render(page).await;
                if now.id != before[page].id {
                    break;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the receiver counted the revalidation for {what} as delivered, but {page} \
                     still shows its rendering of {}\n{}",
                    before[page].at,
                    site.log()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        // Any page revalidated by mistake would show a new rendering by the second request.
        let after = renderings(site, &pages).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            after,
            renderings(site, &pages).await,
            "{what}: pages still changing"
        );
        let changed: BTreeSet<&String> = pages
            .iter()
            .filter(|page| after[*page].id != before[*page].id)
            .collect();
        assert_eq!(
            changed,
            refreshed.iter().collect(),
            "{what}: refreshed pages"
        );
        before = after;
    }
    let website = website(receiver, webhook).await;
    assert_eq!(
        (website.dead_lettered, website.pending),
        (0, 0),
        "{website:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_example_refreshes_each_mapped_page_of_a_real_nextjs_site() {
    let site = NextjsSite::start().await;
    let webhook = seed(&site);
    let key = webhook.key.clone();
    let receiver = TestReceiver::start(receiver_snapshot(webhook)).await;
    every_edit_refreshes_its_pages(&site, &receiver, &key, &Entries::new()).await;
    receiver.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_mode_with_the_documented_handler_refreshes_the_same_pages() {
    let site = NextjsSite::start().await;
    let webhook = forward(&site.forward_url(), SITE_SECRET);
    let key = webhook.key.clone();
    let receiver = TestReceiver::start(receiver_snapshot(webhook)).await;
    every_edit_refreshes_its_pages(&site, &receiver, &key, &Entries::new()).await;
    receiver.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_secret_is_dead_lettered_and_refreshes_nothing() {
    let site = NextjsSite::start().await;
    let webhook = forward(&site.forward_url(), "not-the-site-secret");
    let key = webhook.key.clone();
    let receiver = TestReceiver::start(receiver_snapshot(webhook)).await;
    let entries = Entries::new();
    let pages = entries.pages();
    let before = cached(&site, &pages).await;
    let (edit, _) = entries.edits().remove(0);
    assert_eq!(receiver.post(&client(), &edit).await, StatusCode::OK);
    let website = wait_for_sink(&receiver, &key, |sink| sink.dead_lettered == 1).await;
    assert_eq!(website.delivered, 0, "{website:?}");
    assert!(
        website
            .last_error
            .as_deref()
            .is_some_and(|error| error.contains("401")),
        "{website:?}"
    );
    assert_eq!(renderings(&site, &pages).await, before);
    receiver.shutdown().await;
}

/// The handlers docs/nextjs.md shows are the site's route files, byte for byte, so the tests
/// above test what users copy.
#[test]
fn the_documented_handlers_are_the_test_sites_routes() {
    let root = env!("CARGO_MANIFEST_DIR");
    let docs = std::fs::read_to_string(format!("{root}/docs/nextjs.md")).unwrap();
    let mut lines = docs.lines();
    let mut checked = Vec::new();
    while let Some(line) = lines.next() {
        let Some(file) = line
            .strip_prefix('`')
            .and_then(|rest| rest.split_once('`'))
            .map(|(file, _)| file)
            .filter(|file| file.starts_with("app/") && file.ends_with("route.ts"))
        else {
            continue;
        };
        let block: Vec<&str> = lines
            .by_ref()
            .skip_while(|line| !line.starts_with("```ts"))
            .skip(1)
            .take_while(|line| !line.starts_with("```"))
            .collect();
        let path = format!("{root}/tests/nextjs/{file}");
        let route =
            std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{path}: {error}"));
        assert_eq!(
            block.join("\n").trim_end(),
            route.trim_end(),
            "docs/nextjs.md's {file} differs from {path}"
        );
        checked.push(file);
    }
    assert_eq!(
        checked,
        [
            "app/api/revalidate/route.ts",
            "app/api/strapi-webhook/route.ts"
        ]
    );
}
