//! Reconciling a `StrapiInstance`: dereference (shared secret, the webhooks that use the
//! instance, credentials) → build (the desired registration, pure) → apply (Strapi admin API:
//! ensure, collect garbage, verify with Strapi's trigger, roll Strapi if asked, gap repair) →
//! status (built purely from the apply outcome).
//!
//! `reconcile` makes `finalizer()` its only top-level call: apply and cleanup are idempotent, and
//! cleanup removes the registration from Strapi before Kubernetes forgets the instance.

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use k8s_openapi::{
    api::apps::v1::Deployment, apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp,
};
use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{
        controller::Action,
        finalizer::{Event as FinalizerEvent, finalizer},
    },
};
use serde_json::json;

use super::{
    Context, Error, FIELD_MANAGER,
    conditions::{self, Reported},
    events::Notice,
    receiver_admin::ReceiverError,
    secrets::{self, SharedSecret},
};
use crate::{
    api::{RepairStatus, StrapiInstance, StrapiInstanceStatus, StrapiWebhook},
    cluster::NamespaceLabels,
    config::{instance_key, referenced_instance, subscribed_events},
    registration::{self, Applied, Change, Desired, VerifyError},
    strapi::{Credentials, StrapiClient, StrapiError},
};

/// Finalizer that removes the registration from Strapi before the instance goes away.
pub const FINALIZER: &str = "webhooks.strapi-operator.dev/registration";
/// How soon an instance that is not ready is reconciled again.
const NOT_READY_RETRY: Duration = Duration::from_secs(30);
/// Annotation set on the Strapi Deployment's pod template to roll it.
pub const RESTARTED_AT_ANNOTATION: &str = "webhooks.strapi-operator.dev/restartedAt";

/// Entry point for the kube-runtime `Controller`.
pub async fn reconcile(instance: Arc<StrapiInstance>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = instance
        .namespace()
        .ok_or(Error::MissingObjectKey("namespace"))?;
    let api: Api<StrapiInstance> = Api::namespaced(ctx.client.clone(), &namespace);
    finalizer(&api, FINALIZER, instance, |event| async {
        match event {
            FinalizerEvent::Apply(instance) => converge(&instance, &ctx).await,
            FinalizerEvent::Cleanup(instance) => cleanup(&instance, &ctx).await,
        }
    })
    .await
    .map_err(|error| Error::Finalizer(Box::new(error)))
}

/// The pipeline of an instance that exists: dereference → build (pure) → apply → status
/// (built purely from the apply outcome, written by server-side apply).
async fn converge(instance: &StrapiInstance, ctx: &Context) -> Result<Action, Error> {
    let input = dereference(instance, ctx).await?;
    let desired = build(instance, &input, &ctx.options.secret_header);
    let outcome = apply(ctx, instance, &input, &desired).await?;
    let retry_after = outcome.retry_after;
    let status = build_status(instance, &input, desired, outcome, Timestamp::now());
    let ready = conditions::is_true(&status.conditions, "Ready");
    patch_status(ctx, instance, status).await?;
    // Not ready (Strapi down, receiver not verified): look again soon rather than at the next resync.
    let resync: Duration = instance.spec.resync_interval.into();
    let resync = ctx
        .repair
        .next_check(instance)
        .map_or(resync, |due| resync.min(due));
    // Rate-limited by Strapi's login limit: every attempt before its window ends would count
    // against it again, so wait exactly as long as Strapi said.
    Ok(Action::requeue(match (ready, retry_after) {
        (true, _) => resync,
        (false, Some(wait)) => wait,
        (false, None) => resync.min(NOT_READY_RETRY),
    }))
}

/// Everything an instance's registration and status depend on, read by the dereference step.
pub struct DereferencedInstance {
    /// The base URL at which Strapi reaches the receiver for this instance.
    pub receiver_base: String,
    /// The shared secret Strapi sends (created or rotated here when due).
    pub shared: SharedSecret,
    /// The webhooks that refer to the instance from namespaces it allows.
    pub webhooks: Vec<Arc<StrapiWebhook>>,
    /// The admin credentials, or why they cannot be read.
    pub credentials: Result<Credentials, Error>,
}

/// Dereference: the shared secret (ensured: it must exist before Strapi can send it), the
/// webhooks that use the instance and the admin credentials.
pub async fn dereference(
    instance: &StrapiInstance,
    ctx: &Context,
) -> Result<DereferencedInstance, Error> {
    let shared =
        secrets::ensure_shared_secret(&ctx.client, instance, ctx.options.secret_grace).await?;
    Ok(DereferencedInstance {
        receiver_base: receiver_base(ctx, instance),
        shared,
        webhooks: allowed_webhooks(ctx, instance).await?,
        credentials: ctx.strapi.credentials(instance).await,
    })
}

