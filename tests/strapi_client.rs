//! The Strapi admin API client against a real Strapi 5 (the app in `tests/strapi`): webhook
//! CRUD, every error kind, session renewal, admin tokens, and the webhook calls Strapi makes for
//! editor actions, whose payloads are kept in `tests/fixtures/strapi-events/` for the receiver's
//! and routing's tests. Set `UPDATE_STRAPI_FIXTURES=1` to rewrite the fixtures from a run. The
//! retry policy is checked against a loopback server that answers like a failing proxy, since a
//! healthy Strapi never answers 503.

mod support;

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use axum::http::StatusCode;
use serde_json::{Value, json};
use strapi_webhook_operator::strapi::{
    ClientOptions, ContentTypeKind, Credentials, Document, StrapiClient, StrapiError, Webhook,
    WebhookSpec,
};
use support::{CaptureServer, CapturedRequest, StrapiServer};

/// How long Strapi gets to deliver a webhook call (it sends them after the admin call returns).
const DELIVERY: Duration = Duration::from_secs(30);

const ENTRY_EVENTS: [&str; 5] = [
    "entry.create",
    "entry.update",
    "entry.delete",
    "entry.publish",
    "entry.unpublish",
];

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::now_v7().simple())
}

fn spec(url: &str, events: &[&str]) -> WebhookSpec {
    WebhookSpec {
        name: unique("test"),
        url: url.to_owned(),
        headers: BTreeMap::from([("Authorization".to_owned(), "Bearer test-secret".to_owned())]),
        events: events.iter().map(|event| (*event).to_owned()).collect(),
        enabled: true,
    }
}

/// Few and short retries, so tests that expect a failure see it quickly.
fn impatient() -> ClientOptions {
    ClientOptions {
        max_retries: 2,
        initial_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(200),
        ..ClientOptions::default()
    }
}

