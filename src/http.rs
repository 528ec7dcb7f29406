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
