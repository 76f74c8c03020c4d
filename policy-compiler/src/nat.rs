//! The service part of a node's IR (SPEC 5): every proxied service port with its frontends and
//! the endpoints that answer them from this node, and the IR's answer to the NAT question.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::{self, Write as _};
use std::net::IpAddr;

use ipnet::IpNet;

use crate::endpoints;
use crate::model::{ObjectKey, Protocol};
use crate::service::{EndpointSlice, Service};

/// An endpoint as NAT sees it: the address and port a connection is translated to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Backend {
    pub addr: IpAddr,
    pub port: u16,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.addr {
            IpAddr::V4(a) => write!(f, "{a}:{}", self.port),
            IpAddr::V6(a) => write!(f, "[{a}]:{}", self.port),
        }
    }
}

/// A service port: which service, and its protocol and number.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServicePortKey {
    pub service: ObjectKey,
    pub protocol: Protocol,
    pub port: u16,
}

impl fmt::Display for ServicePortKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}/{}", self.service, self.protocol, self.port)
    }
}

/// One proxied service port as this node serves it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServicePortRules {
    /// The port's name (`""` when unnamed).
    pub name: String,
    pub cluster_ips: Vec<IpAddr>,
    pub external_ips: Vec<IpAddr>,
    pub lb_ips: Vec<IpAddr>,
    pub node_port: Option<u16>,
    /// Sources allowed to the LoadBalancer IPs; empty: every source.
    pub source_ranges: Vec<IpNet>,
    pub external_local: bool,
    pub internal_local: bool,
    /// ClientIP affinity timeout in seconds.
    pub affinity: Option<u32>,
    /// Endpoints for cluster traffic, sorted.
    pub cluster: Vec<Backend>,
    /// Endpoints on this node, sorted.
    pub local: Vec<Backend>,
}

/// Everything about services that one node programs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceRules {
    /// Service CIDRs: an address in them that no proxied service holds is dropped.
    pub cidrs: BTreeSet<IpNet>,
    /// This node's NodePort addresses (its InternalIPs).
    pub nodeport_addrs: BTreeSet<IpAddr>,
    /// Every node's podCIDRs: traffic from them is pod traffic.
    pub pod_cidrs: BTreeSet<IpNet>,
    /// The ClusterIPs of each proxied service (a live ClusterIP rejects ports it does not serve).
    pub cluster_ips: BTreeMap<ObjectKey, Vec<IpAddr>>,
    pub ports: BTreeMap<ServicePortKey, ServicePortRules>,
}

/// The IR entries of one service on `node`: its ClusterIPs and its ports, or nothing when it is
/// not proxied.
pub fn service_entries(
    service: &Service,
    slices: &[&EndpointSlice],
    node: &str,
) -> (Option<Vec<IpAddr>>, Vec<(ServicePortKey, ServicePortRules)>) {
    if service.unproxied.is_some() {
        return (None, Vec::new());
    }
    let mut ports = Vec::new();
    for port in &service.ports {
        let key = ServicePortKey {
            service: service.key.clone(),
            protocol: port.protocol,
            port: port.port,
        };
        let selected = endpoints::select(service, port, slices, node);
        ports.push((
            key,
            ServicePortRules {
                name: port.name.clone(),
                cluster_ips: service.cluster_ips.clone(),
                external_ips: service.external_ips.clone(),
                lb_ips: service.lb_ips.clone(),
                node_port: port.node_port,
                source_ranges: service.source_ranges.clone(),
                external_local: service.external_local,
                internal_local: service.internal_local,
                affinity: service.affinity,
                cluster: selected.cluster,
                local: selected.local,
            },
        ));
    }
    (Some(service.cluster_ips.clone()), ports)
}

/// How a frontend was reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FrontendKind {
    ClusterIp,
    ExternalIp,
    LoadBalancer,
    NodePort,
}

impl FrontendKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FrontendKind::ClusterIp => "ClusterIP",
            FrontendKind::ExternalIp => "ExternalIP",
            FrontendKind::LoadBalancer => "LoadBalancer",
            FrontendKind::NodePort => "NodePort",
        }
    }
}

