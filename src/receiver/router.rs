//! The router: turns stored, unrouted events into deliveries, off the ingest path.
//!
//! Ingest stores an event unrouted and answers Strapi at once; tenant-written route filters
//! never run while Strapi waits. (An event whose routing runs no tenant code, because no route
//! it matches has a filter, is routed by ingest itself with [`route_without_tenant_code`] and
//! stored with its deliveries in one write: the router would only repeat that work.) This task
//! takes unrouted events in arrival order, in batches, evaluates every enabled webhook's routes
//! against the *live* configuration, and stores the deliveries together with the event's
//! routed mark ([`crate::queue::Queue::route`]). Before the live configuration has loaded (right
//! after a restart, ingest already accepts events of known instances) it routes nothing: an
//! event is never routed with a configuration older than the one it arrived under. Events left
//! unrouted by a crash are routed after the restart.

use std::{sync::Arc, time::Duration};

use tokio::sync::watch;

use super::{ReceiverState, source::Snapshot, tenant};
use crate::{
    config::CompiledWebhook,
    event::EventBody,
    queue::{NewDelivery, QueueError, RoutedEvent, SinkKey, UnroutedEvent, delivery_id},
    routing::CompiledRoute,
};

/// How long the router waits for one webhook's route filters on one event, counted from when
/// they start. Filters are bounded by their cost budget when loaded, so this only catches one
/// that is slow on a pathological event (its deliveries are stored dead with the reason). Strapi
/// no longer waits on filters, so the limit leaves room for a filter near its budget on a busy
/// machine (the template limit is the same) rather than dead-lettering it.
pub const FILTER_TIME_LIMIT: Duration = Duration::from_secs(1);

/// Events routed per batch (one queue transaction). Each webhook's filters run on the batch in
/// [`tenant::SLOTS`] jobs side by side, so a filter that is slow on every event holds a batch
/// up by at most `BATCH / SLOTS` times [`FILTER_TIME_LIMIT`].
const BATCH: u32 = 256;

/// How often the router looks for unrouted events without being woken: events stored by
/// another replica of a shared queue, or left after a failed routing.
const POLL: Duration = Duration::from_millis(500);

/// After a failed routing, the wait before trying again.
const RETRY: Duration = Duration::from_secs(1);

/// Routes until `stopping` turns true; what is unrouted then is routed after the next start.
pub async fn run(state: Arc<ReceiverState>, mut stopping: watch::Receiver<bool>) {
    let mut config = state.config.clone();
    tokio::select! {
        _ = config.wait_for(|snapshot| snapshot.synced) => {}
        _ = stopping.wait_for(|stop| *stop) => return,
    }
    tracing::debug!("the live configuration is loaded; routing stored events");
    while !*stopping.borrow() {
        let pause = match route_batch(&state).await {
            Ok(routed) if routed > 0 => continue,
            Ok(_) => POLL,
            Err(error) => {
                tracing::error!(%error, "routing stored events failed; trying again");
                RETRY
            }
        };
        tokio::select! {
            () = state.routing.notified() => {}
            () = tokio::time::sleep(pause) => {}
            _ = stopping.wait_for(|stop| *stop) => {}
        }
    }
}

/// Routes one batch of unrouted events with the live configuration and wakes the sinks they
/// go to. Returns how many events it routed.
async fn route_batch(state: &ReceiverState) -> Result<usize, QueueError> {
    let events = state.queue.unrouted(BATCH).await?;
    if events.is_empty() {
        return Ok(0);
    }
    let snapshot = state.config.borrow().clone();
    let routed = route_events(&snapshot, events).await;
    let count = routed.len();
    let sinks = sinks_to_wake(routed.iter().flat_map(|routed| &routed.deliveries));
    for routed in &routed {
        tracing::debug!(
            event_id = %routed.event.id,
            deliveries = routed.deliveries.len(),
            "routed"
        );
    }
    state.queue.route(routed).await?;
    for sink in &sinks {
        state.engine.wake(sink);
    }
    Ok(count)
}

/// The sinks to wake once `deliveries` are stored: those of live deliveries, each once.
pub(super) fn sinks_to_wake<'a>(
    deliveries: impl IntoIterator<Item = &'a NewDelivery>,
) -> Vec<SinkKey> {
    let mut sinks: Vec<SinkKey> = deliveries
        .into_iter()
        .filter(|delivery| delivery.dead_on_arrival.is_none())
        .map(|delivery| delivery.sink.clone())
        .collect();
    sinks.sort();
    sinks.dedup();
    sinks
}

