use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::{CustomResource, KubeSchema, core::Duration};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{DURATION_PATTERN, SecretKeyRef};

/// Where a Strapi lives, how the operator authenticates to its admin API, and which
/// `StrapiWebhook`s may send its events where.
///
/// The operator keeps exactly one webhook registered in this Strapi: a catch-all that points at
/// the receiver and subscribes to the union of the events every allowed, enabled `StrapiWebhook`
/// needs. Routing happens in the receiver, so changing a route never touches Strapi.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "webhooks.strapi-operator.dev",
    version = "v1alpha1",
    kind = "StrapiInstance",
    namespaced,
    shortname = "sti",
    category = "strapi",
    status = "StrapiInstanceStatus",
    doc = "A Strapi CMS whose webhooks the operator manages.",
    printcolumn = r#"{"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name": "URL", "type": "string", "jsonPath": ".spec.url"}"#,
    printcolumn = r#"{"name": "Verified", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Verified\")].status"}"#,
    printcolumn = r#"{"name": "Events", "type": "string", "jsonPath": ".status.events", "priority": 1}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct StrapiInstanceSpec {
    /// Base URL of Strapi as the operator reaches it, e.g. `http://strapi.cms.svc:1337`.
    /// The admin API is served under `/admin` of this URL.
    #[schemars(length(min = 1, max = 2048), regex(pattern = r"^https?://"))]
    pub url: String,

    /// How the operator authenticates to Strapi's admin API.
    pub auth: StrapiAuth,

    /// Base URL at which Strapi reaches the receiver, e.g.
    /// `http://strapi-webhook-operator-receiver.strapi-system.svc:8080`. Defaults to the
    /// operator's `--receiver-url`. The instance's endpoint is this URL plus
    /// `/v1/instances/<namespace>/<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048), regex(pattern = r"^https?://"))]
    pub receiver_url: Option<String>,

    /// Which namespaces may hold `StrapiWebhook`s that use this instance. Defaults to the
    /// instance's own namespace only.
    #[serde(default)]
    pub allowed_namespaces: AllowedNamespaces,

    /// Roll this Strapi Deployment after the registration changes. Strapi loads webhooks when it
    /// starts and only the replica that served the admin call learns of a change
    /// (strapi/strapi#22595), so multi-replica Strapi needs this to pick up changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_on_change: Option<RestartTarget>,

    /// Where the sinks of this instance's `StrapiWebhook`s may connect. Loopback, link-local
    /// (including cloud metadata addresses), unspecified addresses and the receiver itself are
    /// always refused; private ranges are refused unless allowed here. Checked on the address
    /// the receiver actually connects to, after DNS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<SinkEgress>,

    /// How often the operator compares the registration in Strapi with the desired one and
    /// repairs drift (Strapi has no watch API). Go duration format, e.g. `5m`.
    #[serde(default = "default_resync_interval")]
    #[schemars(length(max = 64), regex(pattern = DURATION_PATTERN))]
    pub resync_interval: Duration,

    /// How often the operator compares Strapi's content with the events the receiver stored and
    /// recovers what Strapi fired while no receiver answered (gap repair), e.g. `60s`. A check
    /// also runs at once when the receiver restarts or fails to store an event. `0s` turns gap
    /// repair off.
    #[serde(default = "default_repair_interval")]
    #[schemars(length(max = 64), regex(pattern = DURATION_PATTERN))]
    pub repair_interval: Duration,
}

fn default_resync_interval() -> Duration {
    std::time::Duration::from_secs(300).into()
}

fn default_repair_interval() -> Duration {
    std::time::Duration::from_secs(60).into()
}

/// Credentials for Strapi's admin API. Set exactly one of `apiToken` and `credentials`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    cel,
    validation = Rule::new("has(self.apiToken) != has(self.credentials)")
        .message("set exactly one of apiToken and credentials")
)]
pub struct StrapiAuth {
    /// An admin API token, sent as `Authorization: Bearer <token>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_token: Option<SecretKeyRef>,

    /// An admin user's email and password; the operator logs in through `POST /admin/login`
    /// and renews its session when Strapi reports it expired. Use a dedicated admin user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<AdminCredentials>,
}

/// A Secret holding an admin user's email and password.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdminCredentials {
    /// Name of the Secret in the instance's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: String,
    /// Key of the email in the Secret.
    #[serde(default = "default_email_key")]
    pub email_key: String,
    /// Key of the password in the Secret.
    #[serde(default = "default_password_key")]
    pub password_key: String,
}

