//! Where the receiver's configuration comes from: a [`ConfigSource`] publishes [`Snapshot`]s —
//! which instances exist with which shared secrets, and their compiled webhooks — and the
//! receiver always works on the latest one. In a cluster a Kubernetes reflector is the source;
//! [`ManifestFile`] reads the same manifests from a file; tests publish snapshots by hand through
//! [`StaticSource`].

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Arc,
};

use tokio::sync::watch;

use crate::{
    api::shared_secret::{self, CURRENT_KEY},
    api::{SecretKeyRef, StrapiInstance},
    config::{
        CompiledWebhook, InMemorySecrets, SecretResolver, ValidationErrors, compile_webhook,
        egress_rules,
    },
    key::ObjectKey,
    manifests::{Manifests, Problems},
    queue::{KnownInstance, KnownInstances, Queue},
};

/// Everything the receiver needs to authenticate, route and deliver, at one moment.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// False until the source has loaded everything once; until then the receiver is not ready
    /// and does not dead-letter deliveries of webhooks it has not seen yet.
    pub synced: bool,
    /// Instances by `namespace/name`, with the shared secrets accepted from them.
    pub instances: BTreeMap<String, Vec<String>>,
    /// The `metadata.generation` of each instance in [`Snapshot::instances`], where known
    /// (reported on the admin API so the controller knows what the receiver routes with).
    pub instance_generations: BTreeMap<String, i64>,
    /// Compiled webhooks by `namespace/name`.
    pub webhooks: BTreeMap<String, Arc<CompiledWebhook>>,
}

impl Snapshot {
    /// A synced snapshot of these instances and webhooks.
    pub fn new(
        instances: BTreeMap<String, Vec<String>>,
        webhooks: impl IntoIterator<Item = CompiledWebhook>,
    ) -> Self {
        let webhooks = webhooks
            .into_iter()
            .map(|webhook| (webhook.key.clone(), Arc::new(webhook)))
            .collect();
        Self {
            synced: true,
            instances,
            instance_generations: BTreeMap::new(),
            webhooks,
        }
    }

    /// This snapshot, recording the `metadata.generation` of its instances.
    pub fn with_instance_generations(mut self, generations: BTreeMap<String, i64>) -> Self {
        self.instance_generations = generations;
        self
    }

    /// What ingest needs to authenticate each instance's calls after a restart, before the live
    /// configuration has loaded: digests of the shared secrets and the generation.
    pub fn known_instances(&self) -> KnownInstances {
        self.instances
            .iter()
            .map(|(instance, secrets)| {
                let known = KnownInstance {
                    secret_digests: secrets
                        .iter()
                        .map(|secret| secret_digest(secret.as_bytes()))
                        .collect(),
                    generation: self.instance_generations.get(instance).copied(),
                };
                (instance.clone(), known)
            })
            .collect()
    }

    /// The webhooks that route events of `instance`.
    pub fn webhooks_of<'a>(
        &'a self,
        instance: &'a str,
    ) -> impl Iterator<Item = &'a Arc<CompiledWebhook>> + 'a {
        self.webhooks
            .values()
            .filter(move |webhook| webhook.instance == instance)
    }
}

/// Lowercase hex SHA-256 of a shared secret, as [`KnownInstance::secret_digests`] holds it.
pub fn secret_digest(secret: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, secret)
        .as_ref()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Saves the ingest part of every loaded snapshot with the queue whenever it changes, so a
/// restarted receiver answers known instances before its source has loaded again. Runs until
/// `config`'s sender is gone or `stopping` turns true. A failed save is logged and tried again
/// with the next change or after a short wait.
pub async fn persist_known_instances(
    queue: Arc<dyn Queue>,
    mut config: watch::Receiver<Arc<Snapshot>>,
    mut stopping: watch::Receiver<bool>,
) {
    let mut saved = None;
    loop {
        let snapshot = config.borrow_and_update().clone();
        if snapshot.synced {
            let known = snapshot.known_instances();
            if saved.as_ref() != Some(&known) {
                match queue.save_known_instances(known.clone()).await {
                    Ok(()) => saved = Some(known),
                    Err(error) => {
                        tracing::warn!(%error, "saving the known instances failed; trying again");
                        tokio::select! {
                            () = tokio::time::sleep(std::time::Duration::from_secs(1)) => continue,
                            _ = stopping.wait_for(|stop| *stop) => return,
                        }
                    }
                }
            }
        }
        tokio::select! {
            changed = config.changed() => if changed.is_err() { return },
            _ = stopping.wait_for(|stop| *stop) => return,
        }
    }
}

