//! Local mode end to end: the real binary (`strapi-webhook-operator local`) against the real test
//! Strapi, with a real loopback HTTP sink. It must register its webhook in Strapi, deliver an
//! article publish to the sink, apply an edit of the YAML without a restart, reject an invalid
//! file with its file and line while the last good configuration keeps serving, and remove the
//! registration on exit with `--cleanup`. What Strapi fires while local mode is stopped reaches
//! the sink after a restart, marked recovered (gap repair).

mod support;

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use serde_json::json;
use strapi_webhook_operator::{
    registration::MARKER_HEADER,
    strapi::{Document, StrapiClient, Webhook},
};
use support::{CaptureServer, CapturedRequest, StrapiServer};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
    sync::watch,
};

/// Upper bound for anything that involves Strapi sending a webhook or the binary reacting to a
/// file change; a healthy run takes a fraction of it.
const PATIENCE: Duration = Duration::from_secs(60);
const ARTICLE: &str = "api::article.article";

/// The running binary and every line it logged.
struct Local {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    count: watch::Receiver<usize>,
}

impl Local {
    fn start(files: &Path, data: &Path, strapi: &StrapiServer) -> Self {
        Self::start_with(files, data, strapi, &[])
    }

    /// Starts it with extra flags of `local`.
    fn start_with(files: &Path, data: &Path, strapi: &StrapiServer, flags: &[&str]) -> Self {
        let mut command = Self::command(files, data, flags);
        // The admin credentials come from the environment, the sink token from a file.
        command
            .env("SWO_SECRET_LOCAL_STRAPI_ADMIN_EMAIL", strapi.email())
            .env("SWO_SECRET_LOCAL_STRAPI_ADMIN_PASSWORD", strapi.password());
        Self::spawn(command)
    }

    /// `local` on `files`, keeping its data in `data`, on free loopback ports.
    fn command(files: &Path, data: &Path, flags: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_strapi-webhook-operator"));
        command
            .args(["--log-format", "json", "local", "--cleanup"])
            .args(flags)
            .arg("-f")
            .arg(files)
            .arg("--data-dir")
            .arg(data)
            .args([
                "--ingest-addr",
                "127.0.0.1:0",
                "--admin-addr",
                "127.0.0.1:0",
            ]);
        command
    }

    /// Runs `command`, collecting what it logs.
    fn spawn(mut command: Command) -> Self {
        let mut child = command
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start strapi-webhook-operator local");
        let stderr = child.stderr.take().expect("piped stderr");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (counter, count) = watch::channel(0);
        let collected = Arc::clone(&lines);
        tokio::spawn(async move {
            let mut reader = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                let total = {
                    let mut lines = collected.lock().unwrap();
                    lines.push(line);
                    lines.len()
                };
                counter.send_replace(total);
            }
        });
        Local {
            child,
            lines,
            count,
        }
    }

    /// How many lines are logged so far; pass it to [`Local::wait_for_line`] to skip them.
    fn logged(&self) -> usize {
        self.lines.lock().unwrap().len()
    }

    /// The first line after the first `skip` that contains `text`.
    async fn wait_for_line(&mut self, skip: usize, text: &str) -> String {
        let found = tokio::time::timeout(PATIENCE, async {
            loop {
                let hit = self
                    .lines
                    .lock()
                    .unwrap()
                    .iter()
                    .skip(skip)
                    .find(|line| line.contains(text))
                    .cloned();
                if let Some(line) = hit {
                    return line;
                }
                if self.count.changed().await.is_err() {
                    // The process ended; nothing more will come.
                    std::future::pending::<()>().await;
                }
            }
        })
        .await;
        found.unwrap_or_else(|_| {
            panic!(
                "no log line with {text:?} within {PATIENCE:?}; the log:\n{}",
                self.lines.lock().unwrap().join("\n")
            )
        })
    }

    /// Stops the binary the way Ctrl-C or a service manager does.
    async fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().expect("still running").to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .await
            .expect("run kill");
        assert!(sent.success());
        tokio::time::timeout(PATIENCE, self.child.wait())
            .await
            .expect("local mode exits after SIGTERM")
            .expect("wait for local mode")
    }
}

fn instance_yaml(name: &str, strapi_url: &str) -> String {
    format!(
        "apiVersion: webhooks.strapi-operator.dev/v1alpha1
kind: StrapiInstance
metadata:
  name: {name}
  namespace: local
spec:
  url: {strapi_url}
  auth:
    credentials:
      secretName: strapi-admin
"
    )
}