#[tokio::test]
async fn webhook_create_list_get_update_delete_round_trip() {
    let strapi = StrapiServer::shared().await;
    let client = strapi.client();
    let wanted = spec(
        "http://127.0.0.1:65000/hooks/crud",
        &["entry.create", "entry.publish"],
    );

    let created = client.create_webhook(&wanted).await.unwrap();
    assert!(wanted.matches(&created), "{created:?}");
    assert_eq!(client.get_webhook(&created.id).await.unwrap(), created);
    let listed: Vec<Webhook> = client
        .list_webhooks()
        .await
        .unwrap()
        .into_iter()
        .filter(|webhook| webhook.name == wanted.name)
        .collect();
    assert_eq!(listed, vec![created.clone()]);

    let changed = WebhookSpec {
        url: "http://127.0.0.1:65000/hooks/changed".into(),
        headers: BTreeMap::new(),
        events: vec!["entry.unpublish".into()],
        enabled: false,
        ..wanted
    };
    let updated = client.update_webhook(&created.id, &changed).await.unwrap();
    assert_eq!(updated.id, created.id);
    assert!(changed.matches(&updated), "{updated:?}");
    assert_eq!(client.get_webhook(&created.id).await.unwrap(), updated);

    client.delete_webhook(&created.id).await.unwrap();
    assert!(
        !client
            .list_webhooks()
            .await
            .unwrap()
            .iter()
            .any(|webhook| webhook.id == created.id)
    );
    for error in [
        client.get_webhook(&created.id).await.unwrap_err(),
        client.delete_webhook(&created.id).await.unwrap_err(),
        client
            .update_webhook(&created.id, &changed)
            .await
            .unwrap_err(),
    ] {
        assert_eq!(error.reason(), "NotFound", "{error}");
    }
    // Strapi 5 answers a trigger for a missing webhook with a 500, not a 404.
    let error = client.trigger_webhook(&created.id).await.unwrap_err();
    assert!(
        matches!(error, StrapiError::Unexpected { status: 500, .. }),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_disabled_spec_creates_a_disabled_webhook() {
    let strapi = StrapiServer::shared().await;
    let client = strapi.client();
    let wanted = WebhookSpec {
        enabled: false,
        ..spec("http://127.0.0.1:65000/hooks/off", &["entry.create"])
    };
    let created = client.create_webhook(&wanted).await.unwrap();
    assert!(!created.enabled);
    assert_eq!(client.get_webhook(&created.id).await.unwrap(), created);
    client.delete_webhook(&created.id).await.unwrap();
}

#[tokio::test]
async fn strapi_validation_errors_come_back_as_rejected_with_strapis_message() {
    let strapi = StrapiServer::shared().await;
    let client = strapi.client();

    let bad_url = spec("not a url", &["entry.create"]);
    match client.create_webhook(&bad_url).await.unwrap_err() {
        StrapiError::Rejected {
            step,
            message,
            details,
        } => {
            assert_eq!(step, "create webhook");
            assert_eq!(message, "url must be a valid URL");
            assert_eq!(details["errors"][0]["path"], json!(["url"]), "{details}");
        }
        other => panic!("expected Rejected, got {other:?}"),
    }

    let bad_event = spec("http://127.0.0.1:65000/hooks/bad", &["entry.explode"]);
    let error = client.create_webhook(&bad_event).await.unwrap_err();
    assert_eq!(error.reason(), "Rejected", "{error}");
    assert!(
        error
            .to_string()
            .contains("Webhook event entry.explode is not supported"),
        "{error}"
    );
    assert!(
        !client
            .list_webhooks()
            .await
            .unwrap()
            .iter()
            .any(|webhook| webhook.name == bad_event.name)
    );
}

#[tokio::test]
async fn a_production_strapi_rejects_webhook_urls_on_private_addresses() {
    // With NODE_ENV=production, Strapi refuses URLs whose host is, or resolves to, a loopback or
    // private address: in a cluster that includes the receiver's Service address.
    let strapi = StrapiServer::private_with_env(&[("NODE_ENV", "production")]).await;
    let client = strapi.client();
    for url in [
        "http://10.96.0.10:8080/v1/instances/web/cms",
        "http://localhost:8080/hooks",
    ] {
        let error = client
            .create_webhook(&spec(url, &["entry.publish"]))
            .await
            .unwrap_err();
        assert_eq!(error.reason(), "Rejected", "{url}: {error}");
        assert!(
            error
                .to_string()
                .contains("isn't reachable over the public internet"),
            "{url}: {error}"
        );
    }
    let public = client
        .create_webhook(&spec(
            "https://hooks.example.com/strapi",
            &["entry.publish"],
        ))
        .await
        .unwrap();
    assert!(public.enabled);
}

#[tokio::test]
async fn a_wrong_password_is_unauthorized() {
    let strapi = StrapiServer::shared().await;
    let client = StrapiClient::new(
        strapi.base_url(),
        Credentials::password(strapi.email(), "Wrong-Password-1"),
    )
    .unwrap();
    let error = client.list_webhooks().await.unwrap_err();
    assert_eq!(error.reason(), "Unauthorized", "{error}");
    let shown = error.to_string();
    assert!(
        shown.contains("Invalid credentials") && shown.contains(strapi.email()),
        "{shown}"
    );
    assert!(!shown.contains("Wrong-Password-1"), "{shown}");
}

#[tokio::test]
async fn admin_tokens_authenticate_and_their_permissions_are_enforced() {
    let strapi = StrapiServer::shared().await;
    let reader = strapi
        .create_admin_token(&unique("reader"), &["admin::webhooks.read"])
        .await;
    let client = StrapiClient::new(strapi.base_url(), Credentials::admin_token(reader)).unwrap();
    client.list_webhooks().await.unwrap();
    let error = client
        .create_webhook(&spec(
            "http://127.0.0.1:65000/hooks/token",
            &["entry.create"],
        ))
        .await
        .unwrap_err();
    assert_eq!(error.reason(), "Forbidden", "{error}");

    let bogus =
        StrapiClient::new(strapi.base_url(), Credentials::admin_token("not-a-token")).unwrap();
    let error = bogus.list_webhooks().await.unwrap_err();
    assert_eq!(error.reason(), "Unauthorized", "{error}");
    assert!(
        error
            .to_string()
            .contains("content API tokens are not accepted"),
        "{error}"
    );
}

#[tokio::test]
async fn an_expired_or_revoked_session_is_renewed_transparently() {
    // Access tokens that live 5 seconds instead of 30 minutes, so expiry really happens; long
    // enough that a loaded machine still uses each fresh token before it expires.
    let strapi = StrapiServer::private_with_env(&[("ADMIN_ACCESS_TOKEN_LIFESPAN", "5")]).await;
    let client = strapi.client();
    client.list_webhooks().await.unwrap();
    assert_eq!(strapi.logged_statuses("POST /admin/login"), [200]);

    // Expired: Strapi answers 401 and the client trades its refresh cookie for a new token
    // instead of logging in again (Strapi rate-limits logins). Concurrent calls that all meet the
    // expired token share one renewal, since the refresh cookie is single-use.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let clones: Vec<StrapiClient> = (0..4).map(|_| client.clone()).collect();
    let calls = clones.iter().map(|client| client.list_webhooks());
    for outcome in futures::future::join_all(calls).await {
        outcome.unwrap();
    }
    let after_expiry = strapi.logged_statuses("GET /admin/webhooks");
    assert_eq!(count(&after_expiry, 401), 4, "{after_expiry:?}");
    assert_eq!(count(&after_expiry, 200), 5, "{after_expiry:?}");
    assert_eq!(strapi.logged_statuses("POST /admin/access-token"), [200]);
    assert_eq!(strapi.logged_statuses("POST /admin/login"), [200]);

    // Revoked: access and refresh tokens both stop working, so the client logs in again.
    strapi.revoke_all_sessions().await;
    client.list_webhooks().await.unwrap();
    let after_revocation = strapi.logged_statuses("GET /admin/webhooks");
    assert_eq!(after_revocation[after_expiry.len()..], [401, 200]);
    assert_eq!(
        strapi.logged_statuses("POST /admin/access-token"),
        [200, 401]
    );
    // The client's first login, the one that revoked every session, and the client's new one.
    assert_eq!(strapi.logged_statuses("POST /admin/login"), [200, 200, 200]);
}

fn count(statuses: &[u16], status: u16) -> usize {
    statuses.iter().filter(|&&s| s == status).count()
}

#[tokio::test]
async fn login_rate_limit_and_a_stopped_strapi_give_clear_errors() {
    let mut strapi = StrapiServer::private_with_env(&[("ADMIN_RATE_LIMIT", "true")]).await;

    // Strapi allows 5 login attempts per 5 minutes per email and IP.
    let wrong = StrapiClient::new(
        strapi.base_url(),
        Credentials::password(strapi.email(), "Wrong-Password-1"),
    )
    .unwrap();
    for _ in 0..5 {
        assert_eq!(
            wrong.list_webhooks().await.unwrap_err().reason(),
            "Unauthorized"
        );
    }
    let error = wrong.list_webhooks().await.unwrap_err();
    assert_eq!(error.reason(), "RateLimited", "{error}");

    let client = strapi.client_with(impatient());
    let base_url = strapi.base_url().to_owned();
    strapi.stop();
    match client.list_content_types().await.unwrap_err() {
        error @ StrapiError::Unreachable { .. } => {
            assert_eq!(error.reason(), "Unreachable");
            assert!(error.to_string().contains(&base_url), "{error}");
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
}

#[tokio::test]
async fn trigger_makes_strapi_send_trigger_test_to_the_webhook() {
    let strapi = StrapiServer::shared().await;
    let client = strapi.client();
    let listener = CaptureServer::start().await;
    let wanted = spec(
        &format!("{}/hooks/trigger", listener.url()),
        &["entry.create"],
    );
    let webhook = client.create_webhook(&wanted).await.unwrap();

    let outcome = client.trigger_webhook(&webhook.id).await.unwrap();
    assert_eq!(outcome.status_code, 200, "{outcome:?}");
    let call = listener
        .wait_for(DELIVERY, |request| request.path == "/hooks/trigger")
        .await;
    assert_eq!(call.header("x-strapi-event"), Some("trigger-test"));
    assert_eq!(call.header("authorization"), Some("Bearer test-secret"));
    let payload = call.json();
    assert_eq!(payload["event"], "trigger-test");
    check_fixture("trigger-test", &payload);
    client.delete_webhook(&webhook.id).await.unwrap();
}

#[tokio::test]
async fn content_types_list_the_apps_models() {
    let strapi = StrapiServer::shared().await;
    let types = strapi.client().list_content_types().await.unwrap();
    let find = |uid: &str| {
        types
            .iter()
            .find(|t| t.uid == uid)
            .unwrap_or_else(|| panic!("no {uid} in {types:#?}"))
    };
    let article = find("api::article.article");
    assert_eq!(
        (
            article.kind,
            article.singular_name.as_str(),
            article.draft_and_publish
        ),
        (ContentTypeKind::Collection, "article", true)
    );
    let comment = find("api::comment.comment");
    assert_eq!(
        (comment.kind, comment.draft_and_publish),
        (ContentTypeKind::Collection, false)
    );
    let homepage = find("api::homepage.homepage");
    assert_eq!(
        (
            homepage.kind,
            homepage.plural_name.as_str(),
            homepage.draft_and_publish
        ),
        (ContentTypeKind::Single, "homepages", true)
    );
    assert!(!find("admin::user").visible);
}

#[tokio::test]
async fn editing_an_article_sends_the_documented_payloads() {
    let (strapi, listener, webhook) = subscribe_listener().await;
    let client = strapi.client();
    let article = "api::article.article";
    let fields = json!({ "title": "Hello", "slug": unique("hello"), "body": "first" });
    let created = client.create_entry(article, &fields).await.unwrap();
    let document = Document::Entry {
        uid: article,
        document_id: &created.document_id,
    };
    let updated = client
        .update_document(document, &json!({ "body": "second" }))
        .await
        .unwrap();
    assert_eq!(updated.fields["body"], "second");
    client.publish(document).await.unwrap();
    client.unpublish(document).await.unwrap();
    client.publish(document).await.unwrap();
    client.delete_document(document).await.unwrap();

    let ours = |event: &'static str| {
        let id = created.document_id.clone();
        move |request: &CapturedRequest| is_event_for(request, event, &id)
    };
    for event in ["entry.create", "entry.update", "entry.unpublish"] {
        let call = listener.wait_for(DELIVERY, ours(event)).await;
        check_call(&call, event, "article", article);
    }
    // Published twice, so two entry.publish calls; deleting a published entry deletes its draft
    // and its published version, and Strapi sends entry.delete for each.
    let publishes = listener
        .wait_for_many(DELIVERY, 2, ours("entry.publish"))
        .await;
    check_call(&publishes[0], "entry.publish", "article", article);
    // The two deletes arrive in either order; the fixture is the draft's (`publishedAt: null`).
    let deletes = listener
        .wait_for_many(DELIVERY, 2, ours("entry.delete"))
        .await;
    let (drafts, published): (Vec<_>, Vec<_>) = deletes
        .iter()
        .partition(|call| call.json()["entry"]["publishedAt"].is_null());
    let entries: Vec<Value> = deletes.iter().map(|call| call.json()["entry"].clone()).collect();
    assert!(
        drafts.len() == 1 && published.len() == 1,
        "one draft and one published delete expected: {entries:#?}"
    );
    check_call(drafts[0], "entry.delete", "article", article);
    assert!(published[0].json()["entry"]["publishedAt"].is_string(), "{entries:#?}");
    strapi.client().delete_webhook(&webhook.id).await.unwrap();
}

#[tokio::test]
async fn comments_leads_and_single_types_send_the_documented_payloads() {
    let (strapi, listener, webhook) = subscribe_listener().await;
    let client = strapi.client();

    for (uid, model, data) in [
        (
            "api::comment.comment",
            "comment",
            json!({ "author": unique("reader"), "text": "Nice post" }),
        ),
        (
            "api::lead.lead",
            "lead",
            json!({ "name": unique("Ada"), "email": "ada@example.com", "company": "Analytical" }),
        ),
    ] {
        let created = client.create_entry(uid, &data).await.unwrap();
        let document = Document::Entry {
            uid,
            document_id: &created.document_id,
        };
        client.update_document(document, &json!({})).await.unwrap();
        client.delete_document(document).await.unwrap();
        for event in ["entry.create", "entry.update", "entry.delete"] {
            let call = listener
                .wait_for(DELIVERY, |r| is_event_for(r, event, &created.document_id))
                .await;
            check_call(&call, event, model, uid);
        }
    }

    // This test owns the `settings` single type on the shared Strapi.
    let uid = "api::settings.settings";
    let document = Document::Single { uid };
    let created = client.update_document(document, &json!({})).await.unwrap();
    client.publish(document).await.unwrap();
    client.unpublish(document).await.unwrap();
    client.delete_document(document).await.unwrap();
    for event in [
        "entry.create",
        "entry.publish",
        "entry.unpublish",
        "entry.delete",
    ] {
        let call = listener
            .wait_for(DELIVERY, |r| is_event_for(r, event, &created.document_id))
            .await;
        check_call(&call, event, "settings", uid);
    }
    strapi.client().delete_webhook(&webhook.id).await.unwrap();
}

/// The shared Strapi, a listener, and a webhook that sends every entry event to it.
async fn subscribe_listener() -> (StrapiServer, CaptureServer, Webhook) {
    let strapi = StrapiServer::shared().await;
    let listener = CaptureServer::start().await;
    let wanted = spec(&format!("{}/hooks/entries", listener.url()), &ENTRY_EVENTS);
    let webhook = strapi.client().create_webhook(&wanted).await.unwrap();
    (strapi, listener, webhook)
}

/// Whether a call is `event` for the document `document_id` (the shared Strapi also sends other
/// tests' events to every webhook subscribed to them).
fn is_event_for(request: &CapturedRequest, event: &str, document_id: &str) -> bool {
    let payload: Value = serde_json::from_slice(&request.body).unwrap_or_default();
    payload["event"] == event && payload["entry"]["documentId"] == document_id
}

/// Checks Strapi's documented payload and header, and the payload's shape against its fixture.
fn check_call(call: &CapturedRequest, event: &str, model: &str, uid: &str) {
    assert_eq!(call.method, "POST");
    assert_eq!(call.header("x-strapi-event"), Some(event));
    assert_eq!(call.header("content-type"), Some("application/json"));
    assert_eq!(call.header("authorization"), Some("Bearer test-secret"));
    let payload = call.json();
    assert_eq!(payload["event"], event);
    assert_eq!(payload["model"], model);
    assert_eq!(payload["uid"], uid);
    assert!(payload["createdAt"].is_string(), "{payload}");
    assert!(payload["entry"].is_object(), "{payload}");
    check_fixture(&format!("{event}-{model}"), &payload);
}

/// Compares a payload's shape (keys and value types, not values) with the fixture of that name,
/// or rewrites the fixture when `UPDATE_STRAPI_FIXTURES` is set.
fn check_fixture(name: &str, payload: &Value) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/strapi-events")
        .join(format!("{name}.json"));
    if std::env::var_os("UPDATE_STRAPI_FIXTURES").is_some() {
        let pretty = serde_json::to_string_pretty(payload).unwrap() + "\n";
        std::fs::write(&path, pretty)
            .unwrap_or_else(|error| panic!("writing {}: {error}", path.display()));
        return;
    }
    let text = std::fs::read_to_string(&path).unwrap_or_else(|error| {
        panic!(
            "{}: {error}; run with UPDATE_STRAPI_FIXTURES=1 to capture it",
            path.display()
        )
    });
    let fixture: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        shape(payload),
        shape(&fixture),
        "Strapi's {name} payload no longer has the shape of {}",
        path.display()
    );
}

fn shape(value: &Value) -> Value {
    match value {
        Value::Null => json!("null"),
        Value::Bool(_) => json!("bool"),
        Value::Number(_) => json!("number"),
        Value::String(_) => json!("string"),
        Value::Array(items) => Value::Array(items.iter().map(shape).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(key, value)| (key.clone(), shape(value)))
                .collect(),
        ),
    }
}

