//! The NATS JetStream queue: several receiver replicas share one durable store, so no replica is
//! a single point of failure.
//!
//! Layout (all JetStream objects are created on first start, file storage, replicas set by
//! `?replicas=N` in the URL):
//!
//! - Stream `SWO_EVENTS` (work-queue retention), one message per unrouted event on
//!   `swo.events.<event id>`. [`Queue::ingest`] publishes it and returns once JetStream
//!   acknowledged the publish, so a 2xx to Strapi means the event is on disk (on every JetStream
//!   replica). One durable pull consumer, `router`, is shared by every replica's router: an event
//!   is routed by one replica, and one fetched by a replica that dies before routing it is
//!   redelivered after [`ROUTING_LEASE`].
//! - Stream `SWO_DELIVERIES` (work-queue retention), one message per delivery on subject
//!   `swo.deliveries.<sink token>.<delivery id>`. [`Queue::route`] publishes every delivery of an
//!   event, waits for JetStream's acknowledgement of each, and only then acknowledges the event's
//!   message. Delivery ids are derived from (event, webhook, route) and are the `Nats-Msg-Id`, so
//!   a routing retried after a crash or a lost ack publishes each delivery once (within the
//!   stream's duplicate window, longer than the routing lease).
//! - One durable pull consumer per sink on that stream, shared by every replica: any replica can
//!   claim any delivery, and a claimed delivery that is never acknowledged (the replica died) is
//!   redelivered after the consumer's ack wait, which is the engine's lease. An acknowledged
//!   message leaves the work queue.
//! - Retries are JetStream redeliveries: a failed attempt is `nak`ed with the engine's backoff as
//!   the delay, and the attempt count is JetStream's delivery count (plus the attempts a
//!   delivery had before it was handed back). `max_deliver` is left unlimited because the engine
//!   decides when to give up (max attempts, max age) and dead-letters explicitly.
//! - Stream `SWO_DEAD` holds dead letters on `swo.dead.<delivery id>`; `deliveries list|show|
//!   replay` read it, and a replay re-publishes into the work queue and purges the dead letter.
//! - Stream `SWO_DELIVERED` keeps a record of each delivered delivery on
//!   `swo.delivered.<delivery id>` for 24 hours (its `max_age`), so `deliveries list|show` and a
//!   replay of a delivered delivery work as with SQLite; [`Queue::prune`] has nothing to do.
//! - Key-value bucket `swo-state`: `trigger-test` handshakes per instance and counters per
//!   (sink, replica): each replica writes only its own key, so counters need no compare-and-set
//!   across replicas, and `/v1/stats` sums them. Bucket `swo-dedup` holds Strapi's duplicate-event
//!   keys, claimed with a create (compare-and-set), so a duplicate is recognised by whichever
//!   replica it reaches.
//!
//! Rate limits, concurrency and coalescing stay exact with several replicas because one replica
//! at a time delivers a given sink: it holds the sink's claim (`owner.<sink>` in `swo-state`,
//! taken with compare-and-set and renewed every few seconds), and the others claim nothing for
//! that sink. Different sinks spread over the replicas as their workers first ask. When the
//! holder dies, its claim runs out after 15 s and the next replica to ask takes the sink over;
//! the dead replica's in-flight deliveries come back after the ack wait.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Mutex, PoisonError},
    time::Duration,
};

use async_nats::jetstream::{
    self, AckKind,
    consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull},
    kv,
    stream::{self, RetentionPolicy, StorageType, Stream},
};
use futures::{TryStreamExt, future::BoxFuture};
use serde::{Deserialize, Serialize};

use super::{
    ClaimedDelivery, Completion, DeliveryDetail, DeliveryFilter, DeliveryState, DeliverySummary,
    DocumentVersion, Due, Handshake, IngestOutcome, KnownInstances, NewEvent, Queue, QueueError,
    ReplaySelector, RoutedEvent, SinkCounters, SinkKey, UnixMillis, UnroutedEvent, VersionSeen,
    Watermarks, is_stored_copy, now_millis,
};

const EVENTS: &str = "SWO_EVENTS";
const ROUTER: &str = "router";
/// How long a replica may hold fetched events before routing them; then they go to another.
/// Shorter than the streams' duplicate window (two minutes), so a routing retried after it
/// publishes no delivery twice.
pub const ROUTING_LEASE: Duration = Duration::from_secs(30);
const KNOWN_INSTANCES_KEY: &str = "known-instances";
const DELIVERIES: &str = "SWO_DELIVERIES";
const DEAD: &str = "SWO_DEAD";
const DELIVERED: &str = "SWO_DELIVERED";
const STATE_BUCKET: &str = "swo-state";
const DEDUP_BUCKET: &str = "swo-dedup";
const VERSIONS_BUCKET: &str = "swo-versions";
// The gap repair compares versions after its watermark, which moves every check (a minute by
// default); a day of versions answers every comparison it makes.
const VERSIONS_RETENTION: Duration = Duration::from_secs(24 * 3600);
// Recovered versions kept per document key, for recognising Strapi's late originals.
const RECOVERED_KEPT: usize = 16;
// How long a delivered delivery stays listable.
const DELIVERED_RETENTION: Duration = Duration::from_secs(24 * 3600);
// Strapi's duplicates arrive within seconds; an hour bounds the bucket without cutting a window.
const DEDUP_RETENTION: Duration = Duration::from_secs(3600);
// A publish that JetStream has not acknowledged by then fails the ingest (a 5xx well within
// Strapi's 10 s timeout) instead of hanging while NATS is down.
const ACK_TIMEOUT: Duration = Duration::from_secs(4);
// How long a claim waits for deliveries the server has not sent yet.
const FETCH_EXPIRY: Duration = Duration::from_millis(500);
// A sink's deliverer keeps its claim by renewing it at least every third of this; a claim not
// renewed for this long (its replica died) is taken over by the next replica that asks.
const OWNER_TTL_MS: i64 = 15_000;
// How soon a worker looks again when all its sink's deliveries wait out a `nak` delay or sit
// with another replica; JetStream does not say when a delayed message becomes due.
const REDELIVERY_POLL_MS: i64 = 250;

/// Where the JetStream queue lives: `nats://host:port[?replicas=N]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatsSpec {
    /// The server URL handed to the client, without the query.
    pub url: String,
    /// JetStream replicas of every stream and bucket (1 on a single server, 3 in a cluster).
    pub replicas: usize,
}

impl NatsSpec {
    /// Parses `nats://host:port[?replicas=N]`; `None` if it is not a NATS URL.
    pub fn parse(spec: &str) -> Option<Self> {
        if !spec.starts_with("nats://") && !spec.starts_with("tls://") {
            return None;
        }
        let (url, query) = spec.split_once('?').unwrap_or((spec, ""));
        if url
            .split_once("://")
            .is_none_or(|(_, host)| host.is_empty())
        {
            return None;
        }
        let mut replicas = 1;
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            match pair.split_once('=') {
                Some(("replicas", count)) => {
                    replicas = count.parse().ok().filter(|count| (1..=5).contains(count))?;
                }
                _ => return None,
            }
        }
        Some(Self {
            url: url.to_owned(),
            replicas,
        })
    }
}

/// A delivery as stored in each stream: the message payload.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Record {
    id: String,
    event_id: String,
    instance: String,
    event: String,
    webhook: String,
    sink: String,
    route: String,
    enqueued_at: UnixMillis,
    // Attempts made before the message was (re)published; JetStream counts the rest.
    attempts: u32,
    last_error: Option<String>,
    delivered_at: Option<UnixMillis>,
    raw: String,
    // Records written before the gap repair existed have no mark.
    #[serde(default)]
    recovered: bool,
}

