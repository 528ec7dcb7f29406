//! Reconciling a `StrapiWebhook`: dereference (its instance and whether it allows this
//! namespace, the Secrets it names, the instance's content types, the receiver's counters) →
//! validate (compile routes and sinks with the same code the receiver runs, under the instance's
//! egress policy) → routed (ask the receiver replicas, once valid and registered) → build (pure:
//! conditions, `Ready`, status) → status.
//!
//! There is nothing to clean up when a `StrapiWebhook` goes away: the instance controller watches
//! them and recomputes the union of events, so no finalizer is needed here.

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use k8s_openapi::jiff::Timestamp;
use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::controller::Action,
};
use serde_json::json;

use super::{
    Context, Error, FIELD_MANAGER,
    conditions::{self, Reported},
    events::Notice,
};
use crate::{
    admin_api::SinkCounters,
    api::{SinkStatus, StrapiInstance, StrapiWebhook, StrapiWebhookSpec, StrapiWebhookStatus},
    cluster::{FetchedSecrets, NamespaceLabels},
    config::{self, Reason, ValidationError, ValidationErrors},
    config::{instance_key, referenced_instance, secret_refs},
    key::ObjectKey,
    sinks::{EgressBase, EgressPolicy},
    strapi::ContentType,
};

/// How often status counters are refreshed from the receiver: bounded, never per event.
pub const STATUS_REFRESH: Duration = Duration::from_secs(60);

/// Entry point for the kube-runtime `Controller`.
pub async fn reconcile(webhook: Arc<StrapiWebhook>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.metrics
        .measure(
            "StrapiWebhook",
            Error::reason,
            reconcile_webhook(&webhook, &ctx),
        )
        .await
}

/// Models and uids the routes match that the Strapi does not have (pure).
pub fn unknown_models(spec: &StrapiWebhookSpec, content_types: &[ContentType]) -> Vec<String> {
    let models: BTreeSet<&str> = content_types
        .iter()
        .map(|ct| ct.singular_name.as_str())
        .collect();
    let uids: BTreeSet<&str> = content_types.iter().map(|ct| ct.uid.as_str()).collect();
    let mut unknown = Vec::new();
    for route in &spec.routes {
        let (name, matches) = (&route.name, &route.matches);
        unknown.extend(not_known(name, "model", matches.models.as_deref(), &models));
        unknown.extend(not_known(name, "uid", matches.uids.as_deref(), &uids));
    }
    unknown
}

/// `route <route>: <kind> "<name>"` for each of `names` that is not `known`.
fn not_known(
    route: &str,
    kind: &str,
    names: Option<&[String]>,
    known: &BTreeSet<&str>,
) -> Vec<String> {
    names
        .unwrap_or_default()
        .iter()
        .filter(|name| !known.contains(name.as_str()))
        .map(|name| format!("route {route}: {kind} {name:?}"))
        .collect()
}

/// The `RoutesValid` and `SinksResolved` conditions for a compile result (pure). Warnings leave
/// `RoutesValid` true, with their reason and message.
pub fn validation_conditions(
    errors: Option<&ValidationErrors>,
    warnings: &[ValidationError],
) -> [Reported; 2] {
    const SINK_REASONS: [Reason; 5] = [
        Reason::SinkUnresolved,
        Reason::SecretMissing,
        Reason::SinkInvalid,
        Reason::DeliveryInvalid,
        Reason::EgressRefused,
    ];
    let (sink_problems, route_problems): (Vec<&ValidationError>, Vec<&ValidationError>) = errors
        .map(|errors| {
            errors
                .iter()
                .partition(|error| SINK_REASONS.contains(&error.reason))
        })
        .unwrap_or_default();
    let routes = match (route_problems.is_empty(), warnings.first()) {
        (true, Some(first)) => Reported::yes(
            "RoutesValid",
            first.reason.as_str(),
            format!(
                "every filter and template compiles, but: {}",
                joined(warnings.iter())
            ),
        ),
        _ => problems_condition(
            "RoutesValid",
            &route_problems,
            "every filter and template compiles",
        ),
    };
    [
        routes,
        problems_condition(
            "SinksResolved",
            &sink_problems,
            "every sink and Secret resolves",
        ),
    ]
}

