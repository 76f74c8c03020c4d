//! The IR to nftables objects: one node's `Ruleset` becomes the sets, maps and chains of
//! `table inet netfence` (layout and reasons in ARCHITECTURE.md).
//!
//! [`build`] is a list of steps: the shared sets (named ports, the node's addresses), the
//! allow-set chains (with the peer and port sets their rules look up, made as the first rule
//! needs them), the dispatch maps, then the base chains. A new kind of object is a new step.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use policy_compiler::ir::{AllowSetKey, IrPeer, IrRule, NamedPort, PodPeer};
use policy_compiler::model::{Direction, IpBlock, PortMatch, PortSpec};
use policy_compiler::{Protocol, Ruleset};

use crate::identity::Identity;
use crate::interval;
use crate::names::{comment, derived};
use crate::nft::{Addr, Chain, Family, Hook, Match, Rule, Set, SetKind, Table, Verdict};

mod services;

pub use services::{MASQUERADE_MARK, SERVICES_CHECK_CHAIN};

/// The chain every base chain jumps to after the fast path.
pub const POLICY_CHAIN: &str = "dispatch";

/// The set of this node's own addresses (with the family suffix).
const NODE_SET: &str = "node-addrs";

fn family_set_name(base: &str, family: Family) -> String {
    format!("{base}-{}", family.suffix())
}

fn split_family(addrs: impl Iterator<Item = IpAddr>, family: Family) -> Vec<IpAddr> {
    addrs.filter(|a| Family::of(*a) == family).collect()
}

fn direction_prefix(direction: Direction) -> &'static str {
    match direction {
        Direction::Ingress => "in",
        Direction::Egress => "eg",
    }
}

/// The names handed out so far, by identity, so that two identities never share a name and
/// every rule that refers to an object finds the name it was given.
#[derive(Default)]
struct Names {
    /// Name to the identity that holds it.
    taken: BTreeMap<String, String>,
    pod_sets: BTreeMap<PodPeer, String>,
    blocks: BTreeMap<IpBlock, String>,
    named_ports: BTreeMap<NamedPort, String>,
    chains: BTreeMap<AllowSetKey, String>,
}

impl Names {
    /// The name for `identity` (see [`derived`]); a collision of hashes gets a suffix. `fresh`
    /// says whether the identity had none before (its object is still to be made).
    fn claim(&mut self, prefix: &str, hint: &str, identity: &str) -> (String, bool) {
        let base = derived(prefix, hint, identity);
        let mut name = base.clone();
        let mut n = 2;
        while let Some(owner) = self.taken.get(&name) {
            if owner == identity {
                return (name, false);
            }
            name = format!("{base}-{n}");
            n += 1;
        }
        self.taken.insert(name.clone(), identity.to_string());
        (name, true)
    }
}

/// The table under construction.
struct Builder<'a> {
    ruleset: &'a Ruleset,
    names: Names,
    sets: Vec<Set>,
    chains: Vec<Chain>,
}

/// One alternative of a rule's peers or ports: the family it is bound to, if any, and its
/// matches.
type Alternative = (Option<Family>, Vec<Match>);

/// Builds the table for one node's ruleset.
pub fn build(ruleset: &Ruleset) -> Table {
    let mut b = Builder {
        ruleset,
        names: Names::default(),
        sets: Vec::new(),
        chains: Vec::new(),
    };
    b.named_port_sets();
    b.node_sets();
    b.allow_set_chains();
    b.dispatch_maps();
    b.services();
    b.base_chains();
    Table {
        sets: b.sets,
        chains: b.chains,
    }
}

