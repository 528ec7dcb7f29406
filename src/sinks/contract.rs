//! How each kind of sink answers, and what that means for the delivery. The generic rule (2xx
//! done; 408, 429 and 5xx retry; other statuses dead-letter) is refined by Next.js
//! (`revalidated` must be true) and Slack (error codes in the body say whether the message or
//! the webhook itself is at fault).

use std::time::Duration;

use reqwest::{StatusCode, header};

use super::SinkKind;
// An unreadable `Retry-After` is ignored, so the engine's backoff applies.
use crate::http::parse_retry_after;

/// What the engine should do with a delivery after one attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The sink took it.
    Delivered,
    /// Try again later; the sink asked to wait `retry_after` when it is set.
    Retry {
        /// The failure, as the sink or the network reported it.
        reason: String,
        /// The sink's `Retry-After`, which overrides the backoff.
        retry_after: Option<Duration>,
    },
    /// Give up: retrying cannot help (the request itself is wrong).
    DeadLetter {
        /// Why.
        reason: String,
    },
    /// The sink is gone (e.g. a deleted Slack webhook): hold every delivery to it, keep them
    /// pending, and surface the reason until someone fixes the sink.
    PauseSink {
        /// Why.
        reason: String,
    },
}

/// Slack error codes that mean the incoming webhook no longer works, whatever is sent.
const SLACK_GONE: [&str; 6] = [
    "no_service",
    "channel_not_found",
    "channel_is_archived",
    "invalid_token",
    "team_disabled",
    "action_prohibited",
];

/// Slack error codes that mean this message is malformed; other messages may still go through.
const SLACK_BAD_MESSAGE: [&str; 2] = ["invalid_payload", "no_text"];

/// The parts of a sink's answer that decide the outcome.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) retry_after: Option<Duration>,
    pub(crate) location: Option<String>,
    pub(crate) body: String,
}

impl Answer {
    pub(crate) fn from_headers(
        status: StatusCode,
        headers: &header::HeaderMap,
        body: String,
    ) -> Self {
        let text = |name| headers.get(name).and_then(|value| value.to_str().ok());
        Self {
            status,
            retry_after: text(header::RETRY_AFTER).and_then(parse_retry_after),
            location: text(header::LOCATION).map(str::to_owned),
            body,
        }
    }

    /// The status only. The body is never quoted: reasons reach logs, the queue and
    /// `StrapiWebhook.status`, which the sink's owner can read, and an internal service's
    /// answer (or a body echoing the request's secrets) must not travel that way.
    fn describe(&self) -> String {
        format!("HTTP {}", self.status)
    }
}

/// The outcome of an answer from a sink of `kind`.
pub(crate) fn classify(kind: SinkKind, answer: &Answer) -> Outcome {
    match kind {
        SinkKind::Nextjs => nextjs(answer),
        SinkKind::Slack => slack(answer),
        SinkKind::Http => generic(answer),
    }
}

fn generic(answer: &Answer) -> Outcome {
    let status = answer.status;
    if status.is_success() {
        Outcome::Delivered
    } else if status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error()
    {
        Outcome::Retry {
            reason: answer.describe(),
            retry_after: answer.retry_after,
        }
    } else if status.is_redirection() {
        // Redirects are not followed: a POST would turn into a GET and lose the body.
        Outcome::DeadLetter {
            reason: format!(
                "{} redirects to {}; configure the final URL",
                answer.describe(),
                answer.location.as_deref().map_or_else(
                    || "an unnamed location".to_owned(),
                    crate::http::redact_urls
                )
            ),
        }
    } else {
        Outcome::DeadLetter {
            reason: answer.describe(),
        }
    }
}

fn nextjs(answer: &Answer) -> Outcome {
    if !answer.status.is_success() {
        return generic(answer);
    }
    let revalidated = serde_json::from_str::<serde_json::Value>(&answer.body)
        .ok()
        .and_then(|json| json.get("revalidated").cloned());
    match revalidated {
        None | Some(serde_json::Value::Bool(true)) => Outcome::Delivered,
        // The handler ran but did not revalidate (e.g. it could not reach its cache); the
        // next attempt may succeed, and the attempt limit bounds it.
        Some(other) => Outcome::Retry {
            reason: format!(
                "{}: the handler answered revalidated: {}",
                answer.describe(),
                match other {
                    serde_json::Value::Bool(_) | serde_json::Value::Null => other.to_string(),
                    _ => "something other than true".to_owned(),
                }
            ),
            retry_after: answer.retry_after,
        },
    }
}

