//! Gap repair driven by the instance reconcile, which holds the Strapi credentials: on each
//! instance's `repairInterval`, and at once after the receiver restarted or failed to store
//! Strapi's calls ([`watch_receiver`] triggers a reconcile of every instance then). The check
//! itself is [`crate::repair::check`]; this module decides when, and turns its report into
//! status, metrics and Events.

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use futures::channel::mpsc;
use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::ResourceExt;

use super::{Context, events::Notice};
use crate::{
    api::{RepairGap, RepairStatus, StrapiInstance, StrapiWebhook},
    config::instance_key,
    queue::UnixMillis,
    repair::{self, RepairClient, Report, Schedule, Target},
    strapi::StrapiClient,
};

/// How often the receiver is asked whether it restarted or failed to store calls.
const RECEIVER_POLL: Duration = Duration::from_secs(5);

/// The receiver's gap repair routes and when each instance's next check is due.
pub struct GapRepair {
    client: RepairClient,
    schedule: Mutex<Schedule>,
}

impl GapRepair {
    /// Gap repair through the receiver's routes that `client` calls.
    pub fn new(client: RepairClient) -> Self {
        GapRepair {
            client,
            schedule: Mutex::default(),
        }
    }

    fn schedule(&self) -> MutexGuard<'_, Schedule> {
        self.schedule.lock().expect("repair schedule lock")
    }

    /// When the next check of `instance` is due, if gap repair is on for it.
    pub fn next_check(&self, instance: &StrapiInstance) -> Option<Duration> {
        let interval: Duration = instance.spec.repair_interval.into();
        (!interval.is_zero()).then(|| {
            self.schedule()
                .due_in(&instance_key(instance).to_string(), interval)
        })
    }

    /// Whether a check of `instance` is due now.
    fn due(&self, instance: &StrapiInstance) -> bool {
        let interval: Duration = instance.spec.repair_interval.into();
        !interval.is_zero()
            && self
                .schedule()
                .due(&instance_key(instance).to_string(), interval)
    }
}

/// Asks the receiver every few seconds whether it restarted or failed to store Strapi's calls;
/// when it did, marks every instance due and sends `()` (reconcile them all). Runs until the
/// channel's receiving side is gone.
pub async fn watch_receiver(ctx: Arc<Context>, trigger: mpsc::UnboundedSender<()>) {
    loop {
        match ctx.repair.client.state().await {
            Ok(state) => {
                let instances: Vec<String> = ctx
                    .instances
                    .state()
                    .iter()
                    .map(|instance| instance_key(instance).to_string())
                    .collect();
                let changed = ctx
                    .repair
                    .schedule()
                    .observe(state, instances.iter().map(String::as_str));
                if changed {
                    tracing::info!(
                        "the receiver restarted or failed to store events; checking every instance for a gap"
                    );
                    if trigger.unbounded_send(()).is_err() {
                        return;
                    }
                }
            }
            Err(error) => tracing::debug!(%error, "the receiver's repair state is not available"),
        }
        tokio::time::sleep(RECEIVER_POLL).await;
    }
}

/// Runs a check of `instance` when one is due; returns the repair status to report.
pub async fn repair(
    ctx: &Context,
    instance: &StrapiInstance,
    strapi: &StrapiClient,
    webhooks: &[Arc<StrapiWebhook>],
    events: &BTreeSet<String>,
) -> Option<RepairStatus> {
    let previous = instance
        .status
        .as_ref()
        .and_then(|status| status.repair.clone());
    if !ctx.repair.due(instance) {
        return previous;
    }
    let key = instance_key(instance).to_string();
    let models = repair::routed_models(
        webhooks
            .iter()
            .filter(|webhook| webhook.spec.enabled)
            .flat_map(|webhook| &webhook.spec.routes)
            .map(|route| (route.matches.models.as_ref(), route.matches.uids.as_ref())),
    );
    let target = Target {
        instance: &key,
        strapi,
        events,
        models: models.as_ref(),
    };
    let checked = repair::check(&target, &ctx.repair.client, &ctx.options.repair).await;
    let outage = ctx.repair.schedule().checked(&key);
    let mut status = previous.clone().unwrap_or_default();
    status.last_check_time = Some(Time(Timestamp::now()));
    match checked {
        Ok(report) => {
            record(ctx, &key, &report);
            status.last_error = None;
            update(ctx, instance, &mut status, &report, outage).await;
        }
        Err(error) => {
            ctx.metrics.record_repair_check(&key, error.reason());
            let message = error.to_string();
            if previous.and_then(|previous| previous.last_error) != Some(message.clone()) {
                ctx.events
                    .publish(instance, Notice::RepairFailed(message.clone()))
                    .await;
            }
            tracing::warn!(instance = %key, %message, "gap repair check failed");
            status.last_error = Some(message);
        }
    }
    Some(status)
}

fn record(ctx: &Context, instance: &str, report: &Report) {
    let metrics = &ctx.metrics;
    metrics.record_repair_check(instance, "ok");
    metrics
        .repair_strapi_calls
        .inc_by(u64::from(report.strapi_calls));
    for recovered in &report.recovered {
        let event = match recovered.event.as_str() {
            "entry.create" => "entry.create",
            "entry.publish" => "entry.publish",
            _ => "entry.update",
        };
        metrics
            .repair_recovered
            .get_or_create(&super::metrics::EventLabels { event })
            .inc();
        let age_ms = report
            .started_at
            .saturating_sub(recovered.changed_at)
            .max(0);
        metrics
            .repair_recovered_age
            .observe(Duration::from_millis(u64::try_from(age_ms).unwrap_or(0)).as_secs_f64());
    }
}

async fn update(
    ctx: &Context,
    instance: &StrapiInstance,
    status: &mut RepairStatus,
    report: &Report,
    outage: Option<(UnixMillis, UnixMillis)>,
) {
    let recovered = i64::try_from(report.recovered.len()).unwrap_or(i64::MAX);
    if recovered > 0 {
        status.recovered_events += recovered;
        status.last_recovery_time = Some(Time(Timestamp::now()));
    }
    let Some((start, end)) = repair::gap(outage, report) else {
        return;
    };
    let time = |millis: UnixMillis| {
        Time(Timestamp::from_millisecond(millis).unwrap_or(Timestamp::UNIX_EPOCH))
    };
    let gap = RepairGap {
        start: time(start),
        end: time(end),
        recovered_events: recovered,
    };
    let message = format!(
        "between {} and {} Strapi's calls did not reach the receiver: {recovered} event(s) \
         recovered from Strapi's content; deletions and unpublications in that window cannot be \
         seen by listing and may have been missed (instance {})",
        gap.start.0,
        gap.end.0,
        instance.name_any()
    );
    tracing::warn!(instance = %instance_key(instance), %message, "gap found");
    ctx.events
        .publish(instance, Notice::GapRepaired(message))
        .await;
    status.last_gap = Some(gap);
}
