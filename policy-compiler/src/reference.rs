//! The reference evaluator: SPEC.md section 2 read line by line over the model.
//!
//! It shares nothing with the compile path but the model and selector matching, and it is slow
//! on purpose: every question is answered by scanning the snapshot. It is the oracle that the
//! IR, the nft rules and the kernel are checked against.

use std::net::IpAddr;

use crate::flow::{Flow, L4};
use crate::model::{Direction, NamespaceScope, Peer, Policy, PortMatch, Rule, Snapshot};

/// Whether the cluster allows the flow: the source's egress and the destination's ingress (2.14).
pub fn allows(snap: &Snapshot, flow: &Flow) -> bool {
    // Traffic to one's own address is loopback: it never leaves the pod, no node sees it, and
    // it is not a flow between two pods (2.14). Upstream's e2e suite allows it likewise.
    if flow.src == flow.dst {
        return true;
    }
    side_allows(snap, flow, Direction::Egress) && side_allows(snap, flow, Direction::Ingress)
}

/// Whether one side lets the flow through.
pub fn side_allows(snap: &Snapshot, flow: &Flow, direction: Direction) -> bool {
    // 2.16: neighbour discovery always passes.
    if flow.is_neighbour_discovery() {
        return true;
    }
    let (own, peer) = match direction {
        Direction::Egress => (flow.src, flow.dst),
        Direction::Ingress => (flow.dst, flow.src),
    };
    // 2.10, 2.11: only running, addressed, non-hostNetwork pods are policed.
    let Some(pod) = snap.owner_of(own) else {
        return true;
    };
    // 2.13: the node's own addresses reach its pods.
    if direction == Direction::Ingress
        && snap
            .nodes
            .get(&pod.node)
            .is_some_and(|n| n.addrs.contains(&flow.src))
    {
        return true;
    }
    // 2.1, 2.3: the policies of the pod's namespace that select it and list this direction.
    let selecting: Vec<&Policy> = snap
        .policies
        .values()
        .filter(|p| p.key.namespace == pod.key.namespace)
        .filter(|p| p.pod_selector.matches(&pod.labels))
        .filter(|p| p.directions.has(direction))
        .collect();
    if selecting.is_empty() {
        return true;
    }
    // 2.4, 2.17: any rule of any of them; an invalid policy has none.
    selecting.iter().any(|p| {
        p.rules(direction)
            .iter()
            .any(|r| rule_allows(snap, r, &p.key.namespace, peer, flow))
    })
}

/// 2.5: a peer of `from`/`to` and a port of `ports`; empty means every one.
fn rule_allows(snap: &Snapshot, rule: &Rule, policy_ns: &str, peer: IpAddr, flow: &Flow) -> bool {
    let peer_ok = match &rule.peers {
        None => true,
        Some(peers) => peers.iter().any(|p| peer_matches(snap, p, policy_ns, peer)),
    };
    let port_ok = match (&rule.ports, flow.l4) {
        (None, _) => true,
        (Some(_), L4::Icmp { .. }) => false,
        (Some(ports), L4::Port(protocol, port)) => ports.iter().any(|spec| {
            spec.protocol == protocol
                && match &spec.port {
                    PortMatch::All => true,
                    PortMatch::Range { first, last } => *first <= port && port <= *last,
                    // 2.9: resolved against the pod that owns the destination address.
                    PortMatch::Named(name) => {
                        snap.owner_of(flow.dst)
                            .and_then(|dst| dst.named_port(name, protocol))
                            == Some(port)
                    }
                }
        }),
    };
    peer_ok && port_ok
}

/// 2.6: pod and namespace selectors match pods; ipBlock matches any address.
fn peer_matches(snap: &Snapshot, peer: &Peer, policy_ns: &str, addr: IpAddr) -> bool {
    match peer {
        Peer::IpBlock(block) => block.contains(addr),
        Peer::Pods { namespaces, pods } => {
            let Some(pod) = snap.owner_of(addr) else {
                return false;
            };
            let ns_ok = match namespaces {
                NamespaceScope::Named(_) => pod.key.namespace == policy_ns,
                NamespaceScope::Selected(sel) => sel.matches(&snap.namespace_labels(&pod.key.namespace)),
            };
            ns_ok && pods.matches(&pod.labels)
        }
    }
}
