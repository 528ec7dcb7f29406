//! The one webhook the operator keeps in each Strapi: what it should look like (pure), and
//! making Strapi agree (create, repair, remove, collect garbage) through the admin API. The
//! controller and local mode both register through this module; it knows nothing of Kubernetes.
//!
//! Strapi webhooks have no labels, so ownership is marked twice: the name starts with
//! [`NAME_PREFIX`] and the [`MARKER_HEADER`] header carries the instance's `namespace/name`.
//! Only webhooks with the marker header are ever changed or deleted; webhooks people made by
//! hand are never touched.
//!
//! A registration is proven end to end by [`verify`]: Strapi triggers the webhook and the
//! receiver must record the call as a handshake.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use crate::key::ObjectKey;
use crate::strapi::{StrapiClient, StrapiError, TriggerOutcome, Webhook, WebhookSpec};

/// Path under the receiver's base URL where each instance has its ingest endpoint.
const INSTANCES_PATH: &str = "/v1/instances/";

/// The receiver endpoint Strapi calls for the instance `namespace/name`.
pub fn endpoint(receiver_base: &str, instance: &ObjectKey) -> String {
    format!(
        "{}{INSTANCES_PATH}{instance}",
        receiver_base.trim_end_matches('/')
    )
}

/// Prefix of the name of every webhook the operator manages.
pub const NAME_PREFIX: &str = "strapi-webhook-operator";
/// Header that marks a webhook as managed, with the owning instance's `namespace/name`.
pub const MARKER_HEADER: &str = "x-strapi-webhook-operator";

/// Everything the registration of one instance depends on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    /// `namespace/name` of the `StrapiInstance`.
    pub instance: String,
    /// The receiver endpoint for this instance.
    pub endpoint: String,
    /// Header name and value of the shared secret the receiver checks.
    pub secret: (String, String),
    /// Union of the events the instance's webhooks subscribe to.
    pub events: BTreeSet<String>,
}

impl Desired {
    /// The webhook as Strapi should hold it. With no events left, the registration stays but is
    /// disabled, so Strapi keeps nothing to send and the receiver endpoint stays verified.
    pub fn spec(&self) -> WebhookSpec {
        let headers = BTreeMap::from([
            (self.secret.0.clone(), self.secret.1.clone()),
            (MARKER_HEADER.to_owned(), self.instance.clone()),
        ]);
        WebhookSpec {
            name: format!("{NAME_PREFIX} {}", self.instance),
            url: self.endpoint.clone(),
            headers,
            events: self.events.iter().cloned().collect(),
            enabled: !self.events.is_empty(),
        }
    }
}

/// What [`ensure`] had to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// Strapi already held the desired webhook.
    Unchanged,
    /// There was no managed webhook; one was created.
    Created,
    /// The managed webhook differed and was updated.
    Updated,
}

/// The outcome of [`ensure`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    /// Strapi's id of the managed webhook.
    pub id: String,
    /// What changed.
    pub change: Change,
    /// Extra managed webhooks for the same instance that were deleted (left by a crash between
    /// create and status write, or copied by hand).
    pub duplicates_removed: usize,
}

fn owned_by<'a>(webhooks: &'a [Webhook], instance: &str) -> Vec<&'a Webhook> {
    webhooks
        .iter()
        .filter(|webhook| marker(webhook) == Some(instance))
        .collect()
}

fn marker(webhook: &Webhook) -> Option<&str> {
    webhook
        .headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(MARKER_HEADER))
        .map(|(_, value)| value.as_str())
}

/// Makes Strapi hold exactly one managed webhook for `desired.instance`, equal to
/// `desired.spec()`. Idempotent: a second call with the same input changes nothing.
pub async fn ensure(client: &StrapiClient, desired: &Desired) -> Result<Applied, StrapiError> {
    let spec = desired.spec();
    let webhooks = client.list_webhooks().await?;
    let mut owned = owned_by(&webhooks, &desired.instance);
    // Keep the one already right, if any, so a repair never deletes the good copy.
    owned.sort_by_key(|webhook| !spec.matches(webhook));
    let mut duplicates_removed = 0;
    for duplicate in owned.iter().skip(1) {
        client.delete_webhook(&duplicate.id).await?;
        duplicates_removed += 1;
    }
    let (id, change) = match owned.first() {
        None => (client.create_webhook(&spec).await?.id, Change::Created),
        Some(current) if spec.matches(current) => (current.id.clone(), Change::Unchanged),
        Some(current) => {
            // Strapi creates webhooks enabled; an update sets every field, `isEnabled` included.
            client.update_webhook(&current.id, &spec).await?;
            (current.id.clone(), Change::Updated)
        }
    };
    if change == Change::Created && !spec.enabled {
        client.update_webhook(&id, &spec).await?;
    }
    Ok(Applied {
        id,
        change,
        duplicates_removed,
    })
}

