//! Which engine endpoints a trigger may name, and which addresses the
//! scaler may connect to. Anyone who can write a ScaledObject controls
//! `engineEndpoints`, so by default an endpoint is a Service in the
//! ScaledObject's own namespace, and every address a name resolves to is
//! checked before any connection: DNS cannot point an allowed name at the
//! cloud's metadata service, this node's loopback, or the scaler itself.
//! Pure: names, addresses and rules in, a verdict out; no socket is opened
//! here, so every refusal is tested without traffic.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The flag (and its environment variable) that sets the allowed ranges.
pub const ALLOW_FLAG: &str = "--engine-allow-cidrs";
/// The flag that lets a trigger name other namespaces and IP addresses.
pub const ANY_NAMESPACE_FLAG: &str = "--engine-any-namespace";
/// The flag that names the cluster's DNS domain.
pub const CLUSTER_DOMAIN_FLAG: &str = "--cluster-domain";

/// The ranges engine endpoints may resolve to unless the operator names
/// others: the private and shared (carrier-grade NAT) ranges, where pod and
/// Service addresses live.
pub const DEFAULT_ALLOWED: [&str; 5] = [
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "fc00::/7",
];

/// Addresses refused whatever the allowed ranges, unless a range named
/// explicitly lies inside the block (`127.0.0.0/8` allows loopback; a
/// wider range such as `0.0.0.0/0` does not).
const ALWAYS_REFUSED: [(&str, &str); 9] = [
    ("127.0.0.0/8", "loopback"),
    (
        "169.254.0.0/16",
        "link-local (the cloud metadata service lives here)",
    ),
    ("0.0.0.0/8", "unspecified"),
    ("224.0.0.0/4", "multicast"),
    ("255.255.255.255/32", "broadcast"),
    ("::1/128", "loopback"),
    ("fe80::/10", "link-local"),
    ("::/128", "unspecified"),
    ("ff00::/8", "multicast"),
];

/// An address range, `ADDRESS/PREFIX`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `10.0.0.0/8` or `fc00::/7`; host bits must be zero.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (address, prefix) = text
            .split_once('/')
            .ok_or_else(|| format!("{text:?} is not ADDRESS/PREFIX, e.g. 10.0.0.0/8"))?;
        let network: IpAddr = address
            .parse()
            .map_err(|_| format!("{text:?}: {address:?} is not an IP address"))?;
        let bits = if network.is_ipv4() { 32 } else { 128 };
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| u32::from(*p) <= bits)
            .ok_or_else(|| format!("{text:?}: the prefix must be 0 to {bits}"))?;
        let cidr = Cidr { network, prefix };
        if cidr.masked(network) != network {
            return Err(format!(
                "{text:?} has host bits set; the network is {}/{prefix}",
                cidr.masked(network)
            ));
        }
        Ok(cidr)
    }

    /// Whether `ip` is in the range (IPv4-mapped IPv6 addresses count as
    /// their IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        ip.is_ipv4() == self.network.is_ipv4() && self.masked(ip) == self.network
    }

    /// Whether every address of `self` is in `outer`.
    fn within(&self, outer: &Cidr) -> bool {
        self.prefix >= outer.prefix && outer.contains(self.network)
    }

    fn masked(&self, ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V4(v4) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask))
            }
            IpAddr::V6(v6) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
            }
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// `::ffff:a.b.c.d` as `a.b.c.d`, so that a mapped address meets the IPv4
/// rules.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Parses a comma-separated list of ranges (`--engine-allow-cidrs`).
pub fn parse_cidrs(text: &str) -> Result<Vec<Cidr>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(Cidr::parse)
        .collect()
}

/// The rules an engine endpoint and its addresses must meet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointPolicy {
    /// Where endpoints may resolve to.
    pub allowed: Vec<Cidr>,
    /// Other namespaces' Services and IP literals may be named.
    pub any_namespace: bool,
    /// The cluster's DNS domain (`cluster.local`).
    pub cluster_domain: String,
    /// This scaler's own listening ports, refused on `own_addresses`.
    pub own_ports: Vec<u16>,
    /// This node's own addresses (loopback is refused anyway).
    pub own_addresses: Vec<IpAddr>,
}

impl Default for EndpointPolicy {
    fn default() -> Self {
        Self {
            allowed: DEFAULT_ALLOWED
                .iter()
                .map(|c| Cidr::parse(c).expect("a valid default range"))
                .collect(),
            any_namespace: false,
            cluster_domain: String::from("cluster.local"),
            own_ports: Vec::new(),
            own_addresses: Vec::new(),
        }
    }
}

