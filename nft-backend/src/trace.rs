//! A packet tracer: decides a packet by walking the rules of a [`Table`] as the kernel would,
//! so property tests check the generated rules, not only the IR they came from.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use policy_compiler::nat::{Backend, Seen};
use policy_compiler::{Flow, L4};

use crate::build::MASQUERADE_MARK;
use crate::nft::{Addr, Family, Hook, MapTarget, Match, Set, SetKind, Table, Verdict};

/// The first packet of a connection (conntrack state new), or a later one.
#[derive(Clone, Copy, Debug)]
pub struct Packet {
    pub flow: Flow,
    pub established: bool,
}

/// How a walk through the rules ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Accept,
    Drop,
    Reject,
    /// Translated to this endpoint (DNAT ends the nat hook's walk).
    Dnat(Backend),
    /// Fell off the end of the chain, or `return`.
    Continue,
}

fn set_has_addr(set: &Set, addr: IpAddr) -> bool {
    match &set.kind {
        SetKind::Addrs(addrs) => addrs.contains(&addr),
        SetKind::Ranges(ranges) => ranges.iter().any(|(lo, hi)| *lo <= addr && addr <= *hi),
        _ => false,
    }
}

fn field(p: &Packet, addr: Addr) -> IpAddr {
    match addr {
        Addr::Saddr => p.flow.src,
        Addr::Daddr => p.flow.dst,
    }
}

