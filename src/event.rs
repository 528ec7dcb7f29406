//! A Strapi webhook event as the receiver takes it in: the exact bytes Strapi sent (forwarded
//! unchanged where a sink wants Strapi's own payload) and a parsed view for routing.
//!
//! Strapi 5 sends `{"event", "createdAt", "model", "uid", "entry"}` for content events and
//! `{"event", "createdAt", "media"}` for media events. Fields and event names this version does
//! not know are kept, never dropped: routing works on names, so a newer Strapi keeps working.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The header in which Strapi sends the instance's shared secret to the receiver. The controller
/// registers it in Strapi's webhook headers; the receiver checks it in constant time.
pub const SECRET_HEADER: &str = "x-strapi-webhook-secret";

/// The event name Strapi sends when a webhook is triggered by hand; the operator's handshake.
pub const TRIGGER_TEST: &str = "trigger-test";

/// The parsed body of a Strapi webhook call.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct EventBody {
    /// Event name, e.g. `entry.publish`. Unknown names are kept as they are.
    pub event: String,
    /// When Strapi created the event (ISO 8601), as Strapi wrote it.
    #[serde(rename = "createdAt", default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// Model name, e.g. `article`; absent on media events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Content-type uid, e.g. `api::article.article`; absent on media events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// The entry. May be `null` even on content events (strapi/strapi#25387).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry: Option<Value>,
    /// The file, on media events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media: Option<Value>,
    /// Everything else Strapi sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl EventBody {
    /// Parses a webhook body. The error says what is wrong in terms a Strapi user understands.
    pub fn parse(raw: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(raw)
    }

    /// True for Strapi's manual trigger, which verifies a registration and is never routed.
    pub fn is_trigger_test(&self) -> bool {
        self.event == TRIGGER_TEST
    }

    /// A field of the entry, if the entry is an object that has it.
    pub fn entry_field(&self, field: &str) -> Option<&Value> {
        self.entry.as_ref()?.get(field)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_unknown_fields_and_event_names() {
        let raw = br#"{"event":"entry.archive","createdAt":"2026-01-01T00:00:00.000Z","model":"article","uid":"api::article.article","entry":{"id":1},"schemaVersion":7}"#;
        let body = EventBody::parse(raw).unwrap();
        assert_eq!(body.event, "entry.archive");
        assert_eq!(body.extra.get("schemaVersion"), Some(&Value::from(7)));
        let round_trip: Value = serde_json::to_value(&body).unwrap();
        assert_eq!(round_trip, serde_json::from_slice::<Value>(raw).unwrap());
    }

    #[test]
    fn a_null_entry_is_not_an_error() {
        let body = EventBody::parse(br#"{"event":"entry.publish","model":"article","entry":null}"#)
            .unwrap();
        assert_eq!(body.entry, None);
        assert_eq!(body.entry_field("slug"), None);
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics_on_any_bytes(raw in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = EventBody::parse(&raw);
        }

        #[test]
        fn parse_keeps_any_event_name_and_fields(
            event in ".*",
            model in proptest::option::of(".*"),
            extra in proptest::collection::btree_map("[a-z]{1,8}", ".*", 0..4),
        ) {
            let mut body = serde_json::json!({ "event": event, "entry": { "id": 1 } });
            if let Some(model) = &model {
                body["model"] = Value::from(model.clone());
            }
            for (key, value) in &extra {
                if !["event", "model", "entry", "uid", "media", "createdAt"].contains(&key.as_str()) {
                    body[key] = Value::from(value.clone());
                }
            }
            let parsed = EventBody::parse(body.to_string().as_bytes()).unwrap();
            proptest::prop_assert_eq!(&parsed.event, &event);
            proptest::prop_assert_eq!(&parsed.model, &model);
            proptest::prop_assert_eq!(serde_json::to_value(&parsed).unwrap(), body);
        }
    }

    #[test]
    fn deeply_nested_bodies_are_an_error_not_a_stack_overflow() {
        let raw = format!(
            "{{\"event\":\"x\",\"entry\":{}{}}}",
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        assert!(EventBody::parse(raw.as_bytes()).is_err());
    }

    #[test]
    fn rejects_a_body_without_an_event_name() {
        let error = EventBody::parse(br#"{"model":"article"}"#).unwrap_err();
        assert!(
            error.to_string().contains("missing field `event`"),
            "{error}"
        );
    }
}
