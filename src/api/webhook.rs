use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema, core::Duration};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{DNS_LABEL_PATTERN, DURATION_PATTERN, NAME_MAX_LENGTH, SecretKeyRef, StrapiEvent};

// Bounds that keep the CEL rules below within the API server's cost budget. Raising one raises
// the estimated cost of every rule that walks the list; `crd_rules_stay_within_bounds` fails first.
pub(crate) const MAX_SINKS: u32 = 16;
pub(crate) const MAX_ROUTES: u32 = 64;
pub(crate) const MAX_TEMPLATE_LENGTH: u32 = 8192;
pub(crate) const MAX_FILTER_LENGTH: u32 = crate::routing::MAX_FILTER_CHARS as u32;

/// Sends Strapi events to Next.js, Slack and HTTP sinks, chosen and shaped by routes.
///
/// Events arrive through the `StrapiInstance` named in `instanceRef`; the operator subscribes
/// that instance to `events`. Each event is stored durably by the receiver, matched against
/// `routes`, and delivered to each matching route's sink at least once, with retries,
/// rate limits and dead-lettering as set in the sink's `delivery`.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "webhooks.strapi-operator.dev",
    version = "v1alpha1",
    kind = "StrapiWebhook",
    namespaced,
    shortname = "swh",
    category = "strapi",
    status = "StrapiWebhookStatus",
    doc = "Routes Strapi CMS events to Next.js, Slack and HTTP sinks.",
    printcolumn = r#"{"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name": "Instance", "type": "string", "jsonPath": ".spec.instanceRef.name"}"#,
    printcolumn = r#"{"name": "Sinks", "type": "string", "jsonPath": ".spec.sinks[*].name"}"#,
    printcolumn = r#"{"name": "Events", "type": "string", "jsonPath": ".spec.events"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    cel,
    validation = Rule::new("self.routes.all(r, self.sinks.exists(s, s.name == r.sink))")
        .message("every route's sink must name an entry of sinks")
        .field_path(".routes"),
    validation = Rule::new("self.routes.all(r, (!has(r.nextjs) || self.sinks.exists(s, s.name == r.sink && has(s.nextjs))) && (!has(r.slack) || self.sinks.exists(s, s.name == r.sink && has(s.slack))) && (!has(r.http) || self.sinks.exists(s, s.name == r.sink && has(s.http))))")
        .message("a route's nextjs, slack or http settings must match the kind of the sink it names")
        .field_path(".routes"),
    validation = Rule::new("self.routes.all(r, !has(r.match.events) || r.match.events.all(e, e in self.events))")
        .message("a route can only match events listed in spec.events")
        .field_path(".routes")
)]
pub struct StrapiWebhookSpec {
    /// The `StrapiInstance` whose events this webhook routes.
    pub instance_ref: InstanceRef,

    /// The Strapi events to subscribe to.
    #[schemars(length(min = 1, max = 11))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub events: Vec<StrapiEvent>,

    /// Set to false to stop routing without deleting the resource. Events already stored are
    /// still delivered.
    #[serde(default = "default_true")]
    pub enabled: bool,

    /// Where events go. Each sink has a unique name and exactly one of `nextjs`, `slack`, `http`.
    #[schemars(length(min = 1, max = MAX_SINKS))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub sinks: Vec<Sink>,

    /// Which events go to which sink, and what is sent. An event is delivered once per matching
    /// route.
    #[schemars(length(min = 1, max = MAX_ROUTES))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub routes: Vec<Route>,
}

fn default_true() -> bool {
    true
}

/// A reference to a `StrapiInstance`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstanceRef {
    /// Name of the `StrapiInstance`.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Namespace of the `StrapiInstance`; defaults to this resource's namespace. The instance
    /// must allow this namespace in `allowedNamespaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub namespace: Option<String>,
}

/// A destination for events. Set exactly one of `nextjs`, `slack` and `http`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    cel,
    validation = Rule::new("[has(self.nextjs), has(self.slack), has(self.http)].filter(k, k).size() == 1")
        .message("set exactly one of nextjs, slack and http")
)]
pub struct Sink {
    /// Unique name of the sink within this resource; routes refer to it. A DNS label.
    #[schemars(length(min = 1, max = NAME_MAX_LENGTH), regex(pattern = DNS_LABEL_PATTERN))]
    pub name: String,

    /// A Next.js app that revalidates its cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nextjs: Option<NextjsSink>,

    /// A Slack incoming webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slack: Option<SlackSink>,

    /// Any HTTP endpoint, such as a CRM or ERP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpSink>,

    /// Timeouts, retries and rate limits for this sink. Defaults suit each sink kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<DeliveryPolicy>,
}

