//! [`compile_webhook`]: one `StrapiWebhookSpec` in, a [`CompiledWebhook`] or every problem out.

use std::{collections::BTreeMap, fmt, time::Duration};

use crate::{
    api::{self, HttpHeader, StrapiWebhookSpec},
    key::ObjectKey,
    routing::{CompiledRoute, PathKind, PathTemplate, PayloadTemplate, RouteConfig, RouteMatch},
    sinks::{
        DeliveryPolicy, EgressRules, HeaderName, HeaderValue, HttpSink, Method, NextjsMode,
        NextjsSink, SigningKey, SinkConfig, SinkKind, SlackSink, Url,
    },
};

use super::SecretResolver;

/// Headers a sink may not set (lower case, as `HeaderName` keeps them): `Host`, the hop-by-hop
/// headers of RFC 9110 section 7.6.1, the framing headers, and the Standard Webhooks headers the
/// receiver sets on every request.
const RESERVED_HEADERS: [&str; 15] = [
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "content-type",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
];

/// A `StrapiWebhook` ready for the receiver: routes compiled, sinks resolved.
#[derive(Debug)]
pub struct CompiledWebhook {
    /// `namespace/name` of the `StrapiWebhook`.
    pub key: String,
    /// The `metadata.generation` it was compiled from.
    pub generation: i64,
    /// `namespace/name` of the `StrapiInstance` whose events it routes.
    pub instance: String,
    /// False while routing is switched off; stored deliveries still go out.
    pub enabled: bool,
    /// The Strapi event names it subscribes to.
    pub events: Vec<String>,
    /// Routes in spec order.
    pub routes: Vec<CompiledRoute>,
    /// Sinks by name, with their effective delivery policy.
    pub sinks: BTreeMap<String, (SinkConfig, DeliveryPolicy)>,
    /// Settings that compile but are very likely not what the user meant, e.g. a `type` on a
    /// literal path, which Next.js ignores. Reported, never fatal.
    pub warnings: Vec<ValidationError>,
}

impl CompiledWebhook {
    /// The route with this name.
    pub fn route(&self, name: &str) -> Option<&CompiledRoute> {
        self.routes.iter().find(|route| route.name() == name)
    }

    /// The sink with this name and its policy.
    pub fn sink(&self, name: &str) -> Option<&(SinkConfig, DeliveryPolicy)> {
        self.sinks.get(name)
    }

    /// Holds every sink to its instance's egress rules (see [`super::apply_egress`], which also
    /// checks the URLs); the receiver's sink client enforces them on every connection.
    pub fn hold_to(&mut self, rules: &EgressRules) {
        for (_, policy) in self.sinks.values_mut() {
            policy.egress = rules.clone();
        }
    }
}

/// The kind of a validation problem, bounded so it can be a condition reason or a metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// A route's filter or template does not compile, or its settings do not fit its sink.
    RouteInvalid,
    /// A route names a sink that does not exist.
    SinkUnresolved,
    /// A referenced Secret or key is missing or unreadable.
    SecretMissing,
    /// A sink's URL, header or signing secret is malformed.
    SinkInvalid,
    /// A sink's delivery policy is out of range.
    DeliveryInvalid,
    /// Two sinks or two routes share a name.
    DuplicateName,
    /// A warning: a templated literal path carries a `type`, so Next.js revalidates nothing.
    PathTypeIgnored,
    /// A sink's URL is one the instance's egress policy refuses.
    EgressRefused,
}

impl Reason {
    /// The CamelCase name, as Kubernetes condition reasons are written.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::RouteInvalid => "RouteInvalid",
            Reason::SinkUnresolved => "SinkUnresolved",
            Reason::SecretMissing => "SecretMissing",
            Reason::SinkInvalid => "SinkInvalid",
            Reason::DeliveryInvalid => "DeliveryInvalid",
            Reason::DuplicateName => "DuplicateName",
            Reason::PathTypeIgnored => "PathTypeIgnored",
            Reason::EgressRefused => "EgressRefused",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One problem in a spec.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    /// Path of the offending field, e.g. `spec.routes[2].filter`.
    pub field: String,
    /// What kind of problem.
    pub reason: Reason,
    /// What is wrong, with line and column for filters and templates.
    pub message: String,
}

