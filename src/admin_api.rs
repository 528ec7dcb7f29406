//! The receiver's admin HTTP API as it travels: the bodies the receiver serves
//! (`receiver::admin`) and its clients read and send (the controller, the `deliveries` CLI).
//! The controller and the receiver meet only through the CRDs and this API, so its types belong
//! to neither side, and none of them is a CRD type: the controller copies [`SinkCounters`] into
//! `StrapiWebhook.status.sinks` itself, so the status can change without changing the API.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::{Deserialize, Serialize};

/// The answer of `GET /v1/stats`: sink counters by webhook (`namespace/name`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// The counters of each webhook's sinks.
    pub webhooks: BTreeMap<String, Vec<SinkCounters>>,
    /// Stored events not routed yet (their deliveries are not counted above until they are).
    #[serde(default)]
    pub unrouted: u64,
}

/// Delivery counters of one sink since the receiver started tracking it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SinkCounters {
    /// The sink's name.
    pub name: String,
    /// Deliveries that succeeded.
    #[serde(default)]
    pub delivered: i64,
    /// Attempts that failed and were retried.
    #[serde(default)]
    pub failed: i64,
    /// Deliveries given up on.
    #[serde(default)]
    pub dead_lettered: i64,
    /// Deliveries waiting to be sent.
    #[serde(default)]
    pub pending: i64,
    /// True while the receiver holds deliveries back, e.g. after Slack said the webhook is gone.
    #[serde(default)]
    pub paused: bool,
    /// When a delivery last succeeded (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success_time: Option<Time>,
    /// The last failure, as the sink answered it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// The answer of `GET /v1/instances/{namespace}/{name}/handshake`: Strapi's `trigger-test`
/// calls seen for one instance.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Handshake {
    /// How many arrived with the right secret.
    pub count: i64,
    /// When the last one arrived, in milliseconds since the Unix epoch.
    #[serde(default)]
    pub last_at: Option<i64>,
}

/// The answer of `GET /v1/routing`: what one receiver replica routes with.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Routing {
    /// False until the replica has loaded its configuration; until then nothing is routed.
    pub synced: bool,
    /// The `metadata.generation` of each `StrapiInstance` (`namespace/name`) it accepts.
    pub instances: BTreeMap<String, i64>,
    /// The `metadata.generation` of each `StrapiWebhook` (`namespace/name`) it routes with.
    pub webhooks: BTreeMap<String, i64>,
}

/// The answer of the replay endpoints.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Replayed {
    /// How many deliveries were re-queued.
    pub replayed: i64,
}

/// Body of `POST /v1/deliveries/{id}/replay`: nothing to say yet, but a JSON body all the same.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayOne {}

/// Body of `POST /v1/deliveries/replay`: which dead letters; both unset means all of them.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayDead {
    /// Only this webhook (`namespace/name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
    /// Only sinks of this name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sink: Option<String>,
}
