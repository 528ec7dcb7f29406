//! The Kubernetes configuration source against the tests' in-memory API server
//! ([`support::fake_api`], the one the controller scenarios use): what becomes of instances, shared secrets, sink Secrets and namespaces
//! an instance does not allow.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use strapi_webhook_operator::{
    receiver::{kubernetes::KubernetesSource, source::ConfigSource},
    sinks::SinkConfig,
};
use support::fake_api::{FakeApi, path_of};

const GROUP: &str = "webhooks.strapi-operator.dev/v1alpha1";

fn instance() -> Value {
    json!({
        "apiVersion": "webhooks.strapi-operator.dev/v1alpha1", "kind": "StrapiInstance",
        "metadata": { "name": "strapi", "namespace": "cms" },
        "spec": { "url": "http://strapi.cms:1337", "auth": { "apiToken": { "name": "admin", "key": "token" } } }
    })
}

fn webhook(namespace: &str, name: &str, token_secret: &str) -> Value {
    json!({
        "apiVersion": "webhooks.strapi-operator.dev/v1alpha1", "kind": "StrapiWebhook",
        "metadata": { "name": name, "namespace": namespace, "generation": 3 },
        "spec": {
            "instanceRef": { "name": "strapi", "namespace": "cms" },
            "events": ["entry.create"],
            "sinks": [{ "name": "crm", "http": {
                "url": "http://crm.example/hook",
                "headers": [{ "name": "authorization", "valueFrom": {
                    "secretKeyRef": { "name": token_secret, "key": "token" }, "prefix": "Bearer "
                } }]
            } }],
            "routes": [{ "name": "all", "sink": "crm" }]
        }
    })
}

#[tokio::test]
async fn instances_secrets_and_allowed_webhooks_become_a_snapshot() {
    let api = FakeApi::default();
    api.put(
        &path_of(GROUP, "strapiinstances", "cms", "strapi"),
        instance(),
    );
    for (namespace, name, token_secret) in [
        ("cms", "site", "crm-token"),
        ("cms", "broken", "no-such-secret"),
        ("other-team", "sneaky", "crm-token"),
    ] {
        api.put(
            &path_of(GROUP, "strapiwebhooks", namespace, name),
            webhook(namespace, name, token_secret),
        );
    }
    api.put_labelled_secret(
        "cms",
        "strapi-strapi-webhook-secret",
        &[("webhooks.strapi-operator.dev/instance", "strapi")],
        &[("secret", "current"), ("previous", "older")],
    );
    api.put_secret("cms", "crm-token", &[("token", "t0ken")]);
    let source = KubernetesSource::with_client(api.client());
    let mut snapshots = source.snapshots();
    let snapshot = tokio::time::timeout(Duration::from_secs(30), snapshots.wait_for(|s| s.synced))
        .await
        .unwrap_or_else(|_| panic!("the source did not sync; requests: {:?}", api.requests()))
        .unwrap()
        .clone();

    assert_eq!(snapshot.instances["cms/strapi"], ["current", "older"]);
    let keys: Vec<&String> = snapshot.webhooks.keys().collect();
    assert_eq!(
        keys,
        ["cms/site"],
        "a webhook without its Secret, or from a namespace the instance does not allow, is left out"
    );
    let site = &snapshot.webhooks["cms/site"];
    assert_eq!(site.generation, 3);
    let Some((SinkConfig::Http(crm), _)) = site.sink("crm") else {
        panic!("{site:?}")
    };
    assert_eq!(crm.headers[0].1.to_str().unwrap(), "Bearer t0ken");

    let requested: Vec<String> = api
        .requests()
        .into_iter()
        .map(|request| format!("{}?{}", request.path, request.query))
        .collect();
    assert!(
        requested
            .iter()
            .any(|path| path.starts_with("/api/v1/secrets?")
                && path.contains("labelSelector=webhooks.strapi-operator.dev%2Finstance")),
        "only labelled Secrets are listed: {requested:?}"
    );
    assert!(
        !requested
            .iter()
            .any(|path| path.starts_with("/api/v1/secrets?") && !path.contains("labelSelector")),
        "Secrets are never listed wholesale: {requested:?}"
    );
}
