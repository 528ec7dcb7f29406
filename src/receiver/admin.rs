//! The admin port: probes, metrics and the delivery API, kept off the port Strapi reaches.
//!
//! - `GET /healthz` — the process is up.
//! - `GET /readyz` — 200 once the configuration is loaded, 503 before.
//! - `GET /metrics` — Prometheus text format.
//! - `GET /v1/instances/{namespace}/{name}/handshake` — Strapi's `trigger-test` calls seen.
//! - `GET /v1/deliveries?state=&webhook=&sink=&event=&limit=` — newest first.
//! - `GET /v1/deliveries/{id}` — one delivery with the event it carries.
//! - `POST /v1/deliveries/{id}/replay` — re-queue one dead or delivered delivery.
//! - `POST /v1/deliveries/replay?webhook=&sink=` — re-queue every matching dead letter.
//! - `GET /v1/stats` — per webhook, per sink counters in the shape of `SinkStatus`.
//! - The gap repair's routes, see [`super::repair`].

use std::{collections::BTreeMap, sync::Arc};

use axum::{
    Json, Router,
    extract::{Path, Query, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{ReceiverState, metrics::sink_labels};
use crate::{
    api::SinkStatus,
    queue::{DeliveryFilter, DeliveryState, QueueError, ReplaySelector},
};

/// Deliveries listed when the caller sets no limit.
pub const DEFAULT_LIST_LIMIT: u32 = 100;

/// The answer of `GET /v1/stats`: sink counters by webhook (`namespace/name`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// The counters of each webhook's sinks, ready for `StrapiWebhook.status.sinks`.
    pub webhooks: BTreeMap<String, Vec<SinkStatus>>,
}

/// The answer of the replay endpoints.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Replayed {
    /// How many deliveries were re-queued.
    pub replayed: i64,
}

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
        .merge(super::repair::routes())
        .with_state(state)
}

async fn ready(State(state): State<Arc<ReceiverState>>) -> Response {
    if state.config.borrow().synced {
        "ready".into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "configuration not loaded yet",
        )
            .into_response()
    }
}

async fn metrics(State(state): State<Arc<ReceiverState>>) -> Response {
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
                let hold = state.engine.hold(&sink);
                let held = hold.paused.is_some() || hold.circuit_open;
                state
                    .metrics
                    .sink_held
                    .get_or_create(&labels)
                    .set(i64::from(held));
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
    Path((namespace, name)): Path<(String, String)>,
) -> Response {
    match state.queue.handshake(format!("{namespace}/{name}")).await {
        Ok(handshake) => Json(handshake).into_response(),
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
    let filter = DeliveryFilter {
        state: delivery_state,
        webhook: query.webhook,
        sink: query.sink,
        event: query.event,
        limit: query.limit.unwrap_or(DEFAULT_LIST_LIMIT),
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

async fn replay_one(State(state): State<Arc<ReceiverState>>, Path(id): Path<String>) -> Response {
    replay(&state, ReplaySelector::Id(id)).await
}

/// Query of `POST /v1/deliveries/replay`.
#[derive(Debug, Deserialize)]
struct ReplayQuery {
    webhook: Option<String>,
    sink: Option<String>,
}

async fn replay_dead(
    State(state): State<Arc<ReceiverState>>,
    Query(query): Query<ReplayQuery>,
) -> Response {
    replay(
        &state,
        ReplaySelector::DeadLetters {
            webhook: query.webhook,
            sink: query.sink,
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
    let counters = match state.queue.counters().await {
        Ok(counters) => counters,
        Err(error) => return queue_error(error),
    };
    let mut stats = Stats::default();
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
            .push(SinkStatus {
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

fn error_response(status: StatusCode, message: String) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}
