//! Where tenant-written code runs: route filters (CEL) and payload templates (minijinja).
//!
//! Both are bounded when they are loaded (a CEL cost budget, minijinja fuel, an output limit),
//! so each evaluation is short. They still run here rather than on the async workers, so the
//! workers that answer Strapi and probes never compute a tenant's filter or template: on the
//! blocking pool, a bounded number at once per kind (filters and templates do not wait for each
//! other), and the caller stops waiting after a time limit.

use std::time::Duration;

use tokio::sync::Semaphore;

/// Evaluations of one kind of tenant code running at once.
pub const SLOTS: usize = 4;

/// A kind of tenant code, with its own slots.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    /// Route filters, evaluated by the router (Strapi's calls never wait on them).
    Filter,
    /// Templates, rendered by the engine.
    Template,
}

static FILTERS: Semaphore = Semaphore::const_new(SLOTS);
static TEMPLATES: Semaphore = Semaphore::const_new(SLOTS);

/// Runs `work` off the async workers. `None` when it did not finish within `limit`, counted from
/// when it starts (a wait for a slot is not the evaluation's fault); the evaluation then
/// finishes in the background, bounded by its budget.
pub async fn run<T: Send + 'static>(
    kind: Kind,
    limit: Duration,
    work: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let slots = match kind {
        Kind::Filter => &FILTERS,
        Kind::Template => &TEMPLATES,
    };
    let slot = slots.acquire().await.ok()?;
    let evaluation = tokio::task::spawn_blocking(move || {
        let _slot = slot;
        work()
    });
    tokio::time::timeout(limit, evaluation)
        .await
        .ok()
        .and_then(Result::ok)
}
