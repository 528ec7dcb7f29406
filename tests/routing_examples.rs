//! The three example integrations in `examples/` compiled with their example Secrets, and the
//! payloads they render for Strapi 5 events: Next.js revalidation, Slack comments, CRM sync.

mod support;

use examples::{compile_example, example};
use serde_json::{Value, json};
use strapi_webhook_operator::{
    config::{CompiledWebhook, InMemorySecrets, Reason, compile_webhook},
    event::EventBody,
    routing::{PathKind, Payload, RevalidatePath},
    sinks::{NextjsMode, SinkConfig},
};
use support::examples;

fn compile(file: &str) -> CompiledWebhook {
    compile_example(file)
}

/// What each matching route of `webhook` renders for `raw`, by route name.
fn route(webhook: &CompiledWebhook, raw: &Value) -> Vec<(String, Payload)> {
    let bytes = serde_json::to_vec(raw).unwrap();
    let event = EventBody::parse(&bytes).unwrap();
    webhook
        .routes
        .iter()
        .filter(|route| route.matches(&event).unwrap())
        .map(|route| {
            (
                route.name().to_owned(),
                route.render(&event, &bytes).unwrap(),
            )
        })
        .collect()
}

fn content_event(event: &str, model: &str, entry: Value) -> Value {
    json!({
        "event": event,
        "createdAt": "2026-11-27T01:00:00.000Z",
        "model": model,
        "uid": format!("api::{model}.{model}"),
        "entry": entry,
    })
}

/// A literal path, sent without a type so Next.js revalidates exactly that URL.
fn literal(path: &str) -> RevalidatePath {
    RevalidatePath {
        path: path.to_owned(),
        kind: None,
    }
}

