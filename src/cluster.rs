//! Reads from the Kubernetes API that the controller and the receiver's cluster source both
//! need, so each rule has one home while the two stay apart (they meet only through the CRDs
//! and the receiver's admin API).

use std::collections::{BTreeMap, HashMap, btree_map::Entry};

use k8s_openapi::{
    ByteString,
    api::core::v1::{Namespace, Secret},
};
use kube::{Api, Client};

use crate::{
    api::{NamespacesFrom, SecretKeyRef, StrapiInstance},
    config::{SecretError, SecretResolver, allows_namespace},
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

/// The text of one key of a Secret; `None` when the key is missing or not UTF-8.
pub fn secret_text(secret: &Secret, key: &str) -> Option<String> {
    let ByteString(bytes) = secret.data.as_ref()?.get(key)?;
    String::from_utf8(bytes.clone()).ok()
}

/// Secrets fetched up front (a `StrapiWebhook`'s sink Secrets, a `StrapiInstance`'s admin
/// Secret), so that compiling and reading credentials stay pure.
#[derive(Default)]
pub struct FetchedSecrets {
    secrets: BTreeMap<(String, String), Option<Secret>>,
}

impl FetchedSecrets {
    /// Fetches every Secret `refs` names in `namespace`. A missing Secret is remembered as
    /// missing (compiling names it); a failed read is an error, never taken for a missing one.
    pub async fn fetch(
        client: &Client,
        namespace: &str,
        refs: impl IntoIterator<Item = &SecretKeyRef>,
    ) -> Result<Self, kube::Error> {
        let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
        let mut fetched = FetchedSecrets::default();
        for reference in refs {
            if let Entry::Vacant(slot) = fetched
                .secrets
                .entry((namespace.to_owned(), reference.name.clone()))
            {
                slot.insert(api.get_opt(&reference.name).await?);
            }
        }
        Ok(fetched)
    }

    /// Every text value fetched, as `(name, key) → value`: equal values compile equally.
    pub fn values(&self) -> BTreeMap<(String, String), String> {
        self.secrets
            .iter()
            .filter_map(|((_, name), secret)| Some((name, secret.as_ref()?.data.as_ref()?)))
            .flat_map(|(name, data)| {
                data.iter().filter_map(move |(key, ByteString(bytes))| {
                    let value = String::from_utf8(bytes.clone()).ok()?;
                    Some(((name.clone(), key.clone()), value))
                })
            })
            .collect()
    }
}

impl SecretResolver for FetchedSecrets {
    fn resolve(&self, namespace: &str, reference: &SecretKeyRef) -> Result<String, SecretError> {
        match self
            .secrets
            .get(&(namespace.to_owned(), reference.name.clone()))
        {
            Some(Some(secret)) => {
                let present = secret
                    .data
                    .as_ref()
                    .is_some_and(|data| data.contains_key(&reference.key));
                secret_text(secret, &reference.key).ok_or_else(|| {
                    let (namespace, name, key) = (
                        namespace.to_owned(),
                        reference.name.clone(),
                        reference.key.clone(),
                    );
                    match present {
                        true => SecretError::NotText {
                            namespace,
                            name,
                            key,
                        },
                        false => SecretError::KeyMissing {
                            namespace,
                            name,
                            key,
                        },
                    }
                })
            }
            _ => Err(SecretError::NotFound {
                namespace: namespace.to_owned(),
                name: reference.name.clone(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fetched_key_is_missing_not_text_or_read() {
        let secret = Secret {
            data: Some(BTreeMap::from([
                ("token".to_owned(), ByteString(b"t0ken".to_vec())),
                ("binary".to_owned(), ByteString(vec![0xff, 0xfe])),
            ])),
            ..Secret::default()
        };
        let fetched = FetchedSecrets {
            secrets: BTreeMap::from([
                (("web".to_owned(), "crm".to_owned()), Some(secret)),
                (("web".to_owned(), "gone".to_owned()), None),
            ]),
        };
        let read = |name: &str, key: &str| {
            let reference = SecretKeyRef {
                name: name.into(),
                key: key.into(),
            };
            fetched
                .resolve("web", &reference)
                .map_err(|error| error.to_string())
        };
        assert_eq!(read("crm", "token"), Ok("t0ken".to_owned()));
        assert_eq!(
            read("crm", "binary"),
            Err("Secret web/crm key \"binary\" is not UTF-8 text".to_owned())
        );
        assert_eq!(
            read("crm", "other"),
            Err("Secret web/crm has no key \"other\"".to_owned())
        );
        assert_eq!(
            read("gone", "token"),
            Err("Secret web/gone not found".to_owned())
        );
        assert_eq!(
            fetched.values(),
            BTreeMap::from([(("crm".to_owned(), "token".to_owned()), "t0ken".to_owned())])
        );
    }
}
