//! Strapi's admin login limit (5 logins per 5 minutes per account and address): a rate-limited
//! login holds the instance back until Strapi takes logins again, not until the next resync, and
//! no login is sent before then. Strapi's limiter is a loopback server here, answering 429 as
//! Strapi 5.54 does (`X-RateLimit-Reset`, no `Retry-After`: its koa2-ratelimit handler throws
//! before it could set one) or with a `Retry-After`; the real test Strapi's login budget is
//! shared by the whole run, so it is not spent on this.

use std::{
    sync::{
        Arc, OnceLock,
        atomic::{AtomicUsize, Ordering},
    },
    time::{SystemTime, UNIX_EPOCH},
};

use axum::{Router, http::StatusCode, response::IntoResponse, routing::post};
use kube::runtime::controller::Action;

use super::*;

/// What a 429 from the loopback Strapi says about when to come back.
#[derive(Clone, Copy)]
enum Hint {
    /// Strapi 5.54: `X-RateLimit-Reset`, the end (Unix seconds) of a window that opened with
    /// the first login and lasts this long.
    WindowReset(Duration),
    /// `Retry-After` in seconds.
    RetryAfter(u64),
    /// No header at all.
    Nothing,
}

/// A Strapi whose `/admin/login` always answers 429 with `hint`; counts the logins.
struct LimitedStrapi {
    url: String,
    logins: Arc<AtomicUsize>,
}

impl LimitedStrapi {
    async fn start(hint: Hint) -> Self {
        let logins = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&logins);
        let window_end = Arc::new(OnceLock::new());
        let app = Router::new().route(
            "/admin/login",
            post(move || {
                counter.fetch_add(1, Ordering::SeqCst);
                let window_end = Arc::clone(&window_end);
                async move {
                    let body = r#"{"data":null,"error":{"status":429,"name":"RateLimitError","message":"Too many requests, please try again later.","details":{}}}"#;
                    let mut response = (
                        StatusCode::TOO_MANY_REQUESTS,
                        [("content-type", "application/json")],
                        body,
                    )
                        .into_response();
                    let headers = response.headers_mut();
                    match hint {
                        Hint::WindowReset(window) => {
                            let end = *window_end.get_or_init(|| unix_now() + window.as_secs());
                            headers.insert("x-ratelimit-limit", 5.into());
                            headers.insert("x-ratelimit-remaining", 0.into());
                            headers.insert("x-ratelimit-reset", end.into());
                        }
                        Hint::RetryAfter(seconds) => {
                            headers.insert("retry-after", seconds.into());
                        }
                        Hint::Nothing => {}
                    }
                    response
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        LimitedStrapi { url, logins }
    }

    fn logins(&self) -> usize {
        self.logins.load(Ordering::SeqCst)
    }
}

impl World {
    /// One reconcile of the instance; the action the controller asks for.
    async fn reconcile_action(&mut self) -> Action {
        self.sync_instance();
        let object: StrapiInstance =
            serde_json::from_value(self.api.get(&self.instance_path()).unwrap()).unwrap();
        controller::reconcile_instance(Arc::new(object), self.ctx.clone())
            .await
            .unwrap()
    }
}

/// Reconciles twice against `strapi`: the first reconcile logs in once and is told to wait
/// `expected_wait` (less up to two seconds for the clock); the second sends no login and waits
/// what is left. Returns the Reachable condition's message after the first.
async fn assert_backs_off(strapi: &LimitedStrapi, expected_wait: Duration) -> String {
    let shared = StrapiServer::shared().await;
    let mut world = World::new(&shared).await;
    world.apply_instance(&strapi.url);
    // The first reconcile only adds the finalizer.
    world.reconcile_action().await;
    assert_eq!(strapi.logins(), 0);

    let first = world.reconcile_action().await;
    assert_eq!(strapi.logins(), 1, "one login attempt");
    let (reachable, reason, message) = world.condition("Reachable");
    assert_eq!(
        (reachable.as_str(), reason.as_str()),
        ("False", "StrapiRateLimited"),
        "{message}"
    );
    let (ready, ready_reason, _) = world.condition("Ready");
    assert_eq!(
        (ready.as_str(), ready_reason.as_str()),
        ("False", "StrapiRateLimited")
    );
    let waits = |action: &Action| {
        let wait = requeue_after(action);
        wait + Duration::from_secs(2) >= expected_wait && wait <= expected_wait
    };
    assert!(
        waits(&first),
        "requeue after {expected_wait:?}, not at the next resync or sooner: {first:?}"
    );
    let first_message = message;

    // A reconcile inside the window (a webhook changed, say) sends no login at all.
    let second = world.reconcile_action().await;
    assert_eq!(strapi.logins(), 1, "no login before Strapi's window ends");
    assert!(
        waits(&second),
        "the second reconcile waits what is left: {second:?}"
    );
    let (_, reason, _) = world.condition("Reachable");
    assert_eq!(reason, "StrapiRateLimited");
    first_message
}

/// The requeue delay of `action` (kube's `Action` shows it only through `Debug`).
fn requeue_after(action: &Action) -> Duration {
    let shown = format!("{action:?}");
    let seconds = shown
        .split_once("Some(")
        .and_then(|(_, rest)| rest.split_once("s)"))
        .and_then(|(number, _)| number.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no requeue delay in {shown}"));
    Duration::from_secs_f64(seconds)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn a_rate_limited_login_waits_for_strapis_window_to_end() {
    // What Strapi 5.54 sends on the 6th login within 5 minutes (a window opened earlier).
    let strapi = LimitedStrapi::start(Hint::WindowReset(Duration::from_secs(200))).await;
    let message = assert_backs_off(&strapi, Duration::from_secs(200)).await;
    assert!(message.contains("Too many requests"), "{message}");
    assert!(
        message.contains("tries again at 20"),
        "says when: {message}"
    );
    assert!(
        message.contains("spec.auth.apiToken"),
        "says how to avoid it: {message}"
    );
}

#[tokio::test]
async fn a_rate_limited_login_honours_retry_after_or_waits_the_whole_window() {
    let with_retry_after = LimitedStrapi::start(Hint::RetryAfter(90)).await;
    assert_backs_off(&with_retry_after, Duration::from_secs(90)).await;

    // No hint at all: Strapi's whole login window, five minutes.
    let bare = LimitedStrapi::start(Hint::Nothing).await;
    let message = assert_backs_off(&bare, Duration::from_secs(300)).await;
    assert!(message.contains("in 300s"), "{message}");
}
