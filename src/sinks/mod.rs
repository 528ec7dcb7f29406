//! Sinks: the HTTP contracts of Next.js revalidation handlers, Slack incoming webhooks and
//! generic HTTP endpoints. [`SinkClient::send`] turns rendered [`Payload`]s into one request and
//! the answer into an [`Outcome`]; when and how often to call it (retries, rate limits,
//! coalescing windows) is the delivery engine's job, steered by each sink's [`DeliveryPolicy`].
//! No Kubernetes types here: [`crate::config`] resolves Secrets and builds these.

mod client;
mod contract;
mod egress;

use std::{fmt, time::Duration};

pub use client::{SinkClient, SinkClientError, preview};
pub use contract::Outcome;
pub use egress::{EgressBase, EgressPolicy, EgressRules};
pub use reqwest::{
    Method, Url,
    header::{HeaderName, HeaderValue},
};

pub use crate::routing::Payload;

/// The kinds of sink; each has its own answer contract and default [`DeliveryPolicy`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SinkKind {
    /// A Next.js revalidation route handler.
    Nextjs,
    /// A Slack incoming webhook.
    Slack,
    /// Any HTTP endpoint.
    Http,
}

/// A resolved sink: URLs parsed, Secrets read, signing keys decoded.
#[derive(Clone, Debug)]
pub enum SinkConfig {
    /// A Next.js app.
    Nextjs(NextjsSink),
    /// A Slack incoming webhook.
    Slack(SlackSink),
    /// A generic HTTP endpoint.
    Http(HttpSink),
}

impl SinkConfig {
    /// The sink's kind.
    pub fn kind(&self) -> SinkKind {
        match self {
            SinkConfig::Nextjs(_) => SinkKind::Nextjs,
            SinkConfig::Slack(_) => SinkKind::Slack,
            SinkConfig::Http(_) => SinkKind::Http,
        }
    }

    /// The URL requests go to.
    pub fn url(&self) -> &Url {
        match self {
            SinkConfig::Nextjs(sink) => &sink.url,
            SinkConfig::Slack(sink) => &sink.webhook_url,
            SinkConfig::Http(sink) => &sink.url,
        }
    }

    /// The window within which the engine should hand this sink's ready deliveries to one
    /// [`SinkClient::send`] call; `None` when the sink takes one delivery per call.
    pub fn coalesce_window(&self) -> Option<Duration> {
        match self {
            SinkConfig::Nextjs(NextjsSink {
                mode: NextjsMode::Revalidate,
                coalesce_window,
                ..
            }) => Some(*coalesce_window),
            _ => None,
        }
    }
}

/// A Next.js revalidation handler.
#[derive(Clone, Debug)]
pub struct NextjsSink {
    /// The handler's URL.
    pub url: Url,
    /// The header carrying the shared secret the handler checks, if any.
    pub secret: Option<(HeaderName, HeaderValue)>,
    /// What is sent.
    pub mode: NextjsMode,
    /// See [`SinkConfig::coalesce_window`].
    pub coalesce_window: Duration,
}

/// What a Next.js sink receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NextjsMode {
    /// Strapi's payload unchanged.
    Forward,
    /// `{"tags": [...], "paths": [{"path", "type"}]}`.
    Revalidate,
}

/// A Slack incoming webhook. The URL is the credential, so `Debug` shows only its host.
#[derive(Clone)]
pub struct SlackSink {
    /// `https://hooks.slack.com/services/...`.
    pub webhook_url: Url,
}

impl fmt::Debug for SlackSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlackSink")
            .field("host", &self.webhook_url.host_str())
            .finish_non_exhaustive()
    }
}

/// A generic HTTP endpoint.
#[derive(Clone, Debug)]
pub struct HttpSink {
    /// The URL.
    pub url: Url,
    /// POST, PUT or PATCH.
    pub method: Method,
    /// Extra headers; values from Secrets are marked sensitive so `Debug` hides them.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Standard Webhooks signing keys; each signs every request (several during rotation).
    pub signing: Vec<SigningKey>,
}

