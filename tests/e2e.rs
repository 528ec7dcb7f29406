//! End to end against a real Kubernetes cluster: `make e2e` with `KUBECONFIG` set.
//!
//! The CRDs are applied to the cluster; the controller and the receiver run as local processes
//! (out of cluster), so the suite also passes on a bare kube-apiserver without kubelet or
//! controller-manager: it relies on no pod and no garbage collection, deletes what it creates
//! and uses a fresh namespace each run instead of deleting one. Strapi is the real test app and
//! the sink a loopback listener. No API server can run on the development machines, so in
//! `make test` this test is listed as ignored, and `make e2e` says so when `KUBECONFIG` is unset.

mod support;

use std::{net::TcpListener, process::Stdio, time::Duration};

use k8s_openapi::{
    api::core::v1::{Namespace, Secret},
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, Patch, PatchParams, PostParams},
    runtime::wait::{await_condition, conditions},
};
use serde_json::json;
use strapi_webhook_operator::{
    api::{self, StrapiInstance, StrapiWebhook},
    registration::MARKER_HEADER,
    strapi::Document,
};
use support::{CaptureServer, StrapiServer};
use tokio::process::{Child, Command};

const MANAGER: &str = "strapi-webhook-operator-e2e";
const LIMIT: Duration = Duration::from_secs(120);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

// Both processes share the admin token, as the chart's Secret gives it to both; the sink is a
// loopback server, which both must accept.
fn operator(args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_strapi-webhook-operator"))
        .args(args)
        .arg("--allow-loopback-sinks")
        .env("RECEIVER_ADMIN_TOKEN", "e2e-admin-token-0123456789")
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("start the operator binary")
}

async fn apply<K>(api: &Api<K>, name: &str, object: serde_json::Value) -> K
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.patch(
        name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(object),
    )
    .await
    .unwrap()
}

/// Waits until `check` holds for the object, showing its last state when it never does.
async fn wait_until<K>(api: &Api<K>, name: &str, what: &str, check: impl Fn(&K) -> bool)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let object = api.get_opt(name).await.unwrap();
        if object.as_ref().is_some_and(&check) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} never became {what}: {object:#?}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Waits until the object no longer exists (its finalizer ran).
async fn wait_gone<K>(api: &Api<K>, name: &str)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let deadline = tokio::time::Instant::now() + LIMIT;
    while let Some(object) = api.get_opt(name).await.unwrap() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} was never deleted: {object:#?}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn condition_true(
    conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
    kind: &str,
) -> bool {
    conditions
        .iter()
        .any(|condition| condition.type_ == kind && condition.status == "True")
}