/// Build (pure): the registration the instance should have in Strapi, sending the union of
/// the events its enabled webhooks subscribe to.
pub fn build(
    instance: &StrapiInstance,
    input: &DereferencedInstance,
    secret_header: &str,
) -> Desired {
    let key = instance_key(instance);
    Desired {
        instance: key.to_string(),
        endpoint: registration::endpoint(&input.receiver_base, &key),
        secret: (secret_header.to_owned(), input.shared.current.clone()),
        events: subscribed_events(&key, input.webhooks.iter().map(Arc::as_ref)),
    }
}

/// The base URL at which Strapi reaches the receiver for this instance.
fn receiver_base(ctx: &Context, instance: &StrapiInstance) -> String {
    instance
        .spec
        .receiver_url
        .clone()
        .unwrap_or_else(|| ctx.options.receiver_url.clone())
}

/// The enabled webhooks that refer to `instance` and that it allows.
async fn allowed_webhooks(
    ctx: &Context,
    instance: &StrapiInstance,
) -> Result<Vec<Arc<StrapiWebhook>>, Error> {
    let key = instance_key(instance);
    let mut allowed = Vec::new();
    let mut labels = NamespaceLabels::default();
    for webhook in ctx.webhooks.state() {
        if referenced_instance(&webhook) != key {
            continue;
        }
        let namespace = webhook.namespace().unwrap_or_default();
        if labels
            .allows(&ctx.client, instance, &namespace)
            .await
            .map_err(Error::kube("read Namespace"))?
        {
            allowed.push(webhook);
        }
    }
    Ok(allowed)
}

/// What the apply step found, for the status and for Events.
#[derive(Debug)]
pub struct Outcome {
    /// The conditions it observed (all but `Ready`).
    pub reported: Vec<Reported>,
    /// The id of the registration in Strapi.
    pub registration_id: Option<String>,
    /// When Strapi's trigger reached the receiver, if verified now.
    pub verified_at: Option<Timestamp>,
    /// When the Strapi Deployment was rolled, if now.
    pub restarted_at: Option<Timestamp>,
    /// The gap repair status.
    pub repair: Option<RepairStatus>,
    /// Strapi rate-limited the login: when to look again, instead of the not-ready retry.
    pub retry_after: Option<Duration>,
}

impl Outcome {
    /// Nothing was applied: `reported` says why; the previous registration and repair stay.
    fn unapplied(
        reported: Vec<Reported>,
        previous: &StrapiInstanceStatus,
        retry_after: Option<Duration>,
    ) -> Self {
        Outcome {
            reported,
            registration_id: previous.registration_id.clone(),
            verified_at: None,
            restarted_at: None,
            repair: previous.repair.clone(),
            retry_after,
        }
    }
}

/// Apply: registers in Strapi, collects garbage, verifies, restarts and runs gap repair when
/// due; without credentials, reports Strapi unreachable.
async fn apply(
    ctx: &Context,
    instance: &StrapiInstance,
    input: &DereferencedInstance,
    desired: &Desired,
) -> Result<Outcome, Error> {
    let previous = instance.status.clone().unwrap_or_default();
    let credentials = match &input.credentials {
        Ok(credentials) => credentials.clone(),
        Err(error) => {
            let reported = vec![Reported::no("Reachable", error.reason(), error.to_string())];
            return Ok(Outcome::unapplied(reported, &previous, None));
        }
    };
    let client = ctx.strapi.client(instance, credentials)?;
    let mut outcome = register(ctx, instance, &client, input, desired, &previous).await?;
    outcome.repair =
        super::repair::repair(ctx, instance, &client, &input.webhooks, &desired.events).await;
    Ok(outcome)
}