fn default_email_key() -> String {
    "email".into()
}

fn default_password_key() -> String {
    "password".into()
}

/// Which namespaces may hold `StrapiWebhook`s for an instance, like Gateway API `allowedRoutes`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    cel,
    validation = Rule::new("self.from != 'Selector' || has(self.selector)")
        .message("selector is required when from is Selector")
)]
pub struct AllowedNamespaces {
    /// `Same` (default): only the instance's namespace; `All`: every namespace; `Selector`:
    /// namespaces whose labels match `selector`.
    #[serde(default)]
    pub from: NamespacesFrom,
    /// Label selector for namespaces, used when `from` is `Selector`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
}

/// See `AllowedNamespaces.from`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum NamespacesFrom {
    /// Only the instance's own namespace.
    #[default]
    Same,
    /// Every namespace.
    All,
    /// Namespaces that match the selector.
    Selector,
}

/// Where sinks may connect; see `StrapiInstance.spec.egress`. Whoever may edit the instance
/// decides this for every `StrapiWebhook` that uses it, so keep the instance in the hands of
/// cluster admins.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SinkEgress {
    /// Allow private ranges (10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, 100.64.0.0/10,
    /// fc00::/7), where in-cluster Services live. Off by default.
    #[serde(default)]
    pub allow_private_networks: bool,
    /// Ranges allowed even though they are private, e.g. a Service CIDR: a narrower way to reach
    /// in-cluster sinks than `allowPrivateNetworks`.
    #[serde(
        default,
        rename = "allowedCIDRs",
        skip_serializing_if = "Vec::is_empty"
    )]
    #[schemars(length(max = 64), inner(length(min = 1, max = 64)))]
    pub allowed_cidrs: Vec<String>,
    /// Ranges refused even when otherwise allowed.
    #[serde(default, rename = "deniedCIDRs", skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 64)))]
    pub denied_cidrs: Vec<String>,
    /// When set, sinks may only use these hosts: exact names, or `*.example.com` for any
    /// subdomain.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 253)))]
    pub allowed_hosts: Vec<String>,
    /// Hosts sinks may not use, in the same forms.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 253)))]
    pub denied_hosts: Vec<String>,
}

/// A Deployment in the instance's namespace to roll when the registration changes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestartTarget {
    /// Name of the Strapi Deployment.
    #[schemars(length(min = 1, max = 253))]
    pub deployment: String,
}

/// Observed state of a `StrapiInstance`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct StrapiInstanceStatus {
    /// `Ready`, `Reachable`, `Registered` and `Verified`, each with a reason and message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Id of the managed webhook in Strapi.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration_id: Option<String>,
    /// The receiver endpoint registered in Strapi.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The events the registration subscribes to: the union over every allowed, enabled
    /// `StrapiWebhook`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<String>,
    /// How many `StrapiWebhook`s currently use this instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhooks: Option<i32>,
    /// The Secret holding the shared secret Strapi sends to the receiver.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    /// When Strapi last reached the receiver with the right secret after a trigger.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_verified_time: Option<Time>,
    /// When the operator last rolled `restartOnChange`'s Deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_restart_time: Option<Time>,
    /// Gap repair: what Strapi fired while no receiver answered, recovered from its content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repair: Option<RepairStatus>,
}

/// What gap repair found for an instance.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RepairStatus {
    /// When the last check compared Strapi's content with the stored events. Written with the
    /// rest of the status (at least every `resyncInterval`, and whenever a check recovers
    /// events, finds a gap or fails); the operator's metrics show every check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_check_time: Option<Time>,
    /// Events recovered and stored, marked recovered, since gap repair started for this
    /// instance.
    #[serde(default)]
    pub recovered_events: i64,
    /// When events were last recovered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_recovery_time: Option<Time>,
    /// The last window in which the receiver missed, or may have missed, Strapi's calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_gap: Option<RepairGap>,
    /// Why the last check failed; empty when it succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// A window in which Strapi's calls did not reach the receiver. Creates, updates and
/// publications in it were recovered; deletions and unpublications cannot be seen by listing
/// Strapi's content and may have been missed: check the sinks for them.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RepairGap {
    /// Start of the window.
    pub start: Time,
    /// End of the window.
    pub end: Time,
    /// Events recovered from it.
    #[serde(default)]
    pub recovered_events: i64,
}
