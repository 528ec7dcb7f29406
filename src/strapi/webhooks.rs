//! Strapi's webhooks (`/admin/webhooks`): list, get, create, update, delete and trigger.
//!
//! Strapi validates bodies strictly: create takes exactly `name`, `url`, `headers` and `events`
//! (a new webhook is always enabled), update additionally takes `isEnabled` and replaces the whole
//! object, and both reject unknown fields, `id` included. Outside `NODE_ENV=production` any URL is
//! accepted; in production Strapi refuses URLs whose host is or resolves to a loopback, link-local
//! or private address ("Url is not supported because it isn't reachable over the public
//! internet"), which includes in-cluster Service addresses.

use std::collections::BTreeMap;

use reqwest::Method;
use serde::{Deserialize, Deserializer, Serialize};

use super::{Call, StrapiClient, StrapiError};

/// A webhook as Strapi stores it.
#[derive(Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Webhook {
    /// Strapi's id (a number, sent as a string by Strapi 5).
    #[serde(deserialize_with = "string_or_number")]
    pub id: String,
    /// Display name.
    pub name: String,
    /// Where Strapi sends the events.
    pub url: String,
    /// Extra headers Strapi sends with every call.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub headers: BTreeMap<String, String>,
    /// Subscribed events, e.g. `entry.publish`.
    pub events: Vec<String>,
    /// Whether Strapi sends events to it.
    #[serde(rename = "isEnabled")]
    pub enabled: bool,
}

/// The desired state of a webhook, for create and update.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookSpec {
    /// Display name.
    pub name: String,
    /// Where Strapi sends the events.
    pub url: String,
    /// Extra headers Strapi sends with every call (e.g. the receiver's shared secret).
    pub headers: BTreeMap<String, String>,
    /// Events to subscribe to, as Strapi names them.
    pub events: Vec<String>,
    /// Whether Strapi sends events to it.
    pub enabled: bool,
}

impl WebhookSpec {
    /// The spec that matches an existing webhook, e.g. to change one field of it.
    pub fn of(webhook: &Webhook) -> Self {
        WebhookSpec {
            name: webhook.name.clone(),
            url: webhook.url.clone(),
            headers: webhook.headers.clone(),
            events: webhook.events.clone(),
            enabled: webhook.enabled,
        }
    }

    /// True when `webhook` already is in this state; the controller's drift check.
    pub fn matches(&self, webhook: &Webhook) -> bool {
        *self == WebhookSpec::of(webhook)
    }
}

/// What Strapi got back when it called the webhook for `trigger-test`.
#[derive(Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct TriggerOutcome {
    /// HTTP status the webhook URL answered; 500 when Strapi could not reach it at all.
    #[serde(rename = "statusCode")]
    pub status_code: u16,
    /// The answer's body on a non-2xx status, or Strapi's transport error message.
    #[serde(default)]
    pub message: Option<String>,
}

/// The fields Strapi's create validator accepts, no more.
#[derive(Serialize)]
struct CreateBody<'a> {
    name: &'a str,
    url: &'a str,
    headers: &'a BTreeMap<String, String>,
    events: &'a [String],
}

/// The fields Strapi's update validator accepts: create's plus `isEnabled`, never `id`.
#[derive(Serialize)]
struct UpdateBody<'a> {
    #[serde(flatten)]
    fields: CreateBody<'a>,
    #[serde(rename = "isEnabled")]
    enabled: bool,
}

impl<'a> From<&'a WebhookSpec> for CreateBody<'a> {
    fn from(spec: &'a WebhookSpec) -> Self {
        CreateBody {
            name: &spec.name,
            url: &spec.url,
            headers: &spec.headers,
            events: &spec.events,
        }
    }
}

impl StrapiClient {
    /// Every webhook registered in Strapi.
    pub async fn list_webhooks(&self) -> Result<Vec<Webhook>, StrapiError> {
        self.call(Call::new(
            "list webhooks",
            Method::GET,
            &["admin", "webhooks"],
        ))
        .await
    }

