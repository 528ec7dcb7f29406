//! Where sinks may connect. Whoever may create a `StrapiWebhook` chooses its sink URLs and the
//! shared receiver connects to them, so without a policy a sink is a way into the receiver's
//! network: the cloud metadata service, the receiver's own admin port, other tenants' services.
//!
//! The policy is checked twice: on the URL before each request (host names, and IP literals,
//! for which reqwest never resolves) and on every address a host name resolves to, inside the
//! client's resolver ([`PolicyResolver`]), so the address checked is the address connected to
//! and a DNS answer that changes between validation and delivery (rebinding) cannot pass.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
};

use ipnet::IpNet;
use reqwest::{
    Url,
    dns::{Addrs, Name, Resolve, Resolving},
};

/// The part of the policy a cluster admin sets per `StrapiInstance` (`spec.egress`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct EgressRules {
    /// Allow private ranges (10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7), where in-cluster
    /// services live. Off by default.
    pub allow_private_networks: bool,
    /// Ranges allowed even though they are private (a narrower way to reach in-cluster sinks).
    /// Loopback, link-local, metadata and unspecified addresses stay refused.
    pub allowed_cidrs: Vec<IpNet>,
    /// Ranges refused even though they would be allowed.
    pub denied_cidrs: Vec<IpNet>,
    /// When not empty, only these hosts (exact, or `*.example.com` for any subdomain).
    pub allowed_hosts: Vec<String>,
    /// Hosts refused, in the same forms.
    pub denied_hosts: Vec<String>,
}

/// The part of the policy that belongs to the receiver process rather than to an instance.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct EgressBase {
    /// Allow loopback sinks: local mode and tests, where every sink runs on this machine.
    pub allow_loopback: bool,
    /// The receiver's own ports, refused on loopback even when loopback is allowed.
    pub own_ports: Vec<u16>,
    /// The receiver's own addresses besides loopback (its pod IP), refused on every port.
    pub own_addresses: Vec<IpAddr>,
}

/// The whole policy one sink is held to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct EgressPolicy {
    /// The receiver's part.
    pub base: EgressBase,
    /// The instance's part.
    pub rules: EgressRules,
}

// Addresses that answer with credentials in some cloud, beyond 169.254.0.0/16: AWS's IPv6
// metadata endpoint and Alibaba Cloud's.
const METADATA: [IpAddr; 2] = [
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)),
    IpAddr::V4(Ipv4Addr::new(100, 100, 100, 200)),
];

impl EgressPolicy {
    /// Whether a request to `url` may start: its host against the host lists, and when the
    /// host is an IP literal (in any spelling the URL parser accepts: `2852039166`, `0xA9FEA9FE`,
    /// `[::ffff:169.254.169.254]`, ...) the address itself. The error says why, naming only the
    /// host: the rest of a sink URL may be a credential.
    pub fn check_url(&self, url: &Url) -> Result<(), String> {
        let Some(host) = url.host() else {
            return Err("the URL has no host".to_owned());
        };
        let port = url.port_or_known_default().unwrap_or(0);
        let name = match host {
            url::Host::Domain(domain) => domain.trim_end_matches('.').to_ascii_lowercase(),
            url::Host::Ipv4(ip) => ip.to_string(),
            url::Host::Ipv6(ip) => ip.to_string(),
        };
        self.check_host(&name)?;
        let literal = match host {
            url::Host::Domain(domain) => {
                // `localhost` resolves to loopback without asking DNS in most resolvers.
                let domain = domain.trim_end_matches('.').to_ascii_lowercase();
                (domain == "localhost" || domain.ends_with(".localhost"))
                    .then_some(IpAddr::V4(Ipv4Addr::LOCALHOST))
            }
            url::Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
            url::Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
        };
        match literal {
            Some(ip) => self.check_address(SocketAddr::new(ip, port)),
            None => Ok(()),
        }
    }

    /// Whether a connection to `address` is allowed, port included.
    pub fn check_address(&self, address: SocketAddr) -> Result<(), String> {
        let ip = address.ip().to_canonical();
        if (ip.is_loopback() || ip.is_unspecified())
            && self.base.own_ports.contains(&address.port())
        {
            return Err(format!(
                "{address} is the receiver's own port; a sink may not call the receiver"
            ));
        }
        self.check_ip(ip)
    }

