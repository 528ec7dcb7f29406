//! Kubernetes Events for what users care about, raised from this one place so their reasons stay
//! a small, documented set.

use kube::{
    Client, Resource,
    runtime::events::{Event, EventType, Recorder, Reporter},
};

/// Something worth telling the user about, on the object it concerns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    /// The registration was created in Strapi (webhook id).
    Registered(String),
    /// The registration changed because the StrapiWebhooks or the shared secret changed.
    RegistrationUpdated(String),
    /// Someone edited or deleted the registration in Strapi; it was put back.
    DriftRepaired(String),
    /// A registration whose StrapiInstance no longer exists was removed (its `namespace/name`).
    GarbageCollected(String),
    /// Strapi's admin API refused or failed the registration.
    RegistrationFailed(String),
    /// Strapi's trigger did not reach the receiver with the right secret.
    VerificationFailed(String),
    /// The Strapi Deployment was rolled so every replica loads the new registration.
    StrapiRestarted(String),
    /// The instance is being deleted but its registration cannot be removed.
    CleanupSkipped(String),
    /// A StrapiWebhook's spec is invalid.
    InvalidSpec(String),
    /// A StrapiWebhook's spec is valid but has settings that very likely do not do what was meant.
    SpecWarning(String),
    /// Gap repair found a window in which Strapi's calls did not reach the receiver.
    GapRepaired(String),
    /// A gap repair check failed.
    RepairFailed(String),
}

impl Notice {
    fn event(&self) -> Event {
        let (type_, reason, action, note) = match self {
            Notice::Registered(id) => (
                EventType::Normal,
                "Registered",
                "Register",
                format!("created webhook {id} in Strapi"),
            ),
            Notice::RegistrationUpdated(id) => (
                EventType::Normal,
                "RegistrationUpdated",
                "Register",
                format!("updated webhook {id} in Strapi"),
            ),
            Notice::DriftRepaired(id) => (
                EventType::Warning,
                "DriftRepaired",
                "Register",
                format!("webhook {id} had been changed or deleted in Strapi and was put back"),
            ),
            Notice::GarbageCollected(owner) => (
                EventType::Normal,
                "GarbageCollected",
                "Register",
                format!(
                    "removed the registration of StrapiInstance {owner}, which no longer exists"
                ),
            ),
            Notice::RegistrationFailed(message) => (
                EventType::Warning,
                "RegistrationFailed",
                "Register",
                message.clone(),
            ),
            Notice::VerificationFailed(message) => (
                EventType::Warning,
                "VerificationFailed",
                "Verify",
                message.clone(),
            ),
            Notice::StrapiRestarted(deployment) => (
                EventType::Normal,
                "StrapiRestarted",
                "Restart",
                format!(
                    "rolled Deployment {deployment} so every Strapi replica loads the registration"
                ),
            ),
            Notice::CleanupSkipped(message) => (
                EventType::Warning,
                "CleanupSkipped",
                "Cleanup",
                format!(
                    "the registration could not be removed from Strapi and is left behind: {message}"
                ),
            ),
            Notice::InvalidSpec(message) => (
                EventType::Warning,
                "InvalidSpec",
                "Validate",
                message.clone(),
            ),
            Notice::SpecWarning(message) => (
                EventType::Warning,
                "SpecWarning",
                "Validate",
                message.clone(),
            ),
            Notice::GapRepaired(message) => {
                (EventType::Warning, "GapRepaired", "Repair", message.clone())
            }
            Notice::RepairFailed(message) => (
                EventType::Warning,
                "RepairFailed",
                "Repair",
                message.clone(),
            ),
        };
        // The Events API caps notes at 1 kB.
        let note = note.chars().take(1000).collect();
        Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: action.into(),
            secondary: None,
        }
    }
}

/// Publishes [`Notice`]s as Kubernetes Events.
#[derive(Clone)]
pub struct Publisher {
    recorder: Recorder,
}

impl Publisher {
    /// A publisher reporting as `controller` (the Deployment) and `instance` (the pod).
    pub fn new(client: Client, instance: Option<String>) -> Self {
        let reporter = Reporter {
            controller: "strapi-webhook-operator".into(),
            instance,
        };
        Publisher {
            recorder: Recorder::new(client, reporter),
        }
    }

    /// Publishes `notice` on `object`. An Event that cannot be written is logged, never fatal:
    /// Events are a courtesy, the status is the record.
    pub async fn publish<K: Resource<DynamicType = ()>>(&self, object: &K, notice: Notice) {
        let reference = object.object_ref(&());
        if let Err(error) = self.recorder.publish(&notice.event(), &reference).await {
            tracing::warn!(%error, ?notice, "publishing an Event failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_fit_the_events_api() {
        let event = Notice::RegistrationFailed("x".repeat(5000)).event();
        assert_eq!(event.note.unwrap().len(), 1000);
        assert_eq!(event.reason, "RegistrationFailed");
        assert_eq!(event.type_, EventType::Warning);
    }
}
