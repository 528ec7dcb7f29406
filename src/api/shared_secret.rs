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

/// The values the receiver accepts, read through `text` (a key's value, if set): `secret`, and
/// `previous` while `previous-expires-at` is in the future (or unset) at `now`.
pub fn accepted(
    text: impl Fn(&str) -> Option<String>,
    now: k8s_openapi::jiff::Timestamp,
) -> Vec<String> {
    let mut accepted: Vec<String> = text(CURRENT_KEY).into_iter().collect();
    let previous_valid = text(PREVIOUS_EXPIRES_KEY).is_none_or(|until| {
        until
            .parse::<k8s_openapi::jiff::Timestamp>()
            .is_ok_and(|until| until > now)
    });
    if previous_valid {
        accepted.extend(text(PREVIOUS_KEY));
    }
    accepted
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    #[test]
    fn the_previous_secret_is_accepted_until_it_expires() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let secret = |expires: Option<&str>| {
            let expires = expires.map(str::to_owned);
            move |key: &str| match key {
                CURRENT_KEY => Some("new".to_owned()),
                PREVIOUS_KEY => Some("old".to_owned()),
                PREVIOUS_EXPIRES_KEY => expires.clone(),
                _ => None,
            }
        };
        assert_eq!(accepted(secret(None), now), ["new", "old"]);
        let later = (now + k8s_openapi::jiff::SignedDuration::from_mins(1)).to_string();
        assert_eq!(accepted(secret(Some(&later)), now), ["new", "old"]);
        let earlier = (now - k8s_openapi::jiff::SignedDuration::from_mins(1)).to_string();
        assert_eq!(accepted(secret(Some(&earlier)), now), ["new"]);
        assert_eq!(accepted(secret(Some("not a time")), now), ["new"]);
    }
}
