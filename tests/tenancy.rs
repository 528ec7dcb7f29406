//! Multi-tenant safety, tried the way a namespace user who may create `StrapiWebhook`s would:
//! no secret of any kind reaches an output (logs at trace level, `/metrics`, `/v1/stats`, the
//! `deliveries` command, the SQLite file and its WAL), whatever the sinks answer.

mod support;

use std::{
    collections::BTreeMap,
    io::Write,
    process::Command,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::http::StatusCode;
use serde_json::json;
use strapi_webhook_operator::{
    api::StrapiWebhookSpec,
    config::{InMemorySecrets, Reason, apply_egress, compile_webhook, egress_rules},
    receiver::{
        ReceiverSettings, ReceiverState, admin,
        source::{Snapshot, StaticSource},
    },
    sinks::{EgressBase, EgressPolicy},
};
use support::receiver;
use support::receiver::{INSTANCE, SECRET, TestReceiver, article_event, client, free_port};
use support::{CaptureServer, eventually};

const PATIENCE: Duration = Duration::from_secs(30);

/// Everything the process logs, at every level, into one buffer.
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl Write for LogBuffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogBuffer {
    /// Captures every span and event of this test process, including `log` records of
    /// dependencies (reqwest, hyper).
    fn install() -> Self {
        let buffer = Self::default();
        let writer = buffer.clone();
        tracing_subscriber::fmt()
            .with_env_filter("trace")
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .init();
        buffer
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

struct Secrets {
    slack_path: &'static str,
    bearer: &'static str,
    nextjs: &'static str,
    signing: &'static str,
    query_token: &'static str,
    userinfo: &'static str,
}

const SECRETS: Secrets = Secrets {
    slack_path: "T0TENANT/B0TENANT/slackPathSecret9f2",
    bearer: "bearerSecret7c41",
    nextjs: "nextjsSecret55ad",
    // Standard Webhooks form: whsec_ + base64 of "signingKeySecret0b7e".
    signing: "whsec_c2lnbmluZ0tleVNlY3JldDBiN2U=",
    query_token: "queryTokenSecret3e90",
    userinfo: "userinfoPassword8d13",
};

/// A webhook with one sink of each kind, each carrying its secret, all failing: Slack at a
/// closed port, the HTTP and Next.js sinks at a server answering 500 with the request echoed.
fn failing_sinks(echo: &str, closed_port: u16) -> (StrapiWebhookSpec, InMemorySecrets) {
    let mut secrets = InMemorySecrets::new();
    secrets
        .insert(
            "cms",
            "slack",
            "url",
            format!(
                "http://127.0.0.1:{closed_port}/services/{}",
                SECRETS.slack_path
            ),
        )
        .insert("cms", "crm", "token", SECRETS.bearer)
        .insert("cms", "crm", "signing", SECRETS.signing)
        .insert("cms", "next", "secret", SECRETS.nextjs);
    let delivery = json!({
        "timeout": "2s",
        "maxAttempts": 100,
        "backoff": { "initial": "50ms", "max": "200ms" },
    });
    let host = echo.trim_start_matches("http://");
    let spec = serde_json::from_value(json!({
        "instanceRef": { "name": "strapi" },
        "events": ["entry.create"],
        "sinks": [
            { "name": "slack", "delivery": delivery,
              "slack": { "webhookUrlSecretRef": { "name": "slack", "key": "url" } } },
            { "name": "crm", "delivery": delivery, "http": {
                "url": format!("{echo}/crm?token={}", SECRETS.query_token),
                "headers": [{ "name": "Authorization",
                              "valueFrom": { "secretKeyRef": { "name": "crm", "key": "token" },
                                             "prefix": "Bearer " } }],
                "signing": { "secretRef": { "name": "crm", "key": "signing" } } } },
            { "name": "next", "delivery": delivery, "nextjs": {
                "url": format!("http://next:{}@{host}/api/revalidate?secret={}",
                              SECRETS.userinfo, SECRETS.query_token),
                "mode": "Forward",
                "secretRef": { "name": "next", "key": "secret" } } },
        ],
        "routes": [
            { "name": "to-slack", "sink": "slack", "slack": { "text": "{{ entry.title }}" } },
            { "name": "to-crm", "sink": "crm" },
            { "name": "to-next", "sink": "next" },
        ],
    }))
    .expect("a valid spec");
    (spec, secrets)
}

fn find_secrets(place: &str, text: &str) -> Vec<String> {
    [
        ("the Slack URL path", SECRETS.slack_path),
        ("the Bearer token", SECRETS.bearer),
        ("the Next.js secret", SECRETS.nextjs),
        ("the signing key", SECRETS.signing),
        ("the query-string token", SECRETS.query_token),
        ("the URL password", SECRETS.userinfo),
        ("the shared secret", SECRET),
    ]
    .into_iter()
    .filter(|(_, value)| text.contains(value))
    .map(|(what, _)| format!("{what} in {place}"))
    .collect()
}

fn deliveries_command(admin: &str, args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_strapi-webhook-operator"))
        .args(["deliveries", "--admin-url", admin])
        .env("RECEIVER_ADMIN_TOKEN", receiver::ADMIN_TOKEN)
        .args(args)
        .output()
        .expect("running the deliveries command");
    assert!(
        output.status.success(),
        "deliveries {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_any_output() {
    let logs = LogBuffer::install();
    let echo = CaptureServer::echoing(StatusCode::INTERNAL_SERVER_ERROR).await;
    let (spec, secrets) = failing_sinks(echo.url(), free_port());
    let webhook = compile_webhook("cms", "site", 1, &spec, &secrets).expect("the webhook compiles");
    let snapshot = Snapshot::new(
        [(INSTANCE.to_owned(), vec![SECRET.to_owned()])].into(),
        [webhook],
    );
    let receiver = TestReceiver::start(snapshot).await;
    let http = client();
    for n in 0..3 {
        assert_eq!(
            receiver.post(&http, &article_event(n)).await,
            StatusCode::OK
        );
    }
    // The echo server saw the secrets, so the sinks really sent them.
    let seen = echo
        .wait_for_many(PATIENCE, 4, |request| request.path.contains("/crm"))
        .await;
    assert_eq!(
        seen[0].header("authorization"),
        Some(format!("Bearer {}", SECRETS.bearer).as_str())
    );
    // Every sink has failed a few times and recorded why.
    let stats = eventually(PATIENCE, || async {
        let stats: serde_json::Value = receiver.admin_json("/v1/stats").await;
        let sinks = stats["webhooks"]["cms/site"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if sinks.len() == 3
            && sinks
                .iter()
                .all(|sink| sink["failed"].as_i64() >= Some(3) && sink["lastError"].is_string())
        {
            Ok(stats)
        } else {
            Err(format!("sinks did not fail: {stats}"))
        }
    })
    .await;
    let last_errors: Vec<&str> = stats["webhooks"]["cms/site"]
        .as_array()
        .unwrap()
        .iter()
        .map(|sink| sink["lastError"].as_str().unwrap())
        .collect();
    for error in &last_errors {
        assert!(
            !error.contains("POST /"),
            "the answer's body was quoted: {error}"
        );
    }
    let metrics = receiver.metrics().await;
    let list = deliveries_command(&receiver.admin_url(), &["list", "--json"]);
    let table = deliveries_command(&receiver.admin_url(), &["list"]);
    let ids: Vec<String> = serde_json::from_str::<Vec<serde_json::Value>>(&list)
        .unwrap()
        .iter()
        .map(|delivery| delivery["id"].as_str().unwrap().to_owned())
        .collect();
    let mut shown = String::new();
    for id in &ids {
        shown.push_str(&deliveries_command(&receiver.admin_url(), &["show", id]));
    }
    let queue_files: Vec<(String, Vec<u8>)> = receiver
        .queue_files()
        .iter()
        .map(|file| {
            (
                file.display().to_string(),
                std::fs::read(file).unwrap_or_default(),
            )
        })
        .collect();
    receiver.shutdown().await;

    let mut found = Vec::new();
    found.extend(find_secrets("/v1/stats", &stats.to_string()));
    found.extend(find_secrets("/metrics", &metrics));
    found.extend(find_secrets("deliveries list --json", &list));
    found.extend(find_secrets("deliveries list", &table));
    found.extend(find_secrets("deliveries show", &shown));
    for (file, bytes) in &queue_files {
        found.extend(find_secrets(file, &String::from_utf8_lossy(bytes)));
    }
    let logs = logs.text();
    assert!(
        logs.contains("TRACE"),
        "trace-level logging was not captured"
    );
    found.extend(find_secrets("the logs", &logs));
    assert!(
        found.is_empty(),
        "secrets leaked: {found:#?}\nlast errors: {last_errors:#?}"
    );
}

/// A webhook `cms/site` with one HTTP sink at `url` taking every event, compiled and held to
/// the receiver's policy the way local mode and the controller do.
fn one_sink(url: &str, headers: serde_json::Value) -> StrapiWebhookSpec {
    serde_json::from_value(json!({
        "instanceRef": { "name": "strapi" },
        "events": ["entry.create"],
        "sinks": [{ "name": "crm", "http": { "url": url, "headers": headers },
                    "delivery": { "maxAttempts": 1 } }],
        "routes": [{ "name": "all", "sink": "crm" }],
    }))
    .unwrap()
}

#[test]
fn metadata_addresses_in_every_spelling_are_refused_naming_the_field() {
    // Even an instance that opens private ranges and lists link-local as allowed.
    let policy = EgressPolicy {
        base: EgressBase::default(),
        rules: egress_rules(Some(
            &serde_json::from_value(json!({
                "allowPrivateNetworks": true,
                "allowedCIDRs": ["169.254.0.0/16"],
            }))
            .unwrap(),
        ))
        .unwrap(),
    };
    for url in [
        "http://169.254.169.254/latest/meta-data/iam/",
        "http://2852039166/",
        "http://0xa9.0xfe.0xa9.0xfe/",
        "http://[::ffff:169.254.169.254]/",
        "http://[fd00:ec2::254]/",
        "http://127.0.0.1:9091/v1/deliveries/replay",
        "http://localhost/",
        "http://0.0.0.0:8080/",
    ] {
        let spec = one_sink(url, json!([]));
        let mut webhook = compile_webhook("cms", "site", 1, &spec, &InMemorySecrets::new())
            .expect("the URL itself is well formed");
        let errors = apply_egress(&mut webhook, &spec, &policy).expect_err(url);
        let error = &errors.0[0];
        assert_eq!(error.field, "spec.sinks[0].http.url", "{url}");
        assert_eq!(error.reason, Reason::EgressRefused, "{url}");
    }
    let spec = one_sink("http://10.0.0.7/", json!([]));
    let mut webhook = compile_webhook("cms", "site", 1, &spec, &InMemorySecrets::new()).unwrap();
    apply_egress(&mut webhook, &spec, &policy).expect("private ranges are allowed here");
}

#[test]
fn host_and_hop_by_hop_headers_cannot_be_set_by_a_sink() {
    for name in [
        "Host",
        "Connection",
        "Transfer-Encoding",
        "Upgrade",
        "TE",
        "webhook-id",
    ] {
        let spec = one_sink(
            "https://crm.example.com/api",
            json!([{ "name": name, "value": "x" }]),
        );
        let errors =
            compile_webhook("cms", "site", 1, &spec, &InMemorySecrets::new()).expect_err(name);
        assert_eq!(
            errors.0[0].field, "spec.sinks[0].http.headers[0].name",
            "{name}"
        );
        assert_eq!(errors.0[0].reason, Reason::SinkInvalid, "{name}");
    }
}

#[tokio::test]
async fn a_sink_at_the_receivers_own_admin_port_is_dead_lettered_without_a_call() {
    let receiver = TestReceiver::start(Snapshot::new(
        [(INSTANCE.to_owned(), vec![SECRET.to_owned()])].into(),
        [],
    ))
    .await;
    // Loopback is allowed for the test's sinks, but never the receiver's own ports.
    let spec = one_sink(
        &format!("http://{}/v1/deliveries/replay", receiver.admin),
        json!([]),
    );
    let webhook = compile_webhook("cms", "site", 1, &spec, &InMemorySecrets::new()).unwrap();
    receiver.source.publish(Snapshot::new(
        [(INSTANCE.to_owned(), vec![SECRET.to_owned()])].into(),
        [webhook],
    ));
    let http = client();
    assert_eq!(
        receiver.post(&http, &article_event(1)).await,
        StatusCode::OK
    );
    let dead = eventually(PATIENCE, || async {
        let dead: Vec<serde_json::Value> = receiver.admin_json("/v1/deliveries?state=dead").await;
        match dead.is_empty() {
            true => Err("nothing was dead-lettered"),
            false => Ok(dead),
        }
    })
    .await;
    let error = dead[0]["lastError"].as_str().unwrap_or_default();
    assert!(
        error.contains("egress policy") && error.contains("the receiver's own port"),
        "{dead:#?}"
    );
    receiver.shutdown().await;
}

#[tokio::test]
async fn the_admin_api_needs_the_token_a_json_body_and_no_origin() {
    let receiver = TestReceiver::start(Snapshot::new(
        [(INSTANCE.to_owned(), vec![SECRET.to_owned()])].into(),
        [],
    ))
    .await;
    let base = receiver.admin_url();
    // No token at all: the tests' `client()` sends one.
    let anonymous = strapi_webhook_operator::http::client_builder()
        .build()
        .unwrap();
    let status = |response: reqwest::Response| response.status().as_u16();
    for path in ["/healthz", "/readyz", "/metrics"] {
        let response = anonymous.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(status(response), 200, "{path} stays open");
    }
    for path in [
        "/v1/deliveries",
        "/v1/deliveries/0195d2a0-0000-7000-8000-000000000000",
        "/v1/stats",
        "/v1/instances/cms/strapi/handshake",
    ] {
        let response = anonymous.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(status(response), 401, "{path} without a token");
        let response = anonymous
            .get(format!("{base}{path}"))
            .bearer_auth("test-admin-token-0123456780")
            .send()
            .await
            .unwrap();
        assert_eq!(status(response), 401, "{path} with a wrong token");
    }
    let response = anonymous
        .post(format!("{base}/v1/deliveries/replay"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(status(response), 401, "replay without a token");

    let admin = client();
    let replay = format!("{base}/v1/deliveries/replay");
    assert_eq!(
        status(admin.post(&replay).send().await.unwrap()),
        415,
        "no body"
    );
    let form = admin
        .post(&replay)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("webhook=cms/site")
        .send()
        .await
        .unwrap();
    assert_eq!(status(form), 415, "a form post");
    let from_a_page = admin
        .post(&replay)
        .header("origin", "http://attacker.example")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(status(from_a_page), 403, "a request from a web page");
    let replayed = admin
        .post(&replay)
        .json(&json!({"sink": "crm"}))
        .send()
        .await
        .unwrap();
    assert_eq!(status(replayed), 200);
    let unknown = admin
        .post(&replay)
        .json(&json!({"sinks": "crm"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        status(unknown),
        422,
        "a misspelt selector is refused, not read as 'all'"
    );

    let too_many = admin
        .get(format!("{base}/v1/deliveries?limit=4294967295"))
        .send()
        .await
        .unwrap();
    assert_eq!(status(too_many), 400);
    let listed = admin
        .get(format!("{base}/v1/deliveries?limit=1000"))
        .send()
        .await
        .unwrap();
    assert_eq!(status(listed), 200);
    receiver.shutdown().await;
}

#[tokio::test]
async fn without_a_configured_token_the_admin_api_is_off_and_probes_stay_open() {
    use tower::ServiceExt;
    let store = receiver::TestStore::start();
    let source = StaticSource::new(Snapshot::new(BTreeMap::new(), []));
    let state = ReceiverState::new(store.open().await, &source, ReceiverSettings::default())
        .expect("a receiver");
    let call = |path: &str| {
        let request = axum::http::Request::get(path)
            .header("authorization", "Bearer anything-at-all-0123456789")
            .body(axum::body::Body::empty())
            .unwrap();
        admin::app(Arc::clone(&state)).oneshot(request)
    };
    assert_eq!(call("/healthz").await.unwrap().status(), StatusCode::OK);
    assert_eq!(call("/metrics").await.unwrap().status(), StatusCode::OK);
    for path in ["/v1/deliveries", "/v1/stats"] {
        assert_eq!(
            call(path).await.unwrap().status(),
            StatusCode::SERVICE_UNAVAILABLE,
            "{path}"
        );
    }
}