/// The deliveries of `event` (to be stored as `event_id`) of `instance` when routing it runs
/// no tenant code: the live configuration has loaded and no route of an enabled webhook
/// subscribed to the event takes it through a filter. Ingest then stores them with the event,
/// in the same write, and the router has nothing left to do; `None` leaves it to the router.
pub(super) fn route_without_tenant_code(
    snapshot: &Snapshot,
    instance: &str,
    event: &EventBody,
    event_id: &str,
) -> Option<Vec<NewDelivery>> {
    if !snapshot.synced {
        return None;
    }
    let mut routed = Vec::new();
    for webhook in subscribed(snapshot, instance, event) {
        if runs_filters(webhook, event) {
            return None;
        }
        routed.extend(deliveries(webhook, event, event_id));
    }
    Some(routed)
}

/// The enabled webhooks of `instance` subscribed to `event`.
fn subscribed<'a>(
    snapshot: &'a Snapshot,
    instance: &'a str,
    event: &'a EventBody,
) -> impl Iterator<Item = &'a Arc<CompiledWebhook>> {
    snapshot
        .webhooks_of(instance)
        .filter(|webhook| webhook.enabled && webhook.events.contains(&event.event))
}

/// True when routing `event` through `webhook` runs a tenant's filter.
fn runs_filters(webhook: &CompiledWebhook, event: &EventBody) -> bool {
    webhook
        .routes
        .iter()
        .any(|route| route.has_filter() && route.listed(event))
}

/// One delivery per (enabled webhook subscribed to the event, matching route), for each of a
/// batch of stored events. A route whose filter fails on an event gets a delivery stored dead
/// with the reason, so the failure is visible and replayable rather than a silent drop.
/// Filters are tenant code: each webhook's run off the async workers on the batch's events in a
/// few jobs (see [`filter_batch`]), the webhooks at once.
async fn route_events(snapshot: &Snapshot, events: Vec<UnroutedEvent>) -> Vec<RoutedEvent> {
    let mut routed: Vec<Vec<NewDelivery>> = vec![Vec::new(); events.len()];
    // Per webhook with filters to run: the events (by position in the batch) it evaluates.
    let mut to_filter: Vec<(Arc<CompiledWebhook>, Vec<Filtered>)> = Vec::new();
    for (position, stored) in events.iter().enumerate() {
        let event = match EventBody::parse(&stored.raw) {
            Ok(event) => Arc::new(event),
            Err(error) => {
                // Ingest parsed it before storing it; bytes that no longer parse route nowhere.
                tracing::error!(event_id = %stored.id, %error, "a stored event does not parse; not routed");
                continue;
            }
        };
        for webhook in subscribed(snapshot, &stored.instance, &event) {
            if !runs_filters(webhook, &event) {
                routed[position].extend(deliveries(webhook, &event, &stored.id));
                continue;
            }
            let filtered = Filtered {
                position,
                event: Arc::clone(&event),
                event_id: stored.id.clone(),
            };
            match to_filter
                .iter_mut()
                .find(|(known, _)| known.key == webhook.key)
            {
                Some((_, batch)) => batch.push(filtered),
                None => to_filter.push((Arc::clone(webhook), vec![filtered])),
            }
        }
    }
    let filtered = to_filter
        .into_iter()
        .map(|(webhook, batch)| filter_batch(webhook, batch));
    for (position, deliveries) in futures::future::join_all(filtered)
        .await
        .into_iter()
        .flatten()
    {
        routed[position].extend(deliveries);
    }
    events
        .into_iter()
        .zip(routed)
        .map(|(event, deliveries)| RoutedEvent { event, deliveries })
        .collect()
}

/// An event of a routing batch whose routing runs a webhook's filters.
struct Filtered {
    position: usize,
    event: Arc<EventBody>,
    event_id: String,
}

/// Runs `webhook`'s routes on `batch`, with their filters, off the async workers: in
/// [`tenant::SLOTS`] jobs at most, each taking its share of the events in turn (a hand-off per
/// job, not per event, while a webhook whose filters are slow still spreads over every slot
/// rather than holding the batch up in one). Each event is held to [`FILTER_TIME_LIMIT`],
/// counted from its own start: an event whose filters do not finish in time gets its filtered
/// deliveries stored dead with that reason, the others are unaffected.
async fn filter_batch(
    webhook: Arc<CompiledWebhook>,
    mut batch: Vec<Filtered>,
) -> Vec<(usize, Vec<NewDelivery>)> {
    let share = batch.len().div_ceil(tenant::SLOTS).max(1);
    let mut jobs = Vec::new();
    while !batch.is_empty() {
        let rest = batch.split_off(share.min(batch.len()));
        jobs.push(filter_in_turn(Arc::clone(&webhook), batch));
        batch = rest;
    }
    futures::future::join_all(jobs)
        .await
        .into_iter()
        .flatten()
        .collect()
}