/// An unrouted event as stored in `SWO_EVENTS`.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct EventRecord {
    id: String,
    instance: String,
    event: String,
    received_at: UnixMillis,
    raw: String,
    recovered: bool,
}

/// What `swo-versions` holds per instance and document key: the newest version stored, and the
/// last versions stored by recovered events.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct StoredVersions {
    newest: UnixMillis,
    newest_event: String,
    recovered: Vec<(UnixMillis, String)>,
}

impl Record {
    fn sink_key(&self) -> SinkKey {
        SinkKey {
            webhook: self.webhook.clone(),
            sink: self.sink.clone(),
        }
    }

    fn summary(&self, state: DeliveryState) -> DeliverySummary {
        DeliverySummary {
            id: self.id.clone(),
            event_id: self.event_id.clone(),
            instance: self.instance.clone(),
            event: self.event.clone(),
            webhook: self.webhook.clone(),
            route: self.route.clone(),
            sink: self.sink.clone(),
            state,
            attempts: self.attempts,
            enqueued_at: self.enqueued_at,
            next_attempt_at: (state == DeliveryState::Pending).then_some(self.enqueued_at),
            delivered_at: self.delivered_at,
            last_error: self.last_error.clone(),
            recovered: self.recovered,
        }
    }

    fn matches(&self, state: DeliveryState, filter: &DeliveryFilter) -> bool {
        filter.state.is_none_or(|wanted| wanted == state)
            && filter.webhook.as_ref().is_none_or(|w| *w == self.webhook)
            && filter.sink.as_ref().is_none_or(|s| *s == self.sink)
            && filter.event.as_ref().is_none_or(|e| *e == self.event_id)
    }
}

/// A claimed message this replica has not completed yet.
struct Claimed {
    message: jetstream::Message,
    record: Record,
}

/// The JetStream queue. Open it with [`NatsQueue::connect`].
pub struct NatsQueue {
    js: jetstream::Context,
    router: PullConsumer,
    deliveries: Stream,
    dead: Stream,
    delivered: Stream,
    state: kv::Store,
    dedup: kv::Store,
    versions: kv::Store,
    // This replica's identity in the counter keys.
    replica: String,
    consumers: tokio::sync::Mutex<HashMap<SinkKey, PullConsumer>>,
    claimed: Mutex<HashMap<String, Claimed>>,
    // Event messages fetched by this replica's router, by event id, until routed.
    routing: Mutex<HashMap<String, jetstream::Message>>,
    // Sinks this replica delivers, and when it last renewed each claim in the bucket.
    owned: Mutex<HashMap<SinkKey, UnixMillis>>,
    counters: tokio::sync::Mutex<BTreeMap<SinkKey, SinkCounters>>,
    // Dead letters per sink as last counted, with the state of `SWO_DEAD` they were counted at.
    dead_counted: tokio::sync::Mutex<Option<DeadCount>>,
}

/// Dead letters per sink, and the (last sequence, message count) of `SWO_DEAD` they describe.
type DeadCount = ((u64, u64), BTreeMap<SinkKey, i64>);

fn storage(step: &'static str) -> impl Fn(String) -> QueueError {
    move |message| QueueError::Storage { step, message }
}

/// Reads the JSON value at `key` of `bucket`, then [`update_json_from`] it.
async fn update_json<T: Default + Serialize + serde::de::DeserializeOwned>(
    bucket: &kv::Store,
    key: &str,
    step: &'static str,
    change: impl FnMut(&mut T) -> bool,
) -> Result<(), QueueError> {
    let entry = bucket
        .entry(key)
        .await
        .map_err(|error| storage(step)(error.to_string()))?;
    update_json_from(bucket, key, step, entry, change).await
}

/// Lets `change` edit the JSON value of `entry` (`key`'s entry as read before; the default when
/// it is absent, deleted or unreadable) and, when `change` says it changed something, writes it
/// back with compare-and-set, starting again from a fresh read whenever another writer got there
/// first. A change that turns out to be nothing writes nothing: many writers recording the same
/// thing (one document saved again and again) then do not queue up behind one key.
async fn update_json_from<T: Default + Serialize + serde::de::DeserializeOwned>(
    bucket: &kv::Store,
    key: &str,
    step: &'static str,
    mut entry: Option<kv::Entry>,
    mut change: impl FnMut(&mut T) -> bool,
) -> Result<(), QueueError> {
    let failed = storage(step);
    loop {
        let mut value: T = entry
            .as_ref()
            .filter(|entry| entry.operation == kv::Operation::Put)
            .and_then(|entry| serde_json::from_slice(&entry.value).ok())
            .unwrap_or_default();
        if !change(&mut value) {
            return Ok(());
        }
        let bytes = serde_json::to_vec(&value).map_err(|error| failed(error.to_string()))?;
        let written = match &entry {
            Some(entry) => bucket
                .update(key, bytes.into(), entry.revision)
                .await
                .is_ok(),
            None => bucket.create(key, bytes.into()).await.is_ok(),
        };
        if written {
            return Ok(());
        }
        entry = bucket
            .entry(key)
            .await
            .map_err(|error| failed(error.to_string()))?;
    }
}

/// The failure to open the queue at `spec`.
fn open_failed(spec: &NatsSpec, message: String) -> QueueError {
    QueueError::Open {
        location: spec.url.clone(),
        message,
    }
}

/// The file-backed stream `name` of `subjects`, created if it does not exist; a `max_age` of zero
/// keeps messages for as long as the retention policy does.
async fn open_stream(
    js: &jetstream::Context,
    spec: &NatsSpec,
    name: &str,
    subjects: &str,
    retention: RetentionPolicy,
    max_age: Duration,
) -> Result<Stream, QueueError> {
    let config = stream::Config {
        name: name.to_owned(),
        subjects: vec![subjects.to_owned()],
        retention,
        storage: StorageType::File,
        num_replicas: spec.replicas,
        max_age,
        ..stream::Config::default()
    };
    js.get_or_create_stream(config)
        .await
        .map_err(|error| open_failed(spec, format!("stream {name}: {error}")))
}

/// The file-backed key-value bucket `name` keeping one value per key, created or brought up to
/// this configuration; a `max_age` of zero keeps values until they are deleted.
async fn open_bucket(
    js: &jetstream::Context,
    spec: &NatsSpec,
    name: &str,
    max_age: Duration,
) -> Result<kv::Store, QueueError> {
    let config = kv::Config {
        bucket: name.to_owned(),
        history: 1,
        max_age,
        storage: StorageType::File,
        num_replicas: spec.replicas,
        ..kv::Config::default()
    };
    js.create_or_update_key_value(config)
        .await
        .map_err(|error| open_failed(spec, format!("bucket {name}: {error}")))
}

