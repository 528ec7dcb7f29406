//! The admin port: probes, metrics and the delivery API, kept off the port Strapi reaches.
//!
//! Open to anyone who reaches the port (the kubelet, Prometheus):
//! - `GET /healthz` — the process is up.
//! - `GET /readyz` — 200 once ingest can store events: the live configuration is loaded, or the
//!   last known one was read from the queue at start (see [`readiness`]); 503 before, and while
//!   storage writes fail.
//! - `GET /metrics` — Prometheus text format.
//!
//! The bodies are [`crate::admin_api`]'s types. Everything else needs `Authorization: Bearer
//! <admin token>` ([`authorize`]); requests that carry an `Origin` (browsers) are refused, and a
//! POST must send a JSON body:
//! - `GET /v1/instances/{namespace}/{name}/handshake` — Strapi's `trigger-test` calls seen.
//! - `GET /v1/deliveries?state=&webhook=&sink=&event=&limit=` — newest first, at most
//!   [`MAX_LIST_LIMIT`].
//! - `GET /v1/deliveries/{id}` — one delivery with the event it carries.
//! - `POST /v1/deliveries/{id}/replay` with `{}` — re-queue one dead or delivered delivery.
//! - `POST /v1/deliveries/replay` with `{"webhook": …, "sink": …}` (both optional) — re-queue
//!   every matching dead letter.
//! - `GET /v1/stats` — per webhook, per sink counters, and how many stored events wait for
//!   routing.
//! - `GET /v1/routing` — the generation of each instance and webhook this replica routes with.
//! - The gap repair's routes, see [`super::repair`].

pub mod routing;

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{Path, Query, Request, State},
    http::{Method, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use serde::Deserialize;
use serde_json::json;

use super::{ReceiverState, metrics::sink_labels};
use crate::{
    admin_api::{Handshake, ReplayDead, ReplayOne, Replayed, SinkCounters, Stats},
    key::ObjectKey,
    queue::{DeliveryFilter, DeliveryState, QueueError, ReplaySelector, now_millis},
};

/// Deliveries listed when the caller sets no limit.
pub const DEFAULT_LIST_LIMIT: u32 = 100;

/// The most deliveries one list call returns.
pub const MAX_LIST_LIMIT: u32 = 1000;

/// Paths served without the admin token: the probes and the metrics scrape.
const OPEN_PATHS: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// The admin router.
pub fn app(state: Arc<ReceiverState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .route("/v1/instances/{namespace}/{name}/handshake", get(handshake))
        .route("/v1/deliveries", get(list))
        .route("/v1/deliveries/replay", post(replay_dead))
        .route("/v1/deliveries/{id}", get(show))
        .route("/v1/deliveries/{id}/replay", post(replay_one))
        .route("/v1/stats", get(stats))
        .route("/v1/routing", get(routing::routing))
        .merge(super::repair::routes())
        // A layer over every route, so a route added later is authenticated too.
        .layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            authorize,
        ))
        .with_state(state)
}

/// Lets a request through to anything but [`OPEN_PATHS`] only with the admin token, without an
/// `Origin` (no page in a browser may drive the API, whatever DNS says its host is) and, for a
/// POST, with a JSON body (which a cross-site form cannot send).
async fn authorize(
    State(state): State<Arc<ReceiverState>>,
    request: Request,
    next: Next,
) -> Response {
    if OPEN_PATHS.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    let headers = request.headers();
    if headers.contains_key(header::ORIGIN) {
        let message = "requests from web pages (with an Origin header) are refused".to_owned();
        return error_response(StatusCode::FORBIDDEN, message);
    }
    let Some(token) = &state.settings.admin_token else {
        let message = "the admin API is off: no admin token is configured (RECEIVER_ADMIN_TOKEN)";
        return error_response(StatusCode::SERVICE_UNAVAILABLE, message.to_owned());
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    if !given.is_some_and(|given| token.matches(given)) {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            Json(json!({ "error": "a valid admin token is required (Authorization: Bearer)" })),
        )
            .into_response();
    }
    let json_body = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    if request.method() == Method::POST && !json_body {
        let message = "send a JSON body (Content-Type: application/json)".to_owned();
        return error_response(StatusCode::UNSUPPORTED_MEDIA_TYPE, message);
    }
    next.run(request).await
}

