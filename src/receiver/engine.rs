//! The delivery engine: one worker per sink, so a slow or dead sink only ever delays its own
//! deliveries.
//!
//! A worker claims due deliveries from the queue as its concurrency limit frees up, paces them
//! through a token bucket, renders each with its route from the *current* configuration and sends
//! it with [`SinkClient::send`]. The answer decides what happens next: done, retry after an
//! exponential backoff with jitter (or the sink's `Retry-After`), dead letter (after a permanent
//! error, or once max attempts or max age are reached), or pause the whole sink. A circuit
//! breaker stops claiming for a sink that keeps failing and lets a single probe through after a
//! cool-down, so a dead sink is not hammered and its deliveries keep their attempts for when it
//! is back. A sink with a coalesce window gets the deliveries that became due within the window
//! in one call: a full call's worth goes at once, the rest once its oldest delivery has waited
//! the window (counted from its event's ack), and when more than one call's worth are due, they
//! go in concurrent calls (oldest first, up to the sink's concurrency), so a storm's last page
//! is not one window per call late.
//!
//! Delivery is at least once: a delivery is marked done only after the sink answered, so a crash
//! between the two sends it again, with the same `webhook-id` for the sink to deduplicate.

use std::{
    collections::{HashMap, HashSet},
    num::NonZeroU32,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use futures::future::join_all;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use opentelemetry::KeyValue;
use rand::Rng;
use tokio::{
    sync::{Notify, OwnedSemaphorePermit, Semaphore, watch},
    task::JoinSet,
};
use tracing::{Instrument, info_span};

use super::{
    metrics::{Metrics, sink_labels},
    source::Snapshot,
    tenant,
};
use crate::{
    config::CompiledWebhook,
    event::EventBody,
    queue::{ClaimedDelivery, Completion, Queue, SinkKey, UnixMillis, now_millis},
    routing::Payload,
    sinks::{DeliveryPolicy, Outcome, SinkClient, SinkConfig},
    traces::{Attempt, TRACEPARENT_HEADER, Tracer},
};

// How long a delivery's templates may take to render (they are bounded by minijinja fuel, so
// this only catches what fuel does not count, such as one huge built-in operation).
const RENDER_TIME_LIMIT: Duration = Duration::from_secs(1);
// Consecutive failed attempts after which a sink's circuit opens.
const TRIP_AFTER: u32 = 5;
// Most deliveries merged into one call of a coalescing sink.
const MAX_COALESCED: u32 = 1000;
// How long a worker waits for work before looking again when nothing woke it; covers leases that
// run out and deliveries replayed through another path.
const IDLE_RECHECK: Duration = Duration::from_secs(5);

/// Engine knobs that are not per sink.
#[derive(Clone, Debug)]
pub struct EngineSettings {
    /// On shutdown, how long in-flight attempts may take before they are abandoned (and handed
    /// back to the queue).
    pub shutdown_grace: Duration,
    /// How often deliveries of webhooks that left the configuration are dead-lettered and old
    /// delivered deliveries pruned.
    pub sweep_interval: Duration,
    /// How long delivered deliveries (and their events) stay listable before they are pruned.
    /// Dead letters are kept until replayed.
    pub retention: Duration,
    /// Where the spans of ingests and delivery attempts go.
    pub tracer: Tracer,
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self {
            shutdown_grace: Duration::from_secs(10),
            sweep_interval: Duration::from_secs(30),
            retention: Duration::from_secs(24 * 3600),
            tracer: Tracer::default(),
        }
    }
}

/// Why a sink is held back.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SinkHold {
    /// Set after the sink said it is gone; cleared when its configuration changes.
    pub paused: Option<String>,
    /// True while the circuit breaker keeps the sink closed.
    pub circuit_open: bool,
}

/// The engine. Create it with [`Engine::new`], run it with [`Engine::run`].
pub struct Engine {
    queue: Arc<dyn Queue>,
    client: SinkClient,
    config: watch::Receiver<Arc<Snapshot>>,
    metrics: Arc<Metrics>,
    settings: EngineSettings,
    workers: Mutex<HashMap<SinkKey, Arc<Worker>>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// An engine over `queue`, configured by the snapshots of `config`.
    pub fn new(
        queue: Arc<dyn Queue>,
        client: SinkClient,
        config: watch::Receiver<Arc<Snapshot>>,
        metrics: Arc<Metrics>,
        settings: EngineSettings,
    ) -> Arc<Self> {
        Arc::new(Self {
            queue,
            client,
            config,
            metrics,
            settings,
            workers: Mutex::default(),
        })
    }

    /// Tells the sink's worker that deliveries were stored for it. A worker holding off (its
    /// sink paused, or its circuit open) is left asleep: it looks at the queue when the hold
    /// ends, and waking it for each event stored meanwhile cost a thread wake-up per event.
    pub fn wake(&self, sink: &SinkKey) {
        if let Some(worker) = lock(&self.workers).get(sink)
            && worker.hold_for(Instant::now()).is_zero()
        {
            worker.wake.notify_one();
        }
    }

