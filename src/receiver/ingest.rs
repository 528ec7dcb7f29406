//! The ingest endpoint Strapi calls: `POST /v1/instances/{namespace}/{name}`.
//!
//! A call is answered 2xx only after the event is durable in the queue, because Strapi never
//! sends an event twice. When a route it matches has a tenant-written filter, it is stored
//! *unrouted*: the [`super::router`] evaluates routes and filters afterwards, so an answer never
//! waits on user-written code, and the answer says `"routing": "pending"` rather than how many
//! deliveries there are. Otherwise ingest routes it itself and stores its deliveries with it in
//! the same write (`"routing": "done"` and the number of deliveries). In order: the
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
    admin::error_response,
    metrics::{InstanceLabels, RejectLabels, RejectReason, UNKNOWN_INSTANCE},
    router,
    source::{Snapshot, secret_digest},
};
use crate::{
    event::EventBody,
    key::ObjectKey,
    queue::{DocumentVersion, IngestOutcome, KnownInstance, NewEvent, now_millis},
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

/// Strapi's call: admitted, then carried out as planned; a refusal is counted and answered.
async fn ingest(
    State(state): State<Arc<ReceiverState>>,
    Path(instance): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let labels = InstanceLabels {
        strapi_instance: ObjectKey::from(instance).to_string(),
    };
    let answer = match admit(&state, &labels, &headers, body) {
        Ok((raw, event)) => carry_out(&state, &labels, &raw, &event, started).await,
        Err(rejection) => Err(rejection),
    };
    answer.unwrap_or_else(|rejection| refuse(&state, &labels.strapi_instance, rejection))
}

/// Admits a call of the instance in `labels`: the instance is served (or, before the live
/// configuration has loaded, known), the shared secret is one accepted for it, and the body is a
/// JSON Strapi event within the size limit. A call of an instance served (or known) is counted as
/// received whether or not it is admitted.
fn admit(
    state: &ReceiverState,
    labels: &InstanceLabels,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(Bytes, EventBody), Rejection> {
    let instance = labels.strapi_instance.as_str();
    let snapshot = state.config.borrow().clone();
    let credentials = Credentials::of(state, &snapshot, instance)?;
    state.metrics.received.get_or_create(labels).inc();
    if !credentials.accept(headers) {
        return Err(Rejection::Unauthorized);
    }
    if !is_json(headers) {
        return Err(Rejection::NotJson);
    }
    let limit = state.settings.max_body_bytes;
    let raw = body.map_err(|rejection| Rejection::unreadable(&rejection, limit))?;
    let event = EventBody::parse(&raw).map_err(|error| {
        Rejection::Malformed(format!("the body is not a Strapi webhook event: {error}"))
    })?;
    Ok((raw, event))
}

/// Carries out the [`plan`] of an admitted event and answers Strapi.
async fn carry_out(
    state: &ReceiverState,
    labels: &InstanceLabels,
    raw: &[u8],
    event: &EventBody,
    started: Instant,
) -> Result<Response, Rejection> {
    let instance = labels.strapi_instance.as_str();
    let storage = match plan(instance, event) {
        Plan::Handshake => return record_handshake(state, labels).await,
        Plan::Store(storage) => storage,
    };
    match store(state, instance, raw, event, storage, started).await {
        Ok(Stored {
            id,
            outcome: IngestOutcome::Stored,
            deliveries,
        }) => {
            let body = match deliveries {
                Some(deliveries) => {
                    json!({ "id": id, "routing": "done", "deliveries": deliveries })
                }
                None => json!({ "id": id, "routing": "pending" }),
            };
            Ok((StatusCode::OK, Json(body)).into_response())
        }
        Ok(Stored {
            outcome: IngestOutcome::Duplicate { original },
            ..
        }) => Ok((StatusCode::OK, Json(json!({ "duplicateOf": original }))).into_response()),
        Err(_) => Err(Rejection::StoreFailed("event")),
    }
}

/// Records Strapi's `trigger-test` of the instance in `labels` as a handshake.
async fn record_handshake(
    state: &ReceiverState,
    labels: &InstanceLabels,
) -> Result<Response, Rejection> {
    let instance = &labels.strapi_instance;
    match state
        .queue
        .record_handshake(instance.clone(), now_millis())
        .await
    {
        Ok(()) => {
            state.metrics.handshakes.get_or_create(labels).inc();
            tracing::info!(%instance, "handshake from Strapi recorded");
            Ok((StatusCode::OK, Json(json!({ "handshake": true }))).into_response())
        }
        Err(error) => {
            tracing::error!(%instance, %error, "recording a handshake failed");
            Err(Rejection::StoreFailed("handshake"))
        }
    }
}

/// Counts a refused call of `instance` and renders the refusal.
fn refuse(state: &ReceiverState, instance: &str, rejection: Rejection) -> Response {
    if rejection.loses_the_event() {
        state.repair.note_ingest_failure();
    }
    state
        .metrics
        .rejected
        .get_or_create(&rejection.labels(instance))
        .inc();
    rejection.into_response()
}

/// Why ingest refused a call: the answer it renders and the bounded reason it is counted under.
#[derive(Debug, PartialEq)]
enum Rejection {
    /// No instance of this `namespace/name` is served here (404).
    UnknownInstance(String),
    /// The live configuration has not loaded and the last known one does not name the instance
    /// (503: the receiver does not know yet).
    NotReady,
    /// The shared secret is missing or not one accepted for the instance (401, without detail).
    Unauthorized,
    /// The body is not declared JSON (415).
    NotJson,
    /// The body exceeds `--max-body-bytes`, the limit given (413).
    TooLarge(usize),
    /// The body could not be read or is not a Strapi event, saying why (400).
    Malformed(String),
    /// Storing what was named (the event, the handshake) failed (503).
    StoreFailed(&'static str),
}

impl Rejection {
    /// The rejection of a body axum could not read, with `limit` the size limit in bytes.
    fn unreadable(rejection: &BytesRejection, limit: usize) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Self::TooLarge(limit)
        } else {
            Self::Malformed(format!(
                "reading the body failed: {}",
                rejection.body_text()
            ))
        }
    }

    fn reason(&self) -> RejectReason {
        match self {
            Self::UnknownInstance(_) => RejectReason::UnknownInstance,
            Self::NotReady => RejectReason::NotReady,
            Self::Unauthorized => RejectReason::Unauthorized,
            Self::NotJson => RejectReason::NotJson,
            Self::TooLarge(_) => RejectReason::TooLarge,
            Self::Malformed(_) => RejectReason::Malformed,
            Self::StoreFailed(_) => RejectReason::StoreFailed,
        }
    }

    /// The series a rejection of a call of `instance` is counted in. An instance the receiver
    /// does not serve (or does not know yet) is counted as [`UNKNOWN_INSTANCE`], so a caller
    /// cannot create series.
    fn labels(&self, instance: &str) -> RejectLabels {
        let strapi_instance = match self {
            Self::UnknownInstance(_) | Self::NotReady => UNKNOWN_INSTANCE,
            _ => instance,
        };
        RejectLabels {
            strapi_instance: strapi_instance.to_owned(),
            reason: self.reason(),
        }
    }

    /// True when the receiver, not the caller, failed: Strapi will not send the event again, so
    /// the gap repair should look for it.
    fn loses_the_event(&self) -> bool {
        matches!(self, Self::NotReady | Self::StoreFailed(_))
    }

    fn status(&self) -> StatusCode {
        match self {
            Self::UnknownInstance(_) => StatusCode::NOT_FOUND,
            Self::NotReady | Self::StoreFailed(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::NotJson => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Malformed(_) => StatusCode::BAD_REQUEST,
        }
    }

    /// What the caller is told; `None` for an unauthenticated caller, who is told nothing.
    fn message(&self) -> Option<String> {
        Some(match self {
            Self::UnknownInstance(instance) => {
                format!("no StrapiInstance {instance} is served here")
            }
            Self::NotReady => "the receiver is still loading its configuration".to_owned(),
            Self::Unauthorized => return None,
            Self::NotJson => "the body must be JSON (Content-Type: application/json)".to_owned(),
            Self::TooLarge(limit) => {
                format!("the body exceeds the limit of {limit} bytes (--max-body-bytes)")
            }
            Self::Malformed(message) => message.clone(),
            Self::StoreFailed(what) => format!("storing the {what} failed"),
        })
    }
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        match self.message() {
            Some(message) => error_response(self.status(), message),
            None => self.status().into_response(),
        }
    }
}

/// What ingest does with an admitted event, decided from the event alone (no I/O).
#[derive(Debug, PartialEq)]
pub(super) enum Plan {
    /// Strapi's `trigger-test` (its webhook test, or the operator's verification): recorded as a
    /// handshake, nothing to deliver.
    Handshake,
    /// Stored unrouted, as the [`Storage`] says.
    Store(Storage),
}

/// How an event is stored.
#[derive(Debug, PartialEq)]
pub(super) struct Storage {
    /// Events with the same key within the dedup window are stored once; `None` for events that
    /// are never collapsed.
    pub dedup_key: Option<String>,
    /// The document versions the event shows, recorded for the gap repair.
    pub versions: Vec<DocumentVersion>,
    /// True for an event the gap repair rebuilt from Strapi's content.
    pub recovered: bool,
}

impl Storage {
    /// How a call of `instance` carrying `event` is stored.
    pub fn of(instance: &str, event: &EventBody) -> Self {
        Self {
            dedup_key: dedup_key(instance, event),
            versions: super::repair::versions(event),
            recovered: false,
        }
    }
}

/// The plan for an admitted `event` of `instance`.
pub(super) fn plan(instance: &str, event: &EventBody) -> Plan {
    if event.is_trigger_test() {
        Plan::Handshake
    } else {
        Plan::Store(Storage::of(instance, event))
    }
}

/// What [`store`] did.
pub(super) struct Stored {
    /// The id the event got (unused when it was a duplicate).
    pub id: String,
    /// Stored, or a duplicate of what was.
    pub outcome: IngestOutcome,
    /// How many deliveries the event was stored with when ingest routed it; `None` when it was
    /// left to the router.
    pub deliveries: Option<usize>,
}

/// Stores an authenticated, parsed event of `instance` as `storage` says, counts it and wakes
/// its sinks, or the router when routing it runs tenant code
/// ([`router::route_without_tenant_code`]). Strapi's calls and the gap repair's recovered events
/// both come through here, so they share dedup, routes, filters and coalescing.
pub(super) async fn store(
    state: &ReceiverState,
    instance: &str,
    raw: &[u8],
    event: &EventBody,
    storage: Storage,
    started: Instant,
) -> Result<Stored, crate::queue::QueueError> {
    let Storage {
        dedup_key,
        versions,
        recovered,
    } = storage;
    let labels = InstanceLabels {
        strapi_instance: instance.to_owned(),
    };
    let id = uuid::Uuid::now_v7().to_string();
    let deliveries =
        router::route_without_tenant_code(&state.config.borrow(), instance, event, &id);
    let routed = deliveries
        .as_ref()
        .map(|deliveries| (deliveries.len(), router::sinks_to_wake(deliveries)));
    let span =
        tracing::info_span!("event", event_id = %id, %instance, event = %event.event, recovered);
    let new = NewEvent {
        id: id.clone(),
        instance: instance.to_owned(),
        event: event.event.clone(),
        received_at: now_millis(),
        raw: raw.to_vec(),
        dedup_key,
        dedup_window_ms: i64::try_from(state.settings.dedup_window.as_millis()).unwrap_or(0),
        recovered,
        versions: versions.clone(),
        deliveries,
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
            tracing::debug!(deliveries = ?routed.as_ref().map(|(count, _)| count), "stored");
            match &routed {
                Some((_, sinks)) => sinks.iter().for_each(|sink| state.engine.wake(sink)),
                None => state.routing.notify_one(),
            }
        }
        Ok(IngestOutcome::Duplicate { original }) => {
            state.metrics.duplicates.get_or_create(&labels).inc();
            tracing::info!(%original, "duplicate of a stored event; not stored again");
        }
        Err(error) => {
            tracing::error!(%error, "storing an event failed");
        }
    }
    stored.map(|outcome| Stored {
        id,
        outcome,
        deliveries: routed.map(|(count, _)| count),
    })
}

