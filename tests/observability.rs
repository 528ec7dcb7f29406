//! The alert rules and the Grafana dashboard against what the binaries really export: every metric
//! they name exists, the dashboard is well formed, and a real Prometheus scraping a real receiver
//! and the real controller answers every expression of the dashboard and the rules with data.
//! And the traces:
//! what a sink sees in `traceparent`, and what an OTLP collector receives.

mod support;

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::Arc,
    time::Duration,
};

use serde_json::{Value, json};
use strapi_webhook_operator::{
    controller::{
        self,
        metrics::{InstanceConditionLabels, StrapiCallLabels},
    },
    receiver::{
        kubernetes::KubernetesSource,
        metrics::{
            InstanceLabels, Metrics as ReceiverMetrics, RejectLabels, RejectReason, SinkLabels,
        },
    },
};
use support::fake_api::{FakeApi, path_of};
use support::receiver;
use support::receiver::{
    Answer, CaptureSink, KillOnDrop, TestReceiver, TestStore, article_event, client, free_port,
    snapshot, webhook_spec,
};
use support::{StrapiServer, eventually};

const RULES: &str = "charts/strapi-webhook-operator/files/prometheus-rules.yaml";
const DASHBOARD: &str = "charts/strapi-webhook-operator/files/grafana-dashboard.json";

