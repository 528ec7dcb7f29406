//! The durable queue behind the receiver: stored events, their fan-out into deliveries, and the
//! state of every delivery (pending, in flight, delivered, dead).
//!
//! The receiver talks to it only through the [`Queue`] trait, so the embedded SQLite store
//! ([`sqlite::SqliteQueue`], one receiver per file) and a shared backend for several replicas can
//! be swapped by configuration. The contract every backend keeps: [`Queue::ingest`] returns only
//! once the event and all its deliveries are durable (that is what lets the receiver answer
//! Strapi with a 2xx), and a claimed delivery that is never completed — the receiver crashed —
//! becomes claimable again, so delivery is at least once.

pub mod nats;
pub mod sqlite;

use std::{collections::BTreeMap, fmt, time::SystemTime};

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch; the queue's clock unit, stable across processes.
pub type UnixMillis = i64;

/// The current time in [`UnixMillis`].
pub fn now_millis() -> UnixMillis {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        })
}

/// Why the queue could not do what it was asked. Each variant names the step that failed.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The store could not be opened or prepared.
    #[error("opening the queue at {location}: {message}")]
    Open {
        /// Where the store lives, e.g. the SQLite path.
        location: String,
        /// What went wrong.
        message: String,
    },
    /// A read or write failed; `step` says which operation.
    #[error("queue {step} failed: {message}")]
    Storage {
        /// The operation, e.g. `ingest` or `claim`.
        step: &'static str,
        /// What the store said.
        message: String,
    },
    /// The queue has been shut down.
    #[error("the queue is shut down")]
    Closed,
    /// No delivery has this id.
    #[error("no delivery with id {0}")]
    NotFound(String),
    /// A replay named a delivery that is still queued.
    #[error("delivery {id} is {state}; only dead or delivered deliveries can be replayed")]
    NotReplayable {
        /// The delivery.
        id: String,
        /// Its current state.
        state: DeliveryState,
    },
}

/// Where a delivery stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryState {
    /// Waiting for its next attempt.
    Pending,
    /// Claimed by a worker that is sending it.
    Inflight,
    /// The sink accepted it.
    Delivered,
    /// Given up on; kept with its last error until replayed.
    Dead,
}

impl DeliveryState {
    /// The name stored and shown, e.g. `dead`.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Inflight => "inflight",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Dead => "dead",
        }
    }

    /// Parses [`DeliveryState::as_str`].
    pub fn parse(name: &str) -> Option<Self> {
        [Self::Pending, Self::Inflight, Self::Delivered, Self::Dead]
            .into_iter()
            .find(|state| state.as_str() == name)
    }
}

impl fmt::Display for DeliveryState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A sink as the queue knows it: the webhook (`namespace/name`) and the sink's name in it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SinkKey {
    /// The `StrapiWebhook`, as `namespace/name`.
    pub webhook: String,
    /// The sink's name within the webhook.
    pub sink: String,
}

impl fmt::Display for SinkKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.webhook, self.sink)
    }
}

/// An event to store: unrouted, for the router to store its deliveries later ([`Queue::route`]),
/// or already routed by ingest (see [`NewEvent::deliveries`]).
#[derive(Clone, Debug)]
pub struct NewEvent {
    /// Unique id (a UUIDv7, so ids sort by arrival).
    pub id: String,
    /// The `StrapiInstance` it came through, as `namespace/name`.
    pub instance: String,
    /// Strapi's event name, e.g. `entry.publish`.
    pub event: String,
    /// When the receiver took it in.
    pub received_at: UnixMillis,
    /// The exact bytes Strapi sent.
    pub raw: Vec<u8>,
    /// Strapi fires some events twice (`entry.delete` for draft and published rows); events with
    /// the same key within [`NewEvent::dedup_window_ms`] are stored once.
    pub dedup_key: Option<String>,
    /// How far back a duplicate is looked for.
    pub dedup_window_ms: i64,
    /// True for an event the gap repair rebuilt from Strapi's content (Strapi's own call never
    /// arrived); its deliveries carry the mark to the sinks.
    pub recovered: bool,
    /// The document versions the event shows (see [`DocumentVersion`]); recorded with the event
    /// so the gap repair can tell what was stored.
    pub versions: Vec<DocumentVersion>,
    /// The event's deliveries when ingest routed it as it took it in (no route it matches runs
    /// tenant code): stored with the event in the same write, the event marked routed. `None`
    /// stores it unrouted for the router.
    pub deliveries: Option<Vec<NewDelivery>>,
}