    /// One webhook; [`StrapiError::NotFound`] when there is no webhook with this id.
    pub async fn get_webhook(&self, id: &str) -> Result<Webhook, StrapiError> {
        self.call(Call::new(
            "get webhook",
            Method::GET,
            &["admin", "webhooks", id],
        ))
        .await
    }

    /// Creates a webhook. Strapi creates every webhook enabled; a disabled spec is disabled with a
    /// second call right away, so Strapi may send events to it in between.
    pub async fn create_webhook(&self, spec: &WebhookSpec) -> Result<Webhook, StrapiError> {
        let call = Call::new("create webhook", Method::POST, &["admin", "webhooks"])
            .json(&CreateBody::from(spec));
        let created: Webhook = self.call(call).await?;
        if spec.enabled {
            return Ok(created);
        }
        self.update_webhook(&created.id, spec).await
    }

    /// Replaces a webhook's name, URL, headers, events and enabled flag.
    pub async fn update_webhook(
        &self,
        id: &str,
        spec: &WebhookSpec,
    ) -> Result<Webhook, StrapiError> {
        let body = UpdateBody {
            fields: CreateBody::from(spec),
            enabled: spec.enabled,
        };
        self.call(Call::new("update webhook", Method::PUT, &["admin", "webhooks", id]).json(&body))
            .await
    }

    /// Deletes a webhook; [`StrapiError::NotFound`] when it does not exist.
    pub async fn delete_webhook(&self, id: &str) -> Result<(), StrapiError> {
        self.call::<serde::de::IgnoredAny>(Call::new(
            "delete webhook",
            Method::DELETE,
            &["admin", "webhooks", id],
        ))
        .await
        .map(drop)
    }

    /// Makes Strapi send a `trigger-test` event to the webhook now and reports what the webhook
    /// URL answered. Strapi 5 answers an unknown id with a 500 ([`StrapiError::Unexpected`]), not
    /// a 404.
    pub async fn trigger_webhook(&self, id: &str) -> Result<TriggerOutcome, StrapiError> {
        self.call(Call::new(
            "trigger webhook",
            Method::POST,
            &["admin", "webhooks", id, "trigger"],
        ))
        .await
    }
}

fn string_or_number<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Id {
        Text(String),
        Number(u64),
    }
    Ok(match Id::deserialize(deserializer)? {
        Id::Text(text) => text,
        Id::Number(number) => number.to_string(),
    })
}

fn null_as_empty<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    Ok(Option::deserialize(deserializer)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec() -> WebhookSpec {
        WebhookSpec {
            name: "operator".into(),
            url: "http://receiver:8080/v1/instances/cms/main".into(),
            headers: BTreeMap::from([("Authorization".into(), "Bearer s".into())]),
            events: vec!["entry.publish".into()],
            enabled: false,
        }
    }

    #[test]
    fn create_and_update_bodies_carry_only_the_fields_strapi_accepts() {
        let spec = spec();
        let create = serde_json::to_value(CreateBody::from(&spec)).unwrap();
        assert_eq!(
            create,
            json!({"name": "operator", "url": spec.url, "headers": {"Authorization": "Bearer s"}, "events": ["entry.publish"]})
        );
        let update = serde_json::to_value(UpdateBody {
            fields: CreateBody::from(&spec),
            enabled: false,
        })
        .unwrap();
        let mut expected = create;
        expected["isEnabled"] = json!(false);
        assert_eq!(update, expected);
    }

    #[test]
    fn reads_strapis_webhook_with_numeric_or_string_id_and_null_headers() {
        let webhook: Webhook = serde_json::from_value(
            json!({"id": 7, "name": "n", "url": "http://x:8080", "headers": null, "events": [], "isEnabled": true}),
        )
        .unwrap();
        assert_eq!(webhook.id, "7");
        assert!(webhook.headers.is_empty());
        let spec = WebhookSpec::of(&webhook);
        assert!(spec.matches(&webhook));
        let renamed = WebhookSpec {
            name: "other".into(),
            ..spec
        };
        assert!(!renamed.matches(&webhook));
    }
}
