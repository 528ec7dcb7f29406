//! The ingest endpoint Strapi calls: `POST /v1/instances/{namespace}/{name}`.
//!
//! A call is answered 2xx only after the event is durable in the queue, because Strapi never
//! sends an event twice. It is stored *unrouted*: the [`super::router`] evaluates routes and
//! tenant-written filters afterwards, so an answer never waits on user-written code, and the
//! answer says `"routing": "pending"` rather than how many deliveries there are. In order: the
//! instance must be known (404), the shared secret in [`SECRET_HEADER`] must match one accepted
//! for it, compared in constant time (401, without detail), the body must be JSON (415) within
//! the size limit (413) and a Strapi event (400, saying what is wrong). A `trigger-test` is
//! recorded as a handshake and not routed. If the store fails the answer is 503 and the failure
//! is logged and counted.
//!
//! Until the live configuration has loaded (right after a restart), calls are authenticated
//! against the last known one persisted with the queue ([`crate::queue::KnownInstances`]:
//! digests of the shared secrets): a known instance's events are stored and answered 2xx, and
//! wait for the live configuration to be routed; an instance not known there gets 503 (not 404:
//! the receiver does not know yet).

use std::{sync::Arc, time::Instant};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{DefaultBodyLimit, Path, State, rejection::BytesRejection},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::post,
};
use serde_json::json;
use subtle::ConstantTimeEq;
use tracing::Instrument;

use super::{
    ReceiverState,
    metrics::{InstanceLabels, RejectLabels, RejectReason, UNKNOWN_INSTANCE},
    source::secret_digest,
};
use crate::{
    event::EventBody,
    queue::{IngestOutcome, KnownInstance, NewEvent, now_millis},
};

pub use crate::event::SECRET_HEADER;

/// Strapi events whose meaning is fully given by (event, uid, documentId, locale), so a second
/// copy within the dedup window carries nothing new: Strapi 5 fires `entry.delete` for the draft
/// and the published row. Creates and updates carry content and are never collapsed.
const DEDUPLICATED_EVENTS: [&str; 3] = ["entry.delete", "entry.publish", "entry.unpublish"];

