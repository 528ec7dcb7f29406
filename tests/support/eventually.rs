//! Waiting for state that nothing announces (a status the controller writes on its next pass, a
//! counter a sink copies): one retry loop with one failure message, instead of a deadline loop
//! written out in each test. Where something can notify (a capture server's arrivals, a
//! receiver's configuration), wait on that instead.

use std::{fmt::Display, future::Future, time::Duration};

/// The pause between two attempts: short next to every limit the tests use.
const PAUSE: Duration = Duration::from_millis(50);

/// Runs `attempt` until its future gives `Ok` and returns that value, pausing briefly between
/// tries; after `limit` panics with the last `Err`, which should say what was seen instead.
///
/// `attempt` is a closure returning a future rather than an async closure: futures of async
/// closures that borrow are not `Send` to the compiler yet, and some callers run in `spawn`.
pub async fn eventually<T, E: Display, F: Future<Output = Result<T, E>>>(
    limit: Duration,
    mut attempt: impl FnMut() -> F,
) -> T {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let seen = match attempt().await {
            Ok(value) => return value,
            Err(seen) => seen,
        };
        assert!(
            tokio::time::Instant::now() < deadline,
            "the condition did not hold within {limit:?}: {seen}"
        );
        tokio::time::sleep(PAUSE).await;
    }
}