fn matches(table: &Table, m: &Match, p: &Packet, mark: u32) -> bool {
    let family = Family::of(p.flow.dst);
    match m {
        Match::EstablishedOrRelated => p.established,
        Match::NeighbourDiscovery => {
            family == Family::V6 && matches!(p.flow.l4, L4::Icmp { type_: 133..=137 })
        }
        Match::AddrIn { family: f, addr, set } => {
            *f == family && table.set(set).is_some_and(|s| set_has_addr(s, field(p, *addr)))
        }
        Match::AddrNotIn { family: f, addr, set } => {
            *f == family && !table.set(set).is_some_and(|s| set_has_addr(s, field(p, *addr)))
        }
        Match::AddrIs {
            family: f,
            addr,
            value,
        } => *f == family && field(p, *addr) == *value,
        Match::MarkHas(bits) => mark & bits == *bits,
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

/// The chain a verdict map sends the packet to: `Ok(None)` when no entry matches, `Err(())`
/// for an entry that drops.
fn map_target(table: &Table, verdict: &Verdict, p: &Packet) -> Result<Option<String>, ()> {
    let family = Family::of(p.flow.dst);
    let lookup = |target: Option<&MapTarget>| match target {
        None => Ok(None),
        Some(MapTarget::Drop) => Err(()),
        Some(MapTarget::Jump(c)) => Ok(Some(c.clone())),
    };
    match verdict {
        Verdict::Dispatch { family: f, addr, map } => {
            if *f != family {
                return Ok(None);
            }
            let key = field(p, *addr);
            Ok(table.set(map).and_then(|s| match &s.kind {
                SetKind::Dispatch(entries) => entries.iter().find(|(a, _)| *a == key).map(|(_, c)| c.clone()),
                _ => None,
            }))
        }
        Verdict::FrontendDispatch { family: f, map } => {
            let L4::Port(proto, port) = p.flow.l4 else {
                return Ok(None);
            };
            if *f != family {
                return Ok(None);
            }
            let key = (p.flow.dst, proto, port);
            lookup(table.set(map).and_then(|s| match &s.kind {
                SetKind::Frontends(entries) => entries.iter().find(|(k, _)| *k == key).map(|(_, t)| t),
                _ => None,
            }))
        }
        Verdict::NodePortDispatch { map } => {
            let L4::Port(proto, port) = p.flow.l4 else {
                return Ok(None);
            };
            lookup(table.set(map).and_then(|s| match &s.kind {
                SetKind::NodePorts(entries) => {
                    entries.iter().find(|(k, _)| *k == (proto, port)).map(|(_, t)| t)
                }
                _ => None,
            }))
        }
        _ => Ok(None),
    }
}

/// Every way a walk from rule `start` of `name` can end (a random pick is a fork), each with the
/// packet's mark at its end.
fn run_from(
    table: &Table,
    name: &str,
    start: usize,
    p: &Packet,
    mut mark: u32,
    depth: usize,
) -> Vec<(Outcome, u32)> {
    // nft refuses jump loops deeper than this; so do we.
    if depth > 16 {
        return vec![(Outcome::Drop, mark)];
    }
    let Some(chain) = table.chain(name) else {
        return vec![(Outcome::Drop, mark)];
    };
    for (i, rule) in chain.rules.iter().enumerate().skip(start) {
        if !rule.matches.iter().all(|m| matches(table, m, p, mark)) {
            continue;
        }
        let targets: Vec<String> = match &rule.verdict {
            Verdict::Accept | Verdict::Masquerade => return vec![(Outcome::Accept, mark)],
            Verdict::Drop => return vec![(Outcome::Drop, mark)],
            Verdict::RejectTcpReset | Verdict::RejectPortUnreachable => return vec![(Outcome::Reject, mark)],
            Verdict::Dnat { addr, port } => {
                let backend = Backend {
                    addr: *addr,
                    port: *port,
                };
                return vec![(Outcome::Dnat(backend), mark)];
            }
            Verdict::Return => return vec![(Outcome::Continue, mark)],
            Verdict::Mark(bits) => {
                mark |= bits;
                continue;
            }
            Verdict::Jump(chain) => vec![chain.clone()],
            Verdict::RandomJump(chains) => chains.clone(),
            map @ (Verdict::Dispatch { .. }
            | Verdict::FrontendDispatch { .. }
            | Verdict::NodePortDispatch { .. }) => match map_target(table, map, p) {
                Err(()) => return vec![(Outcome::Drop, mark)],
                Ok(target) => target.into_iter().collect(),
            },
        };
        if targets.is_empty() {
            continue;
        }
        let mut out = Vec::new();
        for target in targets {
            for (outcome, m) in run_from(table, &target, 0, p, mark, depth + 1) {
                match outcome {
                    Outcome::Continue => out.extend(run_from(table, name, i + 1, p, m, depth)),
                    decided => out.push((decided, m)),
                }
            }
        }
        return out;
    }
    vec![(Outcome::Continue, mark)]
}

/// Whether the table lets the packet through the given hook (base chains accept by policy).
pub fn passes(table: &Table, hook: Hook, p: &Packet) -> bool {
    run_from(table, hook.as_str(), 0, p, 0, 0)
        .iter()
        .all(|(o, _)| !matches!(o, Outcome::Drop | Outcome::Reject))
}

/// Where a connection enters service NAT: a packet arriving (from a pod or from outside), or
/// one the node itself sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    Prerouting,
    Output,
}

/// Decides the NAT question by walking the table's rules: the source-range hook, then every
/// way through the nat hook (each endpoint a random pick can reach, with whether it leaves
/// marked for masquerade), and for a packet left untranslated, the filter hooks' service check.
pub fn trace_service(table: &Table, entry: Entry, flow: &Flow) -> Seen {
    let p = Packet {
        flow: *flow,
        established: false,
    };
    let (firewall, nat) = match entry {
        Entry::Prerouting => (Hook::FirewallPrerouting, Hook::NatPrerouting),
        Entry::Output => (Hook::FirewallOutput, Hook::NatOutput),
    };
    if table.chain(nat.as_str()).is_none() {
        return Seen::Pass;
    }
    if run_from(table, firewall.as_str(), 0, &p, 0, 0)
        .iter()
        .any(|(o, _)| *o == Outcome::Drop)
    {
        return Seen::Drop;
    }
    let branches = run_from(table, nat.as_str(), 0, &p, 0, 0);
    let mut dnat = BTreeMap::new();
    let mut untranslated = false;
    for (outcome, mark) in branches {
        match outcome {
            Outcome::Dnat(b) => {
                dnat.insert(b, mark & MASQUERADE_MARK != 0);
            }
            Outcome::Drop => return Seen::Drop,
            _ => untranslated = true,
        }
    }
    if !dnat.is_empty() {
        return if untranslated {
            Seen::Inconsistent
        } else {
            Seen::Dnat(dnat)
        };
    }
    let checked = run_from(table, crate::build::SERVICES_CHECK_CHAIN, 0, &p, 0, 0);
    match checked.first().map(|(o, _)| *o) {
        Some(Outcome::Reject) => Seen::Reject,
        Some(Outcome::Drop) => Seen::Drop,
        _ => Seen::Pass,
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