#[test]
fn examples_compile_with_their_secrets() {
    let nextjs = compile("nextjs-revalidation.yaml");
    assert_eq!(nextjs.key, "web/nextjs-revalidation");
    assert_eq!(nextjs.instance, "web/cms");
    let (sink, _) = nextjs.sink("website").unwrap();
    assert!(matches!(sink, SinkConfig::Nextjs(site) if site.mode == NextjsMode::Revalidate));
    assert!(sink.coalesce_window().is_some());

    let crm = compile("crm-sync.yaml");
    let (SinkConfig::Http(http), policy) = crm.sink("crm").unwrap() else {
        panic!("crm is an HTTP sink")
    };
    assert_eq!(http.signing.len(), 1);
    assert_eq!(http.headers[0].1, "Bearer change-me");
    assert!(http.headers[0].1.is_sensitive());
    assert_eq!(
        (policy.max_attempts, policy.rate_per_second, policy.burst),
        (10, 5, 10)
    );

    let slack = compile("slack-comments.yaml");
    let (_, policy) = slack.sink("team-chat").unwrap();
    assert_eq!(
        policy.rate_per_second, 1,
        "Slack defaults to one message a second"
    );

    // Logging a compiled webhook never shows a credential.
    for (webhook, secret) in [
        (&nextjs, "change-me"),
        (&crm, "change-me"),
        (&crm, "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
        (&slack, "XXXXXXXXXXXXXXXXXXXXXXXX"),
    ] {
        let shown = format!("{webhook:?}");
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
}

#[test]
fn a_published_article_revalidates_its_tag_list_and_page() {
    let webhook = compile("nextjs-revalidation.yaml");
    let routed = route(
        &webhook,
        &content_event(
            "entry.publish",
            "article",
            json!({"id": 3, "documentId": "a1", "slug": "hello-world", "title": "Hello", "locale": "en"}),
        ),
    );
    assert_eq!(
        routed,
        vec![(
            "articles".to_owned(),
            Payload::Revalidate {
                tags: vec!["article".to_owned()],
                paths: vec![literal("/articles"), literal("/articles/hello-world")],
                skipped: Vec::new(),
            }
        )]
    );
}

#[test]
fn a_publish_with_a_null_entry_keeps_tags_and_skips_entry_paths_with_the_reason() {
    let webhook = compile("nextjs-revalidation.yaml");
    let routed = route(
        &webhook,
        &content_event("entry.publish", "article", Value::Null),
    );
    let [
        (
            name,
            Payload::Revalidate {
                tags,
                paths,
                skipped,
            },
        ),
    ] = &routed[..]
    else {
        panic!("one revalidation expected, got {routed:?}")
    };
    assert_eq!(name, "articles");
    assert_eq!(tags, &["article"]);
    assert_eq!(paths, &[literal("/articles")]);
    let [reason] = &skipped[..] else {
        panic!("{skipped:?}")
    };
    assert!(
        reason.starts_with("nextjs.paths[1].path") && reason.contains("strapi/strapi#25387"),
        "{reason}"
    );
}

#[test]
fn site_wide_single_types_revalidate_the_root_layout() {
    let webhook = compile("nextjs-revalidation.yaml");
    for model in ["global", "homepage", "settings"] {
        let routed = route(
            &webhook,
            &content_event("entry.update", model, json!({"id": 1, "documentId": "g"})),
        );
        assert_eq!(
            routed,
            vec![(
                "site-wide".to_owned(),
                Payload::Revalidate {
                    tags: vec![model.to_owned()],
                    paths: vec![RevalidatePath {
                        path: "/".to_owned(),
                        kind: Some(PathKind::Layout),
                    }],
                    skipped: Vec::new(),
                }
            )],
            "{model}"
        );
    }
}

#[test]
fn pages_and_categories_get_their_own_paths_and_media_goes_nowhere() {
    let webhook = compile("nextjs-revalidation.yaml");
    let routed = route(
        &webhook,
        &content_event("entry.delete", "category", json!({"id": 2, "slug": "news"})),
    );
    assert!(
        matches!(&routed[..], [(name, Payload::Revalidate { paths, .. })] if name == "categories" && paths == &[literal("/categories/news")]),
        "{routed:?}"
    );
    let routed = route(
        &webhook,
        &content_event("entry.update", "page", json!({"id": 5, "slug": "about"})),
    );
    assert!(
        matches!(&routed[..], [(_, Payload::Revalidate { paths, .. })] if paths == &[literal("/about")]),
        "{routed:?}"
    );
    let media = json!({"event": "media.create", "createdAt": "2026-11-27T01:00:00.000Z", "media": {"id": 9, "name": "cat.png"}});
    assert!(route(&webhook, &media).is_empty());
}

#[test]
fn a_new_comment_posts_author_and_the_first_100_characters() {
    let webhook = compile("slack-comments.yaml");
    let text: String = "Lovely article! ".repeat(12);
    let routed = route(
        &webhook,
        &json!({
            "event": "entry.create",
            "createdAt": "2026-11-27T01:00:00.000Z",
            "model": "comment",
            "uid": "api::comment.comment",
            "entry": {"id": 4, "documentId": "c4", "author": "Ada", "text": text},
        }),
    );
    let expected = format!("New comment from Ada: \"{}\"", &text[..100]);
    assert_eq!(
        routed,
        vec![(
            "new-comment".to_owned(),
            Payload::Slack {
                text: expected,
                blocks: None
            }
        )]
    );
}

/// What crm-sync.yaml sends for a lead created with `entry`: the route's name and the body.
fn crm_body_for_new_lead(entry: Value) -> (String, Value) {
    let webhook = compile("crm-sync.yaml");
    let routed = route(
        &webhook,
        &json!({
            "event": "entry.create",
            "createdAt": "2026-11-27T01:00:00.000Z",
            "model": "lead",
            "uid": "api::lead.lead",
            "entry": entry,
        }),
    );
    let [(name, Payload::Http { body })] = &routed[..] else {
        panic!("{routed:?}")
    };
    (name.clone(), serde_json::from_slice(body).unwrap())
}

#[test]
fn a_lead_becomes_the_crm_body() {
    let (name, body) = crm_body_for_new_lead(
        json!({"id": 1, "documentId": "l1", "name": "Grace \"Amazing\" Hopper", "email": "grace@example.com", "company": null}),
    );
    assert_eq!(name, "leads");
    assert_eq!(
        body,
        json!({
            "externalId": "l1",
            "name": "Grace \"Amazing\" Hopper",
            "email": "grace@example.com",
            "company": null,
            "source": "strapi",
            "event": "entry.create",
        })
    );
}

#[test]
fn a_lead_with_only_an_email_still_reaches_the_crm() {
    let (_, body) =
        crm_body_for_new_lead(json!({"id": 2, "documentId": "l2", "email": "ada@example.com"}));
    assert_eq!(body["email"], "ada@example.com");
    assert_eq!(
        (&body["name"], &body["company"]),
        (&Value::Null, &Value::Null)
    );
}

#[test]
fn missing_secrets_are_reported_per_field() {
    let webhook = example("crm-sync.yaml");
    let errors =
        compile_webhook("web", "crm-sync", 1, &webhook.spec, &InMemorySecrets::new()).unwrap_err();
    let fields: Vec<_> = errors
        .iter()
        .map(|error| (error.field.as_str(), error.reason))
        .collect();
    assert_eq!(
        fields,
        [
            (
                "spec.sinks[0].http.headers[0].valueFrom.secretKeyRef",
                Reason::SecretMissing
            ),
            (
                "spec.sinks[0].http.signing.secretRef",
                Reason::SecretMissing
            )
        ]
    );
    assert!(
        errors.to_string().contains("Secret web/crm-api not found"),
        "{errors}"
    );
}

/// A payload captured from the real Strapi test app by `tests/strapi_client.rs`.
fn fixture(name: &str) -> Value {
    let path = format!(
        "{}/tests/fixtures/strapi-events/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
        .unwrap_or_else(|error| panic!("{path}: {error}"))
}

#[test]
fn captured_events_with_a_null_slug_skip_the_page_and_keep_the_tag() {
    let webhook = compile("nextjs-revalidation.yaml");
    for name in ["entry.publish-article", "entry.delete-article"] {
        // Strapi sends unset fields as null; an article saved without a slug looks like this.
        let mut event = fixture(name);
        event["entry"]["slug"] = Value::Null;
        let routed = route(&webhook, &event);
        let [
            (
                route_name,
                Payload::Revalidate {
                    tags,
                    paths,
                    skipped,
                },
            ),
        ] = &routed[..]
        else {
            panic!("{name}: {routed:?}")
        };
        assert_eq!(route_name, "articles");
        assert_eq!(tags, &["article"]);
        assert_eq!(paths, &[literal("/articles")], "never /articles/none");
        assert!(
            skipped.len() == 1 && skipped[0].contains("null field"),
            "{name}: {skipped:?}"
        );
    }
    let routed = route(&webhook, &fixture("entry.publish-settings"));
    assert!(
        matches!(&routed[..], [(name, Payload::Revalidate { tags, .. })] if name == "site-wide" && tags == &["settings"]),
        "{routed:?}"
    );
}

#[test]
fn captured_comment_and_lead_events_render_the_slack_text_and_crm_body() {
    let comment = fixture("entry.create-comment");
    let routed = route(&compile("slack-comments.yaml"), &comment);
    let expected = format!(
        "New comment from {}: \"{}\"",
        comment["entry"]["author"].as_str().unwrap(),
        comment["entry"]["text"].as_str().unwrap()
    );
    assert_eq!(
        routed,
        [(
            "new-comment".to_owned(),
            Payload::Slack {
                text: expected,
                blocks: None
            }
        )]
    );
    assert!(
        route(
            &compile("slack-comments.yaml"),
            &fixture("entry.update-comment")
        )
        .is_empty()
    );

    let crm = compile("crm-sync.yaml");
    for name in ["entry.create-lead", "entry.update-lead"] {
        let lead = fixture(name);
        let routed = route(&crm, &lead);
        let [(_, Payload::Http { body })] = &routed[..] else {
            panic!("{name}: {routed:?}")
        };
        let entry = &lead["entry"];
        assert_eq!(
            serde_json::from_slice::<Value>(body).unwrap(),
            json!({
                "externalId": entry["documentId"],
                "name": entry["name"],
                "email": entry["email"],
                "company": entry["company"],
                "source": "strapi",
                "event": lead["event"],
            }),
            "{name}"
        );
    }
    // The CRM webhook subscribes to create and update only; the instance's registration also
    // carries other webhooks' deletes, which must not reach the CRM.
    assert!(route(&crm, &fixture("entry.delete-lead")).is_empty());
}