/// How often the receiver's handshake count is read while a verification waits for it.
const HANDSHAKE_POLL: Duration = Duration::from_millis(100);

/// Why an end-to-end verification failed; each variant names its hop. `E` is the error of
/// reading the receiver's handshake count (its admin API, or the queue in local mode).
#[derive(Debug)]
pub enum VerifyError<E> {
    /// The receiver's handshake count could not be read.
    Handshake(E),
    /// Strapi could not trigger the webhook.
    Trigger(StrapiError),
    /// Strapi called the receiver endpoint, which did not answer 2xx (401: the shared secret
    /// does not match; 500: often Strapi cannot reach the endpoint).
    Rejected {
        /// The status Strapi reported.
        status: u16,
        /// Strapi's message.
        message: String,
    },
    /// Strapi reported its call answered, but the receiver whose count is read never recorded
    /// it within the timeout: Strapi calls another receiver.
    HandshakeMissing,
}

/// The hops of a verification: the receiver's handshake count → Strapi's trigger (`trigger`,
/// not started before the count is read) → Strapi's call to the receiver → a higher count
/// within `timeout`. Strapi answers the trigger after the receiver answered it, and the receiver
/// answers after storing; the wait only covers a read that raced the write's commit.
pub async fn verify<E, Count, Counted>(
    handshakes: Count,
    trigger: impl Future<Output = Result<TriggerOutcome, StrapiError>>,
    timeout: Duration,
) -> Result<(), VerifyError<E>>
where
    Count: Fn() -> Counted,
    Counted: Future<Output = Result<i64, E>>,
{
    let count = || async { handshakes().await.map_err(VerifyError::Handshake) };
    let before = count().await?;
    let outcome = trigger.await.map_err(VerifyError::Trigger)?;
    if !(200..300).contains(&outcome.status_code) {
        return Err(VerifyError::Rejected {
            status: outcome.status_code,
            message: outcome.message.unwrap_or_default(),
        });
    }
    let deadline = tokio::time::Instant::now() + timeout;
    while count().await? <= before {
        if tokio::time::Instant::now() >= deadline {
            return Err(VerifyError::HandshakeMissing);
        }
        tokio::time::sleep(HANDSHAKE_POLL).await;
    }
    Ok(())
}

/// Deletes every managed webhook of `instance`; returns how many there were.
pub async fn remove(client: &StrapiClient, instance: &str) -> Result<usize, StrapiError> {
    let webhooks = client.list_webhooks().await?;
    let owned = owned_by(&webhooks, instance);
    for webhook in &owned {
        client.delete_webhook(&webhook.id).await?;
    }
    Ok(owned.len())
}

