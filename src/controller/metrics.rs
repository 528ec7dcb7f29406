//! Prometheus metrics of the controller. Every label value comes from a fixed set (kinds,
//! outcomes, `Error::reason`, Strapi call steps), so the series count stays bounded whatever
//! users apply; the one exception is what is kept per StrapiInstance (its conditions and its gap
//! repair checks), which cluster admins create (a handful per cluster), labelled by instance so
//! an alert can name it.

use std::{future::Future, time::Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

/// Labels of a reconcile.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    /// `StrapiInstance` or `StrapiWebhook`.
    pub kind: &'static str,
    /// `success` or `error`.
    pub outcome: &'static str,
}

/// Labels of a failed reconcile.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    /// `StrapiInstance` or `StrapiWebhook`.
    pub kind: &'static str,
    /// `Error::reason`.
    pub reason: &'static str,
}

/// Labels of a reconcile's duration.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// `StrapiInstance` or `StrapiWebhook`.
    pub kind: &'static str,
}

/// Labels of a call to Strapi's admin API.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StrapiCallLabels {
    /// What the controller asked Strapi, e.g. `ensure registration`.
    pub step: &'static str,
    /// `ok`, or the failure's reason.
    pub outcome: &'static str,
}

/// Labels of a StrapiInstance's condition. Not `instance`: Prometheus owns that label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InstanceConditionLabels {
    /// `namespace/name` of the StrapiInstance.
    pub strapi_instance: String,
    /// The condition's type, e.g. `Verified`.
    pub condition: String,
}

/// Labels of a call to the receiver's admin API.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReceiverCallLabels {
    /// What the controller asked, e.g. `routing`.
    pub call: &'static str,
    /// `ok`, or the failure's reason.
    pub outcome: &'static str,
}

/// Labels of a gap repair check.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RepairCheckLabels {
    /// `namespace/name` of the StrapiInstance checked.
    pub strapi_instance: String,
    /// `ok`, or the failure's reason.
    pub outcome: &'static str,
}

/// Labels of a recovered event.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    /// `entry.create`, `entry.update` or `entry.publish`.
    pub event: &'static str,
}

/// The controller's metrics.
pub struct Metrics {
    /// Reconciles by kind and outcome.
    pub reconciles: Family<ReconcileLabels, Counter>,
    /// Failed reconciles by kind and reason.
    pub failures: Family<FailureLabels, Counter>,
    /// Reconcile duration by kind.
    pub duration: Family<KindLabels, Histogram>,
    /// Calls to Strapi's admin API by step and outcome.
    pub strapi_calls: Family<StrapiCallLabels, Counter>,
    /// Registrations put back after someone changed them in Strapi.
    pub drift_repairs: Counter,
    /// 1 while a StrapiInstance's condition is True, 0 otherwise, as last written to its status.
    pub instance_conditions: Family<InstanceConditionLabels, Gauge>,
    /// Calls to the receiver replicas' admin API by call and outcome.
    pub receiver_calls: Family<ReceiverCallLabels, Counter>,
    /// Gap repair checks by instance and outcome.
    pub repair_checks: Family<RepairCheckLabels, Counter>,
    /// Events recovered by gap repair, by event.
    pub repair_recovered: Family<EventLabels, Counter>,
    /// Age of each recovered change (from Strapi's write to its recovery), in seconds.
    pub repair_recovered_age: Histogram,
    /// Calls to Strapi's admin API made by gap repair checks.
    pub repair_strapi_calls: Counter,
}

