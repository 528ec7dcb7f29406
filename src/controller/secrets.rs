//! Secrets the controller reads (admin credentials, sink secrets) and the one it owns per
//! instance: the shared secret Strapi sends to the receiver.
//!
//! The shared-secret Secret's layout is a contract with the receiver: [`crate::api::shared_secret`].

use std::collections::BTreeMap;

use k8s_openapi::{
    ByteString,
    api::core::v1::Secret,
    apimachinery::pkg::apis::meta::v1::OwnerReference,
    jiff::{SignedDuration, Timestamp},
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{ObjectMeta, Patch, PatchParams},
};
use rand::distr::{Alphanumeric, SampleString};

use super::{Error, FIELD_MANAGER};
use crate::api::{
    StrapiInstance,
    shared_secret::{
        self, CURRENT_KEY, INSTANCE_LABEL, PREVIOUS_EXPIRES_KEY, PREVIOUS_KEY, ROTATE_ANNOTATION,
    },
};
use crate::cluster::secret_text;

// Records on the Secret which rotation request it has served.
const ROTATED_FOR_ANNOTATION: &str = "webhooks.strapi-operator.dev/rotated-for";

/// The current shared secret, and whether this reconcile created or rotated it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharedSecret {
    /// Name of the Secret.
    pub name: String,
    /// The value Strapi must send.
    pub current: String,
    /// True when the value changed in this reconcile.
    pub changed: bool,
}

fn generate() -> String {
    Alphanumeric.sample_string(&mut rand::rng(), 48)
}

/// The desired shared-secret Secret data, given what exists (pure, for tests).
pub fn next_shared_secret(
    existing: Option<&Secret>,
    rotation_request: Option<&str>,
    grace: SignedDuration,
    now: Timestamp,
) -> Option<(BTreeMap<String, String>, Option<String>)> {
    let current = existing.and_then(|secret| secret_text(secret, CURRENT_KEY));
    let served =
        existing.and_then(|secret| secret.annotations().get(ROTATED_FOR_ANNOTATION).cloned());
    let rotate = rotation_request.is_some() && rotation_request.map(str::to_owned) != served;
    match (current, rotate) {
        (Some(_), false) => None,
        (None, _) => Some((
            BTreeMap::from([(CURRENT_KEY.to_owned(), generate())]),
            rotation_request.map(str::to_owned),
        )),
        (Some(old), true) => Some((
            BTreeMap::from([
                (CURRENT_KEY.to_owned(), generate()),
                (PREVIOUS_KEY.to_owned(), old),
                (PREVIOUS_EXPIRES_KEY.to_owned(), (now + grace).to_string()),
            ]),
            rotation_request.map(str::to_owned),
        )),
    }
}

/// Reads the instance's shared secret, creating it on first use and rotating it when the
/// instance's rotation annotation asks for it.
pub async fn ensure_shared_secret(
    client: &Client,
    instance: &StrapiInstance,
    grace: SignedDuration,
) -> Result<SharedSecret, Error> {
    let namespace = instance
        .namespace()
        .ok_or(Error::MissingObjectKey("namespace"))?;
    let name = shared_secret::name(&instance.name_any());
    let api: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let existing = api
        .get_opt(&name)
        .await
        .map_err(Error::kube("read shared secret"))?;
    let rotation_request = instance
        .annotations()
        .get(ROTATE_ANNOTATION)
        .map(String::as_str);
    let Some((data, served)) =
        next_shared_secret(existing.as_ref(), rotation_request, grace, Timestamp::now())
    else {
        let current = existing
            .as_ref()
            .and_then(|secret| secret_text(secret, CURRENT_KEY))
            .unwrap_or_default();
        return Ok(SharedSecret {
            name,
            current,
            changed: false,
        });
    };
    let owner: OwnerReference = instance
        .controller_owner_ref(&())
        .ok_or(Error::MissingObjectKey("uid"))?;
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(namespace),
            labels: Some(BTreeMap::from([
                (
                    "app.kubernetes.io/managed-by".to_owned(),
                    "strapi-webhook-operator".to_owned(),
                ),
                (INSTANCE_LABEL.to_owned(), instance.name_any()),
            ])),
            annotations: served
                .map(|request| BTreeMap::from([(ROTATED_FOR_ANNOTATION.to_owned(), request)])),
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        // `data`, not `stringData`: server-side apply tracks ownership per `data` key, so keys
        // this apply leaves out (an expired `previous`) are removed rather than kept forever.
        data: Some(
            data.iter()
                .map(|(key, value)| (key.clone(), ByteString(value.as_bytes().to_vec())))
                .collect(),
        ),
        type_: Some("Opaque".to_owned()),
        ..Secret::default()
    };
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&secret),
    )
    .await
    .map_err(Error::kube("write shared secret"))?;
    Ok(SharedSecret {
        name,
        current: data[CURRENT_KEY].clone(),
        changed: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(current: &str, served: Option<&str>) -> Secret {
        Secret {
            metadata: ObjectMeta {
                annotations: served.map(|request| {
                    BTreeMap::from([(ROTATED_FOR_ANNOTATION.to_owned(), request.to_owned())])
                }),
                ..ObjectMeta::default()
            },
            data: Some(BTreeMap::from([(
                CURRENT_KEY.to_owned(),
                ByteString(current.as_bytes().to_vec()),
            )])),
            ..Secret::default()
        }
    }

    const GRACE: SignedDuration = SignedDuration::from_mins(15);

    #[test]
    fn a_missing_secret_is_generated() {
        let (data, served) = next_shared_secret(None, None, GRACE, Timestamp::UNIX_EPOCH).unwrap();
        assert_eq!(data.keys().collect::<Vec<_>>(), [CURRENT_KEY]);
        assert_eq!(data[CURRENT_KEY].len(), 48);
        assert_eq!(served, None);
        let (other, _) = next_shared_secret(None, None, GRACE, Timestamp::UNIX_EPOCH).unwrap();
        assert_ne!(other[CURRENT_KEY], data[CURRENT_KEY], "secrets are random");
    }

    #[test]
    fn an_existing_secret_is_kept_until_a_rotation_is_asked_for() {
        assert_eq!(
            next_shared_secret(
                Some(&secret("old", None)),
                None,
                GRACE,
                Timestamp::UNIX_EPOCH
            ),
            None
        );
        assert_eq!(
            next_shared_secret(
                Some(&secret("old", Some("1"))),
                Some("1"),
                GRACE,
                Timestamp::UNIX_EPOCH
            ),
            None
        );
    }

    #[test]
    fn a_rotation_keeps_the_old_secret_for_the_grace_period() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let (data, served) =
            next_shared_secret(Some(&secret("old", Some("1"))), Some("2"), GRACE, now).unwrap();
        assert_eq!(data[PREVIOUS_KEY], "old");
        assert_ne!(data[CURRENT_KEY], "old");
        assert_eq!(data[PREVIOUS_EXPIRES_KEY], (now + GRACE).to_string());
        assert_eq!(
            served.as_deref(),
            Some("2"),
            "the request is recorded so it is served once"
        );
    }
}