fn slack(answer: &Answer) -> Outcome {
    let code = answer.body.trim();
    if answer.status.is_success() {
        Outcome::Delivered
    } else if SLACK_GONE.contains(&code) {
        Outcome::PauseSink {
            reason: format!(
                "Slack answered {} {code}: the incoming webhook no longer works; replace its URL in the Secret",
                answer.status.as_u16()
            ),
        }
    } else if SLACK_BAD_MESSAGE.contains(&code) {
        Outcome::DeadLetter {
            reason: format!(
                "Slack rejected the message ({code}); check the route's slack.text and slack.blocks"
            ),
        }
    } else {
        generic(answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &str) -> Answer {
        Answer::from_headers(
            StatusCode::from_u16(status).unwrap(),
            &header::HeaderMap::new(),
            body.to_owned(),
        )
    }

    #[test]
    fn generic_statuses() {
        assert_eq!(
            classify(SinkKind::Http, &answer(204, "")),
            Outcome::Delivered
        );
        for retried in [408, 429, 500, 503] {
            assert!(
                matches!(
                    classify(SinkKind::Http, &answer(retried, "")),
                    Outcome::Retry { .. }
                ),
                "{retried}"
            );
        }
        for dead in [400, 401, 404, 422, 301] {
            assert!(
                matches!(
                    classify(SinkKind::Http, &answer(dead, "")),
                    Outcome::DeadLetter { .. }
                ),
                "{dead}"
            );
        }
    }

    #[test]
    fn nextjs_requires_revalidated_true_when_present() {
        assert_eq!(
            classify(SinkKind::Nextjs, &answer(200, "OK")),
            Outcome::Delivered
        );
        assert_eq!(
            classify(
                SinkKind::Nextjs,
                &answer(200, r#"{"revalidated":true,"now":1}"#)
            ),
            Outcome::Delivered
        );
        let Outcome::Retry { reason, .. } =
            classify(SinkKind::Nextjs, &answer(200, r#"{"revalidated":false}"#))
        else {
            panic!("revalidated: false must be retried")
        };
        assert!(reason.contains("revalidated: false"), "{reason}");
    }

    #[test]
    fn slack_codes() {
        assert_eq!(
            classify(SinkKind::Slack, &answer(200, "ok")),
            Outcome::Delivered
        );
        for gone in SLACK_GONE {
            let outcome = classify(SinkKind::Slack, &answer(404, gone));
            assert!(
                matches!(&outcome, Outcome::PauseSink { reason } if reason.contains(gone)),
                "{outcome:?}"
            );
        }
        for bad in SLACK_BAD_MESSAGE {
            assert!(matches!(
                classify(SinkKind::Slack, &answer(400, bad)),
                Outcome::DeadLetter { .. }
            ));
        }
        assert!(matches!(
            classify(SinkKind::Slack, &answer(500, "rollup_error")),
            Outcome::Retry { .. }
        ));
    }

    #[test]
    fn retry_after_takes_seconds_and_http_dates() {
        assert_eq!(parse_retry_after(" 120 "), Some(Duration::from_secs(120)));
        let in_a_minute = std::time::SystemTime::now() + Duration::from_secs(60);
        let delay = parse_retry_after(&httpdate::fmt_http_date(in_a_minute)).unwrap();
        // HTTP dates have whole seconds, so the delay is a little under a minute.
        assert!(
            delay <= Duration::from_secs(60) && delay > Duration::from_secs(58),
            "{delay:?}"
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    proptest::proptest! {
        #[test]
        fn retry_after_never_panics_on_any_header_value(value in ".*") {
            let _ = parse_retry_after(&value);
        }

        #[test]
        fn retry_after_keeps_any_number_of_seconds(seconds in proptest::num::u64::ANY) {
            proptest::prop_assert_eq!(
                parse_retry_after(&seconds.to_string()),
                Some(Duration::from_secs(seconds))
            );
        }

        #[test]
        fn retry_after_dates_wait_at_most_until_the_date(
            // HTTP dates end with the year 9999.
            ahead in 0u64..(7_000 * 365 * 24 * 3600),
        ) {
            let at = std::time::SystemTime::now() + Duration::from_secs(ahead);
            let delay = parse_retry_after(&httpdate::fmt_http_date(at));
            proptest::prop_assert!(delay.is_some_and(|delay| delay <= Duration::from_secs(ahead)));
        }
    }

    #[test]
    fn retry_after_seconds_are_kept_and_bodies_are_never_quoted() {
        let mut headers = header::HeaderMap::new();
        headers.insert(header::RETRY_AFTER, "7".parse().unwrap());
        let echo = "internal: Authorization: Bearer tok-123".to_owned();
        let outcome = classify(
            SinkKind::Http,
            &Answer::from_headers(StatusCode::SERVICE_UNAVAILABLE, &headers, echo),
        );
        let Outcome::Retry {
            reason,
            retry_after,
        } = outcome
        else {
            panic!("503 retries")
        };
        assert_eq!(retry_after, Some(Duration::from_secs(7)));
        assert_eq!(reason, "HTTP 503 Service Unavailable");
    }
}