impl Metrics {
    /// Creates the metrics and registers them under the `strapi_operator` prefix.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Metrics {
            reconciles: Family::default(),
            failures: Family::default(),
            duration: Family::new_with_constructor(|| {
                Histogram::new([0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0])
            }),
            strapi_calls: Family::default(),
            drift_repairs: Counter::default(),
            instance_conditions: Family::default(),
            receiver_calls: Family::default(),
            repair_checks: Family::default(),
            repair_recovered: Family::default(),
            repair_recovered_age: Histogram::new([
                1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0,
            ]),
            repair_strapi_calls: Counter::default(),
        };
        let registry = registry.sub_registry_with_prefix("strapi_operator");
        registry.register(
            "repair_checks",
            "Gap repair checks by instance and outcome",
            metrics.repair_checks.clone(),
        );
        registry.register(
            "repair_recovered_events",
            "Events recovered by gap repair, by event",
            metrics.repair_recovered.clone(),
        );
        registry.register(
            "repair_recovered_age_seconds",
            "Age of each recovered change when it was recovered",
            metrics.repair_recovered_age.clone(),
        );
        registry.register(
            "repair_strapi_api_calls",
            "Calls to Strapi's admin API made by gap repair checks",
            metrics.repair_strapi_calls.clone(),
        );
        registry.register(
            "reconciles",
            "Reconciles by kind and outcome",
            metrics.reconciles.clone(),
        );
        registry.register(
            "reconcile_failures",
            "Failed reconciles by kind and reason",
            metrics.failures.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Reconcile duration by kind",
            metrics.duration.clone(),
        );
        registry.register(
            "strapi_api_calls",
            "Calls to Strapi's admin API by step and outcome",
            metrics.strapi_calls.clone(),
        );
        registry.register(
            "drift_repairs",
            "Registrations repaired after a change in Strapi",
            metrics.drift_repairs.clone(),
        );
        registry.register(
            "instance_condition",
            "1 while the StrapiInstance's condition is True",
            metrics.instance_conditions.clone(),
        );
        registry.register(
            "receiver_api_calls",
            "Calls to the receiver replicas' admin API by call and outcome",
            metrics.receiver_calls.clone(),
        );
        metrics
    }

    /// Exports the conditions just written to a StrapiInstance's status.
    pub fn record_instance_conditions(&self, instance: &str, conditions: &[Condition]) {
        for condition in conditions {
            self.instance_conditions
                .get_or_create(&InstanceConditionLabels {
                    strapi_instance: instance.to_owned(),
                    condition: condition.type_.clone(),
                })
                .set(i64::from(condition.status == "True"));
        }
    }

    /// Counts a gap repair check of `instance` (`namespace/name`) that ended with `outcome`.
    pub fn record_repair_check(&self, instance: &str, outcome: &'static str) {
        self.repair_checks
            .get_or_create(&RepairCheckLabels {
                strapi_instance: instance.to_owned(),
                outcome,
            })
            .inc();
    }

    /// Drops a deleted StrapiInstance's condition series.
    pub fn forget_instance(&self, instance: &str, conditions: &[Condition]) {
        for condition in conditions {
            self.instance_conditions.remove(&InstanceConditionLabels {
                strapi_instance: instance.to_owned(),
                condition: condition.type_.clone(),
            });
        }
    }

    /// Runs one reconcile and records its outcome and duration.
    pub async fn measure<T, E>(
        &self,
        kind: &'static str,
        reason: impl Fn(&E) -> &'static str,
        reconcile: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        let started = Instant::now();
        let result = reconcile.await;
        self.duration
            .get_or_create(&KindLabels { kind })
            .observe(started.elapsed().as_secs_f64());
        let outcome = if result.is_ok() { "success" } else { "error" };
        self.reconciles
            .get_or_create(&ReconcileLabels { kind, outcome })
            .inc();
        if let Err(error) = &result {
            self.failures
                .get_or_create(&FailureLabels {
                    kind,
                    reason: reason(error),
                })
                .inc();
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reconciles_are_counted_by_outcome_and_reason() {
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        let _ = metrics
            .measure("StrapiWebhook", |_: &&str| "InvalidSpec", async {
                Err::<(), _>("bad")
            })
            .await;
        let _ = metrics
            .measure("StrapiWebhook", |_: &&str| "InvalidSpec", async {
                Ok::<(), &str>(())
            })
            .await;
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains(
                r#"strapi_operator_reconciles_total{kind="StrapiWebhook",outcome="error"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"strapi_operator_reconciles_total{kind="StrapiWebhook",outcome="success"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains(r#"strapi_operator_reconcile_failures_total{kind="StrapiWebhook",reason="InvalidSpec"} 1"#), "{text}");
    }

    #[test]
    fn instance_conditions_are_exported_and_forgotten() {
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        let condition = |type_: &str, status: &str| Condition {
            type_: type_.into(),
            status: status.into(),
            reason: "Test".into(),
            message: String::new(),
            observed_generation: Some(1),
            last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ),
        };
        let conditions = [condition("Verified", "False"), condition("Ready", "True")];
        metrics.record_instance_conditions("web/cms", &conditions);
        let encode = || {
            let mut text = String::new();
            prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
            text
        };
        let text = encode();
        assert!(
            text.contains(r#"strapi_operator_instance_condition{strapi_instance="web/cms",condition="Verified"} 0"#),
            "{text}"
        );
        assert!(
            text.contains(r#"strapi_operator_instance_condition{strapi_instance="web/cms",condition="Ready"} 1"#),
            "{text}"
        );
        metrics.forget_instance("web/cms", &conditions);
        assert!(!encode().contains("web/cms"), "{}", encode());
    }
}
