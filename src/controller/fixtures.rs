//! What the unit tests of the pure build steps share: an instance in inline YAML and a way to
//! pick a condition out of a built status.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

/// `web/cms` at generation 3, registered in Strapi (webhook 7) for two events.
pub const REGISTERED_INSTANCE: &str = r#"
apiVersion: webhooks.strapi-operator.dev/v1alpha1
kind: StrapiInstance
metadata: { name: cms, namespace: web, generation: 3 }
spec:
  url: "http://127.0.0.1:1337"
  auth: { credentials: { secretName: strapi-admin } }
status:
  registrationId: "7"
  lastVerifiedTime: "2026-11-29T10:00:00Z"
  endpoint: "http://receiver:8080/v1/strapi/web/cms"
  events: [entry.publish, entry.update]
  conditions:
    - type: Registered
      status: "True"
      reason: Registered
      message: webhook 7 sends 2 event kinds to the receiver
      lastTransitionTime: "2026-11-29T10:00:00Z"
"#;

/// The condition of type `kind`; the test fails when there is none.
pub fn condition<'a>(conditions: &'a [Condition], kind: &str) -> &'a Condition {
    conditions
        .iter()
        .find(|condition| condition.type_ == kind)
        .unwrap_or_else(|| panic!("no {kind} condition in {conditions:?}"))
}