    /// Whether connecting to `ip` is allowed on any port.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), String> {
        // `::ffff:169.254.169.254` is 169.254.169.254 on a dual-stack socket.
        let ip = ip.to_canonical();
        let refuse = |what: &str| Err(format!("{ip} is {what}, which sinks may not reach"));
        if ip.is_unspecified() || is_broadcast_or_multicast(ip) {
            return refuse("not a unicast address");
        }
        if is_link_local(ip) || METADATA.contains(&ip) {
            return refuse("link-local or a cloud metadata address");
        }
        if self.base.own_addresses.contains(&ip) {
            return refuse("the receiver's own address");
        }
        if let Some(net) = self.rules.denied_cidrs.iter().find(|net| net.contains(&ip)) {
            return Err(format!("{ip} is in the denied range {net}"));
        }
        if ip.is_loopback() {
            return if self.base.allow_loopback {
                Ok(())
            } else {
                refuse("loopback")
            };
        }
        if is_private(ip)
            && !self.rules.allow_private_networks
            && !self.rules.allowed_cidrs.iter().any(|net| net.contains(&ip))
        {
            return Err(format!(
                "{ip} is in a private range, which sinks may reach only when the StrapiInstance's \
                 spec.egress allows private networks or lists the range in allowedCIDRs"
            ));
        }
        Ok(())
    }

    /// Whether the host name passes the instance's host lists.
    pub fn check_host(&self, host: &str) -> Result<(), String> {
        if self
            .rules
            .denied_hosts
            .iter()
            .any(|pattern| host_matches(pattern, host))
        {
            return Err(format!(
                "host {host} is denied by the StrapiInstance's spec.egress"
            ));
        }
        if !self.rules.allowed_hosts.is_empty()
            && !self
                .rules
                .allowed_hosts
                .iter()
                .any(|pattern| host_matches(pattern, host))
        {
            return Err(format!(
                "host {host} is not in the StrapiInstance's spec.egress.allowedHosts"
            ));
        }
        Ok(())
    }
}

fn host_matches(pattern: &str, host: &str) -> bool {
    let pattern = pattern.trim_end_matches('.').to_ascii_lowercase();
    match pattern.strip_prefix("*.") {
        Some(domain) => host
            .strip_suffix(domain)
            .is_some_and(|label| label.ends_with('.')),
        None => pattern == host,
    }
}

fn is_link_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => ip.is_link_local(),
        IpAddr::V6(ip) => (ip.segments()[0] & 0xffc0) == 0xfe80,
    }
}

fn is_broadcast_or_multicast(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => ip.is_broadcast() || ip.is_multicast(),
        IpAddr::V6(ip) => ip.is_multicast(),
    }
}

fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => {
            let [a, b, ..] = ip.octets();
            // RFC 1918, carrier-grade NAT (RFC 6598) and "this network" 0/8.
            ip.is_private() || (a == 100 && (64..128).contains(&b)) || a == 0
        }
        // Unique local fc00::/7 and the deprecated site-local fec0::/10.
        IpAddr::V6(ip) => {
            (ip.segments()[0] & 0xfe00) == 0xfc00 || (ip.segments()[0] & 0xffc0) == 0xfec0
        }
    }
}

/// A resolver that drops every address the policy refuses, so reqwest never connects to one;
/// a host with no address left fails to resolve, with the reason.
#[derive(Clone, Debug)]
pub(crate) struct PolicyResolver {
    pub(crate) policy: Arc<EgressPolicy>,
}

