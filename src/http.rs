//! Every outbound HTTP client is built here. reqwest is compiled without a TLS crypto provider
//! of its own (`rustls-no-provider`: ring already comes with kube, and a second provider would
//! double the TLS build), so the provider must be installed before the first client exists;
//! doing it in one place means no caller can forget.

/// A client builder with the crypto provider installed and the operator's user agent set.
pub fn client_builder() -> reqwest::ClientBuilder {
    install_crypto_provider();
    reqwest::Client::builder().user_agent(concat!(
        "strapi-webhook-operator/",
        env!("CARGO_PKG_VERSION")
    ))
}

/// Installs ring as the process's TLS crypto provider, for clients built elsewhere (the OTLP
/// exporter's).
pub fn install_crypto_provider() {
    // Fails only when a provider is already installed, which is just as good.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// `Retry-After` as delay-seconds or as an HTTP date (RFC 9110). A date in the past means "now";
/// an unreadable value is `None`, so the caller's own backoff applies. Sinks and Strapi send it.
pub fn parse_retry_after(value: &str) -> Option<std::time::Duration> {
    let value = value.trim();
    match value.parse::<u64>() {
        Ok(seconds) => Some(std::time::Duration::from_secs(seconds)),
        Err(_) => httpdate::parse_http_date(value).ok().map(|at| {
            at.duration_since(std::time::SystemTime::now())
                .unwrap_or_default()
        }),
    }
}

/// The one way an error that may hold a URL becomes text: reqwest's URL is dropped and the
/// causes are joined (reqwest's own message is just "error sending request"), then any URL
/// left in the text is cut to its scheme and host. Sink URLs are credentials (a Slack webhook's
/// path, `?token=` query strings, `user:password@`), and this text ends up in logs, the queue
/// and `StrapiWebhook.status`.
pub fn describe_error(error: reqwest::Error) -> String {
    let error = error.without_url();
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    redact_urls(&text)
}

/// The last error of a chain, redacted like [`describe_error`]: the one that says what happened
/// ("Connection refused", a DNS or TLS failure), where reqwest's own only says a request failed.
pub fn innermost_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    redact_urls(&cause.to_string())
}

/// `text` with every `scheme://…` URL in it cut to `scheme://host[:port]`: no userinfo, path,
/// query or fragment, any of which may carry a secret.
pub fn redact_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let after = &rest[at + 3..];
        // A URL ends at white space or a quote; anything else, even `)`, may belong to it.
        let end = after
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | '`'))
            .unwrap_or(after.len());
        let url = &after[..end];
        let authority = &url[..url.find(['/', '?', '#']).unwrap_or(url.len())];
        let host = authority
            .rsplit_once('@')
            .map_or(authority, |(_, host)| host);
        out.push_str(&rest[..at + 3]);
        out.push_str(host);
        if host.len() < url.len() {
            out.push_str("/…");
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// The bearer token of the receiver's admin API, shared by the receiver, the controller and
/// the `deliveries` command. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(String);

/// An admin token that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AdminTokenError {
    /// Empty, or not printable ASCII (it travels in a header).
    #[error("the admin token must be 16 to 512 printable ASCII characters without spaces")]
    Invalid,
    /// The token file could not be read or written.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

impl AdminToken {
    /// A token from its text, surrounding white space (a trailing newline in a file or Secret)
    /// removed.
    pub fn new(text: &str) -> Result<Self, AdminTokenError> {
        let text = text.trim();
        if (16..=512).contains(&text.len()) && text.bytes().all(|byte| byte.is_ascii_graphic()) {
            Ok(Self(text.to_owned()))
        } else {
            Err(AdminTokenError::Invalid)
        }
    }

    /// A new random token: 32 bytes, hex-encoded.
    pub fn generate() -> Self {
        let bytes: [u8; 32] = rand::random();
        Self(bytes.iter().map(|byte| format!("{byte:02x}")).collect())
    }

    /// Reads the token kept in `path`, or creates the file (readable only by its owner) with a
    /// new one.
    pub fn load_or_create(path: &std::path::Path) -> Result<Self, AdminTokenError> {
        let failed = |source| AdminTokenError::File {
            path: path.to_owned(),
            source,
        };
        match std::fs::read_to_string(path) {
            Ok(text) => Self::new(&text),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                use std::{io::Write, os::unix::fs::OpenOptionsExt};
                let token = Self::generate();
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .and_then(|mut file| file.write_all(token.0.as_bytes()))
                    .map_err(failed)?;
                Ok(token)
            }
            Err(error) => Err(failed(error)),
        }
    }

    /// Whether `given` is this token, compared in constant time.
    pub fn matches(&self, given: &str) -> bool {
        use subtle::ConstantTimeEq;
        bool::from(self.0.as_bytes().ct_eq(given.as_bytes()))
    }

    /// `Authorization: Bearer <token>`, marked sensitive so it never shows in `Debug` output.
    pub fn authorization(&self) -> reqwest::header::HeaderMap {
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {}", self.0))
            .expect("checked to be printable ASCII");
        value.set_sensitive(true);
        reqwest::header::HeaderMap::from_iter([(reqwest::header::AUTHORIZATION, value)])
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::redact_urls;

    #[test]
    fn urls_keep_only_scheme_and_host() {
        assert_eq!(
            redact_urls(
                "error sending request for url (https://hooks.slack.com/services/T0/B0/XYZ)"
            ),
            "error sending request for url (https://hooks.slack.com/…"
        );
        assert_eq!(
            redact_urls("GET http://user:pa55@api.example.com:8443/x?token=abc#f failed"),
            "GET http://api.example.com:8443/… failed"
        );
        assert_eq!(
            redact_urls("see \"http://h/?token=t\" and https://other"),
            "see \"http://h/…\" and https://other"
        );
        assert_eq!(redact_urls("no url here"), "no url here");
    }
}
