//! Where tenant-written code runs: route filters (CEL) and payload templates (minijinja).
//!
//! Both are bounded when they are loaded (a CEL cost budget, minijinja fuel, an output limit),
//! so each evaluation is short. They still run here rather than on the async workers, so the
//! workers that answer Strapi and probes never compute a tenant's filter or template: on the
//! blocking pool, a bounded number of jobs at once per kind (filters and templates do not wait
//! for each other), and the caller stops waiting for an evaluation after a time limit.

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use tokio::sync::{Semaphore, mpsc};

/// Jobs of one kind of tenant code running at once.
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

/// Runs `work` on each of `items` off the async workers, in order, in one blocking job while
/// they keep within time: a coalesced call's thousand deliveries cost one hand-off to the
/// blocking pool instead of a thousand, each a wake-up and two context switches (under an
/// ingest storm those hand-offs, not the rendering, kept a coalesced call most of a second
/// late). Each item is still held to `limit`, counted from its own start (a wait for a slot is
/// not the item's fault): one that overruns gets `None` and finishes in the background, bounded
/// by its budget, and the items after it go on in a new job, so they lose nothing to it. A
/// panicking item also gets `None`.
pub async fn run_each<I, T>(
    kind: Kind,
    limit: Duration,
    items: Arc<Vec<I>>,
    work: impl Fn(&I) -> T + Send + Sync + 'static,
) -> Vec<Option<T>>
where
    I: Send + Sync + 'static,
    T: Send + 'static,
{
    let slots = match kind {
        Kind::Filter => &FILTERS,
        Kind::Template => &TEMPLATES,
    };
    let work = Arc::new(work);
    let mut results: Vec<Option<T>> = std::iter::repeat_with(|| None).take(items.len()).collect();
    let mut next = 0;
    while next < items.len() {
        let Ok(slot) = slots.acquire().await else {
            break;
        };
        let job = Arc::new(Mutex::new(Job::from(next)));
        let (finished, mut outputs) = mpsc::unbounded_channel();
        let (shared, items, work) = (Arc::clone(&job), Arc::clone(&items), Arc::clone(&work));
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            evaluate_in_turn(&shared, &items, &*work, &finished);
            // Let go of the items before the caller learns the job is done, so that it gets
            // them back without a copy.
            drop(items);
            drop(finished);
        });
        next = collect(&job, &mut outputs, limit, &mut results).await;
    }
    results
}

/// Where a blocking job is in its items, shared with the caller that waits on it.
struct Job {
    /// The first item not started yet.
    next: usize,
    /// The item being evaluated and when it started.
    current: Option<(usize, Instant)>,
    /// Set by the caller once it stopped waiting: the job starts nothing more.
    abandoned: bool,
}

impl From<usize> for Job {
    fn from(next: usize) -> Self {
        Self {
            next,
            current: None,
            abandoned: false,
        }
    }
}

fn lock(job: &Mutex<Job>) -> std::sync::MutexGuard<'_, Job> {
    job.lock().unwrap_or_else(PoisonError::into_inner)
}

fn evaluate_in_turn<I, T>(
    job: &Mutex<Job>,
    items: &[I],
    work: &dyn Fn(&I) -> T,
    finished: &mpsc::UnboundedSender<(usize, T)>,
) {
    loop {
        let index = {
            let mut job = lock(job);
            if job.abandoned || job.next >= items.len() {
                job.current = None;
                return;
            }
            job.current = Some((job.next, Instant::now()));
            job.next += 1;
            job.next - 1
        };
        if finished.send((index, work(&items[index]))).is_err() {
            return;
        }
    }
}

/// Takes a job's outputs as they come, until it has done its items or one overran or panicked;
/// returns the first item a new job has to start from.
async fn collect<T>(
    job: &Mutex<Job>,
    outputs: &mut mpsc::UnboundedReceiver<(usize, T)>,
    limit: Duration,
    results: &mut [Option<T>],
) -> usize {
    loop {
        let current = lock(job).current;
        // Before the job has started, waiting is the blocking pool's doing, not an item's.
        let deadline = current.map_or_else(|| Instant::now() + limit, |(_, at)| at + limit);
        match tokio::time::timeout_at(deadline.into(), outputs.recv()).await {
            Ok(Some((index, output))) => results[index] = Some(output),
            // The job returned: all done, or its current item panicked.
            Ok(None) => return lock(job).next,
            Err(_) => {
                let mut job = lock(job);
                let running = job.current.map(|(index, _)| index);
                if running.is_none() || running != current.map(|(index, _)| index) {
                    // Not started yet, or the item timed out on has finished since.
                    continue;
                }
                job.abandoned = true;
                return job.next;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[tokio::test]
    async fn items_are_evaluated_in_order_in_one_job() {
        let items = Arc::new((0..100).collect::<Vec<u32>>());
        let results = run_each(Kind::Template, Duration::from_secs(5), items, |n| {
            (n * 2, std::thread::current().id())
        })
        .await;
        let outputs: Vec<u32> = results
            .iter()
            .flatten()
            .map(|(output, _)| *output)
            .collect();
        assert_eq!(outputs, (0..100).map(|n| n * 2).collect::<Vec<_>>());
        let threads: HashSet<_> = results
            .iter()
            .flatten()
            .map(|(_, thread)| *thread)
            .collect();
        assert_eq!(threads.len(), 1, "one hand-off to the blocking pool");
    }

    #[tokio::test]
    async fn an_item_that_overruns_gets_none_and_the_items_after_it_still_run() {
        // Milliseconds each item takes.
        let items = Arc::new(vec![0_u64, 3_000, 0, 0]);
        let started = Instant::now();
        let results = run_each(Kind::Filter, Duration::from_millis(200), items, |millis| {
            std::thread::sleep(Duration::from_millis(*millis));
            *millis
        })
        .await;
        assert_eq!(results, [Some(0), None, Some(0), Some(0)]);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "the items after the slow one waited for it: {:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn a_panicking_item_gets_none_and_the_others_their_output() {
        let items = Arc::new(vec![1_u32, 0, 3]);
        let results = run_each(Kind::Template, Duration::from_secs(5), items, |n| 6 / n).await;
        assert_eq!(results, [Some(6), None, Some(2)]);
    }

    #[tokio::test]
    async fn a_single_evaluation_that_overruns_is_abandoned() {
        let slow = run_each(
            Kind::Filter,
            Duration::from_millis(100),
            Arc::new(vec![()]),
            |()| std::thread::sleep(Duration::from_secs(1)),
        );
        assert_eq!(slow.await, [None]);
        let quick = run_each(
            Kind::Filter,
            Duration::from_secs(5),
            Arc::new(vec![()]),
            |()| 7,
        );
        assert_eq!(quick.await, [Some(7)]);
    }
}
