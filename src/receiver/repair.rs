//! The receiver's side of the gap repair (see `docs/design/gap-repair.md`): it holds no Strapi
//! credentials, so it only answers what the component that does (the controller, local mode)
//! asks on the admin port, and stores the events that component rebuilt.
//!
//! - `GET /v1/repair` — this process's boot id and start time, and how many Strapi calls it
//!   failed to store: a change of either means events may have been lost, so a check is due now.
//! - `GET /v1/instances/{namespace}/{name}/watermarks` — per content type uid, the Strapi time
//!   up to which the repair has compared Strapi's content with what was stored.
//! - `POST /v1/instances/{namespace}/{name}/watermarks` — moves watermarks forward.
//! - `GET /v1/instances/{namespace}/{name}/progress` — how far Strapi's calls have got
//!   ([`Progress`]), so that a change Strapi is still sending is not taken for a lost one.
//! - `POST /v1/instances/{namespace}/{name}/versions` — for a list of document versions, whether
//!   an event showing that version (or a newer one) was stored.
//! - `POST /v1/instances/{namespace}/{name}/recovered` — stores a recovered event in Strapi's
//!   own body shape through the same path as Strapi's calls (stored unrouted, then routed by the
//!   router), marked recovered; answers
//!   `duplicateOf` when the versions it shows were stored meanwhile.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use k8s_openapi::jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::{
    ReceiverState,
    admin::error_response,
    ingest::{Storage, Stored, store},
};
use crate::{
    event::EventBody,
    key::ObjectKey,
    queue::{DocumentVersion, IngestOutcome, UnixMillis, VersionKind, Watermarks, now_millis},
};

/// The header a sink receives on every delivery of a recovered event, with the value `true`.
pub const RECOVERED_HEADER: &str = "x-strapi-webhook-recovered";

/// What this receiver process tells the repair about itself.
#[derive(Debug)]
pub struct RepairState {
    boot_id: String,
    started_at: UnixMillis,
    ingest_failures: AtomicU64,
    // Per instance: the newest version time Strapi's calls showed, and when the last one came.
    progress: Mutex<HashMap<String, (UnixMillis, Instant)>>,
}

impl Default for RepairState {
    fn default() -> Self {
        Self {
            boot_id: uuid::Uuid::now_v7().to_string(),
            started_at: now_millis(),
            ingest_failures: AtomicU64::new(0),
            progress: Mutex::default(),
        }
    }
}

impl RepairState {
    /// Counts a Strapi call that was not stored (not ready, store failed): Strapi will not send
    /// it again, so the repair should look now.
    pub fn note_ingest_failure(&self) {
        self.ingest_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Notes a stored call from Strapi showing `versions`: Strapi's webhook queue has got this
    /// far.
    pub fn note_progress(&self, instance: &str, versions: &[DocumentVersion]) {
        let Some(newest) = versions.iter().map(|version| version.at).max() else {
            return;
        };
        let mut progress = self.progress.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = progress
            .entry(instance.to_owned())
            .or_insert((newest, Instant::now()));
        *entry = (entry.0.max(newest), Instant::now());
    }

    /// How far Strapi's calls of `instance` have got, as seen by this process.
    pub fn progress(&self, instance: &str) -> Progress {
        let progress = self.progress.lock().unwrap_or_else(PoisonError::into_inner);
        progress
            .get(instance)
            .map_or_else(Progress::default, |(newest, last)| Progress {
                strapi_time: Some(*newest),
                idle_ms: Some(u64::try_from(last.elapsed().as_millis()).unwrap_or(u64::MAX)),
            })
    }

    /// The answer of `GET /v1/repair`.
    pub fn report(&self) -> ReceiverRepairState {
        ReceiverRepairState {
            boot_id: self.boot_id.clone(),
            started_at: self.started_at,
            ingest_failures: self.ingest_failures.load(Ordering::Relaxed),
        }
    }
}

/// The answer of `GET /v1/repair`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReceiverRepairState {
    /// Changes on every start of the receiver process.
    pub boot_id: String,
    /// When this process started.
    pub started_at: UnixMillis,
    /// Strapi calls this process answered without storing them (503).
    pub ingest_failures: u64,
}