    /// Records a stored event's ingest, from `started` until now, as the root span of its
    /// trace.
    pub fn traced_ingest(&self, event_id: &str, instance: &str, event: &str, started: Instant) {
        let tracer = &self.settings.tracer;
        if !tracer.exporting() {
            return;
        }
        let started = std::time::SystemTime::now() - started.elapsed();
        let attributes = vec![
            KeyValue::new("strapi.instance", instance.to_owned()),
            KeyValue::new("strapi.event", event.to_owned()),
            KeyValue::new("event.id", event_id.to_owned()),
        ];
        tracer.ingested(event_id, started, attributes);
    }

    /// Why a sink is held back, if it is.
    pub fn hold(&self, sink: &SinkKey) -> SinkHold {
        lock(&self.workers)
            .get(sink)
            .map(|worker| worker.hold())
            .unwrap_or_default()
    }

    /// Runs until `shutdown` turns true, then lets in-flight attempts finish within the grace
    /// period and hands the rest back to the queue.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut config = self.config.clone();
        let mut tasks = JoinSet::new();
        let mut sweep = tokio::time::interval(self.settings.sweep_interval);
        // A source that went away leaves its last snapshot in force; delivery goes on.
        let mut source_alive = true;
        loop {
            let snapshot = Arc::clone(&config.borrow_and_update());
            self.reconcile(&snapshot, &mut tasks, &shutdown);
            let sweep_due = tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => break,
                changed = config.changed(), if source_alive => {
                    source_alive = changed.is_ok();
                    false
                }
                _ = sweep.tick() => true,
            };
            if sweep_due {
                self.sweep(&snapshot).await;
            }
        }
        for worker in lock(&self.workers).values() {
            worker.wake.notify_one();
        }
        while tasks.join_next().await.is_some() {}
    }

    /// Starts a worker for every configured sink that has none, and retires workers whose sink
    /// left the configuration or whose webhook changed (the new generation gets a fresh worker).
    fn reconcile(
        self: &Arc<Self>,
        snapshot: &Snapshot,
        tasks: &mut JoinSet<()>,
        shutdown: &watch::Receiver<bool>,
    ) {
        let mut workers = lock(&self.workers);
        workers.retain(|key, worker| {
            let current = snapshot.webhooks.get(&key.webhook);
            let keep = current.is_some_and(|webhook| {
                Arc::ptr_eq(webhook, &worker.webhook) && webhook.sinks.contains_key(&key.sink)
            });
            if !keep {
                worker.retire();
            }
            keep
        });
        for webhook in snapshot.webhooks.values() {
            for name in webhook.sinks.keys() {
                let key = SinkKey {
                    webhook: webhook.key.clone(),
                    sink: name.clone(),
                };
                if workers.contains_key(&key) {
                    continue;
                }
                let worker = Arc::new(Worker::new(key.clone(), Arc::clone(webhook)));
                workers.insert(key, Arc::clone(&worker));
                tasks.spawn(Arc::clone(self).work(worker, shutdown.clone()));
            }
        }
    }

    /// Prunes delivered deliveries past the retention, and dead-letters waiting deliveries of
    /// sinks that are no longer configured.
    async fn sweep(&self, snapshot: &Snapshot) {
        let retention = i64::try_from(self.settings.retention.as_millis()).unwrap_or(i64::MAX);
        match self
            .queue
            .prune(now_millis().saturating_sub(retention))
            .await
        {
            Ok(0) => {}
            Ok(pruned) => tracing::debug!(pruned, "pruned delivered deliveries"),
            Err(error) => tracing::error!(%error, "pruning delivered deliveries failed"),
        }
        if !snapshot.synced {
            return;
        }
        let waiting = match self.queue.waiting_sinks().await {
            Ok(waiting) => waiting,
            Err(error) => {
                tracing::error!(%error, "listing sinks with waiting deliveries failed");
                return;
            }
        };
        for sink in waiting {
            let configured = snapshot
                .webhooks
                .get(&sink.webhook)
                .is_some_and(|webhook| webhook.sinks.contains_key(&sink.sink));
            if configured {
                continue;
            }
            let reason = format!("sink {sink} is no longer configured");
            match self.queue.dead_letter_waiting(sink.clone(), reason).await {
                Ok(count) => {
                    tracing::warn!(%sink, count, "dead-lettered deliveries of a removed sink");
                    self.metrics
                        .dead_lettered
                        .get_or_create(&sink_labels(&sink))
                        .inc_by(count);
                }
                Err(error) => {
                    tracing::error!(%sink, %error, "dead-lettering a removed sink failed")
                }
            }
        }
    }

    async fn work(self: Arc<Self>, worker: Arc<Worker>, mut shutdown: watch::Receiver<bool>) {
        let Some((_, policy)) = worker.webhook.sink(&worker.key.sink).cloned() else {
            return;
        };
        let concurrency = usize::try_from(policy.concurrency.max(1)).unwrap_or(1);
        let permits = Arc::new(Semaphore::new(concurrency));
        let limiter = Arc::new(rate_limiter(&policy));
        let coalesce = worker.sink_config().and_then(|sink| sink.coalesce_window());
        let mut sends = JoinSet::new();
        let span = info_span!("sink", webhook = %worker.key.webhook, sink = %worker.key.sink);
        async {
            loop {
                while sends.try_join_next().is_some() {}
                if *shutdown.borrow() || worker.is_retired() {
                    break;
                }
                let wait = worker.hold_for(Instant::now());
                if wait > Duration::ZERO {
                    self.idle(&worker, &mut shutdown, wait).await;
                    continue;
                }
                let first = tokio::select! {
                    permit = Arc::clone(&permits).acquire_owned() => permit,
                    _ = shutdown.wait_for(|stop| *stop) => break,
                    () = worker.wake.notified() => continue,
                };
                let Ok(first) = first else { break };
                // The send that held the permit may just have paused the sink or opened the
                // circuit; look again before claiming, or one more request goes out.
                if worker.hold_for(Instant::now()) > Duration::ZERO {
                    continue;
                }
                let mut held = vec![first];
                // With the circuit half-open, the one permit held is the probe that decides
                // whether the sink is back; otherwise take every free permit.
                if !worker.probing() {
                    held.extend(std::iter::from_fn(|| {
                        Arc::clone(&permits).try_acquire_owned().ok()
                    }));
                }
                // One call per permit held: a coalescing sink's backlog larger than one call
                // goes out in concurrent calls instead of one call per window.
                let calls = u32::try_from(held.len()).unwrap_or(1);
                let per_call = if coalesce.is_some() { MAX_COALESCED } else { 1 };
                let mut limit = per_call.saturating_mul(calls);
                if let Some(window) = coalesce {
                    match self.ripe(&worker, window, limit).await {
                        Ripe::Now(ripe) => limit = ripe,
                        Ripe::In(wait) => {
                            drop(held);
                            self.idle(&worker, &mut shutdown, wait).await;
                            continue;
                        }
                    }
                }
                // The calls run side by side, so each needs the lease one call of its size
                // needed alone.
                let lease = lease_ms(&policy, per_call.max(calls));
                let claimed = match self
                    .queue
                    .claim(worker.key.clone(), now_millis(), limit, lease)
                    .await
                {
                    Ok(claimed) => claimed,
                    Err(error) => {
                        tracing::error!(%error, "claiming deliveries failed");
                        drop(held);
                        self.idle(&worker, &mut shutdown, policy.backoff_initial)
                            .await;
                        continue;
                    }
                };
                if claimed.is_empty() {
                    drop(held);
                    let wait = self.until_next_due(&worker).await;
                    self.idle(&worker, &mut shutdown, wait).await;
                    continue;
                }
                worker.track(claimed.iter().map(|delivery| delivery.id.clone()));
                // The claim is in due order, so the oldest deliveries go in the first call.
                let mut claimed = claimed.into_iter();
                for permit in held {
                    let batch: Vec<ClaimedDelivery> =
                        claimed.by_ref().take(per_call as usize).collect();
                    if batch.is_empty() {
                        break;
                    }
                    sends.spawn(Arc::clone(&self).send_batch(
                        Arc::clone(&worker),
                        Arc::clone(&limiter),
                        batch,
                        permit,
                    ));
                }
            }
            self.drain(&worker, sends).await;
        }
        .instrument(span)
        .await;
    }

    /// How many deliveries a coalescing sink sends now (at most `most`), or how long it waits
    /// first. Full calls go at once: waiting would not merge anything more into them. What
    /// does not fill a call waits until the oldest of it has waited `window`, counted from
    /// when it became due (its event's ack, not when the router got to it), so a storm ends
    /// in one partial call and a lone edit is sent one window after its ack.
    async fn ripe(&self, worker: &Worker, window: Duration, most: u32) -> Ripe {
        let now = now_millis();
        let due = match self.queue.due(worker.key.clone(), now, most).await {
            Ok(due) => due,
            Err(error) => {
                tracing::error!(%error, "reading what is due failed; claiming what is");
                return Ripe::Now(most);
            }
        };
        let Some(since) = due.since else {
            return Ripe::In(self.until_next_due(worker).await);
        };
        let ripe_at = since.saturating_add(millis(window));
        if ripe_at <= now {
            return Ripe::Now(most);
        }
        let full = due.count / MAX_COALESCED * MAX_COALESCED;
        if full > 0 {
            return Ripe::Now(full.min(most));
        }
        Ripe::In(Duration::from_millis(
            u64::try_from(ripe_at - now).unwrap_or(0),
        ))
    }

    async fn idle(&self, worker: &Worker, shutdown: &mut watch::Receiver<bool>, wait: Duration) {
        tokio::select! {
            () = tokio::time::sleep(wait.min(IDLE_RECHECK)) => {}
            () = worker.wake.notified() => {}
            _ = shutdown.wait_for(|stop| *stop) => {}
        }
    }

    async fn until_next_due(&self, worker: &Worker) -> Duration {
        match self.queue.next_due(worker.key.clone()).await {
            Ok(Some(due)) => Duration::from_millis(
                u64::try_from(due.saturating_sub(now_millis()))
                    .unwrap_or(0)
                    .max(1),
            ),
            Ok(None) => IDLE_RECHECK,
            Err(error) => {
                tracing::error!(%error, "reading the next due delivery failed");
                IDLE_RECHECK
            }
        }
    }

    /// Waits for in-flight attempts up to the grace period; what is still running is abandoned
    /// and handed back so the next start (or another replica) sends it.
    async fn drain(&self, worker: &Worker, mut sends: JoinSet<()>) {
        let finished = tokio::time::timeout(self.settings.shutdown_grace, async {
            while sends.join_next().await.is_some() {}
        })
        .await;
        if finished.is_ok() {
            return;
        }
        sends.abort_all();
        let abandoned = worker.take_inflight();
        tracing::warn!(
            count = abandoned.len(),
            "handing back attempts still running at shutdown"
        );
        for id in abandoned {
            let release = Completion::Release {
                next_attempt_at: now_millis(),
            };
            if let Err(error) = self.queue.complete(id.clone(), release).await {
                tracing::error!(delivery_id = %id, %error, "handing back a delivery failed");
            }
        }
    }

    /// Renders and sends one delivery, or for a coalescing sink several as one call, and records
    /// the outcome for each.
    async fn send_batch(
        self: Arc<Self>,
        worker: Arc<Worker>,
        limiter: Arc<DefaultDirectRateLimiter>,
        deliveries: Vec<ClaimedDelivery>,
        permit: OwnedSemaphorePermit,
    ) {
        let snapshot = self.config.borrow().clone();
        let (webhook, (sink, policy)) = match configured(&snapshot, &worker.key) {
            Ok(configured) => configured,
            Err(reason) => {
                for delivery in deliveries {
                    let error = reason.clone();
                    self.finish(&worker, &delivery, Completion::DeadLetter { error })
                        .await;
                }
                return;
            }
        };
        let ready = self
            .render_batch(&worker, webhook, policy, deliveries)
            .await;
        self.send_rendered(&worker, &limiter, sink, policy, &ready, permit)
            .await;
    }

    /// The `deliveries` rendered for the sink, each with its span; a delivery out of attempts
    /// (the receiver stopped while sending it) or that does not render is dead-lettered instead.
    async fn render_batch(
        &self,
        worker: &Worker,
        webhook: &Arc<CompiledWebhook>,
        policy: &DeliveryPolicy,
        deliveries: Vec<ClaimedDelivery>,
    ) -> Vec<Rendered> {
        let mut renderable = Vec::with_capacity(deliveries.len());
        for delivery in deliveries {
            match unfinished(&delivery, policy) {
                Some(error) => {
                    delivery_span(&delivery)
                        .in_scope(|| tracing::warn!(%error, "dead-lettered: poison delivery"));
                    self.finish(worker, &delivery, Completion::DeadLetterUntried { error })
                        .await;
                }
                None => renderable.push(delivery),
            }
        }
        let (renderable, payloads) = render_off_workers(webhook, renderable).await;
        let mut ready = Vec::with_capacity(renderable.len());
        for (delivery, payload) in renderable.into_iter().zip(payloads) {
            let span = delivery_span(&delivery);
            match payload {
                Ok(payload) => ready.push((delivery, payload, span)),
                Err(error) => {
                    span.in_scope(|| tracing::warn!(%error, "dead-lettered: cannot render"));
                    self.finish(worker, &delivery, Completion::DeadLetter { error })
                        .await;
                }
            }
        }
        ready
    }

    /// Sends the rendered deliveries (none, one or more merged) to the sink in one call, once the
    /// sink's rate limit allows, and records the outcome for each.
    async fn send_rendered(
        &self,
        worker: &Worker,
        limiter: &DefaultDirectRateLimiter,
        sink: &SinkConfig,
        policy: &DeliveryPolicy,
        ready: &[Rendered],
        permit: OwnedSemaphorePermit,
    ) {
        let Some((first, _, first_span)) = ready.first() else {
            return;
        };
        let payloads: Vec<Payload> = ready
            .iter()
            .map(|(_, payload, _)| payload.clone())
            .collect();
        limiter.until_ready().await;
        let labels = sink_labels(&worker.key);
        let started = Instant::now();
        // Each delivery's attempt is a span of its event's trace; a merged call carries the
        // first one's `traceparent`.
        let tracer = &self.settings.tracer;
        let attempts: Vec<Attempt> = ready
            .iter()
            .map(|(delivery, _, _)| tracer.attempt(&delivery.event_id))
            .collect();
        let traceparent = attempts[0].traceparent();
        let mut marks = vec![(TRACEPARENT_HEADER, traceparent.as_str())];
        // A merged call carries recovered content if any of its deliveries does.
        if ready.iter().any(|(delivery, _, _)| delivery.recovered) {
            marks.push((super::repair::RECOVERED_HEADER, "true"));
        }
        let outcome = self
            .client
            .send_marked(sink, policy, &first.id, &payloads, &marks)
            .instrument(first_span.clone())
            .await;
        self.metrics
            .delivery_seconds
            .get_or_create(&labels)
            .observe(started.elapsed().as_secs_f64());
        worker.record(&outcome, policy);
        if let Outcome::PauseSink { reason } = &outcome {
            worker.pause(reason.clone());
        }
        // The permit bounds the calls in flight at the sink; recording the outcomes is not one.
        drop(permit);
        // Recorded together, the outcomes of a merged call share the queue's commits instead of
        // waiting for one commit each.
        let now = now_millis();
        join_all(
            ready
                .iter()
                .zip(&attempts)
                .map(|((delivery, _, span), attempt)| {
                    let completion = decide(&outcome, delivery, policy, now);
                    if tracer.exporting() {
                        tracer.attempted(attempt, attempt_attributes(delivery), failure(&outcome));
                    }
                    span.in_scope(|| log_completion(&completion, delivery));
                    self.finish(worker, delivery, completion)
                }),
        )
        .await;
    }

    async fn finish(&self, worker: &Worker, delivery: &ClaimedDelivery, completion: Completion) {
        let labels = sink_labels(&worker.key);
        match &completion {
            Completion::Delivered => self.metrics.delivered.get_or_create(&labels).inc(),
            Completion::Retry { .. } => self.metrics.retried.get_or_create(&labels).inc(),
            Completion::DeadLetter { .. } | Completion::DeadLetterUntried { .. } => {
                self.metrics.dead_lettered.get_or_create(&labels).inc()
            }
            Completion::Release { .. } => 0,
        };
        if let Err(error) = self.queue.complete(delivery.id.clone(), completion).await {
            // The lease runs out and the delivery is sent again: at least once still holds.
            tracing::error!(delivery_id = %delivery.id, %error, "recording a delivery outcome failed");
        }
        worker.untrack(&delivery.id);
    }
}