impl Resolve for PolicyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = Arc::clone(&self.policy);
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let resolved = tokio::net::lookup_host((host.as_str(), 0)).await?;
            let mut refused = None;
            let allowed: Vec<SocketAddr> = resolved
                .filter(|address| match policy.check_ip(address.ip()) {
                    Ok(()) => true,
                    Err(why) => {
                        refused = Some(why);
                        false
                    }
                })
                .collect();
            if allowed.is_empty() {
                let why = refused.unwrap_or_else(|| "no address".to_owned());
                return Err(format!("{host} resolves only to refused addresses: {why}").into());
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strict() -> EgressPolicy {
        EgressPolicy::default()
    }

    fn refused(policy: &EgressPolicy, url: &str) -> bool {
        policy.check_url(&Url::parse(url).unwrap()).is_err()
    }

    #[test]
    fn metadata_in_every_spelling_is_refused() {
        let mut open = strict();
        open.base.allow_loopback = true;
        open.rules.allow_private_networks = true;
        open.rules.allowed_cidrs = vec!["169.254.0.0/16".parse().unwrap()];
        for url in [
            "http://169.254.169.254/latest/meta-data/",
            "http://2852039166/",
            "http://0xA9FEA9FE/",
            "http://0251.0376.0251.0376/",
            "http://[::ffff:169.254.169.254]/",
            "http://[::ffff:a9fe:a9fe]/",
            "http://[fe80::1]/",
            "http://[fd00:ec2::254]/",
            "http://0.0.0.0/",
            "http://[::]/",
        ] {
            assert!(refused(&open, url), "{url}");
        }
    }

    #[test]
    fn loopback_needs_the_receiver_flag_and_own_ports_stay_refused() {
        assert!(refused(&strict(), "http://127.0.0.1:3000/"));
        assert!(refused(&strict(), "http://localhost:3000/"));
        assert!(refused(&strict(), "http://[::1]:3000/"));
        let mut local = strict();
        local.base.allow_loopback = true;
        local.base.own_ports = vec![9091];
        assert!(!refused(&local, "http://127.0.0.1:3000/"));
        assert!(refused(
            &local,
            "http://127.0.0.1:9091/v1/deliveries/replay"
        ));
        assert!(refused(&local, "http://localhost:9091/"));
    }

    #[test]
    fn private_ranges_follow_the_instance_rules() {
        let mut rules = strict();
        assert!(refused(&rules, "http://10.0.0.7/"));
        assert!(!refused(&rules, "https://203.0.113.9/"));
        rules.rules.allowed_cidrs = vec!["10.0.0.0/24".parse().unwrap()];
        assert!(!refused(&rules, "http://10.0.0.7/"));
        assert!(refused(&rules, "http://10.0.1.7/"));
        rules.rules.allow_private_networks = true;
        rules.rules.denied_cidrs = vec!["10.0.1.0/24".parse().unwrap()];
        assert!(!refused(&rules, "http://192.168.1.1/"));
        assert!(refused(&rules, "http://10.0.1.7/"));
        rules.base.own_addresses = vec!["10.0.0.8".parse().unwrap()];
        assert!(refused(&rules, "http://10.0.0.8:3000/"));
    }

    #[tokio::test]
    async fn the_resolver_drops_refused_addresses() {
        let name = || "localhost".parse::<Name>().unwrap();
        let refusing = PolicyResolver {
            policy: Arc::new(strict()),
        };
        let error = match refusing.resolve(name()).await {
            Ok(addresses) => panic!("resolved to {:?}", addresses.collect::<Vec<_>>()),
            Err(error) => error.to_string(),
        };
        assert!(error.contains("loopback"), "{error}");
        let mut local = strict();
        local.base.allow_loopback = true;
        let local = PolicyResolver {
            policy: Arc::new(local),
        };
        let addresses: Vec<SocketAddr> = local.resolve(name()).await.unwrap().collect();
        assert!(addresses.iter().all(|address| address.ip().is_loopback()));
        assert!(!addresses.is_empty());
    }

    #[test]
    fn host_lists_match_exactly_or_by_subdomain() {
        let mut rules = strict();
        rules.rules.allowed_hosts = vec!["*.example.com".into(), "hooks.slack.com".into()];
        rules.rules.denied_hosts = vec!["admin.example.com".into()];
        assert!(!refused(&rules, "https://web.example.com/api"));
        assert!(!refused(&rules, "https://HOOKS.slack.com./services/x"));
        assert!(refused(&rules, "https://example.com/"));
        assert!(refused(&rules, "https://evilexample.com/"));
        assert!(refused(&rules, "https://admin.example.com/"));
    }
}