fn repo_file(path: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// The series names an exposition text declares: `# TYPE` lines, with the suffixes Prometheus
/// stores for each type.
fn exported_series(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .flat_map(|declaration| {
            let (name, kind) = declaration.split_once(' ').expect("# TYPE name type");
            let suffixes: &[&str] = match kind {
                "counter" => &["_total", "_created"],
                "histogram" => &["_bucket", "_sum", "_count", "_created"],
                _ => &[""],
            };
            suffixes
                .iter()
                .map(move |suffix| format!("{name}{suffix}"))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Every metric name of ours that a PromQL text mentions: the identifiers with the receiver's or
/// the controller's prefix (labels such as `strapi_instance` have neither).
fn metric_names(promql: &str) -> BTreeSet<String> {
    promql
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| {
            word.starts_with("strapi_webhook_receiver_") || word.starts_with("strapi_operator_")
        })
        .map(str::to_owned)
        .collect()
}

fn rule_expressions() -> Vec<(String, String)> {
    let rules: Value = serde_saphyr::from_str(&repo_file(RULES)).expect("the rules parse");
    rules["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|group| group["rules"].as_array().expect("rules").clone())
        .map(|rule| {
            (
                rule["alert"].as_str().expect("alert").to_owned(),
                rule["expr"].as_str().expect("expr").to_owned(),
            )
        })
        .collect()
}

fn dashboard() -> Value {
    serde_json::from_str(&repo_file(DASHBOARD)).expect("the dashboard is JSON")
}

fn dashboard_expressions() -> Vec<(String, String)> {
    dashboard()["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .filter(|panel| panel["type"] != "row")
        .flat_map(|panel| {
            let title = panel["title"].as_str().unwrap_or_default().to_owned();
            panel["targets"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(move |target| (title.clone(), target["expr"].as_str().unwrap().to_owned()))
        })
        .collect()
}

#[tokio::test]
async fn every_metric_the_rules_and_dashboard_name_is_exported() {
    // A family shows in the exposition once it has a series: give each one.
    let mut registry = prometheus_client::registry::Registry::default();
    let controller = controller::Metrics::register(&mut registry);
    let failed = controller
        .measure("StrapiInstance", |_: &&str| "Test", async {
            Err::<(), _>("")
        })
        .await;
    assert!(failed.is_err());
    controller
        .strapi_calls
        .get_or_create(&StrapiCallLabels {
            step: "s",
            outcome: "ok",
        })
        .inc();
    controller.drift_repairs.inc();
    controller
        .receiver_calls
        .get_or_create(&controller::ReceiverCallLabels {
            call: "routing",
            outcome: "ok",
        })
        .inc();
    controller.record_repair_check("web/cms", "StrapiFailed");
    controller.record_instance_conditions("web/cms", &[]);
    controller
        .instance_conditions
        .get_or_create(&InstanceConditionLabels {
            strapi_instance: "web/cms".into(),
            condition: "Verified".into(),
        })
        .set(1);
    let mut controller_text = String::new();
    prometheus_client::encoding::text::encode(&mut controller_text, &registry).unwrap();
    let receiver = ReceiverMetrics::new();
    let instance = InstanceLabels {
        strapi_instance: "web/cms".into(),
    };
    let sink = SinkLabels {
        webhook: "web/site".into(),
        sink: "nextjs".into(),
    };
    for family in [
        &receiver.received,
        &receiver.stored,
        &receiver.duplicates,
        &receiver.recovered,
    ] {
        family.get_or_create(&instance).inc();
    }
    receiver
        .rejected
        .get_or_create(&RejectLabels {
            strapi_instance: "web/cms".into(),
            reason: RejectReason::Unauthorized,
        })
        .inc();
    receiver
        .ingest_seconds
        .get_or_create(&instance)
        .observe(0.1);
    for family in [
        &receiver.delivered,
        &receiver.retried,
        &receiver.dead_lettered,
    ] {
        family.get_or_create(&sink).inc();
    }
    receiver.delivery_seconds.get_or_create(&sink).observe(0.1);
    for family in [
        &receiver.queue_depth,
        &receiver.dead_letters,
        &receiver.sink_held,
        &receiver.oldest_pending_age,
    ] {
        family.get_or_create(&sink).set(1);
    }
    let receiver_text = receiver.encode().unwrap();
    let exported: BTreeSet<String> = exported_series(&receiver_text)
        .into_iter()
        .chain(exported_series(&controller_text))
        .collect();
    let mut used = 0;
    for (name, expr) in rule_expressions()
        .into_iter()
        .chain(dashboard_expressions())
    {
        let names = metric_names(&expr);
        assert!(!names.is_empty(), "{name}: `{expr}` names no metric");
        for metric in names {
            used += 1;
            assert!(
                exported.contains(&metric),
                "{name}: `{metric}` is not exported by the receiver or the controller; they export {exported:#?}"
            );
        }
    }
    assert!(used >= 20, "only {used} metric references found");
}

#[test]
fn the_dashboard_is_well_formed() {
    let dashboard = dashboard();
    assert!(
        dashboard["schemaVersion"].as_u64().is_some_and(|v| v >= 36),
        "schemaVersion"
    );
    assert!(dashboard["uid"].is_string() && dashboard["title"].is_string());
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("templating");
    assert!(
        variables.iter().any(|v| v["name"] == "datasource"
            && v["type"] == "datasource"
            && v["query"] == "prometheus"),
        "a Prometheus datasource variable named `datasource`"
    );
    let panels = dashboard["panels"].as_array().expect("panels");
    let ids: Vec<u64> = panels
        .iter()
        .map(|p| p["id"].as_u64().expect("id"))
        .collect();
    let unique: BTreeSet<u64> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "panel ids repeat: {ids:?}");
    let datasource = json!({"type": "prometheus", "uid": "${datasource}"});
    for panel in panels.iter().filter(|p| p["type"] != "row") {
        let title = &panel["title"];
        assert_eq!(panel["datasource"], datasource, "{title}: datasource");
        assert!(panel["description"].is_string(), "{title}: a description");
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no query");
        for target in targets {
            assert_eq!(
                target["datasource"], datasource,
                "{title}: target datasource"
            );
        }
    }
}

/// The labels that identify what an alert is about: a receiver pod, an instance, a sink.
const RESOURCE_LABELS: [&str; 4] = ["pod", "strapi_instance", "webhook", "sink"];

/// Alerts whose description cannot name one resource: no receiver scraped at all, and reconcile
/// failures, counted by kind and reason only so that the series stay bounded whatever users
/// apply (their runbook says how to find the failing objects).
const ALERTS_NAMING_NO_RESOURCE: [&str; 2] = [
    "StrapiWebhookReceiverAbsent",
    "StrapiWebhookReconcileErrors",
];

#[test]
fn every_alert_has_a_summary_a_description_naming_its_resource_and_a_runbook() {
    let rules: Value = serde_saphyr::from_str(&repo_file(RULES)).expect("the rules parse");
    let headings: BTreeSet<String> = repo_file("docs/operations.md")
        .lines()
        .filter_map(|line| line.strip_prefix("### "))
        .map(|heading| heading.trim().to_lowercase())
        .collect();
    let mut unnamed = Vec::new();
    for rule in rules["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|group| group["rules"].as_array().expect("rules"))
    {
        let alert = rule["alert"].as_str().expect("alert");
        let annotation = |name: &str| rule["annotations"][name].as_str().unwrap_or_default();
        assert!(!annotation("summary").is_empty(), "{alert}: a summary");
        let description = annotation("description");
        assert!(!description.is_empty(), "{alert}: a description");
        let names_resource = RESOURCE_LABELS
            .iter()
            .any(|label| description.contains(&format!("$labels.{label}")));
        if !names_resource {
            unnamed.push(alert);
        }
        let anchor = alert.to_lowercase();
        assert!(
            annotation("runbook_url").ends_with(&format!("docs/operations.md#{anchor}")),
            "{alert}: runbook_url {:?}",
            annotation("runbook_url")
        );
        assert!(
            headings.contains(&anchor),
            "{alert}: no `### {alert}` runbook section in docs/operations.md"
        );
        assert!(
            ["warning", "critical"].contains(&rule["labels"]["severity"].as_str().unwrap_or("")),
            "{alert}: severity"
        );
    }
    assert_eq!(
        unnamed, ALERTS_NAMING_NO_RESOURCE,
        "descriptions naming none of {RESOURCE_LABELS:?}"
    );
}

/// A real Prometheus on a loopback port, scraping each `(job, target)` every second; killed on
/// drop.
struct Prometheus {
    url: String,
    _process: KillOnDrop,
    _data: tempfile::TempDir,
}

impl Prometheus {
    async fn start(targets: &[(&str, String)]) -> Self {
        let data = tempfile::tempdir().unwrap();
        let config: PathBuf = data.path().join("prometheus.yml");
        let jobs: String = targets
            .iter()
            .map(|(job, target)| {
                format!("  - job_name: {job}\n    static_configs:\n      - targets: ['{target}']\n")
            })
            .collect();
        std::fs::write(
            &config,
            format!(
                "global: {{ scrape_interval: 1s, evaluation_interval: 1s }}\nscrape_configs:\n{jobs}"
            ),
        )
        .unwrap();
        let address = format!("127.0.0.1:{}", free_port());
        let process = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                data.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={address}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("Debian's prometheus package is installed (scripts/ensure-prometheus.sh)");
        let prometheus = Self {
            url: format!("http://{address}"),
            _process: KillOnDrop(process),
            _data: data,
        };
        let http = client();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !http
            .get(format!("{}/-/ready", prometheus.url))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "Prometheus did not start"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        prometheus
    }

    /// The series an instant query returns; a query Prometheus refuses fails the test.
    async fn query(&self, promql: &str) -> Vec<Value> {
        let url = reqwest::Url::parse_with_params(
            &format!("{}/api/v1/query", self.url),
            [("query", promql)],
        )
        .unwrap();
        let answer: Value = client()
            .get(url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(answer["status"], "success", "`{promql}`: {answer}");
        answer["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Waits until every query returns series (scrapes and rate windows need a few seconds);
    /// fails naming each `(what, query)` that still returned nothing.
    async fn eventually_all_return_data(&self, mut waiting: Vec<(String, String)>) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
        loop {
            let mut empty = Vec::new();
            for (what, promql) in waiting {
                if self.query(&promql).await.is_empty() {
                    empty.push((what, promql));
                }
            }
            waiting = empty;
            if waiting.is_empty() {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} expressions returned no series from the real receiver and controller:\n{}",
                waiting.len(),
                waiting
                    .iter()
                    .map(|(what, promql)| format!("  {what}: `{promql}`"))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// The part of an alert's expression that must return series while the binaries run, and how
/// it was derived. A healthy test run must not fire the alerts, so an alert is checked by the
/// expression it compares or tests for absence:
/// - `X > 0.05`, `X == 0` (a comparison with a number): `X`, with every selector, label
///   matcher, rate window and aggregation of the alert (the threshold is promtool's to test);
/// - `absent(X)`: `X`, whose presence is what keeps the alert silent.
fn alert_data_expression(expr: &str) -> (String, &'static str) {
    let expr = expr.trim();
    if let Some(inner) = expr
        .strip_prefix("absent(")
        .and_then(|rest| rest.strip_suffix(')'))
    {
        return (inner.to_owned(), "the selector `absent` tests");
    }
    if let Some((left, threshold)) = expr.rsplit_once(' ')
        && threshold.parse::<f64>().is_ok()
        && let Some((compared, operator)) = left.trim_end().rsplit_once(' ')
        && ["==", "!=", ">", "<", ">=", "<="].contains(&operator)
    {
        return (
            compared.trim().to_owned(),
            "the expression its threshold compares",
        );
    }
    (expr.to_owned(), "the whole expression")
}

#[test]
fn alert_expressions_are_checked_by_what_they_compare() {
    assert_eq!(
        alert_data_expression("sum by (kind) (rate(x_total{a!=\"b\"}[10m])) > 0.01"),
        (
            "sum by (kind) (rate(x_total{a!=\"b\"}[10m]))".to_owned(),
            "the expression its threshold compares"
        )
    );
    assert_eq!(
        alert_data_expression("max by (pod) (ready) == 0").0,
        "max by (pod) (ready)"
    );
    assert_eq!(alert_data_expression("absent(ready)").0, "ready");
    assert_eq!(
        alert_data_expression("rate(x[5m])").1,
        "the whole expression"
    );
    for (alert, expr) in rule_expressions() {
        let (data, _) = alert_data_expression(&expr);
        assert!(
            !data.contains(" > ") && !data.contains(" == ") && !data.starts_with("absent("),
            "{alert}: `{data}` still compares; extend alert_data_expression"
        );
    }
}

const GROUP: &str = "webhooks.strapi-operator.dev/v1alpha1";
const NAMESPACE: &str = "web";

/// A StrapiInstance as `kubectl apply` would store it.
fn instance_object(name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": GROUP, "kind": "StrapiInstance",
        "metadata": {"name": name, "namespace": NAMESPACE, "uid": uuid::Uuid::now_v7().to_string(), "generation": 1},
        "spec": spec,
    })
}

/// A StrapiWebhook of `instance` with one HTTP sink per `(name, url)`.
fn webhook_object(name: &str, instance: &str, sinks: &[(&str, String)]) -> Value {
    let mut spec = serde_json::to_value(webhook_spec(sinks)).unwrap();
    spec["instanceRef"] = json!({"name": instance});
    json!({
        "apiVersion": GROUP, "kind": "StrapiWebhook",
        "metadata": {"name": name, "namespace": NAMESPACE, "uid": uuid::Uuid::now_v7().to_string(), "generation": 1},
        "spec": spec,
    })
}

fn instance_path(name: &str) -> String {
    path_of(GROUP, "strapiinstances", NAMESPACE, name)
}

/// Condition `kind` of the instance the fake API server holds, if written.
fn condition(api: &FakeApi, instance: &str, kind: &str) -> Option<Value> {
    let object = api.get(&instance_path(instance))?;
    object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|condition| condition["type"] == kind)
        .cloned()
}

/// The controller's current shared secret for `instance`, as Strapi sends it.
fn shared_secret(api: &FakeApi, instance: &str) -> String {
    use strapi_webhook_operator::api::shared_secret;
    let path = path_of("v1", "secrets", NAMESPACE, &shared_secret::name(instance));
    let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(
        api.get(&path)
            .expect("the controller made the shared secret"),
    )
    .unwrap();
    String::from_utf8(secret.data.unwrap()[shared_secret::CURRENT_KEY].0.clone()).unwrap()
}

/// The real controller (`controller::run`, as the binary runs it) on the in-memory API server,
/// sending Strapi to `receiver` and serving `/metrics` on a free loopback port; stopped on drop,
/// so it makes no more Strapi calls while the test's registrations are removed.
struct RunningController {
    task: tokio::task::JoinHandle<Result<(), controller::RunError>>,
    metrics: String,
}

impl RunningController {
    fn start(api: &FakeApi, receiver: &TestReceiver<KubernetesSource>) -> Self {
        let options = controller::Options {
            receiver_url: format!("http://{}", receiver.ingest),
            receiver_admin_url: receiver.admin_url(),
            receiver_replicas: None,
            receiver_admin_token: Some(receiver::admin_token()),
            secret_header: strapi_webhook_operator::event::SECRET_HEADER.into(),
            secret_grace: k8s_openapi::jiff::SignedDuration::from_mins(15),
            verify_timeout: Duration::from_secs(10),
            allow_loopback_sinks: true,
            repair: strapi_webhook_operator::repair::CheckSettings {
                settle: Duration::from_secs(1),
                ..strapi_webhook_operator::repair::CheckSettings::default()
            },
            pod_name: None,
        };
        let metrics = format!("127.0.0.1:{}", free_port());
        let task = tokio::spawn(controller::run(
            api.client(),
            options,
            metrics.parse().unwrap(),
            None,
        ));
        Self { task, metrics }
    }

    /// Fails the test if the controller stopped (it runs until a signal).
    fn assert_running(&self) {
        assert!(!self.task.is_finished(), "the controller stopped early");
    }
}

impl Drop for RunningController {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Puts the test's objects in the API server: `cms`, a StrapiInstance logging in to the test
/// Strapi with a StrapiWebhook `site` sending to `sinks`; and `limited`, an instance whose admin
/// API token may manage webhooks but not read content (so its gap repair checks fail) and whose
/// `restartOnChange` names a Deployment that does not exist (so its first reconcile fails).
async fn apply_objects(
    api: &FakeApi,
    strapi: &StrapiServer,
    cms: &str,
    limited: &str,
    sinks: &[(&str, String)],
) {
    api.put_secret(
        NAMESPACE,
        "strapi-admin",
        &[("email", strapi.email()), ("password", strapi.password())],
    );
    api.put(
        &instance_path(cms),
        instance_object(
            cms,
            json!({"url": strapi.base_url(), "auth": {"credentials": {"secretName": "strapi-admin"}}}),
        ),
    );
    api.put(
        &path_of(GROUP, "strapiwebhooks", NAMESPACE, "site"),
        webhook_object("site", cms, sinks),
    );
    let token = strapi
        .create_admin_token(
            limited,
            &[
                "admin::webhooks.create",
                "admin::webhooks.read",
                "admin::webhooks.update",
                "admin::webhooks.delete",
            ],
        )
        .await;
    api.put_secret(NAMESPACE, "limited-token", &[("token", &token)]);
    api.put(
        &instance_path(limited),
        instance_object(
            limited,
            json!({
                "url": strapi.base_url(),
                "auth": {"apiToken": {"name": "limited-token", "key": "token"}},
                "restartOnChange": {"deployment": "no-such-strapi"},
                "repairInterval": "2s",
            }),
        ),
    );
    api.put(
        &path_of(GROUP, "strapiwebhooks", NAMESPACE, "limited-site"),
        webhook_object("limited-site", limited, &sinks[..1]),
    );
}

/// Traffic that gives every receiver series a value, sent to `instance` the way Strapi does:
/// stored events, a duplicate publish, a wrong secret, and a change gap repair rebuilt; the
/// sinks then accept, refuse (dead letters) and keep failing (retries).
async fn drive_receiver(receiver: &TestReceiver<KubernetesSource>, instance: &str, secret: &str) {
    let http = client();
    let post = |event: Value, secret: String| {
        http.post(format!(
            "http://{}/v1/instances/{instance}",
            receiver.ingest
        ))
        .header("content-type", "application/json")
        .header(strapi_webhook_operator::event::SECRET_HEADER, secret)
        .body(event.to_string())
        .send()
    };
    let publish = json!({
        "event": "entry.publish", "createdAt": "2026-11-29T01:00:00.000Z", "model": "article",
        "uid": "api::article.article", "entry": {"id": 1, "documentId": "d1", "locale": "en"}
    });
    for n in 0..5 {
        let status = post(article_event(n), secret.to_owned())
            .await
            .unwrap()
            .status();
        assert!(status.is_success(), "{status}");
    }
    for _ in 0..2 {
        let status = post(publish.clone(), secret.to_owned())
            .await
            .unwrap()
            .status();
        assert!(status.is_success(), "{status}");
    }
    let unauthorized = post(article_event(9), "wrong".into()).await.unwrap();
    assert_eq!(unauthorized.status(), 401);
    // A change the gap repair rebuilt from Strapi's content, posted as the controller does.
    let recovered = http
        .post(format!(
            "{}/v1/instances/{instance}/recovered",
            receiver.admin_url()
        ))
        .bearer_auth(receiver::ADMIN_TOKEN)
        .json(&json!({
            "event": "entry.create", "createdAt": "2026-11-29T01:05:00.000Z", "model": "article",
            "uid": "api::article.article",
            "entry": {"id": 7, "documentId": "doc7", "updatedAt": "2026-11-29T01:04:00.000Z"}
        }))
        .send()
        .await
        .unwrap();
    assert!(recovered.status().is_success(), "{}", recovered.status());
}

/// Every dashboard panel's expression and what must return series of every alert's, each with
/// what it comes from; every alert's whole expression must evaluate.
async fn expressions_to_check(prometheus: &Prometheus) -> Vec<(String, String)> {
    let mut expressions: Vec<(String, String)> = dashboard_expressions()
        .into_iter()
        // Grafana fills in the rate window.
        .map(|(panel, expr)| {
            (
                format!("panel {panel:?}"),
                expr.replace("$__rate_interval", "1m"),
            )
        })
        .collect();
    for (alert, expr) in rule_expressions() {
        // A query Prometheus refuses fails `query`.
        prometheus.query(&expr).await;
        let (data, how) = alert_data_expression(&expr);
        expressions.push((format!("alert {alert} ({how})"), data));
    }
    assert!(expressions.len() >= 30, "{expressions:#?}");
    expressions
}

/// The series carry the labels the alerts name, with what the test drove.
async fn assert_series_name_what_the_alerts_name(
    prometheus: &Prometheus,
    cms: &str,
    limited: &str,
) {
    let stored = prometheus
        .query("sum(strapi_webhook_receiver_events_stored_total)")
        .await;
    let stored: f64 = stored[0]["value"][1].as_str().unwrap().parse().unwrap();
    assert!(
        stored >= 7.0,
        "5 creates, one publish and one recovered create: {stored}"
    );
    let has = |series: &[Value], labels: &[(&str, String)]| {
        series.iter().any(|one| {
            labels
                .iter()
                .all(|(label, value)| one["metric"][label] == value.as_str())
        })
    };
    let rejected = prometheus
        .query("strapi_webhook_receiver_events_rejected_total")
        .await;
    let expected = [
        ("strapi_instance", format!("{NAMESPACE}/{cms}")),
        ("reason", "Unauthorized".to_owned()),
    ];
    assert!(has(&rejected, &expected), "{rejected:?}");
    let failures = prometheus
        .query("strapi_operator_reconcile_failures_total")
        .await;
    let expected = [
        ("kind", "StrapiInstance".to_owned()),
        ("reason", "KubernetesError".to_owned()),
    ];
    assert!(has(&failures, &expected), "{failures:?}");
    let repairs = prometheus
        .query("strapi_operator_repair_checks_total")
        .await;
    let expected = [
        ("strapi_instance", format!("{NAMESPACE}/{limited}")),
        ("outcome", "StrapiFailed".to_owned()),
    ];
    assert!(has(&repairs, &expected), "{repairs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scraping_the_real_receiver_and_controller_answers_every_expression() {
    let strapi = StrapiServer::shared().await;
    let api = FakeApi::default();
    let suffix = uuid::Uuid::now_v7().simple().to_string();
    let (cms, limited) = (format!("cms-{suffix}"), format!("limited-{suffix}"));
    let cleanup = strapi.cleanup();
    cleanup.instance(&format!("{NAMESPACE}/{cms}"));
    cleanup.instance(&format!("{NAMESPACE}/{limited}"));

    let accepting = CaptureSink::start().await;
    let refusing = CaptureSink::start().await;
    refusing.answer(Answer::Status(400));
    let failing = CaptureSink::start().await;
    failing.answer(Answer::Status(503));
    let sinks = [
        ("accepting", accepting.url()),
        ("refusing", refusing.url()),
        ("failing", failing.url()),
    ];
    apply_objects(&api, &strapi, &cms, &limited, &sinks).await;

    // Both binaries read their configuration from the one API server, as in a cluster: the
    // receiver learns the shared secrets the controller writes.
    let store = TestStore::start();
    let receiver = TestReceiver::start_with(
        &store.spec(),
        Some(store),
        Arc::new(KubernetesSource::with_client(api.client())),
    )
    .await;
    let controller = RunningController::start(&api, &receiver);
    let prometheus = Prometheus::start(&[
        ("receiver", receiver.admin.to_string()),
        ("controller", controller.metrics.clone()),
    ])
    .await;

    // The controller registers `cms` in Strapi, and Strapi's trigger reaches the receiver. A
    // trigger that finds the receiver without the new secret yet is retried 30 s later.
    eventually(Duration::from_secs(120), || async {
        match condition(&api, &cms, "Verified") {
            Some(verified) if verified["status"] == "True" => Ok(()),
            other => Err(format!("{cms} Verified: {other:?}")),
        }
    })
    .await;
    drive_receiver(
        &receiver,
        &format!("{NAMESPACE}/{cms}"),
        &shared_secret(&api, &cms),
    )
    .await;
    accepting
        .wait_for(Duration::from_secs(30), |received| received.len() >= 7)
        .await;

    prometheus
        .eventually_all_return_data(expressions_to_check(&prometheus).await)
        .await;
    assert_series_name_what_the_alerts_name(&prometheus, &cms, &limited).await;
    controller.assert_running();
    drop(controller);
    receiver.shutdown().await;
}

/// The trace id and span id of a W3C `traceparent`, after checking its form: version `00`, a
/// 32-hex trace id and a 16-hex span id (lower case, neither all zeros) and two hex flags.
fn trace_context(traceparent: &str) -> (String, String) {
    let fields: Vec<&str> = traceparent.split('-').collect();
    let hex = |field: &str, len: usize| {
        field.len() == len
            && field
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let valid = fields.len() == 4
        && fields[0] == "00"
        && hex(fields[1], 32)
        && fields[1].bytes().any(|b| b != b'0')
        && hex(fields[2], 16)
        && fields[2].bytes().any(|b| b != b'0')
        && hex(fields[3], 2);
    assert!(valid, "not a W3C traceparent: {traceparent:?}");
    (fields[1].to_owned(), fields[2].to_owned())
}

/// One event through a receiver with `settings` to a sink that answers 503, then 200: the
/// `traceparent` of each attempt, and the stored event's id.
async fn an_event_retried_once(
    settings: strapi_webhook_operator::receiver::ReceiverSettings,
) -> (TestReceiver, Vec<(String, String)>, String) {
    let sink = CaptureSink::start().await;
    sink.answer(Answer::Status(503));
    let store = TestStore::start();
    let queue = store.open().await;
    let spec = webhook_spec(&[("site", sink.url())]);
    let receiver = TestReceiver::start_with_settings(store, queue, snapshot(&spec), settings).await;
    let http = client();
    assert_eq!(receiver.post(&http, &article_event(1)).await, 200);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while sink.attempted().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the sink was never called"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    sink.answer(Answer::Status(200));
    sink.wait_for(Duration::from_secs(10), |received| received.len() == 1)
        .await;
    let attempts: Vec<(String, String)> = sink
        .attempted()
        .iter()
        .map(|attempt| {
            trace_context(
                attempt
                    .traceparent
                    .as_deref()
                    .expect("a traceparent header"),
            )
        })
        .collect();
    let statuses: Vec<u16> = sink.attempted().iter().map(|a| a.status).collect();
    assert_eq!(statuses.first(), Some(&503));
    assert_eq!(statuses.last(), Some(&200));
    let deliveries: Value = receiver.admin_json("/v1/deliveries").await;
    let event_id = deliveries[0]["eventId"]
        .as_str()
        .expect("the delivery names its event")
        .to_owned();
    (receiver, attempts, event_id)
}

#[tokio::test]
async fn every_attempt_carries_a_traceparent_in_its_events_trace() {
    let (receiver, attempts, event_id) = an_event_retried_once(TestReceiver::settings()).await;
    receiver.shutdown().await;
    assert!(attempts.len() >= 2, "{attempts:?}");
    // The trace is the stored event's: a retry after a restart joins it too.
    for (trace_id, _) in &attempts {
        assert_eq!(*trace_id, event_id.replace('-', ""));
    }
    let spans: BTreeSet<&String> = attempts.iter().map(|(_, span)| span).collect();
    assert_eq!(
        spans.len(),
        attempts.len(),
        "each attempt its own span: {attempts:?}"
    );
}

/// Every span of every OTLP/HTTP export request the collector received.
fn exported_spans(
    collector: &support::CaptureServer,
) -> Vec<(String, opentelemetry_proto::tonic::trace::v1::Span)> {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use prost::Message;
    collector
        .requests()
        .iter()
        .flat_map(|request| {
            assert_eq!(request.path, "/v1/traces");
            assert_eq!(
                request.header("content-type"),
                Some("application/x-protobuf")
            );
            ExportTraceServiceRequest::decode(request.body.as_ref())
                .expect("a protobuf ExportTraceServiceRequest")
                .resource_spans
        })
        .flat_map(|resource| {
            let service = resource
                .resource
                .iter()
                .flat_map(|resource| &resource.attributes)
                .find(|attribute| attribute.key == "service.name")
                .and_then(|attribute| attribute.value.as_ref())
                .map(|value| format!("{:?}", value.value))
                .unwrap_or_default();
            resource
                .scope_spans
                .into_iter()
                .flat_map(|scope| scope.spans)
                .map(move |span| (service.clone(), span))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_export_sends_the_ingest_and_every_attempt_in_the_trace_the_sink_saw() {
    let collector = support::CaptureServer::start().await;
    let mut settings = TestReceiver::settings();
    settings.engine.tracer =
        strapi_webhook_operator::traces::Tracer::otlp(collector.url(), "strapi-webhook-operator")
            .unwrap();
    let (receiver, attempts, event_id) = an_event_retried_once(settings).await;
    // Stopping flushes the spans still batched.
    receiver.shutdown().await;
    let spans = exported_spans(&collector);
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let trace_id = event_id.replace('-', "");
    let ingest: Vec<_> = spans
        .iter()
        .filter(|(_, span)| span.name == "ingest")
        .collect();
    assert_eq!(ingest.len(), 1, "one ingest span: {spans:#?}");
    let (service, root) = ingest[0];
    assert!(service.contains("strapi-webhook-operator"), "{service}");
    assert_eq!(hex(&root.trace_id), trace_id);
    assert!(
        root.parent_span_id.is_empty(),
        "the ingest is the trace's root"
    );
    let delivered: Vec<_> = spans
        .iter()
        .filter(|(_, span)| span.name == "deliver")
        .collect();
    assert_eq!(delivered.len(), attempts.len(), "{spans:#?}");
    for ((_, span), (sink_trace, sink_span)) in delivered.iter().zip(&attempts) {
        assert_eq!(hex(&span.trace_id), *sink_trace);
        assert_eq!(hex(&span.span_id), *sink_span);
        assert_eq!(
            span.parent_span_id, root.span_id,
            "attempts hang under the ingest"
        );
        assert!(span.start_time_unix_nano <= span.end_time_unix_nano);
    }
    let status = |span: &opentelemetry_proto::tonic::trace::v1::Span| {
        span.status.as_ref().map_or(0, |status| status.code)
    };
    // 503 then 200: the first attempt failed (code 2, error), the last one is ok (code 1).
    assert_eq!(status(&delivered[0].1), 2);
    assert_eq!(status(&delivered[delivered.len() - 1].1), 1);
}
