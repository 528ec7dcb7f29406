//! The admin API credentials a `StrapiInstance`'s `spec.auth` names: which Secret keys they are
//! read from and the [`Credentials`] they make. The controller (from the API server) and local
//! mode (from files and the environment) both read them here, through a [`SecretResolver`].

use crate::{
    api::{SecretKeyRef, StrapiAuth, StrapiInstance},
    key::ObjectKey,
    strapi::Credentials,
};

use super::{SecretError, SecretResolver};

/// Why an instance's credentials could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsError {
    /// A Secret or key that `spec.auth` names is missing or not text.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// `spec.auth` sets both or neither; the CRD refuses that in a cluster, files are not
    /// admitted by an API server.
    #[error("set exactly one of apiToken and credentials")]
    NotExactlyOne,
}

/// The Secret keys `auth` reads, in the instance's namespace (token, or email and password).
pub fn auth_refs(auth: &StrapiAuth) -> Vec<SecretKeyRef> {
    match (&auth.api_token, &auth.credentials) {
        (Some(token), None) => vec![token.clone()],
        (None, Some(user)) => [&user.email_key, &user.password_key]
            .into_iter()
            .map(|key| SecretKeyRef {
                name: user.secret_name.clone(),
                key: key.clone(),
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// The admin API credentials of `instance`, and their raw values (to notice a change:
/// [`Credentials`] hides them).
pub fn credentials(
    instance: &StrapiInstance,
    secrets: &dyn SecretResolver,
) -> Result<(Credentials, Vec<String>), CredentialsError> {
    let namespace = ObjectKey::of(instance).namespace;
    let auth = &instance.spec.auth;
    let values = auth_refs(auth)
        .iter()
        .map(|reference| secrets.resolve(&namespace, reference))
        .collect::<Result<Vec<_>, _>>()?;
    match (&auth.api_token, &auth.credentials, values.as_slice()) {
        (Some(_), None, [token]) => Ok((Credentials::admin_token(token.as_str()), values)),
        (None, Some(_), [email, password]) => Ok((
            Credentials::password(email.clone(), password.as_str()),
            values,
        )),
        _ => Err(CredentialsError::NotExactlyOne),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::InMemorySecrets;

    fn instance(auth: serde_json::Value) -> StrapiInstance {
        let spec = serde_json::from_value(serde_json::json!({
            "url": "http://strapi:1337",
            "auth": auth,
        }))
        .unwrap();
        let mut instance = StrapiInstance::new("cms", spec);
        instance.metadata.namespace = Some("web".into());
        instance
    }

    #[test]
    fn a_token_or_a_login_is_read_from_the_instances_namespace() {
        let mut secrets = InMemorySecrets::new();
        secrets
            .insert("web", "admin", "token", "t0ken")
            .insert("web", "login", "email", "ops@example.com")
            .insert("web", "login", "password", "pw");
        let token = instance(serde_json::json!({"apiToken": {"name": "admin", "key": "token"}}));
        let (_, values) = credentials(&token, &secrets).unwrap();
        assert_eq!(values, ["t0ken"]);
        let login = instance(serde_json::json!({"credentials": {"secretName": "login"}}));
        let (credentials_read, values) = credentials(&login, &secrets).unwrap();
        assert_eq!(values, ["ops@example.com", "pw"]);
        assert!(matches!(credentials_read, Credentials::Password { .. }));
    }

    #[test]
    fn a_missing_key_or_an_ambiguous_auth_is_an_error() {
        let secrets = InMemorySecrets::new();
        let login = instance(serde_json::json!({"credentials": {"secretName": "login"}}));
        assert_eq!(
            credentials(&login, &secrets).unwrap_err().to_string(),
            "Secret web/login not found"
        );
        let neither = instance(serde_json::json!({}));
        assert_eq!(
            credentials(&neither, &secrets).unwrap_err(),
            CredentialsError::NotExactlyOne
        );
    }
}
