//! The newcomer's transcript (issue 20): the demo's summary and `deliveries list`, run as the demo
//! runs them against a receiver with long names and a sink that failed and recovered, print
//! aligned tables and account for every event Strapi sent.

mod support;

use std::{path::PathBuf, process::Command, time::Duration};

use serde_json::json;
use support::receiver::{
    self, Answer, CaptureSink, TestReceiver, article_event, client, snapshot, webhook_spec,
};

/// The demo's helper binary, built beside the main one (`cargo test` builds examples).
fn demo() -> PathBuf {
    let main = PathBuf::from(env!("CARGO_BIN_EXE_strapi-webhook-operator"));
    main.parent().unwrap().join("examples").join("demo")
}

/// Runs `program` with the admin token; its standard output, after checking it succeeded.
fn run(program: &std::path::Path, args: &[&str], token_file: &std::path::Path) -> String {
    let output = Command::new(program)
        .env("RECEIVER_ADMIN_TOKEN_FILE", token_file)
        .args(args)
        .output()
        .unwrap_or_else(|error| panic!("running {}: {error}", program.display()));
    assert!(
        output.status.success(),
        "{} {args:?}: {}",
        program.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Every row keeps the header's columns: the header's words mark where columns start; on each
/// line the character before every column start is a space (no cell runs into the next), the
/// last column (free text) starts exactly under its header, and the cells before it are one
/// word each, as many as the headers before it.
fn assert_aligned(table: &str) {
    let lines: Vec<&str> = table.lines().collect();
    let header = lines[0];
    let starts: Vec<usize> = header
        .char_indices()
        .filter(|&(at, c)| c != ' ' && (at == 0 || header.as_bytes()[at - 1] == b' '))
        .map(|(at, _)| at)
        .collect();
    let last = *starts.last().unwrap();
    for line in &lines[1..] {
        let aligned = line.len() > last
            && starts[1..]
                .iter()
                .all(|&at| line.as_bytes()[at - 1] == b' ')
            && line.as_bytes()[last] != b' '
            && line[..last].split_whitespace().count() == starts.len() - 1;
        assert!(aligned, "{line:?} leaves the columns of:\n{table}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_summary_and_deliveries_list_are_aligned_and_account_for_every_event() {
    let sink = CaptureSink::start().await;
    sink.answer(Answer::Status(503));
    let other = CaptureSink::start().await;
    let spec = webhook_spec(&[
        ("nextjs-revalidation-website", sink.url()),
        ("crm", other.url()),
    ]);
    let receiver = TestReceiver::start(snapshot(&spec)).await;
    let http = client();
    // Three creates, a publish Strapi sends twice (collapsed), a call with a wrong secret, a test call.
    for n in 0..3 {
        assert!(receiver.post(&http, &article_event(n)).await.is_success());
    }
    let publish = json!({
        "event": "entry.publish", "createdAt": "2026-11-29T01:00:00.000Z", "model": "article",
        "uid": "api::article.article", "entry": {"id": 1, "documentId": "d1", "locale": "en"}
    });
    for _ in 0..2 {
        assert!(receiver.post(&http, &publish).await.is_success());
    }
    let refused = http
        .post(format!(
            "http://{}/v1/instances/{}",
            receiver.ingest,
            receiver::INSTANCE
        ))
        .header("content-type", "application/json")
        .header("x-strapi-webhook-secret", "wrong")
        .body(article_event(9).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    // Strapi's webhook test (what local mode and the controller send to verify the secret).
    let handshake = json!({"event": "trigger-test", "createdAt": "2026-11-29T01:00:00.000Z"});
    assert!(receiver.post(&http, &handshake).await.is_success());
    // The sink fails a while, then recovers and takes everything.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while sink.attempted().len() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the sink was not retried"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    sink.answer(Answer::Status(200));
    sink.wait_for(Duration::from_secs(10), |received| received.len() == 4)
        .await;
    other
        .wait_for(Duration::from_secs(10), |received| received.len() == 4)
        .await;

    // A sink has the request before the receiver records its answer: wait for the records.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let stats: serde_json::Value = receiver.admin_json("/v1/stats").await;
        let delivered: i64 = stats["webhooks"]["cms/site"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|sink| sink["delivered"].as_i64().unwrap_or(0))
            .sum();
        if delivered == 8 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not all recorded: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let token = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(token.path(), receiver::ADMIN_TOKEN).unwrap();
    let admin = receiver.admin_url();
    let summary = run(&demo(), &["summary", "--admin-url", &admin], token.path());
    let (accounting, table) = summary.split_once("\n\n").expect("two parts:\n{summary}");
    let expected = [
        "events received from Strapi: 7",
        "  4  stored and delivered to their sinks",
        "  1  collapsed as duplicates",
        "  1  test calls",
        "  1  refused (Unauthorized)",
    ];
    for (line, expected) in accounting.lines().zip(expected) {
        assert!(
            line.starts_with(expected),
            "{line:?} is not {expected:?}:\n{summary}"
        );
    }
    assert_eq!(
        accounting.lines().count(),
        5,
        "nothing unaccounted:\n{summary}"
    );
    assert_aligned(table);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "WEBHOOK",
            "SINK",
            "STATE",
            "DELIVERED",
            "RETRIED",
            "DEAD",
            "PENDING",
            "LAST-ERROR"
        ]
    );
    let row = table
        .lines()
        .find(|line| line.contains("nextjs-revalidation-website"))
        .unwrap();
    assert!(
        row.contains(" ok ") && row.contains("503") && row.contains("(recovered; last delivery "),
        "a recovered sink reads as recovered, with its time:\n{table}"
    );

    let list = run(
        std::path::Path::new(env!("CARGO_BIN_EXE_strapi-webhook-operator")),
        &["deliveries", "--admin-url", &admin, "list"],
        token.path(),
    );
    assert_eq!(
        list.lines().count(),
        9,
        "a header and eight deliveries:\n{list}"
    );
    assert!(
        list.contains("cms/site/nextjs-revalidation-website  "),
        "{list}"
    );
    assert_aligned(&list);
    receiver.shutdown().await;
}
