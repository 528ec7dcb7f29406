//! Reads from the Kubernetes API that the controller and the receiver's cluster source both
//! need, so each rule has one home while the two stay apart (they meet only through the CRDs
//! and the receiver's admin API).

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::Namespace;
use kube::{Api, Client};

use crate::{
    api::{NamespacesFrom, StrapiInstance},
    config::allows_namespace,
};

/// Namespace labels read during one pass over many webhooks, so each namespace is read once.
#[derive(Debug, Default)]
pub struct NamespaceLabels(HashMap<String, Option<BTreeMap<String, String>>>);

impl NamespaceLabels {
    /// Whether `instance` lets StrapiWebhooks in `namespace` use it, reading the namespace's
    /// labels only when its rule is a label selector. A missing namespace has no labels.
    pub async fn allows(
        &mut self,
        client: &Client,
        instance: &StrapiInstance,
        namespace: &str,
    ) -> Result<bool, kube::Error> {
        let labels = match instance.spec.allowed_namespaces.from {
            NamespacesFrom::Selector => self.of(client, namespace).await?,
            NamespacesFrom::Same | NamespacesFrom::All => None,
        };
        Ok(allows_namespace(instance, namespace, labels.as_ref()))
    }

    async fn of(
        &mut self,
        client: &Client,
        namespace: &str,
    ) -> Result<Option<BTreeMap<String, String>>, kube::Error> {
        if let Some(labels) = self.0.get(namespace) {
            return Ok(labels.clone());
        }
        let labels = Api::<Namespace>::all(client.clone())
            .get_opt(namespace)
            .await?
            .and_then(|found| found.metadata.labels);
        self.0.insert(namespace.to_owned(), labels.clone());
        Ok(labels)
    }
}
