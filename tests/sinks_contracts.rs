//! The HTTP contracts of each sink kind, against real loopback servers that answer the way
//! Next.js handlers, Slack incoming webhooks and generic endpoints do.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    body::Bytes,
    http::{HeaderMap, Method as HttpMethod, StatusCode},
    response::{IntoResponse, Response},
    routing::any,
};
use serde_json::{Value, json};
use strapi_webhook_operator::{
    routing::{PathKind, Payload, RevalidatePath},
    sinks::{
        DeliveryPolicy, EgressBase, HeaderName, HeaderValue, HttpSink, Method, NextjsMode,
        NextjsSink, Outcome, SigningKey, SinkClient, SinkConfig, SinkKind, SlackSink, Url,
    },
};

/// One request as the loopback server saw it.
#[derive(Clone, Debug)]
struct Seen {
    method: HttpMethod,
    headers: HeaderMap,
    body: Bytes,
}

/// A loopback HTTP server that records every request and answers with `answer`.
struct Loopback {
    url: Url,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Loopback {
    async fn start(answer: impl Fn() -> Response + Clone + Send + Sync + 'static) -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let app = Router::new().route(
            "/{*path}",
            any(move |method: HttpMethod, headers: HeaderMap, body: Bytes| {
                let record = record.clone();
                let answer = answer.clone();
                async move {
                    record.lock().unwrap().push(Seen {
                        method,
                        headers,
                        body,
                    });
                    answer()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            url: Url::parse(&format!("http://{address}/hook")).unwrap(),
            seen,
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// Every sink here is a loopback server, which only local mode's receivers may call.
fn loopback() -> EgressBase {
    EgressBase {
        allow_loopback: true,
        ..EgressBase::default()
    }
}

fn policy(kind: SinkKind) -> DeliveryPolicy {
    DeliveryPolicy::defaults(kind)
}

fn nextjs(url: &Url, mode: NextjsMode) -> SinkConfig {
    SinkConfig::Nextjs(NextjsSink {
        url: url.clone(),
        secret: Some((
            HeaderName::from_static("x-webhook-secret"),
            HeaderValue::from_static("s3cret"),
        )),
        mode,
        coalesce_window: Duration::from_millis(250),
    })
}

fn revalidation(tags: &[&str], paths: &[(&str, Option<PathKind>)]) -> Payload {
    Payload::Revalidate {
        tags: tags.iter().map(|tag| tag.to_string()).collect(),
        paths: paths
            .iter()
            .map(|(path, kind)| RevalidatePath {
                path: path.to_string(),
                kind: *kind,
            })
            .collect(),
        skipped: Vec::new(),
    }
}

const STRAPI_PUBLISH: &[u8] = br#"{"event":"entry.publish","createdAt":"2026-11-27T01:00:00.000Z","model":"article","uid":"api::article.article","entry":{"id":7,"documentId":"k3x","slug":"hello","title":"Hello"}}"#;

#[tokio::test]
async fn nextjs_forward_sends_strapis_bytes_with_the_secret_and_the_delivery_id() {
    let site = Loopback::start(|| "OK".into_response()).await;
    let client = SinkClient::new(loopback()).unwrap();
    let outcome = client
        .send(
            &nextjs(&site.url, NextjsMode::Forward),
            &policy(SinkKind::Nextjs),
            "dlv-1",
            &[Payload::Forward(STRAPI_PUBLISH.to_vec())],
        )
        .await;
    assert_eq!(outcome, Outcome::Delivered);
    let [request] = site.seen().try_into().unwrap();
    assert_eq!(request.method, HttpMethod::POST);
    assert_eq!(&request.body[..], STRAPI_PUBLISH);
    assert_eq!(request.headers["x-webhook-secret"], "s3cret");
    assert_eq!(request.headers["webhook-id"], "dlv-1");
    assert_eq!(request.headers["content-type"], "application/json");
}

#[tokio::test]
async fn nextjs_revalidate_merges_payloads_into_one_call_with_the_union() {
    let site =
        Loopback::start(|| axum::Json(json!({"revalidated": true, "now": 1})).into_response())
            .await;
    let client = SinkClient::new(loopback()).unwrap();
    let payloads = [
        revalidation(&["article"], &[("/articles", None), ("/articles/a", None)]),
        revalidation(
            &["article"],
            &[
                ("/articles", None),
                ("/articles/[slug]", Some(PathKind::Page)),
            ],
        ),
        revalidation(&["global"], &[("/", Some(PathKind::Layout))]),
    ];
    let outcome = client
        .send(
            &nextjs(&site.url, NextjsMode::Revalidate),
            &policy(SinkKind::Nextjs),
            "dlv-2",
            &payloads,
        )
        .await;
    assert_eq!(outcome, Outcome::Delivered);
    let [request] = site.seen().try_into().unwrap();
    assert_eq!(request.headers["x-webhook-secret"], "s3cret");
    assert_eq!(
        serde_json::from_slice::<Value>(&request.body).unwrap(),
        json!({
            "tags": ["article", "global"],
            "paths": [
                {"path": "/articles"},
                {"path": "/articles/a"},
                {"path": "/articles/[slug]", "type": "page"},
                {"path": "/", "type": "layout"},
            ]
        })
    );
}

#[tokio::test]
async fn nextjs_answer_revalidated_false_is_retried() {
    let site = Loopback::start(|| axum::Json(json!({"revalidated": false})).into_response()).await;
    let outcome = SinkClient::new(loopback())
        .unwrap()
        .send(
            &nextjs(&site.url, NextjsMode::Revalidate),
            &policy(SinkKind::Nextjs),
            "dlv-3",
            &[revalidation(&["article"], &[])],
        )
        .await;
    assert!(
        matches!(&outcome, Outcome::Retry { reason, .. } if reason.contains("revalidated: false")),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn a_payload_that_does_not_fit_the_sink_is_dead_lettered_without_a_call() {
    let site = Loopback::start(|| "OK".into_response()).await;
    let client = SinkClient::new(loopback()).unwrap();
    let forward = nextjs(&site.url, NextjsMode::Forward);
    let two = [
        Payload::Forward(STRAPI_PUBLISH.to_vec()),
        Payload::Forward(STRAPI_PUBLISH.to_vec()),
    ];
    for payloads in [&two[..], &[revalidation(&["a"], &[])][..]] {
        let outcome = client
            .send(&forward, &policy(SinkKind::Nextjs), "dlv-4", payloads)
            .await;
        assert!(matches!(outcome, Outcome::DeadLetter { .. }), "{outcome:?}");
    }
    assert!(site.seen().is_empty());
}

fn slack(url: &Url) -> SinkConfig {
    SinkConfig::Slack(SlackSink {
        webhook_url: url.clone(),
    })
}

fn message(text: &str) -> Payload {
    Payload::Slack {
        text: text.to_owned(),
        blocks: None,
    }
}

#[tokio::test]
async fn slack_ok_delivers_the_message_as_json() {
    let hook = Loopback::start(|| "ok".into_response()).await;
    let blocks = json!([{"type": "section", "text": {"type": "mrkdwn", "text": "*hi*"}}]);
    let outcome = SinkClient::new(loopback())
        .unwrap()
        .send(
            &slack(&hook.url),
            &policy(SinkKind::Slack),
            "dlv-5",
            &[Payload::Slack {
                text: "hi".to_owned(),
                blocks: Some(blocks.clone()),
            }],
        )
        .await;
    assert_eq!(outcome, Outcome::Delivered);
    let [request] = hook.seen().try_into().unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&request.body).unwrap(),
        json!({"text": "hi", "blocks": blocks})
    );
}

#[tokio::test]
async fn slack_429_hands_back_retry_after() {
    let hook = Loopback::start(|| {
        (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", "2")],
            "rate_limited",
        )
            .into_response()
    })
    .await;
    let outcome = SinkClient::new(loopback())
        .unwrap()
        .send(
            &slack(&hook.url),
            &policy(SinkKind::Slack),
            "dlv-6",
            &[message("hi")],
        )
        .await;
    let Outcome::Retry { retry_after, .. } = outcome else {
        panic!("429 must be retried, got {outcome:?}")
    };
    assert_eq!(retry_after, Some(Duration::from_secs(2)));
}

#[tokio::test]
async fn slack_gone_pauses_and_bad_messages_dead_letter() {
    let client = SinkClient::new(loopback()).unwrap();
    for (status, code, paused) in [
        (StatusCode::NOT_FOUND, "no_service", true),
        (StatusCode::NOT_FOUND, "channel_not_found", true),
        (StatusCode::GONE, "channel_is_archived", true),
        (StatusCode::FORBIDDEN, "invalid_token", true),
        (StatusCode::BAD_REQUEST, "invalid_payload", false),
        (StatusCode::BAD_REQUEST, "no_text", false),
    ] {
        let hook = Loopback::start(move || (status, code).into_response()).await;
        let outcome = client
            .send(
                &slack(&hook.url),
                &policy(SinkKind::Slack),
                "dlv-7",
                &[message("hi")],
            )
            .await;
        match (paused, &outcome) {
            (true, Outcome::PauseSink { reason }) | (false, Outcome::DeadLetter { reason }) => {
                assert!(reason.contains(code), "{reason}")
            }
            _ => panic!("{code}: unexpected {outcome:?}"),
        }
    }
}

fn http_sink(url: &Url, signing: Vec<SigningKey>) -> SinkConfig {
    let mut token = HeaderValue::from_static("Bearer crm-token");
    token.set_sensitive(true);
    SinkConfig::Http(HttpSink {
        url: url.clone(),
        method: Method::PUT,
        headers: vec![(HeaderName::from_static("authorization"), token)],
        signing,
    })
}

#[tokio::test]
async fn http_sends_method_headers_body_and_one_signature_per_rotating_secret() {
    let crm = Loopback::start(|| StatusCode::ACCEPTED.into_response()).await;
    let old = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let new = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    let keys = SigningKey::parse_all(&format!("{old} {new}")).unwrap();
    let body = br#"{"email":"ada@example.com"}"#.to_vec();
    let outcome = SinkClient::new(loopback())
        .unwrap()
        .send(
            &http_sink(&crm.url, keys),
            &policy(SinkKind::Http),
            "dlv-8",
            &[Payload::Http { body: body.clone() }],
        )
        .await;
    assert_eq!(outcome, Outcome::Delivered);
    let [request] = crm.seen().try_into().unwrap();
    assert_eq!(request.method, HttpMethod::PUT);
    assert_eq!(request.headers["authorization"], "Bearer crm-token");
    assert_eq!(request.headers["webhook-id"], "dlv-8");
    assert_eq!(&request.body[..], &body[..]);
    let signatures = request.headers["webhook-signature"].to_str().unwrap();
    assert_eq!(signatures.split(' ').count(), 2, "{signatures}");
    // The receiving side verifies with either secret, as during a rotation.
    for secret in [old, new] {
        standardwebhooks::Webhook::new(secret)
            .unwrap()
            .verify(&request.body, &request.headers)
            .unwrap_or_else(|error| panic!("{secret}: {error}"));
    }
}

#[test]
fn signing_secrets_must_be_standard_webhooks_secrets() {
    assert!(SigningKey::parse("plain-password").is_err());
    assert!(SigningKey::parse("whsec_not base64!").is_err());
    assert_eq!(
        SigningKey::parse_all("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n")
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn http_statuses_are_classified() {
    let client = SinkClient::new(loopback()).unwrap();
    for (status, retried) in [
        (StatusCode::REQUEST_TIMEOUT, true),
        (StatusCode::TOO_MANY_REQUESTS, true),
        (StatusCode::BAD_GATEWAY, true),
        (StatusCode::UNPROCESSABLE_ENTITY, false),
        (StatusCode::UNAUTHORIZED, false),
    ] {
        let crm = Loopback::start(move || (status, "nope").into_response()).await;
        let outcome = client
            .send(
                &http_sink(&crm.url, Vec::new()),
                &policy(SinkKind::Http),
                "dlv-9",
                &[Payload::Http {
                    body: b"{}".to_vec(),
                }],
            )
            .await;
        match (retried, &outcome) {
            (true, Outcome::Retry { reason, .. }) | (false, Outcome::DeadLetter { reason }) => {
                // The status, never the answer's body: it may hold what the sink must not
                // show to whoever reads the delivery's last error.
                assert!(
                    reason.contains(status.as_str()) && !reason.contains("nope"),
                    "{reason}"
                )
            }
            _ => panic!("{status}: unexpected {outcome:?}"),
        }
    }
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let crm = Loopback::start(|| {
        (
            StatusCode::MOVED_PERMANENTLY,
            [("location", "https://crm.example.com/api?token=t0k3n")],
        )
            .into_response()
    })
    .await;
    let outcome = SinkClient::new(loopback())
        .unwrap()
        .send(
            &http_sink(&crm.url, Vec::new()),
            &policy(SinkKind::Http),
            "dlv-10",
            &[Payload::Http {
                body: b"{}".to_vec(),
            }],
        )
        .await;
    assert!(
        matches!(&outcome, Outcome::DeadLetter { reason }
            if reason.contains("https://crm.example.com/…") && !reason.contains("t0k3n")),
        "{outcome:?}"
    );
    assert_eq!(crm.seen().len(), 1);
}

#[tokio::test]
async fn a_closed_port_and_a_silent_sink_are_retried() {
    // Bind then drop: nothing listens on that port any more.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let client = SinkClient::new(loopback()).unwrap();
    let payload = [Payload::Http {
        body: b"{}".to_vec(),
    }];
    let url = Url::parse(&format!("http://{closed}/")).unwrap();
    let outcome = client
        .send(
            &http_sink(&url, Vec::new()),
            &policy(SinkKind::Http),
            "dlv-11",
            &payload,
        )
        .await;
    assert!(
        matches!(&outcome, Outcome::Retry { reason, retry_after: None } if reason.contains("connect")),
        "{outcome:?}"
    );

    // A server that accepts but never answers: the attempt ends at the policy's timeout.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = Url::parse(&format!("http://{}/", silent.local_addr().unwrap())).unwrap();
    let held = tokio::spawn(async move {
        let (_socket, _) = silent.accept().await.unwrap();
        std::future::pending::<()>().await
    });
    let short = DeliveryPolicy {
        timeout: Duration::from_millis(200),
        ..policy(SinkKind::Http)
    };
    let outcome = client
        .send(&http_sink(&url, Vec::new()), &short, "dlv-12", &payload)
        .await;
    assert!(
        matches!(&outcome, Outcome::Retry { reason, .. } if reason.contains("no answer within")),
        "{outcome:?}"
    );
    held.abort();
}
