//! `render`: what each sink would receive for one Strapi event, from manifest files alone. Each
//! `StrapiWebhook` is compiled as `validate` compiles it ([`compile_in_files`], Secrets from the
//! files or placeholders), each route decides with the receiver's own matching and filter, renders
//! with its own templates, and the request is built by the sinks' own code
//! ([`crate::sinks::preview`]) — nothing here re-implements routing or delivery. Secret values
//! in the URL and headers are shown as `<Secret namespace/name key k>`.

pub mod samples;

use std::path::PathBuf;

use serde::Serialize;
use serde_json::Value;

use crate::{
    api::{StrapiWebhook, StrapiWebhookSpec},
    config::{CompiledWebhook, referenced_instance},
    event::EventBody,
    key::ObjectKey,
    manifests::{Located, Manifests, Problem},
    routing::CompiledRoute,
    sinks::{EgressBase, preview},
    validate::{FileSecrets, compile_in_files},
};

/// The `webhook-id` a previewed request carries (a delivery carries its delivery id).
pub const PREVIEW_DELIVERY_ID: &str = "render-preview";

/// Everything `render` shows.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Rendering {
    /// Problems reading the files (documents with a problem are left out).
    pub problems: Vec<Problem>,
    /// One entry per `StrapiWebhook` in the files.
    pub webhooks: Vec<WebhookRendering>,
}

/// One webhook's answer to the event.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookRendering {
    /// `namespace/name`.
    pub webhook: String,
    /// Where it is defined, as `file:line`.
    pub at: String,
    /// Why no route looked at the event (disabled, not subscribed), if so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// Compile errors; the webhook renders nothing while it has any.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<Problem>,
    /// Secrets the sinks read that are not in the files: placeholders stand in for them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub placeholder_secrets: Vec<String>,
    /// Each route, in spec order.
    pub routes: Vec<RouteRendering>,
}

/// One route's answer.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteRendering {
    /// The route.
    pub route: String,
    /// Its sink.
    pub sink: String,
    /// Whether it takes the event.
    pub matched: bool,
    /// Why (the match lists and the filter's value).
    pub why: String,
    /// What the sink would receive.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<Request>,
    /// Why nothing would be sent (a render error: the delivery would be dead-lettered).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A request as the sink would receive it, secret values redacted.
#[derive(Debug, Serialize)]
pub struct Request {
    /// The HTTP method.
    pub method: String,
    /// The URL.
    pub url: String,
    /// Headers in order.
    pub headers: Vec<(String, String)>,
    /// The body: JSON when it parses, text otherwise.
    pub body: Value,
}

/// Renders `raw` (a Strapi webhook body) through every webhook of `paths`.
pub fn render(paths: &[PathBuf], raw: &[u8]) -> Result<Rendering, serde_json::Error> {
    let event = EventBody::parse(raw)?;
    let (manifests, problems) = Manifests::load(paths);
    let webhooks = manifests
        .webhooks
        .iter()
        .map(|webhook| render_webhook(&manifests, webhook, &event, raw))
        .collect();
    Ok(Rendering { problems, webhooks })
}

fn render_webhook(
    manifests: &Manifests,
    webhook: &Located<StrapiWebhook>,
    event: &EventBody,
    raw: &[u8],
) -> WebhookRendering {
    let secrets = FileSecrets::new(manifests, &webhook.object.spec);
    let instance = manifests.instance(&referenced_instance(&webhook.object));
    // Loopback is the receiver's flag, not the manifests': preview every sink.
    let egress = EgressBase {
        allow_loopback: true,
        ..EgressBase::default()
    };
    let compiled = compile_in_files(webhook, instance, &secrets, &egress);
    let mut rendering = WebhookRendering {
        webhook: ObjectKey::of(&webhook.object).to_string(),
        at: format!("{}:{}", webhook.file.display(), webhook.line),
        skipped: skipped(&webhook.object.spec, event),
        errors: Vec::new(),
        placeholder_secrets: secrets
            .absent_warnings(webhook)
            .into_iter()
            .map(|warning| warning.reason)
            .collect(),
        routes: Vec::new(),
    };
    match compiled {
        Ok(compiled) if rendering.skipped.is_none() => {
            let redactions = secrets.redactions();
            rendering.routes = compiled
                .routes
                .iter()
                .zip(&webhook.object.spec.routes)
                .map(|(route, spec)| render_route(&compiled, route, spec, event, raw, &redactions))
                .collect();
        }
        Ok(_) => {}
        Err(errors) => rendering.errors = errors,
    }
    rendering
}

/// Why the receiver would not route the event through this webhook at all.
fn skipped(spec: &StrapiWebhookSpec, event: &EventBody) -> Option<String> {
    if !spec.enabled {
        return Some("the webhook is disabled (spec.enabled: false)".to_owned());
    }
    let subscribed = spec.events.iter().any(|name| name.as_str() == event.event);
    (!subscribed).then(|| format!("{} is not in spec.events", event.event))
}

