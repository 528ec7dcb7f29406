//! Keeping each local instance's catch-all webhook registered in its Strapi, through the same
//! [`registration::ensure`] the controller uses, and proving it works: after every change Strapi
//! is asked to trigger the webhook and the receiver must record the handshake.

use std::{collections::HashMap, sync::Arc, time::Duration};

use crate::{
    event::SECRET_HEADER,
    key::ObjectKey,
    queue::{Queue, QueueError},
    registration::{self, Change, Desired, VerifyError},
    strapi::{ClientCache, Credentials, StrapiClient, StrapiError},
};

/// One `StrapiInstance` as local mode runs it: resolved credentials and the events to ask for.
#[derive(Clone, Debug)]
pub struct LocalInstance {
    /// `namespace/name`.
    pub key: ObjectKey,
    /// Strapi's base URL.
    pub url: String,
    /// Admin API credentials.
    pub credentials: Credentials,
    /// The raw credential values, compared to notice a change: [`Credentials`] hides them.
    pub credentials_values: Vec<String>,
    /// The shared secret Strapi must send.
    pub shared_secret: String,
    /// Union of the events of the webhooks that use this instance.
    pub events: std::collections::BTreeSet<String>,
    /// How often the registration is compared with the desired one (`spec.resyncInterval`).
    pub resync_interval: Duration,
    /// How often gap repair compares Strapi's content with what was stored
    /// (`spec.repairInterval`; zero turns it off).
    pub repair_interval: Duration,
    /// Models and uids the webhooks' routes can take, `None` when some route takes every model.
    pub models: Option<std::collections::BTreeSet<String>>,
}

/// Why one instance could not be registered or verified. Each variant names the step.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// The instance's URL or credentials do not make a client.
    #[error("setting up the Strapi client: {0}")]
    Client(#[source] StrapiError),
    /// Strapi refused or failed the create/update/delete of the webhook.
    #[error("registering the webhook in Strapi: {0}")]
    Ensure(#[source] StrapiError),
    /// Strapi could not trigger the webhook.
    #[error("asking Strapi to trigger the webhook: {0}")]
    Trigger(#[source] StrapiError),
    /// Strapi called the receiver, which did not answer 2xx.
    #[error(
        "Strapi's test call to {endpoint} got {status}: {message} (500 often means Strapi cannot \
         reach that URL; set --receiver-url to an address Strapi can reach)"
    )]
    Rejected {
        /// The receiver endpoint.
        endpoint: String,
        /// The status Strapi reported.
        status: u16,
        /// Strapi's message.
        message: String,
    },
    /// Strapi reported success but this receiver never saw the call.
    #[error(
        "Strapi reported its test call to {endpoint} as answered, but this receiver never got it: \
         does --receiver-url point at another process?"
    )]
    HandshakeMissing {
        /// The receiver endpoint.
        endpoint: String,
    },
    /// The handshake counter could not be read.
    #[error("reading the receiver's handshakes: {0}")]
    Handshake(#[source] QueueError),
    /// Removing the registration on `--cleanup` failed.
    #[error("removing the webhook from Strapi: {0}")]
    Remove(#[source] StrapiError),
}

/// What [`Registrar::sync`] did for one instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Synced {
    /// What `registration::ensure` had to change in Strapi.
    pub change: Change,
    /// Whether Strapi's trigger was sent and its handshake seen in this pass (skipped when
    /// nothing changed since the last verified one).
    pub verified: bool,
}

/// What was last registered and verified for one instance.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Registered {
    desired: Desired,
    url: String,
    credentials_values: Vec<String>,
}

/// Registers instances and remembers what it last registered and verified, so a pass with
/// nothing new costs one `list webhooks` call per instance.
pub struct Registrar {
    receiver_base: String,
    queue: Arc<dyn Queue>,
    verify_timeout: Duration,
    clients: ClientCache<ObjectKey>,
    verified: HashMap<ObjectKey, Registered>,
}

impl Registrar {
    /// A registrar that points Strapi at `receiver_base` and checks handshakes in `queue`.
    pub fn new(receiver_base: String, queue: Arc<dyn Queue>, verify_timeout: Duration) -> Self {
        Self {
            receiver_base,
            queue,
            verify_timeout,
            clients: ClientCache::default(),
            verified: HashMap::new(),
        }
    }

    /// The registration `instance` should have.
    pub fn desired(&self, instance: &LocalInstance) -> Desired {
        Desired {
            instance: instance.key.to_string(),
            endpoint: registration::endpoint(&self.receiver_base, &instance.key),
            secret: (SECRET_HEADER.to_owned(), instance.shared_secret.clone()),
            events: instance.events.clone(),
        }
    }

    /// The Strapi client of `instance`, reused while its URL and credentials stay the same.
    pub fn client(&self, instance: &LocalInstance) -> Result<StrapiClient, RegisterError> {
        self.clients
            .client(&instance.key, &instance.url, instance.credentials.clone())
            .map_err(RegisterError::Client)
    }

    /// Makes Strapi hold the desired webhook and verifies it when anything changed since the
    /// last verified pass.
    pub async fn sync(&mut self, instance: &LocalInstance) -> Result<Synced, RegisterError> {
        let client = self.client(instance)?;
        let desired = self.desired(instance);
        let applied = registration::ensure(&client, &desired)
            .await
            .map_err(RegisterError::Ensure)?;
        let registered = Registered {
            desired: desired.clone(),
            url: instance.url.clone(),
            credentials_values: instance.credentials_values.clone(),
        };
        let already_verified = self.verified.get(&instance.key) == Some(&registered);
        let verify = applied.change != Change::Unchanged || !already_verified;
        if verify {
            self.verified.remove(&instance.key);
            self.verify(&client, &desired, &applied.id).await?;
            self.verified.insert(instance.key.clone(), registered);
        }
        Ok(Synced {
            change: applied.change,
            verified: verify,
        })
    }

    async fn verify(
        &self,
        client: &StrapiClient,
        desired: &Desired,
        id: &str,
    ) -> Result<(), RegisterError> {
        let handshakes = || async {
            self.queue
                .handshake(desired.instance.clone())
                .await
                .map(|handshake| handshake.count)
        };
        let endpoint = desired.endpoint.clone();
        registration::verify(handshakes, client.trigger_webhook(id), self.verify_timeout)
            .await
            .map_err(|error| match error {
                VerifyError::Handshake(error) => RegisterError::Handshake(error),
                VerifyError::Trigger(error) => RegisterError::Trigger(error),
                VerifyError::Rejected { status, message } => RegisterError::Rejected {
                    endpoint,
                    status,
                    message,
                },
                VerifyError::HandshakeMissing => RegisterError::HandshakeMissing { endpoint },
            })
    }

    /// Deletes the registration of `instance` from its Strapi (`--cleanup`).
    pub async fn remove(&mut self, instance: &LocalInstance) -> Result<usize, RegisterError> {
        let client = self.client(instance)?;
        self.verified.remove(&instance.key);
        registration::remove(&client, &instance.key.to_string())
            .await
            .map_err(RegisterError::Remove)
    }
}