/// Every problem found in a spec, in spec order. Never empty.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct ValidationErrors(pub Vec<ValidationError>);

impl ValidationErrors {
    /// The problems.
    pub fn iter(&self) -> impl Iterator<Item = &ValidationError> {
        self.0.iter()
    }
}

/// Compiles one `StrapiWebhook`. Pure apart from `secrets`.
pub fn compile_webhook(
    namespace: &str,
    name: &str,
    generation: i64,
    spec: &StrapiWebhookSpec,
    secrets: &dyn SecretResolver,
) -> Result<CompiledWebhook, ValidationErrors> {
    let mut found = Problems {
        errors: Vec::new(),
        namespace,
        secrets,
    };
    let mut sinks = BTreeMap::new();
    for (index, sink) in spec.sinks.iter().enumerate() {
        let field = format!("spec.sinks[{index}]");
        if sinks.contains_key(&sink.name)
            || spec.sinks[..index]
                .iter()
                .any(|other| other.name == sink.name)
        {
            found.push(
                format!("{field}.name"),
                Reason::DuplicateName,
                format!("another sink is named {:?}", sink.name),
            );
            continue;
        }
        if let Some(compiled) = found.sink(&field, sink) {
            sinks.insert(sink.name.clone(), compiled);
        }
    }
    let mut routes = Vec::new();
    for (index, route) in spec.routes.iter().enumerate() {
        let field = format!("spec.routes[{index}]");
        if spec.routes[..index]
            .iter()
            .any(|other| other.name == route.name)
        {
            found.push(
                format!("{field}.name"),
                Reason::DuplicateName,
                format!("another route is named {:?}", route.name),
            );
            continue;
        }
        if let Some(compiled) = found.route(&field, route, spec) {
            routes.push(compiled);
        }
    }
    if !found.errors.is_empty() {
        return Err(ValidationErrors(found.errors));
    }
    let instance_namespace = spec.instance_ref.namespace.as_deref();
    let instance = ObjectKey::new(
        instance_namespace.unwrap_or(namespace),
        &spec.instance_ref.name,
    );
    Ok(CompiledWebhook {
        key: ObjectKey::new(namespace, name).to_string(),
        generation,
        instance: instance.to_string(),
        enabled: spec.enabled,
        events: spec
            .events
            .iter()
            .map(|event| event.as_str().to_owned())
            .collect(),
        routes,
        sinks,
        warnings: path_type_warnings(spec),
    })
}

/// Paths that Next.js will ignore: `revalidatePath(path, type)` with a type matches `path`
/// against route patterns (`/articles/[slug]`), so a templated path that renders a literal URL
/// (`/articles/{{ entry.slug }}`) must come without one.
fn path_type_warnings(spec: &StrapiWebhookSpec) -> Vec<ValidationError> {
    let mut warnings = Vec::new();
    for (route_index, route) in spec.routes.iter().enumerate() {
        let Some(nextjs) = &route.nextjs else {
            continue;
        };
        for (index, path) in nextjs.paths.iter().enumerate() {
            let literal = outside_templates(&path.path);
            let templated = literal.len() != path.path.len();
            let pattern = literal.contains('[');
            if let (Some(kind), true, false) = (path.kind, templated, pattern) {
                let kind = match kind {
                    api::PathKind::Page => "page",
                    api::PathKind::Layout => "layout",
                };
                warnings.push(ValidationError {
                    field: format!("spec.routes[{route_index}].nextjs.paths[{index}].type"),
                    reason: Reason::PathTypeIgnored,
                    message: format!(
                        "{:?} renders a literal path, and Next.js ignores a literal path sent \
                         with type {kind:?}; remove type, or use a route pattern such as \
                         /articles/[slug]",
                        path.path
                    ),
                });
            }
        }
    }
    warnings
}

