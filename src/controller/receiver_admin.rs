//! The controller's view of the receiver: its admin HTTP API, the only channel between the two
//! besides the custom resources. The controller asks it whether Strapi's `trigger-test` arrived
//! (verification), for delivery counters (status), and which generation of each resource a
//! replica routes with (`Routed`).

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use crate::{
    admin_api::{Handshake, Routing, Stats},
    http::AdminToken,
    key::ObjectKey,
};

/// Why the receiver's admin API could not answer.
#[derive(Debug, thiserror::Error)]
pub enum ReceiverError {
    /// The receiver could not be reached.
    #[error("{url} is unreachable: {source}")]
    Unreachable {
        /// The URL called.
        url: String,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
    /// The receiver's admin URL is not a URL.
    #[error("{url} is not a valid URL")]
    BadUrl {
        /// The base URL.
        url: String,
    },
    /// The receiver answered something else than expected.
    #[error("{url} answered {status}")]
    Unexpected {
        /// The URL called.
        url: String,
        /// The HTTP status.
        status: reqwest::StatusCode,
    },
}

impl ReceiverError {
    /// A bounded label for conditions and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            ReceiverError::Unreachable { .. } => "ReceiverUnreachable",
            ReceiverError::Unexpected { .. } | ReceiverError::BadUrl { .. } => "ReceiverError",
        }
    }
}

/// A client for the receiver's admin API.
#[derive(Clone, Debug)]
pub struct ReceiverAdmin {
    http: reqwest::Client,
    base: String,
}

impl ReceiverAdmin {
    /// A client for the admin API at `base`, e.g. `http://receiver:9091`, authenticated with
    /// `token` (the receiver refuses the API without one).
    pub fn new(base: &str, token: Option<&AdminToken>) -> Self {
        let http = crate::http::client_builder()
            .default_headers(token.map(AdminToken::authorization).unwrap_or_default())
            .timeout(Duration::from_secs(5))
            .build()
            .expect("the HTTP client builds once the crypto provider is installed");
        ReceiverAdmin {
            http,
            base: base.trim_end_matches('/').to_owned(),
        }
    }

    /// A client for another replica's admin API at `base`, sharing this client's connections.
    pub fn at(&self, base: &str) -> Self {
        ReceiverAdmin {
            http: self.http.clone(),
            base: base.trim_end_matches('/').to_owned(),
        }
    }

    /// The base URL this client calls.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// What this replica routes with; `query` may ask it to wait until it routes given
    /// generations (see the receiver's `GET /v1/routing`).
    pub async fn routing(&self, query: &[(&str, String)]) -> Result<Routing, ReceiverError> {
        let mut url = reqwest::Url::parse(&format!("{}/v1/routing", self.base)).map_err(|_| {
            ReceiverError::BadUrl {
                url: self.base.clone(),
            }
        })?;
        url.query_pairs_mut().extend_pairs(query);
        self.get(url.as_str()).await
    }

    /// The handshakes recorded for the instance `namespace/name`.
    pub async fn handshake(&self, instance: &ObjectKey) -> Result<Handshake, ReceiverError> {
        self.get(&format!("{}/v1/instances/{instance}/handshake", self.base))
            .await
    }

    /// Delivery counters of every webhook's sinks, by webhook `namespace/name`.
    pub async fn stats(&self) -> Result<Stats, ReceiverError> {
        self.get(&format!("{}/v1/stats", self.base)).await
    }

    async fn get<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, ReceiverError> {
        let unreachable = |source| ReceiverError::Unreachable {
            url: url.to_owned(),
            source,
        };
        let response = self.http.get(url).send().await.map_err(unreachable)?;
        if !response.status().is_success() {
            return Err(ReceiverError::Unexpected {
                url: url.to_owned(),
                status: response.status(),
            });
        }
        response.json().await.map_err(unreachable)
    }
}

/// How long the receiver's delivery counters are reused: one request serves every webhook.
const STATS_TTL: Duration = Duration::from_secs(10);

/// The receiver's delivery counters, fetched at most every [`STATS_TTL`].
#[derive(Default)]
pub struct StatsCache {
    last: Mutex<Option<(Instant, Arc<Stats>)>>,
}

impl StatsCache {
    /// The counters from `receiver`, or the ones fetched less than ten seconds ago.
    pub async fn get(&self, receiver: &ReceiverAdmin) -> Result<Arc<Stats>, ReceiverError> {
        if let Some((fetched, stats)) = self.last.lock().expect("stats cache lock").as_ref()
            && fetched.elapsed() < STATS_TTL
        {
            return Ok(stats.clone());
        }
        let stats = Arc::new(receiver.stats().await?);
        *self.last.lock().expect("stats cache lock") = Some((Instant::now(), stats.clone()));
        Ok(stats)
    }
}