impl Builder<'_> {
    /// A set per family for each named port: `address . port` of every pod that has it.
    fn named_port_sets(&mut self) {
        for (named, map) in &self.ruleset.named_ports {
            let hint = format!(
                "{}-{}-{}",
                named.direction.as_str(),
                named.protocol.as_str().to_lowercase(),
                named.name
            );
            let (name, _) = self.names.claim("port", &hint, &named.identity());
            for family in Family::BOTH {
                let pairs = map
                    .iter()
                    .filter(|(a, _)| Family::of(**a) == family)
                    .map(|(a, p)| (*a, *p))
                    .collect();
                self.sets.push(Set::new(
                    family_set_name(&name, family),
                    family,
                    SetKind::AddrPorts(pairs),
                    comment(&format!(
                        "{} named port {}/{}",
                        named.direction.as_str(),
                        named.protocol,
                        named.name
                    )),
                ));
            }
            self.names.named_ports.insert(named.clone(), name);
        }
    }

    /// This node's own addresses, whose traffic to local pods always passes.
    fn node_sets(&mut self) {
        for family in Family::BOTH {
            self.sets.push(Set::new(
                family_set_name(NODE_SET, family),
                family,
                SetKind::Addrs(split_family(self.ruleset.node_addrs.iter().copied(), family)),
                "this node's own addresses".to_string(),
            ));
        }
    }

    /// A chain per allow-set: its rules, each `return` (allowed, go on), then `drop`.
    fn allow_set_chains(&mut self) {
        let ruleset = self.ruleset;
        for (key, set) in &ruleset.allow_sets {
            let hint = key.policies.first().map_or(String::new(), |p| p.name.clone());
            let (name, _) = self
                .names
                .claim(direction_prefix(key.direction), &hint, &key.identity());
            let mut rules: Vec<Rule> = set
                .rules
                .iter()
                .flat_map(|r| self.rule(r, key.direction))
                .collect();
            rules.push(Rule {
                matches: vec![],
                verdict: Verdict::Drop,
                comment: None,
            });
            let policies: Vec<String> = key.policies.iter().map(ToString::to_string).collect();
            self.chains.push(Chain {
                name: name.clone(),
                hook: None,
                rules,
                comment: comment(&format!(
                    "{} allow-set of {}",
                    key.direction.as_str(),
                    policies.join(",")
                )),
            });
            self.names.chains.insert(key.clone(), name);
        }
    }

    /// One IR rule as nft rules: one per pair of a peer alternative and a port alternative of
    /// the same family. Each side has a bounded number of alternatives (its peers are looked
    /// up in at most one pod set and one interval set per family, its ports in one match or
    /// set per protocol, plus one per named port), so the rules grow with the policy's rules,
    /// never with its peers times its ports.
    fn rule(&mut self, rule: &IrRule, direction: Direction) -> Vec<Rule> {
        let peers = match &rule.peers {
            None => vec![(None, vec![])],
            Some(peers) => self.peer_alternatives(peers, direction),
        };
        let ports = match &rule.ports {
            None => vec![(None, vec![])],
            Some(ports) => self.port_alternatives(ports, direction),
        };
        let origin = comment(&format!("{}#{}", rule.policy, rule.index));
        let mut out = Vec::new();
        for (peer_family, peer_matches) in &peers {
            for (port_family, port_matches) in &ports {
                if let (Some(a), Some(b)) = (peer_family, port_family) {
                    if a != b {
                        continue;
                    }
                }
                let mut matches = peer_matches.clone();
                matches.extend(port_matches.iter().cloned());
                out.push(Rule {
                    matches,
                    verdict: Verdict::Return,
                    comment: Some(origin.clone()),
                });
            }
        }
        out
    }

    /// A rule's peers, per family: its pod peers as one lookup (the peer's own set, or a union
    /// set of several), and its ipBlocks as one lookup (the block's set, or a union).
    fn peer_alternatives(&mut self, peers: &[IrPeer], direction: Direction) -> Vec<Alternative> {
        let addr = match direction {
            Direction::Ingress => Addr::Saddr,
            Direction::Egress => Addr::Daddr,
        };
        let pods: BTreeSet<&PodPeer> = peers
            .iter()
            .filter_map(|p| match p {
                IrPeer::Pods(pods) => Some(pods),
                IrPeer::Block(_) => None,
            })
            .collect();
        let mut out = Vec::new();
        if let Some(base) = self.pod_union(&pods) {
            for family in Family::BOTH {
                let set = family_set_name(&base, family);
                out.push((Some(family), vec![Match::AddrIn { family, addr, set }]));
            }
        }
        for family in Family::BOTH {
            let blocks: BTreeSet<&IpBlock> = peers
                .iter()
                .filter_map(|p| match p {
                    IrPeer::Block(b) if Family::of(b.cidr.network()) == family => Some(b),
                    _ => None,
                })
                .collect();
            if let Some(set) = self.block_union(&blocks, family) {
                out.push((Some(family), vec![Match::AddrIn { family, addr, set }]));
            }
        }
        out
    }

    /// The base name of a pod peer's own sets (one per family: the addresses of the pods it
    /// matches), made when a rule first looks the peer up alone.
    fn pod_set(&mut self, peer: &PodPeer) -> String {
        if let Some(name) = self.names.pod_sets.get(peer) {
            return name.clone();
        }
        let hint = if peer.pods.is_everything() {
            "all".to_string()
        } else {
            peer.pods.to_string()
        };
        let (name, _) = self.names.claim("pods", &hint, &peer.identity());
        let addrs = self.ruleset.pod_sets.get(peer).into_iter().flatten().copied();
        for family in Family::BOTH {
            self.sets.push(Set::new(
                family_set_name(&name, family),
                family,
                SetKind::Addrs(split_family(addrs.clone(), family)),
                comment(&format!("pods {peer}")),
            ));
        }
        self.names.pod_sets.insert(peer.clone(), name.clone());
        name
    }

    /// An ipBlock's own interval set (its CIDR minus its excepts), made when a rule first looks
    /// the block up alone.
    fn block_set(&mut self, block: &IpBlock) -> String {
        if let Some(name) = self.names.blocks.get(block) {
            return name.clone();
        }
        let (name, _) = self
            .names
            .claim("cidr", &block.cidr.to_string(), &block.identity());
        let except: Vec<String> = block.except.iter().map(ToString::to_string).collect();
        self.sets.push(Set::new(
            name.clone(),
            Family::of(block.cidr.network()),
            SetKind::Ranges(interval::ranges(block)),
            comment(&format!("ipBlock {} except [{}]", block.cidr, except.join(","))),
        ));
        self.names.blocks.insert(block.clone(), name.clone());
        name
    }

    /// The base name of the pod sets to look `pods` up in: the peer's own sets for one peer,
    /// union sets (made here, shared by every rule with the same peers) for several.
    fn pod_union(&mut self, pods: &BTreeSet<&PodPeer>) -> Option<String> {
        let first = *pods.first()?;
        if pods.len() == 1 {
            return Some(self.pod_set(first));
        }
        let identity = union_identity(pods);
        let hint = if first.pods.is_everything() {
            "all".to_string()
        } else {
            first.pods.to_string()
        };
        let (name, fresh) = self.names.claim("peers", &hint, &identity);
        if fresh {
            let addrs: BTreeSet<IpAddr> = pods
                .iter()
                .flat_map(|p| self.ruleset.pod_sets.get(*p).into_iter().flatten().copied())
                .collect();
            let peers: Vec<String> = pods.iter().map(ToString::to_string).collect();
            for family in Family::BOTH {
                self.sets.push(Set::new(
                    family_set_name(&name, family),
                    family,
                    SetKind::Addrs(split_family(addrs.iter().copied(), family)),
                    comment(&format!("pods of {} peers: {}", pods.len(), peers.join(" or "))),
                ));
            }
        }
        Some(name)
    }

    /// The interval set to look `blocks` (all of one family) up in: the block's own for one,
    /// a union set (made here, shared) for several.
    fn block_union(&mut self, blocks: &BTreeSet<&IpBlock>, family: Family) -> Option<String> {
        let first = *blocks.first()?;
        if blocks.len() == 1 {
            return Some(self.block_set(first));
        }
        let identity = union_identity(blocks);
        let (name, fresh) = self.names.claim("cidrs", &first.cidr.to_string(), &identity);
        if fresh {
            let ranges = interval::union(blocks.iter().flat_map(|b| interval::ranges(b)).collect());
            let cidrs: Vec<String> = blocks.iter().map(|b| b.cidr.to_string()).collect();
            self.sets.push(Set::new(
                name.clone(),
                family,
                SetKind::Ranges(ranges),
                comment(&format!("ipBlocks {} (with their excepts)", cidrs.join(","))),
            ));
        }
        Some(name)
    }

    /// A rule's ports: per protocol, every port (`meta l4proto`), one range, or a port set;
    /// then each named port, per family.
    fn port_alternatives(&mut self, ports: &[PortSpec], direction: Direction) -> Vec<Alternative> {
        let mut out = Vec::new();
        for protocol in [Protocol::Tcp, Protocol::Udp, Protocol::Sctp] {
            let of_protocol = ports.iter().filter(|p| p.protocol == protocol);
            let mut ranges = Vec::new();
            let mut every_port = false;
            for spec in of_protocol {
                match &spec.port {
                    PortMatch::All => every_port = true,
                    PortMatch::Range { first, last } => ranges.push((*first, *last)),
                    PortMatch::Named(_) => {}
                }
            }
            if every_port {
                out.push((None, vec![Match::Protocol(protocol)]));
                continue;
            }
            let ranges = interval::union_ports(ranges);
            match ranges.as_slice() {
                [] => {}
                [(first, last)] => out.push((
                    None,
                    vec![Match::PortRange {
                        protocol,
                        first: *first,
                        last: *last,
                    }],
                )),
                _ => {
                    let set = self.port_set(protocol, ranges);
                    out.push((None, vec![Match::PortIn { protocol, set }]));
                }
            }
        }
        let named: BTreeSet<NamedPort> = ports
            .iter()
            .filter_map(|spec| match &spec.port {
                PortMatch::Named(name) => Some(NamedPort {
                    direction,
                    protocol: spec.protocol,
                    name: name.clone(),
                }),
                _ => None,
            })
            .collect();
        for key in &named {
            for family in Family::BOTH {
                let set = family_set_name(&self.names.named_ports[key], family);
                out.push((
                    Some(family),
                    vec![Match::DaddrPortIn {
                        family,
                        protocol: key.protocol,
                        set,
                    }],
                ));
            }
        }
        out
    }

    /// An interval set of port ranges of one protocol, shared by every rule with the same.
    fn port_set(&mut self, protocol: Protocol, ranges: Vec<(u16, u16)>) -> String {
        let text: Vec<String> = ranges
            .iter()
            .map(|(a, b)| if a == b { a.to_string() } else { format!("{a}-{b}") })
            .collect();
        let mut identity = String::from("ports(");
        protocol.encode(&mut identity);
        identity.push_str(&text.join(","));
        identity.push(')');
        let proto = protocol.as_str().to_lowercase();
        let (name, fresh) = self.names.claim("ports", &proto, &identity);
        if fresh {
            self.sets.push(Set::new(
                name.clone(),
                Family::V4,
                SetKind::Ports(ranges),
                comment(&format!("{proto} ports {}", text.join(","))),
            ));
        }
        name
    }

    /// The verdict maps: each isolated pod's address to its allow-set chain, per direction and
    /// family.
    fn dispatch_maps(&mut self) {
        for direction in [Direction::Ingress, Direction::Egress] {
            for family in Family::BOTH {
                let mut entries = Vec::new();
                for pod in self.ruleset.pods.values() {
                    let Some(key) = pod.isolation(direction) else {
                        continue;
                    };
                    for addr in pod.addrs.iter().filter(|a| Family::of(**a) == family) {
                        entries.push((*addr, self.names.chains[key].clone()));
                    }
                }
                entries.sort();
                self.sets.push(Set::new(
                    dispatch_map(direction, family),
                    family,
                    SetKind::Dispatch(entries),
                    format!("isolated pods to their {} allow-set", direction.as_str()),
                ));
            }
        }
    }

    /// The dispatch chain (egress of local pods, the node's own traffic, ingress of local
    /// pods) and the base chains that reach it after the fast path.
    fn base_chains(&mut self) {
        let dispatch = |direction: Direction, family: Family, addr: Addr| Rule {
            matches: vec![],
            verdict: Verdict::Dispatch {
                family,
                addr,
                map: dispatch_map(direction, family),
            },
            comment: None,
        };
        let mut policy_rules = Vec::new();
        for family in Family::BOTH {
            policy_rules.push(dispatch(Direction::Egress, family, Addr::Saddr));
        }
        for family in Family::BOTH {
            policy_rules.push(Rule {
                matches: vec![Match::AddrIn {
                    family,
                    addr: Addr::Saddr,
                    set: family_set_name(NODE_SET, family),
                }],
                verdict: Verdict::Accept,
                comment: Some("the node reaches its own pods".to_string()),
            });
        }
        for family in Family::BOTH {
            policy_rules.push(dispatch(Direction::Ingress, family, Addr::Daddr));
        }
        self.chains.push(Chain {
            name: POLICY_CHAIN.to_string(),
            hook: None,
            rules: policy_rules,
            comment: "egress of local pods, then ingress of local pods".to_string(),
        });
        let with_services = self.ruleset.services.has_services();
        let rule = |m: Option<Match>, verdict: Verdict| Rule {
            matches: m.into_iter().collect(),
            verdict,
            comment: None,
        };
        for hook in Hook::ALL {
            let (rules, text) = match hook {
                Hook::Forward | Hook::Input | Hook::Output => {
                    let mut rules = vec![
                        rule(Some(Match::EstablishedOrRelated), Verdict::Accept),
                        rule(Some(Match::NeighbourDiscovery), Verdict::Accept),
                    ];
                    if with_services {
                        rules.push(rule(None, Verdict::Jump(SERVICES_CHECK_CHAIN.to_string())));
                    }
                    rules.push(rule(None, Verdict::Jump(POLICY_CHAIN.to_string())));
                    (rules, format!("policy on the {} hook", hook.as_str()))
                }
                _ if !with_services => continue,
                Hook::FirewallPrerouting | Hook::FirewallOutput => (
                    vec![rule(None, Verdict::Jump(services::FIREWALL_CHAIN.to_string()))],
                    "LoadBalancer source ranges, before DNAT".to_string(),
                ),
                Hook::NatPrerouting | Hook::NatOutput => (
                    vec![rule(None, Verdict::Jump(services::SERVICES_CHAIN.to_string()))],
                    "service DNAT".to_string(),
                ),
                Hook::NatPostrouting => (
                    vec![rule(Some(Match::MarkHas(MASQUERADE_MARK)), Verdict::Masquerade)],
                    "masquerade connections marked for it".to_string(),
                ),
            };
            self.chains.push(Chain {
                name: hook.as_str().to_string(),
                hook: Some(hook),
                rules,
                comment: text,
            });
        }
    }
}

/// The identity of a union set: its members' identities, in order.
fn union_identity<T: Identity>(members: &BTreeSet<&T>) -> String {
    let mut identity = format!("union{}(", members.len());
    members.iter().for_each(|m| m.encode(&mut identity));
    identity.push(')');
    identity
}

fn dispatch_map(direction: Direction, family: Family) -> String {
    format!("{}-dispatch-{}", direction_prefix(direction), family.suffix())
}
