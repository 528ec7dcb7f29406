use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::fmt;

// Names that CEL rules compare are bounded to a DNS label so the API server can bound rule cost.
pub(crate) const NAME_MAX_LENGTH: u32 = 63;
pub(crate) const DNS_LABEL_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
// Go's time.ParseDuration format, positive only, as kube's `Duration` parses it.
pub(crate) const DURATION_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$";

/// A key in a Secret in the same namespace as the resource that refers to it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key within the Secret's `data`.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// The events Strapi 5 emits to webhooks.
///
/// `trigger-test` is not listed: Strapi sends it only when a webhook is triggered by hand, and the
/// operator uses it to verify the registration end to end.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema,
)]
pub enum StrapiEvent {
    /// An entry was created.
    #[serde(rename = "entry.create")]
    EntryCreate,
    /// An entry was updated.
    #[serde(rename = "entry.update")]
    EntryUpdate,
    /// An entry was deleted.
    #[serde(rename = "entry.delete")]
    EntryDelete,
    /// An entry was published.
    #[serde(rename = "entry.publish")]
    EntryPublish,
    /// An entry was unpublished.
    #[serde(rename = "entry.unpublish")]
    EntryUnpublish,
    /// A draft was discarded.
    #[serde(rename = "entry.draft-discard")]
    EntryDraftDiscard,
    /// A file was uploaded to the media library.
    #[serde(rename = "media.create")]
    MediaCreate,
    /// A media library file was updated.
    #[serde(rename = "media.update")]
    MediaUpdate,
    /// A media library file was deleted.
    #[serde(rename = "media.delete")]
    MediaDelete,
    /// An entry moved to another review workflow stage (Enterprise).
    #[serde(rename = "review-workflows.updateEntryStage")]
    ReviewWorkflowsUpdateEntryStage,
    /// A release was published (Enterprise).
    #[serde(rename = "releases.publish")]
    ReleasesPublish,
}

impl StrapiEvent {
    /// Every event, in Strapi's own order.
    pub const ALL: [StrapiEvent; 11] = [
        StrapiEvent::EntryCreate,
        StrapiEvent::EntryUpdate,
        StrapiEvent::EntryDelete,
        StrapiEvent::EntryPublish,
        StrapiEvent::EntryUnpublish,
        StrapiEvent::EntryDraftDiscard,
        StrapiEvent::MediaCreate,
        StrapiEvent::MediaUpdate,
        StrapiEvent::MediaDelete,
        StrapiEvent::ReviewWorkflowsUpdateEntryStage,
        StrapiEvent::ReleasesPublish,
    ];

    /// The name Strapi uses on the wire, e.g. `entry.publish`.
    pub fn as_str(self) -> &'static str {
        match self {
            StrapiEvent::EntryCreate => "entry.create",
            StrapiEvent::EntryUpdate => "entry.update",
            StrapiEvent::EntryDelete => "entry.delete",
            StrapiEvent::EntryPublish => "entry.publish",
            StrapiEvent::EntryUnpublish => "entry.unpublish",
            StrapiEvent::EntryDraftDiscard => "entry.draft-discard",
            StrapiEvent::MediaCreate => "media.create",
            StrapiEvent::MediaUpdate => "media.update",
            StrapiEvent::MediaDelete => "media.delete",
            StrapiEvent::ReviewWorkflowsUpdateEntryStage => "review-workflows.updateEntryStage",
            StrapiEvent::ReleasesPublish => "releases.publish",
        }
    }

    /// Parses Strapi's wire name; `None` for names this version does not know.
    pub fn from_wire(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|event| event.as_str() == name)
    }
}

impl fmt::Display for StrapiEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
