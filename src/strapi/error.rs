//! The one error type of the Strapi client. Every variant names the call (`step`) that failed, and
//! [`StrapiError::reason`] gives a bounded label for metrics and Kubernetes Event reasons.

use serde_json::Value;

/// Why a call to Strapi's admin API failed.
#[derive(Debug, thiserror::Error)]
pub enum StrapiError {
    /// The base URL given to the client is not an absolute http(s) URL.
    #[error("invalid Strapi base URL {url:?}: {reason}")]
    InvalidBaseUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The HTTP client could not be built (TLS setup).
    #[error("building the HTTP client for Strapi failed: {0}")]
    ClientSetup(#[source] reqwest::Error),
    /// Strapi could not be reached: connection refused, DNS, TLS or timeout, after every retry.
    #[error(
        "{step}: Strapi at {url} is unreachable: {}",
        crate::http::innermost_cause(source)
    )]
    Unreachable {
        /// The call that failed.
        step: &'static str,
        /// The URL called (never carries credentials).
        url: String,
        /// The transport error of the last attempt.
        #[source]
        source: reqwest::Error,
    },
    /// Strapi did not accept the credentials, even after renewing the session once.
    #[error("{step}: Strapi refused the credentials: {message}")]
    Unauthorized {
        /// The call that failed.
        step: &'static str,
        /// Strapi's message, with a hint where one helps.
        message: String,
    },
    /// The credentials are valid but lack the permission for this call.
    #[error("{step}: Strapi forbids this call for these credentials: {message}")]
    Forbidden {
        /// The call that failed.
        step: &'static str,
        /// Strapi's message.
        message: String,
    },
    /// The webhook, content type or entry does not exist.
    #[error("{step}: not found in Strapi: {message}")]
    NotFound {
        /// The call that failed.
        step: &'static str,
        /// Strapi's message.
        message: String,
    },
    /// Strapi validated the request and rejected it.
    #[error("{step}: Strapi rejected the request: {message}{}", details_suffix(.details))]
    Rejected {
        /// The call that failed.
        step: &'static str,
        /// Strapi's `error.message`.
        message: String,
        /// Strapi's `error.details` (for validation errors, the list of failing paths).
        details: Value,
    },
    /// Strapi's rate limit hit (its login allows 5 attempts per 5 minutes per email and IP).
    #[error(
        "{step}: Strapi rate-limited the call: {message} (it takes the call again in {}s)",
        retry_after.as_secs_f64().ceil()
    )]
    RateLimited {
        /// The call that failed.
        step: &'static str,
        /// Strapi's message.
        message: String,
        /// How long until Strapi takes the call again: its `Retry-After`, else the end of the
        /// window its `X-RateLimit-Reset` names, else the whole login window.
        retry_after: std::time::Duration,
    },
    /// Any other answer: a 5xx after every retry, or a status this client does not expect.
    #[error("{step}: unexpected answer from Strapi: HTTP {status}: {body}")]
    Unexpected {
        /// The call that failed.
        step: &'static str,
        /// HTTP status.
        status: u16,
        /// The start of the response body.
        body: String,
    },
    /// Strapi answered with success but the body is not what this Strapi version should send.
    #[error("{step}: Strapi's answer could not be read: {source}")]
    Malformed {
        /// The call that failed.
        step: &'static str,
        /// The decoding error.
        #[source]
        source: serde_json::Error,
    },
}

impl StrapiError {
    /// A bounded label for this kind of failure (`"Unreachable"`, `"Unauthorized"`, ...), for
    /// metric labels and Kubernetes Event reasons.
    pub fn reason(&self) -> &'static str {
        match self {
            StrapiError::InvalidBaseUrl { .. } => "InvalidBaseUrl",
            StrapiError::ClientSetup(_) => "ClientSetup",
            StrapiError::Unreachable { .. } => "Unreachable",
            StrapiError::Unauthorized { .. } => "Unauthorized",
            StrapiError::Forbidden { .. } => "Forbidden",
            StrapiError::NotFound { .. } => "NotFound",
            StrapiError::Rejected { .. } => "Rejected",
            StrapiError::RateLimited { .. } => "RateLimited",
            StrapiError::Unexpected { .. } => "Unexpected",
            StrapiError::Malformed { .. } => "Malformed",
        }
    }
}

fn details_suffix(details: &Value) -> String {
    match details {
        Value::Null => String::new(),
        Value::Object(map) if map.is_empty() => String::new(),
        other => format!(" ({other})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejected_shows_details_only_when_strapi_sent_some() {
        let bare = StrapiError::Rejected {
            step: "create webhook",
            message: "Invalid".into(),
            details: Value::Object(Default::default()),
        };
        assert_eq!(
            bare.to_string(),
            "create webhook: Strapi rejected the request: Invalid"
        );
        let detailed = StrapiError::Rejected {
            step: "create webhook",
            message: "url must be a valid URL".into(),
            details: serde_json::json!({"errors": [{"path": ["url"]}]}),
        };
        assert_eq!(
            detailed.to_string(),
            r#"create webhook: Strapi rejected the request: url must be a valid URL ({"errors":[{"path":["url"]}]})"#
        );
    }
}