/// Whether the receiver answers ingest, or why not: the one rule behind `/readyz` and the
/// `ready` metric. Ready as soon as ingest can store events of some instance: once the live
/// configuration is loaded, or right after a restart once the last known one was read from the
/// queue (a Service sends no traffic to an unready pod, and with one replica Strapi's calls
/// would then fail until the watches sync: the window this closes). Not while storage writes
/// fail (every ingest would answer 503 then).
fn readiness(state: &ReceiverState) -> Result<(), String> {
    if !state.config.borrow().synced && state.known_instances().is_empty() {
        return Err("configuration not loaded yet".to_owned());
    }
    match state.queue.write_failure() {
        None => Ok(()),
        Some(failure) => Err(format!("storage writes are failing: {failure}")),
    }
}

/// `/readyz`. A failing store is probed with a small write in the background, so readiness
/// comes back once writes work again, without waiting for traffic.
async fn ready(State(state): State<Arc<ReceiverState>>) -> Response {
    let Err(reason) = readiness(&state) else {
        return "ready".into_response();
    };
    if state.queue.write_failure().is_some() {
        let queue = Arc::clone(&state.queue);
        tokio::spawn(async move {
            if let Err(error) = queue.probe_write().await {
                tracing::warn!(%error, "storage writes still fail");
            }
        });
    }
    (StatusCode::SERVICE_UNAVAILABLE, reason).into_response()
}

async fn metrics(State(state): State<Arc<ReceiverState>>) -> Response {
    state
        .metrics
        .ready
        .set(i64::from(readiness(&state).is_ok()));
    match state.queue.unrouted_count().await {
        Ok(unrouted) => {
            state
                .metrics
                .unrouted
                .set(i64::try_from(unrouted).unwrap_or(i64::MAX));
        }
        Err(error) => tracing::warn!(%error, "counting unrouted events failed"),
    }
    // Depth and holds are read at scrape time, so they are exact rather than event-driven.
    match state.queue.counters().await {
        Ok(counters) => {
            for (sink, counters) in counters {
                let labels = sink_labels(&sink);
                state
                    .metrics
                    .queue_depth
                    .get_or_create(&labels)
                    .set(counters.pending);
                state
                    .metrics
                    .dead_letters
                    .get_or_create(&labels)
                    .set(counters.dead_letters);
                let hold = state.engine.hold(&sink);
                let held = hold.paused.is_some() || hold.circuit_open;
                state
                    .metrics
                    .sink_held
                    .get_or_create(&labels)
                    .set(i64::from(held));
                let oldest_age_ms = counters
                    .oldest_pending_at
                    .map_or(0, |oldest| now_millis().saturating_sub(oldest).max(0));
                state
                    .metrics
                    .oldest_pending_age
                    .get_or_create(&labels)
                    .set(oldest_age_ms / 1000);
            }
        }
        Err(error) => tracing::error!(%error, "reading queue depth for /metrics failed"),
    }
    match state.metrics.encode() {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(error) => error_response(StatusCode::INTERNAL_SERVER_ERROR, error.to_string()),
    }
}

async fn handshake(
    State(state): State<Arc<ReceiverState>>,
    Path(instance): Path<(String, String)>,
) -> Response {
    match state
        .queue
        .handshake(ObjectKey::from(instance).to_string())
        .await
    {
        Ok(handshake) => Json(Handshake {
            count: handshake.count,
            last_at: handshake.last_at,
        })
        .into_response(),
        Err(error) => queue_error(error),
    }
}

/// Query of `GET /v1/deliveries`.
#[derive(Debug, Deserialize)]
struct ListQuery {
    state: Option<String>,
    webhook: Option<String>,
    sink: Option<String>,
    event: Option<String>,
    limit: Option<u32>,
}