fn render_route(
    compiled: &CompiledWebhook,
    route: &CompiledRoute,
    spec: &crate::api::Route,
    event: &EventBody,
    raw: &[u8],
    redactions: &[(String, String)],
) -> RouteRendering {
    let mut rendering = RouteRendering {
        route: route.name().to_owned(),
        sink: route.sink().to_owned(),
        matched: false,
        why: String::new(),
        request: None,
        error: None,
    };
    if !route.listed(event) {
        rendering.why = unlisted(&spec.matches, event);
        return rendering;
    }
    let listed = listed(&spec.matches);
    match route.matches(event) {
        Ok(true) if route.has_filter() => rendering.why = format!("{listed}; the filter is true"),
        Ok(true) => rendering.why = listed,
        Ok(false) => {
            rendering.why = format!("{listed}, but the filter is false");
            return rendering;
        }
        Err(error) => {
            rendering.why = format!("{listed}, but {error}");
            return rendering;
        }
    }
    rendering.matched = true;
    let result = route
        .render(event, raw)
        .map_err(|error| error.to_string())
        .and_then(|payload| match compiled.sink(route.sink()) {
            Some((sink, _)) => preview(sink, PREVIEW_DELIVERY_ID, &[payload]),
            None => Err(format!("no sink named {}", route.sink())),
        });
    match result {
        Ok(request) => rendering.request = Some(shown(&request, redactions)),
        Err(error) => rendering.error = Some(error),
    }
    rendering
}

/// The match lists that let the event through.
fn listed(matches: &crate::api::RouteMatch) -> String {
    let mut parts = Vec::new();
    if let Some(events) = &matches.events {
        parts.push(format!(
            "event in match.events {}",
            list(events.iter().map(|e| e.as_str()))
        ));
    }
    if let Some(models) = &matches.models {
        parts.push(format!(
            "model in match.models {}",
            list(models.iter().map(String::as_str))
        ));
    }
    if let Some(uids) = &matches.uids {
        parts.push(format!(
            "uid in match.uids {}",
            list(uids.iter().map(String::as_str))
        ));
    }
    if parts.is_empty() {
        "no match lists".to_owned()
    } else {
        parts.join(", ")
    }
}

/// The first match list that keeps the event out.
fn unlisted(matches: &crate::api::RouteMatch, event: &EventBody) -> String {
    let missing = |value: &Option<String>| value.clone().unwrap_or_else(|| "(none)".to_owned());
    if let Some(events) = &matches.events
        && !events.iter().any(|name| name.as_str() == event.event)
    {
        let names = list(events.iter().map(|e| e.as_str()));
        return format!("event {} is not in match.events {names}", event.event);
    }
    if let Some(models) = &matches.models
        && !event
            .model
            .as_ref()
            .is_some_and(|model| models.contains(model))
    {
        let names = list(models.iter().map(String::as_str));
        return format!(
            "model {} is not in match.models {names}",
            missing(&event.model)
        );
    }
    let names = list(matches.uids.iter().flatten().map(String::as_str));
    format!("uid {} is not in match.uids {names}", missing(&event.uid))
}

fn list<'a>(names: impl Iterator<Item = &'a str>) -> String {
    format!("[{}]", names.collect::<Vec<_>>().join(", "))
}

/// The request with every Secret value replaced by its label; signatures are derived from a
/// Secret and are left out too.
fn shown(request: &reqwest::Request, redactions: &[(String, String)]) -> Request {
    let redact = |text: &str| {
        redactions
            .iter()
            .fold(text.to_owned(), |text, (value, label)| {
                text.replace(value, label)
            })
    };
    let headers = request
        .headers()
        .iter()
        .map(|(name, value)| {
            let value = String::from_utf8_lossy(value.as_bytes());
            let value = if name == "webhook-signature" {
                "<signature>".to_owned()
            } else {
                redact(&value)
            };
            (name.as_str().to_owned(), value)
        })
        .collect();
    let body = request
        .body()
        .and_then(reqwest::Body::as_bytes)
        .unwrap_or_default();
    Request {
        method: request.method().to_string(),
        url: redact(request.url().as_str()),
        headers,
        body: serde_json::from_slice(body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned())),
    }
}

impl Rendering {
    /// The rendering for people: per webhook, per route, the request or why not.
    pub fn human(&self) -> String {
        let mut text = String::new();
        for problem in &self.problems {
            text.push_str(&format!("{problem}\n"));
        }
        for webhook in &self.webhooks {
            text.push_str(&format!(
                "StrapiWebhook {} ({})\n",
                webhook.webhook, webhook.at
            ));
            for secret in &webhook.placeholder_secrets {
                text.push_str(&format!("  note: {secret}; a placeholder is shown\n"));
            }
            for error in &webhook.errors {
                text.push_str(&format!("  error: {error}\n"));
            }
            if let Some(skipped) = &webhook.skipped {
                text.push_str(&format!("  skipped: {skipped}\n"));
            }
            for route in &webhook.routes {
                text.push_str(&route.human());
            }
        }
        text
    }
}

impl RouteRendering {
    fn human(&self) -> String {
        let verdict = if self.matched {
            "matched"
        } else {
            "not matched"
        };
        let mut text = format!(
            "  route {} -> sink {}: {verdict} ({})\n",
            self.route, self.sink, self.why
        );
        if let Some(error) = &self.error {
            text.push_str(&format!("    render error: {error}\n"));
        }
        if let Some(request) = &self.request {
            text.push_str(&format!("    {} {}\n", request.method, request.url));
            for (name, value) in &request.headers {
                text.push_str(&format!("    {name}: {value}\n"));
            }
            let body = match &request.body {
                Value::String(text) => text.clone(),
                json => serde_json::to_string_pretty(json).unwrap_or_default(),
            };
            for line in body.lines() {
                text.push_str(&format!("    | {line}\n"));
            }
        }
        text
    }
}