/// A Next.js app's revalidation route handler.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct NextjsSink {
    /// URL of the route handler, e.g. `https://www.example.com/api/revalidate`.
    #[schemars(length(min = 1, max = 2048), regex(pattern = r"^https?://"))]
    pub url: String,

    /// The secret the handler checks, sent in `secretHeader`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeyRef>,

    /// Header that carries the secret.
    #[serde(default = "default_secret_header")]
    #[schemars(length(min = 1, max = 256), regex(pattern = r"^[A-Za-z0-9-]+$"))]
    pub secret_header: String,

    /// `Forward` sends Strapi's payload unchanged, so the usual hand-written handler (one that
    /// calls `revalidateTag(model)`) keeps working. `Revalidate` sends
    /// `{"tags": [...], "paths": [{"path": ...}, {"path": ..., "type": "page"|"layout"}]}`
    /// computed by the routes' `nextjs.tags` and `nextjs.paths`, merged over `coalesceWindow`.
    #[serde(default)]
    pub mode: NextjsMode,

    /// In `Revalidate` mode, revalidations for this sink that fall within this window are sent
    /// as one call with the union of their tags and paths, so a bulk import does not become one
    /// request per entry.
    #[serde(default = "default_coalesce_window")]
    #[schemars(length(max = 64), regex(pattern = DURATION_PATTERN))]
    pub coalesce_window: Duration,
}

fn default_secret_header() -> String {
    "x-webhook-secret".into()
}

fn default_coalesce_window() -> Duration {
    std::time::Duration::from_millis(250).into()
}

/// See `NextjsSink.mode`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum NextjsMode {
    /// Send Strapi's payload as it is.
    #[default]
    Forward,
    /// Send the tags and paths computed by the routes.
    Revalidate,
}

/// A Slack incoming webhook.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SlackSink {
    /// The Secret key holding the incoming webhook URL (`https://hooks.slack.com/services/...`).
    /// Slack treats that URL as a credential.
    pub webhook_url_secret_ref: SecretKeyRef,
}

/// A generic HTTP endpoint.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpSink {
    /// The URL to call.
    #[schemars(length(min = 1, max = 2048), regex(pattern = r"^https?://"))]
    pub url: String,

    /// The HTTP method.
    #[serde(default)]
    pub method: HttpMethod,

    /// Extra request headers, each with a literal value or one from a Secret.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub headers: Vec<HttpHeader>,

    /// Sign each request the Standard Webhooks way (`webhook-id`, `webhook-timestamp`,
    /// `webhook-signature`), so the receiver of the call can verify it came from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing: Option<Signing>,
}

/// See `HttpSink.method`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum HttpMethod {
    /// POST (default).
    #[default]
    #[serde(rename = "POST")]
    Post,
    /// PUT.
    #[serde(rename = "PUT")]
    Put,
    /// PATCH.
    #[serde(rename = "PATCH")]
    Patch,
}

/// A request header. Set exactly one of `value` and `valueFrom`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    cel,
    validation = Rule::new("has(self.value) != has(self.valueFrom)")
        .message("set exactly one of value and valueFrom")
)]
pub struct HttpHeader {
    /// Header name.
    #[schemars(
        length(min = 1, max = 256),
        regex(pattern = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
    )]
    pub name: String,
    /// A literal value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub value: Option<String>,
    /// A value read from a Secret, e.g. `Bearer <token>` for `Authorization`. The whole value
    /// comes from the Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<HeaderValueSource>,
}

/// Where a header value comes from.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeaderValueSource {
    /// A key in a Secret in this namespace.
    pub secret_key_ref: SecretKeyRef,
    /// Text put before the Secret's value, e.g. `Bearer ` for a bare token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub prefix: Option<String>,
}

/// Standard Webhooks signing.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Signing {
    /// Secret key holding the signing secret in Standard Webhooks form (`whsec_` + base64). During
    /// a rotation the value may hold several secrets separated by spaces; each signs the request.
    pub secret_ref: SecretKeyRef,
}

/// How a sink's deliveries are retried and paced.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryPolicy {
    /// Timeout of one attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), regex(pattern = DURATION_PATTERN))]
    pub timeout: Option<Duration>,
    /// Attempts before a delivery is dead-lettered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub max_attempts: Option<i32>,
    /// Age after which a delivery that still fails is dead-lettered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), regex(pattern = DURATION_PATTERN))]
    pub max_age: Option<Duration>,
    /// Exponential backoff between attempts, with jitter. A `Retry-After` answer wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Backoff>,
    /// Token-bucket rate limit for this sink.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// Deliveries in flight to this sink at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 256))]
    pub concurrency: Option<i32>,
}

/// Exponential backoff.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Backoff {
    /// Delay before the first retry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), regex(pattern = DURATION_PATTERN))]
    pub initial: Option<Duration>,
    /// Upper bound of the delay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), regex(pattern = DURATION_PATTERN))]
    pub max: Option<Duration>,
}

/// A token bucket.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RateLimit {
    /// Sustained requests per second.
    #[schemars(range(min = 1, max = 10000))]
    pub per_second: i32,
    /// Requests allowed at once above the sustained rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub burst: Option<i32>,
}

