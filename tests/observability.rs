//! The alert rules and the Grafana dashboard against what the binaries really export: every metric
//! they name exists, the dashboard is well formed, and a real Prometheus scraping a real receiver
//! answers every receiver expression of the dashboard and the rules with data. And the traces:
//! what a sink sees in `traceparent`, and what an OTLP collector receives.

mod support;

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::{Value, json};
use strapi_webhook_operator::{
    controller::{
        self,
        metrics::{InstanceConditionLabels, StrapiCallLabels},
    },
    receiver::metrics::{
        InstanceLabels, Metrics as ReceiverMetrics, RejectLabels, RejectReason, SinkLabels,
    },
};
use support::receiver;
use support::receiver::{
    Answer, CaptureSink, KillOnDrop, TestReceiver, TestStore, article_event, client, free_port,
    snapshot, webhook_spec,
};

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
        .repair_checks
        .get_or_create(&controller::metrics::OutcomeLabels {
            outcome: "StrapiFailed",
        })
        .inc();
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

/// A real Prometheus on a loopback port, scraping `target` every second; killed on drop.
struct Prometheus {
    url: String,
    _process: KillOnDrop,
    _data: tempfile::TempDir,
}

impl Prometheus {
    async fn start(target: &str) -> Self {
        let data = tempfile::tempdir().unwrap();
        let config: PathBuf = data.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global: {{ scrape_interval: 1s, evaluation_interval: 1s }}\n\
                 scrape_configs:\n  - job_name: receiver\n    static_configs:\n      - targets: ['{target}']\n"
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

    /// The series an instant query returns.
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

    /// Waits until `promql` returns series (scrapes and rate windows need a few seconds).
    async fn eventually_returns_data(&self, promql: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while self.query(promql).await.is_empty() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "`{promql}` returned no series from the real receiver"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scraping_a_real_receiver_answers_every_receiver_expression() {
    let accepting = CaptureSink::start().await;
    let refusing = CaptureSink::start().await;
    refusing.answer(Answer::Status(400));
    let failing = CaptureSink::start().await;
    failing.answer(Answer::Status(503));
    let spec = receiver::webhook_spec(&[
        ("accepting", accepting.url()),
        ("refusing", refusing.url()),
        ("failing", failing.url()),
    ]);
    let receiver = TestReceiver::start(snapshot(&spec)).await;
    let prometheus = Prometheus::start(&receiver.admin.to_string()).await;
    let http = client();

    // Traffic that gives every series a value: stored events, a duplicate publish, a wrong secret,
    // deliveries that succeed, dead-letter (400) and keep failing (503).
    let publish = json!({
        "event": "entry.publish", "createdAt": "2026-11-29T01:00:00.000Z", "model": "article",
        "uid": "api::article.article", "entry": {"id": 1, "documentId": "d1", "locale": "en"}
    });
    for n in 0..5 {
        let status = receiver.post(&http, &receiver::article_event(n)).await;
        assert!(status.is_success(), "{status}");
    }
    for _ in 0..2 {
        assert!(receiver.post(&http, &publish).await.is_success());
    }
    let unauthorized = http
        .post(format!(
            "http://{}/v1/instances/{}",
            receiver.ingest,
            receiver::INSTANCE
        ))
        .header("content-type", "application/json")
        .header("x-strapi-webhook-secret", "wrong")
        .body(receiver::article_event(9).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(unauthorized.status(), 401);
    // A change the gap repair rebuilt from Strapi's content, posted as the controller does.
    let recovered = http
        .post(format!(
            "{}/v1/instances/{}/recovered",
            receiver.admin_url(),
            receiver::INSTANCE
        ))
        .json(&json!({
            "event": "entry.create", "createdAt": "2026-11-29T01:05:00.000Z", "model": "article",
            "uid": "api::article.article",
            "entry": {"id": 7, "documentId": "doc7", "updatedAt": "2026-11-29T01:04:00.000Z"}
        }))
        .send()
        .await
        .unwrap();
    assert!(recovered.status().is_success(), "{}", recovered.status());
    accepting
        .wait_for(Duration::from_secs(30), |received| received.len() >= 7)
        .await;

    let receiver_only = |(_, expr): &(String, String)| expr.contains("strapi_webhook_receiver_");
    let panels: Vec<_> = dashboard_expressions()
        .into_iter()
        .filter(receiver_only)
        .collect();
    assert!(panels.len() >= 10, "{panels:#?}");
    for (_, expr) in panels {
        // Grafana fills in the rate window.
        prometheus
            .eventually_returns_data(&expr.replace("$__rate_interval", "1m"))
            .await;
    }
    // promtool checks the thresholds; here each alert's metrics must be in the real scrape.
    for (_, expr) in rule_expressions().iter().filter(|rule| receiver_only(rule)) {
        for metric in metric_names(expr) {
            prometheus.eventually_returns_data(&metric).await;
        }
    }
    let stored = prometheus
        .query("sum(strapi_webhook_receiver_events_stored_total)")
        .await;
    assert_eq!(
        stored[0]["value"][1], "7",
        "5 creates, one publish and one recovered create stored: {stored:?}"
    );
    let rejected = prometheus
        .query(r#"strapi_webhook_receiver_events_rejected_total{reason="Unauthorized"}"#)
        .await;
    assert_eq!(
        rejected[0]["metric"]["strapi_instance"],
        receiver::INSTANCE,
        "{rejected:?}"
    );
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