/// What a coalescing sink does next: see [`Engine::ripe`].
enum Ripe {
    /// Claim up to this many deliveries now.
    Now(u32),
    /// Wait this long, or until woken, and look again.
    In(Duration),
}

/// A delivery rendered for its sink, with the span of its attempt.
type Rendered = (ClaimedDelivery, Payload, tracing::Span);

/// The webhook a worker sends for and its sink's configuration and policy, as the live
/// configuration has them; why not, once it no longer has them.
fn configured<'a>(
    snapshot: &'a Snapshot,
    key: &SinkKey,
) -> Result<(&'a Arc<CompiledWebhook>, &'a (SinkConfig, DeliveryPolicy)), String> {
    let Some(webhook) = snapshot.webhooks.get(&key.webhook) else {
        return Err(format!("webhook {} is no longer configured", key.webhook));
    };
    webhook
        .sink(&key.sink)
        .map(|sink| (webhook, sink))
        .ok_or_else(|| format!("sink {key} is no longer configured"))
}

fn delivery_span(delivery: &ClaimedDelivery) -> tracing::Span {
    info_span!(
        "delivery",
        delivery_id = %delivery.id,
        event_id = %delivery.event_id,
        webhook = %delivery.sink.webhook,
        sink = %delivery.sink.sink,
        route = %delivery.route,
        attempt = delivery.attempts.saturating_add(1),
    )
}

