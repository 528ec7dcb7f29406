//! One Strapi client per owner (a `StrapiInstance`), reused while its URL and credentials stay
//! the same, so its admin session (a password login) survives between reconciles or passes.
//! The controller and local mode both keep their clients here.

use std::{
    collections::HashMap,
    hash::{Hash, Hasher},
    sync::Mutex,
};

use super::{Credentials, StrapiClient, StrapiError};

/// Strapi clients by owner `K`.
pub struct ClientCache<K> {
    // The fingerprint identifies the URL and credentials without keeping a second copy of the
    // secrets around.
    clients: Mutex<HashMap<K, (u64, StrapiClient)>>,
}

impl<K> Default for ClientCache<K> {
    fn default() -> Self {
        Self {
            clients: Mutex::default(),
        }
    }
}

impl<K: Hash + Eq + Clone> ClientCache<K> {
    /// The client of `owner`: the cached one while `url` and `credentials` are unchanged,
    /// otherwise a new one (which replaces it).
    pub fn client(
        &self,
        owner: &K,
        url: &str,
        credentials: Credentials,
    ) -> Result<StrapiClient, StrapiError> {
        let fingerprint = fingerprint(url, &credentials);
        let mut clients = self.clients.lock().expect("client cache lock");
        if let Some((known, client)) = clients.get(owner)
            && *known == fingerprint
        {
            return Ok(client.clone());
        }
        let client = StrapiClient::new(url, credentials)?;
        clients.insert(owner.clone(), (fingerprint, client.clone()));
        Ok(client)
    }

    /// Drops the client of `owner` (its instance is gone).
    pub fn forget(&self, owner: &K) {
        self.clients
            .lock()
            .expect("client cache lock")
            .remove(owner);
    }
}

fn fingerprint(url: &str, credentials: &Credentials) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    url.trim_end_matches('/').hash(&mut hasher);
    match credentials {
        Credentials::Password { email, password } => (email, password.expose()).hash(&mut hasher),
        Credentials::AdminToken(token) => token.expose().hash(&mut hasher),
    }
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn same(a: &StrapiClient, b: &StrapiClient) -> bool {
        std::sync::Arc::ptr_eq(&a.inner, &b.inner)
    }

    #[test]
    fn a_client_is_reused_until_its_url_or_credentials_change() {
        let cache = ClientCache::default();
        let token = || Credentials::admin_token("t0ken");
        let first = cache
            .client(&"web/cms", "http://strapi:1337", token())
            .unwrap();
        let again = cache
            .client(&"web/cms", "http://strapi:1337/", token())
            .unwrap();
        assert!(same(&first, &again));
        let rotated = cache
            .client(
                &"web/cms",
                "http://strapi:1337",
                Credentials::admin_token("new"),
            )
            .unwrap();
        assert!(!same(&first, &rotated));
        cache.forget(&"web/cms");
        let fresh = cache
            .client(
                &"web/cms",
                "http://strapi:1337",
                Credentials::admin_token("new"),
            )
            .unwrap();
        assert!(!same(&rotated, &fresh));
    }
}