/// What NAT does with the first packet of a connection to `addr`, `protocol`, `port`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NatOutcome {
    /// Not a service address: routed as it is.
    Pass,
    /// Translated to one of these (never empty), picked at random. `masquerade`: the source is
    /// replaced by the node's; a client reaching itself (hairpin) is masqueraded besides.
    Dnat {
        backends: Vec<Backend>,
        masquerade: bool,
    },
    /// Refused: TCP reset, ICMP port unreachable.
    Reject,
    Drop,
}

/// A NAT outcome as a packet's fate shows it: a translated connection is masqueraded when the
/// outcome says so or the client reached itself (hairpin). What the evaluators and the packet
/// tracer are compared on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen {
    Pass,
    /// Each endpoint a random pick can reach, and whether the connection is masqueraded there.
    Dnat(BTreeMap<Backend, bool>),
    Reject,
    Drop,
    /// Some ways through the rules translate the packet and others do not (a bug).
    Inconsistent,
}

impl NatOutcome {
    pub fn seen(&self, src: IpAddr) -> Seen {
        match self {
            NatOutcome::Pass => Seen::Pass,
            NatOutcome::Reject => Seen::Reject,
            NatOutcome::Drop => Seen::Drop,
            NatOutcome::Dnat { backends, masquerade } => Seen::Dnat(
                backends
                    .iter()
                    .map(|b| (*b, *masquerade || b.addr == src))
                    .collect(),
            ),
        }
    }
}

fn in_any(cidrs: &BTreeSet<IpNet>, addr: IpAddr) -> bool {
    cidrs.iter().any(|c| c.contains(&addr))
}

fn same_family(a: IpAddr, b: IpAddr) -> bool {
    a.is_ipv4() == b.is_ipv4()
}

impl ServiceRules {
    /// The service port and kind of frontend that `dst` reaches: service addresses first (the
    /// first port by key), then NodePorts on this node's NodePort addresses.
    pub fn frontend(
        &self,
        dst: IpAddr,
        protocol: Protocol,
        port: u16,
    ) -> Option<(&ServicePortKey, FrontendKind)> {
        let by_addr = self.ports.iter().find_map(|(key, rules)| {
            if key.protocol != protocol || key.port != port {
                return None;
            }
            if rules.cluster_ips.contains(&dst) {
                Some((key, FrontendKind::ClusterIp))
            } else if rules.external_ips.contains(&dst) {
                Some((key, FrontendKind::ExternalIp))
            } else if rules.lb_ips.contains(&dst) {
                Some((key, FrontendKind::LoadBalancer))
            } else {
                None
            }
        });
        by_addr.or_else(|| {
            if !self.nodeport_addrs.contains(&dst) {
                return None;
            }
            self.ports
                .iter()
                .find(|(key, rules)| key.protocol == protocol && rules.node_port == Some(port))
                .map(|(key, _)| (key, FrontendKind::NodePort))
        })
    }

    /// The IR's answer to the NAT question for a connection from `src` on this node (a pod of
    /// it, the node itself, or an external client arriving here).
    pub fn decide(
        &self,
        node_addrs: &BTreeSet<IpAddr>,
        src: IpAddr,
        dst: IpAddr,
        protocol: Protocol,
        port: u16,
    ) -> NatOutcome {
        let Some((key, kind)) = self.frontend(dst, protocol, port) else {
            let live = self.cluster_ips.values().flatten().any(|a| *a == dst);
            return if live {
                NatOutcome::Reject
            } else if in_any(&self.cidrs, dst) {
                NatOutcome::Drop
            } else {
                NatOutcome::Pass
            };
        };
        let rules = &self.ports[key];
        if kind == FrontendKind::LoadBalancer
            && !rules.source_ranges.is_empty()
            && !rules.source_ranges.iter().any(|c| c.contains(&src))
        {
            return NatOutcome::Drop;
        }
        let pod_cidrs: BTreeSet<IpNet> = self
            .pod_cidrs
            .iter()
            .filter(|c| same_family(c.network(), src))
            .copied()
            .collect();
        let from_pod = in_any(&pod_cidrs, src);
        // (endpoints are local only, masquerade)
        let (local_only, masquerade) = match kind {
            FrontendKind::ClusterIp => (rules.internal_local, !pod_cidrs.is_empty() && !from_pod),
            _ if !rules.external_local => (false, true),
            _ if from_pod => (false, false),
            _ if node_addrs.contains(&src) => (false, true),
            _ => (true, false),
        };
        let group = if local_only { &rules.local } else { &rules.cluster };
        let backends: Vec<Backend> = group
            .iter()
            .filter(|b| same_family(b.addr, dst))
            .copied()
            .collect();
        // No endpoint: refused, or dropped where the traffic policy that applies is Local.
        let local_policy = if kind == FrontendKind::ClusterIp {
            rules.internal_local
        } else {
            rules.external_local
        };
        if !backends.is_empty() {
            NatOutcome::Dnat { backends, masquerade }
        } else if local_policy {
            NatOutcome::Drop
        } else {
            NatOutcome::Reject
        }
    }