async fn list(State(state): State<Arc<ReceiverState>>, Query(query): Query<ListQuery>) -> Response {
    let delivery_state = match query
        .state
        .as_deref()
        .map(|name| (name, DeliveryState::parse(name)))
    {
        None => None,
        Some((_, Some(parsed))) => Some(parsed),
        Some((name, None)) => {
            let message =
                format!("unknown state {name:?}; use pending, inflight, delivered or dead");
            return error_response(StatusCode::BAD_REQUEST, message);
        }
    };
    let limit = query.limit.unwrap_or(DEFAULT_LIST_LIMIT);
    if !(1..=MAX_LIST_LIMIT).contains(&limit) {
        let message = format!("limit must be between 1 and {MAX_LIST_LIMIT}, got {limit}");
        return error_response(StatusCode::BAD_REQUEST, message);
    }
    let filter = DeliveryFilter {
        state: delivery_state,
        webhook: query.webhook,
        sink: query.sink,
        event: query.event,
        limit,
    };
    match state.queue.list(filter).await {
        Ok(deliveries) => Json(deliveries).into_response(),
        Err(error) => queue_error(error),
    }
}

async fn show(State(state): State<Arc<ReceiverState>>, Path(id): Path<String>) -> Response {
    match state.queue.show(id).await {
        Ok(detail) => Json(detail).into_response(),
        Err(error) => queue_error(error),
    }
}

async fn replay_one(
    State(state): State<Arc<ReceiverState>>,
    Path(id): Path<String>,
    Json(ReplayOne {}): Json<ReplayOne>,
) -> Response {
    replay(&state, ReplaySelector::Id(id)).await
}

async fn replay_dead(
    State(state): State<Arc<ReceiverState>>,
    Json(body): Json<ReplayDead>,
) -> Response {
    replay(
        &state,
        ReplaySelector::DeadLetters {
            webhook: body.webhook,
            sink: body.sink,
        },
    )
    .await
}

async fn replay(state: &ReceiverState, selector: ReplaySelector) -> Response {
    match state.queue.replay(selector).await {
        Ok(affected) => {
            let mut replayed = 0;
            for (sink, count) in affected {
                tracing::info!(%sink, count, "replaying deliveries");
                state.engine.wake(&sink);
                replayed += count;
            }
            Json(Replayed { replayed }).into_response()
        }
        Err(error) => queue_error(error),
    }
}

async fn stats(State(state): State<Arc<ReceiverState>>) -> Response {
    // The unrouted backlog is read before the counters: an event the router moves in between is
    // then counted twice (unrouted, then pending) rather than nowhere, so `unrouted: 0` always
    // means every stored event's deliveries are in the counters.
    let unrouted = match state.queue.unrouted_count().await {
        Ok(unrouted) => unrouted,
        Err(error) => return queue_error(error),
    };
    let counters = match state.queue.counters().await {
        Ok(counters) => counters,
        Err(error) => return queue_error(error),
    };
    let mut stats = Stats {
        unrouted,
        ..Stats::default()
    };
    for (sink, counters) in counters {
        let hold = state.engine.hold(&sink);
        let time = |millis: Option<i64>| {
            millis
                .and_then(|millis| Timestamp::from_millisecond(millis).ok())
                .map(Time)
        };
        stats
            .webhooks
            .entry(sink.webhook.clone())
            .or_default()
            .push(SinkCounters {
                name: sink.sink.clone(),
                delivered: counters.delivered,
                failed: counters.failed,
                dead_lettered: counters.dead_lettered,
                pending: counters.pending,
                paused: hold.paused.is_some(),
                last_success_time: time(counters.last_success_at),
                last_error: hold.paused.or(counters.last_error),
            });
    }
    Json(stats).into_response()
}

pub(super) fn queue_error(error: QueueError) -> Response {
    let status = match &error {
        QueueError::NotFound(_) => StatusCode::NOT_FOUND,
        QueueError::NotReplayable { .. } => StatusCode::CONFLICT,
        QueueError::Closed => StatusCode::SERVICE_UNAVAILABLE,
        QueueError::Open { .. } | QueueError::Storage { .. } => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error_response(status, error.to_string())
}

/// A JSON `{"error": message}` answer with `status`.
pub(super) fn error_response(status: StatusCode, message: String) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}
