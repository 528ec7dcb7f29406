//! Every outbound HTTP client is built here. reqwest is compiled without a TLS crypto provider
//! of its own (`rustls-no-provider`: ring already comes with kube, and a second provider would
//! double the TLS build), so the provider must be installed before the first client exists;
//! doing it in one place means no caller can forget.

/// A client builder with the crypto provider installed and the operator's user agent set.
pub fn client_builder() -> reqwest::ClientBuilder {
    // Fails only when a provider is already installed, which is just as good.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().user_agent(concat!(
        "strapi-webhook-operator/",
        env!("CARGO_PKG_VERSION")
    ))
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
