//! The controller's one error type. Each variant names the reconcile step that failed; `reason`
//! gives the bounded label used for metrics and Kubernetes Event reasons, never a Debug string.

use crate::{config::CredentialsError, strapi::StrapiError};

/// Why a reconcile did not finish.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a Kubernetes object failed.
    #[error("{step}: {source}")]
    Kubernetes {
        /// What the controller was doing.
        step: &'static str,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
    /// The admin credentials `spec.auth` names cannot be read: a Secret or key is missing or
    /// not UTF-8.
    #[error("spec.auth: {0}")]
    SecretMissing(#[from] CredentialsError),
    /// The `StrapiInstance` a webhook refers to does not exist.
    #[error("StrapiInstance {namespace}/{name} does not exist")]
    InstanceMissing {
        /// Namespace of the instance.
        namespace: String,
        /// Name of the instance.
        name: String,
    },
    /// The instance does not allow StrapiWebhooks from this namespace.
    #[error("StrapiInstance {instance} does not allow StrapiWebhooks from namespace {namespace}")]
    NamespaceNotAllowed {
        /// `namespace/name` of the instance.
        instance: String,
        /// The webhook's namespace.
        namespace: String,
    },
    /// Strapi's admin API failed (unreachable, unauthorized, rejected, ...).
    #[error("{0}")]
    Strapi(#[from] StrapiError),
    /// The finalizer machinery failed (adding, running cleanup, removing).
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    /// The object has no namespace or name (never the case for objects from the API server).
    #[error("object without {0}")]
    MissingObjectKey(&'static str),
}

impl Error {
    /// A bounded label for metrics and Event reasons.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Kubernetes { .. } => "KubernetesError",
            Error::SecretMissing { .. } => "SecretMissing",
            Error::InstanceMissing { .. } => "InstanceMissing",
            Error::NamespaceNotAllowed { .. } => "NamespaceNotAllowed",
            Error::Strapi(error) => strapi_reason(error),
            Error::Finalizer(inner) => match inner.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(error)
                | kube::runtime::finalizer::Error::CleanupFailed(error) => error.reason(),
                _ => "FinalizerError",
            },
            Error::MissingObjectKey(_) => "MissingObjectKey",
        }
    }

    /// True for errors only a change of the spec or of a referenced object can fix; the
    /// controller then waits for that change instead of retrying with backoff.
    pub fn needs_user_change(&self) -> bool {
        match self {
            Error::SecretMissing { .. }
            | Error::InstanceMissing { .. }
            | Error::NamespaceNotAllowed { .. } => true,
            Error::Finalizer(inner) => match inner.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(error)
                | kube::runtime::finalizer::Error::CleanupFailed(error) => {
                    error.needs_user_change()
                }
                _ => false,
            },
            _ => false,
        }
    }

    pub(crate) fn kube(step: &'static str) -> impl FnOnce(kube::Error) -> Error {
        move |source| Error::Kubernetes { step, source }
    }
}

/// The bounded reason for a failed Strapi call, as conditions and Events show it.
pub fn strapi_reason(error: &StrapiError) -> &'static str {
    match error {
        StrapiError::Unreachable { .. } => "StrapiUnreachable",
        StrapiError::Unauthorized { .. } | StrapiError::Forbidden { .. } => "StrapiUnauthorized",
        StrapiError::Rejected { .. } => "StrapiRejected",
        StrapiError::RateLimited { .. } => "StrapiRateLimited",
        _ => "StrapiError",
    }
}
