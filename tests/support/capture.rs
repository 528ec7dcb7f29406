//! A real HTTP listener on a free loopback port that answers every request with a chosen status
//! and records method, path, headers and body, so tests can assert on what was actually sent.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, Method, StatusCode, Uri},
};
use serde_json::Value;
use tokio::{
    net::TcpListener,
    sync::{oneshot, watch},
};

/// One request as the listener received it.
#[derive(Clone, Debug)]
pub struct CapturedRequest {
    /// HTTP method.
    pub method: Method,
    /// Path and query, e.g. `/hook?x=1`.
    pub path: String,
    /// Every header as received.
    pub headers: HeaderMap,
    /// The raw body.
    pub body: Bytes,
}

impl CapturedRequest {
    /// A header's value, if present and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    /// The body as JSON; panics with the body when it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|error| {
            panic!(
                "body is not JSON ({error}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

#[derive(Clone)]
struct Shared {
    status: StatusCode,
    // Answer with the request (path, headers, body) as the body, like a chatty error page.
    echo: bool,
    requests: Arc<Mutex<Vec<CapturedRequest>>>,
    // The number of requests so far, so waiters wake on each new one.
    count: watch::Sender<usize>,
}

/// A recording HTTP listener; stops when dropped.
pub struct CaptureServer {
    url: String,
    shared: Shared,
    _shutdown: oneshot::Sender<()>,
}

impl CaptureServer {
    /// A listener that answers `200 OK` to everything.
    pub async fn start() -> Self {
        Self::answering(StatusCode::OK).await
    }

    /// A listener that answers every request with `status` and an empty body.
    pub async fn answering(status: StatusCode) -> Self {
        Self::serve(status, false).await
    }

    /// A listener that answers every request with `status` and a body quoting the request's
    /// path, headers and body, as debugging error pages and reflecting proxies do.
    pub async fn echoing(status: StatusCode) -> Self {
        Self::serve(status, true).await
    }

    /// A listener on `listener` (say, the port of a receiver that was stopped) that answers
    /// every request with `status`.
    pub async fn answering_on(listener: TcpListener, status: StatusCode) -> Self {
        Self::serve_on(listener, status, false).await
    }

    async fn serve(status: StatusCode, echo: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        Self::serve_on(listener, status, echo).await
    }

    async fn serve_on(listener: TcpListener, status: StatusCode, echo: bool) -> Self {
        let url = format!("http://{}", listener.local_addr().expect("local address"));
        let shared = Shared {
            status,
            echo,
            requests: Arc::default(),
            count: watch::channel(0).0,
        };
        let app = Router::new().fallback(record).with_state(shared.clone());
        let (shutdown, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
                .expect("capture server runs");
        });
        CaptureServer {
            url,
            shared,
            _shutdown: shutdown,
        }
    }

    /// Base URL, e.g. `http://127.0.0.1:41234`; any path under it is recorded.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Every request so far, oldest first.
    pub fn requests(&self) -> Vec<CapturedRequest> {
        self.shared.requests.lock().expect("capture lock").clone()
    }

    /// The first request so far that `matches`, waiting for it up to `limit`; panics with every
    /// request seen when none arrives.
    pub async fn wait_for(
        &self,
        limit: Duration,
        matches: impl Fn(&CapturedRequest) -> bool,
    ) -> CapturedRequest {
        self.wait_for_many(limit, 1, matches).await.remove(0)
    }

    /// The first `count` requests that `matches`, waiting for them up to `limit`; panics with
    /// every request seen when fewer arrive.
    pub async fn wait_for_many(
        &self,
        limit: Duration,
        count: usize,
        matches: impl Fn(&CapturedRequest) -> bool,
    ) -> Vec<CapturedRequest> {
        let mut arrivals = self.shared.count.subscribe();
        let found = tokio::time::timeout(limit, async {
            loop {
                let matching: Vec<CapturedRequest> =
                    self.requests().into_iter().filter(|r| matches(r)).collect();
                if matching.len() >= count {
                    return matching.into_iter().take(count).collect();
                }
                arrivals.changed().await.expect("capture server alive");
            }
        })
        .await;
        found.unwrap_or_else(|_| {
            let seen: Vec<String> = self
                .requests()
                .iter()
                .map(|r| {
                    format!(
                        "{} {} {}",
                        r.method,
                        r.path,
                        String::from_utf8_lossy(&r.body)
                    )
                })
                .collect();
            panic!("fewer than {count} matching requests within {limit:?}; received: {seen:#?}")
        })
    }
}

async fn record(
    State(shared): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let echoed = if shared.echo {
        format!("{uri}\n{headers:?}\n{}", String::from_utf8_lossy(&body))
    } else {
        String::new()
    };
    let path = uri
        .path_and_query()
        .map_or_else(|| uri.path().to_owned(), |pq| pq.as_str().to_owned());
    let total = {
        let mut requests = shared.requests.lock().expect("capture lock");
        requests.push(CapturedRequest {
            method,
            path,
            headers,
            body,
        });
        requests.len()
    };
    shared.count.send_replace(total);
    (shared.status, echoed)
}