/// A Standard Webhooks signing secret (`whsec_` + base64), decoded once.
#[derive(Clone)]
pub struct SigningKey(std::sync::Arc<standardwebhooks::Webhook>);

/// A signing secret that is not `whsec_` + base64.
#[derive(Debug, thiserror::Error)]
#[error("signing secret is not in Standard Webhooks form (whsec_ + base64): {0}")]
pub struct SigningKeyError(#[source] standardwebhooks::WebhookError);

impl SigningKey {
    /// Decodes one secret.
    pub fn parse(secret: &str) -> Result<Self, SigningKeyError> {
        if !secret.starts_with("whsec_") {
            return Err(SigningKeyError(
                standardwebhooks::WebhookError::InvalidHeader("whsec_ prefix"),
            ));
        }
        standardwebhooks::Webhook::new(secret)
            .map(|key| Self(std::sync::Arc::new(key)))
            .map_err(SigningKeyError)
    }

    /// Decodes a Secret value holding several secrets separated by whitespace (rotation).
    pub fn parse_all(secrets: &str) -> Result<Vec<Self>, SigningKeyError> {
        secrets.split_whitespace().map(Self::parse).collect()
    }

    pub(crate) fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> Result<String, String> {
        self.0
            .sign(id, timestamp, body)
            .map_err(|error| error.to_string())
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKey(<redacted>)")
    }
}

/// How a sink's deliveries are timed out, retried and paced. The engine applies it; the
/// defaults per kind come from [`DeliveryPolicy::defaults`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryPolicy {
    /// Timeout of one attempt.
    pub timeout: Duration,
    /// Attempts before a delivery is dead-lettered.
    pub max_attempts: u32,
    /// Age after which a still-failing delivery is dead-lettered.
    pub max_age: Duration,
    /// Delay before the first retry; doubles per attempt, with jitter.
    pub backoff_initial: Duration,
    /// Upper bound of the delay.
    pub backoff_max: Duration,
    /// Sustained requests per second.
    pub rate_per_second: u32,
    /// Requests allowed at once above the sustained rate.
    pub burst: u32,
    /// Requests in flight at once.
    pub concurrency: u32,
    /// Where the sink may connect, as its `StrapiInstance` allows (see [`EgressRules`]).
    pub egress: EgressRules,
}

impl DeliveryPolicy {
    /// The defaults for a kind of sink.
    ///
    /// Slack allows about one message per second per incoming webhook and answers bursts with
    /// 429, so Slack sinks go one at a time with a small burst. A Next.js handler is cheap per
    /// call, and coalescing already merges bursts. Generic endpoints (CRMs, ERPs) often
    /// enforce their own limits, so they get a moderate rate and a day to recover.
    pub fn defaults(kind: SinkKind) -> Self {
        let minutes = |m: u64| Duration::from_secs(60 * m);
        match kind {
            SinkKind::Nextjs => Self {
                timeout: Duration::from_secs(10),
                max_attempts: 10,
                max_age: minutes(60),
                backoff_initial: Duration::from_millis(500),
                backoff_max: minutes(2),
                rate_per_second: 10,
                burst: 20,
                concurrency: 4,
                egress: EgressRules::default(),
            },
            SinkKind::Slack => Self {
                timeout: Duration::from_secs(10),
                max_attempts: 8,
                max_age: minutes(60),
                backoff_initial: Duration::from_secs(1),
                backoff_max: minutes(5),
                rate_per_second: 1,
                burst: 3,
                concurrency: 1,
                egress: EgressRules::default(),
            },
            SinkKind::Http => Self {
                timeout: Duration::from_secs(15),
                max_attempts: 15,
                max_age: minutes(24 * 60),
                backoff_initial: Duration::from_secs(1),
                backoff_max: minutes(10),
                rate_per_second: 20,
                burst: 40,
                concurrency: 8,
                egress: EgressRules::default(),
            },
        }
    }
}
