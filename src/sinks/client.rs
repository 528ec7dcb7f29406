//! The shared HTTP client and the requests it builds for each kind of sink.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use reqwest::{RequestBuilder, header};
use serde::Serialize;

use super::{
    DeliveryPolicy, EgressBase, EgressPolicy, EgressRules, HttpSink, NextjsMode, NextjsSink,
    Payload, SinkConfig, SlackSink,
    contract::{Answer, Outcome, classify},
    egress::PolicyResolver,
};
use crate::routing::RevalidatePath;

/// The stable delivery id header (Standard Webhooks name), sent to every sink so it can
/// deduplicate: delivery is at least once.
pub const WEBHOOK_ID_HEADER: &str = "webhook-id";

// Only the start of an answer decides the outcome; a sink streaming megabytes must not.
const MAX_ANSWER_BYTES: usize = 16 * 1024;

/// Sends payloads to sinks over pooled `reqwest::Client`s, one per distinct egress policy (a
/// client's resolver enforces one policy). Cheap to clone.
#[derive(Clone, Debug)]
pub struct SinkClient {
    base: EgressBase,
    clients: Arc<Mutex<HashMap<EgressRules, reqwest::Client>>>,
}

// Policies come from StrapiInstances; past this many, clients of removed policies are dropped.
const MAX_CLIENTS: usize = 64;

/// The client could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SinkClientError {
    /// reqwest refused the configuration (e.g. no TLS backend).
    #[error("building the sink HTTP client failed: {0}")]
    Build(#[source] reqwest::Error),
}

impl SinkClient {
    /// A client holding every sink to `base` plus its instance's rules. Checks that a client
    /// can be built, so a broken TLS setup fails at start rather than at the first delivery.
    pub fn new(base: EgressBase) -> Result<Self, SinkClientError> {
        let client = Self {
            base,
            clients: Arc::default(),
        };
        client.http(&EgressRules::default())?;
        Ok(client)
    }

    // Redirects are not followed: a redirected POST loses its body, and a redirect would be a
    // connection the URL check never saw. No proxy from HTTP(S)_PROXY either: through a proxy,
    // the address connected to is the proxy's and the policy could not see the sink's.
    fn http(&self, rules: &EgressRules) -> Result<reqwest::Client, SinkClientError> {
        let mut clients = self
            .clients
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if let Some(client) = clients.get(rules) {
            return Ok(client.clone());
        }
        let policy = Arc::new(self.policy(rules));
        let client = crate::http::client_builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(Arc::new(PolicyResolver { policy }))
            .build()
            .map_err(SinkClientError::Build)?;
        if clients.len() >= MAX_CLIENTS {
            clients.clear();
        }
        clients.insert(rules.clone(), client.clone());
        Ok(client)
    }

    /// The whole policy a sink with these instance rules is held to.
    pub fn policy(&self, rules: &EgressRules) -> EgressPolicy {
        EgressPolicy {
            base: self.base.clone(),
            rules: rules.clone(),
        }
    }

    /// Makes one attempt to deliver `payloads` to `sink` and says what to do next.
    ///
    /// `payloads` holds exactly one payload, except for a sink with a
    /// [`coalesce_window`](SinkConfig::coalesce_window): there the revalidations are merged into
    /// one call with the union of their tags and paths. `delivery_id` goes out as `webhook-id`
    /// (for a merged call, pass the id of the first delivery). A payload that does not fit the
    /// sink is dead-lettered, never sent.
    pub async fn send(
        &self,
        sink: &SinkConfig,
        policy: &DeliveryPolicy,
        delivery_id: &str,
        payloads: &[Payload],
    ) -> Outcome {
        self.send_marked(sink, policy, delivery_id, payloads, &[])
            .await
    }