/// Which timestamp of a document a [`DocumentVersion`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum VersionKind {
    /// The draft's (or, without drafts, the entry's) `updatedAt`.
    Content,
    /// The published version's `publishedAt`.
    Publication,
}

impl VersionKind {
    /// The name stored.
    pub fn as_str(self) -> &'static str {
        match self {
            VersionKind::Content => "content",
            VersionKind::Publication => "publication",
        }
    }
}

/// One version of one locale of a Strapi document, as an event shows it and as the content
/// manager lists it: the gap repair asks whether an event showing a version at least this new
/// was stored.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DocumentVersion {
    /// The content type's uid, e.g. `api::article.article`.
    pub uid: String,
    /// The document's `documentId`.
    pub document_id: String,
    /// The locale, empty when the content type is not localised.
    #[serde(default)]
    pub locale: String,
    /// Which timestamp.
    pub kind: VersionKind,
    /// The timestamp, in Strapi's clock.
    pub at: UnixMillis,
}

impl DocumentVersion {
    /// The document and timestamp kind, without the time: versions of one key are comparable.
    pub fn key(&self) -> String {
        format!(
            "{}\u{1f}{}\u{1f}{}\u{1f}{}",
            self.uid,
            self.document_id,
            self.locale,
            self.kind.as_str()
        )
    }
}

/// How far the gap repair has compared one content type of an instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Watermark {
    /// The Strapi time up to which Strapi's content was compared with what was stored; only
    /// moves forward.
    pub at: UnixMillis,
    /// When the repair first saw the content type: nothing older is ever compared (the
    /// receiver may not have existed then). Set once.
    pub floor: UnixMillis,
}

/// Watermarks by content type uid.
pub type Watermarks = BTreeMap<String, Watermark>;

/// An event [`Queue::ingest`] stored and no router has routed yet, as [`Queue::unrouted`] hands
/// it out.
#[derive(Clone, Debug)]
pub struct UnroutedEvent {
    /// The event id.
    pub id: String,
    /// The `StrapiInstance` it came through.
    pub instance: String,
    /// Strapi's event name.
    pub event: String,
    /// When the receiver took it in; its deliveries' age counts from here.
    pub received_at: UnixMillis,
    /// The exact bytes Strapi sent.
    pub raw: Vec<u8>,
    /// Rebuilt by the gap repair ([`NewEvent::recovered`]).
    pub recovered: bool,
}

/// How an unrouted event was routed: its deliveries, stored with its routed mark.
#[derive(Clone, Debug)]
pub struct RoutedEvent {
    /// The event, as [`Queue::unrouted`] handed it out.
    pub event: UnroutedEvent,
    /// One per matching (webhook, route); ids from [`delivery_id`].
    pub deliveries: Vec<NewDelivery>,
}

/// What ingest needs to authenticate one instance's calls before the live configuration has
/// loaded after a restart: never the shared secrets, only their SHA-256 digests.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KnownInstance {
    /// Lowercase hex SHA-256 of each shared secret accepted from the instance.
    pub secret_digests: Vec<String>,
    /// The instance's `metadata.generation` when this was written, where known.
    #[serde(default)]
    pub generation: Option<i64>,
}

/// The last known ingest configuration, by instance (`namespace/name`).
pub type KnownInstances = BTreeMap<String, KnownInstance>;

/// The id of the delivery of `event_id` through `route` of `webhook`: the same on every routing
/// of the event, so a routing retried after a crash stores (or, on JetStream, publishes with
/// the same `Nats-Msg-Id`) each delivery once. Shaped as a UUIDv7 whose time part is the
/// event's, so ids still sort by arrival.
pub fn delivery_id(event_id: &str, webhook: &str, route: &str) -> String {
    let digest = ring::digest::digest(
        &ring::digest::SHA256,
        format!("{event_id}\u{1f}{webhook}\u{1f}{route}").as_bytes(),
    );
    let mut bytes = [0_u8; 16];
    bytes.copy_from_slice(&digest.as_ref()[..16]);
    if let Ok(event) = uuid::Uuid::parse_str(event_id) {
        bytes[..8].copy_from_slice(&event.as_bytes()[..8]);
    }
    uuid::Builder::from_bytes(bytes)
        .with_variant(uuid::Variant::RFC4122)
        .with_version(uuid::Version::SortRand)
        .into_uuid()
        .to_string()
}

/// One delivery of a routed event.
#[derive(Clone, Debug)]
pub struct NewDelivery {
    /// Unique, stable id ([`delivery_id`]); sent to the sink as `webhook-id` on every attempt.
    pub id: String,
    /// The sink it goes to.
    pub sink: SinkKey,
    /// The route within the webhook that matched.
    pub route: String,
    /// Set when the route could not be evaluated for this event (a filter error): the delivery
    /// is stored dead with this reason, visible and replayable instead of silently dropped.
    pub dead_on_arrival: Option<String>,
}