/// What a call's shared secret is checked against.
enum Credentials<'a> {
    /// The live configuration's secrets.
    Live(&'a [String]),
    /// The last known configuration's digests of them (before the live one has loaded).
    Known(KnownInstance),
}

impl<'a> Credentials<'a> {
    /// What a call of `instance` is checked against: the live configuration's secrets once it
    /// has loaded, the last known digests of them before.
    fn of(
        state: &ReceiverState,
        snapshot: &'a Snapshot,
        instance: &str,
    ) -> Result<Self, Rejection> {
        if snapshot.synced {
            return match snapshot.instances.get(instance) {
                Some(secrets) => Ok(Credentials::Live(secrets)),
                None => Err(Rejection::UnknownInstance(instance.to_owned())),
            };
        }
        match state.known_instances().get(instance) {
            Some(known) => Ok(Credentials::Known(known.clone())),
            None => Err(Rejection::NotReady),
        }
    }

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

#[cfg(test)]
mod tests {
    use axum::body::to_bytes;
    use serde_json::{Value, json};

    use super::*;
    use crate::queue::VersionKind;

    fn event(name: &str, entry: Value) -> EventBody {
        serde_json::from_value(json!({
            "event": name, "model": "article", "uid": "api::article.article", "entry": entry
        }))
        .unwrap()
    }

