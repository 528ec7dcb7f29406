//! The helpers `make demo` (scripts/demo.sh) runs around local mode:
//!
//! - `demo sink slack|crm --port N` — a loopback stand-in for a Slack incoming webhook or a
//!   CRM's contacts API. Each checks what the real one checks (the Bearer token and Standard
//!   Webhooks signature), answers what the real one answers (Slack's `ok`), and prints each call
//!   readably. Next.js is the real test site (tests/nextjs, `scripts/nextjs.sh`).
//! - `demo drive` — acts as an editor in Strapi through its admin API: creates, updates,
//!   publishes and deletes articles, adds a comment, creates leads.
//! - `demo summary` — the end-of-demo table from the receiver's admin API and metrics.

use std::{net::SocketAddr, time::Duration};

use axum::{
    Json, Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
};
use clap::{Parser, Subcommand, ValueEnum};
use serde_json::{Value, json};
use strapi_webhook_operator::{
    admin_api::Stats,
    strapi::{Credentials, Document, StrapiClient},
};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve one demo sink on 127.0.0.1 until killed.
    Sink {
        /// Which service to stand in for.
        kind: SinkKind,
        /// Port on 127.0.0.1.
        #[arg(long)]
        port: u16,
        /// CRM: the expected Bearer token.
        #[arg(long)]
        secret: Option<String>,
        /// CRM: the Standard Webhooks signing secret (`whsec_...`).
        #[arg(long)]
        signing_secret: Option<String>,
    },
    /// Make editor changes in Strapi: each one fires Strapi webhooks.
    Drive {
        /// Strapi's base URL.
        #[arg(long, env = "STRAPI_TEST_URL")]
        strapi_url: String,
        /// Admin email.
        #[arg(long, env = "STRAPI_TEST_EMAIL")]
        email: String,
        /// Admin password.
        #[arg(long, env = "STRAPI_TEST_PASSWORD")]
        password: String,
        /// What to do.
        #[arg(value_enum)]
        scene: Scene,
    },
    /// Print the summary table from the receiver's admin port.
    Summary {
        /// The receiver's admin URL.
        #[arg(long)]
        admin_url: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum SinkKind {
    Slack,
    Crm,
}

#[derive(Clone, Copy, ValueEnum)]
enum Scene {
    /// Articles (create, update, publish, delete), a comment and a lead.
    Content,
    /// One more comment, after the Slack route was edited.
    Comment,
    /// One more lead, for the CRM outage.
    Lead,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    match Cli::parse().command {
        Command::Sink {
            kind,
            port,
            secret,
            signing_secret,
        } => serve_sink(kind, port, secret, signing_secret).await,
        Command::Drive {
            strapi_url,
            email,
            password,
            scene,
        } => {
            let client = StrapiClient::new(&strapi_url, Credentials::password(email, password))?;
            drive(&client, scene).await
        }
        Command::Summary { admin_url } => summary(&admin_url).await,
    }
}

#[derive(Clone)]
struct Sink {
    kind: SinkKind,
    secret: Option<String>,
    signer: Option<std::sync::Arc<standardwebhooks::Webhook>>,
}

async fn serve_sink(
    kind: SinkKind,
    port: u16,
    secret: Option<String>,
    signing_secret: Option<String>,
) -> Result<(), Box<dyn std::error::Error>> {
    let signer = signing_secret
        .map(|secret| standardwebhooks::Webhook::new(&secret).map(std::sync::Arc::new))
        .transpose()?;
    let sink = Sink {
        kind,
        secret,
        signer,
    };
    let app = Router::new()
        .route("/{*path}", post(receive))
        .with_state(sink);
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await?;
    axum::serve(listener, app).await?;
    Ok(())
}

async fn receive(State(sink): State<Sink>, headers: HeaderMap, body: Bytes) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let id = header("webhook-id");
    let short_id = id.get(id.len().saturating_sub(8)..).unwrap_or(&id);
    let payload: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let refuse = |status: StatusCode, why: &str| {
        println!("  [{}] refused ({status}): {why}", name(sink.kind));
        (status, why.to_owned()).into_response()
    };
    match sink.kind {
        SinkKind::Slack => {
            println!("  [slack] #team-chat: {}", payload["text"]);
            "ok".into_response()
        }
        SinkKind::Crm => {
            let expected = format!("Bearer {}", sink.secret.as_deref().unwrap_or_default());
            if header("authorization") != expected {
                return refuse(StatusCode::UNAUTHORIZED, "invalid bearer token");
            }
            if let Some(signer) = &sink.signer
                && let Err(error) = signer.verify(&body, &headers)
            {
                return refuse(StatusCode::UNAUTHORIZED, &format!("bad signature: {error}"));
            }
            println!(
                "  [crm] {} contact {} <{}> from {} (signature ok, webhook-id …{short_id})",
                if payload["event"] == "entry.create" {
                    "create"
                } else {
                    "update"
                },
                payload["name"],
                payload["email"].as_str().unwrap_or("-"),
                payload["company"].as_str().unwrap_or("-"),
            );
            Json(json!({ "ok": true })).into_response()
        }
    }
}

