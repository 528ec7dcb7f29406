//! Turning `StrapiWebhook` specs into runnable configuration. [`compile_webhook`] reads the CRD
//! types, resolves the Secrets they reference through a [`SecretResolver`], compiles every filter
//! and template, and either returns a [`CompiledWebhook`] the receiver can use as it is or a
//! [`ValidationErrors`] naming each problem by field path. It does no I/O of its own, so the
//! controller's validate step, the receiver and local mode all get the same answer.

mod credentials;
mod egress;
mod references;
mod secrets;
mod webhook;

pub use credentials::{CredentialsError, auth_refs, credentials};
pub use egress::{apply_egress, egress_refused, egress_rules};
pub use references::{
    allows_namespace, instance_key, referenced_instance, secret_refs, subscribed_events,
};
pub use secrets::{InMemorySecrets, SecretError, SecretResolver};
pub use webhook::{CompiledWebhook, Reason, ValidationError, ValidationErrors, compile_webhook};
