//! Status conditions as Argo CD and Flux health checks read them: a `Ready` condition with a
//! reason and message, `observedGeneration` on every condition, and `lastTransitionTime` that
//! moves only when the status really changes.

use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::Timestamp,
};

/// One condition as a reconcile step reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reported {
    /// Condition type, e.g. `Reachable`.
    pub kind: &'static str,
    /// Whether the condition holds.
    pub status: bool,
    /// CamelCase reason.
    pub reason: &'static str,
    /// Human-readable message.
    pub message: String,
}

impl Reported {
    /// A condition that holds.
    pub fn yes(kind: &'static str, reason: &'static str, message: impl Into<String>) -> Self {
        Reported {
            kind,
            status: true,
            reason,
            message: message.into(),
        }
    }

    /// A condition that does not hold.
    pub fn no(kind: &'static str, reason: &'static str, message: impl Into<String>) -> Self {
        Reported {
            kind,
            status: false,
            reason,
            message: message.into(),
        }
    }
}

/// The `Ready` condition summarising `parts`: true when all of them hold, otherwise false with
/// the first failing part's reason and message.
pub fn ready(parts: &[Reported], ready_message: &str) -> Reported {
    match parts.iter().find(|part| !part.status) {
        None => Reported::yes("Ready", "Ready", ready_message),
        Some(failing) => Reported::no(
            "Ready",
            failing.reason,
            format!("{}: {}", failing.kind, failing.message),
        ),
    }
}

/// Turns reported conditions into API conditions, keeping `lastTransitionTime` of those whose
/// status did not change since `previous`.
pub fn merge(
    previous: &[Condition],
    reported: &[Reported],
    generation: Option<i64>,
    now: Timestamp,
) -> Vec<Condition> {
    reported
        .iter()
        .map(|condition| {
            let status = if condition.status { "True" } else { "False" };
            let last_transition_time = previous
                .iter()
                .find(|old| old.type_ == condition.kind && old.status == status)
                .map(|old| old.last_transition_time.clone())
                .unwrap_or(Time(now));
            Condition {
                type_: condition.kind.to_owned(),
                status: status.to_owned(),
                reason: condition.reason.to_owned(),
                message: condition.message.clone(),
                observed_generation: generation,
                last_transition_time,
            }
        })
        .collect()
}

/// True when `conditions` hold a condition of `kind` with status `True`.
pub fn is_true(conditions: &[Condition], kind: &str) -> bool {
    conditions
        .iter()
        .any(|condition| condition.type_ == kind && condition.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).unwrap()
    }

    #[test]
    fn ready_names_the_first_failing_condition() {
        let parts = [
            Reported::yes("Reachable", "Reachable", "ok"),
            Reported::no("Registered", "StrapiRejected", "bad url"),
            Reported::no("Verified", "NotVerified", "later"),
        ];
        let ready = ready(&parts, "all good");
        assert!(!ready.status);
        assert_eq!(ready.reason, "StrapiRejected");
        assert_eq!(ready.message, "Registered: bad url");
        assert!(super::ready(&parts[..1], "all good").status);
    }

    #[test]
    fn transition_time_moves_only_when_the_status_changes() {
        let first = merge(
            &[],
            &[Reported::yes("Reachable", "Reachable", "ok")],
            Some(1),
            at(100),
        );
        let same = merge(
            &first,
            &[Reported::yes("Reachable", "Reachable", "still ok")],
            Some(2),
            at(200),
        );
        assert_eq!(same[0].last_transition_time, Time(at(100)));
        assert_eq!(same[0].observed_generation, Some(2));
        assert_eq!(same[0].message, "still ok");
        let flipped = merge(
            &same,
            &[Reported::no("Reachable", "StrapiUnreachable", "down")],
            Some(2),
            at(300),
        );
        assert_eq!(flipped[0].last_transition_time, Time(at(300)));
        assert!(!is_true(&flipped, "Reachable"));
        assert!(is_true(&same, "Reachable"));
    }
}