fn name(kind: SinkKind) -> &'static str {
    match kind {
        SinkKind::Slack => "slack",
        SinkKind::Crm => "crm",
    }
}

const ARTICLE: &str = "api::article.article";

async fn drive(client: &StrapiClient, scene: Scene) -> Result<(), Box<dyn std::error::Error>> {
    let step = |what: &str| println!("strapi> {what}");
    match scene {
        Scene::Content => {
            step("create article \"Hello Strapi\" (draft)");
            let hello = client
                .create_entry(
                    ARTICLE,
                    &json!({"title": "Hello Strapi", "slug": "hello-strapi", "body": "First!"}),
                )
                .await?;
            let hello_doc = Document::Entry {
                uid: ARTICLE,
                document_id: &hello.document_id,
            };
            step("update its body");
            client
                .update_document(hello_doc, &json!({"body": "First, edited."}))
                .await?;
            step("publish it");
            client.publish(hello_doc).await?;
            step("create and publish article \"Webhooks done right\"");
            let second = client
                .create_entry(
                    ARTICLE,
                    &json!({"title": "Webhooks done right", "slug": "webhooks-done-right"}),
                )
                .await?;
            let second_doc = Document::Entry {
                uid: ARTICLE,
                document_id: &second.document_id,
            };
            client.publish(second_doc).await?;
            step("delete \"Webhooks done right\"");
            client.delete_document(second_doc).await?;
            step("add a comment");
            client
                .create_entry(
                    "api::comment.comment",
                    &json!({"author": "Ada", "text": "Great article, the retries are lovely."}),
                )
                .await?;
            step("create a lead");
            client
                .create_entry(
                    "api::lead.lead",
                    &json!({"name": "Grace Hopper", "email": "grace@example.com", "company": "Navy"}),
                )
                .await?;
        }
        Scene::Comment => {
            step("add another comment");
            client
                .create_entry(
                    "api::comment.comment",
                    &json!({"author": "Linus", "text": "Edited routes apply without a restart?"}),
                )
                .await?;
        }
        Scene::Lead => {
            step("create a lead while the CRM is down");
            client
                .create_entry(
                    "api::lead.lead",
                    &json!({"name": "Linus", "email": "linus@example.com", "company": "Kernel"}),
                )
                .await?;
        }
    }
    // Strapi sends webhooks after answering; give the last ones time to leave before the
    // script moves on (they are durable once the receiver has them).
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(())
}

async fn summary(admin_url: &str) -> Result<(), Box<dyn std::error::Error>> {
    let base = admin_url.trim_end_matches('/');
    // reqwest is built without a TLS provider (see Cargo.toml); plain http needs none, but the
    // client refuses to build until one is installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();
    // Local mode keeps the admin API token in <data-dir>/admin-token; demo.sh names the file.
    let token_file = std::env::var("RECEIVER_ADMIN_TOKEN_FILE")?;
    let token = std::fs::read_to_string(&token_file)?;
    let stats: Stats = http
        .get(format!("{base}/v1/stats"))
        .bearer_auth(token.trim())
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    print!("{}", event_accounting(&metrics));
    println!();
    print!("{}", sink_table(&stats));
    Ok(())
}

/// The series of counter `name` in an exposition text: each line's labels and value.
fn series<'a>(metrics: &'a str, name: &str) -> Vec<(&'a str, u64)> {
    metrics
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            let (labels, value) = rest.rsplit_once(' ')?;
            // `name_created` and the like share the prefix but are other series.
            if !(labels.is_empty() || labels.starts_with('{')) {
                return None;
            }
            Some((labels, value.parse::<f64>().ok()? as u64))
        })
        .collect()
}