/// Status (pure): the conditions with `Ready`, and what the registration and the apply step
/// found; times not observed now stay as they were.
pub fn build_status(
    instance: &StrapiInstance,
    input: &DereferencedInstance,
    desired: Desired,
    outcome: Outcome,
    now: Timestamp,
) -> StrapiInstanceStatus {
    let previous = instance.status.clone().unwrap_or_default();
    let mut reported = outcome.reported;
    let ready = conditions::ready(&reported, "registered in Strapi and verified end to end");
    reported.push(ready);
    StrapiInstanceStatus {
        conditions: conditions::merge(
            &previous.conditions,
            &reported,
            instance.meta().generation,
            now,
        ),
        observed_generation: instance.meta().generation,
        registration_id: outcome.registration_id,
        endpoint: Some(desired.endpoint),
        events: desired.events.into_iter().collect(),
        webhooks: Some(i32::try_from(input.webhooks.len()).unwrap_or(i32::MAX)),
        secret_name: Some(input.shared.name.clone()),
        last_verified_time: outcome
            .verified_at
            .map(Time)
            .or(previous.last_verified_time),
        last_restart_time: outcome
            .restarted_at
            .map(Time)
            .or(previous.last_restart_time),
        repair: outcome.repair,
    }
}

/// Registers, repairs, collects garbage, verifies and restarts; reports what it saw.
async fn register(
    ctx: &Context,
    instance: &StrapiInstance,
    client: &StrapiClient,
    input: &DereferencedInstance,
    desired: &Desired,
    previous: &StrapiInstanceStatus,
) -> Result<Outcome, Error> {
    let secret_changed = input.shared.changed;
    let mut reported = Vec::new();
    let applied = match ctx
        .strapi
        .observe("ensure registration", registration::ensure(client, desired))
        .await
    {
        Ok(applied) => applied,
        Err(error) => {
            reported.extend(registration_failed(&error));
            ctx.events
                .publish(
                    instance,
                    Notice::RegistrationFailed(explain_rejection(&error)),
                )
                .await;
            let retry_after = match &error {
                StrapiError::RateLimited { retry_after, .. } => Some(*retry_after),
                _ => None,
            };
            return Ok(Outcome::unapplied(reported, previous, retry_after));
        }
    };
    reported.push(Reported::yes(
        "Reachable",
        "Reachable",
        "the admin API answered",
    ));
    reported.push(Reported::yes(
        "Registered",
        "Registered",
        format!(
            "webhook {} sends {} event kinds to the receiver",
            applied.id,
            desired.events.len()
        ),
    ));
    announce_change(ctx, instance, &applied, desired, previous, secret_changed).await;
    collect_garbage(ctx, instance, client, desired, &input.receiver_base).await;

    // Verify whenever the registration changed or was not verified yet.
    let needs_verification = applied.change != Change::Unchanged
        || !conditions::is_true(&previous.conditions, "Verified")
        || secret_changed;
    let (verified, verified_at) = if needs_verification {
        verify(ctx, instance, client, &applied.id).await
    } else {
        (
            Reported::yes(
                "Verified",
                "Verified",
                "Strapi reached the receiver with the shared secret",
            ),
            None,
        )
    };
    reported.push(verified);

    let restarted_at = match (&instance.spec.restart_on_change, applied.change) {
        (Some(target), Change::Created | Change::Updated) => {
            Some(restart(ctx, instance, &target.deployment).await?)
        }
        _ => None,
    };
    Ok(Outcome {
        reported,
        registration_id: Some(applied.id),
        verified_at,
        restarted_at,
        repair: previous.repair.clone(),
        retry_after: None,
    })
}

/// `Reachable` and, when Strapi answered, `Registered` after `ensure` failed with `error`.
fn registration_failed(error: &StrapiError) -> Vec<Reported> {
    match error {
        StrapiError::RateLimited { retry_after, .. } => vec![Reported::no(
            "Reachable",
            super::error::strapi_reason(error),
            rate_limited_message(error, *retry_after, Timestamp::now()),
        )],
        StrapiError::Unreachable { .. }
        | StrapiError::Unauthorized { .. }
        | StrapiError::Forbidden { .. } => vec![Reported::no(
            "Reachable",
            super::error::strapi_reason(error),
            error.to_string(),
        )],
        _ => vec![
            Reported::yes("Reachable", "Reachable", "the admin API answered"),
            Reported::no(
                "Registered",
                super::error::strapi_reason(error),
                explain_rejection(error),
            ),
        ],
    }
}

/// The condition message for a login Strapi rate-limited: when the controller tries again, and
/// how to not depend on logins at all.
fn rate_limited_message(error: &StrapiError, retry_after: Duration, now: Timestamp) -> String {
    let retry_at = k8s_openapi::jiff::SignedDuration::try_from(retry_after)
        .ok()
        .and_then(|wait| now.checked_add(wait).ok())
        .map_or_else(
            || "later".to_owned(),
            |at| {
                format!(
                    "at {}",
                    at.round(k8s_openapi::jiff::Unit::Second).unwrap_or(at)
                )
            },
        );
    format!(
        "{error}; the controller tries again {retry_at}, not before (each attempt counts against \
         Strapi's limit of 5 logins per 5 minutes per account and address). An admin API token \
         (spec.auth.apiToken) needs no login"
    )
}

