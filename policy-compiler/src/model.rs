//! Internal model types: the few fields of Namespaces, Pods, Nodes and NetworkPolicies that policy depends on.
//!
//! Everything after lowering (`crate::lower`) works on these types only. They are plain data in
//! ordered collections so that every walk over them is deterministic.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::selector::Selector;
use crate::service::{EndpointSlice, Service};

/// The label every namespace carries; the API server sets it to the namespace's name.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

pub type Labels = BTreeMap<String, String>;

/// `namespace/name` of a namespaced object. Orders by namespace, then name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ObjectKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A transport protocol that NetworkPolicy ports can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    pub const ALL: [Protocol; 3] = [Protocol::Tcp, Protocol::Udp, Protocol::Sctp];

    /// Parses the API spelling (`TCP`, `UDP`, `SCTP`); the API is case-sensitive and so are we.
    pub fn parse(text: &str) -> Option<Protocol> {
        match text {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Namespace {
    pub name: String,
    /// Always holds `kubernetes.io/metadata.name: <name>`.
    pub labels: Labels,
}

impl Namespace {
    /// A namespace with the labels given plus the name label the API server enforces.
    pub fn new(name: impl Into<String>, mut labels: Labels) -> Self {
        let name = name.into();
        labels.insert(NAMESPACE_NAME_LABEL.to_string(), name.clone());
        Namespace { name, labels }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Pending,
    Running,
    Succeeded,
    Failed,
    Unknown,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ContainerPort {
    pub name: Option<String>,
    pub number: u16,
    pub protocol: Protocol,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pod {
    pub key: ObjectKey,
    pub labels: Labels,
    pub node: String,
    pub host_network: bool,
    pub phase: Phase,
    pub ips: Vec<IpAddr>,
    /// Ports of the containers and of the restartable init containers, in spec order.
    pub ports: Vec<ContainerPort>,
}

impl Pod {
    /// Whether policy applies to this pod and whether its addresses match as peers (SPEC 2.10, 2.11).
    pub fn is_enforced(&self) -> bool {
        !self.host_network && !matches!(self.phase, Phase::Succeeded | Phase::Failed) && !self.ips.is_empty()
    }

    /// The number a named port resolves to on this pod (SPEC 2.9); the first container port
    /// with that name and protocol wins, as the API rejects duplicates.
    pub fn named_port(&self, name: &str, protocol: Protocol) -> Option<u16> {
        self.ports
            .iter()
            .find(|p| p.protocol == protocol && p.name.as_deref() == Some(name))
            .map(|p| p.number)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub name: String,
    /// InternalIP and ExternalIP addresses of the node.
    pub addrs: Vec<IpAddr>,
    /// Its InternalIPs: the addresses NodePorts listen on (SPEC 5).
    pub internal_ips: Vec<IpAddr>,
    /// `spec.podCIDRs`: where its pods' addresses come from.
    pub pod_cidrs: Vec<IpNet>,
}

impl Node {
    /// A node with these addresses, all of them InternalIPs, and no pod CIDR.
    pub fn with_addrs(name: impl Into<String>, addrs: Vec<IpAddr>) -> Node {
        Node {
            name: name.into(),
            internal_ips: addrs.clone(),
            addrs,
            pod_cidrs: Vec::new(),
        }
    }
}

/// Which directions a policy applies to (its effective `policyTypes`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Directions {
    pub ingress: bool,
    pub egress: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    pub const BOTH: [Direction; 2] = [Direction::Ingress, Direction::Egress];

    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }
}

impl Directions {
    pub fn has(self, direction: Direction) -> bool {
        match direction {
            Direction::Ingress => self.ingress,
            Direction::Egress => self.egress,
        }
    }
}

/// Which namespaces a pod peer looks in.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NamespaceScope {
    /// `podSelector` alone: the policy's own namespace.
    Named(String),
    /// `namespaceSelector` (with or without `podSelector`).
    Selected(Selector),
}

/// An `ipBlock`: addresses in `cidr` and in none of `except`. CIDRs are normalised to their network.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IpBlock {
    pub cidr: IpNet,
    pub except: Vec<IpNet>,
}

impl IpBlock {
    pub fn contains(&self, addr: IpAddr) -> bool {
        self.cidr.contains(&addr) && !self.except.iter().any(|e| e.contains(&addr))
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Peer {
    Pods {
        namespaces: NamespaceScope,
        pods: Selector,
    },
    IpBlock(IpBlock),
}

/// What one entry of `ports` matches.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PortMatch {
    /// Every port of the protocol (an entry with a protocol and no port).
    All,
    /// An inclusive range; a single port is `first == last`.
    Range { first: u16, last: u16 },
    /// A container port name, resolved per destination pod.
    Named(String),
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortSpec {
    pub protocol: Protocol,
    pub port: PortMatch,
}

/// One ingress or egress rule. `None` means the field was empty or absent: every peer, every port.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rule {
    pub peers: Option<Vec<Peer>>,
    pub ports: Option<Vec<PortSpec>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PolicyBody {
    Valid {
        ingress: Vec<Rule>,
        egress: Vec<Rule>,
    },
    /// The policy still isolates what it selects (fail closed), but allows nothing (SPEC 2.17).
    Invalid {
        reason: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub key: ObjectKey,
    pub pod_selector: Selector,
    pub directions: Directions,
    pub body: PolicyBody,
}

impl Policy {
    /// The rules of one direction; none for an invalid policy or a direction it does not list.
    pub fn rules(&self, direction: Direction) -> &[Rule] {
        match &self.body {
            PolicyBody::Valid { .. } if !self.directions.has(direction) => &[],
            PolicyBody::Valid { ingress, .. } if direction == Direction::Ingress => ingress,
            PolicyBody::Valid { egress, .. } => egress,
            PolicyBody::Invalid { .. } => &[],
        }
    }
}

/// A whole cluster as the compiler reads it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub namespaces: BTreeMap<String, Namespace>,
    pub pods: BTreeMap<ObjectKey, Pod>,
    pub policies: BTreeMap<ObjectKey, Policy>,
    pub nodes: BTreeMap<String, Node>,
    pub services: BTreeMap<ObjectKey, Service>,
    pub slices: BTreeMap<ObjectKey, EndpointSlice>,
    /// Service CIDRs by the ServiceCIDR object that declares them (or the flag's name).
    pub service_cidrs: BTreeMap<String, Vec<IpNet>>,
}

impl Snapshot {
    /// The slices of a service, by name.
    pub fn slices_of(&self, service: &ObjectKey) -> Vec<&EndpointSlice> {
        self.slices
            .range(ObjectKey::new(&service.namespace, "")..)
            .take_while(|(k, _)| k.namespace == service.namespace)
            .map(|(_, s)| s)
            .filter(|s| s.service == service.name)
            .collect()
    }

    /// The labels of a namespace; a namespace that no object declares has only its name label.
    pub fn namespace_labels(&self, name: &str) -> Labels {
        match self.namespaces.get(name) {
            Some(ns) => ns.labels.clone(),
            None => Namespace::new(name, Labels::new()).labels,
        }
    }

    /// The enforced pod that owns an address: of several claiming it, the first by namespace and
    /// name, so a reused address never belongs to two pods.
    pub fn owner_of(&self, addr: IpAddr) -> Option<&Pod> {
        self.pods
            .values()
            .find(|p| p.is_enforced() && p.ips.contains(&addr))
    }

    /// Every node name that a pod or a Node object mentions, in order.
    pub fn node_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.nodes.keys().cloned().collect();
        names.extend(self.pods.values().map(|p| p.node.clone()));
        names.sort();
        names.dedup();
        names
    }
}
