//! `Routed`: a `StrapiWebhook` is `Ready` only once every live receiver replica routes events with
//! its current `metadata.generation` (and with its instance's), so the next event after
//! `kubectl wait --for=condition=Ready` is routed with the new spec.
//!
//! The replicas are the receiver behind `--receiver-admin-url`, or, with
//! `--receiver-replicas=<namespace>/<service>`, every ready endpoint of that Service's
//! EndpointSlices (watched, not listed per reconcile). Each replica is asked
//! `GET /v1/routing`, which waits briefly on the receiver's side until it routes the asked
//! generations: one call per replica per change. Answers are reused while they still show the
//! webhook routed, so periodic reconciles of many webhooks cost a call per replica at most
//! every [`REPORT_TTL`].

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::{StreamExt, future};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::{
    Api, Client,
    runtime::{
        WatchStreamExt,
        reflector::{self, Store},
        watcher,
    },
};
use prometheus_client::metrics::{counter::Counter, family::Family};

use super::{
    conditions::Reported,
    metrics::ReceiverCallLabels,
    receiver_admin::{ReceiverAdmin, ReceiverError},
};
use crate::{
    admin_api::Routing,
    api::{StrapiInstance, StrapiWebhook},
    config::referenced_instance,
    key::ObjectKey,
};

/// How long a replica's answer is reused for webhooks it already routes.
pub const REPORT_TTL: Duration = Duration::from_secs(10);
/// How long a replica may hold `GET /v1/routing` waiting for the asked generations.
const WAIT_SECONDS: u64 = 3;
/// The EndpointSlice port that carries the admin API.
const ADMIN_PORT: &str = "admin";

/// A Service whose ready endpoints are the receiver replicas, as `namespace/name`.
pub type ServiceRef = ObjectKey;

/// The receiver replicas' endpoints, kept current by a watch that ends with this value.
pub struct ReceiverReplicas {
    service: ServiceRef,
    slices: Store<EndpointSlice>,
    task: tokio::task::JoinHandle<()>,
}

impl ReceiverReplicas {
    /// Starts watching the EndpointSlices of `service`.
    pub fn watch(client: Client, service: ServiceRef) -> Self {
        let (slices, writer) = reflector::store();
        let api = Api::<EndpointSlice>::namespaced(client, &service.namespace);
        let config = watcher::Config::default()
            .labels(&format!("kubernetes.io/service-name={}", service.name));
        let task = tokio::spawn(
            reflector::reflector(writer, watcher(api, config))
                .default_backoff()
                .touched_objects()
                .for_each(|event| {
                    if let Err(error) = event {
                        tracing::warn!(%error, "watching the receiver's EndpointSlices failed; retrying");
                    }
                    future::ready(())
                }),
        );
        ReceiverReplicas {
            service,
            slices,
            task,
        }
    }
}

impl Drop for ReceiverReplicas {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One receiver replica to ask.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replica {
    /// The pod's name where known, else its address.
    pub name: String,
    /// Base URL of its admin API.
    pub base: String,
}

/// The ready endpoints of `slices` on their `admin` port (or their only port), once each.
pub fn ready_replicas(slices: &[Arc<EndpointSlice>]) -> Vec<Replica> {
    let mut replicas: BTreeMap<String, Replica> = BTreeMap::new();
    for slice in slices {
        let ports = slice.ports.as_deref().unwrap_or_default();
        let port = ports
            .iter()
            .find(|port| port.name.as_deref() == Some(ADMIN_PORT))
            .or(match ports {
                [only] => Some(only),
                _ => None,
            })
            .and_then(|port| port.port);
        let Some(port) = port else { continue };
        for endpoint in &slice.endpoints {
            // The API leaves `ready` unset when it is unknown; consumers treat that as ready.
            let conditions = endpoint.conditions.as_ref();
            if conditions.and_then(|conditions| conditions.ready) == Some(false) {
                continue;
            }
            for address in &endpoint.addresses {
                let host = if address.contains(':') {
                    format!("[{address}]")
                } else {
                    address.clone()
                };
                let base = format!("http://{host}:{port}");
                let name = endpoint
                    .target_ref
                    .as_ref()
                    .and_then(|target| target.name.clone())
                    .unwrap_or_else(|| format!("{host}:{port}"));
                replicas.insert(base.clone(), Replica { name, base });
            }
        }
    }
    replicas.into_values().collect()
}

/// The generations a webhook needs routed: its own and its instance's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wanted {
    /// `namespace/name` of the webhook.
    pub webhook: String,
    /// Its `metadata.generation`.
    pub generation: i64,
    /// `namespace/name` of its instance.
    pub instance: String,
    /// The instance's `metadata.generation`.
    pub instance_generation: i64,
}

impl Wanted {
    /// What `webhook` on `instance` needs routed.
    pub fn of(webhook: &StrapiWebhook, instance: &StrapiInstance) -> Self {
        Wanted {
            webhook: ObjectKey::of(webhook).to_string(),
            generation: webhook.metadata.generation.unwrap_or_default(),
            instance: referenced_instance(webhook).to_string(),
            instance_generation: instance.metadata.generation.unwrap_or_default(),
        }
    }

