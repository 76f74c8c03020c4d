//! The IR to nftables objects: one node's `Ruleset` becomes the sets, maps and chains of
//! `table inet netfence` (layout and reasons in ARCHITECTURE.md).

use std::collections::BTreeMap;
use std::net::IpAddr;

use policy_compiler::ir::{AllowSetKey, IrPeer, IrRule, NamedPort, PodPeer};
use policy_compiler::model::{Direction, IpBlock, PortMatch, PortSpec};
use policy_compiler::Ruleset;

use crate::interval;
use crate::names::{comment, derived};
use crate::nft::{Addr, Chain, Family, Hook, Match, Rule, Set, SetKind, Table, Verdict};

/// The chain every base chain jumps to after the fast path.
pub const POLICY_CHAIN: &str = "dispatch";

fn family_set_name(base: &str, family: Family) -> String {
    format!("{base}-{}", family.suffix())
}

/// Hands out derived names, making sure two identities never share one.
#[derive(Default)]
struct Namer {
    taken: BTreeMap<String, String>,
}

impl Namer {
    fn name(&mut self, prefix: &str, hint: &str, identity: &str) -> String {
        let base = derived(prefix, hint, identity);
        let mut name = base.clone();
        let mut n = 2;
        while let Some(owner) = self.taken.get(&name) {
            if owner == identity {
                return name;
            }
            name = format!("{base}-{n}");
            n += 1;
        }
        self.taken.insert(name.clone(), identity.to_string());
        name
    }
}

struct Names {
    pod_sets: BTreeMap<PodPeer, String>,
    blocks: BTreeMap<IpBlock, String>,
    named: BTreeMap<NamedPort, String>,
    chains: BTreeMap<AllowSetKey, String>,
}

fn split_family(addrs: impl Iterator<Item = IpAddr>, family: Family) -> Vec<IpAddr> {
    addrs.filter(|a| Family::of(*a) == family).collect()
}

/// Builds the table for one node's ruleset.
pub fn build(ruleset: &Ruleset) -> Table {
    let mut namer = Namer::default();
    let mut names = Names {
        pod_sets: BTreeMap::new(),
        blocks: BTreeMap::new(),
        named: BTreeMap::new(),
        chains: BTreeMap::new(),
    };
    let mut sets = Vec::new();

    for (peer, addrs) in &ruleset.pod_sets {
        let hint = if peer.pods.is_everything() {
            "all".to_string()
        } else {
            peer.pods.to_string()
        };
        let name = namer.name("pods", &hint, &format!("{peer:?}"));
        for family in Family::BOTH {
            sets.push(Set::new(
                family_set_name(&name, family),
                family,
                SetKind::Addrs(split_family(addrs.iter().copied(), family)),
                comment(&format!("pods {peer}")),
            ));
        }
        names.pod_sets.insert(peer.clone(), name);
    }
    for block in ruleset
        .allow_sets
        .values()
        .flat_map(|s| &s.rules)
        .flat_map(|r| r.peers.iter().flatten())
    {
        let IrPeer::Block(block) = block else { continue };
        if names.blocks.contains_key(block) {
            continue;
        }
        let name = namer.name("cidr", &block.cidr.to_string(), &format!("{block:?}"));
        let except: Vec<String> = block.except.iter().map(ToString::to_string).collect();
        sets.push(Set::new(
            name.clone(),
            Family::of(block.cidr.network()),
            SetKind::Ranges(interval::ranges(block)),
            comment(&format!("ipBlock {} except [{}]", block.cidr, except.join(","))),
        ));
        names.blocks.insert(block.clone(), name);
    }
    for (named, map) in &ruleset.named_ports {
        let hint = format!(
            "{}-{}-{}",
            named.direction.as_str(),
            named.protocol.as_str().to_lowercase(),
            named.name
        );
        let name = namer.name("port", &hint, &format!("{named:?}"));
        for family in Family::BOTH {
            sets.push(Set::new(
                family_set_name(&name, family),
                family,
                SetKind::AddrPorts(
                    map.iter()
                        .filter(|(a, _)| Family::of(**a) == family)
                        .map(|(a, p)| (*a, *p))
                        .collect(),
                ),
                comment(&format!(
                    "{} named port {}/{}",
                    named.direction.as_str(),
                    named.protocol,
                    named.name
                )),
            ));
        }
        names.named.insert(named.clone(), name);
    }
    let node_set = "node-addrs";
    for family in Family::BOTH {
        sets.push(Set::new(
            family_set_name(node_set, family),
            family,
            SetKind::Addrs(split_family(ruleset.node_addrs.iter().copied(), family)),
            "this node's own addresses".to_string(),
        ));
    }

    let mut chains = Vec::new();
    for (key, set) in &ruleset.allow_sets {
        let prefix = match key.direction {
            Direction::Ingress => "in",
            Direction::Egress => "eg",
        };
        let hint = key.policies.first().map_or(String::new(), |p| p.name.clone());
        let name = namer.name(prefix, &hint, &format!("{key:?}"));
        let mut rules: Vec<Rule> = set
            .rules
            .iter()
            .flat_map(|r| rule(r, key.direction, &names))
            .collect();
        rules.push(Rule {
            matches: vec![],
            verdict: Verdict::Drop,
            comment: None,
        });
        let policies: Vec<String> = key.policies.iter().map(ToString::to_string).collect();
        chains.push(Chain {
            name: name.clone(),
            hook: None,
            rules,
            comment: comment(&format!(
                "{} allow-set of {}",
                key.direction.as_str(),
                policies.join(",")
            )),
        });
        names.chains.insert(key.clone(), name);
    }

    for (direction, prefix) in [(Direction::Ingress, "in"), (Direction::Egress, "eg")] {
        for family in Family::BOTH {
            let mut entries = Vec::new();
            for pod in ruleset.pods.values() {
                let Some(key) = pod.isolation(direction) else {
                    continue;
                };
                for addr in pod.addrs.iter().filter(|a| Family::of(**a) == family) {
                    entries.push((*addr, names.chains[key].clone()));
                }
            }
            entries.sort();
            sets.push(Set::new(
                format!("{prefix}-dispatch-{}", family.suffix()),
                family,
                SetKind::Dispatch(entries),
                format!("isolated pods to their {} allow-set", direction.as_str()),
            ));
        }
    }

    let dispatch = |family: Family, addr: Addr, prefix: &str| Rule {
        matches: vec![],
        verdict: Verdict::Dispatch {
            family,
            addr,
            map: format!("{prefix}-dispatch-{}", family.suffix()),
        },
        comment: None,
    };
    let mut policy_rules = Vec::new();
    for family in Family::BOTH {
        policy_rules.push(dispatch(family, Addr::Saddr, "eg"));
    }
    for family in Family::BOTH {
        policy_rules.push(Rule {
            matches: vec![Match::AddrIn {
                family,
                addr: Addr::Saddr,
                set: family_set_name(node_set, family),
            }],
            verdict: Verdict::Accept,
            comment: Some("the node reaches its own pods".to_string()),
        });
    }
    for family in Family::BOTH {
        policy_rules.push(dispatch(family, Addr::Daddr, "in"));
    }
    chains.push(Chain {
        name: POLICY_CHAIN.to_string(),
        hook: None,
        rules: policy_rules,
        comment: "egress of local pods, then ingress of local pods".to_string(),
    });
    for hook in [Hook::Forward, Hook::Input, Hook::Output] {
        chains.push(Chain {
            name: hook.as_str().to_string(),
            hook: Some(hook),
            rules: vec![
                Rule {
                    matches: vec![Match::EstablishedOrRelated],
                    verdict: Verdict::Accept,
                    comment: None,
                },
                Rule {
                    matches: vec![Match::NeighbourDiscovery],
                    verdict: Verdict::Accept,
                    comment: None,
                },
                Rule {
                    matches: vec![],
                    verdict: Verdict::Jump(POLICY_CHAIN.to_string()),
                    comment: None,
                },
            ],
            comment: format!("policy on the {} hook", hook.as_str()),
        });
    }
    Table { sets, chains }
}