fn problems_condition(kind: &'static str, problems: &[&ValidationError], fine: &str) -> Reported {
    match problems.first() {
        None => Reported::yes(kind, kind, fine),
        Some(first) => Reported::no(
            kind,
            first.reason.as_str(),
            joined(problems.iter().copied()),
        ),
    }
}

fn joined<'a>(problems: impl Iterator<Item = &'a ValidationError>) -> String {
    problems
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// The `Registered` condition: the instance is registered and subscribes to every event this
/// webhook needs (pure).
pub fn registration_condition(webhook: &StrapiWebhook, instance: &StrapiInstance) -> Reported {
    let status = instance.status.clone().unwrap_or_default();
    if !conditions::is_true(&status.conditions, "Registered") {
        return Reported::no(
            "Registered",
            "InstanceNotRegistered",
            format!(
                "StrapiInstance {} is not registered in Strapi yet",
                instance_key(instance)
            ),
        );
    }
    let subscribed: BTreeSet<&str> = status.events.iter().map(String::as_str).collect();
    let missing: Vec<&str> = webhook
        .spec
        .events
        .iter()
        .map(|event| event.as_str())
        .filter(|event| !subscribed.contains(event))
        .collect();
    if webhook.spec.enabled && !missing.is_empty() {
        return Reported::no(
            "Registered",
            "EventsPending",
            format!("Strapi does not send {} yet", missing.join(", ")),
        );
    }
    Reported::yes(
        "Registered",
        "Registered",
        format!(
            "Strapi sends these events to {}",
            status.endpoint.unwrap_or_default()
        ),
    )
}

/// The sinks' URLs against the instance's `spec.egress` and the receiver's part of the policy,
/// as the receiver will hold them, so a refused sink is reported before any event is sent: the
/// URL itself, then the addresses its host name resolves to (the receiver checks them again on
/// every connection; a name that does not resolve yet is not an egress problem).
async fn check_egress(
    ctx: &Context,
    instance: &StrapiInstance,
    spec: &StrapiWebhookSpec,
    compiled: &mut config::CompiledWebhook,
) -> Result<(), ValidationErrors> {
    let rules = config::egress_rules(instance.spec.egress.as_ref()).map_err(|message| {
        ValidationErrors(vec![ValidationError {
            field: "spec.instanceRef".to_owned(),
            reason: Reason::EgressRefused,
            message: format!("StrapiInstance {}: {message}", instance_key(instance)),
        }])
    })?;
    let policy = EgressPolicy {
        base: EgressBase {
            allow_loopback: ctx.options.allow_loopback_sinks,
            ..EgressBase::default()
        },
        rules,
    };
    config::apply_egress(compiled, spec, &policy)?;
    let mut refused = Vec::new();
    for (index, sink) in spec.sinks.iter().enumerate() {
        let Some((config, _)) = compiled.sink(&sink.name) else {
            continue;
        };
        if let Some(why) = resolves_only_to_refused(config.url(), &policy).await {
            refused.push(config::egress_refused(index, sink, &why));
        }
    }
    if refused.is_empty() {
        Ok(())
    } else {
        Err(ValidationErrors(refused))
    }
}

// A lookup that hangs must not hold the reconcile up.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);

/// Why `url`'s host name resolves only to addresses the policy refuses; `None` when one is
/// allowed, the host is an IP literal (already checked), or the name does not resolve.
async fn resolves_only_to_refused(url: &url::Url, policy: &EgressPolicy) -> Option<String> {
    let Some(url::Host::Domain(host)) = url.host() else {
        return None;
    };
    let port = url.port_or_known_default().unwrap_or(0);
    let lookup = tokio::net::lookup_host((host, port));
    let addresses: Vec<_> = tokio::time::timeout(RESOLVE_TIMEOUT, lookup)
        .await
        .ok()?
        .ok()?
        .collect();
    let mut last = None;
    for address in addresses {
        match policy.check_address(address) {
            Ok(()) => return None,
            Err(why) => last = Some(why),
        }
    }
    last.map(|why| format!("{host} resolves only to refused addresses: {why}"))
}

/// The pipeline: dereference → validate → ask the receivers whether they route it → build
/// (pure) → status.
async fn reconcile_webhook(webhook: &StrapiWebhook, ctx: &Context) -> Result<Action, Error> {
    let input = dereference(webhook, ctx).await?;
    let validation = validate(ctx, webhook, &input).await;
    let routed = routed(ctx, webhook, &input, &validation).await;
    let desired = build(webhook, &input, &validation, routed, Timestamp::now());
    let next_check = next_check(ctx, webhook, &desired);
    write_status(ctx, webhook, &desired.status).await?;
    Ok(Action::requeue(next_check))
}

/// The instance a webhook refers to, as the dereference step found it.
pub enum InstanceRef {
    /// No StrapiInstance of that name exists.
    Missing(ObjectKey),
    /// It exists but does not allow StrapiWebhooks from the webhook's namespace.
    NotAllowed(Arc<StrapiInstance>),
    /// It exists and allows the webhook.
    Allowed(Arc<StrapiInstance>),
}

impl InstanceRef {
    /// The instance, when it exists.
    pub fn found(&self) -> Option<&StrapiInstance> {
        match self {
            InstanceRef::Missing(_) => None,
            InstanceRef::NotAllowed(instance) | InstanceRef::Allowed(instance) => Some(instance),
        }
    }
}

/// Everything a StrapiWebhook's status depends on besides the object itself, read by the
/// dereference step (the API server, the instance's Strapi, the receiver).
pub struct DereferencedWebhook {
    /// Its instance.
    pub instance: InstanceRef,
    /// The Secrets its sinks name.
    pub secrets: FetchedSecrets,
    /// The content types of the instance's Strapi, when the instance allows the webhook.
    pub content_types: Option<Result<Arc<Vec<ContentType>>, Error>>,
    /// The receiver's counters of its sinks; `None` when the receiver could not be asked.
    pub sinks: Option<Vec<SinkStatus>>,
}

/// The `RoutesValid` and `SinksResolved` conditions the validate step found.
pub type Validation = [Reported; 2];

/// The status the build step makes of a webhook and what was observed about it.
#[derive(Debug)]
pub struct DesiredWebhookStatus {
    /// The status to write.
    pub status: StrapiWebhookStatus,
    /// True while a receiver does not route the webhook's generation yet.
    pub waiting_for_receivers: bool,
}

/// Dereference: every read the status depends on.
pub async fn dereference(
    webhook: &StrapiWebhook,
    ctx: &Context,
) -> Result<DereferencedWebhook, Error> {
    let namespace = webhook
        .namespace()
        .ok_or(Error::MissingObjectKey("namespace"))?;
    let key = referenced_instance(webhook);
    let found = ctx
        .instances
        .state()
        .into_iter()
        .find(|instance| instance_key(instance) == key);
    let secrets = FetchedSecrets::fetch(&ctx.client, &namespace, secret_refs(&webhook.spec))
        .await
        .map_err(Error::kube("read Secret"))?;
    let instance = match found {
        None => InstanceRef::Missing(key),
        Some(instance) if !namespace_allowed(ctx, &instance, &namespace).await? => {
            InstanceRef::NotAllowed(instance)
        }
        Some(instance) => InstanceRef::Allowed(instance),
    };
    let content_types = match &instance {
        InstanceRef::Allowed(instance) => Some(ctx.strapi.content_types(instance).await),
        _ => None,
    };
    let sinks = match ctx.receiver_stats.get(&ctx.receiver).await {
        Ok(stats) => Some(
            stats
                .webhooks
                .get(&ObjectKey::of(webhook).to_string())
                .into_iter()
                .flatten()
                .map(sink_status)
                .collect(),
        ),
        Err(error) => {
            tracing::debug!(%error, "delivery counters unavailable");
            None
        }
    };
    Ok(DereferencedWebhook {
        instance,
        secrets,
        content_types,
        sinks,
    })
}

/// The conditions `Ready` depends on that need no receiver: validation and `Registered` (pure).
fn settled_conditions(
    webhook: &StrapiWebhook,
    instance: &InstanceRef,
    validation: &Validation,
) -> Vec<Reported> {
    let registered = match instance {
        InstanceRef::Missing(key) => {
            let error = Error::InstanceMissing {
                namespace: key.namespace.clone(),
                name: key.name.clone(),
            };
            Reported::no("Registered", error.reason(), error.to_string())
        }
        InstanceRef::NotAllowed(instance) => {
            let error = Error::NamespaceNotAllowed {
                instance: instance_key(instance).to_string(),
                namespace: webhook.namespace().unwrap_or_default(),
            };
            Reported::no("Registered", error.reason(), error.to_string())
        }
        InstanceRef::Allowed(instance) => registration_condition(webhook, instance),
    };
    let mut reported = Vec::from(validation.clone());
    reported.push(registered);
    reported
}

/// `Routed`, asked of the receivers only for a valid webhook its allowed instance registered:
/// the receivers keep the last valid generation of an invalid one, so it is not worth waiting.
async fn routed(
    ctx: &Context,
    webhook: &StrapiWebhook,
    input: &DereferencedWebhook,
    validation: &Validation,
) -> Option<Reported> {
    let InstanceRef::Allowed(instance) = &input.instance else {
        return None;
    };
    let settled = settled_conditions(webhook, &input.instance, validation);
    if !settled.iter().all(|condition| condition.status) {
        return None;
    }
    Some(ctx.routing.routed_condition(webhook, instance).await)
}

/// Build (pure): the conditions, `Ready` and the status from what the other steps found.
/// `ModelsKnown` is a warning, never part of `Ready`.
pub fn build(
    webhook: &StrapiWebhook,
    input: &DereferencedWebhook,
    validation: &Validation,
    routed: Option<Reported>,
    now: Timestamp,
) -> DesiredWebhookStatus {
    let mut reported = settled_conditions(webhook, &input.instance, validation);
    reported.extend(routed);
    let ready = conditions::ready(
        &reported,
        "routes compile, sinks resolve, Strapi sends the events and every receiver routes them \
         with this generation",
    );
    let waiting_for_receivers = reported
        .iter()
        .any(|condition| condition.kind == "Routed" && !condition.status);
    if let Some(content_types) = &input.content_types {
        reported.push(models_condition(&webhook.spec, content_types));
    }
    reported.push(ready);
    let previous = webhook.status.clone().unwrap_or_default();
    let endpoint = match &input.instance {
        InstanceRef::Allowed(instance) => instance
            .status
            .as_ref()
            .and_then(|status| status.endpoint.clone()),
        _ => None,
    };
    let status = StrapiWebhookStatus {
        conditions: conditions::merge(
            &previous.conditions,
            &reported,
            webhook.meta().generation,
            now,
        ),
        observed_generation: webhook.meta().generation,
        endpoint,
        // When the receiver cannot be asked, the last known counters stay.
        sinks: input.sinks.clone().unwrap_or(previous.sinks),
    };
    DesiredWebhookStatus {
        status,
        waiting_for_receivers,
    }
}

/// When to look again: soon while a receiver catches up (backing off), else at the next
/// counter refresh.
fn next_check(ctx: &Context, webhook: &StrapiWebhook, desired: &DesiredWebhookStatus) -> Duration {
    let key = ObjectKey::of(webhook).to_string();
    if desired.waiting_for_receivers {
        ctx.routing.retry(&key)
    } else {
        ctx.routing.settled(&key);
        STATUS_REFRESH
    }
}

/// Validate: compiles the spec as the receiver will (under the instance's egress policy when
/// the instance exists), publishes an Event for errors or warnings, and returns the
/// `RoutesValid` and `SinksResolved` conditions.
async fn validate(
    ctx: &Context,
    webhook: &StrapiWebhook,
    input: &DereferencedWebhook,
) -> Validation {
    let compiled = config::compile_webhook(
        &webhook.namespace().unwrap_or_default(),
        &webhook.name_any(),
        webhook.meta().generation.unwrap_or_default(),
        &webhook.spec,
        &input.secrets,
    );
    let compiled = match (compiled, input.instance.found()) {
        (Ok(mut compiled), Some(instance)) => {
            check_egress(ctx, instance, &webhook.spec, &mut compiled)
                .await
                .map(|()| compiled)
        }
        (compiled, _) => compiled,
    };
    let warnings = compiled
        .as_ref()
        .map_or(&[][..], |compiled| &compiled.warnings);
    let reported = validation_conditions(compiled.as_ref().err(), warnings);
    match &compiled {
        Err(errors) => {
            ctx.events
                .publish(webhook, Notice::InvalidSpec(errors.to_string()))
                .await;
        }
        Ok(compiled) if !compiled.warnings.is_empty() => {
            let message = joined(compiled.warnings.iter());
            ctx.events
                .publish(webhook, Notice::SpecWarning(message))
                .await;
        }
        Ok(_) => {}
    }
    reported
}

/// A sink's entry of `status.sinks`, from the receiver's counters.
fn sink_status(counters: &SinkCounters) -> SinkStatus {
    SinkStatus {
        name: counters.name.clone(),
        delivered: counters.delivered,
        failed: counters.failed,
        dead_lettered: counters.dead_lettered,
        pending: counters.pending,
        paused: counters.paused,
        last_success_time: counters.last_success_time.clone(),
        last_error: counters.last_error.clone(),
    }
}

/// Status: writes the built status by server-side apply.
async fn write_status(
    ctx: &Context,
    webhook: &StrapiWebhook,
    status: &StrapiWebhookStatus,
) -> Result<(), Error> {
    let patch = json!({
        "apiVersion": StrapiWebhook::api_version(&()),
        "kind": StrapiWebhook::kind(&()),
        "status": status,
    });
    let namespace = webhook.namespace().unwrap_or_default();
    Api::<StrapiWebhook>::namespaced(ctx.client.clone(), &namespace)
        .patch_status(
            &webhook.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map_err(Error::kube("write StrapiWebhook status"))?;
    Ok(())
}

async fn namespace_allowed(
    ctx: &Context,
    instance: &StrapiInstance,
    namespace: &str,
) -> Result<bool, Error> {
    NamespaceLabels::default()
        .allows(&ctx.client, instance, namespace)
        .await
        .map_err(Error::kube("read Namespace"))
}

/// `ModelsKnown`: a warning, never part of `Ready`, because Strapi may be briefly unreachable or
/// a content type may be deployed after the webhook (pure).
fn models_condition(
    spec: &StrapiWebhookSpec,
    content_types: &Result<Arc<Vec<ContentType>>, Error>,
) -> Reported {
    match content_types {
        Err(error) => Reported::no(
            "ModelsKnown",
            "StrapiUnavailable",
            format!("could not list Strapi's content types: {error}"),
        ),
        Ok(content_types) => match unknown_models(spec, content_types).as_slice() {
            [] => Reported::yes(
                "ModelsKnown",
                "ModelsKnown",
                "every model and uid the routes match exists in Strapi",
            ),
            unknown => Reported::no(
                "ModelsKnown",
                "UnknownModels",
                format!("Strapi has no {}", unknown.join(", ")),
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        config::InMemorySecrets,
        controller::fixtures::{self, REGISTERED_INSTANCE},
        strapi::ContentTypeKind,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

    fn webhook(yaml: &str) -> StrapiWebhook {
        serde_saphyr::from_str(yaml).unwrap()
    }

    /// The Secret examples/crm-sync.yaml refers to, in namespace `web`.
    fn crm_secrets() -> InMemorySecrets {
        let mut secrets = InMemorySecrets::new();
        secrets.insert("web", "crm-api", "token", "t").insert(
            "web",
            "crm-api",
            "signing-secret",
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        );
        secrets
    }

    #[test]
    fn the_receivers_counters_become_the_sink_status_field_for_field() {
        // As `GET /v1/stats` sends them; the same body a controller that read it as
        // `SinkStatus` understood, so controller and receiver can be upgraded one at a time.
        let wire = serde_json::json!({
            "name": "crm", "delivered": 7, "failed": 2, "deadLettered": 1, "pending": 3,
            "paused": true, "lastSuccessTime": "2026-11-29T10:00:00Z", "lastError": "HTTP 503"
        });
        let counters: SinkCounters = serde_json::from_value(wire.clone()).unwrap();
        let status = sink_status(&counters);
        assert_eq!(serde_json::to_value(&status).unwrap(), wire);
        assert_eq!(serde_json::to_value(&counters).unwrap(), wire);
    }

    #[tokio::test]
    async fn a_host_name_is_refused_when_every_address_it_resolves_to_is() {
        let url = url::Url::parse("http://localhost:3000/api/revalidate").unwrap();
        let why = resolves_only_to_refused(&url, &EgressPolicy::default())
            .await
            .expect("localhost resolves to loopback only");
        assert!(
            why.starts_with("localhost resolves only to refused addresses"),
            "{why}"
        );
        let local = EgressPolicy {
            base: EgressBase {
                allow_loopback: true,
                ..EgressBase::default()
            },
            ..EgressPolicy::default()
        };
        assert_eq!(resolves_only_to_refused(&url, &local).await, None);
        let unknown = url::Url::parse("http://no-such-host.invalid/").unwrap();
        assert_eq!(
            resolves_only_to_refused(&unknown, &EgressPolicy::default()).await,
            None,
            "a name that does not resolve is not refused here"
        );
    }

    fn content_type(uid: &str, singular: &str) -> ContentType {
        ContentType {
            uid: uid.into(),
            kind: ContentTypeKind::Collection,
            singular_name: singular.into(),
            plural_name: format!("{singular}s"),
            display_name: singular.into(),
            draft_and_publish: true,
            visible: true,
            localized: false,
        }
    }

    #[test]
    fn models_and_uids_are_checked_against_strapi() {
        let site = webhook(include_str!("../../examples/nextjs-revalidation.yaml"));
        let strapi = [
            content_type("api::article.article", "article"),
            content_type("api::page.page", "page"),
        ];
        let unknown = unknown_models(&site.spec, &strapi);
        assert!(
            unknown.contains(&r#"route categories: model "category""#.to_owned()),
            "{unknown:?}"
        );
        assert!(
            !unknown.iter().any(|problem| problem.contains("article")),
            "{unknown:?}"
        );
        let crm = webhook(include_str!("../../examples/crm-sync.yaml"));
        let route = &crm.spec.routes[0].name;
        assert_eq!(
            unknown_models(&crm.spec, &strapi),
            [format!(r#"route {route}: uid "api::lead.lead""#)]
        );
        let strapi = [content_type("api::lead.lead", "lead")];
        assert_eq!(unknown_models(&crm.spec, &strapi), Vec::<String>::new());
    }

    #[test]
    fn a_missing_secret_fails_sinks_resolved_but_not_routes_valid() {
        let crm = webhook(include_str!("../../examples/crm-sync.yaml"));
        let errors =
            config::compile_webhook("web", "crm-sync", 1, &crm.spec, &InMemorySecrets::new())
                .unwrap_err();
        let [routes, sinks] = validation_conditions(Some(&errors), &[]);
        assert!(routes.status, "{routes:?}");
        assert!(!sinks.status);
        assert_eq!(sinks.reason, "SecretMissing");
        assert!(sinks.message.contains("crm-api"), "{}", sinks.message);
    }

    #[test]
    fn a_warning_keeps_routes_valid_true_and_says_why() {
        let mut site = webhook(include_str!("../../examples/nextjs-revalidation.yaml"));
        let mut secrets = InMemorySecrets::new();
        secrets.insert("web", "nextjs-revalidate", "secret", "s");
        let compiled = config::compile_webhook("web", "site", 1, &site.spec, &secrets).unwrap();
        assert!(compiled.warnings.is_empty(), "{:?}", compiled.warnings);
        let [routes, _] = validation_conditions(None, &compiled.warnings);
        assert_eq!((routes.status, routes.reason), (true, "RoutesValid"));

        site.spec.routes[0].nextjs.as_mut().unwrap().paths[1].kind =
            Some(crate::api::PathKind::Page);
        let compiled = config::compile_webhook("web", "site", 1, &site.spec, &secrets).unwrap();
        let [routes, sinks] = validation_conditions(None, &compiled.warnings);
        assert_eq!((routes.status, routes.reason), (true, "PathTypeIgnored"));
        assert!(
            routes
                .message
                .contains("spec.routes[0].nextjs.paths[1].type"),
            "{}",
            routes.message
        );
        assert!(sinks.status);
    }

    #[test]
    fn a_filter_that_does_not_compile_fails_routes_valid_with_its_position() {
        let mut crm = webhook(include_str!("../../examples/crm-sync.yaml"));
        crm.spec.routes[0].filter = Some("event == ".into());
        let secrets = crm_secrets();
        let errors =
            config::compile_webhook("web", "crm-sync", 1, &crm.spec, &secrets).unwrap_err();
        let [routes, sinks] = validation_conditions(Some(&errors), &[]);
        assert!(!routes.status);
        assert!(
            routes.message.contains("spec.routes[0].filter"),
            "{}",
            routes.message
        );
        assert!(sinks.status);
    }

    #[test]
    fn filters_and_templates_over_the_static_budget_fail_routes_valid_with_the_field() {
        let list = format!("[{}]", vec!["1"; 100].join(", "));
        let cel_bomb = format!(
            "{list}.all(event, {list}.all(model, {list}.all(uid, {list}.all(media, event + model + uid + media >= 0))))"
        );
        let template_bomb = r#"{{ "a"*100000000 ~ "b"*100000000 ~ "c"*100000000 }}"#;
        let secrets = crm_secrets();
        for (field, expected) in [
            ("spec.routes[0].filter", "budget"),
            ("spec.routes[0].http.body", "uses `*`"),
        ] {
            let mut crm = webhook(include_str!("../../examples/crm-sync.yaml"));
            if field.ends_with("filter") {
                crm.spec.routes[0].filter = Some(cel_bomb.clone());
            } else if let Some(http) = crm.spec.routes[0].http.as_mut() {
                http.body = Some(template_bomb.to_owned());
            }
            let errors =
                config::compile_webhook("web", "crm-sync", 1, &crm.spec, &secrets).unwrap_err();
            let [routes, _] = validation_conditions(Some(&errors), &[]);
            assert!(!routes.status);
            assert!(
                routes.message.contains(field) && routes.message.contains(expected),
                "{}",
                routes.message
            );
        }
    }

    #[test]
    fn registered_needs_every_event_in_the_instance_registration() {
        let site = webhook(include_str!(
            "../../tests/fixtures/controller/webhook-articles.yaml"
        ));
        let mut instance: StrapiInstance =
            serde_saphyr::from_str(include_str!("../../examples/strapi-instance.yaml")).unwrap();
        assert_eq!(
            registration_condition(&site, &instance).reason,
            "InstanceNotRegistered"
        );
        let registered = conditions::merge(
            &[],
            &[Reported::yes("Registered", "Registered", "")],
            Some(1),
            Timestamp::now(),
        );
        instance.status = Some(crate::api::StrapiInstanceStatus {
            conditions: registered,
            events: vec!["entry.publish".into()],
            ..Default::default()
        });
        let pending = registration_condition(&site, &instance);
        assert_eq!((pending.status, pending.reason), (false, "EventsPending"));
        assert!(pending.message.contains("entry.update"));
        instance
            .status
            .as_mut()
            .unwrap()
            .events
            .push("entry.update".into());
        assert!(registration_condition(&site, &instance).status);
    }

    // The pure build step, on inline YAML: the dereferenced input is made by hand.

    const WEBHOOK: &str = r#"
apiVersion: webhooks.strapi-operator.dev/v1alpha1
kind: StrapiWebhook
metadata: { name: articles, namespace: web, generation: 4 }
spec:
  instanceRef: { name: cms }
  events: [entry.publish, entry.update]
  sinks:
    - name: website
      nextjs: { url: "http://127.0.0.1:3000/api/revalidate" }
  routes:
    - name: articles
      sink: website
      match: { models: [article] }
"#;

    fn valid() -> Validation {
        validation_conditions(None, &[])
    }

    fn dereferenced(instance: InstanceRef) -> DereferencedWebhook {
        let content_types = matches!(instance, InstanceRef::Allowed(_)).then(|| {
            Ok(Arc::new(vec![content_type(
                "api::article.article",
                "article",
            )]))
        });
        DereferencedWebhook {
            instance,
            secrets: FetchedSecrets::default(),
            content_types,
            sinks: None,
        }
    }

    /// Dereferenced with the registered instance, which allows the webhook.
    fn allowed() -> DereferencedWebhook {
        let instance: StrapiInstance = serde_saphyr::from_str(REGISTERED_INSTANCE).unwrap();
        dereferenced(InstanceRef::Allowed(Arc::new(instance)))
    }

    fn condition<'a>(desired: &'a DesiredWebhookStatus, kind: &str) -> &'a Condition {
        fixtures::condition(&desired.status.conditions, kind)
    }

    fn counters(delivered: i64) -> Vec<SinkStatus> {
        vec![SinkStatus {
            name: "website".into(),
            delivered,
            ..SinkStatus::default()
        }]
    }

    #[test]
    fn a_webhook_whose_instance_is_missing_is_not_registered_nor_ready() {
        let site = webhook(WEBHOOK);
        let input = dereferenced(InstanceRef::Missing(ObjectKey::new("web", "cms")));
        let desired = build(&site, &input, &valid(), None, Timestamp::now());
        let registered = condition(&desired, "Registered");
        assert_eq!(
            (registered.status.as_str(), registered.reason.as_str()),
            ("False", "InstanceMissing")
        );
        assert!(
            registered.message.contains("web/cms"),
            "{}",
            registered.message
        );
        let ready = condition(&desired, "Ready");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "InstanceMissing")
        );
        assert!(!desired.waiting_for_receivers);
        assert_eq!(desired.status.endpoint, None);
        assert!(
            desired
                .status
                .conditions
                .iter()
                .all(|condition| condition.type_ != "ModelsKnown" && condition.type_ != "Routed")
        );
    }

    #[test]
    fn a_webhook_whose_instance_is_not_registered_waits_for_it() {
        let site = webhook(WEBHOOK);
        let mut instance: StrapiInstance = serde_saphyr::from_str(REGISTERED_INSTANCE).unwrap();
        instance.status = None;
        let input = dereferenced(InstanceRef::Allowed(Arc::new(instance)));
        let desired = build(&site, &input, &valid(), None, Timestamp::now());
        let registered = condition(&desired, "Registered");
        assert_eq!(
            (registered.status.as_str(), registered.reason.as_str()),
            ("False", "InstanceNotRegistered")
        );
        let ready = condition(&desired, "Ready");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "InstanceNotRegistered")
        );
        assert_eq!(condition(&desired, "ModelsKnown").status, "True");
    }

    #[test]
    fn a_namespace_the_instance_does_not_allow_is_reported_on_registered_and_ready() {
        let site = webhook(WEBHOOK);
        let instance: StrapiInstance = serde_saphyr::from_str(REGISTERED_INSTANCE).unwrap();
        let input = dereferenced(InstanceRef::NotAllowed(Arc::new(instance)));
        let desired = build(&site, &input, &valid(), None, Timestamp::now());
        assert_eq!(
            condition(&desired, "Registered").reason,
            "NamespaceNotAllowed"
        );
        assert_eq!(condition(&desired, "Ready").reason, "NamespaceNotAllowed");
    }

    #[test]
    fn a_valid_registered_and_routed_webhook_is_ready_for_its_generation() {
        let site = webhook(WEBHOOK);
        let mut input = allowed();
        input.sinks = Some(counters(3));
        let routed = Reported::yes("Routed", "Routed", "the receiver routes generation 4");
        let desired = build(&site, &input, &valid(), Some(routed), Timestamp::now());
        let ready = condition(&desired, "Ready");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("True", "Ready")
        );
        assert_eq!(ready.observed_generation, Some(4));
        assert_eq!(desired.status.observed_generation, Some(4));
        assert!(
            desired
                .status
                .conditions
                .iter()
                .all(|condition| condition.status == "True"),
            "{:?}",
            desired.status.conditions
        );
        assert_eq!(
            desired.status.endpoint.as_deref(),
            Some("http://receiver:8080/v1/strapi/web/cms")
        );
        assert_eq!(desired.status.sinks[0].delivered, 3);
        assert!(!desired.waiting_for_receivers);
    }

    #[test]
    fn a_receiver_that_lags_keeps_ready_false_and_the_webhook_waiting() {
        let site = webhook(WEBHOOK);
        let input = allowed();
        let routed = Reported::no("Routed", "WaitingForReceiver", "it routes generation 3");
        let desired = build(&site, &input, &valid(), Some(routed), Timestamp::now());
        assert_eq!(condition(&desired, "Ready").reason, "WaitingForReceiver");
        assert!(desired.waiting_for_receivers);
    }

    #[test]
    fn unknown_models_warn_without_failing_ready_and_old_counters_stay() {
        let mut site = webhook(WEBHOOK);
        site.status = Some(StrapiWebhookStatus {
            sinks: counters(9),
            ..StrapiWebhookStatus::default()
        });
        let mut input = allowed();
        input.content_types = Some(Ok(Arc::new(vec![content_type("api::page.page", "page")])));
        let routed = Reported::yes("Routed", "Routed", "routed");
        let desired = build(&site, &input, &valid(), Some(routed), Timestamp::now());
        let models = condition(&desired, "ModelsKnown");
        assert_eq!(
            (models.status.as_str(), models.reason.as_str()),
            ("False", "UnknownModels")
        );
        assert_eq!(condition(&desired, "Ready").status, "True");
        assert_eq!(
            desired.status.sinks[0].delivered, 9,
            "the receiver was not asked"
        );
    }
}