    /// Why `routing` does not route this yet, or `None` when it does (pure).
    pub fn lag(&self, routing: &Routing) -> Option<String> {
        if !routing.synced {
            return Some("it has not loaded its configuration yet".to_owned());
        }
        match routing.webhooks.get(&self.webhook) {
            None => return Some("it does not route this webhook yet".to_owned()),
            Some(&routed) if routed < self.generation => {
                return Some(format!(
                    "it routes generation {routed}, not {} yet",
                    self.generation
                ));
            }
            Some(_) => {}
        }
        match routing.instances.get(&self.instance) {
            None => Some(format!(
                "it does not accept events of StrapiInstance {} yet",
                self.instance
            )),
            Some(&seen) if seen < self.instance_generation => Some(format!(
                "it has StrapiInstance {} at generation {seen}, not {} yet",
                self.instance, self.instance_generation
            )),
            Some(_) => None,
        }
    }
}

/// Answers of the replicas by base URL, with when they were fetched.
type Reports = Mutex<HashMap<String, (Instant, Arc<Routing>)>>;

/// Tracks whether the receiver replicas route each webhook's current generation: which replicas
/// there are, their recent answers, and how long each waiting webhook backs off.
pub struct RoutingTracker {
    receiver: ReceiverAdmin,
    replicas: Option<ReceiverReplicas>,
    calls: Family<ReceiverCallLabels, Counter>,
    reports: Reports,
    waits: Mutex<HashMap<String, u32>>,
}

impl RoutingTracker {
    /// A tracker that asks `receiver`, or every ready replica of `replicas` through
    /// `receiver`'s connections, counting its calls in `calls`.
    pub fn new(
        receiver: ReceiverAdmin,
        replicas: Option<ReceiverReplicas>,
        calls: Family<ReceiverCallLabels, Counter>,
    ) -> Self {
        RoutingTracker {
            receiver,
            replicas,
            calls,
            reports: Reports::default(),
            waits: Mutex::default(),
        }
    }

    /// The replicas to ask: every ready endpoint of the receiver Service, or the admin URL.
    fn replicas(&self) -> Result<Vec<Replica>, String> {
        match &self.replicas {
            None => Ok(vec![Replica {
                name: self.receiver.base().to_owned(),
                base: self.receiver.base().to_owned(),
            }]),
            Some(watched) => match ready_replicas(&watched.slices.state()).as_slice() {
                [] => Err(format!(
                    "no receiver replica is ready behind Service {}",
                    watched.service
                )),
                replicas => Ok(replicas.to_vec()),
            },
        }
    }

    /// What `replica` routes with: a recent answer that already routes `wanted`, or a fresh
    /// one that the replica gives once it routes `wanted` (or after a short wait).
    async fn report(
        &self,
        replica: &Replica,
        wanted: &Wanted,
    ) -> Result<Arc<Routing>, ReceiverError> {
        if let Some((fetched, routing)) = self
            .reports
            .lock()
            .expect("reports lock")
            .get(&replica.base)
            && fetched.elapsed() < REPORT_TTL
            && wanted.lag(routing).is_none()
        {
            return Ok(Arc::clone(routing));
        }
        let result = self
            .receiver
            .at(&replica.base)
            .routing_of(wanted, WAIT_SECONDS)
            .await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(error) => error.reason(),
        };
        self.calls
            .get_or_create(&ReceiverCallLabels {
                call: "routing",
                outcome,
            })
            .inc();
        let routing = Arc::new(result?);
        self.reports
            .lock()
            .expect("reports lock")
            .insert(replica.base.clone(), (Instant::now(), Arc::clone(&routing)));
        Ok(routing)
    }

    /// The `Routed` condition of `webhook`: true once every live replica routes its current
    /// generation and its instance's.
    pub async fn routed_condition(
        &self,
        webhook: &StrapiWebhook,
        instance: &StrapiInstance,
    ) -> Reported {
        let wanted = Wanted::of(webhook, instance);
        let replicas = match self.replicas() {
            Ok(replicas) => replicas,
            Err(message) => return Reported::no("Routed", "WaitingForReceiver", message),
        };
        let answers =
            future::join_all(replicas.iter().map(|replica| self.report(replica, &wanted))).await;
        for (replica, answer) in replicas.iter().zip(answers) {
            match answer {
                Err(error) => {
                    let message = format!(
                        "cannot ask receiver {} what it routes: {error}",
                        replica.name
                    );
                    return Reported::no("Routed", error.reason(), message);
                }
                Ok(routing) => {
                    if let Some(lag) = wanted.lag(&routing) {
                        let message = format!("waiting for receiver {}: {lag}", replica.name);
                        return Reported::no("Routed", "WaitingForReceiver", message);
                    }
                }
            }
        }
        let replicas = match replicas.len() {
            1 => "the receiver routes".to_owned(),
            count => format!("all {count} receiver replicas route"),
        };
        Reported::yes(
            "Routed",
            "Routed",
            format!(
                "{replicas} events with generation {} of this webhook and {} of StrapiInstance {}",
                wanted.generation, wanted.instance_generation, wanted.instance
            ),
        )
    }

    /// How long until `webhook` is checked again while a receiver has not caught up: short at
    /// first, backing off to at most [`MAX_ROUTING_RETRY`].
    pub fn retry(&self, webhook: &str) -> Duration {
        let mut waits = self.waits.lock().expect("routing waits lock");
        let count = waits.entry(webhook.to_owned()).or_default();
        *count += 1;
        routing_retry_delay(*count)
    }

    /// Forgets the backoff of `webhook` once it is routed.
    pub fn settled(&self, webhook: &str) {
        self.waits
            .lock()
            .expect("routing waits lock")
            .remove(webhook);
    }
}