#[tokio::test]
async fn server_errors_are_retried_for_idempotent_calls_only() {
    // A proxy in front of Strapi that answers 503 to everything.
    let proxy = CaptureServer::answering(StatusCode::SERVICE_UNAVAILABLE).await;
    let client =
        StrapiClient::with_options(proxy.url(), Credentials::admin_token("t"), impatient())
            .unwrap();

    let error = client.list_webhooks().await.unwrap_err();
    assert!(
        matches!(error, StrapiError::Unexpected { status: 503, .. }),
        "{error:?}"
    );
    assert_eq!(proxy.requests().len(), 3, "the call and its 2 retries");

    // A POST that failed may still have created the webhook, so it is not sent again.
    let error = client
        .create_webhook(&spec(
            "http://127.0.0.1:65000/hooks/retry",
            &["entry.create"],
        ))
        .await
        .unwrap_err();
    assert_eq!(error.reason(), "Unexpected", "{error}");
    assert_eq!(proxy.requests().len(), 4);
}

#[tokio::test]
async fn client_errors_are_not_retried() {
    let proxy = CaptureServer::answering(StatusCode::NOT_FOUND).await;
    let client =
        StrapiClient::with_options(proxy.url(), Credentials::admin_token("t"), impatient())
            .unwrap();
    let error = client.get_webhook("1").await.unwrap_err();
    assert_eq!(error.reason(), "NotFound", "{error}");
    let paths: Vec<String> = proxy.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/admin/webhooks/1"]);
}