    /// [`SinkClient::send`] with extra headers on the request, e.g. the mark of a recovered
    /// event or the attempt's `traceparent`.
    pub async fn send_marked(
        &self,
        sink: &SinkConfig,
        policy: &DeliveryPolicy,
        delivery_id: &str,
        payloads: &[Payload],
        marks: &[(&'static str, &str)],
    ) -> Outcome {
        for payload in payloads {
            // The delivery still goes out; the log (inside the engine's delivery span) is where
            // an operator finds why a page was not revalidated, e.g. strapi/strapi#25387.
            if let Payload::Revalidate { skipped, .. } = payload
                && !skipped.is_empty()
            {
                tracing::info!(?skipped, "revalidating without some tags or paths");
            }
        }
        if let Err(why) = self.policy(&policy.egress).check_url(sink.url()) {
            return Outcome::DeadLetter {
                reason: format!("the egress policy refuses this sink: {why}"),
            };
        }
        let http = match self.http(&policy.egress) {
            Ok(http) => http,
            Err(error) => {
                return Outcome::Retry {
                    reason: error.to_string(),
                    retry_after: None,
                };
            }
        };
        let request = match request(&http, sink, delivery_id, payloads) {
            Ok(request) => marks
                .iter()
                .fold(request, |request, (name, value)| {
                    request.header(*name, *value)
                })
                .header(WEBHOOK_ID_HEADER, delivery_id)
                .timeout(policy.timeout),
            Err(reason) => return Outcome::DeadLetter { reason },
        };
        match request.send().await {
            Ok(response) => classify(sink.kind(), &read_answer(response).await),
            Err(error) => transport_failure(error, policy.timeout),
        }
    }
}

/// The request `sink` would receive for `payloads`, built as a delivery builds it but not sent
/// (`render` shows it). Signature headers are computed with the sink's keys.
pub fn preview(
    sink: &SinkConfig,
    delivery_id: &str,
    payloads: &[Payload],
) -> Result<reqwest::Request, String> {
    let http = crate::http::client_builder()
        .build()
        .map_err(crate::http::describe_error)?;
    request(&http, sink, delivery_id, payloads)?
        .header(WEBHOOK_ID_HEADER, delivery_id)
        .build()
        .map_err(crate::http::describe_error)
}

fn request(
    http: &reqwest::Client,
    sink: &SinkConfig,
    delivery_id: &str,
    payloads: &[Payload],
) -> Result<RequestBuilder, String> {
    match sink {
        SinkConfig::Nextjs(sink) => nextjs_request(http, sink, payloads),
        SinkConfig::Slack(sink) => slack_request(http, sink, payloads),
        SinkConfig::Http(sink) => http_request(http, sink, delivery_id, payloads),
    }
}

fn nextjs_request(
    http: &reqwest::Client,
    sink: &NextjsSink,
    payloads: &[Payload],
) -> Result<RequestBuilder, String> {
    let body = match sink.mode {
        NextjsMode::Forward => match single(payloads)? {
            Payload::Forward(raw) => raw.clone(),
            other => return Err(mismatch("a Next.js sink in Forward mode", other)),
        },
        NextjsMode::Revalidate => merge_revalidations(payloads)?,
    };
    let request = json_post(http.post(sink.url.clone()), body);
    Ok(match &sink.secret {
        Some((name, value)) => request.header(name, value),
        None => request,
    })
}

fn slack_request(
    http: &reqwest::Client,
    sink: &SlackSink,
    payloads: &[Payload],
) -> Result<RequestBuilder, String> {
    let Payload::Slack { text, blocks } = single(payloads)? else {
        return Err(mismatch("a Slack sink", single(payloads)?));
    };
    #[derive(Serialize)]
    struct Message<'a> {
        text: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        blocks: Option<&'a serde_json::Value>,
    }
    let body = serde_json::to_vec(&Message {
        text,
        blocks: blocks.as_ref(),
    })
    .map_err(|error| format!("encoding the Slack message failed: {error}"))?;
    Ok(json_post(http.post(sink.webhook_url.clone()), body))
}

fn http_request(
    http: &reqwest::Client,
    sink: &HttpSink,
    delivery_id: &str,
    payloads: &[Payload],
) -> Result<RequestBuilder, String> {
    let Payload::Http { body } = single(payloads)? else {
        return Err(mismatch("an HTTP sink", single(payloads)?));
    };
    let mut request = http.request(sink.method.clone(), sink.url.clone());
    for (name, value) in &sink.headers {
        request = request.header(name, value);
    }
    if !sink.signing.is_empty() {
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_secs())
            .try_into()
            .unwrap_or(i64::MAX);
        let signatures = sink
            .signing
            .iter()
            .map(|key| key.sign(delivery_id, timestamp, body))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| format!("signing the request failed: {error}"))?;
        request = request
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signatures.join(" "));
    }
    Ok(json_post(request, body.clone()))
}