fn secret_yaml() -> &'static str {
    "apiVersion: v1
kind: Secret
metadata:
  name: sink-auth
  namespace: local
stringData:
  token: sink-token
"
}

/// A webhook that sends each article publish to `sink` as `{"version", "documentId"}`.
fn webhook_yaml(instance: &str, sink: &str, version: &str, events: &str) -> String {
    format!(
        "apiVersion: webhooks.strapi-operator.dev/v1alpha1
kind: StrapiWebhook
metadata:
  name: articles
  namespace: local
spec:
  instanceRef:
    name: {instance}
  events: {events}
  sinks:
    - name: site
      http:
        url: {sink}/hook
        headers:
          - name: Authorization
            valueFrom:
              secretKeyRef:
                name: sink-auth
                key: token
              prefix: \"Bearer \"
  routes:
    - name: articles
      sink: site
      match:
        uids: [\"{ARTICLE}\"]
        events: [entry.publish]
      http:
        body: '{{\"version\": \"{version}\", \"documentId\": {{{{ entry.documentId | tojson }}}}}}'
"
    )
}

fn managed(webhooks: &[Webhook], instance: &str) -> Vec<Webhook> {
    webhooks
        .iter()
        .filter(|webhook| webhook.headers.get(MARKER_HEADER).map(String::as_str) == Some(instance))
        .cloned()
        .collect()
}

/// Creates and publishes an article and waits for the sink to get it as `version`. Each call
/// uses a new article: the receiver stores repeated publishes of one document within its dedup
/// window once, as Strapi's duplicates.
async fn publish_and_expect(
    client: &StrapiClient,
    sink: &CaptureServer,
    version: &str,
) -> CapturedRequest {
    let title = format!("Local mode {}", uuid::Uuid::now_v7().simple());
    let article = client
        .create_entry(ARTICLE, &json!({ "title": title }))
        .await
        .expect("create an article");
    let document = Document::Entry {
        uid: ARTICLE,
        document_id: &article.document_id,
    };
    client.publish(document).await.expect("publish the article");
    sink.wait_for(PATIENCE, |request| {
        let body = request.json();
        body["documentId"] == article.document_id.as_str() && body["version"] == version
    })
    .await
}

/// The 1-based line of `text` that starts with `start`.
fn line_of(text: &str, start: &str) -> usize {
    text.lines()
        .position(|line| line.starts_with(start))
        .expect("the line is in the text")
        + 1
}

fn write(path: &PathBuf, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|error| panic!("write {}: {error}", path.display()));
}