/// A durable pull consumer `name` whose messages are leased for `ack_wait` and sent again, with
/// no limit, until acknowledged (see the module docs for why `max_deliver` is unlimited).
fn leased_consumer(name: String, ack_wait: Duration) -> pull::Config {
    pull::Config {
        durable_name: Some(name),
        ack_policy: AckPolicy::Explicit,
        deliver_policy: DeliverPolicy::All,
        ack_wait,
        max_deliver: -1,
        max_ack_pending: -1,
        ..pull::Config::default()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every critical section is a single map operation, so a panic cannot leave it half-done.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A subject token for a sink: hex keeps `/`, `.` and anything else a name may hold out of the
/// subject's syntax.
fn sink_token(sink: &SinkKey) -> String {
    hex(format!("{}\n{}", sink.webhook, sink.sink).as_bytes())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn unhex(token: &str) -> Option<String> {
    let bytes: Option<Vec<u8>> = (0..token.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(token.get(at..at + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

fn sink_from_token(token: &str) -> Option<SinkKey> {
    let (webhook, sink) = unhex(token)?
        .split_once('\n')
        .map(|(w, s)| (w.into(), s.into()))?;
    Some(SinkKey { webhook, sink })
}

impl NatsQueue {
    /// Connects to NATS and creates (or reuses) the streams and buckets. The client reconnects
    /// by itself for as long as the receiver runs; while NATS is away every ingest fails, which
    /// the receiver answers with a 5xx.
    pub async fn connect(spec: &NatsSpec) -> Result<Self, QueueError> {
        let client = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connection_timeout(Duration::from_secs(5))
            .name("strapi-webhook-operator receiver")
            .connect(spec.url.as_str())
            .await
            .map_err(|error| open_failed(spec, error.to_string()))?;
        let mut js = jetstream::new(client);
        js.set_timeout(ACK_TIMEOUT);
        let (work_queue, kept) = (RetentionPolicy::WorkQueue, RetentionPolicy::Limits);
        let events = open_stream(
            &js,
            spec,
            EVENTS,
            "swo.events.>",
            work_queue,
            Duration::ZERO,
        )
        .await?;
        let router = events
            .get_or_create_consumer(ROUTER, leased_consumer(ROUTER.to_owned(), ROUTING_LEASE))
            .await
            .map_err(|error| {
                open_failed(spec, format!("consumer {ROUTER} of {EVENTS}: {error}"))
            })?;
        let deliveries = open_stream(
            &js,
            spec,
            DELIVERIES,
            "swo.deliveries.>",
            work_queue,
            Duration::ZERO,
        )
        .await?;
        let dead = open_stream(&js, spec, DEAD, "swo.dead.>", kept, Duration::ZERO).await?;
        let delivered = open_stream(
            &js,
            spec,
            DELIVERED,
            "swo.delivered.>",
            kept,
            DELIVERED_RETENTION,
        )
        .await?;
        let state = open_bucket(&js, spec, STATE_BUCKET, Duration::ZERO).await?;
        let dedup = open_bucket(&js, spec, DEDUP_BUCKET, DEDUP_RETENTION).await?;
        let versions = open_bucket(&js, spec, VERSIONS_BUCKET, VERSIONS_RETENTION).await?;
        Ok(Self {
            js,
            router,
            deliveries,
            dead,
            delivered,
            state,
            dedup,
            versions,
            replica: uuid::Uuid::now_v7().simple().to_string(),
            consumers: tokio::sync::Mutex::default(),
            claimed: Mutex::default(),
            routing: Mutex::default(),
            owned: Mutex::default(),
            counters: tokio::sync::Mutex::default(),
            dead_counted: tokio::sync::Mutex::default(),
        })
    }

    /// Publishes `record` to `subject` and waits for JetStream's acknowledgement.
    async fn publish(
        &self,
        step: &'static str,
        subject: String,
        message_id: &str,
        record: &Record,
    ) -> Result<(), QueueError> {
        let payload =
            serde_json::to_vec(record).map_err(|error| storage(step)(error.to_string()))?;
        self.js
            .send_publish(
                subject,
                jetstream::message::PublishMessage::build()
                    .payload(payload.into())
                    .message_id(message_id),
            )
            .await
            .map_err(|error| storage(step)(error.to_string()))?
            .await
            .map_err(|error| storage(step)(error.to_string()))?;
        Ok(())
    }

    async fn enqueue(
        &self,
        step: &'static str,
        record: &Record,
        nonce: &str,
    ) -> Result<(), QueueError> {
        let subject = format!(
            "swo.deliveries.{}.{}",
            sink_token(&record.sink_key()),
            record.id
        );
        self.publish(step, subject, &format!("{}.{nonce}", record.id), record)
            .await
    }

    async fn bury(
        &self,
        step: &'static str,
        record: &Record,
        nonce: &str,
    ) -> Result<(), QueueError> {
        let subject = format!("swo.dead.{}", record.id);
        self.publish(
            step,
            subject,
            &format!("{}.dead.{nonce}", record.id),
            record,
        )
        .await
    }

    /// Publishes `event` unrouted to `SWO_EVENTS`, the router's work queue, and waits for the
    /// stream's acknowledgement.
    async fn publish_unrouted(&self, event: &NewEvent) -> Result<(), String> {
        let record = EventRecord {
            id: event.id.clone(),
            instance: event.instance.clone(),
            event: event.event.clone(),
            received_at: event.received_at,
            raw: String::from_utf8_lossy(&event.raw).into_owned(),
            recovered: event.recovered,
        };
        let published = match serde_json::to_vec(&record) {
            Ok(payload) => self
                .js
                .send_publish(
                    format!("swo.events.{}", event.id),
                    jetstream::message::PublishMessage::build()
                        .payload(payload.into())
                        .message_id(&event.id),
                )
                .await
                .map_err(|error| error.to_string()),
            Err(error) => Err(error.to_string()),
        };
        match published {
            Ok(ack) => ack.await.map(|_| ()).map_err(|error| error.to_string()),
            Err(error) => Err(error),
        }
    }

    /// Publishes the deliveries of one routed event (dead ones straight to `SWO_DEAD`), each
    /// with a message id fixed by its delivery id, so publishing them again stores nothing new.
    async fn publish_routing(&self, routed: &RoutedEvent) -> Result<(), QueueError> {
        let event = &routed.event;
        let raw = String::from_utf8_lossy(&event.raw).into_owned();
        let publishes = routed.deliveries.iter().map(|delivery| {
            let record = Record {
                id: delivery.id.clone(),
                event_id: event.id.clone(),
                instance: event.instance.clone(),
                event: event.event.clone(),
                webhook: delivery.sink.webhook.clone(),
                sink: delivery.sink.sink.clone(),
                route: delivery.route.clone(),
                enqueued_at: event.received_at,
                attempts: 0,
                last_error: delivery.dead_on_arrival.clone(),
                delivered_at: None,
                raw: raw.clone(),
                recovered: event.recovered,
            };
            async move {
                if delivery.dead_on_arrival.is_some() {
                    self.bury("route", &record, "routed").await
                } else {
                    self.enqueue("route", &record, "new").await
                }
            }
        });
        futures::future::join_all(publishes)
            .await
            .into_iter()
            .collect()
    }

    /// Claims the dedup key for `event`, or names the event that holds it within the window.
    async fn deduplicate(&self, key: &str, event: &NewEvent) -> Result<Option<String>, QueueError> {
        let key = hex(key.as_bytes());
        let value = event.id.clone().into_bytes();
        if self.dedup.create(&key, value.clone().into()).await.is_ok() {
            return Ok(None);
        }
        let entry = self
            .dedup
            .entry(&key)
            .await
            .map_err(|error| storage("dedup")(error.to_string()))?;
        let Some(entry) = entry else {
            // Expired between the two calls: the window is long gone.
            return Ok(None);
        };
        let stored_at = entry.created.unix_timestamp_nanos() / 1_000_000;
        let original = String::from_utf8_lossy(&entry.value).into_owned();
        if i128::from(event.received_at) - stored_at <= i128::from(event.dedup_window_ms)
            && entry.operation == kv::Operation::Put
        {
            return Ok(Some(original));
        }
        match self.dedup.update(&key, value.into(), entry.revision).await {
            Ok(_) => Ok(None),
            // Another replica renewed the key just now with the same event: a duplicate of it.
            Err(_) => Ok(Some(original)),
        }
    }

    async fn consumer(&self, sink: &SinkKey, lease_ms: i64) -> Result<PullConsumer, QueueError> {
        let mut consumers = self.consumers.lock().await;
        if let Some(consumer) = consumers.get(sink) {
            return Ok(consumer.clone());
        }
        let name = sink_token(sink);
        let consumer = self
            .deliveries
            .get_or_create_consumer(
                &name,
                pull::Config {
                    filter_subject: format!("swo.deliveries.{name}.>"),
                    num_replicas: 0,
                    ..leased_consumer(
                        name.clone(),
                        Duration::from_millis(u64::try_from(lease_ms).unwrap_or(30_000)),
                    )
                },
            )
            .await
            .map_err(|error| storage("claim")(format!("consumer for {sink}: {error}")))?;
        consumers.insert(sink.clone(), consumer.clone());
        Ok(consumer)
    }

    /// True when this replica delivers `sink`: it holds the sink's claim in the state bucket,
    /// renewed here, or takes it over because the holder stopped renewing it. One deliverer
    /// per sink is what keeps its rate limit, concurrency and coalescing exact with several
    /// replicas. The claim's age is the bucket entry's server timestamp against this replica's
    /// clock, so clocks must agree to well within the TTL (NTP does).
    async fn owns(&self, sink: &SinkKey) -> Result<bool, QueueError> {
        let now = now_millis();
        if lock(&self.owned)
            .get(sink)
            .is_some_and(|renewed| now - renewed < OWNER_TTL_MS / 3)
        {
            return Ok(true);
        }
        let key = format!("owner.{}", sink_token(sink));
        let entry = self
            .state
            .entry(&key)
            .await
            .map_err(|error| storage("claim")(error.to_string()))?;
        let me = self.replica.clone().into_bytes();
        let won = match entry {
            Some(entry) if entry.operation == kv::Operation::Put => {
                let age = i128::from(now) - entry.created.unix_timestamp_nanos() / 1_000_000;
                let mine = entry.value == me;
                (mine || age >= i128::from(OWNER_TTL_MS))
                    && self
                        .state
                        .update(&key, me.into(), entry.revision)
                        .await
                        .is_ok()
            }
            Some(entry) => self
                .state
                .update(&key, me.into(), entry.revision)
                .await
                .is_ok(),
            None => self.state.create(&key, me.into()).await.is_ok(),
        };
        let mut owned = lock(&self.owned);
        if won {
            if owned.insert(sink.clone(), now).is_none() {
                tracing::info!(%sink, replica = %self.replica, "this replica now delivers the sink");
            }
        } else if owned.remove(sink).is_some() {
            tracing::warn!(%sink, "another replica took over the sink");
        }
        Ok(won)
    }

    /// Adds `change` to this replica's counters of `sink` and writes them to the bucket.
    async fn count(&self, sink: SinkKey, change: impl FnOnce(&mut SinkCounters)) {
        let mut counters = self.counters.lock().await;
        let entry = counters.entry(sink.clone()).or_default();
        change(entry);
        let key = format!("counters.{}.{}", sink_token(&sink), self.replica);
        let written = match serde_json::to_vec(entry) {
            Ok(json) => self
                .state
                .put(key, json.into())
                .await
                .map_err(|e| e.to_string()),
            Err(error) => Err(error.to_string()),
        };
        if let Err(error) = written {
            // The counters are statistics; the delivery's outcome is already recorded.
            tracing::warn!(%sink, %error, "writing delivery counters failed");
        }
    }

    /// Reads the newest messages of `stream` (down from the last sequence) into records.
    async fn scan(
        &self,
        stream: &Stream,
        step: &'static str,
        mut keep: impl FnMut(&Record) -> bool,
        limit: usize,
    ) -> Result<Vec<(u64, Record)>, QueueError> {
        let mut info = stream.clone();
        let state = info
            .info()
            .await
            .map_err(|error| storage(step)(error.to_string()))?
            .state
            .clone();
        let mut found = Vec::new();
        if state.messages == 0 {
            return Ok(found);
        }
        let mut sequence = state.last_sequence;
        while sequence >= state.first_sequence && found.len() < limit {
            // Gaps (acknowledged or deleted messages) are skipped.
            if let Ok(message) = stream.get_raw_message(sequence).await
                && let Ok(record) = serde_json::from_slice::<Record>(&message.payload)
                && keep(&record)
            {
                found.push((sequence, record));
            }
            sequence -= 1;
        }
        Ok(found)
    }

    async fn last_on(&self, stream: &Stream, subject: String) -> Option<(u64, Record)> {
        let message = stream
            .get_last_raw_message_by_subject(&subject)
            .await
            .ok()?;
        serde_json::from_slice(&message.payload)
            .ok()
            .map(|record| (message.sequence, record))
    }

    async fn pending_record(&self, id: &str) -> Result<Option<(u64, Record)>, QueueError> {
        let found = self
            .scan(&self.deliveries, "show", |record| record.id == id, 1)
            .await?;
        Ok(found.into_iter().next())
    }

    /// Moves a dead or delivered record back into the work queue with a fresh count and age.
    /// `source` names the message it comes from (stream and sequence), which makes the publish's
    /// message id: replaying that message again stores nothing new.
    async fn requeue(&self, mut record: Record, source: &str) -> Result<SinkKey, QueueError> {
        let now = now_millis();
        record.attempts = 0;
        record.enqueued_at = now;
        record.last_error = None;
        record.delivered_at = None;
        self.enqueue("replay", &record, &format!("replay.{source}"))
            .await?;
        Ok(record.sink_key())
    }

    async fn finish(&self, claimed: Claimed, completion: Completion) -> Result<(), QueueError> {
        let Claimed {
            message,
            mut record,
        } = claimed;
        let info = message
            .info()
            .map_err(|error| storage("complete")(error.to_string()))?;
        let attempts = record.attempts + u32::try_from(info.delivered).unwrap_or(1);
        // What is published next carries a message id made of the claimed message's sequence:
        // completing that message twice (a retried call) stores one record, and two completions
        // of one delivery (say two hand-backs within a millisecond) never collapse into one.
        let claimed_sequence = info.stream_sequence;
        // The claim that found a poison delivery is not an attempt.
        let dead_attempts = match completion {
            Completion::DeadLetterUntried { .. } => attempts - 1,
            _ => attempts,
        };
        let sink = record.sink_key();
        let now = now_millis();
        let message = &message;
        let ack = |kind| async move {
            message
                .ack_with(kind)
                .await
                .map_err(|error| storage("complete")(error.to_string()))
        };
        match completion {
            Completion::Delivered => {
                record.attempts = attempts;
                record.delivered_at = Some(now);
                record.last_error = None;
                let subject = format!("swo.delivered.{}", record.id);
                let message_id = format!("{}.done.{claimed_sequence}", record.id);
                self.publish("complete", subject, &message_id, &record)
                    .await?;
                message
                    .double_ack()
                    .await
                    .map_err(|error| storage("complete")(error.to_string()))?;
                self.count(sink, |counters| {
                    counters.delivered += 1;
                    counters.last_success_at = Some(now);
                })
                .await;
            }
            Completion::Retry {
                next_attempt_at,
                error,
            } => {
                let delay =
                    Duration::from_millis(u64::try_from(next_attempt_at - now).unwrap_or(0));
                ack(AckKind::Nak(Some(delay))).await?;
                self.count(sink, |counters| {
                    counters.failed += 1;
                    counters.last_error = Some(error);
                })
                .await;
            }
            Completion::DeadLetter { error } | Completion::DeadLetterUntried { error } => {
                record.attempts = dead_attempts;
                record.last_error = Some(error.clone());
                // Stored dead first: a crash in between leaves the delivery in the work queue
                // (sent again), never in neither stream.
                self.bury("complete", &record, &format!("claimed.{claimed_sequence}"))
                    .await?;
                ack(AckKind::Ack).await?;
                self.count(sink, |counters| {
                    counters.dead_lettered += 1;
                    counters.last_error = Some(error);
                })
                .await;
            }
            Completion::Release { .. } => {
                // Handed back untried: re-published with the attempts it had, so the hand-back
                // does not count as an attempt the way a redelivery would.
                record.attempts = attempts - 1;
                self.enqueue("complete", &record, &format!("release.{claimed_sequence}"))
                    .await?;
                ack(AckKind::Ack).await?;
            }
        }
        Ok(())
    }
}

impl Queue for NatsQueue {
    fn ingest(&self, event: NewEvent) -> BoxFuture<'_, Result<IngestOutcome, QueueError>> {
        Box::pin(async move {
            if let Some(key) = &event.dedup_key
                && let Some(original) = self.deduplicate(key, &event).await?
            {
                return Ok(IngestOutcome::Duplicate { original });
            }
            let entries = self
                .version_entries(&event.instance, &event.versions)
                .await?;
            let stored: Vec<Option<StoredVersions>> = entries.iter().map(decode_versions).collect();
            let seen: Vec<VersionSeen> = event
                .versions
                .iter()
                .zip(&stored)
                .map(|(version, stored)| seen(version, stored.as_ref()))
                .collect();
            if is_stored_copy(event.recovered, &seen) {
                let original = stored
                    .first()
                    .and_then(Option::as_ref)
                    .map(|stored| {
                        let at = event.versions[0].at;
                        stored
                            .recovered
                            .iter()
                            .find(|(recovered_at, _)| *recovered_at == at)
                            .map_or_else(|| stored.newest_event.clone(), |(_, id)| id.clone())
                    })
                    .unwrap_or_default();
                return Ok(IngestOutcome::Duplicate { original });
            }
            let stored = match event.deliveries.as_deref() {
                // One delivery is one message, as atomic as the event's own would be; more go
                // through the router, which publishes them once the event is in the work queue.
                Some([delivery]) => {
                    let routed = RoutedEvent {
                        event: UnroutedEvent {
                            id: event.id.clone(),
                            instance: event.instance.clone(),
                            event: event.event.clone(),
                            received_at: event.received_at,
                            raw: event.raw.clone(),
                            recovered: event.recovered,
                        },
                        deliveries: vec![delivery.clone()],
                    };
                    self.publish_routing(&routed)
                        .await
                        .map_err(|error| error.to_string())
                }
                _ => self.publish_unrouted(&event).await,
            };
            if let Err(error) = stored {
                if let Some(key) = &event.dedup_key {
                    // Not stored, so not a duplicate for whoever sends it again.
                    let _ = self.dedup.purge(hex(key.as_bytes())).await;
                }
                return Err(storage("ingest")(error));
            }
            // Recorded after the event: a crash in between at worst makes the gap repair
            // recover the event once more (at least once), never lose it.
            for (version, entry) in event.versions.iter().zip(entries) {
                self.record_version(&event, version, entry).await?;
            }
            Ok(IngestOutcome::Stored)
        })
    }

    fn unrouted(&self, limit: u32) -> BoxFuture<'_, Result<Vec<UnroutedEvent>, QueueError>> {
        Box::pin(async move {
            // The expiry bounds the wait when nothing is unrouted (the router polls with it, so
            // events another replica stored are routed too) and when NATS does not answer.
            let mut messages = self
                .router
                .fetch()
                .max_messages(usize::try_from(limit).unwrap_or(1))
                .expires(FETCH_EXPIRY)
                .messages()
                .await
                .map_err(|error| storage("list unrouted events")(error.to_string()))?;
            let mut unrouted = Vec::new();
            while let Some(message) = messages
                .try_next()
                .await
                .map_err(|error| storage("list unrouted events")(error.to_string()))?
            {
                let Ok(record) = serde_json::from_slice::<EventRecord>(&message.payload) else {
                    tracing::error!(subject = %message.subject, "unreadable event message; terminated");
                    let _ = message.ack_with(AckKind::Term).await;
                    continue;
                };
                lock(&self.routing).insert(record.id.clone(), message);
                unrouted.push(UnroutedEvent {
                    id: record.id,
                    instance: record.instance,
                    event: record.event,
                    received_at: record.received_at,
                    raw: record.raw.into_bytes(),
                    recovered: record.recovered,
                });
            }
            Ok(unrouted)
        })
    }

    fn route(&self, routed: Vec<RoutedEvent>) -> BoxFuture<'_, Result<(), QueueError>> {
        Box::pin(async move {
            let mut failure = None;
            for routed in &routed {
                let message = lock(&self.routing).remove(&routed.event.id);
                let Some(message) = message else {
                    // Not fetched here (or already routed): its lease is another replica's.
                    continue;
                };
                let published = self.publish_routing(routed).await;
                let answered = match &published {
                    // The event leaves the work queue only once its deliveries are stored.
                    Ok(()) => message.double_ack().await,
                    // Handed back at once rather than after the lease: routed again soon.
                    Err(_) => message.ack_with(AckKind::Nak(None)).await,
                };
                if let Err(error) = published
                    .and_then(|()| answered.map_err(|error| storage("route")(error.to_string())))
                {
                    failure.get_or_insert(error);
                }
            }
            failure.map_or(Ok(()), Err)
        })
    }

    fn unrouted_count(&self) -> BoxFuture<'_, Result<u64, QueueError>> {
        Box::pin(async move {
            let mut router = self.router.clone();
            let info = router
                .info()
                .await
                .map_err(|error| storage("count unrouted events")(error.to_string()))?;
            Ok(info.num_pending + u64::try_from(info.num_ack_pending).unwrap_or(0))
        })
    }

    fn save_known_instances(&self, known: KnownInstances) -> BoxFuture<'_, Result<(), QueueError>> {
        Box::pin(async move {
            let value = serde_json::to_vec(&known)
                .map_err(|error| storage("save known instances")(error.to_string()))?;
            self.state
                .put(KNOWN_INSTANCES_KEY, value.into())
                .await
                .map_err(|error| storage("save known instances")(error.to_string()))?;
            Ok(())
        })
    }

    fn known_instances(&self) -> BoxFuture<'_, Result<KnownInstances, QueueError>> {
        Box::pin(async move {
            let value = self
                .state
                .get(KNOWN_INSTANCES_KEY)
                .await
                .map_err(|error| storage("read known instances")(error.to_string()))?;
            value.map_or_else(
                || Ok(KnownInstances::new()),
                |value| {
                    serde_json::from_slice(&value)
                        .map_err(|error| storage("read known instances")(error.to_string()))
                },
            )
        })
    }

    fn record_handshake(
        &self,
        instance: String,
        at: UnixMillis,
    ) -> BoxFuture<'_, Result<(), QueueError>> {
        Box::pin(async move {
            let key = format!("handshake.{}", hex(instance.as_bytes()));
            // Compare-and-set, retried: replicas may record handshakes of one instance at once.
            loop {
                let entry = self
                    .state
                    .entry(&key)
                    .await
                    .map_err(|error| storage("handshake")(error.to_string()))?;
                let mut handshake: Handshake = entry
                    .as_ref()
                    .and_then(|entry| serde_json::from_slice(&entry.value).ok())
                    .unwrap_or_default();
                handshake.count += 1;
                handshake.last_at = Some(handshake.last_at.map_or(at, |last| last.max(at)));
                let value = serde_json::to_vec(&handshake)
                    .map_err(|error| storage("handshake")(error.to_string()))?;
                let written = match entry {
                    Some(entry) => self
                        .state
                        .update(&key, value.into(), entry.revision)
                        .await
                        .is_ok(),
                    None => self.state.create(&key, value.into()).await.is_ok(),
                };
                if written {
                    return Ok(());
                }
            }
        })
    }

    fn handshake(&self, instance: String) -> BoxFuture<'_, Result<Handshake, QueueError>> {
        Box::pin(async move {
            let key = format!("handshake.{}", hex(instance.as_bytes()));
            let value = self
                .state
                .get(key)
                .await
                .map_err(|error| storage("handshake")(error.to_string()))?;
            Ok(value
                .and_then(|value| serde_json::from_slice(&value).ok())
                .unwrap_or_default())
        })
    }

    fn claim(
        &self,
        sink: SinkKey,
        _now: UnixMillis,
        limit: u32,
        lease_ms: i64,
    ) -> BoxFuture<'_, Result<Vec<ClaimedDelivery>, QueueError>> {
        Box::pin(async move {
            if !self.owns(&sink).await? {
                return Ok(Vec::new());
            }
            let consumer = self.consumer(&sink, lease_ms).await?;
            // The expiry also bounds the wait for the server's answer: a pull request sent while
            // NATS restarts may never be answered, and without it the sink's worker would wait
            // for ever.
            let mut messages = consumer
                .fetch()
                .max_messages(usize::try_from(limit).unwrap_or(1))
                .expires(FETCH_EXPIRY)
                .messages()
                .await
                .map_err(|error| storage("claim")(error.to_string()))?;
            let mut claimed = Vec::new();
            while let Some(message) = messages
                .try_next()
                .await
                .map_err(|error| storage("claim")(error.to_string()))?
            {
                let Ok(record) = serde_json::from_slice::<Record>(&message.payload) else {
                    // Not ours: someone published into our subjects. Dropped loudly, never
                    // redelivered forever.
                    tracing::error!(subject = %message.subject, "unreadable delivery message; terminated");
                    let _ = message.ack_with(AckKind::Term).await;
                    continue;
                };
                let delivered = message
                    .info()
                    .map_or(1, |info| u32::try_from(info.delivered).unwrap_or(1));
                claimed.push(ClaimedDelivery {
                    id: record.id.clone(),
                    event_id: record.event_id.clone(),
                    sink: record.sink_key(),
                    route: record.route.clone(),
                    attempts: record.attempts + delivered - 1,
                    enqueued_at: record.enqueued_at,
                    raw: record.raw.clone().into_bytes(),
                    recovered: record.recovered,
                });
                lock(&self.claimed).insert(record.id.clone(), Claimed { message, record });
            }
            Ok(claimed)
        })
    }

    fn next_due(&self, sink: SinkKey) -> BoxFuture<'_, Result<Option<UnixMillis>, QueueError>> {
        Box::pin(async move {
            if !lock(&self.owned).contains_key(&sink) {
                // Another replica delivers it; ask again before its claim could run out.
                return Ok(Some(now_millis() + OWNER_TTL_MS / 3));
            }
            let Some(mut consumer) = self.consumers.lock().await.get(&sink).cloned() else {
                // Never claimed here: look again soon, the first claim creates the consumer.
                return Ok(Some(now_millis() + REDELIVERY_POLL_MS));
            };
            let info = consumer
                .info()
                .await
                .map_err(|error| storage("next due")(error.to_string()))?;
            Ok(if info.num_pending > 0 {
                Some(now_millis())
            } else if info.num_ack_pending > 0 {
                Some(now_millis() + REDELIVERY_POLL_MS)
            } else {
                None
            })
        })
    }

    fn due(
        &self,
        sink: SinkKey,
        now: UnixMillis,
        limit: u32,
    ) -> BoxFuture<'_, Result<Due, QueueError>> {
        Box::pin(async move {
            let failed = |error: String| storage("due")(error);
            let at_most = |count: u64| u32::try_from(count).unwrap_or(u32::MAX).min(limit);
            let consumer = self.consumers.lock().await.get(&sink).cloned();
            let Some(mut consumer) = consumer else {
                // Before the first claim here creates the sink's consumer: every delivery in the
                // stream (one subject each), since the oldest was enqueued.
                let Some(since) = self.oldest_waiting(&sink, 0).await else {
                    return Ok(Due::default());
                };
                let count = self
                    .deliveries
                    .info_with_subjects(format!("swo.deliveries.{}.>", sink_token(&sink)))
                    .await
                    .map_err(|error| failed(error.to_string()))?
                    .try_fold(0_u64, |count, _| async move { Ok(count + 1) })
                    .await
                    .map_err(|error| failed(error.to_string()))?;
                return Ok(Due {
                    count: at_most(count),
                    since: Some(since),
                });
            };
            let info = consumer
                .info()
                .await
                .map_err(|error| failed(error.to_string()))?;
            if info.num_pending > 0 {
                // The oldest message not handed out yet; those in flight or held back for a
                // retry come before it in the stream.
                let next = info.delivered.stream_sequence + 1;
                let since = self.oldest_waiting(&sink, next).await.unwrap_or(now);
                return Ok(Due {
                    count: at_most(info.num_pending),
                    since: Some(since),
                });
            }
            // Only messages handed out before are left: JetStream redelivers those whose lease
            // ran out or whose retry delay passed without saying when, so they count as due
            // since they were enqueued.
            let since = if info.num_ack_pending > 0 {
                self.oldest_waiting(&sink, 0).await
            } else {
                None
            };
            Ok(Due { count: 0, since })
        })
    }

    fn complete(
        &self,
        id: String,
        completion: Completion,
    ) -> BoxFuture<'_, Result<(), QueueError>> {
        Box::pin(async move {
            let claimed = lock(&self.claimed)
                .remove(&id)
                .ok_or_else(|| QueueError::NotFound(id.clone()))?;
            let sink = claimed.record.sink_key();
            self.finish(claimed, completion).await?;
            // A worker whose permits are all taken by slow sends claims nothing for a while;
            // its completions keep the sink's claim alive instead.
            self.owns(&sink).await?;
            Ok(())
        })
    }

    fn waiting_sinks(&self) -> BoxFuture<'_, Result<Vec<SinkKey>, QueueError>> {
        Box::pin(async move {
            let subjects: Vec<(String, usize)> = self
                .deliveries
                .info_with_subjects("swo.deliveries.>")
                .await
                .map_err(|error| storage("waiting sinks")(error.to_string()))?
                .try_collect()
                .await
                .map_err(|error| storage("waiting sinks")(error.to_string()))?;
            let mut sinks: Vec<SinkKey> = subjects
                .iter()
                .filter_map(|(subject, _)| subject.split('.').nth(2).and_then(sink_from_token))
                .collect();
            sinks.sort();
            sinks.dedup();
            Ok(sinks)
        })
    }

    fn dead_letter_waiting(
        &self,
        sink: SinkKey,
        reason: String,
    ) -> BoxFuture<'_, Result<u64, QueueError>> {
        Box::pin(async move {
            let token = sink_token(&sink);
            let waiting = self
                .scan(
                    &self.deliveries,
                    "dead-letter",
                    |record| record.sink_key() == sink,
                    usize::MAX,
                )
                .await?;
            let mut count = 0;
            for (sequence, mut record) in waiting {
                record.last_error = Some(reason.clone());
                self.bury("dead-letter", &record, &format!("waiting.{sequence}"))
                    .await?;
                self.deliveries
                    .delete_message(sequence)
                    .await
                    .map_err(|error| storage("dead-letter")(error.to_string()))?;
                count += 1;
            }
            if count > 0 {
                tracing::debug!(%sink, token, count, "moved waiting deliveries to the dead letters");
                self.count(sink, |counters| {
                    counters.dead_lettered += i64::try_from(count).unwrap_or(i64::MAX);
                    counters.last_error = Some(reason);
                })
                .await;
            }
            Ok(count)
        })
    }

    fn list(
        &self,
        filter: DeliveryFilter,
    ) -> BoxFuture<'_, Result<Vec<DeliverySummary>, QueueError>> {
        Box::pin(async move {
            let limit = usize::try_from(filter.limit).unwrap_or(usize::MAX).max(1);
            let inflight: Vec<String> = lock(&self.claimed).keys().cloned().collect();
            let mut rows = Vec::new();
            let wants = |state: DeliveryState| filter.state.is_none_or(|wanted| wanted == state);
            if wants(DeliveryState::Pending) || wants(DeliveryState::Inflight) {
                let waiting = self
                    .scan(
                        &self.deliveries,
                        "list",
                        |record| {
                            let state = if inflight.contains(&record.id) {
                                DeliveryState::Inflight
                            } else {
                                DeliveryState::Pending
                            };
                            record.matches(state, &filter)
                        },
                        limit,
                    )
                    .await?;
                rows.extend(waiting.into_iter().map(|(_, record)| {
                    let state = if inflight.contains(&record.id) {
                        DeliveryState::Inflight
                    } else {
                        DeliveryState::Pending
                    };
                    record.summary(state)
                }));
            }
            for (stream, state) in [
                (&self.dead, DeliveryState::Dead),
                (&self.delivered, DeliveryState::Delivered),
            ] {
                if wants(state) {
                    let found = self
                        .scan(
                            stream,
                            "list",
                            |record| record.matches(state, &filter),
                            limit,
                        )
                        .await?;
                    rows.extend(found.into_iter().map(|(_, record)| record.summary(state)));
                }
            }
            rows.sort_by(|a, b| (b.enqueued_at, &b.id).cmp(&(a.enqueued_at, &a.id)));
            // A hand-back in progress holds a delivery's old and new message: list it once.
            rows.dedup_by(|a, b| a.id == b.id && a.state == b.state);
            rows.truncate(limit);
            Ok(rows)
        })
    }

    fn show(&self, id: String) -> BoxFuture<'_, Result<DeliveryDetail, QueueError>> {
        Box::pin(async move {
            let (record, state) = if let Some((_, record)) =
                self.last_on(&self.dead, format!("swo.dead.{id}")).await
            {
                (record, DeliveryState::Dead)
            } else if let Some((_, record)) = self
                .last_on(&self.delivered, format!("swo.delivered.{id}"))
                .await
            {
                (record, DeliveryState::Delivered)
            } else if let Some((_, record)) = self.pending_record(&id).await? {
                let state = if lock(&self.claimed).contains_key(&id) {
                    DeliveryState::Inflight
                } else {
                    DeliveryState::Pending
                };
                (record, state)
            } else {
                return Err(QueueError::NotFound(id));
            };
            let payload = serde_json::from_str(&record.raw)
                .unwrap_or_else(|_| serde_json::Value::String(record.raw.clone()));
            Ok(DeliveryDetail {
                summary: record.summary(state),
                payload,
            })
        })
    }

    fn replay(
        &self,
        selector: ReplaySelector,
    ) -> BoxFuture<'_, Result<Vec<(SinkKey, i64)>, QueueError>> {
        Box::pin(async move {
            let dead: Vec<(u64, Record)> = match &selector {
                ReplaySelector::Id(id) => {
                    if let Some(found) = self.last_on(&self.dead, format!("swo.dead.{id}")).await {
                        vec![found]
                    } else if let Some((sequence, record)) = self
                        .last_on(&self.delivered, format!("swo.delivered.{id}"))
                        .await
                    {
                        let sink = self
                            .requeue(record, &format!("delivered.{sequence}"))
                            .await?;
                        return Ok(vec![(sink, 1)]);
                    } else if self.pending_record(id).await?.is_some() {
                        return Err(QueueError::NotReplayable {
                            id: id.clone(),
                            state: DeliveryState::Pending,
                        });
                    } else {
                        return Err(QueueError::NotFound(id.clone()));
                    }
                }
                ReplaySelector::DeadLetters { webhook, sink } => {
                    self.scan(
                        &self.dead,
                        "replay",
                        |record| {
                            webhook.as_ref().is_none_or(|w| *w == record.webhook)
                                && sink.as_ref().is_none_or(|s| *s == record.sink)
                        },
                        usize::MAX,
                    )
                    .await?
                }
            };
            let mut replayed: BTreeMap<SinkKey, i64> = BTreeMap::new();
            for (sequence, record) in dead {
                let subject = format!("swo.dead.{}", record.id);
                let sink = self.requeue(record, &format!("dead.{sequence}")).await?;
                // Requeued first: a crash in between replays it twice, never loses it.
                self.dead
                    .purge()
                    .filter(subject)
                    .await
                    .map_err(|error| storage("replay")(error.to_string()))?;
                *replayed.entry(sink).or_default() += 1;
            }
            Ok(replayed.into_iter().collect())
        })
    }

    fn counters(&self) -> BoxFuture<'_, Result<Vec<(SinkKey, SinkCounters)>, QueueError>> {
        Box::pin(async move {
            let keys: Vec<String> = self
                .state
                .keys()
                .await
                .map_err(|error| storage("counters")(error.to_string()))?
                .try_collect()
                .await
                .map_err(|error| storage("counters")(error.to_string()))?;
            let mut totals: BTreeMap<SinkKey, SinkCounters> = BTreeMap::new();
            for key in keys {
                let Some(sink) = key
                    .strip_prefix("counters.")
                    .and_then(|rest| rest.split('.').next())
                    .and_then(sink_from_token)
                else {
                    continue;
                };
                let Some(value) = self
                    .state
                    .get(&key)
                    .await
                    .map_err(|error| storage("counters")(error.to_string()))?
                else {
                    continue;
                };
                let Ok(part) = serde_json::from_slice::<SinkCounters>(&value) else {
                    continue;
                };
                let total = totals.entry(sink).or_default();
                total.delivered += part.delivered;
                total.failed += part.failed;
                total.dead_lettered += part.dead_lettered;
                if part.last_success_at > total.last_success_at {
                    total.last_success_at = part.last_success_at;
                }
                if part.last_error.is_some() {
                    total.last_error = part.last_error;
                }
            }
            let waiting = self.waiting_counts().await?;
            for (sink, pending) in waiting {
                let oldest = self.oldest_waiting(&sink, 0).await;
                let total = totals.entry(sink).or_default();
                total.pending = pending;
                total.oldest_pending_at = oldest;
            }
            for (sink, dead) in self.dead_counts().await? {
                totals.entry(sink).or_default().dead_letters = dead;
            }
            Ok(totals.into_iter().collect())
        })
    }

    fn prune(&self, _before: UnixMillis) -> BoxFuture<'_, Result<u64, QueueError>> {
        // SWO_DELIVERED expires its records by max_age, and acknowledged messages leave the work
        // queue by themselves.
        Box::pin(async { Ok(0) })
    }

    fn covered(
        &self,
        instance: String,
        versions: Vec<DocumentVersion>,
    ) -> BoxFuture<'_, Result<Vec<bool>, QueueError>> {
        Box::pin(async move {
            let stored = self.stored_versions(&instance, &versions).await?;
            Ok(versions
                .iter()
                .zip(&stored)
                .map(|(version, stored)| seen(version, stored.as_ref()).covered)
                .collect())
        })
    }

    fn watermarks(&self, instance: String) -> BoxFuture<'_, Result<Watermarks, QueueError>> {
        Box::pin(async move {
            let entry = self
                .state
                .entry(watermark_key(&instance))
                .await
                .map_err(|error| storage("watermarks")(error.to_string()))?;
            Ok(entry
                .and_then(|entry| serde_json::from_slice(&entry.value).ok())
                .unwrap_or_default())
        })
    }

    fn advance_watermarks(
        &self,
        instance: String,
        marks: Watermarks,
    ) -> BoxFuture<'_, Result<(), QueueError>> {
        Box::pin(async move {
            let key = watermark_key(&instance);
            // Two controllers (or a controller and local mode) may advance one instance's marks
            // at once.
            update_json(
                &self.state,
                &key,
                "advance watermarks",
                |current: &mut Watermarks| {
                    let before = current.clone();
                    for (uid, mark) in &marks {
                        let current = current.entry(uid.clone()).or_insert(*mark);
                        current.at = current.at.max(mark.at);
                    }
                    *current != before
                },
            )
            .await
        })
    }
}

