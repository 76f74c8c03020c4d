//! The IR evaluator: decides a flow from the compiled rulesets of the source's and the
//! destination's nodes alone, the way the datapath will (egress on the source's node, ingress on
//! the destination's).

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::flow::{Flow, L4};
use crate::ir::{IrPeer, IrRule, LocalPod, NamedPort, Ruleset};
use crate::model::{Direction, ObjectKey, PortMatch};

/// How one side (egress of the source, ingress of the destination) treats a flow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SideVerdict {
    /// The address is not a pod that this side's node enforces for.
    NotAPod,
    /// The pod is not isolated in this direction.
    NotIsolated,
    /// Ingress from the node's own address to its pod (SPEC 2.13).
    FromNode,
    /// ICMPv6 neighbour discovery (SPEC 2.16).
    NeighbourDiscovery,
    /// Traffic to one's own address, which never leaves the pod.
    Loopback,
    /// Allowed by rule `index` of `policy`.
    Allowed { policy: ObjectKey, index: usize },
    /// Isolated and no rule allows it.
    Denied,
}

impl SideVerdict {
    pub fn passes(&self) -> bool {
        !matches!(self, SideVerdict::Denied)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub egress: SideVerdict,
    pub ingress: SideVerdict,
}

impl Decision {
    pub fn allowed(&self) -> bool {
        self.egress.passes() && self.ingress.passes()
    }
}

/// The ruleset of the node that hosts an address, as a local pod or as one of its own addresses.
pub fn locate(rulesets: &BTreeMap<String, Ruleset>, addr: IpAddr) -> Option<&Ruleset> {
    let hosts = |r: &&Ruleset| r.pods.values().any(|p| p.addrs.contains(&addr));
    rulesets
        .values()
        .find(hosts)
        .or_else(|| rulesets.values().find(|r| r.node_addrs.contains(&addr)))
}

/// Decides a flow across a cluster from each node's ruleset.
pub fn decide_cluster(rulesets: &BTreeMap<String, Ruleset>, flow: &Flow) -> Decision {
    decide(locate(rulesets, flow.src), locate(rulesets, flow.dst), flow)
}

/// Decides a flow from the rulesets of the source's node and of the destination's node (`None`
/// for an address outside the cluster's nodes).
pub fn decide(src_node: Option<&Ruleset>, dst_node: Option<&Ruleset>, flow: &Flow) -> Decision {
    if flow.is_neighbour_discovery() {
        return Decision {
            egress: SideVerdict::NeighbourDiscovery,
            ingress: SideVerdict::NeighbourDiscovery,
        };
    }
    if flow.src == flow.dst {
        return Decision {
            egress: SideVerdict::Loopback,
            ingress: SideVerdict::Loopback,
        };
    }
    Decision {
        egress: side(src_node, flow, Direction::Egress),
        ingress: side(dst_node, flow, Direction::Ingress),
    }
}

fn local_pod(ruleset: &Ruleset, addr: IpAddr) -> Option<&LocalPod> {
    ruleset.pods.values().find(|p| p.addrs.contains(&addr))
}

fn side(ruleset: Option<&Ruleset>, flow: &Flow, direction: Direction) -> SideVerdict {
    let Some(ruleset) = ruleset else {
        return SideVerdict::NotAPod;
    };
    let (own, peer) = match direction {
        Direction::Egress => (flow.src, flow.dst),
        Direction::Ingress => (flow.dst, flow.src),
    };
    let Some(pod) = local_pod(ruleset, own) else {
        return SideVerdict::NotAPod;
    };
    if direction == Direction::Ingress && ruleset.node_addrs.contains(&flow.src) {
        return SideVerdict::FromNode;
    }
    let Some(set_key) = pod.isolation(direction) else {
        return SideVerdict::NotIsolated;
    };
    let set = &ruleset.allow_sets[set_key];
    match set
        .rules
        .iter()
        .find(|r| rule_allows(ruleset, r, direction, peer, flow))
    {
        Some(rule) => SideVerdict::Allowed {
            policy: rule.policy.clone(),
            index: rule.index,
        },
        None => SideVerdict::Denied,
    }
}

fn rule_allows(ruleset: &Ruleset, rule: &IrRule, direction: Direction, peer: IpAddr, flow: &Flow) -> bool {
    let peer_ok = rule.peers.as_ref().is_none_or(|peers| {
        peers.iter().any(|p| match p {
            IrPeer::Pods(pods) => ruleset.pod_sets[pods].contains(&peer),
            IrPeer::Block(block) => block.contains(peer),
        })
    });
    if !peer_ok {
        return false;
    }
    let Some(ports) = &rule.ports else { return true };
    let L4::Port(protocol, port) = flow.l4 else {
        return false;
    };
    ports
        .iter()
        .filter(|p| p.protocol == protocol)
        .any(|p| match &p.port {
            PortMatch::All => true,
            PortMatch::Range { first, last } => (*first..=*last).contains(&port),
            PortMatch::Named(name) => {
                let named = NamedPort {
                    direction,
                    protocol,
                    name: name.clone(),
                };
                ruleset.named_ports[&named].get(&flow.dst) == Some(&port)
            }
        })
}