#[tokio::test]
async fn local_mode_registers_delivers_reloads_and_keeps_the_last_good_config() {
    let strapi = StrapiServer::shared().await;
    let client = strapi.client();
    let sink = CaptureServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let files = dir.path().join("manifests");
    std::fs::create_dir(&files).unwrap();
    // A unique instance, so the suite's other tests on the shared Strapi are never touched.
    let name = format!("cms-{}", uuid::Uuid::now_v7().simple());
    let key = format!("local/{name}");
    write(
        &files.join("instance.yaml"),
        &instance_yaml(&name, strapi.base_url()),
    );
    write(&files.join("secrets.yaml"), secret_yaml());
    let webhook_file = files.join("webhook.yaml");
    write(
        &webhook_file,
        &webhook_yaml(&name, sink.url(), "v1", "[entry.publish]"),
    );

    let mut local = Local::start(&files, &dir.path().join("data"), &strapi);
    local
        .wait_for_line(0, "registration in Strapi verified")
        .await;

    // The catch-all registration: one webhook, marked, with the shared secret, for the events.
    let registered = managed(&client.list_webhooks().await.unwrap(), &key);
    assert_eq!(registered.len(), 1, "{registered:#?}");
    assert!(
        registered[0].url.ends_with(&format!("/v1/instances/{key}")),
        "{}",
        registered[0].url
    );
    assert_eq!(registered[0].events, ["entry.publish"]);
    let shared_secrets: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("data/shared-secrets.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        registered[0]
            .headers
            .get("x-strapi-webhook-secret")
            .map(String::as_str),
        shared_secrets[&key].as_str()
    );

    // An article publish reaches the sink, with the token from the secrets file.
    let delivered = publish_and_expect(&client, &sink, "v1").await;
    assert_eq!(delivered.header("authorization"), Some("Bearer sink-token"));

    // `deliveries` lists it with the admin token local mode generated, and nothing without it.
    let running = local.wait_for_line(0, "local mode running").await;
    let running: serde_json::Value = serde_json::from_str(&running).unwrap();
    let admin = format!("http://{}", running["fields"]["admin"].as_str().unwrap());
    let token_file = dir.path().join("data/admin-token");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "only the owner may read the token");
    let deliveries = |token_file: Option<&Path>| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_strapi-webhook-operator"));
        command.args(["deliveries", "--admin-url", &admin, "list", "--json"]);
        command.env_remove("RECEIVER_ADMIN_TOKEN");
        match token_file {
            Some(file) => command.env("RECEIVER_ADMIN_TOKEN_FILE", file),
            None => command.env_remove("RECEIVER_ADMIN_TOKEN_FILE"),
        };
        command.output().unwrap()
    };
    let listed = deliveries(Some(&token_file));
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let listed: Vec<serde_json::Value> = serde_json::from_slice(&listed.stdout).unwrap();
    assert!(!listed.is_empty());
    assert!(
        !deliveries(None).status.success(),
        "no token, no deliveries"
    );

    // An edit takes effect without a restart: the payload changes, and so does the
    // registration's union of events.
    let logged = local.logged();
    write(
        &webhook_file,
        &webhook_yaml(&name, sink.url(), "v2", "[entry.publish, entry.unpublish]"),
    );
    local
        .wait_for_line(logged, "configuration reloaded and applied")
        .await;
    local
        .wait_for_line(logged, "registration in Strapi verified")
        .await;
    let live = local
        .wait_for_line(
            logged,
            "configuration live: the next event is routed with it",
        )
        .await;
    assert!(
        live.contains("local/articles"),
        "the changed webhook is named: {live}"
    );
    let registered = managed(&client.list_webhooks().await.unwrap(), &key);
    assert_eq!(registered[0].events, ["entry.publish", "entry.unpublish"]);
    publish_and_expect(&client, &sink, "v2").await;

    // An invalid file is reported with its file and line; the last good configuration serves on.
    let invalid = webhook_yaml(&name, sink.url(), "v3", "entry.publish");
    let events_line = line_of(&invalid, "  events:");
    let logged = local.logged();
    write(&webhook_file, &invalid);
    let rejected = local.wait_for_line(logged, "configuration rejected").await;
    assert!(
        rejected.contains(&format!("webhook.yaml:{events_line}:")),
        "the rejection names the file and line {events_line}: {rejected}"
    );
    publish_and_expect(&client, &sink, "v2").await;

    // On exit, --cleanup removes the registration.
    let status = local.terminate().await;
    assert!(status.success(), "local mode exited with {status}");
    assert!(managed(&client.list_webhooks().await.unwrap(), &key).is_empty());
}

#[tokio::test]
async fn an_invalid_configuration_at_start_is_refused_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("webhook.yaml");
    let yaml = webhook_yaml("nowhere", "http://127.0.0.1:9", "v1", "[entry.publish]");
    let instance_ref_line = line_of(&yaml, "  instanceRef:");
    write(&file, &yaml);
    let output = Command::new(env!("CARGO_BIN_EXE_strapi-webhook-operator"))
        .args(["local", "-f"])
        .arg(&file)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args([
            "--ingest-addr",
            "127.0.0.1:0",
            "--admin-addr",
            "127.0.0.1:0",
        ])
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "{}:{instance_ref_line}: spec.instanceRef: StrapiInstance local/nowhere is not \
             defined in the files",
            file.display()
        )),
        "{stderr}"
    );
}

