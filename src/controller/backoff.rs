//! How long a failed reconcile waits before the next try: exponential per object while it keeps
//! failing transiently, forgotten once it succeeds, and no retry at all for failures only a
//! change of the object can fix.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use kube::runtime::controller::Action;

use super::Error;

/// Consecutive failures per object, as `kind/namespace/name`.
#[derive(Default)]
pub struct Backoff {
    failures: Mutex<HashMap<String, u32>>,
}

impl Backoff {
    /// Counts one more failure of `object` and says when to try again.
    pub fn failed(&self, object: String, error: &Error) -> Action {
        let mut failures = self.failures.lock().expect("failure count lock");
        let count = failures.entry(object).or_default();
        *count += 1;
        if error.needs_user_change() {
            return Action::await_change();
        }
        Action::requeue(retry_delay(*count))
    }

    /// Forgets the failures of `object` after a reconcile that succeeded.
    pub fn succeeded(&self, object: &str) {
        self.failures
            .lock()
            .expect("failure count lock")
            .remove(object);
    }
}

/// Exponential backoff for transient failures: 2 s, 4 s, 8 s … capped at 5 minutes.
pub fn retry_delay(failures: u32) -> Duration {
    Duration::from_secs(2u64.saturating_pow(failures.min(9))).min(Duration::from_secs(300))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_failures_back_off_exponentially_up_to_five_minutes() {
        assert_eq!(retry_delay(1), Duration::from_secs(2));
        assert_eq!(retry_delay(3), Duration::from_secs(8));
        assert_eq!(retry_delay(30), Duration::from_secs(300));
    }
}