/// Why an address may not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// In a block refused whatever the flags (loopback, link-local, …).
    Always { class: &'static str },
    /// Outside every allowed range.
    NotAllowed { allowed: Vec<Cidr> },
    /// One of this scaler's own listening sockets.
    OwnPort,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Always { class } => write!(
                f,
                "refused: the address is {class}, never read (unless {ALLOW_FLAG} names a range inside it)"
            ),
            Refusal::NotAllowed { allowed } => {
                let ranges: Vec<String> = allowed.iter().map(Cidr::to_string).collect();
                write!(
                    f,
                    "refused: the address is outside {ALLOW_FLAG} ({})",
                    ranges.join(", ")
                )
            }
            Refusal::OwnPort => f.write_str("refused: the address is this scaler's own listener"),
        }
    }
}

impl EndpointPolicy {
    /// Whether the scaler may connect to `address`.
    pub fn check_address(&self, address: SocketAddr) -> Result<(), Refusal> {
        let ip = canonical(address.ip());
        let named = self.allowed.iter().filter(|r| r.contains(ip));
        for (block, class) in ALWAYS_REFUSED {
            let block = Cidr::parse(block).expect("a valid built-in range");
            if block.contains(ip) && !named.clone().any(|r| r.within(&block)) {
                return Err(Refusal::Always { class });
            }
        }
        if named.clone().next().is_none() {
            return Err(Refusal::NotAllowed {
                allowed: self.allowed.clone(),
            });
        }
        let own = self.own_addresses.iter().any(|a| canonical(*a) == ip) || ip.is_loopback();
        if own && self.own_ports.contains(&address.port()) {
            return Err(Refusal::OwnPort);
        }
        Ok(())
    }