/// `text` without its `{{ ... }}` and `{% ... %}` parts (an unclosed one runs to the end).
fn outside_templates(text: &str) -> String {
    let mut literal = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{").into_iter().chain(rest.find("{%")).min() {
        literal.push_str(&rest[..start]);
        let close = if rest[start..].starts_with("{{") {
            "}}"
        } else {
            "%}"
        };
        rest = rest[start + 2..]
            .find(close)
            .map_or("", |end| &rest[start + 2 + end + 2..]);
    }
    literal.push_str(rest);
    literal
}

/// Collects problems while compiling; each step returns `None` after recording why.
struct Problems<'a> {
    errors: Vec<ValidationError>,
    namespace: &'a str,
    secrets: &'a dyn SecretResolver,
}

impl Problems<'_> {
    fn push(&mut self, field: String, reason: Reason, message: String) {
        self.errors.push(ValidationError {
            field,
            reason,
            message,
        });
    }

    fn secret(&mut self, field: String, reference: &api::SecretKeyRef) -> Option<String> {
        match self.secrets.resolve(self.namespace, reference) {
            Ok(value) => Some(value),
            Err(error) => {
                self.push(field, Reason::SecretMissing, error.to_string());
                None
            }
        }
    }

    fn url(&mut self, field: String, text: &str) -> Option<Url> {
        match Url::parse(text) {
            Ok(url) if matches!(url.scheme(), "http" | "https") => Some(url),
            Ok(url) => {
                self.push(
                    field,
                    Reason::SinkInvalid,
                    format!("scheme {:?} is not http or https", url.scheme()),
                );
                None
            }
            Err(error) => {
                self.push(field, Reason::SinkInvalid, format!("not a URL: {error}"));
                None
            }
        }
    }

    fn sink(&mut self, field: &str, sink: &api::Sink) -> Option<(SinkConfig, DeliveryPolicy)> {
        let config = match (&sink.nextjs, &sink.slack, &sink.http) {
            (Some(nextjs), None, None) => self.nextjs(field, nextjs),
            (None, Some(slack), None) => self.slack(field, slack),
            (None, None, Some(http)) => self.http(field, http),
            _ => {
                self.push(
                    field.to_owned(),
                    Reason::SinkInvalid,
                    "set exactly one of nextjs, slack and http".to_owned(),
                );
                None
            }
        };
        let policy = self.policy(&format!("{field}.delivery"), sink, config.as_ref()?.kind())?;
        Some((config?, policy))
    }

    fn nextjs(&mut self, field: &str, nextjs: &api::NextjsSink) -> Option<SinkConfig> {
        let url = self.url(format!("{field}.nextjs.url"), &nextjs.url);
        let header = self.header_name(
            format!("{field}.nextjs.secretHeader"),
            &nextjs.secret_header,
        );
        let secret = match &nextjs.secret_ref {
            Some(reference) => {
                let field = format!("{field}.nextjs.secretRef");
                let value = self.secret(field.clone(), reference)?;
                Some((header?, self.secret_header_value(field, &value)?))
            }
            None => None,
        };
        let coalesce_window: Duration = nextjs.coalesce_window.into();
        Some(SinkConfig::Nextjs(NextjsSink {
            url: url?,
            secret,
            mode: match nextjs.mode {
                api::NextjsMode::Forward => NextjsMode::Forward,
                api::NextjsMode::Revalidate => NextjsMode::Revalidate,
            },
            coalesce_window,
        }))
    }

    fn slack(&mut self, field: &str, slack: &api::SlackSink) -> Option<SinkConfig> {
        let field = format!("{field}.slack.webhookUrlSecretRef");
        let value = self.secret(field.clone(), &slack.webhook_url_secret_ref)?;
        // The URL is the credential: name the Secret, never echo its value.
        match Url::parse(value.trim()) {
            Ok(webhook_url) if matches!(webhook_url.scheme(), "http" | "https") => {
                Some(SinkConfig::Slack(SlackSink { webhook_url }))
            }
            _ => {
                self.push(
                    field,
                    Reason::SinkInvalid,
                    format!(
                        "the value of Secret {}/{} key {:?} is not an http(s) URL",
                        self.namespace,
                        slack.webhook_url_secret_ref.name,
                        slack.webhook_url_secret_ref.key
                    ),
                );
                None
            }
        }
    }

    fn http(&mut self, field: &str, http: &api::HttpSink) -> Option<SinkConfig> {
        let url = self.url(format!("{field}.http.url"), &http.url);
        let mut headers = Vec::new();
        let mut headers_ok = true;
        for (index, header) in http.headers.iter().enumerate() {
            match self.http_header(&format!("{field}.http.headers[{index}]"), header) {
                Some(pair) => headers.push(pair),
                None => headers_ok = false,
            }
        }
        let signing = match &http.signing {
            Some(signing) => {
                let field = format!("{field}.http.signing.secretRef");
                let value = self.secret(field.clone(), &signing.secret_ref)?;
                match SigningKey::parse_all(&value) {
                    Ok(keys) if !keys.is_empty() => keys,
                    Ok(_) => {
                        self.push(
                            field,
                            Reason::SinkInvalid,
                            "the signing Secret value is empty".to_owned(),
                        );
                        return None;
                    }
                    Err(error) => {
                        self.push(field, Reason::SinkInvalid, error.to_string());
                        return None;
                    }
                }
            }
            None => Vec::new(),
        };
        let method = match http.method {
            api::HttpMethod::Post => Method::POST,
            api::HttpMethod::Put => Method::PUT,
            api::HttpMethod::Patch => Method::PATCH,
        };
        if !headers_ok {
            return None;
        }
        Some(SinkConfig::Http(HttpSink {
            url: url?,
            method,
            headers,
            signing,
        }))
    }

    fn http_header(
        &mut self,
        field: &str,
        header: &HttpHeader,
    ) -> Option<(HeaderName, HeaderValue)> {
        let name = self.header_name(format!("{field}.name"), &header.name)?;
        match (&header.value, &header.value_from) {
            (Some(value), None) => {
                let value = self.header_value(format!("{field}.value"), value)?;
                Some((name, value))
            }
            (None, Some(source)) => {
                let field = format!("{field}.valueFrom.secretKeyRef");
                let secret = self.secret(field.clone(), &source.secret_key_ref)?;
                let value = self.secret_header_value(
                    field,
                    &format!(
                        "{}{}",
                        source.prefix.as_deref().unwrap_or_default(),
                        secret.trim()
                    ),
                )?;
                Some((name, value))
            }
            _ => {
                self.push(
                    field.to_owned(),
                    Reason::SinkInvalid,
                    "set exactly one of value and valueFrom".to_owned(),
                );
                None
            }
        }
    }

    /// A header name a sink may set: not `Host` (which would send the request to another
    /// virtual host than the URL names), not a hop-by-hop or framing header, and not one the
    /// receiver sets itself.
    fn header_name(&mut self, field: String, name: &str) -> Option<HeaderName> {
        let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else {
            self.push(
                field,
                Reason::SinkInvalid,
                "not a valid header name".to_owned(),
            );
            return None;
        };
        if RESERVED_HEADERS.contains(&name.as_str()) {
            self.push(
                field,
                Reason::SinkInvalid,
                format!(
                    "{name} is set by the receiver or the connection and cannot be set by a sink"
                ),
            );
            return None;
        }
        Some(name)
    }

    /// A header value read from a Secret, marked sensitive so `Debug` output never shows it.
    fn secret_header_value(&mut self, field: String, value: &str) -> Option<HeaderValue> {
        let mut value = self.header_value(field, value.trim())?;
        value.set_sensitive(true);
        Some(value)
    }

    // Messages never quote the value: it may come from a Secret.
    fn header_value(&mut self, field: String, value: &str) -> Option<HeaderValue> {
        match HeaderValue::from_str(value.trim_end_matches(['\n', '\r'])) {
            Ok(value) => Some(value),
            Err(_) => {
                self.push(
                    field,
                    Reason::SinkInvalid,
                    "the value is not a valid header value (control characters?)".to_owned(),
                );
                None
            }
        }
    }

    fn policy(&mut self, field: &str, sink: &api::Sink, kind: SinkKind) -> Option<DeliveryPolicy> {
        let mut policy = DeliveryPolicy::defaults(kind);
        let Some(delivery) = &sink.delivery else {
            return Some(policy);
        };
        let before = self.errors.len();
        let mut count = |name: &str, value: Option<i32>, target: &mut u32| {
            if let Some(value) = value {
                match u32::try_from(value) {
                    Ok(value) if value >= 1 => *target = value,
                    _ => self.errors.push(ValidationError {
                        field: format!("{field}.{name}"),
                        reason: Reason::DeliveryInvalid,
                        message: format!("must be at least 1, got {value}"),
                    }),
                }
            }
        };
        count(
            "maxAttempts",
            delivery.max_attempts,
            &mut policy.max_attempts,
        );
        count("concurrency", delivery.concurrency, &mut policy.concurrency);
        if let Some(rate) = &delivery.rate_limit {
            count(
                "rateLimit.perSecond",
                Some(rate.per_second),
                &mut policy.rate_per_second,
            );
            // Without an explicit burst, allow one second's worth.
            policy.burst = policy.rate_per_second;
            count("rateLimit.burst", rate.burst, &mut policy.burst);
        }
        let backoff = delivery.backoff.as_ref();
        for (name, value, target) in [
            ("timeout", delivery.timeout, &mut policy.timeout),
            ("maxAge", delivery.max_age, &mut policy.max_age),
            (
                "backoff.initial",
                backoff.and_then(|b| b.initial),
                &mut policy.backoff_initial,
            ),
            (
                "backoff.max",
                backoff.and_then(|b| b.max),
                &mut policy.backoff_max,
            ),
        ] {
            match value {
                Some(value) if value.is_negative() || Duration::from(value).is_zero() => self.push(
                    format!("{field}.{name}"),
                    Reason::DeliveryInvalid,
                    format!("must be positive, got {value}"),
                ),
                Some(value) => *target = value.into(),
                None => {}
            }
        }
        if policy.backoff_initial > policy.backoff_max {
            self.push(
                format!("{field}.backoff"),
                Reason::DeliveryInvalid,
                format!(
                    "initial ({:?}) is longer than max ({:?})",
                    policy.backoff_initial, policy.backoff_max
                ),
            );
        }
        (self.errors.len() == before).then_some(policy)
    }

    fn route(
        &mut self,
        field: &str,
        route: &api::Route,
        spec: &StrapiWebhookSpec,
    ) -> Option<CompiledRoute> {
        let before = self.errors.len();
        let Some(sink) = spec.sinks.iter().find(|sink| sink.name == route.sink) else {
            self.push(
                format!("{field}.sink"),
                Reason::SinkUnresolved,
                format!("no sink named {:?} in spec.sinks", route.sink),
            );
            return None;
        };
        if let Some(events) = &route.matches.events {
            for event in events.iter().filter(|event| !spec.events.contains(event)) {
                self.push(
                    format!("{field}.match.events"),
                    Reason::RouteInvalid,
                    format!("{event} is not in spec.events, so Strapi never sends it"),
                );
            }
        }
        let payload = self.payload_template(field, route, sink)?;
        if self.errors.len() != before {
            return None;
        }
        let config = RouteConfig {
            name: route.name.clone(),
            sink: route.sink.clone(),
            matches: RouteMatch {
                models: route.matches.models.clone(),
                uids: route.matches.uids.clone(),
                // The instance's one registration subscribes to every webhook's events, so a
                // route without its own list must still take only its webhook's `spec.events`.
                events: Some(
                    route
                        .matches
                        .events
                        .as_ref()
                        .unwrap_or(&spec.events)
                        .iter()
                        .map(|event| event.as_str().to_owned())
                        .collect(),
                ),
            },
            filter: route.filter.clone(),
            payload,
        };
        match CompiledRoute::compile(&config) {
            Ok(compiled) => Some(compiled),
            Err(errors) => {
                for error in errors {
                    let message = match error.position {
                        Some(position) => format!("{position}: {}", error.message),
                        None => error.message,
                    };
                    self.push(
                        format!("{field}.{}", error.field),
                        Reason::RouteInvalid,
                        message,
                    );
                }
                None
            }
        }
    }

    fn payload_template(
        &mut self,
        field: &str,
        route: &api::Route,
        sink: &api::Sink,
    ) -> Option<PayloadTemplate> {
        let sink_kind = if sink.nextjs.is_some() {
            "nextjs"
        } else if sink.slack.is_some() {
            "slack"
        } else {
            "http"
        };
        for (kind, set) in [
            ("nextjs", route.nextjs.is_some()),
            ("slack", route.slack.is_some()),
            ("http", route.http.is_some()),
        ] {
            if set && kind != sink_kind {
                self.push(
                    format!("{field}.{kind}"),
                    Reason::RouteInvalid,
                    format!(
                        "sink {:?} is a {sink_kind} sink, so {kind} settings do not apply",
                        sink.name
                    ),
                );
                return None;
            }
        }
        let mut invalid = |suffix: &str, message: String| {
            self.push(format!("{field}{suffix}"), Reason::RouteInvalid, message);
            None
        };
        match (&sink.nextjs, &sink.slack) {
            (Some(nextjs), _) => match (nextjs.mode, &route.nextjs) {
                (api::NextjsMode::Forward, None) => Some(PayloadTemplate::Forward),
                (api::NextjsMode::Forward, Some(_)) => invalid(
                    ".nextjs",
                    format!(
                        "sink {:?} forwards Strapi's payload; tags and paths apply only in Revalidate mode",
                        sink.name
                    ),
                ),
                (api::NextjsMode::Revalidate, Some(settings))
                    if !settings.tags.is_empty() || !settings.paths.is_empty() =>
                {
                    Some(PayloadTemplate::Revalidate {
                        tags: settings.tags.clone(),
                        paths: settings
                            .paths
                            .iter()
                            .map(|path| PathTemplate {
                                path: path.path.clone(),
                                kind: path.kind.map(|kind| match kind {
                                    api::PathKind::Page => PathKind::Page,
                                    api::PathKind::Layout => PathKind::Layout,
                                }),
                            })
                            .collect(),
                    })
                }
                (api::NextjsMode::Revalidate, _) => invalid(
                    ".nextjs",
                    format!(
                        "sink {:?} is in Revalidate mode; set nextjs.tags or nextjs.paths",
                        sink.name
                    ),
                ),
            },
            (None, Some(_)) => match &route.slack {
                Some(slack) => Some(PayloadTemplate::Slack {
                    text: slack.text.clone(),
                    blocks: slack.blocks.clone(),
                }),
                None => invalid(
                    ".slack",
                    format!("sink {:?} is a Slack sink; set slack.text", sink.name),
                ),
            },
            (None, None) => Some(PayloadTemplate::Http {
                body: route.http.as_ref().and_then(|http| http.body.clone()),
            }),
        }
    }
}