    pub fn is_empty(&self) -> bool {
        *self == ServiceRules::default()
    }

    /// Whether the node needs any NAT objects: a service or a service
    /// CIDR. Node addresses and pod CIDRs alone do not.
    pub fn has_services(&self) -> bool {
        !self.ports.is_empty() || !self.cluster_ips.is_empty() || !self.cidrs.is_empty()
    }

    /// The deterministic text form, appended to the ruleset's dump; empty
    /// when the node has no services.
    pub fn dump(&self, out: &mut String) {
        if !self.has_services() {
            return;
        }
        let join = |items: Vec<String>| items.join(" ");
        let texts = |v: &mut dyn Iterator<Item = String>| v.collect::<Vec<_>>();
        if !self.cidrs.is_empty() {
            let _ = writeln!(
                out,
                "service-cidrs {}",
                join(texts(&mut self.cidrs.iter().map(ToString::to_string)))
            );
        }
        if !self.nodeport_addrs.is_empty() {
            let _ = writeln!(
                out,
                "nodeport-addrs {}",
                join(texts(&mut self.nodeport_addrs.iter().map(ToString::to_string)))
            );
        }
        if !self.pod_cidrs.is_empty() {
            let _ = writeln!(
                out,
                "pod-cidrs {}",
                join(texts(&mut self.pod_cidrs.iter().map(ToString::to_string)))
            );
        }
        for (service, ips) in &self.cluster_ips {
            let _ = writeln!(
                out,
                "service {service} cluster-ips={}",
                join(texts(&mut ips.iter().map(ToString::to_string)))
            );
        }
        for (key, r) in &self.ports {
            let addrs = |label: &str, v: &[IpAddr]| {
                if v.is_empty() {
                    String::new()
                } else {
                    format!(
                        " {label}={}",
                        texts(&mut v.iter().map(ToString::to_string)).join(",")
                    )
                }
            };
            let mut line = format!("service-port {key} name={:?}", r.name);
            line.push_str(&addrs("cluster-ips", &r.cluster_ips));
            line.push_str(&addrs("external-ips", &r.external_ips));
            line.push_str(&addrs("lb-ips", &r.lb_ips));
            if let Some(n) = r.node_port {
                let _ = write!(line, " node-port={n}");
            }
            if !r.source_ranges.is_empty() {
                let ranges = texts(&mut r.source_ranges.iter().map(ToString::to_string));
                let _ = write!(line, " source-ranges={}", ranges.join(","));
            }
            if r.external_local {
                line.push_str(" etp=Local");
            }
            if r.internal_local {
                line.push_str(" itp=Local");
            }
            if let Some(t) = r.affinity {
                let _ = write!(line, " affinity={t}s");
            }
            let _ = writeln!(out, "{line}");
            let backends = |v: &[Backend]| join(texts(&mut v.iter().map(ToString::to_string)));
            let _ = writeln!(out, "  cluster: {}", backends(&r.cluster));
            let _ = writeln!(out, "  local: {}", backends(&r.local));
        }
    }
}