// Strapi's message for its production-only URL check, and what to do about it.
const PRIVATE_URL_REJECTION: &str = "isn't reachable over the public internet";

/// Strapi's answer, with a hint where Strapi's own message does not say what to change.
fn explain_rejection(error: &StrapiError) -> String {
    match error {
        StrapiError::Rejected { message, .. } if message.contains(PRIVATE_URL_REJECTION) => {
            format!(
                "{error}. With NODE_ENV=production Strapi refuses webhook URLs that resolve to private \
             addresses, such as in-cluster Services: set spec.receiverUrl (or the operator's \
             --receiver-url) to a public address of the receiver's ingest, e.g. an Ingress"
            )
        }
        _ => error.to_string(),
    }
}

async fn announce_change(
    ctx: &Context,
    instance: &StrapiInstance,
    applied: &Applied,
    desired: &Desired,
    previous: &StrapiInstanceStatus,
    secret_changed: bool,
) {
    let previous_events: BTreeSet<String> = previous.events.iter().cloned().collect();
    let inputs_changed = previous_events != desired.events
        || previous.endpoint.as_deref() != Some(desired.endpoint.as_str())
        || secret_changed;
    let notice = match applied.change {
        Change::Unchanged => return,
        Change::Created if previous.registration_id.is_none() => {
            Notice::Registered(applied.id.clone())
        }
        // It existed, and nothing we manage changed: someone edited or deleted it in Strapi.
        Change::Created | Change::Updated if !inputs_changed => {
            ctx.metrics.drift_repairs.inc();
            Notice::DriftRepaired(applied.id.clone())
        }
        Change::Created | Change::Updated => Notice::RegistrationUpdated(applied.id.clone()),
    };
    ctx.events.publish(instance, notice).await;
}

async fn collect_garbage(
    ctx: &Context,
    instance: &StrapiInstance,
    client: &StrapiClient,
    desired: &Desired,
    receiver_base: &str,
) {
    let exists = |key: &str| {
        ctx.instances
            .state()
            .iter()
            .any(|known| instance_key(known) == key)
    };
    match ctx
        .strapi
        .observe(
            "collect garbage",
            registration::collect_garbage(client, receiver_base, exists),
        )
        .await
    {
        Ok(removed) => {
            for owner in removed {
                ctx.events
                    .publish(instance, Notice::GarbageCollected(owner))
                    .await;
            }
        }
        Err(error) => {
            tracing::warn!(instance = %desired.instance, %error, "collecting orphaned registrations failed")
        }
    }
}

/// Asks Strapi to trigger the webhook and waits for the receiver to report the handshake.
/// The condition's message says which hop failed.
async fn verify(
    ctx: &Context,
    instance: &StrapiInstance,
    client: &StrapiClient,
    id: &str,
) -> (Reported, Option<Timestamp>) {
    match trigger_and_wait(ctx, instance, client, id).await {
        Ok(()) => (
            Reported::yes(
                "Verified",
                "Verified",
                "Strapi reached the receiver with the shared secret",
            ),
            Some(Timestamp::now()),
        ),
        Err((reason, message)) => {
            if matches!(reason, "ReceiverRejected" | "HandshakeMissing") {
                ctx.events
                    .publish(instance, Notice::VerificationFailed(message.clone()))
                    .await;
            }
            (Reported::no("Verified", reason, message), None)
        }
    }
}

/// The hops of a verification: receiver admin API → Strapi trigger → Strapi's call to the
/// receiver → the receiver's handshake record. A failure names its hop.
async fn trigger_and_wait(
    ctx: &Context,
    instance: &StrapiInstance,
    client: &StrapiClient,
    id: &str,
) -> Result<(), (&'static str, String)> {
    let key = instance_key(instance);
    let handshakes = || async {
        let handshake = ctx.receiver.handshake(&key).await?;
        Ok::<_, ReceiverError>(handshake.count)
    };
    let trigger = ctx
        .strapi
        .observe("trigger webhook", client.trigger_webhook(id));
    registration::verify(handshakes, trigger, ctx.options.verify_timeout)
        .await
        .map_err(|error| match error {
            VerifyError::Handshake(error) => {
                (error.reason(), format!("receiver admin API: {error}"))
            }
            VerifyError::Trigger(error) => (
                super::error::strapi_reason(&error),
                format!("Strapi could not trigger the webhook: {error}"),
            ),
            VerifyError::Rejected { status, message } => (
                "ReceiverRejected",
                format!(
                    "Strapi called the receiver endpoint and got {status}: {message} (401: the \
                     shared secret does not match; 500: Strapi cannot reach the receiver URL)"
                ),
            ),
            VerifyError::HandshakeMissing => (
                "HandshakeMissing",
                "Strapi reported success, but the receiver this controller asks never recorded \
                 the trigger: does spec.receiverUrl point at another receiver?"
                    .to_owned(),
            ),
        })
}

