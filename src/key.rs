//! `namespace/name`, the one key of a namespaced object: the receiver's ingest path, the
//! marker of a registration in Strapi, the receiver's snapshot and admin API, Events and logs
//! all name `StrapiInstance`s and `StrapiWebhook`s by it. It is built, printed and parsed here
//! only, so that every part agrees on the rule for an object without a namespace.

use std::{fmt, str::FromStr};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The namespace of an object that names none: `kubectl apply` puts such an object in
/// `default` (with the default context), and local mode reads the same files the same way. In a
/// cluster every namespaced object has its namespace set, so the rule only matters for files.
pub const DEFAULT_NAMESPACE: &str = "default";

/// `namespace/name` of a namespaced object.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    /// The object's namespace.
    pub namespace: String,
    /// The object's name.
    pub name: String,
}

impl ObjectKey {
    /// The key of `name` in `namespace`.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// The key of an object from its metadata; an object without a namespace is in
    /// [`DEFAULT_NAMESPACE`].
    pub fn of_meta(meta: &ObjectMeta) -> Self {
        Self::new(
            namespace_or_default(meta.namespace.as_deref()),
            meta.name.clone().unwrap_or_default(),
        )
    }

    /// The key of a Kubernetes object (see [`ObjectKey::of_meta`]).
    pub fn of<K: kube::Resource>(object: &K) -> Self {
        Self::of_meta(object.meta())
    }
}

/// `namespace`, or [`DEFAULT_NAMESPACE`] when there is none.
pub fn namespace_or_default(namespace: Option<&str>) -> String {
    namespace.unwrap_or(DEFAULT_NAMESPACE).to_owned()
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A key from the `{namespace}/{name}` segments of a request path.
impl From<(String, String)> for ObjectKey {
    fn from((namespace, name): (String, String)) -> Self {
        Self::new(namespace, name)
    }
}

/// Why a text is not a `namespace/name` key.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not <namespace>/<name>")]
pub struct KeyParseError(String);

impl FromStr for ObjectKey {
    type Err = KeyParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.split_once('/') {
            Some((namespace, name))
                if !namespace.is_empty() && !name.is_empty() && !name.contains('/') =>
            {
                Ok(Self::new(namespace, name))
            }
            _ => Err(KeyParseError(text.to_owned())),
        }
    }
}

impl PartialEq<str> for ObjectKey {
    fn eq(&self, other: &str) -> bool {
        other
            .split_once('/')
            .is_some_and(|(namespace, name)| self.namespace == namespace && self.name == name)
    }
}

impl PartialEq<&str> for ObjectKey {
    fn eq(&self, other: &&str) -> bool {
        self == *other
    }
}

impl PartialEq<String> for ObjectKey {
    fn eq(&self, other: &String) -> bool {
        self == other.as_str()
    }
}

impl Serialize for ObjectKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ObjectKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_prints_and_parses_as_namespace_slash_name() {
        let key = ObjectKey::new("web", "cms");
        assert_eq!(key.to_string(), "web/cms");
        assert_eq!("web/cms".parse::<ObjectKey>(), Ok(key.clone()));
        assert_eq!(key, "web/cms");
        assert_ne!(key, "web/cms2");
        for bad in ["cms", "/cms", "web/", "a/b/c", ""] {
            assert!(bad.parse::<ObjectKey>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn an_object_without_a_namespace_is_in_default() {
        let meta = ObjectMeta {
            name: Some("cms".into()),
            ..ObjectMeta::default()
        };
        assert_eq!(ObjectKey::of_meta(&meta), ObjectKey::new("default", "cms"));
    }

    #[test]
    fn a_key_travels_as_its_text() {
        let keys = std::collections::BTreeMap::from([(ObjectKey::new("web", "hook"), 3)]);
        let json = serde_json::to_string(&keys).unwrap();
        assert_eq!(json, r#"{"web/hook":3}"#);
        let back: std::collections::BTreeMap<ObjectKey, i64> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, keys);
        assert!(serde_json::from_str::<ObjectKey>(r#""nonamespace""#).is_err());
    }
}
