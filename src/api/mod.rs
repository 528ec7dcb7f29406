//! The public API: the `StrapiInstance` and `StrapiWebhook` custom resources of the
//! `webhooks.strapi-operator.dev` group.
//!
//! This module holds types only. Everything that acts on them lives elsewhere: the controller
//! reconciles them, the receiver and local mode turn them into running configuration through
//! [`crate::config`]. User-facing `///` docs on fields become `kubectl explain` output; developer
//! notes are `//` comments. Every list and string that a CEL rule walks is bounded, because a real
//! API server rejects a CRD whose worst-case rule cost it cannot bound (see `crds/README.md`).

mod common;
mod instance;
pub mod shared_secret;
mod webhook;

pub use common::*;
pub use instance::*;
pub use webhook::*;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// The API group of every kind this operator serves.
pub const GROUP: &str = "webhooks.strapi-operator.dev";
/// The served and stored version.
pub const VERSION: &str = "v1alpha1";

/// Every CustomResourceDefinition the operator needs, in a stable order.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![StrapiInstance::crd(), StrapiWebhook::crd()]
}

/// A CRD as the YAML document committed in `crds/<name>.yaml`.
pub fn crd_yaml(crd: &CustomResourceDefinition) -> Result<String, serde_saphyr::SerializeError> {
    serde_saphyr::to_string(crd)
}
