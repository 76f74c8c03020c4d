//! A packet tracer: decides a packet by walking the rules of a [`Table`] as the kernel would,
//! so property tests check the generated rules, not only the IR they came from.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use policy_compiler::{Flow, L4};

use crate::nft::{Addr, Family, Hook, Match, Set, SetKind, Table, Verdict};

/// The first packet of a connection (conntrack state new), or a later one.
#[derive(Clone, Copy, Debug)]
pub struct Packet {
    pub flow: Flow,
    pub established: bool,
}

enum Outcome {
    Accept,
    Drop,
    /// Fell off the end of the chain, or `return`.
    Continue,
}

fn set_has_addr(set: &Set, addr: IpAddr) -> bool {
    match &set.kind {
        SetKind::Addrs(addrs) => addrs.contains(&addr),
        SetKind::Ranges(ranges) => ranges.iter().any(|(lo, hi)| *lo <= addr && addr <= *hi),
        SetKind::AddrPorts(_) | SetKind::Dispatch(_) | SetKind::Ports(_) => false,
    }
}

fn field(p: &Packet, addr: Addr) -> IpAddr {
    match addr {
        Addr::Saddr => p.flow.src,
        Addr::Daddr => p.flow.dst,
    }
}

fn matches(table: &Table, m: &Match, p: &Packet) -> bool {
    let family = Family::of(p.flow.dst);
    match m {
        Match::EstablishedOrRelated => p.established,
        Match::NeighbourDiscovery => {
            family == Family::V6 && matches!(p.flow.l4, L4::Icmp { type_: 133..=137 })
        }
        Match::AddrIn { family: f, addr, set } => {
            *f == family && table.set(set).is_some_and(|s| set_has_addr(s, field(p, *addr)))
        }
        Match::Protocol(proto) => matches!(p.flow.l4, L4::Port(q, _) if q == *proto),
        Match::PortRange {
            protocol,
            first,
            last,
        } => {
            matches!(p.flow.l4, L4::Port(q, port) if q == *protocol && *first <= port && port <= *last)
        }
        Match::PortIn { protocol, set } => {
            let L4::Port(q, port) = p.flow.l4 else {
                return false;
            };
            q == *protocol
                && table.set(set).is_some_and(|s| match &s.kind {
                    SetKind::Ports(ranges) => ranges.iter().any(|(lo, hi)| *lo <= port && port <= *hi),
                    _ => false,
                })
        }
        Match::DaddrPortIn {
            family: f,
            protocol,
            set,
        } => {
            let L4::Port(q, port) = p.flow.l4 else {
                return false;
            };
            *f == family
                && q == *protocol
                && table.set(set).is_some_and(|s| match &s.kind {
                    SetKind::AddrPorts(pairs) => pairs.contains(&(p.flow.dst, port)),
                    _ => false,
                })
        }
    }
}

fn run_chain(table: &Table, name: &str, p: &Packet, depth: usize) -> Outcome {
    // nft refuses jump loops deeper than this; so do we.
    if depth > 16 {
        return Outcome::Drop;
    }
    let Some(chain) = table.chain(name) else {
        return Outcome::Drop;
    };
    for rule in &chain.rules {
        if !rule.matches.iter().all(|m| matches(table, m, p)) {
            continue;
        }
        let target = match &rule.verdict {
            Verdict::Accept => return Outcome::Accept,
            Verdict::Drop => return Outcome::Drop,
            Verdict::Return => return Outcome::Continue,
            Verdict::Jump(chain) => Some(chain.clone()),
            Verdict::Dispatch { family, addr, map } => {
                if *family != Family::of(p.flow.dst) {
                    None
                } else {
                    let key = field(p, *addr);
                    table.set(map).and_then(|s| match &s.kind {
                        SetKind::Dispatch(entries) => {
                            entries.iter().find(|(a, _)| *a == key).map(|(_, c)| c.clone())
                        }
                        _ => None,
                    })
                }
            }
        };
        if let Some(chain) = target {
            match run_chain(table, &chain, p, depth + 1) {
                Outcome::Continue => {}
                decided => return decided,
            }
        }
    }
    Outcome::Continue
}

/// Whether the table lets the packet through the given hook (base chains accept by policy).
pub fn passes(table: &Table, hook: Hook, p: &Packet) -> bool {
    match run_chain(table, hook.as_str(), p, 0) {
        Outcome::Drop => false,
        Outcome::Accept | Outcome::Continue => true,
    }
}

/// Where addresses live: which node hosts each pod address and owns each node address.
#[derive(Clone, Debug, Default)]
pub struct Topology {
    pub pods: HashMap<IpAddr, String>,
    pub nodes: HashMap<IpAddr, String>,
}

/// Decides a new connection across a cluster by tracing its first packet through the hooks it
/// crosses: the output hook of the node it leaves from (when a node sends), the forward hook of
/// the source pod's node, the forward hook of the destination pod's node, and the input hook of
/// a destination node.
pub fn decide_cluster(tables: &BTreeMap<String, Table>, topology: &Topology, flow: &Flow) -> bool {
    // Traffic to one's own address is loopback: it crosses no node's hooks.
    if flow.src == flow.dst {
        return true;
    }
    let p = Packet {
        flow: *flow,
        established: false,
    };
    let through = |node: &str, hook: Hook| tables.get(node).is_none_or(|t| passes(t, hook, &p));
    let src_pod_node = topology.pods.get(&flow.src);
    let dst_pod_node = topology.pods.get(&flow.dst);
    let src_host = topology.nodes.get(&flow.src);
    let dst_host = topology.nodes.get(&flow.dst);
    let mut ok = true;
    if let Some(node) = src_host {
        ok &= through(node, Hook::Output);
    }
    if let Some(node) = src_pod_node {
        let hook = if dst_host == Some(node) {
            Hook::Input
        } else {
            Hook::Forward
        };
        ok &= through(node, hook);
    }
    if let Some(node) = dst_pod_node {
        // A node's own traffic to its pods was decided on its output hook; a pod's traffic to a
        // pod on the same node crosses that node's forward hook once.
        if src_host != Some(node) && src_pod_node != Some(node) {
            ok &= through(node, Hook::Forward);
        }
    }
    if let Some(node) = dst_host {
        if src_pod_node != Some(node) && src_host != Some(node) {
            ok &= through(node, Hook::Input);
        }
    }
    ok
}
