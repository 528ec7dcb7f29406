//! `GET /v1/routing?webhook=&generation=&instance=&instanceGeneration=&timeoutSeconds=`: which
//! `metadata.generation` of each `StrapiInstance` and `StrapiWebhook` this replica routes with —
//! the snapshot its ingest takes for the next event. Each replica answers for itself, so the
//! controller asks every live replica before it calls a webhook `Routed`.
//!
//! With `timeoutSeconds` (at most [`MAX_WAIT_SECONDS`]) the answer waits until the replica
//! routes at least the given generations, so the controller needs one call per change instead of
//! polling; after the timeout it answers with what it has.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use axum::{
    Json,
    extract::{Query, State},
};
use serde::Deserialize;

use crate::{
    admin_api::Routing,
    receiver::{ReceiverState, source::Snapshot},
};

/// What `snapshot` routes with.
pub fn routing_of(snapshot: &Snapshot) -> Routing {
    Routing {
        synced: snapshot.synced,
        instances: snapshot
            .instances
            .keys()
            .map(|key| {
                let generation = snapshot.instance_generations.get(key);
                (key.clone(), generation.copied().unwrap_or_default())
            })
            .collect(),
        webhooks: snapshot
            .webhooks
            .iter()
            .map(|(key, webhook)| (key.clone(), webhook.generation))
            .collect(),
    }
}

/// The longest an answer waits for the asked generations.
pub const MAX_WAIT_SECONDS: u64 = 10;

/// Query of `GET /v1/routing`: generations to wait for, all optional.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoutingQuery {
    /// A webhook `namespace/name`…
    pub webhook: Option<String>,
    /// …routed with at least this generation.
    pub generation: Option<i64>,
    /// An instance `namespace/name`…
    pub instance: Option<String>,
    /// …accepted at least at this generation.
    pub instance_generation: Option<i64>,
    /// How long to wait for them.
    #[serde(default)]
    pub timeout_seconds: u64,
}

impl RoutingQuery {
    /// True when `routing` routes everything asked (pure).
    pub fn satisfied_by(&self, routing: &Routing) -> bool {
        let at_least =
            |routed: &BTreeMap<String, i64>, key: &Option<String>, wanted: Option<i64>| {
                key.as_ref().is_none_or(|key| {
                    routed
                        .get(key)
                        .is_some_and(|&generation| generation >= wanted.unwrap_or_default())
                })
            };
        routing.synced
            && at_least(&routing.webhooks, &self.webhook, self.generation)
            && at_least(&routing.instances, &self.instance, self.instance_generation)
    }
}

/// The handler: reads the same configuration the ingest reads, so once a generation shows here
/// the next event is routed with it.
pub async fn routing(
    State(state): State<Arc<ReceiverState>>,
    Query(query): Query<RoutingQuery>,
) -> Json<Routing> {
    let wait = Duration::from_secs(query.timeout_seconds.min(MAX_WAIT_SECONDS));
    let deadline = tokio::time::Instant::now() + wait;
    let mut config = state.config.clone();
    loop {
        let routing = routing_of(&config.borrow_and_update().clone());
        if query.satisfied_by(&routing) {
            return Json(routing);
        }
        // A closed source publishes nothing more: answer with what there is.
        match tokio::time::timeout_at(deadline, config.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) | Err(_) => return Json(routing),
        }
    }
}