/// Which events go to one sink, and what is sent.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    /// Unique name of the route within this resource; deliveries and metrics carry it.
    #[schemars(length(min = 1, max = NAME_MAX_LENGTH), regex(pattern = DNS_LABEL_PATTERN))]
    pub name: String,

    /// Name of the sink in `spec.sinks`.
    #[schemars(length(min = 1, max = NAME_MAX_LENGTH))]
    pub sink: String,

    /// Which events the route takes. An empty match takes every event of `spec.events`.
    #[serde(default, rename = "match")]
    pub matches: RouteMatch,

    /// A CEL expression over the event that must be true for the route to take it, e.g.
    /// `event == 'entry.publish' && entry.slug != ''`. Variables: `event`, `model`, `uid`,
    /// `entry` (map, may be null), `media` (map, may be null), `createdAt` (string).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = MAX_FILTER_LENGTH))]
    pub filter: Option<String>,

    /// What a Next.js sink in `Revalidate` mode revalidates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nextjs: Option<NextjsRoute>,

    /// What a Slack sink posts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slack: Option<SlackRoute>,

    /// What an HTTP sink receives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpRoute>,
}

/// Conditions on an event's name and content type. Each list that is set must contain the
/// event's value; lists that are not set match everything.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouteMatch {
    /// Model names as Strapi sends them in `model`, e.g. `article`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 256)))]
    pub models: Option<Vec<String>>,
    /// Content-type uids as Strapi sends them in `uid`, e.g. `api::article.article`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 256)))]
    pub uids: Option<Vec<String>>,
    /// Events, a subset of `spec.events`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 11))]
    pub events: Option<Vec<StrapiEvent>>,
}

/// Tags and paths to revalidate. Every string is a template over the event (minijinja syntax:
/// `{{ entry.slug }}`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct NextjsRoute {
    /// Cache tags for `revalidateTag`, e.g. `{{ model }}`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(min = 1, max = 1024)))]
    pub tags: Vec<String>,
    /// Paths for `revalidatePath`, e.g. `/articles/{{ entry.slug }}`. A path whose template
    /// needs an entry field that the event lacks is skipped, and the tags are still sent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub paths: Vec<RevalidatePath>,
}

/// A path for `revalidatePath`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RevalidatePath {
    /// The path template: a literal path such as `/articles/{{ entry.slug }}`, or a Next.js
    /// route pattern such as `/articles/[slug]`.
    #[schemars(length(min = 1, max = 1024))]
    pub path: String,
    /// The second argument of `revalidatePath(path, type)`; see `PathKind`.
    // schemars shows the enum's doc for an optional enum field, so the user-facing text is there.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<PathKind>,
}

/// Leave unset for a literal path: Next.js then revalidates exactly that URL. Set it, as in
/// `revalidatePath(path, type)`, only when `path` is a route pattern: `page` revalidates every
/// page of the pattern (`/articles/[slug]`), `layout` the layout at that path and every page
/// below it (`/` with `layout` is the whole site). Next.js ignores a literal path such as
/// `/articles/hello` sent with a type, so validation warns about a templated path with one.
/// Sent to the handler only when set.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PathKind {
    /// Every page of a route pattern such as `/articles/[slug]`.
    Page,
    /// A layout and every page below it.
    Layout,
}

/// A Slack message. Templates over the event (minijinja syntax).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SlackRoute {
    /// Message text, e.g. `New comment from {{ entry.author }}`. Also the notification
    /// fallback when `blocks` is set.
    #[schemars(length(min = 1, max = MAX_TEMPLATE_LENGTH))]
    pub text: String,
    /// Optional Block Kit blocks: a template that renders to a JSON array.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = MAX_TEMPLATE_LENGTH))]
    pub blocks: Option<String>,
}

/// An HTTP request body.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpRoute {
    /// A template that renders to the JSON body, e.g.
    /// `{"email": {{ entry.email | tojson }}}`. Without it, Strapi's payload is sent as it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = MAX_TEMPLATE_LENGTH))]
    pub body: Option<String>,
}

/// Observed state of a `StrapiWebhook`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct StrapiWebhookStatus {
    /// `Ready`, `RoutesValid`, `SinksResolved`, `Registered` and `Routed`, each with a reason
    /// and message, plus `ModelsKnown` (a warning, not part of `Ready`). `Routed` is true once
    /// every live receiver routes events with this `metadata.generation`, so `Ready` means the
    /// next event is routed with the current spec; until then `Ready` is false with reason
    /// `WaitingForReceiver`. `Routed` is reported once the webhook is valid and registered.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The receiver endpoint Strapi sends this webhook's events to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Delivery counters per sink, as reported by the receiver.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub sinks: Vec<SinkStatus>,
}

/// Delivery counters of one sink since the receiver started tracking it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SinkStatus {
    /// The sink's name.
    pub name: String,
    /// Deliveries that succeeded.
    #[serde(default)]
    pub delivered: i64,
    /// Attempts that failed and were retried.
    #[serde(default)]
    pub failed: i64,
    /// Deliveries given up on; `deliveries list --dead` shows them, `deliveries replay` retries.
    #[serde(default)]
    pub dead_lettered: i64,
    /// Deliveries waiting to be sent.
    #[serde(default)]
    pub pending: i64,
    /// True while the receiver holds deliveries back, e.g. after Slack said the webhook is gone.
    #[serde(default)]
    pub paused: bool,
    /// When a delivery last succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success_time: Option<Time>,
    /// The last failure, as the sink answered it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}