fn watermark_key(instance: &str) -> String {
    format!("watermark.{}", hex(instance.as_bytes()))
}

fn version_key(instance: &str, version: &DocumentVersion) -> String {
    hex(format!("{instance}\u{1f}{}", version.key()).as_bytes())
}

/// The versions an `swo-versions` entry holds, if it holds any readable ones.
fn decode_versions(entry: &Option<kv::Entry>) -> Option<StoredVersions> {
    entry
        .as_ref()
        .filter(|entry| entry.operation == kv::Operation::Put)
        .and_then(|entry| serde_json::from_slice(&entry.value).ok())
}

fn seen(version: &DocumentVersion, stored: Option<&StoredVersions>) -> VersionSeen {
    stored.map_or_else(VersionSeen::default, |stored| VersionSeen {
        covered: stored.newest >= version.at,
        recovered_exactly: stored.recovered.iter().any(|(at, _)| *at == version.at),
    })
}

impl NatsQueue {
    /// When the sink's first message in the work queue from stream sequence `from` on was
    /// enqueued; from 0, the oldest waiting delivery but for a hand-back, which goes to the back
    /// of the queue with its age.
    async fn oldest_waiting(&self, sink: &SinkKey, from: u64) -> Option<UnixMillis> {
        let subject = format!("swo.deliveries.{}.>", sink_token(sink));
        let message = self
            .deliveries
            .get_first_raw_message_by_subject(subject, from)
            .await
            .ok()?;
        serde_json::from_slice::<Record>(&message.payload)
            .ok()
            .map(|record| record.enqueued_at)
    }