/// What an attempt's span says about it: which delivery of which event, to which sink, which try.
fn attempt_attributes(delivery: &ClaimedDelivery) -> Vec<KeyValue> {
    vec![
        KeyValue::new("event.id", delivery.event_id.clone()),
        KeyValue::new("delivery.id", delivery.id.clone()),
        KeyValue::new("webhook", delivery.sink.webhook.clone()),
        KeyValue::new("sink", delivery.sink.sink.clone()),
        KeyValue::new("route", delivery.route.clone()),
        KeyValue::new(
            "delivery.attempt",
            i64::from(delivery.attempts.saturating_add(1)),
        ),
        KeyValue::new("delivery.recovered", delivery.recovered),
    ]
}

/// Why an attempt did not deliver, if it did not.
fn failure(outcome: &Outcome) -> Option<String> {
    match outcome {
        Outcome::Delivered => None,
        Outcome::Retry { reason, .. }
        | Outcome::DeadLetter { reason }
        | Outcome::PauseSink { reason } => Some(reason.clone()),
    }
}

fn log_completion(completion: &Completion, delivery: &ClaimedDelivery) {
    match completion {
        Completion::Delivered => tracing::debug!("delivered"),
        Completion::Retry {
            next_attempt_at,
            error,
        } => tracing::info!(
            %error,
            retry_in_ms = next_attempt_at.saturating_sub(now_millis()),
            "attempt failed; will retry"
        ),
        Completion::DeadLetter { error } | Completion::DeadLetterUntried { error } => {
            tracing::warn!(%error, attempts = delivery.attempts.saturating_add(1), "dead-lettered")
        }
        Completion::Release { .. } => tracing::info!("held back: the sink is paused"),
    }
}

