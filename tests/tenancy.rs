//! Multi-tenant safety, tried the way a namespace user who may create `StrapiWebhook`s would:
//! no secret of any kind reaches an output (logs at trace level, `/metrics`, `/v1/stats`, the
//! `deliveries` command, the SQLite file and its WAL), whatever the sinks answer.

mod support;

#[path = "support/receiver.rs"]
mod receiver;

use std::{
    io::Write,
    process::Command,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::http::StatusCode;
use receiver::{INSTANCE, SECRET, TestReceiver, article_event, client, free_port};
use serde_json::json;
use strapi_webhook_operator::{
    api::StrapiWebhookSpec, config::InMemorySecrets, config::compile_webhook,
    receiver::source::Snapshot,
};
use support::CaptureServer;

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
    let stats_url = format!("{}/v1/stats", receiver.admin_url());
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let stats = loop {
        let stats: serde_json::Value = http
            .get(&stats_url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let sinks = stats["webhooks"]["cms/site"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if sinks.len() == 3
            && sinks
                .iter()
                .all(|sink| sink["failed"].as_i64() >= Some(3) && sink["lastError"].is_string())
        {
            break stats;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "sinks did not fail: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
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
    let metrics = http
        .get(format!("{}/metrics", receiver.admin_url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
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