    /// The `swo-versions` entry of each version's document key, as read now.
    async fn version_entries(
        &self,
        instance: &str,
        versions: &[DocumentVersion],
    ) -> Result<Vec<Option<kv::Entry>>, QueueError> {
        let reads = versions.iter().map(|version| async move {
            self.versions
                .entry(version_key(instance, version))
                .await
                .map_err(|error| storage("versions")(error.to_string()))
        });
        futures::future::try_join_all(reads).await
    }

    /// What `swo-versions` holds for each version's document key.
    async fn stored_versions(
        &self,
        instance: &str,
        versions: &[DocumentVersion],
    ) -> Result<Vec<Option<StoredVersions>>, QueueError> {
        let entries = self.version_entries(instance, versions).await?;
        Ok(entries.iter().map(decode_versions).collect())
    }

    /// Records that `event` showed `version`, with compare-and-set from `entry` (the version's
    /// entry as read before the event was stored): replicas may store versions of one document
    /// at once. A version no newer than the one recorded, shown by an event from Strapi, changes
    /// nothing and writes nothing; of events showing the same version, the first is the one
    /// recorded (as the SQLite queue does).
    async fn record_version(
        &self,
        event: &NewEvent,
        version: &DocumentVersion,
        entry: Option<kv::Entry>,
    ) -> Result<(), QueueError> {
        let key = version_key(&event.instance, version);
        update_json_from(
            &self.versions,
            &key,
            "record version",
            entry,
            |stored: &mut StoredVersions| {
                let newer = version.at > stored.newest || stored.newest_event.is_empty();
                if newer {
                    stored.newest = version.at;
                    stored.newest_event = event.id.clone();
                }
                if event.recovered {
                    stored.recovered.push((version.at, event.id.clone()));
                    let excess = stored.recovered.len().saturating_sub(RECOVERED_KEPT);
                    stored.recovered.drain(..excess);
                }
                newer || event.recovered
            },
        )
        .await
    }