/// Renders deliveries, handing them back with their payloads in the same order; when a route has
/// templates they render as tenant code, off the async workers, each held to
/// [`RENDER_TIME_LIMIT`].
async fn render_off_workers(
    webhook: &Arc<CompiledWebhook>,
    deliveries: Vec<ClaimedDelivery>,
) -> (Vec<ClaimedDelivery>, Vec<Result<Payload, String>>) {
    let templated = deliveries.iter().any(|delivery| {
        webhook
            .route(&delivery.route)
            .is_some_and(|route| route.has_templates())
    });
    if !templated {
        let payloads = deliveries
            .iter()
            .map(|delivery| render(webhook, delivery))
            .collect();
        return (deliveries, payloads);
    }
    let deliveries = Arc::new(deliveries);
    let rendering = Arc::clone(webhook);
    let payloads = tenant::run_each(
        tenant::Kind::Template,
        RENDER_TIME_LIMIT,
        Arc::clone(&deliveries),
        move |delivery| render(&rendering, delivery),
    )
    .await
    .into_iter()
    .map(|payload| {
        payload.unwrap_or_else(|| {
            Err(format!(
                "rendering exceeded its time limit of {} ms",
                RENDER_TIME_LIMIT.as_millis()
            ))
        })
    })
    .collect();
    (Arc::unwrap_or_clone(deliveries), payloads)
}