/// What [`Queue::ingest`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IngestOutcome {
    /// The event is stored: unrouted, or with the deliveries it came with.
    Stored,
    /// An event with the same dedup key was stored within the window, or the versions it shows
    /// were already stored (a late copy of a recovered event, or a recovery of a stored one);
    /// nothing new was stored.
    Duplicate {
        /// The id of the event stored first.
        original: String,
    },
}

/// What [`Queue::due`] found of one sink.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Due {
    /// Deliveries due, counted up to the limit asked for.
    pub count: u32,
    /// Since when the longest-waiting due delivery is due: its event's arrival, or on SQLite
    /// the end of its backoff or lease; `None` when nothing is due.
    pub since: Option<UnixMillis>,
}

/// A delivery handed to a worker, with what it needs to send it.
#[derive(Clone, Debug)]
pub struct ClaimedDelivery {
    /// The delivery id.
    pub id: String,
    /// The event it delivers.
    pub event_id: String,
    /// The sink.
    pub sink: SinkKey,
    /// The route that matched.
    pub route: String,
    /// Attempts made before this one.
    pub attempts: u32,
    /// When the delivery was (re)queued; max age counts from here.
    pub enqueued_at: UnixMillis,
    /// The event's raw bytes.
    pub raw: Vec<u8>,
    /// The event was rebuilt by the gap repair ([`NewEvent::recovered`]).
    pub recovered: bool,
}

/// How an attempt ended. The attempt was counted when the delivery was claimed, so one that
/// never ends (the receiver crashed) counts too; [`Completion::Release`] takes it back.
#[derive(Clone, Debug)]
pub enum Completion {
    /// The sink accepted it.
    Delivered,
    /// Try again at `next_attempt_at`.
    Retry {
        /// When the next attempt may start.
        next_attempt_at: UnixMillis,
        /// Why this attempt failed.
        error: String,
    },
    /// Give up; the error is kept for `deliveries show`.
    DeadLetter {
        /// Why.
        error: String,
    },
    /// Give up without trying it again (its earlier attempts never ended: it is poison); the
    /// claim that found it does not count as an attempt.
    DeadLetterUntried {
        /// Why.
        error: String,
    },
    /// Hand it back untried (shutdown, paused sink), due at `next_attempt_at`.
    Release {
        /// When it may be claimed again.
        next_attempt_at: UnixMillis,
    },
}

/// A row of `deliveries list`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliverySummary {
    /// The delivery id (`webhook-id`).
    pub id: String,
    /// The event id.
    pub event_id: String,
    /// The instance the event came through.
    pub instance: String,
    /// Strapi's event name.
    pub event: String,
    /// The webhook, as `namespace/name`.
    pub webhook: String,
    /// The route that matched.
    pub route: String,
    /// The sink's name.
    pub sink: String,
    /// Where it stands.
    pub state: DeliveryState,
    /// Attempts made.
    pub attempts: u32,
    /// When it was (re)queued.
    pub enqueued_at: UnixMillis,
    /// When the next attempt is due (pending only).
    pub next_attempt_at: Option<UnixMillis>,
    /// When it was delivered.
    pub delivered_at: Option<UnixMillis>,
    /// The last failure.
    pub last_error: Option<String>,
    /// The event was rebuilt by the gap repair, not sent by Strapi.
    #[serde(default)]
    pub recovered: bool,
}

/// `deliveries show`: a delivery and the event it carries.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryDetail {
    /// The delivery.
    #[serde(flatten)]
    pub summary: DeliverySummary,
    /// The event as Strapi sent it (JSON), or as text if it is not valid JSON.
    pub payload: serde_json::Value,
}

/// Which deliveries `list` returns; unset fields match everything.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DeliveryFilter {
    /// Only this state.
    pub state: Option<DeliveryState>,
    /// Only this webhook (`namespace/name`).
    pub webhook: Option<String>,
    /// Only sinks of this name.
    pub sink: Option<String>,
    /// Only this event's deliveries.
    pub event: Option<String>,
    /// At most this many, newest first.
    pub limit: u32,
}

/// Which deliveries `replay` re-queues.
#[derive(Clone, Debug, PartialEq)]
pub enum ReplaySelector {
    /// One delivery, dead or delivered.
    Id(String),
    /// Every dead letter, optionally only of one webhook and/or sink name.
    DeadLetters {
        /// Only this webhook.
        webhook: Option<String>,
        /// Only sinks of this name.
        sink: Option<String>,
    },
}

