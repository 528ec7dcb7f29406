//! Reading the Secret values that sinks need, behind a trait so the controller (kube), the
//! receiver (a reflector cache) and local mode (files or environment) each bring their own.

use std::collections::BTreeMap;

use crate::api::SecretKeyRef;

/// Reads one key of a Secret.
pub trait SecretResolver {
    /// The value of `reference` in `namespace`, as UTF-8 text.
    fn resolve(&self, namespace: &str, reference: &SecretKeyRef) -> Result<String, SecretError>;
}

/// Why a Secret value could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// No such Secret.
    #[error("Secret {namespace}/{name} not found")]
    NotFound {
        /// Namespace looked in.
        namespace: String,
        /// Secret name.
        name: String,
    },
    /// The Secret exists but lacks the key.
    #[error("Secret {namespace}/{name} has no key {key:?}")]
    KeyMissing {
        /// Namespace.
        namespace: String,
        /// Secret name.
        name: String,
        /// The missing key.
        key: String,
    },
    /// The value is not UTF-8 text.
    #[error("Secret {namespace}/{name} key {key:?} is not UTF-8 text")]
    NotText {
        /// Namespace.
        namespace: String,
        /// Secret name.
        name: String,
        /// The key.
        key: String,
    },
    /// The store could not be read (e.g. the API server is unreachable).
    #[error("reading Secret {namespace}/{name} failed: {message}")]
    Unavailable {
        /// Namespace.
        namespace: String,
        /// Secret name.
        name: String,
        /// What went wrong.
        message: String,
    },
}

/// Secrets held in memory: `(namespace, name) → key → value`. For local mode and tests.
#[derive(Clone, Debug, Default)]
pub struct InMemorySecrets {
    secrets: BTreeMap<(String, String), BTreeMap<String, String>>,
}

impl InMemorySecrets {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets one key of a Secret, creating the Secret if needed.
    pub fn insert(
        &mut self,
        namespace: &str,
        name: &str,
        key: &str,
        value: impl Into<String>,
    ) -> &mut Self {
        self.secrets
            .entry((namespace.to_owned(), name.to_owned()))
            .or_default()
            .insert(key.to_owned(), value.into());
        self
    }
}

impl SecretResolver for InMemorySecrets {
    fn resolve(&self, namespace: &str, reference: &SecretKeyRef) -> Result<String, SecretError> {
        let secret = self
            .secrets
            .get(&(namespace.to_owned(), reference.name.clone()))
            .ok_or_else(|| SecretError::NotFound {
                namespace: namespace.to_owned(),
                name: reference.name.clone(),
            })?;
        secret
            .get(&reference.key)
            .cloned()
            .ok_or_else(|| SecretError::KeyMissing {
                namespace: namespace.to_owned(),
                name: reference.name.clone(),
                key: reference.key.clone(),
            })
    }
}
