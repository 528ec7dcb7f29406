//! The ingest endpoint Strapi calls: `POST /v1/instances/{namespace}/{name}`.
//!
//! A call is answered 2xx only after the event and its fan-out are durable in the queue, because
//! Strapi never sends an event twice. In order: the instance must be known (404), the shared
//! secret in [`SECRET_HEADER`] must match one accepted for it, compared in constant time (401,
//! without detail), the body must be JSON (415) within the size limit (413) and a Strapi event
//! (400, saying what is wrong). A `trigger-test` is recorded as a handshake and not routed. If
//! the store fails the answer is 503 and the failure is logged and counted.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

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
    source::Snapshot,
    tenant,
};
use crate::{
    config::CompiledWebhook,
    event::EventBody,
    queue::{IngestOutcome, NewDelivery, NewEvent, SinkKey, now_millis},
    routing::CompiledRoute,
};

pub use crate::event::SECRET_HEADER;

/// Strapi events whose meaning is fully given by (event, uid, documentId, locale), so a second
/// copy within the dedup window carries nothing new: Strapi 5 fires `entry.delete` for the draft
/// and the published row. Creates and updates carry content and are never collapsed.
const DEDUPLICATED_EVENTS: [&str; 3] = ["entry.delete", "entry.publish", "entry.unpublish"];

/// How long an ingest waits for one webhook's route filters. Filters are bounded by their cost
/// budget when loaded, so this only catches one that is slow on a pathological event.
pub const FILTER_TIME_LIMIT: Duration = Duration::from_millis(100);

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
    if !snapshot.synced {
        let message = "the receiver is still loading its configuration".to_owned();
        return reject(
            RejectReason::NotReady,
            StatusCode::SERVICE_UNAVAILABLE,
            Some(message),
        );
    }
    let Some(secrets) = snapshot.instances.get(&instance) else {
        let message = format!("no StrapiInstance {instance} is served here");
        return reject(
            RejectReason::UnknownInstance,
            StatusCode::NOT_FOUND,
            Some(message),
        );
    };
    let labels = InstanceLabels {
        strapi_instance: instance.clone(),
    };
    state.metrics.received.get_or_create(&labels).inc();
    if !authenticated(&headers, secrets) {
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

    match store(&state, &snapshot, &instance, &raw, &event, false, started).await {
        Ok(Stored {
            id,
            outcome: IngestOutcome::Stored,
            deliveries,
        }) => (
            StatusCode::OK,
            Json(json!({ "id": id, "deliveries": deliveries })),
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
    /// Deliveries it fanned out to.
    pub deliveries: usize,
}

/// Stores an authenticated, parsed event of `instance` with its fan-out, counts it and wakes
/// the sinks it goes to. Strapi's calls and the gap repair's recovered events both come through
/// here, so they share routes, filters, dedup and coalescing.
pub(super) async fn store(
    state: &ReceiverState,
    snapshot: &Snapshot,
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
    // Filters run on their own pool, which needs the event beyond this borrow.
    let deliveries = fan_out(snapshot, instance, &Arc::new(event.clone())).await;
    let sinks: Vec<SinkKey> = deliveries
        .iter()
        .map(|delivery| delivery.sink.clone())
        .collect();
    let count = deliveries.len();
    let versions = super::repair::versions(event);
    let new = NewEvent {
        id: id.clone(),
        instance: instance.to_owned(),
        event: event.event.clone(),
        received_at: now_millis(),
        raw: raw.to_vec(),
        dedup_key: dedup_key(instance, event),
        dedup_window_ms: i64::try_from(state.settings.dedup_window.as_millis()).unwrap_or(0),
        deliveries,
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
            if count == 0 {
                tracing::info!("stored; no route takes this event");
            } else {
                tracing::debug!(deliveries = count, "stored");
            }
            for sink in &sinks {
                state.engine.wake(sink);
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
        deliveries: count,
    })
}

fn authenticated(headers: &HeaderMap, accepted: &[String]) -> bool {
    let Some(given) = headers.get(SECRET_HEADER) else {
        return false;
    };
    // Every accepted secret is compared, so the time taken does not say which one came close.
    accepted.iter().fold(false, |found, secret| {
        found | bool::from(secret.as_bytes().ct_eq(given.as_bytes()))
    })
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

/// One delivery per (enabled webhook subscribed to the event, matching route). A route whose
/// filter fails on this event gets a delivery stored dead with the reason, so the failure is
/// visible and replayable rather than a silent drop. Each webhook's filters are tenant code:
/// they run off the async workers, all webhooks at once, and a webhook whose filters do not
/// finish within [`FILTER_TIME_LIMIT`] gets its filtered deliveries stored dead with that reason.
async fn fan_out(snapshot: &Snapshot, instance: &str, event: &Arc<EventBody>) -> Vec<NewDelivery> {
    let webhooks = snapshot
        .webhooks_of(instance)
        .filter(|webhook| webhook.enabled && webhook.events.contains(&event.event))
        .map(|webhook| route_webhook(Arc::clone(webhook), Arc::clone(event)));
    futures::future::join_all(webhooks)
        .await
        .into_iter()
        .flatten()
        .collect()
}

async fn route_webhook(webhook: Arc<CompiledWebhook>, event: Arc<EventBody>) -> Vec<NewDelivery> {
    let filtered = |route: &CompiledRoute| route.has_filter() && route.listed(&event);
    if !webhook.routes.iter().any(filtered) {
        return deliveries(&webhook, &event);
    }
    let evaluated = {
        let (webhook, event) = (Arc::clone(&webhook), Arc::clone(&event));
        tenant::run(tenant::Kind::Filter, FILTER_TIME_LIMIT, move || {
            deliveries(&webhook, &event)
        })
        .await
    };
    evaluated.unwrap_or_else(|| {
        tracing::warn!(webhook = %webhook.key, "route filters exceeded their time limit");
        webhook
            .routes
            .iter()
            .filter(|route| route.listed(&event))
            .map(|route| {
                let dead = route.has_filter().then(|| {
                    format!(
                        "filter of route {} exceeded its time limit of {} ms",
                        route.name(),
                        FILTER_TIME_LIMIT.as_millis()
                    )
                });
                delivery(&webhook, route, dead)
            })
            .collect()
    })
}

fn deliveries(webhook: &CompiledWebhook, event: &EventBody) -> Vec<NewDelivery> {
    webhook
        .routes
        .iter()
        .filter_map(|route| {
            let dead_on_arrival = match route.matches(event) {
                Ok(true) => None,
                Ok(false) => return None,
                Err(error) => Some(format!("filter of route {} failed: {error}", route.name())),
            };
            Some(delivery(webhook, route, dead_on_arrival))
        })
        .collect()
}

fn delivery(
    webhook: &CompiledWebhook,
    route: &CompiledRoute,
    dead_on_arrival: Option<String>,
) -> NewDelivery {
    NewDelivery {
        id: uuid::Uuid::now_v7().to_string(),
        sink: SinkKey {
            webhook: webhook.key.clone(),
            sink: route.sink().to_owned(),
        },
        route: route.name().to_owned(),
        dead_on_arrival,
    }
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