    /// The host to resolve for an endpoint named in a ScaledObject of
    /// `namespace`: a bare Service name expanded to the ScaledObject's
    /// namespace (the scaler's own search path would pick its own), any
    /// other form as given, once allowed. The error names the rule and the
    /// flag that relaxes it.
    pub fn check_host(&self, host: &str, namespace: &str) -> Result<String, String> {
        let labels: Vec<&str> = host.split('.').collect();
        // `localhost` is this host (RFC 6761), never a Service: not
        // expanded, and outside the cluster's Services.
        let local = labels.last() == Some(&"localhost");
        if host.parse::<IpAddr>().is_err() && labels.len() == 1 && !local {
            return Ok(format!("{host}.{namespace}.svc.{}", self.cluster_domain));
        }
        if self.any_namespace {
            return Ok(host.to_string());
        }
        let domain: Vec<&str> = self.cluster_domain.split('.').collect();
        let in_namespace = |ns: &str| ns == namespace;
        let allowed = host.parse::<IpAddr>().is_err()
            && !local
            && match labels.as_slice() {
                [_, ns] | [_, ns, "svc"] => in_namespace(ns),
                [_, ns, "svc", rest @ ..] => in_namespace(ns) && rest == domain.as_slice(),
                _ => false,
            };
        if allowed {
            return Ok(host.to_string());
        }
        let what = if host.parse::<IpAddr>().is_ok() {
            "an IP address".to_string()
        } else {
            match labels.as_slice() {
                [_, ns] | [_, ns, "svc", ..] if *ns != namespace && !local => {
                    format!("a Service in namespace {ns:?}")
                }
                _ => "a name outside the cluster's Services".to_string(),
            }
        };
        Err(format!(
            "names {host:?}, {what}; an engine endpoint must be a Service in the ScaledObject's namespace {namespace:?} (SVC, SVC.{namespace}, SVC.{namespace}.svc or SVC.{namespace}.svc.{}); the operator's {ANY_NAMESPACE_FLAG} allows other namespaces and IP addresses",
            self.cluster_domain
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ip: &str) -> SocketAddr {
        SocketAddr::new(ip.parse().unwrap(), 8000)
    }

    #[test]
    fn hard_blocks_are_refused_whatever_the_ranges_unless_named_inside_them() {
        let default = EndpointPolicy::default();
        for (ip, class) in [
            ("169.254.169.254", "link-local"),
            ("127.0.0.1", "loopback"),
            ("0.0.0.0", "unspecified"),
            ("224.0.0.251", "multicast"),
            ("255.255.255.255", "broadcast"),
            ("::1", "loopback"),
            ("fe80::1", "link-local"),
            ("::", "unspecified"),
            ("ff02::1", "multicast"),
            // An IPv4-mapped metadata address is the metadata address.
            ("::ffff:169.254.169.254", "link-local"),
        ] {
            let refused = default.check_address(at(ip)).unwrap_err();
            assert!(
                matches!(&refused, Refusal::Always { class: c } if c.starts_with(class)),
                "{ip}: {refused:?}"
            );
        }
        // A range that covers everything does not unlock them ...
        let wide = EndpointPolicy {
            allowed: parse_cidrs("0.0.0.0/0,::/0").unwrap(),
            ..EndpointPolicy::default()
        };
        assert!(wide.check_address(at("169.254.169.254")).is_err());
        assert!(wide.check_address(at("127.0.0.1")).is_err());
        assert_eq!(wide.check_address(at("8.8.8.8")), Ok(()));
        // ... a range inside the block does, and only that range.
        let lab = EndpointPolicy {
            allowed: parse_cidrs("127.0.0.0/8").unwrap(),
            ..EndpointPolicy::default()
        };
        assert_eq!(lab.check_address(at("127.0.0.2")), Ok(()));
        assert!(lab.check_address(at("169.254.169.254")).is_err());
        assert!(matches!(
            lab.check_address(at("10.0.0.1")),
            Err(Refusal::NotAllowed { .. })
        ));
    }

    #[test]
    fn only_the_allowed_ranges_are_read() {
        let default = EndpointPolicy::default();
        for ip in [
            "10.1.2.3",
            "172.31.255.1",
            "192.168.0.9",
            "100.64.0.1",
            "fd00::5",
        ] {
            assert_eq!(default.check_address(at(ip)), Ok(()), "{ip}");
        }
        for ip in [
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "2001:db8::1",
            "11.0.0.1",
        ] {
            let refused = default.check_address(at(ip)).unwrap_err();
            assert!(matches!(refused, Refusal::NotAllowed { .. }), "{ip}");
            assert!(
                refused
                    .to_string()
                    .contains("outside --engine-allow-cidrs (10.0.0.0/8, "),
                "{refused}"
            );
        }
    }

    #[test]
    fn the_scalers_own_ports_on_this_node_are_refused() {
        let policy = EndpointPolicy {
            own_ports: vec![6000, 9090],
            own_addresses: vec!["10.0.0.7".parse().unwrap()],
            ..EndpointPolicy::default()
        };
        assert_eq!(
            policy.check_address(SocketAddr::new("10.0.0.7".parse().unwrap(), 6000)),
            Err(Refusal::OwnPort)
        );
        assert_eq!(
            policy.check_address(SocketAddr::new("10.0.0.7".parse().unwrap(), 8000)),
            Ok(())
        );
        assert_eq!(
            policy.check_address(SocketAddr::new("10.0.0.8".parse().unwrap(), 6000)),
            Ok(())
        );
        // On loopback (allowed for a lab) too.
        let lab = EndpointPolicy {
            allowed: parse_cidrs("127.0.0.0/8").unwrap(),
            ..policy
        };
        assert_eq!(
            lab.check_address(SocketAddr::new("127.0.0.1".parse().unwrap(), 9090)),
            Err(Refusal::OwnPort)
        );
    }

    #[test]
    fn an_endpoint_is_a_service_of_the_scaledobjects_namespace() {
        let policy = EndpointPolicy::default();
        // A bare name is the ScaledObject's namespace's, not the scaler's.
        assert_eq!(
            policy.check_host("vllm", "ml").unwrap(),
            "vllm.ml.svc.cluster.local"
        );
        for host in ["vllm.ml", "vllm.ml.svc", "vllm.ml.svc.cluster.local"] {
            assert_eq!(policy.check_host(host, "ml").unwrap(), host);
        }
        for (host, what) in [
            ("vllm.other", "a Service in namespace \"other\""),
            (
                "vllm.other.svc.cluster.local",
                "a Service in namespace \"other\"",
            ),
            ("10.0.0.9", "an IP address"),
            ("fd00::9", "an IP address"),
            (
                "metadata.google.internal",
                "a name outside the cluster's Services",
            ),
            ("localhost", "a name outside the cluster's Services"),
            ("app.localhost", "a name outside the cluster's Services"),
            (
                "vllm.ml.svc.evil.example",
                "a name outside the cluster's Services",
            ),
        ] {
            let error = policy.check_host(host, "ml").unwrap_err();
            assert!(
                error.contains(what) && error.contains("--engine-any-namespace"),
                "{host}: {error}"
            );
        }
        let open = EndpointPolicy {
            any_namespace: true,
            ..EndpointPolicy::default()
        };
        for host in [
            "vllm.other",
            "10.0.0.9",
            "metadata.google.internal",
            "localhost",
        ] {
            assert_eq!(open.check_host(host, "ml").unwrap(), host);
        }
        assert_eq!(
            open.check_host("vllm", "ml").unwrap(),
            "vllm.ml.svc.cluster.local"
        );
    }

    #[test]
    fn ranges_parse_strictly() {
        assert_eq!(parse_cidrs("10.0.0.0/8, fc00::/7").unwrap().len(), 2);
        for bad in ["10.0.0.1/8", "10.0.0.0", "10.0.0.0/33", "x/8", "::/129"] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
        assert!(Cidr::parse("0.0.0.0/0")
            .unwrap()
            .contains("1.2.3.4".parse().unwrap()));
        assert!(!Cidr::parse("10.0.0.0/8")
            .unwrap()
            .contains("fd00::1".parse().unwrap()));
    }
}
