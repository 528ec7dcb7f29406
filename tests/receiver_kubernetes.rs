//! The Kubernetes configuration source against an in-memory API server that answers lists and
//! keeps watches open: what becomes of instances, shared secrets, sink Secrets and namespaces
//! an instance does not allow.

use std::{
    collections::BTreeMap,
    convert::Infallible,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::body::{Body, Bytes};
use http::{Request, Response, StatusCode};
use k8s_openapi::{ByteString, api::core::v1::Secret};
use kube::api::ObjectMeta;
use serde_json::{Value, json};
use strapi_webhook_operator::{
    receiver::{kubernetes::KubernetesSource, source::ConfigSource},
    sinks::SinkConfig,
};

/// Lists answer with the objects under a collection path; watches stay open and quiet; single
/// Secrets are looked up by path. Paths requested are recorded.
#[derive(Clone, Default)]
struct FakeApi {
    collections: Arc<BTreeMap<&'static str, Vec<Value>>>,
    secrets: Arc<BTreeMap<String, Value>>,
    requested: Arc<Mutex<Vec<String>>>,
}

impl FakeApi {
    fn client(self) -> kube::Client {
        let service = tower::service_fn(move |request: Request<kube::client::Body>| {
            let api = self.clone();
            async move { Ok::<_, Infallible>(api.answer(&request)) }
        });
        kube::Client::new(service, "default")
    }

    fn answer(&self, request: &Request<kube::client::Body>) -> Response<Body> {
        let path = request.uri().path().to_owned();
        let query = request.uri().query().unwrap_or_default().to_owned();
        self.requested
            .lock()
            .unwrap()
            .push(format!("{path}?{query}"));
        if query.contains("watch=true") {
            let quiet = futures::stream::pending::<Result<Bytes, Infallible>>();
            return Response::new(Body::from_stream(quiet));
        }
        if let Some(items) = self.collections.get(path.as_str()) {
            let list = json!({ "metadata": { "resourceVersion": "1" }, "items": items });
            return Response::new(Body::from(list.to_string()));
        }
        match self.secrets.get(&path) {
            Some(secret) => Response::new(Body::from(secret.to_string())),
            None => {
                let status = json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure",
                                     "reason": "NotFound", "code": 404, "message": "not found" });
                let mut response = Response::new(Body::from(status.to_string()));
                *response.status_mut() = StatusCode::NOT_FOUND;
                response
            }
        }
    }
}

/// A Secret as the API server sends it (data base64-encoded, which `ByteString` does).
fn secret(namespace: &str, name: &str, data: &[(&str, &str)]) -> Value {
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            labels: Some(BTreeMap::from([(
                "webhooks.strapi-operator.dev/instance".to_owned(),
                "strapi".to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        data: Some(
            data.iter()
                .map(|(key, value)| ((*key).to_owned(), ByteString(value.as_bytes().to_vec())))
                .collect(),
        ),
        ..Secret::default()
    };
    let mut value = serde_json::to_value(secret).unwrap();
    value["apiVersion"] = json!("v1");
    value["kind"] = json!("Secret");
    value
}

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
    let api = FakeApi {
        collections: Arc::new(BTreeMap::from([
            (
                "/apis/webhooks.strapi-operator.dev/v1alpha1/strapiinstances",
                vec![instance()],
            ),
            (
                "/apis/webhooks.strapi-operator.dev/v1alpha1/strapiwebhooks",
                vec![
                    webhook("cms", "site", "crm-token"),
                    webhook("cms", "broken", "no-such-secret"),
                    webhook("other-team", "sneaky", "crm-token"),
                ],
            ),
            (
                "/api/v1/secrets",
                vec![secret(
                    "cms",
                    "strapi-strapi-webhook-secret",
                    &[("secret", "current"), ("previous", "older")],
                )],
            ),
        ])),
        secrets: Arc::new(BTreeMap::from([(
            "/api/v1/namespaces/cms/secrets/crm-token".to_owned(),
            secret("cms", "crm-token", &[("token", "t0ken")]),
        )])),
        requested: Arc::default(),
    };
    let requested = Arc::clone(&api.requested);
    let source = KubernetesSource::with_client(api.client());
    let mut snapshots = source.snapshots();
    let snapshot = tokio::time::timeout(Duration::from_secs(30), snapshots.wait_for(|s| s.synced))
        .await
        .unwrap_or_else(|_| {
            panic!(
                "the source did not sync; requests: {:?}",
                requested.lock().unwrap()
            )
        })
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

    let requested = requested.lock().unwrap().clone();
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