/// One IR rule as nft rules: one per (peer, port) alternative that fits one address family.
fn rule(rule: &IrRule, direction: Direction, names: &Names) -> Vec<Rule> {
    let peer_addr = match direction {
        Direction::Ingress => Addr::Saddr,
        Direction::Egress => Addr::Daddr,
    };
    // Each alternative: the family it is bound to (if any) and its matches.
    let peers: Vec<(Option<Family>, Vec<Match>)> = match &rule.peers {
        None => vec![(None, vec![])],
        Some(peers) => peers
            .iter()
            .flat_map(|p| match p {
                IrPeer::Pods(pods) => Family::BOTH
                    .iter()
                    .map(|f| {
                        let set = family_set_name(&names.pod_sets[pods], *f);
                        (
                            Some(*f),
                            vec![Match::AddrIn {
                                family: *f,
                                addr: peer_addr,
                                set,
                            }],
                        )
                    })
                    .collect::<Vec<_>>(),
                IrPeer::Block(block) => {
                    let family = Family::of(block.cidr.network());
                    vec![(
                        Some(family),
                        vec![Match::AddrIn {
                            family,
                            addr: peer_addr,
                            set: names.blocks[block].clone(),
                        }],
                    )]
                }
            })
            .collect(),
    };
    let ports: Vec<(Option<Family>, Vec<Match>)> = match &rule.ports {
        None => vec![(None, vec![])],
        Some(ports) => ports.iter().flat_map(|p| port(p, direction, names)).collect(),
    };
    let origin = format!("{}#{}", rule.policy, rule.index);
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
                comment: Some(comment(&origin)),
            });
        }
    }
    out
}

fn port(spec: &PortSpec, direction: Direction, names: &Names) -> Vec<(Option<Family>, Vec<Match>)> {
    match &spec.port {
        PortMatch::All => vec![(None, vec![Match::Protocol(spec.protocol)])],
        PortMatch::Range { first, last } => {
            vec![(
                None,
                vec![Match::PortRange {
                    protocol: spec.protocol,
                    first: *first,
                    last: *last,
                }],
            )]
        }
        PortMatch::Named(name) => {
            let key = NamedPort {
                direction,
                protocol: spec.protocol,
                name: name.clone(),
            };
            Family::BOTH
                .iter()
                .map(|f| {
                    let set = family_set_name(&names.named[&key], *f);
                    (
                        Some(*f),
                        vec![Match::DaddrPortIn {
                            family: *f,
                            protocol: spec.protocol,
                            set,
                        }],
                    )
                })
                .collect()
        }
    }
}