/// Rolls the Strapi Deployment the way `kubectl rollout restart` does.
async fn restart(
    ctx: &Context,
    instance: &StrapiInstance,
    deployment: &str,
) -> Result<Timestamp, Error> {
    // Whole seconds, like every Kubernetes timestamp, so the annotation equals lastRestartTime.
    let now = Timestamp::from_second(Timestamp::now().as_second())
        .expect("the current time is a valid timestamp");
    let namespace = instance.namespace().unwrap_or_default();
    let patch = json!({"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT_ANNOTATION: now.to_string()}}}}});
    Api::<Deployment>::namespaced(ctx.client.clone(), &namespace)
        .patch(deployment, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(Error::kube("restart Strapi Deployment"))?;
    ctx.events
        .publish(instance, Notice::StrapiRestarted(deployment.to_owned()))
        .await;
    Ok(now)
}

async fn patch_status(
    ctx: &Context,
    instance: &StrapiInstance,
    status: StrapiInstanceStatus,
) -> Result<(), Error> {
    let namespace = instance.namespace().unwrap_or_default();
    let patch = json!({
        "apiVersion": StrapiInstance::api_version(&()),
        "kind": StrapiInstance::kind(&()),
        "status": status,
    });
    Api::<StrapiInstance>::namespaced(ctx.client.clone(), &namespace)
        .patch_status(
            &instance.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map_err(Error::kube("write StrapiInstance status"))?;
    ctx.metrics
        .record_instance_conditions(&instance_key(instance).to_string(), &status.conditions);
    Ok(())
}

async fn cleanup(instance: &StrapiInstance, ctx: &Context) -> Result<Action, Error> {
    let key = instance_key(instance);
    if let Some(status) = &instance.status {
        ctx.metrics
            .forget_instance(&key.to_string(), &status.conditions);
    }
    let credentials = match ctx.strapi.credentials(instance).await {
        Ok(credentials) => credentials,
        Err(error) if error.needs_user_change() => {
            // Without credentials the registration can never be removed; do not block deletion
            // forever, say so instead.
            ctx.events
                .publish(instance, Notice::CleanupSkipped(error.to_string()))
                .await;
            return Ok(Action::await_change());
        }
        Err(error) => return Err(error),
    };
    let client = ctx.strapi.client(instance, credentials)?;
    let removed = ctx
        .strapi
        .observe(
            "remove registration",
            registration::remove(&client, &key.to_string()),
        )
        .await?;
    ctx.strapi.forget(&key).await;
    tracing::info!(instance = %key, removed, "removed the registration from Strapi");
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::fixtures::{REGISTERED_INSTANCE, condition};

    #[test]
    fn a_private_url_rejection_says_what_to_change() {
        let rejected = StrapiError::Rejected {
            step: "create webhook",
            message: "Url is not supported because it isn't reachable over the public internet"
                .into(),
            details: serde_json::Value::Null,
        };
        assert!(explain_rejection(&rejected).contains("set spec.receiverUrl"));
        let other = StrapiError::Rejected {
            step: "create webhook",
            message: "url must be a valid URL".into(),
            details: serde_json::Value::Null,
        };
        assert_eq!(explain_rejection(&other), other.to_string());
    }

    // The pure build steps, on inline YAML: the dereferenced input is made by hand.

    fn webhook(name: &str, instance: &str, enabled: bool, events: &str) -> Arc<StrapiWebhook> {
        Arc::new(
            serde_saphyr::from_str(&format!(
                r#"
apiVersion: webhooks.strapi-operator.dev/v1alpha1
kind: StrapiWebhook
metadata: {{ name: {name}, namespace: web }}
spec:
  instanceRef: {{ name: {instance} }}
  enabled: {enabled}
  events: {events}
  sinks:
    - name: crm
      http: {{ url: "http://127.0.0.1:4000/hook" }}
  routes:
    - name: all
      sink: crm
"#
            ))
            .unwrap(),
        )
    }

    fn dereferenced(webhooks: Vec<Arc<StrapiWebhook>>) -> DereferencedInstance {
        DereferencedInstance {
            receiver_base: "http://receiver.strapi-system:8080/".into(),
            shared: SharedSecret {
                name: "cms-webhook-secret".into(),
                current: "s3cret".into(),
                changed: false,
            },
            webhooks,
            credentials: Ok(Credentials::AdminToken("token".into())),
        }
    }

    #[test]
    fn the_desired_registration_sends_the_union_of_the_enabled_webhooks_events() {
        let instance: StrapiInstance = serde_saphyr::from_str(REGISTERED_INSTANCE).unwrap();
        let input = dereferenced(vec![
            webhook("articles", "cms", true, "[entry.publish, entry.update]"),
            webhook("comments", "cms", true, "[entry.create, entry.update]"),
            webhook("paused", "cms", false, "[media.create]"),
        ]);
        let desired = build(&instance, &input, "X-Strapi-Secret");
        assert_eq!(
            desired,
            Desired {
                instance: "web/cms".into(),
                endpoint: registration::endpoint(
                    "http://receiver.strapi-system:8080",
                    &instance_key(&instance)
                ),
                secret: ("X-Strapi-Secret".into(), "s3cret".into()),
                events: ["entry.create", "entry.publish", "entry.update"]
                    .map(String::from)
                    .into(),
            }
        );
        assert!(
            desired
                .endpoint
                .starts_with("http://receiver.strapi-system:8080/")
        );
        assert!(
            build(&instance, &dereferenced(vec![]), "X-Strapi-Secret")
                .events
                .is_empty()
        );
    }

    #[test]
    fn a_registered_and_verified_instance_is_ready_with_what_the_apply_step_found() {
        let instance: StrapiInstance = serde_saphyr::from_str(REGISTERED_INSTANCE).unwrap();
        let input = dereferenced(vec![webhook("articles", "cms", true, "[entry.publish]")]);
        let desired = build(&instance, &input, "X-Strapi-Secret");
        let verified_at = Timestamp::from_second(1_800_000_000).unwrap();
        let outcome = Outcome {
            reported: vec![
                Reported::yes("Reachable", "Reachable", "the admin API answered"),
                Reported::yes("Registered", "Registered", "webhook 8"),
                Reported::yes("Verified", "Verified", "verified"),
            ],
            registration_id: Some("8".into()),
            verified_at: Some(verified_at),
            restarted_at: None,
            repair: None,
            retry_after: None,
        };
        let status = build_status(
            &instance,
            &input,
            desired.clone(),
            outcome,
            Timestamp::now(),
        );
        let ready = condition(&status.conditions, "Ready");
        assert_eq!(
            (ready.status.as_str(), ready.observed_generation),
            ("True", Some(3))
        );
        assert_eq!(status.observed_generation, Some(3));
        assert_eq!(status.registration_id.as_deref(), Some("8"));
        assert_eq!(status.endpoint, Some(desired.endpoint));
        assert_eq!(
            status.events,
            ["entry.publish"],
            "the events sent now, not before"
        );
        assert_eq!(status.webhooks, Some(1));
        assert_eq!(status.secret_name.as_deref(), Some("cms-webhook-secret"));
        assert_eq!(status.last_verified_time, Some(Time(verified_at)));
    }

    #[test]
    fn an_unapplied_registration_is_not_ready_and_keeps_what_was_known() {
        let instance: StrapiInstance = serde_saphyr::from_str(REGISTERED_INSTANCE).unwrap();
        let mut input = dereferenced(vec![]);
        input.credentials = Err(Error::InstanceMissing {
            namespace: "web".into(),
            name: "cms".into(),
        });
        let desired = build(&instance, &input, "X-Strapi-Secret");
        let previous = instance.status.clone().unwrap();
        let unreachable = Reported::no("Reachable", "StrapiUnreachable", "connection refused");
        let outcome = Outcome::unapplied(vec![unreachable], &previous, None);
        let status = build_status(&instance, &input, desired, outcome, Timestamp::now());
        let ready = condition(&status.conditions, "Ready");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "StrapiUnreachable")
        );
        assert_eq!(status.registration_id.as_deref(), Some("7"));
        assert_eq!(status.last_verified_time, previous.last_verified_time);
    }
}
