//! A `StrapiInstance`'s `spec.egress` applied to a compiled webhook: every sink is held to the
//! instance's rules, and a sink URL the policy refuses is a validation error naming the field,
//! so the controller reports it (`SinksResolved=False`) before any event is sent. Host names are
//! not resolved here; the receiver checks the resolved address when it connects.

use std::net::IpAddr;

use ipnet::IpNet;

use super::{CompiledWebhook, Reason, ValidationError, ValidationErrors};
use crate::{
    api::{Sink, SinkEgress, StrapiWebhookSpec},
    sinks::{EgressPolicy, EgressRules},
};

/// The rules of an instance's `spec.egress` (none set: the defaults). Fails naming the first
/// entry that is not a CIDR or an IP address.
pub fn egress_rules(egress: Option<&SinkEgress>) -> Result<EgressRules, String> {
    let Some(egress) = egress else {
        return Ok(EgressRules::default());
    };
    let cidrs = |field: &str, list: &[String]| {
        list.iter()
            .enumerate()
            .map(|(index, text)| {
                let text = text.trim();
                text.parse::<IpNet>()
                    .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| {
                        format!(
                            "spec.egress.{field}[{index}]: {text:?} is not a CIDR or an address"
                        )
                    })
            })
            .collect::<Result<Vec<_>, _>>()
    };
    let hosts = |list: &[String]| {
        list.iter()
            .map(|host| host.trim().trim_end_matches('.').to_ascii_lowercase())
            .collect()
    };
    Ok(EgressRules {
        allow_private_networks: egress.allow_private_networks,
        allowed_cidrs: cidrs("allowedCIDRs", &egress.allowed_cidrs)?,
        denied_cidrs: cidrs("deniedCIDRs", &egress.denied_cidrs)?,
        allowed_hosts: hosts(&egress.allowed_hosts),
        denied_hosts: hosts(&egress.denied_hosts),
    })
}

/// The problem of sink `index` of a spec whose URL the policy refuses for `why`, on the field
/// that holds the URL (for Slack, the Secret reference: the URL is a credential).
pub fn egress_refused(index: usize, sink: &Sink, why: &str) -> ValidationError {
    let field = if sink.nextjs.is_some() {
        "nextjs.url"
    } else if sink.slack.is_some() {
        "slack.webhookUrlSecretRef"
    } else {
        "http.url"
    };
    ValidationError {
        field: format!("spec.sinks[{index}].{field}"),
        reason: Reason::EgressRefused,
        message: format!("the egress policy refuses this sink: {why}"),
    }
}

/// Holds every sink of `webhook` to `policy.rules` and checks each sink's URL against the whole
/// policy. `spec` is the spec `webhook` was compiled from, for the field names.
pub fn apply_egress(
    webhook: &mut CompiledWebhook,
    spec: &StrapiWebhookSpec,
    policy: &EgressPolicy,
) -> Result<(), ValidationErrors> {
    webhook.hold_to(&policy.rules);
    let mut errors = Vec::new();
    for (index, sink) in spec.sinks.iter().enumerate() {
        let Some((config, _)) = webhook.sinks.get(&sink.name) else {
            continue;
        };
        if let Err(why) = policy.check_url(config.url()) {
            errors.push(egress_refused(index, sink, &why));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ValidationErrors(errors))
    }
}
