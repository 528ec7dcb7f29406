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
    /// Route filters, evaluated while Strapi waits for its answer: the time limit counts the
    /// wait for a slot too, so an ingest never waits longer than it.
    Filter,
    /// Templates, rendered by the engine: the time limit counts from when rendering starts.
    Template,
}

static FILTERS: Semaphore = Semaphore::const_new(SLOTS);
static TEMPLATES: Semaphore = Semaphore::const_new(SLOTS);

/// Runs `work` off the async workers. `None` when it did not finish within `limit`; the
/// evaluation then finishes in the background, bounded by its budget.
pub async fn run<T: Send + 'static>(
    kind: Kind,
    limit: Duration,
    work: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let slots = match kind {
        Kind::Filter => &FILTERS,
        Kind::Template => &TEMPLATES,
    };
    let evaluate = |slot| async move {
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            work()
        })
        .await
        .ok()
    };
    match kind {
        Kind::Filter => tokio::time::timeout(limit, async {
            let slot = slots.acquire().await.ok()?;
            evaluate(slot).await
        })
        .await
        .ok()
        .flatten(),
        Kind::Template => {
            let slot = slots.acquire().await.ok()?;
            tokio::time::timeout(limit, evaluate(slot))
                .await
                .ok()
                .flatten()
        }
    }
}