fn render(webhook: &CompiledWebhook, delivery: &ClaimedDelivery) -> Result<Payload, String> {
    let route = webhook.route(&delivery.route).ok_or_else(|| {
        format!(
            "route {} is no longer in webhook {}",
            delivery.route, webhook.key
        )
    })?;
    let event = EventBody::parse(&delivery.raw)
        .map_err(|error| format!("the stored event does not parse: {error}"))?;
    route
        .render(&event, &delivery.raw)
        .map_err(|error| error.to_string())
}

/// Why a delivery is given up before it is tried again, if it is: every attempt is counted
/// when it is claimed, and an attempt that ended normally below max attempts was retried, so a
/// delivery already claimed max-attempts times ended its last attempt without any outcome. The
/// receiver crashed (or was killed) while delivering it, perhaps because of it; trying again
/// would only crash it again.
fn unfinished(delivery: &ClaimedDelivery, policy: &DeliveryPolicy) -> Option<String> {
    (delivery.attempts >= policy.max_attempts).then(|| {
        format!(
            "gave up after {} attempts: the receiver stopped while delivering",
            delivery.attempts
        )
    })
}

/// What to record after an attempt that ended in `outcome`.
fn decide(
    outcome: &Outcome,
    delivery: &ClaimedDelivery,
    policy: &DeliveryPolicy,
    now: UnixMillis,
) -> Completion {
    let attempts = delivery.attempts.saturating_add(1);
    match outcome {
        Outcome::Delivered => Completion::Delivered,
        Outcome::DeadLetter { reason } => Completion::DeadLetter {
            error: reason.clone(),
        },
        // The pause holds the sink; the delivery waits with it and keeps its attempts.
        Outcome::PauseSink { .. } => Completion::Release {
            next_attempt_at: now,
        },
        Outcome::Retry {
            reason,
            retry_after,
        } => {
            let age = Duration::from_millis(
                u64::try_from(now.saturating_sub(delivery.enqueued_at)).unwrap_or(0),
            );
            if attempts >= policy.max_attempts {
                return Completion::DeadLetter {
                    error: format!("gave up after {attempts} attempts: {reason}"),
                };
            }
            // A sink's `Retry-After` is honoured up to the policy's longest backoff: a sink
            // (or whatever answers at its address) must not park a delivery for ever.
            let delay = retry_after.map_or_else(
                || backoff(policy, delivery.attempts),
                |asked| asked.min(policy.backoff_max),
            );
            if age.saturating_add(delay) > policy.max_age {
                return Completion::DeadLetter {
                    error: format!(
                        "gave up after {attempts} attempts, older than {:?}: {reason}",
                        policy.max_age
                    ),
                };
            }
            Completion::Retry {
                next_attempt_at: now.saturating_add(millis(delay)),
                error: reason.clone(),
            }
        }
    }
}

/// Exponential backoff with "equal jitter": half the delay is fixed, half random, so retries of
/// a burst spread out without ever retrying sooner than half the nominal delay.
fn backoff(policy: &DeliveryPolicy, previous_attempts: u32) -> Duration {
    let nominal = policy
        .backoff_initial
        .saturating_mul(2u32.saturating_pow(previous_attempts.min(20)))
        .min(policy.backoff_max);
    let half = nominal / 2;
    // Rounding through f64 may land a hair above `half` for the largest durations.
    half.saturating_add(half.mul_f64(rand::rng().random::<f64>()))
        .min(nominal)
}

/// A duration in the queue's milliseconds, saturating.
fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

fn lease_ms(policy: &DeliveryPolicy, claimed: u32) -> i64 {
    // Long enough for every claimed delivery to wait its turn in the token bucket and time out
    // once; a lease that runs out only means a second attempt, never a lost delivery.
    let pacing =
        Duration::from_secs_f64(f64::from(claimed) / f64::from(policy.rate_per_second.max(1)));
    let lease = policy
        .timeout
        .saturating_mul(2)
        .saturating_add(pacing)
        .saturating_add(Duration::from_secs(30));
    millis(lease)
}

