//! `validate` and `render`, the two commands a GitOps pipeline runs before a cluster sees the
//! files: golden outputs of the binary for the seed integrations, and the rules behind them
//! (unknown fields, templates, Secrets in or out of the files, other kinds in the folder).
//!
//! Golden files live in `tests/fixtures/gitops/`; `UPDATE_GOLDEN=1` rewrites them after a
//! deliberate change (review the diff).

use std::{path::Path, process::Command};

use strapi_webhook_operator::validate::validate;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs the binary in the repository root (so paths in its output are relative and stable).
fn run(args: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_strapi-webhook-operator"))
        .args(args)
        .current_dir(repo())
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8(output.stdout).unwrap(),
    )
}

fn assert_golden(name: &str, actual: &str) {
    let path = repo().join("tests/fixtures/gitops").join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("{}: {error}; run with UPDATE_GOLDEN=1", path.display()));
    assert_eq!(actual, expected, "{} differs", path.display());
}

#[test]
fn render_of_the_seed_article_update_revalidates_its_tag_and_page() {
    let args = [
        "render",
        "-f",
        "examples/nextjs-revalidation.yaml",
        "-f",
        "examples/secrets.yaml",
        "--event",
        "entry.update:article",
    ];
    let (ok, human) = run(&args);
    assert!(ok);
    assert!(
        human.contains("\"/articles/hello-01a21a9cae06723597725d5d0addaafe\""),
        "{human}"
    );
    assert!(human.contains("x-webhook-secret: <Secret web/nextjs-revalidate key secret>"));
    assert!(
        !human.contains("change-me"),
        "the Secret value is redacted: {human}"
    );
    assert_golden("render-nextjs-article-update.txt", &human);
    let (ok, json) = run(&[&args[..], &["--output", "json"]].concat());
    assert!(ok);
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    let route = &json["webhooks"][0]["routes"][0];
    assert_eq!(route["route"], "articles");
    assert_eq!(route["matched"], true);
    assert_eq!(
        route["request"]["body"]["tags"],
        serde_json::json!(["article"])
    );
    assert_eq!(
        route["request"]["body"]["paths"][1]["path"],
        "/articles/hello-01a21a9cae06723597725d5d0addaafe"
    );
    assert_golden(
        "render-nextjs-article-update.json",
        &serde_json::to_string_pretty(&json).unwrap(),
    );
}

#[test]
fn render_of_a_long_comment_cuts_the_slack_text_at_100_characters() {
    let (ok, human) = run(&[
        "render",
        "-f",
        "examples/slack-comments.yaml",
        "-f",
        "examples/secrets.yaml",
        "--event",
        "tests/fixtures/gitops/comment-150.json",
        "--output",
        "json",
    ]);
    assert!(ok);
    let json: serde_json::Value = serde_json::from_str(&human).unwrap();
    let request = &json["webhooks"][0]["routes"][0]["request"];
    let event: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("tests/fixtures/gitops/comment-150.json")).unwrap(),
    )
    .unwrap();
    let comment = event["entry"]["text"].as_str().unwrap();
    assert_eq!(comment.chars().count(), 150);
    let text = request["body"]["text"].as_str().unwrap();
    let quoted = text.split_once('"').unwrap().1.trim_end_matches('"');
    assert_eq!(quoted, &comment[..100]);
    // The webhook URL is the credential: it never shows.
    assert_eq!(request["url"], "<Secret web/slack-webhook key url>");
    let (_, human) = run(&[
        "render",
        "-f",
        "examples/slack-comments.yaml",
        "-f",
        "examples/secrets.yaml",
        "--event",
        "tests/fixtures/gitops/comment-150.json",
    ]);
    assert_golden("render-slack-long-comment.txt", &human);
}

#[test]
fn render_without_the_secrets_shows_placeholders_and_says_so() {
    let (ok, human) = run(&[
        "render",
        "-f",
        "examples/slack-comments.yaml",
        "--event",
        "entry.create:comment",
    ]);
    assert!(ok);
    assert!(
        human.contains("note: Secret web/slack-webhook is not in the files"),
        "{human}"
    );
    assert!(
        human.contains("POST <Secret web/slack-webhook key url>"),
        "{human}"
    );
}

#[test]
fn every_example_passes_validate() {
    let (ok, output) = run(&["validate", "-f", "examples/"]);
    assert!(ok, "{output}");
    assert!(
        output.lines().all(|line| line.contains(": warning: ")),
        "only warnings: {output}"
    );
}