#[tokio::test]
#[ignore = "needs a Kubernetes cluster: run `make e2e` with KUBECONFIG set"]
async fn the_operator_routes_a_published_article_end_to_end() {
    assert!(
        std::env::var_os("KUBECONFIG").is_some(),
        "the end-to-end suite needs a cluster: set KUBECONFIG (make e2e checks this first)"
    );
    let client = Client::try_default()
        .await
        .expect("a cluster from KUBECONFIG");

    // The CRDs, as `make generate` writes them.
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in api::crds() {
        let name = crd.name_any();
        crds.patch(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&crd),
        )
        .await
        .unwrap();
        tokio::time::timeout(
            LIMIT,
            await_condition(crds.clone(), &name, conditions::is_crd_established()),
        )
        .await
        .expect("CRD established in time")
        .unwrap();
    }
    let namespace = format!(
        "swo-e2e-{}",
        &uuid::Uuid::now_v7().simple().to_string()[20..]
    );
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": namespace}})).unwrap(),
        )
        .await
        .unwrap();

    // Strapi, a sink, and the operator as local processes.
    let strapi = StrapiServer::shared().await;
    let sink = CaptureServer::start().await;
    let (ingest, admin, metrics) = (free_port(), free_port(), free_port());
    let data = tempfile::tempdir().unwrap();
    let queue = format!("sqlite:{}", data.path().join("queue.db").display());
    let _receiver = operator(&[
        "receiver",
        "--ingest-addr",
        &format!("127.0.0.1:{ingest}"),
        "--admin-addr",
        &format!("127.0.0.1:{admin}"),
        "--queue",
        &queue,
        "--config-source",
        "kubernetes",
    ]);
    let _controller = operator(&[
        "controller",
        "--receiver-url",
        &format!("http://127.0.0.1:{ingest}"),
        "--receiver-admin-url",
        &format!("http://127.0.0.1:{admin}"),
        "--metrics-addr",
        &format!("127.0.0.1:{metrics}"),
        "--leader-elect=false",
    ]);

    // What a user applies.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    apply(
        &secrets,
        "strapi-admin",
        json!({
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "strapi-admin"},
            "stringData": {"email": strapi.email(), "password": strapi.password()},
        }),
    )
    .await;
    apply(
        &secrets,
        "nextjs-revalidate",
        json!({
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "nextjs-revalidate"},
            "stringData": {"secret": "e2e-secret"},
        }),
    )
    .await;
    let instances: Api<StrapiInstance> = Api::namespaced(client.clone(), &namespace);
    apply(&instances, "cms", json!({
        "apiVersion": "webhooks.strapi-operator.dev/v1alpha1", "kind": "StrapiInstance",
        "metadata": {"name": "cms"},
        "spec": {"url": strapi.base_url(), "auth": {"credentials": {"secretName": "strapi-admin"}}},
    }))
    .await;
    let webhooks: Api<StrapiWebhook> = Api::namespaced(client.clone(), &namespace);
    apply(&webhooks, "site", json!({
        "apiVersion": "webhooks.strapi-operator.dev/v1alpha1", "kind": "StrapiWebhook",
        "metadata": {"name": "site"},
        "spec": {
            "instanceRef": {"name": "cms"},
            "events": ["entry.publish"],
            "sinks": [{"name": "website", "nextjs": {
                "url": format!("{}/api/revalidate", sink.url()),
                "secretRef": {"name": "nextjs-revalidate", "key": "secret"},
            }}],
            "routes": [{"name": "articles", "sink": "website", "match": {"models": ["article"]}}],
        },
    }))
    .await;

    wait_until(&instances, "cms", "Ready and Verified", |instance| {
        let conditions = instance
            .status
            .as_ref()
            .map(|status| status.conditions.as_slice())
            .unwrap_or_default();
        condition_true(conditions, "Ready") && condition_true(conditions, "Verified")
    })
    .await;
    wait_until(&webhooks, "site", "Ready", |webhook| {
        condition_true(
            webhook
                .status
                .as_ref()
                .map(|status| status.conditions.as_slice())
                .unwrap_or_default(),
            "Ready",
        )
    })
    .await;

    // An editor publishes an article; the site hears of it, with its secret.
    let editor = strapi.client();
    let title = format!("e2e {namespace}");
    let article = editor
        .create_entry("api::article.article", &json!({"title": title}))
        .await
        .unwrap();
    editor
        .publish(Document::Entry {
            uid: "api::article.article",
            document_id: &article.document_id,
        })
        .await
        .unwrap();
    let call = sink
        .wait_for(LIMIT, |request| {
            request.path == "/api/revalidate"
                && request.json()["entry"]["documentId"] == json!(article.document_id)
        })
        .await;
    assert_eq!(call.header("x-webhook-secret"), Some("e2e-secret"));
    assert_eq!(call.json()["event"], "entry.publish");
    assert!(
        call.header("webhook-id").is_some(),
        "deliveries carry a stable id"
    );

    // Deleting the resources removes the registration from Strapi.
    webhooks
        .delete("site", &DeleteParams::default())
        .await
        .unwrap();
    instances
        .delete("cms", &DeleteParams::default())
        .await
        .unwrap();
    wait_gone(&instances, "cms").await;
    let marker = format!("{namespace}/cms");
    let left: Vec<_> = editor
        .list_webhooks()
        .await
        .unwrap()
        .into_iter()
        .filter(|webhook| webhook.headers.get(MARKER_HEADER) == Some(&marker))
        .collect();
    assert!(
        left.is_empty(),
        "the registration is removed on deletion: {left:#?}"
    );
    // No garbage collector runs on a bare API server: delete the owned Secret too.
    for name in [
        "strapi-admin",
        "nextjs-revalidate",
        &api::shared_secret::name("cms"),
    ] {
        secrets
            .delete(name, &DeleteParams::default())
            .await
            .unwrap();
    }
    editor
        .delete_document(Document::Entry {
            uid: "api::article.article",
            document_id: &article.document_id,
        })
        .await
        .unwrap();
}
