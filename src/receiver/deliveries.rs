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
    /// No connection could be made to the admin port: nothing listens there.
    #[error(
        "nothing answers at {base} ({cause}); is the receiver (or `local`) running? Point at its \
         admin port with --admin-url or RECEIVER_ADMIN_URL"
    )]
    Unreachable {
        /// The admin URL.
        base: String,
        /// The innermost cause, e.g. "Connection refused (os error 111)".
        cause: String,
    },
    /// The admin port answered garbage, or the call broke off.
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
        let response = request.send().await.map_err(|source| {
            if source.is_connect() {
                DeliveriesError::Unreachable {
                    base: self.base.clone(),
                    cause: crate::http::innermost_cause(&source),
                }
            } else {
                failed(source)
            }
        })?;
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

/// The deliveries as a table, one per line, newest first. Each column is as wide as its widest
/// value, so a long `webhook/sink` never shifts the columns after it; headers are one word each,
/// so none reads as two columns.
pub fn table(deliveries: &[DeliverySummary]) -> String {
    const HEADERS: [&str; 8] = [
        "ID",
        "STATE",
        "ATTEMPTS",
        "WEBHOOK/SINK",
        "ROUTE",
        "EVENT",
        "ORIGIN",
        "LAST-ERROR",
    ];
    let rows: Vec<[String; 8]> = deliveries
        .iter()
        .map(|delivery| {
            [
                delivery.id.clone(),
                delivery.state.to_string(),
                delivery.attempts.to_string(),
                format!("{}/{}", delivery.webhook, delivery.sink),
                delivery.route.clone(),
                delivery.event.clone(),
                // Strapi sent it, or the gap repair rebuilt it because Strapi's call was lost.
                if delivery.recovered {
                    "recovered"
                } else {
                    "strapi"
                }
                .to_owned(),
                delivery
                    .last_error
                    .clone()
                    .unwrap_or_else(|| "-".to_owned()),
            ]
        })
        .collect();
    let mut widths = HEADERS.map(|header| header.chars().count());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: [&str; 8]| {
        let mut text = String::new();
        for (column, (cell, width)) in cells.iter().zip(widths).enumerate() {
            match column {
                0 => {}
                _ => text.push_str("  "),
            }
            // Counts right-aligned; the last column unpadded, so no line ends in spaces.
            let _ = match column {
                2 => write!(text, "{cell:>width$}"),
                7 => write!(text, "{cell}"),
                _ => write!(text, "{cell:<width$}"),
            };
        }
        let _ = writeln!(out, "{text}");
    };
    line(HEADERS);
    for row in &rows {
        line(row.each_ref().map(String::as_str));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(webhook: &str, sink: &str, error: Option<&str>) -> DeliverySummary {
        DeliverySummary {
            id: "0193a0c4-0000-7000-8000-000000000001".into(),
            event_id: "0193a0c4-0000-7000-8000-000000000000".into(),
            instance: "web/cms".into(),
            event: "entry.publish".into(),
            webhook: webhook.into(),
            route: "pages".into(),
            sink: sink.into(),
            state: DeliveryState::Delivered,
            attempts: 3,
            enqueued_at: 0,
            next_attempt_at: None,
            delivered_at: None,
            last_error: error.map(str::to_owned),
            recovered: false,
        }
    }

    #[test]
    fn long_names_widen_their_column_instead_of_shifting_the_row() {
        let text = table(&[
            delivery(
                "web/nextjs-revalidation",
                "website",
                Some("503 Service Unavailable"),
            ),
            delivery("web/crm", "crm", None),
        ]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        // Every column starts at the same offset on every line.
        for header in ["STATE", "ROUTE", "EVENT", "ORIGIN", "LAST-ERROR"] {
            let at = lines[0].find(header).unwrap();
            for line in &lines[1..] {
                assert_eq!(
                    line.as_bytes()[at - 2..at],
                    *b"  ",
                    "column {header} is not aligned:\n{text}"
                );
                assert_ne!(line.as_bytes()[at], b' ', "{header}:\n{text}");
            }
        }
        assert!(
            lines[1].contains("web/nextjs-revalidation/website  pages"),
            "{text}"
        );
        assert!(lines[1].ends_with("503 Service Unavailable"), "{text}");
        assert!(lines[2].ends_with('-'), "{text}");
        assert_eq!(
            lines[0].split_whitespace().count(),
            8,
            "one word per header"
        );
    }
}
