//! How the custom resources refer to each other: the key of an instance, which instance a webhook
//! names, which namespaces an instance admits, the union of events it must subscribe to, and
//! which Secrets a webhook reads. The controller, the receiver and local mode all answer these
//! questions with this code, so they never disagree.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::api::{NamespacesFrom, SecretKeyRef, StrapiInstance, StrapiWebhook, StrapiWebhookSpec};
use crate::key::ObjectKey;

/// `namespace/name`, the key the receiver, the marker header and the status use.
pub fn instance_key(instance: &StrapiInstance) -> ObjectKey {
    ObjectKey::of(instance)
}

/// The union of events over the enabled `webhooks` that refer to `instance` (pure).
pub fn subscribed_events<'a>(
    instance: &ObjectKey,
    webhooks: impl IntoIterator<Item = &'a StrapiWebhook>,
) -> BTreeSet<String> {
    webhooks
        .into_iter()
        .filter(|webhook| webhook.spec.enabled && referenced_instance(webhook) == *instance)
        .flat_map(|webhook| {
            webhook
                .spec
                .events
                .iter()
                .map(|event| event.as_str().to_owned())
        })
        .collect()
}

/// `namespace/name` of the instance a webhook refers to (its own namespace by default).
pub fn referenced_instance(webhook: &StrapiWebhook) -> ObjectKey {
    let reference = &webhook.spec.instance_ref;
    let namespace = match &reference.namespace {
        Some(namespace) => namespace.clone(),
        None => ObjectKey::of(webhook).namespace,
    };
    ObjectKey::new(namespace, &reference.name)
}

/// Whether `instance` lets StrapiWebhooks in `namespace` (with `labels`) use it (pure).
pub fn allows_namespace(
    instance: &StrapiInstance,
    namespace: &str,
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    let allowed = &instance.spec.allowed_namespaces;
    match allowed.from {
        NamespacesFrom::Same => instance_key(instance).namespace == namespace,
        NamespacesFrom::All => true,
        NamespacesFrom::Selector => {
            let empty = Default::default();
            allowed
                .selector
                .as_ref()
                .is_some_and(|selector| selector_matches(selector, labels.unwrap_or(&empty)))
        }
    }
}

fn selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let labels_match = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(key, value)| labels.get(key) == Some(value));
    let expressions_match = selector
        .match_expressions
        .iter()
        .flatten()
        .all(|expression| {
            let values = expression.values.as_deref().unwrap_or_default();
            let value = labels.get(&expression.key);
            match expression.operator.as_str() {
                "In" => value.is_some_and(|value| values.contains(value)),
                "NotIn" => value.is_none_or(|value| !values.contains(value)),
                "Exists" => value.is_some(),
                "DoesNotExist" => value.is_none(),
                _ => false,
            }
        });
    labels_match && expressions_match
}

/// Every Secret a spec refers to.
pub fn secret_refs(spec: &StrapiWebhookSpec) -> Vec<&SecretKeyRef> {
    let mut refs = Vec::new();
    for sink in &spec.sinks {
        if let Some(nextjs) = &sink.nextjs {
            refs.extend(&nextjs.secret_ref);
        }
        if let Some(slack) = &sink.slack {
            refs.push(&slack.webhook_url_secret_ref);
        }
        if let Some(http) = &sink.http {
            refs.extend(
                http.headers
                    .iter()
                    .filter_map(|header| header.value_from.as_ref())
                    .map(|source| &source.secret_key_ref),
            );
            refs.extend(http.signing.as_ref().map(|signing| &signing.secret_ref));
        }
    }
    refs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::StrapiInstanceSpec;
    use serde_json::json;

    fn instance(from: &str, selector: Option<serde_json::Value>) -> StrapiInstance {
        let mut allowed = json!({"from": from});
        if let Some(selector) = selector {
            allowed["selector"] = selector;
        }
        let spec: StrapiInstanceSpec = serde_json::from_value(json!({
            "url": "http://strapi:1337",
            "auth": {"apiToken": {"name": "t", "key": "t"}},
            "allowedNamespaces": allowed,
        }))
        .unwrap();
        let mut instance = StrapiInstance::new("cms", spec);
        instance.metadata.namespace = Some("web".into());
        instance
    }

    fn webhook_yaml(yaml: &str) -> StrapiWebhook {
        serde_saphyr::from_str(yaml).unwrap()
    }

    #[test]
    fn namespaces_are_allowed_like_gateway_api_routes() {
        let labels = BTreeMap::from([("team".to_owned(), "web".to_owned())]);
        assert!(allows_namespace(&instance("Same", None), "web", None));
        assert!(!allows_namespace(&instance("Same", None), "shop", None));
        assert!(allows_namespace(&instance("All", None), "shop", None));
        let selector = json!({"matchLabels": {"team": "web"}});
        assert!(allows_namespace(
            &instance("Selector", Some(selector.clone())),
            "shop",
            Some(&labels)
        ));
        assert!(!allows_namespace(
            &instance("Selector", Some(selector)),
            "shop",
            None
        ));
        let expression = json!({"matchExpressions": [{"key": "team", "operator": "In", "values": ["web", "docs"]}]});
        assert!(allows_namespace(
            &instance("Selector", Some(expression)),
            "shop",
            Some(&labels)
        ));
    }

    #[test]
    fn the_union_of_events_covers_enabled_webhooks_of_this_instance_only() {
        let webhooks = [
            webhook_yaml(include_str!(
                "../../tests/fixtures/controller/webhook-articles.yaml"
            )),
            webhook_yaml(include_str!(
                "../../tests/fixtures/controller/webhook-comments.yaml"
            )),
            webhook_yaml(include_str!(
                "../../tests/fixtures/controller/webhook-disabled.yaml"
            )),
            webhook_yaml(include_str!(
                "../../tests/fixtures/controller/webhook-other-instance.yaml"
            )),
        ];
        let events = subscribed_events(&ObjectKey::new("web", "cms"), &webhooks);
        assert_eq!(
            events.into_iter().collect::<Vec<_>>(),
            ["entry.create", "entry.publish", "entry.update"]
        );
    }

    #[test]
    fn a_webhook_refers_to_its_own_namespace_unless_told_otherwise() {
        let local = webhook_yaml(include_str!(
            "../../tests/fixtures/controller/webhook-articles.yaml"
        ));
        assert_eq!(referenced_instance(&local), "web/cms");
        let remote = webhook_yaml(include_str!(
            "../../tests/fixtures/controller/webhook-other-instance.yaml"
        ));
        assert_eq!(referenced_instance(&remote), "cms-system/shared");
        // A file without namespaces (local mode) refers within `default`, as kubectl applies it.
        let mut unplaced = local.clone();
        unplaced.metadata.namespace = None;
        assert_eq!(referenced_instance(&unplaced), "default/cms");
    }

    #[test]
    fn every_secret_reference_is_fetched() {
        let crm = webhook_yaml(include_str!("../../examples/crm-sync.yaml"));
        let names: Vec<String> = secret_refs(&crm.spec)
            .iter()
            .map(|r| format!("{}/{}", r.name, r.key))
            .collect();
        assert_eq!(names, ["crm-api/token", "crm-api/signing-secret"]);
        let site = webhook_yaml(include_str!("../../examples/nextjs-revalidation.yaml"));
        assert_eq!(secret_refs(&site.spec).len(), 1);
    }
}
