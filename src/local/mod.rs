//! Local mode: the whole product without a cluster. `strapi-webhook-operator local -f <paths>`
//! reads the same `StrapiInstance`, `StrapiWebhook` and `Secret` YAML that goes to a cluster
//! ([`crate::manifests`]), compiles it as `validate` and the controller do ([`compile_in_files`]) into a receiver [`Snapshot`],
//! runs the same receiver ([`ReceiverState`] and [`receiver::serve`]) on an SQLite queue in a
//! data folder, and registers each instance's catch-all webhook with the same
//! [`crate::registration`] code the controller uses ([`register`]).
//!
//! The files are watched. Every change reloads all of them; only a configuration in which
//! everything reads and compiles is published, so a typo is reported (file, line, reason) while
//! the last good configuration keeps serving. Registrations stay in Strapi on exit, so Strapi
//! keeps calling the receiver after either restarts, unless `--cleanup` asks to remove them.

pub mod register;
pub mod secrets;

use std::{
    collections::BTreeMap,
    future::Future,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use notify::{RecursiveMode, Watcher};
use tokio::sync::{mpsc, oneshot};

use crate::manifests::{self, Manifests, Problems};
use crate::validate::compile_in_files;
use crate::{
    config::{credentials, referenced_instance, subscribed_events},
    http::AdminToken,
    key::ObjectKey,
    queue::{QueueError, sqlite::SqliteQueue},
    receiver::{
        self, ReceiverError, ReceiverSettings, ReceiverState,
        source::{Snapshot, StaticSource},
    },
    repair::{self, CheckSettings, RepairClient, Schedule, Target, routed_models},
    sinks::EgressBase,
};
use register::{LocalInstance, Registrar};
use secrets::{LocalSecrets, SharedSecrets, SharedSecretsError};

/// The file in the data folder holding the admin API token, unless one is given.
pub const ADMIN_TOKEN_FILE: &str = "admin-token";

/// After a failed registration, how long until the next attempt.
const RETRY_INTERVAL: Duration = Duration::from_secs(10);
/// Editors write a file in several steps; changes this close together are one reload.
const SETTLE: Duration = Duration::from_millis(300);

/// What `strapi-webhook-operator local` was asked to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// Files and folders of YAML manifests (folders: their `*.yaml`/`*.yml` files).
    pub paths: Vec<PathBuf>,
    /// Where the queue and the generated shared secrets live.
    pub data_dir: PathBuf,
    /// Address of the ingest port Strapi calls.
    pub ingest_addr: String,
    /// Address of the admin port (probes, metrics, delivery API).
    pub admin_addr: String,
    /// Base URL at which Strapi reaches the ingest port; `http://<ingest address>` if unset.
    pub receiver_url: Option<String>,
    /// Remove the registrations from Strapi on exit.
    pub cleanup: bool,
    /// How long to wait for the receiver to record Strapi's test call.
    pub verify_timeout: Duration,
    /// Receiver knobs.
    pub settings: ReceiverSettings,
    /// How gap repair checks compare.
    pub repair: CheckSettings,
}

