//! The `deliveries list|show|replay` subcommand: a client of the admin port's delivery API and
//! the plain-text table it prints.

use std::fmt::Write as _;

use serde::de::DeserializeOwned;

use crate::admin_api::{ReplayDead, ReplayOne, Replayed};
use crate::http::AdminToken;
use crate::queue::{DeliveryDetail, DeliveryState, DeliverySummary};

/// Why a `deliveries` command failed. Each variant names the step.
#[derive(Debug, thiserror::Error)]
pub enum DeliveriesError {
    /// The HTTP client could not be built.
    #[error("setting up the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    /// `--admin-url` does not make a valid URL.
    #[error("{url} is not a valid URL: {message}")]
    Url {
        /// The URL.
        url: String,
        /// Why.
        message: String,
    },
    /// The admin port could not be reached or answered garbage.
    #[error("calling {url}: {source}")]
    Call {
        /// The URL.
        url: String,
        /// The transport or decoding error.
        #[source]
        source: reqwest::Error,
    },
    /// The admin port refused the request; `message` is its explanation.
    #[error("{url} answered {status}: {message}")]
    Refused {
        /// The URL.
        url: String,
        /// The status.
        status: reqwest::StatusCode,
        /// The receiver's error message.
        message: String,
    },
}

/// A client of the receiver's admin port.
#[derive(Clone, Debug)]
pub struct AdminClient {
    http: reqwest::Client,
    base: String,
}

/// Which deliveries `list` shows.
#[derive(Clone, Debug, Default)]
pub struct ListQuery {
    /// Only this state.
    pub state: Option<DeliveryState>,
    /// Only this webhook (`namespace/name`).
    pub webhook: Option<String>,
    /// Only sinks of this name.
    pub sink: Option<String>,
    /// Only this event's deliveries.
    pub event: Option<String>,
    /// At most this many.
    pub limit: Option<u32>,
}

impl AdminClient {
    /// A client of the admin port at `base`, e.g. `http://127.0.0.1:9091`, sending `token`.
    pub fn new(base: &str, token: &AdminToken) -> Result<Self, DeliveriesError> {
        let http = crate::http::client_builder()
            .default_headers(token.authorization())
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .map_err(DeliveriesError::Client)?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
        })
    }

    /// `GET /v1/deliveries`.
    pub async fn list(&self, query: &ListQuery) -> Result<Vec<DeliverySummary>, DeliveriesError> {
        let mut params = Vec::new();
        if let Some(state) = query.state {
            params.push(("state", state.as_str().to_owned()));
        }
        for (name, value) in [
            ("webhook", &query.webhook),
            ("sink", &query.sink),
            ("event", &query.event),
        ] {
            if let Some(value) = value {
                params.push((name, value.clone()));
            }
        }
        if let Some(limit) = query.limit {
            params.push(("limit", limit.to_string()));
        }
        let url = self.url("/v1/deliveries", &params)?;
        self.call(self.http.get(url.clone()), url.as_str()).await
    }

    /// `GET /v1/deliveries/{id}`.
    pub async fn show(&self, id: &str) -> Result<DeliveryDetail, DeliveriesError> {
        let url = format!("{}/v1/deliveries/{id}", self.base);
        self.call(self.http.get(&url), &url).await
    }

    /// `POST /v1/deliveries/{id}/replay`: re-queues one dead or delivered delivery.
    pub async fn replay(&self, id: &str) -> Result<Replayed, DeliveriesError> {
        let url = format!("{}/v1/deliveries/{id}/replay", self.base);
        self.call(self.http.post(&url).json(&ReplayOne {}), &url)
            .await
    }

    /// `POST /v1/deliveries/replay`: re-queues every dead letter, optionally of one webhook
    /// and/or sink name.
    pub async fn replay_dead(
        &self,
        webhook: Option<&str>,
        sink: Option<&str>,
    ) -> Result<Replayed, DeliveriesError> {
        let url = format!("{}/v1/deliveries/replay", self.base);
        let body = ReplayDead {
            webhook: webhook.map(str::to_owned),
            sink: sink.map(str::to_owned),
        };
        self.call(self.http.post(&url).json(&body), &url).await
    }

    fn url(&self, path: &str, params: &[(&str, String)]) -> Result<reqwest::Url, DeliveriesError> {
        let url = format!("{}{path}", self.base);
        reqwest::Url::parse_with_params(&url, params).map_err(|error| DeliveriesError::Url {
            url,
            message: error.to_string(),
        })
    }

    async fn call<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
        url: &str,
    ) -> Result<T, DeliveriesError> {
        let failed = |source| DeliveriesError::Call {
            url: url.to_owned(),
            source,
        };
        let response = request.send().await.map_err(failed)?;
        let status = response.status();
        if !status.is_success() {
            let body: serde_json::Value = response.json().await.unwrap_or_default();
            let message = body["error"]
                .as_str()
                .unwrap_or("no explanation")
                .to_owned();
            return Err(DeliveriesError::Refused {
                url: url.to_owned(),
                status,
                message,
            });
        }
        response.json().await.map_err(failed)
    }
}

/// The deliveries as a table, one per line, newest first.
pub fn table(deliveries: &[DeliverySummary]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<36}  {:<9}  {:>8}  {:<28}  {:<16}  {:<18}  {:<9}  LAST ERROR",
        "ID", "STATE", "ATTEMPTS", "WEBHOOK/SINK", "ROUTE", "EVENT", "ORIGIN"
    );
    for delivery in deliveries {
        let _ = writeln!(
            out,
            "{:<36}  {:<9}  {:>8}  {:<28}  {:<16}  {:<18}  {:<9}  {}",
            delivery.id,
            delivery.state,
            delivery.attempts,
            format!("{}/{}", delivery.webhook, delivery.sink),
            delivery.route,
            delivery.event,
            // Strapi sent it, or the gap repair rebuilt it because Strapi's call was lost.
            if delivery.recovered {
                "recovered"
            } else {
                "strapi"
            },
            delivery.last_error.as_deref().unwrap_or("-"),
        );
    }
    out
}