    /// Dead letters per sink. They are stored by delivery id, not by sink, so counting reads
    /// every one; the count is reused while the stream's last sequence and message count stay
    /// the same (no new dead letter, no replay), so a scrape of an unchanged stream reads only
    /// its state.
    async fn dead_counts(&self) -> Result<BTreeMap<SinkKey, i64>, QueueError> {
        let state = self
            .dead
            .clone()
            .info()
            .await
            .map_err(|error| storage("counters")(error.to_string()))?
            .state
            .clone();
        let seen = (state.last_sequence, state.messages);
        let mut counted = self.dead_counted.lock().await;
        if let Some((at, counts)) = counted.as_ref()
            && *at == seen
        {
            return Ok(counts.clone());
        }
        let mut counts = BTreeMap::new();
        for (_, record) in self
            .scan(&self.dead, "counters", |_| true, usize::MAX)
            .await?
        {
            *counts.entry(record.sink_key()).or_default() += 1;
        }
        *counted = Some((seen, counts.clone()));
        Ok(counts)
    }

    /// Deliveries still in the work queue, per sink. Each delivery has a subject of its own, and
    /// a hand-back re-publishes on it before acknowledging the old message, so for a moment a
    /// subject holds two messages: counting subjects, not messages, counts each delivery once.
    async fn waiting_counts(&self) -> Result<BTreeMap<SinkKey, i64>, QueueError> {
        let subjects: Vec<(String, usize)> = self
            .deliveries
            .info_with_subjects("swo.deliveries.>")
            .await
            .map_err(|error| storage("counters")(error.to_string()))?
            .try_collect()
            .await
            .map_err(|error| storage("counters")(error.to_string()))?;
        let mut counts = BTreeMap::new();
        for (subject, _messages) in subjects {
            if let Some(sink) = subject.split('.').nth(2).and_then(sink_from_token) {
                *counts.entry(sink).or_default() += 1;
            }
        }
        Ok(counts)
    }
}

impl std::fmt::Debug for NatsQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsQueue")
            .field("replica", &self.replica)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_carries_the_replicas() {
        assert_eq!(
            NatsSpec::parse("nats://nats.nats:4222?replicas=3"),
            Some(NatsSpec {
                url: "nats://nats.nats:4222".into(),
                replicas: 3
            })
        );
        assert_eq!(
            NatsSpec::parse("nats://127.0.0.1:4222").map(|s| s.replicas),
            Some(1)
        );
        assert_eq!(NatsSpec::parse("nats://h:1?replicas=9"), None);
        assert_eq!(NatsSpec::parse("nats://h:1?color=red"), None);
        assert_eq!(NatsSpec::parse("nats://"), None);
        assert_eq!(NatsSpec::parse("sqlite:/x"), None);
    }

    #[test]
    fn sink_tokens_round_trip_any_name() {
        let sink = SinkKey {
            webhook: "cms/site.v2".into(),
            sink: "next*js".into(),
        };
        let token = sink_token(&sink);
        assert!(token.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(sink_from_token(&token), Some(sink));
    }
}