async fn filter_in_turn(
    webhook: Arc<CompiledWebhook>,
    events: Vec<Filtered>,
) -> Vec<(usize, Vec<NewDelivery>)> {
    let events = Arc::new(events);
    let evaluating = Arc::clone(&webhook);
    let evaluated = tenant::run_each(
        tenant::Kind::Filter,
        FILTER_TIME_LIMIT,
        Arc::clone(&events),
        move |filtered| deliveries(&evaluating, &filtered.event, &filtered.event_id),
    )
    .await;
    events
        .iter()
        .zip(evaluated)
        .map(|(filtered, deliveries)| {
            let deliveries = deliveries.unwrap_or_else(|| {
                filters_timed_out(&webhook, &filtered.event, &filtered.event_id)
            });
            (filtered.position, deliveries)
        })
        .collect()
}

/// The deliveries of an event whose filters of `webhook` did not finish in time: those of its
/// filtered routes stored dead with the reason, the others live.
fn filters_timed_out(
    webhook: &CompiledWebhook,
    event: &EventBody,
    event_id: &str,
) -> Vec<NewDelivery> {
    tracing::warn!(webhook = %webhook.key, %event_id, "route filters exceeded their time limit");
    webhook
        .routes
        .iter()
        .filter(|route| route.listed(event))
        .map(|route| {
            let dead = route.has_filter().then(|| {
                format!(
                    "filter of route {} exceeded its time limit of {} ms",
                    route.name(),
                    FILTER_TIME_LIMIT.as_millis()
                )
            });
            delivery(webhook, route, event_id, dead)
        })
        .collect()
}

fn deliveries(webhook: &CompiledWebhook, event: &EventBody, event_id: &str) -> Vec<NewDelivery> {
    webhook
        .routes
        .iter()
        .filter_map(|route| {
            let dead_on_arrival = match route.matches(event) {
                Ok(true) => None,
                Ok(false) => return None,
                Err(error) => Some(format!("filter of route {} failed: {error}", route.name())),
            };
            Some(delivery(webhook, route, event_id, dead_on_arrival))
        })
        .collect()
}