/// Publishes configuration snapshots to the receiver.
pub trait ConfigSource: Send + Sync {
    /// A receiver of every new snapshot; the current one is available at once.
    fn snapshots(&self) -> watch::Receiver<Arc<Snapshot>>;
}

/// A source whose snapshots are set by its owner: tests, and sources built on top of it.
#[derive(Debug)]
pub struct StaticSource {
    sender: watch::Sender<Arc<Snapshot>>,
}

impl StaticSource {
    /// A source publishing `snapshot`.
    pub fn new(snapshot: Snapshot) -> Self {
        Self {
            sender: watch::Sender::new(Arc::new(snapshot)),
        }
    }

    /// Publishes a new snapshot.
    pub fn publish(&self, snapshot: Snapshot) {
        self.sender.send_replace(Arc::new(snapshot));
    }
}

impl ConfigSource for StaticSource {
    fn snapshots(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.sender.subscribe()
    }
}

/// Why a manifest file could not become a snapshot.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The file could not be read, or a document in it is not one the API server would admit.
    #[error("reading the manifests:\n{0}")]
    Read(#[source] Problems),
    /// An instance lacks its receiver Secret.
    #[error("{path}: StrapiInstance {instance}: {message}")]
    SharedSecret {
        /// The file.
        path: PathBuf,
        /// The instance.
        instance: String,
        /// What is missing.
        message: String,
    },
    /// An instance's `spec.egress` does not parse.
    #[error("{path}: StrapiInstance {instance}: {message}")]
    Egress {
        /// The file.
        path: PathBuf,
        /// The instance.
        instance: String,
        /// Which entry is wrong.
        message: String,
    },
    /// A webhook does not compile.
    #[error("{path}: StrapiWebhook {webhook}: {errors}")]
    Webhook {
        /// The file.
        path: PathBuf,
        /// The webhook.
        webhook: String,
        /// Every problem, by field.
        errors: ValidationErrors,
    },
}

/// A file of `StrapiInstance`s, `StrapiWebhook`s and `Secret`s, read once at start through the
/// shared loader ([`Manifests`]; other kinds are skipped). Each instance's shared secrets come
/// from the Secret the controller would create for it ([`shared_secret::name`]): key
/// [`CURRENT_KEY`], and [`PREVIOUS_KEY`] until [`PREVIOUS_EXPIRES_KEY`] (RFC 3339) if set.
#[derive(Debug)]
pub struct ManifestFile {
    source: StaticSource,
}

impl ManifestFile {
    /// Reads and compiles the file; every problem is an error, nothing is half-loaded.
    pub fn load(path: &Path) -> Result<Self, ManifestError> {
        let manifests = Manifests::read(&[path.to_owned()]).map_err(ManifestError::Read)?;
        let secrets = &manifests.secrets;
        let mut accepted = BTreeMap::new();
        let mut generations = BTreeMap::new();
        let mut egress = BTreeMap::new();
        for instance in &manifests.instances {
            let instance = &instance.object;
            let key = ObjectKey::of(instance).to_string();
            generations.insert(
                key.clone(),
                instance.metadata.generation.unwrap_or_default(),
            );
            let shared = accepted_secrets(instance, secrets).map_err(|message| {
                ManifestError::SharedSecret {
                    path: path.to_owned(),
                    instance: key.clone(),
                    message,
                }
            })?;
            let rules = egress_rules(instance.spec.egress.as_ref()).map_err(|message| {
                ManifestError::Egress {
                    path: path.to_owned(),
                    instance: key.clone(),
                    message,
                }
            })?;
            egress.insert(key.clone(), rules);
            accepted.insert(key, shared);
        }
        let mut compiled = Vec::new();
        for webhook in &manifests.webhooks {
            let meta = &webhook.object.metadata;
            let key = ObjectKey::of_meta(meta);
            let generation = meta.generation.unwrap_or_default();
            let mut webhook = compile_webhook(
                &key.namespace,
                &key.name,
                generation,
                &webhook.object.spec,
                secrets,
            )
            .map_err(|errors| ManifestError::Webhook {
                path: path.to_owned(),
                webhook: key.to_string(),
                errors,
            })?;
            if let Some(rules) = egress.get(&webhook.instance) {
                webhook.hold_to(rules);
            }
            compiled.push(webhook);
        }
        Ok(Self {
            source: StaticSource::new(
                Snapshot::new(accepted, compiled).with_instance_generations(generations),
            ),
        })
    }
}