/// Deletes managed webhooks that point at `receiver_base` but whose instance no longer exists
/// (deleted while the operator was away, or its finalizer removed by hand). Webhooks that point
/// elsewhere belong to another operator installation and are left alone. Returns the
/// `namespace/name` markers of what was deleted.
pub async fn collect_garbage(
    client: &StrapiClient,
    receiver_base: &str,
    instance_exists: impl Fn(&str) -> bool,
) -> Result<Vec<String>, StrapiError> {
    // The whole path prefix, so `http://host:80` never claims `http://host:8080/...`.
    let endpoints = format!("{}{INSTANCES_PATH}", receiver_base.trim_end_matches('/'));
    let mut removed = Vec::new();
    for webhook in client.list_webhooks().await? {
        let Some(owner) = marker(&webhook) else {
            continue;
        };
        if webhook.url.starts_with(&endpoints) && !instance_exists(owner) {
            client.delete_webhook(&webhook.id).await?;
            removed.push(owner.to_owned());
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    };

    fn desired(events: &[&str]) -> Desired {
        Desired {
            instance: "web/cms".into(),
            endpoint: "http://receiver:8080/v1/instances/web/cms".into(),
            secret: ("x-strapi-webhook-secret".into(), "s3cret".into()),
            events: events.iter().map(|event| (*event).to_owned()).collect(),
        }
    }

    #[test]
    fn the_spec_carries_the_marker_secret_and_sorted_union_of_events() {
        let spec = desired(&["entry.update", "entry.create"]).spec();
        assert_eq!(spec.name, "strapi-webhook-operator web/cms");
        assert_eq!(spec.events, ["entry.create", "entry.update"]);
        assert_eq!(
            spec.headers.get(MARKER_HEADER).map(String::as_str),
            Some("web/cms")
        );
        assert_eq!(
            spec.headers
                .get("x-strapi-webhook-secret")
                .map(String::as_str),
            Some("s3cret")
        );
        assert!(spec.enabled);
    }

    #[test]
    fn endpoints_join_cleanly() {
        assert_eq!(
            endpoint("http://receiver:8080/", &ObjectKey::new("web", "cms")),
            "http://receiver:8080/v1/instances/web/cms"
        );
    }

    #[test]
    fn no_events_disables_the_registration() {
        assert!(!desired(&[]).spec().enabled);
    }

    #[test]
    fn ownership_is_read_from_the_marker_header_only() {
        let managed = Webhook {
            id: "1".into(),
            name: "anything".into(),
            url: "http://x".into(),
            headers: BTreeMap::from([("X-Strapi-Webhook-Operator".into(), "web/cms".into())]),
            events: vec![],
            enabled: true,
        };
        let by_hand = Webhook {
            id: "2".into(),
            name: "strapi-webhook-operator web/cms".into(),
            headers: BTreeMap::new(),
            ..managed.clone()
        };
        let webhooks = [managed, by_hand];
        let owned = owned_by(&webhooks, "web/cms");
        assert_eq!(owned.len(), 1);
        assert_eq!(owned[0].id, "1");
    }

    /// A receiver's handshake count and how it is read.
    fn receiver() -> (
        Arc<AtomicI64>,
        impl Fn() -> std::future::Ready<Result<i64, ()>>,
    ) {
        let count = Arc::new(AtomicI64::new(5));
        let read = Arc::clone(&count);
        (count, move || {
            std::future::ready(Ok(read.load(Ordering::SeqCst)))
        })
    }

    /// Strapi's trigger: its call reaches the receiver whose count is read when `bumps`.
    fn triggered(
        count: &Arc<AtomicI64>,
        bumps: bool,
        status_code: u16,
    ) -> impl Future<Output = Result<TriggerOutcome, StrapiError>> {
        let count = Arc::clone(count);
        async move {
            if bumps {
                count.fetch_add(1, Ordering::SeqCst);
            }
            Ok(TriggerOutcome {
                status_code,
                message: (status_code >= 300).then(|| "Unauthorized".to_owned()),
            })
        }
    }

    #[tokio::test]
    async fn verification_needs_strapis_call_to_reach_the_receiver_whose_count_is_read() {
        let timeout = Duration::from_millis(300);
        let (count, read) = receiver();
        let ok = verify(&read, triggered(&count, true, 204), timeout).await;
        assert!(ok.is_ok(), "{ok:?}");
        let rejected = verify(&read, triggered(&count, false, 401), timeout).await;
        assert!(
            matches!(&rejected, Err(VerifyError::Rejected { status: 401, message }) if message == "Unauthorized"),
            "{rejected:?}"
        );
        // Strapi says its call was answered, but by another receiver: the count stays.
        let missing = verify(&read, triggered(&count, false, 200), timeout).await;
        assert!(
            matches!(missing, Err(VerifyError::HandshakeMissing)),
            "{missing:?}"
        );
        let unreadable = verify(
            || std::future::ready(Err::<i64, _>("admin API down")),
            triggered(&count, true, 204),
            timeout,
        )
        .await;
        assert!(
            matches!(unreadable, Err(VerifyError::Handshake("admin API down"))),
            "{unreadable:?}"
        );
    }
}