/// An instance checked for gaps every `interval`, and a webhook forwarding every article create,
/// update and publish to `sink` as Strapi sent it.
fn repaired_yaml(name: &str, strapi_url: &str, sink: &str, interval: &str) -> String {
    format!(
        "{}  repairInterval: {interval}
---
apiVersion: webhooks.strapi-operator.dev/v1alpha1
kind: StrapiWebhook
metadata:
  name: articles
  namespace: local
spec:
  instanceRef:
    name: {name}
  events: [entry.create, entry.update, entry.publish]
  sinks:
    - name: site
      http:
        url: {sink}/hook
  routes:
    - name: articles
      sink: site
      match:
        uids: [\"{ARTICLE}\"]
",
        instance_yaml(name, strapi_url)
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn what_strapi_fires_while_local_mode_is_stopped_reaches_the_sink_after_a_restart() {
    const INTERVAL: Duration = Duration::from_secs(2);
    let strapi = StrapiServer::shared().await;
    let client = strapi.client();
    let sink = CaptureServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let files = dir.path().join("manifests.yaml");
    let data = dir.path().join("data");
    let name = format!("cms-{}", uuid::Uuid::now_v7().simple());
    write(
        &files,
        &repaired_yaml(&name, strapi.base_url(), sink.url(), "2s"),
    );
    let flags = ["--repair-settle", "1s"];
    let mut local = Local::start_with(&files, &data, &strapi, &flags);
    local
        .wait_for_line(0, "registration in Strapi verified")
        .await;
    let tag = uuid::Uuid::now_v7().simple().to_string();
    let create = |title: String| {
        let client = client.clone();
        async move {
            client
                .create_entry(ARTICLE, &json!({ "title": title }))
                .await
                .expect("create an article")
                .document_id
        }
    };
    let edited = create(format!("edited {tag}")).await;
    let published = create(format!("published {tag}")).await;
    let mine = |request: &CapturedRequest| request.json()["entry"].to_string().contains(&tag);
    sink.wait_for_many(PATIENCE, 2, mine).await;
    // Let a check record where gap repair starts before the outage.
    tokio::time::sleep(INTERVAL * 2).await;
    assert_eq!(local.terminate().await.code(), Some(0));

    client
        .update_document(
            Document::Entry {
                uid: ARTICLE,
                document_id: &edited,
            },
            &json!({ "title": format!("edited again {tag}") }),
        )
        .await
        .unwrap();
    let created = create(format!("created while stopped {tag}")).await;
    client
        .publish(Document::Entry {
            uid: ARTICLE,
            document_id: &published,
        })
        .await
        .unwrap();

    let restarted = tokio::time::Instant::now();
    let mut local = Local::start_with(&files, &data, &strapi, &flags);
    let recovered = |request: &CapturedRequest| {
        mine(request) && request.header("x-strapi-webhook-recovered") == Some("true")
    };
    let delivered = sink.wait_for_many(PATIENCE, 3, recovered).await;
    let took = restarted.elapsed();
    let events: std::collections::BTreeMap<String, (String, String)> = delivered
        .iter()
        .map(|request| {
            let body = request.json();
            (
                body["entry"]["documentId"].as_str().unwrap().to_owned(),
                (
                    body["event"].as_str().unwrap().to_owned(),
                    body["entry"]["title"].as_str().unwrap().to_owned(),
                ),
            )
        })
        .collect();
    assert_eq!(
        events[&edited],
        ("entry.update".to_owned(), format!("edited again {tag}"))
    );
    assert_eq!(
        events[&created],
        (
            "entry.create".to_owned(),
            format!("created while stopped {tag}")
        )
    );
    assert_eq!(events[&published].0, "entry.publish");
    // How soon depends on how far behind Strapi's webhook queue is (the other tests keep it
    // busy): about two intervals on an idle Strapi.
    eprintln!("recovered {took:?} after the restart");
    local
        .wait_for_line(0, "deletions and unpublications may have been missed")
        .await;
    assert_eq!(local.terminate().await.code(), Some(0));
}

#[tokio::test]
async fn a_folder_with_nothing_to_run_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let files = dir.path().join("manifests");
    std::fs::create_dir(&files).unwrap();
    // Dropping `local` kills it.
    let mut local = Local::spawn(Local::command(&files, &dir.path().join("data"), &[]));
    let line = local
        .wait_for_line(0, "no StrapiInstance in these files")
        .await;
    assert!(line.contains("WARN"), "{line}");
}

#[tokio::test]
async fn an_unreachable_strapi_is_logged_with_its_cause() {
    let dir = tempfile::tempdir().unwrap();
    let files = dir.path().join("manifests");
    std::fs::create_dir(&files).unwrap();
    // Nothing listens on a port that was free a moment ago.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let strapi = format!("http://127.0.0.1:{port}");
    write(&files.join("instance.yaml"), &instance_yaml("cms", &strapi));
    let mut command = Local::command(&files, &dir.path().join("data"), &[]);
    command
        .env("SWO_SECRET_LOCAL_STRAPI_ADMIN_EMAIL", "editor@example.com")
        .env(
            "SWO_SECRET_LOCAL_STRAPI_ADMIN_PASSWORD",
            "a-long-enough-password",
        );
    let mut local = Local::spawn(command);
    let line = local.wait_for_line(0, "registration failed").await;
    assert!(
        line.contains(&format!(
            "Strapi at {strapi}/admin/login is unreachable: Connection refused"
        )),
        "{line}"
    );
    let line = local
        .wait_for_line(0, "no StrapiWebhook in these files")
        .await;
    assert!(line.contains("WARN"), "{line}");
}
