//! Access to the instances' Strapis: their admin credentials (read from the Secrets
//! `spec.auth` names), one client per instance (so its admin session survives between
//! reconciles), the briefly cached content types webhook validation checks against, and the
//! count of every Strapi call by step and outcome.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use kube::Client;
use prometheus_client::metrics::{counter::Counter, family::Family};

use super::{Error, error::strapi_reason, metrics::StrapiCallLabels};
use crate::{
    api::StrapiInstance,
    cluster::FetchedSecrets,
    config::{self, instance_key},
    key::ObjectKey,
    strapi::{ClientCache, ContentType, Credentials, StrapiClient, StrapiError},
};

/// How long content types listed from a Strapi are reused by webhook validation.
const CONTENT_TYPES_TTL: Duration = Duration::from_secs(60);

/// Content types of one Strapi and when they were listed.
type ListedContentTypes = (Instant, Arc<Vec<ContentType>>);

/// Credentials, clients and content types of the instances' Strapis.
pub struct StrapiAccess {
    kubernetes: Client,
    calls: Family<StrapiCallLabels, Counter>,
    clients: ClientCache<ObjectKey>,
    // An async lock held across the fetch, so concurrent reconciles of one instance's webhooks
    // wait for one listing instead of each asking Strapi.
    content_types: tokio::sync::Mutex<HashMap<ObjectKey, ListedContentTypes>>,
}

impl StrapiAccess {
    /// Access that reads Secrets through `kubernetes` and counts calls in `calls`.
    pub fn new(kubernetes: Client, calls: Family<StrapiCallLabels, Counter>) -> Self {
        StrapiAccess {
            kubernetes,
            calls,
            clients: ClientCache::default(),
            content_types: tokio::sync::Mutex::default(),
        }
    }

    /// The admin credentials of an instance, read from its Secret.
    pub async fn credentials(&self, instance: &StrapiInstance) -> Result<Credentials, Error> {
        let namespace = instance_key(instance).namespace;
        let refs = config::auth_refs(&instance.spec.auth);
        let fetched = FetchedSecrets::fetch(&self.kubernetes, &namespace, &refs)
            .await
            .map_err(Error::kube("read Secret"))?;
        let (credentials, _) = config::credentials(instance, &fetched)?;
        Ok(credentials)
    }

    /// The Strapi client for an instance, reused while its URL and credentials stay the same.
    pub fn client(
        &self,
        instance: &StrapiInstance,
        credentials: Credentials,
    ) -> Result<StrapiClient, Error> {
        Ok(self
            .clients
            .client(&instance_key(instance), &instance.spec.url, credentials)?)
    }

    /// Forgets the client and content types of an instance that went away.
    pub async fn forget(&self, key: &ObjectKey) {
        self.clients.forget(key);
        self.content_types.lock().await.remove(key);
    }

    /// Awaits one Strapi call and counts it by step and outcome.
    pub async fn observe<T>(
        &self,
        step: &'static str,
        call: impl Future<Output = Result<T, StrapiError>>,
    ) -> Result<T, StrapiError> {
        let result = call.await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(error) => strapi_reason(error),
        };
        self.calls
            .get_or_create(&StrapiCallLabels { step, outcome })
            .inc();
        result
    }

    /// The content types of an instance's Strapi, cached briefly: many webhooks share them.
    pub async fn content_types(
        &self,
        instance: &StrapiInstance,
    ) -> Result<Arc<Vec<ContentType>>, Error> {
        let key = instance_key(instance);
        let mut cache = self.content_types.lock().await;
        if let Some((fetched, types)) = cache.get(&key)
            && fetched.elapsed() < CONTENT_TYPES_TTL
        {
            return Ok(types.clone());
        }
        let credentials = self.credentials(instance).await?;
        let client = self.client(instance, credentials)?;
        let types = Arc::new(
            self.observe("list content types", client.list_content_types())
                .await?,
        );
        cache.insert(key, (Instant::now(), types.clone()));
        Ok(types)
    }
}