/// Why local mode could not start or stopped with an error. Each variant names the step.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// The data folder could not be created.
    #[error("creating the data folder {path}: {source}")]
    DataDir {
        /// The folder.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The admin API token could not be read or saved.
    #[error("keeping the admin API token: {0}")]
    AdminToken(#[source] crate::http::AdminTokenError),
    /// The generated shared secrets could not be read or saved.
    #[error("keeping the shared secrets: {0}")]
    SharedSecrets(#[from] SharedSecretsError),
    /// The queue could not be opened.
    #[error("opening the queue: {0}")]
    Queue(#[from] QueueError),
    /// The configuration did not load at start, so there is no last good one to run.
    #[error("loading the configuration:\n{0}")]
    Config(Problems),
    /// The receiver could not start or failed.
    #[error("running the receiver: {0}")]
    Receiver(#[from] ReceiverError),
    /// The file watcher could not be created.
    #[error("setting up the file watcher: {0}")]
    Watcher(#[source] notify::Error),
    /// The files could not be watched.
    #[error("watching {path} for changes: {source}")]
    Watch {
        /// The file or folder.
        path: PathBuf,
        /// The watcher's error.
        source: notify::Error,
    },
}

/// A configuration in which everything compiled: what the receiver serves and what each Strapi
/// should hold.
#[derive(Clone, Debug)]
pub struct Config {
    /// The receiver's snapshot.
    pub snapshot: Snapshot,
    /// The instances to register.
    pub instances: Vec<LocalInstance>,
    /// Each compiled webhook's spec (as JSON), to tell which ones a reload changed.
    pub specs: BTreeMap<String, String>,
}

impl Config {
    /// The webhooks added, changed or removed since `previous`, by `namespace/name`.
    pub fn changed_since(&self, previous: &Config) -> Vec<String> {
        let keys: std::collections::BTreeSet<&String> =
            self.specs.keys().chain(previous.specs.keys()).collect();
        keys.into_iter()
            .filter(|key| self.specs.get(*key) != previous.specs.get(*key))
            .cloned()
            .collect()
    }
}

/// Reads and compiles the files. `env` supplies `SWO_SECRET_*` overrides; shared secrets come
/// from (and new ones go to) `shared`. Fails with every problem found.
pub fn load(
    paths: &[PathBuf],
    env: &[(String, String)],
    shared: &mut SharedSecrets,
) -> Result<Config, Problems> {
    let manifests = Manifests::read(paths)?;
    let secrets = LocalSecrets::new(manifests.secrets.clone(), env.iter().cloned());
    let mut problems = Vec::new();
    let mut accepted = Vec::new();
    let mut compiled = Vec::new();
    let mut specs = BTreeMap::new();
    // Every sink of a local setup runs on this machine, so loopback is allowed; the receiver's
    // own ports are refused when it connects.
    let egress = EgressBase {
        allow_loopback: true,
        ..EgressBase::default()
    };
    for webhook in &manifests.webhooks {
        let key = ObjectKey::of(&webhook.object).to_string();
        let target = referenced_instance(&webhook.object);
        let Some(instance) = manifests.instance(&target) else {
            problems.push(webhook.problem_at(
                "spec.instanceRef",
                format!("StrapiInstance {target} is not defined in the files"),
            ));
            continue;
        };
        match compile_in_files(webhook, Some(instance), &secrets, &egress) {
            Ok(webhook_config) => {
                for warning in &webhook_config.warnings {
                    tracing::warn!(webhook = %key, %warning, "configuration warning");
                }
                compiled.push(webhook_config);
                accepted.push(&webhook.object);
                let spec = serde_json::to_string(&webhook.object.spec).unwrap_or_default();
                specs.insert(key.clone(), spec);
            }
            Err(found) => problems.extend(found),
        }
    }
    let mut instances = Vec::new();
    let mut accepted_secrets = BTreeMap::new();
    for instance in &manifests.instances {
        let key = ObjectKey::of(&instance.object);
        let (credentials, credentials_values) = match credentials(&instance.object, &secrets) {
            Ok(resolved) => resolved,
            Err(error) => {
                problems.push(instance.problem_at(
                    "spec.auth",
                    format!("StrapiInstance {key}: spec.auth: {error}"),
                ));
                continue;
            }
        };
        let shared_secret = match shared.get_or_create(&key.to_string()) {
            Ok(secret) => secret,
            Err(error) => {
                problems.push(instance.problem(format!("StrapiInstance {key}: {error}")));
                continue;
            }
        };
        accepted_secrets.insert(key.to_string(), vec![shared_secret.clone()]);
        let models = routed_models(
            accepted
                .iter()
                .filter(|webhook| webhook.spec.enabled && referenced_instance(webhook) == key)
                .flat_map(|webhook| &webhook.spec.routes)
                .map(|route| (route.matches.models.as_ref(), route.matches.uids.as_ref())),
        );
        instances.push(LocalInstance {
            events: subscribed_events(&key, accepted.iter().copied()),
            repair_interval: instance.object.spec.repair_interval.into(),
            models,
            url: instance.object.spec.url.clone(),
            credentials,
            credentials_values,
            shared_secret,
            resync_interval: instance.object.spec.resync_interval.into(),
            key,
        });
    }
    if !problems.is_empty() {
        return Err(Problems(problems));
    }
    Ok(Config {
        snapshot: Snapshot::new(accepted_secrets, compiled),
        instances,
        specs,
    })
}

/// Watches `paths` and sends `()` whenever a YAML file among them may have changed.
fn watch(
    paths: &[PathBuf],
) -> Result<(notify::RecommendedWatcher, mpsc::Receiver<()>), LocalError> {
    let (changed, changes) = mpsc::channel(1);
    let files: Vec<PathBuf> = paths
        .iter()
        .filter(|path| !path.is_dir())
        .filter_map(|path| std::path::absolute(path).ok())
        .collect();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let relevant = match event {
            Ok(event) => {
                !event.kind.is_access()
                    && event
                        .paths
                        .iter()
                        .any(|path| manifests::is_yaml(path) || files.contains(path))
            }
            // A lost event may have been a change; reloading is harmless.
            Err(_) => true,
        };
        if relevant {
            // A full channel already holds a pending reload, which will read this change too.
            let _ = changed.try_send(());
        }
    })
    .map_err(LocalError::Watcher)?;
    for path in paths {
        // A file is watched through its folder: editors replace files by renaming, which would
        // end a watch on the file itself.
        let target = if path.is_dir() {
            path.clone()
        } else {
            std::path::absolute(path)
                .ok()
                .and_then(|path| path.parent().map(Path::to_owned))
                .unwrap_or_else(|| PathBuf::from("."))
        };
        watcher
            .watch(&target, RecursiveMode::NonRecursive)
            .map_err(|source| LocalError::Watch {
                path: target.clone(),
                source,
            })?;
    }
    Ok((watcher, changes))
}

/// Runs local mode until `shutdown` completes. `env` is the process environment (for
/// `SWO_SECRET_*`), passed in so that tests control it.
pub async fn run(
    options: Options,
    env: Vec<(String, String)>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), LocalError> {
    std::fs::create_dir_all(&options.data_dir).map_err(|source| LocalError::DataDir {
        path: options.data_dir.clone(),
        source,
    })?;
    let mut shared = SharedSecrets::open(&options.data_dir)?;
    let mut config = load(&options.paths, &env, &mut shared).map_err(LocalError::Config)?;
    let queue: Arc<dyn crate::queue::Queue> =
        Arc::new(SqliteQueue::open(&options.data_dir.join("queue.db"))?);
    let source = StaticSource::new(config.snapshot.clone());
    let ingest = receiver::bind("ingest", &options.ingest_addr).await?;
    let admin = receiver::bind("admin", &options.admin_addr).await?;
    let token_file = options.data_dir.join(ADMIN_TOKEN_FILE);
    let settings = receiver_settings(&options, &token_file, &ingest, &admin)?;
    let admin_token = settings.admin_token.clone();
    let state = ReceiverState::new(Arc::clone(&queue), &source, settings)?;
    let ingest_address = local_address("ingest", &ingest, &options.ingest_addr)?;
    let admin_address = local_address("admin", &admin, &options.admin_addr)?;
    let receiver_base = options
        .receiver_url
        .clone()
        .unwrap_or_else(|| format!("http://{ingest_address}"));
    let (stop, stopped) = oneshot::channel::<()>();
    let mut server = tokio::spawn(receiver::serve(state, ingest, admin, async move {
        let _ = stopped.await;
    }));
    tracing::info!(
        ingest = %ingest_address,
        admin = %admin_address,
        receiver_url = %receiver_base,
        data = %options.data_dir.display(),
        admin_token = %token_file.display(),
        instances = config.instances.len(),
        webhooks = config.snapshot.webhooks.len(),
        "local mode running"
    );
    warn_if_idle(&config, &options.paths);
    let (_watcher, mut changes) = watch(&options.paths)?;
    let mut registrar = Registrar::new(receiver_base, queue, options.verify_timeout);
    let mut repairer = Repairer {
        client: RepairClient::new(&format!("http://{admin_address}"), admin_token.as_ref()),
        schedule: Schedule::default(),
        settings: options.repair.clone(),
    };
    let mut next_sync = sync_all(&mut registrar, &config.instances).await;
    // This process's receiver just started: what Strapi fired while it was away is checked now.
    let mut next_repair = repairer.run(&mut registrar, &config.instances).await;
    tokio::pin!(shutdown);
    let served = loop {
        tokio::select! {
            () = &mut shutdown => break None,
            served = &mut server => break Some(served),
            Some(()) = changes.recv() => {
                tokio::time::sleep(SETTLE).await;
                while changes.try_recv().is_ok() {}
                let reloaded = Reload { options: &options, env: &env, source: &source };
                if let Some(next) = reloaded.run(&mut shared, &mut config, &mut registrar).await {
                    next_sync = next;
                }
            }
            () = tokio::time::sleep(next_sync) => {
                next_sync = sync_all(&mut registrar, &config.instances).await;
            }
            () = tokio::time::sleep(next_repair) => {
                next_repair = repairer.run(&mut registrar, &config.instances).await;
            }
        }
    };
    let served = match served {
        Some(served) => served,
        None => {
            let _ = stop.send(());
            server.await
        }
    };
    if options.cleanup {
        remove_all(&mut registrar, &config.instances).await;
    }
    // A panicked server task is a bug, not an operational error; surface it as one.
    served.expect("the receiver task does not panic")?;
    Ok(())
}

/// What a reload of the files reads and where it publishes.
struct Reload<'a> {
    options: &'a Options,
    env: &'a [(String, String)],
    source: &'a StaticSource,
}

impl Reload<'_> {
    /// Reads the files again: a configuration that loads replaces `config`, is published to the
    /// receiver and registered (returning when the next registration pass is due); one that
    /// does not is reported and the last good one keeps running.
    async fn run(
        &self,
        shared: &mut SharedSecrets,
        config: &mut Config,
        registrar: &mut Registrar,
    ) -> Option<Duration> {
        let loaded = match load(&self.options.paths, self.env, shared) {
            Ok(loaded) => loaded,
            Err(problems) => {
                tracing::error!(
                    "configuration rejected; the last good configuration keeps running:\n{problems}"
                );
                return None;
            }
        };
        let changed = loaded.changed_since(config);
        *config = loaded;
        self.source.publish(config.snapshot.clone());
        tracing::info!(
            instances = config.instances.len(),
            webhooks = config.snapshot.webhooks.len(),
            "configuration reloaded and applied"
        );
        warn_if_idle(config, &self.options.paths);
        let next_sync = sync_all(registrar, &config.instances).await;
        // The ingest reads the published snapshot for its next event, and Strapi now subscribes
        // to what it routes: from here on the change is in effect.
        tracing::info!(
            changed = ?changed,
            "configuration live: the next event is routed with it"
        );
        Some(next_sync)
    }
}

/// The receiver's settings in local mode: sinks on loopback allowed (every sink of a local
/// setup runs on this machine) but never the receiver's own ports, and an admin token always.
fn receiver_settings(
    options: &Options,
    token_file: &Path,
    ingest: &tokio::net::TcpListener,
    admin: &tokio::net::TcpListener,
) -> Result<ReceiverSettings, LocalError> {
    let mut settings = options.settings.clone();
    settings.egress.allow_loopback = true;
    // The delivery API needs a token here too: any local process or web page could call it.
    if settings.admin_token.is_none() {
        settings.admin_token =
            Some(AdminToken::load_or_create(token_file).map_err(LocalError::AdminToken)?);
    }
    settings
        .egress
        .own_ports
        .extend(receiver::own_ports(ingest, admin));
    Ok(settings)
}

/// The address `listener` (the `what` port, asked for as `address`) is bound to.
fn local_address(
    what: &'static str,
    listener: &tokio::net::TcpListener,
    address: &str,
) -> Result<std::net::SocketAddr, ReceiverError> {
    listener.local_addr().map_err(|source| ReceiverError::Bind {
        what,
        address: address.to_owned(),
        source,
    })
}

/// Removes every instance's registration from its Strapi (`--cleanup`), saying how each went.
async fn remove_all(registrar: &mut Registrar, instances: &[LocalInstance]) {
    for instance in instances {
        match registrar.remove(instance).await {
            Ok(removed) => {
                tracing::info!(instance = %instance.key, removed, "registration removed")
            }
            Err(error) => tracing::error!(instance = %instance.key, %error, "cleanup failed"),
        }
    }
}

/// Gap repair in local mode: the same checks as the controller's, against this process's own
/// receiver through its admin API.
struct Repairer {
    client: RepairClient,
    schedule: Schedule,
    settings: CheckSettings,
}

/// How often the receiver is asked whether it failed to store Strapi's calls.
const RECEIVER_POLL: Duration = Duration::from_secs(5);

impl Repairer {
    /// Checks every instance that is due (all of them when the receiver failed to store calls
    /// since the last look); returns when to look again.
    async fn run(&mut self, registrar: &mut Registrar, instances: &[LocalInstance]) -> Duration {
        if let Ok(state) = self.client.state().await {
            let keys: Vec<String> = instances
                .iter()
                .map(|instance| instance.key.to_string())
                .collect();
            self.schedule
                .observe(state, keys.iter().map(String::as_str));
        }
        let mut next = RECEIVER_POLL;
        for instance in instances {
            if instance.repair_interval.is_zero() {
                continue;
            }
            let key = instance.key.to_string();
            if self.schedule.due(&key, instance.repair_interval) {
                self.check(registrar, instance).await;
            }
            next = next.min(self.schedule.due_in(&key, instance.repair_interval));
        }
        next
    }

    async fn check(&mut self, registrar: &mut Registrar, instance: &LocalInstance) {
        let strapi = match registrar.client(instance) {
            Ok(strapi) => strapi,
            Err(error) => {
                tracing::error!(instance = %instance.key, %error, "gap repair cannot reach Strapi");
                return;
            }
        };
        let key = instance.key.to_string();
        let target = Target {
            instance: &key,
            strapi: &strapi,
            events: &instance.events,
            models: instance.models.as_ref(),
        };
        let checked = repair::check(&target, &self.client, &self.settings).await;
        let outage = self.schedule.checked(&key);
        match checked {
            Ok(report) => {
                if let Some((start, end)) = repair::gap(outage, &report) {
                    tracing::warn!(
                        instance = %instance.key,
                        recovered = report.recovered.len(),
                        start = %k8s_openapi::jiff::Timestamp::from_millisecond(start).unwrap_or_default(),
                        end = %k8s_openapi::jiff::Timestamp::from_millisecond(end).unwrap_or_default(),
                        "Strapi's calls did not reach the receiver in this window; creates, updates \
                         and publications were recovered, deletions and unpublications may have \
                         been missed"
                    );
                } else {
                    tracing::debug!(instance = %instance.key, compared = report.compared, "gap repair check found nothing missing");
                }
            }
            Err(error) => {
                tracing::error!(instance = %instance.key, %error, "gap repair check failed")
            }
        }
    }
}

/// Registers every instance; returns when the next pass is due (sooner after a failure).
async fn sync_all(registrar: &mut Registrar, instances: &[LocalInstance]) -> Duration {
    let mut next = instances
        .iter()
        .map(|instance| instance.resync_interval)
        .min()
        .unwrap_or(Duration::from_secs(300));
    for instance in instances {
        match registrar.sync(instance).await {
            Ok(synced) if synced.verified => tracing::info!(
                instance = %instance.key,
                change = ?synced.change,
                events = ?instance.events,
                "registration in Strapi verified"
            ),
            Ok(synced) => tracing::debug!(
                instance = %instance.key,
                change = ?synced.change,
                "registration in Strapi unchanged"
            ),
            Err(error) => {
                tracing::error!(instance = %instance.key, %error, "registration failed; retrying in {RETRY_INTERVAL:?}");
                next = next.min(RETRY_INTERVAL);
            }
        }
    }
    next
}

/// Says so when the files give local mode nothing to do: an empty folder or a wrong `-f` path
/// would otherwise run silently, registering nothing and delivering nothing.
fn warn_if_idle(config: &Config, paths: &[PathBuf]) {
    if config.instances.is_empty() {
        tracing::warn!(
            ?paths,
            "no StrapiInstance in these files: nothing is registered in Strapi until one is added \
             (the files are watched)"
        );
    } else if config.snapshot.webhooks.is_empty() {
        tracing::warn!(
            ?paths,
            "no StrapiWebhook in these files: Strapi's events are received but go nowhere until \
             one is added (the files are watched)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INSTANCE: &str = "apiVersion: webhooks.strapi-operator.dev/v1alpha1
kind: StrapiInstance
metadata: {name: cms, namespace: web}
spec:
  url: http://127.0.0.1:1337
  auth: {credentials: {secretName: strapi-admin}}
";

    fn webhook(namespace: &str, events: &str) -> String {
        format!(
            "apiVersion: webhooks.strapi-operator.dev/v1alpha1
kind: StrapiWebhook
metadata: {{name: hook, namespace: {namespace}}}
spec:
  instanceRef: {{name: cms, namespace: web}}
  events: {events}
  sinks:
    - name: site
      http: {{url: 'http://127.0.0.1:9/hook'}}
  routes:
    - name: all
      sink: site
"
        )
    }

    fn load_text(text: &str, env: &[(&str, &str)]) -> (Result<Config, Problems>, SharedSecrets) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.yaml");
        std::fs::write(&file, text).unwrap();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect();
        let mut shared = SharedSecrets::open(dir.path()).unwrap();
        (load(&[file], &env, &mut shared), shared)
    }

    #[test]
    fn a_loaded_config_accepts_the_saved_shared_secret_and_subscribes_the_union_of_events() {
        let text = format!(
            "{INSTANCE}---\n{}",
            webhook("web", "[entry.publish, entry.create]")
        );
        let env = [
            ("SWO_SECRET_WEB_STRAPI_ADMIN_EMAIL", "admin@example.com"),
            ("SWO_SECRET_WEB_STRAPI_ADMIN_PASSWORD", "pw"),
        ];
        let (config, mut shared) = load_text(&text, &env);
        let config = config.unwrap();
        let saved = shared.get_or_create("web/cms").unwrap();
        assert_eq!(config.snapshot.instances["web/cms"], vec![saved.clone()]);
        assert!(config.snapshot.webhooks.contains_key("web/hook"));
        let instance = &config.instances[0];
        assert_eq!(instance.shared_secret, saved);
        assert_eq!(
            instance.events.iter().collect::<Vec<_>>(),
            ["entry.create", "entry.publish"]
        );
        assert_eq!(instance.credentials_values, ["admin@example.com", "pw"]);
    }

    #[test]
    fn missing_credentials_and_a_foreign_namespace_are_problems_at_their_fields() {
        let text = format!("{INSTANCE}---\n{}", webhook("other", "[entry.publish]"));
        let problems = load_text(&text, &[]).0.unwrap_err().0;
        let reasons: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(problems.len(), 2, "{reasons:#?}");
        // `instanceRef` is line 5 of the webhook, which starts on line 8.
        assert_eq!(problems[0].line, Some(12), "{reasons:#?}");
        assert!(reasons[0].contains("spec.instanceRef: StrapiInstance web/cms does not allow webhooks from namespace other"), "{reasons:#?}");
        // `auth` is line 6 of the instance.
        assert_eq!(problems[1].line, Some(6), "{reasons:#?}");
        assert!(reasons[1].contains("Secret web/strapi-admin not found"));
    }

    #[test]
    fn manifests_without_a_namespace_are_in_default() {
        let text = format!(
            "{}---\n{}",
            INSTANCE.replace(", namespace: web", ""),
            webhook("default", "[entry.publish]")
                .replace(
                    "metadata: {name: hook, namespace: default}",
                    "metadata: {name: hook}"
                )
                .replace("{name: cms, namespace: web}", "{name: cms}")
        );
        let env = [
            ("SWO_SECRET_DEFAULT_STRAPI_ADMIN_EMAIL", "a@example.com"),
            ("SWO_SECRET_DEFAULT_STRAPI_ADMIN_PASSWORD", "pw"),
        ];
        let config = load_text(&text, &env).0.unwrap();
        assert!(config.snapshot.webhooks.contains_key("default/hook"));
        assert_eq!(
            config.snapshot.webhooks["default/hook"].instance,
            "default/cms"
        );
        assert_eq!(config.instances[0].key, "default/cms");
    }

    #[test]
    fn a_misspelt_field_is_refused_not_ignored() {
        let text = format!(
            "{INSTANCE}---\n{}      matsh: {{models: [article]}}\n",
            webhook("web", "[entry.publish]")
        );
        let env = [
            ("SWO_SECRET_WEB_STRAPI_ADMIN_EMAIL", "a@example.com"),
            ("SWO_SECRET_WEB_STRAPI_ADMIN_PASSWORD", "pw"),
        ];
        let problems = load_text(&text, &env).0.unwrap_err().0;
        let reasons: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(problems.len(), 1, "{reasons:#?}");
        assert!(
            reasons[0]
                .ends_with(":20: spec.routes[0].matsh: unknown field \"spec.routes[0].matsh\""),
            "{reasons:#?}"
        );
    }
}