fn write_folder(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

const INSTANCE: &str = "apiVersion: webhooks.strapi-operator.dev/v1alpha1
kind: StrapiInstance
metadata: {name: cms, namespace: web}
spec:
  url: http://strapi.cms:1337
  auth: {apiToken: {name: strapi-token, key: token}}
";

const WEBHOOK: &str = "apiVersion: webhooks.strapi-operator.dev/v1alpha1
kind: StrapiWebhook
metadata: {name: team, namespace: web}
spec:
  instanceRef: {name: cms}
  events: [entry.create]
  sinks:
    - name: chat
      slack: {webhookUrlSecretRef: {name: slack, key: url}}
  routes:
    - name: comments
      sink: chat
      match: {models: [comment]}
      slack: {text: 'New comment by {{ entry.author }}'}
";

/// A GitOps folder: our kinds next to a Deployment, a ConfigMap and a Kustomization.
const OTHER_KINDS: &str = "apiVersion: apps/v1
kind: Deployment
metadata: {name: site, namespace: web}
spec: {replicas: 2}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: site}
data: {a: b}
";

fn lines(report: &[strapi_webhook_operator::manifests::Problem], root: &Path) -> Vec<String> {
    report
        .iter()
        .map(|problem| {
            problem
                .to_string()
                .replace(&format!("{}/", root.display()), "")
        })
        .collect()
}

#[test]
fn a_gitops_folder_validates_and_other_kinds_are_ignored() {
    let dir = write_folder(&[
        ("instance.yaml", INSTANCE),
        ("webhook.yaml", WEBHOOK),
        ("site.yaml", OTHER_KINDS),
        (
            "kustomization.yaml",
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [webhook.yaml]\n",
        ),
    ]);
    let report = validate(&[dir.path().to_owned()]);
    assert_eq!(lines(&report.errors, dir.path()), Vec::<String>::new());
    // The Slack Secret is kept out of the repository: a warning, not an error.
    assert_eq!(
        lines(&report.warnings, dir.path()),
        [
            "webhook.yaml:1: Secret web/slack is not in the files; its keys and values are not checked"
        ]
    );
}

#[test]
fn mistakes_are_reported_at_their_file_line_and_field() {
    let misspelt = WEBHOOK.replace("match: {models", "matsh: {models");
    let variable = WEBHOOK.replace("{{ entry.author }}", "{{ author }}");
    let variable = variable.replace("name: team", "name: team2");
    let dir = write_folder(&[
        ("instance.yaml", INSTANCE),
        ("misspelt.yaml", &misspelt),
        ("variable.yaml", &variable),
        (
            "secret.yaml",
            "apiVersion: v1\nkind: Secret\nmetadata: {name: slack, namespace: web}\nstringData: {link: x}\n",
        ),
    ]);
    let report = validate(&[dir.path().to_owned()]);
    let found = lines(&report.errors, dir.path());
    assert_golden("validate-mistakes.txt", &format!("{}\n", found.join("\n")));
    assert!(
        found.contains(
            &"misspelt.yaml:13: spec.routes[0].matsh: unknown field \"spec.routes[0].matsh\""
                .to_owned()
        ),
        "{found:#?}"
    );
    assert!(
        found.iter().any(
            |line| line.starts_with("variable.yaml:14: spec.routes[0].slack.text: ")
                && line.contains("unknown variable `author`")
        ),
        "{found:#?}"
    );
    assert!(found.contains(&"variable.yaml:9: spec.sinks[0].slack.webhookUrlSecretRef: Secret web/slack has no key \"url\"".to_owned()), "{found:#?}");
    let (ok, json) = run(&[
        "validate",
        "-f",
        dir.path().to_str().unwrap(),
        "--output",
        "json",
    ]);
    assert!(!ok, "exit 1 on errors");
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        json["errors"].as_array().unwrap().len(),
        report.errors.len()
    );
    assert_eq!(json["errors"][0]["field"], "spec.routes[0].matsh");
}

#[test]
fn an_instance_problem_is_reported_once_and_render_reads_standard_input() {
    let instance = format!("{INSTANCE}  egress: {{allowedCIDRs: [not-a-cidr]}}\n");
    let dir = write_folder(&[("instance.yaml", &instance), ("webhook.yaml", WEBHOOK)]);
    let report = validate(&[dir.path().to_owned()]);
    let found = lines(&report.errors, dir.path());
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(
        found[0].starts_with("instance.yaml:7: spec.egress: StrapiInstance web/cms: "),
        "{found:#?}"
    );

    let mut child = Command::new(env!("CARGO_BIN_EXE_strapi-webhook-operator"))
        .args([
            "render",
            "-f",
            "examples/slack-comments.yaml",
            "--event",
            "-",
        ])
        .current_dir(repo())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let event = std::fs::read(repo().join("tests/fixtures/gitops/comment-150.json")).unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), &event).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(
        text.contains("route new-comment -> sink team-chat: matched"),
        "{text}"
    );
}