/// The longest pause between two checks of a webhook that waits for a receiver.
pub const MAX_ROUTING_RETRY: Duration = Duration::from_secs(30);

/// 500 ms, 1 s, 2 s … capped at [`MAX_ROUTING_RETRY`]; each check already waited up to three
/// seconds on the receiver's side.
pub fn routing_retry_delay(waits: u32) -> Duration {
    (Duration::from_millis(250) * 2u32.saturating_pow(waits.min(10))).min(MAX_ROUTING_RETRY)
}

impl ReceiverAdmin {
    /// What this replica routes with, once it routes `wanted` or after `wait_seconds`.
    async fn routing_of(
        &self,
        wanted: &Wanted,
        wait_seconds: u64,
    ) -> Result<Routing, ReceiverError> {
        self.routing(&[
            ("webhook", wanted.webhook.clone()),
            ("generation", wanted.generation.to_string()),
            ("instance", wanted.instance.clone()),
            ("instanceGeneration", wanted.instance_generation.to_string()),
            ("timeoutSeconds", wait_seconds.to_string()),
        ])
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort};

    fn slice(port: i32, endpoints: &[(&str, Option<bool>)]) -> Arc<EndpointSlice> {
        Arc::new(EndpointSlice {
            address_type: "IPv4".into(),
            endpoints: endpoints
                .iter()
                .map(|(address, ready)| Endpoint {
                    addresses: vec![(*address).to_owned()],
                    conditions: Some(EndpointConditions {
                        ready: *ready,
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .collect(),
            ports: Some(vec![EndpointPort {
                name: Some("admin".into()),
                port: Some(port),
                ..Default::default()
            }]),
            ..Default::default()
        })
    }

    #[test]
    fn only_ready_endpoints_are_replicas_each_once() {
        let slices = [
            slice(9091, &[("10.0.0.1", Some(true)), ("10.0.0.2", Some(false))]),
            slice(9091, &[("10.0.0.1", None), ("fd00::3", None)]),
        ];
        let bases: Vec<String> = ready_replicas(&slices)
            .into_iter()
            .map(|replica| replica.base)
            .collect();
        assert_eq!(
            bases,
            ["http://10.0.0.1:9091", "http://[fd00::3]:9091"],
            "not-ready endpoints are left out, duplicates collapse"
        );
    }

    #[test]
    fn a_service_reference_needs_a_namespace_and_a_name() {
        assert_eq!(
            "strapi-system/receiver-admin".parse::<ServiceRef>(),
            Ok(ServiceRef::new("strapi-system", "receiver-admin"))
        );
        assert!("receiver-admin".parse::<ServiceRef>().is_err());
        assert!("a/b/c".parse::<ServiceRef>().is_err());
    }

    #[test]
    fn lag_names_what_the_replica_has_not_loaded() {
        let wanted = Wanted {
            webhook: "web/site".into(),
            generation: 3,
            instance: "cms/strapi".into(),
            instance_generation: 2,
        };
        let mut routing = Routing {
            synced: true,
            instances: BTreeMap::from([("cms/strapi".into(), 2)]),
            webhooks: BTreeMap::new(),
        };
        assert_eq!(
            wanted.lag(&routing).as_deref(),
            Some("it does not route this webhook yet")
        );
        routing.webhooks.insert("web/site".into(), 2);
        assert_eq!(
            wanted.lag(&routing).as_deref(),
            Some("it routes generation 2, not 3 yet")
        );
        routing.webhooks.insert("web/site".into(), 3);
        assert_eq!(wanted.lag(&routing), None);
        routing.instances.insert("cms/strapi".into(), 1);
        assert!(
            wanted
                .lag(&routing)
                .unwrap()
                .contains("generation 1, not 2")
        );
    }

    #[test]
    fn waiting_backs_off_from_half_a_second_to_thirty() {
        assert_eq!(routing_retry_delay(1), Duration::from_millis(500));
        assert_eq!(routing_retry_delay(2), Duration::from_secs(1));
        assert_eq!(routing_retry_delay(20), MAX_ROUTING_RETRY);
    }
}
