//! The example integrations in `examples/`, loaded with the example Secrets so tests exercise
//! exactly what users copy.

use strapi_webhook_operator::{
    api::StrapiWebhook,
    config::{CompiledWebhook, InMemorySecrets, compile_webhook},
};

/// `examples/<file>` as a resource.
pub fn example(file: &str) -> StrapiWebhook {
    let path = format!("{}/examples/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{path}: {error}"));
    serde_saphyr::from_str(&text).unwrap_or_else(|error| panic!("{path}: {error}"))
}

/// The Secrets of `examples/secrets.yaml`, placed in `namespace` (or their own with `None`).
pub fn example_secrets(namespace: Option<&str>) -> InMemorySecrets {
    let path = format!("{}/examples/secrets.yaml", env!("CARGO_MANIFEST_DIR"));
    let secrets: Vec<k8s_openapi::api::core::v1::Secret> =
        serde_saphyr::from_multiple(&std::fs::read_to_string(&path).unwrap())
            .unwrap_or_else(|error| panic!("{path}: {error}"));
    let mut store = InMemorySecrets::new();
    for secret in secrets {
        let own = secret.metadata.namespace.unwrap();
        let name = secret.metadata.name.unwrap();
        for (key, value) in secret.string_data.unwrap_or_default() {
            store.insert(namespace.unwrap_or(&own), &name, &key, value);
        }
    }
    store
}

/// An example compiled as it is, in its own namespace.
pub fn compile_example(file: &str) -> CompiledWebhook {
    let webhook = example(file);
    let namespace = webhook.metadata.namespace.as_deref().unwrap();
    let name = webhook.metadata.name.as_deref().unwrap();
    compile_webhook(namespace, name, 1, &webhook.spec, &example_secrets(None))
        .unwrap_or_else(|errors| panic!("{file}: {errors}"))
}

/// An example re-pointed for a test: it routes the events of the instance `namespace/instance`
/// and its first sink sends to `sink_url` (for Slack, through the webhook URL Secret).
pub fn example_at(file: &str, namespace: &str, instance: &str, sink_url: &str) -> CompiledWebhook {
    let mut webhook = example(file);
    webhook.spec.instance_ref.name = instance.to_owned();
    webhook.spec.instance_ref.namespace = None;
    let mut secrets = example_secrets(Some(namespace));
    let sink = &mut webhook.spec.sinks[0];
    if let Some(nextjs) = &mut sink.nextjs {
        nextjs.url = sink_url.to_owned();
    }
    if let Some(http) = &mut sink.http {
        http.url = sink_url.to_owned();
    }
    if let Some(slack) = &sink.slack {
        let secret = &slack.webhook_url_secret_ref;
        secrets.insert(namespace, &secret.name, &secret.key, sink_url);
    }
    let name = webhook.metadata.name.as_deref().unwrap();
    compile_webhook(namespace, name, 1, &webhook.spec, &secrets)
        .unwrap_or_else(|errors| panic!("{file}: {errors}"))
}