fn json_post(request: RequestBuilder, body: Vec<u8>) -> RequestBuilder {
    request
        .header(header::CONTENT_TYPE, "application/json")
        .body(body)
}

fn single(payloads: &[Payload]) -> Result<&Payload, String> {
    match payloads {
        [payload] => Ok(payload),
        _ => Err(format!(
            "{} payloads handed to a sink that takes one per call (only Next.js Revalidate sinks coalesce)",
            payloads.len()
        )),
    }
}

fn mismatch(sink: &str, payload: &Payload) -> String {
    let kind = match payload {
        Payload::Forward(_) => "a forwarded Strapi payload",
        Payload::Revalidate { .. } => "a revalidation",
        Payload::Slack { .. } => "a Slack message",
        Payload::Http { .. } => "an HTTP body",
    };
    format!("{kind} cannot be sent to {sink}; the route and sink kinds disagree")
}

/// The body Next.js handlers in `Revalidate` mode receive: the union of every payload's tags
/// and paths, each once, in first-seen order.
pub(crate) fn merge_revalidations(payloads: &[Payload]) -> Result<Vec<u8>, String> {
    #[derive(Serialize, Default)]
    struct Body<'a> {
        tags: Vec<&'a str>,
        paths: Vec<&'a RevalidatePath>,
    }
    if payloads.is_empty() {
        return Err("no revalidation to send".to_owned());
    }
    let mut merged = Body::default();
    for payload in payloads {
        let Payload::Revalidate { tags, paths, .. } = payload else {
            return Err(mismatch("a Next.js sink in Revalidate mode", payload));
        };
        for tag in tags {
            if !merged.tags.contains(&tag.as_str()) {
                merged.tags.push(tag);
            }
        }
        for path in paths {
            if !merged.paths.contains(&path) {
                merged.paths.push(path);
            }
        }
    }
    serde_json::to_vec(&merged)
        .map_err(|error| format!("encoding the revalidation failed: {error}"))
}

async fn read_answer(mut response: reqwest::Response) -> Answer {
    let status = response.status();
    let headers = response.headers().clone();
    let mut body = Vec::new();
    // A body that breaks off midway still has a status worth classifying, so read errors end
    // the read instead of failing the attempt.
    while body.len() < MAX_ANSWER_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    body.truncate(MAX_ANSWER_BYTES);
    Answer::from_headers(
        status,
        &headers,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

fn transport_failure(error: reqwest::Error, timeout: Duration) -> Outcome {
    if error.is_builder() {
        return Outcome::DeadLetter {
            reason: format!(
                "the request could not be built: {}",
                crate::http::describe_error(error)
            ),
        };
    }
    let reason = if error.is_timeout() {
        format!("no answer within {timeout:?}")
    } else if error.is_connect() {
        format!("could not connect: {}", crate::http::describe_error(error))
    } else {
        format!("the request failed: {}", crate::http::describe_error(error))
    };
    Outcome::Retry {
        reason,
        retry_after: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::PathKind;

    // A path ending in `/` is revalidated as a layout, to see both shapes in one body.
    fn revalidate(tags: &[&str], paths: &[&str]) -> Payload {
        Payload::Revalidate {
            tags: tags.iter().map(|tag| tag.to_string()).collect(),
            paths: paths
                .iter()
                .map(|path| RevalidatePath {
                    path: path.to_string(),
                    kind: path.ends_with('/').then_some(PathKind::Layout),
                })
                .collect(),
            skipped: Vec::new(),
        }
    }

    #[test]
    fn merge_is_the_ordered_union() {
        let body = merge_revalidations(&[
            revalidate(&["article"], &["/articles/a"]),
            revalidate(&["article", "home"], &["/articles/b", "/articles/a", "/"]),
        ])
        .unwrap();
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&body).unwrap(),
            serde_json::json!({
                "tags": ["article", "home"],
                "paths": [
                    {"path": "/articles/a"},
                    {"path": "/articles/b"},
                    {"path": "/", "type": "layout"}
                ]
            })
        );
    }

    #[test]
    fn merge_refuses_other_payloads_and_nothing() {
        assert!(merge_revalidations(&[]).is_err());
        let error =
            merge_revalidations(&[revalidate(&["a"], &[]), Payload::Forward(b"{}".to_vec())])
                .unwrap_err();
        assert!(error.contains("forwarded Strapi payload"), "{error}");
    }
}