/// The answer of `GET .../progress`: how far Strapi's webhook queue has got for an instance,
/// as far as this process saw since it started. Strapi sends its calls from an in-memory queue
/// in about the order of its writes, so a change older than `strapiTime` that was not stored is
/// not in flight any more; after `idleMs` without any call, nothing is.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    /// The newest version time (Strapi's clock) a stored call from Strapi showed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strapi_time: Option<UnixMillis>,
    /// Milliseconds since the last stored call from Strapi.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_ms: Option<u64>,
}

/// The answer of `POST .../recovered`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecoveredAnswer {
    /// The stored event's id, when it was stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The stored event that already shows these versions, when nothing was stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duplicate_of: Option<String>,
}

/// The repair routes, merged into the admin router.
pub fn routes() -> Router<Arc<ReceiverState>> {
    Router::new()
        .route("/v1/repair", get(repair_state))
        .route(
            "/v1/instances/{namespace}/{name}/watermarks",
            get(watermarks).post(advance_watermarks),
        )
        .route("/v1/instances/{namespace}/{name}/versions", post(covered))
        .route("/v1/instances/{namespace}/{name}/progress", get(progress))
        .route(
            "/v1/instances/{namespace}/{name}/recovered",
            post(recovered),
        )
}

/// The document versions a Strapi event shows: the content version (`updatedAt`) of a create,
/// update or publish, and the publication (`publishedAt`) of a publish. Other events (delete,
/// unpublish, media) show none: listing cannot see them, so they are never compared.
pub fn versions(event: &EventBody) -> Vec<DocumentVersion> {
    let kinds: &[(VersionKind, &str)] = match event.event.as_str() {
        "entry.create" | "entry.update" => &[(VersionKind::Content, "updatedAt")],
        "entry.publish" => &[
            (VersionKind::Publication, "publishedAt"),
            (VersionKind::Content, "updatedAt"),
        ],
        _ => &[],
    };
    let (Some(uid), Some(document_id)) = (
        event.uid.as_deref(),
        event
            .entry_field("documentId")
            .and_then(|value| value.as_str()),
    ) else {
        return Vec::new();
    };
    let locale = event
        .entry_field("locale")
        .and_then(|value| value.as_str())
        .unwrap_or_default();
    kinds
        .iter()
        .filter_map(|(kind, field)| {
            let at = event
                .entry_field(field)
                .and_then(|value| value.as_str())
                .and_then(strapi_millis)?;
            Some(DocumentVersion {
                uid: uid.to_owned(),
                document_id: document_id.to_owned(),
                locale: locale.to_owned(),
                kind: *kind,
                at,
            })
        })
        .collect()
}

/// A Strapi timestamp (`2026-11-29T19:32:35.343Z`) in milliseconds since the epoch.
pub fn strapi_millis(text: &str) -> Option<UnixMillis> {
    text.parse::<Timestamp>().ok().map(|at| at.as_millisecond())
}

async fn repair_state(State(state): State<Arc<ReceiverState>>) -> Response {
    Json(state.repair.report()).into_response()
}

async fn progress(
    State(state): State<Arc<ReceiverState>>,
    Path(instance): Path<(String, String)>,
) -> Response {
    Json(
        state
            .repair
            .progress(&ObjectKey::from(instance).to_string()),
    )
    .into_response()
}

async fn watermarks(
    State(state): State<Arc<ReceiverState>>,
    Path(instance): Path<(String, String)>,
) -> Response {
    match state
        .queue
        .watermarks(ObjectKey::from(instance).to_string())
        .await
    {
        Ok(marks) => Json(marks).into_response(),
        Err(error) => super::admin::queue_error(error),
    }
}

async fn advance_watermarks(
    State(state): State<Arc<ReceiverState>>,
    Path(instance): Path<(String, String)>,
    Json(marks): Json<Watermarks>,
) -> Response {
    match state
        .queue
        .advance_watermarks(ObjectKey::from(instance).to_string(), marks)
        .await
    {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(error) => super::admin::queue_error(error),
    }
}