fn rate_limiter(policy: &DeliveryPolicy) -> DefaultDirectRateLimiter {
    let rate = NonZeroU32::new(policy.rate_per_second).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(policy.burst).unwrap_or(rate);
    RateLimiter::direct(Quota::per_second(rate).allow_burst(burst))
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The guarded data stays consistent at every await-free step, so a panic elsewhere does not
    // make it unusable.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One sink's worker state, shared with its in-flight attempts.
struct Worker {
    key: SinkKey,
    webhook: Arc<CompiledWebhook>,
    wake: Notify,
    state: Mutex<WorkerState>,
}

#[derive(Default)]
struct WorkerState {
    retired: bool,
    paused: Option<String>,
    consecutive_failures: u32,
    trips: u32,
    open_until: Option<Instant>,
    inflight: HashSet<String>,
}

impl Worker {
    fn new(key: SinkKey, webhook: Arc<CompiledWebhook>) -> Self {
        Self {
            key,
            webhook,
            wake: Notify::new(),
            state: Mutex::default(),
        }
    }

    fn sink_config(&self) -> Option<&SinkConfig> {
        self.webhook.sink(&self.key.sink).map(|(sink, _)| sink)
    }

    fn retire(&self) {
        lock(&self.state).retired = true;
        self.wake.notify_one();
    }

    fn is_retired(&self) -> bool {
        lock(&self.state).retired
    }

    fn pause(&self, reason: String) {
        lock(&self.state).paused = Some(reason);
    }

    fn hold(&self) -> SinkHold {
        let state = lock(&self.state);
        SinkHold {
            paused: state.paused.clone(),
            circuit_open: state.open_until.is_some_and(|until| until > Instant::now()),
        }
    }

    /// How long to hold off claiming: for ever while paused (until the configuration changes
    /// and retires this worker), until the cool-down ends while the circuit is open.
    fn hold_for(&self, now: Instant) -> Duration {
        let state = lock(&self.state);
        if state.paused.is_some() {
            return IDLE_RECHECK;
        }
        state
            .open_until
            .map_or(Duration::ZERO, |until| until.saturating_duration_since(now))
    }

    /// True when the circuit has tripped and the next attempt is the probe.
    fn probing(&self) -> bool {
        lock(&self.state).consecutive_failures >= TRIP_AFTER
    }

    fn record(&self, outcome: &Outcome, policy: &DeliveryPolicy) {
        let mut state = lock(&self.state);
        match outcome {
            Outcome::Retry { .. } => {
                state.consecutive_failures += 1;
                if state.consecutive_failures >= TRIP_AFTER {
                    state.trips += 1;
                    let cooldown = policy
                        .backoff_initial
                        .saturating_mul(2u32.saturating_pow(state.trips.min(20)))
                        .clamp(
                            Duration::from_secs(1),
                            policy.backoff_max.max(Duration::from_secs(1)),
                        );
                    let now = Instant::now();
                    // An unrepresentable instant (a backoff max of centuries) means a year.
                    state.open_until = now
                        .checked_add(cooldown)
                        .or_else(|| now.checked_add(Duration::from_secs(365 * 24 * 3600)));
                    tracing::warn!(cooldown_ms = cooldown.as_millis(), "circuit opened");
                }
            }
            Outcome::Delivered | Outcome::DeadLetter { .. } => {
                // A permanent error is the request's fault, not the sink's: the sink answered.
                if state.consecutive_failures >= TRIP_AFTER {
                    tracing::info!("circuit closed");
                }
                state.consecutive_failures = 0;
                state.trips = 0;
                state.open_until = None;
            }
            Outcome::PauseSink { .. } => {}
        }
    }

    fn track(&self, ids: impl Iterator<Item = String>) {
        lock(&self.state).inflight.extend(ids);
    }

    fn untrack(&self, id: &str) {
        lock(&self.state).inflight.remove(id);
    }

    fn take_inflight(&self) -> Vec<String> {
        lock(&self.state).inflight.drain().collect()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn policy() -> DeliveryPolicy {
        DeliveryPolicy {
            timeout: Duration::from_secs(5),
            max_attempts: 3,
            max_age: Duration::from_secs(3600),
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            rate_per_second: 10,
            burst: 10,
            concurrency: 4,
            egress: crate::sinks::EgressRules::default(),
        }
    }

    fn delivery(attempts: u32, enqueued_at: UnixMillis) -> ClaimedDelivery {
        ClaimedDelivery {
            id: "d".into(),
            event_id: "e".into(),
            sink: SinkKey {
                webhook: "ns/w".into(),
                sink: "s".into(),
            },
            route: "r".into(),
            attempts,
            enqueued_at,
            raw: Vec::new(),
            recovered: false,
        }
    }

    fn retry(after: Option<Duration>) -> Outcome {
        Outcome::Retry {
            reason: "503 Service Unavailable".into(),
            retry_after: after,
        }
    }

    #[test]
    fn backoff_doubles_within_jitter_and_stops_at_the_maximum() {
        for attempts in 0..8 {
            let nominal = Duration::from_secs(1 << attempts).min(Duration::from_secs(60));
            let delay = backoff(&policy(), attempts);
            assert!(
                delay >= nominal / 2 && delay <= nominal,
                "{attempts}: {delay:?}"
            );
        }
    }

    #[test]
    fn retry_after_wins_over_the_backoff() {
        let now = 1_000_000;
        let completion = decide(
            &retry(Some(Duration::from_secs(7))),
            &delivery(0, now),
            &policy(),
            now,
        );
        let Completion::Retry {
            next_attempt_at, ..
        } = completion
        else {
            panic!("{completion:?}")
        };
        assert_eq!(next_attempt_at, now + 7_000);
    }

    #[test]
    fn a_retry_after_beyond_any_clock_is_capped_at_the_max_backoff() {
        let now = 1_000_000;
        let completion = decide(
            &retry(Some(Duration::from_secs(u64::MAX))),
            &delivery(0, now),
            &policy(),
            now,
        );
        let Completion::Retry {
            next_attempt_at, ..
        } = completion
        else {
            panic!("{completion:?}")
        };
        assert_eq!(next_attempt_at, now + 60_000);
    }

    fn any_policy() -> impl Strategy<Value = DeliveryPolicy> {
        // Edges and everyday values both: uniform u64s are almost all centuries long.
        let duration = || {
            prop_oneof![Just(u64::MAX), 1..10_000_000u64, any::<u64>()]
                .prop_map(Duration::from_millis)
        };
        (
            duration(),
            any::<u32>(),
            duration(),
            duration(),
            duration(),
            any::<u32>(),
        )
            .prop_map(|(timeout, max_attempts, max_age, initial, max, rate)| {
                DeliveryPolicy {
                    timeout,
                    max_attempts,
                    max_age,
                    backoff_initial: initial.min(max),
                    backoff_max: max,
                    rate_per_second: rate,
                    burst: rate,
                    concurrency: 1,
                    egress: crate::sinks::EgressRules::default(),
                }
            })
    }

    proptest! {
        #[test]
        fn decide_never_panics_and_never_waits_past_the_max_backoff(
            policy in any_policy(),
            attempts in any::<u32>(),
            enqueued_at in prop_oneof![Just(i64::MIN), 0..2_000_000_000_000i64, any::<i64>()],
            now in prop_oneof![Just(i64::MAX), 1_000_000_000_000..3_000_000_000_000i64, any::<i64>()],
            retry_after in proptest::option::of(
                (prop_oneof![Just(u64::MAX), 0..100_000u64, any::<u64>()], 0u32..1_000_000_000)
                    .prop_map(|(s, n)| Duration::new(s, n))
            ),
        ) {
            let outcome = retry(retry_after);
            match decide(&outcome, &delivery(attempts, enqueued_at), &policy, now) {
                Completion::Retry { next_attempt_at, .. } => {
                    prop_assert!(next_attempt_at >= now);
                    let waited = u128::try_from(i128::from(next_attempt_at) - i128::from(now)).unwrap();
                    prop_assert!(
                        next_attempt_at == i64::MAX || waited <= policy.backoff_max.as_millis(),
                        "waits {waited} ms, max backoff {:?}", policy.backoff_max
                    );
                }
                Completion::DeadLetter { error } => prop_assert!(error.starts_with("gave up")),
                other => prop_assert!(false, "{other:?}"),
            }
            let _ = lease_ms(&policy, attempts);
        }

        #[test]
        fn backoff_stays_between_half_and_the_whole_nominal_delay(
            policy in any_policy(),
            attempts in any::<u32>(),
        ) {
            let delay = backoff(&policy, attempts);
            prop_assert!(delay <= policy.backoff_max);
            prop_assert!(delay >= policy.backoff_initial.min(policy.backoff_max) / 2);
        }
    }

    #[test]
    fn the_last_attempt_dead_letters_with_the_sinks_answer() {
        let now = 1_000_000;
        let completion = decide(&retry(None), &delivery(2, now), &policy(), now);
        let Completion::DeadLetter { error } = completion else {
            panic!("{completion:?}")
        };
        assert_eq!(error, "gave up after 3 attempts: 503 Service Unavailable");
    }

    #[test]
    fn a_delivery_past_its_max_age_dead_letters() {
        let now = 10_000_000;
        let old = now - 3_600_000;
        let completion = decide(&retry(None), &delivery(0, old), &policy(), now);
        assert!(
            matches!(completion, Completion::DeadLetter { .. }),
            "{completion:?}"
        );
    }

    #[test]
    fn the_circuit_opens_after_repeated_failures_and_closes_on_success() {
        let webhook = crate::config::CompiledWebhook {
            key: "ns/w".into(),
            generation: 1,
            instance: "ns/i".into(),
            enabled: true,
            events: Vec::new(),
            routes: Vec::new(),
            sinks: Default::default(),
            warnings: Vec::new(),
        };
        let worker = Worker::new(
            SinkKey {
                webhook: "ns/w".into(),
                sink: "s".into(),
            },
            Arc::new(webhook),
        );
        for _ in 0..TRIP_AFTER - 1 {
            worker.record(&retry(None), &policy());
        }
        assert_eq!(worker.hold_for(Instant::now()), Duration::ZERO);
        worker.record(&retry(None), &policy());
        assert!(worker.hold().circuit_open);
        assert!(worker.probing());
        worker.record(&Outcome::Delivered, &policy());
        assert_eq!(worker.hold(), SinkHold::default());
        assert!(!worker.probing());
    }
}