/// Where every event Strapi sent went: stored, collapsed as a duplicate, or refused (by reason),
/// and what the gap repair added. Counters are summed over instances.
fn event_accounting(metrics: &str) -> String {
    let total = |name: &str| -> u64 { series(metrics, name).iter().map(|(_, n)| n).sum() };
    let received = total("strapi_webhook_receiver_events_received_total");
    let stored = total("strapi_webhook_receiver_events_stored_total");
    let recovered = total("strapi_webhook_receiver_events_recovered_total");
    let duplicates = total("strapi_webhook_receiver_events_duplicate_total");
    let handshakes = total("strapi_webhook_receiver_handshakes_total");
    let from_strapi = stored.saturating_sub(recovered);
    let mut rows = vec![
        (
            "stored and delivered to their sinks".to_owned(),
            from_strapi,
        ),
        (
            "collapsed as duplicates (Strapi 5 fires one delete or publish per draft and \
             published row; one is kept)"
                .to_owned(),
            duplicates,
        ),
    ];
    if handshakes > 0 {
        rows.push((
            "test calls (Strapi's webhook test, which local mode and the controller send to \
             verify the secret; nothing to deliver)"
                .to_owned(),
            handshakes,
        ));
    }
    // Refusals of an unknown instance (or before the configuration loaded) were never counted
    // as received; they are shown apart.
    let mut refused_elsewhere = 0;
    for (labels, count) in series(metrics, "strapi_webhook_receiver_events_rejected_total") {
        let reason = label(labels, "reason").unwrap_or("unknown");
        if label(labels, "strapi_instance") == Some("unknown") {
            refused_elsewhere += count;
        } else if count > 0 {
            rows.push((format!("refused ({reason})"), count));
        }
    }
    let accounted: u64 = rows.iter().map(|(_, n)| n).sum();
    if accounted != received {
        rows.push((
            "not yet accounted for (still being stored, or a duplicate of a recovered event)"
                .to_owned(),
            received.abs_diff(accounted),
        ));
    }
    let mut out = format!("events received from Strapi: {received}\n");
    let width = rows
        .iter()
        .map(|(_, n)| n.to_string().len())
        .max()
        .unwrap_or(1);
    for (what, count) in rows {
        out.push_str(&format!("  {count:>width$}  {what}\n"));
    }
    if recovered > 0 {
        out.push_str(&format!(
            "plus {recovered} events the gap repair rebuilt from Strapi's content (Strapi's call \
             never arrived)\n"
        ));
    }
    if refused_elsewhere > 0 {
        out.push_str(&format!(
            "plus {refused_elsewhere} calls refused before reaching an instance (unknown instance, \
             or the receiver was still loading)\n"
        ));
    }
    out
}

/// The value of label `name` in a `{a="x",b="y"}` label set.
fn label<'a>(labels: &'a str, name: &str) -> Option<&'a str> {
    let start = labels.find(&format!("{name}=\""))? + name.len() + 2;
    let end = labels[start..].find('"')? + start;
    Some(&labels[start..end])
}

/// One row per sink: counts, whether it is healthy now, and its last error with the last
/// success, so a sink that failed and recovered does not look broken. Headers are one word each
/// and every column is as wide as its widest cell.
fn sink_table(stats: &Stats) -> String {
    let mut rows = vec![
        [
            "WEBHOOK",
            "SINK",
            "STATE",
            "DELIVERED",
            "RETRIED",
            "DEAD",
            "PENDING",
            "LAST-ERROR",
        ]
        .map(str::to_owned),
    ];
    for (webhook, sinks) in &stats.webhooks {
        for sink in sinks {
            let last_success = sink
                .last_success_time
                .as_ref()
                .map(|time| time.0.strftime("%H:%M:%S").to_string());
            let state = if sink.paused {
                "paused"
            } else if sink.pending > 0 {
                "retrying"
            } else if sink.dead_lettered > 0 {
                "dead-letters"
            } else {
                "ok"
            };
            let error = match (&sink.last_error, &last_success, state) {
                (None, _, _) => "-".to_owned(),
                // The error came before a later success: it is history, not the sink's state.
                (Some(error), Some(success), "ok") => {
                    format!("{error} (recovered; last delivery {success} UTC)")
                }
                (Some(error), _, _) => error.clone(),
            };
            rows.push([
                webhook.clone(),
                sink.name.clone(),
                state.to_owned(),
                sink.delivered.to_string(),
                sink.failed.to_string(),
                sink.dead_lettered.to_string(),
                sink.pending.to_string(),
                error,
            ]);
        }
    }
    let mut widths = [0; 8];
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (column, (cell, width)) in row.iter().zip(widths).enumerate() {
            let cell = match column {
                0 => format!("{cell:<width$}"),
                3..=6 => format!("  {cell:>width$}"),
                7 => format!("  {cell}"),
                _ => format!("  {cell:<width$}"),
            };
            line.push_str(&cell);
        }
        out.push_str(&line);
        out.push('\n');
    }
    out
}
