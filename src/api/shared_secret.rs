//! The contract of the Secret that holds an instance's shared secret: the controller creates and
//! rotates it, the receiver reads it to authenticate Strapi. It lives in the instance's namespace.
//!
//! `secret` is the value Strapi sends now. For a grace period after a rotation, `previous` is
//! still accepted until `previous-expires-at` (RFC 3339), so no event sent with the old header
//! while Strapi learns the new one is refused.

/// Key of the current shared secret.
pub const CURRENT_KEY: &str = "secret";
/// Key of the secret before the last rotation.
pub const PREVIOUS_KEY: &str = "previous";
/// Key of the time until which `previous` is still accepted.
pub const PREVIOUS_EXPIRES_KEY: &str = "previous-expires-at";
/// Annotation on a `StrapiInstance`: set it to a new value to rotate the shared secret.
pub const ROTATE_ANNOTATION: &str = "webhooks.strapi-operator.dev/rotate-secret";
/// Label on the Secret naming its instance.
pub const INSTANCE_LABEL: &str = "webhooks.strapi-operator.dev/instance";

/// The Secret's name for the instance `instance`.
pub fn name(instance: &str) -> String {
    format!("{instance}-strapi-webhook-secret")
}