/// The ingest router.
pub fn app(state: Arc<ReceiverState>) -> Router {
    let limit = state.settings.max_body_bytes;
    Router::new()
        .route("/v1/instances/{namespace}/{name}", post(ingest))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

async fn ingest(
    State(state): State<Arc<ReceiverState>>,
    Path((namespace, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let instance = format!("{namespace}/{name}");
    let snapshot = state.config.borrow().clone();
    let reject = |reason: RejectReason, status: StatusCode, message: Option<String>| {
        if matches!(reason, RejectReason::NotReady | RejectReason::StoreFailed) {
            state.repair.note_ingest_failure();
        }
        let label = match reason {
            RejectReason::UnknownInstance | RejectReason::NotReady => UNKNOWN_INSTANCE.to_owned(),
            _ => instance.clone(),
        };
        state
            .metrics
            .rejected
            .get_or_create(&RejectLabels {
                strapi_instance: label,
                reason,
            })
            .inc();
        match message {
            Some(message) => (status, Json(json!({ "error": message }))).into_response(),
            None => status.into_response(),
        }
    };
    let credentials = if snapshot.synced {
        let Some(secrets) = snapshot.instances.get(&instance) else {
            let message = format!("no StrapiInstance {instance} is served here");
            return reject(
                RejectReason::UnknownInstance,
                StatusCode::NOT_FOUND,
                Some(message),
            );
        };
        Credentials::Live(secrets)
    } else {
        let known = state.known_instances();
        let Some(known) = known.get(&instance).cloned() else {
            let message = "the receiver is still loading its configuration".to_owned();
            return reject(
                RejectReason::NotReady,
                StatusCode::SERVICE_UNAVAILABLE,
                Some(message),
            );
        };
        Credentials::Known(known)
    };
    let labels = InstanceLabels {
        strapi_instance: instance.clone(),
    };
    state.metrics.received.get_or_create(&labels).inc();
    if !credentials.accept(&headers) {
        return reject(RejectReason::Unauthorized, StatusCode::UNAUTHORIZED, None);
    }
    if !is_json(&headers) {
        let message = "the body must be JSON (Content-Type: application/json)".to_owned();
        return reject(
            RejectReason::NotJson,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Some(message),
        );
    }
    let raw = match body {
        Ok(raw) => raw,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            let message = format!(
                "the body exceeds the limit of {} bytes (--max-body-bytes)",
                state.settings.max_body_bytes
            );
            return reject(
                RejectReason::TooLarge,
                StatusCode::PAYLOAD_TOO_LARGE,
                Some(message),
            );
        }
        Err(rejection) => {
            let message = format!("reading the body failed: {}", rejection.body_text());
            return reject(
                RejectReason::Malformed,
                StatusCode::BAD_REQUEST,
                Some(message),
            );
        }
    };
    let event = match EventBody::parse(&raw) {
        Ok(event) => event,
        Err(error) => {
            let message = format!("the body is not a Strapi webhook event: {error}");
            return reject(
                RejectReason::Malformed,
                StatusCode::BAD_REQUEST,
                Some(message),
            );
        }
    };
    let received_at = now_millis();
    if event.is_trigger_test() {
        return match state
            .queue
            .record_handshake(instance.clone(), received_at)
            .await
        {
            Ok(()) => {
                state.metrics.handshakes.get_or_create(&labels).inc();
                tracing::info!(%instance, "handshake from Strapi recorded");
                (StatusCode::OK, Json(json!({ "handshake": true }))).into_response()
            }
            Err(error) => {
                tracing::error!(%instance, %error, "recording a handshake failed");
                let message = "storing the handshake failed".to_owned();
                reject(
                    RejectReason::StoreFailed,
                    StatusCode::SERVICE_UNAVAILABLE,
                    Some(message),
                )
            }
        };
    }

    match store(&state, &instance, &raw, &event, false, started).await {
        Ok(Stored {
            id,
            outcome: IngestOutcome::Stored,
        }) => (
            StatusCode::OK,
            Json(json!({ "id": id, "routing": "pending" })),
        )
            .into_response(),
        Ok(Stored {
            outcome: IngestOutcome::Duplicate { original },
            ..
        }) => (StatusCode::OK, Json(json!({ "duplicateOf": original }))).into_response(),
        Err(_) => {
            let message = "storing the event failed".to_owned();
            reject(
                RejectReason::StoreFailed,
                StatusCode::SERVICE_UNAVAILABLE,
                Some(message),
            )
        }
    }
}

/// What [`store`] did.
pub(super) struct Stored {
    /// The id the event got (unused when it was a duplicate).
    pub id: String,
    /// Stored, or a duplicate of what was.
    pub outcome: IngestOutcome,
}

/// Stores an authenticated, parsed event of `instance` unrouted, counts it and wakes the router.
/// Strapi's calls and the gap repair's recovered events both come through here, so they share
/// dedup, and then the router's routes, filters and coalescing.
pub(super) async fn store(
    state: &ReceiverState,
    instance: &str,
    raw: &[u8],
    event: &EventBody,
    recovered: bool,
    started: Instant,
) -> Result<Stored, crate::queue::QueueError> {
    let labels = InstanceLabels {
        strapi_instance: instance.to_owned(),
    };
    let id = uuid::Uuid::now_v7().to_string();
    let span =
        tracing::info_span!("event", event_id = %id, %instance, event = %event.event, recovered);
    let versions = super::repair::versions(event);
    let new = NewEvent {
        id: id.clone(),
        instance: instance.to_owned(),
        event: event.event.clone(),
        received_at: now_millis(),
        raw: raw.to_vec(),
        dedup_key: dedup_key(instance, event),
        dedup_window_ms: i64::try_from(state.settings.dedup_window.as_millis()).unwrap_or(0),
        recovered,
        versions: versions.clone(),
    };
    let stored = state.queue.ingest(new).instrument(span.clone()).await;
    let _entered = span.enter();
    if !recovered && stored.is_ok() {
        state.repair.note_progress(instance, &versions);
    }
    match &stored {
        Ok(IngestOutcome::Stored) => {
            state.metrics.stored.get_or_create(&labels).inc();
            state
                .engine
                .traced_ingest(&id, instance, &event.event, started);
            state
                .metrics
                .ingest_seconds
                .get_or_create(&labels)
                .observe(started.elapsed().as_secs_f64());
            tracing::debug!("stored; routing pending");
            state.routing.notify_one();
        }
        Ok(IngestOutcome::Duplicate { original }) => {
            state.metrics.duplicates.get_or_create(&labels).inc();
            tracing::info!(%original, "duplicate of a stored event; not stored again");
        }
        Err(error) => {
            tracing::error!(%error, "storing an event failed");
        }
    }
    stored.map(|outcome| Stored { id, outcome })
}

/// What a call's shared secret is checked against.
enum Credentials<'a> {
    /// The live configuration's secrets.
    Live(&'a [String]),
    /// The last known configuration's digests of them (before the live one has loaded).
    Known(KnownInstance),
}

impl Credentials<'_> {
    fn accept(&self, headers: &HeaderMap) -> bool {
        let Some(given) = headers.get(SECRET_HEADER) else {
            return false;
        };
        // Every accepted secret is compared, so the time taken does not say which one came
        // close.
        match self {
            Credentials::Live(accepted) => accepted.iter().fold(false, |found, secret| {
                found | bool::from(secret.as_bytes().ct_eq(given.as_bytes()))
            }),
            Credentials::Known(known) => {
                let given = secret_digest(given.as_bytes());
                known.secret_digests.iter().fold(false, |found, digest| {
                    found | bool::from(digest.as_bytes().ct_eq(given.as_bytes()))
                })
            }
        }
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|media| {
            let media = media.trim();
            media.eq_ignore_ascii_case("application/json") || media.ends_with("+json")
        })
}

fn dedup_key(instance: &str, event: &EventBody) -> Option<String> {
    if !DEDUPLICATED_EVENTS.contains(&event.event.as_str()) {
        return None;
    }
    let document = event.entry_field("documentId")?.as_str()?;
    let locale = event
        .entry_field("locale")
        .and_then(|locale| locale.as_str())
        .unwrap_or("");
    let uid = event.uid.as_deref().unwrap_or("");
    Some(format!(
        "{instance}\u{1f}{}\u{1f}{uid}\u{1f}{document}\u{1f}{locale}",
        event.event
    ))
}