fn delivery(
    webhook: &CompiledWebhook,
    route: &CompiledRoute,
    event_id: &str,
    dead_on_arrival: Option<String>,
) -> NewDelivery {
    NewDelivery {
        id: delivery_id(event_id, &webhook.key, route.name()),
        sink: SinkKey {
            webhook: webhook.key.clone(),
            sink: route.sink().to_owned(),
        },
        route: route.name().to_owned(),
        dead_on_arrival,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::{
        api::StrapiWebhookSpec,
        config::{InMemorySecrets, compile_webhook},
    };

    const INSTANCE: &str = "web/cms";

    /// A webhook of `web/cms` for `entry.update` with one HTTP sink and the routes in `routes`
    /// (inline YAML).
    fn webhook(name: &str, routes: &str) -> CompiledWebhook {
        let spec: StrapiWebhookSpec = serde_saphyr::from_str(&format!(
            "instanceRef: {{ name: cms }}
events: [entry.update]
sinks: [{{ name: crm, http: {{ url: 'https://crm.example.com/hook' }} }}]
routes: {routes}"
        ))
        .unwrap();
        compile_webhook("web", name, 1, &spec, &InMemorySecrets::new()).unwrap()
    }

    fn snapshot(webhooks: impl IntoIterator<Item = CompiledWebhook>) -> Snapshot {
        Snapshot::new(
            BTreeMap::from([(INSTANCE.to_owned(), vec!["secret".to_owned()])]),
            webhooks,
        )
    }

    fn event(name: &str, model: &str) -> EventBody {
        EventBody::parse(
            format!(r#"{{"event":"{name}","model":"{model}","entry":{{"id":1,"slug":"a"}}}}"#)
                .as_bytes(),
        )
        .unwrap()
    }

    #[test]
    fn ingest_routes_an_event_whose_matching_routes_have_no_filter() {
        let site = snapshot([
            webhook(
                "by-model",
                "[{ name: articles, sink: crm, match: { models: [article] } }]",
            ),
            webhook(
                "filtered-pages",
                "[{ name: pages, sink: crm, match: { models: [page] }, filter: \"entry.slug != ''\" }]",
            ),
        ]);
        let routed =
            route_without_tenant_code(&site, INSTANCE, &event("entry.update", "article"), "e1")
                .expect("no filter runs for an article");
        assert_eq!(routed.len(), 1);
        assert_eq!(routed[0].sink.webhook, "web/by-model");
        assert_eq!(routed[0].route, "articles");
        assert_eq!(routed[0].id, delivery_id("e1", "web/by-model", "articles"));
        // An event no webhook subscribes to is routed to nothing, without the router.
        let unsubscribed =
            route_without_tenant_code(&site, INSTANCE, &event("entry.create", "page"), "e2");
        assert_eq!(unsubscribed.map(|routed| routed.len()), Some(0));
    }

    #[test]
    fn an_event_a_filter_takes_or_one_before_the_configuration_loaded_is_left_to_the_router() {
        let filtered = snapshot([webhook(
            "filtered-pages",
            "[{ name: pages, sink: crm, match: { models: [page] }, filter: \"entry.slug != ''\" }]",
        )]);
        let page = event("entry.update", "page");
        assert!(route_without_tenant_code(&filtered, INSTANCE, &page, "e1").is_none());
        let loading = Snapshot {
            synced: false,
            ..snapshot([webhook("all", "[{ name: all, sink: crm }]")])
        };
        assert!(route_without_tenant_code(&loading, INSTANCE, &page, "e1").is_none());
    }

    fn stored(id: &str, raw: &str) -> UnroutedEvent {
        UnroutedEvent {
            id: id.to_owned(),
            instance: INSTANCE.to_owned(),
            event: "entry.update".to_owned(),
            received_at: 0,
            raw: raw.as_bytes().to_vec(),
            recovered: false,
        }
    }

    #[tokio::test]
    async fn a_batch_routes_each_event_through_filtered_and_unfiltered_webhooks() {
        let site = snapshot([
            webhook(
                "by-model",
                "[{ name: articles, sink: crm, match: { models: [article] } }]",
            ),
            webhook(
                "only-a",
                "[{ name: a, sink: crm, filter: \"entry.slug == 'a'\" }]",
            ),
            webhook(
                "by-count",
                "[{ name: counted, sink: crm, filter: \"entry.count > 1\" }]",
            ),
        ]);
        let article = |slug: &str| {
            format!(
                r#"{{"event":"entry.update","model":"article","entry":{{"id":1,"slug":"{slug}"}}}}"#
            )
        };
        // More events than a job takes, so the filters run in several jobs.
        let mut events: Vec<UnroutedEvent> = (0..10)
            .map(|n| {
                stored(
                    &format!("e{n}"),
                    &article(if n % 2 == 0 { "a" } else { "b" }),
                )
            })
            .collect();
        events.push(stored("broken", "not json"));
        let routed = route_events(&site, events).await;

        let ids: Vec<&str> = routed
            .iter()
            .map(|routed| routed.event.id.as_str())
            .collect();
        assert_eq!(
            ids,
            [
                "e0", "e1", "e2", "e3", "e4", "e5", "e6", "e7", "e8", "e9", "broken"
            ]
        );
        for (n, routed) in routed[..10].iter().enumerate() {
            let id = format!("e{n}");
            let mut live: Vec<&str> = routed
                .deliveries
                .iter()
                .filter(|delivery| delivery.dead_on_arrival.is_none())
                .map(|delivery| delivery.sink.webhook.as_str())
                .collect();
            live.sort_unstable();
            let expected: &[&str] = if n % 2 == 0 {
                &["web/by-model", "web/only-a"]
            } else {
                &["web/by-model"]
            };
            assert_eq!(live, expected, "{id}");
            // A filter that fails on the event (no `count`) is stored dead, not dropped.
            let dead: Vec<&NewDelivery> = routed
                .deliveries
                .iter()
                .filter(|delivery| delivery.dead_on_arrival.is_some())
                .collect();
            assert_eq!(dead.len(), 1, "{id}: {dead:?}");
            assert_eq!(dead[0].id, delivery_id(&id, "web/by-count", "counted"));
        }
        assert!(
            routed[10].deliveries.is_empty(),
            "an unparseable event routes nowhere"
        );
    }
}
