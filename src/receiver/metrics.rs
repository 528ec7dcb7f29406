//! The receiver's Prometheus metrics. Label values come only from the configuration (instances,
//! webhooks, sinks the receiver knows) or from fixed sets (rejection reasons), never from request
//! data, so a caller cannot blow up the series count: an unknown instance is counted as
//! `unknown`. The instance label is `strapi_instance`, never `instance`: Prometheus owns
//! `instance` (the scraped target) and would rename ours to `exported_instance`.

use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeLabelValue},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

/// Label value used for an instance the receiver does not know.
pub const UNKNOWN_INSTANCE: &str = "unknown";

/// Labels of ingest series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InstanceLabels {
    /// `namespace/name` of a known instance, or `unknown`.
    pub strapi_instance: String,
}

/// Why an ingest was refused.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum RejectReason {
    /// No such instance.
    UnknownInstance,
    /// Missing or wrong shared secret.
    Unauthorized,
    /// Body over the limit.
    TooLarge,
    /// Content type is not JSON.
    NotJson,
    /// Body is not a Strapi event.
    Malformed,
    /// The store failed; the caller got a 5xx.
    StoreFailed,
    /// The receiver has not loaded its configuration yet.
    NotReady,
}

/// Labels of rejection series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectLabels {
    /// As in [`InstanceLabels`].
    pub strapi_instance: String,
    /// Why.
    pub reason: RejectReason,
}

/// Labels of delivery series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkLabels {
    /// `namespace/name` of the webhook.
    pub webhook: String,
    /// The sink's name.
    pub sink: String,
}

/// Every metric the receiver exports.
#[derive(Debug)]
pub struct Metrics {
    /// Events that reached a known instance's endpoint.
    pub received: Family<InstanceLabels, Counter>,
    /// Events stored durably (acknowledged to Strapi).
    pub stored: Family<InstanceLabels, Counter>,
    /// Events recognised as Strapi's duplicates and not stored again.
    pub duplicates: Family<InstanceLabels, Counter>,
    /// Events the gap repair rebuilt from Strapi's content and stored, marked recovered.
    pub recovered: Family<InstanceLabels, Counter>,
    /// Strapi's `trigger-test` calls (its webhook test, or the operator's verification):
    /// received, recorded as a handshake, nothing to deliver.
    pub handshakes: Family<InstanceLabels, Counter>,
    /// Requests refused, by reason.
    pub rejected: Family<RejectLabels, Counter>,
    /// Seconds from request to acknowledgement of stored events.
    pub ingest_seconds: Family<InstanceLabels, Histogram>,
    /// Deliveries the sink accepted.
    pub delivered: Family<SinkLabels, Counter>,
    /// Attempts that failed and will be retried.
    pub retried: Family<SinkLabels, Counter>,
    /// Deliveries given up on.
    pub dead_lettered: Family<SinkLabels, Counter>,
    /// Seconds per delivery attempt.
    pub delivery_seconds: Family<SinkLabels, Histogram>,
    /// Deliveries waiting, as of the last scrape.
    pub queue_depth: Family<SinkLabels, Gauge>,
    /// Dead letters kept and waiting for a replay, as of the last scrape.
    pub dead_letters: Family<SinkLabels, Gauge>,
    /// 1 while a sink is paused (its webhook is gone) or its circuit breaker is open.
    pub sink_held: Family<SinkLabels, Gauge>,
    /// Age in seconds of the oldest delivery waiting per sink, as of the last scrape (0 when
    /// none waits).
    pub oldest_pending_age: Family<SinkLabels, Gauge>,
    /// 1 while the receiver answers ingest (configuration loaded), as of the last scrape. Always
    /// exported, so its absence means the receiver is not scraped at all.
    pub ready: Gauge,
    /// Stored events the router has not routed yet, as of the last scrape.
    pub unrouted: Gauge,
    registry: Registry,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let latency = || {
            Histogram::new([
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
            ])
        };
        let mut metrics = Self {
            received: Family::default(),
            stored: Family::default(),
            duplicates: Family::default(),
            recovered: Family::default(),
            handshakes: Family::default(),
            rejected: Family::default(),
            ingest_seconds: Family::new_with_constructor(latency),
            delivered: Family::default(),
            retried: Family::default(),
            dead_lettered: Family::default(),
            delivery_seconds: Family::new_with_constructor(latency),
            queue_depth: Family::default(),
            dead_letters: Family::default(),
            sink_held: Family::default(),
            oldest_pending_age: Family::default(),
            ready: Gauge::default(),
            unrouted: Gauge::default(),
            registry: Registry::with_prefix("strapi_webhook_receiver"),
        };
        let mut registry = std::mem::take(&mut metrics.registry);
        metrics.register_ingest(&mut registry);
        metrics.register_delivery(&mut registry);
        metrics.registry = registry;
        metrics
    }

    fn register_ingest(&self, registry: &mut Registry) {
        registry.register(
            "events_received",
            "Events that reached a known instance",
            self.received.clone(),
        );
        registry.register(
            "events_stored",
            "Events stored durably and acknowledged",
            self.stored.clone(),
        );
        registry.register(
            "events_recovered",
            "Events the gap repair rebuilt from Strapi's content and stored",
            self.recovered.clone(),
        );
        registry.register(
            "events_duplicate",
            "Duplicate Strapi events collapsed at ingest",
            self.duplicates.clone(),
        );
        registry.register(
            "handshakes",
            "Strapi trigger-test calls recorded as handshakes (nothing to deliver)",
            self.handshakes.clone(),
        );
        registry.register(
            "events_rejected",
            "Ingest requests refused, by reason",
            self.rejected.clone(),
        );
        registry.register(
            "ingest_duration_seconds",
            "Time from request to acknowledgement",
            self.ingest_seconds.clone(),
        );
    }

    fn register_delivery(&self, registry: &mut Registry) {
        registry.register(
            "deliveries_delivered",
            "Deliveries the sink accepted",
            self.delivered.clone(),
        );
        registry.register(
            "deliveries_retried",
            "Failed attempts that will be retried",
            self.retried.clone(),
        );
        registry.register(
            "deliveries_dead_lettered",
            "Deliveries given up on",
            self.dead_lettered.clone(),
        );
        registry.register(
            "delivery_duration_seconds",
            "Time per delivery attempt",
            self.delivery_seconds.clone(),
        );
        registry.register(
            "queue_depth",
            "Deliveries waiting per sink",
            self.queue_depth.clone(),
        );
        registry.register(
            "dead_letters",
            "Dead letters per sink waiting for a replay",
            self.dead_letters.clone(),
        );
        registry.register(
            "sink_held",
            "1 while a sink is paused or its circuit is open",
            self.sink_held.clone(),
        );
        registry.register(
            "oldest_pending_age_seconds",
            "Age of the oldest delivery waiting per sink",
            self.oldest_pending_age.clone(),
        );
        registry.register(
            "ready",
            "1 while the receiver answers ingest",
            self.ready.clone(),
        );
        registry.register(
            "unrouted_events",
            "Stored events waiting for the router",
            self.unrouted.clone(),
        );
    }

    /// The exposition text for `/metrics`.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Labels for a sink.
pub fn sink_labels(sink: &crate::queue::SinkKey) -> SinkLabels {
    SinkLabels {
        webhook: sink.webhook.clone(),
        sink: sink.sink.clone(),
    }
}