async fn covered(
    State(state): State<Arc<ReceiverState>>,
    Path(instance): Path<(String, String)>,
    Json(versions): Json<Vec<DocumentVersion>>,
) -> Response {
    match state
        .queue
        .covered(ObjectKey::from(instance).to_string(), versions)
        .await
    {
        Ok(covered) => Json(covered).into_response(),
        Err(error) => super::admin::queue_error(error),
    }
}

async fn recovered(
    State(state): State<Arc<ReceiverState>>,
    Path(instance): Path<(String, String)>,
    raw: Bytes,
) -> Response {
    let started = Instant::now();
    let instance = ObjectKey::from(instance).to_string();
    let snapshot = state.config.borrow().clone();
    // Which instances are served is known only from the live configuration (the router would
    // wait for it anyway). The repair tries again at its next check.
    if !snapshot.synced {
        return error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "the receiver is still loading its configuration".to_owned(),
        );
    }
    if !snapshot.instances.contains_key(&instance) {
        return error_response(
            StatusCode::NOT_FOUND,
            format!("no StrapiInstance {instance} is served here"),
        );
    }
    let event = match EventBody::parse(&raw) {
        Ok(event) => event,
        Err(error) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                format!("the body is not a Strapi webhook event: {error}"),
            );
        }
    };
    let storage = Storage {
        recovered: true,
        ..Storage::of(&instance, &event)
    };
    if storage.versions.is_empty() {
        return error_response(
            StatusCode::BAD_REQUEST,
            format!(
                "a recovered event must be an entry.create, entry.update or entry.publish with \
                 uid, entry.documentId and the entry's timestamps; got {}",
                event.event
            ),
        );
    }
    match store(&state, &instance, &raw, &event, storage, started).await {
        Ok(Stored {
            id,
            outcome: IngestOutcome::Stored,
            ..
        }) => {
            state
                .metrics
                .recovered
                .get_or_create(&instance_labels(&instance))
                .inc();
            Json(RecoveredAnswer {
                id: Some(id),
                duplicate_of: None,
            })
            .into_response()
        }
        Ok(Stored {
            outcome: IngestOutcome::Duplicate { original },
            ..
        }) => Json(RecoveredAnswer {
            duplicate_of: Some(original),
            ..RecoveredAnswer::default()
        })
        .into_response(),
        Err(error) => super::admin::queue_error(error),
    }
}

fn instance_labels(instance: &str) -> super::metrics::InstanceLabels {
    super::metrics::InstanceLabels {
        strapi_instance: instance.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn event(name: &str, entry: serde_json::Value) -> EventBody {
        serde_json::from_value(json!({
            "event": name, "model": "article", "uid": "api::article.article", "entry": entry
        }))
        .unwrap()
    }

    #[test]
    fn a_publish_shows_its_publication_and_the_drafts_content() {
        let publish = event(
            "entry.publish",
            json!({"documentId": "d1", "updatedAt": "2026-11-29T19:32:35.343Z",
                   "publishedAt": "2026-11-29T19:32:35.350Z", "locale": "fr"}),
        );
        let shown = versions(&publish);
        assert_eq!(shown.len(), 2);
        assert_eq!(shown[0].kind, VersionKind::Publication);
        assert_eq!(shown[0].at, 1_795_980_755_350);
        assert_eq!(shown[1].kind, VersionKind::Content);
        assert_eq!(shown[1].at, 1_795_980_755_343);
        assert_eq!(shown[1].locale, "fr");
    }

    #[test]
    fn deletes_and_entries_without_timestamps_show_nothing() {
        let entry = json!({"documentId": "d1", "updatedAt": "2026-11-29T19:32:35.343Z"});
        assert!(versions(&event("entry.delete", entry.clone())).is_empty());
        assert!(versions(&event("entry.unpublish", entry)).is_empty());
        assert!(versions(&event("entry.update", json!({"documentId": "d1"}))).is_empty());
        assert!(versions(&event("entry.update", serde_json::Value::Null)).is_empty());
    }
}
