//! The IR: what one node must enforce, as plain ordered data.
//!
//! Every collection is keyed by what it means (a set of policies, a selector, a port name), not by
//! an arbitrary index, so a ruleset reached by incremental updates equals, field for field, the
//! one a fresh compile builds, and `dump()` is the same text.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::{self, Write as _};
use std::net::IpAddr;

use crate::model::{Direction, IpBlock, NamespaceScope, ObjectKey, Peer, PortMatch, PortSpec, Protocol};
use crate::nat::ServiceRules;
use crate::selector::Selector;

/// A pod selector peer, resolved to the addresses of the pods it matches.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PodPeer {
    pub namespaces: NamespaceScope,
    pub pods: Selector,
}

impl fmt::Display for PodPeer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespaces {
            NamespaceScope::Named(ns) => write!(f, "ns={ns} pods={}", self.pods),
            NamespaceScope::Selected(sel) => write!(f, "ns-sel={sel} pods={}", self.pods),
        }
    }
}

/// One peer of a rule: a reference to a shared pod address set, or a CIDR block.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IrPeer {
    Pods(PodPeer),
    Block(IpBlock),
}

impl From<&Peer> for IrPeer {
    fn from(peer: &Peer) -> IrPeer {
        match peer {
            Peer::Pods { namespaces, pods } => IrPeer::Pods(PodPeer {
                namespaces: namespaces.clone(),
                pods: pods.clone(),
            }),
            Peer::IpBlock(block) => IrPeer::Block(block.clone()),
        }
    }
}

/// A named port: resolved per destination address through [`Ruleset::named_ports`]. Ingress
/// rules resolve it on this node's pods only (the destination is local); egress rules on every
/// pod of the cluster.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NamedPort {
    pub direction: Direction,
    pub protocol: Protocol,
    pub name: String,
}

/// One rule of one policy, with where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IrRule {
    pub policy: ObjectKey,
    /// Index of the rule in the policy's `ingress` or `egress` list.
    pub index: usize,
    /// `None`: every peer.
    pub peers: Option<Vec<IrPeer>>,
    /// `None`: every port of every protocol.
    pub ports: Option<Vec<PortSpec>>,
}

/// Which policies an allow-set is the union of. Pods of one namespace selected by the same
/// policies in one direction share it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AllowSetKey {
    pub direction: Direction,
    /// Sorted; never empty (a pod that no policy isolates has no allow-set).
    pub policies: Vec<ObjectKey>,
}

impl fmt::Display for AllowSetKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<String> = self.policies.iter().map(ToString::to_string).collect();
        write!(f, "{}[{}]", self.direction.as_str(), names.join(","))
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllowSet {
    /// Policy order, then rule order. Empty: isolated with nothing allowed.
    pub rules: Vec<IrRule>,
}

/// A pod on this node that policy applies to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalPod {
    pub addrs: Vec<IpAddr>,
    /// `None`: not isolated for ingress.
    pub ingress: Option<AllowSetKey>,
    /// `None`: not isolated for egress.
    pub egress: Option<AllowSetKey>,
}

impl LocalPod {
    pub fn isolation(&self, direction: Direction) -> Option<&AllowSetKey> {
        match direction {
            Direction::Ingress => self.ingress.as_ref(),
            Direction::Egress => self.egress.as_ref(),
        }
    }
}

/// Everything one node enforces.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ruleset {
    pub node: String,
    /// Traffic from these to local pods always passes (SPEC 2.13).
    pub node_addrs: BTreeSet<IpAddr>,
    pub pods: BTreeMap<ObjectKey, LocalPod>,
    pub allow_sets: BTreeMap<AllowSetKey, AllowSet>,
    /// Every pod peer that a rule here uses, with the addresses of the pods it matches.
    pub pod_sets: BTreeMap<PodPeer, BTreeSet<IpAddr>>,
    /// Every named port that a rule here uses: pod address to the number it resolves to there.
    pub named_ports: BTreeMap<NamedPort, BTreeMap<IpAddr, u16>>,
    /// Service NAT on this node (SPEC 5).
    pub services: ServiceRules,
}

impl Ruleset {
    pub fn n_set_elements(&self) -> usize {
        let pods: usize = self.pods.values().map(|p| p.addrs.len()).sum();
        let sets: usize = self.pod_sets.values().map(BTreeSet::len).sum();
        let named: usize = self.named_ports.values().map(BTreeMap::len).sum();
        pods + sets + named
    }

    /// A deterministic text form for snapshot tests and for reading.
    pub fn dump(&self) -> String {
        let mut out = String::new();
        let join = |addrs: &mut dyn Iterator<Item = String>| addrs.collect::<Vec<_>>().join(" ");
        let _ = writeln!(out, "node {}", self.node);
        let _ = writeln!(
            out,
            "node-addrs {}",
            join(&mut self.node_addrs.iter().map(ToString::to_string))
        );
        for (key, pod) in &self.pods {
            let iso = |k: &Option<AllowSetKey>| k.as_ref().map_or("-".to_string(), ToString::to_string);
            let _ = writeln!(
                out,
                "pod {key} addrs={} ingress={} egress={}",
                join(&mut pod.addrs.iter().map(ToString::to_string)),
                iso(&pod.ingress),
                iso(&pod.egress)
            );
        }
        for (key, set) in &self.allow_sets {
            let _ = writeln!(out, "allow-set {key}");
            if set.rules.is_empty() {
                let _ = writeln!(out, "  (allows nothing)");
            }
            for rule in &set.rules {
                let _ = writeln!(out, "  {}", rule_text(rule));
            }
        }
        for (peer, addrs) in &self.pod_sets {
            let _ = writeln!(
                out,
                "pod-set {peer}: {}",
                join(&mut addrs.iter().map(ToString::to_string))
            );
        }
        for (port, addrs) in &self.named_ports {
            let _ = writeln!(
                out,
                "named-port {} {}/{}: {}",
                port.direction.as_str(),
                port.protocol,
                port.name,
                join(&mut addrs.iter().map(|(a, n)| format!("{a}={n}")))
            );
        }
        self.services.dump(&mut out);
        out
    }
}

pub fn peer_text(peer: &IrPeer) -> String {
    match peer {
        IrPeer::Pods(p) => format!("pods({p})"),
        IrPeer::Block(b) if b.except.is_empty() => format!("cidr({})", b.cidr),
        IrPeer::Block(b) => {
            let except: Vec<String> = b.except.iter().map(ToString::to_string).collect();
            format!("cidr({} except {})", b.cidr, except.join(","))
        }
    }
}

pub fn port_text(port: &PortSpec) -> String {
    match &port.port {
        PortMatch::All => format!("{}/*", port.protocol),
        PortMatch::Range { first, last } if first == last => format!("{}/{first}", port.protocol),
        PortMatch::Range { first, last } => format!("{}/{first}-{last}", port.protocol),
        PortMatch::Named(name) => format!("{}/{name}", port.protocol),
    }
}

fn rule_text(rule: &IrRule) -> String {
    let peers = match &rule.peers {
        None => "any".to_string(),
        Some(peers) => peers.iter().map(peer_text).collect::<Vec<_>>().join(" | "),
    };
    let ports = match &rule.ports {
        None => "any".to_string(),
        Some(ports) => ports.iter().map(port_text).collect::<Vec<_>>().join(" | "),
    };
    format!("{}#{} peers: {peers}; ports: {ports}", rule.policy, rule.index)
}