    fn storage(instance: &str, event: &EventBody) -> Storage {
        match plan(instance, event) {
            Plan::Store(storage) => storage,
            Plan::Handshake => panic!("{} was planned as a handshake", event.event),
        }
    }

    #[test]
    fn a_trigger_test_is_a_handshake_and_stores_nothing() {
        let test = EventBody::parse(br#"{"event":"trigger-test"}"#).unwrap();
        assert_eq!(plan("web/cms", &test), Plan::Handshake);
    }

    #[test]
    fn strapis_two_deletes_of_a_document_share_one_dedup_key() {
        let draft = event(
            "entry.delete",
            json!({"documentId": "d1", "id": 1, "locale": "en"}),
        );
        let published = event(
            "entry.delete",
            json!({"documentId": "d1", "id": 2, "locale": "en"}),
        );
        let key = storage("web/cms", &draft).dedup_key;
        assert!(key.is_some());
        assert_eq!(key, storage("web/cms", &published).dedup_key);
        // Another instance, locale, document or event is another key.
        let others = [
            storage("web/other", &draft),
            storage(
                "web/cms",
                &event("entry.delete", json!({"documentId": "d1", "locale": "fr"})),
            ),
            storage(
                "web/cms",
                &event("entry.delete", json!({"documentId": "d2", "locale": "en"})),
            ),
            storage(
                "web/cms",
                &event(
                    "entry.unpublish",
                    json!({"documentId": "d1", "locale": "en"}),
                ),
            ),
        ];
        for other in others {
            assert!(other.dedup_key.is_some());
            assert_ne!(other.dedup_key, key);
        }
    }

    #[test]
    fn creates_updates_and_events_without_a_document_are_never_collapsed() {
        let entry = json!({"documentId": "d1", "updatedAt": "2026-11-29T19:32:35.343Z"});
        for name in ["entry.create", "entry.update", "media.create"] {
            assert_eq!(
                storage("web/cms", &event(name, entry.clone())).dedup_key,
                None
            );
        }
        let anonymous = event("entry.delete", json!({"id": 1}));
        assert_eq!(storage("web/cms", &anonymous).dedup_key, None);
        let no_entry = event("entry.publish", Value::Null);
        assert_eq!(storage("web/cms", &no_entry).dedup_key, None);
    }

    #[test]
    fn a_planned_event_records_the_versions_it_shows_and_is_not_recovered() {
        let publish = event(
            "entry.publish",
            json!({"documentId": "d1", "updatedAt": "2026-11-29T19:32:35.343Z",
                   "publishedAt": "2026-11-29T19:32:35.350Z"}),
        );
        let planned = storage("web/cms", &publish);
        assert!(!planned.recovered);
        let kinds: Vec<_> = planned
            .versions
            .iter()
            .map(|version| version.kind)
            .collect();
        assert_eq!(kinds, [VersionKind::Publication, VersionKind::Content]);
        assert_eq!(planned.versions, super::super::repair::versions(&publish));
    }

    async fn rendered(rejection: Rejection) -> (StatusCode, Option<Value>) {
        let response = rejection.into_response();
        let status = response.status();
        let body = to_bytes(response.into_body(), usize::MAX).await.unwrap();
        (status, serde_json::from_slice(&body).ok())
    }

    #[tokio::test]
    async fn a_rejection_renders_its_status_and_says_why_except_to_a_stranger() {
        let (status, body) = rendered(Rejection::UnknownInstance("web/cms".into())).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(
            body,
            Some(json!({"error": "no StrapiInstance web/cms is served here"}))
        );
        let (status, body) = rendered(Rejection::TooLarge(1024)).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        let error = body.unwrap()["error"].as_str().unwrap().to_owned();
        assert!(error.contains("1024 bytes"), "{error}");
        let (status, body) = rendered(Rejection::StoreFailed("event")).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body, Some(json!({"error": "storing the event failed"})));
        assert_eq!(
            rendered(Rejection::Unauthorized).await,
            (StatusCode::UNAUTHORIZED, None)
        );
    }

    #[test]
    fn a_rejection_names_the_instance_in_its_series_only_when_it_is_served() {
        let labels = Rejection::UnknownInstance("web/x".into()).labels("web/x");
        assert_eq!(labels.strapi_instance, UNKNOWN_INSTANCE);
        assert_eq!(labels.reason, RejectReason::UnknownInstance);
        assert_eq!(
            Rejection::NotReady.labels("web/x").strapi_instance,
            UNKNOWN_INSTANCE
        );
        let labels = Rejection::Unauthorized.labels("web/cms");
        assert_eq!(labels.strapi_instance, "web/cms");
        assert_eq!(labels.reason, RejectReason::Unauthorized);
        assert!(Rejection::NotReady.loses_the_event());
        assert!(Rejection::StoreFailed("event").loses_the_event());
        assert!(!Rejection::Malformed("bad".into()).loses_the_event());
    }
}