/// Counters of one sink, kept by the queue so they survive restarts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SinkCounters {
    /// Deliveries that succeeded.
    pub delivered: i64,
    /// Attempts that failed and were retried.
    pub failed: i64,
    /// Deliveries dead-lettered.
    pub dead_lettered: i64,
    /// Deliveries waiting (pending or in flight).
    pub pending: i64,
    /// When the oldest waiting delivery was enqueued.
    #[serde(default)]
    pub oldest_pending_at: Option<UnixMillis>,
    /// Dead letters kept, waiting for a replay: counted when read, never stored with the
    /// counters (unlike `dead_lettered`, it goes down when a dead letter is replayed).
    #[serde(skip)]
    pub dead_letters: i64,
    /// Last success.
    pub last_success_at: Option<UnixMillis>,
    /// Last failure as the sink answered it.
    pub last_error: Option<String>,
}

/// Strapi's `trigger-test` calls seen for one instance.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Handshake {
    /// How many trigger-test events arrived with the right secret.
    pub count: i64,
    /// When the last one arrived.
    pub last_at: Option<UnixMillis>,
}

/// The store behind the receiver. Methods return boxed futures so the receiver can hold any
/// backend as `Arc<dyn Queue>`.
pub trait Queue: Send + Sync + 'static {
    /// Stores an event durably (unless it is a duplicate), unrouted or, when it comes with its
    /// deliveries, routed with them atomically; only then returns.
    fn ingest(&self, event: NewEvent) -> BoxFuture<'_, Result<IngestOutcome, QueueError>>;

    /// Up to `limit` unrouted events, oldest first, handed to this process's router until it
    /// routes them. An event handed out and never routed (the process died) is handed out
    /// again, here or, on a shared backend, to another replica.
    fn unrouted(&self, limit: u32) -> BoxFuture<'_, Result<Vec<UnroutedEvent>, QueueError>>;

    /// Stores each event's deliveries and marks it routed, atomically per event; an event
    /// already routed is left as it is.
    fn route(&self, routed: Vec<RoutedEvent>) -> BoxFuture<'_, Result<(), QueueError>>;

    /// How many stored events wait for routing.
    fn unrouted_count(&self) -> BoxFuture<'_, Result<u64, QueueError>>;

    /// Replaces the last known ingest configuration.
    fn save_known_instances(&self, known: KnownInstances) -> BoxFuture<'_, Result<(), QueueError>>;

    /// The last known ingest configuration; empty if none was saved.
    fn known_instances(&self) -> BoxFuture<'_, Result<KnownInstances, QueueError>>;

    /// Records a `trigger-test` handshake for an instance.
    fn record_handshake(
        &self,
        instance: String,
        at: UnixMillis,
    ) -> BoxFuture<'_, Result<(), QueueError>>;

    /// The handshakes seen for an instance.
    fn handshake(&self, instance: String) -> BoxFuture<'_, Result<Handshake, QueueError>>;

    /// Claims up to `limit` deliveries of `sink` due at `now`, oldest first, for `lease_ms`. A
    /// claim that is not completed within the lease becomes claimable again. Each claim counts
    /// as an attempt; [`ClaimedDelivery::attempts`] are those made before this one.
    fn claim(
        &self,
        sink: SinkKey,
        now: UnixMillis,
        limit: u32,
        lease_ms: i64,
    ) -> BoxFuture<'_, Result<Vec<ClaimedDelivery>, QueueError>>;

    /// When the next delivery of `sink` becomes due, if any is waiting.
    fn next_due(&self, sink: SinkKey) -> BoxFuture<'_, Result<Option<UnixMillis>, QueueError>>;

    /// What of `sink` is due at `now`: how many deliveries (counted up to `limit`) and since
    /// when the longest-waiting of them is due. A coalescing sink sends a full call as soon as
    /// one is due, and a smaller one once its oldest delivery has waited the window.
    fn due(
        &self,
        sink: SinkKey,
        now: UnixMillis,
        limit: u32,
    ) -> BoxFuture<'_, Result<Due, QueueError>>;

    /// Records how a claimed delivery's attempt ended.
    fn complete(&self, id: String, completion: Completion)
    -> BoxFuture<'_, Result<(), QueueError>>;

    /// Sinks that have deliveries waiting (pending or in flight).
    fn waiting_sinks(&self) -> BoxFuture<'_, Result<Vec<SinkKey>, QueueError>>;

    /// Dead-letters every waiting delivery of `sink` with `reason` (its webhook or sink is gone
    /// from the configuration). Returns how many.
    fn dead_letter_waiting(
        &self,
        sink: SinkKey,
        reason: String,
    ) -> BoxFuture<'_, Result<u64, QueueError>>;

    /// Deliveries matching `filter`, newest first.
    fn list(
        &self,
        filter: DeliveryFilter,
    ) -> BoxFuture<'_, Result<Vec<DeliverySummary>, QueueError>>;

    /// One delivery with its event.
    fn show(&self, id: String) -> BoxFuture<'_, Result<DeliveryDetail, QueueError>>;

    /// Re-queues deliveries for an immediate attempt with a fresh attempt count and age. Returns
    /// the sinks affected and how many deliveries were re-queued.
    fn replay(
        &self,
        selector: ReplaySelector,
    ) -> BoxFuture<'_, Result<Vec<(SinkKey, i64)>, QueueError>>;

    /// Counters of every sink the queue has seen.
    fn counters(&self) -> BoxFuture<'_, Result<Vec<(SinkKey, SinkCounters)>, QueueError>>;

    /// Deletes delivered deliveries older than `before`, and events left without deliveries.
    fn prune(&self, before: UnixMillis) -> BoxFuture<'_, Result<u64, QueueError>>;

    /// Why the last write to local storage failed, while it keeps failing (a full disk, a
    /// locked or read-only file); `None` once a write succeeded again. Backends without local
    /// storage report their failures per call instead.
    fn write_failure(&self) -> Option<String> {
        None
    }

    /// Makes one small write, so [`Queue::write_failure`] clears once storage works again even
    /// when nothing else writes (an unready receiver gets no traffic).
    fn probe_write(&self) -> BoxFuture<'_, Result<(), QueueError>> {
        Box::pin(async { Ok(()) })
    }

    /// For each version, whether an event of `instance` showing that version or a newer one of
    /// the same document, locale and kind was stored.
    fn covered(
        &self,
        instance: String,
        versions: Vec<DocumentVersion>,
    ) -> BoxFuture<'_, Result<Vec<bool>, QueueError>>;

    /// The gap repair's watermarks of `instance`.
    fn watermarks(&self, instance: String) -> BoxFuture<'_, Result<Watermarks, QueueError>>;

    /// Moves watermarks of `instance` forward (a watermark never moves back).
    fn advance_watermarks(
        &self,
        instance: String,
        marks: Watermarks,
    ) -> BoxFuture<'_, Result<(), QueueError>>;
}