/// The shared secrets the receiver accepts from `instance`: the current one, and the previous
/// one until it expires.
fn accepted_secrets(
    instance: &StrapiInstance,
    secrets: &InMemorySecrets,
) -> Result<Vec<String>, String> {
    let ObjectKey { namespace, name } = ObjectKey::of(instance);
    let secret_name = shared_secret::name(&name);
    let read = |key: &str| {
        secrets.resolve(
            &namespace,
            &SecretKeyRef {
                name: secret_name.clone(),
                key: key.into(),
            },
        )
    };
    // The file must hold the current value; without it no call could be accepted.
    read(CURRENT_KEY).map_err(|error| error.to_string())?;
    Ok(shared_secret::accepted(
        |key| read(key).ok(),
        k8s_openapi::jiff::Timestamp::now(),
    ))
}

impl ConfigSource for ManifestFile {
    fn snapshots(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.source.snapshots()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INSTANCE: &str = "
apiVersion: webhooks.strapi-operator.dev/v1alpha1
kind: StrapiInstance
metadata: { name: strapi, namespace: cms }
spec:
  url: http://127.0.0.1:1337
  auth: { apiToken: { name: admin, key: token } }
";

    fn load(text: &str) -> Result<ManifestFile, ManifestError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("manifests.yaml");
        std::fs::write(&path, text).unwrap();
        ManifestFile::load(&path)
    }

    #[test]
    fn an_instance_accepts_its_current_and_unexpired_previous_secret() {
        let file = load(&format!(
            "{INSTANCE}---
apiVersion: v1
kind: Secret
metadata: {{ name: strapi-strapi-webhook-secret, namespace: cms }}
stringData: {{ secret: new, previous: old, previous-expires-at: '2999-01-01T00:00:00Z' }}
"
        ))
        .unwrap();
        let snapshot = file.snapshots().borrow().clone();
        assert!(snapshot.synced);
        assert_eq!(snapshot.instances["cms/strapi"], ["new", "old"]);
    }

    #[test]
    fn an_expired_previous_secret_is_no_longer_accepted() {
        let file = load(&format!(
            "{INSTANCE}---
apiVersion: v1
kind: Secret
metadata: {{ name: strapi-strapi-webhook-secret, namespace: cms }}
stringData: {{ secret: new, previous: old, previous-expires-at: '2000-01-01T00:00:00Z' }}
"
        ))
        .unwrap();
        assert_eq!(file.snapshots().borrow().instances["cms/strapi"], ["new"]);
    }

    #[test]
    fn a_missing_shared_secret_names_the_instance_and_the_secret() {
        let error = load(INSTANCE).unwrap_err().to_string();
        assert!(error.contains("StrapiInstance cms/strapi"), "{error}");
        assert!(error.contains("strapi-strapi-webhook-secret"), "{error}");
    }

    #[test]
    fn other_kinds_are_skipped_and_data_is_read_like_string_data() {
        let file = load(&format!(
            "{INSTANCE}---
apiVersion: v1
kind: ConfigMap
metadata: {{ name: x }}
---
apiVersion: v1
kind: Secret
metadata: {{ name: strapi-strapi-webhook-secret, namespace: cms }}
data: {{ secret: bmV3 }}
"
        ))
        .unwrap();
        assert_eq!(file.snapshots().borrow().instances["cms/strapi"], ["new"]);
    }

    #[test]
    fn a_misspelt_field_is_refused_with_its_line() {
        let error = load(&INSTANCE.replace("url:", "urll:"))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("manifests.yaml:6: spec.urll: unknown field"),
            "{error}"
        );
    }
}
