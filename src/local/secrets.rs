//! Secret values in local mode, where there is no API server: the `Secret` manifests found next
//! to the configuration, overridden by environment variables, and the shared secrets local mode
//! generates itself and keeps in its data folder so that a restart does not re-register Strapi.
//!
//! An environment variable overrides one key of one Secret. Its name is
//! `SWO_SECRET_<NAMESPACE>_<NAME>_<KEY>`, upper-cased, with every character that is not a letter
//! or a digit replaced by `_`: key `url` of Secret `web/slack-webhook` is
//! `SWO_SECRET_WEB_SLACK_WEBHOOK_URL`.

use std::{
    collections::BTreeMap,
    io::Write,
    path::{Path, PathBuf},
};

use rand::distr::{Alphanumeric, SampleString};

use crate::{
    api::SecretKeyRef,
    config::{InMemorySecrets, SecretError, SecretResolver},
};

/// Prefix of the environment variables that hold Secret values.
pub const ENV_PREFIX: &str = "SWO_SECRET_";

/// The environment variable that overrides `key` of Secret `namespace/name`.
pub fn env_name(namespace: &str, name: &str, key: &str) -> String {
    let mut variable = ENV_PREFIX.to_owned();
    let parts = [namespace, name, key].join("_");
    variable.extend(parts.chars().map(|character| {
        if character.is_ascii_alphanumeric() {
            character.to_ascii_uppercase()
        } else {
            '_'
        }
    }));
    variable
}

/// Secrets from manifests, overridden by environment variables (see the module docs).
#[derive(Clone, Debug)]
pub struct LocalSecrets {
    files: InMemorySecrets,
    env: BTreeMap<String, String>,
}

impl LocalSecrets {
    /// Secrets read from files, with the `SWO_SECRET_*` variables of `env` on top.
    pub fn new(files: InMemorySecrets, env: impl IntoIterator<Item = (String, String)>) -> Self {
        let env = env
            .into_iter()
            .filter(|(name, _)| name.starts_with(ENV_PREFIX))
            .collect();
        Self { files, env }
    }
}

impl SecretResolver for LocalSecrets {
    fn resolve(&self, namespace: &str, reference: &SecretKeyRef) -> Result<String, SecretError> {
        let variable = env_name(namespace, &reference.name, &reference.key);
        match self.env.get(&variable) {
            Some(value) => Ok(value.clone()),
            None => self.files.resolve(namespace, reference),
        }
    }
}

/// Why the shared secrets in the data folder could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum SharedSecretsError {
    /// The file exists but could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not what local mode writes.
    #[error("{path} is not a JSON object of instance → secret (delete it to start over): {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The JSON error.
        source: serde_json::Error,
    },
    /// The file could not be written.
    #[error("writing {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// The shared secret of each instance (`namespace/name` → value), kept in a JSON file that only
/// the owner may read.
#[derive(Debug)]
pub struct SharedSecrets {
    path: PathBuf,
    secrets: BTreeMap<String, String>,
}

impl SharedSecrets {
    /// Name of the file in the data folder.
    pub const FILE: &str = "shared-secrets.json";

    /// Opens the store in `data_dir`; a missing file is an empty store.
    pub fn open(data_dir: &Path) -> Result<Self, SharedSecretsError> {
        let path = data_dir.join(Self::FILE);
        let secrets = match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|source| SharedSecretsError::Parse {
                    path: path.clone(),
                    source,
                })?
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(source) => return Err(SharedSecretsError::Read { path, source }),
        };
        Ok(Self { path, secrets })
    }

    /// The secret of `instance`, generated and saved on first use.
    pub fn get_or_create(&mut self, instance: &str) -> Result<String, SharedSecretsError> {
        if let Some(secret) = self.secrets.get(instance) {
            return Ok(secret.clone());
        }
        // The controller generates its secrets the same way: 48 alphanumerics, ~285 bits.
        let secret = Alphanumeric.sample_string(&mut rand::rng(), 48);
        self.secrets.insert(instance.to_owned(), secret.clone());
        self.save()?;
        Ok(secret)
    }

    fn save(&self) -> Result<(), SharedSecretsError> {
        let write_error = |source| SharedSecretsError::Write {
            path: self.path.clone(),
            source,
        };
        // Write aside and rename, so a crash never leaves a truncated file behind.
        let temporary = self.path.with_extension("json.tmp");
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&temporary).map_err(write_error)?;
        let json = serde_json::to_vec_pretty(&self.secrets)
            .expect("a map of strings always serialises to JSON");
        file.write_all(&json).map_err(write_error)?;
        file.sync_all().map_err(write_error)?;
        std::fs::rename(&temporary, &self.path).map_err(write_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_names_are_upper_case_with_underscores() {
        assert_eq!(
            env_name("web", "slack-webhook", "url"),
            "SWO_SECRET_WEB_SLACK_WEBHOOK_URL"
        );
        assert_eq!(
            env_name("web", "crm-api", "signing-secret"),
            "SWO_SECRET_WEB_CRM_API_SIGNING_SECRET"
        );
    }

    #[test]
    fn the_environment_overrides_files() {
        let mut files = InMemorySecrets::new();
        files
            .insert("web", "crm-api", "token", "from-file")
            .insert("web", "crm-api", "other", "kept");
        let secrets = LocalSecrets::new(
            files,
            [(
                "SWO_SECRET_WEB_CRM_API_TOKEN".to_owned(),
                "from-env".to_owned(),
            )],
        );
        let get = |key: &str| {
            secrets.resolve(
                "web",
                &SecretKeyRef {
                    name: "crm-api".into(),
                    key: key.into(),
                },
            )
        };
        assert_eq!(get("token").unwrap(), "from-env");
        assert_eq!(get("other").unwrap(), "kept");
    }

    #[test]
    fn shared_secrets_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let first = SharedSecrets::open(dir.path())
            .unwrap()
            .get_or_create("web/cms")
            .unwrap();
        assert_eq!(first.len(), 48);
        let mut reopened = SharedSecrets::open(dir.path()).unwrap();
        assert_eq!(reopened.get_or_create("web/cms").unwrap(), first);
        assert_ne!(reopened.get_or_create("web/other").unwrap(), first);
    }
}