/// What the store knows of one version of an incoming event.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VersionSeen {
    /// An event showing this version or a newer one of the same key was stored.
    pub covered: bool,
    /// A recovered event showing exactly this version was stored.
    pub recovered_exactly: bool,
}

/// Whether an event with versions is a copy of what is stored, the same rule for every backend:
/// a recovered event is one when every version it shows is covered (it arrived normally, or a
/// newer change did); an event from Strapi is one when recovered events already showed every
/// version it shows (Strapi delivered it late, after its recovery). An event from Strapi is never
/// dropped because of another event from Strapi: that stays the dedup key's business.
pub fn is_stored_copy(recovered: bool, seen: &[VersionSeen]) -> bool {
    if seen.is_empty() {
        return false;
    }
    if recovered {
        seen.iter().all(|version| version.covered)
    } else {
        seen.iter().all(|version| version.recovered_exactly)
    }
}

impl fmt::Debug for dyn Queue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Queue")
    }
}

#[cfg(test)]
mod tests {
    use super::delivery_id;

    #[test]
    fn delivery_ids_are_fixed_by_event_webhook_and_route_and_sort_by_event() {
        let earlier = uuid::Uuid::now_v7().to_string();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let later = uuid::Uuid::now_v7().to_string();
        let id = delivery_id(&earlier, "cms/site", "to-crm");
        assert_eq!(id, delivery_id(&earlier, "cms/site", "to-crm"));
        assert_ne!(id, delivery_id(&earlier, "cms/site", "to-erp"));
        assert_ne!(id, delivery_id(&earlier, "cms/other", "to-crm"));
        assert!(id < delivery_id(&later, "cms/site", "to-crm"));
        assert_eq!(uuid::Uuid::parse_str(&id).unwrap().get_version_num(), 7);
        // Ids that are not UUIDs (hand-made in tests) still give a stable, valid one.
        let odd = delivery_id("event-1", "cms/site", "to-crm");
        assert_eq!(odd, delivery_id("event-1", "cms/site", "to-crm"));
        assert!(uuid::Uuid::parse_str(&odd).is_ok());
    }
}
